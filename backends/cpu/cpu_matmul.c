/* cpu_matmul.c: f32 matrix products on the CPU with OpenBLAS's cblas_sgemm. Row-major and
 * transposed views go to BLAS in place (with a transpose flag); other layouts are packed into a
 * contiguous buffer. A batch loops over sgemm, checking for Ctrl-C between items, and a product
 * too big to answer Ctrl-C quickly is split into pieces with a check between them. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>

/* One matrix operand (rows x cols per batch item) and how BLAS reads it. */
typedef struct {
    float *p;
    int64_t batch, rows, cols, sb, sr, sc; /* sizes and element strides */
    bool direct;                           /* BLAS reads it in place, as trans with ld */
    CBLAS_TRANSPOSE trans;
    int64_t ld;
    float *buf;                            /* else: a packed rows x cols copy */
} mm_mat;

/* Row-major with stride 1 along a row, or column-major (a transposed view), can be used in
 * place; a leading dimension beyond ld_max (a BLAS's int) cannot. */
cpu_gemm_layout cpu_gemm_layout_of(const nl_tensor *t, int64_t ld_max)
{
    const int nd = t->ndim;
    cpu_gemm_layout m = {
        .batch = nd == 3 ? t->shape[0] : 1, .sb = nd == 3 ? t->strides[0] : 0,
        .rows = t->shape[nd - 2], .cols = t->shape[nd - 1],
        .sr = t->strides[nd - 2], .sc = t->strides[nd - 1], .direct = true,
    };
    if ((m.sc == 1 || m.cols == 1) && (m.rows == 1 || m.sr >= m.cols)) {
        m.ld = m.rows == 1 ? m.cols : m.sr;
    } else if ((m.sr == 1 || m.rows == 1) && (m.cols == 1 || m.sc >= m.rows)) {
        m.trans = true;
        m.ld = m.cols == 1 ? m.rows : m.sc;
    } else {
        m.direct = false;
    }
    if (m.ld < 1) m.ld = 1;
    if (!m.direct || m.ld > ld_max) {
        m.direct = m.trans = false;
        m.ld = m.cols > 1 ? m.cols : 1;
    }
    return m;
}

static void mm_view(mm_mat *m, const nl_tensor *t)
{
    const cpu_gemm_layout l = cpu_gemm_layout_of(t, INT_MAX);
    *m = (mm_mat){.p = nl_tensor_f32(t), .batch = l.batch, .rows = l.rows, .cols = l.cols,
                  .sb = l.sb, .sr = l.sr, .sc = l.sc, .direct = l.direct,
                  .trans = l.trans ? CblasTrans : CblasNoTrans, .ld = l.ld};
}

/* Copies batch item b between the tensor and the packed buffer (either way). */
static void mm_transfer(const mm_mat *m, int64_t b, bool to_buf)
{
    const cpu_conv_fn copy = cpu_conv[NL_F32][CPU_F32];
    for (int64_t r = 0; r < m->rows; r++) {
        float *t = m->p + b * m->sb + r * m->sr, *packed = m->buf + r * m->cols;
        if (to_buf) copy(packed, 1, t, m->sc, m->cols);
        else copy(t, m->sc, packed, 1, m->cols);
    }
}

/* The matrix of batch item b as BLAS reads it (packing it first when needed). */
static float *mm_item(const mm_mat *m, int64_t b, bool load)
{
    if (m->direct) return m->p + b * m->sb;
    if (load && (b == 0 || m->sb != 0)) mm_transfer(m, b, true);
    return m->buf;
}

/* Work of one sgemm call, in multiply-adds, above which a product is split so that Ctrl-C is
 * answered between pieces: about 2 GFLOP per thread, a few tens of milliseconds. */
#define MM_PIECE_MADDS (1000000000.0 * (double)nl_get_threads())

/* c (m x n) = a (m x k) @ b (k x n), plus beta * c, through sgemm, or under precision bf16 through
 * the bf16 product (gemm_bf16.c); pointers are the items'. */
static nl_status mm_gemm(const mm_mat *a, const mm_mat *b, const mm_mat *c, const float *pa,
                         const float *pb, float *pc, int64_t m, int64_t n, int64_t k, float beta)
{
    if (nl_get_precision() == NL_PREC_BF16)
        return cpu_gemm_bf16(a->trans == CblasTrans, b->trans == CblasTrans, m, n, k, pa, a->ld, pb,
                             b->ld, beta != 0, pc, c->ld, NULL, nl_get_threads());
    cblas_sgemm(CblasRowMajor, a->trans, b->trans, (int)m, (int)n, (int)k, 1.0f, pa, (int)a->ld,
                pb, (int)b->ld, beta, pc, (int)c->ld);
    return NL_OK;
}

