/* onnx_import.c: ONNX models as nnlab networks. The file is parsed by protobuf-c (under an
 * allocation cap), validated (initializers against their shapes, no external data, every node's
 * inputs defined before it: no cycle), then its graph is walked as a chain: each node becomes a
 * layer of an nn.Sequential, a value that forks into a block and an Add becomes an nn.Residual, and
 * the patterns PyTorch writes for one layer (GELU's erf formula, GlobalAveragePool + Flatten) are
 * read as that layer. Anything else is refused, naming the node. */
#include "onnx.h"

#include "onnx.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S(s) ((s) ? (s) : "")

/* ---------------------------------------------------------------- reading and parsing ---- */

/* protobuf-c's allocations, counted against a cap (a header before each block keeps its size). */
typedef struct {
    size_t used, cap;
    bool over;
} parse_budget;

typedef union { size_t n; max_align_t align; } block_head;

static void *pb_alloc(void *data, size_t n)
{
    parse_budget *b = data;
    if (n > b->cap - b->used || n + sizeof(block_head) < n) {
        b->over = true;
        return NULL;
    }
    block_head *h = malloc(sizeof *h + n);
    if (!h) return NULL;
    h->n = n;
    b->used += n;
    return h + 1;
}

static void pb_free(void *data, void *p)
{
    if (!p) return;
    block_head *h = (block_head *)p - 1;
    ((parse_budget *)data)->used -= h->n;
    free(h);
}

typedef struct {
    const char *path;
    size_t file_size;
    parse_budget budget;
    ProtobufCAllocator alloc;
    Onnx__ModelProto *model;
} onnx_file;

static nl_status bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static nl_status bad(const char *path, const char *fmt, ...)
{
    char why[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return nl_seterr(NL_EFORMAT, "onnx.load: %s: %s", path, why);
}

static void file_close(onnx_file *f)
{
    if (f->model) onnx__model_proto__free_unpacked(f->model, &f->alloc);
    f->model = NULL;
}

/* Reads and parses path into f->model. */
static nl_status file_open(onnx_file *f, const char *path)
{
    *f = (onnx_file){.path = path};
    FILE *fp = fopen(path, "rb");
    if (!fp) return nl_seterr(NL_EIO, "onnx.load: cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return nl_seterr(NL_EIO, "onnx.load: %s is not a regular file", path);
    }
    f->file_size = (size_t)sb.st_size;
    if (f->file_size == 0) {
        fclose(fp);
        return bad(path, "the file is empty");
    }
    uint8_t *buf = malloc(f->file_size);
    if (!buf) {
        fclose(fp);
        return nl_seterr(NL_ENOMEM, "onnx.load: %s: out of memory for %zu bytes", path, f->file_size);
    }
    const size_t got = fread(buf, 1, f->file_size, fp);
    fclose(fp);
    if (got != f->file_size) {
        free(buf);
        return nl_seterr(NL_EIO, "onnx.load: cannot read %s", path);
    }
    f->budget.cap = f->file_size > (SIZE_MAX - (1 << 20)) / NL_ONNX_PARSE_FACTOR
                        ? SIZE_MAX : f->file_size * NL_ONNX_PARSE_FACTOR + (1 << 20);
    f->alloc = (ProtobufCAllocator){pb_alloc, pb_free, &f->budget};
    f->model = onnx__model_proto__unpack(&f->alloc, f->file_size, buf);
    free(buf);
    if (!f->model)
        return f->budget.over ? bad(path, "parsing it would take more than %zu bytes", f->budget.cap)
                              : bad(path, "not an ONNX model: the protobuf message is truncated or invalid");
    if (!f->model->graph) {
        file_close(f);
        return bad(path, "not an ONNX model: no graph");
    }
    return NL_OK;
}

nl_status nl_onnx_info(const char *path, char **doc, char **producer)
{
    onnx_file f;
    nl_status st = file_open(&f, path);
    if (st != NL_OK) return st;
    char pv[512];
    snprintf(pv, sizeof pv, "%s%s%s", S(f.model->producer_name), f.model->producer_version ? " " : "",
             S(f.model->producer_version));
    if (doc) *doc = strdup(S(f.model->doc_string));
    if (producer) *producer = strdup(pv);
    file_close(&f);
    if ((doc && !*doc) || (producer && !*producer)) {
        if (doc) free(*doc), *doc = NULL;
        if (producer) free(*producer), *producer = NULL;
        return nl_seterr(NL_ENOMEM, "onnx.info: out of memory");
    }
    return NL_OK;
}

/* ---------------------------------------------------------------- values ----------------- */

/* What a value name is: a graph input, an initializer or Constant (t set), or a node's output. */
typedef struct {
    const char *name;
    const Onnx__TensorProto *t; /* constants */
    int producer;               /* node index, -1 for the graph input and constants */
    int consumers;              /* node inputs and graph outputs that take it */
    int consumer;               /* the first node that takes it */
    int dq;                     /* the DequantizeLinear of constants that computes it, else -1 */
} value;

typedef struct {
    onnx_file f;
    Onnx__GraphProto *g;
    int64_t opset;
    value *v;       /* open-addressed hash of names, cap entries */
    size_t cap, n;
    bool *used;     /* nodes consumed by a pattern */
    bool u8;        /* the current value holds u8 activations (between QuantizeLinear and a float) */
    /* the walk */
    const char *cur;
    int ndim;
    int64_t shape[NL_MAX_DIMS];
} importer;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h;
}

static value *find(importer *im, const char *name)
{
    for (size_t i = hash(name) & (im->cap - 1);; i = (i + 1) & (im->cap - 1)) {
        if (!im->v[i].name) return NULL;
        if (strcmp(im->v[i].name, name) == 0) return &im->v[i];
    }
}

/* Defines name; NULL when it is defined already. */
static value *define(importer *im, const char *name)
{
    size_t i = hash(name) & (im->cap - 1);
    for (; im->v[i].name; i = (i + 1) & (im->cap - 1))
        if (strcmp(im->v[i].name, name) == 0) return NULL;
    im->v[i] = (value){.name = name, .producer = -1, .consumer = -1, .dq = -1};
    im->n++;
    return &im->v[i];
}

static const char *op_of(const Onnx__NodeProto *n) { return S(n->op_type); }

static nl_status node_err(importer *im, int i, nl_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static nl_status node_err(importer *im, int i, nl_status code, const char *fmt, ...)
{
    char why[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    const Onnx__NodeProto *n = im->g->node[i];
    return nl_seterr(code, "onnx.load: %s: node %d of %zu '%s' (%s): %s", im->f.path, i + 1, im->g->n_node,
                     S(n->name), op_of(n), why);
}

/* Bytes per element of an ONNX data type (0: none nnlab can read). */
static size_t elem_size(int32_t dt)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return 8;
    default: return 0;
    }
}

/* The count of values a typed field holds for this data type. */
static size_t typed_count(const Onnx__TensorProto *t)
{
    switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return t->n_float_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return t->n_int64_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return t->n_double_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return t->n_uint64_data;
    default: return t->n_int32_data;
    }
}

static int64_t numel(const Onnx__TensorProto *t)
{
    int64_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++) n *= t->dims[d];
    return n;
}

