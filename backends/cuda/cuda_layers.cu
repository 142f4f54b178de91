/* cuda_layers.cu: the CUDA twins of the CPU's layer kernels (activation.c, batchnorm.c,
 * dropout.c, loss.c, conv2d.c, pool.c, cpu_optim.c, the fake-quantization of qgemm.c) and of
 * cpu_matmul.c (cuBLAS). Per-element math comes from the shared hd/ headers; sums run in double
 * and, where the CPU adds in a fixed order that a thread can follow, in that same order.
 * Convolution is im2col + cuBLAS (as the CPU does it with OpenBLAS); pooling, batch norm and the
 * rest are own kernels. */
#include "cuda_impl.cuh"

#include "hd/act_hd.h"
#include "hd/optim_hd.h"
#include "rng_hd.h"

#include <limits.h>

/* ---------------------------------------------------------------- matrix products ------ */

/* One operand as cuBLAS reads it: in place, or packed into a contiguous scratch copy. */
typedef struct {
    cpu_gemm_layout l;
    float *p;        /* what cuBLAS reads */
    float *scratch;  /* the packed copy, or NULL */
    int64_t stride;  /* between batch items as cuBLAS reads them */
} cu_mm;

static nl_status mm_prepare(cu_ctx *c, cu_mm *m, const nl_tensor *t, bool force_pack, bool load)
{
    m->l = cpu_gemm_layout_of(t, INT_MAX);
    m->p = cu_f32(t);
    m->scratch = NULL;
    m->stride = m->l.sb;
    if (force_pack && m->l.trans) m->l.direct = m->l.trans = false, m->l.ld = m->l.cols > 1 ? m->l.cols : 1;
    if (m->l.direct) return NL_OK;
    const int64_t item = m->l.rows * m->l.cols, items = m->l.sb ? m->l.batch : 1;
    if (!(m->scratch = (float *)cu_scratch(c, (size_t)(item * items) * sizeof(float) + 1)))
        return nl_errcode();
    m->stride = m->l.sb ? item : 0;
    if (!load) return NL_OK;
    const int64_t shape[3] = {items, m->l.rows, m->l.cols}, pst[3] = {item, m->l.cols, 1},
                  tst[3] = {m->l.sb, m->l.sr, m->l.sc};
    nl_status st = cu_copy_f32(c, m->scratch, pst, cu_f32(t), tst, 3, shape);
    m->p = m->scratch;
    return st;
}

/* dst[b] = a[b] @ b[b] (+ dst[b] with i[0] = 1), row-major, through the column-major cuBLAS as
 * C^T = B^T A^T. Operands whose strides cuBLAS cannot read are packed first. */
nl_status cu_matmul(cu_ctx *c, const nl_op *op)
{
    const bool accumulate = op->i[0] != 0;
    cu_mm a = {}, b = {}, d = {};
    nl_status st = mm_prepare(c, &a, op->src[0], false, true);
    if (st == NL_OK) st = mm_prepare(c, &b, op->src[1], false, true);
    if (st == NL_OK) st = mm_prepare(c, &d, op->dst, true, accumulate);
    if (st == NL_OK && !d.l.direct) d.p = d.scratch;
    const int64_t batch = d.l.batch, m = d.l.rows, n = d.l.cols, k = a.l.cols;
    if (st == NL_OK && (m > INT_MAX || n > INT_MAX || k > INT_MAX))
        st = nl_seterr(NL_EINVAL, "matmul: a dimension exceeds cuBLAS's %d limit", INT_MAX);
    if (st == NL_OK && batch > 0 && m > 0 && n > 0) {
        const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
        c->launches++;
        st = cu_blas_check(c, cu_blas.sgemm_batched(
                                  c->blas, b.l.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  a.l.trans ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k,
                                  &one, b.p, (int)b.l.ld, b.stride, a.p, (int)a.l.ld, a.stride,
                                  &beta, d.p, (int)d.l.ld, d.l.direct ? d.l.sb : m * n, (int)batch),
                           "cublasSgemmStridedBatched");
        if (st == NL_OK && !d.l.direct) {
            const int64_t shape[3] = {batch, m, n}, pst[3] = {m * n, n, 1},
                          tst[3] = {d.l.sb, d.l.sr, d.l.sc};
            st = cu_copy_f32(c, cu_f32(op->dst), tst, d.scratch, pst, 3, shape);
        }
    }
    cu_scratch_free(c, a.scratch);
    cu_scratch_free(c, b.scratch);
    cu_scratch_free(c, d.scratch);
    return st;
}

/* ---------------------------------------------------------------- activations ---------- */

__global__ void k_act(int64_t n, float *y, const float *x, int act, float slope)
{
    CU_FOR(k, n) y[k] = nl_hd_act_forward(act, x[k], slope);
}

