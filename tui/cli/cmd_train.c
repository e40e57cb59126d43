// train, worker, resume, cancel and sweep: starting and stopping runs.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "lb_mpi.h"
#include "runner.h"
#include "spec.h"
#include "store.h"
#include "util.h"

static volatile sig_atomic_t stop_requested, stop_signal;

static void on_stop(int sig) {
    stop_requested = 1;
    stop_signal = sig;
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    // Past a file-size limit (RLIMIT_FSIZE) write() must fail with EFBIG, which the run
    // reports as "no space left" with the path and status failed; the default action of
    // SIGXFSZ would kill the worker silently instead.
    signal(SIGXFSZ, SIG_IGN);
}

static void fmt_dur(char *out, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(out, n, "--");
    else if (s < 60) snprintf(out, n, "%.0fs", s);
    else if (s < 3600) snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

// The foreground progress line on stderr.
static void progress_line(void *ctx, const runner_progress_t *p) {
    (void)ctx;
    if (!strcmp(p->phase, "train")) {
        char eta[32];
        fmt_dur(eta, sizeof eta, p->eta_s);
        fprintf(stderr, "\rrun %lld  step %ld/%ld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s   ",
                (long long)p->run_id, p->step, p->total_steps, p->loss, p->lr, p->tokens_per_s, eta);
    } else if (!strcmp(p->phase, "eval")) {
        fprintf(stderr, "\rrun %lld  evaluated %d examples at step %ld%*s\n", (long long)p->run_id, p->eval_done, p->step, 20, "");
    } else if (!strcmp(p->phase, "note")) {
        fprintf(stderr, "\rrun %lld: %s\n", (long long)p->run_id, p->note);
    } else {
        fprintf(stderr, "run %lld: loading model, tokenizer and data...\n", (long long)p->run_id);
    }
    fflush(stderr);
}

// Prints the run's outcome; returns its status (STORE_RUN_UNKNOWN when it cannot be read).
static store_status_t print_run_result(store_t *st, int64_t id, int json) {
    store_run_t r;
    lb_err_t err;
    if (store_run_get(st, id, &r, &err)) return STORE_RUN_UNKNOWN;
    store_status_t status = store_status_parse(r.status);
    if (json) {
        printf("{\"id\":%lld,\"name\":", (long long)id);
        cli_json_string(stdout, r.name);
        printf(",\"status\":\"%s\"", r.status);
        // a value the run does not have (zero-shot's loss, a failed run's ROUGE) is null
        const char *keys[] = {"loss", "rouge1", "rouge2", "rougeL"};
        const double vals[] = {r.final_loss, r.rouge1, r.rouge2, r.rougeL};
        for (int k = 0; k < 4; k++) {
            if (isnan(vals[k])) printf(",\"%s\":null", keys[k]);
            else printf(",\"%s\":%.6g", keys[k], vals[k]);
        }
        printf("}\n");
    } else {
        printf("run %lld %s: %s", (long long)id, r.name, r.status);
        if (!isnan(r.final_loss)) printf("  loss %.4f", r.final_loss);
        if (!isnan(r.rouge1)) printf("  ROUGE-1 %.4f  ROUGE-2 %.4f  ROUGE-L %.4f", r.rouge1, r.rouge2, r.rougeL);
        printf("\n");
        if (r.error && status != STORE_RUN_DONE) printf("  %s\n", r.error);
    }
    store_run_clear(&r);
    return status;
}

// The crash and cancel tests' hooks, from the environment: vanish after N steps, slow the
// steps down, slow the evaluation's batches down.
static void test_hooks(runner_opts_t *o) {
    const char *die = getenv("LORABENCH_TEST_DIE_AFTER");
    if (die) o->die_after_steps = atol(die);
    const char *delay = getenv("LORABENCH_TEST_STEP_DELAY_MS");
    if (delay) o->step_delay_ms = atoi(delay);
    const char *eval_delay = getenv("LORABENCH_TEST_EVAL_DELAY_MS");
    if (eval_delay) o->eval_delay_ms = atoi(eval_delay);
}

// Under mpirun (comm->size > 1): rank 0's id of the run that every rank executes, shared
// just before rank 0 executes it; -1 when rank 0 failed before (the other ranks return).
static int share_run_id(const train_comm_t *comm, int64_t id) {
    lb_err_t err = {0};
    if (comm->size <= 1) return 0;
    if (lb_mpi_share(comm, &id, &err) == 0) return 0;
    fprintf(stderr, "lorabench: %s\n", err.msg);
    return -1;
}

// Executes run id, which this process queued, here (rank 0 under mpirun). Returns the exit
// code: 0 when the run finished, 1 when it failed, 128 + the signal when SIGINT or SIGTERM
// stopped it (cancelled; a signal that came after the run was done changes nothing).
static int execute_foreground(const char *ws, store_t *st, int64_t id, int json, const train_comm_t *comm) {
    if (share_run_id(comm, id)) return 1;
    install_stop_handlers();
    runner_opts_t o = {.workspace = ws, .stop = &stop_requested, .progress = json ? NULL : progress_line,
                       .comm = comm->size > 1 ? comm : NULL, .queued_by = store_owner_self()};
    test_hooks(&o);
    lb_err_t err = {0};
    int rc = runner_execute(&o, id, &err);
    if (!json) fprintf(stderr, "\n");
    if (rc) fprintf(stderr, "lorabench: run %lld failed: %s\n", (long long)id, err.msg);
    store_status_t status = print_run_result(st, id, json);
    if (rc) return 1;
    return stop_requested && status == STORE_RUN_CANCELLED ? cli_exit_stopped((int)stop_signal) : 0;
}

// A data-parallel rank other than 0 (`mpirun -n N lorabench train|resume`): waits for rank
// 0's run id, then trains its share of the run in step with rank 0 and writes nothing.
static int execute_peer(const char *ws, const train_comm_t *comm) {
    int64_t id = -1;
    lb_err_t err = {0};
    if (lb_mpi_share(comm, &id, &err)) {
        fprintf(stderr, "lorabench (rank %d): %s\n", comm->rank, err.msg);
        return 1;
    }
    if (id <= 0) return 1;  // rank 0 said why
    char *wsdir = NULL;
    if (store_workspace_find(ws, &wsdir, &err)) {  // rank 0 made it; runner_execute fails too, telling rank 0
        fprintf(stderr, "lorabench (rank %d): %s\n", comm->rank, err.msg);
        wsdir = NULL;
    }
    install_stop_handlers();
    runner_opts_t o = {.workspace = wsdir, .stop = &stop_requested, .comm = comm};
    test_hooks(&o);
    int rc = runner_execute(&o, id, &err);
    if (rc) fprintf(stderr, "lorabench (rank %d): run %lld failed: %s\n", comm->rank, (long long)id, err.msg);
    free(wsdir);
    return rc ? 1 : 0;
}

// Joins the job when mpirun started this process; *comm->size 1 otherwise.
static int join_mpi(train_comm_t *comm, int *joined) {
    lb_err_t err = {0};
    if (lb_mpi_join(comm, joined, &err) == 0) return 0;
    fprintf(stderr, "lorabench: %s\n", err.msg);
    return -1;
}

// Starts a worker for run id, which this process queued, and returns once it has claimed it.
static int spawn_detached(store_t *st, int64_t id) {
    int64_t pid;
    lb_err_t err = {0};
    if (runner_start_worker(cli_self_exe(), st, id, &pid, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int run_sweep_specs(const char *ws, store_t **stp, spec_t *specs, size_t n, const char *name,
                           const char *base_json, int parallel, int detach, int json);

static int train_lead(const char *ws, const char *spec_path, int detach, int json, int delete_spec, int pretrain,
                      int threads, const train_comm_t *comm);

static int train_or_pretrain(int argc, char **argv, int pretrain) {
    const char *ws = NULL, *spec_path = NULL;
    int detach = 0, json = 0, delete_spec = 0, threads = -1;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i]) && pretrain) {
            printf("usage: lorabench pretrain SPEC.json [--detach] [--json] [--threads N] [--workspace DIR]\n\n"
                   "Pretrains with T5's span-corruption objective (15%% noise, mean span 3, <extra_id_N>\n"
                   "sentinels) on the data set's source texts: method full, train.objective span_corruption.\n"
                   "A base_model folder with config.json and tokenizer.json but no model.safetensors starts\n"
                   "from T5's random initialisation. Progress, checkpoints, resume and the loss curve work as\n"
                   "for any run; the result is runs/<id>/model/, a Hugging Face model folder.\n");
            return 0;
        } else if (cli_is_help(argv[i])) {
            printf("usage: lorabench train SPEC.json [--detach] [--json] [--delete-spec] [--threads N] [--workspace DIR]\n\n"
                   "Records a run from SPEC (see README: spec format) and trains it. In the foreground a\n"
                   "progress line shows step/total, loss, tokens/s and ETA; Ctrl-C stops after the step,\n"
                   "writes a checkpoint and marks the run cancelled (resume continues it). Exit status: 0\n"
                   "done, 1 failed, 130 stopped by Ctrl-C, 143 by SIGTERM (lorabench cancel). --detach\n"
                   "starts a worker process, prints the run id and returns at once. A spec with a\n"
                   "\"grid\" runs as a sweep. --delete-spec removes SPEC.json once it is read (a temporary\n"
                   "file, as the workbench writes; the run keeps its spec in the workspace). --threads N\n"
                   "replaces the spec's \"threads\" (0: all cores).\n\n"
                   "Under mpirun (mpirun -n N lorabench train SPEC.json) the N processes train one run\n"
                   "data-parallel: each takes its share of every batch, threads are per process, and\n"
                   "process 0 alone writes the workspace (README: On a cluster).\n");
            return 0;
        } else if (!strcmp(argv[i], "--detach")) detach = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--delete-spec")) delete_spec = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end || v < 0 || v > 1024) {
                fprintf(stderr, "lorabench train: --threads must be 0 (all cores) or a number of threads up to 1024\n");
                return 2;
            }
            threads = (int)v;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "lorabench train: unknown option %s; see --help\n", argv[i]);
            return 2;
        } else spec_path = argv[i];
    }
    if (!spec_path) {
        fprintf(stderr, "lorabench train: give a spec file, e.g. lorabench train experiments/presets/quick-demo.json\n");
        return 2;
    }
    train_comm_t comm;
    int joined;
    if (join_mpi(&comm, &joined)) return 1;
    int rc = comm.rank > 0 ? execute_peer(ws, &comm) : train_lead(ws, spec_path, detach, json, delete_spec, pretrain, threads, &comm);
    if (joined) lb_mpi_leave(&comm);
    return rc;
}

