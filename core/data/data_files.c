/* data_files.c: data sets from files: CIFAR-10's binary release (read and write), MNIST-style IDX
 * files (plain or gzip) and folders of class images decoded by a caller-supplied decoder (the
 * core knows no image library: dsl/data.c passes viz/image.c's SDL2_image decoder). */
#include "dataset.h"
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CIFAR_PIXELS 3072
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_TRAIN_FILES 5
#define PATH_CAP 4096

static const char *const mnist_names[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static const char *const fashion_names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* A growing list of malloc'd strings. */
typedef struct {
    char **v;
    int n, cap;
} strlist;

static void strlist_free(strlist *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    *l = (strlist){0};
}

/* Appends a copy of the first len bytes of s; false when out of memory. */
static bool strlist_add(strlist *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return false;
        l->v = v;
        l->cap = cap;
    }
    return (l->v[l->n] = strndup(s, len)) ? (l->n++, true) : false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Formats a path into out (PATH_CAP bytes); NL_EINVAL when it does not fit. */
__attribute__((format(printf, 2, 3)))
static nl_status fmt_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_CAP, fmt, ap);
    va_end(ap);
    if (n >= 0 && n < PATH_CAP) return NL_OK;
    return nl_seterr(NL_EINVAL, "path too long: '%.64s...'", out);
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Makes a data set from freshly made images and labels, dropping the local references (the
 * data set keeps its own). NULL with the error set when anything is missing or invalid. */
static nl_dataset *adopt(nl_tensor *images, nl_tensor *labels, int nclasses,
                         const char *const *classes, const char *name)
{
    nl_dataset *ds = images && labels ? nl_dataset_new(images, labels, nclasses, classes, name) : NULL;
    nl_tensor_release(images);
    nl_tensor_release(labels);
    return ds;
}

/* u8 [n, c, h, w] and i32 [n] tensors for a set being read. */
static nl_status alloc_set(int64_t n, int64_t c, int64_t h, int64_t w, nl_tensor **images,
                           nl_tensor **labels)
{
    int64_t shape[4] = {n, c, h, w};
    *images = nl_tensor_empty(NL_U8, 4, shape, NL_CPU);
    *labels = *images ? nl_tensor_empty(NL_I32, 1, &n, NL_CPU) : NULL;
    if (*labels) return NL_OK;
    nl_tensor_release(*images);
    *images = NULL;
    return nl_errcode();
}

/* ---------------------------------------------------------------- CIFAR-10 -------------- */

/* Reads the class names of batches.meta.txt (one per line; blank lines and trailing white
 * space ignored) into names. */
static nl_status read_meta(const char *path, strlist *names)
{
    FILE *f = fopen(path, "r");
    if (!f) return nl_seterr(NL_EIO, "cifar10: cannot open '%s': %s", path, strerror(errno));
    nl_files_note(path);
    char line[512];
    nl_status s = NL_OK;
    while (s == NL_OK && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                       line[len - 1] == '\t'))
            len--;
        if (len && !strlist_add(names, line, len)) s = nl_seterr(NL_ENOMEM, "cifar10: out of memory");
    }
    if (s == NL_OK && ferror(f)) s = nl_seterr(NL_EIO, "cifar10: cannot read '%s'", path);
    fclose(f);
    if (s == NL_OK && (names->n < 1 || names->n > 256))
        s = nl_seterr(NL_EFORMAT, "cifar10: '%s' lists %d class names, expected 1 to 256", path,
                      names->n);
    return s;
}

/* The number of records in a batch file, checking that its size is whole records. */
static nl_status cifar_count(const char *path, int64_t *records)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return nl_seterr(NL_EIO, "cifar10: cannot open '%s': %s", path, strerror(errno));
    if (sb.st_size % CIFAR_RECORD != 0)
        return nl_seterr(NL_EFORMAT, "cifar10: '%s' has %lld bytes, not a whole number of "
                         "%d-byte records (truncated?)", path, (long long)sb.st_size, CIFAR_RECORD);
    *records = sb.st_size / CIFAR_RECORD;
    return NL_OK;
}

