// `lorabench bench --generate`: decoding speed (greedy and beam search, as evaluation runs
// them) on a FLAN-T5 shape with random weights or a checkpoint. </s> is banned until the
// last position (min_new_tokens = max_new_tokens), so every row generates exactly the
// asked number of tokens and runs of different weights or precisions do the same work.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "generate.h"
#include "linear.h"
#include "t5.h"
#include "t5_init.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench bench --generate [--shape flan-t5-small|flan-t5-base|DIR] [--batch B]\n"
            "                       [--src S] [--new N] [--beams LIST] [--rounds N] [--warmup W] [--threads N]\n"
            "                       [--precision fp32|bf16|auto] [--bf16-weights] [--json]\n\n"
            "Decodes B random inputs of S tokens (no padding) for exactly N new tokens (</s> banned\n"
            "until then) with each beam count of LIST in turn, repeated for --rounds rounds\n"
            "(interleaved: greedy, beams, greedy, ...), after W warm-up rounds (default 1; 0 on a busy\n"
            "machine where each round costs minutes), and prints per beam count:\n"
            "  tokens/s     B·N / decode time: output tokens per second (a beam search computes\n"
            "               num_beams rows per output token)\n"
            "  ms/step      decode time / N: one decoder step of all B·num_beams rows\n"
            "  encoder s    the encoder and the cross-attention keys/values of one batch\n"
            "  RSS          peak resident memory of the process\n"
            "Medians over the rounds. Defaults: flan-t5-small, batch 8, source 256, 64 new tokens,\n"
            "beams 1,4, 3 rounds, 2 threads, precision fp32 (the reference; bf16 packs the weights\n"
            "for bf16 products, auto picks bf16 where the CPU has AMX). --bf16-weights holds the\n"
            "frozen linear weights in bf16 storage (converted to fp32 block by block in each\n"
            "product). --json prints one line per beam count.\n");
}

typedef struct {
    const char *shape;
    int B, S, N, rounds, warmup, threads, bf16_weights, json;
    int beams[8], n_beams;
    t5_precision_t precision;
} gen_opts_t;

static int fail(const char *msg) {
    fprintf(stderr, "lorabench bench --generate: %s\n", msg);
    return 1;
}

static int parse_beams(gen_opts_t *o, const char *s) {
    o->n_beams = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > 64 || o->n_beams == 8) return -1;
        o->beams[o->n_beams++] = (int)x;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return o->n_beams ? 0 : -1;
}

// The model of the shape (random weights drawn as `bench` draws them) or of the folder.
static int load_model(const gen_opts_t *o, const char *small_json, const char *base_json, t5_model_t *m,
                      lb_err_t *err) {
    int named = !strcmp(o->shape, "flan-t5-small") || !strcmp(o->shape, "flan-t5-base");
    if (!named) return o->bf16_weights ? t5_load_bf16(m, o->shape, err) : t5_load(m, o->shape, err);
    t5_config_t cfg;
    if (t5_config_parse(&cfg, !strcmp(o->shape, "flan-t5-small") ? small_json : base_json, o->shape, err) ||
        t5_init_empty(m, &cfg, err))
        return -1;
    t5_set_trainable(m, NULL, NULL);
    if (o->bf16_weights && t5_frozen_weights_bf16(m, err)) {
        t5_free(m);
        return -1;
    }
    t5_init_random(m, 1);
    return 0;
}

