// Model facts (t5_facts.h) against a real setup: for varied specs, the numbers the new-run
// form shows (spec -> app_spec_facts -> spec_method_opts -> t5_facts_*) equal what
// train_params_setup makes on a real model (the t5-gated-a fixture, and a random
// t5_init_empty model of another shape): trainable count, total as PEFT counts it, FLOPs
// as t5_acts_flops counts a forward and backward of a full batch, the activation arena's
// bytes, the weights' bytes in fp32 and with frozen weights in bf16.
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app_params.h"
#include "gemm_bf16.h"
#include "harness.h"
#include "lora_t5.h"
#include "spec.h"
#include "t5.h"
#include "t5_facts.h"
#include "train.h"

#define FIX "tests/fixtures/hf/t5-gated-a"

static char rnd_dir[256];  // a folder holding only the random model's config.json

// A non-gated (relu), tied model with more encoder than decoder blocks.
static const char rnd_config[] =
    "{\"vocab_size\": 50, \"d_model\": 32, \"d_kv\": 8, \"num_heads\": 2, \"d_ff\": 48,"
    " \"num_layers\": 3, \"num_decoder_layers\": 1, \"feed_forward_proj\": \"relu\","
    " \"tie_word_embeddings\": true, \"dropout_rate\": 0.1}";

// Sets base_model, the token limits and (unless the case has "train") a batch of 3; the
// rest of the spec is the case's.
static int parse_spec(const char *model, const char *body, spec_t *s) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"base_model\": \"%s\", \"dataset\": {\"path\": \"unused\", \"max_source_tokens\": 11,"
             " \"max_target_tokens\": 6}, %s%s}",
             model, strstr(body, "\"train\"") ? "" : "\"train\": {\"batch_size\": 3}, ", body);
    lb_err_t err = {0};
    if (spec_parse(json, "case", s, &err)) {
        fprintf(stderr, "    %s: %s\n", body, err.msg);
        return -1;
    }
    return 0;
}

// The model a run would load: the fixture's weights, or the random config's zeros.
static int load_model(const char *model, t5_model_t *m) {
    lb_err_t err = {0};
    if (!strcmp(model, FIX)) return t5_load(m, FIX, &err);
    t5_config_t c;
    if (t5_config_load(&c, model, &err)) return -1;
    return t5_init_empty(m, &c, &err);
}

// One case: the form's facts against a real setup, forward and backward.
// One forward and backward in bf16 on its own thread, recording the bytes that thread's
// buffer for late packings grew to.
typedef struct {
    t5_model_t *m;
    t5_acts_t *a;
    const t5_batch_t *b;
    const lb_drop_t *drop;
    size_t late_bytes;
} step_args_t;

static void *bf16_step(void *p) {
    step_args_t *sa = p;
    float loss;
    lb_err_t err = {0};
    if (t5_forward(sa->m, sa->a, sa->b, sa->drop, &loss, &err) == 0) t5_backward(sa->m, sa->a, sa->drop, 1.0f);
    sa->late_bytes = lb_bf16_late_bytes();
    return NULL;
}

