/* nndata.c: nn.TensorDataset, a data set of tensors in memory (x [N, ...] with class labels or
 * targets y), whose batches are gathered in C. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include "train.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define DATASET_MT "TensorDataset"

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* x [N, ...] any dtype; y either class labels (i32, 1-based, [N]) or f32 targets [N, ...]. */
typedef struct {
    nl_tensor *x, *y;
    bool labels;
} lua_dataset;

static lua_dataset *check_dataset(lua_State *L, int idx)
{
    lua_dataset *d = luaL_checkudata(L, idx, DATASET_MT);
    if (!d->x) nl_dsl_error(L, "TensorDataset: closed");
    return d;
}

static int ds_new(lua_State *L)
{
    nl_tensor *x = nl_lua_checktensor(L, 1);
    nl_tensor *y = nl_lua_totensor(L, 2);
    if (!y && lua_type(L, 2) == LUA_TTABLE) { /* a list of labels: tensor.from(list) */
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "tensor");
        lua_getfield(L, -1, "from");
        lua_remove(L, -2);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
        lua_replace(L, 2);
        lua_pop(L, 1);
        y = nl_lua_checktensor(L, 2);
    }
    if (!y) luaL_typeerror(L, 2, "Tensor of labels or targets");
    if (x->ndim < 1) nl_dsl_error(L, "nn.TensorDataset: x must have a sample dim, got a 0-d tensor");
    if (y->ndim < 1 || y->shape[0] != x->shape[0])
        nl_dsl_error(L, "nn.TensorDataset: x has %I samples but y has %I", (lua_Integer)x->shape[0],
                   (lua_Integer)(y->ndim ? y->shape[0] : 0));
    /* Labels and targets are kept on the host (one copy of a device y): a batch's labels are
     * checked there before the step moves them to the network's device. */
    if (nl_tensor_device(y) != NL_CPU) {
        nl_tensor **hbox = nl_lua_newbox(L);
        if (!(*hbox = nl_tensor_host(y))) return nl_dsl_core_error(L);
        y = *hbox;
    }
    /* 1-D y of whole numbers: class labels, checked and kept as i32. */
    bool labels = y->ndim == 1 && !nl_dtype_info(y->dtype)->is_float;
    if (y->ndim == 1 && !labels) {
        labels = true;
        for (int64_t i = 0; labels && i < y->shape[0]; i++) {
            double v;
            check_status(L, nl_tensor_get(y, &i, &v));
            labels = v == floor(v);
        }
    }
    lua_dataset *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DATASET_MT);
    d->x = nl_tensor_retain(x);
    d->labels = labels;
    if (!labels) {
        d->y = nl_tensor_retain(y);
        return 1;
    }
    if (!(d->y = nl_tensor_to_dtype(y, NL_I32))) return nl_dsl_core_error(L);
    const int32_t *py = nl_tensor_data(d->y);
    for (int64_t i = 0; i < y->shape[0]; i++)
        if (py[i] < 1)
            nl_dsl_error(L, "nn.TensorDataset: label %d of sample %I is not a class number (1, 2, ...)",
                       py[i], (lua_Integer)i + 1);
    return 1;
}

static int ds_size(lua_State *L)
{
    lua_pushinteger(L, check_dataset(L, 1)->x->shape[0]);
    return 1;
}

/* Pushes sample i (0-based) of t without its sample dim: a view. */
static void push_row(lua_State *L, nl_tensor *t, int64_t i)
{
    nl_tensor **box = nl_lua_newbox(L);
    nl_tensor *row = nl_tensor_slice(t, 0, i, i + 1);
    if (!row) nl_dsl_core_error(L);
    *box = nl_tensor_reshape(row, t->ndim - 1, t->shape + 1);
    nl_tensor_release(row);
    if (!*box) nl_dsl_core_error(L);
}

static int ds_get(lua_State *L)
{
    lua_dataset *d = check_dataset(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > d->x->shape[0])
        nl_dsl_error(L, "TensorDataset: index %I out of range (1 to %I)", i, (lua_Integer)d->x->shape[0]);
    push_row(L, d->x, i - 1);
    if (d->labels) lua_pushinteger(L, ((const int32_t *)nl_tensor_data(d->y))[i - 1]);
    else push_row(L, d->y, i - 1);
    return 2;
}

/* Reads 1-based sample indices (a list or a Tensor) at idx as 0-based rows into a scratch block
 * left on the stack; returns it and the count in *n. */
