/* test_sparse.c: sparse execution of pruned layers: the CSR kernels against the dense ones (Conv2d
 * with strides, padding, odd sizes; Linear with whole blocks, leftover rows and single rows; 0%
 * and 100% sparsity, empty rows), the thresholds, evaluation mode only, weights edited after the
 * CSR was made.
 *
 * Tolerance: the sparse kernels add the same products in another order than sgemm, so an output
 * may differ from the dense one by float rounding of its sum; each check allows
 * TOL * sum_k |w_k x_k| (+ |bias|), the scale of that rounding, with TOL = 1e-5 (about 84 float
 * epsilons; sums here have at most 300 terms). */
#include "nethelp.h"
#include "prune.h"

#include <stdlib.h>
#include <string.h>

static const double TOL = 1e-5;

static nl_tensor *randn(int ndim, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_normal(t, 0, 1);
    return t;
}

/* Zeroes a fraction about `sparsity` of w's elements at random, and every element of the rows
 * (output channels) listed in empty[0..nempty). */
static void sparsify(nl_tensor *w, double sparsity, const int *empty, int nempty)
{
    float *p = nl_tensor_f32(w);
    const int64_t n = nl_tensor_numel(w), row = n / w->shape[0];
    for (int64_t i = 0; i < n; i++)
        if (nl_rng_uniform01() < sparsity) p[i] = 0;
    for (int e = 0; e < nempty; e++) memset(p + empty[e] * row, 0, (size_t)row * sizeof *p);
}

/* m's output on x (a new tensor), sparse execution at threshold t (-1: off) in evaluation mode. */
static nl_tensor *run(nl_module *m, nl_tensor *x, double t, nl_sparse_kind kind)
{
    nl_sparse_set_threshold(kind, t);
    nl_tensor *y = NULL;
    if (nl_module_forward(m, x, &y) != NL_OK) {
        CHECK(0, "forward: %s", nl_errmsg());
        return NULL;
    }
    nl_tensor *c = nl_tensor_clone(y);
    nl_tensor_release(y);
    return c;
}

/* The rounding scale of each output: m's forward on |x| with |w| and |b|. */
static nl_tensor *abs_scale(nl_module *m, nl_tensor *x, nl_sparse_kind kind)
{
    nl_tensor *saved[2] = {NULL, NULL};
    for (int i = 0; i < m->nparams && i < 2; i++) {
        saved[i] = nl_tensor_clone(m->params[i].value);
        nl_unary(NL_UN_ABS, m->params[i].value, m->params[i].value);
    }
    nl_tensor *ax = nl_unary_new(NL_UN_ABS, x);
    nl_tensor *s = run(m, ax, -1, kind);
    for (int i = 0; i < m->nparams && i < 2; i++) {
        nl_copy(m->params[i].value, saved[i]);
        nl_tensor_release(saved[i]);
    }
    nl_tensor_release(ax);
    return s;
}

/* Checks that m's sparse eval output on x matches the dense one within TOL; returns the largest
 * difference over the scale. */
static double compare(nl_module *m, nl_tensor *x, nl_sparse_kind kind, const char *what)
{
    nl_module_train(m, false);
    nl_tensor *d = run(m, x, -1, kind);
    const int64_t before = nl_sparse_forwards();
    nl_tensor *s = run(m, x, 0, kind);
    CHECK(nl_sparse_forwards() == before + 1, "%s: the sparse kernel ran", what);
    nl_tensor *scale = abs_scale(m, x, kind);
    double worst = 0;
    int64_t bad = 0;
    for (int64_t i = 0; d && s && scale && i < nl_tensor_numel(d); i++) {
        const double diff = fabs((double)nl_tensor_f32(d)[i] - nl_tensor_f32(s)[i]);
        const double sc = nl_tensor_f32(scale)[i];
        bad += diff > TOL * sc;
        worst = fmax(worst, sc > 0 ? diff / sc : diff > 0 ? INFINITY : 0);
    }
    CHECK(d && s && bad == 0, "%s: %lld outputs beyond the tolerance (worst %.3g of the scale)", what,
          (long long)bad, worst);
    nl_tensor_release(d);
    nl_tensor_release(s);
    nl_tensor_release(scale);
    return worst;
}

