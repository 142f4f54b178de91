/* complete.c: tab completion for the REPL: globals and keywords, table fields after '.', methods
 * after ':'. Reads Lua values with raw accesses only, so completing never runs user code. */
#include "complete.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <readline/readline.h>

/* How many metatables' __index tables a lookup follows (guards against cycles). */
#define INDEX_DEPTH 16

static lua_State *comp_L;

/* The candidates of the completion under way, built on the generator's first call. Readline
 * takes ownership of each string the generator returns. */
static struct {
    char **v;
    size_t n, cap, next;
} cands;

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    NULL,
};

static bool is_keyword(const char *s, size_t n)
{
    for (const char *const *k = keywords; *k; k++)
        if (strlen(*k) == n && memcmp(*k, s, n) == 0)
            return true;
    return false;
}

static bool is_ident(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return !is_keyword(s, n);
}

static void cands_reset(void)
{
    for (size_t i = cands.next; i < cands.n; i++)
        free(cands.v[i]);
    cands.n = cands.next = 0;
}

/* Adds head..name as a candidate; drops it quietly when memory runs out. */
static void cands_add(const char *head, size_t headlen, const char *name, size_t len)
{
    if (cands.n == cands.cap) {
        size_t cap = cands.cap ? 2 * cands.cap : 64;
        char **v = realloc(cands.v, cap * sizeof *v);
        if (!v)
            return;
        cands.v = v;
        cands.cap = cap;
    }
    char *s = malloc(headlen + len + 1);
    if (!s)
        return;
    memcpy(s, head, headlen);
    memcpy(s + headlen, name, len);
    s[headlen + len] = '\0';
    cands.v[cands.n++] = s;
}

/* Replaces the value on top of the stack with the __index field of its metatable when that is
 * a table, or else with the metatable's plain `methods` table (the convention of types whose
 * __index is a function, such as nn's modules); otherwise pops it and returns false. */
