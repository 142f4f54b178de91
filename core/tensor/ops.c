/* ops.c: the tensor operations' front end: names, dispatch of one op to its backend, dtype
 * promotion, broadcasting, and the validating allocating and into-destination forms. */
#include "nl.h"

#include <math.h>

enum { SHAPE_STR = 192 }; /* room for "[a, b, ...]" with NL_MAX_DIMS 20-digit sizes */

/* ---------------------------------------------------------------- names ----------------- */

static const char *const binop_names[] = {
    [NL_BIN_ADD] = "add", [NL_BIN_SUB] = "sub", [NL_BIN_MUL] = "mul", [NL_BIN_DIV] = "div",
    [NL_BIN_POW] = "pow", [NL_BIN_MAX] = "max", [NL_BIN_MIN] = "min", [NL_BIN_EQ] = "eq",
    [NL_BIN_NE] = "ne",   [NL_BIN_LT] = "lt",   [NL_BIN_LE] = "le",   [NL_BIN_GT] = "gt",
    [NL_BIN_GE] = "ge",
};
static const char *const unop_names[] = {
    [NL_UN_NEG] = "neg", [NL_UN_RELU] = "relu", [NL_UN_EXP] = "exp",   [NL_UN_LOG] = "log",
    [NL_UN_ABS] = "abs", [NL_UN_SQRT] = "sqrt", [NL_UN_TANH] = "tanh", [NL_UN_SIGMOID] = "sigmoid",
};
static const char *const redop_names[] = {
    [NL_RED_SUM] = "sum", [NL_RED_MEAN] = "mean", [NL_RED_MAX] = "max", [NL_RED_MIN] = "min",
    [NL_RED_ARGMAX] = "argmax", [NL_RED_ARGMIN] = "argmin",
};
static const char *const opcode_names[] = {
    [NL_OP_FILL] = "fill",
    [NL_OP_COPY] = "copy",
    [NL_OP_BINARY] = "binary",
    [NL_OP_BINARY_SCALAR] = "binary_scalar",
    [NL_OP_UNARY] = "unary",
    [NL_OP_REDUCE] = "reduce",
    [NL_OP_MATMUL] = "matmul",
    [NL_OP_RAND_UNIFORM] = "rand_uniform",
    [NL_OP_RAND_NORMAL] = "rand_normal",
    [NL_OP_CONV2D] = "conv2d",
    [NL_OP_CONV2D_BWD_DATA] = "conv2d_bwd_data",
    [NL_OP_CONV2D_BWD_FILTER] = "conv2d_bwd_filter",
    [NL_OP_POOL2D] = "pool2d",
    [NL_OP_POOL2D_BWD] = "pool2d_bwd",
    [NL_OP_BATCHNORM] = "batchnorm",
    [NL_OP_BATCHNORM_BWD] = "batchnorm_bwd",
    [NL_OP_ACT] = "act",
    [NL_OP_ACT_BWD] = "act_bwd",
    [NL_OP_SOFTMAX] = "softmax",
    [NL_OP_DROPOUT] = "dropout",
    [NL_OP_CROSS_ENTROPY] = "cross_entropy",
    [NL_OP_CROSS_ENTROPY_BWD] = "cross_entropy_bwd",
    [NL_OP_SGD_STEP] = "sgd_step",
    [NL_OP_ADAM_STEP] = "adam_step",
    [NL_OP_QCONV2D] = "qconv2d",
    [NL_OP_QUANTIZE] = "quantize",
    [NL_OP_QPOOL2D] = "qpool2d",
    [NL_OP_INT4_DEQUANT] = "int4_dequant",
    [NL_OP_INT4_LINEAR] = "int4_linear",
    [NL_OP_INT4_CONV2D] = "int4_conv2d",
    [NL_OP_FAKEQUANT] = "fakequant",
    [NL_OP_SPCONV2D] = "spconv2d",
    [NL_OP_SPLINEAR] = "splinear",
    [NL_OP_WHERE] = "where",
    [NL_OP_GATHER] = "gather",
    [NL_OP_CUMSUM] = "cumsum",
    [NL_OP_SORT] = "sort",
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(COUNT(binop_names) == NL_BINOP_COUNT, "one name per binop");
_Static_assert(COUNT(unop_names) == NL_UNOP_COUNT, "one name per unop");
_Static_assert(COUNT(redop_names) == NL_REDOP_COUNT, "one name per redop");
_Static_assert(COUNT(opcode_names) == NL_OPCODE_COUNT, "one name per opcode");

/* A name from a table, "?" for values outside it (or rows left out). */
static const char *table_name(const char *const *names, size_t n, unsigned i)
{
    return i < n && names[i] ? names[i] : "?";
}
const char *nl_binop_name(nl_binop op) { return table_name(binop_names, COUNT(binop_names), op); }
const char *nl_unop_name(nl_unop op) { return table_name(unop_names, COUNT(unop_names), op); }
const char *nl_redop_name(nl_redop op) { return table_name(redop_names, COUNT(redop_names), op); }
const char *nl_opcode_name(nl_opcode c) { return table_name(opcode_names, COUNT(opcode_names), c); }

/* ---------------------------------------------------------------- dispatch -------------- */

/* The most specific name of an op, for messages: "add" rather than "binary". */
static const char *op_label(const nl_op *op)
{
    switch (op->code) {
    case NL_OP_BINARY:
    case NL_OP_BINARY_SCALAR: return nl_binop_name((nl_binop)op->i[0]);
    case NL_OP_UNARY: return nl_unop_name((nl_unop)op->i[0]);
    case NL_OP_REDUCE: return nl_redop_name((nl_redop)op->i[0]);
    default: return nl_opcode_name(op->code);
    }
}

/* Runs op on dst's backend. NL_EDEVICE if another tensor of the op lives elsewhere,
 * NL_EUNSUPPORTED if the backend lacks the op (or these dtypes), else the kernel's status. */
nl_status nl_op_exec(const nl_op *op)
{
    if (!op || !op->dst || (unsigned)op->code >= NL_OPCODE_COUNT)
        return nl_seterr(NL_EINVAL, "op: malformed operation (no destination or unknown code)");
    nl_backend *be = op->dst->storage->backend;
    const char *name = op_label(op);
    const nl_tensor *others[NL_OP_MAX_SRC + 1] = {op->aux};
    for (int k = 0; k < NL_OP_MAX_SRC; k++) others[k + 1] = op->src[k];
    for (int k = 0; k <= NL_OP_MAX_SRC; k++) {
        if (others[k] && nl_tensor_device(others[k]) != be->device)
            return nl_seterr(NL_EDEVICE, "%s: tensors on %s and %s", name,
                             nl_device_name(be->device), nl_device_name(nl_tensor_device(others[k])));
    }
    const bool product = op->code == NL_OP_MATMUL || op->code == NL_OP_CONV2D ||
                         op->code == NL_OP_CONV2D_BWD_DATA || op->code == NL_OP_CONV2D_BWD_FILTER;
    if (product && nl_get_precision() == NL_PREC_BF16 && nl_device_kind(be->device) == NL_CUDA)
        return nl_seterr(NL_EUNSUPPORTED, "%s: bf16 precision runs on the CPU only (this op is on %s)",
                         name, nl_device_name(be->device));
    if (!be->supports(be, op))
        return nl_seterr(NL_EUNSUPPORTED, "%s: not supported by the %s backend%s", name, be->name,
                         op->code == NL_OP_MATMUL ? " for these dtypes" : "");
    nl_backend_enter();
    nl_status s = be->exec(be, op);
    nl_backend_leave();
    return s;
}

/* ---------------------------------------------------------------- promotion ------------- */

/* Arithmetic on two dtypes: f32 with anything is f32, mixed integers are i32. */
nl_dtype nl_promote(nl_dtype a, nl_dtype b)
{
    return a == b ? a : a == NL_F32 || b == NL_F32 ? NL_F32 : NL_I32;
}

/* Comparisons give u8; division of integers is true division (f32), as in PyTorch. */
static nl_dtype binary_result(nl_binop op, nl_dtype a, nl_dtype b)
{
    if (nl_binop_is_compare(op)) return NL_U8;
    nl_dtype t = nl_promote(a, b);
    return op == NL_BIN_DIV && t != NL_F32 ? NL_F32 : t;
}

/* With a scalar: an integer tensor stays in its dtype when s is a whole number inside its range,
 * widens to i32 when s fits there, and goes to f32 otherwise. */
static nl_dtype scalar_result(nl_binop op, nl_dtype a, double s)
{
    if (nl_binop_is_compare(op)) return NL_U8;
    nl_dtype t = NL_F32;
    if (a != NL_F32 && isfinite(s) && s == floor(s)) {
        const nl_dtype_traits *ta = nl_dtype_info(a), *ti = nl_dtype_info(NL_I32);
        t = s >= ta->min && s <= ta->max ? a : s >= ti->min && s <= ti->max ? NL_I32 : NL_F32;
    }
    return op == NL_BIN_DIV ? NL_F32 : t;
}

/* neg, abs and relu keep integer dtypes; the other functions give f32. */
static nl_dtype unary_result(nl_unop op, nl_dtype a)
{
    return op == NL_UN_NEG || op == NL_UN_ABS || op == NL_UN_RELU ? a : NL_F32;
}

/* ---------------------------------------------------------------- broadcasting ---------- */

nl_status nl_broadcast_shape(const char *ctx, const nl_tensor *a, const nl_tensor *b,
                             int *out_ndim, int64_t *out_shape)
{
    const int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = nd - 1; d >= 0; d--) {
        int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char s1[SHAPE_STR], s2[SHAPE_STR];
            return nl_seterr(NL_ESHAPE, "%s: shapes %s and %s do not broadcast", ctx ? ctx : "broadcast",
                             nl_shape_str(s1, sizeof s1, a->ndim, a->shape),
                             nl_shape_str(s2, sizeof s2, b->ndim, b->shape));
        }
        out_shape[d] = sa == 1 ? sb : sa;
    }
    *out_ndim = nd;
    return NL_OK;
}

