/* sys.c: the Lua module `sys`: wall-clock time, CPU thread count, the kernels' instruction set,
 * memory use and what the machine is (sys.info), so that experiments and benchmarks written in Lua
 * can time, size and label themselves; the devices' counters and the CUDA TF32 switch. */
#include "cpuinfo.h"
#include "cuda/cuda.h"
#include "dsl.h"
#include "nl.h"
#include "profile.h"
#include "quant.h"

#include <lauxlib.h>
/* The git commit the program was built from (the Makefile writes it into the build folder). */
#if __has_include("nl_commit.h")
#include "nl_commit.h"
#endif
#ifndef NL_COMMIT
#define NL_COMMIT "unknown"
#endif
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

/* t[key] = s, or nothing when s is NULL. */
static void set_string(lua_State *L, const char *key, const char *s)
{
    if (!s) return;
    lua_pushstring(L, s);
    lua_setfield(L, -2, key);
}

static int l_info(lua_State *L)
{
    const nl_cpu_info *c = nl_cpu_get_info();
    const nl_blas_info *b = nl_blas_get_info();
    lua_createtable(L, 0, 6);

    lua_createtable(L, 0, 5);
    set_string(L, "model", c->model);
    set_string(L, "vendor", c->vendor);
    lua_pushinteger(L, c->family);
    lua_setfield(L, -2, "family");
    lua_pushinteger(L, c->model_id);
    lua_setfield(L, -2, "model_id");
    const struct { const char *name; bool on; } features[] = {
        {"avx2", c->avx2},         {"fma", c->fma},
        {"avx512f", c->avx512f},   {"avx512bw", c->avx512bw},
        {"avx512vl", c->avx512vl}, {"avx512dq", c->avx512dq},
        {"avx512_vnni", c->avx512_vnni}, {"avx512_bf16", c->avx512_bf16},
        {"amx", c->amx},
    };
    lua_createtable(L, 0, (int)(sizeof features / sizeof features[0]));
    for (size_t i = 0; i < sizeof features / sizeof features[0]; i++) {
        lua_pushboolean(L, features[i].on);
        lua_setfield(L, -2, features[i].name);
    }
    lua_setfield(L, -2, "features");
    lua_setfield(L, -2, "cpu");

    lua_createtable(L, 0, 6);
    set_string(L, "name", b->version);
    set_string(L, "core", b->core);
    set_string(L, "chosen_by", b->chosen_by);
    set_string(L, "openblas_chose", b->openblas_chose);
    set_string(L, "wanted", b->wanted);
    set_string(L, "problem", b->problem);
    set_string(L, "summary", nl_blas_summary());
    lua_setfield(L, -2, "blas");

    lua_pushinteger(L, nl_get_threads());
    lua_setfield(L, -2, "threads");
    set_string(L, "version", NL_VERSION);
    set_string(L, "commit", NL_COMMIT);
    lua_pushstring(L, nl_quant_isa());
    lua_setfield(L, -2, "int8_isa");

    /* The CUDA devices (cuda:0, cuda:1, ...) with their properties; when there are none, an
     * empty list and the reason. */
    const int n_cuda = nl_cuda_device_count();
    lua_createtable(L, n_cuda > 0 ? n_cuda : 0, 0);
    for (int d = 0; d < n_cuda; d++) {
        nl_cuda_device_info info;
        if (nl_cuda_device_query(d, &info) != NL_OK) continue;
        lua_createtable(L, 0, 6);
        lua_pushstring(L, info.name);
        lua_setfield(L, -2, "name");
        lua_pushnumber(L, (lua_Number)info.memory / (1024.0 * 1024.0));
        lua_setfield(L, -2, "memory");
        lua_pushfstring(L, "%d.%d", info.major, info.minor);
        lua_setfield(L, -2, "capability");
        lua_pushinteger(L, info.multiprocessors);
        lua_setfield(L, -2, "multiprocessors");
        lua_pushfstring(L, "%d.%d", info.driver / 1000, info.driver % 1000 / 10);
        lua_setfield(L, -2, "driver");
        lua_pushfstring(L, "%d.%d", info.runtime / 1000, info.runtime % 1000 / 10);
        lua_setfield(L, -2, "runtime");
        lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "cuda");
    if (n_cuda <= 0 && !nl_backend_get(nl_device_make(NL_CUDA, 0)))
        set_string(L, "cuda_note", nl_errmsg());
    return 1;
}

static int l_tf32(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TBOOLEAN);
        nl_cuda_set_tf32(lua_toboolean(L, 1));
    }
    lua_pushboolean(L, nl_cuda_tf32());
    return 1;
}

