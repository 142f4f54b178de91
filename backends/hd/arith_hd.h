/* arith_hd.h: per-element arithmetic shared by the CPU and CUDA backends (NL_HD) where C's
 * operators alone do not say it: the wrapping integer power and NaN-propagating float max/min
 * (as torch.maximum / torch.minimum). */
#ifndef NL_ARITH_HD_H
#define NL_ARITH_HD_H

#include "nl_hd.h"

#include <stdint.h>

/* Wrapping integer power (negative exponents as integer division would give: 1, -1 or 0). */
NL_HD int64_t nl_hd_ipow_wrap(int64_t x, int64_t y)
{
    if (y < 0) return x == 1 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x;
    for (; y; y >>= 1, b *= b)
        if (y & 1) r *= b;
    return (int64_t)r;
}

NL_HD float nl_hd_fmax_nan(float x, float y) { return (x > y || x != x) ? x : y; }
NL_HD float nl_hd_fmin_nan(float x, float y) { return (x < y || x != x) ? x : y; }

#endif
