// T5 forward and backward, top to bottom: sublayers (attention, feed forward), then the
// whole model (encoder, decoder, head and loss). Each *_forward sits beside its
// *_backward; gradients are named d<name>. Shapes use the letters of ARCHITECTURE.md. The
// parameters are in t5_params.c, the arena in t5_acts.c, the kernels in kernels/t5_ops.c.
#include "t5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include "prof.h"
#include "t5_internal.h"
#ifndef LB_REAL_DOUBLE
#include "gemm_bf16.h"
#endif

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

// Rows of the head's backward per block in bf16 (t5_backward).
#define HEAD_BWD_ROWS 128

// ---------------------------------------------------------------------------------------
// Sublayers

// x_out = x + drop(o), one pass (t5_ops: drop_add_p).
static void add_dropped(t5_acts_t *a, lb_real *x_out, const lb_real *x, const lb_real *o, size_t n,
                        const lb_drop_t *drop, uint64_t site, float p) {
    drop_add_p(a->pool, x_out, x, o, n, drop, site, p);
}

// x16 (the arena's room for a bf16 copy of l's input) when l runs its forward in bf16,
// else NULL (or always, in the double build).
static uint16_t *bf16_room(const linear_t *l, uint16_t *x16) {
#ifdef LB_REAL_DOUBLE
    (void)l, (void)x16;
    return NULL;
#else
    return x16 && (l->bf16 & LINEAR_BF16_FWD) && l->w_bf16 ? x16 : NULL;
#endif
}

// x16 (room for a bf16 copy of l's input) when l's weight gradient runs in bf16, else NULL.
static uint16_t *dw16_room(const linear_t *l, uint16_t *x16) {
#ifdef LB_REAL_DOUBLE
    (void)l, (void)x16;
    return NULL;
#else
    return l && x16 && (l->bf16 & LINEAR_BF16_DW) && l->W->g ? x16 : NULL;
#endif
}

// x16 when any of the layers that read one input (NULL: none) has its weight gradient in bf16.
static uint16_t *dw16_room_any(uint16_t *x16, const linear_t *l1, const linear_t *l2, const linear_t *l3) {
    return dw16_room(l1, x16) || dw16_room(l2, x16) || dw16_room(l3, x16) ? x16 : NULL;
}

// x [N, I] rounded to bf16 once into x16 (the arena's h16 or E16) for the bf16 products
// that share it (linear_forward_pool's x16): the rounding each would do, done once, so the
// results are the same bit for bit. NULL (each product converts for itself, or runs in
// fp32) when the arena has no bf16 room or l has no bf16 forward.
static const uint16_t *bf16_shared(t5_acts_t *a, const linear_t *l, int N, const lb_real *x, uint16_t *x16) {
    uint16_t *room = bf16_room(l, x16);
#ifndef LB_REAL_DOUBLE
    if (room) LB_PROF(PROF_LINEAR_FWD, lb_bf16_from_f32(a->pool, x, (size_t)N * l->in, room));
#else
    (void)a, (void)N, (void)x;
#endif
    return room;
}

// A sublayer's norm: h = norm(x), and in precision bf16 in the same pass h rounded for
// the products that read it (h16, when l takes it: bf16_room) and x kept rounded as x16
// for the backward (x is the stack's working buffer, which the residual add overwrites in
// place). Returns h16 or NULL.
static const uint16_t *norm_forward(t5_acts_t *a, const t5_config_t *c, const lb_param_t *ln, int N,
                                    const lb_real *x, lb_real *inv, lb_real *h, const linear_t *l, uint16_t *h16,
                                    uint16_t *x16) {
    uint16_t *room = bf16_room(l, h16);
#ifdef LB_REAL_DOUBLE
    x16 = NULL;
#endif
    LB_PROF(PROF_NORM, rms_forward16_p(a->pool, N, c->d_model, x, ln->w, c->layer_norm_epsilon, inv, h, room, x16));
    return room;
}

