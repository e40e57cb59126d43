// T5's kernels: see t5_ops.h. In float on x86-64 the hot loops use AVX2+FMA when the CPU
// has them; the double build of the gradient test uses the scalar code, the reference.
#include "t5_ops.h"

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
#endif

static lb_real max_row(const lb_real *row, int n) {
#ifdef LB_VEC
    if (vec_ok()) return max_row_avx2(row, n);
#endif
    lb_real mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

// row[j] = exp(row[j] − mx) when store, returning Σ (in double); -inf entries give 0.
static double exp_row(lb_real *row, int n, lb_real mx, int store) {
#ifdef LB_VEC
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
    if (vec_ok()) {
        scale_row_avx2(row, n, c);
        return;
    }
#endif
    for (int j = 0; j < n; j++) row[j] *= c;
}

// x[i] = keep ? x[i]·s : 0 for the elements [0, n) of a mask whose indices start at off.
void drop_range(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, uint64_t off, float p) {
    lb_dropout_apply_at(x, n, d, site, off, p);
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
} rms_job_t;

static void rms_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D;
        double ss = 0;
        for (int k = 0; k < D; k++) ss += (double)xr[k] * xr[k];
        lb_real iv = (lb_real)(1.0 / sqrt(ss / D + (double)j->eps));
        j->inv_out[r] = iv;
        lb_real *yr = j->y + (size_t)r * D;
        for (int k = 0; k < D; k++) yr[k] = xr[k] * iv * j->w[k];
    }
}

// T5 layer norm (RMS): y = x · (mean(x²) + eps)^-½ · w; inv [N] keeps the factor.
void rms_forward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                          lb_real eps, lb_real *inv, lb_real *y) {
    rms_job_t j = {D, N, x, w, NULL, NULL, eps, y, NULL, NULL, inv};
    lb_pool_run(N >= 64 ? pool : NULL, N, rms_fwd_job, &j);
}

static void rms_apply_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D;
        lb_real *yr = j->y + (size_t)r * D, iv = j->inv[r];
        for (int k = 0; k < D; k++) yr[k] = xr[k] * iv * j->w[k];
    }
}

// y = x·inv·w from the saved factor: the forward's output again, bit for bit.
void rms_apply_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                        const lb_real *inv, lb_real *y) {
    rms_job_t j = {D, N, x, w, inv, NULL, 0, y, NULL, NULL, NULL};
    lb_pool_run(N >= 64 ? pool : NULL, N, rms_apply_job, &j);
}

// dw over columns [lo, hi) (all rows, in row order: the sum is the same for any split).
static void rms_dw_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    for (size_t r = 0; r < (size_t)j->N; r++) {
        const lb_real *xr = j->x + r * D, *dr = j->dy + r * D;
        lb_real iv = j->inv[r];
        for (long k = lo; k < hi; k++) j->dw[k] += dr[k] * xr[k] * iv;
    }
}

static void rms_dx_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const rms_job_t *j = ctx;
    int D = j->D;
    for (long r = lo; r < hi; r++) {
        const lb_real *xr = j->x + (size_t)r * D, *dr = j->dy + (size_t)r * D;
        lb_real *dxr = j->dx + (size_t)r * D;
        double dot = 0;
        for (int k = 0; k < D; k++) dot += (double)dr[k] * j->w[k] * xr[k];
        lb_real iv = j->inv[r], c = (lb_real)(dot * iv * iv * iv / D);
        for (int k = 0; k < D; k++) dxr[k] += iv * j->w[k] * dr[k] - xr[k] * c;
    }
}

// dw += Σ_r dy·x·inv (when dw); dx += inv·w·dy − x·inv³/D·Σ_j dy·w·x (when dx).
void rms_backward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                           const lb_real *inv, const lb_real *dy, lb_real *dw, lb_real *dx) {
    rms_job_t j = {D, N, x, w, inv, dy, 0, NULL, dw, dx, NULL};
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
} act_job_t;

