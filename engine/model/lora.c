#include "lora.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"

// LAPACK's single-precision SVD, from OpenBLAS (Fortran calling convention).
extern void sgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, float *a,
                    const int *lda, float *s, float *u, const int *ldu, float *vt, const int *ldvt,
                    float *work, const int *lwork, int *info, size_t, size_t);

void lora_config_default(lora_config_t *c) {
    memset(c, 0, sizeof *c);
    c->r = 8;
    c->alpha = 8;
    c->init = LORA_INIT_KAIMING;
    c->n_targets = 2;
    strcpy(c->targets[0], "q");
    strcpy(c->targets[1], "v");
}

// Block index of "encoder.block.N...." or -1.
static int block_index(const char *name) {
    const char *p = strstr(name, ".block.");
    return p ? atoi(p + 7) : -1;
}

// Lists every linear module of a T5 of this shape in Hugging Face order; calls fn for each
// with its name, in and out sizes. Returns the count.
static int lora_list_modules(const lora_shape_t *s, void (*fn)(void *, const char *, int, int), void *ctx) {
    char name[96];
    int count = 0;
    static const char *attn[4] = {"q", "k", "v", "o"};
    for (int stack = 0; stack < 2; stack++) {
        const char *st = stack ? "decoder" : "encoder";
        int nb = stack ? s->n_dec : s->n_enc;
        for (int b = 0; b < nb; b++) {
            for (int kind = 0; kind < (stack ? 2 : 1); kind++) {
                const char *an = kind ? "1.EncDecAttention" : "0.SelfAttention";
                for (int i = 0; i < 4; i++) {
                    snprintf(name, sizeof name, "%s.block.%d.layer.%s.%s", st, b, an, attn[i]);
                    if (fn) fn(ctx, name, i == 3 ? s->inner : s->d_model, i == 3 ? s->d_model : s->inner);
                    count++;
                }
            }
            int fl = stack ? 2 : 1;
            const char *ff_names[3] = {"wi_0", "wi_1", "wo"};
            if (!s->gated) ff_names[0] = "wi";
            for (int i = 0; i < 3; i++) {
                if (!s->gated && i == 1) continue;
                snprintf(name, sizeof name, "%s.block.%d.layer.%d.DenseReluDense.%s", st, b, fl, ff_names[i]);
                int wo = i == 2;
                if (fn) fn(ctx, name, wo ? s->d_ff : s->d_model, wo ? s->d_model : s->d_ff);
                count++;
            }
        }
    }
    if (fn) fn(ctx, "lm_head", s->d_model, s->vocab);
    return count + 1;
}

// Names valid as targets for this shape, comma separated (for messages).
static void lora_valid_targets(const lora_shape_t *s, char *out, size_t n) {
    snprintf(out, n, "%s", s->gated ? "q, k, v, o, wi_0, wi_1, wo, lm_head" : "q, k, v, o, wi, wo, lm_head");
}