static void test_conv_against_dense(void)
{
    static const struct {
        int n, c, o, h, w, k, stride, pad, bias;
    } cases[] = {
        {2, 3, 8, 9, 9, 3, 1, 1, 1},    /* "same", the block im2col path */
        {3, 4, 5, 11, 7, 3, 2, 1, 1},   /* strided, odd, non-square */
        {1, 2, 6, 6, 10, 5, 1, 0, 0},   /* no padding, no bias, one image (rows in parallel) */
        {2, 5, 7, 13, 13, 3, 3, 2, 1},  /* stride 3, padding 2 */
        {2, 32, 16, 8, 8, 3, 1, 1, 1},  /* 288 columns, 64 positions: a full chunk */
        {5, 3, 4, 12, 12, 1, 1, 0, 1},  /* 1x1 */
        {1, 3, 32, 32, 32, 3, 1, 1, 1}, /* the seed CNN's first layer on one image */
    };
    static const double sparsities[] = {0, 0.5, 0.9, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t s = 0; s < sizeof sparsities / sizeof sparsities[0]; s++) {
            nl_rng_seed(100 + c * 10 + s);
            nl_module *m = net_make("Conv2d", "in", (double)cases[c].c, "out", (double)cases[c].o, "k",
                                    (double)cases[c].k, "stride", (double)cases[c].stride, "padding",
                                    (double)cases[c].pad, "bias", (double)cases[c].bias, NULL);
            const int empty[] = {0, cases[c].o - 1};
            sparsify(m->params[0].value, sparsities[s], empty, sparsities[s] > 0 ? 2 : 0);
            nl_tensor *x = randn(4, (int64_t[]){cases[c].n, cases[c].c, cases[c].h, cases[c].w});
            char what[64];
            snprintf(what, sizeof what, "conv case %zu at %.0f%%", c, 100 * sparsities[s]);
            compare(m, x, NL_SPARSE_CONV, what);
            nl_tensor_release(x);
            nl_module_release(m);
        }
    }
}

static void test_linear_against_dense(void)
{
    static const struct {
        int rows, in, out, bias;
    } cases[] = {
        {16, 7, 3, 1},    /* one block */
        {37, 100, 10, 1}, /* two blocks and five rows left over */
        {64, 300, 9, 0},  /* no bias */
        {48, 1024, 128, 1}, /* blocks on two threads (up to 50%) */
    };
    static const double sparsities[] = {0, 0.5, 0.9, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t s = 0; s < sizeof sparsities / sizeof sparsities[0]; s++) {
            nl_rng_seed(200 + c * 10 + s);
            nl_module *m = net_make("Linear", "in", (double)cases[c].in, "out", (double)cases[c].out,
                                    "bias", (double)cases[c].bias, NULL);
            const int empty[] = {1};
            sparsify(m->params[0].value, sparsities[s], empty, sparsities[s] > 0 ? 1 : 0);
            nl_tensor *x = randn(2, (int64_t[]){cases[c].rows, cases[c].in});
            char what[64];
            snprintf(what, sizeof what, "linear case %zu at %.0f%%", c, 100 * sparsities[s]);
            compare(m, x, NL_SPARSE_LINEAR, what);
            nl_tensor_release(x);
            nl_module_release(m);
        }
    }
    /* A 3-D input [2, 9, in]: 18 rows, one block and two left over. */
    nl_rng_seed(250);
    nl_module *m = net_make("Linear", "in", 20.0, "out", 6.0, NULL);
    sparsify(m->params[0].value, 0.7, NULL, 0);
    nl_tensor *x = randn(3, (int64_t[]){2, 9, 20});
    compare(m, x, NL_SPARSE_LINEAR, "linear on a 3-D input");
    nl_tensor_release(x);
    nl_module_release(m);
}

