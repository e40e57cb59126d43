#include "prof.h"

#include <time.h>

int lb_prof_enabled;
static double totals[PROF_N];

void lb_prof_enable(int on) { lb_prof_enabled = on; }

void lb_prof_reset(void) {
    for (int i = 0; i < PROF_N; i++) totals[i] = 0;
}

void lb_prof_add(lb_prof_kind_t k, double seconds) {
    if (k >= 0 && k < PROF_N) totals[k] += seconds;
}

double lb_prof_get(lb_prof_kind_t k) {
    return k >= 0 && k < PROF_N ? totals[k] : 0;
}

const char *lb_prof_name(lb_prof_kind_t k) {
    static const char *names[PROF_N] = {"linear fwd", "linear bwd", "attention fwd", "attention bwd",
                                        "norms", "activations", "dropout/residual", "cross-entropy",
                                        "embedding/bias", "optimizer", "of which LoRA",
                                        "of which lm_head"};
    return k >= 0 && k < PROF_N ? names[k] : "?";
}

double lb_prof_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
