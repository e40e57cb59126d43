// Glue between a LoRA adapter (lora.h) and a loaded T5 (t5.h): the model's shape for
// target resolution, attaching an adapter's A/B (and their gradients) to the model's
// linear modules, detaching, and merging into / unmerging from the base weights.
#ifndef LB_LORA_T5_H
#define LB_LORA_T5_H

#include "lora.h"
#include "t5.h"

// The shape lora_create needs, from a T5 configuration.
void lora_shape_from_t5(const t5_config_t *c, lora_shape_t *s);

// lora_load for this model: its shape comes from m's configuration.
int lora_load_t5(lora_adapter_t *a, const char *dir, const t5_model_t *m, lb_err_t *err);

// Points every adapted linear of m at the adapter's A and B. grads, when not NULL, has the
// layout of a->params (every A then B) and receives their gradients in the backward pass;
// NULL attaches for inference only. Several adapters may be loaded; the one attached last is
// active. A module name the model lacks is an error naming it.
int lora_attach(lora_adapter_t *a, t5_model_t *m, float *grads, lb_err_t *err);

// Removes the adapter from every linear (the base model alone again).
void lora_detach(const lora_adapter_t *a, t5_model_t *m);

// W += s·B·A for every module (sign -1 undoes it), detaching the adapter first so the
// forward does not add it twice. Frozen weights are given private storage before the write.
int lora_merge_into_model(const lora_adapter_t *a, t5_model_t *m, int sign, lb_err_t *err);

// The base weight [out, in] of a module (writable), for lora_init's pissa and lora_merge.
float *lora_t5_weight(void *model, const char *module);

#endif
