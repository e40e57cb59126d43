// The Monitor screen: one run as it trains (or after): progress, ETA, the loss curve raw and
// smoothed, learning rate, speed, memory, the last evaluation and generated summaries
// beside their references.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

enum { A_CANCEL = ACT_SCREEN, A_RESUME, A_SMOOTH_UP, A_SMOOTH_DOWN, A_LOGY, A_XAXIS, A_SAMPLE_UP,
       A_SAMPLE_DOWN, A_CANCEL_YES, A_RESUME_YES };

static const key_binding_t keys[] = {
    {'K', 0, A_CANCEL, "K", "cancel this run (asks y/N)", "Cancel"},
    {'r', 0, A_RESUME, "r", "resume an interrupted or cancelled run (asks y/N)", NULL},
    {'+', '=', A_SMOOTH_UP, "+/-", "more / less smoothing of the loss curve (EMA 0..0.999)", "Smooth"},
    {'-', 0, A_SMOOTH_DOWN, "-", "less smoothing", NULL},
    {'l', 0, A_LOGY, "l", "log / linear y axis", "Log"},
    {'x', 0, A_XAXIS, "x", "x axis: step, tokens, time", "X"},
    {TK_DOWN, 'j', A_SAMPLE_DOWN, "Down/j", "next sample", NULL},
    {TK_UP, 'k', A_SAMPLE_UP, "Up/k", "previous sample", NULL},
};

static const store_run_t *monitor_run(app_t *a) {
    return app_run_by_id(a, a->monitor_id);
}

// Loss (raw and smoothed) and learning-rate series of a run for the plot.
typedef struct {
    double *x, *loss, *ema;
    int n;
} curves_t;

static void curves_make(const app_series_t *s, int xaxis, double smooth, curves_t *c) {
    c->n = (int)s->n;
    c->x = xmalloc((s->n + 1) * sizeof *c->x);
    c->loss = xmalloc((s->n + 1) * sizeof *c->loss);
    c->ema = xmalloc((s->n + 1) * sizeof *c->ema);
    for (size_t i = 0; i < s->n; i++) {
        c->x[i] = app_metric_x(&s->m[i], xaxis);
        c->loss[i] = s->m[i].loss;
    }
    plot_ema(c->loss, c->n, smooth, c->ema);
}

static void curves_free(curves_t *c) {
    free(c->x);
    free(c->loss);
    free(c->ema);
}

static double last_finite(const app_series_t *s, size_t off) {
    for (size_t i = s->n; i-- > 0;) {
        double v = *(const double *)((const char *)&s->m[i] + off);
        if (isfinite(v)) return v;
    }
    return NAN;
}

