/* test_tensor.c: storage refcounts, view semantics (reshape, transpose, slice, permute),
 * constructors' limits and error messages, element access, dtype and device copies. */
#include "nl.h"
#include "testhelp.h"

#include <string.h>

static nl_tensor *arange(int ndim, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU);
    float *p = nl_tensor_f32(t);
    for (int64_t i = 0; i < nl_tensor_numel(t); i++) p[i] = (float)i;
    return t;
}

static double at(const nl_tensor *t, int64_t i, int64_t j)
{
    int64_t idx[2] = {i, j};
    double v = -1;
    nl_tensor_get(t, idx, &v);
    return v;
}

static void test_refcounts_and_views(void)
{
    int64_t shape[2] = {3, 4};
    nl_tensor *t = arange(2, shape);
    CHECK(t->refcount == 1 && t->storage->refcount == 1, "fresh tensor owns its storage alone");
    CHECK(nl_tensor_is_contiguous(t), "fresh tensor is contiguous");

    nl_tensor *tr = nl_tensor_transpose(t, 0, 1);
    CHECK(tr->storage == t->storage && t->storage->refcount == 2, "transpose shares storage");
    CHECK(tr->shape[0] == 4 && tr->shape[1] == 3, "transpose shape");
    CHECK(!nl_tensor_is_contiguous(tr), "transpose is not contiguous");
    CHECK(at(tr, 2, 1) == at(t, 1, 2), "transpose element");

    nl_tensor *sl = nl_tensor_slice(t, 0, 1, 3);
    CHECK(sl->shape[0] == 2 && sl->shape[1] == 4 && at(sl, 0, 0) == 4, "row slice starts at row 1");
    int64_t idx[2] = {1, 3};
    nl_tensor_set(sl, idx, 99);
    CHECK(at(t, 2, 3) == 99, "writing through a slice changes the original");

    nl_tensor *col = nl_tensor_slice(t, 1, 2, 3);
    CHECK(col->shape[0] == 3 && col->shape[1] == 1 && at(col, 1, 0) == 6, "column slice");

    int64_t flat[1] = {-1};
    nl_tensor *r = nl_tensor_reshape(t, 1, flat);
    CHECK(r && r->shape[0] == 12 && r->storage == t->storage, "reshape of contiguous is a view");
    nl_tensor *rt = nl_tensor_reshape(tr, 1, flat);
    CHECK(rt && rt->storage != t->storage, "reshape of a transposed view copies");
    int64_t i5[1] = {5};
    double v;
    nl_tensor_get(rt, i5, &v);
    CHECK(v == 9, "reshape of transposed view keeps logical order (got %g)", v);

    nl_tensor *c = nl_tensor_clone(tr);
    CHECK(c->storage != t->storage && nl_tensor_is_contiguous(c), "clone copies");
    CHECK(at(c, 3, 2) == 99, "clone values");

    int perm[2] = {1, 0};
    nl_tensor *p = nl_tensor_permute(t, perm);
    CHECK(p && at(p, 3, 2) == 99, "permute");
    int bad[2] = {0, 0};
    CHECK(nl_tensor_permute(t, bad) == NULL && nl_errcode() == NL_EINVAL, "permute rejects repeats");

    nl_tensor_release(p);
    nl_tensor_release(c);
    nl_tensor_release(rt);
    nl_tensor_release(r);
    nl_tensor_release(col);
    nl_tensor_release(sl);
    nl_tensor_release(tr);
    CHECK(t->storage->refcount == 1, "views released their storage references");
    nl_tensor_release(t);
}

