#include "gemm_bf16.h"

#include <dnnl.h>
#include <stdio.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "vec512.h"  // LB_VEC512: st16_bf16, the AVX-512 conversion

#include "cpu.h"
#include "linear.h"

struct lb_bf16w {
    int out, in, flags;
    dnnl_memory_desc_t fwd_md;  // weights [K = I, N = O] as the matmul packs them
    dnnl_memory_desc_t bwd_md;  // weights [K = O, N = I]
    void *fwd, *bwd;            // the packed values, or NULL when not packed
    const float *src;           // LB_BF16W_*_LATE: the fp32 W last packed from
    uint64_t stamp;             // new at every pack and repack (late_pack's reuse)
    size_t bytes;
};

// Stamps of packings: unique in the process, so a late packing made from one stamp is the
// packing of those values (a freed weight's address may come back; its stamp does not).
static uint64_t stamp_next;
static uint64_t new_stamp(void) { return __atomic_add_fetch(&stamp_next, 1, __ATOMIC_RELAXED); }

// The engine's thread count for oneDNN's OpenMP team. The team size is a per-thread
// setting of OpenMP, so it is set on the calling thread, each call (a no-op when equal).
static void match_threads(void) {
    int nt = lb_pool_threads();
    if (omp_get_max_threads() != nt) omp_set_num_threads(nt);
}

// What the CPU offers is fixed for the process: detected once (CPUID, and on an AMX CPU
// the arch_prctl asking Linux for the tile state).
static pthread_once_t avail_once = PTHREAD_ONCE_INIT;
static lb_cpu_t avail_cpu;
static void avail_detect(void) { lb_cpu_detect(&avail_cpu); }

int lb_bf16_available(const char **name, char *why, size_t why_len) {
    pthread_once(&avail_once, avail_detect);
    const lb_cpu_t c = avail_cpu;
    if (name) *name = lb_cpu_kernel_path(&c, 1);
    int ok = lb_cpu_bf16_level(&c) > 0;
    if (!ok && why && why_len) {
        if (c.amx_bf16 && !c.amx_perm)
            snprintf(why, why_len, "the CPU has AMX but Linux refused this process the tile state "
                     "(arch_prctl ARCH_REQ_XCOMP_PERM; needs Linux 5.16 or later): bf16 products off, fp32 kept");
        else
            snprintf(why, why_len, "this CPU has neither AMX bf16 nor AVX-512 bf16 (CPUID): bf16 "
                     "products off, fp32 kept");
    }
    return ok;
}

// The oneDNN engine and stream of the calling thread: made on a thread's first product and
// destroyed when the thread exits (pthread key), so calls on different threads stay
// independent without each call making its own (~5 us a call, against products of
// 5 us for a generation step's rows to milliseconds for a training step's).
// A matmul primitive kept for reuse, with its memory objects (their data handles set per
// call), for what makes one: the source and weights layouts, accumulation and the OpenMP
// team size (oneDNN splits its work by it when the primitive is made).
typedef struct {
    int used, accum, team;
    uint64_t hash, last;  // the key's hash; the thread's tick at its last use
    long key[9];          // lb_bf16_gemm's key; all 0 for a layer's product (keyed by smd, wmd)
    dnnl_memory_desc_t smd, wmd;
    dnnl_primitive_t p;
    dnnl_memory_t ms, mw, md;
} prim_t;

// Primitives per thread, 8-way set associative by a hash of the key, the least recently
// used of a set replaced: a training step uses ~10 layer shapes and ~15 attention products
// per thread, a generation step a few more. (A direct-mapped cache of 16 for the attention
// products had two of them evicting each other at every head: a third of a step's ~7000
// attention products made their primitive anew.)
#define PRIM_SETS 16
#define PRIM_WAYS 8

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t st;
    prim_t prim[PRIM_SETS * PRIM_WAYS];
    uint64_t tick;        // counts lookups, for the least recently used
    void *late;        // the packing of an LB_BF16W_*_LATE weight, for one call
    size_t late_cap;   // its bytes
    uint64_t late_stamp;  // what late holds: the weight's stamp (0: nothing) and
    int late_fwd;         // direction, so that consecutive calls pack once
} ctx_t;

static void prim_drop(prim_t *e) {
    if (e->ms) dnnl_memory_destroy(e->ms);
    if (e->mw) dnnl_memory_destroy(e->mw);
    if (e->md) dnnl_memory_destroy(e->md);
    if (e->p) dnnl_primitive_destroy(e->p);
    memset(e, 0, sizeof *e);
}

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void ctx_destroy(void *p) {
    ctx_t *c = p;
    for (int i = 0; i < PRIM_SETS * PRIM_WAYS; i++) prim_drop(&c->prim[i]);
    if (c->st) dnnl_stream_destroy(c->st);
    if (c->eng) dnnl_engine_destroy(c->eng);
    free(c->late);
    free(c);
}

static void ctx_key_make(void) {
    if (pthread_key_create(&ctx_key, ctx_destroy)) abort();  // only EAGAIN (no keys left) or ENOMEM
}

// The calling thread's context, or NULL when oneDNN cannot open its CPU engine.
static ctx_t *ctx_get(void) {
    pthread_once(&ctx_once, ctx_key_make);
    ctx_t *c = pthread_getspecific(ctx_key);
    if (c) return c;
    c = xcalloc(1, sizeof *c);
    if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&c->st, c->eng, dnnl_stream_default_flags) != dnnl_success ||
        pthread_setspecific(ctx_key, c)) {
        ctx_destroy(c);
        return NULL;
    }
    return c;
}

