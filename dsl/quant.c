/* quant.c: the Lua module `quant` over core/compress/quant.h: post-training int8 quantization, reports and
 * the int8 kernels' instruction set. The Lua half (calibration batches from a data set, the printed
 * report) is dsl/quant.lua. */
#include "dsl.h"
#include "lnn.h"
#include "ltensor.h"

#include "quant.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* dsl/quant.lua, embedded by the Makefile. */
extern const char nl_lua_quant[];
extern const size_t nl_lua_quant_len;

/* P.int8(net, {x1, x2, ...}, method, percentile) -> the quantized net. */
static int p_int8(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const methods[] = {"minmax", "percentile", NULL};
    nl_quant_opts o = {(nl_qcalib)luaL_checkoption(L, 3, "minmax", methods), luaL_optnumber(L, 4, 99.99)};
    const int n = (int)luaL_len(L, 2);
    nl_tensor **xs = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *xs, 0); /* freed by Lua */
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        xs[i] = nl_lua_totensor(L, -1);
        if (!xs[i]) return nl_dsl_error(L, "quant.int8: calibration batch %d is not a Tensor", i + 1);
        lua_pop(L, 1); /* the table keeps the tensor alive */
    }
    nl_module *q = nl_quant_int8(net, xs, n, &o);
    if (!q) return nl_dsl_core_error(L);
    nl_lua_pushmodule(L, q);
    nl_module_release(q); /* the box took its own reference */
    return 1;
}

/* P.stack({x1, x2, ...}) -> [n, ...]: samples of one shape stacked into a batch. */
static int p_stack(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const int n = (int)luaL_len(L, 1);
    lua_geti(L, 1, 1);
    nl_tensor *first = nl_lua_checktensor(L, -1);
    int64_t shape[NL_MAX_DIMS] = {n};
    if (first->ndim + 1 > NL_MAX_DIMS) return nl_dsl_error(L, "quant: samples have too many dimensions");
    memcpy(shape + 1, first->shape, (size_t)first->ndim * sizeof *shape);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_F32, first->ndim + 1, shape, NL_CPU))) return nl_dsl_core_error(L);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        nl_tensor *x = nl_lua_checktensor(L, -1), *row = nl_tensor_slice(*box, 0, i, i + 1);
        nl_tensor *v = row ? nl_tensor_reshape(row, x->ndim, x->shape) : NULL;
        nl_status st = v ? nl_copy(v, x) : nl_errcode();
        nl_tensor_release(row);
        nl_tensor_release(v);
        if (st != NL_OK) return nl_dsl_core_error(L);
        lua_pop(L, 1);
    }
    return 1;
}

/* P.report(net) -> {{layer=, type=, bits=, wscale_min=, ...}, ...} */
static int p_report(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    const int n = nl_quant_report(net, NULL, 0);
    nl_quant_row *rows = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *rows, 0);
    nl_quant_report(net, rows, n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const nl_quant_row *r = &rows[i];
        lua_createtable(L, 0, 9);
        lua_pushstring(L, r->path);
        lua_setfield(L, -2, "layer");
        lua_pushstring(L, r->type);
        lua_setfield(L, -2, "type");
        lua_pushinteger(L, r->bits);
        lua_setfield(L, -2, "bits");
        const struct { const char *k; double v; } nums[] = {
            {"wscale_min", r->wscale_min}, {"wscale_max", r->wscale_max}, {"in_scale", r->in_scale},
            {"out_scale", r->out_scale}, {"weight_sqnr", r->wsqnr}, {"act_sqnr", r->asqnr}};
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (isnan(nums[k].v) || nums[k].v == 0) continue; /* unknown or not there: nil */
            lua_pushnumber(L, nums[k].v);
            lua_setfield(L, -2, nums[k].k);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_int4(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    lua_Integer group = 32;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "group") != 0)
                return nl_dsl_error(L, "quant.int4: unknown option '%s' (valid: group)",
                                  luaL_tolstring(L, -2, NULL));
            lua_pop(L, 1);
        }
        lua_getfield(L, 2, "group");
        if (!lua_isnil(L, -1)) {
            if (!lua_isinteger(L, -1) || (group = lua_tointeger(L, -1)) < 1 || group > INT32_MAX)
                return nl_dsl_error(L, "quant.int4: group must be a whole number >= 1, got %s",
                                  luaL_tolstring(L, -1, NULL));
        }
        lua_pop(L, 1);
    }
    nl_module *q = nl_quant_int4(net, (int)group);
    if (!q) return nl_dsl_core_error(L);
    nl_lua_pushmodule(L, q);
    nl_module_release(q);
    return 1;
}

