// AdamW against hand-computed torch.optim.AdamW steps, LoRA+ ranges, clipping by global
// norm and the transformers learning-rate schedules.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "optim.h"

static void test_adamw_matches_torch_by_hand(void) {
    // p = 1, grads 0.5, -0.25, 0.125; lr 0.1, wd 0.1, betas 0.9/0.999, eps 1e-8:
    // torch gives 0.890000002, 0.8544662986878463, 0.8118787219097756
    // (p -= lr·wd·p, then Adam with bias correction, eps after the square root).
    float p = 1, g[3] = {0.5f, -0.25f, 0.125f};
    double want[3] = {0.890000002, 0.8544662986878463, 0.8118787219097756};
    adamw_t o;
    adamw_init(&o, 1, 0.9f, 0.999f, 1e-8f, 0.1f);
    for (int t = 0; t < 3; t++) {
        adamw_step(&o, &p, &g[t], 0.1f, NULL, 0);
        EXPECTF(fabs(p - want[t]) < 1e-6, "step %d: %.9f vs %.9f", t + 1, (double)p, want[t]);
    }
    EXPECT(o.t == 3);
    adamw_free(&o);
}

static void test_adamw_first_step_is_sign_times_lr(void) {
    // the first bias-corrected step moves each element by lr·g/(|g| + eps)
    float p[4] = {0, 0, 0, 0}, g[4] = {3, -2e-3f, 1e-8f, 0};
    adamw_t o;
    adamw_init(&o, 4, 0.9f, 0.999f, 1e-8f, 0);
    adamw_step(&o, p, g, 0.01f, NULL, 0);
    EXPECT(fabsf(p[0] + 0.01f) < 1e-7f);
    EXPECT(fabsf(p[1] - 0.01f) < 1e-7f);
    EXPECT(fabsf(p[2] + 0.005f) < 1e-6f);  // |g| = eps: half a step
    EXPECT(p[3] == 0);
    adamw_free(&o);
}

static void test_adamw_ranges_lora_plus(void) {
    // elements 2..3 (a B matrix) at 16× the learning rate and without weight decay
    float p[4] = {1, 1, 1, 1}, g[4] = {1, 1, 1, 1};
    optim_range_t r = {2, 2, 16.0f, 0.0f};
    adamw_t o;
    adamw_init(&o, 4, 0.9f, 0.999f, 1e-8f, 0.5f);
    adamw_step(&o, p, g, 1e-3f, &r, 1);
    float base = 1 * (1 - 1e-3f * 0.5f) - 1e-3f;
    EXPECT(fabsf(p[0] - base) < 1e-6f && fabsf(p[1] - base) < 1e-6f);
    EXPECT(fabsf(p[2] - (1 - 16e-3f)) < 1e-6f && fabsf(p[3] - (1 - 16e-3f)) < 1e-6f);
    adamw_free(&o);
}

static void test_clip_global_norm(void) {
    float a[2] = {3, 0}, b[1] = {4};
    double n = sqrt(optim_sum_sq(a, 2) + optim_sum_sq(b, 1));
    EXPECT(fabs(n - 5) < 1e-12);
    optim_clip(a, 2, n, 1.0f);
    optim_clip(b, 1, n, 1.0f);
    EXPECT(fabsf(a[0] - 0.6f) < 1e-6f && fabsf(b[0] - 0.8f) < 1e-6f);
    float c[1] = {0.5f};
    optim_clip(c, 1, 0.5, 1.0f);  // below the limit: untouched
    EXPECT(c[0] == 0.5f);
}

// The update written out once more, element by element in fp32 (torch's order of
// operations), as the reference for the pooled and vectorized loops; m_bf16: the first
// moment kept rounded to bf16 (the step uses it unrounded).
static void adamw_reference(float *p, const float *g, float *m, float *v, size_t n, long t, float lr,
                            float wd, int m_bf16) {
    float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    float bc2s = (float)sqrt(bc2), step = (float)(lr / bc1), decay = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * decay;
        float mi = m[i] + (1.0f - b1) * (g[i] - m[i]);
        v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
        float denom = sqrtf(v[i]) / bc2s + eps;
        p[i] = pi - step * (mi / denom);
        m[i] = m_bf16 ? lb_bf16_to_f32(lb_f32_to_bf16(mi)) : mi;
    }
}

static void test_adamw_large_block_bit_exact_any_threads(void) {
    // 100,003 values (an odd tail after the 16-wide and per-chunk splits): the library's
    // update equals the element-by-element reference exactly, on 1 and on 2 threads, and
    // the global norm is the same sum on both
    size_t n = 100003;
    float *g = malloc(n * sizeof *g), *p0 = malloc(n * sizeof *p0), *pr = malloc(n * sizeof *pr);
    float *mr = calloc(n, sizeof *mr), *vr = calloc(n, sizeof *vr);
    uint64_t st = 7;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)lb_rng_normal(&st) * 1e-2f;
        p0[i] = (float)lb_rng_normal(&st);
    }
    memcpy(pr, p0, n * sizeof *pr);
    for (long t = 1; t <= 3; t++) adamw_reference(pr, g, mr, vr, n, t, 1e-3f, 0.01f, 0);
    double norms[2];
    for (int th = 1; th <= 2; th++) {
        lb_set_threads(th);
        float *p = malloc(n * sizeof *p);
        memcpy(p, p0, n * sizeof *p);
        adamw_t o;
        adamw_init(&o, n, 0.9f, 0.999f, 1e-8f, 0.01f);
        for (int t = 0; t < 3; t++) adamw_step(&o, p, g, 1e-3f, NULL, 0);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += memcmp(&p[i], &pr[i], 4) != 0 || memcmp(&o.m[i], &mr[i], 4) != 0 ||
                                              memcmp(&o.v[i], &vr[i], 4) != 0;
        EXPECTF(bad == 0, "%d thread(s): %zu of %zu values differ from the reference", th, bad, n);
        norms[th - 1] = optim_sum_sq(g, n);
        adamw_free(&o);
        free(p);
    }
    EXPECTF(norms[0] == norms[1], "Σ g² %.17g on 1 thread, %.17g on 2", norms[0], norms[1]);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    EXPECTF(fabs(norms[0] - s) <= 1e-12 * s, "Σ g² %.17g, plain sum %.17g", norms[0], s);
    lb_set_threads(0);
    free(g); free(p0); free(pr); free(mr); free(vr);
}

