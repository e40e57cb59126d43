// Experiment specs: the JSON that describes one run (or, with "grid", a sweep), read into
// a struct with every default filled in and every field checked. A bad field gets one
// sentence that starts with its JSON path ("lora.r: ...") and names the allowed values.
//
// Format (ARCHITECTURE.md); every key is optional except base_model and dataset.path;
// keys starting with "_" are comments and ignored; null means "the default".
//   { "name", "base_model",
//     "dataset": {path, source, target, prefix, template, split_ratio, max_source_tokens,
//                 max_target_tokens, limit},
//     "method": none|lora|full|partial,
//     "lora": {r, alpha, dropout, targets: [q k v o wi wi_0 wi_1 wo lm_head],
//              stacks: [encoder decoder], attention: [self cross], layers: "all"|[ints],
//              rslora, init: kaiming|gaussian|pissa, rank_pattern: {}, alpha_pattern: {}},
//     "partial": {top_blocks, stack: encoder|decoder|both, norms_only},
//     "train": {epochs, max_steps, batch_size, grad_accum, lr, weight_decay, warmup,
//               schedule: linear|cosine|constant, max_grad_norm, seed, eval_every,
//               checkpoint_every, loraplus_ratio, position_bias_lr_ratio, objective,
//               denoise_fraction, cache_encoder, frozen_weights_bf16,
//               precision: auto|fp32|bf16},
//     "eval": {split: validation|test|train, limit, beams, max_new_tokens, length_penalty,
//              no_repeat_ngram_size, stemmer},
//     "threads",
//     "grid": {"lora.r": [4, 8], "lora.targets": [["q","v"], ["q","k","v","o"]], ...} }
#ifndef LB_SPEC_H
#define LB_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train.h"
#include "util.h"

typedef enum { SPEC_METHOD_NONE, SPEC_METHOD_LORA, SPEC_METHOD_FULL, SPEC_METHOD_PARTIAL } spec_method_t;

// Same order as the engine's LORA_INIT_* constants.
typedef enum { SPEC_INIT_KAIMING, SPEC_INIT_GAUSSIAN, SPEC_INIT_PISSA } spec_init_t;

typedef enum { SPEC_SCHEDULE_LINEAR, SPEC_SCHEDULE_COSINE, SPEC_SCHEDULE_CONSTANT } spec_schedule_t;

// train.objective: summarization fine-tuning, or T5's span corruption (pretraining; with a
// base_model folder that has no model.safetensors the weights start from T5's random init).
typedef enum { SPEC_OBJ_SUMMARIZE, SPEC_OBJ_SPAN_CORRUPTION } spec_objective_t;

typedef enum { SPEC_SPLIT_VALIDATION, SPEC_SPLIT_TEST, SPEC_SPLIT_TRAIN } spec_split_t;

// partial.stack
typedef enum { SPEC_PART_ENCODER, SPEC_PART_DECODER, SPEC_PART_BOTH } spec_part_stack_t;

// lora.targets bits, in PEFT's module names (bit i = spec_target_name(i)).
enum {
    SPEC_T_Q = 1 << 0, SPEC_T_K = 1 << 1, SPEC_T_V = 1 << 2, SPEC_T_O = 1 << 3,
    SPEC_T_WI = 1 << 4, SPEC_T_WI_0 = 1 << 5, SPEC_T_WI_1 = 1 << 6, SPEC_T_WO = 1 << 7,
    SPEC_T_LM_HEAD = 1 << 8,
    SPEC_N_TARGETS = 9
};
// lora.stacks and lora.attention bits.
enum { SPEC_STACK_ENCODER = 1, SPEC_STACK_DECODER = 2 };
enum { SPEC_ATTN_SELF = 1, SPEC_ATTN_CROSS = 2 };

// Limits shared with the engine's lora_config_t.
#define SPEC_MAX_RANK 8192
#define SPEC_MAX_LAYERS 128
#define SPEC_MAX_PATTERNS 32
#define SPEC_MAX_PATTERN_KEY 127

typedef struct {
    char *key;     // module-name suffix, e.g. "decoder.block.5.layer.0.SelfAttention.q"
    double value;  // rank (a whole number) or alpha
} spec_pattern_t;

typedef struct {
    char *name;
    bool name_auto;        // no name was given: it was made from the settings
    char *base_model;      // Hugging Face model folder
    struct {
        char *path;
        char *source, *target;   // field names; "" = the loader's known names
        char *prefix;            // e.g. "summarize: "
        char *template_text;     // JSON "template", must hold {source}; excludes prefix
        double split_ratio;      // fraction for training when path is one file
        int max_source_tokens, max_target_tokens;
        int limit;               // training examples used, 0 = all
    } dataset;
    spec_method_t method;
    struct {
        int r;
        double alpha, dropout;
        unsigned targets;        // SPEC_T_* bits
        unsigned stacks;         // SPEC_STACK_* bits
        unsigned attention;      // SPEC_ATTN_* bits
        int n_layers;            // 0 = "all"
        int *layers;             // [n_layers] block indices
        bool rslora;
        spec_init_t init;
        int n_rank_pattern, n_alpha_pattern;
        spec_pattern_t *rank_pattern, *alpha_pattern;
    } lora;
    struct {
        int top_blocks;          // train the top K blocks; 0 = every block
        spec_part_stack_t stack;
        bool norms_only;         // only the layer-norm weights of those blocks
    } partial;
    struct {
        int epochs, max_steps;   // max_steps > 0 wins over epochs
        int batch_size, grad_accum;
        double lr, weight_decay;
        double warmup;           // < 1: fraction of the steps; >= 1: steps
        spec_schedule_t schedule;
        spec_objective_t objective;
        double denoise_fraction;  // span_corruption: the share of examples whose target is
                                  // the whole text (denoising) instead of the hidden spans
        double max_grad_norm;    // 0 = no clipping
        int64_t seed;
        int eval_every;          // steps; 0 = only at the end
        int checkpoint_every;    // steps; 0 = only at the end and on SIGTERM
        double loraplus_ratio;   // learning rate of B over that of A (LoRA+); 1 = plain
        double position_bias_lr_ratio;  // learning rate of the relative position biases
                                 // over the rest (full, partial); 1 = one rate for all
        bool cache_encoder;      // when nothing in the encoder trains, compute its output
                                 // once per example (without dropout) and reuse it
        bool frozen_weights_bf16;  // hold the frozen linear weights in bf16 (half their
                                   // memory; rounds fp32 checkpoints' weights)
        t5_precision_t precision;  // of the matrix products (t5_set_precision; the run
                                   // records what it used)
    } train;
    struct {
        spec_split_t split;
        int limit;               // examples, 0 = all
        int beams, max_new_tokens;
        double length_penalty;
        int no_repeat_ngram_size;
        bool stemmer;
    } eval;
    int threads;                 // 0 = as many as there are cores
    char *grid_json;             // the "grid" object as JSON, or NULL
} spec_t;

