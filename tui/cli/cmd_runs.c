// runs, show, compare, export and rm: browsing the stored history.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"
#include "cli_common.h"
#include "store.h"
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
    fputs(",\"error\":", f);
    cli_json_string(f, r->error);
    fputc('}', f);
}

static void fmt_num(char *out, size_t n, double v, const char *fmt) {
    if (isnan(v)) snprintf(out, n, "-");
    else snprintf(out, n, fmt, v);
}

static void fmt_count(char *out, size_t n, int64_t v) {
    if (v < 0) snprintf(out, n, "-");
    else if (v >= 1000000) snprintf(out, n, "%.2fM", v / 1e6);
    else if (v >= 1000) snprintf(out, n, "%.1fk", v / 1e3);
    else snprintf(out, n, "%lld", (long long)v);
}

int cmd_runs(int argc, char **argv) {
    const char *ws = NULL, *sort = NULL, *filter = NULL;
    int desc = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench runs [--sort KEY] [--desc] [--filter EXPR] [--json] [--workspace DIR]\n\n"
                   "Lists the stored runs. EXPR is a conjunction like 'method=lora r>=8 rouge1>0.3 name~qv'\n"
                   "(OP: = != < <= > >= ~). Keys: %s.\n", store_run_keys());
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
    if (cli_open_store(ws, NULL, &st)) return 1;
    lb_err_t err = {0};
    store_mark_stale_interrupted(st, store_now(), LB_STALE_SECONDS, NULL, NULL, NULL, &err);
    store_run_t *runs;
    size_t n;
    if (store_runs_list(st, sort, desc, filter, &runs, &n, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        store_close(st);
        return 1;
    }
    if (json) {
        putchar('[');
        for (size_t i = 0; i < n; i++) {
            if (i) putchar(',');
            run_json(stdout, &runs[i]);
        }
        printf("]\n");
    } else {
        printf("%4s  %-22s %-11s %-7s %4s %5s %-8s %9s %7s %7s %7s %7s %8s\n", "id", "name", "status", "method", "r",
               "alpha", "targets", "trainable", "steps", "loss", "R-1", "R-L", "tok/s");
        for (size_t i = 0; i < n; i++) {
            const store_run_t *r = &runs[i];
            char rs[24], al[24], tr[24], loss[24], r1[24], rl[24], tps[24], steps[24];
            fmt_num(rs, sizeof rs, r->r < 0 ? NAN : (double)r->r, "%.0f");
            fmt_num(al, sizeof al, r->alpha, "%g");
            fmt_count(tr, sizeof tr, r->trainable_params);
            fmt_num(loss, sizeof loss, r->final_loss, "%.4f");
            fmt_num(r1, sizeof r1, r->rouge1, "%.4f");
            fmt_num(rl, sizeof rl, r->rougeL, "%.4f");
            fmt_num(tps, sizeof tps, r->tokens_per_s, "%.0f");
            snprintf(steps, sizeof steps, "%lld", (long long)(r->step < 0 ? 0 : r->step));
            printf("%4lld%s%-22.22s %-11s %-7s %4s %5s %-8.8s %9s %7s %7s %7s %7s %8s\n", (long long)r->id,
                   r->pinned ? "*" : " ", r->name, r->status, r->method, rs, al, r->targets ? r->targets : "-", tr,
                   steps, loss, r1, rl, tps);
        }
    }
    store_runs_free(runs, n);
    store_close(st);
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
    if (cli_open_store(ws, NULL, &st)) return 1;
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
        fmt_count(tr, sizeof tr, r.trainable_params);
        fmt_count(tot, sizeof tot, r.total_params);
        printf("run %lld  %s\n  status   %s%s%s\n  method   %s", (long long)r.id, r.name, r.status, r.error ? " — " : "",
               r.error ? r.error : "", r.method);
        if (r.r > 0) printf("  r=%lld alpha=%g targets=%s", (long long)r.r, r.alpha, r.targets ? r.targets : "");
        printf("\n  params   %s trainable of %s (%.4f%%)\n  steps    %lld/%lld", tr, tot, r.trainable_pct, (long long)r.step,
               (long long)r.total_steps);
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

// Flattens a spec JSON object into "a.b" = value pairs, for side-by-side configs.
static void flatten(cJSON *o, const char *prefix, char keys[][64], char vals[][128], int *n, int max) {
    for (cJSON *it = o ? o->child : NULL; it && *n < max; it = it->next) {
        char k[64];
        snprintf(k, sizeof k, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        if (cJSON_IsObject(it) && strcmp(it->string, "grid")) {
            flatten(it, k, keys, vals, n, max);
        } else {
            char *v = cJSON_PrintUnformatted(it);
            snprintf(keys[*n], 64, "%s", k);
            snprintf(vals[*n], 128, "%s", v);
            cJSON_free(v);
            (*n)++;
        }
    }
}

enum { CMP_MAX_KEYS = 160 };

int cmd_compare(int argc, char **argv) {
    const char *ws = NULL, *format = "table";
    int diff_only = 0, n_ids = 0;
    int64_t ids[32];
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench compare ID ID... [--diff-only] [--format table|markdown|csv|json] [--workspace DIR]\n\n"
                   "Configs side by side (--diff-only: only what differs), then metrics with the change\n"
                   "against the first run.\n");
            return 0;
        } else if (!strcmp(argv[i], "--diff-only")) diff_only = 1;
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (n_ids < 32) {
            if (cli_parse_id(argv[i], &ids[n_ids++])) return 2;
        }
    }
    if (n_ids < 2) {
        fprintf(stderr, "lorabench compare: give two or more run ids\n");
        return 2;
    }
    if (strcmp(format, "table") && strcmp(format, "markdown") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "lorabench compare: --format must be table, markdown, csv or json\n");
        return 2;
    }
    store_t *st;
    if (cli_open_store(ws, NULL, &st)) return 1;
    store_run_t *runs = xcalloc((size_t)n_ids, sizeof(store_run_t));
    lb_err_t err = {0};
    for (int i = 0; i < n_ids; i++)
        if (store_run_get(st, ids[i], &runs[i], &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            for (int j = 0; j < i; j++) store_run_clear(&runs[j]);
            free(runs);
            store_close(st);
            return 1;
        }
    if (!strcmp(format, "json")) {
        putchar('[');
        for (int i = 0; i < n_ids; i++) {
            if (i) putchar(',');
            run_json(stdout, &runs[i]);
        }
        printf("]\n");
    } else {
        // Rows: config keys (flattened specs), then metrics.
        static char keys[CMP_MAX_KEYS][64], vals[32][CMP_MAX_KEYS][128];
        int nk[32] = {0};
        for (int i = 0; i < n_ids; i++) {
            cJSON *j = cJSON_Parse(runs[i].spec);
            nk[i] = 0;
            flatten(j, "", keys, vals[i], &nk[i], CMP_MAX_KEYS);
            cJSON_Delete(j);
        }
        int md = !strcmp(format, "markdown"), csv = !strcmp(format, "csv");
        const char *sep = csv ? "," : md ? " | " : "  ";
        if (md) printf("| ");
        printf(csv || md ? "%s" : "%-26s", "field");
        for (int i = 0; i < n_ids; i++) {
            char h[48];
            snprintf(h, sizeof h, "#%lld %s", (long long)runs[i].id, runs[i].name);
            printf(csv || md ? "%s%s" : "%s%-24.24s", sep, h);
        }
        printf(md ? " |\n" : "\n");
        if (md) {
            printf("|---");
            for (int i = 0; i < n_ids; i++) printf("|---");
            printf("|\n");
        }
        for (int k = 0; k < nk[0]; k++) {
            int differs = 0;
            for (int i = 1; i < n_ids; i++) differs |= k >= nk[i] || strcmp(vals[i][k], vals[0][k]);
            if (diff_only && !differs) continue;
            if (md) printf("| ");
            printf(csv || md ? "%s" : "%-26.26s", keys[k]);
            for (int i = 0; i < n_ids; i++) printf(csv || md ? "%s%s" : "%s%-24.24s", sep, k < nk[i] ? vals[i][k] : "");
            printf(md ? " |\n" : "\n");
        }
        struct {
            const char *name;
            size_t off;
        } metrics[] = {{"final loss", offsetof(store_run_t, final_loss)}, {"rouge1", offsetof(store_run_t, rouge1)},
                       {"rouge2", offsetof(store_run_t, rouge2)},         {"rougeL", offsetof(store_run_t, rougeL)},
                       {"rougeLsum", offsetof(store_run_t, rougeLsum)},   {"tokens/s", offsetof(store_run_t, tokens_per_s)},
                       {"peak RSS MB", offsetof(store_run_t, peak_rss_mb)}, {"trainable %", offsetof(store_run_t, trainable_pct)}};
        for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
            if (md) printf("| ");
            printf(csv || md ? "%s" : "%-26s", metrics[m].name);
            double base = *(double *)((char *)&runs[0] + metrics[m].off);
            for (int i = 0; i < n_ids; i++) {
                double v = *(double *)((char *)&runs[i] + metrics[m].off);
                char cell[64];
                if (isnan(v)) snprintf(cell, sizeof cell, "-");
                else if (i == 0 || isnan(base) || csv) snprintf(cell, sizeof cell, "%.4f", v);
                else snprintf(cell, sizeof cell, "%.4f (%+.4f)", v, v - base);
                printf(csv || md ? "%s%s" : "%s%-24.24s", sep, cell);
            }
            printf(md ? " |\n" : "\n");
        }
        // what the products ran in (train.precision "auto" resolved by the worker)
        if (md) printf("| ");
        printf(csv || md ? "%s" : "%-26s", "precision used");
        for (int i = 0; i < n_ids; i++)
            printf(csv || md ? "%s%s" : "%s%-24.24s", sep, runs[i].precision ? runs[i].precision : "-");
        printf(md ? " |\n" : "\n");
    }
    for (int i = 0; i < n_ids; i++) store_run_clear(&runs[i]);
    free(runs);
    store_close(st);
    return 0;
}

