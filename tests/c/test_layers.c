/* test_layers.c: the module framework and the structural layers: gradients of Linear, Conv2d, the
 * pools, Flatten, Identity, Sequential and Residual (and the input gradients of QATLinear and
 * QATConv2d) against finite differences (batch 1, odd shapes, strides and padding, and inputs given
 * as non-contiguous views); convolution values against a direct loop; argument and shape errors; containers; parameter counts and initialisation;
 * reference counts and output buffer reuse. */
#include "gradcheck.h"
#include "layer.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers --------------- */

/* A module of the named type: positional arguments pos[0..npos), then (name, value) option pairs
 * ending with NULL, over the defaults. NULL (with the error set) if construction fails. */
static nl_module *try_make(const char *type, const double *pos, ...)
{
    const nl_module_type *t = nl_module_type_find(type);
    if (!t) {
        nl_seterr(NL_EINVAL, "no type %s", type);
        return NULL;
    }
    double a[NL_MAX_ARGS];
    nl_module_default_args(t, a);
    for (int i = 0; i < t->npos; i++) a[i] = pos[i];
    va_list ap;
    va_start(ap, pos);
    for (const char *name; (name = va_arg(ap, const char *));) a[nl_module_arg_index(t, name)] = va_arg(ap, double);
    va_end(ap);
    return nl_module_new(t, a);
}

/* As try_make, recording a failure. */
#define make(...) checked(try_make(__VA_ARGS__, NULL), #__VA_ARGS__)
static nl_module *checked(nl_module *m, const char *what)
{
    CHECK(m != NULL, "make(%s): %s", what, nl_errmsg());
    return m;
}
#define P(...) ((const double[]){__VA_ARGS__})

static nl_tensor *uniform(int ndim, const int64_t *shape, double lo, double hi)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_uniform(t, lo, hi);
    return t;
}

/* Distinct values 0.05 apart in a shuffled order, so a max pool has no ties, even after the
 * gradient check's +-0.01 nudges. */
static nl_tensor *distinct(int ndim, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    float *p = nl_tensor_f32(t);
    int64_t n = nl_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(0.05 * (double)i - 0.025 * (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(nl_rng_uniform01() * (double)(i + 1));
        float tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return t;
}

static nl_tensor *forward_ok(nl_module *m, nl_tensor *x)
{
    nl_tensor *y = NULL;
    nl_status st = nl_module_forward(m, x, &y);
    CHECK(st == NL_OK, "%s forward: %s", m->type->name, nl_errmsg());
    return y;
}

/* Forward must fail with code and a message containing each of the NULL-terminated strings. */
static void expect_error(nl_module *m, nl_tensor *x, nl_status code, ...)
{
    nl_tensor *y = NULL;
    nl_status st = nl_module_forward(m, x, &y);
    CHECK(st == code && y == NULL, "%s: expected status %s, got %s (%s)", m->type->name,
          nl_status_name(code), nl_status_name(st), nl_errmsg());
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *));)
        CHECK(strstr(nl_errmsg(), s) != NULL, "message '%s' mentions '%s'", nl_errmsg(), s);
    va_end(ap);
    nl_tensor_release(y);
}

/* The seed CNN: conv3-32 k3 p1, pool, conv32-64 k3 p1, pool, flatten, linear 4096 -> 10. */
static nl_module *seed_cnn(void)
{
    nl_module *net = make("Sequential", NULL);
    nl_module *parts[] = {
        make("Conv2d", P(3, 32, 3), "padding", 1.0), make("MaxPool2d", P(2)),
        make("Conv2d", P(32, 64, 3), "padding", 1.0), make("MaxPool2d", P(2)), make("Flatten", NULL),
        make("Linear", P(4096, 10)),
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        nl_module_add(net, parts[i]);
        nl_module_release(parts[i]);
    }
    return net;
}

/* ---------------------------------------------------------------- arguments ------------- */