/* sys.precision([name]) -> name, how bf16 runs. */
static int l_precision(lua_State *L)
{
    static const char *const names[NL_PREC_COUNT] = {[NL_PREC_F32] = "fp32", [NL_PREC_BF16] = "bf16"};
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        int p = 0;
        while (p < NL_PREC_COUNT && strcmp(name, names[p]) != 0) p++;
        if (p == NL_PREC_COUNT)
            nl_dsl_error(L, "sys.precision: unknown precision '%s' (fp32 or bf16)", name);
        nl_set_precision((nl_precision)p);
    }
    lua_pushstring(L, names[nl_get_precision()]);
    lua_pushstring(L, nl_bf16_how());
    return 2;
}

/* sys.device_stats(device [, reset]) -> table of the device's counters (nl_device_stats). */
static int l_device_stats(lua_State *L)
{
    nl_device dev = nl_dsl_checkdevice(L, 1);
    bool reset = lua_toboolean(L, 2);
    nl_backend *be = nl_backend_get(dev);
    if (!be->stats)
        nl_dsl_error(L, "%s keeps no device statistics (its tensors are host memory)", be->name);
    nl_device_stats st = {0};
    be->stats(be, &st, reset);
    const struct { const char *name; uint64_t v; } rows[] = {
        {"launches", st.launches}, {"bytes_h2d", st.bytes_h2d}, {"bytes_d2h", st.bytes_d2h},
        {"bytes_d2d", st.bytes_d2d}, {"copies_h2d", st.copies_h2d}, {"copies_d2h", st.copies_d2h},
        {"syncs", st.syncs}, {"allocs", st.allocs}, {"memory", st.mem_current},
        {"peak_memory", st.mem_peak}, {"cached", st.mem_cached},
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
    {"isa", l_isa, "sys.isa([name]) -> isa, blas_core",
     "The instruction set the CPU kernels use (\"generic\", \"avx2\" or \"avx512\": the CPU's best, or "
     "$NNLAB_ISA) and OpenBLAS's core; with a name (or \"auto\"), uses that set from now on (an error "
     "where the CPU lacks it).",
     "print(sys.isa())"},
    {"memory", l_memory, "sys.memory() -> {rss=MiB, peak=MiB}",
     "Resident memory of this process now and at its peak, in MiB.", "print(sys.memory().peak)"},
    {"info", l_info,
     "sys.info() -> {cpu={model, vendor, family, model_id, features={avx2=, fma=, avx512f=, ...}}, "
     "blas={name, core, chosen_by, summary, ...}, threads, int8_isa, cuda={...}, version, commit}",
     "What this machine is: the CPU and its cpuid features that matter (avx2, fma, avx512f/bw/vl/dq, "
     "avx512_vnni, avx512_bf16, amx), the BLAS and the kernels it runs (blas.core; blas.chosen_by is "
     "'OpenBLAS', 'nnlab' when nnlab restarted with OPENBLAS_CORETYPE set because OpenBLAS had chosen "
     "older kernels (blas.openblas_chose), or 'OPENBLAS_CORETYPE' when the user set it), the CPU threads, "
     "the int8 kernels' instruction set and the CUDA devices (name, memory in MiB, compute capability, "
     "multiprocessors, driver and runtime versions; an empty list and cuda_note when none), nnlab's "
     "version and the git commit it was built from (\"-dirty\" when the checkout had changes; "
     "\"unknown\" outside a git checkout).",
     "print(sys.info().blas.summary)"},
    {"tf32", l_tf32, "sys.tf32([on]) -> on",
     "Gets, or sets then gets, whether CUDA matrix products may use TF32 tensor cores (off by "
     "default, so GPU results match the CPU's to f32 rounding; on is faster).", "sys.tf32(true)"},
    {"precision", l_precision, "sys.precision([name]) -> precision, bf16_how",
     "Gets, or sets then gets, the precision of convolutions and matrix products on the CPU: \"fp32\" "
     "(the default) or \"bf16\" (mixed precision: inputs rounded to bf16, sums in fp32; the rest stays "
     "fp32). nn.Trainer{precision=}, nn.evaluate and nn.profile set it for their own work. bf16_how: "
     "\"native avx512_bf16\" where the CPU has AVX512_BF16, else \"emulated avx2\" or \"emulated "
     "generic\" (the same results, computed in fp32 arithmetic: no faster than fp32).",
     "print(sys.precision())"},
    {"device_stats", l_device_stats, "sys.device_stats(device [, reset]) -> table",
     "What a device has cost since start-up or the last reset (reset=true returns the counts, "
     "then zeroes them): launches (kernels), bytes_h2d / bytes_d2h / bytes_d2d and copies_h2d / "
     "copies_d2h (transfers), syncs, allocs, memory, peak_memory and cached (bytes freed but kept "
     "for reuse by a caching allocator). For sim and cuda; "
     "the cpu keeps none.",
     "sys.device_stats('sim', true); local x = tensor.randn(64, 10, {device = 'sim'}); print(sys.device_stats('sim').launches)"},
    {NULL, NULL, NULL, NULL, NULL},
};

int nl_open_sys(lua_State *L)
{
    nl_dsl_register(L, "sys", sys_fns);
    return 0;
}
