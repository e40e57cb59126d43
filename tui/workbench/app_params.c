// The new-run form's facts: see app_params.h.
#include "app_params.h"

#include <stdio.h>
#include <string.h>

#include "widgets.h"

int app_spec_facts(const spec_t *s, app_spec_facts_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    if (!s->base_model || !s->base_model[0])
        return lb_err_set(err, LB_EARG, "base_model: empty; give a Hugging Face T5 folder");
    if (t5_config_load(&out->cfg, s->base_model, err)) return -1;
    spec_method_opts(s, &out->method);
    out->B = s->train.batch_size;
    out->S = s->dataset.max_source_tokens;
    out->T = s->dataset.max_target_tokens;
    out->grad_accum = s->train.grad_accum;
    if (t5_facts_params(&out->cfg, &out->method, &out->params, err) ||
        t5_facts_flops(&out->cfg, &out->method, out->B, out->S, out->T, &out->flops, err) ||
        t5_facts_memory(&out->cfg, &out->method, out->B, out->S, out->T, s->train.frozen_weights_bf16, s->train.precision,
                        &out->mem, err))
        return -1;
    return 0;
}

void app_lora_explain(const t5_facts_params_t *p, int ascii, char *buf, size_t cap) {
    if (!p->modules) {
        snprintf(buf, cap, "no module selected: nothing to train");
        return;
    }
    // the module's leaf name ("q", "wi_0", "lm_head")
    const char *leaf = strrchr(p->first_name, '.');
    leaf = leaf ? leaf + 1 : p->first_name;
    char n[32];
    int r = p->first_r, in = p->first_in, out = p->first_out;
    int64_t full = (int64_t)in * out, lora = (int64_t)r * (in + out);
    fmt_int(n, lora);
    double fewer = full > 0 ? 100.0 * (1.0 - (double)lora / (double)full) : 0;
    snprintf(buf, cap, ascii ? "%s: %dx%d W -> %d*(%d+%d) = %s trainable, %.0f%% %s"
                             : "%s: %d×%d W → %d·(%d+%d) = %s trainable, %.0f%% %s",
             leaf, out, in, r, in, out, n, fewer < 0 ? -fewer : fewer, fewer < 0 ? "more" : "fewer");
}
