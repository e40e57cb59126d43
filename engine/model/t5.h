// T5 / FLAN-T5: weights under their Hugging Face names, the forward pass with teacher
// forcing and its backward pass.
//
// Dimensions (one letter each, used in every shape comment of the engine):
//   B batch, S source length, T target length, D d_model, H heads, K d_kv (H·K = the
//   attention's inner width), F d_ff, V vocab, R LoRA rank, N rows of a matrix (B·S or B·T).
//
// Life cycle:
//   t5_load            → weights memory-mapped (F32, aligned) or converted once; all frozen
//   t5_set_trainable   → chosen parameters copied into one block [values | grads] that the
//                        optimizer walks linearly; the rest keep no gradient at all
//   linear_set_lora    → (optional) adapters attached to any linear (t5_find_linear)
//   t5_frozen_weights_bf16 → (optional) frozen linear weights held in bf16, half the memory
//   t5_acts_new        → the activation arena for a maximum (B, S, T)
//   t5_forward         → loss (and logits, encoder output in the arena)
//   t5_backward        → gradients added to every trainable parameter / adapter
#ifndef LB_T5_H
#define LB_T5_H

#include <stddef.h>
#include <stdint.h>

#include "linear.h"
#include "optim.h"
#include "safetensors.h"
#include "t5_config.h"
#include "util.h"

// One attention sublayer: T5LayerSelfAttention or T5LayerCrossAttention.
typedef struct {
    lb_param_t *ln;               // [D] layer_norm.weight
    linear_t *q, *k, *v, *o;      // q,k,v: [H·K, D]; o: [D, H·K]
} t5_attn_t;

// One feed forward sublayer (T5LayerFF): plain (wi, wo) or gated (wi_0, wi_1, wo).
typedef struct {
    lb_param_t *ln;               // [D]
    linear_t *wi, *wi_0, *wi_1;   // [F, D]; wi only when plain, wi_0/wi_1 only when gated
    linear_t *wo;                 // [D, F]
} t5_ff_t;

typedef struct {
    t5_attn_t self;
    t5_attn_t cross;              // decoder blocks only (pointers NULL in the encoder)
    t5_ff_t ff;
} t5_block_t;

typedef struct {
    t5_config_t cfg;
    int n_params;
    lb_param_t *params;           // every parameter, in Hugging Face order
    int n_lin;
    linear_t *lin;                // every linear module, in Hugging Face order, then the head
    t5_block_t *enc, *dec;        // [num_layers], [num_decoder_layers]
    lb_param_t *shared;           // [V, D] shared.weight (embedding of both stacks)
    lb_param_t *enc_rel, *dec_rel;// [buckets, H] relative_attention_bias of block 0
    lb_param_t *enc_ln, *dec_ln;  // [D] final layer norms
    linear_t *head;               // "lm_head": W = lm_head.weight, or shared.weight when tied
    st_file_t st;                 // the mapped checkpoint
    int st_open;
    lb_real *block;               // trainable block: values [n_train] then grads [n_train]
    size_t n_train;
    int bf16;                     // t5_use_bf16: the linears' products run in bf16
    int table_only;               // t5_init_table: names and shapes, no values
} t5_model_t;

// Loads dir/config.json and dir/model.safetensors. A tensor missing or of the wrong shape
// gives one message naming the file, the tensor and the expected shape.
int t5_load(t5_model_t *m, const char *dir, lb_err_t *err);

// t5_load, except that the linear weights (not the shared embedding) stored as BF16 in
// the file are used in place from the mapping as bf16 (lb_param_t.w16), never converted
// to fp32: with a bf16 checkpoint the fp32 copies never exist, so peak memory stays at
// the bf16 size. Call t5_frozen_weights_bf16 after t5_set_trainable for the rest. Every
// engine function accepts such a model (see t5_frozen_weights_bf16).
int t5_load_bf16(t5_model_t *m, const char *dir, lb_err_t *err);

// Builds a model from a config with every parameter zero (tests, benchmarks, random init
// by the caller through t5_find_param / the params array).
int t5_init_empty(t5_model_t *m, const t5_config_t *cfg, lb_err_t *err);

