/* cuda_host.c: the caching device allocator's bookkeeping (no CUDA: the raw allocator is a pair
 * of callbacks), compiled into every build so that tests/c/test_cuda_host.c checks it on the
 * CPU, and the answers of cuda.h's queries in a build without CUDA. Blocks live in one table,
 * searched linearly: a network has a few hundred at most. */
#include "cuda_host.h"

#include <stdlib.h>

size_t nl_cache_round(size_t bytes)
{
    size_t r = bytes < NL_CACHE_BIG ? NL_CACHE_ROUND : NL_CACHE_ROUND_BIG;
    if (bytes == 0) return NL_CACHE_ROUND;
    if (bytes > SIZE_MAX - r) return 0; /* no such block: the raw allocator is not asked */
    return (bytes + r - 1) / r * r;
}

/* A slot in the table for a new block, growing it; NULL when the host is out of memory. */
static nl_cache_block *new_slot(nl_cache *c)
{
    if (c->nblocks == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        nl_cache_block *b = realloc(c->blocks, cap * sizeof *b);
        if (!b) return NULL;
        c->blocks = b;
        c->cap = cap;
    }
    return &c->blocks[c->nblocks++];
}

static void *take(nl_cache *c, nl_cache_block *b)
{
    b->free = false;
    c->cached -= b->size;
    c->in_use += b->size;
    if (c->in_use > c->peak) c->peak = c->in_use;
    c->reuses++;
    return b->ptr;
}

void *nl_cache_alloc(nl_cache *c, size_t bytes)
{
    const size_t size = nl_cache_round(bytes);
    for (size_t k = 0; size && k < c->nblocks; k++)
        if (c->blocks[k].free && c->blocks[k].size == size) return take(c, &c->blocks[k]);
    void *p = size ? c->raw_alloc(c->ctx, size) : NULL;
    if (!p && size && c->cached) { /* give the cache back and try once more */
        nl_cache_trim(c);
        p = c->raw_alloc(c->ctx, size);
    }
    nl_cache_block *b = p ? new_slot(c) : NULL;
    if (!b) {
        if (p) c->raw_free(c->ctx, p);
        nl_seterr(NL_ENOMEM, "%s: out of memory allocating %zu bytes (%llu bytes in use, %llu "
                  "cached)", c->device, bytes, (unsigned long long)c->in_use,
                  (unsigned long long)c->cached);
        return NULL;
    }
    *b = (nl_cache_block){p, size, false};
    c->mallocs++;
    c->reserved += size;
    c->in_use += size;
    if (c->in_use > c->peak) c->peak = c->in_use;
    return p;
}

bool nl_cache_free(nl_cache *c, void *ptr)
{
    if (!ptr) return true;
    for (size_t k = 0; k < c->nblocks; k++) {
        nl_cache_block *b = &c->blocks[k];
        if (b->ptr != ptr || b->free) continue;
        b->free = true;
        c->in_use -= b->size;
        c->cached += b->size;
        return true;
    }
    return false;
}

void nl_cache_trim(nl_cache *c)
{
    size_t kept = 0;
    for (size_t k = 0; k < c->nblocks; k++) {
        nl_cache_block b = c->blocks[k];
        if (b.free) {
            c->raw_free(c->ctx, b.ptr);
            c->cached -= b.size;
            c->reserved -= b.size;
        } else {
            c->blocks[kept++] = b;
        }
    }
    c->nblocks = kept;
}

void nl_cache_destroy(nl_cache *c)
{
    for (size_t k = 0; k < c->nblocks; k++) c->raw_free(c->ctx, c->blocks[k].ptr);
    free(c->blocks);
    c->blocks = NULL;
    c->nblocks = c->cap = 0;
    c->in_use = c->cached = c->reserved = 0;
}

#ifndef NL_HAVE_CUDA
/* Without CUDA in the build, the device queries answer as on a machine without a GPU. */
#include "cuda.h"

static bool tf32_flag;

int nl_cuda_device_count(void) { return 0; }

nl_status nl_cuda_device_query(int device, nl_cuda_device_info *info)
{
    (void)info;
    return nl_seterr(NL_EDEVICE, "no CUDA device cuda:%d (this nnlab was built without CUDA)",
                     device);
}

void nl_cuda_set_tf32(bool on) { tf32_flag = on; }
bool nl_cuda_tf32(void) { return tf32_flag; }
#endif
