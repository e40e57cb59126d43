// T5's random initialisation (transformers' T5PreTrainedModel._init_weights with
// initializer_factor 1): embedding N(0, 1), an untied head N(0, D^-1/2) as Mesh
// TensorFlow's T5 v1.1 (transformers uses 1, which starts the loss near 50, not log V), q N(0, (D·K)^-1/2), k and v
// N(0, D^-1/2), o N(0, (H·K)^-1/2), relative bias N(0, D^-1/2), wi N(0, D^-1/2),
// wo N(0, F^-1/2), layer norms 1. For pretraining the bundled model from scratch.
#ifndef LB_T5_INIT_H
#define LB_T5_INIT_H

#include <stdint.h>

#include "t5.h"

// Weights held in bf16 (t5_frozen_weights_bf16) get the same draws rounded to bf16.
void t5_init_random(t5_model_t *m, uint64_t seed);

// Loads dir as t5_load does, or, when dir has a config.json but no model.safetensors,
// builds the model from the config with t5_init_random(seed). *fresh = 1 then.
int t5_load_or_init(t5_model_t *m, const char *dir, uint64_t seed, int *fresh, lb_err_t *err);

#endif
