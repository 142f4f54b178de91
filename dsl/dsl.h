/* dsl.h: the Lua bindings' entry points, used by the REPL. Only dsl/ and repl/ include lua.h. */
#ifndef NL_DSL_H
#define NL_DSL_H

#include <lua.h>

/* One public Lua function with its help text: the single table that both registers the
 * function and answers help(). sig is the call form, doc one line (or a few), example a line of
 * Lua that runs. A row with fn NULL documents a value the caller has already stored (a C closure
 * or a Lua function): in the module table under name (dots reach into nested tables), or, for
 * methods, nothing (help by name only). */
typedef struct {
    const char *name;
    lua_CFunction fn;
    const char *sig;
    const char *doc;
    const char *example;
} nl_dsl_fn;

/* Opens every nnlab module into L as globals (tensor, ...), defines help(), and runs the Lua
 * prelude. Returns 0, or raises a Lua error (call it under lua_pcall). */
int nl_dsl_open(lua_State *L);

/* Creates (or extends) the global table `module` with the functions of fns (terminated by a
 * {NULL} row) and records their help under "module.name". */
void nl_dsl_register(lua_State *L, const char *module, const nl_dsl_fn *fns);
/* Records help for methods of a userdata type (shown as "Tensor:name"); fns as above, the
 * functions being the methods placed in the metatable's __index by the caller. */
void nl_dsl_register_methods(lua_State *L, const char *type, const nl_dsl_fn *fns);

/* Records the help rows a DSL Lua chunk returns, the list at index list:
 * {{name=, sig=, doc=, example=, group= (default group), method= (true: a method of type group)}}.
 * Raises a Lua error for a row missing a field. */
void nl_dsl_register_rows(lua_State *L, int list, const char *group);

/* Module openers called by nl_dsl_open, one per dsl/<module>.c. */
int nl_open_sys(lua_State *L);
int nl_open_tensor(lua_State *L);
int nl_open_optim(lua_State *L); /* before nl_open_nn, whose Lua half adds optim.schedule */
int nl_open_nn(lua_State *L);
int nl_open_data(lua_State *L);
int nl_open_viz(lua_State *L);
int nl_open_prune(lua_State *L); /* prune, lowrank, compress; after nl_open_nn (Module methods) */
int nl_open_quant(lua_State *L);

/* Raises a Lua error with the core's last message (nl_errmsg()), prefixed with nothing: core
 * messages already name the function. Never returns. */
int nl_dsl_core_error(lua_State *L);

#endif
