// The run store: connection set-up, migrations, transactions, and the write and read
// paths of runs, metrics, evaluations, artifacts and sweeps.
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

extern const char lb_schema_sql[];  // store/schema.sql, compiled in by the Makefile

// Migrations of databases made by older builds: entry i brings user_version i+1 to i+2.
// schema.sql always holds the newest schema, so fresh databases never run these. The
// NULL entry only keeps the array non-empty while there is nothing to migrate.
static const char *const migrations[] = {
    // 1 -> 2: the precision a run's products used
    "ALTER TABLE runs ADD COLUMN precision TEXT CHECK (precision IN ('fp32', 'bf16'));",
    // 2 -> 3: sweeps submitted to a Slurm cluster, and where imported runs came from
    "CREATE TABLE cluster_jobs (sweep_id INTEGER PRIMARY KEY REFERENCES sweeps (id) ON DELETE CASCADE,"
    " job_id TEXT NOT NULL, dir TEXT NOT NULL, n_tasks INTEGER NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'submitted' CHECK (state IN ('submitted', 'cancelled', 'merged')),"
    " created_at REAL NOT NULL);"
    "CREATE TABLE imports (source TEXT NOT NULL, source_run INTEGER NOT NULL, run_id INTEGER NOT NULL,"
    " imported_at REAL NOT NULL, PRIMARY KEY (source, source_run));",
    // 3 -> 4: run ownership (the owner's start time) and identity (uuid, spec hash); older
    // runs keep NULL there and are executed as before
    "ALTER TABLE runs ADD COLUMN pid_start INTEGER;"
    "ALTER TABLE runs ADD COLUMN oom_kills INTEGER;"
    "ALTER TABLE runs ADD COLUMN uuid TEXT;"
    "ALTER TABLE runs ADD COLUMN spec_hash TEXT;",
};
enum { N_MIGRATIONS = 3 };
_Static_assert(N_MIGRATIONS + 1 == STORE_SCHEMA_VERSION,
               "add a migration to store.c for every schema version after 1");

// SQLITE_BUSY can come back at once, without the busy handler waiting (a WAL being
// recovered or reset by another connection), so busy calls are tried again, but only
// until the connection's busy_timeout has passed since the first try: a workspace locked
// by another process gives a clear error after busy_timeout, never a hang of several.
enum { BUSY_RETRIES = 6 };

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

double store_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_busy(int rc) {
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

// 1 when a call that returned rc should be tried again: it was busy, fewer than
// BUSY_RETRIES retries were made, and busy_timeout has not passed since t0.
static int retry_busy(const store_t *st, int rc, int attempt, double t0) {
    return is_busy(rc) && attempt < BUSY_RETRIES && store_now() - t0 < st->busy_ms / 1000.0;
}

static long path_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

// After a failed write: 1 when the reason is space, i.e. the file system is (nearly) full
// or the database or its WAL reached the process's file-size limit (RLIMIT_FSIZE). SQLite
// says SQLITE_FULL only for ENOSPC and keeps the errno of a failed WAL write to itself, so
// EFBIG (a file-size limit) reaches us as a bare SQLITE_IOERR_WRITE.
static int out_of_space(const store_t *st) {
    size_t n = strlen(st->path);
    char *dir = xmalloc(n + 8), *wal = xmalloc(n + 8);
    snprintf(dir, n + 8, "%s", st->path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, n + 8, ".");
    snprintf(wal, n + 8, "%s-wal", st->path);
    struct statvfs vfs;
    int full = statvfs(dir, &vfs) == 0 && (double)vfs.f_bavail * (double)vfs.f_frsize < 1048576.0;
    struct rlimit rl;
    long biggest = path_size(st->path) > path_size(wal) ? path_size(st->path) : path_size(wal);
    if (!full && getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        full = (double)biggest + 65536.0 > (double)rl.rlim_cur;
    free(dir);
    free(wal);
    return full;
}

int db_fail(store_t *st, const char *what, lb_err_t *err) {
    int rc = sqlite3_extended_errcode(st->db);
    if ((rc & 0xff) == SQLITE_FULL || (rc == SQLITE_IOERR_WRITE && out_of_space(st)))
        return lb_err_set(err, LB_ENOSPC, "no space left writing %s (%s failed); free some disk space and try again",
                          st->path, what);
    const char *hint = "";
    if ((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_PERM)
        hint = "; check that the workspace folder is writable";
    else if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB)
        hint = "; the file is damaged or not a lorabench database, move it away";
    else if ((rc & 0xff) == SQLITE_IOERR)
        hint = "; check the disk, its free space and quota";
    else if (is_busy(rc))
        hint = "; another process (a lorabench worker or an sqlite3 shell) holds its write lock, "
               "wait for it to finish or close it and retry";
    return lb_err_set(err, LB_EIO, "%s: %s failed: %s%s", st->path, what, sqlite3_errmsg(st->db), hint);
}

int stmt_prepare(store_t *st, const char *sql, sqlite3_stmt **stmt, lb_err_t *err) {
    *stmt = NULL;
    double t0 = store_now();
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL);
        if (rc == SQLITE_OK) return 0;
        // Preparing reads the schema, which can be busy while another process migrates.
        if (!retry_busy(st, rc, attempt, t0)) return db_fail(st, "preparing a query", err);
        sleep_ms(50);
    }
}

int stmt_step(store_t *st, sqlite3_stmt *stmt) {
    int rc;
    double t0 = store_now();
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_step(stmt);
        if (!retry_busy(st, rc, attempt, t0)) break;
        sqlite3_reset(stmt);
        sleep_ms(20);
    }
    return rc;
}

static int exec_retry(store_t *st, const char *sql) {
    int rc;
    double t0 = store_now();
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
        if (!retry_busy(st, rc, attempt, t0)) return rc;
        sleep_ms(20);
    }
}

