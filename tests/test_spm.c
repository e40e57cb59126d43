// SentencePiece model → tokenizer.json: the fixture's spiece.model must convert to the
// tokenizer.json that transformers wrote for it (10 sentinels), and hand-built models
// check the parser's defaults, escaping, number printing and error messages.
#include <cJSON.h>
#include <stdint.h>

#include "harness.h"
#include "spm.h"

#define FIX "tests/fixtures/hf/t5-spm-tokenizer/"

// Deep equality of two parsed JSON values; numbers must be equal doubles (no tolerance).
// On the first difference, *where gets a short path for the message.
static int json_equal(const cJSON *a, const cJSON *b, char *where, size_t wn, const char *path) {
    if (!a || !b) {
        snprintf(where, wn, "%s: missing", path);
        return 0;
    }
    if ((a->type & 0xff) != (b->type & 0xff)) {
        snprintf(where, wn, "%s: type differs", path);
        return 0;
    }
    if (cJSON_IsNumber(a)) {
        if (a->valuedouble != b->valuedouble) {
            snprintf(where, wn, "%s: %.17g != %.17g", path, a->valuedouble, b->valuedouble);
            return 0;
        }
        return 1;
    }
    if (cJSON_IsString(a)) {
        if (strcmp(a->valuestring, b->valuestring)) {
            snprintf(where, wn, "%s: \"%.40s\" != \"%.40s\"", path, a->valuestring, b->valuestring);
            return 0;
        }
        return 1;
    }
    if (cJSON_IsArray(a)) {
        int n = cJSON_GetArraySize(a);
        if (n != cJSON_GetArraySize(b)) {
            snprintf(where, wn, "%s: %d vs %d elements", path, n, cJSON_GetArraySize(b));
            return 0;
        }
        const cJSON *x = a->child, *y = b->child;
        for (int i = 0; x && y; i++, x = x->next, y = y->next) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (!json_equal(x, y, where, wn, sub)) return 0;
        }
        return 1;
    }
    if (cJSON_IsObject(a)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) {
            snprintf(where, wn, "%s: key count differs", path);
            return 0;
        }
        for (const cJSON *x = a->child; x; x = x->next) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.%s", path, x->string);
            if (!json_equal(x, cJSON_GetObjectItemCaseSensitive(b, x->string), where, wn, sub))
                return 0;
        }
        return 1;
    }
    return 1;  // true/false/null: the type byte already matched
}

static void test_parse_fixture_model(void) {
    spm_model_t m;
    lb_err_t err = {0};
    EXPECTF(spm_load_model(FIX "spiece.model", &m, &err) == 0, "%s", err.msg);
    if (err.code) return;
    EXPECTF(m.n_pieces == 1000, "%d pieces", m.n_pieces);
    EXPECT(m.model_type == 1);
    // T5's ids: pad 0, eos 1, unk 2, no bos
    EXPECTF(m.unk_id == 2 && m.eos_id == 1 && m.pad_id == 0 && m.bos_id == -1,
            "unk %d eos %d pad %d bos %d", m.unk_id, m.eos_id, m.pad_id, m.bos_id);
    EXPECT(!strcmp(m.normalizer_name, "nmt_nfkc"));
    EXPECT(m.add_dummy_prefix == 1 && m.remove_extra_whitespaces == 1);
    EXPECT(m.byte_fallback == 0);
    EXPECTF(m.charsmap_len == 237561, "charsmap %zu bytes", m.charsmap_len);  // 316748 base64 chars
    EXPECT(!strcmp(m.pieces[0].piece, "<pad>") && m.pieces[0].type == SPM_CONTROL);
    EXPECT(!strcmp(m.pieces[1].piece, "</s>") && m.pieces[1].type == SPM_CONTROL);
    EXPECT(!strcmp(m.pieces[2].piece, "<unk>") && m.pieces[2].type == SPM_UNKNOWN);
    EXPECT(!strcmp(m.pieces[3].piece, "s") && m.pieces[3].type == SPM_NORMAL);
    EXPECTF((double)m.pieces[3].score == -2.9948713779449463, "%.17g", (double)m.pieces[3].score);
    EXPECT(!strcmp(m.pieces[4].piece, "\xe2\x96\x81"));  // "▁"
    spm_model_free(&m);
}

