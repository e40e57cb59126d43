// T5's kernels (t5_ops.c) against plain references on odd sizes, so that every vector
// tail runs: the attention core forward and backward (bias, key mask, causal, dropout;
// with and without dv and dbias) and RMS norm against double-precision loops written
// here, the fused dropout masks bit for bit against lb_drop_keep, the AVX-512 exp against
// expf, the fused rows against the scalar ones, and thread-count independence.
#include "../engine/kernels/dropout.c"
#include "../engine/kernels/t5_ops.c"

#include "harness.h"

static uint64_t rng_state = 0x1234567;
static float frand(void) {  // uniform in [-1, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *randv(size_t n, float scale) {
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

static double max_rel(const float *a, const double *ref, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;
        if (fabs(ref[i]) > mb) mb = fabs(ref[i]);
    }
    return mb > 0 ? md / mb : md;
}

// ---- reference attention, in double ---------------------------------------------------

typedef struct {
    double *P, *Pd, *ctx;  // [B, H, Tq, Tk] ×2, [B·Tq, H·K]
} ref_fwd_t;

static double ref_keep_scale(const lb_drop_t *d, const attn_shape_t *s, size_t idx) {
    if (!lb_drop_on(d, s->p_drop)) return 1;
    return lb_drop_keep(d, s->site, idx, s->p_drop) ? 1.0 / (1.0 - (double)s->p_drop) : 0;
}

static ref_fwd_t ref_attn_fwd(const attn_shape_t *s, const float *q, const float *k, const float *v,
                              const lb_drop_t *drop) {
    int B = s->B, H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    size_t tt = (size_t)Tq * Tk;
    ref_fwd_t r = {calloc((size_t)B * H * tt, sizeof(double)), calloc((size_t)B * H * tt, sizeof(double)),
                   calloc((size_t)B * Tq * HK, sizeof(double))};
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                size_t o = ((size_t)(b * H + h) * Tq + i) * Tk;
                double *row = r.P + o, mx = -INFINITY;
                for (int c = 0; c < Tk; c++) {
                    int hid = (s->causal && c > i) || (s->key_mask && !s->key_mask[b * Tk + c]);
                    double sc = 0;
                    for (int e = 0; e < K; e++)
                        sc += (double)q[(size_t)(b * Tq + i) * HK + h * K + e] * k[(size_t)(b * Tk + c) * HK + h * K + e];
                    if (s->bias) sc += s->bias[((size_t)h * Tq + i) * Tk + c];
                    row[c] = hid ? -INFINITY : sc;
                    if (row[c] > mx) mx = row[c];
                }
                double sum = 0;
                for (int c = 0; c < Tk; c++) sum += row[c] = mx == -INFINITY ? 0 : exp(row[c] - mx);
                for (int c = 0; c < Tk; c++) {
                    row[c] = sum > 0 ? row[c] / sum : 0;
                    r.Pd[o + c] = row[c] * ref_keep_scale(drop, s, o + c);
                }
                for (int e = 0; e < K; e++) {
                    double a = 0;
                    for (int c = 0; c < Tk; c++) a += r.Pd[o + c] * v[(size_t)(b * Tk + c) * HK + h * K + e];
                    r.ctx[(size_t)(b * Tq + i) * HK + h * K + e] = a;
                }
            }
    return r;
}

