/* nndefine.c: layers written in Lua (nn.define): each class becomes a module type registered with
 * the core, whose forward, backward, init and infer call the class's Lua functions under
 * lua_pcall and turn a Lua error into a status, so no longjmp crosses the core. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* dsl/nndefine.lua, embedded by the Makefile. */
extern const char nl_lua_nndefine[];
extern const size_t nl_lua_nndefine_len;

/* A class: the module type the core sees (first member, so a module's type pointer is the class),
 * the Lua state and the class's spec table (a registry reference). Lives as long as the process:
 * modules and checkpoints refer to their type. */
typedef struct {
    nl_module_type t;
    lua_State *L;
    int spec_ref;
    char name[32];
    char sig[200];
    char doc[200];
    char example[120];
    char argnames[NL_MAX_ARGS][24];
} lua_class;

/* Per module: its fields table (a registry reference), so fields set by forward for backward
 * persist however many Lua boxes the module gets over its life. */
typedef struct {
    int fields_ref;
} lua_instance;

static nl_status class_init(nl_module *m);

static const lua_class *class_of(const nl_module *m)
{
    return m->type->init == class_init ? (const lua_class *)m->type : NULL;
}

bool nl_lua_push_fields(lua_State *L, const nl_module *m)
{
    if (!class_of(m) || !m->state) return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ((const lua_instance *)m->state)->fields_ref);
    return true;
}

static void push_shared_tensor(lua_State *L, nl_tensor *t)
{
    if (!t) {
        lua_pushnil(L);
        return;
    }
    nl_tensor **box = nl_lua_newbox(L);
    *box = nl_tensor_retain(t);
}

/* Pushes the class's function `what` (nil when the spec has none) after checking the stack. */
static int push_method(const lua_class *c, const char *what)
{
    lua_State *L = c->L;
    luaL_checkstack(L, 8, "nn.define");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->spec_ref);
    int type = lua_getfield(L, -1, what);
    lua_remove(L, -2);
    return type;
}

/* Runs the function and nargs arguments on top under lua_pcall; on error returns a status whose
 * message names the class and the method. */
static nl_status call(const lua_class *c, const char *what, int nargs, int nres)
{
    lua_State *L = c->L;
    if (lua_pcall(L, nargs, nres, 0) == LUA_OK) return NL_OK;
    const char *msg = lua_tostring(L, -1);
    nl_status st = nl_seterr(NL_EINVAL, "%s:%s: %s", c->name, what, msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    if (nl_interrupted()) return nl_seterr(NL_EINTR, "interrupted");
    return st;
}

static nl_status class_init(nl_module *m)
{
    const lua_class *c = (const lua_class *)m->type;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_instance *in = malloc(sizeof *in);
    if (!in) return nl_seterr(NL_ENOMEM, "%s: out of memory", c->name);
    lua_newtable(L);
    in->fields_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    m->state = in;
    nl_status st = NL_OK;
    if (push_method(c, "init") == LUA_TFUNCTION) {
        nl_lua_pushmodule(L, m);
        int n = 0;
        while (n < NL_MAX_ARGS && c->t.args[n].name) lua_pushnumber(L, m->args[n++]);
        st = call(c, "init", n + 1, 0);
    }
    lua_settop(L, top);
    return st;
}

static void class_destroy(nl_module *m)
{
    const lua_class *c = (const lua_class *)m->type;
    lua_instance *in = m->state;
    if (in) luaL_unref(c->L, LUA_REGISTRYINDEX, in->fields_ref);
    free(in);
    m->state = NULL;
}

/* The tensor on top, checked, as a new reference (pops it). */
static nl_status take_tensor(const lua_class *c, const char *what, nl_tensor **out)
{
    nl_tensor *t = nl_lua_totensor(c->L, -1);
    if (!t) {
        nl_status st = nl_seterr(NL_ETYPE, "%s:%s must return a Tensor, returned %s", c->name, what,
                                 luaL_typename(c->L, -1));
        lua_pop(c->L, 1);
        return st;
    }
    *out = nl_tensor_retain(t);
    lua_pop(c->L, 1);
    return NL_OK;
}

static nl_status class_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    const lua_class *c = (const lua_class *)m->type;
    int top = lua_gettop(c->L);
    push_method(c, "forward");
    nl_lua_pushmodule(c->L, m);
    push_shared_tensor(c->L, x);
    nl_status st = call(c, "forward", 2, 1);
    if (st == NL_OK) st = take_tensor(c, "forward", y);
    lua_settop(c->L, top);
    return st;
}

static bool same_shape(const nl_tensor *a, const nl_tensor *b)
{
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0;
}

/* backward(self, x, gy) -> gx, {name = gradient, ...}: the gradients are added into the module's
 * parameter gradients (accumulated, as every layer does). */
