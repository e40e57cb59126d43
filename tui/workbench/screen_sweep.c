// The Sweep screen: the runs of one sweep (queued, running, done), a results table that
// fills in as they finish, and under it the lecture's picture: ROUGE-L with 95% intervals
// against the rank or target set the sweep varies, trainable parameters beside it, zero-shot
// and the full fine-tune as reference lines; the loss curves overlaid; ROUGE-L at the
// evaluations during training. Left/Right pick the sweep; s starts a preset's sweep.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

enum { A_OPEN = ACT_SCREEN, A_PREV_SWEEP, A_NEXT_SWEEP, A_PRESET, A_START, A_START_YES, A_PANEL };

static const key_binding_t keys[] = {
    {TK_ENTER, 0, A_OPEN, "Enter", "open the run in the monitor", "Open"},
    {TK_LEFT, 'h', A_PREV_SWEEP, "Left/h", "previous sweep", NULL},
    {TK_RIGHT, 'l', A_NEXT_SWEEP, "Right/l", "next sweep", NULL},
    {'p', 0, A_PRESET, "p", "choose the preset to start", "Preset"},
    {'s', 0, A_START, "s", "start the chosen preset as a sweep (asks y/N)", "Start"},
    {'v', 0, A_PANEL, "v", "below 140 columns: ROUGE by rank or targets, loss curves, ROUGE during training", "View"},
    {TK_UP, 'k', ACT_NONE, "Up/k", "previous run", NULL},
    {TK_DOWN, 'j', ACT_NONE, "Down/j", "next run", NULL},
};

// The sweep ids present in the run list, ascending; returns the count.
static int sweep_ids(app_t *a, int64_t *ids, int max) {
    int n = 0;
    for (size_t i = 0; i < a->nruns; i++) {
        int64_t s = a->runs[i].sweep_id;
        if (s <= 0) continue;
        int k = 0;
        while (k < n && ids[k] != s) k++;
        if (k == n && n < max) ids[n++] = s;
    }
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && ids[k - 1] > ids[k]; k--) {
            int64_t t = ids[k];
            ids[k] = ids[k - 1];
            ids[k - 1] = t;
        }
    return n;
}

static int64_t current_sweep(app_t *a) {
    int64_t ids[256];
    int n = sweep_ids(a, ids, 256);
    if (!n) return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] == a->sweep_id) return a->sweep_id;
    return ids[n - 1];
}

// Runs of the sweep, in id order.
static int sweep_runs(app_t *a, int64_t sweep, const store_run_t **out, int max) {
    int n = 0;
    for (size_t i = 0; i < a->nruns && n < max; i++)
        if (a->runs[i].sweep_id == sweep) out[n++] = &a->runs[i];
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && out[k - 1]->id > out[k]->id; k--) {
            const store_run_t *t = out[k];
            out[k] = out[k - 1];
            out[k - 1] = t;
        }
    return n;
}

typedef struct {
    app_t *a;
    const store_run_t **runs;
} sweep_ctx_t;

enum { C_ID, C_NAME, C_STATUS, C_R, C_TARGETS, C_TRAIN, C_LOSS, C_R1, C_RL, C_TIME, C_N };
static const table_col_t cols[C_N] = {
    {"id", 2, 0, 1, 0},      {"name", 8, 24, 0, 0}, {"status", 10, 16, 0, 0}, {"r", 2, 0, 1, 0},
    {"targets", 4, 14, 0, 2}, {"trainable", 6, 0, 1, 0}, {"loss", 5, 0, 1, 1}, {"R-1", 5, 0, 1, 0},
    {"R-L", 5, 0, 1, 0},     {"time", 5, 0, 1, 3},
};

static const char *cell(void *ctx, int row, int col, char *buf, size_t cap, int *style) {
    sweep_ctx_t *c = ctx;
    const store_run_t *r = c->runs[row];
    switch (col) {
    case C_ID: snprintf(buf, cap, "%lld", (long long)r->id); return buf;
    case C_NAME: return r->name;
    case C_STATUS:
        switch (store_status_parse(r->status)) {
        case STORE_RUN_DONE: *style = ST_GOOD; break;
        case STORE_RUN_RUNNING: *style = ST_WARN; break;
        case STORE_RUN_QUEUED: *style = ST_DIM; break;
        default: *style = ST_BAD;
        }
        return r->status;
    case C_R: return r->r >= 0 ? (snprintf(buf, cap, "%lld", (long long)r->r), buf) : "-";
    case C_TARGETS: return r->targets ? r->targets : "-";
    case C_TRAIN: return r->trainable_params >= 0 ? fmt_int(buf, r->trainable_params) : "-";
    case C_LOSS: return fmt_num(buf, r->final_loss, 3);
    case C_R1: return fmt_num(buf, r->rouge1, 3);
    case C_RL: return fmt_num(buf, r->rougeL, 3);
    case C_TIME: return fmt_duration(buf, r->duration);
    }
    return "";
}

