/* optim.c: the Lua module `optim`: SGD, Adam and AdamW over a network's parameters (the
 * Optimizer userdata) with gradient clipping; the learning-rate schedules are in dsl/nn.lua. */
#include "dsl.h"
#include "lnn.h"

#include <lauxlib.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------- boxes ----------------- */

nl_lua_optim *nl_lua_newoptim(lua_State *L)
{
    nl_lua_optim *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->o = NULL;
    b->clip = 0;
    luaL_setmetatable(L, NL_OPTIM_MT);
    return b;
}

nl_lua_optim *nl_lua_checkoptim(lua_State *L, int idx)
{
    nl_lua_optim *b = luaL_checkudata(L, idx, NL_OPTIM_MT);
    if (!b->o) luaL_argerror(L, idx, "optimizer is closed");
    return b;
}

/* ---------------------------------------------------------------- construction ---------- */

/* The options each kind accepts, and where each goes. */
typedef enum { OPT_NUMBER, OPT_BOOL, OPT_BETAS, OPT_CLIP } opt_kind;
typedef struct {
    const char *name;
    opt_kind kind;
    size_t offset; /* into nl_optim_config (numbers, booleans) */
} opt_spec;

#define CFG(field) offsetof(nl_optim_config, field)
static const opt_spec sgd_opts[] = {
    {"lr", OPT_NUMBER, CFG(lr)},
    {"momentum", OPT_NUMBER, CFG(momentum)},
    {"dampening", OPT_NUMBER, CFG(dampening)},
    {"nesterov", OPT_BOOL, CFG(nesterov)},
    {"weight_decay", OPT_NUMBER, CFG(weight_decay)},
    {"clip", OPT_CLIP, 0},
    {NULL, 0, 0},
};
static const opt_spec adam_opts[] = {
    {"lr", OPT_NUMBER, CFG(lr)},
    {"betas", OPT_BETAS, 0},
    {"eps", OPT_NUMBER, CFG(eps)},
    {"weight_decay", OPT_NUMBER, CFG(weight_decay)},
    {"clip", OPT_CLIP, 0},
    {NULL, 0, 0},
};

static const char *const ctor_names[NL_OPTIM_KIND_COUNT] = {
    [NL_OPTIM_SGD] = "optim.SGD", [NL_OPTIM_ADAM] = "optim.Adam", [NL_OPTIM_ADAMW] = "optim.AdamW"};

static double check_clip(lua_State *L, double v, const char *fname)
{
    if (!(v >= 0) || !isfinite(v)) nl_dsl_error(L, "%s: clip must be a finite number >= 0, got %f", fname, v);
    return v;
}

/* Reads the options table at idx into cfg and *clip; *has_lr says whether lr was given. */
static void read_options(lua_State *L, int idx, nl_optim_kind kind, nl_optim_config *cfg,
                         double *clip, bool *has_lr)
{
    const char *fname = ctor_names[kind];
    const opt_spec *specs = kind == NL_OPTIM_SGD ? sgd_opts : adam_opts;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            nl_dsl_error(L, "%s: options are given by name ({lr = 0.1}), got a %s key", fname,
                       luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        const opt_spec *o = specs;
        while (o->name && strcmp(o->name, key) != 0) o++;
        if (!o->name) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const opt_spec *v = specs; v->name; v++) {
                if (v != specs) luaL_addstring(&b, ", ");
                luaL_addstring(&b, v->name);
            }
            luaL_pushresult(&b);
            nl_dsl_error(L, "%s: unknown option '%s' (valid: %s)", fname, key, lua_tostring(L, -1));
        }
        char *field = (char *)cfg + o->offset;
        if (o->kind == OPT_BOOL) {
            if (!lua_isboolean(L, -1))
                nl_dsl_error(L, "%s: %s must be true or false, got %s", fname, key, luaL_typename(L, -1));
            *(bool *)field = lua_toboolean(L, -1);
        } else if (o->kind == OPT_BETAS) {
            if (!lua_istable(L, -1) || luaL_len(L, -1) != 2)
                nl_dsl_error(L, "%s: betas must be a pair {beta1, beta2}", fname);
            for (int k = 0; k < 2; k++) {
                lua_geti(L, -1 - k, k + 1);
                if (!lua_isnumber(L, -1)) nl_dsl_error(L, "%s: betas must be numbers", fname);
            }
            cfg->beta1 = lua_tonumber(L, -2);
            cfg->beta2 = lua_tonumber(L, -1);
            lua_pop(L, 2);
        } else {
            if (lua_type(L, -1) != LUA_TNUMBER)
                nl_dsl_error(L, "%s: %s must be a number, got %s", fname, key, luaL_typename(L, -1));
            double v = lua_tonumber(L, -1);
            if (o->kind == OPT_CLIP) *clip = check_clip(L, v, fname);
            else *(double *)field = v;
            if (o->offset == CFG(lr) && o->kind == OPT_NUMBER) *has_lr = true;
        }
        lua_pop(L, 1);
    }
}

