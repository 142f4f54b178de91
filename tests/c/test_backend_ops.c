/* test_backend_ops.c: every opcode of every backend against the CPU reference (ggml's
 * test-backend-ops). Each op runs on CPU tensors and on copies of them on the other backends
 * (sim:0 and sim:1 here; cuda when present), with the shapes and views of the CPU tests
 * (transposed, sliced, broadcast), and the results must be bit-identical on sim (the same kernels
 * in the same order). A table indexed by opcode names the check of each: a new opcode without
 * one fails. The ops a device leaves to the CPU (int8/int4, CSR) must be refused cleanly. Also:
 * device names and numbers, the sim's counters, and that the host cannot read sim memory. */
#include "nl.h"
#include "nn.h"
#include "optim.h"
#include "nethelp.h"
#include "testhelp.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static nl_device dev;   /* the device under test */
static int mismatches;  /* checks that differed, for the summary line of each op */

/* A tensor of dtype and shape with seeded values in [-4, 4] (integers rounded). */
static nl_tensor *pattern(nl_dtype dt, int ndim, const int64_t *shape, uint64_t seed)
{
    nl_rng_seed(seed);
    nl_tensor *f = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_uniform(f, -4, 4);
    if (dt == NL_F32) return f;
    nl_tensor *t = nl_tensor_to_dtype(f, dt);
    nl_tensor_release(f);
    return t;
}

static nl_tensor *on_dev(const nl_tensor *t)
{
    nl_tensor *d = nl_tensor_to_device(t, dev);
    CHECK(d != NULL, "copy to %s: %s", nl_device_name(dev), nl_errmsg());
    return d;
}

/* A view of t on the same storage: 0 itself, 1 transposed (2-D+), 2 sliced along dim 0. */
static nl_tensor *view(nl_tensor *t, int kind)
{
    if (kind == 1 && t->ndim >= 2) return nl_tensor_transpose(t, 0, 1);
    if (kind == 2 && t->shape[0] > 2) return nl_tensor_slice(t, 0, 1, t->shape[0] - 1);
    return nl_tensor_retain(t);
}

/* Whether f32 values agree within the tolerance of another implementation (|a-b| <= 1e-4 +
 * 1e-3 |a|, NaN with NaN): for backends with their own kernels. */
static bool close_f32(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-4f + 1e-3f * fabsf(a[i])) && !(isnan(a[i]) && isnan(b[i])))
            return false;
    return true;
}

/* Whether the device tensor d holds the CPU tensor c (dtype, shape, values): bit for bit on sim,
 * which runs the CPU's kernels; within close_f32 for f32 results of other backends. */
static bool same(const nl_tensor *c, const nl_tensor *d, const char *what)
{
    if (!c || !d) {
        CHECK(c == NULL && d == NULL, "%s: one backend failed: %s", what, nl_errmsg());
        return c == d;
    }
    CHECK(nl_tensor_device(d) == dev, "%s: the result lives on %s", what, nl_device_name(dev));
    nl_tensor *hc = nl_tensor_host(c), *hd = nl_tensor_host(d);
    bool ok = hc && hd && c->dtype == d->dtype && nl_same_shape(c, d);
    if (ok && nl_device_kind(dev) != NL_SIM && c->dtype == NL_F32)
        ok = close_f32(nl_tensor_f32(hc), nl_tensor_f32(hd), nl_tensor_numel(hc));
    else if (ok)
        ok = memcmp(nl_tensor_data(hc), nl_tensor_data(hd),
                    (size_t)nl_tensor_numel(hc) * nl_dtype_info(c->dtype)->size) == 0;
    if (!ok) mismatches++;
    CHECK(ok, "%s: %s differs from the cpu", what, nl_device_name(dev));
    nl_tensor_release(hc);
    nl_tensor_release(hd);
    return ok;
}

/* ---------------------------------------------------------------- tensor ops ------------ */

static void check_fill_copy(void)
{
    for (int v = 0; v < 3; v++)
        for (int dt = 0; dt < NL_DTYPE_COUNT; dt++) {
            nl_tensor *c = pattern((nl_dtype)dt, 2, SHAPE(5, 4), 1), *d = on_dev(c);
            nl_tensor *cv = view(c, v), *dv = view(d, v);
            nl_fill(cv, -2.5);
            nl_fill(dv, -2.5);
            same(c, d, "fill");
            for (int to = 0; to < NL_DTYPE_COUNT; to++) { /* converting copies of strided views */
                nl_tensor *src = pattern((nl_dtype)dt, 2, SHAPE(5, 4), 2), *srcd = on_dev(src);
                nl_tensor *sv = view(src, v), *sdv = view(srcd, v);
                nl_tensor *oc = nl_tensor_empty((nl_dtype)to, sv->ndim, sv->shape, NL_CPU);
                nl_tensor *od = nl_tensor_empty((nl_dtype)to, sv->ndim, sv->shape, dev);
                nl_copy(oc, sv);
                nl_copy(od, sdv);
                same(oc, od, "copy");
                nl_tensor *cc = nl_tensor_to_dtype(sv, (nl_dtype)to), *cd = nl_tensor_to_dtype(sdv, (nl_dtype)to);
                same(cc, cd, "to_dtype");
                nl_tensor *ctg = nl_tensor_contiguous(sv), *dtg = nl_tensor_contiguous(sdv);
                same(ctg, dtg, "contiguous");
                nl_tensor *rows[] = {src, srcd, sv, sdv, oc, od, cc, cd, ctg, dtg};
                for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) nl_tensor_release(rows[k]);
            }
            nl_tensor *rows[] = {c, d, cv, dv};
            for (size_t k = 0; k < 4; k++) nl_tensor_release(rows[k]);
        }
}

