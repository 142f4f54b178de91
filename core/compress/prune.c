/* prune.c: pruning masks and their upkeep, magnitude pruning (per layer or global), sparse
 * execution of pruned layers (thresholds, CSR upkeep), structured channel pruning that rebuilds
 * layers smaller (with Residual coupling), and snapshots. */
#include "prune.h"
#include "checkpoint.h"
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_type(const nl_module *m, const char *name) { return strcmp(m->type->name, name) == 0; }
static bool prunable(const nl_module *m) { return is_type(m, "Linear") || is_type(m, "Conv2d"); }

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
        const nl_tensor *w = m->params[0].value;
        e->params = nl_tensor_numel(w);
        e->zeros = 0;
        const float *p = nl_tensor_f32(w);
        for (int64_t i = 0; nl_tensor_device(w) == NL_CPU && i < e->params; i++) e->zeros += p[i] == 0;
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
    if (!mask || mp->st != NL_OK) return;
    nl_tensor *t = mp->grads ? m->params[0].grad : m->params[0].value;
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
    const nl_tensor *w = m->params[0].value;
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
    if (zp->st != NL_OK || !prunable(m) || nl_tensor_device(m->params[0].value) != NL_CPU) return;
    const float *w = nl_tensor_f32(m->params[0].value);
    int64_t n = nl_tensor_numel(m->params[0].value), zeros = 0;
    for (int64_t i = 0; i < n; i++) zeros += w[i] == 0;
    if (!zeros) return;
    nl_tensor *mask = ensure_mask(m);
    if (!mask) {
        zp->st = nl_errcode();
        return;
    }
    uint8_t *k = nl_tensor_data(mask);
    for (int64_t i = 0; i < n; i++) k[i] = w[i] != 0;
    zp->made++;
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

/* ---------------------------------------------------------------- sparse execution ------ */

/* Where the sparse kernels start to beat the dense ones, measured with `NNLAB_THREADS=2
 * build/release/bench/bench_sparse` (built by `make bench`) on the 2-core AMD EPYC machine nnlab is
 * tuned on, forward in evaluation mode through the layer (the check of the weight included), best
 * of 15 interleaved samples, dense / sparse time:
 *   conv 3->32 k3 p1 32x32,  batch 64: 0.84x at 30%, 1.06x at 40%, 1.26x at 50%, 3.50x at 90%
 *                            batch 1:  0.86x at 50%, 1.08x at 60%, 1.48x at 70%, 3.17x at 90%
 *   conv 32->64 k3 p1 16x16, batch 64: 0.99x at 40%, 1.15x at 50%, 1.43x at 60%, 4.27x at 90%
 *                            batch 1:  0.60x at 20%, 1.63x at 30%, 2.33x at 50%, 6.87x at 90%
 *   linear 4096->10,         batch 64: wins at every sparsity measured: 2.08x at 10%, 3.16x at 50%,
 *                            6.58x at 90% (sgemm with 10 outputs is slow); below 16 input rows the
 *                            layer stays dense (core/nn/linear.c): at batch 1, 0.37x at 90%, 0.77x at 98%.
 * Convolutions go sparse from 60%, where both win at both batch sizes. Linear layers go sparse
 * from 50%: lower, every unpruned layer would hold a CSR copy of its weight for a kernel that is
 * just a faster dense product for this shape, which is not what the switch is for. */
#define SPARSE_DEFAULTS {[NL_SPARSE_CONV] = 0.6, [NL_SPARSE_LINEAR] = 0.5} /* one list for both */
const double nl_sparse_default_threshold[NL_SPARSE_KINDS] = SPARSE_DEFAULTS;
static double sparse_threshold[NL_SPARSE_KINDS] = SPARSE_DEFAULTS; /* C11: a constant initializer */

static int64_t sparse_forwards; /* nl_sparse_forwards: layers are run from one host thread */

int64_t nl_sparse_forwards(void) { return sparse_forwards; }

double nl_sparse_threshold(nl_sparse_kind kind) { return sparse_threshold[kind]; }