static int is_valid_leaf(const lora_shape_t *s, const char *t) {
    static const char *gated[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo", "lm_head"};
    static const char *plain[] = {"q", "k", "v", "o", "wi", "wo", "lm_head"};
    const char **v = s->gated ? gated : plain;
    int nv = s->gated ? 8 : 7;
    for (int i = 0; i < nv; i++)
        if (!strcmp(v[i], t)) return 1;
    return 0;
}

static int name_matches(const char *name, const char *key) {
    size_t ln = strlen(name), lk = strlen(key);
    if (!strcmp(name, key)) return 1;
    return ln > lk && name[ln - lk - 1] == '.' && !strcmp(name + ln - lk, key);
}

typedef struct {
    const lora_config_t *cfg;
    regex_t *re;
    lora_adapter_t *a;
    int cap;
    int matched[LORA_MAX_TARGETS];
} build_ctx_t;

static int module_selected(build_ctx_t *b, const char *name) {
    const lora_config_t *c = b->cfg;
    int hit = 0;
    if (b->re) {
        hit = regexec(b->re, name, 0, NULL, 0) == 0;
    } else {
        for (int i = 0; i < c->n_targets; i++)
            if (name_matches(name, c->targets[i])) {
                b->matched[i] = 1;
                hit = 1;
            }
    }
    if (!hit) return 0;
    int is_enc = !strncmp(name, "encoder.", 8), is_dec = !strncmp(name, "decoder.", 8);
    if (c->stacks && (is_enc || is_dec)) {
        if (is_enc && !(c->stacks & 1)) return 0;
        if (is_dec && !(c->stacks & 2)) return 0;
    }
    if (c->attention) {
        if (strstr(name, "SelfAttention") && !(c->attention & 1)) return 0;
        if (strstr(name, "EncDecAttention") && !(c->attention & 2)) return 0;
    }
    if (c->n_layers) {
        int bi = block_index(name), ok = 0;
        if (bi < 0) return 0;  // lm_head has no layer index
        for (int i = 0; i < c->n_layers; i++) ok |= c->layers[i] == bi;
        if (!ok) return 0;
    }
    return 1;
}

static double pattern_value(const lora_pattern_t *p, int n, const char *name, double dflt) {
    for (int i = 0; i < n; i++)
        if (name_matches(name, p[i].key)) return p[i].value;
    return dflt;
}

static void add_module(void *ctx, const char *name, int in, int out) {
    build_ctx_t *b = ctx;
    if (!module_selected(b, name)) return;
    lora_adapter_t *a = b->a;
    if (a->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        a->m = xrealloc(a->m, sizeof(lora_module_t) * (size_t)b->cap);
    }
    lora_module_t *m = &a->m[a->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->in = in;
    m->out = out;
    m->r = (int)pattern_value(b->cfg->rank_pattern, b->cfg->n_rank_pattern, name, b->cfg->r);
    double alpha = pattern_value(b->cfg->alpha_pattern, b->cfg->n_alpha_pattern, name, b->cfg->alpha);
    m->scale = (float)(b->cfg->rslora ? alpha / sqrt((double)m->r) : alpha / m->r);
}

int lora_create(lora_adapter_t *a, const lora_config_t *cfg, const lora_shape_t *s, lb_err_t *err) {
    memset(a, 0, sizeof *a);
    a->cfg = *cfg;
    char valid[128];
    lora_valid_targets(s, valid, sizeof valid);
    if (cfg->r <= 0 || cfg->r > LORA_MAX_RANK)
        return lora_free(a), lb_err_set(err, LB_EARG, "lora r is %d; it must be a positive integer such as 8 (at most %d)", cfg->r, LORA_MAX_RANK);
    if (!(cfg->alpha > 0)) return lora_free(a), lb_err_set(err, LB_EARG, "lora alpha is %g; it must be positive (e.g. 2·r)", cfg->alpha);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return lora_free(a), lb_err_set(err, LB_EARG, "lora dropout is %g; it must be in [0, 1)", cfg->dropout);
    for (int i = 0; i < cfg->n_rank_pattern; i++)
        if (!(cfg->rank_pattern[i].value >= 1 && cfg->rank_pattern[i].value <= LORA_MAX_RANK) ||
            cfg->rank_pattern[i].value != floor(cfg->rank_pattern[i].value))
            return lora_free(a), lb_err_set(err, LB_EARG, "rank_pattern \"%s\" gives rank %g; ranks must be positive integers",
                                            cfg->rank_pattern[i].key, cfg->rank_pattern[i].value);
    for (int i = 0; i < cfg->n_targets; i++)
        if (!strchr(cfg->targets[i], '.') && !is_valid_leaf(s, cfg->targets[i]))
            return lora_free(a), lb_err_set(err, LB_EARG, "unknown target module \"%s\"; this model's linear modules are %s",
                                            cfg->targets[i], valid);
    build_ctx_t b = {.cfg = cfg, .a = a};
    regex_t re;
    if (cfg->target_regex[0]) {
        char pat[300];
        snprintf(pat, sizeof pat, "^(%s)$", cfg->target_regex);
        if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0)
            return lora_free(a), lb_err_set(err, LB_EARG, "target_modules regex \"%s\" does not compile", cfg->target_regex);
        b.re = &re;
    } else if (cfg->n_targets == 0) {
        return lora_free(a), lb_err_set(err, LB_EARG, "no target modules given; choose from %s", valid);
    }
    lora_list_modules(s, add_module, &b);
    if (b.re) regfree(&re);
    for (int i = 0; i < cfg->n_targets && !b.re; i++)
        if (!b.matched[i])
            return lora_free(a), lb_err_set(err, LB_EARG, "target module \"%s\" matches no module of this model; valid names are %s",
                                            cfg->targets[i], valid);
    if (a->n == 0)
        return lora_free(a), lb_err_set(err, LB_EARG, "the targets, stacks, attention kinds and layers chosen select no module; widen the selection");
    size_t total = 0;
    for (int i = 0; i < a->n; i++) total += (size_t)a->m[i].r * (size_t)(a->m[i].in + a->m[i].out);
    a->params = xcalloc(total, sizeof(float));
    a->n_params = total;
    float *p = a->params;
    for (int i = 0; i < a->n; i++) {
        a->m[i].A = p;
        p += (size_t)a->m[i].r * (size_t)a->m[i].in;
        a->m[i].B = p;
        p += (size_t)a->m[i].out * (size_t)a->m[i].r;
    }
    return 0;
}

void lora_free(lora_adapter_t *a) {
    if (!a) return;
    free(a->m);
    free(a->params);
    memset(a, 0, sizeof *a);
}

lora_module_t *lora_find(const lora_adapter_t *a, const char *module) {
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->m[i].name, module)) return &a->m[i];
    return NULL;
}

