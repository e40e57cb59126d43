// lorabench rouge: scores predictions against references from a JSONL file, exactly as
// the rouge-score package (engine/rouge.h), and prints per-line scores and the mean with
// a seeded 95% bootstrap interval; `--stem-words` exposes the Porter stemmer alone.
#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "porter.h"
#include "rouge.h"
#include "util.h"

int cmd_rouge(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench rouge --jsonl FILE [--no-stem] [--seed N] [--resamples N]\n"
            "       lorabench rouge --stem-words < WORDS\n"
            "\n"
            "Scores ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as the rouge-score\n"
            "package (ROUGE-Lsum splits sentences on newlines).\n"
            "\n"
            "  --jsonl FILE     one example per line: {\"prediction\": ..., \"target\": ...}\n"
            "                   or {\"prediction\": ..., \"targets\": [...]} (the best reference\n"
            "                   per ROUGE type counts); '-' reads standard input\n"
            "  --no-stem        score the words as they are (rouge-score's default,\n"
            "                   use_stemmer=False). By default tokens longer than 3\n"
            "                   characters are Porter-stemmed (use_stemmer=True), as `eval`\n"
            "                   and every run's evaluation do, so the numbers compare.\n"
            "  --stem           stem (the default; kept for scripts)\n"
            "  --seed N         seed of the bootstrap resampling (default 42)\n"
            "  --resamples N    bootstrap resamples (default 1000)\n"
            "  --stem-words     read words from standard input and print the stem of each,\n"
            "                   one per line (NLTK's PorterStemmer(), default mode)\n"
            "\n"
            "Output: one JSON object per input line, {\"rouge1\": [precision, recall,\n"
            "fmeasure], \"rouge2\": ..., \"rougeL\": ..., \"rougeLsum\": ...}, then one line\n"
            "{\"aggregate\": {\"n\": N, ..., \"rouge1\": {\"mean\": [p, r, f], \"low\": [...],\n"
            "\"high\": [...]}, ...}} with the mean over examples and the 2.5th and 97.5th\n"
            "percentiles of the bootstrap means. rouge-score's own interval is unseeded; this\n"
            "one gives the same numbers for the same seed.\n");
}

