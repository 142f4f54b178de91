/* profile.c: per-layer timings of a network against the machine's measured fp32 peak (nn.profile):
 * each layer alone on the input it sees in the net, best of a few runs, with the FLOPs its shape
 * implies and the kernels the CPU backend says it took. */
#include "profile.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double nl_profile_peak_gflops(void)
{
    enum { SIZE = 1024, RUNS = 4, MAX_THREADS = 256 };
    static double peak[MAX_THREADS + 1];
    const int t = nl_get_threads();
    if (t <= MAX_THREADS && peak[t] > 0) return peak[t];
    const int64_t shape[2] = {SIZE, SIZE};
    nl_tensor *a = nl_tensor_empty(NL_F32, 2, shape, NL_CPU), *b = nl_tensor_empty(NL_F32, 2, shape, NL_CPU),
              *c = nl_tensor_empty(NL_F32, 2, shape, NL_CPU);
    double best = 1e30;
    nl_status st = a && b && c ? nl_rand_uniform(a, -1, 1) : nl_errcode();
    if (st == NL_OK) st = nl_rand_uniform(b, -1, 1);
    for (int r = 0; r <= RUNS && st == NL_OK; r++) { /* the first run warms up */
        const double t0 = now();
        st = nl_matmul(c, a, b);
        if (r > 0 && now() - t0 < best) best = now() - t0;
    }
    nl_tensor_release(a);
    nl_tensor_release(b);
    nl_tensor_release(c);
    if (st != NL_OK) return 0;
    const double gflops = 2.0 * SIZE * SIZE * SIZE / best * 1e-9;
    if (t <= MAX_THREADS) peak[t] = gflops;
    return gflops;
}

/* The parameters' gradients, saved before the timing runs and put back after. */
typedef struct {
    int n;
    nl_param **p;
    nl_tensor **saved;
} grad_save;

static nl_status save_grads(nl_module *net, grad_save *s)
{
    s->n = nl_module_params(net, NULL, 0, false);
    s->p = calloc((size_t)s->n + 1, sizeof *s->p);
    s->saved = calloc((size_t)s->n + 1, sizeof *s->saved);
    if (!s->p || !s->saved) return nl_seterr(NL_ENOMEM, "nn.profile: out of memory");
    nl_module_params(net, s->p, s->n, false);
    for (int i = 0; i < s->n; i++)
        if (s->p[i]->grad && !(s->saved[i] = nl_tensor_clone(s->p[i]->grad))) return nl_errcode();
    return NL_OK;
}

static void restore_grads(grad_save *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->saved[i]) {
            nl_copy(s->p[i]->grad, s->saved[i]);
            nl_tensor_release(s->saved[i]);
        }
    free(s->p);
    free(s->saved);
}

/* Times layer m on in: row's forward and (when backward) backward figures. */
static nl_status profile_layer(nl_module *m, nl_tensor *in, bool backward, bool want_gx, int reps,
                               nl_profile_row *row)
{
    char junk[8];
    nl_module_repr(m, row->layer, sizeof row->layer);
    int ond;
    int64_t oshape[NL_MAX_DIMS], macs = 0;
    nl_status st = nl_module_infer(m, in->ndim, in->shape, &ond, oshape, &macs);
    if (st != NL_OK) return st;
    row->fwd_flops = 2.0 * (double)macs;
    row->bwd_flops = backward && m->nparams > 0 ? (want_gx ? 4.0 : 2.0) * (double)macs : 0;
    row->fwd_ms = row->bwd_ms = 1e30;
    nl_tensor *gy = NULL;
    for (int r = 0; r < reps && st == NL_OK; r++) {
        nl_tensor *y = NULL, *gx = NULL;
        nl_kernels_take(junk, sizeof junk);
        double t0 = now();
        if ((st = nl_module_forward(m, in, &y)) != NL_OK) break;
        const double t1 = now();
        nl_kernels_take(row->kernel_fwd, sizeof row->kernel_fwd);
        row->fwd_ms = 1e3 * (t1 - t0) < row->fwd_ms ? 1e3 * (t1 - t0) : row->fwd_ms;
        if (backward) {
            if (!gy && (!(gy = nl_tensor_empty_like(y)) || (st = nl_rand_uniform(gy, -1, 1)) != NL_OK)) {
                st = st != NL_OK ? st : nl_errcode();
                nl_tensor_release(y);
                break;
            }
            t0 = now();
            st = nl_module_backward(m, gy, want_gx ? &gx : NULL);
            const double t2 = now();
            nl_kernels_take(row->kernel_bwd, sizeof row->kernel_bwd);
            row->bwd_ms = 1e3 * (t2 - t0) < row->bwd_ms ? 1e3 * (t2 - t0) : row->bwd_ms;
        }
        nl_tensor_release(gx);
        nl_tensor_release(y);
    }
    nl_tensor_release(gy);
    if (!backward) row->bwd_ms = 0;
    return st;
}

nl_status nl_profile(nl_module *net, nl_tensor *x, bool backward, int reps, nl_profile_row **rows,
                     int *n)
{
    *rows = NULL;
    *n = 0;
    if (reps < 1) return nl_seterr(NL_EINVAL, "nn.profile: reps must be at least 1, got %d", reps);
    const bool seq = net->nchildren > 0 && strcmp(net->type->name, "Sequential") == 0;
    const int count = seq ? net->nchildren : 1;
    nl_profile_row *r = calloc((size_t)count, sizeof *r);
    if (!r) return nl_seterr(NL_ENOMEM, "nn.profile: out of memory");
    grad_save saved = {0};
    nl_tensor *y = NULL;
    nl_status st = save_grads(net, &saved);
    if (st == NL_OK) st = nl_module_forward(net, x, &y); /* every layer's input, as the net sees it */
    nl_tensor_release(y);
    nl_tensor **inputs = calloc((size_t)count, sizeof *inputs);
    if (st == NL_OK && !inputs) st = nl_seterr(NL_ENOMEM, "nn.profile: out of memory");
    for (int i = 0; i < count && st == NL_OK; i++) {
        nl_module *m = seq ? net->children[i] : net;
        if (!(inputs[i] = nl_tensor_clone(seq ? m->input : x))) st = nl_errcode();
    }
    for (int i = 0; i < count && st == NL_OK; i++)
        st = profile_layer(seq ? net->children[i] : net, inputs[i], backward, i > 0, reps, &r[i]);
    for (int i = 0; inputs && i < count; i++) nl_tensor_release(inputs[i]);
    free(inputs);
    restore_grads(&saved);
    if (st != NL_OK) {
        free(r);
        return st;
    }
    *rows = r;
    *n = count;
    return NL_OK;
}
