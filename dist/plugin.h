/* plugin.h: the contract between nnlab and its MPI plugin (dist/mpi.c, built as nnlab_mpi.so and
 * loaded with dlopen only when a job has several processes or dist.init() is called, so a plain
 * start neither loads nor initialises MPI). Plain C types only: neither side sees the other's
 * headers. Every function returns 0, or an error code with a message in err (size errn). */
#ifndef NL_DIST_PLUGIN_H
#define NL_DIST_PLUGIN_H

#include <stddef.h>

#define NL_DIST_PLUGIN_ABI 1
#define NL_DIST_MAX_REQUESTS 64

enum { NL_DIST_T_F32, NL_DIST_T_F64, NL_DIST_T_I32, NL_DIST_T_I64, NL_DIST_T_BYTE };
enum { NL_DIST_OP_SUM, NL_DIST_OP_MAX, NL_DIST_OP_MIN };

typedef struct {
    int abi;
    /* MPI_Init_thread (funneled) unless MPI is up; errors return instead of aborting. */
    int (*init)(int *rank, int *size, int *local_rank, char *err, size_t errn);
    int (*finalize)(void);
    int (*barrier)(char *err, size_t errn);
    /* In place over every process. */
    int (*allreduce)(void *buf, long count, int type, int op, char *err, size_t errn);
    /* Starts an in-place sum; *req is the slot to wait on (at most NL_DIST_MAX_REQUESTS open). */
    int (*iallreduce_sum)(float *buf, long count, int *req, char *err, size_t errn);
    /* Lets open requests progress (Open MPI moves them only inside MPI calls). */
    void (*progress)(void);
    int (*wait)(int req, char *err, size_t errn);
    int (*bcast)(void *buf, long bytes, int root, char *err, size_t errn);
    /* Root receives every process's bytes: lens[size] and out (sum of lens, malloc'd, the caller
     * frees it); others get *out NULL. */
    int (*gather)(const void *buf, long bytes, int root, long *lens, char **out, char *err,
                  size_t errn);
    void (*abort)(int code);
    double (*wtime)(void);
} nl_dist_plugin;

/* The one symbol the plugin exports. */
const nl_dist_plugin *nl_dist_plugin_get(void);

#endif