static int draw_cell(void *ctx, grid_t *g, int row, int col, int x, int y, int w, int cursor) {
    sweep_ctx_t *c = ctx;
    const store_run_t *r = c->runs[row];
    if (col == C_STATUS && store_status_parse(r->status) == STORE_RUN_RUNNING && r->total_steps > 0 && w >= 8) {
        widget_progress(g, x, y, w, (double)r->step / (double)r->total_steps, cursor ? ST_CURSOR : ST_BAR);
        return 1;
    }
    return 0;
}

// ---- the teaching picture: ROUGE against the setting the sweep varies ----

// What a sweep's LoRA runs differ in: rank when their r values differ, else the target set.
typedef enum { VARY_RANK, VARY_TARGETS, VARY_NONE } vary_t;

static int is_lora(const store_run_t *r) { return r->method && !strcmp(r->method, "lora"); }
static int is_method(const store_run_t *r, const char *m) { return r->method && !strcmp(r->method, m); }

static vary_t sweep_varies(const store_run_t **runs, int n) {
    const store_run_t *first = NULL;
    int targets_differ = 0;
    for (int i = 0; i < n; i++) {
        if (!is_lora(runs[i])) continue;
        if (!first) {
            first = runs[i];
            continue;
        }
        if (runs[i]->r != first->r) return VARY_RANK;
        if (strcmp(runs[i]->targets ? runs[i]->targets : "", first->targets ? first->targets : "")) targets_differ = 1;
    }
    return targets_differ ? VARY_TARGETS : first ? VARY_RANK : VARY_NONE;
}

// The reference runs drawn as lines: the sweep's own zero-shot and full fine-tune, else the
// pinned baseline (when it is a zero-shot) and the newest finished full fine-tune of the
// same model and data set.
static void sweep_references(app_t *a, const store_run_t **runs, int n, const store_run_t **zs,
                             const store_run_t **full) {
    *zs = *full = NULL;
    for (int i = 0; i < n; i++) {
        if (is_method(runs[i], "none")) *zs = runs[i];
        if (is_method(runs[i], "full")) *full = runs[i];
    }
    const store_run_t *like = n ? runs[0] : NULL;
    if (!*zs && a->pinned_id) {
        const store_run_t *p = app_run_by_id(a, a->pinned_id);
        if (p && is_method(p, "none")) *zs = p;
    }
    for (size_t i = 0; !*full && like && i < a->nruns; i++) {
        const store_run_t *r = &a->runs[i];
        if (is_method(r, "full") && store_status_parse(r->status) == STORE_RUN_DONE && r->base_model && like->base_model &&
            !strcmp(r->base_model, like->base_model) && r->dataset && like->dataset && !strcmp(r->dataset, like->dataset) &&
            (!*full || r->id > (*full)->id))
            *full = r;
    }
}

// The label of a run on the picture's axis: its rank or target set, or its method.
static const char *point_label(const store_run_t *r, vary_t vary, char *buf, size_t cap) {
    if (is_method(r, "none")) return "zero-shot";
    if (is_method(r, "full")) return "full";
    if (!is_lora(r)) return r->method ? r->method : "?";
    if (vary == VARY_TARGETS) return r->targets && *r->targets ? r->targets : "?";
    snprintf(buf, cap, "r=%lld", (long long)r->r);
    return buf;
}

// The LoRA points in axis order (rank ascending; target sets in run order).
static int sweep_points(const store_run_t **runs, int n, vary_t vary, const store_run_t **out) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!is_method(runs[i], "none") && !is_method(runs[i], "full")) out[k++] = runs[i];
    for (int i = 1; vary == VARY_RANK && i < k; i++)
        for (int j = i; j > 0 && out[j - 1]->r > out[j]->r; j--) {
            const store_run_t *t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return k;
}

