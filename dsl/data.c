/* data.c: the Lua module `data` (CIFAR-10, MNIST, Fashion-MNIST, image folders, the CIFAR writer)
 * and the Dataset and Loader userdata. Labels are 1-based in Lua, 0-based in core. Image folders
 * are decoded by viz/image.h's reader, handed to the core's folder walker as a callback. */
#include "dataset.h"
#include "dist.h"
#include "dsl.h"
#include "image.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DATASET_MT "Dataset"
#define LOADER_MT "Loader"

/* Normalisation means/stds per channel accepted from Lua. */
#define MAX_NORM 64

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* Lets the collector account for n bytes a new tensor holds behind its small box (it cannot see
 * them): without this, batches made each step pile up as garbage long before a collection. */
static void account(lua_State *L, const nl_tensor *t)
{
    lua_gc(L, LUA_GCSTEP, (int)((nl_tensor_numel(t) * (int64_t)nl_dtype_info(t->dtype)->size) >> 10));
}

/* ---------------------------------------------------------------- options --------------- */

/* Raises for a key of the options table at idx that is not in valid (NULL-terminated). */
static void check_keys(lua_State *L, int idx, const char *const *valid, const char *fname)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool ok = false;
        for (int i = 0; valid[i] && !ok; i++)
            ok = lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), valid[i]) == 0;
        if (!ok) {
            const char *key = luaL_tolstring(L, -2, NULL);
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; valid[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, valid[i]);
            }
            luaL_pushresult(&b);
            nl_dsl_error(L, "%s: unknown option '%s' (valid: %s)", fname, key, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* The options table at arg (absent or nil: an empty one pushed in its place), its keys checked.
 * Returns its absolute index. */
static int options(lua_State *L, int arg, const char *const *valid, const char *fname)
{
    if (lua_gettop(L) < arg) lua_settop(L, arg);
    if (lua_isnil(L, arg)) {
        lua_newtable(L);
        lua_replace(L, arg);
    }
    luaL_checktype(L, arg, LUA_TTABLE);
    check_keys(L, arg, valid, fname);
    return arg;
}

/* Field key of the table at idx as an integer in lo..hi (def when nil). */
static lua_Integer opt_int(lua_State *L, int idx, const char *key, lua_Integer def, lua_Integer lo,
                           lua_Integer hi, const char *fname)
{
    lua_getfield(L, idx, key);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int isint;
        v = lua_tointegerx(L, -1, &isint);
        if (!isint) nl_dsl_error(L, "%s: %s must be an integer, got %s", fname, key, luaL_tolstring(L, -1, NULL));
        if (v < lo || v > hi)
            nl_dsl_error(L, "%s: %s = %I is out of range (%I to %I)", fname, key, v, lo, hi);
    }
    lua_pop(L, 1);
    return v;
}

static bool opt_bool(lua_State *L, int idx, const char *key, bool def, const char *fname)
{
    lua_getfield(L, idx, key);
    bool v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) nl_dsl_error(L, "%s: %s must be true or false", fname, key);
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* Field key of the table at idx as numbers (one number or a list) into out; returns the count. */
static int opt_numbers(lua_State *L, int idx, const char *key, double *out, const char *fname)
{
    int n = 0;
    lua_getfield(L, idx, key);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        out[n++] = lua_tonumber(L, -1);
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        lua_Integer len = luaL_len(L, -1);
        if (len < 1 || len > MAX_NORM) nl_dsl_error(L, "%s: %s needs 1 to %d numbers", fname, key, MAX_NORM);
        for (lua_Integer i = 1; i <= len; i++) {
            if (lua_geti(L, -1, i) != LUA_TNUMBER) nl_dsl_error(L, "%s: %s[%I] is not a number", fname, key, i);
            out[n++] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    } else {
        nl_dsl_error(L, "%s: %s must be a number or a list of numbers per channel", fname, key);
    }
    lua_pop(L, 1);
    return n;
}

/* ---------------------------------------------------------------- Dataset --------------- */

