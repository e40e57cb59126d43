// sweep --slurm: a sweep submitted to a Slurm cluster as a job array (experiments/run/slurm.h).
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "slurm.h"
#include "spec.h"
#include "store.h"

// A positive count from an option's value, or -1 with a message naming the option.
static int parse_count(const char *opt, const char *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 1 || n > 100000) {
        fprintf(stderr, "lorabench sweep: %s takes a whole number from 1 up, not '%s'\n", opt, v);
        return -1;
    }
    return (int)n;
}

int cmd_sweep_slurm(int argc, char **argv) {
    const char *ws = NULL, *path = NULL;
    int json = 0, delete_spec = 0, dry_run = 0;
    slurm_opts_t o = {.ntasks = 1};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench sweep SPEC.json --slurm [--partition P] [--time T] [--cpus-per-task C]\n"
                   "                       [--ntasks N] [--dry-run] [--json] [--delete-spec] [--workspace DIR]\n\n"
                   "Submits the spec's grid to a Slurm cluster as a job array, one task per grid point, and\n"
                   "returns. The workspace must be on a file system that the compute nodes share: the sweep's\n"
                   "folder sweeps/<id>/ holds the script (job.sbatch), each point's spec and each task's own\n"
                   "workspace task-<i>/ and output task-<i>.out, so no database is written by two hosts.\n"
                   "'lorabench runs' and the workbench show the tasks (pending, running with their loss, done,\n"
                   "failed) and import each finished task's run into this workspace; cancelling the sweep in\n"
                   "the workbench runs scancel. --cpus-per-task defaults to the spec's threads; --ntasks N > 1\n"
                   "runs each point as N processes through srun (MPI). --dry-run prints the script only.\n");
            return 0;
        } else if (!strcmp(argv[i], "--slurm")) continue;
        else if (!strcmp(argv[i], "--dry-run")) dry_run = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--delete-spec")) delete_spec = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (!strcmp(argv[i], "--partition") && i + 1 < argc) o.partition = argv[++i];
        else if (!strcmp(argv[i], "--time") && i + 1 < argc) o.time = argv[++i];
        else if (!strcmp(argv[i], "--cpus-per-task") && i + 1 < argc) {
            if ((o.cpus_per_task = parse_count("--cpus-per-task", argv[++i])) < 0) return 2;
        } else if (!strcmp(argv[i], "--ntasks") && i + 1 < argc) {
            if ((o.ntasks = parse_count("--ntasks", argv[++i])) < 0) return 2;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "lorabench sweep: unknown option %s with --slurm (--parallel and --detach do not "
                            "apply: the cluster runs the tasks); see sweep --slurm --help\n", argv[i]);
            return 2;
        } else path = argv[i];
    }
    // Values go into #SBATCH lines: a line break would end the line and start another.
    const char *vals[] = {o.partition, o.time};
    for (int k = 0; k < 2; k++)
        if (vals[k] && (!*vals[k] || strpbrk(vals[k], "\n\r '\"\\"))) {
            fprintf(stderr, "lorabench sweep: --%s '%s' is not a Slurm value; give a name like 'batch' or a time "
                            "like '1:00:00'\n", k ? "time" : "partition", vals[k]);
            return 2;
        }
    if (!path) {
        fprintf(stderr, "lorabench sweep: give a spec file with a \"grid\", e.g. lorabench sweep "
                        "experiments/presets/rank-sweep.json --slurm\n");
        return 2;
    }
    spec_t spec, *specs;
    size_t n;
    if (cli_spec_load_grid(path, delete_spec, &spec, &specs, &n)) return 1;
    lb_err_t err = {0};
    const char *name = spec.name ? spec.name : "sweep";
    char exe[PATH_MAX];
    if (!realpath(cli_self_exe(), exe)) snprintf(exe, sizeof exe, "lorabench");
    int rc = 1;
    if (dry_run) {
        char cwd[PATH_MAX], dir[PATH_MAX + 64];
        if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
        snprintf(dir, sizeof dir, "%s/sweeps/ID", ws ? ws : "WORKSPACE");
        char *script = slurm_script(&o, exe, cwd, dir, n, name, specs[0].threads);
        printf("%s# (dry run: nothing was submitted; ID is the sweep's id once it is)\n", script);
        free(script);
        rc = 0;
    } else {
        char *wsdir;
        store_t *st;
        if (!cli_create_store(ws, &wsdir, &st)) {
            char *base = spec_to_json(&spec, 0);
            int64_t sweep_id;
            char *job;
            if (slurm_sweep_submit(st, wsdir, specs, n, name, base, &o, exe, &sweep_id, &job, &err)) {
                fprintf(stderr, "lorabench: %s\n", err.msg);
            } else {
                if (json)
                    printf("{\"sweep\":%lld,\"job\":\"%s\",\"tasks\":%zu}\n", (long long)sweep_id, job, n);
                else
                    printf("sweep %lld: %zu tasks submitted to Slurm as job %s (script: %s/sweeps/%lld/job.sbatch);\n"
                           "'lorabench runs' shows them and imports each finished run into this workspace\n",
                           (long long)sweep_id, n, job, wsdir, (long long)sweep_id);
                free(job);
                rc = 0;
            }
            free(base);
            store_close(st);
            free(wsdir);
        }
    }
    spec_list_free(specs, n);
    spec_free(&spec);
    return rc;
}

void cli_cluster_sync(store_t *st, const char *ws, slurm_task_t **tasks, size_t *n) {
    int imported;
    lb_err_t err = {0};
    int rc = slurm_sync(st, ws, tasks, n, &imported, &err);
    if (rc) fprintf(stderr, "lorabench: cluster sweeps: %s\n", err.msg);
    if (imported) fprintf(stderr, "imported %d finished cluster run%s\n", imported, imported == 1 ? "" : "s");
}

void cli_cluster_table(const slurm_task_t *tasks, size_t n) {
    if (!n) return;
    static const char *const head[] = {"sweep", "job", "task", "name", "state", "steps", "loss", "output"};
    static const int right[] = {1, 1, 1, 0, 0, 1, 1, 0};
    cli_table_t *t = cli_table_new(8, head, right);
    for (size_t i = 0; i < n; i++) {
        const slurm_task_t *k = &tasks[i];
        char sw[24], idx[24], steps[48], loss[24];
        snprintf(sw, sizeof sw, "%lld", (long long)k->sweep_id);
        snprintf(idx, sizeof idx, "%lld", (long long)k->index);
        if (k->step < 0) snprintf(steps, sizeof steps, "–");
        else if (k->total_steps > 0) snprintf(steps, sizeof steps, "%lld/%lld", (long long)k->step, (long long)k->total_steps);
        else snprintf(steps, sizeof steps, "%lld", (long long)k->step);
        if (isnan(k->loss)) snprintf(loss, sizeof loss, "–");
        else snprintf(loss, sizeof loss, "%.4f", k->loss);
        const char *cells[] = {sw, k->job_id, idx, k->name, slurm_task_state_name(k->state), steps, loss, k->out};
        cli_table_row(t, cells);
    }
    printf("\ncluster tasks not imported yet (lorabench sweep --slurm):\n");
    cli_table_print(stdout, t, 0);
    cli_table_free(t);
}
