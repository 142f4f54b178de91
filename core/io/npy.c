/* npy.c: NumPy .npy files: a validating reader (format versions 1.0 to 3.0; float, integer and
 * bool items in either byte order; C or Fortran order) and an atomic writer for nnlab's dtypes. */
#include "nl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host (it copies '<' data to memory as it is)"
#endif

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
/* numpy refuses headers above 10000 bytes unless asked; we allow more but not without bound. */
#define NPY_MAX_HEADER (1u << 20)
/* Bytes read per step when loading, between interrupt checks. */
#define NPY_CHUNK ((size_t)1 << 20)

/* What the writer calls each dtype; every dtype has a row. */
static const char *const npy_descr[NL_DTYPE_COUNT] = {
    [NL_F32] = "<f4", [NL_I8] = "|i1", [NL_I32] = "<i4", [NL_U8] = "|u1",
};
_Static_assert(sizeof npy_descr / sizeof npy_descr[0] == NL_DTYPE_COUNT, "one descr per dtype");

/* An item type read from a header's 'descr'. */
typedef struct {
    char kind;     /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool */
    int size;      /* bytes per item in the file */
    bool big;      /* big-endian in the file */
    nl_dtype dtype; /* what it loads as */
} npy_type;

typedef struct {
    char descr[64];
    npy_type type;
    bool fortran;
    int ndim;
    int64_t shape[NL_MAX_DIMS];
} npy_header;

/* ---------------------------------------------------------------- header parsing -------- */

/* A cursor over the header text: the Python dict literal numpy writes, e.g.
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   then spaces and '\n'. */
typedef struct {
    const char *path;
    const char *start, *p, *end;
} npy_parser;

static nl_status malformed(const npy_parser *ps, const char *what)
{
    return nl_seterr(NL_EFORMAT, "%s: malformed .npy header: %s at byte %d", ps->path, what,
                     (int)(ps->p - ps->start));
}

static void skip_space(npy_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Consumes c (after spaces); false, consuming nothing else, when the next character differs. */
static bool accept(npy_parser *ps, char c)
{
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

/* A quoted Python string ('...' or "...", backslash escaping the next character) into buf. */
static nl_status parse_string(npy_parser *ps, char *buf, size_t cap)
{
    skip_space(ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"')) return malformed(ps, "expected a string");
    char q = *ps->p++;
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != q) {
        if (*ps->p == '\\' && ps->p + 1 < ps->end) ps->p++;
        if (n + 1 >= cap) return malformed(ps, "string too long");
        buf[n++] = *ps->p++;
    }
    if (ps->p >= ps->end) return malformed(ps, "unterminated string");
    ps->p++;
    buf[n] = '\0';
    return NL_OK;
}

static nl_status parse_bool(npy_parser *ps, bool *out)
{
    skip_space(ps);
    size_t left = (size_t)(ps->end - ps->p);
    if (left >= 4 && !memcmp(ps->p, "True", 4)) {
        *out = true;
        ps->p += 4;
    } else if (left >= 5 && !memcmp(ps->p, "False", 5)) {
        *out = false;
        ps->p += 5;
    } else {
        return malformed(ps, "expected True or False for 'fortran_order'");
    }
    return NL_OK;
}

/* A tuple of non-negative integers: (), (3,), (2, 3). Python 2's long suffix (3L) is accepted. */
static nl_status parse_shape(npy_parser *ps, npy_header *h)
{
    if (!accept(ps, '(')) return malformed(ps, "expected a tuple for 'shape'");
    h->ndim = 0;
    if (accept(ps, ')')) return NL_OK;
    for (;;) {
        skip_space(ps);
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return malformed(ps, "expected a non-negative integer in 'shape'");
        int64_t v = 0;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) return malformed(ps, "dimension too large in 'shape'");
            v = v * 10 + (*ps->p++ - '0');
        }
        if (ps->p < ps->end && *ps->p == 'L') ps->p++;
        if (h->ndim == NL_MAX_DIMS)
            return nl_seterr(NL_EFORMAT, "%s: the array has more than %d dimensions, the most "
                             "nnlab supports", ps->path, NL_MAX_DIMS);
        h->shape[h->ndim++] = v;
        if (accept(ps, ')')) return NL_OK;
        if (!accept(ps, ',')) return malformed(ps, "expected ',' or ')' in 'shape'");
        if (accept(ps, ')')) return NL_OK;
    }
}

