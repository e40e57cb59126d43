// T5's kernels: see t5_ops.h. In float on x86-64 the hot loops use AVX-512 (F+DQ) when the
// CPU has it, with each attention row's bias, mask, softmax and dropout fused into three
// passes over a row in cache, else AVX2+FMA; the double build of the gradient test uses
// the scalar code, the reference.
#include "t5_ops.h"
#include "gemm_bf16.h"
#include "vec512.h"

#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#define R(c) ((lb_real)(c))
// Embedding: x [N, D] = E[ids]. No scaling in T5.
void embed_forward(int N, int D, const int32_t *ids, const lb_real *E, lb_real *x) {
    for (int r = 0; r < N; r++) memcpy(x + (size_t)r * D, E + (size_t)ids[r] * D, sizeof(lb_real) * D);
}

// dE[ids[r]] += dx[r]; serial so that repeated ids add in a fixed order.
void embed_backward(int N, int D, const int32_t *ids, const lb_real *dx, lb_real *dE) {
    for (int r = 0; r < N; r++) {
        lb_real *d = dE + (size_t)ids[r] * D;
        const lb_real *s = dx + (size_t)r * D;
        for (int j = 0; j < D; j++) d[j] += s[j];
    }
}

// ---------------------------------------------------------------------------------------
// Vector kernels. In float on x86-64 the hot element-wise loops (exp in softmax and cross
// entropy, the tanh of gelu_new) run 8 lanes at a time with AVX2+FMA when the CPU has them
// (checked at run time, so the binary still runs anywhere); the double build of the
// gradient test and other CPUs use the scalar code, which is the reference.

#if !defined(LB_REAL_DOUBLE) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LB_VEC 1
#include <immintrin.h>
#define LB_AVX2 __attribute__((target("avx2,fma")))
static int vec_ok(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// exp of 8 floats (Cephes polynomial, ~1 ulp); -inf gives 0, large inputs clamp.
LB_AVX2 static inline __m256 exp8(__m256 x) {
    __m256 ninf = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.37f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(ninf, y);
}

LB_AVX2 static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// row[j] = exp(row[j] - mx) (store = 1) or only Σ exp(row[j] - mx) (store = 0); the sum in
// double.
LB_AVX2 static double exp_row_avx2(float *row, int n, float mx, int store) {
    __m256 m = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 y = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
        if (store) _mm256_storeu_ps(row + j, y);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
    }
    double sum = hsum_pd(_mm256_add_pd(s0, s1));
    for (; j < n; j++) {
        float y = row[j] == -INFINITY ? 0.0f : expf(row[j] - mx);
        if (store) row[j] = y;
        sum += y;
    }
    return sum;
}

LB_AVX2 static float max_row_avx2(const float *row, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + j));
    float t[8], mx = -INFINITY;
    _mm256_storeu_ps(t, m);
    for (int i = 0; i < 8; i++) mx = t[i] > mx ? t[i] : mx;
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

LB_AVX2 static void scale_row_avx2(float *row, int n, float c) {
    __m256 cc = _mm256_set1_ps(c);
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), cc));
    for (; j < n; j++) row[j] *= c;
}

// gelu_new pieces: t = tanh(c·(x + 0.044715·x³)) = 1 − 2 / (1 + exp(2u)).
LB_AVX2 static inline __m256 gelu_tanh8(__m256 x) {
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286535588f),
                             _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    __m256 e = exp8(_mm256_add_ps(u, u));
    return _mm256_sub_ps(_mm256_set1_ps(1.0f),
                         _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
}

// g = gelu_new(a)·b (b NULL: gelu_new(a)) over [lo, hi).
LB_AVX2 static void gelu_fwd_avx2(long lo, long hi, const float *a, const float *b, float *g) {
    long i = lo;
    __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= hi; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i);
        __m256 y = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, gelu_tanh8(x)));
        if (b) y = _mm256_mul_ps(y, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(g + i, y);
    }
    for (; i < hi; i++) {
        float x = a[i], y = 0.5f * x * (1 + tanhf(0.79788456080286535588f * (x + 0.044715f * x * x * x)));
        g[i] = b ? y * b[i] : y;
    }
}

// da = dg·b·gelu_new'(a), db = dg·gelu_new(a) (b NULL: da = dg·gelu_new'(a)).
LB_AVX2 static void gelu_bwd_avx2(long lo, long hi, const float *a, const float *b, const float *dg,
                                  float *da, float *db) {
    long i = lo;
    const float c = 0.79788456080286535588f;
    __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), cc = _mm256_set1_ps(c),
           k3 = _mm256_set1_ps(3 * 0.044715f);
    for (; i + 8 <= hi; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), d = _mm256_loadu_ps(dg + i);
        __m256 t = gelu_tanh8(x);
        __m256 hx = _mm256_mul_ps(half, x);
        __m256 f = _mm256_mul_ps(hx, _mm256_add_ps(one, t));
        // f' = ½(1+t) + ½x(1−t²)·c(1 + 3·0.044715·x²)
        __m256 du = _mm256_mul_ps(cc, _mm256_fmadd_ps(k3, _mm256_mul_ps(x, x), one));
        __m256 fp = _mm256_fmadd_ps(_mm256_mul_ps(hx, _mm256_fnmadd_ps(t, t, one)), du,
                                    _mm256_mul_ps(half, _mm256_add_ps(one, t)));
        if (b) {
            __m256 bb = _mm256_loadu_ps(b + i);
            _mm256_storeu_ps(db + i, _mm256_mul_ps(d, f));
            _mm256_storeu_ps(da + i, _mm256_mul_ps(_mm256_mul_ps(d, bb), fp));
        } else {
            _mm256_storeu_ps(da + i, _mm256_mul_ps(d, fp));
        }
    }
    for (; i < hi; i++) {
        float x = a[i], d = dg[i], u = c * (x + 0.044715f * x * x * x), t = tanhf(u);
        float f = 0.5f * x * (1 + t), fp = 0.5f * (1 + t) + 0.5f * x * (1 - t * t) * c * (1 + 3 * 0.044715f * x * x);
        if (b) {
            float bi = b[i];
            db[i] = d * f;
            da[i] = d * bi * fp;
        } else {
            da[i] = d * fp;
        }
    }
}

// ---- AVX-512 (F + DQ): the attention rows, RMS norm sums and dropout masks fused ----------
// Same polynomials and operation order as the AVX2 code above, 16 lanes at a time; tails
// use masked loads and stores, so a row of any length takes one code path.
// (LB_AVX512, vec512_ok, tail16, ld16 and st16: vec512.h.)

