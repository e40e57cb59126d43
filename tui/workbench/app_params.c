// New-run arithmetic: see app_params.h.
#include "app_params.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "widgets.h"

static int json_int(const cJSON *root, const char *key, int def, int *out, const char *path,
                    lb_err_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) {
        if (def < 0)
            return lb_err_set(err, LB_EFORMAT, "%s has no \"%s\"; is this a T5 config.json?", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e7)
        return lb_err_set(err, LB_EFORMAT, "%s: \"%s\" must be a positive integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

int app_model_shape_read(const char *model_dir, app_model_shape_t *s, lb_err_t *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    char *text = lb_read_file(path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int rc = -1;
    if (!root || !cJSON_IsObject(root)) {
        lb_err_set(err, LB_EFORMAT, "%s is not a JSON object; check the model folder", path);
        goto done;
    }
    memset(s, 0, sizeof *s);
    if (json_int(root, "d_model", -1, &s->d_model, path, err) ||
        json_int(root, "d_kv", -1, &s->d_kv, path, err) ||
        json_int(root, "num_heads", -1, &s->num_heads, path, err) ||
        json_int(root, "d_ff", -1, &s->d_ff, path, err) ||
        json_int(root, "num_layers", -1, &s->num_layers, path, err) ||
        json_int(root, "num_decoder_layers", s->num_layers, &s->num_decoder_layers, path, err) ||
        json_int(root, "vocab_size", -1, &s->vocab_size, path, err) ||
        json_int(root, "relative_attention_num_buckets", 32, &s->buckets, path, err))
        goto done;
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "feed_forward_proj");
    s->gated = cJSON_IsString(ff) && !strncmp(ff->valuestring, "gated-", 6);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    s->tied = tie ? cJSON_IsTrue(tie) : 1;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int64_t app_model_total_params(const app_model_shape_t *s) {
    int64_t D = s->d_model, I = (int64_t)s->num_heads * s->d_kv, F = s->d_ff;
    int64_t attn = 4 * D * I;                       // q, k, v [I, D]; o [D, I]
    int64_t ffn = (s->gated ? 3 : 2) * D * F;       // wi (or wi_0, wi_1) and wo
    int64_t enc = s->num_layers * (attn + ffn + 2 * D);
    int64_t dec = s->num_decoder_layers * (2 * attn + ffn + 3 * D);
    int64_t bias = (int64_t)s->buckets * s->num_heads;  // block 0 of each stack
    int64_t emb = (int64_t)s->vocab_size * D;
    return emb + (s->tied ? 0 : emb) + enc + dec + 2 * bias + 2 * D;  // + final norms
}

int64_t app_partial_count(const app_model_shape_t *s, int top_blocks, unsigned stacks) {
    int64_t D = s->d_model, I = (int64_t)s->num_heads * s->d_kv, F = s->d_ff;
    int64_t attn = 4 * D * I, ffn = (s->gated ? 3 : 2) * D * F, bias = (int64_t)s->buckets * s->num_heads;
    int64_t total = 0;
    for (int st = 0; st < 2; st++) {
        if (!(stacks & (1u << st))) continue;
        int64_t n = st == 0 ? s->num_layers : s->num_decoder_layers;
        int64_t k = top_blocks > 0 && top_blocks < n ? top_blocks : n;
        int64_t block = st == 0 ? attn + ffn + 2 * D : 2 * attn + ffn + 3 * D;
        total += k * block + D + (k == n ? bias : 0);
    }
    return total;
}

double app_forward_gflop(const app_model_shape_t *s, int B, int S, int T) {
    double D = s->d_model, I = (double)s->num_heads * s->d_kv, F = s->d_ff, V = s->vocab_size;
    double attn = 4 * D * I, ffn = (s->gated ? 3 : 2) * D * F;
    double Le = s->num_layers, Ld = s->num_decoder_layers;
    double lin = 2 * B * (S * Le * (attn + ffn) + T * Ld * (2 * attn + ffn) + T * V * D);
    double scores = 4.0 * B * I * (Le * S * S + Ld * (T * T + T * S));
    return (lin + scores) / 1e9;
}

typedef struct {
    app_param_count_t *c;
    int r;
} count_ctx_t;

static void add_module(count_ctx_t *k, const char *name, int in, int out, int64_t times) {
    if (times <= 0) return;
    if (!k->c->modules) {
        k->c->ex_in = in;
        k->c->ex_out = out;
        k->c->ex_name = name;
    }
    k->c->modules += (int)times;
    k->c->trainable += times * (int64_t)k->r * (in + out);
}

void app_lora_count(const app_model_shape_t *s, int r, const unsigned mask[LOC_N], int lm_head,
                    app_param_count_t *out) {
    memset(out, 0, sizeof *out);
    out->total = app_model_total_params(s);
    count_ctx_t k = {out, r};
    int D = s->d_model, I = s->num_heads * s->d_kv, F = s->d_ff;
    static const char *attn_names[4] = {"q", "k", "v", "o"};
    for (int loc = LOC_ENC_SELF; loc <= LOC_DEC_CROSS; loc++) {
        int64_t blocks = loc == LOC_ENC_SELF ? s->num_layers : s->num_decoder_layers;
        for (int m = 0; m < 4; m++) {
            if (!(mask[loc] & (1u << m))) continue;
            if (m < 3) add_module(&k, attn_names[m], D, I, blocks);
            else add_module(&k, attn_names[m], I, D, blocks);
        }
    }
    for (int loc = LOC_ENC_FFN; loc <= LOC_DEC_FFN; loc++) {
        int64_t blocks = loc == LOC_ENC_FFN ? s->num_layers : s->num_decoder_layers;
        if (mask[loc] & MOD_WI) add_module(&k, s->gated ? "wi_0" : "wi", D, F, blocks * (s->gated ? 2 : 1));
        if (mask[loc] & MOD_WO) add_module(&k, "wo", F, D, blocks);
    }
    if (lm_head) add_module(&k, "lm_head", D, s->vocab_size, 1);
}

void app_lora_explain(const app_param_count_t *c, int r, int ascii, char *buf, size_t cap) {
    if (!c->modules) {
        snprintf(buf, cap, "no module selected: nothing to train");
        return;
    }
    char n[32];
    int64_t full = (int64_t)c->ex_in * c->ex_out, lora = (int64_t)r * (c->ex_in + c->ex_out);
    fmt_int(n, lora);
    double fewer = full > 0 ? 100.0 * (1.0 - (double)lora / (double)full) : 0;
    if (ascii)
        snprintf(buf, cap, "%s: %dx%d W -> %d*(%d+%d) = %s trainable, %.0f%% %s", c->ex_name,
                 c->ex_out, c->ex_in, r, c->ex_in, c->ex_out, n, fewer < 0 ? -fewer : fewer,
                 fewer < 0 ? "more" : "fewer");
    else
        snprintf(buf, cap, "%s: %d×%d W → %d·(%d+%d) = %s trainable, %.0f%% %s", c->ex_name,
                 c->ex_out, c->ex_in, r, c->ex_in, c->ex_out, n, fewer < 0 ? -fewer : fewer,
                 fewer < 0 ? "more" : "fewer");
}
