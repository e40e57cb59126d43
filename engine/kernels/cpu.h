// cpu: what the processor this process runs on can do, read from CPUID and XGETBV, and
// which matrix-product path the engine takes on it. Dispatch follows these feature flags,
// never a CPU model name (OpenBLAS picks its kernels by model, and falls back to generic
// ones on a model it does not know; the flags are right on any vendor and any model).
#ifndef LB_CPU_H
#define LB_CPU_H

typedef struct {
    int avx2;         // AVX2 and FMA, with the OS saving the YMM state
    int avx512f;      // AVX-512 F, with the OS saving the ZMM and mask state
    int avx512_bf16;  // VDPBF16PS / VCVTNE2PS2BF16 (needs avx512f)
    int amx_tile;     // AMX tiles, with the OS saving XTILECFG / XTILEDATA (XCR0 bits 17, 18)
    int amx_bf16;     // TDPBF16PS (needs amx_tile)
    int amx_perm;     // Linux granted this process the AMX tile data state (arch_prctl)
} lb_cpu_t;

// Fills c from CPUID and XGETBV. When the CPU and OS support AMX tiles, it also asks Linux
// for permission to use them (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; once per
// process is enough, asking again is harmless) and reports the answer in amx_perm. On
// other architectures every field is 0.
void lb_cpu_detect(lb_cpu_t *c);

// The bf16 matrix-product hardware the process can use: 2 = AMX bf16 tiles (CPU, OS save
// state and permission), 1 = AVX-512 bf16 dot products, 0 = none.
int lb_cpu_bf16_level(const lb_cpu_t *c);

// The AMX ceiling of this machine: GFLOP/s of `threads` threads running TDPBF16PS at once
// with every tile resident (no memory traffic; ~0.1 s). What the bf16 products can at best
// approach: a VM's AMX may run well below the CPU's rated 1,024 flops a cycle a core, and
// vary with what shares it (one lent Xeon VM: 961 to 2,262 GFLOP/s on one thread within
// an hour, 1,909 to 4,569 on two). 0 without AMX bf16 granted to the process.
double lb_cpu_amx_ceiling(int threads);

// One line naming the path the engine's matrix products take on this CPU, for logs and
// the bench: "amx-bf16 (oneDNN brg)", "avx512-bf16 (oneDNN brg)" for the bf16 products of
// frozen weights, else the fp32 path gemm_f32.h takes on such a CPU ("fp32 (oneDNN sgemm;
// CPU has avx512f)" or "fp32 (OpenBLAS)"). bf16 says whether
// the run holds frozen weights packed in bf16 (the caller's choice, linear_pack_bf16):
// without it the fp32 name is returned on any CPU.
const char *lb_cpu_kernel_path(const lb_cpu_t *c, int bf16);

#endif
