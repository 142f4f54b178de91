/* test_ops.c: core/tensor/ops.c and the CPU backend against naive loops written here: elementwise ops on
 * contiguous, transposed, sliced and expanded views; every dtype conversion; promotion and
 * broadcasting rules and their errors; reductions; matmul; random fills; devices; and results that
 * do not depend on the thread count. Prints the elementwise add bandwidth as information. */
#include "nl.h"
#include "testhelp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define T(dt, ...) make(dt, NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__))

static const nl_dtype all_dtypes[] = {NL_F32, NL_I8, NL_I32, NL_U8};
static const char *dn(nl_dtype t) { return nl_dtype_info(t)->name; }

/* ---------------------------------------------------------------- helpers --------------- */

static nl_tensor *make(nl_dtype dt, int nd, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(dt, nd, shape, NL_CPU);
    if (!t) {
        printf("cannot allocate a test tensor: %s\n", nl_errmsg());
        exit(1);
    }
    return t;
}

static void unravel(int64_t k, int nd, const int64_t *shape, int64_t *idx)
{
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = shape[d] ? k % shape[d] : 0;
        k = shape[d] ? k / shape[d] : 0;
    }
}

static double at(const nl_tensor *t, const int64_t *idx)
{
    double v = -12345;
    if (nl_tensor_get(t, idx, &v) != NL_OK) printf("get failed: %s\n", nl_errmsg());
    return v;
}

/* Element k of t in logical (row-major) order. */
static double flat(const nl_tensor *t, int64_t k)
{
    int64_t idx[NL_MAX_DIMS];
    unravel(k, t->ndim, t->shape, idx);
    return at(t, idx);
}

static void set_flat(nl_tensor *t, int64_t k, double v)
{
    int64_t idx[NL_MAX_DIMS];
    unravel(k, t->ndim, t->shape, idx);
    nl_tensor_set(t, idx, v);
}

/* The element of t that broadcasting maps to idx in an nd-dimensional result. */
static double at_bcast(const nl_tensor *t, int nd, const int64_t *idx)
{
    int64_t ti[NL_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        int od = d + nd - t->ndim;
        ti[d] = t->shape[d] == 1 ? 0 : idx[od];
    }
    return at(t, ti);
}

/* Deterministic values in [lo, hi), whole numbers when integer. */
static void fill_pattern(nl_tensor *t, unsigned seed, double lo, double hi, bool integer)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (int64_t k = 0; k < nl_tensor_numel(t); k++) {
        x = x * 1664525u + 1013904223u;
        double v = lo + (hi - lo) * (double)(x >> 8) / 16777216.0;
        set_flat(t, k, integer ? floor(v) : v);
    }
}

static bool same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static bool shape_is(const nl_tensor *t, int nd, const int64_t *shape)
{
    if (t->ndim != nd) return false;
    for (int d = 0; d < nd; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

static bool errmsg_is(const char *want)
{
    if (strcmp(nl_errmsg(), want) == 0) return true;
    printf("  message: \"%s\"\n  wanted:  \"%s\"\n", nl_errmsg(), want);
    return false;
}

/* Wraps an integer result to a dtype the way two's-complement hardware does. */
static double wrap(int64_t r, nl_dtype t)
{
    switch (t) {
    case NL_I8: return (double)(int8_t)(uint8_t)(r & 0xff);
    case NL_U8: return (double)(r & 0xff);
    case NL_I32: return (double)(int32_t)(uint32_t)(r & 0xffffffff);
    default: return (double)r;
    }
}

/* The conversion nl_copy promises: NaN -> 0, round half to even, saturate. */
static double ref_convert(double v, nl_dtype t)
{
    if (t == NL_F32) return (float)v;
    if (isnan(v)) return 0;
    v = nearbyint(v);
    return v < nl_dtype_info(t)->min ? nl_dtype_info(t)->min : v > nl_dtype_info(t)->max ? nl_dtype_info(t)->max : v;
}

/* ---------------------------------------------------------------- references ------------ */

static nl_dtype ref_binary_dtype(nl_binop op, nl_dtype a, nl_dtype b)
{
    if (op >= NL_BIN_EQ) return NL_U8;
    nl_dtype t = a == b ? a : (a == NL_F32 || b == NL_F32) ? NL_F32 : NL_I32;
    return op == NL_BIN_DIV ? NL_F32 : t;
}

static int64_t ref_ipow(int64_t x, int64_t y)
{
    if (y < 0) return x == 1 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : 0;
    uint64_t r = 1;
    for (int64_t i = 0; i < y; i++) r *= (uint64_t)x;
    return (int64_t)r;
}

/* x op y computed as a result of dtype rt. */
static double ref_binary(nl_binop op, nl_dtype rt, double x, double y)
{
    switch (op) {
    case NL_BIN_EQ: return x == y;
    case NL_BIN_NE: return x != y;
    case NL_BIN_LT: return x < y;
    case NL_BIN_LE: return x <= y;
    case NL_BIN_GT: return x > y;
    case NL_BIN_GE: return x >= y;
    default: break;
    }
    if (rt == NL_F32) {
        float a = (float)x, b = (float)y;
        switch (op) {
        case NL_BIN_ADD: return a + b;
        case NL_BIN_SUB: return a - b;
        case NL_BIN_MUL: return a * b;
        case NL_BIN_DIV: return a / b;
        case NL_BIN_POW: return powf(a, b);
        case NL_BIN_MAX: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
        case NL_BIN_MIN: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
        default: return NAN;
        }
    }
    int64_t a = (int64_t)x, b = (int64_t)y;
    switch (op) {
    case NL_BIN_ADD: return wrap(a + b, rt);
    case NL_BIN_SUB: return wrap(a - b, rt);
    case NL_BIN_MUL: return wrap(a * b, rt);
    case NL_BIN_POW: return wrap(ref_ipow(a, b), rt);
    case NL_BIN_MAX: return a > b ? a : b;
    case NL_BIN_MIN: return a < b ? a : b;
    default: return NAN;
    }
}

static double ref_unary(nl_unop op, nl_dtype rt, double v)
{
    if (rt != NL_F32) {
        int64_t x = (int64_t)v;
        switch (op) {
        case NL_UN_NEG: return wrap(-x, rt);
        case NL_UN_ABS: return wrap(x < 0 ? -x : x, rt);
        case NL_UN_RELU: return x < 0 ? 0 : x;
        default: return NAN;
        }
    }
    float x = (float)v;
    switch (op) {
    case NL_UN_NEG: return -x;
    case NL_UN_RELU: return isnan(x) ? x : x < 0 ? 0 : x;
    case NL_UN_EXP: return expf(x);
    case NL_UN_LOG: return logf(x);
    case NL_UN_ABS: return fabsf(x);
    case NL_UN_SQRT: return sqrtf(x);
    case NL_UN_TANH: return tanhf(x);
    case NL_UN_SIGMOID: return 1.0f / (1.0f + expf(-x));
    default: return NAN;
    }
}

/* ---------------------------------------------------------------- checkers -------------- */

/* nl_binary_new(op, a, b) against the reference, element by element with broadcasting. */
static void check_binary(nl_binop op, const nl_tensor *a, const nl_tensor *b, const char *label)
{
    nl_tensor *out = nl_binary_new(op, a, b);
    if (!out) {
        CHECK(0, "%s %s: %s", nl_binop_name(op), label, nl_errmsg());
        return;
    }
    nl_dtype rt = ref_binary_dtype(op, a->dtype, b->dtype);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        shape[d] = sa == 1 ? sb : sa;
    }
    CHECK(out->dtype == rt, "%s %s: result dtype %s, expected %s", nl_binop_name(op), label, dn(out->dtype), dn(rt));
    CHECK(shape_is(out, nd, shape), "%s %s: result shape", nl_binop_name(op), label);
    int64_t bad = 0, first = -1;
    double got = 0, want = 0;
    for (int64_t k = 0; k < nl_tensor_numel(out); k++) {
        int64_t idx[NL_MAX_DIMS];
        unravel(k, nd, shape, idx);
        double w = ref_binary(op, rt, at_bcast(a, nd, idx), at_bcast(b, nd, idx)), g = at(out, idx);
        if (!same(g, w) && bad++ == 0) first = k, got = g, want = w;
    }
    CHECK(bad == 0, "%s %s: %lld wrong, first at %lld: %.9g, expected %.9g", nl_binop_name(op), label,
          (long long)bad, (long long)first, got, want);
    nl_tensor_release(out);
}

/* nl_unary_new(op, a) against the reference (transcendentals within 2 ulp). */
static void check_unary(nl_unop op, const nl_tensor *a, const char *label)
{
    nl_tensor *out = nl_unary_new(op, a);
    if (!out) {
        CHECK(0, "%s %s: %s", nl_unop_name(op), label, nl_errmsg());
        return;
    }
    bool keeps = op == NL_UN_NEG || op == NL_UN_ABS || op == NL_UN_RELU;
    nl_dtype rt = keeps ? a->dtype : NL_F32;
    CHECK(out->dtype == rt && nl_same_shape(out, a), "%s %s: result dtype %s", nl_unop_name(op), label, dn(out->dtype));
    int64_t bad = 0;
    for (int64_t k = 0; k < nl_tensor_numel(a); k++) {
        double w = ref_unary(op, rt, flat(a, k)), g = flat(out, k);
        if (!same(g, w) && !(fabs(g - w) <= 2.4e-7 * fabs(w))) {
            if (bad++ == 0) printf("  %s %s: element %lld: %.9g, expected %.9g\n", nl_unop_name(op), label, (long long)k, g, w);
        }
    }
    CHECK(bad == 0, "%s %s: %lld wrong", nl_unop_name(op), label, (long long)bad);
    nl_tensor_release(out);
}

/* nl_reduce_new against a naive loop over the reduced elements. */
static void check_reduce(nl_redop op, const nl_tensor *a, int dim, bool keepdim, const char *label)
{
    const char *name = nl_redop_name(op);
    nl_tensor *r = nl_reduce_new(op, a, dim, keepdim);
    if (!r) {
        CHECK(0, "%s %s dim %d: %s", name, label, dim, nl_errmsg());
        return;
    }
    int nd = 0;
    int64_t shape[NL_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        if (dim < 0 || d == dim) {
            if (keepdim) shape[nd++] = 1;
        } else {
            shape[nd++] = a->shape[d];
        }
    }
    nl_dtype rt = op == NL_RED_ARGMAX || op == NL_RED_ARGMIN ? NL_I32 : op == NL_RED_SUM || op == NL_RED_MEAN ? NL_F32 : a->dtype;
    CHECK(shape_is(r, nd, shape), "%s %s dim %d keepdim %d: result shape", name, label, dim, keepdim);
    CHECK(r->dtype == rt, "%s %s: dtype %s, expected %s", name, label, dn(r->dtype), dn(rt));
    int64_t len = dim < 0 ? nl_tensor_numel(a) : a->shape[dim], bad = 0;
    for (int64_t o = 0; o < nl_tensor_numel(r); o++) {
        int64_t oidx[NL_MAX_DIMS], idx[NL_MAX_DIMS];
        unravel(o, r->ndim, r->shape, oidx);
        double sum = 0, best = 0;
        int64_t besti = -1;
        for (int64_t i = 0; i < len; i++) {
            if (dim < 0) {
                unravel(i, a->ndim, a->shape, idx);
            } else {
                for (int d = 0, od = 0; d < a->ndim; d++) {
                    if (d == dim) {
                        idx[d] = i;
                        od += keepdim;
                    } else {
                        idx[d] = oidx[od++];
                    }
                }
            }
            double v = at(a, idx);
            sum += v;
            bool better = op == NL_RED_MIN || op == NL_RED_ARGMIN ? v < best : v > best;
            if (besti < 0 || (!isnan(best) && (isnan(v) || better))) best = v, besti = i;
        }
        double want = op == NL_RED_SUM ? (float)sum : op == NL_RED_MEAN ? (float)(sum / (double)len)
                    : op == NL_RED_ARGMAX || op == NL_RED_ARGMIN ? (double)besti : best;
        double got = flat(r, o);
        if (!same(got, want) && bad++ == 0)
            printf("  %s %s dim %d: output %lld: %.9g, expected %.9g\n", name, label, dim, (long long)o, got, want);
    }
    CHECK(bad == 0, "%s %s dim %d keepdim %d: %lld wrong", name, label, dim, keepdim, (long long)bad);
    nl_tensor_release(r);
}

/* c = a @ b for 2-D or 3-D (batch) views, naively in double; a 2-D side is shared by the batch. */
static void check_matmul_values(const nl_tensor *c, const nl_tensor *a, const nl_tensor *b, const nl_tensor *c0,
                                const char *label)
{
    int64_t batch = c->ndim == 3 ? c->shape[0] : 1, m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1],
            n = b->shape[b->ndim - 1];
    int64_t bad = 0;
    for (int64_t bi = 0; bi < batch; bi++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t p = 0; p < k; p++) {
                    int64_t ia[3] = {bi, i, p}, ib[3] = {bi, p, j};
                    if (a->ndim == 3 && a->shape[0] == 1) ia[0] = 0;
                    if (b->ndim == 3 && b->shape[0] == 1) ib[0] = 0;
                    s += at(a, a->ndim == 3 ? ia : ia + 1) * at(b, b->ndim == 3 ? ib : ib + 1);
                }
                int64_t ic[3] = {bi, i, j};
                const int64_t *pc = c->ndim == 3 ? ic : ic + 1;
                if (c0) s += at(c0, pc);
                double g = at(c, pc);
                if (!(fabs(g - s) <= 1e-4 + 1e-5 * fabs(s)) && bad++ == 0)
                    printf("  matmul %s: [%lld,%lld,%lld] %.9g, expected %.9g\n", label, (long long)bi,
                           (long long)i, (long long)j, g, s);
            }
    CHECK(bad == 0, "matmul %s: %lld wrong", label, (long long)bad);
}