static void draw(app_t *a, grid_t *g, int y, int h) {
    const store_run_t *r = monitor_run(a);
    if (!r) {
        grid_text(g, 2, y + 1, g->w - 4, "This run is no longer in the list (deleted or filtered out). Esc goes back.", ST_BOLD);
        return;
    }
    app_series_t *s = app_series(a, r->id);
    char b1[32], b2[32], b3[32], line[512];
    // line 1: identity and status
    int x = 1;
    x += grid_textf(g, x, y, g->w / 2, ST_BOLD, "#%lld %s", (long long)r->id, r->name) + 2;
    store_status_t status = store_status_parse(r->status);
    int sst = status == STORE_RUN_DONE ? ST_GOOD : status == STORE_RUN_RUNNING ? ST_WARN
            : (status == STORE_RUN_FAILED || status == STORE_RUN_INTERRUPTED) ? ST_BAD : ST_DIM;
    x += grid_text(g, x, y, 12, r->status, sst) + 2;
    if (!strcmp(r->method, "lora"))
        snprintf(line, sizeof line, "lora r=%lld alpha=%g on %s", (long long)r->r, r->alpha, r->targets ? r->targets : "-");
    else
        snprintf(line, sizeof line, "%s", r->method);
    if (r->precision && strlen(line) + 16 < sizeof line)  // what the products ran in
        snprintf(line + strlen(line), sizeof line - strlen(line), " · %s", r->precision);
    x += grid_text_trunc(g, x, y, g->w - x - 1, line, ST_NORMAL) + 2;
    if (r->trainable_params >= 0 && x < g->w - 20) {
        if (isnan(r->trainable_pct)) grid_textf(g, x, y, g->w - x - 1, ST_DIM, "%s trainable", fmt_int(b1, r->trainable_params));
        else grid_textf(g, x, y, g->w - x - 1, ST_DIM, "%s trainable (%.2f%%)", fmt_int(b1, r->trainable_params), r->trainable_pct);
    }
    // line 2: progress, ETA
    double elapsed = isnan(r->started_at) ? NAN : (status == STORE_RUN_RUNNING ? a->now - r->started_at : r->duration);
    double frac = r->total_steps > 0 ? (double)r->step / (double)r->total_steps : 0;
    int pw = g->w / 3 > 40 ? 40 : g->w / 3;
    widget_progress(g, 1, y + 1, pw, frac, ST_BAR);
    double eta = NAN;
    if (status == STORE_RUN_RUNNING && r->step > 0 && r->total_steps > r->step && !isnan(elapsed))
        eta = elapsed / (double)r->step * (double)(r->total_steps - r->step);
    if (r->total_steps > 0) snprintf(b3, sizeof b3, "%lld/%lld", (long long)r->step, (long long)r->total_steps);
    else snprintf(b3, sizeof b3, "%lld", (long long)r->step);
    grid_textf(g, pw + 2, y + 1, g->w - pw - 3, ST_NORMAL, "step %s  elapsed %s  ETA %s", b3,
               fmt_duration(b1, elapsed), fmt_duration(b2, eta));
    // line 3: the latest numbers
    double loss = last_finite(s, offsetof(store_metric_t, loss));
    double lr = last_finite(s, offsetof(store_metric_t, lr));
    double tps = last_finite(s, offsetof(store_metric_t, tokens_per_s));
    double rss = last_finite(s, offsetof(store_metric_t, rss_mb));
    double sms = last_finite(s, offsetof(store_metric_t, step_ms));
    curves_t c;
    curves_make(s, a->cmp_xaxis, a->smooth, &c);
    double ema = c.n ? c.ema[c.n - 1] : NAN;
    char lrs[32], tpss[32], mem[32], ls[32], es[32];
    snprintf(lrs, sizeof lrs, isnan(lr) ? "-" : "%.2e", lr);
    fmt_num(ls, loss, 4);
    fmt_num(es, ema, 4);
    grid_textf(g, 1, y + 2, g->w - 2, ST_NORMAL, "loss %s (smoothed %s)  lr %s  tok/s %s  step %s ms  mem %s", ls, es,
               lrs, isnan(tps) ? "-" : fmt_count(tpss, tps), fmt_num(b1, sms, 0),
               isnan(rss) ? "-" : fmt_bytes(mem, rss * 1048576.0));
    // plot (and side panel on wide terminals)
    int samples_h = h >= 40 ? (h - 4) / 3 : 5;
    int ph = h - 3 - 1 - samples_h;
    int pwid = g->w >= 100 ? g->w * 2 / 3 : g->w;  // the side panel from 100 columns
    char title[128];
    snprintf(title, sizeof title, "loss (EMA %.*f)", app_smooth_digits(a->smooth), a->smooth);
    grid_box(g, 0, y + 3, pwid, ph, title, ST_DIM);
    plot_series_t ps[2] = {
        {"raw", c.x, c.loss, c.n, ST_DIM, 0},
        {"loss", c.x, c.ema, c.n, ST_SERIES0, 'A'},
    };
    plot_opts_t po = {a->cmp_logy, a->ascii, 0, app_xaxis_name(a->cmp_xaxis)};
    widget_plot(g, 1, y + 4, pwid - 2, ph - 2, ps, 2, &po);
    if (pwid < g->w) {
        int sx = pwid + 1, sw = g->w - pwid - 2, sy = y + 3;
        grid_box(g, pwid, sy, g->w - pwid, ph, "learning rate, speed, memory", ST_DIM);
        double *v = xmalloc((s->n + 1) * sizeof *v);
        static const struct { const char *name; size_t off; int style; } rows[] = {
            {"lr", offsetof(store_metric_t, lr), ST_SERIES1},
            {"tok/s", offsetof(store_metric_t, tokens_per_s), ST_SERIES2},
            {"mem MB", offsetof(store_metric_t, rss_mb), ST_SERIES3},
            {"grad norm", offsetof(store_metric_t, grad_norm), ST_SERIES4},
        };
        for (int k = 0; k < 4 && 1 + k * 3 + 2 < ph - 1; k++) {
            for (size_t i = 0; i < s->n; i++) v[i] = *(const double *)((const char *)&s->m[i] + rows[k].off);
            double last = last_finite(s, rows[k].off);
            char lv[32] = "-";  // a run without training steps has none of these
            if (isfinite(last)) snprintf(lv, sizeof lv, "%.4g", last);
            grid_textf(g, sx + 1, sy + 1 + k * 3, sw - 2, ST_DIM, "%s  %s", rows[k].name, lv);
            widget_sparkline(g, sx + 1, sy + 2 + k * 3, sw - 2, v, (int)s->n, rows[k].style);
        }
        free(v);
    }
    curves_free(&c);
    // last evaluation; a run that stopped shows why instead: its error and its worker's log
    int ey = y + 3 + ph;
    const store_eval_t *ev = app_series_last_eval(s);
    if (status == STORE_RUN_FAILED || status == STORE_RUN_INTERRUPTED || status == STORE_RUN_CANCELLED) {
        int row = ey;
        if (r->error && *r->error) row += widget_wrap(g, 1, row, g->w - 2, 2, r->error, 0, ST_BAD);
        else grid_textf(g, 1, row++, g->w - 2, ST_BAD, "%s without an error message", r->status);
        char (*lines)[200] = xcalloc(64, sizeof *lines);
        char path[4400] = "";
        int room = y + h - row - 1;
        int n = room > 0 ? app_run_log_tail(a, r->id, lines, room < 64 ? room : 64, path, sizeof path) : 0;
        if (n) {
            grid_textf(g, 1, row++, g->w - 2, ST_HEADER, "worker log, last %d line%s: %s", n, n == 1 ? "" : "s", path);
            for (int i = 0; i < n && row < y + h; i++) grid_text_trunc(g, 1, row++, g->w - 2, lines[i], ST_DIM);
        } else if (room > 0) {
            grid_text(g, 1, row, g->w - 2, "no worker log (a run started in the foreground printed to its terminal)", ST_DIM);
        }
        free(lines);
        return;
    }
    if (!ev) {
        grid_text(g, 1, ey, g->w - 2, "no evaluation yet", ST_DIM);
    } else {
        char ci[64] = "", v1[32], v2[32], v3[32], v4[32];
        if (isfinite(ev->rouge1_low) && isfinite(ev->rouge1_high))
            snprintf(ci, sizeof ci, " [%.3f, %.3f]", ev->rouge1_low, ev->rouge1_high);
        snprintf(line, sizeof line, "eval at step %lld on %s (n=%lld):  R-1 %s%s  R-2 %s  R-L %s  R-Lsum %s",
                 (long long)ev->step, ev->split, (long long)ev->n, fmt_num(v1, ev->rouge1, 3), ci, fmt_num(v2, ev->rouge2, 3),
                 fmt_num(v3, ev->rougeL, 3), fmt_num(v4, ev->rougeLsum, 3));
        grid_text_trunc(g, 1, ey, g->w - 2, line, ST_BOLD);
    }
    // samples: reference beside prediction
    int sy = ey + 1;
    if (!s->nsamples) {
        if (ev) grid_text(g, 1, sy, g->w - 2, "no samples stored for this evaluation", ST_DIM);
        return;
    }
    if (a->monitor_scroll >= (int)s->nsamples) a->monitor_scroll = (int)s->nsamples - 1;
    if (a->monitor_scroll < 0) a->monitor_scroll = 0;
    int half = (g->w - 3) / 2;
    int row = 0;
    if (ev && (long long)s->nsamples < (long long)ev->n)  // the first ones of the evaluation are kept for the screens
        grid_textf(g, 1, sy, half, ST_HEADER, "reference  (%d of %zu kept of %lld, j/k)", a->monitor_scroll + 1,
                   s->nsamples, (long long)ev->n);
    else grid_textf(g, 1, sy, half, ST_HEADER, "reference  (sample %d of %zu, j/k)", a->monitor_scroll + 1, s->nsamples);
    grid_text(g, 2 + half, sy, half, "prediction", ST_HEADER);
    row = 1;
    for (size_t i = (size_t)a->monitor_scroll; i < s->nsamples && row < samples_h; i++) {
        const store_sample_row_t *sm = &s->samples[i];
        int rows = widget_wrap_rows(sm->reference, half);
        int prow = widget_wrap_rows(sm->prediction, half - 8);
        if (prow > rows) rows = prow;
        if (rows > samples_h - row) rows = samples_h - row;
        widget_wrap(g, 1, sy + row, half, rows, sm->reference, 0, ST_NORMAL);
        widget_wrap(g, 2 + half, sy + row, half - 8, rows, sm->prediction, 0, ST_ACCENT);
        grid_textf(g, 2 + half + half - 7, sy + row, 7, ST_DIM, "R1 %.2f", sm->rouge1);
        row += rows;
    }
}

