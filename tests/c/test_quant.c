/* test_quant.c: int8 and int4 quantization: weight and activation quantization arithmetic, the int8
 * convolution against a float reference, VNNI and portable kernels bit for bit, post-training
 * conversion of the seed CNN, reports, and checkpoints of quantized networks (and corrupt ones). */
#include "checkpoint.h"
#include "nethelp.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static nl_tensor *rand_tensor(int ndim, const int64_t *shape, double lo, double hi)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    nl_rand_uniform(t, lo, hi);
    return t;
}

/* The seed CNN: conv3-32 k3 p1 / ReLU / maxpool2 / conv32-64 k3 p1 / ReLU / maxpool2 / flatten /
 * linear 64*(s/4)^2 -> 10, on s x s pictures. */
static nl_module *seed_cnn(int64_t s)
{
    nl_module *kids[] = {
        net_make("Conv2d", "in", 3.0, "out", 32.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Conv2d", "in", 32.0, "out", 64.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Flatten", NULL),
        net_make("Linear", "in", (double)(64 * (s / 4) * (s / 4)), "out", 10.0, NULL),
    };
    return net_container("Sequential", kids, 8);
}

static void test_weights(void)
{
    float w[] = {1, -2, 0.5f, 0, 0, 0};
    nl_tensor *wt = nl_tensor_from_data(NL_F32, 2, (int64_t[]){2, 3}, w);
    nl_tensor *q = nl_tensor_empty(NL_I8, 2, (int64_t[]){2, 3}, NL_CPU);
    nl_tensor *s = nl_tensor_empty(NL_F32, 1, (int64_t[]){2}, NL_CPU);
    double sqnr;
    CHECK(nl_quant_weights_i8(wt, q, s, &sqnr) == NL_OK, "%s", nl_errmsg());
    const int8_t *qd = nl_tensor_data(q);
    CHECK_CLOSE(nl_tensor_f32(s)[0], 2.0 / 127, 1e-9, 1e-6);
    CHECK_CLOSE(nl_tensor_f32(s)[1], 1, 0, 0); /* an all-zero row */
    CHECK(qd[0] == 64 && qd[1] == -127 && qd[2] == 32 && qd[3] == 0, "q = %d %d %d %d", qd[0], qd[1],
          qd[2], qd[3]);
    /* error of row 0: 1 - 64*2/127 and 0.5 - 32*2/127 */
    const double e0 = 1 - 128.0 / 127, e2 = 0.5 - 64.0 / 127;
    CHECK_CLOSE(sqnr, 10 * log10(5.25 / (e0 * e0 + e2 * e2)), 1e-3, 0);
    CHECK(nl_quant_weights_i8(wt, s, s, NULL) == NL_EINVAL, "wrong dtypes refused");
    double scale, zp;
    nl_quant_affine(-1, 3, &scale, &zp);
    CHECK_CLOSE(scale, 4.0 / 255, 1e-7, 0);
    CHECK_CLOSE(zp, 64, 0, 0);
    nl_quant_affine(0.5, 2, &scale, &zp); /* widened to include 0 */
    CHECK_CLOSE(scale, 2.0 / 255, 1e-7, 0);
    CHECK_CLOSE(zp, 0, 0, 0);
    nl_tensor_release(wt);
    nl_tensor_release(q);
    nl_tensor_release(s);
}

/* A QConv2d with random weights, scales and bias on a random u8 input, f32 output, against the
 * same sums in double; then the u8 output against requantizing the reference (within 1 level).
 * The geometries cover window rows of a multiple of 4 bytes or not, with and without padding,
 * strides, and 1x1 windows (the VNNI path reads the image itself or a padded copy). */
static void qconv_reference(int64_t C, int64_t K, int64_t S, int64_t P)
{
    const int64_t N = 2, H = 7, W = 6, O = 19;
    const int64_t OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
    for (int f32 = 1; f32 >= 0; f32--) {
        nl_module *m = net_make("QConv2d", "in", (double)C, "out", (double)O, "k", (double)K,
                                "stride", (double)S, "padding", (double)P, "relu", 1.0, "f32",
                                (double)f32, NULL);
        if (!m) return;
        int8_t *w = nl_tensor_data(m->params[0].value);
        float *ws = nl_tensor_f32(m->params[1].value), *b = nl_tensor_f32(m->params[2].value),
              *qp = nl_tensor_f32(m->params[3].value);
        for (int64_t i = 0; i < O * C * K * K; i++) w[i] = (int8_t)((int)(nl_rng_u64() % 255) - 127);
        for (int64_t o = 0; o < O; o++) {
            ws[o] = 0.001f * (float)(1 + o);
            b[o] = 0.05f * (float)(o % 5) - 0.1f;
        }
        qp[0] = 0.02f, qp[1] = 37, qp[2] = 0.05f, qp[3] = 3;
        nl_tensor *x = nl_tensor_empty(NL_U8, 4, (int64_t[]){N, H, W, C}, NL_CPU);
        uint8_t *xd = nl_tensor_data(x);
        for (int64_t i = 0; i < N * H * W * C; i++) xd[i] = (uint8_t)(nl_rng_u64() % 256);
        /* twice: the second time with the weights negated in place after the first forward
         * (the kernel keeps packed weights from call to call: it must see the edit) */
        for (int edit = 0; edit < 2; edit++) {
            if (edit)
                for (int64_t i = 0; i < O * C * K * K; i++) w[i] = (int8_t)-w[i];
            nl_tensor *y = NULL;
            CHECK(nl_module_forward(m, x, &y) == NL_OK, "%s", nl_errmsg());
            int bad = 0;
            for (int64_t n = 0; y && n < N; n++)
                for (int64_t o = 0; o < O; o++)
                    for (int64_t oh = 0; oh < OH; oh++)
                        for (int64_t ow = 0; ow < OW; ow++) {
                            double acc = 0;
                            for (int64_t c = 0; c < C; c++)
                                for (int64_t kh = 0; kh < K; kh++)
                                    for (int64_t kw = 0; kw < K; kw++) {
                                        const int64_t ih = oh * S - P + kh, iw = ow * S - P + kw;
                                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                        acc += (xd[((n * H + ih) * W + iw) * C + c] - 37.0) *
                                               w[((o * C + c) * K + kh) * K + kw];
                                    }
                            double r = 0.02 * ws[o] * acc + b[o];
                            r = r > 0 ? r : 0;
                            if (f32) {
                                const double got = nl_tensor_f32(y)[((n * O + o) * OH + oh) * OW + ow];
                                bad += fabs(got - r) > 1e-5 + 1e-5 * fabs(r);
                            } else {
                                const double want = fmin(255, nearbyint(r / 0.05) + 3);
                                const double got = ((uint8_t *)nl_tensor_data(y))[((n * OH + oh) * OW + ow) * O + o];
                                bad += fabs(got - want) > 1;
                            }
                        }
            CHECK(bad == 0, "C=%lld k=%lld stride %lld padding %lld, %s output%s: %d values off the "
                  "float reference", (long long)C, (long long)K, (long long)S, (long long)P,
                  f32 ? "f32" : "u8", edit ? " after an in-place edit of the weights" : "", bad);
            nl_tensor_release(y);
        }
        nl_tensor_release(x);
        nl_module_release(m);
    }
}

