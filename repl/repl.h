/* repl.h: what the nnlab program (repl/main.c) needs from the REPL library: running Lua chunks
 * safely with Ctrl-C armed, reporting their errors, and the interactive loop. */
#ifndef NL_REPL_H
#define NL_REPL_H

#include <stdbool.h>

#include <lua.h>

#include "nl.h" /* NL_VERSION */

/* Exit status of a script stopped by Ctrl-C (128 + SIGINT, as shells report it). */
#define NL_EXIT_INTERRUPTED 130

/* Installs the SIGINT handler (sigaction, no SA_RESETHAND, no SA_RESTART) that interrupts the
 * chunk nl_repl_docall is running on L. Call once, before the first chunk. */
void nl_repl_signals(lua_State *L);

/* Calls the function under its narg arguments on top of the stack, like
 * lua_pcall(L, narg, nres, h) with a traceback message handler h, after clearing the interrupt
 * flag (and any deferral left open). Ctrl-C during the call sets nl_interrupt() for C code and
 * raises "interrupted" in Lua code (while nl_interrupt_defer is on, only at a second Ctrl-C).
 * Returns the Lua status; on error the message (a string with traceback) is on top. */
int nl_repl_docall(lua_State *L, int narg, int nres);

/* True when Ctrl-C was pressed during the last nl_repl_docall. */
bool nl_repl_interrupted(void);

/* When status is not LUA_OK, prints the message on top of the stack to stderr, prefixed with
 * "prefix: " unless prefix is NULL, and pops it. Returns status. */
int nl_repl_report(lua_State *L, int status, const char *prefix);

/* Runs the interactive loop on L until Ctrl-D: prints the banner, reads lines with readline
 * (history in $NNLAB_HISTORY, default ~/.nnlab_history), runs each chunk and prints its
 * results. Errors in chunks are reported and never end the loop. Call inside a protected call
 * (Lua API errors outside chunks propagate as Lua errors). */
void nl_repl_run(lua_State *L);


#endif
