/* pool.c: the CPU's 2-D max and average pooling (NL_OP_POOL2D, NL_OP_POOL2D_BWD), one (image,
 * channel) plane per OpenMP iteration, with PyTorch's rules: a max keeps the first of equal
 * values in (row, column) order and NaN wins; an average divides by k*k, padding included.
 * Each output row is built by sweeping the window's input rows and column offsets across the
 * whole row, so the inner loops run over contiguous outputs and vectorise without branches. The
 * backward of a max pool whose windows tile the input (k == stride, no padding: the common 2x2)
 * writes each input's gradient once, in order, rather than zeroing the planes and scattering. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "window.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t planes;
    int64_t H, W, OH, OW, k, s, p;
    int64_t *cols; /* [k][2]: the outputs [lo, hi) of a row that column offset kw reaches */
} pool_geom;

/* in: an [N, C, H, W] tensor, out: [N, C, OH, OW]; k, stride, padding from op->i[1..3]. The column
 * ranges are worked out once here (they cost divisions) and freed with pool_done. */
static nl_status pool_geometry(const nl_op *op, const nl_tensor *in, const nl_tensor *out,
                               pool_geom *g)
{
    *g = (pool_geom){.planes = in->shape[0] * in->shape[1], .H = in->shape[2], .W = in->shape[3],
                     .OH = out->shape[2], .OW = out->shape[3], .k = op->i[1], .s = op->i[2],
                     .p = op->i[3]};
    if (!(g->cols = malloc((size_t)g->k * 2 * sizeof *g->cols)))
        return nl_seterr(NL_ENOMEM, "pool: out of memory");
    for (int64_t kw = 0; kw < g->k; kw++)
        cpu_window_range(g->OW, g->W, g->s, g->p, kw, &g->cols[2 * kw], &g->cols[2 * kw + 1]);
    return NL_OK;
}

static nl_status pool_done(pool_geom *g)
{
    free(g->cols);
    return NL_OK;
}

/* The input rows [*h0, *h1) of output row oh's windows. */
static inline void pool_rows(const pool_geom *g, int64_t oh, int64_t *h0, int64_t *h1)
{
    int64_t hs = oh * g->s - g->p;
    *h0 = hs < 0 ? 0 : hs;
    *h1 = hs + g->k < g->H ? hs + g->k : g->H;
}

/* One input row against window column offset kw, for outputs [lo, hi) of a row: the running max
 * (and, when idx is not NULL, its flat position) or the running sum. */
static inline __attribute__((always_inline)) void pool_sweep(float *restrict y,
                                                             int32_t *restrict idx,
                                                             const float *restrict xr, int64_t lo,
                                                             int64_t hi, int64_t s, int64_t off,
                                                             int32_t base, bool avg)
{
    for (int64_t ow = lo; ow < hi; ow++) {
        const float v = xr[ow * s + off];
        if (avg) {
            y[ow] += v;
            continue;
        }
        const bool take = v > y[ow] || v != v;
        y[ow] = take ? v : y[ow];
        if (idx) idx[ow] = take ? base + (int32_t)(ow * s + off) : idx[ow];
    }
}

/* Output row oh of one plane; the three kinds get their own specialised copy of the sweep. */
static inline __attribute__((always_inline)) void pool_row(const pool_geom *g, const float *xp,
                                                           float *y, int32_t *idx, int64_t oh,
                                                           bool avg)
{
    int64_t h0, h1;
    pool_rows(g, oh, &h0, &h1);
    for (int64_t ow = 0; ow < g->OW; ow++) {
        const int64_t ws = ow * g->s - g->p;
        y[ow] = avg ? 0 : -INFINITY;
        if (idx) idx[ow] = (int32_t)(h0 * g->W + (ws < 0 ? 0 : ws)); /* PyTorch's start */
    }
    for (int64_t h = h0; h < h1; h++) {
        for (int64_t kw = 0; kw < g->k; kw++)
            pool_sweep(y, idx, xp + h * g->W, g->cols[2 * kw], g->cols[2 * kw + 1], g->s,
                       kw - g->p, (int32_t)(h * g->W), avg);
    }
    if (avg)
        for (int64_t ow = 0; ow < g->OW; ow++) y[ow] /= (float)(g->k * g->k);
}

/* Output row oh of the common 2x2, stride-2 max pool without padding in one pass: the four
 * candidates in the order of the general sweep (row, then column), with its rules. */
