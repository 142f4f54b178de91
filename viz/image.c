/* image.c: image files as RGB bytes, through the canvas's SDL2_image reader (one decoding path
 * for the whole program), guarded against hostile files: the size is read from the header and
 * checked against a limit before anything is decoded (formats whose size cannot be read so are
 * refused), a PNG's chunks are walked first (libpng
 * through SDL2_image loops for ever on a truncated one), and decoding runs on a helper thread so
 * that Ctrl-C answers at once. */
#include "image.h"
#include "canvas.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]; }

/* Reads n bytes at offset off of f into buf: false at the end of the file. */
static bool read_at(FILE *f, long off, void *buf, size_t n)
{
    return fseek(f, off, SEEK_SET) == 0 && fread(buf, 1, n, f) == n;
}

static nl_status truncated(const char *path, const char *kind, const char *where)
{
    return nl_seterr(NL_EFORMAT, "'%s' is a truncated or corrupt %s (it ends %s)", path, kind, where);
}

/* A PNG: the size from IHDR; every chunk must lie within the file up to IEND. */
static nl_status png_size(FILE *f, long size, const char *path, int64_t *w, int64_t *h)
{
    uint8_t head[8];
    if (!read_at(f, 8, head, 8) || memcmp(head + 4, "IHDR", 4) != 0 || be32(head) != 13)
        return truncated(path, "PNG", "before its header (IHDR)");
    uint8_t ihdr[8];
    if (!read_at(f, 16, ihdr, 8)) return truncated(path, "PNG", "inside its header");
    *w = be32(ihdr);
    *h = be32(ihdr + 4);
    for (long off = 8; ; ) {
        if (!read_at(f, off, head, 8)) return truncated(path, "PNG", "before its last chunk (IEND)");
        uint32_t len = be32(head);
        if (len > 0x7fffffffu || (long)len > size - off - 12)
            return truncated(path, "PNG", "inside a chunk");
        if (memcmp(head + 4, "IEND", 4) == 0) return NL_OK;
        off += 12 + (long)len;
    }
}

/* A JPEG: the size from its frame header (SOFn); its segments must lie within the file up to the
 * start of the scan (SOS). */
static nl_status jpeg_size(FILE *f, long size, const char *path, int64_t *w, int64_t *h)
{
    bool have_frame = false;
    for (long off = 2; ; ) {
        uint8_t m[4];
        if (!read_at(f, off, m, 2)) break;
        if (m[0] != 0xff) return nl_seterr(NL_EFORMAT, "'%s' is a corrupt JPEG (no marker at byte %ld)", path, off);
        if (m[1] == 0xff) { off++; continue; }                       /* fill byte */
        if (m[1] == 0x01 || (m[1] >= 0xd0 && m[1] <= 0xd7)) { off += 2; continue; } /* no length */
        if (m[1] == 0xd9) break;                                    /* EOI before any scan */
        if (!read_at(f, off + 2, m + 2, 2)) break;
        long len = (long)m[2] << 8 | m[3];
        if (len < 2 || off + 2 + len > size) break;
        bool sof = m[1] >= 0xc0 && m[1] <= 0xcf && m[1] != 0xc4 && m[1] != 0xc8 && m[1] != 0xcc;
        if (sof) {
            uint8_t s[5];
            if (len < 7 || !read_at(f, off + 5, s, 4)) break;
            *h = (int64_t)s[0] << 8 | s[1];
            *w = (int64_t)s[2] << 8 | s[3];
            have_frame = true;
        }
        if (m[1] == 0xda) {
            if (!have_frame) return nl_seterr(NL_EFORMAT, "'%s' is a corrupt JPEG (a scan before its frame header)", path);
            return NL_OK;
        }
        off += 2 + len;
    }
    return truncated(path, "JPEG", have_frame ? "before its image data" : "before its frame header");
}

