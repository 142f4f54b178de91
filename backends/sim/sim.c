/* sim.c: the simulated accelerator (sim.h). Each allocation is its own mapping: one page of
 * bookkeeping (the size, readable) followed by the data pages, PROT_NONE outside the backend's
 * calls. Kernels are the CPU backend's; the opcodes a real accelerator leaves to the CPU (the
 * int8/int4 inference and CSR sparse kernels) are refused, as the CUDA backend refuses them. */
#include "sim/sim.h"
#include "cpu/cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    nl_backend be;
    char name[16];
    nl_device_stats st;
} sim_device;

typedef struct {
    size_t bytes, mapped; /* requested; mapped in all, the bookkeeping page included */
} sim_block;

static size_t page_size(void)
{
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static sim_device *dev_of(nl_backend *be) { return be->ctx; }

static sim_block *block_of(void *ptr) { return (sim_block *)((char *)ptr - page_size()); }

static void *sim_alloc(nl_backend *be, size_t bytes)
{
    size_t page = page_size(), mapped = page + round_up(bytes ? bytes : 1, page);
    char *base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        nl_seterr(NL_ENOMEM, "%s: out of memory allocating %zu bytes", be->name, bytes);
        return NULL;
    }
    sim_block *b = (sim_block *)base;
    b->bytes = bytes;
    b->mapped = mapped;
    mprotect(base + page, mapped - page, PROT_NONE);
    nl_device_stats *st = &dev_of(be)->st;
    st->allocs++;
    st->mem_current += bytes;
    if (st->mem_current > st->mem_peak) st->mem_peak = st->mem_current;
    return base + page;
}

static void sim_free(nl_backend *be, void *ptr)
{
    if (!ptr) return;
    sim_block *b = block_of(ptr);
    dev_of(be)->st.mem_current -= b->bytes;
    munmap(b, b->mapped);
}

/* Opens (prot: read-write) or closes (none) the pages holding [p, p + bytes). The range lies in
 * one allocation, whose pages are all its own. */
static void set_access(const void *p, size_t bytes, int prot)
{
    size_t page = page_size();
    uintptr_t lo = (uintptr_t)p / page * page, hi = round_up((uintptr_t)p + (bytes ? bytes : 1), page);
    mprotect((void *)lo, hi - lo, prot);
}

static void tensor_access(const nl_tensor *t, int prot)
{
    if (t) set_access(t->storage->ptr, t->storage->bytes, prot);
}

static nl_status sim_copy(nl_backend *be, void *dst, nl_device dst_dev, const void *src,
                          nl_device src_dev, size_t bytes)
{
    nl_device self = be->device;
    if ((dst_dev != self && dst_dev != NL_CPU) || (src_dev != self && src_dev != NL_CPU))
        return nl_seterr(NL_EDEVICE, "%s: cannot copy between %s and %s", be->name,
                         nl_device_name(src_dev), nl_device_name(dst_dev));
    if (!bytes) return NL_OK;
    nl_device_stats *st = &dev_of(be)->st;
    if (dst_dev == self) set_access(dst, bytes, PROT_READ | PROT_WRITE);
    if (src_dev == self) set_access(src, bytes, PROT_READ | PROT_WRITE);
    memmove(dst, src, bytes);
    if (src_dev == self) set_access(src, bytes, PROT_NONE);
    if (dst_dev == self) set_access(dst, bytes, PROT_NONE);
    if (src_dev == NL_CPU) {
        st->copies_h2d++;
        st->bytes_h2d += bytes;
    } else if (dst_dev == NL_CPU) {
        st->copies_d2h++;
        st->bytes_d2h += bytes;
        st->syncs++; /* the host waits for the device before it reads */
    } else {
        st->bytes_d2d += bytes;
    }
    return NL_OK;
}

static void sim_sync(nl_backend *be) { dev_of(be)->st.syncs++; }

static bool sim_supports(nl_backend *be NL_UNUSED, const nl_op *op)
{
    switch (op->code) {
    case NL_OP_QCONV2D: case NL_OP_QUANTIZE: case NL_OP_QPOOL2D: case NL_OP_INT4_DEQUANT:
    case NL_OP_INT4_LINEAR: case NL_OP_INT4_CONV2D: case NL_OP_SPCONV2D: case NL_OP_SPLINEAR:
        return false;
    default: {
        nl_backend *cpu = nl_cpu_backend();
        return cpu->supports(cpu, op);
    }
    }
}

static nl_status sim_exec(nl_backend *be, const nl_op *op)
{
    if (!sim_supports(be, op))
        return nl_seterr(NL_EUNSUPPORTED, "%s: not supported by the %s backend", nl_opcode_name(op->code),
                         be->name);
    const nl_tensor *ts[NL_OP_MAX_SRC + 2] = {op->dst, op->aux};
    for (int k = 0; k < NL_OP_MAX_SRC; k++) ts[k + 2] = op->src[k];
    for (int k = 0; k < NL_OP_MAX_SRC + 2; k++) tensor_access(ts[k], PROT_READ | PROT_WRITE);
    nl_backend *cpu = nl_cpu_backend();
    nl_status s = cpu->exec(cpu, op);
    for (int k = 0; k < NL_OP_MAX_SRC + 2; k++) tensor_access(ts[k], PROT_NONE);
    dev_of(be)->st.launches++;
    return s;
}

static void sim_stats(nl_backend *be, nl_device_stats *out, bool reset)
{
    nl_device_stats *st = &dev_of(be)->st;
    *out = *st;
    if (reset) {
        uint64_t now = st->mem_current;
        memset(st, 0, sizeof *st);
        st->mem_current = st->mem_peak = now;
    }
}

nl_backend *nl_sim_backend(int index)
{
    static sim_device *devices[NL_DEVICE_MAX_INDEX];
    if (index < 0 || index >= NL_DEVICE_MAX_INDEX) {
        nl_seterr(NL_EDEVICE, "sim:%d: no such device (sim:0 to sim:%d)", index, NL_DEVICE_MAX_INDEX - 1);
        return NULL;
    }
    if (devices[index]) return &devices[index]->be;
    sim_device *d = calloc(1, sizeof *d);
    if (!d) {
        nl_seterr(NL_ENOMEM, "sim: out of memory");
        return NULL;
    }
    nl_device dev = nl_device_make(NL_SIM, index);
    snprintf(d->name, sizeof d->name, "%s", nl_device_name(dev));
    d->be = (nl_backend){
        .name = d->name,
        .device = dev,
        .ctx = d,
        .alloc = sim_alloc,
        .free = sim_free,
        .copy = sim_copy,
        .sync = sim_sync,
        .supports = sim_supports,
        .exec = sim_exec,
        .stats = sim_stats,
    };
    return &(devices[index] = d)->be;
}
