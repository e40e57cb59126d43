// lorabench data build-debsum: builds the Debian descriptions → synopsis data set from
// apt's Translation-en files (see experiments/data/debsum/README.md).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "debsum.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench data build-debsum --translation FILE [--translation FILE ...]\n"
            "                                   --out DIR [--seed N] [--train N]\n"
            "                                   [--validation N] [--test N] [--family-cap N]\n"
            "\n"
            "Builds train/validation/test JSONL ({description, synopsis, package}) from\n"
            "decompressed apt Translation-en files, e.g. after\n"
            "  apt-get update -o Acquire::Languages=en -o Acquire::GzipIndexes=false\n"
            "the file /var/lib/apt/lists/*_bookworm_main_i18n_Translation-en.\n"
            "The same files and options always give byte-identical output.\n"
            "\n"
            "  --translation FILE  a Translation-en file (repeatable; first file wins on a\n"
            "                      package name given twice)\n"
            "  --out DIR           output folder (created if missing)\n"
            "  --seed N            seed of the family and example order (default 42)\n"
            "  --train N           train examples (default 20000)\n"
            "  --validation N      validation examples, one per family (default 500)\n"
            "  --test N            test examples, one per family (default 500)\n"
            "  --family-cap N      most train examples per family (default 2)\n");
}

static int parse_num(const char *opt, const char *s, long long lo, long long hi,
                     long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lorabench data build-debsum: %s must be an integer in %lld..%lld, not "
                        "'%s'.\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void progress(void *ctx, const char *stage, size_t done, size_t total) {
    (void)ctx;
    fprintf(stderr, "\rdebsum: %-6s %zu/%zu   ", stage, done, total);
    if (done == total) fputc('\n', stderr);
}

int cmd_data_build_debsum(int argc, char **argv) {
    debsum_options_t opt;
    debsum_options_default(&opt);
    const char **paths = xcalloc((size_t)argc + 1, sizeof *paths);
    int n_paths = 0;
    const char *out = NULL;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = 0;
            goto done;
        }
        int known = !strcmp(a, "--translation") || !strcmp(a, "--out") || !strcmp(a, "--seed") ||
                    !strcmp(a, "--train") || !strcmp(a, "--validation") ||
                    !strcmp(a, "--test") || !strcmp(a, "--family-cap");
        if (!known) {
            fprintf(stderr, "lorabench data build-debsum: unknown option '%s'; see --help.\n", a);
            goto done;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "lorabench data build-debsum: %s needs a value; see --help.\n", a);
            goto done;
        }
        const char *v = argv[++i];
        long long x;
        if (!strcmp(a, "--translation")) paths[n_paths++] = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--seed")) {
            if (parse_num(a, v, 0, 0x7fffffffffffffffLL, &x)) goto done;
            opt.seed = (uint64_t)x;
        } else {
            if (parse_num(a, v, !strcmp(a, "--family-cap") ? 1 : 0,
                          !strcmp(a, "--family-cap") ? 64 : 10000000, &x))
                goto done;
            if (!strcmp(a, "--train")) opt.n_train = (int)x;
            else if (!strcmp(a, "--validation")) opt.n_validation = (int)x;
            else if (!strcmp(a, "--test")) opt.n_test = (int)x;
            else opt.family_cap = (int)x;
        }
    }
    if (!n_paths || !out) {
        fprintf(stderr, "lorabench data build-debsum: %s is required; see --help.\n",
                !n_paths ? "--translation FILE" : "--out DIR");
        goto done;
    }
    debsum_stats_t st;
    lb_err_t err = {0};
    if (debsum_build(paths, n_paths, out, &opt, &st, progress, NULL, &err)) {
        fprintf(stderr, "\nlorabench data build-debsum: %s\n", err.msg);
        rc = 1;
        goto done;
    }
    printf("parsed %zu records (%zu repeated package names skipped)\n", st.parsed, st.repeated);
    printf("dropped: %zu invalid UTF-8, %zu outside the length bounds (description %d..%d, "
           "synopsis %d..%d words), %zu bullet lists\n",
           st.bad_utf8, st.filtered_len, opt.min_desc_words, opt.max_desc_words,
           opt.min_syn_words, opt.max_syn_words, st.filtered_bullet);
    printf("kept %zu in %zu families; %zu exact duplicates and %zu over the family cap (%d) "
           "dropped; %zu usable\n",
           st.kept, st.families, st.duplicates, st.capped, opt.family_cap, st.usable);
    printf("wrote %s/train.jsonl (%zu), validation.jsonl (%zu), test.jsonl (%zu); %zu families "
           "unused (seed %llu)\n",
           out, st.train, st.validation, st.test, st.families_unused,
           (unsigned long long)opt.seed);
    if (st.train < (size_t)opt.n_train)
        fprintf(stderr, "lorabench data build-debsum: only %zu train examples were available "
                        "(asked for %d).\n", st.train, opt.n_train);
    rc = 0;
done:
    free(paths);
    return rc;
}