// train and pretrain in this process (rank 0 under mpirun).
static int train_lead(const char *ws, const char *spec_path, int detach, int json, int delete_spec, int pretrain,
                      int threads, const train_comm_t *comm) {
    spec_t spec;
    lb_err_t err = {0};
    if (cli_spec_load(spec_path, delete_spec, &spec)) {
        share_run_id(comm, -1);
        return 1;
    }
    if (comm->size > 1 && (detach || spec.grid_json)) {
        fprintf(stderr, "lorabench: under mpirun, train runs one run in the foreground; leave out %s\n",
                detach ? "--detach" : "the spec's \"grid\" (start each of its runs with mpirun)");
        share_run_id(comm, -1);
        spec_free(&spec);
        return 2;
    }
    if (threads >= 0) spec.threads = threads;  // recorded with the run: every rank reads it
    if (pretrain) {
        spec.method = SPEC_METHOD_FULL;
        spec.train.objective = SPEC_OBJ_SPAN_CORRUPTION;
    }
    char *wsdir;
    store_t *st;
    if (cli_create_store(ws, &wsdir, &st)) {
        share_run_id(comm, -1);
        spec_free(&spec);
        return 1;
    }
    int rc = 0;
    if (spec.grid_json) {
        spec_t *specs;
        size_t n;
        if (spec_expand_grid(&spec, &specs, &n, &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            rc = 1;
        } else {
            char *base = spec_to_json(&spec, 0);
            rc = run_sweep_specs(wsdir, &st, specs, n, spec.name, base, 1, detach, json);
            free(base);
            spec_list_free(specs, n);
        }
    } else {
        int64_t id;
        if (runner_create_run(st, &spec, -1, &id, &err)) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            share_run_id(comm, -1);
            rc = 1;
        } else if (detach) {
            rc = spawn_detached(st, id) ? 1 : 0;
            if (!rc) printf("%lld\n", (long long)id);
        } else {
            rc = execute_foreground(wsdir, st, id, json, comm);
        }
    }
    spec_free(&spec);
    store_close(st);
    free(wsdir);
    return rc;
}