static void test_errors(void)
{
    int64_t shape[2] = {3, 4};
    nl_tensor *t = arange(2, shape);

    int64_t bad[2] = {5, -1};
    CHECK(nl_tensor_reshape(t, 2, bad) == NULL && nl_errcode() == NL_ESHAPE, "reshape 12 into 5x?");
    CHECK(strstr(nl_errmsg(), "[3, 4]") && strstr(nl_errmsg(), "[5, -1]"), "message names both shapes: %s",
          nl_errmsg());
    int64_t two_infer[2] = {-1, -1};
    CHECK(nl_tensor_reshape(t, 2, two_infer) == NULL && nl_errcode() == NL_EINVAL, "two -1");
    int64_t wrong[2] = {2, 5};
    CHECK(nl_tensor_reshape(t, 2, wrong) == NULL && strstr(nl_errmsg(), "10 elements"), "%s", nl_errmsg());

    CHECK(nl_tensor_transpose(t, 0, 2) == NULL && strstr(nl_errmsg(), "dimension 3"), "%s", nl_errmsg());
    CHECK(nl_tensor_slice(t, 0, 2, 5) == NULL && nl_errcode() == NL_EINVAL, "slice past the end");
    CHECK(nl_tensor_slice(t, 1, 3, 2) == NULL, "slice with start > stop");

    int64_t idx[2] = {3, 0};
    double v;
    CHECK(nl_tensor_get(t, idx, &v) == NL_EINVAL && strstr(nl_errmsg(), "index 4"), "%s", nl_errmsg());

    int64_t huge[2] = {1000000, 1000000};
    CHECK(nl_tensor_zeros(NL_F32, 2, huge, NL_CPU) == NULL && nl_errcode() == NL_ENOMEM, "1e12 floats");
    CHECK(strstr(nl_errmsg(), "[1000000, 1000000]") != NULL, "%s", nl_errmsg());
    int64_t overflow[3] = {INT64_C(1) << 40, INT64_C(1) << 40, 16};
    CHECK(nl_tensor_empty(NL_F32, 3, overflow, NL_CPU) == NULL && nl_errcode() == NL_ENOMEM,
          "size overflow is caught");
    int64_t empty_wide[4] = {0, 1, INT64_C(1) << 40, INT64_C(1) << 40}; /* strides past 64 bits */
    CHECK(nl_tensor_empty(NL_U8, 4, empty_wide, NL_CPU) == NULL && nl_errcode() == NL_EINVAL &&
          strstr(nl_errmsg(), "strides beyond 64 bits"), "an empty tensor whose strides overflow: %s", nl_errmsg());
    int64_t empty_ok[3] = {0, 1 << 20, 1 << 20};
    nl_tensor *e = nl_tensor_empty(NL_U8, 3, empty_ok, NL_CPU);
    CHECK(e && nl_tensor_numel(e) == 0 && e->strides[0] == INT64_C(1) << 40, "an empty tensor with wide strides");
    nl_tensor_release(e);
    int64_t neg[1] = {-3};
    CHECK(nl_tensor_empty(NL_F32, 1, neg, NL_CPU) == NULL && nl_errcode() == NL_EINVAL, "negative size");
    int64_t many[NL_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(nl_tensor_empty(NL_F32, NL_MAX_DIMS + 1, many, NL_CPU) == NULL, "too many dims");

    CHECK(nl_tensor_to_device(t, NL_CUDA) == NULL && strstr(nl_errmsg(), "no CUDA device"), "%s",
          nl_errmsg());
    nl_tensor_release(t);
}

static void test_dtypes(void)
{
    CHECK(nl_dtype_parse("f32") == NL_F32 && nl_dtype_parse("int8") == NL_I8 &&
              nl_dtype_parse("u8") == NL_U8 && nl_dtype_parse("f64") == NL_DTYPE_COUNT,
          "dtype names");
    CHECK(nl_device_parse("cpu") == NL_CPU && nl_device_parse("cuda") == NL_CUDA &&
              nl_device_parse("tpu") == NL_DEVICE_COUNT, "device names");
    float data[5] = {1.6f, -1.5f, 300.f, -300.f, 2.5f};
    int64_t shape[1] = {5};
    nl_tensor *t = nl_tensor_from_data(NL_F32, 1, shape, data);
    nl_tensor *i8 = nl_tensor_to_dtype(t, NL_I8);
    const int8_t *q = nl_tensor_data(i8);
    CHECK(q[0] == 2 && q[1] == -2 && q[2] == 127 && q[3] == -128 && q[4] == 2,
          "f32->i8 rounds half to even and saturates: %d %d %d %d %d", q[0], q[1], q[2], q[3], q[4]);
    int64_t i3[1] = {2};
    nl_tensor_set(i8, i3, 1000);
    double v;
    nl_tensor_get(i8, i3, &v);
    CHECK(v == 127, "set saturates too");
    nl_tensor_release(i8);
    nl_tensor_release(t);
}

int main(void)
{
    nl_init();
    test_refcounts_and_views();
    test_errors();
    test_dtypes();
    return TEST_REPORT();
}
