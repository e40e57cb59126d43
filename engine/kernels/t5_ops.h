// The element-wise and attention kernels of the T5 math, apart from the model: embedding
// lookup, RMS norm, the feed-forward activations, the attention core
// (scores, softmax, dropout, P·v and its backward) and cross entropy. Each has the form the
// model runs: spread over an lb_pool_t (NULL: on the caller), writing disjoint outputs, so
// results do not depend on the thread count. Shapes use the letters of ARCHITECTURE.md.
#ifndef LB_T5_OPS_H
#define LB_T5_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "dropout.h"
#include "linear.h"
#include "t5_config.h"

// Attention core for one (query rows, key rows) pair of tensors laid out [B·Tq, H·K] and
// [B·Tk, H·K]: P [B, H, Tq, Tk] = softmax(q·kᵀ + bias + mask) (no 1/√K: T5 folds it into
// the initialisation), ctx = drop(P)·v. bias [H, Tq, Tk] or NULL; key_mask [B, Tk] or NULL
// (0 = padding); causal hides keys after the query. pd [min(threads, B·H), Tq, Tk] is
// scratch for the dropped probabilities: one (b, h) per pool thread (lb_pool_threads).
typedef struct {
    int B, H, K, Tq, Tk;
    const lb_real *bias;
    const int32_t *key_mask;
    int causal;
    float p_drop;
    uint64_t site;
} attn_shape_t;

// Embedding: x [N, D] = E[ids]. No scaling in T5.
void embed_forward(int N, int D, const int32_t *ids, const lb_real *E, lb_real *x);

// dE[ids[r]] += dx[r]; serial so that repeated ids add in a fixed order.
void embed_backward(int N, int D, const int32_t *ids, const lb_real *dx, lb_real *dE);

// dst [n] = src [n] widened from bf16 (exact) over the pool (lb_bf16_to_real in blocks).
void bf16_to_real_p(lb_pool_t *pool, const uint16_t *src, size_t n, lb_real *dst);

// T5 layer norm (RMS): y = x · (mean(x²) + eps)^-½ · w; inv [N] keeps the factor.
void rms_forward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                          lb_real eps, lb_real *inv, lb_real *y);
// The same, in the same pass also rounding y into y16 and x into x16 (each optional) for
// precision bf16: the products' shared input and the sublayer's input kept for the
// backward, the bits lb_f32_to_bf16 gives.
void rms_forward16_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w, lb_real eps, lb_real *inv,
                     lb_real *y, uint16_t *y16, uint16_t *x16);

// y = x·inv·w from the saved factor: the forward's output again, bit for bit.
void rms_apply_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                        const lb_real *inv, lb_real *y);
// The same, also rounding y into y16 in the same pass (precision bf16: the input the weight
// gradients of the layers that read it share).
void rms_apply16_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w, const lb_real *inv, lb_real *y,
                   uint16_t *y16);

// dw += Σ_r dy·x·inv (when dw); dx += inv·w·dy − x·inv³/D·Σ_j dy·w·x (when dx).
void rms_backward_p(lb_pool_t *pool, int N, int D, const lb_real *x, const lb_real *w,
                           const lb_real *inv, const lb_real *dy, lb_real *dw, lb_real *dx);

// Gated: g = act(a)·b; plain (b NULL): g = act(a). n elements.
void act_forward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g);

// From dg: da = dg·b·act'(a) (in place of dg allowed), db = dg·act(a) when b.
void act_backward_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                           const lb_real *dg, lb_real *da, lb_real *db);

// act_forward_p then g = drop(g) (the feed-forward's inner dropout), fused: the same
// values as the two calls, one pass less.
void act_forward_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                        lb_real *g, const lb_drop_t *drop, uint64_t site, float p);

// act_backward_p from drop(dg), fused (da may be dg; dg is left as it was unless it is da).
void act_backward_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                         const lb_real *dg, lb_real *da, lb_real *db, const lb_drop_t *drop,
                         uint64_t site, float p);

