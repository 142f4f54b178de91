/* fuzz_image.c: image files (PNG, JPEG, BMP, PNM) through nl_image_load_rgb: the header walk,
 * the size limit (here 1024 x 1024, so that no input decodes for long), SDL2_image behind it. */
#include "fuzz.h"
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    int w, h;
    uint8_t *px = NULL;
    if (nl_image_load_rgb(fuzz_file("in.img", data, n), 1024 * 1024, &w, &h, &px) != NL_OK)
        fuzz_check_error();
    else if (w < 1 || h < 1 || (int64_t)w * h > 1024 * 1024)
        abort();
    free(px);
    return 0;
}