/* Checks a constant tensor: a self-contained, readable type whose data fills its shape. */
static nl_status check_tensor(importer *im, const Onnx__TensorProto *t, const char *what)
{
    const char *p = im->f.path, *name = S(t->name);
    if ((t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
        t->n_external_data) {
        const char *loc = "";
        for (size_t i = 0; i < t->n_external_data; i++)
            if (strcmp(S(t->external_data[i]->key), "location") == 0) loc = S(t->external_data[i]->value);
        return bad(p, "%s '%s' keeps its data in an external file ('%s'): nnlab loads only "
                   "self-contained files", what, name, loc);
    }
    if (t->segment) return bad(p, "%s '%s' is a segment of a tensor (not supported)", what, name);
    const size_t esize = elem_size(t->data_type);
    if (!esize) return bad(p, "%s '%s' has data type %d, which nnlab cannot read", what, name, (int)t->data_type);
    if (t->n_dims > NL_MAX_DIMS)
        return bad(p, "%s '%s' has %zu dimensions (at most %d)", what, name, t->n_dims, NL_MAX_DIMS);
    size_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (t->dims[d] < 0 || (uint64_t)t->dims[d] > SIZE_MAX || !nl_mul_overflow(n, (size_t)t->dims[d], &n))
            return bad(p, "%s '%s': dimension %zu is %lld", what, name, d + 1, (long long)t->dims[d]);
    }
    size_t bytes;
    if (!nl_mul_overflow(n, esize, &bytes)) return bad(p, "%s '%s': its size overflows", what, name);
    if (t->has_raw_data) {
        if (t->raw_data.len != bytes)
            return bad(p, "%s '%s' holds %zu bytes of data, its shape needs %zu", what, name, t->raw_data.len, bytes);
    } else if (typed_count(t) != n) {
        return bad(p, "%s '%s' holds %zu values, its shape needs %zu", what, name, typed_count(t), n);
    }
    return NL_OK;
}

/* Element k of a checked constant as a double. */
static double tensor_at(const Onnx__TensorProto *t, size_t k)
{
    if (t->has_raw_data) {
        const uint8_t *b = t->raw_data.data + k * elem_size(t->data_type);
        union { float f; double d; int64_t i64; int32_t i32; int8_t i8; uint8_t u8; } u;
        memcpy(&u, b, elem_size(t->data_type));
        switch (t->data_type) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return u.f;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return u.d;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return (double)u.i64;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return u.i32;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return u.i8;
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return u.u8;
        default: return NAN;
        }
    }
    switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return t->float_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return t->double_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return (double)t->int64_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
        return (double)t->uint64_data[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
        return t->int32_data[k];
    default: return NAN;
    }
}

/* ---------------------------------------------------------------- validation ------------- */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (strcmp(S(n->attribute[i]->name), name) == 0) return n->attribute[i];
    return NULL;
}

/* Builds the value table: the graph input, initializers, Constant nodes and node outputs, each
 * defined once and before any node takes it (topological order, so no cycle). */
static nl_status validate(importer *im)
{
    Onnx__GraphProto *g = im->g;
    const char *p = im->f.path;
    size_t need = g->n_initializer + g->n_input + 1;
    for (size_t i = 0; i < g->n_node; i++) need += g->node[i]->n_output;
    if (g->n_node > INT32_MAX / 2 || need > SIZE_MAX / 4 / sizeof *im->v)
        return bad(p, "the graph is too large");
    for (im->cap = 16; im->cap < 2 * need;) im->cap *= 2;
    im->v = calloc(im->cap, sizeof *im->v);
    im->used = calloc(g->n_node + 1, sizeof *im->used);
    if (!im->v || !im->used) return nl_seterr(NL_ENOMEM, "onnx.load: out of memory");
    /* the operator set */
    im->opset = -1;
    for (size_t i = 0; i < im->f.model->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = im->f.model->opset_import[i];
        if (!*S(o->domain) || strcmp(S(o->domain), "ai.onnx") == 0) im->opset = o->version;
    }
    if (im->opset < 7 || im->opset > 30)
        return bad(p, "the model imports opset %lld of the ONNX domain (nnlab reads 7 to 30)", (long long)im->opset);
    if (g->n_sparse_initializer) return bad(p, "sparse initializers are not supported");
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        nl_status st = check_tensor(im, t, "initializer");
        if (st != NL_OK) return st;
        value *v = *S(t->name) ? define(im, t->name) : NULL;
        if (!v) return bad(p, "initializer %zu has %s name '%s'", i + 1, *S(t->name) ? "a repeated" : "an empty",
                           S(t->name));
        v->t = t;
    }
    const char *input = NULL;
    for (size_t i = 0; i < g->n_input; i++) {
        const char *name = S(g->input[i]->name);
        value *v = find(im, name);
        if (v && v->t) continue; /* older files list initializers as inputs too */
        if (input) return bad(p, "the graph has several inputs ('%s', '%s'); nnlab's networks take one", input, name);
        if (!*name || !define(im, name)) return bad(p, "the graph input '%s' is named twice or not at all", name);
        input = name;
    }
    if (!input) return bad(p, "the graph has no input");
    if (g->n_output != 1) return bad(p, "the graph has %zu outputs; nnlab's networks have one", g->n_output);
    im->cur = input;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        if (*S(n->domain) && strcmp(n->domain, "ai.onnx") != 0)
            return node_err(im, (int)i, NL_EUNSUPPORTED, "operator domain '%s' is not ONNX's", n->domain);
        for (size_t k = 0; k < n->n_input; k++) {
            if (!*S(n->input[k])) continue; /* an optional input left out */
            value *v = find(im, n->input[k]);
            if (!v)
                return node_err(im, (int)i, NL_EFORMAT, "input '%s' is not defined before the node (the graph "
                                "has a cycle, nodes out of order or a missing value)", n->input[k]);
            if (v->consumers++ == 0) v->consumer = (int)i;
        }
        if (n->n_output < 1 || !*S(n->output[0]))
            return node_err(im, (int)i, NL_EFORMAT, "the node has no output");
        for (size_t k = 0; k < n->n_output; k++) {
            if (!*S(n->output[k])) continue;
            value *v = define(im, n->output[k]);
            if (!v) return node_err(im, (int)i, NL_EFORMAT, "output '%s' is defined twice", n->output[k]);
            v->producer = (int)i;
        }
        if (strcmp(op_of(n), "Constant") == 0) {
            const Onnx__AttributeProto *a = attr(n, "value");
            if (!a || !a->t || n->n_attribute != 1)
                return node_err(im, (int)i, NL_EUNSUPPORTED, "only Constant nodes with a tensor 'value' are read");
            nl_status st = check_tensor(im, a->t, "constant");
            if (st != NL_OK) return st;
            find(im, n->output[0])->t = a->t;
            im->used[i] = true;
        }
        /* the weights and biases of a QDQ graph: read by the quantized layer that takes them */
        bool consts = strcmp(op_of(n), "DequantizeLinear") == 0 && n->n_input >= 2;
        for (size_t k = 0; k < n->n_input && consts; k++) {
            value *v = *S(n->input[k]) ? find(im, n->input[k]) : NULL;
            consts = !*S(n->input[k]) || (v && v->t);
        }
        if (consts) {
            find(im, n->output[0])->dq = (int)i;
            im->used[i] = true;
        }
    }
    value *out = find(im, S(g->output[0]->name));
    if (!out) return bad(p, "the graph output '%s' is not computed by any node", S(g->output[0]->name));
    out->consumers++;
    return NL_OK;
}

/* ---------------------------------------------------------------- attributes ------------- */

