/* dsl.c: opens the nnlab Lua modules, keeps the help registry that help() reads (help() itself
 * is written in Lua, in prelude.lua), and maps core errors to Lua errors. */
#include "dsl.h"
#include "dist.h"
#include "nl.h"

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

/* dsl/prelude.lua, embedded by the Makefile. */
extern const char nl_lua_prelude[];
extern const size_t nl_lua_prelude_len;
extern const char nl_lua_util[];
extern const size_t nl_lua_util_len;

/* The registry's key in LUA_REGISTRYINDEX. Its layout (read by prelude.lua):
 *   rows   = {["tensor.zeros"] = row, ["Tensor:reshape"] = row, ...}
 *   short  = {zeros = {row, ...}, ...}      every row whose short name this is
 *   by_fn  = {[function] = {row, ...}}       every row of that function value
 *   groups = {tensor = group, Tensor = group}
 *   order  = {"Tensor", "tensor", ...}       group names, in registration order
 * with row = {name, short, sig, doc, example, fn} and
 * group = {name, kind = "module" | "type", value = the module table (modules only), rows = {row...}}. */
#define HELP_KEY "nnlab.help"

/* The registry's key for the last message nl_dsl_error raised (read by nl_dsl_raised). */
#define ERROR_KEY "nnlab.error"

/* Pushes the help registry, creating it on first use. */
static void push_registry(lua_State *L)
{
    static const char *const fields[] = {"rows", "short", "by_fn", "groups", "order"};
    if (lua_getfield(L, LUA_REGISTRYINDEX, HELP_KEY) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 5);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_newtable(L);
        lua_setfield(L, -2, fields[i]);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, HELP_KEY);
}

/* ---------------------------------------------------------------- errors ---------------- */

/* Whether frame ar (filled with "S") runs nnlab's own code: a C function, or a Lua function of
 * an embedded DSL chunk (loaded as "=dsl/<name>.lua"). */
static bool own_frame(const lua_Debug *ar)
{
    return ar->what[0] == 'C' || strncmp(ar->source, "=dsl/", 5) == 0;
}

/* Pushes the help row of the function on top (popped), or returns false and pushes nothing. Of a
 * function documented twice (tensor.matmul and Tensor:matmul), the method's row when method. */
static bool pop_fn_row(lua_State *L, int by_fn, bool method)
{
    if (lua_rawget(L, by_fn) != LUA_TTABLE) {
        lua_pop(L, 1);
        return false;
    }
    lua_Integer pick = 1;
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, -1); i <= n && method; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "name");
        if (strchr(lua_tostring(L, -1), ':')) pick = i, method = false;
        lua_pop(L, 2);
    }
    lua_rawgeti(L, -1, pick);
    lua_remove(L, -2);
    return true;
}

/* Whether the n bytes at s spell word, ignoring case. */
static bool same_word(const char *s, size_t n, const char *word, size_t wlen)
{
    return n == wlen && strncasecmp(s, word, n) == 0;
}

/* Pushes msg as nl_dsl_error raises it (see dsl.h): where, name, problem. A core message (core)
 * that starts with a public function's name has it replaced too: the core names the operation it
 * was asked for as it knows it ("viz.save: cannot write ..." under Canvas:save). */