static void export_metrics(app_t *a) {
    const store_run_t *r = monitor_run(a);
    if (!r) return;
    app_series_t *s = app_series(a, r->id);
    app_buf_t b = {0};
    app_buf_printf(&b, "step,epoch,loss,lr,grad_norm,tokens_per_s,step_ms,rss_mb,tokens,wall_s\n");
    for (size_t i = 0; i < s->n; i++) {
        const store_metric_t *m = &s->m[i];
        // a value the step did not record stays empty
        double v[8] = {m->epoch, m->loss, m->lr, m->grad_norm, m->tokens_per_s, m->step_ms, m->rss_mb, m->wall_s};
        char f[8][32];
        for (int k = 0; k < 8; k++) {
            f[k][0] = 0;
            if (isfinite(v[k])) snprintf(f[k], sizeof f[k], k == 1 || k == 2 ? "%.8g" : "%.6g", v[k]);
        }
        char tok[32] = "";
        if (m->tokens >= 0) snprintf(tok, sizeof tok, "%lld", (long long)m->tokens);
        app_buf_printf(&b, "%lld,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", (long long)m->step, f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                       tok, f[7]);
    }
    char stem[64], path[4400];
    snprintf(stem, sizeof stem, "run%lld-metrics", (long long)r->id);
    lb_err_t err = {0};
    if (app_export(a, stem, "csv", b.s ? b.s : "", path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_GOOD, "exported %zu metric rows to %s", s->n, path);
    free(b.s);
}

static int action(app_t *a, int act, int key) {
    (void)key;
    const store_run_t *r = monitor_run(a);
    switch (act) {
    case ACT_EXPORT: export_metrics(a); return 1;
    case A_SMOOTH_UP:
        a->smooth = app_smooth_step(a->smooth, 1);
        return 1;
    case A_SMOOTH_DOWN:
        a->smooth = app_smooth_step(a->smooth, -1);
        return 1;
    case A_LOGY: a->cmp_logy = !a->cmp_logy; return 1;
    case A_XAXIS: a->cmp_xaxis = (a->cmp_xaxis + 1) % XAXIS_N; return 1;
    case A_SAMPLE_DOWN: a->monitor_scroll++; return 1;
    case A_SAMPLE_UP: if (a->monitor_scroll > 0) a->monitor_scroll--; return 1;
    case A_CANCEL:
        app_ask_cancel(a, r, A_CANCEL_YES);
        return 1;
    case A_RESUME:
        app_ask_resume(a, r, A_RESUME_YES);
        return 1;
    case A_CANCEL_YES:
    case A_RESUME_YES:
        app_spawn_on_run(a, act == A_CANCEL_YES ? "cancel" : "resume", a->prompt_run);
        return 1;
    }
    return 0;
}

const screen_t screen_monitor = {"Monitor", keys, sizeof keys / sizeof keys[0], draw, action, NULL, NULL};