__global__ void k_act_bwd(int64_t n, float *gx, const float *gy, const float *v, int act, float slope)
{
    CU_FOR(k, n) gx[k] = nl_hd_act_backward(act, gy[k], v[k], slope);
}

/* One block per row: the warp-shuffle-free tree over shared memory keeps the code short; rows
 * are the last dimension (classes), small. */
enum { ROW_THREADS = 128 };

__device__ inline double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    const double t = sh[0];
    __syncthreads();
    return t;
}

/* gx = y * (gy - sum(gy * y)) per row. */
__global__ void k_softmax_bwd(int64_t rows, int64_t len, float *gx, const float *gy, const float *y)
{
    __shared__ double sh[ROW_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *g = gy + r * len, *p = y + r * len;
        double dot = 0;
        for (int64_t c = threadIdx.x; c < len; c += blockDim.x) dot += (double)g[c] * p[c];
        const float s = (float)block_sum(dot, sh);
        for (int64_t c = threadIdx.x; c < len; c += blockDim.x) gx[r * len + c] = (g[c] - s) * p[c];
    }
}

static unsigned row_blocks(int64_t rows) { return (unsigned)(rows < CU_MAX_BLOCKS ? rows : CU_MAX_BLOCKS); }

nl_status cu_act_forward(cu_ctx *c, const nl_op *op)
{
    const int64_t n = nl_tensor_numel(op->dst);
    if (n == 0) return NL_OK;
    k_act<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, cu_f32(op->dst), cu_f32(op->src[0]),
                                                      op->i[0], (float)op->f[0]);
    return cu_launched(c, "act");
}

nl_status cu_act_backward(cu_ctx *c, const nl_op *op)
{
    const int64_t n = nl_tensor_numel(op->dst);
    if (n == 0) return NL_OK;
    if (op->i[0] == NL_ACT_SOFTMAX) {
        const int64_t len = op->dst->ndim ? op->dst->shape[op->dst->ndim - 1] : 1;
        if (len == 0) return NL_OK;
        k_softmax_bwd<<<row_blocks(n / len), ROW_THREADS, 0, c->stream>>>(
            n / len, len, cu_f32(op->dst), cu_f32(op->src[0]), cu_f32(op->src[1]));
        return cu_launched(c, "softmax_backward");
    }
    k_act_bwd<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, cu_f32(op->dst), cu_f32(op->src[0]),
                                                          cu_f32(op->src[1]), op->i[0],
                                                          (float)op->f[0]);
    return cu_launched(c, "act_backward");
}

/* The CPU's running max: NaN, once met, stays. */
__device__ inline float nan_max(float m, float v) { return v > m || v != v ? v : m; }

__global__ void k_softmax(int64_t rows, int64_t len, float *y, const float *x, int log_softmax)
{
    __shared__ double sh[ROW_THREADS];
    __shared__ float shm[ROW_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        float m = xr[0];
        for (int64_t c = threadIdx.x; c < len; c += blockDim.x) m = m != m ? m : nan_max(m, xr[c]);
        shm[threadIdx.x] = m;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w /= 2) {
            if ((int)threadIdx.x < w) {
                const float o = shm[threadIdx.x + w];
                shm[threadIdx.x] = shm[threadIdx.x] != shm[threadIdx.x] ? shm[threadIdx.x] : nan_max(shm[threadIdx.x], o);
            }
            __syncthreads();
        }
        const float max = shm[0];
        double sum = 0;
        for (int64_t c = threadIdx.x; c < len; c += blockDim.x) {
            const float e = expf(xr[c] - max);
            if (!log_softmax) yr[c] = e;
            sum += e;
        }
        sum = block_sum(sum, sh);
        if (log_softmax) {
            const float lse = (float)log(sum);
            for (int64_t c = threadIdx.x; c < len; c += blockDim.x) yr[c] = xr[c] - max - lse;
        } else {
            const float inv = (float)(1.0 / sum);
            for (int64_t c = threadIdx.x; c < len; c += blockDim.x) yr[c] *= inv;
        }
        __syncthreads();
    }
}

nl_status cu_softmax(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *xt = op->src[0];
    const int64_t n = nl_tensor_numel(xt), len = xt->ndim ? xt->shape[xt->ndim - 1] : 1;
    if (len == 0 || n == 0) return NL_OK;
    k_softmax<<<row_blocks(n / len), ROW_THREADS, 0, c->stream>>>(n / len, len, cu_f32(op->dst),
                                                                  cu_f32(xt), op->i[0] == 1);
    return cu_launched(c, "softmax");
}

/* ---------------------------------------------------------------- batch norm ----------- */

