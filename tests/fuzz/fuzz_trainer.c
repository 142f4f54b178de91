/* fuzz_trainer.c: trainer checkpoint metadata (JSON) through nn.Trainer.load in a real Lua state:
 * each input becomes the "nnlab.trainer" metadata of a checkpoint of a small network, which is
 * loaded (and stepped when it loads). A load must succeed or raise an nnlab message; an internal
 * Lua error ("attempt to ...", "bad argument") means a field went unchecked, and is a finding. */
#include "fuzz.h"
#include "checkpoint.h"
#include "dsl.h"

#include <lauxlib.h>
#include <lualib.h>

static lua_State *L;
static nl_module *net;
static nl_optim *opt;

static const char probe[] =
    "local path = ...\n"
    "local ok, t = pcall(nn.Trainer.load, path, {data = FUZZ_DS, verbose = false})\n"
    "if ok then ok, t = pcall(t.step, t) end\n"
    "if not ok then\n"
    "  local m = tostring(t)\n"
    "  if m == '' or m:find('attempt to', 1, true) or m:find('bad argument', 1, true) then\n"
    "    error('an internal error instead of a message: ' .. m, 0)\n"
    "  end\n"
    "end\n";

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, nl_dsl_open);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK ||
        luaL_dostring(L, "FUZZ_DS = nn.TensorDataset(tensor.randn(8, 2), tensor.ones(8))") != LUA_OK) {
        fprintf(stderr, "fuzz_trainer: %s\n", lua_tostring(L, -1));
        abort();
    }
    double args[NL_MAX_ARGS];
    const nl_module_type *linear = nl_module_type_find("Linear");
    nl_module_default_args(linear, args);
    args[0] = 2;
    args[1] = 2;
    net = nl_module_new(linear, args);
    opt = net ? nl_optim_new(NL_OPTIM_ADAM, net, NULL) : NULL;
    if (!opt) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (!L) setup();
    char *meta = malloc(n + 1);
    if (!meta) return 0;
    memcpy(meta, data, n);
    meta[n] = 0; /* metadata is text: it ends at a NUL */
    const char *path = fuzz_path("trainer.safetensors");
    const char *kv[] = {"nnlab.trainer", meta, NULL};
    nl_status st = nl_checkpoint_save(path, net, opt, kv);
    free(meta);
    if (st != NL_OK) return 0;
    if (luaL_loadstring(L, probe) != LUA_OK) abort();
    lua_pushstring(L, path);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_trainer: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
