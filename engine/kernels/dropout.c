// Dropout's masks and passes (dropout.h): the scalar reference, AVX-512 (F + DQ: native
// 64-bit lane multiplies for the hash) and AVX2 (emulated ones), each keeping exactly the
// elements lb_drop_keep keeps; passes over the pool split by index, so a mask does not
// depend on the thread count.
#include "dropout.h"
#include "linear.h"

#include <string.h>

#ifdef LB_VEC512  // the same build condition: x86-64, float, GCC or clang
// a·b mod 2^64 per 64-bit lane (AVX2 has no 64-bit multiply).
__attribute__((target("avx2"))) static inline __m256i mul64(__m256i a, __m256i b) {
    __m256i lo = _mm256_mul_epu32(a, b);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                     _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

// lb_drop_keep's hash for 4 consecutive indices; returns z >> 40 per lane.
__attribute__((target("avx2"))) static inline __m256i drop_bits4(__m256i z) {
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), _mm256_set1_epi64x((long long)0xBF58476D1CE4E5B9ull));
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), _mm256_set1_epi64x((long long)0x94D049BB133111EBull));
    z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
    return _mm256_srli_epi64(z, 40);
}

// The same masks as the scalar loop, 8 elements at a time: keep ⟺ (z >> 40)·2^-24 >= p
// ⟺ (z >> 40) >= ⌈p·2^24⌉ (both sides exact).
__attribute__((target("avx2"))) static size_t drop_avx2(float *x, size_t n, uint64_t base, float p) {
    double thr_d = ceil((double)p * 16777216.0);
    __m256i thr = _mm256_set1_epi32((int)thr_d - 1);  // keep ⟺ k > thr − 1
    __m256 sc = _mm256_set1_ps((float)(1.0 / (1.0 - (double)p)));
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i idx = _mm256_add_epi64(_mm256_set1_epi64x((long long)base), _mm256_setr_epi64x(0, 1, 2, 3));
    const __m256i four = _mm256_set1_epi64x(4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i k0 = drop_bits4(idx);
        idx = _mm256_add_epi64(idx, four);
        __m256i k1 = drop_bits4(idx);
        idx = _mm256_add_epi64(idx, four);
        // low dwords of the 64-bit lanes into one vector of 8 (k < 2^24 fits)
        __m128i a = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(k0, pick));
        __m128i b = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(k1, pick));
        __m256i k = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, thr));
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), sc);
        _mm256_storeu_ps(x + i, _mm256_and_ps(v, keep));
    }
    return i;
}
#endif

#ifdef LB_VEC512
// dst = drop(src) for n elements whose mask indices start at base (dst may be src).
LB_AVX512 static void drop_copy512(float *dst, const float *src, size_t n, uint64_t base, uint64_t thr64, float sc) {
    __m512i thr = _mm512_set1_epi64((long long)thr64);
    __m512 vs = _mm512_set1_ps(sc);
    for (size_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16((int)(n - c < 16 ? n - c : 16));
        __m512 v = ld16(m, src + c);
        st16(dst + c, m, _mm512_maskz_mul_ps(lb_drop_keep16(base + c, thr), v, vs));
    }
}

// x_out = x + drop(o) for n elements whose mask indices start at base; drop 0: x + o.
LB_AVX512 static void drop_add512(float *x_out, const float *x, const float *o, size_t n, int drop,
                                  uint64_t base, uint64_t thr64, float sc) {
    __m512i thr = _mm512_set1_epi64((long long)thr64);
    __m512 vs = _mm512_set1_ps(sc);
    for (size_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16((int)(n - c < 16 ? n - c : 16));
        __m512 v = ld16(m, o + c);
        if (drop) v = _mm512_maskz_mul_ps(lb_drop_keep16(base + c, thr), v, vs);
        st16(x_out + c, m, _mm512_add_ps(ld16(m, x + c), v));
    }
}
#endif

