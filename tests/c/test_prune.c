/* test_prune.c: pruning masks through training, magnitude pruning (layer and global), channel
 * pruning that keeps the remaining channels' outputs (Residual coupling, Flatten -> Linear,
 * BatchNorm), low-rank factorization at full rank, snapshots, the distillation loss. */
#include "checkpoint.h"
#include "nethelp.h"
#include "prune.h"
#include "train.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static nl_tensor *randn(int ndim, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_normal(t, 0, 1);
    return t;
}

static int64_t zeros_of(const nl_tensor *t)
{
    int64_t z = 0;
    for (int64_t i = 0; i < nl_tensor_numel(t); i++) z += nl_tensor_f32(t)[i] == 0;
    return z;
}

static double max_diff(const nl_tensor *a, const nl_tensor *b)
{
    double d = 0;
    for (int64_t i = 0; i < nl_tensor_numel(a); i++)
        d = fmax(d, fabs((double)nl_tensor_f32(a)[i] - nl_tensor_f32(b)[i]));
    return d;
}

/* conv(3, 8) -> relu -> pool -> flatten -> linear(8*4*4, 16) -> relu -> linear(16, 4) */
static nl_module *small_net(void)
{
    nl_module *kids[] = {
        net_make("Conv2d", "in", 3.0, "out", 8.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Flatten", NULL),
        net_make("Linear", "in", 128.0, "out", 16.0, NULL),
        net_make("ReLU", NULL),
        net_make("Linear", "in", 16.0, "out", 4.0, NULL),
    };
    return net_container("Sequential", kids, 7);
}

static void test_magnitude_and_training(void)
{
    nl_rng_seed(1);
    nl_module *net = small_net();
    nl_module *conv = net->children[0], *fc = net->children[4];
    CHECK(nl_prune_magnitude(net, 0.5, NL_PRUNE_SCOPE_LAYER, NULL, 0) == NL_OK, "%s", nl_errmsg());
    CHECK(zeros_of(conv->params[0].value) == 108 && zeros_of(fc->params[0].value) == 1024,
          "half of each layer: %lld %lld", (long long)zeros_of(conv->params[0].value),
          (long long)zeros_of(fc->params[0].value));
    /* The pruned ones are the smallest. */
    const float *w = nl_tensor_f32(conv->params[0].value);
    const uint8_t *mask = nl_tensor_data(nl_prune_mask(conv));
    float kept_min = INFINITY;
    for (int i = 0; i < 216; i++) if (mask[i]) kept_min = fminf(kept_min, fabsf(w[i]));
    CHECK(kept_min > 0, "kept weights nonzero");
    nl_tensor *orig = nl_tensor_clone(conv->params[0].value);

    /* Global: 80% of all weights, the layers' shares differ. */
    CHECK(nl_prune_magnitude(net, 0.8, NL_PRUNE_SCOPE_GLOBAL, NULL, 0) == NL_OK, "%s", nl_errmsg());
    nl_prune_layer ls[4];
    int n = nl_prune_layers(net, ls, 4);
    int64_t total = 0, zeros = 0;
    for (int i = 0; i < n; i++) total += ls[i].params, zeros += ls[i].zeros;
    CHECK(n == 3 && zeros == llround(0.8 * total), "global: %lld of %lld", (long long)zeros, (long long)total);
    CHECK(strcmp(ls[1].path, "5") == 0, "path %s", ls[1].path);
    /* Amount below the current sparsity changes nothing. */
    CHECK(nl_prune_magnitude(net, 0.1, NL_PRUNE_SCOPE_LAYER, NULL, 0) == NL_OK, "lower amount");
    n = nl_prune_layers(net, ls, 4);
    int64_t z2 = 0;
    for (int i = 0; i < n; i++) z2 += ls[i].zeros;
    CHECK(z2 == zeros, "never unprunes: %lld %lld", (long long)z2, (long long)zeros);
    CHECK(nl_prune_magnitude(net, 1.5, NL_PRUNE_SCOPE_LAYER, NULL, 0) == NL_EINVAL, "bad amount");

    /* Training steps keep the zeros; the kept weights move. */
    nl_tensor *before = nl_tensor_clone(fc->params[0].value);
    int64_t fc_zeros = zeros_of(fc->params[0].value);
    nl_optim *o = nl_optim_new(NL_OPTIM_ADAM, net, NULL);
    nl_loss loss = {.kind = NL_LOSS_CROSS_ENTROPY};
    int64_t xs[4] = {4, 3, 8, 8}, yn = 4;
    nl_tensor *x = randn(4, xs);
    nl_tensor *y = nl_tensor_from_data(NL_I32, 1, &yn, (int32_t[]){0, 1, 2, 3});
    for (int s = 0; s < 3; s++) {
        nl_step_result r;
        CHECK(nl_train_step(net, &loss, o, x, y, 0, NULL, &r) == NL_OK && r.updated, "step %s", nl_errmsg());
    }
    CHECK(zeros_of(fc->params[0].value) == fc_zeros, "zeros survive: %lld %lld",
          (long long)zeros_of(fc->params[0].value), (long long)fc_zeros);
    CHECK(max_diff(before, fc->params[0].value) > 0, "kept weights trained");
    const uint8_t *fm = nl_tensor_data(nl_prune_mask(fc));
    int64_t grads = 0;
    for (int64_t i = 0; i < nl_tensor_numel(fc->params[0].grad); i++)
        grads += !fm[i] && nl_tensor_f32(fc->params[0].grad)[i] != 0;
    CHECK(grads == 0, "masked gradients are zero (%lld)", (long long)grads);

    /* Checkpoints carry the masks as u8 tensors, and loading brings them back. */
    char path[] = "/tmp/nl_prune_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(nl_checkpoint_save_module(path, net, NULL) == NL_OK, "%s", nl_errmsg());
    nl_st_file *f = nl_st_open(path);
    const nl_st_entry *e = f ? nl_st_find(f, "4.weight_mask") : NULL;
    CHECK(e && e->dtype == NL_U8, "mask saved as u8");
    nl_st_close(f);
    nl_module *back = nl_checkpoint_load_module(path);
    unlink(path);
    CHECK(back && nl_prune_mask(back->children[4]) &&
          memcmp(nl_tensor_data(nl_prune_mask(back->children[4])), fm, 2048) == 0, "mask loaded");
    nl_prune_remove_masks(back);
    CHECK(back && !nl_prune_mask(back->children[4]), "masks removed");
    CHECK(back && nl_prune_masks_from_zeros(back) == 3, "masks from zeros");
    CHECK(back && memcmp(nl_tensor_data(nl_prune_mask(back->children[4])), fm, 2048) == 0, "same mask");
    nl_prune_remove_masks(net);
    CHECK(!nl_prune_mask(fc) && fc->nparams == 2, "masks removed");

    nl_module_release(back);
    nl_tensor_release(orig);
    nl_tensor_release(before);
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_loss_clear(&loss);
    nl_optim_release(o);
    nl_module_release(net);
}

/* Zeroes rows `rows` of a layer's weight and bias (or a BatchNorm's gamma and beta). */
static void zero_rows(nl_module *m, const int *rows, int n)
{
    for (int p = 0; p < m->nparams; p++) {
        nl_tensor *t = m->params[p].value;
        if (strcmp(m->params[p].name, "running_mean") == 0 || strcmp(m->params[p].name, "running_var") == 0)
            continue;
        int64_t rest = nl_tensor_numel(t) / t->shape[0];
        for (int i = 0; i < n; i++) memset(nl_tensor_f32(t) + rows[i] * rest, 0, (size_t)rest * 4);
    }
}

static void test_channels(void)
{
    nl_rng_seed(2);
    nl_module *block[] = {
        net_make("Conv2d", "in", 8.0, "out", 8.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("BatchNorm2d", "c", 8.0, NULL),
    };
    nl_module *kids[] = {
        net_make("Conv2d", "in", 3.0, "out", 8.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("BatchNorm2d", "c", 8.0, NULL),
        net_make("ReLU", NULL),
        net_container("Residual", block, 2),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Conv2d", "in", 8.0, "out", 6.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("Flatten", NULL),
        net_make("Linear", "in", 96.0, "out", 5.0, NULL),
    };
    nl_module *net = net_container("Sequential", kids, 9);
    nl_module *res = net->children[3];
    /* Running statistics that differ per channel, so slicing them matters. */
    nl_module *bns[2] = {net->children[1], res->children[1]};
    for (int b = 0; b < 2; b++) {
        nl_rand_uniform(nl_module_param(bns[b], "running_mean")->value, -1, 1);
        nl_rand_uniform(nl_module_param(bns[b], "running_var")->value, 0.5, 2);
    }
    const int gone_a[] = {1, 5}, gone_b[] = {0, 3};
    zero_rows(net->children[0], gone_a, 2);
    zero_rows(bns[0], gone_a, 2);
    zero_rows(res->children[0], gone_a, 2);
    zero_rows(bns[1], gone_a, 2);
    zero_rows(net->children[5], gone_b, 2);
    nl_module_train(net, false);
    int64_t xs[4] = {2, 3, 8, 8};
    nl_tensor *x = randn(4, xs), *y0 = NULL, *y1 = NULL;
    CHECK(nl_module_forward(net, x, &y0) == NL_OK, "%s", nl_errmsg());
    nl_module *old_conv = nl_module_retain(net->children[0]);
    nl_tensor *old_out = nl_tensor_clone(old_conv->output);
    int64_t macs0, macs1, out[4];
    int nd;
    nl_module_infer(net, 4, xs, &nd, out, &macs0);

    int64_t removed = 0;
    CHECK(nl_prune_channels(net, 0.25, 1, &removed) == NL_OK, "%s", nl_errmsg());
    CHECK(removed == 4, "removed %lld", (long long)removed);
    CHECK(net->children[0]->args[1] == 6 && res->children[0]->args[0] == 6 &&
          res->children[0]->args[1] == 6 && net->children[1]->args[0] == 6 &&
          res->children[1]->args[0] == 6 && net->children[5]->args[0] == 6 &&
          net->children[5]->args[1] == 4 && net->children[8]->args[0] == 64 &&
          net->children[8]->args[1] == 5, "shapes shrunk");
    CHECK(nl_module_forward(net, x, &y1) == NL_OK, "%s", nl_errmsg());
    CHECK(y1 && max_diff(y0, y1) < 1e-5, "same output: %g", y1 ? max_diff(y0, y1) : -1.0);
    /* The first conv's remaining channels: the same sums, though a BLAS kernel may block a GEMM
     * with fewer rows differently (OpenBLAS's Haswell sgemm does), so allow rounding. */
    const int keep[] = {0, 2, 3, 4, 6, 7};
    nl_tensor *now = net->children[0]->output;
    double d = 0;
    for (int n = 0; n < 2; n++)
        for (int k = 0; k < 6; k++)
            for (int i = 0; i < 64; i++)
                d = fmax(d, fabs(nl_tensor_f32(now)[(n * 6 + k) * 64 + i] -
                                 nl_tensor_f32(old_out)[(n * 8 + keep[k]) * 64 + i]));
    CHECK(d < 1e-6, "remaining channels the same: %g", d);
    nl_module_infer(net, 4, xs, &nd, out, &macs1);
    CHECK(macs1 < macs0, "fewer multiply-adds %lld < %lld", (long long)macs1, (long long)macs0);
    CHECK(nl_prune_channels(net, 1.0, 1, NULL) == NL_EINVAL, "bad amount");

    nl_module_release(old_conv);
    nl_tensor_release(old_out);
    nl_tensor_release(x);
    nl_tensor_release(y0);
    nl_tensor_release(y1);
    nl_module_release(net);
}

static void test_lowrank(void)
{
    nl_rng_seed(3);
    nl_module *lin = net_make("Linear", "in", 7.0, "out", 5.0, NULL);
    nl_module *conv = net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, "padding", 1.0, "stride", 2.0, NULL);
    nl_module *layers[2] = {lin, conv};
    int64_t xs[2][4] = {{3, 7}, {2, 3, 9, 9}};
    for (int l = 0; l < 2; l++) {
        nl_tensor *x = randn(l ? 4 : 2, xs[l]), *y0 = NULL, *y1 = NULL, *y2 = NULL;
        nl_module_forward(layers[l], x, &y0);
        nl_module *full = nl_lowrank_factorize_layer(layers[l], 100, 0);
        CHECK(full && full->nchildren == 2, "factorized: %s", nl_errmsg());
        CHECK(full && full->children[0]->args[1] == (l ? 4 : 5), "capped at full rank");
        if (full) nl_module_forward(full, x, &y1);
        CHECK(y1 && max_diff(y0, y1) < 1e-5, "full rank reproduces: %g", y1 ? max_diff(y0, y1) : -1.0);
        nl_module *low = nl_lowrank_factorize_layer(layers[l], 1, 0);
        if (low) nl_module_forward(low, x, &y2);
        CHECK(y2 && max_diff(y0, y2) > 1e-3, "rank 1 differs");
        nl_tensor *s = nl_lowrank_spectrum(layers[l]);
        CHECK(s && nl_tensor_numel(s) == (l ? 4 : 5) && nl_tensor_f32(s)[0] >= nl_tensor_f32(s)[1],
              "spectrum sorted");
        CHECK(s && nl_lowrank_rank_for_energy(s, 1.0) == nl_tensor_numel(s), "energy 1: full rank");
        CHECK(s && nl_lowrank_rank_for_energy(s, 1e-9) == 1, "tiny energy: rank 1");
        nl_tensor_release(s);
        nl_module_release(full);
        nl_module_release(low);
        nl_tensor_release(x);
        nl_tensor_release(y0);
        nl_tensor_release(y1);
        nl_tensor_release(y2);
    }
    CHECK(nl_lowrank_factorize_layer(lin, 0, 2.0) == NULL, "bad energy");
    /* In a net: only the layers that get smaller are replaced. */
    nl_module *net = small_net();
    int count = -1;
    CHECK(nl_lowrank_factorize(net, 4, 0, &count) == NL_OK && count == 2, "count %d", count);
    CHECK(strcmp(net->children[4]->type->name, "Sequential") == 0, "linear replaced");
    nl_module_release(net);
    nl_module_release(lin);
    nl_module_release(conv);
}

/* Whether every parameter of a and b has the same name and bits. */
static bool same_bits(nl_module *a, nl_module *b)
{
    nl_param *pa[32], *pb[32];
    int na = nl_module_params(a, pa, 32, true), nb = nl_module_params(b, pb, 32, true);
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (strcmp(pa[i]->name, pb[i]->name) || !nl_same_shape(pa[i]->value, pb[i]->value) ||
            memcmp(nl_tensor_data(pa[i]->value), nl_tensor_data(pb[i]->value),
                   (size_t)nl_tensor_numel(pa[i]->value) * nl_dtype_info(pa[i]->value->dtype)->size))
            return false;
    return true;
}

static void test_snapshot(void)
{
    nl_rng_seed(4);
    nl_module *net = small_net();
    nl_snapshot *s0 = nl_snapshot_take(net);
    char *arch0 = nl_checkpoint_arch_json(net);
    nl_module *copy = nl_checkpoint_arch_build(arch0, "test", -1);
    nl_snapshot_restore(s0, copy);
    CHECK(same_bits(net, copy), "restore into a fresh copy");
    nl_prune_magnitude(net, 0.7, NL_PRUNE_SCOPE_GLOBAL, NULL, 0);
    nl_snapshot *s1 = nl_snapshot_take(net);
    nl_prune_channels(net, 0.5, 2, NULL);
    int count;
    nl_lowrank_factorize(net, 2, 0, &count);
    char *arch2 = nl_checkpoint_arch_json(net);
    CHECK(strcmp(arch0, arch2) != 0, "architecture changed");
    CHECK(nl_snapshot_restore(s1, net) == NL_OK, "%s", nl_errmsg());
    CHECK(nl_prune_mask(net->children[0]) != NULL, "masks back");
    CHECK(nl_snapshot_restore(s0, net) == NL_OK, "%s", nl_errmsg());
    char *arch3 = nl_checkpoint_arch_json(net);
    CHECK(strcmp(arch0, arch3) == 0, "architecture back");
    CHECK(same_bits(net, copy), "bit-identical weights, no masks");
    CHECK(nl_snapshot_bytes(s0) == 4 * (216 + 8 + 2048 + 16 + 64 + 4), "bytes %lld",
          (long long)nl_snapshot_bytes(s0));
    nl_module *lone = net_make("ReLU", NULL);
    CHECK(nl_snapshot_restore(s0, lone) == NL_EINVAL, "another type refused");
    nl_module_release(lone);
    free(arch0);
    free(arch2);
    free(arch3);
    nl_snapshot_free(s0);
    nl_snapshot_free(s1);
    nl_module_release(copy);
    nl_module_release(net);
}

/* Distillation (f32 kernels) against a direct reference in double and finite differences. */
static void test_distill(void)
{
    nl_module *teacher = net_make("Identity", NULL); /* the batch is the teacher's logits */
    int64_t two[2] = {1, 2};
    nl_tensor *zs = nl_tensor_zeros(NL_F32, 2, two, NL_CPU);
    int64_t one = 1;
    nl_tensor *y0 = nl_tensor_from_data(NL_I32, 1, &one, (int32_t[]){0});
    nl_loss l = {.kind = NL_LOSS_DISTILL, .teacher = nl_module_retain(teacher), .temperature = 2, .alpha = 0.5};
    double v = -1;
    l.batch = zs;
    CHECK(nl_loss_forward(&l, zs, y0, &v) == NL_OK, "%s", nl_errmsg());
    CHECK_CLOSE(v, 0.5 * log(2.0), 0, 1e-6); /* equal logits: KL 0, CE log 2 (in f32, as on a device) */
    CHECK(l.batch == NULL, "batch cleared");
    CHECK(nl_loss_forward(&l, zs, y0, &v) == NL_EINVAL, "no batch: an error");

    const float s[6] = {0.3f, -1.2f, 2.0f, 1.5f, 0.1f, -0.4f}, t[6] = {1.0f, 0.5f, -0.5f, 2.0f, -1.0f, 0.0f};
    const int32_t cls[2] = {2, 0};
    int64_t shape[2] = {2, 3}, n = 2;
    nl_tensor *st = nl_tensor_from_data(NL_F32, 2, shape, s), *tt = nl_tensor_from_data(NL_F32, 2, shape, t);
    nl_tensor *y = nl_tensor_from_data(NL_I32, 1, &n, cls);
    const double T = 4, alpha = 0.9;
    l.temperature = T;
    l.alpha = alpha;
    double ref = 0;
    for (int i = 0; i < 2; i++) {
        double zt = 0, zs2 = 0, z1 = 0;
        for (int j = 0; j < 3; j++) zt += exp(t[i * 3 + j] / T), zs2 += exp(s[i * 3 + j] / T), z1 += exp(s[i * 3 + j]);
        for (int j = 0; j < 3; j++) {
            double pt = exp(t[i * 3 + j] / T) / zt, ps = exp(s[i * 3 + j] / T) / zs2;
            ref += alpha * T * T * pt * log(pt / ps) / 2;
        }
        ref += (1 - alpha) * -log(exp(s[i * 3 + cls[i]]) / z1) / 2;
    }
    l.batch = tt;
    CHECK(nl_loss_forward(&l, st, y, &v) == NL_OK, "%s", nl_errmsg());
    CHECK_CLOSE(v, ref, 0, 1e-6);
    nl_tensor *g = NULL;
    CHECK(nl_loss_backward(&l, 1.0, &g) == NL_OK && g, "backward");
    const double eps = 1e-3;
    for (int k = 0; g && k < 6; k++) {
        double lp, lm;
        float *ps = nl_tensor_f32(st);
        ps[k] = s[k] + (float)eps;
        l.batch = tt;
        nl_loss_forward(&l, st, y, &lp);
        ps[k] = s[k] - (float)eps;
        l.batch = tt;
        nl_loss_forward(&l, st, y, &lm);
        ps[k] = s[k];
        CHECK_CLOSE(nl_tensor_f32(g)[k], (lp - lm) / (2 * eps), 1e-4, 1e-3);
    }
    nl_tensor_release(g);
    nl_tensor_release(st);
    nl_tensor_release(tt);
    nl_tensor_release(y);
    nl_tensor_release(zs);
    nl_tensor_release(y0);
    nl_loss_clear(&l);
    CHECK(teacher->refcount == 1, "teacher released");
    nl_module_release(teacher);
}

int main(void)
{
    nl_init();
    test_magnitude_and_training();
    test_channels();
    test_lowrank();
    test_snapshot();
    test_distill();
    return TEST_REPORT();
}
