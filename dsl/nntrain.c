/* nntrain.c: the private C helpers under the Trainer and nn.evaluate written in dsl/nn.lua
 * (collating batches, a training step, evaluation statistics, trainer checkpoints); handed to
 * that chunk only. */
#include "dsl.h"
#include "ldist.h"
#include "lnn.h"
#include "ltensor.h"

#include "checkpoint.h"
#include "profile.h"
#include "quant.h"
#include "train.h"


#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATS_MT "nnlab.EvalStats"
#define FILE_MT "nnlab.CheckpointFile"

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* The data set's index of entry i (0-based) of a batch: at[i + 1] when the table at stack index
 * at lists them, else i + 1. */
static lua_Integer data_index(lua_State *L, int at, int64_t i)
{
    lua_Integer v = i + 1;
    if (lua_type(L, at) == LUA_TTABLE) {
        lua_geti(L, at, i + 1);
        if (lua_isinteger(L, -1)) v = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    return v;
}

static void push_stack(lua_State *L, int list, int64_t n, nl_dtype dtype, const char *what, int at)
{
    lua_geti(L, list, 1);
    nl_tensor *first = nl_lua_totensor(L, -1);
    if (!first)
        nl_dsl_error(L, "the data set's %s %I is a %s, expected a Tensor", what, data_index(L, at, 0),
                     luaL_typename(L, -1));
    int64_t shape[NL_MAX_DIMS + 1];
    if (first->ndim >= NL_MAX_DIMS) nl_dsl_error(L, "the data set's %ss have too many dims", what);
    shape[0] = n;
    memcpy(shape + 1, first->shape, (size_t)first->ndim * sizeof *shape);
    int nd = first->ndim;
    int64_t one[NL_MAX_DIMS + 1]; /* a sample's shape as [1, ...] */
    memcpy(one, shape, sizeof one);
    one[0] = 1;
    lua_pop(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(dtype, nd + 1, shape, NL_CPU))) nl_dsl_core_error(L);
    for (int64_t i = 0; i < n; i++) {
        lua_geti(L, list, i + 1);
        nl_tensor *s = nl_lua_totensor(L, -1);
        if (!s || s->ndim != nd || memcmp(s->shape, shape + 1, (size_t)nd * sizeof *shape) != 0)
            nl_dsl_error(L, "the data set's %s %I is not a Tensor of the shape of %s %I", what,
                         data_index(L, at, i), what, data_index(L, at, 0));
        nl_tensor *row = nl_tensor_slice(*box, 0, i, i + 1);
        nl_tensor *src = row ? nl_tensor_reshape(s, nd + 1, one) : NULL;
        nl_status st = src ? nl_copy(row, src) : nl_errcode();
        nl_tensor_release(src);
        nl_tensor_release(row);
        check_status(L, st);
        lua_pop(L, 1);
    }
}

/* P.collate(xs, ys [, indices]) -> x, y: stacks a list of sample tensors (any equal shapes) into
 * an f32 [B, ...] batch, and the list of labels (numbers) into i32 [B] or of targets into f32
 * [B, ...]. Messages name indices[k], the data set's index of xs[k], when given. */
static int p_collate(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)luaL_len(L, 1);
    if (n < 1 || (int64_t)luaL_len(L, 2) != n) nl_dsl_error(L, "the data set gave an empty or ragged batch");
    push_stack(L, 1, n, NL_F32, "sample", 3);
    lua_geti(L, 2, 1);
    bool numbers = lua_type(L, -1) == LUA_TNUMBER;
    lua_pop(L, 1);
    if (!numbers) {
        push_stack(L, 2, n, NL_F32, "target", 3);
        return 2;
    }
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_I32, 1, &n, NL_CPU))) nl_dsl_core_error(L);
    int32_t *py = nl_tensor_data(*box);
    for (int64_t i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TNUMBER)
            nl_dsl_error(L, "the data set's label %I is not a number", data_index(L, 3, i));
        py[i] = nl_lua_label_index(L, lua_tonumber(L, -1), data_index(L, 3, i) - 1, 0, "data set") + 1;
        lua_pop(L, 1);
    }
    return 2;
}