int cmd_train(int argc, char **argv) { return train_or_pretrain(argc, argv, 0); }

int cmd_pretrain(int argc, char **argv) { return train_or_pretrain(argc, argv, 1); }

int cmd_worker(int argc, char **argv) {
    const char *ws = NULL;
    int64_t id = 0;
    store_owner_t queued_by = {0, 0};
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench worker --workspace DIR --run ID [--queued-by PID:START]\n\nExecutes one recorded "
                   "run (started by the workbench or train --detach). It claims the queued run first (only from\n"
                   "the process --queued-by names, when given); a run that is not queued is left alone.\n"
                   "SIGTERM: finish the step, checkpoint, mark cancelled.\n");
            return 0;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (!strcmp(argv[i], "--queued-by") && i + 1 < argc) {
            long long p = 0, t = 0;
            if (sscanf(argv[++i], "%lld:%lld", &p, &t) != 2 || p <= 0 || t < 0) {
                fprintf(stderr, "lorabench worker: --queued-by takes PID:START (two whole numbers), not %s\n", argv[i]);
                return 2;
            }
            queued_by.pid = p, queued_by.start = t;
        }
        else if (!strcmp(argv[i], "--run") && i + 1 < argc) {
            if (cli_parse_id(argv[++i], &id)) return 2;
        } else {
            fprintf(stderr, "lorabench worker: unknown argument %s; see --help\n", argv[i]);
            return 2;
        }
    }
    if (!id) {
        fprintf(stderr, "lorabench worker: --run ID is required\n");
        return 2;
    }
    char *wsdir;
    lb_err_t err = {0};
    if (store_workspace_resolve(ws, &wsdir, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return 1;
    }
    if (getenv("LORABENCH_TEST_WORKER_FAIL")) {  // test hook: a worker that cannot start
        fprintf(stderr, "lorabench worker: %s\n", getenv("LORABENCH_TEST_WORKER_FAIL"));
        free(wsdir);
        return 1;
    }
    install_stop_handlers();
    runner_opts_t o = {.workspace = wsdir, .stop = &stop_requested, .queued_by = queued_by};
    test_hooks(&o);
    int rc = runner_execute(&o, id, &err);
    if (rc) fprintf(stderr, "lorabench worker: run %lld failed: %s\n", (long long)id, err.msg);
    free(wsdir);
    return rc ? 1 : 0;
}