/* x is [N, C, S]: per channel c, block c sums over n and s in double. */
__global__ void k_bn_stats(int64_t N, int64_t C, int64_t S, const float *x, float *stats)
{
    __shared__ double sh[ROW_THREADS];
    const int64_t c = blockIdx.x, cnt = N * S;
    double s = 0;
    for (int64_t k = threadIdx.x; k < cnt; k += blockDim.x) s += x[((k / S) * C + c) * S + k % S];
    const float mean = (float)(block_sum(s, sh) / (double)cnt);
    double q = 0;
    for (int64_t k = threadIdx.x; k < cnt; k += blockDim.x) {
        const float a = x[((k / S) * C + c) * S + k % S] - mean;
        q += (double)(a * a);
    }
    q = block_sum(q, sh);
    if (threadIdx.x == 0) {
        stats[c] = mean;
        stats[C + c] = (float)(q / (double)cnt);
    }
}

__device__ inline float bn_invstd(float var, double eps) { return (float)(1.0 / sqrt((double)var + eps)); }

__global__ void k_bn_apply(int64_t n, int64_t C, int64_t S, float *y, const float *x,
                           const float *gamma, const float *beta, const float *stats, double eps)
{
    CU_FOR(k, n)
    {
        const int64_t c = (k / S) % C;
        const float a = bn_invstd(stats[C + c], eps) * (gamma ? gamma[c] : 1.0f);
        const float b = (beta ? beta[c] : 0.0f) - stats[c] * a;
        y[k] = x[k] * a + b;
    }
}

static void bn_dims(const nl_tensor *x, int64_t *N, int64_t *C, int64_t *S)
{
    *N = x->shape[0];
    *C = x->shape[1];
    *S = 1;
    for (int k = 2; k < x->ndim; k++) *S *= x->shape[k];
}

nl_status cu_batchnorm_forward(cu_ctx *c, const nl_op *op)
{
    int64_t N, C, S;
    bn_dims(op->src[0], &N, &C, &S);
    const bool train = op->i[0] == 1;
    const float *gamma = op->src[1] ? cu_f32(op->src[1]) : NULL;
    const float *beta = op->src[2] ? cu_f32(op->src[2]) : NULL;
    float *stats = cu_f32(train ? op->aux : op->src[3]);
    if (train && C > 0) {
        k_bn_stats<<<(unsigned)C, ROW_THREADS, 0, c->stream>>>(N, C, S, cu_f32(op->src[0]), stats);
        nl_status st = cu_launched(c, "batchnorm_stats");
        if (st != NL_OK) return st;
    }
    const int64_t n = N * C * S;
    if (n == 0) return NL_OK;
    k_bn_apply<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, C, S, cu_f32(op->dst),
                                                           cu_f32(op->src[0]), gamma, beta, stats,
                                                           op->f[0]);
    return cu_launched(c, "batchnorm");
}

/* Per channel: sum(gy) and sum((x - mean) * gy) in double into red[2c], red[2c+1], and the
 * parameter gradients when dparams is given. */
__global__ void k_bn_bwd_sums(int64_t N, int64_t C, int64_t S, const float *gy, const float *x,
                              const float *stats, double eps, double *red, float *dparams)
{
    __shared__ double sh[ROW_THREADS];
    const int64_t c = blockIdx.x, cnt = N * S;
    const float mean = stats[c];
    double s = 0, d = 0;
    for (int64_t k = threadIdx.x; k < cnt; k += blockDim.x) {
        const int64_t at = ((k / S) * C + c) * S + k % S;
        s += gy[at];
        d += (double)((x[at] - mean) * gy[at]);
    }
    s = block_sum(s, sh);
    d = block_sum(d, sh);
    if (threadIdx.x == 0) {
        red[2 * c] = s;
        red[2 * c + 1] = d;
        if (dparams) {
            dparams[c] = (float)(d * bn_invstd(stats[C + c], eps));
            dparams[C + c] = (float)s;
        }
    }
}

__global__ void k_bn_bwd_apply(int64_t n, int64_t C, int64_t S, int64_t cnt, float *gx,
                               const float *gy, const float *x, const float *gamma,
                               const float *stats, const double *red, double eps, int train)
{
    CU_FOR(k, n)
    {
        const int64_t c = (k / S) % C;
        const float mean = stats[c], invstd = bn_invstd(stats[C + c], eps);
        const float w = gamma ? gamma[c] : 1.0f;
        const float k_proj = train ? (float)red[2 * c + 1] * invstd * invstd / (float)cnt : 0.0f;
        const float gmean = train ? (float)(red[2 * c] / (double)cnt) : 0.0f;
        gx[k] = (gy[k] - gmean - (x[k] - mean) * k_proj) * invstd * w;
    }
}