// The parameter and linear tables of t5_init_empty (names, shapes, Hugging Face order) with
// no storage for values: what a run of a model this size would train, compute and hold
// (t5_facts.h) without the memory of its weights. t5_set_trainable marks parameters on it
// without packing a block (a trainable one's g points at a one-value placeholder that
// nothing reads) and adapters attach as usual; t5_count_params, t5_find_*, t5_acts_size and
// t5_weight_bytes_if_bf16 work. Nothing may read its values or run it.
int t5_init_table(t5_model_t *m, const t5_config_t *cfg, lb_err_t *err);

void t5_free(t5_model_t *m);

// Makes the parameters for which pred(name, ctx) returns 1 trainable, every other one
// frozen, and packs the trainable values and their gradients into m->block (values first,
// grads second, parameters in m->params order). pred NULL with ctx NULL freezes everything;
// use t5_pred_all for a full fine-tune. Values are preserved across repacks.
void t5_set_trainable(t5_model_t *m, int (*pred)(const char *name, void *ctx), void *ctx);

// Predicate that accepts every parameter (full fine-tuning).
int t5_pred_all(const char *name, void *ctx);

// The partial method: the top top_blocks blocks (0: every block) of the chosen stacks and
// each chosen stack's final layer norm; with norms_only, only the layer norms among them.
// The shared embedding and the head stay frozen.
enum { T5_STACK_ENCODER = 1, T5_STACK_DECODER = 2 };
typedef struct {
    int top_blocks;
    unsigned stacks;         // T5_STACK_* bits
    int norms_only;
    int n_enc, n_dec;        // blocks per stack (the model's num_layers, num_decoder_layers)
} t5_partial_t;

// Predicate for t5_set_trainable (ctx: a t5_partial_t), also used to count what a partial
// run would train without building it.
int t5_pred_partial(const char *name, void *ctx);

// The trainable relative position bias tables (encoder's, decoder's) as ranges of m->block
// with learning-rate multiplier lr_mult, in block order, for adamw_step. Returns how many
// (0 to 2: a frozen table has none). T5's only position signal is one scalar per bucket
// and head; Adam moves each by about lr a step, so sharp positional attention (what
// copying from the source needs) takes thousands of steps unless these learn faster.
int t5_position_bias_ranges(const t5_model_t *m, float lr_mult, optim_range_t out[2]);

// The parameter of that Hugging Face name ("shared.weight", ...) or NULL. lm_head.weight
// of a tied model resolves to shared.weight.
lb_param_t *t5_find_param(t5_model_t *m, const char *name);

// The linear module of that Hugging Face name ("encoder.block.0.layer.0.SelfAttention.q",
// "lm_head") or NULL. LoRA adapters attach to it with linear_set_lora.
linear_t *t5_find_linear(t5_model_t *m, const char *name);

// Holds every frozen linear weight (W->g == NULL: every q k v o wi wi_0 wi_1 wo, and an
// untied frozen lm_head) in bfloat16, which halves the memory they take; the shared
// embedding, the layer norms and the relative biases stay fp32, as do trainable weights.
// Call it after t5_set_trainable and lora_init/lora_attach (LoRA A/B are the caller's and
// stay fp32; a pissa residual is rounded like any weight). Values are rounded to nearest
// even (a no-op for a bf16 checkpoint, whose mapped bytes are then used directly); the
// fp32 private copies are freed and the pages of mapped fp32 tensors dropped from memory.
// The products convert blocks of rows back to fp32 on the fly (linear_forward), so results
// are those of the fp32 path on the rounded weights, up to the order of float sums; for
// training, evaluation and generation.
// Everything else converts back exactly where it needs fp32: t5_param_writable (merge,
// pissa) gives that one weight fp32 storage again, t5_set_trainable trains a bf16 weight
// from its bf16 values, t5_save writes the bf16 values. Code outside the engine must not
// read W->w (it is NULL) without t5_param_writable. Calling it again converts what has
// become frozen since. Fails only for a model that was never loaded.
int t5_frozen_weights_bf16(t5_model_t *m, lb_err_t *err);

