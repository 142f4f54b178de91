/* nn.c: the Lua module `nn`: layers built generically from the core's module types, the Module
 * userdata (children, parameters, forward/backward, printing, checkpoints), losses, TensorDataset,
 * and the private C helpers under the Trainer and nn.evaluate written in dsl/nn.lua. */
#include "dsl.h"
#include "ldist.h"
#include "lnn.h"
#include "ltensor.h"

#include "checkpoint.h"
#include "profile.h"
#include "train.h"

#include <cjson/cJSON.h>

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* dsl/nn.lua, embedded by the Makefile. */
extern const char nl_lua_nn[];
extern const size_t nl_lua_nn_len;

#define BOXES_KEY "nnlab.modules" /* registry: lightuserdata(module) -> its box, weak values */
#define LOSS_MT NL_LOSS_MT
#define DATASET_MT "TensorDataset"
#define STATS_MT "nnlab.EvalStats"
#define FILE_MT "nnlab.CheckpointFile"

/* Labels and sizes above this are refused before they reach an integer. */
#define MAX_EXACT 0x1p53

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

/* ================================================================ Module boxes ========== */

/* A box's user values: 1 = fields set from Lua, 2 = the boxes of its children that Lua has seen
 * (a set), which keeps them, and so their fields, alive as long as the parent's box. */
enum { UV_FIELDS = 1, UV_KIDS = 2 };

/* A layer written in Lua keeps its fields with the module, not the box: its box on top shows them. */
static void attach_fields(lua_State *L, const nl_module *m)
{
    if (nl_lua_push_fields(L, m)) lua_setiuservalue(L, -2, UV_FIELDS);
}

/* Pushes a new Module box holding NULL, to be filled with a new module's reference and then
 * recorded with adopt_box (liolib's pattern: the box exists before anything can fail). */
static nl_module **push_empty_box(lua_State *L)
{
    nl_module **box = lua_newuserdatauv(L, sizeof *box, 2);
    *box = NULL;
    luaL_setmetatable(L, NL_MODULE_MT);
    return box;
}

/* Makes the filled box on top THE box of its module; raises the core's error when the box was
 * left empty (the constructor failed). */
static void adopt_box(lua_State *L)
{
    nl_module **box = lua_touserdata(L, -1);
    if (!*box) nl_dsl_core_error(L);
    attach_fields(L, *box);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, BOXES_KEY);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, *box);
    lua_pop(L, 1);
}

void nl_lua_pushmodule(lua_State *L, nl_module *m)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, BOXES_KEY);
    if (lua_rawgetp(L, -1, m) != LUA_TNIL) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    nl_module **box = push_empty_box(L);
    *box = nl_module_retain(m);
    attach_fields(L, m);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, -3, m);
    lua_remove(L, -2);
}

nl_module *nl_lua_tomodule(lua_State *L, int idx)
{
    nl_module **box = luaL_testudata(L, idx, NL_MODULE_MT);
    return box ? *box : NULL;
}

nl_module *nl_lua_checkmodule(lua_State *L, int idx)
{
    nl_module **box = luaL_testudata(L, idx, NL_MODULE_MT);
    if (!box) luaL_typeerror(L, idx, NL_MODULE_MT);
    if (!*box) luaL_argerror(L, idx, "module was released (its __gc was called)");
    return *box;
}

/* Pushes user value n of the box at idx, creating an empty table there first if needed. */
static void push_uservalue(lua_State *L, int idx, int n)
{
    idx = lua_absindex(L, idx);
    if (lua_getiuservalue(L, idx, n) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, n);
}

/* Records (keep true) or forgets the box at child in the kids set of the box at parent. */
static void keep_kid(lua_State *L, int parent, int child, bool keep)
{
    child = lua_absindex(L, child);
    push_uservalue(L, parent, UV_KIDS);
    lua_pushvalue(L, child);
    if (keep) lua_pushboolean(L, 1);
    else lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Whether m is among c's children. */
static bool has_child(const nl_module *c, const nl_module *m)
{
    for (int i = 0; i < c->nchildren; i++)
        if (c->children[i] == m) return true;
    return false;
}

/* Pushes a Tensor sharing t (another reference to the same C tensor), or nil for NULL. */
static void push_shared(lua_State *L, nl_tensor *t)
{
    if (!t) {
        lua_pushnil(L);
        return;
    }
    nl_tensor **box = nl_lua_newbox(L);
    *box = nl_tensor_retain(t);
}

/* ================================================================ construction ========== */

static int count_args(const nl_module_type *t)
{
    int n = 0;
    while (n < NL_MAX_ARGS && t->args[n].name) n++;
    return n;
}

/* The names of type's options (or all its arguments), comma-separated, into b. */
static void push_arg_names(lua_State *L, const nl_module_type *t, int from)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = from; i < count_args(t); i++) {
        if (i > from) luaL_addstring(&b, ", ");
        luaL_addstring(&b, t->args[i].name);
    }
    if (from >= count_args(t)) luaL_addstring(&b, "none");
    luaL_pushresult(&b);
}

/* Reads the value at idx as argument i of type t into *v: a number, or true/false for flags
 * (options may also give flags as booleans). what names the value in messages. */
static void read_arg(lua_State *L, int idx, const nl_module_type *t, int i, double *v,
                     const char *what)
{
    const nl_argspec *a = &t->args[i];
    int ty = lua_type(L, idx);
    if (ty == LUA_TBOOLEAN) {
        if (!a->boolean)
            nl_dsl_error(L, "nn.%s: %s (%s) must be a number, got a boolean", t->name, what, a->name);
        *v = lua_toboolean(L, idx);
    } else if (ty == LUA_TNUMBER) {
        *v = lua_tonumber(L, idx);
    } else {
        nl_dsl_error(L, "nn.%s: %s (%s) must be %s, got %s", t->name, what, a->name,
                   a->boolean ? "true or false" : "a number", luaL_typename(L, idx));
    }
}

