/* test_bf16.c: bf16 mixed precision (backends/cpu/gemm_bf16.c): the rounding to bf16 (nearest
 * even, ties, subnormals, infinities, NaN); the product on odd shapes, transposed operands, leading
 * dimensions and accumulation, each kernel this CPU has (emulated AVX2, native AVX512_BF16) against
 * the plain-C reference bit for bit, the reference against a double-precision sum of the rounded
 * inputs, and 1 against 2 threads; then Conv2d and Linear forward and backward under
 * NL_PREC_BF16: near fp32, and the same bits on each ISA and thread count. */
#include "cpu/cpu.h"
#include "cpu/cpu_kernels.h"
#include "nethelp.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void rounding(void)
{
    CHECK(cpu_bf16_round(1.0f) == 0x3f80, "1 is exact");
    CHECK(cpu_bf16_round(bits_f(0x3f808000u)) == 0x3f80, "a tie goes to the even neighbour (down)");
    CHECK(cpu_bf16_round(bits_f(0x3f818000u)) == 0x3f82, "a tie goes to the even neighbour (up)");
    CHECK(cpu_bf16_round(bits_f(0x3f808001u)) == 0x3f81, "above a tie rounds up");
    CHECK(cpu_bf16_round(bits_f(0x3f807fffu)) == 0x3f80, "below a tie rounds down");
    CHECK(cpu_bf16_round(bits_f(0x7f7fffffu)) == 0x7f80, "FLT_MAX rounds to infinity");
    CHECK(cpu_bf16_round(-INFINITY) == 0xff80, "-inf stays");
    CHECK(cpu_bf16_round(bits_f(0x00400000u)) == 0x0000, "a subnormal becomes zero");
    CHECK(cpu_bf16_round(bits_f(0x80000001u)) == 0x8000, "a negative subnormal becomes -0");
    CHECK(cpu_bf16_round(FLT_MIN) == 0x0080, "FLT_MIN is kept");
    const uint16_t nan = cpu_bf16_round(bits_f(0x7f800001u));
    CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x40), "a signalling NaN becomes a quiet NaN: %04x", nan);
    CHECK(cpu_bf16_to_f32(cpu_bf16_round(-3.140625f)) == -3.140625f, "-3.140625 round trips");
}

static float *randoms(int64_t n, unsigned *seed)
{
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / RAND_MAX * 2 - 1;
    return p;
}

static const char *const isas[] = {"generic", "avx2", "avx512"};

/* c = a b (+ c0) on ISA isa with `threads` threads; c holds c0 on entry. NL_OK or the set error. */
static nl_status product(const char *isa, int threads, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                         const float *a, int64_t lda, const float *b, int64_t ldb, bool acc, float *c,
                         int64_t ldc)
{
    nl_status st = nl_cpu_set_isa(isa);
    if (st == NL_OK) st = cpu_gemm_bf16(ta, tb, M, N, K, a, lda, b, ldb, acc, c, ldc, NULL, threads);
    nl_cpu_set_isa(NULL);
    return st;
}

static void gemm_case(int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool acc, unsigned seed)
{
    const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    float *a = randoms((ta ? K : M) * lda, &seed), *b = randoms((tb ? N : K) * ldb, &seed);
    float *c0 = randoms(M * ldc, &seed);
    const size_t bytes = (size_t)(M * ldc) * sizeof(float);
    float *ref = malloc(bytes + 1), *c = malloc(bytes + 1);
    memcpy(ref, c0, bytes);
    CHECK(product("generic", 1, ta, tb, M, N, K, a, lda, b, ldb, acc, ref, ldc) == NL_OK, "reference");
    /* the reference against a double sum of the rounded inputs (to fp32 rounding of K terms) */
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = acc ? c0[i * ldc + j] : 0, mag = fabs(s);
            for (int64_t k = 0; k < K; k++) {
                const double p = (double)cpu_bf16_to_f32(cpu_bf16_round(ta ? a[k * lda + i] : a[i * lda + k])) *
                                 cpu_bf16_to_f32(cpu_bf16_round(tb ? b[j * ldb + k] : b[k * ldb + j]));
                s += p;
                mag += fabs(p);
            }
            const double e = fabs(ref[i * ldc + j] - s) / (mag + 1e-30);
            worst = e > worst ? e : worst;
        }
    CHECK(worst <= (double)(K + 2) * FLT_EPSILON, "M=%lld N=%lld K=%lld: reference = exact sum of bf16 inputs (%.2e)",
          (long long)M, (long long)N, (long long)K, worst);
    CHECK(memcmp(ref + (M - 1) * ldc + N, c0 + (M - 1) * ldc + N, (size_t)(ldc - N) * sizeof(float)) == 0,
          "the columns past N are left alone");
    for (int i = 0; i < 3; i++)
        for (int t = 1; t <= 2; t++) {
            memcpy(c, c0, bytes);
            if (product(isas[i], t, ta, tb, M, N, K, a, lda, b, ldb, acc, c, ldc) != NL_OK) {
                static bool told[3];
                if (!told[i]) SKIP("the bf16 product on %s: not on this CPU (%s)", isas[i], nl_errmsg());
                told[i] = true;
                break;
            }
            nl_cpu_set_isa(isas[i]);
            const char *how = cpu_bf16_path_name(cpu_bf16_path_of());
            nl_cpu_set_isa(NULL);
            CHECK(memcmp(c, ref, bytes) == 0,
                  "%s (%s), %d thread(s), M=%lld N=%lld K=%lld ta=%d tb=%d acc=%d: the reference's bits", isas[i],
                  how, t, (long long)M, (long long)N, (long long)K, ta, tb, acc);
        }
    free(a), free(b), free(c0), free(ref), free(c);
}

