/* loss.c (cpu): cross-entropy kernels on log-probabilities [N, C] (from the log-softmax op):
 * the per-sample loss and the gradient with respect to the logits. Operands: core/nn/loss.c. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <math.h>

/* The label-smoothed target of sample n, class c: (1 - ls) * t + ls / C, where t is one-hot
 * for i32 class indices and the given probability for f32 targets. */
static inline double smoothed_target(const nl_tensor *target, int64_t n, int64_t c, int64_t C,
                                     double ls)
{
    double t = target->dtype == NL_I32 ? (((const int32_t *)nl_tensor_data(target))[n] == c)
                                       : (double)nl_tensor_f32(target)[n * C + c];
    return (1 - ls) * t + ls / (double)C;
}

/* dst[n] = -sum_c q[n, c] * logp[n, c]. */
nl_status nl_cpu_cross_entropy_forward(const nl_op *op)
{
    const nl_tensor *lp = op->src[0];
    const float *logp = nl_tensor_f32(lp);
    float *loss = nl_tensor_f32(op->dst);
    const int64_t N = lp->shape[0], C = lp->shape[1];
    const double ls = op->f[0];
#pragma omp parallel for num_threads(cpu_threads_for(N * C)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int32_t *cls = op->src[1]->dtype == NL_I32 ? nl_tensor_data(op->src[1]) : NULL;
        if (cls && (cls[n] < 0 || cls[n] >= C)) {
            loss[n] = NAN; /* a class out of range: core names it (it checks when the loss is NaN) */
            continue;
        }
        double s = 0;
        for (int64_t c = 0; c < C; c++) s -= smoothed_target(op->src[1], n, c, C, ls) * logp[n * C + c];
        loss[n] = (float)s;
    }
    return NL_OK;
}

/* dst[n, c] = f[1] * (exp(logp[n, c]) * sum_c' q[n, c'] - q[n, c]). */
nl_status nl_cpu_cross_entropy_backward(const nl_op *op)
{
    const nl_tensor *lp = op->src[0];
    const float *logp = nl_tensor_f32(lp);
    float *gx = nl_tensor_f32(op->dst);
    const int64_t N = lp->shape[0], C = lp->shape[1];
    const double ls = op->f[0], scale = op->f[1];
#pragma omp parallel for num_threads(cpu_threads_for(N * C)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        double qsum = 0;
        for (int64_t c = 0; c < C; c++) qsum += smoothed_target(op->src[1], n, c, C, ls);
        for (int64_t c = 0; c < C; c++) {
            double q = smoothed_target(op->src[1], n, c, C, ls);
            gx[n * C + c] = (float)(scale * (exp((double)logp[n * C + c]) * qsum - q));
        }
    }
    return NL_OK;
}
