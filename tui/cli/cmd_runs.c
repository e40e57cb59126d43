// runs, show, compare, export and rm: browsing the stored history.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"
#include "cli_common.h"
#include "slurm.h"
#include "store.h"
#include "svg.h"
#include "util.h"

static void json_num(FILE *f, double v) {
    if (isnan(v) || isinf(v)) fputs("null", f);
    else fprintf(f, "%.10g", v);
}

static void json_int(FILE *f, int64_t v) {
    if (v < 0) fputs("null", f);
    else fprintf(f, "%lld", (long long)v);
}

static void run_json(FILE *f, const store_run_t *r) {
    fprintf(f, "{\"id\":%lld,\"name\":", (long long)r->id);
    cli_json_string(f, r->name);
    fputs(",\"status\":", f);
    cli_json_string(f, r->status);
    fputs(",\"method\":", f);
    cli_json_string(f, r->method);
    fputs(",\"r\":", f);
    json_int(f, r->r);
    fputs(",\"alpha\":", f);
    json_num(f, r->alpha);
    fputs(",\"targets\":", f);
    cli_json_string(f, r->targets);
    fputs(",\"trainable\":", f);
    json_int(f, r->trainable_params);
    fputs(",\"trainable_pct\":", f);
    json_num(f, r->trainable_pct);
    fputs(",\"total_params\":", f);
    json_int(f, r->total_params);
    fputs(",\"steps\":", f);
    json_int(f, r->step);
    fputs(",\"total_steps\":", f);
    json_int(f, r->total_steps);
    fputs(",\"loss\":", f);
    json_num(f, r->final_loss);
    fputs(",\"rouge1\":", f);
    json_num(f, r->rouge1);
    fputs(",\"rouge2\":", f);
    json_num(f, r->rouge2);
    fputs(",\"rougeL\":", f);
    json_num(f, r->rougeL);
    fputs(",\"rougeLsum\":", f);
    json_num(f, r->rougeLsum);
    fputs(",\"tokens_per_s\":", f);
    json_num(f, r->tokens_per_s);
    fputs(",\"peak_rss_mb\":", f);
    json_num(f, r->peak_rss_mb);
    fputs(",\"duration_s\":", f);
    json_num(f, r->duration);
    fputs(",\"base_model\":", f);
    cli_json_string(f, r->base_model);
    fputs(",\"dataset\":", f);
    cli_json_string(f, r->dataset);
    fputs(",\"tags\":", f);
    cli_json_string(f, r->tags);
    fputs(",\"pid\":", f);
    json_int(f, r->pid);
    fputs(",\"pinned\":", f);
    fputs(r->pinned ? "true" : "false", f);
    fputs(",\"precision\":", f);
    cli_json_string(f, r->precision);
    fputs(",\"notes\":", f);
    cli_json_string(f, r->notes);
    fputs(",\"error\":", f);
    cli_json_string(f, r->error);
    fputc('}', f);
}

// A cluster sweep's task not imported yet, as an element of `runs --json` after the runs:
// "kind" tells it from a run (a run's object has no "kind", as before tasks were listed);
// "id" is null (it becomes a run of this workspace when it is imported); name, status, steps,
// total_steps and loss mean what they mean for a run, the status being the task's (pending,
// running, done, failed, cancelled, unknown); then its sweep, job, array task and output file.
static void cluster_task_json(FILE *f, const slurm_task_t *k) {
    fputs("{\"kind\":\"cluster_task\",\"id\":null,\"name\":", f);
    cli_json_string(f, k->name);
    fputs(",\"status\":", f);
    cli_json_string(f, slurm_task_state_name(k->state));
    fputs(",\"steps\":", f);
    json_int(f, k->step);
    fputs(",\"total_steps\":", f);
    json_int(f, k->total_steps);
    fputs(",\"loss\":", f);
    json_num(f, k->loss);
    fprintf(f, ",\"sweep\":%lld,\"job\":", (long long)k->sweep_id);
    cli_json_string(f, k->job_id);
    fprintf(f, ",\"task\":%lld,\"output\":", (long long)k->index);
    cli_json_string(f, k->out);
    fputc('}', f);
}

// v with fmt; "" (shown as CLI_MISSING) when it is missing.
static void fmt_num(char *out, size_t n, double v, const char *fmt) {
    if (isnan(v) || isinf(v)) snprintf(out, n, "%s", "");
    else snprintf(out, n, fmt, v);
}

// Width of the name column in `runs`: longer names keep their start and their end.
enum { RUNS_NAME_COLS = 28 };

