#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int lb_err_set(lb_err_t *err, int code, const char *fmt, ...) {
    if (!err) return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void die_oom(size_t n) {
    fprintf(stderr, "lorabench: out of memory allocating %zu bytes; use a smaller batch or model\n", n);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die_oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die_oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die_oom(n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *lb_read_file(const char *path, size_t *len, lb_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lb_err_set(err, LB_EIO, "cannot open %s: %s; check the path", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        lb_err_set(err, LB_EIO, "cannot read %s; check that it is a readable file", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

struct lb_afile {
    char *path, *tmp;
    int fd;
};

static void afile_drop(lb_afile_t *f) {
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    free(f);
}

// err for a failed write or sync of f (errno e); f is dropped.
static int afile_fail(lb_afile_t *f, int e, lb_err_t *err) {
    if (e == ENOSPC || e == EFBIG || e == EDQUOT)
        lb_err_set(err, LB_ENOSPC, "no space left writing %s; free some disk space and retry", f->path);
    else
        lb_err_set(err, LB_EIO, "cannot write %s: %s", f->path, strerror(e));
    afile_drop(f);
    return -1;
}

lb_afile_t *lb_afile_open(const char *path, lb_err_t *err) {
    size_t plen = strlen(path);
    lb_afile_t *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    f->tmp = xmalloc(plen + 32);
    snprintf(f->tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        int e = errno;
        lb_err_set(err, e == ENOSPC ? LB_ENOSPC : LB_EIO, "cannot create %s: %s", f->tmp,
                   e == ENOSPC ? "no space left on device; free some disk space" : strerror(e));
        free(f->tmp);
        free(f->path);
        free(f);
        return NULL;
    }
    return f;
}

int lb_afile_write(lb_afile_t *f, const void *data, size_t len, lb_err_t *err) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return afile_fail(f, w < 0 ? errno : ENOSPC, err);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int lb_afile_commit(lb_afile_t *f, lb_err_t *err) {
    if (fsync(f->fd) != 0) return afile_fail(f, errno, err);
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) return afile_fail(f, errno, err);
    if (rename(f->tmp, f->path) != 0) {
        int e = errno;
        lb_err_set(err, LB_EIO, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(e));
        afile_drop(f);
        return -1;
    }
    free(f->tmp);
    free(f->path);
    free(f);
    return 0;
}

void lb_afile_abort(lb_afile_t *f) {
    if (f) afile_drop(f);
}

int lb_write_file_atomic(const char *path, const void *data, size_t len, lb_err_t *err) {
    lb_afile_t *f = lb_afile_open(path, err);
    if (!f || lb_afile_write(f, data, len, err)) return -1;
    return lb_afile_commit(f, err);
}

uint64_t lb_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double lb_rng_uniform(uint64_t *s) { return (double)(lb_rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

double lb_rng_normal(uint64_t *s) {
    // u1 in (0, 1): never log(0).
    double u1 = ((double)(lb_rng_next(s) >> 11) + 0.5) / 9007199254740992.0, u2 = lb_rng_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void lb_sort_doubles(double *v, size_t n) { qsort(v, n, sizeof *v, cmp_double); }

double lb_median(double *v, size_t n) {
    lb_sort_doubles(v, n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double lb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t lb_peak_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

size_t lb_current_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, rss = 0;
    int ok = f && fscanf(f, "%lu %lu", &pages, &rss) == 2;
    if (f) fclose(f);
    return ok ? (size_t)rss * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

// The first number in a file (a cgroup's "max" reads as no limit: 0 with *unlimited).
static int read_number_file(const char *path, unsigned long long *v) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = "";
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    if (!strncmp(buf, "max", 3)) return 1;
    char *end;
    *v = strtoull(buf, &end, 10);
    return end == buf ? -1 : 0;
}

// This process's cgroup folder for the memory controller, into dir: v2 (the "0::" line)
// or v1 (the "memory" line); falls back to the mount's root (a container's own cgroup).
static int cgroup_dir(char *dir, size_t cap, int *v2) {  // dir: at least 600 bytes
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[400], rel[512] = "";
    int have_v1 = 0, have_v2 = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "0::", 3)) snprintf(rel, sizeof rel, "%s", line + 3), have_v2 = 1;
        char *m = strstr(line, ":memory:");
        if (m) snprintf(rel, sizeof rel, "%s", m + 8), have_v1 = 1;
    }
    if (f) fclose(f);
    struct stat sb;
    const char *const tries[][2] = {{"/sys/fs/cgroup", "memory.max"}, {"/sys/fs/cgroup/memory", "memory.limit_in_bytes"}};
    for (int k = have_v1 ? 1 : 0; k < 2; k++) {
        if (k == 0 && !have_v2) continue;
        char p[1200];
        snprintf(p, sizeof p, "%s%s/%s", tries[k][0], rel, tries[k][1]);
        if (stat(p, &sb) == 0) {
            snprintf(dir, cap, "%s%s", tries[k][0], rel);
            *v2 = k == 0;
            return 0;
        }
        snprintf(p, sizeof p, "%s/%s", tries[k][0], tries[k][1]);
        if (stat(p, &sb) == 0) {
            snprintf(dir, cap, "%s", tries[k][0]);
            *v2 = k == 0;
            return 0;
        }
    }
    return -1;
}

size_t lb_mem_available(char *what, size_t cap) {
    size_t avail = 0;
    int known = 0;
    if (what && cap) what[0] = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long kb;
        if (sscanf(line, "MemAvailable: %lu kB", &kb) == 1) {
            avail = (size_t)kb * 1024;
            known = 1;
            if (what && cap) snprintf(what, cap, "MemAvailable in /proc/meminfo");
        }
    }
    if (f) fclose(f);
    char dir[600];
    int v2 = 0;
    if (cgroup_dir(dir, sizeof dir, &v2) == 0) {
        char path[700], used_path[700];
        unsigned long long limit = 0, used = 0;
        snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
        snprintf(used_path, sizeof used_path, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
        // v1 writes "no limit" as a huge number (a page-rounded LONG_MAX)
        if (read_number_file(path, &limit) == 0 && limit < (1ull << 60) && read_number_file(used_path, &used) == 0) {
            size_t room = limit > used ? (size_t)(limit - used) : 0;
            if (!known || room < avail) {
                avail = room;
                if (what && cap) snprintf(what, cap, "the limit in %s", path);
            }
        }
    }
    return avail;
}

long lb_oom_kills(void) {
    char dir[600], path[700], line[256];
    int v2 = 0;
    if (cgroup_dir(dir, sizeof dir, &v2)) return -1;
    snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.events" : "memory.oom_control");
    FILE *f = fopen(path, "r");
    long n = -1;
    while (f && fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "oom_kill %ld", &v) == 1) n = v;
    }
    if (f) fclose(f);
    return n;
}
