// libFuzzer target: adapter_config.json parsing and target resolution on a small model.
#include "lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const lora_shape_t s = {.d_model = 8, .inner = 8, .d_ff = 16, .vocab = 32,
                                   .n_enc = 2, .n_dec = 2, .gated = 1, .n_heads = 2, .buckets = 4};
    lora_config_t cfg;
    lb_err_t err;
    if (lora_parse_config((const char *)data, size, "fuzz", &cfg, &err) != 0) return 0;
    lora_adapter_t a;
    if (lora_create(&a, &cfg, &s, &err) == 0) lora_free(&a);
    return 0;
}
