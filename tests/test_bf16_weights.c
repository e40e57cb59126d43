// Frozen linear weights held in bf16 (t5_frozen_weights_bf16, t5_load_bf16) against the
// fp32 path on the same values: the fixture t5-gated-a with every weight rounded to bf16
// first, so that holding it in bf16 loses nothing and any difference is the engine's.
// Loss, logits, every LoRA gradient and generated ids; the block-wise products of
// linear_forward / linear_backward for one row (matrix-vector) and many, over several
// blocks; the bytes held; the pages of a mapped fp32 checkpoint given back; a bf16
// checkpoint used in place; and every reader of the weights that converts back (merge,
// pissa, save, making a weight trainable, random init) giving what fp32 gives.
#include <stdint.h>
#include <unistd.h>

#include "generate.h"
#include "harness.h"
#include "linear.h"
#include "lora.h"
#include "lora_t5.h"
#include "safetensors.h"
#include "t5.h"
#include "t5_init.h"
#include "t5_save.h"
#include "train.h"

#define FIX "tests/fixtures/hf/t5-gated-a"

static train_batch_t tb;
static char tmpdir[256];

static float round_bf16(float x) { return lb_bf16_to_f32(lb_f32_to_bf16(x)); }

// The fixture with every parameter rounded to bf16, held in fp32.
static int load_rounded(t5_model_t *m) {
    lb_err_t err = {0};
    if (t5_load(m, FIX, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        return -1;
    }
    for (int i = 0; i < m->n_params; i++) {
        lb_param_t *p = &m->params[i];
        float *w = t5_param_writable(m, p);
        for (size_t k = 0; k < p->numel; k++) w[k] = round_bf16(w[k]);
    }
    return 0;
}

// An adapter on q, v, wo and the head with both A and B random (so that every gradient
// is nonzero), created for m's shape.
static int make_adapter(const t5_model_t *m, lora_adapter_t *a, const char *init) {
    lb_err_t err = {0};
    lora_config_t c;
    lora_config_default(&c);
    c.r = 4;
    c.alpha = 8;
    c.init = !strcmp(init, "pissa") ? LORA_INIT_PISSA : LORA_INIT_RANDOM_BOTH;
    const char *t[] = {"q", "v", "wo", "lm_head"};
    c.n_targets = 4;
    for (int i = 0; i < 4; i++) snprintf(c.targets[i], sizeof c.targets[i], "%s", t[i]);
    lora_shape_t s;
    lora_shape_from_t5(&m->cfg, &s);
    if (lora_create(a, &c, &s, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        return -1;
    }
    return 0;
}

// max |a - b| over n values; 0 means bit for bit (up to the sign of zero).
static double max_diff(const float *a, const float *b, size_t n) {
    double md = 0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)a[i] - (double)b[i]));
    return md;
}