static nl_status get_int(importer *im, int i, const char *name, int64_t def, int64_t *out)
{
    const Onnx__AttributeProto *a = attr(im->g->node[i], name);
    *out = def;
    if (!a) return NL_OK;
    if (!a->has_i) return node_err(im, i, NL_EFORMAT, "attribute '%s' is not an integer", name);
    *out = a->i;
    return NL_OK;
}

/* The shortest decimal that rounds to float f (1e-05 for the float nearest 1e-5): a float attribute
 * read back as the value it was written from. */
static double shortest(float f)
{
    char buf[48];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return f;
}

static nl_status get_float(importer *im, int i, const char *name, double def, double *out)
{
    const Onnx__AttributeProto *a = attr(im->g->node[i], name);
    *out = def;
    if (!a) return NL_OK;
    if (!a->has_f) return node_err(im, i, NL_EFORMAT, "attribute '%s' is not a float", name);
    *out = shortest(a->f);
    return NL_OK;
}

/* An ints attribute whose n values are all equal (absent: def): that value in *out. */
static nl_status get_same(importer *im, int i, const char *name, int64_t def, size_t n, int64_t *out)
{
    const Onnx__AttributeProto *a = attr(im->g->node[i], name);
    *out = def;
    if (!a) return NL_OK;
    if (a->n_ints != n)
        return node_err(im, i, NL_EUNSUPPORTED, "attribute '%s' has %zu values, expected %zu (2-D only)", name,
                        a->n_ints, n);
    for (size_t k = 1; k < n; k++)
        if (a->ints[k] != a->ints[0])
            return node_err(im, i, NL_EUNSUPPORTED, "attribute '%s' differs between sides or axes; nnlab's "
                            "layers use one value", name);
    *out = a->ints[0];
    return NL_OK;
}

/* Refuses attributes outside the list (an attribute nnlab does not read could change the result). */
static nl_status only_attrs(importer *im, int i, const char *const *known)
{
    const Onnx__NodeProto *n = im->g->node[i];
    for (size_t k = 0; k < n->n_attribute; k++) {
        bool ok = false;
        for (int j = 0; known[j] && !ok; j++) ok = strcmp(S(n->attribute[k]->name), known[j]) == 0;
        if (!ok) return node_err(im, i, NL_EUNSUPPORTED, "attribute '%s' is not supported", S(n->attribute[k]->name));
    }
    return NL_OK;
}

/* The constant input k of node i (NULL with the error set when it is not one). */
static const Onnx__TensorProto *const_input(importer *im, int i, size_t k, const char *what)
{
    const Onnx__NodeProto *n = im->g->node[i];
    value *v = k < n->n_input && *S(n->input[k]) ? find(im, n->input[k]) : NULL;
    if (!v || !v->t) {
        node_err(im, i, NL_EUNSUPPORTED, "its %s must be an initializer (a constant)", what);
        return NULL;
    }
    return v->t;
}

static bool has_input(const Onnx__NodeProto *n, size_t k) { return k < n->n_input && *S(n->input[k]); }

/* ---------------------------------------------------------------- layers ----------------- */

static nl_module *make(importer *im, int i, const char *type, const char *const *names, const double *vals)
{
    const nl_module_type *t = nl_module_type_find(type);
    double args[NL_MAX_ARGS];
    nl_module_default_args(t, args);
    for (int k = 0; names && names[k]; k++) args[nl_module_arg_index(t, names[k])] = vals[k];
    nl_module *m = nl_module_new(t, args);
    if (!m) {
        char why[256];
        snprintf(why, sizeof why, "%s", nl_errmsg());
        node_err(im, i, nl_errcode() == NL_ENOMEM ? NL_ENOMEM : NL_EUNSUPPORTED, "%s", why);
    }
    return m;
}

/* Copies constant t (float32, of n elements) into m's parameter name, transposed from [c, r] when
 * transpose (r x c = the parameter's shape). */
static nl_status fill(importer *im, int i, nl_module *m, const char *name, const Onnx__TensorProto *t,
                      bool transpose)
{
    nl_param *p = nl_module_param(m, name);
    nl_tensor *v = p->value;
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return node_err(im, i, NL_EUNSUPPORTED, "%s '%s' is not float32 (data type %d)", name, S(t->name),
                        (int)t->data_type);
    const int64_t n = nl_tensor_numel(v);
    bool same = numel(t) == n && (transpose ? t->n_dims == 2 : true);
    if (same && !transpose && !(t->n_dims == 2 && v->ndim == 1)) { /* a [1, out] bias is fine too */
        same = (int)t->n_dims == v->ndim;
        for (int d = 0; same && d < v->ndim; d++) same = t->dims[d] == v->shape[d];
    }
    if (!same) {
        char a[160], b[160];
        int64_t td[NL_MAX_DIMS];
        for (size_t d = 0; d < t->n_dims; d++) td[d] = t->dims[d];
        return node_err(im, i, NL_EUNSUPPORTED, "%s '%s' has shape %s, the layer needs %s", name, S(t->name),
                        nl_shape_str(a, sizeof a, (int)t->n_dims, td), nl_shape_str(b, sizeof b, v->ndim, v->shape));
    }
    float *dst = nl_tensor_f32(v);
    if (transpose) {
        const int64_t r = v->shape[0], c = v->shape[1];
        for (int64_t y = 0; y < r; y++)
            for (int64_t x = 0; x < c; x++) dst[y * c + x] = (float)tensor_at(t, (size_t)(x * r + y));
    } else if (t->has_raw_data) {
        memcpy(dst, t->raw_data.data, (size_t)n * sizeof *dst); /* little-endian, as ONNX stores it */
    } else {
        memcpy(dst, t->float_data, (size_t)n * sizeof *dst);
    }
    return NL_OK;
}

static nl_module *conv(importer *im, int i)
{
    const Onnx__NodeProto *n = im->g->node[i];
    static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", NULL};
    const Onnx__TensorProto *w = const_input(im, i, 1, "weight");
    const Onnx__TensorProto *b = has_input(n, 2) ? const_input(im, i, 2, "bias") : NULL;
    if (!w || (has_input(n, 2) && !b) || only_attrs(im, i, known) != NL_OK) return NULL;
    if (w->n_dims != 4 || w->dims[2] != w->dims[3]) {
        node_err(im, i, NL_EUNSUPPORTED, "the weight must be [out, in, k, k] (2-D, square)");
        return NULL;
    }
    int64_t k, s, pad, dil, group;
    const Onnx__AttributeProto *ap = attr(n, "auto_pad");
    if (ap && (!ap->has_s || ap->s.len != 6 || memcmp(ap->s.data, "NOTSET", 6) != 0)) {
        node_err(im, i, NL_EUNSUPPORTED, "auto_pad is not supported (give pads)");
        return NULL;
    }
    if (get_same(im, i, "kernel_shape", w->dims[2], 2, &k) || get_same(im, i, "strides", 1, 2, &s) ||
        get_same(im, i, "pads", 0, 4, &pad) || get_same(im, i, "dilations", 1, 2, &dil) ||
        get_int(im, i, "group", 1, &group))
        return NULL;
    if (k != w->dims[2] || dil != 1 || group != 1 || pad < 0 || s < 1) {
        node_err(im, i, NL_EUNSUPPORTED, "%s", k != w->dims[2] ? "kernel_shape differs from the weight's"
                 : dil != 1 ? "dilations other than 1 are not supported"
                 : group != 1 ? "grouped convolution (group > 1) is not supported" : "bad strides or pads");
        return NULL;
    }
    nl_module *m = make(im, i, "Conv2d", (const char *[]){"in", "out", "k", "stride", "padding", "bias", NULL},
                        (double[]){(double)w->dims[1], (double)w->dims[0], (double)k, (double)s, (double)pad, b != NULL});
    if (m && (fill(im, i, m, "weight", w, false) != NL_OK || (b && fill(im, i, m, "bias", b, false) != NL_OK))) {
        nl_module_release(m);
        return NULL;
    }
    return m;
}

