/* test_data.c: data sets (views, splits, batches, normalisation, augmentation), CIFAR-10 binary
 * and IDX files and image folders written here (good and corrupt), the CIFAR writer's round trip,
 * and the background loader (order, determinism, seeking, buffer safety, speed). */
#include "canvas.h"
#include "dataset.h"
#include "image.h"
#include "testhelp.h"
#include "train.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[64];

/* A path under the temporary directory, in one of a few static buffers. */
__attribute__((format(printf, 1, 2)))
static const char *tmp(const char *fmt, ...)
{
    static char bufs[8][600];
    static int next;
    char *b = bufs[next++ % 8];
    char rel[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, rel);
    return b;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL, "cannot create %s", path);
    if (!fp) return;
    if (n) fwrite(data, 1, n, fp);
    fclose(fp);
}

/* The whole file (malloc'd) and its size; NULL when unreadable. */
static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    if (b && fread(b, 1, *n, fp) != *n) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    return b;
}

static bool same_file(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *pa = read_file(a, &na), *pb = read_file(b, &nb);
    bool same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* The error message contains every one of the given pieces. */
static bool says(const char *a, const char *b)
{
    return strstr(nl_errmsg(), a) && (!b || strstr(nl_errmsg(), b));
}

/* Pixel value of a synthetic set: distinct for (sample, channel, y, x) within small sets. */
static uint8_t pattern(int64_t i, int c, int y, int x)
{
    return (uint8_t)(i * 37 + c * 64 + y * 8 + x + 1);
}

/* A synthetic data set of n images C x H x W, label i % nclasses. */
static nl_dataset *make_set(int64_t n, int C, int H, int W, int nclasses)
{
    int64_t shape[4] = {n, C, H, W};
    nl_tensor *images = nl_tensor_empty(NL_U8, 4, shape, NL_CPU);
    nl_tensor *labels = nl_tensor_empty(NL_I32, 1, &n, NL_CPU);
    uint8_t *p = nl_tensor_data(images);
    for (int64_t i = 0; i < n; i++) {
        ((int32_t *)nl_tensor_data(labels))[i] = (int32_t)(i % nclasses);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) *p++ = pattern(i, c, y, x);
    }
    const char *names[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
    nl_dataset *ds = nl_dataset_new(images, labels, nclasses, names, "synthetic");
    nl_tensor_release(images);
    nl_tensor_release(labels);
    return ds;
}

/* Which synthetic sample (0-based, of the first 64) a batch entry of C x H x W floats in byte/255
 * form shows, or -1. */
static int64_t which_sample(const float *img)
{
    int v = (int)(img[0] * 255.0f + 0.5f);
    for (int64_t i = 0; i < 64; i++)
        if (pattern(i, 0, 0, 0) == v) return i;
    return -1;
}

/* ---------------------------------------------------------------- data sets ------------- */

static void test_dataset(void)
{
    nl_dataset *ds = make_set(10, 3, 4, 5, 3);
    CHECK(ds && ds->n == 10 && ds->nclasses == 3 && !strcmp(ds->classes[2], "two"), "made");
    CHECK(nl_dataset_label(ds, 4) == 1, "label of sample 4");

    /* get: byte / 255 as [C, H, W] */
    nl_tensor *img = nl_dataset_get(ds, 7);
    CHECK(img && img->ndim == 3 && img->shape[0] == 3 && img->shape[1] == 4 && img->shape[2] == 5, "get shape");
    if (img) CHECK_CLOSE(nl_tensor_f32(img)[1 * 20 + 2 * 5 + 3], pattern(7, 1, 2, 3) / 255.0, 1e-7, 0);
    nl_tensor_release(img);
    CHECK(!nl_dataset_get(ds, 10) && nl_errcode() == NL_EINVAL && says("out of range", NULL), "get past the end");

    /* bad constructions */
    int64_t s4[4] = {2, 1, 2, 2}, n2 = 2;
    nl_tensor *f = nl_tensor_zeros(NL_F32, 4, s4, NL_CPU), *u = nl_tensor_zeros(NL_U8, 4, s4, NL_CPU);
    nl_tensor *lab = nl_tensor_zeros(NL_I32, 1, &n2, NL_CPU);
    const char *names[] = {"a", "b"};
    CHECK(!nl_dataset_new(f, lab, 2, names, "x") && nl_errcode() == NL_ETYPE, "f32 images refused");
    ((int32_t *)nl_tensor_data(lab))[1] = 2;
    CHECK(!nl_dataset_new(u, lab, 2, names, "x") && nl_errcode() == NL_EINVAL && says("sample 1", "label 2"),
          "label out of range: %s", nl_errmsg());
    nl_tensor_release(f);
    nl_tensor_release(u);
    nl_tensor_release(lab);

    /* subset: a view on the same pixels */
    nl_dataset *sub = nl_dataset_subset(ds, 2, 6);
    CHECK(sub && sub->n == 4 && sub->images == ds->images && nl_dataset_label(sub, 0) == 2, "subset");
    nl_dataset *subsub = sub ? nl_dataset_subset(sub, 1, 3) : NULL;
    CHECK(subsub && subsub->n == 2 && subsub->rows[0] == 3 && subsub->rows[1] == 4, "subset of a subset");
    CHECK(!nl_dataset_subset(ds, 5, 11) && nl_errcode() == NL_EINVAL, "subset beyond the end");
    CHECK(!nl_dataset_subset(ds, 6, 5) && nl_errcode() == NL_EINVAL, "reversed subset");
    nl_dataset_release(subsub);
    nl_dataset_release(sub);

    /* split: sizes, disjoint, complete, sorted, seeded */
    nl_dataset *a, *b, *a2, *b2, *a3, *b3;
    CHECK(nl_dataset_split(ds, 0.3, 7, &a, &b) == NL_OK && a->n == 3 && b->n == 7, "split sizes");
    int seen[10] = {0};
    bool sorted = true;
    for (int64_t i = 0; i < a->n; i++) seen[a->rows[i]]++, sorted &= i == 0 || a->rows[i] > a->rows[i - 1];
    for (int64_t i = 0; i < b->n; i++) seen[b->rows[i]]++, sorted &= i == 0 || b->rows[i] > b->rows[i - 1];
    bool once = true;
    for (int i = 0; i < 10; i++) once &= seen[i] == 1;
    CHECK(once, "every sample in exactly one part");
    CHECK(sorted, "each part keeps the set's order");
    CHECK(nl_dataset_split(ds, 0.3, 7, &a2, &b2) == NL_OK && !memcmp(a->rows, a2->rows, 3 * sizeof *a->rows),
          "same seed, same split");
    bool differs = false;
    for (uint64_t seed = 8; seed < 12 && !differs; seed++) {
        CHECK(nl_dataset_split(ds, 0.3, seed, &a3, &b3) == NL_OK, "split");
        differs = memcmp(a->rows, a3->rows, 3 * sizeof *a->rows) != 0;
        nl_dataset_release(a3);
        nl_dataset_release(b3);
    }
    CHECK(differs, "other seeds, other splits");
    CHECK(nl_dataset_split(ds, 1.5, 1, &a3, &b3) == NL_EINVAL && !a3 && !b3, "fraction 1.5 refused");
    CHECK(nl_dataset_split(ds, 1.0, 1, &a3, &b3) == NL_OK && a3->n == 10 && b3->n == 0, "fraction 1");
    nl_dataset_release(a3);
    nl_dataset_release(b3);
    /* a view outlives its parent: the pixels are shared by reference */
    nl_dataset_release(ds);
    img = nl_dataset_get(b, 0);
    CHECK(img && nl_tensor_f32(img)[0] == pattern(b->rows[0], 0, 0, 0) / 255.0f, "view after the parent is gone");
    nl_tensor_release(img);
    nl_dataset_release(a);
    nl_dataset_release(b);
    nl_dataset_release(a2);
    nl_dataset_release(b2);
}

/* ---------------------------------------------------------------- batches --------------- */

static void test_fill(void)
{
    nl_dataset *ds = make_set(6, 3, 4, 4, 3);
    int64_t idx[3] = {5, 0, 2}, xs[4] = {3, 3, 4, 4}, n = 3;
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, xs, NL_CPU), *y = nl_tensor_empty(NL_I32, 1, &n, NL_CPU);
    float lut[3 * 256];
    double mean[3] = {0.5, 0.4, 0.3}, sd[3] = {0.2, 0.25, 0.5};
    CHECK(nl_dataset_lut(lut, 3, mean, 3, sd, 3) == NL_OK, "lut");
    nl_fill_spec spec = {.lut = lut, .label_offset = 1};
    CHECK(nl_dataset_fill(ds, idx, 3, &spec, x, y) == NL_OK, "fill");
    const float *px = nl_tensor_f32(x);
    bool ok = true;
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 16; p++) {
                double want = (pattern(idx[k], c, p / 4, p % 4) / 255.0 - mean[c]) / sd[c];
                ok &= fabs(px[((k * 3) + c) * 16 + p] - want) < 1e-5;
            }
    CHECK(ok, "normalised values (v / 255 - mean) / std per channel");
    const int32_t *py = nl_tensor_data(y);
    CHECK(py[0] == 5 % 3 + 1 && py[1] == 1 && py[2] == 3, "labels with offset 1: %d %d %d", py[0], py[1], py[2]);

    double one = 0.5, zero_sd = 0;
    CHECK(nl_dataset_lut(lut, 3, mean, 2, sd, 3) == NL_EINVAL && says("2 means", NULL), "two means for three channels");
    CHECK(nl_dataset_lut(lut, 3, &one, 1, &zero_sd, 1) == NL_EINVAL && says("positive", NULL), "std 0");

    int64_t bad[1] = {6};
    CHECK(nl_dataset_fill(ds, bad, 1, &spec, x, y) == NL_ESHAPE, "x of the wrong batch size");
    CHECK(nl_dataset_fill(ds, (int64_t[]){0, 6, 1}, 3, &spec, x, y) == NL_EINVAL && says("out of range", NULL),
          "index out of range");
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_dataset_release(ds);
}

