#include "linear.h"
#include "prof.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#ifndef LB_REAL_DOUBLE
#include "gemm_bf16.h"
#include "gemm_f32.h"
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

void lb_gemm(int ta, int tb, int M, int N, int K, lb_real alpha, const lb_real *A, int lda,
             const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef LB_GEMM_HOOK  // tests that include this file count the products actually run
    LB_GEMM_HOOK(M, N, K);
#endif
    if (K <= 0) {  // BLAS leaves C untouched when K = 0 only if beta = 1; be explicit
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] *= beta;
        return;
    }
#ifdef LB_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    // One row stays a matrix-vector product on OpenBLAS on either path: memory-bound, and
    // ~30% faster than oneDNN's for the 32128-row head (a batch-1 decoder step).
    if (lb_f32_path() == LB_F32_ONEDNN && !(M == 1 && !ta) &&
        !lb_f32_gemm_onednn(lb_pool_threads(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
    lb_f32_gemm_openblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void lb_set_threads(int n) {
    if (n <= 0) return;
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

// ---- thread pool ----------------------------------------------------------------------
// Workers sleep on a condition variable between loops: spinning would steal the cores
// from the work in between (OpenBLAS's threads, the caller's own serial work).

#define LB_POOL_MAX 64

struct lb_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int n_workers;              // started threads (the caller is thread 0)
    pthread_t th[LB_POOL_MAX];
    long gen;                   // incremented for each loop
    int active;                 // threads taking part in the current loop (caller included)
    int pending;                // workers not finished with the current loop
    int stop;
    long n;
    void (*fn)(void *, long, long, int);
    void *ctx;
};

typedef struct {
    lb_pool_t *p;
    int tid;
} lb_worker_arg_t;

static void chunk(long n, int parts, int t, long *lo, long *hi) {
    long q = n / parts, r = n % parts;
    *lo = t * q + (t < r ? t : r);
    *hi = *lo + q + (t < r);
}

static void *pool_main(void *arg) {
    lb_worker_arg_t wa = *(lb_worker_arg_t *)arg;
    free(arg);
    lb_pool_t *p = wa.p;
    long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        if (wa.tid >= p->active) continue;
        long n = p->n, lo, hi;
        int active = p->active;
        void (*fn)(void *, long, long, int) = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        chunk(n, active, wa.tid, &lo, &hi);
        if (hi > lo) fn(ctx, lo, hi, wa.tid);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

lb_pool_t *lb_pool_new(void) {
    lb_pool_t *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    return p;
}

void lb_pool_free(lb_pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p);
}

int lb_pool_threads(void) {
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > LB_POOL_MAX ? LB_POOL_MAX : n;
}

static void lb_pool_run_n(lb_pool_t *p, int nt, long n, void (*fn)(void *, long, long, int), void *ctx) {
    if (nt > n) nt = (int)n;
    if (!p || nt <= 1) {
        if (n > 0) fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n_workers < nt - 1) {  // grow on demand (threads raised by lb_set_threads)
        lb_worker_arg_t *wa = xmalloc(sizeof *wa);
        wa->p = p;
        wa->tid = p->n_workers + 1;
        if (pthread_create(&p->th[p->n_workers], NULL, pool_main, wa)) {
            free(wa);
            nt = p->n_workers + 1;
            break;
        }
        p->n_workers++;
    }
    p->n = n;
    p->fn = fn;
    p->ctx = ctx;
    p->active = nt;
    p->pending = nt - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    long lo, hi;
    chunk(n, nt, 0, &lo, &hi);
    if (hi > lo) fn(ctx, lo, hi, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void lb_pool_run(lb_pool_t *p, long n, void (*fn)(void *ctx, long lo, long hi, int tid), void *ctx) {
    lb_pool_run_n(p, lb_pool_threads(), n, fn, ctx);
}

void lb_pool_run_gemms(lb_pool_t *p, long n, void (*fn)(void *ctx, long lo, long hi, int tid),
                       void *ctx) {
    int nt = lb_pool_threads();
    if (!p || nt <= 1 || n < 2) {
        if (n > 0) fn(ctx, 0, n, 0);
        return;
    }
    openblas_set_num_threads(1);
    lb_pool_run_n(p, nt, n, fn, ctx);
    openblas_set_num_threads(nt);
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
static const lb_real *lora_input(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, lb_real *tmp,
                                 const lb_drop_t *drop, uint64_t site) {
    if (!lb_drop_on(drop, l->dropout)) return x;
    drop_copy_p(pool, tmp, x, (size_t)N * l->in, drop, site, l->dropout);
    return tmp;
}

static void w_gemm(lb_pool_t *pool, int ta, int tb, int M, int N, int K, const lb_real *A, int lda,
                   const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc);

// ---- bf16 weights ----------------------------------------------------------------------
// W [O, I] held in bf16 is used a block of rows at a time: the block is converted to fp32
// in a buffer of this call (so that concurrent calls share nothing) and multiplied by
// lb_gemm exactly as the same rows of an fp32 W would be.

// Rows of W per block: LINEAR_BF16_BLOCK values, or an eighth of that for the forward of
// a few rows (small = 1). Blocks of rows leave each output of the forward one sum over I;
// in dx they split the sum over O, which is why the backward never uses the small blocks:
// every T5-small weight but the head is then one block, the fp32 path's very call.
static int bf16_block_rows(const linear_t *l, int small) {
    size_t vals = small ? LINEAR_BF16_BLOCK / 8 : LINEAR_BF16_BLOCK;
    size_t rows = vals / (size_t)l->in;
    if (rows < 1) rows = 1;
    if (rows > (size_t)l->out) rows = (size_t)l->out;
    return (int)rows;
}

void lb_bf16_to_real(const uint16_t *src, size_t n, lb_real *dst) {
#ifdef LB_REAL_DOUBLE
    for (size_t i = 0; i < n; i++) dst[i] = lb_bf16_to_f32(src[i]);
#else
    uint32_t *d = (uint32_t *)(void *)dst;
    size_t i = 0;
#ifdef __SSE2__
    // 8 at a time: interleaving zeros below each bf16 gives its float's bits (the scalar
    // loop is not vectorized at -O2 and would cost as much as a matrix-vector product)
    const __m128i z = _mm_setzero_si128();
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm_storeu_si128((__m128i *)(void *)(d + i), _mm_unpacklo_epi16(z, h));
        _mm_storeu_si128((__m128i *)(void *)(d + i + 4), _mm_unpackhi_epi16(z, h));
    }
#endif
    for (; i < n; i++) d[i] = (uint32_t)src[i] << 16;
#endif
}

// y [N, O] = x [N, I]·Wᵀ, W in bf16: y[:, o0:o0+ob] = x·W[o0:o0+ob]ᵀ per block.
static void gemm_x_wt_bf16(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, lb_real *y) {
    int rb = bf16_block_rows(l, N <= 16);
    lb_real *wb = xmalloc(sizeof(lb_real) * (size_t)rb * l->in);  // [rb, I]
    for (int o0 = 0; o0 < l->out; o0 += rb) {
        int ob = l->out - o0 < rb ? l->out - o0 : rb;
        lb_bf16_to_real(l->W->w16 + (size_t)o0 * l->in, (size_t)ob * l->in, wb);
        w_gemm(pool, 0, 1, N, ob, l->in, x, l->in, wb, l->in, 0, y + o0, l->out);
    }
    free(wb);
}

// dx [N, I] (+)= dy [N, O]·W, W in bf16: dx += dy[:, o0:o0+ob]·W[o0:o0+ob] per block (the
// first block overwrites when accum = 0).
static void gemm_dy_w_bf16(const linear_t *l, lb_pool_t *pool, int N, const lb_real *dy, lb_real *dx,
                           int accum) {
    int rb = bf16_block_rows(l, 0);
    lb_real *wb = xmalloc(sizeof(lb_real) * (size_t)rb * l->in);  // [rb, I]
    for (int o0 = 0; o0 < l->out; o0 += rb) {
        int ob = l->out - o0 < rb ? l->out - o0 : rb;
        lb_bf16_to_real(l->W->w16 + (size_t)o0 * l->in, (size_t)ob * l->in, wb);
        w_gemm(pool, 0, 0, N, l->in, ob, dy + o0, l->out, wb, l->in, accum || o0 > 0 ? 1 : 0, dx, l->in);
    }
    free(wb);
}

// ---- bf16 products (gemm_bf16.h) ----------------------------------------------------
// A product the layer did not ask for, whose packing is missing or that oneDNN failed
// (gemm_bf16.h) takes the fp32 path (W->w or W->w16 are kept).

int linear_pack_bf16(linear_t *l, int flags, lb_err_t *err) {
#ifdef LB_REAL_DOUBLE
    (void)flags;
    return lb_err_set(err, LB_EARG, "%s: bf16 products are not built into the double-precision engine", l->name);
#else
    int pk = flags & (LINEAR_BF16_FWD | LINEAR_BF16_BWD);
    if (!flags || (flags & ~(LINEAR_BF16_FWD | LINEAR_BF16_BWD | LINEAR_BF16_DW)))
        return lb_err_set(err, LB_EARG, "%s: bf16 flags %d: give LINEAR_BF16_FWD, _BWD and/or _DW", l->name, flags);
    if (pk && l->W->g && !(flags & LINEAR_BF16_DW))
        return lb_err_set(err, LB_EARG, "%s: its weight is trainable, so a packed bf16 copy would go "
                          "stale: pack it with LINEAR_BF16_DW and again after every update", l->name);
    if ((flags & LINEAR_BF16_DW) && !l->W->g)
        return lb_err_set(err, LB_EARG, "%s: LINEAR_BF16_DW asks for a weight gradient but the weight is "
                          "frozen: make it trainable first (t5_set_trainable)", l->name);
    char why[256];
    if (!lb_bf16_available(NULL, why, sizeof why)) return lb_err_set(err, LB_EARG, "%s: %s", l->name, why);
    // packed before with these flags from fp32 values (a trainable W after an update):
    // into the same buffers
    if (pk && l->w_bf16 && flags == l->bf16 && l->W->w && !lb_bf16w_repack_f32(l->w_bf16, l->W->w))
        return 0;
    lb_bf16w_t *w = NULL;
    if (pk) {
        // a trainable W would be packed again after every update: its packings are made
        // at each forward and backward instead, in a buffer all such weights share
        // (gemm_bf16.h), so that a full fine-tune holds no bf16 copy of its weights
        int late = l->W->g && l->W->w && !l->W->w16;
        int f = ((pk & LINEAR_BF16_FWD) ? (late ? LB_BF16W_FWD_LATE : LB_BF16W_FWD) : 0) |
                ((pk & LINEAR_BF16_BWD) ? (late ? LB_BF16W_BWD_LATE : LB_BF16W_BWD) : 0);
        w = l->W->w16 ? lb_bf16w_pack_bf16(l->W->w16, l->out, l->in, f, err)
                      : lb_bf16w_pack_f32(l->W->w, l->out, l->in, f, err);
        if (!w) return -1;
    }
    linear_unpack_bf16(l);
    l->w_bf16 = w;
    l->bf16 = flags;
    return 0;
#endif
}

int linear_bf16_packs_late(const linear_t *l) {
#ifdef LB_REAL_DOUBLE
    (void)l;
    return 0;
#else
    return l->w_bf16 && (lb_bf16w_flags(l->w_bf16) & LB_BF16W_FWD_LATE);
#endif
}

size_t linear_bf16_packed_bytes(const linear_t *l) {
#ifdef LB_REAL_DOUBLE
    (void)l;
    return 0;
#else
    return lb_bf16w_bytes(l->w_bf16);
#endif
}

void linear_unpack_bf16(linear_t *l) {
#ifndef LB_REAL_DOUBLE
    lb_bf16w_free(l->w_bf16);
#endif
    l->w_bf16 = NULL;
    l->bf16 = 0;
}

// The LoRA products of a layer with bf16 products, given a pool, run on that pool too
// (one block of C per thread, OpenBLAS single-threaded in each, as lb_pool_run_gemms
// does): then OpenBLAS's own worker threads stay asleep through a bf16 run instead of
// spinning (for up to ~0.1 s after each product) on the cores the pool's bf16 products
// need, which halved their speed on 2 cores.
typedef struct {
    int cols;  // 1: blocks of columns of C, else of rows
    int ta, tb, M, N, K;
    lb_real alpha, beta;
    const lb_real *A, *B;
    int lda, ldb, ldc;
    lb_real *C;
} gemm_job_t;

static void gemm_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const gemm_job_t *g = ctx;
    int n = (int)(hi - lo);
    if (!g->cols)  // rows [lo, hi) of C = rows of op(A)
        lb_gemm(g->ta, g->tb, n, g->N, g->K, g->alpha, g->ta ? g->A + lo : g->A + lo * g->lda,
                g->lda, g->B, g->ldb, g->beta, g->C + lo * g->ldc, g->ldc);
    else  // columns [lo, hi) of C = columns of op(B)
        lb_gemm(g->ta, g->tb, g->M, n, g->K, g->alpha, g->A, g->lda,
                g->tb ? g->B + lo * g->ldb : g->B + lo, g->ldb, g->beta, g->C + lo, g->ldc);
}

// lb_gemm, spread over pool by rows of C (by columns when cols = 1); pool NULL: lb_gemm.
static void pgemm(lb_pool_t *pool, int cols, int ta, int tb, int M, int N, int K, lb_real alpha,
                  const lb_real *A, int lda, const lb_real *B, int ldb, lb_real beta, lb_real *C,
                  int ldc) {
    if (!pool) {
        lb_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (2.0 * M * N * K < 4e6) {  // ~20 µs on one core: less than waking the pool costs
        int nt = lb_pool_threads();
        openblas_set_num_threads(1);
        lb_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        openblas_set_num_threads(nt);
        return;
    }
    gemm_job_t g = {cols, ta, tb, M, N, K, alpha, beta, A, B, lda, ldb, ldc, C};
    lb_pool_run_gemms(pool, cols ? N : M, gemm_job, &g);
}

// The fp32 products of a layer's W (x·Wᵀ, dy·W, dyᵀ·x), alpha 1. On the oneDNN path
// (gemm_f32.h) spread over pool, one block of C per pool thread, cut along C's longer side
// (columns for the head's [N, 32128], so that each thread reads only its part of W), each
// block on one thread: no OpenMP worker then spins on the cores of the pool loops that
// follow. Else (OpenBLAS, or no pool) lb_gemm with the library's own threads.
static void w_gemm(lb_pool_t *pool, int ta, int tb, int M, int N, int K, const lb_real *A, int lda,
                   const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc) {
#ifndef LB_REAL_DOUBLE
    if (pool && lb_f32_path() == LB_F32_ONEDNN) {
        pgemm(pool, N > M, ta, tb, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#else
    (void)pool;
#endif
    lb_gemm(ta, tb, M, N, K, 1, A, lda, B, ldb, beta, C, ldc);
}

// The pool a layer's LoRA products run on: the layer's products' own (bf16 products, or
// fp32 ones on oneDNN), so that one set of threads computes; NULL (lb_gemm, OpenBLAS's
// threads) for fp32 on OpenBLAS, the very same calls as ever.
static lb_pool_t *lora_pool(const linear_t *l, lb_pool_t *pool) {
#ifndef LB_REAL_DOUBLE
    if (lb_f32_path() == LB_F32_ONEDNN) return pool;
#endif
    return l->bf16 ? pool : NULL;
}

// y [N, O] = x·Wᵀ in bf16 when l asks for it; 0 when done, -1 for the fp32 path.
static int forward_bf16(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x,
                        const uint16_t *x16, lb_real *y) {
#ifdef LB_REAL_DOUBLE
    (void)l, (void)pool, (void)N, (void)x, (void)x16, (void)y;
    return -1;
#else
    if (!(l->bf16 & LINEAR_BF16_FWD) || !l->w_bf16) return -1;
    return x16 ? lb_bf16w_forward_bf16(pool, l->w_bf16, N, x16, y, 0)
               : lb_bf16w_forward(pool, l->w_bf16, N, x, y, 0);
#endif
}

// y += s·drop(x)·Aᵀ·Bᵀ, with xa = drop(x)·Aᵀ kept for the backward.
static void lora_forward(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, lb_real *y, lb_real *xa,
                         lb_real *tmp, const lb_drop_t *drop, uint64_t site) {
    lb_pool_t *lp = lora_pool(l, pool);
    const lb_real *xd = lora_input(l, lp, N, x, tmp, drop, site);
    if (!lp) {  // the calls a generation step makes on its blocks of features
        linear_lora_down(l, N, xd, xa);
        linear_lora_up(l, N, xa, 0, l->out, y);
        return;
    }
    pgemm(lp, 0, 0, 1, N, l->r, l->in, 1, xd, l->in, l->A, l->in, 0, xa, l->r);     // [N, R]
    pgemm(lp, 0, 0, 1, N, l->out, l->r, l->scale, xa, l->r, l->B, l->r, 1, y, l->out);
}

void linear_forward(const linear_t *l, int N, const lb_real *x, lb_real *y, lb_real *xa,
                    lb_real *tmp, const lb_drop_t *drop, uint64_t site) {
    linear_forward_pool(l, NULL, N, x, NULL, y, xa, tmp, drop, site);
}

void linear_forward_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x,
                         const uint16_t *x16, lb_real *y, lb_real *xa, lb_real *tmp,
                         const lb_drop_t *drop, uint64_t site) {
    // y [N, O] = x [N, I]·Wᵀ
    if (forward_bf16(l, pool, N, x, x16, y) == 0) {
        // done in bf16
    } else if (l->W->w16) gemm_x_wt_bf16(l, pool, N, x, y);
    else w_gemm(pool, 0, 1, N, l->out, l->in, x, l->in, l->W->w, l->in, 0, y, l->out);
    if (l->r > 0) LB_PROF(PROF_LORA, lora_forward(l, pool, N, x, y, xa, tmp, drop, site));
}

void linear_lora_down(const linear_t *l, int N, const lb_real *x, lb_real *xa) {
    // xa [N, R] = x·Aᵀ
    lb_gemm(0, 1, N, l->r, l->in, 1, x, l->in, l->A, l->in, 0, xa, l->r);
}

void linear_lora_up(const linear_t *l, int N, const lb_real *xa, long lo, long hi, lb_real *y) {
    // y[:, lo:hi] += s·xa·B[lo:hi]ᵀ, y [N, O]
    lb_gemm(0, 1, N, (int)(hi - lo), l->r, l->scale, xa, l->r, l->B + (size_t)lo * l->r, l->r, 1, y + lo, l->out);
}

double linear_forward_flops(const linear_t *l, int N) {
    double f = 2.0 * N * l->in * l->out;
    if (l->r > 0) f += 2.0 * N * l->r * ((double)l->in + l->out);
    return f;
}

double linear_backward_flops(const linear_t *l, int N, int has_dx) {
    double one = 2.0 * N * l->in * l->out, f = 0;
    if (l->W->g) f += one;
    if (has_dx) f += one;
    if (l->r <= 0 || (!has_dx && !l->dA && !l->dB)) return f;
    if (l->dB) f += 2.0 * N * l->out * l->r;
    if (!has_dx && !l->dA) return f;
    f += 2.0 * N * l->out * l->r;                  // dxa
    if (l->dA) f += 2.0 * N * l->r * l->in;
    if (has_dx) f += 2.0 * N * l->r * l->in;
    return f;
}

// The LoRA part of linear_backward_pool: dB, dA, and dx += the adapter's share.
static void lora_backward(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, const lb_real *xa,
                          const lb_real *dy, lb_real *dx, lb_real *tmp, const lb_drop_t *drop, uint64_t site) {
    lb_pool_t *lp = lora_pool(l, pool);
    if (l->dB)  // dB [O, R] += s·dyᵀ·xa
        pgemm(lp, 0, 1, 0, l->out, l->r, N, l->scale, dy, l->out, xa, l->r, 1, l->dB, l->r);
    if (!dx && !l->dA) return;
    // dxa [N, R] = s·dy·B (small: N·R)
    lb_real *dxa = xmalloc(sizeof(lb_real) * (size_t)N * l->r);
    int on = lb_drop_on(drop, l->dropout);
    pgemm(lp, 0, 0, 0, N, l->r, l->out, l->scale, dy, l->out, l->B, l->r, 0, dxa, l->r);
    if (l->dA) {  // dA [R, I] += dxaᵀ·drop(x), the mask rebuilt from its hash
        const lb_real *xd = lora_input(l, lp, N, x, tmp, drop, site);
        pgemm(lp, 1, 1, 0, l->r, l->in, N, 1, dxa, l->r, xd, l->in, 1, l->dA, l->in);
    }
    if (dx && !on) {  // dx += dxa·A
        pgemm(lp, 0, 0, 0, N, l->in, l->r, 1, dxa, l->r, l->A, l->in, 1, dx, l->in);
    } else if (dx) {  // dx += drop_bwd(dxa·A)
        pgemm(lp, 0, 0, 0, N, l->in, l->r, 1, dxa, l->r, l->A, l->in, 0, tmp, l->in);
        drop_add_p(lp, dx, dx, tmp, (size_t)N * l->in, drop, site, l->dropout);
    }
    free(dxa);
}

void linear_backward(const linear_t *l, int N, const lb_real *x, const lb_real *xa,
                     const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                     const lb_drop_t *drop, uint64_t site) {
    linear_backward_pool(l, NULL, N, x, xa, dy, dx, dx_accum, tmp, drop, site);
}

void linear_backward_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x,
                          const lb_real *xa, const lb_real *dy, lb_real *dx, int dx_accum,
                          lb_real *tmp, const lb_drop_t *drop, uint64_t site) {
    linear_backward16_pool(l, pool, N, x, NULL, xa, dy, dx, dx_accum, tmp, drop, site);
}

void linear_backward16_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, const uint16_t *x16,
                            const lb_real *xa, const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                            const lb_drop_t *drop, uint64_t site) {
    // dW [O, I] += dyᵀ·x and dx [N, I] (+)= dy·W as bf16 products when l asks for them
    // (linear_pack_bf16); else (or when they return -1) the fp32 products below.
#ifndef LB_REAL_DOUBLE
    int want_dw = (l->bf16 & LINEAR_BF16_DW) && l->W->g, want_dx = dx && (l->bf16 & LINEAR_BF16_BWD) && l->w_bf16;
    uint16_t *dy16 = NULL;  // both products read dy: rounded once
    if (want_dw && want_dx) {
        dy16 = xmalloc(sizeof(uint16_t) * (size_t)N * l->out);
        lb_bf16_from_f32(pool, dy, (size_t)N * l->out, dy16);
    }
    int dw16 = want_dw && !lb_bf16_gemm_dw16(pool, N, l->out, l->in, dy, dy16, x, x16, l->W->g, 1);
    int dx16 = want_dx && !(dy16 ? lb_bf16w_backward_dx_bf16(pool, l->w_bf16, N, dy16, dx, dx_accum)
                                 : lb_bf16w_backward_dx(pool, l->w_bf16, N, dy, dx, dx_accum));
    free(dy16);
#else
    int dw16 = 0, dx16 = 0;
    (void)pool;
#endif
    lb_real *own_x = NULL;  // only x16 given: widened where an fp32 product or LoRA reads x
    if (!x && ((l->W->g && !dw16) || l->r > 0)) {
        own_x = xmalloc(sizeof(lb_real) * (size_t)N * l->in);
        lb_bf16_to_real(x16, (size_t)N * l->in, own_x);
        x = own_x;
    }
    if (l->W->g && !dw16)  // dW [O, I] += dyᵀ·x
        w_gemm(pool, 1, 0, l->out, l->in, N, dy, l->out, x, l->in, 1, l->W->g, l->in);
    if (dx16) {
        // done in bf16 above
    } else if (dx && l->W->w16)  // dx [N, I] (+)= dy·W
        gemm_dy_w_bf16(l, pool, N, dy, dx, dx_accum);
    else if (dx)
        w_gemm(pool, 0, 0, N, l->in, l->out, dy, l->out, l->W->w, l->in, dx_accum ? 1 : 0, dx, l->in);
    if (l->r > 0 && (dx || l->dA || l->dB)) LB_PROF(PROF_LORA, lora_backward(l, pool, N, x, xa, dy, dx, tmp, drop, site));
    free(own_x);
}
