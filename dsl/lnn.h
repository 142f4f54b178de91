/* lnn.h: the Module and Optimizer userdata, shared by the Lua modules in dsl/ (nn, optim, and
 * whatever later binds networks): boxes holding one core reference each, made safe first. */
#ifndef NL_LNN_H
#define NL_LNN_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

#include "dsl.h"
#include "optim.h"

/* Metatable names in the Lua registry (and type names in error messages and help). */
#define NL_MODULE_MT "Module"
#define NL_OPTIM_MT "Optimizer"
#define NL_LOSS_MT "Loss" /* its box holds an nl_loss */

/* Pushes THE box of m: the same C module always gives the same Lua value while that value lives
 * (so net[1] == net[1] and fields set on it persist); the first push takes a new reference. */
void nl_lua_pushmodule(lua_State *L, nl_module *m);
/* The module at idx (borrowed), or NULL when the value is not a Module. */
nl_module *nl_lua_tomodule(lua_State *L, int idx);
/* As nl_lua_tomodule, but raises "bad argument #idx (Module expected, got ...)". */
nl_module *nl_lua_checkmodule(lua_State *L, int idx);

/* Pushes a new Module box holding NULL, to be filled with a new module's reference and then
 * recorded with nl_lua_adoptmodulebox (liolib's pattern: the box exists before anything can fail). */
nl_module **nl_lua_newmodulebox(lua_State *L);
/* Makes the filled box on top THE box of its module; raises the core's error when the box was
 * left empty (the constructor failed). */
void nl_lua_adoptmodulebox(lua_State *L);

/* nn.<Type>(...): the generic constructor of every module type; upvalue 1 is the type (a light
 * userdata). Also the constructor of the classes nn.define makes. */
int nl_lua_module_new(lua_State *L);
/* For a layer written in Lua (nn.define): pushes the table of its fields and returns true (the
 * module's box shows it as its fields); false, pushing nothing, for other modules. */
bool nl_lua_push_fields(lua_State *L, const nl_module *m);
/* Pushes "Name()" for a loss written in Lua (nn.Loss). */
void nl_lua_loss_tostring(lua_State *L, const nl_loss *l);
/* The random generator's state as two integers (seed, counter), and setting it from them. */
int nl_lua_rng_state(lua_State *L);
int nl_lua_set_rng_state(lua_State *L);
/* Opens nn.define, nn.Module and nn.gradcheck (dsl/nndefine.c); called by nl_open_nn. */
int nl_open_nndefine(lua_State *L);

/* Creates metatable name with the given metamethods and a plain `methods` table (also __index
 * unless index is given), and records the methods' help under type. Leaves nothing on the stack. */
void nl_lua_newtype(lua_State *L, const char *name, const luaL_Reg *meta, const nl_dsl_fn *methods,
                    lua_CFunction index);

/* The parts of the module `nn` in their own files, opened by nl_open_nn: the losses
 * (dsl/nnloss.c), nn.TensorDataset (dsl/nndata.c) and the Trainer's C helpers (dsl/nntrain.c),
 * whose opener leaves the table of private functions for dsl/nn.lua on the stack. */
void nl_open_nnloss(lua_State *L);
void nl_open_nndata(lua_State *L);
void nl_open_nntrain(lua_State *L);

/* The loss at idx (borrowed); raises a Lua error for anything else. */
nl_loss *nl_lua_checkloss(lua_State *L, int idx);
/* The loss type's name as nn shows it ("CrossEntropyLoss", "DistillLoss", ...). */
const char *nl_lua_loss_name(nl_loss_kind kind);
/* A label value as a 0-based class: a whole number in 1..classes (classes 0: no upper bound);
 * raises a Lua error naming sample pos (0-based) and fname otherwise. */
int32_t nl_lua_label_index(lua_State *L, double v, int64_t pos, int64_t classes, const char *fname);
/* Pushes (boxed) and returns the target in the core's form for a loss of kind on an input of
 * shape out (ndim, shape; classes = the last size), on dev: class labels (1-based in Lua) become
 * 0-based i32; f32 targets of any other shape pass through unchanged. */
nl_tensor *nl_lua_push_target(lua_State *L, int idx, nl_loss_kind kind, int ndim,
                              const int64_t *shape, nl_device dev, const char *fname);

/* An optimizer box: the optimizer (a reference, NULL until filled) and the gradient clipping
 * norm the trainer applies before each step (0: none). */
typedef struct {
    nl_optim *o;
    double clip;
} nl_lua_optim;

/* Pushes a new empty Optimizer box (o NULL, clip 0) to fill after it is on the stack. */
nl_lua_optim *nl_lua_newoptim(lua_State *L);
/* The optimizer box at idx; raises a Lua error for anything else. */
nl_lua_optim *nl_lua_checkoptim(lua_State *L, int idx);

#endif
