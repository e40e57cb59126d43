#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#include <pthread.h>

#include "util.h"

// The optimizer walks every trainable value three or four times a step (norm, clip,
// update): for a full fine-tune that is 77 M values, so its loops run on a pool of their
// own (threads start on first use and sleep between steps, never while the model's pool
// works) and in AVX-512 where the CPU has it. Every element's arithmetic is the scalar
// code's, operation by operation (separate multiplies and adds, IEEE sqrt and divide),
// so the result is bit for bit the same on any CPU and any thread count.
#define OPTIM_CHUNK 16384  // elements per unit of work (and per partial sum of optim_sum_sq)

static lb_pool_t *pool;  // the optimizer's loops' own, made on first use, kept for the process
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_make(void) { pool = lb_pool_new(); }

static lb_pool_t *optim_pool(void) {
    pthread_once(&pool_once, pool_make);
    return pool;
}

static int have_avx512(void) {
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx512f") != 0;
    return v;
}

void adamw_init(adamw_t *o, size_t n, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->n = n;
    o->m = xcalloc(n ? n : 1, sizeof(float));
    o->v = xcalloc(n ? n : 1, sizeof(float));
}

void adamw_free(adamw_t *o) {
    free(o->m);
    free(o->m16);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void adamw_keep_m_bf16(adamw_t *o) {
    if (o->m16) return;
    o->m16 = xmalloc((o->n ? o->n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < o->n; i++) o->m16[i] = lb_f32_to_bf16(o->m[i]);
    free(o->m);
    o->m = NULL;
}

typedef struct {
    adamw_t *o;
    lb_real *p;
    const lb_real *g;
    size_t a, b;  // the elements of this run
    float lr, wd, step_size, bc2_sqrt;
} adamw_job_t;

// The update of elements [a, b) at learning rate lr and decay wd, in fp32 operation by
// operation as torch's _single_tensor_adamw.
static void adamw_scalar(const adamw_job_t *j, size_t a, size_t b) {
    adamw_t *o = j->o;
    lb_real *p = j->p;
    const lb_real *g = j->g;
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps, step_size = j->step_size, bc2_sqrt = j->bc2_sqrt;
    float decay = 1.0f - j->lr * j->wd, w1 = 1.0f - b1, w2 = 1.0f - b2;
    for (size_t i = a; i < b; i++) {
        float gi = (float)g[i];
        float pi = (float)p[i] * decay;
        float mo = o->m16 ? lb_bf16_to_f32(o->m16[i]) : o->m[i];
        float mi = mo + w1 * (gi - mo);  // lerp
        float vi = o->v[i] * b2 + w2 * gi * gi;
        if (o->m16) o->m16[i] = lb_f32_to_bf16(mi);
        else o->m[i] = mi;
        o->v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = (lb_real)(pi - step_size * (mi / denom));
    }
}

#ifndef LB_REAL_DOUBLE
// adamw_scalar, 16 elements at a time: the same operations in the same order.
__attribute__((target("avx512f"))) static size_t adamw_avx512(const adamw_job_t *j, size_t a, size_t b) {
    adamw_t *o = j->o;
    float *p = j->p, *m = o->m, *v = o->v;
    const float *g = j->g;
    __m512 decay = _mm512_set1_ps(1.0f - j->lr * j->wd), w1 = _mm512_set1_ps(1.0f - o->beta1);
    __m512 b2 = _mm512_set1_ps(o->beta2), w2 = _mm512_set1_ps(1.0f - o->beta2);
    __m512 bc2 = _mm512_set1_ps(j->bc2_sqrt), eps = _mm512_set1_ps(o->eps), st = _mm512_set1_ps(j->step_size);
    uint16_t *m16 = o->m16;
    // lb_f32_to_bf16 on 16 lanes: a NaN made quiet, else rounded to nearest even
    const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i quiet = _mm512_set1_epi32(0x400000);
    size_t i = a;
    for (; i + 16 <= b; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i), vo = _mm512_loadu_ps(v + i), mo;
        if (m16)
            mo = _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(m16 + i))), 16));
        else
            mo = _mm512_loadu_ps(m + i);
        __m512 pi = _mm512_mul_ps(_mm512_loadu_ps(p + i), decay);
        __m512 mi = _mm512_add_ps(mo, _mm512_mul_ps(w1, _mm512_sub_ps(gi, mo)));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(vo, b2), _mm512_mul_ps(_mm512_mul_ps(w2, gi), gi));
        if (m16) {
            __m512i bits = _mm512_castps_si512(mi);
            __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, abs), inf);
            __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(bits, 16), one)));
            r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(bits, quiet));
            _mm256_storeu_si256((__m256i *)(void *)(m16 + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
        } else {
            _mm512_storeu_ps(m + i, mi);
        }
        _mm512_storeu_ps(v + i, vi);
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
        _mm512_storeu_ps(p + i, _mm512_sub_ps(pi, _mm512_mul_ps(st, _mm512_div_ps(mi, denom))));
    }
    return i;
}
#endif