static nl_status class_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    const lua_class *c = (const lua_class *)m->type;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    char a[NL_MAX_DIMS * 24], b[NL_MAX_DIMS * 24];
    push_method(c, "backward");
    nl_lua_pushmodule(L, m);
    push_shared_tensor(L, m->input);
    push_shared_tensor(L, gy);
    nl_status st = call(c, "backward", 3, 2);
    if (st != NL_OK) goto out;
    int grads = lua_gettop(L);
    for (int i = 0; i < m->nparams && st == NL_OK; i++) {
        nl_param *p = &m->params[i];
        if (!p->grad) continue;
        if (lua_type(L, grads) != LUA_TTABLE) {
            st = nl_seterr(NL_EINVAL, "%s:backward must return gx and a table of parameter gradients "
                           "{%s = ...}, returned no table", c->name, p->name);
            break;
        }
        lua_getfield(L, grads, p->name);
        nl_tensor *g = nl_lua_totensor(L, -1);
        if (!g)
            st = nl_seterr(NL_EINVAL, "%s:backward returned no gradient for parameter '%s'", c->name, p->name);
        else if (!same_shape(g, p->grad))
            st = nl_seterr(NL_ESHAPE, "%s:backward: the gradient of '%s' is %s, the parameter is %s",
                           c->name, p->name, nl_shape_str(a, sizeof a, g->ndim, g->shape),
                           nl_shape_str(b, sizeof b, p->grad->ndim, p->grad->shape));
        else
            st = nl_binary(NL_BIN_ADD, p->grad, p->grad, g);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    nl_tensor *g = NULL;
    if (st == NL_OK) st = take_tensor(c, "backward", &g);
    if (st == NL_OK && m->input && !same_shape(g, m->input))
        st = nl_seterr(NL_ESHAPE, "%s:backward returned a gradient of shape %s for an input of shape %s",
                       c->name, nl_shape_str(a, sizeof a, g->ndim, g->shape),
                       nl_shape_str(b, sizeof b, m->input->ndim, m->input->shape));
    if (st == NL_OK) *gx = g;
    else nl_tensor_release(g);
out:
    lua_settop(L, top);
    return st;
}

/* The output shape: the class's infer(self, shape) -> shape when it has one, else the shape of a
 * forward on zeros (which leaves the module's kept input and output alone). No multiply-adds. */
static nl_status class_infer(const nl_module *cm, int ndim, const int64_t *in, int *out_ndim,
                             int64_t *out, int64_t *macs)
{
    nl_module *m = (nl_module *)cm;
    const lua_class *c = (const lua_class *)m->type;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    *macs = 0;
    nl_status st;
    bool custom = push_method(c, "infer") == LUA_TFUNCTION;
    if (!custom) {
        lua_pop(L, 1);
        push_method(c, "forward");
    }
    nl_lua_pushmodule(L, m);
    if (custom) {
        lua_createtable(L, ndim, 0);
        for (int i = 0; i < ndim; i++) {
            lua_pushinteger(L, in[i]);
            lua_rawseti(L, -2, i + 1);
        }
        st = call(c, "infer", 2, 1);
        if (st == NL_OK && lua_type(L, -1) != LUA_TTABLE)
            st = nl_seterr(NL_ETYPE, "%s:infer must return a shape table", c->name);
        int n = st == NL_OK ? (int)lua_rawlen(L, -1) : 0;
        if (st == NL_OK && (n < 1 || n > NL_MAX_DIMS))
            st = nl_seterr(NL_ESHAPE, "%s:infer returned a shape with %d sizes", c->name, n);
        for (int i = 0; st == NL_OK && i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok || v < 0) st = nl_seterr(NL_ESHAPE, "%s:infer: size %d is not a whole number >= 0", c->name, i + 1);
            out[i] = v;
        }
        *out_ndim = n;
    } else {
        nl_tensor **box = nl_lua_newbox(L);
        if (!(*box = nl_tensor_zeros(NL_F32, ndim, in, nl_module_device(m)))) {
            lua_settop(L, top);
            return nl_errcode();
        }
        st = call(c, "forward", 2, 1);
        nl_tensor *y = NULL;
        if (st == NL_OK) st = take_tensor(c, "forward", &y);
        if (st == NL_OK) {
            *out_ndim = y->ndim;
            memcpy(out, y->shape, (size_t)y->ndim * sizeof *out);
        }
        nl_tensor_release(y);
    }
    lua_settop(L, top);
    return st;
}

