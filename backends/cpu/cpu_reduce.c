/* cpu_reduce.c: the CPU's reductions (sum, mean, max, min, argmax over one dimension or all).
 * Results never depend on the thread count: each output is reduced in fixed blocks of
 * CPU_RED_BLOCK elements whose partial results are combined in order, whoever computes them. */
#include "cpu_kernels.h"

#include <stdlib.h>

/* A partial result: the value (sums in double) and, for max/min, the logical index where it was
 * found (-1: no element yet). */
typedef struct {
    double v;
    int64_t i;
} red_acc;

/* Later elements win only when strictly better, so ties keep the first index; NaN beats
 * everything (and the first NaN stays), as in PyTorch. */
#define MAX_BETTER(v, b) ((v) > (b) || ((v) != (v) && (b) == (b)))
#define MIN_BETTER(v, b) ((v) < (b) || ((v) != (v) && (b) == (b)))

/* Sums a run in double with eight lanes (vectorisable, fixed order). The body is inlined with a
 * constant stride 1 for the contiguous case. */
#define SUM_RUN(T, s) \
    static inline __attribute__((always_inline)) double sum_##s##_body(const T *x, int64_t st, \
                                                                       int64_t n) \
    { \
        double l[8] = {0}; \
        int64_t i = 0; \
        for (; i + 8 <= n; i += 8) \
            for (int j = 0; j < 8; j++) l[j] += (double)x[(i + j) * st]; \
        for (; i < n; i++) l[0] += (double)x[i * st]; \
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); \
    } \
    static void red_sum_##s(void *ctx, char *const *p, const int64_t *st, int64_t n, int64_t index) \
    { \
        red_acc *a = ctx; \
        const T *x = (const T *)p[0]; \
        a->v += st[0] == 1 ? sum_##s##_body(x, 1, n) : sum_##s##_body(x, st[0], n); \
    }

#define EXT_RUN(T, s, kind, BETTER) \
    static void red_##kind##_##s(void *ctx, char *const *p, const int64_t *st, int64_t n, \
                                 int64_t index) \
    { \
        red_acc *a = ctx; \
        const T *x = (const T *)p[0]; \
        for (int64_t i = 0; i < n; i++) { \
            const double v = x[i * st[0]]; \
            if (a->i < 0 || BETTER(v, a->v)) { \
                a->v = v; \
                a->i = index + i; \
            } \
        } \
    }

#define RED_RUNS(T, s) SUM_RUN(T, s) EXT_RUN(T, s, max, MAX_BETTER) EXT_RUN(T, s, min, MIN_BETTER)
RED_RUNS(float, f32)
RED_RUNS(int8_t, i8)
RED_RUNS(int32_t, i32)
RED_RUNS(uint8_t, u8)

typedef enum { KIND_SUM, KIND_MAX, KIND_MIN, KIND_COUNT } red_kind;
#define RED_ROW(k) {[NL_F32] = red_##k##_f32, [NL_I8] = red_##k##_i8, [NL_I32] = red_##k##_i32, [NL_U8] = red_##k##_u8}
static const cpu_run_fn red_runs[KIND_COUNT][NL_DTYPE_COUNT] = {
    [KIND_SUM] = RED_ROW(sum), [KIND_MAX] = RED_ROW(max), [KIND_MIN] = RED_ROW(min),
};
static const red_kind redop_kind[NL_REDOP_COUNT] = {
    [NL_RED_SUM] = KIND_SUM, [NL_RED_MEAN] = KIND_SUM, [NL_RED_MAX] = KIND_MAX,
    [NL_RED_MIN] = KIND_MIN, [NL_RED_ARGMAX] = KIND_MAX,
};

/* Folds the next partial result b (in order) into a. */
static void combine(red_kind kind, red_acc *a, red_acc b)
{
    if (kind == KIND_SUM) a->v += b.v;
    else if (b.i >= 0 && (a->i < 0 || (kind == KIND_MAX ? MAX_BETTER(b.v, a->v) : MIN_BETTER(b.v, a->v))))
        *a = b;
}

/* The reduction: an iterator over the reduced elements of one output, and the output space
 * (the other dimensions) with its strides in src and dst. */
typedef struct {
    cpu_iter rit;
    int64_t len, nblk; /* reduced elements per output, blocks per output */
    int ond;
    int64_t oshape[NL_MAX_DIMS], os_src[NL_MAX_DIMS], os_dst[NL_MAX_DIMS];
    char *src, *dst;
    size_t src_size, dst_size;
    nl_redop rop;
    red_kind kind;
    cpu_run_fn run;
    nl_dtype dt;
} red_plan;

