/* nl.h: the public C interface of nnlab's core: status codes, dtypes, storage, tensors,
 * the backend vtable and the tensor operations. Pure C11; knows nothing of Lua, SDL or CUDA. */
#ifndef NL_H
#define NL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The program's version, printed at start-up and written into the files that record a producer. */
#define NL_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors ---------------- */

/* Every fallible core function returns a status (or NULL for constructors) and leaves a human
 * message in a thread-local buffer, read with nl_errmsg(). */
typedef enum {
    NL_OK = 0,
    NL_EINVAL,       /* a bad argument: out-of-range index, unknown name, bad option */
    NL_ESHAPE,       /* shapes do not agree */
    NL_ETYPE,        /* dtype not supported by this operation */
    NL_ENOMEM,       /* an allocation failed or would exceed the machine's memory */
    NL_EIO,          /* a file could not be opened, read or written */
    NL_EFORMAT,      /* a file is corrupt or of the wrong format */
    NL_EINTR,        /* interrupted by the user (Ctrl-C) */
    NL_EDEVICE,      /* a device is missing or failed */
    NL_EUNSUPPORTED, /* the operation is not available on this backend / build */
    NL_STATUS_COUNT
} nl_status;

const char *nl_status_name(nl_status s);
/* The message of the last error on this thread ("" when none). */
const char *nl_errmsg(void);
/* The status of the last error on this thread, as set by nl_seterr. */
nl_status nl_errcode(void);
/* Sets the thread's error message (printf-style) and returns code, so callers can write
 * `return nl_seterr(NL_ESHAPE, "matmul: ...")`. */
