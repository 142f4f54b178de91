/* test_layers2.c: element layers, normalisation and losses: gradients of every activation,
 * Softmax, Dropout, BatchNorm1d/2d (training and evaluation) and every loss against finite
 * differences (batch 1, odd shapes, inputs and targets given as non-contiguous views);
 * values against hand-computed numbers; Dropout's statistics and determinism; error messages. */
#include "gradcheck.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers --------------- */

/* A module of the named type: positional/option values args[0..n) over the defaults. */
static nl_module *make(const char *type, int n, const double *args)
{
    const nl_module_type *t = nl_module_type_find(type);
    CHECK(t != NULL, "module type %s is registered", type);
    if (!t) return NULL;
    double a[NL_MAX_ARGS];
    nl_module_default_args(t, a);
    for (int i = 0; i < n; i++) a[i] = args[i];
    nl_module *m = nl_module_new(t, a);
    CHECK(m != NULL, "%s: %s", type, nl_errmsg());
    return m;
}

static nl_tensor *from(int ndim, const int64_t *shape, const float *data)
{
    return nl_tensor_from_data(NL_F32, ndim, shape, data);
}

/* U(lo, hi) values, those within 0.05 of zero pushed out to +-0.1 (away from ReLU's kink). */
static nl_tensor *random_away(int ndim, const int64_t *shape, double lo, double hi)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_uniform(t, lo, hi);
    float *p = nl_tensor_f32(t);
    for (int64_t i = 0; i < nl_tensor_numel(t); i++)
        if (fabsf(p[i]) < 0.05f) p[i] = p[i] < 0 ? -0.1f : 0.1f;
    return t;
}

static float at(const nl_tensor *t, int64_t i) { return nl_tensor_f32(t)[i]; }

/* Forward through m, expecting success; the output (new reference). */
static nl_tensor *fwd(nl_module *m, nl_tensor *x)
{
    nl_tensor *y = NULL;
    nl_status s = nl_module_forward(m, x, &y);
    CHECK(s == NL_OK, "%s forward: %s", m->type->name, nl_errmsg());
    return y;
}

/* ---------------------------------------------------------------- activations ----------- */

static void test_activation_gradients(void)
{
    /* A batch of 3, batch 1 (2-D and 3-D), odd sizes; contiguous and as views. */
    const int64_t s3[3] = {3, 4, 5}, s1[2] = {1, 7}, s13[3] = {1, 3, 5}, s4[4] = {3, 5, 1, 7};
    struct { int ndim; const int64_t *shape; const char *views; } shapes[] = {
        {3, s3, "tscbe"}, {2, s1, "e"}, {3, s13, "tsce"}, {4, s4, "sce"},
    };
    struct { const char *type; int n; double arg; } cases[] = {
        {"ReLU", 0, 0}, {"LeakyReLU", 0, 0}, {"LeakyReLU", 1, 0.2}, {"LeakyReLU", 1, -0.3},
        {"GELU", 0, 0}, {"Sigmoid", 0, 0}, {"Tanh", 0, 0}, {"Softmax", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_module *m = make(cases[i].type, cases[i].n, &cases[i].arg);
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            nl_tensor *x = random_away(shapes[k].ndim, shapes[k].shape, -3, 3);
            gradcheck(m, x, .views = shapes[k].views);
            nl_tensor_release(x);
        }
        nl_module_release(m);
    }
}

