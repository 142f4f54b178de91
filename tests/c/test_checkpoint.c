/* test_checkpoint.c: safetensors round trips (every dtype, strided and empty tensors, metadata),
 * every kind of corrupt file rejected with a message naming the path and the problem, atomic
 * saves, module checkpoints of a net with every layer type (bit-identical, architecture restored)
 * and optimizer state that resumes training exactly.
 * With an argument, also saves that net to the path given (and an input and the net's eval-mode
 * output beside it as PATH.x.npy, PATH.y.npy), for the hand check with Python and PyTorch:
 *   build/release/tests/test_checkpoint /tmp/net.safetensors
 *   python3 tests/golden/safetensors_check.py /tmp/net.safetensors --torch */
#include "checkpoint.h"
#include "nethelp.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

/* dir/name, in one of a few rotating buffers. */
static const char *tmp_path(const char *name)
{
    static char bufs[4][320];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    fwrite(buf, 1, n, fp);
    fclose(fp);
}

/* A file with this header text and datalen bytes of data (0, 1, 2, ...). */
static void write_raw(const char *path, const char *header, size_t datalen)
{
    size_t hn = strlen(header), n = 8 + hn + datalen;
    unsigned char *buf = malloc(n);
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)((uint64_t)hn >> (8 * b));
    memcpy(buf + 8, header, hn);
    for (size_t i = 0; i < datalen; i++) buf[8 + hn + i] = (unsigned char)i;
    write_bytes(path, buf, n);
    free(buf);
}

static char *read_all(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    rewind(fp);
    char *buf = malloc(*n + 1);
    *n = fread(buf, 1, *n, fp);
    fclose(fp);
    return buf;
}

/* Opening path must fail with NL_EFORMAT and a message naming the path and containing msg. */
static void expect_bad_file(const char *what, const char *path, const char *msg)
{
    nl_st_file *f = nl_st_open(path);
    CHECK(!f && nl_errcode() == NL_EFORMAT && strstr(nl_errmsg(), path) && strstr(nl_errmsg(), msg),
          "%s: rejected with '%s' (got '%s')", what, msg, nl_errmsg());
    nl_st_close(f);
}

static void expect_bad(const char *what, const char *header, size_t datalen, const char *msg)
{
    const char *path = tmp_path(what);
    write_raw(path, header, datalen);
    expect_bad_file(what, path, msg);
}

static void test_corrupt(void)
{
    const char *path = tmp_path("short");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_bad_file("short", path, "shorter than the 8-byte header length");
    path = tmp_path("hlen");
    write_bytes(path, "\xe8\x03\0\0\0\0\0\0{}", 10);
    expect_bad_file("header length", path, "header length 1000 goes beyond the end of the file");
    expect_bad("json", "{\"a\": {\"dtype\": ", 0, "invalid JSON in the header");
    expect_bad("not an object", "[1, 2]", 0, "the header is not a JSON object");
    expect_bad("garbage", "{} x", 0, "bytes after its JSON object");
    expect_bad("range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
               "data_offsets [0, 8] out of range (the data has 4 bytes)");
    expect_bad("overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_bad("hole", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
               "a hole in the data: bytes 4 to 8");
    expect_bad("trailing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
               "4 bytes after the last tensor");
    expect_bad("size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
               "dtype F32 and shape [3] need 12 bytes, data_offsets [0, 8] hold 8");
    expect_bad("dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'a': unknown dtype 'F33'");
    expect_bad("no dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "no dtype");
    expect_bad("twice", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
               "tensor 'a' appears twice");
    expect_bad("meta", "{\"__metadata__\":{\"k\":1}}", 0, "metadata 'k' is not a string");
    expect_bad("negative", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
               "not a whole number");
    expect_bad("fraction", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", 0,
               "not a whole number");
    expect_bad("dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
               "\"data_offsets\":[0,1]}}", 1, "9 dimensions, nnlab handles at most 8");
    expect_bad("offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1,
               "data_offsets is not a pair");

    nl_st_file *f = nl_st_open(tmp_path("no such file"));
    CHECK(!f && nl_errcode() == NL_EIO && strstr(nl_errmsg(), "no such file") &&
          strstr(nl_errmsg(), "No such file or directory"), "a missing file: %s", nl_errmsg());
    f = nl_st_open(dir);
    CHECK(!f && nl_errcode() == NL_EIO && strstr(nl_errmsg(), "not a regular file"),
          "a directory: %s", nl_errmsg());
}

static nl_tensor *counting(nl_dtype dt, int ndim, const int64_t *shape, int start)
{
    nl_tensor *t = nl_tensor_empty(dt, ndim, shape, NL_CPU);
    int64_t n = nl_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[NL_MAX_DIMS], r = i;
        for (int d = ndim - 1; d >= 0; d--) {
            idx[d] = r % shape[d];
            r /= shape[d];
        }
        nl_tensor_set(t, idx, start + (double)i * (dt == NL_F32 ? 0.37 : 1));
    }
    return t;
}

