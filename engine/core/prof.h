// prof: where a step's time goes, by kind of work, for `lorabench bench --profile`.
//
// Off unless lb_prof_enable(1) was called: then each LB_PROF(kind, statement) adds the
// statement's wall time to its kind. The totals are process-wide and meant for one thread
// driving the model (the engine's own pools run inside the timed statements).
#ifndef LB_PROF_H
#define LB_PROF_H

typedef enum {
    PROF_LINEAR_FWD,   // linear_forward: x·Wᵀ and the LoRA products
    PROF_LINEAR_BWD,   // linear_backward: dX, dW, dA, dB
    PROF_ATTN_FWD,     // scores, bias, mask, softmax, dropout, P·v
    PROF_ATTN_BWD,
    PROF_NORM,         // RMS norms, forward, rebuilt and backward
    PROF_ACT,          // GELU / ReLU (gated or not), forward and backward
    PROF_DROPOUT,      // dropout and residual adds outside the above
    PROF_XENT,         // cross-entropy over the vocabulary, forward and backward
    PROF_EMBED,        // embedding lookup and its gradient, relative-bias tables
    PROF_OPTIM,        // gradient clipping, AdamW, bf16 repacking after the update
    // the kinds above partition the step; those below are parts of them ("of which")
    PROF_N_STEP,
    PROF_LORA = PROF_N_STEP,  // of linear fwd/bwd: LoRA's products (and their dropout)
    PROF_HEAD,                // of linear fwd/bwd: the lm_head's products (LoRA included)
    PROF_N
} lb_prof_kind_t;

extern int lb_prof_enabled;

void lb_prof_enable(int on);
void lb_prof_reset(void);
void lb_prof_add(lb_prof_kind_t k, double seconds);
// Seconds accumulated in k since the last reset.
double lb_prof_get(lb_prof_kind_t k);
// A short name of k ("linear fwd", ..., "of which LoRA").
const char *lb_prof_name(lb_prof_kind_t k);
double lb_prof_clock(void);

#define LB_PROF(kind, stmt)                                       \
    do {                                                          \
        if (lb_prof_enabled) {                                    \
            double lb_prof_t0_ = lb_prof_clock();                 \
            stmt;                                                 \
            lb_prof_add((kind), lb_prof_clock() - lb_prof_t0_);   \
        } else {                                                  \
            stmt;                                                 \
        }                                                         \
    } while (0)

#endif
