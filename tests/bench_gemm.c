// Kernel microbenchmark (make bench-kernels; not part of make test). First the fp32 paths
// (gemm_f32.h): OpenBLAS sgemm with its own threads, oneDNN sgemm on an OpenMP team, and
// oneDNN split over the engine's pool as a layer runs it (linear_forward_pool /
// linear_backward_pool: one block per pool thread, a team of one each), on the T5-small
// linear shapes; then the per-head attention products (as lb_pool_run_gemms runs them: one
// thread each), OpenBLAS against oneDNN. Then the fp32 products (lb_gemm: the path of this
// process, lb_f32_path) against the bf16 products of gemm_bf16.h on
// the T5-small linear shapes, forward, backward dx and weight gradient. The two sides are
// timed interleaved, rep by rep, in one process (the machine is shared, so timings drift:
// only numbers taken side by side compare); each figure is the median of the reps.
//
// The "+lora" columns time linear_forward of a layer with a rank-16 LoRA adapter, fp32
// against the same layer packed (linear_pack_bf16) run by linear_forward_pool, over the
// flops of its three products: they show what the threads of one library cost the other
// when they alternate (the bf16 layer runs its LoRA products on the pool too).
//
//   build/bench_gemm [threads] [reps] [pool|omp]   (default 2 threads, 15 reps, pool)
//
// pool: the bf16 products are split over the engine's lb_pool (gemm_bf16.h); omp: they
// run on oneDNN's OpenMP team (pool NULL). On a CPU with AMX the first line after the CPU's
// is the AMX ceiling: TDPBF16PS with its tiles resident, on 1 and on all threads.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "gemm_bf16.h"
#include "gemm_f32.h"
#include "linear.h"
#include "util.h"

static void fill(float *x, size_t n, uint64_t *st) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(lb_rng_uniform(st) * 2 - 1);
}

// One fp32 product C [M, N] = op(A)·op(B) (+ C) of a layer, by `via`.
typedef struct {
    int via;  // 0 OpenBLAS, 1 oneDNN on an OpenMP team, 2 oneDNN split over the pool (a layer)
    int kind;  // 0 fwd y = x·Wᵀ, 1 dx = dy·W, 2 dW += dyᵀ·x
    int N, in, out, team;
    float *x, *W, *y, *dy, *dx, *dW;
    lb_pool_t *pool;
} f32_job_t;

static void f32_run(f32_job_t *j) {
    int ta = j->kind == 2, tb = j->kind == 0;
    int M = j->kind == 2 ? j->out : j->N, Nn = j->kind == 1 ? j->in : j->kind == 0 ? j->out : j->in;
    int K = j->kind == 0 ? j->in : j->kind == 1 ? j->out : j->N;
    const float *A = j->kind == 0 ? j->x : j->dy, *B = j->kind == 2 ? j->x : j->W;
    int lda = j->kind == 0 ? j->in : j->out, ldb = j->in;
    float *C = j->kind == 0 ? j->y : j->kind == 1 ? j->dx : j->dW;
    float beta = j->kind == 2 ? 1 : 0;
    if (j->via == 0) lb_f32_gemm_openblas(ta, tb, M, Nn, K, 1, A, lda, B, ldb, beta, C, Nn);
    else if (j->via == 1) lb_f32_gemm_onednn(j->team, ta, tb, M, Nn, K, 1, A, lda, B, ldb, beta, C, Nn);
    else {
        lb_param_t p = {.w = j->W, .g = j->kind == 2 ? j->dW : NULL};
        linear_t l = {.name = "bench", .in = j->in, .out = j->out, .W = &p};
        if (j->kind == 0) linear_forward_pool(&l, j->pool, j->N, j->x, NULL, j->y, NULL, NULL, NULL, 0);
        else linear_backward_pool(&l, j->pool, j->N, j->x, NULL, j->dy, j->kind == 1 ? j->dx : NULL, 0, NULL,
                                  NULL, 0);
    }
}

