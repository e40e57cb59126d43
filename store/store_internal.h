// Helpers shared by the store's source files (not part of the public API).
#ifndef LB_STORE_INTERNAL_H
#define LB_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

struct store {
    sqlite3 *db;
    char *path;  // for messages
    int busy_ms;  // busy_timeout: how long a call waits for another process's lock
};

// Prepares sql; on failure fills err naming the database file.
int st_prepare(store_t *st, const char *sql, sqlite3_stmt **stmt, lb_err_t *err);

// sqlite3_step that retries an SQLITE_BUSY returned without waiting, within busy_timeout
// (only valid for a statement that has not returned a row yet).
int st_step(store_t *st, sqlite3_stmt *stmt);

// Fills err from the connection's last error, naming the file and what was being done.
int st_fail(store_t *st, const char *what, lb_err_t *err);

// BEGIN IMMEDIATE with retries / COMMIT with retries / ROLLBACK (never fails loudly).
int st_begin(store_t *st, lb_err_t *err);
int st_commit(store_t *st, lb_err_t *err);
void st_rollback(store_t *st);

// Binding helpers: NULL string, NAN real, negative integer bind SQL NULL.
void st_bind_text(sqlite3_stmt *s, int i, const char *v);
void st_bind_real(sqlite3_stmt *s, int i, double v);
void st_bind_int(sqlite3_stmt *s, int i, int64_t v);  // v < 0 -> NULL

// Column helpers: SQL NULL reads as NAN / -1 / NULL.
double st_col_real(sqlite3_stmt *s, int i);
int64_t st_col_int(sqlite3_stmt *s, int i);
char *st_col_str(sqlite3_stmt *s, int i);  // malloc'd or NULL

// The column list read by st_read_run (from runs_view), and the reader.
extern const char st_run_columns[];
void st_read_run(sqlite3_stmt *s, store_run_t *run);

#endif
