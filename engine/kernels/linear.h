// linear: the one place that multiplies matrices (lb_gemm: oneDNN sgemm on a CPU with
// AVX-512 F, else OpenBLAS; gemm_f32.h says why and how it is chosen).
//
//   y = x·Wᵀ  (+ s·(drop(x)·Aᵀ)·Bᵀ when a LoRA adapter is attached)
//
// Dimensions: N rows (B·S or B·T), I in features, O out features, R rank.
// W [O, I] (Hugging Face layout), A [R, I], B [O, R].
//
// The numeric type is lb_real (util.h). Dropout, LoRA's included, is dropout.h's.
#ifndef LB_LINEAR_H
#define LB_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include "dropout.h"
#include "util.h"

// A named parameter tensor. w points to its values (the memory-mapped file, a private
// copy, or the trainable block); g to its gradient inside the trainable block, or NULL
// when the parameter is frozen (no gradient and no optimizer state exist for it).
//
// A frozen linear weight may instead be held in bfloat16 (t5_frozen_weights_bf16,
// t5_load_bf16): then w16 points to its values (a private copy, own16, or the BF16 tensor
// in the mapped file) and w is NULL. Exactly one of w and w16 is set. linear_forward and
// linear_backward read either; code that needs fp32 values calls t5_param_writable, which
// converts back (exactly), and t5_set_trainable / t5_save convert too.
typedef struct {
    char name[112];       // Hugging Face name, e.g. "shared.weight"
    int ndim;             // 1 or 2
    int64_t shape[2];
    size_t numel;
    lb_real *w;           // fp32 values, or NULL when held in bf16
    lb_real *g;
    int trainable;
    size_t off;           // offset inside the trainable block when trainable
    lb_real *own;         // private copy owned by the model (freed with it), or NULL
    const uint16_t *w16;  // bf16 values when w is NULL (frozen weights only), else NULL
    uint16_t *own16;      // private bf16 copy owned by the model, or NULL (w16 in the file)
} lb_param_t;

struct lb_bf16w;                  // gemm_bf16.h
typedef struct lb_pool lb_pool_t;  // the engine's worker threads (below)

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
    // bf16 products (linear_pack_bf16): W packed for AMX / AVX-512 bf16, owned by the
    // layer, or NULL; bf16 holds the LINEAR_BF16_* flags in force (0 = fp32 throughout).
    struct lb_bf16w *w_bf16;
    int bf16;
} linear_t;

// Largest block of a bf16 W converted to fp32 at once, in values (4 MiB of fp32); the
// forward of few rows (N <= 16, a generation step) uses blocks of 1/8 of that, so that
// a block is still in cache when the matrix-vector product reads it.
#define LINEAR_BF16_BLOCK ((size_t)1 << 20)

// dst [n] = src [n] for bf16 values (exact: a bf16 value is the top half of a float).
void lb_bf16_to_real(const uint16_t *src, size_t n, lb_real *dst);

// 1 when the layer owns something trainable (W or the adapter).
int linear_trainable(const linear_t *l);

// Attaches a LoRA adapter to l (r > 0) or detaches it (r = 0). A/B/dA/dB are borrowed.
void linear_set_lora(linear_t *l, int r, lb_real scale, float dropout, lb_real *A, lb_real *B,
                     lb_real *dA, lb_real *dB);

// y [N, O] = x [N, I]·Wᵀ (+ LoRA); x·Wᵀ is a bf16 product when l has LINEAR_BF16_FWD
// (linear_pack_bf16). xa [N, R] receives drop(x)·Aᵀ, kept for the backward; tmp [N, I]
// is scratch used only when the LoRA dropout is on. site numbers the mask.
// A W held in bf16 (W->w16) is converted to fp32 a block of rows at a time (at most
// LINEAR_BF16_BLOCK values, in a buffer of the call's own, so calls on different threads
// are independent) and each block multiplied as the fp32 W would be: the result is the
// fp32 product of the same values up to float rounding (the library may order a sum
// differently for a block of rows than for the whole W: ~1e-7 relative; on the test
// fixture it is bit for bit the same).
void linear_forward(const linear_t *l, int N, const lb_real *x, lb_real *y, lb_real *xa,
                    lb_real *tmp, const lb_drop_t *drop, uint64_t site);

