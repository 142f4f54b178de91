/* files.c: what an experiment's manifest says about files: the data files this process has read
 * (noted by the loaders), their SHA-256 (OpenSSL's; cached while a file keeps its size and time), and the
 * folders a run writes into (mkdir -p). */
#include "nl.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- SHA-256 (OpenSSL) ------ */

/* SHA-256 through OpenSSL's libcrypto (EVP), which uses the CPU's SHA extensions where it has
 * them; with the bytes hashed counted. */
typedef struct {
    EVP_MD_CTX *md;
    uint64_t bytes;
} sha256_ctx;

static nl_status sha256_init(sha256_ctx *c)
{
    c->bytes = 0;
    c->md = EVP_MD_CTX_new();
    if (c->md && EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) == 1) return NL_OK;
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
    return nl_seterr(NL_ENOMEM, "SHA-256: OpenSSL could not start a digest");
}

static void sha256_update(sha256_ctx *c, const void *p, size_t n)
{
    EVP_DigestUpdate(c->md, p, n);
    c->bytes += n;
}

/* The digest as 64 hex digits; frees the context (also on the error paths: hex NULL). */
static void sha256_final(sha256_ctx *c, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (hex) {
        EVP_DigestFinal_ex(c->md, d, &len);
        for (unsigned i = 0; i < len && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
    EVP_MD_CTX_free(c->md);
    c->md = NULL;
}

void nl_sha256(const void *data, size_t n, char hex[65])
{
    sha256_ctx c;
    if (sha256_init(&c) != NL_OK) {
        hex[0] = '\0';
        return;
    }
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
                    sha256_update(c, line, (size_t)k);
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
    nl_status s = sha256_init(&c);
    if (s != NL_OK) return s;
    *bytes = 0;
    *folder = S_ISDIR(sb.st_mode);
    if (*folder) {
        s = hash_listing(path, "", &c, bytes, 0);
        sha256_final(&c, s == NL_OK ? hex : NULL);
        return s;
    }
    FILE *f = fopen(path, "rbe");
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = f ? malloc(CHUNK) : NULL;
    if (!buf) {
        s = f ? nl_seterr(NL_ENOMEM, "out of memory hashing '%s'", path)
              : nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
        if (f) fclose(f);
        sha256_final(&c, NULL);
        return s;
    }
    size_t got;
    while ((got = fread(buf, 1, CHUNK, f)) > 0) sha256_update(&c, buf, got);
    bool bad = ferror(f);
    free(buf);
    fclose(f);
    *bytes = (int64_t)c.bytes;
    sha256_final(&c, bad ? NULL : hex);
    return bad ? nl_seterr(NL_EIO, "cannot read '%s'", path) : NL_OK;
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
