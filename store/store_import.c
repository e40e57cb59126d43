// Importing runs from another workspace and the record of cluster sweeps (store_import.h).
// The source database is attached to the connection, so a run's rows are copied by
// INSERT ... SELECT inside one transaction, and its files are copied to a temporary folder
// first and renamed into place inside that transaction (the write lock is held for a rename,
// not for a copy).
#include "store_import.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

// A new string formatted like printf.
static char *str_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

// ---- copying a run's folder ------------------------------------------------------------

static int copy_file(const char *from, const char *to, mode_t mode, lb_err_t *err) {
    int in = open(from, O_RDONLY);
    if (in < 0) return lb_err_set(err, LB_EIO, "%s: cannot read it (%s); check its permissions", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode & 0777);
    if (out < 0) {
        close(in);
        return lb_err_set(err, LB_EIO, "%s: cannot create it (%s); check that the workspace is writable", to,
                          strerror(errno));
    }
    char buf[1 << 16];
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = lb_err_set(err, LB_EIO, "%s: read failed (%s)", from, strerror(errno));
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                rc = lb_err_set(err, errno == ENOSPC ? LB_ENOSPC : LB_EIO,
                                "%s: write failed (%s); free some disk space and import again", to, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc) break;
    }
    close(in);
    if (close(out) != 0 && !rc) rc = lb_err_set(err, LB_EIO, "%s: write failed (%s)", to, strerror(errno));
    return rc;
}

// Copies the regular files and folders under from into the existing folder to (symbolic
// links and other special files are left out).
static int copy_tree(const char *from, const char *to, lb_err_t *err) {
    DIR *d = opendir(from);
    if (!d) return errno == ENOENT ? 0 : lb_err_set(err, LB_EIO, "%s: cannot list it (%s)", from, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *src = str_fmt("%s/%s", from, e->d_name), *dst = str_fmt("%s/%s", to, e->d_name);
        struct stat sb;
        if (lstat(src, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (mkdir(dst, 0755) != 0 && errno != EEXIST)
                rc = lb_err_set(err, LB_EIO, "%s: cannot create it (%s)", dst, strerror(errno));
            else rc = copy_tree(src, dst, err);
        } else if (lstat(src, &sb) == 0 && S_ISREG(sb.st_mode)) {
            rc = copy_file(src, dst, sb.st_mode, err);
        }
        free(src);
        free(dst);
    }
    closedir(d);
    return rc;
}

// ---- importing -------------------------------------------------------------------------

// Runs one statement with up to four bound values (text or integer) to its end.
typedef struct {
    const char *text;
    int64_t num;
} bind_t;

static int exec_bound(store_t *st, const char *sql, const bind_t *b, int nb, const char *what, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, sql, &s, err)) return -1;
    for (int i = 0; i < nb; i++) {
        if (b[i].text) sqlite3_bind_text(s, i + 1, b[i].text, -1, SQLITE_TRANSIENT);
        else if (b[i].num > 0) sqlite3_bind_int64(s, i + 1, b[i].num);
        else sqlite3_bind_null(s, i + 1);
    }
    int rc = stmt_step(st, s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_fail(st, what, err);
}

// The ids a query returns (its one parameter, if it has one, is p), in *ids (malloc'd).
static int select_ids(store_t *st, const char *sql, int64_t p, int64_t **ids, size_t *n, lb_err_t *err) {
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st, sql, &s, err)) return -1;
    if (sqlite3_bind_parameter_count(s) > 0) sqlite3_bind_int64(s, 1, p);
    size_t cap = 0;
    int rc;
    while ((rc = stmt_step(st, s)) == SQLITE_ROW) {
        if (*n == cap) *ids = xrealloc(*ids, (cap = cap ? cap * 2 : 16) * sizeof **ids);
        (*ids)[(*n)++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(*ids);
        *ids = NULL;
        return db_fail(st, "reading the source workspace", err);
    }
    return 0;
}

