/* qgemm.c: the int8 inference kernels: quantized convolution (and linear, its 1x1 case) as u8 x s8
 * GEMM with int32 accumulation over NHWC activations, quantize/dequantize, and u8 max pooling. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "hd/quant_hd.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The GEMM works on tiles of up to TILE_M output pixels (whole pooling windows when a pool is
 * fused), multiplied by all output channels. The portable path gathers a tile's rows of the im2col
 * matrix A [M, Kp] (u8, K = (kh, kw, c) padded to Kp, a multiple of 4, with zero weights under the
 * padding) into an int32 tile, then writes its outputs. The VNNI path gathers nothing: in an NHWC
 * image padded with the zero point, the kw x c values of window row kh are KC contiguous bytes, so
 * it reads its 4-byte groups straight from the image (KC rounded up to KCp, a multiple of 4; the
 * bytes read past KC meet zero weights), and requantizes u8 outputs (and takes their pooled
 * maximum) from its registers. The AVX2 path (CPUs without VNNI) reads the same padded image,
 * widening each window row to 16 bits as it copies it into the tile, and multiplies with vpmaddwd:
 * u8 x s8 products in pairs, exact in int32 (vpmaddubsw's 16-bit pair sums would saturate at
 * 255 x 127 x 2). All compute the same exact int32 sums and requantize them with the same
 * operations, so they give identical results. */
enum { TILE_M = 24, OGROUP = 64 };

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* ---------------------------------------------------------------- ISA choice ------------ */

typedef enum { Q_GENERIC, Q_AVX2, Q_VNNI, Q_COUNT } qisa;
static const char *const qisa_names[Q_COUNT] = {[Q_GENERIC] = "generic", [Q_AVX2] = "avx2", [Q_VNNI] = "vnni"};

static bool qisa_has(qisa i)
{
    switch (i) {
    case Q_VNNI: return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    case Q_AVX2: return __builtin_cpu_supports("avx2");
    default: return true;
    }
}

static int isa_forced = -1; /* -1: not set (environment / CPU decide), else a qisa */

nl_status nl_cpu_qgemm_set_isa(const char *name)
{
    if (!name || strcmp(name, "auto") == 0) {
        isa_forced = -1;
        return NL_OK;
    }
    for (int i = 0; i < Q_COUNT; i++)
        if (strcmp(name, qisa_names[i]) == 0) {
            if (!qisa_has(i))
                return nl_seterr(NL_EUNSUPPORTED, "quant: this CPU has no %s",
                                 i == Q_VNNI ? "AVX-512 VNNI" : "AVX2");
            isa_forced = i;
            return NL_OK;
        }
    return nl_seterr(NL_EINVAL, "quant: unknown ISA '%s' (auto, generic, avx2, vnni)", name);
}

static qisa qgemm_isa(void)
{
    if (isa_forced >= 0) return (qisa)isa_forced;
    const char *env = getenv("NNLAB_QUANT_ISA");
    if (env && strcmp(env, "generic") == 0) return Q_GENERIC;
    if (cpu_isa() >= CPU_ISA_AVX512 && qisa_has(Q_VNNI)) return Q_VNNI;
    return cpu_isa() >= CPU_ISA_AVX2 ? Q_AVX2 : Q_GENERIC;
}

const char *nl_cpu_qgemm_isa(void) { return qisa_names[qgemm_isa()]; }

/* ---------------------------------------------------------------- the int8 peak ---------- */

/* Multiply-adds of u8 x s8 products per second that the machine's best int8 instruction allows:
 * chains of that instruction alone (the kernels' additions run on other pipes), every thread at
 * once. Written in asm: 10 independent chains in registers cover the latency of two multiplier
 * pipes, and a compiler left to itself spills some of them to memory. */
#define PEAK_MADD(a) "vpmaddwd %[w], %[" #a "], %[" #a "]\n\t"  /* a = madd(a, w) */
#define PEAK_DPBUSD(a) "vpdpbusd %[w], %[w], %[" #a "]\n\t" /* a += dpbusd(w, w) */
#define PEAK_CHAINS(I, W)                                                                          \
    __asm__ volatile(I(a0) I(a1) I(a2) I(a3) I(a4) I(a5) I(a6) I(a7) I(a8) I(a9)                   \
                     : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4), \
                       [a5] "+v"(a5), [a6] "+v"(a6), [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9)  \
                     : [w] "v"(W))

static __attribute__((target("avx2"))) int64_t peak_avx2(int64_t iters)
{
    __m256i a0 = _mm256_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
            a8 = a0, a9 = a0;
    const __m256i w = _mm256_set1_epi32(0x00020005);
    for (int64_t i = 0; i < iters; i++) PEAK_CHAINS(PEAK_MADD, w);
    return iters * 10 * 16; /* vpmaddwd: 16 products a ymm */
}

static VNNI int64_t peak_vnni(int64_t iters)
{
    __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
            a8 = a0, a9 = a0;
    const __m512i w = _mm512_set1_epi32(0x02010302);
    for (int64_t i = 0; i < iters; i++) PEAK_CHAINS(PEAK_DPBUSD, w); /* through the accumulator */
    return iters * 10 * 64; /* vpdpbusd: 64 products a zmm */
}

const char *nl_cpu_qgemm_peak_instr(void)
{
    return qisa_has(Q_VNNI) ? "vpdpbusd avx512_vnni" : qisa_has(Q_AVX2) ? "vpmaddwd avx2" : "none";
}

double nl_cpu_qgemm_peak_gops(bool again)
{
    enum { MAX_THREADS = 256, ROUNDS = 3 };
    static double peak[MAX_THREADS + 1];
    const int t = omp_get_max_threads();
    if (!again && t <= MAX_THREADS && peak[t] > 0) return peak[t];
    if (!qisa_has(Q_AVX2)) return 0;
    const bool vnni = qisa_has(Q_VNNI);
    const int64_t iters = vnni ? 1 << 19 : 1 << 20; /* a few ms a round */
    double best = t <= MAX_THREADS ? peak[t] : 0;
    for (int r = 0; r < ROUNDS; r++) {
        int64_t macs = 0;
        const double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : macs)
        macs += vnni ? peak_vnni(iters) : peak_avx2(iters);
        const double ops = 2.0 * (double)macs / (omp_get_wtime() - t0) * 1e-9;
        best = ops > best ? ops : best;
    }
    if (t <= MAX_THREADS) peak[t] = best;
    return best;
}

/* ---------------------------------------------------------------- geometry -------------- */

