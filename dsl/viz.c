/* viz.c: the Lua module `viz`: the Canvas userdata, the window (show, close, keys, screenshots,
 * waiting) and the C halves of the panels, which copy Lua tables and tensors into the host
 * arrays viz/panels.h draws. dsl/viz.lua gathers the data and keeps dashboards live. */
#include "dist.h"
#include "dsl.h"
#include "ltensor.h"
#include "panels.h"
#include "window.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CANVAS_MT "Canvas"
#define REFRESH_KEY "nnlab.viz.refresh" /* viz.lua's P.refresh in the registry */
#define MAX_RUNS 16
#define MAX_LAYERS 64

/* dsl/viz.lua, embedded by the Makefile. */
extern const char nl_lua_viz[];
extern const size_t nl_lua_viz_len;

/* ---------------------------------------------------------------- canvases -------------- */

/* A Canvas in Lua: one canvas reference and the name of the view it shows as in the window. */
typedef struct {
    nl_canvas *c;
    char view[24];
} canvas_box;

static canvas_box *check_canvas(lua_State *L, int idx)
{
    canvas_box *b = luaL_checkudata(L, idx, CANVAS_MT);
    if (!b->c) luaL_argerror(L, idx, "canvas is closed");
    return b;
}

/* Pushes a new Canvas box holding c (the box takes the reference; NULL raises the core's error
 * after the box exists, so nothing leaks). */
static canvas_box *push_canvas(lua_State *L, const char *view, nl_canvas *c)
{
    canvas_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->c = c;
    snprintf(b->view, sizeof b->view, "%s", view);
    luaL_setmetatable(L, CANVAS_MT);
    if (!c) nl_dsl_core_error(L);
    return b;
}

/* A size argument (1..16384) named what in messages, or def when absent (0: required). */
static int opt_size(lua_State *L, int arg, int def, const char *what)
{
    if (lua_isnoneornil(L, arg) && def > 0) return def;
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok || lua_type(L, arg) != LUA_TNUMBER || v < 1 || v > 16384)
        nl_dsl_error(L, "%s must be a whole number of pixels from 1 to 16384, got %s", what,
                     luaL_tolstring(L, arg, NULL));
    return (int)v;
}

/* P.canvas(view, [w, h]) -> Canvas: a white canvas, by default the window's size. */
static int p_canvas(lua_State *L)
{
    const char *view = luaL_checkstring(L, 1);
    int w, h;
    nl_window_size(&w, &h);
    w = opt_size(L, 2, w, "width");
    h = opt_size(L, 3, h, "height");
    push_canvas(L, view, nl_canvas_new(w, h, NL_WHITE));
    return 1;
}

/* Under several ranks only rank 1 draws and writes pictures (the others would write the same). */
static bool drawing_rank(void) { return nl_dist_rank() == 0; }

static int c_save(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    const char *path = nl_dsl_checkpath(L, 2);
    if (drawing_rank() && nl_canvas_save_png(b->c, path) != NL_OK) return nl_dsl_core_error(L);
    lua_settop(L, 1);
    return 1;
}

static int c_size(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    lua_pushinteger(L, b->c->w);
    lua_pushinteger(L, b->c->h);
    return 2;
}

static int c_pixel(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    lua_Integer x = luaL_checkinteger(L, 2), y = luaL_checkinteger(L, 3);
    if (x < 1 || y < 1 || x > b->c->w || y > b->c->h)
        return nl_dsl_error(L, "pixel: (%d, %d) is outside the %d x %d canvas (1-based)", (int)x, (int)y,
                          b->c->w, b->c->h);
    uint32_t p = nl_canvas_get(b->c, (int)x - 1, (int)y - 1);
    lua_pushinteger(L, NL_RED(p));
    lua_pushinteger(L, NL_GREEN(p));
    lua_pushinteger(L, NL_BLUE(p));
    return 3;
}

/* P.publish(canvas [, current=true]): makes the canvas its view (the current one unless
 * current is false: a live refresh must not switch what the window shows). */
static int p_publish(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_view_set(b->view, b->c, lua_isnone(L, 2) || lua_toboolean(L, 2));
    return 0;
}