/* Reads `records` records of path into pix and labels, checking each label < nclasses. */
static nl_status cifar_read(const char *path, int64_t records, uint8_t *pix, int32_t *labels,
                            int nclasses)
{
    FILE *f = fopen(path, "rb");
    if (!f) return nl_seterr(NL_EIO, "cifar10: cannot open '%s': %s", path, strerror(errno));
    nl_files_note(path);
    enum { CHUNK = 1024 };
    uint8_t *buf = malloc((size_t)CHUNK * CIFAR_RECORD);
    nl_status s = buf ? NL_OK : nl_seterr(NL_ENOMEM, "cifar10: out of memory");
    for (int64_t r = 0; s == NL_OK && r < records; r += CHUNK) {
        size_t n = (size_t)(records - r < CHUNK ? records - r : CHUNK);
        if (fread(buf, CIFAR_RECORD, n, f) != n) {
            s = nl_seterr(NL_EIO, "cifar10: cannot read '%s': %s", path,
                          ferror(f) ? strerror(errno) : "file shrank while reading");
            break;
        }
        for (size_t k = 0; k < n; k++) {
            const uint8_t *rec = buf + k * CIFAR_RECORD;
            if (rec[0] >= nclasses) {
                s = nl_seterr(NL_EFORMAT, "cifar10: '%s': record %lld has label %d, but "
                              "batches.meta.txt lists %d classes", path, (long long)(r + (int64_t)k) + 1,
                              rec[0], nclasses);
                break;
            }
            labels[r + (int64_t)k] = rec[0];
            memcpy(pix + (size_t)(r + (int64_t)k) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
        }
    }
    free(buf);
    fclose(f);
    return s;
}

/* One CIFAR set from the batch files paths[0..nfiles). */
static nl_dataset *cifar_set(char paths[][PATH_CAP], int nfiles, const strlist *names,
                             const char *name)
{
    int64_t counts[CIFAR_TRAIN_FILES] = {0}, total = 0;
    for (int i = 0; i < nfiles; i++) {
        if (cifar_count(paths[i], &counts[i]) != NL_OK) return NULL;
        total += counts[i];
    }
    nl_tensor *images, *labels;
    if (alloc_set(total, 3, 32, 32, &images, &labels) != NL_OK) return NULL;
    nl_status s = NL_OK;
    for (int i = 0, at = 0; s == NL_OK && i < nfiles; at += (int)counts[i], i++)
        s = cifar_read(paths[i], counts[i], (uint8_t *)nl_tensor_data(images) + (size_t)at * CIFAR_PIXELS,
                       (int32_t *)nl_tensor_data(labels) + at, names->n);
    if (s != NL_OK) {
        nl_tensor_release(images);
        nl_tensor_release(labels);
        return NULL;
    }
    return adopt(images, labels, names->n, (const char *const *)names->v, name);
}

/* Finds cifar-10-batches-bin in the places data lives, in order: $NNLAB_DATA, ./data, and beside
 * the running program: <bin>/../data (build/nnlab in a checkout, where `make data` puts it) and
 * <bin>/../share/nnlab/data (an installed program). found gets the folder; false when none has
 * it, with tried listing the places looked at. */
static bool find_cifar10(char found[PATH_CAP], char *tried, size_t ntried)
{
    char places[4][PATH_CAP];
    int n = 0;
    const char *env = getenv("NNLAB_DATA");
    if (env && *env && fmt_path(places[n], "%s/cifar-10-batches-bin", env) == NL_OK) n++;
    snprintf(places[n++], PATH_CAP, "./data/cifar-10-batches-bin");
    char exe[PATH_CAP];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        if (fmt_path(places[n], "%s/../data/cifar-10-batches-bin", exe) == NL_OK) n++;
        if (fmt_path(places[n], "%s/../share/nnlab/data/cifar-10-batches-bin", exe) == NL_OK) n++;
    }
    tried[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (is_dir(places[i])) {
            snprintf(found, PATH_CAP, "%s", places[i]);
            return true;
        }
        size_t used = strlen(tried);
        snprintf(tried + used, ntried - used, "%s%s", i ? ", " : "", places[i]);
    }
    return false;
}

