#include "analysis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lora_t5.h"
#include "safetensors.h"
#include "sha256.h"
#include "t5.h"
#include "t5_config.h"

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int analysis_run_find(store_t *st, const char *workspace, int64_t id, analysis_run_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    store_run_t r;
    if (store_run_get(st, id, &r, err)) return -1;
    char *dir = NULL;
    int rc = -1;
    if (store_run_dir(workspace, id, 0, &dir, err)) goto out;
    snprintf(out->base, sizeof out->base, "%s", r.base_model ? r.base_model : "");
    out->full = r.method && strcmp(r.method, "lora") != 0;
    snprintf(out->run_dir, sizeof out->run_dir, "%s", dir);
    snprintf(out->dir, sizeof out->dir, "%s/%s", out->run_dir, out->full ? "model" : "adapter");
    snprintf(out->weights, sizeof out->weights, "%s/%s", out->dir,
             out->full ? "model.safetensors" : "adapter_model.safetensors");
    if (r.method && !strcmp(r.method, "none")) {
        lb_err_set(err, LB_EARG, "run %lld (%s) trains nothing (method none), so there is nothing to analyse; "
                   "pick a lora, full or partial run", (long long)id, r.name);
        goto out;
    }
    if (!is_file(out->weights)) {
        lb_err_set(err, LB_EIO, "run %lld (%s, %s) has no %s yet; analyse it once it is done", (long long)id, r.name,
                   r.status ? r.status : "?", out->weights);
        goto out;
    }
    if (!out->base[0]) {
        lb_err_set(err, LB_EARG, "run %lld has no base model recorded; use --model and --%s instead", (long long)id,
                   out->full ? "finetuned" : "adapter");
        goto out;
    }
    rc = 0;
out:
    free(dir);
    store_run_clear(&r);
    return rc;
}

// The shape of base's config.json, for lora_load.
static int base_shape(const char *base, lora_shape_t *shape, lb_err_t *err) {
    t5_config_t cfg;
    if (t5_config_load(&cfg, base, err)) return -1;
    lora_shape_from_t5(&cfg, shape);
    return 0;
}

static int adapter_analyze(const char *base, const char *adapter_dir, const analyze_progress_t *progress,
                           analyze_result_t *out, lb_err_t *err) {
    // Only the adapted modules' weights are read (for ‖W‖), not the whole model.
    lora_shape_t shape;
    if (base_shape(base, &shape, err)) return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", base);
    st_file_t st;
    if (st_open(&st, path, err)) return -1;
    lora_adapter_t a;
    int rc = -1;
    if (lora_load(&a, adapter_dir, &shape, err) == 0) {
        rc = analyze_lora(&a, &st, progress, out, err);
        lora_free(&a);
    }
    st_close(&st);
    return rc;
}

int analysis_adapter(const char *base, const char *adapter_dir, analyze_result_t *out, lb_err_t *err) {
    return adapter_analyze(base, adapter_dir, NULL, out, err);
}

static int finetuned_analyze(const char *base, const char *tuned_dir, const analyze_progress_t *progress,
                             analyze_result_t *out, lb_err_t *err) {
    t5_model_t mb, mt;
    if (t5_load(&mb, base, err)) return -1;
    if (t5_load(&mt, tuned_dir, err)) {
        t5_free(&mb);
        return -1;
    }
    int rc = analyze_full(&mb, &mt, progress, out, err);
    t5_free(&mt);
    t5_free(&mb);
    return rc;
}

int analysis_finetuned(const char *base, const char *tuned_dir, analyze_result_t *out, lb_err_t *err) {
    return finetuned_analyze(base, tuned_dir, NULL, out, err);
}

int analysis_adapters_similarity(const char *base, const char *dir_a, const char *dir_b, analyze_sim_t **out,
                                 int *n, lb_err_t *err) {
    lora_shape_t shape;
    if (base_shape(base, &shape, err)) return -1;
    lora_adapter_t a, b;
    if (lora_load(&a, dir_a, &shape, err)) return -1;
    if (lora_load(&b, dir_b, &shape, err)) {
        lora_free(&a);
        return -1;
    }
    int rc = analyze_similarity(&a, &b, out, n, err);
    lora_free(&a);
    lora_free(&b);
    return rc;
}

int analysis_of_run(store_t *st, const char *workspace, int64_t id, analyze_result_t *out, int *cached,
                    char *cache_path, size_t cap, lb_err_t *err) {
    if (cached) *cached = 0;
    analysis_run_t r;
    if (analysis_run_find(st, workspace, id, &r, err)) return -1;
    return analysis_of_found_run(&r, NULL, out, cached, cache_path, cap, err);
}

int analysis_of_found_run(const analysis_run_t *r, const analyze_progress_t *progress, analyze_result_t *out,
                          int *cached, char *cache_path, size_t cap, lb_err_t *err) {
    if (cached) *cached = 0;
    char hex[65], path[4200];
    size_t bytes;
    if (sha256_file(r->weights, hex, &bytes, err)) return -1;
    snprintf(path, sizeof path, "%s/analysis.json", r->run_dir);
    if (cache_path) snprintf(cache_path, cap, "%s", path);
    if (is_file(path)) {
        lb_err_t e2 = {0};
        size_t len;
        char *text = lb_read_file(path, &len, &e2), *key = NULL;
        // A cache that cannot be read or is stale is computed again, never an error.
        if (text && analyze_from_json(text, path, out, &key, &e2) == 0) {
            int fresh = key && !strcmp(key, hex) && out->full == r->full;
            free(key);
            free(text);
            if (fresh) {
                if (cached) *cached = 1;
                return 0;
            }
            analyze_result_free(out);
        } else {
            free(text);
        }
    }
    if (r->full ? finetuned_analyze(r->base, r->dir, progress, out, err)
                : adapter_analyze(r->base, r->dir, progress, out, err))
        return -1;
    char *json = analyze_to_json(out, NULL, 0, hex);
    lb_err_t werr = {0};
    // The cache is only a saving: a read-only run folder still gets its analysis.
    lb_write_file_atomic(path, json, strlen(json), &werr);
    free(json);
    return 0;
}

int analysis_runs_find_pair(store_t *st, const char *workspace, int64_t id_a, int64_t id_b, analysis_run_t *ra,
                            analysis_run_t *rb, lb_err_t *err) {
    if (analysis_run_find(st, workspace, id_a, ra, err) || analysis_run_find(st, workspace, id_b, rb, err)) return -1;
    if (ra->full || rb->full)
        return lb_err_set(err, LB_EARG, "the subspace similarity compares two LoRA adapters, and run %lld is a full "
                          "fine-tune; pick two LoRA runs", (long long)(ra->full ? id_a : id_b));
    return 0;
}

int analysis_runs_similarity(store_t *st, const char *workspace, int64_t id_a, int64_t id_b, analyze_sim_t **out,
                             int *n, lb_err_t *err) {
    analysis_run_t ra, rb;
    if (analysis_runs_find_pair(st, workspace, id_a, id_b, &ra, &rb, err)) return -1;
    return analysis_adapters_similarity(ra.base, ra.dir, rb.dir, out, n, err);
}
