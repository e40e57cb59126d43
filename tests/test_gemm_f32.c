// The fp32 products (gemm_f32.h): the path chosen from the CPU flags, then oneDNN's and
// OpenBLAS's products and lb_gemm against a naive product in double on odd shapes, every
// transposition, alpha/beta (beta = 0 must ignore C, NaN included, as in BLAS), leading
// dimensions wider than the rows (the padding must stay untouched) and teams of 1 to 3
// threads; repeated calls give the same bits; a linear layer's products split over the
// engine's pool agree with the unsplit ones and repeat bit for bit.
#include <stdint.h>

#include "cpu.h"
#include "gemm_f32.h"
#include "harness.h"
#include "linear.h"
#include "util.h"

static uint64_t rng = 11;

static float *rand_f(size_t n, double s) {
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)((lb_rng_uniform(&rng) * 2 - 1) * s);
    return x;
}

static void test_path_from_flags(void) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
    const char *e = getenv("LB_F32_GEMM");
    int want = c.avx512f ? LB_F32_ONEDNN : LB_F32_OPENBLAS;
    if (e && !strcmp(e, "openblas")) want = LB_F32_OPENBLAS;
    if (e && !strcmp(e, "onednn")) want = LB_F32_ONEDNN;
    EXPECTF(lb_f32_path() == want, "path %d, CPU avx512f %d, LB_F32_GEMM=%s", lb_f32_path(), c.avx512f,
            e ? e : "(unset)");
    EXPECT(lb_f32_path() == lb_f32_path());
    EXPECT(strstr(lb_f32_path_name(LB_F32_ONEDNN), "oneDNN") != NULL);
    EXPECT(strstr(lb_f32_path_name(LB_F32_OPENBLAS), "OpenBLAS") != NULL);
    printf("     %s (avx512f %d)\n", lb_f32_path_name(lb_f32_path()), c.avx512f);
}

enum { VIA_ONEDNN, VIA_OPENBLAS, VIA_LB_GEMM };

// One product C = alpha·op(A)·op(B) + beta·C through `via` against the double reference.
// Leading dimensions are the minimum plus 3; C's padding columns hold a sentinel that must
// survive, and with beta = 0 C starts as NaN.
static void check_one(int via, int team, int ta, int tb, int M, int N, int K, float alpha, float beta) {
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    int lda = ac + 3, ldb = bc + 3, ldc = N + 3;
    float *A = rand_f((size_t)ar * lda, 1), *B = rand_f((size_t)br * ldb, 1);
    float *C = rand_f((size_t)M * ldc, 1);
    double *ref = xcalloc((size_t)M * N, sizeof(double));
    double mag = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double c0 = C[(size_t)i * ldc + j];
            ref[(size_t)i * N + j] = alpha * s + (beta != 0 ? beta * c0 : 0);
            mag = fmax(mag, fabs(alpha) * sa + fabs(beta * c0));
        }
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            if (beta == 0) C[(size_t)i * ldc + j] = NAN;
        for (int j = N; j < ldc; j++) C[(size_t)i * ldc + j] = 777.0f;
    }
    int rc = 0;
    if (via == VIA_ONEDNN) rc = lb_f32_gemm_onednn(team, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (via == VIA_OPENBLAS) lb_f32_gemm_openblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else lb_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0;
    int pad_ok = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double d = fabs(C[(size_t)i * ldc + j] - ref[(size_t)i * N + j]);
            worst = d > worst || d != d ? (d != d ? INFINITY : d) : worst;
        }
        for (int j = N; j < ldc; j++) pad_ok &= C[(size_t)i * ldc + j] == 777.0f;
    }
    // fp32 summation of K terms: error below K·2^-24 of the sum of magnitudes
    double tol = (K + 4) * 6e-8 * (mag > 0 ? mag : 1);
    static const char *name[] = {"oneDNN", "OpenBLAS", "lb_gemm"};
    EXPECTF(rc == 0 && worst <= tol && pad_ok, "%s team %d, %c%c %dx%dx%d alpha %g beta %g: rc %d, max error %.3g "
            "(tolerance %.3g), padding %s", name[via], team, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K,
            (double)alpha, (double)beta, rc, worst, tol, pad_ok ? "kept" : "overwritten");
    free(A), free(B), free(C), free(ref);
}

static const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 70, 130}, {1, 65, 64}, {64, 1, 33},
                                {129, 257, 64}, {256, 64, 256}, {3, 300, 513}};
static const float ab[][2] = {{1, 0}, {0.5f, 1}, {-2, 0.25f}};

static void test_onednn_products(void) {
    for (int team = 1; team <= 3; team++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int k = 0; k < 3; k++)
                    check_one(VIA_ONEDNN, team, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                              ab[k][0], ab[k][1]);
}

static void test_openblas_products(void) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int k = 0; k < 3; k++)
                check_one(VIA_OPENBLAS, 0, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], ab[k][0],
                          ab[k][1]);
}

