/* gemm_bf16.c: the matrix product behind precision "bf16" (mixed precision): C = A B, or C += A B,
 * with A and B rounded to bf16 and the sums kept in fp32. Both operands are packed as pairs of bf16
 * along k, the layout of AVX512_BF16's vdpbf16ps; each output is one fp32 sum in a fixed order:
 * from 0 (or C), for each pair of k the odd product and then the even one, each added with one
 * rounding to nearest even and a result below FLT_MIN flushed to zero, which is how the instruction
 * defines its arithmetic. Three kernels compute that same sum and so give the same bits: native
 * (vdpbf16ps, where the CPU has AVX512_BF16), emulated (AVX2 FMA with the MXCSR flushing
 * subnormals) and the plain-C reference. A tile of 8 rows x 32 columns is summed over all of k by
 * one thread, so the result does not depend on the thread count or on how C is tiled. */
#include "cpu/cpu.h"
#include "cpu_kernels.h"

#include <float.h>
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { BF_MR = 8, BF_NR = 32 }; /* a tile: rows of A, columns of B */

static const char *const path_names[CPU_BF16_PATH_COUNT] = {
    [CPU_BF16_REFERENCE] = "emulated generic",
    [CPU_BF16_EMULATED] = "emulated avx2",
    [CPU_BF16_NATIVE] = "native avx512_bf16",
};

cpu_bf16_path cpu_bf16_path_of(void)
{
    if (cpu_isa() >= CPU_ISA_AVX512 && __builtin_cpu_supports("avx512bf16")) return CPU_BF16_NATIVE;
    return cpu_isa() >= CPU_ISA_AVX2 ? CPU_BF16_EMULATED : CPU_BF16_REFERENCE;
}

const char *cpu_bf16_path_name(cpu_bf16_path p) { return path_names[p]; }

const char *nl_cpu_bf16_how(void) { return path_names[cpu_bf16_path_of()]; }

/* The pair (even, odd) as vdpbf16ps reads it: the even element in the low half. */
static inline uint32_t bf16_pair(float even, float odd)
{
    return cpu_bf16_round(even) | (uint32_t)cpu_bf16_round(odd) << 16;
}

static inline float bf16_lo(uint32_t p) { return cpu_bf16_to_f32((uint16_t)p); }
static inline float bf16_hi(uint32_t p) { return cpu_bf16_to_f32((uint16_t)(p >> 16)); }

/* x, or a zero of its sign when it is below FLT_MIN (the instruction's flush of subnormals). */
static inline float flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

/* One operand of the product as it is read: element (r, k) of a rows x K matrix at
 * p[r*ld + k], or p[k*ld + r] when transposed. */
typedef struct {
    const float *p;
    int64_t ld;
    bool trans;
} bf_operand;

/* Packs rows [0, rows) of o (rows x K) in panels of w rows: panel q, pair kp, row j at
 * dst[(q*KP + kp)*w + j] holds (o(qw+j, 2kp), o(qw+j, 2kp+1)), zeros past the edges. */
static void pack(const bf_operand *o, int64_t rows, int64_t K, int w, uint32_t *dst, int threads NL_UNUSED)
{
    const int64_t KP = (K + 1) / 2, panels = (rows + w - 1) / w, ld = o->ld;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t q = 0; q < panels; q++) {
        const int64_t r0 = q * w, nr = rows - r0 < w ? rows - r0 : w, full = K / 2;
        uint32_t *d = dst + q * KP * w;
        if (nr < w || full < KP) memset(d, 0, (size_t)(KP * w) * sizeof *d);
        if (o->trans) { /* k's rows are contiguous along r: vectorised across the panel */
            for (int64_t kp = 0; kp < full; kp++) {
                const float *e = o->p + 2 * kp * ld + r0, *f = e + ld;
                for (int64_t j = 0; j < nr; j++) d[kp * w + j] = bf16_pair(e[j], f[j]);
            }
            if (full < KP)
                for (int64_t j = 0; j < nr; j++) d[full * w + j] = bf16_pair(o->p[(K - 1) * ld + r0 + j], 0);
        } else { /* a row is contiguous along k */
            for (int64_t j = 0; j < nr; j++) {
                const float *e = o->p + (r0 + j) * ld;
                for (int64_t kp = 0; kp < full; kp++) d[kp * w + j] = bf16_pair(e[2 * kp], e[2 * kp + 1]);
                if (full < KP) d[full * w + j] = bf16_pair(e[K - 1], 0);
            }
        }
    }
}

/* ---------------------------------------------------------------- kernels --------------- */

/* t [BF_MR][BF_NR] (the starting sums) += A's panel ap x B's panel bp over kps pairs. */
typedef void (*bf_kernel)(const uint32_t *ap, const uint32_t *bp, int64_t kps, float *t);

static void kernel_ref(const uint32_t *ap, const uint32_t *bp, int64_t kps, float *t)
{
    for (int r = 0; r < BF_MR; r++)
        for (int j = 0; j < BF_NR; j++) {
            float s = flush(t[r * BF_NR + j]);
            for (int64_t kp = 0; kp < kps; kp++) {
                const uint32_t a = ap[kp * BF_MR + r], b = bp[kp * BF_NR + j];
                s = flush(fmaf(bf16_hi(a), bf16_hi(b), s));
                s = flush(fmaf(bf16_lo(a), bf16_lo(b), s));
            }
            t[r * BF_NR + j] = s;
        }
}

