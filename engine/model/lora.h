// LoRA adapters as PEFT defines them: which linear modules of a T5 are adapted, with what
// rank and alpha, their A [R, in] and B [out, R] matrices, initialisation (kaiming as PEFT,
// gaussian as the paper, pissa from the SVD of W), merge/unmerge, and the PEFT files
// adapter_config.json + adapter_model.safetensors.
//
// The adapter is independent of the model code: the caller describes the model's shape
// (lora_shape_t) and gives the frozen weight of a module by name when one is needed
// (pissa, merge). Module names are Hugging Face's, e.g.
// "decoder.block.3.layer.1.EncDecAttention.q"; the file names prefix them with
// "base_model.model." and suffix ".lora_A.weight" / ".lora_B.weight".
#ifndef LB_LORA_H
#define LB_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

// Which kinds of linear modules a T5 has, for target matching and counting.
typedef struct {
    int d_model, inner, d_ff, vocab;  // inner = num_heads * d_kv
    int n_enc, n_dec;                 // blocks in encoder / decoder
    int gated;                        // 1: wi_0, wi_1, wo; 0: wi, wo
    int n_heads, buckets;             // for counting the relative position bias
} lora_shape_t;

enum { LORA_INIT_KAIMING, LORA_INIT_GAUSSIAN, LORA_INIT_PISSA, LORA_INIT_RANDOM_BOTH };

#define LORA_MAX_TARGETS 320
#define LORA_MAX_LAYERS 128
#define LORA_MAX_PATTERNS 32
#define LORA_MAX_RANK 8192

typedef struct {
    char key[128];   // module-name suffix, e.g. "q" or "decoder.block.0.layer.0.SelfAttention.q"
    double value;
} lora_pattern_t;

// An adapter's configuration: PEFT's LoraConfig fields in our terms.
typedef struct {
    int r;
    double alpha;
    double dropout;
    int rslora;                            // scale alpha/sqrt(r) instead of alpha/r
    int init;                              // LORA_INIT_*
    int n_targets;
    char targets[LORA_MAX_TARGETS][96];    // q k v o wi wi_0 wi_1 wo lm_head, or full module names
    char target_regex[256];                // PEFT's string form: a regex the whole name must match
    int stacks;                            // bit 0 encoder, bit 1 decoder (0 = both)
    int attention;                         // bit 0 self, bit 1 cross (0 = both)
    int n_layers;                          // 0 = every block
    int layers[LORA_MAX_LAYERS];
    int n_rank_pattern, n_alpha_pattern;
    lora_pattern_t rank_pattern[LORA_MAX_PATTERNS], alpha_pattern[LORA_MAX_PATTERNS];
    char base_model[512];                  // base_model_name_or_path (may be empty)
} lora_config_t;

// Fills the defaults PEFT uses: r 8, alpha 8, dropout 0, targets q and v, kaiming init.
void lora_config_default(lora_config_t *c);

// One adapted module.
typedef struct {
    char name[96];   // Hugging Face module name
    int in, out, r;
    float scale;     // alpha / r, or alpha / sqrt(r) with rsLoRA
    float *A;        // [r, in], inside the adapter's parameter block
    float *B;        // [out, r]
} lora_module_t;

typedef struct {
    lora_config_t cfg;
    int n;
    lora_module_t *m;
    float *params;        // every A then B, back to back: what the optimizer walks
    size_t n_params;
} lora_adapter_t;

// Builds the adapter for cfg on a model of shape s: resolves targets (an unknown name gets
// an error listing the valid ones for this model), applies rank/alpha patterns and
// allocates A and B. Weights are zero until lora_init or lora_load.
int lora_create(lora_adapter_t *a, const lora_config_t *cfg, const lora_shape_t *s, lb_err_t *err);

void lora_free(lora_adapter_t *a);

// Returns the weight [out, in] of a module, for pissa; NULL if absent.
typedef float *(*lora_weight_fn)(void *ctx, const char *module);

// Initialises A and B as cfg.init says, from seed. pissa also replaces each W by its
// residual W - s·B·A, through get_weight.
int lora_init(lora_adapter_t *a, uint64_t seed, lora_weight_fn get_weight, void *ctx, lb_err_t *err);

// The adapted module of that name, or NULL.
lora_module_t *lora_find(const lora_adapter_t *a, const char *module);

// Merges (sign +1) or unmerges (-1) every module into the weights that get_weight gives.
int lora_merge(const lora_adapter_t *a, lora_weight_fn get_weight, void *ctx, int sign, lb_err_t *err);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors as PEFT does.
int lora_save(const lora_adapter_t *a, const char *dir, lb_err_t *err);

// Parses adapter_config.json text (len bytes); path names it in messages.
int lora_parse_config(const char *text, size_t len, const char *path, lora_config_t *cfg, lb_err_t *err);

// Reads an adapter from dir for a model of shape s: the config, then every tensor; a file
// whose tensors do not fit (missing, extra, wrong shape) is refused with the first
// offending name.
int lora_load(lora_adapter_t *a, const char *dir, const lora_shape_t *s, lb_err_t *err);

// PEFT's print_trainable_parameters line:
// "trainable params: 344,064 || all params: 77,305,216 || trainable%: 0.4451"
void lora_format_trainable(char *out, size_t n, size_t trainable, size_t all);

#endif
