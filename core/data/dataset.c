/* dataset.c: the data set object (bytes and labels shared by index views), subsets and random
 * splits, and batch assembly: gather, byte -> f32 through a per-channel table, augmentation. */
#include "dataset.h"
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frees a data set that holds no other references yet (or whose refcount reached zero). */
static void destroy(nl_dataset *ds)
{
    nl_tensor_release(ds->images);
    nl_tensor_release(ds->labels);
    if (ds->classes)
        for (int c = 0; c < ds->nclasses; c++) free(ds->classes[c]);
    free(ds->classes);
    free(ds->rows);
    free(ds->name);
    free(ds);
}

/* A data set over images and labels (retained) with room for n rows, its classes copied and the
 * given name; rows left for the caller. NULL with NL_ENOMEM. */
static nl_dataset *alloc_view(nl_tensor *images, nl_tensor *labels, int nclasses,
                              const char *const *classes, int64_t n, const char *name)
{
    nl_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) goto oom;
    ds->refcount = 1;
    ds->images = nl_tensor_retain(images);
    ds->labels = nl_tensor_retain(labels);
    ds->n = n;
    ds->nclasses = nclasses;
    ds->rows = malloc((size_t)(n ? n : 1) * sizeof *ds->rows);
    ds->classes = calloc((size_t)nclasses, sizeof *ds->classes);
    ds->name = strdup(name);
    if (!ds->rows || !ds->classes || !ds->name) goto oom;
    for (int c = 0; c < nclasses; c++)
        if (!(ds->classes[c] = strdup(classes[c]))) goto oom;
    return ds;
oom:
    if (ds) destroy(ds);
    nl_seterr(NL_ENOMEM, "data set '%s': out of memory", name);
    return NULL;
}

nl_dataset *nl_dataset_new(nl_tensor *images, nl_tensor *labels, int nclasses,
                           const char *const *classes, const char *name)
{
    char s[NL_MAX_DIMS * 24];
    if (images->dtype != NL_U8 || images->ndim != 4 || !nl_tensor_is_contiguous(images) ||
        nl_tensor_device(images) != NL_CPU) {
        nl_seterr(NL_ETYPE, "data set '%s': images must be a contiguous u8 [N, C, H, W] CPU tensor, "
                  "got %s %s", name, nl_dtype_info(images->dtype)->name,
                  nl_shape_str(s, sizeof s, images->ndim, images->shape));
        return NULL;
    }
    if (labels->dtype != NL_I32 || labels->ndim != 1 || !nl_tensor_is_contiguous(labels) ||
        nl_tensor_device(labels) != NL_CPU || labels->shape[0] != images->shape[0]) {
        nl_seterr(NL_ESHAPE, "data set '%s': labels must be a contiguous i32 [%lld] CPU tensor, "
                  "got %s %s", name, (long long)images->shape[0],
                  nl_dtype_info(labels->dtype)->name,
                  nl_shape_str(s, sizeof s, labels->ndim, labels->shape));
        return NULL;
    }
    if (images->shape[0] > INT32_MAX) {
        nl_seterr(NL_EINVAL, "data set '%s': %lld samples are too many", name,
                  (long long)images->shape[0]);
        return NULL;
    }
    if (nclasses < 1 || nclasses > 65536) {
        nl_seterr(NL_EINVAL, "data set '%s': %d classes (expected 1 to 65536)", name, nclasses);
        return NULL;
    }
    const int32_t *py = nl_tensor_data(labels);
    for (int64_t i = 0; i < labels->shape[0]; i++)
        if (py[i] < 0 || py[i] >= nclasses) {
            nl_seterr(NL_EINVAL, "data set '%s': sample %lld has label %d, expected 0 to %d "
                      "(0-based)", name, (long long)i, py[i], nclasses - 1);
            return NULL;
        }
    nl_dataset *ds = alloc_view(images, labels, nclasses, classes, images->shape[0], name);
    if (!ds) return NULL;
    for (int64_t i = 0; i < ds->n; i++) ds->rows[i] = (int32_t)i;
    return ds;
}

nl_dataset *nl_dataset_retain(nl_dataset *ds)
{
    ds->refcount++;
    return ds;
}

void nl_dataset_release(nl_dataset *ds)
{
    if (ds && --ds->refcount == 0) destroy(ds);
}

/* A view of ds holding ds's samples at positions pos[0..n) (NULL: from, from + 1, ...). */
static nl_dataset *view(const nl_dataset *ds, const int32_t *pos, int64_t from, int64_t n,
                        const char *name)
{
    nl_dataset *v = alloc_view(ds->images, ds->labels, ds->nclasses,
                               (const char *const *)ds->classes, n, name);
    if (!v) return NULL;
    for (int64_t i = 0; i < n; i++) v->rows[i] = ds->rows[pos ? pos[i] : from + i];
    return v;
}

