/* prune.c: the Lua modules `prune`, `lowrank` and `compress` over core/compress/prune.h, the Module
 * methods snapshot/restore, and the undo stack every compression step pushes onto. The Lua half
 * (schedules, sensitivity, compare, report printing) is dsl/compress.lua. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include "prune.h"

#include <lauxlib.h>
#include <string.h>

/* dsl/compress.lua, embedded by the Makefile. */
extern const char nl_lua_compress[];
extern const size_t nl_lua_compress_len;

#define SNAPSHOT_MT "Snapshot"
#define UNDO_KEY "nnlab.undo" /* registry: list of {net = Module, snap = Snapshot, what = string} */
#define UNDO_MAX 32           /* steps kept; the oldest go first */

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* ---------------------------------------------------------------- snapshots ------------- */

/* A Snapshot box: the snapshot (NULL until filled) and the bytes it holds. */
static nl_snapshot **check_snapshot(lua_State *L, int idx)
{
    nl_snapshot **s = luaL_checkudata(L, idx, SNAPSHOT_MT);
    if (!*s) nl_dsl_error(L, "snapshot: empty");
    return s;
}

/* Pushes a Snapshot of the module at idx. */
static void push_snapshot(lua_State *L, nl_module *m)
{
    nl_snapshot **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, SNAPSHOT_MT);
    if (!(*box = nl_snapshot_take(m))) nl_dsl_core_error(L);
}

static int snap_gc(lua_State *L)
{
    nl_snapshot **s = luaL_checkudata(L, 1, SNAPSHOT_MT);
    nl_snapshot_free(*s);
    *s = NULL;
    return 0;
}

static int snap_tostring(lua_State *L)
{
    nl_snapshot **s = luaL_checkudata(L, 1, SNAPSHOT_MT);
    if (*s) lua_pushfstring(L, "Snapshot(%d KiB)", (int)(nl_snapshot_bytes(*s) / 1024));
    else lua_pushliteral(L, "Snapshot(empty)");
    return 1;
}

static int m_snapshot(lua_State *L)
{
    push_snapshot(L, nl_lua_checkmodule(L, 1));
    return 1;
}

static int m_restore(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    check_status(L, nl_snapshot_restore(*check_snapshot(L, 2), m));
    lua_settop(L, 1);
    return 1;
}

/* Records the state of the network at idx before a compression step named what. */
static void push_undo(lua_State *L, int idx, const char *what)
{
    idx = lua_absindex(L, idx);
    nl_module *m = nl_lua_checkmodule(L, idx);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, UNDO_KEY);
    int list = lua_gettop(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "net");
    push_snapshot(L, m);
    lua_setfield(L, -2, "snap");
    lua_pushstring(L, what);
    lua_setfield(L, -2, "what");
    lua_Integer n = (lua_Integer)lua_rawlen(L, list);
    if (n >= UNDO_MAX) { /* drop the oldest */
        lua_getglobal(L, "table");
        lua_getfield(L, -1, "remove");
        lua_pushvalue(L, list);
        lua_pushinteger(L, 1);
        lua_call(L, 2, 0);
        lua_pop(L, 1);
        n--;
    }
    lua_rawseti(L, list, n + 1);
    lua_settop(L, list - 1);
}

/* compress.undo() -> what, net: restores the network of the last compression step. */
static int l_undo(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, UNDO_KEY);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "nothing to undo");
        return 2;
    }
    lua_rawgeti(L, -1, n);
    int step = lua_gettop(L);
    lua_getfield(L, step, "net");
    lua_getfield(L, step, "snap");
    check_status(L, nl_snapshot_restore(*check_snapshot(L, -1), nl_lua_checkmodule(L, -2)));
    lua_pushnil(L);
    lua_rawseti(L, step - 1, n);
    lua_getfield(L, step, "what");
    lua_getfield(L, step, "net");
    return 2;
}

/* compress.history() -> {"prune.magnitude", ...}: the steps undo can take back, oldest first. */
static int l_history(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, UNDO_KEY);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_getfield(L, -1, "what");
        lua_rawseti(L, -3, i);
        lua_pop(L, 1);
    }
    return 1;
}

/* compress._push(net, what): lets other compression steps (quantization) join the undo stack. */
static int l_push(lua_State *L)
{
    nl_lua_checkmodule(L, 1);
    push_undo(L, 1, luaL_checkstring(L, 2));
    return 0;
}

