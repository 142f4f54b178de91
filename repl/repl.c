/* repl.c: runs Lua chunks safely (traceback handler, Ctrl-C) and the interactive loop: readline
 * in callback mode polled with a short timeout, multi-line input, history, printed results. */
#include "repl.h"
#include "complete.h"
#include "cpuinfo.h"
#include "dsl.h"
#include "nl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <readline/history.h>
#include <readline/readline.h>

#define PROMPT "nnlab> "
#define PROMPT2 "   ..> "
#define POLL_MS 30          /* the idle hook runs at least this often */
#define HISTORY_MAX 1000    /* lines kept in memory and in the history file */
#define INCOMPLETE (-1)     /* load status: the chunk continues on the next line */

/* ---------------------------------------------------------------- running chunks -------- */

/* Shared with the signal handler. running: a chunk is under nl_repl_docall; sigints: Ctrl-C
 * presses during it; prompt_sigint: Ctrl-C at the prompt, for the loop; winch: resized. */
static lua_State *volatile sig_L;
static volatile sig_atomic_t running, sigints, prompt_sigint, winch;

/* The Lua hook set by Ctrl-C (lua.c's lstop). The first Ctrl-C raises once and clears the hook;
 * after a second one it stays and raises at every Lua instruction, so code that catches the
 * error with pcall and goes on still stops. It raises only on count events then, which never
 * happen in the (C) message handler. */
static void lstop(lua_State *L, lua_Debug *ar)
{
    if (sigints < 2)
        lua_sethook(L, NULL, 0, 0);
    else if (ar->event != LUA_HOOKCOUNT)
        return;
    lua_pushliteral(L, "interrupted"); /* no position: it names no place in nnlab's code */
    lua_error(L);
}

static void on_sigint(int sig)
{
    (void)sig;
    if (!running) {
        prompt_sigint = 1;
        return;
    }
    nl_interrupt();
    sigints = sigints + 1;
    /* Code that defers interrupts stops at its own boundaries; Ctrl-C again breaks in. */
    if (sigints >= 2 || !nl_interrupt_deferred())
        lua_sethook(sig_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    if (sigints == 2) {
        static const char msg[] = "\n[interrupt pending: stopping at the next check]\n";
        int saved = errno;
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        errno = saved;
    }
}

static void on_sigwinch(int sig)
{
    (void)sig;
    winch = 1;
}

static void set_handler(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

void nl_repl_signals(lua_State *L)
{
    sig_L = L;
    set_handler(SIGINT, on_sigint);
}

/* True when every frame of traceback tb (n bytes) is a C function or the main chunk of a line
 * typed at the prompt. */
static bool trivial_traceback(const char *tb, size_t n)
{
    static const char head[] = "\nstack traceback:";
    const char *end = tb + n, *p = memmem(tb, n, head, sizeof head - 1);
    if (!p)
        return false;
    for (p += sizeof head - 1; p < end;) {
        const char *line = p + 1, *next = memchr(line, '\n', (size_t)(end - line));
        if (!next)
            next = end;
        size_t len = (size_t)(next - line);
        bool c_frame = len >= 4 && memcmp(line, "\t[C]", 4) == 0;
        bool typed = len > 7 && memcmp(line, "\tstdin:", 7) == 0;
        bool main_chunk = len >= 13 && memcmp(next - 13, "in main chunk", 13) == 0;
        if (!c_frame && !(typed && main_chunk))
            return false;
        p = next;
    }
    return true;
}

/* True when msg reports a Ctrl-C: the hook's "interrupted", or the same word at the end of a
 * message a function made of it ("dsl/nn.lua:205: interrupted", "stdin:1: matmul: interrupted"). */
static bool interrupt_message(const char *msg)
{
    static const char word[] = "interrupted";
    size_t n = strlen(msg), w = sizeof word - 1;
    return n >= w && strcmp(msg + n - w, word) == 0 && (n == w || msg[n - w - 1] == ' ');
}

/* lua.c's msghandler: adds a traceback to string messages; other error objects show through
 * their __tostring, or by their type. An error that nnlab raised (a DSL function refusing its
 * arguments or failing: "stdin:3: tensor.load: cannot open ...") shows as the message alone: it
 * names the line of the user's code, the function and the problem, and the frames inside nnlab
 * would only bury it. Errors of the user's own code keep their traceback. A chunk stopped by
 * Ctrl-C reports "interrupted" and nothing else. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    } else if (sigints > 0 && interrupt_message(msg)) {
        /* Ctrl-C stopped the chunk: say so alone, wherever in nnlab or the user's code it was. */
        lua_pushliteral(L, "interrupted");
        return 1;
    } else if (nl_dsl_raised(L, 1, 1)) {
        return 1;
    }
    luaL_traceback(L, L, msg, 1);
    /* Drop the frames of the C code that runs the chunk (lua.c shows one as "[C]: in ?"). */
    static const char tail[] = "\n\t[C]: in ?";
    size_t len, tlen = sizeof tail - 1;
    const char *tb = lua_tolstring(L, -1, &len);
    size_t keep = len;
    while (keep >= tlen && memcmp(tb + keep - tlen, tail, tlen) == 0)
        keep -= tlen;
    /* A traceback that only says "a C function called from the line you typed" adds nothing:
     * keep just the message then (errors in scripts and functions keep their frames). */
    if (trivial_traceback(tb, keep)) {
        lua_pushstring(L, msg);
        return 1;
    }
    if (keep < len)
        lua_pushlstring(L, tb, keep);
    return 1;
}

