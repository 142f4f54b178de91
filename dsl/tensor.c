/* tensor.c: the Lua module `tensor` and the Tensor userdata: constructors, views, element
 * access, math through methods and metamethods, printing. 1-based in Lua, 0-based in core. */
#include "dsl.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* Sizes, indices and counts above this are refused before they reach an int64_t. */
#define MAX_EXACT 0x1p53

/* ---------------------------------------------------------------- boxes ----------------- */

/* Lua's collector sees a box's few bytes, not the storage behind it, so dropped tensors would pile
 * up between collections. Each new box first charges the collector with the storage allocated
 * since the last charge (as if Lua had allocated it), so garbage is freed at the pace it is made. */
static void charge_collector(lua_State *L)
{
    static uint64_t charged;
    const uint64_t now = nl_mem_allocated(), kib = (now - charged) >> 10;
    if (kib < 1024) return;
    charged = now;
    lua_gc(L, LUA_GCSTEP, (int)(kib < INT_MAX ? kib : INT_MAX));
}

nl_tensor **nl_lua_newbox(lua_State *L)
{
    charge_collector(L);
    nl_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, NL_TENSOR_MT);
    return box;
}

void nl_lua_pushshared(lua_State *L, nl_tensor *t)
{
    if (!t) {
        lua_pushnil(L);
        return;
    }
    nl_tensor **box = nl_lua_newbox(L);
    *box = nl_tensor_retain(t);
}

nl_tensor *nl_lua_totensor(lua_State *L, int idx)
{
    nl_tensor **box = luaL_testudata(L, idx, NL_TENSOR_MT);
    if (!box) return NULL;
    if (!*box) luaL_argerror(L, idx, "tensor is closed");
    return *box;
}

nl_tensor *nl_lua_checktensor(lua_State *L, int idx)
{
    nl_tensor *t = nl_lua_totensor(L, idx);
    if (!t) luaL_typeerror(L, idx, NL_TENSOR_MT);
    return t;
}

/* Raises the core's error when a core call failed. */
static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* t itself when it lives on the CPU; otherwise a CPU copy, left boxed on the stack (for
 * reading many elements: nl_tensor_get copies one element per call from a device). */
static nl_tensor *host(lua_State *L, nl_tensor *t)
{
    if (nl_tensor_device(t) == NL_CPU) return t;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_host(t))) nl_dsl_core_error(L);
    return *box;
}

/* Pushes an element's value: an integer for integer dtypes, a float for f32. */
void nl_lua_pushvalue(lua_State *L, nl_dtype dtype, double v)
{
    if (nl_dtype_info(dtype)->is_float) lua_pushnumber(L, v);
    else lua_pushinteger(L, (lua_Integer)v);
}

/* ---------------------------------------------------------------- argument parsing ------ */

static nl_dtype check_dtype(lua_State *L, int arg)
{
    const char *s = luaL_checkstring(L, arg);
    nl_dtype dt = nl_dtype_parse(s);
    if (dt == NL_DTYPE_COUNT)
        luaL_argerror(L, arg, lua_pushfstring(L, "unknown dtype '%s' (f32, i8, i32, u8)", s));
    return dt;
}

/* One size of a shape (pos is its 1-based position); -1 is allowed when infer is set. */
static int64_t check_size(lua_State *L, double v, int pos, bool infer, const char *fname)
{
    if (isnan(v)) nl_dsl_error(L, "%s: size %d is NaN", fname, pos);
    if (v != floor(v)) nl_dsl_error(L, "%s: size %d (%f) is not an integer", fname, pos, v);
    if (v < 0 && !(infer && v == -1))
        nl_dsl_error(L, "%s: size %d (%f) is negative", fname, pos, v);
    if (v > MAX_EXACT) nl_dsl_error(L, "%s: size %d (%f) is too large", fname, pos, v);
    return (int64_t)v;
}

/* Reads a shape from the arguments first..last: sizes as numbers, or one table of them.
 * infer allows one -1 (reshape). Returns the number of dims; raises on a non-integer,
 * negative, NaN or too large size and on more than NL_MAX_DIMS dims. */