/* Fills out with t's header expanded to shape (stride 0 along new and stretched dimensions);
 * false if t does not broadcast to shape. out shares t's storage without a reference. */
static bool expand_header(nl_tensor *out, const nl_tensor *t, int ndim, const int64_t *shape)
{
    if (ndim < t->ndim || ndim > NL_MAX_DIMS) return false;
    *out = *t;
    out->ndim = ndim;
    for (int d = ndim - 1, s = t->ndim - 1; d >= 0; d--, s--) {
        if (s >= 0 && t->shape[s] != shape[d] && t->shape[s] != 1) return false;
        out->shape[d] = shape[d];
        out->strides[d] = s >= 0 && t->shape[s] == shape[d] ? t->strides[s] : 0;
    }
    return true;
}

/* A new reference to a view of t expanded to shape; a size of -1 keeps t's size there (not for
 * new leading dims). NULL with NL_ESHAPE if t does not broadcast to it (or with the view
 * constructor's error). Writing through the view writes shared elements. */
nl_tensor *nl_tensor_expand(nl_tensor *t, int ndim, const int64_t *shape)
{
    nl_tensor h;
    int64_t want[NL_MAX_DIMS];
    bool ok = ndim >= t->ndim && ndim <= NL_MAX_DIMS;
    for (int d = 0; ok && d < ndim; d++) {
        int s = d - (ndim - t->ndim);
        want[d] = shape[d] == -1 && s >= 0 ? t->shape[s] : shape[d];
        ok = want[d] >= 0;
    }
    if (!ok || !expand_header(&h, t, ndim, want)) {
        char s1[SHAPE_STR], s2[SHAPE_STR];
        nl_seterr(NL_ESHAPE, "expand: shape %s cannot expand to %s",
                  nl_shape_str(s1, sizeof s1, t->ndim, t->shape),
                  nl_shape_str(s2, sizeof s2, ndim < 0 ? 0 : ndim > NL_MAX_DIMS ? NL_MAX_DIMS : ndim, shape));
        return NULL;
    }
    return nl_tensor_strided_view(t, t->offset, h.ndim, h.shape, h.strides);
}