// ROUGE-L of each point with its 95% interval as bars, the trainable parameters in a
// column, and zero-shot (┆) and the full fine-tune (┃) as vertical reference lines.
static void draw_chart(app_t *a, grid_t *g, int x, int y, int w, int h, const store_run_t **runs, int n) {
    vary_t vary = sweep_varies(runs, n);
    const store_run_t *zs, *full, *pts[256];
    sweep_references(a, runs, n, &zs, &full);
    int np = sweep_points(runs, n, vary, pts);
    const store_run_t *rows[258];
    int nr = 0;
    if (zs) rows[nr++] = zs;
    for (int i = 0; i < np; i++) rows[nr++] = pts[i];
    if (full) rows[nr++] = full;
    double val[258], lo[258], hi[258], vmax = 0;
    for (int i = 0; i < nr; i++) {
        const store_eval_t *ev = app_series_last_eval(app_series(a, rows[i]->id));
        val[i] = rows[i]->rougeL;
        lo[i] = ev ? ev->rougeL_low : NAN;
        hi[i] = ev ? ev->rougeL_high : NAN;
        double top = isfinite(hi[i]) ? hi[i] : val[i];
        if (isfinite(top) && top > vmax) vmax = top;
    }
    if (vmax <= 0) vmax = 1;
    grid_textf(g, x, y, w, ST_BOLD, "ROUGE-L with 95%% interval by %s", vary == VARY_TARGETS ? "target modules" : "rank");
    int labw = vary == VARY_TARGETS ? 16 : 10, trw = 10, valw = 20;
    int bx = x + labw + trw + 1, bw = w - labw - trw - valw - 2;
    if (bw < 6 || h < 4) return;
    grid_text(g, x, y + 1, labw, vary == VARY_TARGETS ? "targets" : "rank", ST_HEADER);
    grid_text_right(g, x + labw + trw, y + 1, trw, "trainable", ST_HEADER);
    grid_text_right(g, x + w, y + 1, valw, "ROUGE-L [95%]", ST_HEADER);
    int shown = nr < h - 3 ? nr : h - 3;
    for (int i = 0; i < shown; i++) {
        const store_run_t *r = rows[i];
        int yy = y + 2 + i, ref = r == zs || r == full;
        char lab[64], t[32], v[64];
        grid_text_trunc(g, x, yy, labw - 1, point_label(r, vary, lab, sizeof lab), ref ? ST_DIM : ST_NORMAL);
        grid_text_right(g, x + labw + trw, yy, trw, r->trainable_params >= 0 ? fmt_count(t, (double)r->trainable_params) : "–",
                        ST_NORMAL);
        widget_hbar(g, bx, yy, bw, val[i], lo[i], hi[i], 0, vmax, ref ? ST_DIM : ST_SERIES0);
        if (isfinite(val[i]) && isfinite(lo[i])) snprintf(v, sizeof v, "%.3f [%.3f,%.3f]", val[i], lo[i], hi[i]);
        else if (isfinite(val[i])) fmt_num(v, val[i], 3);
        else snprintf(v, sizeof v, "%s", r->status ? r->status : "–");
        grid_text_right(g, x + w, yy, valw, v, isfinite(val[i]) ? ST_NORMAL : ST_DIM);
    }
    // the reference lines over the bars, and their legend under them
    int ly = y + 2 + shown;
    const store_run_t *refs[2] = {zs, full};
    const uint32_t marks[2] = {0x2506, 0x2503};  // ┆ ┃
    const char amarks[2] = {':', '|'};
    const int styles[2] = {ST_ACCENT, ST_GOOD};
    int lx = x;
    for (int k = 0; k < 2; k++) {
        if (!refs[k] || !isfinite(refs[k]->rougeL)) continue;
        int cx = bx + (int)floor(refs[k]->rougeL / vmax * bw);
        if (cx >= bx + bw) cx = bx + bw - 1;
        for (int i = 0; i < shown; i++) grid_put(g, cx, y + 2 + i, g->ascii ? (uint32_t)amarks[k] : marks[k], styles[k]);
        if (ly < y + h) {
            char item[160];
            snprintf(item, sizeof item, "%s %s #%lld %.3f", "", k ? "full fine-tune" : "zero-shot", (long long)refs[k]->id,
                     refs[k]->rougeL);
            grid_put(g, lx, ly, g->ascii ? (uint32_t)amarks[k] : marks[k], styles[k]);
            lx += 1 + grid_text(g, lx + 1, ly, x + w - lx - 1, item, ST_DIM) + 2;
        }
    }
    if (lx == x && ly < y + h)
        grid_text_trunc(g, x, ly, w, "no zero-shot or full fine-tune to draw as a reference (run one, or p on Runs pins one)",
                        ST_DIM);
}

