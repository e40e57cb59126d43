// Small helpers shared by the subcommands: option parsing, opening the workspace's store,
// JSON string output.
#ifndef LB_CLI_COMMON_H
#define LB_CLI_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include "store.h"

// A running run whose worker process is gone and whose heartbeat is older than this is
// shown as interrupted. The pid check does the real work; this only rides out the moment
// between a worker's start and its first heartbeat.
#define LB_STALE_SECONDS 2.0

// Opens the workspace (ws: --workspace value or NULL) and its store; on failure prints the
// message and returns -1. *ws_out (may be NULL) gets the resolved folder (free it).
int cli_open_store(const char *ws, char **ws_out, store_t **st);

// Parses a run id; prints an error naming arg and returns -1 when it is not one.
int cli_parse_id(const char *arg, int64_t *id);

// Prints s as a JSON string literal (with quotes) to f; NULL prints null.
void cli_json_string(FILE *f, const char *s);

// 1 when arg is --help or -h.
int cli_is_help(const char *arg);

// The path that starts this program again, for spawning workers: "/proc/self/exe", which
// stays valid when the file was deleted or replaced since this process started ("lorabench"
// from PATH where there is no /proc).
const char *cli_self_exe(void);

#endif