static nl_dataset **new_dataset_box(lua_State *L)
{
    nl_dataset **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, DATASET_MT);
    return box;
}

static nl_dataset *check_dataset(lua_State *L, int idx)
{
    nl_dataset **box = luaL_checkudata(L, idx, DATASET_MT);
    if (!*box) luaL_argerror(L, idx, "data set is closed");
    return *box;
}

/* Pushes two boxes for a train/test pair returned by a core loader (adopting both references). */
static int push_pair(lua_State *L, nl_status s, nl_dataset *train, nl_dataset *test)
{
    if (s != NL_OK) return nl_dsl_core_error(L);
    *new_dataset_box(L) = train;
    *new_dataset_box(L) = test;
    return 2;
}

static int l_cifar10(lua_State *L)
{
    const char *dir = lua_isnoneornil(L, 1) ? NULL : nl_dsl_checkpath(L, 1);
    nl_dataset *train, *test;
    nl_status s = nl_cifar10_load(dir, &train, &test);
    return push_pair(L, s, train, test);
}

static int l_fashion_mnist(lua_State *L)
{
    const char *dir = lua_isnoneornil(L, 1) ? NULL : nl_dsl_checkpath(L, 1);
    nl_dataset *train, *test;
    nl_status s = nl_mnist_load(dir, true, &train, &test);
    return push_pair(L, s, train, test);
}

static int l_mnist(lua_State *L)
{
    const char *dir = nl_dsl_checkpath(L, 1);
    nl_dataset *train, *test;
    nl_status s = nl_mnist_load(dir, false, &train, &test);
    return push_pair(L, s, train, test);
}

static int l_image_folder(lua_State *L)
{
    static const char *const valid[] = {"size", NULL};
    const char *dir = nl_dsl_checkpath(L, 1);
    int opts = options(L, 2, valid, "image_folder");
    lua_Integer h = 0, w = 0;
    if (lua_getfield(L, opts, "size") == LUA_TNUMBER) {
        h = w = opt_int(L, opts, "size", 0, 1, 16384, "image_folder");
    } else if (lua_type(L, -1) == LUA_TTABLE && luaL_len(L, -1) == 2) {
        int t = lua_gettop(L);
        lua_geti(L, t, 1);
        lua_geti(L, t, 2);
        int ok1, ok2;
        h = lua_tointegerx(L, -2, &ok1);
        w = lua_tointegerx(L, -1, &ok2);
        if (!ok1 || !ok2 || h < 1 || w < 1 || h > 16384 || w > 16384)
            nl_dsl_error(L, "image_folder: size must hold two whole numbers from 1 to 16384 ({height, width})");
    } else if (!lua_isnil(L, -1)) {
        nl_dsl_error(L, "image_folder: size must be {height, width} or one number for a square");
    }
    nl_dataset **box = new_dataset_box(L);
    if (!(*box = nl_image_folder_load(dir, (int)w, (int)h, nl_image_load_rgb))) return nl_dsl_core_error(L);
    return 1;
}