int nl_lua_checkshape(lua_State *L, int first, int last, int64_t *shape, bool infer,
                      const char *fname)
{
    bool table = first <= last && lua_type(L, first) == LUA_TTABLE;
    if (table && last > first) luaL_argerror(L, first + 1, "no sizes expected after a shape table");
    lua_Unsigned n = table ? lua_rawlen(L, first) : (lua_Unsigned)(last >= first ? last - first + 1 : 0);
    if (n > NL_MAX_DIMS)
        nl_dsl_error(L, "%s: %I dims requested, at most %d are supported", fname, (lua_Integer)n,
                   NL_MAX_DIMS);
    for (int i = 0; i < (int)n; i++) {
        double v;
        if (table) {
            lua_rawgeti(L, first, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                nl_dsl_error(L, "%s: size %d is a %s, expected a number", fname, i + 1,
                           luaL_typename(L, -1));
            v = lua_tonumber(L, -1);
            lua_pop(L, 1);
        } else {
            v = luaL_checknumber(L, first + i);
        }
        shape[i] = check_size(L, v, i + 1, infer, fname);
    }
    return (int)n;
}

/* A 1-based dim argument (negative counts from the end) as a 0-based dim of t. */
int nl_lua_checkdim(lua_State *L, int arg, const nl_tensor *t, const char *fname)
{
    lua_Integer d = luaL_checkinteger(L, arg);
    lua_Integer j = d < 0 ? d + t->ndim + 1 : d;
    if (j < 1 || j > t->ndim)
        nl_dsl_error(L, "%s: dim %I out of range for a %d-D tensor", fname, d, t->ndim);
    return (int)j - 1;
}

/* A 1-based index argument along dim (of size n; negative counts from the end) as 0-based.
 * past_end also allows n + 1, the empty position after the last element (slice starts). */
int64_t nl_lua_checkindex(lua_State *L, int arg, int64_t n, int dim, const char *fname,
                          bool past_end)
{
    lua_Integer i = luaL_checkinteger(L, arg);
    lua_Integer j = i < 0 ? i + n + 1 : i;
    if (j < 1 || j > n + past_end)
        nl_dsl_error(L, "%s: index %I out of range for dim %d of size %I", fname, i, dim + 1,
                   (lua_Integer)n);
    return j - 1;
}

/* Reads one index per dim of t from the arguments first.. (exactly ndim of them). */
static void check_indices(lua_State *L, int first, const nl_tensor *t, int64_t *idx,
                          const char *fname)
{
    int given = lua_gettop(L) - first + 1;
    if (given != t->ndim)
        nl_dsl_error(L, "%s: %d indices given for a %d-D tensor", fname, given < 0 ? 0 : given,
                   t->ndim);
    for (int d = 0; d < t->ndim; d++)
        idx[d] = nl_lua_checkindex(L, first + d, t->shape[d], d, fname, false);
}

/* ---------------------------------------------------------------- constructors ---------- */

/* A trailing options table {device = "sim", dtype = "i32"} of a constructor (a table with no
 * array part, so a shape table is never taken for it): reads it, drops it from *top, and
 * returns the device (NL_CPU when none); sets *dtype when the table names one. */
static nl_device check_options(lua_State *L, int *top, nl_dtype *dtype)
{
    if (*top < 1 || lua_type(L, *top) != LUA_TTABLE || lua_rawlen(L, *top) > 0) return NL_CPU;
    int opts = (*top)--;
    nl_device dev = NL_CPU;
    if (lua_getfield(L, opts, "device") != LUA_TNIL) dev = nl_dsl_checkdevice(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, opts, "dtype") != LUA_TNIL) {
        if (!dtype) nl_dsl_error(L, "this constructor takes no dtype");
        *dtype = check_dtype(L, lua_absindex(L, -1));
    }
    lua_pop(L, 1);
    return dev;
}

/* zeros, ones, full: shape..., [value,] [dtype]; every element set to the value. */
static int make_full(lua_State *L, bool has_value, double value, const char *fname)
{
    int top = lua_gettop(L);
    nl_dtype dt = NL_F32;
    nl_device dev = check_options(L, &top, &dt);
    if (top >= 1 && lua_type(L, top) == LUA_TSTRING) dt = check_dtype(L, top--);
    if (has_value) value = luaL_checknumber(L, top > 0 ? top-- : 1);
    int64_t shape[NL_MAX_DIMS];
    int nd = nl_lua_checkshape(L, 1, top, shape, false, fname);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(dt, nd, shape, dev))) return nl_dsl_core_error(L);
    check_status(L, nl_fill(*box, value));
    return 1;
}

static int t_zeros(lua_State *L) { return make_full(L, false, 0, "zeros"); }
static int t_ones(lua_State *L) { return make_full(L, false, 1, "ones"); }
static int t_full(lua_State *L) { return make_full(L, true, 0, "full"); }

/* rand, randn: f32 tensors of shape... from the global generator. */
static int make_random(lua_State *L, bool normal, const char *fname)
{
    int64_t shape[NL_MAX_DIMS];
    int top = lua_gettop(L);
    nl_device dev = check_options(L, &top, NULL);
    int nd = nl_lua_checkshape(L, 1, top, shape, false, fname);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_F32, nd, shape, dev))) return nl_dsl_core_error(L);
    check_status(L, normal ? nl_rand_normal(*box, 0, 1) : nl_rand_uniform(*box, 0, 1));
    return 1;
}

static int t_rand(lua_State *L) { return make_random(L, false, "rand"); }
static int t_randn(lua_State *L) { return make_random(L, true, "randn"); }

static int t_arange(lua_State *L)
{
    double start = 0, stop, step = 1;
    if (lua_gettop(L) <= 1) {
        stop = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        stop = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    if (isnan(start) || isnan(stop) || isnan(step)) nl_dsl_error(L, "arange: NaN argument");
    luaL_argcheck(L, step != 0, 3, "step must not be zero");
    double count = ceil((stop - start) / step);
    if (count < 0) count = 0;
    if (!(count <= MAX_EXACT)) nl_dsl_error(L, "arange: %f elements are too many", count);
    int64_t n = (int64_t)count;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_F32, 1, &n, NL_CPU))) return nl_dsl_core_error(L);
    float *p = nl_tensor_f32(*box);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(start + (double)i * step);
    return 1;
}

/* Formats a position in a nested table, "t[2][1]" (1-based), into buf. */
static const char *table_pos(char *buf, size_t cap, const int64_t *idx, int depth)
{
    size_t used = (size_t)snprintf(buf, cap, "t");
    for (int d = 0; d < depth && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "[%lld]", (long long)idx[d] + 1);
    return buf;
}

/* Writes the nested table at stack index at (depth d of t's shape) into t, checking that the
 * nesting is rectangular; idx holds the position of that table. */
