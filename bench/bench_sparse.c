/* bench_sparse.c: where sparse execution of a pruned layer starts to beat dense, on this machine.
 * The seed CNN's layers (conv 3->32 k3 p1 on 32x32, conv 32->64 k3 p1 on 16x16, linear 4096->10)
 * are pruned by magnitude to each sparsity and timed forward in evaluation mode through the
 * module, with the sparse path forced on (threshold 0, so the per-forward check of the weight is
 * counted) and off, interleaved; each figure is the best of REPS samples. The crossover printed for
 * a layer is the lowest sparsity from which sparse wins at every higher one measured; the defaults
 * in core/compress/prune.c come from these lines. Information only. */
#include "prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { REPS = 15, NSPARS = 14 };
static const double sparsities[NSPARS] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.98};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_sparse: %s: %s\n", what, nl_errmsg());
    exit(1);
}

typedef struct {
    const char *name;
    nl_sparse_kind kind;
    const char *type;
    double args[3];
    double padding;
    int64_t in_shape[4]; /* per image */
    int in_ndim;
} layer_case;

static const layer_case cases[] = {
    {"conv 3->32 k3 p1, 32x32", NL_SPARSE_CONV, "Conv2d", {3, 32, 3}, 1, {3, 32, 32}, 3},
    {"conv 32->64 k3 p1, 16x16", NL_SPARSE_CONV, "Conv2d", {32, 64, 3}, 1, {32, 16, 16}, 3},
    {"linear 4096->10", NL_SPARSE_LINEAR, "Linear", {4096, 10}, 0, {4096}, 1},
};

static nl_module *make_layer(const layer_case *c)
{
    const nl_module_type *t = nl_module_type_find(c->type);
    double a[NL_MAX_ARGS];
    nl_module_default_args(t, a);
    for (int i = 0; i < t->npos; i++) a[i] = c->args[i];
    if (c->kind == NL_SPARSE_CONV) a[nl_module_arg_index(t, "padding")] = c->padding;
    nl_module *m = nl_module_new(t, a);
    if (!m) die(c->type);
    return m;
}

/* A Linear given fewer rows than a block of the sparse kernel runs dense (core/nn/linear.c); for the
 * figures at batch 1 its sparse path is timed here as the layer would run it: the check of the
 * weight (nl_sparse_prepare), then the op. */
static nl_sparse_csr direct_csr;
static bool direct; /* time m's sparse path this way */

static void direct_sparse_linear(nl_module *m, nl_tensor *x)
{
    static nl_tensor *y;
    const nl_tensor *w = m->params[0].value;
    bool use;
    if (!y && !(y = nl_tensor_empty(NL_F32, 2, (int64_t[]){x->shape[0], w->shape[0]}, NL_CPU)))
        die("output");
    if (nl_sparse_prepare(&direct_csr, m, NL_SPARSE_LINEAR, &use) != NL_OK || !use) die("prepare");
    const nl_param *b = nl_module_param(m, "bias");
    nl_op op = {.code = NL_OP_SPLINEAR, .dst = y,
                .src = {x, direct_csr.rowptr, direct_csr.col, direct_csr.val, b ? b->value : NULL}};
    if (nl_op_exec(&op) != NL_OK) die("splinear");
}

/* Seconds of iters forwards of m on x. */
static double time_forward(nl_module *m, nl_tensor *x, int iters)
{
    double t0 = now();
    for (int i = 0; i < iters; i++) {
        if (direct && nl_sparse_threshold(NL_SPARSE_LINEAR) >= 0) {
            direct_sparse_linear(m, x);
            continue;
        }
        nl_tensor *y;
        if (nl_module_forward(m, x, &y) != NL_OK) die("forward");
        nl_tensor_release(y);
    }
    return (now() - t0) / iters;
}

int main(void)
{
    nl_init();
    nl_rng_seed(1);
    printf("forward in evaluation mode, best of %d interleaved samples, %d threads; ratio = dense / sparse\n",
           REPS, nl_get_threads());
    double crossover[NL_SPARSE_KINDS][2];
    for (int k = 0; k < NL_SPARSE_KINDS; k++) crossover[k][0] = crossover[k][1] = 0;
    const int batches[2] = {64, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int b = 0; b < 2; b++) {
            const layer_case *lc = &cases[c];
            int64_t shape[4] = {batches[b]};
            for (int d = 0; d < lc->in_ndim; d++) shape[d + 1] = lc->in_shape[d];
            nl_tensor *x = nl_tensor_empty(NL_F32, lc->in_ndim + 1, shape, NL_CPU);
            if (!x || nl_rand_uniform(x, -1, 1) != NL_OK) die("input");
            direct = lc->kind == NL_SPARSE_LINEAR && batches[b] < 16;
            printf("\n%s, batch %d%s\n  sparsity   dense ms  sparse ms   ratio\n", lc->name, batches[b],
                   direct ? " (the layer runs dense below 16 rows; sparse timed as check + op)" : "");
            double win_from = -1;
            for (int s = 0; s < NSPARS; s++) {
                nl_module *m = make_layer(lc);
                if (nl_prune_magnitude(m, sparsities[s], NL_PRUNE_SCOPE_LAYER, NULL, 0) != NL_OK) die("prune");
                nl_module_train(m, false);
                /* about 2 ms a sample */
                nl_sparse_set_threshold(lc->kind, -1);
                double once = time_forward(m, x, 1);
                int iters = once > 2e-3 ? 1 : (int)(2e-3 / (once > 1e-7 ? once : 1e-7)) + 1;
                double dense = 1e9, sparse = 1e9;
                for (int r = 0; r < REPS; r++) {
                    nl_sparse_set_threshold(lc->kind, -1);
                    double t = time_forward(m, x, iters);
                    dense = t < dense ? t : dense;
                    nl_sparse_set_threshold(lc->kind, 0);
                    t = time_forward(m, x, iters);
                    sparse = t < sparse ? t : sparse;
                }
                printf("  %7.0f%%  %9.4f  %9.4f  %6.2fx\n", 100 * sparsities[s], 1e3 * dense,
                       1e3 * sparse, dense / sparse);
                if (sparse < dense && win_from < 0) win_from = sparsities[s];
                if (sparse >= dense) win_from = -1;
                nl_module_release(m);
                nl_sparse_clear(&direct_csr);
            }
            nl_tensor_release(x);
            if (win_from < 0) printf("  sparse does not win up to %.0f%%\n", 100 * sparsities[NSPARS - 1]);
            else printf("  sparse wins from %.0f%%\n", 100 * win_from);
            double *cr = &crossover[lc->kind][b];
            const double w = win_from < 0 ? 1 : win_from;
            *cr = w > *cr ? w : *cr;
        }
    }
    printf("\ncrossover (the highest over the layers of a kind; 100%%: sparse never won)\n");
    for (int k = 0; k < NL_SPARSE_KINDS; k++)
        printf("  %-6s  batch 64: %3.0f%%  batch 1: %3.0f%%  (default threshold %.0f%%)\n",
               k == NL_SPARSE_CONV ? "conv" : "linear", 100 * crossover[k][0], 100 * crossover[k][1],
               100 * nl_sparse_default_threshold[k]);
    return 0;
}
