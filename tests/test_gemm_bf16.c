// bf16 products (gemm_bf16.h) against references in double: every entry point on odd
// shapes and on the T5-small shapes, with and without accumulation (beta = 1). Two
// references per product: the double product of the fp32 inputs (the bf16 path must be
// within ~1e-2 relative Frobenius error of it) and the double product of the inputs
// rounded to bf16 (the path must match it to fp32 summation error: this one fails on any
// wrong index, transposition or rounding mode). Then linear_t with a packed weight against
// the fp32 linear, forward and backward, with a LoRA adapter attached. Products run both on
// an OpenMP team (no pool) and split over the engine's pool. The CPU flags are checked
// against the compiler's CPUID decoder. On a CPU without bf16 products (or under valgrind,
// whose virtual CPU has no AVX-512) each test says why it skips, and test_unavailable
// checks that every entry point refuses.
#include <stdint.h>

#include "cpu.h"
#include "gemm_bf16.h"
#include "harness.h"
#include "linear.h"
#include "util.h"

static uint64_t rng = 7;
static lb_pool_t *pool;  // products run on it, or with NULL on an OpenMP team (both tested)

static float *rand_f(size_t n, double s) {
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)((lb_rng_uniform(&rng) * 2 - 1) * s);
    return x;
}

static float r16(float x) { return lb_bf16_to_f32(lb_f32_to_bf16(x)); }

// C [M, N] = A·B in double, A read at a[i·as0 + k·as1], B at b[k·bs0 + j·bs1]; round = 1
// rounds every input to bf16 first.
static double *ref_mm(int M, int N, int K, const float *a, long as0, long as1, const float *b,
                      long bs0, long bs1, int round) {
    double *c = xcalloc((size_t)M * N, sizeof(double));
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float av = a[i * as0 + k * as1];
            double ak = round ? r16(av) : av;
            for (int j = 0; j < N; j++) {
                float bv = b[k * bs0 + j * bs1];
                c[(size_t)i * N + j] += ak * (round ? r16(bv) : bv);
            }
        }
    return c;
}

// ‖got − (c0 + ref)‖_F / ‖c0 + ref‖_F, c0 NULL = 0.
static double frob(const float *got, const double *ref, const float *c0, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r = ref[i] + (c0 ? c0[i] : 0);
        num += (got[i] - r) * (got[i] - r);
        den += r * r;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int have_bf16(const char *test) {
    char why[256];
    if (lb_bf16_available(NULL, why, sizeof why)) return 1;
    printf("skip %s: %s\n", test, why);
    return 0;
}

#define LOOSE 1e-2  // bf16 inputs against fp32 inputs
#define TIGHT 2e-6  // against the same bf16 inputs in double: fp32 summation only

// The flags agree with the compiler's own CPUID decoder (__builtin_cpu_supports: the same
// CPU as this process sees, so also under valgrind, whose virtual CPU has no AVX-512),
// every flag reported is one the kernel lists in /proc/cpuinfo, and they imply one another.
static void test_cpu_flags(void) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
    EXPECT(!c.amx_bf16 || c.amx_tile);
    EXPECT(!c.avx512_bf16 || c.avx512f);
    EXPECT(!c.amx_perm || c.amx_tile);
    EXPECT(!strncmp(lb_cpu_kernel_path(&c, 0), "fp32", 4));
    const char *path = lb_cpu_kernel_path(&c, 1);
    EXPECT(lb_cpu_bf16_level(&c) == 2 ? strstr(path, "amx") != NULL
                                      : lb_cpu_bf16_level(&c) == 1 ? strstr(path, "avx512-bf16") != NULL
                                                                   : !strncmp(path, "fp32", 4));
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    EXPECTF(c.avx512f == !!__builtin_cpu_supports("avx512f"), "avx512f: ours %d", c.avx512f);
    EXPECTF(c.avx512_bf16 == !!__builtin_cpu_supports("avx512bf16"), "avx512_bf16: ours %d", c.avx512_bf16);
#endif
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[8192] = "";
        while (fgets(line, sizeof line, f) && strncmp(line, "flags", 5)) {}
        fclose(f);
        strcat(line, " ");
        EXPECT(!c.avx512f || strstr(line, " avx512f "));
        EXPECT(!c.avx512_bf16 || strstr(line, " avx512_bf16 "));
        EXPECT(!c.amx_bf16 || (strstr(line, " amx_bf16 ") && strstr(line, " amx_tile ")));
    }
    printf("     cpu: avx512f %d avx512_bf16 %d amx_bf16 %d (permission %d): %s\n", c.avx512f,
           c.avx512_bf16, c.amx_bf16, c.amx_perm, path);
}

// lb_bf16_from_f32 rounds as lb_f32_to_bf16 does (nearest, ties to even), bit for bit,
// ties and specials included.
static void test_convert(void) {
    size_t sizes[2] = {10007, 64 * 10007};  // the second is split over the pool
    for (int t = 0; t < 2; t++) {
        size_t n = sizes[t];
        float *x = rand_f(n, 3);
        uint32_t spec[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f800000u, 0xff800000u,
                           0x00000000u, 0x80000000u, 0x7f7fffffu, 0x3f7fffffu,
                           0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x7fffffffu,  // NaNs
                           0x00012345u, 0x80008000u, 0x00018000u};              // subnormals
        // at the end (the scalar tail of the first size) and at the start (vector lanes)
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            memcpy(&x[n - 1 - i], &spec[i], 4);
            memcpy(&x[i], &spec[i], 4);
        }
        uint16_t *h = xmalloc(2 * n);
        lb_bf16_from_f32(pool, x, n, h);
        size_t bad = 0, first = n;
        for (size_t i = 0; i < n; i++)
            if (h[i] != lb_f32_to_bf16(x[i])) bad++, first = first < i ? first : i;
        EXPECTF(bad == 0, "%zu of %zu differ, first at %zu: %04x vs %04x", bad, n, first,
                first < n ? h[first] : 0, first < n ? lb_f32_to_bf16(x[first]) : 0);
        free(x);
        free(h);
    }
}