// BEGIN IMMEDIATE with retries / COMMIT with retries / ROLLBACK (never fails loudly).
void db_rollback(store_t *st) {
    if (!sqlite3_get_autocommit(st->db)) sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

// 0 when the database file still starts with SQLite's header (or is empty: a database
// being made). A file overwritten in place (another program, a bad copy) keeps the old
// pages in this connection's cache and WAL, and a write would mix them into it: nothing
// is written once the header is gone.
static int header_ok(const store_t *st) {
    // Read through SQLite's own file handle: opening and closing the file here would drop
    // the POSIX locks SQLite holds on it in this process.
    sqlite3_file *fp = NULL;
    if (sqlite3_file_control(st->db, "main", SQLITE_FCNTL_FILE_POINTER, &fp) != SQLITE_OK || !fp || !fp->pMethods)
        return 0;
    sqlite3_int64 size = 0;
    if (fp->pMethods->xFileSize(fp, &size) != SQLITE_OK || size == 0) return 0;
    char h[16];
    if (fp->pMethods->xRead(fp, h, sizeof h, 0) != SQLITE_OK) return -1;
    return memcmp(h, "SQLite format 3", 16) ? -1 : 0;
}

int db_begin(store_t *st, lb_err_t *err) {
    if (header_ok(st))
        return lb_err_set(err, LB_EFORMAT,
                          "%s is no longer an SQLite database (the file was overwritten); nothing more is "
                          "written to it: quit, and restore it from a backup or move it away",
                          st->path);
    if (exec_retry(st, "BEGIN IMMEDIATE") != SQLITE_OK)
        return db_fail(st, "starting a write transaction", err);
    return 0;
}

int db_commit(store_t *st, lb_err_t *err) {
    if (exec_retry(st, "COMMIT") != SQLITE_OK) {
        db_fail(st, "committing", err);
        db_rollback(st);
        return -1;
    }
    return 0;
}

// Binding helpers: NULL string, NAN real, negative integer bind SQL NULL.
void stmt_bind_text(sqlite3_stmt *s, int i, const char *v) {
    if (v) sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(s, i);
}

void stmt_bind_real(sqlite3_stmt *s, int i, double v) {
    if (isnan(v)) sqlite3_bind_null(s, i);
    else sqlite3_bind_double(s, i, v);
}

void stmt_bind_int(sqlite3_stmt *s, int i, int64_t v) {  // v < 0 -> NULL
    if (v < 0) sqlite3_bind_null(s, i);
    else sqlite3_bind_int64(s, i, v);
}

// Column helpers: SQL NULL reads as NAN / -1 / NULL.
double stmt_col_real(sqlite3_stmt *s, int i) {
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

int64_t stmt_col_int(sqlite3_stmt *s, int i) {
    return sqlite3_column_type(s, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, i);
}

char *stmt_col_str(sqlite3_stmt *s, int i) {  // malloc'd or NULL
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? xstrdup((const char *)t) : NULL;
}

// Runs one prepared write statement in its own BEGIN IMMEDIATE transaction; *changes gets
// the number of rows it changed. Finalizes the statement.
static int write_one(store_t *st, sqlite3_stmt *s, const char *what, int *changes,
                     lb_err_t *err) {
    if (db_begin(st, err)) {
        sqlite3_finalize(s);
        return -1;
    }
    if (stmt_step(st, s) != SQLITE_DONE) {
        db_fail(st, what, err);
        sqlite3_finalize(s);
        db_rollback(st);
        return -1;
    }
    sqlite3_finalize(s);
    if (changes) *changes = sqlite3_changes(st->db);
    return db_commit(st, err);
}

// ---- open / migrate --------------------------------------------------------------------

static int read_int_pragma(store_t *st, const char *sql, int64_t *v, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, sql, &s, err)) return -1;
    int rc = stmt_step(st, s);
    if (rc != SQLITE_ROW) {
        db_fail(st, sql, err);
        sqlite3_finalize(s);
        return -1;
    }
    *v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return 0;
}

static int set_wal(store_t *st, lb_err_t *err) {
    // Switching a fresh file to WAL needs a moment alone with it; when several processes
    // open a new workspace together, the others wait here.
    double deadline = store_now() + st->busy_ms / 1000.0;
    for (;;) {
        sqlite3_stmt *s;
        if (stmt_prepare(st, "PRAGMA journal_mode=WAL", &s, err)) return -1;
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(s, 0);
            int ok = mode && !strcmp(mode, "wal");
            sqlite3_finalize(s);
            if (!ok)
                return lb_err_set(err, LB_EIO,
                                  "%s: the database cannot use WAL mode on this file system; "
                                  "put the workspace on a local disk (--workspace DIR)",
                                  st->path);
            return 0;
        }
        sqlite3_finalize(s);
        if (!is_busy(rc) || store_now() > deadline)
            return db_fail(st, "switching to WAL mode", err);
        sleep_ms(20);
    }
}