int cmd_runs(int argc, char **argv) {
    const char *ws = NULL, *sort = NULL, *filter = NULL;
    int desc = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench runs [--sort KEY] [--desc] [--filter EXPR] [--json] [--workspace DIR]\n\n"
                   "Lists the stored runs. EXPR is a conjunction like 'method=lora r>=8 rouge1>0.3 name~qv'\n"
                   "(OP: = != < <= > >= ~). Keys: %s.\n"
                   "The tasks of cluster sweeps (sweep --slurm) not imported yet follow the runs: a table,\n"
                   "or with --json objects with \"kind\": \"cluster_task\" after the runs' (\"id\" null; \"status\"\n"
                   "pending, running, done, failed, cancelled or unknown; \"steps\", \"total_steps\", \"loss\";\n"
                   "\"sweep\", \"job\", \"task\", \"output\"); --filter selects runs only, so --json leaves them out.\n",
                   store_run_keys());
            return 0;
        } else if (!strcmp(argv[i], "--sort") && i + 1 < argc) sort = argv[++i];
        else if (!strcmp(argv[i], "--desc")) desc = 1;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else {
            fprintf(stderr, "lorabench runs: unknown argument %s; see --help\n", argv[i]);
            return 2;
        }
    }
    store_t *st;
    char *wsdir;
    if (cli_open_store_read(ws, &wsdir, &st)) return 1;
    lb_err_t err = {0};
    store_mark_stale_interrupted(st, store_now(), LB_STALE_SECONDS, NULL, NULL, NULL, &err);
    // A cluster sweep's finished tasks become runs here, before the runs are read; the others
    // are listed after the runs (in JSON not under --filter, whose keys are a run's).
    slurm_task_t *tasks;
    size_t n_tasks;
    cli_cluster_sync(st, wsdir, &tasks, &n_tasks);
    if (json && filter) n_tasks = 0;
    store_run_t *runs;
    size_t n;
    if (store_runs_list(st, sort, desc, filter, &runs, &n, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        free(tasks);
        store_close(st);
        free(wsdir);
        return 1;
    }
    if (json) {
        putchar('[');
        for (size_t i = 0; i < n; i++) {
            if (i) putchar(',');
            run_json(stdout, &runs[i]);
        }
        for (size_t i = 0; i < n_tasks; i++) {
            if (n || i) putchar(',');
            cluster_task_json(stdout, &tasks[i]);
        }
        printf("]\n");
    } else {
        static const char *const head[] = {"id", "name", "status", "method", "r", "alpha", "targets", "trainable",
                                           "steps", "loss", "R-1", "R-L", "tok/s"};
        static const int right[] = {1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1};
        cli_table_t *t = cli_table_new(13, head, right);
        for (size_t i = 0; i < n; i++) {
            const store_run_t *r = &runs[i];
            char id[24], name[RUNS_NAME_COLS * 4 + 8], rs[24], al[24], tr[24], loss[24], r1[24], rl[24], tps[24], steps[24];
            snprintf(id, sizeof id, "%s%lld", r->pinned ? "*" : "", (long long)r->id);
            store_text_fit(r->name, RUNS_NAME_COLS, name, sizeof name);
            fmt_num(rs, sizeof rs, r->r < 0 ? NAN : (double)r->r, "%.0f");
            fmt_num(al, sizeof al, r->alpha, "%g");
            cli_fmt_count(tr, sizeof tr, r->trainable_params);
            fmt_num(loss, sizeof loss, r->final_loss, "%.4f");
            fmt_num(r1, sizeof r1, r->rouge1, "%.4f");
            fmt_num(rl, sizeof rl, r->rougeL, "%.4f");
            fmt_num(tps, sizeof tps, r->tokens_per_s, "%.0f");
            snprintf(steps, sizeof steps, "%lld", (long long)(r->step < 0 ? 0 : r->step));
            const char *cells[] = {id, name, r->status, r->method, rs, al, r->targets, tr, steps, loss, r1, rl, tps};
            cli_table_row(t, cells);
        }
        cli_table_print(stdout, t, 0);
        cli_table_free(t);
        cli_cluster_table(tasks, n_tasks);
    }
    free(tasks);
    store_runs_free(runs, n);
    store_close(st);
    free(wsdir);
    return 0;
}

// One line per epoch of the run's stored steps: the step range, the mean loss, the mean
// time per step and the throughput (an epoch's step counts it when its progress, stored
// as a fraction of epochs, is at most the epoch's number). A run of more than 12 epochs
// gets at most 10 lines, each over as many whole epochs as that takes.
static void print_epochs(store_t *st, int64_t id) {
    store_metric_t *m = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    if (store_metrics_since(st, id, -1, &m, &n, &err) || !n) {
        free(m);
        return;
    }
    size_t *first = xmalloc((n + 1) * sizeof(size_t));  // first stored step of each epoch
    long *num = xmalloc(n * sizeof(long));
    size_t ne = 0;
    for (size_t i = 0; i < n;) {
        long ep = (long)ceil(m[i].epoch - 1e-9);
        if (ep < 1) ep = 1;
        size_t j = i + 1;
        while (j < n && (long)ceil(m[j].epoch - 1e-9) <= ep) j++;
        first[ne] = i;
        num[ne++] = ep;
        i = j;
    }
    first[ne] = n;
    size_t per = ne > 12 ? (ne + 9) / 10 : 1;
    for (size_t e = 0; e < ne; e += per) {
        size_t e2 = e + per < ne ? e + per : ne, i = first[e], j = first[e2];
        double loss = 0, ms = 0;
        long nl = 0, nms = 0;
        for (size_t k = i; k < j; k++) {
            if (!isnan(m[k].loss)) loss += m[k].loss, nl++;
            if (!isnan(m[k].step_ms)) ms += m[k].step_ms, nms++;
        }
        // tokens are stored as the running total of the run
        int64_t tokens = m[j - 1].tokens - (i > 0 && m[i - 1].tokens > 0 ? m[i - 1].tokens : 0);
        if (e2 - e == 1) printf("  epoch %-3ld steps %lld–%lld", num[e], (long long)m[i].step, (long long)m[j - 1].step);
        else printf("  epochs %ld–%ld  steps %lld–%lld", num[e], num[e2 - 1], (long long)m[i].step, (long long)m[j - 1].step);
        if (nl) printf("  mean loss %.4f", loss / (double)nl);
        if (nms) printf("  %.1f ms/step", ms / (double)nms);
        if (nms && ms > 0 && m[j - 1].tokens > 0 && tokens > 0) printf("  %.0f tokens/s", (double)tokens / (ms / 1000.0));
        printf("\n");
    }
    free(first);
    free(num);
    free(m);
}

