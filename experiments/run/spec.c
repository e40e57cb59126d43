// Experiment specs: JSON <-> spec_t through one table of fields per JSON object, so that
// parsing, the canonical writer, dotted paths (grid, spec_set) and the "valid keys" lists
// of messages all come from the same description.
#include "spec.h"
#include "unicode_norm.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- names -----------------------------------------------------------------------------

static const char *const method_names[] = {"none", "lora", "full", "partial"};
static const char *const init_names[] = {"kaiming", "gaussian", "pissa"};
static const char *const schedule_names[] = {"linear", "cosine", "constant"};
// in t5_precision_t's order (t5_precision_name is the engine's spelling of the same names)
static const char *const precision_names[] = {"auto", "fp32", "bf16"};
static const char *const objective_names[] = {"summarize", "span_corruption"};
static const char *const split_names[] = {"validation", "test", "train"};
static const char *const part_stack_names[] = {"encoder", "decoder", "both"};
static const char *const target_names[] = {"q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo",
                                           "lm_head"};
static const char *const stack_names[] = {"encoder", "decoder"};
static const char *const attention_names[] = {"self", "cross"};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

_Static_assert(N_OF(target_names) == SPEC_N_TARGETS, "one name per target bit");
_Static_assert(T5_PRECISION_AUTO == 0 && T5_PRECISION_FP32 == 1 && T5_PRECISION_BF16 == 2 && N_OF(precision_names) == 3,
               "precision_names follows t5_precision_t");

static const char *name_at(const char *const *names, int n, int i) {
    return i >= 0 && i < n ? names[i] : "?";
}
const char *spec_method_name(spec_method_t m) { return name_at(method_names, 4, (int)m); }
const char *spec_init_name(spec_init_t i) { return name_at(init_names, 3, (int)i); }
const char *spec_schedule_name(spec_schedule_t s) { return name_at(schedule_names, 3, (int)s); }
const char *spec_objective_name(spec_objective_t o) { return name_at(objective_names, 2, (int)o); }
const char *spec_split_name(spec_split_t s) { return name_at(split_names, 3, (int)s); }
const char *spec_part_stack_name(spec_part_stack_t s) {
    return name_at(part_stack_names, 3, (int)s);
}
const char *spec_target_name(int i) { return name_at(target_names, SPEC_N_TARGETS, i); }

static void join_names(const char *const *names, int n, const char *sep, char *buf,
                       size_t size) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? sep : "", names[i]);
}

void spec_targets_string(unsigned targets, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < SPEC_N_TARGETS && len < size; i++)
        if (targets & (1u << i))
            len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? "," : "",
                                    target_names[i]);
}

int spec_warmup_steps(const spec_t *s, int total_steps) {
    if (s->train.warmup < 1) return (int)ceil(s->train.warmup * total_steps - 1e-9);
    return (int)s->train.warmup;
}

long spec_total_steps(const spec_t *s, long n_train) {
    if (s->train.max_steps > 0) return s->train.max_steps;
    if (s->dataset.limit > 0 && s->dataset.limit < n_train) n_train = s->dataset.limit;
    long B = s->train.batch_size > 0 ? s->train.batch_size : 1, accum = s->train.grad_accum > 0 ? s->train.grad_accum : 1;
    long batches = (n_train + B - 1) / B, total = (long)s->train.epochs * ((batches + accum - 1) / accum);
    return total < 1 ? 1 : total;
}

// ---- the field tables ------------------------------------------------------------------

typedef enum { F_STR, F_INT, F_I64, F_NUM, F_BOOL, F_ENUM, F_SET, F_LAYERS, F_PATTERN, F_OBJ,
               F_GRID } ftype_t;

typedef struct field {
    const char *key;
    ftype_t type;
    size_t off;                 // of the member in spec_t
    const char *const *names;   // F_ENUM, F_SET
    int n_names;
    const char *noun;           // F_ENUM, F_SET: what a value is called in messages
    const struct field *sub;    // F_OBJ
    int n_sub;
    int aux;                    // F_PATTERN: 0 rank_pattern, 1 alpha_pattern
} field_t;

#define OFF(m) offsetof(spec_t, m)
#define PLAIN(k, t, m) {k, t, OFF(m), NULL, 0, NULL, NULL, 0, 0}
#define ENUMF(k, m, names, noun) {k, F_ENUM, OFF(m), names, N_OF(names), noun, NULL, 0, 0}
#define SETF(k, m, names, noun) {k, F_SET, OFF(m), names, N_OF(names), noun, NULL, 0, 0}
#define OBJF(k, sub) {k, F_OBJ, 0, NULL, 0, NULL, sub, N_OF(sub), 0}

static const field_t dataset_fields[] = {
    PLAIN("path", F_STR, dataset.path),
    PLAIN("source", F_STR, dataset.source),
    PLAIN("target", F_STR, dataset.target),
    PLAIN("prefix", F_STR, dataset.prefix),
    PLAIN("template", F_STR, dataset.template_text),
    PLAIN("split_ratio", F_NUM, dataset.split_ratio),
    PLAIN("max_source_tokens", F_INT, dataset.max_source_tokens),
    PLAIN("max_target_tokens", F_INT, dataset.max_target_tokens),
    PLAIN("limit", F_INT, dataset.limit),
};

static const field_t lora_fields[] = {
    PLAIN("r", F_INT, lora.r),
    PLAIN("alpha", F_NUM, lora.alpha),
    PLAIN("dropout", F_NUM, lora.dropout),
    SETF("targets", lora.targets, target_names, "target module"),
    SETF("stacks", lora.stacks, stack_names, "stack"),
    SETF("attention", lora.attention, attention_names, "attention kind"),
    PLAIN("layers", F_LAYERS, lora.n_layers),
    PLAIN("rslora", F_BOOL, lora.rslora),
    ENUMF("init", lora.init, init_names, "init"),
    {"rank_pattern", F_PATTERN, 0, NULL, 0, NULL, NULL, 0, 0},
    {"alpha_pattern", F_PATTERN, 0, NULL, 0, NULL, NULL, 0, 1},
};

static const field_t partial_fields[] = {
    PLAIN("top_blocks", F_INT, partial.top_blocks),
    ENUMF("stack", partial.stack, part_stack_names, "stack"),
    PLAIN("norms_only", F_BOOL, partial.norms_only),
};

static const field_t train_fields[] = {
    PLAIN("epochs", F_INT, train.epochs),
    PLAIN("max_steps", F_INT, train.max_steps),
    PLAIN("batch_size", F_INT, train.batch_size),
    PLAIN("grad_accum", F_INT, train.grad_accum),
    PLAIN("lr", F_NUM, train.lr),
    PLAIN("weight_decay", F_NUM, train.weight_decay),
    PLAIN("warmup", F_NUM, train.warmup),
    ENUMF("schedule", train.schedule, schedule_names, "schedule"),
    PLAIN("max_grad_norm", F_NUM, train.max_grad_norm),
    PLAIN("seed", F_I64, train.seed),
    PLAIN("eval_every", F_INT, train.eval_every),
    PLAIN("checkpoint_every", F_INT, train.checkpoint_every),
    PLAIN("loraplus_ratio", F_NUM, train.loraplus_ratio),
    PLAIN("position_bias_lr_ratio", F_NUM, train.position_bias_lr_ratio),
    ENUMF("objective", train.objective, objective_names, "objective"),
    PLAIN("denoise_fraction", F_NUM, train.denoise_fraction),
    PLAIN("cache_encoder", F_BOOL, train.cache_encoder),
    PLAIN("frozen_weights_bf16", F_BOOL, train.frozen_weights_bf16),
    ENUMF("precision", train.precision, precision_names, "precision"),
};

