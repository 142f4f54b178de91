/* tensor_ops.c: the Tensor methods PyTorch and Torch7 users reach for beyond tensor.c's: views
 * (permute, unsqueeze, squeeze, view, flatten, expand), joins and splits, selection (where,
 * gather, index_select, masked_fill, sort, topk), math along a dim (softmax, cumsum, norm, var,
 * std, clamp, outer), and indexing: t[i] is entry i of dim 1 as a view, t[i] = v writes it; an
 * unknown method name raises an error that names it. Dims and indices are 1-based, negative
 * ones count from the end. */
#include "dsl.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Raises the core's error when a core call failed. */
static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* Boxes a core result (a new reference, or NULL with the error set) on the stack. */
static int push_new(lua_State *L, nl_tensor **box, nl_tensor *t)
{
    if (!(*box = t)) return nl_dsl_core_error(L);
    return 1;
}

/* An optional dim argument: def (0-based) when absent. */
static int opt_dim(lua_State *L, int arg, const nl_tensor *t, int def, const char *fname)
{
    return lua_isnoneornil(L, arg) ? def : nl_lua_checkdim(L, arg, t, fname);
}

/* A dim for a new size-1 dim of a tensor with ndim dims: 1..ndim+1, negative from the end
 * (-1: after the last), as PyTorch's unsqueeze and stack. */
static int check_new_dim(lua_State *L, int arg, int ndim, const char *fname)
{
    lua_Integer d = luaL_checkinteger(L, arg);
    lua_Integer j = d < 0 ? d + ndim + 2 : d;
    if (j < 1 || j > ndim + 1)
        nl_dsl_error(L, "%s: dim %I out of range for a new dim of a %d-D tensor (1..%d)", fname, d, ndim,
                     ndim + 1);
    return (int)j - 1;
}

/* A number argument as an integer count (>= min). */
static int64_t check_count(lua_State *L, int arg, int64_t min, const char *fname, const char *what)
{
    lua_Number v = luaL_checknumber(L, arg);
    if (!(v == floor(v) && v >= (lua_Number)min && v <= 0x1p53))
        nl_dsl_error(L, "%s: %s must be a whole number >= %I, got %f", fname, what, (lua_Integer)min, v);
    return (int64_t)v;
}

/* ---------------------------------------------------------------- views ----------------- */

static int t_permute(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    bool table = lua_type(L, 2) == LUA_TTABLE;
    int n = table ? (int)lua_rawlen(L, 2) : lua_gettop(L) - 1;
    if (n != t->ndim)
        nl_dsl_error(L, "permute: %d dims given for a %d-D tensor (give each dim once)", n, t->ndim);
    int perm[NL_MAX_DIMS];
    bool seen[NL_MAX_DIMS] = {false};
    for (int k = 0; k < n; k++) {
        if (table) { /* the entry, checked in slot 3 */
            lua_settop(L, 2);
            lua_rawgeti(L, 2, k + 1);
            perm[k] = nl_lua_checkdim(L, 3, t, "permute");
        } else {
            perm[k] = nl_lua_checkdim(L, 2 + k, t, "permute");
        }
        if (seen[perm[k]]) nl_dsl_error(L, "permute: dim %d given twice", perm[k] + 1);
        seen[perm[k]] = true;
    }
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_permute(t, perm));
}

static int t_unsqueeze(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = check_new_dim(L, 2, t->ndim, "unsqueeze");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_unsqueeze(t, d));
}

static int t_squeeze(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = opt_dim(L, 2, t, -1, "squeeze");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_squeeze(t, d));
}

static int t_view(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t shape[NL_MAX_DIMS];
    int nd = nl_lua_checkshape(L, 2, lua_gettop(L), shape, true, "view");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_view(t, nd, shape));
}

static int t_flatten(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int start = 0, end = t->ndim ? t->ndim - 1 : 0;
    if (t->ndim) {
        start = opt_dim(L, 2, t, start, "flatten");
        end = opt_dim(L, 3, t, end, "flatten");
    }
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_flatten(t, start, end));
}

