/* batchnorm.c: BatchNorm1d ([N, C] or [N, C, L]) and BatchNorm2d ([N, C, H, W]), as PyTorch's:
 * training normalises with the batch's statistics and updates the running ones, evaluation uses
 * the running statistics. SyncBatchNorm ([N, C, ...]) trains with the statistics of the global
 * batch of a data-parallel job (PyTorch's SyncBatchNorm), through the sum the distributed layer
 * registers (nl_set_sync_sum); alone it is BatchNorm.
 *
 * The ops (x, y contiguous f32 [N, C, S...]; per-channel tensors f32 [C]; stats f32 [2, C] with
 * row 0 the mean and row 1 the variance; invstd = 1 / sqrt(var + eps)):
 *   NL_OP_BATCHNORM      dst y = (x - mean) * invstd * gamma + beta, computed as x * a + b with
 *                        a = invstd * gamma, b = beta - mean * a (PyTorch's CPU form).
 *                        src[0] x, src[1] gamma (NULL: 1), src[2] beta (NULL: 0), f[0] eps.
 *                        i[0] = 0: stats are read from src[3];
 *                        i[0] = 1: the batch's stats (mean, biased variance over N and S) are
 *                        computed and written to aux, then used.
 *   NL_OP_BATCHNORM_BWD  dst gx from gy src[0], x src[1], gamma src[2] (NULL: 1), stats src[3]
 *                        (those the forward used), f[0] eps.
 *                        i[0] = 1 (training): gx = (gy - mean(gy) - (x - mean) * k) * invstd * gamma
 *                        with k = sum((x - mean) * gy) * invstd^2 / count;
 *                        i[0] = 0 (evaluation): gx = gy * invstd * gamma.
 *                        aux [2, C] (may be NULL) receives dgamma = sum((x - mean) * gy) * invstd
 *                        and dbeta = sum(gy) of this call (the layer adds them to the gradients).
 * The running statistics are updated by the layer with element-wise ops:
 * running = (1 - momentum) * running + momentum * batch, with the unbiased variance. */
#include "layer.h"

#include <math.h>
#include <stdlib.h>

extern const nl_module_type nl_batchnorm1d_type, nl_batchnorm2d_type, nl_syncbatchnorm_type;

static nl_sync_sum_fn sync_sum;

void nl_set_sync_sum(nl_sync_sum_fn fn) { sync_sum = fn; }

int nl_batchnorm_make_sync(nl_module *net)
{
    int n = 0;
    if (net->type == &nl_batchnorm1d_type || net->type == &nl_batchnorm2d_type) {
        net->type = &nl_syncbatchnorm_type; /* the same arguments, parameters and state */
        n++;
    }
    for (int i = 0; i < net->nchildren; i++) n += nl_batchnorm_make_sync(net->children[i]);
    return n;
}

enum { ARG_C, ARG_EPS, ARG_MOMENTUM, ARG_AFFINE };

/* A [2, C] buffer and [C] views of its two rows. */
typedef struct {
    nl_tensor *all, *row[2];
} bn_rows;

/* Per-module buffers, allocated on the first forward (and again only if the device changes). */
typedef struct {
    bn_rows stats;   /* the mean and variance the last forward used */
    bn_rows dparams; /* dgamma, dbeta of the last backward */
    nl_tensor *tmp;  /* [C] scratch for the running-statistics update */
    bool train;      /* the last forward normalised with batch statistics */
    bool sync;       /* ... of the global batch (SyncBatchNorm under several ranks) */
    int64_t count;   /* values per channel those statistics were taken over */
} bn_state;

static void rows_free(bn_rows *r)
{
    nl_tensor_release(r->all);
    nl_tensor_release(r->row[0]);
    nl_tensor_release(r->row[1]);
    *r = (bn_rows){0};
}

