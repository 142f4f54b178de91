/* cpu_kernels.h: private to the CPU backend: the strided N-d iterator every kernel shares, the
 * saturating dtype conversions, and the kernel entry points that cpu_backend.c dispatches to. */
#ifndef NL_CPU_KERNELS_H
#define NL_CPU_KERNELS_H

#include "nl.h"

#include <math.h>
#include <stdint.h>

enum {
    CPU_RUN = 2048,         /* longest run the iterator hands a run function (bounds stack buffers) */
    CPU_PAR_MIN = 32768,    /* fewer elements than this stay on one thread */
    CPU_RED_BLOCK = 4096,   /* reductions combine partial results of blocks this long, in order */
    CPU_MAX_OPS = 4,        /* operands of one iteration (dst first) */
};

/* The types kernels compute in: the dtypes, plus f64 for comparisons of mixed dtypes. */
typedef enum {
    CPU_F32 = NL_F32, CPU_I8 = NL_I8, CPU_I32 = NL_I32, CPU_U8 = NL_U8, CPU_F64, CPU_CTYPE_COUNT
} cpu_ctype;
_Static_assert(NL_DTYPE_COUNT == 4, "cpu_ctype lists every dtype, then f64");
extern const size_t cpu_ctype_size[CPU_CTYPE_COUNT];

/* ---------------------------------------------------------------- iteration ------------- */

/* One operand of an iteration: a base pointer, element strides over the iteration's shape, and
 * its element size. A scalar is an operand with cpu_zero_strides. */
typedef struct {
    char *base;
    const int64_t *strides;
    size_t esize;
} cpu_operand;
extern const int64_t cpu_zero_strides[NL_MAX_DIMS];
cpu_operand cpu_tensor_operand(const nl_tensor *t);

/* The geometry of an iteration after dropping size-1 dimensions and merging dimensions that are
 * contiguous for every operand; the logical (row-major) element order is kept. */
typedef struct {
    int ndim, nops;
    int64_t numel;
    int64_t shape[NL_MAX_DIMS];
    int64_t strides[CPU_MAX_OPS][NL_MAX_DIMS];
    size_t esize[CPU_MAX_OPS];
} cpu_iter;

/* Called for each run of n elements along the innermost dimension: ptr[k] points at operand k's
 * first element, stride[k] is its element stride, index is the run's first logical index. */
typedef void (*cpu_run_fn)(void *ctx, char *const *ptr, const int64_t *stride, int64_t n,
                           int64_t index);

void cpu_iter_init(cpu_iter *it, int ndim, const int64_t *shape, int nops, const cpu_operand *ops);
/* Visits logical indices [begin, end) in order, in runs of at most CPU_RUN elements. */
void cpu_iter_range(const cpu_iter *it, char *const *base, int64_t begin, int64_t end,
                    cpu_run_fn fn, void *ctx);
/* Visits every element of shape, splitting the index range across threads when it is large.
 * fn must treat ctx as read-only. */
void cpu_for_each(int ndim, const int64_t *shape, int nops, const cpu_operand *ops, cpu_run_fn fn,
                  void *ctx);
/* Threads to use for `work` elements: 1 below CPU_PAR_MIN, else nl_get_threads(). */
int cpu_threads_for(int64_t work);

/* ---------------------------------------------------------------- conversions ----------- */

/* Float -> integer: round half to even (nearbyint in the default rounding mode), clamp to the
 * range, NaN -> 0. Integer -> narrower integer: clamp. The bounds are exact in F. */
#define CPU_SAT_FLOAT(name, F, RND, T, LO, HI) \
    static inline T name(F x) { \
        F r = RND(x); \
        return r != r ? 0 : r <= (F)(LO) ? (T)(LO) : r >= (F)(HI) ? (T)(HI) : (T)r; \
    }
