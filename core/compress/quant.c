/* quant.c: post-training int8 quantization: calibration of activation ranges on sample batches,
 * conversion of a float network to the integer layers of qlayers.c, and per-layer reports. */
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const nl_module_type nl_sequential_type, nl_conv2d_type, nl_linear_type, nl_relu_type,
    nl_maxpool2d_type, nl_flatten_type, nl_dropout_type, nl_identity_type, nl_quantize_type,
    nl_dequantize_type, nl_qconv2d_type, nl_qlinear_type, nl_qmaxpool2d_type, nl_int4linear_type,
    nl_int4conv2d_type, nl_fakequant_type, nl_qatlinear_type, nl_qatconv2d_type;

enum { QP_IN_SCALE, QP_IN_ZP, QP_OUT_SCALE, QP_OUT_ZP, QP_W_SQNR, QP_A_SQNR }; /* as qlayers.c */
enum { SAMPLE_MAX = 1 << 16 }; /* values per batch that the percentile method sorts */

static double sqnr_db(double signal, double noise)
{
    return noise > 0 ? 10 * log10(signal / noise) : signal > 0 ? INFINITY : NAN;
}

/* ---------------------------------------------------------------- arithmetic ------------ */

void nl_quant_affine_bits(double lo, double hi, int bits, double *scale, double *zero_point)
{
    const double qmax = ldexp(1, bits) - 1;
    lo = lo < 0 ? lo : 0;
    hi = hi > 0 ? hi : 0;
    float s = (float)((hi - lo) / qmax);
    if (!(s > 0) || !isfinite(s)) s = 1;
    double zp = nearbyint(-lo / s);
    *scale = s;
    *zero_point = zp < 0 ? 0 : zp > qmax ? qmax : zp;
}

void nl_quant_affine(double lo, double hi, double *scale, double *zero_point)
{
    nl_quant_affine_bits(lo, hi, 8, scale, zero_point);
}

/* x quantized to u8 at (scale, zp) and back. */
static float fake_u8(float x, float scale, float zp)
{
    float q = nearbyintf(x / scale) + zp;
    q = q < 0 ? 0 : q > 255 ? 255 : q;
    return scale * (q - zp);
}

nl_status nl_quant_weights_i8(const nl_tensor *w, nl_tensor *q, nl_tensor *scales, double *sqnr)
{
    if (w->dtype != NL_F32 || q->dtype != NL_I8 || scales->dtype != NL_F32 || !nl_same_shape(w, q) ||
        w->ndim < 1 || nl_tensor_numel(scales) != w->shape[0] || !nl_tensor_is_contiguous(w) ||
        !nl_tensor_is_contiguous(q) || !nl_tensor_is_contiguous(scales))
        return nl_seterr(NL_EINVAL, "quant: weights f32 [O, ...] into i8 of the same shape and f32 [O] "
                         "scales (contiguous)");
    const int64_t O = w->shape[0], K = O ? nl_tensor_numel(w) / O : 0;
    const float *wd = nl_tensor_f32(w);
    int8_t *qd = nl_tensor_data(q);
    float *sd = nl_tensor_f32(scales);
    double signal = 0, noise = 0;
    for (int64_t o = 0; o < O; o++) {
        float amax = 0;
        for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(wd[o * K + k]));
        const float s = amax > 0 ? amax / 127 : 1;
        sd[o] = s;
        for (int64_t k = 0; k < K; k++) {
            const float v = wd[o * K + k], r = nearbyintf(v / s);
            const int8_t qv = (int8_t)(r < -127 ? -127 : r > 127 ? 127 : r);
            qd[o * K + k] = qv;
            signal += (double)v * v;
            noise += ((double)v - (double)s * qv) * ((double)v - (double)s * qv);
        }
    }
    if (sqnr) *sqnr = sqnr_db(signal, noise);
    return NL_OK;
}

/* ---------------------------------------------------------------- calibration ----------- */