/* Maps a descr ("<f4", ">i8", "|b1", ...) to how it loads. */
static nl_status parse_descr(const char *path, const char *d, npy_type *t)
{
    const char *s = d;
    t->big = false;
    if (*s == '<' || *s == '|' || *s == '=') s++;
    else if (*s == '>') {
        t->big = true;
        s++;
    }
    t->kind = *s ? *s++ : '\0';
    char *end;
    long size = strtol(s, &end, 10);
    bool ok = *s >= '0' && *s <= '9' && *end == '\0';
    t->size = ok ? (int)size : 0;
    if (ok && t->kind == 'f' && (size == 4 || size == 8)) t->dtype = NL_F32;
    else if (ok && t->kind == 'i' && size == 1) t->dtype = NL_I8;
    else if (ok && t->kind == 'u' && size == 1) t->dtype = NL_U8;
    else if (ok && (t->kind == 'i' || t->kind == 'u') && (size == 2 || size == 4 || size == 8))
        t->dtype = NL_I32;
    else if (ok && t->kind == 'b' && size == 1) t->dtype = NL_U8;
    else
        return nl_seterr(NL_EFORMAT, "%s: unsupported dtype '%s' (nnlab reads float32/64, "
                         "int8/16/32/64, uint8/16/32/64 and bool)", path, d);
    return NL_OK;
}

/* Parses the whole header dict: exactly the keys 'descr', 'fortran_order' and 'shape', then
 * nothing but spaces. */
