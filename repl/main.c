/* main.c: the nnlab program. Reads the command line as lua(1) does (script and its arguments,
 * -e, -i, -v, -h), then runs the chunks and scripts or the interactive REPL. */
#include "cpuinfo.h"
#include "dsl.h"
#include "repl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

static const char *progname = "nnlab";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options] [script [args]]\n"
            "  -e code    run the Lua code (may repeat; runs in order)\n"
            "  -i         enter the REPL after running the script and -e code\n"
            "  -n N       run N processes under Open MPI's mpirun (data-parallel training)\n"
            "  -v, --version  print the version\n"
            "  -h, --help     print this help\n"
            "  --         stop handling options\n"
            "  -          read the script from stdin\n"
            "With no script: the REPL when stdin is a terminal, else stdin is run as a script.\n"
            "A script or -e chunk that fails exits with status 1 (130 when stopped by Ctrl-C).\n",
            progname);
}

/* nnlab -n N ...: replaces this process by Open MPI's mpirun running N copies of nnlab with the
 * rest of the command line, with what this machine needs: --oversubscribe when there are more
 * ranks than cores, --allow-run-as-root when root, and the cores split between the ranks
 * (NNLAB_THREADS). Returns only on failure (message printed). */
static int launch_ranks(int argc, char **argv, int at)
{
    char *end = NULL;
    long n = at + 1 < argc ? strtol(argv[at + 1], &end, 10) : 0;
    if (!end || *end || n < 1 || n > 4096) {
        fprintf(stderr, "%s: -n needs a number of processes from 1 to 4096\n", progname);
        return EXIT_FAILURE;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    char np[24], threads[48], self[4096];
    snprintf(np, sizeof np, "%ld", n);
    snprintf(threads, sizeof threads, "NNLAB_THREADS=%ld", cores / n > 0 ? cores / n : 1);
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) snprintf(self, sizeof self, "%s", argv[0]);
    else self[k] = '\0';
    char **args = calloc((size_t)argc + 16, sizeof *args);
    if (!args) return EXIT_FAILURE;
    int a = 0;
    args[a++] = "mpirun";
    if (geteuid() == 0) args[a++] = "--allow-run-as-root";
    if (n > cores) args[a++] = "--oversubscribe";
    args[a++] = "--bind-to";
    args[a++] = "none";
    args[a++] = "-x";
    args[a++] = threads;
    args[a++] = "-np";
    args[a++] = np;
    args[a++] = self;
    for (int i = 1; i < argc; i++)
        if (i != at && i != at + 1) args[a++] = argv[i];
    args[a] = NULL;
    fflush(stdout);
    execvp("mpirun", args);
    fprintf(stderr, "%s: -n: cannot run mpirun (%s): install Open MPI (make deps)\n", progname,
            strerror(errno));
    free(args);
    return EXIT_FAILURE;
}

/* What the command line asks for; script is argv's index of the script, 0 when none. */
typedef struct {
    int script;
    bool interactive, version, help, has_e;
} options;

/* Parses argv like lua.c's collectargs; -e's code is checked here and run later in order.
 * Returns false (message printed) on a bad option. */
static bool parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            o->script = i;
            return true;
        }
        if (strcmp(a, "--") == 0) {
            o->script = i + 1 < argc ? i + 1 : 0;
            return true;
        }
        if (strcmp(a, "-e") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "%s: '-e' needs an argument\n", progname);
                return false;
            }
            o->has_e = true;
        } else if (strcmp(a, "-n") == 0) { /* handled by main before Lua starts */
            i++;
        } else if (strcmp(a, "-i") == 0) {
            o->interactive = true;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            o->version = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = true;
        } else {
            fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
            return false;
        }
    }
    return true;
}

/* The global `arg`: the script at index 0, its arguments at 1.., the program and options at
 * negative indices (lua.c's createargtable). */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
    lua_createtable(L, script > 0 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* Reports a failed chunk and returns the exit status it calls for (0 when it succeeded). */
static int chunk_status(lua_State *L, int status)
{
    if (status == LUA_OK)
        return EXIT_SUCCESS;
    nl_repl_report(L, status, progname);
    return nl_repl_interrupted() ? NL_EXIT_INTERRUPTED : EXIT_FAILURE;
}

/* Loads and runs a script (NULL: stdin) with args as its `...`. */
static int run_script(lua_State *L, const char *fname, int nargs, char **args)
{
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        luaL_checkstack(L, nargs, "too many arguments to the script");
        for (int i = 0; i < nargs; i++)
            lua_pushstring(L, args[i]);
        status = nl_repl_docall(L, nargs, 0);
    }
    return chunk_status(L, status);
}

/* Runs every -e chunk in order; stops at the first failure and returns its exit status. */
static int run_e_chunks(lua_State *L, int argc, char **argv, int script)
{
    int end = script > 0 ? script : argc;
    for (int i = 1; i < end; i++) {
        if (strcmp(argv[i], "-e") != 0)
            continue;
        const char *code = argv[++i];
        int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
        if (status == LUA_OK)
            status = nl_repl_docall(L, 0, 0);
        if ((status = chunk_status(L, status)) != EXIT_SUCCESS)
            return status;
    }
    return EXIT_SUCCESS;
}