static int parse_int(const char *opt, const char *s, long long lo, long long hi,
                     long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lorabench rouge: %s must be an integer in %lld..%lld, not '%s'.\n", opt,
                lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int stem_words(void) {
    size_t cap = 256, n = 0;
    char *word = xmalloc(cap), *out = NULL;
    size_t outcap = 0;
    int c;
    do {
        c = getchar();
        if (c == EOF || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
            if (n) {
                word[n] = '\0';
                if (outcap < n + 1) {
                    outcap = n + 1;
                    out = xrealloc(out, outcap);
                }
                porter_stem(word, out, outcap);
                puts(out);
                n = 0;
            }
        } else {
            if (n + 1 >= cap) word = xrealloc(word, cap *= 2);
            word[n++] = (char)c;
        }
    } while (c != EOF);
    free(word);
    free(out);
    if (ferror(stdin)) {
        fprintf(stderr, "lorabench rouge: cannot read words from standard input.\n");
        return 1;
    }
    return 0;
}

static cJSON *prf_array(const rouge_prf_t *s) {
    double v[3] = {s->p, s->r, s->f};
    return cJSON_CreateDoubleArray(v, 3);
}

static void print_json(cJSON *obj) {
    char *s = cJSON_PrintUnformatted(obj);
    if (s) {
        puts(s);
        free(s);
    }
    cJSON_Delete(obj);
}

// Scores one JSONL line; returns 0, or -1 after printing an error naming path:lineno.
static int score_line(const char *path, int lineno, const char *line, int stem,
                      rouge_scores_t *out) {
    cJSON *obj = cJSON_ParseWithOpts(line, NULL, 1);  // nothing may follow the object
    int rc = -1;
    const char **targets = NULL;
    if (!obj || !cJSON_IsObject(obj)) {
        fprintf(stderr, "lorabench rouge: %s:%d: not valid JSON; each line must be one object like "
                        "{\"prediction\": \"...\", \"target\": \"...\"}.\n", path, lineno);
        goto done;
    }
    cJSON *pred = cJSON_GetObjectItemCaseSensitive(obj, "prediction");
    cJSON *tgt = cJSON_GetObjectItemCaseSensitive(obj, "target");
    cJSON *tgts = cJSON_GetObjectItemCaseSensitive(obj, "targets");
    if (!cJSON_IsString(pred)) {
        fprintf(stderr, "lorabench rouge: %s:%d: \"prediction\" is missing or not a string.\n",
                path, lineno);
        goto done;
    }
    if (tgt && tgts) {
        fprintf(stderr, "lorabench rouge: %s:%d: give either \"target\" or \"targets\", not "
                        "both.\n", path, lineno);
        goto done;
    }
    int n = 0;
    if (cJSON_IsString(tgt)) {
        targets = xmalloc(sizeof *targets);
        targets[n++] = tgt->valuestring;
    } else if (cJSON_IsArray(tgts) && cJSON_GetArraySize(tgts) > 0) {
        targets = xmalloc((size_t)cJSON_GetArraySize(tgts) * sizeof *targets);
        cJSON *t;
        cJSON_ArrayForEach(t, tgts) {
            if (!cJSON_IsString(t)) {
                fprintf(stderr, "lorabench rouge: %s:%d: element %d of \"targets\" is not a "
                                "string.\n", path, lineno, n);
                goto done;
            }
            targets[n++] = t->valuestring;
        }
    } else {
        fprintf(stderr, "lorabench rouge: %s:%d: needs \"target\" (a string) or \"targets\" (a "
                        "non-empty list of strings).\n", path, lineno);
        goto done;
    }
    lb_err_t err = {0};
    if (rouge_score_multi(targets, n, pred->valuestring, stem, out, &err) != 0) {
        fprintf(stderr, "lorabench rouge: %s:%d: %s.\n", path, lineno, err.msg);
        goto done;
    }
    rc = 0;
done:
    free(targets);
    cJSON_Delete(obj);
    return rc;
}

int cmd_rouge(int argc, char **argv) {
    const char *path = NULL;
    int stem = 1, words = 0;  // as eval and the runs' evaluations score
    long long seed = 42, resamples = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--stem")) {
            stem = 1;
        } else if (!strcmp(a, "--no-stem")) {
            stem = 0;
        } else if (!strcmp(a, "--stem-words")) {
            words = 1;
        } else if (!strcmp(a, "--jsonl") || !strcmp(a, "--seed") || !strcmp(a, "--resamples")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lorabench rouge: %s needs a value; see --help.\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--jsonl")) path = v;
            else if (!strcmp(a, "--seed")) {
                if (parse_int(a, v, 0, (1LL << 53) - 1, &seed)) return 2;  // exact in JSON
            } else if (parse_int(a, v, 1, 1000000, &resamples)) {
                return 2;
            }
        } else {
            fprintf(stderr, "lorabench rouge: unknown option '%s'; see --help.\n", a);
            return 2;
        }
    }
    if (words) {
        if (path) {
            fprintf(stderr, "lorabench rouge: --stem-words reads standard input; drop --jsonl.\n");
            return 2;
        }
        return stem_words();
    }
    if (!path) {
        fprintf(stderr, "lorabench rouge: give --jsonl FILE (or --stem-words); see --help.\n");
        return 2;
    }

    size_t len;
    char *text;
    if (!strcmp(path, "-")) {
        text = read_stream(stdin, &len);
        path = "<stdin>";
    } else {
        lb_err_t err = {0};
        text = lb_read_file(path, &len, &err);
        if (!text) {
            fprintf(stderr, "lorabench rouge: %s.\n", err.msg);
            return 1;
        }
    }

    int n = 0, cap = 0, rc = 1;
    rouge_scores_t *per = NULL;
    char *line = text;
    for (int lineno = 1; line && line <= text + len; lineno++) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        if (nl) *nl = '\0';
        size_t ll = strlen(line);
        if (ll != (size_t)((nl ? nl : text + len) - line)) {
            fprintf(stderr, "lorabench rouge: %s:%d: contains a NUL byte; is it a text file?\n",
                    path, lineno);
            goto done;
        }
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p) {  // blank lines (e.g. a trailing newline) are not examples
            if (n == cap) per = xrealloc(per, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *per);
            if (score_line(path, lineno, line, stem, &per[n]) != 0) goto done;
            cJSON *o = cJSON_CreateObject();
            for (int ty = 0; ty < ROUGE_NTYPES; ty++)
                cJSON_AddItemToObject(o, rouge_type_name(ty), prf_array(rouge_scores_at(&per[n], ty)));
            print_json(o);
            n++;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (n == 0) {
        fprintf(stderr, "lorabench rouge: %s has no examples; each line must be "
                        "{\"prediction\": \"...\", \"target\": \"...\"}.\n", path);
        goto done;
    }

    rouge_agg_t agg;
    lb_err_t err = {0};
    if (rouge_aggregate(per, n, (int)resamples, (uint64_t)seed, &agg, &err) != 0) {
        fprintf(stderr, "lorabench rouge: %s.\n", err.msg);
        goto done;
    }
    cJSON *root = cJSON_CreateObject(), *a = cJSON_AddObjectToObject(root, "aggregate");
    cJSON_AddNumberToObject(a, "n", n);
    cJSON_AddBoolToObject(a, "stem", stem);
    cJSON_AddNumberToObject(a, "resamples", (double)resamples);
    cJSON_AddNumberToObject(a, "seed", (double)seed);
    cJSON_AddNumberToObject(a, "confidence", 0.95);
    for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
        rouge_prf_interval_t *x = rouge_agg_at(&agg, ty);
        rouge_prf_t mean = {x->p.mean, x->r.mean, x->f.mean};
        rouge_prf_t low = {x->p.low, x->r.low, x->f.low};
        rouge_prf_t high = {x->p.high, x->r.high, x->f.high};
        cJSON *t = cJSON_AddObjectToObject(a, rouge_type_name(ty));
        cJSON_AddItemToObject(t, "mean", prf_array(&mean));
        cJSON_AddItemToObject(t, "low", prf_array(&low));
        cJSON_AddItemToObject(t, "high", prf_array(&high));
    }
    print_json(root);
    rc = 0;
done:
    free(per);
    free(text);
    return rc;
}