static int c_tostring(lua_State *L)
{
    canvas_box *b = luaL_checkudata(L, 1, CANVAS_MT);
    if (b->c) lua_pushfstring(L, "Canvas(%s, %d x %d)", b->view, b->c->w, b->c->h);
    else lua_pushliteral(L, "Canvas(closed)");
    return 1;
}

static int c_gc(lua_State *L)
{
    canvas_box *b = luaL_checkudata(L, 1, CANVAS_MT);
    nl_canvas_release(b->c);
    b->c = NULL;
    return 0;
}

/* ---------------------------------------------------------------- reading Lua data ------ */

/* A host, contiguous f32 version of the tensor at idx, kept alive by a box left on the stack. */
static nl_tensor *host_f32(lua_State *L, int idx)
{
    nl_tensor *t = nl_lua_checktensor(L, idx);
    nl_tensor **box = nl_lua_newbox(L);
    nl_tensor *h = nl_tensor_host(t);
    if (h && h->dtype != NL_F32) {
        nl_tensor *f = nl_tensor_to_dtype(h, NL_F32);
        nl_tensor_release(h);
        h = f;
    }
    if (!(*box = h)) nl_dsl_core_error(L);
    return h;
}

/* The numbers of the array field `key` of the table at idx (NaN for anything else) in a scratch
 * block left on the stack (with the field); *n is 0 when the field is not a table. */
static double *numbers(lua_State *L, int idx, const char *key, int64_t *n)
{
    luaL_checkstack(L, 4, "viz: too many series");
    int t = lua_getfield(L, idx, key) == LUA_TTABLE ? lua_gettop(L) : 0;
    *n = t ? (int64_t)lua_rawlen(L, t) : 0;
    double *v = lua_newuserdatauv(L, (size_t)(*n > 0 ? *n : 1) * sizeof *v, 0);
    for (int64_t i = 0; i < *n; i++) {
        lua_rawgeti(L, t, i + 1);
        int ok;
        double x = lua_tonumberx(L, -1, &ok);
        v[i] = ok ? x : NAN;
        lua_pop(L, 1);
    }
    return v;
}

/* Reads the list of runs at idx, each {label=, loss=, train_acc=, test_acc=}, into runs; the
 * arrays stay on the stack. Returns the count. */
static int read_runs(lua_State *L, int idx, nl_viz_run *runs)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n > MAX_RUNS) nl_dsl_error(L, "viz.curves: at most %d runs at once, got %d", MAX_RUNS, n);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int r = lua_gettop(L);
        luaL_checktype(L, r, LUA_TTABLE);
        lua_getfield(L, r, "label");
        runs[i].label = lua_tostring(L, -1); /* stays on the stack */
        runs[i].loss = numbers(L, r, "loss", &runs[i].nloss);
        runs[i].train_acc = numbers(L, r, "train_acc", &runs[i].ntrain);
        runs[i].test_acc = numbers(L, r, "test_acc", &runs[i].ntest);
    }
    return n;
}

/* An image tensor at idx ([C, H, W], [1, C, H, W] or [H, W]) as a host image: 1 or 3 planes (of
 * another channel count, the first plane). */
static nl_image read_image(lua_State *L, int idx)
{
    nl_tensor *t = host_f32(L, idx);
    int d = t->ndim;
    if (d < 2 || d > 4 || (d == 4 && t->shape[0] != 1)) {
        char s[96];
        nl_dsl_error(L, "viz: an image must be [C, H, W] or [H, W], got %s",
                   nl_shape_str(s, sizeof s, t->ndim, t->shape));
    }
    int c = d == 2 ? 1 : (int)t->shape[d - 3];
    return (nl_image){c == 3 ? 3 : 1, (int)t->shape[d - 2], (int)t->shape[d - 1], nl_tensor_f32(t)};
}

/* A layer's output at idx, batch first ([N, C, H, W], [N, C, L] or [N, F]), as the maps of its
 * first sample: C maps of H x W, C maps of 1 x L, or one map of 1 x F. */
