/* onnx_export.c: nnlab networks as ONNX models (protobuf-c messages of onnx.proto, built here and
 * packed once): float layers as their ONNX operators, quant.int8 networks as QDQ graphs
 * (QuantizeLinear / DequantizeLinear around float Conv and Gemm, per-channel weight scales, int32
 * biases) that ONNX Runtime runs with its quantized kernels, int4 layers as dequantized floats. */
#include "onnx.h"
#include "quant.h"

#include "onnx.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NAME_MAX_LEN = 512 }; /* a state_dict name, NL_MAX_DEPTH levels deep */

/* The graph being built: its nodes and initializers, and every block the messages point to (freed
 * together at the end). */
typedef struct {
    Onnx__NodeProto **nodes;
    size_t nnodes, capnodes;
    Onnx__TensorProto **inits;
    size_t ninits, capinits;
    void **blocks;
    size_t nblocks, capblocks;
    int opset;
    int counter;            /* for the names of intermediate values */
    char cur[NAME_MAX_LEN]; /* the value the next layer takes */
    bool cur_u8;            /* it holds u8 activations (between a Quantize and a float output) */
    int ndim;               /* nnlab's shape of that value (NHWC while u8) */
    int64_t shape[NL_MAX_DIMS];
} exporter;

/* Formats a name into buf (NAME_MAX_LEN bytes). */
static void nm(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nm(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, NAME_MAX_LEN, fmt, ap);
    va_end(ap);
}

static bool grow(void **v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    void *p = realloc(*v, n * elem);
    if (!p) return false;
    *v = p;
    *cap = n;
    return true;
}

/* A zeroed block owned by the exporter; NULL (error set) when out of memory. */
static void *ex_alloc(exporter *e, size_t n)
{
    if (!grow((void **)&e->blocks, &e->capblocks, e->nblocks + 1, sizeof *e->blocks))
        return nl_seterr(NL_ENOMEM, "onnx.export: out of memory"), NULL;
    void *p = calloc(1, n ? n : 1);
    if (!p) return nl_seterr(NL_ENOMEM, "onnx.export: out of memory"), NULL;
    e->blocks[e->nblocks++] = p;
    return p;
}