// Overlaid curves of the sweep's runs: the loss over steps (EMA as on Compare), or ROUGE-L
// at each evaluation during training.
static void draw_curves(app_t *a, grid_t *g, int x, int y, int w, int h, const store_run_t **runs, int n, int rouge) {
    vary_t vary = sweep_varies(runs, n);
    plot_series_t ps[256];
    double *bufs[512];
    char names[256][64];
    int np = 0, nb = 0, most = 0;
    for (int i = 0; i < n; i++) {
        app_series_t *s = app_series(a, runs[i]->id);
        size_t m = rouge ? s->nevals : s->n;
        if (!m) continue;
        if ((int)m > most) most = (int)m;
        double *xs = xmalloc(m * sizeof *xs), *ys = xmalloc(m * sizeof *ys);
        if (rouge) {
            for (size_t k = 0; k < m; k++) {
                xs[k] = (double)s->evals[k].step;
                ys[k] = s->evals[k].rougeL;
            }
        } else {
            double *raw = xmalloc(m * sizeof *raw);
            for (size_t k = 0; k < m; k++) {
                xs[k] = (double)s->m[k].step;
                raw[k] = s->m[k].loss;
            }
            plot_ema(raw, (int)m, a->smooth, ys);
            free(raw);
        }
        bufs[nb++] = xs;
        bufs[nb++] = ys;
        char lab[64];
        snprintf(names[np], sizeof names[np], "%s", point_label(runs[i], vary, lab, sizeof lab));
        ps[np] = (plot_series_t){names[np], xs, ys, (int)m, ST_SERIES0 + np % GRID_NSERIES, (char)('A' + np % 26)};
        np++;
    }
    char title[96];
    if (rouge) snprintf(title, sizeof title, "ROUGE-L during training");
    else snprintf(title, sizeof title, "loss, EMA %.*f", app_smooth_digits(a->smooth), a->smooth);
    grid_box(g, x, y, w, h, title, ST_DIM);
    if (rouge && most < 2)
        grid_text_trunc(g, x + 2, y + 2, w - 4,
                        "no run of this sweep evaluated during training; set train.eval_every in the preset to see this curve",
                        ST_DIM);
    else if (!np)
        grid_text_trunc(g, x + 2, y + 2, w - 4, "no steps recorded yet", ST_DIM);
    else {
        plot_opts_t po = {0, a->ascii, 1, "step"};
        widget_plot(g, x + 1, y + 1, w - 2, h - 2, ps, np, &po);
    }
    for (int i = 0; i < nb; i++) free(bufs[i]);
}

static const char *const panel_names[3] = {"ROUGE by setting", "loss curves", "ROUGE during training"};

// The picture under the table: on wide terminals the chart beside both curves, else the
// panel that v picks.
static void draw_picture(app_t *a, grid_t *g, int y, int h, const store_run_t **runs, int n) {
    if (g->w >= 140) {
        int cw = g->w / 2;
        draw_chart(a, g, 1, y, cw - 2, h, runs, n);
        draw_curves(a, g, cw, y, g->w - cw, h / 2, runs, n, 0);
        draw_curves(a, g, cw, y + h / 2, g->w - cw, h - h / 2, runs, n, 1);
        return;
    }
    int p = a->sweep_panel % 3;
    if (p == 0) draw_chart(a, g, 1, y, g->w - 2, h, runs, n);
    else draw_curves(a, g, 0, y, g->w, h, runs, n, p == 2);
}

