// lorabench data: statistics of a data set (examples per split, token length percentiles,
// truncated fraction, padding with and without length bucketing). `lorabench data
// build-debsum ...` is handed to cmd_data_build_debsum (tui/cli/cmd_debsum.c).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_common.h"
#include "data.h"
#include "tokenizer.h"
#include "util.h"

// cmd_data_build_debsum (cli.h) is implemented in tui/cli/cmd_debsum.c and called by a strong
// reference on purpose: a weak one would not pull that object out of libtui.a, and the
// subcommand would silently vanish from the binary.

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench data --dataset PATH --tokenizer FILE [options]\n"
            "       lorabench data build-debsum --help\n"
            "\n"
            "Prints the statistics of a data set per split: examples, references per example,\n"
            "source and target length percentiles in tokens (before truncation), the fraction\n"
            "of examples truncated, and the padding of length-bucketed vs random batches.\n"
            "\n"
            "  --dataset PATH       a .jsonl, .json, .csv or .tsv file, or a directory holding\n"
            "                       train / validation / test files\n"
            "  --tokenizer FILE     a Hugging Face tokenizer.json, or a model directory with one\n"
            "  --source FIELD       source field (default: dialogue, description, source, text,\n"
            "                       document, article or input, whichever is present)\n"
            "  --target FIELD       reference field (default: summary, synopsis, target, ...);\n"
            "                       NAME also collects NAME1, NAME2, ...; a,b,c lists fields\n"
            "  --prefix STR         prompt prefix, e.g. 'summarize: '\n"
            "  --template STR       prompt template with {source}, e.g.\n"
            "                       'Summarize the following conversation.\\n\\n{source}\\n\\nSummary: '\n"
            "                       (\\n, \\t and \\\\ are understood in --prefix and --template)\n"
            "  --split-ratio R      split one file into train,validation,test, e.g. 0.9,0.05,0.05\n"
            "  --seed N             seed of the split and of the batch plan (default 42)\n"
            "  --max-source N       source tokens kept, </s> included (default 512; 0 = all)\n"
            "  --max-target N       target tokens kept, </s> included (default 128; 0 = all)\n"
            "  --batch-size N       batch size for the padding figures (default 8)\n");
}

// Turns the escapes a shell user types (\n, \t, \\) into the characters.
static char *unescape(const char *s) {
    char *o = xmalloc(strlen(s) + 1), *q = o;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            s++;
            *q++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : '\\';
        } else {
            *q++ = *s;
        }
    }
    *q = 0;
    return o;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lorabench data: %s must be an integer in %ld..%ld, not '%s'.\n", opt, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int encode_cb(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    return tokenizer_encode((const tokenizer_t *)ctx, text, 1, ids, n, err);
}

static void print_text(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", stdout);
        else if (*s == '\t') fputs("\\t", stdout);
        else if (*s == '"') fputs("\\\"", stdout);
        else putchar(*s);
    }
    putchar('"');
}