static nl_status rows_alloc(bn_rows *r, int64_t c, nl_device dev)
{
    const int64_t shape[2] = {2, c};
    rows_free(r);
    r->all = nl_tensor_empty(NL_F32, 2, shape, dev);
    for (int k = 0; k < 2 && r->all; k++) {
        nl_tensor *s = nl_tensor_slice(r->all, 0, k, k + 1);
        r->row[k] = s ? nl_tensor_reshape(s, 1, &c) : NULL;
        nl_tensor_release(s);
        if (!r->row[k]) break;
    }
    if (!r->row[1]) {
        rows_free(r);
        return nl_errcode();
    }
    return NL_OK;
}

/* Makes the state's buffers live on dev. */
static nl_status state_ready(bn_state *st, int64_t c, nl_device dev)
{
    if (st->tmp && nl_tensor_device(st->tmp) == dev) return NL_OK;
    nl_tensor_release(st->tmp);
    st->tmp = NULL;
    nl_status s = rows_alloc(&st->stats, c, dev);
    if (s == NL_OK) s = rows_alloc(&st->dparams, c, dev);
    if (s == NL_OK && !(st->tmp = nl_tensor_empty(NL_F32, 1, &c, dev))) s = nl_errcode();
    return s;
}

static nl_status bn_init(nl_module *m)
{
    const int64_t c = (int64_t)m->args[ARG_C];
    if (!(m->state = calloc(1, sizeof(bn_state))))
        return nl_seterr(NL_ENOMEM, "%s: out of memory", m->type->name);
    struct { const char *name; double value; bool grad; } p[] = {
        {"weight", 1, true}, {"bias", 0, true}, {"running_mean", 0, false}, {"running_var", 1, false},
    };
    for (int i = m->args[ARG_AFFINE] != 0 ? 0 : 2; i < 4; i++) {
        nl_tensor *t = nl_tensor_empty(NL_F32, 1, &c, NL_CPU);
        nl_status s = t ? nl_fill(t, p[i].value) : nl_errcode();
        if (s == NL_OK) s = nl_module_add_param(m, p[i].name, t, p[i].grad);
        nl_tensor_release(t);
        if (s != NL_OK) return s;
    }
    return NL_OK;
}

static void bn_destroy(nl_module *m)
{
    bn_state *st = m->state;
    if (!st) return;
    rows_free(&st->stats);
    rows_free(&st->dparams);
    nl_tensor_release(st->tmp);
    free(st);
}

/* running = (1 - momentum) * running + momentum * scale * batch (tmp: scratch of the same shape). */
static nl_status running_update(nl_tensor *running, const nl_tensor *batch, double momentum,
                                double scale, nl_tensor *tmp)
{
    nl_status s = nl_binary_scalar(NL_BIN_MUL, tmp, batch, momentum * scale, false);
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, running, running, 1 - momentum, false);
    if (s == NL_OK) s = nl_binary(NL_BIN_ADD, running, running, tmp);
    return s;
}

static nl_tensor *value_of(nl_module *m, const char *name)
{
    nl_param *p = nl_module_param(m, name);
    return p ? p->value : NULL;
}

/* t's n elements (f32, contiguous, any device) as doubles in v: one transfer. */
static nl_status host_doubles(const nl_tensor *t, double *v, int64_t n)
{
    float *f = malloc((size_t)n * sizeof *f);
    nl_status s = f ? nl_tensor_get_data(t, f, 0, (size_t)n) : nl_seterr(NL_ENOMEM, "SyncBatchNorm: out of memory");
    for (int64_t i = 0; s == NL_OK && i < n; i++) v[i] = f[i];
    free(f);
    return s;
}

/* dst's n elements (f32, contiguous, any device) = v[0..n): one transfer. */
static nl_status set_from_doubles(nl_tensor *dst, const double *v, int64_t n)
{
    float *f = malloc((size_t)n * sizeof *f);
    if (!f) return nl_seterr(NL_ENOMEM, "SyncBatchNorm: out of memory");
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
    nl_status s = nl_tensor_set_data(dst, f, 0, (size_t)n);
    free(f);
    return s;
}

