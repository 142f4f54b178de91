/* optim.h: optimizers over a module's parameters (SGD, Adam, AdamW, with PyTorch 1.13's update
 * rules exactly) and gradient clipping by global norm. The state lives in one block per optimizer. */
#ifndef NL_OPTIM_H
#define NL_OPTIM_H

#include "nn.h"

typedef enum { NL_OPTIM_SGD = 0, NL_OPTIM_ADAM, NL_OPTIM_ADAMW, NL_OPTIM_KIND_COUNT } nl_optim_kind;

/* Hyper-parameters; each kind reads its own fields and ignores the others. */
typedef struct {
    double lr;
    double momentum, dampening; /* SGD */
    bool nesterov;              /* SGD: needs momentum > 0 and dampening 0, as in PyTorch */
    double beta1, beta2, eps;   /* Adam, AdamW */
    double weight_decay;        /* SGD and Adam: L2 added to the gradient; AdamW: decoupled */
} nl_optim_config;

typedef struct nl_optim nl_optim;

/* "sgd", "adam", "adamw"; nl_optim_kind_parse returns NL_OPTIM_KIND_COUNT if unknown. */
const char *nl_optim_kind_name(nl_optim_kind kind);
nl_optim_kind nl_optim_kind_parse(const char *name);

/* PyTorch's defaults: SGD lr 0.01 (PyTorch has none: callers should ask for one), momentum,
 * dampening, weight decay 0, no nesterov; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay
 * 0; AdamW the same with weight decay 1e-2. */
nl_optim_config nl_optim_default_config(nl_optim_kind kind);
/* NL_OK, or NL_EINVAL naming the first bad value ("adam: beta2 must be in [0, 1), got 1"). */
nl_status nl_optim_check_config(nl_optim_kind kind, const nl_optim_config *cfg);

/* An optimizer over nl_module_params(net, ..., false) (f32 parameters, all on one device). It
 * holds a reference to net. cfg NULL means the defaults. Returns a new reference, or NULL with
 * NL_EINVAL (bad config, a non-f32 parameter), NL_EDEVICE (parameters on several devices) or
 * NL_ENOMEM. The state (momentum buffers, Adam moments) is allocated on the first step, in one
 * block, and a step allocates nothing after that. */
nl_optim *nl_optim_new(nl_optim_kind kind, nl_module *net, const nl_optim_config *cfg);
nl_optim *nl_optim_retain(nl_optim *o);
/* Drops a reference; frees the optimizer, its state and its reference to the net at zero.
 * NULL is a no-op. */
void nl_optim_release(nl_optim *o);

/* One update of every parameter from its .grad. NL_EINVAL if the net's parameters changed since
 * the optimizer was made (a layer added or removed): make a new optimizer then. The state moves
 * with the parameters if the net moved to another device. On error nothing has been updated,
 * except for a kernel failure (NL_EDEVICE) on a device. */
nl_status nl_optim_step(nl_optim *o);
/* Zeroes the gradients of every parameter of the net. */
nl_status nl_optim_zero_grad(nl_optim *o);
void nl_optim_set_lr(nl_optim *o, double lr);
double nl_optim_get_lr(const nl_optim *o);

nl_optim_kind nl_optim_get_kind(const nl_optim *o);
const nl_optim_config *nl_optim_get_config(const nl_optim *o);
/* Replaces the hyper-parameters (validated first: NL_EINVAL leaves them as they were). */
nl_status nl_optim_set_config(nl_optim *o, const nl_optim_config *cfg);
/* The net the optimizer updates (borrowed). */
nl_module *nl_optim_net(const nl_optim *o);

/* ---- state, for checkpoints: per parameter, nl_optim_state_count() tensors named by
 * nl_optim_state_name ("momentum" for SGD, "m" and "v" for Adam/AdamW), each with the
 * parameter's shape and device. */
int nl_optim_nparams(const nl_optim *o);
/* The i-th parameter (0-based, in nl_module_params order; borrowed). */
nl_param *nl_optim_param(const nl_optim *o, int i);
int nl_optim_state_count(const nl_optim *o);
const char *nl_optim_state_name(const nl_optim *o, int k);
/* Updates taken so far (Adam's bias corrections use it). */
int64_t nl_optim_steps(const nl_optim *o);
/* State tensor k of parameter i (borrowed), or NULL while none is allocated (before the first
 * step that needs it, or nl_optim_alloc_state). */
nl_tensor *nl_optim_state(const nl_optim *o, int i, int k);
/* Whether the state tensors hold values: false before the first step (an SGD step then starts
 * its momentum buffers from the gradient, as PyTorch does when it has no buffer). */
bool nl_optim_has_state(const nl_optim *o);
/* Allocates the state (zeroed) if there is none, so that a loader can fill it: NL_ENOMEM. */
nl_status nl_optim_alloc_state(nl_optim *o);
/* Sets the step count and whether the state holds values (true needs the state allocated). */
void nl_optim_set_progress(nl_optim *o, int64_t steps, bool have_state);

/* ---- gradient clipping */

/* torch.nn.utils.clip_grad_norm_ with the 2-norm: the norm of every gradient of net taken as one
 * vector (summed in double) goes to *total_norm (may be NULL); if it exceeds max_norm every
 * gradient is scaled by max_norm / (norm + 1e-6). A non-finite norm scales by NaN or 0, as
 * PyTorch does, so callers should look at *total_norm. NL_EINVAL for a negative max_norm. */
nl_status nl_clip_grad_norm(nl_module *net, double max_norm, double *total_norm);
/* Its two halves, for a caller that reads the norm back with other scalars (nl_train_step on a
 * device): the sum of the squares of every gradient of net into dst, a 0-d f32 tensor (or view)
 * on their device, computed there (a few kernels, through scratch kept in net's parameter store:
 * nothing allocated after the first call); and the scaling of the gradients given their norm. */
nl_status nl_grad_sumsq(nl_module *net, nl_tensor *dst);
nl_status nl_clip_grad_scale(nl_module *net, double max_norm, double norm);

#endif
