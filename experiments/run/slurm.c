// Sweeps on a Slurm cluster (slurm.h): the job-array script, sbatch, squeue, scancel.
// Slurm is asked through its commands (sbatch --parsable, squeue, scancel), which every
// cluster has; accounting (sacct) is often not set up, so a task that left the queue is
// read from its own workspace instead.
#include "slurm.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// A growing string.
typedef struct {
    char *s;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_add(buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

// s in single quotes for sh ('it'\''s').
static void buf_quoted(buf_t *b, const char *s) {
    buf_add(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'') buf_add(b, "'\\''");
        else buf_add(b, "%c", *p);
    }
    buf_add(b, "'");
}

// A job id as sbatch prints it: digits only (the quoting of every command relies on it).
static int job_id_valid(const char *id) {
    if (!id || !*id || strlen(id) > 20) return 0;
    for (const char *p = id; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    return 1;
}

// Runs the shell command cmd, its stdout and stderr in *out (malloc'd); returns its exit
// status (127 when the shell could not run it, -1 when it could not be started).
static int run_capture(const char *cmd, char **out) {
    buf_t b = {0};
    buf_add(&b, "%s", "");
    FILE *p = popen(cmd, "r");
    if (!p) {
        *out = b.s;
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, p)) buf_add(&b, "%s", line);
    int status = pclose(p);
    *out = b.s;
    return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *slurm_task_state_name(slurm_task_state_t s) {
    static const char *const names[] = {"pending", "running", "done", "failed", "cancelled", "unknown"};
    return s >= SLURM_TASK_PENDING && s <= SLURM_TASK_UNKNOWN ? names[s] : "unknown";
}

char *slurm_script(const slurm_opts_t *o, const char *exe, const char *cwd, const char *dir, size_t n,
                   const char *name, int threads) {
    int cpus = o->cpus_per_task > 0 ? o->cpus_per_task : threads > 0 ? threads : 1;
    int ntasks = o->ntasks > 1 ? o->ntasks : 1;
    buf_t b = {0};
    buf_add(&b, "#!/bin/bash\n");
    buf_add(&b, "# lorabench sweep %s: one array task per grid point. Task i trains point-<i>.json into\n"
                "# its own workspace task-<i>/ (no database is written by two hosts); the workspace that\n"
                "# submitted it imports the finished runs (lorabench runs, the workbench, lorabench import).\n",
            name);
    buf_add(&b, "#SBATCH --job-name=lorabench-%s\n", name);
    buf_add(&b, "#SBATCH --array=0-%zu\n", n - 1);
    buf_add(&b, "#SBATCH --output=%s/task-%%a.out\n", dir);
    buf_add(&b, "#SBATCH --chdir=%s\n", cwd);
    buf_add(&b, "#SBATCH --ntasks=%d\n", ntasks);
    buf_add(&b, "#SBATCH --cpus-per-task=%d\n", cpus);
    if (o->partition) buf_add(&b, "#SBATCH --partition=%s\n", o->partition);
    if (o->time) buf_add(&b, "#SBATCH --time=%s\n", o->time);
    buf_add(&b, "\nset -eu\ni=$SLURM_ARRAY_TASK_ID\n");
    buf_add(&b, "dir=");
    buf_quoted(&b, dir);
    buf_add(&b, "\n");
    // ntasks > 1: every rank of the point's MPI run is started by srun.
    if (ntasks > 1) buf_add(&b, "exec srun --ntasks=%d --cpus-per-task=%d ", ntasks, cpus);
    else buf_add(&b, "exec ");
    buf_quoted(&b, exe);
    buf_add(&b, " train \"$dir/point-$i.json\" --workspace \"$dir/task-$i\"\n");
    return b.s;
}

static int submit(store_t *st, const char *ws, const spec_t *specs, size_t n, const char *name,
                  const char *base_json, const slurm_opts_t *o, const char *exe, int64_t *sweep_id,
                  char **job_id, lb_err_t *err) {
    *job_id = NULL;
    if (n == 0) return lb_err_set(err, LB_EARG, "the sweep has no grid points; give the spec a \"grid\"");
    char ws_abs[4096], cwd[4096];
    if (!realpath(ws, ws_abs) || !getcwd(cwd, sizeof cwd))
        return lb_err_set(err, LB_EIO, "%s: cannot resolve the workspace folder (%s)", ws, strerror(errno));
    if (store_sweep_create(st, name ? name : "sweep", base_json, sweep_id, err)) return -1;
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/sweeps", ws_abs);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/sweeps/%lld", ws_abs, (long long)*sweep_id);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return lb_err_set(err, LB_EIO, "%s: cannot create the sweep's folder (%s); check that the workspace is writable",
                          dir, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        char *json = spec_to_json(&specs[i], 1);
        snprintf(path, sizeof path, "%s/point-%zu.json", dir, i);
        int rc = lb_write_file_atomic(path, json, strlen(json), err);
        free(json);
        if (rc) return -1;
    }
    char *script = slurm_script(o, exe, cwd, dir, n, name ? name : "sweep", specs[0].threads);
    snprintf(path, sizeof path, "%s/job.sbatch", dir);
    int rc = lb_write_file_atomic(path, script, strlen(script), err);
    free(script);
    if (rc) return -1;
    buf_t cmd = {0};
    buf_add(&cmd, "sbatch --parsable ");
    buf_quoted(&cmd, path);
    buf_add(&cmd, " 2>&1");
    char *out;
    rc = run_capture(cmd.s, &out);
    free(cmd.s);
    out[strcspn(out, ";\r\n")] = 0;  // "ID" or "ID;cluster"
    if (rc == 127)
        lb_err_set(err, LB_EIO, "sbatch was not found; run this on a Slurm login node (or install slurm-client)");
    else if (rc != 0 || !job_id_valid(out))
        lb_err_set(err, LB_EIO, "sbatch refused %s: %s; check --partition, --time and the cluster's limits", path,
                   out[0] ? out : "no output");
    else if (store_cluster_job_add(st, *sweep_id, out, dir, (int64_t)n, err) == 0) {
        *job_id = out;
        return 0;
    }
    free(out);
    return -1;
}

int slurm_sweep_submit(store_t *st, const char *ws, const spec_t *specs, size_t n, const char *name,
                       const char *base_json, const slurm_opts_t *o, const char *exe, int64_t *sweep_id,
                       char **job_id, lb_err_t *err) {
    *sweep_id = 0;
    if (submit(st, ws, specs, n, name, base_json, o, exe, sweep_id, job_id, err) == 0) return 0;
    // Nothing was submitted: no sweep is left behind, nor its folder.
    if (*sweep_id > 0) {
        lb_err_t ignored;
        store_sweep_drop_empty(st, ws, *sweep_id, &ignored);
        *sweep_id = 0;
    }
    return -1;
}

// ---- the tasks' state ------------------------------------------------------------------

typedef struct {
    char job[32];
    int64_t index;
    char state[32];
} queued_t;

// The array tasks in the queue of the given jobs (squeue -r: one line per task). Returns 0,
// or -1 when squeue could not be asked (no Slurm here, controller down), with why.
static int squeue_tasks(const store_cluster_job_t *jobs, size_t n_jobs, queued_t **rows, size_t *n, char *why,
                        size_t why_len) {
    *rows = NULL;
    *n = 0;
    buf_t cmd = {0};
    buf_add(&cmd, "squeue -h -r -o '%%F %%K %%T' -j ");
    int any = 0;
    for (size_t j = 0; j < n_jobs; j++)
        if (job_id_valid(jobs[j].job_id)) buf_add(&cmd, "%s%s", any++ ? "," : "", jobs[j].job_id);
    buf_add(&cmd, " 2>&1");
    if (!any) {
        free(cmd.s);
        return 0;
    }
    char *out;
    int rc = run_capture(cmd.s, &out);
    free(cmd.s);
    // Jobs that left the queue long ago are unknown to squeue: an empty queue, not an error.
    if (rc != 0 && !strstr(out, "Invalid job id")) {
        out[strcspn(out, "\r\n")] = 0;
        if (rc == 127) snprintf(why, why_len, "squeue was not found");
        else snprintf(why, why_len, "squeue failed: %s", *out ? out : "no message");
        free(out);
        return -1;
    }
    size_t cap = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        queued_t q;
        long long idx;
        if (sscanf(line, "%31s %lld %31s", q.job, &idx, q.state) != 3) continue;
        q.index = idx;
        if (*n == cap) *rows = xrealloc(*rows, (cap = cap ? cap * 2 : 16) * sizeof **rows);
        (*rows)[(*n)++] = q;
    }
    free(out);
    return 0;
}

