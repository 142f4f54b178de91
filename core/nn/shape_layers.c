/* shape_layers.c: layers that only reshape: Flatten ([N, ...] -> [N, rest], a view) and Identity
 * (passes its input through). Neither copies data. */
#include "layer.h"

static nl_status flatten_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                               int64_t *out, int64_t *macs)
{
    if (ndim < 2)
        return nl_layer_shape_error(m, ndim, in, "expected an input [N, ...] of 2 or more dimensions");
    int64_t rest = 1;
    for (int d = 1; d < ndim; d++) rest *= in[d];
    out[0] = in[0];
    out[1] = rest;
    *out_ndim = 2;
    *macs = 0;
    return NL_OK;
}

static nl_status flatten_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    int nd;
    int64_t shape[NL_MAX_DIMS], macs;
    flatten_infer(m, x->ndim, x->shape, &nd, shape, &macs); /* checked by nl_module_forward */
    *y = nl_tensor_reshape(x, nd, shape);
    return *y ? NL_OK : nl_errcode();
}

static nl_status flatten_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    *gx = nl_tensor_reshape(gy, m->input->ndim, m->input->shape);
    return *gx ? NL_OK : nl_errcode();
}

const nl_module_type nl_flatten_type = {
    .name = "Flatten",
    .sig = "nn.Flatten()",
    .doc = "Flattens every dimension after the first: [N, C, H, W] -> [N, C*H*W] (a view, no copy).",
    .example = "nn.Flatten()",
    .forward = flatten_forward,
    .backward = flatten_backward,
    .infer = flatten_infer,
};

static nl_status identity_infer(const nl_module *m NL_UNUSED, int ndim, const int64_t *in,
                                int *out_ndim,
                                int64_t *out, int64_t *macs)
{
    for (int d = 0; d < ndim; d++) out[d] = in[d];
    *out_ndim = ndim;
    *macs = 0;
    return NL_OK;
}

static nl_status identity_forward(nl_module *m NL_UNUSED, nl_tensor *x, nl_tensor **y)
{
    *y = nl_tensor_retain(x);
    return NL_OK;
}

static nl_status identity_backward(nl_module *m NL_UNUSED, nl_tensor *gy, nl_tensor **gx)
{
    *gx = nl_tensor_retain(gy);
    return NL_OK;
}

const nl_module_type nl_identity_type = {
    .name = "Identity",
    .sig = "nn.Identity()",
    .doc = "Returns its input unchanged (a placeholder, e.g. where a layer was removed).",
    .example = "nn.Identity()",
    .forward = identity_forward,
    .backward = identity_backward,
    .infer = identity_infer,
};
