// Replays the inputs the fuzzers found (tests/fixtures/fuzz/<target>-*.{json,bin,...}) and
// the seed inputs (tests/fuzz/seeds/<target>/) through the fuzz targets themselves: the
// targets are included here with FUZZ_CHECK defined as EXPECT, so every invariant a target
// checks is an assertion of this test (and the suite runs under ASan/UBSan too). Then the
// known findings get their expected outcome asserted through the public API.
// Targets: config, spec, rouge, spm, tokenizer, tokenize_text, data (see RELIABILITY.md).
#include <dirent.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "tokenizer.h"

#define FUZZ_CHECK(cond) EXPECT(cond)

// The targets' entry points, renamed below, are this file's own functions.
static int fuzz_config_one(const uint8_t *data, size_t size);
static int fuzz_spec_one(const uint8_t *data, size_t size);
static int fuzz_rouge_one(const uint8_t *data, size_t size);
static int fuzz_spm_one(const uint8_t *data, size_t size);
static int fuzz_tokenizer_one(const uint8_t *data, size_t size);
static int fuzz_tokenize_text_one(const uint8_t *data, size_t size);
static int fuzz_tokenize_text_init(int *argc, char ***argv);
static int fuzz_data_one(const uint8_t *data, size_t size);

#define LLVMFuzzerTestOneInput fuzz_config_one
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_spec_one
#include "fuzz/fuzz_spec.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_rouge_one
#include "fuzz/fuzz_rouge.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_spm_one
#include "fuzz/fuzz_spm.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer_one
#include "fuzz/fuzz_tokenizer.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenize_text_one
#define LLVMFuzzerInitialize fuzz_tokenize_text_init
#include "fuzz/fuzz_tokenize_text.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize
#define LLVMFuzzerTestOneInput fuzz_data_one
#include "fuzz/fuzz_data.c"
#undef LLVMFuzzerTestOneInput

typedef int (*one_fn)(const uint8_t *, size_t);

static const struct {
    const char *name;  // fixtures are named "<name>-<finding>.<ext>"
    one_fn fn;
} targets[] = {
    {"config", fuzz_config_one},       {"spec", fuzz_spec_one},
    {"rouge", fuzz_rouge_one},         {"spm", fuzz_spm_one},
    {"tokenizer", fuzz_tokenizer_one}, {"tokenize_text", fuzz_tokenize_text_one},
    {"data", fuzz_data_one},
};
#define N_TARGETS ((int)(sizeof targets / sizeof *targets))

static int replay_file(one_fn fn, const char *path) {
    size_t len = 0;
    lb_err_t err = {0};
    char *buf = lb_read_file(path, &len, &err);
    EXPECTF(buf != NULL, "%s", err.msg);
    if (!buf) return 0;
    int before = th_expect_failed;
    fn((const uint8_t *)buf, len);
    if (th_expect_failed != before) fprintf(stderr, "    (while replaying %s)\n", path);
    free(buf);
    return 1;
}

// The target a fixture file name belongs to: the longest target name followed by '-'
// ("tokenize_text-x" is not a "tokenizer" input), or -1.
static int target_of(const char *file) {
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < N_TARGETS; i++) {
        size_t n = strlen(targets[i].name);
        if (!strncmp(file, targets[i].name, n) && file[n] == '-' && n > best_len)
            best = i, best_len = n;
    }
    return best;
}

// Every finding in tests/fixtures/fuzz that belongs to one of these targets (others, such
// as safetensors-*, are replayed by their module's own test).
static void test_replay_findings(void) {
    DIR *d = opendir("tests/fixtures/fuzz");
    EXPECT(d != NULL);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int t = target_of(e->d_name);
        if (t < 0) continue;
        char path[512];
        snprintf(path, sizeof path, "tests/fixtures/fuzz/%s", e->d_name);
        n += replay_file(targets[t].fn, path);
    }
    closedir(d);
    EXPECTF(n >= 7, "replayed %d findings", n);  // 5 tokenizer and 2 config findings at least
}