nl_status nl_seterr(nl_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void nl_clearerr(void);

/* ---------------------------------------------------------------- interrupts ------------ */

/* SIGINT handlers call nl_interrupt() (async-signal-safe). Long-running core code polls
 * nl_check_interrupt() between layers, batches and kernel launches and returns NL_EINTR with
 * its state consistent. The REPL clears the flag before running each chunk. */
void nl_interrupt(void);
void nl_interrupt_clear(void);
bool nl_interrupted(void);
/* NL_OK, or NL_EINTR with message "interrupted" (does not clear the flag). */
nl_status nl_check_interrupt(void);
/* While deferred (a counter: calls nest), the REPL's SIGINT handler only sets the flag and does
 * not break into running Lua code: a training loop uses this to stop cleanly at the next batch
 * boundary instead of in the middle of its bookkeeping. */
void nl_interrupt_defer(bool on);
bool nl_interrupt_deferred(void);

/* The idle hook: a function the REPL calls between keystrokes and about every 30 ms while it
 * waits for input (the visualization window pumps its events there). NULL, the default, removes
 * it; nl_idle() runs it when set. Single-threaded: call both from the main thread. */
void nl_set_idle_hook(void (*fn)(void));
void nl_idle(void);

/* ---------------------------------------------------------------- dtypes ---------------- */

typedef enum { NL_F32 = 0, NL_I8, NL_I32, NL_U8, NL_DTYPE_COUNT } nl_dtype;

typedef struct {
    const char *name;  /* "f32", "i8", "i32", "u8" */
    size_t size;       /* bytes per element */
    bool is_float;
    double min, max;   /* representable range (for saturating conversion) */
} nl_dtype_traits;

extern const nl_dtype_traits nl_dtype_table[NL_DTYPE_COUNT];
static inline const nl_dtype_traits *nl_dtype_info(nl_dtype t) { return &nl_dtype_table[t]; }
/* Parses a dtype name ("f32", "float32", "i8", "int8", ...); returns NL_DTYPE_COUNT if unknown. */
nl_dtype nl_dtype_parse(const char *name);

/* ---------------------------------------------------------------- devices --------------- */

/* A device is a kind (cpu, cuda, sim) and a number: "cuda:1" is the second CUDA device, and each
 * number is its own backend instance. The value is kind + 256 * number, so NL_CPU, NL_CUDA and
 * NL_SIM name device 0 of their kind and compare equal to it. NL_DEVICE_COUNT counts the kinds
 * (and is what nl_device_parse returns for a name it does not know). */
typedef enum { NL_CPU = 0, NL_CUDA, NL_SIM, NL_DEVICE_COUNT } nl_device;
#define NL_DEVICE_MAX_INDEX 16 /* device numbers 0 .. 15 of each kind */
static inline nl_device nl_device_kind(nl_device d) { return (nl_device)((unsigned)d & 255u); }
static inline int nl_device_index(nl_device d) { return (int)((unsigned)d >> 8); }
static inline nl_device nl_device_make(nl_device kind, int index)
{
    return (nl_device)((unsigned)kind + 256u * (unsigned)index);
}
/* "cpu", "sim", "cuda" for device 0, "sim:1", "cuda:3" for the others (a static string). */
const char *nl_device_name(nl_device d);
/* "cpu", "sim", "sim:2", "cuda", "cuda:0", "cuda:1", "gpu" (= cuda:0); returns NL_DEVICE_COUNT
 * if the kind is unknown or the number out of range (0 .. NL_DEVICE_MAX_INDEX-1). */
nl_device nl_device_parse(const char *name);

/* ---------------------------------------------------------------- backends -------------- */

typedef struct nl_backend nl_backend;
typedef struct nl_op nl_op;

/* What a device has cost so far (sys.device_stats): kernel launches, bytes copied host->device
 * and device->host (and within the device), synchronisations, and device memory now, at its
 * peak and in allocations; mem_cached: freed memory a caching allocator keeps for reuse. */
typedef struct {
    uint64_t launches, bytes_h2d, bytes_d2h, bytes_d2d, copies_h2d, copies_d2h, syncs, allocs;
    uint64_t mem_current, mem_peak, mem_cached;
} nl_device_stats;

/* A backend is a vtable plus a context (ggml-backend style), one instance per device number.
 * The CPU backend is the reference for every op; others may support a subset (supports() says
 * which). */
struct nl_backend {
    const char *name;
    nl_device device; /* kind and number (nl_device_make) */
    void *ctx;
    /* Returns device memory of `bytes` bytes (aligned to 64), or NULL (error set). */
    void *(*alloc)(nl_backend *be, size_t bytes);
    void (*free)(nl_backend *be, void *ptr);
    /* Copies bytes between host and this backend's memory (either side may be this device). */
    nl_status (*copy)(nl_backend *be, void *dst, nl_device dst_dev, const void *src,
                      nl_device src_dev, size_t bytes);
    void (*sync)(nl_backend *be);
    bool (*supports)(nl_backend *be, const nl_op *op);
    nl_status (*exec)(nl_backend *be, const nl_op *op);
    /* Optional (NULL: the backend keeps no statistics): copies the counters into *out, then
     * zeroes them when reset (the peak restarts at the memory in use). */
    void (*stats)(nl_backend *be, nl_device_stats *out, bool reset);
};

/* Returns the backend instance of a device (made on first use by its kind's provider), or NULL
 * with an NL_EDEVICE error ("no CUDA device", "sim:3: no such device"). */
nl_backend *nl_backend_get(nl_device d);
/* Registers one instance under be->device (replacing any). */
void nl_backend_register(nl_backend *be);
/* Registers the provider of a kind: instance(n) returns the backend of device number n, or NULL
 * with the error set (no such device). Called once per kind by nl_init (backends/registry.c). */
void nl_backend_provide(nl_device kind, nl_backend *(*instance)(int index));
/* Initialises the library (registers the backends, reads NNLAB_THREADS). Idempotent. Defined in
 * backends/registry.c: core knows no backend by name. */
void nl_init(void);
/* Threads used by CPU kernels and BLAS (backends/registry.c). */
void nl_set_threads(int n);
int nl_get_threads(void);
/* The precision of convolutions and matrix products (as an autocast does): NL_PREC_F32, or
 * NL_PREC_BF16, mixed precision: their inputs rounded to bf16, their sums in fp32 (the CPU backend
 * and sim; CUDA refuses these ops under bf16). Everything else stays fp32. Process-wide, set from
 * the host thread (backends/registry.c). */
typedef enum { NL_PREC_F32, NL_PREC_BF16, NL_PREC_COUNT } nl_precision;
void nl_set_precision(nl_precision p);
nl_precision nl_get_precision(void);
/* Nonzero while a backend's exec or copy call runs (nl_op_exec and the tensor copies count
 * them): the only time a backend's own memory may be addressed through nl_tensor_data. */
int nl_backend_depth(void);
void nl_backend_enter(void);
void nl_backend_leave(void);

/* ---------------------------------------------------------------- storage and tensors --- */

/* Marks a parameter a callback's signature requires but its body does not use. */
#define NL_UNUSED __attribute__((unused))

#define NL_MAX_DIMS 8

/* A refcounted block of memory on one backend. */
typedef struct nl_storage {
    int refcount;
    nl_backend *backend;
    size_t bytes;
    void *ptr;
} nl_storage;

/* A tensor is a refcounted view on a storage: offset and strides are in elements. */
typedef struct nl_tensor {
    int refcount;
    nl_storage *storage;
    size_t offset;
    nl_dtype dtype;
    int ndim;
    int64_t shape[NL_MAX_DIMS];
    int64_t strides[NL_MAX_DIMS];
} nl_tensor;

/* Constructors return a new reference (refcount 1), or NULL with the error set
 * (NL_ENOMEM for sizes beyond the machine's memory, NL_EINVAL for negative sizes or too many
 * dimensions). The contents of nl_tensor_empty are unspecified. */
nl_tensor *nl_tensor_empty(nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev);
nl_tensor *nl_tensor_zeros(nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev);
/* A tensor with the same dtype, shape and device as t (contiguous). */
nl_tensor *nl_tensor_empty_like(const nl_tensor *t);
/* A buffer kept from call to call in *slot: *slot itself when it is a contiguous tensor of this
 * dtype, shape and device that nobody else holds (one reference, its own storage), else a new
 * one (contents unspecified) that replaces it. Borrowed (the slot owns it); NULL with the error
 * set (*slot NULL then). */
nl_tensor *nl_tensor_reuse(nl_tensor **slot, nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev);
/* Wraps a copy of host data (contiguous, row-major). */
nl_tensor *nl_tensor_from_data(nl_dtype dtype, int ndim, const int64_t *shape, const void *data);

nl_tensor *nl_tensor_retain(nl_tensor *t);
/* Drops a reference; frees the tensor (and its storage when last) at zero. NULL is a no-op. */
void nl_tensor_release(nl_tensor *t);

int64_t nl_tensor_numel(const nl_tensor *t);
bool nl_tensor_is_contiguous(const nl_tensor *t);
nl_device nl_tensor_device(const nl_tensor *t);
/* Pointer to the first element of a host tensor (storage->ptr + offset*size). Host memory only:
 * device tensors are read through nl_tensor_host / nl_tensor_item. Backends take pointers to their
 * own memory inside their exec and copy calls (nl_backend_depth() > 0). Checked builds
 * (NL_CHECKED: DEBUG=1, SAN=1) stop with a message when a device tensor's pointer is taken
 * outside a backend call. */
void *nl_tensor_data(const nl_tensor *t);
static inline float *nl_tensor_f32(const nl_tensor *t) { return (float *)nl_tensor_data(t); }
/* Formats a shape as "[2, 3, 4]" into buf; returns buf. */
char *nl_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);
bool nl_same_shape(const nl_tensor *a, const nl_tensor *b);

