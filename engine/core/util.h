// Small shared helpers of the engine: errors that carry a message, allocation
// wrappers that never return NULL, and file reading. Every library function that
// can fail takes an lb_err_t* and returns 0 on success, -1 on failure, with one
// clear sentence in err->msg naming the thing that failed and the fix.
#ifndef LB_UTIL_H
#define LB_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int code;        // 0 = no error; otherwise an LB_E* value
    char msg[1024];  // one sentence, naming the file/field and what to do
} lb_err_t;

// The engine's numeric type: float in the library. Tests compile a second copy of the
// engine's numeric files with LB_REAL_DOUBLE defined to check gradients by finite
// differences in double precision; nothing else ever changes it.
#ifdef LB_REAL_DOUBLE
typedef double lb_real;
#else
typedef float lb_real;
#endif

enum { LB_OK = 0, LB_EIO = 1, LB_EFORMAT = 2, LB_ESHAPE = 3, LB_EARG = 4, LB_ENOMEM = 5,
       LB_ENAN = 6, LB_ENOSPC = 7, LB_ESTOPPED = 8 /* stopped on request (cancel, SIGTERM) */ };

// Fills err (if not NULL) with a code and a printf-style message; returns -1.
int lb_err_set(lb_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Allocation that aborts with a message on out-of-memory instead of returning NULL.
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

// Reads a whole file into a NUL-terminated buffer; *len gets its size (without NUL).
// Returns NULL and sets err on failure.
char *lb_read_file(const char *path, size_t *len, lb_err_t *err);

// Writes a buffer to path atomically: a temporary file beside it, fsync, rename.
// A full disk gives LB_ENOSPC with "no space left" and the path in the message.
int lb_write_file_atomic(const char *path, const void *data, size_t len, lb_err_t *err);

// The same written piece by piece, for files too large to assemble in memory first (a
// checkpoint holds three copies of a full fine-tune's parameters): lb_afile_open makes the
// temporary file, lb_afile_write appends, lb_afile_commit fsyncs and renames it to path.
// A failed write or commit removes the temporary file and frees f (do not call on with
// it); lb_afile_abort drops an unfinished file.
typedef struct lb_afile lb_afile_t;
lb_afile_t *lb_afile_open(const char *path, lb_err_t *err);
int lb_afile_write(lb_afile_t *f, const void *data, size_t len, lb_err_t *err);
int lb_afile_commit(lb_afile_t *f, lb_err_t *err);
void lb_afile_abort(lb_afile_t *f);

// splitmix64 (Steele, Lea, Flood 2014): the engine's one random generator; the state is
// the caller's, so nothing random is global. lb_rng_uniform is in [0, 1), lb_rng_normal
// is N(0, 1) by Box-Muller.
uint64_t lb_rng_next(uint64_t *state);
double lb_rng_uniform(uint64_t *state);
double lb_rng_normal(uint64_t *state);

// Sorts v ascending in place; lb_median sorts it and returns the middle value (the mean
// of the two middle ones for even n). Timings and bootstrap percentiles use them.
void lb_sort_doubles(double *v, size_t n);
double lb_median(double *v, size_t n);

// Monotonic time in seconds.
double lb_now(void);

// Peak resident set size of this process in bytes (from getrusage).
size_t lb_peak_rss(void);

// Resident memory of this process now (/proc/self/statm; 0 when unknown).
size_t lb_current_rss(void);

// Bytes this process may still take: the smaller of MemAvailable (/proc/meminfo) and the
// room left under its cgroup's memory limit (v2 memory.max - memory.current, or v1
// memory.limit_in_bytes - memory.usage_in_bytes). what (may be NULL; cap bytes) gets the
// name of the one that binds. 0 when neither can be read.
size_t lb_mem_available(char *what, size_t cap);

// How many processes of this cgroup the kernel's OOM killer has killed so far (cgroup v2
// memory.events oom_kill, v1 memory.oom_control oom_kill); -1 when unknown.
long lb_oom_kills(void);

// bfloat16 (the top half of a float32): the value of one, exactly.
static inline float lb_bf16_to_f32(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

// float32 to bfloat16, rounded to nearest, ties to even (as PyTorch's .to(bfloat16));
// a NaN stays a NaN (quiet).
static inline uint16_t lb_f32_to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    b += 0x7fffu + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

#endif
