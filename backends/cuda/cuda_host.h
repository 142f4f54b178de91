/* cuda_host.h: host-side logic of the CUDA backend that needs no GPU, kept apart so that it is
 * compiled into every build and unit-tested on the CPU (tests/c/test_cuda_host.c): the caching
 * allocator's bookkeeping. (The strided-iteration geometry and the GEMM operand layouts are the
 * CPU backend's, cpu_iter_init and cpu_gemm_layout_of, shared.) */
#ifndef NL_CUDA_HOST_H
#define NL_CUDA_HOST_H

#include "nl.h"

/* ---------------------------------------------------------------- caching allocator ----- */

/* Sizes are rounded up to NL_CACHE_ROUND bytes (small) or NL_CACHE_ROUND_BIG (from
 * NL_CACHE_BIG up), so that blocks of nearly equal requests are interchangeable; a freed block
 * is kept and handed out again for a request of the same rounded size. When the raw allocator
 * fails, every cached block is given back and the request tried once more; if it fails again
 * the error is NL_ENOMEM with the sizes. */
enum {
    NL_CACHE_ROUND = 512,
    NL_CACHE_BIG = 1 << 20,
    NL_CACHE_ROUND_BIG = 1 << 20,
};

typedef struct {
    void *ptr;
    size_t size;  /* rounded */
    bool free;
} nl_cache_block;

typedef struct {
    /* The raw allocator (cudaMalloc / cudaFree for a device; malloc in tests): raw_alloc
     * returns NULL on failure (it may set an error message, which is replaced). */
    void *(*raw_alloc)(void *ctx, size_t bytes);
    void (*raw_free)(void *ctx, void *ptr);
    void *ctx;
    const char *device; /* named in messages: "cuda:0" */
    nl_cache_block *blocks;
    size_t nblocks, cap;
    uint64_t in_use, peak, cached, reserved, mallocs, reuses;
} nl_cache;

/* The size a request of `bytes` occupies (at least NL_CACHE_ROUND). */
size_t nl_cache_round(size_t bytes);
/* Returns a block of at least `bytes` bytes, or NULL with NL_ENOMEM set ("cuda:0: out of
 * memory allocating N bytes (M in use, K cached)"). */
void *nl_cache_alloc(nl_cache *c, size_t bytes);
/* Marks ptr's block free for reuse (NULL is a no-op; an unknown pointer is ignored and
 * returns false). */
bool nl_cache_free(nl_cache *c, void *ptr);
/* Gives every cached (free) block back to the raw allocator. */
void nl_cache_trim(nl_cache *c);
/* Gives back every block, free or not, and the table (the backend is going away). */
void nl_cache_destroy(nl_cache *c);

#endif
