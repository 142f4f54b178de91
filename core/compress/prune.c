/* prune.c: pruning masks and their upkeep and magnitude pruning (per layer or global). Channel
 * pruning is in prune_channels.c, snapshots in snapshot.c, sparse execution of pruned layers
 * beside the layers (core/nn/sparse.c). */
#include "prune.h"
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_type(const nl_module *m, const char *name) { return strcmp(m->type->name, name) == 0; }

/* The parameter pruning acts on: the weight of a Linear or Conv2d (their first parameter), or of a
 * layer written in Lua its parameter named "weight" (a trained one: with a gradient); NULL for
 * any other module. */
static nl_param *weight_of(const nl_module *m)
{
    if (is_type(m, "Linear") || is_type(m, "Conv2d")) return (nl_param *)&m->params[0];
    if (!m->type->prunable_weight) return NULL;
    nl_param *p = nl_module_param((nl_module *)m, "weight");
    return p && p->grad && p->value->dtype == NL_F32 ? p : NULL;
}
static bool prunable(const nl_module *m) { return weight_of(m) != NULL; }

/* Calls f on m and every module under it, depth-first, with its container, its 0-based place
 * there and its 1-based path ("3.2"). */
typedef void (*visit_fn)(nl_module *m, nl_module *parent, int index, const char *path, void *ctx);
static void walk(nl_module *m, nl_module *parent, int index, const char *path, visit_fn f, void *ctx)
{
    f(m, parent, index, path, ctx);
    for (int i = 0; i < m->nchildren; i++) {
        char sub[32];
        if (snprintf(sub, sizeof sub, "%s%s%d", path, path[0] ? "." : "", i + 1) >= (int)sizeof sub)
            sub[sizeof sub - 1] = 0; /* nested over ten levels deep: the path is cut */
        walk(m->children[i], m, i, sub, f, ctx);
    }
}

/* ---------------------------------------------------------------- layers ---------------- */

/* The zeros of an f32 tensor on any device (a host copy of a device tensor), -1 when the copy
 * fails (error set). */
static int64_t count_zeros(const nl_tensor *w)
{
    nl_tensor *h = nl_tensor_host(w);
    if (!h) return -1;
    const float *p = nl_tensor_f32(h);
    int64_t zeros = 0;
    for (int64_t i = 0, n = nl_tensor_numel(h); i < n; i++) zeros += p[i] == 0;
    nl_tensor_release(h);
    return zeros;
}

nl_status nl_prune_to_host(nl_module **ls, int n, nl_device *was)
{
    nl_status st = NL_OK;
    for (int i = 0; i < n; i++) {
        was[i] = nl_module_device(ls[i]);
        if (st == NL_OK && was[i] != NL_CPU) st = nl_module_to(ls[i], NL_CPU);
    }
    return st;
}

nl_status nl_prune_back(nl_module **ls, int n, const nl_device *was, nl_status st)
{
    for (int i = 0; i < n; i++)
        if (was[i] != NL_CPU && nl_module_device(ls[i]) != was[i]) {
            nl_status s = nl_module_to(ls[i], was[i]);
            if (st == NL_OK) st = s;
        }
    return st;
}

typedef struct {
    nl_prune_layer *out;
    int max, n;
} layer_list;

static void list_layer(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                       const char *path, void *ctx)
{
    layer_list *l = ctx;
    if (!prunable(m)) return;
    if (l->n < l->max) {
        nl_prune_layer *e = &l->out[l->n];
        snprintf(e->path, sizeof e->path, "%s", path);
        e->m = m;
        const nl_tensor *w = weight_of(m)->value;
        e->params = nl_tensor_numel(w);
        e->zeros = count_zeros(w);
        e->sparse = nl_sparse_eligible(m, e->zeros);
    }
    l->n++;
}

int nl_prune_layers(nl_module *net, nl_prune_layer *out, int max)
{
    layer_list l = {out, max, 0};
    walk(net, NULL, 0, "", list_layer, &l);
    return l.n;
}

