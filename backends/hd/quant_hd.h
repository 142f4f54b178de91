/* quant_hd.h: per-element quantization math shared by the CPU and CUDA backends (NL_HD): the
 * saturating dtype conversions (round half to even, clamp, NaN -> 0) and fake-quantization. */
#ifndef NL_QUANT_HD_H
#define NL_QUANT_HD_H

#include "nl_hd.h"

#include <math.h>
#include <stdint.h>

/* Float -> integer: round half to even (nearbyint in the default rounding mode), clamp to the
 * range, NaN -> 0. Integer -> narrower integer: clamp. The bounds are exact in F. */
#define NL_HD_SAT_FLOAT(name, F, RND, T, LO, HI) \
    NL_HD T name(F x) \
    { \
        F r = RND(x); \
        return r != r ? 0 : r <= (F)(LO) ? (T)(LO) : r >= (F)(HI) ? (T)(HI) : (T)r; \
    }
NL_HD_SAT_FLOAT(nl_hd_f32_to_i8, float, nearbyintf, int8_t, INT8_MIN, INT8_MAX)
NL_HD_SAT_FLOAT(nl_hd_f32_to_u8, float, nearbyintf, uint8_t, 0, UINT8_MAX)
NL_HD_SAT_FLOAT(nl_hd_f64_to_i8, double, nearbyint, int8_t, INT8_MIN, INT8_MAX)
NL_HD_SAT_FLOAT(nl_hd_f64_to_u8, double, nearbyint, uint8_t, 0, UINT8_MAX)
NL_HD_SAT_FLOAT(nl_hd_f64_to_i32, double, nearbyint, int32_t, INT32_MIN, INT32_MAX)
#undef NL_HD_SAT_FLOAT
/* INT32_MAX is not a float: (float)INT32_MAX is 2^31, the first value that must saturate. */
NL_HD int32_t nl_hd_f32_to_i32(float x)
{
    float r = nearbyintf(x);
    return r != r ? 0 : r >= 2147483648.0f ? INT32_MAX : r <= -2147483648.0f ? INT32_MIN : (int32_t)r;
}
NL_HD int8_t nl_hd_int_to_i8(int32_t x) { return x < INT8_MIN ? INT8_MIN : x > INT8_MAX ? INT8_MAX : (int8_t)x; }
NL_HD uint8_t nl_hd_int_to_u8(int32_t x) { return x < 0 ? 0 : x > UINT8_MAX ? UINT8_MAX : (uint8_t)x; }

/* Fake-quantization of x (NL_OP_FAKEQUANT), rounded as the integer layers round: per row
 * (weights, scale s, zp 0) as x / s, per tensor (activations) as x * inv with inv = 1 / s. With a
 * gradient (has_gy) it is the straight-through backward: gy where the code lies in [qmin, qmax],
 * else 0. */
NL_HD float nl_hd_fakequant(float x, float s, float inv, int per_row, float zp, float qmin,
                            float qmax, int has_gy, float gy)
{
    const float q = (per_row ? nearbyintf(x / s) : nearbyintf(x * inv)) + zp;
    if (has_gy) return q >= qmin && q <= qmax ? gy : 0;
    return s * ((q < qmin ? qmin : q > qmax ? qmax : q) - zp);
}

#endif