/* NL_OK when 0 <= dim < ndim, else NL_EINVAL with "fn: dimension <dim+1> out of range ...". */
nl_status nl_check_dim(const char *fn, int dim, int ndim);
/* Views share storage (new reference to a new tensor header). shape may contain one -1. */
nl_tensor *nl_tensor_reshape(nl_tensor *t, int ndim, const int64_t *shape);
nl_tensor *nl_tensor_transpose(nl_tensor *t, int d0, int d1);        /* 0-based dims */
nl_tensor *nl_tensor_slice(nl_tensor *t, int dim, int64_t start, int64_t stop); /* [start,stop) */
nl_tensor *nl_tensor_permute(nl_tensor *t, const int *perm);
/* A contiguous tensor with t's contents: t itself retained if already contiguous. */
nl_tensor *nl_tensor_contiguous(nl_tensor *t);
/* A contiguous copy (new storage). */
nl_tensor *nl_tensor_clone(const nl_tensor *t);
/* Moves t's elements into block (a contiguous tensor of t's dtype and device) from element
 * offset on, and makes t a contiguous view there: t stays the same object, so every holder of t
 * sees the new memory (the parameter store packs a network this way). NL_EINVAL when t does not
 * fit (dtype, device, room) or is not contiguous; on error t is unchanged. */
nl_status nl_tensor_rebase(nl_tensor *t, nl_tensor *block, int64_t offset);
/* A copy on another device / with another dtype (saturating, rounding to nearest for ints). */
nl_tensor *nl_tensor_to_device(const nl_tensor *t, nl_device dev);
nl_tensor *nl_tensor_to_dtype(const nl_tensor *t, nl_dtype dtype);
/* The one way to read a tensor on the host: a contiguous CPU tensor with t's values, t itself
 * retained when it already is one, else a copy (one transfer from a device). New reference, or
 * NULL with the error set. */
nl_tensor *nl_tensor_host(const nl_tensor *t);
/* The value of a one-element tensor as a double (one small copy from a device); NL_ESHAPE when t
 * has more than one element. */
nl_status nl_tensor_item(const nl_tensor *t, double *out);
/* ggml's get_tensor / set_tensor: copy n elements starting at element `first` of a contiguous
 * tensor t to / from host memory (one transfer on a device; a memmove on the host). NL_EINVAL
 * for a non-contiguous t or a range past its end. */
nl_status nl_tensor_get_data(const nl_tensor *t, void *dst, size_t first, size_t n);
nl_status nl_tensor_set_data(nl_tensor *t, const void *src, size_t first, size_t n);

/* Element access by 0-based multi-index (host tensors); value as double. */
nl_status nl_tensor_get(const nl_tensor *t, const int64_t *idx, double *out);
nl_status nl_tensor_set(nl_tensor *t, const int64_t *idx, double v);

/* ---------------------------------------------------------------- operations ------------ */

typedef enum {
    NL_BIN_ADD, NL_BIN_SUB, NL_BIN_MUL, NL_BIN_DIV, NL_BIN_POW, NL_BIN_MAX, NL_BIN_MIN,
    /* comparisons: output dtype u8 (0/1) */
    NL_BIN_EQ, NL_BIN_NE, NL_BIN_LT, NL_BIN_LE, NL_BIN_GT, NL_BIN_GE,
    NL_BINOP_COUNT
} nl_binop;

