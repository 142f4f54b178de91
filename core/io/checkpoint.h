/* checkpoint.h: safetensors files (readable by Python's safetensors package): a generic writer and
 * a validating reader, and on them checkpoints of modules (architecture + weights) and optimizers. */
#ifndef NL_CHECKPOINT_H
#define NL_CHECKPOINT_H

#include "optim.h"

/* ---------------------------------------------------------------- safetensors ----------- */

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

/* ---------------------------------------------------------------- checkpoints ----------- */

/* Metadata keys nnlab writes. */
#define NL_CKPT_VERSION "nnlab.version" /* "1" */
#define NL_CKPT_ARCH "nnlab.arch"       /* the architecture as JSON text */
#define NL_CKPT_OPTIM "nnlab.optim"     /* optimizer kind, hyper-parameters and step count, JSON */

/* The architecture of m as JSON text: {"type": "Conv2d", "args": {"in": 3, ...}, "children":
 * [...]} (children for containers only). Returns a malloc'ed string (free()), or NULL (NL_ENOMEM). */
char *nl_checkpoint_arch_json(const nl_module *m);
/* Builds an untrained module from such JSON; ctx names the source in messages; its tensors may
 * take at most max_bytes in all (-1: no bound; a loader passes what its file can fill). New
 * reference, or NULL with NL_EFORMAT (bad JSON, unknown module type or argument, invalid
 * arguments, a network bigger than max_bytes). */
nl_module *nl_checkpoint_arch_build(const char *json, const char *ctx, int64_t max_bytes);

/* Adds net's architecture (metadata NL_CKPT_ARCH) and every parameter and buffer under its
 * PyTorch state_dict name: "weight" for a lone layer; "0.weight", "3.running_mean", "2.0.bias"
 * inside containers (the child's 0-based index). */
nl_status nl_checkpoint_add_module(nl_st_writer *w, nl_module *net);
/* Adds o's kind, hyper-parameters and step count (metadata NL_CKPT_OPTIM) and its state tensors
 * "optim.<param>.<state>" ("optim.0.weight.m", "optim.0.weight.momentum", with the parameter's
 * name as nl_checkpoint_add_module writes it), when it has any. */
nl_status nl_checkpoint_add_optim(nl_st_writer *w, nl_optim *o);

/* Saves net (and o's state unless o is NULL) with extra metadata: meta is NULL or a NULL-ended
 * list of key, value strings {"trainer.step", "1200", "rng.seed", "42", NULL}. Atomic: on failure
 * the previous file is intact. Errors as nl_st_writer_commit. */
nl_status nl_checkpoint_save(const char *path, nl_module *net, nl_optim *o,
                             const char *const *meta);
/* nl_checkpoint_save without an optimizer. */
nl_status nl_checkpoint_save_module(const char *path, nl_module *net, const char *const *meta);

/* Rebuilds the saved module (architecture and weights, in training mode, on the CPU) from an open
 * file. New reference, or NULL with NL_EFORMAT naming the path and the problem (no architecture,
 * unknown module type, a missing tensor, a tensor whose shape or dtype does not fit). */
nl_module *nl_checkpoint_module_from(nl_st_file *f);
/* nl_st_open + nl_checkpoint_module_from + nl_st_close. */
nl_module *nl_checkpoint_load_module(const char *path);
/* Restores o's hyper-parameters, step count and state from f (saved by nl_checkpoint_add_optim
 * for a net of the same architecture). Everything is validated and read before o changes: on
 * NL_EFORMAT (no or bad optimizer metadata, missing or misshapen state), NL_EINVAL (the file holds
 * another kind of optimizer) or a read error, o is as it was. */
nl_status nl_checkpoint_load_optim(nl_st_file *f, nl_optim *o);

#endif
