/* sparse.h: sparse execution of pruned layers, beside the layers that use it (linear.c,
 * conv2d.c); the pruning that makes the zeros is core/compress/prune.h. */
#ifndef NL_SPARSE_H
#define NL_SPARSE_H

#include "nn.h"

/* A Linear or Conv2d in evaluation mode whose weight sparsity (the fraction of zeros) is at or
 * above its kind's threshold runs its forward through a sparse kernel (NL_OP_SPCONV2D,
 * NL_OP_SPLINEAR) on a CSR copy of the weight: the work falls with the nonzeros, so a pruned
 * network gets faster. Training mode and other devices than the CPU stay dense (the weights change
 * every step), and so does backward. The results equal the dense kernel's within float rounding
 * (the sums are taken in another order). */
typedef enum { NL_SPARSE_CONV, NL_SPARSE_LINEAR, NL_SPARSE_KINDS } nl_sparse_kind;

/* The thresholds measured on the machine nnlab was tuned on (bench/bench_sparse.c; the figures are
 * in core/nn/sparse.c). */
extern const double nl_sparse_default_threshold[NL_SPARSE_KINDS];
/* A kind's threshold in [0, 1], or -1 when sparse execution is off for it. */
double nl_sparse_threshold(nl_sparse_kind kind);
/* Sets it: t in [0, 1], or a negative t to turn sparse execution off for that kind. NL_EINVAL
 * for t > 1 or NaN. */
nl_status nl_sparse_set_threshold(nl_sparse_kind kind, double t);

/* A layer's CSR copy of its weight as a matrix [rows, cols] (rows = output features/channels),
 * kept in the layer's state, never in checkpoints. It is rebuilt whenever the weight differs from
 * the copy it was built from (compared bit for bit at every forward, so an edit from anywhere --
 * an optimizer, pruning, t:fill(0) from Lua, a checkpoint load -- is seen). */
typedef struct {
    nl_tensor *rowptr; /* i32 [rows + 1] */
    nl_tensor *col;    /* i32 [max(nnz, 1)] */
    nl_tensor *val;    /* f32 [max(nnz, 1)] */
    nl_tensor *weight; /* f32: the weight the CSR was made from */
    int64_t nnz;
    bool built;
} nl_sparse_csr;

/* Whether m (a Linear or Conv2d, kind given) should run its forward sparse now; builds or
 * rebuilds s first when it should and the weight changed. *use false: run dense. NL_ENOMEM. */
nl_status nl_sparse_prepare(nl_sparse_csr *s, const nl_module *m, nl_sparse_kind kind, bool *use);
/* How many forwards have run a sparse kernel since start-up (tests and benchmarks read it). */
int64_t nl_sparse_forwards(void);
/* Frees what s holds (a layer's destroy). */
void nl_sparse_clear(nl_sparse_csr *s);
/* The kind of a Linear or Conv2d; NL_SPARSE_KINDS for other modules. */
nl_sparse_kind nl_sparse_kind_of(const nl_module *m);
/* Whether m's forward in evaluation mode would run sparse with zeros zero weight elements. */
bool nl_sparse_eligible(const nl_module *m, int64_t zeros);

#endif
