/* cuda_elementwise.cu: the CUDA twins of cpu_elementwise.c and cpu_reduce.c: fill, copy across
 * dtypes and strides, binary ops with broadcasting (by strides) and with a scalar, unary ops,
 * random fills from the shared counter-based generator, and reductions. Arithmetic computes in
 * the same types, with the same conversions and per-element functions (hd/), as the CPU. */
#include "cuda_impl.cuh"

#include "hd/act_hd.h"
#include "hd/arith_hd.h"
#include "rng_hd.h"

#include <string.h>
#include <type_traits>

cu_geom cu_geom_of(int ndim, const int64_t *shape, int nops, const int64_t *const *strides)
{
    cpu_operand ops[CPU_MAX_OPS] = {};
    for (int k = 0; k < nops; k++) ops[k] = (cpu_operand){NULL, strides[k], 1};
    cpu_iter it;
    cpu_iter_init(&it, ndim, shape, nops, ops);
    cu_geom g;
    memset(&g, 0, sizeof g);
    g.nd = it.ndim;
    g.nops = nops;
    g.numel = it.numel;
    for (int d = 0; d < it.ndim; d++) {
        g.shape[d] = it.shape[d];
        for (int k = 0; k < nops; k++) g.st[k][d] = it.strides[k][d];
    }
    return g;
}

static size_t dsize(nl_dtype t) { return nl_dtype_info(t)->size; }

/* ---------------------------------------------------------------- fill and copy -------- */

template <class T> __global__ void k_fill(cu_geom g, T *d, T v)
{
    int64_t off[1];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        d[off[0]] = v;
    }
}

/* Every element of dst is v converted (on the host, by the CPU's own cpu_store) to its dtype. */
nl_status cu_fill(cu_ctx *c, const nl_op *op)
{
    nl_tensor *dst = op->dst;
    const int64_t *st[1] = {dst->strides};
    cu_geom g = cu_geom_of(dst->ndim, dst->shape, 1, st);
    if (g.numel == 0) return NL_OK;
    double v;
    cpu_store((cpu_ctype)dst->dtype, &v, op->f[0]);
    void *d = nl_tensor_data(dst);
    const unsigned nb = cu_blocks(g.numel);
    float f;
    int32_t i;
    memcpy(&f, &v, sizeof f);
    memcpy(&i, &v, sizeof i);
    switch (dst->dtype) {
    case NL_F32: k_fill<float><<<nb, CU_THREADS, 0, c->stream>>>(g, (float *)d, f); break;
    case NL_I32: k_fill<int32_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (int32_t *)d, i); break;
    case NL_I8: k_fill<int8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (int8_t *)d, *(int8_t *)&v); break;
    default: k_fill<uint8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (uint8_t *)d, *(uint8_t *)&v); break;
    }
    return cu_launched(c, "fill");
}

template <class T> __global__ void k_copy(cu_geom g, T *d, const char *s, int sdt, int ssize)
{
    int64_t off[2];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        d[off[0]] = cu_load<T>(s + off[1] * ssize, sdt);
    }
}

template <class T>
static void launch_copy(cu_ctx *c, const cu_geom &g, void *d, const nl_tensor *src)
{
    k_copy<T><<<cu_blocks(g.numel), CU_THREADS, 0, c->stream>>>(
        g, (T *)d, (const char *)nl_tensor_data(src), (int)src->dtype, (int)dsize(src->dtype));
}

nl_status cu_copy(cu_ctx *c, const nl_op *op)
{
    nl_tensor *dst = op->dst;
    const nl_tensor *src = op->src[0];
    const int64_t *st[2] = {dst->strides, src->strides};
    cu_geom g = cu_geom_of(dst->ndim, dst->shape, 2, st);
    if (g.numel == 0) return NL_OK;
    void *d = nl_tensor_data(dst);
    switch (dst->dtype) {
    case NL_F32: launch_copy<float>(c, g, d, src); break;
    case NL_I32: launch_copy<int32_t>(c, g, d, src); break;
    case NL_I8: launch_copy<int8_t>(c, g, d, src); break;
    default: launch_copy<uint8_t>(c, g, d, src); break;
    }
    return cu_launched(c, "copy");
}