/* Reads a string field of the spec into buf (empty when absent). */
static void spec_string(lua_State *L, int spec, const char *key, char *buf, size_t n)
{
    lua_getfield(L, spec, key);
    snprintf(buf, n, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
}

/* P.define(name, spec) -> the class's constructor (nn.<builtin>'s generic constructor over the new
 * type). The spec is checked by nn.define in dsl/nndefine.lua. */
static int p_define(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_class *c = calloc(1, sizeof *c);
    if (!c) return nl_dsl_error(L, "nn.define: out of memory");
    snprintf(c->name, sizeof c->name, "%s", name);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    c->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    int nargs = 0;
    if (lua_getfield(L, 2, "args") == LUA_TTABLE) {
        nargs = (int)lua_rawlen(L, -1);
        for (int i = 0; i < nargs && i < NL_MAX_ARGS; i++) {
            lua_rawgeti(L, -1, i + 1);
            snprintf(c->argnames[i], sizeof c->argnames[i], "%s", lua_tostring(L, -1));
            lua_pop(L, 1);
            c->t.args[i] = (nl_argspec){.name = c->argnames[i], .def = NAN, .min = -HUGE_VAL,
                                        .doc = "a constructor argument of the Lua class"};
        }
    }
    lua_pop(L, 1);
    size_t len = (size_t)snprintf(c->sig, sizeof c->sig, "%s(", c->name);
    for (int i = 0; i < nargs && len < sizeof c->sig; i++)
        len += (size_t)snprintf(c->sig + len, sizeof c->sig - len, "%s%s", i ? ", " : "", c->argnames[i]);
    if (len < sizeof c->sig) snprintf(c->sig + len, sizeof c->sig - len, ")");
    spec_string(L, 2, "doc", c->doc, sizeof c->doc);
    if (!c->doc[0]) snprintf(c->doc, sizeof c->doc, "A layer written in Lua (nn.define).");
    snprintf(c->example, sizeof c->example, "%.100s", c->sig);
    c->t.name = c->name;
    c->t.sig = c->sig;
    c->t.doc = c->doc;
    c->t.example = c->example;
    c->t.npos = nargs;
    c->t.init = class_init;
    c->t.forward = class_forward;
    c->t.backward = class_backward;
    c->t.infer = class_infer;
    c->t.destroy = class_destroy;
    c->t.prunable_weight = true; /* its parameter "weight", when it has one */
    lua_pushvalue(L, 2);
    c->spec_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (nl_module_type_register(&c->t) != NL_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->spec_ref);
        free(c);
        return nl_dsl_core_error(L);
    }
    lua_pushlightuserdata(L, &c->t);
    lua_pushcclosure(L, nl_lua_module_new, 1);
    return 1;
}

/* P.add_parameter(m, name, tensor, with_grad): for a Lua class's init. */
static int p_add_parameter(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    const char *name = luaL_checkstring(L, 2);
    nl_tensor *t = nl_lua_checktensor(L, 3);
    if (!class_of(m))
        return nl_dsl_error(L, "add_parameter: %s is a built-in layer; only layers written in Lua "
                            "(nn.define) take new parameters", m->type->name);
    if (m->nparams >= NL_MAX_PARAMS)
        return nl_dsl_error(L, "add_parameter: %s already has %d parameters, the most a layer holds",
                            m->type->name, NL_MAX_PARAMS);
    if (nl_module_add_param(m, name, t, lua_toboolean(L, 4)) != NL_OK) return nl_dsl_core_error(L);
    lua_settop(L, 1);
    return 1;
}

/* P.is_defined(m) -> whether m's type was written in Lua. */
static int p_is_defined(lua_State *L)
{
    lua_pushboolean(L, class_of(nl_lua_checkmodule(L, 1)) != NULL);
    return 1;
}

/* ================================================================ losses in Lua ========= */

/* A loss written in Lua: its spec table (a registry reference; also `self` in its functions). */
typedef struct {
    lua_State *L;
    int spec_ref;
    char name[32];
} lua_lossdef;

/* Pushes the target as Lua sees it: class labels 1-based (the core holds them 0-based). */
static nl_status push_target(lua_State *L, nl_tensor *target)
{
    nl_tensor **box = nl_lua_newbox(L);
    if (target->dtype != NL_I32) {
        *box = nl_tensor_retain(target);
        return NL_OK;
    }
    *box = nl_tensor_empty_like(target);
    if (!*box) return nl_errcode();
    return nl_binary_scalar(NL_BIN_ADD, *box, target, 1.0, false);
}

/* Pushes spec.what, self (the spec) and the input and target. */
static nl_status push_loss_call(lua_lossdef *d, const char *what, nl_tensor *input, nl_tensor *target)
{
    lua_State *L = d->L;
    luaL_checkstack(L, 8, "nn.Loss");
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->spec_ref);
    lua_getfield(L, -1, what);
    lua_insert(L, -2);
    push_shared_tensor(L, input);
    return push_target(L, target);
}

