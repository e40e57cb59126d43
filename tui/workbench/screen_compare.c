// The Compare screen: two or more runs side by side. Tabs: metrics with Δ to the pinned
// baseline and bars (ROUGE with 95% intervals, speed, memory); the config with a diff-only
// toggle; overlaid smoothed loss curves; generated summaries for the same inputs.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "svg.h"

enum { A_TAB = ACT_SCREEN, A_BTAB, A_TAB1, A_TAB2, A_TAB3, A_TAB4, A_DIFF, A_SMOOTH_UP, A_SMOOTH_DOWN,
       A_LOGY, A_XAXIS, A_DOWN, A_UP, A_NEXT, A_PREV };

static const key_binding_t keys[] = {
    {TK_TAB, 0, A_TAB, "Tab", "next tab: metrics, config, curves, samples (1-4 jump)", "Tabs"},
    {TK_BTAB, 0, A_BTAB, "S-Tab", "previous tab", NULL},
    {'1', 0, A_TAB1, "1", "metrics: values, Δ to the baseline, ROUGE / speed / memory bars", NULL},
    {'2', 0, A_TAB2, "2", "config side by side", NULL},
    {'3', 0, A_TAB3, "3", "overlaid loss curves", NULL},
    {'4', 0, A_TAB4, "4", "generated summaries for the same inputs", NULL},
    {'d', 0, A_DIFF, "d", "config: only the fields that differ", "Diff"},
    {'+', '=', A_SMOOTH_UP, "+/-", "more / less smoothing of the curves (EMA 0..0.999)", "Smooth"},
    {'-', 0, A_SMOOTH_DOWN, "-", "less smoothing", NULL},
    {'l', 0, A_LOGY, "l", "log / linear y axis", NULL},
    {'x', 0, A_XAXIS, "x", "x axis: step, tokens, time", NULL},
    {TK_DOWN, 'j', A_DOWN, "Down/j", "scroll down", NULL},
    {TK_UP, 'k', A_UP, "Up/k", "scroll up", NULL},
    {TK_RIGHT, 'n', A_NEXT, "Right/n", "samples: next input", NULL},
    {TK_LEFT, 'N', A_PREV, "Left/N", "samples: previous input", NULL},
};

static const char *const tab_names[CMP_NTABS] = {"1 Metrics", "2 Config", "3 Curves", "4 Samples"};

// The compared runs that still exist, in order.
static int compare_runs(app_t *a, const store_run_t **out) {
    int n = 0;
    for (int i = 0; i < a->ncompare; i++) {
        const store_run_t *r = app_run_by_id(a, a->compare_ids[i]);
        if (r) out[n++] = r;
    }
    return n;
}

// The run every Δ is against: the pinned baseline, else the first compared run.
static const store_run_t *baseline(app_t *a, const store_run_t **runs, int n) {
    const store_run_t *b = a->pinned_id ? app_run_by_id(a, a->pinned_id) : NULL;
    return b ? b : n ? runs[0] : NULL;
}

static char run_letter(int i) { return (char)('A' + i); }
static int run_style(int i) { return ST_SERIES0 + i % GRID_NSERIES; }

// A Δ with its sign always shown (for terminals without colour) and green when better.
static int delta_text(app_t *a, double v, double base, int higher_better, int prec, char *buf) {
    if (isnan(v) || isnan(base)) {
        buf[0] = 0;
        return ST_DIM;
    }
    double d = v - base;
    double eps = 0.5 * pow(10, -prec);
    if (fabs(d) < eps) {
        snprintf(buf, 32, "=");
        return ST_DIM;
    }
    snprintf(buf, 32, "%s%.*f", d > 0 ? "+" : a->ascii ? "-" : "−", prec, fabs(d));
    return (d > 0) == (higher_better != 0) ? ST_GOOD : ST_BAD;
}

// ---- metrics tab ----

typedef struct {
    const char *title;
    int w, prec, higher_better;
    double (*get)(const store_run_t *);
    int no_delta;  // 1: no Δ column (trainable parameters: a choice, not a result)
} metric_col_t;

static double m_loss(const store_run_t *r) { return r->final_loss; }
static double m_r1(const store_run_t *r) { return r->rouge1; }
static double m_r2(const store_run_t *r) { return r->rouge2; }
static double m_rl(const store_run_t *r) { return r->rougeL; }
static double m_tps(const store_run_t *r) { return r->tokens_per_s; }
static double m_mem(const store_run_t *r) { return r->peak_rss_mb; }
static double m_train(const store_run_t *r) { return r->trainable_params >= 0 ? (double)r->trainable_params : NAN; }