static void csv_field(FILE *f, const char *s) {
    if (!s) return;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int cmd_export(int argc, char **argv) {
    const char *ws = NULL, *what = "runs", *format = "csv", *run_list = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench export [--runs ID,ID...] --what runs|metrics|evals|samples --format csv|json "
                   "[--workspace DIR]\n\nWrites the stored rows to standard output.\n");
            return 0;
        } else if (!strcmp(argv[i], "--what") && i + 1 < argc) what = argv[++i];
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) run_list = argv[++i];
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else {
            fprintf(stderr, "lorabench export: unknown argument %s; see --help\n", argv[i]);
            return 2;
        }
    }
    int json = !strcmp(format, "json");
    if (!json && strcmp(format, "csv")) {
        fprintf(stderr, "lorabench export: --format must be csv or json\n");
        return 2;
    }
    if (strcmp(what, "runs") && strcmp(what, "metrics") && strcmp(what, "evals") && strcmp(what, "samples")) {
        fprintf(stderr, "lorabench export: --what must be runs, metrics, evals or samples\n");
        return 2;
    }
    store_t *st;
    if (cli_open_store(ws, NULL, &st)) return 1;
    lb_err_t err = {0};
    store_run_t *runs;
    size_t n;
    if (store_runs_list(st, "id", 0, NULL, &runs, &n, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        store_close(st);
        return 1;
    }
    int first = 1;
    if (json) putchar('[');
    if (!json) {
        if (!strcmp(what, "runs")) printf("id,name,status,method,r,alpha,targets,trainable,steps,loss,rouge1,rouge2,rougeL,rougeLsum,tokens_per_s,peak_rss_mb\n");
        else if (!strcmp(what, "metrics")) printf("run,step,epoch,loss,lr,grad_norm,tokens_per_s,step_ms,rss_mb,tokens,wall_s\n");
        else if (!strcmp(what, "evals")) printf("run,eval,step,split,n,rouge1,rouge1_low,rouge1_high,rouge2,rougeL,rougeLsum\n");
        else printf("run,eval,idx,reference,prediction,rouge1,rouge2,rougeL\n");
    }
    for (size_t i = 0; i < n; i++) {
        const store_run_t *r = &runs[i];
        if (run_list) {
            char idb[24];
            snprintf(idb, sizeof idb, "%lld", (long long)r->id);
            int hit = 0;
            const char *p = run_list;
            while (*p) {
                size_t l = strcspn(p, ",");
                if (l == strlen(idb) && !strncmp(p, idb, l)) hit = 1;
                p += l + (p[l] == ',');
            }
            if (!hit) continue;
        }
        if (!strcmp(what, "runs")) {
            if (json) {
                if (!first) putchar(',');
                run_json(stdout, r);
            } else {
                printf("%lld,", (long long)r->id);
                csv_field(stdout, r->name);
                printf(",%s,%s,%lld,%g,", r->status, r->method, (long long)r->r, r->alpha);
                csv_field(stdout, r->targets);
                printf(",%lld,%lld,%g,%g,%g,%g,%g,%g,%g\n", (long long)r->trainable_params, (long long)r->step,
                       r->final_loss, r->rouge1, r->rouge2, r->rougeL, r->rougeLsum, r->tokens_per_s, r->peak_rss_mb);
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
                    printf("%lld,%lld,%g,%g,%g,%g,%g,%g,%g,%lld,%g\n", (long long)r->id, (long long)m[k].step, m[k].epoch,
                           m[k].loss, m[k].lr, m[k].grad_norm, m[k].tokens_per_s, m[k].step_ms, m[k].rss_mb,
                           (long long)m[k].tokens, m[k].wall_s);
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
                        printf("%lld,%lld,%lld,%s,%lld,%g,%g,%g,%g,%g,%g\n", (long long)r->id, (long long)ev[k].id,
                               (long long)ev[k].step, ev[k].split, (long long)ev[k].n, ev[k].rouge1, ev[k].rouge1_low,
                               ev[k].rouge1_high, ev[k].rouge2, ev[k].rougeL, ev[k].rougeLsum);
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
                            csv_field(stdout, s[q].reference);
                            putchar(',');
                            csv_field(stdout, s[q].prediction);
                            printf(",%g,%g,%g\n", s[q].rouge1, s[q].rouge2, s[q].rougeL);
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
    store_runs_free(runs, n);
    store_close(st);
    return 0;
}

int cmd_rm(int argc, char **argv) {
    const char *ws = NULL;
    int64_t id = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench rm ID [--workspace DIR]\n\nDeletes a run: its rows (metrics, evals, samples, "
                   "artifacts) and its folder runs/<id>/. A running run must be cancelled first.\n");
            return 0;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (cli_parse_id(argv[i], &id)) return 2;
    }
    if (!id) {
        fprintf(stderr, "lorabench rm: give the run id\n");
        return 2;
    }
    char *wsdir;
    store_t *st;
    if (cli_open_store(ws, &wsdir, &st)) return 1;
    lb_err_t err = {0};
    store_run_t r;
    int rc = 1;
    if (store_run_get(st, id, &r, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
    } else {
        if (store_status_parse(r.status) == STORE_RUN_RUNNING && r.pid > 0 && store_pid_alive(r.pid, NULL))
            fprintf(stderr, "lorabench: run %lld is running (worker %lld); cancel it first with 'lorabench cancel %lld'\n",
                    (long long)id, (long long)r.pid, (long long)id);
        else if (store_run_delete(st, id, &err) || store_run_dir_remove(wsdir, id, &err))
            fprintf(stderr, "lorabench: %s\n", err.msg);
        else {
            printf("run %lld deleted\n", (long long)id);
            rc = 0;
        }
        store_run_clear(&r);
    }
    store_close(st);
    free(wsdir);
    return rc;
}
