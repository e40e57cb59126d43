#include "gemm_f32.h"

#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

static pthread_once_t path_once = PTHREAD_ONCE_INIT;
static int path_chosen;  // written once under path_once, read-only afterwards

static void path_pick(void) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
    path_chosen = c.avx512f ? LB_F32_ONEDNN : LB_F32_OPENBLAS;
    const char *e = getenv("LB_F32_GEMM");
    if (e && !strcmp(e, "openblas")) path_chosen = LB_F32_OPENBLAS;
    if (e && !strcmp(e, "onednn")) path_chosen = LB_F32_ONEDNN;
}

int lb_f32_path(void) {
    pthread_once(&path_once, path_pick);
    return path_chosen;
}

const char *lb_f32_path_name(int path) {
    if (path == LB_F32_ONEDNN) return "fp32 (oneDNN sgemm; CPU has avx512f)";
    return "fp32 (OpenBLAS)";
}

int lb_f32_gemm_onednn(int team, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    // The team size is a per-thread OpenMP setting: set it on this thread, each call (a
    // no-op when equal; 1 runs the product inline, no OpenMP worker is started).
    if (team < 1) team = 1;
    if (omp_get_max_threads() != team) omp_set_num_threads(team);
    return dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) ==
                   dnnl_success
               ? 0
               : -1;
}

void lb_f32_gemm_openblas(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 1 && !ta) {
        // One row (a decoder step of generation): sgemm would repack all of B for one
        // output row; a matrix-vector product reads B once.
        if (tb) cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, 1, beta, C, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, 1, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}
