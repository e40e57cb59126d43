// The workspace folder: where lorabench.db and runs/<id>/ live.
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

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

int store_remove_tree(const char *path, lb_err_t *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return 0;
    // FTW_DEPTH: children before their folder; FTW_PHYS: never follow links out of it.
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return lb_err_set(err, LB_EIO, "cannot remove the folder %s: %s; remove it by hand", path, strerror(errno));
    return 0;
}

int store_run_dir_remove(const char *workspace, int64_t run_id, lb_err_t *err) {
    if (run_id <= 0) return lb_err_set(err, LB_EARG, "invalid run id %lld", (long long)run_id);
    char *p = run_dir_path(workspace, run_id);
    int rc = store_remove_tree(p, err);
    free(p);
    return rc;
}

int64_t store_run_dir_max_id(const char *workspace) {
    char *runs = join(workspace, "runs");
    DIR *d = opendir(runs);
    free(runs);
    if (!d) return 0;
    int64_t max = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *c = e->d_name;
        while (*c >= '0' && *c <= '9') c++;
        if (c == e->d_name || *c || c - e->d_name > 18) continue;
        int64_t v = strtoll(e->d_name, NULL, 10);
        if (v > max) max = v;
    }
    closedir(d);
    return max;
}

// The RUN stamp's text for a run.
static void stamp_text(char *out, size_t cap, int64_t run_id, const char *uuid, const char *spec_hash) {
    snprintf(out, cap, "{\"run\": %lld, \"uuid\": \"%s\", \"spec_hash\": \"%s\"}\n", (long long)run_id, uuid,
             spec_hash ? spec_hash : "");
}

static int write_stamp(const char *dir, int64_t run_id, const char *uuid, const char *spec_hash,
                       lb_err_t *err) {
    char *path = join(dir, "RUN");
    char text[512];
    stamp_text(text, sizeof text, run_id, uuid, spec_hash);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    size_t len = strlen(text);
    int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;
    int e = errno;
    if (fd >= 0) close(fd);
    if (!ok) {
        lb_err_set(err, e == ENOSPC ? LB_ENOSPC : LB_EIO, "cannot write %s: %s; check the workspace's disk", path,
                   strerror(e));
        if (fd >= 0) unlink(path);
    }
    free(path);
    return ok ? 0 : -1;
}

int store_run_dir_stamp(const char *workspace, int64_t run_id, const char *uuid,
                        const char *spec_hash, lb_err_t *err) {
    char *runs = join(workspace, "runs");
    int rc = make_dirs(runs, err);
    free(runs);
    if (rc) return -1;
    char *p = run_dir_path(workspace, run_id);
    if (mkdir(p, 0755) != 0) {
        if (errno == EEXIST)
            lb_err_set(err, LB_EIO,
                       "the folder %s already exists and belongs to no run in this database (a restored "
                       "or moved database?); move it away and try again",
                       p);
        else
            lb_err_set(err, errno == ENOSPC ? LB_ENOSPC : LB_EIO, "cannot create the folder %s: %s", p,
                       strerror(errno));
        free(p);
        return -1;
    }
    rc = write_stamp(p, run_id, uuid, spec_hash, err);
    if (rc) rmdir(p);
    free(p);
    return rc;
}

int store_run_dir_check(const char *workspace, int64_t run_id, const char *uuid,
                        const char *spec_hash, lb_err_t *err) {
    if (!uuid) return 0;
    char *p = run_dir_path(workspace, run_id);
    char *stamp = join(p, "RUN");
    int rc = -1;
    char text[512] = "";
    FILE *f = fopen(stamp, "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = 0;
        fclose(f);
        char want[128];
        snprintf(want, sizeof want, "\"uuid\": \"%s\"", uuid);
        if (strstr(text, want)) rc = 0;
        else
            lb_err_set(err, LB_EARG,
                       "%s belongs to another run (its RUN stamp is not run %lld's, uuid %s; a restored "
                       "or moved database?); move the folder away (e.g. mv %s %s.old) and resume again",
                       p, (long long)run_id, uuid, p, p);
        goto out;
    }
    if (errno != ENOENT) {
        lb_err_set(err, LB_EIO, "cannot read %s: %s; check the workspace's permissions", stamp, strerror(errno));
        goto out;
    }
    // No stamp: a missing or empty folder (only the log the spawner opened) becomes this
    // run's; anything else is some other run's files.
    DIR *d = opendir(p);
    int foreign = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "worker.log")) foreign = 1;
        closedir(d);
    } else if (errno != ENOENT) {
        lb_err_set(err, LB_EIO, "cannot read the folder %s: %s", p, strerror(errno));
        goto out;
    } else if (make_dirs(p, err)) {
        goto out;
    }
    if (foreign) {
        lb_err_set(err, LB_EARG,
                   "%s holds files but no RUN stamp of run %lld (another run's folder, from a restored or "
                   "moved database?); move the folder away (e.g. mv %s %s.old) and resume again",
                   p, (long long)run_id, p, p);
        goto out;
    }
    rc = write_stamp(p, run_id, uuid, spec_hash, err);
out:
    free(stamp);
    free(p);
    return rc;
}
