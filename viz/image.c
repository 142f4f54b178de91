/* image.c: image files as RGB bytes, through the canvas's SDL2_image reader (one decoding path
 * for the whole program). */
#include "image.h"
#include "canvas.h"

#include <stdlib.h>

nl_status nl_image_load_rgb(const char *path, int *w, int *h, uint8_t **pixels)
{
    *pixels = NULL;
    nl_canvas *c = nl_canvas_load_png(path);
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