static const field_t eval_fields[] = {
    ENUMF("split", eval.split, split_names, "split"),
    PLAIN("limit", F_INT, eval.limit),
    PLAIN("beams", F_INT, eval.beams),
    PLAIN("max_new_tokens", F_INT, eval.max_new_tokens),
    PLAIN("length_penalty", F_NUM, eval.length_penalty),
    PLAIN("no_repeat_ngram_size", F_INT, eval.no_repeat_ngram_size),
    PLAIN("stemmer", F_BOOL, eval.stemmer),
};

static const field_t top_fields[] = {
    PLAIN("name", F_STR, name),
    PLAIN("base_model", F_STR, base_model),
    OBJF("dataset", dataset_fields),
    ENUMF("method", method, method_names, "method"),
    OBJF("lora", lora_fields),
    OBJF("partial", partial_fields),
    OBJF("train", train_fields),
    OBJF("eval", eval_fields),
    PLAIN("threads", F_INT, threads),
    {"grid", F_GRID, 0, NULL, 0, NULL, NULL, 0, 0},
};

#define MEMBER(s, f, T) ((T *)((char *)(s) + (f)->off))
#define CMEMBER(s, f, T) ((const T *)((const char *)(s) + (f)->off))

static const field_t *find_field(const field_t *fields, int n, const char *key, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(fields[i].key) == len && !strncmp(fields[i].key, key, len)) return &fields[i];
    return NULL;
}

// The leaf field at a dotted path ("lora.r"); NULL when there is none.
static const field_t *find_leaf(const char *path) {
    const field_t *fields = top_fields;
    int n = N_OF(top_fields);
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        const field_t *f = find_field(fields, n, p, len);
        if (!f) return NULL;
        if (!dot) return f->type == F_OBJ || f->type == F_GRID ? NULL : f;
        if (f->type != F_OBJ) return NULL;
        fields = f->sub;
        n = f->n_sub;
        p = dot + 1;
    }
}

static void key_list(const field_t *fields, int n, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "", fields[i].key);
}

// ---- defaults, copy, free --------------------------------------------------------------

void spec_init_defaults(spec_t *s) {
    memset(s, 0, sizeof *s);
    s->dataset.source = xstrdup("");
    s->dataset.target = xstrdup("");
    s->dataset.prefix = xstrdup("");
    s->dataset.template_text = xstrdup("");
    s->dataset.split_ratio = 0.9;
    s->dataset.max_source_tokens = 256;
    s->dataset.max_target_tokens = 64;
    s->dataset.limit = 0;
    s->method = SPEC_METHOD_LORA;
    s->lora.r = 8;
    s->lora.alpha = 16;
    s->lora.dropout = 0.05;
    s->lora.targets = SPEC_T_Q | SPEC_T_V;
    s->lora.stacks = SPEC_STACK_ENCODER | SPEC_STACK_DECODER;
    s->lora.attention = SPEC_ATTN_SELF | SPEC_ATTN_CROSS;
    s->lora.init = SPEC_INIT_KAIMING;
    s->partial.top_blocks = 2;
    s->partial.stack = SPEC_PART_BOTH;
    s->train.epochs = 1;
    s->train.batch_size = 8;
    s->train.grad_accum = 1;
    s->train.lr = 1e-3;
    s->train.warmup = 0.06;
    s->train.schedule = SPEC_SCHEDULE_LINEAR;
    s->train.max_grad_norm = 1.0;
    s->train.seed = 42;
    s->train.checkpoint_every = 100;
    s->train.loraplus_ratio = 1.0;
    s->train.position_bias_lr_ratio = 1.0;
    s->train.cache_encoder = true;
    s->train.precision = T5_PRECISION_AUTO;
    s->eval.split = SPEC_SPLIT_VALIDATION;
    s->eval.limit = 200;
    s->eval.beams = 1;
    s->eval.max_new_tokens = 48;
    s->eval.length_penalty = 1.0;
    s->eval.stemmer = true;
    s->threads = 0;
}

static void free_patterns(spec_pattern_t *p, int n) {
    for (int i = 0; i < n; i++) free(p[i].key);
    free(p);
}

void spec_free(spec_t *s) {
    if (!s) return;
    free(s->name);
    free(s->base_model);
    free(s->dataset.path);
    free(s->dataset.source);
    free(s->dataset.target);
    free(s->dataset.prefix);
    free(s->dataset.template_text);
    free(s->lora.layers);
    free_patterns(s->lora.rank_pattern, s->lora.n_rank_pattern);
    free_patterns(s->lora.alpha_pattern, s->lora.n_alpha_pattern);
    free(s->grid_json);
    memset(s, 0, sizeof *s);
}

static char *dup_or_null(const char *s) { return s ? xstrdup(s) : NULL; }

static spec_pattern_t *copy_patterns(const spec_pattern_t *p, int n) {
    if (!n) return NULL;
    spec_pattern_t *c = xcalloc((size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) {
        c[i].key = xstrdup(p[i].key);
        c[i].value = p[i].value;
    }
    return c;
}

void spec_copy(spec_t *d, const spec_t *s) {
    *d = *s;
    d->name = dup_or_null(s->name);
    d->base_model = dup_or_null(s->base_model);
    d->dataset.path = dup_or_null(s->dataset.path);
    d->dataset.source = dup_or_null(s->dataset.source);
    d->dataset.target = dup_or_null(s->dataset.target);
    d->dataset.prefix = dup_or_null(s->dataset.prefix);
    d->dataset.template_text = dup_or_null(s->dataset.template_text);
    d->lora.layers = NULL;
    if (s->lora.n_layers) {
        d->lora.layers = xmalloc((size_t)s->lora.n_layers * sizeof(int));
        memcpy(d->lora.layers, s->lora.layers, (size_t)s->lora.n_layers * sizeof(int));
    }
    d->lora.rank_pattern = copy_patterns(s->lora.rank_pattern, s->lora.n_rank_pattern);
    d->lora.alpha_pattern = copy_patterns(s->lora.alpha_pattern, s->lora.n_alpha_pattern);
    d->grid_json = dup_or_null(s->grid_json);
}

// ---- JSON -> struct --------------------------------------------------------------------

static void path_join(char *out, size_t size, const char *parent, const char *key) {
    if (parent && *parent) snprintf(out, size, "%.120s.%.120s", parent, key);
    else snprintf(out, size, "%.120s", key);
}

// How a JSON value is named in "expected X, got Y".
static void describe(const cJSON *v, char *buf, size_t size) {
    if (cJSON_IsString(v)) snprintf(buf, size, "the string \"%.60s\"", v->valuestring);
    else if (cJSON_IsNumber(v)) snprintf(buf, size, "the number %g", v->valuedouble);
    else if (cJSON_IsTrue(v)) snprintf(buf, size, "true");
    else if (cJSON_IsFalse(v)) snprintf(buf, size, "false");
    else if (cJSON_IsArray(v)) snprintf(buf, size, "a list");
    else if (cJSON_IsObject(v)) snprintf(buf, size, "an object");
    else snprintf(buf, size, "null");
}

static int field_err(lb_err_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int field_err(lb_err_t *err, const char *path, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lb_err_set(err, LB_EARG, "%s: %s", path, msg);
}

static int type_err(lb_err_t *err, const char *path, const char *expected, const cJSON *v) {
    char got[128];
    describe(v, got, sizeof got);
    return field_err(err, path, "expected %s, got %s", expected, got);
}

static int get_int(const cJSON *v, const char *path, double lo, double hi, double *out,
                   lb_err_t *err) {
    if (!cJSON_IsNumber(v)) return type_err(err, path, "a whole number", v);
    double d = v->valuedouble;
    if (d != floor(d)) return type_err(err, path, "a whole number", v);
    if (d < lo || d > hi)
        return field_err(err, path, "%g is out of range (%g to %g)", d, lo, hi);
    *out = d;
    return 0;
}

// A number for a field. JSON's 1e999 reads as infinity, which no field means; the ranges
// of each field are checked by spec_problems, which names them.
static int get_num(const cJSON *v, const char *path, double *out, lb_err_t *err) {
    if (!cJSON_IsNumber(v)) return type_err(err, path, "a number", v);
    if (!isfinite(v->valuedouble))
        return field_err(err, path, "the number does not fit a double (it reads as %g); give a "
                                    "finite number in the field's range", v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

// Text of a field: valid UTF-8 only, so that names, paths and references stay valid in
// JSON output and on screen.
static int check_utf8(const char *text, const char *path, lb_err_t *err) {
    size_t at = lb_utf8_invalid_at(text, strlen(text));
    if (at == (size_t)-1) return 0;
    return field_err(err, path, "byte %zu is not valid UTF-8; save the spec as UTF-8 text", at);
}

static int find_name(const char *const *names, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], v)) return i;
    return -1;
}

static int parse_set(const field_t *f, const cJSON *v, const char *path, unsigned *out,
                     lb_err_t *err) {
    char valid[160];
    join_names(f->names, f->n_names, ", ", valid, sizeof valid);
    if (!cJSON_IsArray(v)) {
        char exp[256];
        snprintf(exp, sizeof exp, "a list of %ss from %s (e.g. [\"%s\"])", f->noun, valid,
                 f->names[0]);
        return type_err(err, path, exp, v);
    }
    unsigned mask = 0;
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char epath[300];
        snprintf(epath, sizeof epath, "%.240s[%d]", path, i);
        if (!cJSON_IsString(e)) {
            char exp[200];
            snprintf(exp, sizeof exp, "a %s name (%s)", f->noun, valid);
            return type_err(err, epath, exp, e);
        }
        int k = find_name(f->names, f->n_names, e->valuestring);
        if (k < 0)
            return field_err(err, epath, "unknown %s '%s'; valid: %s", f->noun, e->valuestring,
                             valid);
        mask |= 1u << k;
    }
    *out = mask;
    return 0;
}

