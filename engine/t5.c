// T5 weights, forward and backward. Each layer's *_forward and *_backward sit together;
// gradients are named d<name>. Shapes use the letters documented in t5.h.
#include "t5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#ifdef _OPENMP
#define LB_PAR_FOR _Pragma("omp parallel for schedule(static)")
#else
#define LB_PAR_FOR
#endif

#define R(c) ((lb_real)(c))

// ---------------------------------------------------------------------------------------
// Model structure

// Dropout sites: one per (stack, block, kind), so that every mask is distinct.
enum { SITE_SELF_P, SITE_SELF_RES, SITE_CROSS_P, SITE_CROSS_RES, SITE_FF_IN, SITE_FF_RES,
       SITE_EMBED, SITE_FINAL };
static uint64_t site_of(int stack, int block, int kind) {
    return ((uint64_t)(stack * 4096 + block + 1) << 4) | (uint64_t)kind;
}
static uint64_t site_lora(const linear_t *l) { return (1ull << 40) + (uint64_t)l->id; }

// Bounded copy of a name (the names built here are far shorter than the buffers).
static void set_name(char *dst, size_t n, const char *src) {
    size_t k = strlen(src);
    if (k >= n) k = n - 1;
    memcpy(dst, src, k);
    dst[k] = 0;
}

static lb_param_t *add_param(t5_model_t *m, const char *name, int ndim, int64_t d0, int64_t d1) {
    lb_param_t *p = &m->params[m->n_params++];
    memset(p, 0, sizeof *p);
    set_name(p->name, sizeof p->name, name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1);
    return p;
}

static linear_t *add_linear(t5_model_t *m, const char *module, int in, int out) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", module);
    linear_t *l = &m->lin[m->n_lin];
    memset(l, 0, sizeof *l);
    set_name(l->name, sizeof l->name, module);
    l->in = in;
    l->out = out;
    l->id = m->n_lin++;
    l->W = add_param(m, name, 2, out, in);
    return l;
}

static void add_attn(t5_model_t *m, t5_attn_t *at, const char *pre, const char *kind,
                     int rel, const char *ln_name) {
    const t5_config_t *c = &m->cfg;
    int inner = c->num_heads * c->d_kv;
    char name[160];
    static const char *qkvo[4] = {"q", "k", "v", "o"};
    linear_t **dst[4] = {&at->q, &at->k, &at->v, &at->o};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s%s.%s", pre, kind, qkvo[i]);
        *dst[i] = add_linear(m, name, i < 3 ? c->d_model : inner, i < 3 ? inner : c->d_model);
    }
    if (rel) {
        snprintf(name, sizeof name, "%s%s.relative_attention_bias.weight", pre, kind);
        lb_param_t *p = add_param(m, name, 2, c->relative_attention_num_buckets, c->num_heads);
        if (!strncmp(pre, "encoder", 7)) m->enc_rel = p;
        else m->dec_rel = p;
    }
    snprintf(name, sizeof name, "%s%s", pre, ln_name);
    at->ln = add_param(m, name, 1, c->d_model, 1);
}

static void add_ff(t5_model_t *m, t5_ff_t *ff, const char *pre) {
    const t5_config_t *c = &m->cfg;
    char name[160];
    if (c->gated) {
        snprintf(name, sizeof name, "%sDenseReluDense.wi_0", pre);
        ff->wi_0 = add_linear(m, name, c->d_model, c->d_ff);
        snprintf(name, sizeof name, "%sDenseReluDense.wi_1", pre);
        ff->wi_1 = add_linear(m, name, c->d_model, c->d_ff);
    } else {
        snprintf(name, sizeof name, "%sDenseReluDense.wi", pre);
        ff->wi = add_linear(m, name, c->d_model, c->d_ff);
    }
    snprintf(name, sizeof name, "%sDenseReluDense.wo", pre);
    ff->wo = add_linear(m, name, c->d_ff, c->d_model);
    snprintf(name, sizeof name, "%slayer_norm.weight", pre);
    ff->ln = add_param(m, name, 1, c->d_model, 1);
}

// Lays out every parameter and linear in Hugging Face order (no storage yet).
static void build(t5_model_t *m, const t5_config_t *cfg, int tied) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->cfg.tie_word_embeddings = tied;
    int Le = cfg->num_layers, Ld = cfg->num_decoder_layers;
    int cap_p = 8 + Le * 12 + Ld * 18, cap_l = 1 + Le * 7 + Ld * 11;
    m->params = xcalloc((size_t)cap_p, sizeof *m->params);
    m->lin = xcalloc((size_t)cap_l, sizeof *m->lin);
    m->enc = xcalloc((size_t)Le, sizeof *m->enc);
    m->dec = xcalloc((size_t)Ld, sizeof *m->dec);
    m->shared = add_param(m, "shared.weight", 2, cfg->vocab_size, cfg->d_model);
    char pre[96];
    for (int l = 0; l < Le; l++) {
        snprintf(pre, sizeof pre, "encoder.block.%d.layer.0.", l);
        add_attn(m, &m->enc[l].self, pre, "SelfAttention", l == 0, "layer_norm.weight");
        snprintf(pre, sizeof pre, "encoder.block.%d.layer.1.", l);
        add_ff(m, &m->enc[l].ff, pre);
    }
    m->enc_ln = add_param(m, "encoder.final_layer_norm.weight", 1, cfg->d_model, 1);
    for (int l = 0; l < Ld; l++) {
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.0.", l);
        add_attn(m, &m->dec[l].self, pre, "SelfAttention", l == 0, "layer_norm.weight");
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.1.", l);
        add_attn(m, &m->dec[l].cross, pre, "EncDecAttention", 0, "layer_norm.weight");
        snprintf(pre, sizeof pre, "decoder.block.%d.layer.2.", l);
        add_ff(m, &m->dec[l].ff, pre);
    }
    m->dec_ln = add_param(m, "decoder.final_layer_norm.weight", 1, cfg->d_model, 1);
    if (tied) {
        linear_t *l = &m->lin[m->n_lin];
        memset(l, 0, sizeof *l);
        snprintf(l->name, sizeof l->name, "lm_head");
        l->in = cfg->d_model;
        l->out = cfg->vocab_size;
        l->id = m->n_lin++;
        l->W = m->shared;
        m->head = l;
    } else {
        m->head = add_linear(m, "lm_head", cfg->d_model, cfg->vocab_size);
    }
}

int t5_init_empty(t5_model_t *m, const t5_config_t *cfg, lb_err_t *err) {
    (void)err;
    build(m, cfg, cfg->tie_word_embeddings);
    for (int i = 0; i < m->n_params; i++) {
        lb_param_t *p = &m->params[i];
        p->own = xcalloc(p->numel, sizeof(lb_real));
        p->w = p->own;
    }
    return 0;
}