/* Four rows by 16 columns (columns h*16 ... of the tile): the odd products, then the even ones. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
emulated_quarter(const uint32_t *ap, const uint32_t *bp, int64_t kps, float *t, int r0, int h)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    __m256 acc[4][2];
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < 2; v++) acc[r][v] = _mm256_loadu_ps(t + (r0 + r) * BF_NR + h * 16 + v * 8);
    for (int64_t kp = 0; kp < kps; kp++) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(bp + kp * BF_NR + h * 16));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bp + kp * BF_NR + h * 16 + 8));
        const __m256 bo0 = _mm256_castsi256_ps(_mm256_and_si256(b0, hi)),
                     bo1 = _mm256_castsi256_ps(_mm256_and_si256(b1, hi)),
                     be0 = _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16)),
                     be1 = _mm256_castsi256_ps(_mm256_slli_epi32(b1, 16));
        for (int r = 0; r < 4; r++) {
            const uint32_t a = ap[kp * BF_MR + r0 + r];
            const __m256 ao = _mm256_set1_ps(bf16_hi(a)), ae = _mm256_set1_ps(bf16_lo(a));
            acc[r][0] = _mm256_fmadd_ps(ao, bo0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ao, bo1, acc[r][1]);
            acc[r][0] = _mm256_fmadd_ps(ae, be0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ae, be1, acc[r][1]);
        }
    }
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < 2; v++) _mm256_storeu_ps(t + (r0 + r) * BF_NR + h * 16 + v * 8, acc[r][v]);
}

/* Runs with the MXCSR's flush-to-zero and denormals-are-zero set (by the caller's thread). */
__attribute__((target("avx2,fma"))) static void kernel_emulated(const uint32_t *ap, const uint32_t *bp,
                                                               int64_t kps, float *t)
{
    for (int r0 = 0; r0 < BF_MR; r0 += 4)
        for (int h = 0; h < 2; h++) emulated_quarter(ap, bp, kps, t, r0, h);
}

__attribute__((target("avx512f,avx512bf16"))) static void kernel_native(const uint32_t *ap,
                                                                       const uint32_t *bp,
                                                                       int64_t kps, float *t)
{
    __m512 acc[BF_MR][2];
    for (int r = 0; r < BF_MR; r++)
        for (int v = 0; v < 2; v++) acc[r][v] = _mm512_loadu_ps(t + r * BF_NR + v * 16);
    for (int64_t kp = 0; kp < kps; kp++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + kp * BF_NR),
                       b1 = (__m512bh)_mm512_loadu_si512(bp + kp * BF_NR + 16);
        for (int r = 0; r < BF_MR; r++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[kp * BF_MR + r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
    for (int r = 0; r < BF_MR; r++)
        for (int v = 0; v < 2; v++) _mm512_storeu_ps(t + r * BF_NR + v * 16, acc[r][v]);
}

static const bf_kernel kernels[CPU_BF16_PATH_COUNT] = {
    [CPU_BF16_REFERENCE] = kernel_ref, [CPU_BF16_EMULATED] = kernel_emulated,
    [CPU_BF16_NATIVE] = kernel_native};

/* ---------------------------------------------------------------- the product ----------- */

enum { MXCSR_FTZ_DAZ = 0x8040 };

int64_t cpu_gemm_bf16_ws(int64_t M, int64_t N, int64_t K)
{
    const int64_t KP = (K + 1) / 2, MP = (M + BF_MR - 1) / BF_MR, NP = (N + BF_NR - 1) / BF_NR;
    return (MP * BF_MR + NP * BF_NR) * KP;
}

nl_status cpu_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *a,
                        int64_t lda, const float *b, int64_t ldb, bool accumulate, float *c,
                        int64_t ldc, uint32_t *ws, int threads)
{
    if (M == 0 || N == 0) return NL_OK;
    const cpu_bf16_path path = cpu_bf16_path_of();
    const bf_kernel kernel = kernels[path];
    const int64_t KP = (K + 1) / 2, MP = (M + BF_MR - 1) / BF_MR, NP = (N + BF_NR - 1) / BF_NR;
    uint32_t *own = NULL;
    if (!ws && !(ws = own = malloc((size_t)cpu_gemm_bf16_ws(M, N, K) * sizeof *ws + 1))) /* +1: never malloc(0) */
        return nl_seterr(NL_ENOMEM, "bf16 matmul: out of memory for the packed operands");
    uint32_t *ap = ws, *bp = ws + MP * BF_MR * KP;
    const bf_operand A = {a, lda, ta}, B = {b, ldb, !tb}; /* B packed by its columns: B^T's rows */
    pack(&A, M, K, BF_MR, ap, threads);
    pack(&B, N, K, BF_NR, bp, threads);
    const int64_t tiles = MP * NP;
    if (threads > tiles) threads = (int)tiles;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const unsigned csr = _mm_getcsr();
        if (path == CPU_BF16_EMULATED) _mm_setcsr(csr | MXCSR_FTZ_DAZ);
        float t[BF_MR * BF_NR];
#pragma omp for schedule(static)
        for (int64_t i = 0; i < tiles; i++) {
            const int64_t q = i / MP, p = i % MP; /* a column panel of B, then A's row panels */
            const int64_t r0 = p * BF_MR, j0 = q * BF_NR;
            const int64_t mr = M - r0 < BF_MR ? M - r0 : BF_MR, nr = N - j0 < BF_NR ? N - j0 : BF_NR;
            memset(t, 0, sizeof t);
            if (accumulate)
                for (int64_t r = 0; r < mr; r++) memcpy(t + r * BF_NR, c + (r0 + r) * ldc + j0, (size_t)nr * sizeof *t);
            kernel(ap + p * KP * BF_MR, bp + q * KP * BF_NR, KP, t);
            for (int64_t r = 0; r < mr; r++) memcpy(c + (r0 + r) * ldc + j0, t + r * BF_NR, (size_t)nr * sizeof *t);
        }
        _mm_setcsr(csr);
    }
    free(own);
    return NL_OK;
}
