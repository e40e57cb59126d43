// Tokenizer tests: every reference case of the two fixtures (ids from the tokenizers library,
// decoded text from decode(skip_special_tokens=True)), the Unigram rules on hand-made
// vocabularies (the library's own examples), added-token flags, the Unicode helpers, the
// error messages, and a speed measurement.
#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tokenizer.h"
#include "unicode_norm.h"
#include "util.h"

#define GATED "tests/fixtures/hf/t5-gated-a/"
#define SPM "tests/fixtures/hf/t5-spm-tokenizer/"

// Runs every {text, ids, decoded} case of a fixture; returns the number of cases checked.
static int check_cases(const char *tok_path, const char *cases_path) {
    lb_err_t err = {0};
    tokenizer_t *tok = tokenizer_load(tok_path, &err);
    EXPECTF(tok != NULL, "%s", err.msg);
    size_t len;
    char *text = lb_read_file(cases_path, &len, &err);
    EXPECTF(text != NULL, "%s", err.msg);
    if (!tok || !text) {
        tokenizer_free(tok);
        free(text);
        return 0;
    }
    cJSON *cases = cJSON_Parse(text);
    EXPECT(cJSON_IsArray(cases));
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *ref = cJSON_GetObjectItem(c, "ids");
        const char *decoded = cJSON_GetObjectItem(c, "decoded")->valuestring;
        int *ids = NULL, nid = 0;
        int rc = tokenizer_encode(tok, s, 1, &ids, &nid, &err);
        EXPECTF(rc == 0, "%s", err.msg);
        int same = rc == 0 && nid == cJSON_GetArraySize(ref);
        for (int i = 0; same && i < nid; i++) same = ids[i] == cJSON_GetArrayItem(ref, i)->valueint;
        if (!same) {
            char *r = cJSON_PrintUnformatted(ref);
            fprintf(stderr, "    text %.60s\n    ref  %.200s\n    ours", s, r);
            for (int i = 0; i < nid && i < 40; i++) fprintf(stderr, " %d", ids[i]);
            fputc('\n', stderr);
            free(r);
        }
        EXPECTF(same, "ids of case %d of %s", n, cases_path);
        // Decode the reference ids so that a decoding check does not depend on encoding.
        int nr = cJSON_GetArraySize(ref);
        int *rids = xmalloc(sizeof *rids * (size_t)(nr ? nr : 1));
        for (int i = 0; i < nr; i++) rids[i] = cJSON_GetArrayItem(ref, i)->valueint;
        char *d = tokenizer_decode(tok, rids, nr, 1);
        EXPECTF(!strcmp(d, decoded), "case %d decodes to \"%s\", reference \"%s\"", n, d, decoded);
        free(d);
        free(rids);
        free(ids);
        n++;
    }
    cJSON_Delete(cases);
    free(text);
    tokenizer_free(tok);
    return n;
}

static void test_gated_cases(void) {
    int n = check_cases(GATED "tokenizer.json", GATED "tok_cases.json");
    EXPECTF(n == 81, "%d cases", n);
}

static void test_spm_cases(void) {
    int n = check_cases(SPM "tokenizer.json", SPM "tok_cases.json");
    EXPECTF(n == 98, "%d cases", n);
}

