// libFuzzer target: tokenizer.json loading (tokenizer_load_json), then encoding and
// decoding a few fixed strings with whatever tokenizer was accepted, and the id/piece
// lookups. Ids must lie below tokenizer_vocab_size.
#include <string.h>

#include "fuzz_check.h"
#include "tokenizer.h"

static const char *const tok_texts[] = {
    "Hello world", "", "   ", "A \xef\xac\x81ne  caf\xc3\xa9, <pad> </s> <extra_id_0>!",
    "[SEP] x [SEP]", "\xc3\xa9\xe2\x96\x81\xe2\x96\x81 tab\tnew\nline \xf0\x9f\x98\x80",
    "``quoted``  fine"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lb_err_t err = {0};
    tokenizer_t *tok = tokenizer_load_json((const char *)data, size, "tokenizer.json", &err);
    if (!tok) {
        FUZZ_CHECK(strstr(err.msg, "tokenizer.json") != NULL);  // a refusal names the file
        return 0;
    }
    int v = tokenizer_vocab_size(tok);
    FUZZ_CHECK(v >= 0);
    for (size_t i = 0; i < sizeof tok_texts / sizeof *tok_texts; i++) {
        for (int special = 0; special < 2; special++) {
            int *ids = NULL, n = 0;
            lb_err_t e = {0};
            if (tokenizer_encode(tok, tok_texts[i], special, &ids, &n, &e) != 0) {
                FUZZ_CHECK(e.msg[0] != '\0');
                continue;
            }
            FUZZ_CHECK(n >= 0);
            for (int j = 0; j < n; j++) FUZZ_CHECK(ids[j] >= 0 && ids[j] < v);
            free(tokenizer_decode(tok, ids, n, special));
            free(ids);
        }
    }
    // Ids the model does not know are dropped by decode, never read out of bounds.
    int odd[] = {-1, 0, 1, 2, v - 1, v, v + 1, 1 << 30};
    free(tokenizer_decode(tok, odd, 8, 0));
    free(tokenizer_decode(tok, odd, 8, 1));
    for (int i = 0; i < 8; i++) {
        const char *p = tokenizer_id_to_piece(tok, odd[i]);
        FUZZ_CHECK(p == NULL || tokenizer_piece_to_id(tok, p) >= 0);
        (void)tokenizer_is_special(tok, odd[i]);
    }
    (void)tokenizer_eos_id(tok);
    (void)tokenizer_pad_id(tok);
    (void)tokenizer_unk_id(tok);
    tokenizer_free(tok);
    return 0;
}
