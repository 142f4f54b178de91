/* canvas.h: a software RGBA canvas and its drawing primitives (rectangles, lines, discs, text
 * through SDL2_ttf, colormaps, scaled image blits) plus PNG files. Only viz/ includes SDL. */
#ifndef NL_CANVAS_H
#define NL_CANVAS_H

#include <stdbool.h>
#include <stdint.h>

#include "nl.h"

/* Pixels are 0xAARRGGBB in native uint32 order (SDL_PIXELFORMAT_ARGB8888); the canvas is
 * always opaque. */
#define NL_RGB(r, g, b) (0xFF000000u | ((uint32_t)(r) << 16) | ((uint32_t)(g) << 8) | (uint32_t)(b))
#define NL_RED(c) (((c) >> 16) & 0xFF)
#define NL_GREEN(c) (((c) >> 8) & 0xFF)
#define NL_BLUE(c) ((c) & 0xFF)

/* A rectangle in pixels; x, y the top-left corner. */
typedef struct { int x, y, w, h; } nl_rect;

/* A refcounted canvas of w x h pixels, row-major, px[y * w + x]. Drawing is clipped to clip
 * (the whole canvas unless set). */
typedef struct {
    int refcount;
    int w, h;
    uint32_t *px;
    nl_rect clip;
} nl_canvas;

/* A new canvas filled with bg (new reference), or NULL with NL_EINVAL (sizes outside
 * 1..16384) or NL_ENOMEM. */
nl_canvas *nl_canvas_new(int w, int h, uint32_t bg);
nl_canvas *nl_canvas_retain(nl_canvas *c);
/* Drops a reference; frees at zero. NULL is a no-op. */
void nl_canvas_release(nl_canvas *c);
/* Restricts drawing to r intersected with the canvas; nl_canvas_unclip restores the whole. */
void nl_canvas_clip(nl_canvas *c, nl_rect r);
void nl_canvas_unclip(nl_canvas *c);

static inline uint32_t nl_canvas_get(const nl_canvas *c, int x, int y)
{
    return c->px[(size_t)y * (size_t)c->w + (size_t)x];
}

/* Sets one pixel when it lies inside the clip rectangle. */
void nl_canvas_put(nl_canvas *c, int x, int y, uint32_t color);
void nl_canvas_fill_rect(nl_canvas *c, nl_rect r, uint32_t color);
/* The 1-pixel outline of r (inside r). */
void nl_canvas_frame(nl_canvas *c, nl_rect r, uint32_t color);
/* A straight line from (x0, y0) to (x1, y1), both ends included, drawn with Bresenham's
 * algorithm and no anti-aliasing, so exactly predictable pixels: a square of width x width
 * pixels is stamped on each step, its top-left corner (width - 1) / 2 pixels above and left of
 * the line's pixel. Coordinates are doubles rounded to the nearest pixel; lines are clipped. */
void nl_canvas_line(nl_canvas *c, double x0, double y0, double x1, double y1, uint32_t color,
                    int width);
/* A filled disc: every pixel whose centre lies within r + 0.5 of (cx, cy). */
void nl_canvas_disc(nl_canvas *c, int cx, int cy, int r, uint32_t color);

/* Text in DejaVu Sans (from fonts-dejavu-core) at a pixel size, blended onto the canvas.
 * align: 0 left, 1 centre, 2 right of x; y is the top of the text's line box. Returns the
 * width drawn, or -1 with NL_EIO when the font cannot be loaded (message names the path). */
typedef enum { NL_ALIGN_LEFT, NL_ALIGN_CENTER, NL_ALIGN_RIGHT } nl_align;
int nl_canvas_text(nl_canvas *c, int x, int y, int size, uint32_t color, nl_align align,
                   const char *text);
/* As nl_canvas_text, but rotated a quarter turn anticlockwise (reads bottom to top), centred
 * on (x, y). */
int nl_canvas_text_vertical(nl_canvas *c, int x, int y, int size, uint32_t color,
                            const char *text);
/* Measures text at a size: width and height of its box. NL_EIO when the font is missing. */
nl_status nl_text_size(int size, const char *text, int *w, int *h);

/* The viridis colormap (dark violet, blue, teal, green, yellow) at t in [0, 1] (clamped; NaN
 * gives a neutral grey), linearly interpolated between matplotlib's values at t = 0, 0.1, ..., 1. */
uint32_t nl_colormap(double t);
/* Blends a over b with weight t in [0, 1] of a. */
uint32_t nl_color_mix(uint32_t a, uint32_t b, double t);

/* A host image: c planes of h x w floats (CHW, contiguous); c = 1 or 3. */
typedef struct {
    int c, h, w;
    const float *data;
} nl_image;

/* Draws img into r with nearest-neighbour scaling: pixel (x, y) of r shows source element
 * (y * h / r.h, x * w / r.w). Values map linearly from [lo, hi] to levels 0..255 (rounded,
 * clamped): three planes as RGB, one plane as nl_colormap(level / 255) (or as grey when grey is
 * set). NaN pixels are grey. When lo >= hi (a constant map) every value shows as level 0. */
void nl_canvas_blit(nl_canvas *c, nl_rect r, nl_image img, float lo, float hi, bool grey);
/* The smallest and largest finite values of n floats (0, 0 when none is finite). */
void nl_minmax(const float *v, int64_t n, float *lo, float *hi);

/* Writes the canvas as a PNG file (SDL2_image), atomically: a temporary file next to path,
 * renamed over it. Creates missing parent directories. NL_EIO with the path and reason. */
nl_status nl_canvas_save_png(const nl_canvas *c, const char *path);
/* Reads a PNG (or any format SDL2_image knows) into a new canvas (new reference), or NULL
 * with NL_EIO / NL_EFORMAT naming the path. */
nl_canvas *nl_canvas_load_png(const char *path);

#endif
