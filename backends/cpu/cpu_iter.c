/* cpu_iter.c: the one strided N-d iterator under every CPU kernel (dimension merging, runs along
 * the innermost dimension, splitting across OpenMP threads) and the dtype conversion loops. */
#include "cpu_kernels.h"

#include <omp.h>

const size_t cpu_ctype_size[CPU_CTYPE_COUNT] = {
    [CPU_F32] = 4, [CPU_I8] = 1, [CPU_I32] = 4, [CPU_U8] = 1, [CPU_F64] = 8,
};

const int64_t cpu_zero_strides[NL_MAX_DIMS];

cpu_operand cpu_tensor_operand(const nl_tensor *t)
{
    return (cpu_operand){nl_tensor_data(t), t->strides, nl_dtype_info(t->dtype)->size};
}

/* ---------------------------------------------------------------- iteration ------------- */

void cpu_iter_init(cpu_iter *it, int ndim, const int64_t *shape, int nops, const cpu_operand *ops)
{
    int nd = 0;
    it->nops = nops;
    it->numel = 1;
    for (int k = 0; k < nops; k++) it->esize[k] = ops[k].esize;
    for (int d = 0; d < ndim; d++) {
        it->numel *= shape[d];
        if (shape[d] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = it->strides[k][nd - 1] == ops[k].strides[d] * shape[d];
        if (merge) {
            it->shape[nd - 1] *= shape[d];
            for (int k = 0; k < nops; k++) it->strides[k][nd - 1] = ops[k].strides[d];
        } else {
            it->shape[nd] = shape[d];
            for (int k = 0; k < nops; k++) it->strides[k][nd] = ops[k].strides[d];
            nd++;
        }
    }
    if (nd == 0) { /* a single element */
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->strides[k][0] = 0;
        nd = 1;
    }
    it->ndim = nd;
}

/* Splits logical index lin over the first nd dimensions into idx and gives each operand's
 * element offset in off. */
static void unravel(const cpu_iter *it, int nd, int64_t lin, int64_t *idx, int64_t *off)
{
    for (int k = 0; k < it->nops; k++) off[k] = 0;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = lin % it->shape[d];
        lin /= it->shape[d];
        for (int k = 0; k < it->nops; k++) off[k] += idx[d] * it->strides[k][d];
    }
}

void cpu_iter_range(const cpu_iter *it, char *const *base, int64_t begin, int64_t end,
                    cpu_run_fn fn, void *ctx)
{
    if (begin >= end) return;
    const int last = it->ndim - 1, nops = it->nops;
    int64_t idx[NL_MAX_DIMS], off[CPU_MAX_OPS], rs[CPU_MAX_OPS];
    char *ptr[CPU_MAX_OPS];
    unravel(it, it->ndim, begin, idx, off);
    for (int k = 0; k < nops; k++) rs[k] = it->strides[k][last];
    for (int64_t pos = begin; pos < end;) {
        int64_t n = it->shape[last] - idx[last];
        if (n > end - pos) n = end - pos;
        if (n > CPU_RUN) n = CPU_RUN;
        for (int k = 0; k < nops; k++) ptr[k] = base[k] + off[k] * (int64_t)it->esize[k];
        fn(ctx, ptr, rs, n, pos);
        pos += n;
        idx[last] += n;
        for (int k = 0; k < nops; k++) off[k] += n * rs[k];
        for (int d = last; d > 0 && idx[d] == it->shape[d]; d--) { /* carry */
            idx[d] = 0;
            idx[d - 1]++;
            for (int k = 0; k < nops; k++)
                off[k] += it->strides[k][d - 1] - it->shape[d] * it->strides[k][d];
        }
    }
}

/* Tiled visiting of the last two dimensions, for operands that walk the second-to-last one
 * faster than the last (transposed views): the rows of a CPU_TILE x CPU_TILE tile share their
 * cache lines. Visits tiles [begin, end), counted over the outer dimensions, tile rows, tile
 * columns. Only for kernels whose elements are independent of the visiting order. */
enum { CPU_TILE = 16 }; /* small: power-of-two strides alias in the cache */

static bool wants_tiles(const cpu_iter *it)
{
    const int last = it->ndim - 1;
    if (last < 1 || it->shape[last] < CPU_TILE) return false;
    for (int k = 0; k < it->nops; k++) {
        int64_t inner = it->strides[k][last], outer = it->strides[k][last - 1];
        if (outer != 0 && (outer < 0 ? -outer : outer) < (inner < 0 ? -inner : inner)) return true;
    }
    return false;
}

static int64_t tile_count(const cpu_iter *it, int64_t *rows_t, int64_t *cols_t)
{
    const int last = it->ndim - 1;
    *rows_t = (it->shape[last - 1] + CPU_TILE - 1) / CPU_TILE;
    *cols_t = (it->shape[last] + CPU_TILE - 1) / CPU_TILE;
    return it->numel / (it->shape[last - 1] * it->shape[last]) * *rows_t * *cols_t;
}

