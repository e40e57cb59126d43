// The Analysis screen (A on a run): what the run learned, one module at a time — the
// singular values of its ΔW as bars on a log scale, the share of ‖ΔW‖² kept at rank
// 1, 2, 4 ... 64, and, with two LoRA runs selected, the subspace similarity φ(i, j) of
// their A matrices as a shaded grid. The numbers come from app_analysis_open (the same
// code as `lorabench analyze --run`); e writes them all as CSV.
//
// A first analysis takes seconds for a large adapter or a full fine-tune, so it runs on a
// worker thread (one per analysis, like the Try screen's generation): the screen appears at
// once with the progress ("analysing 12 of 48 matrices…"), keeps its keys, and fills in
// when the worker is done. Leaving stops the worker before its next matrix; a stopped
// analysis caches nothing, and the cache is only ever written whole (analysis_of_found_run).
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"

enum { A_NEXT = ACT_SCREEN, A_PREV, A_NEXT_PAGE, A_PREV_PAGE, A_FIRST, A_LAST };

static const key_binding_t keys[] = {
    {TK_ESC, 0, ACT_BACK, "Esc", "back to the runs (an analysis still running stops; nothing is cached)", NULL},
    {TK_DOWN, 'j', A_NEXT, "Down/j", "next module", "Next"},
    {TK_UP, 'k', A_PREV, "Up/k", "previous module", "Prev"},
    {TK_RIGHT, 'l', A_NEXT, "Right/l", "next module", NULL},
    {TK_LEFT, 'h', A_PREV, "Left/h", "previous module", NULL},
    {TK_PGDN, 0, A_NEXT_PAGE, "PgDn", "10 modules on", NULL},
    {TK_PGUP, 0, A_PREV_PAGE, "PgUp", "10 modules back", NULL},
    {TK_HOME, 'g', A_FIRST, "Home/g", "first module", NULL},
    {TK_END, 'G', A_LAST, "End/G", "last module", NULL},
};

// Decades below the largest singular value that the log-scale bars span.
#define DECADES 4

// ---- the worker ----

enum { JOB_READING, JOB_ANALYSING, JOB_SIMILARITY };

struct app_analysis_job {
    pthread_mutex_t mu;        // guards phase, done, total, stop and finished, and the results
    pthread_cond_t wake;       //   until finished; wake: stop was set (cuts the pace short)
    pthread_t thread;
    int started;               // the thread was created and is not joined yet
    // what to do, fixed before the thread starts
    int64_t id, other;         // other 0: no φ
    analysis_run_t run, other_run;
    char other_error[256];     // why φ was refused at the start ("": it was not)
    int module;                // the module to show when done (the same run again: the same one)
    int pace_ms;               // tests: a wait before each matrix
    // progress
    int phase, done, total;    // JOB_*; done of total matrices
    int stop;                  // the screen was left: stop before the next matrix
    int finished;              // the results below are final
    // the results
    int rc, cached;
    lb_err_t err;
    char cache[sizeof ((app_t *)0)->analysis_cache];
    analyze_result_t result;
    analyze_sim_t *sim;
    int nsim, sim_rc;
    lb_err_t sim_err;
    int collected;             // moved into the app (or, when rc, err shown instead)
};

// The engine's progress hook: records done of total and says whether to stop.
static int job_progress(void *ctx, int done, int total) {
    struct app_analysis_job *j = ctx;
    pthread_mutex_lock(&j->mu);
    j->phase = JOB_ANALYSING;
    j->done = done, j->total = total;
    if (j->pace_ms > 0 && done < total && !j->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long ns = until.tv_nsec + (long)(j->pace_ms % 1000) * 1000000L;
        until.tv_sec += j->pace_ms / 1000 + ns / 1000000000L;
        until.tv_nsec = ns % 1000000000L;
        while (!j->stop && pthread_cond_timedwait(&j->wake, &j->mu, &until) == 0) {}
    }
    int stop = j->stop;
    pthread_mutex_unlock(&j->mu);
    return stop;
}