/* ---------------------------------------------------------------- into a destination ---- */

static nl_status check_dst_shape(const char *name, const nl_tensor *dst, int ndim, const int64_t *shape)
{
    bool same = dst->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = dst->shape[d] == shape[d];
    if (same) return NL_OK;
    char s1[SHAPE_STR], s2[SHAPE_STR];
    return nl_seterr(NL_ESHAPE, "%s: result shape %s does not match destination %s", name,
                     nl_shape_str(s1, sizeof s1, ndim, shape),
                     nl_shape_str(s2, sizeof s2, dst->ndim, dst->shape));
}

/* Runs op, whose kernel writes dtype rt; when op->dst has another dtype the result goes through
 * a temporary and is converted as nl_copy does. */
static nl_status exec_into(nl_op *op, nl_dtype rt)
{
    nl_tensor *dst = op->dst;
    if (dst->dtype == rt) return nl_op_exec(op);
    nl_tensor *tmp = nl_tensor_empty(rt, dst->ndim, dst->shape, nl_tensor_device(dst));
    if (!tmp) return nl_errcode();
    op->dst = tmp;
    nl_status st = nl_op_exec(op);
    op->dst = dst;
    if (st == NL_OK) st = nl_copy(dst, tmp);
    nl_tensor_release(tmp);
    return st;
}

