/* test_npy.c: .npy round trips for every writable dtype, golden files written by NumPy
 * (tests/data/npy, see make.py there), corrupt files, and atomic replacement on failure. */
#include "nl.h"
#include "testhelp.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];
static const char *golden_dir = "tests/data/npy";

/* A path in the temporary directory (or the golden directory), in one of a few static buffers. */
static const char *in_dir(const char *dir, const char *name)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}
static const char *tmp(const char *name) { return in_dir(tmpdir, name); }
static const char *golden(const char *name) { return in_dir(golden_dir, name); }

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        CHECK(fp != NULL, "cannot create %s", path);
        return;
    }
    if (n) fwrite(data, 1, n, fp);
    fclose(fp);
}

/* Writes a .npy file with the given version and header text (not padded) and data bytes. */
static void write_npy(const char *path, int major, const char *dict, const void *data, size_t n)
{
    unsigned char buf[4096];
    size_t hlen = strlen(dict), off = 0;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major, buf[7] = 0;
    buf[8] = hlen & 0xff, buf[9] = (hlen >> 8) & 0xff;
    off = 10;
    if (major > 1) buf[10] = (hlen >> 16) & 0xff, buf[11] = (unsigned char)(hlen >> 24), off = 12;
    memcpy(buf + off, dict, hlen);
    off += hlen;
    if (n) memcpy(buf + off, data, n);
    write_file(path, buf, off + n);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static int count_temp_files(void)
{
    int n = 0;
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static double at(const nl_tensor *t, const int64_t *idx)
{
    double v = NAN;
    nl_tensor_get(t, idx, &v);
    return v;
}

static bool has_shape(const nl_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

/* Element i of a contiguous tensor as a double. */
static double flat(const nl_tensor *t, int64_t i)
{
    const void *p = nl_tensor_data(t);
    switch (t->dtype) {
    case NL_F32: return ((const float *)p)[i];
    case NL_I8: return ((const int8_t *)p)[i];
    case NL_I32: return ((const int32_t *)p)[i];
    case NL_U8: return ((const uint8_t *)p)[i];
    default: return NAN;
    }
}

/* Loads a golden file and checks dtype, shape and values (in C order). */
static void check_golden(const char *name, nl_dtype dtype, int ndim, const int64_t *shape,
                         const double *want)
{
    nl_tensor *t = nl_npy_load(golden(name));
    CHECK(t != NULL, "%s: %s", name, nl_errmsg());
    if (!t) return;
    CHECK(t->dtype == dtype, "%s: dtype %s", name, nl_dtype_info(t->dtype)->name);
    CHECK(has_shape(t, ndim, shape), "%s: shape", name);
    CHECK(nl_tensor_is_contiguous(t), "%s: contiguous", name);
    int64_t n = nl_tensor_numel(t);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        ok = flat(t, i) == want[i];
        if (!ok) printf("  %s: element %lld is %g, expected %g\n", name, (long long)i, flat(t, i), want[i]);
    }
    CHECK(ok, "%s: values", name);
    nl_tensor_release(t);
}

static void test_golden(void)
{
    double w[64];
    for (int i = 0; i < 6; i++) w[i] = i * 0.5 - 1;
    check_golden("f8_2x3.npy", NL_F32, 2, (int64_t[]){2, 3}, w);
    check_golden("i8_5.npy", NL_I32, 1, (int64_t[]){5},
                 (double[]){-3, 0, 7, 2147483647.0, -2147483648.0});
    check_golden("b1_4.npy", NL_U8, 1, (int64_t[]){4}, (double[]){1, 0, 0, 1});
    check_golden("i1_3.npy", NL_I8, 1, (int64_t[]){3}, (double[]){-128, 0, 127});
    check_golden("u1_2x2.npy", NL_U8, 2, (int64_t[]){2, 2}, (double[]){0, 1, 254, 255});
    check_golden("i4_be_3.npy", NL_I32, 1, (int64_t[]){3}, (double[]){-2, 1, 65536});
    for (int i = 0; i < 6; i++) w[i] = i / 4.0;
    check_golden("f4_be_3x2.npy", NL_F32, 2, (int64_t[]){3, 2}, w);
    for (int i = 0; i < 24; i++) w[i] = 100 * (i / 12) + 10 * (i / 4 % 3) + i % 4;
    check_golden("f4_fortran_2x3x4.npy", NL_F32, 3, (int64_t[]){2, 3, 4}, w);
    for (int i = 0; i < 12; i++) w[i] = i;
    check_golden("f8_be_fortran_3x4.npy", NL_F32, 2, (int64_t[]){3, 4}, w);
    check_golden("f4_v2_2x2.npy", NL_F32, 2, (int64_t[]){2, 2}, (double[]){1.5, -2.5, 3.25, 0});
    check_golden("i4_v3_3.npy", NL_I32, 1, (int64_t[]){3}, (double[]){5, -6, 7});
    check_golden("f4_0d.npy", NL_F32, 0, NULL, (double[]){3.5});
    check_golden("f4_0x3.npy", NL_F32, 2, (int64_t[]){0, 3}, NULL);
}

/* Loading path fails with code, and the message names the path (and contains needle). */
static void expect_fail(const char *what, const char *path, nl_status code, const char *needle)
{
    nl_clearerr();
    nl_tensor *t = nl_npy_load(path);
    CHECK(t == NULL, "%s: loaded anyway", what);
    nl_tensor_release(t);
    CHECK(nl_errcode() == code, "%s: status '%s', expected '%s' (%s)", what,
          nl_status_name(nl_errcode()), nl_status_name(code), nl_errmsg());
    CHECK(strstr(nl_errmsg(), path) != NULL, "%s: message does not name the file: %s", what,
          nl_errmsg());
    if (needle)
        CHECK(strstr(nl_errmsg(), needle) != NULL, "%s: message lacks '%s': %s", what, needle,
              nl_errmsg());
}

static void test_golden_errors(void)
{
    expect_fail("int64 beyond i32", golden("i8_big.npy"), NL_EFORMAT, "2147483648");
    expect_fail("complex64", golden("c8_2.npy"), NL_EFORMAT, "'<c8'");
}

static void test_corrupt(void)
{
    const char *p;
    float four[4] = {1, 2, 3, 4};
    const char *ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n";

    write_npy(p = tmp("good.npy"), 1, ok_dict, four, sizeof four);
    nl_tensor *t = nl_npy_load(p);
    CHECK(t && nl_tensor_numel(t) == 4 && nl_tensor_f32(t)[3] == 4, "hand-made file loads: %s",
          nl_errmsg());
    nl_tensor_release(t);
    /* Lenient where numpy is: double quotes, no trailing comma, Python 2 longs, extra data. */
    unsigned char extra[20] = {0};
    write_npy(p = tmp("lenient.npy"), 1,
              "{\"shape\": (2L, 2L),\"descr\":\"<f4\",\"fortran_order\":True}", extra, sizeof extra);
    t = nl_npy_load(p);
    CHECK(t && nl_tensor_numel(t) == 4, "lenient header loads: %s", nl_errmsg());
    nl_tensor_release(t);

    write_file(p = tmp("empty.npy"), "", 0);
    expect_fail("empty file", p, NL_EFORMAT, "empty");
    write_file(p = tmp("magic.npy"), "PK\x03\x04 this is a zip file", 24);
    expect_fail("bad magic", p, NL_EFORMAT, "magic");
    write_file(p = tmp("short.npy"), "\x93NUMPY\x01", 7);
    expect_fail("truncated preamble", p, NL_EFORMAT, "truncated");
    write_file(p = tmp("hlen.npy"), "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'", 25);
    expect_fail("truncated header", p, NL_EFORMAT, "truncated");
    write_npy(p = tmp("version.npy"), 4, ok_dict, four, sizeof four);
    expect_fail("unknown version", p, NL_EFORMAT, "version 4.0");

    /* Truncated data: the message gives both sizes. */
    write_npy(p = tmp("data.npy"), 1, ok_dict, four, 10);
    char want[600];
    snprintf(want, sizeof want, "%s: truncated: expected 16 bytes of data, found 10", p);
    expect_fail("truncated data", p, NL_EFORMAT, want);

    static const struct { const char *what, *dict; } bad[] = {
        {"not a dict", "['descr', '<f4']"},
        {"missing colon", "{'descr' '<f4', 'fortran_order': False, 'shape': (4,), }"},
        {"unknown key", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}"},
        {"duplicate key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}"},
        {"missing key", "{'descr': '<f4', 'shape': (4,), }"},
        {"shape as list", "{'descr': '<f4', 'fortran_order': False, 'shape': [4], }"},
        {"negative dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }"},
        {"float dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (4.0,), }"},
        {"bad bool", "{'descr': '<f4', 'fortran_order': 0, 'shape': (4,), }"},
        {"unterminated string", "{'descr': '<f4, 'fortran_order': False, 'shape': (4,)}"},
        {"unclosed dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), "},
        {"trailing text", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), } x"},
        {"structured dtype", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}"},
        {"dim overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_npy(p = tmp("dict.npy"), 1, bad[i].dict, four, sizeof four);
        expect_fail(bad[i].what, p, NL_EFORMAT, "header");
    }

    static const char *dtypes[] = {"<c16", "<f2", "|O", "<U8", "|S4", "<m8", "f", "<i3", ""};
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++) {
        char dict[200];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (1,), }",
                 dtypes[i]);
        write_npy(p = tmp("dtype.npy"), 1, dict, four, sizeof four);
        snprintf(want, sizeof want, "'%s'", dtypes[i]);
        expect_fail(dtypes[i], p, NL_EFORMAT, want);
    }

    /* Huge shapes are refused before any allocation. */
    write_npy(p = tmp("huge1.npy"), 1,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776)}",
              four, sizeof four);
    expect_fail("shape product overflows", p, NL_EFORMAT, "too large");
    write_npy(p = tmp("huge2.npy"), 2,
              "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,)}", four, sizeof four);
    expect_fail("huge shape, little data", p, NL_EFORMAT, "truncated");
    write_npy(p = tmp("ndim.npy"), 1,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", four, 4);
    expect_fail("nine dimensions", p, NL_EFORMAT, "dimensions");
    write_npy(p = tmp("hlen2.npy"), 2, "", NULL, 0); /* header length 0 */
    expect_fail("empty header", p, NL_EFORMAT, "header");

    expect_fail("directory", tmpdir, NL_EIO, "Is a directory");
    p = tmp("missing.npy");
    snprintf(want, sizeof want, "cannot open '%s': No such file or directory", p);
    expect_fail("missing file", p, NL_EIO, want);

    /* Beyond the memory limit: NL_ENOMEM from the constructor, naming the file. */
    size_t limit = nl_mem_limit();
    nl_set_mem_limit(8);
    expect_fail("over the memory limit", tmp("good.npy"), NL_ENOMEM, NULL);
    nl_set_mem_limit(limit);
}

