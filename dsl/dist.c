/* dist.c: the Lua module `dist`: ranks (1-based), collectives over tensors, and the private
 * helpers dsl/dist.lua builds the data-parallel Trainer's pieces and dist.gather/print/predict
 * on. MPI is started here when mpirun launched the process or on dist.init(). */
#include "dist.h"
#include "dsl.h"
#include "ldist.h"
#include "lnn.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXCHANGE_MT "DistExchange"

extern const char nl_lua_dist[];
extern const size_t nl_lua_dist_len;

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

static int l_init(lua_State *L)
{
    check_status(L, nl_dist_init());
    lua_pushinteger(L, nl_dist_size());
    return 1;
}

static int l_rank(lua_State *L)
{
    lua_pushinteger(L, nl_dist_rank() + 1);
    return 1;
}

static int l_size(lua_State *L)
{
    lua_pushinteger(L, nl_dist_size());
    return 1;
}

static int l_local_rank(lua_State *L)
{
    lua_pushinteger(L, nl_dist_local_rank() + 1);
    return 1;
}

static int l_is_main(lua_State *L)
{
    lua_pushboolean(L, nl_dist_rank() == 0);
    return 1;
}

static int l_barrier(lua_State *L)
{
    check_status(L, nl_dist_barrier());
    return 0;
}

/* The tensor at idx as a collective's buffer: contiguous f32 or i32 on the CPU; and the check
 * that every rank passed the same dtype and shape (so a mismatch is an error everywhere, not a
 * hang). */
static nl_tensor *collective_tensor(lua_State *L, int idx, const char *fname)
{
    nl_tensor *t = nl_lua_checktensor(L, idx);
    bool ok = (t->dtype == NL_F32 || t->dtype == NL_I32) && nl_tensor_device(t) == NL_CPU &&
              nl_tensor_is_contiguous(t);
    int64_t v[NL_MAX_DIMS + 3] = {ok, t->dtype, t->ndim};
    for (int d = 0; d < t->ndim; d++) v[3 + d] = t->shape[d];
    nl_status s = nl_dist_check_same(fname, v, 3 + t->ndim);
    if (!ok)
        return nl_dsl_error(L, "%s: the tensor must be a contiguous f32 or i32 tensor on the cpu "
                            "(got %s on %s%s)", fname, nl_dtype_info(t->dtype)->name,
                            nl_device_name(nl_tensor_device(t)),
                            nl_tensor_is_contiguous(t) ? "" : ", a strided view"), NULL;
    check_status(L, s);
    return t;
}

static int l_allreduce(lua_State *L)
{
    static const char *const ops[] = {"sum", "mean", "max", "min", NULL};
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int op = luaL_checkoption(L, 2, "sum", ops);
    t = collective_tensor(L, 1, "dist.allreduce");
    if (op == 1 && t->dtype != NL_F32) return nl_dsl_error(L, "dist.allreduce: \"mean\" needs an f32 tensor");
    nl_dist_op o = op == 2 ? NL_DIST_MAX : op == 3 ? NL_DIST_MIN : NL_DIST_SUM;
    check_status(L, nl_dist_allreduce(nl_tensor_data(t), nl_tensor_numel(t), t->dtype, o));
    if (op == 1 && nl_dist_size() > 1)
        check_status(L, nl_binary_scalar(NL_BIN_MUL, t, t, 1.0 / nl_dist_size(), false));
    lua_settop(L, 1);
    return 1;
}

static int l_broadcast(lua_State *L)
{
    nl_lua_checktensor(L, 1);
    lua_Integer root = luaL_optinteger(L, 2, 1);
    if (root < 1 || root > nl_dist_size())
        return nl_dsl_error(L, "dist.broadcast: root must be a rank from 1 to %d, got %d",
                            nl_dist_size(), (int)root);
    nl_tensor *t = collective_tensor(L, 1, "dist.broadcast");
    int64_t bytes = nl_tensor_numel(t) * (int64_t)nl_dtype_info(t->dtype)->size;
    check_status(L, nl_dist_broadcast(nl_tensor_data(t), bytes, (int)root - 1));
    lua_settop(L, 1);
    return 1;
}

/* P.gather(bytes) -> {bytes of rank 1, ...} on rank 1, nil elsewhere. */
static int p_gather(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int64_t *lens = lua_newuserdatauv(L, (size_t)nl_dist_size() * sizeof *lens, 0);
    char *all = NULL;
    check_status(L, nl_dist_gather(s, (int64_t)n, lens, &all));
    if (!all) return 0;
    lua_createtable(L, nl_dist_size(), 0);
    int64_t at = 0;
    for (int i = 0; i < nl_dist_size(); i++) {
        lua_pushlstring(L, all + at, (size_t)lens[i]);
        lua_rawseti(L, -2, i + 1);
        at += lens[i];
    }
    free(all);
    return 1;
}