nl_status nl_sparse_set_threshold(nl_sparse_kind kind, double t)
{
    if (!(t <= 1))
        return nl_seterr(NL_EINVAL, "sparse threshold must be in [0, 1] (or off), got %g", t);
    sparse_threshold[kind] = t < 0 ? -1 : t;
    return NL_OK;
}

nl_sparse_kind nl_sparse_kind_of(const nl_module *m)
{
    return is_type(m, "Conv2d") ? NL_SPARSE_CONV : is_type(m, "Linear") ? NL_SPARSE_LINEAR : NL_SPARSE_KINDS;
}

/* Whether a weight of n elements with zeros zeros reaches threshold t (t < 0: off). */
static bool reaches(double t, int64_t zeros, int64_t n) { return t >= 0 && (double)zeros >= t * (double)n; }

/* The weight of m if the sparse kernels can take it (f32, contiguous, on the CPU), else NULL. */
static const nl_tensor *sparse_weight(const nl_module *m)
{
    const nl_tensor *w = m->nparams > 0 ? m->params[0].value : NULL;
    return w && w->dtype == NL_F32 && nl_tensor_device(w) == NL_CPU && nl_tensor_is_contiguous(w) &&
                   w->ndim >= 2 ? w : NULL;
}

bool nl_sparse_eligible(const nl_module *m, int64_t zeros)
{
    nl_sparse_kind k = nl_sparse_kind_of(m);
    const nl_tensor *w = k < NL_SPARSE_KINDS ? sparse_weight(m) : NULL;
    return w && reaches(sparse_threshold[k], zeros, nl_tensor_numel(w));
}

void nl_sparse_clear(nl_sparse_csr *s)
{
    nl_tensor_release(s->rowptr);
    nl_tensor_release(s->col);
    nl_tensor_release(s->val);
    nl_tensor_release(s->weight);
    *s = (nl_sparse_csr){0};
}

/* Makes s the CSR of w viewed as [rows, n / rows], with nnz nonzeros, and keeps a copy of w. */
static nl_status sparse_build(nl_sparse_csr *s, const nl_tensor *w, int64_t nnz)
{
    const int64_t n = nl_tensor_numel(w), rows = w->shape[0], cols = n / rows, len = nnz > 0 ? nnz : 1;
    s->built = false;
    if (!nl_layer_buffer(&s->rowptr, NL_I32, 1, (int64_t[]){rows + 1}, NL_CPU) ||
        !nl_layer_buffer(&s->col, NL_I32, 1, &len, NL_CPU) ||
        !nl_layer_buffer(&s->val, NL_F32, 1, &len, NL_CPU) ||
        !nl_layer_buffer(&s->weight, NL_F32, w->ndim, w->shape, NL_CPU))
        return nl_errcode();
    const float *p = nl_tensor_f32(w);
    int32_t *rp = nl_tensor_data(s->rowptr), *col = nl_tensor_data(s->col);
    float *val = nl_tensor_f32(s->val);
    int32_t j = 0;
    rp[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            const float v = p[r * cols + c];
            if (v == 0) continue;
            col[j] = (int32_t)c;
            val[j++] = v;
        }
        rp[r + 1] = j;
    }
    memcpy(nl_tensor_data(s->weight), p, (size_t)n * sizeof *p);
    s->nnz = nnz;
    s->built = true;
    return NL_OK;
}

nl_status nl_sparse_prepare(nl_sparse_csr *s, const nl_module *m, nl_sparse_kind kind, bool *use)
{
    *use = false;
    const nl_tensor *w = sparse_weight(m);
    const double t = sparse_threshold[kind];
    if (m->training || t < 0 || !w) return NL_OK;
    const int64_t n = nl_tensor_numel(w);
    if (n > INT32_MAX) return NL_OK; /* column indices and row pointers are i32 */
    const float *p = nl_tensor_f32(w);
    if (s->built && nl_same_shape(s->weight, w) &&
        memcmp(nl_tensor_data(s->weight), p, (size_t)n * sizeof *p) == 0) {
        *use = reaches(t, n - s->nnz, n);
        sparse_forwards += *use;
        return NL_OK;
    }
    s->built = false; /* the weight changed (or was never seen): count its nonzeros again */
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++) nnz += p[i] != 0;
    if (!reaches(t, n - nnz, n)) return NL_OK;
    nl_status st = sparse_build(s, w, nnz);
    *use = st == NL_OK;
    sparse_forwards += *use;
    return st;
}

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
        nl_tensor_f32(m->params[0].value)[r[i].at] = 0;
    }
}