static void shape_str(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int load_param(t5_model_t *m, lb_param_t *p, lb_err_t *err) {
    const st_tensor_t *t = st_find(&m->st, p->name);
    if (!t && p == m->shared) {  // older checkpoints name the embedding per stack
        t = st_find(&m->st, "encoder.embed_tokens.weight");
        if (!t) t = st_find(&m->st, "decoder.embed_tokens.weight");
    }
    char want[64], got[64];
    shape_str(want, sizeof want, p->shape, p->ndim);
    if (!t)
        return lb_err_set(err, LB_ESHAPE, "%s: tensor %s is missing (expected shape %s); is this a T5 checkpoint matching config.json?",
                          m->st.path, p->name, want);
    int ok = t->ndim == p->ndim;
    for (int i = 0; ok && i < p->ndim; i++) ok = t->shape[i] == p->shape[i];
    if (!ok) {
        shape_str(got, sizeof got, t->shape, t->ndim);
        return lb_err_set(err, LB_ESHAPE, "%s: tensor %s has shape %s, expected %s from config.json",
                          m->st.path, t->name, got, want);
    }
#ifndef LB_REAL_DOUBLE
    if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        p->w = (lb_real *)(uintptr_t)t->data;  // read-only mapping; never written
        return 0;
    }
    p->own = xmalloc(p->numel * sizeof(float));
    p->w = p->own;
    return st_to_f32(t, p->own, err);
#else
    float *tmp = xmalloc(p->numel * sizeof(float));
    int rc = st_to_f32(t, tmp, err);
    p->own = xmalloc(p->numel * sizeof(lb_real));
    p->w = p->own;
    for (size_t i = 0; i < p->numel; i++) p->own[i] = tmp[i];
    free(tmp);
    return rc;
#endif
}

int t5_load(t5_model_t *m, const char *dir, lb_err_t *err) {
    t5_config_t cfg;
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (t5_config_load(&cfg, path, err)) return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file_t st;
    if (st_open(&st, path, err)) return -1;
    int tied = cfg.tie_word_embeddings || !st_find(&st, "lm_head.weight");
    build(m, &cfg, tied);
    m->st = st;
    m->st_open = 1;
    for (int i = 0; i < m->n_params; i++)
        if (load_param(m, &m->params[i], err)) {
            t5_free(m);
            return -1;
        }
    return 0;
}

void t5_free(t5_model_t *m) {
    if (!m->params) return;
    for (int i = 0; i < m->n_params; i++) free(m->params[i].own);
    free(m->params);
    free(m->lin);
    free(m->enc);
    free(m->dec);
    free(m->block);
    if (m->st_open) st_close(&m->st);
    memset(m, 0, sizeof *m);
}

int t5_pred_all(const char *name, void *ctx) {
    (void)name;
    (void)ctx;
    return 1;
}

void t5_set_trainable(t5_model_t *m, int (*pred)(const char *name, void *ctx), void *ctx) {
    size_t n = 0;
    char *want = xcalloc((size_t)m->n_params, 1);
    for (int i = 0; i < m->n_params; i++) {
        want[i] = pred ? (char)(pred(m->params[i].name, ctx) != 0) : 0;
        if (want[i]) n += m->params[i].numel;
    }
    lb_real *block = n ? xcalloc(2 * n, sizeof(lb_real)) : NULL;
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        lb_param_t *p = &m->params[i];
        if (want[i]) {
            memcpy(block + off, p->w, p->numel * sizeof(lb_real));
            free(p->own);
            p->own = NULL;
            p->w = block + off;
            p->g = block + n + off;
            p->off = off;
            p->trainable = 1;
            off += p->numel;
        } else {
            if (p->g) {  // leaving the old block: keep its values privately
                p->own = xmalloc(p->numel * sizeof(lb_real));
                memcpy(p->own, p->w, p->numel * sizeof(lb_real));
                p->w = p->own;
            }
            p->g = NULL;
            p->trainable = 0;
        }
    }
    free(m->block);
    m->block = block;
    m->n_train = n;
    free(want);
}

lb_param_t *t5_find_param(t5_model_t *m, const char *name) {
    if (!strcmp(name, "lm_head.weight")) return m->head->W;
    if (!strcmp(name, "encoder.embed_tokens.weight") || !strcmp(name, "decoder.embed_tokens.weight"))
        return m->shared;
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

linear_t *t5_find_linear(t5_model_t *m, const char *name) {
    for (int i = 0; i < m->n_lin; i++)
        if (!strcmp(m->lin[i].name, name)) return &m->lin[i];
    return NULL;
}

lb_real *t5_param_writable(t5_model_t *m, lb_param_t *p) {
    (void)m;
    if (p->g || p->own) return p->w;
    p->own = xmalloc(p->numel * sizeof(lb_real));
    memcpy(p->own, p->w, p->numel * sizeof(lb_real));
    p->w = p->own;
    return p->w;
}

void t5_zero_grad(t5_model_t *m) {
    if (m->block) memset(m->block + m->n_train, 0, m->n_train * sizeof(lb_real));
}

size_t t5_count_params(const t5_model_t *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->params[i].numel;
    return n;
}

// ---------------------------------------------------------------------------------------
// Layers

int t5_relative_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket += num_buckets;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0;
    }
    int max_exact = num_buckets / 2;
    if (rel < max_exact) return bucket + rel;
    // as transformers computes it: in float32, truncated toward zero
    float v = logf((float)rel / (float)max_exact) / (float)log((double)max_distance / max_exact) *
              (float)(num_buckets - max_exact);
    int large = max_exact + (int)v;
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

// Embedding: x [N, D] = E[ids]. No scaling in T5.
static void embed_forward(int N, int D, const int32_t *ids, const lb_real *E, lb_real *x) {
    LB_PAR_FOR
    for (int r = 0; r < N; r++) memcpy(x + (size_t)r * D, E + (size_t)ids[r] * D, sizeof(lb_real) * D);
}

// dE[ids[r]] += dx[r]; serial so that repeated ids add in a fixed order.
static void embed_backward(int N, int D, const int32_t *ids, const lb_real *dx, lb_real *dE) {
    for (int r = 0; r < N; r++) {
        lb_real *d = dE + (size_t)ids[r] * D;
        const lb_real *s = dx + (size_t)r * D;
        for (int j = 0; j < D; j++) d[j] += s[j];
    }
}

// T5 layer norm (RMS): y = x · (mean(x²) + eps)^-½ · w; inv [N] keeps the factor.
static void rms_forward(int N, int D, const lb_real *x, const lb_real *w, lb_real eps,
                        lb_real *inv, lb_real *y) {
    LB_PAR_FOR
    for (int r = 0; r < N; r++) {
        const lb_real *xr = x + (size_t)r * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)xr[j] * xr[j];
        lb_real iv = (lb_real)(1.0 / sqrt(ss / D + (double)eps));
        inv[r] = iv;
        lb_real *yr = y + (size_t)r * D;
        for (int j = 0; j < D; j++) yr[j] = xr[j] * iv * w[j];
    }
}

