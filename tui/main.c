// lorabench entry point: no arguments opens the workbench; otherwise a subcommand.
#include <stdio.h>
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
    {"rouge", cmd_rouge, "ROUGE-1/2/L/Lsum of predictions (as rouge-score), Porter stems"},
    {"version", cmd_version, "print the version"},

};

static void usage(FILE *f) {
    fprintf(f, "usage: lorabench [--workspace DIR] [COMMAND [ARGS...]]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'lorabench COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lorabench: unknown command '%s'; 'lorabench --help' lists them\n", argv[1]);
    return 2;
}