/* Sets every element of dst (any strides) to v, converted as nl_copy converts. */
nl_status nl_fill(nl_tensor *dst, double v)
{
    nl_op op = {.code = NL_OP_FILL, .dst = dst, .f = {v}};
    return nl_op_exec(&op);
}

/* dst = src converted to dst's dtype (round half to even, saturate, NaN -> 0 for integers).
 * Shapes must be equal (NL_ESHAPE); across devices the data moves through the backends' copy.
 * dst must not partially overlap src. */
nl_status nl_copy(nl_tensor *dst, const nl_tensor *src)
{
    if (!nl_same_shape(dst, src)) {
        char s1[SHAPE_STR], s2[SHAPE_STR];
        return nl_seterr(NL_ESHAPE, "copy: shapes %s and %s differ",
                         nl_shape_str(s1, sizeof s1, src->ndim, src->shape),
                         nl_shape_str(s2, sizeof s2, dst->ndim, dst->shape));
    }
    if (nl_tensor_device(dst) != nl_tensor_device(src)) {
        nl_tensor *moved = nl_tensor_to_device(src, nl_tensor_device(dst));
        if (!moved) return nl_errcode();
        nl_status st = nl_copy(dst, moved);
        nl_tensor_release(moved);
        return st;
    }
    nl_op op = {.code = NL_OP_COPY, .dst = dst, .src = {src}};
    return nl_op_exec(&op);
}

/* dst = a op b with broadcasting; the result dtype follows the promotion rules and is converted
 * to dst's dtype if that differs. NL_ESHAPE if a and b do not broadcast or dst has another shape. */
nl_status nl_binary(nl_binop op, nl_tensor *dst, const nl_tensor *a, const nl_tensor *b)
{
    if ((unsigned)op >= NL_BINOP_COUNT) return nl_seterr(NL_EINVAL, "binary: unknown operation %d", (int)op);
    const char *name = nl_binop_name(op);
    int nd;
    int64_t shape[NL_MAX_DIMS];
    nl_status st = nl_broadcast_shape(name, a, b, &nd, shape);
    if (st == NL_OK) st = check_dst_shape(name, dst, nd, shape);
    if (st != NL_OK) return st;
    nl_tensor ea, eb;
    expand_header(&ea, a, nd, shape);
    expand_header(&eb, b, nd, shape);
    nl_op o = {.code = NL_OP_BINARY, .dst = dst, .src = {&ea, &eb}, .i = {op}};
    return exec_into(&o, binary_result(op, a->dtype, b->dtype));
}

