// Summarization data sets: loading (JSON Lines, JSON array, CSV, TSV), field mapping,
// prompt formatting, splits, tokenization through a callback, truncation, length-bucketed
// batches and the model tensors of one batch.
//
// Dimensions: B batch, S source length, T target length (see ARCHITECTURE.md).
//
// Formats (chosen by the file extension):
//   .jsonl  one JSON object per line (blank lines skipped);
//   .json   a JSON array of objects, or JSON Lines (what `datasets.Dataset.to_json` writes);
//   .csv    RFC 4180: a header row names the fields, "quoted" fields may hold commas,
//           doubled quotes ("") and line breaks;
//   .tsv    the same with tabs (quoted fields as Python's csv module writes them).
// A data set path is either one file (one split named "train", or train/validation/test by
// a seeded ratio) or a directory holding files named train, validation (or valid, val,
// dev) and test with one of the extensions above.
//
// Field mapping: the source field (default: the first of dialogue, description, source,
// text, document, article, input present) and the reference fields (default: the first of
// summary, synopsis, target, headline, highlights, output, label present). A reference
// field NAME also collects NAME1, NAME2, ... so DialogSum's test files (summary1..3) give
// several references per example; "a,b,c" names the reference fields explicitly.
//
// Randomness: splitmix64 (Steele, Lea, Flood 2014; the seeding generator of xoshiro),
// state passed explicitly, so results depend only on the seed.
#ifndef LB_DATA_H
#define LB_DATA_H

#include <stdint.h>

#include "util.h"

enum { DATA_MAX_SPLITS = 3 };

typedef struct {
    const char *source_field;  // NULL or "" = auto-detect (see above)
    const char *target_field;  // NULL or "" = auto-detect; "a,b" lists reference fields
    const char *prefix;        // NULL = none; the source becomes prefix + text
    const char *template_text; // NULL = none; must contain {source}; excludes prefix
    double split_ratio[3];     // train/validation/test for a one-file data set; all 0 =
                               // one split "train"; must sum to 1
    uint64_t seed;             // for the ratio split
} data_options_t;

typedef struct {
    char *source;  // the model input: text of the source field with prefix/template applied
    char **refs;   // [n_refs] reference summaries; refs[0] is the training target
    int n_refs;    // >= 1
    int line;      // 1-based line of the file where the example starts
} data_example_t;

typedef struct {
    char name[16];          // "train", "validation" or "test"
    char *path;             // the file it was read from
    char *source_field;     // the field actually used
    char *target_fields;    // the reference fields seen, comma-separated
    data_example_t *ex;     // [n]
    int n;                  // >= 1 after a successful load
} data_split_t;

typedef struct {
    data_split_t split[DATA_MAX_SPLITS];  // in the order train, validation, test
    int n_splits;
    int is_dir;   // 1 when loaded from a directory of split files
} data_set_t;

// ---- randomness --------------------------------------------------------------------------

// splitmix64: advances *state and returns the next 64-bit value.
uint64_t data_rng_next(uint64_t *state);

// A uniform integer in [0, n) without modulo bias (n >= 1).
uint32_t data_rng_below(uint64_t *state, uint32_t n);

// Derives an independent seed for a stream (e.g. an epoch) from a base seed, so that
// epoch k of seed s never repeats the order of epoch 0 of seed s + k.
uint64_t data_seed_mix(uint64_t seed, uint64_t stream);

// Fisher-Yates shuffle of a[0..n) driven by the seed.
void data_shuffle_ints(int *a, int n, uint64_t seed);

// ---- loading ----------------------------------------------------------------------------

// Loads one file (format from its extension) into a split called name. Fails with the file,
// the line and the problem: bad JSON, a missing field (listing the fields present), empty
// text, an unterminated quote, a ragged CSV row, an unknown extension, or no examples.
int data_load_file(const char *path, const char *name, const data_options_t *opt,
                   data_split_t *out, lb_err_t *err);

// Loads a data set from a file or a directory of split files (see the top of this file).
// Every split present must hold at least one example.
int data_set_load(const char *path, const data_options_t *opt, data_set_t *ds, lb_err_t *err);

// The split called name ("train", "validation", "test"), or NULL with err naming the
// splits the data set has.
const data_split_t *data_set_split(const data_set_t *ds, const char *name, lb_err_t *err);

void data_split_free(data_split_t *sp);
void data_set_free(data_set_t *ds);

