/* test_golden.c: nnlab against PyTorch 1.13 on the golden files of tests/golden/make_golden.py:
 * forward, input gradient and parameter gradients of every layer type that trains (the integer
 * inference layers aside: test_every_type_has_a_case), the losses, 5 steps of each optimizer on a
 * tiny CNN, clip_grad_norm, and a checkpoint written by Python.
 * An element agrees when |nnlab - torch| <= ATOL + RTOL * |torch|; each compared tensor prints
 * its worst ratio |nnlab - torch| / (ATOL + RTOL * |torch|) (1 is the limit). */
#include "checkpoint.h"
#include "nethelp.h"

#include <string.h>
#include <unistd.h>

#define RTOL 1e-5
#define ATOL 1e-6
#define DATA "tests/golden/data"

/* DATA/<dir>/<name>.npy, or NULL if that file does not exist. */
static nl_tensor *golden(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, DATA "/%s/%s.npy", dir, name);
    if (access(path, R_OK) != 0) return NULL;
    nl_tensor *t = nl_npy_load(path);
    CHECK(t != NULL, "load %s: %s", path, nl_errmsg());
    return t;
}

/* One CHECK for the whole tensor; prints the worst element's ratio to the tolerance. */
static void compare(const char *dir, const char *what, const nl_tensor *got, const nl_tensor *want)
{
    if (!got || !want) {
        CHECK(0, "%s %s: %s", dir, what, got ? "no golden file" : "no result");
        return;
    }
    char s1[64], s2[64];
    if (!nl_same_shape(got, want)) {
        CHECK(0, "%s %s: shape %s, torch has %s", dir, what,
              nl_shape_str(s1, sizeof s1, got->ndim, got->shape),
              nl_shape_str(s2, sizeof s2, want->ndim, want->shape));
        return;
    }
    nl_tensor *g = nl_tensor_to_dtype(got, NL_F32), *w = nl_tensor_to_dtype(want, NL_F32);
    const float *pg = nl_tensor_f32(g), *pw = nl_tensor_f32(w);
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < nl_tensor_numel(w); i++) {
        double r = fabs((double)pg[i] - pw[i]) / (ATOL + RTOL * fabs(pw[i]));
        if (!(r <= worst)) { /* NaN counts as worst */
            worst = isnan(r) ? INFINITY : r;
            at = i;
        }
    }
    printf("  %-22s %-22s worst %.3f\n", dir, what, worst);
    CHECK(worst <= 1, "%s %s: element %lld is %.9g, torch has %.9g", dir, what, (long long)at,
          pg[at], pw[at]);
    nl_tensor_release(g);
    nl_tensor_release(w);
}

/* Copies DATA/<dir>/<name>.npy into dst. */
static void fill(const char *dir, const char *name, nl_tensor *dst)
{
    nl_tensor *t = golden(dir, name);
    CHECK(t && nl_copy(dst, t) == NL_OK, "%s: %s into the module: %s", dir, name, nl_errmsg());
    nl_tensor_release(t);
}

/* The module types some case ran (test_every_type_has_a_case). */
static const nl_module_type *covered[64];
static int ncovered;

static void cover(const nl_module *m)
{
    bool seen = false;
    for (int i = 0; i < ncovered; i++) seen = seen || covered[i] == m->type;
    if (!seen && ncovered < 64) covered[ncovered++] = m->type;
    for (int c = 0; c < m->nchildren; c++) cover(m->children[c]);
}

enum { MAX_PARAMS = 16 };

/* A parameter or buffer of a case's module, and the index of the container's module that holds
 * it (-1 for a lone layer). */
typedef struct {
    nl_param *p;
    int child;
} case_param;

/* The parameters and buffers of m. Returns their number. */
static int case_params(nl_module *m, case_param *ps)
{
    int n = 0;
    nl_module *const self[1] = {m};
    nl_module *const *mods = m->nchildren ? m->children : self;
    for (int c = 0; c < (m->nchildren ? m->nchildren : 1); c++)
        for (int i = 0; i < mods[c]->nparams && n < MAX_PARAMS; i++, n++)
            ps[n] = (case_param){&mods[c]->params[i], m->nchildren ? c : -1};
    return n;
}

