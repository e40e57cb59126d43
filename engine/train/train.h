// Training: what a method trains (train_params_setup), the one optimizer step every caller
// uses (train_step: the runner, `bench`, `tensors`, pretraining), the feed of micro batches
// over tokenized data, and the batch file of `lorabench tensors`. The engine keeps no I/O
// policy: callers get a train_result_t per step and report it as they like.
#ifndef LB_TRAIN_H
#define LB_TRAIN_H

#include <stdint.h>

#include "data.h"
#include "lora.h"
#include "optim.h"
#include "t5.h"
#include "util.h"

// ---- what a run trains ------------------------------------------------------------------

typedef enum { TRAIN_METHOD_NONE, TRAIN_METHOD_LORA, TRAIN_METHOD_FULL, TRAIN_METHOD_PARTIAL } train_method_t;

typedef struct {
    train_method_t method;
    lora_config_t lora;             // TRAIN_METHOD_LORA
    t5_partial_t partial;           // TRAIN_METHOD_PARTIAL (n_enc, n_dec: filled from the model)
    uint64_t seed;                  // LoRA initialisation
    double loraplus_ratio;          // LoRA+: B matrices at lr·ratio (1: off)
    double position_bias_lr_ratio;  // full/partial: relative position biases at lr·ratio (1: off)
} train_method_opts_t;

// Sets o to method with its defaults: LoRA as lora_config_default, partial the top 2 blocks
// of both stacks, seed 42, both ratios 1.
void train_method_opts_default(train_method_opts_t *o, train_method_t method);

// Whether the base parameter `name` (Hugging Face name) of a model with cfg's shape is
// trained by the method (LoRA and none train no base parameter). The one rule that the
// setup below applies and that parameter counts without a model use.
int train_method_trains(const train_method_opts_t *o, const t5_config_t *cfg, const char *name);

// What a run trains, as one contiguous run of values and gradients the optimizer walks:
// the adapter's A and B (LoRA) or the model's trainable block (full, partial).
typedef struct {
    train_method_t method;
    lora_adapter_t lora;     // TRAIN_METHOD_LORA: created, initialised and attached
    int has_lora;
    lb_real *params, *grads; // [n] each
    size_t n;
    optim_range_t *ranges;   // learning-rate groups (LoRA+, position biases), may be NULL
    int n_ranges;
    lb_real *lora_grads;     // owned by this struct
} train_params_t;

// Makes m's parameters trainable as o says (a LoRA adapter is created from o->lora, drawn
// from o->seed and attached; a loaded adapter is attached with train_params_adopt_lora).
// A partial choice that holds no parameter is an error naming the fix.
int train_params_setup(train_params_t *tp, t5_model_t *m, const train_method_opts_t *o, lb_err_t *err);

// Takes an adapter already made (e.g. lora_load_t5): freezes m, attaches it, trains its A
// and B. The adapter is owned by tp afterwards.
int train_params_adopt_lora(train_params_t *tp, t5_model_t *m, lora_adapter_t *ad, lb_err_t *err);
void train_params_free(train_params_t *tp);

// ---- the training step -----------------------------------------------------------------

typedef struct {
    float lr;                 // peak learning rate
    float weight_decay;
    float beta1, beta2, eps;  // AdamW (0.9, 0.999, 1e-8 from train_opts_default)
    float max_grad_norm;      // <= 0: no clipping
    optim_sched_t schedule;
    long warmup_steps;
    long total_steps;         // for the schedule
    int grad_accum;           // micro batches per optimizer step (>= 1)
    uint64_t seed;            // dropout masks
    int dropout;              // 1: dropout as config.json says; 0: off
} train_opts_t;

// lr 1e-3, no decay, AdamW betas 0.9/0.999, eps 1e-8, clip 1.0, linear schedule without
// warmup over 1000 steps, no accumulation, seed 42, dropout on.
void train_opts_default(train_opts_t *o);

// How the ranks of a data-parallel run (lorabench under mpirun) combine their work: every
// rank computes its share of each global batch (the feed's rank/ranks), and the step sums
// the loss sums, token counts and gradients over the ranks, so that each rank applies the
// update one process would from the whole batch. The engine knows no MPI: the caller
// supplies the sums (experiments/run/lb_mpi.c). NULL in train_t: one process.
typedef struct {
    int rank, size;
    // Sums buf[0..n) over the ranks, the result on every rank. 0, or -1 with err.
    int (*sum)(void *ctx, lb_real *buf, size_t n, lb_err_t *err);
    int (*sum_f64)(void *ctx, double *buf, size_t n, lb_err_t *err);
    void *ctx;
} train_comm_t;

// Where a step's micro batches come from, and (optionally) how one is run forward.
typedef struct {
    // Micro batch number `micro` of the whole run (step·grad_accum + k): fills *b, which
    // stays valid until the next call (B = 0: this rank's share is empty). Required.
    int (*next)(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err);
    // The forward of the batch just returned by next, in place of t5_forward (the
    // runner's encoder-output cache). NULL: t5_forward.
    int (*forward)(void *ctx, t5_model_t *m, t5_acts_t *a, const t5_batch_t *b, const lb_drop_t *drop,
                   float *loss, lb_err_t *err);
    void *ctx;
} train_feed_t;

