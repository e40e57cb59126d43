#include "t5_save.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// Copies one file (atomically at the destination); a missing source is an error.
static int lb_copy_file(const char *src, const char *dst, lb_err_t *err) {
    size_t len;
    char *buf = lb_read_file(src, &len, err);
    if (!buf) return -1;
    int rc = lb_write_file_atomic(dst, buf, len, err);
    free(buf);
    return rc;
}

int t5_save(const t5_model_t *m, const char *src_dir, const char *out_dir, lb_err_t *err) {
    return t5_save_dtype(m, src_dir, out_dir, ST_F32, err);
}

int t5_save_dtype(const t5_model_t *m, const char *src_dir, const char *out_dir, st_dtype_t dtype, lb_err_t *err) {
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return lb_err_set(err, LB_EIO, "cannot create the model folder %s: %s", out_dir, strerror(errno));
    char src[4096], dst[4096];
    static const char *copy[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                 "special_tokens_map.json", "spiece.model", "generation_config.json"};
    for (size_t i = 0; i < sizeof copy / sizeof copy[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", src_dir, copy[i]);
        snprintf(dst, sizeof dst, "%s/%s", out_dir, copy[i]);
        if (access(src, R_OK) != 0) {
            if (i == 0) return lb_err_set(err, LB_EIO, "%s is missing; the model folder needs its config.json", src);
            continue;
        }
        if (lb_copy_file(src, dst, err)) return -1;
    }
    st_out_t *ts = xcalloc((size_t)m->n_params, sizeof(st_out_t));
    float **tmp = xcalloc((size_t)m->n_params, sizeof(float *));  // fp32 of bf16-held weights
    for (int i = 0; i < m->n_params; i++) {
        const lb_param_t *p = &m->params[i];
        ts[i].name = p->name;
        ts[i].data = p->w;
        if (p->w16) {  // its bf16 values, exactly (and exactly again when written as BF16)
            tmp[i] = xmalloc(p->numel * sizeof(float));
            for (size_t k = 0; k < p->numel; k++) tmp[i][k] = lb_bf16_to_f32(p->w16[k]);
            ts[i].data = tmp[i];
        }
        ts[i].ndim = p->ndim;
        ts[i].shape[0] = p->shape[0];
        ts[i].shape[1] = p->shape[1];
    }
    snprintf(dst, sizeof dst, "%s/model.safetensors", out_dir);
    int rc = st_write_dtype(dst, ts, m->n_params, NULL, dtype, err);
    for (int i = 0; i < m->n_params; i++) free(tmp[i]);
    free(tmp);
    free(ts);
    return rc;
}