nl_status cu_batchnorm_backward(cu_ctx *c, const nl_op *op)
{
    int64_t N, C, S;
    bn_dims(op->src[1], &N, &C, &S);
    if (C == 0) return NL_OK;
    double *red = (double *)cu_scratch(c, (size_t)(2 * C) * sizeof(double));
    if (!red) return nl_errcode();
    const float *gamma = op->src[2] ? cu_f32(op->src[2]) : NULL;
    k_bn_bwd_sums<<<(unsigned)C, ROW_THREADS, 0, c->stream>>>(
        N, C, S, cu_f32(op->src[0]), cu_f32(op->src[1]), cu_f32(op->src[3]), op->f[0], red,
        op->aux ? cu_f32(op->aux) : NULL);
    nl_status st = cu_launched(c, "batchnorm_backward_sums");
    const int64_t n = N * C * S;
    if (st == NL_OK && n > 0) {
        k_bn_bwd_apply<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(
            n, C, S, N * S, cu_f32(op->dst), cu_f32(op->src[0]), cu_f32(op->src[1]), gamma,
            cu_f32(op->src[3]), red, op->f[0], op->i[0] == 1);
        st = cu_launched(c, "batchnorm_backward");
    }
    cu_scratch_free(c, red);
    return st;
}

/* ---------------------------------------------------------------- dropout, loss -------- */

__global__ void k_dropout(int64_t n, float *y, const float *x, const uint8_t *given,
                          uint8_t *mask, float p, float scale, uint64_t key, uint64_t counter)
{
    CU_FOR(k, n)
    {
        const uint8_t keep = given ? given[k] : nl_hd_dropout_keep(key, counter + (uint64_t)k, p);
        if (mask) mask[k] = keep;
        y[k] = keep ? x[k] * scale : 0.0f;
    }
}

nl_status cu_dropout(cu_ctx *c, const nl_op *op)
{
    const int64_t n = nl_tensor_numel(op->dst);
    if (n == 0) return NL_OK;
    const uint8_t *given = op->src[1] ? (const uint8_t *)nl_tensor_data(op->src[1]) : NULL;
    uint8_t *mask = given ? NULL : (uint8_t *)nl_tensor_data(op->aux);
    const float scale = op->f[0] < 1 ? (float)(1.0 / (1.0 - op->f[0])) : 0.0f;
    k_dropout<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, cu_f32(op->dst), cu_f32(op->src[0]),
                                                          given, mask, (float)op->f[0], scale,
                                                          op->u[0], op->u[1]);
    return cu_launched(c, "dropout");
}

/* The smoothed target of sample n, class c (classes: i32 [N] or probabilities f32 [N, C]). */
__device__ inline double ce_target(const int32_t *cls, const float *prob, int64_t n, int64_t c,
                                   int64_t C, double ls)
{
    const double t = cls ? (double)(cls[n] == c) : (double)prob[n * C + c];
    return nl_hd_smoothed_target(t, ls, (double)C);
}

/* One thread per sample, classes in order: the CPU's sums, term for term. */
__global__ void k_ce(int64_t N, int64_t C, float *loss, const float *logp, const int32_t *cls,
                     const float *prob, double ls)
{
    CU_FOR(n, N)
    {
        double s = 0;
        for (int64_t c = 0; c < C; c++) s -= ce_target(cls, prob, n, c, C, ls) * logp[n * C + c];
        loss[n] = (float)s;
    }
}

__global__ void k_ce_bwd(int64_t N, int64_t C, float *gx, const float *logp, const int32_t *cls,
                         const float *prob, double ls, double scale)
{
    CU_FOR(n, N)
    {
        double qsum = 0;
        for (int64_t c = 0; c < C; c++) qsum += ce_target(cls, prob, n, c, C, ls);
        for (int64_t c = 0; c < C; c++) {
            const double q = ce_target(cls, prob, n, c, C, ls);
            gx[n * C + c] = (float)(scale * (exp((double)logp[n * C + c]) * qsum - q));
        }
    }
}

/* The loss per sample (forward) or the gradient with respect to the logits (backward). */
static nl_status cu_cross_entropy(cu_ctx *c, const nl_op *op, bool backward)
{
    const nl_tensor *lp = op->src[0], *t = op->src[1];
    const int64_t N = lp->shape[0], C = lp->shape[1];
    if (N == 0) return NL_OK;
    const int32_t *cls = t->dtype == NL_I32 ? (const int32_t *)nl_tensor_data(t) : NULL;
    const float *prob = t->dtype == NL_I32 ? NULL : cu_f32(t);
    if (backward)
        k_ce_bwd<<<cu_blocks(N), CU_THREADS, 0, c->stream>>>(N, C, cu_f32(op->dst), cu_f32(lp),
                                                             cls, prob, op->f[0], op->f[1]);
    else
        k_ce<<<cu_blocks(N), CU_THREADS, 0, c->stream>>>(N, C, cu_f32(op->dst), cu_f32(lp), cls,
                                                         prob, op->f[0]);
    return cu_launched(c, backward ? "cross_entropy_backward" : "cross_entropy");
}

