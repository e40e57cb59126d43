// Tables of runs for people: cells as strings, columns as wide as their widest cell (no
// value is cut), aligned text or Markdown. The results table of a sweep is one of them.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "util.h"

cli_table_t *cli_table_new(int ncols, const char *const *head, const int *right) {
    cli_table_t *t = xcalloc(1, sizeof *t);
    t->ncols = ncols;
    t->right = xcalloc((size_t)ncols, sizeof(int));
    for (int c = 0; c < ncols; c++) t->right[c] = right ? right[c] : 0;
    cli_table_row(t, head);
    return t;
}

void cli_table_row(cli_table_t *t, const char *const *cells) {
    t->cells = xrealloc(t->cells, (size_t)(t->nrows + 1) * (size_t)t->ncols * sizeof(char *));
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->nrows * t->ncols + c] = xstrdup(cells[c] && *cells[c] ? cells[c] : CLI_MISSING);
    t->nrows++;
}

void cli_table_print(FILE *f, const cli_table_t *t, int md) {
    int *w = xcalloc((size_t)t->ncols, sizeof(int));
    for (int r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            int cols = store_text_cols(t->cells[r * t->ncols + c]);
            if (cols > w[c]) w[c] = cols;
        }
    for (int r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (md) {
                fputs(c ? " | " : "| ", f);
                // Markdown: a '|' inside a cell would end it
                for (const char *p = s; *p; p++) {
                    if (*p == '|') fputc('\\', f);
                    fputc(*p, f);
                }
            } else {
                if (c) fputs("  ", f);
                cli_cell(f, s, c + 1 < t->ncols || t->right[c] ? w[c] : 0, t->right[c]);
            }
        }
        fputs(md ? " |\n" : "\n", f);
        if (md && r == 0) {
            for (int c = 0; c < t->ncols; c++) fputs(t->right[c] ? "|---:" : "|---", f);
            fputs("|\n", f);
        }
    }
    free(w);
}

void cli_table_free(cli_table_t *t) {
    if (!t) return;
    for (int i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
}

void cli_fmt_count(char *out, size_t n, int64_t v) {
    if (v < 0) snprintf(out, n, "%s", "");
    else if (v >= 1000000) snprintf(out, n, "%.2fM", (double)v / 1e6);
    else if (v >= 1000) snprintf(out, n, "%.1fk", (double)v / 1e3);
    else snprintf(out, n, "%lld", (long long)v);
}

void cli_fmt_duration(char *out, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(out, n, "%s", "");
    else if (s < 60) snprintf(out, n, "%.0fs", s);
    else if (s < 3600) snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

int cli_latest_eval(store_t *st, int64_t run_id, store_eval_t *out) {
    store_eval_t *ev = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    int found = !store_evals_list(st, run_id, &ev, &n, &err) && n > 0;
    if (found) *out = ev[n - 1];  // (step, id) order: the last is the one runs_view joins
    free(ev);
    return found;
}

void cli_results_table(FILE *f, store_t *st, const store_run_t *runs, size_t n, int md) {
    static const char *const head[] = {"id", "run", "status", "method", "r", "targets", "trainable", "loss",
                                       "ROUGE-1 [95% interval]", "ROUGE-2", "ROUGE-L", "time"};
    static const int right[] = {1, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1};
    cli_table_t *t = cli_table_new(12, head, right);
    for (size_t i = 0; i < n; i++) {
        const store_run_t *r = &runs[i];
        char id[24], rk[24] = "", tr[24], tp[48] = "", loss[24] = "", r1[80] = "", r2[24] = "", rl[24] = "", tm[24];
        snprintf(id, sizeof id, "%lld", (long long)r->id);
        if (r->r >= 0) snprintf(rk, sizeof rk, "%lld", (long long)r->r);
        cli_fmt_count(tr, sizeof tr, r->trainable_params);
        if (*tr && !isnan(r->trainable_pct)) snprintf(tp, sizeof tp, "%s (%.2f%%)", tr, r->trainable_pct);
        else snprintf(tp, sizeof tp, "%s", tr);
        if (!isnan(r->final_loss)) snprintf(loss, sizeof loss, "%.4f", r->final_loss);
        store_eval_t ev;
        if (!isnan(r->rouge1)) {
            if (cli_latest_eval(st, r->id, &ev) && !isnan(ev.rouge1_low))
                snprintf(r1, sizeof r1, "%.3f [%.3f, %.3f]", r->rouge1, ev.rouge1_low, ev.rouge1_high);
            else snprintf(r1, sizeof r1, "%.3f", r->rouge1);
        }
        if (!isnan(r->rouge2)) snprintf(r2, sizeof r2, "%.3f", r->rouge2);
        if (!isnan(r->rougeL)) snprintf(rl, sizeof rl, "%.3f", r->rougeL);
        cli_fmt_duration(tm, sizeof tm, store_run_duration(r, store_now()));
        const char *cells[] = {id, r->name, r->status, r->method, rk, r->targets, tp, loss, r1, r2, rl, tm};
        cli_table_row(t, cells);
    }
    cli_table_print(f, t, md);
    cli_table_free(t);
}