/* A BMP: the size from its info header (height negative for top-down rows). */
static nl_status bmp_size(FILE *f, const char *path, int64_t *w, int64_t *h)
{
    uint8_t b[12];
    if (!read_at(f, 14, b, 12)) return truncated(path, "BMP", "inside its header");
    uint32_t hsize = le32(b);
    if (hsize == 12) { /* OS/2 BITMAPCOREHEADER: 16-bit sizes */
        *w = b[4] | b[5] << 8;
        *h = b[6] | b[7] << 8;
    } else {
        *w = (int32_t)le32(b + 4);
        int32_t hh = (int32_t)le32(b + 8);
        *h = hh < 0 ? -(int64_t)hh : hh;
    }
    return NL_OK;
}

/* A PNM (P1 to P6): the width and height after the magic, between blanks and # comments. */
static nl_status pnm_size(FILE *f, const char *path, int64_t *w, int64_t *h)
{
    int64_t v[2] = {0, 0};
    if (fseek(f, 2, SEEK_SET) != 0) return truncated(path, "PNM", "inside its header");
    for (int k = 0; k < 2; k++) {
        int c = fgetc(f);
        for (;;) {
            if (c == '#') while (c != '\n' && c != EOF) c = fgetc(f);
            else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') c = fgetc(f);
            else break;
        }
        if (c < '0' || c > '9') return truncated(path, "PNM", "inside its header");
        for (; c >= '0' && c <= '9'; c = fgetc(f))
            if ((v[k] = v[k] * 10 + (c - '0')) > INT32_MAX)
                return nl_seterr(NL_EFORMAT, "'%s' declares a size over %d", path, INT32_MAX);
    }
    *w = v[0];
    *h = v[1];
    return NL_OK;
}

nl_status nl_image_size(const char *path, int *w, int *h, int64_t max_pixels)
{
    FILE *f = fopen(path, "rb");
    if (!f) return nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    uint8_t sig[8] = {0};
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    int64_t iw = 0, ih = 0;
    nl_status s;
    if (size < 0 || !read_at(f, 0, sig, size < 8 ? (size_t)size : 8))
        s = nl_seterr(NL_EIO, "cannot read '%s': %s", path, strerror(errno));
    else if (size >= 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0)
        s = png_size(f, size, path, &iw, &ih);
    else if (size >= 3 && sig[0] == 0xff && sig[1] == 0xd8 && sig[2] == 0xff)
        s = jpeg_size(f, size, path, &iw, &ih);
    else if (size >= 2 && sig[0] == 'B' && sig[1] == 'M')
        s = bmp_size(f, path, &iw, &ih);
    else if (size >= 2 && sig[0] == 'P' && sig[1] >= '1' && sig[1] <= '6')
        s = pnm_size(f, path, &iw, &ih);
    else
        s = nl_seterr(NL_EFORMAT, "'%s' is not a PNG, JPEG, BMP or PNM image", path);
    fclose(f);
    if (s != NL_OK) return s;
    if (iw < 1 || ih < 1)
        return nl_seterr(NL_EFORMAT, "'%s' declares %lldx%lld pixels", path, (long long)iw, (long long)ih);
    if (iw > max_pixels / ih || iw > INT32_MAX || ih > INT32_MAX)
        return nl_seterr(NL_EFORMAT, "'%s' is %lldx%lld pixels, more than the limit of %lld "
                         "(max_pixels=)", path, (long long)iw, (long long)ih, (long long)max_pixels);
    *w = (int)iw;
    *h = (int)ih;
    return NL_OK;
}

/* ---------------------------------------------------------------- decoding on a helper ---- */

/* One decoding handed to a helper thread; whichever of the two finishes last frees it (the
 * caller leaves early on Ctrl-C and the helper then throws its result away). */
typedef struct job {
    struct job *next;
    atomic_int refs;
    bool done;
    char *path;
    nl_canvas *canvas;
    nl_status status;
    char msg[512];
} job;

