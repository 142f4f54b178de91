/* qlayers.c: the quantized inference layers that quant.c builds: Quantize / Dequantize (f32 NCHW <->
 * u8 NHWC activations), QConv2d and QLinear (i8 weights per output channel, u8 activations, int32
 * accumulation, fused ReLU) and QMaxPool2d (max pooling on u8 directly: quantization keeps order). */
#include "layer.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The "qparams" buffer of QConv2d / QLinear: activation scales and zero points, and the SQNR (dB)
 * of the weights and of the output activations measured when the layer was quantized. */
enum { QP_IN_SCALE, QP_IN_ZP, QP_OUT_SCALE, QP_OUT_ZP, QP_W_SQNR, QP_A_SQNR, QP_COUNT };

/* Adds a buffer (no gradient) of this dtype and shape filled with v. */
static nl_status add_buffer(nl_module *m, const char *name, nl_dtype dt, int ndim,
                            const int64_t *shape, double v)
{
    nl_tensor *t = nl_tensor_empty(dt, ndim, shape, NL_CPU);
    nl_status st = t ? nl_fill(t, v) : nl_errcode();
    if (st == NL_OK) st = nl_module_add_param(m, name, t, false);
    nl_tensor_release(t);
    return st;
}

/* NL_EINVAL unless (scale, zero point) is a usable affine u8 quantization. */
static nl_status check_affine(const nl_module *m, const char *what, double scale, double zp)
{
    if (!(scale > 0 && isfinite(scale)) || !(zp >= 0 && zp <= 255 && zp == floor(zp)))
        return nl_seterr(NL_EINVAL, "%s: bad %s quantization: scale %g, zero point %g (need scale > 0, "
                         "a whole zero point in 0..255)", m->type->name, what, scale, zp);
    return NL_OK;
}

static nl_status need_u8(const nl_module *m, const nl_tensor *x)
{
    if (x->dtype != NL_U8)
        return nl_seterr(NL_ETYPE, "%s: input must be u8 activations (NHWC, from a Quantize or a "
                         "quantized layer), got %s", m->type->name, nl_dtype_info(x->dtype)->name);
    return NL_OK;
}

static nl_status inference_only(nl_module *m, nl_tensor *gy NL_UNUSED, nl_tensor **gx NL_UNUSED)
{
    return nl_seterr(NL_EUNSUPPORTED, "%s: quantized layers are for inference only (train with "
                     "quant.qat, then quant.convert)", m->type->name);
}

/* ---------------------------------------------------------------- Quantize / Dequantize - */

/* qparams [2]: scale, zero point. */
static nl_status affine_init(nl_module *m)
{
    nl_status st = add_buffer(m, "qparams", NL_F32, 1, (int64_t[]){2}, 0);
    if (st == NL_OK) nl_tensor_f32(m->params[0].value)[0] = 1;
    return st;
}

extern const nl_module_type nl_quantize_type;

/* Quantize: [N, C, H, W] -> [N, H, W, C] (and back for Dequantize); 2-D [N, K] stays. */
static nl_status affine_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                              int64_t *out, int64_t *macs)
{
    if (ndim != 2 && ndim != 4)
        return nl_layer_shape_error(m, ndim, in, "expected [N, C, H, W] or [N, K]");
    const bool to_nhwc = m->type == &nl_quantize_type;
    out[0] = in[0];
    if (ndim == 2) out[1] = in[1];
    else
        for (int d = 1; d < 4; d++) out[d] = to_nhwc ? in[d % 3 + 1] : in[(d + 1) % 3 + 1];
    *out_ndim = ndim;
    *macs = 0;
    return NL_OK;
}