nl_status cu_copy_f32(cu_ctx *c, float *dst, const int64_t *dst_st, const float *src,
                      const int64_t *src_st, int ndim, const int64_t *shape)
{
    const int64_t *st[2] = {dst_st, src_st};
    cu_geom g = cu_geom_of(ndim, shape, 2, st);
    if (g.numel == 0) return NL_OK;
    k_copy<float><<<cu_blocks(g.numel), CU_THREADS, 0, c->stream>>>(g, dst, (const char *)src,
                                                                     NL_F32, 4);
    return cu_launched(c, "copy_f32");
}

/* ---------------------------------------------------------------- binary --------------- */

/* Arithmetic in T as the CPU's loops compute it: integers wrap (in uint32_t), floats propagate
 * NaN through max/min. */
template <class T> __device__ inline T cu_arith(int op, T x, T y)
{
    if constexpr (std::is_floating_point<T>::value) {
        switch (op) {
        case NL_BIN_ADD: return x + y;
        case NL_BIN_SUB: return x - y;
        case NL_BIN_MUL: return x * y;
        case NL_BIN_DIV: return x / y;
        case NL_BIN_POW: return (T)powf((float)x, (float)y);
        case NL_BIN_MAX: return (x > y || x != x) ? x : y;
        default: return (x < y || x != x) ? x : y;
        }
    } else {
        switch (op) {
        case NL_BIN_ADD: return (T)((uint32_t)x + (uint32_t)y);
        case NL_BIN_SUB: return (T)((uint32_t)x - (uint32_t)y);
        case NL_BIN_MUL: return (T)((uint32_t)x * (uint32_t)y);
        case NL_BIN_POW: return (T)nl_hd_ipow_wrap(x, y);
        case NL_BIN_MAX: return x > y ? x : y;
        default: return x < y ? x : y; /* NL_BIN_MIN (integer DIV never reaches a kernel) */
        }
    }
}

template <class T> __device__ inline uint8_t cu_compare(int op, T x, T y)
{
    switch (op) {
    case NL_BIN_EQ: return x == y;
    case NL_BIN_NE: return x != y;
    case NL_BIN_LT: return x < y;
    case NL_BIN_LE: return x <= y;
    case NL_BIN_GT: return x > y;
    default: return x >= y;
    }
}

/* d = a op b in compute type CT; an operand with a NULL pointer is the scalar s (exact in CT). */
struct bin_args {
    char *d;
    const char *a, *b;
    int da, db, sa, sb; /* dtypes and element sizes of a and b */
    int op, compare;
    double s;
};

template <class CT> __global__ void k_binary(cu_geom g, bin_args p)
{
    int64_t off[3];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        const CT x = p.a ? cu_load<CT>(p.a + off[1] * p.sa, p.da) : (CT)p.s;
        const CT y = p.b ? cu_load<CT>(p.b + off[2] * p.sb, p.db) : (CT)p.s;
        if (p.compare) ((uint8_t *)p.d)[off[0]] = cu_compare<CT>(p.op, x, y);
        else ((CT *)p.d)[off[0]] = cu_arith<CT>(p.op, x, y);
    }
}

static nl_status run_binary(cu_ctx *c, const nl_tensor *dst, cpu_ctype ct, const cu_geom &g,
                            const bin_args &p)
{
    if (g.numel == 0) return NL_OK;
    const unsigned nb = cu_blocks(g.numel);
    switch (ct) {
    case CPU_F32: k_binary<float><<<nb, CU_THREADS, 0, c->stream>>>(g, p); break;
    case CPU_F64: k_binary<double><<<nb, CU_THREADS, 0, c->stream>>>(g, p); break;
    case CPU_I32: k_binary<int32_t><<<nb, CU_THREADS, 0, c->stream>>>(g, p); break;
    case CPU_I8: k_binary<int8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, p); break;
    default: k_binary<uint8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, p); break;
    }
    (void)dst;
    return cu_launched(c, "binary");
}