static const char *const qisas[] = {"vnni", "avx2", "generic"};

static void test_qconv_reference(void)
{
    static const int64_t geo[][4] = {{5, 3, 2, 1}, {3, 3, 1, 1}, {6, 1, 1, 0}, {8, 1, 1, 0},
                                     {4, 5, 1, 2}, {7, 3, 1, 0}, {16, 3, 2, 0}};
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) {
        for (int isa = 0; isa < 3; isa++) {
            if (nl_quant_set_isa(qisas[isa]) != NL_OK) continue; /* not on this CPU */
            qconv_reference(geo[i][0], geo[i][1], geo[i][2], geo[i][3]);
        }
    }
    nl_quant_set_isa("auto");
}

/* A QConv2d with a fused pool gives the bytes (u8) or floats (f32) of the same QConv2d followed by
 * QMaxPool2d, on both kernels, with conv outputs of odd sizes (the pool drops the last row and
 * column) and pools of 2 and 3. */
static void test_qconv_pool(void)
{
    static const int64_t geo[][4] = {{5, 3, 1, 1}, {3, 3, 1, 0}, {8, 1, 1, 0}};
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++)
        for (int pool = 2; pool <= 3; pool++)
            for (int f32 = 0; f32 < 2; f32++)
                for (int isa = 0; isa < 3; isa++) {
                    if (nl_quant_set_isa(qisas[isa]) != NL_OK) continue;
                    const int64_t C = geo[gi][0], K = geo[gi][1], S = geo[gi][2], P = geo[gi][3];
                    nl_module *fused = net_make("QConv2d", "in", (double)C, "out", 21.0, "k", (double)K,
                                                "stride", (double)S, "padding", (double)P, "relu", 1.0,
                                                "f32", (double)f32, "pool", (double)pool, NULL);
                    nl_module *conv = net_make("QConv2d", "in", (double)C, "out", 21.0, "k", (double)K,
                                               "stride", (double)S, "padding", (double)P, "relu", 1.0,
                                               "f32", (double)f32, NULL);
                    nl_module *mp = net_make("QMaxPool2d", "k", (double)pool, NULL);
                    if (!fused || !conv || !mp) return;
                    for (int i = 0; i < 4; i++) {
                        nl_tensor *d = fused->params[i].value;
                        const size_t bytes = (size_t)nl_tensor_numel(d) * nl_dtype_info(d->dtype)->size;
                        if (i == 0)
                            for (size_t b = 0; b < bytes; b++)
                                ((int8_t *)nl_tensor_data(d))[b] = (int8_t)((int)(nl_rng_u64() % 255) - 127);
                        if (i == 1) /* some negative: the maximum output then comes from the smallest sum */
                            for (int64_t o = 0; o < 21; o++)
                                nl_tensor_f32(d)[o] = (o % 4 == 3 ? -0.002f : 0.002f) * (float)(1 + o % 7);
                        if (i == 2)
                            for (int64_t o = 0; o < 21; o++) nl_tensor_f32(d)[o] = 0.1f * (float)(o % 5) - 0.2f;
                        if (i == 3) {
                            float *qp = nl_tensor_f32(d);
                            qp[0] = 0.02f, qp[1] = 37, qp[2] = 0.05f, qp[3] = 3;
                        }
                        nl_copy(conv->params[i].value, d);
                    }
                    nl_tensor *x = nl_tensor_empty(NL_U8, 4, (int64_t[]){2, 9, 7, C}, NL_CPU);
                    for (int64_t i = 0; i < nl_tensor_numel(x); i++)
                        ((uint8_t *)nl_tensor_data(x))[i] = (uint8_t)(nl_rng_u64() % 256);
                    nl_tensor *yf = NULL, *yc = NULL, *yp = NULL;
                    CHECK(nl_module_forward(fused, x, &yf) == NL_OK, "fused: %s", nl_errmsg());
                    CHECK(nl_module_forward(conv, x, &yc) == NL_OK, "conv: %s", nl_errmsg());
                    if (yc && !f32)
                        CHECK(nl_module_forward(mp, yc, &yp) == NL_OK, "pool: %s", nl_errmsg());
                    if (yc && f32) { /* the float max pool of the NCHW conv output */
                        const int64_t N = yc->shape[0], O = yc->shape[1], H = yc->shape[2], W = yc->shape[3];
                        const int64_t PH = H / pool, PW = W / pool;
                        yp = nl_tensor_empty(NL_F32, 4, (int64_t[]){N, O, PH, PW}, NL_CPU);
                        for (int64_t no = 0; no < N * O; no++)
                            for (int64_t ph = 0; ph < PH; ph++)
                                for (int64_t pw = 0; pw < PW; pw++) {
                                    float m = -INFINITY;
                                    for (int64_t dy = 0; dy < pool; dy++)
                                        for (int64_t dx = 0; dx < pool; dx++)
                                            m = fmaxf(m, nl_tensor_f32(yc)[(no * H + ph * pool + dy) * W +
                                                                           pw * pool + dx]);
                                    nl_tensor_f32(yp)[(no * PH + ph) * PW + pw] = m;
                                }
                    }
                    if (yf && yp) {
                        const size_t bytes = (size_t)nl_tensor_numel(yp) * (f32 ? 4 : 1);
                        CHECK(nl_same_shape(yf, yp) && memcmp(nl_tensor_data(yf), nl_tensor_data(yp), bytes) == 0,
                              "C=%lld k=%lld padding %lld pool %d, %s output (%s): the fused pool differs "
                              "from QConv2d then max pooling", (long long)C, (long long)K, (long long)P,
                              pool, f32 ? "f32" : "u8", qisas[isa]);
                    }
                    nl_tensor_release(yf), nl_tensor_release(yc), nl_tensor_release(yp);
                    nl_tensor_release(x);
                    nl_module_release(fused), nl_module_release(conv), nl_module_release(mp);
                }
    nl_quant_set_isa("auto");
}

