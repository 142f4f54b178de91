/* train.c: one training step and one evaluation batch in C (forward, loss, backward, update,
 * scoring), and the row gathers that feed them mini-batches (the seeded permutations that order
 * them are beside the RNG, core/tensor/rng.c). */
#include "train.h"

#include <math.h>
#include <string.h>

/* The index of the largest of v[0..n) (the first one on ties). */
static int64_t argmax_row(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (v[j] > v[best]) best = j;
    return best;
}

/* Scores logits out [N, C] against targets y: i32 class indices [N], or f32 [N, C] whose argmax
 * is the class. Adds top-1 hits to *top1, and where given top-5 hits to *top5 and one count per
 * sample to confusion (C x C, row = true class). *scored says whether the shapes allowed scoring
 * (a regression's output is not scored). Errors: NL_EINVAL for a label out of range (nothing
 * counted), NL_ENOMEM. */
static nl_status score(nl_tensor *out, nl_tensor *y, int64_t *top1, int64_t *top5,
                       int32_t *confusion, bool *scored)
{
    *scored = false;
    bool labels = y->dtype == NL_I32 && y->ndim == 1;
    bool probs = y->dtype == NL_F32 && nl_same_shape(out, y);
    if (out->dtype != NL_F32 || out->ndim != 2 || out->shape[0] != y->shape[0] || !(labels || probs))
        return NL_OK;
    int64_t n = out->shape[0], c = out->shape[1];
    nl_tensor *ho = nl_tensor_host(out), *hy = ho ? nl_tensor_host(y) : NULL;
    if (!hy) {
        nl_tensor_release(ho);
        return nl_errcode();
    }
    const float *po = nl_tensor_f32(ho);
    const int32_t *py = labels ? (const int32_t *)nl_tensor_data(hy) : NULL;
    nl_status s = NL_OK;
    for (int64_t i = 0; labels && i < n; i++)
        if (py[i] < 0 || py[i] >= c) {
            s = nl_seterr(NL_EINVAL, "score: label %d of sample %lld is out of range for %lld "
                          "classes (0-based)", py[i], (long long)i, (long long)c);
            break;
        }
    for (int64_t i = 0; s == NL_OK && i < n; i++) {
        const float *row = po + i * c;
        int64_t truth = labels ? py[i] : argmax_row(nl_tensor_f32(hy) + i * c, c);
        int64_t pred = argmax_row(row, c), rank = 0;
        for (int64_t j = 0; j < c; j++) rank += row[j] > row[truth];
        *top1 += pred == truth;
        if (top5) *top5 += rank < 5;
        if (confusion) confusion[truth * c + pred]++;
    }
    *scored = s == NL_OK;
    nl_tensor_release(hy);
    nl_tensor_release(ho);
    return s;
}

/* Backward of the whole net from gout (NULL: none, the gradients stay zero) with ex's begin,
 * ready (per module) and finish around it; *skip: in, whether this process skips the update; out,
 * whether any process does. */
static nl_status backward_exchange(nl_module *net, nl_tensor *gout, const nl_grad_exchange *ex,
                                   bool *skip)
{
    if (!ex) return gout ? nl_module_backward(net, gout, NULL) : NL_OK; /* no dL/dx of the batch */
    nl_store *store = nl_module_store(net);
    nl_status s = store ? ex->begin(ex->ctx, store) : nl_errcode();
    if (s != NL_OK) return s;
    nl_module_set_backward_hook(ex->ready, ex->ctx);
    s = gout ? nl_module_backward(net, gout, NULL) : NL_OK;
    nl_module_set_backward_hook(NULL, NULL);
    /* finish even after a failed backward: the other processes wait for this one's buckets */
    nl_status f = ex->finish(ex->ctx, store, skip);
    return s != NL_OK ? s : f;
}

/* The step's buffers on a device, kept in the loss (l->step): the read-back PACK, f32 [3] =
 * [loss, top-1 hits, squared gradient norm], its 0-d views AT_*, and the hit count's scratch. */
enum { PACK, AT_LOSS, AT_HITS, AT_NORM, PRED, HIT };
_Static_assert(HIT < NL_LOSS_STEP_BUFS, "nl_loss has a slot for each step buffer");

static nl_status step_pack(nl_loss *l, nl_device dev)
{
    static const int64_t three = 3;
    if (l->step[PACK] && nl_tensor_device(l->step[PACK]) == dev) return NL_OK;
    for (int k = PACK; k <= AT_NORM; k++) {
        nl_tensor_release(l->step[k]);
        l->step[k] = NULL;
    }
    if (!(l->step[PACK] = nl_tensor_empty(NL_F32, 1, &three, dev))) return nl_errcode();
    for (int k = 0; k < 3; k++) {
        nl_tensor *e = nl_tensor_slice(l->step[PACK], 0, k, k + 1);
        l->step[AT_LOSS + k] = e ? nl_tensor_reshape(e, 0, NULL) : NULL;
        nl_tensor_release(e);
        if (!l->step[AT_LOSS + k]) return nl_errcode();
    }
    return NL_OK;
}