static void fill_from_table(lua_State *L, int at, nl_tensor *t, int d, int64_t *idx)
{
    char pos[128];
    if (d == t->ndim) {
        if (lua_type(L, at) != LUA_TNUMBER)
            nl_dsl_error(L, "from: %s is a %s, expected a number", table_pos(pos, sizeof pos, idx, d),
                       luaL_typename(L, at));
        check_status(L, nl_tensor_set(t, idx, lua_tonumber(L, at)));
        return;
    }
    if (lua_type(L, at) != LUA_TTABLE)
        nl_dsl_error(L, "from: %s is a %s, expected a table of %I", table_pos(pos, sizeof pos, idx, d),
                   luaL_typename(L, at), (lua_Integer)t->shape[d]);
    lua_Unsigned len = lua_rawlen(L, at);
    if (len != (lua_Unsigned)t->shape[d])
        nl_dsl_error(L, "from: ragged nested table: %s has %I elements, expected %I",
                   table_pos(pos, sizeof pos, idx, d), (lua_Integer)len, (lua_Integer)t->shape[d]);
    luaL_checkstack(L, 2, "nested tables too deep");
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        lua_rawgeti(L, at, i + 1);
        fill_from_table(L, lua_gettop(L), t, d + 1, idx);
        lua_pop(L, 1);
    }
}

static int t_from(lua_State *L)
{
    luaL_argexpected(L, lua_type(L, 1) == LUA_TTABLE || lua_type(L, 1) == LUA_TNUMBER, 1,
                     "table or number");
    nl_dtype dt = lua_isnoneornil(L, 2) ? NL_F32 : check_dtype(L, 2);
    lua_settop(L, 1);
    /* The shape follows the first element down each level; fill_from_table checks the rest. */
    int64_t shape[NL_MAX_DIMS];
    int nd = 0;
    lua_pushvalue(L, 1);
    while (lua_type(L, -1) == LUA_TTABLE) {
        if (nd == NL_MAX_DIMS) nl_dsl_error(L, "from: nested deeper than %d levels", NL_MAX_DIMS);
        lua_Unsigned len = lua_rawlen(L, -1);
        shape[nd++] = (int64_t)len;
        if (len == 0) break;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(dt, nd, shape, NL_CPU))) return nl_dsl_core_error(L);
    int64_t idx[NL_MAX_DIMS] = {0};
    fill_from_table(L, 1, *box, 0, idx);
    return 1;
}

static int t_seed(lua_State *L)
{
    nl_rng_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

static int t_load(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_npy_load(path))) return nl_dsl_core_error(L);
    return 1;
}

static int t_is_tensor(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, NL_TENSOR_MT) != NULL);
    return 1;
}

/* ---------------------------------------------------------------- shape and views ------- */

static int t_shape(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int t_size(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return t_shape(L); /* PyTorch's and Torch7's size() */
    lua_pushinteger(L, t->shape[nl_lua_checkdim(L, 2, t, "size")]);
    return 1;
}

static int t_dim(lua_State *L)
{
    lua_pushinteger(L, nl_lua_checktensor(L, 1)->ndim);
    return 1;
}

static int t_numel(lua_State *L)
{
    lua_pushinteger(L, nl_tensor_numel(nl_lua_checktensor(L, 1)));
    return 1;
}

static int t_dtype(lua_State *L)
{
    lua_pushstring(L, nl_dtype_info(nl_lua_checktensor(L, 1)->dtype)->name);
    return 1;
}

static int t_device(lua_State *L)
{
    lua_pushstring(L, nl_device_name(nl_tensor_device(nl_lua_checktensor(L, 1))));
    return 1;
}

static int t_len(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "#: a 0-d tensor has no length");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

static int t_reshape(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t shape[NL_MAX_DIMS];
    int nd = nl_lua_checkshape(L, 2, lua_gettop(L), shape, true, "reshape");
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_reshape(t, nd, shape))) return nl_dsl_core_error(L);
    return 1;
}

static int t_transpose(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d0 = nl_lua_checkdim(L, 2, t, "transpose"), d1 = nl_lua_checkdim(L, 3, t, "transpose");
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_transpose(t, d0, d1))) return nl_dsl_core_error(L);
    return 1;
}

static int t_t(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim != 2) nl_dsl_error(L, "t: expected a 2-D tensor, got %d-D (use transpose)", t->ndim);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_transpose(t, 0, 1))) return nl_dsl_core_error(L);
    return 1;
}

static int t_slice(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = nl_lua_checkdim(L, 2, t, "slice");
    int64_t n = t->shape[d];
    int64_t start = nl_lua_checkindex(L, 3, n, d, "slice", true);
    lua_Integer to = luaL_optinteger(L, 4, -1);
    lua_Integer stop = to < 0 ? to + n + 1 : to; /* inclusive 1-based end = exclusive 0-based */
    if (stop < 0 || stop > n)
        nl_dsl_error(L, "slice: index %I out of range for dim %d of size %I", to, d + 1, (lua_Integer)n);
    if (stop < start)
        nl_dsl_error(L, "slice: range %I..%I is reversed", (lua_Integer)start + 1, to);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_slice(t, d, start, stop))) return nl_dsl_core_error(L);
    return 1;
}

static int t_clone(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_clone(t))) return nl_dsl_core_error(L);
    return 1;
}

static int t_contiguous(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_contiguous(t))) return nl_dsl_core_error(L);
    return 1;
}

static int t_to(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    const char *s = luaL_checkstring(L, 2);
    nl_dtype dt = nl_dtype_parse(s);
    nl_device dev = nl_device_parse(s);
    if (dt == NL_DTYPE_COUNT && dev == NL_DEVICE_COUNT)
        luaL_argerror(L, 2, lua_pushfstring(L, "unknown dtype or device '%s'", s));
    if (dt == NL_DTYPE_COUNT) nl_dsl_checkdevice(L, 2);
    nl_tensor **box = nl_lua_newbox(L);
    *box = dt != NL_DTYPE_COUNT ? nl_tensor_to_dtype(t, dt) : nl_tensor_to_device(t, dev);
    if (!*box) return nl_dsl_core_error(L);
    return 1;
}