static long rss_kb(void) {
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

// ---------------------------------------------------------------------------------------

static void test_forward_grads_and_generation_equal_fp32(void) {
    t5_model_t f, h;
    lora_adapter_t a;
    if (load_rounded(&f) || load_rounded(&h) || make_adapter(&f, &a, "random")) {
        EXPECT(0);
        return;
    }
    lb_err_t err = {0};
    EXPECT(lora_init(&a, 11, NULL, NULL, &err) == 0);
    float *gf = xcalloc(a.n_params, sizeof(float)), *gh = xcalloc(a.n_params, sizeof(float));
    t5_set_trainable(&f, NULL, NULL);
    t5_set_trainable(&h, NULL, NULL);
    EXPECT(lora_attach(&a, &f, gf, &err) == 0);
    EXPECT(lora_attach(&a, &h, gh, &err) == 0);
    EXPECT(t5_frozen_weights_bf16(&h, &err) == 0);
    // every linear weight is bf16 now, with the head (untied); the embedding is not
    int n16 = 0;
    for (int i = 0; i < h.n_lin; i++) n16 += h.lin[i].W->w16 != NULL && h.lin[i].W->w == NULL;
    EXPECTF(n16 == h.n_lin, "%d of %d linear weights in bf16", n16, h.n_lin);
    EXPECT(h.head->W != h.shared && h.head->W->w16 != NULL);
    EXPECT(h.shared->w != NULL && h.shared->w16 == NULL);

    t5_acts_t *af = t5_acts_new(&f, tb.b.B, tb.b.S, tb.b.T), *ah = t5_acts_new(&h, tb.b.B, tb.b.S, tb.b.T);
    float lf, lh;
    EXPECT(t5_forward(&f, af, &tb.b, NULL, &lf, &err) == 0);
    EXPECT(t5_forward(&h, ah, &tb.b, NULL, &lh, &err) == 0);
    EXPECTF(fabs((double)lf - lh) <= 1e-6 * fabs((double)lf), "loss fp32 %.9g, bf16-held %.9g", (double)lf, (double)lh);
    size_t nl = (size_t)tb.b.B * tb.b.T * f.cfg.vocab_size;
    EXPECT_CLOSE("logits", t5_acts_logits(ah), t5_acts_logits(af), nl, 1e-6);
    printf("     loss %.7f (fp32) %.7f (bf16-held), logits max diff %.3g\n", (double)lf, (double)lh,
           max_diff(t5_acts_logits(ah), t5_acts_logits(af), nl));
    t5_backward(&f, af, NULL, 1.0f);
    t5_backward(&h, ah, NULL, 1.0f);
    EXPECT(t5_acts_encoder_backward_count(ah) > 0);  // dx ran through bf16 weights
    double worst = 0;
    for (int i = 0; i < a.n; i++) {
        for (int ab = 0; ab < 2; ab++) {
            const lora_module_t *md = &a.m[i];
            size_t off = (size_t)((ab ? md->B : md->A) - a.params), n = (size_t)md->r * (ab ? md->out : md->in);
            char name[160];
            snprintf(name, sizeof name, "d%c of %s", ab ? 'B' : 'A', md->name);
            double nz = 0;
            for (size_t k = 0; k < n; k++) nz = fmax(nz, fabs(gf[off + k]));
            EXPECTF(nz > 0, "%s is zero: the test would not see a difference", name);
            EXPECT_CLOSE(name, gh + off, gf + off, n, 1e-6);
            worst = fmax(worst, th_rel_err(gh + off, gf + off, n));
        }
    }
    printf("     %d LoRA gradients, worst relative difference %.3g\n", 2 * a.n, worst);

    // greedy generation (matrix-vector products per step) gives the same ids
    generate_opts_t go;
    generate_opts_default(&go);
    go.max_new_tokens = 12;
    generate_result_t rf, rh;
    EXPECT(generate_batch(&f, tb.b.input_ids, tb.b.attention_mask, tb.b.B, tb.b.S, &go, &rf, &err) == 0);
    EXPECT(generate_batch(&h, tb.b.input_ids, tb.b.attention_mask, tb.b.B, tb.b.S, &go, &rh, &err) == 0);
    EXPECT(rf.B == rh.B && rf.L == rh.L);
    if (rf.B == rh.B && rf.L == rh.L)
        EXPECT(!memcmp(rf.ids, rh.ids, sizeof(int32_t) * (size_t)rf.B * rf.L));
    generate_result_free(&rf);
    generate_result_free(&rh);

    t5_acts_free(af);
    t5_acts_free(ah);
    lora_free(&a);
    free(gf);
    free(gh);
    t5_free(&f);
    t5_free(&h);
}

// One shape of test_linear_blocks_equal_fp32: W [O, I] with bf16-representable values,
// for 1, 3 and 40 rows, with and without LoRA, with and without accumulation into dx.
// The forward is the same sum per output as fp32, so equal to 1e-6 (in practice bit for
// bit); dx too when W is one block (one_block); else its sum over O is taken block by
// block, and both it and the fp32 path's must be as close to a double reference.
static void linear_case(int I, int O, int one_block, uint64_t seed) {
    const int R = 3;
    size_t nw = (size_t)I * O;
    float *W = xmalloc(nw * sizeof(float));
    uint16_t *W16 = xmalloc(nw * sizeof(uint16_t));
    uint64_t st = seed;
    for (size_t k = 0; k < nw; k++) {
        W16[k] = lb_f32_to_bf16((float)(lb_rng_normal(&st) * 0.05));
        W[k] = lb_bf16_to_f32(W16[k]);
    }
    float *A = xmalloc(sizeof(float) * R * I), *B = xmalloc(sizeof(float) * O * R);
    for (int k = 0; k < R * I; k++) A[k] = (float)(lb_rng_normal(&st) * 0.1);
    for (int k = 0; k < O * R; k++) B[k] = (float)(lb_rng_normal(&st) * 0.1);
    lb_param_t pf = {.name = "w", .ndim = 2, .shape = {O, I}, .numel = nw, .w = W};
    lb_param_t ph = {.name = "w", .ndim = 2, .shape = {O, I}, .numel = nw, .w16 = W16};
    linear_t lf = {.name = "lin", .in = I, .out = O, .W = &pf}, lh = lf;
    lh.W = &ph;
    const int Ns[] = {1, 3, 40};
    double worst_y = 0, worst_dx = 0;
    for (int t = 0; t < 3; t++) {
        int N = Ns[t];
        for (int lora = 0; lora < 2; lora++) {
            linear_set_lora(&lf, lora ? R : 0, 0.5f, 0, A, B, NULL, NULL);
            linear_set_lora(&lh, lora ? R : 0, 0.5f, 0, A, B, NULL, NULL);
            float *x = xmalloc(sizeof(float) * N * I), *dy = xmalloc(sizeof(float) * N * O);
            for (int k = 0; k < N * I; k++) x[k] = (float)lb_rng_normal(&st);
            for (int k = 0; k < N * O; k++) dy[k] = (float)lb_rng_normal(&st);
            float *yf = xcalloc((size_t)N * O, sizeof(float)), *yh = xcalloc((size_t)N * O, sizeof(float));
            float *xa = xmalloc(sizeof(float) * N * R);
            linear_forward(&lf, N, x, yf, xa, NULL, NULL, 0);
            linear_forward(&lh, N, x, yh, xa, NULL, NULL, 0);
            char name[96];
            snprintf(name, sizeof name, "y [%d, %d], N=%d, lora %d", O, I, N, lora);
            EXPECT_CLOSE(name, yh, yf, (size_t)N * O, 1e-6);
            worst_y = fmax(worst_y, max_diff(yh, yf, (size_t)N * O));
            // dx in double: dy·(W + s·B·A), the reference for a sum split over blocks
            double *dref = xcalloc((size_t)N * I, sizeof(double));
            for (int n = 0; n < N; n++)
                for (int o = 0; o < O; o++) {
                    double d = dy[(size_t)n * O + o];
                    for (int i = 0; i < I; i++) {
                        double w = W[(size_t)o * I + i];
                        if (lora)
                            for (int r = 0; r < R; r++) w += 0.5 * B[(size_t)o * R + r] * A[(size_t)r * I + i];
                        dref[(size_t)n * I + i] += d * w;
                    }
                }
            for (int acc = 0; acc < 2; acc++) {
                float *df = xmalloc(sizeof(float) * N * I), *dh = xmalloc(sizeof(float) * N * I);
                float *dr = xmalloc(sizeof(float) * N * I);
                for (int k = 0; k < N * I; k++) {
                    df[k] = dh[k] = acc ? (float)k * 1e-3f : 12345.0f;  // else overwritten
                    dr[k] = (float)(dref[k] + (acc ? (double)df[k] : 0));
                }
                linear_backward(&lf, N, x, xa, dy, df, acc, NULL, NULL, 0);
                linear_backward(&lh, N, x, xa, dy, dh, acc, NULL, NULL, 0);
                snprintf(name, sizeof name, "dx [%d, %d], N=%d, lora %d, accum %d", O, I, N, lora, acc);
                if (one_block) {
                    EXPECT_CLOSE(name, dh, df, (size_t)N * I, 1e-6);
                    worst_dx = fmax(worst_dx, max_diff(dh, df, (size_t)N * I));
                } else {
                    double ef = th_rel_err(df, dr, (size_t)N * I), eh = th_rel_err(dh, dr, (size_t)N * I);
                    EXPECTF(eh <= 1e-6 && ef <= 1e-6, "%s: relative error to double %.3g (bf16-held), %.3g (fp32)",
                            name, eh, ef);
                    worst_dx = fmax(worst_dx, eh);
                }
                free(df);
                free(dh);
                free(dr);
            }
            free(dref);
            free(x);
            free(dy);
            free(yf);
            free(yh);
            free(xa);
        }
    }
    printf("     W [%d, %d]: y max diff %.3g; dx %s %.3g\n", O, I, worst_y,
           one_block ? "max diff" : "relative error to double", worst_dx);
    free(W);
    free(W16);
    free(A);
    free(B);
}

// W in one block for the backward (and 7 blocks for the forward of N <= 16), then W in 3
// blocks of rows for both.
static void test_linear_blocks_equal_fp32(void) {
    linear_case(300, 3000, 1, 5);
    linear_case(2048, 1100, 0, 6);
}

// Trains only q of decoder block 1.
static int pred_q(const char *name, void *ctx) {
    (void)ctx;
    return !strcmp(name, "decoder.block.1.layer.0.SelfAttention.q.weight");
}

// t5_weight_bytes: the frozen linear weights take half; what trains stays fp32; the
// embedding, norms and relative biases are never bf16.
static void test_bytes_held_halve(void) {
    t5_model_t m;
    lb_err_t err = {0};
    if (t5_load(&m, FIX, &err)) {
        EXPECT(0);
        return;
    }
    size_t h0, before = t5_weight_bytes(&m, &h0), lin = 0;
    for (int i = 0; i < m.n_lin; i++)
        if (m.lin[i].W != m.shared) lin += m.lin[i].W->numel * sizeof(float);
    EXPECT(h0 == 0 && before == t5_count_params(&m) * sizeof(float));
    t5_set_trainable(&m, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&m, &err) == 0);
    size_t h1, after = t5_weight_bytes(&m, &h1);
    EXPECTF(h1 == lin / 2 && after == before - lin / 2, "bf16 %zu of %zu linear bytes, total %zu -> %zu", h1, lin,
            before, after);
    printf("     weights %zu -> %zu bytes (linear weights %zu -> %zu)\n", before, after, lin, h1);
    for (int i = 0; i < m.n_params; i++) {
        const lb_param_t *p = &m.params[i];
        int is_lin = 0;
        for (int j = 0; j < m.n_lin; j++) is_lin |= m.lin[j].W == p && p != m.shared;
        EXPECTF(is_lin ? (p->w16 && !p->w) : (p->w && !p->w16), "%s held wrongly", p->name);
    }
    EXPECT(t5_frozen_weights_bf16(&m, &err) == 0);  // again: nothing changes
    EXPECT(t5_weight_bytes(&m, NULL) == after);
    t5_free(&m);

    // partial training: the trainable weights stay fp32 with their gradients
    if (t5_load(&m, FIX, &err)) {
        EXPECT(0);
        return;
    }
    linear_t *q = t5_find_linear(&m, "decoder.block.1.layer.0.SelfAttention.q");
    t5_set_trainable(&m, NULL, NULL);
    lb_param_t *qw = q->W;
    t5_set_trainable(&m, pred_q, NULL);
    EXPECT(t5_frozen_weights_bf16(&m, &err) == 0);
    EXPECT(qw->g && qw->w && !qw->w16);
    size_t h2;
    t5_weight_bytes(&m, &h2);
    EXPECT(h2 == (lin - qw->numel * sizeof(float)) / 2);
    t5_free(&m);

    // a model never loaded is refused with a message
    t5_model_t z;
    memset(&z, 0, sizeof z);
    EXPECT(t5_frozen_weights_bf16(&z, &err) == -1);
    EXPECTF(strstr(err.msg, "not loaded") != NULL, "message: %s", err.msg);
}