/* data.from_tensors(images, labels [, {classes=, name=}]) */
static int l_from_tensors(lua_State *L)
{
    static const char *const valid[] = {"classes", "name", NULL};
    nl_tensor *x = nl_lua_checktensor(L, 1);
    int opts = options(L, 3, valid, "from_tensors");
    lua_getfield(L, opts, "name");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) nl_dsl_error(L, "from_tensors: name must be a string");
    const char *name = lua_isnil(L, -1) ? "tensors" : lua_tostring(L, -1);
    /* Images as bytes: u8 as they are, floats in [0, 1] scaled (rounded, saturated). */
    nl_tensor **images = nl_lua_newbox(L);
    if (x->dtype == NL_U8) {
        *images = nl_tensor_contiguous(x);
    } else {
        nl_tensor *scaled = nl_binary_scalar_new(NL_BIN_MUL, x, 255.0, false);
        *images = scaled ? nl_tensor_to_dtype(scaled, NL_U8) : NULL;
        nl_tensor_release(scaled);
    }
    if (!*images) return nl_dsl_core_error(L);
    if ((*images)->ndim != 4)
        nl_dsl_error(L, "from_tensors: images must be [N, C, H, W], got %d dims", (*images)->ndim);
    int64_t n = (*images)->shape[0];
    nl_tensor **labels = nl_lua_newbox(L);
    if (!(*labels = nl_tensor_empty(NL_I32, 1, &n, NL_CPU))) return nl_dsl_core_error(L);
    int32_t *py = nl_tensor_data(*labels);
    nl_tensor *ly = nl_lua_totensor(L, 2);
    if (!ly) luaL_checktype(L, 2, LUA_TTABLE);
    int64_t given = ly ? (ly->ndim == 1 ? ly->shape[0] : -1) : (int64_t)luaL_len(L, 2);
    if (given != n) nl_dsl_error(L, "from_tensors: %I images but %I labels", (lua_Integer)n, (lua_Integer)given);
    int32_t top = 0;
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (ly) {
            check_status(L, nl_tensor_get(ly, &i, &v));
        } else {
            lua_geti(L, 2, i + 1);
            v = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        if (!(v >= 1 && v <= 65536 && v == floor(v)))
            nl_dsl_error(L, "from_tensors: label %I is %f, expected a class number from 1", (lua_Integer)i + 1, v);
        py[i] = (int32_t)v - 1;
        top = py[i] + 1 > top ? py[i] + 1 : top;
    }
    /* Class names: given, or "1", "2", ... up to the largest label. */
    if (lua_getfield(L, opts, "classes") == LUA_TNIL) {
        lua_createtable(L, (int)top, 0);
        for (int32_t c = 0; c < top; c++) {
            lua_pushfstring(L, "%d", (int)c + 1);
            lua_rawseti(L, -2, c + 1);
        }
        lua_replace(L, -2);
    }
    luaL_argexpected(L, lua_istable(L, -1), 3, "classes = {names}");
    int list = lua_gettop(L);
    lua_Integer nclasses = luaL_len(L, list);
    if (nclasses < 1 || nclasses > 65536) nl_dsl_error(L, "from_tensors: %I classes (1 to 65536)", nclasses);
    const char **names = lua_newuserdatauv(L, (size_t)nclasses * sizeof *names, 0);
    for (int c = 0; c < nclasses; c++) {
        if (lua_geti(L, list, c + 1) != LUA_TSTRING) nl_dsl_error(L, "from_tensors: classes[%d] is not a string", c + 1);
        names[c] = lua_tostring(L, -1); /* the list keeps the string alive */
        lua_pop(L, 1);
    }
    nl_dataset **box = new_dataset_box(L);
    if (!(*box = nl_dataset_new(*images, *labels, (int)nclasses, names, name))) return nl_dsl_core_error(L);
    return 1;
}

static int l_save_cifar(lua_State *L)
{
    static const char *const valid[] = {"seed", "shuffle", NULL};
    const char *dir = nl_dsl_checkpath(L, 1);
    nl_dataset *train = check_dataset(L, 2), *test = check_dataset(L, 3);
    int opts = options(L, 4, valid, "save_cifar");
    lua_Integer seed = opt_int(L, opts, "seed", 1, LUA_MININTEGER, LUA_MAXINTEGER, "save_cifar");
    bool shuffle = opt_bool(L, opts, "shuffle", true, "save_cifar");
    check_status(L, nl_cifar_save(dir, train, test, shuffle, (uint64_t)seed));
    return 0;
}

static int ds_size(lua_State *L)
{
    lua_pushinteger(L, check_dataset(L, 1)->n);
    return 1;
}

/* A 1-based sample index argument as 0-based. */
static int64_t check_sample(lua_State *L, int arg, const nl_dataset *ds, const char *fname)
{
    lua_Integer i = luaL_checkinteger(L, arg);
    if (i < 1 || i > ds->n)
        nl_dsl_error(L, "%s: index %I out of range (1 to %I)", fname, i, (lua_Integer)ds->n);
    return i - 1;
}

