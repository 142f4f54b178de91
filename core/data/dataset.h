/* dataset.h: image data sets held as bytes (u8 [N, C, H, W] plus i32 labels), index views on
 * them, batch assembly (gather, normalise, augment), file formats and a background loader. */
#ifndef NL_DATASET_H
#define NL_DATASET_H

#include "nl.h"

/* ---------------------------------------------------------------- data sets ------------- */

/* A refcounted data set: a view (rows) on images and labels that views share. Images stay bytes
 * in memory (CIFAR-10's training set is 150 MiB, not 600); batches convert to f32 on demand.
 * Every field is read-only once made. */
typedef struct nl_dataset {
    int refcount;
    nl_tensor *images;  /* u8 [M, C, H, W], contiguous, CPU (shared by views) */
    nl_tensor *labels;  /* i32 [M], 0-based classes, contiguous, CPU (shared by views) */
    int64_t n;          /* samples in this view */
    int32_t *rows;      /* n indices into images/labels (owned) */
    int nclasses;
    char **classes;     /* nclasses names (owned) */
    char *name;         /* e.g. "cifar10-train" (owned) */
} nl_dataset;

/* A new data set over images (u8 [M, C, H, W]) and labels (i32 [M], 0-based, each below
 * nclasses), taking its own references to both; classes names the nclasses classes and name the
 * set (both copied). Errors (NULL returned): NL_ETYPE or NL_ESHAPE for tensors of the wrong kind,
 * NL_EINVAL for a label out of range (naming the sample) or nclasses outside 1..65536, NL_ENOMEM. */
nl_dataset *nl_dataset_new(nl_tensor *images, nl_tensor *labels, int nclasses,
                           const char *const *classes, const char *name);
nl_dataset *nl_dataset_retain(nl_dataset *ds);
/* Drops a reference; frees at zero (the pixels when no view is left). NULL is a no-op. */
void nl_dataset_release(nl_dataset *ds);

/* Samples from..to-1 (0-based, 0 <= from <= to <= n) as a new view sharing the pixels (new
 * reference), named "<name>[from+1:to]". NULL with NL_EINVAL for a bad range, or NL_ENOMEM. */
nl_dataset *nl_dataset_subset(nl_dataset *ds, int64_t from, int64_t to);
/* Splits ds at random (a permutation drawn from seed alone) into *a with round(fraction * n)
 * samples and *b with the rest, disjoint and together all of ds, each in ds's order. Both are
 * new references; on error (NL_EINVAL for fraction outside [0, 1], NL_ENOMEM) both are NULL. */
nl_status nl_dataset_split(nl_dataset *ds, double fraction, uint64_t seed, nl_dataset **a,
                           nl_dataset **b);

/* The label of sample i (0-based, i < n; 0-based class). */
int nl_dataset_label(const nl_dataset *ds, int64_t i);
/* Image i (0-based) as a new f32 tensor [C, H, W] with values byte / 255; NULL with NL_EINVAL
 * for i out of range, or NL_ENOMEM. */
nl_tensor *nl_dataset_get(const nl_dataset *ds, int64_t i);

/* Random decisions a sample's augmentation draws (counters per sample). */
#define NL_AUG_DRAWS 8

/* How nl_dataset_fill turns bytes into a batch. A zero-initialised spec gives byte / 255, no
 * augmentation and 0-based labels. Augmentation follows torchvision's order: random crop of the
 * image padded with `crop` zero pixels on each side (a shift by -crop..crop in x and y), then a
 * horizontal flip with probability 1/2, then normalisation, then cutout: a cutout x cutout square
 * (clipped at the borders) centred on a uniformly drawn pixel is set to 0 (DeVries & Taylor). */
typedef struct {
    const float *lut;       /* C x 256: the value of each byte per channel (nl_dataset_lut), or
                               NULL for byte / 255 */
    int crop, cutout;       /* 0: none */
    bool flip;
    uint64_t key;           /* sample k's draw d is nl_rng_u01_at(key, (first + k * stride) *
                               NL_AUG_DRAWS + d): the same key and first, the same batch */
    uint64_t first;
    uint64_t stride;        /* 0 means 1; a rank's shard of an epoch takes every N-th position */
    int32_t label_offset;   /* added to every label (1 for Lua's 1-based labels) */
} nl_fill_spec;

/* Fills x (f32 [n, C, H, W], contiguous CPU) and y (i32 [n], contiguous CPU) with samples
 * idx[0..n) (0-based positions in ds) transformed by spec. Touches no global state, so it may run
 * on any thread. NL_ESHAPE for x or y of the wrong shape or kind, NL_EINVAL for an index out of
 * range or a crop or cutout beyond the image; nothing is written then. */
nl_status nl_dataset_fill(const nl_dataset *ds, const int64_t *idx, int64_t n,
                          const nl_fill_spec *spec, nl_tensor *x, nl_tensor *y);

/* Writes the normalisation table lut[c * 256 + v] = (v / 255 - mean[c]) / std[c] for channels
 * channels; mean and std hold either channels values or one value for all. NL_EINVAL for a count
 * that is neither, or a std that is not positive and finite. */
nl_status nl_dataset_lut(float *lut, int channels, const double *mean, int nmean,
                         const double *std, int nstd);

/* ---------------------------------------------------------------- files ----------------- */

/* CIFAR-10's binary release from dir (data_batch_1..5.bin, test_batch.bin, batches.meta.txt:
 * records of one label byte then 1024 red, 1024 green and 1024 blue bytes, row-major). dir NULL
 * searches $NNLAB_DATA/cifar-10-batches-bin, then ./data/cifar-10-batches-bin. Both sets are new
 * references; on error both are NULL and the message names the file and the problem (NL_EIO for
 * a missing or unreadable file, with how to get the data when none was found; NL_EFORMAT for a
 * size that is not whole records or a label beyond the class list). */
