// Finite-difference checks of every backward pass, in double precision: this program
// compiles its own copy of the engine's numeric code (kernels/dropout.c, linear.c, t5_ops.c, model/t5*.c) with
// LB_REAL_DOUBLE, so the same source that runs in float in the library is checked here
// with central differences whose error is ~1e-10. Each check would fail if any term of a
// backward were dropped.
#define LB_REAL_DOUBLE
#include "../engine/kernels/dropout.c"
#include "../engine/kernels/linear.c"
#include "../engine/kernels/t5_ops.c"
#include "../engine/model/t5_params.c"
#include "../engine/model/t5_acts.c"
#include "../engine/model/t5.c"

#include "harness.h"

static uint64_t rng_state = 12345;
static double urand(void) {  // uniform in [-1, 1)
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0 * 2 - 1;
}
static void fill(double *x, size_t n, double s) {
    for (size_t i = 0; i < n; i++) x[i] = urand() * s;
}
static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// Compares an analytic gradient with central differences of f over every element of x.
// Returns the worst |analytic − numeric| / max(1e-3, |numeric|) … and counts nonzeros, so
// that a test can also check the gradient is not trivially zero.
typedef double (*loss_fn)(void *ctx);
static double fd_check(const char *what, double *x, const double *g, size_t n, loss_fn f, void *ctx) {
    const double h = 1e-6;
    double worst = 0, gmax = 0;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        double num = (lp - lm) / (2 * h);
        double e = fabs(num - g[i]) / fmax(1e-2, fabs(num));
        if (e > worst) worst = e;
        if (fabs(num) > gmax) gmax = fabs(num);
    }
    EXPECTF(gmax > 1e-6, "%s: the gradient is not all zero", what);
    EXPECTF(worst < 1e-6, "%s: finite differences differ by %g (relative)", what, worst);
    return worst;
}

// ---- linear with LoRA ----------------------------------------------------------------
typedef struct {
    linear_t *l;
    int N;
    double *x, *w, *y, *xa, *tmp;
    lb_drop_t drop;
} lin_ctx;
static double lin_loss(void *p) {
    lin_ctx *c = p;
    linear_forward(c->l, c->N, c->x, c->y, c->xa, c->tmp, &c->drop, 7);
    return dot(c->y, c->w, (size_t)c->N * c->l->out);
}

static void check_linear(float dropout) {
    int N = 5, In = 6, O = 4, Rr = 3;
    lb_param_t W = {0};
    double *Wv = malloc(sizeof(double) * O * In), *dW = calloc((size_t)O * In, sizeof(double));
    double *A = malloc(sizeof(double) * Rr * In), *B = malloc(sizeof(double) * O * Rr);
    double *dA = calloc((size_t)Rr * In, sizeof(double)), *dB = calloc((size_t)O * Rr, sizeof(double));
    fill(Wv, (size_t)O * In, 1);
    fill(A, (size_t)Rr * In, 1);
    fill(B, (size_t)O * Rr, 1);
    W.w = Wv;
    W.g = dW;
    W.numel = (size_t)O * In;
    linear_t l = {.in = In, .out = O, .W = &W};
    linear_set_lora(&l, Rr, 0.7, dropout, A, B, dA, dB);
    lin_ctx c = {&l, N, malloc(sizeof(double) * N * In), malloc(sizeof(double) * N * O),
                 malloc(sizeof(double) * N * O), malloc(sizeof(double) * N * Rr),
                 malloc(sizeof(double) * N * In), {99, 3, 1}};
    fill(c.x, (size_t)N * In, 1);
    fill(c.w, (size_t)N * O, 1);
    double *dx = calloc((size_t)N * In, sizeof(double));
    lin_loss(&c);
    linear_backward(&l, N, c.x, c.xa, c.w, dx, 0, c.tmp, &c.drop, 7);
    fd_check("linear dx", c.x, dx, (size_t)N * In, lin_loss, &c);
    fd_check("linear dW", Wv, dW, (size_t)O * In, lin_loss, &c);
    fd_check("lora dA", A, dA, (size_t)Rr * In, lin_loss, &c);
    fd_check("lora dB", B, dB, (size_t)O * Rr, lin_loss, &c);
    // frozen W: no weight gradient is written, and dx is still right
    W.g = NULL;
    memset(dA, 0, sizeof(double) * Rr * In);
    double *dx2 = calloc((size_t)N * In, sizeof(double));
    lin_loss(&c);
    linear_backward(&l, N, c.x, c.xa, c.w, dx2, 0, c.tmp, &c.drop, 7);
    double md = 0;
    for (int i = 0; i < N * In; i++) md = fmax(md, fabs(dx2[i] - dx[i]));
    EXPECT(md < 1e-12);
    free(Wv); free(dW); free(A); free(B); free(dA); free(dB); free(dx); free(dx2);
    free(c.x); free(c.w); free(c.y); free(c.xa); free(c.tmp);
}