static int ds_get(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    int64_t i = check_sample(L, 2, ds, "Dataset:get");
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_dataset_get(ds, i))) return nl_dsl_core_error(L);
    lua_pushinteger(L, nl_dataset_label(ds, i) + 1);
    return 2;
}

static int ds_classes(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    lua_createtable(L, ds->nclasses, 0);
    for (int c = 0; c < ds->nclasses; c++) {
        lua_pushstring(L, ds->classes[c]);
        lua_rawseti(L, -2, c + 1);
    }
    return 1;
}

static int ds_shape(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    lua_createtable(L, 3, 0);
    for (int d = 1; d < 4; d++) {
        lua_pushinteger(L, ds->images->shape[d]);
        lua_rawseti(L, -2, d);
    }
    return 1;
}

static int ds_name(lua_State *L)
{
    lua_pushstring(L, check_dataset(L, 1)->name);
    return 1;
}

static int ds_subset(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    lua_Integer from = luaL_checkinteger(L, 2), to = luaL_optinteger(L, 3, ds->n);
    if (from < 1 || to > ds->n || to < from - 1)
        nl_dsl_error(L, "Dataset:subset: range %I..%I is outside 1..%I", from, to, (lua_Integer)ds->n);
    nl_dataset **box = new_dataset_box(L);
    if (!(*box = nl_dataset_subset(ds, from - 1, to))) return nl_dsl_core_error(L);
    return 1;
}

static int ds_split(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    double fraction = luaL_checknumber(L, 2);
    lua_Integer seed = luaL_optinteger(L, 3, 1);
    nl_dataset **a = new_dataset_box(L), **b = new_dataset_box(L);
    check_status(L, nl_dataset_split(ds, fraction, (uint64_t)seed, a, b));
    return 2;
}

/* ds:batch(indices) -> x f32 [B, C, H, W] (byte / 255), y i32 [B] (1-based labels). */
static int ds_batch(lua_State *L)
{
    nl_dataset *ds = check_dataset(L, 1);
    nl_tensor *t = nl_lua_totensor(L, 2);
    if (!t) luaL_checktype(L, 2, LUA_TTABLE);
    if (t && t->ndim != 1) nl_dsl_error(L, "Dataset:batch: indices must be 1-D, got %d-D", t->ndim);
    int64_t n = t ? t->shape[0] : (int64_t)luaL_len(L, 2);
    int64_t *idx = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *idx, 0);
    for (int64_t k = 0; k < n; k++) {
        double v;
        if (t) {
            check_status(L, nl_tensor_get(t, &k, &v));
        } else {
            lua_geti(L, 2, k + 1);
            v = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        if (!(v >= 1 && v <= (double)ds->n && v == floor(v)))
            nl_dsl_error(L, "Dataset:batch: index %f (item %I) out of range (1 to %I)", v,
                       (lua_Integer)k + 1, (lua_Integer)ds->n);
        idx[k] = (int64_t)v - 1;
    }
    int64_t shape[4];
    memcpy(shape, ds->images->shape, sizeof shape);
    shape[0] = n;
    nl_tensor **x = nl_lua_newbox(L), **y = nl_lua_newbox(L);
    if (!(*x = nl_tensor_empty(NL_F32, 4, shape, NL_CPU))) return nl_dsl_core_error(L);
    if (!(*y = nl_tensor_empty(NL_I32, 1, &n, NL_CPU))) return nl_dsl_core_error(L);
    nl_fill_spec spec = {.label_offset = 1};
    check_status(L, nl_dataset_fill(ds, idx, n, &spec, *x, *y));
    account(L, *x);
    return 2;
}