/* Same dtype, shape and elements (through nl_tensor_get, so views compare by value). */
static bool same_tensor(const nl_tensor *a, const nl_tensor *b)
{
    if (a->dtype != b->dtype || !nl_same_shape(a, b)) return false;
    nl_tensor *ca = nl_tensor_clone(a), *cb = nl_tensor_clone(b);
    bool same = memcmp(nl_tensor_data(ca), nl_tensor_data(cb),
                       (size_t)nl_tensor_numel(ca) * nl_dtype_info(a->dtype)->size) == 0;
    nl_tensor_release(ca);
    nl_tensor_release(cb);
    return same;
}

static void test_roundtrip(void)
{
    int64_t s32[2] = {3, 2}, s5[1] = {5}, s0[1] = {0}, s8[8] = {1, 1, 2, 1, 1, 1, 1, 2};
    nl_tensor *base = counting(NL_F32, 2, s32, -1);
    nl_tensor *ts[5] = {
        nl_tensor_transpose(base, 0, 1),            /* strided [2, 3] */
        counting(NL_I8, 1, s5, -2),
        counting(NL_I32, 0, NULL, 123456789),       /* 0-d */
        counting(NL_U8, 1, s0, 0),                  /* empty */
        counting(NL_F32, 8, s8, 7),
    };
    const char *names[5] = {"w.t", "int8", "scalar", "empty", "eight"};
    nl_st_writer *w = nl_st_writer_new();
    /* A u8 first: the writer still places the wider tensors first, aligned. */
    CHECK(nl_st_writer_add(w, "u8 first", ts[3]) == NL_OK, "add");
    for (int i = 0; i < 5; i++) nl_st_writer_add(w, names[i], ts[i]);
    CHECK(nl_st_writer_add(w, "int8", ts[0]) == NL_EINVAL && strstr(nl_errmsg(), "added twice"),
          "a duplicate name is refused");
    CHECK(nl_st_writer_add(w, "__metadata__", ts[0]) == NL_EINVAL, "so is __metadata__");
    nl_st_writer_meta(w, "note", "first");
    nl_st_writer_meta(w, "note", "second");
    nl_st_writer_meta(w, "utf8", "h\xc3\xa9 \"quoted\"\n");
    const char *path = tmp_path("round.safetensors");
    CHECK(nl_st_writer_commit(w, path) == NL_OK, "commit: %s", nl_errmsg());
    nl_st_writer_free(w);

    nl_st_file *f = nl_st_open(path);
    CHECK(f != NULL, "reopen: %s", nl_errmsg());
    if (!f) return;
    CHECK(nl_st_count(f) == 6, "6 tensors");
    for (int i = 0; i < 5; i++) {
        nl_tensor *t = nl_st_get(f, names[i]);
        CHECK(t && same_tensor(t, ts[i]), "'%s' reads back identical", names[i]);
        const nl_st_entry *e = nl_st_find(f, names[i]);
        CHECK(e && e->begin % nl_dtype_info(ts[i]->dtype)->size == 0, "'%s' is aligned", names[i]);
        nl_tensor_release(t);
    }
    CHECK(strcmp(nl_st_meta(f, "note"), "second") == 0 && nl_st_meta_count(f) == 2,
          "metadata replaced, not repeated");
    CHECK(strcmp(nl_st_meta(f, "utf8"), "h\xc3\xa9 \"quoted\"\n") == 0, "metadata escapes");
    CHECK(nl_st_meta(f, "absent") == NULL, "absent metadata is NULL");
    CHECK(!nl_st_get(f, "zzz") && nl_errcode() == NL_EFORMAT &&
          strstr(nl_errmsg(), "missing tensor 'zzz'") && strstr(nl_errmsg(), path),
          "missing tensor: %s", nl_errmsg());
    nl_tensor *wrong = nl_tensor_empty(NL_F32, 2, s32, NL_CPU);
    CHECK(nl_st_read(f, "w.t", wrong) == NL_EFORMAT &&
          strstr(nl_errmsg(), "tensor 'w.t' has shape [2, 3], expected [3, 2]"),
          "a read into the wrong shape: %s", nl_errmsg());
    nl_tensor *view = nl_tensor_transpose(wrong, 0, 1);
    CHECK(nl_st_read(f, "w.t", view) == NL_OK && same_tensor(view, ts[0]),
          "read into a strided view");
    nl_tensor_release(view);
    nl_tensor_release(wrong);
    nl_st_close(f);

    /* A valid file with a dtype nnlab does not load: it opens; reading that tensor is NL_ETYPE. */
    path = tmp_path("f16");
    write_raw(path, "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}    ", 4);
    f = nl_st_open(path);
    CHECK(f && strcmp(nl_st_find(f, "h")->st_dtype, "F16") == 0, "an F16 file opens");
    CHECK(f && !nl_st_get(f, "h") && nl_errcode() == NL_ETYPE, "its tensor is NL_ETYPE: %s",
          nl_errmsg());
    nl_st_close(f);
    for (int i = 0; i < 5; i++) nl_tensor_release(ts[i]);
    nl_tensor_release(base);
}