/* Pushes the target y (at idx) in the core's form for net's output on input x. */
static nl_tensor *push_step_target(lua_State *L, int idx, nl_module *net, nl_tensor *x,
                                   nl_loss_kind kind, const char *fname)
{
    int nd;
    int64_t out[NL_MAX_DIMS];
    check_status(L, nl_module_infer(net, x->ndim, x->shape, &nd, out, NULL));
    return nl_lua_push_target(L, idx, kind, nd, out, nl_tensor_device(x), fname);
}

/* P.train_step(net, loss, opt, x, y) -> loss, correct, updated, grad_norm; or nil, "interrupted"
 * when Ctrl-C stopped it (nothing changed: the batch is to be redone). */
static int p_train_step(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    nl_loss *loss = nl_lua_checkloss(L, 2);
    nl_lua_optim *opt = nl_lua_checkoptim(L, 3);
    nl_tensor *x = nl_lua_checktensor(L, 4);
    nl_tensor *y = push_step_target(L, 5, net, x, loss->kind, nl_lua_loss_name(loss->kind));
    nl_step_result r;
    const nl_grad_exchange *ex = nl_lua_optexchange(L, 6);
    nl_status s = nl_train_step(net, loss, opt->o, x, y, opt->clip, ex, &r);
    if (s == NL_EINTR) {
        lua_pushnil(L);
        lua_pushliteral(L, "interrupted");
        return 2;
    }
    check_status(L, s);
    lua_pushnumber(L, r.loss);
    lua_pushinteger(L, r.correct);
    lua_pushboolean(L, r.updated);
    lua_pushnumber(L, r.grad_norm);
    return 4;
}

/* P.profile(net, x, backward, reps) -> {rows}, fp32 peak GFLOP/s: nl_profile's rows as tables. */
static int p_profile(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    nl_tensor *x = nl_lua_checktensor(L, 2);
    const bool backward = lua_toboolean(L, 3);
    const int reps = (int)luaL_checkinteger(L, 4);
    nl_profile_row *rows;
    int n;
    check_status(L, nl_profile(net, x, backward, reps, &rows, &n));
    const double peak = nl_profile_peak_gflops();
    if (peak <= 0) {
        free(rows);
        return nl_dsl_core_error(L);
    }
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const nl_profile_row *r = &rows[i];
        lua_createtable(L, 0, 7);
        lua_pushstring(L, r->layer);
        lua_setfield(L, -2, "layer");
        lua_pushnumber(L, r->fwd_ms);
        lua_setfield(L, -2, "fwd_ms");
        lua_pushnumber(L, r->bwd_ms);
        lua_setfield(L, -2, "bwd_ms");
        lua_pushnumber(L, r->fwd_flops);
        lua_setfield(L, -2, "fwd_flops");
        lua_pushnumber(L, r->bwd_flops);
        lua_setfield(L, -2, "bwd_flops");
        lua_pushstring(L, r->kernel_fwd);
        lua_setfield(L, -2, "kernel_fwd");
        lua_pushstring(L, r->kernel_bwd);
        lua_setfield(L, -2, "kernel_bwd");
        lua_rawseti(L, -2, i + 1);
    }
    free(rows);
    lua_pushnumber(L, peak);
    return 2;
}

/* P.int8_peak() -> the machine's int8 peak GOP/s (0: none), its instruction (measured once). */
static int p_int8_peak(lua_State *L)
{
    lua_pushnumber(L, nl_quant_peak_gops(false));
    lua_pushstring(L, nl_quant_peak_instr());
    return 2;
}

static nl_eval_stats *check_stats(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, STATS_MT);
}

static int p_eval_stats(lua_State *L)
{
    nl_eval_stats *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, STATS_MT);
    return 1;
}

static int stats_gc(lua_State *L)
{
    nl_eval_stats_clear(check_stats(L, 1));
    return 0;
}

/* P.eval_batch(stats, net, loss or nil, x, y) */
static int p_eval_batch(lua_State *L)
{
    nl_eval_stats *s = check_stats(L, 1);
    nl_module *net = nl_lua_checkmodule(L, 2);
    nl_loss *loss = lua_isnil(L, 3) ? NULL : nl_lua_checkloss(L, 3);
    nl_tensor *x = nl_lua_checktensor(L, 4);
    nl_tensor *y = push_step_target(L, 5, net, x, loss ? loss->kind : NL_LOSS_CROSS_ENTROPY,
                                    "evaluate");
    check_status(L, nl_eval_batch(net, loss, x, y, s));
    return 0;
}