// dst (md dmd) = src (md smd), converting type and layout.
static int reorder(ctx_t *c, const dnnl_memory_desc_t *smd, const void *src,
                   const dnnl_memory_desc_t *dmd, void *dst) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    dnnl_memory_t ms = NULL, md = NULL;
    int rc = -1;
    if (dnnl_reorder_primitive_desc_create(&pd, smd, c->eng, dmd, c->eng, NULL) != dnnl_success) goto done;
    if (dnnl_primitive_create(&p, pd) != dnnl_success) goto done;
    if (dnnl_memory_create(&ms, smd, c->eng, (void *)src) != dnnl_success) goto done;
    if (dnnl_memory_create(&md, dmd, c->eng, dst) != dnnl_success) goto done;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
    if (dnnl_primitive_execute(p, c->st, 2, args) != dnnl_success) goto done;
    rc = dnnl_stream_wait(c->st) == dnnl_success ? 0 : -1;
done:
    if (ms) dnnl_memory_destroy(ms);
    if (md) dnnl_memory_destroy(md);
    if (p) dnnl_primitive_destroy(p);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return rc;
}

// A matmul primitive descriptor dst [M, Nn] f32 (+)= src·weights, src and weights bf16;
// wmd NULL lets oneDNN choose the weights' layout (for packing), dmd NULL is a dense dst.
static dnnl_primitive_desc_t matmul_pd_to(ctx_t *c, const dnnl_memory_desc_t *smd,
                                          const dnnl_memory_desc_t *wmd, const dnnl_memory_desc_t *dmd_in,
                                          int K, int Nn, int accum) {
    dnnl_memory_desc_t any, dmd;
    int M = (int)smd->dims[0];
    dnnl_dims_t wd = {K, Nn}, dd = {M, Nn};
    dnnl_memory_desc_init_by_tag(&any, 2, wd, dnnl_bf16, dnnl_format_tag_any);
    if (dmd_in)
        dmd = *dmd_in;
    else
        dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab);
    dnnl_matmul_desc_t d;
    if (dnnl_matmul_desc_init(&d, smd, wmd ? wmd : &any, NULL, &dmd) != dnnl_success) return NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (accum) {  // dst = 1·dst + product
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
        dnnl_post_ops_create(&po);
        dnnl_post_ops_append_sum(po, 1.0f);
        dnnl_primitive_attr_set_post_ops(attr, po);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_primitive_desc_create(&pd, &d, attr, c->eng, NULL) != dnnl_success) pd = NULL;
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return pd;
}

static dnnl_primitive_desc_t matmul_pd(ctx_t *c, const dnnl_memory_desc_t *smd,
                                       const dnnl_memory_desc_t *wmd, int K, int Nn, int accum) {
    return matmul_pd_to(c, smd, wmd, NULL, K, Nn, accum);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static long prims_made;

long lb_bf16_primitives_made(void) { return __atomic_load_n(&prims_made, __ATOMIC_RELAXED); }

// Makes e the primitive for dst (md dmd, NULL: dense) (+)= src (md smd) · weights (md wmd)
// with an OpenMP team of team; 0, or -1 (e emptied) when oneDNN refuses.
static int prim_make(ctx_t *c, prim_t *e, const dnnl_memory_desc_t *smd, const dnnl_memory_desc_t *wmd,
                     const dnnl_memory_desc_t *dmd_in, int K, int Nn, int accum, int team) {
    __atomic_add_fetch(&prims_made, 1, __ATOMIC_RELAXED);
    prim_drop(e);
    dnnl_primitive_desc_t pd = matmul_pd_to(c, smd, wmd, dmd_in, K, Nn, accum);
    if (!pd) return -1;
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    int ok = dnnl_primitive_create(&e->p, pd) == dnnl_success &&
             dnnl_memory_create(&e->ms, smd, c->eng, DNNL_MEMORY_NONE) == dnnl_success &&
             dnnl_memory_create(&e->mw, wmd, c->eng, DNNL_MEMORY_NONE) == dnnl_success &&
             dnnl_memory_create(&e->md, dmd, c->eng, DNNL_MEMORY_NONE) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    if (!ok) {
        prim_drop(e);
        return -1;
    }
    e->used = 1;
    e->accum = accum;
    e->team = team;
    e->smd = *smd;
    e->wmd = *wmd;
    return 0;
}

// The thread's entry whose key hashes to h and that same() accepts (*hit = 1), else the
// entry to replace in h's set: a free one or the least recently used (*hit = 0).
static prim_t *prim_slot(ctx_t *c, uint64_t h, int (*same)(const prim_t *, const void *), const void *k,
                         int *hit) {
    // FNV's low bits depend only on the key's low bits (64, 256 and 384 share theirs), and
    // its high bits clustered our keys too: the set comes from a finalizer's mix of all of h.
    uint64_t m = h;
    m = (m ^ (m >> 33)) * 0xff51afd7ed558ccdull;
    m = (m ^ (m >> 33)) * 0xc4ceb9fe1a85ec53ull;
    m ^= m >> 33;
    prim_t *set = &c->prim[m % PRIM_SETS * PRIM_WAYS], *victim = set;
    c->tick++;
    for (int w = 0; w < PRIM_WAYS; w++) {
        prim_t *e = &set[w];
        if (e->used && e->hash == h && same(e, k)) {
            e->last = c->tick;
            *hit = 1;
            return e;
        }
        if (victim->used && (!e->used || e->last < victim->last)) victim = e;
    }
    *hit = 0;
    return victim;
}

// A layer's product: dst (+)= src (md smd) · weights (md wmd), on a team of team.
typedef struct {
    const dnnl_memory_desc_t *smd, *wmd;
    int accum, team;
} layer_key_t;

static int same_layer(const prim_t *e, const void *k) {
    const layer_key_t *l = k;
    return !e->key[2] && e->accum == l->accum && e->team == l->team && !memcmp(&e->smd, l->smd, sizeof *l->smd) &&
           !memcmp(&e->wmd, l->wmd, sizeof *l->wmd);
}

// The thread's primitive for dst (+)= src (md smd) · weights (md wmd): from its cache, else
// made (replacing an entry of its set). NULL when oneDNN refuses.
static prim_t *prim_get(ctx_t *c, const dnnl_memory_desc_t *smd, const dnnl_memory_desc_t *wmd, int K,
                        int Nn, int accum) {
    layer_key_t k = {smd, wmd, accum, omp_get_max_threads()};
    uint64_t h = fnv(fnv(0xcbf29ce484222325ull, smd, sizeof *smd), wmd, sizeof *wmd);
    h = fnv(h, &accum, sizeof accum);
    h = fnv(h, &k.team, sizeof k.team);
    int hit;
    prim_t *e = prim_slot(c, h, same_layer, &k, &hit);
    if (hit) return e;
    if (prim_make(c, e, smd, wmd, NULL, K, Nn, accum, k.team)) return NULL;
    e->hash = h;
    e->last = c->tick;
    return e;
}

// Runs e on src, w, dst: 0, -1 when oneDNN failed before touching dst, -2 when it failed
// running.
static int prim_run(ctx_t *c, prim_t *e, const void *src, const void *w, float *dst) {
    if (dnnl_memory_set_data_handle(e->ms, (void *)src) != dnnl_success ||
        dnnl_memory_set_data_handle(e->mw, (void *)w) != dnnl_success ||
        dnnl_memory_set_data_handle(e->md, dst) != dnnl_success)
        return -1;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->ms}, {DNNL_ARG_WEIGHTS, e->mw}, {DNNL_ARG_DST, e->md}};
    if (dnnl_primitive_execute(e->p, c->st, 3, args) != dnnl_success) return -2;
    return dnnl_stream_wait(c->st) == dnnl_success ? 0 : -2;
}

