/* linear.c: the fully connected layer, y = x W^T + b over the last dimension of x, with weight
 * [out, in] and bias [out] as in PyTorch. Products go to the matmul op on views (no copies); a
 * pruned layer in evaluation mode goes to the sparse op instead (core/compress/prune.h). */
#include "layer.h"
#include "sparse.h"

#include <math.h>
#include <stdlib.h>

enum { ARG_IN, ARG_OUT, ARG_BIAS };

typedef struct {
    nl_tensor *sum;      /* the bias gradient's row sum (a work buffer) */
    nl_sparse_csr csr;   /* the weight in CSR, for sparse execution */
    nl_tensor *ws;       /* [threads, 16 * in]: the sparse kernel's workspace */
} linear_state;

/* Inputs of fewer rows than this run dense whatever the sparsity: bench/bench_sparse.c found the
 * dense product of one row of 4096 faster up to 98% zeros (0.0025 ms against 0.0069 ms at 90%,
 * 0.0033 ms at 98%: the sparse path's check of the weight alone costs about as much as the dense
 * product of one row). 16 rows make one block of the kernel. */
enum { SPARSE_MIN_ROWS = 16 };

static nl_status linear_init(nl_module *m)
{
    if (!(m->state = calloc(1, sizeof(linear_state))))
        return nl_seterr(NL_ENOMEM, "Linear: out of memory");
    const int64_t in = (int64_t)m->args[ARG_IN], out = (int64_t)m->args[ARG_OUT];
    const double bound = 1 / sqrt((double)in); /* kaiming_uniform(a=sqrt(5)) and the bias rule */
    nl_status st = nl_layer_uniform_param(m, "weight", 2, (int64_t[]){out, in}, bound);
    if (st == NL_OK && m->args[ARG_BIAS] != 0)
        st = nl_layer_uniform_param(m, "bias", 1, (int64_t[]){out}, bound);
    return st;
}

static void linear_destroy(nl_module *m)
{
    linear_state *s = m->state;
    if (!s) return;
    nl_tensor_release(s->sum);
    nl_tensor_release(s->ws);
    nl_sparse_clear(&s->csr);
    free(s);
}

static nl_status linear_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                              int64_t *out, int64_t *macs)
{
    const int64_t fin = (int64_t)m->args[ARG_IN], fout = (int64_t)m->args[ARG_OUT];
    if (ndim < 1)
        return nl_layer_shape_error(m, ndim, in, "expected an input [..., %lld], got a scalar",
                                    (long long)fin);
    if (in[ndim - 1] != fin)
        return nl_layer_shape_error(m, ndim, in, "input has %lld features, expected %lld",
                                    (long long)in[ndim - 1], (long long)fin);
    int64_t rows = 1;
    for (int d = 0; d < ndim - 1; d++) rows *= in[d];
    for (int d = 0; d < ndim - 1; d++) out[d] = in[d];
    out[ndim - 1] = fout;
    *out_ndim = ndim;
    *macs = rows * fin * fout;
    return NL_OK;
}

/* t viewed as a matrix [numel / cols, cols] (t is contiguous). New reference. */
static nl_tensor *as_matrix(nl_tensor *t, int64_t cols)
{
    return nl_tensor_reshape(t, 2, (int64_t[]){-1, cols});
}

