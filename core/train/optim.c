/* optim.c: SGD, Adam and AdamW over a module's parameters: validation, one state block per
 * optimizer, and one fused NL_OP_SGD_STEP / NL_OP_ADAM_STEP per parameter; gradient clipping. */
#include "optim.h"
#include "prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nl_optim {
    int refcount;
    nl_optim_kind kind;
    nl_optim_config cfg;
    nl_module *net;         /* a reference */
    int nparams;
    nl_param **params;      /* nl_module_params(net, ..., false) when made */
    nl_param **scratch;     /* nparams + 1 slots: the listing each step compares with params */
    nl_tensor *block;       /* every state tensor, one allocation (NULL until needed) */
    nl_tensor **state;      /* views on block: [i * nstate + k] for parameter i, state k */
    bool have_state;        /* the state tensors hold values (not just allocated) */
    int64_t steps;
    /* Pruning masks live in the pruned layers (core/compress/prune.h): each step masks their gradients
     * before the update and their weights after it, so pruned weights stay zero. */
};

/* What each kind keeps per parameter. */
static const struct {
    const char *name;
    int nstate;
    const char *state[2];
} kinds[NL_OPTIM_KIND_COUNT] = {
    [NL_OPTIM_SGD] = {"sgd", 1, {"momentum"}},
    [NL_OPTIM_ADAM] = {"adam", 2, {"m", "v"}},
    [NL_OPTIM_ADAMW] = {"adamw", 2, {"m", "v"}},
};
_Static_assert(sizeof kinds / sizeof kinds[0] == NL_OPTIM_KIND_COUNT, "one row per optimizer kind");

const char *nl_optim_kind_name(nl_optim_kind kind)
{
    return (unsigned)kind < NL_OPTIM_KIND_COUNT ? kinds[kind].name : "?";
}

nl_optim_kind nl_optim_kind_parse(const char *name)
{
    for (int k = 0; k < NL_OPTIM_KIND_COUNT; k++)
        if (name && strcmp(name, kinds[k].name) == 0) return (nl_optim_kind)k;
    return NL_OPTIM_KIND_COUNT;
}

nl_optim_config nl_optim_default_config(nl_optim_kind kind)
{
    nl_optim_config c = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    if (kind == NL_OPTIM_SGD) c.lr = 0.01;
    if (kind == NL_OPTIM_ADAMW) c.weight_decay = 1e-2;
    return c;
}

nl_status nl_optim_check_config(nl_optim_kind kind, const nl_optim_config *c)
{
    if ((unsigned)kind >= NL_OPTIM_KIND_COUNT)
        return nl_seterr(NL_EINVAL, "optimizer: unknown kind %d", (int)kind);
    const char *n = kinds[kind].name;
    /* !(x >= 0) also refuses NaN. */
    if (!(c->lr >= 0) || !isfinite(c->lr))
        return nl_seterr(NL_EINVAL, "%s: lr must be a finite number >= 0, got %g", n, c->lr);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return nl_seterr(NL_EINVAL, "%s: weight_decay must be a finite number >= 0, got %g", n,
                         c->weight_decay);
    if (kind == NL_OPTIM_SGD) {
        if (!(c->momentum >= 0) || !isfinite(c->momentum))
            return nl_seterr(NL_EINVAL, "sgd: momentum must be a finite number >= 0, got %g",
                             c->momentum);
        if (!isfinite(c->dampening))
            return nl_seterr(NL_EINVAL, "sgd: dampening must be finite, got %g", c->dampening);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return nl_seterr(NL_EINVAL, "sgd: nesterov momentum requires a momentum > 0 and zero "
                             "dampening (momentum %g, dampening %g)", c->momentum, c->dampening);
        return NL_OK;
    }
    if (!(c->beta1 >= 0 && c->beta1 < 1))
        return nl_seterr(NL_EINVAL, "%s: beta1 must be in [0, 1), got %g", n, c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1))
        return nl_seterr(NL_EINVAL, "%s: beta2 must be in [0, 1), got %g", n, c->beta2);
    if (!(c->eps >= 0) || !isfinite(c->eps))
        return nl_seterr(NL_EINVAL, "%s: eps must be a finite number >= 0, got %g", n, c->eps);
    return NL_OK;
}