typedef struct {
    int64_t N, H, W, C, O, K, S, P, OH, OW, M, Kdim, Kp, Opad;
    int64_t Hp, Wp, KC, KCp; /* the padded image, a window row's bytes and those rounded up to 4 */
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
    g.Hp = g.H + 2 * g.P;
    g.Wp = g.W + 2 * g.P;
    g.KC = g.K * g.C;
    g.KCp = (g.KC + 3) & ~(int64_t)3;
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
                  kw1 = iw0 + g->K > g->W ? g->W - iw0 : g->K, KC = g->KC;
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

/* VNNI layout: per group of up to 64 channels, [K][KCp/4][group width][4] so that one 64-byte
 * load holds 16 channels' 4 consecutive weights of one window row; zero past KC in each row. */
static void pack_vnni(const qgeom *g, const int8_t *wk, int8_t *wp)
{
    const int64_t nq = g->KCp / 4, size = g->K * g->KCp;
    for (int64_t o0 = 0; o0 < g->Opad; o0 += OGROUP) {
        const int64_t width = g->Opad - o0 < OGROUP ? g->Opad - o0 : OGROUP;
        int8_t *dst = wp + o0 * size;
        for (int64_t j = 0; j < width; j++)
            for (int64_t kh = 0; kh < g->K; kh++) {
                const int8_t *src = wk + (o0 + j) * g->Kp + kh * g->KC;
                int8_t *d = dst + (kh * nq * width + j) * 4;
                int64_t q = 0;
                for (; 4 * q + 4 <= g->KC; q++) memcpy(d + q * width * 4, src + 4 * q, 4);
                for (; q < nq; q++)
                    for (int64_t b = 0; b < 4; b++)
                        d[q * width * 4 + b] = 4 * q + b < g->KC ? src[4 * q + b] : 0;
            }
    }
}

/* Packed weights are kept from call to call (the seed CNN's QLinear spent 66 us packing its
 * weights against 13 us multiplying): an entry holds a copy of the i8 weights it was packed from
 * and serves a call only when they are equal byte for byte, so weights edited in place are packed
 * again. The least recently used entry goes first; at most PACK_SLOTS entries and PACK_BYTES
 * bytes. */
typedef struct {
    int8_t *src;     /* the weights [O, C, K, K] packed, a copy */
    int64_t O, C, K; /* their shape */
    int8_t *wk, *wp; /* the portable rows and the VNNI layout (made when first asked for) */
    int16_t *w16;    /* the AVX2 layout (made when first asked for) */
    int32_t *rowsum; /* per padded channel */
    size_t bytes;
    uint64_t used;   /* last use, for eviction */
} qpacked;

enum { PACK_SLOTS = 32 };
#define PACK_BYTES ((size_t)256 << 20)
static qpacked pack_cache[PACK_SLOTS];
static uint64_t pack_clock;

static void pack_drop(qpacked *e)
{
    free(e->src), free(e->wk), free(e->wp), free(e->w16), free(e->rowsum);
    *e = (qpacked){0};
}

/* AVX2 layout: per block of 16 channels, [Kp/2][16][2] s16: one 64-byte row holds 16 channels'
 * weights of a pair of k, as vpmaddwd multiplies them. */
static void pack_avx2(const qgeom *g, const int8_t *wk, int16_t *w16)
{
    const int64_t KP2 = g->Kp / 2;
    for (int64_t b = 0; b < g->Opad / 16; b++)
        for (int64_t kp = 0; kp < KP2; kp++)
            for (int64_t j = 0; j < 16; j++)
                for (int64_t h = 0; h < 2; h++)
                    w16[((b * KP2 + kp) * 16 + j) * 2 + h] = wk[(b * 16 + j) * g->Kp + 2 * kp + h];
}

/* The packed form of w for geometry g (with the VNNI or AVX2 layout when isa asks for it), from
 * the cache or made now; NULL when out of memory. Kernels run from one host thread, as
 * padded_image assumes. */
static const qpacked *packed_weights(const qgeom *g, const int8_t *w, qisa isa)
{
    const size_t n = (size_t)(g->O * g->C * g->K * g->K);
    qpacked *e = NULL, *victim = &pack_cache[0];
    size_t total = 0;
    for (int i = 0; i < PACK_SLOTS; i++) {
        qpacked *c = &pack_cache[i];
        total += c->bytes;
        if (!e && c->src && c->O == g->O && c->C == g->C && c->K == g->K && memcmp(c->src, w, n) == 0)
            e = c;
        if (c->used < victim->used) victim = c;
    }
    if (!e) {
        const size_t bytes = n + (size_t)(g->Opad * g->Kp) * 2 + (size_t)g->Opad * sizeof(int32_t);
        for (total -= victim->bytes, pack_drop(victim); total + bytes > PACK_BYTES;) {
            qpacked *old = NULL; /* make room: drop the least recently used until it fits */
            for (int i = 0; i < PACK_SLOTS; i++)
                if (pack_cache[i].src && (!old || pack_cache[i].used < old->used)) old = &pack_cache[i];
            if (!old) break;
            total -= old->bytes;
            pack_drop(old);
        }
        e = victim;
        e->src = malloc(n ? n : 1);
        e->wk = malloc((size_t)(g->Opad * g->Kp));
        e->rowsum = calloc((size_t)g->Opad, sizeof *e->rowsum);
        if (!e->src || !e->wk || !e->rowsum) {
            pack_drop(e);
            return NULL;
        }
        memcpy(e->src, w, n);
        e->O = g->O, e->C = g->C, e->K = g->K, e->bytes = bytes;
        reorder_weights(g, w, e->wk, e->rowsum);
    }
    if (isa == Q_VNNI && !e->wp) {
        if (!(e->wp = malloc((size_t)(g->Opad * g->K * g->KCp)))) return NULL;
        pack_vnni(g, e->wk, e->wp);
    }
    if (isa == Q_AVX2 && !e->w16) {
        if (!(e->w16 = malloc((size_t)(g->Opad * g->Kp) * sizeof *e->w16))) return NULL;
        pack_avx2(g, e->wk, e->w16);
        e->bytes += (size_t)(g->Opad * g->Kp) * sizeof *e->w16;
    }
    e->used = ++pack_clock;
    return e;
}

/* The image the VNNI and AVX2 paths read: x itself when no window row reads past its end (no
 * padding and KC a multiple of the read: 4 bytes for VNNI, 16 for AVX2), else x in an NHWC image of
 * Hp x Wp with the zero point around it and SLACK bytes after it, in a grow-only buffer of this
 * file's that every call reuses (kernels run from one host thread; a fresh buffer would cost its
 * page faults on every call). NULL when out of memory. */
static const uint8_t *padded_image(const qgeom *g, const uint8_t *x, int64_t read)
{
    static uint8_t *buf;
    static size_t cap;
    if (g->P == 0 && g->KC % read == 0) return x;
    const int64_t SLACK = g->KCp + 16;
    const size_t bytes = (size_t)(g->N * g->Hp * g->Wp * g->C + SLACK);
    if (bytes > cap) {
        uint8_t *p = realloc(buf, bytes);
        if (!p) return NULL;
        buf = p, cap = bytes;
    }
    const size_t row = (size_t)(g->Wp * g->C), side = (size_t)(g->P * g->C);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < g->N; n++) {
        uint8_t *img = buf + (size_t)(n * g->Hp) * row;
        memset(img, g->zp, (size_t)g->P * row);                          /* rows above */
        memset(img + (size_t)(g->P + g->H) * row, g->zp, (size_t)g->P * row); /* rows below */
        for (int64_t h = 0; h < g->H; h++) {
            uint8_t *r = img + (size_t)(h + g->P) * row;
            memset(r, g->zp, side);
            memcpy(r + side, x + (n * g->H + h) * g->W * g->C, (size_t)(g->W * g->C));
            memset(r + side + (size_t)(g->W * g->C), g->zp, side);
        }
    }
    memset(buf + bytes - SLACK, g->zp, (size_t)SLACK);
    return buf;
}