// 1 when imports has a row of source (and of source_run unless it is < 0).
static int import_found(store_t *st, const char *source, int64_t source_run) {
    sqlite3_stmt *s;
    lb_err_t err;
    if (stmt_prepare(st, "SELECT 1 FROM main.imports WHERE source = ?1 AND (?2 < 0 OR source_run = ?2)", &s, &err))
        return 0;
    sqlite3_bind_text(s, 1, source, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, source_run);
    int found = stmt_step(st, s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return found;
}

int store_import_done(store_t *st, const char *source, int64_t source_run) {
    return source_run >= 0 && import_found(st, source, source_run);
}

int store_import_source_done(store_t *st, const char *source) { return import_found(st, source, -1); }

// What a run becomes in the workspace it is imported into: its own status and error
// (status NULL), or the given ones (a cluster task that ended before its run did).
typedef struct {
    const char *status, *error;
} import_as_t;

// Copies run src_id of the attached database "src" (the workspace at the absolute path
// source) into the main one, with its files from files (a copy already made); *added = 0
// when another process imported it first.
static int import_run(store_t *st, const char *ws, const char *source, int64_t src_id, int64_t sweep_id,
                      const import_as_t *as, const char *files, int *added, lb_err_t *err) {
    *added = 0;
    if (db_begin(st, err)) return -1;
    if (store_import_done(st, source, src_id)) {  // checked again under the write lock
        db_rollback(st);
        return 0;
    }
    char *run_dir = NULL, *new_prefix = NULL, *old_prefix = NULL;
    int64_t *evals = NULL;
    size_t n_evals = 0;
    // The run's name, numbered when the workspace has one of that name, as the runner does.
    char name[512] = "";
    sqlite3_stmt *s;
    if (stmt_prepare(st, "SELECT name FROM src.runs WHERE id = ?1", &s, err)) goto fail;
    sqlite3_bind_int64(s, 1, src_id);
    if (stmt_step(st, s) == SQLITE_ROW) snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    char base[512];
    snprintf(base, sizeof base, "%s", name);
    for (int k = 2; store_run_name_taken(st, name) && k < 100000; k++) store_name_numbered(base, k, name, sizeof name);

    bind_t run_b[] = {{NULL, src_id}, {name, 0}, {NULL, sweep_id}, {as->status, 0}, {as->error, 0}};
    if (exec_bound(st,
                   "INSERT INTO main.runs (name, spec, method, status, base_model, dataset, created_at, "
                   "started_at, finished_at, heartbeat, trainable_params, total_params, r, alpha, targets, "
                   "total_steps, step, final_loss, tokens_per_s, peak_rss_mb, error, tags, notes, sweep_id, "
                   "precision) SELECT ?2, spec, method, COALESCE(?4, status), base_model, dataset, created_at, "
                   "started_at, COALESCE(finished_at, heartbeat, started_at), heartbeat, trainable_params, "
                   "total_params, r, alpha, targets, total_steps, step, final_loss, tokens_per_s, peak_rss_mb, "
                   "COALESCE(?5, error), tags, notes, ?3, precision FROM src.runs WHERE id = ?1",
                   run_b, 5, "copying a run", err))
        goto fail;
    int64_t new_id = sqlite3_last_insert_rowid(st->db);
    bind_t ids_b[] = {{NULL, src_id}, {NULL, new_id}};
    if (exec_bound(st,
                   "INSERT INTO main.metrics (run_id, step, epoch, loss, lr, grad_norm, tokens_per_s, step_ms, "
                   "rss_mb, tokens, wall_s) SELECT ?2, step, epoch, loss, lr, grad_norm, tokens_per_s, step_ms, "
                   "rss_mb, tokens, wall_s FROM src.metrics WHERE run_id = ?1",
                   ids_b, 2, "copying a run's metrics", err))
        goto fail;
    if (select_ids(st, "SELECT id FROM src.evals WHERE run_id = ?1 ORDER BY id", src_id, &evals, &n_evals, err))
        goto fail;
    for (size_t i = 0; i < n_evals; i++) {
        bind_t ev_b[] = {{NULL, evals[i]}, {NULL, new_id}};
        if (exec_bound(st,
                       "INSERT INTO main.evals (run_id, step, split, n, created_at, seconds, rouge1, rouge1_low, "
                       "rouge1_high, rouge2, rouge2_low, rouge2_high, rougeL, rougeL_low, rougeL_high, rougeLsum, "
                       "rougeLsum_low, rougeLsum_high, beams, max_new_tokens, length_penalty) SELECT ?2, step, "
                       "split, n, created_at, seconds, rouge1, rouge1_low, rouge1_high, rouge2, rouge2_low, "
                       "rouge2_high, rougeL, rougeL_low, rougeL_high, rougeLsum, rougeLsum_low, rougeLsum_high, "
                       "beams, max_new_tokens, length_penalty FROM src.evals WHERE id = ?1",
                       ev_b, 2, "copying a run's evaluations", err))
            goto fail;
        bind_t smp_b[] = {{NULL, evals[i]}, {NULL, sqlite3_last_insert_rowid(st->db)}};
        if (exec_bound(st,
                       "INSERT INTO main.samples (eval_id, idx, source, reference, prediction, rouge1, rouge2, "
                       "rougeL) SELECT ?2, idx, source, reference, prediction, rouge1, rouge2, rougeL "
                       "FROM src.samples WHERE eval_id = ?1",
                       smp_b, 2, "copying an evaluation's samples", err))
            goto fail;
    }
    // Artifact paths point into the source's runs/<id>/: the same file in the new folder.
    if (store_run_dir(ws, new_id, 0, &run_dir, err)) goto fail;
    old_prefix = str_fmt("runs/%lld/", (long long)src_id);
    new_prefix = str_fmt("%s/", run_dir);
    bind_t art_b[] = {{NULL, src_id}, {NULL, new_id}, {old_prefix, 0}, {new_prefix, 0}};
    if (exec_bound(st,
                   "INSERT INTO main.artifacts (run_id, kind, path, bytes, sha256, step, created_at) "
                   "SELECT ?2, kind, CASE WHEN instr(path, ?3) > 0 "
                   "THEN ?4 || substr(path, instr(path, ?3) + length(?3)) ELSE path END, "
                   "bytes, sha256, step, created_at FROM src.artifacts WHERE run_id = ?1",
                   art_b, 4, "copying a run's artifacts", err))
        goto fail;
    bind_t imp_b[] = {{source, 0}, {NULL, src_id}, {NULL, new_id}};
    if (exec_bound(st,
                   "INSERT INTO main.imports (source, source_run, run_id, imported_at) "
                   "VALUES (?1, ?2, ?3, (julianday('now') - 2440587.5) * 86400.0)",
                   imp_b, 3, "recording an import", err))
        goto fail;
    // A folder left by a failed import that got the same id is not this run's.
    if (store_run_dir_remove(ws, new_id, err)) goto fail;
    if (rename(files, run_dir) != 0) {
        lb_err_set(err, LB_EIO, "%s: cannot move the imported files there (%s); check that the workspace is writable",
                   run_dir, strerror(errno));
        goto fail;
    }
    if (db_commit(st, err)) {
        store_run_dir_remove(ws, new_id, err);
        goto fail_committed;
    }
    *added = 1;
    free(evals);
    free(run_dir);
    free(old_prefix);
    free(new_prefix);
    return 0;
fail:
    db_rollback(st);
fail_committed:
    free(evals);
    free(run_dir);
    free(old_prefix);
    free(new_prefix);
    return -1;
}

// What was copied or dropped goes whole; a failure leaves a folder that says what it is.
static void remove_tree(const char *path) {
    lb_err_t e;
    store_remove_tree(path, &e);
}

// Imports the runs of src_ws that the query `which` lists (ids), as `as` says.
static int import_runs(store_t *st, const char *ws, const char *src_ws, int64_t sweep_id, const char *which,
                       const import_as_t *as, int *n_imported, lb_err_t *err) {
    if (n_imported) *n_imported = 0;
    char src_abs[PATH_MAX], ws_abs[PATH_MAX];
    if (!realpath(src_ws, src_abs))
        return lb_err_set(err, LB_EIO, "%s: no such folder (%s); give the workspace folder to import from", src_ws,
                          strerror(errno));
    if (!realpath(ws, ws_abs))
        return lb_err_set(err, LB_EIO, "%s: no such workspace folder (%s)", ws, strerror(errno));
    if (!strcmp(src_abs, ws_abs))
        return lb_err_set(err, LB_EARG, "%s is this workspace; give another workspace's folder to import from", src_ws);
    if (sweep_id > 0) {
        int64_t *found;
        size_t n_found;
        if (select_ids(st, "SELECT id FROM main.sweeps WHERE id = ?1", sweep_id, &found, &n_found, err)) return -1;
        free(found);
        if (n_found == 0)
            return lb_err_set(err, LB_EARG, "there is no sweep %lld in %s; give the id of one of its sweeps, or no "
                                            "--sweep", (long long)sweep_id, ws);
    }
    char *src_db = store_workspace_db_path(src_abs);
    if (access(src_db, R_OK) != 0) {
        lb_err_set(err, LB_EIO, "%s has no lorabench.db; give a workspace folder (one with lorabench.db, e.g. a "
                                "cluster sweep's task-<i> folder)", src_ws);
        free(src_db);
        return -1;
    }
    bind_t att_b[] = {{src_db, 0}};
    int rc = exec_bound(st, "ATTACH DATABASE ?1 AS src", att_b, 1, "opening the source workspace", err);
    free(src_db);
    if (rc) return -1;
    int64_t *ids = NULL;
    size_t n = 0;
    sqlite3_stmt *s;
    rc = -1;
    int64_t version = -1;
    if (stmt_prepare(st, "PRAGMA src.user_version", &s, err)) goto done;
    if (stmt_step(st, s) == SQLITE_ROW) version = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (version < 2 || version > STORE_SCHEMA_VERSION) {
        lb_err_set(err, LB_EFORMAT,
                   "%s: its database has schema version %lld, which this lorabench cannot import (it needs 2 to "
                   "%d); open it once with this lorabench (lorabench runs --workspace %s) or use the matching one",
                   src_ws, (long long)version, STORE_SCHEMA_VERSION, src_ws);
        goto done;
    }
    if (select_ids(st, which, 0, &ids, &n, err)) goto done;
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (store_import_done(st, src_abs, ids[i])) continue;
        // The files first, outside the transaction, into a folder of our own under runs/.
        char *tmp = str_fmt("%s/runs/.import-XXXXXX", ws_abs);
        if (!mkdtemp(tmp)) {
            rc = lb_err_set(err, LB_EIO, "%s/runs: cannot create a folder there (%s); check that the workspace is "
                                         "writable", ws_abs, strerror(errno));
            free(tmp);
            break;
        }
        char *from = str_fmt("%s/runs/%lld", src_abs, (long long)ids[i]);
        int added = 0;
        rc = copy_tree(from, tmp, err);
        if (!rc) rc = import_run(st, ws_abs, src_abs, ids[i], sweep_id, as, tmp, &added, err);
        if (!added) remove_tree(tmp);
        if (added && n_imported) (*n_imported)++;
        free(from);
        free(tmp);
    }
done:
    free(ids);
    sqlite3_exec(st->db, "DETACH DATABASE src", NULL, NULL, NULL);
    return rc;
}

