// Training: one optimizer step over a batch (with gradient accumulation over micro
// batches), an epoch over token-id pairs, and the batch file of `lorabench tensors`.
// Progress goes to a callback so the engine keeps no I/O policy.
#ifndef LB_TRAIN_H
#define LB_TRAIN_H

#include <stdint.h>

#include "optim.h"
#include "t5.h"
#include "util.h"

typedef struct {
    long step;            // optimizer steps done (1 after the first)
    int epoch;
    float loss;           // mean loss of the step's micro batches
    float lr;             // learning rate used by this step
    float grad_norm;      // global norm before clipping
    double tokens_per_s;  // (source + target tokens) / wall time of the step
    double step_s;        // wall time of the step
} train_progress_t;

typedef void (*train_progress_fn)(const train_progress_t *p, void *user);

typedef struct {
    float lr;                 // peak learning rate
    float weight_decay;
    float beta1, beta2, eps;  // AdamW (0.9, 0.999, 1e-8 from train_opts_default)
    float max_grad_norm;      // <= 0: no clipping
    optim_sched_t schedule;
    long warmup_steps;
    long total_steps;         // for the schedule
    int grad_accum;           // micro batches per optimizer step (>= 1)
    uint64_t seed;            // dropout masks and shuffling
    int dropout;              // 1: dropout as config.json says; 0: off
} train_opts_t;

// lr 1e-3, no decay, AdamW betas 0.9/0.999, eps 1e-8, clip 1.0, linear schedule without
// warmup over 1000 steps, no accumulation, seed 42, dropout on.
void train_opts_default(train_opts_t *o);

// A contiguous run of trainable values and their gradients that the optimizer walks.
typedef struct {
    lb_real *p, *g;
    size_t n;
    const optim_range_t *ranges;  // lr multipliers (LoRA+), may be NULL
    int n_ranges;
} train_block_t;

#define TRAIN_MAX_BLOCKS 8

typedef struct {
    train_opts_t o;
    t5_model_t *m;
    t5_acts_t *a;
    int n_blocks;
    train_block_t blocks[TRAIN_MAX_BLOCKS];
    adamw_t opt[TRAIN_MAX_BLOCKS];
    long step;
    int epoch;
    train_progress_fn cb;
    void *user;
} train_t;

// Prepares training of m with activations a. The model's own trainable block (see
// t5_set_trainable) is added automatically when not empty; adapters add theirs with
// train_add_block.
int train_init(train_t *t, t5_model_t *m, t5_acts_t *a, const train_opts_t *o, lb_err_t *err);
int train_add_block(train_t *t, const train_block_t *b, lb_err_t *err);
void train_free(train_t *t);

// One optimizer step: zero gradients, forward + backward of each micro batch (loss scaled
// by 1/n), global-norm clipping, learning rate from the schedule, AdamW. *loss gets the
// mean loss. The progress callback is called once.
int train_step(train_t *t, const t5_batch_t *micro, int n_micro, float *loss, lb_err_t *err);

// One source/target pair of token ids (targets end with </s>).
typedef struct {
    const int32_t *src;
    int n_src;
    const int32_t *tgt;
    int n_tgt;
} train_pair_t;

// One epoch over pairs in an order shuffled from (seed, epoch), batch_size pairs per micro
// batch (padded to the longest, truncated to the arena's S and T), grad_accum micro
// batches per step. Stops early after max_steps optimizer steps in total when > 0.
int train_epoch(train_t *t, const train_pair_t *pairs, int n, int batch_size, long max_steps,
                lb_err_t *err);

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
