// The arithmetic of the new-run form: a T5's shape from its config.json, and how many
// parameters a LoRA adapter (or a full fine-tune) trains, counted as PEFT counts them.
// Pure functions, so that the numbers the form shows are tested on their own.
#ifndef LB_APP_PARAMS_H
#define LB_APP_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct {
    int d_model, d_kv, num_heads, d_ff;
    int num_layers, num_decoder_layers, vocab_size, buckets;
    int gated;  // feed_forward_proj "gated-*": wi_0, wi_1 instead of wi
    int tied;   // tie_word_embeddings: no separate lm_head
} app_model_shape_t;

// Where adapters go: one row per place, one bit per module kind in it.
enum { LOC_ENC_SELF, LOC_DEC_SELF, LOC_DEC_CROSS, LOC_ENC_FFN, LOC_DEC_FFN, LOC_N };
enum { MOD_Q = 1, MOD_K = 2, MOD_V = 4, MOD_O = 8, MOD_WI = 16, MOD_WO = 32 };

typedef struct {
    int64_t trainable;  // LoRA A and B of every adapted module
    int64_t total;      // every parameter of the base model
    int modules;        // adapted modules
    // the first adapted module, for the "in×out W → r·(in+out)" line
    int ex_in, ex_out;
    const char *ex_name;
} app_param_count_t;

// Reads d_model, d_kv, num_heads, d_ff, num_layers, num_decoder_layers (default
// num_layers), vocab_size, relative_attention_num_buckets (default 32), feed_forward_proj
// and tie_word_embeddings (default 1) from <model_dir>/config.json.
int app_model_shape_read(const char *model_dir, app_model_shape_t *s, lb_err_t *err);

// Parameters of the whole base model (embeddings, every block, norms, relative position
// biases, the untied head).
int64_t app_model_total_params(const app_model_shape_t *s);

// LoRA of rank r on the modules in mask[LOC_N] (MOD_* bits; on a gated model MOD_WI means
// both wi_0 and wi_1), plus lm_head when lm_head is set, in every block of each stack.
void app_lora_count(const app_model_shape_t *s, int r, const unsigned mask[LOC_N], int lm_head,
                    app_param_count_t *out);

// Parameters that the partial method trains: every weight of the top top_blocks blocks
// (0: all blocks) of the chosen stacks (bit 1 encoder, bit 2 decoder) plus each chosen
// stack's final layer norm, as the runner selects them; the relative position bias counts
// when block 0 is among them.
int64_t app_partial_count(const app_model_shape_t *s, int top_blocks, unsigned stacks);

// GFLOP of one forward pass over a batch of B examples with S source and T target tokens:
// 2 per weight and token in every linear (encoder weights see S tokens, decoder weights and
// the head T), plus the attention products (q·kᵀ and P·v). A training step costs about 2×
// this with adapters (no weight gradients for the frozen base) and 3× for a full fine-tune
// (BENCHMARKS.md measured 2.06× and 3.0× on FLAN-T5-small).
double app_forward_gflop(const app_model_shape_t *s, int B, int S, int T);

// Formats the arithmetic line, e.g. "512×384 W → 8·(512+384) = 7,168 trainable, 98% fewer"
// (ASCII: "512x384 W -> 8*(512+384) = ..."), into buf.
void app_lora_explain(const app_param_count_t *c, int r, int ascii, char *buf, size_t cap);

#endif