// dq, dk, dv [B·T, H·K] and dbias [H, Tq, Tk] (added to, from 0) from dctx.
static void ref_attn_bwd(const attn_shape_t *s, const float *q, const float *k, const float *v,
                         const ref_fwd_t *f, const float *dctx, const lb_drop_t *drop, double *dq,
                         double *dk, double *dv, double *dbias) {
    int B = s->B, H = s->H, K = s->K, Tq = s->Tq, Tk = s->Tk, HK = H * K;
    double *dS = malloc(sizeof(double) * Tk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                size_t o = ((size_t)(b * H + h) * Tq + i) * Tk;
                const float *dc = dctx + (size_t)(b * Tq + i) * HK + h * K;
                double dot = 0;
                for (int c = 0; c < Tk; c++) {
                    double dpd = 0;
                    for (int e = 0; e < K; e++) {
                        dpd += (double)dc[e] * v[(size_t)(b * Tk + c) * HK + h * K + e];
                        dv[(size_t)(b * Tk + c) * HK + h * K + e] += f->Pd[o + c] * dc[e];
                    }
                    dS[c] = dpd * ref_keep_scale(drop, s, o + c);
                    dot += f->P[o + c] * dS[c];
                }
                for (int c = 0; c < Tk; c++) {
                    double g = f->P[o + c] * (dS[c] - dot);
                    dbias[((size_t)h * Tq + i) * Tk + c] += g;
                    for (int e = 0; e < K; e++) {
                        dq[(size_t)(b * Tq + i) * HK + h * K + e] += g * k[(size_t)(b * Tk + c) * HK + h * K + e];
                        dk[(size_t)(b * Tk + c) * HK + h * K + e] += g * q[(size_t)(b * Tq + i) * HK + h * K + e];
                    }
                }
            }
    free(dS);
}

