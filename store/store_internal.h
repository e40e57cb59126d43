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
int stmt_prepare(store_t *st, const char *sql, sqlite3_stmt **stmt, lb_err_t *err);

// sqlite3_step that retries an SQLITE_BUSY returned without waiting, within busy_timeout
// (only valid for a statement that has not returned a row yet).
int stmt_step(store_t *st, sqlite3_stmt *stmt);

// Fills err from the connection's last error, naming the file and what was being done.
int db_fail(store_t *st, const char *what, lb_err_t *err);

// BEGIN IMMEDIATE (waiting for the write lock, with retries) / COMMIT with retries (rolls
// back when it fails) / ROLLBACK when a transaction is open.
int db_begin(store_t *st, lb_err_t *err);
int db_commit(store_t *st, lb_err_t *err);
void db_rollback(store_t *st);

// Binding helpers: NULL string, NAN real, negative integer bind SQL NULL; the column readers
// give NAN, -1 and NULL for SQL NULL (strings malloc'd).
void stmt_bind_text(sqlite3_stmt *s, int i, const char *v);
void stmt_bind_real(sqlite3_stmt *s, int i, double v);
void stmt_bind_int(sqlite3_stmt *s, int i, int64_t v);
double stmt_col_real(sqlite3_stmt *s, int i);
int64_t stmt_col_int(sqlite3_stmt *s, int i);
char *stmt_col_str(sqlite3_stmt *s, int i);

// The column list read by stmt_read_run (from runs_view), and the reader.
extern const char stmt_run_columns[];
void stmt_read_run(sqlite3_stmt *s, store_run_t *run);

// Removes path and everything below it, never following a symbolic link out of it (a link is
// removed itself); a missing path is fine. 0, or -1 with err naming the folder.
int store_remove_tree(const char *path, lb_err_t *err);

#endif