typedef enum {
    NL_UN_NEG, NL_UN_RELU, NL_UN_EXP, NL_UN_LOG, NL_UN_ABS, NL_UN_SQRT, NL_UN_TANH,
    NL_UN_SIGMOID,
    NL_UNOP_COUNT
} nl_unop;
/* Activations that are not unary ops, numbered after them (NL_OP_ACT, NL_OP_ACT_BWD's i[0]). */
typedef enum { NL_ACT_LEAKY_RELU = NL_UNOP_COUNT, NL_ACT_GELU, NL_ACT_SOFTMAX } nl_act;

typedef enum {
    NL_RED_SUM, NL_RED_MEAN, NL_RED_MAX, NL_RED_MIN, NL_RED_ARGMAX, NL_RED_ARGMIN, NL_REDOP_COUNT
} nl_redop;

const char *nl_binop_name(nl_binop op);
const char *nl_unop_name(nl_unop op);
const char *nl_redop_name(nl_redop op);
static inline bool nl_binop_is_compare(nl_binop op) { return op >= NL_BIN_EQ; }

/* The operation codes a backend executes. Core validates shapes and dtypes, allocates outputs,
 * and hands the backend one nl_op; kernels may assume the op is well-formed. */
typedef enum {
    NL_OP_FILL,      /* dst[...] = f[0] */
    NL_OP_COPY,      /* dst = convert(src[0]), any strides, any dtypes, same shape */
    NL_OP_BINARY,    /* dst = src[0] (op i[0]) src[1], both already broadcast to dst's shape by strides */
    NL_OP_BINARY_SCALAR, /* dst = src[0] op f[0] (i[1]=1: f[0] op src[0]) */
    NL_OP_UNARY,     /* dst = op i[0] (src[0]) */
    NL_OP_REDUCE,    /* dst = reduce i[0] of src[0] over dim i[1] (-1: all), dst shape given */
    NL_OP_MATMUL,    /* dst[b] = src[0][b] @ src[1][b]; f32; (B,M,K)x(B,K,N)->(B,M,N), strided ok */
    NL_OP_RAND_UNIFORM, /* dst = U(f[0], f[1]) from counter-based RNG, key u[0], counter u[1] */
    NL_OP_RAND_NORMAL,  /* dst = N(f[0], f[1]) likewise */
    /* Layer kernels (f32, contiguous NCHW unless stated; core/<layer>.c validates, backends
     * implement). i[] holds integer hyper-parameters, f[] real ones. */
    NL_OP_CONV2D,           /* dst[N,O,OH,OW] = x src[0][N,C,H,W] * w src[1][O,C,KH,KW] + bias src[2][O]
                               (src[2] may be NULL); i[0]=stride, i[1]=padding; aux f32 [T, C*KH*KW,
                               OH*OW] is a workspace, a slice per thread (T >= 1) (CPU) */
    NL_OP_CONV2D_BWD_DATA,  /* dst gx[N,C,H,W] = d/dx given gy src[0], w src[1]; i as CONV2D; aux f32
                               [T, C*KH*KW, OH*OW] is a workspace, a slice per thread (T >= 1; CPU) */
    NL_OP_CONV2D_BWD_FILTER,/* dst gw[O,C,KH,KW] += d/dw given x src[0], gy src[1]; aux gbias[O] += sum gy
                               (aux may be NULL); i as CONV2D */
    NL_OP_POOL2D,           /* dst = pool src[0]; i[0]=0 max / 1 avg, i[1]=k, i[2]=stride, i[3]=padding;
                               max: aux (i32, dst's shape) receives the flat h*W+w argmax, may be NULL */
    NL_OP_POOL2D_BWD,       /* dst gx (zeroed by kernel) from gy src[0] and, for max, indices src[1];
                               i as POOL2D; max: src[2] (the pool's output y, may be NULL) keeps
                               only the gradient of maxima that are > 0 (a ReLU's backward fused
                               in) */
    NL_OP_BATCHNORM,        /* dst y = (x - mean) / sqrt(var + f[0]) * gamma + beta per channel; x src[0]
                               [N,C,...]; gamma src[1], beta src[2] [C] (NULL: 1, 0); stats [2,C] rows
                               mean, var: i[0]=0 read from src[3], i[0]=1 the batch's (biased var)
                               written to aux. Details in core/nn/batchnorm.c */
    NL_OP_BATCHNORM_BWD,    /* dst gx from gy src[0], x src[1], gamma src[2] (NULL: 1), stats src[3]
                               as forward; i[0]=1 full batch gradient, 0 affine; f[0]=eps; aux [2,C]
                               (may be NULL) receives rows dgamma, dbeta */
    NL_OP_ACT,              /* dst = f(src[0]) for i[0] = NL_ACT_LEAKY_RELU (slope f[0]) or NL_ACT_GELU */
    NL_OP_ACT_BWD,          /* dst gx = gy src[0] * f'(src[1]); i[0] = nl_unop or NL_ACT_*, src[1] = x
                               (or y where stated), f[0] = slope for leaky relu */
    NL_OP_SOFTMAX,          /* dst = softmax over the last dim of src[0]; i[0]=1: log-softmax */
    NL_OP_DROPOUT,          /* dst = src[0] * keep / (1-p), f[0]=p: keep[k] = u01(u[0], u[1] + k) >= p
                               written to aux (u8), or read from src[1] (u8) when given (backward) */
    NL_OP_CROSS_ENTROPY,    /* dst [N] = -sum_c q * src[0] with src[0] log-probabilities [N,C], q the
                               target src[1] (i32 classes [N] or f32 probabilities [N,C]) smoothed:
                               (1 - f[0]) * q + f[0] / C; NaN for a class outside [0, C) */
    NL_OP_CROSS_ENTROPY_BWD,/* dst [N,C] = f[1] * (exp(src[0]) * sum_c q - q); src, f[0] as forward */
    NL_OP_SGD_STEP,         /* torch.optim.SGD on param dst (f32, contiguous) with grad src[0] and
                               momentum buffer src[1] (updated in place; NULL when f[1]=0);
                               f[0]=lr f[1]=momentum f[2]=weight_decay f[3]=dampening;
                               i[0]=nesterov, i[1]=1: first step, the buffer starts as the gradient */
    NL_OP_ADAM_STEP,        /* torch.optim.Adam/AdamW on param dst (f32, contiguous) with grad src[0],
                               moments m src[1] and v src[2] (updated in place); f[0]=lr f[1]=beta1
                               f[2]=beta2 f[3]=eps f[4]=weight_decay; i[0]=step (1 on the first),
                               i[1]=1: AdamW (decoupled decay), 0: Adam (L2 added to the gradient) */
    /* Quantized inference (core/compress/qlayers.c; kernels in backends/cpu/qgemm.c). u8 activations are
     * NHWC and affine (real = scale * (q - zero_point)), i8 weights symmetric per output channel. */
    NL_OP_QCONV2D,          /* y = conv(x, w) + bias, then ReLU when i[2]=1, with int32 accumulation:
                               x src[0] u8 [N,H,W,C] (scale f[0], zero point f[1]), w src[1] i8
                               [O,C,K,K] with scales src[2] f32 [O], bias src[3] f32 [O] (may be
                               NULL); i[0]=stride, i[1]=padding; dst u8 [N,OH,OW,O] requantized to
                               scale f[2], zero point f[3], or f32 [N,O,OH,OW] (dequantized). A
                               linear layer is the 1x1 case on [N,1,1,in] */
    NL_OP_QUANTIZE,         /* dst u8 [N,H,W,C] = clamp(round(src[0] / f[0]) + f[1], 0, 255) from f32
                               [N,C,H,W] (2-D [N,K]: no transpose), or the inverse: dst f32 NCHW =
                               f[0] * (src[0] - f[1]) from u8 NHWC */
    NL_OP_QPOOL2D,          /* dst u8 [N,OH,OW,C] = max pool of src[0] u8 [N,H,W,C]; i as POOL2D */
    NL_OP_INT4_DEQUANT,     /* dst f32 [O,K] = f[0] * code[o][k / i[0]] * (nibble[o][k] - 8): nibbles
                               src[0] u8 [O, ceil(K/2)] (element 2j low, 2j+1 high), codes src[1]
                               u8 [O, ceil(K/i[0])] (i[0]: the group size). Kernels in
                               backends/cpu/int4.c, as the two below */
    NL_OP_INT4_LINEAR,      /* dst f32 [N,O] = src[0] f32 [N,K] (contiguous) x w^T + bias, with w the
                               weights of INT4_DEQUANT (base f[0], group i[0]) from nibbles src[1] and
                               codes src[2], bias src[3] f32 [O] (may be NULL); w is dequantized a few
                               rows at a time inside the kernel, never as a whole */
    NL_OP_INT4_CONV2D,      /* dst f32 [N,O,OH,OW] = conv(src[0] f32 [N,C,H,W] (contiguous), w) + bias
                               with w [O, C*k*k] as for INT4_LINEAR (src[1..3], f[0], i[0]); i[1]=k,
                               i[2]=stride, i[3]=padding */
    NL_OP_FAKEQUANT,        /* dst = s * (clamp(round(x / s) + zp, f[2], f[3]) - zp) for x src[0] (f32,
                               contiguous): per tensor s = f[0], zp = f[1], or per row of dim 0 with
                               scales src[1] f32 [rows] and zp 0. With a gradient src[2] (x's shape)
                               it is the straight-through backward: dst = src[2] where f[2] <=
                               round(x / s) + zp <= f[3], else 0 */
    /* Sparse execution of pruned layers (core/compress/prune.c decides, layers call; kernels in
     * backends/cpu/sparse.c). The weight is in CSR as a matrix [O, K]: row pointers rp src[1] i32
     * [O+1] (rp[0] = 0, rp[O] = nnz), column indices src[2] i32 [>= nnz] (increasing in a row)
     * and values src[3] f32 [>= nnz]; bias src[4] f32 [O] (may be NULL). */
    NL_OP_SPCONV2D,         /* dst[N,O,OH,OW] = the convolution of x src[0][N,C,H,W] by that weight
                               with K = C*KH*KW in the order (c, kh, kw) of a dense [O,C,KH,KW];
                               i[0]=stride, i[1]=padding, i[2]=KH, i[3]=KW; aux f32 [T, K, OH*OW]
                               is the im2col workspace, a slice per thread (T >= 1) (CPU) */
    NL_OP_SPLINEAR,         /* dst[M,O] = x src[0][M,K] W^T + bias, x and dst contiguous; aux f32
                               [T, 16*K] is a workspace, a slice per thread (T >= 1; may be NULL
                               when M < 16) (CPU) */
    /* Selection and scans (core/tensor/index.c, math.c; kernels in backends/cpu/cpu_index.c). */
    NL_OP_WHERE,            /* dst = src[0] != 0 ? src[1] : src[2] elementwise; src[0] u8, src[1] and
                               src[2] of dst's dtype, all three broadcast to dst's shape by strides */
    NL_OP_GATHER,           /* dst[.., j, ..] = src[0][.., idx[.., j, ..] - i[1], ..] along dim i[0],
                               with idx src[1] (any dtype, whole numbers) of dst's shape, whose other
                               dims index src[0] directly; NL_EINVAL naming the first index outside
                               [i[1], i[1] + size) or not whole (counted from i[1]) */
    NL_OP_CUMSUM,           /* dst = the running sum of src[0] along dim i[0] (same shape; sums in
                               double, converted to dst's dtype) */
    NL_OP_SORT,             /* dst values and aux (i32) indices + i[2] of the first dst.shape[i[0]]
                               elements of each line of src[0] along dim i[0] in order: i[1]=1
                               descending, 0 ascending; NaN counts as the largest value; equal
                               values keep their order (stable) */
    NL_OPCODE_COUNT
} nl_opcode;

