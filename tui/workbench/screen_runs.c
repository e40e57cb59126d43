// The Runs screen (home): every run in a sortable, filterable table with live progress,
// a loss sparkline, selection for compare and the pinned baseline.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

enum {
    A_OPEN = ACT_SCREEN, A_SELECT, A_COMPARE, A_PIN, A_NEW, A_SWEEP, A_FILTER, A_SORT,
    A_SORT_REV, A_TAGS, A_NOTE, A_CANCEL, A_RESUME, A_DELETE, A_CLEAR_SEL, A_ANALYZE, A_TRY,
    // answers to prompts
    A_FILTER_SET, A_TAGS_SET, A_NOTE_SET, A_CANCEL_YES, A_RESUME_YES, A_DELETE_YES, A_FILTER_LIVE,
    A_FILTER_UNDO, A_SCANCEL, A_SCANCEL_YES,
};

static const key_binding_t keys[] = {
    {TK_ENTER, 0, A_OPEN, "Enter", "open the run in the monitor", "Open"},
    {' ', 0, A_SELECT, "Space", "select / unselect the run (for compare)", "Sel"},
    {'c', 0, A_COMPARE, "c", "compare the selected runs (or the run and the baseline)", "Cmp"},
    {'p', 0, A_PIN, "p", "pin the run as the baseline (again: unpin)", "Pin"},
    {'n', 0, A_NEW, "n", "new run; with one run selected (Space): a clone of it", "New"},
    {'w', 0, A_SWEEP, "w", "sweeps: queued, running and done runs of a sweep", "Sweep"},
    {'/', 0, A_FILTER, "/", "filter as you type: a word matches names; method=lora r>=8 rouge1>0.3", "Filter"},
    {'s', 0, A_SORT, "s", "sort by the next column", "Sort"},
    {'S', 0, A_SORT_REV, "S", "reverse the sort order", "Rev"},
    {'t', 0, A_TAGS, "t", "edit the run's tags (comma-separated)", "Tags"},
    {'m', 0, A_NOTE, "m", "edit the run's note", "Note"},
    {'K', 0, A_CANCEL, "K", "cancel a running run (asks y/N)", "Cancel"},
    {'r', 0, A_RESUME, "r", "resume an interrupted or cancelled run (asks y/N)", "Resume"},
    {'D', 0, A_DELETE, "D", "delete the run and its files (asks y/N)", "Del"},
    {'u', 0, A_CLEAR_SEL, "u", "clear the selection", "Unsel"},
    {'A', 0, A_ANALYZE, "A", "analysis: ΔW spectra; with two LoRA runs selected, φ", NULL},
    {'i', 0, A_TRY, "i", "try the selected runs (or the run) on an input text, beside the base model", "Try"},
    {'X', 0, A_SCANCEL, "X", "cancel the listed cluster sweep (scancel; asks y/N)", NULL},
    {TK_UP, 'k', ACT_NONE, "Up/k", "previous run", NULL},
    {TK_DOWN, 'j', ACT_NONE, "Down/j", "next run", NULL},
    {TK_PGUP, TK_PGDN, ACT_NONE, "PgUp/PgDn", "a page up / down", NULL},
    {TK_HOME, 'g', ACT_NONE, "Home/g", "first run", NULL},
    {TK_END, 'G', ACT_NONE, "End/G", "last run", NULL},
};

// Columns, with the store key each sorts by.
enum { C_ID, C_NAME, C_STATUS, C_METHOD, C_R, C_ALPHA, C_TARGETS, C_TRAIN, C_PCT, C_STEPS,
       C_LOSS, C_CURVE, C_R1, C_R2, C_RL, C_TOKS, C_MEM, C_TIME, C_TAGS, C_N };