static inline __attribute__((always_inline)) void max2x2_row(const pool_geom *g, const float *xp,
                                                             float *restrict y,
                                                             int32_t *restrict idx, int64_t oh)
{
    const float *r[2] = {xp + 2 * oh * g->W, xp + (2 * oh + 1) * g->W};
    for (int64_t ow = 0; ow < g->OW; ow++) {
        float m = -INFINITY;
        int32_t at = (int32_t)(2 * oh * g->W + 2 * ow);
        for (int dh = 0; dh < 2; dh++)
            for (int dw = 0; dw < 2; dw++) {
                const float v = r[dh][2 * ow + dw];
                const bool take = v > m || v != v;
                m = take ? v : m;
                at = take ? (int32_t)((2 * oh + dh) * g->W + 2 * ow + dw) : at;
            }
        y[ow] = m;
        if (idx) idx[ow] = at;
    }
}

nl_status nl_cpu_pool2d_forward(const nl_op *op)
{
    pool_geom g;
    if (pool_geometry(op, op->src[0], op->dst, &g) != NL_OK) return nl_errcode();
    const float *x = nl_tensor_f32(op->src[0]);
    float *y = nl_tensor_f32(op->dst);
    int32_t *idx = op->aux ? (int32_t *)nl_tensor_data(op->aux) : NULL;
    const bool avg = op->i[0] == 1, max2x2 = !avg && g.k == 2 && g.s == 2 && g.p == 0;
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(g.planes * g.H * g.W * g.k))
    for (int64_t pl = 0; pl < g.planes; pl++) {
        const float *xp = x + pl * g.H * g.W;
        for (int64_t oh = 0; oh < g.OH; oh++) {
            const int64_t o = (pl * g.OH + oh) * g.OW;
            if (max2x2 && idx) max2x2_row(&g, xp, y + o, idx + o, oh);
            else if (max2x2) max2x2_row(&g, xp, y + o, NULL, oh);
            else if (avg) pool_row(&g, xp, y + o, NULL, oh, true);
            else if (idx) pool_row(&g, xp, y + o, idx + o, oh, false);
            else pool_row(&g, xp, y + o, NULL, oh, false);
        }
    }
    return pool_done(&g);
}

/* The max pool's gradient when its windows tile the input (k == stride, no padding): every input
 * position lies in at most one window, so each is written once, in order: gy where it is its
 * window's argmax (and, with the ReLU fused in, the window's max is positive), else 0. No zeroing
 * pass, no scatter, no branch; the same values as the scatter's 0 + gy. This writes output row
 * oh's windows from ow0 on (their k input rows), then the columns past the last window. */
static void max_tiled_row(const pool_geom *g, float *gp, const float *gyp, const int32_t *ip,
                          const float *yp, int64_t oh, int64_t ow0, int64_t k)
{
    const int64_t o = oh * g->OW;
    for (int64_t h = oh * k; h < oh * k + k; h++) {
        float *restrict gr = gp + h * g->W;
        for (int64_t ow = ow0; ow < g->OW; ow++) {
            const float gv = gyp[o + ow] + 0.0f, v = !yp || yp[o + ow] > 0 ? gv : 0.0f;
            const int32_t at = ip[o + ow] - (int32_t)(h * g->W + ow * k); /* its column in the window */
            for (int64_t dw = 0; dw < k; dw++) gr[ow * k + dw] = at == (int32_t)dw ? v : 0.0f;
        }
        for (int64_t w = g->OW * k; w < g->W; w++) gr[w] = 0;
    }
}

/* The input rows below the last window row, which no window reads. */
static void max_tiled_rest(const pool_geom *g, float *gp, int64_t k)
{
    if (g->OH * k < g->H) memset(gp + g->OH * k * g->W, 0, (size_t)((g->H - g->OH * k) * g->W) * sizeof *gp);
}

/* One plane of 2x2 windows with AVX2, 8 outputs at a time (each input row pair's 16 gradients are
 * 8 masked copies of gy interleaved, per row, as the window column says); max_tiled_row does the
 * rest of each row. */