/* QMaxPool2d against the naive max over each window's in-image pixels, for windows side by side
 * (the vectorised path) and overlapping or padded ones. */
static void test_qpool_reference(void)
{
    static const int64_t geo[][3] = {{2, 2, 0}, {3, 3, 0}, {3, 2, 1}, {2, 1, 0}};
    const int64_t N = 2, H = 7, W = 9, C = 5;
    nl_tensor *x = nl_tensor_empty(NL_U8, 4, (int64_t[]){N, H, W, C}, NL_CPU);
    uint8_t *xd = nl_tensor_data(x);
    for (int64_t i = 0; i < N * H * W * C; i++) xd[i] = (uint8_t)(nl_rng_u64() % 256);
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        const int64_t k = geo[g][0], s = geo[g][1], p = geo[g][2];
        nl_module *m = net_make("QMaxPool2d", "k", (double)k, "stride", (double)s, "padding",
                                (double)p, NULL);
        nl_tensor *y = NULL;
        CHECK(m && nl_module_forward(m, x, &y) == NL_OK, "k=%lld: %s", (long long)k, nl_errmsg());
        const int64_t OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
        int bad = 0;
        for (int64_t n = 0; y && n < N; n++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++)
                    for (int64_t c = 0; c < C; c++) {
                        int want = 0;
                        for (int64_t ih = oh * s - p; ih < oh * s - p + k; ih++)
                            for (int64_t iw = ow * s - p; iw < ow * s - p + k; iw++)
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W &&
                                    xd[((n * H + ih) * W + iw) * C + c] > want)
                                    want = xd[((n * H + ih) * W + iw) * C + c];
                        bad += ((uint8_t *)nl_tensor_data(y))[((n * OH + oh) * OW + ow) * C + c] != want;
                    }
        CHECK(bad == 0, "k=%lld stride %lld padding %lld: %d maxima wrong", (long long)k,
              (long long)s, (long long)p, bad);
        nl_tensor_release(y);
        nl_module_release(m);
    }
    nl_tensor_release(x);
}

/* Every child's output of the quantized net (u8 and f32) with the VNNI (or AVX2) and the portable
 * kernels. */
static void test_isa_identical(nl_module *q, nl_tensor *x, const char *isa)
{
    if (nl_quant_set_isa(isa) != NL_OK) {
        SKIP("the %s int8 kernels against the portable ones: not on this CPU (%s)", isa, nl_errmsg());
        return;
    }
    nl_tensor *y1 = NULL, *y2 = NULL, *mid[16] = {0};
    CHECK(nl_module_forward(q, x, &y1) == NL_OK, "%s", nl_errmsg());
    for (int i = 0; i < q->nchildren && i < 16; i++) mid[i] = nl_tensor_clone(q->children[i]->output);
    CHECK(nl_quant_set_isa("generic") == NL_OK && strcmp(nl_quant_isa(), "generic") == 0, "generic");
    CHECK(nl_module_forward(q, x, &y2) == NL_OK, "%s", nl_errmsg());
    for (int i = 0; i < q->nchildren && i < 16; i++) {
        const nl_tensor *o = q->children[i]->output;
        const size_t bytes = (size_t)nl_tensor_numel(o) * nl_dtype_info(o->dtype)->size;
        CHECK(mid[i] && memcmp(nl_tensor_data(mid[i]), nl_tensor_data(o), bytes) == 0,
              "child %d (%s): %s and generic differ", i + 1, q->children[i]->type->name, isa);
        nl_tensor_release(mid[i]);
    }
    CHECK(nl_quant_set_isa("auto") == NL_OK, "auto");
    CHECK(nl_quant_set_isa("avx9") == NL_EINVAL, "unknown isa refused");
    nl_tensor_release(y1);
    nl_tensor_release(y2);
}