// The backward's x of a sublayer that kept it in bf16: widened into the working buffer.
static void widen_x16(t5_acts_t *a, const uint16_t *x16, lb_real *x, size_t n) {
    if (x16) LB_PROF(PROF_NORM, bf16_to_real_p(a->pool, x16, n, x));
}

// The per-thread scratch of the attention core: one slice of Tq·Tk scores a thread, or
// what the core needs when it keeps P, q, k, v in bf16 (kept16).
static lb_real *attn_pd(t5_acts_t *a, const attn_shape_t *sh, int kept16) {
    return t5_acts_pd(a, sh->B * sh->H, kept16 ? attn_core_pd16(sh) : (size_t)sh->Tq * sh->Tk);
}

// x_out [B·Tq, D] = x + drop(o(attention(norm(x), kv))). kv NULL: self attention, else
// kv16 is kv in bf16 (or NULL: converted by the products that read it).
static void attn_forward(const t5_model_t *m, const t5_attn_t *L, attn_saved_t *s, t5_acts_t *a,
                         const attn_shape_t *sh, const lb_real *kv, const uint16_t *kv16,
                         lb_real *x_out, const lb_drop_t *drop, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, Nq = sh->B * sh->Tq, Nk = sh->B * sh->Tk;
    // q, k and v of self attention read one input: in bf16 it is rounded once, by the norm
    const uint16_t *h16 = norm_forward(a, c, L->ln, Nq, s->x, s->inv, s->h, L->q, a->h16, s->x16);
    if (!kv) {
        kv = s->h;
        kv16 = h16;
    }
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->q, a->pool, Nq, s->h, h16, s->q, s->xa[0], a->lin_tmp, drop, site_lora(L->q)));
    a->flops_fwd += linear_forward_flops(L->q, Nq);
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->k, a->pool, Nk, kv, kv16, s->k, s->xa[1], a->lin_tmp, drop, site_lora(L->k)));
    a->flops_fwd += linear_forward_flops(L->k, Nk);
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->v, a->pool, Nk, kv, kv16, s->v, s->xa[2], a->lin_tmp, drop, site_lora(L->v)));
    a->flops_fwd += linear_forward_flops(L->v, Nk);
    if (s->P16)
        LB_PROF(PROF_ATTN_FWD, attn_core_forward16_p(a->pool, sh, s->q, s->k, s->v, s->P16, attn_pd(a, sh, 1), s->ctx, drop,
                                                     s->q16, s->k16, s->v16));
    else
        LB_PROF(PROF_ATTN_FWD, attn_core_forward_p(a->pool, sh, s->q, s->k, s->v, s->P, attn_pd(a, sh, 0), s->ctx, drop));
    a->flops_fwd += 2 * attn_core_flops(sh);  // q·kᵀ and P·v
    // ctx kept in bf16: rounded once, for o's forward now and its weight gradient later
    const uint16_t *c16 = s->ctx16 ? bf16_shared(a, L->o, Nq, s->ctx, s->ctx16) : NULL;
#ifndef LB_REAL_DOUBLE
    if (s->ctx16 && !c16) LB_PROF(PROF_LINEAR_FWD, lb_bf16_from_f32(a->pool, s->ctx, (size_t)Nq * c->num_heads * c->d_kv, s->ctx16));