static void test_activation_values(void)
{
    const int64_t shape[1] = {4};
    const float xs[4] = {-2, -0.5f, 0.5f, 3};
    nl_tensor *x = from(1, shape, xs);
    struct { const char *type; double arg; } cases[] = {
        {"ReLU", 0}, {"LeakyReLU", 0.2}, {"GELU", 0}, {"Sigmoid", 0}, {"Tanh", 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nl_module *m = make(cases[c].type, cases[c].arg != 0, &cases[c].arg);
        nl_tensor *y = fwd(m, x);
        for (int i = 0; y && i < 4; i++) {
            double v = xs[i], want;
            switch (c) {
            case 0: want = v > 0 ? v : 0; break;
            case 1: want = v > 0 ? v : 0.2 * v; break;
            case 2: want = 0.5 * v * (1 + erf(v / sqrt(2))); break;
            case 3: want = 1 / (1 + exp(-v)); break;
            default: want = tanh(v); break;
            }
            CHECK_CLOSE(at(y, i), want, 1e-6, 1e-6);
        }
        nl_tensor_release(y);
        nl_module_release(m);
    }
    /* LeakyReLU's default slope is PyTorch's 0.01. */
    nl_module *m = make("LeakyReLU", 0, NULL);
    nl_tensor *y = fwd(m, x);
    CHECK_CLOSE(at(y, 0), -0.02, 1e-7, 1e-6);
    nl_tensor_release(y);
    nl_module_release(m);
    nl_tensor_release(x);
}

static void test_softmax_values(void)
{
    /* Rows sum to 1; large logits do not overflow; exp(x_i - x_j) ratios hold. */
    const int64_t shape[2] = {2, 3};
    const float xs[6] = {1, 2, 3, 1000, 1001, 1002};
    nl_tensor *x = from(2, shape, xs);
    nl_module *m = make("Softmax", 0, NULL);
    nl_tensor *y = fwd(m, x);
    const double z = 1 + exp(1) + exp(2);
    for (int r = 0; y && r < 2; r++) {
        CHECK_CLOSE(at(y, 3 * r + 0), 1 / z, 1e-7, 1e-6);
        CHECK_CLOSE(at(y, 3 * r + 1), exp(1) / z, 1e-7, 1e-6);
        CHECK_CLOSE(at(y, 3 * r + 2), exp(2) / z, 1e-7, 1e-6);
    }
    nl_tensor_release(y);
    nl_tensor_release(x);
    /* A 0-d input has no last dimension. */
    nl_tensor *s = nl_tensor_zeros(NL_F32, 0, NULL, NL_CPU);
    CHECK(nl_module_forward(m, s, &y) == NL_ESHAPE, "Softmax of a 0-d tensor: %s", nl_errmsg());
    nl_tensor_release(s);
    nl_module_release(m);
}

/* ---------------------------------------------------------------- batch norm ------------ */

/* Random weight and bias so their gradients are not checked at the trivial point 1, 0. */
static void randomise_affine(nl_module *m)
{
    nl_param *w = nl_module_param(m, "weight"), *b = nl_module_param(m, "bias");
    if (w) nl_rand_uniform(w->value, 0.5, 1.5);
    if (b) nl_rand_uniform(b->value, -0.5, 0.5);
}

/* data: the input's values, or NULL for N(0.3, 1.5^2) draws; views as in gradcheck. */
static void bn_gradcheck(const char *type, int ndim, const int64_t *shape, bool affine, bool train,
                         const float *data, const char *views)
{
    const double args[4] = {(double)shape[1], 1e-5, 0.1, affine};
    nl_module *m = make(type, 4, args);
    if (!m) return;
    randomise_affine(m);
    nl_tensor *x = data ? from(ndim, shape, data) : nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    if (!data) nl_rand_normal(x, 0.3, 1.5);
    if (!train) { /* non-trivial running statistics from a training step on 4 samples, then evaluate */
        int64_t s4[NL_MAX_DIMS];
        memcpy(s4, shape, (size_t)ndim * sizeof *shape);
        s4[0] = 4;
        nl_tensor *x4 = nl_tensor_empty(NL_F32, ndim, s4, NL_CPU);
        nl_rand_normal(x4, 0.3, 1.5);
        nl_tensor_release(fwd(m, x4));
        nl_tensor_release(x4);
        nl_module_train(m, false);
    }
    gradcheck(m, x, .eps = GC_EPS_WIDE, .views = views);
    nl_tensor_release(x);
    nl_module_release(m);
}

static void test_batchnorm_gradients(void)
{
    const int64_t s2a[4] = {4, 3, 5, 3}, s2b[4] = {2, 2, 3, 5}, s1a[2] = {4, 5}, s1b[2] = {2, 3},
                  s1c[3] = {2, 3, 7}, s1d[3] = {4, 2, 3};
    /* Batch 1 (training works when a channel has more than one value) and odd sizes. */
    const int64_t b2a[4] = {1, 3, 5, 3}, b2b[4] = {3, 5, 1, 7}, b1a[3] = {1, 2, 7}, b1b[2] = {1, 5},
                  b1c[2] = {7, 3};
    /* Two values per channel normalise to about +-1 whatever they are: the input gradient is
     * ~0 except when they nearly coincide, where finite differences fail; keep them apart. */
    const float pairs[6] = {-1, 0.5f, 2, 1, -0.7f, 0.4f};
    bn_gradcheck("BatchNorm2d", 4, s2a, true, true, NULL, "tscbe");
    bn_gradcheck("BatchNorm2d", 4, s2b, true, true, NULL, "tc");
    bn_gradcheck("BatchNorm2d", 4, s2a, false, true, NULL, "s");
    bn_gradcheck("BatchNorm2d", 4, s2a, true, false, NULL, "tscbe");
    bn_gradcheck("BatchNorm2d", 4, s2b, true, false, NULL, "");
    bn_gradcheck("BatchNorm2d", 4, b2a, true, true, NULL, "tce");
    bn_gradcheck("BatchNorm2d", 4, b2a, true, false, NULL, "c");
    bn_gradcheck("BatchNorm2d", 4, b2b, true, true, NULL, "sce");
    bn_gradcheck("BatchNorm1d", 2, s1a, true, true, NULL, "tse");
    bn_gradcheck("BatchNorm1d", 2, s1b, true, true, pairs, "t");
    bn_gradcheck("BatchNorm1d", 3, s1c, true, true, NULL, "tscbe");
    bn_gradcheck("BatchNorm1d", 3, s1d, true, false, NULL, "tscbe");
    bn_gradcheck("BatchNorm1d", 2, s1a, false, false, NULL, "tsbe");
    bn_gradcheck("BatchNorm1d", 3, b1a, true, true, NULL, "tse");
    bn_gradcheck("BatchNorm1d", 2, b1b, true, false, NULL, "e");
    bn_gradcheck("BatchNorm1d", 2, b1c, true, true, NULL, "ts");
}

/* Two training steps of BatchNorm1d(2) on [4, 2] batches: outputs and running statistics
 * (momentum 0.1, unbiased variance) against hand-computed values, then evaluation. */
static void test_batchnorm_values(void)
{
    const double args[1] = {2};
    nl_module *m = make("BatchNorm1d", 1, args);
    if (!m) return;
    CHECK(m->nparams == 4, "BatchNorm1d has weight, bias, running_mean, running_var (%d)", m->nparams);
    nl_param *rm = nl_module_param(m, "running_mean"), *rv = nl_module_param(m, "running_var");
    CHECK(rm && !rm->grad && rv && !rv->grad, "running statistics are buffers");
    if (!rm || !rv) return;
    CHECK(at(rm->value, 0) == 0 && at(rv->value, 1) == 1, "running stats start at 0 and 1");
    const int64_t shape[2] = {4, 2};
    /* Channel 0: 1 2 3 4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: 0 0 0 4 (mean 1,
     * biased var 3, unbiased 4). */
    const float b1[8] = {1, 0, 2, 0, 3, 0, 4, 4};
    /* Channel 0: 2 2 2 2 (mean 2, var 0); channel 1: -1 1 -1 1 (mean 0, biased 1, unbiased 4/3). */
    const float b2[8] = {2, -1, 2, 1, 2, -1, 2, 1};
    nl_tensor *x1 = from(2, shape, b1), *x2 = from(2, shape, b2);
    nl_tensor *y = fwd(m, x1);
    if (y) {
        CHECK_CLOSE(at(y, 0), (1 - 2.5) / sqrt(1.25 + 1e-5), 1e-6, 1e-5);
        CHECK_CLOSE(at(y, 7), (4 - 1) / sqrt(3 + 1e-5), 1e-6, 1e-5);
    }
    nl_tensor_release(y);
    CHECK_CLOSE(at(rm->value, 0), 0.25, 1e-7, 1e-6);
    CHECK_CLOSE(at(rm->value, 1), 0.1, 1e-7, 1e-6);
    CHECK_CLOSE(at(rv->value, 0), 0.9 + 0.1 * 5.0 / 3, 1e-7, 1e-6);
    CHECK_CLOSE(at(rv->value, 1), 0.9 + 0.1 * 4, 1e-7, 1e-6);
    y = fwd(m, x2);
    if (y) {
        CHECK_CLOSE(at(y, 0), 0, 1e-6, 0); /* a constant channel normalises to 0 */
        CHECK_CLOSE(at(y, 1), -1 / sqrt(1 + 1e-5), 1e-6, 1e-5);
    }
    nl_tensor_release(y);
    const double rm0 = 0.9 * 0.25 + 0.1 * 2, rm1 = 0.9 * 0.1 + 0.1 * 0;
    const double rv0 = 0.9 * (0.9 + 0.1 * 5.0 / 3) + 0.1 * 0, rv1 = 0.9 * 1.3 + 0.1 * 4.0 / 3;
    CHECK_CLOSE(at(rm->value, 0), rm0, 1e-7, 1e-6);
    CHECK_CLOSE(at(rm->value, 1), rm1, 1e-7, 1e-6);
    CHECK_CLOSE(at(rv->value, 0), rv0, 1e-7, 1e-6);
    CHECK_CLOSE(at(rv->value, 1), rv1, 1e-7, 1e-6);
    /* Evaluation uses the running statistics and leaves them alone. */
    nl_module_train(m, false);
    y = fwd(m, x1);
    if (y) {
        CHECK_CLOSE(at(y, 0), (1 - rm0) / sqrt(rv0 + 1e-5), 1e-6, 1e-5);
        CHECK_CLOSE(at(y, 7), (4 - rm1) / sqrt(rv1 + 1e-5), 1e-6, 1e-5);
    }
    nl_tensor_release(y);
    CHECK_CLOSE(at(rm->value, 0), rm0, 1e-7, 1e-6);
    /* Training with one value per channel is refused, as in PyTorch; evaluation allows it. */
    const int64_t one[2] = {1, 2};
    nl_tensor *x3 = from(2, one, b1);
    y = fwd(m, x3);
    nl_tensor_release(y);
    nl_module_train(m, true);
    CHECK(nl_module_forward(m, x3, &y) == NL_ESHAPE && strstr(nl_errmsg(), "more than 1 value"),
          "batch of one when training: %s", nl_errmsg());
    nl_tensor_release(x3);
    nl_tensor_release(x1);
    nl_tensor_release(x2);
    nl_module_release(m);
}

static void test_batchnorm_errors(void)
{
    const double args[1] = {3};
    nl_module *m2 = make("BatchNorm2d", 1, args), *m1 = make("BatchNorm1d", 1, args);
    if (!m2 || !m1) return;
    const int64_t s4[4] = {2, 4, 5, 5}, s3[3] = {2, 3, 5}, s2[2] = {2, 4};
    nl_tensor *x4 = nl_tensor_zeros(NL_F32, 4, s4, NL_CPU), *x3 = nl_tensor_zeros(NL_F32, 3, s3, NL_CPU),
              *x2 = nl_tensor_zeros(NL_F32, 2, s2, NL_CPU), *y = NULL;
    CHECK(nl_module_forward(m2, x4, &y) == NL_ESHAPE &&
              strstr(nl_errmsg(), "has 4 channels, expected 3") && strstr(nl_errmsg(), "[2, 4, 5, 5]"),
          "channel mismatch: %s", nl_errmsg());
    CHECK(nl_module_forward(m2, x3, &y) == NL_ESHAPE && strstr(nl_errmsg(), "4-D"),
          "3-D input to BatchNorm2d: %s", nl_errmsg());
    CHECK(nl_module_forward(m1, x2, &y) == NL_ESHAPE && strstr(nl_errmsg(), "expected 3"),
          "BatchNorm1d channel mismatch: %s", nl_errmsg());
    CHECK(nl_module_forward(m1, x4, &y) == NL_ESHAPE, "4-D input to BatchNorm1d: %s", nl_errmsg());
    const double noaffine[4] = {3, 1e-5, 0.1, 0};
    nl_module *m = make("BatchNorm2d", 4, noaffine);
    CHECK(m && m->nparams == 2 && !nl_module_param(m, "weight"), "affine=false has only buffers");
    nl_module_release(m);
    nl_tensor_release(x4);
    nl_tensor_release(x3);
    nl_tensor_release(x2);
    nl_module_release(m1);
    nl_module_release(m2);
}

/* ---------------------------------------------------------------- dropout --------------- */

static int64_t count_zeros(const nl_tensor *t)
{
    int64_t z = 0;
    for (int64_t i = 0; i < nl_tensor_numel(t); i++) z += at(t, i) == 0;
    return z;
}

static void test_dropout(void)
{
    const int64_t n = 100000;
    nl_tensor *x = nl_tensor_empty(NL_F32, 1, &n, NL_CPU);
    nl_fill(x, 1);
    const double p = 0.3;
    nl_module *m = make("Dropout", 1, &p);
    if (!m) return;
    nl_rng_seed(42);
    nl_tensor *y1 = fwd(m, x);
    nl_tensor *c1 = nl_tensor_clone(y1);
    double frac = (double)count_zeros(c1) / (double)n;
    CHECK(fabs(frac - p) < 0.01, "fraction of zeros %.4f near p = %.1f", frac, p);
    bool scaled = true;
    for (int64_t i = 0; i < n; i++) scaled &= at(c1, i) == 0 || at(c1, i) == (float)(1 / (1 - p));
    CHECK(scaled, "kept elements are scaled by 1/(1-p)");
    /* Backward applies the same mask and scale. */
    nl_tensor *gx = NULL;
    CHECK(nl_module_backward(m, x, &gx) == NL_OK, "backward: %s", nl_errmsg());
    CHECK(gx && !memcmp(nl_tensor_data(gx), nl_tensor_data(c1), (size_t)n * sizeof(float)),
          "backward mask equals the forward mask");
    nl_tensor_release(gx);
    nl_tensor_release(y1);
    /* A second step draws another mask; the same seed gives the same mask again. */
    nl_tensor *y2 = fwd(m, x);
    CHECK(y2 && memcmp(nl_tensor_data(y2), nl_tensor_data(c1), (size_t)n * sizeof(float)) != 0,
          "the next step draws a different mask");
    nl_tensor_release(y2);
    nl_rng_seed(42);
    nl_tensor *y3 = fwd(m, x);
    CHECK(y3 && !memcmp(nl_tensor_data(y3), nl_tensor_data(c1), (size_t)n * sizeof(float)),
          "the same seed gives the same mask");
    nl_tensor_release(y3);
    /* Evaluation is the identity, forward and backward. */
    nl_module_train(m, false);
    nl_tensor *ye = fwd(m, x);
    CHECK(ye && count_zeros(ye) == 0 && at(ye, 17) == 1, "evaluation passes the input through");
    CHECK(nl_module_backward(m, x, &gx) == NL_OK && gx && count_zeros(gx) == 0, "eval backward");
    nl_tensor_release(gx);
    nl_tensor_release(ye);
    nl_module_release(m);
    /* p = 0: identity; p = 1: zeros; p > 1 refused. */
    const double p0 = 0, p1 = 1, p2 = 1.5;
    m = make("Dropout", 1, &p0);
    nl_tensor *y = fwd(m, x);
    CHECK(y && count_zeros(y) == 0 && at(y, 5) == 1, "p = 0 is the identity");
    nl_tensor_release(y);
    nl_module_release(m);
    m = make("Dropout", 1, &p1);
    y = fwd(m, x);
    CHECK(y && count_zeros(y) == n, "p = 1 zeroes everything");
    nl_tensor_release(y);
    nl_module_release(m);
    double a[NL_MAX_ARGS];
    nl_module_default_args(nl_module_type_find("Dropout"), a);
    CHECK(a[0] == 0.5, "Dropout's default p is 0.5");
    a[0] = p2;
    CHECK(nl_module_new(nl_module_type_find("Dropout"), a) == NULL && nl_errcode() == NL_EINVAL &&
              strstr(nl_errmsg(), "1.5"), "p = 1.5 refused: %s", nl_errmsg());
    nl_tensor_release(c1);
    nl_tensor_release(x);
}

/* In training, with the generator reseeded before each forward (the same mask every time), y is
 * linear in x; in evaluation and with p = 0 Dropout is the identity. */
static void test_dropout_gradients(void)
{
    const int64_t s2[2] = {4, 6}, s1[2] = {1, 5}, s4[4] = {3, 2, 5, 3};
    struct { int ndim; const int64_t *shape; const char *views; } shapes[] = {
        {2, s2, "tsbe"}, {2, s1, "e"}, {4, s4, "tscbe"},
    };
    const double ps[3] = {0.3, 0.5, 0};
    for (int train = 1; train >= 0; train--)
        for (int k = 0; k < 3; k++) {
            nl_module *m = make("Dropout", 1, &ps[k]);
            if (!m) continue;
            nl_module_train(m, train);
            for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
                nl_tensor *x = nl_tensor_empty(NL_F32, shapes[i].ndim, shapes[i].shape, NL_CPU);
                nl_rand_uniform(x, -1, 1);
                gradcheck(m, x, .seed = 99, .views = shapes[i].views);
                nl_tensor_release(x);
            }
            nl_module_release(m);
        }
}