static void test_seed_cnn(void)
{
    nl_rng_seed(7);
    nl_module *net = seed_cnn(16);
    if (!net) return;
    nl_module_train(net, false);
    nl_tensor *cal[2] = {rand_tensor(4, (int64_t[]){8, 3, 16, 16}, -1, 1),
                         rand_tensor(4, (int64_t[]){8, 3, 16, 16}, -1, 1)};
    nl_tensor *x = rand_tensor(4, (int64_t[]){5, 3, 16, 16}, -1, 1);
    for (int method = 0; method < 2; method++) {
        nl_quant_opts o = {method ? NL_QCALIB_PERCENTILE : NL_QCALIB_MINMAX, 99.9};
        nl_module *q = nl_quant_int8(net, cal, 2, &o);
        CHECK(q != NULL, "int8: %s", nl_errmsg());
        if (!q) continue;
        /* Quantize, QConv2d(relu, pool 2), QConv2d(relu, pool 2), QLinear(f32) */
        static const char *const want[] = {"Quantize", "QConv2d", "QConv2d", "QLinear"};
        CHECK(q->nchildren == 4, "4 layers, got %d", q->nchildren);
        for (int i = 0; i < q->nchildren && i < 4; i++)
            CHECK(strcmp(q->children[i]->type->name, want[i]) == 0, "layer %d is %s", i + 1,
                  q->children[i]->type->name);
        CHECK(q->nchildren == 4 && q->children[1]->args[7] == 2 && q->children[2]->args[7] == 2,
              "Conv2d, ReLU, MaxPool2d(2) become one QConv2d with pool=2");
        nl_tensor *yf = NULL, *yq = NULL;
        CHECK(nl_module_forward(net, x, &yf) == NL_OK, "%s", nl_errmsg());
        CHECK(nl_module_forward(q, x, &yq) == NL_OK, "%s", nl_errmsg());
        if (yf && yq) {
            /* The stated tolerance: every logit within 5% of the largest float logit. */
            double maxf = 0, maxd = 0;
            for (int64_t i = 0; i < nl_tensor_numel(yf); i++) {
                maxf = fmax(maxf, fabs(nl_tensor_f32(yf)[i]));
                maxd = fmax(maxd, fabs(nl_tensor_f32(yf)[i] - nl_tensor_f32(yq)[i]));
            }
            CHECK(maxd <= 0.05 * maxf, "int8 logits off by %g (largest %g)", maxd, maxf);
        }
        if (method == 0) {
            test_isa_identical(q, x, "vnni");
            test_isa_identical(q, x, "avx2");
            nl_quant_row rows[8];
            const int n = nl_quant_report(q, rows, 8);
            CHECK(n == 4 && strcmp(rows[1].type, "QConv2d") == 0 && strcmp(rows[1].path, "2") == 0,
                  "report rows %d", n);
            CHECK(rows[1].wsqnr > 30 && rows[1].asqnr > 30 && rows[3].out_scale == 0,
                  "sqnr w %g a %g", rows[1].wsqnr, rows[1].asqnr);
            /* checkpoint round trip: same outputs, bit for bit */
            char path[] = "/tmp/nl_test_quantXXXXXX";
            int fd = mkstemp(path);
            if (fd >= 0) close(fd);
            CHECK(nl_checkpoint_save_module(path, q, NULL) == NL_OK, "%s", nl_errmsg());
            nl_module *back = nl_checkpoint_load_module(path);
            CHECK(back != NULL, "load: %s", nl_errmsg());
            nl_tensor *yb = NULL;
            if (back) nl_module_train(back, false);
            CHECK(back && nl_module_forward(back, x, &yb) == NL_OK, "%s", nl_errmsg());
            CHECK(yb && yq && memcmp(nl_tensor_data(yb), nl_tensor_data(yq), 50 * sizeof(float)) == 0,
                  "loaded int8 net gives other outputs");
            nl_tensor_release(yb);
            nl_module_release(back);
            unlink(path);
        }
        nl_tensor_release(yf);
        nl_tensor_release(yq);
        nl_module_release(q);
    }
    CHECK(nl_quant_int8(net, cal, 0, NULL) == NULL && nl_errcode() == NL_EINVAL, "no batches");
    nl_tensor_release(cal[0]);
    nl_tensor_release(cal[1]);
    nl_tensor_release(x);
    nl_module_release(net);
}

/* A lone Linear with known weights, calibrated on [-1, 3]: the report's values. */
static void test_report_known(void)
{
    nl_module *lin = net_make("Linear", "in", 2.0, "out", 2.0, NULL);
    if (!lin) return;
    memcpy(nl_tensor_f32(lin->params[0].value), (float[]){1, -2, 0.5f, 0.25f}, 4 * sizeof(float));
    nl_tensor *cal = nl_tensor_from_data(NL_F32, 2, (int64_t[]){2, 2}, (float[]){-1, 3, 0, 1});
    nl_module *q = nl_quant_int8(lin, &cal, 1, NULL);
    CHECK(q != NULL, "%s", nl_errmsg());
    nl_quant_row rows[4];
    const int n = q ? nl_quant_report(q, rows, 4) : 0;
    CHECK(n == 2, "2 rows, got %d", n);
    if (n == 2) {
        CHECK(strcmp(rows[0].type, "Quantize") == 0, "%s", rows[0].type);
        CHECK_CLOSE(rows[0].out_scale, 4.0 / 255, 1e-7, 0);
        CHECK_CLOSE(rows[1].wscale_min, 0.5 / 127, 1e-8, 1e-6);
        CHECK_CLOSE(rows[1].wscale_max, 2.0 / 127, 1e-8, 1e-6);
        CHECK_CLOSE(rows[1].in_scale, 4.0 / 255, 1e-7, 0);
        CHECK(rows[1].bits == 8 && isnan(rows[1].asqnr), "bits %d", rows[1].bits);
    }
    nl_tensor_release(cal);
    nl_module_release(q);
    nl_module_release(lin);
}