/* The checks the CPU makes before its loops (cpu_elementwise.c's run_binary). */
static nl_status check_binary(const nl_tensor *dst, nl_binop bop, cpu_ctype ct)
{
    if (nl_binop_is_compare(bop) && dst->dtype != NL_U8)
        return nl_seterr(NL_ETYPE, "%s: comparisons write u8, not %s", nl_binop_name(bop),
                         nl_dtype_info(dst->dtype)->name);
    if ((!nl_binop_is_compare(bop) && ct == CPU_F64) || (bop == NL_BIN_DIV && ct != CPU_F32))
        return nl_seterr(NL_ETYPE, "%s: not available on cuda for %s", nl_binop_name(bop),
                         ct == CPU_F64 ? "f64" : nl_dtype_info((nl_dtype)ct)->name);
    return NL_OK;
}

nl_status cu_binary(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *a = op->src[0], *b = op->src[1];
    nl_binop bop = (nl_binop)op->i[0];
    cpu_ctype ct = !nl_binop_is_compare(bop) ? (cpu_ctype)op->dst->dtype
                 : a->dtype == b->dtype ? (cpu_ctype)a->dtype : CPU_F64;
    nl_status st = check_binary(op->dst, bop, ct);
    if (st != NL_OK) return st;
    const int64_t *strides[3] = {op->dst->strides, a->strides, b->strides};
    cu_geom g = cu_geom_of(op->dst->ndim, op->dst->shape, 3, strides);
    bin_args p = {(char *)nl_tensor_data(op->dst), (const char *)nl_tensor_data(a),
                  (const char *)nl_tensor_data(b), (int)a->dtype, (int)b->dtype,
                  (int)dsize(a->dtype), (int)dsize(b->dtype), (int)bop,
                  nl_binop_is_compare(bop), 0.0};
    return run_binary(c, op->dst, ct, g, p);
}

nl_status cu_binary_scalar(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *a = op->src[0];
    nl_binop bop = (nl_binop)op->i[0];
    double s = op->f[0], scalar;
    cpu_ctype ct = (cpu_ctype)op->dst->dtype;
    if (nl_binop_is_compare(bop)) { /* in a's dtype when s is exact there, else in f64 */
        cpu_store((cpu_ctype)a->dtype, &scalar, s);
        ct = cpu_load((cpu_ctype)a->dtype, &scalar) == s ? (cpu_ctype)a->dtype : CPU_F64;
    }
    nl_status st = check_binary(op->dst, bop, ct);
    if (st != NL_OK) return st;
    cpu_store(ct, &scalar, s);
    const double exact = cpu_load(ct, &scalar); /* s in the compute type, exact as a double */
    const int64_t *strides[3] = {op->dst->strides, a->strides, a->strides};
    cu_geom g = cu_geom_of(op->dst->ndim, op->dst->shape, 3, strides);
    const bool first = op->i[1] != 0; /* s op a */
    const char *pa = (const char *)nl_tensor_data(a);
    bin_args p = {(char *)nl_tensor_data(op->dst), first ? NULL : pa, first ? pa : NULL,
                  (int)a->dtype, (int)a->dtype, (int)dsize(a->dtype), (int)dsize(a->dtype),
                  (int)bop, nl_binop_is_compare(bop), exact};
    return run_binary(c, op->dst, ct, g, p);
}

/* ---------------------------------------------------------------- unary ---------------- */

template <class T> __device__ inline T cu_unary_int(int u, T x)
{
    if constexpr (std::is_signed<T>::value) {
        switch (u) {
        case NL_UN_NEG: return (T)(0u - (uint32_t)x);
        case NL_UN_RELU: return x < 0 ? 0 : x;
        default: return (T)(x < 0 ? 0u - (uint32_t)x : (uint32_t)x); /* NL_UN_ABS */
        }
    } else {
        return u == NL_UN_NEG ? (T)(0u - (uint32_t)x) : x; /* RELU and ABS: x */
    }
}