nl_status nl_cifar10_load(const char *dir, nl_dataset **train, nl_dataset **test)
{
    *train = *test = NULL;
    char found[PATH_CAP];
    if (!dir) {
        char tried[4 * PATH_CAP + 8];
        if (!find_cifar10(found, tried, sizeof tried))
            return nl_seterr(NL_EIO, "cifar10: CIFAR-10 not found (looked in %s): run `make data` in "
                             "nnlab's folder, or download the binary version (cifar-10-binary.tar.gz) "
                             "from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it so that one of "
                             "those folders exists (or set $NNLAB_DATA to a folder holding "
                             "cifar-10-batches-bin)", tried);
        dir = found;
    } else if (!is_dir(dir)) {
        return nl_seterr(NL_EIO, "cifar10: '%s' is not a folder (expected CIFAR-10's binary "
                         "release: data_batch_1.bin ... test_batch.bin, batches.meta.txt)", dir);
    }
    char paths[CIFAR_TRAIN_FILES][PATH_CAP];
    strlist names = {0};
    nl_status s = fmt_path(paths[0], "%s/batches.meta.txt", dir);
    if (s == NL_OK) s = read_meta(paths[0], &names);
    for (int i = 0; s == NL_OK && i < CIFAR_TRAIN_FILES; i++)
        s = fmt_path(paths[i], "%s/data_batch_%d.bin", dir, i + 1);
    if (s == NL_OK) *train = cifar_set(paths, CIFAR_TRAIN_FILES, &names, "cifar10-train");
    if (*train && fmt_path(paths[0], "%s/test_batch.bin", dir) == NL_OK)
        *test = cifar_set(paths, 1, &names, "cifar10-test");
    strlist_free(&names);
    if (*test) return NL_OK;
    nl_dataset_release(*train);
    *train = NULL;
    return nl_errcode();
}

/* Writes records [from, to) of the order perm (positions in ds) to path, atomically. */
static nl_status cifar_write(const char *path, const nl_dataset *ds, const int32_t *perm,
                             int64_t from, int64_t to)
{
    nl_atomic_file af;
    nl_status s = nl_atomic_open(&af, path);
    const uint8_t *pix = nl_tensor_data(ds->images);
    uint8_t rec[CIFAR_RECORD];
    for (int64_t i = from; s == NL_OK && i < to; i++) {
        int32_t row = ds->rows[perm[i]];
        rec[0] = (uint8_t)((const int32_t *)nl_tensor_data(ds->labels))[row];
        memcpy(rec + 1, pix + (size_t)row * CIFAR_PIXELS, CIFAR_PIXELS);
        s = nl_atomic_write(&af, rec, sizeof rec);
    }
    if (s == NL_OK) return nl_atomic_commit(&af);
    nl_atomic_abort(&af);
    return s;
}

/* The order in which ds's records are written: seeded (a key per set) or ds's own. */
static nl_tensor *write_order(const nl_dataset *ds, bool shuffle, uint64_t key)
{
    nl_tensor *perm = nl_tensor_empty(NL_I32, 1, &ds->n, NL_CPU);
    if (!perm) return NULL;
    int32_t *p = nl_tensor_data(perm);
    if (shuffle) {
        nl_permutation(perm, key);
    } else {
        for (int64_t i = 0; i < ds->n; i++) p[i] = (int32_t)i;
    }
    return perm;
}

/* Checks that ds can be written as CIFAR records. */
static nl_status cifar_check(const nl_dataset *ds, const nl_dataset *train)
{
    const int64_t *sh = ds->images->shape;
    if (sh[1] != 3 || sh[2] != 32 || sh[3] != 32)
        return nl_seterr(NL_EINVAL, "save_cifar: '%s' has %lldx%lldx%lld images; the CIFAR format "
                         "holds 3x32x32 (load images with size={32, 32})", ds->name,
                         (long long)sh[1], (long long)sh[2], (long long)sh[3]);
    if (ds->nclasses > 256)
        return nl_seterr(NL_EINVAL, "save_cifar: '%s' has %d classes; the CIFAR format holds at "
                         "most 256", ds->name, ds->nclasses);
    bool same = ds->nclasses == train->nclasses;
    for (int c = 0; same && c < ds->nclasses; c++) same = !strcmp(ds->classes[c], train->classes[c]);
    if (!same)
        return nl_seterr(NL_EINVAL, "save_cifar: '%s' and '%s' have different classes", train->name,
                         ds->name);
    for (int c = 0; c < ds->nclasses; c++)
        if (!ds->classes[c][0] || strpbrk(ds->classes[c], "\r\n"))
            return nl_seterr(NL_EINVAL, "save_cifar: class %d's name is empty or holds a line "
                             "break", c + 1);
    return NL_OK;
}