static void check_binary(void)
{
    const nl_dtype dts[] = {NL_F32, NL_I32, NL_U8, NL_I8};
    for (size_t t = 0; t < 4; t++)
        for (int v = 0; v < 3; v++)
            for (int op = 0; op < NL_BINOP_COUNT; op++) {
                nl_tensor *a = pattern(dts[t], 2, SHAPE(6, 6), 3 + v), *b = pattern(NL_F32, 2, SHAPE(6, 6), 4);
                nl_tensor *row = pattern(dts[t], 1, SHAPE(v == 2 ? 6 : 6), 5);
                if (op == NL_BIN_POW) { /* positive bases, as the CPU tests */
                    nl_tensor *p = nl_unary_new(NL_UN_ABS, b);
                    nl_tensor_release(b);
                    b = p;
                }
                nl_tensor *ad = on_dev(a), *bd = on_dev(b), *rd = on_dev(row);
                nl_tensor *av = view(a, v), *bv = view(b, (v + 1) % 3), *adv = view(ad, v), *bdv = view(bd, (v + 1) % 3);
                nl_tensor *cr = nl_binary_new((nl_binop)op, bv, av), *dr = nl_binary_new((nl_binop)op, bdv, adv);
                same(cr, dr, nl_binop_name((nl_binop)op));
                /* broadcast: a row against the matrix, both orders */
                nl_tensor *cb = nl_binary_new((nl_binop)op, av, row), *db = nl_binary_new((nl_binop)op, adv, rd);
                same(cb, db, "broadcast");
                nl_tensor *cs = nl_binary_scalar_new((nl_binop)op, av, 2, v == 1),
                          *ds = nl_binary_scalar_new((nl_binop)op, adv, 2, v == 1);
                same(cs, ds, "scalar");
                nl_tensor *rows[] = {a, b, row, ad, bd, rd, av, bv, adv, bdv, cr, dr, cb, db, cs, ds};
                for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) nl_tensor_release(rows[k]);
            }
}

static void check_unary_reduce(void)
{
    for (int v = 0; v < 3; v++) {
        nl_tensor *a = pattern(NL_F32, 3, SHAPE(5, 4, 3), 7), *ad = on_dev(a);
        nl_tensor *av = view(a, v), *adv = view(ad, v);
        for (int op = 0; op < NL_UNOP_COUNT; op++) {
            nl_tensor *c = nl_unary_new((nl_unop)op, av), *d = nl_unary_new((nl_unop)op, adv);
            same(c, d, nl_unop_name((nl_unop)op));
            nl_tensor_release(c);
            nl_tensor_release(d);
        }
        for (int op = 0; op < NL_REDOP_COUNT; op++)
            for (int dim = -1; dim < 3; dim++)
                for (int keep = 0; keep < 2; keep++) {
                    nl_tensor *c = nl_reduce_new((nl_redop)op, av, dim, keep), *d = nl_reduce_new((nl_redop)op, adv, dim, keep);
                    same(c, d, nl_redop_name((nl_redop)op));
                    nl_tensor_release(c);
                    nl_tensor_release(d);
                }
        nl_tensor *rows[] = {a, ad, av, adv};
        for (size_t k = 0; k < 4; k++) nl_tensor_release(rows[k]);
    }
}

static void check_matmul(void)
{
    struct { int na, nb; int64_t sa[3], sb[3]; int va, vb; } cases[] = {
        {2, 2, {7, 5}, {5, 3}, 0, 0}, {2, 2, {5, 7}, {5, 3}, 1, 0}, {2, 2, {7, 5}, {3, 5}, 0, 1},
        {3, 3, {2, 4, 6}, {2, 6, 3}, 0, 0}, {2, 3, {4, 6}, {3, 6, 2}, 0, 0}, {1, 2, {5}, {5, 4}, 0, 0},
        {2, 2, {9, 5}, {5, 3}, 2, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nl_tensor *a = pattern(NL_F32, cases[i].na, cases[i].sa, 8), *b = pattern(NL_F32, cases[i].nb, cases[i].sb, 9);
        nl_tensor *ad = on_dev(a), *bd = on_dev(b);
        nl_tensor *av = view(a, cases[i].va), *bv = view(b, cases[i].vb), *adv = view(ad, cases[i].va), *bdv = view(bd, cases[i].vb);
        nl_tensor *c = nl_matmul_new(av, bv), *d = nl_matmul_new(adv, bdv);
        same(c, d, "matmul");
        if (c && d) { /* accumulate into the result */
            nl_matmul_ex(c, av, bv, true);
            nl_matmul_ex(d, adv, bdv, true);
            same(c, d, "matmul accumulate");
        }
        nl_tensor *rows[] = {a, b, ad, bd, av, bv, adv, bdv, c, d};
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) nl_tensor_release(rows[k]);
    }
}