// One attention configuration through the engine's forward and backward (pool of
// `threads`), checked against the references; returns the engine's outputs concatenated
// (ctx, dq, dk, dv, dbias) for the thread-count comparison.
static float *check_attn(int B, int H, int K, int Tq, int Tk, int causal, int masked, int biased,
                         float p_drop, int with_dv, int with_dbias, int threads) {
    lb_set_threads(threads);
    lb_pool_t *pool = lb_pool_new();
    int HK = H * K;
    size_t tt = (size_t)Tq * Tk, nq = (size_t)B * Tq * HK, nk = (size_t)B * Tk * HK, nb = (size_t)H * tt;
    rng_state = 0x9E3779B9u + (uint64_t)(Tq * 131 + Tk);
    float *q = randv(nq, 1.5f), *k = randv(nk, 1.5f), *v = randv(nk, 1), *dctx = randv(nq, 1);
    float *bias = biased ? randv(nb, 2) : NULL;
    int32_t *km = NULL;
    if (masked) {
        km = malloc(sizeof(int32_t) * B * Tk);
        for (int i = 0; i < B * Tk; i++) km[i] = (i % Tk) < Tk - 3 - (i / Tk);  // padding at the end
        if (B > 1)
            for (int c = 0; c < Tk; c++) km[Tk + c] = 0;  // a row with every key hidden
    }
    attn_shape_t s = {B, H, K, Tq, Tk, bias, km, causal, p_drop, 77};
    lb_drop_t drop = {5, 3, 1};
    float *P = calloc((size_t)B * H * tt, 4), *pd = calloc((size_t)B * H * tt, 4), *ds = calloc((size_t)B * H * tt, 4);
    float *out = calloc(nq * 2 + nk * 2 + nb, 4);
    float *ctx = out, *dq = out + nq, *dk = dq + nq, *dv = dk + nk, *dbias = dv + nk;
    attn_core_forward_p(pool, &s, q, k, v, P, pd, ctx, &drop);
    attn_core_backward_p(pool, &s, q, k, v, P, pd, ds, dctx, dq, dk, with_dv ? dv : NULL,
                         with_dbias ? dbias : NULL, &drop);

    ref_fwd_t r = ref_attn_fwd(&s, q, k, v, &drop);
    double *rq = calloc(nq, 8), *rk = calloc(nk, 8), *rv = calloc(nk, 8), *rb = calloc(nb, 8);
    ref_attn_bwd(&s, q, k, v, &r, dctx, &drop, rq, rk, rv, rb);
    double eP = max_rel(P, r.P, (size_t)B * H * tt), ec = max_rel(ctx, r.ctx, nq);
    double eq = max_rel(dq, rq, nq), ek = max_rel(dk, rk, nk);
    double ev = with_dv ? max_rel(dv, rv, nk) : 0, eb = with_dbias ? max_rel(dbias, rb, nb) : 0;
    EXPECTF(eP < 1e-5 && ec < 1e-5, "B%d H%d K%d %dx%d causal %d mask %d bias %d p %.2f: P %.2e ctx %.2e",
            B, H, K, Tq, Tk, causal, masked, biased, p_drop, eP, ec);
    EXPECTF(eq < 1e-4 && ek < 1e-4 && ev < 1e-4 && eb < 1e-4,
            "B%d H%d K%d %dx%d causal %d mask %d bias %d p %.2f dv %d dbias %d: dq %.2e dk %.2e dv %.2e dbias %.2e",
            B, H, K, Tq, Tk, causal, masked, biased, p_drop, with_dv, with_dbias, eq, ek, ev, eb);
    // bf16 precision: q, k, v kept rounded (q16, k16, v16 exactly q, k, v rounded), the
    // four products on bf16 operands, softmax and dropout in fp32; ctx, P16 and the
    // gradients near the double reference (bf16 keeps 8 bits; the bounds have 2.5x margin or more
    // over what oneDNN and the widened fallback give)
    uint16_t *P16 = calloc((size_t)B * H * tt, 2), *q16 = calloc(nq, 2), *k16 = calloc(nk, 2), *v16 = calloc(nk, 2);
    float *pd2 = calloc((size_t)B * H * attn_core_pd16(&s), 4), *Pr = calloc((size_t)B * H * tt, 4);
    float *o16 = calloc(nq * 2 + nk * 2 + nb, 4);
    attn_core_forward16_p(pool, &s, q, k, v, P16, pd2, o16, &drop, q16, k16, v16);
    int rounded = 1;
    for (size_t i = 0; i < nq; i++) rounded &= q16[i] == lb_f32_to_bf16(q[i]);
    for (size_t i = 0; i < nk; i++) rounded &= k16[i] == lb_f32_to_bf16(k[i]) && v16[i] == lb_f32_to_bf16(v[i]);
    EXPECTF(rounded, "q16, k16, v16 are not q, k, v rounded");
    for (size_t i = 0; i < (size_t)B * H * tt; i++) Pr[i] = lb_bf16_to_f32(P16[i]);
    double e16P = max_rel(Pr, r.P, (size_t)B * H * tt), e16c = max_rel(o16, r.ctx, nq);
    EXPECTF(e16P < 2e-2 && e16c < 2e-2, "B%d H%d K%d %dx%d: bf16 P %.2e ctx %.2e from the double reference", B, H, K, Tq, Tk,
            e16P, e16c);
    attn_core_backward16_p(pool, &s, q16, k16, v16, P16, pd2, ds, dctx, o16 + nq, o16 + 2 * nq, with_dv ? o16 + 2 * nq + nk : NULL,
                           with_dbias ? o16 + 2 * nq + 2 * nk : NULL, &drop);
    double e16q = max_rel(o16 + nq, rq, nq), e16k = max_rel(o16 + 2 * nq, rk, nk);
    double e16v = with_dv ? max_rel(o16 + 2 * nq + nk, rv, nk) : 0, e16b = with_dbias ? max_rel(o16 + 2 * nq + 2 * nk, rb, nb) : 0;
    EXPECTF(e16q < 3e-2 && e16k < 3e-2 && e16v < 3e-2 && e16b < 3e-2,
            "B%d H%d K%d %dx%d: bf16 dq %.2e dk %.2e dv %.2e dbias %.2e from the double reference", B, H, K, Tq, Tk, e16q,
            e16k, e16v, e16b);
    if (getenv("LB_TEST_VERBOSE"))
        printf("  bf16 core B%d H%d K%d %dx%d: P %.2e ctx %.2e dq %.2e dk %.2e dv %.2e dbias %.2e\n", B, H, K, Tq, Tk, e16P,
               e16c, e16q, e16k, e16v, e16b);
    free(P16), free(q16), free(k16), free(v16), free(pd2), free(Pr), free(o16);
    free(q), free(k), free(v), free(dctx), free(bias), free(km), free(P), free(pd), free(ds);
    free(r.P), free(r.Pd), free(r.ctx), free(rq), free(rk), free(rv), free(rb);
    lb_pool_free(pool);
    return out;
}