/* ---------------------------------------------------------------- requantization -------- */

/* What turns a channel's int32 sum acc = sum (x - zp) * w into its output, per (padded) channel:
 * f32 outputs are fmaf(acc, mult[o], shift[o]) (then ReLU) with mult = xs * ws[o] and shift the
 * bias; u8 outputs are round(fmaf(acc, mult[o], shift[o])) with the output scale and zero point
 * folded into mult and shift, floored at qlo (the zero point under ReLU, else 0) and saturated at
 * 255. One rounding each, as fmaf is; the AVX-512 epilogue does the same operations, so all paths
 * give the same bytes. */
typedef struct {
    int32_t *zacc; /* where a channel's sum starts: -zp * rowsum[o], so it ends as sum (x - zp) w */
    float *mult, *shift;
    float lo;    /* f32: the ReLU floor (0 or -inf) */
    int32_t qlo; /* u8: the floor (zero point under ReLU, else 0) */
} qpost;

/* The channels' constants from the weights' row sums, the input scale xs and zero point, the
 * weights' scales ws, the bias and (u8) the output scale ys and zero point yzp: in double, rounded
 * once to float. Channels past O stay 0. */
static void post_make(const nl_op *op, const qgeom *g, const int32_t *rowsum, qpost *q)
{
    const bool to_u8 = op->dst->dtype == NL_U8, relu = op->i[2] != 0;
    const double xs = op->f[0], inv_ys = to_u8 ? 1.0 / op->f[2] : 1.0, yzp = to_u8 ? op->f[3] : 0;
    const float *ws = nl_tensor_f32(op->src[2]), *bias = op->src[3] ? nl_tensor_f32(op->src[3]) : NULL;
    for (int64_t o = 0; o < g->O; o++) {
        q->zacc[o] = -(int32_t)g->zp * rowsum[o];
        q->mult[o] = (float)(xs * ws[o] * inv_ys);
        q->shift[o] = (float)((bias ? bias[o] : 0) * inv_ys + yzp);
    }
    q->lo = relu ? 0 : -INFINITY;
    q->qlo = relu ? (int32_t)op->f[3] : 0;
}

static inline uint8_t requant_u8(int32_t acc, float mult, float shift, int32_t lo)
{
    float t = nearbyintf(fmaf((float)acc, mult, shift));
    t = t < 512 ? t : 512; /* NaN too, as vminps gives its second operand */
    t = t > -512 ? t : -512;
    const int32_t v = (int32_t)t > lo ? (int32_t)t : lo;
    return (uint8_t)(v < 255 ? v : 255);
}

/* requant_u8 of 8 channels' sums, the bytes in the low 8 of the result, with AVX2: the same
 * operations (vminps gives its second operand for NaN, as the scalar min does; the clamps at +-512
 * are integers, so clamping before rounding changes nothing; vcvtps2dq rounds to nearest even, as
 * nearbyintf does). */
static inline __attribute__((always_inline, target("avx2,fma"))) __m128i
requant8_avx2(__m256i acc, __m256 mult, __m256 shift, __m256i qlo)
{
    __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), mult, shift);
    t = _mm256_max_ps(_mm256_min_ps(t, _mm256_set1_ps(512)), _mm256_set1_ps(-512));
    const __m256i v = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(t), qlo), _mm256_set1_epi32(255));
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packus_epi16(w, w);
}

/* requant_u8 of a row of n channels' sums into y, 8 channels at a time with AVX2. */
static __attribute__((target("avx2,fma"))) void requant_row_avx2(const int32_t *acc, const float *mult,
                                                                 const float *shift, int32_t lo,
                                                                 int64_t n, uint8_t *y)
{
    const __m256i qlo = _mm256_set1_epi32(lo);
    int64_t o = 0;
    for (; o + 8 <= n; o += 8)
        _mm_storel_epi64((__m128i *)(y + o),
                         requant8_avx2(_mm256_loadu_si256((const __m256i *)(acc + o)), _mm256_loadu_ps(mult + o),
                                       _mm256_loadu_ps(shift + o), qlo));
    for (; o < n; o++) y[o] = requant_u8(acc[o], mult[o], shift[o], lo);
}

/* The u8 output of one pooled window from its pp rows of sums (row r at c + r * ldc) into y, n
 * channels, with AVX2: each channel's largest sum (its smallest where the channel's mult is
 * negative) requantized once. Requantizing is monotonic (rising with the sum for mult >= 0,
 * falling for mult < 0, fmaf's one rounding included), so this is the maximum of the window's
 * outputs, as requantizing every row and pooling gives. */
