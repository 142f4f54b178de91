/* test_optim.c: optimizers against the update rules written out in double (PyTorch's documented
 * algorithms), their state block, config validation, structural checks, and clip_grad_norm. The
 * comparisons with PyTorch itself are in test_golden.c. */
#include "optim.h"
#include "testhelp.h"

#include <string.h>

/* A test module type: one parameter "weight" of n elements (zeros), no forward. */
static nl_status vec_init(nl_module *m)
{
    int64_t shape[1] = {(int64_t)m->args[0]};
    nl_tensor *t = nl_tensor_zeros(NL_F32, 1, shape, NL_CPU);
    nl_status st = t ? nl_module_add_param(m, "weight", t, true) : nl_errcode();
    nl_tensor_release(t);
    return st;
}
static const nl_module_type vec_type = {
    .name = "TestVec",
    .npos = 1,
    .args = {{.name = "n", .integer = true, .min = 1}},
    .init = vec_init,
};
static const nl_module_type box_type = {.name = "TestBox", .container = true};

/* A test module type with an i8 parameter (with a gradient). */
static nl_status int_init(nl_module *m)
{
    int64_t shape[1] = {2};
    nl_tensor *t = nl_tensor_zeros(NL_I8, 1, shape, NL_CPU);
    nl_status st = t ? nl_module_add_param(m, "q", t, true) : nl_errcode();
    nl_tensor_release(t);
    return st;
}
static const nl_module_type int_type = {.name = "TestInt", .init = int_init};

/* A container holding vectors of the given sizes. */
static nl_module *make_net(int count, const int *sizes)
{
    nl_module *box = nl_module_new(&box_type, NULL);
    for (int i = 0; i < count; i++) {
        double n = sizes[i];
        nl_module *v = nl_module_new(&vec_type, &n);
        nl_module_add(box, v);
        nl_module_release(v);
    }
    return box;
}

static void set(nl_tensor *t, const double *v)
{
    float *p = nl_tensor_f32(t);
    for (int64_t i = 0; i < nl_tensor_numel(t); i++) p[i] = (float)v[i];
}

/* The reference: PyTorch's documented algorithms in double, one parameter element at a time. */
typedef struct { double p, buf, m, v; } ref_state;

static void ref_step(nl_optim_kind kind, const nl_optim_config *c, ref_state *s, double g, int t)
{
    if (kind == NL_OPTIM_SGD) {
        double d = g + c->weight_decay * s->p;
        if (c->momentum != 0) {
            s->buf = t == 1 ? d : c->momentum * s->buf + (1 - c->dampening) * d;
            d = c->nesterov ? d + c->momentum * s->buf : s->buf;
        }
        s->p -= c->lr * d;
        return;
    }
    if (kind == NL_OPTIM_ADAMW) s->p *= 1 - c->lr * c->weight_decay;
    else g += c->weight_decay * s->p;
    s->m = c->beta1 * s->m + (1 - c->beta1) * g;
    s->v = c->beta2 * s->v + (1 - c->beta2) * g * g;
    double mhat = s->m / (1 - pow(c->beta1, t)),
           vhat_sqrt = sqrt(s->v) / sqrt(1 - pow(c->beta2, t));
    s->p -= c->lr * mhat / (vhat_sqrt + c->eps);
}

/* Runs 4 steps of kind with cfg on two parameters (changing gradients) and compares every
 * element with the reference. */
