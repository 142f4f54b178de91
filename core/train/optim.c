/* optim.c: SGD, Adam and AdamW over a network's parameter store: validation, one state block per
 * optimizer laid out as the store, and one fused NL_OP_SGD_STEP / NL_OP_ADAM_STEP over the whole
 * store; gradient clipping. */
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
    nl_param **params;      /* the net's parameter store's parameters (nl_module_params order) */
    uint64_t generation;    /* of the store params and state were laid out for */
    nl_tensor *block;       /* every state tensor, one allocation (NULL until needed): state k of
                               the whole store at [k * total, (k + 1) * total), the store's layout */
    nl_tensor *flat[2];     /* views on block: state k of every parameter */
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

static nl_status sync(nl_optim *o, nl_store **out);

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
    nl_optim *o = calloc(1, sizeof *o);
    if (!o) {
        nl_seterr(NL_ENOMEM, "%s: out of memory", kinds[kind].name);
        return NULL;
    }
    o->refcount = 1;
    o->kind = kind;
    o->cfg = c;
    o->net = nl_module_retain(net);
    nl_store *s;
    if (sync(o, &s) != NL_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", nl_errmsg());
        nl_seterr(nl_errcode(), "%s: %s", kinds[kind].name, msg);
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
    nl_tensor_release(o->flat[0]);
    nl_tensor_release(o->flat[1]);
    nl_module_release(o->net);
    free(o->params);
    free(o);
}

/* A zeroed state block on the store's device laid out as the store, with its flat views and one
 * view per (parameter, state) shaped as the parameter. NL_ENOMEM. */
static nl_status new_state(const nl_optim *o, const nl_store *s, nl_tensor **block_out,
                           nl_tensor *flat[2], nl_tensor ***views_out)
{
    int ns = kinds[o->kind].nstate, count = 0;
    int64_t total = s->offset[s->count], shape[1] = {total * ns};
    nl_tensor *block = nl_tensor_zeros(NL_F32, 1, shape, nl_tensor_device(s->values));
    nl_tensor **views = block ? calloc((size_t)s->count * ns + 1, sizeof *views) : NULL;
    nl_status st = !block ? nl_errcode() : !views ? nl_seterr(NL_ENOMEM, "%s: out of memory",
                                                               kinds[o->kind].name) : NL_OK;
    for (int k = 0; k < 2; k++) flat[k] = NULL;
    for (int k = 0; k < ns && st == NL_OK; k++)
        if (!(flat[k] = nl_tensor_slice(block, 0, k * total, (k + 1) * total))) st = nl_errcode();
    for (int i = 0; i < s->count && st == NL_OK; i++) {
        const nl_tensor *pv = s->params[i]->value;
        for (int k = 0; k < ns && st == NL_OK; k++) {
            nl_tensor *part = nl_tensor_slice(block, 0, k * total + s->offset[i],
                                              k * total + s->offset[i + 1]);
            nl_tensor *v = part ? nl_tensor_reshape(part, pv->ndim, pv->shape) : NULL;
            nl_tensor_release(part);
            if (!v) st = nl_errcode();
            else views[count++] = v;
        }
    }
    if (st != NL_OK) {
        release_views(views, count, block);
        for (int k = 0; k < 2; k++) nl_tensor_release(flat[k]);
        return st;
    }
    *block_out = block;
    *views_out = views;
    return NL_OK;
}

/* The net's parameter store, with the optimizer's parameter list and state made to match it.
 * After the net's parameters changed (a layer added or removed, channel pruning, low-rank, a move
 * to another device) the state of each parameter that remains with its shape is carried over
 * (to the new device too); the others start from zero. On error nothing changed. */