static nl_status linear_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    nl_tensor *w = m->params[0].value;
    const nl_param *b = nl_module_param(m, "bias");
    const int64_t fin = w->shape[1], fout = w->shape[0];
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = fout;
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, x->ndim, shape, nl_tensor_device(x));
    linear_state *s = m->state;
    bool sparse = false;
    const int64_t rows = nl_tensor_numel(x) / fin;
    nl_status st = !out ? nl_errcode()
                   : rows < SPARSE_MIN_ROWS ? NL_OK
                   : nl_sparse_prepare(&s->csr, m, NL_SPARSE_LINEAR, &sparse);
    nl_tensor *ws = st == NL_OK && sparse
                        ? nl_layer_buffer(&s->ws, NL_F32, 2, (int64_t[]){nl_get_threads(), 16 * fin}, NL_CPU)
                        : NULL;
    if (sparse && !ws) st = nl_errcode();
    nl_tensor *xc = st == NL_OK && sparse ? nl_tensor_contiguous(x) : NULL;
    if (sparse && !xc && st == NL_OK) st = nl_errcode();
    nl_tensor *x2 = st != NL_OK ? NULL : as_matrix(sparse ? xc : x, fin);
    nl_tensor *y2 = x2 ? as_matrix(out, fout) : NULL;
    nl_tensor *wt = y2 && !sparse ? nl_tensor_transpose(w, 0, 1) : NULL;
    if (st == NL_OK && sparse) {
        nl_op op = {.code = NL_OP_SPLINEAR, .dst = y2, .aux = ws,
                    .src = {x2, s->csr.rowptr, s->csr.col, s->csr.val, b ? b->value : NULL}};
        st = x2 && y2 ? nl_op_exec(&op) : nl_errcode();
    } else if (st == NL_OK) {
        st = x2 && y2 && wt ? nl_matmul(y2, x2, wt) : nl_errcode();
        if (st == NL_OK && b) st = nl_binary(NL_BIN_ADD, y2, y2, b->value);
    }
    nl_tensor_release(xc);
    nl_tensor_release(x2);
    nl_tensor_release(y2);
    nl_tensor_release(wt);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

/* gW += gy^T x; gb += the sum of gy over the rows; gx = gy W (when wanted). */
static nl_status linear_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    nl_param *w = &m->params[0], *b = nl_module_param(m, "bias");
    const int64_t fin = w->value->shape[1], fout = w->value->shape[0];
    nl_tensor *x = m->input;
    nl_tensor *gy2 = as_matrix(gy, fout), *x2 = as_matrix(x, fin);
    nl_tensor *gyt = gy2 ? nl_tensor_transpose(gy2, 0, 1) : NULL;
    nl_status st = x2 && gyt ? nl_matmul_ex(w->grad, gyt, x2, true) : nl_errcode();
    if (st == NL_OK && b) {
        nl_tensor **sum = &((linear_state *)m->state)->sum;
        nl_op op = {.code = NL_OP_REDUCE, .src = {gy2}, .i = {NL_RED_SUM, 0}};
        op.dst = nl_layer_buffer(sum, NL_F32, 1, (int64_t[]){fout}, nl_tensor_device(gy));
        st = !op.dst ? nl_errcode() : nl_op_exec(&op);
        if (st == NL_OK) st = nl_binary(NL_BIN_ADD, b->grad, b->grad, *sum);
    }
    nl_tensor *g = st == NL_OK && gx ? nl_module_grad_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x)) : NULL;
    nl_tensor *g2 = g ? as_matrix(g, fin) : NULL;
    if (st == NL_OK && gx) st = g2 ? nl_matmul(g2, gy2, w->value) : nl_errcode();
    nl_tensor_release(g2);
    nl_tensor_release(gy2);
    nl_tensor_release(x2);
    nl_tensor_release(gyt);
    if (st != NL_OK) {
        nl_tensor_release(g);
        return st;
    }
    if (gx) *gx = g;
    return NL_OK;
}

const nl_module_type nl_linear_type = {
    .name = "Linear",
    .sig = "nn.Linear(in, out, {bias=true})",
    .doc = "A fully connected layer: y = x W^T + b over the last dimension of x (weight [out, in]).",
    .example = "nn.Linear(4096, 10)",
    .npos = 2,
    .args = {
        NL_ARGS_FEATURES,
        NL_ARG_BIAS,
    },
    .init = linear_init,
    .forward = linear_forward,
    .backward = linear_backward,
    .infer = linear_infer,
    .destroy = linear_destroy,
    .input_grad_optional = true,
};
