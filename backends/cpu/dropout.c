/* dropout.c (cpu): the dropout kernel: element k is kept when the counter-based draw
 * u01(key, counter + k) is at least p, and scaled by 1/(1-p); the same op applied to the
 * gradient with the same key and counter is the backward pass. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

nl_status nl_cpu_dropout(const nl_op *op)
{
    const float *x = nl_tensor_f32(op->src[0]);
    float *y = nl_tensor_f32(op->dst);
    const float p = (float)op->f[0];
    const float scale = op->f[0] < 1 ? (float)(1.0 / (1.0 - op->f[0])) : 0.0f;
    const uint64_t key = op->u[0], counter = op->u[1];
    const int64_t n = nl_tensor_numel(op->dst);
#pragma omp parallel for num_threads(cpu_threads_for(n)) schedule(static)
    for (int64_t k = 0; k < n; k++)
        y[k] = nl_rng_u01_at(key, counter + (uint64_t)k) >= p ? x[k] * scale : 0.0f;
    return NL_OK;
}
