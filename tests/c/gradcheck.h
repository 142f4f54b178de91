/* gradcheck.h: finite-difference checks of backward passes, for the layer and loss tests.
 *
 * A module is checked through L = sum(y * r) for a fixed random r (handed to backward as a
 * non-contiguous view), a loss through its value. Each analytic gradient is compared with a
 * numerical one, element by element: every element of small tensors (up to GC_MAX_CHECKS, evenly
 * spread beyond). The forward runs in f32 but L is summed in double, and the derivative is the
 * Richardson extrapolation (4 D(h/2) - D(h)) / 3 of central differences
 * D(h) = (L(v + h) - L(v - h)) / ((v + h) - (v - h)), the denominator being the step actually
 * taken in f32: the truncation error is O(h^4) rather than O(h^2), so h can be large enough (the
 * default 2^-5) that f32 rounding in L hardly shows, and the checks hold to ~1e-4.
 *
 * The checked tensor may be any view (transposed, sliced, permuted, broadcast): the numerical
 * derivative is taken with respect to each storage element the view reaches, and compared with
 * the sum of the analytic gradient over the view's elements that alias it. gc_view makes such
 * views. A check also fails if the forward or backward writes into its input. */
#ifndef NL_GRADCHECK_H
#define NL_GRADCHECK_H

#include "nn.h"
#include "testhelp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef GC_MAX_CHECKS
#define GC_MAX_CHECKS 1024
#endif
#define GC_EPS 0.03125 /* 2^-5 */
/* For smooth functions that f32 evaluates with more rounding noise: batch norm's statistics,
 * the losses (the default of loss_gradcheck). */
#define GC_EPS_WIDE 0.0625

/* The scalar a check differentiates, as a function of everything the caller perturbs. */
typedef double (*gc_fn)(void *ctx);

/* Offset (in elements, from the view's first element) of element i in row-major order. */
static int64_t gc_offset(const nl_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += i % t->shape[d] * t->strides[d];
        i /= t->shape[d];
    }
    return off;
}

/* One central difference of f in the f32 value at p, over the step actually taken. */
static double gc_central(gc_fn f, void *ctx, float *p, double h)
{
    const float orig = *p, up = (float)(orig + h), down = (float)(orig - h);
    *p = up;
    double lp = f(ctx);
    *p = down;
    double lm = f(ctx);
    *p = orig;
    return (lp - lm) / ((double)up - (double)down);
}

/* Compares the analytic gradient `grad` (contiguous, value's shape) with numerical derivatives
 * of f in the elements of `value` (any f32 view). Returns the number of mismatches, recorded
 * with one CHECK; GRADCHECK_VERBOSE=1 in the environment prints each tensor's worst error. */
static int gc_compare(const char *who, const char *what, gc_fn f, void *ctx, nl_tensor *value,
                      const nl_tensor *grad, double eps, double atol, double rtol)
{
    const int64_t n = nl_tensor_numel(value);
    if (!nl_same_shape(grad, value) || !nl_tensor_is_contiguous(grad)) {
        CHECK(0, "%s: gradient of %s has the shape of the value", who, what);
        return 1;
    }
    if (n == 0) return 0;
    /* The storage elements the view reaches, with the analytic gradient summed over aliases. */
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = gc_offset(value, i);
        lo = o < lo ? o : lo;
        hi = o > hi ? o : hi;
    }
    const int64_t span = hi - lo + 1;
    double *sum = calloc((size_t)span, sizeof *sum);
    char *hit = calloc((size_t)span, 1);
    if (!sum || !hit) {
        free(sum);
        free(hit);
        CHECK(0, "gradcheck: out of memory");
        return 1;
    }
    const float *pg = nl_tensor_f32(grad);
    int64_t distinct = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = gc_offset(value, i) - lo;
        distinct += !hit[o];
        hit[o] = 1;
        sum[o] += pg[i];
    }
    float *base = nl_tensor_f32(value) + lo;
    const int64_t step = distinct > GC_MAX_CHECKS ? (distinct + GC_MAX_CHECKS - 1) / GC_MAX_CHECKS : 1;
    int bad = 0;
    double worst = 0, worst_abs = 0;
    for (int64_t o = 0, k = 0; o < span; o++) {
        if (!hit[o] || k++ % step) continue;
        const double d1 = gc_central(f, ctx, base + o, eps), d2 = gc_central(f, ctx, base + o, eps / 2);
        const double num = (4 * d2 - d1) / 3, ana = sum[o];
        const double err = fabs(num - ana), ratio = err / (atol + rtol * fabs(num));
        worst_abs = fmax(worst_abs, err);
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
        if (!(ratio <= 1)) {
            if (bad < 3)
                printf("  %s %s[%lld]: analytic %.9g, numeric %.9g\n", who, what, (long long)(o + lo),
                       ana, num);
            bad++;
        }
    }
    const char *verbose = getenv("GRADCHECK_VERBOSE");
    if (verbose && *verbose == '1')
        printf("  gradcheck %-12s %-14s %5lld elements: worst |error| %.2e, %.3f of the tolerance\n",
               who, what, (long long)distinct, worst_abs, worst);
    CHECK(bad == 0, "%s: gradient of %s matches finite differences (%d mismatches, worst %.3g of "
          "the tolerance)", who, what, bad, worst);
    free(sum);
    free(hit);
    return bad;
}