/* No "<name>.tmp.<pid>" files left in dir. */
static bool no_temporaries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    bool none = true;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) none = false;
    closedir(d);
    return none;
}

static void test_atomic(void)
{
    const char *path = tmp_path("atomic.safetensors");
    int64_t s[1] = {1000};
    nl_tensor *t = counting(NL_F32, 1, s, 0);
    nl_st_writer *w = nl_st_writer_new();
    nl_st_writer_add(w, "t", t);
    CHECK(nl_st_writer_commit(w, path) == NL_OK, "first save");
    size_t n0, n1;
    char *before = read_all(path, &n0);
    nl_st_writer_add(w, "u", t);
    nl_interrupt();
    CHECK(nl_st_writer_commit(w, path) == NL_EINTR, "an interrupted save fails");
    nl_interrupt_clear();
    char *after = read_all(path, &n1);
    CHECK(n0 == n1 && memcmp(before, after, n0) == 0, "and leaves the previous file intact");
    CHECK(no_temporaries(), "and no temporary file");
    CHECK(nl_st_writer_commit(w, tmp_path("no/such/dir.safetensors")) == NL_EIO,
          "a save into a missing folder is NL_EIO: %s", nl_errmsg());
    free(before);
    free(after);
    nl_st_writer_free(w);
    nl_tensor_release(t);
}

/* ---------------------------------------------------------------- modules --------------- */