/* Reads the options table at idx into args; given[] marks arguments already set positionally. */
static void read_options(lua_State *L, int idx, const nl_module_type *t, double *args,
                         const bool *given)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            if (t->container && lua_type(L, -2) == LUA_TNUMBER) { /* the list of children */
                lua_pop(L, 1);
                continue;
            }
            nl_dsl_error(L, "nn.%s: options are given by name ({stride = 2}), got a %s key", t->name,
                       luaL_typename(L, -2));
        }
        const char *key = lua_tostring(L, -2);
        int i = nl_module_arg_index(t, key);
        if (i < 0) {
            push_arg_names(L, t, 0);
            nl_dsl_error(L, "nn.%s: unknown option '%s' (valid: %s)", t->name, key, lua_tostring(L, -1));
        }
        if (given[i]) nl_dsl_error(L, "nn.%s: %s is given twice", t->name, key);
        read_arg(L, -1, t, i, &args[i], "option");
        lua_pop(L, 1);
    }
}

/* Adds the modules in the list at idx, or the nargs arguments from idx on, to the container
 * (whose box is at box_idx). */
static void add_children(lua_State *L, int box_idx, nl_module *c, int idx, int nargs, bool list)
{
    int n = list ? (int)luaL_len(L, idx) : nargs;
    for (int k = 1; k <= n; k++) {
        int at;
        if (list) {
            lua_geti(L, idx, k);
            at = lua_gettop(L);
        } else {
            at = idx + k - 1;
        }
        nl_module *child = nl_lua_tomodule(L, at);
        if (!child)
            nl_dsl_error(L, "nn.%s: item %d is a %s, expected a module (nn.Linear(...), ...)",
                       c->type->name, k, luaL_typename(L, at));
        check_status(L, nl_module_add(c, child));
        keep_kid(L, box_idx, at, true);
        if (list) lua_pop(L, 1);
    }
}

/* nn.<Type>(...): every layer's constructor; upvalue 1 is the module type. Positional numbers
 * (npos of them), then an options table; containers take their modules as arguments or as one
 * list (which may also hold options). */
int nl_lua_module_new(lua_State *L)
{
    const nl_module_type *t = lua_touserdata(L, lua_upvalueindex(1));
    double args[NL_MAX_ARGS];
    bool given[NL_MAX_ARGS] = {false};
    int top = lua_gettop(L);
    nl_module_default_args(t, args);
    bool list = t->container && top == 1 && lua_type(L, 1) == LUA_TTABLE;
    if (!t->container) {
        int npos = top;
        if (npos > 0 && lua_type(L, npos) == LUA_TTABLE) npos--;
        if (npos > t->npos)
            nl_dsl_error(L, "nn.%s: %d positional arguments given, expected at most %d: %s", t->name,
                       npos, t->npos, t->sig);
        for (int i = 0; i < npos; i++) {
            char what[32];
            snprintf(what, sizeof what, "argument %d", i + 1);
            read_arg(L, i + 1, t, i, &args[i], what);
            given[i] = true;
        }
        if (npos < top) read_options(L, top, t, args, given);
    } else if (list) {
        read_options(L, 1, t, args, given);
    }
    nl_module **box = push_empty_box(L);
    int box_idx = lua_gettop(L);
    *box = nl_module_new(t, args);
    adopt_box(L);
    if (t->container) add_children(L, box_idx, *box, 1, top, list);
    lua_settop(L, box_idx);
    return 1;
}

/* ================================================================ Module methods ======== */

static int m_forward(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_tensor *x = nl_lua_checktensor(L, 2);
    nl_tensor **box = nl_lua_newbox(L);
    check_status(L, nl_module_forward(m, x, box));
    return 1;
}

static int m_backward(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_tensor *gy = nl_lua_checktensor(L, 2);
    nl_tensor **box = nl_lua_newbox(L);
    check_status(L, nl_module_backward(m, gy, box));
    return 1;
}

/* Appends {name=, value=, grad=} for each parameter of m and its children to the list at idx,
 * names prefixed by the path of 1-based child indices ("2.1.weight"). Buffers (no gradient) go
 * in only when buffers is set, and then only they. */
static void collect_params(lua_State *L, int list, nl_module *m, const char *prefix, bool buffers)
{
    for (int i = 0; i < m->nparams; i++) {
        nl_param *p = &m->params[i];
        if ((p->grad == NULL) != buffers) continue;
        lua_createtable(L, 0, 3);
        lua_pushfstring(L, "%s%s", prefix, p->name);
        lua_setfield(L, -2, "name");
        push_shared(L, p->value);
        lua_setfield(L, -2, "value");
        push_shared(L, p->grad);
        lua_setfield(L, -2, "grad");
        lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
    }
    for (int i = 0; i < m->nchildren; i++) {
        luaL_checkstack(L, 4, "network too deep");
        const char *child = lua_pushfstring(L, "%s%d.", prefix, i + 1);
        collect_params(L, list, m->children[i], child, buffers);
        lua_pop(L, 1);
    }
}

static int m_parameters(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    lua_newtable(L);
    collect_params(L, lua_gettop(L), m, "", false);
    return 1;
}

static int m_buffers(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    lua_newtable(L);
    collect_params(L, lua_gettop(L), m, "", true);
    return 1;
}

/* zero_grad, train and eval return the module for chaining (net:eval():forward(x)); the REPL
 * does not echo it (the whole network) when a line is just the call. */
static int m_zero_grad(lua_State *L)
{
    check_status(L, nl_module_zero_grad(nl_lua_checkmodule(L, 1)));
    lua_settop(L, 1);
    nl_dsl_quiet(L, 1);
    return 1;
}

