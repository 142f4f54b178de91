/* conv2d.c: the CPU's 2-D convolution (NL_OP_CONV2D and its data and filter gradients) as im2col +
 * sgemm, after Caffe/darknet: image n's columns are a [C*KH*KW, OH*OW] matrix, so the forward pass
 * is one sgemm per image writing NCHW directly and col2im scatters the data gradient back. Images
 * (or groups of them) run OpenMP-parallel, each with a one-thread sgemm of its own, split statically:
 * thread i takes the i-th block of images, as the elementwise and pooling kernels around it do, so
 * that it reads what it wrote (in slow spells of this 2-core machine, dynamic scheduling took up to
 * 1.3x longer: seed CNN evaluation 6.6 against 5.1 ms at batch 64). The columns
 * live in a slice per thread and are made again where the filter gradient needs them. The sparse
 * convolution (sparse.c) shares im2col (cpu_im2col). Where the CPU has AVX2 (cpu_isa), stride-1
 * convolutions skip im2col: the forward pass and the data gradient run conv_direct.c's kernel on a
 * padded copy of each image, and so does the filter gradient of narrow filters. Under precision
 * bf16 every product goes through im2col and gemm_bf16.c instead of sgemm. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"
#include "window.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef cpu_conv_geom conv_geom;

/* x: [N, C, H, W], w: [O, C, KH, KW], y: [N, O, OH, OW] (any of them may be the gradient of one). */
static conv_geom conv_geometry(const nl_op *op, const nl_tensor *x, const nl_tensor *w,
                               const nl_tensor *y)
{
    return cpu_conv_geometry(x, w->shape[0], w->shape[2], w->shape[3], y, op->i[0], op->i[1]);
}

cpu_conv_geom cpu_conv_geometry(const nl_tensor *x, int64_t O, int64_t KH, int64_t KW,
                                const nl_tensor *y, int64_t stride, int64_t padding)
{
    cpu_conv_geom g = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                       .O = O, .KH = KH, .KW = KW, .OH = y->shape[2], .OW = y->shape[3],
                       .s = stride, .p = padding};
    g.ckk = g.C * g.KH * g.KW;
    g.P = g.OH * g.OW;
    return g;
}

/* Output row r of a column row: r[ow] = xr[ow*s + off] on [ow0, ow1), 0 elsewhere. Inlined with
 * s = 1 where it can be, so the copy vectorises. */
static inline __attribute__((always_inline)) void gather_row(float *restrict r,
                                                             const float *restrict xr, int64_t n,
                                                             int64_t ow0, int64_t ow1, int64_t s,
                                                             int64_t off)
{
    for (int64_t ow = 0; ow < ow0; ow++) r[ow] = 0;
    for (int64_t ow = ow0; ow < ow1; ow++) r[ow] = xr[ow * s + off];
    for (int64_t ow = ow1; ow < n; ow++) r[ow] = 0;
}

/* The adjoint of gather_row: xr[ow*s + off] += r[ow] on [ow0, ow1). */
static inline __attribute__((always_inline)) void scatter_row(float *restrict xr,
                                                              const float *restrict r, int64_t ow0,
                                                              int64_t ow1, int64_t s, int64_t off)
{
    for (int64_t ow = ow0; ow < ow1; ow++) xr[ow * s + off] += r[ow];
}

/* With stride 1 and OW == W (a "same" convolution, k = 2p + 1), the valid part of column row
 * (kh, kw) is the image shifted by (kh - p)*W + kw - p: one block copy over the outputs
 * [oh0*OW + ow0, (oh1-1)*OW + ow1) instead of a short copy per row. Inside the block, the outputs in
 * columns outside [ow0, ow1) wrap over to a neighbouring image row; this zeroes them. */
static bool block_path(const conv_geom *g) { return g->s == 1 && g->OW == g->W; }

static void zero_wrapped(const conv_geom *g, float *row, int64_t oh0, int64_t oh1, int64_t ow0,
                         int64_t ow1)
{
    for (int64_t j = 0; j < ow0; j++)
        for (int64_t oh = oh0 + 1; oh < oh1; oh++) row[oh * g->OW + j] = 0;
    for (int64_t j = ow1; j < g->OW; j++)
        for (int64_t oh = oh0; oh + 1 < oh1; oh++) row[oh * g->OW + j] = 0;
}

