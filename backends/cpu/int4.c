/* int4.c: the weight-only 4-bit kernels: fully connected and convolution layers whose weights are
 * nibbles with a scale per group, dequantized a small block at a time inside the kernel (never the
 * whole layer), and the plain dequantization for reports and plots (NL_OP_INT4_DEQUANT). */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* A block of the weight matrix is OB output rows by at most KB of the K inputs: 64 x 256 floats
 * (64 KiB) per thread, which stays in L2 while sgemm streams the activations past it. sgemm packs
 * the activations (a convolution's columns) again for each block of rows, so the blocks are as
 * tall as the cache allows: 16-row blocks made the seed CNN's second convolution 1.5x slower. */
enum { INT4_OB = 64, INT4_KB = 256, INT4_NCHUNK = 256 };

/* The weight matrix in its packed form. */
typedef struct {
    const uint8_t *nib, *code;
    int64_t O, K, pk, ng, group;
    float base;
} int4_w;

static int4_w int4_weights(const nl_op *op, const nl_tensor *nib, const nl_tensor *code, int64_t K)
{
    return (int4_w){.nib = nl_tensor_data(nib), .code = nl_tensor_data(code), .O = nib->shape[0],
                    .K = K, .pk = nib->shape[1], .ng = code->shape[1], .group = op->i[0],
                    .base = (float)op->f[0]};
}

/* dst[k - k0] = base * code[o][k / group] * (nibble[o][k] - 8) for k in [k0, k1): the one formula
 * every int4 path uses, so the kernels multiply by exactly the weights NL_OP_INT4_DEQUANT shows. */
static void dequant_row(const int4_w *w, int64_t o, int64_t k0, int64_t k1, float *dst)
{
    const uint8_t *p = w->nib + o * w->pk, *c = w->code + o * w->ng;
    int64_t k = k0;
    while (k < k1) {
        const int64_t g = k / w->group, end = (g + 1) * w->group < k1 ? (g + 1) * w->group : k1;
        const float s = w->base * (float)c[g];
        if (k % 2) { /* a group starting on a high nibble */
            dst[k - k0] = s * (float)((p[k / 2] >> 4) - 8);
            k++;
        }
        for (; k + 1 < end; k += 2) { /* whole bytes */
            const uint8_t b = p[k / 2];
            dst[k - k0] = s * (float)((b & 15) - 8);
            dst[k + 1 - k0] = s * (float)((b >> 4) - 8);
        }
        if (k < end) {
            dst[k - k0] = s * (float)((p[k / 2] & 15) - 8);
            k++;
        }
    }
}

/* Rows [o0, o1) by inputs [k0, k1) into blk [o1 - o0, k1 - k0]. */
static void dequant_block(const int4_w *w, int64_t o0, int64_t o1, int64_t k0, int64_t k1, float *blk)
{
    for (int64_t o = o0; o < o1; o++) dequant_row(w, o, k0, k1, blk + (o - o0) * (k1 - k0));
}

nl_status nl_cpu_int4_dequant(const nl_op *op)
{
    const int4_w w = int4_weights(op, op->src[0], op->src[1], op->dst->shape[1]);
    float *d = nl_tensor_f32(op->dst);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < w.O; o++) dequant_row(&w, o, 0, w.K, d + o * w.K);
    return NL_OK;
}

/* Holds OpenBLAS to one thread while our threads each call it (nt > 1), and gives it back. */
static void blas_serial(int nt, bool on)
{
    if (nt > 1) openblas_set_num_threads(on ? 1 : nl_get_threads());
}

static float *block_buffer(void)
{
    return malloc((size_t)INT4_OB * INT4_KB * sizeof(float));
}

/* y[n][o] = sum_k x[n][k] w[o][k] + bias[o]: tasks are (block of INT4_OB outputs, chunk of
 * INT4_NCHUNK rows); each dequantizes its block INT4_KB inputs at a time and lets sgemm multiply
 * the rows by it, accumulating into y. */