static nl_status affine_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    const bool quant = m->type == &nl_quantize_type;
    const float *qp = nl_tensor_f32(m->params[0].value);
    nl_status st = check_affine(m, "activation", qp[0], qp[1]);
    if (st == NL_OK && !quant) st = need_u8(m, x);
    int nd = 0;
    int64_t shape[NL_MAX_DIMS], macs;
    if (st == NL_OK) st = affine_infer(m, x->ndim, x->shape, &nd, shape, &macs);
    if (st != NL_OK) return st;
    nl_tensor *out = nl_module_output_buffer(m, quant ? NL_U8 : NL_F32, nd, shape, nl_tensor_device(x));
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_QUANTIZE, .dst = out, .src = {x}, .f = {qp[0], qp[1]}};
    if ((st = nl_op_exec(&op)) != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

const nl_module_type nl_quantize_type = {
    .name = "Quantize",
    .sig = "nn.Quantize()",
    .doc = "f32 [N, C, H, W] -> u8 [N, H, W, C] activations: q = round(x / scale) + zero_point "
           "(qparams = {scale, zero_point}); the entry of a quantized network.",
    .example = "nn.Quantize()",
    .init = affine_init,
    .forward = affine_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = affine_infer,
};

const nl_module_type nl_dequantize_type = {
    .name = "Dequantize",
    .sig = "nn.Dequantize()",
    .doc = "u8 [N, H, W, C] activations -> f32 [N, C, H, W]: x = scale * (q - zero_point).",
    .example = "nn.Dequantize()",
    .init = affine_init,
    .forward = affine_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = affine_infer,
    .any_input_dtype = true,
};

/* ---------------------------------------------------------------- QConv2d / QLinear ----- */

extern const nl_module_type nl_qconv2d_type;
static bool is_conv(const nl_module *m) { return m->type == &nl_qconv2d_type; }

enum { CA_IN, CA_OUT, CA_K, CA_STRIDE, CA_PADDING, CA_RELU, CA_F32, CA_POOL }; /* QConv2d */
enum { LA_IN, LA_OUT, LA_RELU, LA_F32 };                              /* QLinear */

static bool arg_relu(const nl_module *m) { return m->args[is_conv(m) ? CA_RELU : LA_RELU] != 0; }
static bool arg_f32(const nl_module *m) { return m->args[is_conv(m) ? CA_F32 : LA_F32] != 0; }

/* weight i8 [out, in, k, k] (QLinear: [out, in]), weight_scale f32 [out], bias f32 [out],
 * qparams f32 [6]. */
static nl_status qlayer_init(nl_module *m)
{
    const bool conv = is_conv(m);
    const int64_t in = (int64_t)m->args[conv ? CA_IN : LA_IN], out = (int64_t)m->args[conv ? CA_OUT : LA_OUT];
    const int64_t k = conv ? (int64_t)m->args[CA_K] : 1;
    if (conv && m->args[CA_POOL] > 3)
        return nl_seterr(NL_EINVAL, "QConv2d: a fused pool is at most 3x3, got pool=%g", m->args[CA_POOL]);
    nl_status st = add_buffer(m, "weight", NL_I8, conv ? 4 : 2, (int64_t[]){out, in, k, k}, 0);
    if (st == NL_OK) st = add_buffer(m, "weight_scale", NL_F32, 1, (int64_t[]){out}, 1);
    if (st == NL_OK) st = add_buffer(m, "bias", NL_F32, 1, (int64_t[]){out}, 0);
    if (st == NL_OK) st = add_buffer(m, "qparams", NL_F32, 1, (int64_t[]){QP_COUNT}, 0);
    if (st == NL_OK) {
        float *qp = nl_tensor_f32(m->params[3].value);
        qp[QP_IN_SCALE] = qp[QP_OUT_SCALE] = 1;
        qp[QP_W_SQNR] = qp[QP_A_SQNR] = NAN;
    }
    return st;
}

/* QConv2d: u8 [N, H, W, C] -> u8 [N, OH, OW, O] or (f32 output) f32 [N, O, OH, OW]. */
static nl_status qconv_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                             int64_t *out, int64_t *macs)
{
    const int64_t c = (int64_t)m->args[CA_IN], o = (int64_t)m->args[CA_OUT], k = (int64_t)m->args[CA_K],
                  s = (int64_t)m->args[CA_STRIDE], p = (int64_t)m->args[CA_PADDING];
    if (ndim != 4)
        return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, H, W, %lld]", (long long)c);
    if (in[3] != c)
        return nl_layer_shape_error(m, ndim, in, "input has %lld channels (last dimension), expected %lld",
                                    (long long)in[3], (long long)c);
    if (in[1] + 2 * p < k || in[2] + 2 * p < k)
        return nl_layer_shape_error(m, ndim, in, "input is smaller than the %lldx%lld kernel",
                                    (long long)k, (long long)k);
    const int64_t pool = m->args[CA_POOL] > 1 ? (int64_t)m->args[CA_POOL] : 1;
    const int64_t ch = (in[1] + 2 * p - k) / s + 1, cw = (in[2] + 2 * p - k) / s + 1;
    if (ch < pool || cw < pool)
        return nl_layer_shape_error(m, ndim, in, "output %lldx%lld is smaller than the %lldx%lld pool",
                                    (long long)ch, (long long)cw, (long long)pool, (long long)pool);
    const int64_t oh = ch / pool, ow = cw / pool;
    const bool f32 = arg_f32(m);
    out[0] = in[0];
    out[f32 ? 1 : 3] = o;
    out[f32 ? 2 : 1] = oh;
    out[f32 ? 3 : 2] = ow;
    *out_ndim = 4;
    *macs = in[0] * ch * cw * o * c * k * k;
    return NL_OK;
}