static int migrate(store_t *st, lb_err_t *err) {
    int64_t v;
    if (read_int_pragma(st, "PRAGMA user_version", &v, err)) return -1;
    if (v == STORE_SCHEMA_VERSION) return 0;  // the usual case: no write lock taken
    if (v > STORE_SCHEMA_VERSION)
        return lb_err_set(err, LB_EFORMAT,
                          "%s: the database has schema version %lld, newer than this "
                          "lorabench (version %d); update lorabench or use another workspace",
                          st->path, (long long)v, STORE_SCHEMA_VERSION);
    if (db_begin(st, err)) return -1;
    // Another process may have migrated between our read and our lock: read again.
    if (read_int_pragma(st, "PRAGMA user_version", &v, err)) goto fail;
    if (v == 0) {
        if (sqlite3_exec(st->db, lb_schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
            db_fail(st, "creating the schema (is this a lorabench database?)", err);
            goto fail;
        }
    } else {
        for (int64_t from = v; from < STORE_SCHEMA_VERSION; from++) {
            const char *sql = from >= 1 ? migrations[from - 1] : NULL;  // user_version may be < 0
            if (!sql || sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
                if (sql) db_fail(st, "migrating the schema", err);
                else lb_err_set(err, LB_EFORMAT, "%s: no migration from schema version %lld",
                                st->path, (long long)from);
                goto fail;
            }
        }
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(st, "setting the schema version", err);
        goto fail;
    }
    return db_commit(st, err);
fail:
    db_rollback(st);
    return -1;
}

int store_open(const char *path, store_t **out, lb_err_t *err) {
    *out = NULL;
    store_t *st = xcalloc(1, sizeof *st);
    st->path = xstrdup(path);
    int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        if (st->db) db_fail(st, "opening the database", err);
        else lb_err_set(err, LB_ENOMEM, "%s: cannot open the database (out of memory)", path);
        goto fail;
    }
    // SQLite quietly falls back to read-only when the file is write-protected; every later
    // write would fail with a puzzling message, so say now what is wrong.
    if (sqlite3_db_readonly(st->db, "main") == 1) {
        lb_err_set(err, LB_EIO,
                   "%s is read-only for this user; make the workspace folder and its database "
                   "writable, or pick another --workspace",
                   path);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    st->busy_ms = STORE_BUSY_TIMEOUT_MS;
    const char *bt = getenv("LORABENCH_BUSY_TIMEOUT_MS");  // tests shorten the wait
    if (bt && atoi(bt) > 0) st->busy_ms = atoi(bt);
    sqlite3_busy_timeout(st->db, st->busy_ms);
    if (set_wal(st, err)) goto fail;
    // NORMAL is crash-safe in WAL mode (a killed worker never corrupts the file; only a
    // power cut may lose the last commits) and avoids an fsync per metrics batch.
    if (exec_retry(st, "PRAGMA synchronous=NORMAL") != SQLITE_OK ||
        exec_retry(st, "PRAGMA foreign_keys=ON") != SQLITE_OK) {
        db_fail(st, "configuring the connection", err);
        goto fail;
    }
    if (migrate(st, err)) goto fail;
    *out = st;
    return 0;
fail:
    store_close(st);
    return -1;
}

int store_open_readonly(const char *path, store_t **out, lb_err_t *err) {
    *out = NULL;
    store_t *st = xcalloc(1, sizeof *st);
    st->path = xstrdup(path);
    st->busy_ms = STORE_BUSY_TIMEOUT_MS;
    // A WAL database needs its -shm file; when it is missing and the folder is not
    // writable it cannot be made, and the file is then read as immutable (nobody with
    // write access can be changing it then but its owner).
    for (int immutable = 0; immutable < 2; immutable++) {
        size_t n = strlen(path) * 3 + 64;
        char *uri = xmalloc(n), *u = uri;
        u += snprintf(u, n, "file:");
        for (const unsigned char *p = (const unsigned char *)path; *p; p++)  // %-escape what a URI path cannot hold
            u += (*p == '%' || *p == '?' || *p == '#' || *p < 0x20) ? sprintf(u, "%%%02X", *p) : sprintf(u, "%c", *p);
        snprintf(u, n - (size_t)(u - uri), "?mode=ro%s", immutable ? "&immutable=1" : "");
        int rc = sqlite3_open_v2(uri, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
        free(uri);
        if (rc == SQLITE_OK) {
            sqlite3_extended_result_codes(st->db, 1);
            sqlite3_busy_timeout(st->db, st->busy_ms);
            int64_t v;
            if (read_int_pragma(st, "PRAGMA user_version", &v, err) == 0) {
                if (v != STORE_SCHEMA_VERSION) {
                    lb_err_set(err, LB_EFORMAT,
                               "%s has schema version %lld and this lorabench reads version %d; it is read-only "
                               "for this user, so ask its owner to open it once with this lorabench",
                               path, (long long)v, STORE_SCHEMA_VERSION);
                    goto fail;
                }
                *out = st;
                return 0;
            }
        } else if (!st->db) {
            lb_err_set(err, LB_ENOMEM, "%s: cannot open the database (out of memory)", path);
            goto fail;
        } else {
            db_fail(st, "opening the database read-only", err);
        }
        sqlite3_close_v2(st->db);
        st->db = NULL;
    }
fail:
    store_close(st);
    return -1;
}

void store_close(store_t *st) {
    if (!st) return;
    // The last connection to close checkpoints the WAL into the file: not into one that
    // was overwritten (header_ok).
    if (st->db && header_ok(st)) sqlite3_db_config(st->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    if (st->db) sqlite3_close_v2(st->db);
    free(st->path);
    free(st);
}

int store_schema_version(store_t *st, int *version, lb_err_t *err) {
    int64_t v;
    if (read_int_pragma(st, "PRAGMA user_version", &v, err)) return -1;
    *version = (int)v;
    return 0;
}

int store_data_version(store_t *st, int64_t *version, lb_err_t *err) {
    return read_int_pragma(st, "PRAGMA data_version", version, err);
}

// ---- runs ------------------------------------------------------------------------------

static const char *const statuses[STORE_N_STATUSES] = {
    STORE_STATUS_QUEUED, STORE_STATUS_RUNNING,   STORE_STATUS_DONE,
    STORE_STATUS_FAILED, STORE_STATUS_CANCELLED, STORE_STATUS_INTERRUPTED};

const char *store_status_name(store_status_t s) {
    return s >= 0 && s < STORE_N_STATUSES ? statuses[s] : NULL;
}

store_status_t store_status_parse(const char *name) {
    for (int i = 0; name && i < STORE_N_STATUSES; i++)
        if (!strcmp(name, statuses[i])) return (store_status_t)i;
    return STORE_RUN_UNKNOWN;
}

static const char *const methods[] = {"none", "lora", "full", "partial"};

static int in_list(const char *v, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (v && !strcmp(v, list[i])) return 1;
    return 0;
}

// A random (version 4) UUID, from the kernel's generator.
static void new_uuid(char out[37]) {
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, sizeof b, f) : 0;
    if (f) fclose(f);
    if (got != sizeof b) {  // no /dev/urandom: time and pid, still unique per run in practice
        uint64_t x = (uint64_t)(store_now() * 1e6) ^ ((uint64_t)getpid() << 40);
        for (int i = 0; i < 16; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            b[i] = (unsigned char)x;
        }
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

int store_run_create(store_t *st, const store_run_new_t *run, int64_t *id, lb_err_t *err) {
    if (!run->name || !run->spec || !run->method)
        return lb_err_set(err, LB_EARG, "store_run_create: a run needs a name, a spec and a method");
    if (!in_list(run->method, methods, 4))
        return lb_err_set(err, LB_EARG,
                          "unknown method '%s' for run '%s'; use none, lora, full or partial",
                          run->method, run->name);
    char uuid[37];
    new_uuid(uuid);
    // The id is past every folder in runs/ as well as every id the database gave out: a
    // database restored from a backup would otherwise hand a new run an old run's folder.
    char *ws = store_workspace_of(st);
    int64_t past_folders = store_run_dir_max_id(ws) + 1;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "INSERT INTO runs (id, name, spec, method, status, base_model, dataset, "
                     "created_at, r, alpha, targets, total_steps, sweep_id, tags, pid, pid_start, "
                     "uuid, spec_hash) "
                     "VALUES (MAX(?13, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0) + 1,"
                     " COALESCE((SELECT MAX(id) FROM runs), 0) + 1),"
                     " ?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?14, ?15, ?16, ?17)",
                     &s, err)) {
        free(ws);
        return -1;
    }
    stmt_bind_text(s, 1, run->name);
    stmt_bind_text(s, 2, run->spec);
    stmt_bind_text(s, 3, run->method);
    stmt_bind_text(s, 4, run->base_model);
    stmt_bind_text(s, 5, run->dataset);
    sqlite3_bind_double(s, 6, store_now());
    stmt_bind_int(s, 7, run->r);
    stmt_bind_real(s, 8, run->alpha);
    stmt_bind_text(s, 9, run->targets);
    stmt_bind_int(s, 10, run->total_steps);
    if (run->sweep_id > 0) sqlite3_bind_int64(s, 11, run->sweep_id);
    else sqlite3_bind_null(s, 11);
    stmt_bind_text(s, 12, run->tags);
    sqlite3_bind_int64(s, 13, past_folders);
    if (run->owner && run->owner->pid > 0) {
        sqlite3_bind_int64(s, 14, run->owner->pid);
        sqlite3_bind_int64(s, 15, run->owner->start);
    }
    stmt_bind_text(s, 16, uuid);
    stmt_bind_text(s, 17, run->spec_hash);
    if (db_begin(st, err)) {
        sqlite3_finalize(s);
        free(ws);
        return -1;
    }
    if (stmt_step(st, s) != SQLITE_DONE) {
        db_fail(st, "creating a run", err);
        sqlite3_finalize(s);
        db_rollback(st);
        free(ws);
        return -1;
    }
    sqlite3_finalize(s);
    int64_t new_id = sqlite3_last_insert_rowid(st->db);
    // The folder is made and stamped before the row is committed: a folder that appeared
    // since the scan above leaves no row behind.
    if (store_run_dir_stamp(ws, new_id, uuid, run->spec_hash, err)) {
        db_rollback(st);
        free(ws);
        return -1;
    }
    free(ws);
    if (db_commit(st, err)) return -1;
    *id = new_id;
    return 0;
}

static int no_such_run(store_t *st, int64_t id, lb_err_t *err) {
    return lb_err_set(err, LB_EARG, "%s: there is no run %lld; 'lorabench runs' lists them",
                      st->path, (long long)id);
}

int store_run_set_status(store_t *st, int64_t id, const char *status, const char *error_text,
                         lb_err_t *err) {
    if (store_status_parse(status) == STORE_RUN_UNKNOWN)
        return lb_err_set(err, LB_EARG,
                          "unknown run status '%s'; use queued, running, done, failed, "
                          "cancelled or interrupted",
                          status ? status : "(null)");
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     // a run's time is its active time: a resumed run's start moves on by the
                     // time it lay stopped (from its finish, kept while it is queued again)
                     "UPDATE runs SET status = ?2,"
                     " started_at = CASE WHEN ?2 <> 'running' OR started_at IS NULL THEN COALESCE(started_at,"
                     "                       CASE WHEN ?2 = 'running' THEN ?3 END)"
                     "              WHEN status <> 'running' AND finished_at IS NOT NULL"
                     "                   THEN started_at + MAX(0, ?3 - finished_at)"
                     "              ELSE started_at END,"
                     " heartbeat = CASE WHEN ?2 = 'running' THEN ?3 ELSE heartbeat END,"
                     " finished_at = CASE WHEN ?2 IN ('done', 'failed', 'cancelled', 'interrupted')"
                     "               THEN ?3 WHEN ?2 = 'queued' THEN finished_at ELSE NULL END,"
                     " error = CASE WHEN ?2 IN ('failed', 'cancelled', 'interrupted') THEN ?4"
                     "         ELSE NULL END "
                     "WHERE id = ?1",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    stmt_bind_text(s, 2, status);
    sqlite3_bind_double(s, 3, store_now());
    stmt_bind_text(s, 4, error_text);
    int changes = 0;
    if (write_one(st, s, "setting a run's status", &changes, err)) return -1;
    return changes ? 0 : no_such_run(st, id, err);
}

int store_run_heartbeat(store_t *st, int64_t id, int64_t pid, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, "UPDATE runs SET heartbeat = ?2, pid = ?3 WHERE id = ?1", &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_double(s, 2, store_now());
    stmt_bind_int(s, 3, pid);
    int changes = 0;
    if (write_one(st, s, "recording a heartbeat", &changes, err)) return -1;
    return changes ? 0 : no_such_run(st, id, err);
}

store_run_summary_t store_run_summary_unset(void) {
    store_run_summary_t s = {-1, -1, -1, -1, NAN, NAN, NAN, NULL};
    return s;
}

int store_run_update_summary(store_t *st, int64_t id, const store_run_summary_t *sm,
                             lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "UPDATE runs SET trainable_params = COALESCE(?2, trainable_params),"
                     " total_params = COALESCE(?3, total_params),"
                     " total_steps = COALESCE(?4, total_steps),"
                     " step = COALESCE(?5, step),"
                     " final_loss = COALESCE(?6, final_loss),"
                     " tokens_per_s = COALESCE(?7, tokens_per_s),"
                     " peak_rss_mb = COALESCE(?8, peak_rss_mb),"
                     " precision = COALESCE(?9, precision) WHERE id = ?1",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    stmt_bind_int(s, 2, sm->trainable_params);
    stmt_bind_int(s, 3, sm->total_params);
    stmt_bind_int(s, 4, sm->total_steps);
    stmt_bind_int(s, 5, sm->step);
    stmt_bind_real(s, 6, sm->final_loss);
    stmt_bind_real(s, 7, sm->tokens_per_s);
    stmt_bind_real(s, 8, sm->peak_rss_mb);
    stmt_bind_text(s, 9, sm->precision);
    int changes = 0;
    if (write_one(st, s, "updating a run's summary", &changes, err)) return -1;
    return changes ? 0 : no_such_run(st, id, err);
}

static int set_text_column(store_t *st, int64_t id, const char *sql, const char *v,
                           const char *what, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, sql, &s, err)) return -1;
    sqlite3_bind_int64(s, 1, id);
    stmt_bind_text(s, 2, v);
    int changes = 0;
    if (write_one(st, s, what, &changes, err)) return -1;
    return changes ? 0 : no_such_run(st, id, err);
}

