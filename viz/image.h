/* image.h: image files decoded to plain RGB bytes (SDL2_image: PNG, JPEG, BMP, PNM), for the data sets
 * built from folders of images. */
#ifndef NL_IMAGE_H
#define NL_IMAGE_H

#include <stdint.h>

#include "nl.h"

/* The default limit on an image's pixels (width x height) before it is decoded: 8192 x 8192. */
#define NL_IMAGE_MAX_PIXELS ((int64_t)8192 * 8192)

/* Reads the size of image file path from its header without decoding it: a PNG (its chunks are
 * checked to lie within the file up to IEND), a JPEG (its segments up to the scan), a BMP or a
 * PNM.
 * NL_OK, or NL_EIO (unreadable), NL_EFORMAT (another format, truncated or corrupt, or more than
 * max_pixels pixels) with a message naming the file. */
nl_status nl_image_size(const char *path, int *w, int *h, int64_t max_pixels);

/* Decodes the image file path into *pixels: h rows of w pixels of 3 bytes (R, G, B), malloc'd,
 * for the caller to free; alpha is dropped, grey becomes RGB. The size is checked first
 * (nl_image_size: a file declaring more than max_pixels pixels is refused before decoding), and
 * decoding stops at Ctrl-C (NL_EINTR naming the file). NL_OK, or NL_EIO / NL_EFORMAT with a
 * message naming the file and the reason, or NL_ENOMEM; *pixels is NULL then. Safe to call from
 * several threads at once. Has the type of core/data/dataset.h's nl_image_decoder. */
nl_status nl_image_load_rgb(const char *path, int64_t max_pixels, int *w, int *h, uint8_t **pixels);

#endif