/* A tensor of dtype and shape with values that fit every dtype: (i * 7) % 100 - 50 (u8: + 50). */
static nl_tensor *sample(nl_dtype dtype, int ndim, const int64_t *shape)
{
    nl_tensor *t = nl_tensor_empty(dtype, ndim, shape, NL_CPU);
    int64_t n = nl_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = (double)((i * 7) % 100 - 50) + (dtype == NL_U8 ? 50 : dtype == NL_F32 ? 0.25 : 0);
        void *p = nl_tensor_data(t);
        switch (dtype) {
        case NL_F32: ((float *)p)[i] = (float)v; break;
        case NL_I8: ((int8_t *)p)[i] = (int8_t)v; break;
        case NL_I32: ((int32_t *)p)[i] = (int32_t)v * 1000003; break;
        case NL_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
        default: break;
        }
    }
    return t;
}

static void test_round_trip(void)
{
    static const int64_t shapes[][3] = {{0}, {5}, {2, 3, 4}, {0, 3}};
    static const int ndims[] = {0, 1, 3, 2};
    static const char *descr[] = {"'<f4'", "'|i1'", "'<i4'", "'|u1'"};
    for (int dt = 0; dt < NL_DTYPE_COUNT; dt++)
        for (int s = 0; s < 4; s++) {
            nl_tensor *a = sample((nl_dtype)dt, ndims[s], shapes[s]);
            const char *p = tmp("rt.npy");
            nl_status st = nl_npy_save(p, a);
            CHECK(st == NL_OK, "save %s ndim %d: %s", nl_dtype_info(dt)->name, ndims[s], nl_errmsg());
            nl_tensor *b = nl_npy_load(p);
            CHECK(b != NULL, "load %s ndim %d: %s", nl_dtype_info(dt)->name, ndims[s], nl_errmsg());
            if (b) {
                size_t bytes = (size_t)nl_tensor_numel(a) * nl_dtype_info(dt)->size;
                CHECK(b->dtype == a->dtype && nl_same_shape(a, b) &&
                      !memcmp(nl_tensor_data(a), nl_tensor_data(b), bytes),
                      "round trip %s ndim %d", nl_dtype_info(dt)->name, ndims[s]);
            }
            /* The header as numpy writes it: data on a 64-byte boundary, dict ends in '\n'. */
            FILE *fp = fopen(p, "rb");
            unsigned char head[256] = {0};
            size_t got = fp ? fread(head, 1, sizeof head, fp) : 0;
            if (fp) fclose(fp);
            size_t hlen = head[8] | (size_t)head[9] << 8;
            CHECK(got >= 10 && !memcmp(head, "\x93NUMPY\x01\x00", 8) && (10 + hlen) % 64 == 0 &&
                      10 + hlen <= got && head[10 + hlen - 1] == '\n',
                  "header layout (%s ndim %d)", nl_dtype_info(dt)->name, ndims[s]);
            CHECK(hlen < sizeof head && memmem(head + 10, hlen, descr[dt], strlen(descr[dt])),
                  "descr %s written", descr[dt]);
            CHECK(file_size(p) == (long)(10 + hlen) + (long)nl_tensor_numel(a) * (long)nl_dtype_info(dt)->size,
                  "file size");
            nl_tensor_release(a);
            nl_tensor_release(b);
        }

    /* The exact header text for a 3-d f32 tensor and a 1-d one (numpy's repr of the shape). */
    nl_tensor *a = sample(NL_F32, 3, (int64_t[]){2, 3, 4});
    nl_npy_save(tmp("h.npy"), a);
    char head[128] = {0};
    FILE *fp = fopen(tmp("h.npy"), "rb");
    if (fp) {
        CHECK(fread(head, 1, sizeof head - 1, fp) > 0, "read back");
        fclose(fp);
    }
    CHECK(!strncmp(head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }",
                   62), "header text: %.70s", head + 10);
    nl_tensor_release(a);

    /* A transposed (non-contiguous) view is written in its logical order. */
    nl_tensor *m = sample(NL_F32, 2, (int64_t[]){3, 4});
    nl_tensor *mt = nl_tensor_transpose(m, 0, 1);
    CHECK(nl_npy_save(tmp("t.npy"), mt) == NL_OK, "save a transposed view: %s", nl_errmsg());
    nl_tensor *b = nl_npy_load(tmp("t.npy"));
    CHECK(b && has_shape(b, 2, (int64_t[]){4, 3}), "transposed shape");
    bool same = b != NULL;
    for (int64_t i = 0; i < 4 && same; i++)
        for (int64_t j = 0; j < 3 && same; j++) same = at(b, (int64_t[]){i, j}) == at(m, (int64_t[]){j, i});
    CHECK(same, "transposed values");
    nl_tensor_release(b);
    nl_tensor_release(mt);
    nl_tensor_release(m);

    CHECK(nl_npy_save(tmp("null.npy"), NULL) == NL_EINVAL, "saving nothing");
    CHECK(count_temp_files() == 0, "no temporary files left behind");
}

