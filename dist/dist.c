/* dist.c: the distributed layer's core half: loads the MPI plugin on demand, wraps its collectives
 * in nl_status errors, and runs the bucketed gradient exchange over a parameter store. */
#include "dist.h"
#include "plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const nl_dist_plugin *mpi; /* NULL until nl_dist_init */
static int rank_, size_ = 1, local_rank_;
static const nl_dist_device_comm *device_comms[NL_DEVICE_COUNT];

void nl_dist_provide_device_comm(nl_device kind, const nl_dist_device_comm *c)
{
    if ((unsigned)kind < NL_DEVICE_COUNT) device_comms[kind] = c;
}

bool nl_dist_launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* The plugin's path: $NNLAB_MPI_PLUGIN, else nnlab_mpi.so beside the running program. */
static void plugin_path(char *buf, size_t n)
{
    const char *env = getenv("NNLAB_MPI_PLUGIN");
    if (env && *env) {
        snprintf(buf, n, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) slash[1] = '\0';
    snprintf(buf, n, "%snnlab_mpi.so", slash ? exe : "./");
}

/* SyncBatchNorm's sums over the ranks. */
static nl_status sync_sum(double *v, int n) { return nl_dist_allreduce(v, n, -1, NL_DIST_SUM); }

nl_status nl_dist_init(void)
{
    if (mpi) return NL_OK;
    char path[PATH_MAX + 16];
    plugin_path(path, sizeof path);
    /* RTLD_GLOBAL: Open MPI loads its own components, which need libmpi's symbols. */
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!h) return nl_seterr(NL_EIO, "dist: cannot load the MPI plugin: %s", dlerror());
    const nl_dist_plugin *(*get)(void) = (const nl_dist_plugin *(*)(void))dlsym(h, "nl_dist_plugin_get");
    const nl_dist_plugin *p = get ? get() : NULL;
    if (!p || p->abi != NL_DIST_PLUGIN_ABI)
        return nl_seterr(NL_EIO, "dist: %s is not an nnlab MPI plugin of this version", path);
    char err[256];
    if (p->init(&rank_, &size_, &local_rank_, err, sizeof err) != 0)
        return nl_seterr(NL_EINVAL, "dist: %s", err);
    mpi = p;
    if (size_ > 1) nl_set_sync_sum(sync_sum);
    /* The ranks on one machine share its cores: without NNLAB_THREADS each takes its share. */
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!getenv("NNLAB_THREADS") && local && atoi(local) > 1) {
        int share = nl_get_threads() / atoi(local);
        nl_set_threads(share > 0 ? share : 1);
    }
    return NL_OK;
}

bool nl_dist_active(void) { return mpi != NULL; }
int nl_dist_rank(void) { return rank_; }
int nl_dist_size(void) { return size_; }
int nl_dist_local_rank(void) { return local_rank_; }

void nl_dist_finalize(void)
{
    if (mpi) mpi->finalize();
}

void nl_dist_abort(int code)
{
    if (mpi) mpi->abort(code);
    exit(code);
}

/* NL_OK for rc 0, else NL_EINVAL with the plugin's message. */
static nl_status status_of(int rc, const char *err)
{
    return rc == 0 ? NL_OK : nl_seterr(NL_EINVAL, "dist: %s", err);
}

nl_status nl_dist_barrier(void)
{
    char err[256];
    return mpi ? status_of(mpi->barrier(err, sizeof err), err) : NL_OK;
}

nl_status nl_dist_allreduce(void *buf, int64_t count, int dtype, nl_dist_op op)
{
    if (!mpi || count == 0) return NL_OK;
    if (count > INT_MAX) return nl_seterr(NL_EINVAL, "dist: %lld elements are too many for one "
                                          "all-reduce", (long long)count);
    int t = dtype < 0 ? NL_DIST_T_F64 : dtype == NL_F32 ? NL_DIST_T_F32 : NL_DIST_T_I32;
    int o = op == NL_DIST_MAX ? NL_DIST_OP_MAX : op == NL_DIST_MIN ? NL_DIST_OP_MIN : NL_DIST_OP_SUM;
    char err[256];
    return status_of(mpi->allreduce(buf, (long)count, t, o, err, sizeof err), err);
}

