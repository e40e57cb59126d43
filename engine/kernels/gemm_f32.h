// gemm_f32: which library runs the engine's fp32 matrix products (lb_gemm, linear.h), picked
// once per process from the CPU's feature flags, never from its model name.
//
// OpenBLAS picks its kernels by CPU model: on a model its build does not know (Debian's
// 0.3.21 on Emerald Rapids) it falls back to AVX2 kernels and runs sgemm at 63-66 GFLOP/s
// on 2 cores instead of ~300; OPENBLAS_CORETYPE=Haswell forces the same fallback. oneDNN
// (libdnnl, already linked for gemm_bf16.h) dispatches on ISA flags, so on a CPU with
// AVX-512 F its sgemm (dnnl_sgemm) is used: on the 2-core EPYC development machine it ran
// the T5-small shapes, and the per-head attention products (256x256x64, 256x64x256) on
// one thread, at least as fast as OpenBLAS with its own SkylakeX kernels (make
// bench-kernels). Elsewhere (no AVX-512) OpenBLAS stays, as it did before.
//
// The double-precision build (LB_REAL_DOUBLE, test_grad) never comes here: cblas_dgemm.
//
// Threads: a oneDNN product runs on the calling thread with an OpenMP team whose size the
// caller gives (lb_gemm: lb_pool_threads(), which is 1 inside lb_pool_run_gemms, so a
// product on a pool thread never starts OpenMP workers). linear.c spreads the large
// products of a layer over the engine's pool instead (one block of rows or columns per
// pool thread, each with a team of one), as gemm_bf16.h does, because libgomp's workers
// spin for a while after each product and would steal the cores of the pool loops that
// follow. So in a training step only the pool's threads compute.
//
// Results: a product is deterministic for a given shape and team size (oneDNN's sgemm
// sums each element over K in a fixed order on one thread); how the rows are cut between
// threads may change the last bit of a result (~1e-7 relative), as it may for OpenBLAS.
#ifndef LB_GEMM_F32_H
#define LB_GEMM_F32_H

enum {
    LB_F32_OPENBLAS = 0,  // cblas_sgemm / cblas_sgemv
    LB_F32_ONEDNN = 1,    // dnnl_sgemm (CPU with AVX-512 F)
};

// The path of this process: LB_F32_ONEDNN when CPUID reports AVX-512 F (with the OS saving
// its state), else LB_F32_OPENBLAS. The environment variable LB_F32_GEMM=openblas or
// =onednn overrides the choice (for A/B measurements; any other value is ignored). Read
// once, at the first call; thread-safe.
int lb_f32_path(void);

// One line naming a path for logs and the bench, e.g. "fp32 (oneDNN sgemm; CPU has avx512f)"
// or "fp32 (OpenBLAS Haswell)" (OpenBLAS's own kernel choice, openblas_get_corename).
const char *lb_f32_path_name(int path);

// C [M, N] = alpha·op(A)·op(B) + beta·C, row-major (as cblas_sgemm), on oneDNN with an OpenMP
// team of `team` threads on the calling thread. M, N >= 1, K >= 1. Returns 0, or -1 when
// oneDNN refused the call (C untouched: it checks its arguments before computing); the
// caller then runs OpenBLAS.
int lb_f32_gemm_onednn(int team, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc);

// The same on OpenBLAS (its own threads, count set by lb_set_threads); one row of A (M = 1,
// op(A) not transposed) is a matrix-vector product.
void lb_f32_gemm_openblas(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc);

#endif