/* SyncBatchNorm's training forward: the local statistics (one pass of the kernel), their global
 * mean and biased variance from the sums over the ranks of n * mean and n * (var + mean^2), then
 * the normalisation with those (a second pass that reads them). *count becomes the global count. */
static nl_status sync_stats(nl_module *m, bn_state *st, nl_op *op, int64_t *count)
{
    const int64_t c = (int64_t)m->args[ARG_C];
    double *v = malloc((size_t)(4 * c + 1) * sizeof *v);
    if (!v) return nl_seterr(NL_ENOMEM, "%s: out of memory", m->type->name);
    nl_status s = nl_op_exec(op);
    if (s == NL_OK) s = host_doubles(st->stats.all, v + 2 * c, 2 * c);
    const double n = (double)*count;
    for (int64_t i = 0; s == NL_OK && i < c; i++) {
        double mean = v[2 * c + i], var = v[3 * c + i];
        v[i] = n * mean;
        v[c + i] = n * (var + mean * mean);
    }
    v[2 * c] = n;
    if (s == NL_OK) s = sync_sum(v, (int)(2 * c + 1));
    const double total = v[2 * c];
    for (int64_t i = 0; s == NL_OK && i < c; i++) {
        double mean = v[i] / total, var = v[c + i] / total - mean * mean;
        v[i] = mean;
        v[c + i] = var > 0 ? var : 0;
    }
    if (s == NL_OK) s = set_from_doubles(st->stats.all, v, 2 * c);
    free(v);
    if (s != NL_OK) return s;
    *count = (int64_t)total;
    op->aux = NULL; /* normalise with the global statistics */
    op->src[3] = st->stats.all;
    op->i[0] = 0;
    return nl_op_exec(op);
}

static nl_status bn_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    bn_state *st = m->state;
    const int64_t c = x->shape[1]; /* c >= 1: infer checked it */
    int64_t count = nl_tensor_numel(x) / c;
    const bool sync = m->type == &nl_syncbatchnorm_type && sync_sum && m->training;
    const nl_device dev = nl_tensor_device(x);
    if (m->training && count <= 1)
        return nl_layer_shape_error(m, x->ndim, x->shape,
                                    "expected more than 1 value per channel when training");
    nl_status s = state_ready(st, c, dev);
    nl_tensor *rmean = value_of(m, "running_mean"), *rvar = value_of(m, "running_var");
    if (s == NL_OK && !m->training) {
        s = nl_copy(st->stats.row[0], rmean);
        if (s == NL_OK) s = nl_copy(st->stats.row[1], rvar);
    }
    if (s != NL_OK) return s;
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, x->ndim, x->shape, dev);
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_BATCHNORM, .dst = out, .aux = m->training ? st->stats.all : NULL,
                .src = {x, value_of(m, "weight"), value_of(m, "bias"), m->training ? NULL : st->stats.all},
                .i = {m->training}, .f = {m->args[ARG_EPS]}};
    s = sync ? sync_stats(m, st, &op, &count) : nl_op_exec(&op);
    if (s == NL_OK && m->training) {
        const double mom = m->args[ARG_MOMENTUM];
        s = running_update(rmean, st->stats.row[0], mom, 1, st->tmp);
        if (s == NL_OK)
            s = running_update(rvar, st->stats.row[1], mom, (double)count / (double)(count - 1), st->tmp);
    }
    if (s != NL_OK) {
        nl_tensor_release(out);
        return s;
    }
    st->train = m->training;
    st->sync = sync;
    st->count = count;
    *y = out;
    return NL_OK;
}