/* The value (byte/255) a plain fill gives pixel (c, y, x) of sample i, or 0 outside the image. */
static float plain(int64_t i, int c, int y, int x, int H, int W)
{
    return y < 0 || y >= H || x < 0 || x >= W ? 0.0f : pattern(i, c, y, x) / 255.0f;
}

static void test_augment(void)
{
    enum { N = 48, C = 3, H = 8, W = 8 };
    nl_dataset *ds = make_set(N, C, H, W, 4);
    int64_t idx[N], xs[4] = {N, C, H, W}, n = N;
    for (int k = 0; k < N; k++) idx[k] = k;
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, xs, NL_CPU), *y = nl_tensor_empty(NL_I32, 1, &n, NL_CPU);
    nl_tensor *x2 = nl_tensor_empty(NL_F32, 4, xs, NL_CPU);
    size_t bytes = sizeof(float) * N * C * H * W;
    const uint64_t key = 1234, first = 100;

    /* crop: a shift by -2..2 with zero padding, drawn per sample */
    nl_fill_spec crop = {.crop = 2, .key = key, .first = first};
    CHECK(nl_dataset_fill(ds, idx, N, &crop, x, y) == NL_OK, "crop");
    const float *p = nl_tensor_f32(x);
    bool exact = true;
    int shifted = 0, seen_dx[5] = {0};
    for (int k = 0; k < N; k++) {
        uint64_t c0 = (first + k) * NL_AUG_DRAWS;
        int dx = (int)(nl_rng_u01_at(key, c0) * 5) - 2, dy = (int)(nl_rng_u01_at(key, c0 + 1) * 5) - 2;
        shifted += dx || dy;
        seen_dx[dx + 2]++;
        for (int c = 0; c < C; c++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++)
                    exact &= p[((k * C + c) * H + yy) * W + xx] == plain(k, c, yy + dy, xx + dx, H, W);
    }
    CHECK(exact, "each crop is the image shifted by its drawn offset, zero outside");
    CHECK(shifted > N / 2, "crops shift (%d of %d shifted)", shifted, N);
    CHECK(seen_dx[0] && seen_dx[4], "shifts reach both extremes");
    CHECK(nl_dataset_fill(ds, idx, N, &crop, x2, y) == NL_OK && !memcmp(p, nl_tensor_f32(x2), bytes),
          "the same key gives the same crops");
    crop.key = key + 1;
    CHECK(nl_dataset_fill(ds, idx, N, &crop, x2, y) == NL_OK && memcmp(p, nl_tensor_f32(x2), bytes),
          "another key, other crops");

    /* flip: mirrored in x with probability 1/2 */
    nl_fill_spec flip = {.flip = true, .key = key, .first = first};
    CHECK(nl_dataset_fill(ds, idx, N, &flip, x, y) == NL_OK, "flip");
    int flipped = 0;
    exact = true;
    for (int k = 0; k < N; k++) {
        bool f = nl_rng_u01_at(key, (first + k) * NL_AUG_DRAWS + 2) < 0.5f;
        flipped += f;
        for (int c = 0; c < C; c++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++)
                    exact &= p[((k * C + c) * H + yy) * W + xx] == plain(k, c, yy, f ? W - 1 - xx : xx, H, W);
    }
    CHECK(exact, "flipped images are mirrored, the others untouched");
    CHECK(flipped > N / 5 && flipped < N - N / 5, "about half flip (%d of %d)", flipped, N);

    /* cutout: a square of zeros (after normalisation) centred on a drawn pixel, clipped */
    float lut[256];
    double m = -1, s = 1; /* every pixel >= 1 after normalisation, so zeros are the cutout */
    nl_dataset_lut(lut, 1, &m, 1, &s, 1);
    nl_tensor_release(x);
    nl_tensor_release(x2);
    nl_dataset_release(ds);
    ds = make_set(N, 1, H, W, 4);
    int64_t xs1[4] = {N, 1, H, W};
    x = nl_tensor_empty(NL_F32, 4, xs1, NL_CPU);
    nl_fill_spec cut = {.lut = lut, .cutout = 4, .key = key, .first = first};
    CHECK(nl_dataset_fill(ds, idx, N, &cut, x, y) == NL_OK, "cutout");
    p = nl_tensor_f32(x);
    exact = true;
    int clipped = 0;
    for (int k = 0; k < N; k++) {
        uint64_t c0 = (first + k) * NL_AUG_DRAWS;
        int cx = (int)(nl_rng_u01_at(key, c0 + 3) * W), cy = (int)(nl_rng_u01_at(key, c0 + 4) * H);
        int zeros = 0;
        for (int yy = 0; yy < H; yy++)
            for (int xx = 0; xx < W; xx++) {
                bool in = xx >= cx - 2 && xx < cx + 2 && yy >= cy - 2 && yy < cy + 2;
                float v = p[(k * H + yy) * W + xx];
                exact &= in ? v == 0 : v == lut[pattern(k, 0, yy, xx)];
                zeros += in;
            }
        clipped += zeros < 16;
    }
    CHECK(exact, "the zeroed pixels are exactly the drawn square");
    CHECK(clipped > 0 && clipped < N, "some squares are clipped at the border, some are whole");
    crop.crop = 9;
    CHECK(nl_dataset_fill(ds, idx, N, &crop, x, y) == NL_EINVAL, "a crop beyond the image");
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_dataset_release(ds);
}