static void push_message(lua_State *L, const char *msg, bool core)
{
    luaL_checkstack(L, 12, "raising an error");
    int top = lua_gettop(L);
    push_registry(L);
    int reg = top + 1;
    lua_getfield(L, reg, "by_fn");
    lua_pushnil(L); /* top + 3: the help row of the outermost public function so far */
    lua_Debug ar;
    int level = 0;
    bool caller = false;
    for (; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Snf", &ar);
        if (!own_frame(&ar)) {
            lua_pop(L, 1);
            caller = true;
            break;
        }
        if (pop_fn_row(L, top + 2, ar.namewhat && strcmp(ar.namewhat, "method") == 0))
            lua_replace(L, top + 3);
    }
    if (caller && lua_getinfo(L, "l", &ar) && ar.currentline > 0)
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
    else
        lua_pushliteral(L, "");
    if (lua_isnil(L, top + 3)) {
        lua_pushstring(L, msg);
    } else {
        lua_getfield(L, top + 3, "name");
        lua_getfield(L, top + 3, "short");
        size_t nlen, slen;
        const char *name = lua_tolstring(L, -2, &nlen), *shortname = lua_tolstring(L, -1, &slen);
        size_t glen = nlen > slen ? nlen - slen - 1 : 0; /* "tensor" of "tensor.zeros" */
        const char *colon = strstr(msg, ": "), *problem = msg;
        size_t plen = colon ? (size_t)(colon - msg) : 0;
        bool named = false;
        if (plen > 0 && !memchr(msg, ' ', plen)) {
            lua_getfield(L, reg, "rows");
            lua_pushlstring(L, msg, plen);
            named = lua_rawget(L, -2) != LUA_TNIL;
            lua_pop(L, 2);
            if ((named && core) || same_word(msg, plen, name, nlen) ||
                same_word(msg, plen, shortname, slen) || same_word(msg, plen, name, glen)) {
                named = false;
                problem = colon + 2;
            }
        }
        if (named) lua_pushstring(L, msg);
        else lua_pushfstring(L, "%s: %s", name, problem);
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    lua_concat(L, 2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

int nl_dsl_error(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    push_message(L, msg, false);
    return lua_error(L);
}

int nl_dsl_core_error(lua_State *L)
{
    const char *msg = nl_errmsg();
    if (nl_errcode() == NL_EINTR || !msg[0]) msg = nl_status_name(nl_errcode());
    push_message(L, msg, true);
    return lua_error(L);
}

void nl_dsl_quiet(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    lua_setfield(L, LUA_REGISTRYINDEX, NL_QUIET_KEY);
}

/* util.quiet(x) -> x: marks x as nl_dsl_quiet does, for the DSL's Lua chunks. */
static int util_quiet(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    nl_dsl_quiet(L, 1);
    return 1;
}

/* util.error(msg): nl_dsl_error for the DSL's Lua chunks. */
static int util_error(lua_State *L)
{
    return nl_dsl_error(L, "%s", luaL_checkstring(L, 1));
}

bool nl_dsl_raised(lua_State *L, int idx, int level)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
    bool ours = lua_type(L, idx) == LUA_TSTRING && lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    lua_Debug ar;
    if (ours || !lua_getstack(L, level, &ar)) return ours;
    lua_getinfo(L, "Sf", &ar);
    if (ar.what[0] != 'C') {
        lua_pop(L, 1);
        return false;
    }
    push_registry(L);
    lua_getfield(L, -1, "by_fn");
    lua_pushvalue(L, -3);
    ours = pop_fn_row(L, lua_gettop(L) - 1, false);
    lua_pop(L, ours ? 4 : 3);
    return ours;
}

static void push_json(lua_State *L, const cJSON *j)
{
    luaL_checkstack(L, 3, "JSON nested too deeply");
    if (cJSON_IsNumber(j)) lua_pushnumber(L, j->valuedouble);
    else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsArray(j) || cJSON_IsObject(j)) {
        lua_createtable(L, cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0, 0);
        lua_Integer i = 1;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            push_json(L, e);
            if (cJSON_IsArray(j)) lua_rawseti(L, -2, i++);
            else lua_setfield(L, -2, e->string);
        }
    } else lua_pushboolean(L, 0);
}

bool nl_dsl_push_json(lua_State *L, const char *text)
{
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return false;
    }
    push_json(L, root);
    cJSON_Delete(root);
    return true;
}

const char *nl_dsl_checkpath(lua_State *L, int arg)
{
    size_t len;
    const char *path = luaL_checklstring(L, arg, &len);
    if (memchr(path, '\0', len)) {
        luaL_Buffer b; /* the path as Lua would write it, "\0" for each NUL */
        luaL_buffinit(L, &b);
        for (size_t i = 0; i < len && i < 200; i++) {
            if (path[i]) luaL_addchar(&b, path[i]);
            else luaL_addstring(&b, "\\0");
        }
        luaL_pushresult(&b);
        nl_dsl_error(L, "the path \"%s%s\" holds a NUL byte, which no file name can contain",
                     lua_tostring(L, -1), len > 200 ? "..." : "");
    }
    return path;
}

