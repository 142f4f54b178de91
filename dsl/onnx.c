/* onnx.c: the Lua module `onnx` over core/io/onnx.h: onnx.export, onnx.load and onnx.info. The Lua
 * half (options, the doc string with the network's summary) is dsl/onnx.lua. */
#include "dsl.h"
#include "lnn.h"

#include "onnx.h"

#include <lauxlib.h>
#include <stdlib.h>

/* dsl/onnx.lua, embedded by the Makefile. */
extern const char nl_lua_onnx[];
extern const size_t nl_lua_onnx_len;

/* P.export(net, path, shape or nil, opset, dynamic_batch, doc): the options already checked. */
static int p_export(lua_State *L)
{
    nl_module *net = nl_lua_checkmodule(L, 1);
    const char *path = nl_dsl_checkpath(L, 2);
    nl_onnx_opts o = {.opset = (int)luaL_checkinteger(L, 4), .dynamic_batch = lua_toboolean(L, 5),
                      .doc = luaL_optstring(L, 6, NULL)};
    if (lua_istable(L, 3)) {
        o.ndim = (int)luaL_len(L, 3);
        if (o.ndim < 1 || o.ndim > NL_MAX_DIMS)
            return nl_dsl_error(L, "onnx.export: input must have 1 to %d sizes, got %d", NL_MAX_DIMS, o.ndim);
        for (int d = 0; d < o.ndim; d++) {
            lua_geti(L, 3, d + 1);
            lua_Integer v = lua_tointeger(L, -1);
            if (!lua_isinteger(L, -1) && !(lua_isnumber(L, -1) && lua_tonumber(L, -1) == (double)v))
                return nl_dsl_error(L, "onnx.export: input size %d is not a whole number", d + 1);
            if (v < 1 || v > ((lua_Integer)1 << 40))
                return nl_dsl_error(L, "onnx.export: input size %d must be from 1 to 2^40, got %I", d + 1,
                                    (LUA_INTEGER)v);
            o.shape[d] = (int64_t)v;
            lua_pop(L, 1);
        }
    }
    if (nl_onnx_export(net, path, &o) != NL_OK) return nl_dsl_core_error(L);
    return 0;
}

static int l_load(lua_State *L)
{
    nl_module *m = nl_onnx_load(nl_dsl_checkpath(L, 1));
    if (!m) return nl_dsl_core_error(L);
    nl_lua_pushmodule(L, m);
    nl_module_release(m); /* the box took its own reference */
    return 1;
}

static int l_info(lua_State *L)
{
    char *doc = NULL, *producer = NULL;
    if (nl_onnx_info(nl_dsl_checkpath(L, 1), &doc, &producer) != NL_OK) return nl_dsl_core_error(L);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, doc ? doc : "");
    lua_setfield(L, -2, "doc");
    lua_pushstring(L, producer ? producer : "");
    lua_setfield(L, -2, "producer");
    free(doc);
    free(producer);
    return 1;
}

static const nl_dsl_fn onnx_fns[] = {
    {"load", l_load, "onnx.load(path) -> net",
     "An ONNX model (from PyTorch's torch.onnx.export, or onnx.export) as a network: an nn.Sequential of "
     "nnlab's layers, nn.Residual for skip-adds, in evaluation mode. A node nnlab cannot represent is "
     "refused with its name, op type and position; files with external data are refused.",
     "local p = os.tmpname(); onnx.export(nn.Linear(4, 2), p); print(onnx.load(p)); os.remove(p)"},
    {"info", l_info, "onnx.info(path) -> {producer=, doc=}",
     "The producer (\"nnlab 0.1.0\", \"pytorch 1.13.1\") and the doc string of an ONNX file (nnlab "
     "writes the network's summary there).",
     "local p = os.tmpname(); onnx.export(nn.Linear(4, 2), p); print(onnx.info(p).doc); os.remove(p)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const luaL_Reg private_fns[] = {
    {"export", p_export},
    {NULL, NULL},
};

int nl_open_onnx(lua_State *L)
{
    nl_dsl_register(L, "onnx", onnx_fns);
    /* dsl/onnx.lua adds onnx.export and returns its help rows. */
    if (luaL_loadbuffer(L, nl_lua_onnx, nl_lua_onnx_len, "=dsl/onnx.lua") != LUA_OK) return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_pushliteral(L, NL_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, NL_ONNX_OPSET_MIN);
    lua_setfield(L, -2, "opset_min");
    lua_pushinteger(L, NL_ONNX_OPSET_MAX);
    lua_setfield(L, -2, "opset_max");
    lua_pushinteger(L, NL_ONNX_OPSET_DEFAULT);
    lua_setfield(L, -2, "opset_default");
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, "onnx");
    lua_pop(L, 1);
    return 0;
}