/* Writes the KH*KW rows of one channel's columns: row (kh, kw), column (oh, ow) holds
 * x[oh*s - p + kh][ow*s - p + kw], 0 outside the image. */
static void im2col_channel(const conv_geom *g, const float *x, float *cols)
{
    for (int64_t kh = 0; kh < g->KH; kh++) {
        int64_t oh0, oh1;
        cpu_window_range(g->OH, g->H, g->s, g->p, kh, &oh0, &oh1);
        for (int64_t kw = 0; kw < g->KW; kw++) {
            int64_t ow0, ow1;
            cpu_window_range(g->OW, g->W, g->s, g->p, kw, &ow0, &ow1);
            float *row = cols + (kh * g->KW + kw) * g->P;
            const int64_t off = kw - g->p; /* input column = ow*s + off */
            if (oh0 == oh1 || ow0 == ow1) {
                memset(row, 0, (size_t)g->P * sizeof *row);
            } else if (block_path(g)) {
                const int64_t a = oh0 * g->OW + ow0, b = (oh1 - 1) * g->OW + ow1;
                memset(row, 0, (size_t)a * sizeof *row);
                memcpy(row + a, x + (a + (kh - g->p) * g->W + off), (size_t)(b - a) * sizeof *row);
                memset(row + b, 0, (size_t)(g->P - b) * sizeof *row);
                zero_wrapped(g, row, oh0, oh1, ow0, ow1);
            } else {
                memset(row, 0, (size_t)(oh0 * g->OW) * sizeof *row);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    const float *xr = x + (oh * g->s - g->p + kh) * g->W;
                    if (g->s == 1) gather_row(row + oh * g->OW, xr, g->OW, ow0, ow1, 1, off);
                    else gather_row(row + oh * g->OW, xr, g->OW, ow0, ow1, g->s, off);
                }
                memset(row + oh1 * g->OW, 0, (size_t)((g->OH - oh1) * g->OW) * sizeof *row);
            }
        }
    }
}

void cpu_im2col(const cpu_conv_geom *g, const float *x, float *cols)
{
    for (int64_t c = 0; c < g->C; c++)
        im2col_channel(g, x + c * g->H * g->W, cols + c * g->KH * g->KW * g->P);
}

/* The adjoint of im2col_channel: x = 0, then each column entry is added to its input position.
 * The block path zeroes the wrapped entries of cols (a workspace) first. */
static void col2im_channel(const conv_geom *g, float *cols, float *x)
{
    memset(x, 0, (size_t)(g->H * g->W) * sizeof *x);
    for (int64_t kh = 0; kh < g->KH; kh++) {
        int64_t oh0, oh1;
        cpu_window_range(g->OH, g->H, g->s, g->p, kh, &oh0, &oh1);
        for (int64_t kw = 0; kw < g->KW; kw++) {
            int64_t ow0, ow1;
            cpu_window_range(g->OW, g->W, g->s, g->p, kw, &ow0, &ow1);
            float *row = cols + (kh * g->KW + kw) * g->P;
            const int64_t off = kw - g->p;
            if (oh0 == oh1 || ow0 == ow1) continue;
            if (block_path(g)) {
                const int64_t a = oh0 * g->OW + ow0, b = (oh1 - 1) * g->OW + ow1;
                zero_wrapped(g, row, oh0, oh1, ow0, ow1);
                scatter_row(x, row, a, b, 1, (kh - g->p) * g->W + off);
                continue;
            }
            for (int64_t oh = oh0; oh < oh1; oh++) {
                float *xr = x + (oh * g->s - g->p + kh) * g->W;
                if (g->s == 1) scatter_row(xr, row + oh * g->OW, ow0, ow1, 1, off);
                else scatter_row(xr, row + oh * g->OW, ow0, ow1, g->s, off);
            }
        }
    }
}

