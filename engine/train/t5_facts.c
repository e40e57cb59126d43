// Model facts: see t5_facts.h.
#include "t5_facts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora_t5.h"

// A table model (no values) with the method applied as a run applies it.
typedef struct {
    t5_model_t m;
    train_params_t tp;
} plan_t;

static void plan_free(plan_t *p) {
    train_params_free(&p->tp);
    t5_free(&p->m);
}

static int plan_make(plan_t *p, const t5_config_t *cfg, const train_method_opts_t *o, lb_err_t *err) {
    memset(p, 0, sizeof *p);
    if (t5_init_table(&p->m, cfg, err)) return -1;
    if (o->method != TRAIN_METHOD_LORA) {
        if (train_params_setup(&p->tp, &p->m, o, err)) return plan_free(p), -1;
        return 0;
    }
    // train_params_setup's LoRA path without lora_init (values need weights; the counts,
    // ranks and what is attached where do not)
    lora_shape_t shape;
    lora_shape_from_t5(&p->m.cfg, &shape);
    lora_adapter_t ad;
    if (lora_create(&ad, &o->lora, &shape, err)) return plan_free(p), -1;
    if (train_params_adopt_lora(&p->tp, &p->m, &ad, err)) return plan_free(p), -1;
    return 0;
}

int t5_facts_params(const t5_config_t *cfg, const train_method_opts_t *o, t5_facts_params_t *out,
                    lb_err_t *err) {
    memset(out, 0, sizeof *out);
    plan_t p;
    if (plan_make(&p, cfg, o, err)) return -1;
    out->base = t5_count_params(&p.m);
    out->trainable = p.tp.n;
    out->total = out->base + (p.tp.has_lora ? p.tp.n : 0);  // PEFT counts the adapter too
    if (p.tp.has_lora) {
        out->modules = p.tp.lora.n;
        const lora_module_t *f = &p.tp.lora.m[0];
        snprintf(out->first_name, sizeof out->first_name, "%s", f->name);
        out->first_in = f->in;
        out->first_out = f->out;
        out->first_r = f->r;
    } else {
        for (int i = 0; i < p.m.n_params; i++) out->tensors += p.m.params[i].trainable;
    }
    plan_free(&p);
    return 0;
}

// ---- FLOPs: t5_forward and t5_backward's counting, step for step --------------------------
// The same rules as engine/model/t5.c (attn_backward, ff_backward, t5_backward) decide
// which products run; each linear's count is linear_forward_flops / linear_backward_flops.

static double core_flops(int B, int H, int K, int Tq, int Tk) { return 2.0 * B * H * Tq * Tk * K; }

static int attn_trainable(const t5_attn_t *L) {
    return L->ln->g || linear_trainable(L->q) || linear_trainable(L->k) || linear_trainable(L->v) ||
           linear_trainable(L->o);
}

static int ff_trainable(const t5_ff_t *F) {
    return F->ln->g || (F->wi && linear_trainable(F->wi)) || (F->wi_0 && linear_trainable(F->wi_0)) ||
           (F->wi_1 && linear_trainable(F->wi_1)) || linear_trainable(F->wo);
}

static double attn_fwd(const t5_model_t *m, const t5_attn_t *L, int B, int Tq, int Tk) {
    const t5_config_t *c = &m->cfg;
    return linear_forward_flops(L->q, B * Tq) + linear_forward_flops(L->k, B * Tk) +
           linear_forward_flops(L->v, B * Tk) + 2 * core_flops(B, c->num_heads, c->d_kv, Tq, Tk) +
           linear_forward_flops(L->o, B * Tq);
}

static double ff_fwd(const t5_model_t *m, const t5_ff_t *L, int N) {
    double f = linear_forward_flops(m->cfg.gated ? L->wi_0 : L->wi, N) + linear_forward_flops(L->wo, N);
    if (m->cfg.gated) f += linear_forward_flops(L->wi_1, N);
    return f;
}