/* dst = a op s (scalar_first: s op a). NL_ESHAPE if dst's shape is not a's. */
nl_status nl_binary_scalar(nl_binop op, nl_tensor *dst, const nl_tensor *a, double s, bool scalar_first)
{
    if ((unsigned)op >= NL_BINOP_COUNT) return nl_seterr(NL_EINVAL, "binary: unknown operation %d", (int)op);
    nl_status st = check_dst_shape(nl_binop_name(op), dst, a->ndim, a->shape);
    if (st != NL_OK) return st;
    nl_op o = {.code = NL_OP_BINARY_SCALAR, .dst = dst, .src = {a}, .i = {op, scalar_first}, .f = {s}};
    return exec_into(&o, scalar_result(op, a->dtype, s));
}

/* dst = op(a). NL_ESHAPE if dst's shape is not a's. */
nl_status nl_unary(nl_unop op, nl_tensor *dst, const nl_tensor *a)
{
    if ((unsigned)op >= NL_UNOP_COUNT) return nl_seterr(NL_EINVAL, "unary: unknown operation %d", (int)op);
    nl_status st = check_dst_shape(nl_unop_name(op), dst, a->ndim, a->shape);
    if (st != NL_OK) return st;
    nl_op o = {.code = NL_OP_UNARY, .dst = dst, .src = {a}, .i = {op}};
    return exec_into(&o, unary_result(op, a->dtype));
}

/* ---------------------------------------------------------------- matmul ---------------- */

/* The product's sizes: batch (1 when neither side has one), m, k, n, and its shape (a 1-D side
 * contributes no dimension, as in NumPy). */
typedef struct {
    int64_t batch, m, k, n;
    int ndim;
    int64_t shape[3];
} mm_plan;

static nl_status mm_plan_make(const nl_tensor *a, const nl_tensor *b, mm_plan *p)
{
    char s1[SHAPE_STR], s2[SHAPE_STR];
    nl_shape_str(s1, sizeof s1, a->ndim, a->shape);
    nl_shape_str(s2, sizeof s2, b->ndim, b->shape);
    if (a->dtype != NL_F32 || b->dtype != NL_F32)
        return nl_seterr(NL_ETYPE, "matmul: needs f32 tensors, got %s and %s",
                         nl_dtype_info(a->dtype)->name, nl_dtype_info(b->dtype)->name);
    if (a->ndim < 1 || a->ndim > 3 || b->ndim < 1 || b->ndim > 3)
        return nl_seterr(NL_ESHAPE, "matmul: shapes %s and %s: only 1-D, 2-D and 3-D tensors multiply", s1, s2);
    int64_t ka = a->shape[a->ndim - 1], kb = b->shape[b->ndim == 1 ? 0 : b->ndim - 2];
    if (ka != kb)
        return nl_seterr(NL_ESHAPE, "matmul: shapes %s and %s do not match (%lld != %lld)", s1, s2,
                         (long long)ka, (long long)kb);
    int64_t ba = a->ndim == 3 ? a->shape[0] : 1, bb = b->ndim == 3 ? b->shape[0] : 1;
    if (ba != bb && ba != 1 && bb != 1)
        return nl_seterr(NL_ESHAPE, "matmul: shapes %s and %s do not match (batch %lld != %lld)", s1,
                         s2, (long long)ba, (long long)bb);
    p->batch = ba == 1 ? bb : ba;
    p->k = ka;
    p->m = a->ndim >= 2 ? a->shape[a->ndim - 2] : 1;
    p->n = b->ndim >= 2 ? b->shape[b->ndim - 1] : 1;
    p->ndim = 0;
    if (a->ndim == 3 || b->ndim == 3) p->shape[p->ndim++] = p->batch;
    if (a->ndim >= 2) p->shape[p->ndim++] = p->m;
    if (b->ndim >= 2) p->shape[p->ndim++] = p->n;
    return NL_OK;
}

