// The run store: one SQLite database per workspace (WAL mode, busy_timeout, foreign keys)
// holding runs, their metrics, evaluations with per-example samples, artifacts and sweeps.
// It knows nothing of the engine: values go in and out as plain numbers and strings.
//
// Concurrency: any number of processes may open the same database. Every write runs in
// its own `BEGIN IMMEDIATE` transaction that waits (busy_timeout) for the write lock, so
// SQLITE_BUSY never reaches a caller in normal use; readers never block writers (WAL). A
// lock held longer than busy_timeout (another process in a long transaction) gives an error
// saying so. A store_t is one connection: use it from one thread at a time.
//
// Conventions: functions return 0 on success and -1 with one sentence in err on failure.
// In rows read back, a missing REAL is NAN and a missing INTEGER is -1 (a missing string is
// NULL). Times are Unix seconds. Arrays returned through pointer arguments are owned by the
// caller and freed with the matching *_free function.
#ifndef LB_STORE_H
#define LB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

// The schema version this build writes (PRAGMA user_version). store/schema.sql is this
// version; older databases are migrated at open.
#define STORE_SCHEMA_VERSION 4

// Milliseconds a call waits for another process's lock before it fails (busy_timeout).
// The environment variable LORABENCH_BUSY_TIMEOUT_MS, when set to a positive number,
// replaces it at store_open (the fault tests use a short wait).
#define STORE_BUSY_TIMEOUT_MS 10000

typedef struct store store_t;

// ---- workspace -------------------------------------------------------------------------

// The workspace folder: dir if not NULL/empty (from --workspace), else $LORABENCH_HOME,
// else ~/.local/share/lorabench. Creates it and its runs/ folder when missing. *out is a
// malloc'd path without a trailing slash.
int store_workspace_resolve(const char *dir, char **out, lb_err_t *err);

// The same folder as store_workspace_resolve, for commands that only read or change what
// is there: fails (naming the folder and how to create one) when it has no lorabench.db,
// and creates nothing, so a mistyped --workspace is not silently a new, empty one.
int store_workspace_find(const char *dir, char **out, lb_err_t *err);

// "<workspace>/lorabench.db", malloc'd.
char *store_workspace_db_path(const char *workspace);

// "<workspace>/runs/<id>", malloc'd in *out; with create != 0 the folder is made too.
int store_run_dir(const char *workspace, int64_t run_id, int create, char **out,
                  lb_err_t *err);

// Writes runs/<id>/RUN, the folder's identity stamp ({"run": id, "uuid": ..., "spec_hash":
// ...}), creating the folder, which must not exist yet: an existing one belongs to another
// run (a restored database) and is an error naming it.
int store_run_dir_stamp(const char *workspace, int64_t run_id, const char *uuid,
                        const char *spec_hash, lb_err_t *err);

// Checks that runs/<id>/ is this run's folder before a worker uses it: its RUN stamp names
// uuid. A missing folder is made and stamped; a folder with files but no stamp, or with
// another run's stamp, is refused with a message naming it and what to do. uuid NULL (a
// run from before schema 4): nothing is checked.
int store_run_dir_check(const char *workspace, int64_t run_id, const char *uuid,
                        const char *spec_hash, lb_err_t *err);

// The largest number that names a folder in <workspace>/runs (0 when none).
int64_t store_run_dir_max_id(const char *workspace);

// Removes "<workspace>/runs/<id>" and everything under it (no error when it is absent).
// Symbolic links inside are removed, never followed.
int store_run_dir_remove(const char *workspace, int64_t run_id, lb_err_t *err);

// ---- open / close ----------------------------------------------------------------------

// Opens (creating if needed) the database at path: WAL, busy_timeout, foreign keys, and
// the schema or its migrations applied in one transaction. Safe when several processes
// open a fresh file at once. A database from a newer lorabench is refused.
int store_open(const char *path, store_t **out, lb_err_t *err);

