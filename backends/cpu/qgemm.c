/* qgemm.c: the int8 inference kernels: quantized convolution (and linear, its 1x1 case) as u8 x s8
 * GEMM with int32 accumulation over NHWC activations, quantize/dequantize, and u8 max pooling. */
#include "cpu/cpu.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The GEMM works on tiles of TILE_M output pixels: each thread gathers a tile's rows of the
 * im2col matrix A [M, Kp] (u8, K = (kh, kw, c) padded to Kp, a multiple of 4, with zero weights
 * under the padding), multiplies them by all output channels into an int32 tile, and writes the
 * requantized or dequantized outputs. Both paths compute the same exact int32 sums; the shared
 * epilogue turns them into outputs, so VNNI and the portable path give identical results. */
enum { TILE_M = 12, OGROUP = 64 };

/* ---------------------------------------------------------------- ISA choice ------------ */

static int isa_forced = -1; /* -1: not set (environment / CPU decide), 0: generic, 1: vnni */

nl_status nl_cpu_qgemm_set_isa(const char *name)
{
    if (!name || strcmp(name, "auto") == 0) isa_forced = -1;
    else if (strcmp(name, "generic") == 0) isa_forced = 0;
    else if (strcmp(name, "vnni") == 0) {
        if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw"))
            return nl_seterr(NL_EUNSUPPORTED, "quant: this CPU has no AVX-512 VNNI");
        isa_forced = 1;
    } else
        return nl_seterr(NL_EINVAL, "quant: unknown ISA '%s' (auto, generic, vnni)", name);
    return NL_OK;
}

const char *nl_cpu_qgemm_isa(void)
{
    if (isa_forced >= 0) return isa_forced ? "vnni" : "generic";
    const char *env = getenv("NNLAB_QUANT_ISA");
    if (env && strcmp(env, "generic") == 0) return "generic";
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") ? "vnni"
                                                                                     : "generic";
}

/* ---------------------------------------------------------------- geometry -------------- */

typedef struct {
    int64_t N, H, W, C, O, K, S, P, OH, OW, M, Kdim, Kp, Opad;
    uint8_t zp;
} qgeom;

static qgeom geometry(const nl_op *op)
{
    const nl_tensor *x = op->src[0], *w = op->src[1];
    qgeom g = {.N = x->shape[0], .H = x->shape[1], .W = x->shape[2], .C = x->shape[3],
               .O = w->shape[0], .K = w->shape[2], .S = op->i[0], .P = op->i[1],
               .zp = (uint8_t)op->f[1]};
    g.OH = (g.H + 2 * g.P - g.K) / g.S + 1;
    g.OW = (g.W + 2 * g.P - g.K) / g.S + 1;
    g.M = g.N * g.OH * g.OW;
    g.Kdim = g.K * g.K * g.C;
    g.Kp = (g.Kdim + 3) & ~(int64_t)3;
    g.Opad = (g.O + 15) & ~(int64_t)15;
    return g;
}

/* memcpy for the short runs of a window row (a few bytes to a few hundred): no library call. */
static inline void copy_run(uint8_t *d, const uint8_t *s, int64_t n)
{
    if (n >= 16) {
        memcpy(d, s, (size_t)n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8), memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4), memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4), memcpy(d + n - 4, &b, 4);
    } else {
        for (int64_t i = 0; i < n; i++) d[i] = s[i];
    }
}

/* Row m of A (output pixel (n, oh, ow)): the K x K window of x, channels innermost, the zero
 * point (real 0) outside the image, zeros in the padding to Kp. A window row's in-image part is
 * one contiguous run of x (NHWC). */
