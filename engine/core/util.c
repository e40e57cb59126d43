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

int lb_write_file_atomic(const char *path, const void *data, size_t len, lb_err_t *err) {
    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 32);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        lb_err_set(err, e == ENOSPC ? LB_ENOSPC : LB_EIO, "cannot create %s: %s", tmp,
                   e == ENOSPC ? "no space left on device; free some disk space" : strerror(e));
        free(tmp);
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp);
            if (e == ENOSPC || e == EFBIG || e == EDQUOT)
                lb_err_set(err, LB_ENOSPC, "no space left writing %s; free some disk space and retry", path);
            else
                lb_err_set(err, LB_EIO, "cannot write %s: %s", path, strerror(e));
            free(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == ENOSPC || e == EDQUOT)
            lb_err_set(err, LB_ENOSPC, "no space left writing %s; free some disk space and retry", path);
        else
            lb_err_set(err, LB_EIO, "cannot write %s: %s", path, strerror(e));
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        lb_err_set(err, LB_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
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