nl_status cu_cross_entropy_forward(cu_ctx *c, const nl_op *op) { return cu_cross_entropy(c, op, false); }
nl_status cu_cross_entropy_backward(cu_ctx *c, const nl_op *op) { return cu_cross_entropy(c, op, true); }

/* ---------------------------------------------------------------- convolution ---------- */

/* im2col of images [n0, n0 + t) of x [N, C, H, W]: column matrix row r = (c, kh, kw), column p =
 * (oh, ow) of image j goes to out[j * img + r * row + p] (img = ckk * P, row = P: one matrix
 * per image; img = P, row = t * P: the images side by side). */
__global__ void k_im2col(cpu_conv_geom g, int64_t n0, int64_t t, const float *x, float *out,
                         int64_t img, int64_t row)
{
    CU_FOR(i, t * g.ckk * g.P)
    {
        const int64_t p = i % g.P, r = (i / g.P) % g.ckk, j = i / (g.P * g.ckk);
        const int64_t kw = r % g.KW, kh = (r / g.KW) % g.KH, ch = r / (g.KW * g.KH);
        const int64_t ow = p % g.OW, oh = p / g.OW;
        const int64_t h = oh * g.s - g.p + kh, w = ow * g.s - g.p + kw;
        const bool in = h >= 0 && h < g.H && w >= 0 && w < g.W;
        out[j * img + r * row + p] = in ? x[(((n0 + j) * g.C + ch) * g.H + h) * g.W + w] : 0.0f;
    }
}

/* col2im as a gather: gx[n][c][h][w] = the sum of the column entries that read it (no atomics;
 * deterministic). */
__global__ void k_col2im(cpu_conv_geom g, int64_t n0, int64_t t, const float *cols, float *gx)
{
    CU_FOR(i, t * g.C * g.H * g.W)
    {
        const int64_t w = i % g.W, h = (i / g.W) % g.H, ch = (i / (g.W * g.H)) % g.C;
        const int64_t j = i / (g.W * g.H * g.C);
        float s = 0;
        for (int64_t kh = 0; kh < g.KH; kh++) {
            const int64_t hh = h + g.p - kh;
            if (hh < 0 || hh % g.s || hh / g.s >= g.OH) continue;
            for (int64_t kw = 0; kw < g.KW; kw++) {
                const int64_t ww = w + g.p - kw;
                if (ww < 0 || ww % g.s || ww / g.s >= g.OW) continue;
                const int64_t r = (ch * g.KH + kh) * g.KW + kw;
                s += cols[(j * g.ckk + r) * g.P + (hh / g.s) * g.OW + ww / g.s];
            }
        }
        gx[(n0 * g.C) * g.H * g.W + i] = s;
    }
}

__global__ void k_bias_add(int64_t n, int64_t O, int64_t P, float *y, const float *b)
{
    CU_FOR(k, n) y[k] += b[(k / P) % O];
}

/* out[o][j * P + p] = gy[n0 + j][o][p]: the gradients of t images side by side. */
__global__ void k_gather_gy(int64_t O, int64_t P, int64_t n0, int64_t t, const float *gy, float *out)
{
    CU_FOR(i, O * t * P)
    {
        const int64_t p = i % P, j = (i / P) % t, o = i / (P * t);
        out[i] = gy[((n0 + j) * O + o) * P + p];
    }
}

/* gbias[o] += sum over images and positions of gy[n][o][p] (one block per o, in double). */
__global__ void k_bias_grad(int64_t N, int64_t O, int64_t P, const float *gy, float *gb)
{
    __shared__ double sh[ROW_THREADS];
    const int64_t o = blockIdx.x;
    double s = 0;
    for (int64_t k = threadIdx.x; k < N * P; k += blockDim.x) s += gy[((k / P) * O + o) * P + k % P];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) gb[o] = (float)((double)gb[o] + s);
}

static cpu_conv_geom conv_geom(const nl_op *op, const nl_tensor *x, const nl_tensor *w,
                               const nl_tensor *y)
{
    return cpu_conv_geometry(x, w->shape[0], w->shape[2], w->shape[3], y, op->i[0], op->i[1]);
}

static bool conv_is_pointwise(const cpu_conv_geom &g)
{
    return g.KH == 1 && g.KW == 1 && g.s == 1 && g.p == 0;
}

/* Images per chunk of a convolution's workspace: as many as fit in CONV_SCRATCH bytes (at least
 * one, at most N), so that a batch takes few launches. */
enum { CONV_SCRATCH = 64 << 20 };
static int64_t chunk_images(int64_t N, int64_t bytes_per_image)
{
    int64_t t = CONV_SCRATCH / (bytes_per_image > 0 ? bytes_per_image : 1);
    return t < 1 ? 1 : t > N ? N : t;
}