static void gather_row(const qgeom *g, const uint8_t *x, int64_t n, int64_t oh, int64_t ow, uint8_t *row)
{
    const int64_t iw0 = ow * g->S - g->P, kw0 = iw0 < 0 ? -iw0 : 0,
                  kw1 = iw0 + g->K > g->W ? g->W - iw0 : g->K, KC = g->K * g->C;
    uint8_t *d = row;
    for (int64_t kh = 0; kh < g->K; kh++, d += KC) {
        const int64_t ih = oh * g->S - g->P + kh;
        if (ih < 0 || ih >= g->H || kw1 <= kw0) {
            memset(d, g->zp, (size_t)KC);
            continue;
        }
        if (kw0 > 0) memset(d, g->zp, (size_t)(kw0 * g->C));
        copy_run(d + kw0 * g->C, x + ((n * g->H + ih) * g->W + iw0 + kw0) * g->C, (kw1 - kw0) * g->C);
        if (kw1 < g->K) memset(d + kw1 * g->C, g->zp, (size_t)((g->K - kw1) * g->C));
    }
    for (int64_t k = g->Kdim; k < g->Kp; k++) row[k] = 0;
}

/* Rows m0 .. m0+TILE_M of A into a (rows past M zero). */
static void gather_tile(const qgeom *g, const uint8_t *x, int64_t m0, uint8_t *a)
{
    int64_t ow = m0 % g->OW, oh = (m0 / g->OW) % g->OH, n = m0 / (g->OW * g->OH);
    for (int64_t r = 0; r < TILE_M; r++) {
        if (m0 + r >= g->M) {
            memset(a + r * g->Kp, 0, (size_t)g->Kp);
            continue;
        }
        gather_row(g, x, n, oh, ow, a + r * g->Kp);
        if (++ow == g->OW) {
            ow = 0;
            if (++oh == g->OH) oh = 0, n++;
        }
    }
}

/* ---------------------------------------------------------------- weights --------------- */

/* Weights reordered to (kh, kw, c) rows of Kp bytes: wk[o][Kp], rows past O zero up to Opad;
 * rowsum[o] = the sum of row o (to take out the activations' zero point). */
static void reorder_weights(const qgeom *g, const int8_t *w, int8_t *wk, int32_t *rowsum)
{
    memset(wk, 0, (size_t)(g->Opad * g->Kp));
    for (int64_t o = 0; o < g->O; o++) {
        int32_t sum = 0;
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t t = 0; t < g->K * g->K; t++) {
                const int8_t v = w[(o * g->C + c) * g->K * g->K + t];
                wk[o * g->Kp + t * g->C + c] = v;
                sum += v;
            }
        rowsum[o] = sum;
    }
}

/* VNNI layout: per group of up to 64 channels, [Kp/4][group width][4] so that one 64-byte load
 * holds 16 channels' 4 consecutive weights. */
static void pack_vnni(const qgeom *g, const int8_t *wk, int8_t *wp)
{
    for (int64_t o0 = 0; o0 < g->Opad; o0 += OGROUP) {
        const int64_t width = g->Opad - o0 < OGROUP ? g->Opad - o0 : OGROUP;
        int8_t *dst = wp + o0 * g->Kp;
        for (int64_t kq = 0; kq < g->Kp / 4; kq++)
            for (int64_t j = 0; j < width; j++)
                memcpy(dst + (kq * width + j) * 4, wk + (o0 + j) * g->Kp + kq * 4, 4);
    }
}

/* ---------------------------------------------------------------- micro-kernels --------- */

