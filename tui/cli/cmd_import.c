// import: copies the finished runs of another workspace (a cluster sweep's task folder, a
// colleague's workspace) into this one, once.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_common.h"
#include "store.h"
#include "store_import.h"

int cmd_import(int argc, char **argv) {
    const char *ws = NULL;
    int64_t sweep_id = 0;
    const char *dirs[64];
    int n_dirs = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench import DIR... [--sweep ID] [--workspace DIR]\n\n"
                   "Copies the finished (done, failed or cancelled) runs of the workspace DIR into this one:\n"
                   "each run's row, metrics, evaluations with their samples, and its files (adapter or model,\n"
                   "log) into runs/<new id>/. DIR is only read. Importing the same folder again adds nothing\n"
                   "(a run deleted after its import stays deleted); runs still training there are left for a\n"
                   "later import. A cluster sweep's tasks (sweep --slurm) are imported this way by 'runs' and\n"
                   "the workbench; DIR may be one of its sweeps/<id>/task-<i> folders. --sweep ID files the\n"
                   "imported runs under that sweep.\n");
            return 0;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (!strcmp(argv[i], "--sweep") && i + 1 < argc) {
            if (cli_parse_id(argv[++i], &sweep_id)) return 2;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "lorabench import: unknown option %s; see --help\n", argv[i]);
            return 2;
        } else if (n_dirs < 64) dirs[n_dirs++] = argv[i];
        else {
            fprintf(stderr, "lorabench import: at most 64 folders at a time; import the rest in another call\n");
            return 2;
        }
    }
    if (n_dirs == 0) {
        fprintf(stderr, "lorabench import: give the workspace folder to import from, e.g. lorabench import "
                        "other-workspace/\n");
        return 2;
    }
    char *wsdir;
    store_t *st;
    if (cli_open_store(ws, &wsdir, &st)) return 1;
    int rc = 0;
    for (int d = 0; d < n_dirs; d++) {
        lb_err_t err = {0};
        int added = 0;
        if (store_import_workspace(st, wsdir, dirs[d], sweep_id, &added, &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            rc = 1;
        }
        printf("%s: %d run%s imported\n", dirs[d], added, added == 1 ? "" : "s");
    }
    store_close(st);
    free(wsdir);
    return rc;
}