static void check(const char *what, int M, int N, const float *got, const double *loose,
                  const double *tight, const float *c0) {
    size_t n = (size_t)M * N;
    double el = frob(got, loose, c0, n), et = frob(got, tight, c0, n);
    EXPECTF(el < LOOSE, "%s [%d, %d]: %.3g against fp32 inputs", what, M, N, el);
    EXPECTF(et < TIGHT, "%s [%d, %d]: %.3g against the same bf16 inputs", what, M, N, et);
}

static const int shapes[][3] = {  // N, I, O
    {37, 70, 130}, {1, 33, 17}, {5, 512, 384}, {96, 512, 384}, {64, 1024, 512},
    {80, 512, 1024}, {64, 384, 512}, {17, 512, 4096}};

// forward (fp32 x and bf16 x), accum 0 and 1.
static void test_forward(void) {
    if (!have_bf16("test_forward")) return;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        float *x = rand_f((size_t)N * I, 1), *W = rand_f((size_t)O * I, 0.1), *y0 = rand_f((size_t)N * O, 1);
        float *y = xmalloc(sizeof(float) * N * O), *y2 = xmalloc(sizeof(float) * N * O);
        uint16_t *x16 = xmalloc(2 * (size_t)N * I);
        double *lo = ref_mm(N, O, I, x, I, 1, W, 1, I, 0), *ti = ref_mm(N, O, I, x, I, 1, W, 1, I, 1);
        lb_err_t err = {0};
        lb_bf16w_t *w = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD, &err);
        EXPECTF(w != NULL, "%s", err.msg);
        if (!w) return;
        EXPECT(lb_bf16w_bytes(w) >= (size_t)O * I * 2);
        EXPECT(lb_bf16w_backward_dx(pool, w, N, y, x, 0) == -1);  // not packed for it
        EXPECT(lb_bf16w_forward(pool, w, N, x, y, 0) == 0);
        check("forward", N, O, y, lo, ti, NULL);
        lb_bf16_from_f32(pool, x, (size_t)N * I, x16);
        EXPECT(lb_bf16w_forward_bf16(pool, w, N, x16, y2, 0) == 0);
        EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "forward_bf16 differs from forward");
        memcpy(y, y0, sizeof(float) * N * O);
        EXPECT(lb_bf16w_forward(pool, w, N, x, y, 1) == 0);
        check("forward accum", N, O, y, lo, ti, y0);
        memcpy(y2, y0, sizeof(float) * N * O);
        EXPECT(lb_bf16w_forward_bf16(pool, w, N, x16, y2, 1) == 0);
        check("forward_bf16 accum", N, O, y2, lo, ti, y0);
        lb_bf16w_free(w);
        free(x), free(W), free(y0), free(y), free(y2), free(x16), free(lo), free(ti);
    }
}

// dx (+)= dy·W, and a weight packed from bf16 values gives the same bits as one packed
// from the same values in fp32.
static void test_backward_dx(void) {
    if (!have_bf16("test_backward_dx")) return;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        float *dy = rand_f((size_t)N * O, 1), *W = rand_f((size_t)O * I, 0.1), *dx0 = rand_f((size_t)N * I, 1);
        float *dx = xmalloc(sizeof(float) * N * I), *dx2 = xmalloc(sizeof(float) * N * I);
        uint16_t *W16 = xmalloc(2 * (size_t)O * I);
        double *lo = ref_mm(N, I, O, dy, O, 1, W, I, 1, 0), *ti = ref_mm(N, I, O, dy, O, 1, W, I, 1, 1);
        lb_err_t err = {0};
        lb_bf16w_t *w = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD | LB_BF16W_BWD, &err);
        EXPECTF(w != NULL, "%s", err.msg);
        if (!w) return;
        EXPECT(lb_bf16w_backward_dx(pool, w, N, dy, dx, 0) == 0);
        check("dx", N, I, dx, lo, ti, NULL);
        memcpy(dx, dx0, sizeof(float) * N * I);
        EXPECT(lb_bf16w_backward_dx(pool, w, N, dy, dx, 1) == 0);
        check("dx accum", N, I, dx, lo, ti, dx0);
        // dy rounded by the caller: the same bits
        uint16_t *dy16 = xmalloc(2 * (size_t)N * O);
        lb_bf16_from_f32(pool, dy, (size_t)N * O, dy16);
        memcpy(dx2, dx0, sizeof(float) * N * I);
        EXPECT(lb_bf16w_backward_dx_bf16(pool, w, N, dy16, dx2, 1) == 0);
        EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "backward_dx_bf16 differs from backward_dx");
        free(dy16);
        for (size_t i = 0; i < (size_t)O * I; i++) W16[i] = lb_f32_to_bf16(W[i]);
        lb_bf16w_t *w16 = lb_bf16w_pack_bf16(W16, O, I, LB_BF16W_BWD, &err);
        EXPECTF(w16 != NULL, "%s", err.msg);
        if (w16) {
            memcpy(dx2, dx0, sizeof(float) * N * I);
            EXPECT(lb_bf16w_backward_dx(pool, w16, N, dy, dx2, 1) == 0);
            EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "packed from bf16 differs from packed from fp32");
            EXPECT(lb_bf16w_forward(pool, w16, N, dy, dx2, 0) == -1);  // not packed for it
        }
        lb_bf16w_free(w16);
        lb_bf16w_free(w);
        free(dy), free(W), free(dx0), free(dx), free(dx2), free(W16), free(lo), free(ti);
    }
}

