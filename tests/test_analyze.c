// lorabench analyze (engine/eval/analyze.c) against references computed here another way:
// ΔW formed in double from the files on disk (the adapter's safetensors and its config's
// alpha, r and use_rslora; the two models' safetensors) and its singular values from a
// one-sided Jacobi SVD written in this file. The command's --json output is what is
// checked, for every module of a plain and an rsLoRA adapter over every kind of module
// (q, k, v, o, wi_0, wi_1, wo; encoder, decoder self and cross attention) of the gated
// fixture, and for a full fine-tune made by perturbing a copy of the fixture.
#include <cJSON.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "lora.h"
#include "lora_t5.h"
#include "safetensors.h"
#include "t5.h"
#include "t5_save.h"
#include "util.h"

#define FIXTURE "tests/fixtures/hf/t5-gated-a"

static char lorabench[4096];  // the binary beside this test's build folder
static char tmp[256];

// ---- the reference ----------------------------------------------------------------------

// Singular values of the row-major m×n matrix a (overwritten) into s [n], largest first:
// Hestenes' one-sided Jacobi rotates pairs of columns until all are orthogonal; the column
// norms are then the singular values.
static void jacobi_sv(double *a, int m, int n, double *s) {
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double alpha = 0, beta = 0, gamma = 0;
                for (int i = 0; i < m; i++) {
                    double x = a[(size_t)i * n + p], y = a[(size_t)i * n + q];
                    alpha += x * x, beta += y * y, gamma += x * y;
                }
                if (gamma == 0 || fabs(gamma) <= 1e-15 * sqrt(alpha * beta)) continue;
                off = fmax(off, fabs(gamma) / sqrt(alpha * beta));
                double zeta = (beta - alpha) / (2 * gamma);
                double t = (zeta >= 0 ? 1 : -1) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double c = 1 / sqrt(1 + t * t), sn = c * t;
                for (int i = 0; i < m; i++) {
                    double x = a[(size_t)i * n + p], y = a[(size_t)i * n + q];
                    a[(size_t)i * n + p] = c * x - sn * y;
                    a[(size_t)i * n + q] = sn * x + c * y;
                }
            }
        if (off < 1e-15) break;
    }
    for (int j = 0; j < n; j++) {
        double t = 0;
        for (int i = 0; i < m; i++) t += a[(size_t)i * n + j] * a[(size_t)i * n + j];
        s[j] = sqrt(t);
    }
    for (int i = 1; i < n; i++)  // insertion sort, descending
        for (int j = i; j > 0 && s[j] > s[j - 1]; j--) {
            double t = s[j];
            s[j] = s[j - 1], s[j - 1] = t;
        }
}

// A tensor of f as doubles (numel of them, malloc'd), NULL when absent.
static double *tensor_d(const st_file_t *f, const char *name, int64_t *rows, int64_t *cols) {
    const st_tensor_t *t = st_find(f, name);
    if (!t || t->ndim != 2) return NULL;
    float *x = malloc(sizeof(float) * t->numel);
    lb_err_t err = {0};
    if (st_to_f32(t, x, &err)) {
        free(x);
        return NULL;
    }
    double *d = malloc(sizeof(double) * t->numel);
    for (size_t i = 0; i < t->numel; i++) d[i] = x[i];
    free(x);
    *rows = t->shape[0], *cols = t->shape[1];
    return d;
}

static double frob(const double *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

// The singular values of ΔW [out, in] by Jacobi, on ΔWᵀ when it has fewer columns; *k gets
// min(out, in).
static double *reference_sv(const double *dw, int out, int in, int *k) {
    int tr = in > out;  // Jacobi on the narrower side
    int m = tr ? in : out, n = tr ? out : in;
    double *a = malloc(sizeof(double) * (size_t)m * n);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double v = dw[(size_t)o * in + i];
            if (tr) a[(size_t)i * n + o] = v; else a[(size_t)o * n + i] = v;
        }
    double *s = malloc(sizeof(double) * n);
    jacobi_sv(a, m, n, s);
    free(a);
    *k = n;
    return s;
}

// ---- running the command ----------------------------------------------------------------

static cJSON *run_json(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s analyze %s --json", lorabench, args);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) abort();
            buf = nb;
        }
    }
    buf[len] = 0;
    int rc = pclose(p);
    cJSON *j = rc == 0 ? cJSON_Parse(buf) : NULL;
    if (!j) fprintf(stderr, "    `%s` exited %d with: %.300s\n", cmd, rc, buf);
    free(buf);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

