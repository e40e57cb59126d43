// gemm_bf16: matrix products with bfloat16 inputs, fp32 accumulation and fp32 output, on
// the CPU's bf16 hardware (AMX tiles, else AVX-512 bf16) through oneDNN's matmul (its
// "brg" kernels), for the products of frozen weights: in a LoRA run the base weights
// never change, so each is converted to bf16 and packed once, in the blocked layout the
// kernel reads, and every forward and backward of the run uses that packing.
//
//   forward   y  [N, O] (+)= x [N, I]·Wᵀ           lb_bf16w_forward, lb_bf16w_forward_bf16
//   backward  dx [N, I] (+)= dy [N, O]·W           lb_bf16w_backward_dx
//   weight    dW [O, I] (+)= dyᵀ·x                  lb_bf16_gemm_dw (full fine-tuning)
//
// W [O, I] is the Hugging Face layout of linear_t. fp32 inputs are rounded to bf16
// (nearest, ties to even) once per call; products of K terms are summed in fp32, so the
// result is the exact product of the rounded inputs up to fp32 summation error: against
// the fp32 product its relative (Frobenius) error is ~2e-3 for K = 512 on random data.
//
// Availability: lb_bf16_available says whether this process can use the path (CPU flags
// from cpu.h, not the CPU model). AVX-512 bf16 without AMX counts: on the 2-core AMD EPYC
// development machine (no AMX) oneDNN's avx512_core_bf16 kernels ran these shapes 3-5x
// faster than OpenBLAS sgemm (make bench-kernels). Where it is 0 (no AMX, no AVX-512 bf16, or the OS did
// not grant AMX) every function here fails with -1 and touches nothing (lb_bf16_from_f32
// converts in plain C), and callers keep the fp32 path (linear.c does so by itself).
//
// Threads: the products take the engine's pool (lb_pool_t, e.g. the activation arena's)
// and cut their output rows into one block per pool thread (lb_pool_threads(), the count
// lb_set_threads sets for OpenBLAS too); each block runs on oneDNN with an OpenMP team of
// one, so the engine's threads are the only ones that compute and they sleep between
// loops. With pool NULL a product runs on the calling thread with an OpenMP team of
// lb_pool_threads() (oneDNN's own split): as fast alone, but libgomp's workers then spin
// for milliseconds after each product and slow the OpenBLAS and pool loops that follow
// (measured on 2 cores: the two rank-16 LoRA sgemms after a 2048x512x512 bf16 forward
// took 5-6 ms with the OpenMP team against 1.3-1.9 ms on the pool, ~1.3 ms alone).
// OpenBLAS's worker threads spin too (with sched_yield, up to ~0.1 s after each sgemm), so
// linear_forward_pool / linear_backward_pool also run a bf16 layer's LoRA products on the
// pool, OpenBLAS single-threaded in each block: through a bf16 run the pool's threads are
// then the only ones computing. Packing fp32 weights runs this file's packer (on the pool for a
// late packing, else on the calling thread) where oneDNN's layout is one it knows, else
// oneDNN's reorder with an OpenMP team of lb_pool_threads(). Debian's oneDNN is built for
// OpenMP (dnnl_config.h: DNNL_RUNTIME_OMP).
//
// Calls are independent: a packed weight is read-only after packing and may be used by
// several threads at once. Each thread keeps one oneDNN engine and stream for its calls
// and its recently used matmul primitives (made on first use, destroyed when the thread
// exits); the CPU's flags are read once. Measured here (oneDNN 2.6, avx512_core_bf16, one
// thread): a new engine and stream cost ~5 us a call, the matmul descriptor 2-12 us, the
// primitive (a hit in oneDNN's own cache) 1-7 us, against 5 us for the product of a
// generation step's rows (4 x 512 x 384) and 1.5-8 ms for a training step's blocks; with
// both kept, a 512->384 product of one row went from 16.8 to 6.7 us a call.
#ifndef LB_GEMM_BF16_H
#define LB_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "linear.h"
#include "util.h"

