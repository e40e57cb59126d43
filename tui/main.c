// lorabench entry point: no arguments opens the workbench; otherwise a subcommand.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command_t;

static int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("lorabench 0.1\n");
    return 0;
}

static const command_t commands[] = {
    {"train", cmd_train, "record a run from a spec and train it (--detach: in the background)"},
    {"pretrain", cmd_pretrain, "pretrain with T5's span corruption (the bundled model's recipe)"},
    {"sweep", cmd_sweep, "expand a spec's grid into runs and execute them"},
    {"runs", cmd_runs, "list stored runs (--sort, --filter, --json)"},
    {"show", cmd_show, "one run: spec, summary, evaluations, artifacts, samples"},
    {"compare", cmd_compare, "runs side by side (configs and metrics)"},
    {"export", cmd_export, "stored runs, metrics, evals or samples as CSV or JSON"},
    {"resume", cmd_resume, "continue an interrupted or cancelled run from its checkpoint"},
    {"cancel", cmd_cancel, "stop a running run after its current step"},
    {"rm", cmd_rm, "delete a run and its files"},
    {"import", cmd_import, "copy another workspace's finished runs into this one (once)"},
    {"worker", cmd_worker, "execute one recorded run (started by the workbench)"},
    {"eval", cmd_eval, "generate and score ROUGE on a data split (model + optional adapter)"},
    {"analyze", cmd_analyze, "what an adapter or fine-tune learned: spectra of ΔW, subspace similarity"},
    {"merge", cmd_merge, "merge an adapter into its base model and save a full checkpoint"},
    {"bench", cmd_bench, "time and memory of a training step (--table: the standard table)"},
    {"generate", cmd_generate, "greedy / beam-search generation (transformers semantics); several adapters on one loaded base"},
    {"tensors", cmd_tensors, "run a batch and write loss, logits, gradients (checks a checkpoint)"},
    {"tokenize", cmd_tokenize, "encode/decode text with a tokenizer.json, one JSON value per line"},
    {"data", cmd_data, "statistics of a data set; data build-debsum builds the bundled one"},
    {"rouge", cmd_rouge, "ROUGE-1/2/L/Lsum of predictions (as rouge-score), Porter stems"},
    {"tokenizer-from-spm", cmd_tokenizer_from_spm, "convert a SentencePiece model to tokenizer.json"},
    {"version", cmd_version, "print the version"},

};

static void usage(FILE *f) {
    fprintf(f, "usage: lorabench [--workspace DIR] [COMMAND [ARGS...]]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'lorabench COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
    // The global form `lorabench --workspace DIR COMMAND ...` passes DIR on as
    // $LORABENCH_HOME, which every command (and the workers it starts) resolves.
    if (argc >= 4 && !strcmp(argv[1], "--workspace") && argv[3][0] != '-') {
        setenv("LORABENCH_HOME", argv[2], 1);
        argv[2] = argv[0];
        argc -= 2;
        argv += 2;
    }
    if (argc < 2 || (argv[1][0] == '-' && argv[1][1] == '-' && strcmp(argv[1], "--help")))
        return tui_main(argc, argv);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lorabench: unknown command '%s'; 'lorabench --help' lists them\n", argv[1]);
    return 2;
}