/* Sum of n floats in 16 float lanes (vectorised, fixed order), combined in double. */
static double row_sum(const float *x, int64_t n)
{
    float lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) lane[j] += x[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++) s += lane[j];
    for (; i < n; i++) s += x[i];
    return s;
}

/* Threads for a loop over images (at most one per image; 1 when the work is small). With more than
 * one, OpenBLAS is held to one thread while they run (conv_blas_serial), each calling sgemm on its
 * own image: small GEMMs of one image scale badly across threads, and threaded BLAS must not run
 * inside a parallel region. Each image's arithmetic is the same whatever the thread count. */
static int conv_threads(const conv_geom *g, int64_t tasks)
{
    const int64_t nt = cpu_threads_for(g->N * g->O * g->P * g->ckk);
    return (int)(nt < tasks ? nt : tasks);
}

/* Holds OpenBLAS to one thread (on) or gives it back the library's thread count (off). */
static void conv_blas_serial(bool on) { openblas_set_num_threads(on ? 1 : nl_get_threads()); }

/* A grow-only buffer of this file's, reused by every call (NULL with the error set when it cannot
 * grow); what: its use, for the message. Kernels run from one host thread. */
typedef struct {
    float *p;
    size_t cap;
} grow_buf;

static float *grow(grow_buf *b, size_t floats, const char *what)
{
    if (floats <= b->cap) return b->p;
    float *p = realloc(b->p, floats * sizeof *p);
    if (!p) {
        nl_seterr(NL_ENOMEM, "conv2d: out of memory for %s", what);
        return NULL;
    }
    b->cap = floats;
    return b->p = p;
}

static grow_buf bf16_buf; /* the bf16 products' packed operands, a slice per thread */

/* Under precision bf16: a workspace for nt threads' products of M x N x K (*per words each) in
 * *ws; else *ws = NULL (sgemm runs). */
static nl_status bf16_workspace(int nt, int64_t M, int64_t N, int64_t K, uint32_t **ws, int64_t *per)
{
    *ws = NULL;
    *per = 0;
    if (nl_get_precision() != NL_PREC_BF16) return NL_OK;
    *per = cpu_gemm_bf16_ws(M, N, K);
    float *p = grow(&bf16_buf, (size_t)(nt * *per), "the bf16 products' packed operands");
    if (!p) return nl_errcode();
    *ws = (uint32_t *)p;
    return NL_OK;
}

/* c = a b, or c += a b when accumulate (row-major; a stored transposed when ta, b when tb), on this
 * thread: a one-thread sgemm, or the bf16 product in ws when ws is not NULL. */
static void conv_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *a, int64_t lda,
                      const float *b, int64_t ldb, bool accumulate, float *c, int64_t ldc, uint32_t *ws)
{
    if (ws) {
        cpu_gemm_bf16(ta, tb, M, N, K, a, lda, b, ldb, accumulate, c, ldc, ws, 1); /* cannot fail with ws */
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M,
                (int)N, (int)K, 1.0f, a, (int)lda, b, (int)ldb, accumulate ? 1.0f : 0.0f, c, (int)ldc);
}

/* Notes the im2col path's kernel: "<what> sgemm <core>", or "<what> bf16 <how>". */
static void note_gemm(const char *what, const uint32_t *ws)
{
    char w[48];
    snprintf(w, sizeof w, "%s%s", what, ws ? "bf16" : "sgemm");
    cpu_note_kernel(w, ws ? cpu_bf16_path_name(cpu_bf16_path_of()) : nl_cpu_blas_core());
}

/* The direct path (conv_direct.c) where the CPU has AVX2 and the precision is fp32: stride 1; for
 * the data gradient also a square kernel and p <= K-1 (gy is padded by K-1-p). */
static bool direct_path(const conv_geom *g, bool data)
{
    return cpu_isa() >= CPU_ISA_AVX2 && nl_get_precision() == NL_PREC_F32 && g->s == 1 &&
           (!data || (g->KH == g->KW && g->p <= g->KH - 1));
}

/* out [N, outs, OH, OW] = the direct convolution of in [N, ins, H, W] padded by pad, by w (flipped
 * for the data gradient), image by image, each in a padded copy of its own per thread. */
