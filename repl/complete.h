/* complete.h: tab completion for the REPL (globals, keywords, fields after '.', methods after
 * ':'), installed into readline. Internal to repl/. */
#ifndef NL_REPL_COMPLETE_H
#define NL_REPL_COMPLETE_H

#include <lua.h>

/* Makes readline complete Lua names from L's globals. L must outlive readline's use; completion
 * reads values with raw accesses only, so it never runs Lua code. */
void nl_repl_complete_init(lua_State *L);

#endif
