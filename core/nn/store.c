/* store.c: the parameter store: packs a network's trainable parameters and their gradients into
 * one block each (each parameter tensor becomes a view on its block) and repacks it when the
 * network's parameters change. */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

static uint64_t generations; /* stores built so far in this process */

void nl_store_free(nl_store *s)
{
    if (!s) return;
    nl_tensor_release(s->values);
    nl_tensor_release(s->grads);
    nl_tensor_release(s->norm);
    nl_tensor_release(s->norm_sq);
    nl_tensor_release(s->norm_part);
    free(s->params);
    free(s->scratch);
    free(s->offset);
    free(s);
}

/* Whether t is the contiguous view of block at [from, to). */
static bool is_view(const nl_tensor *t, const nl_tensor *block, int64_t from, int64_t to)
{
    return t && t->storage == block->storage && t->offset == block->offset + (size_t)from &&
           nl_tensor_is_contiguous(t) && nl_tensor_numel(t) == to - from;
}

/* Whether s still describes net: the same parameters, each a view on the blocks. */
static bool still_valid(const nl_store *s, nl_module *net)
{
    nl_param **ps = s->scratch;
    if (nl_module_params(net, ps, s->count + 1, false) != s->count) return false;
    for (int i = 0; i < s->count; i++)
        if (ps[i] != s->params[i] ||
            !is_view(ps[i]->value, s->values, s->offset[i], s->offset[i + 1]) ||
            !is_view(ps[i]->grad, s->grads, s->offset[i], s->offset[i + 1]))
            return false;
    return true;
}

/* A new store for the parameters ps[0..n): checks them, allocates the blocks, moves every value
 * and gradient into them. NULL with the error set. */
static nl_store *pack(nl_param **ps, int n)
{
    nl_store *s = calloc(1, sizeof *s);
    if (!s || !(s->offset = calloc((size_t)n + 1, sizeof *s->offset)) ||
        !(s->params = calloc((size_t)n + 1, sizeof *s->params)) ||
        !(s->scratch = calloc((size_t)n + 1, sizeof *s->scratch))) {
        nl_store_free(s);
        nl_seterr(NL_ENOMEM, "parameter store: out of memory");
        return NULL;
    }
    nl_device dev = n > 0 ? nl_tensor_device(ps[0]->value) : NL_CPU;
    nl_status st = NL_OK;
    for (int i = 0; i < n && st == NL_OK; i++) {
        const nl_param *p = ps[i];
        if (p->value->dtype != NL_F32 || !nl_same_shape(p->value, p->grad))
            st = nl_seterr(NL_EINVAL, "parameter store: parameter %d (%s) is not an f32 tensor "
                           "with a gradient of its shape", i + 1, p->name);
        else if (nl_tensor_device(p->value) != dev || nl_tensor_device(p->grad) != dev)
            st = nl_seterr(NL_EDEVICE, "parameter store: parameters on %s and %s: move the network "
                           "to one device", nl_device_name(dev),
                           nl_device_name(nl_tensor_device(p->value)));
        s->params[i] = ps[i];
        s->offset[i + 1] = s->offset[i] + nl_tensor_numel(p->value);
    }
    s->count = n;
    int64_t total[1] = {s->offset[n]};
    if (st == NL_OK && (!(s->values = nl_tensor_empty(NL_F32, 1, total, dev)) ||
                        !(s->grads = nl_tensor_empty(NL_F32, 1, total, dev))))
        st = nl_errcode();
    /* Views are made only of contiguous tensors: the rare strided parameter is made contiguous
     * first (in place of its old tensor, which no one else can then see change). */
    for (int i = 0; i < n && st == NL_OK; i++) {
        nl_param *p = ps[i];
        nl_tensor **ts[2] = {&p->value, &p->grad};
        nl_tensor *blocks[2] = {s->values, s->grads};
        for (int k = 0; k < 2 && st == NL_OK; k++) {
            if (!nl_tensor_is_contiguous(*ts[k])) {
                nl_tensor *c = nl_tensor_contiguous(*ts[k]);
                if (!c) {
                    st = nl_errcode();
                    break;
                }
                nl_tensor_release(*ts[k]);
                *ts[k] = c;
            }
            st = nl_tensor_rebase(*ts[k], blocks[k], s->offset[i]);
        }
    }
    if (st != NL_OK) {
        nl_store_free(s);
        return NULL;
    }
    s->generation = ++generations;
    return s;
}

nl_store *nl_module_store(nl_module *net)
{
    if (!net) {
        nl_seterr(NL_EINVAL, "parameter store: no network");
        return NULL;
    }
    if (net->store && still_valid(net->store, net)) return net->store;
    int n = nl_module_params(net, NULL, 0, false);
    nl_param **ps = calloc((size_t)n + 1, sizeof *ps);
    if (!ps) {
        nl_seterr(NL_ENOMEM, "parameter store: out of memory");
        return NULL;
    }
    nl_module_params(net, ps, n, false);
    nl_store *s = pack(ps, n);
    free(ps);
    if (!s) return NULL;
    nl_store_free(net->store);
    net->store = s;
    return s;
}

int nl_store_find(const nl_store *s, int64_t e)
{
    int lo = 0, hi = s->count - 1; /* the last i with offset[i] <= e */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->offset[mid] <= e) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}
