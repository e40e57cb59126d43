// bf16 products (gemm_bf16.h) against references in double: every entry point on odd
// shapes and on the T5-small shapes, with and without accumulation (beta = 1). Two
// references per product: the double product of the fp32 inputs (the bf16 path must be
// within ~1e-2 relative Frobenius error of it) and the double product of the inputs
// rounded to bf16 (the path must match it to fp32 summation error: this one fails on any
// wrong index, transposition or rounding mode). The CPU flags are
// checked against /proc/cpuinfo. On a CPU without bf16 products each test says why it
// skips.
#include <stdint.h>

#include "cpu.h"
#include "gemm_bf16.h"
#include "harness.h"
#include "linear.h"
#include "util.h"

static uint64_t rng = 7;

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

// The flags agree with the kernel's view in /proc/cpuinfo, and imply one another.
static void test_cpu_flags(void) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
    EXPECT(!c.amx_bf16 || c.amx_tile);
    EXPECT(!c.avx512_bf16 || c.avx512f);
    EXPECT(!c.amx_perm || c.amx_tile);
    EXPECT(strlen(lb_cpu_kernel_path(&c, 0)) > 0);
    EXPECT(!strncmp(lb_cpu_kernel_path(&c, 0), "fp32", 4));
    const char *path = lb_cpu_kernel_path(&c, 1);
    EXPECT(lb_cpu_bf16_level(&c) == 2 ? strstr(path, "amx") != NULL
                                      : lb_cpu_bf16_level(&c) == 1 ? strstr(path, "avx512-bf16") != NULL
                                                                   : !strncmp(path, "fp32", 4));
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f) && strncmp(line, "flags", 5)) {}
    fclose(f);
    strcat(line, " ");
    int has_avx512f = strstr(line, " avx512f ") != NULL, has_bf16 = strstr(line, " avx512_bf16 ") != NULL;
    int has_amx = strstr(line, " amx_bf16 ") != NULL && strstr(line, " amx_tile ") != NULL;
    EXPECTF(c.avx512f == has_avx512f, "avx512f: cpuid %d, /proc/cpuinfo %d", c.avx512f, has_avx512f);
    EXPECTF(c.avx512_bf16 == has_bf16, "avx512_bf16: cpuid %d, /proc/cpuinfo %d", c.avx512_bf16, has_bf16);
    EXPECTF(c.amx_bf16 == has_amx, "amx_bf16: cpuid %d, /proc/cpuinfo %d", c.amx_bf16, has_amx);
    printf("     cpu: avx512f %d avx512_bf16 %d amx_bf16 %d (permission %d): %s\n", c.avx512f,
           c.avx512_bf16, c.amx_bf16, c.amx_perm, path);
}

// lb_bf16_from_f32 rounds as lb_f32_to_bf16 does (nearest, ties to even), bit for bit,
// ties and specials included.
static void test_convert(void) {
    size_t n = 10007;
    float *x = rand_f(n, 3);
    uint32_t spec[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f800000u, 0xff800000u,
                       0x00000000u, 0x80000000u, 0x7f7fffffu, 0x3f7fffffu};
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) memcpy(&x[i], &spec[i], 4);
    uint16_t *h = xmalloc(2 * n);
    lb_bf16_from_f32(x, n, h);
    size_t bad = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (h[i] != lb_f32_to_bf16(x[i])) bad++, first = first < i ? first : i;
    EXPECTF(bad == 0, "%zu of %zu differ, first at %zu: %04x vs %04x", bad, n, first,
            first < n ? h[first] : 0, first < n ? lb_f32_to_bf16(x[first]) : 0);
    free(x);
    free(h);
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
        EXPECT(lb_bf16w_backward_dx(w, N, y, x, 0) == -1);  // not packed for it
        EXPECT(lb_bf16w_forward(w, N, x, y, 0) == 0);
        check("forward", N, O, y, lo, ti, NULL);
        lb_bf16_from_f32(x, (size_t)N * I, x16);
        EXPECT(lb_bf16w_forward_bf16(w, N, x16, y2, 0) == 0);
        EXPECTF(!memcmp(y, y2, sizeof(float) * N * O), "forward_bf16 differs from forward");
        memcpy(y, y0, sizeof(float) * N * O);
        EXPECT(lb_bf16w_forward(w, N, x, y, 1) == 0);
        check("forward accum", N, O, y, lo, ti, y0);
        memcpy(y2, y0, sizeof(float) * N * O);
        EXPECT(lb_bf16w_forward_bf16(w, N, x16, y2, 1) == 0);
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
        EXPECT(lb_bf16w_backward_dx(w, N, dy, dx, 0) == 0);
        check("dx", N, I, dx, lo, ti, NULL);
        memcpy(dx, dx0, sizeof(float) * N * I);
        EXPECT(lb_bf16w_backward_dx(w, N, dy, dx, 1) == 0);
        check("dx accum", N, I, dx, lo, ti, dx0);
        for (size_t i = 0; i < (size_t)O * I; i++) W16[i] = lb_f32_to_bf16(W[i]);
        lb_bf16w_t *w16 = lb_bf16w_pack_bf16(W16, O, I, LB_BF16W_BWD, &err);
        EXPECTF(w16 != NULL, "%s", err.msg);
        if (w16) {
            memcpy(dx2, dx0, sizeof(float) * N * I);
            EXPECT(lb_bf16w_backward_dx(w16, N, dy, dx2, 1) == 0);
            EXPECTF(!memcmp(dx, dx2, sizeof(float) * N * I), "packed from bf16 differs from packed from fp32");
            EXPECT(lb_bf16w_forward(w16, N, dy, dx2, 0) == -1);  // not packed for it
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
        EXPECT(lb_bf16_gemm_dw(N, O, I, dy, x, g, 0) == 0);
        check("dW", O, I, g, lo, ti, NULL);
        memcpy(g, g0, sizeof(float) * O * I);
        EXPECT(lb_bf16_gemm_dw(N, O, I, dy, x, g, 1) == 0);
        check("dW accum", O, I, g, lo, ti, g0);
        EXPECT(lb_bf16_gemm_dw(0, O, I, dy, x, g, 1) == 0);
        check("dW accum N=0", O, I, g, lo, ti, g0);
        EXPECT(lb_bf16_gemm_dw(0, O, I, dy, x, g, 0) == 0);
        double z = 0;
        for (size_t i = 0; i < (size_t)O * I; i++) z = fmax(z, fabs(g[i]));
        EXPECT(z == 0);
        free(dy), free(x), free(g0), free(g), free(lo), free(ti);
    }
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
    EXPECT(lb_bf16_gemm_dw(2, 2, 2, W, W, y, 0) == -1 && y[0] == 7);
}

int main(void) {
    lb_set_threads(2);
    char impl[64];
    lb_bf16_impl_name(64, 512, 512, impl, sizeof impl);
    printf("     oneDNN kernel for 64x512x512: %s\n", impl);
    RUN(test_cpu_flags);
    RUN(test_convert);
    RUN(test_forward);
    RUN(test_backward_dx);
    RUN(test_weight_grad);
    RUN(test_unavailable);
    TH_DONE();
}