/* t seen as a (batch, rows, cols) tensor: present[i] says which of the three t has (in order);
 * missing or stretched ones get stride 0. Shares t's storage without a reference. */
static nl_tensor as_batched(const nl_tensor *t, bool has_batch, bool has_rows, bool has_cols,
                            int64_t batch, int64_t rows, int64_t cols)
{
    const bool present[3] = {has_batch, has_rows, has_cols};
    const int64_t size[3] = {batch, rows, cols};
    nl_tensor v = *t;
    v.ndim = 3;
    for (int i = 0, d = 0; i < 3; i++) {
        v.shape[i] = size[i];
        v.strides[i] = present[i] && t->shape[d] == size[i] ? t->strides[d] : 0;
        d += present[i];
    }
    return v;
}

/* dst (+)= a @ b with NumPy's 1-D/2-D/3-D rules. NL_ETYPE unless a and b are f32 (and dst too when
 * accumulating), NL_ESHAPE naming both shapes, NL_EINTR if Ctrl-C comes between batch items. */
nl_status nl_matmul_ex(nl_tensor *dst, const nl_tensor *a, const nl_tensor *b, bool accumulate)
{
    mm_plan p;
    nl_status st = mm_plan_make(a, b, &p);
    if (st == NL_OK) st = check_dst_shape("matmul", dst, p.ndim, p.shape);
    if (st != NL_OK) return st;
    if (dst->dtype != NL_F32) { /* compute in f32, then convert */
        if (accumulate)
            return nl_seterr(NL_ETYPE, "matmul: accumulating needs an f32 destination, got %s",
                             nl_dtype_info(dst->dtype)->name);
        nl_tensor *tmp = nl_tensor_empty(NL_F32, dst->ndim, dst->shape, nl_tensor_device(dst));
        if (!tmp) return nl_errcode();
        st = nl_matmul_ex(tmp, a, b, false);
        if (st == NL_OK) st = nl_copy(dst, tmp);
        nl_tensor_release(tmp);
        return st;
    }
    const bool batched = a->ndim == 3 || b->ndim == 3;
    nl_tensor va = as_batched(a, a->ndim == 3, a->ndim >= 2, true, p.batch, p.m, p.k);
    nl_tensor vb = as_batched(b, b->ndim == 3, true, b->ndim >= 2, p.batch, p.k, p.n);
    nl_tensor vc = as_batched(dst, batched, a->ndim >= 2, b->ndim >= 2, p.batch, p.m, p.n);
    nl_op op = {.code = NL_OP_MATMUL, .dst = &vc, .src = {&va, &vb}, .i = {accumulate}};
    return nl_op_exec(&op);
}

nl_status nl_matmul(nl_tensor *dst, const nl_tensor *a, const nl_tensor *b)
{
    return nl_matmul_ex(dst, a, b, false);
}

/* ---------------------------------------------------------------- allocating forms ------ */

/* Each returns a new reference (contiguous, on a's device) or NULL with the error of the
 * matching into-destination form. */

/* Runs an into-destination form on a new tensor; returns it, or NULL (released) on error. */
static nl_tensor *filled(nl_tensor *out, nl_status st)
{
    if (out && st == NL_OK) return out;
    nl_tensor_release(out);
    return NULL;
}

