/* cuda_index.cu: the CUDA twins of cpu_index.c: where, gather (also index_select), cumsum and
 * sort (also topk), with the CPU's semantics: gather names the first bad index in logical order,
 * cumsum sums each line in order in double, sort is stable with NaN as the largest value. Ops
 * along a dimension work on lines (the entries along that dim at one position of the others). */
#include "cuda_impl.cuh"

static size_t dsize(nl_dtype t) { return nl_dtype_info(t)->size; }

/* ---------------------------------------------------------------- where ----------------- */

__global__ void k_where(cu_geom g, char *d, const uint8_t *c, const char *a, const char *b, int es)
{
    int64_t off[4];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        const char *from = c[off[1]] ? a + off[2] * es : b + off[3] * es;
        char *to = d + off[0] * es;
        for (int k = 0; k < es; k++) to[k] = from[k];
    }
}

nl_status cu_where(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *dst = op->dst;
    const int64_t *st[4] = {dst->strides, op->src[0]->strides, op->src[1]->strides, op->src[2]->strides};
    cu_geom g = cu_geom_of(dst->ndim, dst->shape, 4, st);
    if (g.numel == 0) return NL_OK;
    k_where<<<cu_blocks(g.numel), CU_THREADS, 0, c->stream>>>(
        g, (char *)nl_tensor_data(dst), (const uint8_t *)nl_tensor_data(op->src[0]),
        (const char *)nl_tensor_data(op->src[1]), (const char *)nl_tensor_data(op->src[2]),
        (int)dsize(dst->dtype));
    return cu_launched(c, "where");
}

/* ---------------------------------------------------------------- lines ----------------- */

/* The lines along dim: their geometry over the other dims (line l of tensor k starts at element
 * offset off[k] of cu_offsets(g, l)), for n tensors of the same shape as shape. */
static cu_geom lines_of(int ndim, const int64_t *shape, int dim, int n, const nl_tensor *const *ts)
{
    int64_t oshape[NL_MAX_DIMS], ost[CPU_MAX_OPS][NL_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < ndim; d++) {
        if (d == dim) continue;
        oshape[ond] = shape[d];
        for (int k = 0; k < n; k++) ost[k][ond] = ts[k]->strides[d];
        ond++;
    }
    const int64_t *st[CPU_MAX_OPS] = {ost[0], ost[1], ost[2], ost[3]};
    return cu_geom_of(ond, oshape, n, st);
}

/* ---------------------------------------------------------------- gather ---------------- */

/* Element (l, j): y[line l][j] = x[line l][idx - base]; a bad index records its logical position
 * (l * len + j) in *bad, the smallest one winning. */
__global__ void k_gather(cu_geom lines, int64_t len, int64_t n, char *y, int64_t ysd, const char *x,
                         int64_t xsd, const char *ix, int64_t isd, int it, int es, double base,
                         unsigned long long *bad)
{
    int64_t off[3];
    const int is = cu_dtype_size(it);
    CU_FOR(e, lines.numel * len)
    {
        const int64_t l = e / len, j = e - l * len;
        cu_offsets(lines, l, off);
        const double z = cu_load<double>(ix + (off[2] + j * isd) * is, it) - base;
        if (!(z >= 0 && z < (double)n && z == (double)(int64_t)z)) {
            atomicMin(bad, (unsigned long long)e);
            continue;
        }
        const char *from = x + (off[1] + (int64_t)z * xsd) * es;
        char *to = y + (off[0] + j * ysd) * es;
        for (int k = 0; k < es; k++) to[k] = from[k];
    }
}

nl_status cu_gather(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *y = op->dst, *x = op->src[0], *ix = op->src[1];
    const nl_tensor *ts[3] = {y, x, ix};
    const int dim = op->i[0];
    const int64_t len = y->shape[dim], n = x->shape[dim];
    cu_geom lines = lines_of(y->ndim, y->shape, dim, 3, ts);
    if (len == 0 || lines.numel == 0) return NL_OK;
    unsigned long long *bad = (unsigned long long *)cu_scratch(c, sizeof *bad);
    if (!bad) return NL_ENOMEM;
    nl_status st = cu_check(c, cudaMemsetAsync(bad, 0xff, sizeof *bad, c->stream), "cudaMemsetAsync");
    if (st == NL_OK) {
        k_gather<<<cu_blocks(lines.numel * len), CU_THREADS, 0, c->stream>>>(
            lines, len, n, (char *)nl_tensor_data(y), y->strides[dim], (const char *)nl_tensor_data(x),
            x->strides[dim], (const char *)nl_tensor_data(ix), ix->strides[dim], (int)ix->dtype,
            (int)dsize(y->dtype), (double)op->i[1], bad);
        st = cu_launched(c, "gather");
    }
    unsigned long long at = ~0ull;
    if (st == NL_OK) st = cu_read_back(c, &at, bad, sizeof at);
    cu_scratch_free(c, bad);
    if (st != NL_OK || at == ~0ull) return st;
    /* The bad index's value, read back alone, for the same message as the CPU's. */
    int64_t l = (int64_t)at / len, j = (int64_t)at % len, off = j * ix->strides[dim];
    for (int d = ix->ndim - 1; d >= 0; d--) {
        if (d == dim) continue;
        off += (l % ix->shape[d]) * ix->strides[d];
        l /= ix->shape[d];
    }
    double raw = 0;
    st = cu_read_back(c, &raw, (const char *)nl_tensor_data(ix) + off * (int64_t)dsize(ix->dtype),
                      dsize(ix->dtype));
    if (st != NL_OK) return st;
    const double v = cpu_load((cpu_ctype)ix->dtype, &raw);
    if (v != v || v != (double)(int64_t)v)
        return nl_seterr(NL_EINVAL, "gather: index %g is not a whole number", v);
    return nl_seterr(NL_EINVAL, "gather: index %.0f out of range for dim %d of size %lld (indices count from %d)",
                     v, dim + 1, (long long)n, op->i[1]);
}