static nl_module *gemm(importer *im, int i)
{
    const Onnx__NodeProto *n = im->g->node[i];
    static const char *const known[] = {"alpha", "beta", "transA", "transB", NULL};
    const Onnx__TensorProto *w = const_input(im, i, 1, "weight");
    const Onnx__TensorProto *b = has_input(n, 2) ? const_input(im, i, 2, "bias") : NULL;
    if (!w || (has_input(n, 2) && !b) || only_attrs(im, i, known) != NL_OK) return NULL;
    int64_t ta, tb;
    double alpha, beta;
    if (get_int(im, i, "transA", 0, &ta) || get_int(im, i, "transB", 0, &tb) ||
        get_float(im, i, "alpha", 1, &alpha) || get_float(im, i, "beta", 1, &beta))
        return NULL;
    if (ta != 0 || alpha != 1 || (b && beta != 1) || w->n_dims != 2) {
        node_err(im, i, NL_EUNSUPPORTED, "only y = x W^T + b (or x W + b) is supported: transA=0, alpha=beta=1, "
                 "a 2-D weight");
        return NULL;
    }
    if (im->ndim != 2) {
        node_err(im, i, NL_EUNSUPPORTED, "Gemm takes a 2-D input, this one is %d-D", im->ndim);
        return NULL;
    }
    const int64_t out = tb ? w->dims[0] : w->dims[1], in = tb ? w->dims[1] : w->dims[0];
    nl_module *m = make(im, i, "Linear", (const char *[]){"in", "out", "bias", NULL},
                        (double[]){(double)in, (double)out, b != NULL});
    if (m && (fill(im, i, m, "weight", w, !tb) != NL_OK || (b && fill(im, i, m, "bias", b, false) != NL_OK))) {
        nl_module_release(m);
        return NULL;
    }
    return m;
}

static nl_module *pool(importer *im, int i, bool avg, int64_t extra_pad)
{
    const Onnx__NodeProto *n = im->g->node[i];
    static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations", "ceil_mode",
                                        "count_include_pad", "storage_order", "auto_pad", NULL};
    if (only_attrs(im, i, known) != NL_OK) return NULL;
    if (n->n_output > 1 && *S(n->output[1])) {
        node_err(im, i, NL_EUNSUPPORTED, "the indices output is not supported");
        return NULL;
    }
    int64_t k, s, pad, dil, ceil_mode, cip, order;
    const Onnx__AttributeProto *ap = attr(n, "auto_pad");
    if (ap && (!ap->has_s || ap->s.len != 6 || memcmp(ap->s.data, "NOTSET", 6) != 0)) {
        node_err(im, i, NL_EUNSUPPORTED, "auto_pad is not supported (give pads)");
        return NULL;
    }
    if (!attr(n, "kernel_shape")) {
        node_err(im, i, NL_EFORMAT, "no kernel_shape");
        return NULL;
    }
    if (get_same(im, i, "kernel_shape", 1, 2, &k) || get_same(im, i, "strides", 1, 2, &s) ||
        get_same(im, i, "pads", 0, 4, &pad) || get_same(im, i, "dilations", 1, 2, &dil) ||
        get_int(im, i, "ceil_mode", 0, &ceil_mode) || get_int(im, i, "count_include_pad", 0, &cip) ||
        get_int(im, i, "storage_order", 0, &order))
        return NULL;
    if (dil != 1 || order != 0 || k < 1 || s < 1 || pad < 0) {
        node_err(im, i, NL_EUNSUPPORTED, "dilations and storage_order other than 1 and 0 are not supported");
        return NULL;
    }
    if (extra_pad) {
        if (pad) {
            node_err(im, i, NL_EUNSUPPORTED, "padding both in a Pad node and in the pool is not supported");
            return NULL;
        }
        pad = extra_pad, cip = 1; /* a Pad of zeros before the pool: the zeros count */
    }
    if (avg && pad > 0 && !cip) {
        node_err(im, i, NL_EUNSUPPORTED, "count_include_pad=0 with padding: nnlab's AvgPool2d divides by k*k");
        return NULL;
    }
    if (ceil_mode && im->ndim == 4) { /* fine when ceil and floor give the same size (H, W: NHWC on u8) */
        for (int d = im->u8 ? 1 : 2; d < (im->u8 ? 3 : 4); d++)
            if ((im->shape[d] + 2 * pad - k) % s != 0) {
                node_err(im, i, NL_EUNSUPPORTED, "ceil_mode=1 gives a larger output than nnlab's pooling here");
                return NULL;
            }
    }
    return make(im, i, avg ? "AvgPool2d" : "MaxPool2d", (const char *[]){"k", "stride", "padding", NULL},
                (double[]){(double)k, (double)s, (double)pad});
}

static nl_module *batchnorm(importer *im, int i)
{
    const Onnx__NodeProto *n = im->g->node[i];
    static const char *const known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    const Onnx__TensorProto *t[4] = {const_input(im, i, 1, "scale"), NULL, NULL, NULL};
    if (t[0]) t[1] = const_input(im, i, 2, "bias");
    if (t[1]) t[2] = const_input(im, i, 3, "mean");
    if (t[2]) t[3] = const_input(im, i, 4, "variance");
    if (!t[3] || only_attrs(im, i, known) != NL_OK) return NULL;
    int64_t training;
    double eps;
    if (get_int(im, i, "training_mode", 0, &training) || get_float(im, i, "epsilon", 1e-5, &eps)) return NULL;
    if (training || (n->n_output > 1 && *S(n->output[1]))) {
        node_err(im, i, NL_EUNSUPPORTED, "training mode is not supported (export in evaluation mode)");
        return NULL;
    }
    if (im->ndim < 2 || im->ndim > 4 || t[0]->n_dims != 1) {
        node_err(im, i, NL_EUNSUPPORTED, "expected a 2-D to 4-D input and 1-D statistics");
        return NULL;
    }
    nl_module *m = make(im, i, im->ndim == 4 ? "BatchNorm2d" : "BatchNorm1d", (const char *[]){"c", "eps", NULL},
                        (double[]){(double)t[0]->dims[0], eps});
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int k = 0; m && k < 4; k++)
        if (fill(im, i, m, names[k], t[k], false) != NL_OK) {
            nl_module_release(m);
            return NULL;
        }
    return m;
}

/* The node that alone takes value name, when it is op (else -1). */
static int only_consumer(importer *im, const char *name, const char *op)
{
    value *v = find(im, name);
    if (!v || v->consumers != 1 || v->consumer < 0) return -1;
    return strcmp(op_of(im->g->node[v->consumer]), op) == 0 ? v->consumer : -1;
}

