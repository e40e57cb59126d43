// The runner: turns a spec into engine calls and store rows. One run = one worker process
// (`lorabench worker --workspace DIR --run ID`) executing runner_execute; the TUI and
// `train --detach` start workers with posix_spawn.
//
// A run's folder (runs/<id>/) holds: adapter/ (PEFT files) or model/ (a full fine-tune),
// checkpoint.safetensors (trainable weights, optimizer moments, position; rewritten
// atomically; removed once the run is done, as only resumable work needs it) and
// worker.log. Metrics go to the store in batches; the heartbeat proves the worker alive.
#ifndef LB_RUNNER_H
#define LB_RUNNER_H

#include <signal.h>
#include <stdint.h>

#include "spec.h"
#include "store.h"
#include "train.h"
#include "util.h"

// What the foreground `train` shows on its progress line.
typedef struct {
    int64_t run_id;
    long step, total_steps;
    double loss, lr, grad_norm, tokens_per_s, eta_s, elapsed_s;
    const char *phase;        // "load", "train", "eval", "save", "note"
    const char *note;         // phase "note": one line of information about the run
    int eval_done, eval_total;
} runner_progress_t;

typedef struct {
    const char *workspace;
    // Set (by a SIGTERM/SIGINT handler of the caller) to ask for a clean stop: the step in
    // progress finishes, a checkpoint is written and the run becomes `cancelled`.
    volatile sig_atomic_t *stop;
    void (*progress)(void *ctx, const runner_progress_t *p);
    void *ctx;
    // The process that queued the run (store_owner_t; pid 0: none known, e.g. the run is
    // queued by no live process). runner_execute claims the run only from that owner.
    store_owner_t queued_by;
    // Test hook: after this many optimizer steps of this process, stop as if killed
    // (no status change, no checkpoint). 0 = off.
    long die_after_steps;
    // Test hook: sleep this long after every optimizer step, so that a test can kill the
    // worker in the middle of training. 0 = off.
    int step_delay_ms;
    // Test hook: sleep this long after every evaluation batch, so that a test can cancel a
    // run during its evaluation. 0 = off.
    int eval_delay_ms;
    // Data parallel (`mpirun -n N lorabench train`, experiments/run/lb_mpi.c): every rank
    // executes the run on its share of each batch; rank 0 alone writes the store,
    // checkpoints and results and evaluates. NULL: one process.
    const train_comm_t *comm;
} runner_opts_t;

// Validates spec and records a new queued run; *id gets its id. Paths in the spec must
// already be resolved (spec_load_file does it). A name that a stored run already has is
// numbered: "lora-r8-qv (2)", "(3)", ...
int runner_create_run(store_t *st, const spec_t *spec, int64_t sweep_id, int64_t *id,
                      lb_err_t *err);

// Executes run `id` in this process: from its last checkpoint if it has one (resume),
// else from the start. It first claims the queued run (store_run_claim, from o->queued_by):
// a run that is not queued, or queued by another process, is an error and left unchanged.
// A folder or checkpoint that is not the run's (store_run_dir_check, the checkpoint's
// run_uuid) is refused, never adopted. Sets the run's status (running, then done / failed / cancelled) and
// its error text; returns 0 when the run finished or was cancelled cleanly. A rank other than 0 (o->comm)
// trains in step with rank 0 and writes nothing.
int runner_execute(const runner_opts_t *o, int64_t id, lb_err_t *err);

// Starts `exe worker --workspace W --run ID --queued-by PID:START` as a detached process
// (posix_spawn, new session, output to runs/<id>/worker.log); *pid gets its process id.
// The worker claims the run only while this process owns it.
int runner_spawn_worker(const char *exe, const char *workspace, int64_t id, int64_t *pid,
                        lb_err_t *err);

// runner_spawn_worker for a run this process queued (st's workspace), then waits until the
// worker has claimed it, so that the run never waits on an owner that is gone. A worker that
// exits before claiming leaves the run failed with the reason (its log's last line), and
// an error here.
int runner_start_worker(const char *exe, store_t *st, int64_t id, int64_t *pid, lb_err_t *err);

#endif
