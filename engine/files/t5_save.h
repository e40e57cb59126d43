// Writes a T5 as a Hugging Face model folder that transformers loads: config.json (copied
// from the source folder), model.safetensors with every parameter under its usual name
// (a tied model's embedding once, as shared.weight) and the tokenizer files copied.
#ifndef LB_T5_SAVE_H
#define LB_T5_SAVE_H

#include "t5.h"

// src_dir: the folder the model was loaded from (for config.json and tokenizer files).
int t5_save(const t5_model_t *m, const char *src_dir, const char *out_dir, lb_err_t *err);

// The same with the weights stored as dtype (ST_F32 or ST_BF16).
int t5_save_dtype(const t5_model_t *m, const char *src_dir, const char *out_dir, st_dtype_t dtype, lb_err_t *err);

#endif
