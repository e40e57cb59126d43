// LoRA adapter structure and files, independent of the model code: target resolution and
// its errors, parameter counts as PEFT prints them, PEFT's files read and written, merge
// and unmerge, and PiSSA's initialisation.
#include <unistd.h>

#include "harness.h"
#include "lora.h"
#include "safetensors.h"

static const lora_shape_t flan_small = {.d_model = 512, .inner = 384, .d_ff = 1024, .vocab = 32128,
                                        .n_enc = 8, .n_dec = 8, .gated = 1, .n_heads = 6, .buckets = 32};
static const lora_shape_t flan_base = {.d_model = 768, .inner = 768, .d_ff = 2048, .vocab = 32128,
                                       .n_enc = 12, .n_dec = 12, .gated = 1, .n_heads = 12, .buckets = 32};
static const lora_shape_t gated_a = {.d_model = 64, .inner = 64, .d_ff = 128, .vocab = 608,
                                     .n_enc = 2, .n_dec = 2, .gated = 1, .n_heads = 4, .buckets = 32};
static char tmpdir[256];

static void test_param_counts(void) {
    lora_config_t c;
    lora_config_default(&c);
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &flan_small, &err) == 0);
    EXPECTF(a.n_params == 344064, "%zu", a.n_params);
    EXPECT(a.n == 48);
    char line[200];
    size_t base = 76961152;  // FLAN-T5-small's t5_count_params (tests/test_facts.c checks it)
    lora_format_trainable(line, sizeof line, a.n_params, a.n_params + base);
    EXPECTF(!strcmp(line, "trainable params: 344,064 || all params: 77,305,216 || trainable%: 0.4451"), "%s", line);
    lora_free(&a);
    EXPECT(lora_create(&a, &c, &flan_base, &err) == 0);
    EXPECTF(a.n_params == 884736, "%zu", a.n_params);
    lora_free(&a);
    // Narrowing: decoder cross-attention only, blocks 0 and 2.
    c.stacks = 2;
    c.attention = 2;
    c.n_layers = 2;
    c.layers[0] = 0;
    c.layers[1] = 2;
    EXPECT(lora_create(&a, &c, &flan_small, &err) == 0);
    EXPECT(a.n == 4 && !strcmp(a.m[0].name, "decoder.block.0.layer.1.EncDecAttention.q"));
    lora_free(&a);
}

static void test_target_errors(void) {
    lora_config_t c;
    lora_config_default(&c);
    strcpy(c.targets[1], "wi");  // gated models have wi_0 / wi_1, not wi
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &flan_small, &err) != 0);
    EXPECTF(strstr(err.msg, "\"wi\"") && strstr(err.msg, "wi_0, wi_1"), "%s", err.msg);
    strcpy(c.targets[1], "query");
    EXPECT(lora_create(&a, &c, &flan_small, &err) != 0 && strstr(err.msg, "\"query\""));
    lora_config_default(&c);
    c.r = 0;
    EXPECT(lora_create(&a, &c, &flan_small, &err) != 0 && strstr(err.msg, "r is 0"));
    lora_config_default(&c);
    c.stacks = 1;
    c.attention = 2;  // cross attention exists only in the decoder
    c.n_targets = 1;
    EXPECT(lora_create(&a, &c, &flan_small, &err) != 0 && strstr(err.msg, "select no module"));
}

static void test_patterns_rslora(void) {
    lora_config_t c;
    lora_config_default(&c);
    c.alpha = 16;
    c.rslora = 1;
    c.n_rank_pattern = 1;
    strcpy(c.rank_pattern[0].key, "decoder.block.1.layer.0.SelfAttention.v");
    c.rank_pattern[0].value = 2;
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &gated_a, &err) == 0);
    lora_module_t *m = lora_find(&a, "decoder.block.1.layer.0.SelfAttention.v");
    EXPECT(m && m->r == 2 && fabsf(m->scale - 16 / sqrtf(2)) < 1e-5f);
    m = lora_find(&a, "encoder.block.0.layer.0.SelfAttention.q");
    EXPECT(m && m->r == 8 && fabsf(m->scale - 16 / sqrtf(8)) < 1e-5f);
    lora_free(&a);
}