// Opens the database at path for reading only (no WAL switch, no migration, no write):
// for commands that only read (runs, show, export, compare) in a workspace this user may
// not write. A database of another schema version is an error saying who can migrate it.
int store_open_readonly(const char *path, store_t **out, lb_err_t *err);

// Closes the connection (NULL is fine).
void store_close(store_t *st);

// The schema version stored in the file (PRAGMA user_version).
int store_schema_version(store_t *st, int *version, lb_err_t *err);

// PRAGMA data_version: changes whenever ANOTHER connection commits. The TUI polls it
// (every 250 ms) and re-reads only when it moved.
int store_data_version(store_t *st, int64_t *version, lb_err_t *err);

// ---- runs ------------------------------------------------------------------------------

// Run statuses as stored in runs.status (schema.sql's CHECK allows these six).
#define STORE_STATUS_QUEUED "queued"
#define STORE_STATUS_RUNNING "running"
#define STORE_STATUS_DONE "done"
#define STORE_STATUS_FAILED "failed"
#define STORE_STATUS_CANCELLED "cancelled"
#define STORE_STATUS_INTERRUPTED "interrupted"

// The same statuses as values, in that order. A run's status is tested as
// store_status_parse(r->status) == STORE_RUN_DONE, never by spelling the name.
typedef enum {
    STORE_RUN_UNKNOWN = -1,  // not a status (store_status_parse of anything else)
    STORE_RUN_QUEUED,
    STORE_RUN_RUNNING,
    STORE_RUN_DONE,
    STORE_RUN_FAILED,
    STORE_RUN_CANCELLED,
    STORE_RUN_INTERRUPTED,
    STORE_N_STATUSES
} store_status_t;

// The stored name of s (one of STORE_STATUS_*); NULL for STORE_RUN_UNKNOWN or out of range.
const char *store_status_name(store_status_t s);

// The status named name; STORE_RUN_UNKNOWN for NULL or a name that is not one.
store_status_t store_status_parse(const char *name);

// What a new run is created with. Strings may be NULL except name, spec and method;
// r < 0 / alpha NAN / total_steps < 0 / sweep_id <= 0 mean "none".
typedef struct {
    const char *name;
    const char *spec;        // canonical JSON of the spec
    const char *method;      // none | lora | full | partial
    const char *base_model;
    const char *dataset;
    int64_t r;
    double alpha;
    const char *targets;     // e.g. "q,v"
    int64_t total_steps;
    int64_t sweep_id;
    const char *tags;
    const char *spec_hash;   // sha256 of spec (hex), stamped on the folder and checkpoints
    // The process that will start the run (store_owner_self() of a sweep driver, train,
    // the workbench's helper); NULL or pid 0: none, the run waits until someone resumes it.
    const struct store_owner *owner;
} store_run_new_t;

// A run as the list and detail views show it (runs joined with its latest evaluation).
typedef struct {
    int64_t id;
    char *name, *spec, *method, *status;
    char *base_model, *dataset;
    double created_at, started_at, finished_at, heartbeat;
    int64_t pid;
    int64_t trainable_params, total_params;
    int64_t r;
    double alpha;
    char *targets;
    int64_t total_steps, step;
    double final_loss, tokens_per_s, peak_rss_mb;
    char *error, *tags, *notes;
    int64_t sweep_id;
    int pinned;
    char *precision;         // "fp32" or "bf16" once the run started; NULL before
    int64_t pid_start;       // the owner's start time (store_owner_t.start); -1 unknown
    char *uuid, *spec_hash;  // the run's identity; NULL for runs made before schema 4
    // from the latest evaluation (NAN when none) and derived:
    double rouge1, rouge2, rougeL, rougeLsum;
    int64_t eval_step;
    double duration;         // seconds from start to finish (or last heartbeat)
    double trainable_pct;    // 100 * trainable / total
} store_run_t;

