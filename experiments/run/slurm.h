// Sweeps on a Slurm cluster: `lorabench sweep SPEC --slurm` writes an sbatch job-array
// script (one array task per grid point) into the workspace's sweeps/<id>/ folder, submits
// it and records the sweep with its job id. Task i trains point-<i>.json into its own
// workspace sweeps/<id>/task-<i>/, so no SQLite file is written by two hosts; the
// workspace that submitted reads the tasks' state from squeue and their workspaces, and
// imports the finished ones (store_import_workspace). The workspace must sit on a file
// system that the compute nodes share.
#ifndef LB_SLURM_H
#define LB_SLURM_H

#include <stddef.h>
#include <stdint.h>

#include "spec.h"
#include "store.h"
#include "store_import.h"
#include "util.h"

typedef struct {
    const char *partition;   // --partition; NULL: the cluster's default
    const char *time;        // --time limit of each task; NULL: the partition's default
    int cpus_per_task;       // --cpus-per-task; <= 0: the spec's threads (1 when unset)
    int ntasks;              // processes per grid point; > 1 runs each point through srun (MPI)
} slurm_opts_t;

// The sbatch script of a sweep of n points whose folder is dir (absolute): a job array
// 0..n-1 whose task i runs `exe train dir/point-<i>.json --workspace dir/task-<i>` from
// the folder cwd (where relative paths in the specs point from), its output in
// dir/task-<i>.out. Returns malloc'd text.
char *slurm_script(const slurm_opts_t *o, const char *exe, const char *cwd, const char *dir, size_t n,
                   const char *name, int threads);

// Records the sweep (name, base_json) in st, writes its specs and script into
// <ws>/sweeps/<id>/ (job.sbatch), submits it with sbatch and records the job id. exe is
// the absolute path of this lorabench. *sweep_id and *job_id (malloc'd) are set on success.
int slurm_sweep_submit(store_t *st, const char *ws, const spec_t *specs, size_t n, const char *name,
                       const char *base_json, const slurm_opts_t *o, const char *exe, int64_t *sweep_id,
                       char **job_id, lb_err_t *err);

typedef enum {
    SLURM_TASK_PENDING,      // queued by Slurm
    SLURM_TASK_RUNNING,
    SLURM_TASK_DONE,
    SLURM_TASK_FAILED,       // its run failed, or the task ended without a finished run
    SLURM_TASK_CANCELLED,
    SLURM_TASK_UNKNOWN       // squeue could not be asked and the task's workspace says nothing final
} slurm_task_state_t;

// "pending", "running", "done", "failed", "cancelled" or "unknown".
const char *slurm_task_state_name(slurm_task_state_t s);

// One task of a cluster sweep as `runs` and the workbench show it.
typedef struct slurm_task {
    int64_t sweep_id;
    char job_id[32];
    int64_t index;           // the array task id (the grid point)
    char name[128];          // the point's run name
    slurm_task_state_t state;
    int64_t step, total_steps;   // -1: none yet
    double loss;             // the last stored step's; NAN before the first
    char out[4096];          // its output file (the reason a task failed is there)
} slurm_task_t;

// Brings the workspace's unmerged cluster sweeps up to date: asks squeue once; a task in
// the queue is pending or running (its step and loss read from its output file, never its
// database, which its host may be writing); a task that left the queue is read from its
// workspace and its run imported into st (whose folder is ws). A sweep is marked merged
// once every task ended and was imported. *tasks (may be NULL; free it) gets the tasks not
// imported yet, in sweep and task order; *n_imported (may be NULL) how many runs were
// imported now. When squeue cannot be asked (no Slurm here, controller down) the tasks
// not imported yet are unknown and nothing is imported (lorabench import does it by
// hand): then it returns 1 with err saying so, naming squeue's failure. -1: an error.
int slurm_sync(store_t *st, const char *ws, slurm_task_t **tasks, size_t *n_tasks, int *n_imported,
               lb_err_t *err);

// Cancels a cluster sweep: scancel on its job array, and records it as cancelled (the
// tasks' runs, stopped by SIGTERM, checkpoint and are imported as cancelled).
int slurm_sweep_cancel(store_t *st, int64_t sweep_id, lb_err_t *err);

#endif
