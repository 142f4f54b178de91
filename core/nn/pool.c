/* pool.c: pooling layers over NCHW: MaxPool2d and AvgPool2d (k x k windows, PyTorch's rules:
 * stride defaults to k, padding at most k/2, averages count the padding) and GlobalAvgPool
 * ([N, C, H, W] -> [N, C], a mean reduction). */
#include "layer.h"

#include <math.h>
#include <stdlib.h>

enum { ARG_K, ARG_STRIDE, ARG_PADDING };

typedef struct {
    nl_tensor *indices; /* max: i32 argmax of each output (flat h*W+w in its plane) */
    bool fresh;         /* indices belong to the last forward (it ran in training mode) */
    bool relu_mask;     /* the backward under way is nl_maxpool_relu_backward's */
} pool_state;

extern const nl_module_type nl_maxpool2d_type, nl_relu_type;
static bool is_max(const nl_module *m) { return m->type == &nl_maxpool2d_type; }

static nl_status pool_init(nl_module *m)
{
    if (isnan(m->args[ARG_STRIDE])) m->args[ARG_STRIDE] = m->args[ARG_K];
    if (m->args[ARG_PADDING] > floor(m->args[ARG_K] / 2))
        return nl_seterr(NL_EINVAL, "%s: padding must be at most half the kernel size, got padding=%g "
                         "for k=%g", m->type->name, m->args[ARG_PADDING], m->args[ARG_K]);
    if (is_max(m) && !(m->state = calloc(1, sizeof(pool_state))))
        return nl_seterr(NL_ENOMEM, "%s: out of memory", m->type->name);
    return NL_OK;
}

static void pool_destroy(nl_module *m)
{
    pool_state *s = m->state;
    if (!s) return;
    nl_tensor_release(s->indices);
    free(s);
}

static nl_status pool_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                            int64_t *out, int64_t *macs)
{
    const int64_t k = (int64_t)m->args[ARG_K], s = (int64_t)m->args[ARG_STRIDE],
                  p = (int64_t)m->args[ARG_PADDING];
    if (ndim != 4) return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, C, H, W]");
    if (in[2] + 2 * p < k || in[3] + 2 * p < k)
        return nl_layer_shape_error(m, ndim, in,
                                    "input %lldx%lld is smaller than the %lldx%lld window (padding %lld)",
                                    (long long)in[2], (long long)in[3], (long long)k, (long long)k,
                                    (long long)p);
    if (in[2] * in[3] > INT32_MAX)
        return nl_layer_shape_error(m, ndim, in, "planes too large for i32 indices");
    out[0] = in[0];
    out[1] = in[1];
    out[2] = (in[2] + 2 * p - k) / s + 1;
    out[3] = (in[3] + 2 * p - k) / s + 1;
    *out_ndim = 4;
    *macs = 0;
    return NL_OK;
}

/* An op of the layer's kind with its window operands. */
static nl_op pool_op(const nl_module *m, nl_opcode code)
{
    return (nl_op){.code = code,
                   .i = {is_max(m) ? 0 : 1, (int)m->args[ARG_K], (int)m->args[ARG_STRIDE],
                         (int)m->args[ARG_PADDING]}};
}

static nl_status pool_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    pool_state *s = m->state;
    int nd;
    int64_t shape[4], macs;
    pool_infer(m, x->ndim, x->shape, &nd, shape, &macs); /* checked by nl_module_forward */
    const nl_device dev = nl_tensor_device(x);
    nl_op op = pool_op(m, NL_OP_POOL2D);
    op.src[0] = x;
    if (s) s->fresh = false;
    if (s && m->training && !(op.aux = nl_layer_buffer(&s->indices, NL_I32, 4, shape, dev)))
        return nl_errcode();
    if (!(op.dst = nl_module_output_buffer(m, NL_F32, 4, shape, dev))) return nl_errcode();
    nl_status st = nl_op_exec(&op);
    if (st != NL_OK) {
        nl_tensor_release(op.dst);
        return st;
    }
    if (s) s->fresh = op.aux != NULL;
    *y = op.dst;
    return NL_OK;
}

/* The argmax of the last forward: saved while training, else found again from its input. */
static nl_status max_indices(nl_module *m)
{
    pool_state *s = m->state;
    if (s->fresh) return NL_OK;
    const nl_tensor *y = m->output;
    nl_op op = pool_op(m, NL_OP_POOL2D);
    op.src[0] = m->input;
    op.aux = nl_layer_buffer(&s->indices, NL_I32, 4, y->shape, nl_tensor_device(y));
    op.dst = op.aux ? nl_tensor_empty_like(y) : NULL;
    nl_status st = op.dst ? nl_op_exec(&op) : nl_errcode();
    nl_tensor_release(op.dst);
    s->fresh = st == NL_OK;
    return st;
}

