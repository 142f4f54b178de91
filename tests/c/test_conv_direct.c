/* test_conv_direct.c: the direct convolution kernels (backends/cpu/conv_direct.c) against their
 * plain-C reference bit for bit on odd shapes (channel counts that are not multiples of a tile, rows
 * that are not multiples of a vector, kernels of 1 to 5, padding 0 to 3); then Conv2d's forward,
 * data and filter gradients on every instruction set this CPU has against the generic path
 * (im2col + sgemm), and each of them with 1 and 2 threads giving identical bits; and the ISA
 * switch's errors. */
#include "cpu/cpu.h"
#include "cpu/cpu_kernels.h"
#include "nethelp.h"

#include <stdlib.h>
#include <string.h>

static float *randoms(int64_t n, unsigned *seed)
{
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / RAND_MAX * 2 - 1;
    return p;
}

/* One geometry through pack + pad + the AVX2 kernels and the references: identical bits. */
static void kernels_case(int64_t N, int64_t C, int64_t O, int64_t H, int64_t W, int64_t K, int64_t p,
                         unsigned seed)
{
    const int64_t Hp = H + 2 * p, Wp = W + 2 * p, OH = Hp - K + 1, OW = Wp - K + 1;
    const int64_t blocks = (O + CPU_DR - 1) / CPU_DR, fblocks = (C + CPU_DR - 1) / CPU_DR;
    float *x = randoms(N * C * H * W, &seed), *w = randoms(O * C * K * K, &seed);
    float *bias = randoms(O, &seed), *gy = randoms(N * O * OH * OW, &seed);
    float *xp = calloc((size_t)(N * C * Hp * Wp), sizeof *xp);
    float *wp = malloc((size_t)(blocks * CPU_DR * C * K * K) * sizeof *wp);
    float *wf = malloc((size_t)(fblocks * CPU_DR * O * K * K) * sizeof *wf);
    float *y1 = malloc((size_t)(O * OH * OW) * sizeof *y1), *y2 = malloc((size_t)(O * OH * OW) * sizeof *y2);
    float *l1 = calloc((size_t)(O * C * K * K * 8), sizeof *l1), *l2 = calloc((size_t)(O * C * K * K * 8), sizeof *l2);
    for (int64_t n = 0; n < N; n++) cpu_conv_pad(x + n * C * H * W, C, H, W, p, xp + n * C * Hp * Wp);
    CHECK(xp[0] == (p ? 0 : x[0]) && xp[p * Wp + p] == x[0], "padding puts x[0] at (p, p)");
    cpu_conv_direct_pack(w, O, C, K, K, false, wp);
    const cpu_direct_geom g = {.C = C, .Hp = Hp, .Wp = Wp, .O = O, .KH = K, .KW = K, .OH = OH, .OW = OW};
    cpu_conv_direct_ref(&g, xp, wp, bias, y1);
    cpu_conv_direct_avx2(&g, xp, wp, bias, y2);
    CHECK(memcmp(y1, y2, (size_t)(O * OH * OW) * sizeof *y1) == 0,
          "forward C=%lld O=%lld %lldx%lld k=%lld p=%lld: AVX2 = reference bit for bit", (long long)C,
          (long long)O, (long long)H, (long long)W, (long long)K, (long long)p);
    /* the reference against a plain sum, so that both cannot be wrong together */
    const int64_t o = O - 1, oh = OH / 2, ow = OW - 1;
    double s = bias[o];
    for (int64_t c = 0; c < C; c++)
        for (int64_t kh = 0; kh < K; kh++)
            for (int64_t kw = 0; kw < K; kw++)
                s += (double)w[((o * C + c) * K + kh) * K + kw] * xp[(c * Hp + oh + kh) * Wp + ow + kw];
    CHECK_CLOSE(y1[(o * OH + oh) * OW + ow], s, 1e-5, 1e-5);
    if (p <= K - 1) { /* the data gradient: gy padded by K-1-p through the flipped weights */
        const int64_t q = K - 1 - p, gHp = OH + 2 * q, gWp = OW + 2 * q;
        float *gp = calloc((size_t)(O * gHp * gWp), sizeof *gp), *gx1 = malloc((size_t)(C * H * W) * sizeof *gx1),
              *gx2 = malloc((size_t)(C * H * W) * sizeof *gx2);
        cpu_conv_pad(gy, O, OH, OW, q, gp);
        cpu_conv_direct_pack(w, O, C, K, K, true, wf);
        const cpu_direct_geom d = {.C = O, .Hp = gHp, .Wp = gWp, .O = C, .KH = K, .KW = K, .OH = H, .OW = W};
        cpu_conv_direct_ref(&d, gp, wf, NULL, gx1);
        cpu_conv_direct_avx2(&d, gp, wf, NULL, gx2);
        CHECK(memcmp(gx1, gx2, (size_t)(C * H * W) * sizeof *gx1) == 0, "data gradient: AVX2 = reference");
        double t = 0; /* dL/dx[c=0][h][w] at the middle, summed plainly */
        const int64_t h = H / 2, wc = W / 2;
        for (int64_t oo = 0; oo < O; oo++)
            for (int64_t kh = 0; kh < K; kh++)
                for (int64_t kw = 0; kw < K; kw++) {
                    const int64_t yh = h + p - kh, yw = wc + p - kw;
                    if (yh >= 0 && yh < OH && yw >= 0 && yw < OW)
                        t += (double)w[(oo * C * K + kh) * K + kw] * gy[(oo * OH + yh) * OW + yw];
                }
        CHECK_CLOSE(gx1[h * W + wc], t, 1e-5, 1e-5);
        free(gp);
        free(gx1);
        free(gx2);
    }
    cpu_conv_filter_ref(&g, N, xp, gy, 0, O, l1);
    cpu_conv_filter_avx2(&g, N, xp, gy, 0, O, l2);
    CHECK(memcmp(l1, l2, (size_t)(O * C * K * K * 8) * sizeof *l1) == 0, "filter lanes: AVX2 = reference");
    if (O > 1) { /* channels [1, O) alone: their lanes from the buffer's start, the same sums */
        memset(l2, 0, (size_t)(O * C * K * K * 8) * sizeof *l2);
        cpu_conv_filter_avx2(&g, N, xp, gy, 1, O, l2);
        CHECK(memcmp(l1 + C * K * K * 8, l2, (size_t)((O - 1) * C * K * K * 8) * sizeof *l1) == 0,
              "filter lanes of channels 1.. alone = those of all channels");
    }
    double f = 0; /* dL/dw[O-1][C-1][K-1][0] summed plainly */
    for (int64_t n = 0; n < N; n++)
        for (int64_t yh = 0; yh < OH; yh++)
            for (int64_t yw = 0; yw < OW; yw++)
                f += (double)gy[((n * O + O - 1) * OH + yh) * OW + yw] *
                     xp[((n * C + C - 1) * Hp + yh + K - 1) * Wp + yw];
    CHECK_CLOSE(cpu_lanes_sum(l1 + (((O - 1) * C + C - 1) * K * K + (K - 1) * K) * 8), f, 1e-4, 1e-4);
    free(x), free(w), free(bias), free(gy), free(xp), free(wp), free(wf), free(y1), free(y2), free(l1), free(l2);
}