// The adapter PEFT wrote for the fixture loads with the right modules and values, and our
// save writes the same tensor names and shapes, and reads back identically.
static void test_peft_files(void) {
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECTF(lora_load(&a, "tests/fixtures/hf/t5-gated-a/adapter", &gated_a, &err) == 0, "%s", err.msg);
    EXPECT(a.n == 12 && a.cfg.r == 4 && a.cfg.alpha == 8 && a.cfg.init == LORA_INIT_RANDOM_BOTH);
    EXPECT(a.m[0].scale == 2.0f);
    st_file_t ref;
    EXPECT(st_open(&ref, "tests/fixtures/hf/t5-gated-a/adapter/adapter_model.safetensors", &err) == 0);
    const st_tensor_t *t = st_find(&ref, "base_model.model.decoder.block.1.layer.1.EncDecAttention.v.lora_B.weight");
    lora_module_t *m = lora_find(&a, "decoder.block.1.layer.1.EncDecAttention.v");
    float buf[256];
    EXPECT(t && m && st_to_f32(t, buf, &err) == 0 && memcmp(buf, m->B, sizeof(float) * 256) == 0);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/saved", tmpdir);
    EXPECTF(lora_save(&a, dir, &err) == 0, "%s", err.msg);
    st_file_t ours;
    char p[400];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    EXPECT(st_open(&ours, p, &err) == 0);
    EXPECT(ours.n == ref.n);
    for (int i = 0; i < ref.n && i < ours.n; i++) {
        EXPECTF(!strcmp(ours.tensors[i].name, ref.tensors[i].name), "%s vs %s", ours.tensors[i].name, ref.tensors[i].name);
        EXPECT(ours.tensors[i].shape[0] == ref.tensors[i].shape[0] && ours.tensors[i].shape[1] == ref.tensors[i].shape[1]);
        EXPECT(memcmp(ours.tensors[i].data, ref.tensors[i].data, ref.tensors[i].end - ref.tensors[i].begin) == 0);
    }
    st_close(&ours);
    st_close(&ref);
    lora_adapter_t b;
    EXPECTF(lora_load(&b, dir, &gated_a, &err) == 0, "%s", err.msg);
    EXPECT(b.n == a.n && b.n_params == a.n_params && memcmp(a.params, b.params, a.n_params * sizeof(float)) == 0);
    EXPECT(b.cfg.init == LORA_INIT_RANDOM_BOTH && b.cfg.r == 4 && b.cfg.alpha == 8);
    lora_free(&b);
    lora_free(&a);
}

static void test_bad_adapter_files(void) {
    char dir[300], cmd[2000];
    lb_err_t err = {0};
    lora_adapter_t a;
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    // An adapter made for another model: the fixture's tensors against a FLAN-T5-small shape.
    EXPECT(lora_load(&a, "tests/fixtures/hf/t5-gated-a/adapter", &flan_small, &err) != 0);
    EXPECTF(strstr(err.msg, "encoder.block.0.layer.0.SelfAttention.q.lora_A.weight") && strstr(err.msg, "[4, 512]"), "%s", err.msg);
    // A config whose targets include a module the file lacks.
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp tests/fixtures/hf/t5-gated-a/adapter/adapter_model.safetensors %s/ && "
             "sed 's/\"v\"$/\"v\", \"o\"/' tests/fixtures/hf/t5-gated-a/adapter/adapter_config.json > %s/adapter_config.json",
             dir, dir, dir);
    EXPECT(system(cmd) == 0);
    EXPECT(lora_load(&a, dir, &gated_a, &err) != 0);
    EXPECTF(strstr(err.msg, "encoder.block.0.layer.0.SelfAttention.o.lora_A.weight") && strstr(err.msg, "missing"), "%s", err.msg);
    // Targets narrower than the file: the extra tensor is named.
    snprintf(cmd, sizeof cmd, "sed 's/\"v\"$//; s/\"q\",/\"q\"/' tests/fixtures/hf/t5-gated-a/adapter/adapter_config.json > %s/adapter_config.json", dir);
    EXPECT(system(cmd) == 0);
    EXPECT(lora_load(&a, dir, &gated_a, &err) != 0);
    EXPECTF(strstr(err.msg, ".v.lora_A.weight") && strstr(err.msg, "does not belong"), "%s", err.msg);
    // Malformed JSON and a non-LoRA adapter.
    snprintf(cmd, sizeof cmd, "printf '{\"r\": 4,' > %s/adapter_config.json", dir);
    EXPECT(system(cmd) == 0);
    EXPECT(lora_load(&a, dir, &gated_a, &err) != 0 && strstr(err.msg, "adapter_config.json is not valid JSON"));
    snprintf(cmd, sizeof cmd, "printf '{\"peft_type\": \"IA3\", \"r\": 4}' > %s/adapter_config.json", dir);
    EXPECT(system(cmd) == 0);
    EXPECT(lora_load(&a, dir, &gated_a, &err) != 0 && strstr(err.msg, "peft_type"));
    // Found by the fuzzer: an r far past any real rank is refused, not converted.
    lora_config_t cfg;
    size_t len;
    char *text = lb_read_file("tests/fixtures/fuzz/adapter_config-huge-r.json", &len, &err);
    EXPECT(text && lora_parse_config(text, len, "huge-r", &cfg, &err) != 0 && strstr(err.msg, "\"r\""));
    free(text);
    snprintf(cmd, sizeof cmd, "printf '{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"qq\"]}' > %s/adapter_config.json", dir);
    EXPECT(system(cmd) == 0);
    EXPECT(lora_load(&a, dir, &gated_a, &err) != 0 && strstr(err.msg, "\"qq\""));
}