static void check_rule(const char *what, nl_optim_kind kind, nl_optim_config cfg)
{
    int sizes[2] = {3, 2};
    nl_module *net = make_net(2, sizes);
    nl_param *ps[2];
    nl_module_params(net, ps, 2, false);
    const double p0[5] = {1, -2, 3, 0.5, -0.25};
    set(ps[0]->value, p0);
    set(ps[1]->value, p0 + 3);
    ref_state ref[5];
    for (int i = 0; i < 5; i++) ref[i] = (ref_state){.p = (float)p0[i]};
    nl_optim *o = nl_optim_new(kind, net, &cfg);
    CHECK(o != NULL, "%s: created (%s)", what, nl_errmsg());
    double worst = 0;
    for (int t = 1; t <= 4 && o; t++) {
        double g[5];
        for (int i = 0; i < 5; i++) g[i] = (float)(0.3 * (i - 2) + 0.1 * t * (i % 2 ? 1 : -1));
        set(ps[0]->grad, g);
        set(ps[1]->grad, g + 3);
        CHECK(nl_optim_step(o) == NL_OK, "%s: step %d: %s", what, t, nl_errmsg());
        for (int i = 0; i < 5; i++) {
            ref_step(kind, &cfg, &ref[i], g[i], t);
            double got = nl_tensor_f32(ps[i / 3]->value)[i % 3];
            double err = fabs(got - ref[i].p) / (1e-6 + fabs(ref[i].p));
            if (err > worst) worst = err;
        }
    }
    CHECK(worst < 2e-6, "%s: matches the double-precision rule (worst relative error %.3g)", what,
          worst);
    CHECK(o && nl_optim_steps(o) == 4, "%s: counts its steps", what);
    nl_optim_release(o);
    nl_module_release(net);
}

static void test_rules(void)
{
    nl_optim_config c = nl_optim_default_config(NL_OPTIM_SGD);
    c.lr = 0.1;
    check_rule("sgd", NL_OPTIM_SGD, c);
    c.momentum = 0.9;
    c.weight_decay = 0.01;
    check_rule("sgd momentum", NL_OPTIM_SGD, c);
    c.dampening = 0.3;
    check_rule("sgd dampening", NL_OPTIM_SGD, c);
    c.dampening = 0;
    c.nesterov = true;
    check_rule("sgd nesterov", NL_OPTIM_SGD, c);
    c = nl_optim_default_config(NL_OPTIM_ADAM);
    c.lr = 0.05;
    check_rule("adam", NL_OPTIM_ADAM, c);
    c.weight_decay = 0.1;
    c.beta1 = 0.5;
    check_rule("adam l2", NL_OPTIM_ADAM, c);
    c = nl_optim_default_config(NL_OPTIM_ADAMW);
    c.lr = 0.05;
    CHECK(c.weight_decay == 1e-2, "adamw's default weight decay is 1e-2");
    c.weight_decay = 0.5;
    check_rule("adamw", NL_OPTIM_ADAMW, c);
}

static void test_config(void)
{
    CHECK(nl_optim_kind_parse("adamw") == NL_OPTIM_ADAMW, "kinds parse");
    CHECK(nl_optim_kind_parse("rmsprop") == NL_OPTIM_KIND_COUNT, "unknown kinds do not");
    CHECK(strcmp(nl_optim_kind_name(NL_OPTIM_SGD), "sgd") == 0, "kinds have names");
    nl_optim_config d = nl_optim_default_config(NL_OPTIM_ADAM);
    CHECK(d.lr == 1e-3 && d.beta1 == 0.9 && d.beta2 == 0.999 && d.eps == 1e-8 &&
              d.weight_decay == 0,
          "adam defaults are PyTorch's");
    struct {
        nl_optim_kind kind;
        nl_optim_config c;
        const char *msg;
    } bad[] = {
        {NL_OPTIM_SGD, {.lr = -1}, "lr must be"},
        {NL_OPTIM_SGD, {.lr = NAN}, "lr must be"},
        {NL_OPTIM_SGD, {.lr = 0.1, .momentum = -0.5}, "momentum must be"},
        {NL_OPTIM_SGD, {.lr = 0.1, .nesterov = true}, "nesterov momentum requires"},
        {NL_OPTIM_SGD,
         {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true},
         "nesterov"},
        {NL_OPTIM_ADAM, {.lr = 0.1, .beta1 = 0.9, .beta2 = 1}, "beta2 must be in [0, 1)"},
        {NL_OPTIM_ADAM, {.lr = 0.1, .beta1 = -0.1, .beta2 = 0.9}, "beta1 must be"},
        {NL_OPTIM_ADAMW, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.9, .eps = -1}, "eps must be"},
        {NL_OPTIM_ADAMW,
         {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.9, .weight_decay = -1},
         "weight_decay"},
    };
    int sizes[1] = {2};
    nl_module *net = make_net(1, sizes);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nl_optim *o = nl_optim_new(bad[i].kind, net, &bad[i].c);
        CHECK(!o && nl_errcode() == NL_EINVAL && strstr(nl_errmsg(), bad[i].msg),
              "bad config %zu refused: '%s'", i, nl_errmsg());
        nl_optim_release(o);
    }
    nl_module *q = nl_module_new(&int_type, NULL);
    nl_optim *o = nl_optim_new(NL_OPTIM_SGD, q, NULL);
    CHECK(!o && nl_errcode() == NL_EINVAL && strstr(nl_errmsg(), "(q) is not an f32 tensor"),
          "an i8 parameter is refused: %s", nl_errmsg());
    CHECK(q->refcount == 1, "and the refused optimizer holds no reference");
    nl_module_release(q);
    o = nl_optim_new(NL_OPTIM_ADAM, net, NULL);
    CHECK(o && nl_optim_get_lr(o) == 1e-3, "NULL config means the defaults");
    nl_optim_set_lr(o, 0.5);
    CHECK(nl_optim_get_lr(o) == 0.5, "set_lr");
    nl_optim_config c = *nl_optim_get_config(o);
    c.beta2 = 2;
    CHECK(nl_optim_set_config(o, &c) == NL_EINVAL && nl_optim_get_config(o)->beta2 == 0.999,
          "a bad set_config changes nothing");
    CHECK(nl_optim_net(o) == net && net->refcount == 2, "the optimizer holds the net");
    nl_optim_release(o);
    CHECK(net->refcount == 1, "and lets it go");
    nl_module_release(net);
}

