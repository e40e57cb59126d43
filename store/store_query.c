// The run list: sort keys and the `runs --filter` expression language, compiled into a
// parameterised WHERE clause over runs_view. Values are always bound, never pasted; only
// column names from the table below ever reach the SQL text.
#include "store_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_NUM, K_TEXT, K_STATUS, K_METHOD } key_kind_t;

typedef struct {
    const char *key;  // what users type
    const char *col;  // the runs_view column
    key_kind_t kind;
} run_key_t;

static const run_key_t run_keys[] = {
    {"id", "id", K_NUM},
    {"name", "name", K_TEXT},
    {"status", "status", K_STATUS},
    {"method", "method", K_METHOD},
    {"r", "r", K_NUM},
    {"alpha", "alpha", K_NUM},
    {"targets", "targets", K_TEXT},
    {"trainable", "trainable_params", K_NUM},
    {"trainable_pct", "trainable_pct", K_NUM},
    {"params", "total_params", K_NUM},
    {"steps", "step", K_NUM},
    {"total_steps", "total_steps", K_NUM},
    {"loss", "final_loss", K_NUM},
    {"rouge1", "rouge1", K_NUM},
    {"rouge2", "rouge2", K_NUM},
    {"rougeL", "rougeL", K_NUM},
    {"rougeLsum", "rougeLsum", K_NUM},
    {"tokens_per_s", "tokens_per_s", K_NUM},
    {"peak_rss_mb", "peak_rss_mb", K_NUM},
    {"duration", "duration", K_NUM},
    {"created", "created_at", K_NUM},
    {"base_model", "base_model", K_TEXT},
    {"dataset", "dataset", K_TEXT},
    {"tags", "tags", K_TEXT},
    {"notes", "notes", K_TEXT},
    {"error", "error", K_TEXT},
    {"sweep", "sweep_id", K_NUM},
    {"pinned", "pinned", K_NUM},
    {"precision", "precision", K_TEXT},
};
enum { N_KEYS = sizeof run_keys / sizeof run_keys[0] };

static const char key_list[] =
    "id, name, status, method, r, alpha, targets, trainable, trainable_pct, params, steps, "
    "total_steps, loss, rouge1, rouge2, rougeL, rougeLsum, tokens_per_s, peak_rss_mb, "
    "duration, created, base_model, dataset, tags, notes, error, sweep, pinned, precision";

static const char *const method_values[] = {"none", "lora", "full", "partial"};

const char *store_run_keys(void) { return key_list; }

// Exact match first, then case-insensitive (so `rougel` works too).
static const run_key_t *find_key(const char *k, size_t len) {
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < N_KEYS; i++) {
            const char *name = run_keys[i].key;
            if (strlen(name) != len) continue;
            if (pass == 0 ? !strncmp(name, k, len) : !strncasecmp(name, k, len))
                return &run_keys[i];
        }
    return NULL;
}

typedef struct {
    int is_num;
    double num;
    char *text;
} param_t;

struct store_filter {
    char *sql;
    size_t len, cap;
    param_t *params;
    int nparams;
};

static void sql_add(store_filter_t *f, const char *s) {
    size_t n = strlen(s);
    if (f->len + n + 1 > f->cap) {
        f->cap = (f->len + n + 1) * 2;
        f->sql = xrealloc(f->sql, f->cap);
    }
    memcpy(f->sql + f->len, s, n + 1);
    f->len += n;
}

void store_filter_free(store_filter_t *f) {
    if (!f) return;
    for (int i = 0; i < f->nparams; i++) free(f->params[i].text);
    free(f->params);
    free(f->sql);
    free(f);
}

const char *store_filter_sql(const store_filter_t *f) { return f->len ? f->sql : "1"; }

int store_filter_nparams(const store_filter_t *f) { return f->nparams; }

static const char *const ops[] = {"<=", ">=", "!=", "=", "<", ">", "~"};

static int parse_number(const char *s, double *v) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(*v)) return -1;
    return 0;
}

static int value_in(const char *v, const char *const *list, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, list[i])) return 1;
    return 0;
}

static void join_values(char *buf, size_t size, const char *const *list, int n) {
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, size - l, "%s%s", i ? ", " : "", list[i]);
    }
}

