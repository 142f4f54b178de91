/* sparse.c: sparse execution of pruned Linear and Conv2d layers (sparse.h): the thresholds,
 * measured, at which the CSR kernels (backends/cpu/sparse.c) beat the dense ones, and the upkeep
 * of each layer's CSR copy of its weight. Moved here from the pruning code, beside the layers
 * that call it. */
#include "sparse.h"
#include "layer.h"

#include <stdint.h>
#include <string.h>

static bool is_type(const nl_module *m, const char *name) { return strcmp(m->type->name, name) == 0; }

/* Where the sparse kernels start to beat the dense ones, measured with `NNLAB_THREADS=2
 * build/release/bench/bench_sparse` (built by `make bench`) on the 2-core AMD EPYC machine nnlab is
 * tuned on, forward in evaluation mode through the layer (the check of the weight included), best
 * of 15 interleaved samples, dense / sparse time:
 *   conv 3->32 k3 p1 32x32,  batch 64: 0.84x at 30%, 1.06x at 40%, 1.26x at 50%, 3.50x at 90%
 *                            batch 1:  0.86x at 50%, 1.08x at 60%, 1.48x at 70%, 3.17x at 90%
 *   conv 32->64 k3 p1 16x16, batch 64: 0.99x at 40%, 1.15x at 50%, 1.43x at 60%, 4.27x at 90%
 *                            batch 1:  0.60x at 20%, 1.63x at 30%, 2.33x at 50%, 6.87x at 90%
 *   linear 4096->10,         batch 64: wins at every sparsity measured: 2.08x at 10%, 3.16x at 50%,
 *                            6.58x at 90% (sgemm with 10 outputs is slow); below 16 input rows the
 *                            layer stays dense (core/nn/linear.c): at batch 1, 0.37x at 90%, 0.77x at 98%.
 * Convolutions go sparse from 60%, where both win at both batch sizes. Linear layers go sparse
 * from 50%: lower, every unpruned layer would hold a CSR copy of its weight for a kernel that is
 * just a faster dense product for this shape, which is not what the switch is for. */
const double nl_sparse_default_threshold[NL_SPARSE_KINDS] = {
    [NL_SPARSE_CONV] = 0.6,
    [NL_SPARSE_LINEAR] = 0.5,
};
static double sparse_threshold[NL_SPARSE_KINDS] = {
    [NL_SPARSE_CONV] = nl_sparse_default_threshold[NL_SPARSE_CONV],
    [NL_SPARSE_LINEAR] = nl_sparse_default_threshold[NL_SPARSE_LINEAR],
};

static int64_t sparse_forwards; /* nl_sparse_forwards: layers are run from one host thread */

int64_t nl_sparse_forwards(void) { return sparse_forwards; }

double nl_sparse_threshold(nl_sparse_kind kind) { return sparse_threshold[kind]; }

nl_status nl_sparse_set_threshold(nl_sparse_kind kind, double t)
{
    if (!(t <= 1))
        return nl_seterr(NL_EINVAL, "sparse threshold must be in [0, 1] (or off), got %g", t);
    sparse_threshold[kind] = t < 0 ? -1 : t;
    return NL_OK;
}

nl_sparse_kind nl_sparse_kind_of(const nl_module *m)
{
    return is_type(m, "Conv2d") ? NL_SPARSE_CONV : is_type(m, "Linear") ? NL_SPARSE_LINEAR : NL_SPARSE_KINDS;
}

/* Whether a weight of n elements with zeros zeros reaches threshold t (t < 0: off). */
static bool reaches(double t, int64_t zeros, int64_t n) { return t >= 0 && (double)zeros >= t * (double)n; }

/* The weight of m if the sparse kernels can take it (f32, contiguous, on the CPU), else NULL. */
static const nl_tensor *sparse_weight(const nl_module *m)
{
    const nl_tensor *w = m->nparams > 0 ? m->params[0].value : NULL;
    return w && w->dtype == NL_F32 && nl_tensor_device(w) == NL_CPU && nl_tensor_is_contiguous(w) &&
                   w->ndim >= 2 ? w : NULL;
}

bool nl_sparse_eligible(const nl_module *m, int64_t zeros)
{
    nl_sparse_kind k = nl_sparse_kind_of(m);
    const nl_tensor *w = k < NL_SPARSE_KINDS ? sparse_weight(m) : NULL;
    return w && reaches(sparse_threshold[k], zeros, nl_tensor_numel(w));
}

void nl_sparse_clear(nl_sparse_csr *s)
{
    nl_tensor_release(s->rowptr);
    nl_tensor_release(s->col);
    nl_tensor_release(s->val);
    nl_tensor_release(s->weight);
    *s = (nl_sparse_csr){0};
}

/* Makes s the CSR of w viewed as [rows, n / rows], with nnz nonzeros, and keeps a copy of w. */
static nl_status sparse_build(nl_sparse_csr *s, const nl_tensor *w, int64_t nnz)
{
    const int64_t n = nl_tensor_numel(w), rows = w->shape[0], cols = n / rows, len = nnz > 0 ? nnz : 1;
    s->built = false;
    if (!nl_layer_buffer(&s->rowptr, NL_I32, 1, (int64_t[]){rows + 1}, NL_CPU) ||
        !nl_layer_buffer(&s->col, NL_I32, 1, &len, NL_CPU) ||
        !nl_layer_buffer(&s->val, NL_F32, 1, &len, NL_CPU) ||
        !nl_layer_buffer(&s->weight, NL_F32, w->ndim, w->shape, NL_CPU))
        return nl_errcode();
    const float *p = nl_tensor_f32(w);
    int32_t *rp = nl_tensor_data(s->rowptr), *col = nl_tensor_data(s->col);
    float *val = nl_tensor_f32(s->val);
    int32_t j = 0;
    rp[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            const float v = p[r * cols + c];
            if (v == 0) continue;
            col[j] = (int32_t)c;
            val[j++] = v;
        }
        rp[r + 1] = j;
    }
    memcpy(nl_tensor_data(s->weight), p, (size_t)n * sizeof *p);
    s->nnz = nnz;
    s->built = true;
    return NL_OK;
}

nl_status nl_sparse_prepare(nl_sparse_csr *s, const nl_module *m, nl_sparse_kind kind, bool *use)
{
    *use = false;
    const nl_tensor *w = sparse_weight(m);
    const double t = sparse_threshold[kind];
    if (m->training || t < 0 || !w) return NL_OK;
    const int64_t n = nl_tensor_numel(w);
    if (n > INT32_MAX) return NL_OK; /* column indices and row pointers are i32 */
    const float *p = nl_tensor_f32(w);
    if (s->built && nl_same_shape(s->weight, w) &&
        memcmp(nl_tensor_data(s->weight), p, (size_t)n * sizeof *p) == 0) {
        *use = reaches(t, n - s->nnz, n);
        sparse_forwards += *use;
        return NL_OK;
    }
    s->built = false; /* the weight changed (or was never seen): count its nonzeros again */
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++) nnz += p[i] != 0;
    if (!reaches(t, n - nnz, n)) return NL_OK;
    nl_status st = sparse_build(s, w, nnz);
    *use = st == NL_OK;
    sparse_forwards += *use;
    return st;
}