static void act_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const act_job_t *j = ctx;
#ifdef LB_VEC
    if (j->act == T5_ACT_GELU_NEW && vec_ok()) {
        gelu_fwd_avx2(lo, hi, j->a, j->b, j->g);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) j->g[i] = j->b ? act_f(j->act, j->a[i]) * j->b[i] : act_f(j->act, j->a[i]);
}

static void act_bwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const act_job_t *j = ctx;
#ifdef LB_VEC
    if (j->act == T5_ACT_GELU_NEW && vec_ok()) {
        gelu_bwd_avx2(lo, hi, j->a, j->b, j->dg, j->da, j->db);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) {
        lb_real d = j->dg[i];
        if (j->b) {
            j->db[i] = d * act_f(j->act, j->a[i]);
            j->da[i] = d * j->b[i] * act_df(j->act, j->a[i]);
        } else {
            j->da[i] = d * act_df(j->act, j->a[i]);
        }
    }
}

// Gated: g = act(a)·b; plain (b NULL): g = act(a). n elements.
void act_forward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g) {
    act_job_t j = {act, a, b, NULL, g, NULL, NULL};
    lb_pool_run(n >= 4096 ? pool : NULL, (long)n, act_fwd_job, &j);
}

// From dg: da = dg·b·act'(a) (in place of dg allowed), db = dg·act(a) when b.
void act_backward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                           const lb_real *dg, lb_real *da, lb_real *db) {
    act_job_t j = {act, a, b, dg, NULL, da, db};
    lb_pool_run(n >= 4096 ? pool : NULL, (long)n, act_bwd_job, &j);
}


typedef struct {
    const attn_shape_t *s;
    const lb_real *q, *k, *v, *P, *dctx;
    lb_real *Pw, *pd, *ctx, *ds, *dq, *dk, *dv, *dbias;
    const lb_drop_t *drop;
} attn_job_t;

// One (b, h) of the forward: scores, softmax, dropout, P·v. Items write disjoint slices.
static void attn_fwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const attn_job_t *j = ctx;
    const attn_shape_t *s = j->s;
    int H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    int on = lb_drop_on(j->drop, s->p_drop);
    for (long it = lo; it < hi; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        size_t o = (size_t)it * tt;
        lb_real *P = j->Pw + o;
        lb_gemm(0, 1, Tq, Tk, K, 1, j->q + (size_t)b * Tq * HK + h * K, HK,
                j->k + (size_t)b * Tk * HK + h * K, HK, 0, P, Tk);
        const int32_t *km = s->key_mask ? s->key_mask + (size_t)b * Tk : NULL;
        for (int i = 0; i < Tq; i++) {
            lb_real *row = P + (size_t)i * Tk;
            const lb_real *br = s->bias ? s->bias + ((size_t)h * Tq + i) * Tk : NULL;
            int lim = s->causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
            if (br)
                for (int c = 0; c < lim; c++) row[c] += br[c];
            for (int c = lim; c < Tk; c++) row[c] = -INFINITY;
            if (km)
                for (int c = 0; c < lim; c++)
                    if (!km[c]) row[c] = -INFINITY;
            lb_real mx = max_row(row, Tk);
            if (mx == -INFINITY) {  // every key hidden: the row stays 0
                memset(row, 0, sizeof(lb_real) * Tk);
                continue;
            }
            double sum = exp_row(row, Tk, mx, 1);
            scale_row(row, Tk, sum > 0 ? (lb_real)(1.0 / sum) : 0);
        }
        const lb_real *Pd = P;
        if (on) {
            memcpy(j->pd + o, P, sizeof(lb_real) * tt);
            drop_range(j->pd + o, tt, j->drop, s->site, o, s->p_drop);
            Pd = j->pd + o;
        }
        lb_gemm(0, 0, Tq, K, Tk, 1, Pd, Tk, j->v + (size_t)b * Tk * HK + h * K, HK, 0,
                j->ctx + (size_t)b * Tq * HK + h * K, HK);
    }
}

