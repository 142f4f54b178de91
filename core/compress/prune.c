/* prune.c: pruning masks and their upkeep, magnitude pruning (per layer or global), structured
 * channel pruning that rebuilds layers smaller (with Residual coupling), and snapshots. Sparse
 * execution of pruned layers is beside the layers (core/nn/sparse.c). */
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

/* Pruning edits weights and masks on the host: layers on a device go to the CPU for the pass
 * (was[i] keeps where each was) and back after it (layers_back, which keeps the first error).
 * Two copies of those layers per pruning pass, none per training step. */
static nl_status layers_to_host(nl_module **ls, int n, nl_device *was)
{
    nl_status st = NL_OK;
    for (int i = 0; i < n; i++) {
        was[i] = nl_module_device(ls[i]);
        if (st == NL_OK && was[i] != NL_CPU) st = nl_module_to(ls[i], NL_CPU);
    }
    return st;
}

static nl_status layers_back(nl_module **ls, int n, const nl_device *was, nl_status st)
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
    nl_status st = layers_to_host(&m, 1, &was);
    nl_tensor *mask = st == NL_OK ? ensure_mask(m) : NULL;
    if (mask) {
        const float *w = nl_tensor_f32(weight_of(m)->value);
        uint8_t *k = nl_tensor_data(mask);
        for (int64_t i = 0, n = nl_tensor_numel(mask); i < n; i++) k[i] = w[i] != 0;
        zp->made++;
    } else if (st == NL_OK) {
        st = nl_errcode();
    }
    zp->st = layers_back(&m, 1, &was, st);
}

int nl_prune_masks_from_zeros(nl_module *net)
{
    zeros_pass zp = {0, NL_OK};
    walk(net, NULL, 0, "", mask_zeros, &zp);
    return zp.st == NL_OK ? zp.made : -1;
}

/* Removes parameter i of m (a buffer: it has no gradient). */
static void drop_param(nl_module *m, int i)
{
    nl_tensor_release(m->params[i].value);
    nl_tensor_release(m->params[i].grad);
    memmove(&m->params[i], &m->params[i + 1], (size_t)(m->nparams - i - 1) * sizeof m->params[0]);
    m->nparams--;
}

static void unmask(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                   const char *path NL_UNUSED, void *ctx NL_UNUSED)
{
    nl_param *p = nl_module_param(m, NL_PRUNE_MASK);
    if (p) drop_param(m, (int)(p - m->params));
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
    if (st == NL_OK) st = layers_to_host(ls, n, was);
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
    if (was) st = layers_back(ls, n, was, st);
    free(was);
    if (ls != layers) free(ls);
    return st;
}

/* ---------------------------------------------------------------- channel pruning ------- */

/* How the channels of the stream between two layers are laid out. */
typedef enum { S_NONE, S_SPATIAL, S_FEATURES, S_FLAT } stream_kind;
typedef struct {
    int g;              /* the channel group, or -1 */
    stream_kind kind;
} stream;

/* A layer the pruning touches: it makes the channels of group out_g, reads those of in_g (each
 * channel in_block consecutive inputs), or scales those of member_g per channel (BatchNorm). */
typedef struct {
    nl_module *m, *parent;
    int index;
    int out_g, in_g, member_g;
    int64_t in_block;
    nl_module *rebuilt;
} touched;

typedef struct {
    touched *t;
    int nt, capt;
    int *up;            /* union-find parents of groups */
    bool *frozen;
    int64_t *channels;
    int ng, capg;
    bool oom;
} chan_ctx;

static int find(chan_ctx *c, int g)
{
    while (c->up[g] != g) g = c->up[g] = c->up[c->up[g]];
    return g;
}

static void freeze(chan_ctx *c, int g)
{
    if (g >= 0) c->frozen[find(c, g)] = true;
}