static nl_image read_maps(lua_State *L, int idx)
{
    nl_tensor *t = host_f32(L, idx);
    if (t->ndim < 2 || t->ndim > 4 || t->shape[0] < 1) {
        char s[96];
        nl_dsl_error(L, "viz.features: a layer output must be [N, C, H, W], [N, C, L] or [N, F], got %s",
                   nl_shape_str(s, sizeof s, t->ndim, t->shape));
    }
    int64_t c = t->ndim == 2 ? 1 : t->shape[1];
    int64_t h = t->ndim == 4 ? t->shape[2] : 1, w = t->shape[t->ndim - 1];
    return (nl_image){(int)c, (int)h, (int)w, nl_tensor_f32(t)};
}

/* Reads the list at idx of {name=, value=Tensor [, qmin=, qmax=]} into layers (qmin..qmax: the
 * values are integer levels, one bar each); returns the count. */
static int read_layers(lua_State *L, int idx, nl_viz_values *layers)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n > MAX_LAYERS) n = MAX_LAYERS;
    luaL_checkstack(L, 3 * n + 8, "viz.histogram: too many layers");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int e = lua_gettop(L);
        luaL_checktype(L, e, LUA_TTABLE);
        lua_getfield(L, e, "name");
        layers[i].name = lua_tostring(L, -1);
        lua_getfield(L, e, "value");
        nl_tensor *t = host_f32(L, lua_gettop(L));
        layers[i].v = nl_tensor_f32(t);
        layers[i].n = nl_tensor_numel(t);
        lua_getfield(L, e, "qmin");
        lua_getfield(L, e, "qmax");
        layers[i].qmin = (int)luaL_optinteger(L, -2, 0);
        layers[i].qmax = (int)luaL_optinteger(L, -1, 0);
        lua_pop(L, 2);
    }
    return n;
}

/* The class names in the list at idx (none when it is not a table); strings stay in the list. */
static const char **read_names(lua_State *L, int idx, int *n)
{
    *n = lua_istable(L, idx) ? (int)lua_rawlen(L, idx) : 0;
    const char **names = lua_newuserdatauv(L, (size_t)(*n > 0 ? *n : 1) * sizeof *names, 0);
    for (int i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        names[i] = lua_tostring(L, -1); /* NULL for a non-string: shown as a number */
        lua_pop(L, 1);                  /* the string stays alive in the list */
    }
    return names;
}

static int check_draw(lua_State *L, nl_status s)
{
    return s == NL_OK ? 0 : nl_dsl_core_error(L);
}

static nl_rect whole(const nl_canvas *c)
{
    return (nl_rect){0, 0, c->w, c->h};
}

/* ---------------------------------------------------------------- panels ---------------- */

/* P.curves(canvas, runs) */
static int p_curves(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_viz_run runs[MAX_RUNS];
    int n = read_runs(L, 2, runs);
    return check_draw(L, nl_viz_curves(b->c, whole(b->c), runs, n));
}

/* P.sensitivity(canvas, amounts, layers {{label=, test_acc=}}, baseline) */
static int p_sensitivity(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    int64_t na;
    lua_newtable(L);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "amounts");
    const double *amounts = numbers(L, lua_gettop(L), "amounts", &na);
    nl_viz_run runs[MAX_RUNS];
    int n = read_runs(L, 3, runs);
    return check_draw(L, nl_viz_sensitivity(b->c, whole(b->c), amounts, (int)na, runs, n,
                                            luaL_optnumber(L, 4, NAN)));
}

/* Reads the list of series at idx, each {x=, y=, label=} (x may be absent), into s; the arrays
 * stay on the stack. Returns the count. */
static int read_points(lua_State *L, int idx, nl_viz_points *s)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n > MAX_RUNS) nl_dsl_error(L, "viz: at most %d series at once, got %d", MAX_RUNS, n);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int r = lua_gettop(L);
        luaL_checktype(L, r, LUA_TTABLE);
        lua_getfield(L, r, "label");
        s[i].label = lua_tostring(L, -1); /* stays on the stack */
        int64_t nx;
        bool has_x = lua_getfield(L, r, "x") == LUA_TTABLE;
        lua_pop(L, 1);
        s[i].x = has_x ? numbers(L, r, "x", &nx) : NULL;
        s[i].y = numbers(L, r, "y", &s[i].n);
        if (has_x && nx != s[i].n) nl_dsl_error(L, "viz: %d x values and %d y values", (int)nx, (int)s[i].n);
    }
    return n;
}

