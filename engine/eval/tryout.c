#include "tryout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "lora_t5.h"

static int load_model(tryout_t *t, t5_model_t *m, const char *dir, lb_err_t *err) {
    double t0 = lb_now();
    if (t5_load(m, dir, err)) return -1;
    t->model_loads++;
    t->load_s += lb_now() - t0;
    if (t5_set_precision(m, t->want, &t->used, err)) {
        t5_free(m);
        return -1;
    }
    return 0;
}

int tryout_open(tryout_t *t, const char *model_dir, t5_precision_t precision, tryout_switch_t sw,
                lb_err_t *err) {
    memset(t, 0, sizeof *t);
    t->want = precision;
    t->sw = sw;
    t->applied = TRYOUT_VARIANT_BASE;
    if (load_model(t, &t->base, model_dir, err)) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (access(path, R_OK) == 0 && !(t->tok = tokenizer_load(path, err))) {
        t5_free(&t->base);
        return -1;
    }
    return 0;
}

int tryout_add(tryout_t *t, const char *dir, lb_err_t *err) {
    char path[4096];
    tryout_variant_t v;
    memset(&v, 0, sizeof v);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (access(path, R_OK) == 0) {
        if (lora_load_t5(&v.ad, dir, &t->base, err)) return -1;
        // a module the base lacks is refused now, not at the first request
        if (lora_attach(&v.ad, &t->base, NULL, err)) {
            lora_detach(&v.ad, &t->base);
            lora_free(&v.ad);
            return -1;
        }
        lora_detach(&v.ad, &t->base);
        if (t->applied != TRYOUT_VARIANT_BASE && t->sw == TRYOUT_ATTACH)  // put the applied one back
            lora_attach(&t->v[t->applied].ad, &t->base, NULL, err);
    } else {
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (access(path, R_OK) != 0)
            return lb_err_set(err, LB_EIO, "%s has neither adapter_config.json (a LoRA adapter) nor config.json (a model); give a run's adapter/ or model/ folder",
                              dir);
        v.is_model = 1;
        if (load_model(t, &v.m, dir, err)) return -1;
        if (v.m.cfg.vocab_size != t->base.cfg.vocab_size) {
            int vs = v.m.cfg.vocab_size;
            t5_free(&v.m);
            return lb_err_set(err, LB_ESHAPE, "%s has a vocabulary of %d tokens but the base model's tokenizer has %d; give a model fine-tuned from the same base",
                              dir, vs, t->base.cfg.vocab_size);
        }
    }
    v.dir = xstrdup(dir);
    t->v = xrealloc(t->v, sizeof *t->v * (size_t)(t->n + 1));
    t->v[t->n] = v;
    return t->n++;
}

// Takes the applied adapter off the base (unmerges it in TRYOUT_MERGE).
static int remove_applied(tryout_t *t, lb_err_t *err) {
    if (t->applied == TRYOUT_VARIANT_BASE) return 0;
    lora_adapter_t *ad = &t->v[t->applied].ad;
    if (t->sw == TRYOUT_MERGE) {
        if (lora_merge_into_model(ad, &t->base, -1, err)) return -1;
    } else {
        lora_detach(ad, &t->base);
    }
    t->applied = TRYOUT_VARIANT_BASE;
    return 0;
}

const t5_model_t *tryout_use(tryout_t *t, int v, lb_err_t *err) {
    if (v < TRYOUT_VARIANT_BASE || v >= t->n) {
        lb_err_set(err, LB_EARG, "variant %d does not exist: there are %d besides the base", v, t->n);
        return NULL;
    }
    double t0 = lb_now();
    t->switch_s = 0;
    if (v >= 0 && t->v[v].is_model) return &t->v[v].m;
    if (v == t->applied) return &t->base;
    if (remove_applied(t, err)) return NULL;
    if (v >= 0) {
        lora_adapter_t *ad = &t->v[v].ad;
        int rc = t->sw == TRYOUT_MERGE ? lora_merge_into_model(ad, &t->base, +1, err)
                                       : lora_attach(ad, &t->base, NULL, err);
        if (rc) return NULL;
        t->applied = v;
    }
    t->switch_s = lb_now() - t0;
    return &t->base;
}

int tryout_encode_texts(const tokenizer_t *tok, const t5_config_t *cfg, const char *const *texts,
                        int n, int max_src, int32_t **ids_out, int32_t **mask_out, int *S_out,
                        lb_err_t *err) {
    int **ids = xcalloc((size_t)n, sizeof *ids);
    int *len = xcalloc((size_t)n, sizeof *len), S = 1, rc = 0;
    for (int i = 0; i < n; i++) {
        if (tokenizer_encode(tok, texts[i], 1, &ids[i], &len[i], err)) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            lb_err_set(err, LB_EFORMAT, "input %d: %s", i + 1, msg);
            rc = -1;
            break;
        }
        len[i] = data_truncate_ids(ids[i], len[i], max_src, tokenizer_eos_id(tok));
        if (len[i] == 0) {  // an empty text without a template: feed </s> alone
            ids[i] = xrealloc(ids[i], sizeof(int));
            ids[i][0] = cfg->eos_token_id;
            len[i] = 1;
        }
        if (len[i] > S) S = len[i];
    }
    if (!rc) {
        *ids_out = xcalloc((size_t)n * S, sizeof(int32_t));
        *mask_out = xcalloc((size_t)n * S, sizeof(int32_t));
        for (int i = 0; i < n; i++)
            for (int j = 0; j < S; j++) {
                (*ids_out)[(size_t)i * S + j] = j < len[i] ? ids[i][j] : cfg->pad_token_id;
                (*mask_out)[(size_t)i * S + j] = j < len[i];
            }
        *S_out = S;
    }
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(len);
    return rc;
}

char *tryout_row_text(const tokenizer_t *tok, const generate_result_t *r, int b) {
    int *ids = xmalloc(sizeof(int) * (size_t)r->L);
    for (int i = 0; i < r->L; i++) ids[i] = r->ids[(size_t)b * r->L + i];
    char *s = tokenizer_decode(tok, ids, r->L, 1);
    free(ids);
    return s;
}

int tryout_generate_texts(tryout_t *t, int v, const char *const *texts, int n, int max_src,
                          const generate_opts_t *o, char **out, double *seconds, lb_err_t *err) {
    if (!t->tok) return lb_err_set(err, LB_EIO, "the base model's folder has no tokenizer.json; text in and out needs it");
    double t0 = lb_now();
    const t5_model_t *m = tryout_use(t, v, err);
    if (!m) return -1;
    int32_t *ids, *mask;
    int S;
    if (tryout_encode_texts(t->tok, &m->cfg, texts, n, max_src, &ids, &mask, &S, err)) return -1;
    generate_result_t r;
    int rc = generate_batch(m, ids, mask, n, S, o, &r, err);
    free(ids);
    free(mask);
    if (rc) return -1;
    for (int b = 0; b < n; b++) out[b] = tryout_row_text(t->tok, &r, b);
    generate_result_free(&r);
    if (seconds) *seconds = lb_now() - t0;
    return 0;
}

void tryout_free(tryout_t *t) {
    lb_err_t err = {0};
    remove_applied(t, &err);
    for (int i = 0; i < t->n; i++) {
        if (t->v[i].is_model) t5_free(&t->v[i].m);
        else lora_free(&t->v[i].ad);
        free(t->v[i].dir);
    }
    free(t->v);
    if (t->tok) tokenizer_free(t->tok);
    t5_free(&t->base);
    memset(t, 0, sizeof *t);
}