int nl_repl_docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    lua_sethook(L, NULL, 0, 0);
    nl_interrupt_clear();
    /* A chunk that failed inside a deferred region may have left it open. */
    while (nl_interrupt_deferred())
        nl_interrupt_defer(false);
    sigints = 0;
    sig_L = L;
    running = 1;
    int status = lua_pcall(L, narg, nres, base);
    running = 0;
    lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

bool nl_repl_interrupted(void)
{
    return sigints > 0;
}

int nl_repl_report(lua_State *L, int status, const char *prefix)
{
    if (status == LUA_OK)
        return status;
    const char *msg = lua_tostring(L, -1);
    fflush(stdout);
    if (prefix)
        fprintf(stderr, "%s: ", prefix);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
    return status;
}

/* ---------------------------------------------------------------- the loop -------------- */

static struct {
    lua_State *L;
    char *pending;      /* the lines of an incomplete chunk, joined by newlines */
    size_t len, cap;
    bool done;          /* Ctrl-D seen */
    char *history;      /* history file, NULL for none */
} repl;

static void pending_clear(void)
{
    repl.len = 0;
    if (repl.pending)
        repl.pending[0] = '\0';
}

/* Appends "\n" (when not the first line) and line to the pending chunk; false without memory. */
static bool pending_add(const char *line)
{
    size_t n = strlen(line), need = repl.len + n + 2;
    if (need > repl.cap) {
        size_t cap = need > 2 * repl.cap ? need : 2 * repl.cap;
        char *p = realloc(repl.pending, cap);
        if (!p)
            return false;
        repl.pending = p;
        repl.cap = cap;
    }
    if (repl.len > 0)
        repl.pending[repl.len++] = '\n';
    memcpy(repl.pending + repl.len, line, n + 1);
    repl.len += n;
    return true;
}

/* lua.c's incomplete(): a syntax error at <eof> means the chunk goes on; pops that message. */
static bool incomplete(lua_State *L, int status)
{
    static const char mark[] = "<eof>";
    size_t len, mlen = sizeof mark - 1;
    if (status != LUA_ERRSYNTAX)
        return false;
    const char *msg = lua_tolstring(L, -1, &len);
    if (len < mlen || strcmp(msg + len - mlen, mark) != 0)
        return false;
    lua_pop(L, 1);
    return true;
}

/* Compiles code, first as "return <code>" so expressions show their values (lua.c's
 * addreturn), then as statements. Pushes the function (LUA_OK) or the message (an error), or
 * pushes nothing and returns INCOMPLETE when the statement or the expression is unfinished. */
static bool loaded_expr; /* the last chunk load_chunk compiled was an expression */