/* Whether input k of node i is a constant scalar close to c. */
static bool const_near(importer *im, int i, size_t k, double c)
{
    const Onnx__NodeProto *n = im->g->node[i];
    value *v = k < n->n_input ? find(im, S(n->input[k])) : NULL;
    return v && v->t && numel(v->t) == 1 && fabs(tensor_at(v->t, 0) - c) <= 1e-6 * fabs(c);
}

/* GELU as PyTorch writes it: x / sqrt(2) -> Erf -> + 1 -> x * that -> * 0.5 (from the Div at i);
 * returns the last node (marking the nodes used when mark), or -1. */
static int gelu_at(importer *im, int i, bool mark)
{
    const Onnx__NodeProto *d = im->g->node[i];
    if (strcmp(op_of(d), "Div") != 0 || d->n_input != 2 || strcmp(S(d->input[0]), im->cur) != 0 ||
        !const_near(im, i, 1, M_SQRT2))
        return -1;
    int e = only_consumer(im, d->output[0], "Erf");
    int a = e >= 0 ? only_consumer(im, im->g->node[e]->output[0], "Add") : -1;
    if (a < 0 || im->g->node[a]->n_input != 2) return -1;
    const Onnx__NodeProto *an = im->g->node[a];
    const int one = strcmp(S(an->input[0]), im->g->node[e]->output[0]) == 0 ? 1 : 0;
    int m1 = const_near(im, a, (size_t)one, 1.0) ? only_consumer(im, an->output[0], "Mul") : -1;
    if (m1 < 0 || im->g->node[m1]->n_input != 2) return -1;
    const Onnx__NodeProto *mn = im->g->node[m1];
    if (strcmp(S(mn->input[0]), im->cur) != 0 && strcmp(S(mn->input[1]), im->cur) != 0) return -1;
    int m2 = only_consumer(im, mn->output[0], "Mul");
    if (m2 < 0 || im->g->node[m2]->n_input != 2) return -1;
    const int half = strcmp(S(im->g->node[m2]->input[0]), mn->output[0]) == 0 ? 1 : 0;
    if (!const_near(im, m2, (size_t)half, 0.5)) return -1;
    if (mark) im->used[i] = im->used[e] = im->used[a] = im->used[m1] = im->used[m2] = true;
    return m2;
}

/* Pad as PyTorch writes it before an average pool: zeros, the same on every side of H and W (none
 * on N and C), taken into the AveragePool that alone follows it. */
static nl_module *pad(importer *im, int i, int *last)
{
    const Onnx__NodeProto *n = im->g->node[i];
    const Onnx__AttributeProto *mode = attr(n, "mode");
    static const char *const known[] = {"mode", NULL};
    if (only_attrs(im, i, known) != NL_OK) return NULL;
    if (mode && (!mode->has_s || mode->s.len != 8 || memcmp(mode->s.data, "constant", 8) != 0)) {
        node_err(im, i, NL_EUNSUPPORTED, "only constant (zero) padding is supported");
        return NULL;
    }
    const Onnx__TensorProto *pads = const_input(im, i, 1, "pads");
    const Onnx__TensorProto *fillv = has_input(n, 2) ? const_input(im, i, 2, "constant value") : NULL;
    if (!pads || (has_input(n, 2) && !fillv)) return NULL;
    if ((fillv && (numel(fillv) != 1 || tensor_at(fillv, 0) != 0)) || im->ndim != 4 || numel(pads) != 8) {
        node_err(im, i, NL_EUNSUPPORTED, "only zero padding of a 4-D input is supported");
        return NULL;
    }
    const double p = tensor_at(pads, 2);
    for (size_t k = 0; k < 8; k++)
        if (tensor_at(pads, k) != ((k % 4) < 2 ? 0 : p) || p < 0 || p > 1 << 20) {
            node_err(im, i, NL_EUNSUPPORTED, "only the same padding on every side of H and W is supported");
            return NULL;
        }
    const int next = only_consumer(im, n->output[0], "AveragePool");
    if (next < 0) {
        node_err(im, i, NL_EUNSUPPORTED, "a Pad that an AveragePool does not alone take is not supported");
        return NULL;
    }
    im->used[next] = true;
    *last = next;
    return pool(im, next, true, (int64_t)p);
}

/* ---------------------------------------------------------------- QDQ (int8) ----------- */

/* A per-tensor activation quantization: scale input k and zero point input k + 1 (u8, absent: 0). */
static bool act_qparams(importer *im, int i, double *scale, double *zp)
{
    const Onnx__NodeProto *n = im->g->node[i];
    const Onnx__TensorProto *s = const_input(im, i, 1, "scale");
    const Onnx__TensorProto *z = has_input(n, 2) ? const_input(im, i, 2, "zero point") : NULL;
    if (!s || (has_input(n, 2) && !z)) return false;
    *scale = numel(s) == 1 ? tensor_at(s, 0) : NAN;
    *zp = z && numel(z) == 1 ? tensor_at(z, 0) : 0;
    if (!(*scale > 0 && isfinite(*scale)) || (z && (z->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 || numel(z) != 1))) {
        node_err(im, i, NL_EUNSUPPORTED, "only per-tensor u8 activations with a positive scale are supported");
        return false;
    }
    return true;
}

/* Quantize / Dequantize: qparams = {scale, zero point}. */
static nl_module *affine(importer *im, int i, const char *type)
{
    double scale, zp;
    if (!act_qparams(im, i, &scale, &zp)) return NULL;
    nl_module *m = make(im, i, type, NULL, NULL);
    if (m) {
        float *qp = nl_tensor_f32(nl_module_param(m, "qparams")->value);
        qp[0] = (float)scale, qp[1] = (float)zp;
    }
    return m;
}

/* The DequantizeLinear of constants (weights, biases) whose output input k of node i is. */
static const Onnx__NodeProto *dq_input(importer *im, int i, size_t k)
{
    const Onnx__NodeProto *n = im->g->node[i];
    value *v = k < n->n_input && *S(n->input[k]) ? find(im, n->input[k]) : NULL;
    return v && v->dq >= 0 ? im->g->node[v->dq] : NULL;
}

static const Onnx__TensorProto *const_of(importer *im, const Onnx__NodeProto *n, size_t k)
{
    value *v = k < n->n_input && *S(n->input[k]) ? find(im, n->input[k]) : NULL;
    return v ? v->t : NULL;
}

/* QConv2d / QLinear from DequantizeLinear(x) at i -> Conv / Gemm (weights and bias dequantized
 * from constants) -> [Relu] -> [QuantizeLinear] -> [MaxPool k, stride k]; NULL with the error set
 * (or, *plain set, nothing of that pattern: x is a plain Dequantize). */
