/* files.c: what an experiment's manifest says about files: the data files this process has read
 * (noted by the loaders), their SHA-256 (cached while a file keeps its size and time), and the
 * folders a run writes into (mkdir -p). */
#include "nl.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) -- */

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t buf[64];
    size_t fill;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(sha256_ctx *c, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6],
             h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
    c->h[5] += f;
    c->h[6] += g;
    c->h[7] += h;
}

static void sha256_init(sha256_ctx *c)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0;
    c->fill = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    c->bytes += n;
    while (n > 0) {
        if (c->fill == 0 && n >= 64) {
            sha256_block(c, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t k = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->buf + c->fill, p, k);
        c->fill += k;
        p += k;
        n -= k;
        if (c->fill == 64) {
            sha256_block(c, c->buf);
            c->fill = 0;
        }
    }
}

static void sha256_final(sha256_ctx *c, char hex[65])
{
    uint64_t bits = c->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (c->fill < 56 ? 56 : 120) - c->fill;
    for (int i = 0; i < 8; i++) pad[padlen + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, pad, padlen + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", c->h[i]);
}

void nl_sha256(const void *data, size_t n, char hex[65])
{
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, n);
    sha256_final(&c, hex);
}

/* ---------------------------------------------------------------- files read ------------- */

enum { MAX_NOTED = 256 };

typedef struct {
    char *path;
    int64_t bytes, mtime_ns; /* of the cached hash; -1: none yet */
    char hash[65];
} noted_file;

static pthread_mutex_t noted_lock = PTHREAD_MUTEX_INITIALIZER;
static noted_file noted[MAX_NOTED];
static int nnoted;

void nl_files_note(const char *path)
{
    if (!path) return;
    char *real = realpath(path, NULL);
    if (!real) real = strdup(path);
    if (!real) return;
    pthread_mutex_lock(&noted_lock);
    bool seen = false;
    for (int i = 0; i < nnoted && !seen; i++) seen = strcmp(noted[i].path, real) == 0;
    if (!seen && nnoted < MAX_NOTED) {
        noted[nnoted] = (noted_file){.path = real, .bytes = -1, .mtime_ns = -1};
        nnoted++;
        real = NULL;
    }
    pthread_mutex_unlock(&noted_lock);
    free(real);
}

int nl_files_count(void)
{
    pthread_mutex_lock(&noted_lock);
    int n = nnoted;
    pthread_mutex_unlock(&noted_lock);
    return n;
}

/* A folder's digest: SHA-256 of its listing, one "name size\n" line per entry in sorted order
 * (walking down into sub-folders as "sub/name"); its files' contents are not read. */
static nl_status hash_listing(const char *dir, const char *prefix, sha256_ctx *c, int64_t *bytes, int depth)
{
    if (depth > 8) return NL_OK;
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, alphasort);
    if (n < 0) return nl_seterr(NL_EIO, "cannot read the folder '%s': %s", dir, strerror(errno));
    nl_status s = NL_OK;
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        if (s == NL_OK && strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            char path[PATH_MAX], rel[PATH_MAX];
            struct stat sb;
            if (snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path &&
                snprintf(rel, sizeof rel, "%s%s", prefix, name) < (int)sizeof rel && stat(path, &sb) == 0) {
                if (S_ISDIR(sb.st_mode)) {
                    char sub[PATH_MAX + 2];
                    snprintf(sub, sizeof sub, "%s/", rel);
                    s = hash_listing(path, sub, c, bytes, depth + 1);
                } else {
                    char line[PATH_MAX + 32];
                    int k = snprintf(line, sizeof line, "%s %lld\n", rel, (long long)sb.st_size);
                    sha256_update(c, (const uint8_t *)line, (size_t)k);
                    *bytes += sb.st_size;
                }
            }
        }
        free(list[i]);
    }
    free(list);
    return s;
}

nl_status nl_file_digest(const char *path, char hex[65], int64_t *bytes, bool *folder)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    sha256_ctx c;
    sha256_init(&c);
    *bytes = 0;
    *folder = S_ISDIR(sb.st_mode);
    if (*folder) {
        nl_status s = hash_listing(path, "", &c, bytes, 0);
        if (s != NL_OK) return s;
        sha256_final(&c, hex);
        return NL_OK;
    }
    FILE *f = fopen(path, "rbe");
    if (!f) return nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) {
        fclose(f);
        return nl_seterr(NL_ENOMEM, "out of memory hashing '%s'", path);
    }
    size_t got;
    while ((got = fread(buf, 1, CHUNK, f)) > 0) sha256_update(&c, buf, got);
    bool bad = ferror(f);
    free(buf);
    fclose(f);
    if (bad) return nl_seterr(NL_EIO, "cannot read '%s'", path);
    *bytes = (int64_t)c.bytes;
    sha256_final(&c, hex);
    return NL_OK;
}

nl_status nl_files_get(int i, char **path, char hex[65], int64_t *bytes, bool *folder)
{
    *path = NULL;
    pthread_mutex_lock(&noted_lock);
    char *p = i >= 0 && i < nnoted ? strdup(noted[i].path) : NULL;
    pthread_mutex_unlock(&noted_lock);
    if (!p) return nl_seterr(i >= 0 && i < nnoted ? NL_ENOMEM : NL_EINVAL, "no noted file %d", i);
    struct stat sb;
    int64_t mtime = stat(p, &sb) == 0 ? (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec : -2;
    /* The hash of a file that kept its size and time is the one computed before. */
    pthread_mutex_lock(&noted_lock);
    bool cached = mtime >= 0 && !S_ISDIR(sb.st_mode) && noted[i].mtime_ns == mtime && noted[i].bytes == sb.st_size;
    if (cached) {
        memcpy(hex, noted[i].hash, 65);
        *bytes = noted[i].bytes;
        *folder = false;
    }
    pthread_mutex_unlock(&noted_lock);
    nl_status s = cached ? NL_OK : nl_file_digest(p, hex, bytes, folder);
    if (s == NL_OK && !cached && !*folder && mtime >= 0) {
        pthread_mutex_lock(&noted_lock);
        memcpy(noted[i].hash, hex, 65);
        noted[i].bytes = *bytes;
        noted[i].mtime_ns = mtime;
        pthread_mutex_unlock(&noted_lock);
    }
    if (s != NL_OK) {
        free(p);
        return s;
    }
    *path = p;
    return NL_OK;
}

/* ---------------------------------------------------------------- folders ---------------- */

nl_status nl_mkdirs(const char *dir)
{
    char *d = strdup(dir);
    if (!d) return nl_seterr(NL_ENOMEM, "out of memory");
    nl_status s = NL_OK;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') d[--n] = '\0';
    for (char *p = d + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        struct stat sb;
        if (mkdir(d, 0777) != 0 && errno != EEXIST)
            s = nl_seterr(NL_EIO, "cannot create the folder '%s': %s", d, strerror(errno));
        else if (stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode))
            s = nl_seterr(NL_EIO, "cannot create the folder '%s': a file of that name is in the way", d);
        *p = c;
        if (s != NL_OK || c == '\0') break;
    }
    free(d);
    return s;
}