template <class T> __global__ void k_unary(cu_geom g, T *d, const char *a, int da, int sa, int u)
{
    int64_t off[2];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        const T x = cu_load<T>(a + off[1] * sa, da);
        if constexpr (std::is_same<T, float>::value) d[off[0]] = nl_hd_unary_f32(u, x);
        else d[off[0]] = cu_unary_int<T>(u, x);
    }
}

nl_status cu_unary(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *a = op->src[0];
    const nl_unop u = (nl_unop)op->i[0];
    const nl_dtype dt = op->dst->dtype;
    if (dt != NL_F32 && u != NL_UN_NEG && u != NL_UN_RELU && u != NL_UN_ABS)
        return nl_seterr(NL_ETYPE, "%s: not available on cuda for %s", nl_unop_name(u),
                         nl_dtype_info(dt)->name);
    const int64_t *strides[2] = {op->dst->strides, a->strides};
    cu_geom g = cu_geom_of(op->dst->ndim, op->dst->shape, 2, strides);
    if (g.numel == 0) return NL_OK;
    const unsigned nb = cu_blocks(g.numel);
    const char *pa = (const char *)nl_tensor_data(a);
    void *d = nl_tensor_data(op->dst);
    const int da = (int)a->dtype, sa = (int)dsize(a->dtype);
    switch (dt) {
    case NL_F32: k_unary<float><<<nb, CU_THREADS, 0, c->stream>>>(g, (float *)d, pa, da, sa, u); break;
    case NL_I32: k_unary<int32_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (int32_t *)d, pa, da, sa, u); break;
    case NL_I8: k_unary<int8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (int8_t *)d, pa, da, sa, u); break;
    default: k_unary<uint8_t><<<nb, CU_THREADS, 0, c->stream>>>(g, (uint8_t *)d, pa, da, sa, u); break;
    }
    return cu_launched(c, "unary");
}

/* ---------------------------------------------------------------- random fills --------- */

/* Element i (logical order) is shift + scale * draw(key, counter + i), kept under `below`. */
__global__ void k_rand(cu_geom g, float *d, uint64_t key, uint64_t counter, double shift,
                       double scale, float below, int normal)
{
    int64_t off[1];
    CU_FOR(i, g.numel)
    {
        cu_offsets(g, i, off);
        const uint64_t ctr = counter + (uint64_t)i;
        const float u = normal ? nl_hd_rng_normal(key, ctr) : nl_hd_rng_u01(key, ctr);
        const float v = (float)(shift + scale * u);
        d[off[0]] = v < below ? v : below;
    }
}

nl_status cu_rand(cu_ctx *c, const nl_op *op)
{
    const bool normal = op->code == NL_OP_RAND_NORMAL;
    const int64_t *strides[1] = {op->dst->strides};
    cu_geom g = cu_geom_of(op->dst->ndim, op->dst->shape, 1, strides);
    if (g.numel == 0) return NL_OK;
    const float below = normal ? INFINITY : nextafterf((float)op->f[1], -INFINITY);
    k_rand<<<cu_blocks(g.numel), CU_THREADS, 0, c->stream>>>(
        g, cu_f32(op->dst), op->u[0], op->u[1], op->f[0], normal ? op->f[1] : op->f[1] - op->f[0],
        below, normal);
    return cu_launched(c, "rand");
}

/* ---------------------------------------------------------------- reductions ----------- */

/* One block per output (grid-stride over outputs): each thread folds every blockDim-th reduced
 * element, then the block combines the threads' results. Sums run in double; max/min keep the
 * first index of equal values, and NaN wins (the first NaN), as on the CPU. */
enum { RED_THREADS = 256 };

__device__ inline bool red_better(int kind, double v, double b)
{
    return kind == 1 ? (v > b || (v != v && b == b)) : (v < b || (v != v && b == b));
}