/* P.any(flag) -> whether any rank passed true (the Trainer's stop flag). */
static int p_any(lua_State *L)
{
    double v = lua_toboolean(L, 1);
    check_status(L, nl_dist_allreduce(&v, 1, -1, NL_DIST_MAX));
    lua_pushboolean(L, v != 0);
    return 1;
}

/* P.sum(numbers...) -> their sums over the ranks (doubles). */
static int p_sum(lua_State *L)
{
    int n = lua_gettop(L);
    double *v = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *v, 0);
    for (int i = 0; i < n; i++) v[i] = luaL_checknumber(L, i + 1);
    check_status(L, nl_dist_allreduce(v, n, -1, NL_DIST_SUM));
    for (int i = 0; i < n; i++) lua_pushnumber(L, v[i]);
    return n;
}

/* P.exchange(bucket_bytes) -> a DistExchange box. */
static int p_exchange(lua_State *L)
{
    lua_Integer bytes = luaL_checkinteger(L, 1);
    nl_dist_exchange **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, EXCHANGE_MT);
    if (!(*box = nl_dist_exchange_new(bytes))) return nl_dsl_core_error(L);
    return 1;
}

static nl_dist_exchange *check_exchange(lua_State *L, int idx)
{
    nl_dist_exchange **box = luaL_checkudata(L, idx, EXCHANGE_MT);
    if (!*box) luaL_argerror(L, idx, "the exchange is closed");
    return *box;
}

const nl_grad_exchange *nl_lua_optexchange(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? NULL : nl_dist_exchange_hook(check_exchange(L, idx));
}

/* P.exchange_stats(x) -> {steps=, bytes=, buckets=, wait=, overlapped=} */
static int p_exchange_stats(lua_State *L)
{
    nl_dist_exchange_stats s = nl_dist_exchange_get_stats(check_exchange(L, 1));
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, s.steps);
    lua_setfield(L, -2, "steps");
    lua_pushinteger(L, s.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, s.buckets);
    lua_setfield(L, -2, "buckets");
    lua_pushnumber(L, s.wait_seconds);
    lua_setfield(L, -2, "wait");
    lua_pushnumber(L, s.overlap_buckets);
    lua_setfield(L, -2, "overlapped");
    return 1;
}

static int exchange_gc(lua_State *L)
{
    nl_dist_exchange **box = luaL_checkudata(L, 1, EXCHANGE_MT);
    nl_dist_exchange_free(*box);
    *box = NULL;
    return 0;
}

/* ---- the agreed stop: while a data-parallel trainer runs, SIGINT and SIGTERM (what mpirun sends
 * its ranks when it is interrupted) only raise this flag, which the ranks then agree on between
 * steps; a step itself is never cut short on one rank while the others wait in its all-reduce. */
static volatile sig_atomic_t stop_flag;
static int catch_depth;
static struct sigaction saved_int, saved_term;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* P.catch(on): nests; the first on installs the handlers, the last off restores the old ones. */
static int p_catch(lua_State *L)
{
    if (lua_toboolean(L, 1)) {
        if (catch_depth++ == 0) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_stop_signal;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGINT, &sa, &saved_int);
            sigaction(SIGTERM, &sa, &saved_term);
        }
    } else if (catch_depth > 0 && --catch_depth == 0) {
        sigaction(SIGINT, &saved_int, NULL);
        sigaction(SIGTERM, &saved_term, NULL);
    }
    return 0;
}

/* P.stop_requested() -> whether a stop signal or Ctrl-C came since the last call (clears both). */
static int p_stop_requested(lua_State *L)
{
    bool stop = stop_flag || nl_interrupted();
    stop_flag = 0;
    nl_interrupt_clear();
    lua_pushboolean(L, stop);
    return 1;
}

/* P.reduce_eval(stats): sums an evaluation's running totals (nn.evaluate's) over the ranks, so
 * that every rank holds the global result. */