// A checkpoint bigger than the fixture (about 34 MB of fp32 linear weights), written with
// t5_save under tmpdir/big; returns the fp32 bytes of its linear weights.
static size_t write_big(const char *dir, st_dtype_t dtype) {
    static const char *js =
        "{\"vocab_size\":1000,\"d_model\":256,\"d_kv\":64,\"d_ff\":2048,\"num_layers\":2,"
        "\"num_decoder_layers\":2,\"num_heads\":4,\"relative_attention_num_buckets\":32,"
        "\"relative_attention_max_distance\":128,\"feed_forward_proj\":\"gated-gelu\","
        "\"layer_norm_epsilon\":1e-6,\"tie_word_embeddings\":false,\"pad_token_id\":0,"
        "\"eos_token_id\":1,\"decoder_start_token_id\":0}";
    lb_err_t err = {0};
    char p[512];
    snprintf(p, sizeof p, "mkdir -p %s", dir);
    if (system(p) != 0) return 0;
    snprintf(p, sizeof p, "%s/config.json", dir);
    t5_config_t c;
    t5_model_t m;
    if (lb_write_file_atomic(p, js, strlen(js), &err) || t5_config_parse(&c, js, "big", &err) ||
        t5_init_empty(&m, &c, &err))
        return 0;
    t5_init_random(&m, 3);
    size_t lin = 0;
    for (int i = 0; i < m.n_lin; i++)
        if (m.lin[i].W != m.shared) lin += m.lin[i].W->numel * sizeof(float);
    int bad = t5_save_dtype(&m, dir, dir, dtype, &err);
    t5_free(&m);
    if (bad) fprintf(stderr, "    %s\n", err.msg);
    return bad ? 0 : lin;
}