static nl_status parse_header(const char *path, const char *text, size_t len, npy_header *h)
{
    npy_parser ps = {path, text, text, text + len};
    bool have_descr = false, have_fortran = false, have_shape = false;
    nl_status st;
    if (!accept(&ps, '{')) return malformed(&ps, "expected '{'");
    while (!accept(&ps, '}')) {
        char key[32];
        if ((st = parse_string(&ps, key, sizeof key)) != NL_OK) return st;
        if (!accept(&ps, ':')) return malformed(&ps, "expected ':' after a key");
        bool *seen;
        if (!strcmp(key, "descr")) {
            seen = &have_descr;
            st = parse_string(&ps, h->descr, sizeof h->descr);
        } else if (!strcmp(key, "fortran_order")) {
            seen = &have_fortran;
            st = parse_bool(&ps, &h->fortran);
        } else if (!strcmp(key, "shape")) {
            seen = &have_shape;
            st = parse_shape(&ps, h);
        } else {
            return nl_seterr(NL_EFORMAT, "%s: malformed .npy header: unknown key '%s'", path, key);
        }
        if (st != NL_OK) return st;
        if (*seen) return nl_seterr(NL_EFORMAT, "%s: malformed .npy header: key '%s' given twice",
                                    path, key);
        *seen = true;
        if (!accept(&ps, ',')) {
            if (accept(&ps, '}')) break;
            return malformed(&ps, "expected ',' or '}'");
        }
    }
    skip_space(&ps);
    if (ps.p != ps.end) return malformed(&ps, "unexpected text after the dict");
    if (!have_descr || !have_fortran || !have_shape)
        return nl_seterr(NL_EFORMAT, "%s: malformed .npy header: missing key '%s'", path,
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    return parse_descr(path, h->descr, &h->type);
}

/* ---------------------------------------------------------------- loading --------------- */

/* Reads exactly n bytes: NL_EIO on a read error, NL_EFORMAT "<path>: truncated: <what>" at the
 * end of the file. */
static nl_status read_exact(FILE *fp, const char *path, void *buf, size_t n, const char *what)
{
    size_t got = fread(buf, 1, n, fp);
    if (got == n) return NL_OK;
    if (ferror(fp)) return nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    return nl_seterr(NL_EFORMAT, "%s: truncated: %s", path, what);
}

/* Decodes n items of file type t from src into dst (t->dtype). NL_EFORMAT if an integer does
 * not fit in i32. */
static nl_status convert(const char *path, const npy_type *t, const unsigned char *src, size_t n,
                         void *dst)
{
    for (size_t i = 0; i < n; i++, src += t->size) {
        uint64_t bits = 0;
        for (int b = 0; b < t->size; b++)
            bits |= (uint64_t)src[t->big ? t->size - 1 - b : b] << (8 * b);
        if (t->kind == 'f') {
            float f;
            if (t->size == 4) {
                uint32_t b32 = (uint32_t)bits;
                memcpy(&f, &b32, 4);
            } else {
                double d;
                memcpy(&d, &bits, 8);
                f = (float)d;
            }
            ((float *)dst)[i] = f;
        } else if (t->kind == 'b') {
            ((uint8_t *)dst)[i] = bits != 0;
        } else if (t->dtype == NL_I8) {
            ((int8_t *)dst)[i] = (int8_t)(uint8_t)bits;
        } else if (t->dtype == NL_U8) {
            ((uint8_t *)dst)[i] = (uint8_t)bits;
        } else if (t->kind == 'u') {
            if (bits > INT32_MAX)
                return nl_seterr(NL_EFORMAT, "%s: value %llu does not fit in i32 (uint%d data)",
                                 path, (unsigned long long)bits, 8 * t->size);
            ((int32_t *)dst)[i] = (int32_t)bits;
        } else {
            int shift = 64 - 8 * t->size; /* sign-extend */
            int64_t v = (int64_t)(bits << shift) >> shift;
            if (v < INT32_MIN || v > INT32_MAX)
                return nl_seterr(NL_EFORMAT, "%s: value %lld does not fit in i32 (int%d data)",
                                 path, (long long)v, 8 * t->size);
            ((int32_t *)dst)[i] = (int32_t)v;
        }
    }
    return NL_OK;
}

/* Reads the data of an already-allocated contiguous tensor in chunks, converting when the file's
 * items are not the tensor's own, and checking for interrupts between chunks. */
static nl_status read_data(FILE *fp, const char *path, const npy_type *t, nl_tensor *dst,
                           size_t n, size_t nbytes)
{
    size_t dsize = nl_dtype_info(dst->dtype)->size;
    /* The file's bytes are the tensor's own for little-endian f4, i1, u1 and i4. */
    bool direct = !t->big && (size_t)t->size == dsize &&
                  (t->kind == 'f' || t->kind == 'i' || (t->kind == 'u' && t->size == 1));
    unsigned char *buf = direct ? NULL : malloc(NPY_CHUNK);
    if (!direct && !buf) return nl_seterr(NL_ENOMEM, "%s: out of memory reading the data", path);
    unsigned char *out = nl_tensor_data(dst);
    size_t per = NPY_CHUNK / (size_t)t->size, done = 0;
    nl_status st = NL_OK;
    char what[96];
    while (done < n && st == NL_OK) {
        size_t k = n - done < per ? n - done : per;
        size_t got = fread(direct ? out + done * dsize : buf, (size_t)t->size, k, fp);
        if (got != k) {
            if (ferror(fp)) {
                st = nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
            } else {
                snprintf(what, sizeof what, "expected %zu bytes of data, found %zu", nbytes,
                         (done + got) * (size_t)t->size);
                st = nl_seterr(NL_EFORMAT, "%s: truncated: %s", path, what);
            }
        } else if (!direct) {
            st = convert(path, t, buf, k, out + done * dsize);
        }
        done += k;
        if (st == NL_OK) st = nl_check_interrupt();
    }
    free(buf);
    return st;
}

/* Prefixes the current error message with the path (for errors raised by other modules). */
static void name_error(const char *path)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nl_errmsg());
    nl_seterr(nl_errcode(), "%s: %s", path, msg);
}