static void test_atomic(void)
{
    const char *p = tmp("keep.npy");
    nl_tensor *a = sample(NL_F32, 1, (int64_t[]){10});
    CHECK(nl_npy_save(p, a) == NL_OK, "save: %s", nl_errmsg());
    long size = file_size(p);

    /* A save that fails midway, then is aborted: the old file stays, the temporary goes. */
    nl_atomic_file af;
    CHECK(nl_atomic_open(&af, p) == NL_OK, "atomic open: %s", nl_errmsg());
    CHECK(count_temp_files() == 1, "the temporary file sits beside the target");
    CHECK(nl_atomic_write(&af, "half a file", 11) == NL_OK, "atomic write");
    nl_atomic_abort(&af);
    nl_atomic_abort(&af); /* a second abort is harmless */
    CHECK(count_temp_files() == 0, "abort removes the temporary file");
    nl_tensor *b = nl_npy_load(p);
    CHECK(b && file_size(p) == size && !memcmp(nl_tensor_data(a), nl_tensor_data(b), 40),
          "the old file is intact after an abort");
    nl_tensor_release(b);

    /* A replaced file keeps its permissions. */
    chmod(p, 0600);
    CHECK(nl_npy_save(p, a) == NL_OK, "save over: %s", nl_errmsg());
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600, "mode kept: %o", sb.st_mode & 0777);
    CHECK(nl_atomic_open(&af, "") == NL_EINVAL, "no file name");

    /* Commit replaces. */
    CHECK(nl_atomic_open(&af, tmp("plain.txt")) == NL_OK, "open");
    CHECK(nl_atomic_write(&af, "hello\n", 6) == NL_OK && nl_atomic_commit(&af) == NL_OK,
          "write and commit: %s", nl_errmsg());
    CHECK(file_size(tmp("plain.txt")) == 6 && count_temp_files() == 0, "commit renames");

    /* A full disk, simulated with a file-size limit (writes fail with EFBIG, not a signal). */
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 4096;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        nl_tensor *big = sample(NL_F32, 1, (int64_t[]){100000});
        nl_status st = nl_npy_save(p, big);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(st == NL_EIO, "a failed write is NL_EIO (%s)", nl_errmsg());
        CHECK(strstr(nl_errmsg(), p) != NULL && strstr(nl_errmsg(), "too large") != NULL,
              "message names the file and the reason: %s", nl_errmsg());
        CHECK(count_temp_files() == 0, "no temporary file after a failed write");
        b = nl_npy_load(p);
        CHECK(b && file_size(p) == size && !memcmp(nl_tensor_data(a), nl_tensor_data(b), 40),
              "the old file is intact after a failed write");
        nl_tensor_release(b);
        nl_tensor_release(big);
    }
    signal(SIGXFSZ, prev);

    /* A missing directory. */
    const char *q = tmp("no/such/dir/x.npy");
    CHECK(nl_npy_save(q, a) == NL_EIO, "save into a missing directory");
    CHECK(strstr(nl_errmsg(), q) != NULL && strstr(nl_errmsg(), "No such file") != NULL,
          "message names the path and reason: %s", nl_errmsg());
    /* The target is a directory: the rename fails, nothing is left behind. */
    mkdir(tmp("adir"), 0755);
    CHECK(nl_npy_save(tmp("adir"), a) == NL_EIO, "save over a directory: %s", nl_errmsg());
    CHECK(count_temp_files() == 0, "no temporary file after a failed rename");
    rmdir(tmp("adir"));
    nl_tensor_release(a);
}

