/* sparse.c: the CPU's sparse layers over a weight in CSR (NL_OP_SPCONV2D, NL_OP_SPLINEAR), for
 * pruned networks: the work is proportional to the nonzero weights. The convolution makes each
 * image's im2col columns (cpu_im2col, shared with conv2d.c) and adds v * (column row k) into output
 * row o for every nonzero (o, k, v); the linear layer is a gathered dot product per output. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <omp.h>
#include <string.h>

enum {
    SP_LANES = 16,            /* floats in a vector; partial sums of a gathered dot product */
    SP_CHUNK = 4 * SP_LANES,  /* output positions kept in registers while a row's nonzeros go by */
};

/* Threads for `work` multiply-adds and copies: one below SP_PAR_MIN. Starting a parallel region
 * costs tens of microseconds on a loaded 2-core machine; the seed CNN's second convolution on one
 * image at 84% zeros (0.8M multiply-adds) ran in 0.038 ms on one thread and 0.07-0.12 ms on two. */
#define SP_PAR_MIN (INT64_C(1) << 22)
static int sp_threads(int64_t work) { return work < SP_PAR_MIN ? 1 : nl_get_threads(); }

/* 16 floats, one AVX-512 register (two AVX2 ones); loads and stores go through memcpy, so no
 * alignment is assumed. Without AVX-512 gcc warns that returning such a vector changes the ABI:
 * these helpers are static and inlined, so no call crosses an ABI boundary (stores take the
 * vector by pointer, which gcc's note about passing it does not concern). */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float sp_vec __attribute__((vector_size(SP_LANES * sizeof(float))));
static inline sp_vec sp_load(const float *p)
{
    sp_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void sp_store(float *p, const sp_vec *v) { memcpy(p, v, sizeof *v); }

/* y[0..SP_CHUNK) = b + sum over j in [j0, j1) of val[j] * cols[col[j]*P + 0..SP_CHUNK): the chunk's
 * partial sums stay in registers while the row's nonzeros go by (one load and one multiply-add a
 * vector per nonzero). Each position sums its nonzeros in order. */
static inline void sp_row_chunk(float *restrict y, float b, const float *restrict cols, int64_t P,
                                const int32_t *restrict col, const float *restrict val, int32_t j0,
                                int32_t j1)
{
    sp_vec a0 = {0}, a1, a2, a3;
    a0 += b;
    a1 = a0, a2 = a0, a3 = a0;
    for (int32_t j = j0; j < j1; j++) {
        const float *c = cols + (int64_t)col[j] * P;
        const sp_vec v = (sp_vec){0} + val[j];
        a0 += v * sp_load(c);
        a1 += v * sp_load(c + SP_LANES);
        a2 += v * sp_load(c + 2 * SP_LANES);
        a3 += v * sp_load(c + 3 * SP_LANES);
    }
    sp_store(y, &a0);
    sp_store(y + SP_LANES, &a1);
    sp_store(y + 2 * SP_LANES, &a2);
    sp_store(y + 3 * SP_LANES, &a3);
}

/* The same for the last n < SP_CHUNK positions, summed in memory. */
static void sp_row_tail(float *restrict y, int64_t n, float b, const float *restrict cols, int64_t P,
                        const int32_t *restrict col, const float *restrict val, int32_t j0, int32_t j1)
{
    for (int64_t i = 0; i < n; i++) y[i] = b;
    for (int32_t j = j0; j < j1; j++) {
        const float v = val[j], *restrict c = cols + (int64_t)col[j] * P;
        for (int64_t i = 0; i < n; i++) y[i] += v * c[i];
    }
}

/* Output row o of one image: yo[0..P) from its columns cn [K, P]. */
static void sp_conv_row(const cpu_conv_geom *g, const float *cn, float *yo, float b,
                        const int32_t *rp, const int32_t *col, const float *val, int64_t o)
{
    const int32_t j0 = rp[o], j1 = rp[o + 1];
    int64_t i = 0;
    for (; i + SP_CHUNK <= g->P; i += SP_CHUNK)
        sp_row_chunk(yo + i, b, cn + i, g->P, col, val, j0, j1);
    if (i < g->P) sp_row_tail(yo + i, g->P - i, b, cn + i, g->P, col, val, j0, j1);
}

/* y = sparse w * x + bias, image by image through the im2col workspace aux [T, K, OH*OW]. With at
 * least as many images as threads, the images run in parallel (a workspace slice each); else each
 * image's columns are made once and its output rows run in parallel. */
nl_status nl_cpu_spconv2d(const nl_op *op)
{
    const nl_tensor *x = op->src[0];
    const cpu_conv_geom g = cpu_conv_geometry(x, op->dst->shape[1], op->i[2], op->i[3], op->dst,
                                              op->i[0], op->i[1]);
    const int32_t *rp = nl_tensor_data(op->src[1]), *col = nl_tensor_data(op->src[2]);
    const float *val = nl_tensor_f32(op->src[3]), *bias = op->src[4] ? nl_tensor_f32(op->src[4]) : NULL;
    const float *xd = nl_tensor_f32(x);
    float *y = nl_tensor_f32(op->dst), *cols = nl_tensor_f32(op->aux);
    /* The work: writing the columns, then a multiply-add per nonzero and output position. */
    int nt = sp_threads(g.N * (g.ckk + rp[g.O]) * g.P);
    nt = nt < op->aux->shape[0] ? nt : (int)op->aux->shape[0];
    if (g.N >= nt) {
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (nt > 1)
        for (int64_t n = 0; n < g.N; n++) {
            float *cn = cols + omp_get_thread_num() * g.ckk * g.P, *yn = y + n * g.O * g.P;
            cpu_im2col(&g, xd + n * g.C * g.H * g.W, cn);
            for (int64_t o = 0; o < g.O; o++)
                sp_conv_row(&g, cn, yn + o * g.P, bias ? bias[o] : 0, rp, col, val, o);
        }
        return NL_OK;
    }
    for (int64_t n = 0; n < g.N; n++) {
        float *yn = y + n * g.O * g.P;
        cpu_im2col(&g, xd + n * g.C * g.H * g.W, cols);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t o = 0; o < g.O; o++)
            sp_conv_row(&g, cols, yn + o * g.P, bias ? bias[o] : 0, rp, col, val, o);
    }
    return NL_OK;
}

