/* shape.c: shape operations beyond reshape and permute: select, unsqueeze, squeeze, view,
 * flatten (views), and repeat, cat, stack (new tensors filled by copies through the backend). */
#include "nl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SHAPE_STR = 192 };


nl_tensor *nl_tensor_select(nl_tensor *t, int dim, int64_t i)
{
    if (nl_check_dim("select", dim, t->ndim) != NL_OK) return NULL;
    if (i < 0 || i >= t->shape[dim]) {
        nl_seterr(NL_EINVAL, "select: index %lld out of range for dim %d of size %lld", (long long)i + 1,
                  dim + 1, (long long)t->shape[dim]);
        return NULL;
    }
    int64_t shape[NL_MAX_DIMS], strides[NL_MAX_DIMS];
    for (int d = 0, o = 0; d < t->ndim; d++) {
        if (d == dim) continue;
        shape[o] = t->shape[d];
        strides[o++] = t->strides[d];
    }
    return nl_tensor_strided_view(t, t->offset + (size_t)(i * t->strides[dim]), t->ndim - 1, shape, strides);
}

nl_tensor *nl_tensor_unsqueeze(nl_tensor *t, int dim)
{
    if (t->ndim == NL_MAX_DIMS) {
        nl_seterr(NL_EINVAL, "unsqueeze: the tensor has %d dims already, the most supported", NL_MAX_DIMS);
        return NULL;
    }
    if (nl_check_dim("unsqueeze", dim, t->ndim + 1) != NL_OK) return NULL;
    int64_t shape[NL_MAX_DIMS], strides[NL_MAX_DIMS];
    for (int d = 0, s = 0; d <= t->ndim; d++) {
        if (d == dim) {
            shape[d] = 1;
            /* the stride a contiguous tensor would have there */
            strides[d] = s < t->ndim ? t->strides[s] * t->shape[s] : 1;
        } else {
            shape[d] = t->shape[s];
            strides[d] = t->strides[s++];
        }
    }
    return nl_tensor_strided_view(t, t->offset, t->ndim + 1, shape, strides);
}

nl_tensor *nl_tensor_squeeze(nl_tensor *t, int dim)
{
    if (dim >= 0 && nl_check_dim("squeeze", dim, t->ndim) != NL_OK) return NULL;
    int64_t shape[NL_MAX_DIMS], strides[NL_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 1 && (dim < 0 || d == dim)) continue;
        shape[nd] = t->shape[d];
        strides[nd++] = t->strides[d];
    }
    return nl_tensor_strided_view(t, t->offset, nd, shape, strides);
}

nl_tensor *nl_tensor_view(nl_tensor *t, int ndim, const int64_t *shape)
{
    if (!nl_tensor_is_contiguous(t)) {
        char s[SHAPE_STR];
        nl_seterr(NL_ESHAPE, "view: the tensor of shape %s is not contiguous (a transpose, permute, "
                  "slice or expand of another); use reshape, which copies, or contiguous() first",
                  nl_shape_str(s, sizeof s, t->ndim, t->shape));
        return NULL;
    }
    nl_tensor *v = nl_tensor_reshape(t, ndim, shape);
    if (!v && nl_errcode() != NL_ENOMEM) { /* reshape's message, under this name */
        char msg[512];
        const char *m = nl_errmsg();
        snprintf(msg, sizeof msg, "%s", strncmp(m, "reshape: ", 9) == 0 ? m + 9 : m);
        nl_seterr(nl_errcode(), "view: %s", msg);
    }
    return v;
}

nl_tensor *nl_tensor_flatten(nl_tensor *t, int start, int end)
{
    if (t->ndim == 0) start = end = 0; /* a 0-d tensor flattens to one element, as in PyTorch */
    else if (nl_check_dim("flatten", start, t->ndim) != NL_OK || nl_check_dim("flatten", end, t->ndim) != NL_OK)
        return NULL;
    if (start > end) {
        nl_seterr(NL_EINVAL, "flatten: start dim %d comes after end dim %d", start + 1, end + 1);
        return NULL;
    }
    int64_t shape[NL_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (d > start && d <= end) shape[nd - 1] *= t->shape[d];
        else shape[nd++] = t->shape[d];
    }
    if (t->ndim == 0) shape[nd++] = 1;
    return nl_tensor_reshape(t, nd, shape);
}

