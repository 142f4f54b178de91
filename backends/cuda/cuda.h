/* cuda.h: the CUDA backend's C interface (no CUDA headers): the backend of one device, device
 * queries and the TF32 switch (its statistics are the backend's stats, sys.device_stats). Implemented in cuda_backend.cu;
 * the host-side logic that needs no GPU (allocator bookkeeping) is in cuda_host.c. */
#ifndef NL_CUDA_H
#define NL_CUDA_H

#include "nl.h"

/* The backend of CUDA device number `device` (created on first call, then the same object), or
 * NULL with an NL_EDEVICE error naming the reason ("no CUDA device: ..."), also when the machine
 * has no driver. Never aborts. */
nl_backend *nl_cuda_backend(int device);

/* How many CUDA devices the driver reports (0 without a driver or GPU; never fails). */
int nl_cuda_device_count(void);

typedef struct {
    char name[256];
    size_t memory;          /* total global memory, bytes */
    int major, minor;       /* compute capability */
    int multiprocessors;
    int driver, runtime;    /* versions as CUDA numbers them (13000 = 13.0) */
} nl_cuda_device_info;
/* Fills *info for device `device`; NL_EDEVICE when there is no such device. */
nl_status nl_cuda_device_query(int device, nl_cuda_device_info *info);

/* TF32 tensor-core math in cuBLAS matrix products (off by default, so results match the CPU to
 * f32 rounding; on trades 10-bit mantissa products for speed). Applies to every device. */
void nl_cuda_set_tf32(bool on);
bool nl_cuda_tf32(void);

#endif
