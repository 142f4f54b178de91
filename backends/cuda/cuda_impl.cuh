/* cuda_impl.cuh: private to the CUDA backend: the per-device context, error checks that name the
 * device and the failing CUDA / cuBLAS call, the strided N-d geometry kernels share, dtype loads
 * with the CPU's saturating conversions, and the kernel entry points cuda_backend.cu dispatches
 * to (cuda_elementwise.cu, cuda_layers.cu). */
#ifndef NL_CUDA_IMPL_CUH
#define NL_CUDA_IMPL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

/* The C headers' C11 static assertions, in C++'s spelling. */
#define _Static_assert static_assert
extern "C" {
#include "cpu/cpu_kernels.h"
#include "cuda/cuda.h"
#include "cuda/cuda_host.h"
#include "nl.h"
}
#include "hd/quant_hd.h"

/* cuBLAS, loaded with dlopen when the first device is opened (nnlab starts without mapping its
 * hundreds of megabytes, and runs without it on machines with no GPU). */
typedef struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasGetStatusString) status_string;
    decltype(&cublasSgemm_v2) sgemm;
    decltype(&cublasSgemmStridedBatched) sgemm_batched;
} cu_blas_api;
extern cu_blas_api cu_blas;

/* A symbol a library loaded with dlopen must have, and where its address goes. */
typedef struct {
    void **fn;
    const char *sym;
} cu_sym;
/* Opens the first of names[0..nnames) that loads and fills every syms[i].fn; *lib is the handle.
 * NL_EDEVICE "<who>: cannot load <names[0]> (<dlerror>)<hint>", or naming a missing symbol (the
 * library is closed again). */
nl_status cu_dlopen(const char *who, const char *const *names, int nnames, const cu_sym *syms,
                    int nsyms, const char *hint, void **lib);

/* One device: its stream (every kernel, copy and cuBLAS call goes on it, in order), cuBLAS
 * handle, caching allocator and counters. */
typedef struct {
    int device;
    char name[16];           /* "cuda:0", for messages */
    cudaStream_t stream;
    cublasHandle_t blas;
    bool tf32_applied;       /* the math mode last set on blas */
    nl_cache cache;
    uint64_t launches, syncs, copies_h2d, copies_d2h, bytes_h2d, bytes_d2h, bytes_d2d;
} cu_ctx;

/* NL_OK, or an error naming the device and the call: "cuda:0: cudaMemcpyAsync failed: ...";
 * an allocation failure is NL_ENOMEM. Clears CUDA's last-error state. */
nl_status cu_check(cu_ctx *c, cudaError_t e, const char *call);
nl_status cu_blas_check(cu_ctx *c, cublasStatus_t s, const char *call);
/* After a kernel launch: counts it and checks the launch. */
nl_status cu_launched(cu_ctx *c, const char *kernel);
/* Device scratch from the caching allocator (NULL with NL_ENOMEM set), and its release. */
void *cu_scratch(cu_ctx *c, size_t bytes);
void cu_scratch_free(cu_ctx *c, void *p);

/* Grid-stride launches: blocks of CU_THREADS threads, at most CU_MAX_BLOCKS blocks. */
constexpr int CU_THREADS = 256;
constexpr int64_t CU_MAX_BLOCKS = 1 << 16;
static inline unsigned cu_blocks(int64_t n)
{
    int64_t b = (n + CU_THREADS - 1) / CU_THREADS;
    return (unsigned)(b < 1 ? 1 : b > CU_MAX_BLOCKS ? CU_MAX_BLOCKS : b);
}
#define CU_FOR(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
                          i += (int64_t)gridDim.x * blockDim.x)

/* The geometry of an N-d iteration over up to three operands (element strides), after the CPU
 * iterator's merging of dimensions (cpu_iter_init): element i in logical row-major order lives
 * at offset sum_d idx_d * st[k][d] in operand k. Passed to kernels by value. */
typedef struct {
    int nd, nops;
    int64_t numel;
    int64_t shape[NL_MAX_DIMS];
    int64_t st[CPU_MAX_OPS][NL_MAX_DIMS];
} cu_geom;
cu_geom cu_geom_of(int ndim, const int64_t *shape, int nops, const int64_t *const *strides);

__device__ inline void cu_offsets(const cu_geom &g, int64_t i, int64_t *off)
{
    for (int k = 0; k < g.nops; k++) off[k] = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t q = i / g.shape[d], r = i - q * g.shape[d];
        i = q;
        for (int k = 0; k < g.nops; k++) off[k] += r * g.st[k][d];
    }
}

__device__ inline int cu_dtype_size(int dt) { return dt == NL_I8 || dt == NL_U8 ? 1 : 4; }

