/* conv2d.c: the 2-D convolution layer (NCHW, weight [out, in, k, k], bias [out], as PyTorch's
 * Conv2d with square kernels). The backend's column workspaces (one slice per thread) are buffers
 * of the module's, allocated once per shape and reused. A pruned layer in evaluation mode runs the
 * sparse op on a CSR copy of its weight instead (core/compress/prune.h). */
#include "layer.h"
#include "sparse.h"

#include <math.h>
#include <stdlib.h>

enum { ARG_IN, ARG_OUT, ARG_K, ARG_STRIDE, ARG_PADDING, ARG_BIAS };

typedef struct {
    nl_tensor *cols;  /* [threads, in*k*k, OH*OW]: the forward pass's workspace */
    nl_tensor *gcols; /* [threads, in*k*k, OH*OW]: the data gradient's workspace */
    nl_sparse_csr csr; /* the weight in CSR, for sparse execution */
} conv_state;

static nl_status conv_init(nl_module *m)
{
    if (!(m->state = calloc(1, sizeof(conv_state))))
        return nl_seterr(NL_ENOMEM, "Conv2d: out of memory");
    const int64_t in = (int64_t)m->args[ARG_IN], out = (int64_t)m->args[ARG_OUT],
                  k = (int64_t)m->args[ARG_K];
    const double bound = 1 / sqrt((double)(in * k * k)); /* kaiming_uniform(a=sqrt(5)), fan_in */
    nl_status st = nl_layer_uniform_param(m, "weight", 4, (int64_t[]){out, in, k, k}, bound);
    if (st == NL_OK && m->args[ARG_BIAS] != 0)
        st = nl_layer_uniform_param(m, "bias", 1, (int64_t[]){out}, bound);
    return st;
}

static void conv_destroy(nl_module *m)
{
    conv_state *s = m->state;
    if (!s) return;
    nl_tensor_release(s->cols);
    nl_tensor_release(s->gcols);
    nl_sparse_clear(&s->csr);
    free(s);
}

static nl_status conv_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                            int64_t *out, int64_t *macs)
{
    const int64_t c = (int64_t)m->args[ARG_IN], o = (int64_t)m->args[ARG_OUT],
                  k = (int64_t)m->args[ARG_K], s = (int64_t)m->args[ARG_STRIDE],
                  p = (int64_t)m->args[ARG_PADDING];
    if (ndim != 4)
        return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, %lld, H, W]", (long long)c);
    if (in[1] != c)
        return nl_layer_shape_error(m, ndim, in, "input has %lld channels, expected %lld",
                                    (long long)in[1], (long long)c);
    if (in[2] + 2 * p < k || in[3] + 2 * p < k)
        return nl_layer_shape_error(m, ndim, in,
                                    "input %lldx%lld is smaller than the %lldx%lld kernel (padding %lld)",
                                    (long long)in[2], (long long)in[3], (long long)k, (long long)k,
                                    (long long)p);
    const int64_t oh = (in[2] + 2 * p - k) / s + 1, ow = (in[3] + 2 * p - k) / s + 1;
    if (c * k * k > INT32_MAX || oh * ow > INT32_MAX || o * c * k * k > INT32_MAX)
        return nl_layer_shape_error(m, ndim, in, "too large for a convolution through sgemm");
    out[0] = in[0];
    out[1] = o;
    out[2] = oh;
    out[3] = ow;
    *out_ndim = 4;
    *macs = in[0] * o * oh * ow * c * k * k;
    return NL_OK;
}

/* The op's integer operands: stride and padding. */
static void conv_op_ints(const nl_module *m, nl_op *op)
{
    op->i[0] = (int)m->args[ARG_STRIDE];
    op->i[1] = (int)m->args[ARG_PADDING];
}

/* The shape of a column workspace for an output (or its gradient) y: a slice per thread. */
static void cols_shape(const nl_module *m, const nl_tensor *y, int64_t shape[3])
{
    const nl_tensor *w = m->params[0].value;
    shape[0] = nl_get_threads();
    shape[1] = w->shape[1] * w->shape[2] * w->shape[3];
    shape[2] = y->shape[2] * y->shape[3];
}

static nl_status conv_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    int nd;
    int64_t shape[4], macs;
    conv_infer(m, x->ndim, x->shape, &nd, shape, &macs); /* checked by nl_module_forward */
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, 4, shape, nl_tensor_device(x));
    if (!out) return nl_errcode();
    conv_state *s = m->state;
    const nl_param *w = &m->params[0], *b = nl_module_param(m, "bias");
    int64_t cshape[3];
    cols_shape(m, out, cshape);
    bool sparse = false;
    nl_status st = nl_sparse_prepare(&s->csr, m, NL_SPARSE_CONV, &sparse);
    nl_op op = {.code = NL_OP_CONV2D, .dst = out, .src = {x, w->value, b ? b->value : NULL}};
    if (sparse)
        op = (nl_op){.code = NL_OP_SPCONV2D, .dst = out,
                     .src = {x, s->csr.rowptr, s->csr.col, s->csr.val, b ? b->value : NULL},
                     .i = {[2] = (int)w->value->shape[2], [3] = (int)w->value->shape[3]}};
    conv_op_ints(m, &op);
    op.aux = st == NL_OK ? nl_layer_buffer(&s->cols, NL_F32, 3, cshape, nl_tensor_device(x)) : NULL;
    if (st == NL_OK) st = op.aux ? nl_op_exec(&op) : nl_errcode();
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

/* The filter gradient, then (when wanted) the data gradient. */
static nl_status conv_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    conv_state *s = m->state;
    nl_param *w = &m->params[0], *b = nl_module_param(m, "bias");
    nl_tensor *x = m->input;
    nl_op filter = {.code = NL_OP_CONV2D_BWD_FILTER, .dst = w->grad, .aux = b ? b->grad : NULL,
                    .src = {x, gy}};
    conv_op_ints(m, &filter);
    nl_status st = nl_op_exec(&filter);
    if (st != NL_OK || !gx) return st;
    int64_t gcols_shape[3];
    cols_shape(m, gy, gcols_shape);
    nl_tensor *gcols = nl_layer_buffer(&s->gcols, NL_F32, 3, gcols_shape, nl_tensor_device(x));
    nl_op data = {.code = NL_OP_CONV2D_BWD_DATA, .aux = gcols, .src = {gy, w->value}};
    conv_op_ints(m, &data);
    if (!gcols || !(data.dst = nl_module_grad_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x))))
        return nl_errcode();
    if ((st = nl_op_exec(&data)) != NL_OK) {
        nl_tensor_release(data.dst);
        return st;
    }
    *gx = data.dst;
    return NL_OK;
}

const nl_module_type nl_conv2d_type = {
    .name = "Conv2d",
    .sig = "nn.Conv2d(in, out, k, {stride=1, padding=0, bias=true})",
    .doc = "A 2-D convolution over [N, in, H, W] with out filters of k x k; output\n"
           "[N, out, (H + 2*padding - k) / stride + 1, (W + 2*padding - k) / stride + 1].",
    .example = "nn.Conv2d(3, 32, 3, {padding=1})",
    .npos = 3,
    .args = {
        NL_ARGS_CONV,
        NL_ARG_BIAS,
    },
    .init = conv_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .infer = conv_infer,
    .destroy = conv_destroy,
    .input_grad_optional = true,
};