static void test_convert_matches_fixture(void) {
    lb_err_t err = {0};
    spm_model_t m;
    EXPECTF(spm_load_model(FIX "spiece.model", &m, &err) == 0, "%s", err.msg);
    if (err.code) return;
    size_t len = 0;
    char *ours = spm_to_tokenizer_json(&m, 10, &len, &err);
    spm_model_free(&m);
    EXPECTF(ours != NULL, "%s", err.msg);
    size_t rlen = 0;
    char *ref = lb_read_file(FIX "tokenizer.json", &rlen, &err);
    EXPECTF(ref != NULL, "%s", err.msg);
    if (!ours || !ref) goto done;
    cJSON *a = cJSON_Parse(ours), *b = cJSON_Parse(ref);
    EXPECT(a != NULL && b != NULL);
    char where[512] = "";
    EXPECTF(json_equal(a, b, where, sizeof where, "$"), "%s", where);
    // Spot checks of what the converter must produce (independent of json_equal).
    const cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "model"), "vocab");
    EXPECTF(cJSON_GetArraySize(vocab) == 1010, "%d", cJSON_GetArraySize(vocab));
    EXPECT(!strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, 1000), 0)->valuestring,
                   "<extra_id_9>"));
    EXPECT(!strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, 1009), 0)->valuestring,
                   "<extra_id_0>"));
    const cJSON *added = cJSON_GetObjectItem(a, "added_tokens");
    EXPECTF(cJSON_GetArraySize(added) == 13, "%d added tokens", cJSON_GetArraySize(added));
    // The layout is tokenizers' own pretty printer, so the bytes agree too.
    EXPECTF(len == rlen && memcmp(ours, ref, len) == 0, "ours %zu bytes, fixture %zu", len, rlen);
    cJSON_Delete(a);
    cJSON_Delete(b);
done:
    free(ours);
    free(ref);
}

// ---- a hand-built ModelProto ----

typedef struct {
    unsigned char b[4096];
    size_t n;
} pbw_t;

static void w_varint(pbw_t *w, uint64_t v) {
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        w->b[w->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void w_tag(pbw_t *w, int field, int wire) { w_varint(w, (uint64_t)field << 3 | (uint64_t)wire); }
static void w_bytes(pbw_t *w, int field, const void *p, size_t n) {
    w_tag(w, field, 2);
    w_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void w_piece(pbw_t *w, const char *s, float score, int type) {
    pbw_t p = {.n = 0};
    w_bytes(&p, 1, s, strlen(s));
    w_tag(&p, 2, 5);
    uint32_t u;
    memcpy(&u, &score, 4);
    for (int i = 0; i < 4; i++) p.b[p.n++] = (unsigned char)(u >> (8 * i));
    if (type != SPM_NORMAL) {
        w_tag(&p, 3, 0);
        w_varint(&p, (uint64_t)type);
    }
    w_bytes(w, 1, p.b, p.n);
}

static void build_small(pbw_t *w, int model_type, int with_eos) {
    w->n = 0;
    w_piece(w, "<unk>", 0, SPM_UNKNOWN);
    if (with_eos) w_piece(w, "</s>", 0, SPM_CONTROL);
    w_piece(w, "<sep>", 0, SPM_USER_DEFINED);
    w_piece(w, "\xe2\x96\x81" "a", -1.5f, SPM_NORMAL);
    w_piece(w, "q\"\\\t", -1e-7f, SPM_NORMAL);
    w_piece(w, "big", -123456.75f, SPM_NORMAL);
    w_piece(w, "tiny", -3.0e-5f, SPM_NORMAL);
    pbw_t t = {.n = 0};
    w_tag(&t, 3, 0);
    w_varint(&t, (uint64_t)model_type);
    w_tag(&t, 35, 0);  // byte_fallback
    w_varint(&t, 1);
    w_tag(&t, 40, 0);  // unk_id 0
    w_varint(&t, 0);
    w_tag(&t, 42, 0);  // eos_id 1
    w_varint(&t, 1);
    w_tag(&t, 99, 2);  // an unknown field: skipped
    w_varint(&t, 3);
    memcpy(t.b + t.n, "xyz", 3);
    t.n += 3;
    w_bytes(w, 2, t.b, t.n);
    pbw_t nz = {.n = 0};
    w_bytes(&nz, 1, "identity", 8);
    w_tag(&nz, 3, 0);  // add_dummy_prefix false
    w_varint(&nz, 0);
    w_bytes(w, 3, nz.b, nz.n);
}

static void test_small_model(void) {
    pbw_t w;
    build_small(&w, 1, 1);
    spm_model_t m;
    lb_err_t err = {0};
    EXPECTF(spm_parse_model(w.b, w.n, "small.model", &m, &err) == 0, "%s", err.msg);
    if (err.code) return;
    EXPECT(m.n_pieces == 7 && m.byte_fallback == 1 && m.add_dummy_prefix == 0);
    EXPECT(m.remove_extra_whitespaces == 1);  // proto default when absent
    EXPECT(m.charsmap_len == 0 && !strcmp(m.normalizer_name, "identity"));
    char *json = spm_to_tokenizer_json(&m, 3, NULL, &err);
    EXPECTF(json != NULL, "%s", err.msg);
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    EXPECT(j != NULL);
    if (j) {
        // No charsmap: the normalizer is the Replace alone.
        const cJSON *norms = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "normalizer"), "normalizers");
        EXPECT(cJSON_GetArraySize(norms) == 1);
        EXPECT(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(norms, 0), "type")->valuestring, "Replace"));
        const cJSON *pre = cJSON_GetObjectItem(j, "pre_tokenizer");
        EXPECT(!strcmp(cJSON_GetObjectItem(pre, "prepend_scheme")->valuestring, "never"));
        const cJSON *model = cJSON_GetObjectItem(j, "model");
        EXPECT(cJSON_GetObjectItem(model, "unk_id")->valueint == 0);
        EXPECT(cJSON_IsFalse(cJSON_GetObjectItem(model, "byte_fallback")));  // as transformers
        const cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
        EXPECT(cJSON_GetArraySize(vocab) == 10);
        const float scores[] = {0, 0, 0, -1.5f, -1e-7f, -123456.75f, -3.0e-5f};
        for (int i = 0; i < 7 && i < cJSON_GetArraySize(vocab); i++) {
            double got = cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, i), 1)->valuedouble;
            EXPECTF(got == (double)scores[i], "score %d: %.17g vs %.17g", i, got, (double)scores[i]);
        }
        EXPECT(!strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, 4), 0)->valuestring, "q\"\\\t"));
        EXPECT(!strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, 7), 0)->valuestring, "<extra_id_2>"));
        EXPECT(!strcmp(cJSON_GetArrayItem(cJSON_GetArrayItem(vocab, 9), 0)->valuestring, "<extra_id_0>"));
        // added: <unk> (special), </s> (special), <sep> (user-defined: not special), 3 sentinels
        const cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
        EXPECT(cJSON_GetArraySize(added) == 6);
        const cJSON *sep = cJSON_GetArrayItem(added, 2);
        EXPECT(sep && !strcmp(cJSON_GetObjectItem(sep, "content")->valuestring, "<sep>"));
        EXPECT(sep && cJSON_IsFalse(cJSON_GetObjectItem(sep, "special")));
        EXPECT(sep && cJSON_GetObjectItem(sep, "id")->valueint == 2);
        const cJSON *x0 = cJSON_GetArrayItem(added, 5);
        EXPECT(x0 && cJSON_GetObjectItem(x0, "id")->valueint == 9 &&
               !strcmp(cJSON_GetObjectItem(x0, "content")->valuestring, "<extra_id_0>"));
        const cJSON *st = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "post_processor"), "special_tokens"), "</s>");
        EXPECT(st && cJSON_GetArrayItem(cJSON_GetObjectItem(st, "ids"), 0)->valueint == 1);
        cJSON_Delete(j);
    }
    free(json);
    spm_model_free(&m);
}

