// Model facts: what a run of a T5 of a given configuration trains, how many parameters
// it has, the FLOPs of its steps and the memory it holds, without loading (or allocating)
// its weights. The one home of this arithmetic: the new-run form, `show`, the runs list
// and `bench` print these numbers or numbers that the test proves equal to them.
//
// Each function builds the model's parameter table without storage (t5_init_table) and
// applies the method the way a run does (train_params_setup; for LoRA the same
// lora_create and train_params_adopt_lora, without lora_init's values), so the counts are
// those of a real setup by construction, not by a second formula. It lives beside
// train.h because the method (train_method_opts_t) is defined there.
#ifndef LB_T5_FACTS_H
#define LB_T5_FACTS_H

#include <stddef.h>

#include "t5_config.h"
#include "train.h"
#include "util.h"

typedef struct {
    size_t base;         // t5_count_params: every tensor of the base model once
    size_t total;        // PEFT's "all params": base, plus the adapter for LoRA
    size_t trainable;    // train_params_t.n after train_params_setup (0 for none)
    int modules;         // LoRA: adapted modules; 0 for the other methods
    int tensors;         // full, partial: base tensors trained; 0 for the other methods
    // LoRA: the first adapted module, in Hugging Face order (the form's example line)
    char first_name[96];
    int first_in, first_out, first_r;
} t5_facts_params_t;

// Parameter counts of a run of method o on a model of cfg's shape. A LoRA choice that
// lora_create refuses, or a partial choice that holds no parameter, is an error with
// the message the run would give.
int t5_facts_params(const t5_config_t *cfg, const train_method_opts_t *o, t5_facts_params_t *out,
                    lb_err_t *err);

typedef struct {
    double forward;      // t5_acts_flops(a, 0) after t5_forward of a full (B, S, T) batch
    double backward;     // t5_acts_flops(a, 1) after the t5_backward that follows
} t5_facts_flops_t;

// Matrix-product FLOPs of one micro batch of B examples padded to S source and T target
// tokens, counted as the engine counts them when it runs (t5_acts_flops: every linear
// with its LoRA products, the attention products over the full score matrices; in the
// backward no weight gradient for a frozen weight, no input gradient below the lowest
// trainable layer). A training step is grad_accum times forward + backward; a run that
// reuses a frozen encoder's output (train.cache_encoder) skips the encoder's forward after
// its first epoch. tests/test_facts.c checks these against t5_acts_flops.
int t5_facts_flops(const t5_config_t *cfg, const train_method_opts_t *o, int B, int S, int T,
                   t5_facts_flops_t *out, lb_err_t *err);

typedef struct {
    size_t weights;      // the base model's values as held (t5_weight_bytes), trained ones included
    size_t weights_bf16; // the part of weights held in bf16
    size_t adapter;      // LoRA A and B values
    size_t grads;        // one gradient per trainable value
    size_t optimizer;    // AdamW's two moments per trainable value
    size_t acts;         // the activation arena for (B, S, T) (t5_acts_size)
    size_t packings;     // precision bf16: the weights' bf16 packings (t5_bf16_packing_bytes)
    size_t total;        // the sum of the above
} t5_facts_memory_t;

// Bytes a run holds: weights (fp32, or with frozen_bf16 or in precision bf16 the frozen
// linear weights in bf16 as t5_frozen_weights_bf16 keeps them), the trainable values'
// gradients and optimizer state, the activation arena t5_acts_new makes for batches of at
// most (B, S, T) and, in precision bf16, the weights' packings, in the precision a run
// asking for `precision` gets here (t5_precision_is_bf16). Tokenizer, data and the
// encoder-output cache are not counted.
int t5_facts_memory(const t5_config_t *cfg, const train_method_opts_t *o, int B, int S, int T,
                    int frozen_bf16, t5_precision_t precision, t5_facts_memory_t *out, lb_err_t *err);

#endif
