/* prune.h: compressing a network in place: pruning masks (kept through training by the
 * optimizer), magnitude and structured channel pruning, low-rank factorization, and snapshots
 * that undo any of it. Pure C11 over nn.h. */
#ifndef NL_PRUNE_H
#define NL_PRUNE_H

#include "nn.h"
#include "sparse.h"

/* ---------------------------------------------------------------- layers ---------------- */

/* A prunable layer (Linear, Conv2d, or a layer written in Lua with a parameter named "weight") of
 * a network, found depth-first. */
typedef struct {
    char path[32];        /* 1-based child path as Lua names it: "1", "3.2" ("" for net itself) */
    nl_module *m;         /* borrowed */
    int64_t params;       /* weight elements */
    int64_t zeros;        /* weight elements equal to 0 */
    bool sparse;          /* its forward in evaluation mode runs the sparse kernel (see below) */
} nl_prune_layer;

/* Fills up to max entries with net's prunable layers in order; returns their count. */
int nl_prune_layers(nl_module *net, nl_prune_layer *out, int max);

/* ---------------------------------------------------------------- masks ----------------- */

/* A pruned layer keeps a u8 buffer "weight_mask" of its weight's shape (1 = kept, 0 = pruned).
 * Checkpoints save it as a U8 tensor ("0.weight_mask") and loading a module brings it back
 * (core/io/checkpoint.c); nl_prune_masks_from_zeros makes masks for weights pruned elsewhere. */
#define NL_PRUNE_MASK "weight_mask"

/* The mask of m (borrowed), or NULL when m has none. */
nl_tensor *nl_prune_mask(nl_module *m);
/* What the optimizer does around every update (core/train/optim.c): gradients of masked weights are
 * multiplied by the mask before the update, weights by the mask after it, so pruned weights stay
 * exactly zero through training. NL_OK when net has no masks. */
nl_status nl_prune_mask_grads(nl_module *net);
nl_status nl_prune_apply_masks(nl_module *net);
/* Gives every prunable layer of net whose weight has zeros a mask of its nonzeros (a loaded pruned
 * network keeps its zeros through fine-tuning). Returns the number of masks made, or -1 (error
 * set: NL_ENOMEM). */
int nl_prune_masks_from_zeros(nl_module *net);
/* Drops every mask of net (the zeros stay in the weights). */
void nl_prune_remove_masks(nl_module *net);

/* Pruning edits weights and masks on the host: layers on a device go to the CPU for the pass
 * (was[i] keeps where each was) and back after it (nl_prune_back, which returns st or the first
 * error of the way back). Two copies of those layers per pruning pass, none per training step. */
nl_status nl_prune_to_host(nl_module **ls, int n, nl_device *was);
nl_status nl_prune_back(nl_module **ls, int n, const nl_device *was, nl_status st);

/* ---------------------------------------------------------------- magnitude pruning ----- */

typedef enum { NL_PRUNE_SCOPE_LAYER, NL_PRUNE_SCOPE_GLOBAL } nl_prune_scope;

/* Unstructured magnitude pruning: zeroes the weights of smallest |w| so that a fraction amount
 * (0..1) of the weights is zero, in each layer (scope LAYER) or across all the layers together
 * (GLOBAL); weights already pruned count towards the amount, and pruning never brings a weight
 * back. layers: the layers to prune (borrowed), or NULL (n 0) for every prunable layer of net.
 * Ties are broken by position (the first goes first), so the result is deterministic. Sets or
 * updates each layer's mask. NL_EINVAL for an amount outside [0, 1] or a layer that is not
 * prunable; NL_ENOMEM. */
nl_status nl_prune_magnitude(nl_module *net, double amount, nl_prune_scope scope,
                             nl_module **layers, int n);

/* ---------------------------------------------------------------- channel pruning ------- */

/* Structured pruning: removes a fraction amount of the output channels (filters) of each Conv2d
 * and of the output features of each hidden Linear, those with the smallest L1 (norm 1) or L2
 * (norm 2) weight norm, and shrinks the layers that read them: the next Conv2d's input channels,
 * a Linear after Flatten (the in/C columns of each removed channel), BatchNorm's per-channel
 * parameters and statistics, masks. Channels added together by nn.Residual form one group (the
 * norms are summed and the same channels go everywhere); channels that reach the network's output
 * or pass a layer of unknown channel meaning (Softmax, ...) are kept. The pruned layers are new
 * modules put in their containers' places (the remaining channels' outputs are unchanged), so an
 * optimizer made before must be made again. *removed (may be NULL) receives the channels removed
 * in all. NL_EINVAL for a bad amount or norm; NL_ENOMEM. On error net is unchanged. */
nl_status nl_prune_channels(nl_module *net, double amount, int norm, int64_t *removed);

/* ---------------------------------------------------------------- low rank -------------- */

/* The singular values of a Linear's weight [out, in] or a Conv2d's weight as [out, in*k*k],
 * largest first: a new f32 tensor [min(rows, cols)], or NULL (NL_EINVAL for another layer type,
 * NL_EUNSUPPORTED if LAPACK fails). */
nl_tensor *nl_lowrank_spectrum(nl_module *layer);
/* The rank that keeps a fraction energy (0..1] of the squared singular values (at least 1). */
int nl_lowrank_rank_for_energy(const nl_tensor *spectrum, double energy);
/* Truncated SVD of a layer: Linear(in, out) becomes Sequential(Linear(in, r, bias=false),
 * Linear(r, out)), Conv2d(in, out, k) becomes Sequential(Conv2d(in, r, k, same stride and
 * padding, bias=false), Conv2d(r, out, 1)); the singular values are split evenly (sqrt) between
 * the two factors and the bias goes to the second. rank > 0 picks r (capped at full rank), else
 * energy does. A new reference, or NULL (NL_EINVAL: another layer type, a bad rank/energy). */
nl_module *nl_lowrank_factorize_layer(nl_module *layer, int rank, double energy);
/* Factorizes, in place inside net's containers, every Linear/Conv2d of net whose factorized form
 * has fewer weights than the layer (rank or energy as above). *count receives the number of
 * layers replaced. On error net is unchanged. */
nl_status nl_lowrank_factorize(nl_module *net, int rank, double energy, int *count);

/* ---------------------------------------------------------------- snapshots ------------- */

/* An in-memory copy of a network's architecture and every parameter, buffer and mask. */
typedef struct nl_snapshot nl_snapshot;

/* Takes a snapshot of net: a new snapshot (free with nl_snapshot_free), or NULL (NL_ENOMEM). */
nl_snapshot *nl_snapshot_take(nl_module *net);
void nl_snapshot_free(nl_snapshot *s);
/* Bytes of tensor data the snapshot holds. */
int64_t nl_snapshot_bytes(const nl_snapshot *s);
/* Puts net back as it was when s was taken: bit-identical weights, buffers, masks and
 * architecture. When the architecture is the same the tensors are copied in place (an optimizer
 * over net stays valid); otherwise net's children are rebuilt (net keeps its identity; layers
 * taken out of it before stay as they are) and an optimizer must be made again. NL_EINVAL if
 * net is not the kind of module the snapshot was taken of; NL_ENOMEM. On error net is unchanged. */
nl_status nl_snapshot_restore(const nl_snapshot *s, nl_module *net);

#endif