int store_run_set_tags(store_t *st, int64_t id, const char *tags, lb_err_t *err) {
    return set_text_column(st, id, "UPDATE runs SET tags = ?2 WHERE id = ?1", tags,
                           "setting tags", err);
}

int store_run_set_notes(store_t *st, int64_t id, const char *notes, lb_err_t *err) {
    return set_text_column(st, id, "UPDATE runs SET notes = ?2 WHERE id = ?1", notes,
                           "setting notes", err);
}

int store_run_set_pinned(store_t *st, int64_t id, int pinned, lb_err_t *err) {
    sqlite3_stmt *a = NULL, *b = NULL;
    if (stmt_prepare(st, "UPDATE runs SET pinned = 0 WHERE pinned = 1 AND id != ?1", &a, err) ||
        stmt_prepare(st, "UPDATE runs SET pinned = ?2 WHERE id = ?1", &b, err))
        goto fail_nolock;
    sqlite3_bind_int64(a, 1, id);
    sqlite3_bind_int64(b, 1, id);
    sqlite3_bind_int(b, 2, pinned ? 1 : 0);
    if (db_begin(st, err)) goto fail_nolock;
    if ((pinned && stmt_step(st, a) != SQLITE_DONE) || stmt_step(st, b) != SQLITE_DONE) {
        db_fail(st, "pinning a run", err);
        goto fail;
    }
    if (!sqlite3_changes(st->db)) {
        no_such_run(st, id, err);
        goto fail;
    }
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    return db_commit(st, err);
fail:
    db_rollback(st);
fail_nolock:
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    return -1;
}

