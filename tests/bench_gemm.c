// Kernel microbenchmark (make bench-kernels; not part of make test): GFLOP/s of the fp32
// products (OpenBLAS sgemm through lb_gemm) against the bf16 products of gemm_bf16.h on
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
// run on oneDNN's OpenMP team (pool NULL).
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "gemm_bf16.h"
#include "linear.h"
#include "util.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fill(float *x, size_t n, uint64_t *st) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(lb_rng_uniform(st) * 2 - 1);
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
            qsort(t + (size_t)k * reps, (size_t)reps, sizeof(double), cmp_d);
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
                qsort(t + (size_t)k * reps, (size_t)reps, sizeof(double), cmp_d);
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