static __attribute__((target("avx2,fma"))) void pool_requant_avx2(const int32_t *c, int64_t ldc, int64_t pp,
                                                                  const qpost *q, int64_t n, uint8_t *y)
{
    const __m256i qlo = _mm256_set1_epi32(q->qlo);
    int64_t o = 0;
    for (; o + 8 <= n; o += 8) {
        __m256i big = _mm256_loadu_si256((const __m256i *)(c + o)), small = big;
        for (int64_t r = 1; r < pp; r++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(c + r * ldc + o));
            big = _mm256_max_epi32(big, v);
            small = _mm256_min_epi32(small, v);
        }
        const __m256 mult = _mm256_loadu_ps(q->mult + o); /* its sign bit picks the smallest */
        const __m256i sum = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(big), _mm256_castsi256_ps(small), mult));
        _mm_storel_epi64((__m128i *)(y + o), requant8_avx2(sum, mult, _mm256_loadu_ps(q->shift + o), qlo));
    }
    for (; o < n; o++) {
        int32_t big = c[o], small = c[o];
        for (int64_t r = 1; r < pp; r++) {
            big = c[r * ldc + o] > big ? c[r * ldc + o] : big;
            small = c[r * ldc + o] < small ? c[r * ldc + o] : small;
        }
        y[o] = requant_u8(signbit(q->mult[o]) ? small : big, q->mult[o], q->shift[o], q->qlo);
    }
}

/* requant_u8 of 16 channels, before the floor and the saturation */
static inline __attribute__((always_inline)) VNNI __m512i requant16(__m512i acc, __m512 mult, __m512 shift)
{
    const __m512 t = _mm512_min_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), mult, shift),
                                   _mm512_set1_ps(512));
    return _mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* ---------------------------------------------------------------- micro-kernels --------- */

/* c[r][o] = zacc[o] + sum_k a[r][k] * wk[o][k] for TILE_M rows and every (padded) channel. */
static void tile_generic(const qgeom *g, const uint8_t *a, int64_t lda, const int8_t *wk,
                         const int32_t *zacc, int32_t *c)
{
    for (int64_t r = 0; r < TILE_M; r++)
        for (int64_t o = 0; o < g->Opad; o++) {
            const uint8_t *ar = a + r * lda;
            const int8_t *wr = wk + o * g->Kp;
            int32_t s = zacc[o];
            for (int64_t k = 0; k < g->Kp; k++) s += (int32_t)ar[k] * wr[k];
            c[r * g->Opad + o] = s;
        }
}

/* The AVX2 path's tile of A, widened to u16 straight from the padded image: row r's window row kh
 * is the KC bytes at rows[r] + kh * rstride, read 16 at a time. What a read takes past KC lands
 * where the next window row, the next row or the padding to Kp (under zero weights) is written
 * after it, or in a16's 16 spare elements; the image has the slack for it (padded_image). Rows
 * past nrows repeat row 0 (their sums are not used). */
static __attribute__((target("avx2"))) void widen_rows(const qgeom *g, const uint8_t *const *rows, int64_t nrows,
                                                       uint16_t *a16)
{
    const int64_t rstride = g->Wp * g->C, K = g->K, KC = g->KC, Kdim = g->Kdim, Kp = g->Kp;
    for (int64_t r = 0; r < TILE_M; r++) {
        const uint8_t *src = rows[r < nrows ? r : 0];
        uint16_t *d = a16 + r * Kp, *dk = d;
        for (int64_t kh = 0; kh < K; kh++, src += rstride, dk += KC)
            for (int64_t j = 0; j < KC; j += 16)
                _mm256_storeu_si256((__m256i *)(dk + j),
                                    _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + j))));
        for (int64_t k = Kdim; k < Kp; k++) d[k] = 0;
    }
}

/* tile_generic's sums with AVX2: the tile a16 [TILE_M][Kp] (widen_rows), in blocks of 6 rows x 16
 * channels (12 accumulators), each vpmaddwd adding the products of a pair of k. */
enum { A2_MR = 6 };
_Static_assert(TILE_M % A2_MR == 0, "the AVX2 blocks cover a tile");

static __attribute__((target("avx2"))) void tile_avx2(const qgeom *g, const uint16_t *a16, const int16_t *w16,
                                                      const int32_t *zacc, int32_t *c)
{
    const int64_t KP2 = g->Kp / 2;
    for (int64_t b = 0; b < g->Opad / 16; b++) {
        const int16_t *wb = w16 + b * KP2 * 32;
        const __m256i z0 = _mm256_loadu_si256((const __m256i *)(zacc + b * 16)),
                      z1 = _mm256_loadu_si256((const __m256i *)(zacc + b * 16 + 8));
        for (int64_t r0 = 0; r0 < TILE_M; r0 += A2_MR) {
            __m256i acc[A2_MR][2];
            for (int r = 0; r < A2_MR; r++) acc[r][0] = z0, acc[r][1] = z1;
            const uint16_t *ar = a16 + r0 * g->Kp;
            for (int64_t kp = 0; kp < KP2; kp++) {
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + kp * 32)),
                              w1 = _mm256_loadu_si256((const __m256i *)(wb + kp * 32 + 16));
                for (int r = 0; r < A2_MR; r++) {
                    int32_t pair;
                    memcpy(&pair, ar + r * g->Kp + 2 * kp, 4);
                    const __m256i av = _mm256_set1_epi32(pair);
                    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, w0));
                    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, w1));
                }
            }
            for (int r = 0; r < A2_MR; r++) {
                int32_t *cr = c + (r0 + r) * g->Opad + b * 16;
                _mm256_storeu_si256((__m256i *)cr, acc[r][0]);
                _mm256_storeu_si256((__m256i *)(cr + 8), acc[r][1]);
            }
        }
    }
}

/* Where a VNNI block's results go: u8 outputs requantized in registers, the maximum of each PP
 * consecutive rows (a pooling window) to out[unit] + channel (only the first nvalid channels of the
 * block), or (PP 0) the int32 sums to c[r * ldc + channel]. */
typedef struct {
    const int32_t *zacc;
    uint8_t *const *out;
    const float *mult, *shift;
    int32_t qlo;
    int64_t nvalid;
    int32_t *c;
    int64_t ldc;
} vnni_dest;

/* MR rows x NV*16 channels, sums starting at zacc: row r's window row kh starts at
 * rows[r] + kh * rstride; the weights of quad q of window row kh for the block's channels are the
 * NV*64 bytes at wp + (kh*nq + q) * wstep. */
