// T5 weights, forward and backward. Each layer's *_forward and *_backward sit together;
// gradients are named d<name>. Shapes use the letters documented in t5.h.
#include "t5.h"

#include "cpu.h"
#include "gemm_bf16.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <tgmath.h>
#include <unistd.h>

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

// The bf16 products a linear gets: a frozen W the forward and input gradient; a trainable
// one also its weight gradient.
static int bf16_flags(const linear_t *l) {
    return LINEAR_BF16_FWD | LINEAR_BF16_BWD | (l->W->g ? LINEAR_BF16_DW : 0);
}

int t5_use_bf16(t5_model_t *m, lb_err_t *err) {
    for (int i = 0; i < m->n_lin; i++) {
        if (linear_pack_bf16(&m->lin[i], bf16_flags(&m->lin[i]), err)) {
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
static void drop_range(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, uint64_t off, float p) {
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
static void rms_forward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
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
static void rms_apply_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
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
static void rms_backward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
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
static void act_forward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g) {
    act_job_t j = {act, a, b, NULL, g, NULL, NULL};
    lb_pool_run(n >= 4096 ? pool : NULL, (long)n, act_fwd_job, &j);
}

// From dg: da = dg·b·act'(a) (in place of dg allowed), db = dg·act(a) when b.
static void act_backward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                           const lb_real *dg, lb_real *da, lb_real *db) {
    act_job_t j = {act, a, b, dg, NULL, da, db};
    lb_pool_run(n >= 4096 ? pool : NULL, (long)n, act_bwd_job, &j);
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

static void attn_core_forward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                const lb_real *k, const lb_real *v, lb_real *P, lb_real *pd,
                                lb_real *ctx, const lb_drop_t *drop) {
    attn_job_t j = {s, q, k, v, NULL, NULL, P, pd, ctx, NULL, NULL, NULL, NULL, NULL, drop};
    lb_pool_run_gemms(pool, (long)s->B * s->H, attn_fwd_job, &j);
}

// FLOPs of one of the core's products (all four have the same size).
static double attn_core_flops(const attn_shape_t *s) {
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
static void attn_core_backward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
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
static double xent_forward_p(lb_pool_t *pool, int N, int V, const lb_real *logits,
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
static void xent_backward_p(lb_pool_t *pool, int N, int V, lb_real *logits, const int32_t *labels,
                            lb_real scale) {
    xent_job_t j = {V, logits, labels, NULL, scale};
    lb_pool_run(pool, N, xent_bwd_job, &j);
}

// ---------------------------------------------------------------------------------------
// Activation arena

typedef struct {
    lb_real *x;      // [N, D] sublayer input (residual stream)
    lb_real *inv;    // [N]
    lb_real *h;      // [N, D] normed input (the arena's one hbuf: rebuilt when needed)
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
    lb_real *gd;           // [N, F] dropped activation, the input of wo (gbuf, rebuilt)
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
    lb_real *hbuf, *gbuf;  // [Nmax, D], [Nmax, F]
    lb_real *tmp;       // [Nmax, max(D, F, HK)]
    lb_real *lin_tmp;   // [Nmax, max in]: LoRA dropout
    lb_real *pd, *dsc;  // [B, H, max Tq·Tk]
    lb_real *dres, *dres_enc, *dh, *dq, *dk, *dv, *dctx, *da, *db, *dE, *dhs;
    lb_real *dbias_enc, *dbias_dec;
    int *lin_r;         // rank capacity of each linear
    lb_pool_t *pool;    // threads of the element-wise loops and attention heads
    int n_lin;
    int n_tok;
    float loss;
    long enc_bwd;
    int enc_shared;     // frozen encoder: its blocks share one block's buffers (nothing kept)
    int dec_shared;     // nothing trainable: the decoder's blocks share too
    double flops_fwd, flops_bwd;  // matrix-product FLOPs of the last forward / backward
    void *mem;
    size_t bytes;
};

static int model_frozen(const t5_model_t *m);

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
    // normed inputs and the input of wo are rebuilt in the backward, not kept per block
    a->hbuf = BUMP(bp, Nmax * D);
    a->gbuf = BUMP(bp, Nmax * F);
#define XA(l, rows) ((l) && a->lin_r[(l)->id] ? BUMP(bp, (size_t)(rows) * a->lin_r[(l)->id]) : NULL)
    for (int l = 0; l < Le; l++) {
        if (l > 0 && a->enc_shared) {  // nothing is kept for a backward: reuse block 0's buffers
            a->es[l] = a->es[0];
            a->ef[l] = a->ef[0];
            continue;
        }
        attn_saved_t *s = &a->es[l];
        const t5_attn_t *L = &m->enc[l].self;
        s->x = BUMP(bp, Ne * D); s->inv = BUMP(bp, Ne); s->h = a->hbuf;
        s->q = BUMP(bp, Ne * HK); s->k = BUMP(bp, Ne * HK); s->v = BUMP(bp, Ne * HK);
        s->P = BUMP(bp, (size_t)B * H * S * S); s->ctx = BUMP(bp, Ne * HK);
        s->xa[0] = XA(L->q, Ne); s->xa[1] = XA(L->k, Ne); s->xa[2] = XA(L->v, Ne); s->xa[3] = XA(L->o, Ne);
        ff_saved_t *f = &a->ef[l];
        const t5_ff_t *FL = &m->enc[l].ff;
        f->x = BUMP(bp, Ne * D); f->inv = BUMP(bp, Ne); f->h = a->hbuf;
        f->a = BUMP(bp, Ne * F); f->b = c->gated ? BUMP(bp, Ne * F) : NULL; f->gd = a->gbuf;
        f->xa[0] = XA(c->gated ? FL->wi_0 : FL->wi, Ne); f->xa[1] = XA(FL->wi_1, Ne); f->xa[2] = XA(FL->wo, Ne);
    }
    for (int l = 0; l < Ld; l++) {
        if (l > 0 && a->dec_shared) {
            a->ds[l] = a->ds[0];
            a->dc[l] = a->dc[0];
            a->df[l] = a->df[0];
            continue;
        }
        for (int w = 0; w < 2; w++) {
            attn_saved_t *s = w ? &a->dc[l] : &a->ds[l];
            const t5_attn_t *L = w ? &m->dec[l].cross : &m->dec[l].self;
            size_t Nk = w ? Ne : Nd, Tk = w ? S : T;
            s->x = BUMP(bp, Nd * D); s->inv = BUMP(bp, Nd); s->h = a->hbuf;
            s->q = BUMP(bp, Nd * HK); s->k = BUMP(bp, Nk * HK); s->v = BUMP(bp, Nk * HK);
            s->P = BUMP(bp, (size_t)B * H * T * Tk); s->ctx = BUMP(bp, Nd * HK);
            s->xa[0] = XA(L->q, Nd); s->xa[1] = XA(L->k, Nk); s->xa[2] = XA(L->v, Nk); s->xa[3] = XA(L->o, Nd);
        }
        ff_saved_t *f = &a->df[l];
        const t5_ff_t *FL = &m->dec[l].ff;
        f->x = BUMP(bp, Nd * D); f->inv = BUMP(bp, Nd); f->h = a->hbuf;
        f->a = BUMP(bp, Nd * F); f->b = c->gated ? BUMP(bp, Nd * F) : NULL; f->gd = a->gbuf;
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

// An arena's tables and its size (a->bytes) for m as it is now, without the allocation.
static t5_acts_t *acts_plan(const t5_model_t *m, int B, int S, int T) {
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
    a->enc_shared = t5_encoder_frozen(m);
    a->dec_shared = model_frozen(m);
    for (int i = 0; i < m->n_lin; i++) a->lin_r[i] = m->lin[i].r;
    bump_t bp = {NULL, 0};
    acts_layout(a, m, &bp);
    a->bytes = bp.off + 64;
    return a;
}

t5_acts_t *t5_acts_new(const t5_model_t *m, int B, int S, int T) {
    t5_acts_t *a = acts_plan(m, B, S, T);
    a->pool = lb_pool_new();
    a->mem = xcalloc(1, a->bytes);
    bump_t bp = {(char *)(((uintptr_t)a->mem + 63) & ~(uintptr_t)63), 0};
    acts_layout(a, m, &bp);
    return a;
}

size_t t5_acts_size(const t5_model_t *m, int B, int S, int T) {
    t5_acts_t *a = acts_plan(m, B, S, T);
    size_t n = a->bytes;
    t5_acts_free(a);
    return n;
}

void t5_acts_free(t5_acts_t *a) {
    if (!a) return;
    free(a->es); free(a->ef); free(a->ds); free(a->dc); free(a->df);
    free(a->lin_r);
    lb_pool_free(a->pool);
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
double t5_acts_flops(const t5_acts_t *a, int backward) { return backward ? a->flops_bwd : a->flops_fwd; }

// ---------------------------------------------------------------------------------------
// Sublayers

typedef struct {
    lb_real *x_out;
    const lb_real *x;
    lb_real *o;
    const lb_drop_t *drop;
    uint64_t site;
    float p;
} add_job_t;

static void add_job(void *ctx, long lo, long hi, int tid) {
    (void)tid;
    const add_job_t *j = ctx;
    if (lb_drop_on(j->drop, j->p)) drop_range(j->o + lo, (size_t)(hi - lo), j->drop, j->site, (uint64_t)lo, j->p);
    for (long i = lo; i < hi; i++) j->x_out[i] = j->x[i] + j->o[i];
}

// x_out = x + drop(o) (o, scratch, is dropped in place).
static void add_dropped(t5_acts_t *a, lb_real *x_out, const lb_real *x, lb_real *o, size_t n,
                        const lb_drop_t *drop, uint64_t site, float p) {
    add_job_t j = {x_out, x, o, drop, site, p};
    lb_pool_run(a->pool, (long)n, add_job, &j);
}

// x_out [B·Tq, D] = x + drop(o(attention(norm(x), kv))). kv NULL: self attention.
static void attn_forward(const t5_model_t *m, const t5_attn_t *L, attn_saved_t *s, t5_acts_t *a,
                         const attn_shape_t *sh, const lb_real *kv, lb_real *x_out,
                         const lb_drop_t *drop, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, Nq = sh->B * sh->Tq, Nk = sh->B * sh->Tk;
    rms_forward_p(a->pool, Nq, D, s->x, L->ln->w, c->layer_norm_epsilon, s->inv, s->h);
    if (!kv) kv = s->h;
    linear_forward_pool(L->q, a->pool, Nq, s->h, NULL, s->q, s->xa[0], a->lin_tmp, drop, site_lora(L->q));
    a->flops_fwd += linear_forward_flops(L->q, Nq);
    linear_forward_pool(L->k, a->pool, Nk, kv, NULL, s->k, s->xa[1], a->lin_tmp, drop, site_lora(L->k));
    a->flops_fwd += linear_forward_flops(L->k, Nk);
    linear_forward_pool(L->v, a->pool, Nk, kv, NULL, s->v, s->xa[2], a->lin_tmp, drop, site_lora(L->v));
    a->flops_fwd += linear_forward_flops(L->v, Nk);
    attn_core_forward_p(a->pool, sh, s->q, s->k, s->v, s->P, a->pd, s->ctx, drop);
    a->flops_fwd += 2 * attn_core_flops(sh);  // q·kᵀ and P·v
    linear_forward_pool(L->o, a->pool, Nq, s->ctx, NULL, a->tmp, s->xa[3], a->lin_tmp, drop, site_lora(L->o));
    a->flops_fwd += linear_forward_flops(L->o, Nq);
    add_dropped(a, x_out, s->x, a->tmp, (size_t)Nq * D, drop, site_res, c->dropout_rate);
}

// What a sublayer's backward must produce.
typedef struct {
    int need_dx;      // the residual gradient must continue below this sublayer
    int need_dkv;     // cross attention: gradient of the encoder output (into a->dE)
    lb_real *dbias;   // [H, Tq, Tk] to accumulate the relative bias gradient, or NULL
} bwd_need_t;

// 1 when the backward of l reads its input (a weight or LoRA-A gradient).
static int needs_x(const linear_t *l) {
    return l && (l->W->g || (l->r > 0 && l->dA));
}

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
    // the normed input is not kept: rebuild it when a weight gradient needs it
    if (needs_x(L->q) || (!cross && (needs_x(L->k) || needs_x(L->v))))
        rms_apply_p(a->pool, Nq, D, s->x, L->ln->w, s->inv, s->h);
    // do = drop_bwd(dres)
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        memcpy(a->tmp, dres, sizeof(lb_real) * (size_t)Nq * D);
        lb_dropout_apply_par(a->pool, a->tmp, (size_t)Nq * D, drop, site_res, c->dropout_rate);
        dout = a->tmp;
    }
    linear_backward_pool(L->o, a->pool, Nq, s->ctx, s->xa[3], dout, need_dctx ? a->dctx : NULL, 0, a->lin_tmp,
                    drop, site_lora(L->o));
    a->flops_bwd += linear_backward_flops(L->o, Nq, need_dctx);
    if (!need_dctx) return;
    attn_core_backward_p(a->pool, sh, s->q, s->k, s->v, s->P, a->pd, a->dsc, a->dctx, need_dq ? a->dq : NULL,
                       need_dk ? a->dk : NULL, need_dv ? a->dv : NULL, nd->dbias, drop);
    // dv = Pᵀ·dctx, dP = dctx·vᵀ (for any of dq, dk, dbias), dq = dS·k, dk = dSᵀ·q
    a->flops_bwd += attn_core_flops(sh) * (need_dv + (need_dq || need_dk || nd->dbias) + need_dq + need_dk);
    // input gradients: self attention sums q, k, v into dh; cross sends k, v to dE
    lb_real *dkv = cross ? (nd->need_dkv ? a->dE : NULL) : (need_dh ? a->dh : NULL);
    int dh_started = 0;
    if (need_dq) {
        linear_backward_pool(L->q, a->pool, Nq, s->h, s->xa[0], a->dq, need_dh ? a->dh : NULL, 0, a->lin_tmp,
                        drop, site_lora(L->q));
        a->flops_bwd += linear_backward_flops(L->q, Nq, need_dh);
        dh_started = need_dh;
    }
    if (need_dk) {
        linear_backward_pool(L->k, a->pool, Nk, kv, s->xa[1], a->dk, dkv, cross ? 1 : dh_started, a->lin_tmp,
                        drop, site_lora(L->k));
        a->flops_bwd += linear_backward_flops(L->k, Nk, dkv != NULL);
    }
    if (need_dk && !cross && need_dh) dh_started = 1;
    if (need_dv) {
        linear_backward_pool(L->v, a->pool, Nk, kv, s->xa[2], a->dv, dkv, cross ? 1 : dh_started, a->lin_tmp,
                        drop, site_lora(L->v));
        a->flops_bwd += linear_backward_flops(L->v, Nk, dkv != NULL);
    }
    if (need_dh)
        rms_backward_p(a->pool, Nq, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, nd->need_dx ? dres : NULL);
}

static void ff_forward(const t5_model_t *m, const t5_ff_t *L, ff_saved_t *s, t5_acts_t *a, int N,
                       lb_real *x_out, const lb_drop_t *drop, uint64_t site_in, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, F = c->d_ff;
    rms_forward_p(a->pool, N, D, s->x, L->ln->w, c->layer_norm_epsilon, s->inv, s->h);
    const linear_t *wa = c->gated ? L->wi_0 : L->wi;
    linear_forward_pool(wa, a->pool, N, s->h, NULL, s->a, s->xa[0], a->lin_tmp, drop, site_lora(wa));
    a->flops_fwd += linear_forward_flops(wa, N);
    if (c->gated) {
        linear_forward_pool(L->wi_1, a->pool, N, s->h, NULL, s->b, s->xa[1], a->lin_tmp, drop, site_lora(L->wi_1));
        a->flops_fwd += linear_forward_flops(L->wi_1, N);
    }
    act_forward_p(a->pool, c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, s->gd);
    if (lb_drop_on(drop, c->dropout_rate)) lb_dropout_apply_par(a->pool, s->gd, (size_t)N * F, drop, site_in, c->dropout_rate);
    linear_forward_pool(L->wo, a->pool, N, s->gd, NULL, a->tmp, s->xa[2], a->lin_tmp, drop, site_lora(L->wo));
    a->flops_fwd += linear_forward_flops(L->wo, N);
    add_dropped(a, x_out, s->x, a->tmp, (size_t)N * D, drop, site_res, c->dropout_rate);
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
    if (needs_x(wa) || (c->gated && needs_x(L->wi_1)))  // not kept: rebuilt (see ff_forward)
        rms_apply_p(a->pool, N, D, s->x, L->ln->w, s->inv, s->h);
    if (needs_x(L->wo)) {  // the input of wo, not kept either
        act_forward_p(a->pool, c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, s->gd);
        if (lb_drop_on(drop, c->dropout_rate))
            lb_dropout_apply_par(a->pool, s->gd, (size_t)N * F, drop, site_in, c->dropout_rate);
    }
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        memcpy(a->tmp, dres, sizeof(lb_real) * (size_t)N * D);
        lb_dropout_apply_par(a->pool, a->tmp, (size_t)N * D, drop, site_res, c->dropout_rate);
        dout = a->tmp;
    }
    linear_backward_pool(L->wo, a->pool, N, s->gd, s->xa[2], dout, need_dg ? a->da : NULL, 0, a->lin_tmp, drop,
                    site_lora(L->wo));
    a->flops_bwd += linear_backward_flops(L->wo, N, need_dg);
    if (!need_dg) return;
    if (lb_drop_on(drop, c->dropout_rate)) lb_dropout_apply_par(a->pool, a->da, (size_t)N * F, drop, site_in, c->dropout_rate);
    act_backward_p(a->pool, c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, a->da, a->da, a->db);
    linear_backward_pool(wa, a->pool, N, s->h, s->xa[0], a->da, need_dh ? a->dh : NULL, 0, a->lin_tmp, drop,
                    site_lora(wa));
    a->flops_bwd += linear_backward_flops(wa, N, need_dh);
    if (c->gated) {
        linear_backward_pool(L->wi_1, a->pool, N, s->h, s->xa[1], a->db, need_dh ? a->dh : NULL, 1, a->lin_tmp,
                        drop, site_lora(L->wi_1));
        a->flops_bwd += linear_backward_flops(L->wi_1, N, need_dh);
    }
    if (need_dh) rms_backward_p(a->pool, N, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, need_dx ? dres : NULL);
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

int t5_encoder_frozen(const t5_model_t *m) {
    if (m->shared->g || m->enc_ln->g || m->enc_rel->g) return 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        if (attn_trainable(&m->enc[l].self) || ff_trainable(&m->enc[l].ff)) return 0;
    return 1;
}

// 1 when no parameter or adapter of m has a gradient (evaluation, forward-only runs).
static int model_frozen(const t5_model_t *m) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].g) return 0;
    for (int i = 0; i < m->n_lin; i++)
        if (linear_trainable(&m->lin[i])) return 0;
    return 1;
}

// Checks that the batch fits the arena and the model as the arena was made for it.
static int check_fit(const t5_model_t *m, const t5_acts_t *a, int B, int S, int T, lb_err_t *err) {
    if (B <= 0 || S <= 0 || T <= 0 || B > a->Bc || S > a->Sc || T > a->Tc)
        return lb_err_set(err, LB_EARG, "batch of shape B=%d S=%d T=%d does not fit the activations made for B=%d S=%d T=%d",
                          B, S, T, a->Bc, a->Sc, a->Tc);
    for (int i = 0; i < m->n_lin && i < a->n_lin; i++)
        if (m->lin[i].r > a->lin_r[i])
            return lb_err_set(err, LB_EARG, "the adapter on %s was attached after the activations were made; call t5_acts_new again",
                              m->lin[i].name);
    if ((a->enc_shared && !t5_encoder_frozen(m)) || (a->dec_shared && !model_frozen(m)))
        return lb_err_set(err, LB_EARG, "parameters became trainable after the activations were made (without room to keep them); call t5_acts_new again");
    return 0;
}

static int copy_enc_ids(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt, lb_err_t *err) {
    int S = bt->S, V = m->cfg.vocab_size;
    for (int i = 0; i < bt->B * S; i++) {
        if (bt->input_ids[i] < 0 || bt->input_ids[i] >= V)
            return lb_err_set(err, LB_EARG, "input_ids[%d][%d] = %d is outside the vocabulary [0, %d)",
                              i / S, i % S, bt->input_ids[i], V);
        a->enc_ids[i] = bt->input_ids[i];
        a->enc_mask[i] = bt->attention_mask ? bt->attention_mask[i] != 0 : 1;
    }
    return 0;
}

static int copy_dec_ids(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt, lb_err_t *err) {
    const t5_config_t *c = &m->cfg;
    int T = bt->T, V = c->vocab_size;
    for (int i = 0; i < bt->B * T; i++) {
        int32_t l = bt->labels[i];
        if (l != -100 && (l < 0 || l >= V))
            return lb_err_set(err, LB_EARG, "labels[%d][%d] = %d is neither -100 nor inside the vocabulary [0, %d)",
                              i / T, i % T, l, V);
        a->labels[i] = l;
        // decoder input: labels shifted right, decoder_start first, -100 → pad
        int32_t prev = i % T == 0 ? c->decoder_start_token_id : bt->labels[i - 1];
        a->dec_ids[i] = prev == -100 ? c->pad_token_id : prev;
    }
    return 0;
}

// Encoder of the ids in the arena: a->enc_out (after the final norm) and a->enc_E (the
// decoder's view of it, dropped).
static void encoder_run(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop) {
    const t5_config_t *c = &m->cfg;
    int B = a->B, S = a->S, D = c->d_model, H = c->num_heads, Le = c->num_layers, Ne = B * S;
    float p = c->dropout_rate;
    embed_forward(Ne, D, a->enc_ids, m->shared->w, a->es[0].x);
    if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->es[0].x, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p);
    fill_bias(m->enc_rel, H, S, S, 1, c->relative_attention_num_buckets,
              c->relative_attention_max_distance, a->bkt_enc, a->bias_enc);
    for (int l = 0; l < Le; l++) {
        attn_shape_t sh = {B, H, c->d_kv, S, S, a->bias_enc, a->enc_mask, 0, p, site_of(0, l, SITE_SELF_P)};
        attn_forward(m, &m->enc[l].self, &a->es[l], a, &sh, NULL, a->ef[l].x, drop, site_of(0, l, SITE_SELF_RES));
        ff_forward(m, &m->enc[l].ff, &a->ef[l], a, Ne, l + 1 < Le ? a->es[l + 1].x : a->enc_xf, drop,
                   site_of(0, l, SITE_FF_IN), site_of(0, l, SITE_FF_RES));
    }
    rms_forward_p(a->pool, Ne, D, a->enc_xf, m->enc_ln->w, c->layer_norm_epsilon, a->enc_invf, a->enc_out);
    memcpy(a->enc_E, a->enc_out, sizeof(lb_real) * (size_t)Ne * D);
    if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->enc_E, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p);
}