static const metric_col_t mcols[] = {
    {"loss", 7, 3, 0, m_loss, 0}, {"R-1", 7, 3, 1, m_r1, 0},          {"R-2", 7, 3, 1, m_r2, 0},
    {"R-L", 7, 3, 1, m_rl, 0},    {"trainable", 9, 0, 0, m_train, 1}, {"tok/s", 7, 0, 1, m_tps, 0},
    {"mem MB", 7, 0, 0, m_mem, 0},
};
enum { N_MCOLS = sizeof mcols / sizeof mcols[0] };

// Draws the metric table; returns rows used.
static int draw_metric_table(app_t *a, grid_t *g, int x, int y, int w, const store_run_t **runs, int n,
                             const store_run_t *base) {
    // name column gets what the numbers leave; each metric is value + Δ (Δ hidden if narrow)
    int show_delta = w >= 60;
    int cw[N_MCOLS], cx[N_MCOLS + 1];
    for (int c = 0; c < N_MCOLS; c++) cw[c] = mcols[c].w + (show_delta ? (mcols[c].no_delta ? 2 : 7) : 1);
    int ncols = N_MCOLS, total = 0;
    for (int c = 0; c < ncols; c++) total += cw[c];
    while (ncols > 2 && 17 + total > w) total -= cw[--ncols];
    int namew = w - total - 1;
    if (namew > 36) namew = 36;
    cx[0] = x + namew + 1;
    for (int c = 0; c < ncols; c++) cx[c + 1] = cx[c] + cw[c];
    grid_fill(g, x, y, w, 1, ' ', ST_HEADER);
    grid_text(g, x, y, namew, "run", ST_HEADER);
    for (int c = 0; c < ncols; c++) {
        int vw = mcols[c].w, vx = cx[c] + vw + (show_delta && mcols[c].no_delta);  // where the value ends
        grid_text_right(g, vx, y, vw, mcols[c].title, ST_HEADER);
        if (show_delta && !mcols[c].no_delta) grid_text_right(g, cx[c] + vw + 7, y, 7, a->ascii ? "D" : "Δ", ST_HEADER);
    }
    for (int i = 0; i < n; i++) {
        const store_run_t *r = runs[i];
        int yy = y + 1 + i;
        grid_put(g, x, yy, (uint32_t)run_letter(i), run_style(i));
        char name[160];
        snprintf(name, sizeof name, "#%lld %s%s", (long long)r->id, r->name, r == base ? " (base)" : "");
        grid_text_trunc(g, x + 2, yy, namew - 2, name, r == base ? ST_ACCENT : ST_NORMAL);
        for (int c = 0; c < ncols; c++) {
            int vw = mcols[c].w, vx = cx[c] + vw + (show_delta && mcols[c].no_delta);
            char v[32], d[32];
            double val = mcols[c].get(r);
            if (mcols[c].prec == 0 && !isnan(val)) fmt_count(v, val);
            else fmt_num(v, val, mcols[c].prec);
            grid_text_right(g, vx, yy, vw, v, ST_NORMAL);
            if (show_delta && !mcols[c].no_delta && r != base) {
                int st = delta_text(a, val, mcols[c].get(base), mcols[c].higher_better, mcols[c].prec, d);
                grid_text_right(g, cx[c] + vw + 7, yy, 7, d, st);
            }
        }
    }
    return n + 1;
}

