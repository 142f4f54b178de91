/* registry.c: which backends this nnlab has (cpu, sim, and cuda when built with it), registered
 * with core in nl_init, and the thread count shared by the CPU kernels (OpenMP) and OpenBLAS. */
#include "nl.h"
#include "cpuinfo.h"
#include "cpu/cpu.h"
#include "sim/sim.h"
#include "profile.h"
#include "quant.h"
#include "dist.h"
#ifdef NL_HAVE_CUDA
#include "cuda/cuda.h"

/* GPU ranks sum their gradients with NCCL. */
static const nl_dist_device_comm nccl_comm = {
    .name = "NCCL", .id_bytes = NL_NCCL_ID_BYTES, .unique_id = nl_nccl_unique_id,
    .join = nl_nccl_join, .allreduce_sum = nl_nccl_allreduce_sum, .leave = nl_nccl_leave,
};
_Static_assert(NL_NCCL_ID_BYTES <= NL_DIST_DEVICE_ID_MAX, "an NCCL id fits dist's buffer");
#endif

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

static int n_threads = 1;

void nl_set_threads(int n)
{
    if (n < 1) n = 1;
    n_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int nl_get_threads(void) { return n_threads; }

static nl_precision precision = NL_PREC_F32;

void nl_set_precision(nl_precision p) { precision = p; }
nl_precision nl_get_precision(void) { return precision; }
const char *nl_bf16_how(void) { return nl_cpu_bf16_how(); }

/* The int8 kernels' instruction set (quant.h declares these for the DSL; the kernels are the CPU
 * backend's). */
nl_status nl_quant_set_isa(const char *name) { return nl_cpu_qgemm_set_isa(name); }
const char *nl_quant_isa(void) { return nl_cpu_qgemm_isa(); }
double nl_quant_peak_gops(bool again) { return nl_cpu_qgemm_peak_gops(again); }
const char *nl_quant_peak_instr(void) { return nl_cpu_qgemm_peak_instr(); }

/* The fp32 kernels' instruction set, OpenBLAS's core and the kernels' notes of what ran (profile.h
 * declares these for nn.profile and sys.isa). */
const char *nl_isa(void) { return nl_cpu_isa(); }
nl_status nl_isa_set(const char *name) { return nl_cpu_set_isa(name); }
const char *nl_blas_core(void) { return nl_cpu_blas_core(); }
void nl_kernels_take(char *buf, size_t n) { nl_cpu_kernels_take(buf, n); }

/* The host has one CPU device. */
static nl_backend *cpu_instance(int index)
{
    if (index == 0) return nl_cpu_backend();
    nl_seterr(NL_EDEVICE, "cpu:%d: no such device (the host is cpu, cpu:0)", index);
    return NULL;
}

void nl_init(void)
{
    static bool done;
    if (done) return;
    done = true;
    /* Links cpuinfo.o into every program, whose constructor has already made OpenBLAS use the
     * kernels this processor can run (restarting the program if need be). */
    (void)nl_blas_get_info();
    nl_backend_provide(NL_CPU, cpu_instance);
    nl_backend_provide(NL_SIM, nl_sim_backend);
    nl_dist_provide_device_comm(NL_SIM, &nl_dist_staged_comm);
#ifdef NL_HAVE_CUDA
    nl_backend_provide(NL_CUDA, nl_cuda_backend); /* NULL (error set) when there is no such device */
    nl_dist_provide_device_comm(NL_CUDA, &nccl_comm);
#endif
    const char *env = getenv("NNLAB_THREADS");
    int n = env ? atoi(env) : 0;
    nl_set_threads(n > 0 ? n : omp_get_max_threads());
}