static int load_chunk(lua_State *L, const char *code, size_t len)
{
    const char *ret = lua_pushfstring(L, "return %s", code);
    int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
    loaded_expr = status == LUA_OK;
    if (status == LUA_OK) {
        lua_remove(L, -2);
        return LUA_OK;
    }
    bool expr_incomplete = incomplete(L, status);
    lua_pop(L, expr_incomplete ? 1 : 2);
    status = luaL_loadbuffer(L, code, len, "=stdin");
    if (status == LUA_OK || incomplete(L, status))
        return status == LUA_OK ? LUA_OK : INCOMPLETE;
    if (expr_incomplete) {
        lua_pop(L, 1);
        return INCOMPLETE;
    }
    return status;
}

/* Prints its arguments separated by tabs: plain tables through the prelude's repr() (so
 * `t:shape()` shows {2, 3}), everything else with tostring (honouring __tostring). */
static int print_values(lua_State *L)
{
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s;
        if (lua_istable(L, i) && !luaL_getmetafield(L, i, "__tostring") &&
            lua_getglobal(L, "repr") == LUA_TFUNCTION) {
            lua_pushvalue(L, i);
            lua_call(L, 1, 1);
            s = luaL_tolstring(L, -1, &len);
            lua_remove(L, -2);
        } else {
            lua_settop(L, n);
            s = luaL_tolstring(L, i, &len);
        }
        if (i > 1)
            fputc('\t', stdout);
        fwrite(s, 1, len, stdout);
        lua_pop(L, 1);
    }
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

/* Runs the function on top and prints what it returns; returns the status, the message on top
 * on error. */
static int run_chunk(lua_State *L)
{
    int base = lua_gettop(L) - 1;
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, NL_QUIET_KEY);
    int status = nl_repl_docall(L, 0, LUA_MULTRET);
    int n = lua_gettop(L) - base;
    /* A lone value the DSL marked (a module returned for chaining, a printed summary) is not
     * echoed: the line's effect is what the user asked for. */
    if (status == LUA_OK && n == 1) {
        bool quiet = lua_getfield(L, LUA_REGISTRYINDEX, NL_QUIET_KEY) != LUA_TNIL &&
                     lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
        if (quiet) {
            lua_pop(L, 1);
            n = 0;
        }
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, NL_QUIET_KEY);
    if (status == LUA_OK && n > 0) {
        luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
        lua_pushcfunction(L, print_values);
        lua_insert(L, base + 1);
        status = nl_repl_docall(L, n, 0);
    }
    return status;
}

/* Handles one complete line (a light userdata) under lua_pcall: adds it to the pending chunk
 * and runs the chunk once it is complete. */
static int handle_line(lua_State *L)
{
    const char *line = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (!pending_add(line)) {
        pending_clear();
        return luaL_error(L, "not enough memory for the input line");
    }
    /* A top-level `local` persists: the journal's rewrite makes it a global (index 1: the code). */
    bool hooks = lua_getfield(L, LUA_REGISTRYINDEX, NL_JOURNAL_KEY) == LUA_TTABLE;
    if (hooks && lua_getfield(L, 1, "rewrite") == LUA_TFUNCTION) {
        lua_pushlstring(L, repl.pending, repl.len);
        lua_call(L, 1, 1);
    } else {
        lua_settop(L, 1);
        lua_pushlstring(L, repl.pending, repl.len);
    }
    lua_remove(L, 1);
    size_t len;
    const char *code = lua_tolstring(L, 1, &len);
    int status = code ? load_chunk(L, code, len) : load_chunk(L, repl.pending, repl.len);
    if (status == INCOMPLETE) {
        rl_set_prompt(PROMPT2);
        return 0;
    }
    bool expr = loaded_expr;
    pending_clear();
    rl_set_prompt(PROMPT);
    if (status == LUA_OK)
        status = run_chunk(L);
    nl_repl_report(L, status, NULL);
    /* The journal keeps the chunks that ran without error, as they ran. */
    if (status == LUA_OK && code && hooks) {
        lua_settop(L, 1);
        lua_getfield(L, LUA_REGISTRYINDEX, NL_JOURNAL_KEY);
        if (lua_getfield(L, -1, "record") == LUA_TFUNCTION) {
            lua_pushvalue(L, 1);
            lua_pushboolean(L, expr);
            lua_call(L, 2, 0);
        }
    }
    return 0;
}

