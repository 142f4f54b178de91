/* test_device_ops.c: every opcode of f32 training and evaluation on one device against the CPU
 * reference, with the tolerance stated per op (test_backend_ops.c checks every backend with one
 * tolerance; this is the GPU check's part 1): each case builds the same inputs (same seed) on
 * both devices, runs the same ops, and compares every output and every tensor an op updates in
 * place. Usage: test_device_ops [device] (default "cuda"; run by tests/cuda/check.sh on a GPU).
 * Without that device it says so and runs on sim (the CPU's kernels behind device memory). */
#include "nl.h"
#include "testhelp.h"

#include <stdlib.h>
#include <string.h>

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define ND(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* A tensor of dtype dt on dev, uniform in [lo, hi) from the global stream (converted, rounding,
 * for integer dtypes). */
#define R(dev, dt, lo, hi, ...) rnd(dev, dt, lo, hi, ND(__VA_ARGS__), SH(__VA_ARGS__))
#define Z(dev, dt, ...) zeros(dev, dt, ND(__VA_ARGS__), SH(__VA_ARGS__))

enum { MAX_OUT = 8 };
typedef struct {
    nl_tensor *out[MAX_OUT]; /* compared after the case (references owned by the case) */
    int n;
    nl_status st;            /* the first failure */
} results;

static void keep(results *r, nl_tensor *t)
{
    if (!t && r->st == NL_OK) r->st = nl_errcode() ? nl_errcode() : NL_EINVAL;
    if (r->n < MAX_OUT) r->out[r->n++] = t;
    else nl_tensor_release(t);
}

/* Keeps t (retained) and runs st into r. */
static void ran(results *r, nl_status st)
{
    if (st != NL_OK && r->st == NL_OK) {
        r->st = st;
        printf("  op failed: %s\n", nl_errmsg());
    }
}

static nl_tensor *rnd(nl_device dev, nl_dtype dt, double lo, double hi, int nd, const int64_t *shape)
{
    nl_tensor *f = nl_tensor_empty(NL_F32, nd, shape, NL_CPU);
    if (!f || nl_rand_uniform(f, lo, hi) != NL_OK) return NULL;
    nl_tensor *c = dt == NL_F32 ? nl_tensor_retain(f) : nl_tensor_to_dtype(f, dt);
    nl_tensor_release(f);
    if (!c || dev == NL_CPU) return c;
    nl_tensor *d = nl_tensor_to_device(c, dev);
    nl_tensor_release(c);
    return d;
}

static nl_tensor *zeros(nl_device dev, nl_dtype dt, int nd, const int64_t *shape)
{
    return nl_tensor_zeros(dt, nd, shape, dev);
}

/* Runs op and keeps its dst, aux and the tensors given (updated in place). */
static void exec_keep(results *r, nl_op *op, int nextra, nl_tensor **extra)
{
    ran(r, nl_op_exec(op));
    keep(r, op->dst);
    if (op->aux) keep(r, op->aux);
    for (int k = 0; k < nextra; k++) keep(r, extra[k]);
}

/* ---------------------------------------------------------------- cases ----------------- */

/* A case builds its inputs on dev and leaves its results in r. tol: relative, absolute. */
typedef struct {
    const char *name;
    void (*run)(nl_device dev, results *r);
    double rtol, atol;
} test_case;

static void c_fill(nl_device dev, results *r)
{
    nl_tensor *a = Z(dev, NL_F32, 5, 7), *at = nl_tensor_transpose(a, 0, 1);
    ran(r, nl_fill(at, 2.5));
    nl_tensor_release(at);
    keep(r, a);
    nl_tensor *b = Z(dev, NL_I8, 9), *c = Z(dev, NL_U8, 4, 3);
    ran(r, nl_fill(b, 300));
    ran(r, nl_fill(c, -3.7));
    keep(r, b);
    keep(r, c);
}

static void c_copy(nl_device dev, results *r)
{
    nl_tensor *f = R(dev, NL_F32, -300, 300, 6, 11);
    keep(r, nl_tensor_to_dtype(f, NL_I8));
    keep(r, nl_tensor_to_dtype(f, NL_U8));
    nl_tensor *i = nl_tensor_to_dtype(f, NL_I32);
    keep(r, nl_tensor_to_dtype(i, NL_U8));
    keep(r, nl_tensor_to_dtype(i, NL_F32));
    nl_tensor *t = nl_tensor_transpose(f, 0, 1), *s = nl_tensor_slice(t, 1, 1, 5);
    keep(r, nl_tensor_clone(s)); /* a strided source into a contiguous copy */
    nl_tensor_release(s);
    nl_tensor_release(t);
    nl_tensor_release(i);
    nl_tensor_release(f);
}

static void c_binary_f32(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, 0.5, 3, 3, 1, 5), *b = R(dev, NL_F32, -2, 2, 4, 5);
    for (nl_binop op = NL_BIN_ADD; op <= NL_BIN_MIN && r->n < MAX_OUT; op++) {
        nl_tensor *x = op == NL_BIN_POW ? a : b; /* pow of positive bases */
        keep(r, nl_binary_new(op, a, x == a ? a : b));
    }
    nl_tensor_release(a);
    nl_tensor_release(b);
}