/* ---------------------------------------------------------------- elements -------------- */

static int t_get(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t idx[NL_MAX_DIMS];
    double v;
    check_indices(L, 2, t, idx, "get");
    check_status(L, nl_tensor_get(t, idx, &v));
    nl_lua_pushvalue(L, t->dtype, v);
    return 1;
}

static int t_set(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    double v = luaL_checknumber(L, 2);
    int64_t idx[NL_MAX_DIMS];
    check_indices(L, 3, t, idx, "set");
    check_status(L, nl_tensor_set(t, idx, v));
    lua_settop(L, 1);
    return 1;
}

static int t_item(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t n = nl_tensor_numel(t), idx[NL_MAX_DIMS] = {0};
    double v;
    if (n != 1) nl_dsl_error(L, "item: the tensor has %I elements, expected 1", (lua_Integer)n);
    check_status(L, nl_tensor_get(t, idx, &v));
    nl_lua_pushvalue(L, t->dtype, v);
    return 1;
}

static int t_fill(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    check_status(L, nl_fill(t, luaL_checknumber(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int t_copy(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    check_status(L, nl_copy(t, nl_lua_checktensor(L, 2)));
    lua_settop(L, 1);
    return 1;
}

/* Pushes the sub-array of host tensor t at depth d (position idx) as nested tables. */
static void push_table(lua_State *L, const nl_tensor *t, int d, int64_t *idx)
{
    if (d == t->ndim) {
        double v;
        check_status(L, nl_tensor_get(t, idx, &v));
        nl_lua_pushvalue(L, t->dtype, v);
        return;
    }
    luaL_checkstack(L, 2, "tensor too deep");
    lua_createtable(L, (int)(t->shape[d] < 1 << 20 ? t->shape[d] : 1 << 20), 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        push_table(L, t, d + 1, idx);
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_totable(lua_State *L)
{
    nl_tensor *t = host(L, nl_lua_checktensor(L, 1));
    int64_t idx[NL_MAX_DIMS];
    push_table(L, t, 0, idx);
    return 1;
}

static int t_save(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    check_status(L, nl_npy_save(nl_dsl_checkpath(L, 2), t));
    return 0;
}

/* ---------------------------------------------------------------- math ------------------ */

/* a op b for tensor-tensor, tensor-number and number-tensor operands (methods and
 * metamethods alike). */
static int binary(lua_State *L, nl_binop op)
{
    nl_tensor *a = nl_lua_totensor(L, 1), *b = nl_lua_totensor(L, 2);
    if (!a && !b) return luaL_typeerror(L, 1, NL_TENSOR_MT);
    if (!a && lua_type(L, 1) != LUA_TNUMBER) return luaL_typeerror(L, 1, "Tensor or number");
    if (!b && lua_type(L, 2) != LUA_TNUMBER) return luaL_typeerror(L, 2, "Tensor or number");
    nl_tensor **box = nl_lua_newbox(L);
    if (a && b) *box = nl_binary_new(op, a, b);
    else if (a) *box = nl_binary_scalar_new(op, a, lua_tonumber(L, 2), false);
    else *box = nl_binary_scalar_new(op, b, lua_tonumber(L, 1), true);
    if (!*box) return nl_dsl_core_error(L);
    return 1;
}

#define BINARY(name, op) \
    static int t_##name(lua_State *L) { return binary(L, op); }
BINARY(add, NL_BIN_ADD)
BINARY(sub, NL_BIN_SUB)
BINARY(mul, NL_BIN_MUL)
BINARY(div, NL_BIN_DIV)
BINARY(pow, NL_BIN_POW)
BINARY(maximum, NL_BIN_MAX)
BINARY(minimum, NL_BIN_MIN)
BINARY(eq, NL_BIN_EQ)
BINARY(ne, NL_BIN_NE)
BINARY(lt, NL_BIN_LT)
BINARY(le, NL_BIN_LE)
BINARY(gt, NL_BIN_GT)
BINARY(ge, NL_BIN_GE)

static int unary(lua_State *L, nl_unop op)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_unary_new(op, t))) return nl_dsl_core_error(L);
    return 1;
}

#define UNARY(name, op) \
    static int t_##name(lua_State *L) { return unary(L, op); }
UNARY(neg, NL_UN_NEG)
UNARY(relu, NL_UN_RELU)
UNARY(exp, NL_UN_EXP)
UNARY(log, NL_UN_LOG)
UNARY(abs, NL_UN_ABS)
UNARY(sqrt, NL_UN_SQRT)
UNARY(tanh, NL_UN_TANH)
UNARY(sigmoid, NL_UN_SIGMOID)

/* t:op() over everything returns a Lua number (argmax: the 1-based flat index), whatever
 * keepdim says; t:op(dim [, keepdim]) returns a tensor (argmax: 1-based i32 indices). */
static int reduce(lua_State *L, nl_redop op, const char *fname)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    const bool extreme = op == NL_RED_MAX || op == NL_RED_MIN;
    if (extreme && nl_lua_totensor(L, 2)) /* max/min of two tensors: elementwise, as torch.max(a, b) */
        return binary(L, op == NL_RED_MAX ? NL_BIN_MAX : NL_BIN_MIN);
    bool all = lua_isnoneornil(L, 2);
    int dim = all ? -1 : nl_lua_checkdim(L, 2, t, fname);
    bool keepdim = !all && lua_toboolean(L, 3); /* a number has no dimensions to keep */
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_reduce_new(op, t, dim, keepdim))) return nl_dsl_core_error(L);
    if (all) {
        double v;
        check_status(L, nl_tensor_get(*box, NULL, &v));
        if (op == NL_RED_ARGMAX || op == NL_RED_ARGMIN) lua_pushinteger(L, (lua_Integer)v + 1);
        else nl_lua_pushvalue(L, (*box)->dtype, v);
    } else if (op == NL_RED_ARGMAX || op == NL_RED_ARGMIN) {
        check_status(L, nl_binary_scalar(NL_BIN_ADD, *box, *box, 1, false));
    } else if (extreme) { /* values and 1-based indices, as PyTorch's (values, indices) */
        nl_tensor **idx = nl_lua_newbox(L);
        if (!(*idx = nl_reduce_new(op == NL_RED_MAX ? NL_RED_ARGMAX : NL_RED_ARGMIN, t, dim, keepdim)))
            return nl_dsl_core_error(L);
        check_status(L, nl_binary_scalar(NL_BIN_ADD, *idx, *idx, 1, false));
        return 2;
    }
    return 1;
}