/* Statistics of one activation: tap 0 is the network's input, tap i+1 the output of child i. */
typedef struct {
    double lo, hi;         /* min / max, or the sums of per-batch percentiles */
    double signal, noise;  /* second pass: sum x^2 and sum (x - fake_quant(x))^2 */
    float scale, zp;       /* the chosen quantization */
    int ndim;
    int64_t shape[NL_MAX_DIMS];
} tap;

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Records t into the tap: the first pass its range, the second the quantization noise. */
static nl_status observe(tap *tp, const nl_tensor *t, bool second, const nl_quant_opts *o, float *sample)
{
    const float *d = nl_tensor_f32(t);
    const int64_t n = nl_tensor_numel(t);
    tp->ndim = t->ndim;
    memcpy(tp->shape, t->shape, sizeof tp->shape);
    if (second) {
        for (int64_t i = 0; i < n; i++) {
            const double e = (double)d[i] - fake_u8(d[i], tp->scale, tp->zp);
            tp->signal += (double)d[i] * d[i];
            tp->noise += e * e;
        }
    } else if (o->method == NL_QCALIB_MINMAX) {
        for (int64_t i = 0; i < n; i++) {
            tp->lo = fmin(tp->lo, d[i]);
            tp->hi = fmax(tp->hi, d[i]);
        }
    } else if (n > 0) {
        const int64_t step = n > SAMPLE_MAX ? (n + SAMPLE_MAX - 1) / SAMPLE_MAX : 1;
        int64_t k = 0;
        for (int64_t i = 0; i < n; i += step) sample[k++] = d[i];
        qsort(sample, (size_t)k, sizeof *sample, cmp_float);
        const double p = o->percentile / 100;
        tp->lo += sample[(int64_t)((1 - p) * (double)(k - 1))];
        tp->hi += sample[(int64_t)(p * (double)(k - 1) + 0.5)];
    }
    return NL_OK;
}

/* Runs the children of net on every batch, twice: ranges, then (with the chosen quantization)
 * the noise. taps has nchildren + 1 entries. */
static nl_status calibrate(nl_module **kids, int nk, nl_tensor *const *batches, int nb,
                           const nl_quant_opts *o, tap *taps)
{
    float *sample = malloc(SAMPLE_MAX * sizeof *sample);
    if (!sample) return nl_seterr(NL_ENOMEM, "quant: out of memory");
    for (int t = 0; t <= nk; t++) taps[t] = (tap){.lo = o->method == NL_QCALIB_MINMAX ? INFINITY : 0,
                                                   .hi = o->method == NL_QCALIB_MINMAX ? -INFINITY : 0};
    nl_status st = NL_OK;
    for (int pass = 0; pass < 2 && st == NL_OK; pass++) {
        for (int b = 0; b < nb && st == NL_OK; b++) {
            nl_tensor *x = nl_tensor_retain(batches[b]);
            st = x->dtype == NL_F32 ? observe(&taps[0], x, pass, o, sample)
                                    : nl_seterr(NL_ETYPE, "quant: calibration batches must be f32");
            for (int i = 0; i < nk && st == NL_OK; i++) {
                nl_tensor *y = NULL;
                st = nl_module_forward(kids[i], x, &y);
                nl_tensor_release(x);
                x = y;
                if (st == NL_OK) st = observe(&taps[i + 1], x, pass, o, sample);
            }
            nl_tensor_release(x);
        }
        for (int t = 0; pass == 0 && t <= nk; t++) {
            double scale, zp, div = o->method == NL_QCALIB_MINMAX ? 1 : nb;
            nl_quant_affine(taps[t].lo / div, taps[t].hi / div, &scale, &zp);
            taps[t].scale = (float)scale;
            taps[t].zp = (float)zp;
        }
    }
    free(sample);
    return st;
}

/* ---------------------------------------------------------------- conversion ------------ */

/* An activation (de)quantizer with the tap's quantization. */
static nl_module *affine_module(const nl_module_type *t, const tap *tp)
{
    nl_module *m = nl_module_new(t, NULL);
    if (m) {
        nl_tensor_f32(m->params[0].value)[0] = tp->scale;
        nl_tensor_f32(m->params[0].value)[1] = tp->zp;
    }
    return m;
}

/* QConv2d / QLinear from the float layer f: in = the input's tap, out = the output's (NULL: f32
 * output); pool: a fused k x k max pool of stride k (0: none). chw: for a linear layer after a
 * flattened NHWC map, its C, H, W (else NULL). */
