// `lorabench tokenize`: a line-oriented filter over a tokenizer.json, for checking ids against
// Hugging Face and for scripts. Encode: one JSON string per input line -> one JSON array of
// ids per output line. Decode: one JSON array of ids per line -> one JSON string per line.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "tokenizer.h"
#include "util.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: lorabench tokenize --tokenizer FILE [--decode [--keep-special]] [--no-special]\n"
            "\n"
            "Reads stdin line by line and writes one result line per input line.\n"
            "  encode (default)  input: a JSON string, e.g. \"Hello world\"\n"
            "                    output: a JSON array of ids, e.g. [8774,296,1]\n"
            "  --decode          input: a JSON array of ids; output: the text as a JSON string\n"
            "  --keep-special    with --decode: keep special tokens such as </s> and <pad>\n"
            "  --no-special      when encoding: do not append the template's tokens (</s>)\n"
            "  --tokenizer FILE  a Hugging Face tokenizer.json (Unigram, as T5/FLAN-T5 ship), or a\n"
            "                    model folder with one\n");
}

// Encodes or decodes one input line; writes the result line to stdout.
static int tokenize_line(const tokenizer_t *tok, const char *line, long lineno, int decode,
                         int add_special, int keep_special) {
    cJSON *v = cJSON_Parse(line);
    int rc = 1;
    if (!decode) {
        if (!cJSON_IsString(v)) {
            fprintf(stderr,
                    "lorabench tokenize: line %ld is not a JSON string; write each text as "
                    "\"...\" on its own line\n",
                    lineno);
            goto done;
        }
        int *ids, n;
        lb_err_t err = {0};
        if (tokenizer_encode(tok, v->valuestring, add_special, &ids, &n, &err)) {
            fprintf(stderr, "lorabench tokenize: line %ld: %s\n", lineno, err.msg);
            goto done;
        }
        putchar('[');
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        fputs("]\n", stdout);
        free(ids);
        rc = 0;
        goto done;
    }
    if (!cJSON_IsArray(v)) {
        fprintf(stderr,
                "lorabench tokenize: line %ld is not a JSON array of ids; write e.g. [8774,296,1]\n",
                lineno);
        goto done;
    }
    int n = cJSON_GetArraySize(v), i = 0;
    int *ids = xmalloc(sizeof *ids * (size_t)(n ? n : 1));
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (!cJSON_IsNumber(it) || d != floor(d) || d < 0 || d > 2147483647.0) {
            fprintf(stderr,
                    "lorabench tokenize: line %ld, item %d is not a non-negative integer id\n",
                    lineno, i);
            free(ids);
            goto done;
        }
        ids[i++] = (int)d;
    }
    char *text = tokenizer_decode(tok, ids, n, !keep_special);
    free(ids);
    cJSON *s = cJSON_CreateString(text);
    char *out = s ? cJSON_PrintUnformatted(s) : NULL;
    if (out) {
        puts(out);
        rc = 0;
    } else {
        fprintf(stderr, "lorabench tokenize: cannot print the text of line %ld\n", lineno);
    }
    free(out);
    cJSON_Delete(s);
    free(text);
done:
    cJSON_Delete(v);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL;
    int decode = 0, keep_special = 0, add_special = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strncmp(argv[i], "--tokenizer=", 12)) {
            path = argv[i] + 12;
        } else if (!strcmp(argv[i], "--decode")) {
            decode = 1;
        } else if (!strcmp(argv[i], "--keep-special")) {
            keep_special = 1;
        } else if (!strcmp(argv[i], "--no-special")) {
            add_special = 0;
        } else {
            fprintf(stderr, "lorabench tokenize: unknown argument '%s'; see 'lorabench tokenize --help'\n",
                    argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "lorabench tokenize: --tokenizer FILE is required (a tokenizer.json or a model folder)\n");
        return 2;
    }
    lb_err_t err = {0};
    char *file = cli_tokenizer_file(path);
    tokenizer_t *tok = tokenizer_load(file, &err);
    free(file);
    if (!tok) {
        fprintf(stderr, "lorabench tokenize: %s\n", err.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (tokenize_line(tok, line, lineno, decode, add_special, keep_special)) {
            rc = 1;
            break;
        }
    }
    fflush(stdout);
    free(line);
    tokenizer_free(tok);
    return rc;
}
