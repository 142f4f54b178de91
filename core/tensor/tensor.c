/* tensor.c: refcounted storage, tensor headers and views (reshape, transpose, slice, permute),
 * constructors with memory-limit checks, element access and device/dtype copies. */
#include "nl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- memory limit ---------- */

static size_t mem_limit;

size_t nl_mem_limit(void)
{
    if (!mem_limit) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        mem_limit = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)1 << 34;
    }
    return mem_limit;
}

void nl_set_mem_limit(size_t bytes) { mem_limit = bytes; }

/* Bytes this thread may still allocate for tensor storage (-1: no budget). */
static _Thread_local int64_t alloc_budget = -1;

int64_t nl_alloc_budget(int64_t bytes)
{
    int64_t old = alloc_budget;
    alloc_budget = bytes;
    return old;
}

static _Atomic uint64_t allocated_total; /* bytes of storage allocated so far, on any thread */

uint64_t nl_mem_allocated(void) { return allocated_total; }

bool nl_mul_overflow(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static void human_bytes(char *buf, size_t n, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = 0;
    while (bytes >= 1024 && u < 6) bytes /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

/* ---------------------------------------------------------------- storage --------------- */

static nl_storage *storage_new(nl_backend *be, size_t bytes)
{
    nl_storage *s = malloc(sizeof *s);
    if (!s) {
        nl_seterr(NL_ENOMEM, "out of memory allocating a tensor header");
        return NULL;
    }
    if (alloc_budget >= 0) {
        if ((uint64_t)bytes > (uint64_t)alloc_budget) {
            free(s);
            nl_seterr(NL_ENOMEM, "tensor: %zu more bytes than the %lld this step may allocate "
                      "(a network declared bigger than its file)", bytes, (long long)alloc_budget);
            return NULL;
        }
        alloc_budget -= (int64_t)bytes;
    }
    s->refcount = 1;
    s->backend = be;
    s->bytes = bytes;
    s->ptr = be->alloc(be, bytes ? bytes : 1);
    if (!s->ptr) {
        free(s);
        return NULL;
    }
    allocated_total += bytes;
    return s;
}

static void storage_release(nl_storage *s)
{
    if (s && --s->refcount == 0) {
        s->backend->free(s->backend, s->ptr);
        free(s);
    }
}

/* ---------------------------------------------------------------- headers --------------- */

char *nl_shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

static void set_contiguous_strides(nl_tensor *t)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        t->strides[d] = s;
        s *= t->shape[d];
    }
}

/* Checks a shape and returns its element count in *numel (NL_EINVAL / NL_ENOMEM on bad sizes). */
static nl_status check_shape(int ndim, const int64_t *shape, nl_dtype dtype, size_t *numel)
{
    char sbuf[256];
    if (ndim < 0 || ndim > NL_MAX_DIMS)
        return nl_seterr(NL_EINVAL, "tensor: %d dimensions requested, at most %d are supported",
                         ndim, NL_MAX_DIMS);
    if ((unsigned)dtype >= NL_DTYPE_COUNT) return nl_seterr(NL_ETYPE, "tensor: unknown dtype");
    size_t n = 1, strided = 1; /* strided: the product of the non-zero sizes, which the strides reach */
    bool overflow = false, empty = false, wide = false;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return nl_seterr(NL_EINVAL, "tensor: negative size %lld in shape %s",
                             (long long)shape[d], nl_shape_str(sbuf, sizeof sbuf, ndim, shape));
        if (!nl_mul_overflow(n, (size_t)shape[d], &n)) overflow = true;
        if (!shape[d]) empty = true;
        else if (!nl_mul_overflow(strided, (size_t)shape[d], &strided) || strided > (size_t)INT64_MAX)
            wide = true;
    }
    if (empty && wide)
        return nl_seterr(NL_EINVAL, "tensor: shape %s has strides beyond 64 bits (an empty tensor "
                         "needs them too)", nl_shape_str(sbuf, sizeof sbuf, ndim, shape));
    size_t bytes;
    if (overflow || !nl_mul_overflow(n, nl_dtype_info(dtype)->size, &bytes) ||
        bytes > nl_mem_limit()) {
        char need[32], have[32];
        double approx = nl_dtype_info(dtype)->size;
        for (int d = 0; d < ndim; d++) approx *= (double)shape[d];
        human_bytes(need, sizeof need, approx);
        human_bytes(have, sizeof have, (double)nl_mem_limit());
        return nl_seterr(NL_ENOMEM, "tensor: shape %s of %s needs %s, more than the %s available",
                         nl_shape_str(sbuf, sizeof sbuf, ndim, shape), nl_dtype_info(dtype)->name,
                         need, have);
    }
    *numel = n;
    return NL_OK;
}