/* QLinear: u8 [N, ...] with in elements after N (a flattened NHWC map included) -> [N, out]. */
static nl_status qlinear_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                               int64_t *out, int64_t *macs)
{
    const int64_t fin = (int64_t)m->args[LA_IN], fout = (int64_t)m->args[LA_OUT];
    int64_t rest = 1;
    for (int d = 1; d < ndim; d++) rest *= in[d];
    if (ndim < 2 || rest != fin)
        return nl_layer_shape_error(m, ndim, in, "expected an input [N, ...] of %lld features per row",
                                    (long long)fin);
    out[0] = in[0];
    out[1] = fout;
    *out_ndim = 2;
    *macs = in[0] * fin * fout;
    return NL_OK;
}

static nl_status qlayer_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    const bool conv = is_conv(m), f32 = arg_f32(m);
    const float *qp = nl_tensor_f32(m->params[3].value);
    nl_status st = need_u8(m, x);
    if (st == NL_OK) st = check_affine(m, "input", qp[QP_IN_SCALE], qp[QP_IN_ZP]);
    if (st == NL_OK && !f32) st = check_affine(m, "output", qp[QP_OUT_SCALE], qp[QP_OUT_ZP]);
    int nd;
    int64_t shape[NL_MAX_DIMS], macs;
    if (st == NL_OK) st = m->type->infer(m, x->ndim, x->shape, &nd, shape, &macs);
    if (st != NL_OK) return st;
    nl_tensor *w = m->params[0].value;
    const int64_t fin = w->shape[1], fout = w->shape[0];
    /* A linear layer is the 1x1 convolution of [N, 1, 1, in]. */
    nl_tensor *xv = conv ? nl_tensor_retain(x) : nl_tensor_reshape(x, 4, (int64_t[]){x->shape[0], 1, 1, fin});
    nl_tensor *wv = conv ? nl_tensor_retain(w) : nl_tensor_reshape(w, 4, (int64_t[]){fout, fin, 1, 1});
    nl_tensor *out = xv && wv ? nl_module_output_buffer(m, f32 ? NL_F32 : NL_U8, nd, shape,
                                                        nl_tensor_device(x)) : NULL;
    st = out ? NL_OK : nl_errcode();
    if (st == NL_OK) {
        nl_op op = {.code = NL_OP_QCONV2D, .dst = out,
                    .src = {xv, wv, m->params[1].value, m->params[2].value},
                    .i = {conv ? (int)m->args[CA_STRIDE] : 1, conv ? (int)m->args[CA_PADDING] : 0,
                          arg_relu(m), conv ? (int)m->args[CA_POOL] : 0},
                    .f = {qp[QP_IN_SCALE], qp[QP_IN_ZP], qp[QP_OUT_SCALE], qp[QP_OUT_ZP]}};
        st = nl_op_exec(&op);
    }
    nl_tensor_release(xv);
    nl_tensor_release(wv);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