int store_import_workspace(store_t *st, const char *ws, const char *src_ws, int64_t sweep_id,
                           int *n_imported, lb_err_t *err) {
    const import_as_t as = {NULL, NULL};
    return import_runs(st, ws, src_ws, sweep_id,
                       "SELECT id FROM src.runs WHERE status IN ('done', 'failed', 'cancelled') ORDER BY id", &as,
                       n_imported, err);
}

int store_import_unfinished(store_t *st, const char *ws, const char *src_ws, int64_t sweep_id, const char *status,
                            const char *why, int *n_imported, lb_err_t *err) {
    const import_as_t as = {status, why};
    return import_runs(st, ws, src_ws, sweep_id,
                       "SELECT id FROM src.runs WHERE status IN ('queued', 'running', 'interrupted') ORDER BY id",
                       &as, n_imported, err);
}

int store_workspace_peek(const char *src_ws, store_peek_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    out->loss = NAN;
    out->step = out->total_steps = -1;
    char *path = store_workspace_db_path(src_ws);
    if (access(path, F_OK) != 0) {
        free(path);
        return 0;
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    sqlite3_stmt *s = NULL;
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        rc = sqlite3_prepare_v2(db,
                                "SELECT r.id, r.status, r.step, r.total_steps, (SELECT m.loss FROM metrics m "
                                "WHERE m.run_id = r.id ORDER BY m.step DESC LIMIT 1) FROM runs r "
                                "ORDER BY r.id DESC LIMIT 1",
                                -1, &s, NULL);
    }
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->found = 1;
        out->source_run = sqlite3_column_int64(s, 0);
        snprintf(out->status, sizeof out->status, "%s", (const char *)sqlite3_column_text(s, 1));
        out->step = sqlite3_column_int64(s, 2);
        out->total_steps = sqlite3_column_type(s, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 3);
        if (sqlite3_column_type(s, 4) != SQLITE_NULL) out->loss = sqlite3_column_double(s, 4);
        rc = SQLITE_DONE;
    }
    int result = 0;
    // A database still being created by the task (no runs table yet) is a task not started.
    if (rc != SQLITE_DONE && !(db && strstr(sqlite3_errmsg(db), "no such table")))
        result = lb_err_set(err, LB_EIO, "%s: cannot read it (%s)", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(path);
    return result;
}