// dW (+)= dyᵀ·x, N = 0 included (an empty sum).
static void test_weight_grad(void) {
    if (!have_bf16("test_weight_grad")) return;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], I = shapes[s][1], O = shapes[s][2];
        if ((size_t)O * I > 600000) continue;  // the reference would be slow
        float *dy = rand_f((size_t)N * O, 1), *x = rand_f((size_t)N * I, 1), *g0 = rand_f((size_t)O * I, 1);
        float *g = xmalloc(sizeof(float) * O * I);
        double *lo = ref_mm(O, I, N, dy, 1, O, x, I, 1, 0), *ti = ref_mm(O, I, N, dy, 1, O, x, I, 1, 1);
        EXPECT(lb_bf16_gemm_dw(pool, N, O, I, dy, x, g, 0) == 0);
        check("dW", O, I, g, lo, ti, NULL);
        memcpy(g, g0, sizeof(float) * O * I);
        EXPECT(lb_bf16_gemm_dw(pool, N, O, I, dy, x, g, 1) == 0);
        check("dW accum", O, I, g, lo, ti, g0);
        // dy and x rounded by the caller: the same bits
        uint16_t *dy16 = xmalloc(2 * (size_t)N * O + 2), *x16 = xmalloc(2 * (size_t)N * I + 2);
        lb_bf16_from_f32(pool, dy, (size_t)N * O, dy16);
        lb_bf16_from_f32(pool, x, (size_t)N * I, x16);
        float *g2 = xmalloc(sizeof(float) * O * I);
        memcpy(g2, g0, sizeof(float) * O * I);
        EXPECT(lb_bf16_gemm_dw16(pool, N, O, I, NULL, dy16, NULL, x16, g2, 1) == 0);
        EXPECTF(!memcmp(g, g2, sizeof(float) * O * I), "gemm_dw16 from bf16 dy, x differs from gemm_dw");
        memcpy(g2, g0, sizeof(float) * O * I);
        EXPECT(lb_bf16_gemm_dw16(pool, N, O, I, dy, NULL, NULL, x16, g2, 1) == 0);
        EXPECTF(!memcmp(g, g2, sizeof(float) * O * I), "gemm_dw16 from bf16 x differs from gemm_dw");
        free(dy16), free(x16), free(g2);
        EXPECT(lb_bf16_gemm_dw(pool, 0, O, I, dy, x, g, 1) == 0);
        check("dW accum N=0", O, I, g, lo, ti, g0);
        EXPECT(lb_bf16_gemm_dw(pool, 0, O, I, dy, x, g, 0) == 0);
        double z = 0;
        for (size_t i = 0; i < (size_t)O * I; i++) z = fmax(z, fabs(g[i]));
        EXPECT(z == 0);
        free(dy), free(x), free(g0), free(g), free(lo), free(ti);
    }
}

// lb_bf16_gemm, the attention core's products: each of the four transpositions, strided
// operands and output (a head's slice of [T, H·K]), accumulation, against the product of
// the rounded values in double; columns of C outside the slice stay as they were.
static void test_small_gemm(void) {
    if (!have_bf16("test_small_gemm")) return;
    const int dims[][3] = {{37, 19, 5}, {64, 64, 64}, {256, 64, 256}, {1, 1, 1}};  // M, N, K
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = dims[d][0], N = dims[d][1], K = dims[d][2];
                long lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                float *a = rand_f(na, 1), *b = rand_f(nb, 1), *c0 = rand_f(nc, 1), *c = xmalloc(sizeof(float) * nc);
                uint16_t *a16 = xmalloc(2 * na), *b16 = xmalloc(2 * nb);
                for (size_t i = 0; i < na; i++) a16[i] = lb_f32_to_bf16(a[i]);
                for (size_t i = 0; i < nb; i++) b16[i] = lb_f32_to_bf16(b[i]);
                double *ref = ref_mm(M, N, K, a, ta ? 1 : lda, ta ? lda : 1, b, tb ? 1 : ldb, tb ? ldb : 1, 1);
                for (int accum = 0; accum < 2; accum++) {
                    memcpy(c, c0, sizeof(float) * nc);
                    EXPECT(lb_bf16_gemm(ta, tb, M, N, K, a16, lda, b16, ldb, c, ldc, accum) == 0);
                    double num = 0, den = 0;
                    int outside = 1;
                    for (int i = 0; i < M; i++) {
                        for (int j = 0; j < N; j++) {
                            double r = ref[(size_t)i * N + j] + (accum ? c0[(size_t)i * ldc + j] : 0);
                            double e = c[(size_t)i * ldc + j] - r;
                            num += e * e, den += r * r;
                        }
                        for (long j = N; j < ldc; j++) outside &= c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j];
                    }
                    EXPECTF(sqrt(num / den) < 1e-5 && outside, "%dx%dx%d ta %d tb %d accum %d: %.2e%s", M, N, K, ta, tb,
                            accum, sqrt(num / den), outside ? "" : ", wrote outside C");
                }
                free(a), free(b), free(c0), free(c), free(a16), free(b16), free(ref);
            }
}