static void c_binary_int(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_I32, -50, 50, 6, 1), *b = R(dev, NL_I32, 0, 4, 1, 7);
    nl_tensor *c = R(dev, NL_I8, -120, 120, 6, 7), *d = R(dev, NL_U8, 0, 250, 6, 7);
    const nl_binop ops[] = {NL_BIN_ADD, NL_BIN_SUB, NL_BIN_MUL, NL_BIN_POW, NL_BIN_MAX};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) keep(r, nl_binary_new(ops[k], a, b));
    keep(r, nl_binary_new(NL_BIN_ADD, c, c)); /* i8 wraps */
    keep(r, nl_binary_new(NL_BIN_MUL, c, d)); /* mixed integers: i32 */
    keep(r, nl_binary_new(NL_BIN_DIV, a, b)); /* integer division gives f32 */
    nl_tensor_release(a);
    nl_tensor_release(b);
    nl_tensor_release(c);
    nl_tensor_release(d);
}

static void c_compare(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, -3, 3, 5, 6), *b = R(dev, NL_I8, -3, 3, 6);
    nl_tensor *at = nl_tensor_transpose(a, 0, 1), *c = R(dev, NL_F32, -3, 3, 6, 5);
    for (nl_binop op = NL_BIN_EQ; op <= NL_BIN_GE; op++)
        keep(r, nl_binary_new(op, op % 2 ? a : at, op % 2 ? b : c)); /* mixed: f64; views */
    keep(r, nl_binary_scalar_new(NL_BIN_GT, b, 0.5, false));          /* s not an i8: f64 */
    keep(r, nl_binary_scalar_new(NL_BIN_LE, a, 1, true));
    nl_tensor *all[] = {a, b, at, c};
    for (int k = 0; k < 4; k++) nl_tensor_release(all[k]);
}

static void c_scalar(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, -2, 2, 7, 9), *i = R(dev, NL_I8, -100, 100, 13);
    keep(r, nl_binary_scalar_new(NL_BIN_ADD, a, 2.5, false));
    keep(r, nl_binary_scalar_new(NL_BIN_SUB, a, 2.5, true));
    keep(r, nl_binary_scalar_new(NL_BIN_DIV, a, 3, true));
    keep(r, nl_binary_scalar_new(NL_BIN_MAX, a, 0.25, false));
    keep(r, nl_binary_scalar_new(NL_BIN_ADD, i, 3, false));   /* stays i8, wraps */
    keep(r, nl_binary_scalar_new(NL_BIN_MUL, i, 1000, false)); /* widens to i32 */
    keep(r, nl_binary_scalar_new(NL_BIN_MUL, i, 0.5, false));  /* to f32 */
    nl_tensor_release(a);
    nl_tensor_release(i);
}

