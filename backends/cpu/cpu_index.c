/* cpu_index.c: the CPU's selection and scan kernels: where, gather (also index_select), cumsum
 * and sort (also topk). The ones along a dimension work line by line: a line is the entries
 * along that dim at one position of the others; lines run in parallel. */
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- where ----------------- */

/* ptr/stride: dst, cond (u8), a, b; ctx: the element size of dst, a and b. */
static void where_run(void *ctx, char *const *p, const int64_t *st, int64_t n, int64_t index NL_UNUSED)
{
    const size_t es = *(const size_t *)ctx;
    const uint8_t *c = (const uint8_t *)p[1];
    for (int64_t i = 0; i < n; i++) {
        const char *from = c[i * st[1]] ? p[2] + i * st[2] * (int64_t)es : p[3] + i * st[3] * (int64_t)es;
        char *to = p[0] + i * st[0] * (int64_t)es;
        if (es == 4) memcpy(to, from, 4);
        else if (es == 1) *to = *from;
        else memcpy(to, from, es);
    }
}

nl_status cpu_where(const nl_op *op)
{
    const nl_tensor *dst = op->dst;
    const cpu_operand ops[4] = {cpu_tensor_operand(dst), cpu_tensor_operand(op->src[0]),
                                cpu_tensor_operand(op->src[1]), cpu_tensor_operand(op->src[2])};
    size_t es = nl_dtype_info(dst->dtype)->size;
    cpu_for_each(dst->ndim, dst->shape, 4, ops, where_run, &es);
    return NL_OK;
}

/* ---------------------------------------------------------------- lines ----------------- */

/* The lines along dim of shape: how many there are, and where line l starts in each of n tensors
 * (element offsets by each one's strides over the dims other than dim). */
static int64_t line_count(int ndim, const int64_t *shape, int dim)
{
    int64_t lines = 1;
    for (int d = 0; d < ndim; d++)
        if (d != dim) lines *= shape[d];
    return lines;
}

static void line_start(int ndim, const int64_t *shape, int dim, int64_t l, int n,
                       const nl_tensor *const *ts, int64_t *off)
{
    for (int k = 0; k < n; k++) off[k] = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        if (d == dim) continue;
        const int64_t i = l % shape[d];
        l /= shape[d];
        for (int k = 0; k < n; k++) off[k] += i * ts[k]->strides[d];
    }
}

/* ---------------------------------------------------------------- gather ---------------- */

nl_status cpu_gather(const nl_op *op)
{
    const nl_tensor *y = op->dst, *x = op->src[0], *ix = op->src[1];
    const nl_tensor *ts[3] = {y, x, ix};
    const int dim = op->i[0];
    const double base = op->i[1];
    const int64_t len = y->shape[dim], n = x->shape[dim], lines = line_count(y->ndim, y->shape, dim);
    const size_t es = nl_dtype_info(y->dtype)->size, is = nl_dtype_info(ix->dtype)->size;
    char *yb = nl_tensor_data(y);
    const char *xb = nl_tensor_data(x), *ib = nl_tensor_data(ix);
    const cpu_ctype it = (cpu_ctype)ix->dtype;
    int64_t bad_at = INT64_MAX; /* the first bad index, in logical order */
    double bad_v = 0;
    if (len == 0) return NL_OK;
#pragma omp parallel for num_threads(cpu_threads_for(lines * len)) schedule(static)
    for (int64_t l = 0; l < lines; l++) {
        int64_t off[3];
        line_start(y->ndim, y->shape, dim, l, 3, ts, off);
        for (int64_t j = 0; j < len; j++) {
            const double v = cpu_load(it, ib + (off[2] + j * ix->strides[dim]) * (int64_t)is);
            const double z = v - base;
            if (!(z >= 0 && z < (double)n && z == (double)(int64_t)z)) {
#pragma omp critical(cpu_gather_bad)
                if (l * len + j < bad_at) bad_at = l * len + j, bad_v = v;
                continue;
            }
            memcpy(yb + (off[0] + j * y->strides[dim]) * (int64_t)es,
                   xb + (off[1] + (int64_t)z * x->strides[dim]) * (int64_t)es, es);
        }
    }
    if (bad_at == INT64_MAX) return NL_OK;
    if (bad_v != bad_v || bad_v != (double)(int64_t)bad_v)
        return nl_seterr(NL_EINVAL, "gather: index %g is not a whole number", bad_v);
    return nl_seterr(NL_EINVAL, "gather: index %.0f out of range for dim %d of size %lld (indices count from %d)",
                     bad_v, dim + 1, (long long)n, op->i[1]);
}

/* ---------------------------------------------------------------- cumsum ---------------- */