// The analysis, then φ: everything from files, nothing from the store.
static void job_run(struct app_analysis_job *j) {
    analyze_progress_t progress = {job_progress, j};
    analyze_result_t r = {0};
    analyze_sim_t *sim = NULL;
    lb_err_t err = {0}, sim_err = {0};
    char cache[sizeof j->cache] = "";
    int cached = 0, nsim = 0, sim_rc = 0;
    int rc = analysis_of_found_run(&j->run, &progress, &r, &cached, cache, sizeof cache, &err);
    if (rc == 0 && j->other) {
        pthread_mutex_lock(&j->mu);
        j->phase = JOB_SIMILARITY;
        int stop = j->stop;
        pthread_mutex_unlock(&j->mu);
        if (!stop) sim_rc = analysis_adapters_similarity(j->run.base, j->run.dir, j->other_run.dir, &sim, &nsim, &sim_err);
    }
    pthread_mutex_lock(&j->mu);
    j->rc = rc, j->err = err, j->cached = cached;
    snprintf(j->cache, sizeof j->cache, "%s", cache);
    j->result = r;
    j->sim = sim, j->nsim = nsim, j->sim_rc = sim_rc, j->sim_err = sim_err;
    j->finished = 1;
    pthread_mutex_unlock(&j->mu);
}

static void *job_thread(void *arg) {
    job_run(arg);
    return NULL;
}

static void job_request_stop(struct app_analysis_job *j) {
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

static int job_finished(struct app_analysis_job *j) {
    pthread_mutex_lock(&j->mu);
    int f = j->finished;
    pthread_mutex_unlock(&j->mu);
    return f;
}

static void job_join(struct app_analysis_job *j) {
    if (!j->started) return;
    pthread_join(j->thread, NULL);
    j->started = 0;
}

void app_analysis_stop(app_t *a) {
    struct app_analysis_job *j = a->analysis_job;
    if (!j) return;
    job_request_stop(j);
    job_join(j);
    analyze_result_free(&j->result);
    analyze_sim_free(j->sim, j->nsim);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->wake);
    free(j);
    a->analysis_job = NULL;
}

void app_analysis_start(app_t *a, int64_t id, const analysis_run_t *run, int64_t other,
                        const analysis_run_t *other_run, const char *other_error) {
    int module = id == a->analysis_id ? a->analysis_module : 0;
    app_analysis_clear(a);
    struct app_analysis_job *j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->wake, NULL);
    j->id = id;
    j->run = *run;
    if (other_run) j->other = other, j->other_run = *other_run;
    snprintf(j->other_error, sizeof j->other_error, "%s", other_error ? other_error : "");
    j->module = module;
    j->pace_ms = a->analysis_pace_ms;
    a->analysis_job = j;
    a->analysis_id = id;
    if (pthread_create(&j->thread, NULL, job_thread, j) == 0) j->started = 1;
    else job_run(j);  // no thread to be had: the screen waits, as it did before the worker
}

int app_analysis_busy(app_t *a) {
    return a->analysis_job && !job_finished(a->analysis_job);
}

int app_analysis_collect(app_t *a) {
    struct app_analysis_job *j = a->analysis_job;
    if (!j || j->collected || !job_finished(j)) return 0;
    job_join(j);
    j->collected = 1;
    if (j->rc) {
        app_msg(a, ST_ERROR, "%s", j->err.msg);
        return 1;
    }
    a->analysis = j->result;
    memset(&j->result, 0, sizeof j->result);
    a->analysis_cached = j->cached;
    snprintf(a->analysis_cache, sizeof a->analysis_cache, "%s", j->cache);
    a->analysis_module = j->module < a->analysis.n ? j->module : 0;
    if (j->other_error[0]) app_msg(a, ST_WARN, "%s", j->other_error);
    else if (j->other && j->sim_rc) app_msg(a, ST_WARN, "%s", j->sim_err.msg);
    else app_msg(a, ST_DIM, "%s %s", a->analysis_cached ? "read from" : "computed and cached in", a->analysis_cache);
    if (j->other && !j->sim_rc) {
        a->analysis_sim = j->sim, a->analysis_nsim = j->nsim, a->analysis_other = j->other;
        j->sim = NULL, j->nsim = 0;
    }
    return 1;
}

void app_analysis_wait(app_t *a) {
    if (!a->analysis_job) return;
    job_join(a->analysis_job);
    app_analysis_collect(a);
}

// ---- drawing ----

static const analyze_sim_t *module_sim(const app_t *a, const char *name) {
    for (int i = 0; i < a->analysis_nsim; i++)
        if (!strcmp(a->analysis_sim[i].name, name)) return &a->analysis_sim[i];
    return NULL;
}

// A bar of frac (0..1) of w cells, in eighths.
static void bar(grid_t *g, int x, int y, int w, double frac) {
    static const uint32_t eighths[8] = {0x258F, 0x258E, 0x258D, 0x258C, 0x258B, 0x258A, 0x2589, 0x2588};
    if (!(frac > 0)) return;
    if (frac > 1) frac = 1;
    int e = (int)lround(frac * w * 8);
    for (int i = 0; i < w && e > 0; i++, e -= 8)
        grid_put(g, x + i, y, g->ascii ? '#' : e >= 8 ? 0x2588 : eighths[e - 1], ST_BAR);
}