static nl_module *qlayer(nl_module *f, bool relu, int pool, const tap *in, const tap *out,
                         const int64_t *chw)
{
    const bool conv = f->type == &nl_conv2d_type;
    double args[NL_MAX_ARGS];
    const nl_module_type *t = conv ? &nl_qconv2d_type : &nl_qlinear_type;
    nl_module_default_args(t, args);
    if (conv) {
        for (int a = 0; a < 5; a++) args[a] = f->args[a]; /* in, out, k, stride, padding */
        args[5] = relu;
        args[6] = out == NULL;
        args[7] = pool;
    } else {
        args[0] = f->args[0];
        args[1] = f->args[1];
        args[2] = relu;
        args[3] = out == NULL;
    }
    nl_module *q = nl_module_new(t, args);
    if (!q) return NULL;
    nl_tensor *w = f->params[0].value, *wsrc = nl_tensor_retain(w);
    if (chw) { /* columns (c, h, w) -> (h, w, c) */
        nl_tensor *v = nl_tensor_reshape(w, 4, (int64_t[]){w->shape[0], chw[0], chw[1], chw[2]});
        nl_tensor *p = v ? nl_tensor_permute(v, (int[]){0, 2, 3, 1}) : NULL;
        nl_tensor_release(wsrc);
        wsrc = p ? nl_tensor_clone(p) : NULL;
        nl_tensor_release(v);
        nl_tensor_release(p);
    }
    nl_tensor *wv = wsrc ? nl_tensor_reshape(wsrc, w->ndim, w->shape) : NULL;
    double wsqnr = 0;
    const nl_param *b = nl_module_param(f, "bias");
    nl_status st = wv ? nl_quant_weights_i8(wv, q->params[0].value, q->params[1].value, &wsqnr)
                      : nl_errcode();
    if (st == NL_OK && b) st = nl_copy(q->params[2].value, b->value);
    nl_tensor_release(wsrc);
    nl_tensor_release(wv);
    if (st != NL_OK) {
        nl_module_release(q);
        return NULL;
    }
    float *qp = nl_tensor_f32(q->params[3].value);
    qp[QP_IN_SCALE] = in->scale;
    qp[QP_IN_ZP] = in->zp;
    qp[QP_OUT_SCALE] = out ? out->scale : 1;
    qp[QP_OUT_ZP] = out ? out->zp : 0;
    qp[QP_W_SQNR] = (float)wsqnr;
    qp[QP_A_SQNR] = out ? (float)sqnr_db(out->signal, out->noise) : NAN;
    return q;
}

static bool is_type(const nl_module *m, const nl_module_type *t) { return m && m->type == t; }
static bool is_skipped(const nl_module *m)
{
    return is_type(m, &nl_dropout_type) || is_type(m, &nl_identity_type);
}

/* Whether child i (after skipped ones) takes u8 activations in the converted net: a layer with
 * an integer form (a Flatten only when a Linear follows it). */
static bool takes_u8(nl_module **kids, int nk, int i)
{
    while (i < nk && is_skipped(kids[i])) i++;
    if (i >= nk) return false;
    const nl_module *k = kids[i];
    if (is_type(k, &nl_flatten_type)) {
        int j = i + 1;
        while (j < nk && is_skipped(kids[j])) j++;
        return j < nk && is_type(kids[j], &nl_linear_type);
    }
    return is_type(k, &nl_conv2d_type) || is_type(k, &nl_linear_type) || is_type(k, &nl_maxpool2d_type);
}

/* Appends m to c (taking over the caller's reference); NULL m: the error already set. */
static nl_status append(nl_module *c, nl_module *m)
{
    nl_status st = m ? nl_module_add(c, m) : nl_errcode();
    nl_module_release(m);
    return st;
}

static nl_status convert(nl_module **kids, int nk, tap *taps, nl_module *out)
{
    bool q = false;      /* the activations here are u8 */
    int qtap = 0;        /* the tap whose quantization they carry */
    const int64_t *chw = NULL; /* a pending flatten of an NHWC map */
    nl_status st = NL_OK;
    for (int i = 0; i < nk && st == NL_OK; i++) {
        nl_module *k = kids[i];
        const bool conv = is_type(k, &nl_conv2d_type), lin = is_type(k, &nl_linear_type);
        if (conv || lin) {
            const bool relu = i + 1 < nk && is_type(kids[i + 1], &nl_relu_type);
            int last = relu ? i + 1 : i; /* the child whose output this layer makes */
            /* Conv2d, ReLU, MaxPool2d(k <= 3, stride k, no padding): one QConv2d (the pool keeps
             * the ReLU's quantization, and max commutes with requantizing). */
            const nl_module *pl = conv && relu && last + 1 < nk ? kids[last + 1] : NULL;
            const int pool = is_type(pl, &nl_maxpool2d_type) && pl->args[0] <= 3 &&
                                     pl->args[1] == pl->args[0] && pl->args[2] == 0
                                 ? (int)pl->args[0] : 0;
            if (!q) {
                st = append(out, affine_module(&nl_quantize_type, &taps[i]));
                q = true;
                qtap = i;
            }
            const bool u8_out = takes_u8(kids, nk, last + 1 + (pool > 0));
            if (st == NL_OK)
                st = append(out, qlayer(k, relu, pool, &taps[qtap], u8_out ? &taps[last + 1] : NULL, chw));
            chw = NULL;
            q = u8_out;
            qtap = last + 1;
            i = last + (pool > 0);
        } else if (q && is_type(k, &nl_maxpool2d_type)) {
            double args[NL_MAX_ARGS] = {k->args[0], k->args[1], k->args[2]};
            st = append(out, nl_module_new(&nl_qmaxpool2d_type, args)); /* keeps the quantization */
        } else if (is_skipped(k)) {
            continue;
        } else if (q && takes_u8(kids, nk, i) && is_type(k, &nl_flatten_type)) {
            const tap *in = &taps[i]; /* the flatten's input: [N, C, H, W] float */
            chw = in->ndim == 4 ? in->shape + 1 : NULL;
        } else {
            if (q) st = append(out, affine_module(&nl_dequantize_type, &taps[qtap]));
            q = false;
            if (st == NL_OK) st = append(out, nl_module_clone(k));
        }
    }
    if (st == NL_OK && q) st = append(out, affine_module(&nl_dequantize_type, &taps[qtap]));
    return st;
}