nl_device nl_dsl_checkdevice(lua_State *L, int arg)
{
    const char *name = luaL_checkstring(L, arg);
    nl_device dev = nl_device_parse(name);
    if (dev == NL_DEVICE_COUNT)
        nl_dsl_error(L, "unknown device '%s' (cpu, sim, sim:1, cuda, cuda:1 ...)", name);
    /* Under several processes an accelerator named without a number is the one of this process's
     * rank on its machine: "cuda" is cuda:(local rank), as each GPU rank takes its own GPU. */
    const bool local = nl_device_kind(dev) != NL_CPU && !strchr(name, ':') && nl_dist_size() > 1;
    if (local) dev = nl_device_make(nl_device_kind(dev), nl_dist_local_rank());
    if (!nl_backend_get(dev) && local)
        nl_dsl_error(L, "'%s' under %d ranks is %s for rank %d (number %d on its machine), which "
                     "this machine has not: %s", name, nl_dist_size(), nl_device_name(dev),
                     nl_dist_rank() + 1, nl_dist_local_rank() + 1, nl_errmsg());
    if (!nl_backend_get(dev)) nl_dsl_core_error(L);
    return dev;
}

/* util.check_path(path) -> path: nl_dsl_checkpath for the DSL's Lua chunks. */
static int util_check_path(lua_State *L)
{
    nl_dsl_checkpath(L, 1);
    lua_settop(L, 1);
    return 1;
}

/* Appends the value on top (popped) to the array at index list. */
static void append(lua_State *L, int list)
{
    lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* Appends the row at index row to H[field][key], where key is the value on top (popped). */
static void add_to_list(lua_State *L, int reg, const char *field, int row)
{
    lua_getfield(L, reg, field);
    lua_insert(L, -2); /* field table, key */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, -5);
    }
    lua_pushvalue(L, row);
    append(L, lua_gettop(L) - 1);
    lua_pop(L, 3);
}

static void set_string(lua_State *L, int table, const char *key, const char *value)
{
    table = lua_absindex(L, table);
    lua_pushstring(L, value);
    lua_setfield(L, table, key);
}

/* Pushes the function a row documents: its C function, or, for a row without one (fn NULL), the
 * value the caller stored in the module table at index value under the row's name, dots walking
 * into nested tables ("schedule.cosine"); nil when there is none. */