static void check_rand(void)
{
    nl_tensor *c = nl_tensor_empty(NL_F32, 2, SHAPE(33, 17), NL_CPU), *d = nl_tensor_empty(NL_F32, 2, SHAPE(33, 17), dev);
    for (int normal = 0; normal < 2; normal++) {
        nl_rng_seed(11);
        normal ? nl_rand_normal(c, 1, 2) : nl_rand_uniform(c, -1, 3);
        nl_rng_seed(11);
        normal ? nl_rand_normal(d, 1, 2) : nl_rand_uniform(d, -1, 3);
        same(c, d, normal ? "rand normal" : "rand uniform");
    }
    nl_tensor_release(c);
    nl_tensor_release(d);
}

/* ---------------------------------------------------------------- layers ---------------- */

/* Runs the layer made by make() on the CPU and on the device: forward (train and eval), backward
 * with gradient gy, every parameter gradient and buffer. */
static void check_layer(const char *what, nl_module *(*make)(void), int ndim, const int64_t *in)
{
    nl_rng_seed(21);
    nl_module *mc = make();
    nl_rng_seed(21);
    nl_module *md = make();
    if (!mc || !md) return;
    CHECK(nl_module_to(md, dev) == NL_OK, "%s to %s: %s", what, nl_device_name(dev), nl_errmsg());
    for (int train = 1; train >= 0; train--) {
        nl_module_train(mc, train);
        nl_module_train(md, train);
        nl_tensor *x = pattern(NL_F32, ndim, in, 22), *xd = on_dev(x);
        nl_tensor *yc = NULL, *yd = NULL, *gc = NULL, *gd = NULL;
        nl_rng_seed(23); /* dropout masks */
        nl_status sc = nl_module_forward(mc, x, &yc);
        nl_rng_seed(23);
        nl_status sd = nl_module_forward(md, xd, &yd);
        CHECK(sc == NL_OK && sd == NL_OK, "%s forward: %s", what, nl_errmsg());
        if (sc == NL_OK && sd == NL_OK) {
            same(yc, yd, what);
            nl_tensor *gy = pattern(NL_F32, yc->ndim, yc->shape, 24), *gyd = on_dev(gy);
            nl_module_zero_grad(mc);
            nl_module_zero_grad(md);
            sc = nl_module_backward(mc, gy, &gc);
            sd = nl_module_backward(md, gyd, &gd);
            CHECK(sc == sd, "%s backward: the same status (%s)", what, nl_errmsg());
            if (sc == NL_OK && sd == NL_OK) same(gc, gd, "input gradient");
            nl_tensor_release(gy);
            nl_tensor_release(gyd);
        }
        nl_param *pc[32], *pd[32];
        int n = nl_module_params(mc, pc, 32, true);
        CHECK(nl_module_params(md, pd, 32, true) == n, "%s: the same parameters", what);
        for (int i = 0; i < n && i < 32; i++) {
            same(pc[i]->value, pd[i]->value, pc[i]->name);
            if (pc[i]->grad) same(pc[i]->grad, pd[i]->grad, "parameter gradient");
        }
        nl_tensor *rows[] = {x, xd, yc, yd, gc, gd};
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) nl_tensor_release(rows[k]);
    }
    nl_module_release(mc);
    nl_module_release(md);
}

static nl_module *mk_conv(void) { return net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, "stride", 2.0, "padding", 1.0, NULL); }
static nl_module *mk_conv1(void) { return net_make("Conv2d", "in", 2.0, "out", 5.0, "k", 1.0, "bias", 0.0, NULL); }
static nl_module *mk_maxpool(void) { return net_make("MaxPool2d", "k", 2.0, NULL); }
static nl_module *mk_avgpool(void) { return net_make("AvgPool2d", "k", 3.0, "stride", 2.0, "padding", 1.0, NULL); }
static nl_module *mk_bn(void) { return net_make("BatchNorm2d", "c", 3.0, NULL); }
static nl_module *mk_bn1(void) { return net_make("BatchNorm1d", "c", 6.0, NULL); }
static nl_module *mk_relu(void) { return net_make("ReLU", NULL); }
static nl_module *mk_leaky(void) { return net_make("LeakyReLU", "slope", 0.1, NULL); }
static nl_module *mk_gelu(void) { return net_make("GELU", NULL); }
static nl_module *mk_tanh(void) { return net_make("Tanh", NULL); }
static nl_module *mk_sigmoid(void) { return net_make("Sigmoid", NULL); }
static nl_module *mk_softmax(void) { return net_make("Softmax", NULL); }
static nl_module *mk_dropout(void) { return net_make("Dropout", "p", 0.3, NULL); }
static nl_module *mk_linear(void) { return net_make("Linear", "in", 6.0, "out", 4.0, NULL); }
static nl_module *mk_fakequant(void) { return net_make("FakeQuant", "bits", 6.0, NULL); }
static nl_module *mk_qatlinear(void) { return net_make("QATLinear", "in", 6.0, "out", 4.0, NULL); }
static nl_module *mk_qatconv(void) { return net_make("QATConv2d", "in", 3.0, "out", 4.0, "k", 3.0, NULL); }