CPU_SAT_FLOAT(cpu_f32_to_i8, float, nearbyintf, int8_t, INT8_MIN, INT8_MAX)
CPU_SAT_FLOAT(cpu_f32_to_u8, float, nearbyintf, uint8_t, 0, UINT8_MAX)
CPU_SAT_FLOAT(cpu_f64_to_i8, double, nearbyint, int8_t, INT8_MIN, INT8_MAX)
CPU_SAT_FLOAT(cpu_f64_to_u8, double, nearbyint, uint8_t, 0, UINT8_MAX)
CPU_SAT_FLOAT(cpu_f64_to_i32, double, nearbyint, int32_t, INT32_MIN, INT32_MAX)
#undef CPU_SAT_FLOAT
/* INT32_MAX is not a float: (float)INT32_MAX is 2^31, the first value that must saturate. */
static inline int32_t cpu_f32_to_i32(float x)
{
    float r = nearbyintf(x);
    return r != r ? 0 : r >= 2147483648.0f ? INT32_MAX : r <= -2147483648.0f ? INT32_MIN : (int32_t)r;
}
static inline int8_t cpu_int_to_i8(int32_t x) { return x < INT8_MIN ? INT8_MIN : x > INT8_MAX ? INT8_MAX : (int8_t)x; }
static inline uint8_t cpu_int_to_u8(int32_t x) { return x < 0 ? 0 : x > UINT8_MAX ? UINT8_MAX : (uint8_t)x; }
static inline int32_t cpu_int_to_i32(int32_t x) { return x; }

/* CPU_TO_<type>(x): x (of any dtype's C type, or double) converted to <type>, saturating. */
#define CPU_TO_f32(x) ((float)(x))
#define CPU_TO_f64(x) ((double)(x))
#define CPU_TO_i8(x) _Generic((x), float: cpu_f32_to_i8, double: cpu_f64_to_i8, default: cpu_int_to_i8)(x)
#define CPU_TO_u8(x) _Generic((x), float: cpu_f32_to_u8, double: cpu_f64_to_u8, default: cpu_int_to_u8)(x)
#define CPU_TO_i32(x) _Generic((x), float: cpu_f32_to_i32, double: cpu_f64_to_i32, default: cpu_int_to_i32)(x)

/* dst[i*sd] = convert(src[i*ss]) for i < n, strides in elements of each side's type. */
typedef void (*cpu_conv_fn)(void *dst, int64_t sd, const void *src, int64_t ss, int64_t n);
extern const cpu_conv_fn cpu_conv[NL_DTYPE_COUNT][CPU_CTYPE_COUNT];

/* Stores v (converted, saturating) as compute type t at p; loads one value as double. */
void cpu_store(cpu_ctype t, void *p, double v);
double cpu_load(cpu_ctype t, const void *p);

/* ---------------------------------------------------------------- convolution ----------- */

/* The geometry of a convolution of x [N, C, H, W] by O filters of KH x KW into y [N, O, OH, OW]. */
typedef struct {
    int64_t N, C, H, W, O, KH, KW, OH, OW, s, p;
    int64_t ckk, P; /* rows and columns of one image's column matrix */
} cpu_conv_geom;
cpu_conv_geom cpu_conv_geometry(const nl_tensor *x, int64_t O, int64_t KH, int64_t KW,
                                const nl_tensor *y, int64_t stride, int64_t padding);
/* im2col of one image x [C, H, W] (conv2d.c): cols [C*KH*KW, OH*OW], row (c, kh, kw), column
 * (oh, ow) = x[c][oh*s - p + kh][ow*s - p + kw], 0 outside the image. Single-threaded. */
void cpu_im2col(const cpu_conv_geom *g, const float *x, float *cols);

/* ---------------------------------------------------------------- kernels --------------- */

/* Each takes a well-formed op (core validated it) and returns NL_OK or an error it has set. */
nl_status cpu_fill(const nl_op *op);
nl_status cpu_copy(const nl_op *op);
nl_status cpu_binary(const nl_op *op);
nl_status cpu_binary_scalar(const nl_op *op);
nl_status cpu_unary(const nl_op *op);
nl_status cpu_rand(const nl_op *op);
nl_status cpu_reduce(const nl_op *op);
nl_status cpu_matmul(const nl_op *op);
nl_status cpu_where(const nl_op *op);  /* cpu_index.c */
nl_status cpu_gather(const nl_op *op);
nl_status cpu_cumsum(const nl_op *op);
nl_status cpu_sort(const nl_op *op);

#endif