/* ---------------------------------------------------------------- losses ---------------- */

/* i32 class indices in a non-contiguous view: every other element of a longer tensor. */
static nl_tensor *strided_classes(int64_t n, const int32_t *cls)
{
    const int64_t n2 = 2 * n;
    nl_tensor *base = nl_tensor_zeros(NL_I32, 1, &n2, NL_CPU), *v = nl_tensor_slice(base, 0, 0, n);
    nl_tensor_release(base);
    v->strides[0] = 2; /* a header of our own */
    for (int64_t i = 0; i < n; i++) ((int32_t *)nl_tensor_data(v))[2 * i] = cls[i];
    return v;
}

/* Every loss at logits [N, C] (N = 5, 1, 3; C = 4, 3, 7, 1), contiguous and as views, against
 * targets contiguous and as views. */
static void test_loss_gradients(void)
{
    const int64_t shapes[4][2] = {{5, 4}, {1, 3}, {3, 7}, {2, 1}};
    const int32_t cls[4][5] = {{0, 3, 1, 1, 2}, {2}, {6, 0, 3}, {0, 0}};
    for (int k = 0; k < 4; k++) {
        const int64_t *shape = shapes[k], n = shape[0];
        char what[160];
        nl_tensor *x = nl_tensor_empty(NL_F32, 2, shape, NL_CPU);
        nl_rand_normal(x, 0, 2);
        nl_tensor *tc = nl_tensor_from_data(NL_I32, 1, &n, cls[k]), *tcv = strided_classes(n, cls[k]);
        nl_tensor *tp = nl_tensor_empty(NL_F32, 2, shape, NL_CPU), *tq = nl_tensor_empty(NL_F32, 2, shape, NL_CPU);
        nl_rand_uniform(tp, 0, 1); /* unnormalised rows exercise sum(q) != 1 */
        nl_rand_normal(tq, 0, 1);
        nl_tensor *views[3] = {x, gc_view(x, GC_STEPPED), gc_view(x, GC_TRANSPOSED)};
        nl_tensor *tpv = gc_view(tp, GC_TRANSPOSED), *tqv = gc_view(tq, GC_SLICED);
        nl_tensor *teacher_in = nl_tensor_empty(NL_F32, 2, shape, NL_CPU);
        nl_rand_normal(teacher_in, 0.5, 2);
        nl_tensor *teacher_view = gc_view(teacher_in, GC_STEPPED);
        for (int v = 0; v < 3; v++) {
            const char *how = v == 0 ? "" : v == 1 ? ", every other logit" : ", transposed logits";
            for (int sm = 0; sm < 2; sm++) {
                nl_loss l = {.kind = NL_LOSS_CROSS_ENTROPY, .label_smoothing = sm ? 0.1 : 0};
                snprintf(what, sizeof what, "cross-entropy [%lld, %lld], classes%s%s", (long long)n,
                         (long long)shape[1], sm ? ", smoothing 0.1" : "", how);
                loss_gradcheck(what, &l, views[v], v == 1 ? tcv : tc, NULL);
                snprintf(what, sizeof what, "cross-entropy [%lld, %lld], probabilities%s%s", (long long)n,
                         (long long)shape[1], sm ? ", smoothing 0.1" : "", how);
                loss_gradcheck(what, &l, views[v], v == 2 ? tpv : tp, NULL);
                nl_loss_clear(&l);
            }
            nl_loss mse = {.kind = NL_LOSS_MSE};
            snprintf(what, sizeof what, "mse [%lld, %lld]%s", (long long)n, (long long)shape[1], how);
            loss_gradcheck(what, &mse, views[v], v ? tqv : tq, NULL);
            nl_loss_clear(&mse);
            /* Distillation from a teacher that passes its input through (the teacher's logits). */
            nl_loss d = {.kind = NL_LOSS_DISTILL, .teacher = make("Identity", 0, NULL), .temperature = 3,
                         .alpha = 0.7};
            snprintf(what, sizeof what, "distill [%lld, %lld]%s", (long long)n, (long long)shape[1], how);
            loss_gradcheck(what, &d, views[v], v == 1 ? tcv : tc, v ? teacher_view : teacher_in);
            nl_loss_clear(&d);
        }
        /* MSE of any shape. */
        const int64_t odd[3] = {3, 1, 5};
        nl_tensor *xo = nl_tensor_empty(NL_F32, 3, odd, NL_CPU), *to = nl_tensor_empty(NL_F32, 3, odd, NL_CPU);
        nl_rand_normal(xo, 0, 1);
        nl_rand_normal(to, 0, 1);
        nl_tensor *xov = gc_view(xo, GC_CHANNELS_LAST), *tov = gc_view(to, GC_STEPPED);
        nl_loss mse = {.kind = NL_LOSS_MSE};
        loss_gradcheck("mse [3, 1, 5]", &mse, xo, to, NULL);
        loss_gradcheck("mse [3, 1, 5], views", &mse, xov, tov, NULL);
        nl_loss_clear(&mse);
        for (int v = 1; v < 3; v++) nl_tensor_release(views[v]);
        nl_tensor_release(xo);
        nl_tensor_release(to);
        nl_tensor_release(xov);
        nl_tensor_release(tov);
        nl_tensor_release(teacher_in);
        nl_tensor_release(teacher_view);
        nl_tensor_release(tpv);
        nl_tensor_release(tqv);
        nl_tensor_release(tp);
        nl_tensor_release(tq);
        nl_tensor_release(tc);
        nl_tensor_release(tcv);
        nl_tensor_release(x);
    }
}