static int m_train(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_module_train(m, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
    lua_settop(L, 1);
    nl_dsl_quiet(L, 1);
    return 1;
}

static int m_eval(lua_State *L)
{
    nl_module_train(nl_lua_checkmodule(L, 1), false);
    lua_settop(L, 1);
    nl_dsl_quiet(L, 1);
    return 1;
}

static int m_output(lua_State *L)
{
    push_shared(L, nl_lua_checkmodule(L, 1)->output);
    return 1;
}

static int m_input(lua_State *L)
{
    push_shared(L, nl_lua_checkmodule(L, 1)->input);
    return 1;
}

/* m:device() -> the device of m's parameters ("cpu" when it has none). */
static int m_device(lua_State *L)
{
    lua_pushstring(L, nl_device_name(nl_module_device(nl_lua_checkmodule(L, 1))));
    return 1;
}

static int m_to(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    check_status(L, nl_module_to(m, nl_dsl_checkdevice(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int m_clone(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_module **box = push_empty_box(L);
    *box = nl_module_clone(m);
    adopt_box(L);
    return 1;
}

static int m_save(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    check_status(L, nl_checkpoint_save_module(nl_dsl_checkpath(L, 2), m, NULL));
    lua_settop(L, 1);
    return 1;
}

/* A 1-based position argument of container c; past_end allows #c + 1 (insert). */
static int check_position(lua_State *L, int arg, const nl_module *c, bool past_end)
{
    lua_Integer i = luaL_checkinteger(L, arg);
    if (i < 1 || i > c->nchildren + past_end)
        nl_dsl_error(L, "%s: position %I is out of range (1 to %d)", c->type->name, i,
                   c->nchildren + past_end);
    return (int)i - 1;
}

static int m_insert_at(lua_State *L, int index, int child_arg)
{
    nl_module *c = nl_lua_checkmodule(L, 1);
    nl_module *child = nl_lua_checkmodule(L, child_arg);
    check_status(L, nl_module_insert(c, index < 0 ? c->nchildren : index, child));
    keep_kid(L, 1, child_arg, true);
    lua_settop(L, 1);
    return 1;
}

static int m_add(lua_State *L) { return m_insert_at(L, -1, 2); }

static int m_insert(lua_State *L)
{
    nl_module *c = nl_lua_checkmodule(L, 1);
    return m_insert_at(L, check_position(L, 2, c, true), 3);
}

static int m_remove(lua_State *L)
{
    nl_module *c = nl_lua_checkmodule(L, 1);
    if (c->nchildren == 0)
        nl_dsl_error(L, "%s: nothing to remove (it holds no modules)", c->type->name);
    int i = lua_isnoneornil(L, 2) ? c->nchildren - 1 : check_position(L, 2, c, false);
    nl_module *child = c->children[i];
    nl_lua_pushmodule(L, child); /* keeps child alive past the removal */
    int at = lua_gettop(L);
    check_status(L, nl_module_remove(c, i));
    if (!has_child(c, child)) keep_kid(L, 1, at, false);
    return 1;
}

/* m:infer(shape) -> output shape, multiply-adds: what a forward pass of that input shape gives. */
static int m_infer(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t in[NL_MAX_DIMS], out[NL_MAX_DIMS], macs = 0;
    lua_Integer n = luaL_len(L, 2);
    if (n > NL_MAX_DIMS) nl_dsl_error(L, "the input shape has %I dims, at most %d", n, NL_MAX_DIMS);
    for (int d = 0; d < n; d++) {
        lua_geti(L, 2, d + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < 0)
            nl_dsl_error(L, "size %d of the input shape must be a whole number >= 0, got %s", d + 1,
                         luaL_tolstring(L, -1, NULL));
        in[d] = v;
        lua_pop(L, 1);
    }
    int out_nd;
    check_status(L, nl_module_infer(m, (int)n, in, &out_nd, out, &macs));
    lua_createtable(L, out_nd, 0);
    for (int d = 0; d < out_nd; d++) {
        lua_pushinteger(L, out[d]);
        lua_rawseti(L, -2, d + 1);
    }
    lua_pushinteger(L, macs);
    return 2;
}

static int m_type(lua_State *L)
{
    lua_pushstring(L, nl_lua_checkmodule(L, 1)->type->name);
    return 1;
}

static int m_len(lua_State *L)
{
    lua_pushinteger(L, nl_lua_checkmodule(L, 1)->nchildren);
    return 1;
}

/* Whether m or a layer inside it runs on the CPU only (int8 / int4 kernels). */
static bool has_cpu_only(const nl_module *m)
{
    if (m->type->cpu_only) return true;
    for (int i = 0; i < m->nchildren; i++)
        if (has_cpu_only(m->children[i])) return true;
    return false;
}

/* The layers; for a network with integer layers, that it runs on the CPU. */
static int m_tostring(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    for (size_t n = 4096;; n *= 4) {
        char *buf = lua_newuserdatauv(L, n, 0);
        nl_module_repr(m, buf, n);
        if (strlen(buf) < n - 1) {
            lua_pushstring(L, buf);
            break;
        }
        lua_pop(L, 1);
    }
    if (!has_cpu_only(m)) return 1;
    lua_pushliteral(L, "\n(integer layers: runs on the CPU, where their kernels are; give it CPU "
                       "inputs)");
    lua_concat(L, 2);
    return 1;
}

static int m_gc(lua_State *L)
{
    nl_module **box = luaL_checkudata(L, 1, NL_MODULE_MT);
    /* Forget this box as its module's (the collector has done so already; a __gc called by
     * hand has not): a module later made at the same address must get a box of its own. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, BOXES_KEY);
    if (*box && lua_rawgetp(L, -1, *box) == LUA_TUSERDATA && lua_rawequal(L, -1, 1)) {
        lua_pushnil(L);
        lua_rawsetp(L, -3, *box);
    }
    lua_settop(L, 1);
    nl_module_release(*box);
    *box = NULL;
    return 0;
}

/* m[i] (a child, 1-based), methods, m.<parameter or buffer> (a Tensor sharing it), m.<argument>
 * (its value), m.training, then fields set from Lua. */
static int m_index(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        int ok;
        lua_Integer i = lua_tointegerx(L, 2, &ok);
        if (!ok || i < 1 || i > m->nchildren) return 0;
        nl_lua_pushmodule(L, m->children[i - 1]);
        keep_kid(L, 1, -1, true);
        return 1;
    }
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        nl_param *p = nl_module_param(m, key);
        if (p) {
            push_shared(L, p->value);
            return 1;
        }
        int i = nl_module_arg_index(m->type, key);
        if (i >= 0) {
            if (m->type->args[i].boolean) lua_pushboolean(L, m->args[i] != 0);
            else if (m->args[i] == floor(m->args[i])) lua_pushinteger(L, (lua_Integer)m->args[i]);
            else lua_pushnumber(L, m->args[i]);
            return 1;
        }
        if (strcmp(key, "training") == 0) {
            lua_pushboolean(L, m->training);
            return 1;
        }
    }
    if (lua_getiuservalue(L, 1, UV_FIELDS) != LUA_TTABLE) return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* m.<parameter> = tensor copies into the parameter (same shape); arguments, children and
 * methods cannot be replaced; other names are fields. */
static int m_newindex(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER)
        nl_dsl_error(L, "%s: children are changed with add, insert and remove", m->type->name);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        nl_param *p = nl_module_param(m, key);
        if (p) {
            nl_tensor *v = nl_lua_totensor(L, 3);
            if (!v) nl_dsl_error(L, "%s: %s must be set from a Tensor, got %s", m->type->name, key,
                               luaL_typename(L, 3));
            const nl_tensor *t = p->value;
            if (v->ndim != t->ndim || memcmp(v->shape, t->shape, (size_t)t->ndim * sizeof *t->shape)) {
                char want[NL_MAX_DIMS * 24], got[NL_MAX_DIMS * 24];
                nl_dsl_error(L, "%s: %s is %s; it cannot be set from a %s tensor", m->type->name, key,
                             nl_shape_str(want, sizeof want, t->ndim, t->shape),
                             nl_shape_str(got, sizeof got, v->ndim, v->shape));
            }
            check_status(L, nl_copy(p->value, v));
            return 0;
        }
        lua_getmetatable(L, 1);
        lua_getfield(L, -1, "methods");
        if (nl_module_arg_index(m->type, key) >= 0 || strcmp(key, "training") == 0 ||
            lua_getfield(L, -1, key) != LUA_TNIL)
            nl_dsl_error(L, "%s: '%s' is read-only (build a new layer to change it)", m->type->name, key);
        lua_pop(L, 3);
    }
    push_uservalue(L, 1, UV_FIELDS);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

/* ================================================================ losses ================= */

typedef struct {
    nl_loss l;
} lua_loss;

static lua_loss *check_loss(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LOSS_MT);
}

/* Reads an options table at idx whose only valid keys are those in names (NULL-terminated), each
 * a number, into values; fname names the constructor in messages. */
static void read_number_options(lua_State *L, int idx, const char *fname, const char *const *names,
                                double *values)
{
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            nl_dsl_error(L, "%s: options are given by name, got a %s key", fname, luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        int i = 0;
        while (names[i] && strcmp(names[i], key) != 0) i++;
        if (!names[i]) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int k = 0; names[k]; k++) {
                if (k) luaL_addstring(&b, ", ");
                luaL_addstring(&b, names[k]);
            }
            if (!names[0]) luaL_addstring(&b, "none");
            luaL_pushresult(&b);
            nl_dsl_error(L, "%s: unknown option '%s' (valid: %s)", fname, key, lua_tostring(L, -1));
        }
        if (lua_type(L, -1) != LUA_TNUMBER)
            nl_dsl_error(L, "%s: %s must be a number, got %s", fname, key, luaL_typename(L, -1));
        values[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
}

static int loss_new(lua_State *L, nl_loss_kind kind)
{
    double smoothing = 0;
    static const char *const ce_opts[] = {"label_smoothing", NULL};
    static const char *const no_opts[] = {NULL};
    read_number_options(L, 1, kind == NL_LOSS_CROSS_ENTROPY ? "nn.CrossEntropyLoss" : "nn.MSELoss",
                        kind == NL_LOSS_CROSS_ENTROPY ? ce_opts : no_opts, &smoothing);
    if (!(smoothing >= 0 && smoothing <= 1))
        nl_dsl_error(L, "nn.CrossEntropyLoss: label_smoothing must be between 0 and 1, got %f", smoothing);
    lua_loss *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->l.kind = kind;
    b->l.label_smoothing = smoothing;
    luaL_setmetatable(L, LOSS_MT);
    return 1;
}

static int l_cross_entropy(lua_State *L) { return loss_new(L, NL_LOSS_CROSS_ENTROPY); }

/* nn.DistillLoss{teacher=net, temperature=4, alpha=0.9} */
static int l_distill(lua_State *L)
{
    const char *f = "nn.DistillLoss";
    luaL_checktype(L, 1, LUA_TTABLE);
    double v[2] = {4, 0.9};
    static const char *const names[] = {"temperature", "alpha", NULL};
    lua_getfield(L, 1, "teacher");
    nl_module *teacher = nl_lua_tomodule(L, -1);
    if (!teacher) nl_dsl_error(L, "%s: teacher must be a network", f);
    lua_pushnil(L);
    lua_setfield(L, 1, "teacher"); /* read_number_options sees the numbers only... */
    read_number_options(L, 1, f, names, v);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "teacher"); /* ...and the caller's table is as it was */
    if (!(v[0] > 0)) nl_dsl_error(L, "%s: temperature must be > 0, got %f", f, v[0]);
    if (!(v[1] >= 0 && v[1] <= 1)) nl_dsl_error(L, "%s: alpha must be between 0 and 1, got %f", f, v[1]);
    lua_loss *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->l.kind = NL_LOSS_DISTILL;
    b->l.temperature = v[0];
    b->l.alpha = v[1];
    b->l.teacher = nl_module_retain(teacher);
    luaL_setmetatable(L, LOSS_MT);
    return 1;
}
static int l_mse(lua_State *L) { return loss_new(L, NL_LOSS_MSE); }

/* A label value as a 0-based class: a whole number in 1..classes (classes 0: no upper bound). */
static int32_t label_index(lua_State *L, double v, int64_t pos, int64_t classes, const char *fname)
{
    if (!(v == floor(v)) || v < 1 || v > MAX_EXACT || (classes > 0 && v > (double)classes)) {
        if (classes > 0)
            nl_dsl_error(L, "%s: label %f of sample %I is not a class number from 1 to %I", fname, v,
                       (lua_Integer)pos + 1, (lua_Integer)classes);
        nl_dsl_error(L, "%s: label %f of sample %I is not a class number (1, 2, ...)", fname, v,
                   (lua_Integer)pos + 1);
    }
    if (v > INT32_MAX) nl_dsl_error(L, "%s: label %f is too large", fname, v);
    return (int32_t)v - 1;
}

/* Pushes (boxed) and returns the core's form of class labels y given in Lua's 1-based form: a
 * Tensor [N] of whole numbers or a list of numbers; a new i32 tensor of 0-based classes on dev. */
static nl_tensor *push_labels(lua_State *L, int idx, int64_t classes, nl_device dev, const char *fname)
{
    nl_tensor *y = nl_lua_totensor(L, idx);
    int64_t n;
    if (y) {
        if (y->ndim != 1) nl_dsl_error(L, "%s: labels must be 1-D, got %d-D", fname, y->ndim);
        n = y->shape[0];
        if (nl_tensor_device(y) != NL_CPU) { /* one copy to read them, not one per label */
            nl_tensor **hbox = nl_lua_newbox(L);
            if (!(*hbox = nl_tensor_host(y))) nl_dsl_core_error(L);
            lua_replace(L, idx < 0 ? idx - 1 : idx);
            y = *hbox;
        }
    } else {
        luaL_checktype(L, idx, LUA_TTABLE);
        n = (int64_t)luaL_len(L, idx);
    }
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_I32, 1, &n, NL_CPU))) nl_dsl_core_error(L);
    int32_t *out = nl_tensor_data(*box);
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (y) {
            check_status(L, nl_tensor_get(y, &i, &v));
        } else {
            if (lua_geti(L, idx, i + 1) != LUA_TNUMBER)
                nl_dsl_error(L, "%s: label %I is a %s, expected a number", fname, (lua_Integer)i + 1,
                           luaL_typename(L, -1));
            v = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        out[i] = label_index(L, v, i, classes, fname);
    }
    if (dev != NL_CPU) {
        nl_tensor **moved = nl_lua_newbox(L);
        if (!(*moved = nl_tensor_to_device(*box, dev))) nl_dsl_core_error(L);
        lua_remove(L, -2);
        return *moved;
    }
    return *box;
}