// bf16 precision keeps a feed forward's pre-activations a, b in bf16 for the backward:
// act_forward_drop_p that also rounds a and b into a16, b16 (b16 unused when b is NULL) in
// the same pass, block by block while in cache.
void act_forward_keep16_p(lb_pool_t *pool, t5_act_t act, size_t n, const lb_real *a, const lb_real *b,
                          lb_real *g, const lb_drop_t *drop, uint64_t site, float p, uint16_t *a16,
                          uint16_t *b16);

// act_forward_drop_p and act_backward_drop_p reading the pre-activations from a16, b16
// (bf16, b16 NULL when plain), widened exactly a block at a time: the values of the fp32
// calls on the widened a and b, without widening them whole first.
void act_forward16_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const uint16_t *a16, const uint16_t *b16,
                          lb_real *g, const lb_drop_t *drop, uint64_t site, float p);
void act_backward16_drop_p(lb_pool_t *pool, t5_act_t act, size_t n, const uint16_t *a16, const uint16_t *b16,
                           const lb_real *dg, lb_real *da, lb_real *db, const lb_drop_t *drop, uint64_t site,
                           float p);

void attn_core_forward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                const lb_real *k, const lb_real *v, lb_real *P, lb_real *pd,
                                lb_real *ctx, const lb_drop_t *drop);

// The attention core of bf16 precision: q, k and v are rounded to bf16 once, into q16,
// k16 and v16 (in the layout of q, k, v, kept for the backward, so that q, k and v
// themselves may be scratch), the products q·kᵀ and P·v take bf16 operands with fp32
// sums (lb_bf16_gemm: AMX or AVX-512 bf16; the dropped probabilities are rounded for the
// second), and P16 [B, H, Tq, Tk] gets the probabilities rounded once; bias, mask,
// softmax and dropout stay fp32. pd has attn_core_pd16(s) values a thread
// ([min(threads, B·H), attn_core_pd16(s)]).
void attn_core_forward16_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q, const lb_real *k,
                           const lb_real *v, uint16_t *P16, lb_real *pd, lb_real *ctx, const lb_drop_t *drop,
                           uint16_t *q16, uint16_t *k16, uint16_t *v16);

// The scratch values a thread of attn_core_forward16_p / attn_core_backward16_p needs:
// two slices of Tq·Tk fp32 scores and the bf16 operands of one (b, h).
size_t attn_core_pd16(const attn_shape_t *s);

// FLOPs of one of the core's products (all four have the same size).
double attn_core_flops(const attn_shape_t *s);

// Backward of attn_core_forward_p from dctx [B·Tq, H·K]. Fills dq/dk/dv (each optional,
// overwritten) and adds Σ_b dscores to dbias [H, Tq, Tk] when dbias. pd is scratch as for
// the forward, ds scratch [B, H, Tq, Tk].
void attn_core_backward_p(lb_pool_t *pool, const attn_shape_t *s, const lb_real *q,
                                 const lb_real *k, const lb_real *v, const lb_real *P, lb_real *pd,
                                 lb_real *ds, const lb_real *dctx, lb_real *dq, lb_real *dk,
                                 lb_real *dv, lb_real *dbias, const lb_drop_t *drop);

// attn_core_backward_p from what attn_core_forward16_p kept (P16, q16, k16, v16), its four
// products in bf16 as the forward's: dctx and dS are rounded once a head; the softmax
// backward, dropout and dbias stay fp32.
void attn_core_backward16_p(lb_pool_t *pool, const attn_shape_t *s, const uint16_t *q16, const uint16_t *k16,
                            const uint16_t *v16, const uint16_t *P16, lb_real *pd, lb_real *ds,
                            const lb_real *dctx, lb_real *dq, lb_real *dk, lb_real *dv, lb_real *dbias,
                            const lb_drop_t *drop);

// Cross entropy over rows with label >= 0: returns Σ loss (double) and the count in *n.
double xent_forward_p(lb_pool_t *pool, int N, int V, const lb_real *logits,
                             const int32_t *labels, int *n, double *row_loss);

// logits become dlogits = scale·(softmax − onehot); ignored rows become 0.
void xent_backward_p(lb_pool_t *pool, int N, int V, lb_real *logits, const int32_t *labels,
                            lb_real scale);

#endif
