// Dropout, the one home of its masks and passes: T5's (embeddings, residuals, attention
// probabilities, the feed-forward's inner activation) and LoRA's input dropout. A mask is
// a pure function of (seed, step, site, element index), never a stream of random numbers:
// the backward regenerates the forward's mask instead of storing it, a pass split over
// threads or blocks gets the same mask, and vector code (AVX-512, AVX2) keeps exactly the
// elements the scalar lb_drop_keep keeps. Inverted dropout: a kept value is scaled by
// 1/(1-p), forward and backward alike.
#ifndef LB_DROPOUT_H
#define LB_DROPOUT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"
#include "vec512.h"

typedef struct lb_pool lb_pool_t;  // the engine's worker threads (linear.h)

// Random state of one forward/backward: seed and step select the masks; training = 0
// turns every dropout off (evaluation).
typedef struct {
    uint64_t seed;
    uint64_t step;
    int training;
} lb_drop_t;

// 1 when dropout of probability p is active for this pass.
static inline int lb_drop_on(const lb_drop_t *d, float p) {
    return d && d->training && p > 0;
}

// The hash input of element 0 of a site's mask (element i hashes base + i).
static inline uint64_t lb_drop_base(const lb_drop_t *d, uint64_t site) {
    return d->seed * 0x9E3779B97F4A7C15ull + d->step * 0xBF58476D1CE4E5B9ull + site * 0x94D049BB133111EBull;
}

// Inverted-dropout keep test for element i of a site: 1 = keep (scale by 1/(1-p)).
static inline int lb_drop_keep(const lb_drop_t *d, uint64_t site, uint64_t i, float p) {
    uint64_t z = lb_drop_base(d, site) + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

// A site's constants for vector code: element i hashes base + i and is kept ⟺
// (hash >> 40) >= thr (= ⌈p·2^24⌉, the same test as lb_drop_keep's, both sides exact).
typedef struct {
    uint64_t base, thr;
    float scale;
} lb_drop_consts_t;

static inline lb_drop_consts_t lb_drop_consts(const lb_drop_t *d, uint64_t site, float p) {
    lb_drop_consts_t k = {lb_drop_base(d, site), (uint64_t)ceil((double)p * 16777216.0),
                          (float)(1.0 / (1.0 - (double)p))};
    return k;
}

#ifdef LB_VEC512
// lb_drop_keep's hash for 8 consecutive hash inputs z; the keep bits against thr.
LB_AVX512 static inline __mmask8 lb_drop_keep8(__m512i z, __m512i thr) {
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                           _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ull));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                           _mm512_set1_epi64((long long)0x94D049BB133111EBull));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
    return _mm512_cmpge_epu64_mask(_mm512_srli_epi64(z, 40), thr);
}

// The keep mask of the 16 elements whose hash inputs start at base (base + i: see
// lb_drop_consts).
LB_AVX512 static inline __mmask16 lb_drop_keep16(uint64_t base, __m512i thr) {
    __m512i z = _mm512_add_epi64(_mm512_set1_epi64((long long)base), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
    __mmask8 lo = lb_drop_keep8(z, thr);
    __mmask8 hi = lb_drop_keep8(_mm512_add_epi64(z, _mm512_set1_epi64(8)), thr);
    return (__mmask16)((unsigned)lo | ((unsigned)hi << 8));
}
#endif

// x[i] = keep ? x[i] / (1 - p) : 0 with the mask of element off + i of the site, for
// i < n (forward and backward are the same map), whether or not d is training: AVX-512 or
// AVX2 where the CPU has it, bit for bit the masks of lb_drop_keep.
void lb_dropout_apply_at(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, uint64_t off, float p);

// lb_dropout_apply_at of the whole site spread over the pool (nothing when dropout is off
// for p: evaluation).
void lb_dropout_apply_par(lb_pool_t *p, lb_real *x, size_t n, const lb_drop_t *d, uint64_t site,
                          float p_drop);

// x_out[i] = x[i] + drop(o)[i], the mask of element off + i (no dropout when it is off
// for p), in one pass; o is left as it was. x_out may be x.
void drop_add_range(lb_real *x_out, const lb_real *x, const lb_real *o, size_t n, const lb_drop_t *d,
                    uint64_t site, uint64_t off, float p);

// dst[i] = drop(src)[i], the mask of element off + i (a copy when dropout is off for p),
// in one pass; dst may be src.
void drop_copy_range(lb_real *dst, const lb_real *src, size_t n, const lb_drop_t *d, uint64_t site,
                     uint64_t off, float p);

// drop_add_range over the pool: x_out = x + drop(o) (the residual's dropout; LoRA's input
// gradient), the masks of lb_dropout_apply_par.
void drop_add_p(lb_pool_t *pool, lb_real *x_out, const lb_real *x, const lb_real *o, size_t n,
                const lb_drop_t *d, uint64_t site, float p);

// dst = drop(src) over the pool in one pass (memcpy, then lb_dropout_apply_par, fused).
void drop_copy_p(lb_pool_t *pool, lb_real *dst, const lb_real *src, size_t n, const lb_drop_t *d,
                 uint64_t site, float p);

#endif