static double touch_all(const t5_model_t *m) {  // reads every value (pages resident)
    double s = 0;
    for (int i = 0; i < m->n_params; i++) {
        const lb_param_t *p = &m->params[i];
        for (size_t k = 0; k < p->numel; k++) s += p->w ? p->w[k] : lb_bf16_to_f32(p->w16[k]);
    }
    return s;
}

// A mapped fp32 checkpoint: after the conversion its pages are no longer resident, so the
// process holds half the bytes; the values are the fp32 ones rounded to nearest even.
static void test_mapped_fp32_pages_given_back(void) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/big32", tmpdir);
    size_t lin = write_big(dir, ST_F32);
    EXPECT(lin > 30000000);
    t5_model_t m, ref;
    lb_err_t err = {0};
    if (!lin || t5_load(&m, dir, &err) || t5_load(&ref, dir, &err)) {
        EXPECT(0);
        return;
    }
    const lb_param_t *wo = t5_find_param(&m, "decoder.block.1.layer.2.DenseReluDense.wo.weight");
    EXPECT(wo->own == NULL);  // used in place from the mapping
    volatile double s = touch_all(&m);
    (void)s;
    long r0 = rss_kb();
    t5_set_trainable(&m, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&m, &err) == 0);
    long r1 = rss_kb();
    double drop = (double)(r0 - r1) * 1024.0;
    printf("     RSS %ld kB -> %ld kB (dropped %.1f MB; the linear weights are %.1f MB in fp32)\n", r0, r1,
           drop / 1e6, lin / 1e6);
    EXPECTF(drop >= 0.35 * (double)lin, "RSS dropped %.0f bytes, expected about %zu", drop, lin / 2);
    for (int i = 0; i < m.n_lin; i++) {
        const lb_param_t *p = m.lin[i].W, *q = ref.lin[i].W;
        size_t bad = 0;
        for (size_t k = 0; k < p->numel; k++) bad += p->w16[k] != lb_f32_to_bf16(q->w[k]);
        EXPECTF(bad == 0, "%s: %zu values not rounded to nearest even", p->name, bad);
    }
    t5_free(&m);
    t5_free(&ref);
}

