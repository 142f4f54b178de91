/* bench_matmul.c: sgemm GFLOP/s through nnlab's matmul op (into a given output), through the Lua
 * DSL (`c = a:matmul(b)` in a Lua state with nnlab's modules, a new output tensor per call, as a
 * user's script does) and of cblas_sgemm called directly, for 1024^3 and the seed CNN's
 * convolution-as-GEMM shapes. Prints one line per shape. */
#include "dsl.h"
#include "nl.h"

#include <cblas.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best-of-reps seconds per call of one of the two paths. */
static double time_path(int via_core, nl_tensor *c, nl_tensor *a, nl_tensor *b, int reps)
{
    int64_t m = a->shape[0], k = a->shape[1], n = b->shape[1];
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (via_core) {
            if (nl_matmul(c, a, b) != NL_OK) {
                fprintf(stderr, "matmul: %s\n", nl_errmsg());
                return -1;
            }
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                        nl_tensor_f32(a), (int)k, nl_tensor_f32(b), (int)n, 0.0f, nl_tensor_f32(c),
                        (int)n);
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* A Lua state with nnlab's modules and a function lua_matmul(m, k, n, reps): the best seconds per
 * `c = a:matmul(b)` over reps calls, timed inside Lua. */
static lua_State *lua_bench(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, nl_dsl_open);
    static const char chunk[] =
        "function lua_matmul(m, k, n, reps)\n"
        "  local a, b = tensor.rand(m, k), tensor.rand(k, n)\n"
        "  local best = math.huge\n"
        "  for _ = 1, reps do\n"
        "    local t0 = sys.clock()\n"
        "    local c = a:matmul(b)\n"
        "    best = math.min(best, sys.clock() - t0)\n"
        "  end\n"
        "  return best\n"
        "end\n";
    if (lua_pcall(L, 0, 0, 0) != LUA_OK || luaL_dostring(L, chunk) != LUA_OK) {
        fprintf(stderr, "bench_matmul: Lua: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    return L;
}

static double time_lua(lua_State *L, int64_t m, int64_t k, int64_t n, int reps)
{
    lua_getglobal(L, "lua_matmul");
    lua_pushinteger(L, m), lua_pushinteger(L, k), lua_pushinteger(L, n), lua_pushinteger(L, reps);
    if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
        fprintf(stderr, "bench_matmul: Lua: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    const double t = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return t;
}

int main(void)
{
    nl_init();
    lua_State *L = lua_bench();
    static const int64_t shapes[][3] = {
        {1024, 1024, 1024}, {32, 27, 64 * 1024}, {64, 288, 64 * 256}, {64, 288, 64 * 1024},
    };
    printf("%-22s %12s %12s %12s %8s %8s   (threads %d, best of 25)\n", "matmul M x K x N", "nnlab GF/s",
           "Lua GF/s", "sgemm GF/s", "ratio", "Lua", nl_get_threads());
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
        int64_t sa[2] = {m, k}, sb[2] = {k, n}, sc[2] = {m, n};
        nl_tensor *a = nl_tensor_empty(NL_F32, 2, sa, NL_CPU), *b = nl_tensor_empty(NL_F32, 2, sb, NL_CPU),
                  *c = nl_tensor_empty(NL_F32, 2, sc, NL_CPU);
        nl_rand_uniform(a, -1, 1);
        nl_rand_uniform(b, -1, 1);
        double flop = 2.0 * m * k * n;
        time_path(0, c, a, b, 2); /* warm up both */
        time_path(1, c, a, b, 2);
        time_lua(L, m, k, n, 2);
        /* Interleave the three paths so drift on a shared machine hits them alike. */
        double td = 1e30, tc = 1e30, tl = 1e30;
        for (int round = 0; round < 5; round++) {
            const double x = time_path(0, c, a, b, 5), y = time_path(1, c, a, b, 5),
                         z = time_lua(L, m, k, n, 5);
            if (x < td) td = x;
            if (y < tc) tc = y;
            if (z < tl) tl = z;
        }
        char name[64];
        snprintf(name, sizeof name, "%lld x %lld x %lld", (long long)m, (long long)k, (long long)n);
        printf("%-22s %12.1f %12.1f %12.1f %7.3fx %7.3fx\n", name, flop / tc * 1e-9, flop / tl * 1e-9,
               flop / td * 1e-9, td / tc, td / tl);
        nl_tensor_release(a);
        nl_tensor_release(b);
        nl_tensor_release(c);
    }
    printf("ratio: direct sgemm's time over nnlab's op (1 = as fast); Lua: the same for a:matmul(b)\n");
    lua_close(L);
    return 0;
}