#define NL_OP_MAX_SRC 5
struct nl_op {
    nl_opcode code;
    nl_tensor *dst;
    nl_tensor *aux;          /* a second output where an op has one (pooling indices, masks) */
    const nl_tensor *src[NL_OP_MAX_SRC];
    int i[4];
    double f[6];
    uint64_t u[2];
};
const char *nl_opcode_name(nl_opcode c);

/* Runs one op on dst's backend (all tensors must be on that device). */
nl_status nl_op_exec(const nl_op *op);

/* In-place / into-destination forms return a status; dst must already have the result shape
 * (dtype conversion happens when dst's dtype differs, as for copy). */
nl_status nl_fill(nl_tensor *dst, double v);
nl_status nl_copy(nl_tensor *dst, const nl_tensor *src); /* same numel? no: same shape */
nl_status nl_binary(nl_binop op, nl_tensor *dst, const nl_tensor *a, const nl_tensor *b);
nl_status nl_binary_scalar(nl_binop op, nl_tensor *dst, const nl_tensor *a, double s, bool scalar_first);
nl_status nl_unary(nl_unop op, nl_tensor *dst, const nl_tensor *a);
nl_status nl_matmul(nl_tensor *dst, const nl_tensor *a, const nl_tensor *b);
/* As nl_matmul; accumulate adds the product into dst (BLAS beta = 1): NL_OP_MATMUL with i[0]=1. */
nl_status nl_matmul_ex(nl_tensor *dst, const nl_tensor *a, const nl_tensor *b, bool accumulate);