/* Files whose quantized tensors do not fit the architecture are refused. */
static void test_corrupt(void)
{
    nl_module *m = net_make("QConv2d", "in", 3.0, "out", 4.0, "k", 3.0, NULL);
    char *arch = m ? nl_checkpoint_arch_json(m) : NULL;
    if (!arch) return;
    char path[] = "/tmp/nl_test_qbadXXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    for (int bad = 0; bad < 3; bad++) {
        nl_st_writer *w = nl_st_writer_new();
        nl_st_writer_meta(w, NL_CKPT_ARCH, arch);
        nl_tensor *ts = nl_tensor_zeros(NL_F32, 1, (int64_t[]){bad == 0 ? 5 : 4}, NL_CPU);
        nl_tensor *wt = nl_tensor_zeros(bad == 1 ? NL_F32 : NL_I8, 4, (int64_t[]){4, 3, 3, 3}, NL_CPU);
        nl_tensor *qp = nl_tensor_zeros(NL_F32, 1, (int64_t[]){bad == 2 ? 4 : 6}, NL_CPU);
        nl_st_writer_add(w, "weight", wt);
        nl_st_writer_add(w, "weight_scale", ts);
        nl_st_writer_add(w, "bias", m->params[2].value);
        nl_st_writer_add(w, "qparams", qp);
        CHECK(nl_st_writer_commit(w, path) == NL_OK, "%s", nl_errmsg());
        nl_module *back = nl_checkpoint_load_module(path);
        CHECK(back == NULL && nl_errcode() == NL_EFORMAT, "corrupt file %d accepted", bad);
        nl_module_release(back);
        nl_tensor_release(ts);
        nl_tensor_release(wt);
        nl_tensor_release(qp);
        nl_st_writer_free(w);
    }
    /* a zero scale loads (shapes fit) but the layer refuses to run */
    nl_tensor *x = nl_tensor_zeros(NL_U8, 4, (int64_t[]){1, 4, 4, 3}, NL_CPU), *y = NULL;
    nl_tensor_f32(m->params[3].value)[0] = 0;
    CHECK(nl_module_forward(m, x, &y) == NL_EINVAL, "zero scale refused");
    nl_tensor *xf = nl_tensor_zeros(NL_F32, 4, (int64_t[]){1, 4, 4, 3}, NL_CPU);
    CHECK(nl_module_forward(m, xf, &y) == NL_ETYPE, "f32 input refused");
    nl_tensor_release(x);
    nl_tensor_release(xf);
    unlink(path);
    free(arch);
    nl_module_release(m);
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (f) fclose(f);
    return n;
}

/* int4: a known packing, dequantization within half a step of each group scale, the file size
 * against f32, a checkpoint round trip and a file with the wrong packed size. */
static void test_int4(void)
{
    nl_tensor *w = nl_tensor_from_data(NL_F32, 2, (int64_t[]){1, 3}, (float[]){0.7f, -0.8f, 0.1f});
    nl_tensor *p = nl_tensor_empty(NL_U8, 2, (int64_t[]){1, 2}, NL_CPU);
    nl_tensor *c = nl_tensor_empty(NL_U8, 2, (int64_t[]){1, 1}, NL_CPU);
    double base, sqnr;
    CHECK(nl_quant_weights_int4(w, 32, p, c, &base, &sqnr) == NL_OK, "%s", nl_errmsg());
    const uint8_t *pd = nl_tensor_data(p);
    CHECK(pd[0] == 0x1E && pd[1] == 0x09 && *(uint8_t *)nl_tensor_data(c) == 255,
          "packed %02x %02x code %d", pd[0], pd[1], *(uint8_t *)nl_tensor_data(c));
    CHECK_CLOSE(base * 255, 0.8 / 7, 1e-7, 0);
    CHECK(nl_quant_weights_int4(w, 32, c, p, &base, NULL) == NL_EINVAL, "wrong packed shape refused");
    nl_tensor_release(w), nl_tensor_release(p), nl_tensor_release(c);

    /* an Int4Linear on the identity gives its dequantized weights: within half a group step */
    nl_rng_seed(3);
    const int64_t K = 70, O = 3, G = 32;
    nl_module *lin = net_make("Linear", "in", (double)K, "out", (double)O, "bias", 0.0, NULL);
    nl_module *q4 = lin ? nl_quant_int4(lin, (int)G) : NULL;
    CHECK(q4 && q4->nchildren == 1 && strcmp(q4->children[0]->type->name, "Int4Linear") == 0, "int4");
    if (q4) {
        nl_module *l4 = q4->children[0];
        nl_tensor *eye = nl_tensor_zeros(NL_F32, 2, (int64_t[]){K, K}, NL_CPU), *y = NULL;
        for (int64_t i = 0; i < K; i++) nl_tensor_f32(eye)[i * K + i] = 1;
        CHECK(nl_module_forward(q4, eye, &y) == NL_OK, "%s", nl_errmsg());
        const float b4 = nl_tensor_f32(l4->params[2].value)[0];
        const uint8_t *codes = nl_tensor_data(l4->params[1].value);
        int bad = 0;
        for (int64_t o = 0; y && o < O; o++)
            for (int64_t k = 0; k < K; k++) {
                const double s = b4 * codes[o * 3 + k / G], v = nl_tensor_f32(lin->params[0].value)[o * K + k];
                bad += fabs(nl_tensor_f32(y)[k * O + o] - v) > s / 2 + 1e-6;
            }
        CHECK(bad == 0, "%d int4 weights off by more than half a step", bad);
        nl_tensor_release(y);
        nl_tensor_release(eye);
    }
    nl_module_release(q4);
    nl_module_release(lin);

    /* file sizes: int4 at most 1/7 of f32; the loaded net gives the same outputs */
    nl_module *net = seed_cnn(32);
    nl_module *n4 = net ? nl_quant_int4(net, 32) : NULL;
    char p32[] = "/tmp/nl_test_q32XXXXXX", p4[] = "/tmp/nl_test_q4XXXXXX";
    int fd = mkstemp(p32);
    if (fd >= 0) close(fd);
    if ((fd = mkstemp(p4)) >= 0) close(fd);
    CHECK(n4 && nl_checkpoint_save_module(p32, net, NULL) == NL_OK &&
          nl_checkpoint_save_module(p4, n4, NULL) == NL_OK, "%s", nl_errmsg());
    const long s32 = file_size(p32), s4 = file_size(p4);
    CHECK(s4 > 0 && s4 * 7 <= s32, "int4 file %ld bytes, f32 %ld", s4, s32);
    nl_module *back = nl_checkpoint_load_module(p4);
    nl_tensor *x = rand_tensor(4, (int64_t[]){2, 3, 32, 32}, -1, 1), *y1 = NULL, *y2 = NULL;
    if (back) nl_module_train(back, false);
    CHECK(back && n4 && nl_module_forward(n4, x, &y1) == NL_OK && nl_module_forward(back, x, &y2) == NL_OK &&
          memcmp(nl_tensor_data(y1), nl_tensor_data(y2), 20 * sizeof(float)) == 0, "int4 round trip");
    nl_tensor_release(y1), nl_tensor_release(y2), nl_tensor_release(x);
    nl_module_release(back);
    /* a packed weight of the wrong size is refused */
    nl_module *l = net_make("Int4Linear", "in", 4.0, "out", 2.0, "bias", 0.0, NULL);
    char *arch = l ? nl_checkpoint_arch_json(l) : NULL;
    nl_st_writer *wr = nl_st_writer_new();
    nl_tensor *badw = nl_tensor_zeros(NL_U8, 2, (int64_t[]){2, 3}, NL_CPU);
    nl_st_writer_meta(wr, NL_CKPT_ARCH, arch ? arch : "");
    nl_st_writer_add(wr, "weight", badw);
    nl_st_writer_add(wr, "scale", l->params[1].value);
    nl_st_writer_add(wr, "qparams", l->params[2].value);
    CHECK(nl_st_writer_commit(wr, p4) == NL_OK, "%s", nl_errmsg());
    CHECK(nl_checkpoint_load_module(p4) == NULL && nl_errcode() == NL_EFORMAT, "wrong packed size accepted");
    nl_st_writer_free(wr);
    nl_tensor_release(badw);
    free(arch);
    nl_module_release(l);
    unlink(p32), unlink(p4);
    nl_module_release(n4);
    nl_module_release(net);
}