/* Pushes (boxed) and returns the target in the core's form for a loss of kind on an input of
 * shape out (ndim, shape; classes = the last size): class labels (1-based in Lua) become 0-based
 * i32; f32 targets of any other shape pass through unchanged. */
static nl_tensor *push_target(lua_State *L, int idx, nl_loss_kind kind, int ndim,
                              const int64_t *shape, nl_device dev, const char *fname)
{
    nl_tensor *y = nl_lua_totensor(L, idx);
    bool same = y && y->ndim == ndim && memcmp(y->shape, shape, (size_t)ndim * sizeof *shape) == 0;
    if (kind != NL_LOSS_MSE && !(same && y->dtype == NL_F32))
        return push_labels(L, idx, ndim > 0 ? shape[ndim - 1] : 0, dev, fname);
    if (!y) nl_dsl_error(L, "%s: the target must be a Tensor, got %s", fname, luaL_typename(L, idx));
    push_shared(L, y);
    return y;
}

static const char *loss_name(nl_loss_kind kind)
{
    return kind == NL_LOSS_CROSS_ENTROPY ? "CrossEntropyLoss" : kind == NL_LOSS_MSE ? "MSELoss"
         : kind == NL_LOSS_CUSTOM        ? "Loss"
                                         : "DistillLoss";
}