/* P.xy(canvas, {{x=, y=, label=}, ...}, scatter, title, xlabel, ylabel): viz.plot and viz.scatter */
static int p_xy(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_viz_points s[MAX_RUNS];
    int n = read_points(L, 2, s);
    return check_draw(L, nl_viz_xy(b->c, whole(b->c), s, n, lua_toboolean(L, 3), luaL_optstring(L, 4, NULL),
                                   luaL_optstring(L, 5, NULL), luaL_optstring(L, 6, NULL)));
}

/* P.decision(canvas, classes Tensor i32 [res, res] (0-based, row j = y), {x0, x1, y0, y1},
 * series, title) */
static int p_decision(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_tensor *k = nl_lua_checktensor(L, 2);
    luaL_argcheck(L, k->dtype == NL_I32 && k->ndim == 2 && k->shape[0] == k->shape[1] &&
                     nl_tensor_device(k) == NL_CPU && nl_tensor_is_contiguous(k), 2,
                     "a square i32 class map on the CPU");
    double v[4];
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, 3, i + 1);
        v[i] = luaL_checknumber(L, -1);
        lua_pop(L, 1);
    }
    nl_viz_points s[MAX_RUNS];
    int n = read_points(L, 4, s);
    return check_draw(L, nl_viz_decision(b->c, whole(b->c), nl_tensor_data(k), (int)k->shape[0], v[0],
                                         v[1], v[2], v[3], s, n, luaL_optstring(L, 5, NULL)));
}

/* P.image(canvas, Tensor, grey, title) */
static int p_image(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_image img = read_image(L, 2);
    return check_draw(L, nl_viz_image(b->c, whole(b->c), img, lua_toboolean(L, 3), luaL_optstring(L, 4, NULL)));
}

/* P.features(canvas, input Tensor or nil, output Tensor, title) */
static int p_features(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_image in = {0, 0, 0, NULL}, maps = read_maps(L, 3);
    if (!lua_isnil(L, 2)) in = read_image(L, 2);
    return check_draw(L, nl_viz_features(b->c, whole(b->c), lua_isnil(L, 2) ? NULL : &in, maps,
                                         luaL_optstring(L, 4, NULL)));
}

/* P.filters(canvas, weight Tensor [O, C, KH, KW], title) */
static int p_filters(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_tensor *w = host_f32(L, 2);
    if (w->ndim != 4) {
        char s[96];
        return nl_dsl_error(L, "viz.filters: expected convolution weights [out, in, kh, kw], got %s",
                          nl_shape_str(s, sizeof s, w->ndim, w->shape));
    }
    return check_draw(L, nl_viz_filters(b->c, whole(b->c), nl_tensor_f32(w), (int)w->shape[0],
                                        (int)w->shape[1], (int)w->shape[2], (int)w->shape[3],
                                        luaL_optstring(L, 3, NULL)));
}

/* P.histogram(canvas, {{name=, value= [, qmin=, qmax=]}, ...}) */
static int p_histogram(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_viz_values layers[MAX_LAYERS];
    int n = read_layers(L, 2, layers);
    return check_draw(L, nl_viz_histogram(b->c, whole(b->c), layers, n));
}

/* P.confusion(canvas, counts Tensor [K, K], names or nil) */
static int p_confusion(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_tensor *t = host_f32(L, 2);
    if (t->ndim != 2 || t->shape[0] != t->shape[1]) {
        char s[96];
        return nl_dsl_error(L, "viz.confusion: expected a square matrix of counts, got %s",
                          nl_shape_str(s, sizeof s, t->ndim, t->shape));
    }
    int k = (int)t->shape[0], nn;
    const char **names = read_names(L, 3, &nn);
    int64_t *counts = lua_newuserdatauv(L, (size_t)(k > 0 ? k * k : 1) * sizeof *counts, 0);
    const float *v = nl_tensor_f32(t);
    for (int64_t i = 0; i < (int64_t)k * k; i++) counts[i] = isfinite(v[i]) && v[i] > 0 ? llround(v[i]) : 0;
    return check_draw(L, nl_viz_confusion(b->c, whole(b->c), counts, k, nn >= k ? names : NULL, NULL));
}