/* ---------------------------------------------------------------- masks ----------------- */

nl_tensor *nl_prune_mask(nl_module *m)
{
    nl_param *p = nl_module_param(m, NL_PRUNE_MASK);
    return p ? p->value : NULL;
}

typedef struct {
    bool grads;
    nl_status st;
} mask_pass;

static void apply_mask(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                       const char *path NL_UNUSED, void *ctx)
{
    mask_pass *mp = ctx;
    nl_tensor *mask = nl_prune_mask(m);
    if (!mask || mp->st != NL_OK || !prunable(m)) return;
    nl_tensor *t = mp->grads ? weight_of(m)->grad : weight_of(m)->value;
    if (t) mp->st = nl_binary(NL_BIN_MUL, t, t, mask);
}

nl_status nl_prune_mask_grads(nl_module *net)
{
    mask_pass mp = {true, NL_OK};
    walk(net, NULL, 0, "", apply_mask, &mp);
    return mp.st;
}

nl_status nl_prune_apply_masks(nl_module *net)
{
    mask_pass mp = {false, NL_OK};
    walk(net, NULL, 0, "", apply_mask, &mp);
    return mp.st;
}

/* m's mask, made (all ones) if it has none. Borrowed, or NULL with the error set. */
static nl_tensor *ensure_mask(nl_module *m)
{
    nl_tensor *mask = nl_prune_mask(m);
    if (mask) return mask;
    const nl_tensor *w = weight_of(m)->value;
    if (!(mask = nl_tensor_empty(NL_U8, w->ndim, w->shape, nl_tensor_device(w)))) return NULL;
    nl_status st = nl_fill(mask, 1);
    if (st == NL_OK) st = nl_module_add_param(m, NL_PRUNE_MASK, mask, false);
    nl_tensor_release(mask);
    return st == NL_OK ? nl_prune_mask(m) : NULL;
}

typedef struct {
    int made;
    nl_status st;
} zeros_pass;

static void mask_zeros(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                       const char *path NL_UNUSED, void *ctx)
{
    zeros_pass *zp = ctx;
    if (zp->st != NL_OK || !prunable(m)) return;
    int64_t zeros = count_zeros(weight_of(m)->value);
    if (zeros <= 0) {
        if (zeros < 0) zp->st = nl_errcode();
        return;
    }
    nl_device was;
    nl_status st = nl_prune_to_host(&m, 1, &was);
    nl_tensor *mask = st == NL_OK ? ensure_mask(m) : NULL;
    if (mask) {
        const float *w = nl_tensor_f32(weight_of(m)->value);
        uint8_t *k = nl_tensor_data(mask);
        for (int64_t i = 0, n = nl_tensor_numel(mask); i < n; i++) k[i] = w[i] != 0;
        zp->made++;
    } else if (st == NL_OK) {
        st = nl_errcode();
    }
    zp->st = nl_prune_back(&m, 1, &was, st);
}

int nl_prune_masks_from_zeros(nl_module *net)
{
    zeros_pass zp = {0, NL_OK};
    walk(net, NULL, 0, "", mask_zeros, &zp);
    return zp.st == NL_OK ? zp.made : -1;
}

static void unmask(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                   const char *path NL_UNUSED, void *ctx NL_UNUSED)
{
    nl_param *p = nl_module_param(m, NL_PRUNE_MASK);
    if (p) nl_module_remove_param(m, (int)(p - m->params));
}

void nl_prune_remove_masks(nl_module *net) { walk(net, NULL, 0, "", unmask, NULL); }

/* ---------------------------------------------------------------- magnitude pruning ----- */

/* One weight in the ranking: its magnitude (-1 when already pruned), layer and position. */
typedef struct {
    float key;
    int32_t layer;
    int64_t at;
} ranked;

static int by_key(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return (x->at > y->at) - (x->at < y->at);
}