// Minimum widths keep every title whole (a squeezed "met…" or "trai…" reads badly);
// when they do not fit, the columns with the highest drop are hidden instead: at 120
// columns tags, alpha, % and R-2 go, the loss sparkline and targets stay.
static const table_col_t cols[C_N] = {
    [C_ID] = {"id", 3, 0, 1, 0},
    [C_NAME] = {"name", 12, 22, 0, 0},
    [C_STATUS] = {"status", 9, 14, 0, 0},
    [C_METHOD] = {"method", 7, 0, 0, 2},
    [C_R] = {"r", 2, 0, 1, 2},
    [C_ALPHA] = {"alpha", 5, 0, 1, 8},
    [C_TARGETS] = {"targets", 7, 12, 0, 4},
    [C_TRAIN] = {"trainable", 9, 0, 1, 1},
    [C_PCT] = {"%", 4, 0, 1, 7},
    [C_STEPS] = {"steps", 7, 0, 1, 3},
    [C_LOSS] = {"loss", 5, 0, 1, 0},
    [C_CURVE] = {"curve", 6, 10, 0, 5},
    [C_R1] = {"R-1", 5, 0, 1, 0},
    [C_R2] = {"R-2", 5, 0, 1, 6},
    [C_RL] = {"R-L", 5, 0, 1, 1},
    [C_TOKS] = {"tok/s", 5, 0, 1, 4},
    [C_MEM] = {"mem", 6, 0, 1, 5},
    [C_TIME] = {"time", 6, 0, 1, 3},
    [C_TAGS] = {"tags", 4, 16, 0, 9},
};
static const char *const sort_keys[C_N] = {
    "id", "name", "status", "method", "r", "alpha", "targets", "trainable", "trainable_pct",
    "steps", "loss", "loss", "rouge1", "rouge2", "rougeL", "tokens_per_s", "peak_rss_mb",
    "duration", "tags"};

static int status_style(const char *s) {
    if (!s) return ST_NORMAL;
    switch (store_status_parse(s)) {
    case STORE_RUN_DONE: return ST_GOOD;
    case STORE_RUN_FAILED: return ST_BAD;
    case STORE_RUN_RUNNING: return ST_WARN;
    case STORE_RUN_INTERRUPTED: return ST_BAD;
    default: return ST_DIM;
    }
}

static double run_duration(const app_t *a, const store_run_t *r) {
    if (isnan(r->started_at)) return NAN;
    if (store_status_parse(r->status) == STORE_RUN_RUNNING) return a->now - r->started_at;
    return r->duration;
}

static const char *cell(void *ctx, int row, int col, char *buf, size_t cap, int *style) {
    app_t *a = ctx;
    const store_run_t *r = &a->runs[row];
    switch (col) {
    case C_ID: snprintf(buf, cap, "%lld", (long long)r->id); return buf;
    case C_NAME: return r->name;
    case C_STATUS:
        *style = status_style(r->status);
        return r->status;
    case C_METHOD: return r->method;
    case C_R: return r->r >= 0 ? (snprintf(buf, cap, "%lld", (long long)r->r), buf) : "-";
    case C_ALPHA: return fmt_num(buf, r->alpha, r->alpha == floor(r->alpha) ? 0 : 1);
    case C_TARGETS: return r->targets ? r->targets : "-";
    case C_TRAIN: return r->trainable_params >= 0 ? fmt_count(buf, (double)r->trainable_params) : "-";
    case C_PCT:
        if (isnan(r->trainable_pct)) return "-";
        snprintf(buf, cap, r->trainable_pct < 10 ? "%.2f" : "%.0f", r->trainable_pct);
        return buf;
    case C_STEPS:
        if (r->total_steps > 0) snprintf(buf, cap, "%lld/%lld", (long long)r->step, (long long)r->total_steps);
        else snprintf(buf, cap, "%lld", (long long)r->step);
        return buf;
    case C_LOSS: {
        double loss = r->final_loss;
        if (isnan(loss)) {
            // a running run shows its latest loss
            app_series_t *s = app_series(a, r->id);
            if (s->n) loss = s->m[s->n - 1].loss;
        }
        return fmt_num(buf, loss, 3);
    }
    case C_CURVE: return "";
    case C_R1: return fmt_num(buf, r->rouge1, 3);
    case C_R2: return fmt_num(buf, r->rouge2, 3);
    case C_RL: return fmt_num(buf, r->rougeL, 3);
    case C_TOKS:
    case C_MEM: {
        double v = col == C_TOKS ? r->tokens_per_s : r->peak_rss_mb;
        if (isnan(v)) {
            // a running run shows its latest step's speed and memory
            app_series_t *s = app_series(a, r->id);
            if (s->n) v = col == C_TOKS ? s->m[s->n - 1].tokens_per_s : s->m[s->n - 1].rss_mb;
        }
        if (isnan(v)) return "-";
        return col == C_TOKS ? fmt_count(buf, v) : fmt_bytes(buf, v * 1048576.0);
    }
    case C_TIME: return fmt_duration(buf, run_duration(a, r));
    case C_TAGS: return r->tags ? r->tags : "";
    }
    return "";
}