static bool index_table(lua_State *L)
{
    if (!lua_getmetatable(L, -1)) {
        lua_pop(L, 1);
        return false;
    }
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "methods");
        lua_rawget(L, -2);
    }
    lua_remove(L, -2);
    lua_remove(L, -2);
    if (lua_istable(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

/* Replaces the value on top with its field key, looked up raw in the value (when a table) and
 * then in the __index tables of its metatables; nil when absent. */
static void raw_field(lua_State *L, const char *key, size_t len)
{
    for (int depth = 0; depth < INDEX_DEPTH; depth++) {
        if (lua_istable(L, -1)) {
            lua_pushlstring(L, key, len);
            if (lua_rawget(L, -2) != LUA_TNIL) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
        if (!index_table(L)) {
            lua_pushnil(L);
            return;
        }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

static bool is_callable(lua_State *L, int idx)
{
    if (lua_isfunction(L, idx))
        return true;
    if (!lua_getmetatable(L, idx))
        return false;
    lua_pushliteral(L, "__call");
    bool callable = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return callable;
}

/* Adds head..key for every identifier key starting with prefix in the value on top of the stack
 * and in its __index tables (functions only when methods is set); names starting with "__" only
 * when the prefix does. Pops the value. */
static void add_fields(lua_State *L, const char *head, size_t headlen, const char *prefix,
                       bool methods)
{
    size_t plen = strlen(prefix);
    bool show_meta = plen >= 2 && prefix[0] == '_' && prefix[1] == '_';
    for (int depth = 0; depth < INDEX_DEPTH; depth++) {
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                size_t len;
                const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
                if (k && len >= plen && memcmp(k, prefix, plen) == 0 && is_ident(k, len) &&
                    (show_meta || len < 2 || k[0] != '_' || k[1] != '_') &&
                    (!methods || is_callable(L, -1)))
                    cands_add(head, headlen, k, len);
                lua_pop(L, 1);
            }
        }
        if (!index_table(L))
            return;
    }
    lua_pop(L, 1);
}

/* Collects the candidates for the word passed as a light userdata. Runs under lua_pcall so a
 * memory error cannot escape; every access is raw. */
static int collect(lua_State *L)
{
    const char *text = lua_touserdata(L, 1);
    /* After a concatenation "a..na", complete the part after the last "..". */
    const char *word = text;
    for (const char *q = strstr(text, ".."); q; q = strstr(q + 2, ".."))
        word = q + 2;
    const char *sep = strrchr(word, '.'), *colon = strrchr(word, ':');
    if (colon && (!sep || colon > sep))
        sep = colon;
    lua_pushglobaltable(L);
    if (!sep) {
        add_fields(L, text, (size_t)(word - text), word, false);
        size_t wlen = strlen(word);
        for (const char *const *k = keywords; *k; k++)
            if (strncmp(*k, word, wlen) == 0)
                cands_add(text, (size_t)(word - text), *k, strlen(*k));
        return 0;
    }
    if (sep == word) /* ".x" after "]" or ")": the value is not a name */
        return 0;
    /* Walk the path before the separator: identifiers joined by '.'. */
    for (const char *p = word; p < sep;) {
        const char *dot = memchr(p, '.', (size_t)(sep - p));
        if (!dot)
            dot = sep;
        if (!is_ident(p, (size_t)(dot - p)))
            return 0;
        raw_field(L, p, (size_t)(dot - p));
        if (lua_isnil(L, -1))
            return 0;
        p = dot + 1;
    }
    add_fields(L, text, (size_t)(sep + 1 - text), sep + 1, *sep == ':');
    return 0;
}

/* Readline's generator: returns the candidates one by one (readline frees them), NULL at the
 * end. */
static char *generate(const char *text, int state)
{
    if (state == 0) {
        cands_reset();
        lua_pushcfunction(comp_L, collect);
        lua_pushlightuserdata(comp_L, (void *)text);
        if (lua_pcall(comp_L, 1, 0, 0) != LUA_OK)
            lua_pop(comp_L, 1);
    }
    if (cands.next == cands.n)
        return NULL;
    char *s = cands.v[cands.next];
    cands.v[cands.next++] = NULL;
    return s;
}

static char **attempt(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_completion_append_character = '\0';
    /* Inside a string literal: let readline complete file names. */
    if (rl_completion_quote_character)
        return NULL;
    rl_attempted_completion_over = 1;
    char **m = rl_completion_matches(text, generate);
    if (m && !m[1] && is_keyword(m[0], strlen(m[0])))
        rl_completion_append_character = ' ';
    return m;
}

/* Lists matches by their last component ("format", not "string.format"). */
static void display(char **matches, int n, int maxlen)
{
    char **shown = rl_filename_completion_desired ? NULL : malloc(((size_t)n + 2) * sizeof *shown);
    if (!shown) {
        rl_display_match_list(matches, n, maxlen);
    } else {
        int width = 0;
        for (int i = 0; i <= n; i++) {
            const char *s = matches[i], *p = strpbrk(s, ".:");
            while (p) {
                s = p + 1;
                p = strpbrk(s, ".:");
            }
            shown[i] = (char *)s;
            if (i > 0 && (int)strlen(s) > width)
                width = (int)strlen(s);
        }
        shown[n + 1] = NULL;
        rl_display_match_list(shown, n, width);
        free(shown);
    }
    rl_forced_update_display();
}

/* Word breaks for Lua code: '.' and ':' are not breaks, so "a.b.c" and "t:res" are one word. */
static const char lua_breaks[] = " \t\n\"'\\><=;+-*/%^~#&|,{}()[]";

/* True when position end of line is inside a quoted string (outside comments). */
static bool in_string(const char *line, int end)
{
    char quote = 0;
    for (int i = 0; i < end; i++) {
        char c = line[i];
        if (quote) {
            if (c == '\\' && i + 1 < end)
                i++;
            else if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '-' && line[i + 1] == '-') {
            return false;
        }
    }
    return quote != 0;
}

/* Inside a string only quotes break words, so a file name stays one word for readline's file
 * name completion. */
static char *word_breaks(void)
{
    return (char *)(in_string(rl_line_buffer, rl_point) ? "\"'" : lua_breaks);
}

void nl_repl_complete_init(lua_State *L)
{
    comp_L = L;
    rl_attempted_completion_function = attempt;
    rl_completion_display_matches_hook = display;
    rl_basic_word_break_characters = lua_breaks;
    rl_completer_word_break_characters = lua_breaks;
    rl_completion_word_break_hook = word_breaks;
    rl_completer_quote_characters = "\"'";
}