static void test_attention_against_reference(void) {
    // encoder-like (bias, padding mask, dropout), decoder self (causal), cross; odd sizes
    free(check_attn(2, 3, 5, 19, 37, 0, 1, 1, 0.1f, 1, 1, 2));
    free(check_attn(2, 3, 5, 19, 37, 0, 1, 1, 0.1f, 0, 0, 2));  // mask regenerated (no dv)
    free(check_attn(3, 2, 7, 17, 17, 1, 0, 1, 0.25f, 1, 0, 2));
    free(check_attn(2, 2, 4, 9, 33, 0, 1, 0, 0.0f, 1, 0, 1));
    free(check_attn(1, 1, 3, 1, 1, 1, 0, 0, 0.1f, 1, 1, 1));
}

// The same inputs with 1 and 2 threads give the same bits.
static void test_attention_thread_independent(void) {
    size_t n = (size_t)2 * 21 * 12 * 2 + (size_t)2 * 35 * 12 * 2 + (size_t)3 * 21 * 35;
    float *a = check_attn(2, 3, 4, 21, 35, 0, 1, 1, 0.1f, 1, 1, 1);
    float *b = check_attn(2, 3, 4, 21, 35, 0, 1, 1, 0.1f, 1, 1, 2);
    EXPECT(memcmp(a, b, n * sizeof(float)) == 0);
    free(a), free(b);
}

// RMS norm forward and backward against double loops, odd D.
static void test_rms_against_reference(void) {
    int N = 7, D = 37;
    rng_state = 42;
    float *x = randv((size_t)N * D, 2), *w = randv(D, 1), *dy = randv((size_t)N * D, 1);
    float *inv = malloc(4 * N), *y = malloc(4 * (size_t)N * D), *y2 = malloc(4 * (size_t)N * D);
    float *dw = calloc(D, 4), *dx = calloc((size_t)N * D, 4);
    rms_forward_p(NULL, N, D, x, w, 1e-6f, inv, y);
    rms_apply_p(NULL, N, D, x, w, inv, y2);
    rms_backward_p(NULL, N, D, x, w, inv, dy, dw, dx);
    double *ry = malloc(8 * (size_t)N * D), *rdx = calloc((size_t)N * D, 8), *rdw = calloc(D, 8);
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * D, *dr = dy + (size_t)r * D;
        double ss = 0, dot = 0;
        for (int k = 0; k < D; k++) ss += (double)xr[k] * xr[k], dot += (double)dr[k] * w[k] * xr[k];
        double iv = 1 / sqrt(ss / D + 1e-6);
        for (int k = 0; k < D; k++) {
            ry[(size_t)r * D + k] = xr[k] * iv * w[k];
            rdw[k] += dr[k] * xr[k] * iv;
            rdx[(size_t)r * D + k] = iv * w[k] * dr[k] - xr[k] * dot * iv * iv * iv / D;
        }
    }
    double ey = max_rel(y, ry, (size_t)N * D), ew = max_rel(dw, rdw, D), ex = max_rel(dx, rdx, (size_t)N * D);
    EXPECTF(ey < 1e-6 && ew < 1e-5 && ex < 1e-5, "y %.2e dw %.2e dx %.2e", ey, ew, ex);
    EXPECT(memcmp(y, y2, 4 * (size_t)N * D) == 0);  // rms_apply_p: the forward's output again
    // precision bf16: the same pass also rounds y and x (D = 37: a masked tail), the bits
    // of lb_f32_to_bf16, and y itself unchanged
    uint16_t *y16 = malloc(2 * (size_t)N * D), *x16 = malloc(2 * (size_t)N * D);
    rms_forward16_p(NULL, N, D, x, w, 1e-6f, inv, y2, y16, x16);
    int bad = memcmp(y, y2, 4 * (size_t)N * D) != 0;
    for (size_t i = 0; i < (size_t)N * D; i++) bad += y16[i] != lb_f32_to_bf16(y[i]) || x16[i] != lb_f32_to_bf16(x[i]);
    EXPECTF(bad == 0, "%d values differ", bad);
    // and rms_apply16_p rebuilds both from the saved factor, bit for bit
    uint16_t *y16b = malloc(2 * (size_t)N * D);
    rms_apply16_p(NULL, N, D, x, w, inv, y2, y16b);
    EXPECT(memcmp(y, y2, 4 * (size_t)N * D) == 0 && memcmp(y16, y16b, 2 * (size_t)N * D) == 0);
    free(y16), free(x16), free(y16b);
    free(x), free(w), free(dy), free(inv), free(y), free(y2), free(dw), free(dx), free(ry), free(rdx), free(rdw);
}