nl_dataset *nl_dataset_subset(nl_dataset *ds, int64_t from, int64_t to)
{
    if (from < 0 || to < from || to > ds->n) {
        nl_seterr(NL_EINVAL, "subset: range %lld..%lld (0-based, end excluded) is outside 0..%lld",
                  (long long)from, (long long)to, (long long)ds->n);
        return NULL;
    }
    char name[256];
    snprintf(name, sizeof name, "%s[%lld:%lld]", ds->name, (long long)from + 1, (long long)to);
    return view(ds, NULL, from, to - from, name);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

nl_status nl_dataset_split(nl_dataset *ds, double fraction, uint64_t seed, nl_dataset **a,
                           nl_dataset **b)
{
    *a = *b = NULL;
    if (!(fraction >= 0 && fraction <= 1))
        return nl_seterr(NL_EINVAL, "split: fraction %g is outside 0..1", fraction);
    int64_t na = (int64_t)llround(fraction * (double)ds->n);
    nl_tensor *perm = nl_tensor_empty(NL_I32, 1, &ds->n, NL_CPU);
    if (!perm) return nl_errcode();
    nl_status s = nl_permutation(perm, seed);
    int32_t *p = nl_tensor_data(perm);
    if (s == NL_OK) { /* each part keeps ds's order: sort the positions drawn for it */
        qsort(p, (size_t)na, sizeof *p, cmp_i32);
        qsort(p + na, (size_t)(ds->n - na), sizeof *p, cmp_i32);
    }
    char name[256];
    snprintf(name, sizeof name, "%s/split1", ds->name);
    if (s == NL_OK && !(*a = view(ds, p, 0, na, name))) s = nl_errcode();
    snprintf(name, sizeof name, "%s/split2", ds->name);
    if (s == NL_OK && !(*b = view(ds, p + na, 0, ds->n - na, name))) s = nl_errcode();
    nl_tensor_release(perm);
    if (s != NL_OK) {
        nl_dataset_release(*a);
        *a = NULL;
    }
    return s;
}

int nl_dataset_label(const nl_dataset *ds, int64_t i)
{
    return ((const int32_t *)nl_tensor_data(ds->labels))[ds->rows[i]];
}

nl_tensor *nl_dataset_get(const nl_dataset *ds, int64_t i)
{
    if (i < 0 || i >= ds->n) {
        nl_seterr(NL_EINVAL, "data set '%s': sample %lld out of range (0 to %lld, 0-based)",
                  ds->name, (long long)i, (long long)ds->n - 1);
        return NULL;
    }
    int64_t one = 1, shape[4];
    memcpy(shape, ds->images->shape, sizeof shape);
    shape[0] = 1;
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, shape, NL_CPU);
    nl_tensor *y = x ? nl_tensor_empty(NL_I32, 1, &one, NL_CPU) : NULL;
    nl_fill_spec plain = {0};
    nl_status s = y ? nl_dataset_fill(ds, &i, 1, &plain, x, y) : nl_errcode();
    nl_tensor *img = s == NL_OK ? nl_tensor_reshape(x, 3, shape + 1) : NULL;
    nl_tensor_release(y);
    nl_tensor_release(x);
    return img;
}

nl_status nl_dataset_lut(float *lut, int channels, const double *mean, int nmean,
                         const double *std, int nstd)
{
    if ((nmean != 1 && nmean != channels) || (nstd != 1 && nstd != channels))
        return nl_seterr(NL_EINVAL, "normalize: %d means and %d stds for %d channels (give one "
                         "value or one per channel)", nmean, nstd, channels);
    for (int c = 0; c < channels; c++) {
        double m = mean[nmean == 1 ? 0 : c], sd = std[nstd == 1 ? 0 : c];
        if (!(sd > 0 && isfinite(sd)) || !isfinite(m))
            return nl_seterr(NL_EINVAL, "normalize: channel %d has mean %g and std %g (std must "
                             "be positive)", c + 1, m, sd);
        for (int v = 0; v < 256; v++) lut[c * 256 + v] = (float)(((double)v / 255.0 - m) / sd);
    }
    return NL_OK;
}

/* One sample: out[c][y][x] = lut[c][in[c][y + dy][fx(x) + dx]], with fx flipping x when asked and
 * pixels outside the image reading byte 0 (zero padding), then the cutout square zeroed. */