// The point's run name from its spec file (the task number when it cannot be read).
static void point_name(const char *dir, int64_t i, char *out, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/point-%lld.json", dir, (long long)i);
    snprintf(out, cap, "task %lld", (long long)i);
    spec_t s;
    lb_err_t err;
    if (spec_load_file(path, &s, &err) == 0) {
        if (s.name) snprintf(out, cap, "%s", s.name);
        spec_free(&s);
    }
}

// A running task's step and loss from the last progress line its `train` wrote to its
// output file ("run 1  step 3/6  loss 4.4123 ...", the foreground progress of
// tui/cli/cmd_train.c): plain appends to a file, which any host may read while another
// writes, unlike a SQLite database in WAL mode (a reader writes to its -shm index).
static void out_progress(slurm_task_t *t) {
    FILE *f = fopen(t->out, "rb");
    if (!f) return;
    char buf[8192];
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        start = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    }
    size_t n = fseek(f, start, SEEK_SET) == 0 ? fread(buf, 1, sizeof buf - 1, f) : 0;
    fclose(f);
    buf[n] = 0;
    for (char *p = buf; (p = strstr(p, "  step ")) != NULL; p++) {
        long long step, total;
        double loss;
        if (sscanf(p, "  step %lld/%lld  loss %lf", &step, &total, &loss) == 3) {
            t->step = step;
            t->total_steps = total;
            t->loss = loss;
        }
    }
}

