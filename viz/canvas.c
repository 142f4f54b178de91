/* canvas.c: the software canvas: clipped pixel primitives, text through SDL2_ttf, the colormap,
 * scaled image blits, and PNG files through SDL2_image. */
#include "canvas.h"

#include <SDL.h>
#include <SDL_image.h>
#include <SDL_ttf.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FONT_PATH "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#define MAX_SIDE 16384
#define MAX_FONT 72

/* ---------------------------------------------------------------- canvases -------------- */

nl_canvas *nl_canvas_new(int w, int h, uint32_t bg)
{
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE) {
        nl_seterr(NL_EINVAL, "canvas: size %d x %d is outside 1..%d", w, h, MAX_SIDE);
        return NULL;
    }
    nl_canvas *c = malloc(sizeof *c);
    uint32_t *px = malloc((size_t)w * (size_t)h * sizeof *px);
    if (!c || !px) {
        free(c);
        free(px);
        nl_seterr(NL_ENOMEM, "canvas: out of memory for %d x %d pixels", w, h);
        return NULL;
    }
    *c = (nl_canvas){.refcount = 1, .w = w, .h = h, .px = px, .clip = {0, 0, w, h}};
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) px[i] = bg;
    return c;
}

nl_canvas *nl_canvas_retain(nl_canvas *c)
{
    c->refcount++;
    return c;
}

void nl_canvas_release(nl_canvas *c)
{
    if (!c || --c->refcount > 0) return;
    free(c->px);
    free(c);
}

void nl_canvas_clip(nl_canvas *c, nl_rect r)
{
    int x0 = r.x > 0 ? r.x : 0, y0 = r.y > 0 ? r.y : 0;
    int x1 = r.x + r.w < c->w ? r.x + r.w : c->w, y1 = r.y + r.h < c->h ? r.y + r.h : c->h;
    c->clip = (nl_rect){x0, y0, x1 > x0 ? x1 - x0 : 0, y1 > y0 ? y1 - y0 : 0};
}

void nl_canvas_unclip(nl_canvas *c)
{
    c->clip = (nl_rect){0, 0, c->w, c->h};
}

static inline bool inside(const nl_canvas *c, int x, int y)
{
    return x >= c->clip.x && y >= c->clip.y && x < c->clip.x + c->clip.w && y < c->clip.y + c->clip.h;
}

void nl_canvas_put(nl_canvas *c, int x, int y, uint32_t color)
{
    if (inside(c, x, y)) c->px[(size_t)y * (size_t)c->w + (size_t)x] = color;
}

/* Blends color over pixel (x, y) with coverage a in 0..255 (clipped). */
static void blend(nl_canvas *c, int x, int y, uint32_t color, unsigned a)
{
    if (!inside(c, x, y) || a == 0) return;
    uint32_t *p = &c->px[(size_t)y * (size_t)c->w + (size_t)x];
    unsigned r = (NL_RED(color) * a + NL_RED(*p) * (255 - a) + 127) / 255;
    unsigned g = (NL_GREEN(color) * a + NL_GREEN(*p) * (255 - a) + 127) / 255;
    unsigned b = (NL_BLUE(color) * a + NL_BLUE(*p) * (255 - a) + 127) / 255;
    *p = NL_RGB(r, g, b);
}

void nl_canvas_fill_rect(nl_canvas *c, nl_rect r, uint32_t color)
{
    int x0 = r.x > c->clip.x ? r.x : c->clip.x, y0 = r.y > c->clip.y ? r.y : c->clip.y;
    int x1 = r.x + r.w, y1 = r.y + r.h;
    if (x1 > c->clip.x + c->clip.w) x1 = c->clip.x + c->clip.w;
    if (y1 > c->clip.y + c->clip.h) y1 = c->clip.y + c->clip.h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) c->px[(size_t)y * (size_t)c->w + (size_t)x] = color;
}