/* The helpers: threads that live for the whole run (SDL keeps per-thread error buffers that a
 * thread per image would leak), waiting for jobs; one more is started when none is idle (when a
 * decoding was abandoned to Ctrl-C and still runs, or several threads decode at once). */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER; /* a job was queued */
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER; /* a job finished */
static job *queue;
static int idle;

static void job_unref(job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1) return;
    nl_canvas_release(j->canvas);
    free(j->path);
    free(j);
}

static void *helper(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (!queue) {
            idle++;
            pthread_cond_wait(&pool_work, &pool_lock);
            idle--;
        }
        job *j = queue;
        queue = j->next;
        pthread_mutex_unlock(&pool_lock);
        nl_canvas *c = nl_canvas_load_png(j->path);
        pthread_mutex_lock(&pool_lock);
        j->canvas = c;
        j->status = c ? NL_OK : nl_errcode();
        if (!c) snprintf(j->msg, sizeof j->msg, "%s", nl_errmsg());
        j->done = true;
        pthread_cond_broadcast(&pool_done);
        job *mine = j;
        pthread_mutex_unlock(&pool_lock);
        job_unref(mine);
        pthread_mutex_lock(&pool_lock);
    }
    return NULL;
}

/* nl_canvas_load_png on a helper thread, polling Ctrl-C every 20 ms: NL_EINTR naming the file
 * when interrupted (the helper finishes alone and frees what it decoded). */
static nl_canvas *load_interruptible(const char *path)
{
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->path = strdup(path))) {
        free(j);
        nl_seterr(NL_ENOMEM, "out of memory decoding '%s'", path);
        return NULL;
    }
    atomic_init(&j->refs, 2);
    pthread_mutex_lock(&pool_lock);
    bool started = true;
    if (idle == 0) {
        pthread_t th;
        started = pthread_create(&th, NULL, helper, NULL) == 0;
        if (started) pthread_detach(th);
    }
    if (!started) { /* no thread to be had: decode here */
        pthread_mutex_unlock(&pool_lock);
        free(j->path);
        free(j);
        return nl_canvas_load_png(path);
    }
    job **tail = &queue;
    while (*tail) tail = &(*tail)->next;
    *tail = j;
    pthread_cond_signal(&pool_work);
    while (!j->done && !nl_interrupted()) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&pool_done, &pool_lock, &ts);
    }
    nl_canvas *c = NULL;
    if (j->done) {
        c = j->canvas;
        j->canvas = NULL;
        if (!c) nl_seterr(j->status, "%s", j->msg);
    } else {
        for (job **q = &queue; *q; q = &(*q)->next) /* not started yet: take it back */
            if (*q == j) {
                *q = j->next;
                atomic_fetch_sub(&j->refs, 1);
                break;
            }
        nl_seterr(NL_EINTR, "interrupted decoding '%s'", path);
    }
    pthread_mutex_unlock(&pool_lock);
    job_unref(j);
    return c;
}

nl_status nl_image_load_rgb(const char *path, int64_t max_pixels, int *w, int *h, uint8_t **pixels)
{
    *pixels = NULL;
    int hw, hh;
    nl_status st = nl_image_size(path, &hw, &hh, max_pixels);
    if (st != NL_OK) return st;
    nl_canvas *c = load_interruptible(path);
    if (!c) return nl_errcode();
    size_t n = (size_t)c->w * (size_t)c->h;
    uint8_t *p = malloc(3 * n);
    for (size_t i = 0; p && i < n; i++) {
        p[3 * i] = (uint8_t)NL_RED(c->px[i]);
        p[3 * i + 1] = (uint8_t)NL_GREEN(c->px[i]);
        p[3 * i + 2] = (uint8_t)NL_BLUE(c->px[i]);
    }
    *w = c->w;
    *h = c->h;
    *pixels = p;
    nl_canvas_release(c);
    return p ? NL_OK : nl_seterr(NL_ENOMEM, "out of memory decoding '%s'", path);
}
