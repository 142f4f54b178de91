/* cuda_backend.cu: the CUDA backend's vtable, one instance per device number: device discovery
 * that never aborts without a driver, memory from the caching allocator (cuda_host.c),
 * host <-> device copies on the compute stream, errors that name the device and the failing
 * call, statistics, and dispatch of each opcode to its kernel. */
#include "cuda_impl.cuh"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

enum { CU_MAX_DEVICES = 16 };
static nl_backend *backends[CU_MAX_DEVICES];
static bool tf32_on;

cu_blas_api cu_blas;

nl_status cu_dlopen(const char *who, const char *const *names, int nnames, const cu_sym *syms,
                    int nsyms, const char *hint, void **lib)
{
    void *h = NULL;
    for (int i = 0; i < nnames && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return nl_seterr(NL_EDEVICE, "%s: cannot load %s (%s)%s", who, names[0], dlerror(), hint);
    for (int i = 0; i < nsyms; i++)
        if (!(*syms[i].fn = dlsym(h, syms[i].sym))) {
            nl_status st = nl_seterr(NL_EDEVICE, "%s: %s has no %s", who, names[0], syms[i].sym);
            dlclose(h);
            return st;
        }
    *lib = h;
    return NL_OK;
}

/* Loads cuBLAS (libcublas.so.<major> of the headers built against, else libcublas.so) once. */
static nl_status load_cublas(void)
{
    static void *lib;
    if (lib) return NL_OK;
    char name[64];
    snprintf(name, sizeof name, "libcublas.so.%d", CUBLAS_VER_MAJOR);
    const char *const names[] = {name, "libcublas.so"};
    cu_blas_api api;
    const cu_sym syms[] = {
        {(void **)&api.create, "cublasCreate_v2"},
        {(void **)&api.destroy, "cublasDestroy_v2"},
        {(void **)&api.set_stream, "cublasSetStream_v2"},
        {(void **)&api.set_math_mode, "cublasSetMathMode"},
        {(void **)&api.status_string, "cublasGetStatusString"},
        {(void **)&api.sgemm, "cublasSgemm_v2"},
        {(void **)&api.sgemm_batched, "cublasSgemmStridedBatched"},
    };
    nl_status st = cu_dlopen("cuda", names, 2, syms, (int)(sizeof syms / sizeof syms[0]),
                             "; put CUDA's libraries (or PyTorch's nvidia/cu*/lib) on LD_LIBRARY_PATH",
                             &lib);
    if (st == NL_OK) cu_blas = api;
    return st;
}

/* ---------------------------------------------------------------- errors --------------- */

nl_status cu_check(cu_ctx *c, cudaError_t e, const char *call)
{
    if (e == cudaSuccess) return NL_OK;
    cudaGetLastError(); /* clear the (non-sticky) error so later checks do not see it */
    const char *dev = c ? c->name : "cuda";
    if (e == cudaErrorMemoryAllocation)
        return nl_seterr(NL_ENOMEM, "%s: %s failed: out of device memory", dev, call);
    return nl_seterr(NL_EDEVICE, "%s: %s failed: %s (%s)", dev, call, cudaGetErrorString(e),
                     cudaGetErrorName(e));
}

nl_status cu_blas_check(cu_ctx *c, cublasStatus_t s, const char *call)
{
    if (s == CUBLAS_STATUS_SUCCESS) return NL_OK;
    if (s == CUBLAS_STATUS_ALLOC_FAILED)
        return nl_seterr(NL_ENOMEM, "%s: %s failed: cuBLAS could not allocate device memory",
                         c->name, call);
    return nl_seterr(NL_EDEVICE, "%s: %s failed: %s", c->name, call, cu_blas.status_string(s));
}

nl_status cu_launched(cu_ctx *c, const char *kernel)
{
    c->launches++;
    return cu_check(c, cudaGetLastError(), kernel);
}

/* ---------------------------------------------------------------- memory --------------- */

static void *raw_alloc(void *ctx, size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    (void)ctx;
    return p;
}

static void raw_free(void *ctx, void *p)
{
    (void)ctx;
    cudaFree(p);
}

void *cu_scratch(cu_ctx *c, size_t bytes) { return nl_cache_alloc(&c->cache, bytes); }
void cu_scratch_free(cu_ctx *c, void *p) { nl_cache_free(&c->cache, p); }

static void *cu_alloc(nl_backend *be, size_t bytes)
{
    cu_ctx *c = (cu_ctx *)be->ctx;
    cudaSetDevice(c->device);
    return nl_cache_alloc(&c->cache, bytes);
}

/* A freed block is reused only by later work on the same stream, so no synchronisation is
 * needed: stream order puts every earlier use of it first. */
static void cu_free(nl_backend *be, void *ptr) { nl_cache_free(&((cu_ctx *)be->ctx)->cache, ptr); }

static nl_status cu_copy_bytes(nl_backend *be, void *dst, nl_device dst_dev, const void *src,
                               nl_device src_dev, size_t bytes)
{
    cu_ctx *c = (cu_ctx *)be->ctx;
    if (!bytes) return NL_OK;
    const bool to_me = dst_dev == be->device, from_me = src_dev == be->device;
    cudaMemcpyKind kind = to_me && from_me                   ? cudaMemcpyDeviceToDevice
                        : to_me && src_dev == NL_CPU         ? cudaMemcpyHostToDevice
                        : from_me && dst_dev == NL_CPU       ? cudaMemcpyDeviceToHost
                                                             : cudaMemcpyDefault;
    if (kind == cudaMemcpyDefault)
        return nl_seterr(NL_EDEVICE, "%s: cannot copy between %s and %s", c->name,
                         nl_device_name(src_dev), nl_device_name(dst_dev));
    cudaSetDevice(c->device);
    if (kind == cudaMemcpyHostToDevice) c->copies_h2d++, c->bytes_h2d += bytes;
    else if (kind == cudaMemcpyDeviceToHost) c->copies_d2h++, c->bytes_d2h += bytes;
    else c->bytes_d2d += bytes;
    nl_status st = cu_check(c, cudaMemcpyAsync(dst, src, bytes, kind, c->stream), "cudaMemcpyAsync");
    /* The host side must be complete when a device-to-host copy returns. (Host-to-device copies
     * from pageable memory are staged before cudaMemcpyAsync returns.) */
    if (st == NL_OK && kind == cudaMemcpyDeviceToHost) {
        c->syncs++;
        st = cu_check(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
    }
    return st;
}

nl_status cu_read_back(cu_ctx *c, void *host, const void *dev, size_t bytes)
{
    c->copies_d2h++, c->bytes_d2h += bytes, c->syncs++;
    nl_status st = cu_check(c, cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, c->stream),
                            "cudaMemcpyAsync");
    return st != NL_OK ? st : cu_check(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

static void cu_sync(nl_backend *be)
{
    cu_ctx *c = (cu_ctx *)be->ctx;
    c->syncs++;
    cu_check(c, cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
}

/* The counters (sys.device_stats); memory from the caching allocator. A reset zeroes the counts
 * and restarts the peak at the memory in use. */
static void cu_stats(nl_backend *be, nl_device_stats *out, bool reset)
{
    cu_ctx *c = (cu_ctx *)be->ctx;
    *out = (nl_device_stats){
        .launches = c->launches, .bytes_h2d = c->bytes_h2d, .bytes_d2h = c->bytes_d2h,
        .bytes_d2d = c->bytes_d2d, .copies_h2d = c->copies_h2d, .copies_d2h = c->copies_d2h,
        .syncs = c->syncs, .allocs = c->cache.mallocs + c->cache.reuses,
        .mem_current = c->cache.in_use, .mem_peak = c->cache.peak, .mem_cached = c->cache.cached,
    };
    if (!reset) return;
    c->launches = c->syncs = c->copies_h2d = c->copies_d2h = 0;
    c->bytes_h2d = c->bytes_d2h = c->bytes_d2d = 0;
    c->cache.mallocs = c->cache.reuses = 0;
    c->cache.peak = c->cache.in_use;
}

/* ---------------------------------------------------------------- dispatch ------------- */

typedef nl_status (*cu_kernel)(cu_ctx *c, const nl_op *op);

/* One kernel per opcode of f32 training and evaluation; the quantized and sparse inference ops
 * (NULL here) run on the CPU. */
static cu_kernel kernel_of(nl_opcode code)
{
    switch (code) {
    case NL_OP_FILL: return cu_fill;
    case NL_OP_COPY: return cu_copy;
    case NL_OP_BINARY: return cu_binary;
    case NL_OP_BINARY_SCALAR: return cu_binary_scalar;
    case NL_OP_UNARY: return cu_unary;
    case NL_OP_REDUCE: return cu_reduce;
    case NL_OP_MATMUL: return cu_matmul;
    case NL_OP_RAND_UNIFORM: case NL_OP_RAND_NORMAL: return cu_rand;
    case NL_OP_ACT: return cu_act_forward;
    case NL_OP_ACT_BWD: return cu_act_backward;
    case NL_OP_SOFTMAX: return cu_softmax;
    case NL_OP_BATCHNORM: return cu_batchnorm_forward;
    case NL_OP_BATCHNORM_BWD: return cu_batchnorm_backward;
    case NL_OP_DROPOUT: return cu_dropout;
    case NL_OP_CROSS_ENTROPY: return cu_cross_entropy_forward;
    case NL_OP_CROSS_ENTROPY_BWD: return cu_cross_entropy_backward;
    case NL_OP_CONV2D: return cu_conv2d_forward;
    case NL_OP_CONV2D_BWD_DATA: return cu_conv2d_backward_data;
    case NL_OP_CONV2D_BWD_FILTER: return cu_conv2d_backward_filter;
    case NL_OP_POOL2D: return cu_pool2d_forward;
    case NL_OP_POOL2D_BWD: return cu_pool2d_backward;
    case NL_OP_SGD_STEP: return cu_sgd_step;
    case NL_OP_ADAM_STEP: return cu_adam_step;
    case NL_OP_FAKEQUANT: return cu_fakequant;
    case NL_OP_WHERE: return cu_where;
    case NL_OP_GATHER: return cu_gather;
    case NL_OP_CUMSUM: return cu_cumsum;
    case NL_OP_SORT: return cu_sort;
    default: return NULL;
    }
}

static bool cu_supports(nl_backend *be, const nl_op *op)
{
    (void)be;
    if ((unsigned)op->code >= NL_OPCODE_COUNT || !kernel_of(op->code)) return false;
    if (op->code == NL_OP_MATMUL)
        return op->dst->dtype == NL_F32 && op->src[0]->dtype == NL_F32 && op->src[1]->dtype == NL_F32;
    return true;
}

static nl_status cu_exec(nl_backend *be, const nl_op *op)
{
    cu_ctx *c = (cu_ctx *)be->ctx;
    if (!cu_supports(be, op))
        return nl_seterr(NL_EUNSUPPORTED, "%s: not supported by the %s backend",
                         nl_opcode_name(op->code), c->name);
    cudaSetDevice(c->device);
    if (c->tf32_applied != tf32_on) { /* matmul and convolution use cuBLAS */
        nl_status st = cu_blas_check(c, cu_blas.set_math_mode(c->blas, tf32_on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                           : CUBLAS_DEFAULT_MATH),
                                     "cublasSetMathMode");
        if (st != NL_OK) return st;
        c->tf32_applied = tf32_on;
    }
    return kernel_of(op->code)(c, op);
}

/* ---------------------------------------------------------------- devices -------------- */

extern "C" int nl_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* NL_OK when `device` exists, else NL_EDEVICE "no CUDA device..." with the driver's reason. */
static nl_status device_exists(int device)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return nl_seterr(NL_EDEVICE, "no CUDA device (%s)", cudaGetErrorString(e));
    }
    if (device < 0 || device >= n || device >= CU_MAX_DEVICES)
        return nl_seterr(NL_EDEVICE, "no CUDA device cuda:%d (%d device%s present)", device, n,
                         n == 1 ? "" : "s");
    return NL_OK;
}

extern "C" nl_backend *nl_cuda_backend(int device)
{
    if (device_exists(device) != NL_OK) return NULL;
    if (backends[device]) return backends[device];
    cu_ctx *c = (cu_ctx *)calloc(1, sizeof *c);
    nl_backend *be = (nl_backend *)calloc(1, sizeof *be);
    if (!c || !be) {
        free(c);
        free(be);
        nl_seterr(NL_ENOMEM, "cuda: out of host memory");
        return NULL;
    }
    c->device = device;
    snprintf(c->name, sizeof c->name, "cuda:%d", device);
    c->cache.raw_alloc = raw_alloc;
    c->cache.raw_free = raw_free;
    c->cache.ctx = c;
    c->cache.device = c->name;
    nl_status st = load_cublas();
    if (st == NL_OK) st = cu_check(c, cudaSetDevice(device), "cudaSetDevice");
    if (st == NL_OK)
        st = cu_check(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
                      "cudaStreamCreateWithFlags");
    if (st == NL_OK) st = cu_blas_check(c, cu_blas.create(&c->blas), "cublasCreate");
    if (st == NL_OK) st = cu_blas_check(c, cu_blas.set_stream(c->blas, c->stream), "cublasSetStream");
    if (st == NL_OK)
        st = cu_blas_check(c, cu_blas.set_math_mode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (st != NL_OK) {
        if (c->blas) cu_blas.destroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
        free(be);
        return NULL;
    }
    be->name = c->name;
    be->device = nl_device_make(NL_CUDA, device);
    be->ctx = c;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->copy = cu_copy_bytes;
    be->sync = cu_sync;
    be->supports = cu_supports;
    be->exec = cu_exec;
    be->stats = cu_stats;
    backends[device] = be;
    return be;
}

extern "C" nl_status nl_cuda_device_query(int device, nl_cuda_device_info *info)
{
    nl_status st = device_exists(device);
    if (st != NL_OK) return st;
    cudaDeviceProp p;
    if ((st = cu_check(NULL, cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties")) != NL_OK)
        return st;
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->memory = p.totalGlobalMem;
    info->major = p.major;
    info->minor = p.minor;
    info->multiprocessors = p.multiProcessorCount;
    cudaDriverGetVersion(&info->driver);
    cudaRuntimeGetVersion(&info->runtime);
    return NL_OK;
}

extern "C" void nl_cuda_set_tf32(bool on) { tf32_on = on; }
extern "C" bool nl_cuda_tf32(void) { return tf32_on; }
