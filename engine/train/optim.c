#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void adamw_init(adamw_t *o, size_t n, float beta1, float beta2, float eps, float weight_decay) {
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->n = n;
    o->m = xcalloc(n ? n : 1, sizeof(float));
    o->v = xcalloc(n ? n : 1, sizeof(float));
}

void adamw_free(adamw_t *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

// The update of elements [a, b) at learning rate lr and decay wd, in fp32 operation by
// operation as torch's _single_tensor_adamw.
static void adamw_run(adamw_t *o, lb_real *p, const lb_real *g, size_t a, size_t b, float lr,
                      float wd, float step_size, float bc2_sqrt) {
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    float decay = 1.0f - lr * wd, w1 = 1.0f - b1, w2 = 1.0f - b2;
    for (size_t i = a; i < b; i++) {
        float gi = (float)g[i];
        float pi = (float)p[i] * decay;
        float mi = o->m[i] + w1 * (gi - o->m[i]);  // lerp
        float vi = o->v[i] * b2 + w2 * gi * gi;
        o->m[i] = mi;
        o->v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = (lb_real)(pi - step_size * (mi / denom));
    }
}

void adamw_step(adamw_t *o, lb_real *p, const lb_real *g, float lr, const optim_range_t *ranges,
                int n_ranges) {
    o->t++;
    double bc1 = 1.0 - pow((double)o->beta1, (double)o->t);
    double bc2 = 1.0 - pow((double)o->beta2, (double)o->t);
    float bc2s = (float)sqrt(bc2);
    size_t pos = 0;
    for (int r = 0; r <= n_ranges; r++) {
        size_t a = r < n_ranges ? ranges[r].off : o->n;
        if (a > pos) adamw_run(o, p, g, pos, a, lr, o->weight_decay, (float)(lr / bc1), bc2s);
        if (r == n_ranges) break;
        size_t b = ranges[r].off + ranges[r].n;
        float lr_r = lr * ranges[r].lr_mult;
        adamw_run(o, p, g, a, b, lr_r, o->weight_decay * ranges[r].wd_mult, (float)(lr_r / bc1), bc2s);
        pos = b;
    }
}

double optim_sum_sq(const lb_real *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

void optim_clip(lb_real *g, size_t n, double total_norm, float max_norm) {
    double coef = (double)max_norm / (total_norm + 1e-6);
    if (coef >= 1.0) return;
    lb_real c = (lb_real)coef;
    for (size_t i = 0; i < n; i++) g[i] *= c;
}

float optim_lr_at(optim_sched_t s, float base_lr, long step, long warmup, long total) {
    if (step < warmup) return base_lr * (float)step / (float)(warmup > 1 ? warmup : 1);
    if (s == SCHED_CONSTANT) return base_lr;
    double rest = (double)(total - warmup);
    if (rest <= 0) return 0;
    double prog = (double)(step - warmup) / rest;
    if (s == SCHED_LINEAR) return base_lr * (float)fmax(0.0, 1.0 - prog);
    return base_lr * (float)fmax(0.0, 0.5 * (1.0 + cos(M_PI * prog)));
}

int optim_sched_parse(const char *name) {
    if (!strcmp(name, "constant")) return SCHED_CONSTANT;
    if (!strcmp(name, "linear")) return SCHED_LINEAR;
    if (!strcmp(name, "cosine")) return SCHED_COSINE;
    return -1;
}