static void check_matmul(const nl_tensor *a, const nl_tensor *b, const char *label)
{
    nl_tensor *c = nl_matmul_new(a, b);
    if (!c) {
        CHECK(0, "matmul %s: %s", label, nl_errmsg());
        return;
    }
    check_matmul_values(c, a, b, NULL, label);
    nl_tensor_release(c);
}

/* ---------------------------------------------------------------- tests ----------------- */

static void test_names(void)
{
    int missing = 0;
    for (int i = 0; i < NL_BINOP_COUNT; i++) missing += strcmp(nl_binop_name((nl_binop)i), "?") == 0;
    for (int i = 0; i < NL_UNOP_COUNT; i++) missing += strcmp(nl_unop_name((nl_unop)i), "?") == 0;
    for (int i = 0; i < NL_REDOP_COUNT; i++) missing += strcmp(nl_redop_name((nl_redop)i), "?") == 0;
    for (int i = 0; i < NL_OPCODE_COUNT; i++) missing += strcmp(nl_opcode_name((nl_opcode)i), "?") == 0;
    CHECK(missing == 0, "%d enum values without a name", missing);
    CHECK(strcmp(nl_binop_name(NL_BIN_ADD), "add") == 0 && strcmp(nl_unop_name(NL_UN_SIGMOID), "sigmoid") == 0 &&
          strcmp(nl_redop_name(NL_RED_ARGMAX), "argmax") == 0 && strcmp(nl_opcode_name(NL_OP_MATMUL), "matmul") == 0,
          "names");
    CHECK(strcmp(nl_binop_name(NL_BINOP_COUNT), "?") == 0 && strcmp(nl_opcode_name((nl_opcode)-1), "?") == 0,
          "out-of-range names are \"?\"");
}

static void test_broadcasting(void)
{
    nl_tensor *a = T(NL_F32, 2, 3), *b = T(NL_F32, 4), *c = T(NL_F32, 4, 1, 3), *d = T(NL_F32, 2, 1);
    int nd;
    int64_t shape[NL_MAX_DIMS];
    CHECK(nl_broadcast_shape("add", a, c, &nd, shape) == NL_OK && nd == 3 && shape[0] == 4 && shape[1] == 2 &&
              shape[2] == 3, "[2,3] with [4,1,3] -> [4,2,3]");
    CHECK(nl_broadcast_shape("add", c, d, &nd, shape) == NL_OK && nd == 3 && shape[0] == 4 && shape[1] == 2 &&
              shape[2] == 3, "[4,1,3] with [2,1] -> [4,2,3]");
    CHECK(nl_broadcast_shape("add", a, b, &nd, shape) == NL_ESHAPE, "[2,3] with [4] does not broadcast");
    CHECK(errmsg_is("add: shapes [2, 3] and [4] do not broadcast"), "broadcast message");

    nl_clearerr();
    nl_tensor *r = nl_binary_new(NL_BIN_MUL, b, a);
    CHECK(!r && nl_errcode() == NL_ESHAPE, "mul of [4] and [2, 3] fails with NL_ESHAPE");
    CHECK(errmsg_is("mul: shapes [4] and [2, 3] do not broadcast"), "binary broadcast message");

    nl_tensor *out = T(NL_F32, 3, 2);
    CHECK(nl_binary(NL_BIN_ADD, out, a, a) == NL_ESHAPE, "destination of the wrong shape");
    CHECK(errmsg_is("add: result shape [2, 3] does not match destination [3, 2]"), "destination message");
    CHECK(nl_copy(out, a) == NL_ESHAPE && errmsg_is("copy: shapes [2, 3] and [3, 2] differ"), "copy shape message");

    /* expand: a stride-0 view */
    nl_tensor *col = T(NL_F32, 3, 1);
    fill_pattern(col, 1, -5, 5, false);
    nl_tensor *e = nl_tensor_expand(col, 3, SHAPE(2, 3, 4));
    CHECK(e && shape_is(e, 3, SHAPE(2, 3, 4)) && e->strides[0] == 0 && e->strides[2] == 0 &&
              e->strides[1] == col->strides[0] && e->storage == col->storage, "expand [3,1] to [2,3,4]");
    if (e) {
        int64_t bad = 0;
        for (int64_t k = 0; k < 24; k++) bad += flat(e, k) != flat(col, (k / 4) % 3);
        CHECK(bad == 0, "expanded values repeat");
        nl_tensor_release(e);
    }
    nl_clearerr();
    CHECK(!nl_tensor_expand(a, 2, SHAPE(4, 3)) && nl_errcode() == NL_ESHAPE &&
              errmsg_is("expand: shape [2, 3] cannot expand to [4, 3]"), "expand [2,3] to [4,3] fails");
    CHECK(!nl_tensor_expand(a, 1, SHAPE(3)) && nl_errcode() == NL_ESHAPE, "expand to fewer dims fails");
    nl_tensor *s0 = make(NL_F32, 0, NULL);
    nl_fill(s0, 2.5);
    nl_tensor *e0 = nl_tensor_expand(s0, 2, SHAPE(2, 2));
    CHECK(e0 && flat(e0, 3) == 2.5, "expand a 0-d tensor");
    nl_tensor_release(e0);
    nl_tensor *sum = nl_binary_new(NL_BIN_ADD, a, s0);
    CHECK(sum && shape_is(sum, 2, SHAPE(2, 3)), "0-d tensor broadcasts");
    nl_tensor_release(sum);
    nl_tensor *rr = nl_binary_new(NL_BIN_ADD, s0, s0);
    CHECK(rr && rr->ndim == 0 && flat(rr, 0) == 5, "0-d + 0-d is 0-d");
    nl_tensor_release(rr);
    nl_tensor *empty = T(NL_F32, 0, 3), *three = T(NL_F32, 3);
    nl_tensor *re = nl_binary_new(NL_BIN_ADD, empty, three);
    CHECK(re && shape_is(re, 2, SHAPE(0, 3)), "empty tensors broadcast to an empty result");
    nl_tensor_release(re);
    nl_tensor_release(empty);
    nl_tensor_release(three);
    nl_tensor_release(s0);
    nl_tensor_release(col);
    nl_tensor_release(out);
    nl_tensor_release(a);
    nl_tensor_release(b);
    nl_tensor_release(c);
    nl_tensor_release(d);
}