// round_bf16's 16 lanes (st16_bf16: lb_f32_to_bf16 lane for lane); returns the count done.
LB_AVX512 static size_t round_bf16_512(const float *src, size_t n, uint16_t *dst) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) st16_bf16(dst + i, 0xFFFF, _mm512_loadu_ps(src + i));
    return i;
}

// exp of 16 floats: exp8's Cephes polynomial, lane for lane the same result.
LB_AVX512 static inline __m512 exp16(__m512 x) {
    __mmask16 ninf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.37f));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), x);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~ninf, y);
}

// Σ of the 16 lanes of y selected by m, added in double to two accumulators.
LB_AVX512 static inline void sum16_pd(__m512 y, __mmask16 m, __m512d *s0, __m512d *s1) {
    y = _mm512_maskz_mov_ps(m, y);
    *s0 = _mm512_add_pd(*s0, _mm512_cvtps_pd(_mm512_castps512_ps256(y)));
    *s1 = _mm512_add_pd(*s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y), 1))));
}

// One attention row, fused: row holds q·kᵀ on entry and P = softmax(row + br) on return,
// keys c >= lim or with km[c] == 0 hidden (a row with every key hidden becomes 0); when pd,
// pd = drop(P) with mask indices from base (thr, sc: the dropout's threshold and scale).
LB_AVX512 static void attn_row_fwd512(float *row, int n, int lim, const float *br, const int32_t *km,
                                      float *pd, uint64_t base, uint64_t thr64, float sc) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 mx = ninf;
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 v = ld16(m, row + c);
        if (br) v = _mm512_add_ps(v, ld16(m, br + c));
        __mmask16 hide = _mm512_cmpge_epi32_mask(_mm512_add_epi32(_mm512_set1_epi32(c), iota), _mm512_set1_epi32(lim));
        if (km) hide |= _mm512_mask_cmpeq_epi32_mask(m, _mm512_maskz_loadu_epi32(m, km + c), _mm512_setzero_si512());
        v = _mm512_mask_mov_ps(v, hide, ninf);
        st16(row + c, m, v);
        mx = _mm512_mask_max_ps(mx, m, mx, v);
    }
    float mxs = _mm512_reduce_max_ps(mx);
    if (mxs == -INFINITY) {  // every key hidden: the row stays 0
        memset(row, 0, sizeof(float) * n);
        if (pd) memset(pd, 0, sizeof(float) * n);
        return;
    }
    __m512 vm = _mm512_set1_ps(mxs);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 y = exp16(_mm512_sub_ps(ld16(m, row + c), vm));
        st16(row + c, m, y);
        sum16_pd(y, m, &s0, &s1);
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    __m512 inv = _mm512_set1_ps(sum > 0 ? (float)(1.0 / sum) : 0.0f);
    __m512i thr = _mm512_set1_epi64((long long)thr64);
    __m512 vs = _mm512_set1_ps(sc);
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 p = _mm512_mul_ps(ld16(m, row + c), inv);
        st16(row + c, m, p);
        if (pd) st16(pd + c, m, _mm512_maskz_mul_ps(lb_drop_keep16(base + (uint64_t)c, thr), p, vs));
    }
}

// Softmax backward of one row, with the attention dropout's backward fused: d holds
// dPd = dctx·vᵀ on entry and dS = P·(drop(dPd) − Σ P·drop(dPd)) on return. The mask is
// read from pd = drop(P) when given (kept ⟺ pd != 0 wherever P != 0, and where P == 0
// the result is 0 either way), else regenerated from base; drop 0: no dropout.
LB_AVX512 static void attn_row_bwd512(float *d, const float *p, int n, int drop, const float *pd,
                                      uint64_t base, uint64_t thr64, float sc) {
    __m512i thr = _mm512_set1_epi64((long long)thr64);
    __m512 vs = _mm512_set1_ps(sc);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 dv = ld16(m, d + c), pv = ld16(m, p + c);
        if (drop) {
            __mmask16 keep = pd ? _mm512_cmp_ps_mask(ld16(m, pd + c), _mm512_setzero_ps(), _CMP_NEQ_UQ)
                                : lb_drop_keep16(base + (uint64_t)c, thr);
            dv = _mm512_maskz_mul_ps(keep, dv, vs);
            st16(d + c, m, dv);
        }
        // Σ p·d̃ in double, as the scalar loop
        s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(pv)), _mm512_cvtps_pd(_mm512_castps512_ps256(dv)), s0);
        s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pv), 1))),
                             _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dv), 1))), s1);
    }
    __m512 dt = _mm512_set1_ps((float)_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)));
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 dv = ld16(m, d + c), pv = ld16(m, p + c);
        st16(d + c, m, _mm512_mul_ps(pv, _mm512_sub_ps(dv, dt)));
    }
}

// max_row, exp_row and scale_row of the scalar code, 16 lanes at a time (cross entropy).
LB_AVX512 static float max_row512(const float *row, int n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int c = 0; c < n; c += 16) {
        __mmask16 t = tail16(n - c);
        m = _mm512_mask_max_ps(m, t, m, ld16(t, row + c));
    }
    return _mm512_reduce_max_ps(m);
}

LB_AVX512 static double exp_row512(float *row, int n, float mx, int store) {
    __m512 vm = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < n; c += 16) {
        __mmask16 t = tail16(n - c);
        __m512 y = exp16(_mm512_sub_ps(ld16(t, row + c), vm));
        if (store) st16(row + c, t, y);
        sum16_pd(y, t, &s0, &s1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

LB_AVX512 static void scale_row512(float *row, int n, float k) {
    __m512 vk = _mm512_set1_ps(k);
    for (int c = 0; c < n; c += 16) {
        __mmask16 t = tail16(n - c);
        st16(row + c, t, _mm512_mul_ps(ld16(t, row + c), vk));
    }
}

// gelu_tanh8 in 16 lanes: t = tanh(c·(x + 0.044715·x³)) = 1 − 2 / (1 + exp(2u)). The
// division is a reciprocal estimate (14 bits) and one Newton step, ~1 ulp: a 512-bit
// divide costs more than the whole rest on CPUs that split it into two 256-bit halves.
LB_AVX512 static inline __m512 gelu_tanh16(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286535588f),
                             _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_add_ps(u, u)));
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));  // r·(2 − d·r)
    return _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), r, _mm512_set1_ps(1.0f));
}

