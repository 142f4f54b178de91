/* journal.c: opens the `journal` module (dsl/journal.lua) and keeps the REPL's hooks (rewrite a
 * chunk's top-level locals, record a chunk that ran) in the registry under NL_JOURNAL_KEY. */
#include "dsl.h"
#include "lnn.h"

#include <lauxlib.h>

/* dsl/journal.lua, embedded by the Makefile. */
extern const char nl_lua_journal[];
extern const size_t nl_lua_journal_len;

int nl_open_journal(lua_State *L)
{
    static const luaL_Reg private_fns[] = {
        {"rng_state", nl_lua_rng_state},
        {"set_rng_state", nl_lua_set_rng_state},
        {NULL, NULL},
    };
    if (luaL_loadbuffer(L, nl_lua_journal, nl_lua_journal_len, "=dsl/journal.lua") != LUA_OK)
        return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_call(L, 1, 2);
    nl_dsl_register_rows(L, -1, "journal");
    lua_pop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, NL_JOURNAL_KEY);
    return 0;
}