/* P.eval_result(stats, with_loss) -> {loss=, top1=, top5=, count=, confusion=, per_class=} */
static int p_eval_result(lua_State *L)
{
    nl_eval_stats *s = check_stats(L, 1);
    bool with_loss = lua_toboolean(L, 2);
    double n = (double)s->count;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, s->count);
    lua_setfield(L, -2, "count");
    if (with_loss) {
        lua_pushnumber(L, s->count ? s->loss_sum / n : NAN);
        lua_setfield(L, -2, "loss");
    }
    if (!s->confusion) return 1;
    lua_pushnumber(L, s->count ? (double)s->top1 / n : NAN);
    lua_setfield(L, -2, "top1");
    lua_pushnumber(L, s->count ? (double)s->top5 / n : NAN);
    lua_setfield(L, -2, "top5");
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_clone(s->confusion))) nl_dsl_core_error(L);
    lua_setfield(L, -2, "confusion");
    const int32_t *c = nl_tensor_data(s->confusion);
    int64_t k = s->nclasses;
    lua_createtable(L, (int)k, 0);
    for (int64_t i = 0; i < k; i++) {
        int64_t total = 0;
        for (int64_t j = 0; j < k; j++) total += c[i * k + j];
        lua_pushnumber(L, total ? (double)c[i * k + i] / (double)total : NAN);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "per_class");
    return 1;
}

/* P.permutation(n, seed, epoch) -> i32 Tensor [n] of 1-based indices in a seeded order. */
static int p_permutation(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2), epoch = (uint64_t)luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 0 && n <= INT32_MAX, 1, "size out of range");
    int64_t len = n;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_I32, 1, &len, NL_CPU))) nl_dsl_core_error(L);
    check_status(L, nl_permutation(*box, nl_rng_hash(seed, epoch)));
    check_status(L, nl_binary_scalar(NL_BIN_ADD, *box, *box, 1, false));
    return 1;
}

static int p_defer(lua_State *L)
{
    nl_interrupt_defer(lua_toboolean(L, 1));
    return 0;
}

/* Whether a prompt follows the code that runs now (NL_PROMPT_FOLLOWS_KEY). */
static int p_prompt_follows(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, NL_PROMPT_FOLLOWS_KEY);
    lua_pushboolean(L, lua_toboolean(L, -1));
    return 1;
}

/* Whether Ctrl-C was pressed since the last poll (and clears it). */
static int p_poll_interrupt(lua_State *L)
{
    bool hit = nl_interrupted();
    if (hit) nl_interrupt_clear();
    lua_pushboolean(L, hit);
    return 1;
}

/* P.is_loss(x), P.is_optim(x): whether x is a Loss, an Optimizer (for the Trainer's checks). */
static int p_is_loss(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, NL_LOSS_MT) != NULL);
    return 1;
}

static int p_is_optim(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, NL_OPTIM_MT) != NULL);
    return 1;
}

static int p_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(STDOUT_FILENO));
    return 1;
}

int nl_lua_rng_state(lua_State *L)
{
    nl_rng_state s = nl_rng_get_state();
    lua_pushinteger(L, (lua_Integer)s.seed);
    lua_pushinteger(L, (lua_Integer)s.counter);
    return 2;
}

int nl_lua_set_rng_state(lua_State *L)
{
    nl_rng_state s = {(uint64_t)luaL_checkinteger(L, 1), (uint64_t)luaL_checkinteger(L, 2)};
    nl_rng_set_state(s);
    return 0;
}

/* P.save_trainer(path, net, opt, meta): net + optimizer state + the trainer's own state (JSON
 * text, written by dsl/nn.lua) under the metadata key "nnlab.trainer". */
static int p_save_trainer(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    nl_module *net = nl_lua_checkmodule(L, 2);
    nl_lua_optim *opt = nl_lua_checkoptim(L, 3);
    const char *meta[] = {"nnlab.trainer", luaL_checkstring(L, 4), NULL};
    check_status(L, nl_checkpoint_save(path, net, opt->o, meta));
    return 0;
}

