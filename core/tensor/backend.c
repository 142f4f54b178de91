/* backend.c: the backend registry, core initialisation and the thread count shared by the
 * CPU kernels (OpenMP) and OpenBLAS. */
#include "nl.h"
#include "cpuinfo.h"
#include "cpu/cpu.h"
#ifdef NL_HAVE_CUDA
#include "cuda/cuda.h"
#endif

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

static nl_backend *backends[NL_DEVICE_COUNT];
static int n_threads = 1;

void nl_backend_register(nl_backend *be)
{
    if (be && (unsigned)be->device < NL_DEVICE_COUNT) backends[be->device] = be;
}

nl_backend *nl_backend_get(nl_device d)
{
    if ((unsigned)d >= NL_DEVICE_COUNT) {
        nl_seterr(NL_EDEVICE, "unknown device %d", (int)d);
        return NULL;
    }
    if (!backends[d]) {
        if (d == NL_CUDA)
#ifdef NL_HAVE_CUDA
            nl_seterr(NL_EDEVICE, "no CUDA device");
#else
            nl_seterr(NL_EDEVICE, "no CUDA device (this nnlab was built without CUDA)");
#endif
        else
            nl_seterr(NL_EDEVICE, "no %s backend", nl_device_name(d));
        return NULL;
    }
    return backends[d];
}

void nl_set_threads(int n)
{
    if (n < 1) n = 1;
    n_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int nl_get_threads(void) { return n_threads; }

void nl_init(void)
{
    static bool done;
    if (done) return;
    done = true;
    /* Links cpuinfo.o into every program, whose constructor has already made OpenBLAS use the
     * kernels this processor can run (restarting the program if need be). */
    (void)nl_blas_get_info();
    nl_backend_register(nl_cpu_backend());
#ifdef NL_HAVE_CUDA
    nl_backend_register(nl_cuda_backend()); /* NULL (ignored) when no device is present */
#endif
    const char *env = getenv("NNLAB_THREADS");
    int n = env ? atoi(env) : 0;
    nl_set_threads(n > 0 ? n : omp_get_max_threads());
}