static void c_unary(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, -4, 4, 8, 9), *p = R(dev, NL_F32, 0.01, 9, 8, 9);
    nl_tensor *pt = nl_tensor_transpose(p, 0, 1);
    for (nl_unop u = NL_UN_NEG; u < NL_UNOP_COUNT && r->n < MAX_OUT; u++)
        keep(r, nl_unary_new(u, u == NL_UN_LOG || u == NL_UN_SQRT ? pt : a));
    nl_tensor_release(a);
    nl_tensor_release(p);
    nl_tensor_release(pt);
}

static void c_unary_int(nl_device dev, results *r)
{
    nl_tensor *i = R(dev, NL_I8, -128, 128, 40), *u = R(dev, NL_U8, 0, 256, 40);
    nl_tensor *j = R(dev, NL_I32, -1000, 1000, 40);
    keep(r, nl_unary_new(NL_UN_NEG, i));
    keep(r, nl_unary_new(NL_UN_ABS, i));
    keep(r, nl_unary_new(NL_UN_RELU, j));
    keep(r, nl_unary_new(NL_UN_NEG, u));
    keep(r, nl_unary_new(NL_UN_EXP, i)); /* float functions of integers give f32 */
    nl_tensor_release(i);
    nl_tensor_release(u);
    nl_tensor_release(j);
}

static void c_rand(nl_device dev, results *r)
{
    nl_tensor *a = Z(dev, NL_F32, 37, 53), *b = Z(dev, NL_F32, 9, 11), *bt = nl_tensor_transpose(b, 0, 1);
    ran(r, nl_rand_uniform(a, -2, 5));
    ran(r, nl_rand_normal(bt, 1, 3));
    nl_tensor_release(bt);
    keep(r, a);
    keep(r, b);
}

static void c_reduce(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, -5, 5, 6, 7, 9), *at = nl_tensor_transpose(a, 0, 2);
    keep(r, nl_reduce_new(NL_RED_SUM, a, 1, false));
    keep(r, nl_reduce_new(NL_RED_MEAN, at, 0, true));
    keep(r, nl_reduce_new(NL_RED_MAX, a, 2, false));
    keep(r, nl_reduce_new(NL_RED_MIN, at, -1, false));
    keep(r, nl_reduce_new(NL_RED_ARGMAX, at, 1, false));
    keep(r, nl_reduce_new(NL_RED_SUM, a, -1, false));
    nl_tensor *i = R(dev, NL_I32, -9, 9, 40, 3);
    keep(r, nl_reduce_new(NL_RED_SUM, i, 0, false));
    keep(r, nl_reduce_new(NL_RED_ARGMAX, i, 0, false)); /* ties: the first index */
    nl_tensor_release(i);
    nl_tensor_release(at);
    nl_tensor_release(a);
}

static void c_matmul(nl_device dev, results *r)
{
    nl_tensor *a = R(dev, NL_F32, -1, 1, 33, 17), *b = R(dev, NL_F32, -1, 1, 17, 29);
    keep(r, nl_matmul_new(a, b));
    nl_tensor *bt = R(dev, NL_F32, -1, 1, 29, 17), *btt = nl_tensor_transpose(bt, 0, 1);
    keep(r, nl_matmul_new(a, btt)); /* a transposed operand, read in place */
    nl_tensor *x = R(dev, NL_F32, -1, 1, 3, 8, 5), *y = R(dev, NL_F32, -1, 1, 3, 5, 7);
    keep(r, nl_matmul_new(x, y));
    nl_tensor *x2 = R(dev, NL_F32, -1, 1, 8, 5);
    keep(r, nl_matmul_new(x2, y)); /* broadcast (M,K) x (B,K,N) */
    nl_tensor *s = nl_tensor_slice(x, 2, 0, 5), *yt = nl_tensor_transpose(y, 0, 2);
    nl_tensor *ys = nl_tensor_transpose(yt, 0, 2);
    keep(r, nl_matmul_new(s, ys));
    nl_tensor *acc = R(dev, NL_F32, -1, 1, 33, 29);
    ran(r, nl_matmul_ex(acc, a, b, true));
    keep(r, acc);
    nl_tensor *all[] = {a, b, bt, btt, x, y, x2, s, yt, ys};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) nl_tensor_release(all[k]);
}

