#include "cpu.h"

#include "gemm_f32.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <sys/syscall.h>
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
#else
void lb_cpu_detect(lb_cpu_t *c) { memset(c, 0, sizeof *c); }
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