/* Every layer type, nested containers included. Input [2, 3, 8, 8]. */
static nl_module *every_layer_net(void)
{
    nl_module *res[2] = {net_make("Conv2d", "in", 6.0, "out", 6.0, "k", 3.0, "padding", 1.0, NULL),
                         net_make("GELU", NULL)};
    nl_module *head[3] = {net_make("GlobalAvgPool", NULL), net_make("Flatten", NULL),
                          net_make("Identity", NULL)};
    nl_module *kids[] = {
        net_make("Conv2d", "in", 3.0, "out", 4.0, "k", 3.0, "padding", 1.0, NULL),
        net_make("BatchNorm2d", "c", 4.0, "momentum", 0.3, NULL),
        net_make("ReLU", NULL),
        net_make("MaxPool2d", "k", 2.0, NULL),
        net_make("Conv2d", "in", 4.0, "out", 6.0, "k", 3.0, "stride", 2.0, "padding", 1.0, "bias",
                 0.0, NULL),
        net_make("LeakyReLU", "slope", 0.2, NULL),
        net_make("AvgPool2d", "k", 3.0, "stride", 1.0, "padding", 1.0, NULL),
        net_container("Residual", res, 2),
        net_make("Dropout", "p", 0.3, NULL),
        net_container("Sequential", head, 3),
        net_make("Linear", "in", 6.0, "out", 8.0, NULL),
        net_make("BatchNorm1d", "c", 8.0, "eps", 1e-3, NULL),
        net_make("Tanh", NULL),
        net_make("Linear", "in", 8.0, "out", 5.0, "bias", 0.0, NULL),
        net_make("Sigmoid", NULL),
        net_make("Softmax", NULL),
    };
    return net_container("Sequential", kids, (int)(sizeof kids / sizeof kids[0]));
}

static nl_tensor *forward_eval(nl_module *m, nl_tensor *x)
{
    nl_module_train(m, false);
    nl_tensor *y = NULL;
    nl_status st = nl_module_forward(m, x, &y);
    CHECK(st == NL_OK, "forward: %s", nl_errmsg());
    nl_module_train(m, true);
    return y;
}

static void test_module(const char *keep_path)
{
    nl_rng_seed(7);
    nl_module *net = every_layer_net();
    int64_t xs[4] = {2, 3, 8, 8};
    nl_tensor *x = nl_tensor_empty(NL_F32, 4, xs, NL_CPU);
    nl_rand_normal(x, 0, 1);
    nl_tensor *y = NULL;
    /* Two training steps' forwards move the running statistics away from 0 and 1. */
    for (int i = 0; i < 2; i++) {
        CHECK(nl_module_forward(net, x, &y) == NL_OK, "train forward: %s", nl_errmsg());
        nl_tensor_release(y);
    }
    const char *path = tmp_path("net.safetensors");
    const char *meta[] = {"trainer.step", "7", "rng.seed", "7", NULL};
    CHECK(nl_checkpoint_save_module(path, net, meta) == NL_OK, "save: %s", nl_errmsg());
    if (keep_path) { /* with an input and the eval-mode output, for the PyTorch comparison */
        char npy[512];
        nl_tensor *ye = forward_eval(net, x);
        CHECK(nl_checkpoint_save_module(keep_path, net, meta) == NL_OK, "save a copy");
        snprintf(npy, sizeof npy, "%s.x.npy", keep_path);
        CHECK(nl_npy_save(npy, x) == NL_OK, "save x: %s", nl_errmsg());
        snprintf(npy, sizeof npy, "%s.y.npy", keep_path);
        CHECK(ye && nl_npy_save(npy, ye) == NL_OK, "save y: %s", nl_errmsg());
        nl_tensor_release(ye);
    }

    nl_rng_state rng = nl_rng_get_state();
    nl_module *back = nl_checkpoint_load_module(path);
    nl_rng_state rng2 = nl_rng_get_state();
    CHECK(back != NULL, "load: %s", nl_errmsg());
    CHECK(rng.seed == rng2.seed && rng.counter == rng2.counter,
          "loading leaves the RNG stream alone");
    if (back) {
        char *a1 = nl_checkpoint_arch_json(net), *a2 = nl_checkpoint_arch_json(back);
        CHECK(strcmp(a1, a2) == 0, "the architecture is restored: %s", a2);
        free(a1);
        free(a2);
        nl_param *p1[64], *p2[64];
        int n1 = nl_module_params(net, p1, 64, true), n2 = nl_module_params(back, p2, 64, true);
        int same = 0;
        for (int i = 0; i < n1 && n1 == n2; i++)
            same += strcmp(p1[i]->name, p2[i]->name) == 0 &&
                    same_tensor(p1[i]->value, p2[i]->value) &&
                    (p1[i]->grad != NULL) == (p2[i]->grad != NULL);
        CHECK(n1 == n2 && same == n1 && n1 == 16, "all %d parameters and buffers bit-identical",
              n1);
        nl_tensor *y1 = forward_eval(net, x), *y2 = forward_eval(back, x);
        CHECK(y1 && y2 && same_tensor(y1, y2), "the loaded net computes the same outputs");
        nl_tensor_release(y1);
        nl_tensor_release(y2);
    }
    nl_st_file *f = nl_st_open(path);
    const char *step = f ? nl_st_meta(f, "trainer.step") : NULL;
    const char *version = f ? nl_st_meta(f, NL_CKPT_VERSION) : NULL;
    CHECK(step && strcmp(step, "7") == 0 && version && strcmp(version, "1") == 0,
          "extra metadata is kept");
    CHECK(f && nl_st_find(f, "0.weight") && nl_st_find(f, "1.running_var") &&
          nl_st_find(f, "7.0.bias") && nl_st_find(f, "11.running_mean") && !nl_st_find(f, "4.bias"),
          "tensors carry PyTorch's state_dict names");
    nl_st_close(f);
    nl_module_release(back);
    nl_module_release(net);
    nl_tensor_release(x);
}