static nl_module *int8_on_host(nl_module *net, nl_tensor *const *batches, int nbatches,
                               const nl_quant_opts *opts)
{
    nl_quant_opts o = opts ? *opts : (nl_quant_opts){NL_QCALIB_MINMAX, 99.99};
    if (!net || nbatches < 1) {
        nl_seterr(NL_EINVAL, "quant.int8: needs a network and at least one calibration batch");
        return NULL;
    }
    if (o.method == NL_QCALIB_PERCENTILE && !(o.percentile > 50 && o.percentile <= 100)) {
        nl_seterr(NL_EINVAL, "quant.int8: percentile must be in (50, 100], got %g", o.percentile);
        return NULL;
    }
    const bool seq = is_type(net, &nl_sequential_type);
    nl_module **kids = seq ? net->children : &net;
    const int nk = seq ? net->nchildren : 1;
    for (int i = 0; i < nk; i++)
        if (kids[i]->type->container) {
            nl_seterr(NL_EINVAL, "quant.int8: nested containers (%s) are not supported; quantize a "
                      "flat Sequential", kids[i]->type->name);
            return NULL;
        }
    tap *taps = calloc((size_t)nk + 1, sizeof *taps);
    nl_module *out = nl_module_new(&nl_sequential_type, NULL);
    const bool training = net->training;
    nl_module_train(net, false);
    nl_status st = taps && out ? calibrate(kids, nk, batches, nbatches, &o, taps)
                               : nl_seterr(NL_ENOMEM, "quant.int8: out of memory");
    nl_module_train(net, training);
    if (st == NL_OK) st = convert(kids, nk, taps, out);
    free(taps);
    if (st != NL_OK) {
        nl_module_release(out);
        return NULL;
    }
    nl_module_train(out, false);
    return out;
}

/* ---------------------------------------------------------------- QAT ------------------- */

/* The children of net (a Sequential's, or net alone) in *kids / *nk; NL_EINVAL for nested
 * containers. */
static nl_status flat_children(nl_module *net, const char *fname, nl_module ***kids, int *nk)
{
    const bool seq = is_type(net, &nl_sequential_type);
    *kids = seq ? net->children : NULL;
    *nk = seq ? net->nchildren : 1;
    for (int i = 0; seq && i < *nk; i++)
        if ((*kids)[i]->type->container)
            return nl_seterr(NL_EINVAL, "%s: nested containers (%s) are not supported; use a flat "
                             "Sequential", fname, (*kids)[i]->type->name);
    return NL_OK;
}

/* A layer of type t with f's arguments (then extra) and a copy of f's parameters, the caller's
 * RNG stream untouched. New reference. */
static nl_module *retyped(nl_module *f, const nl_module_type *t, int nf, double extra)
{
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    for (int a = 0; a < nf; a++) args[a] = f->args[a];
    if (extra == extra) args[nf] = extra;
    const nl_rng_state rng = nl_rng_get_state();
    nl_module *m = nl_module_new(t, args);
    nl_rng_set_state(rng);
    for (int i = 0; m && i < f->nparams; i++)
        if (nl_copy(m->params[i].value, f->params[i].value) != NL_OK) {
            nl_module_release(m);
            return NULL;
        }
    return m;
}

static nl_module *fakequant(int bits)
{
    double a[NL_MAX_ARGS] = {bits};
    return nl_module_new(&nl_fakequant_type, a);
}