/* ---------------------------------------------------------------- views ----------------- */

typedef enum {
    GC_TRANSPOSED,    /* storage with the last two dimensions swapped, viewed transposed back */
    GC_SLICED,        /* a slice of the last dimension of a wider tensor (NaN around it) */
    GC_CHANNELS_LAST, /* storage in reversed dimension order after the first, permuted back */
    GC_BROADCAST,     /* the first sample repeated over the batch: dimension 0 has stride 0 */
    GC_STEPPED,       /* every other element of a last dimension twice as long (NaN between) */
} gc_layout;

/* A non-contiguous view with x's shape and values (for GC_BROADCAST, x's first sample's). */
static nl_tensor *gc_view(const nl_tensor *x, gc_layout how)
{
    int64_t shape[NL_MAX_DIMS];
    const int nd = x->ndim;
    memcpy(shape, x->shape, (size_t)nd * sizeof *shape);
    nl_tensor *base = NULL, *v = NULL;
    switch (how) {
    case GC_TRANSPOSED:
        shape[nd - 2] = x->shape[nd - 1];
        shape[nd - 1] = x->shape[nd - 2];
        base = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
        v = base ? nl_tensor_transpose(base, nd - 2, nd - 1) : NULL;
        break;
    case GC_SLICED:
        shape[nd - 1] += 3;
        base = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
        if (base) nl_fill(base, NAN);
        v = base ? nl_tensor_slice(base, nd - 1, 2, 2 + x->shape[nd - 1]) : NULL;
        break;
    case GC_CHANNELS_LAST: {
        int perm[NL_MAX_DIMS] = {0}, inv[NL_MAX_DIMS] = {0};
        for (int d = 1; d < nd; d++) perm[d] = nd - d; /* storage dims: 0, nd-1, ..., 1 */
        for (int d = 0; d < nd; d++) shape[d] = x->shape[perm[d]];
        for (int d = 0; d < nd; d++) inv[perm[d]] = d;
        base = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
        v = base ? nl_tensor_permute(base, inv) : NULL;
        break;
    }
    case GC_BROADCAST:
        shape[0] = 1;
        base = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
        if (base) {
            nl_tensor *first = nl_tensor_slice((nl_tensor *)x, 0, 0, 1);
            nl_copy(base, first);
            nl_tensor_release(first);
        }
        v = base ? nl_tensor_expand(base, nd, x->shape) : NULL;
        break;
    case GC_STEPPED:
        shape[nd - 1] *= 2;
        base = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
        if (base) nl_fill(base, NAN);
        v = base ? nl_tensor_slice(base, nd - 1, 0, x->shape[nd - 1]) : NULL;
        if (v) v->strides[nd - 1] = 2; /* a header of our own: no op makes this view */
        break;
    }
    if (v && how != GC_BROADCAST) nl_copy(v, x);
    nl_tensor_release(base);
    CHECK(v != NULL, "gradcheck view: %s", nl_errmsg());
    return v;
}

/* ---------------------------------------------------------------- modules --------------- */

typedef struct {
    nl_module *m;
    nl_tensor *x;        /* the input as given (any view) */
    const nl_tensor *r;  /* contiguous weights of the outputs */
    uint64_t seed;       /* non-zero: reseed before each forward (Dropout draws the same mask) */
} gc_module_ctx;