nl_tensor *nl_tensor_repeat(const nl_tensor *t, int nreps, const int64_t *reps)
{
    char s1[SHAPE_STR];
    if (nreps < t->ndim || nreps > NL_MAX_DIMS) {
        nl_seterr(NL_EINVAL, "tile: %d repeat counts for a %d-D tensor (one per dim at least, "
                  "at most %d)", nreps, t->ndim, NL_MAX_DIMS);
        return NULL;
    }
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < nreps; d++) {
        int s = d - (nreps - t->ndim);
        shape[d] = s >= 0 ? t->shape[s] : 1;
        if (reps[d] < 0) {
            nl_seterr(NL_EINVAL, "tile: negative count %lld in %s", (long long)reps[d],
                      nl_shape_str(s1, sizeof s1, nreps, reps));
            return NULL;
        }
    }
    /* cur: t with leading 1s; each dim d with reps[d] > 1 is tiled by expanding a new size-1
     * dim in front of it to reps[d] and copying that into a tensor where both merge. */
    nl_tensor *cur = nl_tensor_strided_view((nl_tensor *)t, t->offset, t->ndim, t->shape, t->strides);
    if (cur) {
        nl_tensor *padded = nl_tensor_reshape(cur, nreps, shape);
        nl_tensor_release(cur);
        cur = padded;
    }
    for (int d = 0; cur && d < nreps; d++) {
        if (reps[d] == 1) continue;
        int64_t big[NL_MAX_DIMS + 1], out[NL_MAX_DIMS];
        int nb = 0;
        for (int e = 0; e < nreps; e++) {
            out[e] = cur->shape[e] * (e == d ? reps[d] : 1);
            if (e == d && cur->shape[e] != 1) big[nb++] = reps[d];
            big[nb++] = e == d && cur->shape[e] == 1 ? reps[d] : cur->shape[e];
        }
        nl_tensor *next = nl_tensor_empty(t->dtype, nreps, out, nl_tensor_device(t));
        nl_status st = next ? NL_OK : nl_errcode();
        if (st == NL_OK && nb <= NL_MAX_DIMS) { /* one copy from the expanded view */
            nl_tensor *src = nb > nreps ? nl_tensor_unsqueeze(cur, d) : nl_tensor_retain(cur);
            nl_tensor *wide = src ? nl_tensor_expand(src, nb, big) : NULL;
            nl_tensor *dst = wide ? nl_tensor_reshape(next, nb, big) : NULL;
            st = dst ? nl_copy(dst, wide) : nl_errcode();
            nl_tensor_release(dst);
            nl_tensor_release(wide);
            nl_tensor_release(src);
        }
        for (int64_t r = 0; st == NL_OK && nb > NL_MAX_DIMS && r < reps[d]; r++) { /* no dim to spare */
            const int64_t s = cur->shape[d];
            nl_tensor *part = nl_tensor_slice(next, d, r * s, (r + 1) * s);
            st = part ? nl_copy(part, cur) : nl_errcode();
            nl_tensor_release(part);
        }
        nl_tensor_release(cur);
        cur = st == NL_OK ? next : NULL;
        if (!cur) nl_tensor_release(next);
    }
    if (cur && cur->storage == t->storage) { /* nothing was tiled: a copy all the same */
        nl_tensor *c = nl_tensor_clone(cur);
        nl_tensor_release(cur);
        cur = c;
    }
    return cur;
}

/* The dtype n tensors promote to, as arithmetic on them would. */
static nl_dtype promote_all(int n, const nl_tensor *const *ts)
{
    nl_dtype dt = ts[0]->dtype;
    for (int k = 1; k < n; k++) dt = nl_promote(dt, ts[k]->dtype);
    return dt;
}

