/* loss.c: the losses, as PyTorch's with mean reduction: cross-entropy of logits against class
 * indices or probabilities (with label smoothing; log-softmax, then NL_OP_CROSS_ENTROPY), mean
 * squared error (element-wise ops), and knowledge distillation from a teacher network. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SHAPE_STR = 192 };

/* *slot if it is an f32 tensor of this shape on dev that nobody else holds, else a new one that
 * replaces it: the loss's buffers are reused from call to call. Borrowed; NULL with the error set. */
static nl_tensor *kept_buffer(nl_tensor **slot, int ndim, const int64_t *shape, nl_device dev)
{
    nl_tensor *o = *slot;
    if (o && o->refcount == 1 && o->storage->refcount == 1 && o->ndim == ndim &&
        memcmp(o->shape, shape, (size_t)ndim * sizeof *shape) == 0 && nl_tensor_device(o) == dev)
        return o;
    nl_tensor_release(*slot);
    return *slot = nl_tensor_empty(NL_F32, ndim, shape, dev);
}

/* l->saved, as a buffer shaped like `like`. */
static nl_tensor *saved_buffer(nl_loss *l, const nl_tensor *like)
{
    return kept_buffer(&l->saved, like->ndim, like->shape, nl_tensor_device(like));
}

/* The mean of all elements of t (on any device), through the 0-d buffer l->mean; with l->also,
 * through l->pack = [mean, also], read back in one transfer. */
static nl_status mean_of(nl_loss *l, const nl_tensor *t, double *v)
{
    static const int64_t no_dims[1] = {1}, two[1] = {2};
    nl_op op = {.code = NL_OP_REDUCE, .src = {t}, .i = {NL_RED_MEAN, -1}};
    if (!l->also) {
        if (!(op.dst = kept_buffer(&l->mean, 0, no_dims, nl_tensor_device(t)))) return nl_errcode();
        nl_status s = nl_op_exec(&op);
        return s == NL_OK ? nl_tensor_item(op.dst, v) : s;
    }
    nl_tensor *pack = kept_buffer(&l->pack, 1, two, nl_tensor_device(t));
    nl_tensor *s0 = pack ? nl_tensor_slice(pack, 0, 0, 1) : NULL;
    nl_tensor *s1 = s0 ? nl_tensor_slice(pack, 0, 1, 2) : NULL;
    nl_tensor *also = s1 ? nl_tensor_reshape(s1, 0, NULL) : NULL;
    op.dst = also ? nl_tensor_reshape(s0, 0, NULL) : NULL;
    nl_status s = op.dst ? nl_op_exec(&op) : nl_errcode();
    if (s == NL_OK) s = nl_copy(also, l->also);
    float both[2];
    if (s == NL_OK) s = nl_tensor_get_data(pack, both, 0, 2);
    if (s == NL_OK) {
        *v = both[0];
        l->also_value = both[1];
    }
    nl_tensor_release(op.dst);
    nl_tensor_release(also);
    nl_tensor_release(s0);
    nl_tensor_release(s1);
    return s;
}

/* NL_EINVAL naming the first class index outside [0, C) (read on the host). */
static nl_status check_classes(nl_tensor *target, int64_t classes)
{
    nl_tensor *host = nl_tensor_host(target);
    if (!host) return nl_errcode();
    const int32_t *t = nl_tensor_data(host);
    nl_status s = NL_OK;
    for (int64_t n = 0; n < nl_tensor_numel(host) && s == NL_OK; n++)
        if (t[n] < 0 || t[n] >= classes)
            s = nl_seterr(NL_EINVAL, "cross_entropy: target %d (sample %lld) is out of range for "
                          "%lld classes (0 to %lld)", t[n], (long long)n + 1, (long long)classes,
                          (long long)classes - 1);
    nl_tensor_release(host);
    return s;
}

/* Validates (logits [N, C], target i32 [N] or f32 [N, C]) and returns the target to keep: a
 * contiguous i32 or f32 tensor (new reference), or NULL with the error set. */