static __attribute__((target("avx2"))) void max2x2_backward_avx2(const pool_geom *g, float *gp,
                                                                 const float *gyp,
                                                                 const int32_t *ip, const float *yp)
{
    const __m256 zero = _mm256_setzero_ps();
    const __m256i twice_lane = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i one = _mm256_set1_epi32(1), w = _mm256_set1_epi32((int32_t)g->W),
                  w1 = _mm256_set1_epi32((int32_t)g->W + 1);
    for (int64_t oh = 0; oh < g->OH; oh++) {
        float *r0 = gp + 2 * oh * g->W, *r1 = r0 + g->W;
        const int64_t o = oh * g->OW;
        int64_t ow = 0;
        for (; ow + 8 <= g->OW; ow += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(gyp + o + ow), zero);
            if (yp) v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_loadu_ps(yp + o + ow), zero, _CMP_GT_OQ));
            /* the argmax's place relative to the window's top-left corner: 0, 1, W or W + 1 */
            const __m256i at = _mm256_sub_epi32(
                _mm256_loadu_si256((const __m256i *)(ip + o + ow)),
                _mm256_add_epi32(_mm256_set1_epi32((int32_t)(2 * oh * g->W + 2 * ow)), twice_lane));
            const __m256 p[4] = {
                _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(at, _mm256_setzero_si256()))),
                _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(at, one))),
                _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(at, w))),
                _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(at, w1)))};
            for (int r = 0; r < 2; r++) {
                const __m256 lo = _mm256_unpacklo_ps(p[2 * r], p[2 * r + 1]),
                             hi = _mm256_unpackhi_ps(p[2 * r], p[2 * r + 1]);
                float *d = (r ? r1 : r0) + 2 * ow;
                _mm256_storeu_ps(d, _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
            }
        }
        max_tiled_row(g, gp, gyp, ip, yp, oh, ow, 2);
    }
    max_tiled_rest(g, gp, 2);
}

nl_status nl_cpu_pool2d_backward(const nl_op *op)
{
    pool_geom g;
    if (pool_geometry(op, op->dst, op->src[0], &g) != NL_OK) return nl_errcode();
    const float *gy = nl_tensor_f32(op->src[0]);
    const int32_t *idx = op->src[1] ? (const int32_t *)nl_tensor_data(op->src[1]) : NULL;
    const float *ymax = op->src[2] ? nl_tensor_f32(op->src[2]) : NULL; /* ReLU fused in */
    float *gx = nl_tensor_f32(op->dst);
    const bool avg = op->i[0] == 1, tiled = !avg && g.k == g.s && g.p == 0,
               avx2 = cpu_isa() >= CPU_ISA_AVX2;
    const float area = (float)(g.k * g.k);
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(g.planes * g.H * g.W * g.k))
    for (int64_t pl = 0; pl < g.planes; pl++) {
        float *gp = gx + pl * g.H * g.W;
        const float *gyp = gy + pl * g.OH * g.OW;
        if (tiled) {
            const int32_t *ip = idx + pl * g.OH * g.OW;
            const float *yp = ymax ? ymax + pl * g.OH * g.OW : NULL;
            if (g.k == 2 && avx2) {
                max2x2_backward_avx2(&g, gp, gyp, ip, yp);
                continue;
            }
            for (int64_t oh = 0; oh < g.OH; oh++) max_tiled_row(&g, gp, gyp, ip, yp, oh, 0, g.k);
            max_tiled_rest(&g, gp, g.k);
            continue;
        }
        memset(gp, 0, (size_t)(g.H * g.W) * sizeof *gp);
        if (!avg) {
            const int32_t *ip = idx + pl * g.OH * g.OW;
            if (ymax) {
                const float *yp = ymax + pl * g.OH * g.OW;
                for (int64_t o = 0; o < g.OH * g.OW; o++)
                    if (yp[o] > 0) gp[ip[o]] += gyp[o];
            } else {
                for (int64_t o = 0; o < g.OH * g.OW; o++) gp[ip[o]] += gyp[o];
            }
            continue;
        }
        for (int64_t oh = 0; oh < g.OH; oh++) {
            int64_t h0, h1;
            pool_rows(&g, oh, &h0, &h1);
            const float *gr = gyp + oh * g.OW;
            for (int64_t h = h0; h < h1; h++) {
                for (int64_t kw = 0; kw < g.k; kw++) {
                    float *xr = gp + h * g.W;
                    const int64_t off = kw - g.p;
                    for (int64_t ow = g.cols[2 * kw]; ow < g.cols[2 * kw + 1]; ow++)
                        xr[ow * g.s + off] += gr[ow] / area;
                }
            }
        }
    }
    return pool_done(&g);
}
