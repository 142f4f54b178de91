/* runs.c: opens the modules `runs` (run folders, manifests; dsl/runs.lua) and `search` (trials of
 * hyperparameters as runs; dsl/search.lua) with their private C helpers: atomic text files,
 * folders, and the data files this process has read with their hashes (core/io/files.c). */
#include "dsl.h"
#include "lnn.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* dsl/runs.lua and dsl/search.lua, embedded by the Makefile. */
extern const char nl_lua_runs[], nl_lua_search[];
extern const size_t nl_lua_runs_len, nl_lua_search_len;

/* P.write(path, text): writes text to path atomically (a whole old or new file whatever happens
 * to the process; not fsynced: see nl_atomic_commit_nosync), creating its folder first. */
static int p_write(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        lua_pushlstring(L, path, (size_t)(slash - path));
        if (nl_mkdirs(lua_tostring(L, -1)) != NL_OK) return nl_dsl_core_error(L);
        lua_pop(L, 1);
    }
    nl_atomic_file af;
    nl_status s = nl_atomic_open(&af, path);
    if (s == NL_OK) s = nl_atomic_write(&af, text, n);
    if (s == NL_OK) s = nl_atomic_commit_nosync(&af);
    else nl_atomic_abort(&af);
    if (s != NL_OK) return nl_dsl_core_error(L);
    return 0;
}

/* P.mkdirs(dir): mkdir -p. */
static int p_mkdirs(lua_State *L)
{
    if (nl_mkdirs(nl_dsl_checkpath(L, 1)) != NL_OK) return nl_dsl_core_error(L);
    return 0;
}

/* P.list(dir) -> {{name=, dir=bool}, ...} sorted by name (without . and ..), or nil, reason. */
static int p_list(lua_State *L)
{
    const char *dir = nl_dsl_checkpath(L, 1);
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, alphasort);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_createtable(L, n, 0);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            lua_pushfstring(L, "%s/%s", dir, name);
            struct stat sb;
            bool is_dir = stat(lua_tostring(L, -1), &sb) == 0 && S_ISDIR(sb.st_mode);
            lua_pop(L, 1);
            lua_createtable(L, 0, 2);
            lua_pushstring(L, name);
            lua_setfield(L, -2, "name");
            lua_pushboolean(L, is_dir);
            lua_setfield(L, -2, "dir");
            lua_rawseti(L, -2, ++k);
        }
        free(list[i]);
    }
    free(list);
    return 1;
}

/* One file's row: {path=, bytes=, sha256=, folder=bool}. */
static void push_file(lua_State *L, const char *path, const char *hex, int64_t bytes, bool folder)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, (lua_Integer)bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushstring(L, hex);
    lua_setfield(L, -2, "sha256");
    lua_pushboolean(L, folder);
    lua_setfield(L, -2, "folder");
}

/* P.data_files() -> the files read so far ({path=, bytes=, sha256=, folder=} or, for one that
 * cannot be read now, {path=, error=}). */
static int p_data_files(lua_State *L)
{
    int n = nl_files_count();
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        char *path, hex[65];
        int64_t bytes;
        bool folder;
        if (nl_files_get(i, &path, hex, &bytes, &folder) == NL_OK) {
            push_file(L, path, hex, bytes, folder);
            free(path);
        } else {
            lua_createtable(L, 0, 1);
            lua_pushstring(L, nl_errmsg());
            lua_setfield(L, -2, "error");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* P.digest(path) -> {path=, bytes=, sha256=, folder=}: any file or folder (raises when it cannot
 * be read). */
static int p_digest(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    char hex[65];
    int64_t bytes;
    bool folder;
    if (nl_file_digest(path, hex, &bytes, &folder) != NL_OK) return nl_dsl_core_error(L);
    push_file(L, path, hex, bytes, folder);
    return 1;
}

/* P.read_json(path) -> the JSON object in the file as a Lua table, or nil, reason (missing,
 * unreadable, not a JSON object; at most 64 MiB). */
static int p_read_json(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1);
    FILE *f = fopen(path, "rbe");
    if (!f) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open '%s': %s", path, strerror(errno));
        return 2;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t got, total = 0;
    char chunk[4096];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0 && total < ((size_t)64 << 20)) {
        luaL_addlstring(&b, chunk, got);
        total += got;
    }
    fclose(f);
    luaL_pushresult(&b);
    if (!nl_dsl_push_json(L, lua_tostring(L, -1))) {
        lua_pushnil(L);
        lua_pushfstring(L, "'%s' is not a JSON object", path);
        return 2;
    }
    return 1;
}

/* Runs one embedded chunk with the private helpers as its argument and records its help rows. */
static void open_chunk(lua_State *L, const char *code, size_t len, const char *name, const char *group)
{
    static const luaL_Reg private_fns[] = {
        {"write", p_write},
        {"mkdirs", p_mkdirs},
        {"list", p_list},
        {"data_files", p_data_files},
        {"digest", p_digest},
        {"read_json", p_read_json},
        {"rng_state", nl_lua_rng_state},
        {NULL, NULL},
    };
    if (luaL_loadbuffer(L, code, len, name) != LUA_OK) lua_error(L);
    luaL_newlib(L, private_fns);
    lua_call(L, 1, 1);
    nl_dsl_register_rows(L, -1, group);
    lua_pop(L, 1);
}

int nl_open_runs(lua_State *L)
{
    open_chunk(L, nl_lua_runs, nl_lua_runs_len, "=dsl/runs.lua", "runs");
    open_chunk(L, nl_lua_search, nl_lua_search_len, "=dsl/search.lua", "search");
    return 0;
}
