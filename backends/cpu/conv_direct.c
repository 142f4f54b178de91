/* conv_direct.c: stride-1 convolution without im2col (AVX2 + FMA), for the forward pass and, with
 * the weights flipped and transposed, the data gradient. The image is copied once into a padded
 * buffer; then a tile of DR output channels x 16 pixels of one output row lives in 12 registers
 * while every (input channel, kh, kw) adds a broadcast weight times 16 shifted input pixels. Each
 * output is summed in one fixed order (c, kh, kw) by one thread, so results do not depend on the
 * thread count. conv2d.c chooses this path or im2col + sgemm (cpu_isa). */
#include "cpu_kernels.h"

#include <immintrin.h>
#include <string.h>

void cpu_conv_direct_pack(const float *w, int64_t O, int64_t C, int64_t KH, int64_t KW, bool flip,
                          float *wp)
{
    const int64_t outs = flip ? C : O, ins = flip ? O : C, kk = KH * KW;
    for (int64_t b = 0; b < (outs + CPU_DR - 1) / CPU_DR; b++)
        for (int64_t i = 0; i < ins; i++)
            for (int64_t k = 0; k < kk; k++)
                for (int64_t r = 0; r < CPU_DR; r++) {
                    const int64_t o = b * CPU_DR + r;
                    float v = 0;
                    if (o < outs) v = flip ? w[(i * C + o) * kk + (kk - 1 - k)] : w[(o * C + i) * kk + k];
                    wp[((b * ins + i) * kk + k) * CPU_DR + r] = v;
                }
}

void cpu_conv_pad(const float *x, int64_t C, int64_t H, int64_t W, int64_t p, float *xp)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p;
    for (int64_t c = 0; c < C; c++) {
        float *d = xp + c * Hp * Wp;
        memset(d, 0, (size_t)(p * Wp) * sizeof *d);
        for (int64_t h = 0; h < H; h++) {
            float *r = d + (h + p) * Wp;
            for (int64_t j = 0; j < p; j++) r[j] = r[p + W + j] = 0;
            memcpy(r + p, x + (c * H + h) * W, (size_t)W * sizeof *r);
        }
        memset(d + (p + H) * Wp, 0, (size_t)(p * Wp) * sizeof *d);
    }
}

