// T5's parameters: the table of weights and linears in Hugging Face order, loading a
// checkpoint (memory-mapped), what is trainable, bf16 storage and bf16 products. The
// forward and backward math is in t5.c, the arena in t5_acts.c.
#include "t5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu.h"
#include "gemm_bf16.h"
#include "gemm_f32.h"
#include "t5_internal.h"

// ---------------------------------------------------------------------------------------
// Model structure


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

int t5_init_table(t5_model_t *m, const t5_config_t *cfg, lb_err_t *err) {
    (void)err;
    build(m, cfg, cfg->tie_word_embeddings);
    m->table_only = 1;
    return 0;
}

static void shape_str(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

// keep_bf16: a BF16 tensor is used in place as bf16 (w16 into the mapping, no fp32 copy).
static int load_param(t5_model_t *m, lb_param_t *p, int keep_bf16, lb_err_t *err) {
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
    if (keep_bf16 && t->dtype == ST_BF16 && ((uintptr_t)t->data % sizeof(uint16_t)) == 0) {
        p->w16 = (const uint16_t *)(const void *)t->data;  // read-only mapping; never written
        p->w = NULL;
        return 0;
    }
    if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        p->w = (lb_real *)(uintptr_t)t->data;  // read-only mapping; never written
        return 0;
    }
    p->own = xmalloc(p->numel * sizeof(float));
    p->w = p->own;
    return st_to_f32(t, p->own, err);
#else
    (void)keep_bf16;
    float *tmp = xmalloc(p->numel * sizeof(float));
    int rc = st_to_f32(t, tmp, err);
    p->own = xmalloc(p->numel * sizeof(lb_real));
    p->w = p->own;
    for (size_t i = 0; i < p->numel; i++) p->own[i] = tmp[i];
    free(tmp);
    return rc;
#endif
}

static int load_dir(t5_model_t *m, const char *dir, int keep_bf16, lb_err_t *err) {
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
    char *lin_w = xcalloc((size_t)m->n_params, 1);  // 1 = the weight of a linear (not shared)
    for (int i = 0; keep_bf16 && i < m->n_lin; i++)
        if (m->lin[i].W != m->shared) lin_w[m->lin[i].W - m->params] = 1;
    for (int i = 0; i < m->n_params; i++)
        if (load_param(m, &m->params[i], lin_w[i], err)) {
            free(lin_w);
            t5_free(m);
            return -1;
        }
    free(lin_w);
    return 0;
}

int t5_load(t5_model_t *m, const char *dir, lb_err_t *err) {
    return load_dir(m, dir, 0, err);
}

int t5_load_bf16(t5_model_t *m, const char *dir, lb_err_t *err) {
    return load_dir(m, dir, 1, err);
}

void t5_free(t5_model_t *m) {
    if (!m->params) return;
    for (int i = 0; i < m->n_lin; i++) linear_unpack_bf16(&m->lin[i]);
    for (int i = 0; i < m->n_params; i++) {
        free(m->params[i].own);
        free(m->params[i].own16);
    }
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

int t5_pred_partial(const char *name, void *ctx) {
    const t5_partial_t *p = ctx;
    int enc = !strncmp(name, "encoder.", 8), dec = !strncmp(name, "decoder.", 8);
    if (!(enc && (p->stacks & T5_STACK_ENCODER)) && !(dec && (p->stacks & T5_STACK_DECODER))) return 0;
    const char *b = strstr(name, ".block.");
    int is_norm = strstr(name, "layer_norm") != NULL;
    if (!b) return is_norm;  // the stack's final_layer_norm belongs to its top
    int idx = atoi(b + 7), n = enc ? p->n_enc : p->n_dec;
    if (p->top_blocks > 0 && idx < n - p->top_blocks) return 0;
    return p->norms_only ? is_norm : 1;
}

int t5_position_bias_ranges(const t5_model_t *m, float lr_mult, optim_range_t out[2]) {
    const lb_param_t *rel[2] = {m->enc_rel, m->dec_rel};
    if (rel[0] && rel[1] && rel[1]->off < rel[0]->off) {
        const lb_param_t *t = rel[0];
        rel[0] = rel[1];
        rel[1] = t;
    }
    int n = 0;
    for (int i = 0; i < 2; i++)
        if (rel[i] && rel[i]->trainable) out[n++] = (optim_range_t){rel[i]->off, rel[i]->numel, lr_mult, 1.0f};
    return n;
}

// t5_set_trainable on a table model: marks only (see t5_init_table).
static void table_set_trainable(t5_model_t *m, int (*pred)(const char *name, void *ctx), void *ctx) {
    if (!m->block) m->block = xcalloc(1, sizeof(lb_real));
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        lb_param_t *p = &m->params[i];
        p->trainable = pred ? pred(p->name, ctx) != 0 : 0;
        p->g = p->trainable ? m->block : NULL;
        p->off = p->trainable ? n : 0;
        if (p->trainable) n += p->numel;
    }
    m->n_train = n;
}