void nl_canvas_frame(nl_canvas *c, nl_rect r, uint32_t color)
{
    nl_canvas_fill_rect(c, (nl_rect){r.x, r.y, r.w, 1}, color);
    nl_canvas_fill_rect(c, (nl_rect){r.x, r.y + r.h - 1, r.w, 1}, color);
    nl_canvas_fill_rect(c, (nl_rect){r.x, r.y, 1, r.h}, color);
    nl_canvas_fill_rect(c, (nl_rect){r.x + r.w - 1, r.y, 1, r.h}, color);
}

/* Liang-Barsky: clips the segment to [lo, hi] on both axes (in place); false when nothing is
 * left. */
static bool clip_segment(double *x0, double *y0, double *x1, double *y1, double xlo, double ylo,
                         double xhi, double yhi)
{
    double t0 = 0, t1 = 1, dx = *x1 - *x0, dy = *y1 - *y0;
    double p[4] = {-dx, dx, -dy, dy}, q[4] = {*x0 - xlo, xhi - *x0, *y0 - ylo, yhi - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0 && t > t0) t0 = t;
        if (p[i] > 0 && t < t1) t1 = t;
        if (t0 > t1) return false;
    }
    double ax = *x0 + t0 * dx, ay = *y0 + t0 * dy;
    *x1 = *x0 + t1 * dx;
    *y1 = *y0 + t1 * dy;
    *x0 = ax;
    *y0 = ay;
    return true;
}