/* Writes a module checkpoint with this architecture JSON and these tensors. */
static const char *arch_file(const char *name, const char *arch, int n, const char *const *names,
                             nl_tensor *const *ts)
{
    const char *path = tmp_path(name);
    nl_st_writer *w = nl_st_writer_new();
    if (arch) nl_st_writer_meta(w, NL_CKPT_ARCH, arch);
    for (int i = 0; i < n; i++) nl_st_writer_add(w, names[i], ts[i]);
    nl_st_writer_commit(w, path);
    nl_st_writer_free(w);
    return path;
}

static void expect_bad_module(const char *what, const char *path, nl_status code, const char *msg)
{
    nl_module *m = nl_checkpoint_load_module(path);
    CHECK(!m && nl_errcode() == code && strstr(nl_errmsg(), path) && strstr(nl_errmsg(), msg),
          "%s: rejected with '%s' (got '%s')", what, msg, nl_errmsg());
    nl_module_release(m);
}

static void test_bad_modules(void)
{
    int64_t s23[2] = {2, 3}, s24[2] = {2, 4}, s2[1] = {2};
    nl_tensor *w23 = nl_tensor_zeros(NL_F32, 2, s23, NL_CPU),
              *w24 = nl_tensor_zeros(NL_F32, 2, s24, NL_CPU);
    nl_tensor *b2 = nl_tensor_zeros(NL_F32, 1, s2, NL_CPU),
              *i2 = nl_tensor_zeros(NL_I32, 1, s2, NL_CPU);
    const char *lin = "{\"type\":\"Linear\",\"args\":{\"in\":3,\"out\":2}}";
    const char *const names[2] = {"weight", "bias"};
    nl_tensor *good[2] = {w23, b2}, *misshapen[2] = {w24, b2}, *mistyped[2] = {w23, i2};
    nl_module *m = nl_checkpoint_load_module(arch_file("lin", lin, 2, names, good));
    CHECK(m && m->nparams == 2 && nl_tensor_f32(m->params[0].value)[0] == 0,
          "a hand-made file loads");
    nl_module_release(m);
    expect_bad_module("no arch", arch_file("noarch", NULL, 2, names, good), NL_EFORMAT,
                      "no 'nnlab.arch' metadata");
    expect_bad_module("wrong shape", arch_file("shape", lin, 2, names, misshapen), NL_EFORMAT,
                      "tensor 'weight' has shape [2, 4], the architecture needs [2, 3]");
    expect_bad_module("wrong dtype", arch_file("dtype", lin, 2, names, mistyped), NL_EFORMAT,
                      "tensor 'bias' has dtype I32, the architecture needs F32");
    expect_bad_module("missing", arch_file("missing", lin, 1, names, good), NL_EFORMAT,
                      "missing tensor 'bias'");
    expect_bad_module("unknown type", arch_file("type", "{\"type\":\"Nope\"}", 0, NULL, NULL),
                      NL_EFORMAT, "unknown module type 'Nope'");
    expect_bad_module("unknown arg", arch_file("arg", "{\"type\":\"ReLU\",\"args\":{\"zz\":1}}", 0,
                      NULL, NULL), NL_EFORMAT, "ReLU has no argument 'zz'");
    expect_bad_module(
        "bad arg",
        arch_file("badarg", "{\"type\":\"Linear\",\"args\":{\"in\":0,\"out\":2}}", 0, NULL, NULL),
        NL_EFORMAT, "in must be");
    expect_bad_module("bad json", arch_file("arch json", "{\"type\":", 0, NULL, NULL), NL_EFORMAT,
                      "architecture: invalid JSON");
    expect_bad_module("children", arch_file("kids", "{\"type\":\"ReLU\",\"children\":[]}", 0, NULL,
                      NULL), NL_EFORMAT, "ReLU is not a container");
    nl_tensor_release(w23);
    nl_tensor_release(w24);
    nl_tensor_release(b2);
    nl_tensor_release(i2);
}