/* PyTorch's name of p followed by suffix: "weight" for a layer's, "<i>.weight" for the i-th
 * (0-based) module's in a container. */
static const char *torch_name(char *buf, size_t n, const case_param *p, const char *suffix)
{
    if (p->child >= 0) snprintf(buf, n, "%d.%s%s", p->child, p->p->name, suffix);
    else snprintf(buf, n, "%s%s", p->p->name, suffix);
    return buf;
}

/* Forward and backward of m (a layer, or a container of layers) against DATA/<dir>. */
static void layer_case(const char *dir, nl_module *m, bool training)
{
    if (!m) return;
    cover(m);
    nl_module_train(m, training);
    case_param ps[MAX_PARAMS];
    char name[64];
    const int np = case_params(m, ps);
    for (int i = 0; i < np; i++) fill(dir, torch_name(name, sizeof name, &ps[i], ""), ps[i].p->value);
    nl_tensor *x = golden(dir, "x"), *gy = golden(dir, "gy"), *y = NULL, *gx = NULL;
    nl_tensor *want_y = golden(dir, "y"), *want_gx = golden(dir, "gx");
    nl_module_zero_grad(m);
    CHECK(nl_module_forward(m, x, &y) == NL_OK, "%s forward: %s", dir, nl_errmsg());
    compare(dir, "output", y, want_y);
    CHECK(nl_module_backward(m, gy, &gx) == NL_OK, "%s backward: %s", dir, nl_errmsg());
    compare(dir, "grad input", gx, want_gx);
    for (int i = 0; i < np; i++) {
        nl_param *p = ps[i].p;
        torch_name(name, sizeof name, &ps[i], p->grad ? ".grad" : ".after");
        nl_tensor *want = golden(dir, name);
        if (p->grad || training) compare(dir, name, p->grad ? p->grad : p->value, want);
        nl_tensor_release(want);
    }
    nl_tensor_release(x);
    nl_tensor_release(gy);
    nl_tensor_release(y);
    nl_tensor_release(gx);
    nl_tensor_release(want_y);
    nl_tensor_release(want_gx);
    nl_module_release(m);
}

/* The value of DATA/<dir>/<name>.npy, a scalar. */
static double golden_scalar(const char *dir, const char *name)
{
    nl_tensor *t = golden(dir, name);
    double v = NAN;
    CHECK(t && nl_tensor_numel(t) == 1 && nl_tensor_get(t, (int64_t[NL_MAX_DIMS]){0}, &v) == NL_OK,
          "%s: %s is a scalar", dir, name);
    nl_tensor_release(t);
    return v;
}

static void loss_case(const char *dir, nl_loss_kind kind, double smoothing)
{
    nl_loss l = {.kind = kind, .label_smoothing = smoothing};
    nl_tensor *x = golden(dir, "x"), *target = golden(dir, "target"), *gx = NULL;
    nl_tensor *want = golden(dir, "loss"), *want_gx = golden(dir, "gx"), *batch = NULL;
    if (kind == NL_LOSS_DISTILL) { /* the teacher passes its input, the teacher's logits, through */
        l.teacher = net_make("Identity", NULL);
        l.temperature = golden_scalar(dir, "temperature");
        l.alpha = golden_scalar(dir, "alpha");
        l.batch = batch = golden(dir, "batch");
    }
    double value = NAN;
    CHECK(nl_loss_forward(&l, x, target, &value) == NL_OK, "%s forward: %s", dir, nl_errmsg());
    nl_tensor *got = nl_tensor_from_data(NL_F32, 0, NULL, &(float){(float)value});
    compare(dir, "loss", got, want);
    CHECK(nl_loss_backward(&l, 1, &gx) == NL_OK, "%s backward: %s", dir, nl_errmsg());
    compare(dir, "grad input", gx, want_gx);
    nl_loss_clear(&l);
    nl_tensor_release(got);
    nl_tensor_release(x);
    nl_tensor_release(target);
    nl_tensor_release(gx);
    nl_tensor_release(want);
    nl_tensor_release(want_gx);
    nl_tensor_release(batch);
}