// dst [M, Nn] (+)= src [M, K] (md smd) · weights [K, Nn] (md wmd), all already bf16.
// Returns 0, -1 when oneDNN failed before touching dst, -2 when it failed running.
static int matmul(ctx_t *c, const dnnl_memory_desc_t *smd, const void *src,
                  const dnnl_memory_desc_t *wmd, const void *w, int K, int Nn, float *dst, int accum) {
    prim_t *e = prim_get(c, smd, wmd, K, Nn, accum);
    return e ? prim_run(c, e, src, w, dst) : -1;
}

static void md2(dnnl_memory_desc_t *md, long d0, long d1, dnnl_data_type_t t, long s0, long s1) {
    dnnl_dims_t d = {d0, d1}, s = {s0, s1};
    dnnl_memory_desc_init_by_strides(md, 2, d, t, s);
}

void lb_bf16_impl_name(int N, int in, int out, char *buf, size_t len) {
    snprintf(buf, len, "unavailable");
    if (!lb_bf16_available(NULL, NULL, 0)) return;
    ctx_t *c = ctx_get();
    if (!c) return;
    match_threads();
    dnnl_memory_desc_t smd;
    md2(&smd, N, in, dnnl_bf16, in, 1);
    dnnl_primitive_desc_t pd = matmul_pd(c, &smd, NULL, in, out, 0);
    const char *s = NULL;
    if (pd && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) == dnnl_success && s)
        snprintf(buf, len, "%s", s);
    if (pd) dnnl_primitive_desc_destroy(pd);
}

// The layout the matmul chooses for the [K, Nn] weights of one product (into *out_md);
// 0, or -1 when oneDNN refuses the shape.
static int pack_layout(ctx_t *c, int K, int Nn, dnnl_memory_desc_t *out_md) {
    dnnl_memory_desc_t act;
    md2(&act, 256, K, dnnl_bf16, K, 1);  // the layout does not depend on the rows
    dnnl_primitive_desc_t pd = matmul_pd(c, &act, NULL, K, Nn, 0);
    if (!pd) return -1;
    *out_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    return 0;
}

static int pack_weights(ctx_t *c, lb_pool_t *pool, const float *W, long sk, long sn, int K, int N,
                        const dnnl_memory_desc_t *dmd, void *dst);

// Packs src (type t; W seen as the [K, Nn] weights of one product, element (k, n) at
// src[k·sk + n·sn]) into the layout the matmul chooses for it; *out_md gets that layout.
// fp32 values go through pack_weights (this file's one packer of fp32 weights), bf16 ones
// through oneDNN's reorder.
static void *pack_one(ctx_t *c, const void *src, dnnl_data_type_t t, long sk, long sn, int K, int Nn,
                      dnnl_memory_desc_t *out_md, size_t *bytes) {
    if (pack_layout(c, K, Nn, out_md)) return NULL;
    size_t n = dnnl_memory_desc_get_size(out_md);
    void *buf = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!buf) return NULL;
    dnnl_memory_desc_t smd;
    md2(&smd, K, Nn, t, sk, sn);
    if (t == dnnl_f32 ? pack_weights(c, NULL, src, sk, sn, K, Nn, out_md, buf) : reorder(c, &smd, src, out_md, buf)) {
        free(buf);
        return NULL;
    }
    *bytes += n;
    return buf;
}

