/* ltensor.h: the Tensor userdata, shared by every Lua module in dsl/ (tensor, nn, optim, ...):
 * a box holding one nl_tensor reference, created safe before the core call that fills it. */
#ifndef NL_LTENSOR_H
#define NL_LTENSOR_H

#include <lua.h>
#include <stdbool.h>

#include "nl.h"

/* The metatable's name in the Lua registry (and the type name in error messages). */
#define NL_TENSOR_MT "Tensor"

/* Pushes a new Tensor box holding NULL and returns its slot. Call it BEFORE the core call that
 * allocates, and store the new reference in the slot: the box owns it from then on, so a later
 * Lua error cannot leak it (liolib's pattern):
 *     nl_tensor **box = nl_lua_newbox(L);
 *     if (!(*box = nl_tensor_clone(t))) return nl_dsl_core_error(L);
 * Raises only Lua's memory error. */
nl_tensor **nl_lua_newbox(lua_State *L);

/* The tensor at idx (borrowed: the box keeps its reference), or NULL when the value is not a
 * Tensor. Raises "tensor is closed" for a box already released by __close. */
nl_tensor *nl_lua_totensor(lua_State *L, int idx);

/* As nl_lua_totensor, but raises "bad argument #idx to 'f' (Tensor expected, got ...)" for
 * anything else. */
nl_tensor *nl_lua_checktensor(lua_State *L, int idx);

/* Pushes a Tensor sharing t (another reference to the same C tensor), or nil for NULL. */
void nl_lua_pushshared(lua_State *L, nl_tensor *t);

/* Argument checks shared by tensor.c and tensor_ops.c (fname names the function in messages). */
/* Pushes an element's value: an integer for integer dtypes, a float for f32. */
void nl_lua_pushvalue(lua_State *L, nl_dtype dtype, double v);
/* A shape from the arguments first..last (sizes, or one table of them); infer allows one -1.
 * Returns the number of dims. */
int nl_lua_checkshape(lua_State *L, int first, int last, int64_t *shape, bool infer, const char *fname);
/* A 1-based dim argument (negative counts from the end) as a 0-based dim of t. */
int nl_lua_checkdim(lua_State *L, int arg, const nl_tensor *t, const char *fname);
/* A 1-based index argument along dim (size n; negative counts from the end) as 0-based;
 * past_end also allows n + 1. */
int64_t nl_lua_checkindex(lua_State *L, int arg, int64_t n, int dim, const char *fname, bool past_end);

/* tensor_ops.c: the shape, selection and math methods beyond tensor.c's, indexing (t[i] and
 * t[i] = v through __index / __newindex, which also answer unknown method names), and the
 * module functions cat, stack, where, outer. Called by nl_open_tensor after the metatable
 * exists with its `methods` table. */
void nl_open_tensor_ops(lua_State *L);

#endif