// gelu_new (gated and plain) forward and backward against double formulas, odd n, and the
// other activations through the same entry points (the derivative rounds 1 − t² in float:
// ~1.4e-6 of the largest value).
static void test_activations_against_reference(void) {
    size_t n = 4099;  // above act_forward_p's parallel threshold, odd tail
    rng_state = 11;
    float *a = randv(n, 6), *b = randv(n, 1), *dg = randv(n, 1);
    float *g = malloc(4 * n), *da = malloc(4 * n), *db = malloc(4 * n);
    double *rg = malloc(8 * n), *rda = malloc(8 * n), *rdb = malloc(8 * n);
    lb_set_threads(2);
    lb_pool_t *pool = lb_pool_new();
    t5_act_t acts[] = {T5_ACT_GELU_NEW, T5_ACT_GELU, T5_ACT_RELU, T5_ACT_SILU};
    for (int ai = 0; ai < 4; ai++)
        for (int gated = 0; gated < 2; gated++) {
            act_forward_p(pool, acts[ai], n, a, gated ? b : NULL, g);
            act_backward_p(pool, acts[ai], n, a, gated ? b : NULL, dg, da, gated ? db : NULL);
            for (size_t i = 0; i < n; i++) {
                double x = a[i], f = 0, fp = 0;
                if (acts[ai] == T5_ACT_GELU_NEW) {
                    double c = 0.79788456080286535588, t = tanh(c * (x + 0.044715 * x * x * x));
                    f = 0.5 * x * (1 + t);
                    fp = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
                } else if (acts[ai] == T5_ACT_GELU) {
                    f = 0.5 * x * (1 + erf(x / sqrt(2.0)));
                    fp = 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
                } else if (acts[ai] == T5_ACT_RELU) {
                    f = x > 0 ? x : 0, fp = x > 0;
                } else {
                    double sg = 1 / (1 + exp(-x));
                    f = x * sg, fp = sg * (1 + x * (1 - sg));
                }
                rg[i] = gated ? f * b[i] : f;
                rda[i] = gated ? dg[i] * b[i] * fp : dg[i] * fp;
                rdb[i] = dg[i] * f;
            }
            double eg = max_rel(g, rg, n), ea = max_rel(da, rda, n), eb = gated ? max_rel(db, rdb, n) : 0;
            EXPECTF(eg < 1e-6 && ea < 1e-5 && eb < 1e-6, "act %d gated %d: g %.2e da %.2e db %.2e", ai, gated, eg, ea, eb);
        }
    lb_pool_free(pool);
    free(a), free(b), free(dg), free(g), free(da), free(db), free(rg), free(rda), free(rdb);
}

// Cross entropy loss and gradient against double loops; V odd, an ignored row, a row
// with a -inf logit.
static void test_xent_against_reference(void) {
    int N = 5, V = 1001;
    rng_state = 3;
    float *l = randv((size_t)N * V, 20), *l0 = malloc(4 * (size_t)N * V);
    l[2 * V + 7] = -INFINITY;
    memcpy(l0, l, 4 * (size_t)N * V);
    int32_t labels[] = {3, -100, 1000, 0, 517};
    double row_loss[5], ref_sum = 0;
    int cnt = 0;
    double sum = xent_forward_p(NULL, N, V, l, labels, &cnt, row_loss);
    double *rd = calloc((size_t)N * V, 8);
    float scale = 0.25f;
    for (int r = 0; r < N; r++) {
        if (labels[r] < 0) continue;
        const float *x = l0 + (size_t)r * V;
        double mx = -INFINITY, s = 0;
        for (int c = 0; c < V; c++) mx = x[c] > mx ? x[c] : mx;
        for (int c = 0; c < V; c++) s += exp(x[c] - mx);
        ref_sum += log(s) + mx - x[labels[r]];
        for (int c = 0; c < V; c++) rd[(size_t)r * V + c] = scale * (exp(x[c] - mx) / s - (c == labels[r]));
    }
    xent_backward_p(NULL, N, V, l, labels, scale);
    double ed = max_rel(l, rd, (size_t)N * V);
    EXPECTF(cnt == 4 && fabs(sum - ref_sum) < 1e-6 * fabs(ref_sum) && ed < 1e-6, "n %d loss %.9g ref %.9g grad %.2e",
            cnt, sum, ref_sum, ed);
    free(l), free(l0), free(rd);
}

