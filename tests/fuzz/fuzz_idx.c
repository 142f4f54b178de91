/* fuzz_idx.c: MNIST's IDX files, plain and gzip, through nl_mnist_load. The first byte of the
 * input picks which of the four files the rest replaces and whether it is gzipped; the others are
 * small valid files. */
#include "fuzz.h"
#include "dataset.h"

#include <zlib.h>

static const char *const names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1) return 0;
    static const uint8_t images[16 + 2 * 2 * 2] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2};
    static const uint8_t labels[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 2, 3, 9};
    char gzname[64];
    for (int i = 0; i < 4; i++) {
        fuzz_file(names[i], i % 2 ? labels : images, i % 2 ? sizeof labels : sizeof images);
        snprintf(gzname, sizeof gzname, "%s.gz", names[i]);
        unlink(fuzz_path(gzname));
    }
    const int pick = data[0] % 4;
    if (data[0] & 4) { /* the file gzipped (the loader prefers the plain file: remove it) */
        unlink(fuzz_path(names[pick]));
        snprintf(gzname, sizeof gzname, "%s.gz", names[pick]);
        gzFile g = gzopen(fuzz_path(gzname), "wb");
        if (!g) abort();
        if (n > 1) gzwrite(g, data + 1, (unsigned)(n - 1));
        gzclose(g);
    } else {
        fuzz_file(names[pick], data + 1, n - 1);
    }
    nl_dataset *train, *test;
    char dir[96];
    snprintf(dir, sizeof dir, "%s", fuzz_path(""));
    if (nl_mnist_load(dir, false, &train, &test) != NL_OK) fuzz_check_error();
    nl_dataset_release(train);
    nl_dataset_release(test);
    return 0;
}