static inline __attribute__((always_inline)) VNNI void
vnni_block(const uint8_t *const *rows, int64_t rstride, int64_t K, int64_t nq, const int8_t *wp,
           int64_t wstep, const vnni_dest *d, const int MR, const int NV, const int PP)
{
    __m512i acc[9][2];
    for (int v = 0; v < NV; v++) acc[0][v] = _mm512_loadu_si512(d->zacc + v * 16);
    for (int r = 1; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = acc[0][v];
    for (int64_t kh = 0; kh < K; kh++) {
        const int64_t off = kh * rstride;
        for (int64_t q = 0; q < nq; q++, wp += wstep) {
            __m512i b[2];
            for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_si512(wp + v * 64);
            for (int r = 0; r < MR; r++) {
                int32_t word;
                memcpy(&word, rows[r] + off + 4 * q, 4);
                const __m512i av = _mm512_set1_epi32(word);
                for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, b[v]);
            }
        }
    }
    if (PP == 0) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) _mm512_storeu_si512(d->c + r * d->ldc + v * 16, acc[r][v]);
        return;
    }
    /* A window's maximum output is the output of its largest sum where the channel's mult is
     * >= 0, of its smallest where it is < 0: requantizing is monotonic, fmaf's one rounding
     * included. So one requantization per window. */
    const __m512i lo = _mm512_set1_epi32(d->qlo);
    for (int v = 0; v < NV; v++) {
        const __m512 mult = _mm512_loadu_ps(d->mult + v * 16), shift = _mm512_loadu_ps(d->shift + v * 16);
        const __mmask16 neg = _mm512_cmplt_epi32_mask(_mm512_castps_si512(mult), _mm512_setzero_si512());
        const int64_t left = d->nvalid - v * 16;
        const __mmask16 keep = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        for (int u = 0; u < MR / PP; u++) {
            __m512i sum = acc[u * PP][v];
            for (int r = u * PP + 1; r < (u + 1) * PP; r++) sum = _mm512_max_epi32(sum, acc[r][v]);
            if (PP > 1 && neg) { /* (weight scales are positive but for a user's edits) */
                __m512i small = acc[u * PP][v];
                for (int r = u * PP + 1; r < (u + 1) * PP; r++) small = _mm512_min_epi32(small, acc[r][v]);
                sum = _mm512_mask_blend_epi32(neg, sum, small);
            }
            const __m512i out = _mm512_max_epi32(requant16(sum, mult, shift), lo);
            _mm_mask_storeu_epi8(d->out[u] + v * 16, keep, _mm512_cvtusepi32_epi8(out));
        }
    }
}

/* Rows [0, nrows) of a tile (nrows a multiple of 8, or of 9 with a 3x3 pool; rows[r] where output
 * pixel r's window starts in the padded image) through every channel group, in blocks of 8 rows
 * (9 with a 3x3 pool: whole windows) by 2 vectors of 16 channels: 16 accumulators and 2 weight
 * vectors stay in registers (measured on Zen 4: wider blocks spill, or read their weights as
 * memory operands and wait on loads). u8 outputs (out: one pointer per pooled unit) leave
 * requantized; f32 ones (out NULL) leave as int32 sums in c. */
static VNNI void tile_vnni(const qgeom *g, int64_t pool, const uint8_t *const *rows, int64_t nrows,
                           const int8_t *wp, const qpost *q, uint8_t *const *out, int32_t *c)
{
    const int64_t nq = g->KCp / 4, rstride = g->Wp * g->C, size = g->K * g->KCp, pp = pool * pool;
    const int mr = pp == 9 ? 9 : 8, mode = out ? (int)pp : 0; /* mode 0: int32 sums */
    for (int64_t o0 = 0; o0 < g->Opad; o0 += OGROUP) {
        const int64_t width = g->Opad - o0 < OGROUP ? g->Opad - o0 : OGROUP, nvec = width / 16;
        for (int64_t v0 = 0; v0 < nvec; v0 += 2) {
            const int nv = nvec - v0 < 2 ? 1 : 2;
            const int64_t ch = o0 + v0 * 16;
            const int8_t *w = wp + o0 * size + v0 * 64;
            for (int64_t r0 = 0; r0 < nrows; r0 += mr) {
                uint8_t *outs[8];
                for (int64_t u = 0; out && u < mr / pp; u++) outs[u] = out[r0 / pp + u] + ch;
                const vnni_dest d = {q->zacc + ch, out ? outs : NULL, q->mult + ch, q->shift + ch,
                                     q->qlo, g->O - ch, c ? c + r0 * g->Opad + ch : NULL, g->Opad};
                const uint8_t *const *rr = rows + r0;
#define BLOCK(MR, NV, PP) vnni_block(rr, rstride, g->K, nq, w, width * 4, &d, MR, NV, PP)
                switch (mr * 100 + nv * 10 + mode) {
                case 810: BLOCK(8, 1, 0); break;
                case 820: BLOCK(8, 2, 0); break;
                case 811: BLOCK(8, 1, 1); break;
                case 821: BLOCK(8, 2, 1); break;
                case 814: BLOCK(8, 1, 4); break;
                case 824: BLOCK(8, 2, 4); break;
                case 910: BLOCK(9, 1, 0); break;
                case 920: BLOCK(9, 2, 0); break;
                case 919: BLOCK(9, 1, 9); break;
                default: BLOCK(9, 2, 9); break;
                }
#undef BLOCK
            }
        }
    }
}

/* ---------------------------------------------------------------- the convolution ------- */

/* A tile: output pixels (n, oh, ow) of the convolution, rows of the GEMM. With a fused pool of
 * k x k windows side by side, it holds whole windows, k*k rows each, in order. */
typedef struct {
    int64_t rows, units;          /* pixels, and outputs they make (pooled windows or pixels) */
    int64_t n[TILE_M], oh[TILE_M], ow[TILE_M];
    int64_t unit[TILE_M];         /* the outputs' flat indices (pooled: (n, ph, pw)) */
} qtile;

/* The units of a tile (pooled windows, or pixels without a pool) in the H x W grid of each image:
 * unit (n, h, w), counted up from the tile's first with no divisions after the start. */
typedef struct {
    int64_t H, W, n, h, w;
} unit_walk;

static inline unit_walk walk_from(const qgeom *g, int64_t pool, int64_t u0)
{
    const int64_t H = g->OH / pool, W = g->OW / pool;
    return (unit_walk){H, W, u0 / (H * W), u0 / W % H, u0 % W};
}

/* Steps to the next unit; true when that starts a new row of the grid. */
static inline bool walk_next(unit_walk *k)
{
    if (++k->w < k->W) return false;
    k->w = 0;
    if (++k->h == k->H) k->h = 0, k->n++;
    return true;
}