static float *weight_of(void *ctx, const char *module) {
    (void)module;
    return ctx;
}

static void test_merge_and_pissa(void) {
    lora_shape_t s = gated_a;
    lora_config_t c;
    lora_config_default(&c);
    c.n_targets = 1;
    c.stacks = 1;
    c.n_layers = 1;  // one module: encoder.block.0 q
    c.r = 4;
    c.alpha = 8;
    c.init = LORA_INIT_RANDOM_BOTH;
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &s, &err) == 0 && a.n == 1);
    float W[64 * 64], W0[64 * 64];
    uint64_t st = 7;
    for (int i = 0; i < 64 * 64; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        W0[i] = W[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5);
    }
    EXPECT(lora_init(&a, 1, NULL, NULL, &err) == 0);
    lora_merge(&a, weight_of, W, +1, &err);
    // W' = W + 2 · B·A at one entry, by hand.
    double d = 0;
    for (int j = 0; j < 4; j++) d += a.m[0].B[5 * 4 + j] * a.m[0].A[j * 64 + 9];
    EXPECT(fabs(W[5 * 64 + 9] - (W0[5 * 64 + 9] + 2 * d)) < 1e-6);
    lora_merge(&a, weight_of, W, -1, &err);
    EXPECT(th_rel_err(W, W0, 64 * 64) < 1e-6);
    lora_free(&a);
    // PiSSA: the residual plus s·B·A gives W back, and the residual has lost the top
    // singular directions, so it is smaller in Frobenius norm.
    c.init = LORA_INIT_PISSA;
    EXPECT(lora_create(&a, &c, &s, &err) == 0);
    memcpy(W, W0, sizeof W);
    EXPECTF(lora_init(&a, 1, weight_of, W, &err) == 0, "%s", err.msg);
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 64 * 64; i++) n0 += W0[i] * W0[i], n1 += W[i] * W[i];
    EXPECT(n1 < 0.9 * n0);
    lora_merge(&a, weight_of, W, +1, &err);
    EXPECTF(th_rel_err(W, W0, 64 * 64) < 1e-5, "%g", th_rel_err(W, W0, 64 * 64));
    lora_free(&a);
}

static void test_init_distributions(void) {
    lora_config_t c;
    lora_config_default(&c);
    lora_adapter_t a;
    lb_err_t err = {0};
    EXPECT(lora_create(&a, &c, &flan_small, &err) == 0);
    EXPECT(lora_init(&a, 42, NULL, NULL, &err) == 0);
    lora_module_t *m = &a.m[0];  // in = 512: A ~ U(±1/√512), B = 0
    double mx = 0, sum2 = 0, bmax = 0;
    for (int i = 0; i < m->r * m->in; i++) {
        mx = fmax(mx, fabs(m->A[i]));
        sum2 += m->A[i] * m->A[i];
    }
    for (int i = 0; i < m->r * m->out; i++) bmax = fmax(bmax, fabs(m->B[i]));
    double bound = 1 / sqrt(512.0), var = sum2 / (m->r * m->in);
    EXPECT(mx <= bound && mx > 0.95 * bound && bmax == 0);
    EXPECTF(fabs(var - bound * bound / 3) < 0.1 * bound * bound / 3, "var %g", var);
    lora_free(&a);
    c.init = LORA_INIT_GAUSSIAN;
    EXPECT(lora_create(&a, &c, &flan_small, &err) == 0 && lora_init(&a, 42, NULL, NULL, &err) == 0);
    m = &a.m[0];
    sum2 = 0;
    for (int i = 0; i < m->r * m->in; i++) sum2 += m->A[i] * m->A[i];
    var = sum2 / (m->r * m->in);  // N(0, 1/r²): variance 1/64
    EXPECTF(fabs(var - 1.0 / 64) < 0.1 / 64, "var %g", var);
    lora_free(&a);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_test_lora_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0) return 1;
    RUN(test_param_counts);
    RUN(test_target_errors);
    RUN(test_patterns_rslora);
    RUN(test_peft_files);
    RUN(test_bad_adapter_files);
    RUN(test_merge_and_pissa);
    RUN(test_init_distributions);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    TH_DONE();
}