// The rank-r energy of a module object.
static double energy_at(const cJSON *mo, int r) {
    char k[16];
    snprintf(k, sizeof k, "%d", r);
    return num(cJSON_GetObjectItemCaseSensitive(mo, "energy_at_rank"), k);
}

// Checks energy_at_rank: within [0, 1], never decreasing, 1 at full rank (min(in, out)).
static void check_energy(const cJSON *mo, int full_rank, const char *name) {
    double prev = 0;
    for (int r = 1; r <= 64; r *= 2) {
        double e = energy_at(mo, r);
        EXPECTF(e >= prev - 1e-12 && e <= 1 + 1e-12, "%s: energy at rank %d is %g after %g", name, r, e, prev);
        if (r >= full_rank) EXPECTF(fabs(e - 1) < 1e-9, "%s: energy at rank %d >= full rank is %g", name, r, e);
        prev = e;
    }
}

// ---- fixtures made here -----------------------------------------------------------------

static void make_adapter(const char *dir, int r, double alpha, int rslora, uint64_t seed) {
    t5_config_t cfg;
    lb_err_t err = {0};
    if (t5_config_load(&cfg, FIXTURE, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    lora_shape_t shape;
    lora_shape_from_t5(&cfg, &shape);
    lora_config_t c;
    lora_config_default(&c);
    c.r = r, c.alpha = alpha, c.rslora = rslora, c.init = LORA_INIT_RANDOM_BOTH;
    static const char *kinds[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo"};
    c.n_targets = 7;
    for (int i = 0; i < 7; i++) snprintf(c.targets[i], sizeof c.targets[i], "%s", kinds[i]);
    lora_adapter_t a;
    if (lora_create(&a, &c, &shape, &err) || lora_init(&a, seed, NULL, NULL, &err) || lora_save(&a, dir, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    lora_free(&a);
}

// ---- tests ------------------------------------------------------------------------------

// Every module of the adapter in dir against the reference; returns how many were checked.
static int check_adapter(const char *dir, int want_r, int *kinds_seen) {
    char args[1024], path[1024];
    snprintf(args, sizeof args, "--model " FIXTURE " --adapter %s", dir);
    cJSON *j = run_json(args);
    EXPECT(j != NULL);
    if (!j) return 0;
    // s from the config as PEFT reads it.
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    lb_err_t err = {0};
    size_t len;
    char *text = lb_read_file(path, &len, &err);
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    free(text);
    double alpha = num(cfg, "lora_alpha"), r = num(cfg, "r");
    int rs = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora"));
    double s = rs ? alpha / sqrt(r) : alpha / r;
    cJSON_Delete(cfg);
    EXPECT((int)r == want_r);
    st_file_t af, mf;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_open(&af, path, &err) || st_open(&mf, FIXTURE "/model.safetensors", &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        EXPECT(0);
        cJSON_Delete(j);
        return 0;
    }
    int checked = 0;
    const cJSON *mo;
    cJSON_ArrayForEach(mo, cJSON_GetObjectItemCaseSensitive(j, "modules")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(mo, "name")->valuestring;
        char an[256], bn[256], wn[256];
        snprintf(an, sizeof an, "base_model.model.%s.lora_A.weight", name);
        snprintf(bn, sizeof bn, "base_model.model.%s.lora_B.weight", name);
        snprintf(wn, sizeof wn, "%s.weight", name);
        int64_t ar, ac, br, bc, wr, wc;
        double *A = tensor_d(&af, an, &ar, &ac), *B = tensor_d(&af, bn, &br, &bc), *W = tensor_d(&mf, wn, &wr, &wc);
        EXPECTF(A && B && W, "%s: tensors in the files", name);
        if (!A || !B || !W) {
            free(A), free(B), free(W);
            continue;
        }
        int out = (int)br, in = (int)ac, rk = (int)ar;
        double *dw = calloc((size_t)out * in, sizeof(double));
        for (int o = 0; o < out; o++)
            for (int c = 0; c < in; c++) {
                double acc = 0;
                for (int q = 0; q < rk; q++) acc += B[(size_t)o * rk + q] * A[(size_t)q * in + c];
                dw[(size_t)o * in + c] = s * acc;
            }
        int k;
        double *ref = reference_sv(dw, out, in, &k);
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(mo, "singular_values");
        EXPECTF(cJSON_GetArraySize(sv) == rk, "%s: %d singular values, want r = %d", name, cJSON_GetArraySize(sv), rk);
        double worst = 0;
        for (int q = 0; q < rk && q < cJSON_GetArraySize(sv); q++)
            worst = fmax(worst, fabs(cJSON_GetArrayItem(sv, q)->valuedouble - ref[q]) / ref[q]);  // each value
        EXPECTF(worst <= 1e-5, "%s: singular values off by %.3g relative (ours %g, ref %g)", name, worst,
                cJSON_GetArrayItem(sv, 0)->valuedouble, ref[0]);
        for (int q = rk; q < k; q++) EXPECTF(ref[q] <= 1e-9 * ref[0], "%s: the reference has rank > r", name);
        double rel = frob(dw, (size_t)out * in) / frob(W, (size_t)out * in);
        EXPECTF(fabs(num(mo, "rel_norm") - rel) <= 1e-6 * rel, "%s: rel_norm %g, want %g", name, num(mo, "rel_norm"), rel);
        EXPECTF((int)num(mo, "effective_rank") == rk, "%s: effective rank %g, want %d (random A and B)", name,
                num(mo, "effective_rank"), rk);
        check_energy(mo, rk, name);
        for (int q = 0; q < 7; q++) {
            static const char *kinds[] = {".q", ".k", ".v", ".o", ".wi_0", ".wi_1", ".wo"};
            size_t nl = strlen(name), kl = strlen(kinds[q]);
            if (nl > kl && !strcmp(name + nl - kl, kinds[q])) kinds_seen[q] = 1;
        }
        checked++;
        free(ref), free(dw), free(A), free(B), free(W);
    }
    st_close(&af);
    st_close(&mf);
    cJSON_Delete(j);
    return checked;
}

static void test_lora_plain_and_rslora(void) {
    char d1[512], d2[512];
    snprintf(d1, sizeof d1, "%s/plain", tmp);
    snprintf(d2, sizeof d2, "%s/rslora", tmp);
    make_adapter(d1, 4, 8, 0, 11);
    make_adapter(d2, 8, 16, 1, 12);
    int seen[7] = {0};
    // 2 encoder blocks × 7 modules + 2 decoder blocks × 11 = 36 modules each.
    int n1 = check_adapter(d1, 4, seen), n2 = check_adapter(d2, 8, seen);
    EXPECTF(n1 == 36 && n2 == 36, "checked %d and %d modules, want 36 each", n1, n2);
    for (int q = 0; q < 7; q++) EXPECTF(seen[q], "module kind %d checked", q);
}

// φ of an adapter against itself is 1 on the diagonal; φ(a, b) is φ(b, a) transposed;
// values lie in [0, 1]; and an adapter whose A spans the same rows as another's (A' = M·A)
// has φ(r, r) = 1.
static void test_similarity(void) {
    char d1[512], d2[512], d3[512], args[2048];
    snprintf(d1, sizeof d1, "%s/plain", tmp);
    snprintf(d2, sizeof d2, "%s/rslora", tmp);
    snprintf(d3, sizeof d3, "%s/mixed", tmp);
    snprintf(args, sizeof args, "--model " FIXTURE " --adapter %s --against %s", d1, d1);
    cJSON *self = run_json(args);
    snprintf(args, sizeof args, "--model " FIXTURE " --adapter %s --against %s", d1, d2);
    cJSON *ab = run_json(args);
    snprintf(args, sizeof args, "--model " FIXTURE " --adapter %s --against %s", d2, d1);
    cJSON *ba = run_json(args);
    EXPECT(self && ab && ba);
    if (!self || !ab || !ba) goto out;
    const cJSON *ss = cJSON_GetObjectItemCaseSensitive(self, "similarity");
    EXPECT(cJSON_GetArraySize(ss) == 36);
    const cJSON *m;
    cJSON_ArrayForEach(m, ss) {
        const cJSON *phi = cJSON_GetObjectItemCaseSensitive(m, "phi");
        int n = cJSON_GetArraySize(phi);
        EXPECT(n == 4);
        for (int i = 0; i < n; i++) {
            double d = cJSON_GetArrayItem(cJSON_GetArrayItem(phi, i), i)->valuedouble;
            EXPECTF(fabs(d - 1) < 1e-9, "φ(%d, %d) of an adapter with itself is %g", i + 1, i + 1, d);
        }
    }
    const cJSON *sab = cJSON_GetObjectItemCaseSensitive(ab, "similarity"), *sba = cJSON_GetObjectItemCaseSensitive(ba, "similarity");
    EXPECT(cJSON_GetArraySize(sab) == 36 && cJSON_GetArraySize(sba) == 36);
    for (int k = 0; k < cJSON_GetArraySize(sab) && k < cJSON_GetArraySize(sba); k++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(sab, k), "phi");
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(sba, k), "phi");
        int n = cJSON_GetArraySize(p);
        EXPECT(n == 4 && cJSON_GetArraySize(q) == 4);  // min(4, 8)
        for (int i = 0; i < n; i++)
            for (int jj = 0; jj < n; jj++) {
                double x = cJSON_GetArrayItem(cJSON_GetArrayItem(p, i), jj)->valuedouble;
                double y = cJSON_GetArrayItem(cJSON_GetArrayItem(q, jj), i)->valuedouble;
                EXPECTF(fabs(x - y) < 1e-9 && x >= -1e-12 && x <= 1 + 1e-12, "φ_ab(%d,%d) = %g, φ_ba(%d,%d) = %g", i + 1,
                        jj + 1, x, jj + 1, i + 1, y);
            }
    }
    // A' = M·A with M lower triangular (1 on the diagonal, 0.5 below): the same row space.
    {
        lb_err_t err = {0};
        t5_config_t cfg;
        lora_shape_t shape;
        lora_adapter_t a;
        EXPECT(t5_config_load(&cfg, FIXTURE, &err) == 0);
        lora_shape_from_t5(&cfg, &shape);
        EXPECT(lora_load(&a, d1, &shape, &err) == 0);
        for (int i = 0; i < a.n; i++) {
            lora_module_t *lm = &a.m[i];
            for (int row = lm->r - 1; row > 0; row--)
                for (int c = 0; c < lm->in; c++)
                    for (int q = 0; q < row; q++) lm->A[(size_t)row * lm->in + c] += 0.5f * lm->A[(size_t)q * lm->in + c];
        }
        EXPECT(lora_save(&a, d3, &err) == 0);
        lora_free(&a);
    }
    cJSON_Delete(ab);
    snprintf(args, sizeof args, "--model " FIXTURE " --adapter %s --against %s", d1, d3);
    ab = run_json(args);
    EXPECT(ab != NULL);
    if (ab) {
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(ab, "similarity")) {
            const cJSON *phi = cJSON_GetObjectItemCaseSensitive(m, "phi");
            double x = cJSON_GetArrayItem(cJSON_GetArrayItem(phi, 3), 3)->valuedouble;
            double y = cJSON_GetArrayItem(cJSON_GetArrayItem(phi, 0), 0)->valuedouble;
            EXPECTF(fabs(x - 1) < 1e-6, "φ(4, 4) of two A with one row space is %g", x);
            EXPECTF(y < 1 - 1e-3, "φ(1, 1) of A and a mixed A is %g (the top directions should move)", y);
        }
    }
out:
    cJSON_Delete(self), cJSON_Delete(ab), cJSON_Delete(ba);
}

// A full fine-tune: the fixture with a rank-2 change in encoder block 0's q and random
// noise on decoder block 1's wo, every other weight unchanged.
static void test_full_finetune(void) {
    char dir[512], args[1024];
    snprintf(dir, sizeof dir, "%s/full", tmp);
    lb_err_t err = {0};
    t5_model_t m;
    EXPECT(t5_load(&m, FIXTURE, &err) == 0);
    t5_set_trainable(&m, t5_pred_all, NULL);
    uint64_t rng = 5;
    linear_t *q = t5_find_linear(&m, "encoder.block.0.layer.0.SelfAttention.q");
    linear_t *wo = t5_find_linear(&m, "decoder.block.1.layer.2.DenseReluDense.wo");
    EXPECT(q && wo);
    double u[2][64], v[2][64];
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 64; i++) u[k][i] = lb_rng_normal(&rng), v[k][i] = lb_rng_normal(&rng);
    for (int o = 0; o < q->out; o++)
        for (int i = 0; i < q->in; i++) q->W->w[(size_t)o * q->in + i] += (float)(0.05 * (u[0][o] * v[0][i] + 0.5 * u[1][o] * v[1][i]));
    for (size_t i = 0; i < wo->W->numel; i++) wo->W->w[i] += (float)(0.01 * lb_rng_normal(&rng));
    EXPECT(t5_save(&m, FIXTURE, dir, &err) == 0);
    t5_free(&m);
    snprintf(args, sizeof args, "--model " FIXTURE " --finetuned %s", dir);
    cJSON *j = run_json(args);
    EXPECT(j != NULL);
    if (!j) return;
    EXPECT(!strcmp(cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring, "full"));
    st_file_t bf, tf;
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    EXPECT(st_open(&bf, FIXTURE "/model.safetensors", &err) == 0 && st_open(&tf, path, &err) == 0);
    int n = 0, changed = 0;
    const cJSON *mo;
    cJSON_ArrayForEach(mo, cJSON_GetObjectItemCaseSensitive(j, "modules")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(mo, "name")->valuestring;
        char wn[256];
        snprintf(wn, sizeof wn, "%s.weight", name);
        int64_t r1, c1, r2, c2;
        double *wb = tensor_d(&bf, wn, &r1, &c1), *wt = tensor_d(&tf, wn, &r2, &c2);
        EXPECTF(wb && wt, "%s in both files", name);
        n++;
        if (!wb || !wt) {
            free(wb), free(wt);
            continue;
        }
        size_t numel = (size_t)r1 * c1;
        for (size_t i = 0; i < numel; i++) wt[i] -= wb[i];
        int k;
        double *ref = reference_sv(wt, (int)r1, (int)c1, &k);
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(mo, "singular_values");
        EXPECTF(cJSON_GetArraySize(sv) == k, "%s: %d singular values, want %d", name, cJSON_GetArraySize(sv), k);
        double worst = 0;
        for (int i = 0; i < k && i < cJSON_GetArraySize(sv); i++)
            worst = fmax(worst, fabs(cJSON_GetArrayItem(sv, i)->valuedouble - ref[i]) / (ref[0] > 0 ? ref[0] : 1));
        EXPECTF(worst <= 1e-5, "%s: singular values off by %.3g relative", name, worst);
        check_energy(mo, k, name);
        if (ref[0] > 0) changed++;
        if (!strcmp(name, "encoder.block.0.layer.0.SelfAttention.q")) {
            // rank 2 up to the fp32 rounding of W + ΔW
            EXPECTF((int)num(mo, "effective_rank") == 2, "rank-2 change: effective rank %g", num(mo, "effective_rank"));
            EXPECTF(energy_at(mo, 2) > 1 - 1e-6 && energy_at(mo, 1) < 0.95, "rank-2 change: energy %g at 1, %g at 2",
                    energy_at(mo, 1), energy_at(mo, 2));
        }
        if (!strcmp(name, "decoder.block.1.layer.2.DenseReluDense.wo"))
            EXPECTF(num(mo, "effective_rank") > 32 && energy_at(mo, 16) < 0.9, "noise: effective rank %g, energy at 16 %g",
                    num(mo, "effective_rank"), energy_at(mo, 16));
        free(ref), free(wb), free(wt);
    }
    // every linear of the gated fixture (4·2 + 3·2 + 11·2... as its table lists them) and its untied head
    EXPECTF(n == 2 * 7 + 2 * 11 + 1, "%d modules, want 37 (36 linears and the untied lm_head)", n);
    EXPECTF(changed == 2, "%d modules changed, want 2", changed);
    st_close(&bf);
    st_close(&tf);
    cJSON_Delete(j);
}

// Bad input: one sentence naming the thing.
static void test_errors(void) {
    char cmd[8192], out[2048] = "";
    snprintf(cmd, sizeof cmd, "%s analyze --model " FIXTURE " --adapter %s/nope 2>&1", lorabench, tmp);
    FILE *p = popen(cmd, "r");
    size_t len = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[len] = 0;
    int rc = p ? pclose(p) : -1;
    EXPECTF(rc != 0 && strstr(out, "nope"), "exit %d, message: %s", rc, out);
    snprintf(cmd, sizeof cmd, "%s analyze --model " FIXTURE " 2>&1", lorabench);
    p = popen(cmd, "r");
    len = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[len] = 0;
    rc = p ? pclose(p) : -1;
    EXPECTF(rc != 0 && strstr(out, "--adapter"), "exit %d, message: %s", rc, out);
}

int main(int argc, char **argv) {
    (void)argc;
    char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(lorabench, sizeof lorabench, "%s/../lorabench", dirname(self));  // BUILD/tests/.. = BUILD
    snprintf(tmp, sizeof tmp, "/tmp/lb_analyze_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    RUN(test_lora_plain_and_rslora);
    RUN(test_similarity);
    RUN(test_full_finetune);
    RUN(test_errors);
    char rm[512];
    snprintf(rm, sizeof rm, "rm -rf %s", tmp);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    TH_DONE();
}