/* Allocating forms return a new reference or NULL (error set). Broadcasting follows NumPy:
 * shapes are aligned at the right; a size-1 dimension stretches. Arithmetic on two dtypes
 * promotes to f32 if either is f32, else to i32. Comparisons give u8; div of integers gives f32.
 * With a scalar s, an integer tensor keeps its dtype when s is a whole number in its range, else
 * widens to i32 (s fits there) or f32. Unary functions other than neg/abs/relu give f32. */
nl_tensor *nl_binary_new(nl_binop op, const nl_tensor *a, const nl_tensor *b);
/* The dtype arithmetic on a and b gives (before the division and comparison rules): a when both
 * agree, f32 when either is f32, else i32. */
nl_dtype nl_promote(nl_dtype a, nl_dtype b);
nl_tensor *nl_binary_scalar_new(nl_binop op, const nl_tensor *a, double s, bool scalar_first);
nl_tensor *nl_unary_new(nl_unop op, const nl_tensor *a);
/* dim: 0-based, or -1 for all elements (result is a 0-d tensor, ndim 0). keepdim keeps the
 * reduced dimension with size 1. argmax and argmin return i32 indices (0-based; of equal values
 * the first). sum/mean of integer tensors return f32. */
nl_tensor *nl_reduce_new(nl_redop op, const nl_tensor *a, int dim, bool keepdim);
/* 1-D and 2-D, and batched 3-D (B,M,K)x(B,K,N) or broadcast (M,K)x(B,K,N); f32 only.
 * Shape errors name both shapes. */
nl_tensor *nl_matmul_new(const nl_tensor *a, const nl_tensor *b);

/* Computes the broadcast shape of a and b into out (ndim in *out_ndim); NL_ESHAPE if they do not
 * broadcast (message names both shapes and the context string). */