// Decoder on a->enc_E, head and loss.
static void decoder_run(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop, float *loss) {
    const t5_config_t *c = &m->cfg;
    int B = a->B, S = a->S, T = a->T, D = c->d_model, H = c->num_heads, V = c->vocab_size;
    int Ld = c->num_decoder_layers, Nd = B * T;
    float p = c->dropout_rate;
    embed_forward(Nd, D, a->dec_ids, m->shared->w, a->ds[0].x);
    if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->ds[0].x, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p);
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
    rms_forward_p(a->pool, Nd, D, a->dec_xf, m->dec_ln->w, c->layer_norm_epsilon, a->dec_invf, a->dec_hs);
    if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->dec_hs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p);
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dec_hs[i] *= sc;
    }
    linear_forward_pool(m->head, a->pool, Nd, a->dec_hs, NULL, a->logits, a->head_xa, a->lin_tmp, drop, site_lora(m->head));
    a->flops_fwd += linear_forward_flops(m->head, Nd);
    double sum = xent_forward_p(a->pool, Nd, V, a->logits, a->labels, &a->n_tok, a->row_loss);
    a->loss = a->n_tok ? (float)(sum / a->n_tok) : 0.0f;
    if (loss) *loss = a->loss;
}

int t5_forward(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt, const lb_drop_t *drop,
               float *loss, lb_err_t *err) {
    if (check_fit(m, a, bt->B, bt->S, bt->T, err) || copy_enc_ids(m, a, bt, err) || copy_dec_ids(m, a, bt, err))
        return -1;
    a->B = bt->B; a->S = bt->S; a->T = bt->T;
    a->flops_fwd = 0;
    encoder_run(m, a, drop);
    decoder_run(m, a, drop, loss);
    return 0;
}