static nl_tensor *ce_target(const nl_tensor *x, nl_tensor *target, double ls)
{
    char a[SHAPE_STR], b[SHAPE_STR];
    nl_shape_str(a, sizeof a, x->ndim, x->shape);
    nl_shape_str(b, sizeof b, target->ndim, target->shape);
    if (x->ndim != 2) {
        nl_seterr(NL_ESHAPE, "cross_entropy: input must be logits [N, C], got %s", a);
        return NULL;
    }
    if (!(ls >= 0 && ls <= 1)) {
        nl_seterr(NL_EINVAL, "cross_entropy: label_smoothing must be between 0 and 1, got %g", ls);
        return NULL;
    }
    const bool classes = target->dtype != NL_F32;
    if (classes ? target->ndim != 1 || target->shape[0] != x->shape[0] : !nl_same_shape(x, target)) {
        nl_seterr(NL_ESHAPE, "cross_entropy: target %s does not fit input %s (expected [%lld] "
                  "class indices or [%lld, %lld] probabilities)", b, a, (long long)x->shape[0],
                  (long long)x->shape[0], (long long)x->shape[1]);
        return NULL;
    }
    nl_tensor *t = classes && target->dtype != NL_I32 ? nl_tensor_to_dtype(target, NL_I32)
                                                      : nl_tensor_contiguous(target);
    /* On the host the classes are checked here; a device target is checked only when the loss
     * comes back NaN (the kernel's mark of a class out of range): no transfer per step. */
    if (t && classes && nl_tensor_device(t) == NL_CPU && check_classes(t, x->shape[1]) != NL_OK) {
        nl_tensor_release(t);
        return NULL;
    }
    return t;
}

static nl_status ce_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss)
{
    nl_tensor *t = ce_target(input, target, l->label_smoothing);
    if (!t) return nl_errcode();
    nl_tensor_release(l->target);
    l->target = t;
    nl_tensor *logp = saved_buffer(l, input), *x = nl_tensor_contiguous(input);
    nl_tensor *per = kept_buffer(&l->work, 1, input->shape, nl_tensor_device(input));
    nl_status s = logp && x && per ? NL_OK : nl_errcode();
    if (s == NL_OK) {
        nl_op op = {.code = NL_OP_SOFTMAX, .dst = logp, .src = {x}, .i = {1}};
        s = nl_op_exec(&op);
    }
    if (s == NL_OK) {
        nl_op op = {.code = NL_OP_CROSS_ENTROPY, .dst = per, .src = {logp, t},
                    .f = {l->label_smoothing}};
        s = nl_op_exec(&op);
    }
    if (s == NL_OK) s = mean_of(l, per, loss);
    if (s == NL_OK && isnan(*loss) && t->dtype == NL_I32 && nl_tensor_device(t) != NL_CPU)
        s = check_classes(t, input->shape[1]);
    nl_tensor_release(x);
    return s;
}

static nl_status mse_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss)
{
    if (!nl_same_shape(input, target)) {
        char a[SHAPE_STR], b[SHAPE_STR];
        return nl_seterr(NL_ESHAPE, "mse: input %s and target %s differ in shape",
                         nl_shape_str(a, sizeof a, input->ndim, input->shape),
                         nl_shape_str(b, sizeof b, target->ndim, target->shape));
    }
    if (target->dtype != NL_F32)
        return nl_seterr(NL_ETYPE, "mse: target must be f32, got %s", nl_dtype_info(target->dtype)->name);
    nl_tensor_release(l->target);
    l->target = nl_tensor_retain(target);
    nl_tensor *diff = saved_buffer(l, input);
    if (!diff) return nl_errcode();
    nl_status s = nl_binary(NL_BIN_SUB, diff, input, target);
    nl_tensor *sq = s == NL_OK ? kept_buffer(&l->work, input->ndim, input->shape, nl_tensor_device(input)) : NULL;
    if (s == NL_OK) s = sq ? nl_binary(NL_BIN_MUL, sq, diff, diff) : nl_errcode();
    if (s == NL_OK) s = mean_of(l, sq, loss);
    return s;
}