// W [out, in] += sign · s · B·A (sign +1 merges, -1 unmerges).
static void lora_merge_module(const lora_module_t *m, float *W, int sign);

static int pissa_module(lora_module_t *m, float *W, lb_err_t *err) {
    int in = m->in, out = m->out, k = in < out ? in : out, info = 0, lwork = -1;
    if (m->r > k) return lb_err_set(err, LB_EARG, "pissa: rank %d of %s exceeds min(in, out) = %d", m->r, m->name, k);
    // LAPACK is column-major: the row-major W [out, in] is the column-major W^T [in, out].
    float *a = xmalloc(sizeof(float) * (size_t)in * (size_t)out);
    memcpy(a, W, sizeof(float) * (size_t)in * (size_t)out);
    float *sv = xmalloc(sizeof(float) * (size_t)k), *u = xmalloc(sizeof(float) * (size_t)in * (size_t)k);
    float *vt = xmalloc(sizeof(float) * (size_t)k * (size_t)out), wq;
    sgesvd_("S", "S", &in, &out, a, &in, sv, u, &in, vt, &k, &wq, &lwork, &info, 1, 1);
    lwork = (int)wq;
    float *work = xmalloc(sizeof(float) * (size_t)(lwork > 1 ? lwork : 1));
    sgesvd_("S", "S", &in, &out, a, &in, sv, u, &in, vt, &k, work, &lwork, &info, 1, 1);
    free(work);
    free(a);
    if (info != 0) {
        free(sv), free(u), free(vt);
        return lb_err_set(err, LB_EFORMAT, "pissa: the SVD of %s did not converge (info %d)", m->name, info);
    }
    // u holds Uh (rows = right singular vectors over `in`), vt holds V [out, k] row-major.
    for (int j = 0; j < m->r; j++) {
        double sr = sqrt((double)sv[j] / m->scale);
        for (int i = 0; i < in; i++) m->A[(size_t)j * in + i] = (float)(sr * u[(size_t)j * in + i]);
        for (int o = 0; o < out; o++) m->B[(size_t)o * m->r + j] = (float)(sr * vt[(size_t)o * k + j]);
    }
    free(sv), free(u), free(vt);
    lora_merge_module(m, W, -1);
    return 0;
}