// 1 when bf16 products can run here; else 0 with one sentence in why (if not NULL) saying
// what is missing. name (if not NULL) gets the path's name, as lb_cpu_kernel_path.
int lb_bf16_available(const char **name, char *why, size_t why_len);

// oneDNN's name of the kernel it picked for x [N, I]·Wᵀ, e.g. "brg:avx512_core_amx_bf16"
// (into buf, "unavailable" when it picked none); for the bench and logs.
void lb_bf16_impl_name(int N, int in, int out, char *buf, size_t len);

// A weight W [O, I] in bf16, packed for the forward (and, when asked, for the backward dx).
// Opaque; made by lb_bf16w_pack_*, freed by lb_bf16w_free, read-only in between.
typedef struct lb_bf16w lb_bf16w_t;

enum {
    LB_BF16W_FWD = 1,  // pack for lb_bf16w_forward*  (O·I bf16 values)
    LB_BF16W_BWD = 2,  // pack for lb_bf16w_backward_dx (another O·I values)
    // pack for lb_bf16w_backward_dx at each call (instead of LB_BF16W_BWD), from the fp32
    // W last given to lb_bf16w_pack_f32 / lb_bf16w_repack_f32, which the caller keeps valid
    // and unchanged until the next lb_bf16w_repack_f32 (call it after changing W), into a
    // buffer of the calling thread that every late weight shares: for a trainable weight
    // that is packed again after each update anyway, the same packing work, held once for
    // the largest weight instead of once per weight. Consecutive calls for the same weight
    // and direction on one thread reuse the packing (a product cut into blocks of rows)
    LB_BF16W_BWD_LATE = 4,
    // the same for lb_bf16w_forward* (instead of LB_BF16W_FWD): a full fine-tune's weights
    // then hold no bf16 copy between steps, and the packing a forward makes replaces the
    // one every update made. For products of many rows (a training or encoder forward);
    // a few-row product (a decoding step) would pack the whole weight for little work
    LB_BF16W_FWD_LATE = 8,
};

// Packs W [O, I] (fp32, row-major) into a new weight for the products named by flags
// (LB_BF16W_FWD or LB_BF16W_FWD_LATE, and/or LB_BF16W_BWD or LB_BF16W_BWD_LATE). W is only read; the packed copy is the weight's own
// (2 bytes per value per product packed). Call once, when the weight is final (frozen):
// a later change to W is not seen. Returns NULL with err set (LB_EARG) when bf16 is not
// available here or oneDNN refuses the shape.
lb_bf16w_t *lb_bf16w_pack_f32(const float *W, int out, int in, int flags, lb_err_t *err);

// Packs W [O, I] (fp32, the shape w was made for) again into w's own packings, allocating
// nothing: for a trainable weight after each update (a new pack each step allocated and
// faulted in the packings' pages again). Returns 0, or -1 when oneDNN failed (w's values
// are then unusable: free it or pack again).
int lb_bf16w_repack_f32(lb_bf16w_t *w, const float *W);

// The same from bf16 values W [O, I] (e.g. a BF16 tensor of a safetensors file, used as
// is: no rounding happens).
lb_bf16w_t *lb_bf16w_pack_bf16(const uint16_t *W, int out, int in, int flags, lb_err_t *err);

void lb_bf16w_free(lb_bf16w_t *w);

// Bytes one packing of a W [O, I] takes (fwd: for the forward, else for the backward dx),
// as lb_bf16w_pack_* would make it (oneDNN's layout may pad); 2·O·I where bf16 cannot run.
size_t lb_bf16w_packed_bytes(int out, int in, int fwd);

// Bytes the packed weight holds (the packings only).
size_t lb_bf16w_bytes(const lb_bf16w_t *w);
// Its flags (what it was packed for), out and in.
int lb_bf16w_flags(const lb_bf16w_t *w);