static nl_module *qat_on_host(nl_module *net, int bits)
{
    nl_module **kids;
    int nk;
    if (!net || bits < 2 || bits > 8) {
        nl_seterr(NL_EINVAL, "quant.qat: needs a network and bits in 2..8, got %d", bits);
        return NULL;
    }
    if (flat_children(net, "quant.qat", &kids, &nk) != NL_OK) return NULL;
    if (!kids) kids = &net;
    nl_module *out = nl_module_new(&nl_sequential_type, NULL);
    nl_status st = out ? NL_OK : nl_errcode();
    bool fq = false; /* the activations here pass a FakeQuant */
    for (int i = 0; i < nk && st == NL_OK; i++) {
        nl_module *k = kids[i];
        const bool conv = is_type(k, &nl_conv2d_type), lin = is_type(k, &nl_linear_type);
        if (!(conv || lin)) {
            st = append(out, nl_module_clone(k));
            fq = fq && (takes_u8(kids, nk, i) || is_skipped(k));
            continue;
        }
        if (!fq) st = append(out, fakequant(bits));
        if (st == NL_OK)
            st = append(out, retyped(k, conv ? &nl_qatconv2d_type : &nl_qatlinear_type, conv ? 6 : 3, bits));
        const bool relu = i + 1 < nk && is_type(kids[i + 1], &nl_relu_type);
        if (relu && st == NL_OK) st = append(out, nl_module_clone(kids[++i]));
        fq = takes_u8(kids, nk, i + 1);
        if (fq && st == NL_OK) st = append(out, fakequant(bits));
    }
    if (st != NL_OK) {
        nl_module_release(out);
        return NULL;
    }
    nl_module_train(out, net->training);
    return out;
}

static nl_module *convert_on_host(nl_module *net)
{
    nl_module **kids;
    int nk;
    if (!net) {
        nl_seterr(NL_EINVAL, "quant.convert: needs a network");
        return NULL;
    }
    if (flat_children(net, "quant.convert", &kids, &nk) != NL_OK) return NULL;
    if (!kids) kids = &net;
    /* The float layers (QAT layers as their float twins) and, at each FakeQuant, the tap there. */
    nl_module **fl = calloc((size_t)nk + 1, sizeof *fl);
    tap *taps = calloc((size_t)nk + 1, sizeof *taps);
    nl_module *out = fl && taps ? nl_module_new(&nl_sequential_type, NULL) : NULL;
    nl_status st = out ? NL_OK : nl_seterr(NL_ENOMEM, "quant.convert: out of memory");
    int n = 0;
    for (int i = 0; i < nk && st == NL_OK; i++) {
        nl_module *k = kids[i];
        const bool qconv = is_type(k, &nl_qatconv2d_type), qlin = is_type(k, &nl_qatlinear_type);
        const bool fake = is_type(k, &nl_fakequant_type);
        if ((qconv || qlin || fake) && k->args[qconv ? 6 : qlin ? 3 : 0] != 8) {
            st = nl_seterr(NL_EINVAL, "quant.convert: layer %d (%s) has %g bits; the integer kernels "
                           "are 8-bit", i + 1, k->type->name, k->args[qconv ? 6 : qlin ? 3 : 0]);
        } else if (fake) {
            const float *r = nl_tensor_f32(k->params[0].value);
            if (r[2] == 0)
                st = nl_seterr(NL_EINVAL, "quant.convert: FakeQuant (layer %d) has seen no data: "
                               "train or run the network in training mode first", i + 1);
            double scale, zp;
            nl_quant_affine(r[0], r[1], &scale, &zp);
            taps[n] = (tap){.scale = (float)scale, .zp = (float)zp};
        } else {
            if (is_type(k, &nl_flatten_type) && !k->input)
                st = nl_seterr(NL_EINVAL, "quant.convert: run the network once first (the Flatten at "
                               "layer %d has not seen the shape of its input)", i + 1);
            if (k->input) { /* a flatten's input shape orders the next layer's weight columns */
                taps[n].ndim = k->input->ndim;
                memcpy(taps[n].shape, k->input->shape, sizeof taps[n].shape);
            }
            fl[n] = qconv ? retyped(k, &nl_conv2d_type, 6, NAN)
                  : qlin  ? retyped(k, &nl_linear_type, 3, NAN)
                          : nl_module_retain(k);
            st = fl[n++] ? NL_OK : nl_errcode();
        }
    }
    if (st == NL_OK) st = convert(fl, n, taps, out);
    for (int i = 0; i < n; i++) nl_module_release(fl[i]);
    free(fl);
    free(taps);
    if (st != NL_OK) {
        nl_module_release(out);
        return NULL;
    }
    nl_module_train(out, false);
    return out;
}

