/* math.c: tensor math along a dimension: cumsum (NL_OP_CUMSUM), softmax along any dim, and the
 * compositions of existing ops that PyTorch users expect by name: clamp, norm, var / std, outer. */
#include "nl.h"

#include <math.h>


/* Releases a and returns b: for chains of allocating ops, x = step(x, f(x)). */
static nl_tensor *step(nl_tensor *a, nl_tensor *b)
{
    nl_tensor_release(a);
    return b;
}

nl_tensor *nl_cumsum_new(const nl_tensor *t, int dim)
{
    if (nl_check_dim("cumsum", dim, t->ndim) != NL_OK) return NULL;
    nl_tensor *out = nl_tensor_empty(t->dtype == NL_F32 ? NL_F32 : NL_I32, t->ndim, t->shape,
                                     nl_tensor_device(t));
    if (!out) return NULL;
    nl_op op = {.code = NL_OP_CUMSUM, .dst = out, .src = {t}, .i = {dim}};
    if (nl_op_exec(&op) == NL_OK) return out;
    nl_tensor_release(out);
    return NULL;
}

nl_tensor *nl_softmax_new(const nl_tensor *t, int dim, bool log)
{
    if (nl_check_dim(log ? "log_softmax" : "softmax", dim, t->ndim) != NL_OK) return NULL;
    /* NL_OP_SOFTMAX works on the last dim of a contiguous f32 tensor: move dim there and back. */
    const int last = t->ndim - 1;
    nl_tensor *x = t->dtype == NL_F32 ? nl_tensor_retain((nl_tensor *)t) : nl_tensor_to_dtype(t, NL_F32);
    if (x && dim != last) x = step(x, nl_tensor_transpose(x, dim, last));
    if (x) x = step(x, nl_tensor_contiguous(x));
    nl_tensor *y = x ? nl_tensor_empty_like(x) : NULL;
    if (y) {
        nl_op op = {.code = NL_OP_SOFTMAX, .dst = y, .src = {x}, .i = {log}};
        if (nl_op_exec(&op) != NL_OK) y = step(y, NULL);
    }
    nl_tensor_release(x);
    if (y && dim != last) {
        y = step(y, nl_tensor_transpose(y, dim, last));
        if (y) y = step(y, nl_tensor_contiguous(y));
    }
    return y;
}

nl_tensor *nl_clamp_new(const nl_tensor *t, double lo, double hi)
{
    nl_tensor *y = isnan(lo) ? nl_tensor_clone(t) : nl_binary_scalar_new(NL_BIN_MAX, t, lo, false);
    if (y && !isnan(hi)) y = step(y, nl_binary_scalar_new(NL_BIN_MIN, y, hi, false));
    return y;
}

nl_tensor *nl_norm_new(const nl_tensor *t, double p, int dim, bool keepdim)
{
    if (dim != -1 && nl_check_dim("norm", dim, t->ndim) != NL_OK) return NULL;
    if (isnan(p)) {
        nl_seterr(NL_EINVAL, "norm: p is NaN");
        return NULL;
    }
    nl_tensor *a = t->dtype == NL_F32 ? nl_tensor_retain((nl_tensor *)t) : nl_tensor_to_dtype(t, NL_F32);
    if (a) a = step(a, nl_unary_new(NL_UN_ABS, a));
    if (!a) return NULL;
    if (isinf(p)) return step(a, nl_reduce_new(p > 0 ? NL_RED_MAX : NL_RED_MIN, a, dim, keepdim));
    if (p == 0) {
        a = step(a, nl_binary_scalar_new(NL_BIN_NE, a, 0, false));
        return a ? step(a, nl_reduce_new(NL_RED_SUM, a, dim, keepdim)) : NULL;
    }
    if (p == 2) a = step(a, nl_binary_new(NL_BIN_MUL, a, a));
    else if (p != 1) a = step(a, nl_binary_scalar_new(NL_BIN_POW, a, p, false));
    if (a) a = step(a, nl_reduce_new(NL_RED_SUM, a, dim, keepdim));
    if (a && p != 1)
        a = step(a, p == 2 ? nl_unary_new(NL_UN_SQRT, a) : nl_binary_scalar_new(NL_BIN_POW, a, 1 / p, false));
    return a;
}

nl_tensor *nl_var_new(const nl_tensor *t, int dim, bool keepdim, int correction, bool std)
{
    const char *name = std ? "std" : "var";
    if (dim != -1 && nl_check_dim(name, dim, t->ndim) != NL_OK) return NULL;
    const int64_t n = dim < 0 ? nl_tensor_numel(t) : t->shape[dim];
    nl_tensor *mean = nl_reduce_new(NL_RED_MEAN, t, dim, true);
    nl_tensor *d = mean ? nl_binary_new(NL_BIN_SUB, t, mean) : NULL;
    nl_tensor_release(mean);
    if (d) d = step(d, nl_binary_new(NL_BIN_MUL, d, d));
    if (d) d = step(d, nl_reduce_new(NL_RED_SUM, d, dim, keepdim));
    /* n - correction <= 0 gives inf or NaN, as in PyTorch */
    if (d) d = step(d, nl_binary_scalar_new(NL_BIN_DIV, d, (double)(n - correction), false));
    if (d && std) d = step(d, nl_unary_new(NL_UN_SQRT, d));
    return d;
}

nl_tensor *nl_outer_new(const nl_tensor *a, const nl_tensor *b)
{
    if (a->ndim != 1 || b->ndim != 1) {
        nl_seterr(NL_ESHAPE, "outer: needs two 1-D tensors, got %d-D and %d-D", a->ndim, b->ndim);
        return NULL;
    }
    const int64_t col[2] = {a->shape[0], 1};
    nl_tensor *c = nl_tensor_reshape((nl_tensor *)a, 2, col);
    nl_tensor *out = c ? nl_binary_new(NL_BIN_MUL, c, b) : NULL;
    nl_tensor_release(c);
    return out;
}