static int ds_tostring(lua_State *L)
{
    nl_dataset **box = luaL_checkudata(L, 1, DATASET_MT);
    if (!*box) {
        lua_pushliteral(L, "Dataset (closed)");
        return 1;
    }
    const int64_t *s = (*box)->images->shape;
    lua_pushfstring(L, "Dataset %s: %I images %Ix%Ix%I, %d classes", (*box)->name,
                    (lua_Integer)(*box)->n, (lua_Integer)s[1], (lua_Integer)s[2], (lua_Integer)s[3],
                    (*box)->nclasses);
    return 1;
}

static int ds_release(lua_State *L)
{
    nl_dataset **box = luaL_checkudata(L, 1, DATASET_MT);
    nl_dataset_release(*box);
    *box = NULL;
    return 0;
}

/* ---------------------------------------------------------------- Loader ---------------- */

static nl_loader *check_loader(lua_State *L, int idx)
{
    nl_loader **box = luaL_checkudata(L, idx, LOADER_MT);
    if (!*box) luaL_argerror(L, idx, "loader is closed");
    return *box;
}

static int l_loader(lua_State *L)
{
    static const char *const valid[] = {"batch", "shuffle", "seed", "normalize", "augment",
                                        "drop_last", "shard", NULL};
    static const char *const norm_keys[] = {"mean", "std", NULL};
    static const char *const aug_keys[] = {"crop", "flip", "cutout", NULL};
    nl_dataset *ds = check_dataset(L, 1);
    int opts = options(L, 2, valid, "loader");
    nl_loader_opts o = nl_loader_opts_default();
    o.batch = opt_int(L, opts, "batch", o.batch, 1, INT32_MAX, "loader");
    o.shuffle = opt_bool(L, opts, "shuffle", o.shuffle, "loader");
    o.drop_last = opt_bool(L, opts, "drop_last", o.drop_last, "loader");
    o.seed = (uint64_t)opt_int(L, opts, "seed", (lua_Integer)o.seed, LUA_MININTEGER, LUA_MAXINTEGER, "loader");
    o.label_offset = 1;
    /* Under several ranks each loader hands out its rank's shard (shard = false: everything). */
    if (opt_bool(L, opts, "shard", true, "loader") && nl_dist_size() > 1) {
        o.shard = nl_dist_rank();
        o.nshards = nl_dist_size();
    }
    double mean[MAX_NORM], std[MAX_NORM];
    if (lua_getfield(L, opts, "normalize") != LUA_TNIL) {
        int t = lua_gettop(L);
        luaL_argexpected(L, lua_istable(L, t), 2, "normalize = {mean=..., std=...}");
        check_keys(L, t, norm_keys, "loader: normalize");
        o.nmean = opt_numbers(L, t, "mean", mean, "loader: normalize");
        o.nstd = opt_numbers(L, t, "std", std, "loader: normalize");
        o.mean = mean;
        o.std = std;
    }
    if (lua_getfield(L, opts, "augment") != LUA_TNIL) {
        int t = lua_gettop(L);
        luaL_argexpected(L, lua_istable(L, t), 2, "augment = {crop=, flip=, cutout=}");
        check_keys(L, t, aug_keys, "loader: augment");
        o.crop = (int)opt_int(L, t, "crop", 0, 0, 16384, "loader: augment");
        o.cutout = (int)opt_int(L, t, "cutout", 0, 0, 16384, "loader: augment");
        o.flip = opt_bool(L, t, "flip", false, "loader: augment");
    }
    nl_loader **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, LOADER_MT);
    if (!(*box = nl_loader_new(ds, &o))) return nl_dsl_core_error(L);
    return 1;
}

/* loader:next() -> x, y, or nil at the end of the epoch. */
static int ld_next(lua_State *L)
{
    nl_loader *l = check_loader(L, 1);
    nl_tensor **x = nl_lua_newbox(L), **y = nl_lua_newbox(L);
    check_status(L, nl_loader_next(l, x, y));
    if (!*x) {
        lua_pushnil(L);
        return 1;
    }
    account(L, *x); /* a batch's buffers are reused once its boxes are collected */
    return 2;
}