// One group of bars (one per run) on a shared scale.
static int draw_bar_group(app_t *a, grid_t *g, int x, int y, int w, int hmax, const char *title,
                          const store_run_t **runs, int n, int which) {
    if (hmax < 2) return 0;
    grid_text(g, x, y, w, title, ST_BOLD);
    double vmax = 0;
    double val[APP_MAX_COMPARE], lo[APP_MAX_COMPARE], hi[APP_MAX_COMPARE];
    for (int i = 0; i < n; i++) {
        const store_run_t *r = runs[i];
        lo[i] = hi[i] = NAN;
        if (which <= 1) {
            app_series_t *s = app_series(a, r->id);
            const store_eval_t *ev = app_series_last_eval(s);
            val[i] = which == 0 ? r->rouge1 : r->rougeL;
            if (ev) {
                lo[i] = which == 0 ? ev->rouge1_low : ev->rougeL_low;
                hi[i] = which == 0 ? ev->rouge1_high : ev->rougeL_high;
            }
        } else {
            val[i] = which == 2 ? r->tokens_per_s : r->peak_rss_mb;
        }
        double top = isfinite(hi[i]) ? hi[i] : val[i];
        if (isfinite(top) && top > vmax) vmax = top;
    }
    if (vmax <= 0) vmax = 1;
    int labelw = 16, valw = which <= 1 ? 22 : 10;
    int bw = w - labelw - valw - 1;
    int rows = 1;
    for (int i = 0; i < n && rows < hmax; i++, rows++) {
        int yy = y + rows;
        grid_put(g, x, yy, (uint32_t)run_letter(i), run_style(i));
        grid_text_trunc(g, x + 2, yy, labelw - 3, runs[i]->name, ST_NORMAL);
        widget_hbar(g, x + labelw, yy, bw, val[i], lo[i], hi[i], 0, vmax, run_style(i));
        char v[64], t[32];
        if (which <= 1) {
            if (isfinite(lo[i])) snprintf(v, sizeof v, "%.3f [%.3f,%.3f]", val[i], lo[i], hi[i]);
            else fmt_num(v, val[i], 3);
        } else if (which == 2) {
            snprintf(v, sizeof v, "%s", isnan(val[i]) ? "-" : fmt_count(t, val[i]));
        } else {
            snprintf(v, sizeof v, "%s", isnan(val[i]) ? "-" : fmt_bytes(t, val[i] * 1048576.0));
        }
        grid_text(g, x + labelw + bw + 1, yy, valw, v, ST_NORMAL);
    }
    return rows;
}

// A run's loss curve as the Curves tab shows it: x on the tab's axis, the raw loss and its
// EMA at the tab's smoothing (each malloc'd, one spare slot); returns the number of points.
static int loss_curve(app_t *a, int64_t id, double **xs, double **raw, double **ys) {
    app_series_t *s = app_series(a, id);
    *xs = xmalloc((s->n + 1) * sizeof **xs);
    *ys = xmalloc((s->n + 1) * sizeof **ys);
    *raw = xmalloc((s->n + 1) * sizeof **raw);
    for (size_t k = 0; k < s->n; k++) {
        (*xs)[k] = app_metric_x(&s->m[k], a->cmp_xaxis);
        (*raw)[k] = s->m[k].loss;
    }
    plot_ema(*raw, (int)s->n, a->smooth, *ys);
    return (int)s->n;
}

static void draw_curves(app_t *a, grid_t *g, int x, int y, int w, int h, const store_run_t **runs, int n) {
    plot_series_t ps[APP_MAX_COMPARE];
    double *bufs[APP_MAX_COMPARE * 2];
    for (int i = 0; i < n; i++) {
        double *xs, *raw, *ys;
        int np = loss_curve(a, runs[i]->id, &xs, &raw, &ys);
        free(raw);
        bufs[2 * i] = xs;
        bufs[2 * i + 1] = ys;
        ps[i] = (plot_series_t){runs[i]->name, xs, ys, np, run_style(i), run_letter(i)};
    }
    char title[96];
    snprintf(title, sizeof title, "loss, EMA %.*f%s", app_smooth_digits(a->smooth), a->smooth, a->cmp_logy ? ", log y" : "");
    grid_box(g, x, y, w, h, title, ST_DIM);
    plot_opts_t po = {a->cmp_logy, a->ascii, 1, app_xaxis_name(a->cmp_xaxis)};
    widget_plot(g, x + 1, y + 1, w - 2, h - 2, ps, n, &po);
    for (int i = 0; i < 2 * n; i++) free(bufs[i]);
}