// Inserts a run with status queued and returns its id in *id. The run gets a new uuid and
// its own folder runs/<id>/ stamped with it (store_run_dir_stamp): an id whose folder
// already exists (a database restored from a backup) is skipped, never reused.
int store_run_create(store_t *st, const store_run_new_t *run, int64_t *id, lb_err_t *err);

// Sets the status (one of STORE_STATUS_*). running: sets started_at the first time, and on
// a resume moves it on by the time the run lay stopped (now - finished_at), so that a run's
// duration counts active time only; clears finished_at and error. queued keeps finished_at
// (until the run starts again); done/failed/cancelled/interrupted: sets finished_at.
// error_text (may be NULL) is stored in runs.error for failed/cancelled/interrupted.
// A run id that does not exist is an error.
int store_run_set_status(store_t *st, int64_t id, const char *status, const char *error_text,
                         lb_err_t *err);

// Records that the worker (process pid) is alive now.
int store_run_heartbeat(store_t *st, int64_t id, int64_t pid, lb_err_t *err);

// Summary numbers of a run; a field left at its "unset" value keeps the stored one.
typedef struct {
    int64_t trainable_params, total_params;   // unset: -1
    int64_t total_steps, step;                // unset: -1
    double final_loss, tokens_per_s, peak_rss_mb;  // unset: NAN
    const char *precision;                    // "fp32" or "bf16"; unset: NULL
} store_run_summary_t;

// A summary with every field unset.
store_run_summary_t store_run_summary_unset(void);

// Writes the set fields of s into run id (unset ones keep their stored values).
int store_run_update_summary(store_t *st, int64_t id, const store_run_summary_t *s,
                             lb_err_t *err);

// Tags (comma-separated text), notes (free text) and the pinned baseline. Pinning a run
// unpins every other one: there is one baseline to compare against.
int store_run_set_tags(store_t *st, int64_t id, const char *tags, lb_err_t *err);
int store_run_set_notes(store_t *st, int64_t id, const char *notes, lb_err_t *err);
int store_run_set_pinned(store_t *st, int64_t id, int pinned, lb_err_t *err);

// Deletes a run with its metrics, evals, samples and artifact rows (ON DELETE CASCADE).
// Its folder is left to store_run_dir_remove. Deleting an unknown id is an error.
int store_run_delete(store_t *st, int64_t id, lb_err_t *err);

// Reads one run; an unknown id is an error naming it.
int store_run_get(store_t *st, int64_t id, store_run_t *run, lb_err_t *err);

// Frees the strings of one run (not the struct itself).
void store_run_clear(store_run_t *run);

// Frees an array of runs from store_runs_list.
void store_runs_free(store_run_t *runs, size_t n);

// Runs that are `running` with a heartbeat (or, without one, a start) older than
// now - stale_seconds and whose worker process is gone (pid_alive returns 0, or the pid is
// unknown) become `interrupted`, with an error text saying so. A run whose owner was
// recorded with its start time (store_run_claim, store_run_queue) is judged at once by
// store_owner_alive instead, queued runs too (their owner: the process that queued them).
// A worker found dead after the cgroup's OOM-kill count rose since its claim
// (lb_oom_kills) makes its run `failed` with "out of memory" and half its batch size. pid_alive may be NULL for
// store_pid_alive. *n_marked (may be NULL) gets how many changed.
typedef int (*store_pid_alive_fn)(int64_t pid, void *ctx);

// See above; now is Unix seconds (store_now()), stale_seconds e.g. 30.
int store_mark_stale_interrupted(store_t *st, double now, double stale_seconds,
                                 store_pid_alive_fn pid_alive, void *ctx, int *n_marked,
                                 lb_err_t *err);

// Whether a process with this id exists on this machine (kill(pid, 0)). Runs claimed with
// an owner's start time are judged by store_owner_alive instead, which a reused pid does
// not fool.
int store_pid_alive(int64_t pid, void *ctx);

