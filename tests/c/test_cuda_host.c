/* test_cuda_host.c: the CUDA backend's host-side logic, on the CPU: the caching allocator's
 * bookkeeping (reuse by rounded size, statistics, the retry after trimming, NL_ENOMEM with the
 * sizes), the GEMM operand layouts cuBLAS and OpenBLAS share, and, when the build has CUDA and
 * the machine has none, that asking for the device fails cleanly. */
#include "cuda/cuda_host.h"
#include "cpu/cpu_kernels.h"
#ifdef NL_HAVE_CUDA
#include "cuda/cuda.h"
#endif
#include "testhelp.h"

#include <stdlib.h>
#include <string.h>

/* A raw allocator over malloc with a budget, counting live blocks (each block's size is kept
 * in a header in front of it). */
typedef struct { size_t budget, used; int live, calls; } fake_dev;

static void *fake_alloc(void *ctx, size_t bytes)
{
    fake_dev *d = ctx;
    d->calls++;
    if (d->used + bytes > d->budget) return NULL;
    size_t *p = malloc(bytes + 16);
    if (!p) return NULL;
    *p = bytes;
    d->used += bytes;
    d->live++;
    return (char *)p + 16;
}

static void fake_free(void *ctx, void *p)
{
    fake_dev *d = ctx;
    size_t *h = (size_t *)((char *)p - 16);
    d->used -= *h;
    d->live--;
    free(h);
}

static void test_round(void)
{
    CHECK(nl_cache_round(0) == 512, "%zu", nl_cache_round(0));
    CHECK(nl_cache_round(1) == 512, "%zu", nl_cache_round(1));
    CHECK(nl_cache_round(512) == 512, "%zu", nl_cache_round(512));
    CHECK(nl_cache_round(513) == 1024, "%zu", nl_cache_round(513));
    CHECK(nl_cache_round((1 << 20) + 1) == 2u << 20, "%zu", nl_cache_round((1 << 20) + 1));
    CHECK(nl_cache_round(SIZE_MAX - 3) == 0, "overflow gives 0");
}

static void test_reuse_and_stats(void)
{
    fake_dev d = {.budget = 1 << 24};
    nl_cache c = {.raw_alloc = fake_alloc, .raw_free = fake_free, .ctx = &d, .device = "cuda:0"};
    void *a = nl_cache_alloc(&c, 1000), *b = nl_cache_alloc(&c, 3000);
    CHECK(a && b && a != b, "two blocks");
    CHECK(c.in_use == 1024 + 3072 && c.peak == c.in_use && c.cached == 0, "in_use %llu",
          (unsigned long long)c.in_use);
    CHECK(nl_cache_free(&c, a), "free a");
    CHECK(c.in_use == 3072 && c.cached == 1024 && c.peak == 4096, "after free");
    void *a2 = nl_cache_alloc(&c, 1024); /* same rounded size: reused */
    CHECK(a2 == a && c.reuses == 1 && c.mallocs == 2 && d.calls == 2, "reuse");
    void *e = nl_cache_alloc(&c, 2000); /* 2048: no free block of that size */
    CHECK(e && e != a && c.mallocs == 3, "new block for another size");
    CHECK(!nl_cache_free(&c, (char *)e + 1), "an unknown pointer is refused");
    CHECK(nl_cache_free(&c, NULL), "NULL is a no-op");
    nl_cache_free(&c, a2);
    CHECK(!nl_cache_free(&c, a2), "a double free is refused");
    nl_cache_free(&c, b);
    nl_cache_free(&c, e);
    CHECK(c.in_use == 0 && c.cached == 1024 + 3072 + 2048 && c.reserved == c.cached, "all cached");
    nl_cache_trim(&c);
    CHECK(c.cached == 0 && c.reserved == 0 && d.live == 0 && c.nblocks == 0, "trim gives back");
    CHECK(c.peak == 1024 + 3072 + 2048, "peak %llu", (unsigned long long)c.peak);
    nl_cache_destroy(&c);
}