static int resume_lead(const char *ws, int64_t id, int detach, int json, const train_comm_t *comm);

int cmd_resume(int argc, char **argv) {
    const char *ws = NULL;
    int64_t id = 0;
    int detach = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench resume ID [--detach] [--json] [--workspace DIR]\n\nContinues an interrupted, "
                   "cancelled or failed run from its last checkpoint. In the foreground Ctrl-C stops it as\n"
                   "train's does; exit status as train's: 0 done, 1 failed, 130 Ctrl-C, 143 SIGTERM.\n");
            return 0;
        } else if (!strcmp(argv[i], "--detach")) detach = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (cli_parse_id(argv[i], &id)) return 2;
    }
    if (!id) {
        fprintf(stderr, "lorabench resume: give the run id ('lorabench runs' lists them)\n");
        return 2;
    }
    train_comm_t comm;
    int joined;
    if (join_mpi(&comm, &joined)) return 1;
    int rc = comm.rank > 0 ? execute_peer(ws, &comm) : resume_lead(ws, id, detach, json, &comm);
    if (joined) lb_mpi_leave(&comm);
    return rc;
}

// resume in this process (rank 0 under mpirun).
static int resume_lead(const char *ws, int64_t id, int detach, int json, const train_comm_t *comm) {
    char *wsdir;
    store_t *st;
    if (comm->size > 1 && detach) {
        fprintf(stderr, "lorabench: under mpirun, resume continues the run in the foreground; leave out --detach\n");
        share_run_id(comm, -1);
        return 2;
    }
    if (cli_open_store(ws, &wsdir, &st)) {
        share_run_id(comm, -1);
        return 1;
    }
    lb_err_t err = {0};
    int executed = 0;  // under mpirun: the other ranks got the id
    store_mark_stale_interrupted(st, store_now(), LB_STALE_SECONDS, NULL, NULL, NULL, &err);
    // Queued for this process in one step: of two resumes at once, one gets the run and
    // the other an error saying who has it.
    store_owner_t me = store_owner_self();
    int rc = 1;
    if (store_run_queue(st, id, &me, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
    } else if (detach) {
        rc = spawn_detached(st, id) ? 1 : 0;
        if (!rc) printf("%lld\n", (long long)id);
    } else {
        executed = 1;
        rc = execute_foreground(wsdir, st, id, json, comm);
    }
    if (!executed) share_run_id(comm, -1);
    store_close(st);
    free(wsdir);
    return rc;
}

int cmd_cancel(int argc, char **argv) {
    const char *ws = NULL;
    int64_t id = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench cancel ID [--workspace DIR]\n\nAsks the run's worker to stop after its "
                   "current step (it checkpoints and becomes cancelled); a queued run is cancelled at once.\n");
            return 0;
        } else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (cli_parse_id(argv[i], &id)) return 2;
    }
    if (!id) {
        fprintf(stderr, "lorabench cancel: give the run id\n");
        return 2;
    }
    store_t *st;
    if (cli_open_store(ws, NULL, &st)) return 1;
    lb_err_t err = {0};
    int rc = 1;
    store_cancel_t what;
    store_owner_t worker = {0, 0};
    // The state is read and changed in one transaction; a worker is signalled only if it is
    // still the process that claimed the run (not one that got its pid later).
    if (store_run_cancel(st, id, &what, &worker, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
    } else if (what == STORE_CANCEL_QUEUED) {
        printf("run %lld cancelled\n", (long long)id);
        rc = 0;
    } else if (what == STORE_CANCEL_SIGNAL && store_owner_signal(&worker, SIGTERM) == 0) {
        printf("run %lld: asked worker %lld to stop after its current step\n", (long long)id, (long long)worker.pid);
        rc = 0;
    } else {
        // The worker is gone (or its pid is another process's now): the run is interrupted.
        if (what == STORE_CANCEL_SIGNAL)
            store_mark_stale_interrupted(st, store_now(), LB_STALE_SECONDS, NULL, NULL, NULL, &err);
        fprintf(stderr, "lorabench: run %lld has no live worker (pid %lld is gone); it is interrupted now and "
                        "'lorabench resume %lld' continues it\n", (long long)id, (long long)worker.pid, (long long)id);
    }
    store_close(st);
    return rc;
}