/* Every prefix of a good file fails cleanly, and every single-byte change of its header either
 * loads or fails with a message naming the file (run under ASan by `make SAN=1 test`). */
static void test_mutations(void)
{
    nl_tensor *a = sample(NL_I32, 2, (int64_t[]){2, 3});
    const char *src = tmp("src.npy"), *p = tmp("mut.npy");
    nl_npy_save(src, a);
    nl_tensor_release(a);
    unsigned char buf[256];
    FILE *fp = fopen(src, "rb");
    size_t n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    CHECK(n == 128 + 24, "saved file is %zu bytes", n);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_file(p, buf, len);
        nl_tensor *t = nl_npy_load(p);
        bad += t != NULL || nl_errcode() != NL_EFORMAT || !strstr(nl_errmsg(), p);
        nl_tensor_release(t);
    }
    CHECK(bad == 0, "%d of %zu prefixes were not refused as NL_EFORMAT", bad, n);
    static const unsigned char vals[] = {0, ' ', '\'', ',', '(', ')', '{', '}', ':', '9', 'L', 0xff};
    int loaded = 0, unnamed = 0;
    for (size_t pos = 0; pos < 128; pos++)
        for (size_t v = 0; v < sizeof vals; v++) {
            unsigned char m[256];
            memcpy(m, buf, n);
            m[pos] = vals[v];
            write_file(p, m, n);
            nl_clearerr();
            nl_tensor *t = nl_npy_load(p);
            if (t) loaded++;
            else unnamed += !strstr(nl_errmsg(), p);
            nl_tensor_release(t);
        }
    CHECK(unnamed == 0, "%d failed mutations gave messages without the path", unnamed);
    CHECK(loaded > 0 && loaded < 128 * (int)sizeof vals, "some mutations load (%d), most do not",
          loaded);
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tmp(e->d_name));
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    nl_init();
    const char *env = getenv("NNLAB_TESTDATA");
    if (env) golden_dir = env;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nnlab-npy-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_golden();
    test_golden_errors();
    test_corrupt();
    test_round_trip();
    test_atomic();
    test_mutations();
    remove_tmpdir();
    return TEST_REPORT();
}