/* The value at p (of dtype dt) converted to T as the CPU's cpu_conv[dt][T] converts it. */
template <class T> __device__ T cu_load(const char *p, int dt);
template <> __device__ inline float cu_load<float>(const char *p, int dt)
{
    switch (dt) {
    case NL_F32: return *(const float *)p;
    case NL_I8: return (float)*(const int8_t *)p;
    case NL_I32: return (float)*(const int32_t *)p;
    default: return (float)*(const uint8_t *)p;
    }
}
template <> __device__ inline double cu_load<double>(const char *p, int dt)
{
    switch (dt) {
    case NL_F32: return (double)*(const float *)p;
    case NL_I8: return (double)*(const int8_t *)p;
    case NL_I32: return (double)*(const int32_t *)p;
    default: return (double)*(const uint8_t *)p;
    }
}
template <> __device__ inline int32_t cu_load<int32_t>(const char *p, int dt)
{
    switch (dt) {
    case NL_F32: return nl_hd_f32_to_i32(*(const float *)p);
    case NL_I8: return *(const int8_t *)p;
    case NL_I32: return *(const int32_t *)p;
    default: return *(const uint8_t *)p;
    }
}
template <> __device__ inline int8_t cu_load<int8_t>(const char *p, int dt)
{
    switch (dt) {
    case NL_F32: return nl_hd_f32_to_i8(*(const float *)p);
    case NL_I8: return *(const int8_t *)p;
    case NL_I32: return nl_hd_int_to_i8(*(const int32_t *)p);
    default: return nl_hd_int_to_i8(*(const uint8_t *)p);
    }
}
template <> __device__ inline uint8_t cu_load<uint8_t>(const char *p, int dt)
{
    switch (dt) {
    case NL_F32: return nl_hd_f32_to_u8(*(const float *)p);
    case NL_I8: return nl_hd_int_to_u8(*(const int8_t *)p);
    case NL_I32: return nl_hd_int_to_u8(*(const int32_t *)p);
    default: return *(const uint8_t *)p;
    }
}

/* Stores v at p (of dtype dt) as the CPU's cpu_store converts it. */
__device__ inline void cu_store_f64(char *p, int dt, double v)
{
    switch (dt) {
    case NL_F32: *(float *)p = (float)v; break;
    case NL_I32: *(int32_t *)p = nl_hd_f64_to_i32(v); break;
    case NL_I8: *(int8_t *)p = nl_hd_f64_to_i8(v); break;
    default: *(uint8_t *)p = nl_hd_f64_to_u8(v); break;
    }
}

/* Float pointer to a tensor's first element (device memory). */
static inline float *cu_f32(const nl_tensor *t) { return (float *)nl_tensor_data(t); }

/* Kernels: each takes a well-formed op (core validated it) on context c. */
nl_status cu_fill(cu_ctx *c, const nl_op *op);
nl_status cu_copy(cu_ctx *c, const nl_op *op);
nl_status cu_binary(cu_ctx *c, const nl_op *op);
nl_status cu_binary_scalar(cu_ctx *c, const nl_op *op);
nl_status cu_unary(cu_ctx *c, const nl_op *op);
nl_status cu_rand(cu_ctx *c, const nl_op *op);
nl_status cu_reduce(cu_ctx *c, const nl_op *op);
nl_status cu_matmul(cu_ctx *c, const nl_op *op);
nl_status cu_act_forward(cu_ctx *c, const nl_op *op);
nl_status cu_act_backward(cu_ctx *c, const nl_op *op);
nl_status cu_softmax(cu_ctx *c, const nl_op *op);
nl_status cu_batchnorm_forward(cu_ctx *c, const nl_op *op);
nl_status cu_batchnorm_backward(cu_ctx *c, const nl_op *op);
nl_status cu_dropout(cu_ctx *c, const nl_op *op);
nl_status cu_cross_entropy_forward(cu_ctx *c, const nl_op *op);
nl_status cu_cross_entropy_backward(cu_ctx *c, const nl_op *op);
nl_status cu_conv2d_forward(cu_ctx *c, const nl_op *op);
nl_status cu_conv2d_backward_data(cu_ctx *c, const nl_op *op);
nl_status cu_conv2d_backward_filter(cu_ctx *c, const nl_op *op);
nl_status cu_pool2d_forward(cu_ctx *c, const nl_op *op);
nl_status cu_pool2d_backward(cu_ctx *c, const nl_op *op);
nl_status cu_sgd_step(cu_ctx *c, const nl_op *op);
nl_status cu_adam_step(cu_ctx *c, const nl_op *op);
nl_status cu_fakequant(cu_ctx *c, const nl_op *op);
nl_status cu_where(cu_ctx *c, const nl_op *op);
nl_status cu_gather(cu_ctx *c, const nl_op *op);
nl_status cu_cumsum(cu_ctx *c, const nl_op *op);
nl_status cu_sort(cu_ctx *c, const nl_op *op);
/* Copies bytes of device memory to the host and waits for them (counted as the backend's
 * copies are); for the few scalars a kernel reports back (an error's position). */
nl_status cu_read_back(cu_ctx *c, void *host, const void *dev, size_t bytes);
/* A strided f32 copy dst <- src over shape (cuda_elementwise.cu; matmul packs with it). */
nl_status cu_copy_f32(cu_ctx *c, float *dst, const int64_t *dst_st, const float *src,
                      const int64_t *src_st, int ndim, const int64_t *shape);

#endif
