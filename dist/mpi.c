/* mpi.c: the MPI plugin (nnlab_mpi.so): the only file of nnlab that includes mpi.h. Thin
 * wrappers that turn MPI's error codes into messages; see plugin.h. */
#include "plugin.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static MPI_Request requests[NL_DIST_MAX_REQUESTS];
static int nrequests;

static int fail(int rc, const char *what, char *err, size_t errn)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", rc);
    snprintf(err, errn, "%s failed: %s", what, text);
    return rc;
}

#define CALL(what, expr)                                                                      \
    do {                                                                                      \
        int rc_ = (expr);                                                                     \
        if (rc_ != MPI_SUCCESS) return fail(rc_, what, err, errn);                            \
    } while (0)

static MPI_Datatype type_of(int t)
{
    switch (t) {
    case NL_DIST_T_F32: return MPI_FLOAT;
    case NL_DIST_T_F64: return MPI_DOUBLE;
    case NL_DIST_T_I32: return MPI_INT32_T;
    case NL_DIST_T_I64: return MPI_INT64_T;
    default: return MPI_BYTE;
    }
}

static MPI_Op op_of(int op) { return op == NL_DIST_OP_MAX ? MPI_MAX : op == NL_DIST_OP_MIN ? MPI_MIN : MPI_SUM; }

static int p_init(int *rank, int *size, int *local_rank, char *err, size_t errn)
{
    int up = 0;
    MPI_Initialized(&up);
    if (!up) {
        int provided;
        CALL("MPI_Init_thread", MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    CALL("MPI_Comm_rank", MPI_Comm_rank(MPI_COMM_WORLD, rank));
    CALL("MPI_Comm_size", MPI_Comm_size(MPI_COMM_WORLD, size));
    MPI_Comm node;
    CALL("MPI_Comm_split_type",
         MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node));
    MPI_Comm_rank(node, local_rank);
    MPI_Comm_free(&node);
    return 0;
}

static int p_finalize(void)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    return up && !down ? MPI_Finalize() : 0;
}

static int p_barrier(char *err, size_t errn)
{
    CALL("MPI_Barrier", MPI_Barrier(MPI_COMM_WORLD));
    return 0;
}

static int p_allreduce(void *buf, long count, int type, int op, char *err, size_t errn)
{
    CALL("MPI_Allreduce", MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, type_of(type), op_of(op),
                                        MPI_COMM_WORLD));
    return 0;
}

static int p_iallreduce_sum(float *buf, long count, int *req, char *err, size_t errn)
{
    int slot = -1;
    for (int i = 0; i < nrequests; i++)
        if (requests[i] == MPI_REQUEST_NULL) slot = i;
    if (slot < 0 && nrequests < NL_DIST_MAX_REQUESTS) slot = nrequests++;
    if (slot < 0) {
        snprintf(err, errn, "MPI_Iallreduce: more than %d open requests", NL_DIST_MAX_REQUESTS);
        return -1;
    }
    CALL("MPI_Iallreduce", MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM,
                                          MPI_COMM_WORLD, &requests[slot]));
    *req = slot;
    return 0;
}

static void p_progress(void)
{
    int done;
    if (nrequests > 0) MPI_Testall(nrequests, requests, &done, MPI_STATUSES_IGNORE);
}

static int p_wait(int req, char *err, size_t errn)
{
    if (req < 0 || req >= nrequests) return 0;
    CALL("MPI_Wait", MPI_Wait(&requests[req], MPI_STATUS_IGNORE));
    return 0;
}

static int p_bcast(void *buf, long bytes, int root, char *err, size_t errn)
{
    CALL("MPI_Bcast", MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD));
    return 0;
}

static int p_gather(const void *buf, long bytes, int root, long *lens, char **out, char *err,
                    size_t errn)
{
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    *out = NULL;
    int mine = (int)bytes, *counts = calloc((size_t)size, sizeof *counts),
        *displs = calloc((size_t)size, sizeof *displs);
    if (!counts || !displs) {
        free(counts);
        free(displs);
        snprintf(err, errn, "gather: out of memory");
        return -1;
    }
    int rc = MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, root, MPI_COMM_WORLD);
    long total = 0;
    for (int i = 0; rank == root && i < size; i++) {
        displs[i] = (int)total;
        lens[i] = counts[i];
        total += counts[i];
    }
    char *all = rank == root ? malloc((size_t)total + 1) : NULL;
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(buf, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, root, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    if (rc != MPI_SUCCESS) {
        free(all);
        return fail(rc, "MPI_Gatherv", err, errn);
    }
    *out = all;
    return 0;
}

static void p_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
static double p_wtime(void) { return MPI_Wtime(); }

static const nl_dist_plugin plugin = {
    .abi = NL_DIST_PLUGIN_ABI,
    .init = p_init,
    .finalize = p_finalize,
    .barrier = p_barrier,
    .allreduce = p_allreduce,
    .iallreduce_sum = p_iallreduce_sum,
    .progress = p_progress,
    .wait = p_wait,
    .bcast = p_bcast,
    .gather = p_gather,
    .abort = p_abort,
    .wtime = p_wtime,
};

const nl_dist_plugin *nl_dist_plugin_get(void) { return &plugin; }