nl_status nl_cifar10_load(const char *dir, nl_dataset **train, nl_dataset **test);

/* Writes train and test (images [3, 32, 32], at most 256 classes) to dir (created if missing) in
 * CIFAR-10's binary format: data_batch_1..5.bin holding train split in five (10,000 records each
 * for 50,000), test_batch.bin and batches.meta.txt, each file atomically. shuffle writes the
 * records of each set in a seeded random order (the order depends on seed alone), else in the
 * sets' order. NL_EINVAL for another image shape or class list, NL_EIO naming the file. */
nl_status nl_cifar_save(const char *dir, const nl_dataset *train, const nl_dataset *test,
                        bool shuffle, uint64_t seed);

/* MNIST or Fashion-MNIST (fashion) from dir's IDX files train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or with
 * ".gz". dir NULL: Fashion-MNIST's Debian location (NL_FASHION_MNIST_DIR). Images are [1, 28, 28]
 * (whatever size the files say). Both sets are new references; on error both are NULL and the
 * message names the file and the problem (missing, wrong magic, truncated, counts that differ, a
 * label above 9). */
#define NL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
nl_status nl_mnist_load(const char *dir, bool fashion, nl_dataset **train, nl_dataset **test);

/* Decodes an image file into RGB bytes (*pixels: h rows of w pixels of 3 bytes, malloc'd, the
 * caller frees). Returns NL_OK, or an error naming the file. Must be safe to call from several
 * threads at once. viz/image.h's nl_image_load_rgb is one. */
typedef nl_status (*nl_image_decoder)(const char *path, int *w, int *h, uint8_t **pixels);

/* A data set of the images under dir, one sub-folder per class (classes in sorted name order,
 * images in sorted file name order; names starting with '.' are skipped), decoded by decode and
 * resized bilinearly (pixel centres aligned, as PyTorch's align_corners=false; no antialiasing)
 * to width x height; width = height = 0 keeps the first image's size and requires it of all.
 * Images are [3, height, width]. New reference, or NULL with an error naming the file or folder
 * (an image that does not decode, an empty class folder, no class folders, NL_ENOMEM). */
nl_dataset *nl_image_folder_load(const char *dir, int width, int height,
                                 nl_image_decoder decode);

/* ---------------------------------------------------------------- loader ---------------- */

/* Options of a loader; nl_loader_opts_default() gives batch 64, shuffle, seed 1, no
 * normalisation, no augmentation, keep the last partial batch, 0-based labels. */
typedef struct {
    int64_t batch;
    bool shuffle, drop_last;
    uint64_t seed;
    const double *mean, *std;   /* per-channel normalisation (NULL: byte / 255) */
    int nmean, nstd;            /* channels, or 1 for all */
    int crop, cutout;           /* as nl_fill_spec */
    bool flip;
    int32_t label_offset;
    int shard, nshards;         /* data-parallel: this process takes positions shard, shard +
                                   nshards, ... of each epoch's order, padded by wrapping to a
                                   multiple of nshards (0 and 1: every sample) */
} nl_loader_opts;
nl_loader_opts nl_loader_opts_default(void);

/* Mini-batches of a data set, epoch after epoch, prepared by a background thread while the caller
 * trains on the previous one (double buffering). Epochs are numbered from 1. Epoch e visits the
 * samples in the order nl_permutation(nl_rng_hash(seed, e - 1)) (the Trainer's own shuffle, whose
 * epochs count from 0) or in order without shuffle; sample p of the epoch (0-based position) draws
 * its augmentation from key nl_rng_hash(~seed, e - 1), counters p * NL_AUG_DRAWS + d. So every
 * batch is a function of (seed, epoch, position) alone, whatever the timing. */
typedef struct nl_loader nl_loader;

/* A new loader over ds (it takes a reference), positioned at the start of epoch 1, with its first
 * batch already being prepared. NULL with NL_EINVAL (batch < 1, bad normalisation, crop or cutout
 * beyond the image, an empty data set), NL_ENOMEM or NL_EIO (no thread). */
nl_loader *nl_loader_new(nl_dataset *ds, const nl_loader_opts *opts);
/* Stops and joins the thread, then frees the loader and its buffers. NULL is a no-op. Batches
 * handed out stay valid (they are references). */
void nl_loader_free(nl_loader *l);

/* The next batch of the epoch: *x f32 [B, C, H, W] and *y i32 [B] (labels + label_offset), new
 * references. At the end of the epoch both are NULL (NL_OK) and the loader moves to the start of
 * the next epoch. A buffer is reused only when nobody else holds the batch handed out two calls
 * before; otherwise a fresh one is allocated. An error while preparing the batch is returned here
 * (with the thread's message) and the batch is prepared again on the next call. */
nl_status nl_loader_next(nl_loader *l, nl_tensor **x, nl_tensor **y);
/* Moves to batch `position` (0-based, at most nl_loader_batches) of epoch `epoch` (>= 1): a
 * checkpoint's state restores the same stream of batches. NL_EINVAL for a position out of range
 * or epoch 0, NL_ENOMEM. */
nl_status nl_loader_seek(nl_loader *l, uint64_t epoch, int64_t position);
/* The epoch and the position (the batches already handed out in it). */
void nl_loader_tell(const nl_loader *l, uint64_t *epoch, int64_t *position);
/* Batches per epoch, and samples per batch (the last may hold fewer). */
int64_t nl_loader_batches(const nl_loader *l);
int64_t nl_loader_batch_size(const nl_loader *l);
/* The data set (borrowed). */
nl_dataset *nl_loader_dataset(const nl_loader *l);

#endif