const nl_module_type nl_qconv2d_type = {
    .name = "QConv2d",
    .sig = "nn.QConv2d(in, out, k, {stride=1, padding=0, relu=false, f32=false, pool=0})",
    .doc = "An int8 convolution on u8 NHWC activations (i8 weights per output channel, int32 sums, "
           "AVX-512 VNNI); output u8 NHWC, or f32 NCHW with f32=true; pool=k fuses a k x k max "
           "pool of stride k after it (k up to 3). Made by quant.int8.",
    .example = "nn.QConv2d(3, 32, 3, {padding=1, relu=true})",
    .npos = 3,
    .args = {
        NL_ARGS_CONV,
        {.name = "relu", .def = 0, .integer = true, .boolean = true, .doc = "fused ReLU"},
        {.name = "f32", .def = 0, .integer = true, .boolean = true,
         .doc = "dequantized f32 NCHW output (the network's last quantized layer)"},
        {.name = "pool", .def = 0, .integer = true, .min = 0,
         .doc = "a fused k x k max pool of stride k (0: none)"},
    },
    .init = qlayer_init,
    .forward = qlayer_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = qconv_infer,
    .any_input_dtype = true,
};

const nl_module_type nl_qlinear_type = {
    .name = "QLinear",
    .sig = "nn.QLinear(in, out, {relu=false, f32=false})",
    .doc = "An int8 fully connected layer on u8 activations [N, ...] (flattens them itself); output "
           "u8, or f32 with f32=true. Made by quant.int8.",
    .example = "nn.QLinear(4096, 10, {f32=true})",
    .npos = 2,
    .args = {
        NL_ARGS_FEATURES,
        {.name = "relu", .def = 0, .integer = true, .boolean = true, .doc = "fused ReLU"},
        {.name = "f32", .def = 0, .integer = true, .boolean = true,
         .doc = "dequantized f32 output (the network's last quantized layer)"},
    },
    .init = qlayer_init,
    .forward = qlayer_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = qlinear_infer,
    .any_input_dtype = true,
};

/* ---------------------------------------------------------------- QMaxPool2d ------------ */

enum { PA_K, PA_STRIDE, PA_PADDING };

static nl_status qpool_init(nl_module *m)
{
    if (isnan(m->args[PA_STRIDE])) m->args[PA_STRIDE] = m->args[PA_K];
    if (m->args[PA_PADDING] > floor(m->args[PA_K] / 2))
        return nl_seterr(NL_EINVAL, "QMaxPool2d: padding must be at most half the kernel size");
    return NL_OK;
}

static nl_status qpool_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                             int64_t *out, int64_t *macs)
{
    const int64_t k = (int64_t)m->args[PA_K], s = (int64_t)m->args[PA_STRIDE],
                  p = (int64_t)m->args[PA_PADDING];
    if (ndim != 4) return nl_layer_shape_error(m, ndim, in, "expected a 4-D input [N, H, W, C]");
    if (in[1] + 2 * p < k || in[2] + 2 * p < k)
        return nl_layer_shape_error(m, ndim, in, "input is smaller than the %lldx%lld window",
                                    (long long)k, (long long)k);
    out[0] = in[0];
    out[1] = (in[1] + 2 * p - k) / s + 1;
    out[2] = (in[2] + 2 * p - k) / s + 1;
    out[3] = in[3];
    *out_ndim = 4;
    *macs = 0;
    return NL_OK;
}