static int parse_layers(spec_t *s, const cJSON *v, const char *path, lb_err_t *err) {
    const char *expected = "\"all\" or a list of block indices such as [0, 1, 2]";
    if (cJSON_IsString(v)) {
        if (strcmp(v->valuestring, "all")) return type_err(err, path, expected, v);
        free(s->lora.layers);
        s->lora.layers = NULL;
        s->lora.n_layers = 0;
        return 0;
    }
    if (!cJSON_IsArray(v)) return type_err(err, path, expected, v);
    int n = cJSON_GetArraySize(v);
    if (n == 0) return field_err(err, path, "the list is empty; give %s", expected);
    if (n > SPEC_MAX_LAYERS)
        return field_err(err, path, "at most %d blocks can be listed", SPEC_MAX_LAYERS);
    int *layers = xmalloc((size_t)n * sizeof *layers);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char epath[300];
        snprintf(epath, sizeof epath, "%.240s[%d]", path, i);
        double d;
        if (get_int(e, epath, 0, SPEC_MAX_LAYERS - 1, &d, err)) {
            free(layers);
            return -1;
        }
        layers[i] = (int)d;
        for (int j = 0; j < i; j++)
            if (layers[j] == layers[i]) {
                free(layers);
                return field_err(err, epath, "block %d is listed twice", (int)d);
            }
    }
    free(s->lora.layers);
    s->lora.layers = layers;
    s->lora.n_layers = n;
    return 0;
}

static int parse_pattern(spec_t *s, const field_t *f, const cJSON *v, const char *path,
                         lb_err_t *err) {
    int is_alpha = f->aux == 1;
    const char *expected = is_alpha ? "an object of module name -> alpha, e.g. {\"q\": 32}"
                                    : "an object of module name -> rank, e.g. {\"q\": 16}";
    if (!cJSON_IsObject(v)) return type_err(err, path, expected, v);
    int n = cJSON_GetArraySize(v);
    if (n > SPEC_MAX_PATTERNS)
        return field_err(err, path, "at most %d entries are allowed", SPEC_MAX_PATTERNS);
    spec_pattern_t *p = n ? xcalloc((size_t)n, sizeof *p) : NULL;
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char epath[300];
        snprintf(epath, sizeof epath, "%.140s.%.140s", path, e->string);
        int bad = 0;
        double value = 0;
        if (check_utf8(e->string, path, err))
            bad = -1;
        else if (strlen(e->string) == 0 || strlen(e->string) > SPEC_MAX_PATTERN_KEY)
            bad = field_err(err, epath, "a module name of 1 to %d characters is needed",
                            SPEC_MAX_PATTERN_KEY);
        else if (get_num(e, epath, &value, err))
            bad = -1;
        else if (!is_alpha && value != floor(value))
            bad = type_err(err, epath, "a whole number", e);
        if (bad) {
            free_patterns(p, i);
            return -1;
        }
        p[i].key = xstrdup(e->string);
        p[i].value = value;
    }
    if (is_alpha) {
        free_patterns(s->lora.alpha_pattern, s->lora.n_alpha_pattern);
        s->lora.alpha_pattern = p;
        s->lora.n_alpha_pattern = n;
    } else {
        free_patterns(s->lora.rank_pattern, s->lora.n_rank_pattern);
        s->lora.rank_pattern = p;
        s->lora.n_rank_pattern = n;
    }
    return 0;
}

// The numbers of grid values must survive the trip through grid_json: cJSON prints
// infinity as null, which would mean "the default".
static int check_grid_numbers(const cJSON *v, const char *path, lb_err_t *err) {
    double d;
    if (cJSON_IsNumber(v)) return get_num(v, path, &d, err);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char epath[300];
        if (e->string) snprintf(epath, sizeof epath, "%.140s.%.140s", path, e->string);
        else snprintf(epath, sizeof epath, "%.240s[%d]", path, i);
        if (check_grid_numbers(e, epath, err)) return -1;
    }
    return 0;
}

static int check_grid_keys(const cJSON *v, const char *path, lb_err_t *err) {
    if (!cJSON_IsObject(v))
        return type_err(err, path, "an object of dotted field paths to lists of values, e.g. "
                                   "{\"lora.r\": [4, 8, 16]}", v);
    for (const cJSON *e = v->child; e; e = e->next) {
        char epath[300];
        snprintf(epath, sizeof epath, "%.140s.%.140s", path, e->string);
        if (!strcmp(e->string, "name"))
            return field_err(err, epath, "the name cannot be varied; each grid point is named "
                                         "after its values");
        for (const char *p = e->string; *p;) {  // "a.b+c.d" varies fields together
            size_t kl = strcspn(p, "+");
            char sub[128];
            snprintf(sub, sizeof sub, "%.*s", (int)(kl < 127 ? kl : 127), p);
            if (!find_leaf(sub) || !strcmp(sub, "name"))
                return field_err(err, epath, "unknown field '%s'; grid keys are dotted paths of "
                                             "spec fields, e.g. lora.r, lora.targets, train.lr, "
                                             "joined by '+' to vary them together",
                                 sub);
            p += kl + (p[kl] == '+');
        }
        for (const cJSON *d = v->child; d != e; d = d->next)
            if (!strcmp(d->string, e->string)) return field_err(err, epath, "given twice");
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) == 0)
            return type_err(err, epath, "a non-empty list of values, e.g. [4, 8, 16]", e);
        if (check_grid_numbers(e, epath, err)) return -1;
    }
    return 0;
}