int cmd_show(int argc, char **argv) {
    const char *ws = NULL;
    int64_t id = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench show ID [--json] [--workspace DIR]\n\nThe run's spec, summary, evaluations, "
                   "artifacts and a few samples.\n");
            return 0;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (cli_parse_id(argv[i], &id)) return 2;
    }
    if (!id) {
        fprintf(stderr, "lorabench show: give the run id\n");
        return 2;
    }
    store_t *st;
    if (cli_open_store_read(ws, NULL, &st)) return 1;
    store_run_t r;
    lb_err_t err = {0};
    if (store_run_get(st, id, &r, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        store_close(st);
        return 1;
    }
    store_eval_t *ev = NULL;
    size_t nev = 0;
    store_evals_list(st, id, &ev, &nev, &err);
    store_artifact_t *art = NULL;
    size_t nart = 0;
    store_artifacts_list(st, id, NULL, &art, &nart, &err);
    if (json) {
        run_json(stdout, &r);
        putchar('\n');
    } else {
        char tr[32], tot[32];
        cli_fmt_count(tr, sizeof tr, r.trainable_params);
        cli_fmt_count(tot, sizeof tot, r.total_params);
        printf("run %lld  %s\n  status   %s%s%s\n  method   %s", (long long)r.id, r.name, r.status, r.error ? " — " : "",
               r.error ? r.error : "", r.method);
        if (r.r > 0) printf("  r=%lld alpha=%g targets=%s", (long long)r.r, r.alpha, r.targets ? r.targets : "");
        printf("\n  params   %s trainable of %s", *tr ? tr : CLI_MISSING, *tot ? tot : CLI_MISSING);
        if (!isnan(r.trainable_pct)) printf(" (%.4f%%)", r.trainable_pct);
        printf("\n  steps    %lld/", (long long)(r.step < 0 ? 0 : r.step));
        if (r.total_steps >= 0) printf("%lld", (long long)r.total_steps);
        else printf("%s", CLI_MISSING);
        if (!isnan(r.final_loss)) printf("  final loss %.4f", r.final_loss);
        if (!isnan(r.tokens_per_s)) printf("  %.0f tokens/s", r.tokens_per_s);
        if (!isnan(r.peak_rss_mb)) printf("  peak RSS %.0f MB", r.peak_rss_mb);
        if (r.precision) printf("  products in %s", r.precision);
        printf("\n  model    %s\n  data     %s\n", r.base_model ? r.base_model : "", r.dataset ? r.dataset : "");
        print_epochs(st, id);
        for (size_t i = 0; i < nev; i++)
            printf("  eval     step %lld %s n=%lld  ROUGE-1 %.4f [%.4f, %.4f]  ROUGE-2 %.4f  ROUGE-L %.4f  ROUGE-Lsum %.4f\n",
                   (long long)ev[i].step, ev[i].split, (long long)ev[i].n, ev[i].rouge1, ev[i].rouge1_low,
                   ev[i].rouge1_high, ev[i].rouge2, ev[i].rougeL, ev[i].rougeLsum);
        for (size_t i = 0; i < nart; i++)
            printf("  artifact %s %s (%lld bytes, sha256 %s)\n", art[i].kind, art[i].path, (long long)art[i].bytes,
                   art[i].sha256 ? art[i].sha256 : "-");
        if (nev) {
            store_sample_row_t *s;
            size_t ns;
            if (!store_samples_list(st, ev[nev - 1].id, 0, 3, &s, &ns, &err)) {
                for (size_t i = 0; i < ns; i++)
                    printf("  sample %lld\n    reference:  %s\n    prediction: %s\n", (long long)s[i].idx, s[i].reference,
                           s[i].prediction);
                store_samples_free(s, ns);
            }
        }
        cJSON *spec = cJSON_Parse(r.spec);
        char *pretty = spec ? cJSON_Print(spec) : NULL;
        printf("  spec\n%s\n", pretty ? pretty : r.spec);
        cJSON_free(pretty);
        cJSON_Delete(spec);
    }
    free(ev);
    store_artifacts_free(art, nart);
    store_run_clear(&r);
    store_close(st);
    return 0;
}

static void csv_cell(FILE *f, const char *s) {
    char *q = store_csv_quote(s);
    fputs(q, f);
    free(q);
}

