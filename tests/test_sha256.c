// SHA-256 against the FIPS 180-4 examples and sha256sum.
#include "harness.h"
#include "sha256.h"

static void test_vectors(void) {
    char hex[65];
    sha256_t s;
    sha256_init(&s);
    sha256_final_hex(&s, hex);
    EXPECT(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    sha256_init(&s);
    sha256_update(&s, "abc", 3);
    sha256_final_hex(&s, hex);
    EXPECT(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    sha256_init(&s);
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t i = 0; i < strlen(m); i++) sha256_update(&s, m + i, 1);  // byte by byte
    sha256_final_hex(&s, hex);
    EXPECT(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

static void test_file_matches_sha256sum(void) {
    const char *p = "tests/fixtures/hf/t5-gated-a/model.safetensors";
    char hex[65], want[65] = {0}, cmd[256];
    size_t bytes;
    lb_err_t err;
    EXPECT(sha256_file(p, hex, &bytes, &err) == 0 && bytes == 1107600);
    snprintf(cmd, sizeof cmd, "sha256sum %s", p);
    FILE *f = popen(cmd, "r");
    EXPECT(f && fscanf(f, "%64s", want) == 1);
    if (f) pclose(f);
    EXPECTF(!strcmp(hex, want), "%s vs %s", hex, want);
}

int main(void) {
    RUN(test_vectors);
    RUN(test_file_matches_sha256sum);
    TH_DONE();
}
