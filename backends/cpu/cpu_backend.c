/* cpu_backend.c: the CPU backend's vtable: 64-byte aligned host memory, host copies, and
 * dispatch of each opcode to its kernel (cpu_elementwise.c, cpu_reduce.c, cpu_matmul.c, the layer
 * kernels in <layer>.c, sparse.c, cpu_index.c). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int64_t alloc_count; /* allocations so far (nl_cpu_alloc_count) */

int64_t nl_cpu_alloc_count(void) { return alloc_count; }

static void *cpu_alloc(nl_backend *be NL_UNUSED, size_t bytes)
{
    void *p = NULL;
    alloc_count++;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) {
        nl_seterr(NL_ENOMEM, "cpu: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static void cpu_free(nl_backend *be NL_UNUSED, void *ptr) { free(ptr); }

static nl_status cpu_copy_bytes(nl_backend *be NL_UNUSED, void *dst, nl_device dst_dev,
                                const void *src,
                                nl_device src_dev, size_t bytes)
{
    if (dst_dev != NL_CPU || src_dev != NL_CPU)
        return nl_seterr(NL_EDEVICE, "cpu: cannot copy between %s and %s", nl_device_name(src_dev),
                         nl_device_name(dst_dev));
    if (bytes) memmove(dst, src, bytes);
    return NL_OK;
}

static void cpu_sync(nl_backend *be NL_UNUSED) {}

/* One kernel per opcode; NULL where the CPU backend has none (yet). */
static nl_status (*const kernels[NL_OPCODE_COUNT])(const nl_op *op) = {
    [NL_OP_FILL] = cpu_fill,
    [NL_OP_COPY] = cpu_copy,
    [NL_OP_BINARY] = cpu_binary,
    [NL_OP_BINARY_SCALAR] = cpu_binary_scalar,
    [NL_OP_UNARY] = cpu_unary,
    [NL_OP_REDUCE] = cpu_reduce,
    [NL_OP_MATMUL] = cpu_matmul,
    [NL_OP_RAND_UNIFORM] = cpu_rand,
    [NL_OP_RAND_NORMAL] = cpu_rand,
    [NL_OP_ACT] = nl_cpu_act_forward,
    [NL_OP_ACT_BWD] = nl_cpu_act_backward,
    [NL_OP_SOFTMAX] = nl_cpu_softmax,
    [NL_OP_BATCHNORM] = nl_cpu_batchnorm_forward,
    [NL_OP_BATCHNORM_BWD] = nl_cpu_batchnorm_backward,
    [NL_OP_DROPOUT] = nl_cpu_dropout,
    [NL_OP_CROSS_ENTROPY] = nl_cpu_cross_entropy_forward,
    [NL_OP_CROSS_ENTROPY_BWD] = nl_cpu_cross_entropy_backward,
    [NL_OP_CONV2D] = nl_cpu_conv2d_forward,
    [NL_OP_CONV2D_BWD_DATA] = nl_cpu_conv2d_backward_data,
    [NL_OP_CONV2D_BWD_FILTER] = nl_cpu_conv2d_backward_filter,
    [NL_OP_POOL2D] = nl_cpu_pool2d_forward,
    [NL_OP_POOL2D_BWD] = nl_cpu_pool2d_backward,
    [NL_OP_SGD_STEP] = nl_cpu_sgd_step,
    [NL_OP_ADAM_STEP] = nl_cpu_adam_step,
    [NL_OP_QCONV2D] = nl_cpu_qconv2d,
    [NL_OP_QUANTIZE] = nl_cpu_quantize,
    [NL_OP_QPOOL2D] = nl_cpu_qpool2d,
    [NL_OP_INT4_DEQUANT] = nl_cpu_int4_dequant,
    [NL_OP_INT4_LINEAR] = nl_cpu_int4_linear,
    [NL_OP_INT4_CONV2D] = nl_cpu_int4_conv2d,
    [NL_OP_FAKEQUANT] = nl_cpu_fakequant,
    [NL_OP_SPCONV2D] = nl_cpu_spconv2d,
    [NL_OP_SPLINEAR] = nl_cpu_splinear,
    [NL_OP_WHERE] = cpu_where,
    [NL_OP_GATHER] = cpu_gather,
    [NL_OP_CUMSUM] = cpu_cumsum,
    [NL_OP_SORT] = cpu_sort,
};

static bool cpu_supports(nl_backend *be NL_UNUSED, const nl_op *op)
{
    if ((unsigned)op->code >= NL_OPCODE_COUNT || !kernels[op->code]) return false;
    if (op->code == NL_OP_MATMUL)
        return op->dst->dtype == NL_F32 && op->src[0]->dtype == NL_F32 && op->src[1]->dtype == NL_F32;
    return true;
}

static nl_status cpu_exec(nl_backend *be, const nl_op *op)
{
    if (!cpu_supports(be, op))
        return nl_seterr(NL_EUNSUPPORTED, "%s: not supported by the cpu backend", nl_opcode_name(op->code));
    return kernels[op->code](op);
}

nl_backend *nl_cpu_backend(void)
{
    static nl_backend cpu = {
        .name = "cpu",
        .device = NL_CPU,
        .ctx = NULL,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .copy = cpu_copy_bytes,
        .sync = cpu_sync,
        .supports = cpu_supports,
        .exec = cpu_exec,
    };
    return &cpu;
}