static nl_module *qlayer(importer *im, int i, int *last, bool *plain)
{
    const Onnx__NodeProto *dqn = im->g->node[i];
    int c = only_consumer(im, dqn->output[0], "Conv");
    const bool conv = c >= 0;
    if (!conv) c = only_consumer(im, dqn->output[0], "Gemm");
    const Onnx__NodeProto *wq = c >= 0 ? dq_input(im, c, 1) : NULL;
    *plain = !wq;
    if (!wq) return NULL;
    double xs, xz;
    if (!act_qparams(im, i, &xs, &xz)) return NULL;
    /* the weights: u8 (zero point 128) or i8 (zero point 0) levels, a scale per output channel */
    const Onnx__TensorProto *w = const_of(im, wq, 0), *ws = const_of(im, wq, 1), *wz = const_of(im, wq, 2);
    const int32_t wt = w ? w->data_type : 0;
    const int64_t out = w && w->n_dims >= 2 ? w->dims[0] : 0;
    int64_t axis;
    const Onnx__AttributeProto *ax = attr(wq, "axis");
    axis = ax && ax->has_i ? ax->i : 1;
    const double wzero = wt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 ? 128 : 0;
    bool ok = w && ws && (wt == ONNX__TENSOR_PROTO__DATA_TYPE__UINT8 || wt == ONNX__TENSOR_PROTO__DATA_TYPE__INT8) &&
              (int)w->n_dims == (conv ? 4 : 2) && ws->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
              numel(ws) == out && out > 0 && (out == 1 || axis == 0);
    for (int64_t o = 0; ok && wz && o < numel(wz); o++) ok = wz->data_type == wt && numel(wz) == out && tensor_at(wz, (size_t)o) == wzero;
    ok = ok && (wz || wzero == 0);
    if (!ok) {
        node_err(im, c, NL_EUNSUPPORTED, "its weights must be u8 (zero point 128) or i8 (zero point 0) levels with a "
                 "float scale per output channel (axis 0)");
        return NULL;
    }
    /* the operator's own attributes: as the float layer's */
    int64_t k = conv ? w->dims[2] : 1, s = 1, pad = 0, tb = 1;
    if (conv) {
        int64_t dil, group;
        if (get_same(im, c, "strides", 1, 2, &s) || get_same(im, c, "pads", 0, 4, &pad) ||
            get_same(im, c, "dilations", 1, 2, &dil) || get_int(im, c, "group", 1, &group))
            return NULL;
        if (w->dims[2] != w->dims[3] || dil != 1 || group != 1) {
            node_err(im, c, NL_EUNSUPPORTED, "only square kernels, dilations 1 and group 1 are supported");
            return NULL;
        }
    } else if (get_int(im, c, "transB", 0, &tb) || tb != 1) {
        node_err(im, c, NL_EUNSUPPORTED, "a quantized Gemm must have transB=1");
        return NULL;
    }
    /* bias: the float one nnlab writes beside the int32 levels ("<p>bias" for "<p>bias_quantized"), else
     * the levels times their scale */
    const Onnx__NodeProto *bq = dq_input(im, c, 2);
    const Onnx__TensorProto *b = bq ? const_of(im, bq, 0) : NULL, *bs = bq ? const_of(im, bq, 1) : NULL;
    if (has_input(im->g->node[c], 2) && (!b || !bs || numel(b) != out || numel(bs) != out)) {
        node_err(im, c, NL_EUNSUPPORTED, "its bias must be int32 levels dequantized with a scale per channel");
        return NULL;
    }
    const Onnx__TensorProto *bf = NULL;
    if (b) {
        const size_t n = strlen(S(b->name));
        if (n > 10 && strcmp(b->name + n - 10, "_quantized") == 0) {
            char name[600];
            snprintf(name, sizeof name, "%.*s", (int)(n - 10), b->name);
            value *v = find(im, name);
            if (v && v->t && v->t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && numel(v->t) == out) bf = v->t;
        }
    }
    /* after it: ReLU, the requantization, a fused max pool */
    int end = c, r = only_consumer(im, im->g->node[c]->output[0], "Relu");
    if (r >= 0) end = r;
    int q = only_consumer(im, im->g->node[end]->output[0], "QuantizeLinear");
    double ys = 1, yz = 0;
    if (q >= 0 && !act_qparams(im, q, &ys, &yz)) return NULL;
    if (q >= 0) end = q;
    int pool = conv && q >= 0 ? only_consumer(im, im->g->node[end]->output[0], "MaxPool") : -1;
    int64_t pk = 0;
    if (pool >= 0) {
        int64_t ps, pp, cm;
        if (get_same(im, pool, "kernel_shape", 0, 2, &pk) || get_same(im, pool, "strides", 1, 2, &ps) ||
            get_same(im, pool, "pads", 0, 4, &pp) || get_int(im, pool, "ceil_mode", 0, &cm))
            return NULL;
        if (pk < 2 || pk > 3 || ps != pk || pp != 0 || cm != 0 || attr(im->g->node[pool], "dilations")) pool = -1, pk = 0;
        else end = pool;
    }
    nl_module *m = conv ? make(im, c, "QConv2d", (const char *[]){"in", "out", "k", "stride", "padding", "relu", "f32", "pool", NULL},
                               (double[]){(double)w->dims[1], (double)out, (double)k, (double)s, (double)pad, r >= 0, q < 0, (double)pk})
                        : make(im, c, "QLinear", (const char *[]){"in", "out", "relu", "f32", NULL},
                               (double[]){(double)w->dims[1], (double)out, r >= 0, q < 0});
    if (!m) return NULL;
    int8_t *wd = nl_tensor_data(nl_module_param(m, "weight")->value);
    float *wsd = nl_tensor_f32(nl_module_param(m, "weight_scale")->value);
    float *bd = nl_tensor_f32(nl_module_param(m, "bias")->value);
    float *qp = nl_tensor_f32(nl_module_param(m, "qparams")->value);
    for (int64_t e = 0; e < numel(w); e++) wd[e] = (int8_t)(tensor_at(w, (size_t)e) - wzero);
    for (int64_t o = 0; o < out; o++) {
        wsd[o] = (float)tensor_at(ws, (size_t)o);
        bd[o] = bf ? (float)tensor_at(bf, (size_t)o) : b ? (float)(tensor_at(b, (size_t)o) * tensor_at(bs, (size_t)o)) : 0;
    }
    qp[0] = (float)xs, qp[1] = (float)xz, qp[2] = (float)ys, qp[3] = (float)yz, qp[4] = qp[5] = NAN;
    im->used[c] = true;
    if (r >= 0) im->used[r] = true;
    if (q >= 0) im->used[q] = true;
    if (pool >= 0) im->used[pool] = true;
    *last = end;
    return m;
}

/* The layer of node i (and the nodes a pattern takes with it); *last is the node whose output the
 * layer gives. NULL with the error set. */