/* ---------------------------------------------------------------- CIFAR-10 -------------- */

static const char *meta10 = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";

/* Writes a CIFAR batch file of n records: record r has label (base + r) % 10 and pixels
 * pattern(base + r, ...). */
static void write_cifar_batch(const char *path, int base, int n)
{
    unsigned char *buf = malloc((size_t)n * 3073);
    for (int r = 0; r < n; r++) {
        unsigned char *rec = buf + (size_t)r * 3073;
        rec[0] = (unsigned char)((base + r) % 10);
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 1024; p++) rec[1 + c * 1024 + p] = pattern(base + r, c, p / 32, p % 32);
    }
    write_file(path, buf, (size_t)n * 3073);
    free(buf);
}

/* A CIFAR folder tmp/<name>/ with five train batches of two records and a test batch of four. */
static const char *write_cifar(const char *name)
{
    const char *dir = tmp("%s", name);
    mkdir(dir, 0777);
    for (int i = 0; i < 5; i++) write_cifar_batch(tmp("%s/data_batch_%d.bin", name, i + 1), 2 * i, 2);
    write_cifar_batch(tmp("%s/test_batch.bin", name), 100, 4);
    write_file(tmp("%s/batches.meta.txt", name), meta10, strlen(meta10));
    return dir;
}

/* Loading dir fails with code and a message holding a and b; no set is returned. */
static void cifar_fails(const char *dir, nl_status code, const char *a, const char *b)
{
    nl_dataset *train = (nl_dataset *)1, *test = (nl_dataset *)1;
    nl_status s = nl_cifar10_load(dir, &train, &test);
    CHECK(s == code && !train && !test && says(a, b), "%s: got %s '%s', expected %s with '%s'", dir,
          nl_status_name(s), nl_errmsg(), nl_status_name(code), a);
}

