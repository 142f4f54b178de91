/* dsl.h: the Lua bindings' entry points, used by the REPL. Only dsl/ and repl/ include lua.h. */
#ifndef NL_DSL_H
#define NL_DSL_H

#include "nl.h"

#include <lua.h>
#include <stdbool.h>

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

/* Registry field the program sets to true when a prompt follows the code it runs (the REPL, or
 * a script under -i): what a paused trainer says continues it depends on it. */
#define NL_PROMPT_FOLLOWS_KEY "nnlab.prompt_follows"

/* Registry field holding a value the REPL does not echo when a line returns it alone: what a
 * function returns for chaining (net:train() returns net) or has printed itself (a summary).
 * nl_dsl_quiet(L, idx) marks the value at idx; the REPL clears the mark before each line. */
#define NL_QUIET_KEY "nnlab.quiet"
void nl_dsl_quiet(lua_State *L, int idx);

/* Creates (or extends) the global table `module` with the functions of fns (terminated by a
 * {NULL} row) and records their help under "module.name". */
void nl_dsl_register(lua_State *L, const char *module, const nl_dsl_fn *fns);
/* Records help for methods of a userdata type (shown as "Tensor:name"); fns as above, the
 * functions being the methods placed in the metatable's __index by the caller. */
void nl_dsl_register_methods(lua_State *L, const char *type, const nl_dsl_fn *fns);

/* Records the help rows a DSL Lua chunk returns, the list at index list:
 * {{name=, sig=, doc=, example=, group= (default group), method= (true: a method of type group),
 *   fn= (a method's function, for help(fn))}}.
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
int nl_open_onnx(lua_State *L);  /* after nl_open_nn (Module boxes) */
/* journal (dsl/journal.c); leaves the REPL's hooks, a table {rewrite = fn(code) -> code,
 * record = fn(code, expr)}, in the registry under this key. */
int nl_open_journal(lua_State *L);
#define NL_JOURNAL_KEY "nnlab.journal"
int nl_open_lesson(lua_State *L); /* lesson (dsl/lesson.c); after the modules its lessons use */
int nl_open_runs(lua_State *L);  /* runs and search (dsl/runs.lua, dsl/search.lua); after viz */
int nl_open_dist(lua_State *L);  /* before nl_open_nn, whose Trainer requires "nnlab.dist" */

/* The last step of the program: under MPI, a clean end (status 0) finalises it and a failure ends
 * every rank (MPI_Abort, which names this rank), so the others never wait for this one. */
void nl_dsl_exit(int status);

/* Raises the Lua error "where: name: problem": the one way nnlab raises errors (C functions
 * through these, the DSL's Lua chunks through require("nnlab.util").error). The problem is fmt
 * formatted as lua_pushfstring does; name is the Lua name, as help knows it ("tensor.zeros",
 * "Tensor:save", "Trainer:fit"), of the function the user called: the outermost function with
 * help among the frames of nnlab's own code on top of the stack (C functions, and the Lua
 * functions of the embedded chunks dsl/nn.lua, dsl/viz.lua, ...). A problem that starts with a
 * public function's name keeps it; one that starts with the function's short name or the name
 * of its module or type ("zeros: ...", "tensor: ...") has that replaced by the full name. where
 * is the position of the user's code that made the call ("stdin:1:", "train.lua:12:"), never a
 * place inside a DSL chunk. Never returns. */
int nl_dsl_error(lua_State *L, const char *fmt, ...);

/* Raises the core's last error (nl_errmsg(), or "interrupted" after Ctrl-C) as nl_dsl_error
 * does. Never returns. */
int nl_dsl_core_error(lua_State *L);

/* Whether the error value at idx was raised by nnlab's own code rather than the user's: a
 * message of nl_dsl_error, or an argument check (luaL_check*) of a public C function that is
 * running at stack level `level` (1 in a message handler). The REPL shows those without a
 * traceback: they already say where, what and why. */
bool nl_dsl_raised(lua_State *L, int idx, int level);

/* The string argument arg as a file path: raises a clear error for a path that holds a NUL byte
 * (the C library would silently cut it there). Every DSL function that takes a path reads it
 * with this. */
const char *nl_dsl_checkpath(lua_State *L, int arg);

/* Pushes the JSON object in text as plain Lua data (objects and arrays as tables, arrays 1-based,
 * every number a float, null as false; nothing in it is ever run; cJSON bounds the nesting) and
 * returns true; returns false, pushing nothing, when text is not a JSON object. */
bool nl_dsl_push_json(lua_State *L, const char *text);

/* The string argument arg as a device ("cpu", "sim", "sim:1", "cuda:0"): raises a clear error
 * for an unknown name, and for a device this nnlab has not got (the core's message). */
nl_device nl_dsl_checkdevice(lua_State *L, int arg);

#endif