/* sum(y * r) in double. */
static double gc_module_objective(void *ctx)
{
    gc_module_ctx *c = ctx;
    nl_tensor *y = NULL;
    if (c->seed) nl_rng_seed(c->seed);
    if (nl_module_forward(c->m, c->x, &y) != NL_OK) {
        printf("gradcheck: forward failed: %s\n", nl_errmsg());
        return NAN;
    }
    nl_tensor *yc = nl_tensor_contiguous(y);
    const float *py = nl_tensor_f32(yc), *pr = nl_tensor_f32(c->r);
    double s = 0;
    for (int64_t i = 0; i < nl_tensor_numel(yc); i++) s += (double)py[i] * pr[i];
    nl_tensor_release(yc);
    nl_tensor_release(y);
    return s;
}

/* Whether a and b (same shape, any views) hold the same bits. */
static bool gc_same_values(const nl_tensor *a, const nl_tensor *b)
{
    const size_t size = nl_dtype_info(a->dtype)->size;
    const char *pa = nl_tensor_data(a), *pb = nl_tensor_data(b);
    for (int64_t i = 0; i < nl_tensor_numel(a); i++)
        if (memcmp(pa + gc_offset(a, i) * (int64_t)size, pb + gc_offset(b, i) * (int64_t)size, size))
            return false;
    return true;
}

/* Options of a check; zero fields take the defaults. */
typedef struct {
    int defaults_;    /* unused: lets gradcheck(m, x) pass no options */
    double eps;       /* step h (GC_EPS) */
    double atol, rtol;/* |numeric - analytic| <= atol + rtol |numeric| (GC_ATOL, GC_RTOL) */
    uint64_t seed;    /* as in gc_module_ctx */
    bool input_only;  /* dL/dx only: the parameter gradients are straight-through estimates */
    const char *views;/* also check at these non-contiguous views of x: 't'ransposed, 's'liced,
                       * 'c'hannels-last, 'b'roadcast, 'e'very other element (gc_layout) */
} gc_opts;

#define GC_ATOL 1e-4
#define GC_RTOL 1e-3

/* gradcheck(m, x, .eps = ..., .views = "ts", ...): checks dL/dx and every parameter gradient of
 * m at x (any f32 view), then at each view of x in .views. Returns the number of mismatches. */
#define gradcheck(m, x, ...) gradcheck_opts(m, x, &(gc_opts){.defaults_ = 0, __VA_ARGS__})

static gc_opts gc_defaults(const gc_opts *o)
{
    gc_opts d = *o;
    if (d.eps == 0) d.eps = GC_EPS;
    if (d.atol == 0) d.atol = GC_ATOL;
    if (d.rtol == 0) d.rtol = GC_RTOL;
    if (!d.views) d.views = "";
    return d;
}

static gc_layout gc_layout_of(char c)
{
    return c == 't' ? GC_TRANSPOSED : c == 's' ? GC_SLICED : c == 'c' ? GC_CHANNELS_LAST
         : c == 'b' ? GC_BROADCAST : GC_STEPPED;
}

/* The check at one input. */
static int gradcheck_at(nl_module *m, nl_tensor *x, const gc_opts *o)
{
    char who[96];
    snprintf(who, sizeof who, "%s%s", m->type->name, nl_tensor_is_contiguous(x) ? "" : " (view)");
    nl_tensor *y = NULL, *gx = NULL, *x0 = nl_tensor_clone(x);
    if (o->seed) nl_rng_seed(o->seed);
    if (nl_module_forward(m, x, &y) != NL_OK) {
        CHECK(0, "%s forward: %s", who, nl_errmsg());
        nl_tensor_release(x0);
        return 1;
    }
    /* r, and the gradient handed to backward: the same values through a transposed view. */
    nl_tensor *r = nl_tensor_empty(NL_F32, y->ndim, y->shape, NL_CPU);
    nl_rand_uniform(r, -1, 1);
    nl_tensor *gy = y->ndim >= 2 ? gc_view(r, GC_TRANSPOSED) : nl_tensor_retain(r), *gy0 = nl_tensor_clone(gy);
    nl_module_zero_grad(m);
    if (nl_module_backward(m, gy, &gx) != NL_OK) {
        CHECK(0, "%s backward: %s", who, nl_errmsg());
        nl_tensor_release(r);
        nl_tensor_release(gy);
        nl_tensor_release(gy0);
        nl_tensor_release(y);
        nl_tensor_release(x0);
        return 1;
    }
    CHECK(gc_same_values(x, x0) && gc_same_values(gy, gy0), "%s leaves its input and its output's "
          "gradient alone", who);
    int bad = 0;
    if (!nl_same_shape(gx, x)) {
        CHECK(0, "%s: grad input has the input's shape", who);
        bad++;
    }
    /* Copies of the analytic gradients: the objective's forward passes must not disturb them. */
    nl_tensor *gxc = bad ? NULL : nl_tensor_clone(gx);
    nl_param *ps[64];
    nl_tensor *gp[64] = {0};
    int np = o->input_only ? 0 : nl_module_params(m, ps, 64, false);
    np = np < 64 ? np : 64;
    for (int i = 0; i < np; i++) gp[i] = nl_tensor_clone(ps[i]->grad);
    nl_tensor_release(gx);
    nl_tensor_release(y);
    gc_module_ctx ctx = {m, x, r, o->seed};
    if (gxc) bad += gc_compare(who, "input", gc_module_objective, &ctx, x, gxc, o->eps, o->atol, o->rtol);
    for (int i = 0; i < np; i++)
        bad += gc_compare(who, ps[i]->name, gc_module_objective, &ctx, ps[i]->value, gp[i], o->eps,
                          o->atol, o->rtol);
    for (int i = 0; i < np; i++) nl_tensor_release(gp[i]);
    nl_tensor_release(gxc);
    nl_tensor_release(gy);
    nl_tensor_release(gy0);
    nl_tensor_release(r);
    nl_tensor_release(x0);
    return bad;
}