/* The column workspace for chunks of *T images: the op's aux [T, ckk, P] (sized for the CPU's
 * threads), or a larger scratch block when more images fit (*own set: free it after). */
static float *conv_workspace(cu_ctx *c, const nl_op *op, const cpu_conv_geom &g, int64_t *T,
                             bool *own)
{
    const int64_t want = chunk_images(g.N, g.ckk * g.P * (int64_t)sizeof(float));
    *T = op->aux->shape[0];
    *own = want > *T;
    if (!*own) return cu_f32(op->aux);
    *T = want;
    return (float *)cu_scratch(c, (size_t)(want * g.ckk * g.P) * sizeof(float));
}

/* y[n] (O x P) = W (O x ckk) @ cols[n] (ckk x P) for the images of one chunk, batched. */
nl_status cu_conv2d_forward(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *x = op->src[0], *w = op->src[1], *b = op->src[2];
    const cpu_conv_geom g = conv_geom(op, x, w, op->dst);
    int64_t T;
    bool own;
    float *cols = conv_workspace(c, op, g, &T, &own), *y = cu_f32(op->dst);
    if (!cols) return nl_errcode();
    const float one = 1.0f, zero = 0.0f;
    nl_status st = NL_OK;
    for (int64_t n0 = 0; n0 < g.N && st == NL_OK; n0 += T) {
        const int64_t t = g.N - n0 < T ? g.N - n0 : T;
        const float *src = cu_f32(x) + n0 * g.C * g.H * g.W;
        if (!conv_is_pointwise(g)) {
            k_im2col<<<cu_blocks(t * g.ckk * g.P), CU_THREADS, 0, c->stream>>>(g, n0, t, cu_f32(x), cols,
                                                                              g.ckk * g.P, g.P);
            if ((st = cu_launched(c, "im2col")) != NL_OK) break;
            src = cols;
        }
        c->launches++;
        st = cu_blas_check(c, cu_blas.sgemm_batched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)g.P,
                                                        (int)g.O, (int)g.ckk, &one, src, (int)g.P,
                                                        g.ckk * g.P, cu_f32(w), (int)g.ckk, 0,
                                                        &zero, y + n0 * g.O * g.P, (int)g.P,
                                                        g.O * g.P, (int)t),
                           "cublasSgemmStridedBatched");
    }
    if (own) cu_scratch_free(c, cols);
    const int64_t n = g.N * g.O * g.P;
    if (st == NL_OK && b && n > 0) {
        k_bias_add<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, g.O, g.P, y, cu_f32(b));
        st = cu_launched(c, "bias_add");
    }
    return st;
}

/* gcols[n] (ckk x P) = W^T @ gy[n], then col2im. */
nl_status cu_conv2d_backward_data(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *gy = op->src[0], *w = op->src[1];
    const cpu_conv_geom g = conv_geom(op, op->dst, w, gy);
    int64_t T;
    bool own;
    float *gcols = conv_workspace(c, op, g, &T, &own), *gx = cu_f32(op->dst);
    if (!gcols) return nl_errcode();
    const float one = 1.0f, zero = 0.0f;
    const bool pw = conv_is_pointwise(g);
    nl_status st = NL_OK;
    for (int64_t n0 = 0; n0 < g.N && st == NL_OK; n0 += T) {
        const int64_t t = g.N - n0 < T ? g.N - n0 : T;
        float *out = pw ? gx + n0 * g.C * g.H * g.W : gcols;
        c->launches++;
        st = cu_blas_check(c, cu_blas.sgemm_batched(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)g.P,
                                                        (int)g.ckk, (int)g.O, &one,
                                                        cu_f32(gy) + n0 * g.O * g.P, (int)g.P,
                                                        g.O * g.P, cu_f32(w), (int)g.ckk, 0, &zero,
                                                        out, (int)g.P, g.ckk * g.P, (int)t),
                           "cublasSgemmStridedBatched");
        if (st == NL_OK && !pw) {
            k_col2im<<<cu_blocks(t * g.C * g.H * g.W), CU_THREADS, 0, c->stream>>>(g, n0, t, gcols, gx);
            st = cu_launched(c, "col2im");
        }
    }
    if (own) cu_scratch_free(c, gcols);
    return st;
}

/* gw (O x ckk) += gy (O x tP) @ cols (ckk x tP)^T per chunk of t images laid side by side;
 * gbias += sums of gy. The workspace is scratch of at most CONV_SCRATCH bytes. */