// gelu_fwd_avx2 and gelu_bwd_avx2 in 16 lanes, the same operations lane for lane.
LB_AVX512 static void gelu_fwd512(long lo, long hi, const float *a, const float *b, float *g) {
    __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    for (long i = lo; i < hi; i += 16) {
        __mmask16 t = tail16((int)(hi - i < 16 ? hi - i : 16));
        __m512 x = ld16(t, a + i);
        __m512 y = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, gelu_tanh16(x)));
        if (b) y = _mm512_mul_ps(y, ld16(t, b + i));
        st16(g + i, t, y);
    }
}

LB_AVX512 static void gelu_bwd512(long lo, long hi, const float *a, const float *b, const float *dg,
                                  float *da, float *db) {
    __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f),
           cc = _mm512_set1_ps(0.79788456080286535588f), k3 = _mm512_set1_ps(3 * 0.044715f);
    for (long i = lo; i < hi; i += 16) {
        __mmask16 m = tail16((int)(hi - i < 16 ? hi - i : 16));
        __m512 x = ld16(m, a + i), d = ld16(m, dg + i);
        __m512 t = gelu_tanh16(x);
        __m512 hx = _mm512_mul_ps(half, x);
        __m512 f = _mm512_mul_ps(hx, _mm512_add_ps(one, t));
        __m512 du = _mm512_mul_ps(cc, _mm512_fmadd_ps(k3, _mm512_mul_ps(x, x), one));
        __m512 fp = _mm512_fmadd_ps(_mm512_mul_ps(hx, _mm512_fnmadd_ps(t, t, one)), du,
                                    _mm512_mul_ps(half, _mm512_add_ps(one, t)));
        if (b) {
            __m512 bb = ld16(m, b + i);
            st16(db + i, m, _mm512_mul_ps(d, f));
            st16(da + i, m, _mm512_mul_ps(_mm512_mul_ps(d, bb), fp));
        } else {
            st16(da + i, m, _mm512_mul_ps(d, fp));
        }
    }
}

// Σ x² over n floats, in double (the sum of RMS norm's forward).
LB_AVX512 static double sumsq512(const float *x, int n) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < n; c += 16) {
        __m512 v = ld16(tail16(n - c), x + c);
        __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(a, a, s0);
        s1 = _mm512_fmadd_pd(b, b, s1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

// RMS norm's element-wise loops, the scalar code's operations in the same order:
// y = (x·iv)·w; dw += (dy·x)·iv over [lo, hi); dx += (iv·w)·dy − x·c.
// y = x·iv·w, into y and (k16, a constant at each call: when given) y16 rounded to bf16;
// x16: x itself rounded.
LB_AVX512 static inline __attribute__((always_inline)) void rms_y_body(float *y, uint16_t *y16, uint16_t *x16,
                                                                      const float *x, float iv, const float *w,
                                                                      int n, const int k16) {
    __m512 vi = _mm512_set1_ps(iv);
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 xv = ld16(m, x + c), yv = _mm512_mul_ps(_mm512_mul_ps(xv, vi), ld16(m, w + c));
        st16(y + c, m, yv);
        if (k16 && y16) st16_bf16(y16 + c, m, yv);
        if (k16 && x16) st16_bf16(x16 + c, m, xv);
    }
}

LB_AVX512 static void rms_y512(float *y, uint16_t *y16, uint16_t *x16, const float *x, float iv, const float *w,
                               int n) {
    if (y16 || x16) rms_y_body(y, y16, x16, x, iv, w, n, 1);
    else rms_y_body(y, NULL, NULL, x, iv, w, n, 0);
}

LB_AVX512 static void rms_dw512(float *dw, const float *dy, const float *x, float iv, long lo, long hi) {
    __m512 vi = _mm512_set1_ps(iv);
    for (long c = lo; c < hi; c += 16) {
        __mmask16 m = tail16((int)(hi - c < 16 ? hi - c : 16));
        __m512 t = _mm512_mul_ps(_mm512_mul_ps(ld16(m, dy + c), ld16(m, x + c)), vi);
        st16(dw + c, m, _mm512_add_ps(ld16(m, dw + c), t));
    }
}

LB_AVX512 static void rms_dx512(float *dx, const float *x, const float *w, const float *dy, float iv,
                                float k, int n) {
    __m512 vi = _mm512_set1_ps(iv), vk = _mm512_set1_ps(k);
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(vi, ld16(m, w + c)), ld16(m, dy + c)),
                                 _mm512_mul_ps(ld16(m, x + c), vk));
        st16(dx + c, m, _mm512_add_ps(ld16(m, dx + c), t));
    }
}

// Σ a·b·c over n floats, in double (the dot of RMS norm's backward).
LB_AVX512 static double dot3_512(const float *a, const float *b, const float *c3, int n) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 va = ld16(m, a + c), vb = ld16(m, b + c),
               vc = ld16(m, c3 + c);
#define LO_PD(v) _mm512_cvtps_pd(_mm512_castps512_ps256(v))
#define HI_PD(v) _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
        s0 = _mm512_fmadd_pd(_mm512_mul_pd(LO_PD(va), LO_PD(vb)), LO_PD(vc), s0);
        s1 = _mm512_fmadd_pd(_mm512_mul_pd(HI_PD(va), HI_PD(vb)), HI_PD(vc), s1);
#undef LO_PD
#undef HI_PD
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}
#endif

static lb_real max_row(const lb_real *row, int n) {
#ifdef LB_VEC
    if (vec512_ok()) return max_row512(row, n);
    if (vec_ok()) return max_row_avx2(row, n);
#endif
    lb_real mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

// row[j] = exp(row[j] − mx) when store, returning Σ (in double); -inf entries give 0.
static double exp_row(lb_real *row, int n, lb_real mx, int store) {
#ifdef LB_VEC
    if (vec512_ok()) return exp_row512(row, n, mx, store);
    if (vec_ok()) return exp_row_avx2(row, n, mx, store);
#endif
    double s = 0;
    for (int j = 0; j < n; j++) {
        lb_real y = row[j] == -INFINITY ? 0 : exp(row[j] - mx);
        if (store) row[j] = y;
        s += y;
    }
    return s;
}

static void scale_row(lb_real *row, int n, lb_real c) {
#ifdef LB_VEC
    if (vec512_ok()) {
        scale_row512(row, n, c);
        return;
    }
    if (vec_ok()) {
        scale_row_avx2(row, n, c);
        return;
    }
#endif
    for (int j = 0; j < n; j++) row[j] *= c;
}

// 1 when the fused AVX-512 kernels run (float build, CPU with AVX-512 F and DQ).
static int use512(void) {
#ifdef LB_VEC
    return vec512_ok();
#else
    return 0;
#endif
}

typedef struct {
    const uint16_t *src;
    lb_real *dst;
} widen_job_t;

static void widen_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const widen_job_t *j = ctx;
    lb_bf16_to_real(j->src + lo, (size_t)(hi - lo), j->dst + lo);
}

