#include "evaluate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"

typedef struct {
    int *ids;
    int n;
} enc_t;

typedef struct {
    int len, idx;
} len_idx_t;

static int by_length(const void *a, const void *b) {
    const len_idx_t *x = a, *y = b;
    return x->len != y->len ? (x->len > y->len ? -1 : 1) : (x->idx - y->idx);
}

int evaluate_split(const t5_model_t *m, const tokenizer_t *tok, const data_split_t *split,
                   const eval_opts_t *o, eval_result_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    int n = split->n;
    if (o->limit > 0 && o->limit < n) n = o->limit;
    if (n <= 0) return lb_err_set(err, LB_EARG, "the %s split has no examples to evaluate", split->name);
    enc_t *enc = xcalloc((size_t)n, sizeof(enc_t));
    int eos = tokenizer_eos_id(tok), rc = -1;
    for (int i = 0; i < n; i++) {
        if (tokenizer_encode(tok, split->ex[i].source, 1, &enc[i].ids, &enc[i].n, err)) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            lb_err_set(err, LB_EFORMAT, "%s line %d: %s", split->path ? split->path : split->name, split->ex[i].line, msg);
            n = i;
            goto done;
        }
        enc[i].n = data_truncate_ids(enc[i].ids, enc[i].n, o->max_source_tokens, eos);
    }
    // Longest first, so that a batch holds inputs of similar length (little padding).
    len_idx_t *li = xmalloc(sizeof(len_idx_t) * (size_t)n);
    for (int i = 0; i < n; i++) li[i] = (len_idx_t){enc[i].n, i};
    qsort(li, (size_t)n, sizeof *li, by_length);
    int *order = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) order[i] = li[i].idx;
    free(li);
    out->n = n;
    out->predictions = xcalloc((size_t)n, sizeof(char *));
    out->per = xcalloc((size_t)n, sizeof(rouge_scores_t));
    generate_opts_t go;
    generate_opts_default(&go);
    go.num_beams = o->beams > 0 ? o->beams : 1;
    go.max_new_tokens = o->max_new_tokens > 0 ? o->max_new_tokens : 48;
    go.length_penalty = (float)o->length_penalty;
    go.no_repeat_ngram_size = o->no_repeat_ngram_size;
    int bs = o->batch_size > 0 ? o->batch_size : 8;
    int pad = m->cfg.pad_token_id;
    double t0 = lb_now();
    for (int start = 0; start < n; start += bs) {
        if (o->stop && *o->stop) {  // within one generated batch of a cancel
            lb_err_set(err, LB_ESTOPPED, "the evaluation was stopped on request after %d of %d examples", start, n);
            free(order);
            goto done;
        }
        int B = n - start < bs ? n - start : bs, S = 0;
        for (int b = 0; b < B; b++)
            if (enc[order[start + b]].n > S) S = enc[order[start + b]].n;
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)S);
        int32_t *mask = xcalloc((size_t)B * (size_t)S, sizeof(int32_t));
        for (int b = 0; b < B; b++) {
            const enc_t *e = &enc[order[start + b]];
            for (int s = 0; s < S; s++) {
                ids[b * S + s] = s < e->n ? e->ids[s] : pad;
                mask[b * S + s] = s < e->n;
            }
        }
        generate_result_t gr;
        int grc = generate_batch(m, ids, mask, B, S, &go, &gr, err);
        free(ids);
        free(mask);
        if (grc) {
            free(order);
            goto done;
        }
        for (int b = 0; b < B; b++) {
            int i = order[start + b];
            // Skip the decoder start token; decode up to and including the first </s>.
            out->predictions[i] = tokenizer_decode(tok, gr.ids + (size_t)b * gr.L + 1, gr.n_new[b], 1);
            out->generated_tokens += gr.n_new[b];
        }
        generate_result_free(&gr);
        if (o->progress) o->progress(o->ctx, start + B, n);
    }
    out->generate_s = lb_now() - t0;
    free(order);
    for (int i = 0; i < n; i++) {
        const data_example_t *ex = &split->ex[i];
        if (rouge_score_multi((const char *const *)ex->refs, ex->n_refs, out->predictions[i], o->stem, &out->per[i], err))
            goto done;
    }
    if (rouge_aggregate(out->per, n, 1000, o->seed, &out->agg, err)) goto done;
    rc = 0;
done:
    for (int i = 0; i < split->n && i < (o->limit > 0 ? o->limit : split->n); i++) free(enc[i].ids);
    free(enc);
    if (rc) evaluate_result_free(out);
    return rc;
}

void evaluate_result_free(eval_result_t *r) {
    if (r->predictions)
        for (int i = 0; i < r->n; i++) free(r->predictions[i]);
    free(r->predictions);
    free(r->per);
    memset(r, 0, sizeof *r);
}