static int t_expand(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t shape[NL_MAX_DIMS];
    int nd = nl_lua_checkshape(L, 2, lua_gettop(L), shape, true, "expand");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_expand(t, nd, shape));
}

static int t_repeat(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int64_t reps[NL_MAX_DIMS];
    int n = nl_lua_checkshape(L, 2, lua_gettop(L), reps, false, "tile");
    if (n < t->ndim) { /* fewer counts than dims: leading 1s, as torch.tile */
        memmove(reps + t->ndim - n, reps, (size_t)n * sizeof *reps);
        for (int d = 0; d < t->ndim - n; d++) reps[d] = 1;
        n = t->ndim;
    }
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_repeat(t, n, reps));
}

/* ---------------------------------------------------------------- joins and splits ------ */

/* The tensors of the list at arg (a Lua sequence), borrowed; their count in *n. The array lives
 * in a userdata pushed on the stack. */
static const nl_tensor **check_list(lua_State *L, int arg, int *n, const char *fname)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Unsigned len = lua_rawlen(L, arg);
    if (len == 0) nl_dsl_error(L, "%s: the list of tensors is empty", fname);
    if (len > 1u << 20) nl_dsl_error(L, "%s: %I tensors are too many", fname, (lua_Integer)len);
    const nl_tensor **ts = lua_newuserdatauv(L, len * sizeof *ts, 0);
    for (lua_Unsigned k = 0; k < len; k++) {
        lua_rawgeti(L, arg, (lua_Integer)k + 1);
        ts[k] = nl_lua_totensor(L, -1);
        if (!ts[k])
            nl_dsl_error(L, "%s: entry %I of the list is a %s, expected a Tensor", fname, (lua_Integer)k + 1,
                         luaL_typename(L, -1));
        lua_pop(L, 1); /* the list keeps the box alive */
    }
    *n = (int)len;
    return ts;
}

static int join(lua_State *L, bool stack)
{
    const char *fname = stack ? "stack" : "cat";
    lua_settop(L, 2); /* check_list pushes its array above the arguments */
    int n;
    const nl_tensor **ts = check_list(L, 1, &n, fname);
    int d = stack ? (lua_isnoneornil(L, 2) ? 0 : check_new_dim(L, 2, ts[0]->ndim, fname))
                  : (lua_isnoneornil(L, 2) ? 0 : nl_lua_checkdim(L, 2, ts[0], fname));
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, stack ? nl_tensor_stack(n, ts, d) : nl_tensor_cat(n, ts, d));
}

static int t_cat(lua_State *L) { return join(L, false); }
static int t_stack(lua_State *L) { return join(L, true); }

/* Pushes a table of views of t along dim, of the given sizes (n of them). */
static int push_pieces(lua_State *L, nl_tensor *t, int dim, const int64_t *sizes, int64_t n)
{
    lua_createtable(L, n < 1 << 16 ? (int)n : 1 << 16, 0);
    int64_t at = 0;
    for (int64_t k = 0; k < n; k++) {
        nl_tensor **box = nl_lua_newbox(L);
        push_new(L, box, nl_tensor_slice(t, dim, at, at + sizes[k]));
        lua_rawseti(L, -2, k + 1);
        at += sizes[k];
    }
    return 1;
}

/* split(size | {sizes}, dim): pieces of size (the last may be shorter), or of the sizes given
 * (summing to the dim's size). chunk(n, dim): n pieces of equal size rounded up (fewer when
 * they run out), as PyTorch. */