void attn_core_forward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                const lb_real *k, const lb_real *v, lb_real *P, lb_real *pd,
                                lb_real *ctx, const lb_drop_t *drop) {
    attn_job_t j = {s, q, k, v, NULL, NULL, P, pd, ctx, NULL, NULL, NULL, NULL, NULL, drop};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_fwd_job, &j);
}

// FLOPs of one of the core's products (all four have the same size).
double attn_core_flops(const attn_shape_t *s) {
    return 2.0 * s->B * s->H * s->Tq * s->Tk * s->K;
}

// One (b, h) of the backward: dv, dP, dropout, softmax backward, dq, dk.
static void attn_bwd_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const attn_job_t *j = ctx;
    const attn_shape_t *s = j->s;
    int H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    int on = lb_drop_on(j->drop, s->p_drop);
    int need_ds = j->dq || j->dk || j->dbias;
    for (long it = lo; it < hi; it++) {
        int b = (int)(it / H), h = (int)(it % H);
        size_t o = (size_t)it * tt;
        const lb_real *P = j->P + o, *dc = j->dctx + (size_t)b * Tq * HK + h * K;
        if (j->dv) {  // dv [Tk, K] = Pdᵀ·dctx
            const lb_real *Pd = P;
            if (on) {
                memcpy(j->pd + o, P, sizeof(lb_real) * tt);
                drop_range(j->pd + o, tt, j->drop, s->site, o, s->p_drop);
                Pd = j->pd + o;
            }
            lb_gemm(1, 0, Tk, K, Tq, 1, Pd, Tk, dc, HK, 0, j->dv + (size_t)b * Tk * HK + h * K, HK);
        }
        if (!need_ds) continue;
        lb_real *ds = j->ds + o;
        // dPd [Tq, Tk] = dctx·vᵀ
        lb_gemm(0, 1, Tq, Tk, K, 1, dc, HK, j->v + (size_t)b * Tk * HK + h * K, HK, 0, ds, Tk);
        if (on) drop_range(ds, tt, j->drop, s->site, o, s->p_drop);
        for (int r = 0; r < Tq; r++) {  // softmax backward: dS = P·(dP − Σ P·dP)
            lb_real *d = ds + (size_t)r * Tk;
            const lb_real *p = P + (size_t)r * Tk;
            double dot = 0;
            for (int c = 0; c < Tk; c++) dot += (double)p[c] * d[c];
            lb_real dt = (lb_real)dot;
            for (int c = 0; c < Tk; c++) d[c] = p[c] * (d[c] - dt);
        }
        if (j->dq)  // dq [Tq, K] = dS·k
            lb_gemm(0, 0, Tq, K, Tk, 1, ds, Tk, j->k + (size_t)b * Tk * HK + h * K, HK, 0,
                    j->dq + (size_t)b * Tq * HK + h * K, HK);
        if (j->dk)  // dk [Tk, K] = dSᵀ·q
            lb_gemm(1, 0, Tk, K, Tq, 1, ds, Tk, j->q + (size_t)b * Tq * HK + h * K, HK, 0,
                    j->dk + (size_t)b * Tk * HK + h * K, HK);
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
// overwritten) and adds Σ_b dscores to dbias [H, Tq, Tk] when dbias. pd and ds are
// scratch [B, H, Tq, Tk].
void attn_core_backward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                 const lb_real *k, const lb_real *v, const lb_real *P, lb_real *pd,
                                 lb_real *ds, const lb_real *dctx, lb_real *dq, lb_real *dk,
                                 lb_real *dv, lb_real *dbias, const lb_drop_t *drop) {
    attn_job_t j = {s, q, k, v, P, dctx, NULL, pd, NULL, ds, dq, dk, dv, dbias, drop};
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
