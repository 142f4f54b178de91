/* atomic.c: atomic file replacement for every saver: write "<path>.tmp.<pid>" beside the target,
 * then fsync and rename over it, so a crash or a full disk never leaves a half-written file. */
#include "nl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Frees what af owns and zeroes it, so that a second abort (or an abort after commit) is a
 * no-op. */
static void release(nl_atomic_file *af)
{
    free(af->path);
    free(af->tmp);
    af->fp = af->path = af->tmp = NULL;
}

/* Opens the temporary file for path. On success af owns it until nl_atomic_commit or
 * nl_atomic_abort; on failure (NL_EIO naming path and the reason, NL_EINVAL for no name,
 * NL_ENOMEM) af holds nothing and needs no abort (an abort is harmless). */
nl_status nl_atomic_open(nl_atomic_file *af, const char *path)
{
    af->fp = af->path = af->tmp = NULL;
    if (!path || !*path) return nl_seterr(NL_EINVAL, "cannot write a file with no name");
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp = malloc(n);
    if (!af->path || !af->tmp) {
        release(af);
        return nl_seterr(NL_ENOMEM, "out of memory opening '%s'", path);
    }
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(af->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!fp) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(af->tmp);
        }
        release(af);
        return nl_seterr(NL_EIO, "cannot write '%s': %s", path, strerror(e));
    }
    /* A replaced file keeps its permissions (a private checkpoint stays private). */
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) (void)fchmod(fd, sb.st_mode & 07777);
    af->fp = fp;
    return NL_OK;
}

/* Appends n bytes. NL_EIO naming the path with the system's reason (e.g. "No space left on
 * device") on a short write; the caller then calls nl_atomic_abort. */
nl_status nl_atomic_write(nl_atomic_file *af, const void *buf, size_t n)
{
    if (!af->fp) return nl_seterr(NL_EIO, "cannot write '%s': file is not open",
                                  af->path ? af->path : "?");
    errno = 0;
    if (n && fwrite(buf, 1, n, af->fp) != n)
        return nl_seterr(NL_EIO, "cannot write '%s': %s", af->path,
                         errno ? strerror(errno) : "short write");
    return NL_OK;
}

/* Makes the rename durable (best effort: some file systems refuse to fsync a directory). */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Flushes, fsyncs and closes the temporary file and renames it over the target. Always consumes
 * af: on failure (NL_EIO naming the path and the reason) the temporary file is removed and the
 * old target, if any, is untouched. */
nl_status nl_atomic_commit(nl_atomic_file *af)
{
    if (!af->fp) {
        nl_status st = nl_seterr(NL_EIO, "cannot write '%s': file is not open",
                                 af->path ? af->path : "?");
        release(af);
        return st;
    }
    FILE *fp = af->fp;
    af->fp = NULL;
    const char *what = NULL;
    int e = 0;
    if (fflush(fp) != 0) {
        what = "cannot write";
        e = errno;
    } else if (fsync(fileno(fp)) != 0 && errno != EINVAL) { /* EINVAL: cannot sync this file */
        what = "cannot sync";
        e = errno;
    }
    if (fclose(fp) != 0 && !what) {
        what = "cannot write";
        e = errno;
    }
    if (!what && rename(af->tmp, af->path) != 0) {
        what = "cannot replace";
        e = errno;
    }
    if (what) {
        unlink(af->tmp);
        nl_status st = nl_seterr(NL_EIO, "%s '%s': %s", what, af->path, strerror(e));
        release(af);
        return st;
    }
    sync_dir(af->path);
    release(af);
    return NL_OK;
}

/* Closes and removes the temporary file, leaving the target as it was. Safe on an af that failed
 * to open, was already committed or aborted. */
void nl_atomic_abort(nl_atomic_file *af)
{
    if (af->fp) {
        fclose(af->fp);
        unlink(af->tmp);
    }
    release(af);
}