/* P.profile(canvas, rows, title): rows as nn.profile's ({layer=, fwd_ms=, bwd_ms=, flops=,
 * pct_peak=}...). */
static int p_profile(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *text = luaL_checkstring(L, 3);
    const int n = (int)luaL_len(L, 2);
    nl_viz_profile_row *rows = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *rows, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 2, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "layer");
        lua_getfield(L, -2, "fwd_ms");
        lua_getfield(L, -3, "bwd_ms");
        lua_getfield(L, -4, "flops");
        lua_getfield(L, -5, "pct_peak");
        rows[i] = (nl_viz_profile_row){.layer = luaL_checkstring(L, -5), .fwd_ms = luaL_checknumber(L, -4),
                                       .bwd_ms = luaL_checknumber(L, -3),
                                       .pct_peak = luaL_checknumber(L, -2) > 0 ? luaL_checknumber(L, -1) : -1};
        lua_pop(L, 5); /* the layer's string stays alive in its row table, held by argument 2 */
        lua_pop(L, 1);
    }
    return check_draw(L, nl_viz_profile(b->c, whole(b->c), rows, n, text));
}

/* The three largest probabilities of softmax(logits[0..k)) into s. */
static void top3(const float *logits, int k, nl_viz_sample *s)
{
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < k; j++) m = fmax(m, logits[j]);
    for (int j = 0; j < k; j++) sum += exp(logits[j] - m);
    s->ntop = k < 3 ? k : 3;
    for (int r = 0; r < s->ntop; r++) {
        int best = -1;
        for (int j = 0; j < k; j++) {
            bool taken = false;
            for (int q = 0; q < r; q++) taken |= s->top[q] == j;
            if (!taken && (best < 0 || logits[j] > logits[best])) best = j;
        }
        s->top[r] = best;
        s->prob[r] = exp(logits[best] - m) / sum;
    }
    s->pred = k > 0 ? s->top[0] : 0;
}

/* P.samples(canvas, images Tensor [N, C, H, W], labels {1-based or nil, ...}, logits [N, K],
 * names or nil) */
static int p_samples(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_tensor *x = host_f32(L, 2), *z = host_f32(L, 4);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (x->ndim != 4 || z->ndim != 2 || z->shape[0] != x->shape[0]) {
        char s1[96], s2[96];
        return nl_dsl_error(L, "viz.samples: images %s and outputs %s: expected [N, C, H, W] and [N, classes]",
                          nl_shape_str(s1, sizeof s1, x->ndim, x->shape),
                          nl_shape_str(s2, sizeof s2, z->ndim, z->shape));
    }
    int n = (int)x->shape[0], k = (int)z->shape[1], nn;
    const char **names = read_names(L, 5, &nn);
    nl_viz_sample *s = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *s, 0);
    int64_t plane = x->shape[1] * x->shape[2] * x->shape[3];
    for (int i = 0; i < n; i++) {
        s[i].image = (nl_image){x->shape[1] == 3 ? 3 : 1, (int)x->shape[2], (int)x->shape[3],
                                nl_tensor_f32(x) + i * plane};
        lua_rawgeti(L, 3, i + 1);
        int ok;
        double label = lua_tonumberx(L, -1, &ok);
        s[i].truth = ok && label >= 1 && label <= k && label == floor(label) ? (int)label - 1 : -1;
        lua_pop(L, 1);
        top3(nl_tensor_f32(z) + (int64_t)i * k, k, &s[i]);
    }
    return check_draw(L, nl_viz_samples(b->c, whole(b->c), s, n, names, nn));
}

/* P.dashboard(canvas, runs, input or nil, output or nil, maps title, layers, status, extra series
 * {{y=, label=}...} or nil) */
