// The speed-related machinery of the engine, checked for exactness: the FLOP count that
// `lorabench bench` reports equals the products actually run (every lb_gemm counted here
// through a hook), the vector dropout gives the scalar masks bit for bit, two threads give
// the same loss and gradients as one, and a cached encoder output gives the same decoder
// loss and gradients as running the encoder, with a smaller arena.
static double gemm_flops;
#define LB_GEMM_HOOK(M, N, K) (gemm_flops += 2.0 * (double)(M) * (double)(N) * (double)(K))
#include "../engine/kernels/dropout.c"
#include "../engine/kernels/linear.c"
#include "../engine/kernels/t5_ops.c"
#include "../engine/model/t5_params.c"
#include "../engine/model/t5_acts.c"
#include "../engine/model/t5.c"

#include "harness.h"
#include "lora.h"
#include "lora_t5.h"
#include "t5_init.h"

static void small_config(t5_config_t *c, int D, int F) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"vocab_size\":97,\"d_model\":%d,\"d_kv\":8,\"d_ff\":%d,\"num_layers\":2,\"num_decoder_layers\":2,"
             "\"num_heads\":4,\"feed_forward_proj\":\"gated-gelu\",\"dropout_rate\":0.1,\"tie_word_embeddings\":false}",
             D, F);
    lb_err_t err;
    if (t5_config_parse(c, json, "small", &err)) fprintf(stderr, "    %s\n", err.msg);
}

typedef struct {
    int B, S, T;
    int32_t *mem;
    t5_batch_t b;
} batch_t;

static void make_batch(batch_t *bt, int B, int S, int T, int V) {
    bt->B = B; bt->S = S; bt->T = T;
    bt->mem = malloc(sizeof(int32_t) * (size_t)B * (2 * S + T));
    int32_t *ids = bt->mem, *mask = ids + B * S, *lab = mask + B * S;
    uint64_t st = 99;
    for (int i = 0; i < B * S; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 2 + (int32_t)((st >> 33) % (uint64_t)(V - 2));
        mask[i] = (i % S) < S - (i / S);  // row b pads its last b positions
    }
    for (int i = 0; i < B * T; i++) lab[i] = (i % T) < T - 1 ? 2 + (i * 7) % (V - 2) : -100;
    bt->b = (t5_batch_t){B, S, T, ids, mask, lab};
}

