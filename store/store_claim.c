// Run ownership: who may execute, cancel or delete a run (store.h, "run ownership").
//
// A run's owner is a process named by its pid and its start time, so that a pid reused by
// an unrelated process is never taken for a worker (never signalled, never kept `running`).
// Every change below reads the run and changes it inside one BEGIN IMMEDIATE transaction,
// holding the database's write lock between the check and the change: of two processes
// that race for one run, the second sees what the first wrote.
#include "store_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// ---- processes -------------------------------------------------------------------------

// Reads /proc/<pid>/stat: *state (field 3) and *start (field 22, clock ticks after boot).
// 0 on success, -1 when the process does not exist; -2 when there is no /proc at all.
static int proc_stat(int64_t pid, char *state, int64_t *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return access("/proc/self/stat", R_OK) == 0 ? -1 : -2;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
    // after it start at the last ')'.
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2]) return -1;
    *state = p[2];
    p += 3;
    for (int field = 4; field <= 22; field++) {
        while (*p == ' ') p++;
        if (field == 22) {
            *start = strtoll(p, NULL, 10);
            return 0;
        }
        while (*p && *p != ' ') p++;
        if (!*p) return -1;
    }
    return -1;
}

int64_t store_proc_start(int64_t pid) {
    char state;
    int64_t start = 0;
    return pid > 0 && proc_stat(pid, &state, &start) == 0 ? start : 0;
}

store_owner_t store_owner_self(void) {
    store_owner_t o = {(int64_t)getpid(), store_proc_start((int64_t)getpid())};
    return o;
}

int store_owner_alive(const store_owner_t *o) {
    if (!o || o->pid <= 0) return 0;
    char state;
    int64_t start = 0;
    int rc = proc_stat(o->pid, &state, &start);
    if (rc == -2) return store_pid_alive(o->pid, NULL);  // no /proc: the pid is all we have
    if (rc != 0) return 0;
    if (state == 'Z' || state == 'X') return 0;  // exited, not yet reaped
    return o->start <= 0 || start == o->start;
}

int store_owner_signal(const store_owner_t *o, int sig) {
    if (!o || o->pid <= 0) return -1;
#ifdef SYS_pidfd_open
    // A pidfd pins the process: checked after opening it, the identity cannot change before
    // the signal is sent.
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)o->pid, 0);
    if (fd >= 0) {
        int rc = -1;
        if (store_owner_alive(o)) rc = syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) == 0 ? 0 : -1;
        close(fd);
        return rc;
    }
    if (errno == ESRCH) return -1;
#endif
    if (!store_owner_alive(o)) return -1;
    return kill((pid_t)o->pid, sig) == 0 ? 0 : -1;
}

char *store_workspace_of(const store_t *st) {
    const char *slash = strrchr(st->path, '/');
    if (!slash) return xstrdup(".");
    if (slash == st->path) return xstrdup("/");
    size_t n = (size_t)(slash - st->path);
    char *ws = xmalloc(n + 1);
    memcpy(ws, st->path, n);
    ws[n] = 0;
    return ws;
}

// ---- reading a run's owner inside a transaction ----------------------------------------

typedef struct {
    store_status_t status;
    char status_name[16];
    store_owner_t owner;     // pid 0: none recorded
    int has_start;           // the owner was recorded with its start time (schema 4)
} run_state_t;

static int no_such_run(store_t *st, int64_t id, lb_err_t *err) {
    return lb_err_set(err, LB_EARG, "%s: there is no run %lld; 'lorabench runs' lists them", st->path,
                      (long long)id);
}

// Reads run id's status and owner; -1 with err when it does not exist.
static int read_state(store_t *st, int64_t id, run_state_t *rs, lb_err_t *err) {
    sqlite3_stmt *s;
    memset(rs, 0, sizeof *rs);
    if (stmt_prepare(st, "SELECT status, pid, pid_start FROM runs WHERE id = ?1", &s, err)) return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = stmt_step(st, s);
    if (rc == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        snprintf(rs->status_name, sizeof rs->status_name, "%s", name ? name : "?");
        rs->status = store_status_parse(name);
        int64_t pid = stmt_col_int(s, 1);
        rs->owner.pid = pid > 0 ? pid : 0;
        rs->has_start = sqlite3_column_type(s, 2) != SQLITE_NULL;
        rs->owner.start = rs->has_start ? sqlite3_column_int64(s, 2) : 0;
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE) return no_such_run(st, id, err);
    return db_fail(st, "reading a run's owner", err);
}

// Whether the run's recorded owner lives (a run recorded with a pid only: that pid exists).
static int owner_alive(const run_state_t *rs) {
    if (rs->owner.pid <= 0) return 0;
    return rs->has_start ? store_owner_alive(&rs->owner) : store_pid_alive(rs->owner.pid, NULL);
}