static void push_fn(lua_State *L, int value, const nl_dsl_fn *f)
{
    if (f->fn) {
        lua_pushcfunction(L, f->fn);
        return;
    }
    if (!value) {
        lua_pushnil(L);
        return;
    }
    lua_pushvalue(L, value);
    for (const char *p = f->name; lua_istable(L, -1);) {
        const char *dot = strchr(p, '.');
        lua_pushlstring(L, p, dot ? (size_t)(dot - p) : strlen(p));
        lua_gettable(L, -2);
        lua_remove(L, -2);
        if (!dot) return;
        p = dot + 1;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

/* Records the rows of fns in group (created with kind and, for modules, the table at index
 * value, unless it exists), naming each "<group><sep><name>". */
static void record(lua_State *L, const char *group, const char *kind, int value,
                   const nl_dsl_fn *fns, const char *sep)
{
    int top = lua_gettop(L);
    push_registry(L);
    int reg = lua_gettop(L);
    lua_getfield(L, reg, "groups");
    if (lua_getfield(L, -1, group) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 4);
        set_string(L, -1, "name", group);
        set_string(L, -1, "kind", kind);
        if (value) {
            lua_pushvalue(L, value);
            lua_setfield(L, -2, "value");
        }
        lua_newtable(L);
        lua_setfield(L, -2, "rows");
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, group);
        lua_getfield(L, reg, "order");
        lua_pushstring(L, group);
        append(L, lua_gettop(L) - 1);
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "rows");
    int rows = lua_gettop(L);
    for (const nl_dsl_fn *f = fns; f->name; f++) {
        lua_createtable(L, 0, 6);
        int row = lua_gettop(L);
        lua_pushfstring(L, "%s%s%s", group, sep, f->name);
        lua_setfield(L, row, "name");
        set_string(L, row, "short", f->name);
        set_string(L, row, "sig", f->sig);
        set_string(L, row, "doc", f->doc);
        set_string(L, row, "example", f->example);
        push_fn(L, value, f);
        lua_setfield(L, row, "fn");
        lua_pushvalue(L, row);
        append(L, rows);
        lua_getfield(L, reg, "rows");
        lua_getfield(L, row, "name");
        lua_pushvalue(L, row);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        lua_pushstring(L, f->name);
        add_to_list(L, reg, "short", row);
        push_fn(L, value, f);
        if (lua_isnil(L, -1)) lua_pop(L, 1);
        else add_to_list(L, reg, "by_fn", row);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
}

void nl_dsl_register(lua_State *L, const char *module, const nl_dsl_fn *fns)
{
    if (lua_getglobal(L, module) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setglobal(L, module);
    }
    int table = lua_gettop(L);
    for (const nl_dsl_fn *f = fns; f->name; f++) {
        if (!f->fn) continue; /* the caller placed the value */
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, table, f->name);
    }
    /* require "tensor" returns the same table. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, table);
    lua_setfield(L, -2, module);
    lua_pop(L, 1);
    record(L, module, "module", table, fns, ".");
    lua_pop(L, 1);
}

void nl_dsl_register_methods(lua_State *L, const char *type, const nl_dsl_fn *fns)
{
    record(L, type, "type", 0, fns, ":");
}

/* Makes the function at index fn the documented value of the registered row named
 * "<group><sep><name>", so that help(fn) finds it (and errors raised under it name it). */
static void record_fn(lua_State *L, const char *group, const char *sep, const char *name, int fn)
{
    fn = lua_absindex(L, fn);
    push_registry(L);
    int reg = lua_gettop(L);
    lua_getfield(L, reg, "rows");
    lua_pushfstring(L, "%s%s%s", group, sep, name);
    lua_rawget(L, -2);
    int row = lua_gettop(L);
    lua_pushvalue(L, fn);
    lua_setfield(L, row, "fn");
    lua_pushvalue(L, fn);
    add_to_list(L, reg, "by_fn", row);
    lua_settop(L, reg - 1);
}

void nl_dsl_register_rows(lua_State *L, int list, const char *group)
{
    static const char *const keys[] = {"name", "sig", "doc", "example"};
    list = lua_absindex(L, list);
    for (lua_Integer k = 1, n = luaL_len(L, list); k <= n; k++) {
        lua_geti(L, list, k);
        int row = lua_gettop(L);
        const char *field[4];
        for (int j = 0; j < 4; j++) {
            lua_getfield(L, row, keys[j]);
            field[j] = luaL_checkstring(L, -1);
        }
        lua_getfield(L, row, "group");
        const char *g = luaL_optstring(L, -1, group);
        lua_getfield(L, row, "method");
        bool method = lua_toboolean(L, -1);
        nl_dsl_fn fns[2] = {{field[0], NULL, field[1], field[2], field[3]}, {NULL, NULL, NULL, NULL, NULL}};
        if (method) nl_dsl_register_methods(L, g, fns);
        else nl_dsl_register(L, g, fns);
        if (method && lua_getfield(L, row, "fn") == LUA_TFUNCTION)
            record_fn(L, g, ":", field[0], -1);
        lua_settop(L, row - 1);
    }
}

int nl_dsl_open(lua_State *L)
{
    nl_init();
    /* The Lua modules' shared argument checks, as require "nnlab.util". */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (luaL_loadbuffer(L, nl_lua_util, nl_lua_util_len, "=dsl/util.lua") != LUA_OK)
        return lua_error(L);
    lua_pushcfunction(L, util_error);
    lua_pushcfunction(L, util_check_path);
    lua_pushcfunction(L, util_quiet);
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "nnlab.util");
    lua_pop(L, 1);
    nl_open_tensor(L);
    nl_open_sys(L);
    nl_open_optim(L);
    nl_open_dist(L);
    nl_open_nn(L);
    nl_open_data(L);
    nl_open_viz(L);
    nl_open_prune(L);
    nl_open_quant(L);
    nl_open_onnx(L);
    nl_open_runs(L);
    nl_open_journal(L);
    nl_open_lesson(L);
    if (luaL_loadbuffer(L, nl_lua_prelude, nl_lua_prelude_len, "=dsl/prelude.lua") != LUA_OK)
        return lua_error(L);
    push_registry(L);
    lua_call(L, 1, 0);
    return 0;
}