int lora_init(lora_adapter_t *a, uint64_t seed, lora_weight_fn get_weight, void *ctx, lb_err_t *err) {
    uint64_t st = seed;
    for (int i = 0; i < a->n; i++) {
        lora_module_t *m = &a->m[i];
        size_t na = (size_t)m->r * m->in, nb = (size_t)m->out * m->r;
        switch (a->cfg.init) {
        case LORA_INIT_KAIMING: {  // kaiming_uniform(a=√5): U(±1/√in), as PEFT
            double bound = 1.0 / sqrt((double)m->in);
            for (size_t j = 0; j < na; j++) m->A[j] = (float)((2 * lb_rng_uniform(&st) - 1) * bound);
            memset(m->B, 0, nb * sizeof(float));
            break;
        }
        case LORA_INIT_GAUSSIAN:  // the paper: N(0, 1/r²)
            for (size_t j = 0; j < na; j++) m->A[j] = (float)(lb_rng_normal(&st) / m->r);
            memset(m->B, 0, nb * sizeof(float));
            break;
        case LORA_INIT_RANDOM_BOTH: {  // PEFT's init_lora_weights=False: both random
            double ba = 1.0 / sqrt((double)m->in), bb = 1.0 / sqrt((double)m->r);
            for (size_t j = 0; j < na; j++) m->A[j] = (float)((2 * lb_rng_uniform(&st) - 1) * ba);
            for (size_t j = 0; j < nb; j++) m->B[j] = (float)((2 * lb_rng_uniform(&st) - 1) * bb);
            break;
        }
        case LORA_INIT_PISSA: {
            float *W = get_weight ? get_weight(ctx, m->name) : NULL;
            if (!W) return lb_err_set(err, LB_EARG, "pissa: no base weight for %s", m->name);
            if (pissa_module(m, W, err) != 0) return -1;
            break;
        }
        default:
            return lb_err_set(err, LB_EARG, "unknown lora init %d", a->cfg.init);
        }
    }
    return 0;
}

static void lora_merge_module(const lora_module_t *m, float *W, int sign) {
    float s = sign * m->scale;
    for (int o = 0; o < m->out; o++) {
        const float *b = m->B + (size_t)o * m->r;
        float *w = W + (size_t)o * m->in;
        for (int j = 0; j < m->r; j++) {
            float c = s * b[j];
            if (c == 0) continue;
            const float *arow = m->A + (size_t)j * m->in;
            for (int i = 0; i < m->in; i++) w[i] += c * arow[i];
        }
    }
}

int lora_merge(const lora_adapter_t *a, lora_weight_fn get_weight, void *ctx, int sign, lb_err_t *err) {
    for (int i = 0; i < a->n; i++) {
        float *W = get_weight(ctx, a->m[i].name);
        if (!W) return lb_err_set(err, LB_EARG, "merge: the model has no weight %s.weight", a->m[i].name);
        lora_merge_module(&a->m[i], W, sign);
    }
    return 0;
}

static const char *init_name(int init) {
    switch (init) {
    case LORA_INIT_GAUSSIAN: return "gaussian";
    case LORA_INIT_PISSA: return "pissa";
    default: return NULL;
    }
}