/* A convolution of x [N, C, H, W] by w [O, C, k, k] (stride s, padding p), its data and filter
 * gradients, with aux workspaces of T images (the CPU goes in chunks of T). */
static void conv_sized(nl_device dev, results *r, int64_t N, int64_t C, int64_t H, int64_t W,
                       int64_t O, int k, int s, int p, bool bias, int64_t T)
{
    const int64_t OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
    nl_tensor *x = R(dev, NL_F32, -1, 1, N, C, H, W), *w = R(dev, NL_F32, -1, 1, O, C, k, k);
    nl_tensor *b = bias ? R(dev, NL_F32, -1, 1, O) : NULL;
    nl_tensor *y = Z(dev, NL_F32, N, O, OH, OW), *cols = Z(dev, NL_F32, T, C * k * k, OH * OW);
    nl_op f = {.code = NL_OP_CONV2D, .dst = y, .aux = cols, .src = {x, w, b}, .i = {s, p}};
    ran(r, nl_op_exec(&f));
    keep(r, y);
    nl_tensor *gy = R(dev, NL_F32, -1, 1, N, O, OH, OW), *gx = Z(dev, NL_F32, N, C, H, W);
    nl_op d = {.code = NL_OP_CONV2D_BWD_DATA, .dst = gx, .aux = cols, .src = {gy, w}, .i = {s, p}};
    ran(r, nl_op_exec(&d));
    keep(r, gx);
    nl_tensor *gw = R(dev, NL_F32, -1, 1, O, C, k, k), *gb = bias ? R(dev, NL_F32, -1, 1, O) : NULL;
    nl_op g = {.code = NL_OP_CONV2D_BWD_FILTER, .dst = gw, .aux = gb, .src = {x, gy}, .i = {s, p}};
    ran(r, nl_op_exec(&g)); /* accumulates into gw, gb */
    keep(r, gw);
    if (gb) keep(r, gb);
    nl_tensor *all[] = {x, w, b, cols, gy};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) nl_tensor_release(all[j]);
}

/* x [5, 3, 9, 8], w [4, 3, k, k]; workspaces of 2 images (the GPU takes all 5 at once). */
static void conv_case(nl_device dev, results *r, int k, int s, int p, bool bias)
{
    conv_sized(dev, r, 5, 3, 9, 8, 4, k, s, p, bias, 2);
}

static void c_conv3(nl_device dev, results *r) { conv_case(dev, r, 3, 1, 1, true); }
static void c_conv5s2(nl_device dev, results *r) { conv_case(dev, r, 5, 2, 2, false); }
static void c_conv1(nl_device dev, results *r) { conv_case(dev, r, 1, 1, 0, true); }
/* A workspace larger than the batch (the GPU uses the op's own), and a batch whose columns
 * exceed the GPU's 64 MiB scratch (28 images of 2.25 MiB a chunk: two chunks). */
static void c_conv_aux(nl_device dev, results *r) { conv_sized(dev, r, 5, 3, 9, 8, 4, 3, 1, 1, true, 8); }
static void c_conv_big(nl_device dev, results *r) { conv_sized(dev, r, 30, 64, 32, 32, 8, 3, 1, 1, true, 1); }

/* Pooling of x [3, 4, 9, 10] (kind 0 max / 1 avg, k, stride, padding) and its backward; max
 * pooling also with the ReLU fused into the backward. */