static int p_dashboard(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_viz_run runs[MAX_RUNS];
    nl_viz_values layers[MAX_LAYERS];
    nl_viz_points extra[MAX_RUNS];
    nl_image in = {0, 0, 0, NULL}, maps = {0, 0, 0, NULL};
    if (!lua_isnil(L, 3)) in = read_image(L, 3);
    if (!lua_isnil(L, 4)) maps = read_maps(L, 4);
    nl_viz_board d = {runs, read_runs(L, 2, runs), in.data ? &in : NULL, maps, luaL_optstring(L, 5, NULL),
                      layers, read_layers(L, 6, layers), luaL_optstring(L, 7, NULL), extra,
                      lua_isnoneornil(L, 8) ? 0 : read_points(L, 8, extra)};
    return check_draw(L, nl_viz_dashboard(b->c, whole(b->c), &d));
}

/* P.compare(canvas, runs, final series {{x=, y=}...} (one point per run), title, xlabel, ylabel) */
static int p_compare(lua_State *L)
{
    canvas_box *b = check_canvas(L, 1);
    nl_viz_run runs[MAX_RUNS];
    nl_viz_points final[MAX_RUNS];
    int n = read_runs(L, 2, runs);
    if (read_points(L, 3, final) != n) return nl_dsl_error(L, "viz.compare: one final point per run expected");
    return check_draw(L, nl_viz_compare(b->c, whole(b->c), runs, n, final, luaL_optstring(L, 4, NULL),
                                        luaL_optstring(L, 5, NULL), luaL_optstring(L, 6, NULL)));
}

/* P.stack({Tensor, ...}) -> Tensor [n, ...] (f32): the samples of a batch. */
static int p_stack(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 1);
    luaL_argcheck(L, n > 0, 1, "no tensors to stack");
    lua_rawgeti(L, 1, 1);
    nl_tensor *first = nl_lua_checktensor(L, -1);
    int64_t shape[NL_MAX_DIMS] = {n};
    if (first->ndim + 1 > NL_MAX_DIMS) return nl_dsl_error(L, "viz: too many dimensions to stack");
    memcpy(shape + 1, first->shape, (size_t)first->ndim * sizeof *shape);
    int ndim = first->ndim + 1;
    nl_tensor **box = nl_lua_newbox(L);
    if (!(*box = nl_tensor_empty(NL_F32, ndim, shape, NL_CPU))) return nl_dsl_core_error(L);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        nl_tensor *t = nl_lua_checktensor(L, -1);
        if (t->ndim != first->ndim || memcmp(t->shape, first->shape, (size_t)t->ndim * sizeof *shape))
            return nl_dsl_error(L, "viz: sample %d has another shape than sample 1", i + 1);
        nl_tensor *row = nl_tensor_slice(*box, 0, i, i + 1);
        nl_tensor *view = row ? nl_tensor_reshape(row, t->ndim, t->shape) : NULL;
        nl_status s = view ? nl_copy(view, t) : nl_errcode();
        nl_tensor_release(view);
        nl_tensor_release(row);
        if (s != NL_OK) return nl_dsl_core_error(L);
        lua_pop(L, 1);
    }
    return 1;
}

/* ---------------------------------------------------------------- the window ------------ */

/* P.current() -> the current view's name or nil */
static int p_current(lua_State *L)
{
    const char *name;
    nl_view_current(&name);
    lua_pushstring(L, name);
    return 1;
}

/* P.save_view(path, name) */
static int p_save_view(lua_State *L)
{
    const char *path = nl_dsl_checkpath(L, 1), *name = luaL_checkstring(L, 2);
    nl_canvas *c = nl_view_get(name);
    if (!c) return nl_dsl_error(L, "viz.save: no view named '%s' (drawn so far: see viz.status().views)", name);
    if (nl_canvas_save_png(c, path) != NL_OK) return nl_dsl_core_error(L);
    return 0;
}

/* P.tick() -> seconds waited: pumps the window when 30 ms have passed; waits while paused,
 * saying so in the terminal (through print), where the user may be waiting for the training to
 * go on. */