static void test_cifar(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s", write_cifar("cifar"));
    nl_dataset *train, *test;
    CHECK(nl_cifar10_load(dir, &train, &test) == NL_OK, "load: %s", nl_errmsg());
    if (!train) return;
    CHECK(train->n == 10 && test->n == 4 && train->nclasses == 10, "sizes %lld %lld", (long long)train->n,
          (long long)test->n);
    CHECK(!strcmp(train->classes[9], "truck") && !strcmp(test->classes[0], "airplane"), "class names");
    CHECK(nl_dataset_label(train, 7) == 7 && nl_dataset_label(test, 1) == 101 % 10, "labels");
    const uint8_t *px = nl_tensor_data(train->images);
    CHECK(px[(size_t)5 * 3072 + 1024 + 33] == pattern(5, 1, 1, 1), "pixels: planes R, G, B, row-major");

    /* round trip: unshuffled save reproduces the files byte for byte */
    CHECK(nl_cifar_save(tmp("out1"), train, test, false, 1) == NL_OK, "save: %s", nl_errmsg());
    bool same = true;
    for (int i = 1; i <= 5; i++) {
        char a[64];
        snprintf(a, sizeof a, "data_batch_%d.bin", i);
        same &= same_file(tmp("cifar/%s", a), tmp("out1/%s", a));
    }
    same &= same_file(tmp("cifar/test_batch.bin"), tmp("out1/test_batch.bin"));
    same &= same_file(tmp("cifar/batches.meta.txt"), tmp("out1/batches.meta.txt"));
    CHECK(same, "save -> files identical to the originals");

    /* shuffled save: a seeded order; reading it back gives the same samples */
    CHECK(nl_cifar_save(tmp("out2"), train, test, true, 5) == NL_OK, "shuffled save");
    CHECK(nl_cifar_save(tmp("out3"), train, test, true, 5) == NL_OK, "shuffled save again");
    CHECK(nl_cifar_save(tmp("out4"), train, test, true, 6) == NL_OK, "another seed");
    CHECK(same_file(tmp("out2/data_batch_3.bin"), tmp("out3/data_batch_3.bin")), "same seed, same order");
    bool all_same = true;
    for (int i = 1; i <= 5; i++) {
        char a[64];
        snprintf(a, sizeof a, "data_batch_%d.bin", i);
        all_same &= same_file(tmp("out2/%s", a), tmp("out4/%s", a));
    }
    CHECK(!all_same, "another seed, another order");
    nl_dataset *tr2, *te2;
    CHECK(nl_cifar10_load(tmp("out2"), &tr2, &te2) == NL_OK, "read the shuffled files");
    if (tr2) {
        int found[10] = {0};
        bool moved = false;
        for (int64_t i = 0; i < 10; i++) {
            const uint8_t *img = (const uint8_t *)nl_tensor_data(tr2->images) + (size_t)i * 3072;
            for (int j = 0; j < 10; j++)
                if (!memcmp(img, px + (size_t)j * 3072, 3072) && nl_dataset_label(tr2, i) == j % 10) found[j]++;
            moved |= memcmp(img, px + (size_t)i * 3072, 3072) != 0;
        }
        bool each = true;
        for (int j = 0; j < 10; j++) each &= found[j] == 1;
        CHECK(each && moved, "every record once, with its label, in a new order");
        nl_dataset_release(tr2);
        nl_dataset_release(te2);
    }

    /* $NNLAB_DATA is searched when no folder is given */
    mkdir(tmp("env"), 0777);
    rename(tmp("out1"), tmp("env/cifar-10-batches-bin"));
    setenv("NNLAB_DATA", tmp("env"), 1);
    nl_dataset *tr3 = NULL, *te3 = NULL;
    CHECK(nl_cifar10_load(NULL, &tr3, &te3) == NL_OK && tr3 && tr3->n == 10, "found through $NNLAB_DATA");
    nl_dataset_release(tr3);
    nl_dataset_release(te3);
    /* ... and, when absent, the message says how to get the data */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd");
    setenv("NNLAB_DATA", tmp("nowhere"), 1);
    CHECK(chdir(tmpdir) == 0, "chdir");
    cifar_fails(NULL, NL_EIO, "make data", "cifar-10-binary.tar.gz");
    CHECK(chdir(cwd) == 0, "chdir back");
    unsetenv("NNLAB_DATA");

    /* a set that is not 3x32x32 cannot be written as CIFAR */
    nl_dataset *small = make_set(4, 3, 8, 8, 2);
    CHECK(nl_cifar_save(tmp("out5"), small, small, true, 1) == NL_EINVAL && says("3x32x32", NULL), "not 3x32x32");
    nl_dataset_release(small);
    nl_dataset_release(train);
    nl_dataset_release(test);

    /* corrupt folders: each fails naming the file and the problem */
    write_cifar("trunc");
    write_cifar_batch(tmp("trunc/data_batch_3.bin"), 4, 2);
    truncate(tmp("trunc/data_batch_3.bin"), 3073 * 2 - 100);
    cifar_fails(tmp("trunc"), NL_EFORMAT, "data_batch_3.bin", "whole number");

    write_cifar("label");
    unsigned char rec[3073] = {10};
    FILE *fp = fopen(tmp("label/test_batch.bin"), "r+b");
    if (fp) {
        fseek(fp, 3073 * 2, SEEK_SET);
        fwrite(rec, 1, 1, fp);
        fclose(fp);
    }
    cifar_fails(tmp("label"), NL_EFORMAT, "test_batch.bin", "record 3 has label 10");

    write_cifar("nometa");
    remove(tmp("nometa/batches.meta.txt"));
    cifar_fails(tmp("nometa"), NL_EIO, "batches.meta.txt", NULL);

    write_cifar("notest");
    remove(tmp("notest/test_batch.bin"));
    cifar_fails(tmp("notest"), NL_EIO, "test_batch.bin", "No such file");

    write_cifar("nobatch5");
    remove(tmp("nobatch5/data_batch_5.bin"));
    cifar_fails(tmp("nobatch5"), NL_EIO, "data_batch_5.bin", NULL);

    cifar_fails(tmp("absent"), NL_EIO, "not a folder", NULL);
}