#endif
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->o, a->pool, Nq, s->ctx, c16, a->tmp, s->xa[3], a->lin_tmp, drop, site_lora(L->o)));
    a->flops_fwd += linear_forward_flops(L->o, Nq);
    LB_PROF(PROF_DROPOUT, add_dropped(a, x_out, s->x, a->tmp, (size_t)Nq * D, drop, site_res, c->dropout_rate));
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
                          t5_acts_t *a, const attn_shape_t *sh, const lb_real *kv, const uint16_t *kv16,
                          lb_real *dres, const bwd_need_t *nd, const lb_drop_t *drop, uint64_t site_res) {
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
    widen_x16(a, s->x16, s->x, (size_t)Nq * D);
    // the normed input is not kept: rebuild it when a weight gradient needs it, in bf16
    // too when a bf16 weight gradient reads it (q, k and v share it)
    uint16_t *h16 = NULL;
    if (needs_x(L->q) || (!cross && (needs_x(L->k) || needs_x(L->v)))) {
        h16 = cross ? dw16_room(L->q, a->h16) : dw16_room_any(a->h16, L->q, L->k, L->v);
        LB_PROF(PROF_NORM, rms_apply16_p(a->pool, Nq, D, s->x, L->ln->w, s->inv, s->h, h16));
    }
    if (!cross) kv16 = h16;
    // do = drop_bwd(dres)
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        LB_PROF(PROF_DROPOUT, drop_copy_p(a->pool, a->tmp, dres, (size_t)Nq * D, drop, site_res, c->dropout_rate));
        dout = a->tmp;
    }
    // ctx kept in bf16: a bf16 weight gradient reads it as it is; else widened into dq (free
    // until the attention core's backward)
    const lb_real *ctx = s->ctx;
    if (s->ctx16 && dw16_room(L->o, s->ctx16)) {
        ctx = NULL;
    } else if (s->ctx16 && needs_x(L->o)) {
        LB_PROF(PROF_LINEAR_BWD, bf16_to_real_p(a->pool, s->ctx16, (size_t)Nq * c->num_heads * c->d_kv, a->dq));
        ctx = a->dq;
    }
    LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(L->o, a->pool, Nq, ctx, s->ctx16, s->xa[3], dout, need_dctx ? a->dctx : NULL, 0,
                                                    a->lin_tmp, drop, site_lora(L->o)));
    a->flops_bwd += linear_backward_flops(L->o, Nq, need_dctx);
    if (!need_dctx) return;
    if (s->P16)
        LB_PROF(PROF_ATTN_BWD, attn_core_backward16_p(a->pool, sh, s->q16, s->k16, s->v16, s->P16, attn_pd(a, sh, 1), a->dsc, a->dctx,
                           need_dq ? a->dq : NULL, need_dk ? a->dk : NULL, need_dv ? a->dv : NULL, nd->dbias, drop));
    else
        LB_PROF(PROF_ATTN_BWD, attn_core_backward_p(a->pool, sh, s->q, s->k, s->v, s->P, attn_pd(a, sh, 0), a->dsc, a->dctx,
                           need_dq ? a->dq : NULL, need_dk ? a->dk : NULL, need_dv ? a->dv : NULL, nd->dbias, drop));
    // dv = Pᵀ·dctx, dP = dctx·vᵀ (for any of dq, dk, dbias), dq = dS·k, dk = dSᵀ·q
    a->flops_bwd += attn_core_flops(sh) * (need_dv + (need_dq || need_dk || nd->dbias) + need_dq + need_dk);
    // input gradients: self attention sums q, k, v into dh; cross sends k, v to dE
    lb_real *dkv = cross ? (nd->need_dkv ? a->dE : NULL) : (need_dh ? a->dh : NULL);
    int dh_started = 0;
    if (need_dq) {
        LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(L->q, a->pool, Nq, s->h, h16, s->xa[0], a->dq, need_dh ? a->dh : NULL, 0,
                                                        a->lin_tmp, drop, site_lora(L->q)));
        a->flops_bwd += linear_backward_flops(L->q, Nq, need_dh);
        dh_started = need_dh;
    }
    if (need_dk) {
        LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(L->k, a->pool, Nk, kv, kv16, s->xa[1], a->dk, dkv, cross ? 1 : dh_started,
                                                        a->lin_tmp, drop, site_lora(L->k)));
        a->flops_bwd += linear_backward_flops(L->k, Nk, dkv != NULL);
    }
    if (need_dk && !cross && need_dh) dh_started = 1;
    if (need_dv) {
        LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(L->v, a->pool, Nk, kv, kv16, s->xa[2], a->dv, dkv, cross ? 1 : dh_started,
                                                        a->lin_tmp, drop, site_lora(L->v)));
        a->flops_bwd += linear_backward_flops(L->v, Nk, dkv != NULL);
    }
    if (need_dh)
        LB_PROF(PROF_NORM, rms_backward_p(a->pool, Nq, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, nd->need_dx ? dres : NULL));
}

