/* activation.c: element-wise activation layers (ReLU, LeakyReLU, GELU, Sigmoid, Tanh) and Softmax
 * over the last dimension, with PyTorch's formulas forward and backward. Forward runs the unary
 * ops where they exist, else NL_OP_ACT / NL_OP_SOFTMAX; backward is NL_OP_ACT_BWD. */
#include "layer.h"

#include <math.h>

extern const nl_module_type nl_relu_type, nl_leaky_relu_type, nl_gelu_type, nl_sigmoid_type,
    nl_tanh_type, nl_softmax_type;

/* The activation code of a layer type: an nl_unop or an NL_ACT_* value. */
static int act_of(const nl_module_type *t)
{
    return t == &nl_relu_type         ? NL_UN_RELU
         : t == &nl_leaky_relu_type   ? NL_ACT_LEAKY_RELU
         : t == &nl_gelu_type         ? NL_ACT_GELU
         : t == &nl_sigmoid_type      ? NL_UN_SIGMOID
         : t == &nl_tanh_type         ? NL_UN_TANH
                                      : NL_ACT_SOFTMAX;
}

/* The negative slope of LeakyReLU (its one argument); 0 for the others. */
static double slope_of(const nl_module *m) { return m->type == &nl_leaky_relu_type ? m->args[0] : 0; }

static nl_status act_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    const int act = act_of(m->type);
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x));
    if (!out) return nl_errcode();
    nl_status st;
    if (act < NL_UNOP_COUNT) {
        st = nl_unary((nl_unop)act, out, x);
    } else {
        nl_op op = {.code = act == NL_ACT_SOFTMAX ? NL_OP_SOFTMAX : NL_OP_ACT, .dst = out, .src = {x},
                    .i = {act == NL_ACT_SOFTMAX ? 0 : act}, .f = {slope_of(m)}};
        st = nl_op_exec(&op);
    }
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

static nl_status act_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    const int act = act_of(m->type);
    /* f' of leaky ReLU and GELU needs x; the others read it off y (ReLU: y > 0 iff x > 0). */
    const nl_tensor *v = act == NL_ACT_LEAKY_RELU || act == NL_ACT_GELU ? m->input : m->output;
    nl_tensor *out = nl_module_grad_buffer(m, NL_F32, gy->ndim, gy->shape, nl_tensor_device(gy));
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_ACT_BWD, .dst = out, .src = {gy, v}, .i = {act}, .f = {slope_of(m)}};
    nl_status st = nl_op_exec(&op);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *gx = out;
    return NL_OK;
}

/* Any shape in, the same shape out (Softmax needs a last dimension); no multiply-adds. */
static nl_status act_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out, int64_t *macs)
{
    if (m->type == &nl_softmax_type && ndim == 0)
        return nl_layer_shape_error(m, ndim, in, "no last dimension to normalise over");
    *out_ndim = ndim;
    for (int d = 0; d < ndim; d++) out[d] = in[d];
    *macs = 0;
    return NL_OK;
}

/* The fields every activation type shares. */
#define ACT_TYPE \
    .forward = act_forward, .backward = act_backward, .infer = act_infer

const nl_module_type nl_relu_type = {
    .name = "ReLU",
    .sig = "nn.ReLU()",
    .doc = "Rectified linear unit: y = max(x, 0), element-wise.",
    .example = "nn.ReLU():forward(tensor.from{-1, 0.5, 2})",
    ACT_TYPE,
};

const nl_module_type nl_leaky_relu_type = {
    .name = "LeakyReLU",
    .sig = "nn.LeakyReLU(slope=0.01)",
    .doc = "Leaky ReLU: y = x for x > 0, else slope * x, element-wise.",
    .example = "nn.LeakyReLU(0.2):forward(tensor.from{-1, 0.5, 2})",
    .npos = 1,
    .args = {{.name = "slope", .def = 0.01, .min = -INFINITY, .doc = "slope for negative inputs"}},
    ACT_TYPE,
};

const nl_module_type nl_gelu_type = {
    .name = "GELU",
    .sig = "nn.GELU()",
    .doc = "Gaussian error linear unit, exact form: y = x * Phi(x) = x/2 * (1 + erf(x/sqrt(2))).",
    .example = "nn.GELU():forward(tensor.from{-1, 0.5, 2})",
    ACT_TYPE,
};

const nl_module_type nl_sigmoid_type = {
    .name = "Sigmoid",
    .sig = "nn.Sigmoid()",
    .doc = "Logistic sigmoid: y = 1 / (1 + exp(-x)), element-wise.",
    .example = "nn.Sigmoid():forward(tensor.from{-1, 0.5, 2})",
    ACT_TYPE,
};

const nl_module_type nl_tanh_type = {
    .name = "Tanh",
    .sig = "nn.Tanh()",
    .doc = "Hyperbolic tangent, element-wise.",
    .example = "nn.Tanh():forward(tensor.from{-1, 0.5, 2})",
    ACT_TYPE,
};

const nl_module_type nl_softmax_type = {
    .name = "Softmax",
    .sig = "nn.Softmax()",
    .doc = "Softmax over the last dimension: y = exp(x - max) / sum(exp(x - max)); rows sum to 1.",
    .example = "nn.Softmax():forward(tensor.from{-1, 0.5, 2})",
    ACT_TYPE,
};