/* ---------------------------------------------------------------- IDX ------------------- */

/* Writes an IDX file (gzip when gz) with the given magic's last byte, dims and data bytes. */
static void write_idx(const char *path, bool gz, int magic, int ndim, const int *dims,
                      const unsigned char *data, size_t n)
{
    unsigned char head[16] = {0, 0, 8, (unsigned char)magic};
    for (int d = 0; d < ndim; d++) {
        head[4 + 4 * d] = (unsigned char)(dims[d] >> 24);
        head[5 + 4 * d] = (unsigned char)(dims[d] >> 16);
        head[6 + 4 * d] = (unsigned char)(dims[d] >> 8);
        head[7 + 4 * d] = (unsigned char)dims[d];
    }
    if (!gz) {
        FILE *fp = fopen(path, "wb");
        if (!fp) return;
        fwrite(head, 1, 4 + 4 * (size_t)ndim, fp);
        if (n) fwrite(data, 1, n, fp);
        fclose(fp);
        return;
    }
    char gzpath[700];
    snprintf(gzpath, sizeof gzpath, "%s.gz", path);
    gzFile f = gzopen(gzpath, "wb");
    if (!f) return;
    gzwrite(f, head, 4 + 4 * (unsigned)ndim);
    if (n) gzwrite(f, data, (unsigned)n);
    gzclose(f);
}

/* An MNIST-like folder tmp/<name>: train of 5 images 4x3 (plain files), t10k of 3 (gzip). */
static const char *write_mnist(const char *name)
{
    mkdir(tmp("%s", name), 0777);
    unsigned char px[5 * 12], lab[5];
    for (int i = 0; i < 5; i++) {
        lab[i] = (unsigned char)(9 - i);
        for (int p = 0; p < 12; p++) px[i * 12 + p] = pattern(i, 0, p / 3, p % 3);
    }
    write_idx(tmp("%s/train-images-idx3-ubyte", name), false, 3, 3, (int[]){5, 4, 3}, px, sizeof px);
    write_idx(tmp("%s/train-labels-idx1-ubyte", name), false, 1, 1, (int[]){5}, lab, 5);
    write_idx(tmp("%s/t10k-images-idx3-ubyte", name), true, 3, 3, (int[]){3, 4, 3}, px, 36);
    write_idx(tmp("%s/t10k-labels-idx1-ubyte", name), true, 1, 1, (int[]){3}, lab, 3);
    return tmp("%s", name);
}

static void mnist_fails(const char *dir, nl_status code, const char *a, const char *b)
{
    nl_dataset *train = (nl_dataset *)1, *test = (nl_dataset *)1;
    nl_status s = nl_mnist_load(dir, false, &train, &test);
    CHECK(s == code && !train && !test && says(a, b), "%s: got %s '%s', expected %s with '%s'", dir,
          nl_status_name(s), nl_errmsg(), nl_status_name(code), a);
}

static void test_idx(void)
{
    nl_dataset *train, *test;
    CHECK(nl_mnist_load(write_mnist("mnist"), false, &train, &test) == NL_OK, "load: %s", nl_errmsg());
    if (!train) return;
    const int64_t *sh = train->images->shape;
    CHECK(train->n == 5 && test->n == 3 && sh[1] == 1 && sh[2] == 4 && sh[3] == 3, "shapes");
    CHECK(nl_dataset_label(train, 1) == 8 && nl_dataset_label(test, 2) == 7, "labels");
    CHECK(((const uint8_t *)nl_tensor_data(test->images))[2 * 12 + 7] == pattern(2, 0, 2, 1), "gzip pixels");
    CHECK(!strcmp(train->classes[3], "3"), "digit names");
    nl_dataset_release(train);
    nl_dataset_release(test);
    CHECK(nl_mnist_load(tmp("mnist"), true, &train, &test) == NL_OK && !strcmp(train->classes[9], "Ankle boot"),
          "Fashion-MNIST names");
    nl_dataset_release(train);
    nl_dataset_release(test);

    unsigned char px[64] = {0}, lab[8] = {0};
    write_mnist("magic");
    write_idx(tmp("magic/train-images-idx3-ubyte"), false, 4, 3, (int[]){5, 4, 3}, px, 60);
    mnist_fails(tmp("magic"), NL_EFORMAT, "train-images-idx3-ubyte", "magic 00000804");

    write_mnist("short");
    write_idx(tmp("short/train-images-idx3-ubyte"), false, 3, 3, (int[]){5, 4, 3}, px, 59);
    mnist_fails(tmp("short"), NL_EFORMAT, "train-images-idx3-ubyte", "truncated");

    write_mnist("shortgz");
    remove(tmp("shortgz/t10k-labels-idx1-ubyte.gz"));
    write_idx(tmp("shortgz/t10k-labels-idx1-ubyte"), true, 1, 1, (int[]){3}, lab, 2);
    mnist_fails(tmp("shortgz"), NL_EFORMAT, "t10k-labels-idx1-ubyte.gz", "truncated");

    write_mnist("long");
    write_idx(tmp("long/train-labels-idx1-ubyte"), false, 1, 1, (int[]){5}, lab, 6);
    mnist_fails(tmp("long"), NL_EFORMAT, "train-labels-idx1-ubyte", "beyond");

    write_mnist("count");
    write_idx(tmp("count/train-labels-idx1-ubyte"), false, 1, 1, (int[]){4}, lab, 4);
    mnist_fails(tmp("count"), NL_EFORMAT, "5 images", "4 labels");

    write_mnist("label");
    lab[3] = 10;
    write_idx(tmp("label/train-labels-idx1-ubyte"), false, 1, 1, (int[]){5}, lab, 5);
    mnist_fails(tmp("label"), NL_EFORMAT, "label 4 is 10", NULL);

    write_mnist("missing");
    remove(tmp("missing/t10k-images-idx3-ubyte.gz"));
    mnist_fails(tmp("missing"), NL_EIO, "t10k-images-idx3-ubyte", "(or .gz)");

    write_mnist("notgz");
    write_file(tmp("notgz/t10k-images-idx3-ubyte.gz"), "\x1f\x8b garbage", 10);
    mnist_fails(tmp("notgz"), NL_EFORMAT, "t10k-images-idx3-ubyte.gz", NULL);
}

