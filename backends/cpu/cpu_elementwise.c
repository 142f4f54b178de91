/* cpu_elementwise.c: the CPU's elementwise kernels (fill, copy, binary, binary with a scalar,
 * unary, random fills): typed inner loops driven by the shared iterator in cpu_iter.c. */
#include "cpu_kernels.h"
#include "hd/act_hd.h"
#include "hd/arith_hd.h"

#include <string.h>

/* ---------------------------------------------------------------- inner loops ----------- */

typedef void (*bin_loop)(void *d, int64_t sd, const void *a, int64_t sa, const void *b,
                         int64_t sb, int64_t n);
typedef void (*un_loop)(void *d, int64_t sd, const void *a, int64_t sa, int64_t n);

/* A binary loop d = EXPR(x, y). The body is inlined with constant strides for the contiguous
 * case and the row/column broadcasts (one stride 0), so those become flat vector loops. */
#define BIN_LOOP(name, TI, TO, EXPR) \
    static inline __attribute__((always_inline)) void name##_body( \
        TO *d, int64_t sd, const TI *a, int64_t sa, const TI *b, int64_t sb, int64_t n) \
    { \
        for (int64_t i = 0; i < n; i++) { \
            const TI x = a[i * sa], y = b[i * sb]; \
            d[i * sd] = (TO)(EXPR); \
        } \
    } \
    static void name(void *d, int64_t sd, const void *a, int64_t sa, const void *b, int64_t sb, \
                     int64_t n) \
    { \
        if (sd == 1 && sa == 1 && sb == 1) name##_body(d, 1, a, 1, b, 1, n); \
        else if (sd == 1 && sa == 1 && sb == 0) name##_body(d, 1, a, 1, b, 0, n); \
        else if (sd == 1 && sa == 0 && sb == 1) name##_body(d, 1, a, 0, b, 1, n); \
        else name##_body(d, sd, a, sa, b, sb, n); \
    }

#define UN_LOOP(name, T, EXPR) \
    static inline __attribute__((always_inline)) void name##_body(T *d, int64_t sd, const T *a, \
                                                                  int64_t sa, int64_t n) \
    { \
        for (int64_t i = 0; i < n; i++) { \
            const T x = a[i * sa]; \
            d[i * sd] = (T)(EXPR); \
        } \
    } \
    static void name(void *d, int64_t sd, const void *a, int64_t sa, int64_t n) \
    { \
        if (sd == 1 && sa == 1) name##_body(d, 1, a, 1, n); \
        else name##_body(d, sd, a, sa, n); \
    }

/* The operations per kind of type, as X-macro lists X(T, suffix, OP, expression of x and y).
 * Integer arithmetic wraps (computed in uint32_t: no signed overflow); float max/min propagate
 * NaN like torch.maximum. Integer division is not here: core promotes it to f32. */
#define FLOAT_ARITH(X, T, s) \
    X(T, s, ADD, x + y) X(T, s, SUB, x - y) X(T, s, MUL, x * y) X(T, s, DIV, x / y) \
    X(T, s, POW, powf(x, y)) X(T, s, MAX, nl_hd_fmax_nan(x, y)) \
    X(T, s, MIN, nl_hd_fmin_nan(x, y))
#define INT_ARITH(X, T, s) \
    X(T, s, ADD, (uint32_t)x + (uint32_t)y) X(T, s, SUB, (uint32_t)x - (uint32_t)y) \
    X(T, s, MUL, (uint32_t)x * (uint32_t)y) X(T, s, POW, nl_hd_ipow_wrap(x, y)) \
    X(T, s, MAX, x > y ? x : y) X(T, s, MIN, x < y ? x : y)
#define COMPARE(X, T, s) \
    X(T, s, EQ, x == y) X(T, s, NE, x != y) X(T, s, LT, x < y) X(T, s, LE, x <= y) \
    X(T, s, GT, x > y) X(T, s, GE, x >= y)
#define FLOAT_UNARY(X, T, s) \
    X(T, s, NEG, -x) X(T, s, RELU, x < 0 ? 0 : x) X(T, s, EXP, expf(x)) X(T, s, LOG, logf(x)) \
    X(T, s, ABS, fabsf(x)) X(T, s, SQRT, sqrtf(x)) X(T, s, TANH, tanhf(x)) \
    X(T, s, SIGMOID, nl_hd_sigmoid(x))
