#include "t5_config.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *t5_act_name(t5_act_t a) {
    switch (a) {
    case T5_ACT_RELU: return "relu";
    case T5_ACT_GELU: return "gelu";
    case T5_ACT_GELU_NEW: return "gelu_new";
    case T5_ACT_SILU: return "silu";
    }
    return "?";
}

// An integer field: *out keeps its default when absent and not required.
static int get_int(const cJSON *root, const char *field, int required, int min, int *out,
                   const char *name, lb_err_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return lb_err_set(err, LB_EFORMAT, "%s: the field \"%s\" is missing; a T5 config.json needs it",
                              name, field);
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min ||
        v->valuedouble > 1e9)
        return lb_err_set(err, LB_EFORMAT, "%s: the field \"%s\" must be an integer >= %d", name,
                          field, min);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_float(const cJSON *root, const char *field, double min, double max, float *out,
                     const char *name, lb_err_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= min && v->valuedouble <= max))
        return lb_err_set(err, LB_EFORMAT, "%s: the field \"%s\" must be a number in [%g, %g]", name,
                          field, min, max);
    *out = (float)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *root, const char *field, int *out, int *present,
                    const char *name, lb_err_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
    if (present) *present = 0;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v))
        return lb_err_set(err, LB_EFORMAT, "%s: the field \"%s\" must be true or false", name, field);
    *out = cJSON_IsTrue(v);
    if (present) *present = 1;
    return 0;
}

static int parse_act(t5_config_t *c, const char *proj, const char *name, lb_err_t *err) {
    // transformers: act_info = proj.split("-"); gated when the first part is "gated";
    // "gated-gelu" means gelu_new (the tanh approximation FLAN-T5 was trained with).
    const char *act = proj;
    c->gated = 0;
    if (!strncmp(proj, "gated-", 6)) {
        c->gated = 1;
        act = proj + 6;
    }
    if (strchr(act, '-')) goto bad;
    if (!strcmp(act, "relu")) c->act = T5_ACT_RELU;
    else if (!strcmp(act, "gelu")) c->act = c->gated ? T5_ACT_GELU_NEW : T5_ACT_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) c->act = T5_ACT_GELU_NEW;
    else if (!strcmp(act, "silu") || !strcmp(act, "swish")) c->act = T5_ACT_SILU;
    else goto bad;
    return 0;
bad:
    return lb_err_set(err, LB_EFORMAT,
                      "%s: the field \"feed_forward_proj\" is \"%s\"; expected relu, gelu, gelu_new, "
                      "silu, or one of them after \"gated-\" (e.g. gated-gelu)",
                      name, proj);
}

int t5_config_parse(t5_config_t *c, const char *json, const char *name, lb_err_t *err) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lb_err_set(err, LB_EFORMAT, "%s is not a JSON object; give the config.json of a T5 model",
                          name);
    }
    // transformers' T5Config defaults for the optional fields
    c->num_decoder_layers = -1;
    c->relative_attention_num_buckets = 32;
    c->relative_attention_max_distance = 128;
    c->layer_norm_epsilon = 1e-6f;
    c->dropout_rate = 0.1f;
    c->tie_word_embeddings = 1;
    c->pad_token_id = 0;
    c->eos_token_id = 1;
    c->decoder_start_token_id = -1;
    snprintf(c->feed_forward_proj, sizeof c->feed_forward_proj, "relu");
    int present = 0, rc = -1;
    if (get_int(root, "vocab_size", 1, 1, &c->vocab_size, name, err) ||
        get_int(root, "d_model", 1, 1, &c->d_model, name, err) ||
        get_int(root, "d_kv", 1, 1, &c->d_kv, name, err) ||
        get_int(root, "d_ff", 1, 1, &c->d_ff, name, err) ||
        get_int(root, "num_layers", 1, 1, &c->num_layers, name, err) ||
        get_int(root, "num_heads", 1, 1, &c->num_heads, name, err) ||
        get_int(root, "num_decoder_layers", 0, 1, &c->num_decoder_layers, name, err) ||
        get_int(root, "relative_attention_num_buckets", 0, 2, &c->relative_attention_num_buckets, name, err) ||
        get_int(root, "relative_attention_max_distance", 0, 1, &c->relative_attention_max_distance, name, err) ||
        get_int(root, "pad_token_id", 0, 0, &c->pad_token_id, name, err) ||
        get_int(root, "eos_token_id", 0, 0, &c->eos_token_id, name, err) ||
        get_int(root, "decoder_start_token_id", 0, 0, &c->decoder_start_token_id, name, err) ||
        get_float(root, "layer_norm_epsilon", 0, 1, &c->layer_norm_epsilon, name, err) ||
        get_float(root, "dropout_rate", 0, 0.999, &c->dropout_rate, name, err) ||
        get_bool(root, "tie_word_embeddings", &c->tie_word_embeddings, NULL, name, err))
        goto out;
    c->scale_decoder_outputs = c->tie_word_embeddings;
    if (get_bool(root, "scale_decoder_outputs", &c->scale_decoder_outputs, &present, name, err))
        goto out;
    if (c->num_decoder_layers < 0) c->num_decoder_layers = c->num_layers;
    if (c->decoder_start_token_id < 0) c->decoder_start_token_id = c->pad_token_id;
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(root, "feed_forward_proj");
    if (ff && !cJSON_IsNull(ff)) {
        if (!cJSON_IsString(ff) || strlen(ff->valuestring) >= sizeof c->feed_forward_proj) {
            lb_err_set(err, LB_EFORMAT, "%s: the field \"feed_forward_proj\" must be a string such as \"gated-gelu\" or \"relu\"",
                       name);
            goto out;
        }
        snprintf(c->feed_forward_proj, sizeof c->feed_forward_proj, "%s", ff->valuestring);
    }
    if (parse_act(c, c->feed_forward_proj, name, err)) goto out;
    // engine/t5 sizes its tables and the attention width (H·K) in int; far beyond any T5
    // (t5-11b: 24 layers, H·K = 16384), a hostile config must not overflow them.
    if (c->num_layers > 4096 || c->num_decoder_layers > 4096) {
        lb_err_set(err, LB_EFORMAT, "%s: num_layers and num_decoder_layers must be at most 4096 (got %d and %d)",
                   name, c->num_layers, c->num_decoder_layers);
        goto out;
    }
    if ((long long)c->num_heads * c->d_kv > (1LL << 24)) {
        lb_err_set(err, LB_EFORMAT, "%s: num_heads x d_kv (%d x %d) must be at most 16777216",
                   name, c->num_heads, c->d_kv);
        goto out;
    }
    if (c->pad_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size ||
        c->decoder_start_token_id >= c->vocab_size) {
        lb_err_set(err, LB_EFORMAT, "%s: pad_token_id, eos_token_id and decoder_start_token_id must be below vocab_size (%d)",
                   name, c->vocab_size);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int t5_config_load(t5_config_t *c, const char *path, lb_err_t *err) {
    char buf[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(buf, sizeof buf, "%s/config.json", path);
        path = buf;
    }
    size_t len = 0;
    char *text = lb_read_file(path, &len, err);
    if (!text) return -1;
    int rc = t5_config_parse(c, text, path, err);
    free(text);
    return rc;
}