static nl_status sync(nl_optim *o, nl_store **out)
{
    nl_store *s = nl_module_store(o->net);
    if (!s) return nl_errcode();
    *out = s;
    if (s->generation == o->generation) return NL_OK;
    int ns = kinds[o->kind].nstate;
    nl_param **params = calloc((size_t)s->count + 1, sizeof *params);
    if (!params) return nl_seterr(NL_ENOMEM, "%s: out of memory", kinds[o->kind].name);
    memcpy(params, s->params, (size_t)s->count * sizeof *params);
    nl_tensor *block = NULL, *flat[2] = {NULL, NULL}, **views = NULL;
    nl_status st = o->block ? new_state(o, s, &block, flat, &views) : NL_OK;
    for (int j = 0; views && j < s->count && st == NL_OK; j++)
        for (int i = 0; i < o->nparams; i++) {
            if (o->params[i] != params[j] || !nl_same_shape(o->state[i * ns], views[j * ns])) continue;
            for (int k = 0; k < ns && st == NL_OK; k++) {
                nl_tensor *from = o->state[i * ns + k], *moved = NULL;
                if (nl_tensor_device(from) != nl_tensor_device(block))
                    from = moved = nl_tensor_to_device(from, nl_tensor_device(block));
                st = from ? nl_copy(views[j * ns + k], from) : nl_errcode();
                nl_tensor_release(moved);
            }
            break;
        }
    if (st != NL_OK) {
        release_views(views, s->count * ns, block);
        for (int k = 0; k < 2; k++) nl_tensor_release(flat[k]);
        free(params);
        return st;
    }
    release_views(o->state, o->nparams * ns, o->block);
    for (int k = 0; k < 2; k++) {
        nl_tensor_release(o->flat[k]);
        o->flat[k] = flat[k];
    }
    free(o->params);
    o->params = params;
    o->nparams = s->count;
    o->state = views;
    o->block = block;
    o->generation = s->generation;
    return NL_OK;
}

/* Allocates the state (zeroed) if there is none. */
static nl_status ensure_state(nl_optim *o)
{
    nl_store *s;
    nl_status st = sync(o, &s);
    if (st != NL_OK || o->block) return st;
    return new_state(o, s, &o->block, o->flat, &o->state);
}

nl_status nl_optim_alloc_state(nl_optim *o) { return ensure_state(o); }

/* The fused update of every parameter of the store (operands as documented at NL_OP_SGD_STEP /
 * NL_OP_ADAM_STEP): one operation over the blocks. */
static nl_status step_store(nl_optim *o, nl_store *s)
{
    const nl_optim_config *c = &o->cfg;
    nl_op op = {.dst = s->values, .src = {s->grads}};
    if (o->kind == NL_OPTIM_SGD) {
        op.code = NL_OP_SGD_STEP;
        op.src[1] = c->momentum != 0 ? o->flat[0] : NULL;
        op.f[0] = c->lr;
        op.f[1] = c->momentum;
        op.f[2] = c->weight_decay;
        op.f[3] = c->dampening;
        op.i[0] = c->nesterov;
        op.i[1] = !o->have_state;
    } else {
        op.code = NL_OP_ADAM_STEP;
        op.src[1] = o->flat[0];
        op.src[2] = o->flat[1];
        op.f[0] = c->lr;
        op.f[1] = c->beta1;
        op.f[2] = c->beta2;
        op.f[3] = c->eps;
        op.f[4] = c->weight_decay;
        op.i[0] = (int)(o->steps + 1);
        op.i[1] = o->kind == NL_OPTIM_ADAMW;
    }
    return s->count > 0 ? nl_op_exec(&op) : NL_OK;
}

nl_status nl_optim_step(nl_optim *o)
{
    if (o->steps >= INT32_MAX)
        return nl_seterr(NL_EINVAL, "%s: too many steps (%lld)", kinds[o->kind].name,
                         (long long)o->steps);
    nl_store *s;
    nl_status st = sync(o, &s);
    if (st != NL_OK) return st;
    bool uses_state = o->kind != NL_OPTIM_SGD || o->cfg.momentum != 0;
    if (uses_state && (st = ensure_state(o)) != NL_OK) return st;
    if ((st = nl_prune_mask_grads(o->net)) != NL_OK) return st;
    if ((st = step_store(o, s)) != NL_OK) return st;
    if ((st = nl_prune_apply_masks(o->net)) != NL_OK) return st;
    o->steps++;
    if (uses_state) o->have_state = o->block != NULL;
    return NL_OK;
}

nl_status nl_optim_zero_grad(nl_optim *o)
{
    nl_store *s;
    nl_status st = sync(o, &s);
    return st == NL_OK && s->count > 0 ? nl_fill(s->grads, 0) : st;
}
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