// The fp32 table: OpenBLAS against oneDNN (team, pool) on the layer shapes, then the
// per-head attention products on one thread.
static void fp32_table(int threads, int reps, lb_pool_t *pool, uint64_t *st) {
    static const int shapes[][3] = {{2048, 512, 512}, {2048, 512, 2048}, {2048, 2048, 512},
                                    {2048, 384, 512}, {512, 512, 32128}, {37, 70, 130}};
    static const char *kn[] = {"fwd", "dx", "dW"};
    int pooled = lb_f32_path() == LB_F32_ONEDNN;  // the layer path splits over the pool only then
    printf("fp32 products, %d threads: OpenBLAS (%s) | oneDNN sgemm, OpenMP team | oneDNN split over the "
           "pool (the layer's path%s)\n", threads, openblas_get_corename(), pooled ? "" : ": not this process's");
    printf("%-18s %-4s %9s %9s %9s\n", "N x in x out", "", "OpenBLAS", "oneDNN", "oneDNN+pool");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], In = shapes[s][1], Out = shapes[s][2];
        f32_job_t j = {.N = N, .in = In, .out = Out, .team = threads, .pool = pool};
        j.x = xmalloc(sizeof(float) * (size_t)N * In), j.W = xmalloc(sizeof(float) * (size_t)Out * In);
        j.y = xmalloc(sizeof(float) * (size_t)N * Out), j.dy = xmalloc(sizeof(float) * (size_t)N * Out);
        j.dx = xmalloc(sizeof(float) * (size_t)N * In), j.dW = xcalloc((size_t)Out * In, sizeof(float));
        fill(j.x, (size_t)N * In, st), fill(j.W, (size_t)Out * In, st), fill(j.dy, (size_t)N * Out, st);
        for (int k = 0; k < 3; k++) {
            j.kind = k;
            double g[3];
            // interleaved: each rep runs the three ways once
            double *tt = xmalloc(sizeof(double) * 3 * (size_t)reps);
            for (int r = -2; r < reps; r++)
                for (int v = 0; v < 3; v++) {
                    j.via = v;
                    double t0 = lb_now();
                    if (v < 2 || pooled) f32_run(&j);
                    if (r >= 0) tt[(size_t)v * reps + r] = lb_now() - t0;
                }
            for (int v = 0; v < 3; v++) {
                lb_sort_doubles(tt + (size_t)v * reps, (size_t)reps);
                g[v] = 2.0 * N * In * Out / tt[(size_t)v * reps + reps / 2] * 1e-9;
            }
            free(tt);
            char shp[32];
            snprintf(shp, sizeof shp, "%dx%dx%d", N, In, Out);
            if (pooled) printf("%-18s %-4s %9.1f %9.1f %9.1f\n", shp, kn[k], g[0], g[1], g[2]);
            else printf("%-18s %-4s %9.1f %9.1f %9s\n", shp, kn[k], g[0], g[1], "-");
        }
        free(j.x), free(j.W), free(j.y), free(j.dy), free(j.dx), free(j.dW);
    }
    // attention, per batch row and head: q·kᵀ [256, 256] over K = 64, P·v [256, 64] over
    // 256, and the backward's transposed forms; one thread, as inside lb_pool_run_gemms
    static const int at[][5] = {{256, 256, 64, 0, 1}, {256, 64, 256, 0, 0}, {256, 64, 256, 1, 0},
                                {64, 256, 64, 0, 1}, {64, 64, 256, 0, 0}, {64, 256, 256, 1, 0}};
    printf("attention products, one thread: M x N x K, GFLOP/s\n%-18s %-4s %9s %9s\n", "M x N x K", "op",
           "OpenBLAS", "oneDNN");
    int nt = lb_pool_threads();
    lb_set_threads(1);  // OpenBLAS single-threaded, as lb_pool_run_gemms sets it
    for (size_t s = 0; s < sizeof at / sizeof at[0]; s++) {
        int M = at[s][0], N = at[s][1], K = at[s][2], ta = at[s][3], tb = at[s][4];
        float *A = xmalloc(sizeof(float) * (size_t)M * K), *B = xmalloc(sizeof(float) * (size_t)K * N);
        float *C = xmalloc(sizeof(float) * (size_t)M * N);
        fill(A, (size_t)M * K, st), fill(B, (size_t)K * N, st);
        int lda = ta ? M : K, ldb = tb ? K : N, r200 = reps * 20;
        double *tt = xmalloc(sizeof(double) * 2 * (size_t)r200);
        for (int r = -2; r < r200; r++)
            for (int v = 0; v < 2; v++) {
                double t0 = lb_now();
                if (v == 0) lb_f32_gemm_openblas(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, N);
                else lb_f32_gemm_onednn(1, ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, N);
                if (r >= 0) tt[(size_t)v * r200 + r] = lb_now() - t0;
            }
        char shp[32], op[8];
        snprintf(shp, sizeof shp, "%dx%dx%d", M, N, K);
        snprintf(op, sizeof op, "%c%c", ta ? 'T' : 'N', tb ? 'T' : 'N');
        printf("%-18s %-4s", shp, op);
        for (int v = 0; v < 2; v++) {
            lb_sort_doubles(tt + (size_t)v * r200, (size_t)r200);
            printf(" %9.1f", 2.0 * M * N * K / tt[(size_t)v * r200 + r200 / 2] * 1e-9);
        }
        printf("\n");
        free(A), free(B), free(C), free(tt);
    }
    lb_set_threads(nt);
    printf("GFLOP/s, medians of interleaved reps (%d for the layers, %d for attention)\n\n", reps, reps * 20);
}