int bench_generate(int argc, char **argv, const char *small_json, const char *base_json) {
    gen_opts_t o = {"flan-t5-small", 8, 256, 64, 3, 1, 2, 0, 0, {1, 4}, 2, T5_PRECISION_FP32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--generate")) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--bf16-weights")) {
            o.bf16_weights = 1;
        } else if (!strcmp(a, "--shape") || !strcmp(a, "--precision") || !strcmp(a, "--beams")) {
            if (!v) {
                fprintf(stderr, "lorabench bench --generate: %s needs a value; see --generate --help\n", a);
                return 2;
            }
            if (!strcmp(a, "--shape")) {
                o.shape = v;
            } else if (!strcmp(a, "--beams")) {
                if (parse_beams(&o, v)) {
                    fprintf(stderr, "lorabench bench --generate: --beams takes up to 8 counts from 1 to 64 such as 1,4, not '%s'\n", v);
                    return 2;
                }
            } else {
                int p = t5_precision_parse(v);
                if (p < 0) {
                    fprintf(stderr, "lorabench bench --generate: --precision must be auto, fp32 or bf16, not '%s'\n", v);
                    return 2;
                }
                o.precision = (t5_precision_t)p;
            }
            i++;
        } else if (!strcmp(a, "--batch") || !strcmp(a, "--src") || !strcmp(a, "--new") ||
                   !strcmp(a, "--rounds") || !strcmp(a, "--warmup") || !strcmp(a, "--threads")) {
            char *end = NULL;
            long x = v ? strtol(v, &end, 10) : 0;
            int min = !strcmp(a, "--warmup") ? 0 : 1;
            if (!v || *end || end == v || x < min || x > 100000) {
                fprintf(stderr, "lorabench bench --generate: %s expects an integer from %d to 100000, not '%s'\n", a, min, v ? v : "");
                return 2;
            }
            int *dst = !strcmp(a, "--batch") ? &o.B : !strcmp(a, "--src") ? &o.S : !strcmp(a, "--new") ? &o.N
                     : !strcmp(a, "--rounds") ? &o.rounds : !strcmp(a, "--warmup") ? &o.warmup : &o.threads;
            *dst = (int)x;
            i++;
        } else {
            fprintf(stderr, "lorabench bench --generate: unknown option '%s'; see --generate --help\n", a);
            return 2;
        }
    }
    lb_set_threads(o.threads);
    lb_err_t err = {0};
    t5_model_t m;
    if (load_model(&o, small_json, base_json, &m, &err)) return fail(err.msg);
    int rc = 1;
    int32_t *ids = NULL;
    double *dec = NULL, *enc = NULL;
    t5_precision_t used;
    if (t5_set_precision(&m, o.precision, &used, &err)) {
        fail(err.msg);
        goto out;
    }
    const t5_config_t *c = &m.cfg;
    // a deterministic batch over the vocabulary without the special ids 0..2
    ids = xmalloc(sizeof(int32_t) * (size_t)o.B * o.S);
    uint64_t st = 12345;
    for (int i = 0; i < o.B * o.S; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 3 + (int32_t)((st >> 33) % (uint64_t)(c->vocab_size - 3));
    }
    int nr = o.rounds;
    dec = xcalloc((size_t)o.n_beams * nr, sizeof(double));
    enc = xcalloc((size_t)o.n_beams * nr, sizeof(double));
    for (int round = -o.warmup; round < nr; round++) {  // rounds below 0 warm up
        for (int k = 0; k < o.n_beams; k++) {
            generate_opts_t go;
            generate_opts_default(&go);
            go.num_beams = o.beams[k];
            go.max_new_tokens = go.min_new_tokens = o.N;
            generate_result_t gr;
            if (generate_batch(&m, ids, NULL, o.B, o.S, &go, &gr, &err)) {
                fail(err.msg);
                goto out;
            }
            int fixed = gr.L == 1 + o.N;
            for (int b = 0; b < o.B && fixed; b++) fixed = gr.n_new[b] == o.N;
            if (round >= 0) {
                dec[(size_t)k * nr + round] = gr.decode_s;
                enc[(size_t)k * nr + round] = gr.encode_s;
            }
            generate_result_free(&gr);
            if (!fixed) {
                fail("a row did not generate the asked number of tokens; this is a bug in the bench");
                goto out;
            }
        }
    }
    double rss = (double)lb_peak_rss() / (1024.0 * 1024.0);
    if (!o.json)
        printf("generation, %s, batch %d, source %d, %d new tokens, precision %s (%s), weights %s, %d thread%s, median of %d\n"
               "%-6s %10s %9s %10s %8s\n",
               o.shape, o.B, o.S, o.N, t5_precision_name(used), t5_kernel_path(&m), o.bf16_weights ? "bf16" : "fp32",
               o.threads, o.threads == 1 ? "" : "s", nr, "beams", "tokens/s", "ms/step", "encoder s", "RSS MB");
    for (int k = 0; k < o.n_beams; k++) {
        double d = lb_median(dec + (size_t)k * nr, (size_t)nr), e = lb_median(enc + (size_t)k * nr, (size_t)nr);
        double tps = (double)o.B * o.N / d, ms = 1e3 * d / o.N;
        if (o.json)
            printf("{\"impl\":\"lorabench\",\"config\":\"generate\",\"shape\":\"%s\",\"batch\":%d,\"src\":%d,"
                   "\"new_tokens\":%d,\"num_beams\":%d,\"threads\":%d,\"rounds\":%d,\"tokens_per_s\":%.1f,"
                   "\"ms_per_step\":%.2f,\"decode_s\":%.4f,\"encode_s\":%.4f,\"peak_rss_mb\":%.0f,"
                   "\"frozen_weights\":\"%s\",\"precision\":\"%s\",\"kernel\":\"%s\"}\n",
                   o.shape, o.B, o.S, o.N, o.beams[k], o.threads, nr, tps, ms, d, e, rss,
                   o.bf16_weights ? "bf16" : "fp32", t5_precision_name(used), t5_kernel_path(&m));
        else
            printf("%-6d %10.1f %9.2f %10.3f %8.0f\n", o.beams[k], tps, ms, e, rss);
    }
    rc = 0;
out:
    free(ids);
    free(dec);
    free(enc);
    t5_free(&m);
    return rc;
}