/* Whether (v, i) should replace (bv, bi): better, or equal (or both NaN) at a smaller index. */
__device__ inline bool red_take(int kind, double v, int64_t i, double bv, int64_t bi)
{
    if (i < 0) return false;
    if (bi < 0) return true;
    if (red_better(kind, v, bv)) return true;
    return !red_better(kind, bv, v) && i < bi;
}

/* kind: 0 sum, 1 max, 2 min. outer: (dst, src) offsets of each output; inner: the reduced
 * elements' offsets relative to it. */
__global__ void k_reduce(cu_geom outer, cu_geom inner, char *dst, int ddt, const char *src,
                         int sdt, int kind, int rop)
{
    __shared__ double sv[RED_THREADS];
    __shared__ int64_t si[RED_THREADS];
    const int ssz = cu_dtype_size(sdt);
    for (int64_t o = blockIdx.x; o < outer.numel; o += gridDim.x) {
        int64_t ooff[2], ioff[1];
        cu_offsets(outer, o, ooff);
        double acc = 0;
        int64_t at = -1;
        for (int64_t k = threadIdx.x; k < inner.numel; k += blockDim.x) {
            cu_offsets(inner, k, ioff);
            const double v = cu_load<double>(src + (ooff[1] + ioff[0]) * ssz, sdt);
            if (kind == 0) acc += v;
            else if (at < 0 || red_better(kind, v, acc)) {
                acc = v;
                at = k;
            }
        }
        sv[threadIdx.x] = acc;
        si[threadIdx.x] = at;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w) {
                const int j = threadIdx.x + w;
                if (kind == 0) sv[threadIdx.x] += sv[j];
                else if (red_take(kind, sv[j], si[j], sv[threadIdx.x], si[threadIdx.x])) {
                    sv[threadIdx.x] = sv[j];
                    si[threadIdx.x] = si[j];
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            const double v = rop == NL_RED_MEAN ? sv[0] / (double)inner.numel
                           : rop == NL_RED_ARGMAX ? (double)si[0] : sv[0];
            cu_store_f64(dst + ooff[0] * cu_dtype_size(ddt), ddt, v);
        }
        __syncthreads();
    }
}

nl_status cu_reduce(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *src = op->src[0], *dst = op->dst;
    const nl_redop rop = (nl_redop)op->i[0];
    const int dim = op->i[1];
    const int kind = rop == NL_RED_SUM || rop == NL_RED_MEAN ? 0 : rop == NL_RED_MIN ? 2 : 1;
    int64_t oshape[NL_MAX_DIMS], osrc[NL_MAX_DIMS], odst[NL_MAX_DIMS];
    int ond = 0;
    cu_geom inner;
    if (dim < 0) {
        const int64_t *st[1] = {src->strides};
        inner = cu_geom_of(src->ndim, src->shape, 1, st);
    } else {
        const int64_t *st[1] = {&src->strides[dim]};
        inner = cu_geom_of(1, &src->shape[dim], 1, st);
        const bool keep = dst->ndim == src->ndim;
        for (int d = 0, k = 0; d < src->ndim; d++) {
            if (d == dim) {
                if (keep) k++;
                continue;
            }
            oshape[ond] = src->shape[d];
            osrc[ond] = src->strides[d];
            odst[ond++] = dst->strides[k++];
        }
    }
    const int64_t *ost[2] = {odst, osrc};
    cu_geom outer = cu_geom_of(ond, oshape, 2, ost);
    if (outer.numel == 0) return NL_OK;
    const unsigned nb = (unsigned)(outer.numel < CU_MAX_BLOCKS ? outer.numel : CU_MAX_BLOCKS);
    k_reduce<<<nb, RED_THREADS, 0, c->stream>>>(outer, inner, (char *)nl_tensor_data(dst),
                                                 (int)dst->dtype,
                                                 (const char *)nl_tensor_data(src),
                                                 (int)src->dtype, kind, (int)rop);
    return cu_launched(c, "reduce");
}