static void check_case(const char *model, const char *body) {
    spec_t s;
    if (parse_spec(model, body, &s)) {
        EXPECT(0);
        return;
    }
    lb_err_t err = {0};
    app_spec_facts_t *fx = xcalloc(1, sizeof *fx);
    int rc = app_spec_facts(&s, fx, &err);
    EXPECTF(rc == 0, "%s: %s", body, err.msg);
    // the run's side, as runner.c's session_setup does it
    t5_model_t m;
    EXPECT(load_model(model, &m) == 0);
    train_method_opts_t mo;
    spec_method_opts(&s, &mo);
    train_params_t tp;
    EXPECTF(train_params_setup(&tp, &m, &mo, &err) == 0, "%s: %s", body, err.msg);
    size_t base = t5_count_params(&m);
    size_t total = base + (tp.has_lora ? tp.n : 0);
    EXPECTF(fx->params.trainable == tp.n, "%s: form %zu, setup %zu", body, fx->params.trainable, tp.n);
    EXPECTF(fx->params.base == base && fx->params.total == total, "%s: form %zu/%zu, model %zu/%zu", body,
            fx->params.base, fx->params.total, base, total);
    EXPECTF(fx->params.modules == (tp.has_lora ? tp.lora.n : 0), "%s: %d modules", body, fx->params.modules);
    // FLOPs and the arena of a full batch (B, S, T) as the form assumes it
    int B = fx->B, S = fx->S, T = fx->T, V = m.cfg.vocab_size;
    EXPECT(B == 3 && S == 11 && T == 6);
    int32_t *ids = xcalloc((size_t)(B * S), sizeof(int32_t)), *mask = xcalloc((size_t)(B * S), sizeof(int32_t));
    int32_t *labels = xcalloc((size_t)(B * T), sizeof(int32_t));
    for (int i = 0; i < B * S; i++) ids[i] = 2 + i % (V - 2), mask[i] = 1;
    for (int i = 0; i < B * T; i++) labels[i] = 2 + (7 * i) % (V - 2);
    t5_batch_t b = {B, S, T, ids, mask, labels};
    t5_acts_t *a = t5_acts_new(&m, B, S, T);
    EXPECTF(fx->mem.acts == t5_acts_bytes(a), "%s: arena form %zu, engine %zu", body, fx->mem.acts, t5_acts_bytes(a));
    float loss;
    lb_drop_t drop = {1, 0, 1};
    EXPECTF(t5_forward(&m, a, &b, &drop, &loss, &err) == 0, "%s: %s", body, err.msg);
    t5_backward(&m, a, &drop, 1.0f);
    double f0 = t5_acts_flops(a, 0), f1 = t5_acts_flops(a, 1);
    EXPECTF(fabs(fx->flops.forward - f0) <= 1e-12 * f0, "%s: forward form %.0f, engine %.0f", body, fx->flops.forward, f0);
    EXPECTF(fabs(fx->flops.backward - f1) <= 1e-12 * (f1 + 1), "%s: backward form %.0f, engine %.0f", body,
            fx->flops.backward, f1);
    // memory: weights as held, then with the frozen linear weights in bf16
    size_t h = 0, w = t5_weight_bytes(&m, &h);
    EXPECTF(fx->mem.weights == w && fx->mem.weights_bf16 == h, "%s: weights form %zu, model %zu", body, fx->mem.weights, w);
    EXPECT(fx->mem.grads == tp.n * sizeof(lb_real) && fx->mem.optimizer == 2 * tp.n * sizeof(float));
    t5_facts_memory_t m16;
    EXPECT(t5_facts_memory(&fx->cfg, &fx->method, B, S, T, 1, T5_PRECISION_FP32, &m16, &err) == 0);
    EXPECTF(m16.acts == fx->mem.acts || t5_precision_is_bf16(s.train.precision), "%s: fp32 arena", body);
    EXPECT(t5_frozen_weights_bf16(&m, &err) == 0);
    w = t5_weight_bytes(&m, &h);
    EXPECTF(m16.weights == w && m16.weights_bf16 == h && (h > 0) == (mo.method != TRAIN_METHOD_FULL),
            "%s: bf16 weights form %zu (%zu bf16), model %zu (%zu bf16)", body, m16.weights, m16.weights_bf16, w, h);
    // precision bf16 (where it runs): the arena of a model in bf16, which keeps some
    // activations in bf16
    if (t5_precision_is_bf16(T5_PRECISION_BF16)) {
        t5_facts_memory_t mb;
        EXPECT(t5_facts_memory(&fx->cfg, &fx->method, B, S, T, 1, T5_PRECISION_BF16, &mb, &err) == 0);
        EXPECTF(t5_use_bf16(&m, &err) == 0, "%s: %s", body, err.msg);
        t5_acts_t *ab = t5_acts_new(&m, B, S, T);
        EXPECTF(mb.acts == t5_acts_bytes(ab), "%s: bf16 arena form %zu, engine %zu", body, mb.acts, t5_acts_bytes(ab));
        // the packings: the frozen weights' own, then the buffer a step packs trainable
        // weights into (on a fresh thread, so that its buffer is this model's alone)
        size_t packed = 0;
        int late = 0;
        for (int i = 0; i < m.n_lin; i++) {
            packed += linear_bf16_packed_bytes(&m.lin[i]);
            late |= linear_bf16_packs_late(&m.lin[i]);
        }
        step_args_t sa = {&m, ab, &b, &drop, 0};
        if (late) {
            pthread_t th;
            EXPECT(pthread_create(&th, NULL, bf16_step, &sa) == 0 && pthread_join(th, NULL) == 0);
            packed += sa.late_bytes;
        }
        EXPECTF(mb.packings == packed && mb.packings > 0 &&
                    mb.total == mb.weights + mb.adapter + mb.grads + mb.optimizer + mb.acts + mb.packings,
                "%s: bf16 packings form %zu, engine %zu", body, mb.packings, packed);
        EXPECTF(mb.weights == w && mb.weights_bf16 == h, "%s: bf16 precision weights form %zu, model %zu", body, mb.weights, w);
        t5_acts_free(ab);
    }
    t5_acts_free(a);
    free(ids);
    free(mask);
    free(labels);
    train_params_free(&tp);
    t5_free(&m);
    free(fx);
    spec_free(&s);
}