// Whether the adapted set is exactly "every module whose leaf is one of the targets".
static int targets_are_plain_leaves(const lora_config_t *c) {
    if (c->target_regex[0] || c->stacks || c->attention || c->n_layers) return 0;
    for (int i = 0; i < c->n_targets; i++)
        if (strchr(c->targets[i], '.')) return 0;
    return 1;
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

typedef struct {
    char *s;
    size_t n, cap;
} out_t;

static void out_put(out_t *o, const char *s) {
    size_t l = strlen(s);
    if (o->n + l + 1 > o->cap) {
        while (o->n + l + 1 > o->cap) o->cap = o->cap ? 2 * o->cap : 1024;
        o->s = xrealloc(o->s, o->cap);
    }
    memcpy(o->s + o->n, s, l + 1);
    o->n += l;
}

static int cmp_item(const void *x, const void *y) {
    return strcmp((*(cJSON *const *)x)->string, (*(cJSON *const *)y)->string);
}

// Writes j as Python's json.dumps(obj, indent=2, sort_keys=True) does, which is how PEFT
// saves adapter_config.json. Numbers listed in float_keys print as Python floats (0.0).
static void dump_py(out_t *o, const cJSON *j, int depth, int as_float) {
    char buf[64];
    if (cJSON_IsNull(j)) out_put(o, "null");
    else if (cJSON_IsTrue(j)) out_put(o, "true");
    else if (cJSON_IsFalse(j)) out_put(o, "false");
    else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (!as_float && v == floor(v) && fabs(v) < 1e15) snprintf(buf, sizeof buf, "%.0f", v);
        else {
            for (int p = 1; p <= 17; p++) {  // the shortest text that reads back the same, as repr()
                snprintf(buf, sizeof buf, "%.*g", p, v);
                if (strtod(buf, NULL) == v) break;
            }
            if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
        }
        out_put(o, buf);
    } else if (cJSON_IsString(j)) {
        char *t = cJSON_PrintUnformatted(j);
        out_put(o, t);
        cJSON_free(t);
    } else {
        int obj = cJSON_IsObject(j), n = cJSON_GetArraySize(j);
        if (n == 0) {
            out_put(o, obj ? "{}" : "[]");
            return;
        }
        cJSON **items = xmalloc(sizeof(cJSON *) * (size_t)n);
        int k = 0;
        for (cJSON *it = j->child; it; it = it->next) items[k++] = it;
        if (obj) qsort(items, (size_t)n, sizeof *items, cmp_item);
        out_put(o, obj ? "{\n" : "[\n");
        for (int i = 0; i < n; i++) {
            for (int d = 0; d < 2 * (depth + 1); d++) out_put(o, " ");
            if (obj) {
                cJSON *key = cJSON_CreateString(items[i]->string);
                char *t = cJSON_PrintUnformatted(key);
                out_put(o, t);
                out_put(o, ": ");
                cJSON_free(t);
                cJSON_Delete(key);
            }
            dump_py(o, items[i], depth + 1, obj && !strcmp(items[i]->string, "lora_dropout"));
            out_put(o, i + 1 < n ? ",\n" : "\n");
        }
        for (int d = 0; d < 2 * depth; d++) out_put(o, " ");
        out_put(o, obj ? "}" : "]");
        free(items);
    }
}

