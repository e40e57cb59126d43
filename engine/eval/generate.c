// Greedy and beam search over an incremental T5 decoder. The search code follows
// transformers' generation/utils.py (5.x) step for step, including its float32 arithmetic
// on scores and its -1e9 "not eligible" offsets, because which hypothesis wins depends on
// them. Shapes use the letters of t5.h and generate.h.
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#if !defined(LB_REAL_DOUBLE) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GEN_AVX512 1
#endif

// ---------------------------------------------------------------------------------------
// Encoder

int generate_encode(const t5_model_t *m, const int32_t *input_ids, const int32_t *attention_mask,
                    int B, int S, lb_real *enc_out, lb_err_t *err) {
    if (B <= 0 || S <= 0)
        return lb_err_set(err, LB_EARG, "generation needs at least one input of at least one token (got B=%d, S=%d)", B, S);
    // The teacher-forced forward with one ignored label runs the encoder in full and the
    // decoder for a single position: the cheapest way to the encoder output through the
    // model's own (tested) code.
    t5_acts_t *a = t5_acts_new(m, B, S, 1);
    int32_t *labels = xmalloc(sizeof *labels * (size_t)B);
    for (int b = 0; b < B; b++) labels[b] = -100;
    t5_batch_t bt = {B, S, 1, input_ids, attention_mask, labels};
    int rc = t5_forward(m, a, &bt, NULL, NULL, err);
    if (!rc) memcpy(enc_out, t5_acts_encoder_out(a), sizeof(lb_real) * (size_t)B * S * m->cfg.d_model);
    free(labels);
    t5_acts_free(a);
    return rc;
}

// ---------------------------------------------------------------------------------------
// Incremental decoder

struct generate_dec {
    const t5_model_t *m;
    int B, S, nb, R, P;     // inputs, source length, rows per input, rows, cache positions
    int D, H, K, HK, F, V, L;
    int pos;                // positions held in the self-attention cache
    int max_r;              // LoRA rank the scratch was sized for
    lb_real *ck, *cv;       // [L, B·S, HK] cross-attention keys / values
    lb_real *sk, *sv;       // [L, R, P, HK] self-attention cache, by slot: row r's prefix is
                            // in slot slot[r] of every layer
    int *slot, *slot2;      // [R] each row's slot; the reorder's new map
    char *claimed;          // [R] reorder scratch: slot kept by some row
    int32_t *mask;          // [B, S] 1 = source token, 0 = padding
    lb_real *x;             // [R, D] residual stream
    lb_real *h;             // [R, D] normed input of a sublayer
    lb_real *y;             // [R, D] sublayer output
    lb_real *q, *kn, *vn;   // [R, HK]
    lb_real *ctx;           // [R, HK]
    lb_real *fa, *fb;       // [R, F]
    lb_real *sc;            // [nt, max(nb·S, P)] attention scores of one (input|row, head),
                            // one slice per pool thread
    size_t nsc;             // max(nb·S, P): one slice of sc
    int nt;                 // pool threads sc was made for
    lb_pool_t *pool;        // the decoder's threads: products, attention, activations
    int avx512;             // the CPU runs few_rows_avx512
    lb_real *bias;          // [H, P] relative position bias of the current query position
    lb_real *xa;            // [max(R, B·S), max_r] LoRA x·Aᵀ
    lb_real *logits;        // [R, V]
    size_t bytes;
};

static int model_max_rank(const t5_model_t *m) {
    int r = 0;
    for (int i = 0; i < m->n_lin; i++)
        if (m->lin[i].r > r) r = m->lin[i].r;
    return r;
}

static lb_real *alloc_real(generate_dec_t *d, size_t n) {
    d->bytes += n * sizeof(lb_real);
    return xcalloc(n ? n : 1, sizeof(lb_real));
}

// T5 layer norm (RMS, no mean, no bias): y = x · (mean(x²) + eps)^-½ · w, rows of D.
static void rms_norm(int N, int D, const lb_real *x, const lb_real *w, float eps, lb_real *y) {
    for (int r = 0; r < N; r++) {
        const lb_real *xr = x + (size_t)r * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)xr[j] * xr[j];
        lb_real iv = (lb_real)(1.0 / sqrt(ss / D + (double)eps));
        lb_real *yr = y + (size_t)r * D;
        for (int j = 0; j < D; j++) yr[j] = xr[j] * iv * w[j];
    }
}

// transformers' ACT2FN for the feed forward.
static lb_real act_apply(t5_act_t a, lb_real x) {
    switch (a) {
    case T5_ACT_RELU: return x > 0 ? x : 0;
    case T5_ACT_GELU: return (lb_real)(0.5 * x * (1.0 + erf(x * 0.70710678118654752440)));
    case T5_ACT_GELU_NEW: {
        double u = 0.79788456080286535588 * (x + 0.044715 * (double)x * x * x);
        return (lb_real)(0.5 * x * (1.0 + tanh(u)));
    }
    case T5_ACT_SILU: return (lb_real)(x / (1.0 + exp(-(double)x)));
    }
    return 0;
}

// Softmax of row[0..n) in place over the entries with keep[j] (NULL = all); the others
// become 0. A row with nothing to keep becomes all 0.
static void softmax_masked(lb_real *row, int n, const int32_t *keep) {
    lb_real mx = -INFINITY;
    for (int j = 0; j < n; j++)
        if ((!keep || keep[j]) && row[j] > mx) mx = row[j];
    double sum = 0;
    for (int j = 0; j < n; j++) {
        if (!keep || keep[j]) {
            row[j] = (lb_real)exp((double)(row[j] - mx));
            sum += row[j];
        } else {
            row[j] = 0;
        }
    }
    lb_real inv = sum > 0 ? (lb_real)(1.0 / sum) : 0;
    for (int j = 0; j < n; j++) row[j] *= inv;
}