static lb_bf16w_t *pack(const void *W, dnnl_data_type_t t, int out, int in, int flags, lb_err_t *err) {
    char why[256];
    if (!lb_bf16_available(NULL, why, sizeof why)) {
        lb_err_set(err, LB_EARG, "%s", why);
        return NULL;
    }
    const int all = LB_BF16W_FWD | LB_BF16W_BWD | LB_BF16W_BWD_LATE | LB_BF16W_FWD_LATE;
    if (out <= 0 || in <= 0 || !(flags & all) || (flags & ~all) ||
        ((flags & LB_BF16W_BWD) && (flags & LB_BF16W_BWD_LATE)) ||
        ((flags & LB_BF16W_FWD) && (flags & LB_BF16W_FWD_LATE))) {
        lb_err_set(err, LB_EARG, "bf16 packing of a %d x %d weight with flags %d: give both sizes "
                   "and one of LB_BF16W_FWD, LB_BF16W_FWD_LATE and/or one of LB_BF16W_BWD, LB_BF16W_BWD_LATE",
                   out, in, flags);
        return NULL;
    }
    if ((flags & (LB_BF16W_BWD_LATE | LB_BF16W_FWD_LATE)) && t != dnnl_f32) {
        lb_err_set(err, LB_EARG, "LB_BF16W_*_LATE packs from fp32 values: use lb_bf16w_pack_f32");
        return NULL;
    }
    ctx_t *c = ctx_get();
    if (!c) {
        lb_err_set(err, LB_EARG, "oneDNN could not open its CPU engine: bf16 products off, fp32 kept");
        return NULL;
    }
    match_threads();
    lb_bf16w_t *w = xcalloc(1, sizeof *w);
    w->out = out;
    w->in = in;
    w->flags = flags;
    w->stamp = new_stamp();
    int fail = 0;
    if (flags & LB_BF16W_FWD) {  // Wᵀ as [K = I, N = O]: element (k, n) at n·I + k
        w->fwd = pack_one(c, W, t, 1, in, in, out, &w->fwd_md, &w->bytes);
        fail |= !w->fwd;
    }
    if (!fail && (flags & LB_BF16W_BWD)) {  // W as [K = O, N = I], row-major
        w->bwd = pack_one(c, W, t, in, 1, out, in, &w->bwd_md, &w->bytes);
        fail |= !w->bwd;
    }
    if (!fail && (flags & LB_BF16W_FWD_LATE))  // the layouts now, the values at each call
        fail |= pack_layout(c, in, out, &w->fwd_md) != 0;
    if (!fail && (flags & LB_BF16W_BWD_LATE))
        fail |= pack_layout(c, out, in, &w->bwd_md) != 0;
    if (flags & (LB_BF16W_BWD_LATE | LB_BF16W_FWD_LATE)) w->src = W;
    if (fail) {
        lb_bf16w_free(w);
        lb_err_set(err, LB_EARG, "oneDNN refused to pack a %d x %d weight for bf16 products: "
                   "fp32 kept for it", out, in);
        return NULL;
    }
    return w;
}

size_t lb_bf16w_packed_bytes(int out, int in, int fwd) {
    size_t plain = 2 * (size_t)(out > 0 ? out : 0) * (size_t)(in > 0 ? in : 0);
    ctx_t *c = out > 0 && in > 0 && lb_bf16_available(NULL, NULL, 0) ? ctx_get() : NULL;
    dnnl_memory_desc_t md;
    if (!c || (fwd ? pack_layout(c, in, out, &md) : pack_layout(c, out, in, &md))) return plain;
    return dnnl_memory_desc_get_size(&md);
}

int lb_bf16w_repack_f32(lb_bf16w_t *w, const float *W) {
    ctx_t *c = w ? ctx_get() : NULL;
    if (!c) return -1;
    match_threads();
    if (w->fwd && pack_weights(c, NULL, W, 1, w->in, w->in, w->out, &w->fwd_md, w->fwd)) return -1;
    if (w->bwd && pack_weights(c, NULL, W, w->in, 1, w->out, w->in, &w->bwd_md, w->bwd)) return -1;
    if (w->flags & (LB_BF16W_BWD_LATE | LB_BF16W_FWD_LATE)) w->src = W;
    w->stamp = new_stamp();
    return 0;
}

lb_bf16w_t *lb_bf16w_pack_f32(const float *W, int out, int in, int flags, lb_err_t *err) {
    return pack(W, dnnl_f32, out, in, flags, err);
}

lb_bf16w_t *lb_bf16w_pack_bf16(const uint16_t *W, int out, int in, int flags, lb_err_t *err) {
    return pack(W, dnnl_bf16, out, in, flags, err);
}

void lb_bf16w_free(lb_bf16w_t *w) {
    if (!w) return;
    free(w->fwd);
    free(w->bwd);
    free(w);
}

size_t lb_bf16w_bytes(const lb_bf16w_t *w) { return w ? w->bytes : 0; }
int lb_bf16w_flags(const lb_bf16w_t *w) { return w ? w->flags : 0; }

#ifdef LB_VEC512
// d [n] = lb_f32_to_bf16(a [n]) 16 at a time, bit for bit its result (round to nearest
// even, a NaN kept quiet): ~4x the scalar loop, which the compiler does not vectorise.
// Used where the CPU has AVX-512 F (avail_cpu: to_bf16 runs only after
// lb_bf16_available detected it).
LB_AVX512F static void row_to_bf16_avx512(const float *a, long n, uint16_t *d) {
    for (long k = 0; k < n; k += 16) {
        __mmask16 m = tail16(n - k < 16 ? (int)(n - k) : 16);
        st16_bf16(d + k, m, m == 0xFFFF ? _mm512_loadu_ps(a + k) : _mm512_maskz_loadu_ps(m, a + k));
    }
}
#endif

// dst [rows, cols] bf16 row-major = src (fp32) read at src[i·s_row + j·s_col]. A plain
// loop (AVX-512 for contiguous rows) and not a oneDNN reorder: its generic reorder cost
// about 10 ns a value, more than the products it feeds.
static int to_bf16(const float *src, long rows, long cols, long s_row, long s_col, uint16_t *dst) {
    if (s_col == 1) {
        for (long i = 0; i < rows; i++) {
            const float *a = src + i * s_row;
            uint16_t *d = dst + i * cols;
#ifdef LB_VEC512
            if (avail_cpu.avx512f) {
                row_to_bf16_avx512(a, cols, d);
                continue;
            }
#endif
            for (long k = 0; k < cols; k++) d[k] = lb_f32_to_bf16(a[k]);
        }
    } else {  // transposed: 16 columns of dst at a time, so that its writes and the reads
              // of the 16 source rows stay in cache lines already loaded
        for (long k0 = 0; k0 < cols; k0 += 16) {
            long kn = cols - k0 < 16 ? cols - k0 : 16;
            for (long i = 0; i < rows; i++) {
                const float *a = src + i * s_row + k0 * s_col;
                uint16_t *d = dst + i * cols + k0;
                for (long k = 0; k < kn; k++) d[k] = lb_f32_to_bf16(a[k * s_col]);
            }
        }
    }
    return 0;
}

