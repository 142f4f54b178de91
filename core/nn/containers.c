/* containers.c: Sequential (its children in order) and Residual (y = block(x) + x, the block being
 * its children in order). */
#include "layer.h"

#include <stdio.h>
#include <string.h>

/* Says which child failed: "<message> (layer 3 of Sequential)". Interrupts keep their message. */
static nl_status in_layer(const nl_module *m, int i, nl_status st)
{
    if (st == NL_EINTR) return st;
    char msg[900];
    snprintf(msg, sizeof msg, "%s", nl_errmsg());
    return nl_seterr(st, "%s (layer %d of %s)", msg, i + 1, m->type->name);
}

/* Shapes through the children in order; the multiply-adds add up. */
static nl_status chain_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                             int64_t *out, int64_t *macs)
{
    int64_t shape[2][NL_MAX_DIMS];
    memcpy(shape[0], in, (size_t)ndim * sizeof *in);
    *macs = 0;
    for (int i = 0; i < m->nchildren; i++) {
        int64_t mc;
        nl_status st = nl_module_infer(m->children[i], ndim, shape[i & 1], &ndim, shape[~i & 1], &mc);
        if (st != NL_OK) return in_layer(m, i, st);
        *macs += mc;
    }
    *out_ndim = ndim;
    memcpy(out, shape[m->nchildren & 1], (size_t)ndim * sizeof *out);
    return NL_OK;
}

/* Drops references that a new pass through m's children replaces anyway, so that each child finds
 * its previous output unshared and can reuse it (nl_module_output_buffer): the inputs of the
 * children after the first (their predecessors' outputs) and the outputs that are views of their
 * own input (Flatten, Identity), which would keep a predecessor's storage shared. */
static void chain_release_stale(nl_module *m)
{
    for (int i = 0; i < m->nchildren; i++) {
        nl_module *c = m->children[i];
        if (c->output && c->input && c->output->storage == c->input->storage) {
            nl_tensor_release(c->output);
            c->output = NULL;
        }
        if (i > 0) {
            nl_tensor_release(c->input);
            c->input = NULL;
        }
    }
}

static nl_status chain_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    chain_release_stale(m);
    nl_tensor *h = nl_tensor_retain(x);
    for (int i = 0; i < m->nchildren; i++) {
        nl_tensor *next = NULL;
        nl_status st = nl_module_forward(m->children[i], h, &next);
        nl_tensor_release(h);
        if (st != NL_OK) return in_layer(m, i, st);
        h = next;
    }
    *y = h;
    return NL_OK;
}

/* gx NULL: the first child only adds its parameter gradients. A ReLU followed by a MaxPool2d runs
 * its backward in the pool's pass (nl_maxpool_relu_backward). */
static nl_status chain_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    nl_tensor *g = nl_tensor_retain(gy);
    for (int i = m->nchildren - 1; i >= 0; i--) {
        nl_tensor *next = NULL;
        nl_status st;
        if (i > 0 && nl_maxpool_after_relu(m->children[i], m->children[i - 1])) {
            st = nl_maxpool_relu_backward(m->children[i], g, i > 1 || gx ? &next : NULL);
            if (st == NL_OK) i--;
        } else {
            st = nl_module_backward(m->children[i], g, i > 0 || gx ? &next : NULL);
        }
        nl_tensor_release(g);
        if (st != NL_OK) return in_layer(m, i, st);
        g = next;
    }
    if (gx) *gx = g;
    else nl_tensor_release(g);
    return NL_OK;
}

/* ---------------------------------------------------------------- Sequential ------------ */

static nl_status sequential_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    /* Our output is the last child's: let go of it so that child can reuse it. */
    nl_tensor_release(m->output);
    m->output = NULL;
    return chain_forward(m, x, y);
}

const nl_module_type nl_sequential_type = {
    .name = "Sequential",
    .sig = "nn.Sequential(...)",
    .doc = "Runs its modules one after the other; backward runs them in reverse.",
    .example = "nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))",
    .container = true,
    .forward = sequential_forward,
    .backward = chain_backward,
    .infer = chain_infer,
    .input_grad_optional = true,
};

/* ---------------------------------------------------------------- Residual -------------- */

static nl_status residual_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                                int64_t *out, int64_t *macs)
{
    nl_status st = chain_infer(m, ndim, in, out_ndim, out, macs);
    if (st != NL_OK) return st;
    if (*out_ndim != ndim || memcmp(out, in, (size_t)ndim * sizeof *in) != 0) {
        char a[160], b[160];
        return nl_seterr(NL_ESHAPE, "Residual: the block's output %s differs from its input %s",
                         nl_shape_str(b, sizeof b, *out_ndim, out), nl_shape_str(a, sizeof a, ndim, in));
    }
    return NL_OK;
}

static nl_status residual_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    nl_tensor *b = NULL;
    nl_status st = chain_forward(m, x, &b);
    if (st != NL_OK) return st;
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x));
    st = out ? nl_binary(NL_BIN_ADD, out, b, x) : nl_errcode();
    nl_tensor_release(b);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

/* dL/dx = block'(x)^T gy + gy, added in place when nobody else holds the block's gradient. */
static nl_status residual_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    if (!gx) return chain_backward(m, gy, NULL);
    nl_tensor *gb = NULL;
    nl_status st = chain_backward(m, gy, &gb);
    if (st != NL_OK) return st;
    nl_tensor *out = gb->refcount == 1 && gb->storage->refcount == 1 && nl_tensor_is_contiguous(gb)
                         ? nl_tensor_retain(gb)
                         : nl_tensor_empty_like(gb);
    st = out ? nl_binary(NL_BIN_ADD, out, gb, gy) : nl_errcode();
    nl_tensor_release(gb);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *gx = out;
    return NL_OK;
}

const nl_module_type nl_residual_type = {
    .name = "Residual",
    .sig = "nn.Residual(...)",
    .doc = "A skip connection: y = block(x) + x, the block being its modules run in order; the\n"
           "block must keep the input's shape.",
    .example = "nn.Residual(nn.Conv2d(16, 16, 3, {padding=1}), nn.ReLU())",
    .container = true,
    .forward = residual_forward,
    .backward = residual_backward,
    .infer = residual_infer,
    .input_grad_optional = true,
};