static int l_qat(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    lua_Integer bits = 8;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "bits") != 0)
                return nl_dsl_error(L, "quant.qat: unknown option '%s' (valid: bits)", luaL_tolstring(L, -2, NULL));
            lua_pop(L, 1);
        }
        lua_getfield(L, 2, "bits");
        if (!lua_isnil(L, -1) && (!lua_isinteger(L, -1) || (bits = lua_tointeger(L, -1)) < 2 || bits > 8))
            return nl_dsl_error(L, "quant.qat: bits must be a whole number in 2..8, got %s",
                              luaL_tolstring(L, -1, NULL));
        lua_pop(L, 1);
    }
    nl_module *q = nl_quant_qat(net, (int)bits);
    if (!q) return nl_dsl_core_error(L);
    nl_lua_pushmodule(L, q);
    nl_module_release(q);
    return 1;
}

static int l_convert(lua_State *L)
{
    nl_module *q = nl_quant_convert(nl_lua_checkmodule(L, 1));
    if (!q) return nl_dsl_core_error(L);
    nl_lua_pushmodule(L, q);
    nl_module_release(q);
    return 1;
}

static int l_weights(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_quant_weights_f32(m))) return nl_dsl_core_error(L);
    return 1;
}

static int l_levels(lua_State *L)
{
    nl_module *m = nl_lua_checkmodule(L, 1);
    int qmin = 0, qmax = 0;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_quant_levels(m, &qmin, &qmax))) return nl_dsl_core_error(L);
    lua_pushinteger(L, qmin);
    lua_pushinteger(L, qmax);
    return 3;
}

static int l_isa(lua_State *L)
{
    if (!lua_isnoneornil(L, 1) && nl_quant_set_isa(luaL_checkstring(L, 1)) != NL_OK)
        return nl_dsl_core_error(L);
    lua_pushstring(L, nl_quant_isa());
    return 1;
}

static const nl_dsl_fn quant_fns[] = {
    {"qat", l_qat, "quant.qat(net, {bits=8}) -> net",
     "Quantization-aware training: a NEW network whose Conv2d/Linear train with fake-quantized "
     "weights and FakeQuant layers observing and rounding the activations (straight-through "
     "gradients); train it with the usual Trainer, then quant.convert.",
     "local q = quant.qat(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))); print(q)"},
    {"convert", l_convert, "quant.convert(qat_net) -> net",
     "The int8 model of a network from quant.qat (run at least once in training mode): QConv2d / "
     "QLinear with the trained ranges; its outputs match the fake-quant network's (to ~1e-7).",
     "local q = quant.qat(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))); "
     "q(tensor.randn(16, 4)); print(quant.convert(q))"},
    {"int4", l_int4, "quant.int4(net, {group=32}) -> net",
     "Weight-only 4-bit: a NEW network whose Conv2d/Linear keep 4-bit weights (two to a byte) with a "
     "scale per group of `group` weights along each filter/row, dequantized a few rows at a time inside "
     "the kernels (no f32 copy of the weights); other "
     "layers are copied. Checkpoints store the packed weights (about 1/7 of f32).",
     "print(quant.int4(nn.Sequential(nn.Linear(64, 10)), {group=32}))"},
    {"weights", l_weights, "quant.weights(layer) -> Tensor",
     "The f32 weights a quantized layer computes with (int8 times its channel scale, or dequantized "
     "int4), shaped as the float layer's: for histograms and comparisons.",
     "local q = quant.int4(nn.Linear(64, 4)); print(quant.weights(q[1]):shape()[2])"},
    {"levels", l_levels, "quant.levels(layer) -> Tensor, lo, hi",
     "The integer levels of a quantized layer's weights in the float layer's shape (int8: the i8 "
     "values, -128..127; int4: nibble - 8, -8..7), and their range: weight = level * its channel's "
     "or group's scale.",
     "local l = quant.levels(quant.int4(nn.Linear(64, 4))[1]); print(l:min(), l:max())"},
    {"isa", l_isa, "quant.isa([name]) -> name",
     "The int8 kernels' instruction set: 'vnni' (AVX-512 VNNI), 'avx2' (vpmaddwd, for CPUs without "
     "VNNI) or 'generic' (portable C); all give identical results; set 'auto', 'generic', 'avx2' or 'vnni'.",
     "print(quant.isa())"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg private_fns[] = {
    {"int8", p_int8},
    {"stack", p_stack},
    {"report", p_report},
    {NULL, NULL},
};

int nl_open_quant(lua_State *L)
{
    nl_dsl_register(L, "quant", quant_fns);
    /* dsl/quant.lua adds quant.int8 and quant.report and returns their help rows. */
    if (luaL_loadbuffer(L, nl_lua_quant, nl_lua_quant_len, "=dsl/quant.lua") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, "quant");
    lua_pop(L, 1);
    return 0;
}
