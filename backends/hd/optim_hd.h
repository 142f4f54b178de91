/* optim_hd.h: the per-element optimizer updates shared by the CPU and CUDA backends (NL_HD), in
 * the order and float rounding of PyTorch 1.13's single-tensor SGD / Adam / AdamW. The constants
 * are worked out once per step from the op (nl_hd_sgd_consts, nl_hd_adam_consts): scalars are
 * rounded to float first, as PyTorch does when it multiplies an f32 tensor by a Python number;
 * the bias corrections are computed in double, as PyTorch computes them. */
#ifndef NL_OPTIM_HD_H
#define NL_OPTIM_HD_H

#include "nl.h"
#include "nl_hd.h"

#include <math.h>

typedef struct {
    float neg_lr, mom, wd, keep;
    int decay, nesterov, first;
} nl_hd_sgd;

typedef struct {
    float beta1, one_b1, beta2, one_b2, eps, wd, shrink, neg_step_size, bc2_sqrt;
    int adamw, l2;
} nl_hd_adam;

/* From NL_OP_SGD_STEP's f[] (lr, momentum, weight decay, dampening) and i[] (nesterov, first). */
NL_HD nl_hd_sgd nl_hd_sgd_consts(const double *f, const int *i)
{
    nl_hd_sgd c = {(float)-f[0], (float)f[1], (float)f[2], (float)(1 - f[3]), f[2] != 0, i[0] != 0,
                   i[1] != 0};
    return c;
}

/* One element: parameter *p with gradient g and momentum buffer *buf (NULL without momentum). */
NL_HD void nl_hd_sgd_update(const nl_hd_sgd *c, float *p, float g, float *buf)
{
    float d = c->decay ? g + c->wd * *p : g;
    if (buf) {
        *buf = c->first ? d : *buf * c->mom + c->keep * d;
        d = c->nesterov ? d + c->mom * *buf : *buf;
    }
    *p = *p + c->neg_lr * d;
}

/* From NL_OP_ADAM_STEP's f[] (lr, beta1, beta2, eps, weight decay) and i[] (step, adamw). */
NL_HD nl_hd_adam nl_hd_adam_consts(const double *f, const int *i)
{
    const double lr = f[0], b1 = f[1], b2 = f[2], step = i[0];
    nl_hd_adam c;
    c.adamw = i[1] != 0;
    c.l2 = !c.adamw && f[4] != 0;
    c.beta1 = (float)b1;
    c.one_b1 = (float)(1 - b1);
    c.beta2 = (float)b2;
    c.one_b2 = (float)(1 - b2);
    c.eps = (float)f[3];
    c.wd = (float)f[4];
    c.shrink = (float)(1 - lr * f[4]);
    c.neg_step_size = (float)-(lr / (1 - pow(b1, step)));
    c.bc2_sqrt = (float)sqrt(1 - pow(b2, step));
    return c;
}

/* One element: parameter *p with gradient g and moments *m, *v. */
NL_HD void nl_hd_adam_update(const nl_hd_adam *c, float *p, float g, float *m, float *v)
{
    float pi = c->adamw ? *p * c->shrink : *p;
    float gi = c->l2 ? g + c->wd * pi : g;
    *m = *m * c->beta1 + c->one_b1 * gi;
    *v = *v * c->beta2 + c->one_b2 * gi * gi;
    float denom = sqrtf(*v) / c->bc2_sqrt + c->eps;
    *p = pi + c->neg_step_size * *m / denom;
}

#endif
