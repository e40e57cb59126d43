// LoRA on the model against PEFT (fixture t5-gated-a: adapter/ and ref_lora.safetensors):
// loss, logits and every LoRA gradient; merged weights and merged logits; a saved-then-
// loaded adapter gives the same outputs; switching adapters without reloading the base;
// a finite-difference-free invariant: merge then forward = unmerged forward.
#include <unistd.h>

#include "harness.h"
#include "lora.h"
#include "lora_t5.h"
#include "safetensors.h"
#include "t5.h"
#include "train.h"

#define FIX "tests/fixtures/hf/t5-gated-a"

static st_file_t ref;
static train_batch_t tb;
static char tmpdir[256];

static float *ref_tensor(const char *name, size_t *n) {
    const st_tensor_t *t = st_find(&ref, name);
    if (!t) return NULL;
    float *buf = xmalloc(t->numel * sizeof(float));
    lb_err_t err;
    st_to_f32(t, buf, &err);
    if (n) *n = t->numel;
    return buf;
}

// Loads the base model with the fixture adapter attached (grads != NULL: trainable).
static int setup(t5_model_t *m, lora_adapter_t *a, float **grads, const char *dir) {
    lb_err_t err = {0};
    if (t5_load(m, FIX, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        return -1;
    }
    t5_set_trainable(m, NULL, NULL);
    lora_shape_t s;
    lora_shape_from_t5(&m->cfg, &s);
    if (lora_load(a, dir, &s, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        t5_free(m);
        return -1;
    }
    *grads = xcalloc(a->n_params, sizeof(float));
    if (lora_attach(a, m, *grads, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void test_forward_and_grads_match_peft(void) {
    t5_model_t m;
    lora_adapter_t a;
    float *g;
    if (setup(&m, &a, &g, FIX "/adapter")) {
        EXPECT(0);
        return;
    }
    t5_acts_t *acts = t5_acts_new(&m, tb.b.B, tb.b.S, tb.b.T);
    float loss;
    lb_err_t err;
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &loss, &err) == 0);
    size_t nl;
    float *rl = ref_tensor("loss", NULL), *rlog = ref_tensor("logits", &nl);
    // cppcheck-suppress objectIndex ; with n = 1 EXPECT_CLOSE reads only element 0
    EXPECT_CLOSE("loss", &loss, rl, 1, 1e-4);
    EXPECT_CLOSE("logits", t5_acts_logits(acts), rlog, nl, 1e-4);
    t5_backward(&m, acts, NULL, 1.0f);
    EXPECT(t5_acts_encoder_backward_count(acts) > 0);  // q,v of the encoder are adapted
    int checked = 0;
    char name[256];
    for (int i = 0; i < a.n; i++) {
        for (int ab = 0; ab < 2; ab++) {
            snprintf(name, sizeof name, "grad.base_model.model.%s.lora_%c.default.weight", a.m[i].name, ab ? 'B' : 'A');
            size_t n;
            float *r = ref_tensor(name, &n);
            EXPECTF(r != NULL, "%s missing in the fixture", name);
            if (!r) continue;
            const float *ours = g + ((ab ? a.m[i].B : a.m[i].A) - a.params);
            EXPECT_CLOSE(name, ours, r, n, 1e-3);
            free(r);
            checked++;
        }
    }
    EXPECT(checked == 24);
    free(rl);
    free(rlog);
    t5_acts_free(acts);
    lora_free(&a);
    free(g);
    t5_free(&m);
}

static void test_merge_matches_peft(void) {
    t5_model_t m;
    lora_adapter_t a;
    float *g;
    if (setup(&m, &a, &g, FIX "/adapter")) {
        EXPECT(0);
        return;
    }
    lb_err_t err;
    EXPECT(lora_merge_into_model(&a, &m, +1, &err) == 0);
    // Every weight after the merge, against merge_and_unload's.
    int checked = 0;
    for (int i = 0; i < m.n_params; i++) {
        char name[200];
        snprintf(name, sizeof name, "merged.%s", m.params[i].name);
        size_t n;
        float *r = ref_tensor(name, &n);
        if (!r) continue;
        EXPECTF(n == m.params[i].numel, "%s size", name);
        double md = 0;
        for (size_t k = 0; k < n; k++) md = fmax(md, fabs(m.params[i].w[k] - r[k]));
        EXPECTF(md <= 1e-6, "%s: max diff %g", name, md);
        free(r);
        checked++;
    }
    EXPECTF(checked >= 40, "%d merged tensors compared", checked);
    t5_acts_t *acts = t5_acts_new(&m, tb.b.B, tb.b.S, tb.b.T);
    float loss;
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &loss, &err) == 0);
    size_t nl;
    float *rm = ref_tensor("merged_logits", &nl), *rlog = ref_tensor("logits", &nl);
    EXPECT_CLOSE("merged logits vs PEFT merged", t5_acts_logits(acts), rm, nl, 1e-4);
    EXPECT_CLOSE("merged logits vs adapter logits", t5_acts_logits(acts), rlog, nl, 1e-4);
    // Unmerge gives the base model back (within float rounding of the round trip).
    EXPECT(lora_merge_into_model(&a, &m, -1, &err) == 0);
    t5_model_t base;
    EXPECT(t5_load(&base, FIX, &err) == 0);
    linear_t *q = t5_find_linear(&m, "decoder.block.1.layer.1.EncDecAttention.q");
    linear_t *q0 = t5_find_linear(&base, "decoder.block.1.layer.1.EncDecAttention.q");
    EXPECT(th_rel_err(q->W->w, q0->W->w, (size_t)q->in * q->out) < 1e-6);
    t5_free(&base);
    free(rm);
    free(rlog);
    t5_acts_free(acts);
    lora_free(&a);
    free(g);
    t5_free(&m);
}

// Saved by us, read back: the same loss; two adapters on one base, switched.
static void test_save_load_and_switch(void) {
    t5_model_t m;
    lora_adapter_t a;
    float *g;
    if (setup(&m, &a, &g, FIX "/adapter")) {
        EXPECT(0);
        return;
    }
    lb_err_t err;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/saved", tmpdir);
    EXPECT(lora_save(&a, dir, &err) == 0);
    t5_acts_t *acts = t5_acts_new(&m, tb.b.B, tb.b.S, tb.b.T);
    float l_fixture, l_saved, l_base, l_back;
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &l_fixture, &err) == 0);
    // A second adapter (our own file) on the same base; the first one detached.
    lora_adapter_t b;
    lora_shape_t s;
    lora_shape_from_t5(&m.cfg, &s);
    EXPECT(lora_load(&b, dir, &s, &err) == 0);
    lora_detach(&a, &m);
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &l_base, &err) == 0);
    EXPECT(lora_attach(&b, &m, NULL, &err) == 0);
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &l_saved, &err) == 0);
    EXPECTF(l_saved == l_fixture, "%g vs %g", l_saved, l_fixture);
    EXPECTF(fabsf(l_base - l_fixture) > 1e-3, "the adapter changes the loss (%g vs %g)", l_base, l_fixture);
    size_t n;
    float *rl = ref_tensor("loss", &n);
    (void)rl;
    lora_detach(&b, &m);
    EXPECT(lora_attach(&a, &m, g, &err) == 0);
    EXPECT(t5_forward(&m, acts, &tb.b, NULL, &l_back, &err) == 0);
    EXPECT(l_back == l_fixture);
    free(rl);
    lora_free(&b);
    t5_acts_free(acts);
    lora_free(&a);
    free(g);
    t5_free(&m);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_test_lora_t5_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0) return 1;
    lb_err_t err;
    if (st_open(&ref, FIX "/ref_lora.safetensors", &err) || train_batch_read_json(&tb, FIX "/batch.json", &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_forward_and_grads_match_peft);
    RUN(test_merge_matches_peft);
    RUN(test_save_load_and_switch);
    train_batch_free(&tb);
    st_close(&ref);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    TH_DONE();
}