/* Where output o reads from and writes to. */
static void locate(const red_plan *p, int64_t o, char **src, char **dst)
{
    int64_t so = 0, dso = 0;
    for (int d = p->ond - 1; d >= 0; d--) {
        int64_t i = o % p->oshape[d];
        o /= p->oshape[d];
        so += i * p->os_src[d];
        dso += i * p->os_dst[d];
    }
    *src = p->src + so * (int64_t)p->src_size;
    *dst = p->dst + dso * (int64_t)p->dst_size;
}

/* The partial result of block k of the output whose elements start at src. */
static red_acc block(const red_plan *p, char *src, int64_t k)
{
    red_acc a = {0, -1};
    int64_t end = (k + 1) * CPU_RED_BLOCK;
    cpu_iter_range(&p->rit, &src, k * CPU_RED_BLOCK, end < p->len ? end : p->len, p->run, &a);
    return a;
}

/* Combines output o's blocks in order (computing them, or taking them from part) and stores it. */
static void reduce_output(const red_plan *p, int64_t o, const red_acc *part)
{
    char *src, *dst;
    locate(p, o, &src, &dst);
    red_acc a = {0, -1};
    for (int64_t k = 0; k < p->nblk; k++)
        combine(p->kind, &a, part ? part[o * p->nblk + k] : block(p, src, k));
    double v = p->rop == NL_RED_MEAN ? a.v / (double)p->len : p->rop == NL_RED_ARGMAX ? (double)a.i : a.v;
    cpu_store((cpu_ctype)p->dt, dst, v);
}

static void plan_init(red_plan *p, const nl_op *op)
{
    const nl_tensor *src = op->src[0];
    const nl_tensor *dst = op->dst;
    const int dim = op->i[1];
    p->rop = (nl_redop)op->i[0];
    p->kind = redop_kind[p->rop];
    p->run = red_runs[p->kind][src->dtype];
    p->dt = dst->dtype;
    p->src = nl_tensor_data(src);
    p->dst = nl_tensor_data(dst);
    p->src_size = nl_dtype_info(src->dtype)->size;
    p->dst_size = nl_dtype_info(dst->dtype)->size;
    p->ond = 0;
    if (dim < 0) {
        cpu_operand all = {NULL, src->strides, p->src_size};
        cpu_iter_init(&p->rit, src->ndim, src->shape, 1, &all);
    } else {
        cpu_operand one = {NULL, &src->strides[dim], p->src_size};
        cpu_iter_init(&p->rit, 1, &src->shape[dim], 1, &one);
        const bool keep = dst->ndim == src->ndim;
        for (int d = 0; d < src->ndim; d++) {
            if (d == dim) continue;
            p->oshape[p->ond] = src->shape[d];
            p->os_src[p->ond] = src->strides[d];
            p->os_dst[p->ond] = dst->strides[keep || d < dim ? d : d - 1];
            p->ond++;
        }
    }
    p->len = p->rit.numel;
    p->nblk = (p->len + CPU_RED_BLOCK - 1) / CPU_RED_BLOCK;
}

nl_status cpu_reduce(const nl_op *op)
{
    red_plan p;
    plan_init(&p, op);
    int64_t nout = 1;
    for (int d = 0; d < p.ond; d++) nout *= p.oshape[d];
    if (nout == 0) return NL_OK;
    const int nt = cpu_threads_for(nout * p.len);
    if (nout >= nt) { /* enough outputs to share out: each thread reduces whole outputs */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t o = 0; o < nout; o++) reduce_output(&p, o, NULL);
        return NL_OK;
    }
    /* Few long outputs: their blocks in parallel, then the same in-order combination. */
    red_acc *part = malloc((size_t)(nout * p.nblk) * sizeof *part);
    if (!part) return nl_seterr(NL_ENOMEM, "%s: out of memory for partial results", nl_redop_name(p.rop));
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t w = 0; w < nout * p.nblk; w++) {
        char *src, *dst;
        locate(&p, w / p.nblk, &src, &dst);
        part[w] = block(&p, src, w % p.nblk);
    }
    for (int64_t o = 0; o < nout; o++) reduce_output(&p, o, part);
    free(part);
    return NL_OK;
}