static int ld_iter(lua_State *L)
{
    check_loader(L, 1);
    lua_pushcfunction(L, ld_next);
    lua_pushvalue(L, 1);
    return 2;
}

static int ld_reset(lua_State *L)
{
    nl_loader *l = check_loader(L, 1);
    uint64_t epoch;
    int64_t pos;
    nl_loader_tell(l, &epoch, &pos);
    lua_Integer e = luaL_optinteger(L, 2, (lua_Integer)epoch);
    luaL_argcheck(L, e >= 1, 2, "epochs are numbered from 1");
    check_status(L, nl_loader_seek(l, (uint64_t)e, 0));
    return 0;
}

static int ld_state(lua_State *L)
{
    uint64_t epoch;
    int64_t pos;
    nl_loader_tell(check_loader(L, 1), &epoch, &pos);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)epoch);
    lua_setfield(L, -2, "epoch");
    lua_pushinteger(L, pos);
    lua_setfield(L, -2, "position");
    return 1;
}

static int ld_set_state(lua_State *L)
{
    static const char *const valid[] = {"epoch", "position", NULL};
    nl_loader *l = check_loader(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    check_keys(L, 2, valid, "Loader:set_state");
    lua_Integer e = opt_int(L, 2, "epoch", 1, 1, LUA_MAXINTEGER, "Loader:set_state");
    lua_Integer p = opt_int(L, 2, "position", 0, 0, LUA_MAXINTEGER, "Loader:set_state");
    check_status(L, nl_loader_seek(l, (uint64_t)e, p));
    return 0;
}

static int ld_size(lua_State *L)
{
    lua_pushinteger(L, nl_loader_dataset(check_loader(L, 1))->n);
    return 1;
}

static int ld_batches(lua_State *L)
{
    lua_pushinteger(L, nl_loader_batches(check_loader(L, 1)));
    return 1;
}

static int ld_batch_size(lua_State *L)
{
    lua_pushinteger(L, nl_loader_batch_size(check_loader(L, 1)));
    return 1;
}

static int ld_dataset(lua_State *L)
{
    nl_dataset **box = new_dataset_box(L);
    *box = nl_dataset_retain(nl_loader_dataset(check_loader(L, 1)));
    return 1;
}

static int ld_tostring(lua_State *L)
{
    nl_loader **box = luaL_checkudata(L, 1, LOADER_MT);
    if (!*box) {
        lua_pushliteral(L, "Loader (closed)");
        return 1;
    }
    uint64_t epoch;
    int64_t pos;
    nl_loader_tell(*box, &epoch, &pos);
    lua_pushfstring(L, "Loader over %s: %I batches per epoch, epoch %I, batch %I next",
                    nl_loader_dataset(*box)->name, (lua_Integer)nl_loader_batches(*box),
                    (lua_Integer)epoch, (lua_Integer)pos + 1);
    return 1;
}

/* __gc and __close: stop and join the thread, free the loader (once). */
static int ld_release(lua_State *L)
{
    nl_loader **box = luaL_checkudata(L, 1, LOADER_MT);
    nl_loader_free(*box);
    *box = NULL;
    return 0;
}

/* ---------------------------------------------------------------- registration ---------- */

/* Examples build a tiny data set so that they run anywhere (tests run every example). */
#define TINY "local ds = data.from_tensors(tensor.rand(8, 3, 4, 4), {1, 2, 1, 2, 1, 2, 1, 2}); "

static const nl_dsl_fn data_fns[] = {
    {"cifar10", l_cifar10, "data.cifar10([dir]) -> train, test",
     "CIFAR-10's binary release (50,000 + 10,000 images 3x32x32, 10 classes). Without dir: "
     "$NNLAB_DATA/cifar-10-batches-bin, then ./data/cifar-10-batches-bin (`make data` puts it there).",
     "local ok, msg = pcall(data.cifar10); print(ok and \"found CIFAR-10\" or msg)"},
    {"fashion_mnist", l_fashion_mnist, "data.fashion_mnist([dir]) -> train, test",
     "Fashion-MNIST from IDX files, gzip or not (60,000 + 10,000 images 1x28x28, 10 classes); dir "
     "defaults to " NL_FASHION_MNIST_DIR " (Debian's dataset-fashion-mnist).",
     "local ok, msg = pcall(data.fashion_mnist); print(ok and \"found Fashion-MNIST\" or msg)"},
    {"mnist", l_mnist, "data.mnist(dir) -> train, test",
     "MNIST digits from the four IDX files in dir (train-images-idx3-ubyte, ..., gzip or not).",
     "print(pcall(data.mnist, \"/nonexistent\"))"},
    {"image_folder", l_image_folder, "data.image_folder(dir [, {size={h, w}}]) -> Dataset",
     "Images in dir/<class>/<file> (PNG, JPEG, ...: SDL2_image), classes in sorted folder order, "
     "as RGB; size resizes bilinearly (a number for squares), else all must share the first's size.",
     "print(pcall(data.image_folder, \"/nonexistent\", {size = {32, 32}}))"},
    {"from_tensors", l_from_tensors, "data.from_tensors(images, labels [, {classes=, name=}]) -> Dataset",
     "A data set from images [N, C, H, W] (u8, or floats in [0, 1], kept as bytes) and 1-based "
     "labels (a tensor or a list); classes names them (default \"1\", \"2\", ...).",
     TINY "print(ds, ds:classes()[2])"},
    {"save_cifar", l_save_cifar, "data.save_cifar(dir, train, test [, {seed=1, shuffle=true}])",
     "Writes a 3x32x32 train/test pair in CIFAR-10's binary format (data_batch_1..5.bin, "
     "test_batch.bin, batches.meta.txt), records in a seeded shuffled order; data.cifar10(dir) reads it.",
     "local x = data.from_tensors(tensor.rand(10, 3, 32, 32), {1, 2, 3, 1, 2, 3, 1, 2, 3, 1}); "
     "local dir = os.tmpname(); os.remove(dir); data.save_cifar(dir, x, x:subset(1, 5)); "
     "print(data.cifar10(dir)); for _, f in ipairs{\"data_batch_1.bin\", \"data_batch_2.bin\", "
     "\"data_batch_3.bin\", \"data_batch_4.bin\", \"data_batch_5.bin\", \"test_batch.bin\", "
     "\"batches.meta.txt\"} do os.remove(dir .. \"/\" .. f) end; os.remove(dir)"},
    {"loader", l_loader,
     "data.loader(ds, {batch=64, shuffle=true, seed=1, normalize={mean=, std=}, augment={crop=, "
     "flip=, cutout=}, drop_last=false, shard=true}) -> Loader",
     "Seeded mini-batches of ds prepared by a background thread: per-channel normalisation, random "
     "crop (zero padding), horizontal flip, cutout. The same seed gives the same batches. Under "
     "several ranks each rank gets its strided shard of every epoch (shard = false: all of it).",
     TINY "local ld = data.loader(ds, {batch = 4, normalize = {mean = 0.5, std = 0.5}, "
     "augment = {crop = 1, flip = true}}); print(ld:next())"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn dataset_methods[] = {
    {"size", ds_size, "ds:size() -> n", "The number of samples; also #ds.", TINY "print(ds:size(), #ds)"},
    {"get", ds_get, "ds:get(i) -> image, label",
     "Sample i (1-based): the image as an f32 tensor [C, H, W] in [0, 1] and its 1-based label.",
     TINY "local x, y = ds:get(1); print(x:shape()[1], y)"},
    {"classes", ds_classes, "ds:classes() -> {names}", "The class names, indexed by label.",
     TINY "print(table.concat(ds:classes(), \", \"))"},
    {"shape", ds_shape, "ds:shape() -> {C, H, W}", "The shape of one image.",
     TINY "print(table.concat(ds:shape(), \"x\"))"},
    {"name", ds_name, "ds:name() -> string", "The data set's name (e.g. \"cifar10-train\").",
     TINY "print(ds:name())"},
    {"subset", ds_subset, "ds:subset(from [, to]) -> Dataset",
     "Samples from..to (1-based, inclusive) as a view sharing the pixels.", TINY "print(#ds:subset(2, 5))"},
    {"split", ds_split, "ds:split(fraction [, seed]) -> a, b",
     "A seeded random split: a holds round(fraction * #ds) samples, b the rest (views, disjoint).",
     TINY "local a, b = ds:split(0.75, 1); print(#a, #b)"},
    {"batch", ds_batch, "ds:batch(indices) -> x, y",
     "Samples at 1-based indices (a list or a tensor) as x f32 [B, C, H, W] in [0, 1] and y i32 [B] "
     "(1-based labels), gathered in C.",
     TINY "local x, y = ds:batch({1, 3}); print(x:shape()[1], y:get(2))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn loader_methods[] = {
    {"next", ld_next, "loader:next() -> x, y | nil",
     "The next batch (x f32 [B, C, H, W], y i32 [B], 1-based labels), or nil at the end of the "
     "epoch, after which the next epoch starts (reshuffled).",
     TINY "local ld = data.loader(ds, {batch = 3}); print(ld:next())"},
    {"iter", ld_iter, "loader:iter() -> iterator",
     "For loops over the rest of the epoch: for x, y in loader:iter() do ... end.",
     TINY "for x, y in data.loader(ds, {batch = 4}):iter() do print(y) end"},
    {"reset", ld_reset, "loader:reset([epoch])",
     "Goes back to the first batch of the current epoch, or of epoch (from 1).",
     TINY "local ld = data.loader(ds); ld:reset(3); print(ld:state().epoch)"},
    {"state", ld_state, "loader:state() -> {epoch=, position=}",
     "Where the loader is (batches handed out in the epoch), for checkpoints.",
     TINY "local ld = data.loader(ds, {batch = 2}); ld:next(); print(ld:state().position)"},
    {"set_state", ld_set_state, "loader:set_state({epoch=, position=})",
     "Continues from a saved state: the same batches follow as after the save.",
     TINY "local ld = data.loader(ds, {batch = 2}); ld:set_state({epoch = 2, position = 1}); print(ld)"},
    {"size", ld_size, "loader:size() -> n", "The number of samples in the loader's data set.",
     TINY "print(data.loader(ds):size())"},
    {"batches", ld_batches, "loader:batches() -> n", "Batches per epoch; also #loader.",
     TINY "print(data.loader(ds, {batch = 3}):batches())"},
    {"batch_size", ld_batch_size, "loader:batch_size() -> n",
     "Samples per batch (the last batch of an epoch may hold fewer unless drop_last).",
     TINY "print(data.loader(ds, {batch = 3}):batch_size())"},
    {"dataset", ld_dataset, "loader:dataset() -> Dataset", "The data set the loader draws from.",
     TINY "print(data.loader(ds):dataset())"},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Creates a userdata metatable with methods in a plain __index table, and registers their help. */
static void new_type(lua_State *L, const char *mt, const nl_dsl_fn *methods, const luaL_Reg *meta)
{
    luaL_newmetatable(L, mt);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    for (const nl_dsl_fn *f = methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    nl_dsl_register_methods(L, mt, methods);
}

int nl_open_data(lua_State *L)
{
    static const luaL_Reg dataset_meta[] = {
        {"__len", ds_size}, {"__tostring", ds_tostring}, {"__gc", ds_release},
        {"__close", ds_release}, {NULL, NULL},
    };
    static const luaL_Reg loader_meta[] = {
        {"__len", ld_batches}, {"__tostring", ld_tostring}, {"__gc", ld_release},
        {"__close", ld_release}, {NULL, NULL},
    };
    new_type(L, DATASET_MT, dataset_methods, dataset_meta);
    new_type(L, LOADER_MT, loader_methods, loader_meta);
    nl_dsl_register(L, "data", data_fns);
    return 0;
}