/* loss:forward(input, target[, batch]): batch is the network's input, which a distillation loss
 * hands to its teacher. */
static int loss_forward(lua_State *L)
{
    lua_loss *b = check_loss(L, 1);
    nl_tensor *x = nl_lua_checktensor(L, 2);
    nl_tensor *batch = lua_isnoneornil(L, 4) ? NULL : nl_lua_checktensor(L, 4);
    nl_tensor *y = push_target(L, 3, b->l.kind, x->ndim, x->shape, nl_tensor_device(x), loss_name(b->l.kind));
    double v;
    b->l.batch = batch;
    nl_status st = nl_loss_forward(&b->l, x, y, &v);
    b->l.batch = NULL;
    check_status(L, st);
    lua_pushnumber(L, v);
    return 1;
}

static int loss_call(lua_State *L)
{
    return loss_forward(L);
}

static int loss_backward(lua_State *L)
{
    lua_loss *b = check_loss(L, 1);
    double scale = luaL_optnumber(L, 2, 1.0);
    nl_tensor **box = nl_lua_newbox(L);
    check_status(L, nl_loss_backward(&b->l, scale, box));
    return 1;
}

static int loss_tostring(lua_State *L)
{
    lua_loss *b = check_loss(L, 1);
    if (b->l.kind == NL_LOSS_CUSTOM) nl_lua_loss_tostring(L, &b->l);
    else if (b->l.kind == NL_LOSS_MSE) lua_pushliteral(L, "MSELoss()");
    else if (b->l.kind == NL_LOSS_DISTILL)
        lua_pushfstring(L, "DistillLoss(temperature=%f, alpha=%f)", b->l.temperature, b->l.alpha);
    else if (b->l.label_smoothing == 0) lua_pushliteral(L, "CrossEntropyLoss()");
    else lua_pushfstring(L, "CrossEntropyLoss(label_smoothing=%f)", b->l.label_smoothing);
    return 1;
}