int lora_save(const lora_adapter_t *a, const char *dir, lb_err_t *err) {
    const lora_config_t *c = &a->cfg;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return lb_err_set(err, LB_EIO, "cannot create the adapter folder %s; check that its parent exists and is writable", dir);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNullToObject(j, "alora_invocation_tokens");
    cJSON *ap = cJSON_AddObjectToObject(j, "alpha_pattern");
    for (int i = 0; i < c->n_alpha_pattern; i++) cJSON_AddNumberToObject(ap, c->alpha_pattern[i].key, c->alpha_pattern[i].value);
    cJSON_AddNullToObject(j, "auto_mapping");
    if (c->base_model[0]) cJSON_AddStringToObject(j, "base_model_name_or_path", c->base_model);
    else cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddNullToObject(j, "exclude_modules");
    cJSON_AddFalseToObject(j, "fan_in_fan_out");
    cJSON_AddTrueToObject(j, "inference_mode");
    if (init_name(c->init)) cJSON_AddStringToObject(j, "init_lora_weights", init_name(c->init));
    else cJSON_AddBoolToObject(j, "init_lora_weights", c->init != LORA_INIT_RANDOM_BOTH);
    cJSON_AddNullToObject(j, "layer_replication");
    cJSON_AddNullToObject(j, "layers_pattern");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddObjectToObject(j, "loftq_config");
    cJSON_AddNumberToObject(j, "lora_alpha", c->alpha);
    cJSON_AddFalseToObject(j, "lora_bias");
    cJSON_AddNumberToObject(j, "lora_dropout", c->dropout);
    cJSON_AddNullToObject(j, "megatron_config");
    cJSON_AddStringToObject(j, "megatron_core", "megatron.core");
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "peft_version", "0.21.0");
    cJSON_AddNumberToObject(j, "r", c->r);
    cJSON *rp = cJSON_AddObjectToObject(j, "rank_pattern");
    for (int i = 0; i < c->n_rank_pattern; i++) cJSON_AddNumberToObject(rp, c->rank_pattern[i].key, c->rank_pattern[i].value);
    cJSON_AddNullToObject(j, "revision");
    // PEFT matches each list entry as the whole name or its dotted suffix; a narrowed
    // selection (stacks, attention kind, layers) is written as the full module names.
    int nt = targets_are_plain_leaves(c) ? c->n_targets : a->n;
    char **names = xmalloc(sizeof(char *) * (size_t)(nt + 1));
    for (int i = 0; i < nt; i++) names[i] = (char *)(targets_are_plain_leaves(c) ? c->targets[i] : a->m[i].name);
    qsort(names, (size_t)nt, sizeof *names, cmp_str);
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int i = 0; i < nt; i++) cJSON_AddItemToArray(tm, cJSON_CreateString(names[i]));
    free(names);
    cJSON_AddNullToObject(j, "target_parameters");
    cJSON_AddStringToObject(j, "task_type", "SEQ_2_SEQ_LM");
    cJSON_AddNullToObject(j, "trainable_token_indices");
    cJSON_AddFalseToObject(j, "use_dora");
    cJSON_AddFalseToObject(j, "use_qalora");
    cJSON_AddBoolToObject(j, "use_rslora", c->rslora);
    out_t text = {0};
    dump_py(&text, j, 0, 0);
    out_put(&text, "\n");
    cJSON_Delete(j);
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    int rc = lb_write_file_atomic(path, text.s, text.n, err);
    free(text.s);
    if (rc) return -1;
    st_out_t *ts = xcalloc((size_t)a->n * 2, sizeof(st_out_t));
    char (*tn)[160] = xcalloc((size_t)a->n * 2, 160);
    for (int i = 0; i < a->n; i++) {
        const lora_module_t *m = &a->m[i];
        snprintf(tn[2 * i], 160, "base_model.model.%s.lora_A.weight", m->name);
        snprintf(tn[2 * i + 1], 160, "base_model.model.%s.lora_B.weight", m->name);
        ts[2 * i] = (st_out_t){.name = tn[2 * i], .data = m->A, .ndim = 2, .shape = {m->r, m->in}};
        ts[2 * i + 1] = (st_out_t){.name = tn[2 * i + 1], .data = m->B, .ndim = 2, .shape = {m->out, m->r}};
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    rc = st_write(path, ts, a->n * 2, NULL, err);
    free(ts);
    free(tn);
    return rc;
}

static int cfg_fail(lb_err_t *err, const char *path, const char *field, const char *what) {
    return lb_err_set(err, LB_EFORMAT, "%s: field \"%s\" %s", path, field, what);
}

static int read_patterns(cJSON *o, lora_pattern_t *out, int *n, const char *path, const char *field, lb_err_t *err) {
    *n = 0;
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return cfg_fail(err, path, field, "must be an object of module name → number");
    for (cJSON *it = o->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || !(fabs(it->valuedouble) <= 1e6)) return cfg_fail(err, path, field, "must map module names to numbers");
        if (*n == LORA_MAX_PATTERNS) return cfg_fail(err, path, field, "has too many entries (at most 32)");
        snprintf(out[*n].key, sizeof out[*n].key, "%s", it->string);
        out[*n].value = it->valuedouble;
        (*n)++;
    }
    return 0;
}