/* c[r][o] = sum_k a[r][k] * wk[o][k] for TILE_M rows and every (padded) channel. */
static void tile_generic(const qgeom *g, const uint8_t *a, int64_t lda, const int8_t *wk, int32_t *c)
{
    for (int64_t r = 0; r < TILE_M; r++)
        for (int64_t o = 0; o < g->Opad; o++) {
            const uint8_t *ar = a + r * lda;
            const int8_t *wr = wk + o * g->Kp;
            int32_t s = 0;
            for (int64_t k = 0; k < g->Kp; k++) s += (int32_t)ar[k] * wr[k];
            c[r * g->Opad + o] = s;
        }
}

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* MR rows x NV*16 channels of one channel group (width = NV*16 columns of wp per kq step). */
static inline __attribute__((always_inline)) VNNI void
vnni_block(const uint8_t *a, int64_t lda, const int8_t *wp, int64_t nkq, int32_t *c, int64_t ldc,
           const int MR, const int NV)
{
    __m512i acc[6][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
    for (int64_t kq = 0; kq < nkq; kq++) {
        __m512i b[4];
        for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_si512(wp + (kq * NV + v) * 64);
        for (int r = 0; r < MR; r++) {
            int32_t word;
            memcpy(&word, a + r * lda + kq * 4, 4);
            const __m512i av = _mm512_set1_epi32(word);
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, b[v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) _mm512_storeu_si512(c + r * ldc + v * 16, acc[r][v]);
}

static VNNI void tile_vnni(const qgeom *g, const uint8_t *a, int64_t lda, const int8_t *wp, int32_t *c)
{
    const int64_t nkq = g->Kp / 4;
    for (int64_t o0 = 0; o0 < g->Opad; o0 += OGROUP) {
        const int nv = (int)((g->Opad - o0 < OGROUP ? g->Opad - o0 : OGROUP) / 16);
        const int8_t *w = wp + o0 * g->Kp;
        int32_t *co = c + o0;
        for (int r0 = 0; r0 < TILE_M; r0 += 6) {
            const uint8_t *ar = a + r0 * lda;
            int32_t *cr = co + r0 * g->Opad;
            switch (nv) {
            case 1: vnni_block(ar, lda, w, nkq, cr, g->Opad, 6, 1); break;
            case 2: vnni_block(ar, lda, w, nkq, cr, g->Opad, 6, 2); break;
            case 3: vnni_block(ar, lda, w, nkq, cr, g->Opad, 6, 3); break;
            default: vnni_block(ar, lda, w, nkq, cr, g->Opad, 6, 4); break;
            }
        }
    }
}

/* ---------------------------------------------------------------- the convolution ------- */

/* What turns a channel's int32 sum into its real value, per (padded) channel:
 * real = (acc - zrs[o]) * mult[o] + bias[o] with zrs = zp * rowsum, mult = xs * ws[o]. */
typedef struct {
    int32_t *zrs;
    float *mult, *bias;
} qpost;

/* The outputs of rows m0.. from their int32 tile: real values, ReLU, then u8 NHWC at scale ys /
 * zero point yzp (round half to even, saturate), or f32 NCHW. The portable form; the AVX-512 one
 * below does the same operations in the same order (no contraction: -std=c11 keeps a*b+c as two
 * roundings), so both give the same bytes. */
static void epilogue(const nl_op *op, const qgeom *g, const int32_t *c, int64_t m0, const qpost *q)
{
    const float lo = op->i[2] ? 0 : -INFINITY;
    const bool to_u8 = op->dst->dtype == NL_U8;
    const float inv_ys = to_u8 ? (float)(1.0 / op->f[2]) : 0, yzp = (float)op->f[3];
    const int64_t P = g->OH * g->OW, rows = g->M - m0 < TILE_M ? g->M - m0 : TILE_M, O = g->O;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t m = m0 + r;
        const int32_t *cr = c + r * g->Opad;
        uint8_t *yu = to_u8 ? (uint8_t *)nl_tensor_data(op->dst) + m * O : NULL;
        float *yf = to_u8 ? NULL : nl_tensor_f32(op->dst) + (m / P) * O * P + m % P;
        for (int64_t o = 0; o < O; o++) {
            float v = (float)(cr[o] - q->zrs[o]) * q->mult[o] + q->bias[o];
            v = v > lo ? v : lo;
            if (to_u8) {
                float t = nearbyintf(v * inv_ys) + yzp;
                t = t > 0 ? t : 0;
                yu[o] = (uint8_t)(t < 255 ? t : 255);
            } else {
                yf[o * P] = v;
            }
        }
    }
}

/* The u8 epilogue 16 channels at a time (zrs, mult, bias hold Opad entries). */
static VNNI void epilogue_u8_avx512(const nl_op *op, const qgeom *g, const int32_t *c, int64_t m0,
                                    const qpost *q)
{
    const __m512 lo = _mm512_set1_ps(op->i[2] ? 0 : -INFINITY), inv = _mm512_set1_ps((float)(1.0 / op->f[2]));
    const __m512 yzp = _mm512_set1_ps((float)op->f[3]), zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255);
    const int64_t rows = g->M - m0 < TILE_M ? g->M - m0 : TILE_M, O = g->O;
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *cr = c + r * g->Opad;
        uint8_t *y = (uint8_t *)nl_tensor_data(op->dst) + (m0 + r) * O;
        for (int64_t o = 0; o < O; o += 16) {
            const __mmask16 keep = O - o >= 16 ? 0xFFFF : (__mmask16)((1u << (O - o)) - 1);
            const __m512i acc = _mm512_sub_epi32(_mm512_loadu_si512(cr + o), _mm512_loadu_si512(q->zrs + o));
            __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(q->mult + o)),
                                     _mm512_loadu_ps(q->bias + o));
            v = _mm512_max_ps(v, lo);
            __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, yzp), zero), top);
            _mm_mask_storeu_epi8(y + o, keep, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
        }
    }
}