static int loss_index(lua_State *L)
{
    lua_loss *b = check_loss(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "kind") == 0) {
        lua_pushstring(L, b->l.kind == NL_LOSS_MSE       ? "mse"
                          : b->l.kind == NL_LOSS_DISTILL ? "distill"
                          : b->l.kind == NL_LOSS_CUSTOM  ? "lua"
                                                         : "cross_entropy");
        return 1;
    }
    if (b->l.kind == NL_LOSS_DISTILL && strcmp(key, "temperature") == 0) {
        lua_pushnumber(L, b->l.temperature);
        return 1;
    }
    if (b->l.kind == NL_LOSS_DISTILL && strcmp(key, "alpha") == 0) {
        lua_pushnumber(L, b->l.alpha);
        return 1;
    }
    if (b->l.kind == NL_LOSS_DISTILL && strcmp(key, "teacher") == 0) {
        nl_lua_pushmodule(L, b->l.teacher);
        return 1;
    }
    if (strcmp(key, "label_smoothing") == 0) {
        lua_pushnumber(L, b->l.label_smoothing);
        return 1;
    }
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, -1, key);
    return 1;
}

static int loss_gc(lua_State *L)
{
    nl_loss_clear(&check_loss(L, 1)->l);
    return 0;
}

/* ================================================================ TensorDataset ========== */

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
    push_shared(L, d->x);
    push_shared(L, d->y);
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

/* ================================================================ private helpers ======== */
/* Functions the Trainer and nn.evaluate (dsl/nn.lua) call; handed to that chunk only. */

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
        py[i] = label_index(L, lua_tonumber(L, -1), data_index(L, 3, i) - 1, 0, "data set") + 1;
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
    return push_target(L, idx, kind, nd, out, nl_tensor_device(x), fname);
}

/* P.train_step(net, loss, opt, x, y) -> loss, correct, updated, grad_norm; or nil, "interrupted"
 * when Ctrl-C stopped it (nothing changed: the batch is to be redone). */
static int p_train_step(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    lua_loss *loss = check_loss(L, 2);
    nl_lua_optim *opt = nl_lua_checkoptim(L, 3);
    nl_tensor *x = nl_lua_checktensor(L, 4);
    nl_tensor *y = push_step_target(L, 5, net, x, loss->l.kind, loss_name(loss->l.kind));
    nl_step_result r;
    const nl_grad_exchange *ex = nl_lua_optexchange(L, 6);
    nl_status s = nl_train_step(net, &loss->l, opt->o, x, y, opt->clip, ex, &r);
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

/* P.profile(net, x, backward, reps) -> {rows}, peak GFLOP/s: nl_profile's rows as tables. */
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
    lua_loss *loss = lua_isnil(L, 3) ? NULL : check_loss(L, 3);
    nl_tensor *x = nl_lua_checktensor(L, 4);
    nl_tensor *y = push_step_target(L, 5, net, x, loss ? loss->l.kind : NL_LOSS_CROSS_ENTROPY,
                                    "evaluate");
    check_status(L, nl_eval_batch(net, loss ? &loss->l : NULL, x, y, s));
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
    lua_pushboolean(L, luaL_testudata(L, 1, LOSS_MT) != NULL);
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

/* Pushes JSON value j as plain Lua data: objects and arrays as tables (arrays 1-based), every
 * number as a float, null as false. Nothing in it is ever run. cJSON bounds the nesting. */
static void push_json(lua_State *L, const cJSON *j)
{
    luaL_checkstack(L, 3, "trainer metadata nested too deeply");
    if (cJSON_IsNumber(j)) lua_pushnumber(L, j->valuedouble);
    else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        lua_createtable(L, cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0, 0);
        lua_Integer i = 1;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            push_json(L, e);
            if (cJSON_IsArray(j)) lua_rawseti(L, -2, i++);
            else lua_setfield(L, -2, e->string);
        }
    } else lua_pushboolean(L, 0);
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
    cJSON *root = cJSON_Parse(meta);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        if (meta[0] == '{' && meta[1] == '[')
            return nl_dsl_error(L, "%s: the trainer metadata is Lua code (written by an older nnlab), "
                                "which is no longer run when loading; nn.load(path) still reads the "
                                "network", path);
        return nl_dsl_error(L, "%s: corrupt trainer metadata (not a JSON object)", path);
    }
    push_json(L, root);
    cJSON_Delete(root);
    return 1;
}

/* P.load_trainer(path, optim_kind) -> net, opt: the network and an optimizer of that kind with
 * the file's hyper-parameters, step count and state. */
static int p_load_trainer(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    const char *kind_name = luaL_checkstring(L, 2);
    nl_optim_kind kind = nl_optim_kind_parse(kind_name);
    if (kind == NL_OPTIM_KIND_COUNT) nl_dsl_error(L, "%s: unknown optimizer '%s'", path, kind_name);
    nl_st_file *f = push_file(L, path);
    nl_module **box = push_empty_box(L);
    *box = nl_checkpoint_module_from(f);
    adopt_box(L);
    nl_lua_optim *opt = nl_lua_newoptim(L);
    if (!(opt->o = nl_optim_new(kind, *box, NULL))) return nl_dsl_core_error(L);
    check_status(L, nl_checkpoint_load_optim(f, opt->o));
    return 2;
}

/* ================================================================ nn functions =========== */

