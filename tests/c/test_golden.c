/* test_golden.c: nnlab against PyTorch 1.13 on the golden files of tests/golden/make_golden.py:
 * forward, input gradient and parameter gradients of every layer type, the losses, 5 steps of
 * each optimizer on a tiny CNN, clip_grad_norm, and a checkpoint written by Python.
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

/* Forward and backward of m (a lone layer) against DATA/<dir>. */
static void layer_case(const char *dir, nl_module *m, bool training)
{
    if (!m) return;
    nl_module_train(m, training);
    for (int i = 0; i < m->nparams; i++) fill(dir, m->params[i].name, m->params[i].value);
    nl_tensor *x = golden(dir, "x"), *gy = golden(dir, "gy"), *y = NULL, *gx = NULL;
    nl_tensor *want_y = golden(dir, "y"), *want_gx = golden(dir, "gx");
    nl_module_zero_grad(m);
    CHECK(nl_module_forward(m, x, &y) == NL_OK, "%s forward: %s", dir, nl_errmsg());
    compare(dir, "output", y, want_y);
    CHECK(nl_module_backward(m, gy, &gx) == NL_OK, "%s backward: %s", dir, nl_errmsg());
    compare(dir, "grad input", gx, want_gx);
    for (int i = 0; i < m->nparams; i++) {
        char name[64];
        nl_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s.%s", p->name, p->grad ? "grad" : "after");
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

static void loss_case(const char *dir, nl_loss_kind kind, double smoothing)
{
    nl_loss l = {.kind = kind, .label_smoothing = smoothing};
    nl_tensor *x = golden(dir, "x"), *target = golden(dir, "target"), *gx = NULL;
    nl_tensor *want = golden(dir, "loss"), *want_gx = golden(dir, "gx");
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
    test_optimizers();
    test_torch_checkpoint();
    return TEST_REPORT();
}