// The sweep's results, one row per run (what `export --what sweep --format md` writes as
// Markdown).
static void print_sweep_table(store_t *st, int64_t sweep_id) {
    char filter[64];
    snprintf(filter, sizeof filter, "sweep=%lld", (long long)sweep_id);
    store_run_t *runs;
    size_t n;
    lb_err_t err = {0};
    if (store_runs_list(st, "id", 0, filter, &runs, &n, &err)) return;
    printf("\nsweep %lld: %zu runs (ROUGE-1 with its 95%% bootstrap interval; "
           "lorabench export --what sweep --sweep %lld --format md writes this as Markdown)\n",
           (long long)sweep_id, n, (long long)sweep_id);
    cli_results_table(stdout, st, runs, n, 0);
    store_runs_free(runs, n);
}

// Executes the queued runs ids[0..n) that this process owns, `parallel` worker processes
// at a time, printing each run's result as it ends. A run that is no longer queued by this
// process (cancelled, resumed elsewhere or deleted since) is skipped with a line saying so.
// SIGINT/SIGTERM: the workers are asked to stop, the runs not started become cancelled
// (resumable), and the exit code is cli_exit_stopped (128 + the signal). Returns the exit code.
static int drive_sweep(const char *ws, store_t *st, const spec_t *specs, const int64_t *ids, size_t n,
                       int parallel, int json) {
    lb_err_t err = {0};
    install_stop_handlers();
    store_owner_t me = store_owner_self();
    size_t next = 0, running = 0;
    int failed = 0;
    pid_t *pids = xcalloc(n, sizeof(pid_t));
    while ((next < n || running > 0) && !(stop_requested && running == 0)) {
        while (!stop_requested && next < n && running < (size_t)(parallel > 0 ? parallel : 1)) {
            if (!store_run_owned(st, ids[next], &me)) {
                store_run_t r;
                int gone = store_run_get(st, ids[next], &r, &err) != 0;
                fprintf(stderr, "run %lld (%s) skipped: %s\n", (long long)ids[next], specs[next].name,
                        gone ? "it was deleted" : "it is no longer queued by this sweep (cancelled or resumed elsewhere)");
                if (!gone) store_run_clear(&r);
                next++;
                continue;
            }
            int64_t pid;
            if (runner_spawn_worker(cli_self_exe(), ws, ids[next], &pid, &err)) {
                fprintf(stderr, "lorabench: %s\n", err.msg);
                lb_err_t e2;
                store_run_release(st, ids[next], &me, STORE_STATUS_FAILED, err.msg, &e2);
                failed++;
                next++;
                continue;
            }
            pids[next] = (pid_t)pid;
            fprintf(stderr, "run %lld (%s) started\n", (long long)ids[next], specs[next].name);
            next++;
            running++;
        }
        if (running == 0) continue;
        int status;
        pid_t done = waitpid(-1, &status, 0);
        if (done < 0) {
            if (errno == EINTR) {
                for (size_t i = 0; i < n; i++)
                    if (pids[i] > 0) kill(pids[i], SIGTERM);
                continue;
            }
            break;
        }
        for (size_t i = 0; i < n; i++)
            if (pids[i] == done) {
                pids[i] = 0;
                running--;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
                if (store_run_owned(st, ids[i], &me)) {  // the worker ended before it claimed the run
                    char msg[300];
                    snprintf(msg, sizeof msg, "the worker (pid %lld) exited before starting the run; see runs/%lld/worker.log",
                             (long long)done, (long long)ids[i]);
                    lb_err_t e2;
                    store_run_release(st, ids[i], &me, STORE_STATUS_FAILED, msg, &e2);
                }
                print_run_result(st, ids[i], json);
            }
    }
    free(pids);
    if (stop_requested) {
        int k = 0;
        store_runs_release(st, &me, STORE_STATUS_CANCELLED,
                           "cancelled with its sweep before it started; 'lorabench resume %lld' runs it", &k, &err);
        if (k) fprintf(stderr, "sweep stopped: %d runs not started are cancelled (resume runs them)\n", k);
        return cli_exit_stopped((int)stop_signal);
    }
    return failed ? 1 : 0;
}