static int draw_cell(void *ctx, grid_t *g, int row, int col, int x, int y, int w, int cursor) {
    app_t *a = ctx;
    const store_run_t *r = &a->runs[row];
    if (col == C_STATUS && store_status_parse(r->status) == STORE_RUN_RUNNING && r->total_steps > 0 && w >= 8) {
        widget_progress(g, x, y, w, (double)r->step / (double)r->total_steps, cursor ? ST_CURSOR : ST_BAR);
        return 1;
    }
    if (col == C_CURVE) {
        app_series_t *s = app_series(a, r->id);
        if (!s->n) return 1;
        double *v = xmalloc(s->n * sizeof *v);
        for (size_t i = 0; i < s->n; i++) v[i] = s->m[i].loss;
        widget_sparkline(g, x, y, w, v, (int)s->n, cursor ? ST_CURSOR : ST_SERIES0);
        free(v);
        return 1;
    }
    return 0;
}

static void table_setup(app_t *a, table_t *t, unsigned char *marked) {
    memset(t, 0, sizeof *t);
    t->nrows = (int)a->nruns;
    t->ncols = C_N;
    t->cols = cols;
    t->cell = cell;
    t->draw = draw_cell;
    t->ctx = a;
    t->sort_col = -1;
    for (int c = 0; c < C_N; c++)
        if (!strcmp(sort_keys[c], a->sort_key) && c != C_CURVE) {
            t->sort_col = c;
            break;
        }
    t->sort_desc = a->sort_desc;
    t->pinned_row = -1;
    for (size_t i = 0; i < a->nruns; i++) {
        marked[i] = (unsigned char)app_is_selected(a, a->runs[i].id);
        if (a->runs[i].id == a->pinned_id) t->pinned_row = (int)i;
    }
    t->marked = marked;
}

// Tasks of cluster sweeps (sweep --slurm) not imported yet: a title and a line each, at
// most TASK_ROWS, between the table and the run under the cursor. Their runs join the
// table as they finish.
enum { TASK_ROWS = 5 };

static int task_lines(const app_t *a) {
    return a->ntasks ? 1 + (a->ntasks > TASK_ROWS ? TASK_ROWS : (int)a->ntasks) : 0;
}

static void draw_tasks(app_t *a, grid_t *g, int y) {
    grid_textf(g, 1, y, g->w - 2, ST_DIM, "cluster tasks not imported yet: %zu%s  (X: cancel sweep %lld, scancel)",
               a->ntasks, a->ntasks > TASK_ROWS ? ", the first shown" : "", (long long)a->tasks[0].sweep_id);
    for (int i = 0; i < task_lines(a) - 1; i++) {
        const slurm_task_t *t = &a->tasks[i];
        static const int styles[] = {ST_DIM, ST_WARN, ST_GOOD, ST_BAD, ST_DIM, ST_DIM};
        char step[48] = "-", loss[24] = "-";
        if (t->step >= 0) snprintf(step, sizeof step, "%lld/%lld", (long long)t->step, (long long)t->total_steps);
        if (!isnan(t->loss)) snprintf(loss, sizeof loss, "%.4f", t->loss);
        grid_textf(g, 2, y + 1 + i, g->w - 3, styles[t->state], "sweep %lld job %s task %lld  %-22s %-9s step %-9s loss %-7s %s",
                   (long long)t->sweep_id, t->job_id, (long long)t->index, t->name, slurm_task_state_name(t->state), step,
                   loss, t->state == SLURM_TASK_FAILED ? t->out : "");
    }
}

