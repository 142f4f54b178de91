/* atomic.c: atomic file replacement for every saver: write "<path>.tmp.<pid>.<random>" beside the
 * target, then fsync, rename over it and fsync the folder, so a crash or a full disk never leaves
 * a half-written file; temporary files of processes killed while saving go on the next save. */
#include "nl.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Frees what af owns and zeroes it, so that a second abort (or an abort after commit) is a
 * no-op. */
static void release(nl_atomic_file *af)
{
    free(af->path);
    free(af->tmp);
    af->fp = af->path = af->tmp = NULL;
}

/* The file a save to path replaces: path itself, or the file a symbolic link at path points to
 * (followed to its end, as editors do: the link stays a link). A new malloc'd string, or NULL
 * with NL_EIO for a dangling or looping link, NL_ENOMEM. */
static char *save_target(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISLNK(sb.st_mode)) {
        char *s = strdup(path);
        if (!s) nl_seterr(NL_ENOMEM, "out of memory opening '%s'", path);
        return s;
    }
    char *real = realpath(path, NULL);
    if (!real)
        nl_seterr(NL_EIO, "cannot write '%s': it is a symbolic link whose target cannot be "
                  "resolved (%s)", path, strerror(errno));
    return real;
}

/* Removes "<base>.tmp.<pid>[.<suffix>]" beside path left by processes that died while saving
 * (kill -9, power loss): the pid in the name says whose; files of live processes stay. */
static void clean_stale(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    DIR *d = dir ? opendir(dir) : NULL;
    size_t blen = strlen(base);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp.", 5) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(n + blen + 5, &end, 10);
        if (end == n + blen + 5 || errno || pid <= 0 || (*end && *end != '.')) continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        (void)unlinkat(dirfd(d), n, 0);
    }
    if (d) closedir(d);
    free(dir);
}

/* Opens the temporary file for path: "<target>.tmp.<pid>.<random>" beside the file saved to,
 * created with O_CREAT | O_EXCL | O_NOFOLLOW (a link planted there makes the save fail rather
 * than redirect it). Stale temporary files of dead processes are removed first. A symbolic link
 * at path is written through: its target is replaced. On success af owns the file until
 * nl_atomic_commit or nl_atomic_abort; on failure (NL_EIO naming path and the reason, NL_EINVAL
 * for no name, NL_ENOMEM) af holds nothing and needs no abort (an abort is harmless). */
nl_status nl_atomic_open(nl_atomic_file *af, const char *path)
{
    af->fp = af->path = af->tmp = NULL;
    if (!path || !*path) return nl_seterr(NL_EINVAL, "cannot write a file with no name");
    if (!(af->path = save_target(path))) return nl_errcode();
    size_t n = strlen(af->path) + 64;
    if (!(af->tmp = malloc(n))) {
        release(af);
        return nl_seterr(NL_ENOMEM, "out of memory opening '%s'", path);
    }
    clean_stale(af->path);
    static _Atomic unsigned counter;
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 16; tries++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
            r = (unsigned)time(NULL) * 2654435761u;
        snprintf(af->tmp, n, "%s.tmp.%ld.%08x", af->path, (long)getpid(), r ^ counter++);
        fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
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
    if (stat(af->path, &sb) == 0 && S_ISREG(sb.st_mode)) (void)fchmod(fd, sb.st_mode & 07777);
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

/* Flushes, fsyncs (when durable) and closes the temporary file and renames it over the target.
 * Always consumes af: on failure (NL_EIO naming the path and the reason) the temporary file is
 * removed and the old target, if any, is untouched. */
static nl_status commit(nl_atomic_file *af, bool durable)
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
    } else if (durable && fsync(fileno(fp)) != 0 && errno != EINVAL) { /* EINVAL: cannot sync this file */
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
    if (durable) sync_dir(af->path);
    release(af);
    return NL_OK;
}

nl_status nl_atomic_commit(nl_atomic_file *af) { return commit(af, true); }

nl_status nl_atomic_commit_nosync(nl_atomic_file *af) { return commit(af, false); }

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