// dst [n] = src [n] rounded to bf16 (nearest, ties to even, NaN stays NaN): for callers
// that feed one input to several products (q/k/v, wi_0/wi_1) and convert it once.
// Threaded as the products are (pool). Works on any CPU (no bf16 hardware needed); with
// AVX-512 F it converts 16 values at a time (~0.13 ns a value on one core here, against
// ~1.1 for the scalar loop), as every product's own conversion of its input does.
void lb_bf16_from_f32(lb_pool_t *pool, const float *src, size_t n, uint16_t *dst);

// y [N, O] = x [N, I]·Wᵀ (accum = 0) or y += x·Wᵀ (accum = 1); x fp32, rounded once.
// Needs LB_BF16W_FWD or LB_BF16W_FWD_LATE. Returns 0, or -1 when w lacks the packing, N < 0 or oneDNN fails
// (then redo the product in fp32: y may be partly written, never partly accumulated).
// oneDNN failing after a block accumulated (accum = 1) cannot be redone: that is fatal,
// as out of memory is for xmalloc (packing made oneDNN accept the shape: out of memory is
// the one known cause).
int lb_bf16w_forward(lb_pool_t *pool, const lb_bf16w_t *w, int N, const float *x, float *y, int accum);

// The same with x [N, I] already in bf16 (lb_bf16_from_f32).
int lb_bf16w_forward_bf16(lb_pool_t *pool, const lb_bf16w_t *w, int N, const uint16_t *x, float *y,
                          int accum);

// dx [N, I] = dy [N, O]·W (accum = 0) or dx += dy·W (accum = 1); dy fp32, rounded once.
// Needs LB_BF16W_BWD or LB_BF16W_BWD_LATE (the same values, packed now). Returns 0 or -1,
// as lb_bf16w_forward.
int lb_bf16w_backward_dx(lb_pool_t *pool, const lb_bf16w_t *w, int N, const float *dy, float *dx,
                         int accum);

// The same with dy [N, O] already in bf16 (one rounding for this and the weight gradient).
int lb_bf16w_backward_dx_bf16(lb_pool_t *pool, const lb_bf16w_t *w, int N, const uint16_t *dy, float *dx,
                              int accum);

// Bytes the calling thread holds for LB_BF16W_*_LATE packings (the largest so far).
size_t lb_bf16_late_bytes(void);

// dW [O, I] = dyᵀ·x (accum = 0) or dW += dyᵀ·x (accum = 1), with dy [N, O] and x [N, I]
// fp32, each rounded to bf16 once (the weight gradient of a full fine-tune, whose fp32
// master weights live elsewhere): both are rounded row by row, and the product reads the
// rounded dy transposed (oneDNN's brgemm takes the strided source), each pool thread a
// block of dW's rows. Returns 0 or -1 (also when bf16 is not available here), as
// lb_bf16w_forward.
int lb_bf16_gemm_dw(lb_pool_t *pool, int N, int out, int in, const float *dy, const float *x,
                    float *dW, int accum);

// The same where the caller has dy or x in bf16 already (dy16, x16; NULL: rounded here
// from dy, x).
int lb_bf16_gemm_dw16(lb_pool_t *pool, int N, int out, int in, const float *dy, const uint16_t *dy16,
                      const float *x, const uint16_t *x16, float *dW, int accum);

// C [M, N] = op(A)·op(B) (accum = 0) or C += op(A)·op(B) (accum = 1), A and B already
// bf16, on the calling thread alone: the small products of the attention core, run inside
// the pool's jobs. op(A) [M, K] is A[m·lda + k], or with ta A[k·lda + m]; op(B) [K, N] is
// B[k·ldb + n], or with tb B[n·ldb + k]; C[m·ldc + n]. Each thread keeps the primitives of
// its recent shapes. Returns 0, -1 when nothing was written to C (bf16 not available here,
// or oneDNN refused the shape), -2 when oneDNN failed while writing C.
int lb_bf16_gemm(int ta, int tb, int M, int N, int K, const uint16_t *A, long lda, const uint16_t *B,
                 long ldb, float *C, long ldc, int accum);

// How many oneDNN matmul primitives this process has made (each thread keeps the ones of
// its recent shapes; a step that makes new ones each time runs at set-up speed).
long lb_bf16_primitives_made(void);

#endif
