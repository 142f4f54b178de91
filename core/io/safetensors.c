/* safetensors.c: safetensors files: a writer that commits atomically and a reader that validates
 * every byte of the header before use. Checkpoints (core/io/checkpoint.c) are built on them. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (tensor data is stored little-endian as it is)"
#endif

#define ST_MAX_HEADER 100000000u /* the safetensors package refuses larger headers too */
#define ST_CHUNK ((size_t)1 << 20) /* bytes read per step, between interrupt checks */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: the largest integer a JSON number holds exactly */
#define ST_NAME_MAX 256 /* a tensor name as messages quote it */

/* Every dtype of the safetensors format; those nnlab loads map to an nl_dtype. */
static const struct {
    const char *name;
    size_t size;
    nl_dtype dtype;
} st_dtypes[] = {
    {"F32", 4, NL_F32}, {"I8", 1, NL_I8}, {"I32", 4, NL_I32}, {"U8", 1, NL_U8},
    {"F64", 8, NL_DTYPE_COUNT}, {"F16", 2, NL_DTYPE_COUNT}, {"BF16", 2, NL_DTYPE_COUNT},
    {"I64", 8, NL_DTYPE_COUNT}, {"I16", 2, NL_DTYPE_COUNT}, {"U16", 2, NL_DTYPE_COUNT},
    {"U32", 4, NL_DTYPE_COUNT}, {"U64", 8, NL_DTYPE_COUNT}, {"BOOL", 1, NL_DTYPE_COUNT},
    {"F8_E4M3", 1, NL_DTYPE_COUNT}, {"F8_E5M2", 1, NL_DTYPE_COUNT},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))
_Static_assert(NL_DTYPE_COUNT == 4, "st_dtypes names every nnlab dtype first, in enum order");

static int st_dtype_find(const char *name)
{
    for (int k = 0; k < ST_NDTYPES; k++)
        if (strcmp(st_dtypes[k].name, name) == 0) return k;
    return -1;
}

nl_status nl_st_bad_file(const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nl_seterr(NL_EFORMAT, "%s: %s", path, msg);
}

bool nl_st_grow(void **v, int *cap, int need, size_t elem)
{
    if (need <= *cap) return true;
    int c = *cap ? *cap : 8;
    while (c < need) {
        if (c > (1 << 29)) return false;
        c *= 2;
    }
    void *p = realloc(*v, (size_t)c * elem);
    if (!p) return false;
    *v = p;
    *cap = c;
    return true;
}


/* ---------------------------------------------------------------- writer ---------------- */

typedef struct {
    char *name;
    nl_tensor *t;
} st_item;

typedef struct {
    char *key, *value;
} st_pair;

struct nl_st_writer {
    st_item *items;
    int n, cap;
    st_pair *meta;
    int nmeta, metacap;
};

nl_st_writer *nl_st_writer_new(void)
{
    nl_st_writer *w = calloc(1, sizeof *w);
    if (!w) nl_seterr(NL_ENOMEM, "safetensors: out of memory");
    return w;
}

void nl_st_writer_free(nl_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->items[i].name);
        nl_tensor_release(w->items[i].t);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->items);
    free(w->meta);
    free(w);
}

nl_status nl_st_writer_add(nl_st_writer *w, const char *name, nl_tensor *t)
{
    if (!t) return nl_seterr(NL_EINVAL, "safetensors: no tensor given for '%s'", name ? name : "");
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return nl_seterr(NL_EINVAL, "safetensors: invalid tensor name '%s'", name ? name : "");
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            return nl_seterr(NL_EINVAL, "safetensors: tensor '%s' added twice", name);
    char *copy = strdup(name);
    if (!copy || !nl_st_grow((void **)&w->items, &w->cap, w->n + 1, sizeof *w->items)) {
        free(copy);
        return nl_seterr(NL_ENOMEM, "safetensors: out of memory");
    }
    w->items[w->n++] = (st_item){copy, nl_tensor_retain(t)};
    return NL_OK;
}