static int parse_object(const cJSON *obj, const field_t *fields, int n, const char *path,
                        spec_t *s, lb_err_t *err) {
    char keys[400];
    key_list(fields, n, keys, sizeof keys);
    if (!cJSON_IsObject(obj)) {
        char exp[500];
        snprintf(exp, sizeof exp, "an object with keys %s", keys);
        return type_err(err, path, exp, obj);
    }
    for (const cJSON *v = obj->child; v; v = v->next) {
        const char *key = v->string;
        if (key[0] == '_') continue;  // a comment, e.g. "_methods": "none | lora | ..."
        char fpath[256];
        path_join(fpath, sizeof fpath, path, key);
        for (const cJSON *d = obj->child; d != v; d = d->next)
            if (!strcmp(d->string, key)) return field_err(err, fpath, "given twice");
        const field_t *f = find_field(fields, n, key, strlen(key));
        if (!f) {
            if (*path)
                return field_err(err, fpath, "unknown key; valid keys of %s: %s", path, keys);
            return field_err(err, fpath, "unknown key; valid top-level keys: %s", keys);
        }
        if (cJSON_IsNull(v)) continue;  // null: keep the default
        double d;
        switch (f->type) {
        case F_STR:
            if (!cJSON_IsString(v)) return type_err(err, fpath, "a string", v);
            if (check_utf8(v->valuestring, fpath, err)) return -1;
            free(*MEMBER(s, f, char *));
            *MEMBER(s, f, char *) = xstrdup(v->valuestring);
            break;
        case F_INT:
            if (get_int(v, fpath, INT_MIN, INT_MAX, &d, err)) return -1;
            *MEMBER(s, f, int) = (int)d;
            break;
        case F_I64:
            if (get_int(v, fpath, -9007199254740992.0, 9007199254740992.0, &d, err)) return -1;
            *MEMBER(s, f, int64_t) = (int64_t)d;
            break;
        case F_NUM:
            if (get_num(v, fpath, &d, err)) return -1;
            *MEMBER(s, f, double) = d;
            break;
        case F_BOOL:
            if (!cJSON_IsBool(v)) return type_err(err, fpath, "true or false", v);
            *MEMBER(s, f, bool) = cJSON_IsTrue(v);
            break;
        case F_ENUM: {
            char valid[160];
            join_names(f->names, f->n_names, ", ", valid, sizeof valid);
            if (!cJSON_IsString(v)) {
                char exp[200];
                snprintf(exp, sizeof exp, "one of %s", valid);
                return type_err(err, fpath, exp, v);
            }
            int k = find_name(f->names, f->n_names, v->valuestring);
            if (k < 0)
                return field_err(err, fpath, "unknown %s '%s'; allowed: %s", f->noun,
                                 v->valuestring, valid);
            *MEMBER(s, f, int) = k;
            break;
        }
        case F_SET:
            if (parse_set(f, v, fpath, MEMBER(s, f, unsigned), err)) return -1;
            break;
        case F_LAYERS:
            if (parse_layers(s, v, fpath, err)) return -1;
            break;
        case F_PATTERN:
            if (parse_pattern(s, f, v, fpath, err)) return -1;
            break;
        case F_OBJ:
            if (parse_object(v, f->sub, f->n_sub, fpath, s, err)) return -1;
            break;
        case F_GRID: {
            if (check_grid_keys(v, fpath, err)) return -1;
            free(s->grid_json);
            s->grid_json = cJSON_PrintUnformatted(v);
            break;
        }
        }
    }
    return 0;
}

// ---- checks ----------------------------------------------------------------------------

typedef struct {
    spec_problem_t *out;
    int max, n;
} probs_t;

