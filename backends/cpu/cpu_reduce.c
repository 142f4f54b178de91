/* cpu_reduce.c: the CPU's reductions (sum, mean, max, min, argmax, argmin over one dimension or all).
 * Results never depend on the thread count: each output is reduced in fixed blocks of
 * CPU_RED_BLOCK elements whose partial results are combined in order, whoever computes them. */
#include "cpu_kernels.h"

#include <stdlib.h>

/* Outputs reduced side by side (one group) when walking the reduced dimension row by row reads
 * memory in order: reducing over an outer dimension, or over a short one. */
enum { RED_WIDTH = 64, RED_SHORT = 64 };

/* Partial results of a group of w outputs, src stride sv apart: values (sums in double) and,
 * for max/min, the logical index along the reduction where each was found (-1: none yet). */
typedef struct {
    int64_t w, sv;
    double v[RED_WIDTH];
    int64_t i[RED_WIDTH];
} red_acc;

/* Later elements win only when strictly better, so ties keep the first index; NaN beats
 * everything (and the first NaN stays), as in PyTorch. */
#define MAX_BETTER(v, b) ((v) > (b) || ((v) != (v) && (b) == (b)))
#define MIN_BETTER(v, b) ((v) < (b) || ((v) != (v) && (b) == (b)))

/* Run functions: n reduced elements (stride st) for each output of the group. One output sums
 * its run with eight lanes (vectorisable, fixed order); a group adds row after row. The bodies
 * are inlined with constant strides for the contiguous cases. */
#define SUM_RUN(T, s) \
    static inline __attribute__((always_inline)) double sum_##s##_lanes(const T *x, int64_t st, \
                                                                        int64_t n) \
    { \
        double l[8] = {0}; \
        int64_t i = 0; \
        for (; i + 8 <= n; i += 8) \
            for (int j = 0; j < 8; j++) l[j] += (double)x[(i + j) * st]; \
        for (; i < n; i++) l[0] += (double)x[i * st]; \
        return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); \
    } \
    static inline __attribute__((always_inline)) void sum_##s##_rows( \
        double *v, const T *x, int64_t st, int64_t n, int64_t sv, int64_t w) \
    { \
        for (int64_t i = 0; i < n; i++) \
            for (int64_t j = 0; j < w; j++) v[j] += (double)x[i * st + j * sv]; \
    } \
    static void red_sum_##s(void *ctx, char *const *p, const int64_t *st, int64_t n, \
                            int64_t index NL_UNUSED)                                 \
    { \
        red_acc *a = ctx; \
        const T *x = (const T *)p[0]; \
        if (a->w == 1) a->v[0] += st[0] == 1 ? sum_##s##_lanes(x, 1, n) : sum_##s##_lanes(x, st[0], n); \
        else if (a->sv == 1) sum_##s##_rows(a->v, x, st[0], n, 1, a->w); \
        else sum_##s##_rows(a->v, x, st[0], n, a->sv, a->w); \
    }

#define EXT_RUN(T, s, kind, BETTER) \
    static inline __attribute__((always_inline)) void kind##_##s##_body( \
        red_acc *a, const T *x, int64_t st, int64_t n, int64_t index, int64_t sv, int64_t w) \
    { \
        for (int64_t i = 0; i < n; i++) \
            for (int64_t j = 0; j < w; j++) { \
                const double v = x[i * st + j * sv]; \
                if (a->i[j] < 0 || BETTER(v, a->v[j])) { \
                    a->v[j] = v; \
                    a->i[j] = index + i; \
                } \
            } \
    } \
    static void red_##kind##_##s(void *ctx, char *const *p, const int64_t *st, int64_t n, \
                                 int64_t index) \
    { \
        red_acc *a = ctx; \
        const T *x = (const T *)p[0]; \
        if (a->w == 1) kind##_##s##_body(a, x, st[0], n, index, 0, 1); \
        else kind##_##s##_body(a, x, st[0], n, index, a->sv, a->w); \
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
    [NL_RED_MIN] = KIND_MIN, [NL_RED_ARGMAX] = KIND_MAX, [NL_RED_ARGMIN] = KIND_MIN,
};