// A spec value as people read it: strings bare, numbers as %g, lists joined by ",", null as
// "" (missing); objects (rank_pattern) stay JSON.
static char *value_text(const cJSON *v) {
    char buf[512];
    if (cJSON_IsString(v)) return xstrdup(v->valuestring);
    if (cJSON_IsNumber(v)) snprintf(buf, sizeof buf, "%g", v->valuedouble);
    else if (cJSON_IsBool(v)) snprintf(buf, sizeof buf, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v)) buf[0] = 0;
    else if (cJSON_IsArray(v)) {
        size_t len = 0;
        buf[0] = 0;
        for (const cJSON *e = v->child; e && len < sizeof buf; e = e->next) {
            char *t = value_text(e);
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", e == v->child ? "" : ",", t);
            free(t);
        }
    } else {
        char *j = cJSON_PrintUnformatted(v);
        char *out = xstrdup(j ? j : "");
        cJSON_free(j);
        return out;
    }
    return xstrdup(buf);
}

// The config rows of a comparison: every key any run's spec has ("lora.r"), in order of
// first appearance, with each run's value; NULL where the run's method does not use the
// key (lora.* for zero-shot or a full fine-tune, train.* for zero-shot) or lacks it.
typedef struct {
    char **keys;
    char ***vals;  // [nkeys][nruns]
    int nkeys, cap, nruns;
} cfg_rows_t;

static int uses_key(const char *method, const char *key) {
    if (!strncmp(key, "lora.", 5)) return !strcmp(method, "lora");
    if (!strncmp(key, "partial.", 8)) return !strcmp(method, "partial");
    if (!strncmp(key, "train.", 6)) return strcmp(method, "none") != 0;
    return 1;
}

static void cfg_add(cfg_rows_t *c, int run, const char *method, const char *key, const cJSON *v) {
    int k = 0;
    while (k < c->nkeys && strcmp(c->keys[k], key)) k++;
    if (k == c->nkeys) {
        if (c->nkeys == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->keys = xrealloc(c->keys, (size_t)c->cap * sizeof *c->keys);
            c->vals = xrealloc(c->vals, (size_t)c->cap * sizeof *c->vals);
        }
        c->keys[k] = xstrdup(key);
        c->vals[k] = xcalloc((size_t)c->nruns, sizeof(char *));
        c->nkeys++;
    }
    if (uses_key(method, key)) c->vals[k][run] = value_text(v);
}