void t5_set_trainable(t5_model_t *m, int (*pred)(const char *name, void *ctx), void *ctx) {
    if (m->table_only) {
        table_set_trainable(m, pred, ctx);
        return;
    }
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
            if (p->w16) {  // a bf16-held weight trains in fp32: its values, exactly
                lb_bf16_to_real(p->w16, p->numel, block + off);
                free(p->own16);
                p->own16 = NULL;
                p->w16 = NULL;
            } else {
                memcpy(block + off, p->w, p->numel * sizeof(lb_real));
            }
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
    if (p->w16) {  // back to fp32: the same values, now writable
        p->own = xmalloc(p->numel * sizeof(lb_real));
        lb_bf16_to_real(p->w16, p->numel, p->own);
        free(p->own16);
        p->own16 = NULL;
        p->w16 = NULL;
        p->w = p->own;
        return p->w;
    }
    if (p->g || p->own) return p->w;
    p->own = xmalloc(p->numel * sizeof(lb_real));
    memcpy(p->own, p->w, p->numel * sizeof(lb_real));
    p->w = p->own;
    return p->w;
}

// Drops this process's pages of [ptr, ptr + n) when they lie in the mapped checkpoint
// (whole pages inside the range only): the values are no longer read, and a clean page of
// a read-only file mapping left resident would still count in RSS.
static void drop_mapped_pages(const t5_model_t *m, const void *ptr, size_t n) {
    if (!m->st_open || !m->st.mapped) return;
    uintptr_t a = (uintptr_t)ptr, lo = (uintptr_t)m->st.map, hi = lo + m->st.size;
    if (a < lo || a + n > hi) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t s = (a + pg - 1) / pg * pg, e = (a + n) / pg * pg;
    if (e > s) madvise((void *)s, e - s, MADV_DONTNEED);
}

// Holds p (frozen, fp32) in bf16: the file's own BF16 bytes when p's values are exactly
// them, else a private copy rounded to nearest even; the fp32 storage is released.
static void param_to_bf16(t5_model_t *m, lb_param_t *p) {
    const uint16_t *file16 = NULL;
#ifndef LB_REAL_DOUBLE
    const st_tensor_t *t = m->st_open ? st_find(&m->st, p->name) : NULL;
    if (t && t->dtype == ST_BF16 && t->numel == p->numel && (uintptr_t)t->data % sizeof(uint16_t) == 0) {
        const uint16_t *f = (const uint16_t *)(const void *)t->data;
        const uint32_t *w = (const uint32_t *)(const void *)p->w;
        size_t k = 0;
        while (k < p->numel && w[k] == (uint32_t)f[k] << 16) k++;
        if (k == p->numel) file16 = f;  // unchanged since loading: no copy needed
    }
#endif
    if (file16) {
        p->w16 = file16;
    } else {
        p->own16 = xmalloc(p->numel * sizeof(uint16_t));
        for (size_t k = 0; k < p->numel; k++) p->own16[k] = lb_f32_to_bf16((float)p->w[k]);
        p->w16 = p->own16;
    }
    if (p->own) {
        free(p->own);
        p->own = NULL;
    } else {
        drop_mapped_pages(m, p->w, p->numel * sizeof(lb_real));
    }
    p->w = NULL;
}