static nl_status loss_call(lua_lossdef *d, const char *what, int nargs)
{
    lua_State *L = d->L;
    if (lua_pcall(L, nargs, 1, 0) == LUA_OK) return NL_OK;
    const char *msg = lua_tostring(L, -1);
    nl_status st = nl_seterr(NL_EINVAL, "%s:%s: %s", d->name, what, msg ? msg : "(error object is not a string)");
    if (nl_interrupted()) st = nl_seterr(NL_EINTR, "interrupted");
    return st;
}

static nl_status lossdef_forward(void *ctx, nl_tensor *input, nl_tensor *target, double *loss)
{
    lua_lossdef *d = ctx;
    int top = lua_gettop(d->L);
    nl_status st = push_loss_call(d, "forward", input, target);
    if (st == NL_OK) st = loss_call(d, "forward", 3);
    if (st == NL_OK) {
        int ok;
        *loss = lua_tonumberx(d->L, -1, &ok);
        if (!ok) {
            nl_tensor *t = nl_lua_totensor(d->L, -1);
            if (t && nl_tensor_numel(t) == 1) st = nl_tensor_item(t, loss);
            else st = nl_seterr(NL_ETYPE, "%s:forward must return a number, returned %s", d->name,
                                luaL_typename(d->L, -1));
        }
    }
    lua_settop(d->L, top);
    return st;
}

static nl_status lossdef_backward(void *ctx, nl_tensor *input, nl_tensor *target, double grad,
                                  nl_tensor **ginput)
{
    lua_lossdef *d = ctx;
    lua_State *L = d->L;
    int top = lua_gettop(L);
    nl_status st = push_loss_call(d, "backward", input, target);
    if (st == NL_OK) st = loss_call(d, "backward", 3);
    nl_tensor *g = NULL;
    if (st == NL_OK && !(g = nl_lua_totensor(L, -1)))
        st = nl_seterr(NL_ETYPE, "%s:backward must return a Tensor, returned %s", d->name, luaL_typename(L, -1));
    char a[NL_MAX_DIMS * 24], b[NL_MAX_DIMS * 24];
    if (st == NL_OK && !same_shape(g, input))
        st = nl_seterr(NL_ESHAPE, "%s:backward returned a gradient of shape %s for an input of shape %s",
                       d->name, nl_shape_str(a, sizeof a, g->ndim, g->shape),
                       nl_shape_str(b, sizeof b, input->ndim, input->shape));
    if (st == NL_OK && grad != 1.0) {
        nl_tensor *scaled = nl_tensor_empty_like(g);
        st = scaled ? nl_binary_scalar(NL_BIN_MUL, scaled, g, grad, false) : nl_errcode();
        if (st == NL_OK) *ginput = scaled;
        else nl_tensor_release(scaled);
    } else if (st == NL_OK) {
        *ginput = nl_tensor_retain(g);
    }
    lua_settop(L, top);
    return st;
}

static void lossdef_release(void *ctx)
{
    lua_lossdef *d = ctx;
    luaL_unref(d->L, LUA_REGISTRYINDEX, d->spec_ref);
    free(d);
}

static const nl_loss_ops lossdef_ops = {lossdef_forward, lossdef_backward, lossdef_release};

void nl_lua_loss_tostring(lua_State *L, const nl_loss *l)
{
    lua_pushfstring(L, "%s()", ((const lua_lossdef *)l->ctx)->name);
}

/* P.loss(name, spec) -> a Loss (the spec is checked by nn.Loss in dsl/nndefine.lua). */
static int p_loss(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    nl_loss *l = lua_newuserdatauv(L, sizeof *l, 0);
    memset(l, 0, sizeof *l);
    luaL_setmetatable(L, NL_LOSS_MT);
    lua_lossdef *d = calloc(1, sizeof *d);
    if (!d) return nl_dsl_error(L, "nn.Loss: out of memory");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    d->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    snprintf(d->name, sizeof d->name, "%s", name);
    lua_pushvalue(L, 2);
    d->spec_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l->kind = NL_LOSS_CUSTOM;
    l->ops = &lossdef_ops;
    l->ctx = d;
    return 1;
}

static int p_is_loss(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, NL_LOSS_MT) != NULL);
    return 1;
}

int nl_open_nndefine(lua_State *L)
{
    static const luaL_Reg private_fns[] = {
        {"is_loss", p_is_loss},
        {"loss", p_loss},
        {"define", p_define},
        {"add_parameter", p_add_parameter},
        {"is_defined", p_is_defined},
        {NULL, NULL},
    };
    /* dsl/nndefine.lua: nn.define, nn.Module, nn.gradcheck and m:add_parameter; it returns their
     * help rows. */
    if (luaL_loadbuffer(L, nl_lua_nndefine, nl_lua_nndefine_len, "=dsl/nndefine.lua") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, private_fns);
    luaL_getmetatable(L, NL_MODULE_MT);
    lua_call(L, 2, 1);
    nl_dsl_register_rows(L, -1, "nn");
    lua_pop(L, 1);
    return 0;
}