static int p_tick(lua_State *L)
{
    nl_window_tick();
    lua_pushnumber(L, 0);
    if (!nl_window_paused()) return 1;
    if (isatty(STDOUT_FILENO)) fputs("\r\33[K", stdout); /* off the progress line */
    lua_getglobal(L, "print");
    lua_pushliteral(L, "training is paused in the window: space there resumes it (or Ctrl-C here "
                       "pauses the trainer; its resume() then continues at once)");
    lua_call(L, 1, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nl_window_wait_paused();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    lua_pushnumber(L, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 1;
}

/* The Lua state the REPL's idle hook refreshes the live views of (the one that opened the
 * window). */
static lua_State *idle_L;

/* Redraws the live views that are out of date when the window is open (viz.lua's P.refresh,
 * protected: an error there never reaches the caller). */
static void refresh_live(lua_State *L)
{
    if (!L || !nl_window_is_open()) return;
    lua_getfield(L, LUA_REGISTRYINDEX, REFRESH_KEY);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* The REPL's idle hook: window events, then live views that training left behind (the last
 * epoch's test accuracy, a resize). */
static void idle(void)
{
    nl_window_pump();
    refresh_live(idle_L);
}

static int l_show(lua_State *L)
{
    if (!drawing_rank()) { /* data-parallel: rank 1 draws for everyone */
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "only rank 1 of %d opens a window", nl_dist_size());
        return 2;
    }
    if (!lua_isnoneornil(L, 1)) {
        canvas_box *b = check_canvas(L, 1);
        nl_view_set(b->view, b->c, true);
    }
    if (nl_window_open() != NL_OK) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, nl_errmsg());
        return 2;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* not a coroutine that may end */
    idle_L = lua_tothread(L, -1);
    lua_pop(L, 1);
    nl_set_idle_hook(idle);
    refresh_live(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_close(lua_State *L NL_UNUSED)
{
    nl_window_close();
    return 0;
}

static int l_press(lua_State *L)
{
    char saved[128] = "";
    if (nl_window_key(luaL_checkstring(L, 1), saved, sizeof saved) != NL_OK) return nl_dsl_core_error(L);
    if (!saved[0]) return 0;
    lua_pushstring(L, saved);
    return 1;
}

static int l_status(lua_State *L)
{
    const char *names[16], *current;
    int n = nl_view_names(names, 16), w, h;
    nl_view_current(&current);
    nl_window_size(&w, &h);
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, nl_window_is_open());
    lua_setfield(L, -2, "open");
    lua_pushboolean(L, nl_window_paused());
    lua_setfield(L, -2, "paused");
    lua_pushstring(L, nl_window_note());
    lua_setfield(L, -2, "note");
    lua_pushstring(L, current);
    lua_setfield(L, -2, "view");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n && i < 16; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "views");
    lua_pushinteger(L, w);
    lua_setfield(L, -2, "width");
    lua_pushinteger(L, h);
    lua_setfield(L, -2, "height");
    return 1;
}

static int l_screenshot(lua_State *L)
{
    if (!nl_window_is_open()) {
        lua_pushnil(L);
        lua_pushliteral(L, "the window is closed (viz.show() opens it)");
        return 2;
    }
    push_canvas(L, "screenshot", nl_window_screenshot());
    return 1;
}

static int l_resize(lua_State *L)
{
    nl_window_resize(opt_size(L, 1, 0, "w"), opt_size(L, 2, 0, "h"));
    return 0;
}

static int l_wait(lua_State *L)
{
    double seconds = luaL_optnumber(L, 1, HUGE_VAL);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        nl_window_pump();
        refresh_live(L);
        clock_gettime(CLOCK_MONOTONIC, &t);
        double elapsed = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
        if (!nl_window_is_open() || nl_interrupted() || elapsed >= seconds) break;
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    }
    return 0;
}

/* ---------------------------------------------------------------- registration ---------- */