static void draw(app_t *a, grid_t *g, int y, int h) {
    // summary line: counts, filter, sort
    int running = 0;
    for (size_t i = 0; i < a->nruns; i++) running += store_status_parse(a->runs[i].status) == STORE_RUN_RUNNING;
    char line[600];
    int n = snprintf(line, sizeof line, "%zu run%s, %d running, %d selected", a->nruns,
                     a->nruns == 1 ? "" : "s", running, a->nselected);
    if (a->filter[0]) snprintf(line + n, sizeof line - (size_t)n, "  filter: %s", a->filter);
    if (a->pinned_id && !a->pinned_listed)  // the filter hides it; c still compares with it
        snprintf(line + strlen(line), sizeof line - strlen(line), "  baseline #%lld %s (filtered out)",
                 (long long)a->pinned_id, a->pinned_run.name ? a->pinned_run.name : "");
    grid_text_trunc(g, 1, y, g->w - 2, line, ST_DIM);
    if (a->filter[0]) grid_restyle(g, 1 + n + 2, y, grid_strwidth(a->filter) + 8, ST_ACCENT);
    int k = task_lines(a);
    if (k) draw_tasks(a, g, y + h - 3 - k);
    if (!a->nruns) {
        grid_text(g, 2, y + 2, g->w - 4,
                  a->filter[0] ? "No run matches the filter; / changes it (empty shows all)."
                               : "No runs yet. Press n to start one.", ST_BOLD);
        return;
    }
    unsigned char *marked = xcalloc(a->nruns, 1);
    table_t t;
    table_setup(a, &t, marked);
    table_draw(g, 0, y + 1, g->w, h - 4 - k, &t, &a->runs_view);
    free(marked);
    // the run under the cursor: where it came from, its note and error
    const store_run_t *r = &a->runs[a->runs_view.cursor];
    grid_hline(g, 0, y + h - 3, g->w, ST_DIM);
    n = snprintf(line, sizeof line, "#%lld %s  model %s  data %s", (long long)r->id, r->name,
                 r->base_model ? r->base_model : "-", r->dataset ? r->dataset : "-");
    if (r->id == a->pinned_id) snprintf(line + n, sizeof line - (size_t)n, "  (baseline)");
    grid_text_trunc(g, 1, y + h - 2, g->w - 2, line, ST_DIM);
    if (r->error && *r->error) grid_textf(g, 1, y + h - 1, g->w - 2, ST_BAD, "error: %s", r->error);
    else if (r->notes && *r->notes) grid_textf(g, 1, y + h - 1, g->w - 2, ST_NORMAL, "note: %s", r->notes);
}

static const store_run_t *cursor_run(app_t *a) {
    if (!a->nruns) return NULL;
    if (a->runs_view.cursor >= (int)a->nruns) a->runs_view.cursor = (int)a->nruns - 1;
    return &a->runs[a->runs_view.cursor];
}

