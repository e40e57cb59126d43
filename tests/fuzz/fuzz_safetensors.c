// libFuzzer target: the safetensors header and offsets validation, then reading every
// floating tensor it accepted.
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file_t f;
    lb_err_t err;
    if (st_parse(&f, data, size, "fuzz", &err) != 0) return 0;
    for (int i = 0; i < f.n; i++) {
        const st_tensor_t *t = &f.tensors[i];
        if (t->numel > (1u << 20)) continue;
        float *buf = malloc(t->numel * sizeof(float) + 1);
        st_to_f32(t, buf, &err);
        free(buf);
    }
    st_close(&f);
    return 0;
}