void bf16_to_real_p(lb_pool_t *pool, const uint16_t *src, size_t n, lb_real *dst) {
    widen_job_t j = {src, dst};
    lb_pool_run(n > 32768 ? pool : NULL, (long)n, widen_job, &j);
}

// ---------------------------------------------------------------------------------------
// Norms and activations. Each has a parallel form (pool, run by the model) and the
// serial form the gradient test calls (pool NULL): the same code.

typedef struct {
    int D;
    long N;
    const lb_real *x, *w, *inv, *dy;
    lb_real eps;
    lb_real *y, *dw, *dx;
    lb_real *inv_out;
    uint16_t *y16, *x16;  // rms_forward16_p: y and x also rounded to bf16 (each optional)
} rms_job_t;

static void rms_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    int v512 = use512();
    (void)v512;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D;
        double ss = 0;
#ifdef LB_VEC
        if (v512)
            ss = sumsq512(xr, D);
        else
#endif
            for (int k = 0; k < D; k++) ss += (double)xr[k] * xr[k];
        lb_real iv = (lb_real)(1.0 / sqrt(ss / D + (double)j->eps));
        j->inv_out[r] = iv;
        lb_real *yr = j->y + (size_t)r * D;
        uint16_t *y16 = j->y16 ? j->y16 + (size_t)r * D : NULL, *x16 = j->x16 ? j->x16 + (size_t)r * D : NULL;
#ifdef LB_VEC
        if (v512) {
            rms_y512(yr, y16, x16, xr, iv, j->w, D);
            continue;
        }
#endif
        for (int k = 0; k < D; k++) {
            yr[k] = xr[k] * iv * j->w[k];
            if (y16) y16[k] = lb_f32_to_bf16((float)yr[k]);
            if (x16) x16[k] = lb_f32_to_bf16((float)xr[k]);
        }
    }
}

// T5 layer norm (RMS): y = x · (mean(x²) + eps)^-½ · w; inv [N] keeps the factor.
void rms_forward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                          lb_real eps, lb_real *inv, lb_real *y) {
    rms_forward16_p(pool, N, D, x, w, eps, inv, y, NULL, NULL);
}

void rms_forward16_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w, lb_real eps, lb_real *inv,
                     lb_real *y, uint16_t *y16, uint16_t *x16) {
    rms_job_t j = {D, N, x, w, NULL, NULL, eps, y, NULL, NULL, inv, y16, x16};
    lb_pool_run(N >= 64 ? pool : NULL, N, rms_fwd_job, &j);
}

static void rms_apply_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    int v512 = use512();
    (void)v512;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D;
        lb_real *yr = j->y + (size_t)r * D, iv = j->inv[r];
        uint16_t *y16 = j->y16 ? j->y16 + (size_t)r * D : NULL;
#ifdef LB_VEC
        if (v512) {
            rms_y512(yr, y16, NULL, xr, iv, j->w, D);
            continue;
        }
#endif
        for (int k = 0; k < D; k++) {
            yr[k] = xr[k] * iv * j->w[k];
            if (y16) y16[k] = lb_f32_to_bf16((float)yr[k]);
        }
    }
}

// y = x·inv·w from the saved factor: the forward's output again, bit for bit.
void rms_apply_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                        const lb_real *inv, lb_real *y) {
    rms_apply16_p(pool, N, D, x, w, inv, y, NULL);
}

void rms_apply16_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w, const lb_real *inv, lb_real *y,
                   uint16_t *y16) {
    rms_job_t j = {D, N, x, w, inv, NULL, 0, y, NULL, NULL, NULL, y16, NULL};
    lb_pool_run(N >= 64 ? pool : NULL, N, rms_apply_job, &j);
}

// dw over columns [lo, hi) (all rows, in row order: the sum is the same for any split).
static void rms_dw_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    int v512 = use512();
    (void)v512;
    for (size_t r = 0; r < (size_t)j->N; r++) {
        const lb_real *xr = j->x + r * D, *dr = j->dy + r * D;
        lb_real iv = j->inv[r];
#ifdef LB_VEC
        if (v512) {
            rms_dw512(j->dw, dr, xr, iv, lo, hi);
            continue;
        }
#endif
        for (long k = lo; k < hi; k++) j->dw[k] += dr[k] * xr[k] * iv;
    }
}

static void rms_dx_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    int v512 = use512();
    (void)v512;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D, *dr = j->dy + (size_t)r * D;
        lb_real *dxr = j->dx + (size_t)r * D;
        double dot = 0;
#ifdef LB_VEC
        if (v512)
            dot = dot3_512(dr, j->w, xr, D);
        else
#endif
            for (int k = 0; k < D; k++) dot += (double)dr[k] * j->w[k] * xr[k];
        lb_real iv = j->inv[r], c = (lb_real)(dot * iv * iv * iv / D);
#ifdef LB_VEC
        if (v512) {
            rms_dx512(dxr, xr, j->w, dr, iv, c, D);
            continue;
        }
#endif
        for (int k = 0; k < D; k++) dxr[k] += iv * j->w[k] * dr[k] - xr[k] * c;
    }
}

// dw += Σ_r dy·x·inv (when dw); dx += inv·w·dy − x·inv³/D·Σ_j dy·w·x (when dx).
void rms_backward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                           const lb_real *inv, const lb_real *dy, lb_real *dw, lb_real *dx) {
    rms_job_t j = {D, N, x, w, inv, dy, 0, NULL, dw, dx, NULL, NULL, NULL};
    if (dw) lb_pool_run(D >= 64 ? pool : NULL, D, rms_dw_job, &j);
    if (dx) lb_pool_run(N >= 64 ? pool : NULL, N, rms_dx_job, &j);
}

// Activations and their derivatives (transformers' ACT2FN).
static inline lb_real act_f(t5_act_t a, lb_real x) {
    switch (a) {
    case T5_ACT_RELU: return x > 0 ? x : 0;
    case T5_ACT_GELU: return R(0.5) * x * (1 + erf(x * R(0.70710678118654752440)));
    case T5_ACT_GELU_NEW: {
        lb_real u = R(0.79788456080286535588) * (x + R(0.044715) * x * x * x);
        return R(0.5) * x * (1 + tanh(u));
    }
    case T5_ACT_SILU: return x / (1 + exp(-x));
    }
    return 0;
}