// Runs the sweep's specs: records every run as queued, then executes them as worker
// processes, `parallel` at a time (detach: start them all in the background instead).
static int run_sweep_specs(const char *ws, store_t **stp, spec_t *specs, size_t n, const char *name,
                           const char *base_json, int parallel, int detach, int json) {
    store_t *st = *stp;
    lb_err_t err = {0};
    // Each finished run's line shows up at once, also when stdout is a file or a pipe
    // (sweep > log), not at exit.
    setvbuf(stdout, NULL, _IOLBF, 0);
    int64_t sweep_id;
    if (store_sweep_create(st, name ? name : "sweep", base_json, &sweep_id, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return 1;
    }
    int64_t *ids = xcalloc(n, sizeof(int64_t));
    for (size_t i = 0; i < n; i++) {
        if (runner_create_run(st, &specs[i], sweep_id, &ids[i], &err)) {
            fprintf(stderr, "lorabench: sweep point %zu (%s): %s\n", i + 1, specs[i].name, err.msg);
            // the points queued so far are not left waiting on this process
            store_owner_t me = store_owner_self();
            lb_err_t e2;
            store_runs_release(st, &me, STORE_STATUS_FAILED,
                               "its sweep stopped before starting it (another point was refused); "
                               "'lorabench resume %lld' runs it",
                               NULL, &e2);
            free(ids);
            return 1;
        }
    }
    // A sweep's zero-shot run is the reference its other runs are read against: pinned as
    // the baseline (compare's Δ, the workbench's reference line).
    int64_t zero_shot = 0;
    int n_zero_shot = 0;
    for (size_t i = 0; i < n; i++)
        if (specs[i].method == SPEC_METHOD_NONE) zero_shot = ids[i], n_zero_shot++;
    if (n_zero_shot == 1 && n > 1) store_run_set_pinned(st, zero_shot, 1, &err);
    fprintf(stderr, "sweep %lld: %zu runs queued\n", (long long)sweep_id, n);
    if (!detach) {
        int rc = drive_sweep(ws, st, specs, ids, n, parallel, json);
        free(ids);
        if (!json) print_sweep_table(st, sweep_id);
        return rc;
    }
    // One background process works through the queue so that detach returns at once. It
    // takes the queued runs over (they are owned by their driver) before this one returns,
    // so that no moment leaves them with an owner that is gone.
    for (size_t i = 0; i < n; i++) printf("%lld\n", (long long)ids[i]);
    fflush(NULL);
    store_owner_t me = store_owner_self();
    // No SQLite connection may cross a fork (the child's would share the parent's lock
    // bookkeeping): this one is closed first, and the child opens its own.
    store_close(st);
    *stp = st = NULL;
    int pfd[2];
    pid_t p = pipe(pfd) == 0 ? fork() : -1;
    if (p == 0) {
        close(pfd[0]);
        setsid();
        char log[4200];
        snprintf(log, sizeof log, "%s/runs/sweep-%lld.log", ws, (long long)sweep_id);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        // A connection of its own: SQLite connections must not cross a fork.
        char *db = store_workspace_db_path(ws);
        store_t *st2 = NULL;
        store_owner_t child = store_owner_self();
        int ok = store_open(db, &st2, &err) == 0 && store_runs_transfer(st2, &me, &child, NULL, &err) == 0;
        free(db);
        char c = ok ? 'y' : 'n';
        if (write(pfd[1], &c, 1) != 1) ok = 0;
        close(pfd[1]);
        if (!ok) {
            fprintf(stderr, "lorabench: %s\n", err.msg);
            _exit(1);
        }
        _exit(drive_sweep(ws, st2, specs, ids, n, 1, 0));
    }
    char c = 'n';
    if (p > 0) {
        close(pfd[1]);
        if (read(pfd[0], &c, 1) != 1) c = 'n';
        close(pfd[0]);
    }
    free(ids);
    if (c != 'y') {
        int k = 0;
        char *db = store_workspace_db_path(ws);
        if (store_open(db, stp, &err) == 0) store_runs_release(*stp, &me, STORE_STATUS_FAILED,
                           "the sweep's background process could not take its runs over; 'lorabench resume %lld' runs it",
                           &k, &err);
        free(db);
        fprintf(stderr, "lorabench: could not start the sweep's background process; its %d queued runs are failed "
                        "(resume runs them), see %s/runs/sweep-%lld.log\n", k, ws, (long long)sweep_id);
        return 1;
    }
    return 0;
}

int cmd_sweep(int argc, char **argv) {
    const char *ws = NULL, *path = NULL;
    int parallel = 1, detach = 0, json = 0, delete_spec = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--slurm")) return cmd_sweep_slurm(argc, argv);  // cmd_sweep_slurm.c
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench sweep SPEC.json [--parallel N] [--detach] [--json] [--delete-spec] [--workspace DIR]\n\n"
                   "Expands the spec's \"grid\" (e.g. {\"lora.r\": [4, 8, 16]}) into queued runs and executes\n"
                   "them one after another, or N at a time with --parallel. A grid with one zero-shot point\n"
                   "(method none) pins that run as the baseline. Each run's line is printed as it finishes,\n"
                   "then the sweep's results table (export --what sweep --format md writes it as Markdown).\n"
                   "--delete-spec removes SPEC.json once it is read, as train's does. Ctrl-C stops the\n"
                   "running runs after their step and cancels those not started; the exit status is then\n"
                   "130 (143 for SIGTERM), 1 when a run failed, else 0.\n"
                   "--slurm submits the sweep to a Slurm cluster instead (sweep --slurm --help).\n");
            return 0;
        } else if (!strcmp(argv[i], "--parallel") && i + 1 < argc) parallel = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--detach")) detach = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--delete-spec")) delete_spec = 1;
        else if (!strcmp(argv[i], "--workspace") && i + 1 < argc) ws = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "lorabench sweep: unknown option %s; see --help\n", argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (!path || parallel < 1) {
        fprintf(stderr, "lorabench sweep: give a spec file with a \"grid\" (and --parallel N >= 1)\n");
        return 2;
    }
    if (lb_mpi_launched()) {  // every rank would record and run the whole sweep
        fprintf(stderr, "lorabench sweep: not under mpirun; start each of the grid's runs with mpirun -n N lorabench train\n");
        return 2;
    }
    spec_t spec, *specs;
    size_t n;
    if (cli_spec_load_grid(path, delete_spec, &spec, &specs, &n)) return 1;
    char *wsdir;
    store_t *st;
    int rc = 1;
    if (!cli_create_store(ws, &wsdir, &st)) {
        char *base = spec_to_json(&spec, 0);
        rc = run_sweep_specs(wsdir, &st, specs, n, spec.name, base, parallel, detach, json);
        free(base);
        store_close(st);
        free(wsdir);
    }
    spec_list_free(specs, n);
    spec_free(&spec);
    return rc;
}