// The seeds are valid inputs: replaying them checks the targets' invariants on the happy
// paths as well.
static void test_replay_seeds(void) {
    int total = 0;
    for (int t = 0; t < N_TARGETS; t++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/seeds/%s", targets[t].name);
        DIR *d = opendir(dir);
        EXPECTF(d != NULL, "%s is missing", dir);
        if (!d) continue;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            n += replay_file(targets[t].fn, path);
        }
        closedir(d);
        EXPECTF(n >= 1, "no seeds in %s", dir);
        total += n;
    }
    EXPECT(total >= 7);
}

static tokenizer_t *load_fixture(const char *file, lb_err_t *err) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/fuzz/%s", file);
    return tokenizer_load(path, err);
}

// Encodes text and checks that it gives exactly want[0..n).
static void expect_ids(const tokenizer_t *tok, const char *text, const int *want, int n) {
    int *ids = NULL, got = 0;
    lb_err_t err = {0};
    EXPECTF(tokenizer_encode(tok, text, 0, &ids, &got, &err) == 0, "%s", err.msg);
    EXPECTF(got == n, "'%s' gave %d ids, expected %d", text, got, n);
    for (int i = 0; i < got && i < n; i++)
        EXPECTF(ids[i] == want[i], "'%s' id %d is %d, expected %d", text, i, ids[i], want[i]);
    free(ids);
}

// tokenizer-replace-bad-utf8.json: a Replace normalizer whose content is the lone byte 0xF0
// (raw, not escaped). The normalized text was not UTF-8 and the Viterbi lattice took the
// lead byte's length (4) past the end of a 1-byte word: a heap overflow of the lattice and
// an uninitialized id. The tokenizers library refuses such a file (JSON must be UTF-8).
static void test_tokenizer_bad_utf8_json(void) {
    lb_err_t err = {0};
    tokenizer_t *tok = load_fixture("tokenizer-replace-bad-utf8.json", &err);
    EXPECT(tok == NULL);
    EXPECTF(strstr(err.msg, "tokenizer-replace-bad-utf8.json") && strstr(err.msg, "UTF-8"),
            "%s", err.msg);
    tokenizer_free(tok);
}

// tokenizer-charsmap-bad-utf8.json (found by fuzz_tokenizer, minimised): a Precompiled
// charsmap whose replacement pool holds bytes that are not UTF-8 ("A" became "i\xE4"), so
// encoding "A" emitted an uninitialized id. tokenizers reads the pool as a String and
// refuses it.
static void test_tokenizer_charsmap_pool(void) {
    lb_err_t err = {0};
    tokenizer_t *tok = load_fixture("tokenizer-charsmap-bad-utf8.json", &err);
    EXPECT(tok == NULL);
    EXPECTF(strstr(err.msg, "precompiled_charsmap") && strstr(err.msg, "UTF-8"), "%s", err.msg);
    tokenizer_free(tok);
}

// tokenizer-charsmap-mid-char.json: a valid pool ("\xC3\xA9\0") but the entry for "A"
// points at its second byte, so the replacement starts inside a character. Such an entry
// is no match: "A" stays "A", which the 3-piece vocabulary lacks, so it is <unk> (2).
static void test_tokenizer_charsmap_mid_char(void) {
    lb_err_t err = {0};
    tokenizer_t *tok = load_fixture("tokenizer-charsmap-mid-char.json", &err);
    EXPECTF(tok != NULL, "%s", err.msg);
    if (!tok) return;
    expect_ids(tok, "A", (const int[]){2}, 1);
    expect_ids(tok, "AA", (const int[]){2}, 1);  // consecutive unknowns fuse into one
    tokenizer_free(tok);
}

// tokenizer-added-id-intmax.json (found by fuzz_tokenizer): an added token with id
// 2147483647; max_id + 1 overflowed int and the id table was written far out of bounds.
// tokenizer-added-id-huge.json: id 16777216, which made every load allocate (and the
// embedding size become) 16M entries; an id of 1.5e9 took 6 GB. Ids must be below 2^24.
static void test_tokenizer_added_ids(void) {
    const char *files[] = {"tokenizer-added-id-intmax.json", "tokenizer-added-id-huge.json"};
    for (int i = 0; i < 2; i++) {
        lb_err_t err = {0};
        tokenizer_t *tok = load_fixture(files[i], &err);
        EXPECTF(tok == NULL, "%s was accepted, vocab size %d", files[i],
                tok ? tokenizer_vocab_size(tok) : 0);
        EXPECTF(strstr(err.msg, files[i]) && strstr(err.msg, "added_tokens"), "%s", err.msg);
        tokenizer_free(tok);
    }
}

