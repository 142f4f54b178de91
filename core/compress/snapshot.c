/* snapshot.c: snapshots of a network (a deep copy) that undo any compression of it in place:
 * pruning, channel pruning, low-rank factorization. */
#include "prune.h"

#include <stdlib.h>
#include <string.h>

/* A snapshot is a copy of the network (nl_module_clone): its architecture and every parameter
 * and buffer, masks included. */
struct nl_snapshot {
    nl_module *copy;
};

nl_snapshot *nl_snapshot_take(nl_module *net)
{
    nl_snapshot *s = calloc(1, sizeof *s);
    if (!s) {
        nl_seterr(NL_ENOMEM, "snapshot: out of memory");
        return NULL;
    }
    if (!(s->copy = nl_module_clone(net))) {
        free(s);
        return NULL;
    }
    return s;
}

void nl_snapshot_free(nl_snapshot *s)
{
    if (!s) return;
    nl_module_release(s->copy);
    free(s);
}

static int64_t module_bytes(const nl_module *m)
{
    int64_t b = 0;
    for (int i = 0; i < m->nparams; i++)
        b += nl_tensor_numel(m->params[i].value) * (int64_t)nl_dtype_info(m->params[i].value->dtype)->size;
    for (int i = 0; i < m->nchildren; i++) b += module_bytes(m->children[i]);
    return b;
}

int64_t nl_snapshot_bytes(const nl_snapshot *s) { return module_bytes(s->copy); }

/* Whether a and b have the same layers with the same arguments, depth-first. */
static bool same_arch(const nl_module *a, const nl_module *b)
{
    if (a->type != b->type || a->nchildren != b->nchildren ||
        memcmp(a->args, b->args, sizeof a->args) != 0)
        return false;
    for (int i = 0; i < a->nchildren; i++)
        if (!same_arch(a->children[i], b->children[i])) return false;
    return true;
}

/* Restores the saved module's parameters into m, a module of its architecture, in place (the
 * parameters keep their identity, which the optimizer holds): pass 0 checks, pass 1 copies,
 * adds what m lacks and drops the buffers the snapshot did not have (masks added since). */
static nl_status restore_tree(nl_module *m, const nl_module *saved, int pass)
{
    nl_status st = NL_OK;
    for (int i = 0; i < saved->nparams && st == NL_OK; i++) {
        const nl_param *sp = &saved->params[i];
        nl_param *q = nl_module_param(m, sp->name);
        if (pass == 0) {
            if (q && (!nl_same_shape(q->value, sp->value) || q->value->dtype != sp->value->dtype))
                st = nl_seterr(NL_EINVAL, "snapshot: %s's %s changed shape", m->type->name, q->name);
        } else if (q) {
            st = nl_copy(q->value, sp->value);
        } else {
            nl_tensor *c = nl_tensor_clone(sp->value);
            st = c ? nl_module_add_param(m, sp->name, c, false) : nl_errcode();
            nl_tensor_release(c);
        }
    }
    for (int i = m->nparams - 1; pass == 1 && st == NL_OK && i >= 0; i--)
        if (!m->params[i].grad && !nl_module_param((nl_module *)saved, m->params[i].name)) nl_module_remove_param(m, i);
    for (int i = 0; i < m->nchildren && st == NL_OK; i++)
        st = restore_tree(m->children[i], saved->children[i], pass);
    return st;
}

nl_status nl_snapshot_restore(const nl_snapshot *s, nl_module *net)
{
    if (net->type != s->copy->type)
        return nl_seterr(NL_EINVAL, "restore: the snapshot is of a %s, not a %s", s->copy->type->name,
                         net->type->name);
    if (same_arch(net, s->copy)) {
        nl_status st = restore_tree(net, s->copy, 0);
        return st == NL_OK ? restore_tree(net, s->copy, 1) : st;
    }
    nl_module *m = nl_module_clone(s->copy);
    if (!m) return nl_errcode();
    nl_module_train(m, net->training);
    /* net takes the rebuilt contents and keeps its identity; m leaves with the old ones. */
    nl_module old = *net;
    int rc = m->refcount;
    *net = *m;
    net->refcount = old.refcount;
    *m = old;
    m->refcount = rc;
    nl_module_release(m);
    return NL_OK;
}