nl_status nl_st_writer_meta(nl_st_writer *w, const char *key, const char *value)
{
    if (!key || !*key || !value)
        return nl_seterr(NL_EINVAL, "safetensors: metadata needs a key and a value");
    char *v = strdup(value);
    if (!v) return nl_seterr(NL_ENOMEM, "safetensors: out of memory");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return NL_OK;
        }
    char *k = strdup(key);
    if (!k || !nl_st_grow((void **)&w->meta, &w->metacap, w->nmeta + 1, sizeof *w->meta)) {
        free(k);
        free(v);
        return nl_seterr(NL_ENOMEM, "safetensors: out of memory");
    }
    w->meta[w->nmeta++] = (st_pair){k, v};
    return NL_OK;
}

static size_t item_bytes(const st_item *it)
{
    return (size_t)nl_tensor_numel(it->t) * nl_dtype_info(it->t->dtype)->size;
}

/* The header JSON for the items in order (wider dtypes first, so every tensor is aligned to its
 * element size in the file); NULL when out of memory. */
static char *header_json(const nl_st_writer *w, const int *order)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && w->nmeta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; ok && i < w->nmeta; i++)
            ok = cJSON_AddStringToObject(meta, w->meta[i].key, w->meta[i].value) != NULL;
    }
    double at = 0;
    for (int j = 0; ok && j < w->n; j++) {
        const st_item *it = &w->items[order[j]];
        cJSON *e = cJSON_AddObjectToObject(root, it->name), *shape, *off;
        ok = e && cJSON_AddStringToObject(e, "dtype", st_dtypes[it->t->dtype].name) &&
             (shape = cJSON_AddArrayToObject(e, "shape")) != NULL;
        for (int d = 0; ok && d < it->t->ndim; d++)
            ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)it->t->shape[d]));
        double end = at + (double)item_bytes(it);
        ok = ok && (off = cJSON_AddArrayToObject(e, "data_offsets")) != NULL &&
             cJSON_AddItemToArray(off, cJSON_CreateNumber(at)) &&
             cJSON_AddItemToArray(off, cJSON_CreateNumber(end));
        at = end;
    }
    char *s = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

/* Writes header and data through af; the caller commits or aborts. */
static nl_status write_all(const nl_st_writer *w, const int *order, nl_atomic_file *af)
{
    char *json = header_json(w, order);
    if (!json) return nl_seterr(NL_ENOMEM, "safetensors: out of memory writing '%s'", af->path);
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7;
    unsigned char len[8];
    for (int b = 0; b < 8; b++) len[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    static const char spaces[8] = "        ";
    nl_status st = nl_atomic_write(af, len, 8);
    if (st == NL_OK) st = nl_atomic_write(af, json, n);
    if (st == NL_OK) st = nl_atomic_write(af, spaces, padded - n);
    free(json);
    for (int j = 0; j < w->n && st == NL_OK; j++) {
        if ((st = nl_check_interrupt()) != NL_OK) break;
        const st_item *it = &w->items[order[j]];
        nl_tensor *h = nl_tensor_host(it->t);
        if (!h) return nl_errcode();
        st = nl_atomic_write(af, nl_tensor_data(h), item_bytes(it));
        nl_tensor_release(h);
    }
    return st;
}

nl_status nl_st_writer_commit(nl_st_writer *w, const char *path)
{
    int *order = malloc(((size_t)w->n + 1) * sizeof *order);
    if (!order) return nl_seterr(NL_ENOMEM, "safetensors: out of memory writing '%s'", path);
    int k = 0;
    for (size_t size = 8; size >= 1; size /= 2) /* stable: by element size, then as added */
        for (int i = 0; i < w->n; i++)
            if (nl_dtype_info(w->items[i].t->dtype)->size == size) order[k++] = i;
    nl_atomic_file af;
    nl_status st = nl_atomic_open(&af, path);
    if (st == NL_OK) {
        st = write_all(w, order, &af);
        if (st == NL_OK) st = nl_atomic_commit(&af);
        else nl_atomic_abort(&af);
    }
    free(order);
    return st;
}

/* ---------------------------------------------------------------- reader ---------------- */

struct nl_st_file {
    char *path;
    int fd;
    uint64_t data_start, data_size;
    int n;
    nl_st_entry *entries;  /* header order */
    int *by_name;          /* indices of entries sorted by name */
    int nmeta;
    st_pair *meta;
};

void nl_st_close(nl_st_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->entries);
    free(f->by_name);
    free(f->meta);
    free(f->path);
    free(f);
}