/* The net's parameters must still be the ones the optimizer was made with: contiguous f32, each
 * with a gradient of its shape, all on one device. */
static nl_status check_params(nl_optim *o)
{
    const char *n = kinds[o->kind].name;
    int now = nl_module_params(o->net, o->scratch, o->nparams + 1, false);
    if (now != o->nparams || memcmp(o->scratch, o->params, (size_t)now * sizeof *o->params) != 0)
        return nl_seterr(NL_EINVAL, "%s: the network's parameters changed since the optimizer was "
                         "made (%d then, %d now): make a new optimizer", n, o->nparams, now);
    for (int i = 0; i < o->nparams; i++) {
        const nl_param *p = o->params[i];
        if (p->value->dtype != NL_F32 || !p->grad || !nl_same_shape(p->grad, p->value) ||
            !nl_tensor_is_contiguous(p->value) || !nl_tensor_is_contiguous(p->grad))
            return nl_seterr(NL_EINVAL, "%s: parameter %d (%s) is not a contiguous f32 tensor "
                             "with a gradient of its shape", n, i + 1, p->name);
        if (nl_tensor_device(p->value) != nl_tensor_device(o->params[0]->value))
            return nl_seterr(NL_EDEVICE, "%s: parameters on %s and %s: move the network to one "
                             "device", n, nl_device_name(nl_tensor_device(o->params[0]->value)),
                             nl_device_name(nl_tensor_device(p->value)));
        if (o->state && !nl_same_shape(o->state[i * kinds[o->kind].nstate], p->value))
            return nl_seterr(NL_EINVAL, "%s: parameter %d (%s) changed shape since the optimizer "
                             "was made: make a new optimizer", n, i + 1, p->name);
    }
    return NL_OK;
}

nl_optim *nl_optim_new(nl_optim_kind kind, nl_module *net, const nl_optim_config *cfg)
{
    nl_optim_config c = cfg ? *cfg : nl_optim_default_config(kind);
    if (nl_optim_check_config(kind, &c) != NL_OK) return NULL;
    if (!net) {
        nl_seterr(NL_EINVAL, "%s: no network to optimize", kinds[kind].name);
        return NULL;
    }
    if (nl_module_check_unique(net) != NL_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", nl_errmsg());
        nl_seterr(NL_EINVAL, "%s: %s", kinds[kind].name, msg);
        return NULL;
    }
    int n = nl_module_params(net, NULL, 0, false);
    nl_optim *o = calloc(1, sizeof *o);
    if (o) {
        o->params = calloc((size_t)n + 1, sizeof *o->params);
        o->scratch = calloc((size_t)n + 1, sizeof *o->scratch);
    }
    if (!o || !o->params || !o->scratch) {
        if (o) {
            free(o->params);
            free(o->scratch);
        }
        free(o);
        nl_seterr(NL_ENOMEM, "%s: out of memory", kinds[kind].name);
        return NULL;
    }
    o->refcount = 1;
    o->kind = kind;
    o->cfg = c;
    o->nparams = nl_module_params(net, o->params, n, false);
    o->net = nl_module_retain(net);
    if (check_params(o) != NL_OK) {
        nl_optim_release(o);
        return NULL;
    }
    return o;
}

nl_optim *nl_optim_retain(nl_optim *o)
{
    if (o) o->refcount++;
    return o;
}

/* Releases count views and their block. */
static void release_views(nl_tensor **views, int count, nl_tensor *block)
{
    for (int j = 0; views && j < count; j++) nl_tensor_release(views[j]);
    free(views);
    nl_tensor_release(block);
}

void nl_optim_release(nl_optim *o)
{
    if (!o || --o->refcount > 0) return;
    release_views(o->state, o->nparams * kinds[o->kind].nstate, o->block);
    nl_module_release(o->net);
    free(o->params);
    free(o->scratch);
    free(o);
}

