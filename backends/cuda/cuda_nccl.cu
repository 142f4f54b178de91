/* cuda_nccl.cu: NCCL for GPU ranks: the communicator's unique id, joining it on this process's
 * device and the in-place sum of a gradient bucket, queued on that device's stream after the
 * backward kernels (no wait on the host). libnccl.so.2 is loaded with dlopen on first use
 * ($NNLAB_NCCL names another file), so a machine without NCCL runs everything else; the few NCCL
 * types used are declared here as NCCL 2's ABI has them, so nccl.h need not be installed.
 * Not yet run on GPUs (it needs two): see the README's "Many processes and machines". */
#include "cuda_impl.cuh"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char internal[NL_NCCL_ID_BYTES];
} nccl_unique_id;                        /* ncclUniqueId */
typedef struct nccl_comm *nccl_comm_t;   /* ncclComm_t */
typedef int nccl_result;                 /* ncclResult_t: 0 is ncclSuccess */
enum { NCCL_SUM = 0, NCCL_FLOAT32 = 7 }; /* ncclSum, ncclFloat32 */

static struct {
    nccl_result (*get_unique_id)(nccl_unique_id *id);
    nccl_result (*comm_init_rank)(nccl_comm_t *comm, int nranks, nccl_unique_id id, int rank);
    nccl_result (*all_reduce)(const void *send, void *recv, size_t count, int dtype, int op,
                              nccl_comm_t comm, cudaStream_t stream);
    nccl_result (*comm_destroy)(nccl_comm_t comm);
    const char *(*error_string)(nccl_result r);
} nccl;

/* A communicator and the device context it runs on. */
typedef struct {
    nccl_comm_t comm;
    cu_ctx *c;
} nl_nccl;

/* Loads NCCL once: NL_EDEVICE naming the file and dlopen's reason when it cannot. */
static nl_status load_nccl(void)
{
    static void *lib;
    if (lib) return NL_OK;
    const char *env = getenv("NNLAB_NCCL");
    const bool named = env && *env;
    const char *const names[] = {named ? env : "libnccl.so.2", "libnccl.so"};
    decltype(nccl) api;
    const cu_sym syms[] = {
        {(void **)&api.get_unique_id, "ncclGetUniqueId"},
        {(void **)&api.comm_init_rank, "ncclCommInitRank"},
        {(void **)&api.all_reduce, "ncclAllReduce"},
        {(void **)&api.comm_destroy, "ncclCommDestroy"},
        {(void **)&api.error_string, "ncclGetErrorString"},
    };
    nl_status st = cu_dlopen("nccl", names, named ? 1 : 2, syms, (int)(sizeof syms / sizeof syms[0]),
                             ": GPU ranks exchange gradients through NCCL; install it (libnccl2) or "
                             "put its folder on LD_LIBRARY_PATH", &lib);
    if (st == NL_OK) nccl = api;
    return st;
}

static nl_status nccl_check(const char *dev, nccl_result r, const char *call)
{
    if (r == 0) return NL_OK;
    return nl_seterr(NL_EDEVICE, "%s: %s failed: %s", dev, call, nccl.error_string(r));
}

nl_status nl_nccl_unique_id(void *id)
{
    nl_status st = load_nccl();
    if (st != NL_OK) return st;
    nccl_unique_id uid;
    st = nccl_check("nccl", nccl.get_unique_id(&uid), "ncclGetUniqueId");
    if (st == NL_OK) memcpy(id, &uid, sizeof uid);
    return st;
}

nl_status nl_nccl_join(const void *id, int nranks, int rank, nl_device dev, void **comm)
{
    *comm = NULL;
    nl_status st = load_nccl();
    if (st != NL_OK) return st;
    if (nl_device_kind(dev) != NL_CUDA)
        return nl_seterr(NL_EDEVICE, "nccl: %s is not a CUDA device", nl_device_name(dev));
    nl_backend *be = nl_backend_get(dev);
    if (!be) return nl_errcode();
    cu_ctx *c = (cu_ctx *)be->ctx;
    if ((st = cu_check(c, cudaSetDevice(c->device), "cudaSetDevice")) != NL_OK) return st;
    nl_nccl *n = (nl_nccl *)calloc(1, sizeof *n);
    if (!n) return nl_seterr(NL_ENOMEM, "nccl: out of memory");
    nccl_unique_id uid;
    memcpy(&uid, id, sizeof uid);
    st = nccl_check(c->name, nccl.comm_init_rank(&n->comm, nranks, uid, rank), "ncclCommInitRank");
    if (st != NL_OK) {
        free(n);
        return st;
    }
    n->c = c;
    *comm = n;
    return NL_OK;
}

nl_status nl_nccl_allreduce_sum(void *comm, nl_tensor *t)
{
    nl_nccl *n = (nl_nccl *)comm;
    if (t->dtype != NL_F32 || !nl_tensor_is_contiguous(t) || t->storage->backend->ctx != n->c)
        return nl_seterr(NL_EINVAL, "nccl: the all-reduce takes a contiguous f32 tensor on %s",
                         n->c->name);
    float *p = (float *)t->storage->ptr + t->offset;
    return nccl_check(n->c->name, nccl.all_reduce(p, p, (size_t)nl_tensor_numel(t), NCCL_FLOAT32,
                                                  NCCL_SUM, n->comm, n->c->stream),
                      "ncclAllReduce");
}

void nl_nccl_leave(void *comm)
{
    nl_nccl *n = (nl_nccl *)comm;
    if (!n) return;
    nccl.comm_destroy(n->comm);
    free(n);
}