/* Loads the array in the open file fp (see nl_npy_load). */
static nl_tensor *load(FILE *fp, const char *path)
{
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(EISDIR));
        return NULL;
    }
    bool sized = S_ISREG(sb.st_mode); /* pipes and devices: sizes are found out by reading */
    uint64_t fsize = sized ? (uint64_t)sb.st_size : 0;

    unsigned char pre[12];
    size_t got = fread(pre, 1, 8, fp);
    if (got == 0 && !ferror(fp)) {
        nl_seterr(NL_EFORMAT, "%s: empty file, not a .npy file", path);
        return NULL;
    }
    if (got < 6 || memcmp(pre, npy_magic, 6) != 0) {
        if (ferror(fp)) nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
        else nl_seterr(NL_EFORMAT, "%s: not a .npy file (bad magic)", path);
        return NULL;
    }
    if (got < 8) {
        nl_seterr(NL_EFORMAT, "%s: truncated: the header ends after %zu bytes", path, got);
        return NULL;
    }
    int major = pre[6], minor = pre[7];
    if (minor != 0 || major < 1 || major > 3) {
        nl_seterr(NL_EFORMAT, "%s: unsupported .npy format version %d.%d", path, major, minor);
        return NULL;
    }
    size_t lenbytes = major == 1 ? 2 : 4;
    if (read_exact(fp, path, pre + 8, lenbytes, "the header ends early") != NL_OK) return NULL;
    uint32_t hlen = pre[8] | (uint32_t)pre[9] << 8;
    if (lenbytes == 4) hlen |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    size_t data_off = 8 + lenbytes + hlen;
    if (hlen > NPY_MAX_HEADER) {
        nl_seterr(NL_EFORMAT, "%s: header of %u bytes is implausibly long", path, hlen);
        return NULL;
    }
    if (sized && data_off > fsize) {
        nl_seterr(NL_EFORMAT, "%s: truncated: the header needs %zu bytes, the file has %llu",
                  path, data_off, (unsigned long long)fsize);
        return NULL;
    }
    char *text = malloc(hlen + 1);
    if (!text) {
        nl_seterr(NL_ENOMEM, "%s: out of memory reading the header", path);
        return NULL;
    }
    npy_header h;
    nl_status st = read_exact(fp, path, text, hlen, "the header ends early");
    if (st == NL_OK) {
        text[hlen] = '\0';
        st = parse_header(path, text, hlen, &h);
    }
    free(text);
    if (st != NL_OK) return NULL;

    /* Sizes, with overflow checks, before anything is allocated. */
    size_t n = 1, nbytes;
    bool overflow = false;
    for (int d = 0; d < h.ndim; d++)
        if (!nl_mul_overflow(n, (size_t)h.shape[d], &n)) overflow = true;
    if (overflow || !nl_mul_overflow(n, (size_t)h.type.size, &nbytes)) {
        char sbuf[256];
        nl_seterr(NL_EFORMAT, "%s: shape %s is too large", path,
                  nl_shape_str(sbuf, sizeof sbuf, h.ndim, h.shape));
        return NULL;
    }
    if (sized && fsize - data_off < nbytes) {
        nl_seterr(NL_EFORMAT, "%s: truncated: expected %zu bytes of data, found %llu", path,
                  nbytes, (unsigned long long)(fsize - data_off));
        return NULL;
    }

    /* Fortran order is C order of the reversed shape: read it so, then transpose. */
    bool reversed = h.fortran && h.ndim > 1;
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < h.ndim; d++) shape[d] = h.shape[reversed ? h.ndim - 1 - d : d];
    nl_tensor *t = nl_tensor_empty(h.type.dtype, h.ndim, shape, NL_CPU);
    if (!t) {
        name_error(path);
        return NULL;
    }
    if (read_data(fp, path, &h.type, t, n, nbytes) != NL_OK) {
        nl_tensor_release(t);
        return NULL;
    }
    if (!reversed) return t;
    int perm[NL_MAX_DIMS];
    for (int d = 0; d < h.ndim; d++) perm[d] = h.ndim - 1 - d;
    nl_tensor *view = nl_tensor_permute(t, perm);
    nl_tensor_release(t);
    nl_tensor *c = view ? nl_tensor_contiguous(view) : NULL;
    nl_tensor_release(view);
    if (!c) name_error(path);
    return c;
}