// One problem with a spec: path is the JSON path ("lora.r", "lora.targets[2]"), msg the
// whole sentence (starting with the path).
typedef struct {
    char path[96];
    char msg[400];
} spec_problem_t;

// Fills every default (strings allocated); base_model and dataset.path stay NULL.
void spec_init_defaults(spec_t *s);

// Frees the members of s (not s itself) and zeroes it.
void spec_free(spec_t *s);

// Deep copy.
void spec_copy(spec_t *dst, const spec_t *src);

// Parses spec JSON text. origin (a file name, or NULL) names the source in JSON syntax
// errors. The result is complete (defaults filled in) and valid, grid values included;
// otherwise -1 with the first problem in err and *out zeroed. Paths are not resolved.
int spec_parse(const char *json, const char *origin, spec_t *out, lb_err_t *err);

// Reads and parses a spec file, then resolves base_model and dataset.path against the
// file's folder, then the current directory (spec_resolve_paths).
int spec_load_file(const char *path, spec_t *out, lb_err_t *err);

// Checks the values of a spec struct (ranges, required fields, combinations), e.g. one the
// TUI's form filled in. Writes up to max problems to out (may be NULL) and returns how many
// there are in all (0 = valid).
int spec_problems(const spec_t *s, spec_problem_t *out, int max);

// The first problem of spec_problems in err; 0 when valid.
int spec_check(const spec_t *s, lb_err_t *err);

// Canonical JSON: every field with its value (defaults included), keys in a fixed order,
// grid last when present. pretty: indented for people; else one line (runs.spec).
// parse(to_json(s)) gives s back. malloc'd; free with free().
char *spec_to_json(const spec_t *s, int pretty);

// Sets the field at a dotted path (e.g. "lora.r", "train.lr", "lora.targets") from a JSON
// value text ("16", "[\"q\",\"v\"]", "\"cosine\""), then checks the whole spec; on error s
// is unchanged.
int spec_set(spec_t *s, const char *path, const char *json_value, lb_err_t *err);

// Resolves a relative path against dir (the spec file's folder; may be NULL), then the
// current directory, and returns the absolute path of the first that exists in *out.
// An absolute path must exist. Fails with a message naming both places looked in.
int spec_resolve_path(const char *dir, const char *path, char **out, lb_err_t *err);

// spec_resolve_path on base_model and dataset.path; messages start with the field name.
int spec_resolve_paths(spec_t *s, const char *dir, lb_err_t *err);

// Expands the grid: the cartesian product of its value lists (first key slowest), each
// point a full spec without grid, named "<name>-<label>..." (e.g. "rank-r8-qv"; a spec
// without a name gives "lora-r8"). Labels of fields the point's method does not use are
// left out: a zero-shot point is "<name>-zero-shot" whatever lr or rank the grid varies. A spec without grid expands to a copy of itself.
// *out is an array of *n specs; free with spec_list_free.
int spec_expand_grid(const spec_t *base, spec_t **out, size_t *n, lb_err_t *err);

// Frees an array of n specs from spec_expand_grid.
void spec_list_free(spec_t *specs, size_t n);

// Names: "lora", "kaiming", "cosine", "validation", "decoder", "wi_0" ...
const char *spec_method_name(spec_method_t m);
const char *spec_init_name(spec_init_t i);
const char *spec_schedule_name(spec_schedule_t s);
const char *spec_objective_name(spec_objective_t o);
const char *spec_split_name(spec_split_t s);
const char *spec_part_stack_name(spec_part_stack_t s);
const char *spec_target_name(int bit_index);

// The targets as runs.targets shows them, e.g. "q,v" (comma-separated, fixed order).
void spec_targets_string(unsigned targets, char *buf, size_t size);

// Warmup in steps for a run of total_steps: a fraction below 1 is rounded up.
int spec_warmup_steps(const spec_t *s, int total_steps);

// The optimizer steps of a run over n_train training examples (before dataset.limit):
// train.max_steps when set, else train.epochs passes of ceil(examples / batch_size)
// batches, grad_accum of them per step; at least 1. The runner and the new-run form's time
// estimate both count with it.
long spec_total_steps(const spec_t *s, long n_train);

// The spec's method, LoRA configuration, partial choice and learning-rate groups in the
// engine's terms: what train_params_setup makes trainable, and what parameter counts
// without a model (the new-run form) count.
void spec_method_opts(const spec_t *sp, train_method_opts_t *o);

#endif