/* FakeQuant's straight-through gradient: gy inside the range, 0 outside; forward on the grid. */
static void test_fakequant(void)
{
    nl_module *fq = net_make("FakeQuant", NULL);
    if (!fq) return;
    float *r = nl_tensor_f32(fq->params[0].value);
    r[0] = -1, r[1] = 1, r[2] = 1; /* observed range [-1, 1] */
    nl_module_train(fq, false);
    nl_tensor *x = nl_tensor_from_data(NL_F32, 1, (int64_t[]){5}, (float[]){-2, -0.5f, 0.3f, 0.999f, 2});
    nl_tensor *y = NULL, *gx = NULL, *gy = nl_tensor_from_data(NL_F32, 1, (int64_t[]){5}, (float[]){1, 2, 3, 4, 5});
    CHECK(nl_module_forward(fq, x, &y) == NL_OK, "%s", nl_errmsg());
    double s, zp;
    nl_quant_affine(-1, 1, &s, &zp);
    CHECK(y && fabs(nl_tensor_f32(y)[0] - s * (0 - zp)) < 1e-6 && fabs(nl_tensor_f32(y)[4] - s * (255 - zp)) < 1e-6,
          "clamped ends");
    CHECK(y && fabs(nl_tensor_f32(y)[2] - s * nearbyint(0.3 / s)) < 1e-6, "on the grid");
    CHECK(nl_module_backward(fq, gy, &gx) == NL_OK, "%s", nl_errmsg());
    const float want[] = {0, 2, 3, 4, 0};
    for (int i = 0; gx && i < 5; i++) CHECK_CLOSE(nl_tensor_f32(gx)[i], want[i], 0, 0);
    /* training mode widens the range to the batch */
    nl_module_train(fq, true);
    nl_tensor_release(y);
    CHECK(nl_module_forward(fq, x, &y) == NL_OK && r[0] == -2 && r[1] == 2, "observed %g %g", r[0], r[1]);
    nl_tensor_release(x), nl_tensor_release(y), nl_tensor_release(gx), nl_tensor_release(gy);
    nl_module_release(fq);

    /* QATLinear: the weight gradient passes straight through (that of a Linear on the same x) */
    nl_module *lin = net_make("Linear", "in", 6.0, "out", 3.0, NULL);
    nl_module *qat = lin ? nl_quant_qat(lin, 8) : NULL;
    CHECK(qat && qat->nchildren == 2 && strcmp(qat->children[1]->type->name, "QATLinear") == 0, "qat");
    if (qat) {
        nl_module *ql = qat->children[1];
        nl_tensor *xi = rand_tensor(2, (int64_t[]){4, 6}, -1, 1), *g = rand_tensor(2, (int64_t[]){4, 3}, -1, 1);
        nl_tensor *y1 = NULL, *y2 = NULL, *gx1 = NULL, *gx2 = NULL;
        nl_module_forward(lin, xi, &y1);
        nl_module_forward(ql, xi, &y2);
        nl_module_backward(lin, g, &gx1);
        CHECK(nl_module_backward(ql, g, &gx2) == NL_OK, "%s", nl_errmsg());
        double dw = 0, dy = 0;
        for (int i = 0; i < 18; i++)
            dw = fmax(dw, fabs(nl_tensor_f32(lin->params[0].grad)[i] - nl_tensor_f32(ql->params[0].grad)[i]));
        for (int i = 0; y1 && y2 && i < 12; i++) dy = fmax(dy, fabs(nl_tensor_f32(y1)[i] - nl_tensor_f32(y2)[i]));
        CHECK(dw < 1e-6, "weight gradient differs by %g", dw);
        CHECK(dy > 0 && dy < 0.02, "fake-quantized weights change y by %g", dy);
        nl_tensor_release(xi), nl_tensor_release(g), nl_tensor_release(y1), nl_tensor_release(y2);
        nl_tensor_release(gx1), nl_tensor_release(gx2);
    }
    nl_module_release(qat);
    nl_module_release(lin);
}