/* ---------------------------------------------------------------- options --------------- */

/* Checks that the options table at idx has only keys from valid (NULL-ended). */
static void check_keys(lua_State *L, int idx, const char *fname, const char *const *valid)
{
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int i = 0;
        while (k && valid[i] && strcmp(valid[i], k) != 0) i++;
        if (!k || !valid[i]) nl_dsl_error(L, "%s: unknown option '%s'", fname, k ? k : "(not a name)");
        lua_pop(L, 1);
    }
}

static double opt_number(lua_State *L, int idx, const char *key, double def, const char *fname)
{
    if (lua_isnoneornil(L, idx)) return def;
    int t = lua_getfield(L, idx, key);
    double v = def;
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL) nl_dsl_error(L, "%s: %s must be a number", fname, key);
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, int idx, const char *key, const char *def, const char *fname)
{
    if (lua_isnoneornil(L, idx)) return def;
    int t = lua_getfield(L, idx, key);
    const char *v = def;
    if (t == LUA_TSTRING) v = lua_tostring(L, -1);
    else if (t != LUA_TNIL) nl_dsl_error(L, "%s: %s must be a string", fname, key);
    lua_pop(L, 1); /* the string stays alive in the options table */
    return v;
}

/* ---------------------------------------------------------------- prune ----------------- */

/* prune.magnitude(net, {amount=0.5, scope="layer"|"global", layers={...}}) -> net */
static int l_magnitude(lua_State *L)
{
    const char *f = "prune.magnitude";
    nl_module *net = nl_lua_checkmodule(L, 1);
    static const char *const keys[] = {"amount", "scope", "layers", "undo", NULL};
    check_keys(L, 2, f, keys);
    double amount = opt_number(L, 2, "amount", 0.5, f);
    const char *scope = opt_string(L, 2, "scope", "layer", f);
    if (strcmp(scope, "layer") != 0 && strcmp(scope, "global") != 0)
        nl_dsl_error(L, "%s: scope must be \"layer\" or \"global\", got \"%s\"", f, scope);
    nl_module **layers = NULL;
    int n = 0;
    if (!lua_isnoneornil(L, 2) && lua_getfield(L, 2, "layers") != LUA_TNIL) {
        int list = lua_gettop(L);
        if (nl_lua_tomodule(L, list)) { /* a single layer */
            layers = lua_newuserdatauv(L, sizeof *layers, 0);
            layers[0] = nl_lua_tomodule(L, list);
            n = 1;
        } else {
            luaL_checktype(L, list, LUA_TTABLE);
            n = (int)luaL_len(L, list);
            layers = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *layers, 0);
            for (int i = 0; i < n; i++) {
                lua_geti(L, list, i + 1);
                if (!(layers[i] = nl_lua_tomodule(L, -1))) nl_dsl_error(L, "%s: layers[%d] is not a Module", f, i + 1);
                lua_pop(L, 1);
            }
        }
    }
    bool undo = true;
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "undo");
        undo = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (undo) push_undo(L, 1, f);
    check_status(L, nl_prune_magnitude(net, amount, strcmp(scope, "global") == 0 ? NL_PRUNE_SCOPE_GLOBAL
                                                                               : NL_PRUNE_SCOPE_LAYER,
                                       layers, n));
    lua_settop(L, 1);
    return 1;
}

/* prune.channels(net, {amount=0.3, criterion="l1"}) -> net, removed */
static int l_channels(lua_State *L)
{
    const char *f = "prune.channels";
    nl_module *net = nl_lua_checkmodule(L, 1);
    static const char *const keys[] = {"amount", "criterion", NULL};
    check_keys(L, 2, f, keys);
    double amount = opt_number(L, 2, "amount", 0.3, f);
    const char *crit = opt_string(L, 2, "criterion", "l1", f);
    int norm = strcmp(crit, "l1") == 0 ? 1 : strcmp(crit, "l2") == 0 ? 2 : 0;
    if (!norm) nl_dsl_error(L, "%s: criterion must be \"l1\" or \"l2\", got \"%s\"", f, crit);
    push_undo(L, 1, f);
    int64_t removed;
    check_status(L, nl_prune_channels(net, amount, norm, &removed));
    lua_settop(L, 1);
    lua_pushinteger(L, (lua_Integer)removed);
    return 2;
}