// The product of a weight for the few rows of a decoder step: y [N, O] = x [N, I]·Wᵀ (+ the
// LoRA term). Such a product is memory-bound (each weight value is read for N ≤ 8·beams
// rows), and OpenBLAS, given one sgemm of N rows, repacks all of W and lets its idle
// threads spin with sched_yield on the cores the next products need. Here a fp32 W is
// instead cut into one block of output features per pool thread, each an OpenBLAS call of
// its own on one thread (lb_pool_run_gemms): every output is the same dot product in the
// same order as in the whole sgemm, or (AVX-512) few_rows_avx512, which reads each weight
// once; a W held in bf16 storage (--bf16-weights) is read as bf16 and widened in registers,
// half the bytes. A layer packed for bf16 products (t5_use_bf16) runs them on the pool
// (linear_forward_pool); many rows (the cross-attention keys/values of the encoder output)
// take linear_forward_pool as is.
#ifdef GEN_AVX512
// 16 bf16 values widened to fp32 (exact: a bf16 value is the top half of a float).
__attribute__((target("avx512f"))) static inline __m512 bf16x16_load(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// 16 weights from k on of weight row w (fp32, or bf16 when w16), the first n only when n < 16
// (zeros after).
__attribute__((target("avx512f"), always_inline)) static inline __m512 w_load(const void *w, int w16, int k, int n) {
    if (!w16) return n < 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), (const float *)w + k)
                            : _mm512_loadu_ps((const float *)w + k);
    if (n == 16) return bf16x16_load((const uint16_t *)w + k);
    uint16_t t[16] = {0};
    memcpy(t, (const uint16_t *)w + k, sizeof(uint16_t) * (size_t)n);
    return bf16x16_load(t);
}

// y [N, lo:hi] = x [N, Kd]·W[lo:hi]ᵀ with AVX-512: 4 weight rows by 4 input rows at a time,
// each weight row read from memory once per call (it stays in L1 for all N rows). W is fp32,
// or bf16 storage (w16: t5_frozen_weights_bf16), widened as it is loaded, so the product is
// the fp32 product of the same values (what linear_forward computes by converting blocks
// of W first) reading half the bytes. Inlined into one copy per storage type.
__attribute__((target("avx512f"), always_inline)) static inline void few_rows_body(int N, int Kd, const float *x,
                                                                                  const void *W, int w16, long lo,
                                                                                  long hi, float *y, int ldy) {
    int kt = Kd & ~15;
    __mmask16 tail = (__mmask16)((1u << (Kd - kt)) - 1);
    size_t wsz = w16 ? sizeof(uint16_t) : sizeof(float);
    for (long o = lo; o < hi; o += 4) {
        int no = hi - o < 4 ? (int)(hi - o) : 4;
        const void *w[4];
        for (int a = 0; a < 4; a++) w[a] = (const char *)W + (size_t)(o + (a < no ? a : 0)) * Kd * wsz;
        for (int n = 0; n < N; n += 4) {
            int nn = N - n < 4 ? N - n : 4;
            const float *xr[4];
            for (int b = 0; b < 4; b++) xr[b] = x + (size_t)(n + (b < nn ? b : 0)) * Kd;
            __m512 acc[4][4];
#pragma GCC unroll 4
            for (int a = 0; a < 4; a++)
#pragma GCC unroll 4
                for (int b = 0; b < 4; b++) acc[a][b] = _mm512_setzero_ps();
            for (int k = 0; k < Kd; k += 16) {
                int kn = k < kt ? 16 : Kd - kt;
                __m512 wv[4], xv[4];
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++) wv[a] = w_load(w[a], w16, k, kn);
#pragma GCC unroll 4
                for (int b = 0; b < 4; b++)
                    xv[b] = kn < 16 ? _mm512_maskz_loadu_ps(tail, xr[b] + k) : _mm512_loadu_ps(xr[b] + k);
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++)
#pragma GCC unroll 4
                    for (int b = 0; b < 4; b++) acc[a][b] = _mm512_fmadd_ps(wv[a], xv[b], acc[a][b]);
            }
            for (int b = 0; b < nn; b++)
                for (int a = 0; a < no; a++) y[(size_t)(n + b) * ldy + o + a] = _mm512_reduce_add_ps(acc[a][b]);
        }
    }
}

__attribute__((target("avx512f"))) static void few_rows_avx512(int N, int Kd, const float *x, const float *W,
                                                               long lo, long hi, float *y, int ldy) {
    few_rows_body(N, Kd, x, W, 0, lo, hi, y, ldy);
}

__attribute__((target("avx512f"))) static void few_rows_avx512_w16(int N, int Kd, const float *x, const uint16_t *W,
                                                                   long lo, long hi, float *y, int ldy) {
    few_rows_body(N, Kd, x, W, 1, lo, hi, y, ldy);
}
#endif

typedef struct {
    const linear_t *l;
    int avx512;  // few_rows_avx512 instead of sgemm
    int N;
    const lb_real *x, *xa;
    lb_real *y;
} dec_lin_job_t;

static void dec_lin_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const dec_lin_job_t *j = ctx;
    const linear_t *l = j->l;
    int n = (int)(hi - lo), I = l->in, O = l->out;
    // y[:, lo:hi] = x·W[lo:hi]ᵀ
#ifdef GEN_AVX512
    if (j->avx512 && l->W->w16) few_rows_avx512_w16(j->N, I, j->x, l->W->w16, lo, hi, j->y, O);
    else if (j->avx512) few_rows_avx512(j->N, I, j->x, l->W->w, lo, hi, j->y, O);
    else
#endif
        lb_gemm(0, 1, j->N, n, I, 1, j->x, I, l->W->w + (size_t)lo * I, I, 0, j->y + lo, O);
    // + s·xa·B[lo:hi]ᵀ: linear_forward's LoRA term without dropout (generation never trains)
    if (l->r > 0) linear_lora_up(l, j->N, j->xa, lo, hi, j->y);
}

static void dec_linear(generate_dec_t *d, const linear_t *l, int N, const lb_real *x, lb_real *y) {
    // (a bf16 layer that packs at each call: fp32 from its master W here, not a whole
    // packing for a few rows)
    if ((l->bf16 && !linear_bf16_packs_late(l)) || (!l->W->w && !(d->avx512 && l->W->w16)) || N > 64) {
        linear_forward_pool(l, d->pool, N, x, NULL, y, d->xa, NULL, NULL, 0);
        return;
    }
    if (l->r > 0) linear_lora_down(l, N, x, d->xa);  // xa [N, R] = x·Aᵀ (small: N·R·I)
    dec_lin_job_t j = {l, d->avx512, N, x, d->xa, y};
    lb_pool_run_gemms(d->pool, l->out, dec_lin_job, &j);
}