void nl_canvas_line(nl_canvas *c, double fx0, double fy0, double fx1, double fy1, uint32_t color,
                    int width)
{
    if (!isfinite(fx0) || !isfinite(fy0) || !isfinite(fx1) || !isfinite(fy1)) return;
    /* Clip to a margin around the clip rectangle, so pixels inside keep their exact positions
     * while far-away coordinates cannot make the loop long. */
    double m = width + 2.0;
    if (!clip_segment(&fx0, &fy0, &fx1, &fy1, c->clip.x - m, c->clip.y - m,
                      c->clip.x + c->clip.w + m, c->clip.y + c->clip.h + m))
        return;
    int x0 = (int)lround(fx0), y0 = (int)lround(fy0), x1 = (int)lround(fx1), y1 = (int)lround(fy1);
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy, off = (width - 1) / 2;
    for (;;) {
        nl_canvas_fill_rect(c, (nl_rect){x0 - off, y0 - off, width, width}, color);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

void nl_canvas_disc(nl_canvas *c, int cx, int cy, int r, uint32_t color)
{
    double lim = (r + 0.5) * (r + 0.5);
    for (int y = -r; y <= r; y++)
        for (int x = -r; x <= r; x++)
            if (x * x + y * y <= lim) nl_canvas_put(c, cx + x, cy + y, color);
}

/* ---------------------------------------------------------------- text ------------------ */

/* Opened fonts by pixel size (kept for the life of the process). */
static TTF_Font *fonts[MAX_FONT + 1];

static TTF_Font *font(int size)
{
    if (size < 6) size = 6;
    if (size > MAX_FONT) size = MAX_FONT;
    if (fonts[size]) return fonts[size];
    if (!TTF_WasInit() && TTF_Init() != 0) {
        nl_seterr(NL_EIO, "viz: SDL2_ttf failed to start: %s", TTF_GetError());
        return NULL;
    }
    if (!(fonts[size] = TTF_OpenFont(FONT_PATH, size)))
        nl_seterr(NL_EIO, "viz: cannot open the font %s (%s); install fonts-dejavu-core",
                  FONT_PATH, TTF_GetError());
    return fonts[size];
}

nl_status nl_text_size(int size, const char *text, int *w, int *h)
{
    TTF_Font *f = font(size);
    if (!f) return nl_errcode();
    if (TTF_SizeUTF8(f, text, w, h) != 0) {
        *w = 0;
        *h = TTF_FontHeight(f);
    }
    return NL_OK;
}

/* Renders text into a new coverage surface (ARGB8888, alpha = coverage); NULL with *width 0 for
 * empty text, NULL with *width -1 and the error set when the font is missing. */
static SDL_Surface *render_text(int size, const char *text, int *width)
{
    TTF_Font *f = font(size);
    *width = f ? 0 : -1;
    if (!f || !text[0]) return NULL;
    SDL_Surface *s = TTF_RenderUTF8_Blended(f, text, (SDL_Color){255, 255, 255, 255});
    SDL_Surface *argb = s ? SDL_ConvertSurfaceFormat(s, SDL_PIXELFORMAT_ARGB8888, 0) : NULL;
    SDL_FreeSurface(s);
    if (argb) *width = argb->w;
    return argb;
}

static unsigned coverage(const SDL_Surface *s, int x, int y)
{
    return ((const uint32_t *)((const uint8_t *)s->pixels + (size_t)y * (size_t)s->pitch))[x] >> 24;
}

int nl_canvas_text(nl_canvas *c, int x, int y, int size, uint32_t color, nl_align align,
                   const char *text)
{
    int width;
    SDL_Surface *s = render_text(size, text, &width);
    if (!s) return width;
    int x0 = align == NL_ALIGN_LEFT ? x : align == NL_ALIGN_CENTER ? x - s->w / 2 : x - s->w;
    for (int sy = 0; sy < s->h; sy++)
        for (int sx = 0; sx < s->w; sx++) blend(c, x0 + sx, y + sy, color, coverage(s, sx, sy));
    SDL_FreeSurface(s);
    return width;
}

int nl_canvas_text_vertical(nl_canvas *c, int x, int y, int size, uint32_t color, const char *text)
{
    int width;
    SDL_Surface *s = render_text(size, text, &width);
    if (!s) return width;
    int x0 = x - s->h / 2, y0 = y + s->w / 2;
    for (int sy = 0; sy < s->h; sy++)
        for (int sx = 0; sx < s->w; sx++) blend(c, x0 + sy, y0 - sx, color, coverage(s, sx, sy));
    SDL_FreeSurface(s);
    return width;
}

/* ---------------------------------------------------------------- colours and images ---- */

uint32_t nl_color_mix(uint32_t a, uint32_t b, double t)
{
    double u = 1 - t;
    return NL_RGB(lround(NL_RED(a) * t + NL_RED(b) * u), lround(NL_GREEN(a) * t + NL_GREEN(b) * u),
                  lround(NL_BLUE(a) * t + NL_BLUE(b) * u));
}

uint32_t nl_colormap(double t)
{
    static const uint32_t stops[] = {
        NL_RGB(0x44, 0x01, 0x54), NL_RGB(0x48, 0x24, 0x75), NL_RGB(0x41, 0x44, 0x87),
        NL_RGB(0x35, 0x5f, 0x8d), NL_RGB(0x2a, 0x78, 0x8e), NL_RGB(0x21, 0x91, 0x8c),
        NL_RGB(0x22, 0xa8, 0x84), NL_RGB(0x44, 0xbf, 0x70), NL_RGB(0x7a, 0xd1, 0x51),
        NL_RGB(0xbd, 0xdf, 0x26), NL_RGB(0xfd, 0xe7, 0x25)};
    enum { LAST = sizeof stops / sizeof stops[0] - 1 };
    if (isnan(t)) return NL_RGB(128, 128, 128);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    int i = (int)(t * LAST);
    if (i == LAST) return stops[LAST];
    return nl_color_mix(stops[i + 1], stops[i], t * LAST - i);
}

void nl_minmax(const float *v, int64_t n, float *lo, float *hi)
{
    float a = INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            a = v[i] < a ? v[i] : a;
            b = v[i] > b ? v[i] : b;
        }
    *lo = a <= b ? a : 0;
    *hi = a <= b ? b : 0;
}

/* The colormap at t = i / 255 for i in 0..255 (made on first use). */
static const uint32_t *colormap_table(void)
{
    static uint32_t table[256];
    static bool made;
    for (int i = 0; !made && i < 256; i++) table[i] = nl_colormap(i / 255.0);
    made = true;
    return table;
}

void nl_canvas_blit(nl_canvas *c, nl_rect r, nl_image img, float lo, float hi, bool grey)
{
    if (r.w < 1 || r.h < 1 || img.w < 1 || img.h < 1) return;
    const uint32_t *cmap = colormap_table();
    size_t plane = (size_t)img.h * (size_t)img.w;
    float scale = hi > lo ? 255.0f / (hi - lo) : 0;
    int planes = img.c == 3 ? 3 : 1;
    for (int y = 0; y < r.h; y++) {
        size_t row = (size_t)((int64_t)y * img.h / r.h) * (size_t)img.w;
        for (int x = 0; x < r.w; x++) {
            if (!inside(c, r.x + x, r.y + y)) continue;
            size_t k = row + (size_t)((int64_t)x * img.w / r.w);
            int v[3];
            bool nan = false;
            for (int ch = 0; ch < planes; ch++) {
                float s = img.data[(size_t)ch * plane + k];
                nan |= isnan(s);
                float level = (s - lo) * scale; /* 0..255 */
                v[ch] = !(level > 0) ? 0 : level >= 255 ? 255 : (int)lroundf(level);
            }
            uint32_t color = nan ? NL_RGB(128, 128, 128)
                           : planes == 3 ? NL_RGB(v[0], v[1], v[2])
                           : grey ? NL_RGB(v[0], v[0], v[0]) : cmap[v[0]];
            c->px[(size_t)(r.y + y) * (size_t)c->w + (size_t)(r.x + x)] = color;
        }
    }
}

/* ---------------------------------------------------------------- PNG files ------------- */

/* Creates the parent directories of path (mkdir -p of its dirname). */
static nl_status make_parents(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return nl_seterr(NL_ENOMEM, "viz: out of memory");
    nl_status s = NL_OK;
    for (char *p = strchr(dir + 1, '/'); p && s == NL_OK; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdir(dir, 0777) != 0 && errno != EEXIST)
            s = nl_seterr(NL_EIO, "viz: cannot create the folder %s: %s", dir, strerror(errno));
        *p = '/';
    }
    free(dir);
    return s;
}

