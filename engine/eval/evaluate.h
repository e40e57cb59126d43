// Evaluation of a model on a data split: generate a summary for each source (greedy or
// beam search), score it with ROUGE against the references, aggregate with a seeded
// bootstrap interval. Used by the runner and by `lorabench eval`.
#ifndef LB_EVALUATE_H
#define LB_EVALUATE_H

#include <stdint.h>

#include "data.h"
#include <signal.h>

#include "rouge.h"
#include "t5.h"
#include "tokenizer.h"

typedef struct {
    int limit;                 // examples from the start of the split; 0 = all
    int beams, max_new_tokens;
    double length_penalty;
    int no_repeat_ngram_size;
    int stem;                  // Porter stemming in ROUGE
    int max_source_tokens;     // truncation of the inputs (0 = none), keeping </s>
    int batch_size;            // inputs generated together
    uint64_t seed;             // bootstrap
    // Called after each batch (may be NULL).
    void (*progress)(void *ctx, int done, int total);
    void *ctx;
    // When set (a cancel or SIGTERM handler of the caller), evaluation stops before the next
    // batch: evaluate_split returns -1 with err->code LB_ESTOPPED. NULL: never.
    volatile sig_atomic_t *stop;
} eval_opts_t;

typedef struct {
    int n;
    char **predictions;        // [n] decoded, special tokens skipped
    rouge_scores_t *per;       // [n] against the example's references (best per type)
    rouge_agg_t agg;           // mean and 95% bootstrap interval
    long generated_tokens;     // new tokens up to and including </s>
    double generate_s;         // wall time spent generating
} eval_result_t;

int evaluate_split(const t5_model_t *m, const tokenizer_t *tok, const data_split_t *split,
                   const eval_opts_t *o, eval_result_t *out, lb_err_t *err);

void evaluate_result_free(eval_result_t *r);

#endif