// dw += Σ_r dy·x·inv (when dw); dx += inv·w·dy − x·inv³/D·Σ_j dy·w·x (when dx).
static void rms_backward(int N, int D, const lb_real *x, const lb_real *w, const lb_real *inv,
                         const lb_real *dy, lb_real *dw, lb_real *dx) {
    if (dw)
        for (int r = 0; r < N; r++) {
            const lb_real *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
            for (int j = 0; j < D; j++) dw[j] += dr[j] * xr[j] * inv[r];
        }
    if (!dx) return;
    LB_PAR_FOR
    for (int r = 0; r < N; r++) {
        const lb_real *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
        lb_real *dxr = dx + (size_t)r * D;
        double dot = 0;
        for (int j = 0; j < D; j++) dot += (double)dr[j] * w[j] * xr[j];
        lb_real iv = inv[r], c = (lb_real)(dot * iv * iv * iv / D);
        for (int j = 0; j < D; j++) dxr[j] += iv * w[j] * dr[j] - xr[j] * c;
    }
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

// Gated: g = act(a)·b; plain (b NULL): g = act(a). n elements.
static void act_forward(t5_act_t act, size_t n, const lb_real *a, const lb_real *b, lb_real *g) {
    LB_PAR_FOR
    for (size_t i = 0; i < n; i++) g[i] = b ? act_f(act, a[i]) * b[i] : act_f(act, a[i]);
}

// From dg: da = dg·b·act'(a) (in place of dg allowed), db = dg·act(a) when b.
static void act_backward(t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                         const lb_real *dg, lb_real *da, lb_real *db) {
    LB_PAR_FOR
    for (size_t i = 0; i < n; i++) {
        lb_real d = dg[i];
        if (b) {
            db[i] = d * act_f(act, a[i]);
            da[i] = d * b[i] * act_df(act, a[i]);
        } else {
            da[i] = d * act_df(act, a[i]);
        }
    }
}

// Attention core for one (query rows, key rows) pair of tensors laid out [B·Tq, H·K] and
// [B·Tk, H·K]: P [B, H, Tq, Tk] = softmax(q·kᵀ + bias + mask) (no 1/√K: T5 folds it into
// the initialisation), ctx = drop(P)·v. bias [H, Tq, Tk] or NULL; key_mask [B, Tk] or NULL
// (0 = padding); causal hides keys after the query. pd [B, H, Tq, Tk] is scratch for the
// dropped probabilities.
typedef struct {
    int B, H, K, Tq, Tk;
    const lb_real *bias;
    const int32_t *key_mask;
    int causal;
    float p_drop;
    uint64_t site;
} attn_shape_t;

static void attn_core_forward(const attn_shape_t *s, const lb_real *q, const lb_real *k,
                              const lb_real *v, lb_real *P, lb_real *pd, lb_real *ctx,
                              const lb_drop_t *drop) {
    int B = s->B, H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            lb_gemm(0, 1, Tq, Tk, K, 1, q + (size_t)b * Tq * HK + h * K, HK,
                    k + (size_t)b * Tk * HK + h * K, HK, 0, P + ((size_t)b * H + h) * tt, Tk);
    int rows = B * H * Tq;
    LB_PAR_FOR
    for (int r = 0; r < rows; r++) {
        int i = r % Tq, h = (r / Tq) % H, b = r / (Tq * H);
        lb_real *row = P + (size_t)r * Tk;
        const lb_real *br = s->bias ? s->bias + ((size_t)h * Tq + i) * Tk : NULL;
        const int32_t *km = s->key_mask ? s->key_mask + (size_t)b * Tk : NULL;
        int lim = s->causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
        lb_real mx = -INFINITY;
        for (int j = 0; j < lim; j++) {
            if (br) row[j] += br[j];
            if ((!km || km[j]) && row[j] > mx) mx = row[j];
        }
        double sum = 0;
        for (int j = 0; j < Tk; j++) {
            if (j < lim && (!km || km[j])) {
                row[j] = exp(row[j] - mx);
                sum += row[j];
            } else {
                row[j] = 0;
            }
        }
        lb_real inv = sum > 0 ? (lb_real)(1.0 / sum) : 0;
        for (int j = 0; j < Tk; j++) row[j] *= inv;
    }
    const lb_real *Pd = P;
    if (lb_drop_on(drop, s->p_drop)) {
        memcpy(pd, P, sizeof(lb_real) * (size_t)B * H * tt);
        lb_dropout_apply(pd, (size_t)B * H * tt, drop, s->site, s->p_drop);
        Pd = pd;
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            lb_gemm(0, 0, Tq, K, Tk, 1, Pd + ((size_t)b * H + h) * tt, Tk,
                    v + (size_t)b * Tk * HK + h * K, HK, 0, ctx + (size_t)b * Tq * HK + h * K, HK);
}

// Backward of attn_core_forward from dctx [B·Tq, H·K]. Fills dq/dk/dv (each optional,
// overwritten) and adds Σ_b dscores to dbias [H, Tq, Tk] when dbias. pd and ds are
// scratch [B, H, Tq, Tk].
static void attn_core_backward(const attn_shape_t *s, const lb_real *q, const lb_real *k,
                               const lb_real *v, const lb_real *P, lb_real *pd, lb_real *ds,
                               const lb_real *dctx, lb_real *dq, lb_real *dk, lb_real *dv,
                               lb_real *dbias, const lb_drop_t *drop) {
    int B = s->B, H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk, n = (size_t)B * H * tt;
    int on = lb_drop_on(drop, s->p_drop);
    const lb_real *Pd = P;
    if (on && dv) {
        memcpy(pd, P, sizeof(lb_real) * n);
        lb_dropout_apply(pd, n, drop, s->site, s->p_drop);
        Pd = pd;
    }
    int need_ds = dq || dk || dbias;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t o = ((size_t)b * H + h) * tt;
            const lb_real *dc = dctx + (size_t)b * Tq * HK + h * K;
            if (dv)  // dv [Tk, K] = Pdᵀ·dctx
                lb_gemm(1, 0, Tk, K, Tq, 1, Pd + o, Tk, dc, HK, 0, dv + (size_t)b * Tk * HK + h * K, HK);
            if (need_ds)  // dPd [Tq, Tk] = dctx·vᵀ
                lb_gemm(0, 1, Tq, Tk, K, 1, dc, HK, v + (size_t)b * Tk * HK + h * K, HK, 0, ds + o, Tk);
        }
    if (!need_ds) return;
    if (on) lb_dropout_apply(ds, n, drop, s->site, s->p_drop);
    int rows = B * H * Tq;
    LB_PAR_FOR
    for (int r = 0; r < rows; r++) {  // softmax backward: dS = P·(dP − Σ P·dP)
        lb_real *d = ds + (size_t)r * Tk;
        const lb_real *p = P + (size_t)r * Tk;
        double dot = 0;
        for (int j = 0; j < Tk; j++) dot += (double)p[j] * d[j];
        lb_real dt = (lb_real)dot;
        for (int j = 0; j < Tk; j++) d[j] = p[j] * (d[j] - dt);
    }
    if (dbias) {
        LB_PAR_FOR
        for (int h = 0; h < H; h++)
            for (int b = 0; b < B; b++) {
                const lb_real *d = ds + ((size_t)b * H + h) * tt;
                lb_real *db = dbias + (size_t)h * tt;
                for (size_t e = 0; e < tt; e++) db[e] += d[e];
            }
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t o = ((size_t)b * H + h) * tt;
            if (dq)  // dq [Tq, K] = dS·k
                lb_gemm(0, 0, Tq, K, Tk, 1, ds + o, Tk, k + (size_t)b * Tk * HK + h * K, HK, 0,
                        dq + (size_t)b * Tq * HK + h * K, HK);
            if (dk)  // dk [Tk, K] = dSᵀ·q
                lb_gemm(1, 0, Tk, K, Tq, 1, ds + o, Tk, q + (size_t)b * Tq * HK + h * K, HK, 0,
                        dk + (size_t)b * Tk * HK + h * K, HK);
        }
}

// Cross entropy over rows with label >= 0: returns Σ loss (double) and the count in *n.
static double xent_forward(int N, int V, const lb_real *logits, const int32_t *labels, int *n,
                           double *row_loss) {
    LB_PAR_FOR
    for (int r = 0; r < N; r++) {
        row_loss[r] = 0;
        if (labels[r] < 0) continue;
        const lb_real *l = logits + (size_t)r * V;
        lb_real mx = l[0];
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double s = 0;
        for (int j = 0; j < V; j++) s += (double)exp(l[j] - mx);
        row_loss[r] = log(s) + (double)mx - (double)l[labels[r]];
    }
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

// logits become dlogits = scale·(softmax − onehot); ignored rows become 0.
static void xent_backward(int N, int V, lb_real *logits, const int32_t *labels, lb_real scale) {
    LB_PAR_FOR
    for (int r = 0; r < N; r++) {
        lb_real *l = logits + (size_t)r * V;
        if (labels[r] < 0) {
            memset(l, 0, sizeof(lb_real) * V);
            continue;
        }
        lb_real mx = l[0];
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double s = 0;
        for (int j = 0; j < V; j++) {
            l[j] = exp(l[j] - mx);
            s += l[j];
        }
        lb_real c = (lb_real)(scale / s);
        for (int j = 0; j < V; j++) l[j] *= c;
        l[labels[r]] -= scale;
    }
}

// ---------------------------------------------------------------------------------------
// Activation arena

typedef struct {
    lb_real *x;      // [N, D] sublayer input (residual stream)
    lb_real *inv;    // [N]
    lb_real *h;      // [N, D] normed input
    lb_real *q;      // [N, HK]
    lb_real *k, *v;  // [Nk, HK] (Nk = B·S for cross attention)
    lb_real *P;      // [B, H, Tq, Tk]
    lb_real *ctx;    // [N, HK]
    lb_real *xa[4];  // LoRA x·Aᵀ of q, k, v, o: [N or Nk, R]
} attn_saved_t;

typedef struct {
    lb_real *x, *inv, *h;  // as above
    lb_real *a;            // [N, F] wi or wi_0 output
    lb_real *b;            // [N, F] wi_1 output (gated)
    lb_real *gd;           // [N, F] dropped activation: the input of wo
    lb_real *xa[3];        // LoRA of wi|wi_0, wi_1, wo
} ff_saved_t;

struct t5_acts {
    int Bc, Sc, Tc;     // capacity
    int B, S, T;        // last batch
    attn_saved_t *es, *ds, *dc;  // encoder self, decoder self, decoder cross
    ff_saved_t *ef, *df;
    lb_real *enc_xf, *enc_invf, *enc_out, *enc_E;  // final norm input, factor, output, dropped
    lb_real *dec_xf, *dec_invf, *dec_hs;           // dec_hs [B·T, D] the head's input
    lb_real *head_xa;
    lb_real *logits;    // [B·T, V]; becomes dlogits in t5_backward
    double *row_loss;   // [B·T]
    int32_t *enc_ids, *enc_mask, *dec_ids, *labels;
    int32_t *bkt_enc, *bkt_dec;  // [S·S], [T·T]
    lb_real *bias_enc, *bias_dec;  // [H, S, S], [H, T, T]
    // scratch
    lb_real *tmp;       // [Nmax, max(D, F, HK)]
    lb_real *lin_tmp;   // [Nmax, max in]: LoRA dropout
    lb_real *pd, *dsc;  // [B, H, max Tq·Tk]
    lb_real *dres, *dres_enc, *dh, *dq, *dk, *dv, *dctx, *da, *db, *dE, *dhs;
    lb_real *dbias_enc, *dbias_dec;
    int *lin_r;         // rank capacity of each linear
    int n_lin;
    int n_tok;
    float loss;
    long enc_bwd;
    void *mem;
    size_t bytes;
};

// Bump allocation over one block: the first pass (base NULL) only counts.
typedef struct {
    char *base;
    size_t off;
} bump_t;
static void *bump(bump_t *b, size_t bytes) {
    size_t off = (b->off + 63) & ~(size_t)63;
    b->off = off + bytes;
    return b->base ? b->base + off : NULL;
}
#define BUMP(b, n) ((lb_real *)bump((b), sizeof(lb_real) * (size_t)(n)))

static size_t max3(size_t a, size_t b, size_t c) {
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

static void acts_layout(t5_acts_t *a, const t5_model_t *m, bump_t *bp) {
    const t5_config_t *c = &m->cfg;
    int B = a->Bc, S = a->Sc, T = a->Tc, D = c->d_model, H = c->num_heads, F = c->d_ff;
    int HK = H * c->d_kv, V = c->vocab_size;
    size_t Ne = (size_t)B * S, Nd = (size_t)B * T, Nmax = Ne > Nd ? Ne : Nd;
    int Le = c->num_layers, Ld = c->num_decoder_layers;
#define XA(l, rows) ((l) && a->lin_r[(l)->id] ? BUMP(bp, (size_t)(rows) * a->lin_r[(l)->id]) : NULL)
    for (int l = 0; l < Le; l++) {
        attn_saved_t *s = &a->es[l];
        const t5_attn_t *L = &m->enc[l].self;
        s->x = BUMP(bp, Ne * D); s->inv = BUMP(bp, Ne); s->h = BUMP(bp, Ne * D);
        s->q = BUMP(bp, Ne * HK); s->k = BUMP(bp, Ne * HK); s->v = BUMP(bp, Ne * HK);
        s->P = BUMP(bp, (size_t)B * H * S * S); s->ctx = BUMP(bp, Ne * HK);
        s->xa[0] = XA(L->q, Ne); s->xa[1] = XA(L->k, Ne); s->xa[2] = XA(L->v, Ne); s->xa[3] = XA(L->o, Ne);
        ff_saved_t *f = &a->ef[l];
        const t5_ff_t *FL = &m->enc[l].ff;
        f->x = BUMP(bp, Ne * D); f->inv = BUMP(bp, Ne); f->h = BUMP(bp, Ne * D);
        f->a = BUMP(bp, Ne * F); f->b = c->gated ? BUMP(bp, Ne * F) : NULL; f->gd = BUMP(bp, Ne * F);
        f->xa[0] = XA(c->gated ? FL->wi_0 : FL->wi, Ne); f->xa[1] = XA(FL->wi_1, Ne); f->xa[2] = XA(FL->wo, Ne);
    }
    for (int l = 0; l < Ld; l++) {
        for (int w = 0; w < 2; w++) {
            attn_saved_t *s = w ? &a->dc[l] : &a->ds[l];
            const t5_attn_t *L = w ? &m->dec[l].cross : &m->dec[l].self;
            size_t Nk = w ? Ne : Nd, Tk = w ? S : T;
            s->x = BUMP(bp, Nd * D); s->inv = BUMP(bp, Nd); s->h = BUMP(bp, Nd * D);
            s->q = BUMP(bp, Nd * HK); s->k = BUMP(bp, Nk * HK); s->v = BUMP(bp, Nk * HK);
            s->P = BUMP(bp, (size_t)B * H * T * Tk); s->ctx = BUMP(bp, Nd * HK);
            s->xa[0] = XA(L->q, Nd); s->xa[1] = XA(L->k, Nk); s->xa[2] = XA(L->v, Nk); s->xa[3] = XA(L->o, Nd);
        }
        ff_saved_t *f = &a->df[l];
        const t5_ff_t *FL = &m->dec[l].ff;
        f->x = BUMP(bp, Nd * D); f->inv = BUMP(bp, Nd); f->h = BUMP(bp, Nd * D);
        f->a = BUMP(bp, Nd * F); f->b = c->gated ? BUMP(bp, Nd * F) : NULL; f->gd = BUMP(bp, Nd * F);
        f->xa[0] = XA(c->gated ? FL->wi_0 : FL->wi, Nd); f->xa[1] = XA(FL->wi_1, Nd); f->xa[2] = XA(FL->wo, Nd);
    }
    a->enc_xf = BUMP(bp, Ne * D); a->enc_invf = BUMP(bp, Ne); a->enc_out = BUMP(bp, Ne * D);
    a->enc_E = BUMP(bp, Ne * D);
    a->dec_xf = BUMP(bp, Nd * D); a->dec_invf = BUMP(bp, Nd); a->dec_hs = BUMP(bp, Nd * D);
    a->head_xa = XA(m->head, Nd);
#undef XA
    a->logits = BUMP(bp, Nd * V);
    a->row_loss = bump(bp, sizeof(double) * Nd);
    a->enc_ids = bump(bp, sizeof(int32_t) * Ne); a->enc_mask = bump(bp, sizeof(int32_t) * Ne);
    a->dec_ids = bump(bp, sizeof(int32_t) * Nd); a->labels = bump(bp, sizeof(int32_t) * Nd);
    a->bkt_enc = bump(bp, sizeof(int32_t) * S * S); a->bkt_dec = bump(bp, sizeof(int32_t) * T * T);
    a->bias_enc = BUMP(bp, (size_t)H * S * S); a->bias_dec = BUMP(bp, (size_t)H * T * T);
    size_t wmax = max3((size_t)D, (size_t)F, (size_t)HK);
    a->tmp = BUMP(bp, Nmax * wmax);
    a->lin_tmp = BUMP(bp, Nmax * wmax);
    size_t tt = max3((size_t)S * S, (size_t)T * S, (size_t)T * T);
    a->pd = BUMP(bp, (size_t)B * H * tt); a->dsc = BUMP(bp, (size_t)B * H * tt);
    a->dres = BUMP(bp, Nd * D); a->dres_enc = BUMP(bp, Ne * D); a->dh = BUMP(bp, Nmax * D);
    a->dq = BUMP(bp, Nmax * HK); a->dk = BUMP(bp, Nmax * HK); a->dv = BUMP(bp, Nmax * HK);
    a->dctx = BUMP(bp, Nmax * HK); a->da = BUMP(bp, Nmax * F); a->db = BUMP(bp, Nmax * F);
    a->dE = BUMP(bp, Ne * D); a->dhs = BUMP(bp, Nd * D);
    a->dbias_enc = BUMP(bp, (size_t)H * S * S); a->dbias_dec = BUMP(bp, (size_t)H * T * T);
}

t5_acts_t *t5_acts_new(const t5_model_t *m, int B, int S, int T) {
    t5_acts_t *a = xcalloc(1, sizeof *a);
    const t5_config_t *c = &m->cfg;
    a->Bc = B; a->Sc = S; a->Tc = T;
    a->es = xcalloc((size_t)c->num_layers, sizeof *a->es);
    a->ef = xcalloc((size_t)c->num_layers, sizeof *a->ef);
    a->ds = xcalloc((size_t)c->num_decoder_layers, sizeof *a->ds);
    a->dc = xcalloc((size_t)c->num_decoder_layers, sizeof *a->dc);
    a->df = xcalloc((size_t)c->num_decoder_layers, sizeof *a->df);
    a->n_lin = m->n_lin;
    a->lin_r = xcalloc((size_t)m->n_lin, sizeof *a->lin_r);
    for (int i = 0; i < m->n_lin; i++) a->lin_r[i] = m->lin[i].r;
    bump_t bp = {NULL, 0};
    acts_layout(a, m, &bp);
    a->bytes = bp.off + 64;
    a->mem = xcalloc(1, a->bytes);
    bp.base = (char *)(((uintptr_t)a->mem + 63) & ~(uintptr_t)63);
    bp.off = 0;
    acts_layout(a, m, &bp);
    return a;
}

void t5_acts_free(t5_acts_t *a) {
    if (!a) return;
    free(a->es); free(a->ef); free(a->ds); free(a->dc); free(a->df);
    free(a->lin_r);
    free(a->mem);
    free(a);
}

size_t t5_acts_bytes(const t5_acts_t *a) { return a->bytes; }
void t5_acts_capacity(const t5_acts_t *a, int *B, int *S, int *T) {
    *B = a->Bc;
    *S = a->Sc;
    *T = a->Tc;
}
const lb_real *t5_acts_logits(const t5_acts_t *a) { return a->logits; }
const lb_real *t5_acts_encoder_out(const t5_acts_t *a) { return a->enc_out; }
int t5_acts_n_tokens(const t5_acts_t *a) { return a->n_tok; }
long t5_acts_encoder_backward_count(const t5_acts_t *a) { return a->enc_bwd; }

// ---------------------------------------------------------------------------------------
// Sublayers

static void add_dropped(lb_real *x_out, const lb_real *x, lb_real *o, size_t n,
                        const lb_drop_t *drop, uint64_t site, float p) {
    if (lb_drop_on(drop, p)) lb_dropout_apply(o, n, drop, site, p);
    LB_PAR_FOR
    for (size_t i = 0; i < n; i++) x_out[i] = x[i] + o[i];
}

// x_out [B·Tq, D] = x + drop(o(attention(norm(x), kv))). kv NULL: self attention.
static void attn_forward(const t5_model_t *m, const t5_attn_t *L, attn_saved_t *s, t5_acts_t *a,
                         const attn_shape_t *sh, const lb_real *kv, lb_real *x_out,
                         const lb_drop_t *drop, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, Nq = sh->B * sh->Tq, Nk = sh->B * sh->Tk;
    rms_forward(Nq, D, s->x, L->ln->w, c->layer_norm_epsilon, s->inv, s->h);
    if (!kv) kv = s->h;
    linear_forward(L->q, Nq, s->h, s->q, s->xa[0], a->lin_tmp, drop, site_lora(L->q));
    linear_forward(L->k, Nk, kv, s->k, s->xa[1], a->lin_tmp, drop, site_lora(L->k));
    linear_forward(L->v, Nk, kv, s->v, s->xa[2], a->lin_tmp, drop, site_lora(L->v));
    attn_core_forward(sh, s->q, s->k, s->v, s->P, a->pd, s->ctx, drop);
    linear_forward(L->o, Nq, s->ctx, a->tmp, s->xa[3], a->lin_tmp, drop, site_lora(L->o));
    add_dropped(x_out, s->x, a->tmp, (size_t)Nq * D, drop, site_res, c->dropout_rate);
}

// What a sublayer's backward must produce.
typedef struct {
    int need_dx;      // the residual gradient must continue below this sublayer
    int need_dkv;     // cross attention: gradient of the encoder output (into a->dE)
    lb_real *dbias;   // [H, Tq, Tk] to accumulate the relative bias gradient, or NULL
} bwd_need_t;

static int attn_trainable(const t5_attn_t *L) {
    return L->ln->g || linear_trainable(L->q) || linear_trainable(L->k) ||
           linear_trainable(L->v) || linear_trainable(L->o);
}

static int ff_trainable(const t5_ff_t *F) {
    return F->ln->g || (F->wi && linear_trainable(F->wi)) || (F->wi_0 && linear_trainable(F->wi_0)) ||
           (F->wi_1 && linear_trainable(F->wi_1)) || linear_trainable(F->wo);
}

// dres [B·Tq, D]: gradient of x_out on entry, of x on exit (when need_dx).
static void attn_backward(const t5_model_t *m, const t5_attn_t *L, const attn_saved_t *s,
                          t5_acts_t *a, const attn_shape_t *sh, const lb_real *kv, lb_real *dres,
                          const bwd_need_t *nd, const lb_drop_t *drop, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, Nq = sh->B * sh->Tq, Nk = sh->B * sh->Tk;
    int cross = kv != NULL;
    if (!kv) kv = s->h;
    int need_dh = nd->need_dx || L->ln->g != NULL;
    int need_dq = need_dh || linear_trainable(L->q);
    int need_dk = linear_trainable(L->k) || (cross ? nd->need_dkv : need_dh);
    int need_dv = linear_trainable(L->v) || (cross ? nd->need_dkv : need_dh);
    int need_dctx = need_dq || need_dk || need_dv || nd->dbias;
    if (!need_dctx && !linear_trainable(L->o)) return;
    // do = drop_bwd(dres)
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        memcpy(a->tmp, dres, sizeof(lb_real) * (size_t)Nq * D);
        lb_dropout_apply(a->tmp, (size_t)Nq * D, drop, site_res, c->dropout_rate);
        dout = a->tmp;
    }
    linear_backward(L->o, Nq, s->ctx, s->xa[3], dout, need_dctx ? a->dctx : NULL, 0, a->lin_tmp,
                    drop, site_lora(L->o));
    if (!need_dctx) return;
    attn_core_backward(sh, s->q, s->k, s->v, s->P, a->pd, a->dsc, a->dctx, need_dq ? a->dq : NULL,
                       need_dk ? a->dk : NULL, need_dv ? a->dv : NULL, nd->dbias, drop);
    // input gradients: self attention sums q, k, v into dh; cross sends k, v to dE
    lb_real *dkv = cross ? (nd->need_dkv ? a->dE : NULL) : (need_dh ? a->dh : NULL);
    int dh_started = 0;
    if (need_dq) {
        linear_backward(L->q, Nq, s->h, s->xa[0], a->dq, need_dh ? a->dh : NULL, 0, a->lin_tmp,
                        drop, site_lora(L->q));
        dh_started = need_dh;
    }
    if (need_dk)
        linear_backward(L->k, Nk, kv, s->xa[1], a->dk, dkv, cross ? 1 : dh_started, a->lin_tmp,
                        drop, site_lora(L->k));
    if (need_dk && !cross && need_dh) dh_started = 1;
    if (need_dv)
        linear_backward(L->v, Nk, kv, s->xa[2], a->dv, dkv, cross ? 1 : dh_started, a->lin_tmp,
                        drop, site_lora(L->v));
    if (need_dh)
        rms_backward(Nq, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, nd->need_dx ? dres : NULL);
}

static void ff_forward(const t5_model_t *m, const t5_ff_t *L, ff_saved_t *s, t5_acts_t *a, int N,
                       lb_real *x_out, const lb_drop_t *drop, uint64_t site_in, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, F = c->d_ff;
    rms_forward(N, D, s->x, L->ln->w, c->layer_norm_epsilon, s->inv, s->h);
    const linear_t *wa = c->gated ? L->wi_0 : L->wi;
    linear_forward(wa, N, s->h, s->a, s->xa[0], a->lin_tmp, drop, site_lora(wa));
    if (c->gated) linear_forward(L->wi_1, N, s->h, s->b, s->xa[1], a->lin_tmp, drop, site_lora(L->wi_1));
    act_forward(c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, s->gd);
    if (lb_drop_on(drop, c->dropout_rate)) lb_dropout_apply(s->gd, (size_t)N * F, drop, site_in, c->dropout_rate);
    linear_forward(L->wo, N, s->gd, a->tmp, s->xa[2], a->lin_tmp, drop, site_lora(L->wo));
    add_dropped(x_out, s->x, a->tmp, (size_t)N * D, drop, site_res, c->dropout_rate);
}

static void ff_backward(const t5_model_t *m, const t5_ff_t *L, const ff_saved_t *s, t5_acts_t *a,
                        int N, lb_real *dres, int need_dx, const lb_drop_t *drop, uint64_t site_in,
                        uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, F = c->d_ff;
    const linear_t *wa = c->gated ? L->wi_0 : L->wi;
    int need_dh = need_dx || L->ln->g != NULL;
    int need_dg = need_dh || linear_trainable(wa) || (c->gated && linear_trainable(L->wi_1));
    if (!need_dg && !linear_trainable(L->wo)) return;
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        memcpy(a->tmp, dres, sizeof(lb_real) * (size_t)N * D);
        lb_dropout_apply(a->tmp, (size_t)N * D, drop, site_res, c->dropout_rate);
        dout = a->tmp;
    }
    linear_backward(L->wo, N, s->gd, s->xa[2], dout, need_dg ? a->da : NULL, 0, a->lin_tmp, drop,
                    site_lora(L->wo));
    if (!need_dg) return;
    if (lb_drop_on(drop, c->dropout_rate)) lb_dropout_apply(a->da, (size_t)N * F, drop, site_in, c->dropout_rate);
    act_backward(c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, a->da, a->da, a->db);
    linear_backward(wa, N, s->h, s->xa[0], a->da, need_dh ? a->dh : NULL, 0, a->lin_tmp, drop,
                    site_lora(wa));
    if (c->gated)
        linear_backward(L->wi_1, N, s->h, s->xa[1], a->db, need_dh ? a->dh : NULL, 1, a->lin_tmp,
                        drop, site_lora(L->wi_1));
    if (need_dh) rms_backward(N, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, need_dx ? dres : NULL);
}

// ---------------------------------------------------------------------------------------
// Whole model

static void fill_bias(const lb_param_t *rel, int H, int Tq, int Tk, int bidir, int nb, int md,
                      int32_t *bkt, lb_real *bias) {
    for (int i = 0; i < Tq; i++)
        for (int j = 0; j < Tk; j++) bkt[i * Tk + j] = t5_relative_bucket(j - i, bidir, nb, md);
    for (int h = 0; h < H; h++)
        for (int e = 0; e < Tq * Tk; e++) bias[(size_t)h * Tq * Tk + e] = rel->w[bkt[e] * H + h];
}

static void bias_backward(const lb_param_t *rel, int H, int Tq, int Tk, const int32_t *bkt,
                          const lb_real *dbias) {
    for (int h = 0; h < H; h++)
        for (int e = 0; e < Tq * Tk; e++) rel->g[bkt[e] * H + h] += dbias[(size_t)h * Tq * Tk + e];
}

int t5_forward(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt, const lb_drop_t *drop,
               float *loss, lb_err_t *err) {
    const t5_config_t *c = &m->cfg;
    int B = bt->B, S = bt->S, T = bt->T, D = c->d_model, H = c->num_heads, V = c->vocab_size;
    if (B <= 0 || S <= 0 || T <= 0 || B > a->Bc || S > a->Sc || T > a->Tc)
        return lb_err_set(err, LB_EARG, "batch of shape B=%d S=%d T=%d does not fit the activations made for B=%d S=%d T=%d",
                          B, S, T, a->Bc, a->Sc, a->Tc);
    for (int i = 0; i < m->n_lin && i < a->n_lin; i++)
        if (m->lin[i].r > a->lin_r[i])
            return lb_err_set(err, LB_EARG, "the adapter on %s was attached after the activations were made; call t5_acts_new again",
                              m->lin[i].name);
    int Ne = B * S, Nd = B * T;
    for (int i = 0; i < Ne; i++) {
        if (bt->input_ids[i] < 0 || bt->input_ids[i] >= V)
            return lb_err_set(err, LB_EARG, "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)",
                              i / S, i % S, bt->input_ids[i], V);
        a->enc_ids[i] = bt->input_ids[i];
        a->enc_mask[i] = bt->attention_mask ? bt->attention_mask[i] != 0 : 1;
    }
    for (int i = 0; i < Nd; i++) {
        int32_t l = bt->labels[i];
        if (l != -100 && (l < 0 || l >= V))
            return lb_err_set(err, LB_EARG, "labels[%d][%d] = %d is neither -100 nor inside the vocabulary [0, %d)",
                              i / T, i % T, l, V);
        a->labels[i] = l;
        // decoder input: labels shifted right, decoder_start first, -100 → pad
        int32_t prev = i % T == 0 ? c->decoder_start_token_id : bt->labels[i - 1];
        a->dec_ids[i] = prev == -100 ? c->pad_token_id : prev;
    }
    a->B = B; a->S = S; a->T = T;
    int Le = c->num_layers, Ld = c->num_decoder_layers;
    float p = c->dropout_rate;
    // encoder
    embed_forward(Ne, D, a->enc_ids, m->shared->w, a->es[0].x);
    if (lb_drop_on(drop, p)) lb_dropout_apply(a->es[0].x, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p);
    fill_bias(m->enc_rel, H, S, S, 1, c->relative_attention_num_buckets,
              c->relative_attention_max_distance, a->bkt_enc, a->bias_enc);
    for (int l = 0; l < Le; l++) {
        attn_shape_t sh = {B, H, c->d_kv, S, S, a->bias_enc, a->enc_mask, 0, p, site_of(0, l, SITE_SELF_P)};
        attn_forward(m, &m->enc[l].self, &a->es[l], a, &sh, NULL, a->ef[l].x, drop, site_of(0, l, SITE_SELF_RES));
        ff_forward(m, &m->enc[l].ff, &a->ef[l], a, Ne, l + 1 < Le ? a->es[l + 1].x : a->enc_xf, drop,
                   site_of(0, l, SITE_FF_IN), site_of(0, l, SITE_FF_RES));
    }
    rms_forward(Ne, D, a->enc_xf, m->enc_ln->w, c->layer_norm_epsilon, a->enc_invf, a->enc_out);
    memcpy(a->enc_E, a->enc_out, sizeof(lb_real) * (size_t)Ne * D);
    if (lb_drop_on(drop, p)) lb_dropout_apply(a->enc_E, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p);
    // decoder
    embed_forward(Nd, D, a->dec_ids, m->shared->w, a->ds[0].x);
    if (lb_drop_on(drop, p)) lb_dropout_apply(a->ds[0].x, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p);
    fill_bias(m->dec_rel, H, T, T, 0, c->relative_attention_num_buckets,
              c->relative_attention_max_distance, a->bkt_dec, a->bias_dec);
    for (int l = 0; l < Ld; l++) {
        attn_shape_t sh = {B, H, c->d_kv, T, T, a->bias_dec, NULL, 1, p, site_of(1, l, SITE_SELF_P)};
        attn_forward(m, &m->dec[l].self, &a->ds[l], a, &sh, NULL, a->dc[l].x, drop, site_of(1, l, SITE_SELF_RES));
        attn_shape_t sc = {B, H, c->d_kv, T, S, NULL, a->enc_mask, 0, p, site_of(1, l, SITE_CROSS_P)};
        attn_forward(m, &m->dec[l].cross, &a->dc[l], a, &sc, a->enc_E, a->df[l].x, drop, site_of(1, l, SITE_CROSS_RES));
        ff_forward(m, &m->dec[l].ff, &a->df[l], a, Nd, l + 1 < Ld ? a->ds[l + 1].x : a->dec_xf, drop,
                   site_of(1, l, SITE_FF_IN), site_of(1, l, SITE_FF_RES));
    }
    rms_forward(Nd, D, a->dec_xf, m->dec_ln->w, c->layer_norm_epsilon, a->dec_invf, a->dec_hs);
    if (lb_drop_on(drop, p)) lb_dropout_apply(a->dec_hs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p);
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dec_hs[i] *= sc;
    }
    linear_forward(m->head, Nd, a->dec_hs, a->logits, a->head_xa, a->lin_tmp, drop, site_lora(m->head));
    double sum = xent_forward(Nd, V, a->logits, a->labels, &a->n_tok, a->row_loss);
    a->loss = a->n_tok ? (float)(sum / a->n_tok) : 0.0f;
    if (loss) *loss = a->loss;
    return 0;
}

