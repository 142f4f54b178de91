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

/* NCCL for GPU ranks (cuda_nccl.cu), loaded with dlopen on first use (libnccl.so.2, or the file
 * $NNLAB_NCCL names): NL_EDEVICE naming the file when it cannot be loaded. The distributed layer
 * uses these through its device collectives (dist.h: nl_dist_device_comm). */
enum { NL_NCCL_ID_BYTES = 128 };
/* A new communicator id (rank 0 makes it, MPI_Bcast shares it). */
nl_status nl_nccl_unique_id(void *id);
/* Joins the communicator of nranks processes as rank, on CUDA device dev; *comm its handle. */
nl_status nl_nccl_join(const void *id, int nranks, int rank, nl_device dev, void **comm);
/* In-place sum over the processes of a contiguous f32 tensor on the communicator's device, queued
 * on that device's stream (ordered after the kernels before it, no host wait). */
nl_status nl_nccl_allreduce_sum(void *comm, nl_tensor *t);
void nl_nccl_leave(void *comm);

#endif