// The attention core's products of a FLAN-T5-small step (encoder self, decoder self and
// cross attention: q·kᵀ, P·v and the backward's four, as t5_ops.c calls them) make their
// primitives on the first head and reuse them on every later one: a cache that evicted
// one shape for another made a third of a step's products anew.
static void test_gemm_primitive_cache(void) {
    if (!have_bf16("test_gemm_primitive_cache")) return;
    const int tqk[][2] = {{256, 256}, {64, 64}, {64, 256}};
    enum { DK = 64, LD = 384 };
    uint16_t *a = xcalloc(256 * LD, 2), *b = xcalloc(256 * LD, 2);
    float *c = xcalloc(256 * LD, sizeof(float));
    long made[3];
    for (int round = 0; round < 3; round++) {
        for (size_t s = 0; s < sizeof tqk / sizeof tqk[0]; s++) {
            int tq = tqk[s][0], tk = tqk[s][1];
            for (int head = 0; head < 6; head++) {
                int ok = lb_bf16_gemm(0, 1, tq, tk, DK, a, LD, b, LD, c, tk, 0) == 0;     // q·kᵀ
                ok &= lb_bf16_gemm(0, 0, tq, DK, tk, a, tk, b, LD, c, LD, 0) == 0;        // P·v
                ok &= lb_bf16_gemm(1, 0, tk, DK, tq, a, tk, b, DK, c, LD, 0) == 0;        // dv = Pᵀ·dctx
                ok &= lb_bf16_gemm(0, 1, tq, tk, DK, a, DK, b, LD, c, tk, 0) == 0;        // dP = dctx·vᵀ
                ok &= lb_bf16_gemm(0, 0, tq, DK, tk, a, tk, b, LD, c, DK, 0) == 0;        // dq = dS·k
                ok &= lb_bf16_gemm(1, 0, tk, DK, tq, a, tk, b, LD, c, DK, 0) == 0;        // dk = dSᵀ·q
                EXPECTF(ok, "round %d, %dx%d head %d: a product failed", round, tq, tk, head);
            }
        }
        made[round] = lb_bf16_primitives_made();
    }
    EXPECTF(made[1] == made[0] && made[2] == made[0], "primitives made after each round: %ld, %ld, %ld",
            made[0], made[1], made[2]);
    free(a), free(b), free(c);
}