/* P.layers(net) -> {{path=, layer=, params=, zeros=}, ...} */
static int p_layers(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    int n = nl_prune_layers(net, NULL, 0);
    nl_prune_layer *ls = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *ls, 0);
    nl_prune_layers(net, ls, n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, ls[i].path);
        lua_setfield(L, -2, "path");
        nl_lua_pushmodule(L, ls[i].m);
        lua_setfield(L, -2, "layer");
        lua_pushinteger(L, (lua_Integer)ls[i].params);
        lua_setfield(L, -2, "params");
        lua_pushinteger(L, (lua_Integer)ls[i].zeros);
        lua_setfield(L, -2, "zeros");
        lua_pushboolean(L, nl_prune_mask(ls[i].m) != NULL);
        lua_setfield(L, -2, "masked");
        lua_pushboolean(L, ls[i].sparse);
        lua_setfield(L, -2, "sparse");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_masks_from_zeros(lua_State *L)
{
    int n = nl_prune_masks_from_zeros(nl_lua_checkmodule(L, 1));
    if (n < 0) nl_dsl_core_error(L);
    lua_pushinteger(L, n);
    return 1;
}

static int l_remove(lua_State *L)
{
    nl_prune_remove_masks(nl_lua_checkmodule(L, 1));
    lua_settop(L, 1);
    return 1;
}

/* Pushes a kind's threshold: a number, or false when sparse execution is off. */
static void push_threshold(lua_State *L, nl_sparse_kind k)
{
    double t = nl_sparse_threshold(k);
    if (t < 0) lua_pushboolean(L, 0);
    else lua_pushnumber(L, t);
}

/* Reads a threshold at idx for f: a number in [0, 1], false (off, -1) or true (the default). */
static double check_threshold(lua_State *L, int idx, const char *f, const char *what, nl_sparse_kind k)
{
    if (lua_isboolean(L, idx)) return lua_toboolean(L, idx) ? nl_sparse_default_threshold[k] : -1;
    if (lua_type(L, idx) != LUA_TNUMBER)
        nl_dsl_error(L, "%s: %s must be a sparsity in [0, 1], false (dense) or true (the default), got %s", f,
                   what, luaL_typename(L, idx));
    double t = lua_tonumber(L, idx);
    if (!(t >= 0 && t <= 1)) nl_dsl_error(L, "%s: %s must be in [0, 1], got %f", f, what, t);
    return t;
}

/* prune.sparse_threshold([x | false | true | {conv=, linear=}]) -> conv, linear */
static int l_sparse_threshold(lua_State *L)
{
    const char *f = "prune.sparse_threshold";
    static const char *const names[NL_SPARSE_KINDS] = {[NL_SPARSE_CONV] = "conv", [NL_SPARSE_LINEAR] = "linear"};
    double t[NL_SPARSE_KINDS];
    for (int k = 0; k < NL_SPARSE_KINDS; k++) t[k] = nl_sparse_threshold((nl_sparse_kind)k);
    if (lua_istable(L, 1)) {
        static const char *const keys[] = {"conv", "linear", NULL};
        check_keys(L, 1, f, keys);
        for (int k = 0; k < NL_SPARSE_KINDS; k++) {
            if (lua_getfield(L, 1, names[k]) != LUA_TNIL)
                t[k] = check_threshold(L, -1, f, names[k], (nl_sparse_kind)k);
            lua_pop(L, 1);
        }
    } else if (!lua_isnoneornil(L, 1)) {
        for (int k = 0; k < NL_SPARSE_KINDS; k++) t[k] = check_threshold(L, 1, f, "the threshold", (nl_sparse_kind)k);
    }
    for (int k = 0; k < NL_SPARSE_KINDS; k++) check_status(L, nl_sparse_set_threshold((nl_sparse_kind)k, t[k]));
    for (int k = 0; k < NL_SPARSE_KINDS; k++) push_threshold(L, (nl_sparse_kind)k);
    return NL_SPARSE_KINDS;
}

/* ---------------------------------------------------------------- lowrank --------------- */