// The linear weights t5_frozen_weights_bf16 holds in bf16: frozen, not the shared embedding,
// not already bf16.
static int bf16_candidate(const t5_model_t *m, const lb_param_t *p) {
    return p != m->shared && !p->g && !p->w16;
}

int t5_frozen_weights_bf16(t5_model_t *m, lb_err_t *err) {
    if (!m->params || m->table_only)
        return lb_err_set(err, LB_EARG, "t5_frozen_weights_bf16: the model is not loaded; call t5_load or t5_init_empty first");
    for (int i = 0; i < m->n_lin; i++) {
        lb_param_t *p = m->lin[i].W;
        if (bf16_candidate(m, p)) param_to_bf16(m, p);
    }
    return 0;
}

// 1 when a backward may need the input gradient dX through l, with m trainable as it is
// now: nothing below a frozen encoder (its layers, and the decoder's cross-attention k and
// v, which read the encoder output), nothing at all in a frozen model (evaluation,
// forward-only runs). Only the encoder's first block below its lowest trainable layer
// could be spared more; it is not worth a rule.
static int may_need_dx(const t5_model_t *m, const linear_t *l) {
    if (t5_model_frozen(m)) return 0;
    if (!strncmp(l->name, "encoder.", 8)) return !t5_encoder_frozen(m);
    if (strstr(l->name, ".EncDecAttention.k") || strstr(l->name, ".EncDecAttention.v"))
        return !t5_encoder_frozen(m);
    return 1;
}

// The bf16 products a linear gets: a trainable W the forward, input and weight gradients;
// a frozen one the forward, and the input gradient when a backward may need it.
static int bf16_flags(const t5_model_t *m, const linear_t *l) {
    if (l->W->g) return LINEAR_BF16_FWD | LINEAR_BF16_BWD | LINEAR_BF16_DW;
    return LINEAR_BF16_FWD | (may_need_dx(m, l) ? LINEAR_BF16_BWD : 0);
}

size_t t5_bf16_packing_bytes(const t5_model_t *m) {
    size_t n = 0, late = 0;
    for (int i = 0; i < m->n_lin; i++) {
        const linear_t *l = &m->lin[i];
        int f = bf16_flags(m, l);
        size_t fw = lb_bf16w_packed_bytes(l->out, l->in, 1);
        size_t bw = (f & LINEAR_BF16_BWD) ? lb_bf16w_packed_bytes(l->out, l->in, 0) : 0;
        if (l->W->g) {  // packed at each use into the one buffer (linear_pack_bf16's late packing)
            if (fw > late) late = fw;
            if (bw > late) late = bw;
        } else {
            n += fw + bw;
        }
    }
    return n + late;
}

int t5_use_bf16(t5_model_t *m, lb_err_t *err) {
    char why[256];
    if (!lb_bf16_available(NULL, why, sizeof why)) return lb_err_set(err, LB_EARG, "%s", why);
    // Frozen linear weights are held in bf16 (t5_frozen_weights_bf16's storage; a no-op
    // when already so): the products read the packing, so the fp32 copy would only be
    // memory (4 bytes a value); the bf16 values (2) stay for everything else that reads W.
    if (t5_frozen_weights_bf16(m, err)) return -1;
    for (int i = 0; i < m->n_lin; i++) {
        if (linear_pack_bf16(&m->lin[i], bf16_flags(m, &m->lin[i]), err)) {
            for (int j = 0; j < i; j++) linear_unpack_bf16(&m->lin[j]);
            m->bf16 = 0;
            return -1;
        }
    }
    m->bf16 = 1;
    return 0;
}