int store_run_delete(store_t *st, int64_t id, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, "DELETE FROM runs WHERE id = ?1", &s, err)) return -1;
    sqlite3_bind_int64(s, 1, id);
    int changes = 0;
    if (write_one(st, s, "deleting a run", &changes, err)) return -1;
    return changes ? 0 : no_such_run(st, id, err);
}

const char stmt_run_columns[] =
    "id, name, spec, method, status, base_model, dataset, created_at, started_at, "
    "finished_at, heartbeat, pid, trainable_params, total_params, r, alpha, targets, "
    "total_steps, step, final_loss, tokens_per_s, peak_rss_mb, error, tags, notes, "
    "sweep_id, pinned, precision, rouge1, rouge2, rougeL, rougeLsum, eval_step, duration, trainable_pct, "
    "pid_start, uuid, spec_hash";

void stmt_read_run(sqlite3_stmt *s, store_run_t *r) {
    memset(r, 0, sizeof *r);
    int i = 0;
    r->id = stmt_col_int(s, i++);
    r->name = stmt_col_str(s, i++);
    r->spec = stmt_col_str(s, i++);
    r->method = stmt_col_str(s, i++);
    r->status = stmt_col_str(s, i++);
    r->base_model = stmt_col_str(s, i++);
    r->dataset = stmt_col_str(s, i++);
    r->created_at = stmt_col_real(s, i++);
    r->started_at = stmt_col_real(s, i++);
    r->finished_at = stmt_col_real(s, i++);
    r->heartbeat = stmt_col_real(s, i++);
    r->pid = stmt_col_int(s, i++);
    r->trainable_params = stmt_col_int(s, i++);
    r->total_params = stmt_col_int(s, i++);
    r->r = stmt_col_int(s, i++);
    r->alpha = stmt_col_real(s, i++);
    r->targets = stmt_col_str(s, i++);
    r->total_steps = stmt_col_int(s, i++);
    r->step = stmt_col_int(s, i++);
    r->final_loss = stmt_col_real(s, i++);
    r->tokens_per_s = stmt_col_real(s, i++);
    r->peak_rss_mb = stmt_col_real(s, i++);
    r->error = stmt_col_str(s, i++);
    r->tags = stmt_col_str(s, i++);
    r->notes = stmt_col_str(s, i++);
    r->sweep_id = stmt_col_int(s, i++);
    if (r->sweep_id < 0) r->sweep_id = 0;
    r->pinned = (int)stmt_col_int(s, i++) == 1;
    r->precision = stmt_col_str(s, i++);
    r->rouge1 = stmt_col_real(s, i++);
    r->rouge2 = stmt_col_real(s, i++);
    r->rougeL = stmt_col_real(s, i++);
    r->rougeLsum = stmt_col_real(s, i++);
    r->eval_step = stmt_col_int(s, i++);
    r->duration = stmt_col_real(s, i++);
    r->trainable_pct = stmt_col_real(s, i++);
    r->pid_start = stmt_col_int(s, i++);
    r->uuid = stmt_col_str(s, i++);
    r->spec_hash = stmt_col_str(s, i++);
}

int store_run_get(store_t *st, int64_t id, store_run_t *run, lb_err_t *err) {
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM runs_view WHERE id = ?1", stmt_run_columns);
    sqlite3_stmt *s;
    memset(run, 0, sizeof *run);
    if (stmt_prepare(st, sql, &s, err)) return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = stmt_step(st, s);
    if (rc == SQLITE_ROW) {
        stmt_read_run(s, run);
        sqlite3_finalize(s);
        return 0;
    }
    if (rc == SQLITE_DONE) no_such_run(st, id, err);
    else db_fail(st, "reading a run", err);
    sqlite3_finalize(s);
    return -1;
}

void store_run_clear(store_run_t *r) {
    if (!r) return;
    free(r->name);
    free(r->spec);
    free(r->method);
    free(r->status);
    free(r->base_model);
    free(r->dataset);
    free(r->targets);
    free(r->error);
    free(r->tags);
    free(r->notes);
    free(r->precision);
    free(r->uuid);
    free(r->spec_hash);
    memset(r, 0, sizeof *r);
}

void store_runs_free(store_run_t *runs, size_t n) {
    for (size_t i = 0; i < n; i++) store_run_clear(&runs[i]);
    free(runs);
}