nl_status nl_dist_broadcast(void *buf, int64_t bytes, int root)
{
    if (!mpi || bytes == 0) return NL_OK;
    if (bytes > INT_MAX) return nl_seterr(NL_EINVAL, "dist: %lld bytes are too many for one "
                                          "broadcast", (long long)bytes);
    char err[256];
    return status_of(mpi->bcast(buf, (long)bytes, root, err, sizeof err), err);
}

nl_status nl_dist_gather(const void *buf, int64_t bytes, int64_t *lens, char **out)
{
    *out = NULL;
    if (!mpi) {
        lens[0] = bytes;
        if (!(*out = malloc((size_t)bytes + 1))) return nl_seterr(NL_ENOMEM, "dist: out of memory");
        memcpy(*out, buf, (size_t)bytes);
        return NL_OK;
    }
    long *l = calloc((size_t)size_, sizeof *l);
    if (!l) return nl_seterr(NL_ENOMEM, "dist: out of memory");
    char err[256];
    nl_status st = status_of(mpi->gather(buf, (long)bytes, 0, l, out, err, sizeof err), err);
    for (int i = 0; i < size_; i++) lens[i] = l[i];
    free(l);
    return st;
}

nl_status nl_dist_check_same(const char *what, const int64_t *v, int n)
{
    if (!mpi) return NL_OK;
    enum { MAXV = 16 };
    double hi[MAXV], lo[MAXV];
    if (n > MAXV) n = MAXV;
    for (int i = 0; i < n; i++) hi[i] = lo[i] = (double)v[i];
    nl_status st = nl_dist_allreduce(hi, n, -1, NL_DIST_MAX);
    if (st == NL_OK) st = nl_dist_allreduce(lo, n, -1, NL_DIST_MIN);
    if (st != NL_OK) return st;
    for (int i = 0; i < n; i++)
        if (hi[i] != lo[i])
            return nl_seterr(NL_ESHAPE, "%s: the processes disagree: value %d is %.0f on one and "
                             "%.0f on another (every rank must pass the same dtype and shape)",
                             what, i + 1, lo[i], hi[i]);
    return NL_OK;
}

/* ---------------------------------------------------------------- staged device sums ---- */

static nl_status staged_id(void *id)
{
    memset(id, 0, sizeof(int64_t)); /* nothing to agree on but that everyone joins */
    return NL_OK;
}

static nl_status staged_join(const void *id NL_UNUSED, int nranks NL_UNUSED, int rank NL_UNUSED,
                             nl_device dev NL_UNUSED, void **comm)
{
    static char joined;
    *comm = &joined;
    return NL_OK;
}

static nl_status staged_sum(void *comm NL_UNUSED, nl_tensor *t)
{
    nl_tensor *h = nl_tensor_host(t);
    nl_status st = h ? nl_dist_allreduce(nl_tensor_data(h), nl_tensor_numel(h), NL_F32, NL_DIST_SUM)
                     : nl_errcode();
    if (st == NL_OK) st = nl_copy(t, h);
    nl_tensor_release(h);
    return st;
}

static void staged_leave(void *comm NL_UNUSED) {}

const nl_dist_device_comm nl_dist_staged_comm = {
    .name = "host-staged sums", .id_bytes = sizeof(int64_t), .unique_id = staged_id,
    .join = staged_join, .allreduce_sum = staged_sum, .leave = staged_leave,
};

/* ---------------------------------------------------------------- gradient exchange ----- */

