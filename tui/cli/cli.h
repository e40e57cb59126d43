// The command-line subcommands. Each takes (argc, argv) with argv[0] the command name,
// prints its own --help, reports errors as one sentence on stderr and returns the exit code.
#ifndef LB_CLI_H
#define LB_CLI_H

#include <stddef.h>

int cmd_rouge(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_data_build_debsum(int argc, char **argv);
int cmd_tokenizer_from_spm(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_tensors(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
// `bench --generate` (cmd_bench_gen.c), given the JSON configs of bench's named shapes.
int bench_generate(int argc, char **argv, const char *small_json, const char *base_json);
int cmd_merge(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_import(int argc, char **argv);
// `sweep --slurm` (cmd_sweep_slurm.c): the sweep as a Slurm job array.
int cmd_sweep_slurm(int argc, char **argv);
// Brings the workspace's cluster sweeps up to date (imports finished tasks' runs, says so on
// stderr); *tasks (free it) gets the tasks not imported yet and *n their count. One call
// per listing: a task that ended without a run is listed by the call that sees it end.
struct store;
struct slurm_task;
void cli_cluster_sync(struct store *st, const char *ws, struct slurm_task **tasks, size_t *n);
// The tasks of cli_cluster_sync as a table on stdout under a heading; nothing when n is 0.
void cli_cluster_table(const struct slurm_task *tasks, size_t n);

// The workbench (ncurses): no arguments, or only --workspace/--ascii.
int tui_main(int argc, char **argv);

#endif