static nl_module *mk_block(void)
{
    nl_module *kids[] = {mk_conv(), net_make("BatchNorm2d", "c", 4.0, NULL), mk_relu(), mk_maxpool(),
                         net_make("Flatten", NULL), net_make("Linear", "in", 16.0, "out", 3.0, NULL)};
    return net_container("Sequential", kids, 6);
}

static void check_layers(void)
{
    check_layer("Sequential", mk_block, 4, SHAPE(3, 3, 8, 8));
    check_layer("Conv2d", mk_conv, 4, SHAPE(2, 3, 7, 6));
    check_layer("Conv2d 1x1", mk_conv1, 4, SHAPE(3, 2, 4, 5));
    check_layer("MaxPool2d", mk_maxpool, 4, SHAPE(2, 3, 6, 5));
    check_layer("AvgPool2d", mk_avgpool, 4, SHAPE(2, 3, 7, 7));
    check_layer("BatchNorm2d", mk_bn, 4, SHAPE(4, 3, 5, 5));
    check_layer("BatchNorm1d", mk_bn1, 2, SHAPE(8, 6));
    check_layer("Linear", mk_linear, 2, SHAPE(5, 6));
    check_layer("Dropout", mk_dropout, 2, SHAPE(9, 7));
    nl_module *(*acts[])(void) = {mk_relu, mk_leaky, mk_gelu, mk_tanh, mk_sigmoid, mk_softmax};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) check_layer("activation", acts[i], 2, SHAPE(5, 7));
    check_layer("FakeQuant", mk_fakequant, 2, SHAPE(5, 7));
    check_layer("QATLinear", mk_qatlinear, 2, SHAPE(5, 6));
    check_layer("QATConv2d", mk_qatconv, 4, SHAPE(2, 3, 6, 6));
}

/* Cross-entropy (class labels, smoothing, probabilities) and MSE: loss, then dL/dinput. */
static void check_losses(void)
{
    for (int kind = 0; kind < 3; kind++) {
        nl_loss lc = {.kind = kind == 2 ? NL_LOSS_MSE : NL_LOSS_CROSS_ENTROPY, .label_smoothing = kind == 1 ? 0.1 : 0};
        nl_loss ld = lc;
        nl_tensor *x = pattern(NL_F32, 2, SHAPE(6, 5), 31), *xd = on_dev(x);
        nl_tensor *y = kind == 2 ? pattern(NL_F32, 2, SHAPE(6, 5), 32) : nl_tensor_from_data(NL_I32, 1, SHAPE(6), (int32_t[]){0, 4, 2, 2, 1, 3});
        nl_tensor *yd = on_dev(y);
        double vc = 0, vd = 1;
        CHECK(nl_loss_forward(&lc, x, y, &vc) == NL_OK && nl_loss_forward(&ld, xd, yd, &vd) == NL_OK,
              "loss forward: %s", nl_errmsg());
        CHECK(nl_device_kind(dev) == NL_SIM ? vc == vd : fabs(vc - vd) <= 1e-4 * (1 + fabs(vc)),
              "loss %d: %.9g on cpu, %.9g on %s", kind, vc, vd, nl_device_name(dev));
        nl_tensor *gc = NULL, *gd = NULL;
        nl_loss_backward(&lc, 1, &gc);
        nl_loss_backward(&ld, 1, &gd);
        same(gc, gd, "loss gradient");
        nl_tensor *rows[] = {x, xd, y, yd, gc, gd};
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) nl_tensor_release(rows[k]);
        nl_loss_clear(&lc);
        nl_loss_clear(&ld);
    }
    /* a class out of range on the device: the kernel marks it NaN, core names it (no transfer
     * of the labels in a good step) */
    nl_loss lb = {.kind = NL_LOSS_CROSS_ENTROPY};
    nl_tensor *xb = pattern(NL_F32, 2, SHAPE(3, 4), 34), *xbd = on_dev(xb);
    nl_tensor *yb = nl_tensor_from_data(NL_I32, 1, SHAPE(3), (int32_t[]){1, 7, 0}), *ybd = on_dev(yb);
    double vb = 0;
    nl_clearerr();
    CHECK(nl_loss_forward(&lb, xbd, ybd, &vb) == NL_EINVAL && strstr(nl_errmsg(), "target 7 (sample 2) is out of range"),
          "a bad class on %s: %s", nl_device_name(dev), nl_errmsg());
    nl_tensor *rb[] = {xb, xbd, yb, ybd};
    for (size_t k = 0; k < 4; k++) nl_tensor_release(rb[k]);
    nl_loss_clear(&lb);
    /* probabilities as targets */
    nl_loss lc = {.kind = NL_LOSS_CROSS_ENTROPY}, ld = lc;
    nl_tensor *x = pattern(NL_F32, 2, SHAPE(4, 3), 33), *xd = on_dev(x);
    nl_tensor *p = nl_tensor_from_data(NL_F32, 2, SHAPE(4, 3), (float[]){1, 0, 0, .5f, .5f, 0, 0, 0, 1, .2f, .3f, .5f});
    nl_tensor *pd = on_dev(p);
    double vc = 0, vd = 1;
    nl_loss_forward(&lc, x, p, &vc);
    nl_loss_forward(&ld, xd, pd, &vd);
    CHECK(nl_device_kind(dev) == NL_SIM ? vc == vd : fabs(vc - vd) <= 1e-4 * (1 + fabs(vc)),
          "soft-target loss: %.9g and %.9g", vc, vd);
    nl_tensor *rows[] = {x, xd, p, pd};
    for (size_t k = 0; k < 4; k++) nl_tensor_release(rows[k]);
    nl_loss_clear(&lc);
    nl_loss_clear(&ld);
}