static void prob(probs_t *p, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void prob(probs_t *p, const char *path, const char *fmt, ...) {
    if (p->out && p->n < p->max) {
        spec_problem_t *q = &p->out[p->n];
        snprintf(q->path, sizeof q->path, "%s", path);
        char msg[360];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(q->msg, sizeof q->msg, "%s: %s", path, msg);
    }
    p->n++;
}

// Upper bound of the real-valued multipliers: far above any useful value, low enough that
// the engine's float arithmetic stays finite. The learning rate has none beyond being finite
// (get_num): a huge one is how the fault tests make a loss diverge to NaN on purpose.
#define SPEC_MAX_RATIO 1e6

static void check_int(probs_t *p, const char *path, int v, int lo, int hi, const char *what) {
    if (v < lo || v > hi) prob(p, path, "must be %s; got %d", what, v);
}

static void derive_name(const spec_t *s, char *buf, size_t size);

int spec_problems(const spec_t *s, spec_problem_t *out, int max) {
    probs_t p = {out, max, 0};
    if (s->name) {
        int bad = !*s->name || strlen(s->name) > 200;
        for (const char *c = s->name; *c; c++)
            if ((unsigned char)*c < 0x20) bad = 1;
        if (bad) prob(&p, "name", "must be 1 to 200 printable characters, e.g. \"lora-r8-qv\"");
    }
    if (!s->base_model || !*s->base_model)
        prob(&p, "base_model", "missing; give the folder of a Hugging Face T5 model (config.json, "
                               "model.safetensors, tokenizer.json), e.g. "
                               "\"experiments/models/t5-tiny\"");
    if (!s->dataset.path || !*s->dataset.path)
        prob(&p, "dataset.path", "missing; give a .jsonl/.json/.csv/.tsv file or a folder with "
                                 "train/validation/test files, e.g. \"experiments/data/debsum\"");
    const char *tpl = s->dataset.template_text;
    if (tpl && *tpl && !strstr(tpl, "{source}"))
        prob(&p, "dataset.template", "must contain {source} where the input text goes, e.g. "
                                     "\"Summarize: {source}\\nSummary: \"");
    if (tpl && *tpl && s->dataset.prefix && *s->dataset.prefix)
        prob(&p, "dataset.template", "give either dataset.prefix or dataset.template, not both");
    if (!(s->dataset.split_ratio > 0 && s->dataset.split_ratio < 1))
        prob(&p, "dataset.split_ratio",
             "must be between 0 and 1 (the fraction of a single file used for training, e.g. "
             "0.9); got %g", s->dataset.split_ratio);
    check_int(&p, "dataset.max_source_tokens", s->dataset.max_source_tokens, 1, 1 << 20,
              "a positive number of tokens (e.g. 256)");
    check_int(&p, "dataset.max_target_tokens", s->dataset.max_target_tokens, 1, 1 << 20,
              "a positive number of tokens (e.g. 64)");
    check_int(&p, "dataset.limit", s->dataset.limit, 0, INT_MAX, "0 (all examples) or more");

    if ((int)s->method < 0 || (int)s->method > SPEC_METHOD_PARTIAL)
        prob(&p, "method", "unknown method; allowed: none, lora, full, partial");
    check_int(&p, "lora.r", s->lora.r, 1, SPEC_MAX_RANK, "a positive integer (e.g. 4, 8, 16)");
    if (!(s->lora.alpha > 0 && s->lora.alpha <= SPEC_MAX_RATIO))
        prob(&p, "lora.alpha", "must be a positive number up to %g (e.g. 16); got %g",
             SPEC_MAX_RATIO, s->lora.alpha);
    if (!(s->lora.dropout >= 0 && s->lora.dropout < 1))
        prob(&p, "lora.dropout", "must be at least 0 and below 1 (e.g. 0.05); got %g",
             s->lora.dropout);
    char valid[160];
    join_names(target_names, SPEC_N_TARGETS, ", ", valid, sizeof valid);
    if (s->method == SPEC_METHOD_LORA && !(s->lora.targets & ((1u << SPEC_N_TARGETS) - 1)))
        prob(&p, "lora.targets", "must list at least one module of %s", valid);
    if (s->method == SPEC_METHOD_LORA && !(s->lora.stacks & 3))
        prob(&p, "lora.stacks", "must list at least one of encoder, decoder");
    unsigned attn_mods = SPEC_T_Q | SPEC_T_K | SPEC_T_V | SPEC_T_O;
    if (s->method == SPEC_METHOD_LORA && (s->lora.targets & attn_mods) && !(s->lora.attention & 3))
        prob(&p, "lora.attention", "must list at least one of self, cross when attention "
                                   "modules (q, k, v, o) are targets");
    for (int i = 0; i < s->lora.n_rank_pattern; i++) {
        double v = s->lora.rank_pattern[i].value;
        if (!(v >= 1 && v <= SPEC_MAX_RANK && v == floor(v))) {
            char path[200];
            snprintf(path, sizeof path, "lora.rank_pattern.%s", s->lora.rank_pattern[i].key);
            prob(&p, path, "must be a positive integer rank (e.g. 16); got %g", v);
        }
    }
    for (int i = 0; i < s->lora.n_alpha_pattern; i++) {
        double v = s->lora.alpha_pattern[i].value;
        if (!(v > 0 && v <= SPEC_MAX_RATIO)) {
            char path[200];
            snprintf(path, sizeof path, "lora.alpha_pattern.%s", s->lora.alpha_pattern[i].key);
            prob(&p, path, "must be a positive number up to %g (e.g. 32); got %g", SPEC_MAX_RATIO,
                 v);
        }
    }
    check_int(&p, "partial.top_blocks", s->partial.top_blocks, 0, 1 << 16,
              "0 (every block) or a positive number of blocks");

    check_int(&p, "train.epochs", s->train.epochs, 0, 1 << 20, "0 or more");
    check_int(&p, "train.max_steps", s->train.max_steps, 0, INT_MAX, "0 (use epochs) or more");
    if (s->method != SPEC_METHOD_NONE && s->train.epochs == 0 && s->train.max_steps == 0)
        prob(&p, "train.max_steps", "is 0 and so is train.epochs; give a positive number of "
                                    "steps or epochs (or method \"none\" for zero-shot)");
    check_int(&p, "train.batch_size", s->train.batch_size, 1, 1 << 16,
              "a positive integer (e.g. 8)");
    check_int(&p, "train.grad_accum", s->train.grad_accum, 1, 1 << 16,
              "a positive integer (1 = no accumulation)");
    if (!(s->train.lr > 0))
        prob(&p, "train.lr", "must be a positive number (e.g. 0.001); got %g", s->train.lr);
    if (!(s->train.weight_decay >= 0 && s->train.weight_decay <= SPEC_MAX_RATIO))
        prob(&p, "train.weight_decay", "must be 0 to %g (e.g. 0.01); got %g", SPEC_MAX_RATIO,
             s->train.weight_decay);
    if (!(s->train.warmup >= 0 && s->train.warmup <= INT_MAX) ||
        (s->train.warmup >= 1 && s->train.warmup != floor(s->train.warmup)))
        prob(&p, "train.warmup", "must be a fraction of the steps below 1 (e.g. 0.06) or a whole "
                                 "number of steps up to %d (e.g. 10); got %g", INT_MAX,
             s->train.warmup);
    if (!(s->train.max_grad_norm >= 0 && s->train.max_grad_norm <= SPEC_MAX_RATIO))
        prob(&p, "train.max_grad_norm", "must be 0 (no clipping) to %g (e.g. 1.0); got %g",
             SPEC_MAX_RATIO, s->train.max_grad_norm);
    if (s->train.seed < 0)
        prob(&p, "train.seed", "must be 0 or more; got %lld", (long long)s->train.seed);
    check_int(&p, "train.eval_every", s->train.eval_every, 0, INT_MAX,
              "0 (only at the end) or a number of steps");
    check_int(&p, "train.checkpoint_every", s->train.checkpoint_every, 0, INT_MAX,
              "0 (only at the end) or a number of steps");
    if (!(s->train.loraplus_ratio > 0 && s->train.loraplus_ratio <= SPEC_MAX_RATIO))
        prob(&p, "train.loraplus_ratio", "must be a positive number up to %g (1 = plain LoRA, 16 "
                                         "as in the LoRA+ paper); got %g", SPEC_MAX_RATIO,
             s->train.loraplus_ratio);
    if (!(s->train.position_bias_lr_ratio > 0 && s->train.position_bias_lr_ratio <= SPEC_MAX_RATIO))
        prob(&p, "train.position_bias_lr_ratio", "must be a positive number up to %g (1 = one "
                                                 "learning rate for all parameters); got %g",
             SPEC_MAX_RATIO, s->train.position_bias_lr_ratio);
    else if (s->train.position_bias_lr_ratio != 1.0 && s->method != SPEC_METHOD_FULL &&
             s->method != SPEC_METHOD_PARTIAL)
        prob(&p, "train.position_bias_lr_ratio", "applies when the position biases train (method \"full\" "
                                                 "or \"partial\"); set it to 1 for method \"%s\"",
             spec_method_name(s->method));
    if (!(s->train.denoise_fraction >= 0 && s->train.denoise_fraction <= 1))
        prob(&p, "train.denoise_fraction", "must be between 0 and 1 (the share of pretraining "
                                           "examples whose target is the whole text); got %g",
             s->train.denoise_fraction);
    else if (s->train.denoise_fraction > 0 && s->train.objective != SPEC_OBJ_SPAN_CORRUPTION)
        prob(&p, "train.denoise_fraction", "applies to the span_corruption objective (pretraining); "
                                           "set it to 0 or set train.objective to \"span_corruption\"");
    if (s->train.objective == SPEC_OBJ_SPAN_CORRUPTION && s->method != SPEC_METHOD_FULL)
        prob(&p, "train.objective", "span_corruption (pretraining) needs method \"full\"; got \"%s\"",
             spec_method_name(s->method));

    check_int(&p, "eval.limit", s->eval.limit, 0, INT_MAX, "0 (all examples) or more");
    check_int(&p, "eval.beams", s->eval.beams, 1, 64, "between 1 (greedy) and 64");
    if (!(fabs(s->eval.length_penalty) <= 100))
        prob(&p, "eval.length_penalty", "must be -100 to 100 (the exponent of the length that "
                                        "beam scores are divided by, e.g. 1.0); got %g",
             s->eval.length_penalty);
    check_int(&p, "eval.max_new_tokens", s->eval.max_new_tokens, 1, 1 << 16,
              "a positive number of tokens (e.g. 48)");
    check_int(&p, "eval.no_repeat_ngram_size", s->eval.no_repeat_ngram_size, 0, 64,
              "0 (off) or a small n-gram size (e.g. 3)");
    check_int(&p, "threads", s->threads, 0, 1024, "0 (all cores) or a number of threads");
    return p.n;
}

int spec_check(const spec_t *s, lb_err_t *err) {
    spec_problem_t first = {0};
    if (spec_problems(s, &first, 1) == 0) return 0;
    return lb_err_set(err, LB_EARG, "%s", first.msg);
}

// ---- struct -> JSON --------------------------------------------------------------------

// A number for the canonical text: the shortest form that reads back to the same double
// (cJSON's own printing rounds to 15 digits and would lose a seed like 2^53 - 1).
static cJSON *number_json(double d, int raw) {
    if (!raw || !isfinite(d)) return cJSON_CreateNumber(d);
    char buf[64];
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
        snprintf(buf, sizeof buf, "%.0f", d);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, d);
            if (strtod(buf, NULL) == d) break;
        }
    }
    return cJSON_CreateRaw(buf);
}

