// The activation arena: every buffer of a forward and backward for batches up to (B, S,
// T), laid out in one allocation (see struct t5_acts in t5_internal.h).
#include <stdlib.h>
#include <string.h>

#include "t5_internal.h"

// ---------------------------------------------------------------------------------------
// Activation arena


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

// A feed forward's pre-activations a, b [N, F]: fp32, or with bf16 kept, a16 and b16 (a
// and b are set to the arena's da and db once those exist).
static void ff_ab(ff_saved_t *f, bump_t *bp, size_t N, int F, int gated, int bf16) {
    if (bf16) {
        f->a16 = bump(bp, sizeof(uint16_t) * N * F);
        f->b16 = gated ? bump(bp, sizeof(uint16_t) * N * F) : NULL;
        f->a = f->b = NULL;
        return;
    }
    f->a = BUMP(bp, N * F);
    f->b = gated ? BUMP(bp, N * F) : NULL;
    f->a16 = f->b16 = NULL;
}

// A sublayer's input x [N, D]: its own fp32 buffer, or (kept in bf16) the stack's working
// buffer xw, through which the residual stream flows in place, and x16 for the backward.
static void sub_x(lb_real **x, uint16_t **x16, bump_t *bp, size_t N, int D, int bf16, lb_real *xw) {
    *x = bf16 ? xw : BUMP(bp, N * D);
    *x16 = bf16 ? bump(bp, sizeof(uint16_t) * N * D) : NULL;
}

// Attention's q [Nq, HK], k and v [Nk, HK] and probabilities of n scores: fp32, or kept
// in bf16 (q16, k16, v16, P16; q, k, v are set to the arena's dq, dk, dv once those exist).
static void attn_qkvP(attn_saved_t *s, bump_t *bp, size_t Nq, size_t Nk, int HK, size_t n, int bf16) {
    if (bf16) {
        s->q = s->k = s->v = s->P = NULL;
        s->q16 = bump(bp, sizeof(uint16_t) * Nq * HK);
        s->k16 = bump(bp, sizeof(uint16_t) * Nk * HK);
        s->v16 = bump(bp, sizeof(uint16_t) * Nk * HK);
        s->P16 = bump(bp, sizeof(uint16_t) * n);
        return;
    }
    s->q = BUMP(bp, Nq * HK); s->k = BUMP(bp, Nk * HK); s->v = BUMP(bp, Nk * HK);
    s->P = BUMP(bp, n);
    s->q16 = s->k16 = s->v16 = s->P16 = NULL;
}

// The attention output ctx [n]: fp32, or (bf16, no adapter on o) ctx16, with ctx set to
// the arena's dctx once that exists.
static void attn_ctx(const t5_acts_t *a, attn_saved_t *s, const t5_attn_t *L, bump_t *bp, size_t n, int bf16) {
    int k16 = bf16 && a->lin_r[L->o->id] == 0;
    s->ctx = k16 ? NULL : BUMP(bp, n);
    s->ctx16 = k16 ? bump(bp, sizeof(uint16_t) * n) : NULL;
}