/* Three steps of each optimizer (and clipping) on the same small network on both backends. */
static void check_optim(void)
{
    for (int kind = 0; kind < 4; kind++) {
        nl_optim_kind k = kind == 3 ? NL_OPTIM_SGD : (nl_optim_kind)kind;
        nl_optim_config cfg = nl_optim_default_config(k);
        cfg.lr = 0.05;
        cfg.weight_decay = 0.01;
        if (k == NL_OPTIM_SGD) cfg.momentum = 0.9, cfg.nesterov = kind == 3;
        nl_rng_seed(41);
        nl_module *mc = mk_linear();
        nl_rng_seed(41);
        nl_module *md = mk_linear();
        nl_module_to(md, dev);
        nl_optim *oc = nl_optim_new(k, mc, &cfg), *od = nl_optim_new(k, md, &cfg);
        CHECK(oc && od, "optimizer %d: %s", kind, nl_errmsg());
        for (int step = 0; oc && od && step < 3; step++) {
            nl_tensor *x = pattern(NL_F32, 2, SHAPE(5, 6), 42 + (uint64_t)step), *xd = on_dev(x);
            nl_tensor *yc = NULL, *yd = NULL, *gc = NULL, *gd = NULL;
            nl_optim_zero_grad(oc);
            nl_optim_zero_grad(od);
            nl_module_forward(mc, x, &yc);
            nl_module_forward(md, xd, &yd);
            nl_module_backward(mc, yc, &gc); /* the gradient of |y|^2 / 2 */
            nl_module_backward(md, yd, &gd);
            double nc = 0, nd = 1;
            nl_clip_grad_norm(mc, 0.5, &nc);
            nl_clip_grad_norm(md, 0.5, &nd);
            CHECK(nl_device_kind(dev) == NL_SIM ? nc == nd : fabs(nc - nd) <= 1e-4 * (1 + nc),
                  "gradient norm %.9g on cpu, %.9g on %s", nc, nd, nl_device_name(dev));
            CHECK(nl_optim_step(oc) == NL_OK && nl_optim_step(od) == NL_OK, "step: %s", nl_errmsg());
            nl_tensor *rows[] = {x, xd, yc, yd, gc, gd};
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) nl_tensor_release(rows[r]);
        }
        same(mc->params[0].value, md->params[0].value, "weights after the steps");
        same(mc->params[1].value, md->params[1].value, "bias after the steps");
        nl_optim_release(oc);
        nl_optim_release(od);
        nl_module_release(mc);
        nl_module_release(md);
    }
}

/* The integer inference and CSR kernels exist on the CPU only: a device refuses them. */
static void check_cpu_only(void)
{
    nl_backend *be = nl_backend_get(dev);
    const nl_opcode only[] = {NL_OP_QCONV2D, NL_OP_QUANTIZE, NL_OP_QPOOL2D, NL_OP_INT4_DEQUANT,
                              NL_OP_INT4_LINEAR, NL_OP_INT4_CONV2D, NL_OP_SPCONV2D, NL_OP_SPLINEAR};
    nl_tensor *d = nl_tensor_zeros(NL_F32, 2, SHAPE(2, 2), dev);
    for (size_t i = 0; i < sizeof only / sizeof only[0]; i++) {
        nl_op op = {.code = only[i], .dst = d, .src = {d, d, d}};
        CHECK(!be->supports(be, &op), "%s is left to the cpu", nl_opcode_name(only[i]));
        nl_clearerr();
        CHECK(nl_op_exec(&op) == NL_EUNSUPPORTED && strstr(nl_errmsg(), nl_device_name(dev)),
              "%s on %s: a clear refusal, got '%s'", nl_opcode_name(only[i]), nl_device_name(dev), nl_errmsg());
    }
    nl_tensor_release(d);
    /* and a quantized layer does not move there */
    nl_module *q = net_make("QLinear", "in", 4.0, "out", 2.0, NULL);
    nl_clearerr();
    CHECK(q && nl_module_to(q, dev) == NL_EUNSUPPORTED && strstr(nl_errmsg(), "QLinear runs on the CPU only"),
          "QLinear:to(%s) is refused: %s", nl_device_name(dev), nl_errmsg());
    CHECK(q && nl_tensor_device(q->params[0].value) == NL_CPU, "and nothing moved");
    nl_module_release(q);
}

