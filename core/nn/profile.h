/* profile.h: per-layer timings of a network against the machine's measured fp32 peak (nn.profile),
 * and the CPU kernels' instruction set. */
#ifndef NL_PROFILE_H
#define NL_PROFILE_H

#include "nn.h"

/* One layer's figures: best-of-reps milliseconds, FLOPs (2 per multiply-add; 0 where the layer
 * does no arithmetic worth counting) and the kernels that ran ("" where no kernel names itself). */
typedef struct {
    char layer[96];
    char kernel_fwd[96], kernel_bwd[96];
    double fwd_ms, bwd_ms;
    double fwd_flops, bwd_flops;
} nl_profile_row;

/* Times each child of a Sequential net (or the net as one row) on the input it sees when net
 * runs on x: forward, and backward when asked (dL/dx for every layer but the first, as a training
 * step). The best of reps runs counts. Parameter gradients are restored afterwards; the layers'
 * kept input/output are those of the last run. *rows: a new array of *n rows (free()), or NULL
 * with the error set. */
nl_status nl_profile(nl_module *net, nl_tensor *x, bool backward, int reps, nl_profile_row **rows,
                     int *n);
/* The machine's practical fp32 peak in GFLOP/s at the current thread count: the best of a few
 * 1024^3 sgemm runs, measured once per thread count and kept. 0 with the error set on failure. */
double nl_profile_peak_gflops(void);

/* The CPU kernels' instruction set: "generic", "avx2" or "avx512" (the CPU's best, NNLAB_ISA, or
 * what nl_isa_set chose), and the BLAS core ("Haswell", "SkylakeX", ...). */
const char *nl_isa(void);
/* "auto", "generic", "avx2", "avx512": NL_EINVAL for another name, NL_EUNSUPPORTED where the CPU
 * lacks it. */
nl_status nl_isa_set(const char *name);
const char *nl_blas_core(void);
/* How the CPU computes bf16 products (precision "bf16"): "native avx512_bf16" (vdpbf16ps),
 * "emulated avx2" or "emulated generic" (rounded to bf16, then fp32 arithmetic: the same bits). */
const char *nl_bf16_how(void);
/* The kernels that ran since the last call, as they name themselves ("conv direct avx2", "sgemm
 * Zen", ...), comma-separated into buf; the record is then cleared. (These four are the CPU
 * backend's, defined in backends/registry.c.) */
void nl_kernels_take(char *buf, size_t n);

#endif