static int same_owner(const run_state_t *rs, const store_owner_t *o) {
    return o && rs->owner.pid == o->pid && rs->has_start && rs->owner.start == o->start;
}

// Runs a prepared write (finalizing it) inside the open transaction; -1 with err on failure.
static int step_write(store_t *st, sqlite3_stmt *s, const char *what, lb_err_t *err) {
    int rc = stmt_step(st, s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return db_fail(st, what, err);
    return 0;
}

// Sets run id's status and owner (pid 0: none) with an error text, in the open transaction.
static int set_state(store_t *st, int64_t id, const char *status, const store_owner_t *owner,
                     const char *error_text, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "UPDATE runs SET status = ?2, pid = ?3, pid_start = ?4,"
                     " started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?5) ELSE started_at END,"
                     " heartbeat = CASE WHEN ?2 = 'running' THEN ?5 ELSE heartbeat END,"
                     " finished_at = CASE WHEN ?2 IN ('done', 'failed', 'cancelled', 'interrupted')"
                     "               THEN COALESCE(CASE WHEN ?2 = 'interrupted' THEN heartbeat END, ?5) END,"
                     " error = ?6 WHERE id = ?1",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    stmt_bind_text(s, 2, status);
    if (owner && owner->pid > 0) {
        sqlite3_bind_int64(s, 3, owner->pid);
        sqlite3_bind_int64(s, 4, owner->start);
    }
    sqlite3_bind_double(s, 5, store_now());
    stmt_bind_text(s, 6, error_text);
    return step_write(st, s, "changing a run's owner", err);
}

// ---- claims ----------------------------------------------------------------------------

int store_run_queue(store_t *st, int64_t id, const store_owner_t *owner, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    run_state_t rs;
    if (read_state(st, id, &rs, err)) goto fail;
    int ok = rs.status == STORE_RUN_INTERRUPTED || rs.status == STORE_RUN_CANCELLED || rs.status == STORE_RUN_FAILED;
    if (rs.status == STORE_RUN_QUEUED || (rs.status == STORE_RUN_RUNNING && rs.has_start))
        ok = !owner_alive(&rs);
    if (!ok) {
        if (rs.status == STORE_RUN_RUNNING)
            lb_err_set(err, LB_EARG,
                       "run %lld is running (worker pid %lld); 'lorabench cancel %lld' stops it, then resume continues it",
                       (long long)id, (long long)rs.owner.pid, (long long)id);
        else if (rs.status == STORE_RUN_QUEUED)
            lb_err_set(err, LB_EARG,
                       "run %lld is queued by process %lld (a sweep or another resume), which starts it; "
                       "'lorabench cancel %lld' first to run it here instead",
                       (long long)id, (long long)rs.owner.pid, (long long)id);
        else
            lb_err_set(err, LB_EARG,
                       "run %lld is %s; only interrupted, cancelled, failed or queued runs can be resumed",
                       (long long)id, rs.status_name);
        goto fail;
    }
    if (set_state(st, id, STORE_STATUS_QUEUED, owner, NULL, err)) goto fail;
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}

int store_run_claim(store_t *st, int64_t id, const store_owner_t *queued_by,
                    const store_owner_t *worker, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    run_state_t rs;
    if (read_state(st, id, &rs, err)) goto fail;
    if (rs.status != STORE_RUN_QUEUED) {
        lb_err_set(err, LB_EARG,
                   "run %lld is %s, not queued: it was started, cancelled or resumed by another process; "
                   "this one leaves it alone",
                   (long long)id, rs.status_name);
        goto fail;
    }
    int ok = queued_by && queued_by->pid > 0 ? same_owner(&rs, queued_by)
                                             : same_owner(&rs, worker) || !owner_alive(&rs);
    if (!ok) {
        lb_err_set(err, LB_EARG,
                   "run %lld is queued by another process (pid %lld: resumed elsewhere); this one leaves it "
                   "to that one",
                   (long long)id, (long long)rs.owner.pid);
        goto fail;
    }
    if (set_state(st, id, STORE_STATUS_RUNNING, worker, NULL, err)) goto fail;
    sqlite3_stmt *s;  // the OOM-kill count now: see store_mark_stale_interrupted
    if (stmt_prepare(st, "UPDATE runs SET oom_kills = ?2 WHERE id = ?1", &s, err)) goto fail;
    sqlite3_bind_int64(s, 1, id);
    stmt_bind_int(s, 2, lb_oom_kills());
    if (step_write(st, s, "recording the worker", err)) goto fail;
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}

int store_run_owned(store_t *st, int64_t id, const store_owner_t *owner) {
    run_state_t rs;
    lb_err_t err;
    return read_state(st, id, &rs, &err) == 0 && rs.status == STORE_RUN_QUEUED && same_owner(&rs, owner);
}

int store_runs_transfer(store_t *st, const store_owner_t *from, const store_owner_t *to, int *n,
                        lb_err_t *err) {
    if (n) *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "UPDATE runs SET pid = ?3, pid_start = ?4 WHERE status = 'queued' AND pid = ?1 "
                     "AND pid_start = ?2",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, from->pid);
    sqlite3_bind_int64(s, 2, from->start);
    sqlite3_bind_int64(s, 3, to->pid);
    sqlite3_bind_int64(s, 4, to->start);
    if (db_begin(st, err)) {
        sqlite3_finalize(s);
        return -1;
    }
    if (step_write(st, s, "handing queued runs over", err)) {
        db_rollback(st);
        return -1;
    }
    int changed = sqlite3_changes(st->db);
    if (db_commit(st, err)) return -1;
    if (n) *n = changed;
    return 0;
}

