/* fuzz.h: what the libFuzzer targets in tests/fuzz share: a private scratch folder and writing the
 * input to a file there, since every parser here reads files. Each target defines
 * LLVMFuzzerTestOneInput; a crash, a sanitizer report, a leak or a hang is a finding. */
#ifndef NL_FUZZ_H
#define NL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nl.h"
#include "nn.h"

/* The scratch folder (made on first use, removed at exit) and path + "/" + name in it. */
static char fuzz_dir[64];

static inline void fuzz_cleanup(void)
{
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir);
    if (fuzz_dir[0]) (void)!system(cmd);
}

static inline const char *fuzz_path(const char *name)
{
    static char path[160];
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/nnlab_fuzz_XXXXXX");
        if (!mkdtemp(fuzz_dir)) abort();
        atexit(fuzz_cleanup);
    }
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
    return path;
}

/* Writes n bytes to the scratch file name; returns its path. */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t n)
{
    const char *path = fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) abort();
    return path;
}

/* Every error must come with a message: an empty one is a finding too. */
static inline void fuzz_check_error(void)
{
    if (!nl_errmsg()[0]) abort();
}

/* A loaded network through shape inference on a few inputs (images of several sizes, a matrix):
 * a refusal must say why. */
static inline void fuzz_infer(const nl_module *m)
{
    int nd;
    int64_t out[NL_MAX_DIMS], macs;
    static const int64_t shapes[][4] = {{1, 3, 8, 8}, {2, 1, 28, 28}, {1, 16, 1, 1}};
    for (int i = 0; i < 3; i++)
        if (nl_module_infer(m, 4, shapes[i], &nd, out, &macs) != NL_OK) fuzz_check_error();
    if (nl_module_infer(m, 2, (const int64_t[]){4, 10}, &nd, out, &macs) != NL_OK) fuzz_check_error();
}

#endif
