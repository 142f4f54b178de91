/* safetensors.h: safetensors files (readable by Python's safetensors package): a generic writer
 * and a validating reader. Checkpoints (checkpoint.h) are built on them. */
#ifndef NL_SAFETENSORS_H
#define NL_SAFETENSORS_H

#include "nl.h"

#include <stdbool.h>

/* The format: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * padded with spaces, then the data: each tensor row-major, little-endian, at [begin, end) from
 * the end of the header, the tensors covering the data exactly (no holes, no overlaps). */

/* A file being assembled: tensors and metadata are collected, then written in one commit. */
typedef struct nl_st_writer nl_st_writer;

/* Returns a new empty writer, or NULL (NL_ENOMEM). */
nl_st_writer *nl_st_writer_new(void);
/* Frees the writer and drops its tensor references. NULL is a no-op. */
void nl_st_writer_free(nl_st_writer *w);
/* Adds tensor t (any dtype, shape, strides or device; the writer takes a reference and reads the
 * data at commit) under name. NL_EINVAL for an empty or duplicate name or "__metadata__". */
nl_status nl_st_writer_add(nl_st_writer *w, const char *name, nl_tensor *t);
/* Sets metadata key to value (both copied; a second call with the same key replaces the value).
 * NL_EINVAL for an empty key. */
nl_status nl_st_writer_meta(nl_st_writer *w, const char *key, const char *value);
/* Writes the file atomically (nl_atomic_*): on any failure (NL_EIO, NL_ENOMEM, NL_EINTR when
 * interrupted between tensors) the file at path is as it was before. The writer stays usable. */
nl_status nl_st_writer_commit(nl_st_writer *w, const char *path);

/* One tensor's entry in an open file. */
typedef struct {
    char *name;
    char st_dtype[8];        /* as in the file: "F32", "I8", "F16", ... */
    nl_dtype dtype;          /* NL_DTYPE_COUNT for a valid safetensors dtype nnlab cannot load */
    int ndim;
    int64_t shape[NL_MAX_DIMS];
    uint64_t begin, end;     /* byte range within the data */
} nl_st_entry;

/* An open, validated file; tensors are read from it on demand. */
typedef struct nl_st_file nl_st_file;

/* Opens and validates path: header, JSON, every entry (dtype, shape, offsets against the file's
 * size, no overlap or hole) and the metadata (strings only). Returns a new file, or NULL with
 * NL_EIO (cannot open or read), NL_EFORMAT (a message naming the path and the problem) or
 * NL_ENOMEM. */
nl_st_file *nl_st_open(const char *path);
/* Closes the file. NULL is a no-op. */
void nl_st_close(nl_st_file *f);
const char *nl_st_path(const nl_st_file *f);
/* Tensors in the file, in header order (borrowed entries). */
int nl_st_count(const nl_st_file *f);
const nl_st_entry *nl_st_at(const nl_st_file *f, int i);
/* The entry named name, or NULL with NL_EFORMAT "<path>: missing tensor '<name>'". */
const nl_st_entry *nl_st_find(const nl_st_file *f, const char *name);
/* Reads tensor name into dst, which must have its dtype and shape (NL_EFORMAT naming the path,
 * the tensor and both shapes otherwise; NL_ETYPE for a dtype nnlab cannot load). dst may be on
 * any device and strided. NL_EIO if the file changed underneath, NL_EINTR if interrupted. */
nl_status nl_st_read(nl_st_file *f, const char *name, nl_tensor *dst);
/* Reads tensor name into a new CPU tensor (new reference), or NULL with the error set. */
nl_tensor *nl_st_get(nl_st_file *f, const char *name);
/* Metadata value of key (borrowed, valid while f is open), or NULL if absent. */
const char *nl_st_meta(const nl_st_file *f, const char *key);
int nl_st_meta_count(const nl_st_file *f);
/* The i-th metadata pair (borrowed). */
void nl_st_meta_at(const nl_st_file *f, int i, const char **key, const char **value);
/* The size in bytes of the file's data (after the header). */
uint64_t nl_st_data_size(const nl_st_file *f);

/* For the formats written on safetensors files (checkpoints, architectures). */

/* Checks that tensor name exists with dtype and shape; `needs` words the expectation in the
 * message ("expected", "the architecture needs"). NL_EFORMAT (NL_ETYPE for a dtype nnlab cannot
 * load) naming the path, the tensor and both shapes or dtypes otherwise. */
nl_status nl_st_check(const nl_st_file *f, const char *name, nl_dtype dtype, int ndim,
                      const int64_t *shape, const char *needs);
/* Sets NL_EFORMAT with the message "<path>: <problem>" and returns it. */
nl_status __attribute__((format(printf, 2, 3))) nl_st_bad_file(const char *path, const char *fmt, ...);
/* Whether JSON value j (a cJSON) is a whole number in [0, 2^53]; stores it in *out. */
struct cJSON;
bool nl_st_json_uint(const struct cJSON *j, uint64_t *out);
/* Grows the array *v (elements of size elem, capacity *cap) to hold at least need; false on
 * overflow or no memory (*v unchanged). */
bool nl_st_grow(void **v, int *cap, int need, size_t elem);

#endif
