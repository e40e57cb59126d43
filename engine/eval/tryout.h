// One base model, many adapters: the base T5 is loaded once and each LoRA adapter is
// applied to it in turn without reloading it, either attached unmerged (the forward adds
// s·(x·Aᵀ)·Bᵀ; switching is a few pointer writes) or merged into W and unmerged again per
// request (TRYOUT_MERGE; W then changes in place, which for weights held in bf16 is lossy).
// A full fine-tune (a model directory rather than an adapter) is loaded as its own model,
// once, when it is added. Text in, text out, with the time of each request. Used by
// `lorabench generate --adapter … --include-base` and the workbench's Try screen.
#ifndef LB_TRYOUT_H
#define LB_TRYOUT_H

#include <stdint.h>

#include "generate.h"
#include "lora.h"
#include "t5.h"
#include "tokenizer.h"

typedef enum { TRYOUT_ATTACH, TRYOUT_MERGE } tryout_switch_t;

typedef struct {
    char *dir;
    int is_model;      // 1: a model directory with its own weights; 0: a LoRA adapter
    lora_adapter_t ad; // is_model 0
    t5_model_t m;      // is_model 1
} tryout_variant_t;

typedef struct {
    t5_model_t base;
    tokenizer_t *tok;        // the base's tokenizer.json, NULL when the folder has none
    t5_precision_t want, used;
    tryout_switch_t sw;
    int n;
    tryout_variant_t *v;
    int applied;             // the variant whose adapter is on the base now (-1: none)
    int model_loads;         // t5_load calls so far: the base, then one per model variant
    double load_s;           // their wall time
    double switch_s;         // wall time of the last tryout_use (applying / removing)
} tryout_t;

// TRYOUT_VARIANT_BASE selects the base model alone.
#define TRYOUT_VARIANT_BASE (-1)

// Loads the base model of model_dir (and its tokenizer.json when present) with the
// precision asked (t5_set_precision); sw says how adapters are applied.
int tryout_open(tryout_t *t, const char *model_dir, t5_precision_t precision, tryout_switch_t sw,
                lb_err_t *err);

// Adds a variant: dir holds adapter_config.json (a LoRA adapter for the base, read now) or
// config.json and model.safetensors (a model of its own, loaded now). Returns its index, or
// -1 with err naming the folder and what it lacks.
int tryout_add(tryout_t *t, const char *dir, lb_err_t *err);

// Makes variant v (or TRYOUT_VARIANT_BASE) the one generating and returns its model: the
// base with v's adapter applied (the previous one removed), or v's own model. No weights
// are loaded. t->switch_s gets the time it took.
const t5_model_t *tryout_use(tryout_t *t, int v, lb_err_t *err);

// Tokenizes n texts (with </s>) into a batch padded to the longest, S_out tokens, each cut
// to max_src tokens (0 = no limit) keeping </s>; an empty text is </s> alone. ids and mask
// are malloc'ed [n, S].
int tryout_encode_texts(const tokenizer_t *tok, const t5_config_t *cfg, const char *const *texts,
                        int n, int max_src, int32_t **ids, int32_t **mask, int *S_out, lb_err_t *err);

// The text of row b of a result, special tokens skipped (malloc'ed).
char *tryout_row_text(const tokenizer_t *tok, const generate_result_t *r, int b);

// Generates for n texts with variant v: out[i] gets malloc'ed texts, *seconds the time of
// the switch, the tokenizing and the generation together. Needs the tokenizer.
int tryout_generate_texts(tryout_t *t, int v, const char *const *texts, int n, int max_src,
                          const generate_opts_t *o, char **out, double *seconds, lb_err_t *err);

void tryout_free(tryout_t *t);

#endif