static int optim_new(lua_State *L, nl_optim_kind kind)
{
    const char *fname = ctor_names[kind];
    nl_module *net = nl_lua_tomodule(L, 1);
    if (!net) nl_dsl_error(L, "%s: the first argument must be a network (a Module), got %s", fname,
                         luaL_typename(L, 1));
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    nl_optim_config cfg = nl_optim_default_config(kind);
    double clip = 0;
    bool has_lr = false;
    if (!lua_isnoneornil(L, 2)) read_options(L, 2, kind, &cfg, &clip, &has_lr);
    if (kind == NL_OPTIM_SGD && !has_lr)
        nl_dsl_error(L, "optim.SGD: lr is required, e.g. optim.SGD(net, {lr = 0.1, momentum = 0.9})");
    if (nl_optim_check_config(kind, &cfg) != NL_OK) return nl_dsl_core_error(L);
    nl_lua_optim *b = nl_lua_newoptim(L);
    if (!(b->o = nl_optim_new(kind, net, &cfg))) return nl_dsl_core_error(L);
    b->clip = clip;
    return 1;
}

static int o_sgd(lua_State *L) { return optim_new(L, NL_OPTIM_SGD); }
static int o_adam(lua_State *L) { return optim_new(L, NL_OPTIM_ADAM); }
static int o_adamw(lua_State *L) { return optim_new(L, NL_OPTIM_ADAMW); }

/* ---------------------------------------------------------------- methods --------------- */

static int o_step(lua_State *L)
{
    nl_lua_optim *b = nl_lua_checkoptim(L, 1);
    if (b->clip > 0 && nl_clip_grad_norm(nl_optim_net(b->o), b->clip, NULL) != NL_OK)
        return nl_dsl_core_error(L);
    if (nl_optim_step(b->o) != NL_OK) return nl_dsl_core_error(L);
    lua_settop(L, 1);
    return 1;
}

static int o_zero_grad(lua_State *L)
{
    if (nl_optim_zero_grad(nl_lua_checkoptim(L, 1)->o) != NL_OK) return nl_dsl_core_error(L);
    lua_settop(L, 1);
    return 1;
}

static int o_lr(lua_State *L)
{
    lua_pushnumber(L, nl_optim_get_lr(nl_lua_checkoptim(L, 1)->o));
    return 1;
}

static int o_set_lr(lua_State *L)
{
    nl_lua_optim *b = nl_lua_checkoptim(L, 1);
    double lr = luaL_checknumber(L, 2);
    if (!(lr >= 0) || !isfinite(lr)) nl_dsl_error(L, "set_lr: lr must be a finite number >= 0, got %f", lr);
    nl_optim_set_lr(b->o, lr);
    lua_settop(L, 1);
    return 1;
}

static int o_clip_grad_norm(lua_State *L)
{
    nl_lua_optim *b = nl_lua_checkoptim(L, 1);
    double norm;
    if (nl_clip_grad_norm(nl_optim_net(b->o), luaL_checknumber(L, 2), &norm) != NL_OK)
        return nl_dsl_core_error(L);
    lua_pushnumber(L, norm);
    return 1;
}

static int o_set_clip(lua_State *L)
{
    nl_lua_optim *b = nl_lua_checkoptim(L, 1);
    b->clip = lua_isnoneornil(L, 2) ? 0 : check_clip(L, luaL_checknumber(L, 2), "set_clip");
    lua_settop(L, 1);
    return 1;
}

static int o_config(lua_State *L)
{
    nl_lua_optim *b = nl_lua_checkoptim(L, 1);
    const nl_optim_config *c = nl_optim_get_config(b->o);
    nl_optim_kind kind = nl_optim_get_kind(b->o);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, nl_optim_kind_name(kind));
    lua_setfield(L, -2, "kind");
    lua_pushnumber(L, c->lr);
    lua_setfield(L, -2, "lr");
    lua_pushnumber(L, c->weight_decay);
    lua_setfield(L, -2, "weight_decay");
    lua_pushnumber(L, b->clip);
    lua_setfield(L, -2, "clip");
    if (kind == NL_OPTIM_SGD) {
        lua_pushnumber(L, c->momentum);
        lua_setfield(L, -2, "momentum");
        lua_pushnumber(L, c->dampening);
        lua_setfield(L, -2, "dampening");
        lua_pushboolean(L, c->nesterov);
        lua_setfield(L, -2, "nesterov");
    } else {
        lua_createtable(L, 2, 0);
        lua_pushnumber(L, c->beta1);
        lua_rawseti(L, -2, 1);
        lua_pushnumber(L, c->beta2);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, -2, "betas");
        lua_pushnumber(L, c->eps);
        lua_setfield(L, -2, "eps");
    }
    return 1;
}