static void pool_case(nl_device dev, results *r, int kind, int k, int s, int p)
{
    const int64_t H = 9, W = 10, OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
    nl_tensor *x = R(dev, NL_F32, -1, 1, 3, 4, H, W), *y = Z(dev, NL_F32, 3, 4, OH, OW);
    nl_tensor *idx = kind == 0 ? Z(dev, NL_I32, 3, 4, OH, OW) : NULL;
    nl_op f = {.code = NL_OP_POOL2D, .dst = y, .aux = idx, .src = {x}, .i = {kind, k, s, p}};
    exec_keep(r, &f, 0, NULL);
    nl_tensor *gy = R(dev, NL_F32, -1, 1, 3, 4, OH, OW), *gx = Z(dev, NL_F32, 3, 4, H, W);
    nl_op b = {.code = NL_OP_POOL2D_BWD, .dst = gx, .src = {gy, idx}, .i = {kind, k, s, p}};
    ran(r, nl_op_exec(&b));
    keep(r, gx);
    if (kind == 0) {
        nl_tensor *gx2 = Z(dev, NL_F32, 3, 4, H, W);
        nl_op b2 = {.code = NL_OP_POOL2D_BWD, .dst = gx2, .src = {gy, idx, y}, .i = {kind, k, s, p}};
        ran(r, nl_op_exec(&b2));
        keep(r, gx2);
    }
    nl_tensor_release(x);
    nl_tensor_release(gy);
}

static void c_maxpool2(nl_device dev, results *r) { pool_case(dev, r, 0, 2, 2, 0); }
static void c_maxpool3(nl_device dev, results *r) { pool_case(dev, r, 0, 3, 2, 1); }
static void c_avgpool3(nl_device dev, results *r) { pool_case(dev, r, 1, 3, 1, 1); }

/* Batch norm of x [6, 5, 4, 3]: training (batch statistics to aux) and evaluation (given
 * statistics), with and without gamma/beta, and both backwards. */
static void c_batchnorm(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -2, 3, 6, 5, 4, 3), *g = R(dev, NL_F32, 0.5, 1.5, 5);
    nl_tensor *b = R(dev, NL_F32, -1, 1, 5), *stats = Z(dev, NL_F32, 2, 5);
    nl_tensor *y = Z(dev, NL_F32, 6, 5, 4, 3), *y2 = Z(dev, NL_F32, 6, 5, 4, 3);
    nl_op f = {.code = NL_OP_BATCHNORM, .dst = y, .aux = stats, .src = {x, g, b}, .i = {1}, .f = {1e-5}};
    exec_keep(r, &f, 0, NULL);
    nl_op e = {.code = NL_OP_BATCHNORM, .dst = y2, .src = {x, NULL, NULL, stats}, .i = {0}, .f = {1e-3}};
    ran(r, nl_op_exec(&e));
    keep(r, y2);
    nl_tensor *gy = R(dev, NL_F32, -1, 1, 6, 5, 4, 3), *gx = Z(dev, NL_F32, 6, 5, 4, 3);
    nl_tensor *gx2 = Z(dev, NL_F32, 6, 5, 4, 3), *dp = Z(dev, NL_F32, 2, 5);
    nl_op bw = {.code = NL_OP_BATCHNORM_BWD, .dst = gx, .aux = dp, .src = {gy, x, g, stats},
                .i = {1}, .f = {1e-5}};
    exec_keep(r, &bw, 0, NULL);
    nl_op be = {.code = NL_OP_BATCHNORM_BWD, .dst = gx2, .src = {gy, x, NULL, stats}, .i = {0},
                .f = {1e-5}};
    ran(r, nl_op_exec(&be));
    keep(r, gx2);
    nl_tensor *all[] = {x, g, b, gy};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) nl_tensor_release(all[k]);
}