static void read_rank(lua_State *L, int idx, const char *f, int *rank, double *energy)
{
    static const char *const keys[] = {"rank", "energy", NULL};
    check_keys(L, idx, f, keys);
    double r = opt_number(L, idx, "rank", 0, f);
    *energy = opt_number(L, idx, "energy", r > 0 ? 0 : 0.95, f);
    if (r < 0 || r != (int)r) nl_dsl_error(L, "%s: rank must be a whole number >= 1", f);
    *rank = (int)r;
}

/* lowrank.factorize(layer_or_net, {rank=r} or {energy=0.95}) -> module[, count] */
static int l_factorize(lua_State *L)
{
    const char *f = "lowrank.factorize";
    nl_module *m = nl_lua_checkmodule(L, 1);
    int rank;
    double energy;
    read_rank(L, 2, f, &rank, &energy);
    if (!m->type->container) {
        nl_module *seq = nl_lowrank_factorize_layer(m, rank, energy);
        if (!seq) nl_dsl_core_error(L);
        nl_lua_pushmodule(L, seq);
        nl_module_release(seq);
        return 1;
    }
    push_undo(L, 1, f);
    int count;
    check_status(L, nl_lowrank_factorize(m, rank, energy, &count));
    lua_settop(L, 1);
    lua_pushinteger(L, count);
    return 2;
}

static int l_spectrum(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_lowrank_spectrum(m))) nl_dsl_core_error(L);
    return 1;
}

static int l_rank_for_energy(lua_State *L)
{
    nl_tensor *s = nl_lua_checktensor(L, 1);
    double e = luaL_checknumber(L, 2);
    if (s->dtype != NL_F32 || s->ndim != 1 || !nl_tensor_is_contiguous(s) || nl_tensor_device(s) != NL_CPU)
        nl_dsl_error(L, "lowrank.rank_for_energy: expected the f32 spectrum from lowrank.spectrum");
    if (!(e > 0 && e <= 1)) nl_dsl_error(L, "lowrank.rank_for_energy: energy must be in (0, 1]");
    lua_pushinteger(L, nl_lowrank_rank_for_energy(s, e));
    return 1;
}

/* P.nonzeros(t) -> count of nonzero elements (any dtype; a host copy for device tensors). */
static int p_nonzeros(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_host(t))) nl_dsl_core_error(L);
    const char *p = nl_tensor_data(*box);
    size_t es = nl_dtype_info(t->dtype)->size;
    int64_t n = nl_tensor_numel(*box), nz = 0;
    static const char zero[8];
    for (int64_t i = 0; i < n; i++) nz += memcmp(p + (size_t)i * es, zero, es) != 0 &&
                                           !(t->dtype == NL_F32 && ((const float *)p)[i] == 0);
    lua_pushinteger(L, (lua_Integer)nz);
    return 1;
}

/* ---------------------------------------------------------------- registration ---------- */

