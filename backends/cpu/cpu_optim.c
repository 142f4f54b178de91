/* cpu_optim.c: the fused optimizer updates (NL_OP_SGD_STEP, NL_OP_ADAM_STEP), element by element in
 * the order and float rounding of PyTorch 1.13's single-tensor SGD / Adam / AdamW. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <math.h>

/* Scalars are rounded to float first, as PyTorch does when it multiplies an f32 tensor by a
 * Python number; the bias corrections are computed in double, as PyTorch computes them. */
nl_status nl_cpu_sgd_step(const nl_op *op)
{
    float *p = nl_tensor_f32(op->dst);
    const float *g = nl_tensor_f32(op->src[0]);
    float *buf = op->src[1] ? nl_tensor_f32(op->src[1]) : NULL;
    const int64_t n = nl_tensor_numel(op->dst);
    const float neg_lr = (float)-op->f[0], mom = (float)op->f[1], wd = (float)op->f[2];
    const float keep = (float)(1 - op->f[3]);
    const bool decay = op->f[2] != 0, nesterov = op->i[0], first = op->i[1];
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(n))
    for (int64_t i = 0; i < n; i++) {
        float d = decay ? g[i] + wd * p[i] : g[i];
        if (buf) {
            buf[i] = first ? d : buf[i] * mom + keep * d;
            d = nesterov ? d + mom * buf[i] : buf[i];
        }
        p[i] = p[i] + neg_lr * d;
    }
    return NL_OK;
}

nl_status nl_cpu_adam_step(const nl_op *op)
{
    float *p = nl_tensor_f32(op->dst);
    const float *g = nl_tensor_f32(op->src[0]);
    float *m = nl_tensor_f32(op->src[1]), *v = nl_tensor_f32(op->src[2]);
    const int64_t n = nl_tensor_numel(op->dst);
    const double lr = op->f[0], b1 = op->f[1], b2 = op->f[2], step = op->i[0];
    const bool adamw = op->i[1], l2 = !adamw && op->f[4] != 0;
    const float beta1 = (float)b1, one_b1 = (float)(1 - b1), beta2 = (float)b2,
                one_b2 = (float)(1 - b2), eps = (float)op->f[3], wd = (float)op->f[4],
                shrink = (float)(1 - lr * op->f[4]);
    const float neg_step_size = (float)-(lr / (1 - pow(b1, step)));
    const float bc2_sqrt = (float)sqrt(1 - pow(b2, step));
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(n))
    for (int64_t i = 0; i < n; i++) {
        float pi = adamw ? p[i] * shrink : p[i];
        float gi = l2 ? g[i] + wd * pi : g[i];
        m[i] = m[i] * beta1 + one_b1 * gi;
        v[i] = v[i] * beta2 + one_b2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = pi + neg_step_size * m[i] / denom;
    }
    return NL_OK;
}