static void test_accessors(void) {
    lb_err_t err = {0};
    tokenizer_t *t = tokenizer_load(SPM "tokenizer.json", &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (!t) return;
    EXPECT(tokenizer_vocab_size(t) == 1010);
    EXPECT(tokenizer_eos_id(t) == 1);
    EXPECT(tokenizer_pad_id(t) == 0);
    EXPECT(tokenizer_unk_id(t) == 2);
    EXPECT(tokenizer_piece_to_id(t, "<extra_id_0>") == 1009);
    EXPECT(tokenizer_piece_to_id(t, "<extra_id_9>") == 1000);
    EXPECT(tokenizer_piece_to_id(t, "\xE2\x96\x81") == 4);  // "▁"
    EXPECT(tokenizer_piece_to_id(t, "no such piece") == -1);
    EXPECT(!strcmp(tokenizer_id_to_piece(t, 1009), "<extra_id_0>"));
    EXPECT(!strcmp(tokenizer_id_to_piece(t, 222), "end"));
    EXPECT(tokenizer_id_to_piece(t, 5000) == NULL);
    EXPECT(tokenizer_is_special(t, 1) && tokenizer_is_special(t, 1005) && !tokenizer_is_special(t, 4));
    // Without the template no </s>; keeping special tokens in decode; unknown ids dropped.
    int *ids, n;
    EXPECT(tokenizer_encode(t, "<extra_id_0> span <extra_id_1> end", 0, &ids, &n, &err) == 0);
    int want[] = {1009, 4, 3, 20, 116, 4, 1008, 4, 222};
    EXPECT(n == 9 && !memcmp(ids, want, sizeof want));
    free(ids);
    int dec[] = {1009, 4, 3, 20, 116, 4, 1008, 4, 222, 1, 99999, -3};
    char *s = tokenizer_decode(t, dec, 12, 0);
    EXPECTF(!strcmp(s, "<extra_id_0> span <extra_id_1> end</s>"), "%s", s);
    free(s);
    s = tokenizer_decode(t, dec, 0, 1);
    EXPECT(!strcmp(s, ""));
    free(s);
    // Invalid UTF-8 is refused with the byte offset.
    EXPECT(tokenizer_encode(t, "ab\xC3(", 1, &ids, &n, &err) == -1);
    EXPECTF(strstr(err.msg, "UTF-8") && strstr(err.msg, "byte 2"), "%s", err.msg);
    tokenizer_free(t);
}

// Builds a tokenizer.json text around a vocabulary and optional extra top-level members.
static tokenizer_t *make_tok(const char *vocab, const char *extra, lb_err_t *err) {
    char json[8192];
    snprintf(json, sizeof json,
             "{\"version\":\"1.0\",%s%s\"model\":{\"type\":\"Unigram\",\"unk_id\":0,"
             "\"vocab\":[%s]}}",
             extra ? extra : "", extra ? "," : "", vocab);
    return tokenizer_load_json(json, strlen(json), "test.json", err);
}

static int ids_are(const tokenizer_t *t, const char *text, int n, ...) {
    lb_err_t err = {0};
    int *ids, got;
    if (tokenizer_encode(t, text, 0, &ids, &got, &err)) {
        fprintf(stderr, "    encode \"%s\": %s\n", text, err.msg);
        return 0;
    }
    va_list ap;
    va_start(ap, n);
    int ok = got == n;
    for (int i = 0; i < n; i++) {
        int want = va_arg(ap, int);
        if (ok && ids[i] != want) ok = 0;
    }
    va_end(ap);
    if (!ok) {
        fprintf(stderr, "    \"%s\" ->", text);
        for (int i = 0; i < got; i++) fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return ok;
}

// The tokenizers library's own Unigram examples (models/unigram/model.rs, test_encode2):
// ties keep the first path, unknowns cost min_score - 10 and consecutive ones fuse.
static void test_unigram_rules(void) {
    lb_err_t err = {0};
    tokenizer_t *t = make_tok(
        "[\"<unk>\",0.0],[\"ab\",0.0],[\"cd\",-0.1],[\"abc\",-0.2],[\"a\",-0.3],[\"b\",-0.4],"
        "[\"c\",-0.5],[\"ABC\",-0.5],[\"abcdabcd\",20.0],[\"q\",20.5],[\"r\",20.5],[\"qr\",-0.5]",
        NULL, &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (!t) return;
    EXPECT(ids_are(t, "abc", 1, 3));
    EXPECT(ids_are(t, "AB", 1, 0));  // two unknown characters fused into one unk
    EXPECT(ids_are(t, "abcd", 2, 1, 2));
    EXPECT(ids_are(t, "abcc", 2, 3, 6));
    EXPECT(ids_are(t, "xabcabaabcdd", 7, 0, 3, 1, 4, 1, 2, 0));
    EXPECT(ids_are(t, "xyz\xE6\x9D\xB1\xE4\xBA\xAC", 1, 0));  // "xyz東京"
    EXPECT(ids_are(t, "ABC", 1, 7));
    EXPECT(ids_are(t, "abABCcd", 3, 1, 7, 2));
    EXPECT(ids_are(t, "ababcdabcdcd", 3, 1, 8, 2));
    EXPECT(ids_are(t, "abqrcd", 4, 1, 9, 10, 2));
    tokenizer_free(t);

    // Equal scores: "a"+"bc" and "ab"+"c" both sum to -2. "a"+"bc" reaches the end first
    // (from offset 1) and "ab"+"c" (from offset 2) is not strictly better, so it stays.
    t = make_tok("[\"<unk>\",0],[\"a\",-1],[\"b\",-1],[\"c\",-1],[\"ab\",-1],[\"bc\",-1]", NULL, &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) EXPECT(ids_are(t, "abc", 2, 1, 5));
    tokenizer_free(t);
}

static void test_byte_fallback(void) {
    lb_err_t err = {0};
    const char *json =
        "{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"byte_fallback\":true,\"vocab\":"
        "[[\"<unk>\",0.0],[\"<0xC3>\",-0.01],[\"<0xA9>\",-0.03]]},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},"
        "{\"type\":\"Fuse\"}]}}";
    tokenizer_t *t = tokenizer_load_json(json, strlen(json), "bf.json", &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (!t) return;
    EXPECT(ids_are(t, "\xC3\xA9", 2, 1, 2));  // "é" as its two bytes
    EXPECT(ids_are(t, "?\xC3\xA9", 1, 0));    // '?' has no byte piece: the fused run is unk
    int ids[] = {1, 2, 1};
    char *s = tokenizer_decode(t, ids, 2, 1);
    EXPECTF(!strcmp(s, "\xC3\xA9"), "%s", s);  // the two bytes make "é"
    free(s);
    // A run of byte tokens that is not UTF-8 becomes one U+FFFD per byte.
    s = tokenizer_decode(t, ids, 3, 1);
    EXPECTF(!strcmp(s, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"), "%s", s);
    free(s);
    tokenizer_free(t);
}

// A vocabulary of single printable ASCII characters (ids 1..95 for ' '..'~'), so that the
// ids of plain text show exactly where added tokens were cut out.
static char *ascii_vocab(void) {
    lb_ubuf_t b = {0};
    lb_ubuf_append(&b, "[\"<unk>\",0]", 11);
    for (int c = ' '; c <= '~'; c++) {
        char item[32];
        if (c == '"' || c == '\\') snprintf(item, sizeof item, ",[\"\\%c\",-1]", c);
        else snprintf(item, sizeof item, ",[\"%c\",-1]", c);
        lb_ubuf_append(&b, item, strlen(item));
    }
    return b.p;
}

// Checks that text encodes to: for each piece, either the added token id or one id per char.
static int split_is(const tokenizer_t *t, const char *text, const char *const *pieces,
                    const int *tok_ids, int np) {
    int want[256], n = 0;
    for (int i = 0; i < np; i++) {
        if (tok_ids[i] >= 0) {
            want[n++] = tok_ids[i];
            continue;
        }
        for (const char *p = pieces[i]; *p; p++)
            want[n++] = (unsigned char)*p >= ' ' && (unsigned char)*p <= '~' ? *p - ' ' + 1 : 0;
    }
    // Fuse consecutive unk (0) ids, as the model does.
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!(want[i] == 0 && m > 0 && want[m - 1] == 0)) want[m++] = want[i];
    lb_err_t err = {0};
    int *ids, got;
    if (tokenizer_encode(t, text, 0, &ids, &got, &err)) return 0;
    int ok = got == m && !memcmp(ids, want, sizeof(int) * (size_t)m);
    if (!ok) {
        fprintf(stderr, "    \"%s\" ->", text);
        for (int i = 0; i < got; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n    expected");
        for (int i = 0; i < m; i++) fprintf(stderr, " %d", want[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return ok;
}

// The library's added_vocabulary.rs examples for single_word, lstrip and rstrip.
static void test_added_flags(void) {
    lb_err_t err = {0};
    char *vocab = ascii_vocab();
    tokenizer_t *t = make_tok(vocab,
                              "\"added_tokens\":[{\"id\":200,\"content\":\"<mask>\",\"single_word\":"
                              "true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,"
                              "\"special\":true}]",
                              &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        const char *p[] = {"<mask>", " My name ", "<mask>", " A<mask> <mask>ony ", "<mask>"};
        int id[] = {200, -1, 200, -1, 200};
        EXPECT(split_is(t, "<mask> My name <mask> A<mask> <mask>ony <mask>", p, id, 5));
        // A combining mark is a word character, punctuation is not.
        const char *q[] = {"<mask>", ", ", "<mask>", "- \xCC\xB0<mask>"};
        int qid[] = {200, -1, 200, -1};
        EXPECT(split_is(t, "<mask>, <mask>- \xCC\xB0<mask>", q, qid, 4));
    }
    tokenizer_free(t);
    t = make_tok(vocab,
                 "\"added_tokens\":[{\"id\":200,\"content\":\"<mask>\",\"single_word\":true,"
                 "\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":false}]",
                 &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        // Whitespace around the token (tab, U+2000) is absorbed into it.
        const char *p[] = {"Hi", " <mask> ", "there", "\t<mask>\t", "<mask>\xE2\x80\x80"};
        int id[] = {-1, 200, -1, 200, 200};
        EXPECT(split_is(t, "Hi <mask> there\t<mask>\t<mask>\xE2\x80\x80", p, id, 5));
        // Not special: decode keeps it even when skipping special tokens.
        int ids[] = {41, 200};
        char *s = tokenizer_decode(t, ids, 2, 1);
        EXPECTF(!strcmp(s, "H <mask>"), "%s", s);  // no decoder: tokens joined by spaces
        free(s);
    }
    tokenizer_free(t);
    free(vocab);
}

// Normalizers Replace (string and regex), Strip, Prepend; Metaspace schemes; templates.
static void test_pipeline_parts(void) {
    lb_err_t err = {0};
    char *vocab = ascii_vocab();
    tokenizer_t *t = make_tok(
        vocab,
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\","
        "\"strip_left\":true,\"strip_right\":true},{\"type\":\"Replace\",\"pattern\":"
        "{\"String\":\"ab\"},\"content\":\"X\"},{\"type\":\"Replace\",\"pattern\":{\"Regex\":"
        "\"-+\"},\"content\":\"=\"}]}",
        &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        const char *p[] = {"XaX=c=X"};
        int id[] = {-1};
        EXPECT(split_is(t, " \t abaab--c-ab \n", p, id, 1));
    }
    tokenizer_free(t);

    // Metaspace "first" with '_' as replacement: only the piece at offset 0 of the original
    // text gets the prefix; a piece after an added token does not.
    t = make_tok(vocab,
                 "\"added_tokens\":[{\"id\":300,\"content\":\"<s>\",\"normalized\":false,"
                 "\"special\":true}],\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":"
                 "\"_\",\"prepend_scheme\":\"first\",\"split\":true},\"post_processor\":{\"type\":"
                 "\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
                 "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":"
                 "\"<s>\",\"ids\":[300],\"tokens\":[\"<s>\"]}}},\"decoder\":{\"type\":\"Metaspace\","
                 "\"replacement\":\"_\",\"prepend_scheme\":\"first\"}",
                 &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        const char *p[] = {"_a_b", "", "c_d"};
        int id[] = {-1, 300, -1};
        EXPECT(split_is(t, "a b<s>c d", p, id, 3));
        int *ids, n;
        EXPECT(tokenizer_encode(t, "a", 1, &ids, &n, &err) == 0);
        EXPECT(n == 3 && ids[0] == 300 && ids[1] == '_' - ' ' + 1 && ids[2] == 'a' - ' ' + 1);
        free(ids);
        int d[] = {'_' - ' ' + 1, 'a' - ' ' + 1, '_' - ' ' + 1, 'b' - ' ' + 1};
        char *s = tokenizer_decode(t, d, 4, 1);
        EXPECTF(!strcmp(s, "a b"), "%s", s);
        free(s);
    }
    tokenizer_free(t);

    // Metaspace "never" without split: spaces become '_' and nothing is prepended.
    t = make_tok(vocab,
                 "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\","
                 "\"prepend_scheme\":\"never\",\"split\":false}",
                 &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        const char *p[] = {"a__b"};
        int id[] = {-1};
        EXPECT(split_is(t, "a  b", p, id, 1));
    }
    tokenizer_free(t);
    free(vocab);
}

static void test_unicode(void) {
    struct {
        const char *in, *nfkc;
    } cases[] = {
        {"\xEF\xAC\x81ne", "fine"},                          // ligature ﬁ
        {"\xEF\xBC\xA1\xEF\xBC\x91", "A1"},                  // full-width Ａ１
        {"e\xCC\x81", "\xC3\xA9"},                           // e + combining acute -> é
        {"\xE2\x91\xA0", "1"},                               // ①
        {"\xE3\x8D\xBB", "\xE5\xB9\xB3\xE6\x88\x90"},        // ㍻ -> 平成
        {"\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"},  // jamo -> 각
        {"\xC2\xA0x\xE2\x80\xA6", " x..."},                  // no-break space, ellipsis
        {"a\xCC\x87\xCC\xA3", "\xE1\xBA\xA1\xCC\x87"},       // marks reordered: ạ + dot above
        {"plain ASCII", "plain ASCII"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lb_ubuf_t b = {0};
        lb_uc_nfkc(cases[i].in, strlen(cases[i].in), 1, &b);
        EXPECTF(b.n == strlen(cases[i].nfkc) && !memcmp(b.p, cases[i].nfkc, b.n), "NFKC case %zu",
                i);
        lb_ubuf_free(&b);
    }
    // Grapheme clusters: CR LF, base + marks, flags in pairs, emoji ZWJ sequences, Hangul.
    const char *s = "\r\nxe\xCC\x81\xF0\x9F\x87\xA9\xF0\x9F\x87\xAA\xF0\x9F\x87\xAB";
    size_t n = strlen(s);
    EXPECT(lb_uc_grapheme_end(s, n, 0) == 2);
    EXPECT(lb_uc_grapheme_end(s, n, 2) == 3);
    EXPECT(lb_uc_grapheme_end(s, n, 3) == 6);
    EXPECT(lb_uc_grapheme_end(s, n, 6) == 14);   // two regional indicators: one flag
    EXPECT(lb_uc_grapheme_end(s, n, 14) == 18);  // the odd one out
    const char *fam = "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9" "a";  // 👨‍👩a
    EXPECT(lb_uc_grapheme_end(fam, strlen(fam), 0) == 11);
    const char *jamo = "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8\xEA\xB0\x80";  // ᄀ ᅡ ᆨ 가
    EXPECT(lb_uc_grapheme_end(jamo, strlen(jamo), 0) == 9);
    EXPECT(lb_uc_is_space(0x3000) && lb_uc_is_space('\t') && !lb_uc_is_space(0x200B));
    EXPECT(lb_uc_is_word(0x0301) && lb_uc_is_word(0x00E9) && !lb_uc_is_word('-'));
    EXPECT(lb_utf8_invalid_at("ok\xE2\x82", 4) == 2 && lb_utf8_invalid_at("\xED\xA0\x80", 3) == 0);
    EXPECT(lb_utf8_invalid_at("\xF0\x9F\x99\x82", 4) == (size_t)-1);
}

static void expect_load_error(const char *json, const char *needle1, const char *needle2) {
    lb_err_t err = {0};
    tokenizer_t *t = tokenizer_load_json(json, strlen(json), "bad.json", &err);
    EXPECTF(t == NULL, "loaded: %s", json);
    tokenizer_free(t);
    EXPECTF(strstr(err.msg, "bad.json") && strstr(err.msg, needle1) &&
                (!needle2 || strstr(err.msg, needle2)),
            "message: %s", err.msg);
}

static void test_errors(void) {
    expect_load_error("{\"model\": {\"type\": \"Unigram\",\n \"vocab\": [[\"a\", -1.0],]}}",
                      "invalid JSON", "line 2");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", "BPE",
                      "Unigram");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}", "BPE", NULL);
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", "WordPiece", NULL);
    expect_load_error("{\"normalizer\":{\"type\":\"BertNormalizer\"},\"model\":{\"type\":"
                      "\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]}}",
                      "normalizer", "BertNormalizer");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":"
                      "\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]}}",
                      "pre_tokenizer", "ByteLevel");
    expect_load_error("{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":"
                      "\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]}}",
                      "decoder", "WordPiece");
    expect_load_error("{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"[a-z]\"},"
                      "\"content\":\"\"},\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0]]}}",
                      "Replace", "[a-z]");
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"unk_id\":5,\"vocab\":[[\"a\",0]]}}",
                      "unk_id", NULL);
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\"]]}}", "vocab entry 0", NULL);
    expect_load_error("[1,2]", "not a JSON object", NULL);
    lb_err_t err = {0};
    EXPECT(tokenizer_load("tests/fixtures/no/such/tokenizer.json", &err) == NULL);
    EXPECTF(strstr(err.msg, "tests/fixtures/no/such/tokenizer.json"), "%s", err.msg);
    // A model without unk_id cannot encode an unknown character: the message names it.
    const char *json = "{\"model\":{\"type\":\"Unigram\",\"unk_id\":null,\"vocab\":[[\"a\",0]]}}";
    tokenizer_t *t = tokenizer_load_json(json, strlen(json), "nounk.json", &err);
    EXPECTF(t != NULL, "%s", err.msg);
    if (t) {
        int *ids, n;
        EXPECT(tokenizer_encode(t, "ab", 1, &ids, &n, &err) == -1);
        EXPECTF(strstr(err.msg, "'b'") && strstr(err.msg, "unk"), "%s", err.msg);
    }
    tokenizer_free(t);
}

// Throughput on English text (the fixtures' package descriptions), about 1 MB per tokenizer,
// one call per ~1 KB example as a data loader makes them. Prints MB/s; the bound asserted is
// loose on purpose (sanitizer builds are slow); BENCHMARKS.md holds the measured figures.
static void test_speed(void) {
    const char *names[] = {SPM, GATED};
    for (int k = 0; k < 2; k++) {
        char tp[256], cp[256];
        snprintf(tp, sizeof tp, "%stokenizer.json", names[k]);
        snprintf(cp, sizeof cp, "%stok_cases.json", names[k]);
        lb_err_t err = {0};
        tokenizer_t *t = tokenizer_load(tp, &err);
        size_t len;
        char *text = lb_read_file(cp, &len, &err);
        cJSON *cases = text ? cJSON_Parse(text) : NULL;
        EXPECT(t && cases);
        if (!t || !cases) {
            tokenizer_free(t);
            free(text);
            return;
        }
        lb_ubuf_t corpus = {0};
        while (corpus.n < (1u << 20)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, cases) {
                const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
                if (strlen(s) < 40 || (unsigned char)s[0] >= 0x80) continue;  // English lines
                lb_ubuf_append(&corpus, s, strlen(s));
                lb_ubuf_append(&corpus, " ", 1);
            }
        }
        long ntok = 0;
        double t0 = lb_now();
        for (size_t pos = 0; pos < corpus.n;) {
            size_t l = corpus.n - pos < 1000 ? corpus.n - pos : 1000;
            while (pos + l < corpus.n && corpus.p[pos + l] != ' ') l++;
            int *ids, n;
            if (tokenizer_encode_n(t, corpus.p + pos, l, 1, &ids, &n, &err) == 0) {
                ntok += n;
                free(ids);
            }
            pos += l;
        }
        double dt = lb_now() - t0;
        double mbs = (double)corpus.n / dt / 1e6;
        printf("     speed %-32s %.2f MB in %.3f s: %.2f MB/s, %ld tokens\n", names[k],
               (double)corpus.n / 1e6, dt, mbs, ntok);
        EXPECT(ntok > (long)(corpus.n / 10));
        EXPECTF(mbs > 0.05, "%.3f MB/s", mbs);
        lb_ubuf_free(&corpus);
        cJSON_Delete(cases);
        free(text);
        tokenizer_free(t);
    }
}

int main(void) {
    RUN(test_gated_cases);
    RUN(test_spm_cases);
    RUN(test_accessors);
    RUN(test_unigram_rules);
    RUN(test_byte_fallback);
    RUN(test_added_flags);
    RUN(test_pipeline_parts);
    RUN(test_unicode);
    RUN(test_errors);
    RUN(test_speed);
    TH_DONE();
}