nl_status nl_canvas_save_png(const nl_canvas *c, const char *path)
{
    if (!path || !path[0]) return nl_seterr(NL_EINVAL, "viz.save: no file name");
    nl_status s = make_parents(path);
    if (s != NL_OK) return s;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return nl_seterr(NL_EINVAL, "viz.save: the file name is too long");
    SDL_Surface *surf = SDL_CreateRGBSurfaceWithFormatFrom(c->px, c->w, c->h, 32, c->w * 4,
                                                           SDL_PIXELFORMAT_ARGB8888);
    if (!surf) return nl_seterr(NL_ENOMEM, "viz.save: %s", SDL_GetError());
    int rc = IMG_SavePNG(surf, tmp);
    SDL_FreeSurface(surf);
    if (rc != 0) {
        s = nl_seterr(NL_EIO, "viz.save: cannot write %s: %s", path, IMG_GetError());
        remove(tmp);
        return s;
    }
    if (rename(tmp, path) != 0) {
        s = nl_seterr(NL_EIO, "viz.save: cannot rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
    }
    return s;
}

nl_canvas *nl_canvas_load_png(const char *path)
{
    SDL_Surface *raw = IMG_Load(path);
    if (!raw) {
        nl_seterr(access(path, R_OK) == 0 ? NL_EFORMAT : NL_EIO, "viz: cannot read %s: %s", path,
                  IMG_GetError());
        return NULL;
    }
    SDL_Surface *s = SDL_ConvertSurfaceFormat(raw, SDL_PIXELFORMAT_ARGB8888, 0);
    SDL_FreeSurface(raw);
    if (!s) {
        nl_seterr(NL_ENOMEM, "viz: cannot convert %s: %s", path, SDL_GetError());
        return NULL;
    }
    nl_canvas *c = nl_canvas_new(s->w, s->h, 0);
    for (int y = 0; c && y < s->h; y++)
        memcpy(c->px + (size_t)y * (size_t)s->w, (uint8_t *)s->pixels + (size_t)y * (size_t)s->pitch,
               (size_t)s->w * 4);
    SDL_FreeSurface(s);
    return c;
}