static int t_split(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "split: a 0-d tensor has no dim to split");
    int d = opt_dim(L, 3, t, 0, "split");
    const int64_t len = t->shape[d];
    int64_t n, *sizes;
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_Unsigned m = lua_rawlen(L, 2);
        if (m == 0 || m > 1u << 20) nl_dsl_error(L, "split: give 1 to %d sizes, got %I", 1 << 20, (lua_Integer)m);
        n = (int64_t)m;
        sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
        int64_t sum = 0;
        for (int64_t k = 0; k < n; k++) {
            if (lua_rawgeti(L, 2, k + 1) != LUA_TNUMBER)
                nl_dsl_error(L, "split: size %I is a %s, expected a number", (lua_Integer)k + 1,
                             luaL_typename(L, -1));
            sizes[k] = check_count(L, lua_gettop(L), 0, "split", "a size");
            lua_pop(L, 1);
            sum += sizes[k];
        }
        if (sum != len)
            nl_dsl_error(L, "split: the sizes add up to %I, but dim %d has size %I", (lua_Integer)sum, d + 1,
                         (lua_Integer)len);
    } else {
        int64_t size = check_count(L, 2, 1, "split", "the size");
        n = len == 0 ? 1 : (len + size - 1) / size;
        sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
        for (int64_t k = 0; k < n; k++) sizes[k] = len - k * size < size ? len - k * size : size;
    }
    return push_pieces(L, t, d, sizes, n);
}

static int t_chunk(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "chunk: a 0-d tensor has no dim to split");
    int64_t chunks = check_count(L, 2, 1, "chunk", "the number of chunks");
    int d = opt_dim(L, 3, t, 0, "chunk");
    const int64_t len = t->shape[d], size = len == 0 ? 0 : (len + chunks - 1) / chunks;
    const int64_t n = size == 0 ? (len == 0 ? (chunks < 1 << 20 ? chunks : 1 << 20) : 0) : (len + size - 1) / size;
    int64_t *sizes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *sizes, 0);
    for (int64_t k = 0; k < n; k++) sizes[k] = size == 0 ? 0 : len - k * size < size ? len - k * size : size;
    return push_pieces(L, t, d, sizes, n);
}

/* ---------------------------------------------------------------- selection ------------- */

/* The tensor at arg, or a number there as a 0-d tensor on dev (dtype like: kept when the number
 * is a whole one it holds, else f32), boxed on the stack. */
static nl_tensor *tensor_or_number(lua_State *L, int arg, nl_dtype like, nl_device dev, const char *fname)
{
    nl_tensor *t = nl_lua_totensor(L, arg);
    if (t) return t;
    if (lua_type(L, arg) != LUA_TNUMBER)
        nl_dsl_error(L, "%s: argument %d is a %s, expected a Tensor or a number", fname, arg, luaL_typename(L, arg));
    double v = lua_tonumber(L, arg);
    const nl_dtype_traits *ti = nl_dtype_info(like);
    nl_dtype dt = ti->is_float || (v == floor(v) && v >= ti->min && v <= ti->max) ? like : NL_F32;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(dt, 0, NULL, dev))) nl_dsl_core_error(L);
    check_status(L, nl_fill(*box, v));
    return *box;
}

/* tensor.where(cond, a, b) and t:where(cond, other) (= tensor.where(cond, t, other)). */
static int where(lua_State *L, int c, int a, int b)
{
    nl_tensor *cond = nl_lua_checktensor(L, c);
    nl_tensor *ta = nl_lua_totensor(L, a), *tb = nl_lua_totensor(L, b);
    nl_dtype like = ta ? ta->dtype : tb ? tb->dtype : NL_F32;
    ta = tensor_or_number(L, a, like, nl_tensor_device(cond), "where");
    tb = tensor_or_number(L, b, like, nl_tensor_device(cond), "where");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_where_new(cond, ta, tb));
}

static int t_where(lua_State *L) { return where(L, 1, 2, 3); }
static int t_where_method(lua_State *L) { return where(L, 2, 1, 3); }

static int t_masked_fill(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1), *mask = nl_lua_checktensor(L, 2);
    double v = luaL_checknumber(L, 3);
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_masked_fill_new(t, mask, v));
}

