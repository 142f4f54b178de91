/* activation.c (cpu): the activation kernels outside the unary ops (leaky ReLU and GELU
 * forward), every activation's backward (per-element math in hd/act_hd.h), and softmax / log-softmax over the last dimension. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "hd/act_hd.h"

#include <math.h>

nl_status nl_cpu_act_forward(const nl_op *op)
{
    const float *x = nl_tensor_f32(op->src[0]);
    float *y = nl_tensor_f32(op->dst);
    const int act = op->i[0];
    const float slope = (float)op->f[0];
    const int64_t n = nl_tensor_numel(op->dst);
#pragma omp parallel for num_threads(cpu_threads_for(n)) schedule(static)
    for (int64_t k = 0; k < n; k++) y[k] = nl_hd_act_forward(act, x[k], slope);
    return NL_OK;
}

/* Softmax backward, one row of the last dimension at a time: gx = y * (gy - sum(gy * y)). */
static void softmax_backward(float *gx, const float *gy, const float *y, int64_t rows, int64_t len)
{
#pragma omp parallel for num_threads(cpu_threads_for(rows * len)) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gy + r * len, *p = y + r * len;
        double dot = 0;
        for (int64_t c = 0; c < len; c++) dot += (double)g[c] * p[c];
        float s = (float)dot;
        for (int64_t c = 0; c < len; c++) gx[r * len + c] = (g[c] - s) * p[c];
    }
}

nl_status nl_cpu_act_backward(const nl_op *op)
{
    float *gx = nl_tensor_f32(op->dst);
    const float *gy = nl_tensor_f32(op->src[0]), *v = nl_tensor_f32(op->src[1]);
    const int act = op->i[0];
    const int64_t n = nl_tensor_numel(op->dst);
    if (act == NL_ACT_SOFTMAX) {
        int64_t len = op->dst->ndim ? op->dst->shape[op->dst->ndim - 1] : 1;
        if (len > 0) softmax_backward(gx, gy, v, n / len, len);
        return NL_OK;
    }
    const float slope = (float)op->f[0];
#pragma omp parallel for num_threads(cpu_threads_for(n)) schedule(static)
    for (int64_t k = 0; k < n; k++) gx[k] = nl_hd_act_backward(act, gy[k], v[k], slope);
    return NL_OK;
}

/* Softmax (y = exp(x - max) / sum) or log-softmax (y = x - max - log(sum)) over the last
 * dimension, with the sum of exponentials in double; rows run in parallel. */
nl_status nl_cpu_softmax(const nl_op *op)
{
    const nl_tensor *xt = op->src[0];
    const float *x = nl_tensor_f32(xt);
    float *y = nl_tensor_f32(op->dst);
    const bool log_softmax = op->i[0] == 1;
    const int64_t n = nl_tensor_numel(xt), len = xt->ndim ? xt->shape[xt->ndim - 1] : 1;
    if (len == 0) return NL_OK;
    const int64_t rows = n / len;
#pragma omp parallel for num_threads(cpu_threads_for(n)) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        float max = xr[0];
        for (int64_t c = 1; c < len; c++) max = xr[c] > max || xr[c] != xr[c] ? xr[c] : max;
        double sum = 0;
        for (int64_t c = 0; c < len; c++) {
            float e = expf(xr[c] - max);
            if (!log_softmax) yr[c] = e;
            sum += e;
        }
        if (log_softmax) {
            float lse = (float)log(sum);
            for (int64_t c = 0; c < len; c++) yr[c] = xr[c] - max - lse;
        } else {
            float inv = (float)(1.0 / sum);
            for (int64_t c = 0; c < len; c++) yr[c] *= inv;
        }
    }
    return NL_OK;
}