static void test_linear_lora(void) { check_linear(0.0f); }
static void test_linear_lora_dropout(void) { check_linear(0.4f); }

// ---- RMS norm ------------------------------------------------------------------------
typedef struct {
    int N, D;
    double *x, *w, *inv, *y, *c;
} rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    rms_forward_p(NULL, c->N, c->D, c->x, c->w, 1e-6, c->inv, c->y);
    return dot(c->y, c->c, (size_t)c->N * c->D);
}
static void test_rms_norm(void) {
    int N = 4, D = 7;
    rms_ctx c = {N, D, malloc(sizeof(double) * N * D), malloc(sizeof(double) * D), malloc(sizeof(double) * N),
                 malloc(sizeof(double) * N * D), malloc(sizeof(double) * N * D)};
    fill(c.x, (size_t)N * D, 2);
    fill(c.w, (size_t)D, 1);
    fill(c.c, (size_t)N * D, 1);
    double *dx = calloc((size_t)N * D, sizeof(double)), *dw = calloc((size_t)D, sizeof(double));
    rms_loss(&c);
    rms_backward_p(NULL, N, D, c.x, c.w, c.inv, c.c, dw, dx);
    fd_check("rms dx", c.x, dx, (size_t)N * D, rms_loss, &c);
    fd_check("rms dw", c.w, dw, (size_t)D, rms_loss, &c);
    // the forward is T5's: no mean subtraction, no bias
    double ss = 0;
    for (int j = 0; j < D; j++) ss += c.x[j] * c.x[j];
    EXPECT(fabs(c.y[0] - c.x[0] / sqrt(ss / D + 1e-6) * c.w[0]) < 1e-12);
    free(c.x); free(c.w); free(c.inv); free(c.y); free(c.c); free(dx); free(dw);
}

// ---- activations, plain and gated ------------------------------------------------------
typedef struct {
    t5_act_t act;
    int gated;
    size_t n;
    double *a, *b, *g, *c;
} act_ctx;
static double act_loss(void *p) {
    act_ctx *c = p;
    act_forward_p(NULL, c->act, c->n, c->a, c->gated ? c->b : NULL, c->g);
    return dot(c->g, c->c, c->n);
}
static void test_activations(void) {
    size_t n = 40;
    for (int act = T5_ACT_RELU; act <= T5_ACT_SILU; act++)
        for (int gated = 0; gated < 2; gated++) {
            act_ctx c = {(t5_act_t)act, gated, n, malloc(8 * n), malloc(8 * n), malloc(8 * n), malloc(8 * n)};
            fill(c.a, n, 3);
            for (size_t i = 0; i < n; i++)  // keep relu away from its kink
                if (fabs(c.a[i]) < 1e-3) c.a[i] = 0.5;
            fill(c.b, n, 1);
            fill(c.c, n, 1);
            double *da = calloc(n, 8), *db = calloc(n, 8);
            act_loss(&c);
            act_backward_p(NULL, c.act, n, c.a, gated ? c.b : NULL, c.c, da, db);
            char what[64];
            snprintf(what, sizeof what, "%s%s da", gated ? "gated-" : "", t5_act_name(c.act));
            fd_check(what, c.a, da, n, act_loss, &c);
            if (gated) fd_check("gated db", c.b, db, n, act_loss, &c);
            free(c.a); free(c.b); free(c.g); free(c.c); free(da); free(db);
        }
    // values: gelu_new is the tanh form, gelu the erf form
    EXPECT(fabs(act_f(T5_ACT_GELU_NEW, 1.0) - 0.8411919906082768) < 1e-12);
    EXPECT(fabs(act_f(T5_ACT_GELU, 1.0) - 0.8413447460685429) < 1e-12);
    EXPECT(fabs(act_f(T5_ACT_SILU, 1.0) - 0.7310585786300049) < 1e-12);
}