static nl_status qpool_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    int nd;
    int64_t shape[NL_MAX_DIMS], macs;
    nl_status st = need_u8(m, x);
    if (st == NL_OK) st = qpool_infer(m, x->ndim, x->shape, &nd, shape, &macs);
    if (st != NL_OK) return st;
    nl_tensor *out = nl_module_output_buffer(m, NL_U8, nd, shape, nl_tensor_device(x));
    if (!out) return nl_errcode();
    nl_op op = {.code = NL_OP_QPOOL2D, .dst = out, .src = {x},
                .i = {0, (int)m->args[PA_K], (int)m->args[PA_STRIDE], (int)m->args[PA_PADDING]}};
    if ((st = nl_op_exec(&op)) != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

const nl_module_type nl_qmaxpool2d_type = {
    .name = "QMaxPool2d",
    .sig = "nn.QMaxPool2d(k, {stride=k, padding=0})",
    .doc = "Max pooling of u8 NHWC activations (exact: quantization preserves order).",
    .example = "nn.QMaxPool2d(2)",
    .npos = 1,
    .args = {
        NL_ARGS_WINDOW,
    },
    .init = qpool_init,
    .forward = qpool_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = qpool_infer,
    .any_input_dtype = true,
};

/* ---------------------------------------------------------------- Int4Linear / Int4Conv2d */

/* Weight-only 4-bit layers: the weight rows (K = in*k*k values each) as nibbles q + 8 with q in
 * -8..7, two to a byte ("weight" u8 [out, ceil(K/2)]), one scale per group of `group` values along
 * the row, itself stored as a u8 code times a per-layer base ("scale" u8 [out, ceil(K/group)],
 * "qparams" f32 [2] = {base, weight SQNR in dB}), the bias in f32. The forward is one op
 * (NL_OP_INT4_LINEAR / NL_OP_INT4_CONV2D) that dequantizes a small block of rows at a time inside
 * the kernel: no f32 copy of the weights is kept or made. */
extern const nl_module_type nl_int4conv2d_type, nl_linear_type, nl_conv2d_type;

static bool is_int4conv(const nl_module *m) { return m->type == &nl_int4conv2d_type; }
static const nl_module_type *int4_float_type(const nl_module *m)
{
    return is_int4conv(m) ? &nl_conv2d_type : &nl_linear_type;
}
static int int4_group_arg(const nl_module *m) { return is_int4conv(m) ? 6 : 3; }

static nl_status int4_init(nl_module *m)
{
    const bool conv = is_int4conv(m);
    const int64_t in = (int64_t)m->args[0], out = (int64_t)m->args[1],
                  k = conv ? (int64_t)m->args[2] : 1, K = in * k * k,
                  group = (int64_t)m->args[int4_group_arg(m)];
    const bool bias = m->args[conv ? 5 : 2] != 0;
    nl_status st = add_buffer(m, "weight", NL_U8, 2, (int64_t[]){out, (K + 1) / 2}, 0x88);
    if (st == NL_OK) st = add_buffer(m, "scale", NL_U8, 2, (int64_t[]){out, (K + group - 1) / group}, 1);
    if (st == NL_OK) st = add_buffer(m, "qparams", NL_F32, 1, (int64_t[]){2}, 1);
    if (st == NL_OK && bias) st = add_buffer(m, "bias", NL_F32, 1, (int64_t[]){out}, 0);
    if (st == NL_OK) nl_tensor_f32(m->params[2].value)[1] = NAN;
    return st;
}

static nl_status int4_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                            int64_t *out, int64_t *macs)
{
    return int4_float_type(m)->infer(m, ndim, in, out_ndim, out, macs); /* same leading arguments */
}

static nl_status int4_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    const bool conv = is_int4conv(m);
    const float base = nl_tensor_f32(m->params[2].value)[0];
    if (!(base > 0 && isfinite(base)))
        return nl_seterr(NL_EINVAL, "%s: bad scale base %g (must be > 0)", m->type->name, base);
    int nd;
    int64_t shape[NL_MAX_DIMS], macs;
    nl_status st = int4_infer(m, x->ndim, x->shape, &nd, shape, &macs);
    if (st != NL_OK) return st;
    const int64_t fin = (int64_t)m->args[0], fout = (int64_t)m->args[1];
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, nd, shape, nl_tensor_device(x));
    nl_tensor *xc = out ? nl_tensor_contiguous(x) : NULL;
    /* a Linear's input [..., in] is the matrix [rows, in], its output [rows, out] */
    nl_tensor *x2 = !xc ? NULL : conv ? nl_tensor_retain(xc) : nl_tensor_reshape(xc, 2, (int64_t[]){-1, fin});
    nl_tensor *y2 = !x2 ? NULL : conv ? nl_tensor_retain(out) : nl_tensor_reshape(out, 2, (int64_t[]){-1, fout});
    const nl_param *b = nl_module_param(m, "bias");
    if (y2) {
        nl_op op = {.code = conv ? NL_OP_INT4_CONV2D : NL_OP_INT4_LINEAR, .dst = y2,
                    .src = {x2, m->params[0].value, m->params[1].value, b ? b->value : NULL},
                    .i = {(int)m->args[int4_group_arg(m)], conv ? (int)m->args[2] : 1,
                          conv ? (int)m->args[3] : 1, conv ? (int)m->args[4] : 0},
                    .f = {base}};
        st = nl_op_exec(&op);
    } else {
        st = nl_errcode();
    }
    nl_tensor_release(xc);
    nl_tensor_release(x2);
    nl_tensor_release(y2);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