// linear_forward with the bf16 product (LINEAR_BF16_FWD) spread over pool (the caller's
// lb_pool_t, e.g. the activation arena's; see gemm_bf16.h for why a pool and not
// OpenMP), and for callers that feed one input to several layers (q/k/v, wi_0/wi_1):
// x16 [N, I] is x already rounded to bf16 (lb_bf16_from_f32), used instead of converting
// x again; NULL = convert here. x is still read (LoRA, and layers without bf16). A layer
// with bf16 products runs its LoRA products on the pool too (OpenBLAS single-threaded in
// each block, as lb_pool_run_gemms), so that OpenBLAS's own threads stay asleep through a
// bf16 run. A layer without them uses pool on the oneDNN fp32 path (gemm_f32.h): its
// products, and its LoRA products, split over the pool, one thread per block, so that
// libgomp's workers never spin beside the pool; on OpenBLAS it ignores pool.
// pool NULL and x16 NULL is linear_forward.
void linear_forward_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x,
                         const uint16_t *x16, lb_real *y, lb_real *xa, lb_real *tmp,
                         const lb_drop_t *drop, uint64_t site);

// linear_forward's LoRA term in two steps, for inference (no dropout) by callers that cut a
// layer's product into blocks of output features (the decoder's step, generate.c):
// xa [N, R] = x·Aᵀ once, then y[:, lo:hi] += s·xa·B[lo:hi]ᵀ per block (y [N, O]). The
// calls linear_forward itself makes when it runs without a pool. l->r must be > 0.
void linear_lora_down(const linear_t *l, int N, const lb_real *x, lb_real *xa);
void linear_lora_up(const linear_t *l, int N, const lb_real *xa, long lo, long hi, lb_real *y);

// Backward of linear_forward given dy [N, O]: dW += dyᵀ·x only when W is trainable,
// dA/dB only when set, and dx [N, I] only when dx != NULL (dx_accum = 1 adds to it,
// 0 overwrites it). tmp [N, I] is scratch for the LoRA dropout. A bf16 W (never
// trainable) is converted by blocks as in linear_forward; dx is the fp32 path's bit for
// bit when W fits one block (the same call), else its sum over O is taken block by block.
// With LINEAR_BF16_BWD / LINEAR_BF16_DW (linear_pack_bf16) dx / dW are bf16 products.
void linear_backward(const linear_t *l, int N, const lb_real *x, const lb_real *xa,
                     const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                     const lb_drop_t *drop, uint64_t site);

// linear_backward with its bf16 products (LINEAR_BF16_BWD / _DW) spread over pool, as
// linear_forward_pool; pool NULL is linear_backward.
void linear_backward_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x,
                          const lb_real *xa, const lb_real *dy, lb_real *dx, int dx_accum,
                          lb_real *tmp, const lb_drop_t *drop, uint64_t site);
// linear_backward_pool given also x16, x rounded to bf16 (or NULL), which a bf16 weight
// gradient then reads instead of rounding x itself: the same bits, one pass less where
// layers share an input. x may then be NULL: it is widened from x16 only where an fp32
// product (no bf16 weight gradient, or oneDNN failing) or LoRA reads it.
void linear_backward16_pool(const linear_t *l, lb_pool_t *pool, int N, const lb_real *x, const uint16_t *x16,
                            const lb_real *xa, const lb_real *dy, lb_real *dx, int dx_accum, lb_real *tmp,
                            const lb_drop_t *drop, uint64_t site);

// ---- bf16 products -----------------------------------------------------------------
// On a CPU with AMX bf16 (or AVX-512 bf16) the products of a frozen W can run in bf16 with
// fp32 accumulation (gemm_bf16.h): ~2e-3 relative error against fp32 for I = 512, several
// times the speed. A run that trains in bf16 precision opts in per layer:
//
//   LINEAR_BF16_FWD  y = x·Wᵀ in bf16 (W packed once)
//   LINEAR_BF16_BWD  dx = dy·W in bf16 (W packed once more, for the other orientation)
//   LINEAR_BF16_DW   dW += dyᵀ·x in bf16 (full fine-tuning: W trainable, nothing packed)
//
// The LoRA products (rank R) always stay fp32.
enum { LINEAR_BF16_FWD = 1, LINEAR_BF16_BWD = 2, LINEAR_BF16_DW = 4 };