/* Reads exactly n bytes at offset; NL_EIO on a short read, NL_EINTR when interrupted. */
static nl_status read_at(const nl_st_file *f, void *buf, size_t n, uint64_t offset,
                         const char *what)
{
    char *p = buf;
    while (n > 0) {
        nl_status st = nl_check_interrupt();
        if (st != NL_OK) return st;
        size_t want = n < ST_CHUNK ? n : ST_CHUNK;
        ssize_t got = pread(f->fd, p, want, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return nl_seterr(NL_EIO, "%s: cannot read %s: %s", f->path, what,
                             got < 0 ? strerror(errno) : "unexpected end of file (did it change?)");
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return NL_OK;
}

bool nl_st_json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

/* Fills e from one header entry, checking its dtype, shape and offsets against data_size. */
static nl_status parse_entry(const nl_st_file *f, const cJSON *item, nl_st_entry *e)
{
    const char *name = item->string;
    if (!*name) return nl_st_bad_file(f->path, "a tensor has an empty name");
    if (!cJSON_IsObject(item))
        return nl_st_bad_file(f->path, "tensor '%s': entry is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return nl_st_bad_file(f->path, "tensor '%s': no dtype", name);
    int k = st_dtype_find(dt->valuestring);
    if (k < 0)
        return nl_st_bad_file(f->path, "tensor '%s': unknown dtype '%.16s'", name, dt->valuestring);
    snprintf(e->st_dtype, sizeof e->st_dtype, "%s", st_dtypes[k].name);
    e->dtype = st_dtypes[k].dtype;
    if (!cJSON_IsArray(shape)) return nl_st_bad_file(f->path, "tensor '%s': no shape", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NL_MAX_DIMS)
        return nl_st_bad_file(f->path, "tensor '%s': %d dimensions, nnlab handles at most %d", name, ndim,
                        NL_MAX_DIMS);
    e->ndim = ndim;
    uint64_t bytes = st_dtypes[k].size, dim;
    int d = 0;
    const cJSON *j;
    cJSON_ArrayForEach(j, shape) {
        if (!nl_st_json_uint(j, &dim))
            return nl_st_bad_file(f->path, "tensor '%s': a dimension of the shape is not a whole "
                            "number >= 0", name);
        e->shape[d++] = (int64_t)dim;
        if (dim && bytes > UINT64_MAX / dim)
            return nl_st_bad_file(f->path, "tensor '%s': shape too large", name);
        bytes *= dim;
    }
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !nl_st_json_uint(off->child, &b) ||
        !nl_st_json_uint(off->child->next, &en) || b > en)
        return nl_st_bad_file(f->path, "tensor '%s': data_offsets is not a pair [begin, end] of whole "
                        "numbers with begin <= end", name);
    e->begin = b;
    e->end = en;
    if (en > f->data_size)
        return nl_st_bad_file(f->path, "tensor '%s': data_offsets [%llu, %llu] out of range (the data "
                        "has %llu bytes)", name, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)f->data_size);
    if (en - b != bytes) {
        char s[96];
        return nl_st_bad_file(f->path, "tensor '%s': dtype %s and shape %s need %llu bytes, data_offsets "
                        "[%llu, %llu] hold %llu", name, e->st_dtype,
                        nl_shape_str(s, sizeof s, e->ndim, e->shape), (unsigned long long)bytes,
                        (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)(en - b));
    }
    return NL_OK;
}

/* qsort_r comparisons of entry indices of the file passed as ctx. */
static int by_offset(const void *a, const void *b, void *ctx)
{
    const nl_st_file *f = ctx;
    const nl_st_entry *x = &f->entries[*(const int *)a], *y = &f->entries[*(const int *)b];
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1)
                                : (x->end != y->end ? (x->end < y->end ? -1 : 1) : 0);
}
static int by_name(const void *a, const void *b, void *ctx)
{
    const nl_st_file *f = ctx;
    return strcmp(f->entries[*(const int *)a].name, f->entries[*(const int *)b].name);
}

