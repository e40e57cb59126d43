// The Sweep screen: the runs of one sweep (queued, running, done) and a results table that
// fills in as they finish (rank and targets against ROUGE and trainable parameters).
// Left/Right pick the sweep; s starts a preset's sweep in the background.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

enum { A_OPEN = ACT_SCREEN, A_PREV_SWEEP, A_NEXT_SWEEP, A_PRESET, A_START, A_START_YES };

static const key_binding_t keys[] = {
    {TK_ENTER, 0, A_OPEN, "Enter", "open the run in the monitor", "Open"},
    {TK_LEFT, 'h', A_PREV_SWEEP, "Left/h", "previous sweep", NULL},
    {TK_RIGHT, 'l', A_NEXT_SWEEP, "Right/l", "next sweep", NULL},
    {'p', 0, A_PRESET, "p", "choose the preset to start", "Preset"},
    {'s', 0, A_START, "s", "start the chosen preset as a sweep (asks y/N)", "Start"},
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
    sweep_ctx_t ctx = {a, runs};
    table_t t = {n, C_N, cols, cell, draw_cell, &ctx, -1, 0, NULL, -1};
    int th = h - 3;
    // the results as bars: ROUGE-L of each finished run, on wide terminals beside the table
    int tw = g->w >= 140 ? g->w * 3 / 5 : g->w;
    table_draw(g, 0, y + 3, tw, th, &t, &a->sweep_view);
    if (tw < g->w) {
        double vmax = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(runs[i]->rougeL) && runs[i]->rougeL > vmax) vmax = runs[i]->rougeL;
        grid_text(g, tw + 1, y + 3, g->w - tw - 2, "ROUGE-L", ST_HEADER);
        for (int i = 0; i < n && i < th - 1; i++) {
            widget_hbar(g, tw + 1, y + 4 + i, g->w - tw - 9, runs[i]->rougeL, NAN, NAN, 0, vmax > 0 ? vmax : 1, ST_SERIES0);
            grid_text(g, g->w - 7, y + 4 + i, 6, fmt_num(line, runs[i]->rougeL, 3), ST_NORMAL);
        }
    }
}

static int action(app_t *a, int act, int key) {
    int64_t ids[256];
    int ns = sweep_ids(a, ids, 256);
    int64_t sw = current_sweep(a);
    const store_run_t *runs[256];
    int n = sw ? sweep_runs(a, sw, runs, 256) : 0;
    lb_err_t err = {0};
    switch (act) {
    case ACT_NONE: return table_nav(&a->sweep_view, n, a->body_h - 5, key);
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
        char path[1200];
        snprintf(path, sizeof path, "%s/%s.json", a->presets_dir, a->presets[a->form[0].choice % a->npresets]);
        const char *args[] = {"sweep", path, NULL};
        if (app_spawn(a, args, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_GOOD, "sweep %s started; its runs appear here as they are queued", path);
        a->sweep_id = 0;
        return 1;
    }
    case ACT_EXPORT: {
        app_buf_t b = {0};
        app_buf_printf(&b, "| id | name | status | r | targets | trainable | loss | ROUGE-1 | ROUGE-L |\n|---:|---|---|---:|---|---:|---:|---:|---:|\n");
        for (int i = 0; i < n; i++) {
            // a value a run does not have (zero-shot's rank, a queued run's loss) is "–"
            const store_run_t *r = runs[i];
            char rk[32] = "–", tr[32] = "–", l[32] = "–", r1[32] = "–", rl[32] = "–";
            if (r->r >= 0) snprintf(rk, sizeof rk, "%lld", (long long)r->r);
            if (r->trainable_params >= 0) snprintf(tr, sizeof tr, "%lld", (long long)r->trainable_params);
            if (isfinite(r->final_loss)) fmt_num(l, r->final_loss, 4);
            if (isfinite(r->rouge1)) fmt_num(r1, r->rouge1, 4);
            if (isfinite(r->rougeL)) fmt_num(rl, r->rougeL, 4);
            app_buf_printf(&b, "| %lld | %s | %s | %s | %s | %s | %s | %s | %s |\n", (long long)r->id, r->name, r->status, rk,
                           r->targets && *r->targets ? r->targets : "–", tr, l, r1, rl);
        }
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