static void c_act(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -3, 3, 7, 11), *gy = R(dev, NL_F32, -1, 1, 7, 11);
    const int fwd[] = {NL_ACT_LEAKY_RELU, NL_ACT_GELU};
    for (int k = 0; k < 2; k++) {
        nl_tensor *y = Z(dev, NL_F32, 7, 11);
        nl_op op = {.code = NL_OP_ACT, .dst = y, .src = {x}, .i = {fwd[k]}, .f = {0.1}};
        exec_keep(r, &op, 0, NULL);
    }
    const int bwd[] = {NL_UN_RELU, NL_ACT_LEAKY_RELU, NL_UN_SIGMOID, NL_UN_TANH, NL_ACT_GELU, NL_ACT_SOFTMAX};
    for (int k = 0; k < 6; k++) {
        nl_tensor *gx = Z(dev, NL_F32, 7, 11);
        nl_op op = {.code = NL_OP_ACT_BWD, .dst = gx, .src = {gy, x}, .i = {bwd[k]}, .f = {0.1}};
        exec_keep(r, &op, 0, NULL);
    }
    nl_tensor_release(x);
    nl_tensor_release(gy);
}

static void c_softmax(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -6, 6, 13, 10), *w = R(dev, NL_F32, -30, 30, 4, 300);
    for (int lg = 0; lg < 2; lg++) {
        nl_tensor *y = Z(dev, NL_F32, 13, 10), *y2 = Z(dev, NL_F32, 4, 300);
        nl_op a = {.code = NL_OP_SOFTMAX, .dst = y, .src = {x}, .i = {lg}};
        nl_op b = {.code = NL_OP_SOFTMAX, .dst = y2, .src = {w}, .i = {lg}};
        exec_keep(r, &a, 0, NULL);
        exec_keep(r, &b, 0, NULL);
    }
    nl_tensor_release(x);
    nl_tensor_release(w);
}

static void c_dropout(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -1, 1, 9, 70), *y = Z(dev, NL_F32, 9, 70), *m = Z(dev, NL_U8, 9, 70);
    nl_op f = {.code = NL_OP_DROPOUT, .dst = y, .aux = m, .src = {x}, .f = {0.3}, .u = {7, 12345}};
    exec_keep(r, &f, 0, NULL);
    nl_tensor *g = Z(dev, NL_F32, 9, 70);
    nl_op b = {.code = NL_OP_DROPOUT, .dst = g, .src = {x, m}, .f = {0.3}};
    exec_keep(r, &b, 0, NULL);
    nl_tensor_release(x);
}

static void c_cross_entropy(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -4, 4, 12, 10), *lp = Z(dev, NL_F32, 12, 10);
    nl_op sm = {.code = NL_OP_SOFTMAX, .dst = lp, .src = {x}, .i = {1}};
    ran(r, nl_op_exec(&sm));
    nl_tensor *cls = R(dev, NL_I32, 0, 9.49, 12), *soft = R(dev, NL_F32, 0, 0.2, 12, 10);
    const nl_tensor *targets[2] = {cls, soft};
    for (int k = 0; k < 2; k++) {
        nl_tensor *loss = Z(dev, NL_F32, 12), *g = Z(dev, NL_F32, 12, 10);
        nl_op f = {.code = NL_OP_CROSS_ENTROPY, .dst = loss, .src = {lp, targets[k]}, .f = {0.1}};
        nl_op b = {.code = NL_OP_CROSS_ENTROPY_BWD, .dst = g, .src = {lp, targets[k]}, .f = {0.1, 1.0 / 12}};
        exec_keep(r, &f, 0, NULL);
        exec_keep(r, &b, 0, NULL);
    }
    nl_tensor_release(x);
    nl_tensor_release(lp);
    nl_tensor_release(cls);
    nl_tensor_release(soft);
}

static void c_sgd(nl_device dev, results *r)
{
    nl_tensor *p = R(dev, NL_F32, -1, 1, 1000), *buf = Z(dev, NL_F32, 1000);
    nl_tensor *p2 = R(dev, NL_F32, -1, 1, 77);
    for (int step = 1; step <= 3; step++) {
        nl_tensor *g = R(dev, NL_F32, -1, 1, 1000), *g2 = R(dev, NL_F32, -1, 1, 77);
        nl_op a = {.code = NL_OP_SGD_STEP, .dst = p, .src = {g, buf}, .i = {1, step == 1},
                   .f = {0.05, 0.9, 1e-4, 0.1}};
        nl_op b = {.code = NL_OP_SGD_STEP, .dst = p2, .src = {g2}, .f = {0.1}};
        ran(r, nl_op_exec(&a));
        ran(r, nl_op_exec(&b));
        nl_tensor_release(g);
        nl_tensor_release(g2);
    }
    keep(r, p);
    keep(r, buf);
    keep(r, p2);
}

