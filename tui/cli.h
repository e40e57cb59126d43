// The command-line subcommands. Each takes (argc, argv) with argv[0] the command name,
// prints its own --help, reports errors as one sentence on stderr and returns the exit code.
#ifndef LB_CLI_H
#define LB_CLI_H

int cmd_rouge(int argc, char **argv);

#endif