static void iter_tiles(const cpu_iter *it, char *const *base, int64_t begin, int64_t end,
                       cpu_run_fn fn, void *ctx)
{
    const int last = it->ndim - 1, nops = it->nops;
    const int64_t rows = it->shape[last - 1], cols = it->shape[last];
    int64_t rows_t, cols_t, idx[NL_MAX_DIMS], off[CPU_MAX_OPS], rs[CPU_MAX_OPS];
    char *ptr[CPU_MAX_OPS];
    tile_count(it, &rows_t, &cols_t);
    for (int k = 0; k < nops; k++) rs[k] = it->strides[k][last];
    for (int64_t t = begin; t < end; t++) {
        const int64_t outer = t / (rows_t * cols_t), r0 = t / cols_t % rows_t * CPU_TILE,
                      c0 = t % cols_t * CPU_TILE;
        const int64_t r1 = r0 + CPU_TILE < rows ? r0 + CPU_TILE : rows;
        const int64_t n = c0 + CPU_TILE < cols ? CPU_TILE : cols - c0;
        unravel(it, it->ndim - 2, outer, idx, off);
        for (int64_t r = r0; r < r1; r++) {
            for (int k = 0; k < nops; k++)
                ptr[k] = base[k] + (off[k] + r * it->strides[k][last - 1] + c0 * rs[k]) * (int64_t)it->esize[k];
            fn(ctx, ptr, rs, n, (outer * rows + r) * cols + c0);
        }
    }
}

int cpu_threads_for(int64_t work)
{
    int nt = nl_get_threads();
    return work < CPU_PAR_MIN || nt < 2 ? 1 : nt;
}

void cpu_for_each(int ndim, const int64_t *shape, int nops, const cpu_operand *ops, cpu_run_fn fn,
                  void *ctx)
{
    cpu_iter it;
    char *base[CPU_MAX_OPS];
    cpu_iter_init(&it, ndim, shape, nops, ops);
    for (int k = 0; k < nops; k++) base[k] = ops[k].base;
    if (it.numel == 0) return;
    /* The work is a range of units, elements in order or tiles. Elements are independent, so any
     * split gives the same result; a contiguous slice per thread keeps memory streaming. */
    int64_t rows_t, cols_t;
    const bool tiled = wants_tiles(&it);
    void (*const visit)(const cpu_iter *, char *const *, int64_t, int64_t, cpu_run_fn, void *) =
        tiled ? iter_tiles : cpu_iter_range;
    const int64_t n = tiled ? tile_count(&it, &rows_t, &cols_t) : it.numel;
    const int nt = cpu_threads_for(it.numel);
    if (nt == 1) {
        visit(&it, base, 0, n, fn, ctx);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int64_t t = omp_get_thread_num(), m = omp_get_num_threads();
        visit(&it, base, n / m * t + (t < n % m ? t : n % m),
              n / m * (t + 1) + (t + 1 < n % m ? t + 1 : n % m), fn, ctx);
    }
}

/* ---------------------------------------------------------------- conversions ----------- */

/* A conversion loop from TS to TD, with the contiguous and the broadcast-scalar cases as flat
 * loops the compiler vectorises. */
#define CONV_LOOP(TS, ns, TD, nd) \
    static void conv_##ns##_##nd(void *dv, int64_t sd, const void *sv, int64_t ss, int64_t n) \
    { \
        TD *d = dv; \
        const TS *s = sv; \
        if (sd == 1 && ss == 1) { \
            for (int64_t i = 0; i < n; i++) d[i] = CPU_TO_##nd(s[i]); \
        } else if (sd == 1 && ss == 0) { \
            const TD v = CPU_TO_##nd(s[0]); \
            for (int64_t i = 0; i < n; i++) d[i] = v; \
        } else { \
            for (int64_t i = 0; i < n; i++) d[i * sd] = CPU_TO_##nd(s[i * ss]); \
        } \
    }
#define CONV_FROM(TS, ns) \
    CONV_LOOP(TS, ns, float, f32) CONV_LOOP(TS, ns, int8_t, i8) CONV_LOOP(TS, ns, int32_t, i32) \
    CONV_LOOP(TS, ns, uint8_t, u8) CONV_LOOP(TS, ns, double, f64)
CONV_FROM(float, f32)
CONV_FROM(int8_t, i8)
CONV_FROM(int32_t, i32)
CONV_FROM(uint8_t, u8)

#define CONV_ROW(ns) \
    {[CPU_F32] = conv_##ns##_f32, [CPU_I8] = conv_##ns##_i8, [CPU_I32] = conv_##ns##_i32, \
     [CPU_U8] = conv_##ns##_u8, [CPU_F64] = conv_##ns##_f64}
const cpu_conv_fn cpu_conv[NL_DTYPE_COUNT][CPU_CTYPE_COUNT] = {
    [NL_F32] = CONV_ROW(f32), [NL_I8] = CONV_ROW(i8), [NL_I32] = CONV_ROW(i32), [NL_U8] = CONV_ROW(u8),
};

void cpu_store(cpu_ctype t, void *p, double v)
{
    switch (t) {
    case CPU_F32: *(float *)p = CPU_TO_f32(v); break;
    case CPU_I8: *(int8_t *)p = CPU_TO_i8(v); break;
    case CPU_I32: *(int32_t *)p = CPU_TO_i32(v); break;
    case CPU_U8: *(uint8_t *)p = CPU_TO_u8(v); break;
    case CPU_F64: *(double *)p = v; break;
    case CPU_CTYPE_COUNT: break;
    }
}

double cpu_load(cpu_ctype t, const void *p)
{
    switch (t) {
    case CPU_F32: return *(const float *)p;
    case CPU_I8: return *(const int8_t *)p;
    case CPU_I32: return *(const int32_t *)p;
    case CPU_U8: return *(const uint8_t *)p;
    case CPU_F64: return *(const double *)p;
    case CPU_CTYPE_COUNT: break;
    }
    return 0;
}
