/* test_alloc.c: the seed CNN's training step (nl_train_step with Adam) and evaluation batch reuse
 * their buffers: after the first step, the CPU backend allocates nothing per step. Conv2d keeps
 * its columns only while training; a backward after an evaluation-mode forward still works. */
#include <string.h>

#include "cpu/cpu.h"
#include "nethelp.h"
#include "optim.h"
#include "train.h"

/* conv3-32 k3 p1, ReLU, maxpool 2, conv32-64 k3 p1, ReLU, maxpool 2, flatten, linear 4096-10. */
static nl_module *seed_cnn(void)
{
    nl_module *kids[8] = {
        net_make("Conv2d", "in", 3.0, "out", 32.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Conv2d", "in", 32.0, "out", 64.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Flatten", NULL),
        net_make("Linear", "in", 4096.0, "out", 10.0, NULL),
    };
    return net_container("Sequential", kids, 8);
}

static void test_train_step_allocates_nothing(void)
{
    nl_rng_seed(3);
    nl_module *net = seed_cnn();
    nl_optim *opt = nl_optim_new(NL_OPTIM_ADAM, net, NULL);
    nl_loss loss = {.kind = NL_LOSS_CROSS_ENTROPY};
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, (int64_t[]){8, 3, 32, 32}, NL_CPU);
    nl_tensor *y = nl_tensor_from_data(NL_I32, 1, (int64_t[]){8}, (int32_t[]){0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(net && opt && x && y && nl_rand_uniform(x, -1, 1) == NL_OK, "setup: %s", nl_errmsg());
    int64_t per_step[4];
    for (int s = 0; s < 4; s++) {
        const int64_t before = nl_cpu_alloc_count();
        nl_step_result r;
        CHECK(nl_train_step(net, &loss, opt, x, y, 0, NULL, &r) == NL_OK && r.updated, "step %d: %s", s,
              nl_errmsg());
        per_step[s] = nl_cpu_alloc_count() - before;
    }
    CHECK(per_step[0] > 0, "the first step allocates its buffers (%lld)", (long long)per_step[0]);
    for (int s = 1; s < 4; s++)
        CHECK(per_step[s] == 0, "step %d allocates nothing (%lld blocks)", s + 1, (long long)per_step[s]);

    nl_eval_stats st = {0};
    int64_t eval[3];
    for (int s = 0; s < 3; s++) {
        const int64_t before = nl_cpu_alloc_count();
        nl_module_train(net, false);
        CHECK(nl_eval_batch(net, &loss, x, y, &st) == NL_OK, "eval %d: %s", s, nl_errmsg());
        eval[s] = nl_cpu_alloc_count() - before;
    }
    for (int s = 1; s < 3; s++)
        CHECK(eval[s] == 0, "evaluation batch %d allocates nothing (%lld blocks)", s + 1, (long long)eval[s]);
    nl_eval_stats_clear(&st);
    nl_loss_clear(&loss);
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_optim_release(opt);
    nl_module_release(net);
}

/* The same filter and data gradients after a training-mode and an evaluation-mode forward. */
static void test_conv_backward_after_eval(void)
{
    nl_rng_seed(5);
    nl_module *conv = net_make("Conv2d", "in", 4.0, "out", 8.0, "k", 3.0, "padding", 1.0, NULL);
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, (int64_t[]){3, 4, 9, 9}, NL_CPU);
    nl_tensor *gy = nl_tensor_empty(NL_F32, 4, (int64_t[]){3, 8, 9, 9}, NL_CPU);
    CHECK(conv && x && gy && nl_rand_uniform(x, -1, 1) == NL_OK && nl_rand_uniform(gy, -1, 1) == NL_OK,
          "setup: %s", nl_errmsg());
    nl_tensor *gw[2] = {NULL, NULL}, *gx[2] = {NULL, NULL};
    for (int mode = 0; mode < 2; mode++) {
        nl_module_train(conv, mode == 0);
        nl_module_zero_grad(conv);
        nl_tensor *y = NULL;
        CHECK(nl_module_forward(conv, x, &y) == NL_OK, "forward: %s", nl_errmsg());
        CHECK(nl_module_backward(conv, gy, &gx[mode]) == NL_OK, "backward: %s", nl_errmsg());
        gw[mode] = nl_tensor_clone(conv->params[0].grad);
        nl_tensor_release(y);
    }
    CHECK(gw[0] && gw[1] && gx[0] && gx[1] &&
              memcmp(nl_tensor_f32(gw[0]), nl_tensor_f32(gw[1]), 8 * 4 * 9 * sizeof(float)) == 0 &&
              memcmp(nl_tensor_f32(gx[0]), nl_tensor_f32(gx[1]), 3 * 4 * 81 * sizeof(float)) == 0,
          "backward after an evaluation-mode forward gives the training-mode gradients");
    for (int i = 0; i < 2; i++) {
        nl_tensor_release(gw[i]);
        nl_tensor_release(gx[i]);
    }
    nl_tensor_release(x);
    nl_tensor_release(gy);
    nl_module_release(conv);
}

int main(void)
{
    nl_init();
    test_train_step_allocates_nothing();
    test_conv_backward_after_eval();
    return TEST_REPORT();
}