nl_status nl_broadcast_shape(const char *ctx, const nl_tensor *a, const nl_tensor *b,
                             int *out_ndim, int64_t *out_shape);
/* A view of t expanded (stride 0) to shape; NL_ESHAPE if not broadcastable. */
nl_tensor *nl_tensor_expand(nl_tensor *t, int ndim, const int64_t *shape);

/* ---------------------------------------------------------------- shape operations ------ */

/* core/tensor/shape.c. Dims are 0-based. Views (select, unsqueeze, squeeze, view, expand, and
 * flatten of a contiguous tensor) share t's storage; the others return new contiguous tensors.
 * All return a new reference or NULL with the error set (NL_EINVAL for a dim out of range,
 * NL_ESHAPE for shapes that do not fit; messages name the operation). */
/* A new header on t's storage: any offset, shape and strides (NULL: contiguous); the caller
 * keeps them inside the storage. */
nl_tensor *nl_tensor_strided_view(nl_tensor *t, size_t offset, int ndim, const int64_t *shape,
                                  const int64_t *strides);
/* Entry i of dim (that dim removed): the 1-D case gives a 0-d tensor. */
nl_tensor *nl_tensor_select(nl_tensor *t, int dim, int64_t i);
/* A size-1 dim inserted at position dim (0..ndim). */
nl_tensor *nl_tensor_unsqueeze(nl_tensor *t, int dim);
/* dim < 0: every size-1 dim removed; else dim removed when its size is 1 (t's shape otherwise). */
nl_tensor *nl_tensor_squeeze(nl_tensor *t, int dim);
/* As nl_tensor_reshape (one size may be -1) but never a copy: NL_ESHAPE if t is not contiguous. */
nl_tensor *nl_tensor_view(nl_tensor *t, int ndim, const int64_t *shape);
/* Dims start..end (inclusive) merged into one: a view when t is contiguous, else a copy. */
nl_tensor *nl_tensor_flatten(nl_tensor *t, int start, int end);
/* t tiled reps[d] times along each dim (PyTorch's repeat): nreps >= ndim, t's shape is padded
 * with leading 1s to nreps dims. */
nl_tensor *nl_tensor_repeat(const nl_tensor *t, int nreps, const int64_t *reps);
/* The n tensors joined along an existing dim (cat) or a new one (stack, dim 0..ndim); their
 * dtypes promote as arithmetic does; all on one device. */
nl_tensor *nl_tensor_cat(int n, const nl_tensor *const *ts, int dim);
nl_tensor *nl_tensor_stack(int n, const nl_tensor *const *ts, int dim);

/* ---------------------------------------------------------------- selection and math ---- */

/* core/tensor/index.c and math.c: allocating forms, each a new reference (contiguous, on the
 * input's device) or NULL with the error set. dim is 0-based. Index tensors may have any dtype
 * holding whole numbers that count from base (0 in C, 1 from Lua); indices out of range are
 * NL_EINVAL errors that name them (counted from base). */
/* cond ? a : b elementwise (cond u8, broadcast as arithmetic; a and b promote). */
nl_tensor *nl_where_new(const nl_tensor *cond, const nl_tensor *a, const nl_tensor *b);
/* t with v where mask (u8, broadcastable to t's shape) is nonzero; t's dtype. */
nl_tensor *nl_masked_fill_new(const nl_tensor *t, const nl_tensor *mask, double v);
/* out[..j..] = t[..index[..j..]..] along dim: index has t's ndim, sizes <= t's in other dims. */
nl_tensor *nl_gather_new(const nl_tensor *t, int dim, const nl_tensor *index, int base);
/* The entries index (1-D) of dim, in that order. */
nl_tensor *nl_index_select_new(const nl_tensor *t, int dim, const nl_tensor *index, int base);
/* The k largest (largest) or smallest entries along dim, in order, and their indices (i32,
 * counted from base); k = -1: all of them (sort). Equal values keep their order. */
nl_status nl_sort_new(const nl_tensor *t, int dim, int64_t k, bool largest, int base,
                      nl_tensor **values, nl_tensor **indices);
/* Running sum along dim: f32 for f32 tensors, i32 for integer ones. */
nl_tensor *nl_cumsum_new(const nl_tensor *t, int dim);
/* Softmax or log-softmax along dim (f32; integer tensors are converted). */
nl_tensor *nl_softmax_new(const nl_tensor *t, int dim, bool log);
/* max(min(t, lo), hi) with NaN bounds meaning none (PyTorch's clamp: hi wins over lo). */
nl_tensor *nl_clamp_new(const nl_tensor *t, double lo, double hi);
/* The p-norm over dim (-1: all elements, a 0-d result), as torch.norm: p = inf is max |x|,
 * -inf min |x|, 0 the count of nonzeros. f32. */
nl_tensor *nl_norm_new(const nl_tensor *t, double p, int dim, bool keepdim);
/* Variance (or standard deviation) over dim (-1: all), divided by n - correction (1: unbiased).
 * f32. */