/* SyncBatchNorm's backward: gx = gamma * invstd * (gy - a - xhat * b) with a and b the global means
 * of gy and gy * xhat, from the sums over the ranks of the local sums the kernel leaves in
 * dparams (dbeta and dgamma); computed as the kernel's evaluation-mode backward (gy' * gamma *
 * invstd) of gy' = gy - x * k + d, k = b * invstd, d = mean * k - a, per channel. */
static nl_status sync_backward(nl_module *m, bn_state *st, nl_tensor *gy, nl_tensor *out)
{
    const int64_t c = (int64_t)m->args[ARG_C];
    const double eps = m->args[ARG_EPS];
    double *v = malloc((size_t)(6 * c) * sizeof *v);
    if (!v) return nl_seterr(NL_ENOMEM, "%s: out of memory", m->type->name);
    double *sums = v, *stats = v + 2 * c, *kd = v + 4 * c;
    nl_status s = host_doubles(st->dparams.all, sums, 2 * c);
    if (s == NL_OK) s = host_doubles(st->stats.all, stats, 2 * c);
    if (s == NL_OK) s = sync_sum(sums, (int)(2 * c));
    for (int64_t i = 0; s == NL_OK && i < c; i++) {
        double invstd = 1 / sqrt(stats[c + i] + eps);
        double a = sums[c + i] / (double)st->count, b = sums[i] / (double)st->count;
        kd[i] = b * invstd;
        kd[c + i] = stats[i] * kd[i] - a;
    }
    int64_t shape[NL_MAX_DIMS] = {1, c};
    for (int d = 2; d < gy->ndim; d++) shape[d] = 1;
    nl_tensor *k = NULL, *d = NULL, *g2 = NULL;
    int64_t cc = c;
    if (s == NL_OK && (!(k = nl_tensor_empty(NL_F32, 1, &cc, nl_tensor_device(gy))) ||
                       !(d = nl_tensor_empty(NL_F32, 1, &cc, nl_tensor_device(gy))) ||
                       !(g2 = nl_tensor_empty_like(gy))))
        s = nl_errcode();
    if (s == NL_OK) s = set_from_doubles(k, kd, c);
    if (s == NL_OK) s = set_from_doubles(d, kd + c, c);
    nl_tensor *kb = s == NL_OK ? nl_tensor_reshape(k, gy->ndim, shape) : NULL;
    nl_tensor *db = kb ? nl_tensor_reshape(d, gy->ndim, shape) : NULL;
    if (s == NL_OK && !db) s = nl_errcode();
    if (s == NL_OK) s = nl_binary(NL_BIN_MUL, g2, m->input, kb);
    if (s == NL_OK) s = nl_binary(NL_BIN_SUB, g2, gy, g2);
    if (s == NL_OK) s = nl_binary(NL_BIN_ADD, g2, g2, db);
    nl_param *w = nl_module_param(m, "weight");
    nl_op op = {.code = NL_OP_BATCHNORM_BWD, .dst = out,
                .src = {g2, m->input, w ? w->value : NULL, st->stats.all}, .i = {0}, .f = {eps}};
    if (s == NL_OK) s = nl_op_exec(&op);
    nl_tensor_release(kb);
    nl_tensor_release(db);
    nl_tensor_release(k);
    nl_tensor_release(d);
    nl_tensor_release(g2);
    free(v);
    return s;
}

static nl_status bn_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    bn_state *st = m->state;
    nl_param *w = nl_module_param(m, "weight"), *b = nl_module_param(m, "bias");
    nl_tensor *out = nl_tensor_empty(NL_F32, gy->ndim, gy->shape, nl_tensor_device(gy));
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_BATCHNORM_BWD, .dst = out, .aux = w ? st->dparams.all : NULL,
                .src = {gy, m->input, w ? w->value : NULL, st->stats.all},
                .i = {st->train}, .f = {m->args[ARG_EPS]}};
    /* SyncBatchNorm needs the local sums even without affine parameters */
    if (st->sync && !w) op.aux = st->dparams.all;
    nl_status s = nl_op_exec(&op);
    if (s == NL_OK && st->sync) s = sync_backward(m, st, gy, out);
    if (s == NL_OK && w) s = nl_binary(NL_BIN_ADD, w->grad, w->grad, st->dparams.row[0]);
    if (s == NL_OK && b) s = nl_binary(NL_BIN_ADD, b->grad, b->grad, st->dparams.row[1]);
    if (s != NL_OK) {
        nl_tensor_release(out);
        return s;
    }
    *gx = out;
    return NL_OK;
}