static void acc_init(red_acc *a, int64_t w, int64_t sv)
{
    a->w = w;
    a->sv = sv;
    for (int64_t j = 0; j < w; j++) {
        a->v[j] = 0;
        a->i[j] = -1;
    }
}

/* Folds the next partial results (v, i), in order, into a. */
static void combine(red_kind kind, red_acc *a, const double *v, const int64_t *i)
{
    for (int64_t j = 0; j < a->w; j++) {
        if (kind == KIND_SUM) a->v[j] += v[j];
        else if (i[j] >= 0 && (a->i[j] < 0 || (kind == KIND_MAX ? MAX_BETTER(v[j], a->v[j]) : MIN_BETTER(v[j], a->v[j])))) {
            a->v[j] = v[j];
            a->i[j] = i[j];
        }
    }
}

/* The reduction: an iterator over the reduced elements of one output, and the output space (the
 * other dimensions, with strides in src and dst). The last output dimension is cut into chunks
 * of `width` outputs; a group is one chunk at one position of the other output dimensions. */
typedef struct {
    cpu_iter rit;
    int64_t len, nblk; /* reduced elements per output, blocks of them */
    int ond;
    int64_t oshape[NL_MAX_DIMS], os_src[NL_MAX_DIMS], os_dst[NL_MAX_DIMS];
    int64_t width, nchunk, ngroup;
    char *src, *dst;
    size_t src_size, dst_size;
    nl_redop rop;
    red_kind kind;
    cpu_run_fn run;
    nl_dtype dt;
} red_plan;

/* Where group g reads and writes, and how many outputs it has. */
static int64_t locate(const red_plan *p, int64_t g, char **src, char **dst)
{
    if (p->ond == 0) {
        *src = p->src;
        *dst = p->dst;
        return 1;
    }
    const int last = p->ond - 1;
    int64_t c = g % p->nchunk, rest = g / p->nchunk;
    int64_t so = c * p->width * p->os_src[last], dso = c * p->width * p->os_dst[last];
    for (int d = last - 1; d >= 0; d--) {
        int64_t i = rest % p->oshape[d];
        rest /= p->oshape[d];
        so += i * p->os_src[d];
        dso += i * p->os_dst[d];
    }
    *src = p->src + so * (int64_t)p->src_size;
    *dst = p->dst + dso * (int64_t)p->dst_size;
    int64_t w = p->oshape[last] - c * p->width;
    return w < p->width ? w : p->width;
}

/* The partial results of block k of a group of w outputs starting at src. */
static void block(const red_plan *p, char *src, int64_t w, int64_t k, red_acc *a)
{
    acc_init(a, w, p->ond ? p->os_src[p->ond - 1] : 0);
    int64_t end = (k + 1) * CPU_RED_BLOCK;
    cpu_iter_range(&p->rit, &src, k * CPU_RED_BLOCK, end < p->len ? end : p->len, p->run, a);
}

/* Combines group g's blocks in order (computing them, or taking them from part_v/part_i) and
 * stores its outputs. */
