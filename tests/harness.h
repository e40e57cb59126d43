// A small test harness: each tests/test_*.c is one program whose main() calls
// RUN(test_fn) for each test and ends with TH_DONE(). A test fails when any EXPECT in it
// fails; every program prints "N passed, N failed" last, and tests/run.sh sums them.
#ifndef LB_HARNESS_H
#define LB_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int th_passed, th_failed, th_expect_failed;

#define EXPECT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            th_expect_failed++;                                                       \
            fprintf(stderr, "    %s:%d: expected %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                             \
    } while (0)

#define EXPECTF(cond, ...)                                                            \
    do {                                                                              \
        if (!(cond)) {                                                                \
            th_expect_failed++;                                                       \
            fprintf(stderr, "    %s:%d: expected %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

#define RUN(fn)                                                                       \
    do {                                                                              \
        int th_before_ = th_expect_failed;                                            \
        fn();                                                                         \
        if (th_expect_failed == th_before_) {                                         \
            th_passed++;                                                              \
            printf("ok   %s\n", #fn);                                                 \
        } else {                                                                      \
            th_failed++;                                                              \
            printf("FAIL %s\n", #fn);                                                 \
        }                                                                             \
        fflush(stdout);                                                               \
    } while (0)

#define TH_DONE()                                                                     \
    do {                                                                              \
        printf("%d passed, %d failed\n", th_passed, th_failed);                       \
        return th_failed ? 1 : 0;                                                     \
    } while (0)

// max |a - b| / max |b|: the relative error used against reference tensors.
static inline double th_rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md || d != d) md = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > mb) mb = fabs((double)b[i]);
    }
    return mb > 0 ? md / mb : md;
}

// Relative error with a report of the first values on failure.
#define EXPECT_CLOSE(name, a, b, n, tol)                                              \
    do {                                                                              \
        double th_e_ = th_rel_err((a), (b), (n));                                     \
        if (!(th_e_ <= (tol))) {                                                      \
            th_expect_failed++;                                                       \
            fprintf(stderr, "    %s:%d: %s: rel err %.3g > %.3g (ours %g %g, ref %g %g)\n", \
                    __FILE__, __LINE__, (name), th_e_, (double)(tol), (double)(a)[0], \
                    (double)((n) > 1 ? (a)[1] : 0), (double)(b)[0],                   \
                    (double)((n) > 1 ? (b)[1] : 0));                                  \
        }                                                                             \
    } while (0)

#endif