#define SIGNED_UNARY(X, T, s) \
    X(T, s, NEG, 0u - (uint32_t)x) X(T, s, RELU, x < 0 ? 0 : x) \
    X(T, s, ABS, x < 0 ? 0u - (uint32_t)x : (uint32_t)x)
#define UNSIGNED_UNARY(X, T, s) X(T, s, NEG, 0u - (uint32_t)x) X(T, s, RELU, x) X(T, s, ABS, x)

#define DEF_ARITH(T, s, OP, EXPR) BIN_LOOP(bin_##s##_##OP, T, T, EXPR)
#define DEF_COMPARE(T, s, OP, EXPR) BIN_LOOP(bin_##s##_##OP, T, uint8_t, EXPR)
#define DEF_UNARY(T, s, OP, EXPR) UN_LOOP(un_##s##_##OP, T, EXPR)
#define BIN_ENTRY(T, s, OP, EXPR) [NL_BIN_##OP] = bin_##s##_##OP,
#define UN_ENTRY(T, s, OP, EXPR) [NL_UN_##OP] = un_##s##_##OP,

FLOAT_ARITH(DEF_ARITH, float, f32)
INT_ARITH(DEF_ARITH, int8_t, i8)
INT_ARITH(DEF_ARITH, int32_t, i32)
INT_ARITH(DEF_ARITH, uint8_t, u8)
COMPARE(DEF_COMPARE, float, f32)
COMPARE(DEF_COMPARE, int8_t, i8)
COMPARE(DEF_COMPARE, int32_t, i32)
COMPARE(DEF_COMPARE, uint8_t, u8)
COMPARE(DEF_COMPARE, double, f64)
FLOAT_UNARY(DEF_UNARY, float, f32)
SIGNED_UNARY(DEF_UNARY, int8_t, i8)
SIGNED_UNARY(DEF_UNARY, int32_t, i32)
UNSIGNED_UNARY(DEF_UNARY, uint8_t, u8)

/* Arithmetic loops are indexed by the destination's type (they compute in it), comparisons by
 * the type they compare in. NULL: not available (core never asks). */
static const bin_loop bin_loops[CPU_CTYPE_COUNT][NL_BINOP_COUNT] = {
    [CPU_F32] = {FLOAT_ARITH(BIN_ENTRY, float, f32) COMPARE(BIN_ENTRY, float, f32)},
    [CPU_I8] = {INT_ARITH(BIN_ENTRY, int8_t, i8) COMPARE(BIN_ENTRY, int8_t, i8)},
    [CPU_I32] = {INT_ARITH(BIN_ENTRY, int32_t, i32) COMPARE(BIN_ENTRY, int32_t, i32)},
    [CPU_U8] = {INT_ARITH(BIN_ENTRY, uint8_t, u8) COMPARE(BIN_ENTRY, uint8_t, u8)},
    [CPU_F64] = {COMPARE(BIN_ENTRY, double, f64)},
};
static const un_loop un_loops[NL_DTYPE_COUNT][NL_UNOP_COUNT] = {
    [NL_F32] = {FLOAT_UNARY(UN_ENTRY, float, f32)},
    [NL_I8] = {SIGNED_UNARY(UN_ENTRY, int8_t, i8)},
    [NL_I32] = {SIGNED_UNARY(UN_ENTRY, int32_t, i32)},
    [NL_U8] = {UNSIGNED_UNARY(UN_ENTRY, uint8_t, u8)},
};

/* ---------------------------------------------------------------- run functions --------- */

/* Operands whose dtype differs from the compute type are converted a run at a time into a stack
 * buffer (a run is at most CPU_RUN elements); a stride-0 operand converts one element. */
typedef union {
    double f64[CPU_RUN];
    float f32[CPU_RUN];
} run_buf;

static const void *staged(cpu_conv_fn conv, run_buf *buf, const void *p, int64_t *stride, int64_t n)
{
    if (!conv) return p;
    conv(buf, 1, p, *stride, *stride ? n : 1);
    *stride = *stride ? 1 : 0;
    return buf;
}