static nl_tensor *header_new(nl_storage *s, size_t offset, nl_dtype dtype, int ndim,
                             const int64_t *shape, const int64_t *strides)
{
    nl_tensor *t = malloc(sizeof *t);
    if (!t) {
        nl_seterr(NL_ENOMEM, "out of memory allocating a tensor header");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->refcount = 1;
    t->storage = s;
    s->refcount++;
    t->offset = offset;
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    if (strides) {
        if (ndim) memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
    } else {
        set_contiguous_strides(t);
    }
    return t;
}

nl_tensor *nl_tensor_empty(nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev)
{
    size_t numel;
    if (check_shape(ndim, shape, dtype, &numel) != NL_OK) return NULL;
    nl_backend *be = nl_backend_get(dev);
    if (!be) return NULL;
    nl_storage *s = storage_new(be, numel * nl_dtype_info(dtype)->size);
    if (!s) return NULL;
    nl_tensor *t = header_new(s, 0, dtype, ndim, shape, NULL);
    storage_release(s); /* the header holds the only reference now (or none on failure) */
    return t;
}

nl_tensor *nl_tensor_zeros(nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev)
{
    nl_tensor *t = nl_tensor_empty(dtype, ndim, shape, dev);
    if (t && nl_fill(t, 0) != NL_OK) {
        nl_tensor_release(t);
        return NULL;
    }
    return t;
}

nl_tensor *nl_tensor_empty_like(const nl_tensor *t)
{
    return nl_tensor_empty(t->dtype, t->ndim, t->shape, nl_tensor_device(t));
}

nl_tensor *nl_tensor_reuse(nl_tensor **slot, nl_dtype dtype, int ndim, const int64_t *shape, nl_device dev)
{
    nl_tensor *o = *slot;
    if (o && o->refcount == 1 && o->storage->refcount == 1 && o->dtype == dtype && o->ndim == ndim &&
        nl_tensor_device(o) == dev && nl_tensor_is_contiguous(o) &&
        memcmp(o->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return o;
    nl_tensor_release(o);
    return *slot = nl_tensor_empty(dtype, ndim, shape, dev);
}

nl_tensor *nl_tensor_from_data(nl_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
    nl_tensor *t = nl_tensor_empty(dtype, ndim, shape, NL_CPU);
    if (t) memcpy(nl_tensor_data(t), data, (size_t)nl_tensor_numel(t) * nl_dtype_info(dtype)->size);
    return t;
}

nl_tensor *nl_tensor_retain(nl_tensor *t)
{
    if (t) t->refcount++;
    return t;
}

void nl_tensor_release(nl_tensor *t)
{
    if (t && --t->refcount == 0) {
        storage_release(t->storage);
        free(t);
    }
}

int64_t nl_tensor_numel(const nl_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

bool nl_tensor_is_contiguous(const nl_tensor *t)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->strides[d] != s) return false;
        s *= t->shape[d];
    }
    return true;
}

nl_device nl_tensor_device(const nl_tensor *t) { return t->storage->backend->device; }

void *nl_tensor_data(const nl_tensor *t)
{
#ifdef NL_CHECKED
    if (nl_tensor_device(t) != NL_CPU && nl_backend_depth() == 0) {
        fprintf(stderr, "nnlab: nl_tensor_data of a tensor on %s outside a backend call: the host "
                "reads device tensors through nl_tensor_host or nl_tensor_item\n",
                nl_device_name(nl_tensor_device(t)));
        abort();
    }
#endif
    return (char *)t->storage->ptr + t->offset * nl_dtype_info(t->dtype)->size;
}

bool nl_same_shape(const nl_tensor *a, const nl_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* ---------------------------------------------------------------- views ----------------- */

nl_status nl_check_dim(const char *fn, int dim, int ndim)
{
    if (dim < 0 || dim >= ndim)
        return nl_seterr(NL_EINVAL, "%s: dimension %d out of range for a tensor with %d dimensions",
                         fn, dim + 1, ndim);
    return NL_OK;
}

nl_tensor *nl_tensor_reshape(nl_tensor *t, int ndim, const int64_t *shape_in)
{
    char a[256], b[256];
    if (ndim < 0 || ndim > NL_MAX_DIMS) {
        nl_seterr(NL_EINVAL, "reshape: %d dimensions requested, at most %d are supported", ndim,
                  NL_MAX_DIMS);
        return NULL;
    }
    int64_t shape[NL_MAX_DIMS];
    int infer = -1;
    size_t known = 1; /* the product of the sizes given, checked for overflow */
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        if (shape[d] == -1) {
            if (infer >= 0) {
                nl_seterr(NL_EINVAL, "reshape: only one dimension can be -1 in %s",
                          nl_shape_str(a, sizeof a, ndim, shape_in));
                return NULL;
            }
            infer = d;
        } else if (shape[d] < 0) {
            nl_seterr(NL_EINVAL, "reshape: negative size in %s", nl_shape_str(a, sizeof a, ndim, shape_in));
            return NULL;
        } else if (!nl_mul_overflow(known, (size_t)shape[d], &known) || known > (size_t)INT64_MAX) {
            nl_seterr(NL_ESHAPE, "reshape: cannot reshape %s (%lld elements) into %s (more elements "
                      "than a tensor can hold)", nl_shape_str(a, sizeof a, t->ndim, t->shape),
                      (long long)nl_tensor_numel(t),
                      nl_shape_str(b, sizeof b, ndim, shape_in));
            return NULL;
        }
    }
    int64_t numel = nl_tensor_numel(t);
    if (infer >= 0) {
        if (known == 0 || numel % (int64_t)known != 0) {
            nl_seterr(NL_ESHAPE, "reshape: cannot reshape %s (%lld elements) into %s",
                      nl_shape_str(a, sizeof a, t->ndim, t->shape), (long long)numel,
                      nl_shape_str(b, sizeof b, ndim, shape_in));
            return NULL;
        }
        shape[infer] = numel / (int64_t)known;
    } else if ((int64_t)known != numel) {
        nl_seterr(NL_ESHAPE, "reshape: cannot reshape %s (%lld elements) into %s (%lld elements)",
                  nl_shape_str(a, sizeof a, t->ndim, t->shape), (long long)numel,
                  nl_shape_str(b, sizeof b, ndim, shape_in), (long long)known);
        return NULL;
    }
    /* A view when the data is contiguous; otherwise a contiguous copy first (as PyTorch). */
    nl_tensor *src = nl_tensor_contiguous(t);
    if (!src) return NULL;
    nl_tensor *v = header_new(src->storage, src->offset, src->dtype, ndim, shape, NULL);
    nl_tensor_release(src);
    return v;
}

nl_tensor *nl_tensor_permute(nl_tensor *t, const int *perm)
{
    int64_t shape[NL_MAX_DIMS], strides[NL_MAX_DIMS];
    bool seen[NL_MAX_DIMS] = {false};
    for (int d = 0; d < t->ndim; d++) {
        int p = perm[d];
        if (p < 0 || p >= t->ndim || seen[p]) {
            nl_seterr(NL_EINVAL, "permute: not a permutation of the %d dimensions", t->ndim);
            return NULL;
        }
        seen[p] = true;
        shape[d] = t->shape[p];
        strides[d] = t->strides[p];
    }
    return header_new(t->storage, t->offset, t->dtype, t->ndim, shape, strides);
}

nl_tensor *nl_tensor_transpose(nl_tensor *t, int d0, int d1)
{
    if (nl_check_dim("transpose", d0, t->ndim) != NL_OK || nl_check_dim("transpose", d1, t->ndim) != NL_OK)
        return NULL;
    int perm[NL_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) perm[d] = d;
    perm[d0] = d1;
    perm[d1] = d0;
    return nl_tensor_permute(t, perm);
}

nl_tensor *nl_tensor_slice(nl_tensor *t, int dim, int64_t start, int64_t stop)
{
    if (nl_check_dim("slice", dim, t->ndim) != NL_OK) return NULL;
    if (start < 0 || stop > t->shape[dim] || start > stop) {
        nl_seterr(NL_EINVAL, "slice: range %lld..%lld out of range for dimension %d of size %lld",
                  (long long)start + 1, (long long)stop, dim + 1, (long long)t->shape[dim]);
        return NULL;
    }
    nl_tensor *v = header_new(t->storage, t->offset + (size_t)(start * t->strides[dim]), t->dtype,
                              t->ndim, t->shape, t->strides);
    if (v) v->shape[dim] = stop - start;
    return v;
}

nl_tensor *nl_tensor_strided_view(nl_tensor *t, size_t offset, int ndim, const int64_t *shape,
                                  const int64_t *strides)
{
    if (ndim < 0 || ndim > NL_MAX_DIMS) {
        nl_seterr(NL_EINVAL, "view: %d dimensions requested, at most %d are supported", ndim, NL_MAX_DIMS);
        return NULL;
    }
    return header_new(t->storage, offset, t->dtype, ndim, shape, strides);
}

nl_tensor *nl_tensor_contiguous(nl_tensor *t)
{
    return nl_tensor_is_contiguous(t) ? nl_tensor_retain(t) : nl_tensor_clone(t);
}

/* Moves the bytes of src (contiguous) into dst (contiguous, same dtype and shape, another
 * device) with the copy of the device that is not the host. */
static nl_status transfer(nl_tensor *dst, const nl_tensor *src)
{
    nl_device from = nl_tensor_device(src), to = nl_tensor_device(dst);
    nl_backend *be = from == NL_CPU ? dst->storage->backend : src->storage->backend;
    size_t bytes = (size_t)nl_tensor_numel(src) * nl_dtype_info(src->dtype)->size;
    nl_backend_enter();
    nl_status s = be->copy(be, nl_tensor_data(dst), to, nl_tensor_data(src), from, bytes);
    nl_backend_leave();
    return s;
}

/* A new contiguous tensor of dtype on dev holding t's values (converted). */
static nl_tensor *copy_as(const nl_tensor *t, nl_dtype dtype, nl_device dev)
{
    nl_device from = nl_tensor_device(t);
    if (dev != from && from != NL_CPU && dev != NL_CPU) {
        /* Between two devices: through the host. */
        nl_tensor *h = copy_as(t, t->dtype, NL_CPU);
        nl_tensor *d = h ? copy_as(h, dtype, dev) : NULL;
        nl_tensor_release(h);
        return d;
    }
    if (dev != from) {
        /* Cross-device: make a contiguous same-dtype copy on the source side (t itself when it
         * is contiguous), move the bytes, then convert on the destination. */
        nl_tensor *src = nl_tensor_contiguous((nl_tensor *)t);
        if (!src) return NULL;
        nl_tensor *dst = nl_tensor_empty(t->dtype, t->ndim, t->shape, dev);
        if (dst && transfer(dst, src) != NL_OK) {
            nl_tensor_release(dst);
            dst = NULL;
        }
        nl_tensor_release(src);
        if (!dst || dtype == t->dtype) return dst;
        nl_tensor *conv = copy_as(dst, dtype, dev);
        nl_tensor_release(dst);
        return conv;
    }
    nl_tensor *dst = nl_tensor_empty(dtype, t->ndim, t->shape, dev);
    if (dst && nl_copy(dst, t) != NL_OK) {
        nl_tensor_release(dst);
        return NULL;
    }
    return dst;
}

nl_tensor *nl_tensor_clone(const nl_tensor *t) { return copy_as(t, t->dtype, nl_tensor_device(t)); }

nl_tensor *nl_tensor_to_device(const nl_tensor *t, nl_device dev)
{
    if (!nl_backend_get(dev)) return NULL;
    return copy_as(t, t->dtype, dev);
}

nl_tensor *nl_tensor_host(const nl_tensor *t)
{
    if (nl_tensor_device(t) == NL_CPU) return nl_tensor_contiguous((nl_tensor *)t);
    return copy_as(t, t->dtype, NL_CPU);
}

/* Copies between host memory and elements [first, first + n) of t (to_host: from t). */
static nl_status host_transfer(const nl_tensor *t, void *host, size_t first, size_t n, bool to_host)
{
    const char *fn = to_host ? "get_data" : "set_data";
    if (!nl_tensor_is_contiguous(t))
        return nl_seterr(NL_EINVAL, "%s: the tensor is not contiguous", fn);
    if (first > (size_t)nl_tensor_numel(t) || n > (size_t)nl_tensor_numel(t) - first)
        return nl_seterr(NL_EINVAL, "%s: elements %zu..%zu out of range for %lld elements", fn,
                         first + 1, first + n, (long long)nl_tensor_numel(t));
    size_t es = nl_dtype_info(t->dtype)->size, bytes = n * es;
    nl_backend *be = t->storage->backend;
    char *dev = (char *)t->storage->ptr + (t->offset + first) * es;
    if (!bytes) return NL_OK;
    nl_backend_enter();
    nl_status s = to_host ? be->copy(be, host, NL_CPU, dev, be->device, bytes)
                          : be->copy(be, dev, be->device, host, NL_CPU, bytes);
    nl_backend_leave();
    return s;
}

nl_status nl_tensor_get_data(const nl_tensor *t, void *dst, size_t first, size_t n)
{
    return host_transfer(t, dst, first, n, true);
}

nl_status nl_tensor_set_data(nl_tensor *t, const void *src, size_t first, size_t n)
{
    return host_transfer(t, (void *)src, first, n, false);
}

nl_status nl_tensor_item(const nl_tensor *t, double *out)
{
    char sbuf[256];
    if (nl_tensor_numel(t) != 1)
        return nl_seterr(NL_ESHAPE, "item: expected a tensor of one element, got shape %s",
                         nl_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
    int64_t zero[NL_MAX_DIMS] = {0};
    return nl_tensor_get(t, zero, out);
}

nl_tensor *nl_tensor_to_dtype(const nl_tensor *t, nl_dtype dtype)
{
    if ((unsigned)dtype >= NL_DTYPE_COUNT) {
        nl_seterr(NL_ETYPE, "to: unknown dtype");
        return NULL;
    }
    return copy_as(t, dtype, nl_tensor_device(t));
}

/* ---------------------------------------------------------------- element access -------- */

static nl_status element_offset(const char *fn, const nl_tensor *t, const int64_t *idx, size_t *off)
{
    int64_t o = (int64_t)t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (idx[d] < 0 || idx[d] >= t->shape[d])
            return nl_seterr(NL_EINVAL, "%s: index %lld out of range for dimension %d of size %lld",
                             fn, (long long)idx[d] + 1, d + 1, (long long)t->shape[d]);
        o += idx[d] * t->strides[d];
    }
    *off = (size_t)o * nl_dtype_info(t->dtype)->size;
    return NL_OK;
}

static double load_value(nl_dtype dtype, const void *p)
{
    switch (dtype) {
    case NL_F32: return *(const float *)p;
    case NL_I8: return *(const int8_t *)p;
    case NL_I32: return *(const int32_t *)p;
    case NL_U8: return *(const uint8_t *)p;
    default: return 0;
    }
}

nl_status nl_tensor_get(const nl_tensor *t, const int64_t *idx, double *out)
{
    size_t off = 0;
    nl_status st = element_offset("get", t, idx, &off);
    if (st != NL_OK) return st;
    unsigned char buf[8];
    nl_backend *be = t->storage->backend;
    const void *p = (char *)t->storage->ptr + off;
    if (be->device != NL_CPU) {
        nl_backend_enter();
        st = be->copy(be, buf, NL_CPU, p, be->device, nl_dtype_info(t->dtype)->size);
        nl_backend_leave();
        if (st != NL_OK) return st;
        p = buf;
    }
    *out = load_value(t->dtype, p);
    return NL_OK;
}

nl_status nl_tensor_set(nl_tensor *t, const int64_t *idx, double v)
{
    size_t off = 0;
    nl_status st = element_offset("set", t, idx, &off);
    if (st != NL_OK) return st;
    /* A fill of the one-element view: the backend converts v exactly as nl_copy would (round to
     * nearest even, saturate, NaN -> 0), on whatever device t lives. */
    nl_tensor *e = header_new(t->storage, off / nl_dtype_info(t->dtype)->size, t->dtype, 0, NULL, NULL);
    if (!e) return nl_errcode();
    st = nl_fill(e, v);
    nl_tensor_release(e);
    return st;
}

nl_status nl_tensor_rebase(nl_tensor *t, nl_tensor *block, int64_t offset)
{
    int64_t n = nl_tensor_numel(t);
    if (t->dtype != block->dtype || nl_tensor_device(t) != nl_tensor_device(block) ||
        !nl_tensor_is_contiguous(t) || !nl_tensor_is_contiguous(block) || offset < 0 ||
        offset + n > nl_tensor_numel(block))
        return nl_seterr(NL_EINVAL, "rebase: a %s tensor of %lld elements on %s does not fit at "
                         "%lld in a %s block of %lld on %s", nl_dtype_info(t->dtype)->name,
                         (long long)n, nl_device_name(nl_tensor_device(t)), (long long)offset,
                         nl_dtype_info(block->dtype)->name, (long long)nl_tensor_numel(block),
                         nl_device_name(nl_tensor_device(block)));
    nl_tensor *view = header_new(block->storage, block->offset + (size_t)offset, t->dtype, t->ndim,
                                 t->shape, NULL);
    if (!view) return nl_errcode();
    nl_status st = nl_copy(view, t);
    if (st == NL_OK) { /* t takes the view's place: swap their storages and offsets */
        nl_storage *old = t->storage;
        t->storage = view->storage;
        t->offset = view->offset;
        set_contiguous_strides(t);
        view->storage = old;
    }
    nl_tensor_release(view);
    return st;
}