int t5_forward_encoder(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt, lb_real *enc_out,
                       lb_err_t *err) {
    if (check_fit(m, a, bt->B, bt->S, 1, err) || copy_enc_ids(m, a, bt, err)) return -1;
    a->B = bt->B; a->S = bt->S; a->T = 0;  // no decoder state: t5_backward does nothing
    a->flops_fwd = 0;
    encoder_run(m, a, NULL);
    if (enc_out) memcpy(enc_out, a->enc_out, sizeof(lb_real) * (size_t)bt->B * bt->S * m->cfg.d_model);
    return 0;
}

int t5_forward_with_encoder(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *bt,
                            const lb_real *enc_out, const lb_drop_t *drop, float *loss, lb_err_t *err) {
    if (!t5_encoder_frozen(m))
        return lb_err_set(err, LB_EARG, "the encoder has trainable parameters, so its output cannot be reused; use t5_forward");
    if (check_fit(m, a, bt->B, bt->S, bt->T, err) || copy_enc_ids(m, a, bt, err) || copy_dec_ids(m, a, bt, err))
        return -1;
    a->B = bt->B; a->S = bt->S; a->T = bt->T;
    a->flops_fwd = 0;
    size_t n = (size_t)bt->B * bt->S * m->cfg.d_model;
    memcpy(a->enc_out, enc_out, sizeof(lb_real) * n);
    memcpy(a->enc_E, enc_out, sizeof(lb_real) * n);
    decoder_run(m, a, drop, loss);
    return 0;
}