static int is_final_run(store_status_t s) {
    return s == STORE_RUN_DONE || s == STORE_RUN_FAILED || s == STORE_RUN_CANCELLED;
}

static int is_final(slurm_task_state_t s) {
    return s == SLURM_TASK_DONE || s == SLURM_TASK_FAILED || s == SLURM_TASK_CANCELLED;
}

int slurm_sync(store_t *st, const char *ws, slurm_task_t **tasks, size_t *n_tasks, int *n_imported,
               lb_err_t *err) {
    if (tasks) *tasks = NULL;
    if (n_tasks) *n_tasks = 0;
    if (n_imported) *n_imported = 0;
    store_cluster_job_t *jobs;
    size_t n_jobs;
    if (store_cluster_jobs_list(st, 1, &jobs, &n_jobs, err)) return -1;
    if (n_jobs == 0) return 0;
    // squeue first, the workspaces after: a task that is not in the queue by then has ended,
    // so what its workspace says is final.
    queued_t *queue;
    size_t n_queue, n_unknown = 0;
    char why[600] = "";
    int queue_known = squeue_tasks(jobs, n_jobs, &queue, &n_queue, why, sizeof why) == 0;
    slurm_task_t *list = NULL;
    size_t n_list = 0, cap = 0;
    int rc = 0;
    for (size_t j = 0; j < n_jobs && !rc; j++) {
        const store_cluster_job_t *job = &jobs[j];
        int all_merged = 1;
        for (int64_t i = 0; i < job->n_tasks && !rc; i++) {
            slurm_task_t t = {.sweep_id = job->sweep_id, .index = i, .step = -1, .total_steps = -1, .loss = NAN};
            snprintf(t.job_id, sizeof t.job_id, "%s", job->job_id);
            snprintf(t.out, sizeof t.out, "%s/task-%lld.out", job->dir, (long long)i);
            const char *qstate = NULL;
            for (size_t k = 0; k < n_queue; k++)
                if (!strcmp(queue[k].job, job->job_id) && queue[k].index == i) qstate = queue[k].state;
            char task_ws[4200];
            snprintf(task_ws, sizeof task_ws, "%s/task-%lld", job->dir, (long long)i);
            store_peek_t pk = {.found = 0};
            store_status_t run_status = STORE_RUN_UNKNOWN;
            if (qstate || !queue_known) {
                // Queued or running (or not known): its database may be open on another host,
                // so it is not touched; the step and loss come from its output.
                if (!queue_known) t.state = SLURM_TASK_UNKNOWN;
                else if (!strcmp(qstate, "PENDING") || !strcmp(qstate, "CONFIGURING")) t.state = SLURM_TASK_PENDING;
                else t.state = SLURM_TASK_RUNNING;
                out_progress(&t);
            } else {
                // It left the queue: nothing writes its workspace any more.
                lb_err_t perr;
                if (store_workspace_peek(task_ws, &pk, &perr)) pk.found = 0;
                if (pk.found) run_status = store_status_parse(pk.status);
                if (run_status == STORE_RUN_DONE) t.state = SLURM_TASK_DONE;
                else if (run_status == STORE_RUN_FAILED) t.state = SLURM_TASK_FAILED;
                else if (run_status == STORE_RUN_CANCELLED) t.state = SLURM_TASK_CANCELLED;
                else if (!strcmp(job->state, STORE_JOB_CANCELLED)) t.state = SLURM_TASK_CANCELLED;
                else t.state = SLURM_TASK_FAILED;  // ended without a finished run
                if (pk.found) {
                    t.step = pk.step;
                    t.total_steps = pk.total_steps;
                    t.loss = pk.loss;
                }
            }
            int imported = pk.found && store_import_done(st, task_ws, pk.source_run);
            char task_abs[PATH_MAX];
            if (!queue_known && realpath(task_ws, task_abs))  // its run came in before: not a task any more
                imported = store_import_source_done(st, task_abs);
            if (!imported && pk.found && is_final(t.state)) {
                int added = 0;
                if (is_final_run(run_status)) {
                    rc = store_import_workspace(st, ws, task_ws, job->sweep_id, &added, err);
                } else {
                    // The task left the queue before its run finished: nothing writes that
                    // workspace any more, so its run comes over as it stopped.
                    char why[4400];
                    snprintf(why, sizeof why, "its Slurm task (job %s, task %lld) ended before the run did (%s); "
                             "see %s", job->job_id, (long long)i,
                             t.state == SLURM_TASK_CANCELLED ? "scancel" : "time limit, node failure or a kill",
                             t.out);
                    rc = store_import_unfinished(st, ws, task_ws, job->sweep_id,
                                                 t.state == SLURM_TASK_CANCELLED ? STORE_STATUS_CANCELLED
                                                                                 : STORE_STATUS_INTERRUPTED,
                                                 why, &added, err);
                }
                if (!rc) imported = 1;
                if (n_imported) *n_imported += added;
            }
            if (!is_final(t.state) || (pk.found && !imported)) all_merged = 0;
            if (!imported && t.state == SLURM_TASK_UNKNOWN) n_unknown++;
            if (!imported && tasks) {
                point_name(job->dir, i, t.name, sizeof t.name);
                if (n_list == cap) list = xrealloc(list, (cap = cap ? cap * 2 : 16) * sizeof *list);
                list[n_list++] = t;
            }
        }
        if (!rc && all_merged) rc = store_cluster_job_set_state(st, job->sweep_id, STORE_JOB_MERGED, err);
    }
    free(queue);
    store_cluster_jobs_free(jobs, n_jobs);
    if (tasks) *tasks = list;
    else free(list);
    if (n_tasks) *n_tasks = n_list;
    if (!rc && n_unknown) {
        lb_err_set(err, LB_EIO, "%s; the state of %zu cluster task%s is unknown and nothing was imported from %s "
                   "(run 'lorabench runs' again once Slurm answers, or 'lorabench import' a finished task's folder)",
                   why, n_unknown, n_unknown == 1 ? "" : "s", n_unknown == 1 ? "it" : "them");
        rc = 1;
    }
    return rc;
}