static int64_t *check_rows(lua_State *L, int idx, int64_t size, int64_t *n, const char *fname)
{
    nl_tensor *t = nl_lua_totensor(L, idx);
    if (t && t->ndim != 1) nl_dsl_error(L, "%s: indices must be 1-D, got %d-D", fname, t->ndim);
    if (!t) luaL_checktype(L, idx, LUA_TTABLE);
    *n = t ? t->shape[0] : (int64_t)luaL_len(L, idx);
    int64_t *rows = lua_newuserdatauv(L, (size_t)(*n ? *n : 1) * sizeof *rows, 0);
    for (int64_t k = 0; k < *n; k++) {
        double v;
        if (t) {
            check_status(L, nl_tensor_get(t, &k, &v));
        } else {
            lua_geti(L, idx, k + 1);
            v = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        if (!(v == floor(v) && v >= 1 && v <= (double)size))
            nl_dsl_error(L, "%s: index %f (item %I) out of range (1 to %I)", fname, v,
                       (lua_Integer)k + 1, (lua_Integer)size);
        rows[k] = (int64_t)v - 1;
    }
    return rows;
}

/* Pushes a new tensor of dtype holding rows of t, gathered in C. */
static void push_gather(lua_State *L, nl_tensor *t, nl_dtype dtype, const int64_t *rows, int64_t n)
{
    int64_t shape[NL_MAX_DIMS];
    memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
    shape[0] = n;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(dtype, t->ndim, shape, nl_tensor_device(t)))) nl_dsl_core_error(L);
    check_status(L, nl_gather_rows(*box, t, rows, n));
}

/* ds:batch(indices) -> x (f32 [B, ...]), y (i32 labels [B], 1-based, or f32 targets). */
static int ds_batch(lua_State *L)
{
    lua_dataset *d = check_dataset(L, 1);
    int64_t n;
    const int64_t *rows = check_rows(L, 2, d->x->shape[0], &n, "TensorDataset:batch");
    push_gather(L, d->x, NL_F32, rows, n);
    push_gather(L, d->y, d->y->dtype, rows, n);
    return 2;
}

static int ds_tensors(lua_State *L)
{
    lua_dataset *d = check_dataset(L, 1);
    nl_lua_pushshared(L, d->x);
    nl_lua_pushshared(L, d->y);
    return 2;
}

static int ds_tostring(lua_State *L)
{
    lua_dataset *d = check_dataset(L, 1);
    char xs[NL_MAX_DIMS * 24], ys[NL_MAX_DIMS * 24];
    lua_pushfstring(L, "TensorDataset(%I samples: x %s %s, y %s %s)", (lua_Integer)d->x->shape[0],
                    nl_shape_str(xs, sizeof xs, d->x->ndim, d->x->shape),
                    nl_dtype_info(d->x->dtype)->name,
                    nl_shape_str(ys, sizeof ys, d->y->ndim, d->y->shape),
                    d->labels ? "labels" : nl_dtype_info(d->y->dtype)->name);
    return 1;
}

static int ds_gc(lua_State *L)
{
    lua_dataset *d = luaL_checkudata(L, 1, DATASET_MT);
    nl_tensor_release(d->x);
    nl_tensor_release(d->y);
    d->x = d->y = NULL;
    return 0;
}
static const nl_dsl_fn dataset_fns[] = {
    {"TensorDataset", ds_new, "nn.TensorDataset(x, y) -> dataset",
     "A data set of x [N, ...] with class labels y [N] (1-based; i32 or whole f32 numbers) or f32 "
     "targets y [N, ...]. ds:size(), ds:get(i) -> x_i, y_i, ds:batch(indices) -> x, y (gathered in C).",
     "ds = nn.TensorDataset(tensor.randn(10, 2), tensor.ones(10, \"i32\")); print(ds:get(3))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn dataset_methods[] = {
    {"size", ds_size, "ds:size() -> n", "The number of samples (also #ds).",
     "print(nn.TensorDataset(tensor.zeros(5, 2), tensor.ones(5)):size())"},
    {"get", ds_get, "ds:get(i) -> x, y",
     "Sample i (1-based): x a view without the sample dim, y its label (a number) or target.",
     "print(nn.TensorDataset(tensor.randn(5, 2), tensor.ones(5)):get(2))"},
    {"batch", ds_batch, "ds:batch(indices) -> x, y",
     "The samples at 1-based indices (a list or Tensor), gathered in C: x f32 [B, ...], y i32 labels "
     "[B] or f32 targets.",
     "x, y = nn.TensorDataset(tensor.randn(5, 2), tensor.from{1, 2, 1, 2, 1}):batch{1, 3}; print(x, y)"},
    {"tensors", ds_tensors, "ds:tensors() -> x, y", "The data set's tensors (labels as i32, 1-based).",
     "print(nn.TensorDataset(tensor.zeros(3, 1), tensor.ones(3)):tensors())"},
    {NULL, NULL, NULL, NULL, NULL},
};

void nl_open_nndata(lua_State *L)
{
    static const luaL_Reg dataset_meta[] = {
        {"__len", ds_size}, {"__tostring", ds_tostring}, {"__gc", ds_gc}, {NULL, NULL}};
    nl_lua_newtype(L, DATASET_MT, dataset_meta, dataset_methods, NULL);
    nl_dsl_register(L, "nn", dataset_fns);
}