nl_tensor *nl_var_new(const nl_tensor *t, int dim, bool keepdim, int correction, bool std);
/* The outer product of two 1-D tensors: [n, m]. */
nl_tensor *nl_outer_new(const nl_tensor *a, const nl_tensor *b);

/* ---------------------------------------------------------------- random numbers -------- */

/* A counter-based generator: element k of a fill draws from hash(key, counter + k), so the same
 * seed gives the same numbers whatever the thread count. State is (seed, counter). The key is the
 * seed: an op that draws numbers takes u[0] = nl_rng_get_state().seed, u[1] = nl_rng_reserve(n). */
typedef struct { uint64_t seed, counter; } nl_rng_state;
void nl_rng_seed(uint64_t seed);
nl_rng_state nl_rng_get_state(void);
void nl_rng_set_state(nl_rng_state s);
/* Reserves n draws from the global stream and returns the first counter. */
uint64_t nl_rng_reserve(uint64_t n);
nl_status nl_rand_uniform(nl_tensor *dst, double lo, double hi);
nl_status nl_rand_normal(nl_tensor *dst, double mean, double std);
/* Scalar draws from the global stream (for shuffles, dropout decisions in C, ...). */
double nl_rng_uniform01(void);
uint64_t nl_rng_u64(void);
/* The pure functions under it all: a 64-bit mix of (key, counter), U[0,1) and N(0,1). */
uint64_t nl_rng_hash(uint64_t key, uint64_t counter);
float nl_rng_u01_at(uint64_t key, uint64_t counter);
float nl_rng_normal_at(uint64_t key, uint64_t counter);
/* Fills the i32 tensor dst [n] (CPU, contiguous) with a permutation of 0..n-1 drawn from the
 * pure hash stream of key (Fisher-Yates; touches no global RNG state): the same key always gives
 * the same order. NL_EINVAL for another tensor. */
nl_status nl_permutation(nl_tensor *dst, uint64_t key);

/* ---------------------------------------------------------------- files ----------------- */

/* NumPy .npy: reads f32, f64 (as f32), i8, u8, i32, i64 (as i32, NL_EFORMAT if out of range),
 * C or Fortran order; writes f32/i8/i32/u8. Errors name the path and the problem. Writes are
 * atomic (temporary file, fsync, rename). */
nl_tensor *nl_npy_load(const char *path);
nl_status nl_npy_save(const char *path, const nl_tensor *t);

/* Atomic file writing, shared by every saver: opens "<path>.tmp.<pid>", and on commit fsyncs
 * and renames over path; on abort removes the temporary file. */
typedef struct { void *fp; char *path; char *tmp; } nl_atomic_file;
nl_status nl_atomic_open(nl_atomic_file *af, const char *path);
nl_status nl_atomic_write(nl_atomic_file *af, const void *buf, size_t n);
nl_status nl_atomic_commit(nl_atomic_file *af);
/* The same rename without the fsyncs: whole against a crash or kill of the process (the rename is
 * atomic), not against a power loss; for small files rewritten often whose loss costs little (a
 * run folder's histories, every few seconds), where the fsyncs would cost more than the write. */
nl_status nl_atomic_commit_nosync(nl_atomic_file *af);
void nl_atomic_abort(nl_atomic_file *af);

/* What a manifest says about files (core/io/files.c). The data loaders note each file (or image
 * folder) they read with nl_files_note (the real path, once; at most 256). nl_files_get(i) gives
 * noted file i (0-based, below nl_files_count()): a new malloc'd path, its SHA-256 in hex and its
 * size; a folder's digest is the SHA-256 of its sorted listing ("name size" lines) and bytes its
 * files' total (*folder set). NL_EIO when it cannot be read now. A file's hash is computed once
 * while it keeps its size and modification time. */
void nl_files_note(const char *path);
int nl_files_count(void);
nl_status nl_files_get(int i, char **path, char hex[65], int64_t *bytes, bool *folder);
nl_status nl_file_digest(const char *path, char hex[65], int64_t *bytes, bool *folder);
void nl_sha256(const void *data, size_t n, char hex[65]);
/* Creates the folder dir and its parents (mkdir -p); NL_EIO naming the folder that failed. */
nl_status nl_mkdirs(const char *dir);

/* ---------------------------------------------------------------- memory limits ---------- */

/* Refuses single allocations above this many bytes (default: physical memory). */
size_t nl_mem_limit(void);
void nl_set_mem_limit(size_t bytes);
/* Sets how many bytes of tensor storage this thread may still allocate (-1: no budget; each
 * allocation beyond it fails with NL_ENOMEM) and returns the previous budget. Loaders set it so a
 * small file cannot make nnlab allocate more than the file could fill. */
int64_t nl_alloc_budget(int64_t bytes);
/* Bytes of tensor storage allocated since start-up (a running total, never decreasing). */
uint64_t nl_mem_allocated(void);
/* Multiplies sizes with overflow checking; false on overflow. */
bool nl_mul_overflow(size_t a, size_t b, size_t *out);

#endif