void t5_backward(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop, float loss_scale) {
    const t5_config_t *c = &m->cfg;
    int B = a->B, S = a->S, T = a->T, D = c->d_model, H = c->num_heads, V = c->vocab_size;
    int Ne = B * S, Nd = B * T, Le = c->num_layers, Ld = c->num_decoder_layers;
    float p = c->dropout_rate;
    a->flops_bwd = 0;
    if (T == 0) return;  // the last forward was t5_forward_encoder
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
    xent_backward_p(a->pool, Nd, V, a->logits, a->labels, a->n_tok ? (lb_real)(loss_scale / a->n_tok) : 0);
    linear_backward_pool(m->head, a->pool, Nd, a->dec_hs, a->head_xa, a->logits, dec_any ? a->dhs : NULL, 0,
                    a->lin_tmp, drop, site_lora(m->head));
    a->flops_bwd += linear_backward_flops(m->head, Nd, dec_any);
    if (!dec_any) goto done;
    // decoder final norm (scale, dropout)
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dhs[i] *= sc;
    }
    if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->dhs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p);
    memset(a->dres, 0, sizeof(lb_real) * (size_t)Nd * D);
    rms_backward_p(a->pool, Nd, D, a->dec_xf, m->dec_ln->w, a->dec_invf, a->dhs, m->dec_ln->g,
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
        if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->dres, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p);
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
        if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->dE, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p);
        memset(a->dres_enc, 0, sizeof(lb_real) * (size_t)Ne * D);
        rms_backward_p(a->pool, Ne, D, a->enc_xf, m->enc_ln->w, a->enc_invf, a->dE, m->enc_ln->g,
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
            if (lb_drop_on(drop, p)) lb_dropout_apply_par(a->pool, a->dres_enc, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p);
            embed_backward(Ne, D, a->enc_ids, a->dres_enc, m->shared->g);
        }
        free(enc_below);
    }
done:
    free(dec_below);
}