nl_tensor *nl_tensor_cat(int n, const nl_tensor *const *ts, int dim)
{
    char s1[SHAPE_STR], s2[SHAPE_STR];
    if (n < 1) {
        nl_seterr(NL_EINVAL, "cat: no tensors to join");
        return NULL;
    }
    const nl_tensor *a = ts[0];
    if (a->ndim == 0) {
        nl_seterr(NL_ESHAPE, "cat: tensor 1 is 0-d and has no dim to join along (stack joins along a new one)");
        return NULL;
    }
    if (nl_check_dim("cat", dim, a->ndim) != NL_OK) return NULL;
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        const nl_tensor *b = ts[k];
        bool fits = b->ndim == a->ndim;
        for (int d = 0; fits && d < a->ndim; d++) fits = d == dim || b->shape[d] == a->shape[d];
        if (!fits) {
            nl_seterr(NL_ESHAPE, "cat: tensor %d has shape %s, tensor 1 %s: they must agree except in dim %d",
                      k + 1, nl_shape_str(s1, sizeof s1, b->ndim, b->shape),
                      nl_shape_str(s2, sizeof s2, a->ndim, a->shape), dim + 1);
            return NULL;
        }
        if (nl_tensor_device(b) != nl_tensor_device(a)) {
            nl_seterr(NL_EDEVICE, "cat: tensor %d is on %s, tensor 1 on %s", k + 1,
                      nl_device_name(nl_tensor_device(b)), nl_device_name(nl_tensor_device(a)));
            return NULL;
        }
        shape[dim] += b->shape[dim];
    }
    nl_tensor *out = nl_tensor_empty(promote_all(n, ts), a->ndim, shape, nl_tensor_device(a));
    int64_t at = 0;
    for (int k = 0; out && k < n; k++) {
        nl_tensor *part = nl_tensor_slice(out, dim, at, at + ts[k]->shape[dim]);
        nl_status st = part ? nl_copy(part, ts[k]) : nl_errcode();
        nl_tensor_release(part);
        at += ts[k]->shape[dim];
        if (st != NL_OK) {
            nl_tensor_release(out);
            out = NULL;
        }
    }
    return out;
}

nl_tensor *nl_tensor_stack(int n, const nl_tensor *const *ts, int dim)
{
    char s1[SHAPE_STR], s2[SHAPE_STR];
    if (n < 1) {
        nl_seterr(NL_EINVAL, "stack: no tensors to join");
        return NULL;
    }
    for (int k = 1; k < n; k++) {
        if (!nl_same_shape(ts[k], ts[0])) {
            nl_seterr(NL_ESHAPE, "stack: tensor %d has shape %s, tensor 1 %s: they must be equal", k + 1,
                      nl_shape_str(s1, sizeof s1, ts[k]->ndim, ts[k]->shape),
                      nl_shape_str(s2, sizeof s2, ts[0]->ndim, ts[0]->shape));
            return NULL;
        }
    }
    if (ts[0]->ndim == NL_MAX_DIMS) {
        nl_seterr(NL_EINVAL, "stack: the tensors have %d dims already, the most supported", NL_MAX_DIMS);
        return NULL;
    }
    if (nl_check_dim("stack", dim, ts[0]->ndim + 1) != NL_OK) return NULL;
    nl_tensor *parts[64], **views = n <= 64 ? parts : malloc((size_t)n * sizeof *views);
    if (!views) {
        nl_seterr(NL_ENOMEM, "stack: out of memory for %d tensors", n);
        return NULL;
    }
    int made = 0;
    for (; made < n; made++)
        if (!(views[made] = nl_tensor_unsqueeze((nl_tensor *)ts[made], dim))) break;
    nl_tensor *out = made == n ? nl_tensor_cat(n, (const nl_tensor *const *)views, dim) : NULL;
    for (int k = 0; k < made; k++) nl_tensor_release(views[k]);
    if (views != parts) free(views);
    return out;
}