generate_dec_t *generate_dec_new(const t5_model_t *m, const lb_real *enc_out,
                                 const int32_t *attention_mask, int B, int S, int rows_per_input,
                                 int max_len, lb_err_t *err) {
    if (B <= 0 || S <= 0 || rows_per_input <= 0 || max_len <= 0) {
        lb_err_set(err, LB_EARG, "decoder of B=%d inputs, S=%d source tokens, %d rows per input and %d positions: every size must be at least 1",
                   B, S, rows_per_input, max_len);
        return NULL;
    }
    const t5_config_t *c = &m->cfg;
    generate_dec_t *d = xcalloc(1, sizeof *d);
    d->m = m;
    d->B = B; d->S = S; d->nb = rows_per_input; d->R = B * rows_per_input; d->P = max_len;
    d->D = c->d_model; d->H = c->num_heads; d->K = c->d_kv; d->HK = d->H * d->K;
    d->F = c->d_ff; d->V = c->vocab_size; d->L = c->num_decoder_layers;
    d->max_r = model_max_rank(m);
    size_t R = (size_t)d->R, BS = (size_t)B * S, L = (size_t)d->L, HK = (size_t)d->HK;
    size_t cache = L * R * (size_t)d->P * HK;
    d->ck = alloc_real(d, L * BS * HK);
    d->cv = alloc_real(d, L * BS * HK);
    d->sk = alloc_real(d, cache);
    d->sv = alloc_real(d, cache);
    d->slot = xmalloc(sizeof(int) * R);
    d->slot2 = xmalloc(sizeof(int) * R);
    d->claimed = xmalloc(R);
    for (int r = 0; r < d->R; r++) d->slot[r] = r;
    d->mask = xmalloc(sizeof(int32_t) * BS);
    d->bytes += sizeof(int32_t) * BS;
    for (size_t i = 0; i < BS; i++) d->mask[i] = attention_mask ? attention_mask[i] != 0 : 1;
    d->x = alloc_real(d, R * d->D);
    d->h = alloc_real(d, R * d->D);
    d->y = alloc_real(d, R * d->D);
    d->q = alloc_real(d, R * HK);
    d->kn = alloc_real(d, R * HK);
    d->vn = alloc_real(d, R * HK);
    d->ctx = alloc_real(d, R * HK);
    d->fa = alloc_real(d, R * d->F);
    d->fb = alloc_real(d, R * d->F);
    d->nsc = (size_t)d->nb * S > (size_t)d->P ? (size_t)d->nb * S : (size_t)d->P;
    d->nt = lb_pool_threads();
    d->sc = alloc_real(d, d->nsc * (size_t)d->nt);
    d->pool = lb_pool_new();
    lb_cpu_t cpu;
    lb_cpu_detect(&cpu);
    d->avx512 = cpu.avx512f;
    d->bias = alloc_real(d, (size_t)d->H * d->P);
    d->xa = alloc_real(d, (R > BS ? R : BS) * (size_t)d->max_r);
    d->logits = alloc_real(d, R * d->V);
    // cross-attention keys and values, once per input and layer
    for (int l = 0; l < d->L; l++) {
        const t5_attn_t *X = &m->dec[l].cross;
        dec_linear(d, X->k, (int)BS, enc_out, d->ck + (size_t)l * BS * HK);
        dec_linear(d, X->v, (int)BS, enc_out, d->cv + (size_t)l * BS * HK);
    }
    return d;
}

void generate_dec_free(generate_dec_t *d) {
    if (!d) return;
    free(d->ck); free(d->cv); free(d->sk); free(d->sv); free(d->slot); free(d->slot2); free(d->claimed);
    free(d->mask); free(d->x); free(d->h); free(d->y); free(d->q); free(d->kn); free(d->vn);
    free(d->ctx); free(d->fa); free(d->fb); free(d->sc); free(d->bias); free(d->xa);
    free(d->logits);
    lb_pool_free(d->pool);
    free(d);
}

int generate_dec_pos(const generate_dec_t *d) { return d->pos; }

// Beam search's cache reorder: row r continues the prefix of row parents[r] (a row of the
// same input), as transformers' reorder_cache. Rows point to slots of the cache: the first
// row continuing a parent takes over the parent's slot as it is; only a parent continued by
// several rows is copied (into a slot no row keeps), so a step copies (R − distinct parents)
// prefixes instead of all R.
static void generate_dec_reorder(generate_dec_t *d, const int *parents) {
    int R = d->R;
    if (d->pos == 0) return;
    memset(d->claimed, 0, (size_t)R);
    for (int r = 0; r < R; r++) {
        int s = d->slot[parents[r]];
        d->slot2[r] = d->claimed[s] ? -1 : s;
        d->claimed[s] = 1;
    }
    size_t row = (size_t)d->P * d->HK, used = (size_t)d->pos * d->HK;
    int free_slot = 0;
    for (int r = 0; r < R; r++) {
        if (d->slot2[r] >= 0) continue;
        while (d->claimed[free_slot]) free_slot++;  // as many free slots as copies
        int src = d->slot[parents[r]], dst = free_slot;
        d->claimed[dst] = 1;
        for (int l = 0; l < d->L; l++) {
            size_t base = (size_t)l * R * row;
            memcpy(d->sk + base + dst * row, d->sk + base + src * row, sizeof(lb_real) * used);
            memcpy(d->sv + base + dst * row, d->sv + base + src * row, sizeof(lb_real) * used);
        }
        d->slot2[r] = dst;
    }
    int *t = d->slot; d->slot = d->slot2; d->slot2 = t;
}

// x += y over R rows of D.
static void add_into(lb_real *x, const lb_real *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}


