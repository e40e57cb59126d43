// Microbenchmark of T5's kernels (t5_ops.h) on the FLAN-T5-small bench shapes (batch 8,
// source 256, target 64, d_model 512, 8 heads of 64, d_ff 1024, vocabulary 32128,
// dropout 0.1): the attention core forward and backward of the encoder's self attention
// (bias, padding mask), the decoder's cross and causal self attention, RMS norm, gated
// gelu_new, the residual's dropout and add, cross entropy. Not part of make test; each
// figure is the best of the reps (the machine is shared: compare two builds by running
// their binaries alternately, never numbers of different times). Built against a
// library by hand, e.g.
//   cc -O2 -std=c11 -D_GNU_SOURCE -Iengine/core -Iengine/kernels -Iengine/model -Iengine/files
//      -I/usr/include/x86_64-linux-gnu/openblas-pthread/ tests/bench_ops.c build/libengine.a
//      -L/usr/lib/x86_64-linux-gnu/openblas-pthread/ -lopenblas -ldnnl -lgomp -lm -pthread
//      -o build/bench_ops
//   build/bench_ops [threads] [reps]          (default 2 threads, 7 reps)
// -DNO_FUSED builds it against a library without the fused calls (drop_add_range,
// drop_copy_p, act_*_drop_p): the same work then runs as separate calls, as t5.c made them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm_bf16.h"
#include "t5_ops.h"

// With one thread the figures are the thread's CPU time (robust to the machine's other
// load taking the core away); with more, wall time.
static int cpu_clock;
static double now(void) {
    struct timespec t;
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *randv(size_t n, float scale) {
    float *v = malloc(sizeof(float) * n);
    uint64_t s = 12345 + n;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = ((float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f) * scale;
    }
    return v;
}

typedef struct {
    lb_real *x_out;
    const lb_real *x;
    lb_real *o;
    const lb_drop_t *drop;
    uint64_t site;
    float p;
} add_job_t;

static void add_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const add_job_t *j = ctx;
#ifdef NO_FUSED
    lb_dropout_apply_at(j->o + lo, (size_t)(hi - lo), j->drop, j->site, (uint64_t)lo, j->p);
    for (long i = lo; i < hi; i++) j->x_out[i] = j->x[i] + j->o[i];
#else
    drop_add_range(j->x_out + lo, j->x + lo, j->o + lo, (size_t)(hi - lo), j->drop, j->site, (uint64_t)lo, j->p);
#endif
}