static void test_layers(void)
{
    layer_case("linear", net_make("Linear", "in", 5.0, "out", 3.0, NULL), true);
    layer_case("conv_s2p1", net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, "stride", 2.0,
                                     "padding", 1.0, NULL), true);
    layer_case("conv_s1p0", net_make("Conv2d", "in", 2.0, "out", 3.0, "k", 3.0, NULL), true);
    layer_case("maxpool", net_make("MaxPool2d", "k", 2.0, NULL), true);
    layer_case("maxpool_k3s2p1",
               net_make("MaxPool2d", "k", 3.0, "stride", 2.0, "padding", 1.0, NULL), true);
    layer_case("avgpool", net_make("AvgPool2d", "k", 3.0, "stride", 2.0, "padding", 1.0, NULL),
               true);
    layer_case("gap", net_make("GlobalAvgPool", NULL), true);
    layer_case("bn2d_train", net_make("BatchNorm2d", "c", 3.0, NULL), true);
    layer_case("bn2d_eval", net_make("BatchNorm2d", "c", 3.0, NULL), false);
    layer_case("bn1d", net_make("BatchNorm1d", "c", 6.0, NULL), true);
    /* SyncBatchNorm in one process is BatchNorm (tests/dist checks it under several ranks). */
    layer_case("bn2d_train", net_make("SyncBatchNorm", "c", 3.0, NULL), true);
    layer_case("bn1d_3d", net_make("SyncBatchNorm", "c", 4.0, NULL), true);
    layer_case("relu", net_make("ReLU", NULL), true);
    layer_case("leakyrelu", net_make("LeakyReLU", "slope", 0.2, NULL), true);
    layer_case("gelu", net_make("GELU", NULL), true);
    layer_case("sigmoid", net_make("Sigmoid", NULL), true);
    layer_case("tanh", net_make("Tanh", NULL), true);
    layer_case("softmax", net_make("Softmax", NULL), true);
    layer_case("flatten", net_make("Flatten", NULL), true);
    loss_case("ce", NL_LOSS_CROSS_ENTROPY, 0);
    loss_case("ce_ls", NL_LOSS_CROSS_ENTROPY, 0.1);
    loss_case("ce_prob", NL_LOSS_CROSS_ENTROPY, 0);
    loss_case("mse", NL_LOSS_MSE, 0);
}

/* make_golden.py's more_layers(): the containers, Identity, Dropout, FakeQuant and the QAT
 * layers; batch 1, odd shapes and more options of the layers; more losses. */
static void test_more_layers(void)
{
    layer_case("identity", net_make("Identity", NULL), true);
    layer_case("dropout_eval", net_make("Dropout", "p", 0.5, NULL), false);
    layer_case("dropout_p0", net_make("Dropout", "p", 0.0, NULL), true);
    nl_module *res[3] = { /* no bias before batch norm: its gradient would be 0 up to rounding */
        net_make("Conv2d", "in", 3.0, "out", 3.0, "k", 3.0, "padding", 1.0, "bias", 0.0, NULL),
        net_make("BatchNorm2d", "c", 3.0, NULL), net_make("ReLU", NULL),
    };
    layer_case("residual", net_container("Residual", res, 3), true);
    nl_module *seq[5] = {
        net_make("Conv2d", "in", 2.0, "out", 3.0, "k", 3.0, "padding", 1.0, NULL), net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL), net_make("Flatten", NULL),
        net_make("Linear", "in", 12.0, "out", 4.0, NULL),
    };
    layer_case("sequential", net_container("Sequential", seq, 5), true);
    layer_case("linear_b1", net_make("Linear", "in", 7.0, "out", 1.0, NULL), true);
    layer_case("linear_3d_nobias", net_make("Linear", "in", 4.0, "out", 2.0, "bias", 0.0, NULL), true);
    layer_case("conv_b1_s3_nobias", net_make("Conv2d", "in", 2.0, "out", 3.0, "k", 2.0, "stride", 3.0,
                                             "bias", 0.0, NULL), true);
    layer_case("maxpool_b1_k3", net_make("MaxPool2d", "k", 3.0, NULL), true);
    layer_case("avgpool_k2s1", net_make("AvgPool2d", "k", 2.0, "stride", 1.0, NULL), true);
    layer_case("bn2d_b1", net_make("BatchNorm2d", "c", 2.0, NULL), true);
    layer_case("bn1d_3d", net_make("BatchNorm1d", "c", 4.0, NULL), true);
    layer_case("bn1d_eval_b1", net_make("BatchNorm1d", "c", 5.0, NULL), false);
    layer_case("leakyrelu_default", net_make("LeakyReLU", NULL), true);
    layer_case("softmax_3d", net_make("Softmax", NULL), true);
    layer_case("fakequant_train", net_make("FakeQuant", NULL), true);
    layer_case("fakequant_eval4", net_make("FakeQuant", "bits", 4.0, NULL), false);
    layer_case("qatlinear", net_make("QATLinear", "in", 6.0, "out", 3.0, NULL), true);
    layer_case("qatconv2d", net_make("QATConv2d", "in", 2.0, "out", 3.0, "k", 3.0, "stride", 2.0,
                                     "padding", 1.0, "bits", 4.0, NULL), true);
    loss_case("ce_b1", NL_LOSS_CROSS_ENTROPY, 0);
    loss_case("ce_prob_ls", NL_LOSS_CROSS_ENTROPY, 0.1);
    loss_case("mse_3d", NL_LOSS_MSE, 0);
    loss_case("distill", NL_LOSS_DISTILL, 0);
}