/* The tensors must cover the data exactly, in some order, and have distinct names. */
static nl_status check_layout(nl_st_file *f)
{
    int *idx = f->by_name;
    for (int i = 0; i < f->n; i++) idx[i] = i;
    qsort_r(idx, (size_t)f->n, sizeof *idx, by_offset, f);
    uint64_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const nl_st_entry *e = &f->entries[idx[i]];
        if (e->begin < at)
            return nl_st_bad_file(f->path, "tensors '%s' and '%s' overlap (bytes %llu to %llu)", prev,
                            e->name, (unsigned long long)e->begin, (unsigned long long)at);
        if (e->begin > at)
            return nl_st_bad_file(f->path, "a hole in the data: bytes %llu to %llu belong to no tensor",
                            (unsigned long long)at, (unsigned long long)e->begin);
        at = e->end;
        prev = e->name;
    }
    if (at != f->data_size)
        return nl_st_bad_file(f->path, "%llu bytes after the last tensor's data",
                        (unsigned long long)(f->data_size - at));
    qsort_r(idx, (size_t)f->n, sizeof *idx, by_name, f);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->entries[idx[i - 1]].name, f->entries[idx[i]].name) == 0)
            return nl_st_bad_file(f->path, "tensor '%s' appears twice", f->entries[idx[i]].name);
    return NL_OK;
}

static nl_status parse_metadata(nl_st_file *f, const cJSON *meta)
{
    if (!cJSON_IsObject(meta)) return nl_st_bad_file(f->path, "__metadata__ is not an object");
    int n = cJSON_GetArraySize(meta);
    f->meta = calloc((size_t)n + 1, sizeof *f->meta);
    if (!f->meta) return nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
    const cJSON *j;
    cJSON_ArrayForEach(j, meta) {
        if (!cJSON_IsString(j))
            return nl_st_bad_file(f->path, "metadata '%s' is not a string", j->string);
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta[i].key, j->string) == 0)
                return nl_st_bad_file(f->path, "metadata '%s' appears twice", j->string);
        st_pair *p = &f->meta[f->nmeta++];
        p->key = strdup(j->string);
        p->value = strdup(j->valuestring);
        if (!p->key || !p->value) return nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
    }
    return NL_OK;
}