static void reduce_group(const red_plan *p, int64_t g, const double *part_v, const int64_t *part_i)
{
    char *src, *dst;
    const int64_t w = locate(p, g, &src, &dst);
    red_acc total, b;
    acc_init(&total, w, 0);
    for (int64_t k = 0; k < p->nblk; k++) {
        if (part_v) {
            size_t at = (size_t)((g * p->nblk + k) * p->width);
            combine(p->kind, &total, part_v + at, part_i + at);
        } else {
            block(p, src, w, k, &b);
            combine(p->kind, &total, b.v, b.i);
        }
    }
    const int64_t step = (p->ond ? p->os_dst[p->ond - 1] : 0) * (int64_t)p->dst_size;
    for (int64_t j = 0; j < w; j++) {
        double v = p->rop == NL_RED_MEAN ? total.v[j] / (double)p->len
                 : p->rop == NL_RED_ARGMAX || p->rop == NL_RED_ARGMIN ? (double)total.i[j] : total.v[j];
        cpu_store((cpu_ctype)p->dt, dst + j * step, v);
    }
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
    p->width = 1;
    if (dim < 0) {
        cpu_operand all = {NULL, src->strides, p->src_size};
        cpu_iter_init(&p->rit, src->ndim, src->shape, 1, &all);
    } else {
        cpu_operand one = {NULL, &src->strides[dim], p->src_size};
        cpu_iter_init(&p->rit, 1, &src->shape[dim], 1, &one);
        const bool keep = dst->ndim == src->ndim;
        int fastest = -1;
        for (int d = 0; d < src->ndim; d++) {
            if (d == dim) continue;
            int o = p->ond++;
            p->oshape[o] = src->shape[d];
            p->os_src[o] = src->strides[d];
            p->os_dst[o] = dst->strides[keep || d < dim ? d : d - 1];
            if (p->oshape[o] > 1 && (fastest < 0 || llabs(p->os_src[o]) < llabs(p->os_src[fastest]))) fastest = o;
        }
        /* Group the outputs along their fastest dimension (moved last; the order of outputs does
         * not matter) when that reads memory in order better than one output at a time. */
        if (fastest >= 0 && (llabs(p->os_src[fastest]) < llabs(src->strides[dim]) || src->shape[dim] < RED_SHORT)) {
            const int last = p->ond - 1;
            int64_t *cols[3] = {p->oshape, p->os_src, p->os_dst};
            for (int c = 0; c < 3; c++) {
                int64_t t = cols[c][fastest];
                cols[c][fastest] = cols[c][last];
                cols[c][last] = t;
            }
            p->width = RED_WIDTH;
        }
    }
    p->len = p->rit.numel;
    p->nblk = (p->len + CPU_RED_BLOCK - 1) / CPU_RED_BLOCK;
    p->nchunk = p->ond ? (p->oshape[p->ond - 1] + p->width - 1) / p->width : 1;
    p->ngroup = p->nchunk;
    for (int d = 0; d + 1 < p->ond; d++) p->ngroup *= p->oshape[d];
}

nl_status cpu_reduce(const nl_op *op)
{
    red_plan p;
    plan_init(&p, op);
    if (p.ngroup == 0) return NL_OK;
    const int nt = cpu_threads_for(nl_tensor_numel(op->src[0]));
    if (p.ngroup >= nt) { /* enough groups to share out: each thread reduces whole groups */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t g = 0; g < p.ngroup; g++) reduce_group(&p, g, NULL, NULL);
        return NL_OK;
    }
    /* Few long groups: their blocks in parallel, then the same in-order combination. */
    const size_t n = (size_t)(p.ngroup * p.nblk * p.width);
    double *part_v = malloc(n * sizeof *part_v);
    int64_t *part_i = malloc(n * sizeof *part_i);
    if (!part_v || !part_i) {
        free(part_v);
        free(part_i);
        return nl_seterr(NL_ENOMEM, "%s: out of memory for partial results", nl_redop_name(p.rop));
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t t = 0; t < p.ngroup * p.nblk; t++) {
        char *src, *dst;
        red_acc b;
        const int64_t w = locate(&p, t / p.nblk, &src, &dst);
        block(&p, src, w, t % p.nblk, &b);
        for (int64_t j = 0; j < b.w; j++) {
            part_v[t * p.width + j] = b.v[j];
            part_i[t * p.width + j] = b.i[j];
        }
    }
    for (int64_t g = 0; g < p.ngroup; g++) reduce_group(&p, g, part_v, part_i);
    free(part_v);
    free(part_i);
    return NL_OK;
}