/* ---------------------------------------------------------------- optimizers ------------ */

static nl_module *mlp(int in)
{
    nl_module *kids[3] = {net_make("Linear", "in", (double)in, "out", 3.0, NULL),
                          net_make("ReLU", NULL), net_make("Linear", "in", 3.0, "out", 2.0, NULL)};
    return net_container("Sequential", kids, 3);
}

/* Fills every gradient of net from the RNG stream at its current state. */
static void random_grads(nl_module *net)
{
    nl_param *ps[16];
    int n = nl_module_params(net, ps, 16, false);
    for (int i = 0; i < n; i++) nl_rand_uniform(ps[i]->grad, -1, 1);
}

static bool same_params(nl_module *a, nl_module *b)
{
    nl_param *pa[16], *pb[16];
    int n = nl_module_params(a, pa, 16, true);
    bool same = n == nl_module_params(b, pb, 16, true);
    for (int i = 0; same && i < n; i++) same = same_tensor(pa[i]->value, pb[i]->value);
    return same;
}

/* Saves after 3 steps, resumes in a fresh net and optimizer, and checks that the next step gives
 * bit-identical weights. */
static void test_resume(nl_optim_kind kind, nl_optim_config cfg)
{
    const char *name = nl_optim_kind_name(kind);
    nl_rng_seed(11);
    nl_module *net = mlp(4);
    nl_optim *o = nl_optim_new(kind, net, &cfg);
    for (int s = 0; s < 3; s++) {
        random_grads(net);
        nl_optim_step(o);
    }
    const char *path = tmp_path("resume.safetensors");
    CHECK(nl_checkpoint_save(path, net, o, NULL) == NL_OK, "%s: save: %s", name, nl_errmsg());
    nl_st_file *f = nl_st_open(path);
    nl_module *net2 = f ? nl_checkpoint_module_from(f) : NULL;
    nl_optim *o2 = net2 ? nl_optim_new(kind, net2, NULL) : NULL;
    CHECK(o2 && nl_checkpoint_load_optim(f, o2) == NL_OK, "%s: load: %s", name, nl_errmsg());
    if (o2) {
        const nl_optim_config *c2 = nl_optim_get_config(o2);
        CHECK(nl_optim_steps(o2) == 3 && c2->lr == cfg.lr && c2->momentum == cfg.momentum &&
              c2->dampening == cfg.dampening && c2->nesterov == cfg.nesterov &&
              c2->beta1 == cfg.beta1 && c2->beta2 == cfg.beta2 && c2->eps == cfg.eps &&
              c2->weight_decay == cfg.weight_decay, "%s: steps and config restored", name);
        bool same = true;
        for (int i = 0; i < nl_optim_nparams(o); i++)
            for (int k = 0; k < nl_optim_state_count(o); k++)
                same &= same_tensor(nl_optim_state(o, i, k), nl_optim_state(o2, i, k));
        CHECK(same, "%s: state restored bit-identical", name);
        nl_rng_state r = nl_rng_get_state();
        random_grads(net);
        nl_optim_step(o);
        nl_rng_set_state(r);
        random_grads(net2);
        nl_optim_step(o2);
        CHECK(same_params(net, net2), "%s: the resumed run takes the same next step", name);
    }
    nl_optim_release(o2);
    nl_module_release(net2);
    nl_st_close(f);
    nl_optim_release(o);
    nl_module_release(net);
}

