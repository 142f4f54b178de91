/* checkpoint.c: safetensors files (a writer that commits atomically, a reader that validates every
 * byte of the header before use) and, on them, module and optimizer checkpoints. */
#include "checkpoint.h"
#include "prune.h"

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
#error "checkpoint.c assumes a little-endian host (tensor data is stored little-endian as it is)"
#endif

#define ST_MAX_HEADER 100000000u /* the safetensors package refuses larger headers too */
#define ST_CHUNK ((size_t)1 << 20) /* bytes read per step, between interrupt checks */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: the largest integer a JSON number holds exactly */
#define CKPT_NAME_MAX 256

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

/* NL_EFORMAT with the message "<path>: <problem>". */
static nl_status __attribute__((format(printf, 2, 3)))
bad_file(const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nl_seterr(NL_EFORMAT, "%s: %s", path, msg);
}

/* Grows *v (elements of size elem) to hold at least need; false on overflow or no memory. */
static bool grow(void **v, int *cap, int need, size_t elem)
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
    if (!copy || !grow((void **)&w->items, &w->cap, w->n + 1, sizeof *w->items)) {
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
    if (!k || !grow((void **)&w->meta, &w->metacap, w->nmeta + 1, sizeof *w->meta)) {
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

/* A JSON number that is a whole number in [0, 2^53]. */
static bool json_uint(const cJSON *j, uint64_t *out)
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
    if (!*name) return bad_file(f->path, "a tensor has an empty name");
    if (!cJSON_IsObject(item))
        return bad_file(f->path, "tensor '%s': entry is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return bad_file(f->path, "tensor '%s': no dtype", name);
    int k = st_dtype_find(dt->valuestring);
    if (k < 0)
        return bad_file(f->path, "tensor '%s': unknown dtype '%.16s'", name, dt->valuestring);
    snprintf(e->st_dtype, sizeof e->st_dtype, "%s", st_dtypes[k].name);
    e->dtype = st_dtypes[k].dtype;
    if (!cJSON_IsArray(shape)) return bad_file(f->path, "tensor '%s': no shape", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NL_MAX_DIMS)
        return bad_file(f->path, "tensor '%s': %d dimensions, nnlab handles at most %d", name, ndim,
                        NL_MAX_DIMS);
    e->ndim = ndim;
    uint64_t bytes = st_dtypes[k].size, dim;
    int d = 0;
    const cJSON *j;
    cJSON_ArrayForEach(j, shape) {
        if (!json_uint(j, &dim))
            return bad_file(f->path, "tensor '%s': a dimension of the shape is not a whole "
                            "number >= 0", name);
        e->shape[d++] = (int64_t)dim;
        if (dim && bytes > UINT64_MAX / dim)
            return bad_file(f->path, "tensor '%s': shape too large", name);
        bytes *= dim;
    }
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(off->child, &b) ||
        !json_uint(off->child->next, &en) || b > en)
        return bad_file(f->path, "tensor '%s': data_offsets is not a pair [begin, end] of whole "
                        "numbers with begin <= end", name);
    e->begin = b;
    e->end = en;
    if (en > f->data_size)
        return bad_file(f->path, "tensor '%s': data_offsets [%llu, %llu] out of range (the data "
                        "has %llu bytes)", name, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)f->data_size);
    if (en - b != bytes) {
        char s[96];
        return bad_file(f->path, "tensor '%s': dtype %s and shape %s need %llu bytes, data_offsets "
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
            return bad_file(f->path, "tensors '%s' and '%s' overlap (bytes %llu to %llu)", prev,
                            e->name, (unsigned long long)e->begin, (unsigned long long)at);
        if (e->begin > at)
            return bad_file(f->path, "a hole in the data: bytes %llu to %llu belong to no tensor",
                            (unsigned long long)at, (unsigned long long)e->begin);
        at = e->end;
        prev = e->name;
    }
    if (at != f->data_size)
        return bad_file(f->path, "%llu bytes after the last tensor's data",
                        (unsigned long long)(f->data_size - at));
    qsort_r(idx, (size_t)f->n, sizeof *idx, by_name, f);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->entries[idx[i - 1]].name, f->entries[idx[i]].name) == 0)
            return bad_file(f->path, "tensor '%s' appears twice", f->entries[idx[i]].name);
    return NL_OK;
}

