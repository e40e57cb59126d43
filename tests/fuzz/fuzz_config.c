// libFuzzer target: Hugging Face config.json parsing (t5_config_parse). Beyond "no crash",
// an accepted config must satisfy what the model code relies on, and a refusal must name
// the file.
#include <string.h>

#include "fuzz_check.h"
#include "t5_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);  // the parser takes NUL-terminated text
    memcpy(json, data, size);
    json[size] = '\0';
    t5_config_t c;
    lb_err_t err = {0};
    if (t5_config_parse(&c, json, "config.json", &err) == 0) {
        FUZZ_CHECK(c.vocab_size >= 1 && c.d_model >= 1 && c.d_kv >= 1 && c.d_ff >= 1 &&
                   c.num_layers >= 1 && c.num_heads >= 1 && c.num_decoder_layers >= 1 &&
                   c.relative_attention_num_buckets >= 1 &&
                   c.relative_attention_max_distance >= 1);
        FUZZ_CHECK(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size && c.eos_token_id >= 0 &&
                   c.eos_token_id < c.vocab_size && c.decoder_start_token_id >= 0 &&
                   c.decoder_start_token_id < c.vocab_size);
        // engine/model/t5_params.c computes these in int (inner = H·K; the parameter table's size).
        FUZZ_CHECK((int64_t)c.num_heads * c.d_kv <= INT32_MAX);
        FUZZ_CHECK(8 + 12 * (int64_t)c.num_layers + 18 * (int64_t)c.num_decoder_layers <= INT32_MAX);
        FUZZ_CHECK(c.layer_norm_epsilon >= 0 && c.dropout_rate >= 0 && c.dropout_rate < 1);
        FUZZ_CHECK(memchr(c.feed_forward_proj, '\0', sizeof c.feed_forward_proj) != NULL);
        FUZZ_CHECK((int)c.act >= T5_ACT_RELU && (int)c.act <= T5_ACT_SILU);
        FUZZ_CHECK(strcmp(t5_act_name(c.act), "?") != 0);
    } else {
        FUZZ_CHECK(strstr(err.msg, "config.json") != NULL);  // every refusal names the file
    }
    free(json);
    return 0;
}