/* Makes views of block into *out, one per (parameter, state), each shaped as its parameter. */
static nl_status make_views(const nl_optim *o, nl_tensor *block, nl_tensor ***out)
{
    int ns = kinds[o->kind].nstate, count = 0;
    nl_tensor **views = calloc((size_t)o->nparams * ns + 1, sizeof *views);
    if (!views) return nl_seterr(NL_ENOMEM, "%s: out of memory", kinds[o->kind].name);
    int64_t at = 0;
    for (int i = 0; i < o->nparams; i++) {
        const nl_tensor *pv = o->params[i]->value;
        int64_t n = nl_tensor_numel(pv);
        for (int k = 0; k < ns; k++, at += n) {
            nl_tensor *flat = nl_tensor_slice(block, 0, at, at + n);
            nl_tensor *v = flat ? nl_tensor_reshape(flat, pv->ndim, pv->shape) : NULL;
            nl_tensor_release(flat);
            if (!v) {
                release_views(views, count, NULL);
                return nl_errcode();
            }
            views[count++] = v;
        }
    }
    *out = views;
    return NL_OK;
}

/* Allocates the state (zeroed) on the parameters' device if there is none, or moves it there
 * if the net moved. The old state is kept on failure. */
static nl_status ensure_state(nl_optim *o)
{
    if (o->nparams == 0) return NL_OK;
    nl_device dev = nl_tensor_device(o->params[0]->value);
    if (o->block && nl_tensor_device(o->block) == dev) return NL_OK;
    int count = o->nparams * kinds[o->kind].nstate;
    nl_tensor *block;
    if (o->block) {
        block = nl_tensor_to_device(o->block, dev);
    } else {
        int64_t total = 0;
        for (int i = 0; i < o->nparams; i++) total += nl_tensor_numel(o->params[i]->value);
        int64_t shape[1] = {total * kinds[o->kind].nstate};
        block = nl_tensor_zeros(NL_F32, 1, shape, dev);
    }
    if (!block) return nl_errcode();
    nl_tensor **views = NULL;
    nl_status st = make_views(o, block, &views);
    if (st != NL_OK) {
        nl_tensor_release(block);
        return st;
    }
    release_views(o->state, count, o->block);
    o->state = views;
    o->block = block;
    return NL_OK;
}

nl_status nl_optim_alloc_state(nl_optim *o) { return ensure_state(o); }

/* The fused update of parameter i (operands as documented at NL_OP_SGD_STEP / NL_OP_ADAM_STEP). */
static nl_status step_param(nl_optim *o, int i)
{
    const nl_optim_config *c = &o->cfg;
    nl_param *p = o->params[i];
    nl_op op = {.dst = p->value, .src = {p->grad}};
    if (o->kind == NL_OPTIM_SGD) {
        op.code = NL_OP_SGD_STEP;
        op.src[1] = c->momentum != 0 ? o->state[i] : NULL;
        op.f[0] = c->lr;
        op.f[1] = c->momentum;
        op.f[2] = c->weight_decay;
        op.f[3] = c->dampening;
        op.i[0] = c->nesterov;
        op.i[1] = !o->have_state;
    } else {
        op.code = NL_OP_ADAM_STEP;
        op.src[1] = o->state[2 * i];
        op.src[2] = o->state[2 * i + 1];
        op.f[0] = c->lr;
        op.f[1] = c->beta1;
        op.f[2] = c->beta2;
        op.f[3] = c->eps;
        op.f[4] = c->weight_decay;
        op.i[0] = (int)(o->steps + 1);
        op.i[1] = o->kind == NL_OPTIM_ADAMW;
    }
    return nl_op_exec(&op);
}

nl_status nl_optim_step(nl_optim *o)
{
    nl_status st = check_params(o);
    if (st != NL_OK) return st;
    if (o->steps >= INT32_MAX)
        return nl_seterr(NL_EINVAL, "%s: too many steps (%lld)", kinds[o->kind].name,
                         (long long)o->steps);
    bool uses_state = o->kind != NL_OPTIM_SGD || o->cfg.momentum != 0;
    if (uses_state && (st = ensure_state(o)) != NL_OK) return st;
    if ((st = nl_prune_mask_grads(o->net)) != NL_OK) return st;
    for (int i = 0; i < o->nparams; i++)
        if ((st = step_param(o, i)) != NL_OK) return st;
    if ((st = nl_prune_apply_masks(o->net)) != NL_OK) return st;
    o->steps++;
    if (uses_state) o->have_state = o->block != NULL;
    return NL_OK;
}