/* Bytes of every state tensor, the step count and lr, to see that a failed load changed nothing. */
static char *optim_snapshot(nl_optim *o, size_t *n)
{
    *n = 0;
    char *buf = malloc(1 << 16);
    for (int i = 0; i < nl_optim_nparams(o); i++)
        for (int k = 0; k < nl_optim_state_count(o); k++) {
            nl_tensor *t = nl_optim_state(o, i, k);
            size_t b = (size_t)nl_tensor_numel(t) * sizeof(float);
            memcpy(buf + *n, nl_tensor_data(t), b);
            *n += b;
        }
    int64_t steps = nl_optim_steps(o);
    double lr = nl_optim_get_lr(o);
    memcpy(buf + *n, &steps, sizeof steps);
    memcpy(buf + *n + sizeof steps, &lr, sizeof lr);
    *n += sizeof steps + sizeof lr;
    return buf;
}

static void expect_optim_unchanged(const char *what, nl_optim *o, const char *path, nl_status code,
                                   const char *msg)
{
    size_t n0, n1;
    char *before = optim_snapshot(o, &n0);
    nl_st_file *f = nl_st_open(path);
    nl_status st = f ? nl_checkpoint_load_optim(f, o) : nl_errcode();
    char *after = optim_snapshot(o, &n1);
    CHECK(st == code && strstr(nl_errmsg(), msg) && strstr(nl_errmsg(), path),
          "%s: rejected with '%s' (got '%s')", what, msg, nl_errmsg());
    CHECK(n0 == n1 && memcmp(before, after, n0) == 0, "%s: the optimizer is unchanged", what);
    nl_st_close(f);
    free(before);
    free(after);
}

static void test_bad_optim(void)
{
    nl_module *net = mlp(4), *wide = mlp(5);
    nl_optim *o = nl_optim_new(NL_OPTIM_ADAM, net, NULL);
    random_grads(net);
    nl_optim_step(o);
    nl_optim *ow = nl_optim_new(NL_OPTIM_ADAM, wide, NULL);
    random_grads(wide);
    nl_optim_step(ow);
    nl_optim_set_lr(ow, 0.5);
    const char *path = tmp_path("wide.safetensors");
    nl_checkpoint_save(path, wide, ow, NULL);
    expect_optim_unchanged(
        "misshapen state", o, path, NL_EFORMAT,
        "tensor 'optim.0.weight.m' has shape [3, 5], the optimizer needs [3, 4]");
    path = tmp_path("noopt.safetensors");
    nl_checkpoint_save(path, net, NULL, NULL);
    expect_optim_unchanged("no optimizer", o, path, NL_EFORMAT, "no optimizer state");
    nl_optim *sgd = nl_optim_new(NL_OPTIM_SGD, net, NULL);
    path = tmp_path("sgd.safetensors");
    nl_checkpoint_save(path, net, sgd, NULL);
    expect_optim_unchanged("other kind", o, path, NL_EINVAL,
                           "holds sgd state, the optimizer is adam");
    /* The optimizer metadata of a good file with one state tensor left out. */
    path = tmp_path("good.safetensors");
    nl_checkpoint_save(path, net, o, NULL);
    nl_st_file *f = nl_st_open(path);
    nl_st_writer *w = nl_st_writer_new();
    nl_st_writer_meta(w, NL_CKPT_OPTIM, nl_st_meta(f, NL_CKPT_OPTIM));
    for (int i = 0; i < nl_st_count(f); i++) {
        const char *name = nl_st_at(f, i)->name;
        nl_tensor *t = nl_st_get(f, name);
        if (strcmp(name, "optim.2.bias.v") != 0) nl_st_writer_add(w, name, t);
        nl_tensor_release(t);
    }
    nl_st_close(f);
    path = tmp_path("partial.safetensors");
    nl_st_writer_commit(w, path);
    nl_st_writer_free(w);
    expect_optim_unchanged("missing state", o, path, NL_EFORMAT, "missing tensor 'optim.2.bias.v'");
    nl_optim_release(sgd);
    nl_optim_release(o);
    nl_optim_release(ow);
    nl_module_release(net);
    nl_module_release(wide);
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
    closedir(d);
    rmdir(dir);
}