// A bf16 checkpoint: t5_load then t5_frozen_weights_bf16 uses the mapped bytes (no private
// copy), and t5_load_bf16 never makes the fp32 copies at all; both equal t5_load's values.
static void test_bf16_checkpoint_used_in_place(void) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/big16", tmpdir);
    size_t lin = write_big(dir, ST_BF16);
    t5_model_t a, b, ref;
    lb_err_t err = {0};
    if (!lin || t5_load(&ref, dir, &err)) {
        EXPECT(0);
        return;
    }
    long r0 = rss_kb();
    if (t5_load_bf16(&b, dir, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        EXPECT(0);
        return;
    }
    volatile double s = touch_all(&b);
    (void)s;
    long r1 = rss_kb();
    printf("     t5_load_bf16 of a bf16 checkpoint: +%ld kB resident (linear weights %.1f MB in bf16)\n", r1 - r0,
           lin / 2e6);
    EXPECTF((double)(r1 - r0) * 1024.0 < 0.75 * (double)lin, "t5_load_bf16 grew RSS by %ld kB", r1 - r0);
    EXPECT(t5_load(&a, dir, &err) == 0);
    t5_set_trainable(&a, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&a, &err) == 0);
    const uint8_t *lo = a.st.map, *hi = a.st.map + a.st.size;
    int in_file = 0;
    for (int i = 0; i < a.n_lin; i++) {
        const lb_param_t *p = a.lin[i].W, *q = b.lin[i].W, *r = ref.lin[i].W;
        in_file += p->own16 == NULL && (const uint8_t *)p->w16 >= lo && (const uint8_t *)p->w16 < hi;
        EXPECTF(q->w16 && !q->w && !q->own16 && !q->own, "%s not used in place by t5_load_bf16", q->name);
        size_t bad = 0;
        for (size_t k = 0; k < p->numel; k++)
            bad += lb_bf16_to_f32(p->w16[k]) != r->w[k] || p->w16[k] != q->w16[k];
        EXPECTF(bad == 0, "%s: %zu values differ", p->name, bad);
    }
    EXPECTF(in_file == a.n_lin, "%d of %d weights used from the file", in_file, a.n_lin);
    EXPECT(b.shared->w != NULL && b.shared->w16 == NULL);  // the embedding is fp32
    // a weight of a t5_load_bf16 model made trainable: its values, in fp32
    t5_set_trainable(&b, t5_pred_all, NULL);
    size_t h;
    t5_weight_bytes(&b, &h);
    EXPECT(h == 0);
    for (int i = 0; i < b.n_params; i++)
        EXPECT(b.params[i].g && !memcmp(b.params[i].w, ref.params[i].w, b.params[i].numel * sizeof(float)));
    t5_free(&a);
    t5_free(&b);
    t5_free(&ref);
}

