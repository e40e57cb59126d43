// libFuzzer target: SentencePiece ModelProto parsing (spm_parse_model), conversion to
// tokenizer.json (spm_to_tokenizer_json), and loading the converted text with our own
// tokenizer, encoding and decoding a few strings with it; the charsmap bytes of the model
// reach the tokenizer's Precompiled normalizer this way.
#include <string.h>

#include "fuzz_check.h"
#include "spm.h"
#include "tokenizer.h"

static const char *const spm_texts[] = {"Hello  world, A \xef\xac\x81ne day.", "", " ",
                                        "caf\xc3\xa9 <sep> </s> \xe2\x96\x81x 123"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spm_model_t m;
    lb_err_t err = {0};
    if (spm_parse_model(data, size, "spiece.model", &m, &err) != 0) {
        FUZZ_CHECK(strstr(err.msg, "spiece.model") != NULL);  // a refusal names the file
        return 0;
    }
    FUZZ_CHECK(m.n_pieces >= 0 && (m.n_pieces == 0 || m.pieces != NULL));
    for (int i = 0; i < m.n_pieces; i++) FUZZ_CHECK(m.pieces[i].piece != NULL);
    size_t len = 0;
    char *json = spm_to_tokenizer_json(&m, (int)(size % 3), &len, &err);
    if (json) {
        FUZZ_CHECK(strlen(json) == len);
        lb_err_t terr = {0};
        tokenizer_t *tok = tokenizer_load_json(json, len, "converted", &terr);
        if (tok) {
            for (size_t i = 0; i < sizeof spm_texts / sizeof *spm_texts; i++) {
                int *ids = NULL, n = 0;
                if (tokenizer_encode(tok, spm_texts[i], 1, &ids, &n, &terr) != 0) continue;
                for (int j = 0; j < n; j++)
                    FUZZ_CHECK(ids[j] >= 0 && ids[j] < tokenizer_vocab_size(tok));
                free(tokenizer_decode(tok, ids, n, 1));
                free(tokenizer_decode(tok, ids, n, 0));
                free(ids);
            }
            tokenizer_free(tok);
        }
        free(json);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
    spm_model_free(&m);
    return 0;
}