// Reads dir/adapter_config.json (ours or PEFT's) into cfg.
static int lora_read_config(const char *dir, lora_config_t *cfg, lb_err_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    size_t len;
    char *text = lb_read_file(path, &len, err);
    if (!text) return -1;
    int rc = lora_parse_config(text, len, path, cfg, err);
    free(text);
    return rc;
}

int lora_parse_config(const char *text, size_t len, const char *path, lora_config_t *cfg, lb_err_t *err) {
    cJSON *j = cJSON_ParseWithLength(text, len);
    int rc = -1;
    lora_config_default(cfg);
    if (!cJSON_IsObject(j)) {
        lb_err_set(err, LB_EFORMAT, "%s is not valid JSON; re-save the adapter", path);
        goto done;
    }
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA")) {
        cfg_fail(err, path, "peft_type", "must be \"LORA\" (only LoRA adapters are supported)");
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "r");
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= LORA_MAX_RANK) || v->valuedouble != floor(v->valuedouble)) {
        cfg_fail(err, path, "r", "must be a positive integer (at most 8192)");
        goto done;
    }
    cfg->r = v->valueint;
    v = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble < 1e9)) { cfg_fail(err, path, "lora_alpha", "must be a positive number"); goto done; }
        cfg->alpha = v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "lora_dropout");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 1) { cfg_fail(err, path, "lora_dropout", "must be a number in [0, 1)"); goto done; }
        cfg->dropout = v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "use_rslora");
    cfg->rslora = cJSON_IsTrue(v);
    v = cJSON_GetObjectItemCaseSensitive(j, "use_dora");
    if (cJSON_IsTrue(v)) { cfg_fail(err, path, "use_dora", "is true, but DoRA adapters are not supported; use a plain LoRA adapter"); goto done; }
    v = cJSON_GetObjectItemCaseSensitive(j, "fan_in_fan_out");
    if (cJSON_IsTrue(v)) { cfg_fail(err, path, "fan_in_fan_out", "is true, which T5's nn.Linear layers never use"); goto done; }
    v = cJSON_GetObjectItemCaseSensitive(j, "bias");
    if (v && cJSON_IsString(v) && strcmp(v->valuestring, "none")) { cfg_fail(err, path, "bias", "must be \"none\" (trained biases are not supported)"); goto done; }
    v = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) {
        cfg_fail(err, path, "modules_to_save", "is set, but only LoRA modules are supported");
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "init_lora_weights");
    if (cJSON_IsFalse(v)) cfg->init = LORA_INIT_RANDOM_BOTH;
    else if (cJSON_IsString(v) && !strcmp(v->valuestring, "gaussian")) cfg->init = LORA_INIT_GAUSSIAN;
    else if (cJSON_IsString(v) && !strncmp(v->valuestring, "pissa", 5)) cfg->init = LORA_INIT_PISSA;
    v = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    if (cJSON_IsString(v)) {
        cfg->n_targets = 0;
        snprintf(cfg->target_regex, sizeof cfg->target_regex, "%s", v->valuestring);
    } else if (cJSON_IsArray(v)) {
        cfg->n_targets = 0;
        for (cJSON *t = v->child; t; t = t->next) {
            if (!cJSON_IsString(t) || strlen(t->valuestring) >= sizeof cfg->targets[0]) {
                cfg_fail(err, path, "target_modules", "must hold module names (strings)");
                goto done;
            }
            if (cfg->n_targets == LORA_MAX_TARGETS) { cfg_fail(err, path, "target_modules", "has too many entries"); goto done; }
            snprintf(cfg->targets[cfg->n_targets++], sizeof cfg->targets[0], "%s", t->valuestring);
        }
    } else if (v && !cJSON_IsNull(v)) {
        cfg_fail(err, path, "target_modules", "must be a list of module names or a regex string");
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(j, "layers_to_transform");
    if (cJSON_IsNumber(v)) {
        cfg->n_layers = 1;
        cfg->layers[0] = v->valueint;
    } else if (cJSON_IsArray(v)) {
        for (cJSON *t = v->child; t; t = t->next) {
            if (!cJSON_IsNumber(t) || cfg->n_layers == LORA_MAX_LAYERS) { cfg_fail(err, path, "layers_to_transform", "must be a list of block indices"); goto done; }
            cfg->layers[cfg->n_layers++] = t->valueint;
        }
    }
    if (cfg->n_layers) {
        cJSON *lp = cJSON_GetObjectItemCaseSensitive(j, "layers_pattern");
        const char *pat = cJSON_IsString(lp) ? lp->valuestring : NULL;
        if (cJSON_IsArray(lp) && cJSON_GetArraySize(lp) == 1 && cJSON_IsString(lp->child)) pat = lp->child->valuestring;
        if (!pat || strcmp(pat, "block")) {
            cfg_fail(err, path, "layers_pattern", "must be \"block\" when layers_to_transform is set (T5's blocks are named encoder.block.N)");
            goto done;
        }
    }
    if (read_patterns(cJSON_GetObjectItemCaseSensitive(j, "rank_pattern"), cfg->rank_pattern, &cfg->n_rank_pattern, path, "rank_pattern", err) ||
        read_patterns(cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern"), cfg->alpha_pattern, &cfg->n_alpha_pattern, path, "alpha_pattern", err))
        goto done;
    v = cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path");
    if (cJSON_IsString(v)) snprintf(cfg->base_model, sizeof cfg->base_model, "%s", v->valuestring);
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

int lora_load(lora_adapter_t *a, const char *dir, const lora_shape_t *s, lb_err_t *err) {
    lora_config_t cfg;
    if (lora_read_config(dir, &cfg, err)) return -1;
    if (lora_create(a, &cfg, s, err)) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return lb_err_set(err, LB_EARG, "%s/adapter_config.json: %s", dir, msg);
    }
    char path[4096], name[160];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_file_t f;
    if (st_open(&f, path, err)) {
        lora_free(a);
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < a->n; i++) {
        lora_module_t *m = &a->m[i];
        int64_t sa[2] = {m->r, m->in}, sb[2] = {m->out, m->r};
        snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", m->name);
        if (st_load_f32(&f, name, 2, sa, m->A, err)) goto done;
        snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", m->name);
        if (st_load_f32(&f, name, 2, sb, m->B, err)) goto done;
    }
    if (f.n != 2 * a->n) {
        for (int i = 0; i < f.n; i++) {
            const char *tn = f.tensors[i].name, *p = tn;
            int known = 0;
            if (!strncmp(p, "base_model.model.", 17)) {
                p += 17;
                const char *suffix = strstr(p, ".lora_");
                if (suffix && (!strcmp(suffix, ".lora_A.weight") || !strcmp(suffix, ".lora_B.weight"))) {
                    char mod[128];
                    snprintf(mod, sizeof mod, "%.*s", (int)(suffix - p), p);
                    known = lora_find(a, mod) != NULL;
                }
            }
            if (!known) {
                lb_err_set(err, LB_ESHAPE, "%s: tensor \"%s\" does not belong to an adapted module of this model (adapter_config.json targets %d modules); the adapter was made for another model or configuration",
                           path, tn, a->n);
                goto done;
            }
        }
    }
    rc = 0;
done:
    st_close(&f);
    if (rc) lora_free(a);
    return rc;
}

static void group_digits(char *out, size_t n, size_t v) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%zu", v);
    size_t o = 0;
    for (int i = 0; i < len && o + 1 < n; i++) {
        if (i && (len - i) % 3 == 0 && o + 1 < n) out[o++] = ',';
        if (o + 1 < n) out[o++] = tmp[i];
    }
    out[o] = 0;
}

void lora_format_trainable(char *out, size_t n, size_t trainable, size_t all) {
    char t[32], a[32];
    group_digits(t, sizeof t, trainable);
    group_digits(a, sizeof a, all);
    snprintf(out, n, "trainable params: %s || all params: %s || trainable%%: %.4f", t, a,
             all ? 100.0 * (double)trainable / (double)all : 0.0);
}