/* One tile: rows [0, R) of a block of DR output channels (R < DR only in the last block, which
 * then computes no rows past the channels), pixels [0, np) (np <= 16) of one output row, from x
 * (the padded image at the tile's first input pixel). masked: np < 16. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
tile(const float *x, const cpu_direct_geom *g, const float *wb, const float *bias, float *y,
     const int R, int64_t np, bool masked)
{
    __m256 a0[CPU_DR], a1[CPU_DR];
    for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm256_set1_ps(bias ? bias[r] : 0);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)np), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)np - 8), lane);
    const int64_t cs = g->Hp * g->Wp;
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t kh = 0; kh < g->KH; kh++) {
            const float *xr = x + c * cs + kh * g->Wp;
            const float *wr = wb + (c * g->KH + kh) * g->KW * CPU_DR;
            for (int64_t kw = 0; kw < g->KW; kw++) {
                __m256 x0, x1;
                if (masked) {
                    x0 = _mm256_maskload_ps(xr + kw, m0);
                    x1 = _mm256_maskload_ps(xr + kw + 8, m1);
                } else {
                    x0 = _mm256_loadu_ps(xr + kw);
                    x1 = _mm256_loadu_ps(xr + kw + 8);
                }
                for (int r = 0; r < R; r++) {
                    const __m256 b = _mm256_broadcast_ss(wr + kw * CPU_DR + r);
                    a0[r] = _mm256_fmadd_ps(b, x0, a0[r]);
                    a1[r] = _mm256_fmadd_ps(b, x1, a1[r]);
                }
            }
        }
    const int64_t ys = g->OH * g->OW;
    for (int r = 0; r < R; r++) {
        if (masked) {
            _mm256_maskstore_ps(y + r * ys, m0, a0[r]);
            _mm256_maskstore_ps(y + r * ys + 8, m1, a1[r]);
        } else {
            _mm256_storeu_ps(y + r * ys, a0[r]);
            _mm256_storeu_ps(y + r * ys + 8, a1[r]);
        }
    }
}

/* The R rows of one block for every output row, 16 pixels a tile. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
block_rows(const cpu_direct_geom *g, const float *xp, const float *wb, const float *bb, float *yb, const int R)
{
    for (int64_t oh = 0; oh < g->OH; oh++) {
        const float *xr = xp + oh * g->Wp;
        float *yr = yb + oh * g->OW;
        int64_t ow = 0;
        for (; ow + 16 <= g->OW; ow += 16) tile(xr + ow, g, wb, bb, yr + ow, R, 16, false);
        if (ow < g->OW) tile(xr + ow, g, wb, bb, yr + ow, R, g->OW - ow, true);
    }
}

__attribute__((target("avx2,fma"))) void cpu_conv_direct_avx2(const cpu_direct_geom *g,
                                                              const float *xp, const float *wp,
                                                              const float *bias, float *y)
{
    const int64_t kk = g->C * g->KH * g->KW;
    _Static_assert(CPU_DR == 6, "the row counts below");
    for (int64_t b = 0; b * CPU_DR < g->O; b++) {
        const int64_t o0 = b * CPU_DR, nr = g->O - o0 < CPU_DR ? g->O - o0 : CPU_DR;
        const float *wb = wp + b * kk * CPU_DR, *bb = bias ? bias + o0 : NULL;
        float *yb = y + o0 * g->OH * g->OW;
        switch (nr) { /* a row count known when compiling: no products for rows past O */
        case 1: block_rows(g, xp, wb, bb, yb, 1); break;
        case 2: block_rows(g, xp, wb, bb, yb, 2); break;
        case 3: block_rows(g, xp, wb, bb, yb, 3); break;
        case 4: block_rows(g, xp, wb, bb, yb, 4); break;
        case 5: block_rows(g, xp, wb, bb, yb, 5); break;
        default: block_rows(g, xp, wb, bb, yb, CPU_DR); break;
        }
    }
}

void cpu_conv_direct_ref(const cpu_direct_geom *g, const float *xp, const float *wp,
                         const float *bias, float *y)
{
    const int64_t kk = g->C * g->KH * g->KW;
    for (int64_t o = 0; o < g->O; o++) {
        const float *wb = wp + (o / CPU_DR) * kk * CPU_DR + o % CPU_DR;
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                float s = bias ? bias[o] : 0;
                for (int64_t c = 0; c < g->C; c++)
                    for (int64_t kh = 0; kh < g->KH; kh++)
                        for (int64_t kw = 0; kw < g->KW; kw++)
                            s = fmaf(wb[((c * g->KH + kh) * g->KW + kw) * CPU_DR],
                                     xp[(c * g->Hp + oh + kh) * g->Wp + ow + kw], s);
                y[(o * g->OH + oh) * g->OW + ow] = s;
            }
    }
}

/* ---------------------------------------------------------------- filter gradient ------- */

/* lanes[o][c][kh][kw][8] += gy[n][o] (x) xp[n][c] shifted by (kh, kw), summed over the output
 * pixels of images [0, nn) lane by lane (lane = pixel mod 8 within each output row's vectors), for
 * nr <= CPU_FR output channels from o and nk <= 3 kernel columns from kw0. xc and gyo point at the
 * first image's channel c and output channel o. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
filter_tile(const cpu_direct_geom *g, int64_t nn, const float *xc, const float *gyo, float *lo,
            int64_t kh, int64_t kw0, int nr, int nk)
{
    const int64_t P = g->OH * g->OW, ls = g->C * g->KH * g->KW * 8; /* lanes' stride per o */
    __m256 acc[CPU_FR][3];
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nk; k++) acc[r][k] = _mm256_loadu_ps(lo + r * ls + (kh * g->KW + kw0 + k) * 8);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(g->OW % 8)), lane);
#define FILTER_STEP(LOAD, xv, gv) \
    do { \
        __m256 x[3]; \
        for (int k = 0; k < nk; k++) { \
            x[k] = LOAD(xv + k); \
            __asm__("" : "+x"(x[k])); /* kept in a register, not loaded for each FMA */ \
        } \
        __m256 y[CPU_FR]; \
        for (int r = 0; r < nr; r++) { \
            y[r] = LOAD(gv + r * P); \
            __asm__("" : "+x"(y[r])); \
        } \
        for (int r = 0; r < nr; r++) \
            for (int k = 0; k < nk; k++) acc[r][k] = _mm256_fmadd_ps(y[r], x[k], acc[r][k]); \
    } while (0)