/* QAT of the seed CNN, then convert: the integer model matches the fake-quant model. */
static void test_qat_convert(void)
{
    nl_rng_seed(11);
    nl_module *net = seed_cnn(16);
    nl_module *qat = net ? nl_quant_qat(net, 8) : NULL;
    CHECK(qat != NULL, "%s", nl_errmsg());
    if (!qat) return;
    CHECK(nl_quant_convert(qat) == NULL && nl_errcode() == NL_EINVAL, "unobserved ranges refused");
    nl_module_train(qat, true);
    for (int b = 0; b < 2; b++) {
        nl_tensor *xb = rand_tensor(4, (int64_t[]){8, 3, 16, 16}, -1, 1), *yb = NULL;
        CHECK(nl_module_forward(qat, xb, &yb) == NL_OK, "%s", nl_errmsg());
        nl_tensor_release(xb), nl_tensor_release(yb);
    }
    nl_module_train(qat, false);
    nl_module *q = nl_quant_convert(qat);
    CHECK(q && q->nchildren == 4 && strcmp(q->children[1]->type->name, "QConv2d") == 0, "%s", nl_errmsg());
    nl_tensor *x = rand_tensor(4, (int64_t[]){8, 3, 16, 16}, -1, 1), *yf = NULL, *yq = NULL;
    CHECK(nl_module_forward(qat, x, &yf) == NL_OK, "%s", nl_errmsg());
    CHECK(q && nl_module_forward(q, x, &yq) == NL_OK, "%s", nl_errmsg());
    if (yf && yq) {
        double maxf = 0, maxd = 0;
        for (int64_t i = 0; i < nl_tensor_numel(yf); i++) {
            maxf = fmax(maxf, fabs(nl_tensor_f32(yf)[i]));
            maxd = fmax(maxd, fabs(nl_tensor_f32(yf)[i] - nl_tensor_f32(yq)[i]));
        }
        /* the stated tolerance: 0.1% of the largest logit (measured: ~1e-7, float rounding) */
        CHECK(maxd <= 0.001 * maxf, "integer model off the fake-quant model by %g (largest %g)", maxd, maxf);
    }
    nl_tensor_release(x), nl_tensor_release(yf), nl_tensor_release(yq);
    nl_module_release(q);
    nl_module_release(qat);
    nl_module_release(net);
}

/* The float layer of an Int4 layer's arguments with its weights dequantized here from the nibbles
 * (base * code * (nibble - 8), written out apart from the kernels) and its bias: the old forward
 * (dequantize, then the f32 layer). Checks that nl_quant_weights_f32 gives the same floats.
 * abs_w: |w| and |b| instead. New reference. */
static nl_module *int4_float_twin(nl_module *q, bool abs_w)
{
    const bool conv = strcmp(q->type->name, "Int4Conv2d") == 0;
    nl_module *f = conv ? net_make("Conv2d", "in", q->args[0], "out", q->args[1], "k", q->args[2],
                                   "stride", q->args[3], "padding", q->args[4], "bias", q->args[5], NULL)
                        : net_make("Linear", "in", q->args[0], "out", q->args[1], "bias", q->args[2], NULL);
    if (!f) return NULL;
    const int64_t group = (int64_t)q->args[conv ? 6 : 3], O = f->params[0].value->shape[0],
                  K = nl_tensor_numel(f->params[0].value) / O;
    const uint8_t *nib = nl_tensor_data(q->params[0].value), *code = nl_tensor_data(q->params[1].value);
    const float base = nl_tensor_f32(q->params[2].value)[0];
    float *fw = nl_tensor_f32(f->params[0].value);
    for (int64_t o = 0; o < O; o++)
        for (int64_t k = 0; k < K; k++) {
            const uint8_t byte = nib[o * ((K + 1) / 2) + k / 2];
            fw[o * K + k] = base * (float)code[o * ((K + group - 1) / group) + k / group] *
                            (float)((k % 2 ? byte >> 4 : byte & 15) - 8);
        }
    nl_tensor *w = nl_quant_weights_f32(q);
    CHECK(w && nl_tensor_numel(w) == O * K && memcmp(nl_tensor_data(w), fw, (size_t)(O * K) * sizeof *fw) == 0,
          "%s: quant.weights gives other floats than the nibbles", q->type->name);
    nl_tensor_release(w);
    const nl_param *b = nl_module_param(q, "bias");
    if (b && nl_copy(nl_module_param(f, "bias")->value, b->value) != NL_OK) {
        nl_module_release(f);
        return NULL;
    }
    for (int i = 0; abs_w && i < f->nparams; i++) nl_unary(NL_UN_ABS, f->params[i].value, f->params[i].value);
    nl_module_train(f, false);
    return f;
}

/* One Int4 layer against its float twin: |y - y_ref| <= 1e-5 * S elementwise, S = the layer
 * applied to |x| with |w| and |b| (the sum of the magnitudes of the terms). The only difference
 * is the order sgemm sums the terms in (the weights are the same floats), so the error is a few
 * float roundings of S; 1e-5 * S is well above that and far below a wrong weight (>= 1/16 of a
 * group scale). Returns the largest |y - y_ref| / S. */
static double int4_vs_float(const char *what, nl_module *layer, int group, nl_tensor *x)
{
    nl_module *q = nl_quant_int4(layer, group);
    nl_module *l4 = q ? q->children[0] : NULL;
    nl_module *f = l4 ? int4_float_twin(l4, false) : NULL, *fa = l4 ? int4_float_twin(l4, true) : NULL;
    nl_tensor *xa = nl_tensor_empty_like(x), *y = NULL, *yr = NULL, *ya = NULL;
    double worst = INFINITY;
    CHECK(q && f && fa && xa && nl_unary(NL_UN_ABS, xa, x) == NL_OK, "%s: %s", what, nl_errmsg());
    if (q && f && fa && xa && nl_module_forward(q, x, &y) == NL_OK && nl_module_forward(f, x, &yr) == NL_OK &&
        nl_module_forward(fa, xa, &ya) == NL_OK) {
        CHECK(nl_same_shape(y, yr), "%s: shapes", what);
        int bad = 0;
        worst = 0;
        for (int64_t i = 0; i < nl_tensor_numel(yr); i++) {
            const double d = fabs(nl_tensor_f32(y)[i] - nl_tensor_f32(yr)[i]), sum = nl_tensor_f32(ya)[i];
            bad += !(d <= 1e-5 * sum);
            worst = fmax(worst, sum > 0 ? d / sum : d);
        }
        CHECK(bad == 0, "%s: %d of %lld outputs off the dequantized float layer (worst %g of S)", what, bad,
              (long long)nl_tensor_numel(yr), worst);
    } else {
        CHECK(0, "%s: forward: %s", what, nl_errmsg());
    }
    nl_tensor_release(y), nl_tensor_release(yr), nl_tensor_release(ya), nl_tensor_release(xa);
    nl_module_release(f), nl_module_release(fa), nl_module_release(q);
    return worst;
}