// Readers that need fp32 convert back: merge (and unmerge), pissa, save, training a
// bf16-held weight, random init. Each gives what the fp32 model gives.
static void test_readers_convert(void) {
    t5_model_t f, h;
    lora_adapter_t a;
    lb_err_t err = {0};
    if (load_rounded(&f) || load_rounded(&h) || make_adapter(&f, &a, "random")) {
        EXPECT(0);
        return;
    }
    EXPECT(lora_init(&a, 5, NULL, NULL, &err) == 0);
    t5_set_trainable(&f, NULL, NULL);
    t5_set_trainable(&h, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&h, &err) == 0);
    // merge: the adapted weights get fp32 storage back, the others stay bf16
    EXPECT(lora_merge_into_model(&a, &f, +1, &err) == 0);
    EXPECT(lora_merge_into_model(&a, &h, +1, &err) == 0);
    for (int i = 0; i < h.n_lin; i++) {
        const lb_param_t *p = h.lin[i].W, *q = f.lin[i].W;
        int adapted = lora_find(&a, h.lin[i].name) != NULL;
        EXPECTF(adapted ? p->w != NULL : p->w16 != NULL, "%s after merge", h.lin[i].name);
        if (p->w) EXPECTF(!memcmp(p->w, q->w, p->numel * sizeof(float)), "merged %s differs", p->name);
    }
    t5_acts_t *af = t5_acts_new(&f, tb.b.B, tb.b.S, tb.b.T), *ah = t5_acts_new(&h, tb.b.B, tb.b.S, tb.b.T);
    float lf, lh;
    EXPECT(t5_forward(&f, af, &tb.b, NULL, &lf, &err) == 0);
    EXPECT(t5_forward(&h, ah, &tb.b, NULL, &lh, &err) == 0);
    size_t nl = (size_t)tb.b.B * tb.b.T * f.cfg.vocab_size;
    EXPECT_CLOSE("merged logits", t5_acts_logits(ah), t5_acts_logits(af), nl, 1e-6);

    // save: the bf16 values, exactly, in fp32 and in bf16 files
    t5_model_t rf, sv;
    EXPECT(load_rounded(&rf) == 0 && load_rounded(&sv) == 0);
    t5_set_trainable(&sv, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&sv, &err) == 0);
    st_dtype_t dts[2] = {ST_F32, ST_BF16};
    for (int d = 0; d < 2; d++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/saved%d", tmpdir, d);
        EXPECT(t5_save_dtype(&sv, FIX, dir, dts[d], &err) == 0);
        t5_model_t back;
        if (t5_load(&back, dir, &err)) {
            fprintf(stderr, "    %s\n", err.msg);
            EXPECT(0);
            continue;
        }
        for (int i = 0; i < back.n_params; i++) {
            const lb_param_t *p = &back.params[i], *q = &rf.params[i];
            EXPECTF(!strcmp(p->name, q->name) && !memcmp(p->w, q->w, p->numel * 4), "saved %s (%s) differs",
                    p->name, st_dtype_name(dts[d]));
        }
        t5_free(&back);
    }
    t5_free(&sv);

    // trainable again: the block holds the bf16 values
    t5_model_t g;
    EXPECT(load_rounded(&g) == 0);
    t5_set_trainable(&g, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&g, &err) == 0);
    t5_set_trainable(&g, t5_pred_all, NULL);
    for (int i = 0; i < g.n_params; i++)
        EXPECTF(g.params[i].g && !g.params[i].w16 && !memcmp(g.params[i].w, rf.params[i].w, g.params[i].numel * 4),
                "%s made trainable", g.params[i].name);
    t5_free(&g);

    // pissa reads W through t5_param_writable: the same adapter and residuals as fp32
    t5_model_t pf, ph;
    lora_adapter_t qa, qb;
    EXPECT(load_rounded(&pf) == 0 && load_rounded(&ph) == 0);
    t5_set_trainable(&pf, NULL, NULL);
    t5_set_trainable(&ph, NULL, NULL);
    EXPECT(t5_frozen_weights_bf16(&ph, &err) == 0);
    EXPECT(make_adapter(&pf, &qa, "pissa") == 0 && make_adapter(&ph, &qb, "pissa") == 0);
    EXPECT(lora_init(&qa, 1, lora_t5_weight, &pf, &err) == 0);
    EXPECT(lora_init(&qb, 1, lora_t5_weight, &ph, &err) == 0);
    EXPECT(!memcmp(qa.params, qb.params, qa.n_params * sizeof(float)));
    for (int i = 0; i < pf.n_lin; i++) {
        const lb_param_t *p = ph.lin[i].W, *q = pf.lin[i].W;
        if (p->w) EXPECTF(!memcmp(p->w, q->w, p->numel * 4), "pissa residual of %s", p->name);
    }
    lora_free(&qa);
    lora_free(&qb);
    t5_free(&pf);
    t5_free(&ph);

    // random init writes bf16-held weights rounded
    t5_init_random(&f, 9);
    t5_init_random(&h, 9);
    for (int i = 0; i < h.n_params; i++) {
        const lb_param_t *p = &h.params[i], *q = &f.params[i];
        size_t bad = 0;
        for (size_t k = 0; k < p->numel; k++)
            bad += p->w16 ? p->w16[k] != lb_f32_to_bf16(q->w[k]) : p->w[k] != q->w[k];
        EXPECTF(bad == 0, "random init of %s: %zu values", p->name, bad);
    }
    t5_free(&rf);
    t5_acts_free(af);
    t5_acts_free(ah);
    lora_free(&a);
    t5_free(&f);
    t5_free(&h);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_test_bf16_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0) return 1;
    lb_err_t err;
    if (train_batch_read_json(&tb, FIX "/batch.json", &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    lb_set_threads(2);
    RUN(test_forward_grads_and_generation_equal_fp32);
    RUN(test_linear_blocks_equal_fp32);
    RUN(test_bytes_held_halve);
    RUN(test_mapped_fp32_pages_given_back);
    RUN(test_bf16_checkpoint_used_in_place);
    RUN(test_readers_convert);
    train_batch_free(&tb);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    TH_DONE();
}
