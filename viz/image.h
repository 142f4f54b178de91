/* image.h: image files decoded to plain RGB bytes (SDL2_image: PNG, JPEG, BMP, PNM, ...), for
 * the data sets built from folders of images. */
#ifndef NL_IMAGE_H
#define NL_IMAGE_H

#include <stdint.h>

#include "nl.h"

/* Decodes the image file path into *pixels: h rows of w pixels of 3 bytes (R, G, B), malloc'd,
 * for the caller to free; alpha is dropped, grey becomes RGB. NL_OK, or NL_EIO (unreadable) /
 * NL_EFORMAT (not an image SDL2_image knows) with a message naming the file and SDL's reason,
 * or NL_ENOMEM; *pixels is NULL then. Safe to call from several threads at once. Has the type of
 * core/data/dataset.h's nl_image_decoder. */
nl_status nl_image_load_rgb(const char *path, int *w, int *h, uint8_t **pixels);

#endif