// The first moment kept in bf16: the same update with m rounded to bf16 after each step
// (the step itself uses the fp32 moment), bit for bit on 1 and 2 threads, in AVX-512 and
// scalar alike (odd tail); and near the fp32-moment run.
static void test_adamw_m_bf16(void) {
    size_t n = 100003;
    float *g = malloc(n * sizeof *g), *p0 = malloc(n * sizeof *p0), *pr = malloc(n * sizeof *pr);
    float *mr = calloc(n, sizeof *mr), *vr = calloc(n, sizeof *vr);
    uint64_t st = 11;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)lb_rng_normal(&st) * 1e-2f;
        p0[i] = (float)lb_rng_normal(&st);
    }
    g[5] = NAN;  // a NaN moment stays NaN (quiet) through the rounding
    memcpy(pr, p0, n * sizeof *pr);
    float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = 1e-3f, wd = 0.01f;
    for (long t = 1; t <= 3; t++) adamw_reference(pr, g, mr, vr, n, t, lr, wd, 1);
    float *pf = malloc(n * sizeof *pf);  // the fp32-moment run
    memcpy(pf, p0, n * sizeof *pf);
    adamw_t of;
    adamw_init(&of, n, b1, b2, eps, wd);
    for (int t = 0; t < 3; t++) adamw_step(&of, pf, g, lr, NULL, 0);
    for (int th = 1; th <= 2; th++) {
        lb_set_threads(th);
        float *p = malloc(n * sizeof *p);
        memcpy(p, p0, n * sizeof *p);
        adamw_t o;
        adamw_init(&o, n, b1, b2, eps, wd);
        adamw_keep_m_bf16(&o);
        EXPECT(o.m == NULL && o.m16 != NULL);
        for (int t = 0; t < 3; t++) adamw_step(&o, p, g, lr, NULL, 0);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += memcmp(&p[i], &pr[i], 4) != 0 || memcmp(&o.v[i], &vr[i], 4) != 0 ||
                   o.m16[i] != lb_f32_to_bf16(mr[i]);
        EXPECTF(bad == 0, "%d thread(s): %zu of %zu values differ from the reference", th, bad, n);
        EXPECT(isnan(lb_bf16_to_f32(o.m16[5])) && isnan(p[5]));
        // against the fp32 moment: each step moves p by at most lr·(1 + wd·|p|), the bf16
        // moment changes a step by at most 2^-8 relative
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            if (i != 5 && fabs((double)p[i] - pf[i]) > worst) worst = fabs((double)p[i] - pf[i]);
        EXPECTF(worst < 3 * lr * 1e-2, "%d thread(s): parameters differ from the fp32-moment run by %.3g", th, worst);
        adamw_free(&o);
        free(p);
    }
    lb_set_threads(0);
    adamw_free(&of);
    free(g); free(p0); free(pr); free(mr); free(vr); free(pf);
}

static void test_schedules(void) {
    // warmup 10 of 110: 0 at the first step, peak at step 10, then down to 0 at 110
    EXPECT(optim_lr_at(SCHED_LINEAR, 1.0f, 0, 10, 110) == 0.0f);
    EXPECT(fabsf(optim_lr_at(SCHED_LINEAR, 1.0f, 5, 10, 110) - 0.5f) < 1e-7f);
    EXPECT(fabsf(optim_lr_at(SCHED_LINEAR, 1.0f, 10, 10, 110) - 1.0f) < 1e-7f);
    EXPECT(fabsf(optim_lr_at(SCHED_LINEAR, 1.0f, 60, 10, 110) - 0.5f) < 1e-7f);
    EXPECT(optim_lr_at(SCHED_LINEAR, 1.0f, 110, 10, 110) == 0.0f);
    EXPECT(fabsf(optim_lr_at(SCHED_COSINE, 2.0f, 60, 10, 110) - 1.0f) < 1e-6f);
    EXPECT(fabsf(optim_lr_at(SCHED_COSINE, 2.0f, 35, 10, 110) - 2.0f * 0.5f * (1 + cosf(0.25f * 3.14159265f))) < 1e-5f);
    EXPECT(optim_lr_at(SCHED_CONSTANT, 3.0f, 500, 0, 10) == 3.0f);
    EXPECT(optim_sched_parse("cosine") == SCHED_COSINE && optim_sched_parse("warm") == -1);
}

int main(void) {
    RUN(test_adamw_matches_torch_by_hand);
    RUN(test_adamw_first_step_is_sign_times_lr);
    RUN(test_adamw_ranges_lora_plus);
    RUN(test_clip_global_norm);
    RUN(test_adamw_large_block_bit_exact_any_threads);
    RUN(test_adamw_m_bf16);
    RUN(test_schedules);
    TH_DONE();
}
