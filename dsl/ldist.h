/* ldist.h: the gradient exchange box of module `dist`, for the Trainer's step (dsl/nn.c). */
#ifndef NL_LDIST_H
#define NL_LDIST_H

#include <lua.h>

#include "train.h"

/* The exchange held by the DistExchange box at idx, or NULL when idx is none or nil; raises a
 * Lua error for any other value. */
const nl_grad_exchange *nl_lua_optexchange(lua_State *L, int idx);

#endif