// raw: numbers as exact text (for printing); otherwise plain cJSON numbers (for trees that
// are parsed again).
static cJSON *object_to_json(const spec_t *s, const field_t *fields, int n, int with_grid,
                             int raw) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < n; i++) {
        const field_t *f = &fields[i];
        cJSON *v = NULL;
        switch (f->type) {
        case F_STR: {
            const char *str = *CMEMBER(s, f, char *);
            v = str ? cJSON_CreateString(str) : cJSON_CreateNull();
            break;
        }
        case F_INT: v = number_json(*CMEMBER(s, f, int), raw); break;
        case F_I64: v = number_json((double)*CMEMBER(s, f, int64_t), raw); break;
        case F_NUM: v = number_json(*CMEMBER(s, f, double), raw); break;
        case F_BOOL: v = cJSON_CreateBool(*CMEMBER(s, f, bool)); break;
        case F_ENUM:
            v = cJSON_CreateString(name_at(f->names, f->n_names, *CMEMBER(s, f, int)));
            break;
        case F_SET: {
            unsigned mask = *CMEMBER(s, f, unsigned);
            v = cJSON_CreateArray();
            for (int k = 0; k < f->n_names; k++)
                if (mask & (1u << k)) cJSON_AddItemToArray(v, cJSON_CreateString(f->names[k]));
            break;
        }
        case F_LAYERS:
            if (!s->lora.n_layers) {
                v = cJSON_CreateString("all");
            } else {
                v = cJSON_CreateArray();
                for (int k = 0; k < s->lora.n_layers; k++)
                    cJSON_AddItemToArray(v, number_json(s->lora.layers[k], raw));
            }
            break;
        case F_PATTERN: {
            const spec_pattern_t *pt = f->aux ? s->lora.alpha_pattern : s->lora.rank_pattern;
            int np = f->aux ? s->lora.n_alpha_pattern : s->lora.n_rank_pattern;
            v = cJSON_CreateObject();
            for (int k = 0; k < np; k++)
                cJSON_AddItemToObject(v, pt[k].key, number_json(pt[k].value, raw));
            break;
        }
        case F_OBJ: v = object_to_json(s, f->sub, f->n_sub, with_grid, raw); break;
        case F_GRID:
            if (!with_grid || !s->grid_json) continue;
            v = cJSON_Parse(s->grid_json);
            if (!v) continue;
            break;
        }
        cJSON_AddItemToObject(o, f->key, v);
    }
    return o;
}

static cJSON *spec_to_cjson(const spec_t *s, int with_grid) {
    return object_to_json(s, top_fields, N_OF(top_fields), with_grid, 0);
}

char *spec_to_json(const spec_t *s, int pretty) {
    cJSON *o = object_to_json(s, top_fields, N_OF(top_fields), 1, 1);
    char *text = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    // cJSON allocates with malloc by default, so free() releases it; copy anyway so that
    // callers never depend on cJSON's allocator settings.
    char *out = xstrdup(text);
    cJSON_free(text);
    return out;
}

// ---- parsing entry points --------------------------------------------------------------

static void derive_name(const spec_t *s, char *buf, size_t size) {
    switch (s->method) {
    case SPEC_METHOD_NONE: snprintf(buf, size, "zero-shot"); break;
    case SPEC_METHOD_FULL: snprintf(buf, size, "full"); break;
    case SPEC_METHOD_PARTIAL:
        if (s->partial.norms_only) snprintf(buf, size, "partial-norms");
        else snprintf(buf, size, "partial-top%d", s->partial.top_blocks);
        break;
    default: {
        // "lora-r8-qv": one-letter module names run together, longer ones joined with '+'.
        int all_short = 1;
        for (int i = 0; i < SPEC_N_TARGETS; i++)
            if ((s->lora.targets & (1u << i)) && strlen(target_names[i]) > 1) all_short = 0;
        size_t len = (size_t)snprintf(buf, size, "lora-r%d-", s->lora.r);
        int first = 1;
        for (int i = 0; i < SPEC_N_TARGETS && len < size; i++)
            if (s->lora.targets & (1u << i)) {
                len += (size_t)snprintf(buf + len, size - len, "%s%s",
                                        first || all_short ? "" : "+", target_names[i]);
                first = 0;
            }
    }
    }
}

static int check_grid_values(const spec_t *s, lb_err_t *err);

// root -> complete, checked spec. check_grid: also try every grid value in turn.
static int spec_from_cjson(const cJSON *root, spec_t *out, int check_grid, lb_err_t *err) {
    spec_t s;
    spec_init_defaults(&s);
    if (!cJSON_IsObject(root)) {
        char got[128];
        describe(root, got, sizeof got);
        lb_err_set(err, LB_EARG, "a spec must be a JSON object ({\"base_model\": ..., ...}), "
                                 "not %s", got);
        goto fail;
    }
    if (parse_object(root, top_fields, N_OF(top_fields), "", &s, err)) goto fail;
    if (spec_check(&s, err)) goto fail;
    if (!s.name) {
        char name[128];
        derive_name(&s, name, sizeof name);
        s.name = xstrdup(name);
        s.name_auto = true;
    }
    if (check_grid && s.grid_json && check_grid_values(&s, err)) goto fail;
    *out = s;
    return 0;
fail:
    spec_free(&s);
    memset(out, 0, sizeof *out);
    return -1;
}

int spec_parse(const char *json, const char *origin, spec_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        int line = 1, col = 1;
        for (const char *c = json; end && c < end && *c; c++) {
            if (*c == '\n') line++, col = 1;
            else col++;
        }
        return lb_err_set(err, LB_EFORMAT,
                          "%s: invalid JSON at line %d, column %d; check for a missing comma, "
                          "quote or bracket there",
                          origin ? origin : "spec", line, col);
    }
    lb_err_t inner = {0};
    int rc = spec_from_cjson(root, out, 1, &inner);
    cJSON_Delete(root);
    if (rc) {
        // Field messages start with the JSON path; a file name in front tells which spec.
        if (origin) lb_err_set(err, inner.code, "%s: %s", origin, inner.msg);
        else if (err) *err = inner;
    }
    return rc;
}

// ---- dotted paths: set, grid -----------------------------------------------------------

// Puts value (owned) at the dotted path of root, creating objects on the way.
static void tree_set(cJSON *root, const char *path, cJSON *value) {
    cJSON *o = root;
    const char *p = path;
    char part[128];
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (len >= sizeof part) len = sizeof part - 1;
        memcpy(part, p, len);
        part[len] = 0;
        if (!dot) {
            if (cJSON_GetObjectItemCaseSensitive(o, part))
                cJSON_ReplaceItemInObjectCaseSensitive(o, part, value);
            else
                cJSON_AddItemToObject(o, part, value);
            return;
        }
        cJSON *next = cJSON_GetObjectItemCaseSensitive(o, part);
        if (!cJSON_IsObject(next)) {
            next = cJSON_CreateObject();
            if (cJSON_GetObjectItemCaseSensitive(o, part))
                cJSON_ReplaceItemInObjectCaseSensitive(o, part, next);
            else
                cJSON_AddItemToObject(o, part, next);
        }
        o = next;
        p = dot + 1;
    }
}

int spec_set(spec_t *s, const char *path, const char *json_value, lb_err_t *err) {
    if (!path || (!find_leaf(path) && strcmp(path, "name")))
        return lb_err_set(err, LB_EARG,
                          "%s: unknown field; give a dotted path such as lora.r, train.lr, "
                          "dataset.path or eval.beams",
                          path ? path : "(null)");
    cJSON *value = cJSON_Parse(json_value ? json_value : "");
    if (!value) {
        // A bare word is taken as a string, so `--set train.schedule=cosine` works.
        value = cJSON_CreateString(json_value ? json_value : "");
    }
    cJSON *root = spec_to_cjson(s, 1);
    if (s->name_auto && strcmp(path, "name")) cJSON_DeleteItemFromObjectCaseSensitive(root, "name");
    tree_set(root, path, value);
    spec_t t;
    int rc = spec_from_cjson(root, &t, 1, err);
    cJSON_Delete(root);
    if (rc) return -1;
    spec_free(s);
    *s = t;
    return 0;
}

