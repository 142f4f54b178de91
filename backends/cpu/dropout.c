/* dropout.c (cpu): the dropout kernel: element k is kept when the counter-based draw
 * u01(key, counter + k) is at least p (the keep mask goes to aux), or when a given mask says so
 * (the backward pass), and kept elements are scaled by 1/(1-p). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "rng_hd.h"

nl_status nl_cpu_dropout(const nl_op *op)
{
    const float *x = nl_tensor_f32(op->src[0]);
    float *y = nl_tensor_f32(op->dst);
    const uint8_t *given = op->src[1] ? nl_tensor_data(op->src[1]) : NULL;
    uint8_t *mask = given ? NULL : nl_tensor_data(op->aux);
    const float p = (float)op->f[0];
    const float scale = op->f[0] < 1 ? (float)(1.0 / (1.0 - op->f[0])) : 0.0f;
    const uint64_t key = op->u[0], counter = op->u[1];
    const int64_t n = nl_tensor_numel(op->dst);
#pragma omp parallel for num_threads(cpu_threads_for(n)) schedule(static)
    for (int64_t k = 0; k < n; k++) {
        uint8_t keep = given ? given[k] : nl_hd_dropout_keep(key, counter + (uint64_t)k, p);
        if (mask) mask[k] = keep;
        y[k] = keep ? x[k] * scale : 0.0f;
    }
    return NL_OK;
}
