// lorabench tokenizer-from-spm: converts a SentencePiece model (spiece.model) to a Hugging
// Face tokenizer.json as transformers' T5 converter does.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "spm.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench tokenizer-from-spm SPIECE.model TOKENIZER.json [--extra-ids N]\n"
            "\n"
            "Converts a SentencePiece Unigram model (as written by spm_train) to a Hugging\n"
            "Face tokenizer.json the way transformers converts a T5 tokenizer: the pieces\n"
            "and scores, then N sentinels <extra_id_N-1> .. <extra_id_0> (default 100, as\n"
            "T5), the Precompiled normalizer of the model, Metaspace, and </s> appended.\n");
}

int cmd_tokenizer_from_spm(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    long extra = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--extra-ids")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lorabench tokenizer-from-spm: --extra-ids needs a number; "
                                "see --help.\n");
                return 2;
            }
            char *end;
            errno = 0;
            extra = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || extra < 0 || extra > 100000) {
                fprintf(stderr, "lorabench tokenizer-from-spm: --extra-ids must be an integer "
                                "in 0..100000, not '%s'.\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lorabench tokenizer-from-spm: unknown option '%s'; see --help.\n",
                    a);
            return 2;
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            fprintf(stderr, "lorabench tokenizer-from-spm: unexpected argument '%s'; see "
                            "--help.\n", a);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "lorabench tokenizer-from-spm: give the input .model and the output "
                        "tokenizer.json; see --help.\n");
        return 2;
    }
    lb_err_t err = {0};
    if (spm_convert_file(in, out, (int)extra, &err)) {
        fprintf(stderr, "lorabench tokenizer-from-spm: %s\n", err.msg);
        return 1;
    }
    spm_model_t m;
    if (spm_load_model(in, &m, &err) == 0) {
        printf("wrote %s: %d pieces + %ld extra ids, normalizer %s\n", out, m.n_pieces, extra,
               m.normalizer_name[0] ? m.normalizer_name : "(none)");
        spm_model_free(&m);
    }
    return 0;
}