// What one step did.
typedef struct {
    long step;           // optimizer steps done (1 after the first)
    float loss;          // mean loss of the step's micro batches (each: per target token)
    float lr;            // learning rate used by this step
    double grad_norm;    // global norm before clipping
    long tokens;         // source + target tokens that are not padding (all ranks')
    double seconds;      // wall time of the step
    double comm_seconds; // of which in train_comm_t's sums (waiting for the slowest rank included)
} train_result_t;

typedef struct {
    train_opts_t o;
    t5_model_t *m;
    t5_acts_t *a;
    train_params_t *tp;
    adamw_t opt;         // moments of tp's values; opt.t steps taken (restored on resume)
    long step;           // optimizer steps done
    const train_comm_t *comm;  // data-parallel ranks (set after train_init); NULL: one process
} train_t;

// Prepares training of tp's values on m with activations a. In bf16 precision (m->bf16)
// a run that trains base weights keeps AdamW's first moment in bf16 (train_keeps_m_bf16).
void train_init(train_t *t, t5_model_t *m, t5_acts_t *a, train_params_t *tp, const train_opts_t *o);

// 1 when a run of this method in bf16 precision (bf16 1) keeps AdamW's first moment in
// bf16 (adamw_keep_m_bf16): full and partial fine-tuning, whose moments are 4 bytes a
// model parameter each; a LoRA adapter's are too small to matter and stay fp32.
int train_keeps_m_bf16(train_method_t method, int bf16);
void train_free(train_t *t);

// The gradients of one step without the update: zero them, then forward + backward of
// o.grad_accum micro batches from feed (loss scaled by 1/grad_accum, dropout masks from
// (seed, micro)); the loss and the global gradient norm are checked for NaN/inf (LB_ENAN,
// naming the step). r gets the mean loss, norm and tokens. With t->comm, each micro batch's
// loss is the global batch's (loss sums and target tokens summed over the ranks before the
// backward, which is scaled by this rank's share of the tokens) and the gradients are
// summed after the last backward; a failure on any rank fails the step on every rank.
int train_gradients(train_t *t, const train_feed_t *feed, train_result_t *r, lb_err_t *err);

// The update from the gradients train_gradients left (r from it): clipping by the global
// norm, the learning rate of the schedule (r->lr), AdamW with tp's learning-rate groups
// (the only caller of adamw_step), the bf16 copies of trained weights; r->step counts it.
void train_apply(train_t *t, train_result_t *r);

// One optimizer step: train_gradients, then train_apply.
int train_step(train_t *t, const train_feed_t *feed, train_result_t *r, lb_err_t *err);

// ---- the data feed ----------------------------------------------------------------------

// Micro batches of tokenized examples, epoch after epoch: each epoch's batches planned by
// data_plan_batches from (seed, epoch), padded by data_batch_make. The position (epoch,
// batch: the next batch to hand out) is what a checkpoint saves. With `make` set, a batch's
// tensors come from it instead (span corruption draws inputs and labels per micro batch).
typedef struct {
    const data_tokenized_t *data;
    int batch_size;
    uint64_t seed;
    int pad_id, start_id;
    int epoch, batch;     // position
    int rank, ranks;      // data parallel: this rank's rows of every batch (ranks 0 or 1: all)
    int (*make)(void *ctx, const int *idx, int n, uint64_t micro, data_batch_t *b, lb_err_t *err);
    void *make_ctx;
    data_plan_t plan;
    int plan_epoch;       // the epoch `plan` belongs to (-1: none)
    data_batch_t cur;     // the batch handed out last (cur.index: its examples)
    int have_cur;
} train_data_feed_t;

void train_data_feed_init(train_data_feed_t *f, const data_tokenized_t *data, int batch_size, uint64_t seed,
                          int pad_id, int start_id);
void train_data_feed_free(train_data_feed_t *f);
// The feed's `next`, for train_feed_t (ctx: a train_data_feed_t). Every rank plans the same
// global batches; rank k of n takes rows [B·k/n, B·(k+1)/n) of each, padded on their own
// (padding does not change a row's loss), so the plan and position do not depend on n.
int train_data_feed_next(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err);
// Batches in the current epoch (its plan is made when needed), or -1 with err.
int train_data_feed_batches(train_data_feed_t *f, lb_err_t *err);

// A batch with its own storage.
typedef struct {
    t5_batch_t b;
    int32_t *mem;
} train_batch_t;

// Reads input_ids [B, S], attention_mask [B, S] (absent: all 1) and labels [B, T] from a
// JSON object (the format of tests/fixtures/hf/t5-gated-a/batch.json).
int train_batch_read_json(train_batch_t *out, const char *path, lb_err_t *err);
void train_batch_free(train_batch_t *b);

#endif