static void test_errors(void) {
    pbw_t w;
    spm_model_t m;
    lb_err_t err = {0};
    // Not Unigram (BPE).
    build_small(&w, 2, 1);
    EXPECT(spm_parse_model(w.b, w.n, "bpe.model", &m, &err) == 0);
    EXPECT(spm_to_tokenizer_json(&m, 0, NULL, &err) == NULL && strstr(err.msg, "Unigram"));
    spm_model_free(&m);
    // No </s>.
    build_small(&w, 1, 0);
    EXPECT(spm_parse_model(w.b, w.n, "noeos.model", &m, &err) == 0);
    EXPECT(spm_to_tokenizer_json(&m, 0, NULL, &err) == NULL && strstr(err.msg, "</s>"));
    spm_model_free(&m);
    // Truncated file: the message names it.
    build_small(&w, 1, 1);
    memset(&err, 0, sizeof err);
    EXPECT(spm_parse_model(w.b, w.n - 5, "cut.model", &m, &err) == -1);
    EXPECTF(strstr(err.msg, "cut.model") != NULL, "%s", err.msg);
    // Text is not a model.
    const char *text = "Package: foo\n";
    EXPECT(spm_parse_model(text, strlen(text), "text.model", &m, &err) == -1);
    EXPECT(spm_load_model("tests/fixtures/does-not-exist.model", &m, &err) == -1 &&
           strstr(err.msg, "does-not-exist.model"));
}

int main(void) {
    RUN(test_parse_fixture_model);
    RUN(test_convert_matches_fixture);
    RUN(test_small_model);
    RUN(test_errors);
    TH_DONE();
}