// Sets up m with one of the trainability cases; adapter storage in *ad / *grads.
enum { CASE_NONE, CASE_FULL, CASE_LORA_QV, CASE_LORA_DEC, CASE_LORA_ALL, CASE_PARTIAL_DEC };
static int pred_dec_top(const char *name, void *ctx) {
    (void)ctx;
    return !strncmp(name, "decoder.block.1.", 16);
}
static void setup_case(t5_model_t *m, int which, lora_adapter_t *ad, float **grads) {
    *grads = NULL;
    t5_set_trainable(m, which == CASE_FULL ? t5_pred_all : which == CASE_PARTIAL_DEC ? pred_dec_top : NULL, NULL);
    if (which != CASE_LORA_QV && which != CASE_LORA_DEC && which != CASE_LORA_ALL) return;
    lora_config_t lc;
    lora_config_default(&lc);
    lc.r = 4;
    lc.alpha = 8;
    if (which == CASE_LORA_DEC) lc.stacks = 2;
    if (which == CASE_LORA_ALL) {
        const char *t[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo"};
        lc.n_targets = 7;
        for (int i = 0; i < 7; i++) snprintf(lc.targets[i], sizeof lc.targets[i], "%s", t[i]);
    }
    lora_shape_t sh;
    lora_shape_from_t5(&m->cfg, &sh);
    lb_err_t err;
    EXPECT(lora_create(ad, &lc, &sh, &err) == 0);
    lc.init = LORA_INIT_RANDOM_BOTH;
    ad->cfg.init = LORA_INIT_RANDOM_BOTH;
    EXPECT(lora_init(ad, 3, lora_t5_weight, m, &err) == 0);
    *grads = calloc(ad->n_params, sizeof(float));
    EXPECT(lora_attach(ad, m, *grads, &err) == 0);
}

static void test_flop_count_matches_products_run(void) {
    lb_set_threads(1);  // the hook's counter is not atomic
    t5_config_t c;
    small_config(&c, 32, 48);
    batch_t bt;
    make_batch(&bt, 2, 7, 5, c.vocab_size);
    for (int which = CASE_NONE; which <= CASE_PARTIAL_DEC; which++) {
        t5_model_t m;
        lb_err_t err;
        t5_init_empty(&m, &c, &err);
        t5_init_random(&m, 5);
        lora_adapter_t ad;
        float *grads;
        setup_case(&m, which, &ad, &grads);
        t5_acts_t *a = t5_acts_new(&m, 2, 7, 5);
        lb_drop_t drop = {1, 0, 1};
        gemm_flops = 0;
        float loss;
        EXPECT(t5_forward(&m, a, &bt.b, &drop, &loss, &err) == 0);
        double fwd = gemm_flops;
        EXPECTF(fabs(fwd - t5_acts_flops(a, 0)) < 0.5, "case %d: forward counted %.0f, reported %.0f", which, fwd,
                t5_acts_flops(a, 0));
        gemm_flops = 0;
        t5_backward(&m, a, &drop, 1.0f);
        EXPECTF(fabs(gemm_flops - t5_acts_flops(a, 1)) < 0.5, "case %d: backward counted %.0f, reported %.0f", which,
                gemm_flops, t5_acts_flops(a, 1));
        if (which == CASE_NONE) EXPECT(gemm_flops == 0);
        if (which == CASE_FULL) EXPECT(gemm_flops > 1.5 * fwd);  // dW and dx of every linear
        t5_acts_free(a);
        if (grads) {
            lora_free(&ad);
            free(grads);
        }
        t5_free(&m);
    }
    free(bt.mem);
}

static void test_vector_dropout_is_exact(void) {
    enum { N = 1037 };
    static float x[N], y[N];
    for (int off = 0; off < 3; off++) {
        float p = off == 2 ? 0.5f : 0.1f;
        lb_drop_t d = {42u + (unsigned)off, 7, 1};
        for (int i = 0; i < N; i++) x[i] = y[i] = 1.0f + (float)i;
        lb_dropout_apply_at(x, N, &d, 1234, (uint64_t)off * 1000003u, p);
        int bad = 0, dropped = 0;
        float s = (float)(1.0 / (1.0 - (double)p));
        for (int i = 0; i < N; i++) {
            float want = lb_drop_keep(&d, 1234, (uint64_t)off * 1000003u + i, p) ? y[i] * s : 0;
            bad += x[i] != want;
            dropped += x[i] == 0;
        }
        EXPECTF(bad == 0, "%d of %d elements differ from lb_drop_keep", bad, N);
        EXPECTF(dropped > N * p * 0.7 && dropped < N * p * 1.3, "dropped %d of %d at p=%g", dropped, N, (double)p);
    }
}

// Loss and all trainable gradients of one step, with the given thread count.
static void one_step(int threads, int which, float *loss, float **g, size_t *n) {
    lb_set_threads(threads);
    t5_config_t c;
    small_config(&c, 64, 96);
    batch_t bt;
    make_batch(&bt, 4, 40, 12, c.vocab_size);
    t5_model_t m;
    lb_err_t err;
    t5_init_empty(&m, &c, &err);
    t5_init_random(&m, 9);
    lora_adapter_t ad;
    float *grads;
    setup_case(&m, which, &ad, &grads);
    t5_acts_t *a = t5_acts_new(&m, 4, 40, 12);
    lb_drop_t drop = {3, 1, 1};
    EXPECT(t5_forward(&m, a, &bt.b, &drop, loss, &err) == 0);
    t5_backward(&m, a, &drop, 1.0f);
    *n = grads ? ad.n_params : m.n_train;
    *g = malloc(*n * sizeof(float));
    memcpy(*g, grads ? grads : m.block + m.n_train, *n * sizeof(float));
    t5_acts_free(a);
    if (grads) {
        lora_free(&ad);
        free(grads);
    }
    t5_free(&m);
    free(bt.mem);
}

// The engine's own loops split work without changing any sum, so two runs with two
// threads agree bit for bit; one thread against two differs only by rounding: the
// product library's kernel choice for another thread count or another block of rows
// (on the oneDNN path a layer's products are cut into one block per pool thread).
static void test_threads_deterministic(void) {
    int cases[] = {CASE_FULL, CASE_LORA_ALL};
    for (int k = 0; k < 2; k++) {
        float l1, l2, l3, *g1, *g2, *g3;
        size_t n1, n2, n3;
        one_step(2, cases[k], &l1, &g1, &n1);
        one_step(2, cases[k], &l2, &g2, &n2);
        one_step(1, cases[k], &l3, &g3, &n3);
        EXPECT(n1 == n2 && n1 == n3 && n1 > 0);
        EXPECTF(l1 == l2, "loss %.9g then %.9g with 2 threads", (double)l1, (double)l2);
        EXPECT(n1 == n2 && memcmp(g1, g2, n1 * sizeof(float)) == 0);
        EXPECTF(fabsf(l1 - l3) < 1e-5f * fabsf(l1), "loss %.9g with 2 threads, %.9g with 1", (double)l1, (double)l3);
        if (n1 == n3) EXPECT_CLOSE("gradients, 1 vs 2 threads", g3, g1, n1, 1e-4);
        free(g1);
        free(g2);
        free(g3);
    }
    lb_set_threads(1);
}

static void test_cached_encoder(void) {
    lb_set_threads(2);
    t5_config_t c;
    small_config(&c, 32, 48);
    batch_t bt;
    make_batch(&bt, 3, 9, 6, c.vocab_size);
    t5_model_t m;
    lb_err_t err;
    t5_init_empty(&m, &c, &err);
    t5_init_random(&m, 4);
    t5_set_trainable(&m, t5_pred_all, NULL);
    EXPECT(!t5_encoder_frozen(&m));
    t5_acts_t *full = t5_acts_new(&m, 3, 9, 6);
    lb_real *enc = malloc(sizeof(lb_real) * 3 * 9 * 32);
    float loss;
    EXPECT(t5_forward_with_encoder(&m, full, &bt.b, enc, NULL, &loss, &err) == -1);  // refused
    EXPECT(strstr(err.msg, "encoder") != NULL);
    lora_adapter_t ad;
    float *grads;
    setup_case(&m, CASE_LORA_DEC, &ad, &grads);
    EXPECT(t5_encoder_frozen(&m));
    t5_acts_t *a = t5_acts_new(&m, 3, 9, 6);
    EXPECTF(t5_acts_bytes(a) < t5_acts_bytes(full), "frozen-encoder arena %zu bytes, full %zu",
            t5_acts_bytes(a), t5_acts_bytes(full));
    // reference: the whole model, dropout only in the decoder would differ, so none at all
    float l_ref, l_cache;
    EXPECT(t5_forward(&m, a, &bt.b, NULL, &l_ref, &err) == 0);
    t5_backward(&m, a, NULL, 1.0f);
    float *g_ref = malloc(ad.n_params * sizeof(float));
    memcpy(g_ref, grads, ad.n_params * sizeof(float));
    memset(grads, 0, ad.n_params * sizeof(float));
    EXPECT(t5_forward_encoder(&m, a, &bt.b, enc, &err) == 0);
    EXPECT(memcmp(enc, t5_acts_encoder_out(a), sizeof(lb_real) * 3 * 9 * 32) == 0);
    t5_backward(&m, a, NULL, 1.0f);  // after an encoder-only forward: nothing
    for (size_t i = 0; i < ad.n_params; i++) EXPECT(grads[i] == 0);
    EXPECT(t5_forward_with_encoder(&m, a, &bt.b, enc, NULL, &l_cache, &err) == 0);
    t5_backward(&m, a, NULL, 1.0f);
    EXPECTF(l_ref == l_cache, "loss %.9g with the encoder, %.9g from the cache", (double)l_ref, (double)l_cache);
    EXPECT_CLOSE("decoder LoRA grads from the cache", grads, g_ref, ad.n_params, 0);
    EXPECT(t5_acts_encoder_backward_count(a) == 0);
    // making the encoder trainable afterwards asks for a new arena
    lora_detach(&ad, &m);
    t5_set_trainable(&m, t5_pred_all, NULL);
    EXPECT(t5_forward(&m, a, &bt.b, NULL, &loss, &err) == -1);
    EXPECT(strstr(err.msg, "t5_acts_new") != NULL);
    free(g_ref);
    free(enc);
    lora_free(&ad);
    free(grads);
    t5_acts_free(a);
    t5_acts_free(full);
    t5_free(&m);
    free(bt.mem);
    lb_set_threads(1);
}

int main(void) {
    RUN(test_flop_count_matches_products_run);
    RUN(test_vector_dropout_is_exact);
    RUN(test_threads_deterministic);
    RUN(test_cached_encoder);
    TH_DONE();
}