// The short label of one grid value in run names: "r8", "lr0.0001", "qv", "cosine".
static void grid_label(const char *key, const cJSON *v, char *buf, size_t size) {
    const char *last = strrchr(key, '.');
    last = last ? last + 1 : key;
    if (cJSON_IsNumber(v)) {
        snprintf(buf, size, "%s%g", last, v->valuedouble);
    } else if (cJSON_IsString(v)) {
        const char *slash = strrchr(v->valuestring, '/');
        snprintf(buf, size, "%s", slash && slash[1] ? slash + 1 : v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, size, "%s%s", cJSON_IsTrue(v) ? "" : "no-", last);
    } else if (cJSON_IsArray(v)) {
        int all_short = 1;
        for (const cJSON *e = v->child; e; e = e->next)
            if (!cJSON_IsString(e) || strlen(e->valuestring) > 1) all_short = 0;
        size_t len = 0;
        buf[0] = 0;
        if (v->child && cJSON_IsNumber(v->child))
            len = (size_t)snprintf(buf, size, "%s", last);
        for (const cJSON *e = v->child; e && len < size; e = e->next) {
            const char *sep = e == v->child ? "" : all_short ? "" : cJSON_IsNumber(e) ? "_" : "+";
            if (cJSON_IsString(e))
                len += (size_t)snprintf(buf + len, size - len, "%s%s", sep, e->valuestring);
            else if (cJSON_IsNumber(e))
                len += (size_t)snprintf(buf + len, size - len, "%s%g", sep, e->valuedouble);
        }
    } else {
        snprintf(buf, size, "%s", last);
    }
}

// The name of one grid point: the base name (or the method's) and the label of each varied
// field that matters to the point's method. Zero-shot trains nothing, so its learning rate,
// rank or targets would only suggest a difference that is not there: "demo-zero-shot", not
// "demo-none-lr0.003"; a full fine-tune has no rank.
static void point_name(const spec_t *base, const cJSON *tree, char labels[][300], char keys[][128], int n, char *name,
                       size_t size) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(tree, "method");
    const char *method = cJSON_IsString(m) ? m->valuestring : spec_method_name(base->method);
    int none = !strcmp(method, "none");
    size_t nl = (size_t)snprintf(name, size, "%s", base->name_auto ? (none ? "zero-shot" : method) : base->name);
    for (int i = 0; i < n && nl < size; i++) {
        const char *k = keys[i];
        if (!strcmp(k, "method")) {
            if (base->name_auto) continue;  // already the name
            nl += (size_t)snprintf(name + nl, size - nl, "-%s", none ? "zero-shot" : labels[i]);
            continue;
        }
        if ((none && (!strncmp(k, "train.", 6) || !strncmp(k, "lora.", 5) || !strncmp(k, "partial.", 8))) ||
            (strcmp(method, "lora") && !strncmp(k, "lora.", 5)) || (strcmp(method, "partial") && !strncmp(k, "partial.", 8)))
            continue;
        nl += (size_t)snprintf(name + nl, size - nl, "-%s", labels[i]);
    }
}

// Each grid value alone must give a valid spec: a bad one is reported as
// "grid.lora.r[2]: must be a positive integer ...", before any run is queued.
static int check_grid_values(const spec_t *s, lb_err_t *err) {
    cJSON *grid = cJSON_Parse(s->grid_json);
    cJSON *base = spec_to_cjson(s, 0);
    int rc = 0;
    for (const cJSON *k = grid ? grid->child : NULL; k && !rc; k = k->next) {
        int i = 0;
        for (const cJSON *v = k->child; v && !rc; v = v->next, i++) {
            cJSON *t = cJSON_Duplicate(base, 1);
            int parts = 1;
            for (const char *c = k->string; *c; c++) parts += *c == '+';
            if (parts > 1 && (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != parts)) {
                lb_err_set(err, LB_EARG, "grid.%s[%d]: must be a list of %d values, one per field joined by '+'",
                           k->string, i, parts);
                cJSON_Delete(t);
                rc = -1;
                break;
            }
            const char *p = k->string;
            for (int q = 0; q < parts; q++) {
                size_t kl = strcspn(p, "+");
                char sub[128];
                snprintf(sub, sizeof sub, "%.*s", (int)(kl < 127 ? kl : 127), p);
                tree_set(t, sub, cJSON_Duplicate(parts > 1 ? cJSON_GetArrayItem(v, q) : v, 1));
                p += kl + (p[kl] == '+');
            }
            spec_t tmp;
            lb_err_t inner = {0};
            if (spec_from_cjson(t, &tmp, 0, &inner)) {
                size_t kl = strlen(k->string);
                const char *rest = inner.msg;
                if (!strncmp(inner.msg, k->string, kl) &&
                    (inner.msg[kl] == ':' || inner.msg[kl] == '['))
                    rest = inner.msg + kl;
                else
                    rest = NULL;
                if (rest)
                    lb_err_set(err, LB_EARG, "grid.%s[%d]%s", k->string, i, rest);
                else
                    lb_err_set(err, LB_EARG, "grid.%s[%d]: %s", k->string, i, inner.msg);
                rc = -1;
            } else {
                spec_free(&tmp);
            }
            cJSON_Delete(t);
        }
    }
    cJSON_Delete(base);
    cJSON_Delete(grid);
    return rc;
}

void spec_list_free(spec_t *specs, size_t n) {
    for (size_t i = 0; i < n; i++) spec_free(&specs[i]);
    free(specs);
}

int spec_expand_grid(const spec_t *base, spec_t **out, size_t *n, lb_err_t *err) {
    *out = NULL;
    *n = 0;
    if (!base->grid_json) {
        spec_t *one = xcalloc(1, sizeof *one);
        spec_copy(one, base);
        *out = one;
        *n = 1;
        return 0;
    }
    cJSON *grid = cJSON_Parse(base->grid_json);
    if (!cJSON_IsObject(grid)) {
        cJSON_Delete(grid);
        return lb_err_set(err, LB_EFORMAT, "grid: not a JSON object; give e.g. "
                                           "{\"lora.r\": [4, 8, 16]}");
    }
    int nk = cJSON_GetArraySize(grid);
    if (nk > 64) {
        cJSON_Delete(grid);
        return lb_err_set(err, LB_EARG, "grid: at most 64 keys can be varied; got %d", nk);
    }
    const cJSON **keys = xcalloc((size_t)nk + 1, sizeof *keys);
    int *len = xcalloc((size_t)nk + 1, sizeof *len);
    size_t total = 1;
    int k = 0;
    for (const cJSON *e = grid->child; e; e = e->next, k++) {
        keys[k] = e;
        len[k] = cJSON_GetArraySize(e);
        if (len[k] <= 0 || total * (size_t)len[k] > 10000) {
            lb_err_set(err, LB_EARG,
                       len[k] <= 0 ? "grid.%s: the list of values is empty"
                                   : "grid.%s: the grid has more than 10000 points; split the sweep",
                       e->string);
            free(keys);
            free(len);
            cJSON_Delete(grid);
            return -1;
        }
        total *= (size_t)len[k];
    }
    cJSON *tree = spec_to_cjson(base, 0);
    spec_t *specs = xcalloc(total, sizeof *specs);
    size_t done = 0;
    int rc = 0;
    for (size_t idx = 0; idx < total && !rc; idx++) {
        // Mixed radix with the first key slowest.
        cJSON *t = cJSON_Duplicate(tree, 1);
        // (key, label) of each varied field; the name is made once the method is known
        char labels[64][300], lkeys[64][128];
        int nlab = 0;
        size_t rem = idx;
        int digit[64] = {0};
        for (int j = nk - 1; j >= 0; j--) {
            if (j < 64) digit[j] = (int)(rem % (size_t)len[j]);
            rem /= (size_t)len[j];
        }
        for (int j = 0; j < nk && j < 64 && !rc; j++) {
            const cJSON *v = cJSON_GetArrayItem(keys[j], digit[j]);
            // "a.b+c.d": [[va, vc], ...] varies several fields together (zipped), e.g.
            // targets with the rank that keeps the trainable budget equal.
            const char *key = keys[j]->string;
            int parts = 1;
            for (const char *c = key; *c; c++) parts += *c == '+';
            if (parts > 1 && (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != parts)) {
                lb_err_set(err, LB_EARG, "grid.%s[%d]: must be a list of %d values, one per field joined by '+'", key,
                           digit[j], parts);
                rc = -1;
                break;
            }
            const char *p = key;
            for (int q = 0; q < parts; q++) {
                size_t kl = strcspn(p, "+");
                char sub[128];
                snprintf(sub, sizeof sub, "%.*s", (int)kl, p);
                const cJSON *sv = parts > 1 ? cJSON_GetArrayItem(v, q) : v;
                tree_set(t, sub, cJSON_Duplicate(sv, 1));
                if (nlab < 64) {
                    grid_label(sub, sv, labels[nlab], sizeof labels[nlab]);
                    snprintf(lkeys[nlab++], sizeof lkeys[0], "%s", sub);
                }
                p += kl + (p[kl] == '+');
            }
        }
        if (rc) {
            cJSON_Delete(t);
            break;
        }
        char name[512];
        point_name(base, t, labels, lkeys, nlab, name, sizeof name);
        tree_set(t, "name", cJSON_CreateString(name));
        lb_err_t inner = {0};
        if (spec_from_cjson(t, &specs[idx], 0, &inner)) {
            lb_err_set(err, LB_EARG, "grid point '%s': %s", name, inner.msg);
            rc = -1;
        } else {
            done++;
        }
        cJSON_Delete(t);
    }
    cJSON_Delete(tree);
    cJSON_Delete(grid);
    free(keys);
    free(len);
    if (rc) {
        spec_list_free(specs, done);
        return -1;
    }
    *out = specs;
    *n = total;
    return 0;
}