// Attention of one decoder step, one pool item per (row, head) for self attention and per
// (input, head) for cross attention; each thread scores into its own slice of d->sc.
typedef struct {
    generate_dec_t *d;
    const lb_real *skl, *svl;  // [R, P, HK] this layer's self-attention cache (slots)
    const lb_real *ckl, *cvl;  // [B·S, HK] this layer's cross-attention keys / values
    int t;                     // the query position
} attn_job_t;

static void self_attn_job(void *ctx, long lo, long hi, int tid) {
    const attn_job_t *j = ctx;
    generate_dec_t *d = j->d;
    int H = d->H, K = d->K, HK = d->HK, P = d->P, t = j->t;
    size_t row = (size_t)P * HK;
    lb_real *sc = d->sc + (size_t)tid * d->nsc;
    for (long i = lo; i < hi; i++) {
        int r = (int)(i / H), h = (int)(i % H);
        size_t sr = (size_t)d->slot[r] * row;
        // scores [1, t+1] = q·kᵀ (no 1/√K in T5) + bias
        lb_gemm(0, 1, 1, t + 1, K, 1, d->q + (size_t)r * HK + h * K, HK, j->skl + sr + h * K, HK, 0, sc, t + 1);
        for (int k = 0; k <= t; k++) sc[k] += d->bias[(size_t)h * P + k];
        softmax_masked(sc, t + 1, NULL);
        lb_gemm(0, 0, 1, K, t + 1, 1, sc, t + 1, j->svl + sr + h * K, HK, 0, d->ctx + (size_t)r * HK + h * K, HK);
    }
}

// The nb rows of one input share its keys and values.
static void cross_attn_job(void *ctx, long lo, long hi, int tid) {
    const attn_job_t *j = ctx;
    generate_dec_t *d = j->d;
    int H = d->H, K = d->K, HK = d->HK, nb = d->nb, S = d->S;
    lb_real *sc = d->sc + (size_t)tid * d->nsc;
    for (long i = lo; i < hi; i++) {
        int b = (int)(i / H), h = (int)(i % H);
        const lb_real *kb = j->ckl + (size_t)b * S * HK + h * K, *vb = j->cvl + (size_t)b * S * HK + h * K;
        lb_gemm(0, 1, nb, S, K, 1, d->q + (size_t)b * nb * HK + h * K, HK, kb, HK, 0, sc, S);
        for (int k = 0; k < nb; k++) softmax_masked(sc + (size_t)k * S, S, d->mask + (size_t)b * S);
        lb_gemm(0, 0, nb, K, S, 1, sc, S, vb, HK, 0, d->ctx + (size_t)b * nb * HK + h * K, HK);
    }
}

// fa = act(fa) (· fb when gated), a chunk of the [R, F] values per thread.
typedef struct {
    t5_act_t act;
    lb_real *fa;
    const lb_real *fb;  // NULL: not gated
} act_job_t;

static void act_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const act_job_t *j = ctx;
    for (long i = lo; i < hi; i++) j->fa[i] = j->fb ? act_apply(j->act, j->fa[i]) * j->fb[i] : act_apply(j->act, j->fa[i]);
}

int generate_dec_step(generate_dec_t *d, const int32_t *tokens, lb_real **logits, lb_err_t *err) {
    const t5_model_t *m = d->m;
    const t5_config_t *c = &m->cfg;
    int R = d->R, D = d->D, H = d->H, HK = d->HK, t = d->pos, P = d->P;
    if (t >= P)
        return lb_err_set(err, LB_EARG, "the decoder cache holds %d positions and is full; make the decoder with a larger max_len", P);
    if (model_max_rank(m) > d->max_r)
        return lb_err_set(err, LB_EARG, "a LoRA adapter of rank %d was attached after the decoder was made for rank %d; attach adapters first",
                          model_max_rank(m), d->max_r);
    for (int r = 0; r < R; r++) {
        if (tokens[r] < 0 || tokens[r] >= d->V)
            return lb_err_set(err, LB_EARG, "decoder token %d of row %d is outside the vocabulary [0, %d)", tokens[r], r, d->V);
        memcpy(d->x + (size_t)r * D, m->shared->w + (size_t)tokens[r] * D, sizeof(lb_real) * D);
    }
    if (lb_pool_threads() > d->nt) {  // lb_set_threads raised since: one score slice per thread
        d->nt = lb_pool_threads();
        free(d->sc);
        d->sc = xcalloc(d->nsc * (size_t)d->nt, sizeof(lb_real));
    }
    // relative position bias of query position t against keys 0..t (causal buckets, shared
    // by every block from block 0's table)
    for (int j = 0; j <= t; j++) {
        int bk = t5_relative_bucket(j - t, 0, c->relative_attention_num_buckets,
                                    c->relative_attention_max_distance);
        for (int h = 0; h < H; h++) d->bias[(size_t)h * P + j] = m->dec_rel->w[(size_t)bk * H + h];
    }
    size_t row = (size_t)P * HK, BS = (size_t)d->B * d->S;
    float eps = c->layer_norm_epsilon;
    for (int l = 0; l < d->L; l++) {
        const t5_block_t *blk = &m->dec[l];
        // self attention over the cache plus the new position
        const t5_attn_t *A = &blk->self;
        rms_norm(R, D, d->x, A->ln->w, eps, d->h);
        dec_linear(d, A->q, R, d->h, d->q);
        dec_linear(d, A->k, R, d->h, d->kn);
        dec_linear(d, A->v, R, d->h, d->vn);
        lb_real *skl = d->sk + (size_t)l * R * row, *svl = d->sv + (size_t)l * R * row;
        for (int r = 0; r < R; r++) {
            size_t sr = (size_t)d->slot[r] * row;
            memcpy(skl + sr + (size_t)t * HK, d->kn + (size_t)r * HK, sizeof(lb_real) * HK);
            memcpy(svl + sr + (size_t)t * HK, d->vn + (size_t)r * HK, sizeof(lb_real) * HK);
        }
        attn_job_t sj = {d, skl, svl, NULL, NULL, t};
        lb_pool_run_gemms(d->pool, (long)R * H, self_attn_job, &sj);
        dec_linear(d, A->o, R, d->ctx, d->y);
        add_into(d->x, d->y, (size_t)R * D);
        // cross attention: the nb rows of one input share its keys and values
        const t5_attn_t *X = &blk->cross;
        rms_norm(R, D, d->x, X->ln->w, eps, d->h);
        dec_linear(d, X->q, R, d->h, d->q);
        const lb_real *ckl = d->ck + (size_t)l * BS * HK, *cvl = d->cv + (size_t)l * BS * HK;
        attn_job_t xj = {d, NULL, NULL, ckl, cvl, t};
        lb_pool_run_gemms(d->pool, (long)d->B * H, cross_attn_job, &xj);
        dec_linear(d, X->o, R, d->ctx, d->y);
        add_into(d->x, d->y, (size_t)R * D);
        // feed forward: wo(act(wi_0 h) · wi_1 h) or wo(act(wi h))
        const t5_ff_t *FF = &blk->ff;
        size_t nf = (size_t)R * d->F;
        rms_norm(R, D, d->x, FF->ln->w, eps, d->h);
        if (c->gated) {
            dec_linear(d, FF->wi_0, R, d->h, d->fa);
            dec_linear(d, FF->wi_1, R, d->h, d->fb);
        } else {
            dec_linear(d, FF->wi, R, d->h, d->fa);
        }
        act_job_t aj = {c->act, d->fa, c->gated ? d->fb : NULL};
        lb_pool_run(nf >= 4096 ? d->pool : NULL, (long)nf, act_job, &aj);
        dec_linear(d, FF->wo, R, d->fa, d->y);
        add_into(d->x, d->y, (size_t)R * D);
    }
    rms_norm(R, D, d->x, m->dec_ln->w, eps, d->h);
    if (c->scale_decoder_outputs) {  // tied embeddings: transformers scales by D^-½
        lb_real s = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)R * D; i++) d->h[i] *= s;
    }
    dec_linear(d, m->head, R, d->h, d->logits);
    d->pos++;
    *logits = d->logits;
    return 0;
}

