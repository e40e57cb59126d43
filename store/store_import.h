// Bringing runs from one workspace into another (lorabench import, a cluster sweep's task
// workspaces), and the record of sweeps submitted to a Slurm cluster. Each task of a cluster
// sweep trains in a workspace of its own, so no database is ever written by two hosts; the
// submitting workspace copies the finished runs in, remembering each one's source so that
// importing again adds nothing.
#ifndef LB_STORE_IMPORT_H
#define LB_STORE_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

// Copies every finished run (done, failed or cancelled) of the workspace src_ws that was
// not imported before into st, whose workspace folder is ws: the run's row (a name that is
// taken gets a number, as the runner's names do), its metrics, evaluations with their
// samples, artifact rows (paths moved to the new run's folder) and the files of
// src_ws/runs/<id>/ copied to ws/runs/<new id>/. The source is remembered by its absolute
// path and run id, so a second import of the same folder adds nothing, and a run deleted
// after its import stays deleted. sweep_id > 0 files the runs under that sweep. Each run
// is one transaction; runs of src_ws that still run are left for a later import. *n_imported
// (may be NULL) gets how many runs were added. src_ws is only read.
int store_import_workspace(store_t *st, const char *ws, const char *src_ws, int64_t sweep_id,
                           int *n_imported, lb_err_t *err);

// For a workspace that nothing will write again (a cluster task whose job ended before its
// run did: time limit, node failure, SIGKILL): imports its unfinished runs (queued, running
// or interrupted) as status (STORE_STATUS_INTERRUPTED or _CANCELLED) with the error text why,
// once, as store_import_workspace does.
int store_import_unfinished(store_t *st, const char *ws, const char *src_ws, int64_t sweep_id, const char *status,
                            const char *why, int *n_imported, lb_err_t *err);

// The newest run of a workspace as a cluster task's status line shows it, opened read-only
// (slurm_sync reads a task's workspace only once the task has left the queue: a reader of
// a database in WAL mode still writes its -shm index, which must not happen from a second
// host while the task's host writes).
typedef struct {
    int found;               // 0: no database or no run yet (the task has not started)
    int64_t source_run;      // the run's id in that workspace
    char status[16];         // one of STORE_STATUS_*
    int64_t step, total_steps;
    double loss;             // of the last stored step; NAN before the first
} store_peek_t;

// Reads the newest run of the workspace src_ws into *out (found = 0 when the folder has no
// database or no run yet).
int store_workspace_peek(const char *src_ws, store_peek_t *out, lb_err_t *err);

// 1 when run source_run of the workspace at absolute path source was imported into st.
int store_import_done(store_t *st, const char *source, int64_t source_run);

// 1 when any run of the workspace at absolute path source was imported into st (a cluster
// task's workspace holds one run).
int store_import_source_done(store_t *st, const char *source);

// ---- sweeps on a Slurm cluster ---------------------------------------------------------

#define STORE_JOB_SUBMITTED "submitted"  // tasks may still be queued or running
#define STORE_JOB_CANCELLED "cancelled"  // scancel was asked for
#define STORE_JOB_MERGED "merged"        // every task ended and its run was imported

typedef struct {
    int64_t sweep_id;
    char *job_id;            // the job array's id
    char *dir;               // the sweep's folder: task i's workspace is dir/task-<i>
    int64_t n_tasks;
    char *state;             // STORE_JOB_*
    double created_at;
} store_cluster_job_t;

// Records that sweep sweep_id was submitted as job array job_id with n_tasks tasks whose
// workspaces are under dir.
int store_cluster_job_add(store_t *st, int64_t sweep_id, const char *job_id, const char *dir,
                          int64_t n_tasks, lb_err_t *err);

// Cluster sweeps, oldest first; unmerged_only != 0 leaves out the merged ones.
int store_cluster_jobs_list(store_t *st, int unmerged_only, store_cluster_job_t **rows, size_t *n,
                            lb_err_t *err);

// Sets a cluster sweep's state (one of STORE_JOB_*); an unknown sweep is an error.
int store_cluster_job_set_state(store_t *st, int64_t sweep_id, const char *state, lb_err_t *err);

// Deletes sweep sweep_id when it has no runs (a sweep whose submission failed), with its
// cluster_jobs row and its folder <ws>/sweeps/<id>; a sweep with runs is left alone.
int store_sweep_drop_empty(store_t *st, const char *ws, int64_t sweep_id, lb_err_t *err);

// Frees rows from store_cluster_jobs_list.
void store_cluster_jobs_free(store_cluster_job_t *rows, size_t n);

#endif
