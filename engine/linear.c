#include "linear.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#ifdef _OPENMP
#include <omp.h>
#endif

void lb_gemm(int ta, int tb, int M, int N, int K, lb_real alpha, const lb_real *A, int lda,
             const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // BLAS leaves C untouched when K = 0 only if beta = 1; be explicit
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] *= beta;
        return;
    }
#ifdef LB_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void lb_set_threads(int n) {
    if (n <= 0) return;
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

void lb_dropout_apply(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, float p) {
    lb_real s = (lb_real)(1.0 / (1.0 - (double)p));
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > 65536)
#endif
    for (size_t i = 0; i < n; i++) x[i] = lb_drop_keep(d, site, i, p) ? x[i] * s : 0;
}

int linear_trainable(const linear_t *l) {
    return l->W->g != NULL || (l->r > 0 && (l->dA || l->dB));
}

void linear_set_lora(linear_t *l, int r, lb_real scale, float dropout, lb_real *A, lb_real *B,
                     lb_real *dA, lb_real *dB) {
    l->r = r > 0 ? r : 0;
    l->scale = scale;
    l->dropout = dropout;
    l->A = r > 0 ? A : NULL;
    l->B = r > 0 ? B : NULL;
    l->dA = r > 0 ? dA : NULL;
    l->dB = r > 0 ? dB : NULL;
}

// x with the LoRA dropout applied: x itself when dropout is off, else tmp.
static const lb_real *lora_input(const linear_t *l, int N, const lb_real *x, lb_real *tmp,
                                 const lb_drop_t *drop, uint64_t site) {
    if (!lb_drop_on(drop, l->dropout)) return x;
    memcpy(tmp, x, sizeof(lb_real) * (size_t)N * l->in);
    lb_dropout_apply(tmp, (size_t)N * l->in, drop, site, l->dropout);
    return tmp;
}

void linear_forward(const linear_t *l, int N, const lb_real *x, lb_real *y, lb_real *xa,
                    lb_real *tmp, const lb_drop_t *drop, uint64_t site) {
    // y [N, O] = x [N, I]·Wᵀ
    lb_gemm(0, 1, N, l->out, l->in, 1, x, l->in, l->W->w, l->in, 0, y, l->out);
    if (l->r > 0) {
        const lb_real *xd = lora_input(l, N, x, tmp, drop, site);
        lb_gemm(0, 1, N, l->r, l->in, 1, xd, l->in, l->A, l->in, 0, xa, l->r);     // [N, R]
        lb_gemm(0, 1, N, l->out, l->r, l->scale, xa, l->r, l->B, l->r, 1, y, l->out);
    }
}

void linear_backward(const linear_t *l, int N, const lb_real *x, const lb_real *xa,
                     const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                     const lb_drop_t *drop, uint64_t site) {
    if (l->W->g)  // dW [O, I] += dyᵀ·x
        lb_gemm(1, 0, l->out, l->in, N, 1, dy, l->out, x, l->in, 1, l->W->g, l->in);
    if (dx)  // dx [N, I] (+)= dy·W
        lb_gemm(0, 0, N, l->in, l->out, 1, dy, l->out, l->W->w, l->in, dx_accum ? 1 : 0, dx,
                l->in);
    if (l->r <= 0 || (!dx && !l->dA && !l->dB)) return;
    if (l->dB)  // dB [O, R] += s·dyᵀ·xa
        lb_gemm(1, 0, l->out, l->r, N, l->scale, dy, l->out, xa, l->r, 1, l->dB, l->r);
    if (!dx && !l->dA) return;
    // dxa [N, R] = s·dy·B (small: N·R)
    lb_real *dxa = xmalloc(sizeof(lb_real) * (size_t)N * l->r);
    int on = lb_drop_on(drop, l->dropout);
    lb_gemm(0, 0, N, l->r, l->out, l->scale, dy, l->out, l->B, l->r, 0, dxa, l->r);
    if (l->dA) {  // dA [R, I] += dxaᵀ·drop(x), the mask rebuilt from its hash
        const lb_real *xd = lora_input(l, N, x, tmp, drop, site);
        lb_gemm(1, 0, l->r, l->in, N, 1, dxa, l->r, xd, l->in, 1, l->dA, l->in);
    }
    if (dx && !on) {  // dx += dxa·A
        lb_gemm(0, 0, N, l->in, l->r, 1, dxa, l->r, l->A, l->in, 1, dx, l->in);
    } else if (dx) {  // dx += drop_bwd(dxa·A)
        size_t n = (size_t)N * l->in;
        lb_gemm(0, 0, N, l->in, l->r, 1, dxa, l->r, l->A, l->in, 0, tmp, l->in);
        lb_dropout_apply(tmp, n, drop, site, l->dropout);
        for (size_t i = 0; i < n; i++) dx[i] += tmp[i];
    }
    free(dxa);
}