// ---- packing without oneDNN's reorder -----------------------------------------------
// oneDNN's matmul reads bf16 weights [K, N] in the layout BA16a<NB>b2a (NB = 64 for our
// shapes): blocks of 32 k × NB n, the n blocks outermost, inside a block [k/2][n][k%2]
// (pairs of k side by side, as the bf16 dot products read them); padded with zeros to
// whole blocks. Its reorder from fp32 runs on one thread at about 1 ns a value, which a
// late packing (every trainable weight, every forward and backward of a full fine-tune)
// pays on every call; this packer converts 16 values at a time (row_to_bf16_avx512) and
// spreads the n blocks over the pool. It is used only where the layout oneDNN chose is
// one of these (pack_fast_nb), after a one-time check against oneDNN's own reorder.

// NB for the layout md, when it is BA16a<NB>b2a for [K, N] bf16; else 0.
static int pack_fast_nb(const dnnl_memory_desc_t *md, int K, int N) {
    static const struct { dnnl_format_tag_t tag; int nb; } tags[] = {
        {dnnl_BA16a64b2a, 64}, {dnnl_BA16a32b2a, 32}, {dnnl_BA16a16b2a, 16}};
    dnnl_dims_t d = {K, N};
    for (size_t i = 0; i < sizeof tags / sizeof *tags; i++) {
        dnnl_memory_desc_t t;
        if (dnnl_memory_desc_init_by_tag(&t, 2, d, dnnl_bf16, tags[i].tag) == dnnl_success &&
            dnnl_memory_desc_equal(&t, md))
            return tags[i].nb;
    }
    return 0;
}

typedef struct {
    const float *W;  // element (k, n) at W[k·sk + n·sn]
    long sk, sn;
    int K, N, NB;
    uint16_t *dst;
} packjob_t;

// n blocks [lo, hi) of the packing.
static void pack_fast_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const packjob_t *j = ctx;
    int K = j->K, N = j->N, NB = j->NB, KB = (K + 31) / 32;
    float col[32];
    uint16_t c16[32], r16[2][64];
    for (long nb = lo; nb < hi; nb++)
        for (int kb = 0; kb < KB; kb++) {
            uint16_t *blk = j->dst + ((size_t)nb * KB + kb) * 32 * NB;
            int k0 = kb * 32, n0 = (int)nb * NB;
            int kn = K - k0 < 32 ? K - k0 : 32, nn = N - n0 < NB ? N - n0 : NB;
            if (kn < 32 || nn < NB) memset(blk, 0, sizeof(uint16_t) * 32 * NB);
            if (j->sk == 1) {  // a column n is contiguous in k: convert 32 k, place the pairs
                for (int ni = 0; ni < nn; ni++) {
                    const float *src = j->W + (size_t)(n0 + ni) * j->sn + k0;
                    const float *a = src;
                    if (kn < 32) {
                        memset(col, 0, sizeof col);
                        memcpy(col, src, sizeof(float) * kn);
                        a = col;
                    }
#ifdef LB_VEC512
                    if (avail_cpu.avx512f) row_to_bf16_avx512(a, 32, c16);
                    else
#endif
                        for (int k = 0; k < 32; k++) c16[k] = lb_f32_to_bf16(a[k]);
                    uint32_t pair[16];  // (k, k + 1) side by side, as they are stored
                    memcpy(pair, c16, sizeof pair);
                    uint32_t *b32 = (uint32_t *)(void *)blk + ni;
                    for (int kp = 0; kp < 16; kp++) b32[(size_t)kp * NB] = pair[kp];
                }
            } else {  // a row k is contiguous in n: convert two rows, interleave them
                for (int kp = 0; kp < 16 && 2 * kp < kn; kp++) {
                    for (int r = 0; r < 2; r++) {
                        int k = k0 + 2 * kp + r;
                        if (k >= K) {
                            memset(r16[r], 0, sizeof r16[r]);
                            continue;
                        }
                        const float *src = j->W + (size_t)k * j->sk + (size_t)n0 * j->sn;
#ifdef LB_VEC512
                        if (avail_cpu.avx512f && j->sn == 1) row_to_bf16_avx512(src, nn, r16[r]);
                        else
#endif
                            for (int ni = 0; ni < nn; ni++) r16[r][ni] = lb_f32_to_bf16(src[(size_t)ni * j->sn]);
                    }
                    uint16_t *d = blk + (size_t)kp * NB * 2;
                    for (int ni = 0; ni < nn; ni++) {
                        d[2 * ni] = r16[0][ni];
                        d[2 * ni + 1] = r16[1][ni];
                    }
                }
            }
        }
}

// W (element (k, n) at W[k·sk + n·sn]) packed into dst in BA16a<NB>b2a over the pool.
static void pack_fast(lb_pool_t *pool, const float *W, long sk, long sn, int K, int N, int NB, uint16_t *dst) {
    packjob_t j = {W, sk, sn, K, N, NB, dst};
    long nblk = (N + NB - 1) / NB;
    lb_pool_run(pool && (size_t)K * N >= 65536 ? pool : NULL, nblk, pack_fast_job, &j);
}