// dst = drop(src) in one AVX-512 pass where the CPU has it (dst may be src): 1 when done.
static int drop_copy_vec(lb_real *dst, const lb_real *src, size_t n, const lb_drop_t *d, uint64_t site,
                         uint64_t off, float p) {
#ifdef LB_VEC512
    if (vec512_ok()) {
        lb_drop_consts_t k = lb_drop_consts(d, site, p);
        drop_copy512(dst, src, n, k.base + off, k.thr, k.scale);
        return 1;
    }
#else
    (void)dst, (void)src, (void)n, (void)d, (void)site, (void)off, (void)p;
#endif
    return 0;
}

void lb_dropout_apply_at(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, uint64_t off, float p) {
    if (drop_copy_vec(x, x, n, d, site, off, p)) return;
    lb_real s = (lb_real)(1.0 / (1.0 - (double)p));
    size_t i = 0;
#ifdef LB_VEC512
    if (p > 0 && p < 1 && __builtin_cpu_supports("avx2")) i = drop_avx2(x, n, lb_drop_base(d, site) + off, p);
#endif
    for (; i < n; i++) x[i] = lb_drop_keep(d, site, off + i, p) ? x[i] * s : 0;
}

void drop_add_range(lb_real *x_out, const lb_real *x, const lb_real *o, size_t n, const lb_drop_t *d,
                    uint64_t site, uint64_t off, float p) {
    int on = lb_drop_on(d, p);
#ifdef LB_VEC512
    if (vec512_ok()) {
        lb_drop_consts_t k = {0, 0, 0};
        if (on) k = lb_drop_consts(d, site, p);
        drop_add512(x_out, x, o, n, on, k.base + off, k.thr, k.scale);
        return;
    }
#endif
    lb_real s = (lb_real)(1.0 / (1.0 - (double)p));
    for (size_t i = 0; i < n; i++) x_out[i] = x[i] + (!on ? o[i] : lb_drop_keep(d, site, off + i, p) ? o[i] * s : 0);
}

void drop_copy_range(lb_real *dst, const lb_real *src, size_t n, const lb_drop_t *d, uint64_t site,
                     uint64_t off, float p) {
    if (!lb_drop_on(d, p)) {
        if (dst != src) memmove(dst, src, sizeof(lb_real) * n);
        return;
    }
    if (drop_copy_vec(dst, src, n, d, site, off, p)) return;
    if (dst != src) memcpy(dst, src, sizeof(lb_real) * n);
    lb_dropout_apply_at(dst, n, d, site, off, p);
}

typedef struct {
    lb_real *dst;
    const lb_real *x, *src;
    const lb_drop_t *d;
    uint64_t site;
    float p;
} resid_job_t;

static void drop_add_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const resid_job_t *j = ctx;
    drop_add_range(j->dst + lo, j->x + lo, j->src + lo, (size_t)(hi - lo), j->d, j->site, (uint64_t)lo, j->p);
}

static void drop_copy_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const resid_job_t *j = ctx;
    drop_copy_range(j->dst + lo, j->src + lo, (size_t)(hi - lo), j->d, j->site, (uint64_t)lo, j->p);
}

// x_out = x + drop(o) over the pool.
void drop_add_p(lb_pool_t *pool, lb_real *x_out, const lb_real *x, const lb_real *o, size_t n,
                const lb_drop_t *d, uint64_t site, float p) {
    resid_job_t j = {x_out, x, o, d, site, p};
    lb_pool_run(n > 32768 ? pool : NULL, (long)n, drop_add_job, &j);
}

// dst = drop(src) over the pool.
void drop_copy_p(lb_pool_t *pool, lb_real *dst, const lb_real *src, size_t n, const lb_drop_t *d,
                 uint64_t site, float p) {
    resid_job_t j = {dst, NULL, src, d, site, p};
    lb_pool_run(n > 32768 ? pool : NULL, (long)n, drop_copy_job, &j);
}

void lb_dropout_apply_par(lb_pool_t *p, lb_real *x, size_t n, const lb_drop_t *d, uint64_t site,
                          float p_drop) {
    drop_copy_p(p, x, x, n, d, site, p_drop);
}