static const char *const precision_names[] = {"auto", "fp32", "bf16"};

const char *t5_precision_name(t5_precision_t p) {
    return (int)p >= 0 && (int)p < 3 ? precision_names[p] : "?";
}

int t5_precision_parse(const char *name) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, precision_names[i])) return i;
    return -1;
}

int t5_precision_is_bf16(t5_precision_t want) {
    if (want == T5_PRECISION_FP32) return 0;
    lb_cpu_t c;
    lb_cpu_detect(&c);
    if (want == T5_PRECISION_AUTO && lb_cpu_bf16_level(&c) < 2) return 0;
    return lb_bf16_available(NULL, NULL, 0);
}

int t5_set_precision(t5_model_t *m, t5_precision_t want, t5_precision_t *used, lb_err_t *err) {
    *used = T5_PRECISION_FP32;
    if (want == T5_PRECISION_FP32) return 0;
    lb_cpu_t c;
    lb_cpu_detect(&c);
    if (want == T5_PRECISION_AUTO && lb_cpu_bf16_level(&c) < 2) return 0;  // no AMX: fp32 is as fast
    char why[256];
    if (!lb_bf16_available(NULL, why, sizeof why))
        return lb_err_set(err, LB_EARG, "precision bf16 is not available on this CPU (%s); use fp32 or auto", why);
    if (t5_use_bf16(m, err)) return -1;
    *used = T5_PRECISION_BF16;
    return 0;
}

const char *t5_kernel_path(const t5_model_t *m) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
#ifndef LB_REAL_DOUBLE
    if (!m->bf16) return lb_f32_path_name(lb_f32_path());  // the path lb_gemm takes (gemm_f32.h)
#endif
    return lb_cpu_kernel_path(&c, m->bf16);
}

void t5_bf16_refresh(t5_model_t *m) {
    if (!m->bf16) return;
    for (int i = 0; i < m->n_lin; i++) {
        linear_t *l = &m->lin[i];
        if (!l->W->g) continue;  // frozen: packed once
        lb_err_t e;
        // it packed before with the same weight and flags, so only a failing oneDNN call can
        // refuse now; the layer is then fp32, which is slower, not wrong
        if (l->bf16 && linear_pack_bf16(l, l->bf16, &e)) linear_unpack_bf16(l);
    }
}

size_t t5_weight_bytes_if_bf16(const t5_model_t *m, size_t *bf16_bytes) {
    size_t n = 0, h = 0;
    for (int i = 0; i < m->n_params; i++) {
        const lb_param_t *p = &m->params[i];
        int lin = 0;  // a linear's weight that t5_frozen_weights_bf16 would convert
        for (int k = 0; k < m->n_lin && !lin; k++) lin = m->lin[k].W == p && (p->w16 || bf16_candidate(m, p));
        if (lin) h += p->numel * sizeof(uint16_t);
        else n += p->numel * sizeof(lb_real);
    }
    if (bf16_bytes) *bf16_bytes = h;
    return n + h;
}

size_t t5_weight_bytes(const t5_model_t *m, size_t *bf16_bytes) {
    size_t n = 0, h = 0;
    for (int i = 0; i < m->n_params; i++) {
        const lb_param_t *p = &m->params[i];
        if (p->w16) h += p->numel * sizeof(uint16_t);
        else n += p->numel * sizeof(lb_real);
    }
    if (bf16_bytes) *bf16_bytes = h;
    return n + h;
}

void t5_zero_grad(t5_model_t *m) {
    if (m->block) memset(m->block + m->n_train, 0, m->n_train * sizeof(lb_real));
}

size_t t5_count_params(const t5_model_t *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += m->params[i].numel;
    return n;
}
