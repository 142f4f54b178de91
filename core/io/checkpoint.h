/* checkpoint.h: checkpoints of modules (architecture + weights) and optimizers, stored as
 * safetensors files (safetensors.h); the architecture as JSON (core/io/arch.c). */
#ifndef NL_CHECKPOINT_H
#define NL_CHECKPOINT_H

#include "optim.h"
#include "safetensors.h"

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