/* Every f32 binary op on contiguous, transposed, sliced, broadcast and expanded operands. */
static void test_binary_f32_views(void)
{
    nl_tensor *a = T(NL_F32, 4, 3), *bt_base = T(NL_F32, 3, 4), *big = T(NL_F32, 6, 5), *row = T(NL_F32, 3),
              *colv = T(NL_F32, 4, 1), *pos = T(NL_F32, 4, 3);
    fill_pattern(a, 1, -4, 4, false);
    fill_pattern(bt_base, 2, -4, 4, false);
    fill_pattern(big, 3, -4, 4, false);
    fill_pattern(row, 4, 0.5, 3, false);
    fill_pattern(colv, 5, -2, 2, true); /* whole numbers: ties for max/min/eq */
    fill_pattern(pos, 6, 0.25, 3, false);
    set_flat(a, 5, -1);
    set_flat(colv, 1, -1);
    nl_tensor *bt = nl_tensor_transpose(bt_base, 0, 1);             /* [4, 3], strides (1, 4) */
    nl_tensor *rows = nl_tensor_slice(big, 0, 1, 5);               /* [4, 5] */
    nl_tensor *sl = nl_tensor_slice(rows, 1, 1, 4);                /* [4, 3], strides (5, 1), offset 6 */
    nl_tensor *ex = nl_tensor_expand(row, 2, SHAPE(4, 3));         /* [4, 3], strides (0, 1) */
    nl_tensor *nan = T(NL_F32, 4, 3);
    nl_copy(nan, a);
    set_flat(nan, 2, NAN);
    set_flat(nan, 7, NAN);
    struct { const nl_tensor *x, *y; const char *label; } cases[] = {
        {a, pos, "contiguous"}, {a, bt, "transposed"}, {bt, sl, "transposed and sliced"}, {sl, a, "sliced"},
        {a, row, "row broadcast"}, {row, a, "row broadcast first"}, {a, colv, "column broadcast"},
        {colv, row, "outer broadcast"}, {ex, bt, "expanded"}, {nan, a, "NaN"}, {a, nan, "NaN second"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int op = 0; op < NL_BINOP_COUNT; op++) {
            if (op == NL_BIN_POW) continue; /* positive bases below */
            check_binary((nl_binop)op, cases[c].x, cases[c].y, cases[c].label);
        }
    check_binary(NL_BIN_POW, pos, a, "positive base");
    check_binary(NL_BIN_POW, pos, bt, "positive base, transposed exponent");
    check_binary(NL_BIN_DIV, a, row, "divide by a row");

    /* In place: dst is an input. */
    nl_tensor *acc = nl_tensor_clone(a);
    CHECK(nl_binary(NL_BIN_ADD, acc, acc, row) == NL_OK, "in-place add");
    int64_t bad = 0;
    for (int64_t k = 0; k < 12; k++) bad += flat(acc, k) != (float)((float)flat(a, k) + (float)flat(row, k % 3));
    CHECK(bad == 0, "in-place add values");

    /* Into a strided destination: only the view's elements change. */
    nl_tensor *dst_base = T(NL_F32, 3, 4);
    nl_fill(dst_base, 7);
    nl_tensor *dst = nl_tensor_transpose(dst_base, 0, 1);
    CHECK(nl_binary(NL_BIN_MUL, dst, a, pos) == NL_OK, "binary into a transposed destination");
    bad = 0;
    for (int64_t k = 0; k < 12; k++) bad += flat(dst, k) != (float)((float)flat(a, k) * (float)flat(pos, k));
    CHECK(bad == 0, "transposed destination values");
    nl_tensor *dsl = nl_tensor_slice(big, 1, 0, 3); /* [6, 3] inside big */
    nl_tensor *dsl4 = nl_tensor_slice(dsl, 0, 2, 6);
    double before = flat(big, 3);
    CHECK(nl_binary(NL_BIN_SUB, dsl4, a, row) == NL_OK && flat(big, 3) == before &&
              flat(big, 2 * 5) == (float)((float)flat(a, 0) - (float)flat(row, 0)),
          "binary into a slice leaves the rest alone");

    nl_tensor *list[] = {a, bt_base, big, row, colv, pos, bt, rows, sl, ex, nan, acc, dst_base, dst, dsl, dsl4};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) nl_tensor_release(list[i]);
}

/* Above the parallel threshold, with a transposed operand and a broadcast row, on 1 and 2 threads. */
static void test_binary_large(void)
{
    nl_tensor *base = T(NL_F32, 257, 300), *row = T(NL_F32, 257);
    fill_pattern(base, 7, -10, 10, false);
    fill_pattern(row, 8, -10, 10, false);
    nl_tensor *tr = nl_tensor_transpose(base, 0, 1); /* [300, 257] */
    for (int threads = 1; threads <= 2; threads++) {
        nl_set_threads(threads);
        check_binary(NL_BIN_ADD, tr, row, threads == 1 ? "large, 1 thread" : "large, 2 threads");
        check_binary(NL_BIN_MAX, row, tr, threads == 1 ? "large, 1 thread" : "large, 2 threads");
    }
    nl_tensor *c1 = T(NL_I32, 300, 257);
    fill_pattern(c1, 9, -1000, 1000, true);
    check_binary(NL_BIN_MUL, c1, tr, "large i32 x f32");
    check_unary(NL_UN_TANH, tr, "large transposed");
    nl_tensor *b3 = T(NL_F32, 3, 50, 41), *c3 = T(NL_F32, 41, 50); /* transposed last dims: visited in tiles */
    fill_pattern(b3, 12, -5, 5, false);
    fill_pattern(c3, 13, -5, 5, false);
    nl_tensor *p3 = nl_tensor_transpose(b3, 1, 2);
    check_binary(NL_BIN_ADD, p3, c3, "3-D, transposed last dimensions");
    check_unary(NL_UN_NEG, p3, "3-D, transposed last dimensions");
    nl_tensor_release(p3);
    nl_tensor_release(b3);
    nl_tensor_release(c3);
    nl_tensor *odd = T(NL_F32, 7, 11003), *oddc = T(NL_F32, 7, 1); /* an odd count: uneven thread split */
    fill_pattern(odd, 10, -5, 5, false);
    fill_pattern(oddc, 11, -5, 5, false);
    check_binary(NL_BIN_SUB, odd, oddc, "odd size, column broadcast, 2 threads");
    nl_tensor_release(odd);
    nl_tensor_release(oddc);
    nl_tensor_release(c1);
    nl_tensor_release(tr);
    nl_tensor_release(base);
    nl_tensor_release(row);
}

static void test_binary_int(void)
{
    /* Every op on every dtype pair, including promotion. Values stay small so pow fits. */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            nl_dtype ta = all_dtypes[i], tb = all_dtypes[j];
            nl_tensor *a = T(ta, 3, 4), *b = T(tb, 4), *bt_base = T(tb, 4, 3);
            bool ua = ta == NL_U8, ub = tb == NL_U8;
            fill_pattern(a, 10 + i, ua ? 0 : -6, 7, ta != NL_F32);
            fill_pattern(b, 20 + j, ub ? 0 : -6, 7, tb != NL_F32);
            fill_pattern(bt_base, 30 + j, ub ? 1 : -6, 4, tb != NL_F32);
            nl_tensor *bt = nl_tensor_transpose(bt_base, 0, 1);
            char label[64];
            snprintf(label, sizeof label, "%s with %s", dn(ta), dn(tb));
            for (int op = 0; op < NL_BINOP_COUNT; op++) {
                if (op == NL_BIN_POW && (ta == NL_F32 || tb == NL_F32)) continue;
                if (op == NL_BIN_DIV) set_flat(b, 1, 3); /* keep a zero elsewhere: x/0 is inf or nan */
                check_binary((nl_binop)op, a, b, label);
                check_binary((nl_binop)op, a, bt, label);
            }
            nl_tensor_release(a);
            nl_tensor_release(b);
            nl_tensor_release(bt);
            nl_tensor_release(bt_base);
        }

    /* Wrapping and exact values. */
    nl_tensor *i32 = nl_tensor_from_data(NL_I32, 1, SHAPE(3), (int32_t[]){INT32_MAX, INT32_MIN, 7});
    nl_tensor *one = nl_tensor_from_data(NL_I32, 1, SHAPE(3), (int32_t[]){1, -1, 2});
    nl_tensor *r = nl_binary_new(NL_BIN_ADD, i32, one);
    CHECK(r && r->dtype == NL_I32 && flat(r, 0) == INT32_MIN && flat(r, 1) == INT32_MAX && flat(r, 2) == 9,
          "i32 add wraps");
    nl_tensor_release(r);
    r = nl_binary_new(NL_BIN_DIV, i32, one);
    CHECK(r && r->dtype == NL_F32 && flat(r, 2) == 3.5, "i32 / i32 is true division in f32");
    nl_tensor_release(r);
    nl_tensor *i8 = nl_tensor_from_data(NL_I8, 1, SHAPE(3), (int8_t[]){100, -100, 5});
    r = nl_binary_new(NL_BIN_MUL, i8, i8);
    CHECK(r && r->dtype == NL_I8 && flat(r, 0) == (int8_t)(uint8_t)(10000 & 0xff) && flat(r, 2) == 25, "i8 mul wraps");
    nl_tensor_release(r);
    nl_tensor *u8 = nl_tensor_from_data(NL_U8, 1, SHAPE(3), (uint8_t[]){200, 0, 156});
    r = nl_binary_new(NL_BIN_ADD, i8, u8);
    CHECK(r && r->dtype == NL_I32 && flat(r, 0) == 300 && flat(r, 1) == -100, "i8 + u8 promotes to i32");
    nl_tensor_release(r);
    r = nl_binary_new(NL_BIN_EQ, i8, u8); /* -100 vs 156 share a bit pattern but are not equal */
    nl_tensor *i8b = nl_tensor_from_data(NL_I8, 1, SHAPE(3), (int8_t[]){-56, 0, -100});
    nl_tensor *r2 = nl_binary_new(NL_BIN_EQ, i8b, u8);
    CHECK(r && r2 && r2->dtype == NL_U8 && flat(r2, 0) == 0 && flat(r2, 1) == 1 && flat(r2, 2) == 0,
          "comparisons of i8 and u8 compare values, not bits");
    nl_tensor_release(r);
    nl_tensor_release(r2);
    nl_tensor *big = nl_tensor_from_data(NL_I32, 1, SHAPE(1), (int32_t[]){16777217});
    nl_tensor *bigf = nl_tensor_from_data(NL_F32, 1, SHAPE(1), (float[]){16777216.0f});
    r = nl_binary_new(NL_BIN_GT, big, bigf);
    CHECK(r && flat(r, 0) == 1, "i32 16777217 > f32 16777216 (compared exactly)");
    nl_tensor_release(r);
    nl_tensor *p = nl_tensor_from_data(NL_I32, 1, SHAPE(4), (int32_t[]){2, 3, -2, 2});
    nl_tensor *e = nl_tensor_from_data(NL_I32, 1, SHAPE(4), (int32_t[]){10, 3, 3, -1});
    r = nl_binary_new(NL_BIN_POW, p, e);
    CHECK(r && r->dtype == NL_I32 && flat(r, 0) == 1024 && flat(r, 1) == 27 && flat(r, 2) == -8 && flat(r, 3) == 0,
          "i32 pow");
    nl_tensor_release(r);

    /* Into a destination of another dtype: computed in the promoted dtype, then converted. */
    nl_tensor *f = nl_tensor_from_data(NL_F32, 1, SHAPE(3), (float[]){1.25f, 2.5f, -300});
    nl_tensor *g = nl_tensor_from_data(NL_F32, 1, SHAPE(3), (float[]){1.25f, 1.0f, 0});
    nl_tensor *di8 = T(NL_I8, 3), *df = T(NL_F32, 3);
    CHECK(nl_binary(NL_BIN_ADD, di8, f, g) == NL_OK && flat(di8, 0) == 2 && flat(di8, 1) == 4 && flat(di8, 2) == -128,
          "f32 add into i8 rounds half to even and saturates");
    CHECK(nl_binary(NL_BIN_LT, df, g, f) == NL_OK && flat(df, 0) == 0 && flat(df, 1) == 1 && flat(df, 2) == 0,
          "comparison into f32 writes 0/1");
    nl_tensor *list[] = {i32, one, i8, u8, i8b, big, bigf, p, e, f, g, di8, df};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) nl_tensor_release(list[i]);
}