static void ff_forward(const t5_model_t *m, const t5_ff_t *L, ff_saved_t *s, t5_acts_t *a, int N,
                       lb_real *x_out, const lb_drop_t *drop, uint64_t site_in, uint64_t site_res) {
    const t5_config_t *c = &m->cfg;
    int D = c->d_model, F = c->d_ff;
    const linear_t *wa = c->gated ? L->wi_0 : L->wi;
    // wi_0 and wi_1 read one input: in bf16 it is rounded once, by the norm
    const uint16_t *h16 = norm_forward(a, c, L->ln, N, s->x, s->inv, s->h, wa, a->h16, s->x16);
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(wa, a->pool, N, s->h, h16, s->a, s->xa[0], a->lin_tmp, drop, site_lora(wa)));
    a->flops_fwd += linear_forward_flops(wa, N);
    if (c->gated) {
        LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->wi_1, a->pool, N, s->h, h16, s->b, s->xa[1], a->lin_tmp, drop, site_lora(L->wi_1)));
        a->flops_fwd += linear_forward_flops(L->wi_1, N);
    }
    // bf16 precision: the pre-activations (in the arena's da, db) kept as a16, b16, rounded
    // in the activation's pass
    if (s->a16)
        LB_PROF(PROF_ACT, act_forward_keep16_p(a->pool, c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, s->gd, drop,
                                               site_in, c->dropout_rate, s->a16, s->b16));
    else
        LB_PROF(PROF_ACT, act_forward_drop_p(a->pool, c->act, (size_t)N * F, s->a, c->gated ? s->b : NULL, s->gd, drop,
                                             site_in, c->dropout_rate));
    LB_PROF(PROF_LINEAR_FWD, linear_forward_pool(L->wo, a->pool, N, s->gd, NULL, a->tmp, s->xa[2], a->lin_tmp, drop, site_lora(L->wo)));
    a->flops_fwd += linear_forward_flops(L->wo, N);
    LB_PROF(PROF_DROPOUT, add_dropped(a, x_out, s->x, a->tmp, (size_t)N * D, drop, site_res, c->dropout_rate));
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
    widen_x16(a, s->x16, s->x, (size_t)N * D);
    uint16_t *h16 = NULL;  // not kept: rebuilt (see ff_forward), in bf16 too as in attn_backward
    if (needs_x(wa) || (c->gated && needs_x(L->wi_1))) {
        h16 = dw16_room_any(a->h16, wa, c->gated ? L->wi_1 : NULL, NULL);
        LB_PROF(PROF_NORM, rms_apply16_p(a->pool, N, D, s->x, L->ln->w, s->inv, s->h, h16));
    }
    const lb_real *fb = c->gated ? s->b : NULL;
    if (needs_x(L->wo)) {  // the input of wo, not kept either (in bf16 precision: from a16, b16)
        if (s->a16)
            LB_PROF(PROF_ACT, act_forward16_drop_p(a->pool, c->act, (size_t)N * F, s->a16, s->b16, s->gd, drop, site_in,
                                                   c->dropout_rate));
        else
            LB_PROF(PROF_ACT, act_forward_drop_p(a->pool, c->act, (size_t)N * F, s->a, fb, s->gd, drop, site_in,
                                                 c->dropout_rate));
    }
    const lb_real *dout = dres;
    if (lb_drop_on(drop, c->dropout_rate)) {
        LB_PROF(PROF_DROPOUT, drop_copy_p(a->pool, a->tmp, dres, (size_t)N * D, drop, site_res, c->dropout_rate));
        dout = a->tmp;
    }
    LB_PROF(PROF_LINEAR_BWD, linear_backward_pool(L->wo, a->pool, N, s->gd, s->xa[2], dout, need_dg ? a->da : NULL, 0, a->lin_tmp, drop,
                    site_lora(L->wo)));
    a->flops_bwd += linear_backward_flops(L->wo, N, need_dg);
    if (!need_dg) return;
    if (s->a16)
        LB_PROF(PROF_ACT, act_backward16_drop_p(a->pool, c->act, (size_t)N * F, s->a16, s->b16, a->da, a->da, a->db, drop,
                                                site_in, c->dropout_rate));
    else
        LB_PROF(PROF_ACT, act_backward_drop_p(a->pool, c->act, (size_t)N * F, s->a, fb, a->da, a->da, a->db, drop, site_in,
                                              c->dropout_rate));
    LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(wa, a->pool, N, s->h, h16, s->xa[0], a->da, need_dh ? a->dh : NULL, 0, a->lin_tmp,
                                                    drop, site_lora(wa)));
    a->flops_bwd += linear_backward_flops(wa, N, need_dh);
    if (c->gated) {
        LB_PROF(PROF_LINEAR_BWD, linear_backward16_pool(L->wi_1, a->pool, N, s->h, h16, s->xa[1], a->db, need_dh ? a->dh : NULL, 1,
                                                        a->lin_tmp, drop, site_lora(L->wi_1)));
        a->flops_bwd += linear_backward_flops(L->wi_1, N, need_dh);
    }
    if (need_dh) LB_PROF(PROF_NORM, rms_backward_p(a->pool, N, D, s->x, L->ln->w, s->inv, a->dh, L->ln->g, need_dx ? dres : NULL));
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
int t5_model_frozen(const t5_model_t *m) {
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
    if ((a->enc_shared && !t5_encoder_frozen(m)) || (a->dec_shared && !t5_model_frozen(m)))
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
    LB_PROF(PROF_EMBED, embed_forward(Ne, D, a->enc_ids, m->shared->w, a->es[0].x));
    if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->es[0].x, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p));
    LB_PROF(PROF_EMBED, fill_bias(m->enc_rel, H, S, S, 1, c->relative_attention_num_buckets,
              c->relative_attention_max_distance, a->bkt_enc, a->bias_enc));
    for (int l = 0; l < Le; l++) {
        attn_shape_t sh = {B, H, c->d_kv, S, S, a->bias_enc, a->enc_mask, 0, p, site_of(0, l, SITE_SELF_P)};
        attn_forward(m, &m->enc[l].self, &a->es[l], a, &sh, NULL, NULL, a->ef[l].x, drop, site_of(0, l, SITE_SELF_RES));
        ff_forward(m, &m->enc[l].ff, &a->ef[l], a, Ne, l + 1 < Le ? a->es[l + 1].x : a->enc_xf, drop,
                   site_of(0, l, SITE_FF_IN), site_of(0, l, SITE_FF_RES));
    }
    LB_PROF(PROF_NORM, rms_forward_p(a->pool, Ne, D, a->enc_xf, m->enc_ln->w, c->layer_norm_epsilon, a->enc_invf, a->enc_out));
    memcpy(a->enc_E, a->enc_out, sizeof(lb_real) * (size_t)Ne * D);
    if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->enc_E, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p));
}