// Without bf16 hardware every entry point refuses and writes nothing.
static void test_unavailable(void) {
    char why[256];
    if (lb_bf16_available(NULL, why, sizeof why)) {
        printf("     (bf16 available: the refusal path is not reachable here)\n");
        return;
    }
    EXPECT(strlen(why) > 10);
    float W[6] = {1, 2, 3, 4, 5, 6}, y[4] = {7, 7, 7, 7};
    lb_err_t err = {0};
    EXPECT(lb_bf16w_pack_f32(W, 2, 3, LB_BF16W_FWD, &err) == NULL && err.msg[0]);
    EXPECT(lb_bf16_gemm_dw(NULL, 2, 2, 2, W, W, y, 0) == -1 && y[0] == 7);
    uint16_t a16[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
    EXPECT(lb_bf16_gemm(0, 0, 2, 2, 2, a16, 2, a16, 2, y, 2, 0) == -1 && y[0] == 7);
    linear_t l = {.name = "lin", .in = 3, .out = 2, .W = &(lb_param_t){.w = W}};
    EXPECT(linear_pack_bf16(&l, LINEAR_BF16_FWD, &err) == -1 && !l.w_bf16 && !l.bf16);
}

// A linear with a packed W (FWD | BWD) and a LoRA adapter against the same linear in fp32:
// y, dx, dA, dB within bf16 tolerance; with LINEAR_BF16_DW on a trainable W, dW too.
static void test_linear(void) {
    if (!have_bf16("test_linear")) return;
    const int N = 45, I = 96, O = 160, R = 4;
    float *W = rand_f((size_t)O * I, 0.1), *x = rand_f((size_t)N * I, 1), *dy = rand_f((size_t)N * O, 1);
    float *A = rand_f((size_t)R * I, 0.1), *B = rand_f((size_t)O * R, 0.1);
    lb_param_t pw = {.name = "lin.weight", .ndim = 2, .shape = {O, I}, .numel = (size_t)O * I, .w = W};
    linear_t lf = {.name = "lin", .in = I, .out = O, .W = &pw};
    float *dAf = xcalloc((size_t)R * I, 4), *dBf = xcalloc((size_t)O * R, 4);
    float *dAh = xcalloc((size_t)R * I, 4), *dBh = xcalloc((size_t)O * R, 4);
    linear_t lh = lf;
    linear_set_lora(&lf, R, 2.0f, 0, A, B, dAf, dBf);
    linear_set_lora(&lh, R, 2.0f, 0, A, B, dAh, dBh);
    lb_err_t err = {0};
    EXPECTF(linear_pack_bf16(&lh, LINEAR_BF16_FWD | LINEAR_BF16_BWD, &err) == 0, "%s", err.msg);
    EXPECT(lh.w_bf16 != NULL && lh.bf16 == (LINEAR_BF16_FWD | LINEAR_BF16_BWD));
    float *yf = xmalloc(4 * (size_t)N * O), *yh = xmalloc(4 * (size_t)N * O);
    float *xaf = xmalloc(4 * (size_t)N * R), *xah = xmalloc(4 * (size_t)N * R);
    float *dxf = xmalloc(4 * (size_t)N * I), *dxh = xmalloc(4 * (size_t)N * I);
    lb_drop_t d = {1, 1, 0};
    linear_forward(&lf, N, x, yf, xaf, NULL, &d, 0);
    linear_forward(&lh, N, x, yh, xah, NULL, &d, 0);
    EXPECT_CLOSE("y", yh, yf, (size_t)N * O, 1e-2);
    EXPECT(th_rel_err(yh, yf, (size_t)N * O) > 0);  // the bf16 path did run
    uint16_t *x16 = xmalloc(2 * (size_t)N * I);
    lb_bf16_from_f32(pool, x, (size_t)N * I, x16);
    float *y2 = xmalloc(4 * (size_t)N * O);
    linear_forward_pool(&lh, pool, N, x, x16, y2, xah, NULL, &d, 0);
    EXPECT_CLOSE("y on the pool, x16 given", y2, yf, (size_t)N * O, 1e-2);
    EXPECT_CLOSE("y on the pool against y without", y2, yh, (size_t)N * O, 1e-6);
    for (int accum = 0; accum < 2; accum++) {
        for (size_t i = 0; i < (size_t)N * I; i++) dxf[i] = dxh[i] = (float)i * 1e-4f;
        linear_backward(&lf, N, x, xaf, dy, dxf, accum, NULL, &d, 0);
        linear_backward_pool(&lh, accum ? pool : NULL, N, x, xah, dy, dxh, accum, NULL, &d, 0);
        EXPECT_CLOSE("dx", dxh, dxf, (size_t)N * I, 1e-2);
    }
    EXPECT_CLOSE("dA", dAh, dAf, (size_t)R * I, 1e-2);
    EXPECT_CLOSE("dB", dBh, dBf, (size_t)O * R, 1e-5);  // dB never touches W
    // A trainable W: packing refused, LINEAR_BF16_DW accepted.
    float *gf = xcalloc((size_t)O * I, 4), *gh = xcalloc((size_t)O * I, 4);
    lb_param_t pf = pw, ph = pw;
    pf.g = gf;
    ph.g = gh;
    linear_t tf = {.name = "lin", .in = I, .out = O, .W = &pf}, th = tf;
    th.W = &ph;
    EXPECT(linear_pack_bf16(&th, LINEAR_BF16_FWD, &err) == -1 && !th.w_bf16);
    EXPECTF(linear_pack_bf16(&th, LINEAR_BF16_DW, &err) == 0, "%s", err.msg);
    EXPECT(linear_pack_bf16(&lh, LINEAR_BF16_DW, &err) == -1);  // frozen: no dW to compute
    for (int rep = 0; rep < 2; rep++) {  // accumulates
        linear_backward(&tf, N, x, NULL, dy, NULL, 0, NULL, &d, 0);
        linear_backward_pool(&th, rep ? pool : NULL, N, x, NULL, dy, NULL, 0, NULL, &d, 0);
    }
    EXPECT_CLOSE("dW", gh, gf, (size_t)O * I, 1e-2);
    EXPECT(th_rel_err(gh, gf, (size_t)O * I) > 0);
    // x given only in bf16 (x NULL, as t5.c passes o's kept ctx16): the bits of rounding x
    // here; and where dW runs in fp32 (here: unpacked) x16 is widened for it
    float *g1 = xcalloc((size_t)O * I, 4), *g2 = xcalloc((size_t)O * I, 4), *xw = xmalloc(4 * (size_t)N * I);
    lb_bf16_to_real(x16, (size_t)N * I, xw);
    for (int packed = 1; packed >= 0; packed--) {
        if (!packed) linear_unpack_bf16(&th);
        memset(g1, 0, 4 * (size_t)O * I), memset(g2, 0, 4 * (size_t)O * I);
        ph.g = g1;
        linear_backward_pool(&th, pool, N, packed ? x : xw, NULL, dy, NULL, 0, NULL, &d, 0);
        ph.g = g2;
        linear_backward16_pool(&th, pool, N, NULL, x16, NULL, dy, NULL, 0, NULL, &d, 0);
        EXPECTF(!memcmp(g1, g2, 4 * (size_t)O * I), "dW from x16 alone, %s", packed ? "bf16" : "fp32");
    }
    ph.g = gh;
    free(g1), free(g2), free(xw);
    linear_unpack_bf16(&th);
    linear_unpack_bf16(&lh);
    EXPECT(!lh.w_bf16 && !lh.bf16);
    linear_forward(&lh, N, x, yh, xah, NULL, &d, 0);  // fp32 again: the very same call
    EXPECTF(!memcmp(yh, yf, 4 * (size_t)N * O), "after unpacking, fp32 results again");
    free(W), free(x), free(dy), free(A), free(B), free(dAf), free(dBf), free(dAh), free(dBh);
    free(yf), free(yh), free(xaf), free(xah), free(dxf), free(dxh), free(x16), free(y2), free(gf), free(gh);
}

// With the LoRA dropout on, on the pool (the LoRA products then run there too): the
// same masks as the fp32 layer, so y, dx, dA and dB agree within bf16 tolerance.
static void test_linear_dropout_pool(void) {
    if (!have_bf16("test_linear_dropout_pool")) return;
    const int N = 320, I = 512, O = 416, R = 16;  // every LoRA product big enough to split
    float *W = rand_f((size_t)O * I, 0.1), *x = rand_f((size_t)N * I, 1), *dy = rand_f((size_t)N * O, 1);
    float *A = rand_f((size_t)R * I, 0.1), *B = rand_f((size_t)O * R, 0.1);
    float *dA[2], *dB[2], *y[2], *xa[2], *dx[2], *tmp = xmalloc(4 * (size_t)N * I);
    lb_param_t pw = {.w = W};
    linear_t l[2] = {{.name = "f", .in = I, .out = O, .W = &pw}, {.name = "h", .in = I, .out = O, .W = &pw}};
    lb_drop_t d = {5, 3, 1};
    for (int k = 0; k < 2; k++) {
        dA[k] = xcalloc((size_t)R * I, 4), dB[k] = xcalloc((size_t)O * R, 4);
        y[k] = xmalloc(4 * (size_t)N * O), xa[k] = xmalloc(4 * (size_t)N * R);
        dx[k] = xcalloc((size_t)N * I, 4);
        linear_set_lora(&l[k], R, 0.5f, 0.25f, A, B, dA[k], dB[k]);
    }
    lb_err_t err = {0};
    EXPECTF(linear_pack_bf16(&l[1], LINEAR_BF16_FWD | LINEAR_BF16_BWD, &err) == 0, "%s", err.msg);
    linear_forward(&l[0], N, x, y[0], xa[0], tmp, &d, 9);
    linear_forward_pool(&l[1], pool, N, x, NULL, y[1], xa[1], tmp, &d, 9);
    EXPECT_CLOSE("xa", xa[1], xa[0], (size_t)N * R, 1e-6);  // fp32 both, same masks
    EXPECT_CLOSE("y", y[1], y[0], (size_t)N * O, 1e-2);
    linear_backward(&l[0], N, x, xa[0], dy, dx[0], 1, tmp, &d, 9);
    linear_backward_pool(&l[1], pool, N, x, xa[1], dy, dx[1], 1, tmp, &d, 9);
    EXPECT_CLOSE("dx", dx[1], dx[0], (size_t)N * I, 1e-2);
    EXPECT_CLOSE("dA", dA[1], dA[0], (size_t)R * I, 1e-5);  // dA, dB never touch W
    EXPECT_CLOSE("dB", dB[1], dB[0], (size_t)O * R, 1e-5);
    linear_unpack_bf16(&l[1]);
    for (int k = 0; k < 2; k++) free(dA[k]), free(dB[k]), free(y[k]), free(xa[k]), free(dx[k]);
    free(W), free(x), free(dy), free(A), free(B), free(tmp);
}

// A bf16-held W (W->w16, as t5_frozen_weights_bf16 makes) packs from its bf16 values.
static void test_linear_w16(void) {
    if (!have_bf16("test_linear_w16")) return;
    const int N = 19, I = 64, O = 48;
    float *W = rand_f((size_t)O * I, 0.1), *x = rand_f((size_t)N * I, 1);
    uint16_t *W16 = xmalloc(2 * (size_t)O * I);
    for (size_t i = 0; i < (size_t)O * I; i++) W16[i] = lb_f32_to_bf16(W[i]), W[i] = r16(W[i]);
    lb_param_t p32 = {.w = W}, p16 = {.w16 = W16};
    linear_t a = {.name = "a", .in = I, .out = O, .W = &p32}, b = {.name = "b", .in = I, .out = O, .W = &p16};
    lb_err_t err = {0};
    EXPECTF(linear_pack_bf16(&a, LINEAR_BF16_FWD, &err) == 0, "%s", err.msg);
    EXPECTF(linear_pack_bf16(&b, LINEAR_BF16_FWD, &err) == 0, "%s", err.msg);
    float *ya = xmalloc(4 * (size_t)N * O), *yb = xmalloc(4 * (size_t)N * O);
    linear_forward(&a, N, x, ya, NULL, NULL, NULL, 0);
    linear_forward(&b, N, x, yb, NULL, NULL, NULL, 0);
    EXPECTF(!memcmp(ya, yb, 4 * (size_t)N * O), "bf16-held and fp32-held W of the same values differ");
    linear_unpack_bf16(&a);
    linear_unpack_bf16(&b);
    free(W), free(x), free(W16), free(ya), free(yb);
}

// lb_bf16w_repack_f32 (a trainable weight after an update) gives what a new packing of
// the changed values gives, bit for bit, in both orientations, through linear_pack_bf16.
static void test_repack(void) {
    if (!have_bf16("test_repack")) return;
    int N = 40, I = 512, O = 384;
    float *x = rand_f((size_t)N * I, 1), *dy = rand_f((size_t)N * O, 1);
    float *W = rand_f((size_t)O * I, 0.1), *W2 = rand_f((size_t)O * I, 0.1);
    float *y = xmalloc(sizeof(float) * N * O), *y2 = xmalloc(sizeof(float) * N * O);
    float *dx = xmalloc(sizeof(float) * N * I), *dx2 = xmalloc(sizeof(float) * N * I);
    lb_err_t err = {0};
    lb_bf16w_t *w = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD | LB_BF16W_BWD, &err);
    lb_bf16w_t *f = lb_bf16w_pack_f32(W2, O, I, LB_BF16W_FWD | LB_BF16W_BWD, &err);
    EXPECTF(w && f, "%s", err.msg);
    if (!w || !f) return;
    EXPECT(lb_bf16w_repack_f32(w, W2) == 0);
    EXPECT(lb_bf16w_forward(pool, w, N, x, y, 0) == 0 && lb_bf16w_forward(pool, f, N, x, y2, 0) == 0);
    EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "forward after repack differs from a new packing");
    EXPECT(lb_bf16w_backward_dx(pool, w, N, dy, dx, 0) == 0 && lb_bf16w_backward_dx(pool, f, N, dy, dx2, 0) == 0);
    EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "dx after repack differs from a new packing");
    EXPECT(lb_bf16w_repack_f32(NULL, W2) == -1);
    lb_bf16w_free(w);
    lb_bf16w_free(f);
    // through the layer: a trainable W packed again with the same flags keeps its buffers
    lb_param_t P = {.ndim = 2, .shape = {O, I}, .numel = (size_t)O * I, .w = W, .g = W2};
    linear_t l = {.name = "repack", .in = I, .out = O, .W = &P};
    EXPECT(linear_pack_bf16(&l, LINEAR_BF16_FWD | LINEAR_BF16_BWD | LINEAR_BF16_DW, &err) == 0);
    const lb_bf16w_t *before = l.w_bf16;
    memcpy(W, W2, sizeof(float) * O * I);  // "the update"
    EXPECT(linear_pack_bf16(&l, LINEAR_BF16_FWD | LINEAR_BF16_BWD | LINEAR_BF16_DW, &err) == 0);
    EXPECT(l.w_bf16 == before);
    f = lb_bf16w_pack_f32(W2, O, I, LB_BF16W_FWD, &err);
    EXPECT(f && lb_bf16w_forward(pool, l.w_bf16, N, x, y, 0) == 0 && lb_bf16w_forward(pool, f, N, x, y2, 0) == 0);
    EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "the layer's repacked forward differs");
    lb_bf16w_free(f);
    linear_unpack_bf16(&l);
    free(x), free(dy), free(W), free(W2), free(y), free(y2), free(dx), free(dx2);
}