static void draw_metrics(app_t *a, grid_t *g, int y, int h, const store_run_t **runs, int n) {
    const store_run_t *base = baseline(a, runs, n);
    char line[256];
    snprintf(line, sizeof line, "%s against #%lld %s (%s)", a->ascii ? "D" : "Δ", (long long)base->id, base->name,
             base->id == a->pinned_id ? "pinned baseline" : "first run; p on Runs pins a baseline");
    grid_text_trunc(g, 1, y, g->w - 2, line, ST_DIM);
    int used = 1 + draw_metric_table(a, g, 1, y + 1, g->w - 2, runs, n, base);
    // below the table: bars, and on wide terminals the curves beside them
    int w = g->w >= 140 ? g->w / 2 : g->w;
    // bar groups, scrolled by j/k
    static const char *const titles[4] = {"ROUGE-1 with 95% interval", "ROUGE-L with 95% interval",
                                          "tokens per second", "peak memory"};
    int gy = y + used + 1;
    for (int k = a->cmp_scroll; k < 4; k++) {
        int rows = draw_bar_group(a, g, 1, gy, w - 2, y + h - gy, titles[k], runs, n, k);
        if (!rows) break;
        gy += rows + 1;
    }
    if (w < g->w) draw_curves(a, g, w, y + used + 1, g->w - w, h - used - 1, runs, n);
}

// ---- config tab ----

typedef struct {
    char key[128];
    char *val[APP_MAX_COMPARE];
} cfg_row_t;

typedef struct {
    cfg_row_t *rows;
    int n, cap;
} cfg_t;

static cfg_row_t *cfg_row(cfg_t *c, const char *key) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->rows[i].key, key)) return &c->rows[i];
    if (c->n == c->cap) {
        c->cap = c->cap * 2 + 16;
        c->rows = xrealloc(c->rows, (size_t)c->cap * sizeof *c->rows);
    }
    cfg_row_t *r = &c->rows[c->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    return r;
}

static void cfg_flatten(cfg_t *c, const cJSON *j, const char *prefix, int run) {
    for (const cJSON *it = j->child; it; it = it->next) {
        char key[128];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", it->string ? it->string : "?");
        if (cJSON_IsObject(it)) {
            cfg_flatten(c, it, key, run);
            continue;
        }
        char *v;
        if (cJSON_IsString(it)) v = xstrdup(it->valuestring);
        else {
            v = cJSON_PrintUnformatted(it);
            if (!v) v = xstrdup("?");
            else {
                char *t = xstrdup(v);
                cJSON_free(v);
                v = t;
            }
        }
        cfg_row_t *r = cfg_row(c, key);
        free(r->val[run]);
        r->val[run] = v;
    }
}

static int cfg_differs(const cfg_row_t *r, int n) {
    for (int i = 1; i < n; i++) {
        const char *a = r->val[0] ? r->val[0] : "", *b = r->val[i] ? r->val[i] : "";
        if (strcmp(a, b)) return 1;
    }
    return 0;
}

static void cfg_build(cfg_t *c, const store_run_t **runs, int n) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < n; i++) {
        cJSON *j = cJSON_Parse(runs[i]->spec ? runs[i]->spec : "");
        if (j && cJSON_IsObject(j)) {
            // a spec carries every section with its defaults; a full fine-tune's "lora.r 8"
            // would read as if it had used one, so sections of other methods show as "-"
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "method");
            const char *method = cJSON_IsString(m) ? m->valuestring : "";
            if (strcmp(method, "lora")) cJSON_DeleteItemFromObjectCaseSensitive(j, "lora");
            if (strcmp(method, "partial")) cJSON_DeleteItemFromObjectCaseSensitive(j, "partial");
            cfg_flatten(c, j, "", i);
        }
        else cfg_row(c, "spec")->val[i] = xstrdup("(unreadable JSON)");
        cJSON_Delete(j);
    }
}

static void cfg_free(cfg_t *c) {
    for (int i = 0; i < c->n; i++)
        for (int k = 0; k < APP_MAX_COMPARE; k++) free(c->rows[i].val[k]);
    free(c->rows);
}