static double attn_bwd(const t5_model_t *m, const t5_attn_t *L, int B, int Tq, int Tk, int cross,
                       int need_dx, int need_dkv, int dbias) {
    int Nq = B * Tq, Nk = B * Tk;
    int need_dh = need_dx || L->ln->g != NULL;
    int need_dq = need_dh || linear_trainable(L->q);
    int need_dk = linear_trainable(L->k) || (cross ? need_dkv : need_dh);
    int need_dv = linear_trainable(L->v) || (cross ? need_dkv : need_dh);
    int need_dctx = need_dq || need_dk || need_dv || dbias;
    if (!need_dctx && !linear_trainable(L->o)) return 0;
    double f = linear_backward_flops(L->o, Nq, need_dctx);
    if (!need_dctx) return f;
    f += core_flops(B, m->cfg.num_heads, m->cfg.d_kv, Tq, Tk) *
         (need_dv + (need_dq || need_dk || dbias) + need_dq + need_dk);
    int has_dkv = cross ? need_dkv : need_dh;
    if (need_dq) f += linear_backward_flops(L->q, Nq, need_dh);
    if (need_dk) f += linear_backward_flops(L->k, Nk, has_dkv);
    if (need_dv) f += linear_backward_flops(L->v, Nk, has_dkv);
    return f;
}

static double ff_bwd(const t5_model_t *m, const t5_ff_t *L, int N, int need_dx) {
    int gated = m->cfg.gated;
    const linear_t *wa = gated ? L->wi_0 : L->wi;
    int need_dh = need_dx || L->ln->g != NULL;
    int need_dg = need_dh || linear_trainable(wa) || (gated && linear_trainable(L->wi_1));
    if (!need_dg && !linear_trainable(L->wo)) return 0;
    double f = linear_backward_flops(L->wo, N, need_dg);
    if (!need_dg) return f;
    f += linear_backward_flops(wa, N, need_dh);
    if (gated) f += linear_backward_flops(L->wi_1, N, need_dh);
    return f;
}

static double model_fwd(const t5_model_t *m, int B, int S, int T) {
    double f = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        f += attn_fwd(m, &m->enc[l].self, B, S, S) + ff_fwd(m, &m->enc[l].ff, B * S);
    for (int l = 0; l < m->cfg.num_decoder_layers; l++)
        f += attn_fwd(m, &m->dec[l].self, B, T, T) + attn_fwd(m, &m->dec[l].cross, B, T, S) +
             ff_fwd(m, &m->dec[l].ff, B * T);
    return f + linear_forward_flops(m->head, B * T);
}