static void test_binary_scalar(void)
{
    nl_tensor *f = T(NL_F32, 3, 4), *i8 = T(NL_I8, 3, 4), *u8 = T(NL_U8, 2, 2), *i32 = T(NL_I32, 5);
    fill_pattern(f, 40, -3, 3, false);
    fill_pattern(i8, 41, -100, 100, true);
    fill_pattern(u8, 42, 0, 255, true);
    fill_pattern(i32, 43, -50, 50, true);
    nl_tensor *ft = nl_tensor_transpose(f, 0, 1);
    struct { nl_tensor *t; double s; nl_dtype want_add; } cases[] = {
        {f, 2.5, NL_F32}, {ft, -1, NL_F32}, {i8, 3, NL_I8}, {i8, 1000, NL_I32}, {i8, 0.5, NL_F32},
        {u8, 7, NL_U8}, {u8, -1, NL_I32}, {i32, 5, NL_I32}, {i32, 3e9, NL_F32},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nl_tensor *t = cases[c].t;
        double s = cases[c].s;
        for (int op = 0; op < NL_BINOP_COUNT; op++)
            for (int first = 0; first < 2; first++) {
                nl_tensor *r = nl_binary_scalar_new((nl_binop)op, t, s, first);
                if (!r) {
                    CHECK(0, "%s scalar %g: %s", nl_binop_name((nl_binop)op), s, nl_errmsg());
                    continue;
                }
                nl_dtype rt = op >= NL_BIN_EQ ? NL_U8 : op == NL_BIN_DIV ? NL_F32 : cases[c].want_add;
                CHECK(r->dtype == rt, "%s %s scalar %g: dtype %s, expected %s", nl_binop_name((nl_binop)op),
                      dn(t->dtype), s, dn(r->dtype), dn(rt));
                int64_t bad = 0;
                for (int64_t k = 0; k < nl_tensor_numel(t); k++) {
                    double x = flat(t, k), w = first ? ref_binary((nl_binop)op, rt, s, x) : ref_binary((nl_binop)op, rt, x, s);
                    if (op == NL_BIN_POW && rt != NL_F32 && first == 0 && s > 100) continue;
                    if (!same(flat(r, k), w) && bad++ == 0)
                        printf("  %s %s scalar %g first %d: element %lld %.9g, expected %.9g\n",
                               nl_binop_name((nl_binop)op), dn(t->dtype), s, first, (long long)k, flat(r, k), w);
                }
                CHECK(bad == 0, "%s %s with scalar %g (scalar first %d)", nl_binop_name((nl_binop)op), dn(t->dtype), s, first);
                nl_tensor_release(r);
            }
    }
    nl_tensor *r = nl_binary_scalar_new(NL_BIN_LT, u8, 300, false);
    bool all = r != NULL;
    for (int64_t k = 0; r && k < 4; k++) all = all && flat(r, k) == 1;
    CHECK(all, "u8 < 300 holds everywhere (no saturation of the scalar)");
    nl_tensor_release(r);
    r = nl_binary_scalar_new(NL_BIN_EQ, i32, 0.5, false);
    all = r != NULL;
    for (int64_t k = 0; r && k < 5; k++) all = all && flat(r, k) == 0;
    CHECK(all, "i32 == 0.5 is false everywhere");
    nl_tensor_release(r);
    CHECK(nl_binary_scalar(NL_BIN_ADD, i32, f, 1, false) == NL_ESHAPE, "scalar op into a destination of another shape");
    CHECK(nl_binary_scalar((nl_binop)99, f, f, 1, false) == NL_EINVAL, "unknown binop");
    nl_tensor_release(ft);
    nl_tensor_release(f);
    nl_tensor_release(i8);
    nl_tensor_release(u8);
    nl_tensor_release(i32);
}

static void test_unary(void)
{
    nl_tensor *f = T(NL_F32, 4, 5), *base = T(NL_F32, 5, 4), *pos = T(NL_F32, 3, 3);
    fill_pattern(f, 50, -6, 6, false);
    fill_pattern(base, 51, -6, 6, false);
    fill_pattern(pos, 52, 0.01, 20, false);
    set_flat(f, 3, NAN);
    set_flat(f, 4, -INFINITY);
    set_flat(f, 5, -0.0);
    set_flat(f, 6, 100); /* exp overflows to inf */
    set_flat(f, 7, -100);
    nl_tensor *tr = nl_tensor_transpose(base, 0, 1);
    nl_tensor *sl = nl_tensor_slice(tr, 1, 1, 4);
    for (int op = 0; op < NL_UNOP_COUNT; op++) {
        check_unary((nl_unop)op, f, "contiguous");
        check_unary((nl_unop)op, tr, "transposed");
        check_unary((nl_unop)op, sl, "transposed slice");
        check_unary((nl_unop)op, pos, "positive");
    }
    for (int i = 1; i < 4; i++) {
        nl_tensor *t = T(all_dtypes[i], 2, 6);
        fill_pattern(t, 53 + i, all_dtypes[i] == NL_U8 ? 0 : -100, 100, true);
        for (int op = 0; op < NL_UNOP_COUNT; op++) check_unary((nl_unop)op, t, dn(all_dtypes[i]));
        nl_tensor_release(t);
    }
    nl_tensor *m = nl_tensor_from_data(NL_I32, 1, SHAPE(2), (int32_t[]){INT32_MIN, -5});
    nl_tensor *r = nl_unary_new(NL_UN_NEG, m), *r2 = nl_unary_new(NL_UN_ABS, m);
    CHECK(r && r2 && flat(r, 0) == INT32_MIN && flat(r, 1) == 5 && flat(r2, 0) == INT32_MIN && flat(r2, 1) == 5,
          "i32 neg/abs of INT32_MIN wrap");
    nl_tensor_release(r);
    nl_tensor_release(r2);
    nl_tensor *i8 = nl_tensor_from_data(NL_I8, 1, SHAPE(1), (int8_t[]){-128});
    r = nl_unary_new(NL_UN_NEG, i8);
    CHECK(r && r->dtype == NL_I8 && flat(r, 0) == -128, "i8 neg of -128 wraps");
    nl_tensor_release(r);
    nl_tensor *dst = T(NL_U8, 2);
    CHECK(nl_unary(NL_UN_EXP, dst, m) == NL_OK && flat(dst, 0) == 0 && flat(dst, 1) == 0,
          "exp of i32 into u8: computed in f32, converted");
    CHECK(nl_unary(NL_UN_EXP, dst, f) == NL_ESHAPE, "unary into a destination of another shape");
    CHECK(nl_unary((nl_unop)-1, dst, m) == NL_EINVAL, "unknown unop");
    nl_tensor *list[] = {f, base, pos, tr, sl, m, i8, dst};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) nl_tensor_release(list[i]);
}

/* Every dtype pair, contiguous and strided, with the edge values of rounding and saturation. */
static void test_copy_conversions(void)
{
    static const double fvals[] = {-1e10, -3e9, -2147483904.0, -300.5, -129, -128.5, -127.5, -2.5, -1.5, -0.5,
                                   -0.0, 0.5, 1.5, 2.5, 3.5, 126.5, 127.5, 128, 254.5, 255.5, 256, 1e5 + 0.5,
                                   2147483520.0, 2147483648.0, 3e9, NAN, INFINITY, -INFINITY, 0.49999997, 7.25};
    static const double ivals[] = {INT32_MIN, -129, -128, -127, -1, 0, 1, 126, 127, 128, 254, 255, 256,
                                   16777217, INT32_MAX};
    const int nf = sizeof fvals / sizeof fvals[0], ni = sizeof ivals / sizeof ivals[0];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            nl_dtype from = all_dtypes[i], to = all_dtypes[j];
            int n = from == NL_F32 ? nf : ni;
            nl_tensor *src = T(from, n), *dst = T(to, n);
            for (int k = 0; k < n; k++) set_flat(src, k, from == NL_F32 ? fvals[k] : ivals[k]);
            /* the source holds its own dtype's version of each value (set saturates) */
            CHECK(nl_copy(dst, src) == NL_OK, "copy %s -> %s: %s", dn(from), dn(to), nl_errmsg());
            int bad = 0;
            for (int k = 0; k < n; k++) {
                double w = ref_convert(flat(src, k), to), g = flat(dst, k);
                if (!same(g, w) && bad++ == 0)
                    printf("  copy %s -> %s: %.17g gave %.17g, expected %.17g\n", dn(from), dn(to), flat(src, k), g, w);
            }
            CHECK(bad == 0, "copy %s -> %s values", dn(from), dn(to));
            /* strided both ways: a transposed source into a sliced destination */
            nl_tensor *s2 = T(from, 3, 4), *d2base = T(to, 4, 5);
            fill_pattern(s2, 60 + i, from == NL_U8 ? 0 : -200, 200, false);
            nl_tensor *st = nl_tensor_transpose(s2, 0, 1), *dsl = nl_tensor_slice(d2base, 1, 1, 4);
            nl_fill(d2base, 9);
            CHECK(nl_copy(dsl, st) == NL_OK, "strided copy %s -> %s", dn(from), dn(to));
            bad = 0;
            for (int64_t k = 0; k < 12; k++) bad += !same(flat(dsl, k), ref_convert(flat(st, k), to));
            for (int64_t r = 0; r < 4; r++) bad += flat(d2base, r * 5) != 9 || flat(d2base, r * 5 + 4) != 9;
            CHECK(bad == 0, "strided copy %s -> %s values (and the rest untouched)", dn(from), dn(to));
            nl_tensor *list[] = {src, dst, s2, d2base, st, dsl};
            for (size_t x = 0; x < sizeof list / sizeof list[0]; x++) nl_tensor_release(list[x]);
        }
    /* Spot checks that do not rely on ref_convert. */
    nl_tensor *f = nl_tensor_from_data(NL_F32, 1, SHAPE(6), (float[]){2.5f, -2.5f, 3.5f, 200.7f, -1e9f, NAN});
    nl_tensor *i8 = nl_tensor_to_dtype(f, NL_I8), *u8 = nl_tensor_to_dtype(f, NL_U8), *i32 = nl_tensor_to_dtype(f, NL_I32);
    CHECK(i8 && flat(i8, 0) == 2 && flat(i8, 1) == -2 && flat(i8, 2) == 4 && flat(i8, 3) == 127 && flat(i8, 4) == -128 &&
              flat(i8, 5) == 0, "f32 -> i8");
    CHECK(u8 && flat(u8, 0) == 2 && flat(u8, 1) == 0 && flat(u8, 3) == 201 && flat(u8, 5) == 0, "f32 -> u8");
    CHECK(i32 && flat(i32, 3) == 201 && flat(i32, 4) == -1e9, "f32 -> i32");
    nl_tensor_release(f);
    nl_tensor_release(i8);
    nl_tensor_release(u8);
    nl_tensor_release(i32);

    /* fill: converted like a copy, only inside the view */
    nl_tensor *b = T(NL_I8, 3, 4);
    nl_fill(b, 1);
    nl_tensor *col = nl_tensor_slice(b, 1, 2, 3);
    CHECK(nl_fill(col, 300) == NL_OK && flat(b, 2) == 127 && flat(b, 6) == 127 && flat(b, 3) == 1 && flat(b, 1) == 1,
          "fill a column of i8 with 300 saturates and stays in the column");
    CHECK(nl_fill(col, NAN) == NL_OK && flat(b, 10) == 0, "fill i8 with NaN gives 0");
    CHECK(nl_fill(col, -2.5) == NL_OK && flat(b, 10) == -2, "fill rounds half to even");
    nl_tensor *fi = T(NL_I32, 2);
    CHECK(nl_fill(fi, NAN) == NL_OK && flat(fi, 0) == 0 && flat(fi, 1) == 0, "fill i32 with NaN gives 0");
    CHECK(nl_fill(fi, 1e10) == NL_OK && flat(fi, 0) == INT32_MAX, "fill i32 with 1e10 saturates");
    nl_tensor_release(fi);
    nl_tensor *big = T(NL_F32, 70000);
    nl_set_threads(2);
    nl_fill(big, 0.75);
    int64_t bad = 0;
    for (int64_t k = 0; k < 70000; k++) bad += nl_tensor_f32(big)[k] != 0.75f;
    CHECK(bad == 0, "parallel fill");
    nl_tensor_release(big);
    nl_tensor_release(col);
    nl_tensor_release(b);
}