typedef struct {
    bin_loop loop;
    cpu_conv_fn conv[2]; /* per input: to the compute type, or NULL */
} bin_ctx;

static void bin_run(void *ctx, char *const *p, const int64_t *s, int64_t n, int64_t index NL_UNUSED)
{
    const bin_ctx *c = ctx;
    run_buf ba, bb;
    int64_t sa = s[1], sb = s[2];
    const void *a = staged(c->conv[0], &ba, p[1], &sa, n);
    const void *b = staged(c->conv[1], &bb, p[2], &sb, n);
    c->loop(p[0], s[0], a, sa, b, sb, n);
}

typedef struct {
    un_loop loop;
    cpu_conv_fn conv;
} un_ctx;

static void un_run(void *ctx, char *const *p, const int64_t *s, int64_t n, int64_t index NL_UNUSED)
{
    const un_ctx *c = ctx;
    run_buf ba;
    int64_t sa = s[1];
    const void *a = staged(c->conv, &ba, p[1], &sa, n);
    c->loop(p[0], s[0], a, sa, n);
}

static void conv_run(void *ctx, char *const *p, const int64_t *s, int64_t n, int64_t index NL_UNUSED)
{
    const cpu_conv_fn *conv = ctx;
    (*conv)(p[0], s[0], p[1], s[1], n);
}

/* ---------------------------------------------------------------- kernels --------------- */

/* The conversion of a dtype to compute type ct, or NULL when none is needed. */
static cpu_conv_fn conv_to(nl_dtype from, cpu_ctype ct)
{
    return (cpu_ctype)from == ct ? NULL : cpu_conv[from][ct];
}

/* Runs a binary loop over dst and two inputs (tensors or stride-0 scalars), converting each
 * input with conv[k] (NULL: already in the compute type ct). */
static nl_status run_binary(nl_tensor *dst, nl_binop bop, cpu_ctype ct, const cpu_operand in[2],
                            const cpu_conv_fn conv[2])
{
    bin_ctx c = {bin_loops[ct][bop], {conv[0], conv[1]}};
    if (nl_binop_is_compare(bop) && dst->dtype != NL_U8)
        return nl_seterr(NL_ETYPE, "%s: comparisons write u8, not %s", nl_binop_name(bop),
                         nl_dtype_info(dst->dtype)->name);
    if (!c.loop)
        return nl_seterr(NL_ETYPE, "%s: not available on cpu for %s", nl_binop_name(bop),
                         ct == CPU_F64 ? "f64" : nl_dtype_info((nl_dtype)ct)->name);
    cpu_operand ops[3] = {cpu_tensor_operand(dst), in[0], in[1]};
    cpu_for_each(dst->ndim, dst->shape, 3, ops, bin_run, &c);
    return NL_OK;
}

nl_status cpu_binary(const nl_op *op)
{
    const nl_tensor *a = op->src[0], *b = op->src[1];
    nl_binop bop = (nl_binop)op->i[0];
    /* Arithmetic computes in dst's dtype; comparisons in the inputs' dtype, or in f64 (exact for
     * every dtype) when they differ. */
    cpu_ctype ct = !nl_binop_is_compare(bop) ? (cpu_ctype)op->dst->dtype
                 : a->dtype == b->dtype ? (cpu_ctype)a->dtype : CPU_F64;
    const cpu_operand in[2] = {cpu_tensor_operand(a), cpu_tensor_operand(b)};
    const cpu_conv_fn conv[2] = {conv_to(a->dtype, ct), conv_to(b->dtype, ct)};
    return run_binary(op->dst, bop, ct, in, conv);
}