static void export_runs(app_t *a) {
    app_buf_t b = {0};
    static const char *const head[] = {"id", "name", "status", "method", "r", "alpha", "targets",
                                       "trainable", "trainable_pct", "steps", "total_steps", "loss",
                                       "rouge1", "rouge2", "rougeL", "tokens_per_s", "peak_rss_mb",
                                       "duration_s", "tags", "notes"};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        app_buf_csv(&b, head[i], i + 1 < sizeof head / sizeof head[0] ? ',' : '\n');
    for (size_t i = 0; i < a->nruns; i++) {
        const store_run_t *r = &a->runs[i];
        char v[20][64];
        snprintf(v[0], 64, "%lld", (long long)r->id);
        for (int k = 0; k < 20; k++) v[k][0] = 0;  // a missing value (negative, NaN) stays empty
        if (r->r >= 0) snprintf(v[4], 64, "%lld", (long long)r->r);
        if (!isnan(r->alpha)) snprintf(v[5], 64, "%g", r->alpha);
        if (r->trainable_params >= 0) snprintf(v[7], 64, "%lld", (long long)r->trainable_params);
        if (!isnan(r->trainable_pct)) snprintf(v[8], 64, "%.4f", r->trainable_pct);
        snprintf(v[9], 64, "%lld", (long long)r->step);
        if (r->total_steps >= 0) snprintf(v[10], 64, "%lld", (long long)r->total_steps);
        double nums[7] = {r->final_loss, r->rouge1, r->rouge2, r->rougeL, r->tokens_per_s, r->peak_rss_mb,
                          run_duration(a, r)};
        for (int k = 0; k < 7; k++)
            if (!isnan(nums[k])) snprintf(v[11 + k], 64, "%.6g", nums[k]);
        const char *f[20] = {v[0], r->name, r->status, r->method, v[4], v[5], r->targets, v[7], v[8],
                             v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16], v[17], r->tags, r->notes};
        for (int k = 0; k < 20; k++) app_buf_csv(&b, f[k], k < 19 ? ',' : '\n');
    }
    char path[4400];
    lb_err_t err = {0};
    if (app_export(a, "runs", "csv", b.s ? b.s : "", path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported %zu runs to %s", a->nruns, path);
    free(b.s);
}

static int action(app_t *a, int act, int key) {
    const store_run_t *r = cursor_run(a);
    lb_err_t err = {0};
    switch (act) {
    case ACT_NONE:
        return table_nav(&a->runs_view, (int)a->nruns, a->body_h - 4, key);
    case ACT_EXPORT:
        export_runs(a);
        return 1;
    case A_OPEN:
        if (!r) return 1;
        a->monitor_id = r->id;
        a->monitor_scroll = 0;
        app_series(a, r->id);
        app_push(a, SCR_MONITOR);
        return 1;
    case A_SELECT:
        if (!r) return 1;
        if (app_toggle_selected(a, r->id) < 0) {
            app_msg(a, ST_WARN, "%d runs are selected, the most there can be: u clears the selection", APP_MAX_SELECT);
            return 1;
        }
        table_nav(&a->runs_view, (int)a->nruns, 1, TK_DOWN);
        return 1;
    case A_CLEAR_SEL:
        a->nselected = 0;
        return 1;
    case A_ANALYZE: {
        // two runs selected: the first against the second; else the run under the cursor
        int64_t id = a->nselected == 2 ? a->selected[0] : r ? r->id : 0, other = a->nselected == 2 ? a->selected[1] : 0;
        if (!id) return 1;
        int rc = app_analysis_open(a, id, other, &err);
        if (rc < 0) {
            app_msg(a, ST_ERROR, "%s", err.msg);
            return 1;
        }
        app_push(a, SCR_ANALYSIS);  // at once: the analysis fills in on a worker thread
        if (rc > 0) app_msg(a, ST_WARN, "%s", err.msg);
        return 1;
    }
    case A_TRY:
        if (a->nselected) app_try_open(a, a->selected, a->nselected);
        else if (r) app_try_open(a, &r->id, 1);
        return 1;
    case A_COMPARE: {
        a->ncompare = 0;
        for (int i = 0; i < a->nselected && a->ncompare < APP_MAX_COMPARE; i++)
            a->compare_ids[a->ncompare++] = a->selected[i];
        if (a->ncompare < 2 && r) {
            // one run (or none) selected: compare the cursor's run with the baseline
            a->ncompare = 0;
            if (a->pinned_id && a->pinned_id != r->id) a->compare_ids[a->ncompare++] = a->pinned_id;
            a->compare_ids[a->ncompare++] = r->id;
        }
        if (a->ncompare < 2) {
            a->ncompare = 0;
            app_msg(a, ST_WARN, "select two or more runs with Space (or pin a baseline with p), then press c");
            return 1;
        }
        for (int i = 0; i < a->ncompare; i++) app_series(a, a->compare_ids[i]);
        a->cmp_scroll = 0;
        a->cmp_sample = 0;
        app_push(a, SCR_COMPARE);
        if (a->nselected > APP_MAX_COMPARE)
            app_msg(a, ST_WARN, "comparing the first %d of the %d selected runs (at most %d side by side)", APP_MAX_COMPARE,
                    a->nselected, APP_MAX_COMPARE);
        return 1;
    }
    case A_PIN:
        if (!r) return 1;
    {
        int64_t id = r->id;  // r goes with the refresh
        int pin = id != a->pinned_id;
        if (app_pin_run(a, id, pin, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_NORMAL, pin ? "run #%lld is the baseline now" : "baseline unpinned (#%lld)", (long long)id);
        return 1;
    }
    case A_NEW: {
        // one run selected with Space: clone it ("clone this run"), else the form as left
        const store_run_t *one = a->nselected == 1 ? app_run_by_id(a, a->selected[0]) : NULL;
        if (one) app_form_clone(a, one);
        else app_form_open(a);
        return 1;
    }
    case A_SWEEP:
        a->sweep_view.cursor = a->sweep_view.top = 0;
        app_push(a, SCR_SWEEP);
        return 1;
    case A_FILTER:
        snprintf(a->filter_before, sizeof a->filter_before, "%s", a->filter);
        app_input(a, A_FILTER_SET, 0, "filter: ", a->filter);
        a->prompt_live = A_FILTER_LIVE;
        a->prompt_cancel = A_FILTER_UNDO;
        return 1;
    case A_FILTER_LIVE:  // the list follows the typing while the text is a valid filter
        if (app_filter_check(a->prompt_input, &err)) {
            app_msg(a, ST_DIM, "%s", err.msg);
            return 1;
        }
        a->msg[0] = 0;
        snprintf(a->filter, sizeof a->filter, "%s", a->prompt_input);
        a->runs_view.cursor = a->runs_view.top = 0;
        app_data_refresh(a, 1);
        return 1;
    case A_FILTER_UNDO:
        snprintf(a->filter, sizeof a->filter, "%s", a->filter_before);
        app_data_refresh(a, 1);
        return 1;
    case A_FILTER_SET: {
        if (app_filter_check(a->prompt_input, &err)) {  // the filter from before / stays
            snprintf(a->filter, sizeof a->filter, "%s", a->filter_before);
            app_data_refresh(a, 1);
            app_msg(a, ST_ERROR, "%s", err.msg);
            return 1;
        }
        snprintf(a->filter, sizeof a->filter, "%s", a->prompt_input);
        a->runs_view.cursor = a->runs_view.top = 0;
        app_data_refresh(a, 1);
        return 1;
    }
    case A_SORT:
    case A_SORT_REV: {
        int c = 0;
        for (; c < C_N; c++)
            if (!strcmp(sort_keys[c], a->sort_key) && c != C_CURVE) break;
        if (act == A_SORT) {
            c = (c + 1) % C_N;
            if (c == C_CURVE) c++;
            a->sort_key = sort_keys[c];
            // numbers read best from the top value down; names alphabetically
            a->sort_desc = cols[c].right && c != C_ID ? 1 : 0;
            if (c == C_ID) a->sort_desc = 1;
        } else {
            a->sort_desc = !a->sort_desc;
        }
        app_msg(a, ST_DIM, "sorted by %s, %s", cols[c].title, a->sort_desc ? "descending" : "ascending");
        app_sort_save(a);
        app_data_refresh(a, 1);
        return 1;
    }
    case A_TAGS:
        if (r) app_input(a, A_TAGS_SET, r->id, "tags: ", r->tags);
        return 1;
    case A_NOTE:
        if (r) app_input(a, A_NOTE_SET, r->id, "note: ", r->notes);
        return 1;
    case A_TAGS_SET:
    case A_NOTE_SET:
        if ((act == A_TAGS_SET ? store_run_set_tags : store_run_set_notes)(a->st, a->prompt_run, a->prompt_input, &err))
            app_msg(a, ST_ERROR, "%s", err.msg);
        app_data_refresh(a, 1);
        return 1;
    case A_CANCEL:
        app_ask_cancel(a, r, A_CANCEL_YES);
        return 1;
    case A_RESUME:
        app_ask_resume(a, r, A_RESUME_YES);
        return 1;
    case A_DELETE:
        if (!r) return 1;
        if (store_status_parse(r->status) == STORE_RUN_RUNNING) {
            app_msg(a, ST_WARN, "run #%lld is running: cancel it first (K)", (long long)r->id);
            return 1;
        }
        app_confirm(a, A_DELETE_YES, r->id, "Delete run #%lld %s with its metrics and files? [y/N]", (long long)r->id, r->name);
        return 1;
    case A_CANCEL_YES:
    case A_RESUME_YES:
        app_spawn_on_run(a, act == A_CANCEL_YES ? "cancel" : "resume", a->prompt_run);
        return 1;
    case A_SCANCEL:
        if (!a->ntasks) app_msg(a, ST_WARN, "no cluster sweep has tasks left to cancel");
        else app_confirm(a, A_SCANCEL_YES, a->tasks[0].sweep_id, "Cancel cluster sweep %lld (scancel job %s)? [y/N]",
                         (long long)a->tasks[0].sweep_id, a->tasks[0].job_id);
        return 1;
    case A_SCANCEL_YES: {
        int rc = slurm_sweep_cancel(a->st, a->prompt_run, &err);
        app_cluster_sync(a);
        if (rc) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_NORMAL, "cluster sweep %lld cancelled (scancel); its started runs stop and are imported",
                     (long long)a->prompt_run);
        return 1;
    }
    case A_DELETE_YES:
        // store_runs_delete_idle checks the run's state again as it deletes: a run resumed
        // from a shell while the prompt was open is refused, not deleted under its worker.
        if (store_runs_delete_idle(a->st, &a->prompt_run, 1, &err) ||
            store_run_dir_remove(a->workspace, a->prompt_run, &err))
            app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_NORMAL, "deleted run #%lld", (long long)a->prompt_run);
        if (app_is_selected(a, a->prompt_run)) app_toggle_selected(a, a->prompt_run);
        app_data_refresh(a, 1);
        return 1;
    }
    return 0;
}

// A click on a row moves the cursor there; on a column's title sorts by it (again: reverses).
static void click(app_t *a, int x, int y) {
    int row = 0, col = 0;
    switch (table_hit(&a->runs_view, x, y, &row, &col)) {
    case 1:
        if (col == C_CURVE) col = C_LOSS;
        if (!strcmp(sort_keys[col], a->sort_key)) a->sort_desc = !a->sort_desc;
        else {
            a->sort_key = sort_keys[col];
            a->sort_desc = cols[col].right ? 1 : 0;  // numbers from the top value down
        }
        app_msg(a, ST_DIM, "sorted by %s, %s", cols[col].title, a->sort_desc ? "descending" : "ascending");
        app_sort_save(a);
        app_data_refresh(a, 1);
        break;
    case 2: a->runs_view.cursor = row; break;
    }
}

const screen_t screen_runs = {"Runs", keys, sizeof keys / sizeof keys[0], draw, action, NULL, click};
