/* cpu_optim.c: the fused optimizer updates (NL_OP_SGD_STEP, NL_OP_ADAM_STEP), element by element
 * with the per-element math of hd/optim_hd.h (PyTorch 1.13's single-tensor SGD / Adam / AdamW). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "hd/optim_hd.h"

nl_status nl_cpu_sgd_step(const nl_op *op)
{
    float *p = nl_tensor_f32(op->dst);
    const float *g = nl_tensor_f32(op->src[0]);
    float *buf = op->src[1] ? nl_tensor_f32(op->src[1]) : NULL;
    const int64_t n = nl_tensor_numel(op->dst);
    const nl_hd_sgd c = nl_hd_sgd_consts(op->f, op->i);
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(n))
    for (int64_t i = 0; i < n; i++) nl_hd_sgd_update(&c, &p[i], g[i], buf ? &buf[i] : NULL);
    return NL_OK;
}

nl_status nl_cpu_adam_step(const nl_op *op)
{
    float *p = nl_tensor_f32(op->dst);
    const float *g = nl_tensor_f32(op->src[0]);
    float *m = nl_tensor_f32(op->src[1]), *v = nl_tensor_f32(op->src[2]);
    const int64_t n = nl_tensor_numel(op->dst);
    const nl_hd_adam c = nl_hd_adam_consts(op->f, op->i);
#pragma omp parallel for schedule(static) num_threads(cpu_threads_for(n))
    for (int64_t i = 0; i < n; i++) nl_hd_adam_update(&c, &p[i], g[i], &m[i], &v[i]);
    return NL_OK;
}