nl_status cpu_binary_scalar(const nl_op *op)
{
    const nl_tensor *a = op->src[0];
    nl_binop bop = (nl_binop)op->i[0];
    double s = op->f[0], scalar; /* scalar: s in the compute type (8 aligned bytes fit any) */
    cpu_ctype ct = (cpu_ctype)op->dst->dtype;
    if (nl_binop_is_compare(bop)) { /* in a's dtype when s is exact there, else in f64 */
        cpu_store((cpu_ctype)a->dtype, &scalar, s);
        ct = cpu_load((cpu_ctype)a->dtype, &scalar) == s ? (cpu_ctype)a->dtype : CPU_F64;
    }
    cpu_store(ct, &scalar, s);
    const cpu_operand ta = cpu_tensor_operand(a);
    const cpu_operand ts = {(char *)&scalar, cpu_zero_strides, cpu_ctype_size[ct]};
    const cpu_conv_fn conv_a = conv_to(a->dtype, ct);
    const bool first = op->i[1] != 0; /* s op a */
    const cpu_operand in[2] = {first ? ts : ta, first ? ta : ts};
    const cpu_conv_fn conv[2] = {first ? NULL : conv_a, first ? conv_a : NULL};
    return run_binary(op->dst, bop, ct, in, conv);
}

nl_status cpu_unary(const nl_op *op)
{
    const nl_tensor *a = op->src[0];
    nl_unop uop = (nl_unop)op->i[0];
    nl_dtype dt = op->dst->dtype;
    un_ctx c = {un_loops[dt][uop], conv_to(a->dtype, (cpu_ctype)dt)};
    if (!c.loop)
        return nl_seterr(NL_ETYPE, "%s: not available on cpu for %s", nl_unop_name(uop),
                         nl_dtype_info(dt)->name);
    cpu_operand ops[2] = {cpu_tensor_operand(op->dst), cpu_tensor_operand(a)};
    cpu_for_each(op->dst->ndim, op->dst->shape, 2, ops, un_run, &c);
    return NL_OK;
}

nl_status cpu_copy(const nl_op *op)
{
    const nl_tensor *src = op->src[0];
    cpu_conv_fn conv = cpu_conv[src->dtype][op->dst->dtype];
    cpu_operand ops[2] = {cpu_tensor_operand(op->dst), cpu_tensor_operand(src)};
    cpu_for_each(op->dst->ndim, op->dst->shape, 2, ops, conv_run, &conv);
    return NL_OK;
}

/* A fill is a copy from a stride-0 scalar already converted to dst's dtype. */
nl_status cpu_fill(const nl_op *op)
{
    nl_dtype dt = op->dst->dtype;
    double v;
    cpu_store((cpu_ctype)dt, &v, op->f[0]);
    cpu_conv_fn conv = cpu_conv[dt][dt];
    cpu_operand ops[2] = {cpu_tensor_operand(op->dst), {(char *)&v, cpu_zero_strides, nl_dtype_info(dt)->size}};
    cpu_for_each(op->dst->ndim, op->dst->shape, 2, ops, conv_run, &conv);
    return NL_OK;
}

typedef struct {
    float (*draw)(uint64_t key, uint64_t counter);
    uint64_t key, counter;
    double shift, scale;
    float below;  /* uniform fills stay under hi: rounding lo + (hi-lo)*u can reach hi itself */
    cpu_conv_fn store;
} rand_ctx;

/* Element k (logical order) is shift + scale * draw(key, counter + k). */
static void rand_run(void *ctx, char *const *p, const int64_t *s, int64_t n, int64_t index)
{
    const rand_ctx *c = ctx;
    float buf[CPU_RUN];
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(c->shift + c->scale * c->draw(c->key, c->counter + (uint64_t)(index + i)));
        buf[i] = v < c->below ? v : c->below;
    }
    c->store(p[0], s[0], buf, 1, n);
}

nl_status cpu_rand(const nl_op *op)
{
    bool normal = op->code == NL_OP_RAND_NORMAL;
    rand_ctx c = {
        .draw = normal ? nl_rng_normal_at : nl_rng_u01_at,
        .key = op->u[0],
        .counter = op->u[1],
        .shift = op->f[0],
        .scale = normal ? op->f[1] : op->f[1] - op->f[0],
        .below = normal ? INFINITY : nextafterf((float)op->f[1], -INFINITY),
        .store = cpu_conv[NL_F32][op->dst->dtype],
    };
    cpu_operand ops[1] = {cpu_tensor_operand(op->dst)};
    cpu_for_each(op->dst->ndim, op->dst->shape, 1, ops, rand_run, &c);
    return NL_OK;
}
