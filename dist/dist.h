/* dist.h: the processes of a data-parallel job: rank and size, collectives over tensors and
 * bytes, and the gradient exchange a training step plugs in. MPI sits behind it in a plugin that
 * is loaded on the first nl_dist_init, so a program that never calls it runs without MPI. Ranks
 * are 0-based here (the Lua layer shows them 1-based). */
#ifndef NL_DIST_H
#define NL_DIST_H

#include "train.h"

typedef enum { NL_DIST_SUM, NL_DIST_MAX, NL_DIST_MIN } nl_dist_op;

/* Whether this process was started by mpirun (Open MPI's or PMIx's environment is set). */
bool nl_dist_launched(void);
/* Loads the MPI plugin and initialises MPI (no-op when done). NL_EIO naming the plugin's path
 * when it cannot be loaded, NL_EINVAL with MPI's message when MPI fails. */
nl_status nl_dist_init(void);
bool nl_dist_active(void);
int nl_dist_rank(void);       /* 0 without MPI */
int nl_dist_size(void);       /* 1 without MPI */
int nl_dist_local_rank(void); /* rank among the processes of this machine */
/* Finalises MPI (at exit; no-op without it). */
void nl_dist_finalize(void);

/* Collectives: every process must call them in the same order with the same sizes. Without MPI
 * they do nothing. Errors: NL_EINVAL with MPI's message. */
nl_status nl_dist_barrier(void);
/* In place over every process: count elements of dtype (f32 or i32) or of doubles (dtype < 0). */
nl_status nl_dist_allreduce(void *buf, int64_t count, int dtype, nl_dist_op op);
nl_status nl_dist_broadcast(void *buf, int64_t bytes, int root);
/* Rank 0 receives each process's bytes (lens[size], *out: malloc'd, the caller frees it);
 * others get *out NULL. */
nl_status nl_dist_gather(const void *buf, int64_t bytes, int64_t *lens, char **out);
/* The whole job ends with code (MPI_Abort). */
void nl_dist_abort(int code);

/* Whether every process passed the same values (a shape check before a collective): NL_OK, or
 * NL_ESHAPE on every process with the smallest and largest of each value in the message. */
nl_status nl_dist_check_same(const char *what, const int64_t *v, int n);

/* Collectives on a device's memory (GPU ranks: NCCL), registered per device kind by the backend
 * that has them (backends/registry.c). The exchange below uses them when the gradients are on a
 * device: rank 0 makes the id, MPI broadcasts it, every rank joins on its device, and each bucket
 * is summed in place, ordered on the device after backward's kernels. */
typedef struct {
    const char *name;  /* "NCCL", in messages */
    size_t id_bytes;   /* at most NL_DIST_DEVICE_ID_MAX */
    nl_status (*unique_id)(void *id);
    nl_status (*join)(const void *id, int nranks, int rank, nl_device dev, void **comm);
    nl_status (*allreduce_sum)(void *comm, nl_tensor *t);
    void (*leave)(void *comm);
} nl_dist_device_comm;
#define NL_DIST_DEVICE_ID_MAX 256
void nl_dist_provide_device_comm(nl_device kind, const nl_dist_device_comm *c);
/* Device collectives through host memory (each bucket to the host, summed by MPI, and back): sim's,
 * so that the tests run the exchange's device path (the join, the id's broadcast, buckets as
 * views of a device store) on a machine without GPUs. */
extern const nl_dist_device_comm nl_dist_staged_comm;

/* The gradient exchange of data-parallel training: averages the parameter store's gradients over
 * the processes in buckets of about bucket_bytes, each started (non-blocking all-reduce) as soon as
 * backward has finished its layers, and all waited for in finish. NULL with NL_ENOMEM. */
typedef struct nl_dist_exchange nl_dist_exchange;
nl_dist_exchange *nl_dist_exchange_new(int64_t bucket_bytes);
void nl_dist_exchange_free(nl_dist_exchange *x);
const nl_grad_exchange *nl_dist_exchange_hook(nl_dist_exchange *x);
typedef struct {
    int64_t steps;          /* exchanges done */
    int64_t bytes;          /* gradient bytes all-reduced per step (the store's size) */
    int buckets;            /* buckets per step */
    double wait_seconds;    /* total time spent in finish waiting for the all-reduces */
    double overlap_buckets; /* total buckets started during backward (the others at finish) */
} nl_dist_exchange_stats;
nl_dist_exchange_stats nl_dist_exchange_get_stats(const nl_dist_exchange *x);

#endif
