// AVX-512 (F + DQ) helpers shared by the engine's fused element-wise kernels (t5_ops.c,
// dropout.c): the target attribute, the run-time check, and 16-lane loads and stores whose
// tails are masked, so that a row of any length takes one code path. Defined only in the
// float build on x86-64 with GCC or clang (LB_VEC512); the double build of the gradient
// test uses the scalar code, the reference.
#ifndef LB_VEC512_H
#define LB_VEC512_H

#if !defined(LB_REAL_DOUBLE) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LB_VEC512 1
#include <immintrin.h>

#define LB_AVX512 __attribute__((target("avx512f,avx512dq")))

// 1 when the CPU has AVX-512 F and DQ (native 64-bit lane multiplies for the masks).
static inline int vec512_ok(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}

static inline __mmask16 tail16(int left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1); }

// Loads and stores of 16 lanes, masked only for a tail (m != all): a masked store costs
// several times a plain one on some CPUs.
LB_AVX512 static inline __m512 ld16(__mmask16 m, const float *p) {
    return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
LB_AVX512 static inline void st16(float *p, __mmask16 m, __m512 v) {
    if (m == 0xFFFF)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}
#endif

#endif
