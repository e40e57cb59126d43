// T5 / FLAN-T5 configuration, read from a Hugging Face config.json with the defaults and
// derived fields transformers' T5Config applies.
#ifndef LB_T5_CONFIG_H
#define LB_T5_CONFIG_H

#include "util.h"

// Activation of the feed forward (transformers' dense_act_fn).
typedef enum {
    T5_ACT_RELU,      // "relu"
    T5_ACT_GELU,      // "gelu": exact, with erf
    T5_ACT_GELU_NEW,  // "gelu_new" / "gelu_pytorch_tanh": tanh approximation
    T5_ACT_SILU       // "silu" / "swish"
} t5_act_t;

typedef struct {
    int vocab_size;                   // V
    int d_model;                      // D
    int d_kv;                         // K
    int d_ff;                         // F
    int num_layers;                   // encoder blocks
    int num_decoder_layers;           // decoder blocks (absent: num_layers)
    int num_heads;                    // H; inner dimension = H·K (may differ from D)
    int relative_attention_num_buckets;
    int relative_attention_max_distance;
    t5_act_t act;
    int gated;                        // feed_forward_proj "gated-ACT": wi_0, wi_1, wo
    float layer_norm_epsilon;
    int tie_word_embeddings;          // absent: 1 (transformers' default)
    int scale_decoder_outputs;        // absent: tie_word_embeddings; scales by D^-0.5
    float dropout_rate;
    int pad_token_id, eos_token_id, decoder_start_token_id;
    char feed_forward_proj[32];       // as written, for messages and saving
} t5_config_t;

// Parses config.json text; name is the path used in messages. Missing required fields
// (vocab_size, d_model, d_kv, d_ff, num_layers, num_heads) and wrong-typed or out-of-range
// fields give one message naming the file and the field.
int t5_config_parse(t5_config_t *c, const char *json, const char *name, lb_err_t *err);

// Reads path (a config.json, or a model directory holding one) with t5_config_parse.
int t5_config_load(t5_config_t *c, const char *path, lb_err_t *err);

// Name of an activation as transformers spells it ("gelu_new", ...).
const char *t5_act_name(t5_act_t a);

#endif