// drop_add_range (x + drop(o)), lb_dropout_apply_at (drop(x) in place: AVX-512 where the
// CPU has it), drop_copy_range and the AVX2 kernel, with lb_drop_keep's masks, bit for bit,
// any offset and length.
static void test_drop_add_masks(void) {
    lb_drop_t d = {123, 9, 1};
    size_t n = 1003;
    rng_state = 7;
    float *x = randv(n, 1), *o = randv(n, 1), *y = malloc(4 * n);
    float ps[] = {0.1f, 0.5f, 0.9f, 1e-7f};
    int bad = 0;
    for (int pi = 0; pi < 4; pi++)
        for (uint64_t off = 0; off < 40; off += 13) {
            float p = ps[pi], s = (float)(1.0 / (1.0 - (double)p));
            drop_add_range(y, x, o, n - off, &d, 31 + pi, off, p);
            for (size_t i = 0; i < n - off; i++)
                bad += y[i] != x[i] + (lb_drop_keep(&d, 31 + pi, off + i, p) ? o[i] * s : 0.0f);
            memcpy(y, o, 4 * n);
            lb_dropout_apply_at(y, n - off, &d, 31 + pi, off, p);
            for (size_t i = 0; i < n - off; i++) bad += y[i] != (lb_drop_keep(&d, 31 + pi, off + i, p) ? o[i] * s : 0.0f);
            drop_copy_range(y, o, n - off, &d, 31 + pi, off, p);
            for (size_t i = 0; i < n - off; i++) bad += y[i] != (lb_drop_keep(&d, 31 + pi, off + i, p) ? o[i] * s : 0.0f);
#ifdef LB_VEC512
            if (__builtin_cpu_supports("avx2")) {
                memcpy(y, o, 4 * n);
                size_t done = drop_avx2(y, n - off, lb_drop_base(&d, 31 + pi) + off, p);
                bad += done < n - off - 7;
                for (size_t i = 0; i < done; i++) bad += y[i] != (lb_drop_keep(&d, 31 + pi, off + i, p) ? o[i] * s : 0.0f);
            }
#endif
        }
    lb_drop_t off_d = {123, 9, 0};  // evaluation: no dropout
    drop_add_range(y, x, o, n, &off_d, 1, 0, 0.1f);
    for (size_t i = 0; i < n; i++) bad += y[i] != x[i] + o[i];
    EXPECTF(bad == 0, "%d elements differ from lb_drop_keep's masks", bad);
    free(x), free(o), free(y);
}