nl_status cu_conv2d_backward_filter(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *x = op->src[0], *gy = op->src[1], *gw = op->dst;
    const cpu_conv_geom g = conv_geom(op, x, gw, gy);
    if (g.N == 0 || g.P == 0) return NL_OK;
    const int64_t per_image = (g.ckk + g.O) * g.P * (int64_t)sizeof(float);
    const int64_t T = chunk_images(g.N, per_image);
    float *cols = (float *)cu_scratch(c, (size_t)(T * per_image));
    if (!cols) return nl_errcode();
    float *gyt = cols + T * g.ckk * g.P;
    const float one = 1.0f;
    nl_status st = NL_OK;
    for (int64_t n0 = 0; n0 < g.N && st == NL_OK; n0 += T) {
        const int64_t t = g.N - n0 < T ? g.N - n0 : T;
        k_im2col<<<cu_blocks(t * g.ckk * g.P), CU_THREADS, 0, c->stream>>>(g, n0, t, cu_f32(x), cols,
                                                                          g.P, t * g.P);
        if ((st = cu_launched(c, "im2col")) != NL_OK) break;
        k_gather_gy<<<cu_blocks(g.O * t * g.P), CU_THREADS, 0, c->stream>>>(g.O, g.P, n0, t,
                                                                           cu_f32(gy), gyt);
        if ((st = cu_launched(c, "gather_gy")) != NL_OK) break;
        c->launches++;
        st = cu_blas_check(c, cu_blas.sgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)g.ckk, (int)g.O,
                                          (int)(t * g.P), &one, cols, (int)(t * g.P), gyt,
                                          (int)(t * g.P), &one, cu_f32(gw), (int)g.ckk),
                           "cublasSgemm");
    }
    if (st == NL_OK && op->aux && g.O > 0) {
        k_bias_grad<<<(unsigned)g.O, ROW_THREADS, 0, c->stream>>>(g.N, g.O, g.P, cu_f32(gy),
                                                                  cu_f32(op->aux));
        st = cu_launched(c, "bias_grad");
    }
    cu_scratch_free(c, cols);
    return st;
}

/* ---------------------------------------------------------------- pooling -------------- */

typedef struct { int64_t planes, H, W, OH, OW, k, s, p; } pool_geom;

static pool_geom pool_geometry(const nl_op *op, const nl_tensor *in, const nl_tensor *out)
{
    return (pool_geom){in->shape[0] * in->shape[1], in->shape[2], in->shape[3], out->shape[2],
                       out->shape[3], op->i[1], op->i[2], op->i[3]};
}

/* One thread per output, the window's rows then columns in order, with the CPU's rules: a max
 * takes v when v > max or v is NaN (starting from -inf at the window's first in-image position);
 * an average sums in that order and divides by k*k, padding included. */
__global__ void k_pool(pool_geom g, const float *x, float *y, int32_t *idx, int avg)
{
    CU_FOR(i, g.planes * g.OH * g.OW)
    {
        const int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, pl = i / (g.OW * g.OH);
        const int64_t hs = oh * g.s - g.p, ws = ow * g.s - g.p;
        const int64_t h0 = hs < 0 ? 0 : hs, h1 = hs + g.k < g.H ? hs + g.k : g.H;
        const int64_t w0 = ws < 0 ? 0 : ws, w1 = ws + g.k < g.W ? ws + g.k : g.W;
        const float *xp = x + pl * g.H * g.W;
        float m = avg ? 0.0f : -INFINITY;
        int32_t at = (int32_t)(h0 * g.W + w0);
        for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) {
                const float v = xp[h * g.W + w];
                if (avg) {
                    m += v;
                } else if (v > m || v != v) {
                    m = v;
                    at = (int32_t)(h * g.W + w);
                }
            }
        y[i] = avg ? m / (float)(g.k * g.k) : m;
        if (idx) idx[i] = at;
    }
}

nl_status cu_pool2d_forward(cu_ctx *c, const nl_op *op)
{
    const pool_geom g = pool_geometry(op, op->src[0], op->dst);
    const int64_t n = g.planes * g.OH * g.OW;
    if (n == 0) return NL_OK;
    k_pool<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(
        g, cu_f32(op->src[0]), cu_f32(op->dst),
        op->aux ? (int32_t *)nl_tensor_data(op->aux) : NULL, op->i[0] == 1);
    return cu_launched(c, "pool2d");
}

/* The outputs [*lo, *hi) along one axis whose windows contain input position h. */
__device__ inline void pool_span(int64_t h, int64_t k, int64_t s, int64_t p, int64_t OH,
                                 int64_t *lo, int64_t *hi)
{
    const int64_t a = h + p - k + 1; /* oh * s >= a */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = (h + p) / s + 1;
    if (*hi > OH) *hi = OH;
}

/* A gather per input element (no atomics): max pooling adds gy of the outputs whose argmax it
 * is (and, with the pool's output given, whose maximum is > 0: a ReLU's backward), in output
 * order as the CPU does; average pooling adds gy / (k*k) of every window holding it, in the
 * CPU's order (output row, then column offset kw). */
