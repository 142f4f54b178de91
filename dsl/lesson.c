/* lesson.c: opens the `lesson` module (dsl/lesson.lua) with the lessons built into the program
 * (lessons/NAME.lua, embedded by the Makefile) and the one file operation Lua lacks: writing the
 * progress file atomically, creating its folder first; and the random generator's state, which
 * lesson.spirals leaves as it found it. */
#include "dsl.h"
#include "lnn.h"
#include "nl.h"

#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <sys/stat.h>

/* dsl/lesson.lua and the lessons, embedded by the Makefile. */
extern const char nl_lua_lesson[];
extern const size_t nl_lua_lesson_len;
struct nl_lesson_file { const char *name; const char *text; size_t len; };
extern const struct nl_lesson_file nl_lessons[];

/* save(path, text) -> true | nil, reason: creates path's folder (one level, as ~/.nnlab) when
 * missing and writes text to path atomically. Never raises: a lesson goes on without its
 * progress file. */
static int lesson_save(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    const char *slash = strrchr(path, '/');
    if (slash && slash > path) {
        lua_pushlstring(L, path, (size_t)(slash - path));
        const char *dir = lua_tostring(L, -1);
        if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot create the folder %s: %s", dir, strerror(errno));
            return 2;
        }
    }
    nl_atomic_file af;
    nl_status s = nl_atomic_open(&af, path);
    if (s == NL_OK) {
        s = nl_atomic_write(&af, text, n);
        if (s == NL_OK) s = nl_atomic_commit(&af);
        else nl_atomic_abort(&af);
    }
    if (s != NL_OK) {
        lua_pushnil(L);
        lua_pushstring(L, nl_errmsg());
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

int nl_open_lesson(lua_State *L)
{
    if (luaL_loadbuffer(L, nl_lua_lesson, nl_lua_lesson_len, "=dsl/lesson.lua") != LUA_OK)
        return lua_error(L);
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, lesson_save);
    lua_setfield(L, -2, "save");
    lua_pushcfunction(L, nl_lua_rng_state);
    lua_setfield(L, -2, "rng_state");
    lua_pushcfunction(L, nl_lua_set_rng_state);
    lua_setfield(L, -2, "set_rng_state");
    lua_newtable(L);
    for (int i = 0; nl_lessons[i].name; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, nl_lessons[i].name);
        lua_setfield(L, -2, "file");
        lua_pushlstring(L, nl_lessons[i].text, nl_lessons[i].len);
        lua_setfield(L, -2, "text");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "builtin");
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, "lesson");
    lua_pop(L, 1);
    return 0;
}