static void tile_pixels(const qgeom *g, int64_t pool, int64_t per_tile, int64_t nunits, int64_t t,
                        qtile *tl)
{
    const int64_t u0 = t * per_tile;
    unit_walk k = walk_from(g, pool, u0);
    tl->rows = tl->units = 0;
    for (int64_t u = u0; u < nunits && u < u0 + per_tile; u++, walk_next(&k)) {
        tl->unit[tl->units++] = u;
        for (int64_t dy = 0; dy < pool; dy++)
            for (int64_t dx = 0; dx < pool; dx++) {
                tl->n[tl->rows] = k.n;
                tl->oh[tl->rows] = k.h * pool + dy;
                tl->ow[tl->rows++] = k.w * pool + dx;
            }
    }
}

/* tile_pixels without the pixels: the units and row count of tile t, all a u8 output needs. */
static void tile_units(int64_t pp, int64_t per_tile, int64_t nunits, int64_t t, qtile *tl)
{
    const int64_t u0 = t * per_tile;
    tl->units = nunits - u0 < per_tile ? nunits - u0 : per_tile;
    tl->rows = tl->units * pp;
    for (int64_t j = 0; j < tl->units; j++) tl->unit[j] = u0 + j;
}

/* The VNNI and AVX2 paths' view of tile t (units [t * per_tile, +per_tile)): rows[r], where output
 * pixel r's window starts in the padded image xp, k*k pixels per pooled unit, and (y given)
 * outs[u], where unit u's channels go in y. Units past the end repeat a valid pixel and write to
 * sink. Counted up from one unit to the next, no divisions after the first (4% of the seed CNN's
 * first QConv2d against tile_pixels then the rows from its indices). */
static void window_rows(const qgeom *g, int64_t pool, int64_t per_tile, int64_t nunits, int64_t t,
                        const uint8_t *xp, uint8_t *y, uint8_t *sink, const uint8_t **rows, uint8_t **outs)
{
    const int64_t u0 = t * per_tile, step = pool * g->S;              /* between units' corners */
    const int64_t right = g->S * g->C, down = g->S * g->Wp * g->C;    /* one output pixel over */
    unit_walk k = walk_from(g, pool, u0);
    const uint8_t *base = xp + ((k.n * g->Hp + k.h * step) * g->Wp + k.w * step) * g->C;
    int64_t r = 0;
    for (int64_t u = u0; u < u0 + per_tile; u++) {
        if (u >= nunits) {
            for (int64_t i = 0; i < pool * pool; i++) rows[r++] = rows[0];
            if (y) outs[u - u0] = sink;
            continue;
        }
        for (int64_t dy = 0; dy < pool; dy++)
            for (int64_t dx = 0; dx < pool; dx++) rows[r++] = base + dy * down + dx * right;
        if (y) outs[u - u0] = y + u * g->O;
        if (walk_next(&k)) base = xp + (k.n * g->Hp + k.h * step) * g->Wp * g->C;
        else base += pool * right;
    }
}

/* Tiles shared out for locality and balance: thread i owns the i-th of nthreads equal ranges (the
 * images it padded and, in the layer before, wrote: static splits over the batch) and takes chunks
 * from the front of its own range, then from the back of the others' (a thread slowed by load
 * elsewhere is helped). Each range is one atomic word, front << 32 | back. */
typedef struct {
    _Atomic uint64_t *range;
    int n;
    int64_t chunk;
} tile_split;

static bool split_init(tile_split *s, int64_t ntiles, int nthreads, int64_t chunk)
{
    s->range = malloc((size_t)nthreads * sizeof *s->range);
    s->n = nthreads;
    s->chunk = chunk;
    if (!s->range) return false;
    for (int i = 0; i < nthreads; i++) {
        const uint64_t lo = (uint64_t)(ntiles * i / nthreads), hi = (uint64_t)(ntiles * (i + 1) / nthreads);
        atomic_init(&s->range[i], lo << 32 | hi);
    }
    return true;
}

/* The next tiles [*lo, *hi) for thread i; false when none are left. */
static bool split_next(tile_split *s, int i, int64_t *lo, int64_t *hi)
{
    for (int k = 0; k < s->n; k++) {
        const int j = (i + k) % s->n;
        uint64_t v = atomic_load(&s->range[j]);
        for (;;) {
            const int64_t front = (int64_t)(v >> 32), back = (int64_t)(v & 0xFFFFFFFFu);
            if (front >= back) break;
            const int64_t take = back - front < s->chunk ? back - front : s->chunk;
            const uint64_t nv = k == 0 ? (uint64_t)(front + take) << 32 | (uint64_t)back
                                       : (uint64_t)front << 32 | (uint64_t)(back - take);
            if (atomic_compare_exchange_weak(&s->range[j], &v, nv)) {
                *lo = k == 0 ? front : back - take;
                *hi = k == 0 ? front + take : back;
                return true;
            }
        }
    }
    return false;
}

/* The tile's outputs from its int32 sums c: u8 (the portable path) or f32. Each row to dst, or
 * (pool) each window's rows to a scratch row block, then their channel-wise maximum to dst.
 * Requantizing is monotonic, so the maximum of the outputs is the output of the maximum, as a
 * separate max pool would give. */
static void tile_outputs(const nl_op *op, const qgeom *g, int64_t pool, const qtile *tl,
                         const int32_t *c, const qpost *q, void *scratch, qisa isa)
{
    const int64_t O = g->O, ldc = g->Opad, pp = pool * pool;
    const int64_t PH = g->OH / pool, PW = g->OW / pool, P = PH * PW; /* outputs per image plane */
    if (op->dst->dtype == NL_U8) {
        uint8_t *y = nl_tensor_data(op->dst), *tmp = scratch;
        if (pool > 1 && isa != Q_GENERIC) {
            for (int64_t j = 0; j < tl->units; j++) pool_requant_avx2(c + j * pp * ldc, ldc, pp, q, O, y + tl->unit[j] * O);
            return;
        }
        for (int64_t r = 0; r < tl->rows; r++) {
            uint8_t *yr = pool == 1 ? y + tl->unit[r] * O : tmp + r * O;
            if (isa != Q_GENERIC) {
                requant_row_avx2(c + r * ldc, q->mult, q->shift, q->qlo, O, yr);
                continue;
            }
            for (int64_t o = 0; o < O; o++) yr[o] = requant_u8(c[r * ldc + o], q->mult[o], q->shift[o], q->qlo);
        }
        for (int64_t j = 0; pool > 1 && j < tl->units; j++) {
            uint8_t *dst = y + tl->unit[j] * O;
            const uint8_t *win = tmp + j * pp * O;
            memcpy(dst, win, (size_t)O);
            for (int64_t r = 1; r < pp; r++)
                for (int64_t o = 0; o < O; o++) dst[o] = win[r * O + o] > dst[o] ? win[r * O + o] : dst[o];
        }
        return;
    }
    /* f32, NCHW: channel by channel, so that neighbouring pixels are written side by side */
    float *y = nl_tensor_f32(op->dst), *tmp = scratch;
    for (int64_t o = 0; o < O; o++)
        for (int64_t r = 0; r < tl->rows; r++) {
            float v = fmaf((float)c[r * ldc + o], q->mult[o], q->shift[o]);
            v = v > q->lo ? v : q->lo;
            if (pool == 1) y[tl->n[r] * O * P + o * P + tl->oh[r] * g->OW + tl->ow[r]] = v;
            else tmp[r * O + o] = v;
        }
    for (int64_t j = 0; pool > 1 && j < tl->units; j++) {
        const int64_t u = tl->unit[j], n = u / P;
        const float *win = tmp + j * pp * O;
        for (int64_t o = 0; o < O; o++) {
            float m = win[o];
            for (int64_t r = 1; r < pp; r++) m = win[r * O + o] > m ? win[r * O + o] : m;
            y[(n * O + o) * P + u % P] = m;
        }
    }
}