static void test_loss_values(void)
{
    /* Logits [[1, 2, 3], [1, 1, 1]], targets [2, 0]:
     * sample 0: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2) = 0.40760596444438
     * sample 1: log 3 = 1.09861228866811; mean 0.75310912655625.
     * With label smoothing 0.1: 0.9 * nll + 0.1 / 3 * sum_c -log p_c: sample 0 gives
     * 0.9 * 0.40760596 + 0.1 * (1 + 0.40760596) = 0.50760596, sample 1 log 3; mean 0.80310912655625. */
    const int64_t shape[2] = {2, 3}, n = 2;
    const float xs[6] = {1, 2, 3, 1, 1, 1};
    const int32_t cls[2] = {2, 0};
    nl_tensor *x = from(2, shape, xs), *t = nl_tensor_from_data(NL_I32, 1, &n, cls);
    nl_loss l = {.kind = NL_LOSS_CROSS_ENTROPY};
    double v = 0;
    CHECK(nl_loss_forward(&l, x, t, &v) == NL_OK, "ce: %s", nl_errmsg());
    CHECK_CLOSE(v, 0.75310912655625, 1e-6, 1e-6);
    /* dL/dx = (softmax - onehot) / N */
    nl_tensor *g = NULL;
    CHECK(nl_loss_backward(&l, 1, &g) == NL_OK, "ce backward: %s", nl_errmsg());
    const double z = exp(1) + exp(2) + exp(3);
    if (g) {
        CHECK_CLOSE(at(g, 2), (exp(3) / z - 1) / 2, 1e-7, 1e-5);
        CHECK_CLOSE(at(g, 0), exp(1) / z / 2, 1e-7, 1e-5);
        CHECK_CLOSE(at(g, 3), (1.0 / 3 - 1) / 2, 1e-7, 1e-5);
    }
    nl_tensor_release(g);
    l.label_smoothing = 0.1;
    CHECK(nl_loss_forward(&l, x, t, &v) == NL_OK, "ce smoothed: %s", nl_errmsg());
    CHECK_CLOSE(v, 0.80310912655625, 1e-6, 1e-6);
    /* u8 class indices are accepted as well. */
    const uint8_t cls8[2] = {2, 0};
    nl_tensor *t8 = nl_tensor_from_data(NL_U8, 1, &n, cls8);
    l.label_smoothing = 0;
    CHECK(nl_loss_forward(&l, x, t8, &v) == NL_OK, "ce u8 targets: %s", nl_errmsg());
    CHECK_CLOSE(v, 0.75310912655625, 1e-6, 1e-6);
    nl_tensor_release(t8);
    /* Huge logits stay finite (stable log-softmax): loss of [1000, 0] against class 1 is 1000. */
    const float big[6] = {1000, 0, 0, 0, 0, 1000};
    const int32_t cb[2] = {1, 2};
    nl_tensor *xb = from(2, shape, big), *tb = nl_tensor_from_data(NL_I32, 1, &n, cb);
    CHECK(nl_loss_forward(&l, xb, tb, &v) == NL_OK, "ce big: %s", nl_errmsg());
    CHECK_CLOSE(v, 500, 1e-3, 1e-6);
    nl_tensor_release(xb);
    nl_tensor_release(tb);
    nl_loss_clear(&l);
    /* Probability target [0.25, 0.75] on equal logits: log 2. */
    const int64_t s12[2] = {1, 2};
    const float zero2[2] = {0, 0}, q[2] = {0.25f, 0.75f};
    nl_tensor *xq = from(2, s12, zero2), *tq = from(2, s12, q);
    CHECK(nl_loss_forward(&l, xq, tq, &v) == NL_OK, "ce probabilities: %s", nl_errmsg());
    CHECK_CLOSE(v, log(2), 1e-7, 1e-6);
    nl_loss_clear(&l);
    nl_tensor_release(xq);
    nl_tensor_release(tq);
    /* MSE of [1, 2, 3] against [0, 0, 1]: (1 + 4 + 4) / 3 = 3; gradient 2 (x - t) / 3. */
    const int64_t three = 3;
    const float a[3] = {1, 2, 3}, b[3] = {0, 0, 1};
    nl_tensor *xa = from(1, &three, a), *tb3 = from(1, &three, b);
    nl_loss mse = {.kind = NL_LOSS_MSE};
    CHECK(nl_loss_forward(&mse, xa, tb3, &v) == NL_OK, "mse: %s", nl_errmsg());
    CHECK_CLOSE(v, 3, 1e-7, 1e-7);
    CHECK(nl_loss_backward(&mse, 0.5, &g) == NL_OK, "mse backward: %s", nl_errmsg());
    if (g) CHECK_CLOSE(at(g, 1), 0.5 * 2 * 2 / 3.0, 1e-7, 1e-6);
    nl_tensor_release(g);
    nl_loss_clear(&mse);
    nl_tensor_release(xa);
    nl_tensor_release(tb3);
    nl_tensor_release(x);
    nl_tensor_release(t);
}