__global__ void k_pool_bwd(pool_geom g, const float *gy, const int32_t *idx, const float *ymax,
                           float *gx, int avg)
{
    CU_FOR(i, g.planes * g.H * g.W)
    {
        const int64_t w = i % g.W, h = (i / g.W) % g.H, pl = i / (g.W * g.H);
        int64_t oh0, oh1, ow0, ow1;
        pool_span(h, g.k, g.s, g.p, g.OH, &oh0, &oh1);
        pool_span(w, g.k, g.s, g.p, g.OW, &ow0, &ow1);
        const int64_t base = pl * g.OH * g.OW, me = h * g.W + w;
        const float area = (float)(g.k * g.k);
        float s = 0;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            if (avg) {
                for (int64_t kw = 0; kw < g.k; kw++) {
                    const int64_t ww = w + g.p - kw;
                    if (ww < 0 || ww % g.s || ww / g.s >= g.OW) continue;
                    s += gy[base + oh * g.OW + ww / g.s] / area;
                }
                continue;
            }
            for (int64_t ow = ow0; ow < ow1; ow++) {
                const int64_t o = base + oh * g.OW + ow;
                if (idx[o] == me && (!ymax || ymax[o] > 0)) s += gy[o];
            }
        }
        gx[i] = s;
    }
}

nl_status cu_pool2d_backward(cu_ctx *c, const nl_op *op)
{
    const pool_geom g = pool_geometry(op, op->dst, op->src[0]);
    const int64_t n = g.planes * g.H * g.W;
    if (n == 0) return NL_OK;
    k_pool_bwd<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(
        g, cu_f32(op->src[0]), op->src[1] ? (const int32_t *)nl_tensor_data(op->src[1]) : NULL,
        op->src[2] ? cu_f32(op->src[2]) : NULL, cu_f32(op->dst), op->i[0] == 1);
    return cu_launched(c, "pool2d_backward");
}

/* ---------------------------------------------------------------- optimizers ----------- */

__global__ void k_sgd(int64_t n, nl_hd_sgd k, float *p, const float *g, float *buf)
{
    CU_FOR(i, n) nl_hd_sgd_update(&k, &p[i], g[i], buf ? &buf[i] : NULL);
}

__global__ void k_adam(int64_t n, nl_hd_adam k, float *p, const float *g, float *m, float *v)
{
    CU_FOR(i, n) nl_hd_adam_update(&k, &p[i], g[i], &m[i], &v[i]);
}

nl_status cu_sgd_step(cu_ctx *c, const nl_op *op)
{
    const int64_t n = nl_tensor_numel(op->dst);
    if (n == 0) return NL_OK;
    k_sgd<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, nl_hd_sgd_consts(op->f, op->i),
                                                      cu_f32(op->dst), cu_f32(op->src[0]),
                                                      op->src[1] ? cu_f32(op->src[1]) : NULL);
    return cu_launched(c, "sgd_step");
}

nl_status cu_adam_step(cu_ctx *c, const nl_op *op)
{
    const int64_t n = nl_tensor_numel(op->dst);
    if (n == 0) return NL_OK;
    k_adam<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(n, nl_hd_adam_consts(op->f, op->i),
                                                       cu_f32(op->dst), cu_f32(op->src[0]),
                                                       cu_f32(op->src[1]), cu_f32(op->src[2]));
    return cu_launched(c, "adam_step");
}

/* ---------------------------------------------------------------- fake quantization ---- */

__global__ void k_fakequant(int64_t n, int64_t cols, float *y, const float *x, const float *scales,
                            float s0, float inv0, float zp, float qmin, float qmax, const float *gy)
{
    CU_FOR(i, n)
    {
        const float s = scales ? scales[i / cols] : s0;
        y[i] = nl_hd_fakequant(x[i], s, scales ? 0.0f : inv0, scales != NULL, zp, qmin, qmax,
                               gy != NULL, gy ? gy[i] : 0.0f);
    }
}

nl_status cu_fakequant(cu_ctx *c, const nl_op *op)
{
    const nl_tensor *x = op->src[0], *scales = op->src[1], *gy = op->src[2];
    const int64_t n = nl_tensor_numel(x), rows = scales ? x->shape[0] : 1;
    if (n == 0 || rows == 0) return NL_OK;
    k_fakequant<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(
        n, n / rows, cu_f32(op->dst), cu_f32(x), scales ? cu_f32(scales) : NULL, (float)op->f[0],
        (float)(1.0 / op->f[0]), scales ? 0.0f : (float)op->f[1], (float)op->f[2], (float)op->f[3],
        gy ? cu_f32(gy) : NULL);
    return cu_launched(c, "fakequant");
}