nl_status nl_cpu_qconv2d(const nl_op *op)
{
    const qgeom g = geometry(op);
    const bool vnni = strcmp(nl_cpu_qgemm_isa(), "vnni") == 0, to_u8 = op->dst->dtype == NL_U8;
    const uint8_t *x = nl_tensor_data(op->src[0]);
    const float *ws = nl_tensor_f32(op->src[2]);
    int8_t *wk = malloc((size_t)(g.Opad * g.Kp)), *wp = vnni ? malloc((size_t)(g.Opad * g.Kp)) : NULL;
    qpost q = {calloc((size_t)g.Opad, sizeof *q.zrs), calloc((size_t)g.Opad, sizeof *q.mult),
               calloc((size_t)g.Opad, sizeof *q.bias)};
    if (!wk || (vnni && !wp) || !q.zrs || !q.mult || !q.bias) {
        free(wk), free(wp), free(q.zrs), free(q.mult), free(q.bias);
        return nl_seterr(NL_ENOMEM, "qconv2d: out of memory for the packed weights");
    }
    reorder_weights(&g, nl_tensor_data(op->src[1]), wk, q.zrs);
    if (vnni) pack_vnni(&g, wk, wp);
    for (int64_t o = 0; o < g.O; o++) {
        q.zrs[o] *= g.zp;
        q.mult[o] = (float)op->f[0] * ws[o];
        if (op->src[3]) q.bias[o] = nl_tensor_f32(op->src[3])[o];
    }
    /* A 1x1 stride-1 unpadded window with whole 4-byte groups reads A straight from x. */
    const bool direct = g.K == 1 && g.S == 1 && g.P == 0 && g.C % 4 == 0;
    const int64_t ntiles = (g.M + TILE_M - 1) / TILE_M;
    bool oom = false;
#pragma omp parallel
    {
        uint8_t *a = malloc((size_t)(TILE_M * g.Kp));
        int32_t *c = malloc((size_t)(TILE_M * g.Opad) * sizeof *c);
        if (!a || !c) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(dynamic, 8)
        for (int64_t t = 0; t < ntiles; t++) {
            if (!a || !c) continue;
            const int64_t m0 = t * TILE_M;
            const uint8_t *at = a;
            if (direct && m0 + TILE_M <= g.M) at = x + m0 * g.C;
            else gather_tile(&g, x, m0, a);
            if (vnni) tile_vnni(&g, at, g.Kp, wp, c);
            else tile_generic(&g, at, g.Kp, wk, c);
            if (vnni && to_u8) epilogue_u8_avx512(op, &g, c, m0, &q);
            else epilogue(op, &g, c, m0, &q);
        }
        free(a);
        free(c);
    }
    free(wk), free(wp), free(q.zrs), free(q.mult), free(q.bias);
    return oom ? nl_seterr(NL_ENOMEM, "qconv2d: out of memory for the work tiles") : NL_OK;
}