static void draw_config(app_t *a, grid_t *g, int y, int h, const store_run_t **runs, int n) {
    cfg_t c;
    cfg_build(&c, runs, n);
    int keyw = 26, colw = (g->w - keyw - 2) / n;
    grid_fill(g, 0, y, g->w, 1, ' ', ST_HEADER);
    grid_text(g, 1, y, keyw - 1, a->cmp_diff_only ? "field (differences only)" : "field", ST_HEADER);
    for (int i = 0; i < n; i++) {
        char t[160];
        snprintf(t, sizeof t, "%c #%lld %s", run_letter(i), (long long)runs[i]->id, runs[i]->name);
        grid_text_trunc(g, keyw + 1 + i * colw, y, colw - 1, t, ST_HEADER);
    }
    int shown = 0, row = 0;
    for (int k = 0; k < c.n; k++) {
        int diff = cfg_differs(&c.rows[k], n);
        if (a->cmp_diff_only && !diff) continue;
        if (shown++ < a->cmp_scroll) continue;
        if (row >= h - 1) break;
        int yy = y + 1 + row++;
        grid_text_trunc(g, 1, yy, keyw - 1, c.rows[k].key, diff ? ST_WARN : ST_DIM);
        for (int i = 0; i < n; i++)
            grid_text_trunc(g, keyw + 1 + i * colw, yy, colw - 1, c.rows[k].val[i] ? c.rows[k].val[i] : "-",
                            diff ? ST_BOLD : ST_NORMAL);
    }
    if (!shown) grid_text(g, 1, y + 1, g->w - 2, "the configs are identical", ST_DIM);
    cfg_free(&c);
}

// ---- samples tab ----

static void draw_samples(app_t *a, grid_t *g, int y, int h, const store_run_t **runs, int n) {
    app_series_t *s0 = app_series(a, runs[0]->id);
    size_t ns = 0;
    for (int i = 0; i < n; i++) {
        app_series_t *s = app_series(a, runs[i]->id);
        if (s->nsamples > ns) ns = s->nsamples;
    }
    if (!ns) {
        grid_text(g, 1, y + 1, g->w - 2, "no generated samples yet: they appear after an evaluation", ST_DIM);
        return;
    }
    if (a->cmp_sample >= (int)ns) a->cmp_sample = (int)ns - 1;
    if (a->cmp_sample < 0) a->cmp_sample = 0;
    // the same input: samples are matched by their index in the evaluated split
    int64_t idx = -1;
    const store_sample_row_t *first = NULL;
    for (int i = 0; i < n && !first; i++) {
        app_series_t *s = app_series(a, runs[i]->id);
        if ((size_t)a->cmp_sample < s->nsamples) first = &s->samples[a->cmp_sample];
    }
    (void)s0;
    idx = first->idx;
    grid_textf(g, 1, y, g->w - 2, ST_BOLD, "input %d of %zu (example %lld; Left/Right change it, j/k scroll)",
               a->cmp_sample + 1, ns, (long long)idx);
    int srcrows = h / 4 < 2 ? 2 : h / 4;
    grid_text(g, 1, y + 1, 10, "source", ST_DIM);
    widget_wrap(g, 11, y + 1, g->w - 12, srcrows, first->source, 0, ST_NORMAL);
    int ry = y + 1 + srcrows;
    grid_text(g, 1, ry, 10, "reference", ST_DIM);
    int rr = widget_wrap(g, 11, ry, g->w - 12, 2, first->reference, 0, ST_BOLD);
    int py = ry + (rr ? rr : 1) + 1;
    int colw = (g->w - 1) / n;
    for (int i = 0; i < n; i++) {
        app_series_t *s = app_series(a, runs[i]->id);
        const store_sample_row_t *sm = NULL;
        for (size_t k = 0; k < s->nsamples; k++)
            if (s->samples[k].idx == idx) sm = &s->samples[k];
        int cx = 1 + i * colw;
        char t[160];
        snprintf(t, sizeof t, "%c %s", run_letter(i), runs[i]->name);
        grid_text_trunc(g, cx, py, colw - 9, t, run_style(i));
        if (!sm) {
            grid_text(g, cx, py + 1, colw - 1, "(not generated)", ST_DIM);
            continue;
        }
        grid_textf(g, cx + colw - 9, py, 8, ST_DIM, "R1 %.2f", sm->rouge1);
        widget_wrap(g, cx, py + 1, colw - 2, y + h - py - 1, sm->prediction, a->cmp_scroll, ST_NORMAL);
    }
}

// ---- screen ----