/* Softmax of row[0..c) / temp into p (in double, max-shifted). */
static void softmax_row(const float *row, int64_t c, double temp, double *p)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < c; j++) mx = fmax(mx, row[j] / temp);
    for (int64_t j = 0; j < c; j++) sum += p[j] = exp(row[j] / temp - mx);
    for (int64_t j = 0; j < c; j++) p[j] /= sum;
}

/* Distillation, on the host in double (the logits are [N, classes], small): the loss, and its
 * gradient for backward in l->saved:
 *   dL/ds = alpha * T / N * (softmax(s / T) - softmax(t / T)) + (1 - alpha) / N * (softmax(s) - q). */
static nl_status distill_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss)
{
    nl_tensor *x = l->batch;
    l->batch = NULL;
    const double T = l->temperature, alpha = l->alpha;
    if (!l->teacher || !x)
        return nl_seterr(NL_EINVAL, "distill: needs the teacher and the student's input batch "
                         "(loss:forward(output, target, input))");
    if (!(T > 0) || !(alpha >= 0 && alpha <= 1))
        return nl_seterr(NL_EINVAL, "distill: temperature must be > 0 and alpha in [0, 1] (got %g, %g)",
                         T, alpha);
    nl_tensor *t = ce_target(input, target, 0);
    if (!t) return nl_errcode();
    nl_tensor_release(l->target);
    l->target = t;
    bool was = l->teacher->training;
    nl_module_train(l->teacher, false);
    nl_tensor *tl = NULL;
    nl_status s = nl_module_forward(l->teacher, x, &tl);
    nl_module_train(l->teacher, was);
    if (s != NL_OK) return s;
    char a[SHAPE_STR], b[SHAPE_STR];
    if (!nl_same_shape(tl, input)) {
        s = nl_seterr(NL_ESHAPE, "distill: the teacher's output %s differs from the student's %s",
                      nl_shape_str(a, sizeof a, tl->ndim, tl->shape),
                      nl_shape_str(b, sizeof b, input->ndim, input->shape));
        nl_tensor_release(tl);
        return s;
    }
    const int64_t n = input->shape[0], c = input->shape[1];
    /* Host, contiguous copies. */
    nl_tensor *hs = nl_tensor_host(input), *ht = hs ? nl_tensor_host(tl) : NULL;
    nl_tensor *hy = ht ? nl_tensor_host(t) : NULL;
    nl_tensor *g = hy ? nl_tensor_empty(NL_F32, 2, input->shape, NL_CPU) : NULL;
    double *p = g ? malloc((size_t)(3 * c + 1) * sizeof *p) : NULL;
    nl_tensor_release(tl);
    if (!p) {
        s = g ? nl_seterr(NL_ENOMEM, "distill: out of memory") : nl_errcode();
    } else {
        double *pt = p + c, *ps = p + 2 * c, kl = 0, ce = 0;
        const bool classes = hy->dtype == NL_I32;
        for (int64_t i = 0; i < n; i++) {
            const float *srow = nl_tensor_f32(hs) + i * c, *trow = nl_tensor_f32(ht) + i * c;
            float *grow = nl_tensor_f32(g) + i * c;
            softmax_row(trow, c, T, pt);
            softmax_row(srow, c, T, ps);
            softmax_row(srow, c, 1, p);
            double qsum = 0;
            for (int64_t j = 0; j < c; j++) {
                double q = classes ? (j == ((const int32_t *)nl_tensor_data(hy))[i]) : nl_tensor_f32(hy)[i * c + j];
                qsum += q;
                if (pt[j] > 0) kl += pt[j] * (log(pt[j]) - log(ps[j]));
                if (q != 0) ce -= q * log(p[j]);
                grow[j] = (float)((alpha * T * (ps[j] - pt[j]) - (1 - alpha) * q) / (double)n);
            }
            for (int64_t j = 0; j < c; j++) grow[j] += (float)((1 - alpha) * p[j] * qsum / (double)n);
        }
        *loss = alpha * T * T * kl / (double)n + (1 - alpha) * ce / (double)n;
    }
    free(p);
    nl_tensor_release(hs);
    nl_tensor_release(ht);
    nl_tensor_release(hy);
    if (s == NL_OK) {
        nl_tensor_release(l->saved);
        l->saved = nl_tensor_device(input) == NL_CPU ? nl_tensor_retain(g) : nl_tensor_to_device(g, nl_tensor_device(input));
        if (!l->saved) s = nl_errcode();
    }
    nl_tensor_release(g);
    return s;
}

