// What the T5 files share and nothing else sees: the activation arena's layout (one
// struct of pointers into one block, t5_acts.c lays it out, t5.c runs forward and
// backward over it) and the dropout site numbers.
#ifndef LB_T5_INTERNAL_H
#define LB_T5_INTERNAL_H

#include <stdint.h>

#include "linear.h"
#include "t5.h"
#include "t5_ops.h"

#define R(c) ((lb_real)(c))

// Dropout sites: one per (stack, block, kind), so that every mask is distinct.
enum { SITE_SELF_P, SITE_SELF_RES, SITE_CROSS_P, SITE_CROSS_RES, SITE_FF_IN, SITE_FF_RES,
       SITE_EMBED, SITE_FINAL };
static inline uint64_t site_of(int stack, int block, int kind) {
    return ((uint64_t)(stack * 4096 + block + 1) << 4) | (uint64_t)kind;
}
static inline uint64_t site_lora(const linear_t *l) { return (1ull << 40) + (uint64_t)l->id; }

typedef struct {
    lb_real *x;      // [N, D] sublayer input (residual stream); with x16, the stack's one
                     // working buffer (the stream flows through it in place)
    uint16_t *x16;   // [N, D] x kept in bf16 for the backward (bf16 precision, a stack that
                     // keeps it for a backward), widened into x when needed; else NULL
    lb_real *inv;    // [N]
    lb_real *h;      // [N, D] normed input (the arena's one hbuf: rebuilt when needed)
    lb_real *q;      // [N, HK]
    lb_real *k, *v;  // [Nk, HK] (Nk = B·S for cross attention)
    lb_real *P;      // [B, H, Tq, Tk], or NULL when kept in bf16:
    uint16_t *P16;   // [B, H, Tq, Tk] (bf16 precision, a stack that keeps it for a backward)
    // with P16, q, k and v are kept in bf16 too (the backward reads only these), and q, k,
    // v point to the arena's dq, dk, dv (scratch in the forward); else NULL
    uint16_t *q16, *k16, *v16;
    lb_real *ctx;    // [N, HK]; with ctx16, the arena's dctx (scratch in the forward)
    // bf16 precision without an adapter on o: ctx kept in bf16 for o's weight gradient,
    // whose bf16 product rounds it to these values anyway (else NULL)
    uint16_t *ctx16;
    lb_real *xa[4];  // LoRA x·Aᵀ of q, k, v, o: [N or Nk, R]
} attn_saved_t;

typedef struct {
    lb_real *x, *inv, *h;  // as above
    uint16_t *x16;         // as above
    lb_real *a;            // [N, F] wi or wi_0 output
    lb_real *b;            // [N, F] wi_1 output (gated)
    // bf16 precision: a and b are kept for the backward in bf16 (a16, b16), and a, b point
    // to the arena's da, db, where the forward's products write them (fp32 until the
    // activation has read them); NULL otherwise
    uint16_t *a16, *b16;
    lb_real *gd;           // [N, F] dropped activation, the input of wo (gbuf, rebuilt)
    lb_real *xa[3];        // LoRA of wi|wi_0, wi_1, wo
} ff_saved_t;

struct t5_acts {
    int Bc, Sc, Tc;     // capacity
    int B, S, T;        // last batch
    attn_saved_t *es, *ds, *dc;  // encoder self, decoder self, decoder cross
    ff_saved_t *ef, *df;
    lb_real *enc_xf, *enc_invf, *enc_out, *enc_E;  // final norm input, factor, output, dropped
    lb_real *xw_enc, *xw_dec;  // the residual stream's working buffers where x is kept in bf16
    lb_real *dec_xf, *dec_invf, *dec_hs;           // dec_hs [B·T, D] the head's input
    lb_real *head_xa;
    lb_real *logits;    // [B·T, V]; becomes dlogits in t5_backward
    double *row_loss;   // [B·T]
    int32_t *enc_ids, *enc_mask, *dec_ids, *labels;
    int32_t *bkt_enc, *bkt_dec;  // [S·S], [T·T]
    lb_real *bias_enc, *bias_dec;  // [H, S, S], [H, T, T]
    // scratch
    lb_real *hbuf, *gbuf;  // [Nmax, D], [Nmax, F]
    // bf16 precision (m->bf16 when the arena was made; else NULL): the normed input hbuf
    // rounded to bf16 once for the products that share it (q/k/v, wi_0/wi_1), and the
    // encoder output enc_E once per forward for every decoder layer's cross k and v
    uint16_t *h16;      // [Nmax, D]
    uint16_t *E16;      // [Ne, D]
    lb_real *tmp;       // [Nmax, max(D, F, HK)]
    lb_real *lin_tmp;   // [Nmax, max in]: LoRA dropout (NULL without adapters)
    lb_real *dsc;       // [B, H, max Tq·Tk]
    // the dropped probabilities of one (b, h) per pool thread: [threads, max Tq·Tk],
    // allocated apart from the arena so that it can grow with lb_set_threads (t5_acts_pd)
    lb_real *pd;
    size_t pd_n;
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

// The per-thread scratch of attention over B·H items of tt scores (a->pd), grown when the
// pool now has more threads than when the arena was made; t5_acts_pd_need its size.
lb_real *t5_acts_pd(t5_acts_t *a, int BH, size_t tt);
size_t t5_acts_pd_need(const t5_acts_t *a, int BH, size_t tt);

// 1 when no parameter or adapter of m has a gradient (evaluation, forward-only runs).
int t5_model_frozen(const t5_model_t *m);

#endif