// Precision bf16 (train.precision, --precision): every linear's products run in bf16
// with fp32 accumulation on the CPU's bf16 matrix hardware (linear_pack_bf16). A frozen
// weight is held in bf16 (t5_frozen_weights_bf16: its fp32 copy is freed, as the products
// read the rounded values anyway) and packed once for the forward, and for the input
// gradient only where a backward may need it with m trainable as it is now (not in a
// frozen model, not in a frozen encoder; a layer that later needs it takes the slower
// block-converting path, results the same up to rounding). A trainable one (full, partial)
// keeps its fp32 master values, is packed from them for the forward and input gradient,
// and gets its weight gradient from a bf16 product. Call after t5_set_trainable (and
// adapters attached); the LoRA products, attention's softmax, norms and the loss stay
// fp32. Returns -1 with err and the model in fp32 where this CPU has no bf16 products
// (checked first: nothing changed) or oneDNN refuses a packing (the frozen weights are
// then already held in bf16).
int t5_use_bf16(t5_model_t *m, lb_err_t *err);

// Bytes t5_use_bf16's packings would hold for m as trainable as it is now: each frozen
// weight's forward packing (and its input-gradient one where a backward may need it),
// and the one buffer the trainable weights are packed into at each use (the largest such
// packing). The weights themselves are counted by t5_weight_bytes_if_bf16.
size_t t5_bf16_packing_bytes(const t5_model_t *m);

// What a run or a command asks for: auto = bf16 where the CPU has AMX bf16 tiles (the
// products run several times faster there), else fp32; fp32 = the reference everywhere.
typedef enum { T5_PRECISION_AUTO, T5_PRECISION_FP32, T5_PRECISION_BF16 } t5_precision_t;

// "auto", "fp32", "bf16"; parse gives -1 for anything else.
const char *t5_precision_name(t5_precision_t p);
int t5_precision_parse(const char *name);

// Applies want to m (t5_use_bf16 for bf16) and sets *used to fp32 or bf16. bf16 asked
// explicitly on a CPU without bf16 products is an error naming what is missing and the
// fix (fp32 or auto); auto falls back to fp32 silently.
int t5_set_precision(t5_model_t *m, t5_precision_t want, t5_precision_t *used, lb_err_t *err);

// 1 when t5_set_precision(want) would run m in bf16 on this CPU (else fp32, or an error
// for bf16 asked where it cannot run).
int t5_precision_is_bf16(t5_precision_t want);

// The kernel path m's products take on this CPU, e.g. "amx-bf16 (oneDNN brg)" or
// "fp32 (oneDNN sgemm; CPU has avx512f)" (lb_cpu_kernel_path, lb_f32_path_name).
const char *t5_kernel_path(const t5_model_t *m);

// Packs the trainable weights' bf16 copies again from their fp32 values: after every
// optimizer step of a full or partial run (train_step does it). A no-op in fp32 and for
// frozen weights (lora_merge_into_model repacks the weights it changes).
void t5_bf16_refresh(t5_model_t *m);

// Bytes the parameter values take (each tensor once; fp32 or bf16 as held, mapped or
// private, trainable values included, gradients and optimizer state not); *bf16_bytes
// (when not NULL) gets the part held in bf16.
size_t t5_weight_bytes(const t5_model_t *m, size_t *bf16_bytes);

// What t5_weight_bytes would give after t5_frozen_weights_bf16 on m as it is now (its
// trainable choice and adapters made): for memory estimates, on a table model too.
size_t t5_weight_bytes_if_bf16(const t5_model_t *m, size_t *bf16_bytes);

// Gives p private, writable storage (a frozen weight may point into the read-only
// mapping, or be held in bf16: converted back to fp32, exactly); for merging adapters
// into W. Returns p->w.
lb_real *t5_param_writable(t5_model_t *m, lb_param_t *p);

// Sets every trainable gradient (model block) to zero. Adapter grads are the caller's.
void t5_zero_grad(t5_model_t *m);

// Number of parameters (base model, each tensor once).
size_t t5_count_params(const t5_model_t *m);

// One batch of token ids, row-major: input_ids/attention_mask [B, S], labels [B, T]
// (-100 = ignored). The decoder input is labels shifted right.
typedef struct {
    int B, S, T;
    const int32_t *input_ids;
    const int32_t *attention_mask;
    const int32_t *labels;
} t5_batch_t;

typedef struct t5_acts t5_acts_t;