// lb_gemm on this process's path, with 1, 2 and 3 threads, and its K = 0 case (C = beta·C).
static void test_lb_gemm(void) {
    for (int nt = 1; nt <= 3; nt++) {
        lb_set_threads(nt);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int k = 0; k < 3; k++)
                    check_one(VIA_LB_GEMM, 0, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], ab[k][0],
                              ab[k][1]);
    }
    lb_set_threads(2);
    float C[6] = {1, 2, 3, 4, 5, 6};
    lb_gemm(0, 0, 2, 3, 0, 1, NULL, 1, NULL, 3, 0.5f, C, 3);
    EXPECT(C[0] == 0.5f && C[5] == 3.0f);
}

// Same call, same bits; 1 and 2 threads agree to rounding.
static void test_repeatable(void) {
    const int M = 300, N = 200, K = 700;
    float *A = rand_f((size_t)M * K, 1), *B = rand_f((size_t)K * N, 1);
    float *c[3];
    for (int r = 0; r < 3; r++) {
        c[r] = xmalloc(sizeof(float) * M * N);
        lb_set_threads(r < 2 ? 2 : 1);
        lb_gemm(0, 0, M, N, K, 1, A, K, B, N, 0, c[r], N);
    }
    EXPECT(!memcmp(c[0], c[1], sizeof(float) * M * N));
    EXPECT_CLOSE("1 vs 2 threads", c[2], c[0], (size_t)M * N, 1e-5);
    lb_set_threads(2);
    for (int r = 0; r < 3; r++) free(c[r]);
    free(A), free(B);
}

// A layer's products split over the pool (linear_forward_pool / linear_backward_pool with
// a trainable W and a LoRA adapter) against the same calls without a pool; twice with
// the pool gives the same bits. Shapes: rows split (N > O) and columns split (O > N).
static void test_linear_pool(void) {
    lb_pool_t *pool = lb_pool_new();
    static const int dims[][3] = {{600, 96, 80}, {40, 64, 3000}};  // N, I, O
    for (int s = 0; s < 2; s++) {
        int N = dims[s][0], I = dims[s][1], O = dims[s][2], R = 4;
        float *W = rand_f((size_t)O * I, 0.1), *x = rand_f((size_t)N * I, 1), *dy = rand_f((size_t)N * O, 1);
        float *A = rand_f((size_t)R * I, 0.1), *B = rand_f((size_t)O * R, 0.1);
        float *y[3], *dx[3], *g[3], *dA[3], *dB[3], *xa[3];
        for (int k = 0; k < 3; k++) {
            y[k] = xmalloc(sizeof(float) * N * O);
            dx[k] = xmalloc(sizeof(float) * N * I);
            g[k] = xcalloc((size_t)O * I, sizeof(float));
            dA[k] = xcalloc((size_t)R * I, sizeof(float));
            dB[k] = xcalloc((size_t)O * R, sizeof(float));
            xa[k] = xmalloc(sizeof(float) * N * R);
            lb_param_t p = {.w = W, .g = g[k]};
            linear_t l = {.name = "lin", .in = I, .out = O, .W = &p};
            linear_set_lora(&l, R, 0.5f, 0, A, B, dA[k], dB[k]);
            lb_pool_t *use = k == 0 ? NULL : pool;
            linear_forward_pool(&l, use, N, x, NULL, y[k], xa[k], NULL, NULL, 0);
            linear_backward_pool(&l, use, N, x, xa[k], dy, dx[k], 0, NULL, NULL, 0);
        }
        EXPECT_CLOSE("y, pool vs none", y[1], y[0], (size_t)N * O, 1e-5);
        EXPECT_CLOSE("dx, pool vs none", dx[1], dx[0], (size_t)N * I, 1e-5);
        EXPECT_CLOSE("dW, pool vs none", g[1], g[0], (size_t)O * I, 1e-5);
        EXPECT_CLOSE("dA, pool vs none", dA[1], dA[0], (size_t)R * I, 1e-5);
        EXPECT_CLOSE("dB, pool vs none", dB[1], dB[0], (size_t)O * R, 1e-5);
        EXPECT(!memcmp(y[1], y[2], sizeof(float) * N * O) && !memcmp(dx[1], dx[2], sizeof(float) * N * I));
        EXPECT(!memcmp(g[1], g[2], sizeof(float) * O * I) && !memcmp(dA[1], dA[2], sizeof(float) * R * I));
        for (int k = 0; k < 3; k++) free(y[k]), free(dx[k]), free(g[k]), free(dA[k]), free(dB[k]), free(xa[k]);
        free(W), free(x), free(dy), free(A), free(B);
    }
    lb_pool_free(pool);
}

int main(void) {
    lb_set_threads(2);
    RUN(test_path_from_flags);
    RUN(test_onednn_products);
    RUN(test_openblas_products);
    RUN(test_lb_gemm);
    RUN(test_repeatable);
    RUN(test_linear_pool);
    TH_DONE();
}