/* The top-1 hits of logits out [N, C] against i32 labels y [N] into l->step[AT_HITS], counted
 * where out lives (the first maximum wins, as in score). */
static nl_status count_hits(nl_loss *l, nl_tensor *out, nl_tensor *y)
{
    const nl_device dev = nl_tensor_device(out);
    nl_tensor *pred = nl_tensor_reuse(&l->step[PRED], NL_I32, 1, y->shape, dev);
    nl_tensor *hit = pred ? nl_tensor_reuse(&l->step[HIT], NL_U8, 1, y->shape, dev) : NULL;
    if (!hit) return nl_errcode();
    nl_op argmax = {.code = NL_OP_REDUCE, .dst = pred, .src = {out}, .i = {NL_RED_ARGMAX, 1}};
    nl_status s = nl_op_exec(&argmax);
    if (s == NL_OK) s = nl_binary(NL_BIN_EQ, hit, pred, y);
    nl_op sum = {.code = NL_OP_REDUCE, .dst = l->step[AT_HITS], .src = {hit}, .i = {NL_RED_SUM, -1}};
    return s == NL_OK ? nl_op_exec(&sum) : s;
}

/* Reads the first n scalars of the read-back in one transfer: the loss (when the forward left it
 * there) into r->loss, the hits into r->correct, the squared norm into *sq. A NaN loss is
 * explained when a class index was out of range (nl_loss_explain_nan). */
static nl_status read_back(nl_loss *l, int n, bool deferred, bool hits, nl_step_result *r, double *sq)
{
    float v[3];
    nl_status s = nl_tensor_get_data(l->step[PACK], v, 0, (size_t)n);
    if (s != NL_OK) return s;
    if (deferred) r->loss = v[0];
    if (hits) r->correct = (int64_t)v[1];
    if (n > 2) *sq = v[2];
    return deferred && isnan(r->loss) ? nl_loss_explain_nan(l) : NL_OK;
}

nl_status nl_train_step(nl_module *net, nl_loss *loss, nl_optim *opt, nl_tensor *x,
                        nl_tensor *y, double clip, const nl_grad_exchange *ex, nl_step_result *r)
{
    *r = (nl_step_result){.loss = NAN, .grad_norm = NAN};
    if (nl_optim_net(opt) != net)
        return nl_seterr(NL_EINVAL, "train step: the optimizer updates another network");
    nl_rng_state rng = nl_rng_get_state();
    nl_tensor *out = NULL, *gout = NULL;
    bool scored;
    nl_status s = nl_optim_zero_grad(opt);
    if (s == NL_OK) s = nl_module_forward(net, x, &out);
    /* On a device the step's scalars stay there until one transfer brings them back together:
     * the loss, the batch's top-1 hits and, when clipping, the squared gradient norm, after
     * backward (late); with a gradient exchange, whose processes agree on skipping before
     * backward, the loss and the hits before it and the norm after. */
    const bool on_dev = s == NL_OK && nl_tensor_device(out) != NL_CPU, late = on_dev && !ex;
    const bool hits = on_dev && out->ndim == 2 && y->dtype == NL_I32 && y->ndim == 1 &&
                      y->shape[0] == out->shape[0] && nl_tensor_device(y) == nl_tensor_device(out);
    const bool deferred = on_dev && loss->kind != NL_LOSS_CUSTOM;
    if (on_dev) s = step_pack(loss, nl_tensor_device(out));
    if (s == NL_OK && hits) s = count_hits(loss, out, y);
    loss->into = deferred ? loss->step[AT_LOSS] : NULL;
    loss->batch = x; /* a distillation loss runs its teacher on it */
    if (s == NL_OK) s = nl_loss_forward(loss, out, y, &r->loss);
    loss->batch = NULL;
    loss->into = NULL;
    double sq = NAN;
    if (s == NL_OK && on_dev && !late && (deferred || hits)) s = read_back(loss, 2, deferred, hits, r, &sq);
    /* A non-finite loss skips the update; in a data-parallel step every process still takes part
     * in the exchange and they all skip it together. */
    const bool known = !(late && deferred); /* the loss is known before backward */
    bool skip = s == NL_OK && known && !isfinite(r->loss);
    if (s == NL_OK && skip && ex) s = backward_exchange(net, NULL, ex, &skip);
    if (s == NL_OK && !(known && !isfinite(r->loss))) {
        if (!hits) s = score(out, y, &r->correct, NULL, NULL, &scored);
        if (s == NL_OK) s = nl_loss_backward(loss, 1.0, &gout);
        if (s == NL_OK) s = backward_exchange(net, gout, ex, &skip);
        if (s == NL_OK && late) {
            if (clip > 0) s = nl_grad_sumsq(net, loss->step[AT_NORM]);
            if (s == NL_OK && (deferred || hits || clip > 0))
                s = read_back(loss, clip > 0 ? 3 : 2, deferred, hits, r, &sq);
            if (s == NL_OK && !isfinite(r->loss)) skip = true;
            else if (s == NL_OK && clip > 0) s = nl_clip_grad_scale(net, clip, r->grad_norm = sqrt(sq));
        } else if (s == NL_OK && !skip && clip > 0) {
            s = nl_clip_grad_norm(net, clip, &r->grad_norm);
        }
        if (s == NL_OK && !skip && (clip <= 0 || isfinite(r->grad_norm))) {
            s = nl_optim_step(opt);
            r->updated = s == NL_OK;
        }
    }
    nl_tensor_release(gout);
    nl_tensor_release(out);
    if (s != NL_OK) nl_rng_set_state(rng); /* a redone batch draws the same dropout masks */
    return s;
}