static void test_loss_errors(void)
{
    const int64_t shape[2] = {2, 3}, n2 = 2, n3 = 3, s23[2] = {2, 4};
    nl_tensor *x = nl_tensor_zeros(NL_F32, 2, shape, NL_CPU);
    const int32_t bad_hi[2] = {1, 3}, bad_lo[2] = {-1, 0};
    nl_tensor *thi = nl_tensor_from_data(NL_I32, 1, &n2, bad_hi);
    nl_tensor *tlo = nl_tensor_from_data(NL_I32, 1, &n2, bad_lo);
    nl_tensor *t3 = nl_tensor_zeros(NL_I32, 1, &n3, NL_CPU);
    nl_tensor *tp = nl_tensor_zeros(NL_F32, 2, s23, NL_CPU);
    nl_loss l = {.kind = NL_LOSS_CROSS_ENTROPY};
    double v;
    nl_tensor *g = NULL;
    CHECK(nl_loss_backward(&l, 1, &g) == NL_EINVAL, "backward before forward: %s", nl_errmsg());
    CHECK(nl_loss_forward(&l, x, thi, &v) == NL_EINVAL && strstr(nl_errmsg(), "target 3") &&
              strstr(nl_errmsg(), "3 classes"), "target too large: %s", nl_errmsg());
    CHECK(nl_loss_forward(&l, x, tlo, &v) == NL_EINVAL && strstr(nl_errmsg(), "target -1"),
          "negative target: %s", nl_errmsg());
    CHECK(nl_loss_forward(&l, x, t3, &v) == NL_ESHAPE && strstr(nl_errmsg(), "[3]") &&
              strstr(nl_errmsg(), "[2, 3]"), "target length: %s", nl_errmsg());
    CHECK(nl_loss_forward(&l, x, tp, &v) == NL_ESHAPE && strstr(nl_errmsg(), "[2, 4]") &&
              strstr(nl_errmsg(), "[2, 3]"), "probability target shape: %s", nl_errmsg());
    CHECK(nl_loss_forward(&l, t3, t3, &v) == NL_ETYPE, "i32 logits: %s", nl_errmsg());
    nl_tensor *x1 = nl_tensor_zeros(NL_F32, 1, &n3, NL_CPU);
    CHECK(nl_loss_forward(&l, x1, t3, &v) == NL_ESHAPE && strstr(nl_errmsg(), "[N, C]"),
          "1-D logits: %s", nl_errmsg());
    l.label_smoothing = 1.5;
    CHECK(nl_loss_forward(&l, x, tp, &v) == NL_EINVAL, "label smoothing 1.5: %s", nl_errmsg());
    nl_loss mse = {.kind = NL_LOSS_MSE};
    CHECK(nl_loss_forward(&mse, x, tp, &v) == NL_ESHAPE && strstr(nl_errmsg(), "[2, 3]") &&
              strstr(nl_errmsg(), "[2, 4]"), "mse shapes: %s", nl_errmsg());
    nl_loss_clear(&l);
    nl_loss_clear(&mse);
    nl_tensor_release(x1);
    nl_tensor_release(x);
    nl_tensor_release(thi);
    nl_tensor_release(tlo);
    nl_tensor_release(t3);
    nl_tensor_release(tp);
}