/* Every module type has a golden case but the integer inference layers, which have no backward
 * and which test_quant.c checks against float references and the fake-quantized network they are
 * converted from (PyTorch's int8 kernels round their own way, not to within 1e-5). */
static void test_every_type_has_a_case(void)
{
    static const char *const integer[] = {"Quantize", "Dequantize", "QConv2d", "QLinear",
                                          "QMaxPool2d", "Int4Linear", "Int4Conv2d"};
    for (int i = 0; nl_module_types[i]; i++) {
        bool found = false;
        for (int k = 0; k < ncovered; k++) found = found || covered[k] == nl_module_types[i];
        for (size_t k = 0; k < sizeof integer / sizeof integer[0]; k++)
            found = found || strcmp(integer[k], nl_module_types[i]->name) == 0;
        CHECK(found, "%s has a golden case", nl_module_types[i]->name);
    }
}

/* ---------------------------------------------------------------- optimizers ------------ */

/* make_golden.py's tiny CNN with the initial weights of DATA/optim_init. */
static nl_module *tiny_cnn(void)
{
    nl_module *kids[5] = {
        net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Flatten", NULL),
        net_make("Linear", "in", 64.0, "out", 5.0, NULL),
    };
    nl_module *net = net_container("Sequential", kids, 5);
    for (int c = 0; net && c < net->nchildren; c++)
        for (int i = 0; i < net->children[c]->nparams; i++) {
            char name[64];
            snprintf(name, sizeof name, "%d.%s", c, net->children[c]->params[i].name);
            fill("optim_init", name, net->children[c]->params[i].value);
        }
    return net;
}

/* Compares every parameter of the tiny CNN with DATA/<dir>/<c>.<name>[suffix]. */
static void compare_params(const char *dir, nl_module *net, const char *suffix, bool grads)
{
    for (int c = 0; c < net->nchildren; c++)
        for (int i = 0; i < net->children[c]->nparams; i++) {
            nl_param *p = &net->children[c]->params[i];
            char name[64];
            snprintf(name, sizeof name, "%d.%s%s", c, p->name, suffix);
            nl_tensor *want = golden(dir, name);
            compare(dir, name, grads ? p->grad : p->value, want);
            nl_tensor_release(want);
        }
}