// ---- run ownership (store_claim.c) -----------------------------------------------------
// Every queued or running run has one owner: the process that queued it (until a worker
// claims it) or its worker. Each change of owner or status is one conditional UPDATE in a
// BEGIN IMMEDIATE transaction, checked for the one row it must change, so two processes
// racing for a run cannot both win; every reader that sees an owner gone (store_owner_alive)
// turns the run `interrupted` (store_mark_stale_interrupted), which `resume` continues.

// A process: its id and its start time in clock ticks after boot (/proc/<pid>/stat field
// 22). start 0: unknown (no /proc), then only the pid is compared.
typedef struct store_owner {
    int64_t pid;
    int64_t start;
} store_owner_t;

// This process.
store_owner_t store_owner_self(void);

// The start time of process pid (0 when it does not exist or /proc is unreadable).
int64_t store_proc_start(int64_t pid);

// 1 when the process o names is alive: its pid exists, is not a zombie, and (when o->start
// is known) started at o->start. A pid reused by another process is 0.
int store_owner_alive(const store_owner_t *o);

// Sends sig to the process o names only if it is still that process (pidfd where the kernel
// has it, so the check and the signal cannot be split by a pid being reused). 0 sent; -1
// the process is gone or another one has its pid.
int store_owner_signal(const store_owner_t *o, int sig);

// Queues run id for a new execution owned by owner: from interrupted, cancelled or failed,
// or from queued when its owner is gone or unrecorded. Anything else (running, done, queued
// by a live process, or a lost race against another resume) is an error naming the run's
// state and what to do.
int store_run_queue(store_t *st, int64_t id, const store_owner_t *owner, lb_err_t *err);

// Claims run id for execution by worker: queued -> running, in one step. With queued_by (not
// NULL, pid > 0) only a run that queued_by still owns is claimed (a sweep's run that was
// cancelled, resumed elsewhere or deleted is not). An error names the run's state; the run
// is left as it is.
int store_run_claim(store_t *st, int64_t id, const store_owner_t *queued_by,
                     const store_owner_t *worker, lb_err_t *err);

// 1 when run id is queued and owned by owner (0 otherwise, also for an unknown id).
int store_run_owned(store_t *st, int64_t id, const store_owner_t *owner);

// Moves every queued run that owner owns to owner to: a sweep driver that forked into the
// background hands its queue to the child. *n (may be NULL) gets how many moved.
int store_runs_transfer(store_t *st, const store_owner_t *from, const store_owner_t *to, int *n,
                        lb_err_t *err);

// Releases owner's queued runs: they become status (cancelled or interrupted) with
// error_text (where "%lld" is replaced by each run's id; NULL: none). *n (may be NULL) gets
// how many. With status queued the runs keep waiting without an owner: for runs that a
// process queues for another to start later (a batch scheduler), which any worker or
// resume may then claim.
int store_runs_release(store_t *st, const store_owner_t *owner, const char *status,
                       const char *error_text, int *n, lb_err_t *err);

// The same for one run: when it is queued and owner owns it, it becomes status with
// error_text; otherwise nothing changes (not an error).
int store_run_release(store_t *st, int64_t id, const store_owner_t *owner, const char *status,
                      const char *error_text, lb_err_t *err);

// What store_run_cancel did.
typedef enum {
    STORE_CANCEL_QUEUED,    // it was queued: now cancelled
    STORE_CANCEL_SIGNAL,    // it runs: *worker is the live worker to signal (SIGTERM)
    STORE_CANCEL_DEAD,      // it was running, but its worker is gone: now interrupted
} store_cancel_t;

// Cancels run id, deciding on the state read in the same transaction as the change. A run
// in any other state (done, failed, cancelled, interrupted) is an error saying so.
int store_run_cancel(store_t *st, int64_t id, store_cancel_t *what, store_owner_t *worker,
                     lb_err_t *err);

// Deletes runs ids[0..n) with their rows, all or none, checking in the same transaction
// that none of them is running or queued with a live owner (an error names the first that
// is and says to cancel it). Their folders are left to store_run_dir_remove.
int store_runs_delete_idle(store_t *st, const int64_t *ids, size_t n, lb_err_t *err);