/* ---------------------------------------------------------------- threads --------------- */

/* Runs x through m forward and backward (gy = ones), then the cross-entropy of y's 2-D view
 * against class 0; returns y, gx and the loss gradient concatenated (new reference). */
static nl_tensor *pass(nl_module *m, nl_tensor *x)
{
    nl_tensor *y = fwd(m, x), *gy = nl_tensor_empty_like(y), *gx = NULL, *gl = NULL;
    nl_fill(gy, 1);
    CHECK(nl_module_backward(m, gy, &gx) == NL_OK, "%s backward: %s", m->type->name, nl_errmsg());
    const int64_t rows = y->shape[0], cols = nl_tensor_numel(y) / rows;
    const int64_t flat[2] = {rows, cols};
    nl_tensor *y2 = nl_tensor_reshape(y, 2, flat), *t = nl_tensor_zeros(NL_I32, 1, &rows, NL_CPU);
    nl_loss l = {.kind = NL_LOSS_CROSS_ENTROPY, .label_smoothing = 0.1};
    double v;
    CHECK(nl_loss_forward(&l, y2, t, &v) == NL_OK && nl_loss_backward(&l, 1, &gl) == NL_OK,
          "loss: %s", nl_errmsg());
    const int64_t n = nl_tensor_numel(y), total = 3 * n;
    nl_tensor *all = nl_tensor_empty(NL_F32, 1, &total, NL_CPU);
    memcpy(nl_tensor_f32(all), nl_tensor_f32(y), (size_t)n * sizeof(float));
    memcpy(nl_tensor_f32(all) + n, nl_tensor_f32(gx), (size_t)n * sizeof(float));
    memcpy(nl_tensor_f32(all) + 2 * n, nl_tensor_f32(gl), (size_t)n * sizeof(float));
    nl_loss_clear(&l);
    nl_tensor_release(gl);
    nl_tensor_release(t);
    nl_tensor_release(y2);
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    nl_tensor_release(y);
    return all;
}