// Once a process: pack_fast equals oneDNN's reorder for both orientations and every
// layout it stands in for, on shapes with and without padding; 0 turns it off.
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;
static int fast_ok;
static void fast_check(void) {
    ctx_t *c = ctx_get();
    if (!c) return;
    static const int shapes[][2] = {{64, 128}, {40, 70}};
    static const dnnl_format_tag_t tags[] = {dnnl_BA16a64b2a, dnnl_BA16a32b2a, dnnl_BA16a16b2a};
    static const int nbs[] = {64, 32, 16};
    int ok = 1;
    for (size_t s = 0; ok && s < 2; s++)
        for (size_t t = 0; ok && t < 3; t++)
            for (int tr = 0; ok && tr < 2; tr++) {
                int K = shapes[s][0], N = shapes[s][1];
                float *W = xmalloc(sizeof(float) * (size_t)K * N);
                for (int i = 0; i < K * N; i++) W[i] = (float)((i * 7919) % 1000) / 997.0f - 0.5f;
                dnnl_memory_desc_t smd, dmd;
                dnnl_dims_t d = {K, N};
                long sk = tr ? 1 : N, sn = tr ? K : 1;
                md2(&smd, K, N, dnnl_f32, sk, sn);
                ok = dnnl_memory_desc_init_by_tag(&dmd, 2, d, dnnl_bf16, tags[t]) == dnnl_success;
                size_t n = ok ? dnnl_memory_desc_get_size(&dmd) : 0;
                uint16_t *a = xcalloc(n / 2 + 1, 2), *b = xcalloc(n / 2 + 1, 2);
                if (ok) ok = reorder(c, &smd, W, &dmd, a) == 0;
                if (ok) {
                    pack_fast(NULL, W, sk, sn, K, N, nbs[t], b);
                    ok = !memcmp(a, b, n);
                }
                free(W), free(a), free(b);
            }
    fast_ok = ok;
}

// dst (layout dmd) = W [K, N] (element (k, n) at W[k·sk + n·sn]) in bf16: this file's
// packer where it stands in for oneDNN's reorder, else that reorder (on the calling
// thread). 0, or -1 when oneDNN failed.
static int pack_weights(ctx_t *c, lb_pool_t *pool, const float *W, long sk, long sn, int K, int N,
                        const dnnl_memory_desc_t *dmd, void *dst) {
    int nb = pack_fast_nb(dmd, K, N);
    if (nb) pthread_once(&fast_once, fast_check);
    if (nb && fast_ok) {
        pack_fast(pool, W, sk, sn, K, N, nb, dst);
        return 0;
    }
    dnnl_memory_desc_t smd;
    md2(&smd, K, N, dnnl_f32, sk, sn);
    return reorder(c, &smd, W, dmd, dst);
}

// ---- products split over the engine's pool ---------------------------------------------
// Given a pool, a product is cut into one block of output rows per pool thread, and each
// block runs on oneDNN with an OpenMP team of one: no OpenMP worker thread ever exists,
// and the pool's threads sleep between loops. OpenMP's own workers instead spin for a
// while after each product (libgomp's default), taking a core from the OpenBLAS and pool
// loops that follow it; on 2 cores that cost more than the bf16 products saved.

// 64-byte aligned scratch that never returns NULL (xmalloc's contract).
static void *xalloc64(size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "lorabench: out of memory allocating %zu bytes; use a smaller batch or model\n", n);
        abort();
    }
    return p;
}

enum { J_CONV, J_FWD, J_FWD16, J_DX, J_DX16, J_DW };

typedef struct {
    int kind;
    const lb_bf16w_t *w;
    const void *packed;   // J_FWD, J_FWD16: the packed Wᵀ (w->fwd, or the late packing);
                          // J_DX: the packed W (w->bwd, or the late packing)
    int N, out, in;       // the product's sizes (N rows of activations)
    const float *a;       // J_CONV: src [rows, in]; J_FWD: x [N, I]; J_DX: dy [N, O]
    const uint16_t *a16;  // J_FWD16: x [N, I]; J_DX16: dy [N, O]; J_DW: x [N, I], all bf16
    const uint16_t *b16;  // J_DW: dy [N, O] in bf16
    void *dst;            // J_CONV: uint16_t [rows, in]; else the fp32 output
    int accum;
    int team;             // OpenMP team size of each block
    int rc[64];           // per pool thread (LB_POOL_MAX): job_rows's result, 1 = did not run
} job_t;

// Rows [lo, hi) of the job's output: 0, -1 (nothing written to the output) or -2 (oneDNN
// failed while writing it).
static int job_rows(const job_t *j, long lo, long hi) {
    ctx_t *c = ctx_get();
    if (!c) return -1;
    if (omp_get_max_threads() != j->team) omp_set_num_threads(j->team);
    long r = hi - lo;
    dnnl_memory_desc_t smd, wmd;
    uint16_t *buf = NULL;
    int rc = -1;
    switch (j->kind) {
    case J_CONV:  // dst rows = src rows in bf16
        rc = to_bf16(j->a + lo * j->in, r, j->in, j->in, 1, (uint16_t *)j->dst + lo * j->in);
        break;
    case J_FWD:  // y rows = bf16(x rows)·Wᵀ
        buf = xalloc64((size_t)r * j->in * 2);
        if (!to_bf16(j->a + lo * j->in, r, j->in, j->in, 1, buf)) {
            md2(&smd, r, j->in, dnnl_bf16, j->in, 1);
            rc = matmul(c, &smd, buf, &j->w->fwd_md, j->packed, j->in, j->out,
                        (float *)j->dst + lo * j->out, j->accum);
        }
        break;
    case J_FWD16:  // y rows = x rows·Wᵀ
        md2(&smd, r, j->in, dnnl_bf16, j->in, 1);
        rc = matmul(c, &smd, j->a16 + lo * j->in, &j->w->fwd_md, j->packed, j->in, j->out,
                    (float *)j->dst + lo * j->out, j->accum);
        break;
    case J_DX:  // dx rows = bf16(dy rows)·W
        buf = xalloc64((size_t)r * j->out * 2);
        if (!to_bf16(j->a + lo * j->out, r, j->out, j->out, 1, buf)) {
            md2(&smd, r, j->out, dnnl_bf16, j->out, 1);
            rc = matmul(c, &smd, buf, &j->w->bwd_md, j->packed, j->out, j->in,
                        (float *)j->dst + lo * j->in, j->accum);
        }
        break;
    case J_DX16:  // dx rows = dy rows·W
        md2(&smd, r, j->out, dnnl_bf16, j->out, 1);
        rc = matmul(c, &smd, j->a16 + lo * j->out, &j->w->bwd_md, j->packed, j->out, j->in,
                    (float *)j->dst + lo * j->in, j->accum);
        break;
    case J_DW:  // dW rows o = (dyᵀ rows o)·x: dy16 read transposed ([r, N] at strides 1, O)
        md2(&smd, r, j->N, dnnl_bf16, 1, j->out);
        md2(&wmd, j->N, j->in, dnnl_bf16, j->in, 1);
        rc = matmul(c, &smd, j->b16 + lo, &wmd, j->a16, j->N, j->in, (float *)j->dst + lo * j->in, j->accum);
        break;
    }
    free(buf);
    return rc;
}

