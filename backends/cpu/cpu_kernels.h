/* cpu_kernels.h: private to the CPU backend: the strided N-d iterator every kernel shares, the
 * saturating dtype conversions, and the kernel entry points that cpu_backend.c dispatches to. */
#ifndef NL_CPU_KERNELS_H
#define NL_CPU_KERNELS_H

#include "nl.h"
#include "hd/quant_hd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* The saturating conversions are shared with the CUDA backend (hd/quant_hd.h). */
#define cpu_f32_to_i8 nl_hd_f32_to_i8
#define cpu_f32_to_u8 nl_hd_f32_to_u8
#define cpu_f64_to_i8 nl_hd_f64_to_i8
#define cpu_f64_to_u8 nl_hd_f64_to_u8
#define cpu_f64_to_i32 nl_hd_f64_to_i32
#define cpu_f32_to_i32 nl_hd_f32_to_i32
#define cpu_int_to_i8 nl_hd_int_to_i8
#define cpu_int_to_u8 nl_hd_int_to_u8
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

/* ---------------------------------------------------------------- matrix products ------- */

/* How a BLAS reads one matrix operand of a row-major product (rows x cols per batch item, a
 * 2-D or 3-D tensor; batch stride sb may be 0): in place (direct) as stored (trans false: rows
 * ld apart) or as the transpose of a row-major cols x rows matrix (trans true, ld apart); or,
 * when its strides allow neither or ld would exceed ld_max, packed first into a contiguous copy
 * (direct false, ld = cols). cpu_matmul.c uses it, and the CUDA backend for cuBLAS. */
typedef struct {
    int64_t batch, rows, cols, sb, sr, sc;
    bool direct, trans;
    int64_t ld;
} cpu_gemm_layout;
cpu_gemm_layout cpu_gemm_layout_of(const nl_tensor *t, int64_t ld_max);

/* ---------------------------------------------------------------- bf16 products -------- */

/* f to bf16 as AVX512_BF16 converts: round to nearest even, subnormals to a zero of their sign,
 * NaN kept quiet. */
static inline uint16_t cpu_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t nan = (u >> 16) | 0x40, zero = (u >> 16) & 0x8000,
                   rounded = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    /* without branches, so that loops of it vectorise */
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : (u & 0x7f800000u) == 0 ? zero : rounded);
}
static inline float cpu_bf16_to_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Which kernel computes the bf16 products (gemm_bf16.c): the plain-C reference, AVX2 emulating
 * the bf16 dot product, or AVX512_BF16's own; all three give the same bits. Chosen by cpuid
 * features within cpu_isa(). */
typedef enum { CPU_BF16_REFERENCE, CPU_BF16_EMULATED, CPU_BF16_NATIVE, CPU_BF16_PATH_COUNT } cpu_bf16_path;
cpu_bf16_path cpu_bf16_path_of(void);
/* "native avx512_bf16", "emulated avx2" or "emulated generic". */
const char *cpu_bf16_path_name(cpu_bf16_path p);
/* c [M, N] (row-major, ldc) = a [M, K] @ b [K, N] (or += when accumulate) with a and b rounded to
 * bf16 and fp32 sums in a fixed order (see gemm_bf16.c); ta / tb: a / b is stored transposed
 * (a[k*lda + m], b[n*ldb + k]). The packed copies go to ws (cpu_gemm_bf16_ws(M, N, K) words), or
 * to memory of its own when ws is NULL (NL_ENOMEM if there is none). Runs on up to `threads`
 * threads (1 inside a parallel region); the result does not depend on them. */
nl_status cpu_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *a,
                        int64_t lda, const float *b, int64_t ldb, bool accumulate, float *c,
                        int64_t ldc, uint32_t *ws, int threads);
int64_t cpu_gemm_bf16_ws(int64_t M, int64_t N, int64_t K);

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

/* The direct (stride-1, no im2col) convolution (conv_direct.c) of a padded image xp [C, Hp, Wp]
 * into y [O, OH, OW] (OH = Hp - KH + 1, OW = Wp - KW + 1), with weights packed by
 * cpu_conv_direct_pack into blocks of CPU_DR output channels: wp [ceil(O/DR), C*KH*KW, DR], zeros
 * past O. flip packs the data gradient's weights instead (outputs C, inputs O, kernel rotated by
 * 180 degrees), so backward data is a forward direct convolution of gy padded by K-1-p. The AVX2
 * kernel and the plain-C reference sum each output in the same order with fused multiply-adds,
 * so they agree bit for bit. Single-threaded; bias may be NULL. */
enum { CPU_DR = 6, CPU_FR = 3 }; /* output channels per tile: forward, filter gradient */
typedef struct {
    int64_t C, Hp, Wp, O, KH, KW, OH, OW;
} cpu_direct_geom;
void cpu_conv_direct_pack(const float *w, int64_t O, int64_t C, int64_t KH, int64_t KW, bool flip,
                          float *wp);
/* xp [C, H+2p, W+2p] = x [C, H, W] with p zeros around each channel. */
void cpu_conv_pad(const float *x, int64_t C, int64_t H, int64_t W, int64_t p, float *xp);
void cpu_conv_direct_avx2(const cpu_direct_geom *g, const float *xp, const float *wp,
                          const float *bias, float *y);
void cpu_conv_direct_ref(const cpu_direct_geom *g, const float *xp, const float *wp,
                         const float *bias, float *y);
/* The filter gradient's direct kernel: for output channels [o0, o1), lanes [o1-o0, C*KH*KW, 8] += the
 * products gy[n][o] x xp[n][c] shifted by (kh, kw) over the N images of gy [N, O, OH, OW] and the
 * padded xp [N, C, Hp, Wp], in 8 lanes (the output pixel's column mod 8), image by image in order;
 * cpu_lanes_sum then adds a run of 8 lanes in a fixed order. Reference and AVX2 agree bit for bit. */
void cpu_conv_filter_avx2(const cpu_direct_geom *g, int64_t N, const float *xp, const float *gy,
                          int64_t o0, int64_t o1, float *lanes);
void cpu_conv_filter_ref(const cpu_direct_geom *g, int64_t N, const float *xp, const float *gy,
                         int64_t o0, int64_t o1, float *lanes);
float cpu_lanes_sum(const float *l);

/* ---------------------------------------------------------------- instruction sets ------ */

/* The widest instruction set the CPU kernels may use (isa.c): the CPU's own (cpuid), or lower when
 * NNLAB_ISA or nl_cpu_set_isa says so. */
typedef enum { CPU_ISA_GENERIC, CPU_ISA_AVX2, CPU_ISA_AVX512, CPU_ISA_COUNT } cpu_isa_level;
cpu_isa_level cpu_isa(void);
/* Notes that "what how" ran (e.g. "conv", "direct avx2"), for nl_cpu_kernels_take. Host thread. */
void cpu_note_kernel(const char *what, const char *how);

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