// LB_BF16W_BWD_LATE: dx packed at each call from the fp32 W last given gives what the kept
// packing gives, bit for bit, also after a repack from new values; a trainable layer
// takes it (no backward packing held), a frozen one keeps its packing.
static void test_late_dx(void) {
    if (!have_bf16("test_late_dx")) return;
    int N = 40, I = 512, O = 384;
    float *dy = rand_f((size_t)N * O, 1), *W = rand_f((size_t)O * I, 0.1), *W2 = rand_f((size_t)O * I, 0.1);
    float *big = rand_f((size_t)2 * O * I, 0.1);
    float *dx = xmalloc(sizeof(float) * N * I), *dx2 = xmalloc(sizeof(float) * N * I);
    lb_err_t err = {0};
    EXPECT(lb_bf16w_pack_f32(W, O, I, LB_BF16W_BWD | LB_BF16W_BWD_LATE, &err) == NULL && err.msg[0]);
    uint16_t one = 0x3f80;
    EXPECT(lb_bf16w_pack_bf16(&one, 1, 1, LB_BF16W_BWD_LATE, &err) == NULL);
    lb_bf16w_t *late = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD | LB_BF16W_BWD_LATE, &err);
    lb_bf16w_t *kept = lb_bf16w_pack_f32(W, O, I, LB_BF16W_BWD, &err);
    lb_bf16w_t *other = lb_bf16w_pack_f32(big, 2 * O, I, LB_BF16W_BWD_LATE, &err);
    EXPECTF(late && kept && other, "%s", err.msg);
    if (!late || !kept || !other) return;
    lb_bf16w_t *fwd = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD, &err);
    EXPECT(fwd && lb_bf16w_bytes(late) == lb_bf16w_bytes(fwd) && lb_bf16w_bytes(other) == 0);  // nothing held for dx
    lb_bf16w_free(fwd);
    EXPECT(lb_bf16w_backward_dx(pool, late, N, dy, dx, 0) == 0 && lb_bf16w_backward_dx(pool, kept, N, dy, dx2, 0) == 0);
    EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "late dx differs from the kept packing's");
    // another (larger) late weight's call between: the shared buffer grows and is reused
    float *dyb = rand_f((size_t)N * 2 * O, 1);
    EXPECT(lb_bf16w_backward_dx(pool, other, N, dyb, dx2, 0) == 0);
    EXPECT(lb_bf16_late_bytes() >= (size_t)2 * O * I * 2);
    EXPECT(lb_bf16w_repack_f32(late, W2) == 0 && lb_bf16w_repack_f32(kept, W2) == 0);
    EXPECT(lb_bf16w_backward_dx(pool, late, N, dy, dx, 0) == 0 && lb_bf16w_backward_dx(pool, kept, N, dy, dx2, 0) == 0);
    EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "late dx after a repack differs from the kept packing's");
    lb_bf16w_free(late), lb_bf16w_free(kept), lb_bf16w_free(other);
    // through the layer: trainable, the backward is late; frozen, it is kept
    lb_param_t P = {.ndim = 2, .shape = {O, I}, .numel = (size_t)O * I, .w = W, .g = W2};
    linear_t l = {.name = "late", .in = I, .out = O, .W = &P};
    EXPECT(linear_pack_bf16(&l, LINEAR_BF16_FWD | LINEAR_BF16_BWD | LINEAR_BF16_DW, &err) == 0);
    EXPECT(lb_bf16w_flags(l.w_bf16) == (LB_BF16W_FWD_LATE | LB_BF16W_BWD_LATE) && lb_bf16w_bytes(l.w_bf16) == 0);
    EXPECT(linear_bf16_packs_late(&l));
    linear_unpack_bf16(&l);
    P.g = NULL;
    EXPECT(linear_pack_bf16(&l, LINEAR_BF16_FWD | LINEAR_BF16_BWD, &err) == 0);
    EXPECT(lb_bf16w_flags(l.w_bf16) == (LB_BF16W_FWD | LB_BF16W_BWD) && !linear_bf16_packs_late(&l));
    linear_unpack_bf16(&l);
    free(dy), free(W), free(W2), free(big), free(dx), free(dx2), free(dyb);
}