nl_tensor *nl_binary_new(nl_binop op, const nl_tensor *a, const nl_tensor *b)
{
    int nd;
    int64_t shape[NL_MAX_DIMS];
    if ((unsigned)op >= NL_BINOP_COUNT) {
        nl_seterr(NL_EINVAL, "binary: unknown operation %d", (int)op);
        return NULL;
    }
    if (nl_broadcast_shape(nl_binop_name(op), a, b, &nd, shape) != NL_OK) return NULL;
    nl_tensor *out = nl_tensor_empty(binary_result(op, a->dtype, b->dtype), nd, shape, nl_tensor_device(a));
    return filled(out, out ? nl_binary(op, out, a, b) : NL_OK);
}

nl_tensor *nl_binary_scalar_new(nl_binop op, const nl_tensor *a, double s, bool scalar_first)
{
    if ((unsigned)op >= NL_BINOP_COUNT) {
        nl_seterr(NL_EINVAL, "binary: unknown operation %d", (int)op);
        return NULL;
    }
    nl_tensor *out = nl_tensor_empty(scalar_result(op, a->dtype, s), a->ndim, a->shape, nl_tensor_device(a));
    return filled(out, out ? nl_binary_scalar(op, out, a, s, scalar_first) : NL_OK);
}

nl_tensor *nl_unary_new(nl_unop op, const nl_tensor *a)
{
    if ((unsigned)op >= NL_UNOP_COUNT) {
        nl_seterr(NL_EINVAL, "unary: unknown operation %d", (int)op);
        return NULL;
    }
    nl_tensor *out = nl_tensor_empty(unary_result(op, a->dtype), a->ndim, a->shape, nl_tensor_device(a));
    return filled(out, out ? nl_unary(op, out, a) : NL_OK);
}

nl_tensor *nl_reduce_new(nl_redop op, const nl_tensor *a, int dim, bool keepdim)
{
    char s1[SHAPE_STR];
    if ((unsigned)op >= NL_REDOP_COUNT) {
        nl_seterr(NL_EINVAL, "reduce: unknown operation %d", (int)op);
        return NULL;
    }
    const char *name = nl_redop_name(op);
    if (dim < -1 || dim >= a->ndim) {
        nl_seterr(NL_EINVAL, "%s: dimension %d out of range for a tensor with %d dimensions", name,
                  dim + 1, a->ndim);
        return NULL;
    }
    int nd = 0;
    int64_t shape[NL_MAX_DIMS], len = dim < 0 ? nl_tensor_numel(a) : a->shape[dim], nout = 1;
    for (int d = 0; d < a->ndim; d++) {
        bool reduced = dim < 0 || d == dim;
        if (reduced && !keepdim) continue;
        shape[nd] = reduced ? 1 : a->shape[d];
        nout *= shape[nd++];
    }
    if (len == 0 && nout > 0 && op != NL_RED_SUM && op != NL_RED_MEAN) {
        nl_seterr(NL_ESHAPE, "%s: cannot reduce over no elements (shape %s)", name,
                  nl_shape_str(s1, sizeof s1, a->ndim, a->shape));
        return NULL;
    }
    const bool arg = op == NL_RED_ARGMAX || op == NL_RED_ARGMIN;
    if (arg && len > INT32_MAX) {
        nl_seterr(NL_EINVAL, "%s: %lld elements are more than i32 indices can address", name, (long long)len);
        return NULL;
    }
    nl_dtype dt = arg ? NL_I32 : op == NL_RED_SUM || op == NL_RED_MEAN ? NL_F32 : a->dtype;
    nl_tensor *out = nl_tensor_empty(dt, nd, shape, nl_tensor_device(a));
    if (!out) return NULL;
    nl_op o = {.code = NL_OP_REDUCE, .dst = out, .src = {a}, .i = {op, dim}};
    return filled(out, nl_op_exec(&o));
}

nl_tensor *nl_matmul_new(const nl_tensor *a, const nl_tensor *b)
{
    mm_plan p;
    if (mm_plan_make(a, b, &p) != NL_OK) return NULL;
    nl_tensor *out = nl_tensor_empty(NL_F32, p.ndim, p.shape, nl_tensor_device(a));
    return filled(out, out ? nl_matmul(out, a, b) : NL_OK);
}