#define REDUCE(name, op) \
    static int t_##name(lua_State *L) { return reduce(L, op, #name); }
REDUCE(sum, NL_RED_SUM)
REDUCE(mean, NL_RED_MEAN)
REDUCE(max, NL_RED_MAX)
REDUCE(min, NL_RED_MIN)
REDUCE(argmax, NL_RED_ARGMAX)
REDUCE(argmin, NL_RED_ARGMIN)

static int t_matmul(lua_State *L)
{
    nl_tensor *a = nl_lua_checktensor(L, 1), *b = nl_lua_checktensor(L, 2);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_matmul_new(a, b))) return nl_dsl_core_error(L);
    return 1;
}

/* ---------------------------------------------------------------- printing -------------- */

enum { EDGE = 3, SUMMARIZE_ABOVE = 1000, LINE_WIDTH = 80 };

/* State of one tensor print: the values shown (all, or the edges of each dim when
 * summarizing) in row-major order, and the common number format. */
typedef struct {
    luaL_Buffer *b;
    const nl_tensor *t;
    bool summarize;
    const double *vals;
    size_t next;
    const char *fmt;
    int width;
} printer;

/* How many entries of a dim of size n are shown, and the index of the k-th one. */
static int64_t shown_count(const printer *p, int64_t n) { return p->summarize && n > 2 * EDGE ? 2 * EDGE : n; }
static int64_t shown_index(const printer *p, int64_t n, int64_t k)
{
    return p->summarize && n > 2 * EDGE && k >= EDGE ? n - 2 * EDGE + k : k;
}

/* The one number formatter: nan and inf spelled alike whatever the sign bit. */
static int format_value(char *buf, size_t cap, double v, const char *fmt)
{
    if (isnan(v)) return snprintf(buf, cap, "nan");
    if (isinf(v)) return snprintf(buf, cap, v < 0 ? "-inf" : "inf");
    return snprintf(buf, cap, fmt, v);
}

/* Chooses the format as PyTorch does: integers as such; floats with 4 decimals, or in
 * scientific notation when the nonzero magnitudes span more than 1000x or reach 1e8. */
static void choose_format(printer *p, size_t count)
{
    char buf[64];
    if (!nl_dtype_info(p->t->dtype)->is_float) {
        p->fmt = "%.0f";
    } else {
        double lo = INFINITY, hi = 0;
        for (size_t i = 0; i < count; i++) {
            double a = fabs(p->vals[i]);
            if (isfinite(a) && a > 0) lo = a < lo ? a : lo, hi = a > hi ? a : hi;
        }
        bool sci = hi > 0 && (hi / lo > 1000 || hi >= 1e8 || lo < 1e-4);
        p->fmt = sci ? "%.4e" : "%.4f";
    }
    p->width = 1;
    for (size_t i = 0; i < count; i++) {
        int w = format_value(buf, sizeof buf, p->vals[i], p->fmt);
        if (w > p->width) p->width = w;
    }
}

static void add_spaces(luaL_Buffer *b, int n)
{
    while (n-- > 0) luaL_addchar(b, ' ');
}

static void add_next_value(printer *p)
{
    char buf[64];
    int w = format_value(buf, sizeof buf, p->vals[p->next++], p->fmt);
    add_spaces(p->b, p->width - w);
    luaL_addlstring(p->b, buf, (size_t)w);
}

/* Writes the separator before entry k of a row at depth d: ", " within a line of values,
 * else a comma, newlines (one, or ndim-d-1 between blocks) and the indent. */
static void separate(printer *p, int d, int64_t k, int64_t per_line)
{
    bool last = d == p->t->ndim - 1;
    if (k == 0) return;
    luaL_addchar(p->b, ',');
    if (last && k % per_line != 0) {
        luaL_addchar(p->b, ' ');
        return;
    }
    for (int i = last ? 1 : p->t->ndim - 1 - d; i > 0; i--) luaL_addchar(p->b, '\n');
    add_spaces(p->b, d + 1);
}

/* Emits the sub-array at depth d (PyTorch's _tensor_str_with_formatter): a row of values
 * wrapped to LINE_WIDTH, or nested rows; "..." stands for the entries a summary leaves out
 * (in a row it takes no place of its own, so a summarized row stays on one line). */