const nl_module_type nl_int4linear_type = {
    .name = "Int4Linear",
    .sig = "nn.Int4Linear(in, out, {bias=true, group=32})",
    .doc = "A fully connected layer with 4-bit weights (a scale per group of inputs), dequantized in "
           "the kernel a few rows at a time (no f32 copy of the weights). Made by quant.int4.",
    .example = "nn.Int4Linear(4096, 10)",
    .npos = 2,
    .args = {
        NL_ARGS_FEATURES,
        NL_ARG_BIAS,
        {.name = "group", .def = 32, .integer = true, .min = 1, .doc = "weights per scale"},
    },
    .init = int4_init,
    .forward = int4_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = int4_infer,
};

const nl_module_type nl_int4conv2d_type = {
    .name = "Int4Conv2d",
    .sig = "nn.Int4Conv2d(in, out, k, {stride=1, padding=0, bias=true, group=32})",
    .doc = "A convolution with 4-bit weights (a scale per group of a filter's in*k*k values), "
           "dequantized in the kernel a few rows at a time (no f32 copy of the weights). Made by "
           "quant.int4.",
    .example = "nn.Int4Conv2d(3, 32, 3, {padding=1})",
    .npos = 3,
    .args = {
        NL_ARGS_CONV,
        NL_ARG_BIAS,
        {.name = "group", .def = 32, .integer = true, .min = 1, .doc = "weights per scale"},
    },
    .init = int4_init,
    .forward = int4_forward,
    .backward = inference_only,
    .cpu_only = true,
    .infer = int4_infer,
};

/* ---------------------------------------------------------------- quantization-aware training */

/* FakeQuant(bits): rounds activations to the u8-style affine grid of `bits` bits over the range
 * observed in training mode (running min / max, buffer "range" = {lo, hi, observed}); in
 * evaluation mode the range is frozen (an unobserved one passes x through). Backward: the
 * straight-through estimator (gradient kept where x falls inside the grid, zero outside). */
enum { FQ_BITS };

static nl_status fq_init(nl_module *m) { return add_buffer(m, "range", NL_F32, 1, (int64_t[]){3}, 0); }

static nl_status fq_infer(const nl_module *m NL_UNUSED, int ndim, const int64_t *in, int *out_ndim,
                          int64_t *out, int64_t *macs)
{
    memcpy(out, in, (size_t)ndim * sizeof *in);
    *out_ndim = ndim;
    *macs = 0;
    return NL_OK;
}

/* The op of m's current quantization for the range r (the caller fills dst and src). */
static nl_op fq_op(const nl_module *m, const float *r)
{
    double scale, zp;
    nl_quant_affine_bits(r[0], r[1], (int)m->args[FQ_BITS], &scale, &zp);
    return (nl_op){.code = NL_OP_FAKEQUANT, .f = {scale, zp, 0, ldexp(1, (int)m->args[FQ_BITS]) - 1}};
}

/* The range {lo, hi, observed} on the host (one small copy from a device). */
static nl_status fq_range(const nl_module *m, float r[3])
{
    return nl_tensor_get_data(m->params[0].value, r, 0, 3);
}

static nl_status fq_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    float r[3];
    nl_status rs = fq_range(m, r);
    if (rs != NL_OK) return rs;
    if (m->training) {
        nl_tensor *lo = nl_reduce_new(NL_RED_MIN, x, -1, false), *hi = nl_reduce_new(NL_RED_MAX, x, -1, false);
        double l = 0, h = 0;
        rs = lo && hi ? NL_OK : nl_errcode();
        if (rs == NL_OK && nl_tensor_numel(x) > 0 && (rs = nl_tensor_item(lo, &l)) == NL_OK &&
            (rs = nl_tensor_item(hi, &h)) == NL_OK) {
            r[0] = r[2] != 0 && r[0] < (float)l ? r[0] : (float)l;
            r[1] = r[2] != 0 && r[1] > (float)h ? r[1] : (float)h;
            r[2] = 1;
            rs = nl_tensor_set_data(m->params[0].value, r, 0, 3);
        }
        nl_tensor_release(lo);
        nl_tensor_release(hi);
        if (rs != NL_OK) return rs;
    }
    if (r[2] == 0) {
        *y = nl_tensor_retain(x);
        return NL_OK;
    }
    nl_tensor *out = nl_module_output_buffer(m, NL_F32, x->ndim, x->shape, nl_tensor_device(x));
    if (!out) return nl_errcode();
    nl_op op = fq_op(m, r);
    op.dst = out;
    op.src[0] = x;
    nl_status st = nl_op_exec(&op);
    if (st != NL_OK) {
        nl_tensor_release(out);
        return st;
    }
    *y = out;
    return NL_OK;
}