/* Conv2d forward and backward on the current ISA and thread count: y, dL/dx, dL/dw, dL/db. */
typedef struct {
    float *y, *gx, *gw, *gb;
    int64_t ny, nx, nw, nb;
} conv_result;

static float *copy_out(const nl_tensor *t, int64_t *n)
{
    *n = nl_tensor_numel(t);
    float *p = malloc((size_t)(*n ? *n : 1) * sizeof *p);
    if (*n) memcpy(p, nl_tensor_f32((nl_tensor *)t), (size_t)*n * sizeof *p);
    return p;
}

static conv_result run_conv(nl_module *m, nl_tensor *x, unsigned seed)
{
    conv_result r = {0};
    nl_tensor *y = NULL, *gx = NULL;
    nl_module_zero_grad(m);
    if (nl_module_forward(m, x, &y) != NL_OK) {
        CHECK(0, "forward: %s", nl_errmsg());
        return r;
    }
    nl_tensor *gy = nl_tensor_empty_like(y);
    float *g = nl_tensor_f32(gy);
    for (int64_t i = 0; i < nl_tensor_numel(gy); i++) g[i] = (float)rand_r(&seed) / RAND_MAX - 0.5f;
    CHECK(nl_module_backward(m, gy, &gx) == NL_OK, "backward: %s", nl_errmsg());
    r.y = copy_out(y, &r.ny);
    r.gx = gx ? copy_out(gx, &r.nx) : NULL;
    r.gw = copy_out(nl_module_param(m, "weight")->grad, &r.nw);
    r.gb = copy_out(nl_module_param(m, "bias")->grad, &r.nb);
    nl_tensor_release(y);
    nl_tensor_release(gx);
    nl_tensor_release(gy);
    return r;
}

static void free_result(conv_result *r) { free(r->y), free(r->gx), free(r->gw), free(r->gb); }

static bool same_bits(const conv_result *a, const conv_result *b)
{
    return a->y && b->y && a->gx && b->gx && memcmp(a->y, b->y, (size_t)a->ny * 4) == 0 &&
           memcmp(a->gx, b->gx, (size_t)a->nx * 4) == 0 && memcmp(a->gw, b->gw, (size_t)a->nw * 4) == 0 &&
           memcmp(a->gb, b->gb, (size_t)a->nb * 4) == 0;
}

/* Largest |a-b| / (1 + |b|) over n values. */
static double max_rel(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]) / (1 + fabs((double)b[i]));
        m = d > m ? d : m;
    }
    return m;
}