// Singular values as bars: a full bar is the largest, each DECADES-th of it a factor of 10.
static void draw_spectrum(app_t *a, grid_t *g, const analyze_module_t *m, int x, int y, int w, int h) {
    char t[96], v[32];
    snprintf(t, sizeof t, "%s", g->ascii ? "sv of dW, log (1/4 bar = x10)" : "σ of ΔW, log scale (¼ bar = ×10)");
    grid_box(g, x, y, w, h, t, ST_DIM);
    int rows = h - 2, bw = w - 16;
    double top = m->n_sv ? m->sv[0] : 0;
    for (int i = 0; i < m->n_sv && i < rows; i++) {
        int yy = y + 1 + i;
        if (i == rows - 1 && m->n_sv > rows) {
            grid_textf(g, x + 2, yy, w - 4, ST_DIM, "… %d more (e exports all)", m->n_sv - i);
            break;
        }
        grid_textf(g, x + 1, yy, 4, ST_DIM, "%3d", i + 1);
        double frac = top > 0 && m->sv[i] > 0 ? 1 + log10(m->sv[i] / top) / DECADES : 0;
        bar(g, x + 5, yy, bw, frac);
        snprintf(v, sizeof v, "%.4g", m->sv[i]);
        grid_text_right(g, x + w - 1, yy, 10, v, i < m->effective_rank ? ST_NORMAL : ST_DIM);
    }
    (void)a;
}

// The share of ‖ΔW‖² that the best rank-r approximation keeps, r = 1, 2, 4 ... 64.
static void draw_energy(grid_t *g, const analyze_module_t *m, int x, int y, int w) {
    grid_box(g, x, y, w, ANALYZE_N_ENERGY + 2, "energy kept at rank r", ST_DIM);
    for (int k = 0; k < ANALYZE_N_ENERGY; k++) {
        int yy = y + 1 + k;
        char v[32];
        grid_textf(g, x + 1, yy, 6, ST_DIM, "r=%-3d", analyze_energy_rank(k));
        bar(g, x + 7, yy, w - 16, m->energy[k]);
        snprintf(v, sizeof v, "%.3f", m->energy[k]);
        grid_text_right(g, x + w - 1, yy, 8, v, ST_NORMAL);
    }
}

// φ(i, j) as a shaded grid: rows i (this run), columns j (the other run).
static void draw_phi(app_t *a, grid_t *g, const analyze_sim_t *s, int x, int y, int w, int h) {
    static const uint32_t shade[5] = {' ', 0x2591, 0x2592, 0x2593, 0x2588};
    static const char ascii[5] = {' ', '.', ':', 'o', '#'};
    char t[96];
    snprintf(t, sizeof t, "%s(i, j) against #%lld", g->ascii ? "phi" : "φ", (long long)a->analysis_other);
    grid_box(g, x, y, w, h, t, ST_DIM);
    if (!s) {
        grid_textf(g, x + 2, y + 1, w - 4, ST_DIM, "#%lld does not adapt this module", (long long)a->analysis_other);
        return;
    }
    int n = s->n, show = n;
    if (show > (w - 6) / 2) show = (w - 6) / 2;
    if (show > h - 4) show = h - 4;
    if (show < 0) show = 0;
    for (int j = 0; j < show; j++) grid_textf(g, x + 5 + 2 * j, y + 1, 2, ST_DIM, "%d", (j + 1) % 10);
    for (int i = 0; i < show; i++) {
        grid_textf(g, x + 1, y + 2 + i, 4, ST_DIM, "%3d", i + 1);
        for (int j = 0; j < show; j++) {
            double p = s->phi[(size_t)i * n + j];
            int k = p >= 0.8 ? 4 : p >= 0.6 ? 3 : p >= 0.4 ? 2 : p >= 0.2 ? 1 : 0;
            uint32_t c = g->ascii ? (uint32_t)ascii[k] : shade[k];
            grid_put(g, x + 5 + 2 * j, y + 2 + i, c, ST_BAR);
            grid_put(g, x + 6 + 2 * j, y + 2 + i, c, ST_BAR);
        }
    }
    char legend[128];
    if (g->ascii) snprintf(legend, sizeof legend, "' '<.2 .<.4 :<.6 o<.8 #>=.8  1 = same subspace");
    else snprintf(legend, sizeof legend, "░ ≥.2 ▒ ≥.4 ▓ ≥.6 █ ≥.8  1 = same subspace");
    if (show < n) snprintf(legend + strlen(legend), sizeof legend - strlen(legend), "  (first %d of %d)", show, n);
    grid_text_trunc(g, x + 1, y + h - 2, w - 2, legend, ST_DIM);
}