// ---- attention core: bias, padding mask, causal mask, dropout --------------------------
typedef struct {
    attn_shape_t s;
    double *q, *k, *v, *P, *pd, *ctx, *c;
    lb_drop_t drop;
} att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    attn_core_forward_p(NULL, &c->s, c->q, c->k, c->v, c->P, c->pd, c->ctx, &c->drop);
    return dot(c->ctx, c->c, (size_t)c->s.B * c->s.Tq * c->s.H * c->s.K);
}
static void check_attention(int causal, int masked, float p_drop) {
    int B = 2, H = 2, K = 3, Tq = 4, Tk = causal ? 4 : 5;
    size_t nq = (size_t)B * Tq * H * K, nk = (size_t)B * Tk * H * K, np = (size_t)B * H * Tq * Tk;
    int32_t mask[10] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    double *bias = malloc(8 * (size_t)H * Tq * Tk);
    fill(bias, (size_t)H * Tq * Tk, 1);
    att_ctx c = {{B, H, K, Tq, Tk, bias, masked ? mask : NULL, causal, p_drop, 5},
                 malloc(8 * nq), malloc(8 * nk), malloc(8 * nk), malloc(8 * np), malloc(8 * np),
                 malloc(8 * nq), malloc(8 * nq), {7, 1, 1}};
    if (masked) {  // rows of 5 keys, the second example pads its last two
        for (int i = 0; i < 10; i++) mask[i] = i < 5 ? 1 : i < 8;
    }
    fill(c.q, nq, 1); fill(c.k, nk, 1); fill(c.v, nk, 1); fill(c.c, nq, 1);
    double *dq = malloc(8 * nq), *dk = malloc(8 * nk), *dv = malloc(8 * nk), *ds = malloc(8 * np);
    double *dbias = calloc((size_t)H * Tq * Tk, 8);
    att_loss(&c);
    attn_core_backward_p(NULL, &c.s, c.q, c.k, c.v, c.P, c.pd, ds, c.c, dq, dk, dv, dbias, &c.drop);
    fd_check("attention dq", c.q, dq, nq, att_loss, &c);
    fd_check("attention dk", c.k, dk, nk, att_loss, &c);
    fd_check("attention dv", c.v, dv, nk, att_loss, &c);
    fd_check("attention dbias", bias, dbias, (size_t)H * Tq * Tk, att_loss, &c);
    // masks: a padded or future key gets probability exactly 0, rows sum to 1
    att_loss(&c);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                double sum = 0;
                for (int j = 0; j < Tk; j++) {
                    double p = c.P[(((size_t)b * H + h) * Tq + i) * Tk + j];
                    sum += p;
                    if ((causal && j > i) || (masked && !mask[b * Tk + j])) EXPECT(p == 0);
                }
                EXPECT(fabs(sum - 1) < 1e-12);
            }
    free(bias); free(c.q); free(c.k); free(c.v); free(c.P); free(c.pd); free(c.ctx); free(c.c);
    free(dq); free(dk); free(dv); free(ds); free(dbias);
}
static void test_attention(void) {
    check_attention(0, 1, 0);
    check_attention(1, 0, 0);
    check_attention(0, 1, 0.3f);
}

