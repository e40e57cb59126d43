// linear: the one place that multiplies matrices (OpenBLAS cblas_sgemm).
//
//   y = x·Wᵀ  (+ s·(drop(x)·Aᵀ)·Bᵀ when a LoRA adapter is attached)
//
// Dimensions: N rows (B·S or B·T), I in features, O out features, R rank.
// W [O, I] (Hugging Face layout), A [R, I], B [O, R].
//
// The numeric type is lb_real: float in the library. Tests compile a second copy of the
// engine's numeric files with LB_REAL_DOUBLE defined to check gradients by finite differences in
// double precision; nothing else ever changes it.
//
// Dropout masks come from a counter-based hash of (seed, site, index), never from a
// stateful generator, so the backward pass regenerates the forward's mask instead of
// storing it, and the result does not depend on the thread count.
#ifndef LB_LINEAR_H
#define LB_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef LB_REAL_DOUBLE
typedef double lb_real;
#else
typedef float lb_real;
#endif

// A named parameter tensor. w points to its values (the memory-mapped file, a private
// copy, or the trainable block); g to its gradient inside the trainable block, or NULL
// when the parameter is frozen (no gradient and no optimizer state exist for it).
typedef struct {
    char name[112];       // Hugging Face name, e.g. "shared.weight"
    int ndim;             // 1 or 2
    int64_t shape[2];
    size_t numel;
    lb_real *w;
    lb_real *g;
    int trainable;
    size_t off;           // offset inside the trainable block when trainable
    lb_real *own;         // private copy owned by the model (freed with it), or NULL
} lb_param_t;

// One linear layer without bias, with an optional LoRA adapter.
typedef struct {
    char name[96];        // Hugging Face module name, e.g. "decoder.block.0.layer.1.EncDecAttention.q"
    int in, out;
    lb_param_t *W;        // [O, I]; trainable when W->g != NULL
    int id;               // index of this linear in its model (activation slots)
    // LoRA adapter, attached when r > 0. A and B are owned by the caller (the adapter's
    // parameter block); dA/dB point to their gradients (NULL = not trained).
    int r;
    lb_real scale;        // alpha / r (or alpha / sqrt(r))
    float dropout;        // probability on the LoRA input only
    lb_real *A, *B;       // [R, I], [O, R]
    lb_real *dA, *dB;     // [R, I], [O, R] gradients, accumulated
} linear_t;

// Random state of one forward/backward: seed and step select the masks; training = 0
// turns every dropout off (evaluation).
typedef struct {
    uint64_t seed;
    uint64_t step;
    int training;
} lb_drop_t;

// 1 when the layer owns something trainable (W or the adapter).
int linear_trainable(const linear_t *l);

// Attaches a LoRA adapter to l (r > 0) or detaches it (r = 0). A/B/dA/dB are borrowed.
void linear_set_lora(linear_t *l, int r, lb_real scale, float dropout, lb_real *A, lb_real *B,
                     lb_real *dA, lb_real *dB);

// y [N, O] = x [N, I]·Wᵀ (+ LoRA). xa [N, R] receives drop(x)·Aᵀ, kept for the backward;
// tmp [N, I] is scratch used only when the LoRA dropout is on. site numbers the mask.
void linear_forward(const linear_t *l, int N, const lb_real *x, lb_real *y, lb_real *xa,
                    lb_real *tmp, const lb_drop_t *drop, uint64_t site);

// Backward of linear_forward given dy [N, O]: dW += dyᵀ·x only when W is trainable,
// dA/dB only when set, and dx [N, I] only when dx != NULL (dx_accum = 1 adds to it,
// 0 overwrites it). tmp [N, I] is scratch for the LoRA dropout.
void linear_backward(const linear_t *l, int N, const lb_real *x, const lb_real *xa,
                     const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                     const lb_drop_t *drop, uint64_t site);

// C [M, N] = alpha·op(A)·op(B) + beta·C, row-major; ta/tb = 1 transposes. The engine's
// other matrix products (attention) go through here so cblas lives in this file only.
void lb_gemm(int ta, int tb, int M, int N, int K, lb_real alpha, const lb_real *A, int lda,
             const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc);

// Sets the threads of OpenBLAS and of the engine's own parallel loops (process-wide, as
// OpenBLAS's own setting is). n <= 0 leaves the defaults.
void lb_set_threads(int n);

// Inverted-dropout keep test for element i of a site: 1 = keep (scale by 1/(1-p)).
static inline int lb_drop_keep(const lb_drop_t *d, uint64_t site, uint64_t i, float p) {
    uint64_t z = d->seed * 0x9E3779B97F4A7C15ull + d->step * 0xBF58476D1CE4E5B9ull +
                 site * 0x94D049BB133111EBull + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (float)(z >> 40) * (1.0f / 16777216.0f) >= p;
}

// 1 when dropout of probability p is active for this pass.
static inline int lb_drop_on(const lb_drop_t *d, float p) {
    return d && d->training && p > 0;
}

// x[i] = keep ? x[i] / (1 - p) : 0 for i < n (forward and backward are the same map).
void lb_dropout_apply(lb_real *x, size_t n, const lb_drop_t *d, uint64_t site, float p);

#endif
