/* dropout.c: the Dropout layer: when training, zeroes each element with probability p and scales
 * the rest by 1/(1-p), with a mask drawn from the seeded counter-based RNG (NL_OP_DROPOUT) and
 * kept for the backward pass; the identity when evaluating or when p = 0. */
#include "layer.h"

#include <stdlib.h>

typedef struct {
    bool dropped;    /* the last forward applied a mask (else it passed the input through) */
    nl_tensor *mask; /* u8 keep mask of the last forward, reused while the shape stays */
} dropout_state;

static nl_status dropout_init(nl_module *m)
{
    if (m->args[0] > 1)
        return nl_seterr(NL_EINVAL, "Dropout: p must be between 0 and 1, got %g", m->args[0]);
    if (!(m->state = calloc(1, sizeof(dropout_state))))
        return nl_seterr(NL_ENOMEM, "Dropout: out of memory");
    return NL_OK;
}

static void dropout_destroy(nl_module *m)
{
    dropout_state *st = m->state;
    if (st) nl_tensor_release(st->mask);
    free(st);
}

static nl_status dropout_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    dropout_state *st = m->state;
    st->dropped = m->training && m->args[0] > 0;
    if (!st->dropped) {
        *y = nl_tensor_retain(x);
        return NL_OK;
    }
    const nl_device dev = nl_tensor_device(x);
    nl_tensor *mask = nl_layer_buffer(&st->mask, NL_U8, x->ndim, x->shape, dev);
    nl_tensor *out = mask ? nl_module_output_buffer(m, NL_F32, x->ndim, x->shape, dev) : NULL;
    if (!out) return nl_errcode();
    const uint64_t key = nl_rng_get_state().seed;
    nl_op op = {.code = NL_OP_DROPOUT, .dst = out, .aux = mask, .src = {x}, .f = {m->args[0]},
                .u = {key, nl_rng_reserve((uint64_t)nl_tensor_numel(x))}};
    nl_status s = nl_op_exec(&op);
    if (s != NL_OK) {
        st->dropped = false;
        nl_tensor_release(out);
        return s;
    }
    *y = out;
    return NL_OK;
}

static nl_status dropout_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    const dropout_state *st = m->state;
    if (!st->dropped) {
        *gx = nl_tensor_retain(gy);
        return NL_OK;
    }
    nl_tensor *out = nl_tensor_empty(NL_F32, gy->ndim, gy->shape, nl_tensor_device(gy));
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_DROPOUT, .dst = out, .src = {gy, st->mask}, .f = {m->args[0]}};
    nl_status s = nl_op_exec(&op);
    if (s != NL_OK) {
        nl_tensor_release(out);
        return s;
    }
    *gx = out;
    return NL_OK;
}

static nl_status dropout_infer(const nl_module *m NL_UNUSED, int ndim, const int64_t *in,
                               int *out_ndim,
                               int64_t *out, int64_t *macs)
{
    *out_ndim = ndim;
    for (int d = 0; d < ndim; d++) out[d] = in[d];
    *macs = 0;
    return NL_OK;
}

const nl_module_type nl_dropout_type = {
    .name = "Dropout",
    .sig = "nn.Dropout(p=0.5)",
    .doc = "Zeroes each element with probability p when training and scales the rest by 1/(1-p); "
           "the identity when evaluating.",
    .example = "nn.Dropout(0.25):forward(tensor.ones(8))",
    .npos = 1,
    .args = {{.name = "p", .def = 0.5, .min = 0, .doc = "probability of zeroing an element (0 to 1)"}},
    .init = dropout_init,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .infer = dropout_infer,
    .destroy = dropout_destroy,
};