nl_status nl_optim_zero_grad(nl_optim *o) { return nl_module_zero_grad(o->net); }
void nl_optim_set_lr(nl_optim *o, double lr) { o->cfg.lr = lr; }
double nl_optim_get_lr(const nl_optim *o) { return o->cfg.lr; }
nl_optim_kind nl_optim_get_kind(const nl_optim *o) { return o->kind; }
const nl_optim_config *nl_optim_get_config(const nl_optim *o) { return &o->cfg; }
nl_module *nl_optim_net(const nl_optim *o) { return o->net; }

nl_status nl_optim_set_config(nl_optim *o, const nl_optim_config *cfg)
{
    nl_status st = nl_optim_check_config(o->kind, cfg);
    if (st == NL_OK) o->cfg = *cfg;
    return st;
}

int nl_optim_nparams(const nl_optim *o) { return o->nparams; }
nl_param *nl_optim_param(const nl_optim *o, int i) { return o->params[i]; }
int nl_optim_state_count(const nl_optim *o) { return kinds[o->kind].nstate; }
const char *nl_optim_state_name(const nl_optim *o, int k) { return kinds[o->kind].state[k]; }
int64_t nl_optim_steps(const nl_optim *o) { return o->steps; }

nl_tensor *nl_optim_state(const nl_optim *o, int i, int k)
{
    return o->state ? o->state[i * kinds[o->kind].nstate + k] : NULL;
}

bool nl_optim_has_state(const nl_optim *o) { return o->have_state; }

void nl_optim_set_progress(nl_optim *o, int64_t steps, bool have_state)
{
    o->steps = steps;
    o->have_state = have_state && o->block;
}

/* ---------------------------------------------------------------- clipping -------------- */

/* Adds the sum of squares of t into the 0-d tensor *acc, made on t's device by the first call
 * (a new reference the caller releases): the norm is summed where the gradients are, and read
 * back as one scalar. */
static nl_status add_sum_squares(const nl_tensor *t, nl_tensor **acc)
{
    nl_tensor *sq = nl_binary_new(NL_BIN_MUL, t, t);
    nl_tensor *s = sq ? nl_reduce_new(NL_RED_SUM, sq, -1, false) : NULL;
    nl_status st = s ? NL_OK : nl_errcode();
    if (st == NL_OK && !*acc) *acc = nl_tensor_retain(s);
    else if (st == NL_OK) st = nl_binary(NL_BIN_ADD, *acc, *acc, s);
    nl_tensor_release(sq);
    nl_tensor_release(s);
    return st;
}

nl_status nl_clip_grad_norm(nl_module *net, double max_norm, double *total_norm)
{
    if (!(max_norm >= 0))
        return nl_seterr(NL_EINVAL, "clip_grad_norm: max_norm must be >= 0, got %g", max_norm);
    int n = nl_module_params(net, NULL, 0, false);
    nl_param **ps = calloc((size_t)n + 1, sizeof *ps);
    if (!ps) return nl_seterr(NL_ENOMEM, "clip_grad_norm: out of memory");
    nl_module_params(net, ps, n, false);
    double sq = 0;
    nl_tensor *acc = NULL;
    nl_status st = NL_OK;
    for (int i = 0; i < n && st == NL_OK; i++)
        if (ps[i]->grad) st = add_sum_squares(ps[i]->grad, &acc);
    if (st == NL_OK && acc) st = nl_tensor_item(acc, &sq);
    nl_tensor_release(acc);
    double norm = sqrt(sq), coef = max_norm / (norm + 1e-6);
    /* PyTorch multiplies by min(coef, 1) unconditionally; by 1 changes nothing. */
    for (int i = 0; i < n && st == NL_OK; i++)
        if (ps[i]->grad && !(coef >= 1))
            st = nl_binary_scalar(NL_BIN_MUL, ps[i]->grad, ps[i]->grad, coef, false);
    free(ps);
    if (st == NL_OK && total_norm) *total_norm = norm;
    return st;
}
