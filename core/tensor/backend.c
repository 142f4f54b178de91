/* backend.c: the table of backend instances, one per device number, made on first use by the
 * provider of their kind; and the depth of backend calls that nl_tensor_data checks. Which
 * backends exist is decided outside core (backends/registry.c registers them in nl_init). */
#include "nl.h"

static nl_backend *instances[NL_DEVICE_COUNT][NL_DEVICE_MAX_INDEX];
static nl_backend *(*providers[NL_DEVICE_COUNT])(int index);
static int depth; /* backend calls in progress (main thread; kernels' threads only read it) */

void nl_backend_register(nl_backend *be)
{
    if (!be) return;
    nl_device k = nl_device_kind(be->device);
    int i = nl_device_index(be->device);
    if ((unsigned)k < NL_DEVICE_COUNT && i < NL_DEVICE_MAX_INDEX) instances[k][i] = be;
}

void nl_backend_provide(nl_device kind, nl_backend *(*instance)(int index))
{
    if ((unsigned)kind < NL_DEVICE_COUNT) providers[kind] = instance;
}

nl_backend *nl_backend_get(nl_device d)
{
    nl_device k = nl_device_kind(d);
    int i = nl_device_index(d);
    if ((unsigned)k >= NL_DEVICE_COUNT || i >= NL_DEVICE_MAX_INDEX) {
        nl_seterr(NL_EDEVICE, "unknown device %u", (unsigned)d);
        return NULL;
    }
    if (instances[k][i]) return instances[k][i];
    nl_init();
    if (!providers[k]) {
        if (k == NL_CUDA)
            nl_seterr(NL_EDEVICE, "no CUDA device (this nnlab was built without CUDA)");
        else
            nl_seterr(NL_EDEVICE, "no %s backend", nl_device_name(d));
        return NULL;
    }
    nl_clearerr();
    nl_backend *be = providers[k](i);
    if (be) return instances[k][i] = be;
    if (nl_errcode() == NL_OK) nl_seterr(NL_EDEVICE, "%s: no such device", nl_device_name(d));
    return NULL;
}

int nl_backend_depth(void) { return depth; }
void nl_backend_enter(void) { depth++; }
void nl_backend_leave(void) { depth--; }