static const nl_dsl_fn prune_fns[] = {
    {"magnitude", l_magnitude, "prune.magnitude(net, {amount=0.5, scope=\"layer\"|\"global\", layers=}) -> net",
     "Unstructured pruning: zeroes the smallest |w| of every Linear/Conv2d (or of layers) until a "
     "fraction amount is zero, per layer or across them all. Masks keep the zeros through training "
     "(the optimizer re-applies them). Undoable with compress.undo().",
     "net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)); prune.magnitude(net, {amount = 0.5}); print(prune.report(net))"},
    {"channels", l_channels, "prune.channels(net, {amount=0.3, criterion=\"l1\"|\"l2\"}) -> net, removed",
     "Structured pruning: removes the filters with the smallest norms and shrinks the layers that "
     "read them (next conv, Linear after Flatten, BatchNorm; Residual sums pruned together). The net "
     "gets smaller and faster: make a new optimizer afterwards (or prune before making it).",
     "net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)); print(prune.channels(net, {amount = 0.5}))"},
    {"masks_from_zeros", l_masks_from_zeros, "prune.masks_from_zeros(net) -> count",
     "Makes masks from the zero weights (of a network pruned elsewhere), so fine-tuning keeps them zero.",
     "net = nn.Sequential(nn.Linear(4, 4)); net[1].weight:fill(0); print(prune.masks_from_zeros(net))"},
    {"remove", l_remove, "prune.remove(net) -> net",
     "Drops the masks (the zeros stay in the weights; training may move them again).",
     "prune.remove(nn.Sequential(nn.Linear(4, 4)))"},
    {"sparse_threshold", l_sparse_threshold,
     "prune.sparse_threshold([x | false | true | {conv=, linear=}]) -> conv, linear",
     "Sparse execution: in evaluation mode a Conv2d/Linear whose weight sparsity is at least its "
     "kind's threshold runs a CSR kernel whose work falls with the zeros (the defaults are where it "
     "beat dense when measured). x sets both kinds; false runs everything dense; true restores the "
     "defaults; no argument only reads them. Returns the thresholds in force (false: off).",
     "print(prune.sparse_threshold()); prune.sparse_threshold(0.9); prune.sparse_threshold(true)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn lowrank_fns[] = {
    {"factorize", l_factorize, "lowrank.factorize(layer_or_net, {rank=r} or {energy=0.95}) -> module[, count]",
     "Truncated SVD: a Linear becomes Linear(in, r) + Linear(r, out), a Conv2d(in, out, k) becomes "
     "Conv2d(in, r, k) + Conv2d(r, out, 1). A layer gives a new Sequential; a network is changed in "
     "place (layers that would not shrink are kept) and returns the count replaced.",
     "print(lowrank.factorize(nn.Linear(64, 32), {rank = 4}))"},
    {"spectrum", l_spectrum, "lowrank.spectrum(layer) -> Tensor",
     "The singular values of a Linear's weight (or a Conv2d's as [out, in*k*k]), largest first.",
     "print(lowrank.spectrum(nn.Linear(6, 4)))"},
    {"rank_for_energy", l_rank_for_energy, "lowrank.rank_for_energy(spectrum, energy) -> rank",
     "The smallest rank whose squared singular values hold a fraction energy of the total.",
     "print(lowrank.rank_for_energy(lowrank.spectrum(nn.Linear(16, 16)), 0.9))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn compress_fns[] = {
    {"undo", l_undo, "compress.undo() -> what, net",
     "Takes back the last compression step (prune.magnitude, prune.channels, lowrank.factorize, ...): "
     "the network gets its architecture and bit-identical weights back.",
     "net = nn.Sequential(nn.Linear(4, 4)); prune.magnitude(net, {amount = 0.5}); print(compress.undo())"},
    {"history", l_history, "compress.history() -> {what, ...}", "The steps compress.undo() can take back, oldest first.",
     "print(#compress.history())"},
    {"_push", l_push, "compress._push(net, what)",
     "Records net's state before a compression step made elsewhere, so compress.undo() can take it back.",
     "compress._push(nn.Linear(2, 2), \"test\"); compress.undo()"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn module_methods[] = {
    {"snapshot", m_snapshot, "m:snapshot() -> Snapshot",
     "An in-memory copy of the architecture and every weight, buffer and mask.",
     "net = nn.Sequential(nn.Linear(2, 2)); s = net:snapshot(); net:restore(s)"},
    {"restore", m_restore, "m:restore(snapshot) -> m",
     "Puts the network back as it was at m:snapshot(): same architecture, bit-identical weights. "
     "If the architecture changed since, make a new optimizer.",
     "net = nn.Sequential(nn.Linear(2, 2)); s = net:snapshot(); prune.magnitude(net, {amount = 0.5}); net:restore(s)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg private_fns[] = {
    {"layers", p_layers},
    {"nonzeros", p_nonzeros},
    {NULL, NULL},
};

int nl_open_prune(lua_State *L)
{
    luaL_newmetatable(L, SNAPSHOT_MT);
    lua_pushcfunction(L, snap_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, snap_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    /* Module methods go into the Module metatable's methods table (dsl/nn.c opens it first). */
    luaL_getmetatable(L, NL_MODULE_MT);
    lua_getfield(L, -1, "methods");
    for (const nl_dsl_fn *f = module_methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_pop(L, 2);
    nl_dsl_register_methods(L, NL_MODULE_MT, module_methods);
    nl_dsl_register(L, "prune", prune_fns);
    nl_dsl_register(L, "lowrank", lowrank_fns);
    nl_dsl_register(L, "compress", compress_fns);
    /* dsl/compress.lua adds prune.report, prune.schedule, prune.sensitivity, compress.compare and
     * nn.DistillLoss; it returns their help rows {{group, name, sig, doc, example}, ...}. */
    if (luaL_loadbuffer(L, nl_lua_compress, nl_lua_compress_len, "=dsl/compress.lua") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, "compress");
    lua_pop(L, 1);
    return 0;
}
