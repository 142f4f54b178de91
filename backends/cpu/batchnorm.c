/* batchnorm.c (cpu): batch-norm kernels over contiguous [N, C, S...] tensors: per-channel batch
 * statistics, the normalisation, and the full (training) or affine (evaluation) backward.
 * Operands are defined in core/nn/batchnorm.c; sums run in double, one channel per task. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <math.h>

/* The geometry of x: N samples, C channels, S values per channel and sample. */
typedef struct { int64_t n, c, s; } bn_dims;

static bn_dims dims_of(const nl_tensor *x)
{
    bn_dims d = {x->shape[0], x->shape[1], 1};
    for (int k = 2; k < x->ndim; k++) d.s *= x->shape[k];
    return d;
}

/* 1/sqrt(var + eps), the scale batch norm divides by. */
static inline float bn_invstd(float var, double eps) { return (float)(1.0 / sqrt((double)var + eps)); }

/* Per-channel sums run in double over LANES interleaved partial sums (element k of a plane goes
 * to lane k % LANES), added up in lane order at the end: vectorisable, and the same result on any
 * number of threads. */
enum { LANES = 8 };

static double lanes_total(const double *acc)
{
    double t = 0;
    for (int l = 0; l < LANES; l++) t += acc[l];
    return t;
}

/* acc[lane] += a[k] * b[k] over one plane of n values, with a[k] = p[k] - shift, and b[k] = g[k]
 * when g is given, else 1 (shift 0: a plain sum) or a[k] itself (g == p: squares). */
static inline void accumulate(double *acc, const float *p, float shift, const float *g, int64_t n)
{
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; l++) {
            float a = p[k + l] - shift;
            acc[l] += (double)(g ? a * (g == p ? a : g[k + l]) : a);
        }
    for (int l = 0; k < n; k++, l++) {
        float a = p[k] - shift;
        acc[l] += (double)(g ? a * (g == p ? a : g[k]) : a);
    }
}

/* stats[c] = mean, stats[C + c] = biased variance of channel c of x, as PyTorch's CPU kernel
 * computes them (double sums; the squared deviations from the f32 mean). */
static void batch_stats(float *stats, const float *x, bn_dims d)
{
    const int64_t cnt = d.n * d.s;
#pragma omp parallel for num_threads(cpu_threads_for(cnt * d.c)) schedule(static)
    for (int64_t c = 0; c < d.c; c++) {
        double sum[LANES] = {0}, sq[LANES] = {0};
        for (int64_t i = 0; i < d.n; i++) accumulate(sum, x + (i * d.c + c) * d.s, 0, NULL, d.s);
        const float mean = (float)(lanes_total(sum) / (double)cnt);
        for (int64_t i = 0; i < d.n; i++) {
            const float *p = x + (i * d.c + c) * d.s;
            accumulate(sq, p, mean, p, d.s);
        }
        stats[c] = mean;
        stats[d.c + c] = (float)(lanes_total(sq) / (double)cnt);
    }
}

nl_status nl_cpu_batchnorm_forward(const nl_op *op)
{
    const nl_tensor *xt = op->src[0];
    const bn_dims d = dims_of(xt);
    const float *x = nl_tensor_f32(xt);
    const float *gamma = op->src[1] ? nl_tensor_f32(op->src[1]) : NULL;
    const float *beta = op->src[2] ? nl_tensor_f32(op->src[2]) : NULL;
    const bool train = op->i[0] == 1;
    const float *stats = nl_tensor_f32(train ? op->aux : op->src[3]);
    float *y = nl_tensor_f32(op->dst);
    const double eps = op->f[0];
    if (train) batch_stats(nl_tensor_f32(op->aux), x, d);
    /* y = x * a + b with a = invstd * gamma, b = beta - mean * a, per (sample, channel). */
#pragma omp parallel for num_threads(cpu_threads_for(d.n * d.c * d.s)) schedule(static)
    for (int64_t nc = 0; nc < d.n * d.c; nc++) {
        const int64_t c = nc % d.c;
        const float a = bn_invstd(stats[d.c + c], eps) * (gamma ? gamma[c] : 1.0f);
        const float b = (beta ? beta[c] : 0.0f) - stats[c] * a;
        const float *p = x + nc * d.s;
        float *q = y + nc * d.s;
        for (int64_t k = 0; k < d.s; k++) q[k] = p[k] * a + b;
    }
    return NL_OK;
}

nl_status nl_cpu_batchnorm_backward(const nl_op *op)
{
    const nl_tensor *xt = op->src[1];
    const bn_dims d = dims_of(xt);
    const int64_t cnt = d.n * d.s;
    const float *gy = nl_tensor_f32(op->src[0]), *x = nl_tensor_f32(xt);
    const float *gamma = op->src[2] ? nl_tensor_f32(op->src[2]) : NULL;
    const float *stats = nl_tensor_f32(op->src[3]);
    float *gx = nl_tensor_f32(op->dst);
    float *dparams = op->aux ? nl_tensor_f32(op->aux) : NULL;
    const bool train = op->i[0] == 1;
    const double eps = op->f[0];
#pragma omp parallel for num_threads(cpu_threads_for(cnt * d.c)) schedule(static)
    for (int64_t c = 0; c < d.c; c++) {
        const float mean = stats[c], invstd = bn_invstd(stats[d.c + c], eps);
        const float w = gamma ? gamma[c] : 1.0f;
        double acc_sum[LANES] = {0}, acc_dot[LANES] = {0};
        for (int64_t i = 0; i < d.n; i++) {
            const float *g = gy + (i * d.c + c) * d.s, *p = x + (i * d.c + c) * d.s;
            accumulate(acc_sum, g, 0, NULL, d.s);
            accumulate(acc_dot, p, mean, g, d.s);
        }
        const double sum = lanes_total(acc_sum), dotp = lanes_total(acc_dot);
        if (dparams) {
            dparams[c] = (float)(dotp * invstd);
            dparams[d.c + c] = (float)sum;
        }
        /* Training: dx = (dy - mean(dy) - (x - mean) * k) * invstd * w, with
         * k = sum((x - mean) * dy) * invstd^2 / count; evaluation: dx = dy * invstd * w. */
        const float k_proj = train ? (float)dotp * invstd * invstd / (float)cnt : 0.0f;
        const float gmean = train ? (float)(sum / (double)cnt) : 0.0f;
        for (int64_t i = 0; i < d.n; i++) {
            const int64_t off = (i * d.c + c) * d.s;
            for (int64_t k = 0; k < d.s; k++)
                gx[off + k] = (gy[off + k] - gmean - (x[off + k] - mean) * k_proj) * invstd * w;
        }
    }
    return NL_OK;
}