/* Prunes the k smallest of r[0..n) (ranked entries of layers ls): mask 0, weight 0. */
static void prune_smallest(ranked *r, int64_t n, int64_t k, nl_module **ls)
{
    qsort(r, (size_t)n, sizeof *r, by_key);
    for (int64_t i = 0; i < k && i < n; i++) {
        nl_module *m = ls[r[i].layer];
        ((uint8_t *)nl_tensor_data(nl_prune_mask(m)))[r[i].at] = 0;
        nl_tensor_f32(weight_of(m)->value)[r[i].at] = 0;
    }
}

/* Ranks the weights of ls[l] into r (masked ones first). */
static int64_t rank_layer(nl_module **ls, int l, ranked *r)
{
    const nl_tensor *w = weight_of(ls[l])->value;
    const float *p = nl_tensor_f32(w);
    const uint8_t *mask = nl_tensor_data(nl_prune_mask(ls[l]));
    int64_t n = nl_tensor_numel(w);
    for (int64_t i = 0; i < n; i++) r[i] = (ranked){mask[i] ? fabsf(p[i]) : -1.0f, l, i};
    return n;
}

nl_status nl_prune_magnitude(nl_module *net, double amount, nl_prune_scope scope,
                             nl_module **layers, int n)
{
    if (!(amount >= 0 && amount <= 1))
        return nl_seterr(NL_EINVAL, "prune.magnitude: amount must be between 0 and 1, got %g", amount);
    nl_module **ls = layers;
    if (!layers) {
        n = nl_prune_layers(net, NULL, 0);
        nl_prune_layer *all = calloc((size_t)n + 1, sizeof *all);
        ls = calloc((size_t)n + 1, sizeof *ls);
        if (!all || !ls) {
            free(all);
            free(ls);
            return nl_seterr(NL_ENOMEM, "prune.magnitude: out of memory");
        }
        nl_prune_layers(net, all, n);
        for (int i = 0; i < n; i++) ls[i] = all[i].m;
        free(all);
    }
    nl_status st = NL_OK;
    int64_t total = 0, most = 0;
    nl_device *was = calloc((size_t)n + 1, sizeof *was);
    if (!was) st = nl_seterr(NL_ENOMEM, "prune.magnitude: out of memory");
    for (int i = 0; i < n && st == NL_OK; i++)
        if (!prunable(ls[i]))
            st = nl_seterr(NL_EINVAL, "prune.magnitude: %s is not a Linear or Conv2d layer, nor a "
                           "layer written in Lua with a parameter named weight", ls[i]->type->name);
    if (st == NL_OK) st = nl_prune_to_host(ls, n, was);
    for (int i = 0; i < n && st == NL_OK; i++) {
        if (!ensure_mask(ls[i]))
            st = nl_errcode();
        if (st != NL_OK) break;
        int64_t k = nl_tensor_numel(weight_of(ls[i])->value);
        total += k;
        most = k > most ? k : most;
    }
    ranked *r = st == NL_OK ? malloc((size_t)(scope == NL_PRUNE_SCOPE_GLOBAL ? total : most) * sizeof *r + 1) : NULL;
    if (st == NL_OK && !r) st = nl_seterr(NL_ENOMEM, "prune.magnitude: out of memory");
    if (st == NL_OK && scope == NL_PRUNE_SCOPE_GLOBAL) {
        int64_t at = 0;
        for (int i = 0; i < n; i++) at += rank_layer(ls, i, r + at);
        prune_smallest(r, total, llround(amount * (double)total), ls);
    } else if (st == NL_OK) {
        for (int i = 0; i < n; i++) {
            int64_t k = rank_layer(ls, i, r);
            prune_smallest(r, k, llround(amount * (double)k), ls);
        }
    }
    free(r);
    if (was) st = nl_prune_back(ls, n, was, st);
    free(was);
    if (ls != layers) free(ls);
    return st;
}