// ---- files and paths -------------------------------------------------------------------

int spec_resolve_path(const char *dir, const char *path, char **out, lb_err_t *err) {
    *out = NULL;
    if (!path || !*path) return lb_err_set(err, LB_EARG, "an empty path was given");
    char *cand1 = NULL;
    if (path[0] != '/' && dir && *dir) {
        size_t n = strlen(dir) + strlen(path) + 2;
        cand1 = xmalloc(n);
        snprintf(cand1, n, "%s/%s", dir, path);
        char *r = realpath(cand1, NULL);
        if (r) {
            free(cand1);
            *out = xstrdup(r);
            free(r);
            return 0;
        }
    }
    char *r = realpath(path, NULL);
    if (r) {
        free(cand1);
        *out = xstrdup(r);
        free(r);
        return 0;
    }
    int e = errno;
    if (e == EACCES)  // it may well exist: a folder on the way is closed to this user
        lb_err_set(err, LB_EIO,
                   "'%s' cannot be reached by this user (%s: a folder on its path cannot be entered); make "
                   "the folders readable for this user, or copy it to a folder this user can read",
                   path[0] == '/' || !cand1 ? path : cand1, strerror(e));
    else if (path[0] == '/')
        lb_err_set(err, LB_EIO, "'%s' does not exist (%s)", path, strerror(e));
    else if (cand1)
        lb_err_set(err, LB_EIO,
                   "'%s' not found, neither as '%s' (beside the spec) nor in the current "
                   "folder; give a path relative to the spec file or the current folder",
                   path, cand1);
    else
        lb_err_set(err, LB_EIO, "'%s' not found in the current folder; check the path", path);
    free(cand1);
    return -1;
}

int spec_resolve_paths(spec_t *s, const char *dir, lb_err_t *err) {
    struct { const char *field; char **value; } paths[] = {
        {"base_model", &s->base_model},
        {"dataset.path", &s->dataset.path},
    };
    for (int i = 0; i < 2; i++) {
        if (!*paths[i].value || !**paths[i].value)
            return lb_err_set(err, LB_EARG, "%s: missing; give a path", paths[i].field);
        char *resolved;
        lb_err_t inner = {0};
        if (spec_resolve_path(dir, *paths[i].value, &resolved, &inner))
            return lb_err_set(err, inner.code, "%s: %s", paths[i].field, inner.msg);
        free(*paths[i].value);
        *paths[i].value = resolved;
    }
    return 0;
}

int spec_load_file(const char *path, spec_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = lb_read_file(path, &len, err);
    if (!text) return -1;
    int rc = spec_parse(text, path, out, err);
    free(text);
    if (rc) return -1;
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, strlen(dir) + 1, ".");
    lb_err_t inner = {0};
    rc = spec_resolve_paths(out, slash && slash == dir ? "/" : dir, &inner);
    free(dir);
    if (rc) {
        lb_err_set(err, inner.code, "%s: %s", path, inner.msg);
        spec_free(out);
        return -1;
    }
    return 0;
}

// ---- the spec in the engine's terms ----------------------------------------------------

static void lora_config_from_spec(const spec_t *sp, lora_config_t *c) {
    lora_config_default(c);
    c->r = sp->lora.r;
    c->alpha = sp->lora.alpha;
    c->dropout = sp->lora.dropout;
    c->rslora = sp->lora.rslora;
    c->init = sp->lora.init == SPEC_INIT_GAUSSIAN ? LORA_INIT_GAUSSIAN
              : sp->lora.init == SPEC_INIT_PISSA  ? LORA_INIT_PISSA
                                                  : LORA_INIT_KAIMING;
    c->n_targets = 0;
    for (int i = 0; i < SPEC_N_TARGETS; i++)
        if (sp->lora.targets & (1u << i)) snprintf(c->targets[c->n_targets++], sizeof c->targets[0], "%s", spec_target_name(i));
    c->stacks = (int)sp->lora.stacks == (SPEC_STACK_ENCODER | SPEC_STACK_DECODER) ? 0 : (int)sp->lora.stacks;
    c->attention = (int)sp->lora.attention == (SPEC_ATTN_SELF | SPEC_ATTN_CROSS) ? 0 : (int)sp->lora.attention;
    c->n_layers = sp->lora.n_layers < LORA_MAX_LAYERS ? sp->lora.n_layers : LORA_MAX_LAYERS;
    for (int i = 0; i < c->n_layers; i++) c->layers[i] = sp->lora.layers[i];
    c->n_rank_pattern = sp->lora.n_rank_pattern;
    for (int i = 0; i < c->n_rank_pattern && i < LORA_MAX_PATTERNS; i++) {
        snprintf(c->rank_pattern[i].key, sizeof c->rank_pattern[i].key, "%s", sp->lora.rank_pattern[i].key);
        c->rank_pattern[i].value = sp->lora.rank_pattern[i].value;
    }
    c->n_alpha_pattern = sp->lora.n_alpha_pattern;
    for (int i = 0; i < c->n_alpha_pattern && i < LORA_MAX_PATTERNS; i++) {
        snprintf(c->alpha_pattern[i].key, sizeof c->alpha_pattern[i].key, "%s", sp->lora.alpha_pattern[i].key);
        c->alpha_pattern[i].value = sp->lora.alpha_pattern[i].value;
    }
    snprintf(c->base_model, sizeof c->base_model, "%s", sp->base_model ? sp->base_model : "");
}

void spec_method_opts(const spec_t *sp, train_method_opts_t *o) {
    static const train_method_t methods[] = {[SPEC_METHOD_NONE] = TRAIN_METHOD_NONE, [SPEC_METHOD_LORA] = TRAIN_METHOD_LORA,
                                             [SPEC_METHOD_FULL] = TRAIN_METHOD_FULL, [SPEC_METHOD_PARTIAL] = TRAIN_METHOD_PARTIAL};
    train_method_opts_default(o, methods[sp->method]);
    lora_config_from_spec(sp, &o->lora);
    o->partial.top_blocks = sp->partial.top_blocks;
    o->partial.stacks = sp->partial.stack == SPEC_PART_ENCODER   ? T5_STACK_ENCODER
                        : sp->partial.stack == SPEC_PART_DECODER ? T5_STACK_DECODER
                                                                 : T5_STACK_ENCODER | T5_STACK_DECODER;
    o->partial.norms_only = sp->partial.norms_only;
    o->seed = (uint64_t)sp->train.seed;
    o->loraplus_ratio = sp->train.loraplus_ratio;
    o->position_bias_lr_ratio = sp->train.position_bias_lr_ratio;
}