// Applies a prefix or a template with {source} to text; returns a new string, or NULL when
// both are given or the template lacks {source}. Both NULL gives a copy of text.
char *data_format_source(const char *text, const char *prefix, const char *template_text,
                         lb_err_t *err);

// Parses "0.9,0.05,0.05" (or two values: train,validation) into ratio[3]; checks that the
// values are in [0,1] and sum to 1.
int data_parse_split_ratio(const char *s, double ratio[3], lb_err_t *err);

// ---- tokenization -----------------------------------------------------------------------

// Encodes text into *ids (malloc'ed, freed by the caller) / *n as the model sees it,
// including the final </s> that the tokenizer's template appends. Returns 0, or -1 with err
// and nothing for the caller to free.
// Keeps engine/data independent of the tokenizer implementation.
typedef int (*data_encode_fn)(void *ctx, const char *text, int **ids, int *n, lb_err_t *err);

typedef struct {
    int *src;      // [n_src] source ids after truncation
    int *tgt;      // [n_tgt] ids of refs[0] after truncation
    int n_src, n_tgt;
    int src_len, tgt_len;  // lengths before truncation
} data_tokens_t;

typedef struct {
    data_tokens_t *ex;  // [n], same order as the split's examples
    int n;
    int max_source, max_target;  // the limits used (0 = none)
} data_tokenized_t;

// Tokenizes every example of a split. Sequences longer than max_source / max_target
// (0 = no limit) are cut to that length; when eos_id >= 0 the last kept token is replaced by
// eos_id so that truncated sequences still end in </s>. eos_id < 0 cuts plainly (this is
// how fixtures/hf/t5-gated-a/batch.json was made).
int data_tokenize_split(const data_split_t *sp, data_encode_fn encode, void *ctx,
                        int max_source, int max_target, int eos_id, data_tokenized_t *out,
                        lb_err_t *err);

void data_tokenized_free(data_tokenized_t *tok);

// Cuts ids in place to at most max tokens (max <= 0: no limit), keeping eos_id (when >= 0)
// as the last token of a cut sequence; returns the new length.
int data_truncate_ids(int *ids, int n, int max, int eos_id);

// ---- statistics -------------------------------------------------------------------------

typedef struct {
    int n;                                    // examples
    int src_p50, src_p90, src_p99, src_max;   // source tokens before truncation
    int tgt_p50, tgt_p90, tgt_p99, tgt_max;   // target (refs[0]) tokens before truncation
    double src_trunc_frac, tgt_trunc_frac;    // fraction of examples cut
    double trunc_frac;                        // fraction with source or target cut
    double src_mean, tgt_mean;                // before truncation
} data_stats_t;

// Length statistics of a tokenized split; percentiles by the nearest-rank method.
void data_stats_compute(const data_tokenized_t *tok, data_stats_t *st);

// ---- batches ----------------------------------------------------------------------------

typedef struct {
    int *order;      // [n] example indices, batch after batch
    int *start;      // [n_batches + 1] offsets of each batch in order
    int n_batches;
    long real_tokens;    // source + target tokens of the examples
    long padded_tokens;  // B*S + B*T summed over batches
    double pad_fraction; // 1 - real / padded
} data_plan_t;

// Plans the batches of one epoch: shuffle the examples with the seed, sort by length within
// windows of `window` batches, cut into batches of batch_size (the last may be smaller) and
// shuffle the batch order. window <= 1 gives plain random batches. Reports the padding
// fraction of the plan.
int data_plan_batches(const data_tokenized_t *tok, int batch_size, int window, uint64_t seed,
                      data_plan_t *plan, lb_err_t *err);

void data_plan_free(data_plan_t *plan);

typedef struct {
    int B, S, T;
    int *input_ids;          // [B, S] padded with pad_id
    int *attention_mask;     // [B, S] 1 on tokens, 0 on padding
    int *labels;             // [B, T] padded with -100
    int *decoder_input_ids;  // [B, T] labels shifted right after decoder_start_id, -100 -> pad
    int *index;              // [B] example indices in the split
} data_batch_t;

// Builds the model tensors for the examples idx[0..n) (the layout of
// fixtures/hf/t5-gated-a/batch.json).
int data_batch_make(const data_tokenized_t *tok, const int *idx, int n, int pad_id,
                    int decoder_start_id, data_batch_t *b, lb_err_t *err);

void data_batch_free(data_batch_t *b);

#endif