int cmd_data(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "build-debsum")) return cmd_data_build_debsum(argc - 1, argv + 1);
    const char *dataset = NULL, *tok_path = NULL, *ratio = NULL;
    char *prefix = NULL, *template_text = NULL;
    data_options_t opt;
    memset(&opt, 0, sizeof opt);
    long seed = 42, max_src = 512, max_tgt = 128, batch = 8;
    int rc = 2;
    tokenizer_t *tk = NULL;
    data_set_t ds;
    memset(&ds, 0, sizeof ds);
    char *tk_file = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = 0;
            goto done;
        }
        static const char *const with_value[] = {
            "--dataset", "--tokenizer", "--source", "--target", "--prefix", "--template",
            "--split-ratio", "--seed", "--max-source", "--max-target", "--batch-size", NULL};
        int known = 0;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) {
            fprintf(stderr, "lorabench data: unknown option '%s'; 'lorabench data --help' lists them.\n", a);
            goto done;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "lorabench data: %s needs a value; 'lorabench data --help' shows it.\n", a);
            goto done;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--dataset")) dataset = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--source")) opt.source_field = v;
        else if (!strcmp(a, "--target")) opt.target_field = v;
        else if (!strcmp(a, "--prefix")) free(prefix), prefix = unescape(v);
        else if (!strcmp(a, "--template")) free(template_text), template_text = unescape(v);
        else if (!strcmp(a, "--split-ratio")) ratio = v;
        else if (!strcmp(a, "--seed")) {
            if (parse_int(a, v, 0, 2147483647L, &seed)) goto done;
        } else if (!strcmp(a, "--max-source")) {
            if (parse_int(a, v, 0, 1000000, &max_src)) goto done;
        } else if (!strcmp(a, "--max-target")) {
            if (parse_int(a, v, 0, 1000000, &max_tgt)) goto done;
        } else if (parse_int(a, v, 1, 100000, &batch)) goto done;
    }
    if (!dataset || !tok_path) {
        fprintf(stderr, "lorabench data: give --dataset PATH and --tokenizer FILE; "
                        "'lorabench data --help' shows the options.\n");
        goto done;
    }
    if (max_src == 1 || max_tgt == 1) {
        fprintf(stderr, "lorabench data: --max-source and --max-target must leave room for a token "
                        "besides </s> (2 or more, or 0 for no limit).\n");
        goto done;
    }
    opt.prefix = prefix;
    opt.template_text = template_text;
    opt.seed = (uint64_t)seed;
    lb_err_t err = {0};
    if (ratio && data_parse_split_ratio(ratio, opt.split_ratio, &err)) {
        fprintf(stderr, "lorabench data: %s.\n", err.msg);
        goto done;
    }
    rc = 1;
    tk_file = cli_tokenizer_file(tok_path);
    tk = tokenizer_load(tk_file, &err);
    if (!tk) {
        fprintf(stderr, "lorabench data: %s\n", err.msg);
        goto done;
    }
    int eos = tokenizer_eos_id(tk);
    if (data_set_load(dataset, &opt, &ds, &err)) {
        fprintf(stderr, "lorabench data: %s\n", err.msg);
        goto done;
    }

    printf("data set  %s (%s)\n", dataset,
           ds.is_dir ? "directory of splits" : ratio ? "one file, split by ratio" : "one file");
    if (prefix && *prefix) {
        printf("prompt    prefix ");
        print_text(prefix);
        putchar('\n');
    } else if (template_text && *template_text) {
        printf("prompt    template ");
        print_text(template_text);
        putchar('\n');
    }
    printf("limits    %ld source / %ld target tokens (0 = none; a cut sequence keeps its </s>)\n",
           max_src, max_tgt);
    printf("\n%-10s %8s %5s | %-22s %6s | %-22s %6s | %6s | %s\n", "split", "examples", "refs",
           "source p50/p90/p99/max", "cut", "target p50/p90/p99/max", "cut", "either",
           "padding bucketed / random");
    for (int s = 0; s < ds.n_splits; s++) {
        const data_split_t *sp = &ds.split[s];
        data_tokenized_t tok;
        if (data_tokenize_split(sp, encode_cb, tk, (int)max_src, (int)max_tgt, eos, &tok, &err)) {
            fprintf(stderr, "lorabench data: %s\n", err.msg);
            goto done;
        }
        data_stats_t stt;
        data_stats_compute(&tok, &stt);
        data_plan_t pb, pr;
        double pad_b = 0, pad_r = 0;
        if (data_plan_batches(&tok, (int)batch, 50, (uint64_t)seed, &pb, &err) == 0) {
            pad_b = pb.pad_fraction;
            data_plan_free(&pb);
        }
        if (data_plan_batches(&tok, (int)batch, 1, (uint64_t)seed, &pr, &err) == 0) {
            pad_r = pr.pad_fraction;
            data_plan_free(&pr);
        }
        long refs = 0;
        for (int i = 0; i < sp->n; i++) refs += sp->ex[i].n_refs;
        char sl[64], tl[64], pd[32];
        snprintf(sl, sizeof sl, "%d/%d/%d/%d", stt.src_p50, stt.src_p90, stt.src_p99, stt.src_max);
        snprintf(tl, sizeof tl, "%d/%d/%d/%d", stt.tgt_p50, stt.tgt_p90, stt.tgt_p99, stt.tgt_max);
        snprintf(pd, sizeof pd, "%.1f%% / %.1f%%", 100 * pad_b, 100 * pad_r);
        printf("%-10s %8d %5.2f | %-22s %5.1f%% | %-22s %5.1f%% | %5.1f%% | %s\n", sp->name,
               sp->n, (double)refs / sp->n, sl, 100 * stt.src_trunc_frac, tl,
               100 * stt.tgt_trunc_frac, 100 * stt.trunc_frac, pd);
        data_tokenized_free(&tok);
    }
    printf("\n");
    for (int s = 0; s < ds.n_splits; s++)
        printf("%-10s %s: source '%s', references '%s'\n", ds.split[s].name, ds.split[s].path,
               ds.split[s].source_field, ds.split[s].target_fields);
    printf("lengths in tokens before truncation; cut = share of examples truncated; padding = "
           "padded share of the tensors\nwith batches of %ld grouped by length (windows of 50 "
           "batches) / in random order\n", batch);
    rc = 0;
done:
    data_set_free(&ds);
    if (tk) tokenizer_free(tk);
    free(tk_file);
    free(prefix);
    free(template_text);
    return rc;
}