// The fused calls give the bits of the separate ones: act then dropout, dropout then the
// activation's backward (in place and not), bf16 precision's forms (the pre-activations
// rounded in the forward's pass, read from bf16 in both directions), the residual's
// drop + add and drop + copy.
static void test_fused_equal_separate(void) {
    size_t n = 3 * 32768 + 1001;
    lb_drop_t d = {77, 4, 1};
    float p = 0.1f;
    rng_state = 99;
    float *a = randv(n, 4), *b = randv(n, 1), *dg = randv(n, 1), *x = randv(n, 1);
    float *g1 = malloc(4 * n), *g2 = malloc(4 * n), *da1 = malloc(4 * n), *da2 = malloc(4 * n);
    float *db1 = malloc(4 * n), *db2 = malloc(4 * n), *aw = malloc(4 * n), *bw = malloc(4 * n);
    uint16_t *a16 = malloc(2 * n), *b16 = malloc(2 * n);
    lb_set_threads(2);
    lb_pool_t *pool = lb_pool_new();
    t5_act_t acts[] = {T5_ACT_GELU_NEW, T5_ACT_RELU};
    for (int ai = 0; ai < 2; ai++) {
        act_forward_p(pool, acts[ai], n, a, b, g1);
        lb_dropout_apply_par(pool, g1, n, &d, 8, p);
        act_forward_drop_p(pool, acts[ai], n, a, b, g2, &d, 8, p);
        EXPECT(memcmp(g1, g2, 4 * n) == 0);
        memcpy(da1, dg, 4 * n);
        lb_dropout_apply_par(pool, da1, n, &d, 9, p);
        act_backward_p(pool, acts[ai], n, a, b, da1, da1, db1);
        act_backward_drop_p(pool, acts[ai], n, a, b, dg, da2, db2, &d, 9, p);  // out of place
        EXPECT(memcmp(da1, da2, 4 * n) == 0 && memcmp(db1, db2, 4 * n) == 0);
        memcpy(da2, dg, 4 * n);
        act_backward_drop_p(pool, acts[ai], n, a, b, da2, da2, db2, &d, 9, p);  // in place
        EXPECT(memcmp(da1, da2, 4 * n) == 0 && memcmp(db1, db2, 4 * n) == 0);
        // bf16 precision's forms: a, b rounded in the activation's pass; a16, b16 read as
        // the fp32 calls read their widened values
        act_forward_keep16_p(pool, acts[ai], n, a, b, g2, &d, 8, p, a16, b16);
        act_forward_drop_p(pool, acts[ai], n, a, b, g1, &d, 8, p);
        int bad16 = memcmp(g1, g2, 4 * n) != 0;
        for (size_t i = 0; i < n; i++) bad16 += a16[i] != lb_f32_to_bf16(a[i]) || b16[i] != lb_f32_to_bf16(b[i]);
        EXPECTF(bad16 == 0, "%s: act_forward_keep16_p: %d differences", acts[ai] == T5_ACT_RELU ? "relu" : "gelu", bad16);
        lb_bf16_to_real(a16, n, aw), lb_bf16_to_real(b16, n, bw);
        act_forward_drop_p(pool, acts[ai], n, aw, bw, g1, &d, 8, p);
        act_forward16_drop_p(pool, acts[ai], n, a16, b16, g2, &d, 8, p);
        EXPECT(memcmp(g1, g2, 4 * n) == 0);
        act_forward16_drop_p(pool, acts[ai], n, a16, NULL, g2, &d, 8, p);  // plain
        act_forward_drop_p(pool, acts[ai], n, aw, NULL, g1, &d, 8, p);
        EXPECT(memcmp(g1, g2, 4 * n) == 0);
        act_backward_drop_p(pool, acts[ai], n, aw, bw, dg, da1, db1, &d, 9, p);
        memcpy(da2, dg, 4 * n);
        act_backward16_drop_p(pool, acts[ai], n, a16, b16, da2, da2, db2, &d, 9, p);  // in place, as t5.c
        EXPECT(memcmp(da1, da2, 4 * n) == 0 && memcmp(db1, db2, 4 * n) == 0);
    }
    memcpy(g1, dg, 4 * n);
    lb_dropout_apply_par(pool, g1, n, &d, 10, p);
    drop_copy_p(pool, g2, dg, n, &d, 10, p);
    EXPECT(memcmp(g1, g2, 4 * n) == 0);
    for (size_t i = 0; i < n; i++) g1[i] += x[i];
    drop_add_p(pool, g2, x, dg, n, &d, 10, p);
    EXPECT(memcmp(g1, g2, 4 * n) == 0);
    lb_drop_t eval = {77, 4, 0};
    drop_copy_p(pool, g2, dg, n, &eval, 10, p);
    EXPECT(memcmp(g2, dg, 4 * n) == 0);
    lb_pool_free(pool);
    free(a), free(b), free(dg), free(x), free(g1), free(g2), free(da1), free(da2), free(db1), free(db2);
    free(aw), free(bw), free(a16), free(b16);
}

#ifdef LB_VEC
LB_AVX512 static void exp16_of(const float *x, float *y) { _mm512_storeu_ps(y, exp16(_mm512_loadu_ps(x))); }

