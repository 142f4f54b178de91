/* sys.c: the Lua module `sys`: wall-clock time, CPU thread count and memory use, so that
 * experiments and benchmarks written in Lua can time and size themselves. */
#include "dsl.h"
#include "nl.h"

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

/* sys.device_stats(device [, reset]) -> table of the device's counters (nl_device_stats). */
static int l_device_stats(lua_State *L)
{
    nl_device dev = nl_dsl_checkdevice(L, 1);
    bool reset = lua_toboolean(L, 2);
    nl_backend *be = nl_backend_get(dev);
    if (!be->stats)
        nl_dsl_error(L, "%s keeps no device statistics (its tensors are host memory)", be->name);
    nl_device_stats st;
    be->stats(be, &st, reset);
    const struct { const char *name; uint64_t v; } rows[] = {
        {"launches", st.launches}, {"bytes_h2d", st.bytes_h2d}, {"bytes_d2h", st.bytes_d2h},
        {"bytes_d2d", st.bytes_d2d}, {"copies_h2d", st.copies_h2d}, {"copies_d2h", st.copies_d2h},
        {"syncs", st.syncs}, {"allocs", st.allocs}, {"memory", st.mem_current},
        {"peak_memory", st.mem_peak},
    };
    lua_createtable(L, 0, (int)(sizeof rows / sizeof rows[0]) + 1);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        lua_pushinteger(L, (lua_Integer)rows[i].v);
        lua_setfield(L, -2, rows[i].name);
    }
    lua_pushstring(L, be->name);
    lua_setfield(L, -2, "device");
    return 1;
}

static const nl_dsl_fn sys_fns[] = {
    {"clock", l_clock, "sys.clock() -> seconds",
     "Wall-clock seconds from a monotonic clock; subtract two readings to time something.",
     "local t0 = sys.clock(); tensor.randn(512, 512):matmul(tensor.randn(512, 512)); print(sys.clock() - t0)"},
    {"threads", l_threads, "sys.threads([n]) -> n",
     "Gets, or sets then gets, the number of CPU threads used by kernels and BLAS (default: all cores, or $NNLAB_THREADS).",
     "sys.threads(1)"},
    {"memory", l_memory, "sys.memory() -> {rss=MiB, peak=MiB}",
     "Resident memory of this process now and at its peak, in MiB.", "print(sys.memory().peak)"},
    {"device_stats", l_device_stats, "sys.device_stats(device [, reset]) -> table",
     "What a device has cost since start-up or the last reset (reset=true returns the counts, "
     "then zeroes them): launches (kernels), bytes_h2d / bytes_d2h / bytes_d2d and copies_h2d / "
     "copies_d2h (transfers), syncs, allocs, memory and peak_memory (bytes). For sim and cuda; "
     "the cpu keeps none.",
     "sys.device_stats('sim', true); local x = tensor.randn(64, 10, {device = 'sim'}); print(sys.device_stats('sim').launches)"},
    {NULL, NULL, NULL, NULL, NULL},
};

int nl_open_sys(lua_State *L)
{
    nl_dsl_register(L, "sys", sys_fns);
    return 0;
}