static void test_reductions(void)
{
    nl_tensor *a = T(NL_F32, 3, 4, 5), *i = T(NL_I32, 4, 3), *u = T(NL_U8, 2, 7);
    fill_pattern(a, 70, -3, 3, true); /* few distinct values: ties */
    fill_pattern(i, 71, -1000, 1000, true);
    fill_pattern(u, 72, 0, 256, true);
    nl_tensor *at_ = nl_tensor_permute(a, (int[]){2, 0, 1}); /* [5, 3, 4], strided */
    nl_tensor *sl = nl_tensor_slice(at_, 2, 1, 3);
    const nl_tensor *ts[] = {a, at_, sl, i, u};
    const char *labels[] = {"f32", "f32 permuted", "f32 permuted slice", "i32", "u8"};
    for (size_t t = 0; t < sizeof ts / sizeof ts[0]; t++)
        for (int op = 0; op < NL_REDOP_COUNT; op++)
            for (int dim = -1; dim < ts[t]->ndim; dim++)
                for (int keep = 0; keep < 2; keep++) check_reduce((nl_redop)op, ts[t], dim, keep, labels[t]);

    /* more outputs than one group of them (64): along an outer and along a short dimension */
    nl_tensor *wide = T(NL_F32, 10, 150), *wi = T(NL_I8, 150, 10);
    fill_pattern(wide, 73, -3, 3, true);
    fill_pattern(wi, 74, -100, 100, true);
    nl_tensor *widet = nl_tensor_transpose(wide, 0, 1);
    for (int op = 0; op < NL_REDOP_COUNT; op++)
        for (int dim = 0; dim < 2; dim++) {
            check_reduce((nl_redop)op, wide, dim, dim == 1, "[10, 150]");
            check_reduce((nl_redop)op, widet, dim, false, "[150, 10] transposed");
            check_reduce((nl_redop)op, wi, dim, false, "i8 [150, 10]");
        }
    nl_tensor_release(widet);
    nl_tensor_release(wide);
    nl_tensor_release(wi);

    /* ties and NaN */
    nl_tensor *v = nl_tensor_from_data(NL_F32, 2, SHAPE(2, 5), (float[]){1, 5, 2, 5, 5, 3, NAN, 9, NAN, 1});
    nl_tensor *am = nl_reduce_new(NL_RED_ARGMAX, v, 1, false), *mx = nl_reduce_new(NL_RED_MAX, v, 1, false),
              *mn = nl_reduce_new(NL_RED_MIN, v, 1, false), *all = nl_reduce_new(NL_RED_ARGMAX, v, -1, false);
    CHECK(am && am->dtype == NL_I32 && flat(am, 0) == 1 && flat(am, 1) == 1, "argmax: first of ties, first NaN");
    CHECK(mx && flat(mx, 0) == 5 && isnan(flat(mx, 1)), "max propagates NaN");
    CHECK(mn && flat(mn, 0) == 1 && isnan(flat(mn, 1)), "min propagates NaN");
    CHECK(all && all->ndim == 0 && flat(all, 0) == 6, "argmax over all: flat index of the first NaN");
    nl_tensor *list[] = {am, mx, mn, all};
    for (size_t k = 0; k < 4; k++) nl_tensor_release(list[k]);
    for (int op = 0; op < NL_REDOP_COUNT; op++)
        for (int dim = -1; dim < 2; dim++) check_reduce((nl_redop)op, v, dim, dim == 0, "with NaN");

    /* empty */
    nl_tensor *e = T(NL_F32, 0, 3);
    nl_tensor *s = nl_reduce_new(NL_RED_SUM, e, 0, false), *m = nl_reduce_new(NL_RED_MEAN, e, -1, false);
    CHECK(s && shape_is(s, 1, SHAPE(3)) && flat(s, 0) == 0 && m && isnan(flat(m, 0)), "sum of nothing is 0, mean NaN");
    nl_tensor_release(s);
    nl_tensor_release(m);
    nl_clearerr();
    CHECK(!nl_reduce_new(NL_RED_MAX, e, 0, false) && nl_errcode() == NL_ESHAPE, "max over no elements fails");
    nl_tensor *e1 = nl_reduce_new(NL_RED_MAX, e, 1, false);
    CHECK(e1 && shape_is(e1, 1, SHAPE(0)), "max over a non-empty dim of an empty tensor is empty");
    nl_tensor_release(e1);
    CHECK(!nl_reduce_new(NL_RED_SUM, a, 3, false) && nl_errcode() == NL_EINVAL &&
              errmsg_is("sum: dimension 4 out of range for a tensor with 3 dimensions"), "dim out of range");
    CHECK(!nl_reduce_new((nl_redop)42, a, 0, false) && nl_errcode() == NL_EINVAL, "unknown redop");

    /* a 0-d tensor reduces to itself */
    nl_tensor *z = make(NL_F32, 0, NULL);
    nl_fill(z, 4.5);
    nl_tensor *zs = nl_reduce_new(NL_RED_SUM, z, -1, true), *za = nl_reduce_new(NL_RED_ARGMAX, z, -1, false);
    CHECK(zs && zs->ndim == 0 && flat(zs, 0) == 4.5 && za && flat(za, 0) == 0, "reductions of a 0-d tensor");
    CHECK(!nl_reduce_new(NL_RED_SUM, z, 0, false) && nl_errcode() == NL_EINVAL, "a 0-d tensor has no dimension 0");
    nl_tensor_release(zs);
    nl_tensor_release(za);
    nl_tensor_release(z);

    /* accuracy: a float accumulator would be off by ~1% here */
    nl_tensor *big = T(NL_F32, 1000000);
    float *p = nl_tensor_f32(big);
    for (int64_t k = 0; k < 1000000; k++) p[k] = 0.1f;
    nl_tensor *sum = nl_reduce_new(NL_RED_SUM, big, -1, false), *mean = nl_reduce_new(NL_RED_MEAN, big, 0, true);
    CHECK(sum && flat(sum, 0) == (float)(1e6 * (double)0.1f), "sum of 1e6 x 0.1f = %.9g", sum ? flat(sum, 0) : 0);
    CHECK(mean && shape_is(mean, 1, SHAPE(1)) && flat(mean, 0) == 0.1f, "mean of 1e6 x 0.1f");
    nl_tensor_release(sum);
    nl_tensor_release(mean);
    nl_tensor_release(big);
    nl_tensor *sums[] = {e, v, sl, at_, a, i, u};
    for (size_t k = 0; k < sizeof sums / sizeof sums[0]; k++) nl_tensor_release(sums[k]);
}