nl_status cpu_cumsum(const nl_op *op)
{
    const nl_tensor *y = op->dst, *x = op->src[0];
    const nl_tensor *ts[2] = {y, x};
    const int dim = op->i[0];
    const int64_t len = y->shape[dim], lines = line_count(y->ndim, y->shape, dim);
    const size_t ys = nl_dtype_info(y->dtype)->size, xs = nl_dtype_info(x->dtype)->size;
    char *yb = nl_tensor_data(y);
    const char *xb = nl_tensor_data(x);
#pragma omp parallel for num_threads(cpu_threads_for(lines * len)) schedule(static)
    for (int64_t l = 0; l < lines; l++) {
        int64_t off[2];
        line_start(y->ndim, y->shape, dim, l, 2, ts, off);
        double acc = 0;
        if (x->dtype == NL_F32) { /* the common case, without the per-element type switch */
            const float *xp = (const float *)xb + off[1];
            float *yp = (float *)yb + off[0];
            const int64_t sx = x->strides[dim], sy = y->strides[dim];
            for (int64_t j = 0; j < len; j++) {
                acc += xp[j * sx];
                yp[j * sy] = (float)acc;
            }
            continue;
        }
        for (int64_t j = 0; j < len; j++) {
            acc += cpu_load((cpu_ctype)x->dtype, xb + (off[1] + j * x->strides[dim]) * (int64_t)xs);
            cpu_store((cpu_ctype)y->dtype, yb + (off[0] + j * y->strides[dim]) * (int64_t)ys, acc);
        }
    }
    return NL_OK;
}

/* ---------------------------------------------------------------- sort ------------------ */

typedef struct {
    double v;
    int64_t i;
} sort_item;

/* NaN is the largest value; equal values keep their order (the index decides). */
static int cmp_up(const void *pa, const void *pb)
{
    const sort_item *a = pa, *b = pb;
    const bool na = a->v != a->v, nb = b->v != b->v;
    if (na != nb) return na ? 1 : -1;
    if (!na && a->v != b->v) return a->v < b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int cmp_down(const void *pa, const void *pb)
{
    const sort_item *a = pa, *b = pb;
    const bool na = a->v != a->v, nb = b->v != b->v;
    if (na != nb) return na ? -1 : 1;
    if (!na && a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Reorders items[0..n) so that its first k (0 < k < n) are the k first in cmp's order, in any
 * order (quickselect; cmp is a total order, so the result is the same on every run). */
static void select_first(sort_item *items, int64_t n, int64_t k, int (*cmp)(const void *, const void *))
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2; /* median of three as the pivot, moved to hi */
        if (cmp(&items[mid], &items[lo]) < 0) { sort_item t = items[mid]; items[mid] = items[lo]; items[lo] = t; }
        if (cmp(&items[hi], &items[lo]) < 0) { sort_item t = items[hi]; items[hi] = items[lo]; items[lo] = t; }
        if (cmp(&items[mid], &items[hi]) < 0) { sort_item t = items[mid]; items[mid] = items[hi]; items[hi] = t; }
        int64_t store = lo;
        for (int64_t j = lo; j < hi; j++) {
            if (cmp(&items[j], &items[hi]) < 0) {
                sort_item t = items[j];
                items[j] = items[store];
                items[store++] = t;
            }
        }
        sort_item t = items[hi];
        items[hi] = items[store];
        items[store] = t;
        if (store == k - 1 || store == k) return; /* the first k are those left of a split at k */
        if (store < k) lo = store + 1;
        else hi = store - 1;
    }
}

nl_status cpu_sort(const nl_op *op)
{
    const nl_tensor *y = op->dst, *ix = op->aux, *x = op->src[0];
    const nl_tensor *ts[3] = {y, ix, x};
    const int dim = op->i[0], base = op->i[2];
    const int64_t k = y->shape[dim], n = x->shape[dim], lines = line_count(x->ndim, x->shape, dim);
    const size_t ys = nl_dtype_info(y->dtype)->size, xs = nl_dtype_info(x->dtype)->size;
    int (*const cmp)(const void *, const void *) = op->i[1] ? cmp_down : cmp_up;
    char *yb = nl_tensor_data(y), *ibase = nl_tensor_data(ix);
    const char *xb = nl_tensor_data(x);
    bool failed = false;
    if (k == 0 || lines == 0) return NL_OK;
#pragma omp parallel num_threads(cpu_threads_for(lines * n))
    {
        sort_item *items = malloc((size_t)n * sizeof *items);
#pragma omp for schedule(static)
        for (int64_t l = 0; l < lines; l++) {
            if (!items) {
                failed = true;
                continue;
            }
            int64_t off[3];
            line_start(x->ndim, x->shape, dim, l, 3, ts, off);
            for (int64_t j = 0; j < n; j++) {
                items[j].v = cpu_load((cpu_ctype)x->dtype, xb + (off[2] + j * x->strides[dim]) * (int64_t)xs);
                items[j].i = j;
            }
            if (k < n) select_first(items, n, k, cmp); /* topk: sort only the k kept */
            qsort(items, (size_t)k, sizeof *items, cmp);
            for (int64_t j = 0; j < k; j++) {
                cpu_store((cpu_ctype)y->dtype, yb + (off[0] + j * y->strides[dim]) * (int64_t)ys, items[j].v);
                int32_t *slot = (int32_t *)ibase + off[1] + j * ix->strides[dim];
                *slot = (int32_t)(items[j].i + base);
            }
        }
        free(items);
    }
    if (failed) return nl_seterr(NL_ENOMEM, "sort: out of memory for a line of %lld entries", (long long)n);
    return NL_OK;
}