static nl_status parse_metadata(nl_st_file *f, const cJSON *meta)
{
    if (!cJSON_IsObject(meta)) return bad_file(f->path, "__metadata__ is not an object");
    int n = cJSON_GetArraySize(meta);
    f->meta = calloc((size_t)n + 1, sizeof *f->meta);
    if (!f->meta) return nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
    const cJSON *j;
    cJSON_ArrayForEach(j, meta) {
        if (!cJSON_IsString(j))
            return bad_file(f->path, "metadata '%s' is not a string", j->string);
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta[i].key, j->string) == 0)
                return bad_file(f->path, "metadata '%s' appears twice", j->string);
        st_pair *p = &f->meta[f->nmeta++];
        p->key = strdup(j->string);
        p->value = strdup(j->valuestring);
        if (!p->key || !p->value) return nl_seterr(NL_ENOMEM, "%s: out of memory", f->path);
    }
    return NL_OK;
}

static nl_status parse_header(nl_st_file *f, const char *text, size_t n)
{
    if (n == 0 || text[0] != '{') return bad_file(f->path, "the header is not a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root)
        return bad_file(f->path, "invalid JSON in the header near byte %ld",
                        end ? (long)(end - text) + 8 : 8L);
    nl_status st = NL_OK;
    for (const char *p = end; p < text + n && st == NL_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            st = bad_file(f->path, "the header has bytes after its JSON object");
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
            st = f->meta ? bad_file(f->path, "__metadata__ appears twice") : parse_metadata(f, j);
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
        st = bad_file(path, "not a safetensors file: %llu bytes, shorter than the 8-byte header "
                      "length", (unsigned long long)size);
    } else if ((st = read_at(f, len, 8, 0, "the header length")) == NL_OK) {
        for (int b = 7; b >= 0; b--) hlen = hlen << 8 | len[b];
        if (hlen > size - 8)
            st = bad_file(path, "header length %llu goes beyond the end of the file (%llu bytes)",
                          (unsigned long long)hlen, (unsigned long long)size);
        else if (hlen > ST_MAX_HEADER)
            st = bad_file(path, "header length %llu is larger than the limit of %u bytes",
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
    bad_file(f->path, "missing tensor '%s'", name);
    return NULL;
}

/* Checks that tensor name exists with dtype and shape; `needs` words the expectation in the
 * message ("expected", "the architecture needs"). */
static nl_status check_entry(const nl_st_file *f, const char *name, nl_dtype dtype, int ndim,
                             const int64_t *shape, const char *needs)
{
    const nl_st_entry *e = nl_st_find(f, name);
    if (!e) return nl_errcode();
    if (e->dtype == NL_DTYPE_COUNT)
        return nl_seterr(NL_ETYPE, "%s: tensor '%s' has dtype %s, which nnlab does not load",
                         f->path, name, e->st_dtype);
    if (e->dtype != dtype)
        return bad_file(f->path, "tensor '%s' has dtype %s, %s %s", name, e->st_dtype, needs,
                        st_dtypes[dtype].name);
    if (e->ndim != ndim || memcmp(e->shape, shape, (size_t)ndim * sizeof *shape) != 0) {
        char s1[96], s2[96];
        return bad_file(f->path, "tensor '%s' has shape %s, %s %s", name,
                        nl_shape_str(s1, sizeof s1, e->ndim, e->shape), needs,
                        nl_shape_str(s2, sizeof s2, ndim, shape));
    }
    return NL_OK;
}

nl_status nl_st_read(nl_st_file *f, const char *name, nl_tensor *dst)
{
    nl_status st = check_entry(f, name, dst->dtype, dst->ndim, dst->shape, "expected");
    if (st != NL_OK) return st;
    const nl_st_entry *e = nl_st_find(f, name);
    char what[CKPT_NAME_MAX + 16];
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

/* ---------------------------------------------------------------- architecture ---------- */

static cJSON *arch_node(const nl_module *m)
{
    cJSON *node = cJSON_CreateObject(), *args = NULL;
    bool ok = node && cJSON_AddStringToObject(node, "type", m->type->name) &&
              (args = cJSON_AddObjectToObject(node, "args")) != NULL;
    for (int a = 0; ok && a < NL_MAX_ARGS && m->type->args[a].name; a++) {
        const nl_argspec *spec = &m->type->args[a];
        if (isnan(m->args[a])) continue; /* derived by init: derived again when loaded */
        ok = (spec->boolean ? cJSON_AddBoolToObject(args, spec->name, m->args[a] != 0)
                            : cJSON_AddNumberToObject(args, spec->name, m->args[a])) != NULL;
    }
    if (ok && m->type->container) {
        cJSON *kids = cJSON_AddArrayToObject(node, "children");
        ok = kids != NULL;
        for (int c = 0; ok && c < m->nchildren; c++) {
            cJSON *k = arch_node(m->children[c]);
            ok = k && cJSON_AddItemToArray(kids, k);
            if (!ok) cJSON_Delete(k);
        }
    }
    if (!ok) {
        cJSON_Delete(node);
        return NULL;
    }
    return node;
}

char *nl_checkpoint_arch_json(const nl_module *m)
{
    cJSON *root = arch_node(m);
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) nl_seterr(NL_ENOMEM, "checkpoint: out of memory describing the architecture");
    return s;
}

/* The module described by node, depth levels down (the outermost: 1). */
static nl_module *arch_build(const cJSON *node, const char *ctx, int depth)
{
    if (depth > NL_MAX_DEPTH) {
        bad_file(ctx, "architecture: the network is nested more than %d levels deep", NL_MAX_DEPTH);
        return NULL;
    }
    if (!cJSON_IsObject(node)) {
        bad_file(ctx, "architecture: a module is not a JSON object");
        return NULL;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    const cJSON *jargs = cJSON_GetObjectItemCaseSensitive(node, "args");
    const cJSON *kids = cJSON_GetObjectItemCaseSensitive(node, "children"), *j;
    if (!cJSON_IsString(type)) {
        bad_file(ctx, "architecture: a module has no type");
        return NULL;
    }
    const nl_module_type *t = nl_module_type_find(type->valuestring);
    if (!t) {
        bad_file(ctx, "architecture: unknown module type '%.64s' (a layer written in Lua is "
                 "defined with nn.define before loading)", type->valuestring);
        return NULL;
    }
    if ((jargs && !cJSON_IsObject(jargs)) || (kids && !cJSON_IsArray(kids))) {
        bad_file(ctx, "architecture: %s: args must be an object and children an array", t->name);
        return NULL;
    }
    if (kids && !t->container) {
        bad_file(ctx, "architecture: %s is not a container but has children", t->name);
        return NULL;
    }
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    cJSON_ArrayForEach(j, jargs) {
        int a = nl_module_arg_index(t, j->string);
        if (a < 0 || !(cJSON_IsNumber(j) || cJSON_IsBool(j))) {
            bad_file(ctx, "architecture: %s has no argument '%.64s' of that type", t->name,
                     j->string);
            return NULL;
        }
        args[a] = cJSON_IsBool(j) ? cJSON_IsTrue(j) : j->valuedouble;
    }
    nl_module *m = nl_module_new(t, args);
    if (!m) {
        char why[256];
        snprintf(why, sizeof why, "%s", nl_errmsg());
        bad_file(ctx, "architecture: %s", why);
        return NULL;
    }
    cJSON_ArrayForEach(j, kids) {
        nl_module *c = arch_build(j, ctx, depth + 1);
        nl_status st = c ? nl_module_add(m, c) : nl_errcode();
        nl_module_release(c);
        if (c && st != NL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", nl_errmsg());
            bad_file(ctx, "architecture: %s", why);
        }
        if (st != NL_OK) {
            nl_module_release(m);
            return NULL;
        }
    }
    return m;
}

nl_module *nl_checkpoint_arch_build(const char *json, const char *ctx, int64_t max_bytes)
{
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    if (!root) {
        bad_file(ctx, "architecture: invalid JSON");
        return NULL;
    }
    /* Building initialises parameters from the global RNG: keep the caller's stream as it was. */
    nl_rng_state rng = nl_rng_get_state();
    int64_t budget = nl_alloc_budget(max_bytes);
    nl_module *m = arch_build(root, ctx, 1);
    nl_alloc_budget(budget);
    nl_rng_set_state(rng);
    cJSON_Delete(root);
    return m;
}

/* ---------------------------------------------------------------- module checkpoints ---- */

/* A parameter (or buffer) with its state_dict name. */
typedef struct {
    char name[CKPT_NAME_MAX];
    nl_param *p;
} ckpt_param;

typedef struct {
    ckpt_param *v;
    int n, cap;
} ckpt_list;

/* Appends m's parameters (and buffers when asked) and its children's, depth first, named as
 * PyTorch's state_dict names them: prefix + name, children under prefix + "<index>.". */
static nl_status collect(nl_module *m, const char *prefix, bool buffers, ckpt_list *out)
{
    for (int i = 0; i < m->nparams; i++) {
        nl_param *p = &m->params[i];
        if (!buffers && !p->grad) continue;
        if (!grow((void **)&out->v, &out->cap, out->n + 1, sizeof *out->v))
            return nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
        ckpt_param *c = &out->v[out->n];
        if (snprintf(c->name, sizeof c->name, "%s%s", prefix, p->name) >= (int)sizeof c->name)
            return nl_seterr(NL_EINVAL, "checkpoint: parameter name '%s%s' is too long", prefix,
                             p->name);
        c->p = p;
        out->n++;
    }
    for (int k = 0; k < m->nchildren; k++) {
        char sub[CKPT_NAME_MAX];
        if (snprintf(sub, sizeof sub, "%s%d.", prefix, k) >= (int)sizeof sub)
            return nl_seterr(NL_EINVAL, "checkpoint: the network is nested too deeply");
        nl_status st = collect(m->children[k], sub, buffers, out);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

nl_status nl_checkpoint_add_module(nl_st_writer *w, nl_module *net)
{
    char *arch = nl_checkpoint_arch_json(net);
    if (!arch) return nl_errcode();
    nl_status st = nl_st_writer_meta(w, NL_CKPT_VERSION, "1");
    if (st == NL_OK) st = nl_st_writer_meta(w, NL_CKPT_ARCH, arch);
    free(arch);
    ckpt_list ps = {0};
    if (st == NL_OK) st = collect(net, "", true, &ps);
    for (int i = 0; i < ps.n && st == NL_OK; i++)
        st = nl_st_writer_add(w, ps.v[i].name, ps.v[i].p->value);
    free(ps.v);
    return st;
}

/* The module among m and its children whose parameter p is. */
static nl_module *owner_of(nl_module *m, const nl_param *p)
{
    if (p >= m->params && p < m->params + m->nparams) return m;
    for (int i = 0; i < m->nchildren; i++) {
        nl_module *o = owner_of(m->children[i], p);
        if (o) return o;
    }
    return NULL;
}

/* Pruning masks (core/compress/prune.h): a u8 "<weight's name>_mask" of the weight's shape in the file
 * becomes its layer's mask again, so a loaded pruned network keeps its zeros through training. */
static nl_status load_masks(nl_st_file *f, nl_module *m, const ckpt_list *ps)
{
    nl_status st = NL_OK;
    for (int i = 0; i < ps->n && st == NL_OK; i++) {
        nl_param *p = ps->v[i].p;
        char name[CKPT_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s_mask", ps->v[i].name);
        const nl_st_entry *e = NULL;
        for (int k = 0; k < f->n && !e && strcmp(p->name, "weight") == 0; k++)
            if (strcmp(f->entries[k].name, name) == 0) e = &f->entries[k];
        if (!e) continue;
        st = check_entry(f, name, NL_U8, p->value->ndim, p->value->shape, "a pruning mask needs");
        nl_tensor *t = st == NL_OK ? nl_st_get(f, name) : NULL;
        if (st == NL_OK) st = t ? nl_module_add_param(owner_of(m, p), NL_PRUNE_MASK, t, false) : nl_errcode();
        nl_tensor_release(t);
    }
    return st;
}

nl_module *nl_checkpoint_module_from(nl_st_file *f)
{
    const char *arch = nl_st_meta(f, NL_CKPT_ARCH);
    if (!arch) {
        bad_file(f->path, "no '%s' metadata: not an nnlab module checkpoint", NL_CKPT_ARCH);
        return NULL;
    }
    /* Every parameter and buffer comes from the file, so the network cannot need more bytes than
     * its data holds (1 MiB spare for small scratch tensors). */
    nl_module *m = nl_checkpoint_arch_build(arch, f->path, (int64_t)f->data_size + (1 << 20));
    if (!m) return NULL;
    ckpt_list ps = {0};
    nl_status st = collect(m, "", true, &ps);
    for (int i = 0; i < ps.n && st == NL_OK; i++) {
        const nl_tensor *v = ps.v[i].p->value;
        st = check_entry(f, ps.v[i].name, v->dtype, v->ndim, v->shape, "the architecture needs");
    }
    for (int i = 0; i < ps.n && st == NL_OK; i++)
        st = nl_st_read(f, ps.v[i].name, ps.v[i].p->value);
    if (st == NL_OK) st = load_masks(f, m, &ps);
    free(ps.v);
    if (st != NL_OK) {
        nl_module_release(m);
        return NULL;
    }
    return m;
}

nl_module *nl_checkpoint_load_module(const char *path)
{
    nl_st_file *f = nl_st_open(path);
    nl_module *m = f ? nl_checkpoint_module_from(f) : NULL;
    nl_st_close(f);
    return m;
}

/* ---------------------------------------------------------------- optimizer checkpoints - */

/* The state_dict name of each of o's parameters (names[i] for nl_optim_param(o, i)). */
static nl_status optim_names(nl_optim *o, ckpt_list *all, const char **names)
{
    nl_status st = collect(nl_optim_net(o), "", false, all);
    for (int i = 0; i < nl_optim_nparams(o) && st == NL_OK; i++) {
        names[i] = NULL;
        for (int j = 0; j < all->n && !names[i]; j++)
            if (all->v[j].p == nl_optim_param(o, i)) names[i] = all->v[j].name;
        if (!names[i])
            st = nl_seterr(NL_EINVAL, "checkpoint: the optimizer's parameter %d is no longer in "
                           "its network", i + 1);
    }
    return st;
}

/* "optim.<param>.<state>" into buf. */
static void state_name(char *buf, size_t n, const char *param, const nl_optim *o, int k)
{
    snprintf(buf, n, "optim.%s.%s", param, nl_optim_state_name(o, k));
}

nl_status nl_checkpoint_add_optim(nl_st_writer *w, nl_optim *o)
{
    const nl_optim_config *c = nl_optim_get_config(o);
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "kind", nl_optim_kind_name(nl_optim_get_kind(o))) &&
              cJSON_AddNumberToObject(j, "steps", (double)nl_optim_steps(o)) &&
              cJSON_AddBoolToObject(j, "state", nl_optim_has_state(o)) &&
              cJSON_AddNumberToObject(j, "lr", c->lr) &&
              cJSON_AddNumberToObject(j, "momentum", c->momentum) &&
              cJSON_AddNumberToObject(j, "dampening", c->dampening) &&
              cJSON_AddBoolToObject(j, "nesterov", c->nesterov) &&
              cJSON_AddNumberToObject(j, "beta1", c->beta1) &&
              cJSON_AddNumberToObject(j, "beta2", c->beta2) &&
              cJSON_AddNumberToObject(j, "eps", c->eps) &&
              cJSON_AddNumberToObject(j, "weight_decay", c->weight_decay);
    char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) return nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    nl_status st = nl_st_writer_meta(w, NL_CKPT_OPTIM, text);
    free(text);
    if (st != NL_OK || !nl_optim_has_state(o)) return st;
    int n = nl_optim_nparams(o);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    ckpt_list all = {0};
    st = names ? optim_names(o, &all, names) : nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    for (int i = 0; i < n && st == NL_OK; i++)
        for (int k = 0; k < nl_optim_state_count(o) && st == NL_OK; k++) {
            char name[CKPT_NAME_MAX + 32];
            state_name(name, sizeof name, names[i], o, k);
            st = nl_st_writer_add(w, name, nl_optim_state(o, i, k));
        }
    free(names);
    free(all.v);
    return st;
}

/* Reads the optimizer metadata: kind, config, steps, whether state tensors were saved. */
static nl_status optim_meta(const nl_st_file *f, const nl_optim *o, nl_optim_config *c,
                            int64_t *steps, bool *state)
{
    const char *text = nl_st_meta(f, NL_CKPT_OPTIM);
    if (!text) return bad_file(f->path, "no optimizer state ('%s' metadata)", NL_CKPT_OPTIM);
    cJSON *j = cJSON_Parse(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return bad_file(f->path, "%s: invalid JSON", NL_CKPT_OPTIM);
    }
    nl_status st = NL_OK;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    nl_optim_kind k = cJSON_IsString(kind) ? nl_optim_kind_parse(kind->valuestring)
                                           : NL_OPTIM_KIND_COUNT;
    if (k == NL_OPTIM_KIND_COUNT)
        st = bad_file(f->path, "%s: no known optimizer kind", NL_CKPT_OPTIM);
    else if (k != nl_optim_get_kind(o))
        st = nl_seterr(NL_EINVAL, "%s holds %s state, the optimizer is %s", f->path,
                       nl_optim_kind_name(k), nl_optim_kind_name(nl_optim_get_kind(o)));
    static const char *const fields[] = {"lr", "momentum", "dampening", "beta1", "beta2", "eps",
                                         "weight_decay"};
    double *dst[] = {&c->lr, &c->momentum, &c->dampening, &c->beta1, &c->beta2, &c->eps,
                     &c->weight_decay};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && st == NL_OK; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, fields[i]);
        if (!cJSON_IsNumber(v))
            st = bad_file(f->path, "%s: no number '%s'", NL_CKPT_OPTIM, fields[i]);
        else *dst[i] = v->valuedouble;
    }
    const cJSON *nest = cJSON_GetObjectItemCaseSensitive(j, "nesterov");
    const cJSON *has = cJSON_GetObjectItemCaseSensitive(j, "state");
    uint64_t n = 0;
    if (st == NL_OK && (!cJSON_IsBool(nest) || !cJSON_IsBool(has) ||
                        !json_uint(cJSON_GetObjectItemCaseSensitive(j, "steps"), &n)))
        st = bad_file(f->path, "%s: 'nesterov', 'state' and 'steps' missing or invalid",
                      NL_CKPT_OPTIM);
    if (st == NL_OK) {
        c->nesterov = cJSON_IsTrue(nest);
        *state = cJSON_IsTrue(has);
        *steps = (int64_t)n;
        if (nl_optim_check_config(k, c) != NL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", nl_errmsg());
            st = bad_file(f->path, "%s: %s", NL_CKPT_OPTIM, why);
        }
    }
    cJSON_Delete(j);
    return st;
}

nl_status nl_checkpoint_load_optim(nl_st_file *f, nl_optim *o)
{
    nl_optim_config c = *nl_optim_get_config(o);
    int64_t steps = 0;
    bool state = false;
    nl_status st = optim_meta(f, o, &c, &steps, &state);
    if (st != NL_OK) return st;
    int n = nl_optim_nparams(o), ns = nl_optim_state_count(o);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    nl_tensor **tmp = calloc((size_t)n * ns + 1, sizeof *tmp);
    ckpt_list all = {0};
    st = names && tmp ? optim_names(o, &all, names)
                      : nl_seterr(NL_ENOMEM, "checkpoint: out of memory");
    /* Validate every state tensor, then read them all, then change o. */
    for (int pass = 0; pass < 2 && state; pass++)
        for (int i = 0; i < n && st == NL_OK; i++)
            for (int k = 0; k < ns && st == NL_OK; k++) {
                const nl_tensor *v = nl_optim_param(o, i)->value;
                char name[CKPT_NAME_MAX + 32];
                state_name(name, sizeof name, names[i], o, k);
                if (pass == 0)
                    st = check_entry(f, name, NL_F32, v->ndim, v->shape, "the optimizer needs");
                else if (!(tmp[i * ns + k] = nl_st_get(f, name)))
                    st = nl_errcode();
            }
    if (st == NL_OK && state) st = nl_optim_alloc_state(o);
    for (int i = 0; i < n * ns && st == NL_OK && state; i++)
        st = nl_copy(nl_optim_state(o, i / ns, i % ns), tmp[i]);
    if (st == NL_OK) {
        nl_optim_set_config(o, &c);
        nl_optim_set_progress(o, steps, state);
    }
    for (int i = 0; tmp && i < n * ns; i++) nl_tensor_release(tmp[i]);
    free(tmp);
    free(names);
    free(all.v);
    return st;
}

/* ---------------------------------------------------------------- whole checkpoints ----- */

nl_status nl_checkpoint_save(const char *path, nl_module *net, nl_optim *o, const char *const *meta)
{
    nl_st_writer *w = nl_st_writer_new();
    if (!w) return nl_errcode();
    nl_status st = nl_checkpoint_add_module(w, net);
    if (st == NL_OK && o) st = nl_checkpoint_add_optim(w, o);
    for (int i = 0; meta && meta[i] && st == NL_OK; i += 2)
        st = meta[i + 1] ? nl_st_writer_meta(w, meta[i], meta[i + 1])
                         : nl_seterr(NL_EINVAL, "checkpoint: metadata '%s' has no value", meta[i]);
    if (st == NL_OK) st = nl_st_writer_commit(w, path);
    nl_st_writer_free(w);
    return st;
}

nl_status nl_checkpoint_save_module(const char *path, nl_module *net, const char *const *meta)
{
    return nl_checkpoint_save(path, net, NULL, meta);
}
