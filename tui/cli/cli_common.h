// Small helpers shared by the subcommands: option parsing, opening the workspace's store,
// JSON string output.
#ifndef LB_CLI_COMMON_H
#define LB_CLI_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include "spec.h"
#include "store.h"

// A running run whose worker process is gone and whose heartbeat is older than this is
// shown as interrupted. The pid check does the real work; this only rides out the moment
// between a worker's start and its first heartbeat.
#define LB_STALE_SECONDS 2.0

// Opens the existing workspace (ws: --workspace value or NULL) and its store; on failure
// (also when there is no workspace there: nothing is created) prints the message and
// returns -1. *ws_out (may be NULL) gets the resolved folder (free it).
int cli_open_store(const char *ws, char **ws_out, store_t **st);

// cli_open_store for the commands that start runs (train, pretrain, sweep): a missing
// workspace is created.
int cli_create_store(const char *ws, char **ws_out, store_t **st);
// For commands that only read (runs, show, export, compare): like cli_open_store, and in a
// workspace this user cannot write, the database opened read-only (store_open_readonly).
int cli_open_store_read(const char *ws, char **ws_out, store_t **st);

// Parses a run id; prints an error naming arg and returns -1 when it is not one.
int cli_parse_id(const char *arg, int64_t *id);

// Prints s as a JSON string literal (with quotes) to f; NULL prints null. Bytes that are not
// UTF-8 (a name from an old database) print as U+FFFD, so the output is always valid JSON.
void cli_json_string(FILE *f, const char *s);

// 1 when arg is --help or -h.
int cli_is_help(const char *arg);

// The exit code of a command that SIGINT or SIGTERM (sig) stopped before its work was done:
// 128 + sig (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process the signal
// killed, so that a script, make or a Slurm task does not take a stopped run for a finished
// one. train, pretrain and resume in the foreground and sweep exit with it.
int cli_exit_stopped(int sig);

// 1 when code is cli_exit_stopped's for SIGINT or SIGTERM: the command was stopped on request
// (its run cancelled, as asked), which whoever started it need not report as a failure.
int cli_exit_was_stopped(int code);

// The path that starts this program again, for spawning workers: "/proc/self/exe", which
// stays valid when the file was deleted or replaced since this process started ("lorabench"
// from PATH where there is no /proc).
const char *cli_self_exe(void);

// The tokenizer.json that a --tokenizer value names: the file itself, or the one in a
// model folder (as the model's own folder is what most commands take). Returns malloc'd.
char *cli_tokenizer_file(const char *path);

// Writes s padded with spaces to width terminal columns (UTF-8 aware: "–" and "…" take
// one), right-aligned when right; a longer s is written whole.
void cli_cell(FILE *f, const char *s, int width, int right);

// How a missing value reads in text output.
#define CLI_MISSING "–"

// A table of strings for people (cli_table.c): the first row is the header; columns are as
// wide as their widest cell, so nothing is cut. A NULL or empty cell prints CLI_MISSING.
typedef struct {
    int ncols, nrows;
    int *right;     // [ncols] 1: right-aligned (numbers)
    char **cells;   // [nrows * ncols]
} cli_table_t;

cli_table_t *cli_table_new(int ncols, const char *const *head, const int *right);
void cli_table_row(cli_table_t *t, const char *const *cells);
// Aligned text (two spaces between columns), or a Markdown table when md.
void cli_table_print(FILE *f, const cli_table_t *t, int md);
void cli_table_free(cli_table_t *t);

// "6.1k", "1.23M"; "" for a missing (negative) count.
void cli_fmt_count(char *out, size_t n, int64_t v);
// "42s", "3m05s", "1h02m"; "" for a missing duration.
void cli_fmt_duration(char *out, size_t n, double seconds);

// The run's latest evaluation (the one the runs list shows): 1 when it has one.
int cli_latest_eval(store_t *st, int64_t run_id, store_eval_t *out);

// One row per run: id, name, status, method, r, targets, trainable (count and %), final
// loss, ROUGE-1 with its 95% bootstrap interval, ROUGE-2, ROUGE-L, time. The table a
// sweep ends with and `export --what sweep --format md` writes (md: Markdown).
void cli_results_table(FILE *f, store_t *st, const store_run_t *runs, size_t n, int md);

// Reads the spec file at path (printing the message when it cannot); delete_spec removes
// the file once read, right or wrong (a temporary spec has done its work). 0 or -1.
int cli_spec_load(const char *path, int delete_spec, spec_t *spec);
// The same, then its "grid" expanded into *specs / *n (spec_list_free); spec is freed when
// the expansion fails.
int cli_spec_load_grid(const char *path, int delete_spec, spec_t *spec, spec_t **specs, size_t *n);

// Parses run ids given as "3", "2,3,7" or "4-9" (and mixtures: "2,4-6") into ids[], at most
// max; prints a message naming the bad part and returns -1 when one is not an id.
int cli_parse_ids(const char *arg, int64_t *ids, int *n, int max);

#endif