/* ---------------------------------------------------------------- int4 ------------------ */

nl_status nl_quant_weights_int4(const nl_tensor *w, int group, nl_tensor *packed, nl_tensor *codes,
                                double *base, double *sqnr)
{
    const int64_t O = w->ndim > 0 ? w->shape[0] : 0, K = O ? nl_tensor_numel(w) / O : 0;
    if (group < 1 || w->dtype != NL_F32 || packed->dtype != NL_U8 || codes->dtype != NL_U8 ||
        packed->ndim != 2 || codes->ndim != 2 || packed->shape[0] != O || codes->shape[0] != O ||
        packed->shape[1] != (K + 1) / 2 || codes->shape[1] != (K + group - 1) / group ||
        !nl_tensor_is_contiguous(w) || !nl_tensor_is_contiguous(packed) || !nl_tensor_is_contiguous(codes))
        return nl_seterr(NL_EINVAL, "quant: int4 weights need f32 [O, ...] rows of K, u8 [O, ceil(K/2)] "
                         "and u8 [O, ceil(K/group)] (contiguous), group >= 1");
    const float *wd = nl_tensor_f32(w);
    uint8_t *pd = nl_tensor_data(packed), *cd = nl_tensor_data(codes);
    const int64_t ng = codes->shape[1];
    float top = 0;
    for (int64_t i = 0; i < O * K; i++) top = fmaxf(top, fabsf(wd[i]));
    const float b = top > 0 ? top / 7 / 255 : 1;
    memset(pd, 0, (size_t)(O * packed->shape[1]));
    double signal = 0, noise = 0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = g * group, k1 = k0 + group < K ? k0 + group : K;
            float amax = 0;
            for (int64_t k = k0; k < k1; k++) amax = fmaxf(amax, fabsf(wd[o * K + k]));
            const float code = fminf(fmaxf(ceilf(amax / 7 / b), 1), 255), s = b * code;
            cd[o * ng + g] = (uint8_t)code;
            for (int64_t k = k0; k < k1; k++) {
                const float v = wd[o * K + k], r = nearbyintf(v / s);
                const int q = (int)(r < -8 ? -8 : r > 7 ? 7 : r);
                pd[o * packed->shape[1] + k / 2] |= (uint8_t)((q + 8) << (k % 2 ? 4 : 0));
                signal += (double)v * v;
                noise += ((double)v - (double)s * q) * ((double)v - (double)s * q);
            }
        }
    *base = b;
    if (sqnr) *sqnr = sqnr_db(signal, noise);
    return NL_OK;
}

/* Int4Conv2d / Int4Linear from the float layer f. New reference. */
static nl_module *int4_layer(nl_module *f, int group)
{
    const bool conv = f->type == &nl_conv2d_type;
    const nl_module_type *t = conv ? &nl_int4conv2d_type : &nl_int4linear_type;
    double args[NL_MAX_ARGS];
    const int nf = conv ? 6 : 3; /* the float layer's arguments come first */
    for (int a = 0; a < nf; a++) args[a] = f->args[a];
    args[nf] = group;
    nl_module *q = nl_module_new(t, args);
    double base, sqnr;
    nl_status st = q ? nl_quant_weights_int4(f->params[0].value, group, q->params[0].value,
                                             q->params[1].value, &base, &sqnr)
                     : nl_errcode();
    const nl_param *b = nl_module_param(f, "bias");
    if (st == NL_OK && b) st = nl_copy(nl_module_param(q, "bias")->value, b->value);
    if (st != NL_OK) {
        nl_module_release(q);
        return NULL;
    }
    nl_tensor_f32(q->params[2].value)[0] = (float)base;
    nl_tensor_f32(q->params[2].value)[1] = (float)sqnr;
    return q;
}

static nl_module *int4_on_host(nl_module *net, int group)
{
    if (!net || group < 1) {
        nl_seterr(NL_EINVAL, "quant.int4: needs a network and group >= 1, got %d", group);
        return NULL;
    }
    const bool seq = is_type(net, &nl_sequential_type);
    nl_module **kids = seq ? net->children : &net;
    const int nk = seq ? net->nchildren : 1;
    nl_module *out = nl_module_new(&nl_sequential_type, NULL);
    nl_status st = out ? NL_OK : nl_errcode();
    for (int i = 0; i < nk && st == NL_OK; i++) {
        nl_module *k = kids[i];
        const bool w = is_type(k, &nl_conv2d_type) || is_type(k, &nl_linear_type);
        st = append(out, w ? int4_layer(k, group) : nl_module_clone(k));
    }
    if (st != NL_OK) {
        nl_module_release(out);
        return NULL;
    }
    nl_module_train(out, false);
    return out;
}