// ---- cross entropy ---------------------------------------------------------------------
typedef struct {
    int N, V;
    double *l, *work;
    int32_t *lab;
    double *row;
} xe_ctx;
static double xe_loss(void *p) {
    xe_ctx *c = p;
    int n;
    double s = xent_forward_p(NULL, c->N, c->V, c->l, c->lab, &n, c->row);
    return s / n;
}
static void test_cross_entropy(void) {
    int N = 4, V = 6;
    int32_t lab[4] = {2, -100, 5, 0};
    xe_ctx c = {N, V, malloc(8 * N * V), malloc(8 * N * V), lab, malloc(8 * N)};
    fill(c.l, (size_t)N * V, 2);
    memcpy(c.work, c.l, 8 * (size_t)N * V);
    xent_backward_p(NULL, N, V, c.work, lab, 1.0 / 3);  // three labels count
    fd_check("cross entropy", c.l, c.work, (size_t)N * V, xe_loss, &c);
    for (int j = 0; j < V; j++) EXPECT(c.work[V + j] == 0);  // ignored row
    free(c.l); free(c.work); free(c.row);
}

// ---- whole tiny models -----------------------------------------------------------------
typedef struct {
    t5_model_t *m;
    t5_acts_t *a;
    t5_batch_t *b;
    lb_drop_t drop;
} model_ctx;
static double model_loss(void *p) {
    model_ctx *c = p;
    float loss;
    lb_err_t err;
    t5_forward(c->m, c->a, c->b, &c->drop, &loss, &err);
    double s = 0;  // the double loss, not the float copy
    int n = 0;
    for (int r = 0; r < c->b->B * c->b->T; r++)
        if (c->a->labels[r] >= 0) {
            s += c->a->row_loss[r];
            n++;
        }
    return s / n;
}

static void tiny_config(t5_config_t *c, int gated, int tied, int scale, int Le, int Ld) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 11; c->d_model = 6; c->d_kv = 2; c->num_heads = 2; c->d_ff = 5;
    c->num_layers = Le; c->num_decoder_layers = Ld;
    c->relative_attention_num_buckets = 8; c->relative_attention_max_distance = 10;
    c->gated = gated; c->act = gated ? T5_ACT_GELU_NEW : T5_ACT_RELU;
    c->layer_norm_epsilon = 1e-6f; c->tie_word_embeddings = tied; c->scale_decoder_outputs = scale;
    c->dropout_rate = 0.2f; c->pad_token_id = 0; c->eos_token_id = 1; c->decoder_start_token_id = 0;
}

static int32_t tiny_ids[] = {3, 4, 5, 6, 1, 7, 8, 1, 0, 0};
static int32_t tiny_mask[] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
static int32_t tiny_lab[] = {5, 9, 1, 2, 1, -100, -100, -100};

static void check_model(int gated, int tied, int scale, int Le, int Ld, int dropout) {
    t5_config_t cfg;
    tiny_config(&cfg, gated, tied, scale, Le, Ld);
    t5_model_t m;
    lb_err_t err;
    t5_init_empty(&m, &cfg, &err);
    for (int i = 0; i < m.n_params; i++) fill(m.params[i].w, m.params[i].numel, 0.8);
    t5_set_trainable(&m, t5_pred_all, NULL);
    t5_batch_t b = {2, 5, 4, tiny_ids, tiny_mask, tiny_lab};
    t5_acts_t *a = t5_acts_new(&m, 2, 5, 4);
    model_ctx c = {&m, a, &b, {3, 0, dropout}};
    model_loss(&c);
    t5_zero_grad(&m);
    t5_backward(&m, a, &c.drop, 1.0f);
    for (int i = 0; i < m.n_params; i++) {
        char what[200];
        snprintf(what, sizeof what, "%s%s%s%s %d/%d%s: %s", gated ? "gated" : "relu", tied ? " tied" : "",
                 scale ? " scaled" : "", dropout ? " dropout" : "", Le, Ld, "", m.params[i].name);
        fd_check(what, m.params[i].w, m.params[i].g, m.params[i].numel, model_loss, &c);
    }
    t5_acts_free(a);
    t5_free(&m);
}