enum { FP32_FWD, BF16_FWD, BF16_FWD16, FP32_DX, BF16_DX, FP32_DW, BF16_DW, FP32_MIX, BF16_MIX, N_KIND };

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 15;
    if (reps < 1) reps = 1;
    int use_pool = !(argc > 3 && !strcmp(argv[3], "omp"));
    lb_set_threads(threads);
    lb_pool_t *pool = use_pool ? lb_pool_new() : NULL;
    lb_cpu_t cpu;
    lb_cpu_detect(&cpu);
    const char *name = NULL;
    char why[256] = "";
    int have = lb_bf16_available(&name, why, sizeof why);
    printf("cpu: avx2 %d avx512f %d avx512_bf16 %d amx_tile %d amx_bf16 %d amx_perm %d\n", cpu.avx2,
           cpu.avx512f, cpu.avx512_bf16, cpu.amx_tile, cpu.amx_bf16, cpu.amx_perm);
    printf("threads %d, reps %d, OpenBLAS core %s, OPENBLAS_CORETYPE=%s\n", threads, reps,
           openblas_get_corename(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
    printf("fp32 path: %s\n", lb_f32_path_name(lb_f32_path()));
    if (lb_cpu_bf16_level(&cpu) == 2)
        printf("AMX ceiling (TDPBF16PS, tiles resident, no memory traffic): 1 thread %.0f GFLOP/s, %d threads %.0f\n",
               lb_cpu_amx_ceiling(1), threads, lb_cpu_amx_ceiling(threads));
    uint64_t st0 = 43;
    lb_pool_t *fpool = pool ? pool : lb_pool_new();
    fp32_table(threads, reps, fpool, &st0);
    if (fpool != pool) lb_pool_free(fpool);
    printf("bf16 path: %s, threads from %s\n", have ? name : why,
           use_pool ? "the engine's pool (OpenMP team of 1 per block)" : "oneDNN's OpenMP team");
    static const int shapes[][3] = {{2048, 512, 512}, {2048, 1024, 512}, {2048, 512, 1024},
                                    {2048, 384, 512}, {2048, 512, 384}, {37, 70, 130}, {1, 512, 1024}, {2048, 512, 512}};
    printf("%-16s %-26s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "N x in x out", "oneDNN kernel", "fp32 fwd",
           "bf16 fwd", "bf16 fw16", "fp32 dx", "bf16 dx", "fp32 dW", "bf16 dW", "fp32+lora", "bf16+lora");
    uint64_t st = 42;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], In = shapes[s][1], Out = shapes[s][2];
        float *x = xmalloc(sizeof(float) * (size_t)N * In), *W = xmalloc(sizeof(float) * (size_t)Out * In);
        float *y = xmalloc(sizeof(float) * (size_t)N * Out), *dy = xmalloc(sizeof(float) * (size_t)N * Out);
        float *dx = xcalloc((size_t)N * In, sizeof(float)), *dW = xcalloc((size_t)Out * In, sizeof(float));
        uint16_t *x16 = xmalloc(2 * (size_t)N * In);
        lb_err_t err = {0};
        const int R = 16;
        float *A = xmalloc(sizeof(float) * R * In), *B = xmalloc(sizeof(float) * Out * R);
        float *xa = xmalloc(sizeof(float) * (size_t)N * R);
        fill(A, (size_t)R * In, &st);
        fill(B, (size_t)Out * R, &st);
        lb_param_t pw = {.w = W};
        linear_t lf = {.name = "bench", .in = In, .out = Out, .W = &pw}, lh = lf;
        linear_set_lora(&lf, R, 2, 0, A, B, NULL, NULL);
        linear_set_lora(&lh, R, 2, 0, A, B, NULL, NULL);
        if (have && linear_pack_bf16(&lh, LINEAR_BF16_FWD, &err)) fprintf(stderr, "%s\n", err.msg);
        fill(x, (size_t)N * In, &st);
        fill(W, (size_t)Out * In, &st);
        fill(dy, (size_t)N * Out, &st);
        lb_bf16_from_f32(pool, x, (size_t)N * In, x16);
        lb_bf16w_t *w = have ? lb_bf16w_pack_f32(W, Out, In, LB_BF16W_FWD | LB_BF16W_BWD, &err) : NULL;
        char impl[64];
        lb_bf16_impl_name(N, In, Out, impl, sizeof impl);
        double *t = xcalloc((size_t)N_KIND * reps, sizeof(double));
        for (int r = -2; r < reps; r++) {  // two reps of warm-up
            for (int k = 0; k < N_KIND; k++) {
                if (k != FP32_FWD && k != FP32_DX && k != FP32_DW && k != FP32_MIX && !w) continue;
                double t0 = lb_now();
                switch (k) {
                case FP32_FWD: lb_gemm(0, 1, N, Out, In, 1, x, In, W, In, 0, y, Out); break;
                case BF16_FWD: lb_bf16w_forward(pool, w, N, x, y, 0); break;
                case BF16_FWD16: lb_bf16w_forward_bf16(pool, w, N, x16, y, 0); break;
                case FP32_DX: lb_gemm(0, 0, N, In, Out, 1, dy, Out, W, In, 1, dx, In); break;
                case BF16_DX: lb_bf16w_backward_dx(pool, w, N, dy, dx, 1); break;
                case FP32_DW: lb_gemm(1, 0, Out, In, N, 1, dy, Out, x, In, 1, dW, In); break;
                case BF16_DW: lb_bf16_gemm_dw(pool, N, Out, In, dy, x, dW, 1); break;
                case FP32_MIX: linear_forward(&lf, N, x, y, xa, NULL, NULL, 0); break;
                case BF16_MIX: linear_forward_pool(&lh, pool, N, x, NULL, y, xa, NULL, NULL, 0); break;
                }
                if (r >= 0) t[(size_t)k * reps + r] = lb_now() - t0;
            }
        }
        char shp[32];
        snprintf(shp, sizeof shp, "%dx%dx%d", N, In, Out);
        printf("%-16s %-26s", shp, impl);
        double flop = 2.0 * N * In * Out;
        for (int k = 0; k < N_KIND; k++) {
            lb_sort_doubles(t + (size_t)k * reps, (size_t)reps);
            double med = t[(size_t)k * reps + reps / 2];
            if (k == FP32_MIX) flop = 2.0 * N * In * Out + 2.0 * N * R * (In + Out);
            if (med > 0) printf(" %9.1f", flop / med * 1e-9);
            else printf(" %9s", "-");
        }
        printf("\n");
        lb_bf16w_free(w);
        free(t); free(x); free(W); free(y); free(dy); free(dx); free(dW); free(x16); free(A); free(B); free(xa);
        linear_unpack_bf16(&lh);
    }
    printf("GFLOP/s, median of %d interleaved reps; fw16 = x already bf16; dx and dW accumulate (beta = 1)\n", reps);
    // The bf16 products once more with no OpenBLAS product in between: OpenBLAS's workers,
    // which spin for a while after each sgemm, are then asleep, as through a bf16 run whose
    // LoRA products run on the pool (linear_forward_pool).
    if (have) {
        usleep(300000);
        printf("\nbf16 alone (no fp32 product in between):\n%-16s %9s %9s %9s %9s\n", "N x in x out",
               "fwd", "fw16", "dx", "dW");
        for (size_t s = 0; s < 4; s++) {
            int N = shapes[s][0], In = shapes[s][1], Out = shapes[s][2];
            float *x = xmalloc(sizeof(float) * (size_t)N * In), *W = xmalloc(sizeof(float) * (size_t)Out * In);
            float *y = xmalloc(sizeof(float) * (size_t)N * Out), *dy = xmalloc(sizeof(float) * (size_t)N * Out);
            float *dx = xcalloc((size_t)N * In, sizeof(float)), *dW = xcalloc((size_t)Out * In, sizeof(float));
            uint16_t *x16 = xmalloc(2 * (size_t)N * In);
            fill(x, (size_t)N * In, &st);
            fill(W, (size_t)Out * In, &st);
            fill(dy, (size_t)N * Out, &st);
            lb_bf16_from_f32(pool, x, (size_t)N * In, x16);
            lb_bf16w_t *w = lb_bf16w_pack_f32(W, Out, In, LB_BF16W_FWD | LB_BF16W_BWD, NULL);
            double *t = xcalloc(4 * (size_t)reps, sizeof(double));
            for (int r = -2; r < reps; r++)
                for (int k = 0; k < 4; k++) {
                    double t0 = lb_now();
                    if (k == 0) lb_bf16w_forward(pool, w, N, x, y, 0);
                    if (k == 1) lb_bf16w_forward_bf16(pool, w, N, x16, y, 0);
                    if (k == 2) lb_bf16w_backward_dx(pool, w, N, dy, dx, 1);
                    if (k == 3) lb_bf16_gemm_dw(pool, N, Out, In, dy, x, dW, 1);
                    if (r >= 0) t[(size_t)k * reps + r] = lb_now() - t0;
                }
            char shp[32];
            snprintf(shp, sizeof shp, "%dx%dx%d", N, In, Out);
            printf("%-16s", shp);
            for (int k = 0; k < 4; k++) {
                lb_sort_doubles(t + (size_t)k * reps, (size_t)reps);
                printf(" %9.1f", 2.0 * N * In * Out / t[(size_t)k * reps + reps / 2] * 1e-9);
            }
            printf("\n");
            lb_bf16w_free(w);
            free(t); free(x); free(W); free(y); free(dy); free(dx); free(dW); free(x16);
        }
    }
    lb_pool_free(pool);
    return 0;
}