static inline lb_real act_df(t5_act_t a, lb_real x) {
    switch (a) {
    case T5_ACT_RELU: return x > 0 ? 1 : 0;
    case T5_ACT_GELU:
        return R(0.5) * (1 + erf(x * R(0.70710678118654752440))) +
               x * R(0.39894228040143267794) * exp(R(-0.5) * x * x);
    case T5_ACT_GELU_NEW: {
        lb_real c = R(0.79788456080286535588);
        lb_real u = c * (x + R(0.044715) * x * x * x);
        lb_real t = tanh(u);
        return R(0.5) * (1 + t) + R(0.5) * x * (1 - t * t) * c * (1 + R(3 * 0.044715) * x * x);
    }
    case T5_ACT_SILU: {
        lb_real s = 1 / (1 + exp(-x));
        return s * (1 + x * (1 - s));
    }
    }
    return 0;
}

typedef struct {
    t5_act_t act;
    const lb_real *a, *b, *dg;
    lb_real *g, *da, *db;
    const lb_drop_t *drop;  // dropout of g (forward) and of dg (backward), or NULL
    uint64_t site;
    float p;
    const uint16_t *a16, *b16;  // the pre-activations in bf16, read instead of a, b
    uint16_t *ka16, *kb16;      // forward: a, b rounded to bf16 here (kept for the backward)
} act_job_t;

// Blocks of this many elements run act then dropout (and the bf16 widening or rounding)
// while in cache.
#define ACT_BLOCK 4096

static void round_bf16(const lb_real *src, size_t n, uint16_t *dst);

// g [n] = act(a)·b (or act(a) when b is NULL) over [0, n).
static void act_fwd_range(const act_job_t *j, const lb_real *a, const lb_real *b, lb_real *g, long n) {
#ifdef LB_VEC
    if (j->act == T5_ACT_GELU_NEW && vec512_ok()) {
        gelu_fwd512(0, n, a, b, g);
        return;
    }
    if (j->act == T5_ACT_GELU_NEW && vec_ok()) {
        gelu_fwd_avx2(0, n, a, b, g);
        return;
    }
#endif
    for (long i = 0; i < n; i++) g[i] = b ? act_f(j->act, a[i]) * b[i] : act_f(j->act, a[i]);
}

// da [n] = dg·b·act'(a), db = dg·act(a) (gated: b and db not NULL) over [0, n).
static void act_bwd_range(const act_job_t *j, const lb_real *a, const lb_real *b, const lb_real *dg,
                          lb_real *da, lb_real *db, long n) {
#ifdef LB_VEC
    if (j->act == T5_ACT_GELU_NEW && vec512_ok()) {
        gelu_bwd512(0, n, a, b, dg, da, db);
        return;
    }
    if (j->act == T5_ACT_GELU_NEW && vec_ok()) {
        gelu_bwd_avx2(0, n, a, b, dg, da, db);
        return;
    }
#endif
    for (long i = 0; i < n; i++) {
        lb_real d = dg[i];
        if (b) {
            db[i] = d * act_f(j->act, a[i]);
            da[i] = d * b[i] * act_df(j->act, a[i]);
        } else {
            da[i] = d * act_df(j->act, a[i]);
        }
    }
}

// The pre-activations of elements [b0, b0 + n): j's fp32 ones, or a16, b16 widened into
// wa, wb (exact).
static void act_inputs(const act_job_t *j, long b0, long n, lb_real *wa, lb_real *wb, const lb_real **a,
                       const lb_real **b) {
    if (j->a16) {
        lb_bf16_to_real(j->a16 + b0, (size_t)n, wa);
        if (j->b16) lb_bf16_to_real(j->b16 + b0, (size_t)n, wb);
        *a = wa;
        *b = j->b16 ? wb : NULL;
    } else {
        *a = j->a + b0;
        *b = j->b ? j->b + b0 : NULL;
    }
}

static void act_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const act_job_t *j = ctx;
    int on = lb_drop_on(j->drop, j->p);
    if (!on && !j->a16 && !j->ka16) {
        act_fwd_range(j, j->a + lo, j->b ? j->b + lo : NULL, j->g + lo, hi - lo);
        return;
    }
    lb_real wa[ACT_BLOCK], wb[ACT_BLOCK];
    for (long b0 = lo; b0 < hi; b0 += ACT_BLOCK) {
        long n = hi - b0 < ACT_BLOCK ? hi - b0 : ACT_BLOCK;
        const lb_real *a, *b;
        act_inputs(j, b0, n, wa, wb, &a, &b);
        act_fwd_range(j, a, b, j->g + b0, n);
        if (on) lb_dropout_apply_at(j->g + b0, (size_t)n, j->drop, j->site, (uint64_t)b0, j->p);
        if (j->ka16) round_bf16(a, (size_t)n, j->ka16 + b0);
        if (j->kb16 && b) round_bf16(b, (size_t)n, j->kb16 + b0);
    }
}

static void act_bwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const act_job_t *j = ctx;
    int on = lb_drop_on(j->drop, j->p);
    if (!on && !j->a16) {
        act_bwd_range(j, j->a + lo, j->b ? j->b + lo : NULL, j->dg + lo, j->da + lo, j->db ? j->db + lo : NULL,
                      hi - lo);
        return;
    }
    lb_real wa[ACT_BLOCK], wb[ACT_BLOCK];
    for (long b0 = lo; b0 < hi; b0 += ACT_BLOCK) {
        long n = hi - b0 < ACT_BLOCK ? hi - b0 : ACT_BLOCK;
        const lb_real *a, *b, *dg = j->dg + b0;
        act_inputs(j, b0, n, wa, wb, &a, &b);
        if (on) {  // dg dropped into da, then da from it
            drop_copy_range(j->da + b0, dg, (size_t)n, j->drop, j->site, (uint64_t)b0, j->p);
            dg = j->da + b0;
        }
        act_bwd_range(j, a, b, dg, j->da + b0, j->db ? j->db + b0 : NULL, n);
    }
}

static void act_run(lb_pool_t *pool, size_t n, void (*fn)(void *, long, long, int), act_job_t *j) {
    lb_pool_run(n >= 4096 ? pool : NULL, (long)n, fn, j);
}

// Gated: g = act(a)·b; plain (b NULL): g = act(a). n elements.
void act_forward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g) {
    act_job_t j = {.act = act, .a = a, .b = b, .g = g};
    act_run(pool, n, act_fwd_job, &j);
}

// act_forward_p, then g = drop(g) (site, p), block by block while in cache.
void act_forward_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                        lb_real *g, const lb_drop_t *drop, uint64_t site, float p) {
    act_job_t j = {.act = act, .a = a, .b = b, .g = g, .drop = drop, .site = site, .p = p};
    act_run(pool, n, act_fwd_job, &j);
}