static void test_oom(void)
{
    fake_dev d = {.budget = 8192};
    nl_cache c = {.raw_alloc = fake_alloc, .raw_free = fake_free, .ctx = &d, .device = "cuda:1"};
    void *a = nl_cache_alloc(&c, 4096), *b = nl_cache_alloc(&c, 4096);
    CHECK(a && b, "fits the budget");
    nl_cache_free(&c, a);
    /* 8 KiB cannot come while 4 KiB is cached: the cache is trimmed and the request retried */
    nl_cache_free(&c, b);
    void *big = nl_cache_alloc(&c, 8192);
    CHECK(big && c.cached == 0 && d.live == 1, "retry after trimming (cached %llu, live %d)",
          (unsigned long long)c.cached, d.live);
    void *none = nl_cache_alloc(&c, 100000);
    CHECK(!none && nl_errcode() == NL_ENOMEM, "out of memory");
    CHECK(strstr(nl_errmsg(), "cuda:1") && strstr(nl_errmsg(), "100000 bytes") &&
          strstr(nl_errmsg(), "8192 bytes in use"), "message: %s", nl_errmsg());
    CHECK(c.in_use == 8192 && c.nblocks == 1, "state intact after the failure");
    nl_cache_destroy(&c);
    CHECK(d.live == 0, "destroy gives back every block");
}

/* The layouts a BLAS reads in place: row-major, transposed, broadcast batch; others packed. */
static void test_gemm_layout(void)
{
    nl_tensor *t = nl_tensor_zeros(NL_F32, 3, (int64_t[]){2, 3, 4}, NL_CPU);
    cpu_gemm_layout l = cpu_gemm_layout_of(t, 1 << 30);
    CHECK(l.direct && !l.trans && l.ld == 4 && l.batch == 2 && l.sb == 12, "row-major");
    nl_tensor *tt = nl_tensor_transpose(t, 1, 2); /* [2, 4, 3], column-major items */
    l = cpu_gemm_layout_of(tt, 1 << 30);
    CHECK(l.direct && l.trans && l.ld == 4 && l.rows == 4 && l.cols == 3, "transposed");
    nl_tensor *sl = nl_tensor_slice(t, 2, 0, 2); /* [2, 3, 2] rows 4 apart */
    l = cpu_gemm_layout_of(sl, 1 << 30);
    CHECK(l.direct && !l.trans && l.ld == 4, "a column slice keeps ld");
    l = cpu_gemm_layout_of(t, 3);
    CHECK(!l.direct && l.ld == 4, "ld beyond the limit packs");
    nl_tensor *b0 = nl_tensor_transpose(t, 0, 2); /* [4, 3, 2]: no unit stride in the item */
    l = cpu_gemm_layout_of(b0, 1 << 30);
    CHECK(!l.direct && !l.trans && l.ld == 2, "strided both ways packs");
    nl_tensor_release(b0);
    nl_tensor_release(sl);
    nl_tensor_release(tt);
    nl_tensor_release(t);
}

#ifdef NL_HAVE_CUDA
/* On a machine without a GPU (or driver), asking for one is an error, never an abort. */
static void test_no_device(void)
{
    if (nl_cuda_device_count() > 0) {
        SKIP("test_no_device: this machine has %d CUDA device(s)", nl_cuda_device_count());
        return;
    }
    nl_backend *be = nl_cuda_backend(0);
    CHECK(!be && nl_errcode() == NL_EDEVICE && strstr(nl_errmsg(), "no CUDA device"), "%s",
          nl_errmsg());
    nl_tensor *t = nl_tensor_zeros(NL_F32, 1, (int64_t[]){3}, NL_CUDA);
    CHECK(!t && nl_errcode() == NL_EDEVICE, "zeros on cuda: %s", nl_errmsg());
    nl_cuda_device_info info;
    CHECK(nl_cuda_device_query(0, &info) == NL_EDEVICE, "query: %s", nl_errmsg());
}

/* Without NCCL (here: $NNLAB_NCCL naming a file that is not there) GPU ranks get an error naming
 * the file, from the id as from a join; a join on a device that is not CUDA is refused. */
static void test_nccl_missing(void)
{
    char id[NL_NCCL_ID_BYTES] = {0};
    setenv("NNLAB_NCCL", "/nonexistent/libnccl.so.2", 1);
    CHECK(nl_nccl_unique_id(id) == NL_EDEVICE && strstr(nl_errmsg(), "cannot load /nonexistent/libnccl.so.2") &&
          strstr(nl_errmsg(), "NCCL"), "%s", nl_errmsg());
    void *comm = (void *)1;
    CHECK(nl_nccl_join(id, 2, 0, NL_CUDA, &comm) == NL_EDEVICE && !comm &&
          strstr(nl_errmsg(), "cannot load"), "join: %s", nl_errmsg());
    unsetenv("NNLAB_NCCL");
}
#endif

int main(void)
{
    nl_init();
    test_round();
    test_reuse_and_stats();
    test_oom();
    test_gemm_layout();
#ifdef NL_HAVE_CUDA
    test_no_device();
    test_nccl_missing();
#else
    SKIP("test_no_device: built without CUDA");
#endif
    return TEST_REPORT();
}