int slurm_sweep_cancel(store_t *st, int64_t sweep_id, lb_err_t *err) {
    store_cluster_job_t *jobs;
    size_t n;
    if (store_cluster_jobs_list(st, 0, &jobs, &n, err)) return -1;
    int rc = lb_err_set(err, LB_EARG, "sweep %lld was not submitted to a cluster; 'lorabench runs' lists the "
                                      "cluster sweeps", (long long)sweep_id);
    for (size_t j = 0; j < n; j++) {
        if (jobs[j].sweep_id != sweep_id) continue;
        if (!job_id_valid(jobs[j].job_id)) {
            rc = lb_err_set(err, LB_EFORMAT, "sweep %lld has no valid job id", (long long)sweep_id);
            break;
        }
        char cmd[128], *out;
        snprintf(cmd, sizeof cmd, "scancel %s 2>&1", jobs[j].job_id);
        int status = run_capture(cmd, &out);
        out[strcspn(out, "\n")] = 0;
        if (status == 127) rc = lb_err_set(err, LB_EIO, "scancel was not found; cancel job %s on the cluster's login node", jobs[j].job_id);
        else if (status != 0) rc = lb_err_set(err, LB_EIO, "scancel %s failed: %s", jobs[j].job_id, out);
        else rc = store_cluster_job_set_state(st, sweep_id, STORE_JOB_CANCELLED, err);
        free(out);
        break;
    }
    store_cluster_jobs_free(jobs, n);
    return rc;
}