nl_status nl_cifar_save(const char *dir, const nl_dataset *train, const nl_dataset *test,
                        bool shuffle, uint64_t seed)
{
    nl_status s = cifar_check(train, train);
    if (s == NL_OK) s = cifar_check(test, train);
    if (s != NL_OK) return s;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return nl_seterr(NL_EIO, "save_cifar: cannot create '%s': %s", dir, strerror(errno));
    if (!is_dir(dir)) return nl_seterr(NL_EIO, "save_cifar: '%s' is not a folder", dir);
    char path[PATH_CAP];
    nl_tensor *order = write_order(train, shuffle, nl_rng_hash(seed, 1));
    if (!order) return nl_errcode();
    for (int i = 0, from = 0; s == NL_OK && i < CIFAR_TRAIN_FILES; i++) {
        /* Five parts as equal as can be, the larger ones first. */
        int64_t size = train->n / CIFAR_TRAIN_FILES + (i < train->n % CIFAR_TRAIN_FILES);
        s = fmt_path(path, "%s/data_batch_%d.bin", dir, i + 1);
        if (s == NL_OK) s = cifar_write(path, train, nl_tensor_data(order), from, from + size);
        from += (int)size;
    }
    nl_tensor_release(order);
    if (s != NL_OK) return s;
    if (!(order = write_order(test, shuffle, nl_rng_hash(seed, 2)))) return nl_errcode();
    s = fmt_path(path, "%s/test_batch.bin", dir);
    if (s == NL_OK) s = cifar_write(path, test, nl_tensor_data(order), 0, test->n);
    nl_tensor_release(order);
    if (s != NL_OK) return s;
    nl_atomic_file af;
    s = fmt_path(path, "%s/batches.meta.txt", dir);
    if (s == NL_OK) s = nl_atomic_open(&af, path);
    for (int c = 0; s == NL_OK && c < train->nclasses; c++) {
        s = nl_atomic_write(&af, train->classes[c], strlen(train->classes[c]));
        if (s == NL_OK) s = nl_atomic_write(&af, "\n", 1);
    }
    if (s == NL_OK) s = nl_atomic_write(&af, "\n", 1); /* as the official file: a blank last line */
    if (s == NL_OK) return nl_atomic_commit(&af);
    nl_atomic_abort(&af);
    return s;
}

/* ---------------------------------------------------------------- IDX (MNIST) ----------- */

/* Finds dir/name or dir/name.gz into path. */
static nl_status idx_path(char *path, const char *dir, const char *name, const char *fname)
{
    struct stat sb;
    if (fmt_path(path, "%s/%s", dir, name) != NL_OK) return nl_errcode();
    if (stat(path, &sb) == 0) return NL_OK;
    if (fmt_path(path, "%s/%s.gz", dir, name) != NL_OK) return nl_errcode();
    if (stat(path, &sb) == 0) return NL_OK;
    return nl_seterr(NL_EIO, "%s: cannot open '%s/%s' (or .gz): %s%s", fname, dir, name,
                     strerror(errno),
                     strcmp(fname, "fashion_mnist") ? "" : " (Debian: apt-get install dataset-fashion-mnist)");
}

/* Reads exactly n bytes; false at a short read. */
static bool gz_read_all(gzFile f, void *buf, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t want = n - done > (1u << 30) ? (1u << 30) : n - done;
        int got = gzread(f, (char *)buf + done, (unsigned)want);
        if (got <= 0) return false;
        done += (size_t)got;
    }
    return true;
}

/* Reads an IDX file of unsigned bytes with ndim dims (magic 0x0000080<ndim>): its sizes into
 * dims, its contents into a new u8 tensor of the given shape (dims[0] rows first). */