static int new_group(chan_ctx *c, int64_t channels)
{
    if (c->ng == c->capg) {
        int cap = c->capg ? 2 * c->capg : 16;
        int *up = realloc(c->up, (size_t)cap * sizeof *up);
        if (up) c->up = up;
        bool *fr = realloc(c->frozen, (size_t)cap * sizeof *fr);
        if (fr) c->frozen = fr;
        int64_t *ch = realloc(c->channels, (size_t)cap * sizeof *ch);
        if (ch) c->channels = ch;
        if (!up || !fr || !ch) {
            c->oom = true;
            return -1;
        }
        c->capg = cap;
    }
    c->up[c->ng] = c->ng;
    c->frozen[c->ng] = false;
    c->channels[c->ng] = channels;
    return c->ng++;
}

static touched *touch(chan_ctx *c, nl_module *m, nl_module *parent, int index)
{
    if (c->nt == c->capt) {
        int cap = c->capt ? 2 * c->capt : 16;
        touched *t = realloc(c->t, (size_t)cap * sizeof *t);
        if (!t) {
            c->oom = true;
            return NULL;
        }
        c->t = t;
        c->capt = cap;
    }
    touched *e = &c->t[c->nt++];
    *e = (touched){m, parent, index, -1, -1, -1, 1, NULL};
    return e;
}

/* Follows the channels through m (the child index of parent) from stream s; returns the stream
 * after m. Records what each layer produces, reads and scales. */
static stream trace(chan_ctx *c, nl_module *m, nl_module *parent, int index, stream s)
{
    if (is_type(m, "Sequential")) {
        for (int i = 0; i < m->nchildren; i++) s = trace(c, m->children[i], m, i, s);
        return s;
    }
    if (is_type(m, "Residual")) {
        stream out = s;
        for (int i = 0; i < m->nchildren; i++) out = trace(c, m->children[i], m, i, out);
        if (s.g < 0 || out.g < 0 || s.kind != out.kind) {
            freeze(c, s.g);
            freeze(c, out.g);
            return (stream){-1, S_NONE};
        }
        int a = find(c, s.g), b = find(c, out.g);
        if (a != b) {
            c->up[b] = a;
            c->frozen[a] |= c->frozen[b];
        }
        return s;
    }
    bool conv = is_type(m, "Conv2d"), linear = is_type(m, "Linear");
    if (conv || linear) {
        int64_t in = (int64_t)m->args[0], block = 1;
        bool reads = s.g >= 0;
        if (reads && linear) {
            int64_t ch = c->channels[s.g];
            if (s.kind == S_FLAT && in % ch == 0) block = in / ch;
            else if (!(s.kind == S_FEATURES && in == ch)) reads = false;
        }
        if (reads && conv && s.kind != S_SPATIAL) reads = false;
        if (!reads) freeze(c, s.g);
        touched *e = touch(c, m, parent, index);
        if (!e) return (stream){-1, S_NONE};
        if (reads) {
            e->in_g = s.g;
            e->in_block = block;
        }
        e->out_g = parent ? new_group(c, (int64_t)m->args[1]) : -1;
        return (stream){e->out_g, conv ? S_SPATIAL : S_FEATURES};
    }
    if (is_type(m, "BatchNorm2d") || is_type(m, "BatchNorm1d")) {
        stream_kind want = is_type(m, "BatchNorm2d") ? S_SPATIAL : S_FEATURES;
        if (s.g >= 0 && s.kind == want) {
            touched *e = touch(c, m, parent, index);
            if (e) e->member_g = s.g;
        } else {
            freeze(c, s.g);
        }
        return s;
    }
    if (is_type(m, "Flatten")) return (stream){s.g, s.kind == S_SPATIAL ? S_FLAT : s.kind};
    if (is_type(m, "GlobalAvgPool")) return (stream){s.g, s.kind == S_SPATIAL ? S_FEATURES : S_NONE};
    static const char *const through[] = {"ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh", "Dropout",
                                          "Identity", "MaxPool2d", "AvgPool2d"};
    for (size_t i = 0; i < sizeof through / sizeof through[0]; i++)
        if (is_type(m, through[i])) return s;
    freeze(c, s.g); /* a layer whose channel meaning we do not know */
    return (stream){-1, S_NONE};
}