static void draw(app_t *a, grid_t *g, int y, int h) {
    int64_t sw = current_sweep(a);
    char line[512];
    if (a->npresets == 0) app_list_presets(a);
    const char *preset = a->npresets ? a->presets[a->form[0].choice % a->npresets] : "(no presets in experiments/presets)";
    if (!sw) {
        grid_text(g, 1, y, g->w - 2, "No sweep yet.", ST_BOLD);
        grid_textf(g, 1, y + 2, g->w - 2, ST_NORMAL, "preset: %s   (p chooses, s starts it as a sweep)", preset);
        return;
    }
    const store_run_t *runs[256];
    int n = sweep_runs(a, sw, runs, 256);
    int q = 0, run = 0, done = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        store_status_t s = store_status_parse(runs[i]->status);
        if (s == STORE_RUN_QUEUED) q++;
        else if (s == STORE_RUN_RUNNING) run++;
        else if (s == STORE_RUN_DONE) done++;
        else bad++;
    }
    snprintf(line, sizeof line, "sweep #%lld: %d runs, %d queued, %d running, %d done, %d stopped   preset for s: %s",
             (long long)sw, n, q, run, done, bad, preset);
    grid_text_trunc(g, 1, y, g->w - 2, line, ST_BOLD);
    widget_progress(g, 1, y + 1, g->w / 2, n ? (double)done / n : 0, ST_BAR);
    if (g->w < 140) grid_text_right(g, g->w - 1, y + 1, g->w / 2 - 2, panel_names[a->sweep_panel % 3], ST_DIM);
    sweep_ctx_t ctx = {a, runs};
    table_t t = {n, C_N, cols, cell, draw_cell, &ctx, -1, 0, NULL, -1};
    // the table takes the rows it needs while the picture keeps at least 10 below it; a
    // larger sweep on a small terminal scrolls its table
    int avail = h - 3, th = n + 1, ph = avail - th - 1;
    if (ph < 10) {
        ph = avail >= 16 ? 10 : 0;
        th = ph ? avail - ph - 1 : avail;
    }
    table_draw(g, 0, y + 3, g->w, th, &t, &a->sweep_view);
    if (ph) draw_picture(a, g, y + 3 + th + 1, ph, runs, n);
}

static int action(app_t *a, int act, int key) {
    int64_t ids[256];
    int ns = sweep_ids(a, ids, 256);
    int64_t sw = current_sweep(a);
    const store_run_t *runs[256];
    int n = sw ? sweep_runs(a, sw, runs, 256) : 0;
    lb_err_t err = {0};
    switch (act) {
    case ACT_NONE: return table_nav(&a->sweep_view, n, a->sweep_view.h > 0 ? a->sweep_view.h : a->body_h - 5, key);
    case A_OPEN:
        if (!n) return 1;
        if (a->sweep_view.cursor >= n) a->sweep_view.cursor = n - 1;
        a->monitor_id = runs[a->sweep_view.cursor]->id;
        a->monitor_scroll = 0;
        app_push(a, SCR_MONITOR);
        return 1;
    case A_PREV_SWEEP:
    case A_NEXT_SWEEP: {
        int k = 0;
        while (k < ns && ids[k] != sw) k++;
        k += act == A_NEXT_SWEEP ? 1 : -1;
        if (k >= 0 && k < ns) a->sweep_id = ids[k];
        a->sweep_view.cursor = a->sweep_view.top = 0;
        return 1;
    }
    case A_PANEL: a->sweep_panel = (a->sweep_panel + 1) % 3; return 1;
    case A_PRESET:
        if (a->npresets) a->form[0].choice = (a->form[0].choice + 1) % a->npresets;
        return 1;
    case A_START:
        if (!a->npresets) {
            app_msg(a, ST_WARN, "no presets in experiments/presets; write one or use lorabench sweep FILE");
            return 1;
        }
        app_confirm(a, A_START_YES, 0, "Start the sweep of preset %s in the background? [y/N]",
                    a->presets[a->form[0].choice % a->npresets]);
        return 1;
    case A_START_YES: {
        const char *path = a->preset_paths[a->form[0].choice % a->npresets];
        const char *args[] = {"sweep", path, NULL};
        if (app_spawn(a, args, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_GOOD, "sweep %s started; its runs appear here as they are queued", path);
        a->sweep_id = 0;
        return 1;
    }
    case ACT_EXPORT: {
        if (!n) {
            app_msg(a, ST_WARN, "no sweep to export yet; s starts a preset's sweep");
            return 1;
        }
        // the table CLI's `export --what sweep --format md` writes, intervals and time included
        char *md = app_results_markdown(a, runs, n);
        app_buf_t b = {0};
        app_buf_printf(&b, "# Sweep %lld\n\n%s", (long long)sw, md);
        free(md);
        char path[4400];
        if (app_export(a, "sweep", "md", b.s ? b.s : "", path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_GOOD, "exported %d runs to %s", n, path);
        free(b.s);
        return 1;
    }
    }
    return 0;
}

static void click(app_t *a, int x, int y) {
    int row = 0, col = 0;
    if (table_hit(&a->sweep_view, x, y, &row, &col) == 2) a->sweep_view.cursor = row;
}

const screen_t screen_sweep = {"Sweep", keys, sizeof keys / sizeof keys[0], draw, action, NULL, click};
