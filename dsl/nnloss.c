/* nnloss.c: the Loss userdata of the Lua module `nn` (cross-entropy, MSE, distillation; losses
 * written in Lua come from dsl/nndefine.c) and the reading of Lua labels and targets into the
 * core's form, which the Trainer's helpers (dsl/nntrain.c) share. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define LOSS_MT NL_LOSS_MT

/* Labels and sizes above this are refused before they reach an integer. */
#define MAX_EXACT 0x1p53

static void check_status(lua_State *L, nl_status s)
{
    if (s != NL_OK) nl_dsl_core_error(L);
}

typedef struct {
    nl_loss l;
} lua_loss;

static lua_loss *check_loss(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LOSS_MT);
}

nl_loss *nl_lua_checkloss(lua_State *L, int idx)
{
    return &check_loss(L, idx)->l;
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
int32_t nl_lua_label_index(lua_State *L, double v, int64_t pos, int64_t classes, const char *fname)
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
        out[i] = nl_lua_label_index(L, v, i, classes, fname);
    }
    if (dev != NL_CPU) {
        nl_tensor **moved = nl_lua_newbox(L);
        if (!(*moved = nl_tensor_to_device(*box, dev))) nl_dsl_core_error(L);
        lua_remove(L, -2);
        return *moved;
    }
    return *box;
}

nl_tensor *nl_lua_push_target(lua_State *L, int idx, nl_loss_kind kind, int ndim,
                              const int64_t *shape, nl_device dev, const char *fname)
{
    nl_tensor *y = nl_lua_totensor(L, idx);
    bool same = y && y->ndim == ndim && memcmp(y->shape, shape, (size_t)ndim * sizeof *shape) == 0;
    if (kind != NL_LOSS_MSE && !(same && y->dtype == NL_F32))
        return push_labels(L, idx, ndim > 0 ? shape[ndim - 1] : 0, dev, fname);
    if (!y) nl_dsl_error(L, "%s: the target must be a Tensor, got %s", fname, luaL_typename(L, idx));
    nl_lua_pushshared(L, y);
    return y;
}

const char *nl_lua_loss_name(nl_loss_kind kind)
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
    nl_tensor *y = nl_lua_push_target(L, 3, b->l.kind, x->ndim, x->shape, nl_tensor_device(x), nl_lua_loss_name(b->l.kind));
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

static const nl_dsl_fn loss_fns[] = {
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

void nl_open_nnloss(lua_State *L)
{
    static const luaL_Reg loss_meta[] = {
        {"__call", loss_call}, {"__tostring", loss_tostring}, {"__gc", loss_gc}, {NULL, NULL}};
    nl_lua_newtype(L, LOSS_MT, loss_meta, loss_methods, loss_index);
    nl_dsl_register(L, "nn", loss_fns);
}