// Decoder on a->enc_E, head and loss.
static void decoder_run(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop, float *loss) {
    const t5_config_t *c = &m->cfg;
    int B = a->B, S = a->S, T = a->T, D = c->d_model, H = c->num_heads, V = c->vocab_size;
    int Ld = c->num_decoder_layers, Nd = B * T;
    float p = c->dropout_rate;
    // every decoder layer's cross k and v read the encoder output: in bf16 it is rounded
    // once per forward (when the first layer's k runs in bf16)
    const uint16_t *E16 = Ld > 0 ? bf16_shared(a, m->dec[0].cross.k, B * S, a->enc_E, a->E16) : NULL;
    LB_PROF(PROF_EMBED, embed_forward(Nd, D, a->dec_ids, m->shared->w, a->ds[0].x));
    if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->ds[0].x, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p));
    LB_PROF(PROF_EMBED, fill_bias(m->dec_rel, H, T, T, 0, c->relative_attention_num_buckets,
              c->relative_attention_max_distance, a->bkt_dec, a->bias_dec));
    for (int l = 0; l < Ld; l++) {
        attn_shape_t sh = {B, H, c->d_kv, T, T, a->bias_dec, NULL, 1, p, site_of(1, l, SITE_SELF_P)};
        attn_forward(m, &m->dec[l].self, &a->ds[l], a, &sh, NULL, NULL, a->dc[l].x, drop, site_of(1, l, SITE_SELF_RES));
        attn_shape_t sc = {B, H, c->d_kv, T, S, NULL, a->enc_mask, 0, p, site_of(1, l, SITE_CROSS_P)};
        attn_forward(m, &m->dec[l].cross, &a->dc[l], a, &sc, a->enc_E, E16, a->df[l].x, drop, site_of(1, l, SITE_CROSS_RES));
        ff_forward(m, &m->dec[l].ff, &a->df[l], a, Nd, l + 1 < Ld ? a->ds[l + 1].x : a->dec_xf, drop,
                   site_of(1, l, SITE_FF_IN), site_of(1, l, SITE_FF_RES));
    }
    LB_PROF(PROF_NORM, rms_forward_p(a->pool, Nd, D, a->dec_xf, m->dec_ln->w, c->layer_norm_epsilon, a->dec_invf, a->dec_hs));
    if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->dec_hs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p));
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dec_hs[i] *= sc;
    }
    LB_PROF(PROF_LINEAR_FWD, LB_PROF(PROF_HEAD, linear_forward_pool(m->head, a->pool, Nd, a->dec_hs, NULL, a->logits, a->head_xa,
                                                                     a->lin_tmp, drop, site_lora(m->head))));
    a->flops_fwd += linear_forward_flops(m->head, Nd);
    double sum;
    LB_PROF(PROF_XENT, sum = xent_forward_p(a->pool, Nd, V, a->logits, a->labels, &a->n_tok, a->row_loss));
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
    LB_PROF(PROF_XENT, xent_backward_p(a->pool, Nd, V, a->logits, a->labels, a->n_tok ? (lb_real)(loss_scale / a->n_tok) : 0));
    // (with bf16 products in blocks of rows: each product rounds its dy to bf16 in a buffer
    // of its size, which for all Nd rows would be half the logits again; a LoRA head's
    // dropout masks count rows from 0, so it takes them whole)
    int rows = m->head->bf16 && m->head->r == 0 ? HEAD_BWD_ROWS : Nd;
    for (int r0 = 0; r0 < Nd; r0 += rows) {
        int n = Nd - r0 < rows ? Nd - r0 : rows;
        LB_PROF(PROF_LINEAR_BWD, LB_PROF(PROF_HEAD, linear_backward_pool(m->head, a->pool, n, a->dec_hs + (size_t)r0 * D, a->head_xa,
                                                                         a->logits + (size_t)r0 * V,
                                                                         dec_any ? a->dhs + (size_t)r0 * D : NULL, 0, a->lin_tmp,
                                                                         drop, site_lora(m->head))));
    }
    a->flops_bwd += linear_backward_flops(m->head, Nd, dec_any);
    if (!dec_any) goto done;
    // decoder final norm (scale, dropout)
    if (c->scale_decoder_outputs) {
        lb_real sc = (lb_real)(1.0 / sqrt((double)D));
        for (size_t i = 0; i < (size_t)Nd * D; i++) a->dhs[i] *= sc;
    }
    if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->dhs, (size_t)Nd * D, drop, site_of(1, 0, SITE_FINAL), p));
    memset(a->dres, 0, sizeof(lb_real) * (size_t)Nd * D);
    LB_PROF(PROF_NORM, rms_backward_p(a->pool, Nd, D, a->dec_xf, m->dec_ln->w, a->dec_invf, a->dhs, m->dec_ln->g,
                 dec_below[np] ? a->dres : NULL));
    if (!dec_below[np]) goto done;
    if (enc_any) memset(a->dE, 0, sizeof(lb_real) * (size_t)Ne * D);
    if (m->dec_rel->g) memset(a->dbias_dec, 0, sizeof(lb_real) * (size_t)H * T * T);
    for (int l = Ld - 1; l >= 0; l--) {
        ff_backward(m, &m->dec[l].ff, &a->df[l], a, Nd, a->dres, dec_below[3 + 3 * l], drop,
                    site_of(1, l, SITE_FF_IN), site_of(1, l, SITE_FF_RES));
        if (!dec_below[3 + 3 * l]) break;
        attn_shape_t sc = {B, H, c->d_kv, T, S, NULL, a->enc_mask, 0, p, site_of(1, l, SITE_CROSS_P)};
        bwd_need_t nc = {dec_below[2 + 3 * l], enc_any, NULL};
        // the encoder output in bf16, as decoder_run rounded it (the same test)
        attn_backward(m, &m->dec[l].cross, &a->dc[l], a, &sc, a->enc_E, bf16_room(m->dec[0].cross.k, a->E16), a->dres,
                      &nc, drop, site_of(1, l, SITE_CROSS_RES));
        if (!dec_below[2 + 3 * l]) break;
        attn_shape_t sh = {B, H, c->d_kv, T, T, a->bias_dec, NULL, 1, p, site_of(1, l, SITE_SELF_P)};
        bwd_need_t ns = {dec_below[1 + 3 * l], 0, m->dec_rel->g ? a->dbias_dec : NULL};
        attn_backward(m, &m->dec[l].self, &a->ds[l], a, &sh, NULL, NULL, a->dres, &ns, drop,
                      site_of(1, l, SITE_SELF_RES));
        if (!dec_below[1 + 3 * l]) break;
    }
    if (m->dec_rel->g) LB_PROF(PROF_EMBED, bias_backward(m->dec_rel, H, T, T, a->bkt_dec, a->dbias_dec));
    if (shared_t) {
        if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->dres, (size_t)Nd * D, drop, site_of(1, 0, SITE_EMBED), p));
        LB_PROF(PROF_EMBED, embed_backward(Nd, D, a->dec_ids, a->dres, m->shared->g));
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
        if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->dE, (size_t)Ne * D, drop, site_of(0, 0, SITE_FINAL), p));
        memset(a->dres_enc, 0, sizeof(lb_real) * (size_t)Ne * D);
        LB_PROF(PROF_NORM, rms_backward_p(a->pool, Ne, D, a->enc_xf, m->enc_ln->w, a->enc_invf, a->dE, m->enc_ln->g,
                     enc_below[1 + 2 * Le] ? a->dres_enc : NULL));
        if (m->enc_rel->g) memset(a->dbias_enc, 0, sizeof(lb_real) * (size_t)H * S * S);
        for (int l = Le - 1; l >= 0 && enc_below[1 + 2 * Le]; l--) {
            a->enc_bwd++;
            ff_backward(m, &m->enc[l].ff, &a->ef[l], a, Ne, a->dres_enc, enc_below[2 + 2 * l], drop,
                        site_of(0, l, SITE_FF_IN), site_of(0, l, SITE_FF_RES));
            if (!enc_below[2 + 2 * l]) break;
            attn_shape_t sh = {B, H, c->d_kv, S, S, a->bias_enc, a->enc_mask, 0, p, site_of(0, l, SITE_SELF_P)};
            bwd_need_t ns = {enc_below[1 + 2 * l], 0, m->enc_rel->g ? a->dbias_enc : NULL};
            attn_backward(m, &m->enc[l].self, &a->es[l], a, &sh, NULL, NULL, a->dres_enc, &ns, drop,
                          site_of(0, l, SITE_SELF_RES));
            if (!enc_below[1 + 2 * l]) break;
        }
        if (m->enc_rel->g) LB_PROF(PROF_EMBED, bias_backward(m->enc_rel, H, S, S, a->bkt_enc, a->dbias_enc));
        if (shared_t) {
            if (lb_drop_on(drop, p)) LB_PROF(PROF_DROPOUT, lb_dropout_apply_par(a->pool, a->dres_enc, (size_t)Ne * D, drop, site_of(0, 0, SITE_EMBED), p));
            LB_PROF(PROF_EMBED, embed_backward(Ne, D, a->enc_ids, a->dres_enc, m->shared->g));
        }
        free(enc_below);
    }
done:
    free(dec_below);
}