/* The int4 kernels (NL_OP_INT4_LINEAR / NL_OP_INT4_CONV2D) against dequantize-then-float-layer:
 * odd K, groups that do not divide K (odd groups start on a high nibble), more outputs than a
 * block and more inputs than a block, more rows or images than a chunk, stride / padding, bias or not,
 * a batch of 3-D inputs to a linear layer; then bad inputs. */
static void test_int4_kernels(void)
{
    nl_rng_seed(11);
    struct { const char *what; nl_module *m; int group; int ndim; int64_t shape[4]; } cases[] = {
        {"linear K 75 group 32 bias", net_make("Linear", "in", 75.0, "out", 19.0, NULL), 32, 2, {5, 75}},
        {"linear K 1100 group 7 no bias", net_make("Linear", "in", 1100.0, "out", 70.0, "bias", 0.0, NULL),
         7, 2, {4, 1100}},
        {"linear 300 rows of [.., 33] group 5",
         net_make("Linear", "in", 33.0, "out", 3.0, NULL), 5, 3, {3, 100, 33}},
        {"conv stride 2 padding 1 group 5 no bias",
         net_make("Conv2d", "in", 3.0, "out", 20.0, "k", 3.0, "stride", 2.0, "padding", 1.0, "bias", 0.0,
                  NULL), 5, 4, {2, 3, 9, 7}},
        {"conv k 2 group 32 bias", net_make("Conv2d", "in", 5.0, "out", 4.0, "k", 2.0, NULL), 32, 4,
         {3, 5, 6, 5}},
        {"conv 5 images of 72 x 1600 columns (chunks of 2) group 32",
         net_make("Conv2d", "in", 8.0, "out", 4.0, "k", 3.0, "padding", 1.0, NULL), 32, 4, {5, 8, 40, 40}},
        {"conv K 576 group 33 padding 2", net_make("Conv2d", "in", 64.0, "out", 67.0, "k", 3.0, "padding", 2.0,
                                                   NULL), 33, 4, {3, 64, 6, 6}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nl_tensor *x = rand_tensor(cases[i].ndim, cases[i].shape, -1, 1);
        CHECK(cases[i].m && x, "%s: setup", cases[i].what);
        if (cases[i].m && x) int4_vs_float(cases[i].what, cases[i].m, cases[i].group, x);
        nl_tensor_release(x);
        nl_module_release(cases[i].m);
    }

    /* bad inputs: a bad scale base, a wrong input shape and dtype, all as errors */
    nl_module *lin = net_make("Linear", "in", 8.0, "out", 2.0, NULL), *q = lin ? nl_quant_int4(lin, 4) : NULL;
    nl_tensor *x = rand_tensor(2, (int64_t[]){3, 8}, -1, 1), *x7 = rand_tensor(2, (int64_t[]){3, 7}, -1, 1);
    nl_tensor *xi = nl_tensor_zeros(NL_I32, 2, (int64_t[]){3, 8}, NL_CPU), *y = NULL;
    CHECK(q && nl_module_forward(q, x7, &y) == NL_ESHAPE && strstr(nl_errmsg(), "features"), "%s", nl_errmsg());
    CHECK(q && nl_module_forward(q, xi, &y) != NL_OK, "an i32 input is refused");
    float *qp = q ? nl_tensor_f32(q->children[0]->params[2].value) : NULL;
    const float bases[] = {0, -1, NAN, INFINITY};
    for (int i = 0; qp && i < 4; i++) {
        qp[0] = bases[i];
        CHECK(nl_module_forward(q, x, &y) == NL_EINVAL && strstr(nl_errmsg(), "bad scale base"),
              "base %g: %s", bases[i], nl_errmsg());
    }
    CHECK(y == NULL, "no output on errors");
    nl_tensor_release(x), nl_tensor_release(x7), nl_tensor_release(xi);
    nl_module_release(q), nl_module_release(lin);

    /* the seed CNN: the int4 model against the same net with the dequantized weights in f32 layers */
    nl_module *net = seed_cnn(16), *q4 = net ? nl_quant_int4(net, 32) : NULL;
    nl_module *ref = q4 ? nl_module_new(nl_module_type_find("Sequential"), NULL) : NULL;
    for (int i = 0; ref && i < q4->nchildren; i++) {
        nl_module *k = q4->children[i];
        const bool w4 = strncmp(k->type->name, "Int4", 4) == 0;
        nl_module *r = w4 ? int4_float_twin(k, false) : nl_module_retain(k);
        CHECK(r && nl_module_add(ref, r) == NL_OK, "%s", nl_errmsg());
        nl_module_release(r);
    }
    nl_tensor *xs = rand_tensor(4, (int64_t[]){4, 3, 16, 16}, -1, 1), *y4 = NULL, *yr = NULL;
    CHECK(ref && nl_module_forward(q4, xs, &y4) == NL_OK && nl_module_forward(ref, xs, &yr) == NL_OK,
          "%s", nl_errmsg());
    if (y4 && yr) {
        double big = 0, d = 0;
        for (int64_t i = 0; i < nl_tensor_numel(yr); i++) {
            big = fmax(big, fabs(nl_tensor_f32(yr)[i]));
            d = fmax(d, fabs(nl_tensor_f32(y4)[i] - nl_tensor_f32(yr)[i]));
        }
        /* stated tolerance: 1e-5 of the largest logit (float rounding through three layers) */
        CHECK(d <= 1e-5 * big, "int4 seed CNN off the dequantized float net by %g (largest %g)", d, big);
    }
    nl_tensor_release(xs), nl_tensor_release(y4), nl_tensor_release(yr);
    nl_module_release(ref), nl_module_release(q4), nl_module_release(net);
}

int main(void)
{
    nl_init();
    test_weights();
    test_qconv_reference();
    test_qpool_reference();
    test_qconv_pool();
    test_seed_cnn();
    test_report_known();
    test_corrupt();
    test_int4();
    test_int4_kernels();
    test_fakequant();
    test_qat_convert();
    return TEST_REPORT();
}