/* An empty f32 tensor the shape of m's weight ([O, in, k, k], or [O, in] for a linear layer), with
 * *q8 (8 bits, else 4) and *K = in * k * k; NULL with an error when m has no quantized weights. */
static nl_tensor *quant_weight_like(nl_module *m, bool *q8, int64_t *K)
{
    *q8 = m && (is_type(m, &nl_qconv2d_type) || is_type(m, &nl_qlinear_type));
    const bool q4 = m && (is_type(m, &nl_int4conv2d_type) || is_type(m, &nl_int4linear_type));
    if (!*q8 && !q4) {
        nl_seterr(NL_EINVAL, "quant: %s has no quantized weights", m ? m->type->name : "nothing");
        return NULL;
    }
    const bool conv = is_type(m, &nl_qconv2d_type) || is_type(m, &nl_int4conv2d_type);
    const int64_t O = (int64_t)m->args[1], in = (int64_t)m->args[0], k = conv ? (int64_t)m->args[2] : 1;
    *K = in * k * k;
    return nl_tensor_empty(NL_F32, conv ? 4 : 2, (int64_t[]){O, in, k, k}, NL_CPU);
}

nl_tensor *nl_quant_weights_f32(nl_module *m)
{
    bool q8;
    int64_t K;
    nl_tensor *w = quant_weight_like(m, &q8, &K);
    if (!w) return NULL;
    const int64_t O = w->shape[0];
    nl_tensor *w2 = nl_tensor_reshape(w, 2, (int64_t[]){O, K});
    nl_status st = w2 ? NL_OK : nl_errcode();
    if (st == NL_OK && q8) {
        const int8_t *qd = nl_tensor_data(m->params[0].value);
        const float *sd = nl_tensor_f32(m->params[1].value);
        for (int64_t i = 0; i < O * K; i++) nl_tensor_f32(w)[i] = sd[i / K] * qd[i];
    } else if (st == NL_OK) {
        nl_op op = {.code = NL_OP_INT4_DEQUANT, .dst = w2, .src = {m->params[0].value, m->params[1].value},
                    .i = {(int)m->args[w->ndim == 4 ? 6 : 3]}, .f = {nl_tensor_f32(m->params[2].value)[0]}};
        st = nl_op_exec(&op);
    }
    nl_tensor_release(w2);
    if (st != NL_OK) {
        nl_tensor_release(w);
        return NULL;
    }
    return w;
}

nl_tensor *nl_quant_levels(nl_module *m, int *qmin, int *qmax)
{
    bool q8;
    int64_t K;
    nl_tensor *w = quant_weight_like(m, &q8, &K);
    if (!w) return NULL;
    const int64_t O = w->shape[0];
    float *wd = nl_tensor_f32(w);
    const uint8_t *pd = nl_tensor_data(m->params[0].value);
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < K; i++) {
            if (q8) {
                wd[o * K + i] = (float)((const int8_t *)pd)[o * K + i];
            } else {
                const uint8_t byte = pd[o * ((K + 1) / 2) + i / 2];
                wd[o * K + i] = (float)((i % 2 ? byte >> 4 : byte & 15) - 8);
            }
        }
    if (qmin) *qmin = q8 ? -128 : -8;
    if (qmax) *qmax = q8 ? 127 : 7;
    return w;
}

/* ---------------------------------------------------------------- reports --------------- */