static void c_adam(nl_device dev, results *r)
{
    for (int adamw = 0; adamw < 2; adamw++) {
        nl_tensor *p = R(dev, NL_F32, -1, 1, 513), *m = Z(dev, NL_F32, 513), *v = Z(dev, NL_F32, 513);
        for (int step = 1; step <= 3; step++) {
            nl_tensor *g = R(dev, NL_F32, -1, 1, 513);
            nl_op a = {.code = NL_OP_ADAM_STEP, .dst = p, .src = {g, m, v}, .i = {step, adamw},
                       .f = {1e-3, 0.9, 0.999, 1e-8, 0.01}};
            ran(r, nl_op_exec(&a));
            nl_tensor_release(g);
        }
        keep(r, p);
        keep(r, m);
        keep(r, v);
    }
}

static void c_fakequant(nl_device dev, results *r)
{
    nl_tensor *x = R(dev, NL_F32, -3, 3, 6, 25), *s = R(dev, NL_F32, 0.01, 0.05, 6);
    nl_tensor *gy = R(dev, NL_F32, -1, 1, 6, 25);
    nl_tensor *y1 = Z(dev, NL_F32, 6, 25), *y2 = Z(dev, NL_F32, 6, 25), *y3 = Z(dev, NL_F32, 6, 25);
    nl_op a = {.code = NL_OP_FAKEQUANT, .dst = y1, .src = {x}, .f = {0.02, 128, 0, 255}};
    nl_op b = {.code = NL_OP_FAKEQUANT, .dst = y2, .src = {x, s}, .f = {0, 0, -127, 127}};
    nl_op c = {.code = NL_OP_FAKEQUANT, .dst = y3, .src = {x, NULL, gy}, .f = {0.02, 128, 0, 255}};
    exec_keep(r, &a, 0, NULL);
    exec_keep(r, &b, 0, NULL);
    exec_keep(r, &c, 0, NULL);
    nl_tensor_release(x);
    nl_tensor_release(s);
    nl_tensor_release(gy);
}

/* Tolerances: elementwise 1e-5 relative; reductions and GEMM-based ops 1e-4 (sums in another
 * order); random normals 1e-6 (log/cos of another libm); integer and mask results exact. */
static const test_case cases[] = {
    {"fill", c_fill, 0, 0},
    {"copy", c_copy, 0, 0},
    {"binary f32", c_binary_f32, 1e-5, 1e-6},
    {"binary int", c_binary_int, 1e-5, 1e-6},
    {"compare", c_compare, 0, 0},
    {"binary scalar", c_scalar, 1e-5, 1e-6},
    {"unary f32", c_unary, 1e-5, 1e-6},
    {"unary int", c_unary_int, 1e-5, 1e-6},
    {"rand", c_rand, 1e-6, 1e-6},
    {"reduce", c_reduce, 1e-4, 1e-5},
    {"matmul", c_matmul, 1e-4, 1e-5},
    {"conv2d 3x3", c_conv3, 1e-4, 1e-5},
    {"conv2d 5x5 stride 2", c_conv5s2, 1e-4, 1e-5},
    {"conv2d 1x1", c_conv1, 1e-4, 1e-5},
    {"conv2d, aux > batch", c_conv_aux, 1e-4, 1e-5},
    {"big: conv2d in chunks", c_conv_big, 1e-4, 1e-5},
    {"max pool 2x2", c_maxpool2, 1e-5, 1e-6},
    {"max pool 3x3 s2 p1", c_maxpool3, 1e-5, 1e-6},
    {"avg pool 3x3 s1 p1", c_avgpool3, 1e-5, 1e-6},
    {"batchnorm", c_batchnorm, 1e-4, 1e-5},
    {"activations", c_act, 1e-5, 1e-6},
    {"softmax", c_softmax, 1e-4, 1e-6},
    {"dropout", c_dropout, 1e-5, 1e-6},
    {"cross entropy", c_cross_entropy, 1e-4, 1e-6},
    {"sgd", c_sgd, 1e-5, 1e-6},
    {"adam", c_adam, 1e-5, 1e-6},
    {"fakequant", c_fakequant, 1e-5, 1e-6},
};