int store_filter_parse(const char *expr, store_filter_t **out, lb_err_t *err) {
    *out = NULL;
    store_filter_t *f = xcalloc(1, sizeof *f);
    const char *p = expr ? expr : "";
    char *value = NULL;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *term = p;
        const char *k = p;
        while (isalnum((unsigned char)*p) || *p == '_') p++;
        size_t klen = (size_t)(p - k);
        // Let people write `a=1 and b=2`; the terms are a conjunction anyway.
        if (klen == 3 && !strncasecmp(k, "and", 3) && (isspace((unsigned char)*p) || !*p))
            continue;
        int termlen = 0;
        while (term[termlen] && !isspace((unsigned char)term[termlen])) termlen++;
        const char *op = NULL;
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            if (!strncmp(p, ops[i], strlen(ops[i]))) {
                op = ops[i];
                break;
            }
        if (!klen || !op) {
            lb_err_set(err, LB_EARG,
                       "filter term '%.*s' is not KEY OP VALUE; OP is one of = != < <= > >= ~ "
                       "(e.g. 'r>=8' or 'name~qv')",
                       termlen, term);
            goto fail;
        }
        const run_key_t *key = find_key(k, klen);
        if (!key) {
            lb_err_set(err, LB_EARG, "unknown filter key '%.*s' in '%.*s'; valid keys: %s",
                       (int)klen, k, termlen, term, key_list);
            goto fail;
        }
        p += strlen(op);
        // The value: quoted (may hold spaces) or up to the next space.
        int quoted = 0;
        const char *v0, *v1;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            v0 = p;
            while (*p && *p != q) p++;
            if (!*p) {
                lb_err_set(err, LB_EARG, "filter term '%.*s' has an unterminated %c quote",
                           termlen, term, q);
                goto fail;
            }
            v1 = p++;
            quoted = 1;
        } else {
            v0 = p;
            while (*p && !isspace((unsigned char)*p)) p++;
            v1 = p;
        }
        free(value);
        value = xmalloc((size_t)(v1 - v0) + 1);
        memcpy(value, v0, (size_t)(v1 - v0));
        value[v1 - v0] = 0;
        int tlen = (int)(p - term);
        if (!*value && !quoted) {
            lb_err_set(err, LB_EARG, "filter term '%.*s' has no value after '%s'", tlen, term,
                       op);
            goto fail;
        }
        param_t prm = {0, 0, NULL};
        if (key->kind == K_NUM) {
            if (!strcmp(op, "~")) {
                lb_err_set(err, LB_EARG,
                           "filter term '%.*s': ~ (contains) works on text keys only (name, "
                           "targets, base_model, dataset, tags, notes, error); compare %s "
                           "with = != < <= > >=",
                           tlen, term, key->key);
                goto fail;
            }
            if (parse_number(value, &prm.num)) {
                lb_err_set(err, LB_EARG, "filter term '%.*s': %s takes a number, not '%s'",
                           tlen, term, key->key, value);
                goto fail;
            }
            prm.is_num = 1;
        } else {
            if (key->kind == K_STATUS || key->kind == K_METHOD) {
                const char *status_values[STORE_N_STATUSES];
                for (int i = 0; i < STORE_N_STATUSES; i++) status_values[i] = store_status_name((store_status_t)i);
                const char *const *vals = key->kind == K_STATUS ? status_values : method_values;
                int nv = key->kind == K_STATUS ? STORE_N_STATUSES : 4;
                char list[128];
                join_values(list, sizeof list, vals, nv);
                if (strcmp(op, "=") && strcmp(op, "!=") && strcmp(op, "~")) {
                    lb_err_set(err, LB_EARG, "filter term '%.*s': %s takes = != or ~, not %s",
                               tlen, term, key->key, op);
                    goto fail;
                }
                if (strcmp(op, "~") && !value_in(value, vals, nv)) {
                    lb_err_set(err, LB_EARG, "filter term '%.*s': %s is one of %s", tlen,
                               term, key->key, list);
                    goto fail;
                }
            }
            prm.text = value;
            value = NULL;
        }
        f->params = xrealloc(f->params, (size_t)(f->nparams + 1) * sizeof *f->params);
        f->params[f->nparams++] = prm;
        int idx = f->nparams;
        char clause[256];
        const char *coll = prm.is_num ? "" : " COLLATE NOCASE";
        if (!strcmp(op, "~"))
            snprintf(clause, sizeof clause, "instr(lower(%s), lower(?%d)) > 0", key->col, idx);
        else if (!strcmp(op, "!="))
            snprintf(clause, sizeof clause, "%s IS NOT ?%d%s", key->col, idx, coll);
        else
            snprintf(clause, sizeof clause, "%s %s ?%d%s", key->col, op, idx, coll);
        if (f->len) sql_add(f, " AND ");
        sql_add(f, "(");
        sql_add(f, clause);
        sql_add(f, ")");
    }
    free(value);
    *out = f;
    return 0;
fail:
    free(value);
    store_filter_free(f);
    return -1;
}

int store_runs_list(store_t *st, const char *sort_key, int descending, const char *filter_expr,
                    store_run_t **runs, size_t *n, lb_err_t *err) {
    *runs = NULL;
    *n = 0;
    const run_key_t *key = find_key("id", 2);
    if (sort_key && *sort_key) {
        key = find_key(sort_key, strlen(sort_key));
        if (!key)
            return lb_err_set(err, LB_EARG, "unknown sort key '%s'; valid keys: %s", sort_key,
                              key_list);
    }
    store_filter_t *f;
    if (store_filter_parse(filter_expr, &f, err)) return -1;
    const char *dir = descending ? "DESC" : "ASC";
    size_t size = strlen(stmt_run_columns) + strlen(store_filter_sql(f)) + 256;
    char *sql = xmalloc(size);
    // Missing values (a run not evaluated yet) sort last in both directions.
    snprintf(sql, size, "SELECT %s FROM runs_view WHERE %s ORDER BY (%s IS NULL), %s%s %s, id %s",
             stmt_run_columns, store_filter_sql(f), key->col, key->col,
             key->kind == K_NUM ? "" : " COLLATE NOCASE", dir, dir);
    sqlite3_stmt *s;
    int prc = stmt_prepare(st, sql, &s, err);
    free(sql);
    if (prc) {
        store_filter_free(f);
        return -1;
    }
    for (int i = 0; i < f->nparams; i++) {
        if (f->params[i].is_num) sqlite3_bind_double(s, i + 1, f->params[i].num);
        else sqlite3_bind_text(s, i + 1, f->params[i].text, -1, SQLITE_TRANSIENT);
    }
    store_filter_free(f);
    size_t cap = 0, cnt = 0;
    store_run_t *out = NULL;
    int rc;
    while ((rc = cnt ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        if (cnt == cap) out = xrealloc(out, (cap = cap ? 2 * cap : 16) * sizeof *out);
        stmt_read_run(s, &out[cnt++]);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        store_runs_free(out, cnt);
        return db_fail(st, "listing runs", err);
    }
    *runs = out;
    *n = cnt;
    return 0;
}