void act_forward_keep16_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g, const lb_drop_t *drop, uint64_t site, float p, uint16_t *a16,
                          uint16_t *b16) {
    act_job_t j = {.act = act, .a = a, .b = b, .g = g, .drop = drop, .site = site, .p = p, .ka16 = a16, .kb16 = b16};
    act_run(pool, n, act_fwd_job, &j);
}

void act_forward16_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const uint16_t *a16, const uint16_t *b16,
                          lb_real *g, const lb_drop_t *drop, uint64_t site, float p) {
    act_job_t j = {.act = act, .a16 = a16, .b16 = b16, .g = g, .drop = drop, .site = site, .p = p};
    act_run(pool, n, act_fwd_job, &j);
}

// From dg: da = dg·b·act'(a) (in place of dg allowed), db = dg·act(a) when b.
void act_backward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                           const lb_real *dg, lb_real *da, lb_real *db) {
    act_job_t j = {.act = act, .a = a, .b = b, .dg = dg, .da = da, .db = db};
    act_run(pool, n, act_bwd_job, &j);
}

// act_backward_p from drop(dg) (site, p): the dropped gradient is written to da first,
// block by block (da may be dg).
void act_backward_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                         const lb_real *dg, lb_real *da, lb_real *db, const lb_drop_t *drop,
                         uint64_t site, float p) {
    act_job_t j = {.act = act, .a = a, .b = b, .dg = dg, .da = da, .db = db, .drop = drop, .site = site, .p = p};
    act_run(pool, n, act_bwd_job, &j);
}

void act_backward16_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const uint16_t *a16, const uint16_t *b16,
                           const lb_real *dg, lb_real *da, lb_real *db, const lb_drop_t *drop, uint64_t site,
                           float p) {
    act_job_t j = {.act = act, .a16 = a16, .b16 = b16, .dg = dg, .da = da, .db = db, .drop = drop, .site = site, .p = p};
    act_run(pool, n, act_bwd_job, &j);
}


typedef struct {
    const attn_shape_t *s;
    const lb_real *q, *k, *v, *P, *dctx;
    lb_real *Pw, *pd, *ctx, *ds, *dq, *dk, *dv, *dbias;
    const lb_drop_t *drop;
    uint16_t *P16;  // P kept in bf16 (attn_core_forward16_p), else NULL
    // q, k, v kept in bf16: written by attn_core_forward16_p (when not NULL), read
    // instead of q, k, v by attn_core_backward16_p
    uint16_t *q16, *k16, *v16;
} attn_job_t;

// dst [n] = src [n] rounded to bf16 (lb_f32_to_bf16, 16 lanes at a time with AVX-512).
static void round_bf16(const lb_real *src, size_t n, uint16_t *dst) {
    size_t i = 0;
#ifdef LB_VEC
    if (use512()) i = round_bf16_512(src, n, dst);
#endif
    for (; i < n; i++) dst[i] = lb_f32_to_bf16((float)src[i]);
}

// The [T, K] slice of head h of one batch row of x [·, H·K] rounded to bf16 into the same
// place of dst (laid out as x).
static void round_slice16(const lb_real *src, int T, int K, int HK, int h, uint16_t *dst) {
    for (int t = 0; t < T; t++) round_bf16(src + (size_t)t * HK + h * K, (size_t)K, dst + (size_t)t * HK + h * K);
}

// C [M, N] (fp32, ldc) = op(A)·op(B) with A and B in bf16 (lb_bf16_gemm's operands): on
// the bf16 hardware, or where oneDNN refuses (or in the double build) widened and through
// lb_gemm, the same product of the same rounded values.
static void gemm16(int ta, int tb, int M, int N, int K, const uint16_t *A, long lda, const uint16_t *B,
                   long ldb, lb_real *C, long ldc) {
#ifndef LB_REAL_DOUBLE
    if (!lb_bf16_gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, 0)) return;
#endif
    size_t na = ta ? (size_t)(K - 1) * lda + M : (size_t)(M - 1) * lda + K;
    size_t nb = tb ? (size_t)(N - 1) * ldb + K : (size_t)(K - 1) * ldb + N;
    lb_real *a = xmalloc(sizeof(lb_real) * na), *b = xmalloc(sizeof(lb_real) * nb);
    lb_bf16_to_real(A, na, a);
    lb_bf16_to_real(B, nb, b);
    lb_gemm(ta, tb, M, N, K, 1, a, lda, b, ldb, 0, C, ldc);
    free(a);
    free(b);
}

// A thread's scratch of the bf16 core: two slices of Tq·Tk fp32 scores (the dropped P and
// P), then Tq·Tk bf16 values (the dropped P, later dS) and Tq·K (one head of dctx), in
// fp32 values rounded up to a cache line.
size_t attn_core_pd16(const attn_shape_t *s) {
    size_t tt = (size_t)s->Tq * s->Tk, b16 = tt + (size_t)s->Tq * s->K;
    return 2 * tt + ((b16 + 1) / 2 + 15) / 16 * 16;
}

// The scalar (and AVX2) form of one score row: bias, mask, softmax, each a pass.
static void attn_row_fwd(lb_real *row, int Tk, int lim, const lb_real *br, const int32_t *km) {
    if (br)
        for (int c = 0; c < lim; c++) row[c] += br[c];
    for (int c = lim; c < Tk; c++) row[c] = -INFINITY;
    if (km)
        for (int c = 0; c < lim; c++)
            if (!km[c]) row[c] = -INFINITY;
    lb_real mx = max_row(row, Tk);
    if (mx == -INFINITY) {  // every key hidden: the row stays 0
        memset(row, 0, sizeof(lb_real) * Tk);
        return;
    }
    double sum = exp_row(row, Tk, mx, 1);
    scale_row(row, Tk, sum > 0 ? (lb_real)(1.0 / sum) : 0);
}

// The scalar form of one row of the softmax backward: d = P·(d − Σ P·d).
static void attn_row_bwd(lb_real *d, const lb_real *p, int Tk) {
    double dot = 0;
    for (int c = 0; c < Tk; c++) dot += (double)p[c] * d[c];
    lb_real dt = (lb_real)dot;
    for (int c = 0; c < Tk; c++) d[c] = p[c] * (d[c] - dt);
}

