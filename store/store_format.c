// How a run's row is written for people and files: names fitted with a middle ellipsis,
// the runs CSV, durations, numbered names. See store.h.
#include <langinfo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "store_internal.h"

// The next code point of UTF-8 text at *sp (advancing it); an invalid byte is U+FFFD and
// takes one byte, so that text is never cut inside a character nor stuck on a bad one.
static uint32_t utf8_next(const char **sp) {
    const unsigned char *s = (const unsigned char *)*sp;
    uint32_t c = s[0];
    int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
    if (n < 0) {
        *sp += 1;
        return 0xFFFD;
    }
    c &= n == 0 ? 0x7F : n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07;
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *sp += i;
            return 0xFFFD;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *sp += n + 1;
    return c;
}

// East Asian wide and full-width ranges and emoji (after Markus Kuhn's wcwidth), for a
// locale whose character set is not UTF-8.
static int cp_cols_table(uint32_t c) {
    if ((c >= 0x0300 && c <= 0x036F) || (c >= 0x0483 && c <= 0x0489) || (c >= 0x0591 && c <= 0x05BD) ||
        (c >= 0x200B && c <= 0x200F) || (c >= 0x20D0 && c <= 0x20FF) || (c >= 0xFE00 && c <= 0xFE0F) ||
        (c >= 0xFE20 && c <= 0xFE2F) || c == 0xFEFF || (c >= 0xE0100 && c <= 0xE01EF))
        return 0;
    if (c >= 0x1100 &&
        (c <= 0x115F || c == 0x2329 || c == 0x232A || (c >= 0x2E80 && c <= 0xA4CF && c != 0x303F) ||
         (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE10 && c <= 0xFE19) ||
         (c >= 0xFE30 && c <= 0xFE6F) || (c >= 0xFF00 && c <= 0xFF60) || (c >= 0xFFE0 && c <= 0xFFE6) ||
         (c >= 0x1F300 && c <= 0x1F64F) || (c >= 0x1F680 && c <= 0x1F6FF) || (c >= 0x1F900 && c <= 0x1F9FF) ||
         (c >= 0x20000 && c <= 0x2FFFD) || (c >= 0x30000 && c <= 0x3FFFD)))
        return 2;
    return 1;
}

int store_cp_cols(uint32_t cp) {
    if (cp < 0x7F) return 1;  // ASCII (control characters are shown as one blank)
    // With a UTF-8 locale, the C library's wcwidth: what ncurses and the terminal use.
    const char *cs = nl_langinfo(CODESET);
    if (cs && (!strcmp(cs, "UTF-8") || !strcmp(cs, "utf8"))) {
        int w = wcwidth((wchar_t)cp);
        return w < 0 ? 1 : w;
    }
    return cp_cols_table(cp);
}

int store_text_cols(const char *s) {
    int n = 0;
    if (!s) return 0;
    while (*s) n += store_cp_cols(utf8_next(&s));
    return n;
}

int store_text_fit(const char *s, int width, char *out, size_t cap) {
    if (!cap) return 0;
    out[0] = 0;
    if (!s || width <= 0) return 0;
    int cols = store_text_cols(s);
    if (cols <= width) {
        snprintf(out, cap, "%s", s);
        return store_text_cols(out);
    }
    // keep more of the end: that is where a sweep's runs differ
    int keep = width - 1, head = keep / 3, tail = keep - head;
    // head: whole characters while they fit in `head` columns
    const char *p = s, *head_end = s;
    for (int c = 0; *p;) {
        const char *q = p;
        int w = store_cp_cols(utf8_next(&q));
        if (c + w > head) break;
        c += w;
        p = head_end = q;
    }
    // tail: the shortest end of s that fills at most `tail` columns, from whole characters
    const char *tail_start = s + strlen(s);
    for (p = head_end; *p;) {
        if (store_text_cols(p) <= tail) {
            tail_start = p;
            break;
        }
        utf8_next(&p);
    }
    snprintf(out, cap, "%.*s…%s", (int)(head_end - s), s, tail_start);
    return store_text_cols(out);
}

