/* prune_channels.c: structured channel pruning: whole output channels of Conv2d and Linear layers
 * are removed and the layers rebuilt smaller, with the layers that read those channels (BatchNorm,
 * the next layer, both branches of a Residual) shrunk to match. */
#include "prune.h"
#include "layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_type(const nl_module *m, const char *name) { return strcmp(m->type->name, name) == 0; }

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

/* A network on a device is pruned on the CPU and goes back (nl_prune_to_host). */
nl_status nl_prune_channels(nl_module *net, double amount, int norm, int64_t *removed)
{
    if (removed) *removed = 0;
    nl_device was;
    nl_status st = nl_prune_to_host(&net, 1, &was);
    if (st == NL_OK) st = channels_on_host(net, amount, norm, removed);
    return nl_prune_back(&net, 1, &was, st);
}
