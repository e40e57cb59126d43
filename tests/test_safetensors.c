// safetensors reader/writer: round trip, dtype conversion, the fixture checkpoint, and
// every malformed-file case the reference reader rejects, each with a named message.
#include <stdint.h>
#include <unistd.h>

#include "harness.h"
#include "safetensors.h"

static char tmpdir[256];

static void path_in_tmp(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

// Writes a raw safetensors file from a header string and data bytes.
static void write_raw(const char *path, const char *header, const void *data, size_t dlen, int hlen_delta) {
    FILE *f = fopen(path, "wb");
    uint64_t hl = strlen(header) + (uint64_t)(int64_t)hlen_delta;
    fwrite(&hl, 8, 1, f);
    fwrite(header, 1, strlen(header), f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
}

static int open_fails_with(const char *header, const void *data, size_t dlen, int delta, const char *needle) {
    char p[512];
    path_in_tmp(p, sizeof p, "bad.safetensors");
    write_raw(p, header, data, dlen, delta);
    st_file_t f;
    lb_err_t err = {0};
    int rc = st_open(&f, p, &err);
    if (rc == 0) {
        st_close(&f);
        fprintf(stderr, "    accepted a bad file: %s\n", header);
        return 0;
    }
    if (!strstr(err.msg, needle) || !strstr(err.msg, "bad.safetensors")) {
        fprintf(stderr, "    message \"%s\" lacks \"%s\" or the file name\n", err.msg, needle);
        return 0;
    }
    return 1;
}

static void test_round_trip(void) {
    char p[512];
    path_in_tmp(p, sizeof p, "rt.safetensors");
    float a[6] = {1, -2, 3.5f, 4, 5, 6}, b[3] = {7, 8, 9};
    st_out_t ts[2] = {{.name = "a.weight", .data = a, .ndim = 2, .shape = {2, 3}}, {.name = "b", .data = b, .ndim = 1, .shape = {3}}};
    lb_err_t err = {0};
    EXPECT(st_write(p, ts, 2, "{\"note\":\"x\"}", &err) == 0);
    FILE *fp = fopen(p, "rb");
    uint64_t hl = 0;
    EXPECT(fread(&hl, 8, 1, fp) == 1);
    char hdr[512] = {0};
    EXPECT(hl < sizeof hdr && fread(hdr, 1, hl, fp) == hl);
    fclose(fp);
    EXPECTF(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    EXPECT(strncmp(hdr, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0);
    st_file_t f;
    EXPECTF(st_open(&f, p, &err) == 0, "%s", err.msg);
    EXPECT(f.n == 2);
    const st_tensor_t *t = st_find(&f, "a.weight");
    EXPECT(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == ST_F32);
    float got[6] = {0};
    int64_t shp[2] = {2, 3};
    EXPECT(st_load_f32(&f, "a.weight", 2, shp, got, &err) == 0);
    EXPECT(memcmp(got, a, sizeof a) == 0);
    EXPECT(f.metadata_json && strstr(f.metadata_json, "\"note\":\"x\""));
    int64_t wrong[2] = {3, 2};
    EXPECT(st_load_f32(&f, "a.weight", 2, wrong, got, &err) != 0 && strstr(err.msg, "a.weight") &&
           strstr(err.msg, "[2, 3]") && strstr(err.msg, "[3, 2]"));
    EXPECT(st_load_f32(&f, "missing", 2, wrong, got, &err) != 0 && strstr(err.msg, "\"missing\""));
    st_close(&f);
}

// A tensor given in bf16 (data16) is written as BF16 beside fp32 ones, streamed in blocks
// (one tensor larger than a block), the file as large as its header says; st_load_bf16
// copies a BF16 tensor and rounds an F32 one, st_load_f32 widens a BF16 one exactly.
static void test_bf16_tensors_streamed(void) {
    char p[512];
    path_in_tmp(p, sizeof p, "mix.safetensors");
    size_t n = 70001;  // past the writer's 65536-value block
    float *a = malloc(n * sizeof *a), *back = malloc(n * sizeof *back);
    uint16_t *m16 = malloc(n * sizeof *m16), *got16 = malloc(n * sizeof *got16);
    uint64_t st = 3;
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)lb_rng_normal(&st);
        m16[i] = lb_f32_to_bf16((float)lb_rng_normal(&st));
    }
    st_out_t ts[2] = {{.name = "a", .data = a, .ndim = 1, .shape = {(int64_t)n}},
                      {.name = "m", .data16 = m16, .ndim = 1, .shape = {(int64_t)n}}};
    lb_err_t err = {0};
    EXPECTF(st_write(p, ts, 2, NULL, &err) == 0, "%s", err.msg);
    st_file_t f;
    EXPECTF(st_open(&f, p, &err) == 0, "%s", err.msg);
    const st_tensor_t *ta = st_find(&f, "a"), *tm = st_find(&f, "m");
    EXPECT(ta && ta->dtype == ST_F32 && tm && tm->dtype == ST_BF16 && tm->numel == n);
    int64_t shp[1] = {(int64_t)n};
    EXPECT(st_load_bf16(&f, "m", 1, shp, got16, &err) == 0 && !memcmp(got16, m16, n * 2));
    EXPECT(st_load_f32(&f, "m", 1, shp, back, &err) == 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += back[i] != lb_bf16_to_f32(m16[i]);
    EXPECT(st_load_bf16(&f, "a", 1, shp, got16, &err) == 0);
    for (size_t i = 0; i < n; i++) bad += got16[i] != lb_f32_to_bf16(a[i]);
    EXPECTF(bad == 0, "%zu values differ", bad);
    EXPECT(st_load_f32(&f, "a", 1, shp, back, &err) == 0 && !memcmp(back, a, n * 4));
    int64_t wrong[1] = {3};
    EXPECT(st_load_bf16(&f, "m", 1, wrong, got16, &err) != 0 && strstr(err.msg, "\"m\""));
    st_close(&f);
    // the writer with dtype BF16 rounds the fp32 tensor (in blocks) and copies the bf16 one
    EXPECTF(st_write_dtype(p, ts, 2, NULL, ST_BF16, &err) == 0, "%s", err.msg);
    EXPECTF(st_open(&f, p, &err) == 0, "%s", err.msg);
    EXPECT(st_find(&f, "a") && st_find(&f, "a")->dtype == ST_BF16);
    EXPECT(st_load_bf16(&f, "a", 1, shp, got16, &err) == 0);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += got16[i] != lb_f32_to_bf16(a[i]);
    EXPECT(st_load_bf16(&f, "m", 1, shp, got16, &err) == 0 && !memcmp(got16, m16, n * 2));
    EXPECTF(bad == 0, "%zu rounded values differ", bad);
    st_close(&f);
    // a folder that cannot be written: the error names the file, nothing is left behind
    char q[600];
    snprintf(q, sizeof q, "%s.missing-dir/x.safetensors", p);
    EXPECT(st_write(q, ts, 2, NULL, &err) != 0 && strstr(err.msg, "x.safetensors"));
    free(a), free(back), free(m16), free(got16);
}

static void test_half_types(void) {
    // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 0x0001 = 2^-24.
    // BF16: 1.0 = 0x3f80, -0.5 = 0xbf00.
    uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    uint16_t bf16[2] = {0x3f80, 0xbf00};
    uint8_t data[12];
    memcpy(data, f16, 8);
    memcpy(data + 8, bf16, 4);
    char p[512];
    path_in_tmp(p, sizeof p, "half.safetensors");
    write_raw(p, "{\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}", data, 12, 0);
    st_file_t f;
    lb_err_t err = {0};
    EXPECTF(st_open(&f, p, &err) == 0, "%s", err.msg);
    float h[4], b[2];
    int64_t s4 = 4, s2 = 2;
    EXPECT(st_load_f32(&f, "h", 1, &s4, h, &err) == 0);
    EXPECT(h[0] == 1.0f && h[1] == -2.0f && h[2] == 65504.0f && h[3] == ldexpf(1.0f, -24));
    EXPECT(st_load_f32(&f, "b", 1, &s2, b, &err) == 0);
    EXPECT(b[0] == 1.0f && b[1] == -0.5f);
    st_close(&f);
}

static void test_fixture_checkpoint(void) {
    st_file_t f;
    lb_err_t err = {0};
    EXPECTF(st_open(&f, "tests/fixtures/hf/t5-gated-a/model.safetensors", &err) == 0, "%s", err.msg);
    EXPECT(f.n == 52);
    const st_tensor_t *t = st_find(&f, "shared.weight");
    EXPECT(t && t->shape[0] == 608 && t->shape[1] == 64);
    EXPECT(f.metadata_json && strstr(f.metadata_json, "\"format\":\"pt\""));
    st_close(&f);
}

static void test_malformed(void) {
    float d[4] = {0};
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    EXPECT(open_fails_with(ok, d, 4, 0, "truncated"));                // data cut short
    EXPECT(open_fails_with(ok, d, 8, 1000, "past the end"));          // header length past end
    EXPECT(open_fails_with(ok, d, 8, 200000000, "100 MB"));           // absurd header length
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12, 0, "overlap"));
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", d, 12, 0, "gap"));
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8, 0, "unknown dtype"));
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d, 8, 0, "need 12 bytes"));
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}",
                           d, 8, 0, "overflow"));
    EXPECT(open_fails_with(ok, d, 16, 0, "after the last tensor"));   // trailing bytes
    EXPECT(open_fails_with("[1,2,3]", d, 0, 0, "start with '{'"));
    EXPECT(open_fails_with("{\"a\":", d, 0, 0, "not a JSON object"));
    EXPECT(open_fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", d, 8, 0, "data_offsets"));
    // A file shorter than the 8-byte length prefix.
    char p[512];
    path_in_tmp(p, sizeof p, "tiny.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    st_file_t sf;
    lb_err_t err = {0};
    EXPECT(st_open(&sf, p, &err) != 0 && strstr(err.msg, "truncated"));
    EXPECT(st_open(&sf, "/nonexistent/x.safetensors", &err) != 0 && strstr(err.msg, "/nonexistent/x.safetensors"));
}

// Inputs the fuzzer found (tests/fixtures/fuzz): each must be handled without a crash or
// a leak (the suite also runs under ASan).
static void test_fuzz_regressions(void) {
    const char *files[] = {"tests/fixtures/fuzz/safetensors-dup-metadata.bin",
                           "tests/fixtures/fuzz/safetensors-metadata-uaf.bin"};
    for (int i = 0; i < 2; i++) {
        st_file_t f;
        lb_err_t err = {0};
        int rc = st_open(&f, files[i], &err);
        if (rc == 0) st_close(&f);
        else EXPECTF(strstr(err.msg, files[i]) != NULL, "%s", err.msg);
        EXPECT(rc == 0 || err.msg[0]);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_test_st_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmpdir);
    if (system(cmd) != 0) return 1;
    RUN(test_round_trip);
    RUN(test_bf16_tensors_streamed);
    RUN(test_half_types);
    RUN(test_fixture_checkpoint);
    RUN(test_malformed);
    RUN(test_fuzz_regressions);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    TH_DONE();
}