static int t_gather(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = nl_lua_checkdim(L, 2, t, "gather");
    nl_tensor *index = nl_lua_checktensor(L, 3);
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_gather_new(t, d, index, 1));
}

static int t_index_select(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = nl_lua_checkdim(L, 2, t, "index_select");
    nl_tensor *index = nl_lua_totensor(L, 3);
    if (!index && lua_type(L, 3) == LUA_TTABLE) { /* a plain list of indices */
        lua_Unsigned n = lua_rawlen(L, 3);
        int64_t len = (int64_t)n;
        nl_tensor **ibox = nl_lua_newbox(L);
        if (!(*ibox = nl_tensor_empty(NL_F32, 1, &len, NL_CPU))) nl_dsl_core_error(L);
        for (int64_t k = 0; k < len; k++) {
            lua_rawgeti(L, 3, k + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                nl_dsl_error(L, "index_select: entry %I of the indices is a %s, expected a number",
                             (lua_Integer)k + 1, luaL_typename(L, -1));
            check_status(L, nl_tensor_set(*ibox, &k, lua_tonumber(L, -1)));
            lua_pop(L, 1);
        }
        index = *ibox;
        if (nl_tensor_device(t) != NL_CPU) {
            nl_tensor **moved = nl_lua_newbox(L);
            if (!(*moved = nl_tensor_to_device(index, nl_tensor_device(t)))) nl_dsl_core_error(L);
            index = *moved;
        }
    }
    if (!index) luaL_typeerror(L, 3, "Tensor or table of indices");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_index_select_new(t, d, index, 1));
}

/* Pushes values and indices of sort / topk. */
static int push_sorted(lua_State *L, nl_tensor *t, int d, int64_t k, bool largest)
{
    nl_tensor **vbox = nl_lua_newbox(L), **ibox = nl_lua_newbox(L);
    check_status(L, nl_sort_new(t, d, k, largest, 1, vbox, ibox));
    return 2;
}

static int t_sort(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "sort: a 0-d tensor has nothing to sort");
    int d = opt_dim(L, 2, t, t->ndim - 1, "sort");
    return push_sorted(L, t, d, -1, lua_toboolean(L, 3));
}

static int t_topk(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "topk: a 0-d tensor has no dim to search");
    int64_t k = check_count(L, 2, 0, "topk", "k");
    int d = opt_dim(L, 3, t, t->ndim - 1, "topk");
    return push_sorted(L, t, d, k, lua_isnoneornil(L, 4) || lua_toboolean(L, 4));
}

/* ---------------------------------------------------------------- math ------------------ */

static int softmax(lua_State *L, bool log)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    const char *fname = log ? "log_softmax" : "softmax";
    if (t->ndim == 0) nl_dsl_error(L, "%s: a 0-d tensor has no dim", fname);
    int d = opt_dim(L, 2, t, t->ndim - 1, fname);
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_softmax_new(t, d, log));
}

static int t_softmax(lua_State *L) { return softmax(L, false); }
static int t_log_softmax(lua_State *L) { return softmax(L, true); }

static int t_cumsum(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (t->ndim == 0) nl_dsl_error(L, "cumsum: a 0-d tensor has no dim");
    int d = nl_lua_checkdim(L, 2, t, "cumsum");
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_cumsum_new(t, d));
}

/* clamp(lo [, hi]): either may be nil (no bound), a number, or a tensor (broadcast). */
static int t_clamp(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    lua_settop(L, 3);
    if (lua_isnil(L, 2) && lua_isnil(L, 3)) nl_dsl_error(L, "clamp: give a lower bound, an upper bound or both");
    nl_tensor **box = nl_lua_newbox(L);
    *box = nl_tensor_retain(t);
    for (int arg = 2; arg <= 3; arg++) {
        const nl_binop op = arg == 2 ? NL_BIN_MAX : NL_BIN_MIN;
        nl_tensor *bound = nl_lua_totensor(L, arg), *next;
        if (lua_isnil(L, arg)) continue;
        if (bound) {
            next = nl_binary_new(op, *box, bound);
        } else {
            double v = luaL_checknumber(L, arg);
            if (isnan(v)) nl_dsl_error(L, "clamp: bound %d is NaN", arg - 1);
            next = nl_binary_scalar_new(op, *box, v, false);
        }
        nl_tensor_release(*box);
        if (!(*box = next)) return nl_dsl_core_error(L);
    }
    return 1; /* a new tensor: at least one bound was applied */
}