static nl_status conv_direct(const conv_geom *g, const float *in, int64_t ins, int64_t H, int64_t W,
                             int64_t pad, const float *w, bool flip, const float *bias, float *out,
                             int64_t outs)
{
    static grow_buf packed, padded;
    if (g->N == 0) return NL_OK; /* an empty batch writes nothing */
    const cpu_direct_geom d = {.C = ins, .Hp = H + 2 * pad, .Wp = W + 2 * pad, .O = outs,
                               .KH = g->KH, .KW = g->KW, .OH = H + 2 * pad - g->KH + 1,
                               .OW = W + 2 * pad - g->KW + 1};
    const int nt = conv_threads(g, g->N);
    const int64_t wsize = (outs + CPU_DR - 1) / CPU_DR * CPU_DR * ins * g->KH * g->KW,
                  psize = ins * d.Hp * d.Wp;
    float *wp = grow(&packed, (size_t)wsize, "packed weights");
    float *xp = grow(&padded, (size_t)(nt * psize), "padded images");
    if (!wp || !xp) return nl_errcode();
    cpu_conv_direct_pack(w, g->O, g->C, g->KH, g->KW, flip, wp);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < g->N; n++) {
        float *xt = xp + omp_get_thread_num() * psize;
        cpu_conv_pad(in + n * ins * H * W, ins, H, W, pad, xt);
        cpu_conv_direct_avx2(&d, xt, wp, bias, out + n * outs * d.OH * d.OW);
    }
    return NL_OK;
}

/* y = w * x + bias, image by image through a column workspace aux [T, C*KH*KW, OH*OW] (one slice
 * per thread, T of them at most). */
nl_status nl_cpu_conv2d_forward(const nl_op *op)
{
    const conv_geom g = conv_geometry(op, op->src[0], op->src[1], op->dst);
    const float *x = nl_tensor_f32(op->src[0]), *w = nl_tensor_f32(op->src[1]);
    const float *bias = op->src[2] ? nl_tensor_f32(op->src[2]) : NULL;
    float *y = nl_tensor_f32(op->dst), *cols = nl_tensor_f32(op->aux);
    if (direct_path(&g, false)) {
        cpu_note_kernel("conv", "direct avx2");
        return conv_direct(&g, x, g.C, g.H, g.W, g.p, w, false, bias, y, g.O);
    }
    int nt = conv_threads(&g, g.N);
    nt = nt < op->aux->shape[0] ? nt : (int)op->aux->shape[0];
    uint32_t *ws;
    int64_t per;
    if (bf16_workspace(nt, g.O, g.P, g.ckk, &ws, &per) != NL_OK) return nl_errcode();
    note_gemm("conv im2col+", ws);
    if (nt > 1) conv_blas_serial(true);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < g.N; n++) {
        const int t = omp_get_thread_num();
        float *cn = cols + t * g.ckk * g.P, *yn = y + n * g.O * g.P;
        cpu_im2col(&g, x + n * g.C * g.H * g.W, cn);
        for (int64_t o = 0; bias && o < g.O; o++)
            for (int64_t i = 0; i < g.P; i++) yn[o * g.P + i] = bias[o];
        conv_gemm(false, false, g.O, g.P, g.ckk, w, g.ckk, cn, g.P, bias != NULL, yn, g.P,
                  ws ? ws + t * per : NULL);
    }
    if (nt > 1) conv_blas_serial(false);
    return NL_OK;
}

/* gx = w^T gy, image by image through a column workspace aux [T, C*KH*KW, OH*OW] (one slice per
 * thread, T of them at most) and col2im. */
