// Optimizer pieces with PyTorch semantics: AdamW (torch.optim.AdamW, single-tensor path),
// global-norm gradient clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate
// schedules of transformers (linear / cosine with warmup).
#ifndef LB_OPTIM_H
#define LB_OPTIM_H

#include <stddef.h>

#include "linear.h"

// A run of parameters [off, off + n) of a block with its own learning-rate multiplier
// (LoRA+: B matrices at lr·ratio) and weight-decay multiplier.
typedef struct {
    size_t off, n;
    float lr_mult;
    float wd_mult;
} optim_range_t;

// AdamW state for one contiguous block of n parameters.
typedef struct {
    float beta1, beta2, eps, weight_decay;
    size_t n;
    float *m, *v;   // [n] first and second moments (m NULL when kept in bf16:)
    uint16_t *m16;  // [n] the first moment in bf16 (adamw_keep_m_bf16), else NULL
    long t;         // steps taken
} adamw_t;

void adamw_init(adamw_t *o, size_t n, float beta1, float beta2, float eps, float weight_decay);
void adamw_free(adamw_t *o);

// Keeps the first moment in bf16 from now on (its values rounded once; m freed, m16 set):
// a full fine-tune in bf16 precision holds 2 bytes a parameter less. Each step computes
// the moment in fp32 from the kept value, updates the parameter with it and keeps it
// rounded (nearest, ties to even): the moment, an average over about 1/(1 − β1) = 10
// steps, is then off by at most half a bf16 unit (2^-9 relative) at every step, and that
// error does not accumulate. The second moment stays fp32: with β2 = 0.999 its change
// of 0.1% a step is below half a bf16 unit (0.2%), so a rounded v would never decay.
void adamw_keep_m_bf16(adamw_t *o);

// One step over p [n] with gradient g [n] at learning rate lr: p -= lr·wd·p first, then
// the bias-corrected Adam update with eps added after the square root, as torch does.
// ranges (may be NULL) scale lr and wd for parts of the block; elements outside every
// range use multiplier 1.
void adamw_step(adamw_t *o, lb_real *p, const lb_real *g, float lr, const optim_range_t *ranges,
                int n_ranges);

// Σ g² over n elements (double accumulation), for the global norm over several blocks.
double optim_sum_sq(const lb_real *g, size_t n);

// Multiplies g by max_norm / (total_norm + 1e-6) when that is below 1 (torch's rule).
void optim_clip(lb_real *g, size_t n, double total_norm, float max_norm);

typedef enum { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE } optim_sched_t;

// Learning rate of optimizer step `step` (0 = the first) as transformers'
// get_{constant,linear,cosine}_schedule_with_warmup: rises linearly from 0 over warmup
// steps, then stays (constant), falls linearly to 0 at total (linear), or follows half a
// cosine to 0 at total (cosine).
float optim_lr_at(optim_sched_t s, float base_lr, long step, long warmup, long total);

// Parses "constant", "linear" or "cosine"; -1 for anything else.
int optim_sched_parse(const char *name);

#endif