// ---------------------------------------------------------------------------------------
// Next-token logits for the search: through the cache, or by recomputing the prefix.

typedef struct {
    const t5_model_t *m;
    int R, S, P, V;
    generate_dec_t *dec;        // with the cache
    t5_acts_t *acts;            // without: teacher-forced t5_forward over each row's prefix
    int32_t *ids_rep, *mask_rep;  // [R, S] each input repeated for its rows
    int32_t *labels;            // [R, P]
    int32_t *tokens;            // [R]
    lb_real *logits;            // [R, V] (no-cache path)
} backend_t;

static int backend_init(backend_t *be, const t5_model_t *m, const int32_t *ids, const int32_t *mask,
                        int B, int S, int nb, int P, int use_cache, double *encode_s, lb_err_t *err) {
    memset(be, 0, sizeof *be);
    be->m = m;
    be->R = B * nb;
    be->S = S;
    be->P = P;
    be->V = m->cfg.vocab_size;
    be->tokens = xmalloc(sizeof(int32_t) * (size_t)be->R);
    if (use_cache) {
        double t0 = lb_now();
        lb_real *enc = xmalloc(sizeof(lb_real) * (size_t)B * S * m->cfg.d_model);
        int rc = generate_encode(m, ids, mask, B, S, enc, err);
        if (!rc) be->dec = generate_dec_new(m, enc, mask, B, S, nb, P, err);
        free(enc);
        *encode_s = lb_now() - t0;
        return be->dec ? 0 : -1;
    }
    *encode_s = 0;
    be->ids_rep = xmalloc(sizeof(int32_t) * (size_t)be->R * S);
    be->mask_rep = xmalloc(sizeof(int32_t) * (size_t)be->R * S);
    for (int r = 0; r < be->R; r++)
        for (int s = 0; s < S; s++) {
            size_t src = (size_t)(r / nb) * S + s;
            be->ids_rep[(size_t)r * S + s] = ids[src];
            be->mask_rep[(size_t)r * S + s] = mask ? mask[src] : 1;
        }
    be->labels = xmalloc(sizeof(int32_t) * (size_t)be->R * P);
    be->logits = xmalloc(sizeof(lb_real) * (size_t)be->R * be->V);
    be->acts = t5_acts_new(m, be->R, S, P);
    return 0;
}

static void backend_free(backend_t *be) {
    generate_dec_free(be->dec);
    if (be->acts) t5_acts_free(be->acts);
    free(be->ids_rep);
    free(be->mask_rep);
    free(be->labels);
    free(be->tokens);
    free(be->logits);
}

// Logits [R, V] of the token after each row's first cur_len ids (seq [R, P]); parents
// (NULL = unchanged) names the row each row continues since the previous call.
static int backend_next(backend_t *be, const int32_t *seq, int cur_len, const int *parents,
                        lb_real **logits, lb_err_t *err) {
    int R = be->R, P = be->P;
    if (be->dec) {
        if (parents) generate_dec_reorder(be->dec, parents);
        for (int r = 0; r < R; r++) be->tokens[r] = seq[(size_t)r * P + cur_len - 1];
        return generate_dec_step(be->dec, be->tokens, logits, err);
    }
    // decoder input = labels shifted right after the start token = the row's prefix
    int T = cur_len;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < T; i++)
            be->labels[(size_t)r * T + i] = i + 1 < T ? seq[(size_t)r * P + i + 1] : -100;
    t5_batch_t bt = {R, be->S, T, be->ids_rep, be->mask_rep, be->labels};
    if (t5_forward(be->m, be->acts, &bt, NULL, NULL, err)) return -1;
    const lb_real *lg = t5_acts_logits(be->acts);
    for (int r = 0; r < R; r++)
        memcpy(be->logits + (size_t)r * be->V, lg + ((size_t)r * T + T - 1) * be->V,
               sizeof(lb_real) * be->V);
    *logits = be->logits;
    return 0;
}

// ---------------------------------------------------------------------------------------
// Search

void generate_opts_default(generate_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->num_beams = 1;
    o->max_new_tokens = 48;
    o->length_penalty = 1.0f;
    o->early_stopping = GENERATE_EARLY_TRUE;
    o->no_repeat_ngram_size = 0;
    o->use_cache = 1;
}