void t5_backward(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop, float loss_scale) {
    const t5_config_t *c = &m->cfg;
    int B = a->B, S = a->S, T = a->T, D = c->d_model, H = c->num_heads, V = c->vocab_size;
    int Ne = B * S, Nd = B * T, Le = c->num_layers, Ld = c->num_decoder_layers;
    float p = c->dropout_rate;
    // What is trainable where decides how far down the gradient must travel.
    int shared_t = m->shared->g != NULL;
    int enc_any = shared_t || m->enc_ln->g || m->enc_rel->g;
    for (int l = 0; l < Le && !enc_any; l++)
        enc_any = attn_trainable(&m->enc[l].self) || ff_trainable(&m->enc[l].ff);
    // dec_below[k]: something at decoder sublayer position < k (0 = embedding; block l has
    // positions 1+3l, 2+3l, 3+3l) needs the residual gradient.
    int np = 1 + 3 * Ld;
    char *dec_below = xcalloc((size_t)np + 1, 1);
    int any = shared_t || (m->dec_rel->g != NULL);
    dec_below[0] = 0;
    dec_below[1] = (char)shared_t;
    for (int l = 0; l < Ld; l++) {
        if (l == 0 && m->dec_rel->g) any = 1;
        any |= attn_trainable(&m->dec[l].self);
        dec_below[2 + 3 * l] = (char)any;
        any |= attn_trainable(&m->dec[l].cross) || enc_any;
        dec_below[3 + 3 * l] = (char)any;
        any |= ff_trainable(&m->dec[l].ff);
        dec_below[4 + 3 * l > np ? np : 4 + 3 * l] = (char)any;
    }
    int dec_any = any || m->dec_ln->g;
    // head: dlogits in place, dW, and dhs when the decoder below needs it
    xent_backward(Nd, V, a->logits, a->labels, a->n_tok ? (lb_real)(loss_scale / a->n_tok) : 0);
    linear_backward(m->head, Nd, a->dec_hs, a->head_xa, a->logits, dec_any ? a->dhs : NULL, 0,
                    a->lin_tmp, drop, site_lora(m->head));
    if (!dec_any) goto done;
    // decoder final norm (scale, dropout)
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dhs[i] *= sc;
    }
    if (lb_drop_on(drop, p)) lb_dropout_apply(a->dhs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p);
    memset(a->dres, 0, sizeof(lb_real) * (size_t)Nd * D);
    rms_backward(Nd, D, a->dec_xf, m->dec_ln->w, a->dec_invf, a->dhs, m->dec_ln->g,
                 dec_below[np] ? a->dres : NULL);
    if (!dec_below[np]) goto done;
    if (enc_any) memset(a->dE, 0, sizeof(lb_real) * (size_t)Ne * D);
    if (m->dec_rel->g) memset(a->dbias_dec, 0, sizeof(lb_real) * (size_t)H * T * T);
    for (int l = Ld - 1; l >= 0; l--) {
        ff_backward(m, &m->dec[l].ff, &a->df[l], a, Nd, a->dres, dec_below[3 + 3 * l], drop,
                    site_of(1, l, SITE_FF_IN), site_of(1, l, SITE_FF_RES));
        if (!dec_below[3 + 3 * l]) break;
        attn_shape_t sc = {B, H, c->d_kv, T, S, NULL, a->enc_mask, 0, p, site_of(1, l, SITE_CROSS_P)};
        bwd_need_t nc = {dec_below[2 + 3 * l], enc_any, NULL};
        attn_backward(m, &m->dec[l].cross, &a->dc[l], a, &sc, a->enc_E, a->dres, &nc, drop,
                      site_of(1, l, SITE_CROSS_RES));
        if (!dec_below[2 + 3 * l]) break;
        attn_shape_t sh = {B, H, c->d_kv, T, T, a->bias_dec, NULL, 1, p, site_of(1, l, SITE_SELF_P)};
        bwd_need_t ns = {dec_below[1 + 3 * l], 0, m->dec_rel->g ? a->dbias_dec : NULL};
        attn_backward(m, &m->dec[l].self, &a->ds[l], a, &sh, NULL, a->dres, &ns, drop,
                      site_of(1, l, SITE_SELF_RES));
        if (!dec_below[1 + 3 * l]) break;
    }
    if (m->dec_rel->g) bias_backward(m->dec_rel, H, T, T, a->bkt_dec, a->dbias_dec);
    if (shared_t) {
        if (lb_drop_on(drop, p)) lb_dropout_apply(a->dres, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p);
        embed_backward(Nd, D, a->dec_ids, a->dres, m->shared->g);
    }
    if (!enc_any) goto done;
    // encoder: from dE through the final norm and down the blocks
    {
        int *enc_below = xcalloc((size_t)(2 * Le + 2), sizeof(int));
        int e = shared_t;
        enc_below[0] = 0;
        for (int l = 0; l < Le; l++) {
            enc_below[1 + 2 * l] = e;  // below the self attention of block l
            e |= attn_trainable(&m->enc[l].self) || m->enc_rel->g;
            enc_below[2 + 2 * l] = e;  // below the feed forward of block l
            e |= ff_trainable(&m->enc[l].ff);
        }
        enc_below[1 + 2 * Le] = e;
        if (lb_drop_on(drop, p)) lb_dropout_apply(a->dE, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p);
        memset(a->dres_enc, 0, sizeof(lb_real) * (size_t)Ne * D);
        rms_backward(Ne, D, a->enc_xf, m->enc_ln->w, a->enc_invf, a->dE, m->enc_ln->g,
                     enc_below[1 + 2 * Le] ? a->dres_enc : NULL);
        if (m->enc_rel->g) memset(a->dbias_enc, 0, sizeof(lb_real) * (size_t)H * S * S);
        for (int l = Le - 1; l >= 0 && enc_below[1 + 2 * Le]; l--) {
            a->enc_bwd++;
            ff_backward(m, &m->enc[l].ff, &a->ef[l], a, Ne, a->dres_enc, enc_below[2 + 2 * l], drop,
                        site_of(0, l, SITE_FF_IN), site_of(0, l, SITE_FF_RES));
            if (!enc_below[2 + 2 * l]) break;
            attn_shape_t sh = {B, H, c->d_kv, S, S, a->bias_enc, a->enc_mask, 0, p, site_of(0, l, SITE_SELF_P)};
            bwd_need_t ns = {enc_below[1 + 2 * l], 0, m->enc_rel->g ? a->dbias_enc : NULL};
            attn_backward(m, &m->enc[l].self, &a->es[l], a, &sh, NULL, a->dres_enc, &ns, drop,
                          site_of(0, l, SITE_SELF_RES));
            if (!enc_below[1 + 2 * l]) break;
        }
        if (m->enc_rel->g) bias_backward(m->enc_rel, H, S, S, a->bkt_enc, a->dbias_enc);
        if (shared_t) {
            if (lb_drop_on(drop, p)) lb_dropout_apply(a->dres_enc, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p);
            embed_backward(Ne, D, a->enc_ids, a->dres_enc, m->shared->g);
        }
        free(enc_below);
    }
done:
    free(dec_below);
}
