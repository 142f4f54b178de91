/* gradcheck.h: finite-difference checks of a module's backward pass, for the layer tests.
 * L = sum(y * R) for a fixed random R; dL/dx and dL/dparam from backward are compared with
 * central differences (f32 forward, f64 sums) on up to `max_checks` elements of each tensor. */
#ifndef NL_GRADCHECK_H
#define NL_GRADCHECK_H

#include "nn.h"
#include "testhelp.h"

#include <string.h>

/* The scalar the checks differentiate: sum(y * r) in double. */
static double gc_objective(nl_module *m, nl_tensor *x, const nl_tensor *r)
{
    nl_tensor *y = NULL;
    if (nl_module_forward(m, x, &y) != NL_OK) {
        printf("gradcheck: forward failed: %s\n", nl_errmsg());
        return NAN;
    }
    nl_tensor *yc = nl_tensor_contiguous(y);
    const float *py = nl_tensor_f32(yc), *pr = nl_tensor_f32(r);
    double s = 0;
    for (int64_t i = 0; i < nl_tensor_numel(yc); i++) s += (double)py[i] * pr[i];
    nl_tensor_release(yc);
    nl_tensor_release(y);
    return s;
}

/* Compares one analytic gradient tensor with central differences of `value` (contiguous f32).
 * Returns the number of mismatches (also recorded through CHECK). */
static int gc_compare(const char *what, nl_module *m, nl_tensor *x, const nl_tensor *r,
                      nl_tensor *value, const nl_tensor *grad, double eps, double atol,
                      double rtol, int max_checks)
{
    float *pv = nl_tensor_f32(value);
    const float *pg = nl_tensor_f32(grad);
    int64_t n = nl_tensor_numel(value);
    int64_t step = n > max_checks ? n / max_checks : 1;
    int bad = 0;
    for (int64_t i = 0; i < n; i += step) {
        float orig = pv[i];
        pv[i] = orig + (float)eps;
        double lp = gc_objective(m, x, r);
        pv[i] = orig - (float)eps;
        double lm = gc_objective(m, x, r);
        pv[i] = orig;
        double num = (lp - lm) / (2 * eps), ana = pg[i];
        if (!(fabs(num - ana) <= atol + rtol * fabs(num))) {
            if (bad < 3)
                printf("  %s %s[%lld]: analytic %.6g, numeric %.6g\n", m->type->name, what,
                       (long long)i, ana, num);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: gradient of %s matches finite differences (%d mismatches)",
          m->type->name, what, bad);
    return bad;
}

/* Checks dL/dx and every parameter gradient of m at x (f32, contiguous). */
static int gradcheck(nl_module *m, nl_tensor *x, double eps, double atol, double rtol)
{
    nl_tensor *y = NULL, *gx = NULL;
    if (nl_module_forward(m, x, &y) != NL_OK) {
        CHECK(0, "%s forward: %s", m->type->name, nl_errmsg());
        return 1;
    }
    nl_tensor *r = nl_tensor_empty(NL_F32, y->ndim, y->shape, NL_CPU);
    nl_rand_uniform(r, -1, 1);
    nl_module_zero_grad(m);
    if (nl_module_backward(m, r, &gx) != NL_OK) {
        CHECK(0, "%s backward: %s", m->type->name, nl_errmsg());
        nl_tensor_release(r);
        nl_tensor_release(y);
        return 1;
    }
    CHECK(nl_same_shape(gx, x), "%s: grad input has the input's shape", m->type->name);
    /* Copy the analytic gradients: the objective's forward passes must not disturb them. */
    nl_tensor *gxc = nl_tensor_clone(gx);
    int bad = gc_compare("input", m, x, r, x, gxc, eps, atol, rtol, 40);
    nl_param *ps[64];
    int np = nl_module_params(m, ps, 64, false);
    for (int i = 0; i < np && i < 64; i++) {
        nl_tensor *g = nl_tensor_clone(ps[i]->grad);
        bad += gc_compare(ps[i]->name, m, x, r, ps[i]->value, g, eps, atol, rtol, 40);
        nl_tensor_release(g);
    }
    nl_tensor_release(gxc);
    nl_tensor_release(gx);
    nl_tensor_release(r);
    nl_tensor_release(y);
    return bad;
}

#endif