static char *ex_strdup(exporter *e, const char *s)
{
    char *d = ex_alloc(e, strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

static void ex_free(exporter *e)
{
    for (size_t i = 0; i < e->nblocks; i++) free(e->blocks[i]);
    free(e->blocks);
    free(e->nodes);
    free(e->inits);
}

/* A fresh value name "<base>_<n>". */
static void fresh(exporter *e, char *buf, const char *base)
{
    nm(buf, "%s_%d", base, e->counter++);
}

/* ---------------------------------------------------------------- initializers ----------- */

/* Adds an initializer named name of ONNX type dtype and shape dims, with nbytes of raw data
 * (copied). */
static nl_status add_init(exporter *e, const char *name, int dtype, int ndim, const int64_t *dims,
                          const void *data, size_t nbytes)
{
    Onnx__TensorProto *t = ex_alloc(e, sizeof *t);
    if (!t) return nl_errcode();
    onnx__tensor_proto__init(t);
    t->name = ex_strdup(e, name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t)ndim;
    t->dims = ex_alloc(e, (size_t)(ndim ? ndim : 1) * sizeof *t->dims);
    t->raw_data.data = ex_alloc(e, nbytes);
    if (!t->name || !t->dims || !t->raw_data.data) return nl_errcode();
    for (int d = 0; d < ndim; d++) t->dims[d] = dims[d];
    memcpy(t->raw_data.data, data, nbytes);
    t->raw_data.len = nbytes;
    t->has_raw_data = 1;
    if (!grow((void **)&e->inits, &e->capinits, e->ninits + 1, sizeof *e->inits))
        return nl_seterr(NL_ENOMEM, "onnx.export: out of memory");
    e->inits[e->ninits++] = t;
    return NL_OK;
}

static int onnx_dtype(nl_dtype t)
{
    switch (t) {
    case NL_F32: return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    case NL_I8: return ONNX__TENSOR_PROTO__DATA_TYPE__INT8;
    case NL_U8: return ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
    case NL_I32: return ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
    default: return ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED;
    }
}

/* An nnlab tensor (any device, any strides) as the initializer name. */
static nl_status add_tensor(exporter *e, const char *name, const nl_tensor *t)
{
    nl_tensor *h = nl_tensor_host(t);
    if (!h) return nl_errcode();
    nl_status st = add_init(e, name, onnx_dtype(h->dtype), h->ndim, h->shape, nl_tensor_data(h),
                            (size_t)nl_tensor_numel(h) * nl_dtype_info(h->dtype)->size);
    nl_tensor_release(h);
    return st;
}

/* A scalar initializer: f32 (a scale) or u8 (a zero point). */
static nl_status add_scalar_f32(exporter *e, const char *name, float v)
{
    return add_init(e, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, &v, sizeof v);
}

static nl_status add_scalar_u8(exporter *e, const char *name, double v)
{
    uint8_t b = (uint8_t)v;
    return add_init(e, name, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, 0, NULL, &b, 1);
}

/* ---------------------------------------------------------------- nodes ------------------ */

/* Adds a node of op type op with n inputs (NULL-free) and one output out, named name. Returns the
 * node (attributes are added to it), or NULL with the error set. */
static Onnx__NodeProto *add_node(exporter *e, const char *name, const char *op, int n,
                                 const char *const *in, const char *out)
{
    Onnx__NodeProto *nd = ex_alloc(e, sizeof *nd);
    if (!nd) return NULL;
    onnx__node_proto__init(nd);
    nd->name = ex_strdup(e, name);
    nd->op_type = ex_strdup(e, op);
    nd->input = ex_alloc(e, (size_t)n * sizeof *nd->input);
    nd->output = ex_alloc(e, sizeof *nd->output);
    if (!nd->name || !nd->op_type || !nd->input || !nd->output) return NULL;
    for (int i = 0; i < n; i++)
        if (!(nd->input[i] = ex_strdup(e, in[i]))) return NULL;
    nd->n_input = (size_t)n;
    if (!(nd->output[0] = ex_strdup(e, out))) return NULL;
    nd->n_output = 1;
    if (!grow((void **)&e->nodes, &e->capnodes, e->nnodes + 1, sizeof *e->nodes)) {
        nl_seterr(NL_ENOMEM, "onnx.export: out of memory");
        return NULL;
    }
    e->nodes[e->nnodes++] = nd;
    return nd;
}

static Onnx__AttributeProto *add_attr(exporter *e, Onnx__NodeProto *nd, const char *name,
                                      Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = ex_alloc(e, sizeof *a);
    Onnx__AttributeProto **v = ex_alloc(e, (nd->n_attribute + 1) * sizeof *v);
    if (!a || !v) return NULL;
    onnx__attribute_proto__init(a);
    if (!(a->name = ex_strdup(e, name))) return NULL;
    a->has_type = 1;
    a->type = type;
    if (nd->n_attribute) memcpy(v, nd->attribute, nd->n_attribute * sizeof *v);
    v[nd->n_attribute++] = a;
    nd->attribute = v;
    return a;
}

static nl_status attr_int(exporter *e, Onnx__NodeProto *nd, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return nl_errcode();
    a->has_i = 1;
    a->i = v;
    return NL_OK;
}

static nl_status attr_float(exporter *e, Onnx__NodeProto *nd, const char *name, float v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return nl_errcode();
    a->has_f = 1;
    a->f = v;
    return NL_OK;
}

static nl_status attr_ints(exporter *e, Onnx__NodeProto *nd, const char *name, int n, const int64_t *v)
{
    Onnx__AttributeProto *a = add_attr(e, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (!a || !(a->ints = ex_alloc(e, (size_t)n * sizeof *a->ints))) return nl_errcode();
    memcpy(a->ints, v, (size_t)n * sizeof *v);
    a->n_ints = (size_t)n;
    return NL_OK;
}

/* A node on the current value (and extra inputs), whose output becomes the current value. */
static Onnx__NodeProto *chain(exporter *e, const char *prefix, const char *op, int nextra,
                              const char *const *extra)
{
    const char *in[6] = {e->cur};
    for (int i = 0; i < nextra; i++) in[i + 1] = extra[i];
    char name[NAME_MAX_LEN], out[NAME_MAX_LEN];
    nm(name, "%s%s", prefix, op);
    fresh(e, out, name);
    Onnx__NodeProto *nd = add_node(e, out, op, 1 + nextra, in, out);
    if (nd) nm(e->cur, "%s", out);
    return nd;
}

/* The window attributes of Conv, MaxPool and AveragePool: square k, stride, symmetric padding. */
static nl_status window_attrs(exporter *e, Onnx__NodeProto *nd, int64_t k, int64_t s, int64_t p)
{
    nl_status st = attr_ints(e, nd, "kernel_shape", 2, (int64_t[]){k, k});
    if (st == NL_OK) st = attr_ints(e, nd, "strides", 2, (int64_t[]){s, s});
    if (st == NL_OK) st = attr_ints(e, nd, "pads", 4, (int64_t[]){p, p, p, p});
    return st;
}

static double arg(const nl_module *m, const char *name)
{
    int i = nl_module_arg_index(m->type, name);
    return i >= 0 ? m->args[i] : NAN;
}

/* A constant tensor node (for the few constants of a formula, which are no parameters). */
static nl_status constant(exporter *e, const char *prefix, const char *what, float v, char *out)
{
    char name[NAME_MAX_LEN];
    nm(name, "%s%s", prefix, what);
    fresh(e, out, name);
    return add_scalar_f32(e, out, v);
}

/* ---------------------------------------------------------------- layers ----------------- */

typedef struct {
    char prefix[NAME_MAX_LEN]; /* the state_dict prefix: "", "3.", "2.1." */
    char path[NAME_MAX_LEN];   /* the 1-based path for messages: "3", "2.1" ("" for a lone layer) */
} where;

static nl_status refuse(const nl_module *m, const where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static nl_status refuse(const nl_module *m, const where *w, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return nl_seterr(NL_EUNSUPPORTED, "onnx.export: layer %s%s(%s) cannot be exported: %s",
                     w->path, w->path[0] ? " " : "", m->type->name, why);
}

static bool is(const nl_module *m, const char *type) { return strcmp(m->type->name, type) == 0; }

/* A parameter as an initializer under prefix + its name; its ONNX name in out. */
static nl_status param_init(exporter *e, nl_module *m, const where *w, const char *pname, char *out)
{
    nl_param *p = nl_module_param(m, pname);
    if (!p) return refuse(m, w, "it has no '%s'", pname);
    nm(out, "%s%s", w->prefix, pname);
    return add_tensor(e, out, p->value);
}

/* Conv2d / Linear (and the float forms of int4 layers: weight given). */
static nl_status float_affine(exporter *e, nl_module *m, const where *w, bool conv, nl_tensor *weight)
{
    char wname[NAME_MAX_LEN], bname[NAME_MAX_LEN];
    nm(wname, "%sweight", w->prefix);
    nl_status st = weight ? add_tensor(e, wname, weight) : param_init(e, m, w, "weight", wname);
    const bool bias = nl_module_param(m, "bias") != NULL;
    if (st == NL_OK && bias) st = param_init(e, m, w, "bias", bname);
    if (st != NL_OK) return st;
    if (!conv && e->ndim != 2)
        return refuse(m, w, "ONNX's Gemm takes 2-D inputs [N, features], this one is %d-D", e->ndim);
    const char *extra[] = {wname, bname};
    Onnx__NodeProto *nd = chain(e, w->prefix, conv ? "Conv" : "Gemm", bias ? 2 : 1, extra);
    if (!nd) return nl_errcode();
    if (!conv) return attr_int(e, nd, "transB", 1);
    return window_attrs(e, nd, (int64_t)arg(m, "k"), (int64_t)arg(m, "stride"), (int64_t)arg(m, "padding"));
}

/* Batch normalisation in evaluation form; without affine parameters, scale 1 and bias 0. */
static nl_status batchnorm(exporter *e, nl_module *m, const where *w)
{
    char in[4][NAME_MAX_LEN];
    const char *names[] = {"weight", "bias", "running_mean", "running_var"};
    const int64_t c = (int64_t)arg(m, "c");
    nl_status st = NL_OK;
    for (int i = 0; i < 4 && st == NL_OK; i++) {
        if (nl_module_param(m, names[i])) {
            st = param_init(e, m, w, names[i], in[i]);
            continue;
        }
        nm(in[i], "%s%s", w->prefix, names[i]);
        float *v = ex_alloc(e, (size_t)c * sizeof *v);
        if (!v) return nl_errcode();
        for (int64_t k = 0; k < c; k++) v[k] = i == 0 ? 1.0f : 0.0f;
        st = add_init(e, in[i], ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &c, v, (size_t)c * sizeof *v);
    }
    if (st != NL_OK) return st;
    Onnx__NodeProto *nd = chain(e, w->prefix, "BatchNormalization", 4,
                                (const char *[]){in[0], in[1], in[2], in[3]});
    return nd ? attr_float(e, nd, "epsilon", (float)arg(m, "eps")) : nl_errcode();
}

/* GELU: one Gelu node from opset 20, else x * 0.5 * (1 + erf(x / sqrt(2))) as PyTorch writes it. */
static nl_status gelu(exporter *e, const where *w)
{
    if (e->opset >= 20) return chain(e, w->prefix, "Gelu", 0, NULL) ? NL_OK : nl_errcode();
    char x[NAME_MAX_LEN], c_sqrt2[NAME_MAX_LEN], c_one[NAME_MAX_LEN], c_half[NAME_MAX_LEN];
    nm(x, "%s", e->cur);
    nl_status st = constant(e, w->prefix, "sqrt2", (float)M_SQRT2, c_sqrt2);
    if (st == NL_OK) st = constant(e, w->prefix, "one", 1.0f, c_one);
    if (st == NL_OK) st = constant(e, w->prefix, "half", 0.5f, c_half);
    if (st != NL_OK) return st;
    const char *ok = NULL;
    if (chain(e, w->prefix, "Div", 1, (const char *[]){c_sqrt2}) && chain(e, w->prefix, "Erf", 0, NULL) &&
        chain(e, w->prefix, "Add", 1, (const char *[]){c_one})) {
        /* Mul(x, 1 + erf) has x first, as PyTorch's graph does */
        char out[NAME_MAX_LEN], name[NAME_MAX_LEN];
        nm(name, "%sMul", w->prefix);
        fresh(e, out, name);
        if (add_node(e, out, "Mul", 2, (const char *[]){x, e->cur}, out)) {
            nm(e->cur, "%s", out);
            ok = chain(e, w->prefix, "Mul", 1, (const char *[]){c_half}) ? "" : NULL;
        }
    }
    return ok ? NL_OK : nl_errcode();
}

/* ---------------------------------------------------------------- quantized layers ------- */

/* Names of the initializers of an activation quantization (scale, zero point) under prefix. */
static nl_status qparam_pair(exporter *e, const where *w, const char *what, double scale, double zp,
                             char *sname, char *zname)
{
    nm(sname, "%s%s_scale", w->prefix, what);
    nm(zname, "%s%s_zero_point", w->prefix, what);
    nl_status st = add_scalar_f32(e, sname, (float)scale);
    return st == NL_OK ? add_scalar_u8(e, zname, zp) : st;
}

static const float *qparams(nl_module *m) { return nl_tensor_f32(nl_module_param(m, "qparams")->value); }

/* QConv2d / QLinear: DequantizeLinear of the u8 input, of the i8 weights (per output channel) and
 * of the int32 bias (scale input scale x weight scale, as QLinearConv wants), the float operator,
 * ReLU, the fused pool, and QuantizeLinear to the output's u8 (unless the layer returns f32). */
static nl_status qlayer(exporter *e, nl_module *m, const where *w)
{
    const bool conv = is(m, "QConv2d");
    const float *qp = qparams(m);
    const bool relu = arg(m, "relu") != 0, f32 = arg(m, "f32") != 0;
    if (!e->cur_u8) return refuse(m, w, "its input is not the u8 output of a Quantize or a quantized layer");
    if (!conv && e->ndim == 4) { /* nnlab's QLinear reads its NHWC input as rows of H*W*C */
        Onnx__NodeProto *nd = chain(e, w->prefix, "Transpose", 0, NULL);
        if (!nd || attr_ints(e, nd, "perm", 4, (int64_t[]){0, 2, 3, 1}) != NL_OK) return nl_errcode();
    }
    if (!conv && e->ndim != 2) {
        Onnx__NodeProto *nd = chain(e, w->prefix, "Flatten", 0, NULL);
        if (!nd || attr_int(e, nd, "axis", 1) != NL_OK) return nl_errcode();
    }
    char xs[NAME_MAX_LEN], xz[NAME_MAX_LEN], wn[NAME_MAX_LEN], ws[NAME_MAX_LEN], wz[NAME_MAX_LEN],
        bn[NAME_MAX_LEN], bs[NAME_MAX_LEN], bz[NAME_MAX_LEN], dqw[NAME_MAX_LEN], dqb[NAME_MAX_LEN];
    nl_status st = qparam_pair(e, w, "input", qp[0], qp[1], xs, xz);
    if (st == NL_OK) st = param_init(e, m, w, "weight_scale", ws);
    if (st != NL_OK) return st;
    nl_tensor *wt = nl_module_param(m, "weight")->value;
    const int64_t out = wt->shape[0];
    const float *wscale = nl_tensor_f32(nl_module_param(m, "weight_scale")->value);
    const float *bias = nl_module_param(m, "bias") ? nl_tensor_f32(nl_module_param(m, "bias")->value) : NULL;
    /* The weights go as u8 = i8 + 128 with zero point 128, the same real values: ONNX Runtime's
     * u8 x s8 kernels on CPUs without VNNI add pairs of products in saturating 16-bit sums, which
     * nnlab's full-range weights overflow (the u8 x u8 kernels do not). */
    const int64_t wn_elems = nl_tensor_numel(wt);
    nl_tensor *wh = nl_tensor_host(wt);
    uint8_t *wu = ex_alloc(e, (size_t)wn_elems), *zeros = ex_alloc(e, (size_t)out);
    if (!wh || !wu || !zeros) {
        nl_tensor_release(wh);
        return nl_errcode();
    }
    for (int64_t k = 0; k < wn_elems; k++) wu[k] = (uint8_t)(((const int8_t *)nl_tensor_data(wh))[k] + 128);
    nl_tensor_release(wh);
    memset(zeros, 128, (size_t)out);
    nm(wn, "%sweight", w->prefix);
    st = add_init(e, wn, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, wt->ndim, wt->shape, wu, (size_t)wn_elems);
    if (st != NL_OK) return st;
    int32_t *qb = ex_alloc(e, (size_t)out * sizeof *qb), *bzeros = ex_alloc(e, (size_t)out * sizeof *bzeros);
    float *bscale = ex_alloc(e, (size_t)out * sizeof *bscale);
    if (!zeros || !qb || !bzeros || !bscale) return nl_errcode();
    for (int64_t o = 0; o < out; o++) {
        bscale[o] = (float)((double)qp[0] * wscale[o]);
        double q = bias && bscale[o] > 0 ? nearbyint(bias[o] / bscale[o]) : 0;
        qb[o] = (int32_t)(q > INT32_MAX ? INT32_MAX : q < -INT32_MAX ? -INT32_MAX : q);
    }
    nm(wz, "%sweight_zero_point", w->prefix);
    nm(bn, "%sbias_quantized", w->prefix);
    nm(bs, "%sbias_scale", w->prefix);
    nm(bz, "%sbias_zero_point", w->prefix);
    st = add_init(e, wz, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, 1, &out, zeros, (size_t)out);
    if (st == NL_OK) st = add_init(e, bn, ONNX__TENSOR_PROTO__DATA_TYPE__INT32, 1, &out, qb, (size_t)out * 4);
    if (st == NL_OK) st = add_init(e, bs, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &out, bscale, (size_t)out * 4);
    if (st == NL_OK) st = add_init(e, bz, ONNX__TENSOR_PROTO__DATA_TYPE__INT32, 1, &out, bzeros, (size_t)out * 4);
    /* and the float bias itself, which no node reads: onnx.load takes it back exactly */
    char bf[NAME_MAX_LEN];
    if (st == NL_OK && bias) st = param_init(e, m, w, "bias", bf);
    if (st != NL_OK) return st;
    /* weights and bias */
    fresh(e, dqw, "dq_weight");
    fresh(e, dqb, "dq_bias");
    Onnx__NodeProto *n1 = add_node(e, dqw, "DequantizeLinear", 3, (const char *[]){wn, ws, wz}, dqw);
    Onnx__NodeProto *n2 = n1 ? add_node(e, dqb, "DequantizeLinear", 3, (const char *[]){bn, bs, bz}, dqb) : NULL;
    if (!n2 || attr_int(e, n1, "axis", 0) != NL_OK || attr_int(e, n2, "axis", 0) != NL_OK)
        return nl_errcode();
    /* the input */
    if (!chain(e, w->prefix, "DequantizeLinear", 2, (const char *[]){xs, xz})) return nl_errcode();
    Onnx__NodeProto *op = chain(e, w->prefix, conv ? "Conv" : "Gemm", 2, (const char *[]){dqw, dqb});
    if (!op) return nl_errcode();
    st = conv ? window_attrs(e, op, (int64_t)arg(m, "k"), (int64_t)arg(m, "stride"), (int64_t)arg(m, "padding"))
              : attr_int(e, op, "transB", 1);
    if (st == NL_OK && relu && !chain(e, w->prefix, "Relu", 0, NULL)) st = nl_errcode();
    if (st != NL_OK) return st;
    if (!f32) {
        char ys[NAME_MAX_LEN], yz[NAME_MAX_LEN];
        st = qparam_pair(e, w, "output", qp[2], qp[3], ys, yz);
        if (st == NL_OK && !chain(e, w->prefix, "QuantizeLinear", 2, (const char *[]){ys, yz})) st = nl_errcode();
    }
    e->cur_u8 = !f32;
    const int64_t pool = conv ? (int64_t)arg(m, "pool") : 0;
    if (st == NL_OK && pool > 1) { /* max pooling commutes with the monotonic requantization */
        Onnx__NodeProto *nd = chain(e, w->prefix, "MaxPool", 0, NULL);
        st = nd ? window_attrs(e, nd, pool, pool, 0) : nl_errcode();
    }
    return st;
}

/* ---------------------------------------------------------------- the walk --------------- */

static nl_status export_module(exporter *e, nl_module *m, const where *w, int depth);

static nl_status export_children(exporter *e, nl_module *m, const where *w, int depth)
{
    for (int i = 0; i < m->nchildren; i++) {
        where c;
        nm(c.prefix, "%s%d.", w->prefix, i);
        nm(c.path, "%s%s%d", w->path, w->path[0] ? "." : "", i + 1);
        nl_status st = export_module(e, m->children[i], &c, depth + 1);
        if (st != NL_OK) return st;
    }
    return NL_OK;
}

/* nnlab's shape after m (for the checks of the layers after it). */
static nl_status track_shape(exporter *e, const nl_module *m)
{
    int64_t out[NL_MAX_DIMS], macs;
    int nd;
    nl_status st = nl_module_infer(m, e->ndim, e->shape, &nd, out, &macs);
    if (st != NL_OK) return st;
    e->ndim = nd;
    memcpy(e->shape, out, (size_t)nd * sizeof *out);
    return NL_OK;
}

static nl_status export_module(exporter *e, nl_module *m, const where *w, int depth)
{
    nl_status st = nl_check_interrupt();
    if (st != NL_OK) return st;
    if (depth > NL_MAX_DEPTH) return refuse(m, w, "nested deeper than %d", NL_MAX_DEPTH);
    if (is(m, "Sequential")) return export_children(e, m, w, depth);
    if (is(m, "Residual")) {
        if (e->cur_u8) return refuse(m, w, "a skip connection on u8 activations");
        char skip[NAME_MAX_LEN];
        nm(skip, "%s", e->cur);
        st = export_children(e, m, w, depth);
        if (st == NL_OK && e->cur_u8) return refuse(m, w, "its block ends on u8 activations");
        if (st == NL_OK && !chain(e, w->prefix, "Add", 1, (const char *[]){skip})) st = nl_errcode();
        return st;
    }
    const bool q = is(m, "QConv2d") || is(m, "QLinear") || is(m, "QMaxPool2d") || is(m, "Dequantize");
    if (e->cur_u8 && !q) return refuse(m, w, "it takes u8 activations (only quantized layers and Dequantize can)");
    if (!e->cur_u8 && q) return refuse(m, w, "its input is not the u8 output of a Quantize or a quantized layer");
    Onnx__NodeProto *nd = NULL;
    const char *simple = is(m, "ReLU") ? "Relu" : is(m, "Sigmoid") ? "Sigmoid" : is(m, "Tanh") ? "Tanh"
                       : is(m, "Identity") || is(m, "Dropout") ? "Identity" : NULL;
    if (simple) {
        st = chain(e, w->prefix, simple, 0, NULL) ? NL_OK : nl_errcode();
    } else if (is(m, "Conv2d") || is(m, "Linear")) {
        st = float_affine(e, m, w, is(m, "Conv2d"), NULL);
    } else if (is(m, "Int4Conv2d") || is(m, "Int4Linear")) {
        nl_tensor *wf = nl_quant_weights_f32(m);
        st = wf ? float_affine(e, m, w, is(m, "Int4Conv2d"), wf) : nl_errcode();
        nl_tensor_release(wf);
    } else if (is(m, "LeakyReLU")) {
        nd = chain(e, w->prefix, "LeakyRelu", 0, NULL);
        st = nd ? attr_float(e, nd, "alpha", (float)arg(m, "slope")) : nl_errcode();
    } else if (is(m, "GELU")) {
        st = gelu(e, w);
    } else if (is(m, "Softmax")) {
        nd = chain(e, w->prefix, "Softmax", 0, NULL);
        st = nd ? attr_int(e, nd, "axis", -1) : nl_errcode();
    } else if (is(m, "MaxPool2d") || is(m, "AvgPool2d") || is(m, "QMaxPool2d")) {
        const bool avg = is(m, "AvgPool2d");
        nd = chain(e, w->prefix, avg ? "AveragePool" : "MaxPool", 0, NULL);
        st = nd ? window_attrs(e, nd, (int64_t)arg(m, "k"), (int64_t)arg(m, "stride"), (int64_t)arg(m, "padding"))
                : nl_errcode();
        if (st == NL_OK && avg) st = attr_int(e, nd, "count_include_pad", 1);
    } else if (is(m, "GlobalAvgPool") || is(m, "Flatten")) {
        if (is(m, "GlobalAvgPool") && !chain(e, w->prefix, "GlobalAveragePool", 0, NULL)) return nl_errcode();
        nd = chain(e, w->prefix, "Flatten", 0, NULL);
        st = nd ? attr_int(e, nd, "axis", 1) : nl_errcode();
    } else if (is(m, "BatchNorm1d") || is(m, "BatchNorm2d") || is(m, "SyncBatchNorm")) {
        st = batchnorm(e, m, w);
    } else if (is(m, "Quantize") || is(m, "Dequantize")) {
        char s[NAME_MAX_LEN], z[NAME_MAX_LEN];
        const bool quant = is(m, "Quantize");
        st = qparam_pair(e, w, quant ? "output" : "input", qparams(m)[0], qparams(m)[1], s, z);
        if (st == NL_OK && !chain(e, w->prefix, quant ? "QuantizeLinear" : "DequantizeLinear", 2,
                                  (const char *[]){s, z}))
            st = nl_errcode();
        e->cur_u8 = quant;
    } else if (is(m, "QConv2d") || is(m, "QLinear")) {
        st = qlayer(e, m, w);
    } else if (is(m, "FakeQuant") || is(m, "QATLinear") || is(m, "QATConv2d")) {
        return refuse(m, w, "a quantization-aware training layer: convert the network with quant.convert "
                            "(int8) first");
    } else {
        return refuse(m, w, "ONNX has no operator for it in nnlab's export");
    }
    return st == NL_OK ? track_shape(e, m) : st;
}

/* ---------------------------------------------------------------- the model -------------- */

/* The input shape from the first layer when none is given: [1, in] for Linear, [1, C, S, S] with
 * the first image size S of 32, 28, 1..512 the network takes for a convolution. */
static const nl_module *first_sized(const nl_module *m)
{
    if (!isnan(arg(m, "in")) || !isnan(arg(m, "c"))) return m;
    for (int i = 0; i < m->nchildren; i++) {
        const nl_module *f = first_sized(m->children[i]);
        if (f) return f;
    }
    return NULL;
}

static nl_status default_input(nl_module *net, int *ndim, int64_t *shape)
{
    const nl_module *m = first_sized(net);
    if (!m)
        return nl_seterr(NL_EINVAL, "onnx.export: the input shape cannot be found from the layers: give it, "
                         "e.g. {input = {1, 3, 32, 32}}");
    const double in = isnan(arg(m, "in")) ? arg(m, "c") : arg(m, "in");
    if (is(m, "Linear") || is(m, "BatchNorm1d") || is(m, "Int4Linear") || is(m, "QLinear")) {
        *ndim = 2;
        shape[0] = 1, shape[1] = (int64_t)in;
        return NL_OK;
    }
    if (!isnan(in)) {
        int64_t out[NL_MAX_DIMS], macs;
        int nd;
        for (int i = -2; i <= 512; i++) {
            const int64_t s = i == -2 ? 32 : i == -1 ? 28 : i;
            if (s == 0) continue;
            int64_t x[4] = {1, (int64_t)in, s, s};
            if (nl_module_infer(net, 4, x, &nd, out, &macs) == NL_OK) {
                *ndim = 4;
                memcpy(shape, x, sizeof x);
                nl_clearerr();
                return NL_OK;
            }
        }
    }
    return nl_seterr(NL_EINVAL, "onnx.export: the input shape cannot be found from the first layer "
                     "(%s): give it, e.g. {input = {1, 3, 32, 32}}", m->type->name);
}

static Onnx__ValueInfoProto *value_info(exporter *e, const char *name, int elem, int ndim,
                                        const int64_t *shape, bool dynamic_batch)
{
    Onnx__ValueInfoProto *v = ex_alloc(e, sizeof *v);
    Onnx__TypeProto *t = ex_alloc(e, sizeof *t);
    Onnx__TypeProto__Tensor *tt = ex_alloc(e, sizeof *tt);
    Onnx__TensorShapeProto *sh = ex_alloc(e, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = ex_alloc(e, (size_t)(ndim ? ndim : 1) * sizeof *dims);
    if (!v || !t || !tt || !sh || !dims) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int d = 0; d < ndim; d++) {
        Onnx__TensorShapeProto__Dimension *dim = ex_alloc(e, sizeof *dim);
        if (!dim) return NULL;
        onnx__tensor_shape_proto__dimension__init(dim);
        if (d == 0 && dynamic_batch) {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            if (!(dim->dim_param = ex_strdup(e, "N"))) return NULL;
        } else {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim->dim_value = shape[d];
        }
        dims[d] = dim;
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = elem;
    tt->shape = sh;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->type = t;
    v->name = ex_strdup(e, name);
    return v->name ? v : NULL;
}

/* The IR version that goes with an opset (onnx/helper.py's table). */
static int64_t ir_version(int opset)
{
    return opset <= 14 ? 7 : opset <= 18 ? 8 : opset <= 20 ? 9 : 10;
}

static nl_status write_model(exporter *e, const nl_onnx_opts *o, int in_ndim, const int64_t *in_shape,
                             const char *path)
{
    Onnx__GraphProto g;
    onnx__graph_proto__init(&g);
    g.name = "nnlab";
    g.n_node = e->nnodes;
    g.node = e->nodes;
    g.n_initializer = e->ninits;
    g.initializer = e->inits;
    Onnx__ValueInfoProto *in = value_info(e, "input", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, in_ndim,
                                          in_shape, o->dynamic_batch);
    Onnx__ValueInfoProto *out = value_info(e, "logits", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, e->ndim,
                                           e->shape, o->dynamic_batch);
    if (!in || !out) return nl_errcode();
    g.n_input = g.n_output = 1;
    g.input = &in;
    g.output = &out;
    Onnx__OperatorSetIdProto opset;
    onnx__operator_set_id_proto__init(&opset);
    opset.domain = "";
    opset.has_version = 1;
    opset.version = e->opset;
    Onnx__OperatorSetIdProto *opsets[] = {&opset};
    Onnx__ModelProto model;
    onnx__model_proto__init(&model);
    model.has_ir_version = 1;
    model.ir_version = ir_version(e->opset);
    model.producer_name = "nnlab";
    model.producer_version = NL_VERSION;
    model.doc_string = (char *)(o->doc ? o->doc : "");
    model.graph = &g;
    model.n_opset_import = 1;
    model.opset_import = opsets;
    const size_t n = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return nl_seterr(NL_ENOMEM, "onnx.export: out of memory for a %zu-byte file", n);
    onnx__model_proto__pack(&model, buf);
    nl_atomic_file af;
    nl_status st = nl_atomic_open(&af, path);
    if (st == NL_OK) st = nl_atomic_write(&af, buf, n);
    if (st == NL_OK) st = nl_atomic_commit(&af);
    else if (af.fp) nl_atomic_abort(&af);
    free(buf);
    return st;
}

nl_status nl_onnx_export(nl_module *net, const char *path, const nl_onnx_opts *opts)
{
    nl_onnx_opts o = opts ? *opts : (nl_onnx_opts){0};
    if (!o.opset) o.opset = NL_ONNX_OPSET_DEFAULT;
    if (o.opset < NL_ONNX_OPSET_MIN || o.opset > NL_ONNX_OPSET_MAX)
        return nl_seterr(NL_EINVAL, "onnx.export: opset %d is not supported (%d to %d)", o.opset,
                         NL_ONNX_OPSET_MIN, NL_ONNX_OPSET_MAX);
    nl_status st = o.ndim ? NL_OK : default_input(net, &o.ndim, o.shape);
    if (st != NL_OK) return st;
    if (o.ndim < 1 || o.ndim > NL_MAX_DIMS) return nl_seterr(NL_EINVAL, "onnx.export: bad input shape");
    exporter e = {.opset = o.opset, .ndim = o.ndim};
    memcpy(e.shape, o.shape, (size_t)o.ndim * sizeof *o.shape);
    {
        int64_t out[NL_MAX_DIMS], macs;
        int nd;
        if ((st = nl_module_infer(net, o.ndim, o.shape, &nd, out, &macs)) != NL_OK) return st;
    }
    nm(e.cur, "input");
    where top = {"", ""};
    st = export_module(&e, net, &top, 1);
    if (st == NL_OK && e.cur_u8)
        st = nl_seterr(NL_EUNSUPPORTED, "onnx.export: the network ends on u8 activations (its last "
                       "quantized layer should return f32)");
    /* the last value is "logits": the output of the last node (an Identity when there is none) */
    if (st == NL_OK && (e.nnodes == 0 || strcmp(e.nodes[e.nnodes - 1]->output[0], e.cur) != 0) &&
        !chain(&e, "", "Identity", 0, NULL))
        st = nl_errcode();
    if (st == NL_OK) {
        Onnx__NodeProto *last = e.nodes[e.nnodes - 1];
        last->output[0] = ex_strdup(&e, "logits");
        st = last->output[0] ? write_model(&e, &o, o.ndim, o.shape, path) : nl_errcode();
    }
    ex_free(&e);
    return st;
}