nl_status nl_cpu_qconv2d(const nl_op *op)
{
    const qgeom g = geometry(op);
    const qisa isa = qgemm_isa();
    const bool vnni = isa == Q_VNNI, to_u8 = op->dst->dtype == NL_U8;
    cpu_note_kernel("qconv", qisa_names[isa]);
    const int64_t pool = op->i[3] > 1 ? op->i[3] : 1, pp = pool * pool;
    if (pool > 3)
        return nl_seterr(NL_EINVAL, "qconv2d: a fused pool of %lldx%lld is too large (at most 3x3)",
                         (long long)pool, (long long)pool);
    /* outputs (pooled windows or pixels) per tile: up to TILE_M rows, fewer when there are few
     * (a linear layer's batch) so that every thread gets tiles; a multiple of the VNNI blocks */
    const int64_t nunits = pool == 1 ? g.M : g.N * (g.OH / pool) * (g.OW / pool);
    if (nunits == 0) return NL_OK; /* an empty batch or image: no output to write */
    const int64_t quantum = pp == 1 ? 8 : pp == 4 ? 2 : 1, threads = omp_get_max_threads();
    int64_t per_tile = (nunits + 4 * threads - 1) / (4 * threads);
    per_tile = (per_tile + quantum - 1) / quantum * quantum;
    per_tile = per_tile < TILE_M / pp ? per_tile : TILE_M / pp;
    const int64_t ntiles = (nunits + per_tile - 1) / per_tile;
    if (ntiles >= (int64_t)1 << 32)
        return nl_seterr(NL_EINVAL, "qconv2d: %lld tiles of output are too many", (long long)ntiles);
    const uint8_t *x = nl_tensor_data(op->src[0]);
    const qpacked *pk = packed_weights(&g, nl_tensor_data(op->src[1]), isa);
    const bool direct = vnni || isa == Q_AVX2; /* reads its rows from the (padded) image */
    const uint8_t *xp = direct && pk ? padded_image(&g, x, vnni ? 4 : 16) : NULL;
    qpost q = {.zacc = calloc((size_t)g.Opad, sizeof *q.zacc),
               .mult = calloc((size_t)g.Opad, sizeof *q.mult),
               .shift = calloc((size_t)g.Opad, sizeof *q.shift)};
    if (!pk || (direct && !xp) || !q.zacc || !q.mult || !q.shift) {
        free(q.zacc), free(q.mult), free(q.shift);
        return nl_seterr(NL_ENOMEM, "qconv2d: out of memory for the packed weights");
    }
    post_make(op, &g, pk->rowsum, &q);
    tile_split split;
    if (!split_init(&split, ntiles, (int)threads, ntiles / (threads * 64) > 1 ? ntiles / (threads * 64) : 1)) {
        free(q.zacc), free(q.mult), free(q.shift);
        return nl_seterr(NL_ENOMEM, "qconv2d: out of memory");
    }
    bool oom = false;
#pragma omp parallel num_threads((int)threads)
    {
        /* the portable path's gathered rows; int32 sums unless VNNI requantizes in registers;
         * pooled rows before their maximum; the place for the outputs of units past the end */
        const bool fused = vnni && to_u8;
        uint8_t *const y = to_u8 ? nl_tensor_data(op->dst) : NULL;
        uint8_t *a = direct ? NULL : malloc((size_t)(TILE_M * g.Kp));
        uint16_t *a16 = isa == Q_AVX2 ? malloc((size_t)(TILE_M * g.Kp + 16) * sizeof *a16) : NULL;
        int32_t *c = fused ? NULL : malloc((size_t)(TILE_M * g.Opad) * sizeof *c);
        /* pooled rows wait in scratch unless requantized per window (u8 outputs past the portable path) */
        const bool pooled = pool > 1 && !fused && !(to_u8 && isa != Q_GENERIC);
        void *scratch = pooled ? malloc((size_t)(TILE_M * g.O) * sizeof(float)) : NULL;
        uint8_t *sink = fused ? malloc((size_t)g.Opad) : NULL;
        const bool ok = (direct || a) && (isa != Q_AVX2 || a16) &&
                        (fused ? sink != NULL : c && (!pooled || scratch));
        if (!ok) {
#pragma omp atomic write
            oom = true;
        }
        qtile tl;
        int64_t t0, t1;
        while (ok && split_next(&split, omp_get_thread_num(), &t0, &t1))
            for (int64_t t = t0; t < t1; t++) {
                if (vnni) {
                    const uint8_t *rows[TILE_M];
                    uint8_t *outs[TILE_M];
                    window_rows(&g, pool, per_tile, nunits, t, xp, fused ? y : NULL, sink, rows, outs);
                    tile_vnni(&g, pool, rows, per_tile * pp, pk->wp, &q, fused ? outs : NULL, c);
                    if (fused) continue;
                    tile_pixels(&g, pool, per_tile, nunits, t, &tl);
                } else if (isa == Q_AVX2) {
                    const uint8_t *rows[TILE_M];
                    window_rows(&g, pool, per_tile, nunits, t, xp, NULL, NULL, rows, NULL);
                    if (to_u8) tile_units(pp, per_tile, nunits, t, &tl);
                    else tile_pixels(&g, pool, per_tile, nunits, t, &tl);
                    widen_rows(&g, rows, tl.rows, a16);
                    tile_avx2(&g, a16, pk->w16, q.zacc, c);
                } else {
                    tile_pixels(&g, pool, per_tile, nunits, t, &tl);
                    for (int64_t r = 0; r < TILE_M; r++) {
                        if (r < tl.rows) gather_row(&g, x, tl.n[r], tl.oh[r], tl.ow[r], a + r * g.Kp);
                        else memset(a + r * g.Kp, 0, (size_t)g.Kp);
                    }
                    tile_generic(&g, a, g.Kp, pk->wk, q.zacc, c);
                }
                tile_outputs(op, &g, pool, &tl, c, &q, scratch, isa);
            }
        free(a);
        free(a16);
        free(c);
        free(scratch);
        free(sink);
    }
    free(q.zacc), free(q.mult), free(q.shift), free(split.range);
    return oom ? nl_seterr(NL_ENOMEM, "qconv2d: out of memory for the work tiles") : NL_OK;
}