static void fill_one(const uint8_t *in, float *out, int C, int H, int W, const float *lut,
                     int lut_stride, const nl_fill_spec *sp, uint64_t pos)
{
    float u[NL_AUG_DRAWS];
    for (int d = 0; d < NL_AUG_DRAWS; d++) u[d] = nl_rng_u01_at(sp->key, pos * NL_AUG_DRAWS + d);
    int span = 2 * sp->crop + 1;
    int dx = sp->crop ? (int)(u[0] * (float)span) - sp->crop : 0;
    int dy = sp->crop ? (int)(u[1] * (float)span) - sp->crop : 0;
    bool flip = sp->flip && u[2] < 0.5f;
    for (int c = 0; c < C; c++) {
        const float *t = lut + c * lut_stride;
        const uint8_t *src = in + (size_t)c * (size_t)(H * W);
        float *dst = out + (size_t)c * (size_t)(H * W);
        for (int y = 0; y < H; y++) {
            int sy = y + dy;
            float *row = dst + (size_t)y * (size_t)W;
            if (sy < 0 || sy >= H) {
                for (int x = 0; x < W; x++) row[x] = t[0];
                continue;
            }
            const uint8_t *srow = src + (size_t)sy * (size_t)W;
            for (int x = 0; x < W; x++) {
                int sx = (flip ? W - 1 - x : x) + dx;
                row[x] = sx >= 0 && sx < W ? t[srow[sx]] : t[0];
            }
        }
    }
    if (!sp->cutout) return;
    int cx = (int)(u[3] * (float)W), cy = (int)(u[4] * (float)H);
    int x0 = cx - sp->cutout / 2, y0 = cy - sp->cutout / 2;
    int x1 = x0 + sp->cutout, y1 = y0 + sp->cutout;
    x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > W ? W : x1, y1 = y1 > H ? H : y1;
    for (int c = 0; c < C; c++)
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) out[((size_t)c * (size_t)H + (size_t)y) * (size_t)W + (size_t)x] = 0;
}

nl_status nl_dataset_fill(const nl_dataset *ds, const int64_t *idx, int64_t n,
                          const nl_fill_spec *spec, nl_tensor *x, nl_tensor *y)
{
    const int64_t *ish = ds->images->shape;
    int C = (int)ish[1], H = (int)ish[2], W = (int)ish[3];
    bool xok = x->dtype == NL_F32 && x->ndim == 4 && x->shape[0] == n && x->shape[1] == C &&
               x->shape[2] == H && x->shape[3] == W;
    bool yok = y->dtype == NL_I32 && y->ndim == 1 && y->shape[0] == n;
    if (!xok || !yok || !nl_tensor_is_contiguous(x) || !nl_tensor_is_contiguous(y) ||
        nl_tensor_device(x) != NL_CPU || nl_tensor_device(y) != NL_CPU) {
        char xs[NL_MAX_DIMS * 24], ys[NL_MAX_DIMS * 24];
        return nl_seterr(NL_ESHAPE, "batch: expected contiguous CPU f32 [%lld, %d, %d, %d] and "
                         "i32 [%lld], got %s %s and %s %s", (long long)n, C, H, W, (long long)n,
                         nl_dtype_info(x->dtype)->name, nl_shape_str(xs, sizeof xs, x->ndim, x->shape),
                         nl_dtype_info(y->dtype)->name, nl_shape_str(ys, sizeof ys, y->ndim, y->shape));
    }
    if (spec->crop < 0 || spec->crop > W || spec->crop > H || spec->cutout < 0 ||
        spec->cutout > W || spec->cutout > H)
        return nl_seterr(NL_EINVAL, "augment: crop %d and cutout %d must be between 0 and the "
                         "image size %dx%d", spec->crop, spec->cutout, W, H);
    for (int64_t k = 0; k < n; k++)
        if (idx[k] < 0 || idx[k] >= ds->n)
            return nl_seterr(NL_EINVAL, "batch: sample %lld out of range (0 to %lld, 0-based)",
                             (long long)idx[k], (long long)ds->n - 1);
    float plain[256];
    static const double zero = 0, one = 1;
    const float *lut = spec->lut;
    if (!lut) {
        nl_dataset_lut(plain, 1, &zero, 1, &one, 1);
        lut = plain;
    }
    size_t chw = (size_t)C * (size_t)H * (size_t)W;
    const uint8_t *pix = nl_tensor_data(ds->images);
    const int32_t *labels = nl_tensor_data(ds->labels);
    float *px = nl_tensor_f32(x);
    int32_t *py = nl_tensor_data(y);
    for (int64_t k = 0; k < n; k++) {
        int32_t row = ds->rows[idx[k]];
        fill_one(pix + (size_t)row * chw, px + (size_t)k * chw, C, H, W, lut,
                 spec->lut ? 256 : 0, spec, spec->first + (uint64_t)k * (spec->stride ? spec->stride : 1));
        py[k] = labels[row] + spec->label_offset;
    }
    return NL_OK;
}
