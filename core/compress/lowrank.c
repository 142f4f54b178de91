/* lowrank.c: truncated SVD (LAPACKE_sgesdd) of Linear and Conv2d weights, replacing a layer by
 * two thinner ones: Linear(in, r) + Linear(r, out), or Conv2d(in, r, k) + Conv2d(r, out, 1). */
#include "prune.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool factorable(const nl_module *m)
{
    return strcmp(m->type->name, "Linear") == 0 || strcmp(m->type->name, "Conv2d") == 0;
}

/* The SVD of layer's weight as [rows, cols] = u diag(s) vt, u [rows, k], vt [k, cols], k the
 * smaller side. The caller frees *u, *s, *vt (one block starting at *u). */
static nl_status svd(nl_module *layer, int64_t *rows, int64_t *cols, float **u, float **s, float **vt)
{
    if (!factorable(layer))
        return nl_seterr(NL_EINVAL, "lowrank: %s is not a Linear or Conv2d layer", layer->type->name);
    nl_tensor *w = nl_tensor_host(layer->params[0].value); /* a copy of a device weight */
    if (!w) return nl_errcode();
    int64_t m = w->shape[0], n = nl_tensor_numel(w) / m, k = m < n ? m : n;
    float *block = malloc((size_t)(m * n + m * k + k + k * n) * sizeof *block);
    if (!block) {
        nl_tensor_release(w);
        return nl_seterr(NL_ENOMEM, "lowrank: out of memory");
    }
    float *a = block + m * k + k + k * n;
    memcpy(a, nl_tensor_f32(w), (size_t)(m * n) * sizeof *a);
    nl_tensor_release(w);
    *u = block;
    *s = block + m * k;
    *vt = *s + k;
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a,
                                     (lapack_int)n, *s, *u, (lapack_int)k, *vt, (lapack_int)n);
    if (info != 0) {
        free(block);
        return nl_seterr(NL_EUNSUPPORTED, "lowrank: the SVD failed (LAPACK info %d)", (int)info);
    }
    *rows = m;
    *cols = n;
    return NL_OK;
}

nl_tensor *nl_lowrank_spectrum(nl_module *layer)
{
    int64_t m, n;
    float *u, *s, *vt;
    if (svd(layer, &m, &n, &u, &s, &vt) != NL_OK) return NULL;
    int64_t k = m < n ? m : n;
    nl_tensor *t = nl_tensor_from_data(NL_F32, 1, &k, s);
    free(u);
    return t;
}

/* The rank keeping a fraction energy of the squared values s[0..k). */
static int rank_for(const float *s, int64_t k, double energy)
{
    double total = 0, sum = 0;
    for (int64_t i = 0; i < k; i++) total += (double)s[i] * s[i];
    for (int64_t i = 0; i < k; i++) {
        sum += (double)s[i] * s[i];
        if (sum >= energy * total * (1 - 1e-12)) return (int)i + 1;
    }
    return (int)(k > 0 ? k : 1);
}

int nl_lowrank_rank_for_energy(const nl_tensor *spectrum, double energy)
{
    return rank_for(nl_tensor_f32(spectrum), nl_tensor_numel(spectrum), energy);
}

/* A new module of type name with the named arguments set (the rest default). */
static nl_module *make(const char *name, const char *const *keys, const double *vals, int n)
{
    const nl_module_type *t = nl_module_type_find(name);
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    for (int i = 0; i < n; i++) args[nl_module_arg_index(t, keys[i])] = vals[i];
    return nl_module_new(t, args);
}