static double model_bwd(const t5_model_t *m, int B, int S, int T) {
    int Le = m->cfg.num_layers, Ld = m->cfg.num_decoder_layers, Ne = B * S, Nd = B * T;
    int shared_t = m->shared->g != NULL;
    int enc_any = shared_t || m->enc_ln->g || m->enc_rel->g;
    for (int l = 0; l < Le && !enc_any; l++) enc_any = attn_trainable(&m->enc[l].self) || ff_trainable(&m->enc[l].ff);
    // dec_below[k]: something below decoder sublayer position k needs the residual gradient
    int np = 1 + 3 * Ld;
    char *dec_below = xcalloc((size_t)np + 1, 1);
    int any = shared_t || m->dec_rel->g != NULL;
    dec_below[1] = (char)shared_t;
    for (int l = 0; l < Ld; l++) {
        any |= attn_trainable(&m->dec[l].self);
        dec_below[2 + 3 * l] = (char)any;
        any |= attn_trainable(&m->dec[l].cross) || enc_any;
        dec_below[3 + 3 * l] = (char)any;
        any |= ff_trainable(&m->dec[l].ff);
        dec_below[4 + 3 * l > np ? np : 4 + 3 * l] = (char)any;
    }
    int dec_any = any || m->dec_ln->g;
    double f = linear_backward_flops(m->head, Nd, dec_any);
    if (!dec_any || !dec_below[np]) goto done;
    for (int l = Ld - 1; l >= 0; l--) {
        f += ff_bwd(m, &m->dec[l].ff, Nd, dec_below[3 + 3 * l]);
        if (!dec_below[3 + 3 * l]) break;
        f += attn_bwd(m, &m->dec[l].cross, B, T, S, 1, dec_below[2 + 3 * l], enc_any, 0);
        if (!dec_below[2 + 3 * l]) break;
        f += attn_bwd(m, &m->dec[l].self, B, T, T, 0, dec_below[1 + 3 * l], 0, m->dec_rel->g != NULL);
        if (!dec_below[1 + 3 * l]) break;
    }
    if (!enc_any) goto done;
    {
        int *enc_below = xcalloc((size_t)(2 * Le + 2), sizeof(int));
        int e = shared_t;
        for (int l = 0; l < Le; l++) {
            enc_below[1 + 2 * l] = e;
            e |= attn_trainable(&m->enc[l].self) || m->enc_rel->g;
            enc_below[2 + 2 * l] = e;
            e |= ff_trainable(&m->enc[l].ff);
        }
        enc_below[1 + 2 * Le] = e;
        for (int l = Le - 1; l >= 0 && enc_below[1 + 2 * Le]; l--) {
            f += ff_bwd(m, &m->enc[l].ff, Ne, enc_below[2 + 2 * l]);
            if (!enc_below[2 + 2 * l]) break;
            f += attn_bwd(m, &m->enc[l].self, B, S, S, 0, enc_below[1 + 2 * l], 0, m->enc_rel->g != NULL);
            if (!enc_below[1 + 2 * l]) break;
        }
        free(enc_below);
    }
done:
    free(dec_below);
    return f;
}

static int check_bst(int B, int S, int T, lb_err_t *err) {
    if (B < 1 || S < 1 || T < 1)
        return lb_err_set(err, LB_EARG, "batch %d with %d source and %d target tokens: each must be at least 1", B, S, T);
    return 0;
}

int t5_facts_flops(const t5_config_t *cfg, const train_method_opts_t *o, int B, int S, int T,
                   t5_facts_flops_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    if (check_bst(B, S, T, err)) return -1;
    plan_t p;
    if (plan_make(&p, cfg, o, err)) return -1;
    out->forward = model_fwd(&p.m, B, S, T);
    out->backward = model_bwd(&p.m, B, S, T);
    plan_free(&p);
    return 0;
}

int t5_facts_memory(const t5_config_t *cfg, const train_method_opts_t *o, int B, int S, int T,
                    int frozen_bf16, t5_precision_t precision, t5_facts_memory_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    if (check_bst(B, S, T, err)) return -1;
    plan_t p;
    if (plan_make(&p, cfg, o, err)) return -1;
    int bf16 = t5_precision_is_bf16(precision);
    // precision bf16 holds the frozen weights in bf16 whatever frozen_bf16 says (t5_use_bf16)
    out->weights = frozen_bf16 || bf16 ? t5_weight_bytes_if_bf16(&p.m, &out->weights_bf16)
                                       : t5_weight_bytes(&p.m, &out->weights_bf16);
    out->adapter = p.tp.has_lora ? p.tp.n * sizeof(float) : 0;
    out->grads = p.tp.n * sizeof(lb_real);
    out->packings = bf16 ? t5_bf16_packing_bytes(&p.m) : 0;
    p.m.bf16 = bf16;  // the arena's layout reads only this
    // adamw_init: m and v (m in bf16 where train_init keeps it so)
    out->optimizer = p.tp.n * (sizeof(float) + (train_keeps_m_bf16(p.tp.method, p.m.bf16) ? 2 : sizeof(float)));
    out->acts = t5_acts_size(&p.m, B, S, T);
    out->total = out->weights + out->adapter + out->grads + out->optimizer + out->acts + out->packings;
    plan_free(&p);
    return 0;
}