static nl_status fq_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    float r[3];
    nl_status rs = fq_range(m, r);
    if (rs != NL_OK) return rs;
    if (r[2] == 0) {
        *gx = nl_tensor_retain(gy);
        return NL_OK;
    }
    nl_op op = fq_op(m, r);
    op.dst = nl_tensor_empty_like(gy);
    op.src[0] = m->input;
    op.src[2] = gy;
    nl_status st = op.dst ? nl_op_exec(&op) : nl_errcode();
    if (st != NL_OK) {
        nl_tensor_release(op.dst);
        return st;
    }
    *gx = op.dst;
    return NL_OK;
}

const nl_module_type nl_fakequant_type = {
    .name = "FakeQuant",
    .sig = "nn.FakeQuant({bits=8})",
    .doc = "Rounds activations to a bits-bit affine grid over the range seen in training (straight-"
           "through gradient inside the range, zero outside). Inserted by quant.qat.",
    .example = "nn.FakeQuant()",
    .args = {
        {.name = "bits", .def = 8, .integer = true, .min = 2, .doc = "bits of the grid (2..8)"},
    },
    .init = fq_init,
    .forward = fq_forward,
    .backward = fq_backward,
    .infer = fq_infer,
};

/* QATConv2d / QATLinear: the float layer's arguments (then bits) and parameters; each forward
 * runs the f32 twin in the state on the weights fake-quantized per output channel (symmetric,
 * scale max|w_o| / (2^(bits-1) - 1), the rounding of nl_quant_weights_i8), and backward hands
 * the twin's weight gradient straight through to the weights. */
extern const nl_module_type nl_qatconv2d_type;

typedef struct {
    nl_module *twin;
    nl_tensor *scales;
} qat_state;

static bool is_qatconv(const nl_module *m) { return m->type == &nl_qatconv2d_type; }
static const nl_module_type *qat_float_type(const nl_module *m)
{
    return is_qatconv(m) ? &nl_conv2d_type : &nl_linear_type;
}
static int qat_bits(const nl_module *m) { return (int)m->args[is_qatconv(m) ? 6 : 3]; }

static nl_status qat_init(nl_module *m)
{
    qat_state *s = calloc(1, sizeof *s);
    if (!(m->state = s)) return nl_seterr(NL_ENOMEM, "%s: out of memory", m->type->name);
    if (qat_bits(m) > 8) return nl_seterr(NL_EINVAL, "%s: bits must be at most 8", m->type->name);
    nl_module *f = nl_module_new(qat_float_type(m), m->args); /* draws the weights, as the layer */
    if (!f) return nl_errcode();
    s->twin = f;
    nl_status st = NL_OK;
    for (int i = 0; i < f->nparams && st == NL_OK; i++) {
        nl_tensor *v = nl_tensor_clone(f->params[i].value);
        st = v ? nl_module_add_param(m, f->params[i].name, v, true) : nl_errcode();
        nl_tensor_release(v);
    }
    if (st == NL_OK && !(s->scales = nl_tensor_empty(NL_F32, 1, (int64_t[]){(int64_t)m->args[1]}, NL_CPU)))
        st = nl_errcode();
    return st;
}

static void qat_destroy(nl_module *m)
{
    qat_state *s = m->state;
    if (!s) return;
    nl_module_release(s->twin);
    nl_tensor_release(s->scales);
    free(s);
}

static nl_status qat_to(nl_module *m, nl_device dev)
{
    qat_state *s = m->state;
    nl_status st = nl_module_to(s->twin, dev);
    return st == NL_OK ? nl_tensor_move(&s->scales, dev) : st;
}

static nl_status qat_infer(const nl_module *m, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out, int64_t *macs)
{
    return qat_float_type(m)->infer(m, ndim, in, out_ndim, out, macs);
}