static void test_arguments(void)
{
    static const char *const mine[] = {"Sequential", "Residual", "Linear", "Conv2d", "MaxPool2d",
                                       "AvgPool2d", "GlobalAvgPool", "Flatten", "Identity"};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        CHECK(nl_module_type_find(mine[i]) != NULL, "%s is registered", mine[i]);
    CHECK(nl_module_type_find("Conv3d") == NULL, "unknown types are not found");
    int n = 0;
    while (nl_module_types[n]) n++;
    CHECK(n >= 9, "the type list ends with NULL after every type (%d)", n);

    struct { const char *type; const double *pos; const char *opt; double v; const char *msg; } bad[] = {
        {"Conv2d", P(3, 4, 0), NULL, 0, "Conv2d: k must be a whole number >= 1, got 0"},
        {"Conv2d", P(3, 4, 2.5), NULL, 0, "Conv2d: k must be a whole number >= 1, got 2.5"},
        {"Conv2d", P(3, 4, 3), "padding", -1, "Conv2d: padding must be a whole number >= 0, got -1"},
        {"Conv2d", P(3, 4, 3), "stride", 0, "Conv2d: stride must be a whole number >= 1, got 0"},
        {"Linear", P(3, 4), "bias", 2, "Linear: bias must be true or false, got 2"},
        {"Linear", P(NAN, 4), NULL, 0, "Linear: in is required"},
        {"Conv2d", P(3, 4, 3), "padding", NAN, "Conv2d: padding must be a whole number >= 0, got nan"},
        {"Linear", P(3e10, 4), NULL, 0, "Linear: in = 3e+10 is too large"},
        {"MaxPool2d", P(3), "padding", 2, "MaxPool2d: padding must be at most half the kernel size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nl_module *m = bad[i].opt ? try_make(bad[i].type, bad[i].pos, bad[i].opt, bad[i].v, NULL)
                                  : try_make(bad[i].type, bad[i].pos, NULL);
        CHECK(m == NULL && nl_errcode() == NL_EINVAL, "%s rejected", bad[i].msg);
        CHECK(strncmp(nl_errmsg(), bad[i].msg, strlen(bad[i].msg)) == 0, "message '%s' starts '%s'",
              nl_errmsg(), bad[i].msg);
        nl_module_release(m);
    }

    nl_module *mp = make("MaxPool2d", P(3));
    CHECK(mp && mp->args[nl_module_arg_index(mp->type, "stride")] == 3, "a pool's stride defaults to k");
    nl_module *ap = make("AvgPool2d", P(3), "stride", 1.0);
    CHECK(ap && ap->args[1] == 1, "an explicit stride is kept");
    CHECK(nl_module_arg_index(nl_module_type_find("Conv2d"), "padding") == 4, "arg index by name");
    CHECK(nl_module_arg_index(nl_module_type_find("Conv2d"), "dilation") == -1, "unknown arg: -1");
    nl_module *id = nl_module_new(nl_module_type_find("Identity"), NULL);
    CHECK(id != NULL, "NULL args mean the defaults");

    char buf[512];
    nl_module *c = make("Conv2d", P(3, 32, 3), "padding", 1.0);
    nl_module_repr(c, buf, sizeof buf);
    CHECK(strcmp(buf, "Conv2d(3, 32, k=3, stride=1, padding=1)") == 0, "repr: %s", buf);
    nl_module *l = make("Linear", P(4, 2), "bias", 0.0);
    nl_module_repr(l, buf, sizeof buf);
    CHECK(strcmp(buf, "Linear(4, 2, bias=false)") == 0, "repr: %s", buf);
    nl_module_repr(mp, buf, sizeof buf);
    CHECK(strcmp(buf, "MaxPool2d(3, stride=3)") == 0, "repr: %s", buf);
    nl_module *seq = make("Sequential", NULL);
    nl_module_add(seq, c);
    nl_module_add(seq, mp);
    nl_module_repr(seq, buf, sizeof buf);
    CHECK(strcmp(buf, "Sequential(\n  (1): Conv2d(3, 32, k=3, stride=1, padding=1)\n"
                      "  (2): MaxPool2d(3, stride=3)\n)") == 0, "repr: %s", buf);
    nl_module_repr(seq, buf, 12);
    CHECK(strlen(buf) == 11, "repr truncates to the buffer (%s)", buf);
    nl_module_release(seq);
    nl_module_release(c);
    nl_module_release(l);
    nl_module_release(mp);
    nl_module_release(ap);
    nl_module_release(id);
}

/* ---------------------------------------------------------------- gradients ------------- */

static void test_linear_gradients(void)
{
    nl_module *a = make("Linear", P(5, 3));
    nl_tensor *x2 = uniform(2, (int64_t[]){4, 5}, -1, 1), *x3 = uniform(3, (int64_t[]){2, 3, 5}, -1, 1);
    gradcheck(a, x2, .views = "tsbe");
    gradcheck(a, x3, .views = "tscbe");
    nl_module *b = make("Linear", P(5, 3), "bias", 0.0);
    CHECK(b && b->nparams == 1 && !nl_module_param(b, "bias"), "Linear without bias has one parameter");
    gradcheck(b, x2, .views = "t");
    /* Batch 1, and odd sizes: one output, 7 features, 3 samples. */
    nl_tensor *x1 = uniform(2, (int64_t[]){1, 5}, -1, 1), *x7 = uniform(2, (int64_t[]){3, 7}, -1, 1),
              *x13 = uniform(3, (int64_t[]){1, 1, 5}, -1, 1);
    gradcheck(a, x1, .views = "e");
    gradcheck(b, x1, .views = "e");
    gradcheck(a, x13, .views = "e");
    nl_module *c = make("Linear", P(7, 1));
    gradcheck(c, x7, .views = "tsbe");
    nl_module_release(c);
    nl_tensor_release(x1);
    nl_tensor_release(x7);
    nl_tensor_release(x13);

    /* y = x W^T + b by hand. */
    nl_tensor *y = forward_ok(a, x2);
    const float *px = nl_tensor_f32(x2), *pw = nl_tensor_f32(a->params[0].value),
                *pb = nl_tensor_f32(a->params[1].value);
    double worst = 0;
    for (int i = 0; i < 4; i++)
        for (int o = 0; o < 3; o++) {
            double s = pb[o];
            for (int k = 0; k < 5; k++) s += (double)px[i * 5 + k] * pw[o * 5 + k];
            worst = fmax(worst, fabs(s - nl_tensor_f32(y)[i * 3 + o]));
        }
    CHECK(worst < 1e-5, "Linear matches x W^T + b (worst %g)", worst);
    nl_tensor_release(y);
    nl_tensor_release(x2);
    nl_tensor_release(x3);
    nl_module_release(a);
    nl_module_release(b);
}

/* y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x[n,c,i*s-p+u,j*s-p+v] by direct loops. */
static void naive_conv(const nl_tensor *x, const nl_tensor *w, const nl_tensor *b, int s, int p,
                       nl_tensor *y)
{
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = w->shape[0], K = w->shape[2], OH = y->shape[2], OW = y->shape[3];
    const float *px = nl_tensor_f32(x), *pw = nl_tensor_f32(w);
    float *py = nl_tensor_f32(y);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < OH; i++)
                for (int64_t j = 0; j < OW; j++) {
                    double sum = b ? nl_tensor_f32(b)[o] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t u = 0; u < K; u++)
                            for (int64_t v = 0; v < K; v++) {
                                int64_t hi = i * s - p + u, wi = j * s - p + v;
                                if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                                sum += (double)pw[((o * C + c) * K + u) * K + v] *
                                       px[((n * C + c) * H + hi) * W + wi];
                            }
                    py[((n * O + o) * OH + i) * OW + j] = (float)sum;
                }
}