/* ---------------------------------------------------------------- image folders --------- */

/* Writes a w x h PNG whose pixel (x, y) has colour (r0 + x * 10 + y, g0 + y * 20, b0). */
static void write_png(const char *path, int w, int h, int r0, int g0, int b0)
{
    nl_canvas *c = nl_canvas_new(w, h, 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) nl_canvas_put(c, x, y, NL_RGB(r0 + x * 10 + y, g0 + y * 20, b0));
    CHECK(nl_canvas_save_png(c, path) == NL_OK, "write %s: %s", path, nl_errmsg());
    nl_canvas_release(c);
}

static void folder_fails(const char *dir, int size, const char *a, const char *b)
{
    nl_dataset *ds = nl_image_folder_load(dir, size, size, NL_IMAGE_MAX_PIXELS, nl_image_load_rgb, NULL);
    CHECK(!ds && says(a, b), "%s: expected an error with '%s', got '%s'", dir, a, nl_errmsg());
    nl_dataset_release(ds);
}

static void test_image_folder(void)
{
    mkdir(tmp("img"), 0777);
    mkdir(tmp("img/zebra"), 0777);
    mkdir(tmp("img/ant"), 0777);
    write_png(tmp("img/zebra/1.png"), 4, 4, 10, 20, 30);
    write_png(tmp("img/ant/b.png"), 4, 4, 50, 60, 70);
    write_png(tmp("img/ant/a.png"), 4, 4, 90, 100, 110);
    write_file(tmp("img/ant/.hidden"), "not an image", 12);
    nl_dataset *ds = nl_image_folder_load(tmp("img"), 0, 0, NL_IMAGE_MAX_PIXELS, nl_image_load_rgb, NULL);
    CHECK(ds != NULL, "load: %s", nl_errmsg());
    if (!ds) return;
    const int64_t *sh = ds->images->shape;
    CHECK(ds->n == 3 && sh[1] == 3 && sh[2] == 4 && sh[3] == 4, "three RGB 4x4 images");
    CHECK(ds->nclasses == 2 && !strcmp(ds->classes[0], "ant") && !strcmp(ds->classes[1], "zebra"),
          "classes in sorted order");
    CHECK(nl_dataset_label(ds, 0) == 0 && nl_dataset_label(ds, 1) == 0 && nl_dataset_label(ds, 2) == 1, "labels");
    const uint8_t *p = nl_tensor_data(ds->images);
    /* sample 0 is ant/a.png (sorted names): R plane at (x=2, y=1), G at (0, 3), B anywhere */
    CHECK(p[0 * 16 + 1 * 4 + 2] == 90 + 20 + 1 && p[16 + 3 * 4 + 0] == 100 + 60 && p[32 + 5] == 110,
          "pixels as CHW planes: %d %d %d", p[6], p[16 + 12], p[37]);
    CHECK(p[2 * 48 + 0] == 10, "the zebra's first pixel");
    nl_dataset_release(ds);

    /* resizing 4x4 -> 2x2 with aligned pixel centres averages 2x2 blocks */
    ds = nl_image_folder_load(tmp("img"), 2, 2, NL_IMAGE_MAX_PIXELS, nl_image_load_rgb, NULL);
    CHECK(ds && ds->images->shape[2] == 2 && ds->images->shape[3] == 2, "resized: %s", nl_errmsg());
    if (ds) {
        p = nl_tensor_data(ds->images);
        /* R of ant/a at output (x=1, y=0): mean of R(x=2..3, y=0..1) = 90 + 25 + 0.5 */
        CHECK(p[1] == 116 && p[4 + 2] == 100 + 50 && p[8 + 3] == 110, "bilinear values %d %d %d", p[1], p[6], p[11]);
        nl_dataset_release(ds);
    }

    /* a committed JPEG (a CIFAR-10 image) decodes to 32x32 RGB */
    int w = 0, h = 0;
    uint8_t *px = NULL;
    CHECK(nl_image_load_rgb("tests/data/images/cat.jpg", NL_IMAGE_MAX_PIXELS, &w, &h, &px) == NL_OK && w == 32 && h == 32,
          "JPEG: %s", nl_errmsg());
    if (px) {
        double mean = 0;
        for (int i = 0; i < 32 * 32 * 3; i++) mean += px[i];
        mean /= 32 * 32 * 3;
        CHECK(mean > 20 && mean < 235, "a photo's mean value %.1f", mean);
    }
    free(px);

    /* failures name the file or folder */
    write_png(tmp("img/zebra/2.png"), 5, 4, 0, 0, 0);
    folder_fails(tmp("img"), 0, "zebra/2.png", "pass size");
    remove(tmp("img/zebra/2.png"));
    /* files that are not images by their extension are skipped and counted, as torchvision does */
    write_file(tmp("img/zebra/notes.txt"), "hello", 5);
    write_file(tmp("img/ant/README"), "hello", 5);
    int skipped = -1;
    ds = nl_image_folder_load(tmp("img"), 4, 4, NL_IMAGE_MAX_PIXELS, nl_image_load_rgb, &skipped);
    CHECK(ds && ds->n == 3 && skipped == 2, "stray files skipped: %s, %d skipped", ds ? "loaded" : nl_errmsg(),
          skipped);
    nl_dataset_release(ds);
    write_png(tmp("img/zebra/UPPER.PNG"), 4, 4, 0, 0, 0);
    ds = nl_image_folder_load(tmp("img"), 4, 4, NL_IMAGE_MAX_PIXELS, nl_image_load_rgb, &skipped);
    CHECK(ds && ds->n == 4 && skipped == 2, "extensions compare without case: %d images", ds ? (int)ds->n : -1);
    nl_dataset_release(ds);
    remove(tmp("img/zebra/UPPER.PNG"));
    remove(tmp("img/zebra/notes.txt"));
    remove(tmp("img/ant/README"));
    mkdir(tmp("img/notes"), 0777);
    write_file(tmp("img/notes/notes.txt"), "hello", 5);
    folder_fails(tmp("img"), 32, "img/notes", "holds no images");
    remove(tmp("img/notes/notes.txt"));
    rmdir(tmp("img/notes"));
    write_file(tmp("img/zebra/broken.png"), "\x89PNG\r\n\x1a\n\0\0", 10);
    folder_fails(tmp("img"), 32, "zebra/broken.png", NULL);
    remove(tmp("img/zebra/broken.png"));
    mkdir(tmp("img/empty"), 0777);
    folder_fails(tmp("img"), 32, "img/empty", "no images");
    mkdir(tmp("flat"), 0777);
    write_png(tmp("flat/1.png"), 2, 2, 0, 0, 0);
    folder_fails(tmp("flat"), 0, "flat", "no class folders");
    folder_fails(tmp("nowhere"), 0, "nowhere", "cannot open");
}