// One (b, h) of the forward: scores, softmax, dropout, P·v. Items write disjoint slices
// of P and ctx; the dropped probabilities go to this thread's slice of pd (tid·Tq·Tk),
// which stays in cache for the product that reads it.
static void attn_fwd_job(void *ctx, long lo, long hi, int tid) {
    const attn_job_t *j = ctx;
    const attn_shape_t *s = j->s;
    int H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    int on = lb_drop_on(j->drop, s->p_drop), v512 = use512();
    lb_drop_consts_t dk = {0, 0, 0};
    if (on) dk = lb_drop_consts(j->drop, s->site, s->p_drop);
    (void)dk;
    // kept in bf16 each thread has two slices: the dropped P, then P itself, and the
    // dropped P in bf16 for the product with v
    lb_real *pdt = j->pd + (size_t)tid * (j->P16 ? attn_core_pd16(s) : tt);
    uint16_t *pd16 = j->P16 ? (uint16_t *)(pdt + 2 * tt) : NULL;
    for (long it = lo; it < hi; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        size_t o = (size_t)it * tt, qo = (size_t)b * Tq * HK, ko = (size_t)b * Tk * HK;
        lb_real *P = j->P16 ? pdt + tt : j->Pw + o;
        if (j->P16) {  // q, k, v rounded once: the products' inputs and the backward's
            round_slice16(j->q + qo, Tq, K, HK, h, j->q16 + qo);
            round_slice16(j->k + ko, Tk, K, HK, h, j->k16 + ko);
            round_slice16(j->v + ko, Tk, K, HK, h, j->v16 + ko);
            gemm16(0, 1, Tq, Tk, K, j->q16 + qo + h * K, HK, j->k16 + ko + h * K, HK, P, Tk);
        } else {
            lb_gemm(0, 1, Tq, Tk, K, 1, j->q + qo + h * K, HK, j->k + ko + h * K, HK, 0, P, Tk);
        }
        const int32_t *km = s->key_mask ? s->key_mask + (size_t)b * Tk : NULL;
        for (int i = 0; i < Tq; i++) {
            lb_real *row = P + (size_t)i * Tk;
            const lb_real *br = s->bias ? s->bias + ((size_t)h * Tq + i) * Tk : NULL;
            int lim = s->causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
#ifdef LB_VEC
            if (v512) {
                attn_row_fwd512(row, Tk, lim, br, km, on ? pdt + (size_t)i * Tk : NULL,
                                dk.base + o + (size_t)i * Tk, dk.thr, dk.scale);
                continue;
            }
#endif
            attn_row_fwd(row, Tk, lim, br, km);
        }
        const lb_real *Pd = P;
        if (on) {
            if (!v512) {
                memcpy(pdt, P, sizeof(lb_real) * tt);
                lb_dropout_apply_at(pdt, tt, j->drop, s->site, o, s->p_drop);
            }
            Pd = pdt;
        }
        if (j->P16) {
            round_bf16(P, tt, j->P16 + o);
            const uint16_t *Pd16 = j->P16 + o;
            if (on) {
                round_bf16(Pd, tt, pd16);
                Pd16 = pd16;
            }
            gemm16(0, 0, Tq, K, Tk, Pd16, Tk, j->v16 + ko + h * K, HK, j->ctx + qo + h * K, HK);
        } else {
            lb_gemm(0, 0, Tq, K, Tk, 1, Pd, Tk, j->v + ko + h * K, HK, 0, j->ctx + qo + h * K, HK);
        }
    }
}

void attn_core_forward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                const lb_real *k, const lb_real *v, lb_real *P, lb_real *pd,
                                lb_real *ctx, const lb_drop_t *drop) {
    attn_job_t j = {s, q, k, v, NULL, NULL, P, pd, ctx, NULL, NULL, NULL, NULL, NULL, drop, NULL, NULL, NULL, NULL};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_fwd_job, &j);
}

void attn_core_forward16_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q, const lb_real *k,
                           const lb_real *v, uint16_t *P16, lb_real *pd, lb_real *ctx, const lb_drop_t *drop,
                           uint16_t *q16, uint16_t *k16, uint16_t *v16) {
    attn_job_t j = {s, q, k, v, NULL, NULL, NULL, pd, ctx, NULL, NULL, NULL, NULL, NULL, drop, P16, q16, k16, v16};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_fwd_job, &j);
}

// FLOPs of one of the core's products (all four have the same size).
double attn_core_flops(const attn_shape_t *s) {
    return 2.0 * s->B * s->H * s->Tq * s->Tk * s->K;
}

// One (b, h) of the backward: dv, dP, dropout, softmax backward, dq, dk. The dropped
// probabilities and (without dbias, which sums dS over the batch afterwards) dS live in
// this thread's slices of pd and ds, in cache for the products that read them.
static void attn_bwd_job(void *ctx, long lo, long hi, int tid) {
    const attn_job_t *j = ctx;
    const attn_shape_t *s = j->s;
    int H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    int on = lb_drop_on(j->drop, s->p_drop), v512 = use512();
    int need_ds = j->dq || j->dk || j->dbias;
    lb_drop_consts_t dk = {0, 0, 0};
    if (on) dk = lb_drop_consts(j->drop, s->site, s->p_drop);
    (void)dk;
    lb_real *pdt = j->pd + (size_t)tid * (j->P16 ? attn_core_pd16(s) : tt);
    // kept in bf16: the bf16 operands of this (b, h), the dropped P and then dS, and dctx
    uint16_t *a16 = j->P16 ? (uint16_t *)(pdt + 2 * tt) : NULL, *dc16 = a16 ? a16 + tt : NULL;
    for (long it = lo; it < hi; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        size_t o = (size_t)it * tt, qo = (size_t)b * Tq * HK, ko = (size_t)b * Tk * HK;
        const lb_real *P = j->P16 ? pdt + tt : j->P + o, *dc = j->dctx + qo + h * K;
        if (j->P16) {
            lb_bf16_to_real(j->P16 + o, tt, pdt + tt);
            for (int t = 0; t < Tq; t++) round_bf16(dc + (size_t)t * HK, (size_t)K, dc16 + (size_t)t * K);
        }
        int have_pd = 0;
        if (j->dv) {  // dv [Tk, K] = Pdᵀ·dctx
            const lb_real *Pd = P;
            if (on) {
                drop_copy_range(pdt, P, tt, j->drop, s->site, o, s->p_drop);
                Pd = pdt;
                have_pd = 1;
            }
            if (j->P16) {
                const uint16_t *Pd16 = j->P16 + o;
                if (on) {
                    round_bf16(Pd, tt, a16);
                    Pd16 = a16;
                }
                gemm16(1, 0, Tk, K, Tq, Pd16, Tk, dc16, K, j->dv + ko + h * K, HK);
            } else {
                lb_gemm(1, 0, Tk, K, Tq, 1, Pd, Tk, dc, HK, 0, j->dv + ko + h * K, HK);
            }
        }
        if (!need_ds) continue;
        lb_real *ds = j->dbias ? j->ds + o : j->ds + (size_t)tid * tt;
        // dPd [Tq, Tk] = dctx·vᵀ
        if (j->P16)
            gemm16(0, 1, Tq, Tk, K, dc16, K, j->v16 + ko + h * K, HK, ds, Tk);
        else
            lb_gemm(0, 1, Tq, Tk, K, 1, dc, HK, j->v + ko + h * K, HK, 0, ds, Tk);
        // dS = P·(dP − Σ P·dP), dP = drop(dPd)
#ifdef LB_VEC
        if (v512) {
            for (int r = 0; r < Tq; r++)
                attn_row_bwd512(ds + (size_t)r * Tk, P + (size_t)r * Tk, Tk, on,
                                have_pd ? pdt + (size_t)r * Tk : NULL, dk.base + o + (size_t)r * Tk,
                                dk.thr, dk.scale);
        }
#endif
        if (!v512) {
            (void)have_pd;
            if (on) lb_dropout_apply_at(ds, tt, j->drop, s->site, o, s->p_drop);
            for (int r = 0; r < Tq; r++) attn_row_bwd(ds + (size_t)r * Tk, P + (size_t)r * Tk, Tk);
        }
        if (j->P16) {  // dS rounded once for both products
            if (j->dq || j->dk) round_bf16(ds, tt, a16);
            if (j->dq)  // dq [Tq, K] = dS·k
                gemm16(0, 0, Tq, K, Tk, a16, Tk, j->k16 + ko + h * K, HK, j->dq + qo + h * K, HK);
            if (j->dk)  // dk [Tk, K] = dSᵀ·q
                gemm16(1, 0, Tk, K, Tq, a16, Tk, j->q16 + qo + h * K, HK, j->dk + ko + h * K, HK);
            continue;
        }
        if (j->dq)  // dq [Tq, K] = dS·k
            lb_gemm(0, 0, Tq, K, Tk, 1, ds, Tk, j->k + ko + h * K, HK, 0, j->dq + qo + h * K, HK);
        if (j->dk)  // dk [Tk, K] = dSᵀ·q
            lb_gemm(1, 0, Tk, K, Tq, 1, ds, Tk, j->q + qo + h * K, HK, 0, j->dk + ko + h * K, HK);
    }
}

