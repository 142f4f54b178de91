/* ltensor.h: the Tensor userdata, shared by every Lua module in dsl/ (tensor, nn, optim, ...):
 * a box holding one nl_tensor reference, created safe before the core call that fills it. */
#ifndef NL_LTENSOR_H
#define NL_LTENSOR_H

#include <lua.h>

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

#endif
