// How to switch adapters on one loaded base (engine/eval/tryout.h), measured: attached
// unmerged (TRYOUT_ATTACH) against merged into W and unmerged per request (TRYOUT_MERGE),
// both in one process and alternated round by round (the machine is shared: compare only
// figures of one run). For each: the time of a switch to another adapter, and of one
// request (B inputs of S source tokens, exactly N new tokens, greedy) with the base alone
// and with an adapter; then how far W drifts in fp32 after the merge/unmerge cycles.
// Not part of make test. Built with the pattern rule:
//   make -j2 build/tests/bench_tryout && build/tests/bench_tryout MODEL_DIR [rounds] [B] [S] [N] [r] [targets] [threads] [precision]
// (default 20 rounds, 1 input of 32 tokens, 32 new tokens, rank 8 on q,v; targets as
// comma-separated names, e.g. q,k,v,o,wi_0,wi_1,wo; 1 thread; fp32, or bf16 products). Two random adapters (both
// A and B drawn, so that merging changes W) are written to a temporary folder first.
// Times are process CPU time (see cpu_now).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "generate.h"
#include "lora.h"
#include "lora_t5.h"
#include "tryout.h"

// Process CPU time: with one thread (the default) the work itself, whatever else the
// shared machine runs; wall time would count the other programs' turns on the cores.
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what, const lb_err_t *err) {
    fprintf(stderr, "bench_tryout: %s: %s\n", what, err->msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_tryout MODEL_DIR [rounds] [B] [S] [N] [r] [targets]\n");
        return 2;
    }
    const char *dir = argv[1];
    int rounds = argc > 2 ? atoi(argv[2]) : 20, B = argc > 3 ? atoi(argv[3]) : 1, S = argc > 4 ? atoi(argv[4]) : 32,
        N = argc > 5 ? atoi(argv[5]) : 32, r = argc > 6 ? atoi(argv[6]) : 8;
    const char *targets = argc > 7 ? argv[7] : "q,v";
    int threads = argc > 8 ? atoi(argv[8]) : 1;
    int prec = argc > 9 ? t5_precision_parse(argv[9]) : T5_PRECISION_FP32;
    if (prec < 0) {
        fprintf(stderr, "bench_tryout: precision must be fp32, bf16 or auto, not '%s'\n", argv[9]);
        return 2;
    }
    lb_set_threads(threads > 0 ? threads : 1);
    lb_err_t err = {0};
    tryout_t ta, tm;
    if (tryout_open(&ta, dir, (t5_precision_t)prec, TRYOUT_ATTACH, &err)) die(dir, &err);
    if (tryout_open(&tm, dir, (t5_precision_t)prec, TRYOUT_MERGE, &err)) die(dir, &err);
    // two random adapters for this model
    char tmp[] = "/tmp/bench_tryout-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    for (int k = 0; k < 2; k++) {
        lora_config_t c;
        lora_config_default(&c);
        c.r = r;
        c.alpha = 2.0 * r;
        c.init = LORA_INIT_RANDOM_BOTH;
        c.n_targets = 0;
        char list[256];
        snprintf(list, sizeof list, "%s", targets);
        for (char *t = strtok(list, ","); t && c.n_targets < LORA_MAX_TARGETS; t = strtok(NULL, ","))
            snprintf(c.targets[c.n_targets++], sizeof c.targets[0], "%s", t);
        lora_shape_t sh;
        lora_shape_from_t5(&ta.base.cfg, &sh);
        lora_adapter_t ad;
        if (lora_create(&ad, &c, &sh, &err) || lora_init(&ad, 11 + k, NULL, NULL, &err)) die("adapter", &err);
        char path[300];
        snprintf(path, sizeof path, "%s/a%d", tmp, k);
        if (lora_save(&ad, path, &err)) die(path, &err);
        lora_free(&ad);
        if (tryout_add(&ta, path, &err) < 0 || tryout_add(&tm, path, &err) < 0) die(path, &err);
    }
    // a fixed request: token ids 5.. (no tokenizer needed), exactly N new tokens
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * S);
    for (int i = 0; i < B * S; i++) ids[i] = 5 + (i * 7919) % (ta.base.cfg.vocab_size - 10);
    for (int b = 0; b < B; b++) ids[(size_t)b * S + S - 1] = ta.base.cfg.eos_token_id;
    generate_opts_t o;
    generate_opts_default(&o);
    o.max_new_tokens = o.min_new_tokens = N;
    // per mode: switch times and request times with the base and with an adapter
    enum { NM = 2 };
    tryout_t *t[NM] = {&ta, &tm};
    const char *name[NM] = {"attach (unmerged)", "merge/unmerge"};
    double *sw[NM], *req_base[NM], *req_ad[NM];
    for (int m = 0; m < NM; m++) {
        sw[m] = calloc((size_t)rounds * 3, sizeof(double));
        req_base[m] = calloc((size_t)rounds, sizeof(double));
        req_ad[m] = calloc((size_t)rounds * 2, sizeof(double));
    }
    int same_ids = 1;
    for (int round = -1; round < rounds; round++) {  // round -1 warms up
        for (int k = 0; k < NM; k++) {
            int m = (round & 1) ? NM - 1 - k : k;  // alternate which mode goes first
            int32_t *first = NULL;
            for (int v = TRYOUT_VARIANT_BASE; v < 2; v++) {
                double c0 = cpu_now();
                const t5_model_t *mod = tryout_use(t[m], v, &err);
                if (!mod) die("switch", &err);
                double s = cpu_now() - c0;
                generate_result_t res;
                double t0 = cpu_now();
                if (generate_batch(mod, ids, NULL, B, S, &o, &res, &err)) die("generate", &err);
                double g = cpu_now() - t0;
                if (v == 0 && k == 0) {
                    first = malloc(sizeof(int32_t) * (size_t)res.B * res.L);
                    memcpy(first, res.ids, sizeof(int32_t) * (size_t)res.B * res.L);
                }
                generate_result_free(&res);
                if (round < 0) continue;
                sw[m][round * 3 + v + 1] = s;
                if (v == TRYOUT_VARIANT_BASE) req_base[m][round] = g;
                else req_ad[m][round * 2 + v] = g;
            }
            free(first);
        }
    }
    printf("model %s: %d rounds, request of %d input(s) x %d tokens, %d new tokens; adapters r=%d on %s; %d thread(s), %s, CPU time\n",
           dir, rounds, B, S, N, r, targets, threads, t5_precision_name(ta.used));
    printf("%-20s %16s %16s %16s\n", "mode (medians)", "switch", "request base", "request adapter");
    for (int m = 0; m < NM; m++)
        printf("%-20s %13.3f ms %13.2f ms %13.2f ms\n", name[m], median(sw[m], rounds * 3) * 1e3,
               median(req_base[m], rounds) * 1e3, median(req_ad[m], rounds * 2) * 1e3);
    // W after rounds·3 merge/unmerge cycles against the untouched base
    if (!tryout_use(&tm, TRYOUT_VARIANT_BASE, &err)) die("switch", &err);
    double maxabs = 0, maxw = 0;
    int skipped = 0;  // held in bf16 on one side (merging converts a W back to fp32)
    for (int i = 0; i < ta.base.n_params; i++) {
        const lb_param_t *p = &ta.base.params[i], *q = &tm.base.params[i];
        if (!p->w || !q->w) {
            skipped++;
            continue;
        }
        for (size_t j = 0; j < p->numel; j++) {
            double d = fabs((double)p->w[j] - q->w[j]);
            if (d > maxabs) maxabs = d;
            if (fabs(p->w[j]) > maxw) maxw = fabs(p->w[j]);
        }
    }
    generate_result_t x, y;
    const t5_model_t *ma = tryout_use(&ta, TRYOUT_VARIANT_BASE, &err), *mm = tryout_use(&tm, TRYOUT_VARIANT_BASE, &err);
    o.min_new_tokens = 0;
    if (generate_batch(ma, ids, NULL, B, S, &o, &x, &err) || generate_batch(mm, ids, NULL, B, S, &o, &y, &err))
        die("generate", &err);
    same_ids = x.L == y.L && !memcmp(x.ids, y.ids, sizeof(int32_t) * (size_t)x.B * x.L);
    printf("drift of W after %d merge/unmerge cycles: max |ΔW| %.3g (max |W| %.3g; %d tensors held in bf16 not compared); base output %s\n",
           rounds * 3, maxabs, maxw, skipped, same_ids ? "unchanged" : "CHANGED");
    generate_result_free(&x);
    generate_result_free(&y);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmp);
    tryout_free(&ta);
    tryout_free(&tm);
    free(ids);
    for (int m = 0; m < NM; m++) {
        free(sw[m]);
        free(req_base[m]);
        free(req_ad[m]);
    }
    return 0;
}