// ---- cluster sweeps --------------------------------------------------------------------

int store_cluster_job_add(store_t *st, int64_t sweep_id, const char *job_id, const char *dir,
                          int64_t n_tasks, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    bind_t b[] = {{NULL, sweep_id}, {job_id, 0}, {dir, 0}, {NULL, n_tasks}};
    if (exec_bound(st,
                   "INSERT INTO cluster_jobs (sweep_id, job_id, dir, n_tasks, created_at) "
                   "VALUES (?1, ?2, ?3, ?4, (julianday('now') - 2440587.5) * 86400.0)",
                   b, 4, "recording a cluster sweep", err)) {
        db_rollback(st);
        return -1;
    }
    return db_commit(st, err);
}

int store_cluster_jobs_list(store_t *st, int unmerged_only, store_cluster_job_t **rows, size_t *n,
                            lb_err_t *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT sweep_id, job_id, dir, n_tasks, state, created_at FROM cluster_jobs "
                     "WHERE ?1 = 0 OR state != 'merged' ORDER BY sweep_id",
                     &s, err))
        return -1;
    sqlite3_bind_int(s, 1, unmerged_only);
    size_t cap = 0;
    int rc;
    while ((rc = stmt_step(st, s)) == SQLITE_ROW) {
        if (*n == cap) *rows = xrealloc(*rows, (cap = cap ? cap * 2 : 4) * sizeof **rows);
        store_cluster_job_t *j = &(*rows)[(*n)++];
        j->sweep_id = sqlite3_column_int64(s, 0);
        j->job_id = xstrdup((const char *)sqlite3_column_text(s, 1));
        j->dir = xstrdup((const char *)sqlite3_column_text(s, 2));
        j->n_tasks = sqlite3_column_int64(s, 3);
        j->state = xstrdup((const char *)sqlite3_column_text(s, 4));
        j->created_at = sqlite3_column_double(s, 5);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        store_cluster_jobs_free(*rows, *n);
        *rows = NULL;
        *n = 0;
        return db_fail(st, "listing cluster sweeps", err);
    }
    return 0;
}