void generate_result_free(generate_result_t *r) {
    free(r->ids);
    free(r->n_new);
    memset(r, 0, sizeof *r);
}

// transformers' NoRepeatNGramLogitsProcessor on one row of scores: every token that would
// complete an n-gram already present in ids[0..len) (the start token included) gets -inf.
static void ban_repeated_ngrams(lb_real *scores, const int32_t *ids, int len, int n) {
    if (n <= 0 || len + 1 < n) return;
    int start = len + 1 - n;  // the last n-1 ids are the prefix of the n-gram to come
    for (int i = 0; i + n <= len; i++) {
        int match = 1;
        for (int k = 0; k < n - 1 && match; k++) match = ids[i + k] == ids[start + k];
        if (match) scores[ids[i + n - 1]] = -INFINITY;
    }
}

// transformers' _sample without sampling: argmax (first index of the maximum); a finished
// row keeps receiving pad_token_id.
static int search_greedy(backend_t *be, const t5_config_t *c, const generate_opts_t *o, int B,
                         generate_result_t *out, lb_err_t *err) {
    int P = be->P, V = be->V;
    int32_t *seq = xmalloc(sizeof(int32_t) * (size_t)B * P);
    int *open = xmalloc(sizeof(int) * (size_t)B);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < P; i++) seq[(size_t)b * P + i] = c->pad_token_id;
        seq[(size_t)b * P] = c->decoder_start_token_id;
        open[b] = 1;
        out->n_new[b] = 0;
    }
    int cur_len = 1, rc = 0, n_open = B;
    while (n_open > 0 && cur_len < P) {
        lb_real *lg;
        if ((rc = backend_next(be, seq, cur_len, NULL, &lg, err))) break;
        out->steps++;
        for (int b = 0; b < B; b++) {
            lb_real *row = lg + (size_t)b * V;
            int tok = c->pad_token_id;
            if (open[b]) {
                ban_repeated_ngrams(row, seq + (size_t)b * P, cur_len, o->no_repeat_ngram_size);
                if (cur_len - 1 < o->min_new_tokens && c->eos_token_id >= 0) row[c->eos_token_id] = -INFINITY;
                tok = 0;
                for (int v = 1; v < V; v++)
                    if (row[v] > row[tok]) tok = v;
                out->n_new[b] = cur_len;
                if (tok == c->eos_token_id) {
                    open[b] = 0;
                    n_open--;
                }
            }
            seq[(size_t)b * P + cur_len] = tok;
        }
        cur_len++;
    }
    if (!rc) {
        out->L = cur_len;
        out->ids = xmalloc(sizeof(int32_t) * (size_t)B * cur_len);
        for (int b = 0; b < B; b++)
            memcpy(out->ids + (size_t)b * cur_len, seq + (size_t)b * P, sizeof(int32_t) * cur_len);
    }
    free(seq);
    free(open);
    return rc;
}

// One candidate of a top-k: its score and its index (beam·V + token, or a slot).
typedef struct {
    float v;
    int i;
} cand_t;

// Inserts (v, i) into the descending list top[0..*n) of capacity k; equal scores keep the
// earlier index first (candidates arrive in index order).
static void topk_push(cand_t *top, int *n, int k, float v, int i) {
    if (v != v) return;
    if (*n == k && !(v > top[k - 1].v)) return;
    int p = *n < k ? (*n)++ : k - 1;
    while (p > 0 && v > top[p - 1].v) {
        top[p] = top[p - 1];
        p--;
    }
    top[p].v = v;
    top[p].i = i;
}

// log_softmax of one row in float32, as torch computes it: x − max − log Σ exp(x − max).
static void log_softmax_row(const lb_real *x, float *out, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++)
        if (x[v] > mx) mx = (float)x[v];
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)((float)x[v] - mx));
    // cppcheck-suppress invalidFunctionArg ; s >= 1 when V > 0: the max adds exp(0)
    float ls = (float)log(s);
    for (int v = 0; v < V; v++) out[v] = ((float)x[v] - mx) - ls;
}


// One row of a beam step: log-probabilities (float32), the logits processors (n-gram ban,
// min_new_tokens), and the row's best K2 of running score + log p, by (score, token).
typedef struct {
    const generate_opts_t *o;
    lb_real *lg;           // [R, V] logits (the n-gram rule writes its row)
    const int32_t *run;    // [R, P] running ids
    const float *run_sc;   // [R]
    float *lp;             // [threads, V] scratch
    cand_t *row_top;       // [R, K2]
    int *row_n;            // [R] candidates found (K2 unless the scores are NaN)
    int V, P, K2, cur_len, eos;
} row_top_job_t;

static void row_top_job(void *ctx, long lo, long hi, int tid) {
    const row_top_job_t *j = ctx;
    int V = j->V;
    float *lp = j->lp + (size_t)tid * V;
    for (long r = lo; r < hi; r++) {
        lb_real *lg = j->lg + (size_t)r * V;
        log_softmax_row(lg, lp, V);
        if (j->o->no_repeat_ngram_size > 0) {
            // the processor runs on the log-probabilities (float -inf)
            for (int v = 0; v < V; v++) lg[v] = lp[v];
            ban_repeated_ngrams(lg, j->run + (size_t)r * j->P, j->cur_len, j->o->no_repeat_ngram_size);
            for (int v = 0; v < V; v++) lp[v] = (float)lg[v];
        }
        if (j->cur_len - 1 < j->o->min_new_tokens && j->eos >= 0) lp[j->eos] = -INFINITY;
        cand_t *t = j->row_top + (size_t)r * j->K2;
        int n = 0;
        float sc = j->run_sc[r];
        for (int v = 0; v < V; v++) topk_push(t, &n, j->K2, lp[v] + sc, v);
        j->row_n[r] = n;
    }
}