/* Keeps the input and target for backward, then asks the callbacks. */
static nl_status custom_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss)
{
    nl_tensor_release(l->saved);
    nl_tensor_release(l->target);
    l->saved = nl_tensor_retain(input);
    l->target = nl_tensor_retain(target);
    return l->ops->forward(l->ctx, input, target, loss);
}

nl_status nl_loss_forward(nl_loss *l, nl_tensor *input, nl_tensor *target, double *loss)
{
    if (!l || !input || !target || !loss)
        return nl_seterr(NL_EINVAL, "loss: needs a loss, an input, a target and a result");
    if (input->dtype != NL_F32)
        return nl_seterr(NL_ETYPE, "loss: input must be f32, got %s", nl_dtype_info(input->dtype)->name);
    switch (l->kind) {
    case NL_LOSS_CROSS_ENTROPY: return ce_forward(l, input, target, loss);
    case NL_LOSS_MSE: return mse_forward(l, input, target, loss);
    case NL_LOSS_DISTILL: return distill_forward(l, input, target, loss);
    case NL_LOSS_CUSTOM: return custom_forward(l, input, target, loss);
    }
    return nl_seterr(NL_EINVAL, "loss: unknown kind %d", (int)l->kind);
}

nl_status nl_loss_backward(nl_loss *l, double grad, nl_tensor **ginput)
{
    *ginput = NULL;
    if (!l->saved || !l->target) return nl_seterr(NL_EINVAL, "loss: backward before a forward");
    if (l->kind == NL_LOSS_CUSTOM) return l->ops->backward(l->ctx, l->saved, l->target, grad, ginput);
    const nl_tensor *saved = l->saved;
    nl_tensor *g = kept_buffer(&l->grad, saved->ndim, saved->shape, nl_tensor_device(saved));
    if (!g) return nl_errcode();
    nl_status s;
    if (l->kind == NL_LOSS_CROSS_ENTROPY) {
        /* d(mean loss)/dlogits = (softmax * sum(q) - q) / N */
        nl_op op = {.code = NL_OP_CROSS_ENTROPY_BWD, .dst = g, .src = {saved, l->target},
                    .f = {l->label_smoothing, grad / (double)saved->shape[0]}};
        s = nl_op_exec(&op);
    } else if (l->kind == NL_LOSS_DISTILL) {
        s = nl_binary_scalar(NL_BIN_MUL, g, saved, grad, false); /* the forward left dL/dinput */
    } else {
        /* d mean((x - t)^2) / dx = 2 (x - t) / numel */
        s = nl_binary_scalar(NL_BIN_MUL, g, saved, 2.0 * grad / (double)nl_tensor_numel(saved), false);
    }
    if (s != NL_OK) return s;
    *ginput = nl_tensor_retain(g);
    return NL_OK;
}

void nl_loss_clear(nl_loss *l)
{
    nl_tensor_release(l->saved);
    nl_tensor_release(l->target);
    nl_tensor_release(l->work);
    nl_tensor_release(l->mean);
    nl_tensor_release(l->grad);
    nl_tensor_release(l->pack);
    l->pack = NULL;
    nl_module_release(l->teacher);
    if (l->ops && l->ops->release) l->ops->release(l->ctx);
    l->ops = NULL;
    l->ctx = NULL;
    l->saved = l->target = l->work = l->mean = l->grad = NULL;
    l->teacher = NULL;
}