static const nl_dsl_fn viz_fns[] = {
    {"show", l_show, "viz.show([canvas]) -> true | false, reason",
     "Opens the window (or raises it) showing canvas or the last panel drawn; it stays responsive "
     "while the REPL waits and while trainers given to viz.dashboard, viz.curves or viz.watch train. "
     "Keys: space pauses training, tab shows the next view, s saves a screenshot into runs/, q "
     "closes. Without a display returns false and why; panels still draw and save.",
     "print(viz.show())"},
    {"close", l_close, "viz.close()", "Closes the window (training goes on; viz.show() reopens it).",
     "viz.close()"},
    {"press", l_press, "viz.press(key) -> saved path or nothing",
     "Does what a key does in the window: \"space\", \"tab\", \"s\" (returns the file written), \"q\".",
     "viz.curves{loss = {2, 1}}; viz.press(\"tab\")"},
    {"status", l_status, "viz.status() -> {open=, paused=, view=, views=, width=, height=, note=}",
     "The window's state: open or not, paused, the current view, every view drawn, the drawing size, "
     "and what the last key did (the note in the window's title).",
     "print(viz.status().open)"},
    {"screenshot", l_screenshot, "viz.screenshot() -> Canvas | nil, reason",
     "What the window shows, read back from it (as a Canvas to save or inspect).",
     "print(viz.screenshot())"},
    {"resize", l_resize, "viz.resize(w, h)",
     "Sets the drawing size (and the window's size when open); later panels draw at that size.",
     "viz.resize(1200, 720)"},
    {"wait", l_wait, "viz.wait([seconds])",
     "Keeps the window responsive until it is closed (or seconds pass, or Ctrl-C): the end of a "
     "script that shows a result.",
     "viz.wait(0.01)"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const nl_dsl_fn canvas_methods[] = {
    {"save", c_save, "c:save(path) -> c", "Writes the canvas as a PNG file (atomically; folders are created); "
     "under several ranks rank 1 writes it, the others nothing.",
     "local p = os.tmpname(); viz.curves{loss = {2, 1}}:save(p); os.remove(p)"},
    {"size", c_size, "c:size() -> w, h", "The canvas's size in pixels.", "print(viz.curves{loss = {2, 1}}:size())"},
    {"pixel", c_pixel, "c:pixel(x, y) -> r, g, b", "The colour at (x, y), 1-based from the top left.",
     "print(viz.curves{loss = {2, 1}}:pixel(1, 1))"},
    {"show", l_show, "c:show() -> true | false, reason", "Shows the canvas in the window (as viz.show(c)).",
     "print(viz.curves{loss = {2, 1}}:show())"},
    {NULL, NULL, NULL, NULL, NULL},
};

/* P.drawing() -> whether this process draws (rank 1, or the only one). */
static int p_drawing(lua_State *L)
{
    lua_pushboolean(L, drawing_rank());
    return 1;
}

static const luaL_Reg private_fns[] = {
    {"canvas", p_canvas}, {"publish", p_publish}, {"curves", p_curves}, {"xy", p_xy},
    {"decision", p_decision}, {"image", p_image}, {"features", p_features},
    {"sensitivity", p_sensitivity},
    {"filters", p_filters}, {"histogram", p_histogram}, {"confusion", p_confusion},
    {"samples", p_samples}, {"profile", p_profile}, {"dashboard", p_dashboard}, {"compare", p_compare}, {"stack", p_stack}, {"current", p_current},
    {"save_view", p_save_view}, {"tick", p_tick}, {"drawing", p_drawing}, {NULL, NULL},
};

int nl_open_viz(lua_State *L)
{
    luaL_newmetatable(L, CANVAS_MT);
    static const luaL_Reg meta[] = {{"__tostring", c_tostring}, {"__gc", c_gc}, {"__close", c_gc}, {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    for (const nl_dsl_fn *f = canvas_methods; f->name; f++) {
        lua_pushcfunction(L, f->fn);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "__index");
    nl_dsl_register_methods(L, CANVAS_MT, canvas_methods);
    nl_dsl_register(L, "viz", viz_fns);

    /* dsl/viz.lua: the panels and live dashboards; returns help rows {name, sig, doc, example}
     * for the functions it placed in viz. */
    if (luaL_loadbuffer(L, nl_lua_viz, nl_lua_viz_len, "=dsl/viz.lua") != LUA_OK) return lua_error(L);
    luaL_newlib(L, private_fns);
    lua_pushvalue(L, -1);
    lua_insert(L, -3);    /* P kept below the chunk */
    lua_pushvalue(L, -4); /* the Canvas metatable */
    lua_call(L, 2, 1);
    lua_getfield(L, -2, "refresh");
    lua_setfield(L, LUA_REGISTRYINDEX, REFRESH_KEY);
    nl_dsl_register_rows(L, -1, "viz");
    lua_pop(L, 3);
    return 0;
}