static void job_fn(void *ctx, long lo, long hi, int tid) {
    job_t *j = ctx;
    j->rc[tid & 63] = job_rows(j, lo, hi);
}

// A oneDNN failure after a block accumulated into the output cannot be undone, so the
// fp32 path cannot redo the product: that is fatal, as running out of memory is for
// xmalloc (packing already made oneDNN accept the weight's shapes, so out of memory is
// the one known cause). A failure that leaves nothing accumulated returns -1 instead and
// the caller redoes the product in fp32 (overwriting whatever a block wrote).
static void die_product(const job_t *j, long rows) {
    static const char *what[] = {"bf16 conversion", "forward", "forward", "backward dx", "backward dx", "weight gradient"};
    fprintf(stderr, "lorabench: oneDNN failed in a bf16 %s product (%ld rows, %d in, %d out); "
            "out of memory is the likely cause: use a smaller batch, or run without bf16 products\n",
            what[j->kind], rows, j->in, j->out);
    abort();
}

// Runs j over rows [0, rows): on the pool's threads, or with pool NULL on the caller with
// an OpenMP team of lb_pool_threads(). J_CONV counts a value as 50 flops (about its
// cost against a bf16 flop's).
// A product of fewer flops than this runs as one block on the calling thread (with a pool:
// the split and wake-up cost more than a second thread gains, ~10 µs).
#define SPLIT_MIN_FLOPS 4e6

static int job_run(lb_pool_t *pool, job_t *j, long rows) {
    int nt = lb_pool_threads();
    for (int t = 0; t < 64; t++) j->rc[t] = 1;
    double flops = j->kind == J_CONV ? 50.0 * rows * j->in
                 : j->kind == J_DW   ? 2.0 * j->N * j->in * j->out
                                     : 2.0 * rows * j->in * j->out;
    if (!pool || nt <= 1 || flops < SPLIT_MIN_FLOPS) {
        j->team = pool ? 1 : nt;
        j->rc[0] = job_rows(j, 0, rows);
    } else {
        j->team = 1;
        lb_pool_run(pool, rows, job_fn, j);
    }
    int failed = 0, wrote = 0;
    for (int t = 0; t < 64; t++) {
        failed |= j->rc[t] < 0;
        wrote |= j->rc[t] == 0 || j->rc[t] == -2;
    }
    if (!failed) return 0;
    if (j->accum && wrote) die_product(j, rows);
    return -1;
}

