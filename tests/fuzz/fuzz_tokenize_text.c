// libFuzzer target: arbitrary text (any bytes, invalid UTF-8 included) encoded with the
// two fixture tokenizers (t5-gated-a: NFKC + WhitespaceSplit/Metaspace; t5-spm-tokenizer:
// a real SentencePiece charsmap), loaded once; then decoded. Run from the repository root.
#include <string.h>

#include "fuzz_check.h"
#include "tokenizer.h"
#include "unicode_norm.h"

static const char *const text_tok_paths[2] = {
    "tests/fixtures/hf/t5-gated-a/tokenizer.json",
    "tests/fixtures/hf/t5-spm-tokenizer/tokenizer.json"};
static tokenizer_t *text_toks[2];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; i++) {
        lb_err_t err = {0};
        text_toks[i] = tokenizer_load(text_tok_paths[i], &err);
        if (!text_toks[i]) {
            fprintf(stderr, "fuzz_tokenize_text: %s (run from the repository root)\n", err.msg);
            exit(1);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int i = 0; i < 2; i++) {
        const tokenizer_t *tok = text_toks[i];
        int v = tokenizer_vocab_size(tok);
        for (int special = 0; special < 2; special++) {
            int *ids = NULL, n = 0, rc, valid;
            lb_err_t err = {0};
            if (special) {
                // Any bytes, NULs included, with the template's </s>.
                rc = tokenizer_encode_n(tok, (const char *)data, size, 1, &ids, &n, &err);
                valid = lb_utf8_invalid_at((const char *)data, size) == (size_t)-1;
            } else {
                // The first half as a C string.
                char *s = malloc(size / 2 + 1);
                memcpy(s, data, size / 2);
                s[size / 2] = '\0';
                rc = tokenizer_encode(tok, s, 0, &ids, &n, &err);
                valid = lb_utf8_invalid_at(s, strlen(s)) == (size_t)-1;
                free(s);
            }
            // Both fixtures have an unk token: only invalid UTF-8 is refused, with a message.
            FUZZ_CHECK(rc == 0 ? valid : !valid && err.msg[0] != '\0');
            if (rc != 0) continue;
            FUZZ_CHECK(n >= 0);
            if (special) FUZZ_CHECK(n >= 1 && ids[n - 1] == tokenizer_eos_id(tok));
            for (int j = 0; j < n; j++) FUZZ_CHECK(ids[j] >= 0 && ids[j] < v);
            free(tokenizer_decode(tok, ids, n, 1));
            free(tokenizer_decode(tok, ids, n, 0));
            free(ids);
        }
    }
    return 0;
}