static void report_into(nl_module *m, const char *path, nl_quant_row *rows, int max, int *n)
{
    const bool qw = is_type(m, &nl_qconv2d_type) || is_type(m, &nl_qlinear_type);
    const bool qa = is_type(m, &nl_quantize_type) || is_type(m, &nl_dequantize_type);
    const bool q4 = is_type(m, &nl_int4conv2d_type) || is_type(m, &nl_int4linear_type);
    if (q4) {
        const nl_tensor *c = m->params[1].value;
        const uint8_t *cd = nl_tensor_data(c);
        const float *qp = nl_tensor_f32(m->params[2].value);
        nl_quant_row r = {.bits = 4, .wscale_min = INFINITY, .wsqnr = qp[1], .asqnr = NAN};
        snprintf(r.path, sizeof r.path, "%s", path);
        snprintf(r.type, sizeof r.type, "%s", m->type->name);
        for (int64_t i = 0; i < nl_tensor_numel(c); i++) {
            r.wscale_min = fmin(r.wscale_min, (double)qp[0] * cd[i]);
            r.wscale_max = fmax(r.wscale_max, (double)qp[0] * cd[i]);
        }
        if (*n < max) rows[*n] = r;
        (*n)++;
    } else if (qw || qa) {
        nl_quant_row r = {.bits = 8, .wsqnr = NAN, .asqnr = NAN};
        snprintf(r.path, sizeof r.path, "%s", path);
        snprintf(r.type, sizeof r.type, "%s", m->type->name);
        const float *qp = nl_tensor_f32(nl_module_param(m, "qparams")->value);
        if (qw) {
            const nl_tensor *s = m->params[1].value;
            const float *sd = nl_tensor_f32(s);
            r.wscale_min = INFINITY;
            for (int64_t o = 0; o < nl_tensor_numel(s); o++) {
                r.wscale_min = fmin(r.wscale_min, sd[o]);
                r.wscale_max = fmax(r.wscale_max, sd[o]);
            }
            const bool f32 = m->args[is_type(m, &nl_qconv2d_type) ? 6 : 3] != 0;
            r.in_scale = qp[QP_IN_SCALE];
            r.out_scale = f32 ? 0 : qp[QP_OUT_SCALE];
            r.wsqnr = qp[QP_W_SQNR];
            r.asqnr = qp[QP_A_SQNR];
        } else {
            r.in_scale = is_type(m, &nl_quantize_type) ? 0 : qp[0];
            r.out_scale = is_type(m, &nl_quantize_type) ? qp[0] : 0;
        }
        if (*n < max) rows[*n] = r;
        (*n)++;
    }
    for (int i = 0; i < m->nchildren; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "%s%s%d", path, *path ? "." : "", i + 1);
        report_into(m->children[i], sub, rows, max, n);
    }
}

int nl_quant_report(nl_module *net, nl_quant_row *rows, int max)
{
    int n = 0;
    report_into(net, "", rows, max, &n);
    return n;
}

/* ---------------------------------------------------------------- networks on a device -- */

/* The policy for a network on a device: quantization reads weights and activations on the host,
 * and the integer kernels exist on the CPU only, so int8 / int4 / convert work on a CPU copy of
 * the network and return a CPU network (print says so); qat returns its network on the device of
 * the one it was given. */

/* net retained when it lives on the CPU, else a copy of it there. NULL with the error set. */
static nl_module *host_network(nl_module *net)
{
    if (!net || nl_module_device(net) == NL_CPU) return nl_module_retain(net);
    nl_module *c = nl_module_clone(net);
    if (c && nl_module_to(c, NL_CPU) != NL_OK) {
        nl_module_release(c);
        return NULL;
    }
    return c;
}

nl_module *nl_quant_int8(nl_module *net, nl_tensor *const *batches, int nbatches,
                         const nl_quant_opts *opts)
{
    nl_module *h = host_network(net);
    nl_tensor **hb = calloc((size_t)(nbatches > 0 ? nbatches : 1), sizeof *hb);
    nl_module *q = NULL;
    bool ok = (h || !net) && hb;
    if (!hb) nl_seterr(NL_ENOMEM, "quant.int8: out of memory");
    for (int b = 0; ok && b < nbatches; b++) ok = (hb[b] = nl_tensor_host(batches[b])) != NULL;
    if (ok) q = int8_on_host(h, hb, nbatches, opts);
    for (int b = 0; hb && b < nbatches; b++) nl_tensor_release(hb[b]);
    free(hb);
    nl_module_release(h);
    return q;
}

nl_module *nl_quant_int4(nl_module *net, int group)
{
    nl_module *h = host_network(net);
    nl_module *q = h || !net ? int4_on_host(h, group) : NULL;
    nl_module_release(h);
    return q;
}

nl_module *nl_quant_convert(nl_module *net)
{
    nl_module *h = host_network(net);
    nl_module *q = h || !net ? convert_on_host(h) : NULL;
    nl_module_release(h);
    return q;
}

nl_module *nl_quant_qat(nl_module *net, int bits)
{
    nl_module *h = host_network(net);
    nl_module *q = h || !net ? qat_on_host(h, bits) : NULL;
    nl_module_release(h);
    if (q && nl_module_device(net) != NL_CPU && nl_module_to(q, nl_module_device(net)) != NL_OK) {
        nl_module_release(q);
        return NULL;
    }
    return q;
}