/* The channels of one group to keep: sorted indices. */
typedef struct {
    int64_t *at;
    int64_t n, of;
} keep_list;

/* Rows of w (as [rows, rest]) by norm 1 or 2, added into score. */
static void add_row_norms(const nl_tensor *w, int norm, double *score)
{
    int64_t rows = w->shape[0], rest = nl_tensor_numel(w) / rows;
    const float *p = nl_tensor_f32(w);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t j = 0; j < rest; j++) {
            double v = p[r * rest + j];
            s += norm == 1 ? fabs(v) : v * v;
        }
        score[r] += norm == 1 ? s : sqrt(s);
    }
}

static const double *sort_scores; /* qsort has no context argument: the scores being ranked */
static int by_score(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (sort_scores[i] != sort_scores[j]) return sort_scores[i] > sort_scores[j] ? -1 : 1;
    return (i > j) - (i < j);
}
static int by_index(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    return (i > j) - (i < j);
}

/* Picks the channels group g keeps: the (1 - amount) share with the largest summed norms of its
 * producers' filters. */
static nl_status choose(chan_ctx *c, int g, double amount, int norm, keep_list *k)
{
    int64_t ch = c->channels[g];
    double *score = calloc((size_t)ch, sizeof *score);
    k->at = malloc((size_t)ch * sizeof *k->at);
    if (!score || !k->at) {
        free(score);
        return nl_seterr(NL_ENOMEM, "prune.channels: out of memory");
    }
    for (int i = 0; i < c->nt; i++)
        if (c->t[i].out_g >= 0 && find(c, c->t[i].out_g) == g)
            add_row_norms(c->t[i].m->params[0].value, norm, score);
    for (int64_t i = 0; i < ch; i++) k->at[i] = i;
    sort_scores = score;
    qsort(k->at, (size_t)ch, sizeof *k->at, by_score);
    int64_t drop = llround(amount * (double)ch);
    k->n = ch - drop < 1 ? 1 : ch - drop;
    k->of = ch;
    qsort(k->at, (size_t)k->n, sizeof *k->at, by_index);
    free(score);
    return NL_OK;
}

/* A copy of t (contiguous, CPU) keeping along dim only the blocks of `block` entries at
 * k->at[j] * block. New reference or NULL. */
static nl_tensor *select_dim(const nl_tensor *t, int dim, const keep_list *k, int64_t block)
{
    int64_t shape[NL_MAX_DIMS], outer = 1, inner = 1;
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = t->shape[d];
        if (d < dim) outer *= t->shape[d];
        if (d > dim) inner *= t->shape[d];
    }
    shape[dim] = k->n * block;
    nl_tensor *out = nl_tensor_empty(t->dtype, t->ndim, shape, NL_CPU);
    if (!out) return NULL;
    size_t es = nl_dtype_info(t->dtype)->size, run = (size_t)(block * inner) * es;
    const char *src = nl_tensor_data(t);
    char *dst = nl_tensor_data(out);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < k->n; j++, dst += run)
            memcpy(dst, src + (size_t)((o * t->shape[dim] + k->at[j] * block) * inner) * es, run);
    return out;
}

/* A new module made like e->m but with the channels of keep lists out (its outputs or, for
 * BatchNorm, its channels) and in (its inputs, in blocks), weights copied. NULL on error. */