/* Sums, means, argmax and random fills are bit-identical on 1 and 2 threads. */
static void test_thread_independence(void)
{
    nl_tensor *x = T(NL_F32, 3, 400000);
    nl_set_threads(1);
    nl_rand_normal(x, 0, 1);
    nl_tensor *xt = nl_tensor_transpose(x, 0, 1);
    struct { nl_redop op; const nl_tensor *t; int dim; } cases[] = {
        {NL_RED_SUM, x, -1}, {NL_RED_SUM, x, 1}, {NL_RED_MEAN, xt, 0}, {NL_RED_SUM, xt, 1}, {NL_RED_ARGMAX, x, 1},
        {NL_RED_MAX, xt, -1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nl_tensor *r[2];
        for (int th = 0; th < 2; th++) {
            nl_set_threads(th + 1);
            r[th] = nl_reduce_new(cases[c].op, cases[c].t, cases[c].dim, false);
        }
        CHECK(r[0] && r[1] && memcmp(nl_tensor_data(r[0]), nl_tensor_data(r[1]),
                                      (size_t)nl_tensor_numel(r[0]) * nl_dtype_info(r[0]->dtype)->size) == 0,
              "%s dim %d: same bits on 1 and 2 threads", nl_redop_name(cases[c].op), cases[c].dim);
        nl_tensor_release(r[0]);
        nl_tensor_release(r[1]);
    }
    /* Blocks combine in order: 1e20 (block 0), -1e20 (block 1), then a 1 at the end sums to 1, and
     * to 0 if the 1 met either big value first. Over all and along a dimension, on 1 and 2 threads. */
    nl_tensor *cancel = nl_tensor_zeros(NL_F32, 2, SHAPE(2, 300000), NL_CPU);
    set_flat(cancel, 0, 1e20);
    set_flat(cancel, 5000, -1e20);
    set_flat(cancel, 299999, 1);
    set_flat(cancel, 599999, 1);
    for (int th = 1; th <= 2; th++) {
        nl_set_threads(th);
        nl_tensor *all = nl_reduce_new(NL_RED_SUM, cancel, -1, false), *rows = nl_reduce_new(NL_RED_SUM, cancel, 1, false);
        CHECK(all && flat(all, 0) == 2 && rows && flat(rows, 0) == 1 && flat(rows, 1) == 1,
              "sums combine blocks in order on %d threads", th);
        nl_tensor_release(all);
        nl_tensor_release(rows);
    }
    nl_tensor_release(cancel);
    nl_tensor *f[2];
    for (int th = 0; th < 2; th++) {
        nl_set_threads(th + 1);
        f[th] = T(NL_F32, 300, 500);
        nl_tensor *v = nl_tensor_transpose(f[th], 0, 1);
        nl_op op = {.code = NL_OP_RAND_NORMAL, .dst = v, .f = {1, 2}, .u = {7, 99}};
        CHECK(nl_op_exec(&op) == NL_OK, "normal fill");
        nl_tensor_release(v);
    }
    CHECK(memcmp(nl_tensor_data(f[0]), nl_tensor_data(f[1]), 300 * 500 * sizeof(float)) == 0,
          "normal fill: same bits on 1 and 2 threads");
    nl_tensor_release(f[0]);
    nl_tensor_release(f[1]);
    nl_tensor_release(xt);
    nl_tensor_release(x);
}

static void test_rand(void)
{
    nl_tensor *base = T(NL_F32, 5, 7);
    nl_tensor *v = nl_tensor_transpose(base, 0, 1); /* element k of v in logical order draws counter + k */
    nl_op op = {.code = NL_OP_RAND_UNIFORM, .dst = v, .f = {-2, 3}, .u = {42, 1000}};
    CHECK(nl_op_exec(&op) == NL_OK, "uniform fill");
    int bad = 0;
    for (int64_t k = 0; k < 35; k++)
        bad += flat(v, k) != (float)(-2 + 5 * (double)nl_rng_u01_at(42, 1000 + (uint64_t)k));
    CHECK(bad == 0, "uniform element k draws from (key, counter + k) in logical order");
    op.code = NL_OP_RAND_NORMAL;
    op.f[0] = 10;
    op.f[1] = 0.5;
    CHECK(nl_op_exec(&op) == NL_OK, "normal fill");
    bad = 0;
    for (int64_t k = 0; k < 35; k++)
        bad += flat(v, k) != (float)(10 + 0.5 * (double)nl_rng_normal_at(42, 1000 + (uint64_t)k));
    CHECK(bad == 0, "normal element k draws from (key, counter + k)");
    nl_tensor *big = T(NL_F32, 257, 300), *bigt = nl_tensor_transpose(big, 0, 1);
    nl_set_threads(2);
    nl_op opb = {.code = NL_OP_RAND_UNIFORM, .dst = bigt, .f = {0, 1}, .u = {5, 77}};
    CHECK(nl_op_exec(&opb) == NL_OK, "uniform fill of a large transposed view");
    bad = 0;
    for (int64_t k = 0; k < 257 * 300; k++) bad += flat(bigt, k) != nl_rng_u01_at(5, 77 + (uint64_t)k);
    CHECK(bad == 0, "large transposed view: element k draws counter + k (%d wrong)", bad);
    nl_tensor_release(bigt);
    nl_tensor_release(big);
    nl_tensor *u = T(NL_U8, 10);
    nl_op op8 = {.code = NL_OP_RAND_UNIFORM, .dst = u, .f = {0, 10}, .u = {1, 2}};
    CHECK(nl_op_exec(&op8) == NL_OK, "uniform fill of u8 through the op");
    bad = 0;
    for (int64_t k = 0; k < 10; k++)
        bad += flat(u, k) != ref_convert((float)(10 * (double)nl_rng_u01_at(1, 2 + (uint64_t)k)), NL_U8);
    CHECK(bad == 0, "uniform u8 values are the f32 draws converted");
    nl_tensor_release(u);
    nl_tensor_release(v);
    nl_tensor_release(base);
}

static void test_matmul(void)
{
    nl_tensor *a = T(NL_F32, 5, 7), *b = T(NL_F32, 7, 6), *at_base = T(NL_F32, 7, 5), *bt_base = T(NL_F32, 6, 7);
    fill_pattern(a, 80, -1, 1, false);
    fill_pattern(b, 81, -1, 1, false);
    fill_pattern(at_base, 82, -1, 1, false);
    fill_pattern(bt_base, 83, -1, 1, false);
    nl_tensor *at_ = nl_tensor_transpose(at_base, 0, 1), *bt = nl_tensor_transpose(bt_base, 0, 1);
    check_matmul(a, b, "2-D");
    check_matmul(at_, b, "transposed a");
    check_matmul(a, bt, "transposed b");
    check_matmul(at_, bt, "both transposed");
    nl_tensor *wide = T(NL_F32, 9, 8);
    fill_pattern(wide, 84, -1, 1, false);
    nl_tensor *wrows = nl_tensor_slice(wide, 0, 1, 6), *ws = nl_tensor_slice(wrows, 1, 1, 8); /* [5, 7] */
    check_matmul(ws, b, "sliced a (row stride 8)");
    nl_tensor *colv = T(NL_F32, 5, 1);
    fill_pattern(colv, 85, -1, 1, false);
    nl_tensor *ex = nl_tensor_expand(colv, 2, SHAPE(5, 7)); /* strides (1, 0): BLAS cannot read it */
    check_matmul(ex, b, "expanded a (packed)");

    /* 1-D operands */
    nl_tensor *v7 = T(NL_F32, 7), *v7b = T(NL_F32, 7);
    fill_pattern(v7, 86, -1, 1, false);
    fill_pattern(v7b, 87, -1, 1, false);
    nl_tensor *r = nl_matmul_new(v7, b);
    bool ok = r && shape_is(r, 1, SHAPE(6));
    for (int64_t j = 0; ok && j < 6; j++) {
        double s = 0;
        for (int64_t p = 0; p < 7; p++) s += flat(v7, p) * flat(b, p * 6 + j);
        ok = fabs(flat(r, j) - s) < 1e-5;
    }
    CHECK(ok, "vector @ matrix");
    nl_tensor_release(r);
    r = nl_matmul_new(a, v7);
    ok = r && shape_is(r, 1, SHAPE(5));
    for (int64_t i = 0; ok && i < 5; i++) {
        double s = 0;
        for (int64_t p = 0; p < 7; p++) s += flat(a, i * 7 + p) * flat(v7, p);
        ok = fabs(flat(r, i) - s) < 1e-5;
    }
    CHECK(ok, "matrix @ vector");
    nl_tensor_release(r);
    r = nl_matmul_new(v7, v7b);
    double dot = 0;
    for (int64_t p = 0; p < 7; p++) dot += flat(v7, p) * flat(v7b, p);
    CHECK(r && r->ndim == 0 && fabs(flat(r, 0) - dot) < 1e-5, "vector @ vector is a 0-d dot product");
    nl_tensor_release(r);

    /* batches */
    nl_tensor *ba = T(NL_F32, 3, 5, 7), *bb = T(NL_F32, 3, 7, 6), *b1 = T(NL_F32, 1, 5, 7);
    fill_pattern(ba, 88, -1, 1, false);
    fill_pattern(bb, 89, -1, 1, false);
    fill_pattern(b1, 90, -1, 1, false);
    check_matmul(ba, bb, "batched");
    check_matmul(a, bb, "broadcast (M,K) x (B,K,N)");
    check_matmul(ba, b, "broadcast (B,M,K) x (K,N), one GEMM");
    check_matmul(b1, bb, "batch 1 broadcast");
    nl_tensor *pm = T(NL_F32, 5, 7, 3);                         /* permuted to [3, 5, 7] with strides (1, 21, 3) */
    fill_pattern(pm, 91, -1, 1, false);
    nl_tensor *pv = nl_tensor_permute(pm, (int[]){2, 0, 1});
    check_matmul(pv, bb, "batched, neither stride 1 (packed)");
    nl_tensor *bbt_base = T(NL_F32, 3, 6, 7);
    fill_pattern(bbt_base, 92, -1, 1, false);
    nl_tensor *bbt = nl_tensor_transpose(bbt_base, 1, 2);
    check_matmul(ba, bbt, "batched, transposed b");

    /* into destinations: transposed, accumulating, other dtype */
    nl_tensor *cbase = T(NL_F32, 6, 5);
    nl_tensor *ct = nl_tensor_transpose(cbase, 0, 1);
    CHECK(nl_matmul(ct, a, b) == NL_OK, "matmul into a transposed destination");
    check_matmul_values(ct, a, b, NULL, "transposed destination");
    nl_tensor *c0 = nl_tensor_clone(ct);
    CHECK(nl_matmul_ex(ct, a, b, true) == NL_OK, "accumulating matmul into a transposed destination");
    check_matmul_values(ct, a, b, c0, "accumulate, transposed destination");
    nl_tensor *c = nl_matmul_new(a, b), *cprev = nl_tensor_clone(c);
    CHECK(c && nl_matmul_ex(c, a, b, true) == NL_OK, "accumulating matmul");
    check_matmul_values(c, a, b, cprev, "accumulate");
    nl_tensor *ci = T(NL_I32, 5, 6);
    CHECK(nl_matmul(ci, a, b) == NL_OK && flat(ci, 0) == ref_convert(flat(cprev, 0), NL_I32), "matmul into i32 converts");
    CHECK(nl_matmul_ex(ci, a, b, true) == NL_ETYPE, "accumulating into i32 is refused");

    /* empty inner dimension */
    nl_tensor *z1 = T(NL_F32, 2, 0), *z2 = T(NL_F32, 0, 3);
    nl_tensor *z = nl_matmul_new(z1, z2);
    CHECK(z && shape_is(z, 2, SHAPE(2, 3)) && flat(z, 0) == 0 && flat(z, 5) == 0, "K = 0 gives zeros");
    nl_tensor_release(z);

    /* errors */
    nl_tensor *m23 = T(NL_F32, 2, 3), *m45 = T(NL_F32, 4, 5);
    nl_clearerr();
    CHECK(!nl_matmul_new(m23, m45) && nl_errcode() == NL_ESHAPE, "[2,3] @ [4,5] fails");
    CHECK(errmsg_is("matmul: shapes [2, 3] and [4, 5] do not match (3 != 4)"), "matmul shape message");
    nl_tensor *bb4 = T(NL_F32, 4, 7, 6);
    CHECK(!nl_matmul_new(ba, bb4) && nl_errcode() == NL_ESHAPE &&
              errmsg_is("matmul: shapes [3, 5, 7] and [4, 7, 6] do not match (batch 3 != 4)"), "batch mismatch");
    nl_tensor *d4 = T(NL_F32, 1, 1, 2, 3);
    CHECK(!nl_matmul_new(d4, m23) && nl_errcode() == NL_ESHAPE, "4-D matmul is refused");
    nl_tensor *i23 = T(NL_I32, 2, 3), *i35 = T(NL_I32, 3, 5);
    CHECK(!nl_matmul_new(i23, i35) && nl_errcode() == NL_ETYPE &&
              errmsg_is("matmul: needs f32 tensors, got i32 and i32"), "i32 matmul is refused");
    nl_tensor *o25 = T(NL_I32, 2, 5);
    nl_op op = {.code = NL_OP_MATMUL, .dst = o25, .src = {i23, i35}};
    CHECK(nl_op_exec(&op) == NL_EUNSUPPORTED && errmsg_is("matmul: not supported by the cpu backend for these dtypes"),
          "an i32 matmul op reaching the backend is unsupported, not a crash");
    CHECK(nl_matmul(m45, a, b) == NL_ESHAPE &&
              errmsg_is("matmul: result shape [5, 6] does not match destination [4, 5]"), "wrong destination shape");

    /* Ctrl-C between batch items */
    nl_interrupt();
    nl_clearerr();
    r = nl_matmul_new(ba, bb);
    CHECK(!r && nl_errcode() == NL_EINTR, "an interrupted batched matmul returns NL_EINTR");
    nl_interrupt_clear();
    nl_tensor_release(r);

    /* bigger, both transposed, on 2 threads (BLAS runs outside any parallel region) */
    nl_set_threads(2);
    nl_tensor *ga = T(NL_F32, 96, 64), *gb = T(NL_F32, 80, 96);
    nl_rand_uniform(ga, -1, 1);
    nl_rand_uniform(gb, -1, 1);
    nl_tensor *gat = nl_tensor_transpose(ga, 0, 1), *gbt = nl_tensor_transpose(gb, 0, 1);
    check_matmul(gat, gbt, "64x96x80, both transposed");

    nl_tensor *list[] = {a, b, at_base, bt_base, at_, bt, wide, ws, colv, ex, v7, v7b, ba, bb, b1, pm, pv, bbt_base, wrows,
                         bbt, cbase, ct, c0, c, cprev, ci, z1, z2, m23, m45, bb4, d4, i23, i35, o25, ga, gb, gat, gbt};
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) nl_tensor_release(list[i]);
}