static void adamw_chunks(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const adamw_job_t *j = ctx;
    size_t a = j->a + (size_t)lo * OPTIM_CHUNK, b = j->a + (size_t)hi * OPTIM_CHUNK;
    if (b > j->b) b = j->b;
#ifndef LB_REAL_DOUBLE
    if (have_avx512()) a = adamw_avx512(j, a, b);
#endif
    adamw_scalar(j, a, b);
}

static void adamw_run(adamw_t *o, lb_real *p, const lb_real *g, size_t a, size_t b, float lr,
                      float wd, float step_size, float bc2_sqrt) {
    adamw_job_t j = {o, p, g, a, b, lr, wd, step_size, bc2_sqrt};
    lb_pool_run(optim_pool(), (long)((b - a + OPTIM_CHUNK - 1) / OPTIM_CHUNK), adamw_chunks, &j);
}

void adamw_step(adamw_t *o, lb_real *p, const lb_real *g, float lr, const optim_range_t *ranges,
                int n_ranges) {
    o->t++;
    double bc1 = 1.0 - pow((double)o->beta1, (double)o->t);
    double bc2 = 1.0 - pow((double)o->beta2, (double)o->t);
    float bc2s = (float)sqrt(bc2);
    size_t pos = 0;
    for (int r = 0; r <= n_ranges; r++) {
        size_t a = r < n_ranges ? ranges[r].off : o->n;
        if (a > pos) adamw_run(o, p, g, pos, a, lr, o->weight_decay, (float)(lr / bc1), bc2s);
        if (r == n_ranges) break;
        size_t b = ranges[r].off + ranges[r].n;
        float lr_r = lr * ranges[r].lr_mult;
        adamw_run(o, p, g, a, b, lr_r, o->weight_decay * ranges[r].wd_mult, (float)(lr_r / bc1), bc2s);
        pos = b;
    }
}

typedef struct {
    lb_real *g;
    size_t n;
    double *part;  // [chunks] Σ g² of each chunk
    lb_real c;     // optim_clip's factor
} sumsq_job_t;

static void sumsq_chunks(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const sumsq_job_t *j = ctx;
    for (long k = lo; k < hi; k++) {
        size_t a = (size_t)k * OPTIM_CHUNK, b = a + OPTIM_CHUNK < j->n ? a + OPTIM_CHUNK : j->n;
        // four interleaved sums (the compiler keeps them in registers); each chunk's total
        // depends only on its values, never on the thread that takes it
        double s[4] = {0, 0, 0, 0};
        size_t i = a;
        for (; i + 4 <= b; i += 4)
            for (int u = 0; u < 4; u++) s[u] += (double)j->g[i + u] * j->g[i + u];
        for (; i < b; i++) s[0] += (double)j->g[i] * j->g[i];
        j->part[k] = (s[0] + s[1]) + (s[2] + s[3]);
    }
}

static void clip_chunks(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const sumsq_job_t *j = ctx;
    size_t a = (size_t)lo * OPTIM_CHUNK, b = (size_t)hi * OPTIM_CHUNK < j->n ? (size_t)hi * OPTIM_CHUNK : j->n;
    for (size_t i = a; i < b; i++) j->g[i] *= j->c;
}

double optim_sum_sq(const lb_real *g, size_t n) {
    long chunks = (long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK);
    if (chunks == 0) return 0;
    sumsq_job_t j = {(lb_real *)g, n, xmalloc(sizeof(double) * (size_t)chunks), 0};
    lb_pool_run(optim_pool(), chunks, sumsq_chunks, &j);
    double s = 0;
    for (long k = 0; k < chunks; k++) s += j.part[k];  // in order: the same sum on any thread count
    free(j.part);
    return s;
}

void optim_clip(lb_real *g, size_t n, double total_norm, float max_norm) {
    double coef = (double)max_norm / (total_norm + 1e-6);
    if (coef >= 1.0) return;
    sumsq_job_t j = {g, n, NULL, (lb_real)coef};
    lb_pool_run(optim_pool(), (long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK), clip_chunks, &j);
}

float optim_lr_at(optim_sched_t s, float base_lr, long step, long warmup, long total) {
    if (step < warmup) return base_lr * (float)step / (float)(warmup > 1 ? warmup : 1);
    if (s == SCHED_CONSTANT) return base_lr;
    double rest = (double)(total - warmup);
    if (rest <= 0) return 0;
    double prog = (double)(step - warmup) / rest;
    if (s == SCHED_LINEAR) return base_lr * (float)fmax(0.0, 1.0 - prog);
    return base_lr * (float)fmax(0.0, 0.5 * (1.0 + cos(M_PI * prog)));
}

int optim_sched_parse(const char *name) {
    if (!strcmp(name, "constant")) return SCHED_CONSTANT;
    if (!strcmp(name, "linear")) return SCHED_LINEAR;
    if (!strcmp(name, "cosine")) return SCHED_COSINE;
    return -1;
}
