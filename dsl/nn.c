/* nn.c: the Lua module `nn`: layers built generically from the core's module types and the Module
 * userdata (children, parameters, forward/backward, printing, checkpoints). Losses are in
 * dsl/nnloss.c, TensorDataset in dsl/nndata.c, the Trainer's C helpers in dsl/nntrain.c. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include "checkpoint.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* dsl/nn.lua, embedded by the Makefile. */
extern const char nl_lua_nn[];
extern const size_t nl_lua_nn_len;

#define BOXES_KEY "nnlab.modules" /* registry: lightuserdata(module) -> its box, weak values */

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

nl_module **nl_lua_newmodulebox(lua_State *L)
{
    nl_module **box = lua_newuserdatauv(L, sizeof *box, 2);
    *box = NULL;
    luaL_setmetatable(L, NL_MODULE_MT);
    return box;
}

void nl_lua_adoptmodulebox(lua_State *L)
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
    nl_module **box = nl_lua_newmodulebox(L);
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
    nl_module **box = nl_lua_newmodulebox(L);
    int box_idx = lua_gettop(L);
    *box = nl_module_new(t, args);
    nl_lua_adoptmodulebox(L);
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
        nl_lua_pushshared(L, p->value);
        lua_setfield(L, -2, "value");
        nl_lua_pushshared(L, p->grad);
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
    nl_lua_pushshared(L, nl_lua_checkmodule(L, 1)->output);
    return 1;
}

static int m_input(lua_State *L)
{
    nl_lua_pushshared(L, nl_lua_checkmodule(L, 1)->input);
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
    nl_module **box = nl_lua_newmodulebox(L);
    *box = nl_module_clone(m);
    nl_lua_adoptmodulebox(L);
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
            nl_lua_pushshared(L, p->value);
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
    nl_module **box = nl_lua_newmodulebox(L);
    *box = nl_checkpoint_load_module(path);
    nl_lua_adoptmodulebox(L);
    if (dev != NL_CPU) check_status(L, nl_module_to(*box, dev));
    return 1;
}

static int l_is_module(lua_State *L)
{
    lua_pushboolean(L, nl_lua_tomodule(L, 1) != NULL);
    return 1;
}
/* ================================================================ registration =========== */

static const nl_dsl_fn nn_fns[] = {
    {"load", l_load, "nn.load(path [, {device=\"sim\"}]) -> Module",
     "Reads a network saved with m:save(path) (a safetensors file: architecture and weights), onto "
     "the CPU or the device given.",
     "local p = os.tmpname(); nn.Linear(2, 1):save(p); print(nn.load(p)); os.remove(p)"},
    {"is_module", l_is_module, "nn.is_module(x) -> boolean", "Whether x is a Module (a layer or a network).",
     "print(nn.is_module(nn.ReLU()))"},
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

void nl_lua_newtype(lua_State *L, const char *name, const luaL_Reg *meta, const nl_dsl_fn *methods,
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
    nl_lua_newtype(L, NL_MODULE_MT, module_meta, module_methods, m_index);

    nl_dsl_register(L, "nn", nn_fns);
    nl_open_nnloss(L);
    nl_open_nndata(L);
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
    nl_open_nntrain(L);
    luaL_getmetatable(L, NL_MODULE_MT);
    lua_call(L, 2, 1);
    nl_dsl_register_rows(L, -1, "nn");
    lua_pop(L, 1);
    return nl_open_nndefine(L);
}
