#include "lora_t5.h"

#include <string.h>

void lora_shape_from_t5(const t5_config_t *c, lora_shape_t *s) {
    memset(s, 0, sizeof *s);
    s->d_model = c->d_model;
    s->inner = c->num_heads * c->d_kv;
    s->d_ff = c->d_ff;
    s->vocab = c->vocab_size;
    s->n_enc = c->num_layers;
    s->n_dec = c->num_decoder_layers;
    s->gated = c->gated;
    s->n_heads = c->num_heads;
    s->buckets = c->relative_attention_num_buckets;
}

int lora_load_t5(lora_adapter_t *a, const char *dir, const t5_model_t *m, lb_err_t *err) {
    lora_shape_t s;
    lora_shape_from_t5(&m->cfg, &s);
    return lora_load(a, dir, &s, err);
}

int lora_attach(lora_adapter_t *a, t5_model_t *m, float *grads, lb_err_t *err) {
    for (int i = 0; i < a->n; i++) {
        if (!t5_find_linear(m, a->m[i].name))
            return lb_err_set(err, LB_ESHAPE, "the adapter targets %s, which this model does not have", a->m[i].name);
    }
    for (int i = 0; i < a->n; i++) {
        lora_module_t *mod = &a->m[i];
        linear_t *l = t5_find_linear(m, mod->name);
        if (l->in != mod->in || l->out != mod->out)
            return lb_err_set(err, LB_ESHAPE, "the adapter's %s is %d→%d but the model's is %d→%d",
                              mod->name, mod->in, mod->out, l->in, l->out);
        float *dA = grads ? grads + (mod->A - a->params) : NULL;
        float *dB = grads ? grads + (mod->B - a->params) : NULL;
        linear_set_lora(l, mod->r, mod->scale, (float)a->cfg.dropout, mod->A, mod->B, dA, dB);
    }
    return 0;
}

void lora_detach(const lora_adapter_t *a, t5_model_t *m) {
    for (int i = 0; i < a->n; i++) {
        linear_t *l = t5_find_linear(m, a->m[i].name);
        if (l) linear_set_lora(l, 0, 0, 0, NULL, NULL, NULL, NULL);
    }
}

float *lora_t5_weight(void *model, const char *module) {
    t5_model_t *m = model;
    linear_t *l = t5_find_linear(m, module);
    return l ? t5_param_writable(m, l->W) : NULL;
}

int lora_merge_into_model(const lora_adapter_t *a, t5_model_t *m, int sign, lb_err_t *err) {
    lora_detach(a, m);
    if (lora_merge(a, lora_t5_weight, m, sign, err)) return -1;
    for (int i = 0; i < a->n; i++) {  // a bf16 packing of a merged weight is packed anew
        linear_t *l = t5_find_linear(m, a->m[i].name);
        if (l && l->bf16 && linear_pack_bf16(l, l->bf16, err)) return -1;
    }
    return 0;
}
