/* cpu.h: the CPU backend (OpenMP kernels + OpenBLAS), the reference implementation of every op.
 * core/tensor/backend.c registers it in nl_init. */
#ifndef NL_CPU_H
#define NL_CPU_H

#include "nl.h"

/* The CPU backend's vtable: a static object, never freed; calling it again returns the same one. */
nl_backend *nl_cpu_backend(void);
/* How many blocks the CPU backend has allocated since start-up (tests check that a training step
 * allocates none after the first). */
int64_t nl_cpu_alloc_count(void);

/* Layer and optimizer kernels (cpu_<name>.c), dispatched by cpu_backend.c: each takes an op that
 * core validated (operands as documented at its opcode in nl.h) and returns NL_OK. */
nl_status nl_cpu_conv2d_forward(const nl_op *op);
nl_status nl_cpu_conv2d_backward_data(const nl_op *op);
nl_status nl_cpu_conv2d_backward_filter(const nl_op *op);
nl_status nl_cpu_pool2d_forward(const nl_op *op);
nl_status nl_cpu_pool2d_backward(const nl_op *op);
nl_status nl_cpu_sgd_step(const nl_op *op);
nl_status nl_cpu_adam_step(const nl_op *op);
nl_status nl_cpu_act_forward(const nl_op *op);            /* activation.c */
nl_status nl_cpu_act_backward(const nl_op *op);
nl_status nl_cpu_softmax(const nl_op *op);
nl_status nl_cpu_batchnorm_forward(const nl_op *op);      /* batchnorm.c */
nl_status nl_cpu_batchnorm_backward(const nl_op *op);
nl_status nl_cpu_dropout(const nl_op *op);                /* dropout.c */
nl_status nl_cpu_cross_entropy_forward(const nl_op *op);  /* loss.c */
nl_status nl_cpu_cross_entropy_backward(const nl_op *op);
nl_status nl_cpu_spconv2d(const nl_op *op);               /* sparse.c */
nl_status nl_cpu_splinear(const nl_op *op);
nl_status nl_cpu_qconv2d(const nl_op *op);                /* qgemm.c */
nl_status nl_cpu_quantize(const nl_op *op);
nl_status nl_cpu_qpool2d(const nl_op *op);
nl_status nl_cpu_int4_dequant(const nl_op *op);            /* int4.c */
nl_status nl_cpu_int4_linear(const nl_op *op);
nl_status nl_cpu_int4_conv2d(const nl_op *op);
nl_status nl_cpu_fakequant(const nl_op *op);
/* The int8 GEMM's instruction set: "auto" (or NULL), "generic" (portable C), "avx2" (vpmaddwd) or
 * "vnni" (AVX-512 VNNI); NL_EUNSUPPORTED where the CPU lacks it. The environment
 * NNLAB_QUANT_ISA=generic selects the portable path; the fp32 kernels' ISA (nl_cpu_set_isa,
 * NNLAB_ISA) caps it (avx2 below avx512, generic below avx2). All give identical results.
 * nl_cpu_qgemm_isa names the one in use. */
nl_status nl_cpu_qgemm_set_isa(const char *name);
const char *nl_cpu_qgemm_isa(void);
/* The machine's int8 multiply-add peak in GOP/s (2 per u8 x s8 product) at the current thread
 * count: register-only loops of its best int8 instruction (nl_cpu_qgemm_peak_instr: "vpdpbusd
 * avx512_vnni" or "vpmaddwd avx2"), whatever ISA is forced; the best seen, measured once per thread
 * count or (again) once more, for a figure taken in the same spell as the kernels it rates (a
 * shared machine's speed drifts). 0 without AVX2. */
double nl_cpu_qgemm_peak_gops(bool again);
const char *nl_cpu_qgemm_peak_instr(void);
/* The instruction set of the fp32 kernels: "auto" (or NULL: the environment NNLAB_ISA, else the
 * best the CPU has), "generic" (portable C and OpenBLAS), "avx2" (AVX2 + FMA) or "avx512"
 * (AVX-512 F/BW/VL); NL_EUNSUPPORTED where the CPU lacks it. The int8 GEMM also keeps to the
 * generic path below "avx512". nl_cpu_isa names the one in use. */
nl_status nl_cpu_set_isa(const char *name);
const char *nl_cpu_isa(void);
/* How bf16 products run here: "native avx512_bf16", "emulated avx2" or "emulated generic". */
const char *nl_cpu_bf16_how(void);
/* OpenBLAS's core ("Haswell", "SkylakeX", "Zen", ...). */
const char *nl_cpu_blas_core(void);
/* The kernels that ran since the last call, as the kernels that choose a path name it ("conv direct
 * avx2", "sgemm Zen", ...), comma-separated into buf; the record is then cleared. Host thread. */
void nl_cpu_kernels_take(char *buf, size_t n);

#endif