static bool is_blank(const char *s)
{
    return s[strspn(s, " \t\r\n")] == '\0';
}

/* Adds a line to the history and appends it to the file, skipping blank lines and repeats. */
static void remember(const char *line)
{
    if (is_blank(line))
        return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, line) == 0)
        return;
    add_history(line);
    if (repl.history)
        append_history(1, repl.history);
}

/* Readline's line handler: NULL is Ctrl-D on an empty line. */
static void on_line(char *line)
{
    lua_State *L = repl.L;
    if (line == NULL) {
        repl.done = true;
        rl_callback_handler_remove();
        fputc('\n', stdout);
        return;
    }
    remember(line);
    int top = lua_gettop(L);
    lua_pushcfunction(L, handle_line);
    lua_pushlightuserdata(L, line);
    nl_repl_report(L, lua_pcall(L, 1, 0, 0), NULL);
    lua_settop(L, top);
    free(line);
    fflush(stdout);
}

/* Ctrl-C at the prompt: drops the line and any pending chunk, shows a fresh prompt. */
static void cancel_line(void)
{
    pending_clear();
    rl_free_line_state();
    rl_callback_sigcleanup();
    rl_point = rl_end;
    rl_redisplay();
    fputs("^C\n", stdout);
    fflush(stdout);
    rl_callback_handler_remove();
    rl_callback_handler_install(PROMPT, on_line);
}

/* Returns the history file's path (a new string), or NULL when NNLAB_HISTORY is empty or there
 * is no home. */
static char *history_path(void)
{
    const char *env = getenv("NNLAB_HISTORY"), *home = getenv("HOME");
    if (env)
        return *env ? strdup(env) : NULL;
    if (!home || !*home)
        return NULL;
    size_t n = strlen(home) + sizeof "/.nnlab_history";
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/.nnlab_history", home);
    return path;
}

static void history_open(void)
{
    using_history();
    stifle_history(HISTORY_MAX);
    repl.history = history_path();
    if (!repl.history)
        return;
    /* append_history needs an existing file. */
    int fd = open(repl.history, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) {
        fprintf(stderr, "nnlab: history file %s: %s (history not saved)\n", repl.history,
                strerror(errno));
        free(repl.history);
        repl.history = NULL;
        return;
    }
    close(fd);
    read_history(repl.history);
}

void nl_repl_run(lua_State *L)
{
    repl.L = L;
    repl.done = false;
    pending_clear();
    printf("nnlab %s \u2014 Lua %s.%s. help() for help, Ctrl-D to quit.\n", NL_VERSION,
           LUA_VERSION_MAJOR, LUA_VERSION_MINOR);
    printf("BLAS: %s; %d threads\n", nl_blas_summary(), nl_get_threads());
    fflush(stdout);

    rl_readline_name = "nnlab";
    rl_catch_signals = 0;   /* Ctrl-C and resizes are ours (see the loop) */
    rl_catch_sigwinch = 0;
    nl_repl_complete_init(L);
    history_open();
    nl_repl_signals(L);
    set_handler(SIGWINCH, on_sigwinch);

    prompt_sigint = 0;
    rl_callback_handler_install(PROMPT, on_line);
    while (!repl.done) {
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int n = poll(&p, 1, POLL_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (prompt_sigint) {
            prompt_sigint = 0;
            cancel_line();
        } else if (n > 0) {
            if (p.revents & POLLNVAL)
                break;
            rl_callback_read_char();
        }
        if (winch && !repl.done) {
            winch = 0;
            rl_resize_terminal();
        }
        nl_idle();
    }
    if (!repl.done)
        rl_callback_handler_remove();
    set_handler(SIGWINCH, SIG_DFL);
    if (repl.history)
        history_truncate_file(repl.history, HISTORY_MAX);
    free(repl.history);
    repl.history = NULL;
    free(repl.pending);
    repl.pending = NULL;
    repl.cap = repl.len = 0;
    clear_history();
}