int store_pid_alive(int64_t pid, void *ctx) {
    (void)ctx;
    if (pid <= 0) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int store_mark_stale_interrupted(store_t *st, double now, double stale_seconds,
                                 store_pid_alive_fn pid_alive, void *ctx, int *n_marked,
                                 lb_err_t *err) {
    if (n_marked) *n_marked = 0;
    if (!pid_alive) pid_alive = store_pid_alive;
    // Find candidates without the write lock: the TUI calls this on every poll, and almost
    // always nothing is stale. A run whose owner is named with its start time is judged at
    // once (store_owner_alive is exact); one with only a pid (made before schema 4) once its
    // heartbeat is stale and the pid is gone.
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT id, pid, heartbeat, status, pid_start, oom_kills, peak_rss_mb, spec FROM runs WHERE "
                     "(status = 'running' AND (pid_start IS NOT NULL OR "
                     "  COALESCE(heartbeat, started_at, created_at) < ?1)) OR "
                     "(status = 'queued' AND pid IS NOT NULL AND pid_start IS NOT NULL)",
                     &s, err))
        return -1;
    sqlite3_bind_double(s, 1, now - stale_seconds);
    size_t n = 0, cap = 0;
    struct cand { int64_t id, pid, start; double hb, rss_mb; int queued, oom, batch; } *c = NULL;
    long oom_now = lb_oom_kills();
    int rc;
    while ((rc = n ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        int64_t pid = stmt_col_int(s, 1);
        int has_start = sqlite3_column_type(s, 4) != SQLITE_NULL;
        store_owner_t o = {pid, has_start ? sqlite3_column_int64(s, 4) : 0};
        if (has_start ? store_owner_alive(&o) : pid > 0 && pid_alive(pid, ctx)) continue;
        if (n == cap) c = xrealloc(c, (cap = cap ? 2 * cap : 8) * sizeof *c);
        c[n].id = stmt_col_int(s, 0);
        c[n].pid = pid;
        c[n].start = has_start ? o.start : -1;
        c[n].hb = stmt_col_real(s, 2);
        const char *status = (const char *)sqlite3_column_text(s, 3);
        c[n].queued = status && !strcmp(status, STORE_STATUS_QUEUED);
        // The kernel's OOM killer acted in this cgroup since the worker started: it is the
        // likeliest end of a worker that vanished without a word.
        c[n].oom = !c[n].queued && sqlite3_column_type(s, 5) != SQLITE_NULL && oom_now >= 0 &&
                   oom_now > sqlite3_column_int64(s, 5);
        c[n].rss_mb = stmt_col_real(s, 6);
        const char *spec = (const char *)sqlite3_column_text(s, 7), *b = spec ? strstr(spec, "\"batch_size\":") : NULL;
        c[n].batch = b ? atoi(b + 13) : 0;
        n++;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(c);
        return db_fail(st, "looking for stale runs", err);
    }
    if (!n) return 0;
    int marked = 0;
    if (stmt_prepare(st,
                     "UPDATE runs SET status = ?8, "
                     " finished_at = COALESCE(heartbeat, started_at, ?3), error = ?4 "
                     "WHERE id = ?1 AND status = ?5 AND heartbeat IS ?2 AND pid IS ?6 "
                     " AND pid_start IS ?7",
                     &s, err)) {
        free(c);
        return -1;
    }
    if (db_begin(st, err)) goto fail_nolock;
    for (size_t i = 0; i < n; i++) {
        char msg[400];
        if (c[i].oom && c[i].batch > 1)
            snprintf(msg, sizeof msg,
                     "out of memory: the kernel's OOM killer ended the worker (pid %lld; its last recorded "
                     "memory %.0f MiB); start it again with train.batch_size %d (half of %d)",
                     (long long)c[i].pid, isnan(c[i].rss_mb) ? 0.0 : c[i].rss_mb, c[i].batch / 2, c[i].batch);
        else if (c[i].oom)
            snprintf(msg, sizeof msg,
                     "out of memory: the kernel's OOM killer ended the worker (pid %lld); shorten "
                     "dataset.max_source_tokens or use a smaller model",
                     (long long)c[i].pid);
        else if (c[i].queued)
            snprintf(msg, sizeof msg,
                     "the process that queued it (pid %lld) ended before starting it; "
                     "'lorabench resume %lld' runs it",
                     (long long)c[i].pid, (long long)c[i].id);
        else if (c[i].pid > 0)
            snprintf(msg, sizeof msg,
                     "the worker (pid %lld) stopped without a final status; "
                     "'lorabench resume %lld' continues from its last checkpoint",
                     (long long)c[i].pid, (long long)c[i].id);
        else
            snprintf(msg, sizeof msg,
                     "the run has no live worker; 'lorabench resume %lld' continues from "
                     "its last checkpoint",
                     (long long)c[i].id);
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, c[i].id);
        stmt_bind_real(s, 2, c[i].hb);  // unchanged since we looked: the worker did not revive
        sqlite3_bind_double(s, 3, now);
        stmt_bind_text(s, 4, msg);
        stmt_bind_text(s, 5, c[i].queued ? STORE_STATUS_QUEUED : STORE_STATUS_RUNNING);
        stmt_bind_int(s, 6, c[i].pid);
        if (c[i].start >= 0) sqlite3_bind_int64(s, 7, c[i].start);
        else sqlite3_bind_null(s, 7);
        stmt_bind_text(s, 8, c[i].oom ? STORE_STATUS_FAILED : STORE_STATUS_INTERRUPTED);
        if (stmt_step(st, s) != SQLITE_DONE) {
            db_fail(st, "marking a stale run interrupted", err);
            db_rollback(st);
            goto fail_nolock;
        }
        marked += sqlite3_changes(st->db);
    }
    sqlite3_finalize(s);
    free(c);
    if (db_commit(st, err)) return -1;
    if (n_marked) *n_marked = marked;
    return 0;
fail_nolock:
    sqlite3_finalize(s);
    free(c);
    return -1;
}

// ---- metrics ---------------------------------------------------------------------------

int store_metrics_insert_batch(store_t *st, int64_t run_id, const store_metric_t *rows,
                               size_t n, lb_err_t *err) {
    if (!n) return 0;
    sqlite3_stmt *ins = NULL, *upd = NULL;
    if (stmt_prepare(st,
                     "INSERT OR REPLACE INTO metrics (run_id, step, epoch, loss, lr, grad_norm, "
                     "tokens_per_s, step_ms, rss_mb, tokens, wall_s) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                     &ins, err) ||
        stmt_prepare(st, "UPDATE runs SET step = MAX(step, ?2), heartbeat = ?3 WHERE id = ?1",
                     &upd, err))
        goto fail_nolock;
    if (db_begin(st, err)) goto fail_nolock;
    int64_t max_step = 0;
    for (size_t i = 0; i < n; i++) {
        const store_metric_t *m = &rows[i];
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, run_id);
        sqlite3_bind_int64(ins, 2, m->step);
        stmt_bind_real(ins, 3, m->epoch);
        stmt_bind_real(ins, 4, m->loss);
        stmt_bind_real(ins, 5, m->lr);
        stmt_bind_real(ins, 6, m->grad_norm);
        stmt_bind_real(ins, 7, m->tokens_per_s);
        stmt_bind_real(ins, 8, m->step_ms);
        stmt_bind_real(ins, 9, m->rss_mb);
        stmt_bind_int(ins, 10, m->tokens);
        stmt_bind_real(ins, 11, m->wall_s);
        int rc = sqlite3_step(ins);
        if (rc != SQLITE_DONE) {
            if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) no_such_run(st, run_id, err);
            else db_fail(st, "writing metrics", err);
            goto fail;
        }
        if (m->step > max_step) max_step = m->step;
    }
    sqlite3_bind_int64(upd, 1, run_id);
    sqlite3_bind_int64(upd, 2, max_step);
    sqlite3_bind_double(upd, 3, store_now());
    if (sqlite3_step(upd) != SQLITE_DONE) {
        db_fail(st, "updating a run's step", err);
        goto fail;
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    return db_commit(st, err);
fail:
    db_rollback(st);
fail_nolock:
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    return -1;
}

