#include "t5_init.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

void t5_init_random(t5_model_t *m, uint64_t seed) {
    const t5_config_t *c = &m->cfg;
    double D = c->d_model, K = c->d_kv, H = c->num_heads, F = c->d_ff;
    for (int i = 0; i < m->n_params; i++) {
        lb_param_t *p = &m->params[i];
        const char *n = p->name;
        double sd;
        if (strstr(n, "layer_norm")) {  // never bf16: only linear weights are
            for (size_t j = 0; j < p->numel; j++) p->w[j] = 1;
            continue;
        }
        if (ends_with(n, "q.weight")) sd = 1 / sqrt(D * K);
        else if (ends_with(n, "k.weight") || ends_with(n, "v.weight")) sd = 1 / sqrt(D);
        else if (ends_with(n, "o.weight")) sd = 1 / sqrt(H * K);
        else if (strstr(n, "relative_attention_bias")) sd = 1 / sqrt(D);
        else if (strstr(n, ".wi")) sd = 1 / sqrt(D);
        else if (ends_with(n, "wo.weight")) sd = 1 / sqrt(F);
        else if (!strcmp(n, "lm_head.weight")) sd = 1 / sqrt(D);  // Mesh TensorFlow's T5 v1.1 (transformers: 1)
        else sd = 1.0;  // shared.weight
        uint64_t st = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i;
        if (p->w16) {  // held in bf16 (t5_frozen_weights_bf16): the same draws, rounded
            if (!p->own16) p->own16 = xmalloc(p->numel * sizeof(uint16_t));  // not the mapped file
            for (size_t j = 0; j < p->numel; j++) p->own16[j] = lb_f32_to_bf16((float)(sd * lb_rng_normal(&st)));
            p->w16 = p->own16;
            continue;
        }
        for (size_t j = 0; j < p->numel; j++) p->w[j] = (lb_real)(sd * lb_rng_normal(&st));
    }
}

int t5_load_or_init(t5_model_t *m, const char *dir, uint64_t seed, int *fresh, lb_err_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    *fresh = 0;
    if (access(path, F_OK) == 0) return t5_load(m, dir, err);
    t5_config_t cfg;
    if (t5_config_load(&cfg, dir, err)) return -1;
    if (t5_init_empty(m, &cfg, err)) return -1;
    t5_init_random(m, seed);
    *fresh = 1;
    return 0;
}