struct nl_dist_exchange {
    nl_grad_exchange hook;
    int64_t bucket_elems;
    uint64_t generation;   /* of the store the buckets were cut for */
    const nl_store *store;
    int nbuckets;
    int64_t *start;        /* nbuckets + 1 element boundaries, bucket b = [start[b], start[b+1]) */
    int64_t *pending;      /* elements whose gradients are not complete yet, per bucket */
    int *req;              /* the request of each started bucket, -1 before (0 on a device) */
    nl_dist_exchange_stats stats;
    const nl_dist_device_comm *dc; /* gradients on a device: its collectives, joined on comm_dev */
    void *comm;
    nl_device comm_dev;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Cuts the store into buckets at parameter boundaries, from its end (backward finishes the last
 * layers first), each of at least bucket_elems elements except the first. */
static nl_status cut_buckets(nl_dist_exchange *x, const nl_store *s)
{
    int n = s->count;
    free(x->start);
    free(x->pending);
    free(x->req);
    x->start = calloc((size_t)n + 2, sizeof *x->start);
    x->pending = calloc((size_t)n + 1, sizeof *x->pending);
    x->req = calloc((size_t)n + 1, sizeof *x->req);
    if (!x->start || !x->pending || !x->req) return nl_seterr(NL_ENOMEM, "dist: out of memory");
    /* boundaries from the end, then reversed into ascending order */
    int nb = 0;
    int64_t end = s->offset[n];
    int64_t *cuts = x->pending; /* scratch, n + 1 */
    /* at most NL_DIST_MAX_REQUESTS / 2 buckets: the plugin keeps that many requests open */
    int64_t least = end / (NL_DIST_MAX_REQUESTS / 2) + 1;
    int64_t size = x->bucket_elems > least ? x->bucket_elems : least;
    cuts[nb++] = end;
    for (int i = n - 1; i > 0; i--)
        if (cuts[nb - 1] - s->offset[i] >= size) cuts[nb++] = s->offset[i];
    cuts[nb++] = 0;
    for (int b = 0; b < nb; b++) x->start[b] = cuts[nb - 1 - b];
    x->nbuckets = n > 0 ? nb - 1 : 0;
    x->generation = s->generation;
    x->stats.buckets = x->nbuckets;
    x->stats.bytes = s->offset[n] * (int64_t)sizeof(float);
    return NL_OK;
}

/* The device collectives of dev, joined once per device: every rank first loads them (all must
 * be able to, or none joins: a rank left waiting in a join would hang), then rank 0's id goes to
 * all by MPI and each joins on its own device. */
static nl_status join_device(nl_dist_exchange *x, nl_device dev)
{
    if (x->comm && x->comm_dev == dev) return NL_OK;
    const nl_dist_device_comm *dc = device_comms[nl_device_kind(dev)];
    if (!dc)
        return nl_seterr(NL_EDEVICE, "dist: the gradients are on %s, which has no collectives: GPU "
                         "ranks need nnlab built with CUDA (NCCL), other devices train on the cpu "
                         "under several ranks", nl_device_name(dev));
    if (x->comm) x->dc->leave(x->comm);
    x->comm = NULL;
    char id[NL_DIST_DEVICE_ID_MAX], why[256] = "";
    nl_status st = dc->unique_id(id);
    if (st != NL_OK) snprintf(why, sizeof why, "%s", nl_errmsg());
    double ok = st == NL_OK, all = ok;
    nl_status sa = nl_dist_allreduce(&all, 1, -1, NL_DIST_MIN);
    if (sa != NL_OK) return sa;
    if (!ok) return nl_seterr(NL_EDEVICE, "dist: rank %d: %s", rank_ + 1, why);
    if (!all) return nl_seterr(NL_EDEVICE, "dist: another rank could not load %s (its message names "
                               "the reason)", dc->name);
    if ((st = nl_dist_broadcast(id, (int64_t)dc->id_bytes, 0)) != NL_OK) return st;
    if ((st = dc->join(id, size_, rank_, dev, &x->comm)) != NL_OK) return st;
    x->dc = dc;
    x->comm_dev = dev;
    return NL_OK;
}

static nl_status start_bucket(nl_dist_exchange *x, int b)
{
    if (!mpi) return NL_OK; /* one process: nothing to exchange */
    if (x->comm) { /* on the device, after the kernels queued there */
        nl_tensor *g = nl_tensor_slice(x->store->grads, 0, x->start[b], x->start[b + 1]);
        nl_status st = g ? x->dc->allreduce_sum(x->comm, g) : nl_errcode();
        nl_tensor_release(g);
        if (st == NL_OK) x->req[b] = 0;
        return st;
    }
    char err[256];
    float *base = nl_tensor_f32(x->store->grads);
    int64_t n = x->start[b + 1] - x->start[b];
    if (n > INT_MAX) return nl_seterr(NL_EINVAL, "dist: a bucket of %lld elements is too large",
                                      (long long)n);
    return status_of(mpi->iallreduce_sum(base + x->start[b], (long)n, &x->req[b], err, sizeof err), err);
}

static nl_status ex_begin(void *ctx, nl_store *s)
{
    nl_dist_exchange *x = ctx;
    const nl_device dev = s->count > 0 ? nl_tensor_device(s->grads) : NL_CPU;
    if (dev != NL_CPU && mpi) {
        nl_status st = join_device(x, dev);
        if (st != NL_OK) return st;
    } else if (x->comm) { /* back on the cpu: MPI again */
        x->dc->leave(x->comm);
        x->comm = NULL;
    }
    if (s->generation != x->generation || !x->start) {
        nl_status st = cut_buckets(x, s);
        if (st != NL_OK) return st;
    }
    x->store = s;
    for (int b = 0; b < x->nbuckets; b++) {
        x->pending[b] = x->start[b + 1] - x->start[b];
        x->req[b] = -1;
    }
    return NL_OK;
}

static void ex_ready(void *ctx, nl_module *m)
{
    nl_dist_exchange *x = ctx;
    const nl_store *s = x->store;
    for (int j = 0; s && j < m->nparams; j++) {
        const nl_tensor *g = m->params[j].grad;
        if (!g || g->storage != s->grads->storage) continue;
        int64_t e = (int64_t)(g->offset - s->grads->offset);
        int lo = 0, hi = x->nbuckets - 1; /* the bucket holding element e */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (x->start[mid] <= e) lo = mid;
            else hi = mid - 1;
        }
        x->pending[lo] -= nl_tensor_numel(g);
        if (x->pending[lo] == 0 && x->req[lo] < 0 && start_bucket(x, lo) == NL_OK)
            x->stats.overlap_buckets++;
    }
    if (mpi) mpi->progress();
}