/* One batch item of a fresh product (beta 0) too big for one call: split along k into slices
 * of whole multiples of 256 (OpenBLAS walks k in blocks and updates c after each, so this costs
 * no extra packing or traffic), and, when a slice is still too big, along m into row blocks of
 * at least 256 rows (each packs its b slice again: under 1/512 of its work). Ctrl-C is checked
 * between pieces; an interrupted product leaves c partly written (it is a fresh output). */
static nl_status mm_pieces(const mm_mat *a, const mm_mat *b, const mm_mat *c, const float *pa,
                           const float *pb, float *pc, int64_t m, int64_t n, int64_t k)
{
    double mn = (double)m * (double)n;
    int64_t kb = (int64_t)(MM_PIECE_MADDS / mn) / 256 * 256;
    if (kb < 256) kb = 256;
    if (kb > k) kb = k;
    int64_t mb = (int64_t)(MM_PIECE_MADDS / ((double)n * (double)kb));
    if (mb < 256) mb = 256;
    if (mb > m) mb = m;
    nl_status st = NL_OK;
    for (int64_t k0 = 0; k0 < k && st == NL_OK; k0 += kb) {
        int64_t kn = k - k0 < kb ? k - k0 : kb;
        /* the k0 offset: a column of a (a row when a is transposed), a row of b (or column) */
        const float *ak = pa + (a->trans == CblasNoTrans ? k0 : k0 * a->ld);
        const float *bk = pb + (b->trans == CblasNoTrans ? k0 * b->ld : k0);
        for (int64_t m0 = 0; m0 < m; m0 += mb) {
            if ((k0 > 0 || m0 > 0) && (st = nl_check_interrupt()) != NL_OK) break;
            int64_t mn0 = m - m0 < mb ? m - m0 : mb;
            const float *am = ak + (a->trans == CblasNoTrans ? m0 * a->ld : m0);
            st = mm_gemm(a, b, c, am, bk, pc + m0 * c->ld, mn0, n, kn, k0 > 0 ? 1.0f : 0.0f);
        }
    }
    return st;
}

nl_status cpu_matmul(const nl_op *op)
{
    mm_mat a, b, c;
    mm_view(&a, op->src[0]);
    mm_view(&b, op->src[1]);
    mm_view(&c, op->dst);
    if (nl_get_precision() == NL_PREC_BF16) cpu_note_kernel("matmul bf16", cpu_bf16_path_name(cpu_bf16_path_of()));
    else cpu_note_kernel("sgemm", nl_cpu_blas_core());
    const bool accumulate = op->i[0] != 0;
    if (c.trans != CblasNoTrans) { /* the product must come out row-major */
        c.direct = false;
        c.trans = CblasNoTrans;
        c.ld = c.cols > 1 ? c.cols : 1;
    }
    int64_t batch = c.batch, m = c.rows, n = c.cols, k = a.cols;
    if (batch == 0 || m == 0 || n == 0) return NL_OK;
    /* (B,M,K)x(K,N) with both sides row-major stacks into one (B*M,K)x(K,N) product. */
    if (batch > 1 && b.sb == 0 && a.direct && c.direct && a.trans == CblasNoTrans &&
        a.sb == m * a.ld && c.sb == m * c.ld) {
        m *= batch;
        batch = 1;
    }
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
        return nl_seterr(NL_EINVAL, "matmul: a dimension exceeds BLAS's %d limit", INT_MAX);
    nl_status st = NL_OK;
    mm_mat *mats[3] = {&a, &b, &c};
    for (int i = 0; i < 3 && st == NL_OK; i++) {
        if (mats[i]->direct) continue;
        /* (+1: never malloc(0), whose NULL would read as a failure) */
        mats[i]->buf = malloc((size_t)(mats[i]->rows * mats[i]->cols) * sizeof(float) + 1);
        if (!mats[i]->buf) st = nl_seterr(NL_ENOMEM, "matmul: out of memory for a packed operand");
    }
    for (int64_t bi = 0; bi < batch && st == NL_OK; bi++) {
        if (bi > 0 && (st = nl_check_interrupt()) != NL_OK) break;
        const float *pa = mm_item(&a, bi, true), *pb = mm_item(&b, bi, true);
        float *pc = mm_item(&c, bi, accumulate);
        if (!accumulate && (double)m * (double)n * (double)k > MM_PIECE_MADDS)
            st = mm_pieces(&a, &b, &c, pa, pb, pc, m, n, k);
        else
            st = mm_gemm(&a, &b, &c, pa, pb, pc, m, n, k, accumulate ? 1.0f : 0.0f);
        if (st == NL_OK && !c.direct) mm_transfer(&c, bi, false);
    }
    free(a.buf);
    free(b.buf);
    free(c.buf);
    return st;
}