/* An architecture bigger than what its file could fill is refused before it is allocated: a
 * short JSON declaring a 64 MB Linear under a 1 MiB budget, then a small one within it. */
static void test_arch_budget(void)
{
    const char *huge = "{\"type\": \"Linear\", \"args\": {\"in\": 4000, \"out\": 4000}}";
    uint64_t before = nl_mem_allocated();
    nl_module *m = nl_checkpoint_arch_build(huge, "huge.safetensors", 1 << 20);
    CHECK(!m && nl_errcode() == NL_EFORMAT, "a 64 MB layer under a 1 MiB budget is refused");
    CHECK(strstr(nl_errmsg(), "huge.safetensors") && strstr(nl_errmsg(), "bigger than its file"),
          "the message names the file and why: %s", nl_errmsg());
    CHECK(nl_mem_allocated() - before < (1 << 20), "nothing big was allocated");
    nl_module_release(m);
    const char *small = "{\"type\": \"Linear\", \"args\": {\"in\": 10, \"out\": 10}}";
    m = nl_checkpoint_arch_build(small, "small", 1 << 20);
    CHECK(m != NULL, "a layer within the budget builds: %s", m ? "" : nl_errmsg());
    nl_module_release(m);
    nl_tensor *t = nl_tensor_zeros(NL_F32, 1, (const int64_t[]){1 << 20}, NL_CPU);
    CHECK(t != NULL, "the budget ends with the build: %s", t ? "" : nl_errmsg());
    nl_tensor_release(t);
    /* A real network whose parameters (and so their gradients) are bigger than the 1 MiB spare
     * loads: the budget counts the gradients that building allocates too. */
    nl_module *big = nl_module_new(nl_module_type_find("Linear"), (const double[]){1024, 1024, 1});
    const char *path = tmp_path("big.safetensors");
    CHECK(big && nl_checkpoint_save_module(path, big, NULL) == NL_OK, "save a 4 MiB layer: %s", nl_errmsg());
    nl_module *back = nl_checkpoint_load_module(path);
    CHECK(back != NULL, "a 4 MiB layer loads from its file: %s", back ? "" : nl_errmsg());
    nl_module_release(back);
    nl_module_release(big);
}

int main(int argc, char **argv)
{
    nl_init();
    snprintf(dir, sizeof dir, "/tmp/nnlab_ckpt_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_corrupt();
    test_roundtrip();
    test_atomic();
    test_module(argc > 1 ? argv[1] : NULL);
    test_bad_modules();
    test_arch_budget();
    nl_optim_config c = nl_optim_default_config(NL_OPTIM_SGD);
    c.lr = 0.1;
    c.momentum = 0.9;
    c.nesterov = true;
    c.weight_decay = 1e-3;
    test_resume(NL_OPTIM_SGD, c);
    c = nl_optim_default_config(NL_OPTIM_ADAM);
    c.lr = 0.02;
    test_resume(NL_OPTIM_ADAM, c);
    c = nl_optim_default_config(NL_OPTIM_ADAMW);
    c.beta1 = 0.8;
    test_resume(NL_OPTIM_ADAMW, c);
    test_bad_optim();
    remove_dir();
    return TEST_REPORT();
}