// transformers' _beam_search (no sampling, one </s> id): per input, the 2·nb best
// continuations of all beams; the best nb that did not just finish keep running; those among
// the top nb that finished (</s> or the length limit) compete for the nb finished slots with
// score / (generated tokens)^length_penalty. Scores, sums and the -1e9 offsets are float32.
static int search_beam(backend_t *be, const t5_config_t *c, const generate_opts_t *o, int B,
                       generate_result_t *out, lb_err_t *err) {
    int nb = o->num_beams, K2 = 2 * nb, P = be->P, V = be->V, R = B * nb;
    int max_length = P, eos = c->eos_token_id;
    const float NEG = -1.0e9f;
    int fill = c->pad_token_id != 0 ? c->pad_token_id : eos;  // `pad_token_id or eos_token_id[0]`
    size_t rowb = (size_t)nb * P;
    int32_t *run = xmalloc(sizeof(int32_t) * (size_t)R * P);        // [B, nb, P] running
    int32_t *fin = xmalloc(sizeof(int32_t) * (size_t)R * P);        // [B, nb, P] finished
    int32_t *top_seq = xmalloc(sizeof(int32_t) * (size_t)B * K2 * P);  // [B, K2, P]
    int32_t *tmp_seq = xmalloc(sizeof(int32_t) * (size_t)R * P);
    float *run_sc = xmalloc(sizeof(float) * (size_t)R);
    float *fin_sc = xmalloc(sizeof(float) * (size_t)R);
    int *fin_len = xcalloc((size_t)R, sizeof(int));                 // generated tokens
    char *fin_done = xcalloc((size_t)R, 1);
    char *unsat = xmalloc((size_t)B);                               // early-stop heuristic
    char *hits = xcalloc((size_t)B * K2, 1);
    cand_t *top = xmalloc(sizeof(cand_t) * (size_t)B * K2);
    int *parents = xmalloc(sizeof(int) * (size_t)R);
    float *lp = xmalloc(sizeof(float) * (size_t)lb_pool_threads() * V);  // [threads, V]
    cand_t *row_top = xmalloc(sizeof(cand_t) * (size_t)R * K2);     // [R, K2]
    int *row_n = xmalloc(sizeof(int) * (size_t)R);
    int32_t *m_seq = xmalloc(sizeof(int32_t) * (size_t)R * P);
    float *m_sc = xmalloc(sizeof(float) * (size_t)R);
    int *m_len = xmalloc(sizeof(int) * (size_t)R);
    char *m_done = xmalloc((size_t)R);
    for (size_t i = 0; i < (size_t)R * P; i++) run[i] = fin[i] = fill;
    for (int r = 0; r < R; r++) {
        run[(size_t)r * P] = fin[(size_t)r * P] = c->decoder_start_token_id;
        run_sc[r] = r % nb ? NEG : 0.0f;  // only the first beam's continuations at step 1
        fin_sc[r] = NEG;
    }
    memset(unsat, 1, (size_t)B);
    int cur_len = 1, rc = 0, have_parents = 0;
    for (;;) {
        lb_real *lg;
        if ((rc = backend_next(be, run, cur_len, have_parents ? parents : NULL, &lg, err))) break;
        out->steps++;
        // top 2·nb of (running score + log p) over every beam and token of each input
        // each row's best 2·nb (rows in parallel), then per input the best 2·nb of its rows'
        // lists taken in row order: equal scores still arrive in index order, so the result
        // is that of one top-k over every beam and token
        row_top_job_t rj = {o, lg, run, run_sc, lp, row_top, row_n, V, P, K2, cur_len, eos};
        lb_pool_run(be->dec ? be->dec->pool : NULL, R, row_top_job, &rj);
        for (int b = 0; b < B; b++) {
            cand_t *tb = top + (size_t)b * K2;
            int n = 0;
            for (int j = 0; j < nb; j++) {
                int r = b * nb + j;
                for (int k = 0; k < row_n[r]; k++) {
                    const cand_t *rc_ = row_top + (size_t)r * K2 + k;
                    topk_push(tb, &n, K2, rc_->v, j * V + rc_->i);
                }
            }
            for (int k = n; k < K2; k++) {  // only with a vocabulary smaller than 2·nb
                tb[k].v = -INFINITY;
                tb[k].i = 0;
            }
            for (int k = 0; k < K2; k++) {
                int par = tb[k].i / V, tok = tb[k].i % V;
                int32_t *s = top_seq + ((size_t)b * K2 + k) * P;
                memcpy(s, run + ((size_t)b * nb + par) * P, sizeof(int32_t) * P);
                s[cur_len] = tok;
                hits[(size_t)b * K2 + k] = (char)(tok == eos || cur_len + 1 >= max_length);
            }
        }
        // running beams for the next step: the best nb that did not hit a stop
        int all_hit = 1;
        for (int b = 0; b < B; b++) {
            cand_t *tb = top + (size_t)b * K2;
            cand_t sel[64];
            cand_t *sp = nb <= 64 ? sel : xmalloc(sizeof(cand_t) * (size_t)nb);
            int n = 0;
            for (int k = 0; k < K2; k++) {
                char hit = hits[(size_t)b * K2 + k];
                all_hit &= hit;
                topk_push(sp, &n, nb, tb[k].v + (hit ? NEG : 0.0f), k);
            }
            for (int j = 0; j < nb; j++) {
                int k = j < n ? sp[j].i : j, r = b * nb + j;
                run_sc[r] = j < n ? sp[j].v : -INFINITY;
                parents[r] = b * nb + tb[k].i / V;
                memcpy(tmp_seq + (size_t)r * P, top_seq + ((size_t)b * K2 + k) * P, sizeof(int32_t) * P);
            }
            if (sp != sel) free(sp);
        }
        memcpy(run, tmp_seq, sizeof(int32_t) * (size_t)R * P);
        have_parents = 1;
        // finished hypotheses: merge the new ones among the top nb with the kept ones
        float pen = (float)pow((double)cur_len, (double)o->length_penalty);
        for (int b = 0; b < B; b++) {
            int full = o->early_stopping == GENERATE_EARLY_TRUE;
            for (int j = 0; j < nb && full; j++) full = fin_done[b * nb + j];
            cand_t *tb = top + (size_t)b * K2;
            cand_t msel[64];
            cand_t *mp = nb <= 64 ? msel : xmalloc(sizeof(cand_t) * (size_t)nb);
            int n = 0;
            for (int j = 0; j < nb; j++) topk_push(mp, &n, nb, fin_sc[b * nb + j], j);
            for (int k = 0; k < K2; k++) {
                int did = hits[(size_t)b * K2 + k] && k < nb;
                float s = tb[k].v / pen;
                if (full) s += NEG;
                if (!unsat[b]) s += NEG;
                if (!did) s += NEG;
                topk_push(mp, &n, nb, s, nb + k);
            }
            for (int j = 0; j < nb; j++) {
                int r = b * nb + j, i = j < n ? mp[j].i : j;
                m_sc[r] = j < n ? mp[j].v : NEG;
                if (i < nb) {
                    int src = b * nb + i;
                    memcpy(m_seq + (size_t)r * P, fin + (size_t)src * P, sizeof(int32_t) * P);
                    m_len[r] = fin_len[src];
                    m_done[r] = fin_done[src];
                } else {
                    int k = i - nb;
                    memcpy(m_seq + (size_t)r * P, top_seq + ((size_t)b * K2 + k) * P, sizeof(int32_t) * P);
                    m_len[r] = cur_len;
                    m_done[r] = (char)(hits[(size_t)b * K2 + k] && k < nb);
                }
            }
            if (mp != msel) free(mp);
        }
        memcpy(fin, m_seq, sizeof(int32_t) * (size_t)R * P);
        memcpy(fin_sc, m_sc, sizeof(float) * (size_t)R);
        memcpy(fin_len, m_len, sizeof(int) * (size_t)R);
        memcpy(fin_done, m_done, (size_t)R);
        cur_len++;
        // can a running beam still beat the worst finished one?
        int hyp_len = o->early_stopping == GENERATE_EARLY_NEVER && o->length_penalty > 0
                          ? max_length - 1 : cur_len - 1;
        float hpen = (float)pow((double)hyp_len, (double)o->length_penalty);
        int any_unsat = 0, all_full = 1;
        for (int b = 0; b < B; b++) {
            float best = run_sc[b * nb] / hpen, worst = fin_sc[b * nb];
            for (int j = 1; j < nb; j++)
                if (fin_sc[b * nb + j] < worst) worst = fin_sc[b * nb + j];
            int better = 0;
            for (int j = 0; j < nb; j++) {
                better |= best > (fin_done[b * nb + j] ? worst : NEG);
                all_full &= fin_done[b * nb + j];
            }
            unsat[b] = (char)(unsat[b] && better);
            any_unsat |= unsat[b];
        }
        int open = !(all_full && o->early_stopping == GENERATE_EARLY_TRUE);
        if (!(any_unsat && open && !all_hit)) break;
    }
    if (!rc) {
        int gl = 0;
        for (int b = 0; b < B; b++)
            if (fin_len[b * nb] > gl) gl = fin_len[b * nb];
        out->L = 1 + gl;
        out->ids = xmalloc(sizeof(int32_t) * (size_t)B * out->L);
        for (int b = 0; b < B; b++) {
            memcpy(out->ids + (size_t)b * out->L, fin + (size_t)b * rowb, sizeof(int32_t) * out->L);
            out->n_new[b] = fin_len[b * nb];
        }
    }
    free(run); free(fin); free(top_seq); free(tmp_seq); free(run_sc); free(fin_sc); free(fin_len);
    free(fin_done); free(unsat); free(hits); free(top); free(parents); free(lp); free(row_top);
    free(row_n); free(m_seq);
    free(m_sc); free(m_len); free(m_done);
    return rc;
}