int store_metrics_since(store_t *st, int64_t run_id, int64_t after_step,
                        store_metric_t **rows, size_t *n, lb_err_t *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT step, epoch, loss, lr, grad_norm, tokens_per_s, step_ms, rss_mb, "
                     "tokens, wall_s FROM metrics WHERE run_id = ?1 AND step > ?2 ORDER BY step",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, after_step);
    size_t cap = 0, cnt = 0;
    store_metric_t *out = NULL;
    int rc;
    while ((rc = cnt ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        if (cnt == cap) out = xrealloc(out, (cap = cap ? 2 * cap : 64) * sizeof *out);
        store_metric_t *m = &out[cnt++];
        m->step = sqlite3_column_int64(s, 0);
        m->epoch = stmt_col_real(s, 1);
        m->loss = stmt_col_real(s, 2);
        m->lr = stmt_col_real(s, 3);
        m->grad_norm = stmt_col_real(s, 4);
        m->tokens_per_s = stmt_col_real(s, 5);
        m->step_ms = stmt_col_real(s, 6);
        m->rss_mb = stmt_col_real(s, 7);
        m->tokens = stmt_col_int(s, 8);
        m->wall_s = stmt_col_real(s, 9);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(out);
        return db_fail(st, "reading metrics", err);
    }
    *rows = out;
    *n = cnt;
    return 0;
}

int store_metrics_count(store_t *st, int64_t run_id, int64_t *count, lb_err_t *err) {
    sqlite3_stmt *s;
    if (stmt_prepare(st, "SELECT count(*) FROM metrics WHERE run_id = ?1", &s, err)) return -1;
    sqlite3_bind_int64(s, 1, run_id);
    if (stmt_step(st, s) != SQLITE_ROW) {
        db_fail(st, "counting metrics", err);
        sqlite3_finalize(s);
        return -1;
    }
    *count = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return 0;
}

// ---- evaluations -----------------------------------------------------------------------

int store_eval_insert(store_t *st, const store_eval_t *ev, const store_sample_t *samples,
                      size_t n, int64_t *eval_id, lb_err_t *err) {
    sqlite3_stmt *e = NULL, *sm = NULL;
    if (stmt_prepare(st,
                     "INSERT INTO evals (run_id, step, split, n, created_at, seconds, "
                     "rouge1, rouge1_low, rouge1_high, rouge2, rouge2_low, rouge2_high, "
                     "rougeL, rougeL_low, rougeL_high, rougeLsum, rougeLsum_low, rougeLsum_high, "
                     "beams, max_new_tokens, length_penalty) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                     "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                     &e, err) ||
        stmt_prepare(st,
                     "INSERT OR REPLACE INTO samples (eval_id, idx, source, reference, "
                     "prediction, rouge1, rouge2, rougeL) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                     &sm, err))
        goto fail_nolock;
    sqlite3_bind_int64(e, 1, ev->run_id);
    sqlite3_bind_int64(e, 2, ev->step);
    stmt_bind_text(e, 3, ev->split);
    sqlite3_bind_int64(e, 4, ev->n);
    sqlite3_bind_double(e, 5, store_now());
    stmt_bind_real(e, 6, ev->seconds);
    const double v[12] = {ev->rouge1,    ev->rouge1_low,    ev->rouge1_high, ev->rouge2,
                          ev->rouge2_low, ev->rouge2_high,  ev->rougeL,      ev->rougeL_low,
                          ev->rougeL_high, ev->rougeLsum,   ev->rougeLsum_low,
                          ev->rougeLsum_high};
    for (int i = 0; i < 12; i++) stmt_bind_real(e, 7 + i, v[i]);
    stmt_bind_int(e, 19, ev->beams);
    stmt_bind_int(e, 20, ev->max_new_tokens);
    stmt_bind_real(e, 21, ev->length_penalty);
    if (db_begin(st, err)) goto fail_nolock;
    int rc = sqlite3_step(e);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) no_such_run(st, ev->run_id, err);
        else db_fail(st, "writing an evaluation", err);
        goto fail;
    }
    int64_t id = sqlite3_last_insert_rowid(st->db);
    for (size_t i = 0; i < n; i++) {
        const store_sample_t *x = &samples[i];
        sqlite3_reset(sm);
        sqlite3_bind_int64(sm, 1, id);
        sqlite3_bind_int64(sm, 2, x->idx);
        stmt_bind_text(sm, 3, x->source);
        stmt_bind_text(sm, 4, x->reference);
        stmt_bind_text(sm, 5, x->prediction);
        stmt_bind_real(sm, 6, x->rouge1);
        stmt_bind_real(sm, 7, x->rouge2);
        stmt_bind_real(sm, 8, x->rougeL);
        if (sqlite3_step(sm) != SQLITE_DONE) {
            db_fail(st, "writing samples", err);
            goto fail;
        }
    }
    sqlite3_finalize(e);
    sqlite3_finalize(sm);
    if (db_commit(st, err)) return -1;
    if (eval_id) *eval_id = id;
    return 0;
fail:
    db_rollback(st);
fail_nolock:
    sqlite3_finalize(e);
    sqlite3_finalize(sm);
    return -1;
}

int store_evals_list(store_t *st, int64_t run_id, store_eval_t **evals, size_t *n,
                     lb_err_t *err) {
    *evals = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT id, run_id, step, split, n, created_at, seconds, "
                     "rouge1, rouge1_low, rouge1_high, rouge2, rouge2_low, rouge2_high, "
                     "rougeL, rougeL_low, rougeL_high, rougeLsum, rougeLsum_low, rougeLsum_high, "
                     "beams, max_new_tokens, length_penalty FROM evals WHERE run_id = ?1 "
                     "ORDER BY step, id",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, run_id);
    size_t cap = 0, cnt = 0;
    store_eval_t *out = NULL;
    int rc;
    while ((rc = cnt ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        if (cnt == cap) out = xrealloc(out, (cap = cap ? 2 * cap : 8) * sizeof *out);
        store_eval_t *e = &out[cnt++];
        memset(e, 0, sizeof *e);
        e->id = sqlite3_column_int64(s, 0);
        e->run_id = sqlite3_column_int64(s, 1);
        e->step = sqlite3_column_int64(s, 2);
        const char *split = (const char *)sqlite3_column_text(s, 3);
        snprintf(e->split, sizeof e->split, "%s", split ? split : "");
        e->n = sqlite3_column_int64(s, 4);
        e->created_at = stmt_col_real(s, 5);
        e->seconds = stmt_col_real(s, 6);
        double *dst[12] = {&e->rouge1,    &e->rouge1_low,    &e->rouge1_high,
                           &e->rouge2,    &e->rouge2_low,    &e->rouge2_high,
                           &e->rougeL,    &e->rougeL_low,    &e->rougeL_high,
                           &e->rougeLsum, &e->rougeLsum_low, &e->rougeLsum_high};
        for (int i = 0; i < 12; i++) *dst[i] = stmt_col_real(s, 7 + i);
        e->beams = stmt_col_int(s, 19);
        e->max_new_tokens = stmt_col_int(s, 20);
        e->length_penalty = stmt_col_real(s, 21);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(out);
        return db_fail(st, "reading evaluations", err);
    }
    *evals = out;
    *n = cnt;
    return 0;
}