#define TIME(name, stmt)                                                    \
    do {                                                                    \
        double best = 1e30;                                                 \
        for (int r_ = 0; r_ < reps; r_++) {                                 \
            double t0_ = now();                                             \
            stmt;                                                           \
            double t_ = now() - t0_;                                        \
            if (t_ < best) best = t_;                                       \
        }                                                                   \
        printf("  %-28s %8.3f ms\n", name, best * 1e3);                     \
    } while (0)

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 7;
    lb_set_threads(threads);
    cpu_clock = threads == 1;
    lb_pool_t *pool = lb_pool_new();
    int B = 8, H = 8, K = 64, S = 256, T = 64, D = 512, F = 1024, V = 32128, HK = H * K;
    lb_drop_t drop = {1, 1, 1};
    float *q = randv((size_t)B * S * HK, 1), *k = randv((size_t)B * S * HK, 1), *v = randv((size_t)B * S * HK, 1);
    float *dctx = randv((size_t)B * S * HK, 1), *bias = randv((size_t)H * S * S, 1);
    float *ctx = malloc(4 * (size_t)B * S * HK), *dq = malloc(4 * (size_t)B * S * HK),
          *dk = malloc(4 * (size_t)B * S * HK), *dv = malloc(4 * (size_t)B * S * HK);
    float *dbias = calloc((size_t)H * S * S, 4);
    size_t big = (size_t)B * H * S * S;
    float *P = malloc(4 * big), *pd = malloc(4 * big), *ds = malloc(4 * big);
    int32_t *km = malloc(4 * (size_t)B * S);
    for (int i = 0; i < B * S; i++) km[i] = (i % S) < S - 5 * (i / S);
    attn_shape_t enc = {B, H, K, S, S, bias, km, 0, 0.1f, 11};
    attn_shape_t cross = {B, H, K, T, S, NULL, km, 0, 0.1f, 12};
    attn_shape_t self = {B, H, K, T, T, bias, NULL, 1, 0.1f, 13};
    printf("threads %d, best of %d (%s)\n", threads, reps, cpu_clock ? "thread CPU time" : "wall time");
    TIME("attn enc fwd", attn_core_forward_p(pool, &enc, q, k, v, P, pd, ctx, &drop));
    TIME("attn enc bwd", attn_core_backward_p(pool, &enc, q, k, v, P, pd, ds, dctx, dq, dk, dv, NULL, &drop));
    TIME("attn enc bwd +dbias", attn_core_backward_p(pool, &enc, q, k, v, P, pd, ds, dctx, dq, dk, dv, dbias, &drop));
    TIME("attn cross fwd", attn_core_forward_p(pool, &cross, q, k, v, P, pd, ctx, &drop));
    TIME("attn cross bwd", attn_core_backward_p(pool, &cross, q, k, v, P, pd, ds, dctx, dq, dk, dv, NULL, &drop));
    TIME("attn dec self fwd", attn_core_forward_p(pool, &self, q, k, v, P, pd, ctx, &drop));
    TIME("attn dec self bwd", attn_core_backward_p(pool, &self, q, k, v, P, pd, ds, dctx, dq, dk, dv, NULL, &drop));
    // precision bf16: q, k, v and P kept in bf16, the products in bf16 (pd: each thread's
    // scratch, smaller than the fp32 core's)
    uint16_t *q16 = malloc(2 * (size_t)B * S * HK), *k16 = malloc(2 * (size_t)B * S * HK),
             *v16 = malloc(2 * (size_t)B * S * HK), *P16 = malloc(2 * big);
    TIME("attn enc fwd bf16", attn_core_forward16_p(pool, &enc, q, k, v, P16, pd, ctx, &drop, q16, k16, v16));
    TIME("attn enc bwd bf16", attn_core_backward16_p(pool, &enc, q16, k16, v16, P16, pd, ds, dctx, dq, dk, dv, NULL, &drop));
    TIME("attn cross fwd bf16", attn_core_forward16_p(pool, &cross, q, k, v, P16, pd, ctx, &drop, q16, k16, v16));
    TIME("attn cross bwd bf16", attn_core_backward16_p(pool, &cross, q16, k16, v16, P16, pd, ds, dctx, dq, dk, dv, NULL, &drop));
    free(q16), free(k16), free(v16), free(P16);

    int N = B * S;
    float *x = randv((size_t)N * D, 1), *w = randv(D, 1), *y = malloc(4 * (size_t)N * D), *inv = malloc(4 * N);
    float *dy = randv((size_t)N * D, 1), *dw = calloc(D, 4), *dx = calloc((size_t)N * D, 4);
    TIME("rms fwd 2048x512", rms_forward_p(pool, N, D, x, w, 1e-6f, inv, y));
    // precision bf16: the norm's input kept and its output for the products, rounded in
    // two more passes, or in the norm's own pass
    uint16_t *x16 = malloc(2 * (size_t)N * D), *y16 = malloc(2 * (size_t)N * D);
    TIME("rms fwd, then round x, y", (rms_forward_p(pool, N, D, x, w, 1e-6f, inv, y),
                                      lb_bf16_from_f32(pool, x, (size_t)N * D, x16),
                                      lb_bf16_from_f32(pool, y, (size_t)N * D, y16)));
    TIME("rms fwd rounding x, y", rms_forward16_p(pool, N, D, x, w, 1e-6f, inv, y, y16, x16));
    free(x16), free(y16);
    TIME("rms bwd 2048x512", rms_backward_p(pool, N, D, x, w, inv, dy, dw, dx));
    float *a = randv((size_t)N * F, 3), *b = randv((size_t)N * F, 1), *g = malloc(4 * (size_t)N * F),
          *dg = randv((size_t)N * F, 1), *da = malloc(4 * (size_t)N * F), *db = malloc(4 * (size_t)N * F);
    TIME("gelu_new gated fwd 2048x1024", act_forward_p(pool, T5_ACT_GELU_NEW, (size_t)N * F, a, b, g));
    TIME("gelu_new gated bwd 2048x1024", act_backward_p(pool, T5_ACT_GELU_NEW, (size_t)N * F, a, b, dg, da, db));
    size_t nf = (size_t)N * F, nd = (size_t)N * D;
#ifdef NO_FUSED
    TIME("gelu gated+drop fwd", (act_forward_p(pool, T5_ACT_GELU_NEW, nf, a, b, g),
                                 lb_dropout_apply_par(pool, g, nf, &drop, 22, 0.1f)));
    TIME("drop+gelu gated bwd", (memcpy(da, dg, 4 * nf), lb_dropout_apply_par(pool, da, nf, &drop, 22, 0.1f),
                                 act_backward_p(pool, T5_ACT_GELU_NEW, nf, a, b, da, da, db)));
#else
    TIME("gelu gated+drop fwd", act_forward_drop_p(pool, T5_ACT_GELU_NEW, nf, a, b, g, &drop, 22, 0.1f));
    TIME("drop+gelu gated bwd", (memcpy(da, dg, 4 * nf),
                                 act_backward_drop_p(pool, T5_ACT_GELU_NEW, nf, a, b, da, da, db, &drop, 22, 0.1f)));
#endif
    float *o = randv(nd, 1), *xo = malloc(4 * nd);
    add_job_t aj = {xo, x, o, &drop, 21, 0.1f};
    TIME("residual drop+add 2048x512", lb_pool_run(pool, (long)nd, add_job, &aj));
#ifdef NO_FUSED
    TIME("residual bwd drop copy", (memcpy(xo, o, 4 * nd), lb_dropout_apply_par(pool, xo, nd, &drop, 21, 0.1f)));
#else
    TIME("residual bwd drop copy", drop_copy_p(pool, xo, o, nd, &drop, 21, 0.1f));
#endif

    int Nd = B * T;
    float *logits = randv((size_t)Nd * V, 10), *l2 = malloc(4 * (size_t)Nd * V);
    int32_t *labels = malloc(4 * Nd);
    double *row_loss = malloc(8 * Nd);
    for (int i = 0; i < Nd; i++) labels[i] = (i * 7919) % V;
    int cnt;
    TIME("xent fwd 512x32128", xent_forward_p(pool, Nd, V, logits, labels, &cnt, row_loss));
    TIME("xent bwd 512x32128", (memcpy(l2, logits, 4 * (size_t)Nd * V), xent_backward_p(pool, Nd, V, l2, labels, 0.01f)));
    lb_pool_free(pool);
    return 0;
}