/* ---------------------------------------------------------------- the harness ----------- */

/* The largest |a - b| / (atol + rtol |b|) over the elements (<= 1: within tolerance); -1 when the
 * shapes or dtypes differ. */
static double worst(const nl_tensor *dev_t, const nl_tensor *ref, double rtol, double atol)
{
    if (!dev_t || !ref || dev_t->dtype != ref->dtype || !nl_same_shape(dev_t, ref)) return -1;
    nl_tensor *h = nl_tensor_to_device(dev_t, NL_CPU);
    nl_tensor *a = h ? nl_tensor_to_dtype(h, NL_F32) : NULL, *b = nl_tensor_to_dtype(ref, NL_F32);
    double w = a && b ? 0 : -1;
    for (int64_t k = 0; a && b && k < nl_tensor_numel(a); k++) {
        double x = nl_tensor_f32(a)[k], y = nl_tensor_f32(b)[k];
        double e = x == y || (x != x && y != y) ? 0 : fabs(x - y) / (atol + rtol * fabs(y));
        if (!(e <= w)) w = e != e ? INFINITY : e;
    }
    nl_tensor_release(h);
    nl_tensor_release(a);
    nl_tensor_release(b);
    return w;
}

static void run_case(const test_case *tc, nl_device dev)
{
    if (nl_device_kind(dev) != NL_CUDA && strncmp(tc->name, "big:", 4) == 0) {
        printf("  %-22s only on a GPU (slow on the CPU's kernels)\n", tc->name);
        return;
    }
    results ref = {.st = NL_OK}, got = {.st = NL_OK};
    nl_rng_seed(1234);
    tc->run(NL_CPU, &ref);
    nl_rng_seed(1234);
    tc->run(dev, &got);
    CHECK(ref.st == NL_OK && got.st == NL_OK && ref.n == got.n && ref.n > 0,
          "%s: the case ran (cpu %s, %s %s, %d and %d results)", tc->name,
          nl_status_name(ref.st), nl_device_name(dev), nl_status_name(got.st), ref.n, got.n);
    double w = 0;
    for (int k = 0; k < ref.n && k < got.n; k++) {
        double e = worst(got.out[k], ref.out[k], tc->rtol, tc->atol);
        CHECK(e >= 0 && e <= 1, "%s: result %d differs from the cpu's (%.3g of the tolerance "
              "rtol %g atol %g)", tc->name, k + 1, e, tc->rtol, tc->atol);
        if (e > w) w = e;
    }
    printf("  %-22s %d results, worst %.3f of tolerance (rtol %g)\n", tc->name, got.n, w, tc->rtol);
    for (int k = 0; k < ref.n; k++) nl_tensor_release(ref.out[k]);
    for (int k = 0; k < got.n; k++) nl_tensor_release(got.out[k]);
}

int main(int argc, char **argv)
{
    nl_init();
    const char *name = argc > 1 ? argv[1] : "cuda";
    nl_device dev = nl_device_parse(name);
    if (dev == NL_DEVICE_COUNT) {
        printf("unknown device '%s'\n", name);
        return 2;
    }
    if (!nl_backend_get(dev)) {
        printf("%s: %s; running on sim instead\n", name, nl_errmsg());
        dev = nl_device_parse("sim");
    }
    printf("%s against the cpu:\n", nl_device_name(dev));
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) run_case(&cases[k], dev);
    return TEST_REPORT();
}
