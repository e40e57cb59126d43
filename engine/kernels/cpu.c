#include "cpu.h"

#include "gemm_f32.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

// Since Linux 5.16 a process must ask for the AMX tile data state before touching tiles
// (else SIGILL): the kernel enlarges its signal frames only for processes that asked.
static int amx_permission(void) {
    unsigned long long bits = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bits) == 0 && (bits & (1ull << XFEATURE_XTILEDATA)))
        return 1;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 0;
    bits = 0;
    return syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bits) == 0 &&
           (bits & (1ull << XFEATURE_XTILEDATA)) != 0;
}

void lb_cpu_detect(lb_cpu_t *c) {
    memset(c, 0, sizeof *c);
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return;
    int osxsave = (cx >> 27) & 1, fma = (cx >> 12) & 1;
    if (!osxsave) return;
    unsigned long long xcr0 = xgetbv0();
    int ymm = (xcr0 & 0x6) == 0x6;                 // SSE and AVX state
    int zmm = ymm && (xcr0 & 0xe0) == 0xe0;        // opmask, ZMM_Hi256, Hi16_ZMM
    int tiles = (xcr0 & 0x60000) == 0x60000;       // XTILECFG, XTILEDATA
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, cx, d);
    c->avx2 = ymm && fma && ((b >> 5) & 1);
    c->avx512f = zmm && ((b >> 16) & 1);
    c->amx_tile = tiles && ((d >> 24) & 1);
    c->amx_bf16 = c->amx_tile && ((d >> 22) & 1);
    unsigned max_sub = a;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, cx, d);
        c->avx512_bf16 = c->avx512f && ((a >> 5) & 1);
    }
    if (c->amx_tile) c->amx_perm = amx_permission();
}

// One thread of lb_cpu_amx_ceiling: four independent 16x16 accumulators, the A and B tiles
// loaded once, TDPBF16PS in a loop; its GFLOP/s into *arg.
#define LB_AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

LB_AMX_TARGET static void *amx_resident(void *arg) {
    double *gflops = arg;
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;  // 16 rows of 64 bytes: 16 fp32, or 16 pairs of bf16
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    uint16_t a[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) a[i] = (uint16_t)(0x3f80 + (i & 7));  // 1.0 to 1.05
    _tile_loadd(4, a, 64);
    _tile_loadd(5, a, 64);
    _tile_loadd(6, a, 64);
    _tile_loadd(7, a, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const long iters = 1000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    float out[256] __attribute__((aligned(64)));
    _tile_stored(0, out, 64);
    _tile_release();
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    *gflops = dt > 0 && out[0] > 0 ? 4.0 * iters * 16 * 16 * 32 * 2 / dt / 1e9 : 0;  // 16x16 outputs of 32 products
    return NULL;
}

double lb_cpu_amx_ceiling(int threads) {
    lb_cpu_t c;
    lb_cpu_detect(&c);
    if (lb_cpu_bf16_level(&c) != 2 || threads < 1) return 0;
    if (threads > 64) threads = 64;
    pthread_t th[64];
    double g[64] = {0}, sum = 0;
    int started = 0;
    for (int i = 0; i < threads; i++) started += pthread_create(&th[started], NULL, amx_resident, &g[started]) == 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        sum += g[i];
    }
    return started == threads ? sum : 0;
}
#else
void lb_cpu_detect(lb_cpu_t *c) { memset(c, 0, sizeof *c); }
double lb_cpu_amx_ceiling(int threads) {
    (void)threads;
    return 0;
}
#endif

int lb_cpu_bf16_level(const lb_cpu_t *c) {
    if (c->amx_bf16 && c->amx_perm) return 2;
    if (c->avx512_bf16) return 1;
    return 0;
}

const char *lb_cpu_kernel_path(const lb_cpu_t *c, int bf16) {
    int lvl = bf16 ? lb_cpu_bf16_level(c) : 0;
    if (lvl == 2) return "amx-bf16 (oneDNN brg)";
    if (lvl == 1) return "avx512-bf16 (oneDNN brg)";
    // fp32: the path gemm_f32.h picks from these flags (oneDNN with AVX-512 F, else OpenBLAS)
    return lb_f32_path_name(c->avx512f ? LB_F32_ONEDNN : LB_F32_OPENBLAS);
}