// The workspace folder of an open store (the folder of its database), malloc'd.
char *store_workspace_of(const store_t *st);

// Current wall-clock time in Unix seconds.
double store_now(void);

// ---- listing and filtering -------------------------------------------------------------

// The keys that `runs --sort` and `runs --filter` accept, e.g. "id, name, status, ...".
const char *store_run_keys(void);

// A parsed filter expression: a parameterised WHERE clause over runs_view.
typedef struct store_filter store_filter_t;

// Parses EXPR, a conjunction of `key OP value` terms separated by spaces, e.g.
// `method=lora r>=8 rouge1>0.3 status=done name~qv`. OP is = != < <= > >= or ~ (substring,
// case-insensitive; text keys only). Values with spaces are quoted ("..." or '...').
// Numeric keys take numbers; status and method take their known values. NULL or an empty
// expression matches every run. Errors name the term and list the valid keys/values.
int store_filter_parse(const char *expr, store_filter_t **out, lb_err_t *err);

// Frees a parsed filter (NULL is fine).
void store_filter_free(store_filter_t *f);

// The compiled WHERE clause ("1" when empty), with ?N placeholders, and its parameter
// count; for tests and debugging.
const char *store_filter_sql(const store_filter_t *f);
int store_filter_nparams(const store_filter_t *f);

// Lists runs matching filter_expr (NULL: all), sorted by sort_key (a key of
// store_run_keys; NULL: id) ascending or descending, ties by id. Missing values sort last.
int store_runs_list(store_t *st, const char *sort_key, int descending, const char *filter_expr,
                    store_run_t **runs, size_t *n, lb_err_t *err);

// ---- metrics ---------------------------------------------------------------------------

// One optimizer step. Unset: NAN for reals, -1 for tokens.
typedef struct {
    int64_t step;
    double epoch, loss, lr, grad_norm, tokens_per_s, step_ms, rss_mb;
    int64_t tokens;             // the run's running total of tokens (inputs and targets)
    double wall_s;
} store_metric_t;

// Inserts n rows for one run in ONE `BEGIN IMMEDIATE` transaction, and in the same
// transaction raises runs.step to the largest step written and refreshes the heartbeat.
// A step already stored is replaced (a resumed run recomputes the steps after its
// checkpoint).
int store_metrics_insert_batch(store_t *st, int64_t run_id, const store_metric_t *rows,
                               size_t n, lb_err_t *err);

// Rows of a run with step > after_step in step order (after_step = -1: all of them).
int store_metrics_since(store_t *st, int64_t run_id, int64_t after_step,
                        store_metric_t **rows, size_t *n, lb_err_t *err);

// Number of metric rows of a run.
int store_metrics_count(store_t *st, int64_t run_id, int64_t *count, lb_err_t *err);

// ---- evaluations -----------------------------------------------------------------------

typedef struct {
    int64_t idx;
    const char *source, *reference, *prediction;   // input to insert
    double rouge1, rouge2, rougeL;
} store_sample_t;

// A sample read back (strings malloc'd).
typedef struct {
    int64_t eval_id, idx;
    char *source, *reference, *prediction;
    double rouge1, rouge2, rougeL;
} store_sample_row_t;

typedef struct {
    int64_t id;              // set when read back
    int64_t run_id, step;
    char split[32];
    int64_t n;
    double created_at, seconds;
    double rouge1, rouge1_low, rouge1_high;
    double rouge2, rouge2_low, rouge2_high;
    double rougeL, rougeL_low, rougeL_high;
    double rougeLsum, rougeLsum_low, rougeLsum_high;
    int64_t beams, max_new_tokens;
    double length_penalty;
} store_eval_t;

// Inserts an evaluation and its n samples in one transaction; *eval_id (may be NULL) gets
// the new id. ev->id and ev->created_at are ignored (created_at = now).
int store_eval_insert(store_t *st, const store_eval_t *ev, const store_sample_t *samples,
                      size_t n, int64_t *eval_id, lb_err_t *err);