static void draw(app_t *a, grid_t *g, int y, int h) {
    const store_run_t *runs[APP_MAX_COMPARE];
    int n = compare_runs(a, runs);
    int x = 1;
    for (int t = 0; t < CMP_NTABS; t++) {
        a->cmp_tab_x[t] = x;
        x += grid_text(g, x, y, g->w - x, tab_names[t], t == a->cmp_tab ? ST_CURSOR : ST_DIM);
        x += 2;
    }
    a->cmp_tab_x[CMP_NTABS] = x - 2;
    for (int i = 0; i < n && x < g->w - 4; i++) {
        char t[96];
        snprintf(t, sizeof t, "%c #%lld", run_letter(i), (long long)runs[i]->id);
        x += grid_text(g, x + 1, y, g->w - x - 1, t, run_style(i)) + 1;
    }
    if (n < 2) {
        grid_text(g, 1, y + 2, g->w - 2, "Fewer than two of the compared runs exist now. Esc goes back.", ST_BOLD);
        return;
    }
    y += 1;
    h -= 1;
    switch (a->cmp_tab) {
    case CMP_METRICS: draw_metrics(a, g, y, h, runs, n); break;
    case CMP_CONFIG: draw_config(a, g, y, h, runs, n); break;
    case CMP_CURVES: draw_curves(a, g, 0, y, g->w, h, runs, n); break;
    case CMP_SAMPLES: draw_samples(a, g, y, h, runs, n); break;
    }
}

