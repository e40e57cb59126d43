// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as Google's rouge-score package
// computes them, so that the numbers match what the rest of the field reports:
//
// - tokens: lower-case (Python's str.lower, whose only non-ASCII effects that survive are
//   U+212A KELVIN SIGN -> "k" and U+0130 -> "i" + a combining dot), every run of
//   characters outside [a-z0-9] becomes a space, split on whitespace; with stemming,
//   NLTK's Porter stemmer (porter.h) on tokens longer than 3 characters only;
// - ROUGE-N: multiset n-gram overlap over the whole text;
// - ROUGE-L: longest common subsequence of the whole token sequences;
// - ROUGE-Lsum: summary-level union LCS over sentences split on '\n', with rouge-score's
//   backtrack (take a match; else move left only when the left cell is strictly larger)
//   and its guard against counting a token more often than it occurs;
// - F = 2PR / (P + R), 0 when P + R = 0;
// - several references: per ROUGE type, the reference with the highest F (the first one
//   on ties), as rouge-score's score_multi.
//
// Aggregation is the mean over examples plus a 95% percentile-bootstrap interval. Unlike
// rouge-score's BootstrapAggregator (unseeded numpy), the resampling here draws from a
// PRNG seeded by the caller, so an interval is reproducible.
#ifndef LB_ROUGE_H
#define LB_ROUGE_H

#include <stdint.h>

#include "util.h"

typedef struct {
    double p, r, f;  // precision, recall, F-measure
} rouge_prf_t;

typedef struct {
    rouge_prf_t r1, r2, rl, rlsum;
} rouge_scores_t;

// The ROUGE types in the order of rouge_scores_t's fields, for loops.
enum { ROUGE_1, ROUGE_2, ROUGE_L, ROUGE_LSUM, ROUGE_NTYPES };

typedef struct {
    double mean;       // plain mean over the examples
    double low, high;  // 2.5th and 97.5th percentile of the bootstrap means
} rouge_interval_t;

typedef struct {
    rouge_interval_t p, r, f;
} rouge_prf_interval_t;

typedef struct {
    rouge_prf_interval_t r1, r2, rl, rlsum;
    int n;          // examples aggregated
    int resamples;  // bootstrap resamples drawn
} rouge_agg_t;

// rouge-score's key for a type: "rouge1", "rouge2", "rougeL", "rougeLsum"; NULL when out
// of range.
const char *rouge_type_name(int type);

// The scores of one type (ROUGE_1 … ROUGE_LSUM) inside s.
rouge_prf_t *rouge_scores_at(rouge_scores_t *s, int type);

// The interval triple of one type inside a.
rouge_prf_interval_t *rouge_agg_at(rouge_agg_t *a, int type);

// Splits text into rouge-score tokens (stemmed when stem is non-zero). *tokens_out gets a
// malloc'd array of malloc'd NUL-terminated strings (free with rouge_tokens_free);
// returns the number of tokens.
int rouge_tokenize(const char *text, int stem, char ***tokens_out);

// Frees what rouge_tokenize returned (n = its return value); NULL is accepted.
void rouge_tokens_free(char **tokens, int n);

// Scores a prediction against one reference (both UTF-8). Returns 0, or -1 with err set
// when an argument is NULL.
int rouge_score(const char *target, const char *prediction, int stem, rouge_scores_t *out,
                lb_err_t *err);

// Scores a prediction against n >= 1 references, keeping for each ROUGE type the
// reference with the best F-measure. Returns 0, or -1 with err set (no references).
int rouge_score_multi(const char *const *targets, int n, const char *prediction, int stem,
                      rouge_scores_t *out, lb_err_t *err);

// Mean of P, R and F of each type over per[0..n), and a 95% bootstrap interval from
// `resamples` resamples of n examples drawn with replacement (the same draw for every
// type and measure) by a PRNG seeded with seed: the same inputs and seed give the same
// interval on every machine. Percentiles interpolate linearly, as numpy's default.
// Returns 0, or -1 with err set (n < 1 or resamples < 1).
int rouge_aggregate(const rouge_scores_t *per, int n, int resamples, uint64_t seed,
                    rouge_agg_t *out, lb_err_t *err);

#endif