static int l_load(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    nl_device dev = NL_CPU;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "device");
        if (!lua_isnil(L, -1)) dev = nl_dsl_checkdevice(L, lua_absindex(L, -1));
        lua_pop(L, 1);
    }
    nl_module **box = push_empty_box(L);
    *box = nl_checkpoint_load_module(path);
    adopt_box(L);
    if (dev != NL_CPU) check_status(L, nl_module_to(*box, dev));
    return 1;
}

static int l_interrupt(lua_State *L)
{
    (void)L;
    nl_interrupt();
    return 0;
}

static int l_is_module(lua_State *L)
{
    lua_pushboolean(L, nl_lua_tomodule(L, 1) != NULL);
    return 1;
}

/* ================================================================ registration =========== */

static const nl_dsl_fn nn_fns[] = {
    {"CrossEntropyLoss", l_cross_entropy, "nn.CrossEntropyLoss([{label_smoothing=0}]) -> Loss",
     "Cross-entropy of logits [N, C] against class labels 1..C ([N], i32 or whole f32 numbers) or "
     "probabilities [N, C]; mean over the batch. loss:forward(out, y) -> number, loss:backward() -> grad.",
     "loss = nn.CrossEntropyLoss(); print(loss:forward(tensor.zeros(2, 3), tensor.from({1, 3}, \"i32\")))"},
    {"DistillLoss", l_distill, "nn.DistillLoss{teacher=net, temperature=4, alpha=0.9} -> Loss",
     "Knowledge distillation (Hinton et al.): alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) "
     "+ (1 - alpha) * cross-entropy with the labels; the teacher runs in eval mode on each batch. "
     "Use it as a Trainer's loss; by hand: loss:forward(output, labels, input).",
     "t = nn.Linear(4, 3); l = nn.DistillLoss{teacher = t}; x = tensor.randn(2, 4); print(l:forward(nn.Linear(4, 3)(x), {1, 2}, x))"},
    {"MSELoss", l_mse, "nn.MSELoss() -> Loss",
     "Mean squared error between an input and an f32 target of the same shape.",
     "print(nn.MSELoss():forward(tensor.ones(2, 2), tensor.zeros(2, 2)))"},
    {"TensorDataset", ds_new, "nn.TensorDataset(x, y) -> dataset",
     "A data set of x [N, ...] with class labels y [N] (1-based; i32 or whole f32 numbers) or f32 "
     "targets y [N, ...]. ds:size(), ds:get(i) -> x_i, y_i, ds:batch(indices) -> x, y (gathered in C).",
     "ds = nn.TensorDataset(tensor.randn(10, 2), tensor.ones(10, \"i32\")); print(ds:get(3))"},
    {"load", l_load, "nn.load(path [, {device=\"sim\"}]) -> Module",
     "Reads a network saved with m:save(path) (a safetensors file: architecture and weights), onto "
     "the CPU or the device given.",
     "local p = os.tmpname(); nn.Linear(2, 1):save(p); print(nn.load(p)); os.remove(p)"},
    {"is_module", l_is_module, "nn.is_module(x) -> boolean", "Whether x is a Module (a layer or a network).",
     "print(nn.is_module(nn.ReLU()))"},
    {"_interrupt", l_interrupt, "nn._interrupt()",
     "Test hook: raises the Ctrl-C flag as the REPL's handler does (a running fit pauses at the "
     "next batch).",
     "nn._interrupt(); nn._poll_interrupt()"},
    {"_poll_interrupt", p_poll_interrupt, "nn._poll_interrupt() -> boolean",
     "Test hook: whether the Ctrl-C flag is up, clearing it.", "print(nn._poll_interrupt())"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn module_methods[] = {
    {"forward", m_forward, "m:forward(x) -> Tensor",
     "Runs the layer or network on x (also m(x)); keeps the input and output for backward.",
     "print(nn.Linear(3, 2):forward(tensor.ones(4, 3)):shape())"},
    {"backward", m_backward, "m:backward(grad_out) -> grad_in",
     "Given dL/d(output) of the last forward, returns dL/d(input) and ADDS the parameter gradients.",
     "m = nn.Linear(3, 2); m:forward(tensor.ones(4, 3)); print(m:backward(tensor.ones(4, 2)):shape())"},
    {"parameters", m_parameters, "m:parameters() -> {{name=, value=, grad=}, ...}",
     "The trainable parameters, named by 1-based child path (\"2.weight\"); value and grad share memory "
     "with the layer, so editing them in place edits it.",
     "for _, p in ipairs(nn.Linear(3, 2):parameters()) do print(p.name, p.value:shape()[1]) end"},
    {"buffers", m_buffers, "m:buffers() -> {{name=, value=}, ...}",
     "State that is not trained (batch-norm running statistics), named like parameters().",
     "print(#nn.BatchNorm2d(4):buffers())"},
    {"zero_grad", m_zero_grad, "m:zero_grad() -> m", "Sets every parameter gradient to zero.",
     "nn.Linear(2, 2):zero_grad()"},
    {"train", m_train, "m:train([on]) -> m",
     "Training mode (dropout active, batch norm uses batch statistics); m:train(false) = m:eval().",
     "nn.Dropout(0.5):train()"},
    {"eval", m_eval, "m:eval() -> m", "Evaluation mode (dropout off, batch norm uses running statistics).",
     "nn.Dropout(0.5):eval()"},
    {"output", m_output, "m:output() -> Tensor or nil", "The output of the last forward (shares memory).",
     "m = nn.ReLU(); m:forward(tensor.from{-1, 2}); print(m:output())"},
    {"input", m_input, "m:input() -> Tensor or nil", "The input of the last forward (shares memory).",
     "m = nn.ReLU(); m:forward(tensor.from{-1, 2}); print(m:input())"},
    {"to", m_to, "m:to(device) -> m",
     "Moves every parameter, gradient, buffer and layer state to a device: \"cpu\", \"sim\", "
     "\"cuda\", \"cuda:1\" ... (Tensors taken from m before refer to the old copies). Integer layers "
     "(quant.int8/int4) stay on the CPU: moving them elsewhere is an error.",
     "nn.Linear(2, 2):to(\"sim\")"},
    {"device", m_device, "m:device() -> string",
     "The device of m's parameters (\"cpu\" for a network without any); the Trainer and "
     "nn.evaluate move each batch there.",
     "print(nn.Linear(2, 2):to(\"sim\"):device())"},
    {"clone", m_clone, "m:clone() -> Module",
     "An independent deep copy: the same layers, parameters and buffers, sharing no memory.",
     "l = nn.Linear(2, 2); s = nn.Sequential{l, nn.Tanh(), l:clone()}"},
    {"save", m_save, "m:save(path) -> m",
     "Writes the architecture and weights to a safetensors file (atomically); nn.load(path) reads it.",
     "local p = os.tmpname(); nn.Linear(2, 1):save(p); os.remove(p)"},
    {"add", m_add, "c:add(module) -> c", "Appends a module to a Sequential or Residual.",
     "net = nn.Sequential(); net:add(nn.Linear(2, 2)); print(#net)"},
    {"insert", m_insert, "c:insert(i, module) -> c", "Inserts a module at position i (1-based) of a container.",
     "net = nn.Sequential(nn.ReLU()); net:insert(1, nn.Linear(2, 2)); print(net)"},
    {"remove", m_remove, "c:remove([i]) -> module",
     "Removes and returns the module at position i (default: the last) of a container.",
     "net = nn.Sequential(nn.Linear(2, 2), nn.ReLU()); print(net:remove(2), #net)"},
    {"infer", m_infer, "m:infer(input_shape) -> output_shape, macs",
     "The output shape for an input shape and the multiply-adds of that forward pass, without running it.",
     "print(nn.Conv2d(3, 8, 3):infer{1, 3, 32, 32})"},
    {"type", m_type, "m:type() -> string", "The layer type's name: \"Conv2d\", \"Sequential\", ...",
     "print(nn.ReLU():type())"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn loss_methods[] = {
    {"forward", loss_forward, "loss:forward(input, target) -> number",
     "The mean loss (also loss(input, target)); class labels are 1-based.",
     "print(nn.CrossEntropyLoss():forward(tensor.zeros(1, 4), {2}))"},
    {"backward", loss_backward, "loss:backward([scale]) -> Tensor",
     "dLoss/dInput of the last forward (times scale).",
     "l = nn.MSELoss(); l:forward(tensor.ones(2), tensor.zeros(2)); print(l:backward())"},
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

static const luaL_Reg private_fns[] = {
    {"collate", p_collate},
    {"train_step", p_train_step},
    {"profile", p_profile},
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

/* Creates metatable name with the given metamethods and a plain `methods` table (also __index
 * unless index is given), and records the methods' help under type. Leaves nothing on the stack. */
static void new_type(lua_State *L, const char *name, const luaL_Reg *meta, const nl_dsl_fn *methods,
                     lua_CFunction index)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    for (const nl_dsl_fn *f = methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "methods");
    if (index) lua_pushcfunction(L, index);
    else lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_pop(L, 2);
    nl_dsl_register_methods(L, name, methods);
}

int nl_open_nn(lua_State *L)
{
    /* Module boxes by module, weak-valued so a box dies with its last Lua reference. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, BOXES_KEY);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);

    static const luaL_Reg module_meta[] = {
        {"__len", m_len}, {"__tostring", m_tostring}, {"__gc", m_gc}, {"__call", m_forward},
        {"__newindex", m_newindex}, {NULL, NULL}};
    new_type(L, NL_MODULE_MT, module_meta, module_methods, m_index);
    static const luaL_Reg loss_meta[] = {
        {"__call", loss_call}, {"__tostring", loss_tostring}, {"__gc", loss_gc}, {NULL, NULL}};
    new_type(L, LOSS_MT, loss_meta, loss_methods, loss_index);
    static const luaL_Reg dataset_meta[] = {
        {"__len", ds_size}, {"__tostring", ds_tostring}, {"__gc", ds_gc}, {NULL, NULL}};
    new_type(L, DATASET_MT, dataset_meta, dataset_methods, NULL);
    luaL_newmetatable(L, STATS_MT);
    lua_pushcfunction(L, stats_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newmetatable(L, FILE_MT);
    lua_pushcfunction(L, file_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 2);

    nl_dsl_register(L, "nn", nn_fns);
    /* One constructor per module type: a closure over the type, documented by the type's own
     * sig, doc and example. */
    lua_getglobal(L, "nn");
    int ntypes = 0;
    while (nl_module_types[ntypes]) ntypes++;
    nl_dsl_fn *rows = lua_newuserdatauv(L, (size_t)(ntypes + 1) * sizeof *rows, 0);
    for (int i = 0; i < ntypes; i++) {
        const nl_module_type *t = nl_module_types[i];
        lua_pushlightuserdata(L, (void *)t);
        lua_pushcclosure(L, nl_lua_module_new, 1);
        lua_setfield(L, -3, t->name);
        rows[i] = (nl_dsl_fn){t->name, NULL, t->sig, t->doc, t->example};
    }
    rows[ntypes] = (nl_dsl_fn){NULL, NULL, NULL, NULL, NULL};
    nl_dsl_register(L, "nn", rows);
    lua_pop(L, 2);

    /* dsl/nn.lua: the Trainer, nn.evaluate, schedules, summary; it returns help rows for what it
     * defines: {{group, name, sig, doc, example, method = bool}, ...}. */
    if (luaL_loadbuffer(L, nl_lua_nn, nl_lua_nn_len, "=dsl/nn.lua") != LUA_OK) return lua_error(L);
    luaL_newlib(L, private_fns);
    luaL_getmetatable(L, NL_MODULE_MT);
    lua_call(L, 2, 1);
    nl_dsl_register_rows(L, -1, "nn");
    lua_pop(L, 1);
    return nl_open_nndefine(L);
}