static nl_status idx_read(const char *path, int ndim, int64_t *dims, nl_tensor **out,
                          const char *fname)
{
    *out = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) return nl_seterr(NL_EIO, "%s: cannot open '%s': %s", fname, path, strerror(errno));
    nl_files_note(path);
    uint8_t head[4 + 4 * 3];
    nl_status s = NL_OK;
    size_t hlen = 4 + 4 * (size_t)ndim;
    if (!gz_read_all(f, head, hlen)) {
        s = nl_seterr(NL_EFORMAT, "%s: '%s' is truncated (no IDX header) or not gzip", fname, path);
    } else if (head[0] || head[1] || head[2] != 0x08 || head[3] != ndim) {
        s = nl_seterr(NL_EFORMAT, "%s: '%s' has magic %02x%02x%02x%02x, expected 000008%02x (IDX "
                      "%s of unsigned bytes)", fname, path, head[0], head[1], head[2], head[3], ndim,
                      ndim == 1 ? "labels" : "images");
    }
    size_t count = 1;
    bool overflow = false;
    for (int d = 0; s == NL_OK && d < ndim; d++) {
        const uint8_t *b = head + 4 + 4 * d;
        dims[d] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (!nl_mul_overflow(count, (size_t)dims[d], &count) || count > (size_t)INT64_MAX) overflow = true;
    }
    if (s == NL_OK && overflow)
        s = nl_seterr(NL_EFORMAT, "%s: '%s' declares %lld x %lld x %lld bytes, more than any file "
                      "can hold", fname, path, (long long)dims[0], ndim > 1 ? (long long)dims[1] : 1LL,
                      ndim > 2 ? (long long)dims[2] : 1LL);
    /* Nothing is allocated for more data than the file can hold: its own size when plain, and
     * deflate's largest ratio (1032:1) when gzipped (a small file promising gigabytes). */
    struct stat sb;
    if (s == NL_OK && stat(path, &sb) == 0) {
        const double most = gzdirect(f) ? (double)sb.st_size - (double)hlen : (double)sb.st_size * 1032.0;
        if ((double)count > most)
            s = nl_seterr(NL_EFORMAT, "%s: '%s' is truncated: its header promises %lld bytes of "
                          "data, more than its %lld bytes can hold", fname, path, (long long)count,
                          (long long)sb.st_size);
    }
    if (s == NL_OK && ndim == 3) {
        int64_t shape[4] = {dims[0], 1, dims[1], dims[2]};
        if (!(*out = nl_tensor_empty(NL_U8, 4, shape, NL_CPU))) s = nl_errcode();
    } else if (s == NL_OK && !(*out = nl_tensor_empty(NL_U8, 1, dims, NL_CPU))) {
        s = nl_errcode();
    }
    char extra;
    if (s == NL_OK && !gz_read_all(f, nl_tensor_data(*out), (size_t)count))
        s = nl_seterr(NL_EFORMAT, "%s: '%s' is truncated: its header promises %lld bytes of data",
                      fname, path, (long long)count);
    else if (s == NL_OK && gzread(f, &extra, 1) != 0)
        s = nl_seterr(NL_EFORMAT, "%s: '%s' has bytes beyond the %lld its header promises", fname,
                      path, (long long)count);
    gzclose(f);
    if (s != NL_OK) {
        nl_tensor_release(*out);
        *out = NULL;
    }
    return s;
}

/* One set from prefix-images-idx3-ubyte and prefix-labels-idx1-ubyte. */
static nl_dataset *idx_set(const char *dir, const char *prefix, const char *const *classes,
                           const char *name, const char *fname)
{
    char ipath[PATH_CAP], lpath[PATH_CAP], file[64];
    int64_t idims[3], ldims[1];
    nl_tensor *images = NULL, *bytes = NULL, *labels = NULL;
    snprintf(file, sizeof file, "%s-images-idx3-ubyte", prefix);
    nl_status s = idx_path(ipath, dir, file, fname);
    snprintf(file, sizeof file, "%s-labels-idx1-ubyte", prefix);
    if (s == NL_OK) s = idx_path(lpath, dir, file, fname);
    if (s == NL_OK) s = idx_read(ipath, 3, idims, &images, fname);
    if (s == NL_OK) s = idx_read(lpath, 1, ldims, &bytes, fname);
    if (s == NL_OK && ldims[0] != idims[0])
        s = nl_seterr(NL_EFORMAT, "%s: '%s' holds %lld images but '%s' holds %lld labels", fname,
                      ipath, (long long)idims[0], lpath, (long long)ldims[0]);
    const uint8_t *pb = s == NL_OK ? nl_tensor_data(bytes) : NULL;
    for (int64_t i = 0; s == NL_OK && i < ldims[0]; i++)
        if (pb[i] > 9)
            s = nl_seterr(NL_EFORMAT, "%s: '%s': label %lld is %d, expected 0 to 9", fname, lpath,
                          (long long)i + 1, pb[i]);
    if (s == NL_OK && !(labels = nl_tensor_to_dtype(bytes, NL_I32))) s = nl_errcode();
    nl_tensor_release(bytes);
    if (s != NL_OK) {
        nl_tensor_release(images);
        return NULL;
    }
    return adopt(images, labels, 10, classes, name);
}