// Evaluations of a run in (step, id) order.
int store_evals_list(store_t *st, int64_t run_id, store_eval_t **evals, size_t *n,
                     lb_err_t *err);

// Samples of one evaluation in idx order, from offset, at most limit (limit < 0: all).
int store_samples_list(store_t *st, int64_t eval_id, int64_t offset, int64_t limit,
                       store_sample_row_t **rows, size_t *n, lb_err_t *err);

// Frees samples from store_samples_list.
void store_samples_free(store_sample_row_t *rows, size_t n);

// ---- artifacts and sweeps --------------------------------------------------------------

typedef struct {
    int64_t id, run_id;
    char *kind, *path, *sha256;
    int64_t bytes, step;
    double created_at;
} store_artifact_t;

// Records a file of a run (kind: adapter, model, checkpoint, log, ...). The same path
// recorded again replaces the row (a checkpoint rewritten in place). step < 0: none;
// sha256 is the hex digest or NULL.
int store_artifact_add(store_t *st, int64_t run_id, const char *kind, const char *path,
                       int64_t bytes, const char *sha256, int64_t step, lb_err_t *err);

// Artifacts of a run, newest last; kind NULL: every kind.
int store_artifacts_list(store_t *st, int64_t run_id, const char *kind,
                         store_artifact_t **rows, size_t *n, lb_err_t *err);

// Frees artifacts from store_artifacts_list.
void store_artifacts_free(store_artifact_t *rows, size_t n);

// Creates a sweep (a name and its base spec with the grid); *id gets its id.
int store_sweep_create(store_t *st, const char *name, const char *spec, int64_t *id,
                       lb_err_t *err);

// ---- formatting rows for people and files (store_format.c) ------------------------------
// One home for how a run's row is written, so the command line and the workbench write the
// same columns and show a missing value the same way: empty in CSV, null in JSON, "–" on
// screen (never -1 or nan).

// Fits s into width terminal columns (UTF-8; CJK and emoji take two columns, combining
// marks none: store_cp_cols). A longer s keeps its start and its end joined by "…": the end
// is where the runs of a sweep differ ("rank-sweep-r16" / "rank-sweep-r32"); a character
// is never cut. Writes a NUL-terminated string into out (cap bytes) and returns the
// columns it takes.
int store_text_fit(const char *s, int width, char *out, size_t cap);

// Terminal columns of UTF-8 text: the sum of store_cp_cols (an invalid byte takes one).
int store_text_cols(const char *s);

// Terminal columns of one code point: 2 for East Asian wide / full-width characters and
// emoji, 0 for combining and zero-width ones, else 1. wcwidth under a UTF-8 LC_CTYPE (what
// ncurses uses; programs set it with setlocale(LC_CTYPE, "")), else a built-in table of
// the same ranges. The one home of text width: the command line's tables and the
// workbench's grid both count with it.
int store_cp_cols(uint32_t cp);

// s as one CSV field (quoted when it holds a comma, quote or line break; NULL → empty), in
// a new string the caller frees: the one CSV quoting of every export.
char *store_csv_quote(const char *s);

// The header of store_runs_csv, ending in a newline.
const char *store_runs_csv_header(void);

// The runs as CSV rows (no header): the columns of store_runs_csv_header; a value a run
// does not have (no rank for a full fine-tune, no loss for zero-shot, no eval yet) is an
// empty field. now (store_now()) is where a running run's duration ends. Returns malloc'd
// text.
char *store_runs_csv(const store_run_t *runs, size_t n, double now);

// A run's duration in seconds: to now while it runs, else start to finish; NAN before it
// started.
double store_run_duration(const store_run_t *r, double now);

// The derived name of the n-th run (n >= 2) that would share name: "NAME (n)".
void store_name_numbered(const char *name, int n, char *out, size_t cap);

// 1 when a run named name exists in the store (0 also when the lookup fails).
int store_run_name_taken(store_t *st, const char *name);

#endif
