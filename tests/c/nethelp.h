/* nethelp.h: building registered modules by argument name in tests, e.g.
 * net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, NULL) (values are doubles; NULL ends). */
#ifndef NL_NETHELP_H
#define NL_NETHELP_H

#include "nn.h"
#include "testhelp.h"

#include <stdarg.h>

/* A module of a registered type from name/value pairs (a failed CHECK and NULL if it fails). */
static inline nl_module *net_make(const char *type, ...)
{
    const nl_module_type *t = nl_module_type_find(type);
    if (!t) {
        CHECK(0, "module type %s exists", type);
        return NULL;
    }
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    va_list ap;
    va_start(ap, type);
    for (const char *name; (name = va_arg(ap, const char *));) {
        double v = va_arg(ap, double);
        int i = nl_module_arg_index(t, name);
        CHECK(i >= 0, "%s has an argument %s", type, name);
        if (i >= 0) args[i] = v;
    }
    va_end(ap);
    nl_module *m = nl_module_new(t, args);
    CHECK(m != NULL, "%s: %s", type, nl_errmsg());
    return m;
}

/* A container of type holding kids[0..n) (it takes over the caller's references). */
static inline nl_module *net_container(const char *type, nl_module **kids, int n)
{
    nl_module *c = net_make(type, NULL);
    for (int i = 0; i < n; i++) {
        if (c) nl_module_add(c, kids[i]);
        nl_module_release(kids[i]);
    }
    return c;
}

#endif