// LB_BF16W_FWD_LATE: the forward packed at each call from the fp32 W last given gives what
// the kept packing gives, bit for bit (fp32 and bf16 inputs, accumulating too), also after
// a repack from new values and with a larger late weight's call between; it holds nothing.
static void test_late_forward(void) {
    if (!have_bf16("test_late_forward")) return;
    int N = 40, I = 512, O = 384;
    float *x = rand_f((size_t)N * I, 1), *W = rand_f((size_t)O * I, 0.1), *W2 = rand_f((size_t)O * I, 0.1);
    float *big = rand_f((size_t)2 * O * I, 0.1), *xb = rand_f((size_t)N * I, 1);
    float *y = xmalloc(sizeof(float) * N * 2 * O), *y2 = xmalloc(sizeof(float) * N * 2 * O);
    uint16_t *x16 = xmalloc(sizeof(uint16_t) * N * I);
    lb_bf16_from_f32(pool, x, (size_t)N * I, x16);
    lb_err_t err = {0};
    EXPECT(lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD | LB_BF16W_FWD_LATE, &err) == NULL && err.msg[0]);
    uint16_t one = 0x3f80;
    EXPECT(lb_bf16w_pack_bf16(&one, 1, 1, LB_BF16W_FWD_LATE, &err) == NULL);
    lb_bf16w_t *late = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD_LATE | LB_BF16W_BWD_LATE, &err);
    lb_bf16w_t *kept = lb_bf16w_pack_f32(W, O, I, LB_BF16W_FWD, &err);
    lb_bf16w_t *other = lb_bf16w_pack_f32(big, 2 * O, I, LB_BF16W_FWD_LATE, &err);
    EXPECTF(late && kept && other, "%s", err.msg);
    if (!late || !kept || !other) return;
    EXPECT(lb_bf16w_bytes(late) == 0 && lb_bf16w_bytes(other) == 0);
    for (int round = 0; round < 2; round++) {  // then after a repack from W2
        EXPECT(lb_bf16w_forward(pool, late, N, x, y, 0) == 0 && lb_bf16w_forward(pool, kept, N, x, y2, 0) == 0);
        EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "late forward differs from the kept packing's (round %d)", round);
        EXPECT(lb_bf16w_forward(pool, other, N, xb, y2, 0) == 0);  // the shared buffer grows between
        EXPECT(lb_bf16w_forward_bf16(pool, late, N, x16, y, 0) == 0 && lb_bf16w_forward_bf16(pool, kept, N, x16, y2, 0) == 0);
        EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "late bf16-input forward differs (round %d)", round);
        EXPECT(lb_bf16w_forward(pool, late, N, x, y, 1) == 0 && lb_bf16w_forward(pool, kept, N, x, y2, 1) == 0);
        EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "late accumulating forward differs (round %d)", round);
        EXPECT(lb_bf16w_repack_f32(late, W2) == 0 && lb_bf16w_repack_f32(kept, W2) == 0);
    }
    EXPECT(lb_bf16_late_bytes() >= (size_t)2 * O * I * 2);
    EXPECT(lb_bf16w_forward(pool, late, 0, x, y, 0) == 0);  // no rows: nothing to pack
    lb_bf16w_free(late), lb_bf16w_free(kept), lb_bf16w_free(other);
    free(x), free(W), free(W2), free(big), free(xb), free(y), free(y2), free(x16);
}

int main(void) {
    lb_set_threads(2);
    char impl[64];
    lb_bf16_impl_name(64, 512, 512, impl, sizeof impl);
    printf("     oneDNN kernel for 64x512x512: %s\n", impl);
    RUN(test_cpu_flags);
    RUN(test_convert);
    RUN(test_forward);  // OpenMP team
    RUN(test_backward_dx);
    RUN(test_weight_grad);
    pool = lb_pool_new();
    RUN(test_convert);  // the same on the engine's pool
    RUN(test_forward);
    RUN(test_backward_dx);
    RUN(test_weight_grad);
    RUN(test_small_gemm);
    RUN(test_gemm_primitive_cache);
    RUN(test_unavailable);
    RUN(test_linear);
    RUN(test_linear_dropout_pool);
    RUN(test_linear_w16);
    RUN(test_repack);
    RUN(test_late_dx);
    RUN(test_late_forward);
    lb_pool_free(pool);
    TH_DONE();
}