/* Returns a new reference to a contiguous CPU tensor holding the array in path, or NULL with:
 * NL_EIO (cannot open or read: "cannot open 'x.npy': No such file or directory"), NL_EFORMAT
 * (not a .npy file, malformed header, unsupported dtype, truncated, i64 value beyond i32),
 * NL_ENOMEM (larger than the memory limit), NL_EINTR. Every message names the file. Bytes after
 * the data are ignored, as numpy does. */
nl_tensor *nl_npy_load(const char *path)
{
    if (!path) {
        nl_seterr(NL_EINVAL, "load: no file name");
        return NULL;
    }
    FILE *fp = fopen(path, "rbe");
    if (!fp) {
        nl_seterr(NL_EIO, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    nl_tensor *t = load(fp, path);
    fclose(fp);
    if (t) nl_files_note(path);
    return t;
}

/* ---------------------------------------------------------------- saving ---------------- */

/* Writes t (any device, any strides: a device tensor is read through one host copy) to path as a
 * format 1.0 .npy file whose data starts on a 64-byte boundary, as numpy writes it. The file is
 * replaced atomically: on failure the old file, if any, is untouched. Errors: NL_EIO naming the
 * path, NL_ENOMEM. Does not take ownership of t. */
nl_status nl_npy_save(const char *path, const nl_tensor *t)
{
    if (!path) return nl_seterr(NL_EINVAL, "save: no file name");
    if (!t) return nl_seterr(NL_EINVAL, "save '%s': no tensor", path);
    char head[512];
    int len = snprintf(head, sizeof head, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                       npy_descr[t->dtype]);
    for (int d = 0; d < t->ndim; d++)
        len += snprintf(head + len, sizeof head - (size_t)len, d ? ", %lld" : "%lld",
                        (long long)t->shape[d]);
    len += snprintf(head + len, sizeof head - (size_t)len, "%s), }", t->ndim == 1 ? "," : "");
    /* Pad with spaces so that magic (6) + version (2) + length (2) + header + '\n' is a
     * multiple of 64. */
    while ((10 + len + 1) % 64 != 0) head[len++] = ' ';
    head[len++] = '\n';
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1, pre[7] = 0, pre[8] = (unsigned char)(len & 0xff), pre[9] = (unsigned char)(len >> 8);

    nl_tensor *c = nl_tensor_host(t); /* t itself when it is a contiguous host tensor */
    if (!c) {
        name_error(path);
        return nl_errcode();
    }
    nl_atomic_file af;
    nl_status st = nl_atomic_open(&af, path);
    if (st == NL_OK) st = nl_atomic_write(&af, pre, sizeof pre);
    if (st == NL_OK) st = nl_atomic_write(&af, head, (size_t)len);
    if (st == NL_OK)
        st = nl_atomic_write(&af, nl_tensor_data(c),
                             (size_t)nl_tensor_numel(c) * nl_dtype_info(c->dtype)->size);
    if (st == NL_OK) st = nl_atomic_commit(&af);
    else nl_atomic_abort(&af);
    nl_tensor_release(c);
    return st;
}