static nl_status parse_header(nl_st_file *f, const char *text, size_t n)
{
    if (n == 0 || text[0] != '{') return nl_st_bad_file(f->path, "the header is not a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root)
        return nl_st_bad_file(f->path, "invalid JSON in the header near byte %ld",
                        end ? (long)(end - text) + 8 : 8L);
    nl_status st = NL_OK;
    for (const char *p = end; p < text + n && st == NL_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            st = nl_st_bad_file(f->path, "the header has bytes after its JSON object");
    int count = cJSON_GetArraySize(root);
    if (st == NL_OK) {
        f->entries = calloc((size_t)count + 1, sizeof *f->entries);
        f->by_name = calloc((size_t)count + 1, sizeof *f->by_name);
        if (!f->entries || !f->by_name) st = nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
    }
    const cJSON *j;
    cJSON_ArrayForEach(j, root) {
        if (st != NL_OK) break;
        if (strcmp(j->string, "__metadata__") == 0) {
            st = f->meta ? nl_st_bad_file(f->path, "__metadata__ appears twice") : parse_metadata(f, j);
            continue;
        }
        nl_st_entry *e = &f->entries[f->n];
        if ((st = parse_entry(f, j, e)) != NL_OK) break;
        if (!(e->name = strdup(j->string))) st = nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
        else f->n++;
    }
    cJSON_Delete(root);
    return st == NL_OK ? check_layout(f) : st;
}

nl_st_file *nl_st_open(const char *path)
{
    if (!path || !*path) {
        nl_seterr(NL_EINVAL, "safetensors: no file name");
        return NULL;
    }
    nl_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        nl_seterr(NL_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    struct stat sb;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0 || fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        nl_seterr(NL_EIO, "cannot read '%s': %s", path,
                  f->fd < 0 ? strerror(errno) : "not a regular file");
        nl_st_close(f);
        return NULL;
    }
    uint64_t size = (uint64_t)sb.st_size, hlen = 0;
    unsigned char len[8];
    char *header = NULL;
    nl_status st;
    if (size < 8) {
        st = nl_st_bad_file(path, "not a safetensors file: %llu bytes, shorter than the 8-byte header "
                      "length", (unsigned long long)size);
    } else if ((st = read_at(f, len, 8, 0, "the header length")) == NL_OK) {
        for (int b = 7; b >= 0; b--) hlen = hlen << 8 | len[b];
        if (hlen > size - 8)
            st = nl_st_bad_file(path, "header length %llu goes beyond the end of the file (%llu bytes)",
                          (unsigned long long)hlen, (unsigned long long)size);
        else if (hlen > ST_MAX_HEADER)
            st = nl_st_bad_file(path, "header length %llu is larger than the limit of %u bytes",
                          (unsigned long long)hlen, ST_MAX_HEADER);
        else if (!(header = malloc(hlen + 1)))
            st = nl_seterr(NL_ENOMEM, "%s: out of memory reading the header", path);
        else
            st = read_at(f, header, hlen, 8, "the header");
    }
    if (st == NL_OK) {
        f->data_start = 8 + hlen;
        f->data_size = size - f->data_start;
        st = parse_header(f, header, hlen);
    }
    free(header);
    if (st != NL_OK) {
        nl_st_close(f);
        return NULL;
    }
    return f;
}

const char *nl_st_path(const nl_st_file *f) { return f->path; }
uint64_t nl_st_data_size(const nl_st_file *f) { return f->data_size; }
int nl_st_count(const nl_st_file *f) { return f->n; }
const nl_st_entry *nl_st_at(const nl_st_file *f, int i) { return &f->entries[i]; }

const nl_st_entry *nl_st_find(const nl_st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->entries[f->by_name[mid]].name, name);
        if (c == 0) return &f->entries[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    nl_st_bad_file(f->path, "missing tensor '%s'", name);
    return NULL;
}

nl_status nl_st_check(const nl_st_file *f, const char *name, nl_dtype dtype, int ndim,
                             const int64_t *shape, const char *needs)
{
    const nl_st_entry *e = nl_st_find(f, name);
    if (!e) return nl_errcode();
    if (e->dtype == NL_DTYPE_COUNT)
        return nl_seterr(NL_ETYPE, "%s: tensor '%s' has dtype %s, which nnlab does not load",
                         f->path, name, e->st_dtype);
    if (e->dtype != dtype)
        return nl_st_bad_file(f->path, "tensor '%s' has dtype %s, %s %s", name, e->st_dtype, needs,
                        st_dtypes[dtype].name);
    if (e->ndim != ndim || memcmp(e->shape, shape, (size_t)ndim * sizeof *shape) != 0) {
        char s1[96], s2[96];
        return nl_st_bad_file(f->path, "tensor '%s' has shape %s, %s %s", name,
                        nl_shape_str(s1, sizeof s1, e->ndim, e->shape), needs,
                        nl_shape_str(s2, sizeof s2, ndim, shape));
    }
    return NL_OK;
}

nl_status nl_st_read(nl_st_file *f, const char *name, nl_tensor *dst)
{
    nl_status st = nl_st_check(f, name, dst->dtype, dst->ndim, dst->shape, "expected");
    if (st != NL_OK) return st;
    const nl_st_entry *e = nl_st_find(f, name);
    char what[ST_NAME_MAX + 16];
    snprintf(what, sizeof what, "tensor '%s'", name);
    if (nl_tensor_device(dst) == NL_CPU && nl_tensor_is_contiguous(dst))
        return read_at(f, nl_tensor_data(dst), e->end - e->begin, f->data_start + e->begin, what);
    nl_tensor *tmp = nl_tensor_empty(dst->dtype, dst->ndim, dst->shape, NL_CPU);
    if (!tmp) return nl_errcode();
    st = read_at(f, nl_tensor_data(tmp), e->end - e->begin, f->data_start + e->begin, what);
    if (st == NL_OK) st = nl_copy(dst, tmp);
    nl_tensor_release(tmp);
    return st;
}

nl_tensor *nl_st_get(nl_st_file *f, const char *name)
{
    const nl_st_entry *e = nl_st_find(f, name);
    if (!e) return NULL;
    if (e->dtype == NL_DTYPE_COUNT) {
        nl_seterr(NL_ETYPE, "%s: tensor '%s' has dtype %s, which nnlab does not load", f->path,
                  name, e->st_dtype);
        return NULL;
    }
    nl_tensor *t = nl_tensor_empty(e->dtype, e->ndim, e->shape, NL_CPU);
    if (t && nl_st_read(f, name, t) != NL_OK) {
        nl_tensor_release(t);
        return NULL;
    }
    return t;
}

const char *nl_st_meta(const nl_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

int nl_st_meta_count(const nl_st_file *f) { return f->nmeta; }

void nl_st_meta_at(const nl_st_file *f, int i, const char **key, const char **value)
{
    *key = f->meta[i].key;
    *value = f->meta[i].value;
}