// tokenizer-raw-nul-in-piece.json (found by fuzz_tokenizer in its 10-minute run): raw NUL
// bytes inside a vocabulary piece's JSON string. cJSON took them and cut the piece to "",
// which tokenizer_piece_to_id could not find again. JSON requires control characters
// escaped and the tokenizers library refuses them: so does the loader now, naming the line.
// tokenizer-empty-piece.json (made by hand): the piece "" written properly is valid; the
// library's token map finds it, and so does tokenizer_piece_to_id.
static void test_tokenizer_nul_and_empty_piece(void) {
    lb_err_t err = {0};
    tokenizer_t *tok = load_fixture("tokenizer-raw-nul-in-piece.json", &err);
    EXPECTF(tok == NULL, "accepted a raw NUL inside a string");
    EXPECTF(strstr(err.msg, "tokenizer-raw-nul-in-piece.json") && strstr(err.msg, "control character (0x00)") &&
                strstr(err.msg, "line "),
            "%s", err.msg);
    tokenizer_free(tok);
    tok = load_fixture("tokenizer-empty-piece.json", &err);
    EXPECTF(tok != NULL, "%s", err.msg);
    if (!tok) return;
    EXPECT(tokenizer_piece_to_id(tok, "") == 3);
    const char *p = tokenizer_id_to_piece(tok, 3);
    EXPECT(p && !*p);
    expect_ids(tok, "a", (const int[]){4}, 1);
    tokenizer_free(tok);
}

// tokenizer-template-id-outside.json (found by fuzz_tokenizer in its second 10-minute run):
// the post_processor's </s> has ids [607, 1] in a vocabulary of 5, so every encoding with
// special tokens ended in id 607, which the embedding does not have. Refused at load now.
static void test_tokenizer_template_ids(void) {
    lb_err_t err = {0};
    tokenizer_t *tok = load_fixture("tokenizer-template-id-outside.json", &err);
    EXPECTF(tok == NULL, "accepted a template id outside the vocabulary");
    EXPECTF(strstr(err.msg, "tokenizer-template-id-outside.json") && strstr(err.msg, "post_processor") &&
                strstr(err.msg, "607") && strstr(err.msg, "0 to 4"),
            "%s", err.msg);
    tokenizer_free(tok);
}

// config-huge-heads.json, config-huge-layers.json (review of the fuzz_config invariants:
// engine/t5 computes H·K and its parameter-table size in int): 65536 heads of 65536 and a
// billion layers overflowed them. Refused, naming the fields; t5-11b's sizes still load.
static void test_config_limits(void) {
    const char *files[] = {"config-huge-heads.json", "config-huge-layers.json"};
    const char *field[] = {"num_heads x d_kv", "num_layers"};
    for (int i = 0; i < 2; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/fuzz/%s", files[i]);
        t5_config_t c;
        lb_err_t err = {0};
        EXPECT(t5_config_load(&c, path, &err) != 0);
        EXPECTF(strstr(err.msg, path) && strstr(err.msg, field[i]), "%s", err.msg);
    }
    t5_config_t c;
    lb_err_t err = {0};
    EXPECTF(t5_config_load(&c, "tests/fuzz/seeds/config/t5-11b.json", &err) == 0, "%s", err.msg);
    EXPECT(c.num_heads * c.d_kv == 16384 && c.d_ff == 65536 && c.num_decoder_layers == 24);
}

int main(void) {
    fuzz_tokenize_text_init(NULL, NULL);
    RUN(test_tokenizer_bad_utf8_json);
    RUN(test_tokenizer_charsmap_pool);
    RUN(test_tokenizer_charsmap_mid_char);
    RUN(test_tokenizer_added_ids);
    RUN(test_tokenizer_nul_and_empty_piece);
    RUN(test_tokenizer_template_ids);
    RUN(test_config_limits);
    RUN(test_replay_findings);
    RUN(test_replay_seeds);
    TH_DONE();
}