// dbias [h] += Σ_b dS[b, h], heads [lo, hi).
static void attn_dbias_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const attn_job_t *j = ctx;
    const attn_shape_t *s = j->s;
    size_t tt = (size_t)s->Tq * s->Tk;
    for (long h = lo; h < hi; h++)
        for (int b = 0; b < s->B; b++) {
            const lb_real *d = j->ds + ((size_t)b * s->H + h) * tt;
            lb_real *db = j->dbias + (size_t)h * tt;
            for (size_t e = 0; e < tt; e++) db[e] += d[e];
        }
}

// Backward of attn_core_forward_p from dctx [B·Tq, H·K]. Fills dq/dk/dv (each optional,
// overwritten) and adds Σ_b dscores to dbias [H, Tq, Tk] when dbias. pd is scratch as for
// the forward, ds scratch [B, H, Tq, Tk].
void attn_core_backward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                 const lb_real *k, const lb_real *v, const lb_real *P, lb_real *pd,
                                 lb_real *ds, const lb_real *dctx, lb_real *dq, lb_real *dk,
                                 lb_real *dv, lb_real *dbias, const lb_drop_t *drop) {
    attn_job_t j = {s, q, k, v, P, dctx, NULL, pd, NULL, ds, dq, dk, dv, dbias, drop, NULL, NULL, NULL, NULL};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_bwd_job, &j);
    if (dbias) lb_pool_run(pool, s->H, attn_dbias_job, &j);
}

void attn_core_backward16_p(lb_pool_t *pool, const attn_shape_t *s, const uint16_t *q16, const uint16_t *k16,
                            const uint16_t *v16, const uint16_t *P16, lb_real *pd, lb_real *ds,
                            const lb_real *dctx, lb_real *dq, lb_real *dk, lb_real *dv, lb_real *dbias,
                            const lb_drop_t *drop) {
    attn_job_t j = {s, NULL, NULL, NULL, NULL, dctx, NULL, pd, NULL, ds, dq, dk, dv, dbias, drop, (uint16_t *)P16,
                    (uint16_t *)q16, (uint16_t *)k16, (uint16_t *)v16};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_bwd_job, &j);
    if (dbias) lb_pool_run(pool, s->H, attn_dbias_job, &j);
}

typedef struct {
    int V;
    lb_real *logits;
    const int32_t *labels;
    double *row_loss;
    lb_real scale;
} xent_job_t;

static void xent_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const xent_job_t *j = ctx;
    for (long r = lo; r < hi; r++) {
        j->row_loss[r] = 0;
        if (j->labels[r] < 0) continue;
        lb_real *l = j->logits + (size_t)r * j->V;
        lb_real mx = max_row(l, j->V);
        double s = exp_row(l, j->V, mx, 0);
        j->row_loss[r] = log(s) + (double)mx - (double)l[j->labels[r]];
    }
}

// Cross entropy over rows with label >= 0: returns Σ loss (double) and the count in *n.
double xent_forward_p(lb_pool_t *pool, int N, int V, const lb_real *logits,
                             const int32_t *labels, int *n, double *row_loss) {
    xent_job_t j = {V, (lb_real *)(uintptr_t)logits, labels, row_loss, 0};
    lb_pool_run(pool, N, xent_fwd_job, &j);
    double sum = 0;
    int cnt = 0;
    for (int r = 0; r < N; r++)
        if (labels[r] >= 0) {
            sum += row_loss[r];
            cnt++;
        }
    *n = cnt;
    return sum;
}

static void xent_bwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const xent_job_t *j = ctx;
    int V = j->V;
    for (long r = lo; r < hi; r++) {
        lb_real *l = j->logits + (size_t)r * V;
        if (j->labels[r] < 0) {
            memset(l, 0, sizeof(lb_real) * V);
            continue;
        }
        lb_real mx = max_row(l, V);
        double s = exp_row(l, V, mx, 1);
        scale_row(l, V, (lb_real)(j->scale / s));
        l[j->labels[r]] -= j->scale;
    }
}

// logits become dlogits = scale·(softmax − onehot); ignored rows become 0.
void xent_backward_p(lb_pool_t *pool, int N, int V, lb_real *logits, const int32_t *labels,
                            lb_real scale) {
    xent_job_t j = {V, logits, labels, NULL, scale};
    lb_pool_run(pool, N, xent_bwd_job, &j);
}