/* Pushes a reduction's result: a number over everything (dim -1), else the tensor. */
static int push_reduced(lua_State *L, nl_tensor **box, nl_tensor *r, int dim)
{
    push_new(L, box, r);
    if (dim >= 0) return 1;
    double v;
    check_status(L, nl_tensor_get(r, NULL, &v));
    lua_pushnumber(L, v);
    return 1;
}

/* norm([p [, dim [, keepdim]]]): p a number (2 by default; math.huge for the max norm). */
static int t_norm(lua_State *L)
{
    lua_settop(L, 4); /* keepdim stays in slot 4, below the boxes */
    nl_tensor *t = nl_lua_checktensor(L, 1);
    double p = luaL_optnumber(L, 2, 2);
    int d = opt_dim(L, 3, t, -1, "norm");
    nl_tensor **box = nl_lua_newbox(L);
    return push_reduced(L, box, nl_norm_new(t, p, d, d >= 0 && lua_toboolean(L, 4)), d);
}

/* var / std([dim [, unbiased [, keepdim]]]): unbiased (n - 1) unless false. */
static int variance(lua_State *L, bool std)
{
    lua_settop(L, 4);
    nl_tensor *t = nl_lua_checktensor(L, 1);
    int d = opt_dim(L, 2, t, -1, std ? "std" : "var");
    bool unbiased = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
    nl_tensor **box = nl_lua_newbox(L);
    return push_reduced(L, box, nl_var_new(t, d, d >= 0 && lua_toboolean(L, 4), unbiased, std), d);
}

static int t_var(lua_State *L) { return variance(L, false); }
static int t_std(lua_State *L) { return variance(L, true); }

static int t_outer(lua_State *L)
{
    nl_tensor *a = nl_lua_checktensor(L, 1), *b = nl_lua_checktensor(L, 2);
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_outer_new(a, b));
}

/* ---------------------------------------------------------------- indexing -------------- */

/* What PyTorch and Torch7 names that nnlab spells otherwise are called here. */
static const char *const other_names[][2] = {
    {"nElement", "numel"}, {"repeatTensor", "tile"}, {"narrow", "slice"}, {"select", "t[i]"},
    {"index", "index_select"}, {"mm", "matmul"}, {"bmm", "matmul"}, {"float", "to(\"f32\")"},
    {"int", "to(\"i32\")"}, {"long", "to(\"i32\")"}, {"byte", "to(\"u8\")"}, {"cuda", "to(\"cuda\")"},
    {"cpu", "to(\"cpu\")"}, {"tolist", "totable"}, {"numpy", "totable or save"}, {"type", "dtype"},
    {"amax", "max"}, {"amin", "min"}, {"cmax", "maximum"}, {"cmin", "minimum"}, {"clip", "clamp"},
    {"resize", "reshape"}, {"resizeAs", "reshape"}, {"zero", "fill(0)"}, {"zero_", "fill(0)"},
    {"fill_", "fill"}, {"copy_", "copy"}, {"add_", "add (nnlab's math returns new tensors)"},
    {"storage", "clone"}, {"isContiguous", "contiguous"}, {"is_contiguous", "contiguous"},
};

/* Pushes " (did you mean X?)" for a missing method name: the nnlab spelling of a PyTorch or
 * Torch7 name, or a method whose name starts with name or that name starts with; "" if none. */