nl_status nl_mnist_load(const char *dir, bool fashion, nl_dataset **train, nl_dataset **test)
{
    const char *fname = fashion ? "fashion_mnist" : "mnist";
    const char *const *classes = fashion ? fashion_names : mnist_names;
    if (!dir) dir = NL_FASHION_MNIST_DIR;
    *test = NULL;
    *train = idx_set(dir, "train", classes, fashion ? "fashion-mnist-train" : "mnist-train", fname);
    if (*train) *test = idx_set(dir, "t10k", classes, fashion ? "fashion-mnist-test" : "mnist-test", fname);
    if (*test) return NL_OK;
    nl_dataset_release(*train);
    *train = NULL;
    return nl_errcode();
}

/* ---------------------------------------------------------------- image folders --------- */

/* The file name extensions of images (torchvision's IMG_EXTENSIONS and what SDL2_image reads
 * besides), compared without case. */
static bool image_extension(const char *name)
{
    static const char *const ext[] = {"jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm", "bmp",
                                      "gif", "tga", "tif", "tiff", "webp"};
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return false;
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (strcasecmp(dot + 1, ext[i]) == 0) return true;
    return false;
}

/* Appends the entries of dir (sorted, dot-names skipped) that are folders (want_dirs) or, when
 * not, files with an image extension; *skipped (when given) counts the other files. */
static nl_status list_dir(const char *dir, bool want_dirs, strlist *out, int *skipped)
{
    DIR *d = opendir(dir);
    if (!d) return nl_seterr(NL_EIO, "image_folder: cannot open folder '%s': %s", dir, strerror(errno));
    struct dirent *e;
    char path[PATH_CAP];
    nl_status s = NL_OK;
    int before = out->n;
    while (s == NL_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        s = fmt_path(path, "%s/%s", dir, e->d_name);
        if (s != NL_OK || is_dir(path) != want_dirs) continue;
        if (!want_dirs && !image_extension(e->d_name)) {
            if (skipped) (*skipped)++;
            continue;
        }
        if (!strlist_add(out, e->d_name, strlen(e->d_name)))
            s = nl_seterr(NL_ENOMEM, "image_folder: out of memory");
    }
    closedir(d);
    if (out->n > before) qsort(out->v + before, (size_t)(out->n - before), sizeof *out->v, cmp_str);
    return s;
}

/* Resizes RGB pixels src (sh rows of sw pixels, interleaved) into dst (3 planes of dh x dw),
 * bilinearly with pixel centres aligned (a plain transpose when the sizes agree). */
static void resize_rgb(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh)
{
    size_t plane = (size_t)dw * (size_t)dh;
    for (int y = 0; y < dh; y++) {
        float fy = ((float)y + 0.5f) * (float)sh / (float)dh - 0.5f;
        fy = fy < 0 ? 0 : fy;
        int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
        float wy = fy - (float)y0;
        for (int x = 0; x < dw; x++) {
            float fx = ((float)x + 0.5f) * (float)sw / (float)dw - 0.5f;
            fx = fx < 0 ? 0 : fx;
            int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
            float wx = fx - (float)x0;
            for (int c = 0; c < 3; c++) {
                float a = src[((size_t)y0 * (size_t)sw + (size_t)x0) * 3 + (size_t)c];
                float b = src[((size_t)y0 * (size_t)sw + (size_t)x1) * 3 + (size_t)c];
                float p = src[((size_t)y1 * (size_t)sw + (size_t)x0) * 3 + (size_t)c];
                float q = src[((size_t)y1 * (size_t)sw + (size_t)x1) * 3 + (size_t)c];
                float v = (a + (b - a) * wx) * (1 - wy) + (p + (q - p) * wx) * wy;
                dst[(size_t)c * plane + (size_t)y * (size_t)dw + (size_t)x] = (uint8_t)(v + 0.5f);
            }
        }
    }
}

/* Decodes image file path into out (3 planes of h x w), resized when resize is set, else
 * required to be w x h already. */