int store_runs_release(store_t *st, const store_owner_t *owner, const char *status,
                       const char *error_text, int *n, lb_err_t *err) {
    if (n) *n = 0;
    if (db_begin(st, err)) return -1;
    sqlite3_stmt *s;
    if (stmt_prepare(st, "SELECT id FROM runs WHERE status = 'queued' AND pid = ?1 AND pid_start = ?2", &s, err))
        goto fail;
    sqlite3_bind_int64(s, 1, owner->pid);
    sqlite3_bind_int64(s, 2, owner->start);
    int64_t *ids = NULL;
    size_t k = 0, cap = 0;
    int rc;
    while ((rc = stmt_step(st, s)) == SQLITE_ROW) {
        if (k == cap) ids = xrealloc(ids, (cap = cap ? 2 * cap : 16) * sizeof *ids);
        ids[k++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(ids);
        db_fail(st, "listing queued runs", err);
        goto fail;
    }
    for (size_t i = 0; i < k; i++) {
        char msg[512] = "";
        if (error_text) snprintf(msg, sizeof msg, error_text, (long long)ids[i]);
        if (set_state(st, ids[i], status, NULL, error_text ? msg : NULL, err)) {
            free(ids);
            goto fail;
        }
    }
    free(ids);
    if (db_commit(st, err)) return -1;
    if (n) *n = (int)k;
    return 0;
fail:
    db_rollback(st);
    return -1;
}

int store_run_release(store_t *st, int64_t id, const store_owner_t *owner, const char *status,
                      const char *error_text, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    run_state_t rs;
    if (read_state(st, id, &rs, err)) goto fail;
    if (rs.status == STORE_RUN_QUEUED && same_owner(&rs, owner) &&
        set_state(st, id, status, NULL, error_text, err))
        goto fail;
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}

int store_run_cancel(store_t *st, int64_t id, store_cancel_t *what, store_owner_t *worker,
                     lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    run_state_t rs;
    char msg[256];
    if (read_state(st, id, &rs, err)) goto fail;
    if (rs.status == STORE_RUN_QUEUED) {
        snprintf(msg, sizeof msg, "cancelled before it started; 'lorabench resume %lld' runs it", (long long)id);
        if (set_state(st, id, STORE_STATUS_CANCELLED, NULL, msg, err)) goto fail;
        *what = STORE_CANCEL_QUEUED;
    } else if (rs.status == STORE_RUN_RUNNING && owner_alive(&rs)) {
        *worker = rs.owner;
        *what = STORE_CANCEL_SIGNAL;
    } else if (rs.status == STORE_RUN_RUNNING) {
        *worker = rs.owner;
        snprintf(msg, sizeof msg,
                 "the worker (pid %lld) is gone; 'lorabench resume %lld' continues from its last checkpoint",
                 (long long)rs.owner.pid, (long long)id);
        if (set_state(st, id, STORE_STATUS_INTERRUPTED, NULL, msg, err)) goto fail;
        *what = STORE_CANCEL_DEAD;
    } else {
        lb_err_set(err, LB_EARG, "run %lld is %s with no live worker; nothing to cancel", (long long)id,
                   rs.status_name);
        goto fail;
    }
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}

int store_runs_delete_idle(store_t *st, const int64_t *ids, size_t n, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    for (size_t i = 0; i < n; i++) {
        run_state_t rs;
        if (read_state(st, ids[i], &rs, err)) goto fail;
        if ((rs.status == STORE_RUN_RUNNING || rs.status == STORE_RUN_QUEUED) && owner_alive(&rs)) {
            lb_err_set(err, LB_EARG, "run %lld is %s (%s pid %lld); cancel it first with 'lorabench cancel %lld'",
                       (long long)ids[i], rs.status_name, rs.status == STORE_RUN_RUNNING ? "worker" : "queued by",
                       (long long)rs.owner.pid, (long long)ids[i]);
            goto fail;
        }
        sqlite3_stmt *s;
        if (stmt_prepare(st, "DELETE FROM runs WHERE id = ?1", &s, err)) goto fail;
        sqlite3_bind_int64(s, 1, ids[i]);
        if (step_write(st, s, "deleting a run", err)) goto fail;
    }
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}