/* Selection, scans and the shape operations built on copies, on views of every kind: where,
 * masked_fill, gather, index_select, sort, topk, cumsum, softmax along each dim, norm, var, cat,
 * stack, repeat. Index errors too: the kernel finds them on the device. */
static void check_selection(void)
{
    const nl_dtype dts[] = {NL_F32, NL_I32, NL_U8};
    for (int v = 0; v < 3; v++)
        for (size_t t = 0; t < 3; t++) {
            nl_tensor *a = pattern(dts[t], 3, SHAPE(5, 4, 3), 21), *ad = on_dev(a);
            nl_tensor *b = pattern(NL_F32, 1, SHAPE(3), 22), *bd = on_dev(b);
            nl_tensor *av = view(a, v), *adv = view(ad, v);
            nl_tensor *mc = nl_binary_scalar_new(NL_BIN_GT, av, 0, false), *md = nl_binary_scalar_new(NL_BIN_GT, adv, 0, false);
            nl_tensor *pairs[][2] = {
                {nl_where_new(mc, av, b), nl_where_new(md, adv, bd)},
                {nl_masked_fill_new(av, mc, -7), nl_masked_fill_new(adv, md, -7)},
                {nl_cumsum_new(av, 0), nl_cumsum_new(adv, 0)},
                {nl_cumsum_new(av, 2), nl_cumsum_new(adv, 2)},
                {nl_softmax_new(av, 0, false), nl_softmax_new(adv, 0, false)},
                {nl_softmax_new(av, 1, true), nl_softmax_new(adv, 1, true)},
                {nl_norm_new(av, 3, 1, false), nl_norm_new(adv, 3, 1, false)},
                {nl_var_new(av, -1, false, 1, true), nl_var_new(adv, -1, false, 1, true)},
                {nl_tensor_repeat(av, 4, SHAPE(2, 1, 3, 2)), nl_tensor_repeat(adv, 4, SHAPE(2, 1, 3, 2))},
                {nl_tensor_cat(2, (const nl_tensor *[]){av, av}, 1), nl_tensor_cat(2, (const nl_tensor *[]){adv, adv}, 1)},
                {nl_tensor_stack(2, (const nl_tensor *[]){av, av}, 3), nl_tensor_stack(2, (const nl_tensor *[]){adv, adv}, 3)},
            };
            const char *names[] = {"where", "masked_fill", "cumsum", "cumsum", "softmax", "log_softmax", "norm",
                                   "std", "repeat", "cat", "stack"};
            for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
                same(pairs[k][0], pairs[k][1], names[k]);
                nl_tensor_release(pairs[k][0]);
                nl_tensor_release(pairs[k][1]);
            }
            for (int dim = 0; dim < 3; dim++) { /* sort and topk, both ways; gather what sort found */
                for (int largest = 0; largest < 2; largest++) {
                    nl_tensor *vc, *ic, *vd, *id;
                    const int64_t k = largest ? 2 : -1;
                    nl_status sc = nl_sort_new(av, dim, k, largest, 1, &vc, &ic);
                    nl_status sd = nl_sort_new(adv, dim, k, largest, 1, &vd, &id);
                    CHECK(sc == NL_OK && sd == NL_OK, "sort on both: %s", nl_errmsg());
                    if (sc != NL_OK || sd != NL_OK) continue;
                    same(vc, vd, largest ? "topk values" : "sort values");
                    same(ic, id, largest ? "topk indices" : "sort indices");
                    nl_tensor *gc = nl_gather_new(av, dim, ic, 1), *gd = nl_gather_new(adv, dim, id, 1);
                    same(gc, gd, "gather");
                    same(vc, gd, "gather of sort's indices gives sort's values");
                    nl_tensor *row = nl_tensor_select(ic, dim, 0), *rowd = nl_tensor_select(id, dim, 0);
                    nl_tensor *line = row ? nl_tensor_reshape(row, 1, SHAPE(-1)) : NULL;
                    nl_tensor *lined = rowd ? nl_tensor_reshape(rowd, 1, SHAPE(-1)) : NULL;
                    nl_tensor *sc2 = nl_index_select_new(av, dim, line, 1), *sd2 = nl_index_select_new(adv, dim, lined, 1);
                    same(sc2, sd2, "index_select");
                    nl_tensor *rows[] = {vc, ic, vd, id, gc, gd, row, rowd, line, lined, sc2, sd2};
                    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) nl_tensor_release(rows[r]);
                }
            }
            nl_tensor *rows[] = {a, ad, b, bd, av, adv, mc, md};
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) nl_tensor_release(rows[r]);
        }
    /* an index out of range is found by the device's kernel and named */
    nl_tensor *xc = pattern(NL_F32, 2, SHAPE(2, 3), 23), *x = on_dev(xc);
    nl_tensor *ix = nl_tensor_zeros(NL_I32, 2, SHAPE(2, 1), dev);
    nl_fill(ix, 5);
    nl_clearerr();
    CHECK(!nl_gather_new(x, 1, ix, 1) && nl_errcode() == NL_EINVAL && strstr(nl_errmsg(), "index 5 out of range"),
          "gather on %s: a bad index is named: %s", nl_device_name(dev), nl_errmsg());
    nl_tensor_release(ix);
    nl_tensor_release(x);
    nl_tensor_release(xc);
}