int generate_batch(const t5_model_t *m, const int32_t *input_ids, const int32_t *attention_mask,
                   int B, int S, const generate_opts_t *o, generate_result_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    const t5_config_t *c = &m->cfg;
    if (B <= 0 || S <= 0)
        return lb_err_set(err, LB_EARG, "generation needs at least one input of at least one token (got B=%d, S=%d)", B, S);
    if (o->num_beams < 1 || o->num_beams > 4096)
        return lb_err_set(err, LB_EARG, "num_beams = %d: use 1 (greedy) up to 4096", o->num_beams);
    if (2 * o->num_beams > c->vocab_size)
        return lb_err_set(err, LB_EARG, "num_beams = %d needs a vocabulary of at least %d tokens (this model has %d)",
                          o->num_beams, 2 * o->num_beams, c->vocab_size);
    if (o->max_new_tokens < 1 || o->max_new_tokens > 1 << 20)
        return lb_err_set(err, LB_EARG, "max_new_tokens = %d: use at least 1", o->max_new_tokens);
    if (o->min_new_tokens < 0)
        return lb_err_set(err, LB_EARG, "min_new_tokens = %d: use 0 (off) up to max_new_tokens", o->min_new_tokens);
    if (o->no_repeat_ngram_size < 0)
        return lb_err_set(err, LB_EARG, "no_repeat_ngram_size = %d: use 0 (off) or a positive n-gram size", o->no_repeat_ngram_size);
    if (o->early_stopping < GENERATE_EARLY_HEURISTIC || o->early_stopping > GENERATE_EARLY_NEVER)
        return lb_err_set(err, LB_EARG, "early_stopping = %d: use GENERATE_EARLY_HEURISTIC, _TRUE or _NEVER", o->early_stopping);
    if (!(o->length_penalty == o->length_penalty))
        return lb_err_set(err, LB_EARG, "length_penalty is NaN: use a number such as 1.0");
    for (int i = 0; i < B * S; i++)
        if (input_ids[i] < 0 || input_ids[i] >= c->vocab_size)
            return lb_err_set(err, LB_EARG, "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)",
                              i / S, i % S, input_ids[i], c->vocab_size);
    int P = 1 + o->max_new_tokens;
    backend_t be;
    if (backend_init(&be, m, input_ids, attention_mask, B, S, o->num_beams, P, o->use_cache,
                     &out->encode_s, err)) {
        backend_free(&be);
        return -1;
    }
    out->B = B;
    out->n_new = xcalloc((size_t)B, sizeof(int));
    double t0 = lb_now();
    int rc = o->num_beams == 1 ? search_greedy(&be, c, o, B, out, err)
                               : search_beam(&be, c, o, B, out, err);
    out->decode_s = lb_now() - t0;
    backend_free(&be);
    if (rc) generate_result_free(out);
    return rc;
}