static nl_module *shrink(const touched *e, const keep_list *out, const keep_list *in)
{
    nl_module *m = e->m;
    double args[NL_MAX_ARGS];
    memcpy(args, m->args, sizeof args);
    if (out) args[is_type(m, "Conv2d") || is_type(m, "Linear") ? 1 : 0] = (double)out->n;
    if (in) args[0] = (double)(in->n * e->in_block);
    nl_rng_state rng = nl_rng_get_state(); /* the new layer's initial values are overwritten */
    nl_module *n = nl_module_new(m->type, args);
    nl_rng_set_state(rng);
    if (!n) return NULL;
    n->training = m->training;
    nl_status st = NL_OK;
    for (int i = 0; i < m->nparams && st == NL_OK; i++) {
        nl_param *p = &m->params[i];
        nl_tensor *a = out ? select_dim(p->value, 0, out, 1) : nl_tensor_retain(p->value);
        nl_tensor *b = a && in && a->ndim >= 2 ? select_dim(a, 1, in, e->in_block) : nl_tensor_retain(a);
        nl_param *q = nl_module_param(n, p->name);
        if (!b) st = nl_errcode();
        else if (q) st = nl_copy(q->value, b);
        else st = nl_module_add_param(n, p->name, b, false);
        nl_tensor_release(a);
        nl_tensor_release(b);
    }
    if (st != NL_OK) {
        nl_module_release(n);
        return NULL;
    }
    return n;
}

static void chan_free(chan_ctx *c, keep_list *keeps)
{
    for (int i = 0; i < c->nt; i++) nl_module_release(c->t[i].rebuilt);
    for (int g = 0; keeps && g < c->ng; g++) free(keeps[g].at);
    free(keeps);
    free(c->t);
    free(c->up);
    free(c->frozen);
    free(c->channels);
}

static nl_status channels_on_host(nl_module *net, double amount, int norm, int64_t *removed)
{
    if (!(amount >= 0 && amount < 1))
        return nl_seterr(NL_EINVAL, "prune.channels: amount must be in [0, 1), got %g", amount);
    if (norm != 1 && norm != 2)
        return nl_seterr(NL_EINVAL, "prune.channels: the criterion must be l1 or l2 (norm 1 or 2)");
    chan_ctx c = {0};
    stream end = trace(&c, net, NULL, 0, (stream){-1, S_NONE});
    freeze(&c, end.g);
    keep_list *keeps = c.oom ? NULL : calloc((size_t)c.ng + 1, sizeof *keeps);
    nl_status st = keeps ? NL_OK : nl_seterr(NL_ENOMEM, "prune.channels: out of memory");
    int64_t gone = 0;
    for (int g = 0; g < c.ng && st == NL_OK; g++)
        if (find(&c, g) == g && !c.frozen[g] && (st = choose(&c, g, amount, norm, &keeps[g])) == NL_OK)
            gone += keeps[g].of - keeps[g].n;
    /* The keep list of a group (its root's), or NULL when it keeps everything. */
#define KEEP(grp) ((grp) >= 0 && keeps[find(&c, grp)].at && keeps[find(&c, grp)].n < keeps[find(&c, grp)].of \
                   ? &keeps[find(&c, grp)] : NULL)
    for (int i = 0; i < c.nt && st == NL_OK; i++) {
        touched *e = &c.t[i];
        const keep_list *out = KEEP(e->out_g >= 0 ? e->out_g : e->member_g), *in = KEEP(e->in_g);
        if ((out || in) && !(e->rebuilt = shrink(e, out, in))) st = nl_errcode();
    }
#undef KEEP
    for (int i = 0; i < c.nt && st == NL_OK; i++)
        if (c.t[i].rebuilt) st = nl_module_replace(c.t[i].parent, c.t[i].index, c.t[i].rebuilt);
    if (st == NL_OK && removed) *removed = gone;
    chan_free(&c, keeps);
    return st;
}

/* A network on a device is pruned on the CPU and goes back (layers_to_host). */
nl_status nl_prune_channels(nl_module *net, double amount, int norm, int64_t *removed)
{
    if (removed) *removed = 0;
    nl_device was;
    nl_status st = layers_to_host(&net, 1, &was);
    if (st == NL_OK) st = channels_on_host(net, amount, norm, removed);
    return layers_back(&net, 1, &was, st);
}

/* ---------------------------------------------------------------- snapshots ------------- */