static void emit(printer *p, int d)
{
    int64_t n = p->t->shape[d], shown = shown_count(p, n);
    bool last = d == p->t->ndim - 1;
    int64_t per_line = (LINE_WIDTH - d) / (p->width + 2);
    if (per_line < 1) per_line = 1;
    luaL_addchar(p->b, '[');
    for (int64_t k = 0; k < shown; k++) {
        if (shown < n && k == EDGE) {
            if (last) {
                luaL_addstring(p->b, ",  ...");
            } else {
                separate(p, d, k, per_line);
                luaL_addstring(p->b, "...");
            }
        }
        separate(p, d, k, per_line);
        if (last) add_next_value(p);
        else emit(p, d + 1);
    }
    luaL_addchar(p->b, ']');
}

static int t_tostring(lua_State *L)
{
    nl_tensor **boxed = luaL_checkudata(L, 1, NL_TENSOR_MT);
    nl_tensor *t = *boxed;
    if (!t) {
        lua_pushliteral(L, "tensor (closed)");
        return 1;
    }
    printer p = {.t = t, .summarize = nl_tensor_numel(t) > SUMMARIZE_ABOVE};
    /* Gather the shown values: an odometer k over the shown entries of each dim. */
    int64_t counts[NL_MAX_DIMS], k[NL_MAX_DIMS] = {0}, idx[NL_MAX_DIMS];
    size_t count = 1;
    for (int d = 0; d < t->ndim; d++) {
        counts[d] = shown_count(&p, t->shape[d]);
        count *= (size_t)counts[d];
    }
    double *vals = lua_newuserdatauv(L, (count ? count : 1) * sizeof *vals, 0);
    for (size_t i = 0; i < count; i++) {
        for (int d = 0; d < t->ndim; d++) idx[d] = shown_index(&p, t->shape[d], k[d]);
        check_status(L, nl_tensor_get(t, idx, &vals[i]));
        for (int d = t->ndim - 1; d >= 0 && ++k[d] == counts[d]; d--) k[d] = 0;
    }
    p.vals = vals;
    choose_format(&p, count);

    luaL_Buffer b;
    char shape[NL_MAX_DIMS * 24];
    luaL_buffinit(L, &b);
    p.b = &b;
    lua_pushfstring(L, "tensor %s %s %s\n", nl_dtype_info(t->dtype)->name,
                    nl_shape_str(shape, sizeof shape, t->ndim, t->shape),
                    nl_device_name(nl_tensor_device(t)));
    luaL_addvalue(&b);
    if (t->ndim == 0) {
        p.width = 0;
        add_next_value(&p);
    } else if (count == 0) {
        luaL_addstring(&b, "[]");
    } else {
        emit(&p, 0);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---------------------------------------------------------------- lifetime -------------- */

/* __gc and __close: drop the box's reference (once). */
static int t_release(lua_State *L)
{
    nl_tensor **box = luaL_checkudata(L, 1, NL_TENSOR_MT);
    nl_tensor_release(*box);
    *box = NULL;
    return 0;
}

/* __eq: two boxes of the same C tensor (t:contiguous() of a contiguous t is t). */
static int t_identical(lua_State *L)
{
    nl_tensor **a = luaL_testudata(L, 1, NL_TENSOR_MT), **b = luaL_testudata(L, 2, NL_TENSOR_MT);
    lua_pushboolean(L, a && b && *a && *a == *b);
    return 1;
}

/* __lt, __le: Lua wants one true or false, which a tensor is not; the error says what to write
 * instead (x[1][2] > 0 on a 0-d element is the usual slip). */
static int t_order(lua_State *L)
{
    return nl_dsl_error(L, "Tensor: < <= > >= do not compare tensors: t:item() is the number in a "
                           "one-element tensor (x[i][j]:item() > 0); t:gt(x), t:ge(x), t:lt(x), "
                           "t:le(x) compare element by element");
}

/* ---------------------------------------------------------------- registration ---------- */

static const nl_dsl_fn tensor_fns[] = {
    {"zeros", t_zeros, "tensor.zeros(size... | {sizes} [, dtype])",
     "A tensor of zeros; dtype is \"f32\" (default), \"i8\", \"i32\" or \"u8\".",
     "tensor.zeros(2, 3)"},
    {"ones", t_ones, "tensor.ones(size... | {sizes} [, dtype])", "A tensor of ones.",
     "tensor.ones({2, 3}, \"i32\")"},
    {"full", t_full, "tensor.full(size... | {sizes}, value [, dtype])",
     "A tensor with every element set to value.", "tensor.full({2, 2}, 7)"},
    {"rand", t_rand, "tensor.rand(size... | {sizes})",
     "f32 numbers drawn uniformly from [0, 1) (see tensor.seed).", "tensor.rand(4)"},
    {"randn", t_randn, "tensor.randn(size... | {sizes})",
     "f32 numbers drawn from the normal distribution N(0, 1) (see tensor.seed).",
     "tensor.randn(2, 3)"},
    {"arange", t_arange, "tensor.arange([start,] stop [, step])",
     "A 1-D f32 tensor start, start+step, ... up to but excluding stop, as NumPy: arange(5) is 0..4.",
     "tensor.arange(1, 2, 0.25)"},
    {"from", t_from, "tensor.from(nested_table | number [, dtype])",
     "A tensor holding the numbers of a rectangular nested table (f32 unless dtype is given).",
     "tensor.from{{1, 2}, {3, 4}}"},
    {"seed", t_seed, "tensor.seed(n)",
     "Seeds the random generator: the same seed gives the same numbers on every run and thread count.",
     "tensor.seed(42)"},
    {"load", t_load, "tensor.load(path) -> Tensor",
     "Reads a NumPy .npy file (f32, f64 as f32, i8, u8, i32, i64 as i32, bool as u8).",
     "tensor.ones(3):save(\"x.npy\"); print(tensor.load(\"x.npy\"))"},
    {"is_tensor", t_is_tensor, "tensor.is_tensor(x) -> boolean", "Whether x is a Tensor.",
     "tensor.is_tensor(tensor.zeros(1))"},
    {"matmul", t_matmul, "tensor.matmul(a, b) -> Tensor",
     "Matrix product of f32 tensors: 1-D, 2-D, and batched 3-D (B,M,K)x(B,K,N).",
     "tensor.matmul(tensor.ones(2, 3), tensor.ones(3, 4))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn tensor_methods[] = {
    {"shape", t_shape, "t:shape() -> {sizes}", "The sizes of t's dims as a table.",
     "tensor.zeros(2, 3):shape()"},
    {"size", t_size, "t:size([dim]) -> n | {sizes}",
     "The size of one dim (1-based; negative counts from the end); without dim, all of them (as shape).",
     "tensor.zeros(2, 3):size(2)"},
    {"dim", t_dim, "t:dim() -> n", "The number of dims.", "tensor.zeros(2, 3):dim()"},
    {"numel", t_numel, "t:numel() -> n", "The number of elements.", "tensor.zeros(2, 3):numel()"},
    {"dtype", t_dtype, "t:dtype() -> string", "The element type: \"f32\", \"i8\", \"i32\" or \"u8\".",
     "tensor.zeros(2):dtype()"},
    {"device", t_device, "t:device() -> string", "Where t lives: \"cpu\", \"sim\", \"cuda\" (device 0) or a numbered device such as \"sim:1\".",
     "tensor.zeros(2):device()"},
    {"reshape", t_reshape, "t:reshape(size... | {sizes}) -> Tensor",
     "The same elements in another shape; one size may be -1 (inferred). A view when t is "
     "contiguous, a copy otherwise.",
     "tensor.arange(6):reshape(2, -1)"},
    {"transpose", t_transpose, "t:transpose(dim1, dim2) -> Tensor",
     "A view with two dims swapped (1-based).", "tensor.zeros(2, 3, 4):transpose(1, 3):shape()"},
    {"t", t_t, "t:t() -> Tensor", "The transpose of a 2-D tensor (a view).",
     "tensor.from{{1, 2}, {3, 4}}:t()"},
    {"slice", t_slice, "t:slice(dim, from [, to]) -> Tensor",
     "A view of entries from..to (inclusive, 1-based; negative counts from the end, as "
     "string.sub) along dim.",
     "tensor.arange(12):reshape(3, 4):slice(1, 2, 3)"},
    {"get", t_get, "t:get(i, j, ...) -> number", "One element, by 1-based indices (one per dim).",
     "tensor.from{{1, 2}, {3, 4}}:get(2, 1)"},
    {"set", t_set, "t:set(value, i, j, ...) -> t", "Writes one element (value first, then the indices).",
     "tensor.zeros(2, 2):set(5, 1, 2)"},
    {"item", t_item, "t:item() -> number", "The value of a one-element tensor.",
     "tensor.ones(1):item()"},
    {"clone", t_clone, "t:clone() -> Tensor", "A contiguous copy that shares nothing with t.",
     "tensor.ones(2):clone()"},
    {"contiguous", t_contiguous, "t:contiguous() -> Tensor",
     "t itself when its elements are packed in order, otherwise a packed copy.",
     "tensor.ones(2, 3):t():contiguous()"},
    {"copy", t_copy, "t:copy(src) -> t", "Copies src's elements into t in place (same shape).",
     "tensor.zeros(2, 2):copy(tensor.ones(2, 2))"},
    {"fill", t_fill, "t:fill(value) -> t", "Sets every element to value in place.",
     "tensor.zeros(3):fill(2)"},
    {"totable", t_totable, "t:totable() -> table", "The elements as nested Lua tables.",
     "tensor.from{{1, 2}, {3, 4}}:totable()"},
    {"to", t_to, "t:to(dtype | device) -> Tensor",
     "A copy with another dtype (\"f32\", \"i8\", \"i32\", \"u8\": integers round and saturate) or "
     "on another device (\"cpu\", \"cuda\").",
     "tensor.from{1.6, -1.5, 300}:to(\"i8\")"},
    {"save", t_save, "t:save(path)", "Writes t to a NumPy .npy file (atomically).",
     "tensor.ones(3):save(\"x.npy\")"},
    {"add", t_add, "t:add(x) -> Tensor",
     "t + x elementwise, x a tensor (broadcast as NumPy) or a number; also t + x.",
     "tensor.ones(2, 3) + tensor.from{1, 2, 3}"},
    {"sub", t_sub, "t:sub(x) -> Tensor", "t - x elementwise; also t - x, 2 - t, -t.",
     "2 - tensor.ones(3)"},
    {"mul", t_mul, "t:mul(x) -> Tensor", "t * x elementwise (not a matrix product); also t * x.",
     "tensor.arange(3) * 2"},
    {"div", t_div, "t:div(x) -> Tensor", "t / x elementwise; also t / x.", "tensor.arange(3) / 2"},
    {"pow", t_pow, "t:pow(x) -> Tensor", "t to the power x elementwise; also t ^ x.",
     "tensor.arange(4):pow(2)"},
    {"maximum", t_maximum, "t:maximum(x) -> Tensor", "The larger of t and x, elementwise.",
     "tensor.from{-1, 2}:maximum(0)"},
    {"minimum", t_minimum, "t:minimum(x) -> Tensor", "The smaller of t and x, elementwise.",
     "tensor.from{-1, 2}:minimum(0)"},
    {"eq", t_eq, "t:eq(x) -> Tensor (u8)",
     "1 where t == x elementwise, else 0. (t == u compares identity, not elements.)",
     "tensor.from{1, 2, 3}:eq(2)"},
    {"ne", t_ne, "t:ne(x) -> Tensor (u8)", "1 where t ~= x elementwise, else 0.",
     "tensor.from{1, 2, 3}:ne(2)"},
    {"lt", t_lt, "t:lt(x) -> Tensor (u8)", "1 where t < x elementwise, else 0.",
     "tensor.from{1, 2, 3}:lt(2)"},
    {"le", t_le, "t:le(x) -> Tensor (u8)", "1 where t <= x elementwise, else 0.",
     "tensor.from{1, 2, 3}:le(2)"},
    {"gt", t_gt, "t:gt(x) -> Tensor (u8)", "1 where t > x elementwise, else 0.",
     "tensor.from{1, 2, 3}:gt(2)"},
    {"ge", t_ge, "t:ge(x) -> Tensor (u8)", "1 where t >= x elementwise, else 0.",
     "tensor.from{1, 2, 3}:ge(2)"},
    {"neg", t_neg, "t:neg() -> Tensor", "-t elementwise; also -t.", "tensor.arange(3):neg()"},
    {"relu", t_relu, "t:relu() -> Tensor", "max(t, 0) elementwise.", "tensor.from{-1, 2}:relu()"},
    {"exp", t_exp, "t:exp() -> Tensor", "e^t elementwise.", "tensor.arange(3):exp()"},
    {"log", t_log, "t:log() -> Tensor", "The natural logarithm elementwise.",
     "tensor.from{1, 10}:log()"},
    {"abs", t_abs, "t:abs() -> Tensor", "|t| elementwise.", "tensor.from{-1, 2}:abs()"},
    {"sqrt", t_sqrt, "t:sqrt() -> Tensor", "The square root elementwise.", "tensor.from{4, 9}:sqrt()"},
    {"tanh", t_tanh, "t:tanh() -> Tensor", "The hyperbolic tangent elementwise.",
     "tensor.from{-1, 0, 1}:tanh()"},
    {"sigmoid", t_sigmoid, "t:sigmoid() -> Tensor", "1 / (1 + e^-t) elementwise.",
     "tensor.from{-1, 0, 1}:sigmoid()"},
    {"sum", t_sum, "t:sum([dim [, keepdim]]) -> number | Tensor",
     "The sum of all elements (a number), or along a 1-based dim (a tensor; keepdim keeps it "
     "with size 1).",
     "tensor.from{{1, 2}, {3, 4}}:sum(1)"},
    {"mean", t_mean, "t:mean([dim [, keepdim]]) -> number | Tensor",
     "The mean of all elements, or along a dim (as sum).", "tensor.from{{1, 2}, {3, 4}}:mean(2, true)"},
    {"max", t_max, "t:max([dim [, keepdim]] | other) -> number | values, indices | Tensor",
     "The largest element; along a dim the largest values and their 1-based indices (i32), as "
     "PyTorch's max(dim); with a tensor, the elementwise larger of the two (as maximum).",
     "local v, i = tensor.from{{1, 5}, {3, 4}}:max(2)"},
    {"min", t_min, "t:min([dim [, keepdim]] | other) -> number | values, indices | Tensor",
     "The smallest element; along a dim the smallest values and their 1-based indices; with a "
     "tensor, the elementwise smaller of the two.",
     "tensor.from{{1, 5}, {3, 4}}:min(tensor.full({2, 2}, 2))"},
    {"argmax", t_argmax, "t:argmax([dim [, keepdim]]) -> integer | Tensor (i32)",
     "The 1-based flat index of the largest element, or 1-based indices of the largest along a dim.",
     "tensor.from{{1, 5}, {3, 4}}:argmax(2)"},
    {"argmin", t_argmin, "t:argmin([dim [, keepdim]]) -> integer | Tensor (i32)",
     "The 1-based flat index of the smallest element, or 1-based indices of the smallest along a dim.",
     "tensor.from{{1, 5}, {3, 4}}:argmin(1)"},
    {"matmul", t_matmul, "t:matmul(b) -> Tensor",
     "Matrix product (as tensor.matmul): 1-D, 2-D and batched 3-D f32 tensors.",
     "tensor.ones(2, 3):matmul(tensor.ones(3))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg tensor_metamethods[] = {
    {"__add", t_add},
    {"__sub", t_sub},
    {"__mul", t_mul},
    {"__div", t_div},
    {"__pow", t_pow},
    {"__unm", t_neg},
    {"__len", t_len},
    {"__eq", t_identical},
    {"__lt", t_order},
    {"__le", t_order},
    {"__tostring", t_tostring},
    {"__gc", t_release},
    {"__close", t_release},
    {NULL, NULL},
};

int nl_open_tensor(lua_State *L)
{
    luaL_newmetatable(L, NL_TENSOR_MT); /* also sets __name = "Tensor" */
    luaL_setfuncs(L, tensor_metamethods, 0);
    lua_createtable(L, 0, (int)(sizeof tensor_methods / sizeof tensor_methods[0]));
    for (const nl_dsl_fn *f = tensor_methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "methods"); /* the REPL completes methods from it; __index reads it */
    lua_pop(L, 1);
    nl_dsl_register(L, "tensor", tensor_fns);
    nl_dsl_register_methods(L, NL_TENSOR_MT, tensor_methods);
    nl_open_tensor_ops(L);
    return 0;
}