static int gradcheck_opts(nl_module *m, nl_tensor *x, const gc_opts *opts)
{
    if (!m || !x) return 1; /* construction failed: already recorded */
    const gc_opts o = gc_defaults(opts);
    int bad = gradcheck_at(m, x, &o);
    for (const char *l = o.views; *l; l++) {
        nl_tensor *v = gc_view(x, gc_layout_of(*l));
        if (!v) continue;
        CHECK(!nl_tensor_is_contiguous(v), "%s: the '%c' view is not contiguous", m->type->name, *l);
        bad += gradcheck_at(m, v, &o);
        nl_tensor_release(v);
    }
    return bad;
}

/* ---------------------------------------------------------------- losses ---------------- */

typedef struct {
    nl_loss *l;
    nl_tensor *x, *target;
    nl_tensor *batch; /* distillation: the teacher's input, set before each forward */
    double grad;
} gc_loss_ctx;

static double gc_loss_objective(void *ctx)
{
    gc_loss_ctx *c = ctx;
    double v = NAN;
    c->l->batch = c->batch;
    if (nl_loss_forward(c->l, c->x, c->target, &v) != NL_OK) {
        printf("gradcheck: loss forward failed: %s\n", nl_errmsg());
        return NAN;
    }
    return c->grad * v;
}

/* loss_gradcheck(what, l, x, target, batch, .eps = ...): compares nl_loss_backward(l, 1.7) with
 * the numerical derivative of 1.7 * loss(x, target) in x (any view; target too); batch: the
 * distillation teacher's input (NULL for the other losses). */
#define loss_gradcheck(what, l, x, target, batch, ...) \
    loss_gradcheck_opts(what, l, x, target, batch, &(gc_opts){.defaults_ = 0, __VA_ARGS__})

static inline int loss_gradcheck_opts(const char *what, nl_loss *l, nl_tensor *x, nl_tensor *target,
                                      nl_tensor *batch, const gc_opts *opts)
{
    gc_opts o = *opts;
    if (o.eps == 0) o.eps = GC_EPS_WIDE;
    o = gc_defaults(&o);
    gc_loss_ctx ctx = {l, x, target, batch, 1.7};
    nl_tensor *g = NULL, *x0 = nl_tensor_clone(x), *t0 = nl_tensor_clone(target);
    double v = gc_loss_objective(&ctx);
    CHECK(!isnan(v), "%s forward: %s", what, nl_errmsg());
    CHECK(nl_loss_backward(l, ctx.grad, &g) == NL_OK, "%s backward: %s", what, nl_errmsg());
    int bad = 1;
    if (g) {
        CHECK(gc_same_values(x, x0) && gc_same_values(target, t0), "%s leaves its input and target "
              "alone", what);
        nl_tensor *gc = nl_tensor_clone(g); /* the objective's forward passes reuse g's buffer */
        bad = gc_compare(what, "input", gc_loss_objective, &ctx, x, gc, o.eps, o.atol, o.rtol);
        nl_tensor_release(gc);
    }
    nl_tensor_release(g);
    nl_tensor_release(x0);
    nl_tensor_release(t0);
    return bad;
}

#endif
