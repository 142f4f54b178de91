/* index.c: selection by condition and by index: where, masked_fill, gather, index_select, and
 * sort / topk. Core checks shapes and dtypes and allocates; the backend's kernels (NL_OP_WHERE,
 * NL_OP_GATHER, NL_OP_SORT) read the data, indices included. */
#include "nl.h"

#include <stdio.h>
#include <string.h>

enum { SHAPE_STR = 192 };


/* A tensor header with only a shape, for nl_broadcast_shape. */
static nl_tensor shape_only(int ndim, const int64_t *shape)
{
    nl_tensor h = {.ndim = ndim};
    for (int d = 0; d < ndim; d++) h.shape[d] = shape[d];
    return h;
}

/* ---------------------------------------------------------------- where ----------------- */

nl_tensor *nl_where_new(const nl_tensor *cond, const nl_tensor *a, const nl_tensor *b)
{
    if (cond->dtype != NL_U8) {
        nl_seterr(NL_ETYPE, "where: the condition must be u8 (as comparisons give), got %s",
                  nl_dtype_info(cond->dtype)->name);
        return NULL;
    }
    int nd;
    int64_t shape[NL_MAX_DIMS];
    if (nl_broadcast_shape("where", a, b, &nd, shape) != NL_OK) return NULL;
    nl_tensor ab = shape_only(nd, shape);
    if (nl_broadcast_shape("where", cond, &ab, &nd, shape) != NL_OK) return NULL;
    const nl_dtype rt = nl_promote(a->dtype, b->dtype);
    const nl_device dev = nl_tensor_device(cond);
    nl_tensor *ops[3] = {NULL, NULL, NULL}, *out = NULL;
    const nl_tensor *in[3] = {cond, a, b};
    bool ok = true;
    for (int k = 0; k < 3 && ok; k++) {
        nl_tensor *conv = k > 0 && in[k]->dtype != rt ? nl_tensor_to_dtype(in[k], rt)
                                                      : nl_tensor_retain((nl_tensor *)in[k]);
        ops[k] = conv ? nl_tensor_expand(conv, nd, shape) : NULL;
        nl_tensor_release(conv);
        ok = ops[k] != NULL;
    }
    if (ok) out = nl_tensor_empty(rt, nd, shape, dev);
    if (out) {
        nl_op op = {.code = NL_OP_WHERE, .dst = out, .src = {ops[0], ops[1], ops[2]}};
        if (nl_op_exec(&op) != NL_OK) {
            nl_tensor_release(out);
            out = NULL;
        }
    }
    for (int k = 0; k < 3; k++) nl_tensor_release(ops[k]);
    return out;
}

nl_tensor *nl_masked_fill_new(const nl_tensor *t, const nl_tensor *mask, double v)
{
    char s1[SHAPE_STR], s2[SHAPE_STR];
    if (mask->dtype != NL_U8) {
        nl_seterr(NL_ETYPE, "masked_fill: the mask must be u8 (as comparisons give), got %s",
                  nl_dtype_info(mask->dtype)->name);
        return NULL;
    }
    nl_tensor *m = nl_tensor_expand((nl_tensor *)mask, t->ndim, t->shape);
    if (!m) {
        nl_seterr(NL_ESHAPE, "masked_fill: a mask of shape %s does not broadcast to the tensor's shape %s",
                  nl_shape_str(s1, sizeof s1, mask->ndim, mask->shape),
                  nl_shape_str(s2, sizeof s2, t->ndim, t->shape));
        return NULL;
    }
    nl_tensor *value = nl_tensor_empty(t->dtype, 0, NULL, nl_tensor_device(t)), *out = NULL;
    if (value && nl_fill(value, v) == NL_OK) out = nl_where_new(m, value, t);
    nl_tensor_release(value);
    nl_tensor_release(m);
    return out;
}

/* ---------------------------------------------------------------- gather ---------------- */