/* A snapshot is a copy of the network (nl_module_clone): its architecture and every parameter
 * and buffer, masks included. */
struct nl_snapshot {
    nl_module *copy;
};

nl_snapshot *nl_snapshot_take(nl_module *net)
{
    nl_snapshot *s = calloc(1, sizeof *s);
    if (!s) {
        nl_seterr(NL_ENOMEM, "snapshot: out of memory");
        return NULL;
    }
    if (!(s->copy = nl_module_clone(net))) {
        free(s);
        return NULL;
    }
    return s;
}

void nl_snapshot_free(nl_snapshot *s)
{
    if (!s) return;
    nl_module_release(s->copy);
    free(s);
}

static int64_t module_bytes(const nl_module *m)
{
    int64_t b = 0;
    for (int i = 0; i < m->nparams; i++)
        b += nl_tensor_numel(m->params[i].value) * (int64_t)nl_dtype_info(m->params[i].value->dtype)->size;
    for (int i = 0; i < m->nchildren; i++) b += module_bytes(m->children[i]);
    return b;
}

int64_t nl_snapshot_bytes(const nl_snapshot *s) { return module_bytes(s->copy); }

/* Whether a and b have the same layers with the same arguments, depth-first. */
static bool same_arch(const nl_module *a, const nl_module *b)
{
    if (a->type != b->type || a->nchildren != b->nchildren ||
        memcmp(a->args, b->args, sizeof a->args) != 0)
        return false;
    for (int i = 0; i < a->nchildren; i++)
        if (!same_arch(a->children[i], b->children[i])) return false;
    return true;
}

/* Restores the saved module's parameters into m, a module of its architecture, in place (the
 * parameters keep their identity, which the optimizer holds): pass 0 checks, pass 1 copies,
 * adds what m lacks and drops the buffers the snapshot did not have (masks added since). */
static nl_status restore_tree(nl_module *m, const nl_module *saved, int pass)
{
    nl_status st = NL_OK;
    for (int i = 0; i < saved->nparams && st == NL_OK; i++) {
        const nl_param *sp = &saved->params[i];
        nl_param *q = nl_module_param(m, sp->name);
        if (pass == 0) {
            if (q && (!nl_same_shape(q->value, sp->value) || q->value->dtype != sp->value->dtype))
                st = nl_seterr(NL_EINVAL, "snapshot: %s's %s changed shape", m->type->name, q->name);
        } else if (q) {
            st = nl_copy(q->value, sp->value);
        } else {
            nl_tensor *c = nl_tensor_clone(sp->value);
            st = c ? nl_module_add_param(m, sp->name, c, false) : nl_errcode();
            nl_tensor_release(c);
        }
    }
    for (int i = m->nparams - 1; pass == 1 && st == NL_OK && i >= 0; i--)
        if (!m->params[i].grad && !nl_module_param((nl_module *)saved, m->params[i].name)) drop_param(m, i);
    for (int i = 0; i < m->nchildren && st == NL_OK; i++)
        st = restore_tree(m->children[i], saved->children[i], pass);
    return st;
}

nl_status nl_snapshot_restore(const nl_snapshot *s, nl_module *net)
{
    if (net->type != s->copy->type)
        return nl_seterr(NL_EINVAL, "restore: the snapshot is of a %s, not a %s", s->copy->type->name,
                         net->type->name);
    if (same_arch(net, s->copy)) {
        nl_status st = restore_tree(net, s->copy, 0);
        return st == NL_OK ? restore_tree(net, s->copy, 1) : st;
    }
    nl_module *m = nl_module_clone(s->copy);
    if (!m) return nl_errcode();
    nl_module_train(m, net->training);
    /* net takes the rebuilt contents and keeps its identity; m leaves with the old ones. */
    nl_module old = *net;
    int rc = m->refcount;
    *net = *m;
    net->refcount = old.refcount;
    *m = old;
    m->refcount = rc;
    nl_module_release(m);
    return NL_OK;
}