/* ---------------------------------------------------------------- devices --------------- */

/* A stand-in second device when CUDA is absent: host memory under the "cuda" device id, which
 * runs copies and fills through the CPU kernels and supports nothing else. */
static void *fake_alloc(nl_backend *be NL_UNUSED, size_t n) { return malloc(n); }
static void fake_free(nl_backend *be NL_UNUSED, void *p) { free(p); }
static nl_status fake_copy(nl_backend *be NL_UNUSED, void *d, nl_device dd NL_UNUSED,
                           const void *s, nl_device sd NL_UNUSED, size_t n)
{
    memcpy(d, s, n);
    return NL_OK;
}
static void fake_sync(nl_backend *be NL_UNUSED) {}
static bool fake_supports(nl_backend *be NL_UNUSED, const nl_op *op)
{
    return op->code == NL_OP_COPY || op->code == NL_OP_FILL;
}
static nl_status fake_exec(nl_backend *be NL_UNUSED, const nl_op *op)
{
    nl_backend *cpu = nl_backend_get(NL_CPU);
    return cpu->exec(cpu, op);
}
static nl_backend fake_backend = {"fake", NL_CUDA, NULL, fake_alloc, fake_free, fake_copy, fake_sync, fake_supports, fake_exec, NULL};

static void test_devices(void)
{
    bool fake = nl_backend_get(NL_CUDA) == NULL;
    if (fake) nl_backend_register(&fake_backend);
    nl_tensor *c = T(NL_F32, 2, 3), *g = nl_tensor_zeros(NL_F32, 2, SHAPE(2, 3), NL_CUDA);
    CHECK(g != NULL, "a tensor on the second device: %s", nl_errmsg());
    if (!g) return;
    nl_clearerr();
    CHECK(!nl_binary_new(NL_BIN_ADD, c, g) && nl_errcode() == NL_EDEVICE && errmsg_is("add: tensors on cpu and cuda"),
          "add of cpu and cuda tensors is an NL_EDEVICE error");
    CHECK(!nl_binary_new(NL_BIN_MUL, g, c) && nl_errcode() == NL_EDEVICE && errmsg_is("mul: tensors on cuda and cpu"),
          "mul of cuda and cpu tensors");
    nl_tensor *gt = nl_tensor_transpose(g, 0, 1);
    nl_clearerr();
    CHECK(!nl_matmul_new(c, gt) && nl_errcode() == NL_EDEVICE, "matmul across devices");
    nl_tensor *d = T(NL_F32, 2, 3);
    CHECK(nl_unary(NL_UN_EXP, d, g) == NL_EDEVICE, "unary from another device");
    fill_pattern(c, 100, -5, 5, false);
    CHECK(nl_copy(g, c) == NL_OK && nl_copy(d, g) == NL_OK && flat(d, 4) == flat(c, 4), "copy to and from the device");
    if (fake) {
        nl_clearerr();
        CHECK(!nl_binary_new(NL_BIN_ADD, g, g) && nl_errcode() == NL_EUNSUPPORTED &&
                  errmsg_is("add: not supported by the fake backend"), "an op the backend lacks is NL_EUNSUPPORTED");
    }
    nl_op cmp = {.code = NL_OP_BINARY, .dst = d, .src = {c, c}, .i = {NL_BIN_LT}};
    CHECK(nl_op_exec(&cmp) == NL_ETYPE, "a comparison op with an f32 destination is refused by the kernel");
    nl_op bad = {.code = NL_OP_FILL};
    CHECK(nl_op_exec(&bad) == NL_EINVAL, "an op without a destination");
    bad.dst = d;
    bad.code = NL_OPCODE_COUNT;
    CHECK(nl_op_exec(&bad) == NL_EINVAL, "an unknown opcode");
    nl_tensor_release(gt);
    nl_tensor_release(d);
    nl_tensor_release(g);
    nl_tensor_release(c);
}

/* ---------------------------------------------------------------- information ----------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Elementwise add of 16M f32 (read 2, write 1): bandwidth on 1 and 2 threads. Not asserted. */
static void info_add_bandwidth(void)
{
    const int64_t n = 16 << 20;
    nl_tensor *a = T(NL_F32, n), *b = T(NL_F32, n), *c = T(NL_F32, n);
    nl_fill(a, 1);
    nl_fill(b, 2);
    nl_fill(c, 0);
    double gbs[2];
    for (int th = 1; th <= 2; th++) {
        nl_set_threads(th);
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            nl_binary(NL_BIN_ADD, c, a, b);
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        gbs[th - 1] = 3.0 * (double)n * sizeof(float) / best * 1e-9;
    }
    printf("info: add of 16M f32: %.1f GB/s on 1 thread, %.1f GB/s on 2 threads\n", gbs[0], gbs[1]);
    CHECK(nl_tensor_f32(c)[n - 1] == 3, "timed add computed 1 + 2");
    nl_tensor_release(a);
    nl_tensor_release(b);
    nl_tensor_release(c);
}

/* ---------------------------------------------------------------- selection and scans --- */

/* A random shape of 1..4 dims with sizes 0..5 (size 0 rarely), from the seed. */
static int random_shape(unsigned *seed, int64_t *shape)
{
    *seed = *seed * 1664525u + 1013904223u;
    int nd = 1 + (int)((*seed >> 10) % 4);
    for (int d = 0; d < nd; d++) {
        *seed = *seed * 1664525u + 1013904223u;
        unsigned r = (*seed >> 12) % 23;
        shape[d] = r == 0 ? 0 : 1 + (int64_t)(r % 5);
    }
    return nd;
}

/* A view of t with its first and last dims swapped (a non-contiguous input), or t retained. */
static nl_tensor *swapped(nl_tensor *t)
{
    return t->ndim > 1 ? nl_tensor_transpose(t, 0, t->ndim - 1) : nl_tensor_retain(t);
}

/* The position idx with dim replaced by j. */
static void with_dim(const int64_t *idx, int dim, int64_t j, int64_t *out, int nd)
{
    for (int d = 0; d < nd; d++) out[d] = d == dim ? j : idx[d];
}