static void cfg_flatten(cfg_rows_t *c, int run, const char *method, const cJSON *o, const char *prefix) {
    for (const cJSON *it = o ? o->child : NULL; it; it = it->next) {
        char k[160];
        snprintf(k, sizeof k, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        if (!strcmp(k, "grid")) continue;  // a run is one point of its sweep
        if (cJSON_IsObject(it) && !strstr(k, "_pattern")) cfg_flatten(c, run, method, it, k);
        else cfg_add(c, run, method, k, it);
    }
}

static void cfg_free(cfg_rows_t *c) {
    for (int k = 0; k < c->nkeys; k++) {
        for (int i = 0; i < c->nruns; i++) free(c->vals[k][i]);
        free(c->vals[k]);
        free(c->keys[k]);
    }
    free(c->keys);
    free(c->vals);
}

static int cfg_differs(const cfg_rows_t *c, int k) {
    for (int i = 1; i < c->nruns; i++) {
        const char *a = c->vals[k][0], *b = c->vals[k][i];
        if ((a == NULL) != (b == NULL) || (a && strcmp(a, b))) return 1;
    }
    return 0;
}

enum { CMP_MAX_RUNS = 64 };

// One metric of the comparison: its value in run r (NAN when missing), its format, and
// whether its change against the first run is shown.
typedef struct {
    const char *name;
    double (*get)(const store_run_t *r, const store_eval_t *ev);
    const char *fmt;
    int delta;
} cmp_metric_t;

static double m_loss(const store_run_t *r, const store_eval_t *e) { (void)e; return r->final_loss; }
static double m_r1(const store_run_t *r, const store_eval_t *e) { (void)e; return r->rouge1; }
static double m_r1lo(const store_run_t *r, const store_eval_t *e) { return isnan(r->rouge1) ? NAN : e->rouge1_low; }
static double m_r1hi(const store_run_t *r, const store_eval_t *e) { return isnan(r->rouge1) ? NAN : e->rouge1_high; }
static double m_r2(const store_run_t *r, const store_eval_t *e) { (void)e; return r->rouge2; }
static double m_rl(const store_run_t *r, const store_eval_t *e) { (void)e; return r->rougeL; }
static double m_rls(const store_run_t *r, const store_eval_t *e) { (void)e; return r->rougeLsum; }
static double m_tps(const store_run_t *r, const store_eval_t *e) { (void)e; return r->tokens_per_s; }
static double m_rss(const store_run_t *r, const store_eval_t *e) { (void)e; return r->peak_rss_mb; }
static double m_trainable(const store_run_t *r, const store_eval_t *e) {
    (void)e;
    return r->trainable_params < 0 ? NAN : (double)r->trainable_params;
}
static double m_pct(const store_run_t *r, const store_eval_t *e) { (void)e; return r->trainable_pct; }
static double m_time(const store_run_t *r, const store_eval_t *e) { (void)e; return store_run_duration(r, store_now()); }

int cmd_compare(int argc, char **argv) {
    const char *ws = NULL, *format = "table";
    int diff_only = 0, n_ids = 0;
    int64_t ids[CMP_MAX_RUNS];
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench compare ID ID... [--diff-only] [--format table|markdown|csv|json] [--workspace DIR]\n\n"
                   "Configs side by side (--diff-only: only what differs; – where a run's method does not use\n"
                   "the setting), then metrics with the change against the first run and ROUGE-1's 95%%\n"
                   "bootstrap interval. IDs may be listed as 2 3 7, 2,3,7 or 4-9 (as export --runs takes them).\n");
            return 0;
        } else if (!strcmp(argv[i], "--diff-only")) diff_only = 1;
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "lorabench compare: unknown option %s; see --help\n", argv[i]);
            return 2;
        } else if (cli_parse_ids(argv[i], ids, &n_ids, CMP_MAX_RUNS)) return 2;
    }
    if (n_ids < 2) {
        fprintf(stderr, "lorabench compare: give two or more run ids, e.g. lorabench compare 2 3 or 2,3\n");
        return 2;
    }
    if (!strcmp(format, "md")) format = "markdown";
    if (strcmp(format, "table") && strcmp(format, "markdown") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "lorabench compare: --format must be table, markdown, csv or json\n");
        return 2;
    }
    store_t *st;
    if (cli_open_store_read(ws, NULL, &st)) return 1;
    store_run_t *runs = xcalloc((size_t)n_ids, sizeof(store_run_t));
    store_eval_t *evs = xcalloc((size_t)n_ids, sizeof(store_eval_t));
    lb_err_t err = {0};
    for (int i = 0; i < n_ids; i++) {
        if (store_run_get(st, ids[i], &runs[i], &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            for (int j = 0; j < i; j++) store_run_clear(&runs[j]);
            free(runs);
            free(evs);
            store_close(st);
            return 1;
        }
        if (!cli_latest_eval(st, ids[i], &evs[i])) evs[i].rouge1_low = evs[i].rouge1_high = NAN;
    }
    if (!strcmp(format, "json")) {
        putchar('[');
        for (int i = 0; i < n_ids; i++) {
            if (i) putchar(',');
            run_json(stdout, &runs[i]);
        }
        printf("]\n");
    } else {
        int md = !strcmp(format, "markdown"), csv = !strcmp(format, "csv");
        cfg_rows_t c = {.nruns = n_ids};
        for (int i = 0; i < n_ids; i++) {
            cJSON *j = cJSON_Parse(runs[i].spec);
            cfg_flatten(&c, i, runs[i].method, j, "");
            cJSON_Delete(j);
        }
        // csv: plain values, one interval bound per row; table and Markdown: the change
        // against the first run beside each value
        static const cmp_metric_t metrics[] = {
            {"final loss", m_loss, "%.4f", 1},      {"ROUGE-1", m_r1, "%.4f", 1},
            {"ROUGE-1 low", m_r1lo, "%.4f", 0},     {"ROUGE-1 high", m_r1hi, "%.4f", 0},
            {"ROUGE-2", m_r2, "%.4f", 1},           {"ROUGE-L", m_rl, "%.4f", 1},
            {"ROUGE-Lsum", m_rls, "%.4f", 1},       {"tokens/s", m_tps, "%.0f", 1},
            {"peak RSS MB", m_rss, "%.0f", 1},      {"trainable", m_trainable, "%.0f", 0},
            {"trainable %", m_pct, "%.4f", 0},      {"time s", m_time, "%.1f", 0}};
        const char **cells = xcalloc((size_t)n_ids + 1, sizeof(char *));
        char **own = xcalloc((size_t)n_ids + 1, sizeof(char *));
        cells[0] = "field";
        for (int i = 0; i < n_ids; i++) {
            char h[300];
            snprintf(h, sizeof h, "#%lld %s", (long long)runs[i].id, runs[i].name);
            cells[i + 1] = own[i] = xstrdup(h);
        }
        int *right = xcalloc((size_t)n_ids + 1, sizeof(int));
        cli_table_t *t = cli_table_new(n_ids + 1, cells, right);
        for (int i = 0; i < n_ids; i++) free(own[i]);
        for (int k = 0; k < c.nkeys; k++) {
            if (diff_only && !cfg_differs(&c, k)) continue;
            cells[0] = c.keys[k];
            for (int i = 0; i < n_ids; i++) cells[i + 1] = c.vals[k][i];
            cli_table_row(t, (const char *const *)cells);
        }
        for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
            int bound = strstr(metrics[m].name, " low") || strstr(metrics[m].name, " high");
            if (bound && !csv) continue;
            cells[0] = metrics[m].name;
            double base = metrics[m].get(&runs[0], &evs[0]);
            for (int i = 0; i < n_ids; i++) {
                double v = metrics[m].get(&runs[i], &evs[i]);
                char cell[160] = "";
                if (!isnan(v)) {
                    int l = snprintf(cell, sizeof cell, metrics[m].fmt, v);
                    if (!csv && metrics[m].get == m_r1 && !isnan(evs[i].rouge1_low))
                        l += snprintf(cell + l, sizeof cell - (size_t)l, " [%.4f, %.4f]", evs[i].rouge1_low, evs[i].rouge1_high);
                    if (!csv && metrics[m].delta && i > 0 && !isnan(base)) {
                        char d[64];
                        snprintf(d, sizeof d, metrics[m].fmt, v - base);
                        snprintf(cell + l, sizeof cell - (size_t)l, " (%s%s)", v - base >= 0 ? "+" : "", d);
                    }
                }
                own[i] = xstrdup(cell);
                cells[i + 1] = own[i];
            }
            cli_table_row(t, (const char *const *)cells);
            for (int i = 0; i < n_ids; i++) free(own[i]);
        }
        // what the products ran in (train.precision "auto" resolved by the worker)
        cells[0] = "precision used";
        for (int i = 0; i < n_ids; i++) cells[i + 1] = runs[i].precision;
        cli_table_row(t, (const char *const *)cells);
        if (csv) {
            for (int r = 0; r < t->nrows; r++)
                for (int k = 0; k < t->ncols; k++) {
                    const char *v = t->cells[r * t->ncols + k];
                    csv_cell(stdout, strcmp(v, CLI_MISSING) ? v : "");
                    putchar(k + 1 < t->ncols ? ',' : '\n');
                }
        } else {
            cli_table_print(stdout, t, md);
        }
        cli_table_free(t);
        free(right);
        free(own);
        free(cells);
        cfg_free(&c);
    }
    for (int i = 0; i < n_ids; i++) store_run_clear(&runs[i]);
    free(runs);
    free(evs);
    store_close(st);
    return 0;
}