/* Each case is checked at a contiguous input and at the non-contiguous views in `views`
 * (gradcheck.h's letters); batch 1, strides 2 and 3, padding beyond the kernel's half, 1x1
 * kernels, single rows and single channels among them. */
static void test_conv(void)
{
    struct { int64_t n, c, o, h, w, k, s, p; bool bias; const char *views; } cases[] = {
        {1, 3, 4, 7, 5, 3, 1, 0, true, "tsce"},  {3, 3, 4, 7, 5, 3, 1, 1, true, "tscbe"},
        {3, 3, 4, 7, 5, 3, 2, 2, false, "tscbe"}, {1, 3, 4, 7, 5, 3, 2, 0, false, "tce"},
        {3, 3, 4, 8, 8, 3, 2, 1, true, "tscbe"},  {2, 2, 3, 6, 9, 1, 1, 0, true, "tcbe"},
        {2, 3, 2, 5, 7, 5, 3, 2, true, "tsce"},   {1, 1, 1, 3, 3, 3, 1, 2, true, "tce"},
        {2, 3, 2, 6, 7, 5, 1, 2, true, "cb"},     {1, 2, 3, 1, 4, 3, 1, 1, false, "ce"},
        {1, 1, 2, 1, 5, 3, 2, 1, true, "e"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_module *m = make("Conv2d", P((double)cases[i].c, (double)cases[i].o, (double)cases[i].k),
                            "stride", (double)cases[i].s, "padding", (double)cases[i].p, "bias",
                            cases[i].bias ? 1.0 : 0.0);
        if (!m) continue;
        nl_tensor *x = uniform(4, (int64_t[]){cases[i].n, cases[i].c, cases[i].h, cases[i].w}, -1, 1);
        nl_tensor *y = forward_ok(m, x);
        if (y) {
            nl_param *b = nl_module_param(m, "bias");
            CHECK((b != NULL) == cases[i].bias, "bias parameter present when asked");
            nl_tensor *ref = nl_tensor_empty_like(y);
            naive_conv(x, m->params[0].value, b ? b->value : NULL, (int)cases[i].s, (int)cases[i].p, ref);
            int64_t oh = (cases[i].h + 2 * cases[i].p - cases[i].k) / cases[i].s + 1;
            CHECK(y->shape[2] == oh, "case %zu: output height %lld", i, (long long)y->shape[2]);
            double worst = 0;
            for (int64_t e = 0; e < nl_tensor_numel(y); e++)
                worst = fmax(worst, fabs(nl_tensor_f32(y)[e] - nl_tensor_f32(ref)[e]));
            CHECK(worst < 1e-5, "case %zu: Conv2d matches the direct loop (worst %g)", i, worst);
            nl_tensor_release(ref);
        }
        nl_tensor_release(y);
        gradcheck(m, x, .views = cases[i].views);
        nl_tensor_release(x);
        nl_module_release(m);
    }
}

static void test_pools(void)
{
    /* Strided windows (stride 2 and 3, overlapping or not, windows that leave rows over), stride
     * 1, padding; batch 1 and odd sizes; contiguous inputs and views. */
    const int64_t s1[4] = {2, 3, 6, 5}, s2[4] = {1, 2, 7, 7}, s3[4] = {3, 1, 5, 7}, s4[4] = {1, 3, 9, 4};
    struct { const char *type; double k, s, p; const int64_t *shape; const char *views; } cases[] = {
        {"MaxPool2d", 2, 2, 0, s1, "tscbe"}, {"MaxPool2d", 3, 2, 1, s1, "tscbe"},
        {"MaxPool2d", 3, 1, 1, s2, "tce"},   {"MaxPool2d", 3, 2, 0, s3, "tsbe"},
        {"MaxPool2d", 2, 3, 1, s4, "tsce"},  {"AvgPool2d", 2, 2, 0, s1, "tscbe"},
        {"AvgPool2d", 3, 2, 1, s1, "tscbe"}, {"AvgPool2d", 3, 1, 1, s2, "tce"},
        {"AvgPool2d", 3, 2, 0, s3, "tsbe"},  {"AvgPool2d", 2, 3, 1, s4, "tsce"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_module *m = make(cases[i].type, P(cases[i].k), "stride", cases[i].s, "padding", cases[i].p);
        nl_tensor *x = distinct(4, cases[i].shape);
        gradcheck(m, x, .views = cases[i].views);
        nl_tensor_release(x);
        nl_module_release(m);
    }

    /* AvgPool with padding divides by k*k: the corner window of a 3x3 pool (padding 1) over ones
     * covers 4 ones and 5 zeros. */
    nl_module *avg = make("AvgPool2d", P(3), "stride", 1.0, "padding", 1.0);
    nl_tensor *ones = nl_tensor_empty(NL_F32, 4, (int64_t[]){1, 1, 4, 4}, NL_CPU);
    nl_fill(ones, 1);
    nl_tensor *y = forward_ok(avg, ones);
    CHECK(y && y->shape[2] == 4, "AvgPool2d keeps 4x4 with k=3, padding 1");
    if (y) {
        CHECK_CLOSE(nl_tensor_f32(y)[0], 4.0 / 9, 1e-6, 0);
        CHECK_CLOSE(nl_tensor_f32(y)[1], 6.0 / 9, 1e-6, 0);
        CHECK_CLOSE(nl_tensor_f32(y)[5], 1.0, 1e-6, 0);
    }
    nl_tensor_release(y);

    /* Max pool ties go to the first position; in evaluation mode backward still works. */
    nl_module *mx = make("MaxPool2d", P(2));
    for (int train = 1; train >= 0; train--) {
        nl_module_train(mx, train);
        y = forward_ok(mx, ones);
        nl_tensor *gy = nl_tensor_empty_like(y), *gx = NULL;
        nl_fill(gy, 1);
        CHECK(nl_module_backward(mx, gy, &gx) == NL_OK, "max pool backward (%s)", nl_errmsg());
        if (gx) {
            const float *g = nl_tensor_f32(gx);
            CHECK(g[0] == 1 && g[1] == 0 && g[4] == 0 && g[5] == 0 && g[2] == 1 && g[10] == 1,
                  "ties send the gradient to the window's first position (training %d)", train);
        }
        nl_tensor_release(gx);
        nl_tensor_release(gy);
        nl_tensor_release(y);
    }
    /* NaN wins a max window, as in PyTorch. */
    nl_tensor_f32(ones)[5] = NAN;
    y = forward_ok(mx, ones);
    CHECK(y && isnan(nl_tensor_f32(y)[0]) && nl_tensor_f32(y)[1] == 1, "NaN propagates through max");
    nl_tensor_release(y);

    nl_module *gap = make("GlobalAvgPool", NULL);
    nl_tensor *x = uniform(4, (int64_t[]){2, 3, 4, 5}, -1, 1), *x1 = uniform(4, (int64_t[]){1, 5, 3, 1}, -1, 1);
    gradcheck(gap, x, .views = "tscbe");
    gradcheck(gap, x1, .views = "sc");
    nl_tensor_release(x1);
    y = forward_ok(gap, x);
    if (y) {
        double s = 0;
        for (int i = 0; i < 20; i++) s += nl_tensor_f32(x)[20 + i];
        CHECK(y->ndim == 2 && y->shape[1] == 3, "GlobalAvgPool gives [N, C]");
        CHECK_CLOSE(nl_tensor_f32(y)[1], s / 20, 1e-6, 0);
    }
    nl_tensor_release(y);
    nl_tensor_release(x);
    nl_tensor_release(ones);
    nl_module_release(gap);
    nl_module_release(mx);
    nl_module_release(avg);
}

static void test_shape_layers(void)
{
    nl_module *f = make("Flatten", NULL), *id = make("Identity", NULL);
    nl_tensor *x = uniform(4, (int64_t[]){2, 3, 4, 5}, -1, 1);
    nl_tensor *y = forward_ok(f, x);
    CHECK(y && y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 60, "Flatten gives [2, 60]");
    CHECK(y && y->storage == x->storage, "Flatten is a view (no copy)");
    nl_tensor_release(y);
    gradcheck(f, x, .views = "tscbe");
    gradcheck(id, x, .views = "tscbe");
    nl_tensor *x1 = uniform(3, (int64_t[]){1, 7, 3}, -1, 1);
    gradcheck(f, x1, .views = "tse");
    gradcheck(id, x1, .views = "tse");
    nl_tensor_release(x1);
    y = forward_ok(id, x);
    CHECK(y == x, "Identity returns its input");
    nl_tensor_release(y);
    /* A non-contiguous input is made contiguous before the layer sees it. */
    nl_tensor *t = nl_tensor_transpose(x, 2, 3);
    y = forward_ok(f, t);
    double v = 0;
    nl_tensor_get(t, (int64_t[]){1, 2, 3, 1}, &v);
    CHECK(y && nl_tensor_f32(y)[60 + 2 * 20 + 3 * 4 + 1] == (float)v, "Flatten of a transposed view");
    nl_tensor_release(y);
    nl_tensor_release(t);
    nl_tensor_release(x);
    nl_module_release(f);
    nl_module_release(id);
}

static void test_containers_gradients(void)
{
    nl_module *seq = make("Sequential", NULL);
    nl_module *parts[] = {
        make("Conv2d", P(3, 4, 3), "padding", 1.0), make("AvgPool2d", P(2)), make("Identity", NULL),
        make("Conv2d", P(4, 2, 3), "stride", 2.0, "padding", 1.0), make("Flatten", NULL),
        make("Linear", P(2 * 2 * 2, 5)),
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        CHECK(nl_module_add(seq, parts[i]) == NL_OK, "add: %s", nl_errmsg());
        nl_module_release(parts[i]);
    }
    nl_tensor *x = uniform(4, (int64_t[]){2, 3, 6, 6}, -1, 1), *x1 = uniform(4, (int64_t[]){1, 3, 6, 7}, -1, 1);
    gradcheck(seq, x, .views = "tcb");
    gradcheck(seq, x1, .views = "s");
    CHECK(nl_module_params(seq, NULL, 0, false) == 6, "Sequential lists 6 parameters");
    nl_tensor_release(x);
    nl_tensor_release(x1);
    nl_module_release(seq);

    /* A MaxPool2d after a ReLU runs the ReLU's backward in its own pass. The values are 0.05
     * apart and at least 0.0125 from 0, the steps at most 2^-7: no nudge crosses a kink. */
    seq = make("Sequential", NULL);
    nl_module *rp[] = {make("ReLU", NULL), make("MaxPool2d", P(3), "stride", 2.0, "padding", 1.0)};
    for (int i = 0; i < 2; i++) {
        nl_module_add(seq, rp[i]);
        nl_module_release(rp[i]);
    }
    x = distinct(4, (int64_t[]){3, 2, 5, 6});
    for (int64_t i = 0; i < nl_tensor_numel(x); i++) nl_tensor_f32(x)[i] += 0.0125f;
    gradcheck(seq, x, .eps = 0.0078125, .views = "tscbe");
    CHECK(nl_maxpool_after_relu(seq->children[1], seq->children[0]), "the fused backward ran");
    nl_tensor_release(x);
    nl_module_release(seq);

    nl_module *res = make("Residual", NULL), *conv = make("Conv2d", P(3, 3, 3), "padding", 1.0);
    nl_module_add(res, conv);
    x = uniform(4, (int64_t[]){2, 3, 5, 4}, -1, 1);
    gradcheck(res, x, .views = "tscbe");
    /* A block of conv, batch norm (training) and a smooth activation, at batch 1 and at 3. */
    nl_module *block = make("Residual", NULL);
    nl_module *bparts[] = {make("Conv2d", P(3, 3, 3), "padding", 1.0), make("BatchNorm2d", P(3)),
                           make("Tanh", NULL), make("Conv2d", P(3, 3, 1), "bias", 0.0)};
    for (int i = 0; i < 4; i++) {
        nl_module_add(block, bparts[i]);
        nl_module_release(bparts[i]);
    }
    nl_tensor *xb1 = uniform(4, (int64_t[]){1, 3, 5, 3}, -1, 1), *xb3 = uniform(4, (int64_t[]){3, 3, 3, 5}, -1, 1);
    gradcheck(block, xb1, .views = "tce");
    gradcheck(block, xb3, .views = "s");
    nl_tensor_release(xb1);
    nl_tensor_release(xb3);
    nl_module_release(block);
    /* y = conv(x) + x */
    nl_tensor *y = forward_ok(res, x), *cy = forward_ok(conv, x);
    double worst = 0;
    for (int64_t i = 0; y && cy && i < nl_tensor_numel(y); i++)
        worst = fmax(worst, fabs(nl_tensor_f32(y)[i] - nl_tensor_f32(cy)[i] - nl_tensor_f32(x)[i]));
    CHECK(y && cy && worst < 1e-6, "Residual adds its input (worst %g)", worst);
    nl_tensor_release(y);
    nl_tensor_release(cy);
    /* Residual around nothing but Identity: the gradient is 2 gy and gy is left alone. */
    nl_module *res2 = make("Residual", NULL), *idm = make("Identity", NULL);
    nl_module_add(res2, idm);
    y = forward_ok(res2, x);
    nl_tensor *gy = nl_tensor_empty_like(y), *gx = NULL;
    nl_fill(gy, 1);
    CHECK(nl_module_backward(res2, gy, &gx) == NL_OK && gx && nl_tensor_f32(gx)[3] == 2 &&
              nl_tensor_f32(gy)[3] == 1, "Residual(Identity) backward is 2 gy, gy untouched");
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    nl_tensor_release(y);
    nl_tensor_release(x);
    nl_module_release(idm);
    nl_module_release(res2);
    nl_module_release(conv);
    nl_module_release(res);
}

/* The quantization-aware layers run the float layer on fake-quantized weights: dL/dx is that
 * layer's (the weight gradient is a straight-through estimate, not a derivative). */
static void test_qat_input_gradients(void)
{
    nl_module *lin = make("QATLinear", P(5, 3)), *conv = make("QATConv2d", P(2, 3, 3), "stride", 2.0,
                                                               "padding", 1.0, "bits", 4.0);
    nl_tensor *x2 = uniform(2, (int64_t[]){3, 5}, -1, 1), *x1 = uniform(2, (int64_t[]){1, 5}, -1, 1);
    nl_tensor *x4 = uniform(4, (int64_t[]){2, 2, 5, 4}, -1, 1);
    gradcheck(lin, x2, .input_only = true, .views = "tsbe");
    gradcheck(lin, x1, .input_only = true, .views = "e");
    gradcheck(conv, x4, .input_only = true, .views = "tscbe");
    nl_tensor_release(x1);
    nl_tensor_release(x2);
    nl_tensor_release(x4);
    nl_module_release(lin);
    nl_module_release(conv);
}

/* Parameter gradients add up over backward calls until zero_grad. */
static void test_gradient_accumulation(void)
{
    nl_module *net = make("Sequential", NULL);
    nl_module *parts[] = {make("Conv2d", P(2, 3, 3), "padding", 1.0), make("Flatten", NULL),
                          make("Linear", P(3 * 4 * 4, 2))};
    for (int i = 0; i < 3; i++) {
        nl_module_add(net, parts[i]);
        nl_module_release(parts[i]);
    }
    nl_tensor *x = uniform(4, (int64_t[]){2, 2, 4, 4}, -1, 1), *y = forward_ok(net, x);
    nl_tensor *gy = y ? uniform(y->ndim, y->shape, -1, 1) : NULL, *gx = NULL;
    nl_param *ps[4];
    int n = nl_module_params(net, ps, 4, false);
    nl_tensor *once[4] = {0};
    nl_module_zero_grad(net);
    for (int pass = 0; gy && pass < 2; pass++) {
        CHECK(nl_module_backward(net, gy, &gx) == NL_OK, "backward: %s", nl_errmsg());
        nl_tensor_release(gx);
        for (int i = 0; pass == 0 && i < n; i++) once[i] = nl_tensor_clone(ps[i]->grad);
    }
    for (int i = 0; i < n && gy; i++) {
        double worst = 0;
        for (int64_t e = 0; e < nl_tensor_numel(once[i]); e++)
            worst = fmax(worst, fabs(nl_tensor_f32(ps[i]->grad)[e] - 2 * nl_tensor_f32(once[i])[e]));
        CHECK(worst < 1e-5, "param %d: two backward passes give twice the gradient (%g)", i, worst);
        nl_tensor_release(once[i]);
    }
    nl_tensor_release(gy);
    nl_tensor_release(y);
    nl_tensor_release(x);
    nl_module_release(net);
}

/* backward(gy, NULL) adds the same parameter gradients without computing dL/dx. */
static void test_parameter_only_backward(void)
{
    nl_module *net = seed_cnn();
    nl_tensor *img = uniform(4, (int64_t[]){2, 3, 32, 32}, -1, 1), *y = forward_ok(net, img);
    nl_tensor *gy = y ? uniform(2, y->shape, -1, 1) : NULL, *gx = NULL;
    nl_param *ps[8];
    int n = nl_module_params(net, ps, 8, false);
    nl_tensor *full[8] = {0};
    nl_module_zero_grad(net);
    CHECK(gy && nl_module_backward(net, gy, &gx) == NL_OK && gx, "backward with dL/dx");
    for (int i = 0; i < n; i++) full[i] = nl_tensor_clone(ps[i]->grad);
    nl_module_zero_grad(net);
    CHECK(gy && nl_module_backward(net, gy, NULL) == NL_OK, "backward without dL/dx: %s", nl_errmsg());
    for (int i = 0; i < n; i++) {
        CHECK(memcmp(nl_tensor_f32(full[i]), nl_tensor_f32(ps[i]->grad),
                     (size_t)nl_tensor_numel(full[i]) * sizeof(float)) == 0,
              "param %d: the same gradient without dL/dx", i);
        nl_tensor_release(full[i]);
    }
    /* On their own: a type that always computes dL/dx (the core drops it), Residual, Linear. */
    nl_module *res = make("Residual", NULL), *conv = make("Conv2d", P(4, 4, 1));
    nl_module_add(res, conv);
    nl_module *parts[] = {make("MaxPool2d", P(2)), res, make("Linear", P(3, 4))};
    nl_tensor *in = uniform(4, (int64_t[]){2, 4, 3, 3}, -1, 1);
    for (int i = 0; i < 3; i++) {
        nl_tensor *o = forward_ok(parts[i], in), *g = o ? uniform(o->ndim, o->shape, -1, 1) : NULL;
        CHECK(g && nl_module_backward(parts[i], g, NULL) == NL_OK, "%s backward without dL/dx",
              parts[i]->type->name);
        nl_tensor_release(g);
        nl_tensor_release(o);
        nl_module_release(parts[i]);
    }
    nl_tensor_release(in);
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    nl_tensor_release(y);
    nl_tensor_release(img);
    nl_module_release(conv);
    nl_module_release(net);
}

/* An empty batch goes through every layer and back (PyTorch allows it too). */
static void test_empty_batch(void)
{
    nl_module *net = seed_cnn();
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, (int64_t[]){0, 3, 32, 32}, NL_CPU), *y = forward_ok(net, x);
    CHECK(y && y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 10, "[0, 3, 32, 32] -> [0, 10]");
    nl_tensor *gx = NULL;
    nl_module_zero_grad(net);
    CHECK(y && nl_module_backward(net, y, &gx) == NL_OK && gx && gx->shape[0] == 0,
          "empty backward: %s", nl_errmsg());
    nl_param *ps[8];
    int n = nl_module_params(net, ps, 8, false);
    bool zero = true;
    for (int i = 0; i < n; i++)
        for (int64_t e = 0; e < nl_tensor_numel(ps[i]->grad); e++) zero = zero && nl_tensor_f32(ps[i]->grad)[e] == 0;
    CHECK(zero, "an empty batch adds nothing to the gradients");
    nl_tensor_release(gx);
    nl_tensor_release(y);
    nl_tensor_release(x);
    nl_module_release(net);
}

/* ---------------------------------------------------------------- errors ---------------- */

static void test_shape_errors(void)
{
    nl_module *conv = make("Conv2d", P(3, 4, 3)), *conv5 = make("Conv2d", P(3, 4, 5), "padding", 0.0);
    nl_module *lin = make("Linear", P(5, 2));
    nl_tensor *x4 = uniform(4, (int64_t[]){2, 4, 8, 8}, -1, 1), *x3 = uniform(4, (int64_t[]){1, 3, 3, 3}, -1, 1);
    nl_tensor *x6 = uniform(2, (int64_t[]){2, 6}, -1, 1), *v = uniform(3, (int64_t[]){3, 8, 8}, -1, 1);
    expect_error(conv, x4, NL_ESHAPE, "Conv2d: input has 4 channels, expected 3 (input [2, 4, 8, 8])", NULL);
    expect_error(conv5, x3, NL_ESHAPE, "Conv2d", "smaller than the 5x5 kernel", "[1, 3, 3, 3]", NULL);
    expect_error(conv, v, NL_ESHAPE, "Conv2d", "4-D", "[3, 8, 8]", NULL);
    expect_error(lin, x6, NL_ESHAPE, "Linear: input has 6 features, expected 5 (input [2, 6])", NULL);

    /* In a container the message says which layer failed. */
    nl_module *seq = make("Sequential", NULL), *flat = make("Flatten", NULL);
    nl_module_add(seq, flat);
    nl_module_add(seq, lin);
    expect_error(seq, x3, NL_ESHAPE, "Linear: input has 27 features, expected 5", "(layer 2 of Sequential)", NULL);
    nl_module *res = make("Residual", NULL), *widen = make("Conv2d", P(3, 4, 3), "padding", 1.0);
    nl_module_add(res, widen);
    expect_error(res, x3, NL_ESHAPE, "Residual: the block's output [1, 4, 3, 3] differs from its input [1, 3, 3, 3]", NULL);

    nl_tensor *xi = nl_tensor_zeros(NL_I32, 4, (int64_t[]){1, 3, 3, 3}, NL_CPU);
    expect_error(conv, xi, NL_ETYPE, "Conv2d: input must be f32, got i32", NULL);

    /* backward needs a forward, and a gradient of the output's shape. */
    nl_module *fresh = make("Conv2d", P(3, 4, 3));
    nl_tensor *gx = NULL;
    CHECK(nl_module_backward(fresh, x3, &gx) == NL_EINVAL && strstr(nl_errmsg(), "before"),
          "backward before forward: %s", nl_errmsg());
    nl_tensor *y = forward_ok(fresh, x3);
    CHECK(nl_module_backward(fresh, x3, &gx) == NL_ESHAPE &&
              strstr(nl_errmsg(), "Conv2d: gradient has shape [1, 3, 3, 3], expected the output's shape [1, 4, 1, 1]"),
          "gradient shape: %s", nl_errmsg());
    /* A rejected input leaves the last forward's state as it was. */
    expect_error(fresh, x4, NL_ESHAPE, "channels", NULL);
    nl_tensor *gy = nl_tensor_empty_like(y);
    nl_fill(gy, 1);
    CHECK(fresh->input == x3 && nl_module_backward(fresh, gy, &gx) == NL_OK && gx &&
              nl_same_shape(gx, x3), "backward still follows the last good forward");
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    nl_tensor_release(y);

    /* Ctrl-C: forward returns NL_EINTR before running. */
    nl_interrupt();
    expect_error(seq, x3, NL_EINTR, "interrupted", NULL);
    nl_interrupt_clear();

    CHECK(nl_module_to(fresh, NL_CPU) == NL_OK, "to(cpu) on cpu is a no-op");
    CHECK(nl_module_to(fresh, NL_DEVICE_COUNT) != NL_OK, "to(an unknown device) fails");

    nl_tensor_release(xi);
    nl_tensor_release(x4);
    nl_tensor_release(x3);
    nl_tensor_release(x6);
    nl_tensor_release(v);
    nl_module_release(fresh);
    nl_module_release(widen);
    nl_module_release(res);
    nl_module_release(flat);
    nl_module_release(seq);
    nl_module_release(conv);
    nl_module_release(conv5);
    nl_module_release(lin);
}

/* ---------------------------------------------------------------- containers ------------ */

static void test_container_edits(void)
{
    nl_module *seq = make("Sequential", NULL);
    nl_module *a = make("Linear", P(4, 4)), *b = make("Identity", NULL), *c = make("Flatten", NULL);
    CHECK(nl_module_add(seq, a) == NL_OK && nl_module_add(seq, c) == NL_OK, "add");
    CHECK(nl_module_insert(seq, 1, b) == NL_OK, "insert in the middle");
    CHECK(seq->nchildren == 3 && seq->children[0] == a && seq->children[1] == b && seq->children[2] == c,
          "insert keeps the order");
    CHECK(a->refcount == 2, "the container holds a reference (%d)", a->refcount);
    CHECK(nl_module_insert(seq, 4, b) == NL_EINVAL, "insert past the end is refused");
    CHECK(nl_module_remove(seq, 3) == NL_EINVAL && strstr(nl_errmsg(), "out of range"), "remove out of range");
    CHECK(nl_module_remove(seq, 0) == NL_OK && seq->nchildren == 2 && seq->children[0] == b &&
              a->refcount == 1, "remove the first drops its reference");
    CHECK(nl_module_add(a, b) == NL_EINVAL && strstr(nl_errmsg(), "Linear: not a container"),
          "a Linear holds no modules: %s", nl_errmsg());
    CHECK(nl_module_add(seq, seq) == NL_EINVAL, "a container cannot hold itself");
    nl_module *outer = make("Sequential", NULL);
    nl_module_add(outer, seq);
    CHECK(nl_module_add(seq, outer) == NL_EINVAL, "nor a module that contains it");
    CHECK(nl_module_insert(seq, 0, a) == NL_OK && seq->children[0] == a, "insert at the front");

    nl_module_train(outer, false);
    CHECK(!outer->training && !seq->training && !a->training, "eval is recursive");
    nl_module_train(outer, true);
    CHECK(a->training, "train is recursive");

    /* zero_grad and params reach the children. */
    nl_fill(a->params[0].grad, 3);
    CHECK(nl_module_zero_grad(outer) == NL_OK && nl_tensor_f32(a->params[0].grad)[5] == 0, "zero_grad");
    nl_param *ps[4];
    CHECK(nl_module_params(outer, ps, 4, false) == 2 && ps[0] == &a->params[0] && ps[1] == &a->params[1],
          "params depth-first");
    CHECK(nl_module_params(outer, ps, 1, false) == 2, "params counts past max");
    nl_module_release(a);
    nl_module_release(b);
    nl_module_release(c);
    nl_module_release(seq);
    nl_module_release(outer); /* frees everything: ASan reports any leak */
}

static void test_params_and_init(void)
{
    nl_module *net = seed_cnn();
    nl_param *ps[8];
    int n = nl_module_params(net, ps, 8, true);
    int64_t total = 0;
    for (int i = 0; i < n && i < 8; i++) total += nl_tensor_numel(ps[i]->value);
    CHECK(n == 6, "seed CNN has 6 parameter tensors (%d)", n);
    CHECK(total == 3 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 4096 * 10 + 10 && total == 60362,
          "seed CNN has 60,362 parameters (%lld)", (long long)total);
    CHECK(strcmp(ps[0]->name, "weight") == 0 && ps[0]->value->shape[0] == 32 && ps[0]->value->shape[1] == 3,
          "conv weight is [out, in, k, k]");
    int nd;
    int64_t out[NL_MAX_DIMS], macs;
    CHECK(nl_module_infer(net, 4, (int64_t[]){64, 3, 32, 32}, &nd, out, &macs) == NL_OK && nd == 2 &&
              out[0] == 64 && out[1] == 10, "infer: [64, 3, 32, 32] -> [64, 10]");
    CHECK(macs == 64LL * (32 * 1024 * 27 + 64 * 256 * 288 + 4096 * 10), "infer counts MACs (%lld)",
          (long long)macs);
    nl_module_release(net);

    /* Bounds 1/sqrt(fan_in) for weights and biases (PyTorch's kaiming_uniform(a=sqrt(5))). */
    struct { const char *type; const double *pos; double fan_in; } layers[] = {
        {"Conv2d", P(3, 32, 3), 27}, {"Conv2d", P(16, 8, 5), 400}, {"Linear", P(100, 300), 100},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        nl_module *m = make(layers[i].type, layers[i].pos);
        if (!m) continue;
        double bound = 1 / sqrt(layers[i].fan_in);
        for (int k = 0; k < m->nparams; k++) {
            const float *p = nl_tensor_f32(m->params[k].value);
            int64_t cnt = nl_tensor_numel(m->params[k].value);
            double lo = 1, hi = -1, sum2 = 0;
            for (int64_t e = 0; e < cnt; e++) {
                lo = fmin(lo, p[e]);
                hi = fmax(hi, p[e]);
                sum2 += (double)p[e] * p[e];
            }
            CHECK(lo >= -bound && hi <= bound, "%s %s within +-%g", layers[i].type, m->params[k].name, bound);
            if (cnt >= 1000) {
                CHECK(hi > 0.95 * bound && lo < -0.95 * bound, "%s weights fill the range", layers[i].type);
                CHECK_CLOSE(sum2 / (double)cnt, bound * bound / 3, 0, 0.1);
            }
        }
        nl_module_release(m);
    }
    /* The same seed gives the same weights; another seed, others. */
    nl_module *w[3];
    const uint64_t seeds[3] = {7, 7, 8};
    for (int i = 0; i < 3; i++) {
        nl_rng_seed(seeds[i]);
        w[i] = make("Conv2d", P(3, 8, 3));
    }
    size_t bytes = (size_t)nl_tensor_numel(w[0]->params[0].value) * sizeof(float);
    CHECK(memcmp(nl_tensor_f32(w[0]->params[0].value), nl_tensor_f32(w[1]->params[0].value), bytes) == 0 &&
              memcmp(nl_tensor_f32(w[0]->params[1].value), nl_tensor_f32(w[1]->params[1].value), 8 * 4) == 0,
          "same seed, same weights");
    CHECK(memcmp(nl_tensor_f32(w[0]->params[0].value), nl_tensor_f32(w[2]->params[0].value), bytes) != 0,
          "another seed, other weights");
    for (int i = 0; i < 3; i++) nl_module_release(w[i]);
}

/* One forward + backward of the seed CNN with 1 and with 2 threads: the same bits. */
static void test_thread_independence(void)
{
    nl_module *net = seed_cnn();
    nl_tensor *x = uniform(4, (int64_t[]){3, 3, 32, 32}, -1, 1), *gy = uniform(2, (int64_t[]){3, 10}, -1, 1);
    nl_tensor *out[2][3] = {{0}};
    const int threads = nl_get_threads();
    for (int t = 0; t < 2; t++) {
        nl_set_threads(t + 1);
        nl_module_zero_grad(net);
        nl_tensor *y = forward_ok(net, x), *gx = NULL;
        CHECK(nl_module_backward(net, gy, &gx) == NL_OK, "backward: %s", nl_errmsg());
        out[t][0] = y;
        out[t][1] = gx;
        out[t][2] = nl_tensor_clone(net->children[2]->params[0].grad);
    }
    nl_set_threads(threads);
    for (int k = 0; k < 3; k++) {
        bool same = out[0][k] && out[1][k] &&
                    memcmp(nl_tensor_f32(out[0][k]), nl_tensor_f32(out[1][k]),
                           (size_t)nl_tensor_numel(out[0][k]) * sizeof(float)) == 0;
        CHECK(same, "result %d is the same with 1 and 2 threads", k);
        nl_tensor_release(out[0][k]);
        nl_tensor_release(out[1][k]);
    }
    nl_tensor_release(x);
    nl_tensor_release(gy);
    nl_module_release(net);
}

/* ---------------------------------------------------------------- buffers --------------- */

static void test_output_buffers(void)
{
    nl_module *lin = make("Linear", P(3, 2));
    nl_tensor *x = uniform(2, (int64_t[]){4, 3}, -1, 1);
    nl_tensor *y1 = forward_ok(lin, x);
    void *first = y1 ? y1->storage->ptr : NULL;
    nl_tensor *held = forward_ok(lin, x);
    CHECK(held && held->storage->ptr != first, "a held output is not overwritten");
    nl_tensor_release(y1);
    nl_tensor_release(held);
    nl_tensor *y2 = forward_ok(lin, x);
    void *second = y2 ? y2->storage->ptr : NULL;
    nl_tensor_release(y2);
    nl_tensor *y3 = forward_ok(lin, x);
    CHECK(y3 && y3->storage->ptr == second, "a released output's storage is reused");
    nl_tensor_release(y3);
    nl_tensor *x5 = uniform(2, (int64_t[]){5, 3}, -1, 1);
    nl_tensor *y5 = forward_ok(lin, x5);
    CHECK(y5 && y5->shape[0] == 5, "another shape gets a new buffer");
    nl_tensor_release(y5);

    /* Through a Sequential (with a view layer in it), every layer reuses its output. */
    nl_module *net = seed_cnn();
    nl_tensor *img = uniform(4, (int64_t[]){2, 3, 32, 32}, -1, 1);
    void *ptrs[6] = {0};
    for (int pass = 0; pass < 3; pass++) {
        nl_tensor *y = forward_ok(net, img), *gy = y ? nl_tensor_empty_like(y) : NULL, *gx = NULL;
        if (!y) break;
        nl_fill(gy, 0.1);
        CHECK(nl_module_backward(net, gy, &gx) == NL_OK, "seed CNN backward: %s", nl_errmsg());
        bool same = true;
        for (int i = 0; i < 6; i++) {
            if (i == 4) continue; /* Flatten's output is a view */
            void *p = net->children[i]->output->storage->ptr;
            if (pass > 1 && p != ptrs[i]) same = false;
            ptrs[i] = p;
        }
        if (pass > 1) CHECK(same, "every layer of the seed CNN reuses its output buffer");
        nl_tensor_release(gx);
        nl_tensor_release(gy);
        nl_tensor_release(y);
    }
    nl_tensor_release(img);
    nl_module_release(net);
    nl_tensor_release(x5);
    nl_tensor_release(x);
    nl_module_release(lin);
}

int main(void)
{
    nl_init();
    nl_rng_seed(1234);
    test_arguments();
    test_linear_gradients();
    test_conv();
    test_pools();
    test_shape_layers();
    test_containers_gradients();
    test_qat_input_gradients();
    test_gradient_accumulation();
    test_parameter_only_backward();
    test_empty_batch();
    test_shape_errors();
    test_container_edits();
    test_params_and_init();
    test_thread_independence();
    test_output_buffers();
    return TEST_REPORT();
}
