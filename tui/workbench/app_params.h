// What the new-run form shows for a spec, from the engine's model facts (t5_facts.h): the
// model's config.json read by t5_config_load, the spec's method by spec_method_opts, and
// the counts, FLOPs and memory of t5_facts_*. No arithmetic of its own beyond formatting,
// so the form and a run cannot disagree (tests/test_facts.c holds them to a real setup).
#ifndef LB_APP_PARAMS_H
#define LB_APP_PARAMS_H

#include <stddef.h>

#include "spec.h"
#include "t5_facts.h"
#include "util.h"

typedef struct {
    t5_config_t cfg;            // base_model's config.json
    train_method_opts_t method; // spec_method_opts
    int B, S, T, grad_accum;    // train.batch_size, dataset.max_source/target_tokens, train.grad_accum
    t5_facts_params_t params;
    t5_facts_flops_t flops;     // one micro batch of (B, S, T)
    t5_facts_memory_t mem;      // with train.frozen_weights_bf16 as the spec says
} app_spec_facts_t;

// The facts of a spec's run; -1 with the reason (config.json unreadable, a LoRA or partial
// choice the run would refuse) in err.
int app_spec_facts(const spec_t *s, app_spec_facts_t *out, lb_err_t *err);

// Formats the first adapted module's arithmetic, e.g.
// "q: 384×512 W → 8·(512+384) = 7,168 trainable, 96% fewer" (ASCII: "384x512 W -> 8*(512+384)").
void app_lora_explain(const t5_facts_params_t *p, int ascii, char *buf, size_t cap);

#endif