/* scales[o] = max|w[o]| / qmax (1 for an all-zero row), with ops on the weights' device:
 * a / qmax + (a == 0) gives exactly a / qmax, or 1 where a is 0. */
static nl_status qat_scales(nl_tensor *scales, nl_tensor *w, float qmax)
{
    const int64_t O = w->shape[0];
    nl_tensor *rows = nl_tensor_reshape(w, 2, (int64_t[]){O, -1});
    nl_tensor *a = rows ? nl_unary_new(NL_UN_ABS, rows) : NULL;
    nl_tensor *amax = a ? nl_reduce_new(NL_RED_MAX, a, 1, false) : NULL;
    nl_tensor *zero = amax ? nl_binary_scalar_new(NL_BIN_EQ, amax, 0, false) : NULL;
    nl_status st = zero ? nl_binary_scalar(NL_BIN_DIV, scales, amax, qmax, false) : nl_errcode();
    if (st == NL_OK) st = nl_binary(NL_BIN_ADD, scales, scales, zero);
    nl_tensor_release(rows);
    nl_tensor_release(a);
    nl_tensor_release(amax);
    nl_tensor_release(zero);
    return st;
}

static nl_status qat_forward(nl_module *m, nl_tensor *x, nl_tensor **y)
{
    qat_state *s = m->state;
    nl_tensor *w = m->params[0].value;
    const float qmax = (float)(ldexp(1, qat_bits(m) - 1) - 1);
    nl_status st = qat_scales(s->scales, w, qmax);
    nl_op op = {.code = NL_OP_FAKEQUANT, .dst = s->twin->params[0].value, .src = {w, s->scales},
                .f = {0, 0, -qmax, qmax}};
    if (st == NL_OK) st = nl_op_exec(&op);
    for (int i = 1; i < m->nparams && st == NL_OK; i++) st = nl_copy(s->twin->params[i].value, m->params[i].value);
    s->twin->training = m->training;
    return st == NL_OK ? nl_module_forward(s->twin, x, y) : st;
}

static nl_status qat_backward(nl_module *m, nl_tensor *gy, nl_tensor **gx)
{
    qat_state *s = m->state;
    nl_status st = nl_module_zero_grad(s->twin);
    if (st == NL_OK) st = nl_module_backward(s->twin, gy, gx);
    for (int i = 0; i < m->nparams && st == NL_OK; i++)
        st = nl_binary(NL_BIN_ADD, m->params[i].grad, m->params[i].grad, s->twin->params[i].grad);
    return st;
}

const nl_module_type nl_qatlinear_type = {
    .name = "QATLinear",
    .sig = "nn.QATLinear(in, out, {bias=true, bits=8})",
    .doc = "A Linear trained with its weights fake-quantized per output channel (straight-through "
           "gradient). Made by quant.qat; quant.convert turns it into a QLinear.",
    .example = "nn.QATLinear(4096, 10)",
    .npos = 2,
    .args = {
        NL_ARGS_FEATURES,
        NL_ARG_BIAS,
        {.name = "bits", .def = 8, .integer = true, .min = 2, .doc = "weight bits (2..8)"},
    },
    .init = qat_init,
    .forward = qat_forward,
    .backward = qat_backward,
    .infer = qat_infer,
    .destroy = qat_destroy,
    .to = qat_to,
    .input_grad_optional = true,
};

const nl_module_type nl_qatconv2d_type = {
    .name = "QATConv2d",
    .sig = "nn.QATConv2d(in, out, k, {stride=1, padding=0, bias=true, bits=8})",
    .doc = "A Conv2d trained with its weights fake-quantized per output channel (straight-through "
           "gradient). Made by quant.qat; quant.convert turns it into a QConv2d.",
    .example = "nn.QATConv2d(3, 32, 3, {padding=1})",
    .npos = 3,
    .args = {
        NL_ARGS_CONV,
        NL_ARG_BIAS,
        {.name = "bits", .def = 8, .integer = true, .min = 2, .doc = "weight bits (2..8)"},
    },
    .init = qat_init,
    .forward = qat_forward,
    .backward = qat_backward,
    .infer = qat_infer,
    .destroy = qat_destroy,
    .to = qat_to,
    .input_grad_optional = true,
};