/* The whole program under lua_pcall (lua.c's pmain): argc and argv come as a number and a light
 * userdata; returns the exit status. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    options o;
    if (!parse_args(argc, argv, &o)) {
        usage(stderr);
        lua_pushinteger(L, EXIT_FAILURE);
        return 1;
    }
    if (o.help) {
        usage(stdout);
        lua_pushinteger(L, EXIT_SUCCESS);
        return 1;
    }
    if (o.version)
        printf("nnlab %s (%s)\nBLAS: %s\n", NL_VERSION, LUA_RELEASE, nl_blas_summary());

    luaL_openlibs(L);
    create_arg_table(L, argc, argv, o.script);
    nl_repl_signals(L);
    lua_pushcfunction(L, nl_dsl_open);
    int status = chunk_status(L, nl_repl_docall(L, 0, 0));
    if (status != EXIT_SUCCESS) {
        lua_pushinteger(L, status);
        return 1;
    }

    bool prompt = o.interactive || (o.script == 0 && !o.has_e && !o.version && isatty(STDIN_FILENO));
    lua_pushboolean(L, prompt);
    lua_setfield(L, LUA_REGISTRYINDEX, NL_PROMPT_FOLLOWS_KEY);
    status = run_e_chunks(L, argc, argv, o.script);
    if (status == EXIT_SUCCESS && o.script > 0) {
        const char *fname = argv[o.script];
        /* "-" is stdin, unless it follows "--" (then it is a file named "-"). */
        if (strcmp(fname, "-") == 0 && strcmp(argv[o.script - 1], "--") != 0)
            fname = NULL;
        status = run_script(L, fname, argc - o.script - 1, argv + o.script + 1);
    }
    /* Like python -i, errors before the REPL are reported and the REPL starts anyway. */
    if (o.interactive) {
        nl_repl_run(L);
        status = EXIT_SUCCESS;
    } else if (o.script == 0 && !o.has_e && !o.version) {
        if (isatty(STDIN_FILENO))
            nl_repl_run(L);
        else
            status = run_script(L, NULL, 0, NULL);
    }
    lua_pushinteger(L, status);
    return 1;
}

/* OpenMP threads that wait for work spin briefly, then sleep: a trade between an idle machine and
 * a busy one. Sleeping at once (passive) costs a futex wake-up at each of the ~40 parallel regions
 * of a training step; spinning as long as libgomp's default (300,000 pauses, ms) lets a busy
 * neighbour take the core a working thread needs: a 2-thread step then runs at half the speed.
 * Measured on a 2-core Zen 3 guest, 2 threads, interleaved rounds against passive: 300 pauses
 * +1% idle / -1% beside a busy process; 1000 (about 26 us there) +3-7% / -8% to +2% (five runs,
 * about -2%); 2000 +3-7% / -6%. GOMP_SPINCOUNT=1000 it is; with OMP_WAIT_POLICY=passive, libgomp does not spin at all when
 * it has more threads than CPUs. libgomp reads both once, before main, so when the user has set
 * neither the program starts itself again with them set; they are removed again in the second
 * start, so programs nnlab runs (a PyTorch peer) keep their own default. When the start-up BLAS
 * check restarts the program anyway (core/tensor/cpuinfo.c), it sets these in that same restart. */
#define WAIT_MARK "NNLAB_OMP_WAIT_DEFAULT"
const char *const nl_restart_env[] = {"OMP_WAIT_POLICY", "passive", "GOMP_SPINCOUNT", "1000",
                                      WAIT_MARK, "1", NULL};
static void default_wait_policy(char **argv)
{
    if (getenv(WAIT_MARK)) { /* the second start: libgomp has read the settings */
        nl_restart_env_apply(false);
        return;
    }
    if (!nl_restart_env_wanted()) return; /* the user's choice stands */
    nl_restart_env_apply(true);
    execv("/proc/self/exe", argv);
    nl_restart_env_apply(false); /* no re-start possible: run with libgomp's default */
}

int main(int argc, char **argv)
{
    default_wait_policy(argv);
    /* -n N among the options (before the script): the program becomes mpirun. */
    for (int i = 1; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0 && strcmp(argv[i], "-") != 0; i++) {
        if (strcmp(argv[i], "-n") == 0) return launch_ranks(argc, argv, i);
        if (strcmp(argv[i], "-e") == 0) i++;
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", progname);
        return EXIT_FAILURE;
    }
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int code = status == LUA_OK ? (int)lua_tointeger(L, -1) : EXIT_FAILURE;
    nl_repl_report(L, status, progname);
    fflush(stdout);
    fflush(stderr);
    nl_dsl_exit(code);
    lua_close(L);
    return code;
}