// A CSV number: empty when missing.
static void csv_num(FILE *f, double v) {
    if (!isnan(v) && !isinf(v)) fprintf(f, "%.10g", v);
}

int cmd_export(int argc, char **argv) {
    const char *ws = NULL, *what = "runs", *format = "csv", *run_list = NULL;
    int64_t sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench export [--runs ID,ID...] --what runs|metrics|evals|samples --format csv|json\n"
                   "       lorabench export --what sweep [--sweep ID] [--format md|csv|json]\n"
                   "       lorabench export --what runs [--runs IDS] --format md\n\n"
                   "Writes the stored rows to standard output. A missing value (no rank for a full fine-tune, no\n"
                   "loss for zero-shot) is an empty CSV field and a JSON null. --runs takes 2,3,7 or 4-9.\n"
                   "--what sweep: the runs of one sweep (default the latest); --format md is the slide-ready\n"
                   "table: method, rank, targets, trainable parameters, loss, ROUGE-1 with its 95%% bootstrap\n"
                   "interval, ROUGE-2, ROUGE-L and time.\n"
                   "--format svg (with --what metrics, curves or sweep): the loss curves of the runs as an SVG plot.\n");
            return 0;
        } else if (!strcmp(argv[i], "--what") && i + 1 < argc) what = argv[++i];
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) run_list = argv[++i];
        else if (!strcmp(argv[i], "--sweep") && i + 1 < argc) {
            if (cli_parse_id(argv[++i], &sweep)) return 2;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else {
            fprintf(stderr, "lorabench export: unknown argument %s; see --help\n", argv[i]);
            return 2;
        }
    }
    int is_sweep = !strcmp(what, "sweep");
    int svg = !strcmp(format, "svg");
    if (svg && !is_sweep && strcmp(what, "metrics") && strcmp(what, "curves")) {
        fprintf(stderr, "lorabench export: --format svg plots loss curves; use it with --what metrics, curves or sweep\n");
        return 2;
    }
    if (!strcmp(what, "curves") && !svg) {
        fprintf(stderr, "lorabench export: --what curves is an SVG plot; add --format svg (or use --what metrics for the rows)\n");
        return 2;
    }
    if (is_sweep) what = svg ? "metrics" : "runs";
    if (!strcmp(what, "curves")) what = "metrics";
    if (!strcmp(format, "markdown")) format = "md";
    int json = !strcmp(format, "json"), md = !strcmp(format, "md");
    if (!json && !md && !svg && strcmp(format, "csv")) {
        fprintf(stderr, "lorabench export: --format must be csv, json, md or svg\n");
        return 2;
    }
    if (strcmp(what, "runs") && strcmp(what, "metrics") && strcmp(what, "evals") && strcmp(what, "samples")) {
        fprintf(stderr, "lorabench export: --what must be runs, sweep, metrics, evals or samples\n");
        return 2;
    }
    if (md && strcmp(what, "runs")) {
        fprintf(stderr, "lorabench export: --format md is for --what runs or sweep; use csv or json for %s\n", what);
        return 2;
    }
    enum { MAX_IDS = 100000 };
    int64_t *want = NULL;
    int n_want = 0;
    if (run_list) {
        want = xmalloc(MAX_IDS * sizeof(int64_t));
        if (cli_parse_ids(run_list, want, &n_want, MAX_IDS)) {
            free(want);
            return 2;
        }
    }
    store_t *st;
    if (cli_open_store_read(ws, NULL, &st)) {
        free(want);
        return 1;
    }
    lb_err_t err = {0};
    store_run_t *all;
    size_t n_all;
    if (store_runs_list(st, "id", 0, NULL, &all, &n_all, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        store_close(st);
        free(want);
        return 1;
    }
    if (is_sweep && !sweep)
        for (size_t i = 0; i < n_all; i++)
            if (all[i].sweep_id > sweep) sweep = all[i].sweep_id;
    // the chosen runs, in id order (pointers into all)
    store_run_t *runs = xcalloc(n_all ? n_all : 1, sizeof *runs);
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++) {
        int hit = !run_list && !is_sweep;
        for (int k = 0; k < n_want && !hit; k++) hit = want[k] == all[i].id;
        if (is_sweep && all[i].sweep_id == sweep) hit = 1;
        if (hit) runs[n++] = all[i];
    }
    free(want);
    if (is_sweep && !n) {
        fprintf(stderr, "lorabench export: %s; 'lorabench sweep SPEC.json' makes one\n",
                sweep ? "that sweep has no runs" : "the workspace has no sweep yet");
        free(runs);
        store_runs_free(all, n_all);
        store_close(st);
        return 1;
    }
    int first = 1;
    if (svg) {
        // the loss of every chosen run against its step, as the workbench's Curves export
        svg_series_t *ss = xcalloc(n ? n : 1, sizeof *ss);
        double **bufs = xcalloc(2 * n + 1, sizeof *bufs);
        for (size_t i = 0; i < n; i++) {
            store_metric_t *m = NULL;
            size_t nm = 0;
            if (store_metrics_since(st, runs[i].id, -1, &m, &nm, &err)) nm = 0;
            bufs[2 * i] = xmalloc((nm + 1) * sizeof(double));
            bufs[2 * i + 1] = xmalloc((nm + 1) * sizeof(double));
            for (size_t k = 0; k < nm; k++) bufs[2 * i][k] = (double)m[k].step, bufs[2 * i + 1][k] = m[k].loss;
            free(m);
            ss[i] = (svg_series_t){runs[i].name, bufs[2 * i], bufs[2 * i + 1], (int)nm};
        }
        char title[96];
        if (is_sweep) snprintf(title, sizeof title, "Training loss, sweep %lld", (long long)sweep);
        else snprintf(title, sizeof title, "Training loss");
        char *text = svg_plot(title, "step", "loss", ss, (int)n, 0);
        fputs(text, stdout);
        free(text);
        for (size_t i = 0; i < 2 * n; i++) free(bufs[i]);
        free(bufs);
        free(ss);
        n = 0;
    } else if (md) {
        if (is_sweep) printf("Sweep %lld: %zu runs. ROUGE with its 95%% bootstrap interval; time is training and evaluation.\n\n",
                             (long long)sweep, n);
        cli_results_table(stdout, st, runs, n, 1);
        n = 0;
    } else if (json) putchar('[');
    else if (!strcmp(what, "runs")) {
        fputs(store_runs_csv_header(), stdout);
        char *text = store_runs_csv(runs, n, store_now());
        fputs(text ? text : "", stdout);
        free(text);
    } else if (!strcmp(what, "metrics")) printf("run,step,epoch,loss,lr,grad_norm,tokens_per_s,step_ms,rss_mb,tokens,wall_s\n");
    else if (!strcmp(what, "evals")) printf("run,eval,step,split,n,rouge1,rouge1_low,rouge1_high,rouge2,rougeL,rougeLsum\n");
    else printf("run,eval,idx,reference,prediction,rouge1,rouge2,rougeL\n");
    for (size_t i = 0; i < n; i++) {
        const store_run_t *r = &runs[i];
        if (!strcmp(what, "runs")) {
            if (json) {
                if (!first) putchar(',');
                run_json(stdout, r);
            }
            first = 0;
        } else if (!strcmp(what, "metrics")) {
            store_metric_t *m;
            size_t nm;
            if (store_metrics_since(st, r->id, -1, &m, &nm, &err)) continue;
            for (size_t k = 0; k < nm; k++) {
                if (json) {
                    printf("%s{\"run\":%lld,\"step\":%lld,\"epoch\":", first ? "" : ",", (long long)r->id, (long long)m[k].step);
                    json_num(stdout, m[k].epoch);
                    fputs(",\"loss\":", stdout);
                    json_num(stdout, m[k].loss);
                    fputs(",\"lr\":", stdout);
                    json_num(stdout, m[k].lr);
                    fputs(",\"grad_norm\":", stdout);
                    json_num(stdout, m[k].grad_norm);
                    fputs(",\"tokens_per_s\":", stdout);
                    json_num(stdout, m[k].tokens_per_s);
                    fputs(",\"step_ms\":", stdout);
                    json_num(stdout, m[k].step_ms);
                    fputs(",\"rss_mb\":", stdout);
                    json_num(stdout, m[k].rss_mb);
                    printf(",\"tokens\":%lld,\"wall_s\":", (long long)m[k].tokens);
                    json_num(stdout, m[k].wall_s);
                    putchar('}');
                } else {
                    printf("%lld,%lld,", (long long)r->id, (long long)m[k].step);
                    const double v[] = {m[k].epoch, m[k].loss, m[k].lr, m[k].grad_norm, m[k].tokens_per_s, m[k].step_ms, m[k].rss_mb};
                    for (size_t q = 0; q < sizeof v / sizeof v[0]; q++) csv_num(stdout, v[q]), putchar(',');
                    if (m[k].tokens >= 0) printf("%lld", (long long)m[k].tokens);
                    putchar(',');
                    csv_num(stdout, m[k].wall_s);
                    putchar('\n');
                }
                first = 0;
            }
            free(m);
        } else {
            store_eval_t *ev;
            size_t ne;
            if (store_evals_list(st, r->id, &ev, &ne, &err)) continue;
            for (size_t k = 0; k < ne; k++) {
                if (!strcmp(what, "evals")) {
                    if (json) {
                        printf("%s{\"run\":%lld,\"eval\":%lld,\"step\":%lld,\"split\":\"%s\",\"n\":%lld,\"rouge1\":",
                               first ? "" : ",", (long long)r->id, (long long)ev[k].id, (long long)ev[k].step, ev[k].split,
                               (long long)ev[k].n);
                        json_num(stdout, ev[k].rouge1);
                        fputs(",\"rouge1_low\":", stdout);
                        json_num(stdout, ev[k].rouge1_low);
                        fputs(",\"rouge1_high\":", stdout);
                        json_num(stdout, ev[k].rouge1_high);
                        fputs(",\"rouge2\":", stdout);
                        json_num(stdout, ev[k].rouge2);
                        fputs(",\"rougeL\":", stdout);
                        json_num(stdout, ev[k].rougeL);
                        fputs(",\"rougeLsum\":", stdout);
                        json_num(stdout, ev[k].rougeLsum);
                        putchar('}');
                    } else {
                        printf("%lld,%lld,%lld,%s,%lld", (long long)r->id, (long long)ev[k].id, (long long)ev[k].step,
                               ev[k].split, (long long)ev[k].n);
                        const double v[] = {ev[k].rouge1, ev[k].rouge1_low, ev[k].rouge1_high, ev[k].rouge2, ev[k].rougeL,
                                            ev[k].rougeLsum};
                        for (size_t q = 0; q < sizeof v / sizeof v[0]; q++) putchar(','), csv_num(stdout, v[q]);
                        putchar('\n');
                    }
                    first = 0;
                } else {
                    store_sample_row_t *s;
                    size_t ns;
                    if (store_samples_list(st, ev[k].id, 0, -1, &s, &ns, &err)) continue;
                    for (size_t q = 0; q < ns; q++) {
                        if (json) {
                            printf("%s{\"run\":%lld,\"eval\":%lld,\"idx\":%lld,\"reference\":", first ? "" : ",",
                                   (long long)r->id, (long long)ev[k].id, (long long)s[q].idx);
                            cli_json_string(stdout, s[q].reference);
                            fputs(",\"prediction\":", stdout);
                            cli_json_string(stdout, s[q].prediction);
                            fputs(",\"rouge1\":", stdout);
                            json_num(stdout, s[q].rouge1);
                            fputs(",\"rouge2\":", stdout);
                            json_num(stdout, s[q].rouge2);
                            fputs(",\"rougeL\":", stdout);
                            json_num(stdout, s[q].rougeL);
                            putchar('}');
                        } else {
                            printf("%lld,%lld,%lld,", (long long)r->id, (long long)ev[k].id, (long long)s[q].idx);
                            csv_cell(stdout, s[q].reference);
                            putchar(',');
                            csv_cell(stdout, s[q].prediction);
                            const double v[] = {s[q].rouge1, s[q].rouge2, s[q].rougeL};
                            for (size_t x = 0; x < 3; x++) putchar(','), csv_num(stdout, v[x]);
                            putchar('\n');
                        }
                        first = 0;
                    }
                    store_samples_free(s, ns);
                }
            }
            free(ev);
        }
    }
    if (json) printf("]\n");
    free(runs);  // its rows belong to all
    store_runs_free(all, n_all);
    store_close(st);
    return 0;
}