nl_status nl_eval_batch(nl_module *net, nl_loss *loss, nl_tensor *x, nl_tensor *y,
                        nl_eval_stats *s)
{
    nl_tensor *out = NULL;
    double lv = 0;
    int64_t top1 = 0, top5 = 0;
    bool scored = false;
    nl_status st = nl_module_forward(net, x, &out);
    if (loss) loss->batch = x; /* a distillation loss runs its teacher on it */
    if (st == NL_OK && loss) st = nl_loss_forward(loss, out, y, &lv);
    if (loss) loss->batch = NULL;
    char shape[NL_MAX_DIMS * 24];
    if (st == NL_OK && out->ndim != 2)
        st = nl_seterr(NL_ESHAPE, "evaluate: the network's output %s is not [N, classes]",
                       nl_shape_str(shape, sizeof shape, out->ndim, out->shape));
    else if (st == NL_OK && s->nclasses && out->shape[1] != s->nclasses)
        st = nl_seterr(NL_ESHAPE, "evaluate: the network's output has %lld classes, earlier "
                       "batches had %lld", (long long)out->shape[1], (long long)s->nclasses);
    if (st == NL_OK && !s->confusion && y->dtype == NL_I32) {
        int64_t cc[2] = {out->shape[1], out->shape[1]};
        if (!(s->confusion = nl_tensor_zeros(NL_I32, 2, cc, NL_CPU))) st = nl_errcode();
    }
    if (st == NL_OK) {
        int32_t *conf = y->dtype == NL_I32 ? (int32_t *)nl_tensor_data(s->confusion) : NULL;
        st = score(out, y, &top1, &top5, conf, &scored);
    }
    if (st == NL_OK) {
        s->nclasses = out->shape[1];
        s->loss_sum += lv * (double)out->shape[0];
        s->count += out->shape[0];
        s->top1 += top1;
        s->top5 += top5;
    }
    nl_tensor_release(out);
    return st;
}

void nl_eval_stats_clear(nl_eval_stats *s)
{
    nl_tensor_release(s->confusion);
    memset(s, 0, sizeof *s);
}

nl_status nl_gather_rows(nl_tensor *dst, const nl_tensor *src, const int64_t *rows, int64_t n)
{
    char ds[NL_MAX_DIMS * 24], ss[NL_MAX_DIMS * 24];
    bool fits = src->ndim >= 1 && dst->ndim == src->ndim && dst->shape[0] == n;
    for (int d = 1; fits && d < src->ndim; d++) fits = dst->shape[d] == src->shape[d];
    if (!fits)
        return nl_seterr(NL_ESHAPE, "gather: destination %s does not hold %lld rows of %s",
                         nl_shape_str(ds, sizeof ds, dst->ndim, dst->shape), (long long)n,
                         nl_shape_str(ss, sizeof ss, src->ndim, src->shape));
    for (int64_t i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= src->shape[0])
            return nl_seterr(NL_EINVAL, "gather: row %lld out of range for %lld rows (0-based)",
                             (long long)rows[i], (long long)src->shape[0]);
    if (dst->dtype == src->dtype && nl_tensor_device(dst) == NL_CPU &&
        nl_tensor_device(src) == NL_CPU && nl_tensor_is_contiguous(dst) &&
        nl_tensor_is_contiguous(src)) {
        size_t row = (size_t)(n ? nl_tensor_numel(dst) / n : 0) * nl_dtype_info(dst->dtype)->size;
        char *pd = nl_tensor_data(dst);
        const char *ps = nl_tensor_data(src);
        for (int64_t i = 0; i < n; i++) memcpy(pd + (size_t)i * row, ps + (size_t)rows[i] * row, row);
        return NL_OK;
    }
    /* Any other layout, dtype or device: one strided copy per row. */
    nl_status s = NL_OK;
    for (int64_t i = 0; s == NL_OK && i < n; i++) {
        nl_tensor *to = nl_tensor_slice(dst, 0, i, i + 1);
        nl_tensor *from = to ? nl_tensor_slice((nl_tensor *)src, 0, rows[i], rows[i] + 1) : NULL;
        s = from ? nl_copy(to, from) : nl_errcode();
        nl_tensor_release(from);
        nl_tensor_release(to);
    }
    return s;
}