/* ---------------------------------------------------------------- (de)quantize, pooling - */

nl_status nl_cpu_quantize(const nl_op *op)
{
    const nl_tensor *src = op->src[0], *dst = op->dst;
    const bool quant = dst->dtype == NL_U8;
    const nl_tensor *f = quant ? src : dst; /* the f32 side gives the NCHW geometry */
    const int64_t N = f->shape[0], C = f->shape[1],
                  HW = nl_tensor_numel(f) / (N ? N : 1) / (C ? C : 1);
    const float scale = (float)op->f[0], inv = (float)(1.0 / op->f[0]), zp = (float)op->f[1];
    float *fd = nl_tensor_f32(f);
    uint8_t *qd = nl_tensor_data(quant ? dst : src);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            float *fp = fd + (n * C + c) * HW;
            uint8_t *qp = qd + n * HW * C + c;
            if (quant)
                for (int64_t p = 0; p < HW; p++) {
                    const float q = nearbyintf(fp[p] * inv) + zp;
                    qp[p * C] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
                }
            else
                for (int64_t p = 0; p < HW; p++) fp[p] = scale * ((float)qp[p * C] - zp);
        }
    return NL_OK;
}

nl_status nl_cpu_qpool2d(const nl_op *op)
{
    const nl_tensor *x = op->src[0], *y = op->dst;
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = y->shape[1], OW = y->shape[2], k = op->i[1], s = op->i[2], p = op->i[3];
    const uint8_t *xd = nl_tensor_data(x);
    uint8_t *yd = nl_tensor_data(y);
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < N * OH; row++) {
        const int64_t n = row / OH, oh = row % OH;
        for (int64_t ow = 0; ow < OW; ow++) {
            uint8_t *out = yd + ((n * OH + oh) * OW + ow) * C;
            memset(out, 0, (size_t)C);
            for (int64_t kh = 0; kh < k; kh++) {
                const int64_t ih = oh * s - p + kh;
                if (ih < 0 || ih >= H) continue;
                for (int64_t kw = 0; kw < k; kw++) {
                    const int64_t iw = ow * s - p + kw;
                    if (iw < 0 || iw >= W) continue;
                    const uint8_t *in = xd + ((n * H + ih) * W + iw) * C;
                    for (int64_t c = 0; c < C; c++) out[c] = in[c] > out[c] ? in[c] : out[c];
                }
            }
        }
    }
    return NL_OK;
}

/* ---------------------------------------------------------------- fake quantization ----- */

nl_status nl_cpu_fakequant(const nl_op *op)
{
    const nl_tensor *x = op->src[0], *scales = op->src[1], *gy = op->src[2];
    const int64_t n = nl_tensor_numel(x), rows = scales ? x->shape[0] : 1, cols = rows ? n / rows : 0;
    const float *xd = nl_tensor_f32(x), *gd = gy ? nl_tensor_f32(gy) : NULL;
    const float zp = scales ? 0 : (float)op->f[1], qmin = (float)op->f[2], qmax = (float)op->f[3];
    float *yd = nl_tensor_f32(op->dst);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        /* As the integer layers round: weights x / s (nl_quant_weights_i8), activations
         * x * (1 / s) (NL_OP_QUANTIZE and the requantization in the epilogue). */
        const float s = scales ? nl_tensor_f32(scales)[r] : (float)op->f[0];
        const float inv = scales ? 0 : (float)(1.0 / op->f[0]);
        for (int64_t i = r * cols; i < (r + 1) * cols; i++) {
            const float q = (scales ? nearbyintf(xd[i] / s) : nearbyintf(xd[i] * inv)) + zp;
            if (gd) yd[i] = q >= qmin && q <= qmax ? gd[i] : 0;
            else yd[i] = s * ((q < qmin ? qmin : q > qmax ? qmax : q) - zp);
        }
    }
    return NL_OK;
}
