/* loss.c: the losses, as PyTorch's with mean reduction: cross-entropy of logits against class
 * indices or probabilities (with label smoothing; log-softmax, then NL_OP_CROSS_ENTROPY), mean
 * squared error (element-wise ops), and knowledge distillation from a teacher network. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SHAPE_STR = 192 };

/* The loss's f32 buffers, reused from call to call (nl_tensor_reuse). */
static nl_tensor *kept_buffer(nl_tensor **slot, int ndim, const int64_t *shape, nl_device dev)
{
    return nl_tensor_reuse(slot, NL_F32, ndim, shape, dev);
}

/* l->saved, as a buffer shaped like `like`. */
static nl_tensor *saved_buffer(nl_loss *l, const nl_tensor *like)
{
    return kept_buffer(&l->saved, like->ndim, like->shape, nl_tensor_device(like));
}

/* The mean of all elements of t (on any device) into the 0-d buffer l->mean, read back into *v;
 * or, when l->into is set, into that tensor, left there unread (*v NaN). */
static nl_status mean_of(nl_loss *l, const nl_tensor *t, double *v)
{
    static const int64_t no_dims[1] = {1};
    *v = NAN;
    nl_op op = {.code = NL_OP_REDUCE, .dst = l->into, .src = {t}, .i = {NL_RED_MEAN, -1}};
    if (op.dst && (op.dst->ndim != 0 || nl_tensor_device(op.dst) != nl_tensor_device(t)))
        return nl_seterr(NL_EINVAL, "loss: the loss goes to a 0-d tensor on the input's device");
    if (!op.dst && !(op.dst = kept_buffer(&l->mean, 0, no_dims, nl_tensor_device(t)))) return nl_errcode();
    nl_status s = nl_op_exec(&op);
    return s == NL_OK && !l->into ? nl_tensor_item(op.dst, v) : s;
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
    if (s == NL_OK && isnan(*loss) && !l->into) s = nl_loss_explain_nan(l);
    nl_tensor_release(x);
    return s;
}

nl_status nl_loss_explain_nan(const nl_loss *l)
{
    const nl_tensor *t = l->target, *s = l->saved;
    if (l->kind == NL_LOSS_MSE || l->kind == NL_LOSS_CUSTOM || !t || !s || t->dtype != NL_I32 ||
        nl_tensor_device(t) == NL_CPU || s->ndim != 2)
        return NL_OK; /* a host target was checked before the forward */
    return check_classes((nl_tensor *)t, s->shape[1]);
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

/* dst = log-softmax of src over the last dim. */
static nl_status log_softmax(nl_tensor *dst, const nl_tensor *src)
{
    nl_op op = {.code = NL_OP_SOFTMAX, .dst = dst, .src = {src}, .i = {1}};
    return nl_op_exec(&op);
}

/* Distillation, where the logits are (a few kernels on [N, classes], nothing read back but the
 * loss): the loss, and its gradient for backward in l->saved:
 *   L = alpha * T^2 / N * sum KL(pt || ps) + (1 - alpha) * CE(s, q),  pt = softmax(t / T), ps = softmax(s / T)
 *   dL/ds = alpha * T / N * (ps - pt) + (1 - alpha) / N * (softmax(s) * sum(q) - q). */
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
    const nl_device dev = nl_tensor_device(input);
    const double n = (double)input->shape[0];
    nl_tensor *w[4], *g = saved_buffer(l, input), *per = kept_buffer(&l->work, 1, input->shape, dev);
    nl_tensor *kl = per ? kept_buffer(&l->dist[4], 1, input->shape, dev) : NULL;
    for (int i = 0; i < 4; i++) w[i] = kl ? kept_buffer(&l->dist[i], 2, input->shape, dev) : NULL;
    if (!g || !w[3]) s = nl_errcode();
    /* w[1] = log ps, w[2] = log pt, then w[3] = pt, w[0] = pt * (log pt - log ps) summed per row */
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, w[0], input, 1 / T, false);
    if (s == NL_OK) s = log_softmax(w[1], w[0]);
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, w[0], tl, 1 / T, false);
    if (s == NL_OK) s = log_softmax(w[2], w[0]);
    if (s == NL_OK) s = nl_unary(NL_UN_EXP, w[3], w[2]);
    if (s == NL_OK) s = nl_binary(NL_BIN_SUB, w[0], w[2], w[1]);
    if (s == NL_OK) s = nl_binary(NL_BIN_MUL, w[0], w[3], w[0]);
    if (s == NL_OK) {
        nl_op op = {.code = NL_OP_REDUCE, .dst = kl, .src = {w[0]}, .i = {NL_RED_SUM, 1}};
        s = nl_op_exec(&op);
    }
    /* w[2] = log softmax(s): the cross-entropy per sample, and its part of the gradient */
    nl_tensor *xs = s == NL_OK ? nl_tensor_contiguous(input) : NULL;
    if (s == NL_OK) s = xs ? log_softmax(w[2], xs) : nl_errcode();
    nl_tensor_release(xs);
    if (s == NL_OK) {
        nl_op op = {.code = NL_OP_CROSS_ENTROPY, .dst = per, .src = {w[2], t}, .f = {0}};
        s = nl_op_exec(&op);
    }
    if (s == NL_OK) {
        nl_op op = {.code = NL_OP_CROSS_ENTROPY_BWD, .dst = g, .src = {w[2], t}, .f = {0, (1 - alpha) / n}};
        s = nl_op_exec(&op);
    }
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, kl, kl, alpha * T * T, false);
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, per, per, 1 - alpha, false);
    if (s == NL_OK) s = nl_binary(NL_BIN_ADD, per, per, kl);
    /* g += alpha * T / N * (ps - pt) */
    if (s == NL_OK) s = nl_unary(NL_UN_EXP, w[1], w[1]);
    if (s == NL_OK) s = nl_binary(NL_BIN_SUB, w[1], w[1], w[3]);
    if (s == NL_OK) s = nl_binary_scalar(NL_BIN_MUL, w[1], w[1], alpha * T / n, false);
    if (s == NL_OK) s = nl_binary(NL_BIN_ADD, g, g, w[1]);
    nl_tensor_release(tl);
    if (s == NL_OK) s = mean_of(l, per, loss);
    if (s == NL_OK && isnan(*loss) && !l->into) s = nl_loss_explain_nan(l);
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
    for (int i = 0; i < NL_LOSS_DIST_BUFS; i++) nl_tensor_release(l->dist[i]);
    for (int i = 0; i < NL_LOSS_STEP_BUFS; i++) nl_tensor_release(l->step[i]);
    memset(l->dist, 0, sizeof l->dist);
    memset(l->step, 0, sizeof l->step);
    nl_module_release(l->teacher);
    if (l->ops && l->ops->release) l->ops->release(l->ctx);
    l->ops = NULL;
    l->ctx = NULL;
    l->saved = l->target = l->work = l->mean = l->grad = NULL;
    l->teacher = NULL;
}