/* Every kernel gives the same bits on 1 thread and on several (inputs above the parallel size). */
static void test_thread_independence(void)
{
    const int64_t s4[4] = {8, 16, 17, 17}, s2[2] = {64, 1031};
    const double c = 16;
    struct { const char *type; int n; const double *arg; int ndim; const int64_t *shape; } cases[] = {
        {"BatchNorm2d", 1, &c, 4, s4}, {"Softmax", 0, NULL, 2, s2}, {"GELU", 0, NULL, 2, s2},
        {"Dropout", 0, NULL, 2, s2},
    };
    const int threads = nl_get_threads();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_module *m = make(cases[i].type, cases[i].n, cases[i].arg);
        nl_tensor *x = nl_tensor_empty(NL_F32, cases[i].ndim, cases[i].shape, NL_CPU);
        nl_rand_normal(x, 0.5, 2);
        nl_tensor *r[2];
        for (int k = 0; k < 2; k++) {
            nl_set_threads(k ? 7 : 1);
            nl_rng_seed(5);
            r[k] = pass(m, x);
        }
        nl_set_threads(threads);
        CHECK(!memcmp(nl_tensor_data(r[0]), nl_tensor_data(r[1]),
                      (size_t)nl_tensor_numel(r[0]) * sizeof(float)),
              "%s: same results on 1 and 7 threads", cases[i].type);
        nl_tensor_release(r[0]);
        nl_tensor_release(r[1]);
        nl_tensor_release(x);
        nl_module_release(m);
    }
}

int main(void)
{
    nl_init();
    nl_rng_seed(1234);
    test_activation_gradients();
    test_activation_values();
    test_softmax_values();
    test_batchnorm_gradients();
    test_batchnorm_values();
    test_batchnorm_errors();
    test_dropout();
    test_dropout_gradients();
    test_loss_gradients();
    test_loss_values();
    test_loss_errors();
    test_thread_independence();
    return TEST_REPORT();
}