static nl_status ex_finish(void *ctx, nl_store *s, bool *skip)
{
    nl_dist_exchange *x = ctx;
    nl_status st = NL_OK;
    double t0 = now();
    /* Buckets backward did not complete (frozen layers, a failed backward) start now, in order:
     * every process starts the same buckets in the same order. */
    for (int b = 0; b < x->nbuckets; b++)
        if (x->req[b] < 0) {
            nl_status sb = start_bucket(x, b);
            if (st == NL_OK) st = sb;
        }
    char err[256];
    for (int b = 0; b < x->nbuckets && !x->comm; b++) /* device sums need no wait here */
        if (x->req[b] >= 0) {
            nl_status sw = status_of(mpi->wait(x->req[b], err, sizeof err), err);
            if (st == NL_OK) st = sw;
        }
    double any = *skip; /* one more small all-reduce: whether any rank skips the update */
    nl_status sk = nl_dist_allreduce(&any, 1, -1, NL_DIST_MAX);
    if (st == NL_OK) st = sk;
    *skip = any != 0;
    x->stats.wait_seconds += now() - t0;
    x->stats.steps++;
    x->store = NULL;
    if (st == NL_OK && s->count > 0 && size_ > 1)
        st = nl_binary_scalar(NL_BIN_MUL, s->grads, s->grads, 1.0 / size_, false);
    return st;
}

nl_dist_exchange *nl_dist_exchange_new(int64_t bucket_bytes)
{
    nl_dist_exchange *x = calloc(1, sizeof *x);
    if (!x) {
        nl_seterr(NL_ENOMEM, "dist: out of memory");
        return NULL;
    }
    x->bucket_elems = bucket_bytes > 0 ? bucket_bytes / (int64_t)sizeof(float) : 1;
    x->hook = (nl_grad_exchange){.ctx = x, .begin = ex_begin, .ready = ex_ready, .finish = ex_finish};
    return x;
}

void nl_dist_exchange_free(nl_dist_exchange *x)
{
    if (!x) return;
    if (x->comm) x->dc->leave(x->comm);
    free(x->start);
    free(x->pending);
    free(x->req);
    free(x);
}

const nl_grad_exchange *nl_dist_exchange_hook(nl_dist_exchange *x) { return &x->hook; }
nl_dist_exchange_stats nl_dist_exchange_get_stats(const nl_dist_exchange *x) { return x->stats; }