static const char *const fixture_cases[] = {
    "\"method\": \"lora\"",  // r 8 on q, v: the defaults
    "\"method\": \"lora\", \"lora\": {\"r\": 4, \"rslora\": true, \"targets\": [\"q\",\"k\",\"v\",\"o\",\"wi_0\",\"wi_1\",\"wo\",\"lm_head\"]}",
    "\"method\": \"lora\", \"lora\": {\"r\": 2, \"layers\": [1], \"targets\": [\"q\",\"k\",\"v\",\"o\",\"wi_0\",\"wi_1\",\"wo\"]}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"q\",\"k\",\"v\",\"o\"], \"stacks\": [\"decoder\"], \"attention\": [\"cross\"]}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"q\",\"v\",\"wo\"], \"stacks\": [\"encoder\"], \"attention\": [\"self\"]}",
    "\"method\": \"lora\", \"lora\": {\"r\": 8, \"targets\": [\"q\",\"v\"], \"rank_pattern\": {\"q\": 2, "
    "\"decoder.block.1.layer.1.EncDecAttention.v\": 16}, \"alpha_pattern\": {\"v\": 32}}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"q\",\"lm_head\"], \"attention\": [\"self\"], \"layers\": [0]}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"lm_head\"], \"stacks\": [\"decoder\"], \"rslora\": true}",
    "\"method\": \"lora\", \"lora\": {\"r\": 16, \"targets\": [\"wi_0\",\"wo\"], \"stacks\": [\"decoder\"], \"layers\": [0, 1]},"
    " \"train\": {\"batch_size\": 3, \"loraplus_ratio\": 16}",
    "\"method\": \"full\"",
    "\"method\": \"none\"",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 1, \"stack\": \"both\"}",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 1, \"stack\": \"decoder\", \"norms_only\": true}",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 0, \"stack\": \"encoder\"}",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 2, \"stack\": \"decoder\"},"
    " \"train\": {\"batch_size\": 3, \"position_bias_lr_ratio\": 10}",
};

static const char *const random_cases[] = {
    "\"method\": \"lora\", \"lora\": {\"r\": 4, \"targets\": [\"q\",\"wi\",\"wo\",\"lm_head\"], \"rank_pattern\": {\"wo\": 3}}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"k\",\"o\"], \"layers\": [2], \"rslora\": true}",
    "\"method\": \"lora\", \"lora\": {\"targets\": [\"q\",\"v\"], \"stacks\": [\"decoder\"], \"attention\": [\"self\"]}",
    "\"method\": \"full\"",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 2, \"stack\": \"encoder\"}",
    "\"method\": \"partial\", \"partial\": {\"top_blocks\": 1, \"stack\": \"both\", \"norms_only\": true}",
    "\"method\": \"none\"",
};

static void test_form_equals_setup_on_fixture(void) {
    for (size_t i = 0; i < sizeof fixture_cases / sizeof fixture_cases[0]; i++) check_case(FIX, fixture_cases[i]);
}

static void test_form_equals_setup_on_random_model(void) {
    for (size_t i = 0; i < sizeof random_cases / sizeof random_cases[0]; i++) check_case(rnd_dir, random_cases[i]);
}