int store_samples_list(store_t *st, int64_t eval_id, int64_t offset, int64_t limit,
                       store_sample_row_t **rows, size_t *n, lb_err_t *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT eval_id, idx, source, reference, prediction, rouge1, rouge2, rougeL "
                     "FROM samples WHERE eval_id = ?1 ORDER BY idx LIMIT ?3 OFFSET ?2",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, eval_id);
    sqlite3_bind_int64(s, 2, offset > 0 ? offset : 0);
    sqlite3_bind_int64(s, 3, limit < 0 ? -1 : limit);
    size_t cap = 0, cnt = 0;
    store_sample_row_t *out = NULL;
    int rc;
    while ((rc = cnt ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        if (cnt == cap) out = xrealloc(out, (cap = cap ? 2 * cap : 16) * sizeof *out);
        store_sample_row_t *x = &out[cnt++];
        x->eval_id = sqlite3_column_int64(s, 0);
        x->idx = sqlite3_column_int64(s, 1);
        x->source = stmt_col_str(s, 2);
        x->reference = stmt_col_str(s, 3);
        x->prediction = stmt_col_str(s, 4);
        x->rouge1 = stmt_col_real(s, 5);
        x->rouge2 = stmt_col_real(s, 6);
        x->rougeL = stmt_col_real(s, 7);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        store_samples_free(out, cnt);
        return db_fail(st, "reading samples", err);
    }
    *rows = out;
    *n = cnt;
    return 0;
}

void store_samples_free(store_sample_row_t *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(rows[i].source);
        free(rows[i].reference);
        free(rows[i].prediction);
    }
    free(rows);
}

// ---- artifacts and sweeps --------------------------------------------------------------

int store_artifact_add(store_t *st, int64_t run_id, const char *kind, const char *path,
                       int64_t bytes, const char *sha256, int64_t step, lb_err_t *err) {
    if (!kind || !path)
        return lb_err_set(err, LB_EARG, "store_artifact_add: an artifact needs a kind and a path");
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "INSERT INTO artifacts (run_id, kind, path, bytes, sha256, step, created_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, path) DO UPDATE "
                     "SET kind = excluded.kind, bytes = excluded.bytes, sha256 = excluded.sha256, "
                     "step = excluded.step, created_at = excluded.created_at",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, run_id);
    stmt_bind_text(s, 2, kind);
    stmt_bind_text(s, 3, path);
    stmt_bind_int(s, 4, bytes);
    stmt_bind_text(s, 5, sha256);
    stmt_bind_int(s, 6, step);
    sqlite3_bind_double(s, 7, store_now());
    if (db_begin(st, err)) {
        sqlite3_finalize(s);
        return -1;
    }
    int rc = stmt_step(st, s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) no_such_run(st, run_id, err);
        else db_fail(st, "recording an artifact", err);
        db_rollback(st);
        return -1;
    }
    return db_commit(st, err);
}

int store_artifacts_list(store_t *st, int64_t run_id, const char *kind,
                         store_artifact_t **rows, size_t *n, lb_err_t *err) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (stmt_prepare(st,
                     "SELECT id, run_id, kind, path, sha256, bytes, step, created_at FROM artifacts "
                     "WHERE run_id = ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY created_at, id",
                     &s, err))
        return -1;
    sqlite3_bind_int64(s, 1, run_id);
    stmt_bind_text(s, 2, kind);
    size_t cap = 0, cnt = 0;
    store_artifact_t *out = NULL;
    int rc;
    while ((rc = cnt ? sqlite3_step(s) : stmt_step(st, s)) == SQLITE_ROW) {
        if (cnt == cap) out = xrealloc(out, (cap = cap ? 2 * cap : 8) * sizeof *out);
        store_artifact_t *a = &out[cnt++];
        a->id = sqlite3_column_int64(s, 0);
        a->run_id = sqlite3_column_int64(s, 1);
        a->kind = stmt_col_str(s, 2);
        a->path = stmt_col_str(s, 3);
        a->sha256 = stmt_col_str(s, 4);
        a->bytes = stmt_col_int(s, 5);
        a->step = stmt_col_int(s, 6);
        a->created_at = stmt_col_real(s, 7);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        store_artifacts_free(out, cnt);
        return db_fail(st, "reading artifacts", err);
    }
    *rows = out;
    *n = cnt;
    return 0;
}

void store_artifacts_free(store_artifact_t *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(rows[i].kind);
        free(rows[i].path);
        free(rows[i].sha256);
    }
    free(rows);
}

int store_sweep_create(store_t *st, const char *name, const char *spec, int64_t *id,
                       lb_err_t *err) {
    if (!name || !spec)
        return lb_err_set(err, LB_EARG, "store_sweep_create: a sweep needs a name and a spec");
    sqlite3_stmt *s;
    if (stmt_prepare(st, "INSERT INTO sweeps (name, spec, created_at) VALUES (?1, ?2, ?3)", &s,
                     err))
        return -1;
    stmt_bind_text(s, 1, name);
    stmt_bind_text(s, 2, spec);
    sqlite3_bind_double(s, 3, store_now());
    if (db_begin(st, err)) {
        sqlite3_finalize(s);
        return -1;
    }
    if (stmt_step(st, s) != SQLITE_DONE) {
        db_fail(st, "creating a sweep", err);
        sqlite3_finalize(s);
        db_rollback(st);
        return -1;
    }
    sqlite3_finalize(s);
    int64_t new_id = sqlite3_last_insert_rowid(st->db);
    if (db_commit(st, err)) return -1;
    *id = new_id;
    return 0;
}