/* BatchNorm1d takes [N, C] or [N, C, L], BatchNorm2d [N, C, H, W]; C must match. One multiply-add
 * per element. */
static nl_status bn_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                          int64_t *out, int64_t *macs)
{
    const bool two_d = m->type == &nl_batchnorm2d_type;
    const long long c = (long long)m->args[ARG_C];
    if (m->type == &nl_syncbatchnorm_type && ndim < 2)
        return nl_layer_shape_error(m, ndim, in, "expected an input [N, %lld, ...]", c);
    if (m->type != &nl_syncbatchnorm_type && two_d && ndim != 4)
        return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, %lld, H, W]", c);
    if (m->type != &nl_syncbatchnorm_type && !two_d && ndim != 2 && ndim != 3)
        return nl_layer_shape_error(m, ndim, in, "expected a 2-D [N, %lld] or 3-D [N, %lld, L] input", c, c);
    if (in[1] != c)
        return nl_layer_shape_error(m, ndim, in, "input has %lld channels, expected %lld",
                                    (long long)in[1], c);
    *out_ndim = ndim;
    *macs = 1;
    for (int d = 0; d < ndim; d++) *macs *= (out[d] = in[d]);
    return NL_OK;
}

/* The fields both batch-norm types share. */
#define BN_TYPE \
    .npos = 1, \
    .args = {{.name = "c", .integer = true, .min = 1, .doc = "channels (features)"}, \
             {.name = "eps", .def = 1e-5, .min = 0, .doc = "added to the variance"}, \
             {.name = "momentum", .def = 0.1, .min = 0, .doc = "weight of the batch in the running statistics"}, \
             {.name = "affine", .def = 1, .boolean = true, .doc = "learnable weight and bias"}}, \
    .init = bn_init, .forward = bn_forward, .backward = bn_backward, .infer = bn_infer, \
    .destroy = bn_destroy

const nl_module_type nl_batchnorm1d_type = {
    .name = "BatchNorm1d",
    .sig = "nn.BatchNorm1d(c, {eps=1e-5, momentum=0.1, affine=true})",
    .doc = "Batch normalisation of [N, C] or [N, C, L] per channel: batch statistics when training, "
           "running statistics when evaluating.",
    .example = "nn.BatchNorm1d(3):forward(tensor.randn(4, 3))",
    BN_TYPE,
};

const nl_module_type nl_batchnorm2d_type = {
    .name = "BatchNorm2d",
    .sig = "nn.BatchNorm2d(c, {eps=1e-5, momentum=0.1, affine=true})",
    .doc = "Batch normalisation of [N, C, H, W] per channel: batch statistics when training, "
           "running statistics when evaluating.",
    .example = "nn.BatchNorm2d(3):forward(tensor.randn(2, 3, 4, 4)):mean()",
    BN_TYPE,
};

const nl_module_type nl_syncbatchnorm_type = {
    .name = "SyncBatchNorm",
    .sig = "nn.SyncBatchNorm(c, {eps=1e-5, momentum=0.1, affine=true})",
    .doc = "Batch normalisation of [N, C, ...] per channel that trains with the statistics of the "
           "global batch of all ranks (data-parallel training); alone it is BatchNorm.",
    .example = "nn.SyncBatchNorm(3):forward(tensor.randn(2, 3, 4, 4)):mean()",
    BN_TYPE,
};