static nl_status pool_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    pool_state *s = m->state;
    nl_status st = s ? max_indices(m) : NL_OK;
    if (st != NL_OK) return st;
    nl_op op = pool_op(m, NL_OP_POOL2D_BWD);
    op.src[0] = gy;
    op.src[1] = s ? s->indices : NULL;
    const nl_tensor *x = m->input;
    if (s && s->relu_mask) op.src[2] = m->output;
    if (!(op.dst = nl_module_grad_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x))))
        return nl_errcode();
    if ((st = nl_op_exec(&op)) != NL_OK) {
        nl_tensor_release(op.dst);
        return st;
    }
    *gx = op.dst;
    return NL_OK;
}

bool nl_maxpool_after_relu(const nl_module *pool, const nl_module *relu)
{
    return pool->type == &nl_maxpool2d_type && relu->type == &nl_relu_type && pool->input &&
           pool->input == relu->output;
}

nl_status nl_maxpool_relu_backward(nl_module *pool, nl_tensor *gy, nl_tensor **gx)
{
    pool_state *s = pool->state;
    s->relu_mask = true;
    nl_status st = nl_module_backward(pool, gy, gx);
    s->relu_mask = false;
    return st;
}

const nl_module_type nl_maxpool2d_type = {
    .name = "MaxPool2d",
    .sig = "nn.MaxPool2d(k, {stride=k, padding=0})",
    .doc = "The maximum of each k x k window (padding never wins).",
    .example = "nn.MaxPool2d(2)",
    .npos = 1,
    .args = {NL_ARGS_WINDOW},
    .init = pool_init,
    .forward = pool_forward,
    .backward = pool_backward,
    .infer = pool_infer,
    .destroy = pool_destroy,
};

const nl_module_type nl_avgpool2d_type = {
    .name = "AvgPool2d",
    .sig = "nn.AvgPool2d(k, {stride=k, padding=0})",
    .doc = "The mean of each k x k window; padded positions count as zeros (divisor k*k).",
    .example = "nn.AvgPool2d(3, {stride=1, padding=1})",
    .npos = 1,
    .args = {NL_ARGS_WINDOW},
    .init = pool_init,
    .forward = pool_forward,
    .backward = pool_backward,
    .infer = pool_infer,
    .destroy = pool_destroy,
};

/* ---------------------------------------------------------------- GlobalAvgPool --------- */

static nl_status gap_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out, int64_t *macs)
{
    if (ndim != 4) return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, C, H, W]");
    if (in[2] * in[3] == 0) return nl_layer_shape_error(m, ndim, in, "no positions to average");
    out[0] = in[0];
    out[1] = in[1];
    *out_ndim = 2;
    *macs = 0;
    return NL_OK;
}

/* x as [N, C, H*W] (a view of the contiguous input or gradient). New reference. */
static nl_tensor *as_planes(nl_tensor *t)
{
    return nl_tensor_reshape(t, 3, (int64_t[]){t->shape[0], t->shape[1], t->shape[2] * t->shape[3]});
}

static nl_status gap_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    nl_tensor *x3 = as_planes(x);
    nl_op op = {.code = NL_OP_REDUCE, .src = {x3}, .i = {NL_RED_MEAN, 2}};
    op.dst = x3 ? nl_module_output_buffer(m, NL_F32, 2, x->shape, nl_tensor_device(x)) : NULL;
    nl_status st = op.dst ? nl_op_exec(&op) : nl_errcode();
    nl_tensor_release(x3);
    if (st != NL_OK) {
        nl_tensor_release(op.dst);
        return st;
    }
    *y = op.dst;
    return NL_OK;
}

/* gx[n, c, h, w] = gy[n, c] / (H*W). */
static nl_status gap_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    const nl_tensor *x = m->input;
    nl_tensor *g = nl_module_grad_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x));
    nl_tensor *g3 = g ? as_planes(g) : NULL;
    nl_tensor *col = nl_tensor_reshape(gy, 3, (int64_t[]){gy->shape[0], gy->shape[1], 1});
    nl_tensor *spread = g3 && col ? nl_tensor_expand(col, 3, g3->shape) : NULL;
    nl_status st = spread ? nl_binary_scalar(NL_BIN_DIV, g3, spread, (double)g3->shape[2], false)
                          : nl_errcode();
    nl_tensor_release(spread);
    nl_tensor_release(col);
    nl_tensor_release(g3);
    if (st != NL_OK) {
        nl_tensor_release(g);
        return st;
    }
    *gx = g;
    return NL_OK;
}

const nl_module_type nl_globalavgpool_type = {
    .name = "GlobalAvgPool",
    .sig = "nn.GlobalAvgPool()",
    .doc = "The mean of each channel over all positions: [N, C, H, W] -> [N, C].",
    .example = "nn.GlobalAvgPool()",
    .forward = gap_forward,
    .backward = gap_backward,
    .infer = gap_infer,
};