#define MASKLOAD(p) _mm256_maskload_ps(p, tail)
    for (int64_t n = 0; n < nn; n++) {
        const float *xn = xc + n * g->C * g->Hp * g->Wp, *gn = gyo + n * g->O * P;
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *xr = xn + (oh + kh) * g->Wp + kw0, *gr = gn + oh * g->OW;
            int64_t ow = 0;
            for (; ow + 8 <= g->OW; ow += 8) FILTER_STEP(_mm256_loadu_ps, xr + ow, gr + ow);
            if (ow < g->OW) FILTER_STEP(MASKLOAD, xr + ow, gr + ow);
        }
    }
#undef MASKLOAD
#undef FILTER_STEP
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nk; k++) _mm256_storeu_ps(lo + r * ls + (kh * g->KW + kw0 + k) * 8, acc[r][k]);
}

enum { FILTER_IMAGES = 8 }; /* images per pass over the lanes (their inputs stay in cache) */

__attribute__((target("avx2,fma"))) void cpu_conv_filter_avx2(const cpu_direct_geom *g, int64_t N,
                                                              const float *xp, const float *gy,
                                                              int64_t o0, int64_t o1, float *lanes)
{
    const int64_t P = g->OH * g->OW, ls = g->C * g->KH * g->KW * 8;
    for (int64_t n = 0; n < N; n += FILTER_IMAGES) {
        const int64_t nn = N - n < FILTER_IMAGES ? N - n : FILTER_IMAGES;
        for (int64_t o = o0; o < o1; o += CPU_FR) {
            const int nr = o1 - o < CPU_FR ? (int)(o1 - o) : CPU_FR;
            const float *gyo = gy + (n * g->O + o) * P;
            for (int64_t c = 0; c < g->C; c++) {
                const float *xc = xp + (n * g->C + c) * g->Hp * g->Wp;
                float *lo = lanes + (o - o0) * ls + c * g->KH * g->KW * 8;
                for (int64_t kh = 0; kh < g->KH; kh++)
                    for (int64_t kw = 0; kw < g->KW; kw += 3) {
                        const int nk = g->KW - kw < 3 ? (int)(g->KW - kw) : 3;
                        switch (nr * 4 + nk) { /* constants, so that the tile lives in registers */
#define CASE(R, K) \
    case R * 4 + K: filter_tile(g, nn, xc, gyo, lo, kh, kw, R, K); break;
                            CASE(3, 3) CASE(3, 2) CASE(3, 1) CASE(2, 3) CASE(2, 2) CASE(2, 1)
                            CASE(1, 3) CASE(1, 2) default: filter_tile(g, nn, xc, gyo, lo, kh, kw, 1, 1);
#undef CASE
                        }
                    }
            }
        }
    }
}

void cpu_conv_filter_ref(const cpu_direct_geom *g, int64_t N, const float *xp, const float *gy,
                         int64_t o0, int64_t o1, float *lanes)
{
    const int64_t P = g->OH * g->OW, kk = g->C * g->KH * g->KW;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = o0; o < o1; o++)
            for (int64_t i = 0; i < kk; i++) {
                const int64_t c = i / (g->KH * g->KW), kh = i / g->KW % g->KH, kw = i % g->KW;
                const float *xc = xp + (n * g->C + c) * g->Hp * g->Wp, *gyo = gy + (n * g->O + o) * P;
                float *l = lanes + ((o - o0) * kk + i) * 8;
                for (int64_t oh = 0; oh < g->OH; oh++)
                    for (int64_t ow = 0; ow < g->OW; ow++)
                        l[ow % 8] = fmaf(gyo[oh * g->OW + ow], xc[(oh + kh) * g->Wp + ow + kw], l[ow % 8]);
            }
}

float cpu_lanes_sum(const float *l)
{
    const float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    return (a0 + a2) + (a1 + a3);
}