/* ---------------------------------------------------------------- (de)quantize, pooling - */

/* round(x / scale) + zero point (x * inv, inv = 1 / scale), saturated to 0..255; NaN gives 0. */
static inline uint8_t quantize_u8(float x, float inv, float zp)
{
    float v = nearbyintf(x * inv) + zp;
    v = v > 0 ? v : 0;
    return (uint8_t)(v < 255 ? v : 255);
}

/* Pixels per block of NL_OP_QUANTIZE: each channel's run of a block is converted as one
 * contiguous (vectorizing) loop, then the block is transposed between NCHW and NHWC. */
enum { QUANT_BLOCK = 64 };

nl_status nl_cpu_quantize(const nl_op *op)
{
    const nl_tensor *src = op->src[0], *dst = op->dst;
    const bool quant = dst->dtype == NL_U8;
    const nl_tensor *f = quant ? src : dst; /* the f32 side gives the NCHW geometry */
    const int64_t N = f->shape[0], C = f->shape[1],
                  HW = nl_tensor_numel(f) / (N ? N : 1) / (C ? C : 1);
    const int64_t nblocks = (HW + QUANT_BLOCK - 1) / QUANT_BLOCK;
    const float scale = (float)op->f[0], inv = (float)(1.0 / op->f[0]), zp = (float)op->f[1];
    float *fd = nl_tensor_f32(f);
    uint8_t *qd = nl_tensor_data(quant ? dst : src);
    if (HW == 1 || C == 1) { /* the two layouts are one */
        const int64_t n = N * C * HW;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            if (quant) qd[i] = quantize_u8(fd[i], inv, zp);
            else fd[i] = scale * ((float)qd[i] - zp);
        }
        return NL_OK;
    }
    bool oom = false;
#pragma omp parallel
    {
        uint8_t *tmp = malloc((size_t)(C * QUANT_BLOCK)); /* [C][block]: a block's channels */
        if (!tmp) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(static)
        for (int64_t nb = 0; nb < N * nblocks; nb++) {
            if (!tmp) continue;
            const int64_t n = nb / nblocks, p0 = nb % nblocks * QUANT_BLOCK;
            const int64_t len = HW - p0 < QUANT_BLOCK ? HW - p0 : QUANT_BLOCK;
            uint8_t *q = qd + (n * HW + p0) * C;
            if (quant) {
                for (int64_t c = 0; c < C; c++) {
                    const float *x = fd + (n * C + c) * HW + p0;
                    uint8_t *t = tmp + c * QUANT_BLOCK;
                    for (int64_t p = 0; p < len; p++) t[p] = quantize_u8(x[p], inv, zp);
                }
                for (int64_t p = 0; p < len; p++)
                    for (int64_t c = 0; c < C; c++) q[p * C + c] = tmp[c * QUANT_BLOCK + p];
            } else {
                for (int64_t p = 0; p < len; p++)
                    for (int64_t c = 0; c < C; c++) tmp[c * QUANT_BLOCK + p] = q[p * C + c];
                for (int64_t c = 0; c < C; c++) {
                    float *x = fd + (n * C + c) * HW + p0;
                    const uint8_t *t = tmp + c * QUANT_BLOCK;
                    for (int64_t p = 0; p < len; p++) x[p] = scale * ((float)t[p] - zp);
                }
            }
        }
        free(tmp);
    }
    return oom ? nl_seterr(NL_ENOMEM, "quantize: out of memory for a block of %lld channels",
                           (long long)C)
               : NL_OK;
}

nl_status nl_cpu_qpool2d(const nl_op *op)
{
    const nl_tensor *x = op->src[0], *y = op->dst;
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = y->shape[1], OW = y->shape[2], k = op->i[1], s = op->i[2], p = op->i[3];
    const uint8_t *xd = nl_tensor_data(x);
    uint8_t *yd = nl_tensor_data(y);
    const bool tiled = k == s && p == 0; /* windows side by side, all inside the image */
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < N * OH; row++) {
        const int64_t n = row / OH, oh = row % OH;
        if (tiled) { /* the max of k rows of k pixels, C channels at a time (vectorises) */
            for (int64_t ow = 0; ow < OW; ow++) {
                uint8_t *restrict out = yd + ((n * OH + oh) * OW + ow) * C;
                const uint8_t *first = xd + ((n * H + oh * k) * W + ow * k) * C;
                memcpy(out, first, (size_t)C);
                for (int64_t kh = 0; kh < k; kh++)
                    for (int64_t kw = kh ? 0 : 1; kw < k; kw++) {
                        const uint8_t *restrict in = first + (kh * W + kw) * C;
                        for (int64_t c = 0; c < C; c++) out[c] = in[c] > out[c] ? in[c] : out[c];
                    }
            }
            continue;
        }
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
        /* As the integer layers round (hd/quant_hd.h): weights x / s (nl_quant_weights_i8),
         * activations x * (1 / s) (NL_OP_QUANTIZE and the requantization in the epilogue). */
        const float s = scales ? nl_tensor_f32(scales)[r] : (float)op->f[0];
        const float inv = scales ? 0 : (float)(1.0 / op->f[0]);
        for (int64_t i = r * cols; i < (r + 1) * cols; i++) {
            yd[i] = nl_hd_fakequant(xd[i], s, inv, scales != NULL, zp, qmin, qmax, gd != NULL,
                                    gd ? gd[i] : 0);
        }
    }
    return NL_OK;
}