static nl_module *layer(importer *im, int i, int *last)
{
    const Onnx__NodeProto *n = im->g->node[i];
    const char *op = op_of(n);
    *last = i;
    if (im->u8) { /* u8 activations: the quantized layers, and the layout nnlab's QLinear reads itself */
        if (strcmp(op, "DequantizeLinear") == 0) {
            bool plain;
            nl_module *m = qlayer(im, i, last, &plain);
            return m || !plain ? m : affine(im, i, "Dequantize");
        }
        if (strcmp(op, "MaxPool") == 0) {
            nl_module *m = pool(im, i, false, 0);
            nl_module *qm = m ? make(im, i, "QMaxPool2d", (const char *[]){"k", "stride", "padding", NULL},
                                    (double[]){m->args[0], m->args[1], m->args[2]}) : NULL;
            nl_module_release(m);
            return qm;
        }
        node_err(im, i, NL_EUNSUPPORTED, "%s on u8 activations is not one nnlab can represent", op);
        return NULL;
    }
    if (strcmp(op, "QuantizeLinear") == 0) return affine(im, i, "Quantize");
    if (strcmp(op, "Conv") == 0) return conv(im, i);
    if (strcmp(op, "Gemm") == 0) return gemm(im, i);
    if (strcmp(op, "MaxPool") == 0 || strcmp(op, "AveragePool") == 0) return pool(im, i, op[0] == 'A', 0);
    if (strcmp(op, "BatchNormalization") == 0) return batchnorm(im, i);
    static const char *const simple[][2] = {{"Relu", "ReLU"}, {"Sigmoid", "Sigmoid"}, {"Tanh", "Tanh"},
                                            {"Identity", "Identity"}};
    for (size_t k = 0; k < sizeof simple / sizeof *simple; k++)
        if (strcmp(op, simple[k][0]) == 0) {
            if (n->n_attribute) {
                node_err(im, i, NL_EUNSUPPORTED, "attribute '%s' is not supported", S(n->attribute[0]->name));
                return NULL;
            }
            return make(im, i, simple[k][1], NULL, NULL);
        }
    if (strcmp(op, "LeakyRelu") == 0) {
        double alpha;
        static const char *const known[] = {"alpha", NULL};
        if (only_attrs(im, i, known) || get_float(im, i, "alpha", 0.01, &alpha)) return NULL;
        return make(im, i, "LeakyReLU", (const char *[]){"slope", NULL}, (double[]){alpha});
    }
    if (strcmp(op, "Gelu") == 0) {
        const Onnx__AttributeProto *a = attr(n, "approximate");
        if ((a && (!a->has_s || a->s.len != 4 || memcmp(a->s.data, "none", 4) != 0)) || n->n_attribute > (a != NULL)) {
            node_err(im, i, NL_EUNSUPPORTED, "only the exact GELU (approximate='none') is supported");
            return NULL;
        }
        return make(im, i, "GELU", NULL, NULL);
    }
    if (strcmp(op, "Div") == 0) {
        int end = gelu_at(im, i, true);
        if (end >= 0) {
            *last = end;
            return make(im, i, "GELU", NULL, NULL);
        }
    }
    if (strcmp(op, "Softmax") == 0) {
        int64_t axis;
        static const char *const known[] = {"axis", NULL};
        if (only_attrs(im, i, known) || get_int(im, i, "axis", im->opset >= 13 ? -1 : 1, &axis)) return NULL;
        if (axis < 0) axis += im->ndim;
        if (axis != im->ndim - 1) {
            node_err(im, i, NL_EUNSUPPORTED, "softmax over axis %lld: nnlab's Softmax is over the last one", (long long)axis);
            return NULL;
        }
        return make(im, i, "Softmax", NULL, NULL);
    }
    if (strcmp(op, "Flatten") == 0 || strcmp(op, "GlobalAveragePool") == 0) {
        const bool gap = op[0] == 'G';
        int fl = i;
        if (gap) { /* nnlab's GlobalAvgPool gives [N, C]: ONNX's [N, C, 1, 1] then Flatten */
            fl = only_consumer(im, n->output[0], "Flatten");
            if (fl < 0) {
                node_err(im, i, NL_EUNSUPPORTED, "GlobalAveragePool must be followed by Flatten (nnlab's "
                         "GlobalAvgPool gives [N, C])");
                return NULL;
            }
            im->used[fl] = true;
            *last = fl;
        }
        int64_t axis;
        static const char *const known[] = {"axis", NULL};
        if (only_attrs(im, fl, known) || get_int(im, fl, "axis", 1, &axis)) return NULL;
        if (axis != 1 && axis != 1 - (gap ? 4 : im->ndim)) {
            node_err(im, fl, NL_EUNSUPPORTED, "Flatten with axis %lld: nnlab's Flatten keeps the first dimension",
                     (long long)axis);
            return NULL;
        }
        if (gap && n->n_attribute) {
            node_err(im, i, NL_EUNSUPPORTED, "attribute '%s' is not supported", S(n->attribute[0]->name));
            return NULL;
        }
        return make(im, i, gap ? "GlobalAvgPool" : "Flatten", NULL, NULL);
    }
    if (strcmp(op, "Pad") == 0) return pad(im, i, last);
    if (strcmp(op, "Dropout") == 0) {
        double ratio = 0.5;
        if (get_float(im, i, "ratio", 0.5, &ratio)) return NULL;
        if (has_input(n, 1)) {
            const Onnx__TensorProto *r = const_input(im, i, 1, "ratio");
            if (!r) return NULL;
            ratio = numel(r) == 1 ? tensor_at(r, 0) : NAN;
        }
        if (has_input(n, 2)) {
            const Onnx__TensorProto *t = const_input(im, i, 2, "training_mode");
            if (!t) return NULL;
            if (numel(t) != 1 || tensor_at(t, 0) != 0) {
                node_err(im, i, NL_EUNSUPPORTED, "training mode is not supported");
                return NULL;
            }
        }
        if (n->n_output > 1 && *S(n->output[1]) && find(im, n->output[1])->consumers) {
            node_err(im, i, NL_EUNSUPPORTED, "its mask output is used");
            return NULL;
        }
        return make(im, i, "Dropout", (const char *[]){"p", NULL}, (double[]){ratio});
    }
    node_err(im, i, NL_EUNSUPPORTED, "operator %s is not one nnlab can represent", op);
    return NULL;
}

/* ---------------------------------------------------------------- the walk --------------- */

typedef struct {
    nl_module *m;      /* the container being filled (a reference) */
    const char *skip;  /* a Residual's input, which its Add takes */
    int ndim;          /* its shape there */
    int64_t shape[NL_MAX_DIMS];
} open_block;

/* The Add (after node i) that joins value name back, or -1. */
static int joining_add(importer *im, int from, const char *name)
{
    for (size_t j = (size_t)from; j < im->g->n_node; j++) {
        const Onnx__NodeProto *n = im->g->node[j];
        if (strcmp(op_of(n), "Add") == 0 && n->n_input == 2 &&
            (strcmp(S(n->input[0]), name) == 0 || strcmp(S(n->input[1]), name) == 0))
            return (int)j;
    }
    return -1;
}

static nl_status add_layer(importer *im, nl_module *c, nl_module *m, int i)
{
    int64_t out[NL_MAX_DIMS], macs;
    int nd;
    nl_status st = nl_module_infer(m, im->ndim, im->shape, &nd, out, &macs);
    if (st != NL_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", nl_errmsg());
        return node_err(im, i, NL_EUNSUPPORTED, "%s", why);
    }
    if ((st = nl_module_add(c, m)) != NL_OK) return st;
    im->ndim = nd;
    memcpy(im->shape, out, (size_t)nd * sizeof *out);
    return NL_OK;
}

/* On u8 activations, the layout steps of nnlab's export before a QLinear (which reads NHWC rows
 * itself): Transpose to NHWC, then Flatten, then the quantized Gemm. Skipped (true) when node i is
 * one of them; the quantized layer after them takes the u8 map as it is. */
static bool u8_layout(importer *im, int i)
{
    const Onnx__NodeProto *n = im->g->node[i];
    int fl = i;
    if (strcmp(op_of(n), "Transpose") == 0) {
        const Onnx__AttributeProto *perm = attr(n, "perm");
        if (!perm || perm->n_ints != 4 || perm->ints[0] != 0 || perm->ints[1] != 2 || perm->ints[2] != 3 ||
            perm->ints[3] != 1 || n->n_attribute != 1)
            return false;
        fl = only_consumer(im, n->output[0], "Flatten");
    } else if (strcmp(op_of(n), "Flatten") != 0) {
        return false;
    }
    int64_t axis;
    if (fl < 0 || get_int(im, fl, "axis", 1, &axis) != NL_OK || axis != 1 || im->g->node[fl]->n_attribute > 1) return false;
    const int dq = only_consumer(im, im->g->node[fl]->output[0], "DequantizeLinear");
    if (dq < 0 || only_consumer(im, im->g->node[dq]->output[0], "Gemm") < 0) return false;
    im->used[fl] = true;
    im->cur = im->g->node[fl]->output[0];
    return true;
}