// The activation arena for batches of at most (B, S, T), for the model as it is now
// (LoRA ranks and what is trainable included: attach adapters and call t5_set_trainable
// first). One allocation, reused by every step. A frozen encoder keeps no activations and
// a fully frozen model (evaluation) none at all, so their arenas are much smaller; making
// something trainable afterwards makes t5_forward ask for a new arena.
t5_acts_t *t5_acts_new(const t5_model_t *m, int B, int S, int T);
void t5_acts_free(t5_acts_t *a);
// The maximum (B, S, T) the arena was made for.
void t5_acts_capacity(const t5_acts_t *a, int *B, int *S, int *T);
// Bytes held by the arena.
size_t t5_acts_bytes(const t5_acts_t *a);
// Bytes t5_acts_new(m, B, S, T) would allocate (its t5_acts_bytes), from the same layout,
// without allocating them; m may be a table model (t5_init_table).
size_t t5_acts_size(const t5_model_t *m, int B, int S, int T);

// Teacher-forced forward: returns 0 and sets *loss (mean cross entropy over labels !=
// -100). drop: NULL or training = 0 for evaluation. Invalid ids give an error.
int t5_forward(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *b, const lb_drop_t *drop,
               float *loss, lb_err_t *err);

// 1 when nothing in the encoder is trainable (no encoder weight, norm, relative bias or
// adapter with a gradient, and no trainable shared embedding): the encoder then needs no
// backward, its activations are not kept (an arena made now holds one encoder block's
// buffers, reused by every block), and its output can be computed once per example and
// reused across epochs with t5_forward_with_encoder.
int t5_encoder_frozen(const t5_model_t *m);

// Runs only the encoder on input_ids/attention_mask of b (labels and T are ignored),
// without dropout, and copies its output (after the final norm) to enc_out [B, S, D]
// when not NULL. This is what a runner caches per example for a frozen encoder; compute it
// the same way in the first epoch so that results do not depend on the cache.
int t5_forward_encoder(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *b, lb_real *enc_out,
                       lb_err_t *err);

// t5_forward with the encoder output given (enc_out [B, S, D], as t5_forward_encoder made
// it; rows of padded positions are used as given): runs the decoder, the head and the loss
// only; t5_backward then works as after t5_forward. The attention mask of b still masks
// the cross attention. Refused when the encoder has anything trainable.
int t5_forward_with_encoder(const t5_model_t *m, t5_acts_t *a, const t5_batch_t *b,
                            const lb_real *enc_out, const lb_drop_t *drop, float *loss, lb_err_t *err);

// Backward of the last t5_forward (same drop): adds loss_scale·∂loss/∂p to every trainable
// gradient. Overwrites the logits with their gradient. Runs only what a trainable
// parameter needs: the encoder is skipped entirely when nothing in it (or the shared
// embedding) is trainable.
void t5_backward(const t5_model_t *m, t5_acts_t *a, const lb_drop_t *drop, float loss_scale);

// Results of the last forward, inside the arena (valid until the next call):
const lb_real *t5_acts_logits(const t5_acts_t *a);       // [B, T, V]
const lb_real *t5_acts_encoder_out(const t5_acts_t *a);  // [B, S, D], after the final norm
// Number of labels that counted in the last loss.
int t5_acts_n_tokens(const t5_acts_t *a);
// Encoder blocks whose backward has run since the arena was made (for tests: 0 when only
// the decoder is trained).
long t5_acts_encoder_backward_count(const t5_acts_t *a);

// Floating-point operations of the matrix products (2·M·N·K each) that the last
// t5_forward (backward = 0) or t5_backward (backward = 1) actually ran: every linear
// (with its LoRA products), q·kᵀ and P·v over the full Tq×Tk score matrices (the causal
// half included, as it is computed), and in the backward only the products that ran
// (no dW for frozen weights, no dx below the lowest trainable layer). Element-wise work
// (norms, softmax, activations, dropout, optimizer) is not counted.
double t5_acts_flops(const t5_acts_t *a, int backward);

// T5's relative position bucket (transformers' _relative_position_bucket) for
// relative_position = key position − query position.
int t5_relative_bucket(int relative_position, int bidirectional, int num_buckets, int max_distance);

#endif