static void check_gather_sort_cumsum(const nl_tensor *x, int dim, const char *label)
{
    const int nd = x->ndim;
    const int64_t n = x->shape[dim];
    int64_t idx[NL_MAX_DIMS], at_j[NL_MAX_DIMS];
    /* gather with indices of x's shape (counted from 0) */
    nl_tensor *ix = make(NL_I32, nd, x->shape);
    fill_pattern(ix, (unsigned)(nd * 7 + dim), 0, (double)n, true);
    nl_tensor *g = nl_gather_new(x, dim, ix, 0);
    int64_t bad = 0;
    for (int64_t k = 0; g && k < nl_tensor_numel(g); k++) {
        unravel(k, nd, g->shape, idx);
        with_dim(idx, dim, (int64_t)at(ix, idx), at_j, nd);
        bad += !same(flat(g, k), at(x, at_j));
    }
    CHECK(g && bad == 0, "gather %s dim %d: %lld wrong (%s)", label, dim, (long long)bad, g ? "" : nl_errmsg());
    nl_tensor_release(g);
    /* sort, both directions, and topk of half */
    for (int desc = 0; desc <= 1; desc++) {
        nl_tensor *v, *i;
        const int64_t k = desc ? n / 2 : -1;
        nl_status st = nl_sort_new(x, dim, k, desc, 1, &v, &i);
        bad = 0;
        for (int64_t e = 0; st == NL_OK && e < nl_tensor_numel(v); e++) {
            unravel(e, nd, v->shape, idx);
            const int64_t j = idx[dim], src = (int64_t)at(i, idx) - 1;
            with_dim(idx, dim, src, at_j, nd);
            bad += src < 0 || src >= n || !same(at(v, idx), at(x, at_j)); /* an entry of x */
            if (j > 0) { /* in order, ties by index */
                int64_t prev[NL_MAX_DIMS];
                with_dim(idx, dim, j - 1, prev, nd);
                double a = at(v, prev), b = at(v, idx);
                bad += desc ? a < b : a > b;
                bad += a == b && at(i, prev) > at(i, idx);
            }
        }
        /* the count of entries below the k-th kept one is right: topk holds the largest */
        CHECK(st == NL_OK && bad == 0, "%s %s dim %d: %lld wrong (%s)", desc ? "topk" : "sort", label, dim,
              (long long)bad, st == NL_OK ? "" : nl_errmsg());
        if (st == NL_OK && desc && k > 0) {
            nl_tensor *mx = nl_reduce_new(NL_RED_MAX, x, dim, false);
            bool first_is_max = true;
            for (int64_t e = 0; mx && e < nl_tensor_numel(mx); e++) {
                int64_t o[NL_MAX_DIMS];
                unravel(e, mx->ndim, mx->shape, o);
                for (int d = 0, od = 0; d < nd; d++) idx[d] = d == dim ? 0 : o[od++];
                first_is_max = first_is_max && same(at(v, idx), flat(mx, e));
            }
            CHECK(first_is_max, "topk %s dim %d: the first is the maximum", label, dim);
            nl_tensor_release(mx);
        }
        if (st == NL_OK) {
            nl_tensor_release(v);
            nl_tensor_release(i);
        }
    }
    /* cumsum */
    nl_tensor *c = nl_cumsum_new(x, dim);
    bad = 0;
    for (int64_t k = 0; c && k < nl_tensor_numel(c); k++) {
        unravel(k, nd, c->shape, idx);
        double sum = 0;
        for (int64_t j = 0; j <= idx[dim]; j++) {
            with_dim(idx, dim, j, at_j, nd);
            sum += at(x, at_j);
        }
        bad += !same(flat(c, k), x->dtype == NL_F32 ? (double)(float)sum : sum);
    }
    CHECK(c && c->dtype == (x->dtype == NL_F32 ? NL_F32 : NL_I32) && bad == 0, "cumsum %s dim %d: %lld wrong",
          label, dim, (long long)bad);
    nl_tensor_release(c);
    nl_tensor_release(ix);
}

static void test_selection(void)
{
    unsigned seed = 2024;
    int cases = 0;
    for (int round = 0; round < 40; round++) {
        int64_t shape[NL_MAX_DIMS];
        const int nd = random_shape(&seed, shape);
        const nl_dtype dt = all_dtypes[round % 4];
        nl_tensor *base = make(dt, nd, shape);
        fill_pattern(base, (unsigned)round, dt == NL_U8 ? 0 : -6, 6, dt != NL_F32 || round % 3 == 0);
        nl_tensor *x = swapped(base);
        char label[64];
        snprintf(label, sizeof label, "%s round %d", dn(dt), round);
        for (int dim = 0; dim < nd; dim++, cases++) check_gather_sort_cumsum(x, dim, label);
        nl_tensor_release(x);
        nl_tensor_release(base);
    }
    CHECK(cases > 60, "ran %d cases", cases);

    /* where broadcasts its three operands; a and b promote */
    const int64_t s23[2] = {2, 3}, s21[2] = {2, 1}, s3[1] = {3};
    nl_tensor *cond = make(NL_U8, 2, s21), *a = make(NL_I32, 1, s3), *b = make(NL_F32, 2, s23);
    fill_pattern(cond, 1, 0, 2, true);
    set_flat(cond, 0, 1);
    set_flat(cond, 1, 0);
    fill_pattern(a, 2, -9, 9, true);
    fill_pattern(b, 3, -1, 1, false);
    nl_tensor *w = nl_where_new(cond, a, b);
    int64_t bad = 0, idx[NL_MAX_DIMS];
    for (int64_t k = 0; w && k < 6; k++) {
        unravel(k, 2, s23, idx);
        bad += !same(flat(w, k), at_bcast(cond, 2, idx) ? at_bcast(a, 2, idx) : at(b, idx));
    }
    CHECK(w && w->dtype == NL_F32 && shape_is(w, 2, s23) && bad == 0, "where: %lld wrong", (long long)bad);
    nl_tensor_release(w);
    CHECK(!nl_where_new(b, a, b) && nl_errcode() == NL_ETYPE, "where: a condition that is not u8");
    CHECK(!nl_masked_fill_new(b, a, 0) && nl_errcode() == NL_ETYPE, "masked_fill: a mask that is not u8");

    /* indices out of range, or not whole, are errors that name them; nothing is written */
    nl_tensor *ix = make(NL_F32, 2, s21);
    set_flat(ix, 0, 1);
    set_flat(ix, 1, 3);
    CHECK(!nl_gather_new(b, 1, ix, 0) && nl_errcode() == NL_EINVAL &&
              errmsg_is("gather: index 3 out of range for dim 2 of size 3 (indices count from 0)"),
          "gather: index out of range");
    set_flat(ix, 1, 0.5);
    CHECK(!nl_gather_new(b, 1, ix, 0) && errmsg_is("gather: index 0.5 is not a whole number"), "not whole");
    set_flat(ix, 1, 0);
    CHECK(!nl_index_select_new(b, 1, ix, 0) && errmsg_is("index_select: the index must be 1-D, got shape [2, 1]"),
          "index_select: 2-D index");
    nl_tensor *iv = make(NL_I32, 1, s3);
    set_flat(iv, 0, 3);
    set_flat(iv, 1, 1);
    set_flat(iv, 2, 4);
    CHECK(!nl_index_select_new(b, 1, iv, 1) &&
              errmsg_is("index_select: index 4 out of range for dim 2 of size 3 (indices count from 1)"),
          "index_select: out of range, counted from 1");
    set_flat(iv, 2, 3);
    nl_tensor *sel = nl_index_select_new(b, 1, iv, 1);
    CHECK(sel && same(flat(sel, 0), flat(b, 2)) && same(flat(sel, 1), flat(b, 0)) && same(flat(sel, 5), flat(b, 5)),
          "index_select from 1");
    nl_tensor *v, *i;
    CHECK(nl_sort_new(b, 1, 4, true, 0, &v, &i) == NL_EINVAL && !v && !i &&
              errmsg_is("topk: k = 4 is more than the 3 entries of dim 2"), "topk: k too large");
    nl_tensor_release(sel);
    nl_tensor_release(iv);
    nl_tensor_release(ix);
    nl_tensor_release(cond);
    nl_tensor_release(a);
    nl_tensor_release(b);
}

static void test_shape_ops(void)
{
    const int64_t s234[3] = {2, 3, 4};
    nl_tensor *x = make(NL_F32, 3, s234);
    fill_pattern(x, 5, -3, 3, false);
    nl_tensor *xt = nl_tensor_transpose(x, 0, 2); /* [4, 3, 2] */
    /* views: select, unsqueeze, squeeze share storage and read the right elements */
    nl_tensor *r = nl_tensor_select(xt, 1, 2), *u = nl_tensor_unsqueeze(xt, 3), *q = u ? nl_tensor_squeeze(u, -1) : NULL;
    int64_t idx[3] = {3, 2, 1}, sub[2] = {3, 1}, ux[4] = {3, 2, 1, 0};
    CHECK(r && r->storage == x->storage && r->ndim == 2 && same(at(r, sub), at(xt, idx)), "select is a view");
    CHECK(u && u->ndim == 4 && u->shape[3] == 1 && same(at(u, ux), at(xt, idx)), "unsqueeze at the end");
    CHECK(q && nl_same_shape(q, xt) && q->storage == x->storage && same(at(q, idx), at(xt, idx)), "squeeze back");
    CHECK(!nl_tensor_view(xt, 1, (int64_t[]){24}) && nl_errcode() == NL_ESHAPE && strstr(nl_errmsg(), "not contiguous"),
          "view of a transposed tensor: %s", nl_errmsg());
    nl_tensor *v = nl_tensor_view(x, 2, (int64_t[]){-1, 4});
    CHECK(v && v->storage == x->storage && v->shape[0] == 6, "view of a contiguous tensor");
    nl_tensor_release(v);
    nl_tensor_release(r);
    nl_tensor_release(u);
    nl_tensor_release(q);
    /* repeat: out[i] = t[i mod size] in every dim */
    const int64_t reps[4] = {2, 1, 3, 2};
    nl_tensor *rep = nl_tensor_repeat(xt, 4, reps);
    int64_t bad = 0, o[4], src[3];
    for (int64_t k = 0; rep && k < nl_tensor_numel(rep); k++) {
        unravel(k, 4, rep->shape, o);
        for (int d = 0; d < 3; d++) src[d] = o[d + 1] % xt->shape[d];
        bad += !same(flat(rep, k), at(xt, src));
    }
    CHECK(rep && rep->shape[0] == 2 && rep->shape[1] == 4 && rep->shape[2] == 9 && rep->shape[3] == 4 && bad == 0,
          "repeat of a transposed tensor: %lld wrong", (long long)bad);
    nl_tensor_release(rep);
    /* cat and stack: each part where it belongs */
    const nl_tensor *parts[3] = {xt, xt, x};
    nl_tensor *c = nl_tensor_cat(2, parts, 1), *st = nl_tensor_stack(2, parts, 3);
    bad = 0;
    for (int64_t k = 0; c && st && k < nl_tensor_numel(c); k++) {
        unravel(k, 3, c->shape, o);
        int64_t p[3] = {o[0], o[1] % 3, o[2]};
        bad += !same(flat(c, k), at(xt, p));
        int64_t so[4] = {o[0], o[1] % 3, o[2], o[1] / 3};
        bad += !same(at(st, so), at(xt, p));
    }
    CHECK(c && st && c->shape[1] == 6 && st->ndim == 4 && st->shape[3] == 2 && bad == 0, "cat and stack");
    CHECK(!nl_tensor_cat(3, parts, 0) && nl_errcode() == NL_ESHAPE &&
              errmsg_is("cat: tensor 3 has shape [2, 3, 4], tensor 1 [4, 3, 2]: they must agree except in dim 1"),
          "cat of mismatched shapes");
    nl_tensor_release(c);
    nl_tensor_release(st);
    nl_tensor_release(xt);
    nl_tensor_release(x);
}

int main(void)
{
    nl_init();
    test_names();
    test_broadcasting();
    test_binary_f32_views();
    test_binary_large();
    test_binary_int();
    test_binary_scalar();
    test_unary();
    test_copy_conversions();
    test_reductions();
    test_thread_independence();
    test_rand();
    test_matmul();
    test_devices();
    test_selection();
    test_shape_ops();
    info_add_bandwidth();
    return TEST_REPORT();
}