/* ---------------------------------------------------------------- loader ---------------- */

/* Copies the loader's next batch into x and y (new references), NULLs at the end. */
static nl_status next_batch(nl_loader *l, nl_tensor **x, nl_tensor **y)
{
    nl_status s = nl_loader_next(l, x, y);
    CHECK(s == NL_OK, "next: %s", nl_errmsg());
    return s;
}

static bool same_tensor(const nl_tensor *a, const nl_tensor *b)
{
    return a && b && nl_same_shape(a, b) && a->dtype == b->dtype &&
           !memcmp(nl_tensor_data(a), nl_tensor_data(b), (size_t)nl_tensor_numel(a) * nl_dtype_info(a->dtype)->size);
}

static void test_loader(void)
{
    nl_dataset *ds = make_set(10, 3, 8, 8, 4);
    nl_loader_opts o = nl_loader_opts_default();
    o.batch = 4;
    o.seed = 3;
    nl_loader *l = nl_loader_new(ds, &o);
    CHECK(l && nl_loader_batches(l) == 3, "10 samples in batches of 4: 3 batches");

    /* epoch 1 visits every sample once, in the Trainer's order, each batch = a plain fill */
    int64_t order[10];
    nl_tensor *perm = nl_tensor_empty(NL_I32, 1, &ds->n, NL_CPU);
    nl_permutation(perm, nl_rng_hash(3, 0));
    for (int i = 0; i < 10; i++) order[i] = ((int32_t *)nl_tensor_data(perm))[i];
    nl_tensor_release(perm);
    nl_tensor *x, *y, *ex = NULL, *ey = NULL;
    int64_t at = 0;
    bool in_order = true, plain_ok = true;
    for (int b = 0; b < 3; b++) {
        if (next_batch(l, &x, &y) != NL_OK || !x) break;
        int64_t n = x->shape[0], xs[4] = {n, 3, 8, 8};
        CHECK(n == (b < 2 ? 4 : 2), "batch %d holds %lld", b, (long long)n);
        ex = nl_tensor_empty(NL_F32, 4, xs, NL_CPU);
        ey = nl_tensor_empty(NL_I32, 1, &n, NL_CPU);
        nl_fill_spec spec = {.key = nl_rng_hash(~(uint64_t)3, 0), .first = (uint64_t)at};
        float lut[3 * 256];
        double z = 0, one = 1;
        nl_dataset_lut(lut, 3, &z, 1, &one, 1);
        spec.lut = lut;
        nl_dataset_fill(ds, order + at, n, &spec, ex, ey);
        plain_ok &= same_tensor(x, ex) && same_tensor(y, ey);
        for (int64_t k = 0; k < n; k++) in_order &= which_sample(nl_tensor_f32(x) + k * 192) == order[at + k];
        at += n;
        nl_tensor_release(ex);
        nl_tensor_release(ey);
        nl_tensor_release(x);
        nl_tensor_release(y);
    }
    CHECK(in_order, "samples in the order nl_permutation(hash(seed, epoch - 1))");
    CHECK(plain_ok, "batches equal nl_dataset_fill of the same samples");
    uint64_t epoch;
    int64_t pos;
    nl_loader_tell(l, &epoch, &pos);
    CHECK(epoch == 1 && pos == 3, "at the end of epoch 1");
    CHECK(nl_loader_next(l, &x, &y) == NL_OK && !x && !y, "the end of the epoch: no batch");
    nl_loader_tell(l, &epoch, &pos);
    CHECK(epoch == 2 && pos == 0, "then epoch 2 starts");
    next_batch(l, &x, &y);
    bool reshuffled = false;
    for (int k = 0; x && k < 4; k++) reshuffled |= which_sample(nl_tensor_f32(x) + k * 192) != order[k];
    CHECK(reshuffled, "epoch 2 has another order");
    nl_tensor_release(x);
    nl_tensor_release(y);
    nl_loader_free(l);

    /* determinism: two loaders with augmentation give the same batches, whatever the timing */
    double mean[3] = {0.5, 0.5, 0.5}, sd[3] = {0.25, 0.25, 0.25};
    o = nl_loader_opts_default();
    o.batch = 3;
    o.mean = mean, o.std = sd, o.nmean = o.nstd = 3;
    o.crop = 2, o.flip = true, o.cutout = 3;
    o.label_offset = 1;
    nl_loader_opts oa = o;
    nl_loader *a = nl_loader_new(ds, &o), *b = nl_loader_new(ds, &o);
    o.seed = 2;
    nl_loader *c = nl_loader_new(ds, &o);
    bool same = true, differs = false, labels_ok = true;
    nl_tensor *held = NULL, *copy = NULL;
    for (int i = 0; i < 10; i++) { /* two and a half epochs, ends included */
        nl_tensor *xa, *ya, *xb, *yb, *xc, *yc;
        next_batch(a, &xa, &ya);
        if (i % 2) usleep(2000); /* let b's thread run ahead sometimes */
        next_batch(b, &xb, &yb);
        next_batch(c, &xc, &yc);
        same &= (!xa && !xb) || (same_tensor(xa, xb) && same_tensor(ya, yb));
        differs |= xa && xc && !same_tensor(xa, xc);
        for (int64_t k = 0; ya && k < ya->shape[0]; k++) {
            int32_t lab = ((int32_t *)nl_tensor_data(ya))[k];
            labels_ok &= lab >= 1 && lab <= 4;
        }
        if (i == 1) { /* hold a batch while the loader goes on: its contents must not change */
            held = nl_tensor_retain(xa);
            copy = nl_tensor_clone(xa);
        }
        nl_tensor_release(xa), nl_tensor_release(ya), nl_tensor_release(xb), nl_tensor_release(yb);
        nl_tensor_release(xc), nl_tensor_release(yc);
    }
    CHECK(same, "same seed, same batches and augmentations");
    CHECK(differs, "another seed, other batches");
    CHECK(labels_ok, "labels offset to 1..4");
    CHECK(same_tensor(held, copy), "a batch held by the caller is never overwritten");
    nl_tensor_release(held);
    nl_tensor_release(copy);

    /* seeking: a fresh loader put at a's position continues exactly as a does */
    nl_loader_tell(a, &epoch, &pos);
    CHECK(epoch == 3 && pos == 0, "4 batches and an end per epoch: a starts epoch 3 (at %llu, %lld)",
          (unsigned long long)epoch, (long long)pos);
    next_batch(a, &x, &y);
    nl_tensor_release(x), nl_tensor_release(y);
    nl_loader_tell(a, &epoch, &pos);
    nl_loader *d = nl_loader_new(ds, &oa);
    CHECK(nl_loader_seek(d, epoch, pos) == NL_OK, "seek");
    nl_tensor *xa, *ya, *xd, *yd;
    next_batch(a, &xa, &ya);
    next_batch(d, &xd, &yd);
    CHECK(same_tensor(xa, xd) && same_tensor(ya, yd), "after a seek, the same batch as the loader it copies");
    nl_tensor_release(xa), nl_tensor_release(ya), nl_tensor_release(xd), nl_tensor_release(yd);
    CHECK(nl_loader_seek(c, 0, 0) == NL_EINVAL && nl_loader_seek(c, 1, 5) == NL_EINVAL, "bad positions");
    CHECK(nl_loader_seek(c, 1, 4) == NL_OK && nl_loader_next(c, &xd, &yd) == NL_OK && !xd, "seek to the end");
    nl_loader_free(a);
    nl_loader_free(b);
    nl_loader_free(c);
    nl_loader_free(d);

    /* drop_last, no shuffle; freeing at once joins a thread that may be busy */
    o = nl_loader_opts_default();
    o.batch = 4, o.drop_last = true, o.shuffle = false;
    l = nl_loader_new(ds, &o);
    CHECK(l && nl_loader_batches(l) == 2, "drop_last: 2 batches");
    next_batch(l, &x, &y);
    CHECK(x && which_sample(nl_tensor_f32(x) + 192) == 1, "no shuffle: in order");
    nl_tensor_release(x), nl_tensor_release(y);
    nl_loader_free(l);
    for (int i = 0; i < 20; i++) nl_loader_free(nl_loader_new(ds, &o));

    /* bad options */
    o.batch = 0;
    CHECK(!nl_loader_new(ds, &o) && says("batch size 0", NULL), "batch 0");
    o.batch = 11;
    CHECK(!nl_loader_new(ds, &o) && says("no batch of 11", NULL), "drop_last leaves nothing");
    o = nl_loader_opts_default();
    o.crop = 9;
    CHECK(!nl_loader_new(ds, &o) && says("crop 9", NULL), "crop beyond the image");
    o.crop = 0, o.mean = mean, o.std = sd, o.nmean = 2, o.nstd = 3;
    CHECK(!nl_loader_new(ds, &o) && says("2 means", NULL), "two means for three channels");
    nl_dataset_release(ds);
}