int store_cluster_job_set_state(store_t *st, int64_t sweep_id, const char *state, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    bind_t b[] = {{state, 0}, {NULL, sweep_id}};
    if (exec_bound(st, "UPDATE cluster_jobs SET state = ?1 WHERE sweep_id = ?2", b, 2, "updating a cluster sweep",
                   err)) {
        db_rollback(st);
        return -1;
    }
    int changed = sqlite3_changes(st->db);
    if (db_commit(st, err)) return -1;
    if (!changed)
        return lb_err_set(err, LB_EARG, "sweep %lld was not submitted to a cluster; 'lorabench runs' lists the "
                                        "cluster sweeps", (long long)sweep_id);
    return 0;
}

int store_sweep_drop_empty(store_t *st, const char *ws, int64_t sweep_id, lb_err_t *err) {
    if (db_begin(st, err)) return -1;
    bind_t b[] = {{NULL, sweep_id}};
    if (exec_bound(st, "DELETE FROM sweeps WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM runs WHERE sweep_id = ?1)", b, 1,
                   "removing an empty sweep", err)) {
        db_rollback(st);
        return -1;
    }
    int dropped = sqlite3_changes(st->db) > 0;
    if (db_commit(st, err)) return -1;
    if (dropped) {
        char *dir = str_fmt("%s/sweeps/%lld", ws, (long long)sweep_id);
        remove_tree(dir);
        free(dir);
    }
    return 0;
}

void store_cluster_jobs_free(store_cluster_job_t *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(rows[i].job_id);
        free(rows[i].dir);
        free(rows[i].state);
    }
    free(rows);
}