void lb_bf16_from_f32(lb_pool_t *pool, const float *src, size_t n, uint16_t *dst) {
    if (n > 0 && n % 64 == 0 && n / 64 <= 0x7fffffff && lb_bf16_available(NULL, NULL, 0)) {
        job_t j = {.kind = J_CONV, .in = 64, .a = src, .dst = dst};  // n/64 rows of 64
        if (!job_run(pool, &j, (long)(n / 64))) return;
    } else if (n > 0 && n <= 0x7fffffff && lb_bf16_available(NULL, NULL, 0)) {
        job_t j = {.kind = J_CONV, .in = (int)n, .a = src, .dst = dst};
        if (!job_run(pool, &j, 1)) return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = lb_f32_to_bf16(src[i]);
}

// The packing of a late weight for one direction (fwd: Wᵀ as [I, O], else W as [O, I]),
// made now from its fp32 W into the calling thread's buffer (one for all late weights and
// both directions, which never overlap in one call; grown to the largest). The reorder
// runs on the calling thread alone: an OpenMP team would leave its workers spinning
// through the pool's product that follows (gemm_bf16.h).
static const void *late_pack(lb_pool_t *pool, const lb_bf16w_t *w, int fwd) {
    ctx_t *c = ctx_get();
    if (!c || !w->src) return NULL;
    if (c->late_stamp == w->stamp && c->late_fwd == fwd) return c->late;  // e.g. the head's blocks of rows
    const dnnl_memory_desc_t *dmd = fwd ? &w->fwd_md : &w->bwd_md;
    size_t n = dnnl_memory_desc_get_size(dmd);
    c->late_stamp = 0;
    if (n > c->late_cap) {
        free(c->late);
        c->late = aligned_alloc(64, (n + 63) / 64 * 64);
        c->late_cap = c->late ? n : 0;
        if (!c->late) return NULL;
    }
    if (omp_get_max_threads() != 1) omp_set_num_threads(1);
    int rc = fwd ? pack_weights(c, pool, w->src, 1, w->in, w->in, w->out, dmd, c->late)  // Wᵀ as [I, O]
                 : pack_weights(c, pool, w->src, w->in, 1, w->out, w->in, dmd, c->late);
    if (rc) return NULL;
    c->late_stamp = w->stamp;
    c->late_fwd = fwd;
    return c->late;
}

// One product of w over N rows (kind J_FWD, J_FWD16 or J_DX, input a or a16): w's own
// packing for its direction, or one made now (LB_BF16W_*_LATE); -1 when it has neither.
static int product(lb_pool_t *pool, const lb_bf16w_t *w, int kind, int N, const float *a, const uint16_t *a16,
                   float *dst, int accum) {
    int fwd = kind != J_DX && kind != J_DX16;
    const void *own = w ? (fwd ? w->fwd : w->bwd) : NULL;
    int late = w && (w->flags & (fwd ? LB_BF16W_FWD_LATE : LB_BF16W_BWD_LATE));
    if ((!own && !late) || N < 0) return -1;
    if (N == 0) return 0;
    const void *packed = own ? own : late_pack(pool, w, fwd);
    if (!packed) return -1;
    job_t j = {.kind = kind, .w = w, .packed = packed, .N = N, .out = w->out, .in = w->in, .a = a, .a16 = a16,
               .dst = dst, .accum = accum};
    return job_run(pool, &j, N);
}

int lb_bf16w_forward(lb_pool_t *pool, const lb_bf16w_t *w, int N, const float *x, float *y, int accum) {
    return product(pool, w, J_FWD, N, x, NULL, y, accum);
}

int lb_bf16w_forward_bf16(lb_pool_t *pool, const lb_bf16w_t *w, int N, const uint16_t *x, float *y,
                          int accum) {
    return product(pool, w, J_FWD16, N, NULL, x, y, accum);
}

int lb_bf16w_backward_dx(lb_pool_t *pool, const lb_bf16w_t *w, int N, const float *dy, float *dx,
                         int accum) {
    return product(pool, w, J_DX, N, dy, NULL, dx, accum);
}

int lb_bf16w_backward_dx_bf16(lb_pool_t *pool, const lb_bf16w_t *w, int N, const uint16_t *dy, float *dx,
                              int accum) {
    return product(pool, w, J_DX16, N, NULL, dy, dx, accum);
}

size_t lb_bf16_late_bytes(void) {
    ctx_t *c = ctx_get();
    return c ? c->late_cap : 0;
}

int lb_bf16_gemm_dw(lb_pool_t *pool, int N, int out, int in, const float *dy, const float *x,
                    float *dW, int accum) {
    return lb_bf16_gemm_dw16(pool, N, out, in, dy, NULL, x, NULL, dW, accum);
}

int lb_bf16_gemm_dw16(lb_pool_t *pool, int N, int out, int in, const float *dy, const uint16_t *dy16,
                      const float *x, const uint16_t *x16, float *dW, int accum) {
    if (N < 0 || out <= 0 || in <= 0 || !lb_bf16_available(NULL, NULL, 0)) return -1;
    if (N == 0) {  // an empty sum
        if (!accum) memset(dW, 0, sizeof(float) * (size_t)out * in);
        return 0;
    }
    uint16_t *own_x = NULL, *own_dy = NULL;
    if (!x16) {  // x [N, I] and dy [N, O] rounded in their own layout (contiguous, on the pool)
        lb_bf16_from_f32(pool, x, (size_t)N * in, own_x = xalloc64((size_t)N * in * 2));
        x16 = own_x;
    }
    if (!dy16) {
        lb_bf16_from_f32(pool, dy, (size_t)N * out, own_dy = xalloc64((size_t)N * out * 2));
        dy16 = own_dy;
    }
    job_t j = {.kind = J_DW, .N = N, .out = out, .in = in, .a16 = x16, .b16 = dy16, .dst = dW, .accum = accum};
    int rc = job_run(pool, &j, out);
    free(own_x);
    free(own_dy);
    return rc;
}

// lb_bf16_gemm's primitives are keyed by nine integers: hashing memory descriptors of ~1 KB
// each, as a layer's are, would cost microseconds a call against products of ~10 us.
static int same_gemm(const prim_t *e, const void *k) { return !memcmp(e->key, k, sizeof e->key); }

int lb_bf16_gemm(int ta, int tb, int M, int N, int K, const uint16_t *A, long lda, const uint16_t *B,
                 long ldb, float *C, long ldc, int accum) {
    if (M <= 0 || N <= 0 || K <= 0 || !lb_bf16_available(NULL, NULL, 0)) return -1;
    ctx_t *c = ctx_get();
    if (!c) return -1;
    if (omp_get_max_threads() != 1) omp_set_num_threads(1);
    long key[9] = {ta, tb, M, N, K, lda, ldb, ldc, accum};
    uint64_t h = fnv(0xcbf29ce484222325ull, key, sizeof key);
    int hit;
    prim_t *e = prim_slot(c, h, same_gemm, key, &hit);
    if (!hit) {
        dnnl_memory_desc_t smd, wmd, dmd;
        if (ta)  // A [K, M] read as its transpose
            md2(&smd, M, K, dnnl_bf16, 1, lda);
        else
            md2(&smd, M, K, dnnl_bf16, lda, 1);
        if (tb)
            md2(&wmd, K, N, dnnl_bf16, 1, ldb);
        else
            md2(&wmd, K, N, dnnl_bf16, ldb, 1);
        md2(&dmd, M, N, dnnl_f32, ldc, 1);
        if (prim_make(c, e, &smd, &wmd, &dmd, K, N, accum, 1)) return -1;
        memcpy(e->key, key, sizeof key);
        e->hash = h;
        e->last = c->tick;
    }
    return prim_run(c, e, A, B, C);
}