static void test_state(void)
{
    int sizes[3] = {4, 1, 3};
    nl_module *net = make_net(3, sizes);
    nl_optim *o = nl_optim_new(NL_OPTIM_ADAM, net, NULL);
    CHECK(nl_optim_nparams(o) == 3 && nl_optim_state_count(o) == 2,
          "adam keeps m and v for 3 params");
    CHECK(strcmp(nl_optim_state_name(o, 1), "v") == 0, "state names");
    CHECK(nl_optim_state(o, 0, 0) == NULL && !nl_optim_has_state(o),
          "no state before the first step");
    CHECK(nl_optim_step(o) == NL_OK, "step: %s", nl_errmsg());
    CHECK(nl_optim_has_state(o), "state after it");
    /* One block laid out as the parameter store: all the m, then all the v, each parameter at its
     * offset in the store. */
    nl_storage *s = nl_optim_state(o, 0, 0)->storage;
    nl_store *store = nl_module_store(net);
    int64_t total = store->offset[3];
    bool one_block = true;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            nl_tensor *t = nl_optim_state(o, i, k);
            one_block &= t->storage == s && (int64_t)t->offset == k * total + store->offset[i] &&
                         nl_same_shape(t, nl_optim_param(o, i)->value);
        }
    CHECK(one_block && s->bytes >= 2 * (size_t)total * sizeof(float),
          "the state is one block, in the store's layout");
    void *before = s->ptr;
    nl_optim_step(o);
    CHECK(nl_optim_state(o, 0, 0)->storage->ptr == before, "later steps reuse the block");
    nl_optim_release(o);

    /* SGD: momentum starts as the gradient; without momentum there is no state. */
    nl_optim_config c = nl_optim_default_config(NL_OPTIM_SGD);
    o = nl_optim_new(NL_OPTIM_SGD, net, &c);
    nl_optim_step(o);
    CHECK(nl_optim_state(o, 0, 0) == NULL && !nl_optim_has_state(o), "plain sgd keeps no state");
    nl_optim_release(o);
    c.momentum = 0.9;
    o = nl_optim_new(NL_OPTIM_SGD, net, &c);
    nl_param *p = nl_optim_param(o, 0);
    nl_fill(p->grad, 0.25);
    nl_optim_step(o);
    CHECK(nl_optim_state(o, 0, 0) && nl_tensor_f32(nl_optim_state(o, 0, 0))[2] == 0.25f,
          "the first momentum buffer is the gradient");

    /* The net changed under the optimizer: the store is repacked, the momentum of the parameter
     * that remains is carried over and the new one starts from zero. */
    nl_module *extra = nl_module_new(&vec_type, (double[]){2});
    nl_module_add(net, extra);
    nl_module_release(extra);
    float w = nl_tensor_f32(p->value)[0];
    nl_fill(p->grad, 0);
    CHECK(nl_optim_step(o) == NL_OK && nl_optim_nparams(o) == 4, "a changed net is repacked: %s",
          nl_errmsg());
    CHECK(nl_tensor_f32(nl_optim_state(o, 0, 0))[2] == 0.9f * 0.25f &&
          nl_tensor_f32(nl_optim_state(o, 3, 0))[0] == 0, "moments carried over: %g",
          nl_tensor_f32(nl_optim_state(o, 0, 0))[2]);
    CHECK(nl_tensor_f32(p->value)[0] != w, "and the old parameter moved on its momentum");
    nl_store *st = nl_module_store(net);
    CHECK(st && st->count == 4 && p->value->storage == st->values->storage &&
          nl_optim_param(o, 3)->grad->storage == st->grads->storage, "both are views on the store");
    CHECK(nl_optim_zero_grad(o) == NL_OK && nl_tensor_f32(p->grad)[0] == 0, "zero_grad");
    nl_optim_release(o);
    nl_module_release(net);
}