/* Gradients squared per pass of the norm: the scratch kept in the store stays this small. */
#define NORM_CHUNK ((int64_t)1 << 20)

/* dst (0-d) = the sum of all elements of src, where they are. */
static nl_status sum_into(nl_tensor *dst, const nl_tensor *src)
{
    nl_op op = {.code = NL_OP_REDUCE, .dst = dst, .src = {src}, .i = {NL_RED_SUM, -1}};
    return nl_op_exec(&op);
}

/* The gradient block squared NORM_CHUNK elements at a time into the store's scratch, each pass
 * summed (in one kernel) into dst or, with several passes, into a slot of the store's partial
 * sums, which are summed into dst last. One pass (2 kernels) up to a million parameters. */
nl_status nl_grad_sumsq(nl_module *net, nl_tensor *dst)
{
    nl_store *s = nl_module_store(net);
    if (!s) return nl_errcode();
    const int64_t total = s->offset[s->count];
    if (total == 0) return nl_fill(dst, 0);
    const nl_device dev = nl_tensor_device(s->grads);
    int64_t len = total < NORM_CHUNK ? total : NORM_CHUNK, passes = (total + NORM_CHUNK - 1) / NORM_CHUNK;
    nl_tensor *sq = nl_tensor_reuse(&s->norm_sq, NL_F32, 1, &len, dev);
    nl_tensor *part = passes > 1 && sq ? nl_tensor_reuse(&s->norm_part, NL_F32, 1, &passes, dev) : sq;
    nl_status st = part ? NL_OK : nl_errcode();
    if (st == NL_OK && passes == 1) {
        st = nl_binary(NL_BIN_MUL, sq, s->grads, s->grads);
        return st == NL_OK ? sum_into(dst, sq) : st;
    }
    for (int64_t k = 0; k < passes && st == NL_OK; k++) {
        const int64_t from = k * NORM_CHUNK, n = total - from < NORM_CHUNK ? total - from : NORM_CHUNK;
        nl_tensor *g = nl_tensor_slice(s->grads, 0, from, from + n);
        nl_tensor *q = g ? nl_tensor_slice(sq, 0, 0, n) : NULL;
        nl_tensor *slot = q ? nl_tensor_slice(part, 0, k, k + 1) : NULL;
        nl_tensor *out = slot ? nl_tensor_reshape(slot, 0, NULL) : NULL;
        st = out ? nl_binary(NL_BIN_MUL, q, g, g) : nl_errcode();
        if (st == NL_OK) st = sum_into(out, q);
        nl_tensor_release(out);
        nl_tensor_release(slot);
        nl_tensor_release(q);
        nl_tensor_release(g);
    }
    return st == NL_OK ? sum_into(dst, part) : st;
}

nl_status nl_clip_grad_scale(nl_module *net, double max_norm, double norm)
{
    nl_store *s = nl_module_store(net);
    if (!s) return nl_errcode();
    double coef = max_norm / (norm + 1e-6);
    /* PyTorch multiplies by min(coef, 1) unconditionally; by 1 changes nothing. */
    if (s->count > 0 && !(coef >= 1)) return nl_binary_scalar(NL_BIN_MUL, s->grads, s->grads, coef, false);
    return NL_OK;
}

nl_status nl_clip_grad_norm(nl_module *net, double max_norm, double *total_norm)
{
    static const int64_t no_dims[1] = {1};
    if (!(max_norm >= 0))
        return nl_seterr(NL_EINVAL, "clip_grad_norm: max_norm must be >= 0, got %g", max_norm);
    nl_store *s = nl_module_store(net);
    if (!s) return nl_errcode();
    nl_device dev = s->count > 0 ? nl_tensor_device(s->grads) : NL_CPU;
    nl_tensor *acc = nl_tensor_reuse(&s->norm, NL_F32, 0, no_dims, dev);
    double sq = 0;
    nl_status st = acc ? nl_grad_sumsq(net, acc) : nl_errcode();
    if (st == NL_OK) st = nl_tensor_item(acc, &sq);
    double norm = sqrt(sq);
    if (st == NL_OK) st = nl_clip_grad_scale(net, max_norm, norm);
    if (st == NL_OK && total_norm) *total_norm = norm;
    return st;
}