// Turns the bf16 products named by flags on for l. A trainable W (full fine-tuning) may
// be packed for FWD/BWD together with DW: its fp32 values stay the master copy, and the
// caller packs again after every change (t5_bf16_refresh after each optimizer step). The caller decides: a run whose
// precision is bf16, on a CPU where lb_bf16_available says yes. FWD/BWD need a frozen W
// (W->g NULL), held in fp32 (W->w) or bf16 (W->w16), and pack it now into l->w_bf16
// (2 bytes per value for each of FWD and BWD), owned by l and freed by linear_unpack_bf16
// (t5_free calls it for every linear of a model).
// When: after the weights are loaded and t5_set_trainable / t5_frozen_weights_bf16 have
// run, once per run; the packing is a copy, later changes to W are not seen. W itself
// stays as it was and must stay valid (fallbacks and t5_param_writable read it), so a
// packed layer holds its weight twice or three times (W, the FWD and the BWD packings; a
// trainable W's packings are made during each forward and backward instead, with
// LB_BF16W_FWD_LATE and LB_BF16W_BWD_LATE, into one buffer of the calling thread).
// Threads: the products run on the pool given to linear_forward_pool /
// linear_backward_pool, one block of rows per pool thread, each on a oneDNN call with an
// OpenMP team of one (no OpenMP workers exist then); linear_forward / linear_backward
// (no pool) use an OpenMP team of lb_pool_threads(), which works but leaves libgomp's
// workers spinning after each product (gemm_bf16.h): pass the arena's pool. Packing uses
// the OpenMP team of the calling thread, sized to lb_pool_threads(). Neither way do more
// than lb_pool_threads() threads compute at once; only with the pool do no others spin.
// Returns 0, or -1 with err set and l unchanged (fp32 kept) when this CPU has no bf16
// products (no AMX bf16 and no AVX-512 bf16: lb_bf16_available), W is trainable for
// FWD/BWD or frozen for DW, or this is the double-precision build. Calling it again
// replaces the earlier packing (with the same flags and fp32 values: in place, no
// allocation, as t5_bf16_refresh does after every update). A product oneDNN fails is redone in fp32, unless it had
// already accumulated into its output: that is fatal (gemm_bf16.h; out of memory).
int linear_pack_bf16(linear_t *l, int flags, lb_err_t *err);

// 1 when l's bf16 forward packs W at each call (a trainable W, whose fp32 values are the
// master copy: gemm_bf16.h's LB_BF16W_FWD_LATE); a product of a few rows (a decoding
// step) then does better in fp32 from W->w than packing the whole weight for it.
int linear_bf16_packs_late(const linear_t *l);

// Bytes l's own bf16 packings hold (0 when none; a late packing's buffer is not l's).
size_t linear_bf16_packed_bytes(const linear_t *l);

// Frees l's packed weight and turns its bf16 products off (fp32 again). Safe on any l.
void linear_unpack_bf16(linear_t *l);

// Matrix-product FLOPs (2·M·N·K per product) that linear_forward / linear_backward run
// for N rows; has_dx says whether the backward was given dx. Kept next to the functions
// they describe so that the count follows the code.
double linear_forward_flops(const linear_t *l, int N);
double linear_backward_flops(const linear_t *l, int N, int has_dx);

// C [M, N] = alpha·op(A)·op(B) + beta·C, row-major; ta/tb = 1 transposes. The engine's
// other matrix products (attention) go through here, so the choice of library
// (gemm_f32.h) is made in one place. Threads: lb_pool_threads() (OpenBLAS's count, or the
// OpenMP team of oneDNN on the calling thread); 1 inside lb_pool_run_gemms.
void lb_gemm(int ta, int tb, int M, int N, int K, lb_real alpha, const lb_real *A, int lda,
             const lb_real *B, int ldb, lb_real beta, lb_real *C, int ldc);

// Sets the number of busy cores: OpenBLAS's threads, the engine's own parallel loops and
// the OpenMP teams oneDNN products get (process-wide, as OpenBLAS's own setting is, which
// holds the count: lb_pool_threads). n <= 0 leaves the defaults.
void lb_set_threads(int n);

// A small pool of worker threads for the engine's own parallel loops (attention heads,
// softmax, norms, activations, dropout). It belongs to its owner (the activation arena),
// not to the process; the number of threads follows lb_set_threads (OpenBLAS's count).
lb_pool_t *lb_pool_new(void);
void lb_pool_free(lb_pool_t *p);
// Threads a parallel loop would use now (>= 1).
int lb_pool_threads(void);
// Runs fn(ctx, lo, hi, tid) over [0, n) split into contiguous chunks, one per thread, and
// returns when all are done. The split depends only on n and the thread count, and every
// engine loop run this way writes disjoint outputs, so results do not depend on it.
// p NULL, n small or one thread: runs fn(ctx, 0, n, 0) on the caller.
void lb_pool_run(lb_pool_t *p, long n, void (*fn)(void *ctx, long lo, long hi, int tid), void *ctx);

// lb_pool_run for loops whose items call lb_gemm (attention per batch row and head): the
// products inside run single-threaded, one per pool thread, instead of each asking the
// BLAS for all threads.
void lb_pool_run_gemms(lb_pool_t *p, long n, void (*fn)(void *ctx, long lo, long hi, int tid),
                       void *ctx);

#endif