// The fused AVX-512 rows against the scalar rows, and exp16 against expf.
static void test_avx512_kernels(void) {
    if (!vec512_ok()) {
        printf("     skipped: this CPU has no AVX-512 F+DQ; the scalar path ran above\n");
        return;
    }
    // exp16 over the range softmax uses ([-87, 0]) and that of gelu_new's 2u ([-30, 30])
    double worst = 0;
    float xs[16], ys[16];
    for (int i = 0; i < 200000; i++) {
        for (int l = 0; l < 16; l++) xs[l] = -87.0f + 117.0f * (float)((i * 16 + l) % 3200000) / 3200000.0f;
        exp16_of(xs, ys);
        for (int l = 0; l < 16; l++) {
            double e = fabs((double)ys[l] - exp((double)xs[l])) / exp((double)xs[l]);
            if (e > worst) worst = e;
        }
    }
    printf("     exp16: max relative error %.2e against exp() over [-87, 30]\n", worst);
    EXPECTF(worst < 3e-7, "exp16 error %.2e", worst);
    for (int l = 0; l < 16; l++) xs[l] = -INFINITY;
    exp16_of(xs, ys);
    EXPECT(ys[0] == 0);

    // rows: every length 1..70, with bias, a key mask, a causal limit and dropout
    lb_drop_t d = {1, 2, 1};
    lb_drop_consts_t kc = lb_drop_consts(&d, 5, 0.2f);
    double e_fwd = 0, e_bwd = 0;
    int bad_pd = 0;
    for (int n = 1; n <= 70; n++) {
        rng_state = (uint64_t)n;
        float *row = randv(n, 4), *br = randv(n, 1), *a = malloc(4 * n), *pd = malloc(4 * n), *ref = malloc(4 * n);
        int32_t *km = malloc(4 * n);
        for (int c = 0; c < n; c++) km[c] = c % 5 != 3;
        int lim = n > 3 ? n - 2 : n;
        memcpy(a, row, 4 * n);
        attn_row_fwd512(a, n, lim, br, km, pd, kc.base + 100, kc.thr, kc.scale);
        memcpy(ref, row, 4 * n);
        attn_row_fwd(ref, n, lim, br, km);
        for (int c = 0; c < n; c++) {
            double e = fabs((double)a[c] - ref[c]);
            if (e > e_fwd) e_fwd = e;
            bad_pd += pd[c] != (lb_drop_keep(&d, 5, 100 + (uint64_t)c, 0.2f) ? a[c] * kc.scale : 0.0f);
        }
        // backward: the mask from pd and regenerated give the scalar result
        float *g = randv(n, 1), *g1 = malloc(4 * n), *g2 = malloc(4 * n), *g3 = malloc(4 * n);
        memcpy(g1, g, 4 * n), memcpy(g2, g, 4 * n), memcpy(g3, g, 4 * n);
        attn_row_bwd512(g1, ref, n, 1, pd, 0, kc.thr, kc.scale);
        attn_row_bwd512(g2, ref, n, 1, NULL, kc.base + 100, kc.thr, kc.scale);
        lb_dropout_apply_at(g3, n, &d, 5, 100, 0.2f);
        attn_row_bwd(g3, ref, n);
        for (int c = 0; c < n; c++) {
            double e = fmax(fabs((double)g1[c] - g3[c]), fabs((double)g2[c] - g3[c]));
            if (e > e_bwd) e_bwd = e;
        }
        free(row), free(br), free(a), free(pd), free(ref), free(km), free(g), free(g1), free(g2), free(g3);
    }
    EXPECTF(e_fwd < 1e-7 && e_bwd < 1e-6 && bad_pd == 0, "row fwd %.2e bwd %.2e, %d dropped values differ",
            e_fwd, e_bwd, bad_pd);
}
#endif

int main(void) {
    RUN(test_attention_against_reference);
    RUN(test_attention_thread_independent);
    RUN(test_rms_against_reference);
    RUN(test_drop_add_masks);
    RUN(test_activations_against_reference);
    RUN(test_xent_against_reference);
    RUN(test_fused_equal_separate);
#ifdef LB_VEC
    RUN(test_avx512_kernels);
#endif
    TH_DONE();
}