static void test_clip(void)
{
    int sizes[2] = {1, 2};
    nl_module *net = make_net(2, sizes);
    nl_param *ps[2];
    nl_module_params(net, ps, 2, false);
    set(ps[0]->grad, (double[]){3});
    set(ps[1]->grad, (double[]){0, -4});
    double norm = 0;
    CHECK(nl_clip_grad_norm(net, 10, &norm) == NL_OK && norm == 5, "norm of (3, 0, -4) is 5: %g",
          norm);
    CHECK(nl_tensor_f32(ps[0]->grad)[0] == 3, "below max_norm nothing changes");
    CHECK(nl_clip_grad_norm(net, 1, &norm) == NL_OK && norm == 5, "clip to 1");
    CHECK_CLOSE(nl_tensor_f32(ps[1]->grad)[1], -4 / (5 + 1e-6), 1e-7, 1e-6);
    CHECK_CLOSE(nl_tensor_f32(ps[0]->grad)[0], 3 / (5 + 1e-6), 1e-7, 1e-6);
    nl_clip_grad_norm(net, 100, &norm);
    CHECK_CLOSE(norm, 1, 1e-6, 0);
    CHECK(nl_clip_grad_norm(net, -1, NULL) == NL_EINVAL, "negative max_norm refused");
    nl_module_release(net);
}

/* A store of more than 2^20 gradients is squared in passes (nl_grad_sumsq's bounded scratch):
 * the norm matches a double reference, and sim gives the CPU's value exactly. */
static void test_clip_passes(void)
{
    int sizes[3] = {1 << 20, 1000, 3};
    nl_module *net = make_net(3, sizes);
    nl_param *ps[3];
    nl_module_params(net, ps, 3, false);
    double ref = 0;
    for (int k = 0; k < 3; k++) {
        float *g = nl_tensor_f32(ps[k]->grad);
        for (int64_t i = 0; i < sizes[k]; i++) {
            g[i] = (float)(((i + k) % 7) - 3) * 0.01f;
            ref += (double)g[i] * g[i];
        }
    }
    double norm = 0, norm_sim = 0;
    CHECK(nl_clip_grad_norm(net, 1e9, &norm) == NL_OK, "%s", nl_errmsg());
    CHECK_CLOSE(norm, sqrt(ref), 0, 1e-6);
    CHECK(nl_module_to(net, NL_SIM) == NL_OK && nl_clip_grad_norm(net, 1e9, &norm_sim) == NL_OK,
          "on sim: %s", nl_errmsg());
    CHECK(norm_sim == norm, "sim's passes give the CPU's norm: %.9g, %.9g", norm_sim, norm);
    nl_module_release(net);
}

int main(void)
{
    nl_init();
    test_rules();
    test_config();
    test_state();
    test_clip();
    test_clip_passes();
    return TEST_REPORT();
}