static int p_reduce_eval(lua_State *L)
{
    nl_eval_stats *s = luaL_checkudata(L, 1, "nnlab.EvalStats");
    double v[5] = {s->loss_sum, (double)s->count, (double)s->top1, (double)s->top5,
                   (double)s->nclasses};
    check_status(L, nl_dist_allreduce(v, 4, -1, NL_DIST_SUM));
    check_status(L, nl_dist_allreduce(v + 4, 1, -1, NL_DIST_MAX));
    int64_t c = (int64_t)v[4];
    if (s->nclasses && s->nclasses != c)
        return nl_dsl_error(L, "nn.evaluate: the ranks' outputs have %d and %d classes",
                            (int)s->nclasses, (int)c);
    int32_t has = s->confusion != NULL;
    check_status(L, nl_dist_allreduce(&has, 1, NL_I32, NL_DIST_MAX));
    if (has && !s->confusion) { /* a rank without samples: zeros */
        int64_t cc[2] = {c, c};
        if (!(s->confusion = nl_tensor_zeros(NL_I32, 2, cc, NL_CPU))) return nl_dsl_core_error(L);
    }
    if (has)
        check_status(L, nl_dist_allreduce(nl_tensor_data(s->confusion), c * c, NL_I32, NL_DIST_SUM));
    s->loss_sum = v[0];
    s->count = (int64_t)v[1];
    s->top1 = (int64_t)v[2];
    s->top5 = (int64_t)v[3];
    s->nclasses = c;
    return 0;
}

/* P.sync_bn(net) -> count: every BatchNorm of net becomes a SyncBatchNorm. */
static int p_sync_bn(lua_State *L)
{
    lua_pushinteger(L, nl_batchnorm_make_sync(nl_lua_checkmodule(L, 1)));
    return 1;
}

/* P.abort(code): ends every rank (a fatal error on one rank that the others cannot see). */
static int p_abort(lua_State *L)
{
    nl_dist_abort((int)luaL_optinteger(L, 1, 1));
    return 0;
}

static const nl_dsl_fn dist_fns[] = {
    {"init", l_init, "dist.init() -> size",
     "Starts MPI in this process if it is not running yet (mpirun-launched processes start it "
     "by themselves) and returns the number of ranks; 1 when run alone.",
     "if os.getenv(\"OMPI_COMM_WORLD_SIZE\") then print(dist.init()) end -- mpirun started MPI already"},
    {"rank", l_rank, "dist.rank() -> r", "This process's rank, 1 to dist.size() (1 without MPI).",
     "print(dist.rank())"},
    {"size", l_size, "dist.size() -> n", "The number of processes in the job (1 without MPI).",
     "print(dist.size())"},
    {"local_rank", l_local_rank, "dist.local_rank() -> r",
     "This process's rank among those on the same machine, from 1 (a GPU rank takes cuda:(r-1)).",
     "print(dist.local_rank())"},
    {"is_main", l_is_main, "dist.is_main() -> boolean",
     "Whether this is rank 1, the one that logs, draws and saves.", "print(dist.is_main())"},
    {"barrier", l_barrier, "dist.barrier()", "Waits until every rank has reached it.",
     "dist.barrier()"},
    {"allreduce", l_allreduce, "dist.allreduce(t [, \"sum\"|\"mean\"|\"max\"|\"min\"]) -> t",
     "Combines t (contiguous f32 or i32 on the cpu, the same shape on every rank) over all ranks "
     "in place. A rank with another shape makes every rank raise an error, not hang.",
     "local t = tensor.ones(3); dist.allreduce(t, \"sum\"); print(t)"},
    {"broadcast", l_broadcast, "dist.broadcast(t [, root=1]) -> t",
     "Copies rank root's t into t on every rank (same dtype and shape everywhere).",
     "local t = tensor.ones(3); dist.broadcast(t); print(t)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg private_fns[] = {
    {"gather", p_gather},
    {"any", p_any},
    {"sum", p_sum},
    {"exchange", p_exchange},
    {"exchange_stats", p_exchange_stats},
    {"abort", p_abort},
    {"catch", p_catch},
    {"reduce_eval", p_reduce_eval},
    {"sync_bn", p_sync_bn},
    {"stop_requested", p_stop_requested},
    {NULL, NULL},
};

void nl_dsl_exit(int status)
{
    if (!nl_dist_active()) return;
    if (status == 0) {
        nl_dist_finalize();
        return;
    }
    fprintf(stderr, "nnlab: rank %d of %d failed (exit status %d): ending every rank\n",
            nl_dist_rank() + 1, nl_dist_size(), status);
    fflush(stderr);
    nl_dist_abort(status);
}

int nl_open_dist(lua_State *L)
{
    /* Started by mpirun: MPI comes up now, so every rank knows its place before the script. */
    if (nl_dist_launched()) check_status(L, nl_dist_init());
    luaL_newmetatable(L, EXCHANGE_MT);
    lua_pushcfunction(L, exchange_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    nl_dsl_register(L, "dist", dist_fns);
    if (luaL_loadbuffer(L, nl_lua_dist, nl_lua_dist_len, "=dsl/dist.lua") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, "dist");
    lua_pop(L, 1);
    return 0;
}