/* ---------------------------------------------------------------- cumsum ---------------- */

/* One thread a line, summing in order in double as the CPU does (the same results bit for bit). */
__global__ void k_cumsum(cu_geom lines, int64_t len, char *y, int yt, int64_t ysd, const char *x, int xt,
                         int64_t xsd)
{
    int64_t off[2];
    const int ys = cu_dtype_size(yt), xs = cu_dtype_size(xt);
    CU_FOR(l, lines.numel)
    {
        cu_offsets(lines, l, off);
        double acc = 0;
        for (int64_t j = 0; j < len; j++) {
            acc += cu_load<double>(x + (off[1] + j * xsd) * xs, xt);
            cu_store_f64(y + (off[0] + j * ysd) * ys, yt, acc);
        }
    }
}

nl_status cu_cumsum(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *y = op->dst, *x = op->src[0];
    const nl_tensor *ts[2] = {y, x};
    const int dim = op->i[0];
    cu_geom lines = lines_of(y->ndim, y->shape, dim, 2, ts);
    if (lines.numel == 0 || y->shape[dim] == 0) return NL_OK;
    k_cumsum<<<cu_blocks(lines.numel), CU_THREADS, 0, c->stream>>>(
        lines, y->shape[dim], (char *)nl_tensor_data(y), (int)y->dtype, y->strides[dim],
        (const char *)nl_tensor_data(x), (int)x->dtype, x->strides[dim]);
    return cu_launched(c, "cumsum");
}

/* ---------------------------------------------------------------- sort ------------------ */

struct sort_item {
    double v;
    int64_t i;
};

/* The CPU's order: NaN is the largest value; equal values by index (a total order, so the result
 * is the CPU's whatever the algorithm). */
__device__ inline bool sort_before(const sort_item &a, const sort_item &b, bool down)
{
    const bool na = a.v != a.v, nb = b.v != b.v;
    if (na != nb) return down ? na : nb;
    if (!na && a.v != b.v) return down ? a.v > b.v : a.v < b.v;
    return a.i < b.i;
}

/* One thread a line: a bottom-up merge sort of the line's n items in its slices of two scratch
 * buffers, then the first k written out. */
__global__ void k_sort(cu_geom lines, int64_t n, int64_t k, bool down, char *y, int yt, int64_t ysd,
                       int32_t *ix, int64_t isd, int base, const char *x, int xt, int64_t xsd,
                       sort_item *buf_a, sort_item *buf_b)
{
    int64_t off[3];
    const int ys = cu_dtype_size(yt), xs = cu_dtype_size(xt);
    CU_FOR(l, lines.numel)
    {
        cu_offsets(lines, l, off);
        sort_item *a = buf_a + l * n, *b = buf_b + l * n;
        for (int64_t j = 0; j < n; j++) a[j] = sort_item{cu_load<double>(x + (off[2] + j * xsd) * xs, xt), j};
        for (int64_t w = 1; w < n; w *= 2) {
            for (int64_t lo = 0; lo < n; lo += 2 * w) {
                const int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
                int64_t p = lo, q = mid, o = lo;
                while (p < mid && q < hi) b[o++] = sort_before(a[q], a[p], down) ? a[q++] : a[p++];
                while (p < mid) b[o++] = a[p++];
                while (q < hi) b[o++] = a[q++];
            }
            sort_item *t = a;
            a = b;
            b = t;
        }
        for (int64_t j = 0; j < k; j++) {
            cu_store_f64(y + (off[0] + j * ysd) * ys, yt, a[j].v);
            ix[off[1] + j * isd] = (int32_t)(a[j].i + base);
        }
    }
}

nl_status cu_sort(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *y = op->dst, *ix = op->aux, *x = op->src[0];
    const nl_tensor *ts[3] = {y, ix, x};
    const int dim = op->i[0];
    const int64_t k = y->shape[dim], n = x->shape[dim];
    cu_geom lines = lines_of(x->ndim, x->shape, dim, 3, ts);
    if (k == 0 || lines.numel == 0) return NL_OK;
    const size_t bytes = (size_t)(lines.numel * n) * sizeof(sort_item);
    sort_item *buf = (sort_item *)cu_scratch(c, 2 * bytes);
    if (!buf) return NL_ENOMEM;
    k_sort<<<cu_blocks(lines.numel), CU_THREADS, 0, c->stream>>>(
        lines, n, k, op->i[1] != 0, (char *)nl_tensor_data(y), (int)y->dtype, y->strides[dim],
        (int32_t *)nl_tensor_data(ix), ix->strides[dim], op->i[2], (const char *)nl_tensor_data(x),
        (int)x->dtype, x->strides[dim], buf, buf + lines.numel * n);
    nl_status st = cu_launched(c, "sort");
    cu_scratch_free(c, buf);
    return st;
}