/* Runs NL_OP_GATHER into a new tensor of index's shape; name is the operation reported. */
static nl_tensor *gather(const char *name, const nl_tensor *t, int dim, const nl_tensor *index, int base)
{
    nl_tensor *out = nl_tensor_empty(t->dtype, index->ndim, index->shape, nl_tensor_device(t));
    if (!out) return NULL;
    nl_op op = {.code = NL_OP_GATHER, .dst = out, .src = {t, index}, .i = {dim, base}};
    nl_status st = nl_op_exec(&op);
    if (st == NL_OK) return out;
    nl_tensor_release(out);
    const char *msg = nl_errmsg();
    if (strcmp(name, "gather") != 0 && strncmp(msg, "gather: ", 8) == 0) { /* the kernel's words */
        char buf[512];
        snprintf(buf, sizeof buf, "%s", msg + 8);
        nl_seterr(st, "%s: %s", name, buf);
    }
    return NULL;
}

nl_tensor *nl_gather_new(const nl_tensor *t, int dim, const nl_tensor *index, int base)
{
    char s1[SHAPE_STR], s2[SHAPE_STR];
    if (nl_check_dim("gather", dim, t->ndim) != NL_OK) return NULL;
    bool fits = index->ndim == t->ndim;
    for (int d = 0; fits && d < t->ndim; d++) fits = d == dim || index->shape[d] <= t->shape[d];
    if (!fits) {
        nl_seterr(NL_ESHAPE, "gather: index of shape %s for a tensor of shape %s: it needs as many dims, "
                  "none larger except dim %d", nl_shape_str(s1, sizeof s1, index->ndim, index->shape),
                  nl_shape_str(s2, sizeof s2, t->ndim, t->shape), dim + 1);
        return NULL;
    }
    return gather("gather", t, dim, index, base);
}

nl_tensor *nl_index_select_new(const nl_tensor *t, int dim, const nl_tensor *index, int base)
{
    char s1[SHAPE_STR];
    if (nl_check_dim("index_select", dim, t->ndim) != NL_OK) return NULL;
    if (index->ndim > 1) {
        nl_seterr(NL_ESHAPE, "index_select: the index must be 1-D, got shape %s",
                  nl_shape_str(s1, sizeof s1, index->ndim, index->shape));
        return NULL;
    }
    /* The index seen with t's shape (its length along dim), constant along the other dims. */
    int64_t shape[NL_MAX_DIMS], strides[NL_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = d == dim ? (index->ndim ? index->shape[0] : 1) : t->shape[d];
        strides[d] = d == dim && index->ndim ? index->strides[0] : 0;
    }
    nl_tensor *wide = nl_tensor_strided_view((nl_tensor *)index, index->offset, t->ndim, shape, strides);
    nl_tensor *out = wide ? gather("index_select", t, dim, wide, base) : NULL;
    nl_tensor_release(wide);
    return out;
}

/* ---------------------------------------------------------------- sort and topk --------- */

nl_status nl_sort_new(const nl_tensor *t, int dim, int64_t k, bool largest, int base,
                      nl_tensor **values, nl_tensor **indices)
{
    const char *name = k < 0 ? "sort" : "topk";
    *values = *indices = NULL;
    if (nl_check_dim(name, dim, t->ndim) != NL_OK) return nl_errcode();
    const int64_t n = t->shape[dim];
    if (n > INT32_MAX)
        return nl_seterr(NL_EINVAL, "%s: %lld entries are more than i32 indices can address", name, (long long)n);
    if (k > n)
        return nl_seterr(NL_EINVAL, "topk: k = %lld is more than the %lld entries of dim %d", (long long)k,
                         (long long)n, dim + 1);
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) shape[d] = d == dim && k >= 0 ? k : t->shape[d];
    nl_tensor *v = nl_tensor_empty(t->dtype, t->ndim, shape, nl_tensor_device(t));
    nl_tensor *i = v ? nl_tensor_empty(NL_I32, t->ndim, shape, nl_tensor_device(t)) : NULL;
    nl_status st = i ? NL_OK : nl_errcode();
    if (st == NL_OK) {
        nl_op op = {.code = NL_OP_SORT, .dst = v, .aux = i, .src = {t}, .i = {dim, largest, base}};
        st = nl_op_exec(&op);
    }
    if (st != NL_OK) {
        nl_tensor_release(v);
        nl_tensor_release(i);
        return st;
    }
    *values = v;
    *indices = i;
    return NL_OK;
}
