/* act_hd.h: per-element activation math shared by the CPU and CUDA backends (NL_HD): the float
 * unary functions, leaky ReLU and exact GELU forward, every activation's derivative, and the
 * label-smoothed cross-entropy target. */
#ifndef NL_ACT_HD_H
#define NL_ACT_HD_H

#include "nl.h"
#include "nl_hd.h"

#include <math.h>

/* M_SQRT1_2 and M_2_SQRTPI * M_SQRT1_2 * 0.5 (1/sqrt(2 pi)) as double literals (CUDA's math
 * header need not define the M_ constants). */
#define NL_HD_SQRT1_2 0.70710678118654752440
#define NL_HD_INV_SQRT_2PI (1.12837916709551257390 * 0.70710678118654752440 * 0.5)

NL_HD float nl_hd_relu(float x) { return x < 0 ? 0 : x; }
NL_HD float nl_hd_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Float unary op u (an nl_unop) of x. */
NL_HD float nl_hd_unary_f32(int u, float x)
{
    switch (u) {
    case NL_UN_NEG: return -x;
    case NL_UN_RELU: return nl_hd_relu(x);
    case NL_UN_EXP: return expf(x);
    case NL_UN_LOG: return logf(x);
    case NL_UN_ABS: return fabsf(x);
    case NL_UN_SQRT: return sqrtf(x);
    case NL_UN_TANH: return tanhf(x);
    default: return nl_hd_sigmoid(x); /* NL_UN_SIGMOID */
    }
}

/* Leaky ReLU or exact GELU (x * Phi(x)), written as PyTorch's CPU kernels write them. */
NL_HD float nl_hd_act_forward(int act, float x, float slope)
{
    if (act == NL_ACT_GELU) return x * 0.5f * (1.0f + erff(x * (float)NL_HD_SQRT1_2));
    return x > 0 ? x : x * slope;
}

/* gy * f'(.) given v: x for leaky ReLU and GELU, y for sigmoid and tanh, either for ReLU. */
NL_HD float nl_hd_act_backward(int act, float gy, float v, float slope)
{
    switch (act) {
    case NL_UN_RELU: return v > 0 ? gy : 0.0f;
    case NL_ACT_LEAKY_RELU: return v > 0 ? gy : gy * slope;
    case NL_UN_SIGMOID: return gy * (1.0f - v) * v;
    case NL_UN_TANH: return gy * (1.0f - v * v);
    default: { /* NL_ACT_GELU */
        const float beta = (float)NL_HD_INV_SQRT_2PI;
        float cdf = 0.5f * (1.0f + erff(v * (float)NL_HD_SQRT1_2));
        float pdf = beta * expf(v * v * -0.5f);
        return gy * (cdf + v * pdf);
    }
    }
}

/* The label-smoothed target (1 - ls) * t + ls / C of one class, t its one-hot or given
 * probability. */
NL_HD double nl_hd_smoothed_target(double t, double ls, double C)
{
    return (1 - ls) * t + ls / C;
}

#endif