static void push_hint(lua_State *L, const char *name, int methods)
{
    for (size_t k = 0; k < sizeof other_names / sizeof other_names[0]; k++) {
        if (strcmp(name, other_names[k][0]) == 0) {
            lua_pushfstring(L, " (nnlab calls it %s)", other_names[k][1]);
            return;
        }
    }
    const size_t n = strlen(name);
    const char *best = NULL;
    for (lua_pushnil(L); n >= 3 && lua_next(L, methods); lua_pop(L, 1)) {
        const char *m = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        const size_t len = strlen(m);
        bool near = len >= 3 && (strncmp(m, name, len < n ? len : n) == 0);
        if (near && (!best || strcmp(m, best) < 0)) best = m; /* the same pick on every run */
    }
    if (best) lua_pushfstring(L, " (did you mean %s?)", best);
    else lua_pushliteral(L, "");
}

/* t[i]: entry i of dim 1 (a view; 1-based, negative from the end). t.name: the method. Any
 * other key raises an error naming it (a missing method would otherwise fail later as
 * "attempt to call a nil value"). Upvalue 1: the methods table. */
static int t_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
        push_hint(L, lua_tostring(L, 2), lua_upvalueindex(1));
        return nl_dsl_error(L, "Tensor has no method or field '%s'%s; help \"Tensor\" lists the methods",
                            lua_tostring(L, 2), lua_tostring(L, -1));
    }
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return nl_dsl_error(L, "Tensor: cannot index a tensor with a %s (t[i] takes an integer)",
                            luaL_typename(L, 2));
    if (!lua_isinteger(L, 2) && lua_tonumber(L, 2) != floor(lua_tonumber(L, 2)))
        return nl_dsl_error(L, "Tensor: index %f is not an integer", lua_tonumber(L, 2));
    if (t->ndim == 0) return nl_dsl_error(L, "Tensor: a 0-d tensor cannot be indexed (item() gives its value)");
    int64_t i = nl_lua_checkindex(L, 2, t->shape[0], 0, "Tensor", false);
    nl_tensor **box = nl_lua_newbox(L);
    return push_new(L, box, nl_tensor_select(t, 0, i));
}

