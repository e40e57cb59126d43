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
#include <stdint.h>

#define LB_AVX512 __attribute__((target("avx512f,avx512dq")))
// Helpers that need AVX-512 F only (callable from LB_AVX512 code and from code that checked
// only F).
#define LB_AVX512F __attribute__((target("avx512f")))

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

// 16 lanes rounded to bf16 and stored (masked for a tail): lb_f32_to_bf16 lane for lane
// (nearest, ties to even; a NaN stays a quiet NaN of the same sign and top bits).
LB_AVX512F static inline void st16_bf16(uint16_t *p, __mmask16 m, __m512 v) {
    __m512i b = _mm512_castps_si512(v), hi = _mm512_srli_epi32(b, 16);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    if (nan) r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    if (m == 0xFFFF)
        _mm256_storeu_si256((__m256i *)(void *)p, _mm512_cvtepi32_epi16(r));
    else
        _mm512_mask_cvtepi32_storeu_epi16(p, m, r);
}
#endif

#endif