int cmd_rm(int argc, char **argv) {
    const char *ws = NULL;
    enum { MAX_RM = 4096 };
    int64_t *ids = xmalloc(sizeof(int64_t) * MAX_RM);
    int n = 0, rc = 2;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench rm IDS [--workspace DIR]\n\nDeletes runs: their rows (metrics, evals, samples, "
                   "artifacts) and their folders runs/<id>/. IDS as 3, 2 3 7, 2,3,7 or 4-9. A running run\n"
                   "must be cancelled first; nothing is deleted when an id is not a run.\n");
            free(ids);
            return 0;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (cli_parse_ids(argv[i], ids, &n, MAX_RM)) goto out;
    }
    if (!n) {
        fprintf(stderr, "lorabench rm: give the run id(s)\n");
        goto out;
    }
    char *wsdir;
    store_t *st;
    rc = 1;
    if (cli_open_store(ws, &wsdir, &st)) goto out;
    lb_err_t err = {0};
    // Every id must be a run that can go before any is deleted: checked and deleted in one
    // transaction, so a run resumed from elsewhere meanwhile is not deleted under its worker.
    int ok = 1;
    if (store_runs_delete_idle(st, ids, (size_t)n, &err)) {
        fprintf(stderr, "lorabench: %s; nothing deleted\n", err.msg);
        ok = 0;
    }
    for (int i = 0; i < n && ok; i++) {
        if (store_run_dir_remove(wsdir, ids[i], &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            ok = 0;
        } else {
            printf("run %lld deleted\n", (long long)ids[i]);
        }
    }
    if (ok) rc = 0;
    store_close(st);
    free(wsdir);
out:
    free(ids);
    return rc;
}