// Known values: PEFT's print_trainable_parameters on FLAN-T5-small (lora.h), the fixture's
// PEFT count, and the form's example line.
static void test_known_counts(void) {
    static const char flan_small[] =
        "{\"vocab_size\": 32128, \"d_model\": 512, \"d_kv\": 64, \"num_heads\": 6, \"d_ff\": 1024,"
        " \"num_layers\": 8, \"num_decoder_layers\": 8, \"feed_forward_proj\": \"gated-gelu\","
        " \"tie_word_embeddings\": false}";
    t5_config_t c;
    lb_err_t err = {0};
    EXPECT(t5_config_parse(&c, flan_small, "flan-t5-small", &err) == 0);
    train_method_opts_t o;
    train_method_opts_default(&o, TRAIN_METHOD_LORA);  // r 8 on q, v
    t5_facts_params_t p;
    EXPECT(t5_facts_params(&c, &o, &p, &err) == 0);
    EXPECTF(p.base == 76961152 && p.trainable == 344064 && p.total == 77305216 && p.modules == 48,
            "%zu %zu %zu %d", p.base, p.trainable, p.total, p.modules);
    char line[160];
    app_lora_explain(&p, 0, line, sizeof line);
    EXPECTF(!strcmp(line, "q: 384×512 W → 8·(512+384) = 7,168 trainable, 96% fewer"), "%s", line);
    app_lora_explain(&p, 1, line, sizeof line);
    EXPECTF(!strcmp(line, "q: 384x512 W -> 8*(512+384) = 7,168 trainable, 96% fewer"), "%s", line);
    // every linear on a gated model, and lm_head: wi_0 and wi_1 both count
    o.lora.r = 4;
    o.lora.n_targets = 0;
    const char *all[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo", "lm_head"};
    for (int i = 0; i < 8; i++) snprintf(o.lora.targets[o.lora.n_targets++], sizeof o.lora.targets[0], "%s", all[i]);
    EXPECT(t5_facts_params(&c, &o, &p, &err) == 0);
    size_t attn = 4ull * 4 * (512 + 384) * (8 + 16), ffn = 3ull * 4 * (512 + 1024) * 16, head = 4ull * (512 + 32128);
    EXPECTF(p.trainable == attn + ffn + head, "%zu vs %zu", p.trainable, attn + ffn + head);
    // a full fine-tune trains every parameter; PEFT's total has no adapter then
    train_method_opts_default(&o, TRAIN_METHOD_FULL);
    EXPECT(t5_facts_params(&c, &o, &p, &err) == 0);
    EXPECT(p.trainable == 76961152 && p.total == 76961152 && p.modules == 0);
    // the fixture: PEFT's r=4 on q and v is 2 blocks x 3 attention kinds x 2 modules x 4·(64+64)
    EXPECT(t5_config_load(&c, FIX, &err) == 0);
    train_method_opts_default(&o, TRAIN_METHOD_LORA);
    o.lora.r = 4;
    EXPECT(t5_facts_params(&c, &o, &p, &err) == 0);
    EXPECTF(p.trainable == 6144, "%zu", p.trainable);
}

// What a run would refuse, the facts refuse with the run's message.
static void test_refusals(void) {
    t5_config_t c;
    lb_err_t err = {0};
    EXPECT(t5_config_load(&c, FIX, &err) == 0);
    train_method_opts_t o;
    train_method_opts_default(&o, TRAIN_METHOD_LORA);
    o.lora.n_layers = 1;
    o.lora.layers[0] = 7;  // the fixture has blocks 0 and 1
    t5_facts_params_t p;
    EXPECT(t5_facts_params(&c, &o, &p, &err) == -1 && strstr(err.msg, "select no module"));
    train_method_opts_default(&o, TRAIN_METHOD_PARTIAL);
    o.partial.stacks = 0;
    EXPECT(t5_facts_params(&c, &o, &p, &err) == -1 && strstr(err.msg, "partial"));
    t5_facts_flops_t f;
    train_method_opts_default(&o, TRAIN_METHOD_NONE);
    EXPECT(t5_facts_flops(&c, &o, 0, 4, 4, &f, &err) == -1 && strstr(err.msg, "batch 0"));
}

int main(void) {
    snprintf(rnd_dir, sizeof rnd_dir, "/tmp/lb-facts-%d", (int)getpid());
    mkdir(rnd_dir, 0700);
    char path[300];
    snprintf(path, sizeof path, "%s/config.json", rnd_dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    fputs(rnd_config, f);
    fclose(f);
    RUN(test_form_equals_setup_on_fixture);
    RUN(test_form_equals_setup_on_random_model);
    RUN(test_known_counts);
    RUN(test_refusals);
    unlink(path);
    rmdir(rnd_dir);
    TH_DONE();
}