// The run's name and what ΔW is, the first line of every state of the screen.
static void draw_title(app_t *a, grid_t *g, int y, int full) {
    const store_run_t *run = app_run_by_id(a, a->analysis_id);
    int asc = g->ascii;
    char line[600];
    snprintf(line, sizeof line, "#%lld %s  %s", (long long)a->analysis_id, run ? run->name : "",
             full ? (asc ? "full fine-tune: dW = W_tuned - W_base" : "full fine-tune: ΔW = W_tuned − W_base")
                  : (asc ? "LoRA: dW = s*B*A" : "LoRA: ΔW = s·B·A"));
    grid_text_trunc(g, 1, y, g->w - 2, line, ST_BOLD);
}

// While the worker runs: what it does, how far it is, and how to leave.
static void draw_progress(app_t *a, grid_t *g, int y, int h) {
    struct app_analysis_job *j = a->analysis_job;
    pthread_mutex_lock(&j->mu);
    int phase = j->phase, done = j->done, total = j->total;
    pthread_mutex_unlock(&j->mu);
    draw_title(a, g, y, j->run.full);
    char line[4400];
    const char *dots = g->ascii ? "..." : "…";
    if (phase == JOB_READING)  // the cache's key (the weights' sha256), then the models or the adapter
        snprintf(line, sizeof line, "reading the weights in %s%s", j->run.dir, dots);
    else if (phase == JOB_ANALYSING)
        snprintf(line, sizeof line, "analysing %d of %d matrices%s", done < total ? done + 1 : total, total, dots);
    else
        snprintf(line, sizeof line, "subspace similarity %s against #%lld%s", g->ascii ? "phi" : "φ",
                 (long long)j->other, dots);
    grid_text_trunc(g, 1, y + 1, g->w - 2, line, ST_ACCENT);
    int bw = g->w - 2 < 60 ? g->w - 2 : 60;
    if (h >= 3) widget_progress(g, 1, y + 2, bw, total > 0 ? (double)done / total : 0, ST_BAR);
    if (h >= 5)
        widget_wrap(g, 1, y + 4, g->w - 2, h - 4,
                    "Esc stops it and goes back to the runs (nothing is cached); q quits. Once done, the analysis is "
                    "cached in the run's folder and opens at once.", 0, ST_DIM);
}

static void draw(app_t *a, grid_t *g, int y, int h) {
    app_analysis_collect(a);
    const struct app_analysis_job *j = a->analysis_job;
    if (j && !j->collected) {
        draw_progress(a, g, y, h);
        return;
    }
    if (j && j->rc) {
        draw_title(a, g, y, j->run.full);
        char line[sizeof j->err.msg + 64];
        snprintf(line, sizeof line, "No analysis: %s. Esc goes back to the runs.", j->err.msg);
        widget_wrap(g, 1, y + 1, g->w - 2, h - 1, line, 0, ST_ERROR);
        return;
    }
    const analyze_result_t *r = &a->analysis;
    if (!a->analysis_id || r->n == 0) {
        grid_text(g, 1, y, g->w - 2, "Nothing to show: pick a finished LoRA or full run in the runs list and press A.",
                  ST_BOLD);
        return;
    }
    if (a->analysis_module >= r->n) a->analysis_module = r->n - 1;
    const analyze_module_t *m = &r->m[a->analysis_module];
    int asc = g->ascii;
    char line[600], rel[32];
    draw_title(a, g, y, r->full);
    snprintf(line, sizeof line, "module %d of %d  %s  %d%s%d", a->analysis_module + 1, r->n, m->name, m->out,
             asc ? "x" : "×", m->in);
    grid_text_trunc(g, 1, y + 1, g->w - 2, line, ST_ACCENT);
    if (isfinite(m->rel_norm)) snprintf(rel, sizeof rel, "%.4g", m->rel_norm);
    else snprintf(rel, sizeof rel, "-");
    snprintf(line, sizeof line, "effective rank %d (%s above 1%% of the largest)  %s %s  %s %.4g", m->effective_rank,
             asc ? "values" : "σ", asc ? "|dW|/|W|" : "‖ΔW‖/‖W‖", rel, asc ? "|dW|" : "‖ΔW‖", m->norm);
    grid_text_trunc(g, 1, y + 2, g->w - 2, line, ST_NORMAL);
    int top = y + 3, bh = h - 3;
    if (bh < 4) return;
    int lw = g->w / 2;
    draw_spectrum(a, g, m, 0, top, lw, bh < m->n_sv + 2 ? bh : m->n_sv + 2);  // as tall as needed
    int rx = lw, rw = g->w - lw;
    draw_energy(g, m, rx, top, rw);
    int py = top + ANALYZE_N_ENERGY + 2, ph = y + h - py;
    const analyze_sim_t *sim = module_sim(a, m->name);
    if (sim && ph > sim->n + 4) ph = sim->n + 4;
    if (a->analysis_other && ph >= 5) draw_phi(a, g, sim, rx, py, rw, ph);
    else if (ph >= 2)
        widget_wrap(g, rx + 1, py, rw - 2, ph,
                    "Select two LoRA runs with Space and press A for the subspace similarity of their adapters.", 0,
                    ST_DIM);
}