/* Pushes a box that closes an open checkpoint file when collected, and opens path into it. */
static nl_st_file *push_file(lua_State *L, const char *path)
{
    nl_st_file **f = lua_newuserdatauv(L, sizeof *f, 0);
    *f = NULL;
    luaL_setmetatable(L, FILE_MT);
    if (!(*f = nl_st_open(path))) nl_dsl_core_error(L);
    return *f;
}

static int file_gc(lua_State *L)
{
    nl_st_file **f = luaL_checkudata(L, 1, FILE_MT);
    nl_st_close(*f);
    *f = NULL;
    return 0;
}

/* P.trainer_meta(path) -> the trainer's metadata as a Lua table (parsed as JSON, never run), or
 * nil for a file that holds no trainer; raises for metadata that is not a JSON object. */
static int p_trainer_meta(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    nl_st_file *f = push_file(L, path);
    const char *meta = nl_st_meta(f, "nnlab.trainer");
    if (!meta) {
        lua_pushnil(L);
        return 1;
    }
    if (!nl_dsl_push_json(L, meta)) {
        if (meta[0] == '{' && meta[1] == '[')
            return nl_dsl_error(L, "%s: the trainer metadata is Lua code (written by an older nnlab), "
                                "which is no longer run when loading; nn.load(path) still reads the "
                                "network", path);
        return nl_dsl_error(L, "%s: corrupt trainer metadata (not a JSON object)", path);
    }
    return 1;
}

/* P.load_trainer(path, optim_kind [, device]) -> net, opt: the network (moved to device) and an
 * optimizer of that kind with the file's hyper-parameters, step count and state (there too). */
static int p_load_trainer(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    const char *kind_name = luaL_checkstring(L, 2);
    nl_device dev = lua_isnoneornil(L, 3) ? NL_CPU : nl_dsl_checkdevice(L, 3);
    nl_optim_kind kind = nl_optim_kind_parse(kind_name);
    if (kind == NL_OPTIM_KIND_COUNT) nl_dsl_error(L, "%s: unknown optimizer '%s'", path, kind_name);
    nl_st_file *f = push_file(L, path);
    nl_module **box = nl_lua_newmodulebox(L);
    *box = nl_checkpoint_module_from(f);
    nl_lua_adoptmodulebox(L);
    if (dev != NL_CPU) check_status(L, nl_module_to(*box, dev));
    nl_lua_optim *opt = nl_lua_newoptim(L);
    if (!(opt->o = nl_optim_new(kind, *box, NULL))) return nl_dsl_core_error(L);
    check_status(L, nl_checkpoint_load_optim(f, opt->o));
    return 2;
}
static int l_interrupt(lua_State *L)
{
    (void)L;
    nl_interrupt();
    return 0;
}

static const nl_dsl_fn hook_fns[] = {
    {"_interrupt", l_interrupt, "nn._interrupt()",
     "Test hook: raises the Ctrl-C flag as the REPL's handler does (a running fit pauses at the "
     "next batch).",
     "nn._interrupt(); nn._poll_interrupt()"},
    {"_poll_interrupt", p_poll_interrupt, "nn._poll_interrupt() -> boolean",
     "Test hook: whether the Ctrl-C flag is up, clearing it.", "print(nn._poll_interrupt())"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg private_fns[] = {
    {"collate", p_collate},
    {"train_step", p_train_step},
    {"profile", p_profile},
    {"int8_peak", p_int8_peak},
    {"eval_stats", p_eval_stats},
    {"eval_batch", p_eval_batch},
    {"eval_result", p_eval_result},
    {"permutation", p_permutation},
    {"defer", p_defer},
    {"poll_interrupt", p_poll_interrupt},
    {"prompt_follows", p_prompt_follows},
    {"isatty", p_isatty},
    {"is_loss", p_is_loss},
    {"is_optim", p_is_optim},
    {"rng_state", nl_lua_rng_state},
    {"set_rng_state", nl_lua_set_rng_state},
    {"save_trainer", p_save_trainer},
    {"trainer_meta", p_trainer_meta},
    {"load_trainer", p_load_trainer},
    {NULL, NULL},
};

void nl_open_nntrain(lua_State *L)
{
    luaL_newmetatable(L, STATS_MT);
    lua_pushcfunction(L, stats_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newmetatable(L, FILE_MT);
    lua_pushcfunction(L, file_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 2);
    nl_dsl_register(L, "nn", hook_fns);
    luaL_newlib(L, private_fns);
}