static nl_status load_image(const char *path, nl_image_decoder decode, int64_t max_pixels, int w,
                            int h, bool resize, uint8_t *out)
{
    int iw, ih;
    uint8_t *px = NULL;
    nl_status s = nl_check_interrupt();
    if (s == NL_OK) s = decode(path, max_pixels, &iw, &ih, &px);
    if (s != NL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", nl_errmsg());
        s = nl_seterr(s, "image_folder: %s", why);
    }
    if (s == NL_OK && !resize && (iw != w || ih != h))
        s = nl_seterr(NL_EFORMAT, "image_folder: '%s' is %dx%d but the first image is %dx%d: pass "
                      "size={h, w} to resize them all", path, iw, ih, w, h);
    if (s == NL_OK) resize_rgb(px, iw, ih, out, w, h);
    free(px);
    return s;
}

nl_dataset *nl_image_folder_load(const char *dir, int width, int height, int64_t max_pixels,
                                 nl_image_decoder decode, int *skipped)
{
    if (skipped) *skipped = 0;
    if (width < 0 || height < 0 || width > 16384 || height > 16384 || (!width) != (!height)) {
        nl_seterr(NL_EINVAL, "image_folder: size %dx%d (expected 1 to 16384, or none)", width, height);
        return NULL;
    }
    if (max_pixels < 1) {
        nl_seterr(NL_EINVAL, "image_folder: max_pixels = %lld (expected at least 1)", (long long)max_pixels);
        return NULL;
    }
    bool resize = width != 0;
    strlist classes = {0}, files = {0};
    int32_t *owner = NULL; /* class of each file */
    nl_tensor *images = NULL, *labels = NULL;
    char path[PATH_CAP];
    nl_status s = list_dir(dir, true, &classes, NULL);
    if (s == NL_OK && classes.n == 0)
        s = nl_seterr(NL_EFORMAT, "image_folder: '%s' has no class folders (expected "
                      "<dir>/<class>/<image>)", dir);
    if (s == NL_OK && classes.n > 65536)
        s = nl_seterr(NL_EFORMAT, "image_folder: '%s' has %d class folders, at most 65536 are "
                      "supported", dir, classes.n);
    for (int c = 0; s == NL_OK && c < classes.n; c++) {
        int before = files.n;
        s = fmt_path(path, "%s/%s", dir, classes.v[c]);
        if (s == NL_OK) s = list_dir(path, false, &files, skipped);
        if (s == NL_OK && files.n == before)
            s = nl_seterr(NL_EFORMAT, "image_folder: class folder '%s' holds no images (files named "
                          "*.jpg, *.jpeg, *.png, *.ppm, *.bmp, ...)", path);
        int32_t *o = s == NL_OK ? realloc(owner, (size_t)files.n * sizeof *owner) : NULL;
        if (s == NL_OK && !o) s = nl_seterr(NL_ENOMEM, "image_folder: out of memory");
        if (s != NL_OK) break;
        owner = o;
        for (int i = before; i < files.n; i++) owner[i] = c;
    }
    /* Without a size the first image sets it. */
    if (s == NL_OK && !width) {
        uint8_t *px = NULL;
        s = fmt_path(path, "%s/%s/%s", dir, classes.v[owner[0]], files.v[0]);
        if (s == NL_OK) s = decode(path, max_pixels, &width, &height, &px);
        if (s != NL_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", nl_errmsg());
            s = nl_seterr(s, "image_folder: %s", why);
        }
        free(px);
    }
    if (s == NL_OK) s = alloc_set(files.n, 3, height, width, &images, &labels);
    if (s == NL_OK) {
        uint8_t *pix = nl_tensor_data(images);
        int32_t *py = nl_tensor_data(labels);
        size_t chw = 3 * (size_t)width * (size_t)height;
        for (int i = 0; s == NL_OK && i < files.n; i++) {
            s = fmt_path(path, "%s/%s/%s", dir, classes.v[owner[i]], files.v[i]);
            if (s == NL_OK)
                s = load_image(path, decode, max_pixels, width, height, resize, pix + (size_t)i * chw);
            py[i] = owner[i];
        }
    }
    nl_dataset *ds = NULL;
    if (s == NL_OK) {
        const char *base = strrchr(dir, '/');
        ds = adopt(images, labels, classes.n, (const char *const *)classes.v,
                   base && base[1] ? base + 1 : dir);
        if (ds) nl_files_note(dir);
    } else {
        nl_tensor_release(images);
        nl_tensor_release(labels);
    }
    free(owner);
    strlist_free(&files);
    strlist_free(&classes);
    return ds;
}