/* Ranks the weights of ls[l] into r (masked ones first). */
static int64_t rank_layer(nl_module **ls, int l, ranked *r)
{
    const nl_tensor *w = ls[l]->params[0].value;
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
    for (int i = 0; i < n && st == NL_OK; i++) {
        if (!prunable(ls[i]))
            st = nl_seterr(NL_EINVAL, "prune.magnitude: %s is not a Linear or Conv2d layer",
                           ls[i]->type->name);
        else if (nl_tensor_device(ls[i]->params[0].value) != NL_CPU)
            st = nl_seterr(NL_EUNSUPPORTED, "prune.magnitude: move the network to the CPU first");
        else if (!ensure_mask(ls[i]))
            st = nl_errcode();
        if (st != NL_OK) break;
        int64_t k = nl_tensor_numel(ls[i]->params[0].value);
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

nl_status nl_prune_channels(nl_module *net, double amount, int norm, int64_t *removed)
{
    if (removed) *removed = 0;
    if (!(amount >= 0 && amount < 1))
        return nl_seterr(NL_EINVAL, "prune.channels: amount must be in [0, 1), got %g", amount);
    if (norm != 1 && norm != 2)
        return nl_seterr(NL_EINVAL, "prune.channels: the criterion must be l1 or l2 (norm 1 or 2)");
    chan_ctx c = {0};
    stream end = trace(&c, net, NULL, 0, (stream){-1, S_NONE});
    freeze(&c, end.g);
    keep_list *keeps = c.oom ? NULL : calloc((size_t)c.ng + 1, sizeof *keeps);
    nl_status st = keeps ? NL_OK : nl_seterr(NL_ENOMEM, "prune.channels: out of memory");
    for (int i = 0; i < c.nt && st == NL_OK; i++)
        if (nl_tensor_device(c.t[i].m->params[0].value) != NL_CPU)
            st = nl_seterr(NL_EUNSUPPORTED, "prune.channels: move the network to the CPU first");
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

/* ---------------------------------------------------------------- snapshots ------------- */

typedef struct {
    char name[24];
    nl_tensor *value;   /* a copy */
} snap_param;

struct nl_snapshot {
    char *arch;
    const nl_module_type *type;
    int nmodules, nparams;
    int *count;         /* parameters of each module, depth-first */
    snap_param *p;
};

typedef struct {
    nl_snapshot *s;
    nl_status st;
} snap_pass;

static void count_module(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                         const char *path NL_UNUSED, void *ctx)
{
    nl_snapshot *s = ctx;
    s->nmodules++;
    s->nparams += m->nparams;
}

static void copy_module(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                        const char *path NL_UNUSED, void *ctx)
{
    snap_pass *sp = ctx;
    nl_snapshot *s = sp->s;
    s->count[s->nmodules++] = m->nparams;
    for (int i = 0; i < m->nparams; i++) {
        snap_param *q = &s->p[s->nparams++];
        snprintf(q->name, sizeof q->name, "%s", m->params[i].name);
        if (!(q->value = nl_tensor_clone(m->params[i].value)) && sp->st == NL_OK) sp->st = nl_errcode();
    }
}

nl_snapshot *nl_snapshot_take(nl_module *net)
{
    nl_snapshot *s = calloc(1, sizeof *s);
    if (!s) {
        nl_seterr(NL_ENOMEM, "snapshot: out of memory");
        return NULL;
    }
    walk(net, NULL, 0, "", count_module, s);
    s->count = calloc((size_t)s->nmodules + 1, sizeof *s->count);
    s->p = calloc((size_t)s->nparams + 1, sizeof *s->p);
    s->arch = nl_checkpoint_arch_json(net);
    s->type = net->type;
    snap_pass sp = {s, s->count && s->p && s->arch ? NL_OK : nl_seterr(NL_ENOMEM, "snapshot: out of memory")};
    if (sp.st == NL_OK) {
        s->nmodules = s->nparams = 0;
        walk(net, NULL, 0, "", copy_module, &sp);
    }
    if (sp.st != NL_OK) {
        nl_snapshot_free(s);
        return NULL;
    }
    return s;
}

void nl_snapshot_free(nl_snapshot *s)
{
    if (!s) return;
    for (int i = 0; s->p && i < s->nparams; i++) nl_tensor_release(s->p[i].value);
    free(s->p);
    free(s->count);
    free(s->arch);
    free(s);
}

int64_t nl_snapshot_bytes(const nl_snapshot *s)
{
    int64_t b = 0;
    for (int i = 0; i < s->nparams; i++)
        b += nl_tensor_numel(s->p[i].value) * (int64_t)nl_dtype_info(s->p[i].value->dtype)->size;
    return b;
}

/* Restoring into a module tree of the snapshot's architecture: check (pass 0), then copy. */
typedef struct {
    const nl_snapshot *s;
    int module, param, pass;
    nl_status st;
} restore_pass;

static void restore_module(nl_module *m, nl_module *parent NL_UNUSED, int index NL_UNUSED,
                           const char *path NL_UNUSED, void *ctx)
{
    restore_pass *rp = ctx;
    const snap_param *saved = rp->s->p + rp->param;
    int n = rp->s->count[rp->module++];
    rp->param += n;
    if (rp->st != NL_OK) return;
    for (int i = 0; i < n && rp->st == NL_OK; i++) {
        nl_param *q = nl_module_param(m, saved[i].name);
        if (rp->pass == 0) {
            if (q && (!nl_same_shape(q->value, saved[i].value) || q->value->dtype != saved[i].value->dtype))
                rp->st = nl_seterr(NL_EINVAL, "snapshot: %s's %s changed shape", m->type->name, q->name);
        } else if (q) {
            rp->st = nl_copy(q->value, saved[i].value);
        } else {
            nl_tensor *c = nl_tensor_clone(saved[i].value);
            rp->st = c ? nl_module_add_param(m, saved[i].name, c, false) : nl_errcode();
            nl_tensor_release(c);
        }
    }
    /* Drop what the snapshot did not have (masks added since). */
    for (int i = m->nparams - 1; rp->pass == 1 && rp->st == NL_OK && i >= 0; i--) {
        bool had = false;
        for (int j = 0; j < n && !had; j++) had = strcmp(saved[j].name, m->params[i].name) == 0;
        if (!had && !m->params[i].grad) drop_param(m, i);
    }
}

static nl_status restore_into(const nl_snapshot *s, nl_module *m)
{
    restore_pass rp = {s, 0, 0, 0, NL_OK};
    walk(m, NULL, 0, "", restore_module, &rp);
    if (rp.st != NL_OK) return rp.st;
    rp = (restore_pass){s, 0, 0, 1, NL_OK};
    walk(m, NULL, 0, "", restore_module, &rp);
    return rp.st;
}

nl_status nl_snapshot_restore(const nl_snapshot *s, nl_module *net)
{
    if (net->type != s->type)
        return nl_seterr(NL_EINVAL, "restore: the snapshot is of a %s, not a %s", s->type->name,
                         net->type->name);
    char *arch = nl_checkpoint_arch_json(net);
    if (!arch) return nl_errcode();
    bool same = strcmp(arch, s->arch) == 0;
    free(arch);
    if (same) return restore_into(s, net);
    nl_module *m = nl_checkpoint_arch_build(s->arch, "snapshot");
    nl_status st = m ? restore_into(s, m) : nl_errcode();
    if (st != NL_OK) {
        nl_module_release(m);
        return st;
    }
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
