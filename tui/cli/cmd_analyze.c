// analyze: what an adapter or a fine-tune learned — the singular values of each module's
// weight change ΔW, its size against W, its effective rank, the energy a rank-r
// approximation keeps, and the subspace similarity φ of two adapters (engine/eval/analyze.h;
// the folders and runs are loaded by experiments/run/analysis.c, as in the workbench).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "analyze.h"
#include "cli.h"
#include "cli_common.h"
#include "linear.h"

// Singular values shown per module in the text table (all of them are in --json).
#define SHOW_SV 8

static void print_modules(const analyze_result_t *r) {
    printf("%s: ΔW = %s, per module\n", r->full ? "full fine-tune" : "LoRA adapter",
           r->full ? "W_finetuned − W_base" : "s·B·A");
    printf("%-44s ", "module");
    cli_cell(stdout, "shape", 11, 1);
    printf(" %5s ", "rank");
    cli_cell(stdout, "‖ΔW‖/‖W‖", 10, 1);
    printf("  singular values (largest first)\n");
    for (int i = 0; i < r->n; i++) {
        const analyze_module_t *m = &r->m[i];
        char shape[32], rel[32];
        snprintf(shape, sizeof shape, "%d×%d", m->out, m->in);
        if (isfinite(m->rel_norm)) snprintf(rel, sizeof rel, "%.4g", m->rel_norm);
        else snprintf(rel, sizeof rel, "%s", CLI_MISSING);
        printf("%-44s ", m->name);
        cli_cell(stdout, shape, 11, 1);
        printf(" %5d ", m->effective_rank);
        cli_cell(stdout, rel, 10, 1);
        printf(" ");
        for (int j = 0; j < m->n_sv && j < SHOW_SV; j++) printf(" %.4g", m->sv[j]);
        if (m->n_sv > SHOW_SV) printf(" … (%d in all)", m->n_sv);
        printf("\n");
    }
    printf("\nrank: singular values above %g of the largest (effective rank)\n", ANALYZE_RANK_TOL);
    if (!r->full) return;
    printf("\nshare of ‖ΔW‖² kept by the best rank-r approximation\n%-44s", "module");
    for (int k = 0; k < ANALYZE_N_ENERGY; k++) printf(" %6s%-2d", "r=", analyze_energy_rank(k));
    printf("\n");
    for (int i = 0; i < r->n; i++) {
        printf("%-44s", r->m[i].name);
        for (int k = 0; k < ANALYZE_N_ENERGY; k++) printf(" %8.4f", r->m[i].energy[k]);
        printf("\n");
    }
}

static void print_similarity(const analyze_sim_t *s, int n) {
    printf("\nsubspace similarity φ(i, j) = ‖U_iᵀ V_j‖²_F / min(i, j) of the right singular vectors of A\n"
           "(rows i: this adapter's top-i, columns j: the other's top-j; 1 = the same subspace)\n");
    if (n == 0) printf("no module is adapted by both\n");
    for (int m = 0; m < n; m++) {
        printf("\n%s\n     ", s[m].name);
        for (int j = 1; j <= s[m].n; j++) printf(" %5d", j);
        printf("\n");
        for (int i = 1; i <= s[m].n; i++) {
            printf("%5d", i);
            for (int j = 1; j <= s[m].n; j++) printf(" %5.3f", s[m].phi[(size_t)(i - 1) * s[m].n + (j - 1)]);
            printf("\n");
        }
    }
}