// Markdown of the metrics and the config differences.
static void export_compare(app_t *a) {
    const store_run_t *runs[APP_MAX_COMPARE];
    int n = compare_runs(a, runs);
    if (n < 1) return;
    const store_run_t *base = baseline(a, runs, n);
    app_buf_t b = {0};
    app_buf_printf(&b, "# Compare\n\nΔ against run %lld (%s).\n\n| run | name | method |", (long long)base->id,
                   base->name);
    for (int c = 0; c < N_MCOLS; c++) app_buf_printf(&b, mcols[c].no_delta ? " %s |" : " %s | Δ |", mcols[c].title);
    app_buf_printf(&b, " ROUGE-1 [95%% interval] | ROUGE-L [95%% interval] | time |\n|---|---|---|");
    for (int c = 0; c < N_MCOLS; c++) app_buf_printf(&b, mcols[c].no_delta ? "---:|" : "---:|---:|");
    app_buf_printf(&b, "---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const store_run_t *r = runs[i];
        app_buf_printf(&b, "| %lld | %s | %s |", (long long)r->id, r->name, r->method);
        for (int c = 0; c < N_MCOLS; c++) {
            char v[32] = "–", d[32];  // a value a run does not have is "–"
            if (isfinite(mcols[c].get(r))) fmt_num(v, mcols[c].get(r), mcols[c].prec);
            if (mcols[c].no_delta) {
                app_buf_printf(&b, " %s |", v);
                continue;
            }
            delta_text(a, mcols[c].get(r), mcols[c].get(base), mcols[c].higher_better, mcols[c].prec, d);
            app_buf_printf(&b, " %s | %s |", v, r == base ? "" : d);
        }
        // the intervals of the latest evaluation and the run's active time
        const store_eval_t *ev = app_series_last_eval(app_series(a, r->id));
        char i1[64] = "–", il[64] = "–", tm[32] = "–";
        if (ev && isfinite(ev->rouge1_low)) snprintf(i1, sizeof i1, "[%.3f, %.3f]", ev->rouge1_low, ev->rouge1_high);
        if (ev && isfinite(ev->rougeL_low)) snprintf(il, sizeof il, "[%.3f, %.3f]", ev->rougeL_low, ev->rougeL_high);
        double dur = store_run_duration(r, a->now);
        if (isfinite(dur)) fmt_duration(tm, dur);
        app_buf_printf(&b, " %s | %s | %s |\n", i1, il, tm);
    }
    cfg_t c;
    cfg_build(&c, runs, n);
    app_buf_printf(&b, "\n## Config differences\n\n| field |");
    for (int i = 0; i < n; i++) app_buf_printf(&b, " %s |", runs[i]->name);
    app_buf_printf(&b, "\n|---|");
    for (int i = 0; i < n; i++) app_buf_printf(&b, "---|");
    app_buf_printf(&b, "\n");
    for (int k = 0; k < c.n; k++) {
        if (!cfg_differs(&c.rows[k], n)) continue;
        app_buf_printf(&b, "| %s |", c.rows[k].key);
        for (int i = 0; i < n; i++) app_buf_printf(&b, " %s |", c.rows[k].val[i] ? c.rows[k].val[i] : "");
        app_buf_printf(&b, "\n");
    }
    cfg_free(&c);
    char path[4400];
    lb_err_t err = {0};
    if (app_export(a, "compare", "md", b.s, path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported the comparison to %s", path);
    free(b.s);
}

// The Curves tab as files: every point of the shown curves as CSV (raw and smoothed loss
// against step, tokens and time) and the plot as SVG, smoothed, on the tab's x axis.
static void export_curves(app_t *a) {
    const store_run_t *runs[APP_MAX_COMPARE];
    int n = compare_runs(a, runs);
    if (n < 1) return;
    app_buf_t csv = {0};
    app_buf_printf(&csv, "run_id,name,step,tokens,seconds,loss,loss_ema\n");
    svg_series_t ss[APP_MAX_COMPARE];
    double *bufs[2 * APP_MAX_COMPARE];
    for (int i = 0; i < n; i++) {
        app_series_t *s = app_series(a, runs[i]->id);
        double *xs, *raw, *ys;
        loss_curve(a, runs[i]->id, &xs, &raw, &ys);
        for (size_t k = 0; k < s->n; k++) {
            const store_metric_t *m = &s->m[k];
            app_buf_printf(&csv, "%lld,", (long long)runs[i]->id);
            app_buf_csv(&csv, runs[i]->name, ',');
            app_buf_printf(&csv, "%lld,", (long long)m->step);
            if (m->tokens >= 0) app_buf_printf(&csv, "%lld", (long long)m->tokens);  // a missing value is empty
            app_buf_printf(&csv, ",");
            if (isfinite(m->wall_s)) app_buf_printf(&csv, "%.3f", m->wall_s);
            app_buf_printf(&csv, ",");
            if (isfinite(raw[k])) app_buf_printf(&csv, "%.6g", raw[k]);
            app_buf_printf(&csv, ",");
            if (isfinite(ys[k])) app_buf_printf(&csv, "%.6g", ys[k]);
            app_buf_printf(&csv, "\n");
        }
        free(raw);
        bufs[2 * i] = xs;
        bufs[2 * i + 1] = ys;
        ss[i] = (svg_series_t){runs[i]->name, xs, ys, (int)s->n};
    }
    char title[128];
    snprintf(title, sizeof title, "Training loss (EMA %.*f)", app_smooth_digits(a->smooth), a->smooth);
    char *svg = svg_plot(title, app_xaxis_name(a->cmp_xaxis), "loss", ss, n, a->cmp_logy);
    for (int i = 0; i < 2 * n; i++) free(bufs[i]);
    char path[4400], path2[4400];
    lb_err_t err = {0};
    if (app_export(a, "curves", "csv", csv.s ? csv.s : "", path, sizeof path, &err) ||
        app_export(a, "curves", "svg", svg, path2, sizeof path2, &err))
        app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported the curves of %d runs to %s and its .svg plot", n, path);
    free(svg);
    free(csv.s);
}

// The Samples tab as files: every input with the reference and each run's summary, as
// Markdown (for reading) and CSV (one row per run and input).
static void export_samples(app_t *a) {
    const store_run_t *runs[APP_MAX_COMPARE];
    int n = compare_runs(a, runs);
    if (n < 1) return;
    app_buf_t md = {0}, csv = {0};
    app_buf_printf(&md, "# Samples\n\n");
    app_buf_printf(&csv, "idx,run_id,name,source,reference,prediction,rouge1,rouge2,rougeL\n");
    // the inputs in the order of the first run that has each one
    int64_t done[APP_MAX_COMPARE * 64];
    int ndone = 0, ninputs = 0;
    for (int i = 0; i < n; i++) {
        app_series_t *si = app_series(a, runs[i]->id);
        for (size_t k = 0; k < si->nsamples; k++) {
            const store_sample_row_t *first = &si->samples[k];
            int seen = 0;
            for (int d = 0; d < ndone; d++) seen |= done[d] == first->idx;
            if (seen || ndone == (int)(sizeof done / sizeof done[0])) continue;
            done[ndone++] = first->idx;
            ninputs++;
            app_buf_printf(&md, "## Example %lld\n\n**Source:** %s\n\n**Reference:** %s\n\n| run | summary | R-1 | R-2 | R-L |\n"
                                "|---|---|---:|---:|---:|\n", (long long)first->idx, first->source ? first->source : "–",
                           first->reference ? first->reference : "–");
            for (int r = 0; r < n; r++) {
                app_series_t *s = app_series(a, runs[r]->id);
                const store_sample_row_t *sm = NULL;
                for (size_t q = 0; q < s->nsamples; q++)
                    if (s->samples[q].idx == first->idx) sm = &s->samples[q];
                if (!sm) {
                    app_buf_printf(&md, "| %s | (not generated) | – | – | – |\n", runs[r]->name);
                    continue;
                }
                app_buf_printf(&md, "| %s | ", runs[r]->name);
                for (const char *p = sm->prediction ? sm->prediction : ""; *p; p++)  // a '|' would end the cell
                    app_buf_printf(&md, *p == '|' ? "\\|" : *p == '\n' ? " " : "%c", *p);
                app_buf_printf(&md, " | %.3f | %.3f | %.3f |\n", sm->rouge1, sm->rouge2, sm->rougeL);
                app_buf_printf(&csv, "%lld,%lld,", (long long)sm->idx, (long long)runs[r]->id);
                app_buf_csv(&csv, runs[r]->name, ',');
                app_buf_csv(&csv, sm->source ? sm->source : "", ',');
                app_buf_csv(&csv, sm->reference ? sm->reference : "", ',');
                app_buf_csv(&csv, sm->prediction ? sm->prediction : "", ',');
                app_buf_printf(&csv, "%.4f,%.4f,%.4f\n", sm->rouge1, sm->rouge2, sm->rougeL);
            }
            app_buf_printf(&md, "\n");
        }
    }
    char path[4400], path2[4400];
    lb_err_t err = {0};
    if (!ninputs) app_msg(a, ST_WARN, "no generated samples to export yet: they appear after an evaluation");
    else if (app_export(a, "samples", "md", md.s, path, sizeof path, &err) ||
             app_export(a, "samples", "csv", csv.s, path2, sizeof path2, &err))
        app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported %d inputs of %d runs to %s and its .csv", ninputs, n, path);
    free(md.s);
    free(csv.s);
}

static int action(app_t *a, int act, int key) {
    (void)key;
    switch (act) {
    case ACT_EXPORT:
        if (a->cmp_tab == CMP_CURVES) export_curves(a);
        else if (a->cmp_tab == CMP_SAMPLES) export_samples(a);
        else export_compare(a);
        return 1;
    case A_TAB: a->cmp_tab = (a->cmp_tab + 1) % CMP_NTABS; a->cmp_scroll = 0; return 1;
    case A_BTAB: a->cmp_tab = (a->cmp_tab + CMP_NTABS - 1) % CMP_NTABS; a->cmp_scroll = 0; return 1;
    case A_TAB1: case A_TAB2: case A_TAB3: case A_TAB4:
        a->cmp_tab = act - A_TAB1;
        a->cmp_scroll = 0;
        return 1;
    case A_DIFF:
        a->cmp_diff_only = !a->cmp_diff_only;
        a->cmp_scroll = 0;
        if (a->cmp_tab != CMP_CONFIG) a->cmp_tab = CMP_CONFIG;
        return 1;
    case A_SMOOTH_UP:
        a->smooth = app_smooth_step(a->smooth, 1);
        return 1;
    case A_SMOOTH_DOWN:
        a->smooth = app_smooth_step(a->smooth, -1);
        return 1;
    case A_LOGY: a->cmp_logy = !a->cmp_logy; return 1;
    case A_XAXIS: a->cmp_xaxis = (a->cmp_xaxis + 1) % XAXIS_N; return 1;
    case A_DOWN: a->cmp_scroll++; if (a->cmp_tab == CMP_METRICS && a->cmp_scroll > 3) a->cmp_scroll = 3; return 1;
    case A_UP: if (a->cmp_scroll > 0) a->cmp_scroll--; return 1;
    case A_NEXT: a->cmp_sample++; a->cmp_scroll = 0; return 1;
    case A_PREV: if (a->cmp_sample > 0) a->cmp_sample--; a->cmp_scroll = 0; return 1;
    }
    return 0;
}

// A click on a tab's title switches to it.
static void click(app_t *a, int x, int y) {
    if (y != a->body_y) return;
    for (int t = 0; t < CMP_NTABS; t++)
        if (x >= a->cmp_tab_x[t] && x < a->cmp_tab_x[t + 1]) {
            a->cmp_tab = t;
            a->cmp_scroll = 0;
        }
}

const screen_t screen_compare = {"Compare", keys, sizeof keys / sizeof keys[0], draw, action, NULL, click};
