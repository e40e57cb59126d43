// debsum: the bundled summarization data set, built from Debian's package descriptions.
// Each Debian package has a long description written by a person and a one-line synopsis;
// apt's Translation-en files hold both for every package of a suite. This module parses
// those files, cleans the text, removes duplicates and near-template families (so that
// near-duplicates never straddle train and test), and writes train / validation / test
// JSONL with a fixed seed. The same input and options always give byte-identical files.
#ifndef LB_DEBSUM_H
#define LB_DEBSUM_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct {
    uint64_t seed;            // mixes every hash that orders families and examples (42)
    int n_train;              // examples wanted per split (20000 / 500 / 500)
    int n_validation;
    int n_test;
    int family_cap;           // most examples one family contributes to train (2);
                              // validation and test take one example per family
    int min_desc_words;       // description length bounds in words (10..400)
    int max_desc_words;
    int min_syn_words;        // synopsis length bounds in words (2..20)
    int max_syn_words;
    double max_bullet_share;  // drop descriptions whose bullet-list lines hold more than
                              // this share of the words (0.6): lists are not prose
} debsum_options_t;

// One cleaned example. family is the key derived from the package name.
typedef struct {
    char *package;
    char *synopsis;
    char *description;
    char *family;      // set by debsum_split (NULL after parsing)
    int bullet_words;  // words on bullet-list lines of the description
} debsum_record_t;

typedef struct {
    debsum_record_t *v;
    size_t n, cap;
} debsum_records_t;

// Counts reported by the builder, for the CLI's summary and the README.
typedef struct {
    size_t parsed;          // records with a Description-en in the input files
    size_t repeated;        // later records of a package name already seen (skipped)
    size_t bad_utf8;        // records dropped for invalid UTF-8
    size_t filtered_len;    // dropped by the word-count bounds
    size_t filtered_bullet; // dropped as bullet lists
    size_t kept;            // records that passed the filters
    size_t families;        // connected families (same name key, synopsis or description)
    size_t duplicates;      // members dropped as exact duplicates inside a family
    size_t capped;          // members dropped by the family cap
    size_t usable;          // examples left after duplicates and caps
    size_t train, validation, test;  // written
    size_t families_unused; // families left over once every split was full
} debsum_stats_t;

// Progress callback: stage is a short word ("parse", "filter", "split", "write"); done and
// total count records or files of that stage. May be NULL.
typedef void (*debsum_progress_fn)(void *ctx, const char *stage, size_t done, size_t total);

// Fills o with the defaults documented in experiments/data/debsum/README.md.
void debsum_options_default(debsum_options_t *o);

// Parses one Translation-en file's text (already decompressed) and appends its records to
// out: the synopsis line and the description, with the " ." paragraph markers dropped and
// all whitespace collapsed to single spaces. path only names the file in error messages. Records of a package
// name already in out are counted in stats->repeated and skipped (first file wins).
// Returns 0, or -1 with err set when the text is not a Translation file.
int debsum_parse_translation(const char *text, size_t len, const char *path,
                             debsum_records_t *out, debsum_stats_t *stats, lb_err_t *err);

// The family key of a package name: the name without ecosystem prefixes (python3-,
// libghc-, golang-github-, node-, r-cran-, librust-, lib, ...), suffixes (-dev, -doc,
// -dbg, -common, -data, -perl, ...), architecture triplets, rust feature parts and
// trailing version numbers, so that "libfoo2", "libfoo-dev", "libfoo-doc" and
// "python3-foo" all give "foo". Returns a new string (free it).
char *debsum_family_key(const char *package);

// Cleans, filters, groups into families, caps and splits the parsed records. The three
// splits are returned as new record arrays (the strings are copies; free with
// debsum_records_free), each in a seeded order. Returns -1 with err set when there are not
// enough families to fill validation and test; a short train split is not an error (see
// stats->train).
int debsum_split(const debsum_records_t *in, const debsum_options_t *opt,
                 debsum_records_t *train, debsum_records_t *validation, debsum_records_t *test,
                 debsum_stats_t *stats, lb_err_t *err);

// The whole builder: reads the Translation-en files, splits, and writes
// out_dir/{train,validation,test}.jsonl atomically (creating out_dir if needed).
int debsum_build(const char *const *paths, int n_paths, const char *out_dir,
                 const debsum_options_t *opt, debsum_stats_t *stats,
                 debsum_progress_fn progress, void *ctx, lb_err_t *err);

// Frees the strings and the array of a record list and zeroes it.
void debsum_records_free(debsum_records_t *r);

#endif