int cmd_analyze(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *against = NULL, *finetuned = NULL, *ws = NULL;
    const char *run_arg = NULL, *against_run_arg = NULL;
    int json = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            printf("usage: lorabench analyze --model BASE --adapter DIR [--against DIR] [--json]\n"
                   "       lorabench analyze --model BASE --finetuned DIR [--json]\n"
                   "       lorabench analyze [--workspace DIR] --run ID [--against-run ID] [--json]\n"
                   "       (each also takes --threads N: LAPACK's threads; default: every core)\n\n"
                   "What an adapter or a fine-tune learned, per linear module: the singular values of the\n"
                   "weight change ΔW (s·B·A for LoRA, s = alpha/r or alpha/sqrt(r) with rsLoRA; W_finetuned\n"
                   "− W_base for a full fine-tune), ‖ΔW‖_F / ‖W‖_F, the effective rank (singular values\n"
                   "above 1%% of the largest) and the share of ‖ΔW‖²_F that the best rank-r approximation\n"
                   "keeps (r = 1, 2, 4 ... 64). --against (or --against-run) adds the LoRA paper's\n"
                   "subspace similarity φ(i, j) of the two adapters' A matrices per shared module.\n"
                   "--run analyses a run of the workspace (its base model and adapter/ or model/ come\n"
                   "from the store) and caches the result in runs/<id>/analysis.json, as the workbench's\n"
                   "Analysis screen does. SVDs in double precision (LAPACK).\n");
            return 0;
        }
        if (!v && a[0] == '-' && strcmp(a, "--json")) {
            fprintf(stderr, "lorabench analyze: %s needs a value; see --help\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--adapter")) adapter = argv[++i];
        else if (!strcmp(a, "--against")) against = argv[++i];
        else if (!strcmp(a, "--finetuned")) finetuned = argv[++i];
        else if (!strcmp(a, "--workspace")) ws = argv[++i];
        else if (!strcmp(a, "--run")) run_arg = argv[++i];
        else if (!strcmp(a, "--against-run")) against_run_arg = argv[++i];
        else if (!strcmp(a, "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--json")) json = 1;
        else {
            fprintf(stderr, "lorabench analyze: unknown argument %s; see --help\n", a);
            return 2;
        }
    }
    int by_run = run_arg != NULL;
    if (by_run ? (model || adapter || finetuned || against)
               : (!model || !!adapter == !!finetuned || against_run_arg || ws)) {
        fprintf(stderr, "lorabench analyze: give --model BASE with one of --adapter DIR or --finetuned DIR, "
                "or --run ID (with --workspace DIR); see --help\n");
        return 2;
    }
    if (against && !adapter) {
        fprintf(stderr, "lorabench analyze: --against compares two adapters; use it with --adapter\n");
        return 2;
    }
    lb_set_threads(threads);
    lb_err_t err = {0};
    analyze_result_t r;
    analyze_sim_t *sim = NULL;
    int nsim = 0, rc = 1, have = 0, want_sim = against || against_run_arg;
    store_t *st = NULL;
    char *wsdir = NULL;
    if (by_run) {
        int64_t id, id2 = 0;
        if (cli_parse_id(run_arg, &id) || (against_run_arg && cli_parse_id(against_run_arg, &id2))) return 2;
        if (cli_open_store(ws, &wsdir, &st)) return 1;
        int cached = 0;
        char cache[4200];
        if (analysis_of_run(st, wsdir, id, &r, &cached, cache, sizeof cache, &err)) goto out;
        have = 1;
        fprintf(stderr, "%s %s\n", cached ? "read from" : "computed and cached in", cache);  // stdout stays JSON
        if (against_run_arg && analysis_runs_similarity(st, wsdir, id, id2, &sim, &nsim, &err)) goto out;
    } else {
        if (adapter ? analysis_adapter(model, adapter, &r, &err) : analysis_finetuned(model, finetuned, &r, &err))
            goto out;
        have = 1;
        if (against && analysis_adapters_similarity(model, adapter, against, &sim, &nsim, &err)) goto out;
    }
    if (json) {
        char *text = analyze_to_json(&r, want_sim ? sim : NULL, nsim, NULL);
        printf("%s\n", text);
        free(text);
    } else {
        print_modules(&r);
        if (want_sim) print_similarity(sim, nsim);
    }
    rc = 0;
out:
    if (rc) fprintf(stderr, "lorabench analyze: %s\n", err.msg);
    if (have) analyze_result_free(&r);
    analyze_sim_free(sim, nsim);
    if (st) store_close(st);
    free(wsdir);
    return rc;
}