nl_status nl_cpu_conv2d_backward_data(const nl_op *op)
{
    const conv_geom g = conv_geometry(op, op->dst, op->src[1], op->src[0]);
    const float *gy = nl_tensor_f32(op->src[0]), *w = nl_tensor_f32(op->src[1]);
    float *gx = nl_tensor_f32(op->dst), *gcols = nl_tensor_f32(op->aux);
    if (direct_path(&g, true)) {
        cpu_note_kernel("dgrad", "direct avx2");
        return conv_direct(&g, gy, g.O, g.OH, g.OW, g.KH - 1 - g.p, w, true, NULL, gx, g.C);
    }
    int nt = conv_threads(&g, g.N);
    nt = nt < op->aux->shape[0] ? nt : (int)op->aux->shape[0];
    uint32_t *ws;
    int64_t per;
    if (bf16_workspace(nt, g.ckk, g.P, g.O, &ws, &per) != NL_OK) return nl_errcode();
    note_gemm("dgrad col2im+", ws);
    if (nt > 1) conv_blas_serial(true);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < g.N; n++) {
        const int t = omp_get_thread_num();
        float *gc = gcols + t * g.ckk * g.P;
        conv_gemm(true, false, g.ckk, g.P, g.O, w, g.ckk, gy + n * g.O * g.P, g.P, false, gc, g.P,
                  ws ? ws + t * per : NULL);
        for (int64_t c = 0; c < g.C; c++)
            col2im_channel(&g, gc + c * g.KH * g.KW * g.P, gx + (n * g.C + c) * g.H * g.W);
    }
    if (nt > 1) conv_blas_serial(false);
    return NL_OK;
}

/* gb[o] += gy[:, o] summed over images and positions. */
static void bias_grad(const conv_geom *g, const float *gy, int64_t o, float *gb)
{
    double sum = 0;
    for (int64_t n = 0; n < g->N; n++) sum += row_sum(gy + (n * g->O + o) * g->P, g->P);
    gb[o] += (float)sum;
}

/* The filter gradient's direct path runs for filters of up to this many inputs (C*KH*KW): on
 * narrow filters it is faster than im2col + sgemm (the seed CNN's first layer in 2.2 against 3.6 ms
 * at batch 64, one thread, AMD EPYC Zen 3); on wide ones sgemm is. */
enum { CONV_DIRECT_FILTER_MAX = 64 };

/* Images per group of the direct filter gradient: each group of this many consecutive images is
 * summed alone (its lanes, then each weight's lanes added in a fixed order), and the groups' sums
 * are added to the gradient one after the other. No sum depends on the thread count; the chains of
 * float additions are as long whatever the batch; and a batch accumulated in pieces of multiples
 * of FILTER_GROUP images (gradient accumulation) gives the bits of the whole batch at once. */
enum { FILTER_GROUP = 8 };

/* The filter gradient on the direct path: every image padded once, then each (group of
 * FILTER_GROUP images, block of CPU_FR output channels) sums its products in lanes of its thread
 * (conv_direct.c) into the group's partial sums; then gw += each group's partial, in group order. */
static nl_status filter_direct(const conv_geom *g, const float *x, const float *gy, float *gw,
                               float *gb)
{
    static grow_buf padded, lanes_buf, partials;
    if (g->N == 0) return NL_OK; /* an empty batch adds nothing */
    const cpu_direct_geom d = {.C = g->C, .Hp = g->H + 2 * g->p, .Wp = g->W + 2 * g->p, .O = g->O,
                               .KH = g->KH, .KW = g->KW, .OH = g->OH, .OW = g->OW};
    const int64_t psize = g->C * d.Hp * d.Wp, size = g->O * g->ckk, lsize = CPU_FR * g->ckk * 8;
    const int64_t blocks = (g->O + CPU_FR - 1) / CPU_FR, groups = (g->N + FILTER_GROUP - 1) / FILTER_GROUP;
    const int nt = conv_threads(g, g->N);
    float *xp = grow(&padded, (size_t)(g->N * psize), "padded images");
    float *lanes = grow(&lanes_buf, (size_t)(nt * lsize), "the filter gradient's lanes");
    float *part = grow(&partials, (size_t)(groups * size), "the filter gradient's partial sums");
    if (!xp || !lanes || !part) return nl_errcode();
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *lt = lanes + omp_get_thread_num() * lsize;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g->N; n++)
            cpu_conv_pad(x + n * g->C * g->H * g->W, g->C, g->H, g->W, g->p, xp + n * psize);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < groups * blocks; t++) {
            const int64_t k = t / blocks, b = t % blocks, n0 = k * FILTER_GROUP;
            const int64_t nn = g->N - n0 < FILTER_GROUP ? g->N - n0 : FILTER_GROUP;
            const int64_t o0 = CPU_FR * b, o1 = o0 + CPU_FR < g->O ? o0 + CPU_FR : g->O;
            memset(lt, 0, (size_t)((o1 - o0) * g->ckk * 8) * sizeof *lt);
            cpu_conv_filter_avx2(&d, nn, xp + n0 * psize, gy + n0 * g->O * g->P, o0, o1, lt);
            float *pk = part + k * size + o0 * g->ckk;
            for (int64_t i = 0; i < (o1 - o0) * g->ckk; i++) pk[i] = cpu_lanes_sum(lt + 8 * i);
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < size; i++) {
            float s = gw[i];
            for (int64_t k = 0; k < groups; k++) s += part[k * size + i];
            gw[i] = s;
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < (gb ? g->O : 0); o++) bias_grad(g, gy, o, gb);
    }
    return NL_OK;
}