static void test_model_gated_untied(void) { check_model(1, 0, 0, 2, 2, 0); }
static void test_model_relu_tied_scaled_asymmetric(void) { check_model(0, 1, 1, 2, 1, 0); }
static void test_model_with_dropout(void) { check_model(1, 1, 1, 1, 2, 1); }

// Invariants of the forward for the relu / tied / scaled / asymmetric configuration: the
// logits are the decoder output times shared.weightᵀ times d_model^-½, and turning the
// scale off multiplies them by √d_model exactly.
static void test_tied_scaled_invariants(void) {
    t5_config_t cfg;
    tiny_config(&cfg, 0, 1, 1, 2, 1);
    t5_model_t m;
    lb_err_t err;
    t5_init_empty(&m, &cfg, &err);
    for (int i = 0; i < m.n_params; i++) fill(m.params[i].w, m.params[i].numel, 0.8);
    EXPECT(m.head->W == m.shared);
    EXPECT(t5_find_param(&m, "lm_head.weight") == m.shared);
    EXPECT(m.n_lin == 2 * 6 + 1 * 10 + 1);
    t5_batch_t b = {2, 5, 4, tiny_ids, tiny_mask, tiny_lab};
    t5_acts_t *a = t5_acts_new(&m, 2, 5, 4);
    float l1, l2;
    t5_forward(&m, a, &b, NULL, &l1, &err);
    int N = 8, V = 11, D = 6;
    double *lg = malloc(8 * N * V), md = 0;
    memcpy(lg, a->logits, 8 * (size_t)N * V);
    for (int r = 0; r < N; r++)  // the head by hand from the final norm's output
        for (int v = 0; v < V; v++) {
            double s = 0, ss = 0;
            for (int j = 0; j < D; j++) ss += a->dec_xf[r * D + j] * a->dec_xf[r * D + j];
            for (int j = 0; j < D; j++)
                s += a->dec_xf[r * D + j] / sqrt(ss / D + 1e-6) * m.dec_ln->w[j] * m.shared->w[v * D + j];
            md = fmax(md, fabs(s / sqrt(6.0) - lg[r * V + v]));
        }
    EXPECTF(md < 1e-12, "head by hand differs by %g", md);
    m.cfg.scale_decoder_outputs = 0;
    t5_forward(&m, a, &b, NULL, &l2, &err);
    md = 0;
    for (int i = 0; i < N * V; i++) md = fmax(md, fabs(a->logits[i] - lg[i] * sqrt(6.0)));
    EXPECTF(md < 1e-12, "unscaled logits differ by %g", md);
    // the decoder input is the labels shifted right, -100 → pad
    int32_t want[8] = {0, 5, 9, 1, 0, 1, 0, 0};
    for (int i = 0; i < 8; i++) EXPECT(a->dec_ids[i] == want[i]);
    free(lg);
    t5_acts_free(a);
    t5_free(&m);
}

int main(void) {
    RUN(test_linear_lora);
    RUN(test_linear_lora_dropout);
    RUN(test_rms_norm);
    RUN(test_activations);
    RUN(test_attention);
    RUN(test_cross_entropy);
    RUN(test_model_gated_untied);
    RUN(test_model_relu_tied_scaled_asymmetric);
    RUN(test_model_with_dropout);
    RUN(test_tied_scaled_invariants);
    TH_DONE();
}