// Every number of the analysis as CSV, one value a row: module, quantity, i, j, value.
static void export_csv(app_t *a) {
    const analyze_result_t *r = &a->analysis;
    app_buf_t b = {0};
    app_buf_printf(&b, "module,quantity,i,j,value\n");
    for (int k = 0; k < r->n; k++) {
        const analyze_module_t *m = &r->m[k];
        for (int i = 0; i < m->n_sv; i++) app_buf_printf(&b, "%s,singular_value,%d,,%.17g\n", m->name, i + 1, m->sv[i]);
        app_buf_printf(&b, "%s,norm,,,%.17g\n", m->name, m->norm);
        if (isfinite(m->rel_norm)) app_buf_printf(&b, "%s,rel_norm,,,%.17g\n", m->name, m->rel_norm);
        app_buf_printf(&b, "%s,effective_rank,,,%d\n", m->name, m->effective_rank);
        for (int e = 0; e < ANALYZE_N_ENERGY; e++)
            app_buf_printf(&b, "%s,energy_at_rank,%d,,%.17g\n", m->name, analyze_energy_rank(e), m->energy[e]);
    }
    for (int k = 0; k < a->analysis_nsim; k++) {
        const analyze_sim_t *s = &a->analysis_sim[k];
        for (int i = 0; i < s->n; i++)
            for (int j = 0; j < s->n; j++)
                app_buf_printf(&b, "%s,phi,%d,%d,%.17g\n", s->name, i + 1, j + 1, s->phi[(size_t)i * s->n + j]);
    }
    char stem[64], path[4400];
    snprintf(stem, sizeof stem, "analysis-%lld", (long long)a->analysis_id);
    lb_err_t err = {0};
    if (app_export(a, stem, "csv", b.s ? b.s : "", path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported the analysis of %d modules to %s", r->n, path);
    free(b.s);
}

static int action(app_t *a, int act, int key) {
    (void)key;
    app_analysis_collect(a);
    int n = a->analysis.n, *cur = &a->analysis_module;
    switch (act) {
    case ACT_BACK:
        if (app_analysis_busy(a)) {
            // not waited for: the worker stops before its next matrix, and the next
            // analysis (or quitting) joins it
            struct app_analysis_job *j = a->analysis_job;
            job_request_stop(j);
            pthread_mutex_lock(&j->mu);
            int spectra_done = j->phase == JOB_SIMILARITY || (j->phase == JOB_ANALYSING && j->done == j->total);
            pthread_mutex_unlock(&j->mu);
            if (spectra_done)
                app_msg(a, ST_DIM, "left the analysis of #%lld as it finished: its spectra are cached%s",
                        (long long)a->analysis_id, j->other ? ", φ is not" : "");
            else
                app_msg(a, ST_DIM, "stopped the analysis of #%lld before it was done; nothing was cached",
                        (long long)a->analysis_id);
        }
        app_pop(a);
        return 1;
    case A_NEXT: *cur = *cur + 1 < n ? *cur + 1 : *cur; return 1;
    case A_PREV: *cur = *cur > 0 ? *cur - 1 : 0; return 1;
    case A_NEXT_PAGE: *cur = *cur + 10 < n ? *cur + 10 : (n > 0 ? n - 1 : 0); return 1;
    case A_PREV_PAGE: *cur = *cur > 10 ? *cur - 10 : 0; return 1;
    case A_FIRST: *cur = 0; return 1;
    case A_LAST: *cur = n > 0 ? n - 1 : 0; return 1;
    case ACT_EXPORT:
        if (n) export_csv(a);
        else if (app_analysis_busy(a)) app_msg(a, ST_DIM, "still analysing: e exports once the numbers are in");
        return 1;
    }
    return 0;
}

const screen_t screen_analysis = {"Analysis", keys, sizeof keys / sizeof keys[0], draw, action, NULL, NULL};