/* The two factors as a Sequential, from the SVD (u, s, vt) of layer's [rows, cols] weight. */
static nl_module *build(nl_module *layer, int64_t rows, int64_t cols, const float *u, const float *s,
                        const float *vt, int r)
{
    int64_t k = rows < cols ? rows : cols;
    bool conv = strcmp(layer->type->name, "Conv2d") == 0;
    const nl_param *bias = nl_module_param(layer, "bias");
    nl_rng_state rng = nl_rng_get_state(); /* initial values are overwritten */
    nl_module *first, *second;
    if (conv) {
        static const char *const k1[] = {"in", "out", "k", "stride", "padding", "bias"};
        static const char *const k2[] = {"in", "out", "k", "bias"};
        first = make("Conv2d", k1, (double[]){layer->args[0], r, layer->args[2], layer->args[3],
                                              layer->args[4], 0}, 6);
        second = make("Conv2d", k2, (double[]){r, layer->args[1], 1, bias != NULL}, 4);
    } else {
        static const char *const kl[] = {"in", "out", "bias"};
        first = make("Linear", kl, (double[]){layer->args[0], r, 0}, 3);
        second = make("Linear", kl, (double[]){r, layer->args[1], bias != NULL}, 3);
    }
    nl_module *seq = make("Sequential", NULL, NULL, 0);
    nl_rng_set_state(rng);
    nl_status st = first && second && seq ? NL_OK : nl_errcode();
    if (st == NL_OK) {
        float *a = nl_tensor_f32(first->params[0].value), *b = nl_tensor_f32(second->params[0].value);
        for (int i = 0; i < r; i++) {
            float root = sqrtf(s[i]);
            for (int64_t j = 0; j < cols; j++) a[i * cols + j] = root * vt[i * cols + j];
            for (int64_t j = 0; j < rows; j++) b[j * r + i] = u[j * k + i] * root;
        }
        if (bias) st = nl_copy(nl_module_param(second, "bias")->value, bias->value);
    }
    if (st == NL_OK) st = nl_module_add(seq, first);
    if (st == NL_OK) st = nl_module_add(seq, second);
    if (st == NL_OK && nl_module_device(layer) != NL_CPU) /* the factors live where the layer did */
        st = nl_module_to(seq, nl_module_device(layer));
    nl_module_release(first);
    nl_module_release(second);
    if (st != NL_OK) {
        nl_module_release(seq);
        return NULL;
    }
    nl_module_train(seq, layer->training);
    return seq;
}

/* Factorizes layer at rank (or energy); only_if_smaller: NULL (*out) when it would not shrink. */
static nl_status factorize(nl_module *layer, int rank, double energy, bool only_if_smaller,
                           nl_module **out)
{
    *out = NULL;
    if (rank <= 0 && !(energy > 0 && energy <= 1))
        return nl_seterr(NL_EINVAL, "lowrank: give a rank >= 1 or an energy in (0, 1], got %d and %g",
                         rank, energy);
    int64_t m, n;
    float *u, *s, *vt;
    nl_status st = svd(layer, &m, &n, &u, &s, &vt);
    if (st != NL_OK) return st;
    int64_t k = m < n ? m : n;
    int r = rank > 0 ? (int)(rank < k ? rank : k) : rank_for(s, k, energy);
    if (!only_if_smaller || (int64_t)r * (m + n) < m * n) {
        *out = build(layer, m, n, u, s, vt, r);
        if (!*out) st = nl_errcode();
    }
    free(u);
    return st;
}

nl_module *nl_lowrank_factorize_layer(nl_module *layer, int rank, double energy)
{
    nl_module *m;
    return factorize(layer, rank, energy, false, &m) == NL_OK ? m : NULL;
}

/* A replacement to make: parent's child index by m. */
typedef struct {
    nl_module *parent, *m;
    int index;
} swap;

/* Collects the replacements under c into *v (count *n, capacity *cap). */
static nl_status collect(nl_module *c, int rank, double energy, swap **v, int *n, int *cap)
{
    for (int i = 0; i < c->nchildren; i++) {
        nl_module *child = c->children[i], *f = NULL;
        nl_status st = factorable(child) ? factorize(child, rank, energy, true, &f)
                                         : collect(child, rank, energy, v, n, cap);
        if (st != NL_OK) return st;
        if (!f) continue;
        if (*n == *cap) {
            int nc = *cap ? 2 * *cap : 8;
            swap *g = realloc(*v, (size_t)nc * sizeof *g);
            if (!g) {
                nl_module_release(f);
                return nl_seterr(NL_ENOMEM, "lowrank: out of memory");
            }
            *v = g;
            *cap = nc;
        }
        (*v)[(*n)++] = (swap){c, f, i};
    }
    return NL_OK;
}

nl_status nl_lowrank_factorize(nl_module *net, int rank, double energy, int *count)
{
    *count = 0;
    swap *v = NULL;
    int n = 0, cap = 0;
    nl_status st = collect(net, rank, energy, &v, &n, &cap);
    for (int i = 0; i < n; i++) {
        if (st == NL_OK) {
            nl_module *old = v[i].parent->children[v[i].index];
            v[i].parent->children[v[i].index] = nl_module_retain(v[i].m);
            nl_module_release(old);
        }
        nl_module_release(v[i].m);
    }
    free(v);
    if (st == NL_OK) *count = n;
    return st;
}