/* Which check covers each opcode (a new opcode without a check fails the test). */
static void (*const coverage[NL_OPCODE_COUNT])(void) = {
    [NL_OP_FILL] = check_fill_copy, [NL_OP_COPY] = check_fill_copy,
    [NL_OP_BINARY] = check_binary, [NL_OP_BINARY_SCALAR] = check_binary,
    [NL_OP_UNARY] = check_unary_reduce, [NL_OP_REDUCE] = check_unary_reduce,
    [NL_OP_MATMUL] = check_matmul,
    [NL_OP_RAND_UNIFORM] = check_rand, [NL_OP_RAND_NORMAL] = check_rand,
    [NL_OP_CONV2D] = check_layers, [NL_OP_CONV2D_BWD_DATA] = check_layers,
    [NL_OP_CONV2D_BWD_FILTER] = check_layers, [NL_OP_POOL2D] = check_layers,
    [NL_OP_POOL2D_BWD] = check_layers, [NL_OP_BATCHNORM] = check_layers,
    [NL_OP_BATCHNORM_BWD] = check_layers, [NL_OP_ACT] = check_layers, [NL_OP_ACT_BWD] = check_layers,
    [NL_OP_SOFTMAX] = check_layers, [NL_OP_DROPOUT] = check_layers, [NL_OP_FAKEQUANT] = check_layers,
    [NL_OP_CROSS_ENTROPY] = check_losses, [NL_OP_CROSS_ENTROPY_BWD] = check_losses,
    [NL_OP_SGD_STEP] = check_optim, [NL_OP_ADAM_STEP] = check_optim,
    [NL_OP_QCONV2D] = check_cpu_only, [NL_OP_QUANTIZE] = check_cpu_only,
    [NL_OP_QPOOL2D] = check_cpu_only, [NL_OP_INT4_DEQUANT] = check_cpu_only,
    [NL_OP_INT4_LINEAR] = check_cpu_only, [NL_OP_INT4_CONV2D] = check_cpu_only,
    [NL_OP_SPCONV2D] = check_cpu_only, [NL_OP_SPLINEAR] = check_cpu_only,
    [NL_OP_WHERE] = check_selection, [NL_OP_GATHER] = check_selection, [NL_OP_CUMSUM] = check_selection,
    [NL_OP_SORT] = check_selection,
};

static void run_all_ops(void)
{
    void (*done[NL_OPCODE_COUNT])(void);
    int ndone = 0;
    for (int c = 0; c < NL_OPCODE_COUNT; c++) {
        CHECK(coverage[c] != NULL, "opcode %s has a backend check", nl_opcode_name((nl_opcode)c));
        bool seen = false;
        for (int k = 0; k < ndone; k++) seen |= done[k] == coverage[c];
        if (!coverage[c] || seen) continue;
        done[ndone++] = coverage[c];
        int before = mismatches;
        coverage[c]();
        printf("  %-8s %-24s %s\n", nl_device_name(dev), nl_opcode_name((nl_opcode)c),
               mismatches == before ? "same as cpu" : "DIFFERS");
    }
}

/* ---------------------------------------------------------------- devices --------------- */