static void module_case(int64_t N, int64_t C, int64_t O, int64_t H, int64_t W, int64_t K, int64_t p,
                        int64_t s)
{
    nl_module *m = net_make("Conv2d", "in", (double)C, "out", (double)O, "k", (double)K, "padding",
                            (double)p, "stride", (double)s, NULL);
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, (int64_t[]){N, C, H, W}, NL_CPU);
    if (!m || !x) return;
    nl_rand_uniform(x, -1, 1);
    CHECK(nl_cpu_set_isa("generic") == NL_OK, "generic is always there");
    nl_set_threads(1);
    conv_result ref = run_conv(m, x, 7);
    const char *isas[] = {"generic", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        if (nl_cpu_set_isa(isas[i]) != NL_OK) {
            static bool told[3];
            if (!told[i]) SKIP("the %s path: not on this CPU (%s)", isas[i], nl_errmsg());
            told[i] = true;
            continue;
        }
        conv_result r[2];
        for (int t = 0; t < 2; t++) {
            nl_set_threads(t + 1);
            r[t] = run_conv(m, x, 7);
        }
        CHECK(same_bits(&r[0], &r[1]), "%s, C=%lld O=%lld %lldx%lld k=%lld p=%lld s=%lld: 1 and 2 threads give the same bits",
              isas[i], (long long)C, (long long)O, (long long)H, (long long)W, (long long)K, (long long)p, (long long)s);
        if (r[0].y && ref.y && r[0].gx && ref.gx) {
            CHECK(max_rel(r[0].y, ref.y, ref.ny) < 1e-5, "%s forward = generic", isas[i]);
            CHECK(max_rel(r[0].gx, ref.gx, ref.nx) < 1e-5, "%s data gradient = generic", isas[i]);
            CHECK(max_rel(r[0].gw, ref.gw, ref.nw) < 1e-4, "%s filter gradient = generic", isas[i]);
            CHECK(max_rel(r[0].gb, ref.gb, ref.nb) < 1e-5, "%s bias gradient = generic", isas[i]);
        }
        free_result(&r[0]);
        free_result(&r[1]);
    }
    free_result(&ref);
    nl_cpu_set_isa(NULL);
    nl_set_threads(2);
    nl_tensor_release(x);
    nl_module_release(m);
}

int main(void)
{
    nl_init();
    nl_rng_seed(3);
    if (nl_cpu_set_isa("avx2") == NL_OK) {
        /* N, C, O, H, W, K, p: tiles cut by O % 6, O % 3, W % 8 and W < 8 */
        const int64_t cases[][7] = {{2, 3, 32, 32, 32, 3, 1}, {3, 5, 7, 9, 13, 3, 1},  {1, 1, 1, 1, 1, 1, 0},
                                    {2, 4, 13, 7, 5, 1, 0},   {2, 2, 5, 6, 19, 5, 2},  {1, 3, 11, 8, 8, 2, 0},
                                    {9, 2, 4, 5, 17, 3, 0},   {1, 6, 6, 4, 3, 3, 3},   {2, 7, 8, 10, 24, 4, 3},
                                    {1, 32, 64, 16, 16, 3, 1}};
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const int64_t *c = cases[i];
            kernels_case(c[0], c[1], c[2], c[3], c[4], c[5], c[6], 11u + (unsigned)i);
        }
    } else
        SKIP("the AVX2 kernels' checks: %s", nl_errmsg());
    nl_cpu_set_isa(NULL);
    /* N, C, O, H, W, K, p, stride (stride 2 and p > K-1 keep to im2col on every ISA; N = 0: an
     * empty batch) */
    const int64_t mods[][8] = {{3, 3, 8, 12, 12, 3, 1, 1}, {5, 4, 7, 9, 11, 3, 0, 1}, {2, 7, 13, 6, 21, 5, 2, 1},
                               {4, 2, 5, 9, 9, 1, 0, 1},   {3, 3, 6, 8, 8, 2, 2, 1},  {2, 3, 4, 9, 9, 3, 1, 2},
                               {6, 12, 9, 5, 7, 3, 1, 1},  {0, 3, 4, 6, 6, 3, 1, 1}};
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        const int64_t *c = mods[i];
        module_case(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    }
    /* the switch itself */
    CHECK(nl_cpu_set_isa("sse9") == NL_EINVAL && strstr(nl_errmsg(), "sse9"), "an unknown ISA is named: %s", nl_errmsg());
    nl_status st = nl_cpu_set_isa("avx512");
    CHECK(st == NL_OK || (st == NL_EUNSUPPORTED && strstr(nl_errmsg(), "avx512")),
          "avx512 is taken or refused with its name: %s", nl_errmsg());
    CHECK(nl_cpu_set_isa("generic") == NL_OK && strcmp(nl_cpu_isa(), "generic") == 0, "generic in use");
    CHECK(nl_cpu_set_isa("auto") == NL_OK, "auto");
    if (!getenv("NNLAB_ISA"))
        CHECK((strcmp(nl_cpu_isa(), "generic") != 0) == (bool)__builtin_cpu_supports("avx2"),
              "auto takes what the CPU has: %s", nl_cpu_isa());
    nl_cpu_set_isa(NULL);
    return TEST_REPORT();
}
