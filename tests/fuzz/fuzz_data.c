// libFuzzer target: data set files. The first input byte picks the format (.jsonl, .json,
// .csv, .tsv) and the options (explicit or detected fields, prefix, template or a ratio
// split, truncation, batch size); the rest is written to a temporary file under /tmp with
// that extension (the loaders read files; data.h has no in-memory entry point) and loaded.
// Accepted data then goes through tokenization (a byte-per-token stand-in encoder),
// statistics, a batch plan and the tensors of the first batch.
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "fuzz_check.h"

static const char *const data_exts[4] = {"jsonl", "json", "csv", "tsv"};

// One id per byte (at most 200, so that units stay fast), then </s> = 1.
static int encode_bytes(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    (void)ctx;
    (void)err;
    size_t len = strlen(text);
    if (len > 200) len = 200;
    *ids = malloc((len + 1) * sizeof **ids);
    for (size_t i = 0; i < len; i++) (*ids)[i] = 2 + (unsigned char)text[i];
    (*ids)[len] = 1;
    *n = (int)len + 1;
    return 0;
}

static void check_split(const data_split_t *sp, uint8_t flags) {
    FUZZ_CHECK(sp->n >= 1 && sp->ex && sp->path && sp->source_field && sp->target_fields);
    for (int i = 0; i < sp->n; i++) {
        const data_example_t *e = &sp->ex[i];
        FUZZ_CHECK(e->source && e->n_refs >= 1 && e->line >= 1);
        for (int r = 0; r < e->n_refs; r++) FUZZ_CHECK(e->refs[r] != NULL);
    }
    lb_err_t err = {0};
    data_tokenized_t tok;
    int rc = data_tokenize_split(sp, encode_bytes, NULL, flags & 8 ? 16 : 0, flags & 8 ? 8 : 0,
                                 flags & 16 ? 1 : -1, &tok, &err);
    FUZZ_CHECK(rc == 0);
    if (rc) return;
    data_stats_t st;
    data_stats_compute(&tok, &st);
    FUZZ_CHECK(st.n == sp->n && st.src_p50 <= st.src_max && st.trunc_frac >= 0 &&
               st.trunc_frac <= 1);
    data_plan_t plan;
    int bs = 1 + (flags >> 5);
    if (data_plan_batches(&tok, bs, flags & 1 ? 4 : 1, flags, &plan, &err) == 0) {
        FUZZ_CHECK(plan.n_batches >= 1 && plan.start[plan.n_batches] == sp->n);
        int *seen = calloc((size_t)sp->n, sizeof *seen);  // every example exactly once
        for (int i = 0; i < sp->n; i++) {
            int k = plan.order[i];
            FUZZ_CHECK(k >= 0 && k < sp->n);
            if (k >= 0 && k < sp->n) FUZZ_CHECK(seen[k]++ == 0);
        }
        free(seen);
        data_batch_t b;
        int nb = plan.start[1] - plan.start[0];
        if (data_batch_make(&tok, plan.order, nb, 0, 0, &b, &err) == 0) {
            FUZZ_CHECK(b.B == nb);
            data_batch_free(&b);
        }
        data_plan_free(&plan);
    }
    data_tokenized_free(&tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t flags = data[0];
    char path[64];
    snprintf(path, sizeof path, "/tmp/lb-fuzz-data-%d.%s", (int)getpid(), data_exts[flags & 3]);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size > 1) fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    data_options_t opt = {0};
    if (flags & 4) {
        opt.source_field = "text";
        opt.target_field = flags & 8 ? "summary,title" : "summary";
    }
    switch ((flags >> 4) & 3) {
    case 1: opt.prefix = "summarize: "; break;
    case 2: opt.template_text = "Summarize:\n{source}\nSummary: "; break;
    case 3: opt.split_ratio[0] = 0.5, opt.split_ratio[1] = 0.25, opt.split_ratio[2] = 0.25; break;
    }
    opt.seed = flags;
    lb_err_t err = {0};
    data_set_t ds;
    if (data_set_load(path, &opt, &ds, &err) == 0) {
        FUZZ_CHECK(ds.n_splits >= 1 && ds.n_splits <= DATA_MAX_SPLITS);
        for (int i = 0; i < ds.n_splits; i++) check_split(&ds.split[i], flags);
        data_set_free(&ds);
    } else {
        FUZZ_CHECK(strstr(err.msg, "lb-fuzz-data") != NULL);  // every refusal names the file
    }
    unlink(path);
    return 0;
}