/* The native kernel exists only where the CPU has AVX512_BF16: say so when it cannot run here. */
static void native_note(void)
{
    if (nl_cpu_set_isa("avx512") != NL_OK || cpu_bf16_path_of() != CPU_BF16_NATIVE)
        SKIP("the native AVX512_BF16 kernel (vdpbf16ps) against the reference: no AVX512_BF16 here "
             "(the emulated path was tested)");
    nl_cpu_set_isa(NULL);
}

/* A module's output and parameter gradients after forward + backward of gy = 1..: one array. */
static float *run_module(nl_module *m, nl_tensor *x, int64_t *n)
{
    nl_tensor *y = NULL, *gx = NULL;
    nl_module_zero_grad(m);
    if (nl_module_forward(m, x, &y) != NL_OK) {
        CHECK(0, "forward: %s", nl_errmsg());
        return NULL;
    }
    nl_tensor *gy = nl_tensor_empty_like(y);
    float *g = nl_tensor_f32(gy);
    for (int64_t i = 0; i < nl_tensor_numel(gy); i++) g[i] = (float)((i * 7919) % 13) / 13 - 0.5f;
    CHECK(nl_module_backward(m, gy, &gx) == NL_OK, "backward: %s", nl_errmsg());
    const nl_tensor *parts[4] = {y, gx, nl_module_param(m, "weight")->grad, nl_module_param(m, "bias")->grad};
    *n = 0;
    for (int i = 0; i < 4; i++) *n += nl_tensor_numel(parts[i]);
    float *out = malloc((size_t)*n * sizeof *out), *o = out;
    for (int i = 0; i < 4; i++) {
        memcpy(o, nl_tensor_f32((nl_tensor *)parts[i]), (size_t)nl_tensor_numel(parts[i]) * sizeof *o);
        o += nl_tensor_numel(parts[i]);
    }
    nl_tensor_release(y);
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    return out;
}

static void module_case(nl_module *m, nl_tensor *x, const char *what)
{
    if (!m || !x) return;
    nl_rand_uniform(x, -1, 1);
    int64_t n = 0, n2 = 0;
    nl_set_threads(1);
    float *f32 = run_module(m, x, &n);
    nl_set_precision(NL_PREC_BF16);
    CHECK(nl_cpu_set_isa("generic") == NL_OK, "generic is always there");
    float *ref = run_module(m, x, &n);
    nl_cpu_set_isa(NULL);
    double worst = 0, scale = 0;
    for (int64_t i = 0; f32 && ref && i < n; i++) {
        worst = fmax(worst, fabs((double)ref[i] - f32[i]));
        scale = fmax(scale, fabs((double)f32[i]));
    }
    CHECK(worst > 0 && worst < 2e-2 * scale, "%s in bf16: near fp32 but not equal (%.2e of %.2e)", what, worst, scale);
    for (int i = 0; i < 3; i++) {
        if (nl_cpu_set_isa(isas[i]) != NL_OK) continue;
        for (int t = 1; t <= 2; t++) {
            nl_set_threads(t);
            float *r = run_module(m, x, &n2);
            CHECK(r && ref && n2 == n && memcmp(r, ref, (size_t)n * sizeof *r) == 0,
                  "%s in bf16 on %s, %d thread(s): the reference's bits", what, isas[i], t);
            free(r);
        }
    }
    nl_cpu_set_isa(NULL);
    nl_set_precision(NL_PREC_F32);
    nl_set_threads(2);
    free(f32);
    free(ref);
    nl_tensor_release(x);
    nl_module_release(m);
}

int main(void)
{
    nl_init();
    nl_rng_seed(4);
    rounding();
    /* M, N, K: tiles cut by M % 8, N % 32, odd K (a half pair), K = 1, and one tile exactly */
    const int64_t shapes[][3] = {{1, 1, 1}, {8, 32, 16}, {13, 37, 27}, {3, 70, 5}, {17, 9, 64}, {64, 33, 301}};
    unsigned seed = 1;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int v = 0; v < 4; v++)
            gemm_case(shapes[i][0], shapes[i][1], shapes[i][2], v & 1, v & 2, v == 3 || i == 2, seed++);
    native_note();
    module_case(net_make("Conv2d", "in", 3.0, "out", 10.0, "k", 3.0, "padding", 1.0, NULL),
                nl_tensor_empty(NL_F32, 4, (int64_t[]){3, 3, 9, 11}, NL_CPU), "Conv2d 3->10 k3 p1");
    module_case(net_make("Conv2d", "in", 5.0, "out", 7.0, "k", 2.0, "stride", 2.0, NULL),
                nl_tensor_empty(NL_F32, 4, (int64_t[]){5, 5, 8, 7}, NL_CPU), "Conv2d 5->7 k2 s2");
    module_case(net_make("Linear", "in", 37.0, "out", 11.0, NULL),
                nl_tensor_empty(NL_F32, 2, (int64_t[]){19, 37}, NL_CPU), "Linear 37->11");
    return TEST_REPORT();
}