/* The op itself on fewer rows than a block (the layer runs those dense): the gathered dot. */
static void test_linear_op_few_rows(void)
{
    nl_rng_seed(300);
    nl_module *m = net_make("Linear", "in", 50.0, "out", 4.0, NULL);
    const int empty[] = {2};
    sparsify(m->params[0].value, 0.6, empty, 1);
    nl_module_train(m, false);
    nl_sparse_csr csr = {0};
    bool use = false;
    nl_sparse_set_threshold(NL_SPARSE_LINEAR, 0);
    CHECK(nl_sparse_prepare(&csr, m, NL_SPARSE_LINEAR, &use) == NL_OK && use, "prepare: %s", nl_errmsg());
    const int32_t *rp = nl_tensor_data(csr.rowptr);
    CHECK(rp[0] == 0 && rp[3] == rp[2] && rp[4] == csr.nnz, "row pointers, empty row 3");
    for (int rows = 1; rows <= 3; rows++) {
        nl_tensor *x = randn(2, (int64_t[]){rows, 50});
        nl_tensor *y = nl_tensor_empty(NL_F32, 2, (int64_t[]){rows, 4}, NL_CPU);
        nl_op op = {.code = NL_OP_SPLINEAR, .dst = y,
                    .src = {x, csr.rowptr, csr.col, csr.val, m->params[1].value}};
        CHECK(nl_op_exec(&op) == NL_OK, "splinear: %s", nl_errmsg());
        const float *w = nl_tensor_f32(m->params[0].value), *b = nl_tensor_f32(m->params[1].value);
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < 4; o++) {
                double ref = b[o], scale = fabs(b[o]);
                for (int k = 0; k < 50; k++) {
                    ref += (double)w[o * 50 + k] * nl_tensor_f32(x)[r * 50 + k];
                    scale += fabs((double)w[o * 50 + k] * nl_tensor_f32(x)[r * 50 + k]);
                }
                CHECK(fabs(nl_tensor_f32(y)[r * 4 + o] - ref) <= TOL * scale, "row %d out %d: %g vs %g",
                      r, o, nl_tensor_f32(y)[r * 4 + o], ref);
            }
        nl_tensor_release(x);
        nl_tensor_release(y);
    }
    nl_sparse_clear(&csr);
    nl_module_release(m);
}

/* The sparse outputs do not depend on the thread count (the sizes are above the kernels' threshold
 * for going parallel: images in parallel, then one image's output rows in parallel). */
static void test_threads(void)
{
    nl_rng_seed(400);
    nl_module *m = net_make("Conv2d", "in", 16.0, "out", 32.0, "k", 3.0, "padding", 1.0, NULL);
    nl_module *m1 = net_make("Conv2d", "in", 32.0, "out", 64.0, "k", 3.0, "padding", 1.0, NULL);
    sparsify(m->params[0].value, 0.7, NULL, 0);
    sparsify(m1->params[0].value, 0.7, NULL, 0);
    nl_module_train(m, false);
    nl_module_train(m1, false);
    const int threads = nl_get_threads();
    nl_tensor *x = randn(4, (int64_t[]){8, 16, 24, 24}), *x1 = randn(4, (int64_t[]){1, 32, 32, 32});
    nl_set_threads(1);
    nl_tensor *a = run(m, x, 0, NL_SPARSE_CONV), *a1 = run(m1, x1, 0, NL_SPARSE_CONV);
    nl_set_threads(2);
    nl_tensor *b = run(m, x, 0, NL_SPARSE_CONV), *b1 = run(m1, x1, 0, NL_SPARSE_CONV);
    nl_set_threads(threads);
    CHECK(a && b && memcmp(nl_tensor_data(a), nl_tensor_data(b), (size_t)nl_tensor_numel(a) * 4) == 0,
          "images in parallel: same bits on 1 and 2 threads");
    CHECK(a1 && b1 && memcmp(nl_tensor_data(a1), nl_tensor_data(b1), (size_t)nl_tensor_numel(a1) * 4) == 0,
          "rows in parallel: same bits on 1 and 2 threads");
    nl_tensor *t[] = {a, b, a1, b1, x, x1};
    for (int i = 0; i < 6; i++) nl_tensor_release(t[i]);
    nl_module_release(m);
    nl_module_release(m1);
}