static nl_status walk(importer *im, open_block *stack, int *depth)
{
    const size_t nn = im->g->n_node;
    for (size_t u = 0; u < nn; u++) {
        const int i = (int)u;
        if (im->used[i]) continue;
        nl_status st = nl_check_interrupt();
        if (st != NL_OK) return st;
        const Onnx__NodeProto *n = im->g->node[i];
        open_block *top = &stack[*depth - 1];
        if (strcmp(op_of(n), "Add") == 0 && n->n_input == 2 && top->skip) {
            const char *a = S(n->input[0]), *b = S(n->input[1]);
            if ((strcmp(a, im->cur) == 0 && strcmp(b, top->skip) == 0) ||
                (strcmp(b, im->cur) == 0 && strcmp(a, top->skip) == 0)) {
                if (im->ndim != top->ndim || memcmp(im->shape, top->shape, (size_t)im->ndim * sizeof *im->shape))
                    return node_err(im, i, NL_EUNSUPPORTED, "the skip connection adds values of different shapes");
                nl_module *res = top->m;
                (*depth)--;
                st = nl_module_add(stack[*depth - 1].m, res);
                nl_module_release(res);
                if (st != NL_OK) return st;
                im->cur = n->output[0];
                continue;
            }
        }
        value *cv = find(im, im->cur);
        const bool takes_cur = n->n_input > 0 && strcmp(S(n->input[0]), im->cur) == 0;
        if (!takes_cur)
            return node_err(im, i, NL_EUNSUPPORTED, "it takes '%s', not '%s' (the output of the layer before it): "
                            "a branch nnlab cannot represent (nn.Residual adds a block's input unchanged)",
                            n->n_input ? S(n->input[0]) : "", im->cur);
        for (size_t k = 1; k < n->n_input; k++) {
            value *v = *S(n->input[k]) ? find(im, n->input[k]) : NULL;
            if (v && !v->t)
                return node_err(im, i, NL_EUNSUPPORTED, "input %zu ('%s') is computed, not a constant", k + 1, n->input[k]);
        }
        if (cv->consumers > 1 && gelu_at(im, i, false) < 0) {
            int add = joining_add(im, i + 1, im->cur);
            if (cv->consumers != 2 || add < 0)
                return node_err(im, i, NL_EUNSUPPORTED, "'%s' feeds %d nodes: a branch nnlab cannot represent",
                                im->cur, cv->consumers);
            if (*depth >= NL_MAX_DEPTH)
                return node_err(im, i, NL_EUNSUPPORTED, "skip connections nest deeper than %d", NL_MAX_DEPTH);
            open_block *b = &stack[(*depth)++];
            *b = (open_block){.m = nl_module_new(nl_module_type_find("Residual"), NULL), .skip = im->cur,
                              .ndim = im->ndim};
            memcpy(b->shape, im->shape, sizeof b->shape);
            if (!b->m) return nl_errcode();
        }
        if (im->u8 && u8_layout(im, i)) continue;
        int last;
        nl_module *m = layer(im, i, &last);
        if (!m) return nl_errcode();
        st = add_layer(im, stack[*depth - 1].m, m, i);
        const int f32 = nl_module_arg_index(m->type, "f32");
        if (m->type == nl_module_type_find("Quantize") || m->type == nl_module_type_find("Dequantize"))
            im->u8 = m->type == nl_module_type_find("Quantize");
        else if (f32 >= 0)
            im->u8 = m->args[f32] == 0;
        nl_module_release(m);
        if (st != NL_OK) return st;
        im->cur = im->g->node[last]->output[0];
    }
    if (*depth > 1) return bad(im->f.path, "a skip connection from '%s' never joins", stack[*depth - 1].skip);
    if (im->u8) return bad(im->f.path, "the graph ends on u8 activations (nnlab's networks return float)");
    if (strcmp(im->cur, S(im->g->output[0]->name)) != 0)
        return bad(im->f.path, "the graph output '%s' is not the end of the chain of layers ('%s')",
                   S(im->g->output[0]->name), im->cur);
    return NL_OK;
}

/* The input's shape from the graph: a symbolic first dimension (the batch) counts as 1. */
static nl_status input_shape(importer *im)
{
    const Onnx__ValueInfoProto *in = NULL;
    for (size_t i = 0; i < im->g->n_input; i++)
        if (strcmp(S(im->g->input[i]->name), im->cur) == 0) in = im->g->input[i];
    const Onnx__TypeProto *t = in ? in->type : NULL;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type || !t->tensor_type->shape)
        return bad(im->f.path, "the graph input '%s' has no tensor type with a shape", im->cur);
    if (t->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return bad(im->f.path, "the graph input '%s' is not float32", im->cur);
    const Onnx__TensorShapeProto *s = t->tensor_type->shape;
    if (s->n_dim < 1 || s->n_dim > NL_MAX_DIMS)
        return bad(im->f.path, "the graph input has %zu dimensions (1 to %d)", s->n_dim, NL_MAX_DIMS);
    im->ndim = (int)s->n_dim;
    for (size_t d = 0; d < s->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dim = s->dim[d];
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && dim->dim_value >= 1 &&
            dim->dim_value <= ((int64_t)1 << 40))
            im->shape[d] = dim->dim_value;
        else if (d == 0)
            im->shape[d] = 1;
        else
            return bad(im->f.path, "the graph input's dimension %zu is not a fixed size from 1 to 2^40 (nnlab "
                       "needs every size but the batch)", d + 1);
    }
    return NL_OK;
}

nl_module *nl_onnx_load(const char *path)
{
    importer im = {0};
    nl_status st = file_open(&im.f, path);
    if (st != NL_OK) return NULL;
    im.g = im.f.model->graph;
    open_block stack[NL_MAX_DEPTH + 1];
    int depth = 0;
    /* Building initialises parameters from the global RNG (then overwritten): keep the caller's
     * stream. Every parameter comes from the file, so its size bounds them, twice over for their
     * gradients (and 1 MiB spare). */
    nl_rng_state rng = nl_rng_get_state();
    int64_t budget = nl_alloc_budget(2 * (int64_t)im.f.file_size + (1 << 20));
    st = validate(&im);
    if (st == NL_OK) st = input_shape(&im);
    if (st == NL_OK) {
        stack[0] = (open_block){.m = nl_module_new(nl_module_type_find("Sequential"), NULL)};
        st = stack[0].m ? NL_OK : nl_errcode();
        if (st == NL_OK) depth = 1;
    }
    if (st == NL_OK) st = walk(&im, stack, &depth);
    nl_alloc_budget(budget);
    nl_rng_set_state(rng);
    nl_module *net = depth > 0 ? stack[0].m : NULL;
    for (int d = 1; d < depth; d++) nl_module_release(stack[d].m);
    if (st != NL_OK) {
        nl_module_release(net);
        net = NULL;
    } else {
        nl_module_train(net, false);
    }
    free(im.v);
    free(im.used);
    file_close(&im.f);
    return net;
}