const char *store_runs_csv_header(void) {
    return "id,name,status,method,r,alpha,targets,trainable,trainable_pct,steps,total_steps,loss,"
           "rouge1,rouge2,rougeL,rougeLsum,tokens_per_s,peak_rss_mb,duration_s,tags,notes\n";
}

double store_run_duration(const store_run_t *r, double now) {
    if (isnan(r->started_at)) return NAN;
    if (store_status_parse(r->status) == STORE_RUN_RUNNING) return now - r->started_at;
    return r->duration;
}

typedef struct {
    char *s;
    size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

// s as one CSV field: quoted when it holds a comma, quote or line break (a quote doubled).
static void csv_quote(buf_t *b, const char *s) {
    if (s && strpbrk(s, ",\"\n\r")) {
        buf_put(b, "\"", 1);
        for (const char *p = s; *p; p++) {
            if (*p == '"') buf_put(b, "\"", 1);  // a quote is doubled
            buf_put(b, p, 1);
        }
        buf_put(b, "\"", 1);
    } else if (s) {
        buf_put(b, s, strlen(s));
    }
}

// One CSV field and its separator.
static void csv_field(buf_t *b, const char *s, char sep) {
    csv_quote(b, s);
    buf_put(b, &sep, 1);
}

char *store_csv_quote(const char *s) {
    buf_t b = {0};
    buf_put(&b, "", 0);
    csv_quote(&b, s);
    return b.s;
}

char *store_runs_csv(const store_run_t *runs, size_t n, double now) {
    buf_t b = {0};
    buf_put(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        const store_run_t *r = &runs[i];
        enum { NV = 21 };
        char v[NV][64];
        for (int k = 0; k < NV; k++) v[k][0] = 0;  // a missing value (negative, NaN) stays empty
        snprintf(v[0], 64, "%lld", (long long)r->id);
        if (r->r >= 0) snprintf(v[4], 64, "%lld", (long long)r->r);
        if (!isnan(r->alpha)) snprintf(v[5], 64, "%g", r->alpha);
        if (r->trainable_params >= 0) snprintf(v[7], 64, "%lld", (long long)r->trainable_params);
        if (!isnan(r->trainable_pct)) snprintf(v[8], 64, "%.4f", r->trainable_pct);
        snprintf(v[9], 64, "%lld", (long long)(r->step < 0 ? 0 : r->step));
        if (r->total_steps >= 0) snprintf(v[10], 64, "%lld", (long long)r->total_steps);
        double nums[8] = {r->final_loss, r->rouge1, r->rouge2, r->rougeL, r->rougeLsum, r->tokens_per_s, r->peak_rss_mb,
                          store_run_duration(r, now)};
        for (int k = 0; k < 8; k++)
            if (!isnan(nums[k])) snprintf(v[11 + k], 64, "%.6g", nums[k]);
        const char *f[NV] = {v[0],  r->name, r->status, r->method, v[4],  v[5],  r->targets,
                             v[7],  v[8],    v[9],      v[10],     v[11], v[12], v[13],
                             v[14], v[15],   v[16],     v[17],     v[18], r->tags, r->notes};
        for (int k = 0; k < NV; k++) csv_field(&b, f[k], k < NV - 1 ? ',' : '\n');
    }
    return b.s;
}

void store_name_numbered(const char *name, int n, char *out, size_t cap) {
    snprintf(out, cap, "%s (%d)", name, n);
}

int store_run_name_taken(store_t *st, const char *name) {
    sqlite3_stmt *s;
    lb_err_t err = {0};
    if (stmt_prepare(st, "SELECT 1 FROM runs WHERE name = ?1 LIMIT 1", &s, &err)) return 0;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    int taken = stmt_step(st, s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return taken;
}
