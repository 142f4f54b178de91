/* train.h: the per-batch work of training and evaluation in C (one call per mini-batch), plus
 * the data-set helpers a trainer needs (row gathers, seeded permutations); the Lua Trainer only
 * orchestrates. */
#ifndef NL_TRAIN_H
#define NL_TRAIN_H

#include "optim.h"

/* What one training step reports. */
typedef struct {
    double loss;        /* the batch's mean loss; NaN or Inf means the step was skipped */
    int64_t correct;    /* top-1 hits (class-index targets, or probability targets by argmax) */
    double grad_norm;   /* the global gradient norm when clipping, else NaN */
    bool updated;       /* the optimizer stepped (false for a non-finite loss or gradient norm) */
} nl_step_result;

/* The gradient exchange of data-parallel training (the distributed layer makes one): the one
 * place in a training step where gradients of other processes come in, between backward and
 * clipping. begin is called before backward with the net's parameter store, whose blocks stay
 * put until finish; ready after each module's backward has added its parameters' gradients (an
 * all-reduce of a bucket of the store can start there, overlapping the rest of backward); finish
 * after backward: every gradient must then be the mean over the processes, and *skip (in: this
 * process skips the update, its loss being non-finite; then begin and finish come without a
 * backward) whether any process skips it, so that all update or none. Errors from begin and
 * finish end the step (nothing updated). */
typedef struct {
    void *ctx;
    nl_status (*begin)(void *ctx, nl_store *store);
    void (*ready)(void *ctx, nl_module *m);
    nl_status (*finish)(void *ctx, nl_store *store, bool *skip);
} nl_grad_exchange;

/* One mini-batch of training: zero the gradients, forward x through net (in whatever mode net
 * is in), loss against target y (see nl_loss_forward: i32 0-based class indices or f32), backward,
 * the gradient exchange ex when not NULL, optionally clip the global gradient norm to clip (clip <= 0: no clipping), optimizer step.
 * Every intermediate is released before returning, so modules reuse their output buffers and a
 * step allocates nothing after the first. The optimizer must be over net.
 * A non-finite loss (or gradient norm when clipping) skips the update: NL_OK with r->updated
 * false and the weights and optimizer state untouched. On a device (without ex) the step's
 * scalars are read back once, after backward: the loss, the batch's hits and the squared norm
 * in one transfer (the gradients of a skipped step then hold what backward left). An interrupt (NL_EINTR) or any other error
 * during forward or backward also leaves weights, optimizer state and the RNG stream as they were
 * (batch-norm running statistics may have moved), so the batch can be redone. */
nl_status nl_train_step(nl_module *net, nl_loss *loss, nl_optim *opt, nl_tensor *x,
                        nl_tensor *y, double clip, const nl_grad_exchange *ex, nl_step_result *r);

/* Running totals of an evaluation. Zero-initialise, feed batches, read, then clear. */
typedef struct {
    double loss_sum;          /* sum over batches of (mean loss * batch size); 0 without a loss */
    int64_t count;            /* samples seen */
    int64_t top1, top5;       /* hits (class-index targets only) */
    int64_t nclasses;         /* the width of the net's output, once known */
    nl_tensor *confusion;     /* i32 [C, C] on the CPU (a reference): row = true class,
                                 column = predicted class; NULL until a batch with class-index
                                 targets arrives */
} nl_eval_stats;

/* Forwards x through net (in whatever mode it is in; callers set eval mode), adds the loss
 * (when loss is not NULL) and, for i32 class-index targets y [N], the top-1/top-5 hits and the
 * confusion counts into s. Releases its intermediates. Errors: the module's or loss's, NL_ESHAPE
 * when the output is not [N, C] with C the same for every batch, NL_EINVAL for a label out of
 * range, NL_ENOMEM. On error s is unchanged. */
nl_status nl_eval_batch(nl_module *net, nl_loss *loss, nl_tensor *x, nl_tensor *y,
                        nl_eval_stats *s);
/* Releases s's confusion matrix and zeroes s. */
void nl_eval_stats_clear(nl_eval_stats *s);

/* dst[i] = src[rows[i]] along dim 0 (rows 0-based, each < src->shape[0]): dst has shape
 * [n, src->shape[1:]] and any dtype or device (converted as nl_copy does). NL_EINVAL for a row out
 * of range, NL_ESHAPE for a dst of the wrong shape. */
nl_status nl_gather_rows(nl_tensor *dst, const nl_tensor *src, const int64_t *rows, int64_t n);

#endif
