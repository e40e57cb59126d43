// The workspace folder: where lorabench.db and runs/<id>/ live.
#include "store.h"

#include <errno.h>
#include <ftw.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = xmalloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

// mkdir -p: creates each missing component of path.
static int make_dirs(const char *path, lb_err_t *err) {
    char *p = xstrdup(path);
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c) continue;
        char saved = *c;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            lb_err_set(err, errno == ENOSPC ? LB_ENOSPC : LB_EIO,
                       "cannot create the folder %s: %s; pick another --workspace", p,
                       strerror(errno));
            free(p);
            return -1;
        }
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            lb_err_set(err, LB_EIO, "%s exists but is not a folder; pick another --workspace",
                       p);
            free(p);
            return -1;
        }
        *c = saved;
        if (!saved) break;
    }
    free(p);
    return 0;
}

// The workspace's path (see store_workspace_resolve), without a trailing slash; nothing is
// created.
static int workspace_path(const char *dir, char **out, lb_err_t *err) {
    *out = NULL;
    char *ws;
    if (dir && *dir) {
        ws = xstrdup(dir);
    } else if (getenv("LORABENCH_HOME") && *getenv("LORABENCH_HOME")) {
        ws = xstrdup(getenv("LORABENCH_HOME"));
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
            return lb_err_set(err, LB_EARG,
                              "cannot find a home folder for the workspace; give --workspace DIR "
                              "or set LORABENCH_HOME");
        ws = join(home, ".local/share/lorabench");
    }
    size_t n = strlen(ws);
    while (n > 1 && ws[n - 1] == '/') ws[--n] = 0;
    *out = ws;
    return 0;
}

int store_workspace_resolve(const char *dir, char **out, lb_err_t *err) {
    char *ws;
    if (workspace_path(dir, &ws, err)) return -1;
    char *runs = join(ws, "runs");
    int rc = make_dirs(runs, err);
    free(runs);
    if (rc) {
        free(ws);
        return -1;
    }
    *out = ws;
    return 0;
}

char *store_workspace_db_path(const char *workspace) { return join(workspace, "lorabench.db"); }

int store_workspace_find(const char *dir, char **out, lb_err_t *err) {
    char *ws;
    if (workspace_path(dir, &ws, err)) return -1;
    char *db = store_workspace_db_path(ws);
    struct stat sb;
    int found = stat(db, &sb) == 0 && S_ISREG(sb.st_mode);
    free(db);
    if (!found) {
        lb_err_set(err, LB_EIO,
                   "no workspace at %s (it has no lorabench.db); check --workspace (or "
                   "LORABENCH_HOME), or create one by starting a run there: lorabench train SPEC.json "
                   "--workspace %s",
                   ws, ws);
        free(ws);
        return -1;
    }
    *out = ws;
    return 0;
}

static char *run_dir_path(const char *workspace, int64_t run_id) {
    size_t n = strlen(workspace) + 48;
    char *s = xmalloc(n);
    snprintf(s, n, "%s/runs/%lld", workspace, (long long)run_id);
    return s;
}

int store_run_dir(const char *workspace, int64_t run_id, int create, char **out,
                  lb_err_t *err) {
    *out = NULL;
    if (run_id <= 0) return lb_err_set(err, LB_EARG, "invalid run id %lld", (long long)run_id);
    char *p = run_dir_path(workspace, run_id);
    if (create && make_dirs(p, err)) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int store_run_dir_remove(const char *workspace, int64_t run_id, lb_err_t *err) {
    if (run_id <= 0) return lb_err_set(err, LB_EARG, "invalid run id %lld", (long long)run_id);
    char *p = run_dir_path(workspace, run_id);
    struct stat sb;
    if (lstat(p, &sb) != 0) {
        free(p);
        return 0;
    }
    // FTW_DEPTH: children before their folder; FTW_PHYS: never follow links out of it.
    if (nftw(p, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        lb_err_set(err, LB_EIO, "cannot remove the run folder %s: %s; remove it by hand", p,
                   strerror(errno));
        free(p);
        return -1;
    }
    free(p);
    return 0;
}