static int o_steps(lua_State *L)
{
    lua_pushinteger(L, nl_optim_steps(nl_lua_checkoptim(L, 1)->o));
    return 1;
}

static int o_tostring(lua_State *L)
{
    nl_lua_optim *b = luaL_checkudata(L, 1, NL_OPTIM_MT);
    if (!b->o) {
        lua_pushliteral(L, "Optimizer (closed)");
        return 1;
    }
    const nl_optim_config *c = nl_optim_get_config(b->o);
    nl_optim_kind kind = nl_optim_get_kind(b->o);
    char buf[256];
    if (kind == NL_OPTIM_SGD)
        snprintf(buf, sizeof buf, "SGD(lr=%g, momentum=%g, dampening=%g, nesterov=%s, weight_decay=%g",
                 c->lr, c->momentum, c->dampening, c->nesterov ? "true" : "false", c->weight_decay);
    else
        snprintf(buf, sizeof buf, "%s(lr=%g, betas={%g, %g}, eps=%g, weight_decay=%g",
                 kind == NL_OPTIM_ADAM ? "Adam" : "AdamW", c->lr, c->beta1, c->beta2, c->eps,
                 c->weight_decay);
    if (b->clip > 0) lua_pushfstring(L, "%s, clip=%f)", buf, b->clip);
    else lua_pushfstring(L, "%s)", buf);
    return 1;
}

static int o_gc(lua_State *L)
{
    nl_lua_optim *b = luaL_checkudata(L, 1, NL_OPTIM_MT);
    nl_optim_release(b->o);
    b->o = NULL;
    return 0;
}

/* ---------------------------------------------------------------- registration ---------- */

static const nl_dsl_fn optim_fns[] = {
    {"SGD", o_sgd,
     "optim.SGD(net, {lr=, momentum=0, dampening=0, nesterov=false, weight_decay=0, clip=0})",
     "Stochastic gradient descent as torch.optim.SGD (lr required); clip > 0 clips the global "
     "gradient norm before each step.",
     "opt = optim.SGD(nn.Linear(2, 1), {lr = 0.1, momentum = 0.9})"},
    {"Adam", o_adam, "optim.Adam(net, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, clip=0})",
     "Adam as torch.optim.Adam (weight decay added to the gradient).",
     "opt = optim.Adam(nn.Linear(2, 1), {lr = 1e-3})"},
    {"AdamW", o_adamw, "optim.AdamW(net, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2, clip=0})",
     "AdamW as torch.optim.AdamW (decoupled weight decay).",
     "opt = optim.AdamW(nn.Linear(2, 1), {weight_decay = 0.05})"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn optim_methods[] = {
    {"step", o_step, "opt:step() -> opt",
     "Updates every parameter from its gradient (clipping the global norm first when clip is set).",
     "net = nn.Linear(2, 1); opt = optim.SGD(net, {lr = 0.1}); net:forward(tensor.ones(1, 2)); "
     "net:backward(tensor.ones(1, 1)); opt:step()"},
    {"zero_grad", o_zero_grad, "opt:zero_grad() -> opt", "Sets the network's gradients to zero.",
     "optim.Adam(nn.Linear(2, 1)):zero_grad()"},
    {"lr", o_lr, "opt:lr() -> number", "The learning rate now.", "print(optim.Adam(nn.Linear(2, 1)):lr())"},
    {"set_lr", o_set_lr, "opt:set_lr(lr) -> opt", "Sets the learning rate (schedules do this each step).",
     "optim.Adam(nn.Linear(2, 1)):set_lr(1e-4)"},
    {"clip_grad_norm", o_clip_grad_norm, "opt:clip_grad_norm(max) -> norm",
     "Scales every gradient so that their global 2-norm is at most max (as "
     "torch.nn.utils.clip_grad_norm_); returns the norm before clipping.",
     "print(optim.SGD(nn.Linear(2, 1), {lr = 0.1}):clip_grad_norm(1.0))"},
    {"set_clip", o_set_clip, "opt:set_clip([max]) -> opt",
     "Clip the global gradient norm to max before every step (nil or 0: no clipping).",
     "optim.SGD(nn.Linear(2, 1), {lr = 0.1}):set_clip(5)"},
    {"config", o_config, "opt:config() -> table", "The kind and hyper-parameters.",
     "print(optim.Adam(nn.Linear(2, 1)):config().eps)"},
    {"steps", o_steps, "opt:steps() -> n", "Updates taken so far.", "print(optim.Adam(nn.Linear(2, 1)):steps())"},
    {NULL, NULL, NULL, NULL, NULL},
};

int nl_open_optim(lua_State *L)
{
    luaL_newmetatable(L, NL_OPTIM_MT);
    lua_pushcfunction(L, o_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, o_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    for (const nl_dsl_fn *f = optim_methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    nl_dsl_register_methods(L, NL_OPTIM_MT, optim_methods);
    nl_dsl_register(L, "optim", optim_fns);
    return 0;
}