/* Thresholds decide; training mode and disabled thresholds run dense; weight edits are seen. */
static void test_decisions_and_edits(void)
{
    nl_rng_seed(500);
    nl_module *kids[] = {net_make("Conv2d", "in", 4.0, "out", 8.0, "k", 3.0, "padding", 1.0, NULL)};
    nl_module *net = net_container("Sequential", kids, 1), *m = net->children[0];
    nl_tensor *w = m->params[0].value;
    /* 75% of 288 weights: 216 zeros */
    CHECK(nl_prune_magnitude(net, 0.75, NL_PRUNE_SCOPE_LAYER, NULL, 0) == NL_OK, "%s", nl_errmsg());
    nl_tensor *x = randn(4, (int64_t[]){3, 4, 10, 10});
    nl_module_train(m, false);
    int64_t n0 = nl_sparse_forwards();
    nl_tensor *y;
    nl_tensor *d = run(m, x, 0.76, NL_SPARSE_CONV);
    CHECK(nl_sparse_forwards() == n0, "75%% zeros under a threshold of 76%%: dense");
    nl_prune_layer l;
    CHECK(nl_prune_layers(net, &l, 1) == 1 && !l.sparse && l.zeros == 216, "the report says dense");
    nl_tensor_release(run(m, x, 0.75, NL_SPARSE_CONV));
    CHECK(nl_sparse_forwards() == n0 + 1, "at the threshold: sparse");
    CHECK(nl_prune_layers(net, &l, 1) == 1 && l.sparse && strcmp(l.path, "1") == 0, "the report says sparse");
    nl_sparse_set_threshold(NL_SPARSE_CONV, -1);
    CHECK(nl_sparse_threshold(NL_SPARSE_CONV) == -1 && nl_prune_layers(net, &l, 1) == 1 && !l.sparse,
          "off: the report says dense");
    nl_module_train(m, true);
    nl_sparse_set_threshold(NL_SPARSE_CONV, 0);
    CHECK(nl_module_forward(m, x, &y) == NL_OK, "%s", nl_errmsg());
    nl_tensor_release(y);
    CHECK(nl_sparse_forwards() == n0 + 1, "training mode: dense");
    nl_module_train(m, false);
    CHECK(nl_sparse_set_threshold(NL_SPARSE_CONV, 1.5) == NL_EINVAL && strstr(nl_errmsg(), "[0, 1]"),
          "threshold above 1: %s", nl_errmsg());
    CHECK(nl_sparse_set_threshold(NL_SPARSE_CONV, NAN) == NL_EINVAL, "NaN threshold");
    CHECK(nl_sparse_threshold(NL_SPARSE_CONV) == 0, "a refused threshold changes nothing");

    /* An edit after the CSR was made: one weight, then the whole weight, then back to dense. */
    nl_tensor_release(run(m, x, 0.5, NL_SPARSE_CONV));
    float *p = nl_tensor_f32(w);
    int64_t at = 0;
    while (p[at] == 0) at++;
    p[at] = 3.5f;
    compare(m, x, NL_SPARSE_CONV, "after one weight changed");
    nl_tensor *y1 = run(m, x, 0.5, NL_SPARSE_CONV);
    double moved = 0;
    for (int64_t i = 0; y1 && d && i < nl_tensor_numel(d); i++)
        moved = fmax(moved, fabs(nl_tensor_f32(y1)[i] - nl_tensor_f32(d)[i]));
    CHECK(moved > 0.1, "the edit shows in the output (moved %g)", moved);
    nl_tensor_release(y1);
    nl_fill(w, 0);
    nl_tensor *z = run(m, x, 0.5, NL_SPARSE_CONV);
    const float *b = nl_tensor_f32(m->params[1].value);
    bool bias_only = z != NULL;
    for (int64_t i = 0; z && i < nl_tensor_numel(z); i++) bias_only &= nl_tensor_f32(z)[i] == b[(i / 100) % 8];
    CHECK(bias_only, "weight:fill(0) after the CSR was made: the output is the bias");
    nl_fill(w, 0.25);
    n0 = nl_sparse_forwards();
    compare(m, x, NL_SPARSE_CONV, "dense weights at threshold 0");
    nl_tensor *full = run(m, x, 0.5, NL_SPARSE_CONV);
    CHECK(nl_sparse_forwards() == n0 + 1, "no zeros any more: dense at 50%%");
    nl_tensor_release(full);
    nl_tensor_release(z);
    nl_tensor_release(d);
    nl_tensor_release(x);
    nl_module_release(net);
}

int main(void)
{
    nl_init();
    test_conv_against_dense();
    test_linear_against_dense();
    test_linear_op_few_rows();
    test_threads();
    test_decisions_and_edits();
    for (int k = 0; k < NL_SPARSE_KINDS; k++)
        nl_sparse_set_threshold((nl_sparse_kind)k, nl_sparse_default_threshold[k]);
    return TEST_REPORT();
}