/* sum over j in [j0, j1) of val[j] * x[col[j]], in SP_LANES partial sums combined in a fixed order
 * (the lanes vectorise as a gather; the result does not depend on the thread count). */
static inline float sp_dot(const float *restrict x, const int32_t *restrict col,
                           const float *restrict val, int32_t j0, int32_t j1)
{
    float lane[SP_LANES] = {0};
    int32_t j = j0;
    for (; j + SP_LANES <= j1; j += SP_LANES)
        for (int t = 0; t < SP_LANES; t++) lane[t] += val[j + t] * x[col[j + t]];
    float s = 0;
    for (; j < j1; j++) s += val[j] * x[col[j]];
    for (int t = 0; t < SP_LANES; t++) s += lane[t];
    return s;
}

/* Rows [m0, m0 + SP_LANES) of y from x transposed into ws [K, SP_LANES]: one vector multiply-add a
 * nonzero for the block's rows together, partial sums in order of the nonzeros. */
static void sp_linear_block(const float *restrict x, int64_t K, int64_t O, float *restrict y,
                            float *restrict ws, const int32_t *rp, const int32_t *col,
                            const float *val, const float *bias)
{
    for (int64_t k = 0; k < K; k++)
        for (int r = 0; r < SP_LANES; r++) ws[k * SP_LANES + r] = x[r * K + k];
    for (int64_t o = 0; o < O; o++) {
        sp_vec a = (sp_vec){0} + (bias ? bias[o] : 0);
        for (int32_t j = rp[o]; j < rp[o + 1]; j++) a += ((sp_vec){0} + val[j]) * sp_load(ws + (int64_t)col[j] * SP_LANES);
        float out[SP_LANES];
        sp_store(out, &a);
        for (int r = 0; r < SP_LANES; r++) y[r * O + o] = out[r];
    }
}

/* y[m][o] = bias[o] + sum over the nonzeros (o, k, v) of v * x[m][k]. Blocks of SP_LANES rows run in
 * parallel, each transposed into its thread's slice of aux [T, K * SP_LANES] so that a nonzero is
 * one vector multiply-add; the rows left over (all of them when M < SP_LANES) take a gathered dot
 * product per output. */
nl_status nl_cpu_splinear(const nl_op *op)
{
    const nl_tensor *x = op->src[0];
    const int64_t M = x->shape[0], K = x->shape[1], O = op->dst->shape[1], blocks = M / SP_LANES;
    const int32_t *rp = nl_tensor_data(op->src[1]), *col = nl_tensor_data(op->src[2]);
    const float *val = nl_tensor_f32(op->src[3]), *bias = op->src[4] ? nl_tensor_f32(op->src[4]) : NULL;
    const float *xd = nl_tensor_f32(x);
    float *y = nl_tensor_f32(op->dst);
    if (blocks > 0) {
        float *ws = nl_tensor_f32(op->aux);
        int nt = sp_threads(M * (K + rp[O]));
        nt = nt < blocks ? nt : (int)blocks;
        nt = nt < op->aux->shape[0] ? nt : (int)op->aux->shape[0];
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t b = 0; b < blocks; b++)
            sp_linear_block(xd + b * SP_LANES * K, K, O, y + b * SP_LANES * O,
                            ws + omp_get_thread_num() * K * SP_LANES, rp, col, val, bias);
    }
    for (int64_t m = blocks * SP_LANES; m < M; m++)
        for (int64_t o = 0; o < O; o++)
            y[m * O + o] = (bias ? bias[o] : 0) + sp_dot(xd + m * K, col, val, rp[o], rp[o + 1]);
    return NL_OK;
}