/* t[i] = v: writes a number, or a tensor that broadcasts to the entry's shape, into entry i. */
static int t_newindex(lua_State *L)
{
    nl_tensor *t = nl_lua_checktensor(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return nl_dsl_error(L, "Tensor: cannot set field '%s' of a tensor (t[i] = v writes entry i)",
                            luaL_tolstring(L, 2, NULL));
    if (!lua_isinteger(L, 2) && lua_tonumber(L, 2) != floor(lua_tonumber(L, 2)))
        return nl_dsl_error(L, "Tensor: index %f is not an integer", lua_tonumber(L, 2));
    if (t->ndim == 0) return nl_dsl_error(L, "Tensor: a 0-d tensor cannot be indexed (fill sets its value)");
    int64_t i = nl_lua_checkindex(L, 2, t->shape[0], 0, "Tensor", false);
    nl_tensor *src = nl_lua_totensor(L, 3);
    if (!src && lua_type(L, 3) != LUA_TNUMBER)
        return nl_dsl_error(L, "Tensor: t[i] = v takes a number or a Tensor, got a %s", luaL_typename(L, 3));
    nl_tensor **row = nl_lua_newbox(L);
    if (!(*row = nl_tensor_select(t, 0, i))) return nl_dsl_core_error(L);
    if (!src) {
        check_status(L, nl_fill(*row, lua_tonumber(L, 3)));
        return 0;
    }
    nl_tensor **wide = nl_lua_newbox(L);
    if (!(*wide = nl_tensor_expand(src, (*row)->ndim, (*row)->shape))) return nl_dsl_core_error(L);
    check_status(L, nl_copy(*row, *wide));
    return 0;
}

/* ---------------------------------------------------------------- registration ---------- */

static const nl_dsl_fn ops_fns[] = {
    {"cat", t_cat, "tensor.cat({t1, t2, ...} [, dim]) -> Tensor",
     "Joins tensors along an existing dim (1 by default); their other sizes must agree.",
     "tensor.cat({tensor.ones(2, 3), tensor.zeros(1, 3)})"},
    {"stack", t_stack, "tensor.stack({t1, t2, ...} [, dim]) -> Tensor",
     "Joins tensors of one shape along a new dim (1 by default).",
     "tensor.stack({tensor.ones(3), tensor.zeros(3)}, 2)"},
    {"where", t_where, "tensor.where(cond, a, b) -> Tensor",
     "a where cond (u8, as comparisons give) is nonzero, else b; a and b are tensors or numbers, "
     "all broadcast.",
     "local x = tensor.from{-1, 2, -3}; print(tensor.where(x:gt(0), x, 0))"},
    {"outer", t_outer, "tensor.outer(a, b) -> Tensor", "The outer product of two 1-D tensors.",
     "tensor.outer(tensor.arange(1, 4), tensor.arange(1, 3))"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn ops_methods[] = {
    {"permute", t_permute, "t:permute(dim1, dim2, ... | {dims}) -> Tensor",
     "A view with the dims in the given order (each dim once).",
     "tensor.zeros(2, 3, 4):permute(3, 1, 2):shape()"},
    {"unsqueeze", t_unsqueeze, "t:unsqueeze(dim) -> Tensor",
     "A view with a new dim of size 1 at position dim (1..ndim+1; -1 appends).",
     "tensor.zeros(2, 3):unsqueeze(1):shape()"},
    {"squeeze", t_squeeze, "t:squeeze([dim]) -> Tensor",
     "A view without the dims of size 1 (or only dim, if its size is 1).",
     "tensor.zeros(2, 1, 3):squeeze():shape()"},
    {"view", t_view, "t:view(size... | {sizes}) -> Tensor",
     "The same elements in another shape (one size may be -1), always a view: t must be "
     "contiguous (reshape copies when it is not).",
     "tensor.arange(6):view(2, 3)"},
    {"flatten", t_flatten, "t:flatten([start [, end]]) -> Tensor",
     "Dims start..end (all by default) merged into one: a view when t is contiguous.",
     "tensor.zeros(2, 3, 4):flatten(2):shape()"},
    {"expand", t_expand, "t:expand(size... | {sizes}) -> Tensor",
     "A view with size-1 dims stretched (and new leading dims) without copying; -1 keeps a size.",
     "tensor.from{{1}, {2}}:expand(2, 3)"},
    {"tile", t_repeat, "t:tile(count... | {counts}) -> Tensor",
     "A copy of t tiled count times along each dim (extra leading counts add dims; missing ones "
     "are 1): PyTorch's repeat and tile.",
     "tensor.from{1, 2}:tile(2, 2)"},
    {"repeat", t_repeat, "t[\"repeat\"](t, count... | {counts}) -> Tensor",
     "As tile: repeat is a Lua keyword, so t:repeat(...) does not parse; t:tile(...) is the same.",
     "local t = tensor.from{1, 2}; print(t[\"repeat\"](t, 3))"},
    {"split", t_split, "t:split(size | {sizes} [, dim]) -> {Tensor...}",
     "Views of pieces of size along dim (1 by default; the last may be shorter), or of the sizes "
     "given.",
     "tensor.arange(5):split(2)"},
    {"chunk", t_chunk, "t:chunk(n [, dim]) -> {Tensor...}",
     "t cut into n views of equal size along dim (1 by default; the last may be shorter, and "
     "there may be fewer).",
     "tensor.arange(6):chunk(3)"},
    {"where", t_where_method, "t:where(cond, other) -> Tensor",
     "t where cond is nonzero, else other (a tensor or number): tensor.where(cond, t, other).",
     "local x = tensor.from{-1, 2}; print(x:where(x:gt(0), 0))"},
    {"masked_fill", t_masked_fill, "t:masked_fill(mask, value) -> Tensor",
     "A copy of t with value where mask (u8, broadcast to t's shape) is nonzero.",
     "local x = tensor.from{-1, 2, -3}; print(x:masked_fill(x:lt(0), 0))"},
    {"gather", t_gather, "t:gather(dim, index) -> Tensor",
     "out[i][j] = t[index[i][j]][j] for dim 1 (t[i][index[i][j]] for dim 2 ...): index (1-based) "
     "has t's number of dims.",
     "tensor.from{{1, 2}, {3, 4}}:gather(2, tensor.from({{2}, {1}}, \"i32\"))"},
    {"index_select", t_index_select, "t:index_select(dim, index) -> Tensor",
     "The entries of dim at the 1-based indices (a 1-D tensor or a table), in that order.",
     "tensor.arange(12):reshape(3, 4):index_select(1, {3, 1})"},
    {"sort", t_sort, "t:sort([dim [, descending]]) -> values, indices",
     "The entries sorted along dim (the last by default), ascending unless descending, and their "
     "1-based indices (i32); equal values keep their order.",
     "local v, i = tensor.from{3, 1, 2}:sort()"},
    {"topk", t_topk, "t:topk(k [, dim [, largest]]) -> values, indices",
     "The k largest entries along dim (the last by default), largest first, and their 1-based "
     "indices; largest = false gives the k smallest.",
     "local v, i = tensor.from{3, 1, 2, 5}:topk(2)"},
    {"softmax", t_softmax, "t:softmax([dim]) -> Tensor",
     "exp(t) / sum(exp(t)) along dim (the last by default), computed stably.",
     "tensor.from{{1, 2, 3}}:softmax(2)"},
    {"log_softmax", t_log_softmax, "t:log_softmax([dim]) -> Tensor",
     "The logarithm of softmax along dim (the last by default), computed stably.",
     "tensor.from{1, 2, 3}:log_softmax()"},
    {"cumsum", t_cumsum, "t:cumsum(dim) -> Tensor",
     "Running sums along dim (f32, or i32 for integer tensors).", "tensor.arange(1, 5):cumsum(1)"},
    {"clamp", t_clamp, "t:clamp(min [, max]) -> Tensor",
     "t limited to [min, max] elementwise; either bound may be nil (none), a number or a tensor.",
     "tensor.from{-2, 0.5, 3}:clamp(0, 1)"},
    {"norm", t_norm, "t:norm([p [, dim [, keepdim]]]) -> number | Tensor",
     "The p-norm (2 by default; math.huge: largest |x|) of all elements, or along dim.",
     "tensor.from{3, 4}:norm()"},
    {"var", t_var, "t:var([dim [, unbiased [, keepdim]]]) -> number | Tensor",
     "The variance of all elements or along dim, divided by n - 1 unless unbiased is false.",
     "tensor.from{1, 2, 3, 4}:var()"},
    {"std", t_std, "t:std([dim [, unbiased [, keepdim]]]) -> number | Tensor",
     "The standard deviation (the square root of var), likewise.",
     "tensor.from{{1, 2}, {3, 5}}:std(2)"},
    {"outer", t_outer, "t:outer(b) -> Tensor", "The outer product of two 1-D tensors (as tensor.outer).",
     "tensor.arange(1, 3):outer(tensor.arange(1, 4))"},
    {NULL, NULL, NULL, NULL, NULL},
};

void nl_open_tensor_ops(lua_State *L)
{
    luaL_getmetatable(L, NL_TENSOR_MT);
    lua_getfield(L, -1, "methods");
    for (const nl_dsl_fn *f = ops_methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_pushcclosure(L, t_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, t_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pop(L, 1);
    nl_dsl_register(L, "tensor", ops_fns);
    nl_dsl_register_methods(L, NL_TENSOR_MT, ops_methods);
}