/* Time per batch of 64 CIFAR-sized images with every augmentation, when the caller waits for
 * each (the thread's whole cost shows). */
static void test_loader_speed(void)
{
    nl_dataset *ds = make_set(4096, 3, 32, 32, 10);
    double mean[3] = {0.49, 0.48, 0.45}, sd[3] = {0.25, 0.24, 0.26};
    nl_loader_opts o = nl_loader_opts_default();
    o.mean = mean, o.std = sd, o.nmean = o.nstd = 3;
    o.crop = 4, o.flip = true, o.cutout = 8;
    nl_loader *l = nl_loader_new(ds, &o);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int batches = 0;
    nl_tensor *x, *y;
    while (nl_loader_next(l, &x, &y) == NL_OK && x) {
        batches++;
        nl_tensor_release(x);
        nl_tensor_release(y);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6) / batches;
    printf("loader: %.3f ms per batch of 64 (3x32x32, normalise, crop 4, flip, cutout 8)\n", ms);
    CHECK(batches == 64 && ms < 20, "%d batches, %.3f ms each", batches, ms);
    nl_loader_free(l);
    nl_dataset_release(ds);
}

int main(void)
{
    nl_init();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nnlab-data-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_dataset();
    test_fill();
    test_augment();
    test_cifar();
    test_idx();
    test_image_folder();
    test_loader();
    test_loader_speed();
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return TEST_REPORT();
}