nl_status nl_cpu_int4_linear(const nl_op *op)
{
    const nl_tensor *x = op->src[0];
    const int64_t N = x->shape[0], K = x->shape[1];
    const int4_w w = int4_weights(op, op->src[1], op->src[2], K);
    const float *xd = nl_tensor_f32(x), *bias = op->src[3] ? nl_tensor_f32(op->src[3]) : NULL;
    float *y = nl_tensor_f32(op->dst);
    const int64_t nob = (w.O + INT4_OB - 1) / INT4_OB, nch = (N + INT4_NCHUNK - 1) / INT4_NCHUNK;
    const int64_t ntask = nob * nch;
    int64_t nt = cpu_threads_for(N * w.O * K);
    nt = nt < ntask ? nt : ntask;
    bool oom = false;
    blas_serial((int)nt, true);
#pragma omp parallel num_threads((int)nt) if (nt > 1)
    {
        float *blk = block_buffer();
        if (!blk) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < ntask; t++) {
            if (!blk) continue;
            const int64_t o0 = t / nch * INT4_OB, o1 = o0 + INT4_OB < w.O ? o0 + INT4_OB : w.O;
            const int64_t n0 = t % nch * INT4_NCHUNK, n1 = n0 + INT4_NCHUNK < N ? n0 + INT4_NCHUNK : N;
            for (int64_t n = n0; n < n1; n++)
                for (int64_t o = o0; o < o1; o++) y[n * w.O + o] = bias ? bias[o] : 0;
            for (int64_t k0 = 0; k0 < K; k0 += INT4_KB) {
                const int64_t k1 = k0 + INT4_KB < K ? k0 + INT4_KB : K;
                dequant_block(&w, o0, o1, k0, k1, blk);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(n1 - n0), (int)(o1 - o0),
                            (int)(k1 - k0), 1.0f, xd + n0 * K + k0, (int)K, blk, (int)(k1 - k0), 1.0f,
                            y + n0 * w.O + o0, (int)w.O);
            }
        }
        free(blk);
    }
    blas_serial((int)nt, false);
    return oom ? nl_seterr(NL_ENOMEM, "int4_linear: out of memory for the weight blocks") : NL_OK;
}

/* The convolution as im2col + the same blocked product, a few images at a time (chunks in
 * parallel): the chunk's columns [C*k*k, OH*OW] per image in a per-thread buffer of at most
 * INT4_COLS_BYTES (at least one image), then for each block of INT4_OB rows by INT4_KB inputs,
 * dequantized once for the chunk, y_n [O, OH*OW] += block cols_n for each image n. */
enum { INT4_COLS_BYTES = 1 << 20, INT4_CHUNK_MAX = 8 };

nl_status nl_cpu_int4_conv2d(const nl_op *op)
{
    const nl_tensor *x = op->src[0], *dst = op->dst;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t k = op->i[1], s = op->i[2], p = op->i[3], OH = dst->shape[2], OW = dst->shape[3];
    const int64_t K = C * k * k, P = OH * OW;
    const cpu_conv_geom g = cpu_conv_geometry(x, dst->shape[1], k, k, dst, s, p);
    const int4_w w = int4_weights(op, op->src[1], op->src[2], K);
    const float *xd = nl_tensor_f32(x), *bias = op->src[3] ? nl_tensor_f32(op->src[3]) : NULL;
    float *y = nl_tensor_f32(op->dst);
    const int64_t per = K * P * (int64_t)sizeof(float);
    int64_t B = per > 0 ? INT4_COLS_BYTES / per : 1;
    B = B < 1 ? 1 : B > INT4_CHUNK_MAX ? INT4_CHUNK_MAX : B;
    const int64_t nchunk = (N + B - 1) / B;
    int64_t nt = cpu_threads_for(N * w.O * P * K);
    nt = nt < nchunk ? nt : nchunk;
    bool oom = false;
    blas_serial((int)nt, true);
#pragma omp parallel num_threads((int)nt) if (nt > 1)
    {
        float *blk = block_buffer(), *cols = malloc((size_t)(B * K * P) * sizeof(float));
        if (!blk || !cols) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < nchunk; t++) {
            if (!blk || !cols) continue;
            const int64_t n0 = t * B, n1 = n0 + B < N ? n0 + B : N;
            for (int64_t n = n0; n < n1; n++) {
                cpu_im2col(&g, xd + n * C * H * W, cols + (n - n0) * K * P);
                float *yn = y + n * w.O * P;
                for (int64_t o = 0; o < w.O; o++)
                    for (int64_t i = 0; i < P; i++) yn[o * P + i] = bias ? bias[o] : 0;
            }
            for (int64_t o0 = 0; o0 < w.O; o0 += INT4_OB) {
                const int64_t o1 = o0 + INT4_OB < w.O ? o0 + INT4_OB : w.O;
                for (int64_t k0 = 0; k0 < K; k0 += INT4_KB) {
                    const int64_t k1 = k0 + INT4_KB < K ? k0 + INT4_KB : K;
                    dequant_block(&w, o0, o1, k0, k1, blk);
                    for (int64_t n = n0; n < n1; n++)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(o1 - o0), (int)P,
                                    (int)(k1 - k0), 1.0f, blk, (int)(k1 - k0), cols + ((n - n0) * K + k0) * P,
                                    (int)P, 1.0f, y + (n * w.O + o0) * P, (int)P);
                }
            }
        }
        free(blk);
        free(cols);
    }
    blas_serial((int)nt, false);
    return oom ? nl_seterr(NL_ENOMEM, "int4_conv2d: out of memory for the columns") : NL_OK;
}
