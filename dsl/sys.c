/* sys.c: the Lua module `sys`: wall-clock time, CPU thread count, the kernels' instruction set and
 * memory use, so that experiments and benchmarks written in Lua can time and size themselves. */
#include "dsl.h"
#include "nl.h"
#include "profile.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static int l_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_threads(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n >= 1 && n <= 1024, 1, "thread count must be between 1 and 1024");
        nl_set_threads((int)n);
    }
    lua_pushinteger(L, nl_get_threads());
    return 1;
}

static int l_isa(lua_State *L)
{
    if (!lua_isnoneornil(L, 1) && nl_isa_set(luaL_checkstring(L, 1)) != NL_OK) return nl_dsl_core_error(L);
    lua_pushstring(L, nl_isa());
    lua_pushstring(L, nl_blas_core());
    return 2;
}

/* Reads one "Key:   N kB" line of /proc/self/status, in MiB (-1 when unavailable). */
static double proc_status_mib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtod(line + klen + 1, NULL) / 1024.0;
            break;
        }
    fclose(f);
    return v;
}

static int l_memory(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, proc_status_mib("VmRSS"));
    lua_setfield(L, -2, "rss");
    lua_pushnumber(L, proc_status_mib("VmHWM"));
    lua_setfield(L, -2, "peak");
    return 1;
}

static const nl_dsl_fn sys_fns[] = {
    {"clock", l_clock, "sys.clock() -> seconds",
     "Wall-clock seconds from a monotonic clock; subtract two readings to time something.",
     "local t0 = sys.clock(); tensor.randn(512, 512):matmul(tensor.randn(512, 512)); print(sys.clock() - t0)"},
    {"threads", l_threads, "sys.threads([n]) -> n",
     "Gets, or sets then gets, the number of CPU threads used by kernels and BLAS (default: all cores, or $NNLAB_THREADS).",
     "sys.threads(1)"},
    {"isa", l_isa, "sys.isa([name]) -> isa, blas_core",
     "The instruction set the CPU kernels use (\"generic\", \"avx2\" or \"avx512\": the CPU's best, or "
     "$NNLAB_ISA) and OpenBLAS's core; with a name (or \"auto\"), uses that set from now on (an error "
     "where the CPU lacks it).",
     "print(sys.isa())"},
    {"memory", l_memory, "sys.memory() -> {rss=MiB, peak=MiB}",
     "Resident memory of this process now and at its peak, in MiB.", "print(sys.memory().peak)"},
    {NULL, NULL, NULL, NULL, NULL},
};

int nl_open_sys(lua_State *L)
{
    nl_dsl_register(L, "sys", sys_fns);
    return 0;
}
