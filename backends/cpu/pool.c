/* pool.c: the CPU's 2-D max and average pooling (NL_OP_POOL2D, NL_OP_POOL2D_BWD), one (image,
 * channel) plane per OpenMP iteration, with PyTorch's rules: a max keeps the first of equal
 * values and NaN wins; an average divides by k*k, padding included (count_include_pad). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <string.h>

typedef struct {
    int64_t planes;
    int64_t H, W, OH, OW, k, s, p;
} pool_geom;

/* in: an [N, C, H, W] tensor, out: [N, C, OH, OW]; k, stride, padding from op->i[1..3]. */
static pool_geom pool_geometry(const nl_op *op, const nl_tensor *in, const nl_tensor *out)
{
    return (pool_geom){.planes = in->shape[0] * in->shape[1], .H = in->shape[2], .W = in->shape[3],
                       .OH = out->shape[2], .OW = out->shape[3], .k = op->i[1], .s = op->i[2],
                       .p = op->i[3]};
}

/* The window of output (oh, ow) clipped to the input: rows [*h0, *h1), columns [*w0, *w1). */
static inline void pool_window(const pool_geom *g, int64_t oh, int64_t ow, int64_t *h0,
                               int64_t *h1, int64_t *w0, int64_t *w1)
{
    int64_t hs = oh * g->s - g->p, ws = ow * g->s - g->p;
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = hs + g->k < g->H ? hs + g->k : g->H;
    *w1 = ws + g->k < g->W ? ws + g->k : g->W;
}

nl_status nl_cpu_pool2d_forward(const nl_op *op)
{
    const pool_geom g = pool_geometry(op, op->src[0], op->dst);
    const float *x = nl_tensor_f32(op->src[0]);
    float *y = nl_tensor_f32(op->dst);
    int32_t *idx = op->aux ? (int32_t *)nl_tensor_data(op->aux) : NULL;
    const bool avg = op->i[0] == 1;
    const float area = (float)(g.k * g.k);
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(g.planes * g.OH * g.OW * g.k * g.k))
    for (int64_t pl = 0; pl < g.planes; pl++) {
        const float *xp = x + pl * g.H * g.W;
        for (int64_t oh = 0; oh < g.OH; oh++) {
            for (int64_t ow = 0; ow < g.OW; ow++) {
                int64_t h0, h1, w0, w1, o = (pl * g.OH + oh) * g.OW + ow;
                pool_window(&g, oh, ow, &h0, &h1, &w0, &w1);
                if (avg) {
                    float sum = 0;
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) sum += xp[h * g.W + w];
                    y[o] = sum / area;
                    continue;
                }
                float best = -INFINITY;
                int64_t at = h0 * g.W + w0;
                for (int64_t h = h0; h < h1; h++) {
                    for (int64_t w = w0; w < w1; w++) {
                        float v = xp[h * g.W + w];
                        if (v > best || isnan(v)) {
                            best = v;
                            at = h * g.W + w;
                        }
                    }
                }
                y[o] = best;
                if (idx) idx[o] = (int32_t)at;
            }
        }
    }
    return NL_OK;
}

nl_status nl_cpu_pool2d_backward(const nl_op *op)
{
    const pool_geom g = pool_geometry(op, op->dst, op->src[0]);
    const float *gy = nl_tensor_f32(op->src[0]);
    const int32_t *idx = op->src[1] ? (const int32_t *)nl_tensor_data(op->src[1]) : NULL;
    float *gx = nl_tensor_f32(op->dst);
    const bool avg = op->i[0] == 1;
    const float area = (float)(g.k * g.k);
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(g.planes * g.OH * g.OW * g.k * g.k))
    for (int64_t pl = 0; pl < g.planes; pl++) {
        float *gp = gx + pl * g.H * g.W;
        const float *gyp = gy + pl * g.OH * g.OW;
        memset(gp, 0, (size_t)(g.H * g.W) * sizeof *gp);
        if (!avg) {
            const int32_t *ip = idx + pl * g.OH * g.OW;
            for (int64_t o = 0; o < g.OH * g.OW; o++) gp[ip[o]] += gyp[o];
            continue;
        }
        for (int64_t oh = 0; oh < g.OH; oh++) {
            for (int64_t ow = 0; ow < g.OW; ow++) {
                int64_t h0, h1, w0, w1;
                pool_window(&g, oh, ow, &h0, &h1, &w0, &w1);
                const float share = gyp[oh * g.OW + ow] / area;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) gp[h * g.W + w] += share;
            }
        }
    }
    return NL_OK;
}