/* Cross-entropy of the net on the golden batch, and its backward into the parameter grads. */
static double loss_and_grads(nl_module *net, nl_loss *l, nl_tensor *x, nl_tensor *labels)
{
    nl_tensor *logits = NULL, *g = NULL, *gx = NULL;
    double value = NAN;
    nl_module_zero_grad(net);
    bool ok = nl_module_forward(net, x, &logits) == NL_OK &&
              nl_loss_forward(l, logits, labels, &value) == NL_OK &&
              nl_loss_backward(l, 1, &g) == NL_OK && nl_module_backward(net, g, &gx) == NL_OK;
    CHECK(ok, "tiny CNN step: %s", nl_errmsg());
    nl_tensor_release(logits);
    nl_tensor_release(g);
    nl_tensor_release(gx);
    return value;
}

static void test_optimizers(void)
{
    static const struct {
        const char *name;
        nl_optim_kind kind;
        nl_optim_config cfg;
    } runs[] = {
        {"sgd", NL_OPTIM_SGD, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4}},
        {"sgd_nesterov",
         NL_OPTIM_SGD,
         {.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 5e-4}},
        {"sgd_dampening", NL_OPTIM_SGD, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5}},
        {"sgd_plain", NL_OPTIM_SGD, {.lr = 0.1}},
        {"adam",
         NL_OPTIM_ADAM,
         {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 5e-4}},
        {"adamw",
         NL_OPTIM_ADAMW,
         {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}},
    };
    nl_tensor *x = golden("optim_init", "x"), *labels = golden("optim_init", "labels");
    nl_loss l = {.kind = NL_LOSS_CROSS_ENTROPY};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char dir[64];
        snprintf(dir, sizeof dir, "optim_%s", runs[r].name);
        nl_module *net = tiny_cnn();
        nl_optim *o = nl_optim_new(runs[r].kind, net, &runs[r].cfg);
        CHECK(o != NULL, "%s: %s", dir, nl_errmsg());
        if (!o) continue;
        float losses[5];
        for (int s = 0; s < 5; s++) {
            losses[s] = (float)loss_and_grads(net, &l, x, labels);
            CHECK(nl_optim_step(o) == NL_OK, "%s step: %s", dir, nl_errmsg());
        }
        int64_t five[1] = {5};
        nl_tensor *got = nl_tensor_from_data(NL_F32, 1, five, losses),
                  *want = golden(dir, "losses");
        compare(dir, "losses", got, want);
        compare_params(dir, net, "", false);
        nl_tensor_release(got);
        nl_tensor_release(want);
        nl_optim_release(o);
        nl_module_release(net);
    }
    /* clip_grad_norm_ on the first step's gradients */
    nl_module *net = tiny_cnn();
    loss_and_grads(net, &l, x, labels);
    double total = NAN;
    CHECK(nl_clip_grad_norm(net, 0.5, &total) == NL_OK, "clip: %s", nl_errmsg());
    nl_tensor *got = nl_tensor_from_data(NL_F32, 0, NULL, &(float){(float)total});
    nl_tensor *want = golden("clip", "total_norm");
    compare("clip", "total_norm", got, want);
    compare_params("clip", net, ".grad", true);
    nl_tensor_release(got);
    nl_tensor_release(want);
    nl_module_release(net);
    nl_loss_clear(&l);
    nl_tensor_release(x);
    nl_tensor_release(labels);
}

/* The same initial CNN, saved by Python (safetensors_check.write) with nnlab's architecture. */
static void test_torch_checkpoint(void)
{
    nl_module *net = nl_checkpoint_load_module(DATA "/torch_cnn.safetensors");
    CHECK(net != NULL, "load the checkpoint Python wrote: %s", nl_errmsg());
    if (!net) return;
    nl_tensor *x = golden("optim_init", "x"), *want = golden("optim_init", "logits"), *y = NULL;
    CHECK(nl_module_forward(net, x, &y) == NL_OK, "forward: %s", nl_errmsg());
    compare("torch_cnn.safetensors", "logits", y, want);
    compare_params("optim_init", net, "", false);
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_tensor_release(want);
    nl_module_release(net);
}

int main(void)
{
    nl_init();
    printf("nnlab vs PyTorch: worst |diff| / (%g + %g |torch|) per tensor (at most 1 passes)\n",
           ATOL, RTOL);
    test_layers();
    test_more_layers();
    test_every_type_has_a_case();
    test_optimizers();
    test_torch_checkpoint();
    return TEST_REPORT();
}