// An attention sublayer that keeps its q, k, v and ctx in bf16 computes them in fp32 into
// the backward's dq, dk, dv and dctx (free during the forward).
static void attn_scratch(t5_acts_t *a, attn_saved_t *s) {
    if (s->q16) s->q = a->dq, s->k = a->dk, s->v = a->dv;
    if (s->ctx16) s->ctx = a->dctx;
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
    a->h16 = m->bf16 ? bump(bp, sizeof(uint16_t) * Nmax * D) : NULL;
    // bf16 precision keeps the feed forward's pre-activations and the attention
    // probabilities in bf16 for the backward (a stack that keeps nothing for a backward
    // keeps them in fp32, unconverted)
#ifdef LB_REAL_DOUBLE
    int ff16 = 0;
#else
    int ff16 = m->bf16;
#endif
    a->E16 = m->bf16 ? bump(bp, sizeof(uint16_t) * Ne * D) : NULL;
    a->xw_enc = ff16 && !a->enc_shared ? BUMP(bp, Ne * D) : NULL;
    a->xw_dec = ff16 && !a->dec_shared ? BUMP(bp, Nd * D) : NULL;
#define XA(l, rows) ((l) && a->lin_r[(l)->id] ? BUMP(bp, (size_t)(rows) * a->lin_r[(l)->id]) : NULL)
    for (int l = 0; l < Le; l++) {
        if (l > 0 && a->enc_shared) {  // nothing is kept for a backward: reuse block 0's buffers
            a->es[l] = a->es[0];
            a->ef[l] = a->ef[0];
            continue;
        }
        attn_saved_t *s = &a->es[l];
        const t5_attn_t *L = &m->enc[l].self;
        int k16 = ff16 && !a->enc_shared;
        sub_x(&s->x, &s->x16, bp, Ne, D, k16, a->xw_enc);
        s->inv = BUMP(bp, Ne); s->h = a->hbuf;
        attn_qkvP(s, bp, Ne, Ne, HK, (size_t)B * H * S * S, ff16);
        attn_ctx(a, s, L, bp, Ne * HK, ff16 && !a->enc_shared);
        s->xa[0] = XA(L->q, Ne); s->xa[1] = XA(L->k, Ne); s->xa[2] = XA(L->v, Ne); s->xa[3] = XA(L->o, Ne);
        ff_saved_t *f = &a->ef[l];
        const t5_ff_t *FL = &m->enc[l].ff;
        sub_x(&f->x, &f->x16, bp, Ne, D, k16, a->xw_enc);
        f->inv = BUMP(bp, Ne); f->h = a->hbuf;
        ff_ab(f, bp, Ne, F, c->gated, ff16 && !a->enc_shared);
        f->gd = a->gbuf;
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
            sub_x(&s->x, &s->x16, bp, Nd, D, ff16 && !a->dec_shared, a->xw_dec);
            s->inv = BUMP(bp, Nd); s->h = a->hbuf;
            attn_qkvP(s, bp, Nd, Nk, HK, (size_t)B * H * T * Tk, ff16);
            attn_ctx(a, s, L, bp, Nd * HK, ff16 && !a->dec_shared);
            s->xa[0] = XA(L->q, Nd); s->xa[1] = XA(L->k, Nk); s->xa[2] = XA(L->v, Nk); s->xa[3] = XA(L->o, Nd);
        }
        ff_saved_t *f = &a->df[l];
        const t5_ff_t *FL = &m->dec[l].ff;
        sub_x(&f->x, &f->x16, bp, Nd, D, ff16 && !a->dec_shared, a->xw_dec);
        f->inv = BUMP(bp, Nd); f->h = a->hbuf;
        ff_ab(f, bp, Nd, F, c->gated, ff16 && !a->dec_shared);
        f->gd = a->gbuf;
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
    int any_lora = 0;  // the LoRA dropout's scratch: only where an adapter can be attached
    for (int i = 0; i < a->n_lin; i++) any_lora |= a->lin_r[i] > 0;
    a->lin_tmp = any_lora ? BUMP(bp, Nmax * wmax) : NULL;
    size_t tt = max3((size_t)S * S, (size_t)T * S, (size_t)T * T);
    a->dres = BUMP(bp, Nd * D); a->dres_enc = BUMP(bp, Ne * D); a->dh = BUMP(bp, Nmax * D);
    // an attention backward's scratch and a feed forward backward's are never live at
    // once: they share one region
    size_t shared = bp->off;
    a->dsc = BUMP(bp, (size_t)B * H * tt);
    a->dq = BUMP(bp, Nmax * HK); a->dk = BUMP(bp, Nmax * HK); a->dv = BUMP(bp, Nmax * HK);
    a->dctx = BUMP(bp, Nmax * HK);
    size_t attn_end = bp->off;
    bp->off = shared;
    a->da = BUMP(bp, Nmax * F); a->db = BUMP(bp, Nmax * F);
    if (bp->off < attn_end) bp->off = attn_end;
    a->dE = BUMP(bp, Ne * D); a->dhs = BUMP(bp, Nd * D);
    for (int l = 0; l < Le; l++) {  // kept in bf16: written in the forward's da, db, dq, dk, dv, dctx first
        if (a->ef[l].a16) a->ef[l].a = a->da, a->ef[l].b = c->gated ? a->db : NULL;
        attn_scratch(a, &a->es[l]);
    }
    for (int l = 0; l < Ld; l++) {
        if (a->df[l].a16) a->df[l].a = a->da, a->df[l].b = c->gated ? a->db : NULL;
        attn_scratch(a, &a->ds[l]);
        attn_scratch(a, &a->dc[l]);
    }
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
    a->dec_shared = t5_model_frozen(m);
    for (int i = 0; i < m->n_lin; i++) a->lin_r[i] = m->lin[i].r;
    bump_t bp = {NULL, 0};
    acts_layout(a, m, &bp);
    // in bf16, attn_core_forward16_p's scratch (two slices of scores and the bf16
    // operands of one (b, h) a thread)
    size_t tt = max3((size_t)S * S, (size_t)T * S, (size_t)T * T);
    if (m->bf16) {
        attn_shape_t e = {.B = B, .H = c->num_heads, .K = c->d_kv, .Tq = S, .Tk = S};
        attn_shape_t x = e, d = e;
        x.Tq = T, d.Tq = d.Tk = T;
        tt = max3(attn_core_pd16(&e), attn_core_pd16(&x), attn_core_pd16(&d));
    }
    a->pd_n = t5_acts_pd_need(a, B * c->num_heads, tt);
    a->bytes = bp.off + 64 + sizeof(lb_real) * a->pd_n;
    return a;
}

t5_acts_t *t5_acts_new(const t5_model_t *m, int B, int S, int T) {
    t5_acts_t *a = acts_plan(m, B, S, T);
    a->pool = lb_pool_new();
    a->mem = xcalloc(1, a->bytes);
    bump_t bp = {(char *)(((uintptr_t)a->mem + 63) & ~(uintptr_t)63), 0};
    acts_layout(a, m, &bp);
    a->pd = xmalloc(sizeof(lb_real) * a->pd_n);
    return a;
}

size_t t5_acts_pd_need(const t5_acts_t *a, int BH, size_t tt) {
    (void)a;
    int nt = lb_pool_threads();
    return (size_t)(nt < BH ? nt : BH) * tt;
}

lb_real *t5_acts_pd(t5_acts_t *a, int BH, size_t tt) {
    size_t n = t5_acts_pd_need(a, BH, tt);
    if (n > a->pd_n) {  // more threads than when the arena was made
        free(a->pd);
        a->pd = xmalloc(sizeof(lb_real) * n);
        a->bytes += sizeof(lb_real) * (n - a->pd_n);
        a->pd_n = n;
    }
    return a->pd;
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
    free(a->pd);
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