static void test_names(void)
{
    CHECK(nl_device_parse("sim") == NL_SIM && nl_device_parse("sim:0") == NL_SIM, "sim is sim:0");
    CHECK(nl_device_parse("cuda:1") == nl_device_make(NL_CUDA, 1), "cuda:1 keeps its number");
    CHECK(nl_device_index(nl_device_parse("sim:3")) == 3 && nl_device_kind(nl_device_parse("sim:3")) == NL_SIM,
          "kind and number of sim:3");
    CHECK(strcmp(nl_device_name(nl_device_make(NL_SIM, 2)), "sim:2") == 0, "sim:2 is named so");
    CHECK(strcmp(nl_device_name(NL_CUDA), "cuda") == 0, "device 0 keeps its plain name");
    const char *bad[] = {"sim:", "sim:x", "sim:-1", "sim:16", "sim2", "tpu", "cpu:0x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(nl_device_parse(bad[i]) == NL_DEVICE_COUNT, "'%s' is not a device", bad[i]);
    nl_backend *s0 = nl_backend_get(NL_SIM), *s1 = nl_backend_get(nl_device_make(NL_SIM, 1));
    CHECK(s0 && s1 && s0 != s1 && s1->device == nl_device_make(NL_SIM, 1), "each number its own instance");
    nl_clearerr();
    CHECK(!nl_backend_get(nl_device_make(NL_CPU, 1)) && nl_errcode() == NL_EDEVICE &&
              strstr(nl_errmsg(), "cpu:1"), "cpu:1 does not exist: %s", nl_errmsg());
    /* between two devices (through the host) */
    nl_tensor *c = pattern(NL_F32, 2, SHAPE(3, 4), 51);
    nl_tensor *a = nl_tensor_to_device(c, NL_SIM), *b = a ? nl_tensor_to_device(a, nl_device_make(NL_SIM, 1)) : NULL;
    CHECK(b && nl_tensor_device(b) == nl_device_make(NL_SIM, 1), "sim:0 -> sim:1");
    dev = nl_device_make(NL_SIM, 1);
    if (b) same(c, b, "sim:0 -> sim:1 values");
    nl_tensor_release(a);
    nl_tensor_release(b);
    nl_tensor_release(c);
}

static void test_stats(void)
{
    nl_backend *be = nl_backend_get(NL_SIM);
    nl_device_stats st;
    be->stats(be, &st, true);
    nl_tensor *h = pattern(NL_F32, 2, SHAPE(8, 8), 61);
    nl_tensor *d = nl_tensor_to_device(h, NL_SIM);            /* 1 alloc, 256 bytes up */
    nl_tensor *e = nl_binary_new(NL_BIN_ADD, d, d);           /* 1 alloc, 1 launch */
    double v = 0;
    int64_t idx[2] = {1, 2};
    nl_tensor_get(e, idx, &v);                                /* 4 bytes down */
    nl_tensor *back = nl_tensor_host(e);                      /* 256 bytes down */
    be->stats(be, &st, false);
    CHECK(st.bytes_h2d == 256 && st.copies_h2d == 1, "h2d: %llu bytes in %llu copies",
          (unsigned long long)st.bytes_h2d, (unsigned long long)st.copies_h2d);
    CHECK(st.bytes_d2h == 260 && st.copies_d2h == 2 && st.syncs == 2, "d2h: %llu bytes in %llu copies, %llu syncs",
          (unsigned long long)st.bytes_d2h, (unsigned long long)st.copies_d2h, (unsigned long long)st.syncs);
    CHECK(st.launches == 1 && st.allocs == 2, "%llu launches, %llu allocations",
          (unsigned long long)st.launches, (unsigned long long)st.allocs);
    CHECK(st.mem_peak >= st.mem_current + 0 && st.mem_current >= 512, "memory %llu, peak %llu",
          (unsigned long long)st.mem_current, (unsigned long long)st.mem_peak);
    CHECK(back && v == 2 * nl_tensor_f32(h)[10] && nl_tensor_f32(back)[10] == (float)v, "values came back");
    uint64_t before = st.mem_current;
    nl_tensor_release(e);
    be->stats(be, &st, true);
    CHECK(st.mem_current == before - 256, "freeing gives memory back");
    be->stats(be, &st, false);
    CHECK(st.launches == 0 && st.bytes_h2d == 0 && st.mem_peak == st.mem_current, "reset zeroes the counts");
    nl_tensor_release(d);
    nl_tensor_release(back);
    nl_tensor_release(h);
}

/* The host cannot read sim memory: a child process that tries dies of SIGSEGV (a sanitizer
 * build reports the address and exits non-zero instead). */
static void test_protected(void)
{
    nl_tensor *d = nl_tensor_zeros(NL_F32, 1, SHAPE(16), NL_SIM);
    const volatile float *raw = (const float *)d->storage->ptr; /* what a stray host read would use */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        volatile float x = raw[3];
        (void)x;
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "a host read of sim memory faults (status %d)", status);
    double v = 1;
    CHECK(nl_tensor_get(d, (int64_t[]){3}, &v) == NL_OK && v == 0, "the backend reads it");
    nl_tensor_release(d);
}

int main(void)
{
    nl_init();
    test_names();
    test_stats();
    test_protected();
    nl_device devices[] = {NL_SIM, nl_device_make(NL_SIM, 1), NL_CUDA};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        if (!nl_backend_get(devices[i])) {
            SKIP("%s: %s", nl_device_name(devices[i]), nl_errmsg());
            continue;
        }
        dev = devices[i];
        run_all_ops();
    }
    return TEST_REPORT();
}