enum { CONV_GW_GROUPS = 4 }; /* the filter gradient sums images in this many fixed groups */

/* gw += gy x^T, with x's columns made again image by image in a slice per thread (they stay in
 * cache, where keeping every image's columns from the forward pass would stream them through
 * memory twice); gbias (aux, may be NULL) += gy summed over images and positions. The images are
 * split in CONV_GW_GROUPS fixed groups, each summed in order into its own partial, then the
 * partials are added in order, so no sum depends on the thread count. */
nl_status nl_cpu_conv2d_backward_filter(const nl_op *op)
{
    static grow_buf partials, columns;
    const conv_geom g = conv_geometry(op, op->src[0], op->dst, op->src[1]);
    const float *x = nl_tensor_f32(op->src[0]), *gy = nl_tensor_f32(op->src[1]);
    float *gw = nl_tensor_f32(op->dst), *gb = op->aux ? nl_tensor_f32(op->aux) : NULL;
    if (direct_path(&g, false) && g.ckk <= CONV_DIRECT_FILTER_MAX) {
        cpu_note_kernel("wgrad", "direct avx2");
        return filter_direct(&g, x, gy, gw, gb);
    }
    const int64_t groups = g.N < CONV_GW_GROUPS ? g.N : CONV_GW_GROUPS, size = g.O * g.ckk;
    if (groups == 0) return NL_OK; /* an empty batch adds nothing */
    const int nt = conv_threads(&g, groups);
    float *part = grow(&partials, (size_t)(groups * size), "the filter gradient's partial sums");
    float *cols = grow(&columns, (size_t)(nt * g.ckk * g.P), "the filter gradient's columns");
    uint32_t *ws;
    int64_t per;
    if (!part || !cols || bf16_workspace(nt, g.O, g.ckk, g.P, &ws, &per) != NL_OK) return nl_errcode();
    note_gemm("wgrad im2col+", ws);
    if (nt > 1) conv_blas_serial(true);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *cn = cols + omp_get_thread_num() * g.ckk * g.P;
        uint32_t *wst = ws ? ws + omp_get_thread_num() * per : NULL;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < groups; k++)
            for (int64_t n = g.N * k / groups; n < g.N * (k + 1) / groups; n++) {
                for (int64_t c = 0; c < g.C; c++)
                    im2col_channel(&g, x + (n * g.C + c) * g.H * g.W, cn + c * g.KH * g.KW * g.P);
                conv_gemm(false, true, g.O, g.ckk, g.P, gy + n * g.O * g.P, g.P, cn, g.P,
                          n != g.N * k / groups, part + k * size, g.ckk, wst);
            }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < size; i++) {
            float s = part[i];
            for (int64_t k = 1; k < groups; k++) s += part[k * size + i];
            gw[i] += s;
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < (gb ? g.O : 0); o++) bias_grad(&g, gy, o, gb);
    }
    if (nt > 1) conv_blas_serial(false);
    return NL_OK;
}
