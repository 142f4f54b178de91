/* bench_layers.c: forward and backward time of each layer of the seed CNN (conv3-32 k3 p1, ReLU,
 * pool, conv32-64 k3 p1, ReLU, pool, flatten, linear 4096-10) at batch 64 on 32x32 images, and the
 * training images per second of the whole net's forward + backward. Backward skips dL/dx where a
 * training step does not need it (the net's input, hence the first layer). Each figure is the best
 * of REPS runs (the machine may be shared; the best is the least disturbed). Information only. */
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { BATCH = 64, REPS = 20, MAX_LAYERS = 16 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_layers: %s: %s\n", what, nl_errmsg());
    exit(1);
}

/* Appends a layer to net; types that are not registered (yet) are left out. */
static void add(nl_module *net, const char *type, int npos, const double *pos, const char *opt, double v)
{
    const nl_module_type *t = nl_module_type_find(type);
    if (!t) return;
    double a[NL_MAX_ARGS];
    nl_module_default_args(t, a);
    for (int i = 0; i < npos; i++) a[i] = pos[i];
    if (opt) a[nl_module_arg_index(t, opt)] = v;
    nl_module *m = nl_module_new(t, a);
    if (!m || nl_module_add(net, m) != NL_OK) die(type);
    nl_module_release(m);
}

static nl_tensor *random_like(const nl_tensor *t)
{
    nl_tensor *r = nl_tensor_empty_like(t);
    if (!r || nl_rand_uniform(r, -1, 1) != NL_OK) die("random");
    return r;
}

/* One forward + backward of m on x with gradient gy (and dL/dx when want_gx); the seconds of each
 * half. */
static void step(nl_module *m, nl_tensor *x, nl_tensor *gy, bool want_gx, double *fwd, double *bwd)
{
    nl_tensor *y, *gx = NULL;
    double t0 = now();
    if (nl_module_forward(m, x, &y) != NL_OK) die("forward");
    double t1 = now();
    if (nl_module_backward(m, gy, want_gx ? &gx : NULL) != NL_OK) die("backward");
    double t2 = now();
    nl_tensor_release(y);
    nl_tensor_release(gx);
    *fwd = t1 - t0;
    *bwd = t2 - t1;
}

int main(void)
{
    nl_init();
    nl_rng_seed(1);
    nl_module *net = nl_module_new(nl_module_type_find("Sequential"), NULL);
    add(net, "Conv2d", 3, (double[]){3, 32, 3}, "padding", 1);
    add(net, "ReLU", 0, NULL, NULL, 0);
    add(net, "MaxPool2d", 1, (double[]){2}, NULL, 0);
    add(net, "Conv2d", 3, (double[]){32, 64, 3}, "padding", 1);
    add(net, "ReLU", 0, NULL, NULL, 0);
    add(net, "MaxPool2d", 1, (double[]){2}, NULL, 0);
    add(net, "Flatten", 0, NULL, NULL, 0);
    add(net, "Linear", 2, (double[]){4096, 10}, NULL, 0);
    const int n = net->nchildren;

    nl_tensor *x = nl_tensor_empty(NL_F32, 4, (int64_t[]){BATCH, 3, 32, 32}, NL_CPU);
    nl_rand_uniform(x, -1, 1);
    nl_tensor *y;
    if (nl_module_forward(net, x, &y) != NL_OK) die("forward");
    nl_tensor *gy = random_like(y);
    nl_tensor_release(y);

    /* Each layer alone on a copy of the input it saw in the net. */
    printf("seed CNN, batch %d, threads %d, best of %d\n", BATCH, nl_get_threads(), REPS);
    printf("%-42s %10s %10s\n", "layer", "fwd ms", "bwd ms");
    for (int i = 0; i < n && i < MAX_LAYERS; i++) {
        nl_module *m = net->children[i];
        nl_tensor *in = nl_tensor_clone(m->input), *g = random_like(m->output);
        double f = 1e30, b = 1e30;
        for (int r = 0; r < REPS; r++) {
            double fr, br;
            step(m, in, g, i > 0, &fr, &br);
            f = fr < f ? fr : f;
            b = br < b ? br : b;
        }
        char name[128];
        nl_module_repr(m, name, sizeof name);
        printf("%-42s %10.3f %10.3f\n", name, 1e3 * f, 1e3 * b);
        nl_tensor_release(in);
        nl_tensor_release(g);
    }
    printf("(each layer alone; in the net, a ReLU's backward runs inside the MaxPool2d after it)\n");
    /* The whole net, as a training step runs it. */
    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        double f, b;
        step(net, x, gy, false, &f, &b);
        best = f + b < best ? f + b : best;
    }
    printf("%-42s %10.3f ms per step, %.0f images/s\n", "net forward + backward", 1e3 * best,
           BATCH / best);
    nl_tensor_release(gy);
    nl_tensor_release(x);
    nl_module_release(net);
    return 0;
}
