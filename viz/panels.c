/* panels.c: the visualization panels (curves, feature maps, filters, weight histograms,
 * confusion matrix, classified samples, dashboard) drawn from host data onto a canvas. */
#include "panels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TITLE_H 24
#define GAP 4

/* Starts a panel: checks the font, fills r white and clips drawing to r (the previous clip goes
 * to *saved for end()). */
static nl_status begin(nl_canvas *c, nl_rect r, nl_rect *saved)
{
    int w, h;
    nl_status s = nl_text_size(NL_TEXT_TICK, "0", &w, &h);
    if (s != NL_OK) return s;
    *saved = c->clip;
    nl_canvas_clip(c, r);
    nl_canvas_fill_rect(c, r, NL_WHITE);
    return NL_OK;
}

static nl_status end(nl_canvas *c, nl_rect saved)
{
    c->clip = saved;
    return NL_OK;
}

static void title(nl_canvas *c, nl_rect r, const char *text)
{
    if (text) nl_canvas_text(c, r.x + r.w / 2, r.y + 4, NL_TEXT_TITLE, NL_INK, NL_ALIGN_CENTER, text);
}

/* A grid for n tiles in area: each tile is an image of aspect (width / height) with extra_h
 * pixels of text under it, GAP apart. Picks the column count giving the largest images; the
 * image size goes to *tw x *th (at least 1 x 1). Returns the column count. */
static int grid_fit(nl_rect area, int n, double aspect, int extra_h, int *tw, int *th)
{
    int best_cols = 1;
    double best = -1;
    for (int cols = 1; cols <= n; cols++) {
        int rows = (n + cols - 1) / cols;
        double cw = (double)(area.w - (cols - 1) * GAP) / cols;
        double ch = (double)(area.h - (rows - 1) * GAP) / rows - extra_h;
        double h = fmin(ch, cw / aspect);
        if (h > best) {
            best = h;
            best_cols = cols;
        }
    }
    *th = best >= 1 ? (int)best : 1;
    *tw = (int)(*th * aspect) >= 1 ? (int)(*th * aspect) : 1;
    return best_cols;
}

/* The rectangle of tile i in a grid of cols columns of tw x (th + extra_h) tiles, centred in
 * area. */
static nl_rect grid_tile(nl_rect area, int n, int cols, int tw, int th, int extra_h, int i)
{
    int rows = (n + cols - 1) / cols;
    int gw = cols * tw + (cols - 1) * GAP, gh = rows * (th + extra_h) + (rows - 1) * GAP;
    int x0 = area.x + (area.w - gw) / 2, y0 = area.y + (area.h - gh) / 2;
    return (nl_rect){x0 + (i % cols) * (tw + GAP), y0 + (i / cols) * (th + extra_h + GAP), tw, th};
}

/* The area under a title. */
static nl_rect below_title(nl_rect r)
{
    return (nl_rect){r.x + GAP, r.y + TITLE_H, r.w - 2 * GAP, r.h - TITLE_H - GAP};
}

/* Draws an image scaled to its own finite range into t. */
static void blit_own_range(nl_canvas *c, nl_rect t, nl_image img, bool grey)
{
    float lo, hi;
    nl_minmax(img.data, (int64_t)img.c * img.h * img.w, &lo, &hi);
    nl_canvas_blit(c, t, img, lo, hi, grey);
}

/* ---------------------------------------------------------------- curves ---------------- */

void nl_smooth(const double *v, int64_t n, double *out)
{
    double m = n / 20 < 1 ? 1 : n / 20 > 100 ? 100 : (double)(n / 20);
    double beta = 1 - 1 / m, s = 0, w = 1;
    bool any = false;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(v[i])) {
            s = beta * s + (1 - beta) * v[i];
            w *= beta;
            any = true;
        }
        out[i] = any ? s / (1 - w) : NAN;
    }
}

/* The last finite value of v, or NaN. */
static double last_finite(const double *v, int64_t n)
{
    for (int64_t i = n - 1; i >= 0; i--)
        if (isfinite(v[i])) return v[i];
    return NAN;
}

/* The light tint of run i's colour, for its raw per-step loss. */
static uint32_t tint(int i)
{
    return nl_color_mix(nl_palette(i), NL_WHITE, 0.35);
}

static const char *run_label(const nl_viz_run *r, int i, char *buf, size_t n)
{
    if (r->label) return r->label;
    snprintf(buf, n, "run %d", i + 1);
    return buf;
}

/* The loss plot: raw values and smoothed lines of every run, with a legend. */
static nl_status plot_loss(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int64_t steps = 1;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        double a, b;
        if (runs[i].nloss > steps) steps = runs[i].nloss;
        if (nl_finite_range(runs[i].loss, runs[i].nloss, &a, &b)) {
            lo = fmin(lo, a);
            hi = fmax(hi, b);
        }
    }
    bool any = lo <= hi;
    double pad = any ? (hi - lo) * 0.05 : 0;
    nl_axes a = nl_axes_layout(r, 1, (double)steps, any ? lo - pad : 0, any ? hi + pad : 1);
    nl_axes_draw(c, &a, "training loss", "step", "loss", NL_AXES_INT_X);
    if (!any) nl_plot_note(c, a.plot, "no steps yet");
    double *smooth = malloc((size_t)steps * sizeof *smooth);
    if (!smooth) {
        end(c, saved);
        return nl_seterr(NL_ENOMEM, "viz.curves: out of memory for %lld steps", (long long)steps);
    }
    nl_legend_entry legend[16];
    char text[16][64];
    int nl = 0;
    for (int i = 0; i < n; i++) /* the raw values under every smoothed line */
        nl_plot_series(c, &a, &(nl_series){.y = runs[i].loss, .n = runs[i].nloss,
                                           .color = tint(i), .width = 1});
    for (int i = 0; i < n; i++) {
        uint32_t color = nl_palette(i);
        nl_smooth(runs[i].loss, runs[i].nloss, smooth);
        nl_plot_series(c, &a, &(nl_series){.y = smooth, .n = runs[i].nloss, .color = color, .width = 2});
        double last = last_finite(smooth, runs[i].nloss);
        char name[32];
        if (n == 1) legend[nl++] = (nl_legend_entry){"per step", tint(i), 1, 0};
        if (nl == 16) continue;
        if (n == 1) snprintf(text[nl], sizeof text[nl], "smoothed %.4g", last);
        else snprintf(text[nl], sizeof text[nl], "%s %.4g", run_label(&runs[i], i, name, sizeof name), last);
        legend[nl] = (nl_legend_entry){text[nl], color, 2, 0};
        nl++;
    }
    free(smooth);
    if (any) nl_plot_legend(c, &a, legend, nl, false);
    return end(c, saved);
}

/* The accuracy plot: train and test accuracy per epoch for each run. */
static nl_status plot_accuracy(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int64_t epochs = 1;
    bool any = false;
    for (int i = 0; i < n; i++) {
        epochs = runs[i].ntrain > epochs ? runs[i].ntrain : epochs;
        epochs = runs[i].ntest > epochs ? runs[i].ntest : epochs;
        any |= runs[i].ntrain > 0 || runs[i].ntest > 0;
    }
    double pad = 0.15 + 0.03 * (double)(epochs - 1); /* keeps the end markers whole */
    nl_axes a = nl_axes_layout(r, 1 - pad, (double)epochs + pad, 0, 1);
    nl_axes_draw(c, &a, "accuracy", "epoch", "accuracy", NL_AXES_INT_X | NL_AXES_PERCENT_Y);
    if (!any) nl_plot_note(c, a.plot, "no epochs yet");
    nl_legend_entry legend[16];
    char text[16][64];
    int nl = 0;
    for (int i = 0; i < n; i++) {
        /* Train and test in two colours (one run: blue test, orange train; several: the run's
         * colour for test, a lighter shade of it for train), not told apart by markers alone. */
        uint32_t color = nl_palette(i);
        uint32_t train_color = n == 1 ? nl_palette(1) : nl_color_mix(color, NL_WHITE, 0.5);
        nl_series train = {.y = runs[i].train_acc, .n = runs[i].ntrain, .color = train_color, .width = 2, .marker = 3};
        nl_series test = {.y = runs[i].test_acc, .n = runs[i].ntest, .color = color, .width = 2, .marker = -3};
        const nl_series *both[2] = {&train, &test};
        const char *kind[2] = {"train", "test"};
        for (int k = 0; k < 2; k++) {
            if (both[k]->n == 0) continue;
            nl_plot_series(c, &a, both[k]);
            if (nl == 16) continue;
            char name[32];
            snprintf(text[nl], sizeof text[nl], "%s%s%s %.1f%%", n > 1 ? run_label(&runs[i], i, name, sizeof name) : "",
                     n > 1 ? " " : "", kind[k], 100 * last_finite(both[k]->y, both[k]->n));
            legend[nl] = (nl_legend_entry){text[nl], both[k]->color, both[k]->width, both[k]->marker};
            nl++;
        }
    }
    nl_plot_legend(c, &a, legend, nl, true);
    return end(c, saved);
}

nl_status nl_viz_curves(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n)
{
    int lw = r.w * 58 / 100;
    nl_status s = plot_loss(c, (nl_rect){r.x, r.y, lw, r.h}, runs, n);
    return s != NL_OK ? s : plot_accuracy(c, (nl_rect){r.x + lw, r.y, r.w - lw, r.h}, runs, n);
}

/* ---------------------------------------------------------------- sensitivity ----------- */

nl_status nl_viz_sensitivity(nl_canvas *c, nl_rect r, const double *amounts, int namounts,
                             const nl_viz_run *layers, int n, double baseline)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    double *x = malloc((size_t)(namounts > 0 ? namounts : 1) * sizeof *x);
    if (!x) {
        end(c, saved);
        return nl_seterr(NL_ENOMEM, "viz.sensitivity: out of memory");
    }
    double lo = 0, hi = 100;
    for (int j = 0; j < namounts; j++) x[j] = 100 * amounts[j];
    if (namounts > 0) nl_finite_range(x, namounts, &lo, &hi);
    double pad = hi > lo ? (hi - lo) * 0.04 : 5;
    nl_axes a = nl_axes_layout(r, lo - pad, hi + pad, 0, 1);
    nl_axes_draw(c, &a, "pruning sensitivity: accuracy with one layer pruned",
                 "weights of the layer pruned (%)", "accuracy", NL_AXES_PERCENT_Y);
    if (n == 0 || namounts == 0) nl_plot_note(c, a.plot, "no layers or amounts");
    nl_legend_entry legend[17];
    char text[17][64];
    int nl = 0;
    if (isfinite(baseline)) {
        double bx[2] = {lo - pad, hi + pad}, by[2] = {baseline, baseline};
        nl_plot_series(c, &a, &(nl_series){.x = bx, .y = by, .n = 2, .color = NL_RGB(150, 150, 150), .width = 1});
        snprintf(text[nl], sizeof text[nl], "unpruned %.1f%%", 100 * baseline);
        legend[nl] = (nl_legend_entry){text[nl], NL_RGB(150, 150, 150), 1, 0};
        nl++;
    }
    for (int i = 0; i < n; i++) {
        int64_t m = layers[i].ntest < namounts ? layers[i].ntest : namounts;
        uint32_t color = nl_palette(i);
        nl_plot_series(c, &a, &(nl_series){.x = x, .y = layers[i].test_acc, .n = m, .color = color,
                                           .width = 2, .marker = 3});
        if (nl == 17) continue;
        char name[32];
        snprintf(text[nl], sizeof text[nl], "%s", run_label(&layers[i], i, name, sizeof name));
        legend[nl] = (nl_legend_entry){text[nl], color, 2, 3};
        nl++;
    }
    free(x);
    if (nl > 0) nl_plot_legend(c, &a, legend, nl, true);
    return end(c, saved);
}

/* ---------------------------------------------------------------- your own plots -------- */

nl_status nl_viz_xy(nl_canvas *c, nl_rect r, const nl_viz_points *s, int n, bool scatter,
                    const char *title_text, const char *xlabel, const char *ylabel)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, a, b;
    for (int i = 0; i < n; i++) {
        if (s[i].x && nl_finite_range(s[i].x, s[i].n, &a, &b)) {
            x0 = fmin(x0, a);
            x1 = fmax(x1, b);
        } else if (!s[i].x && s[i].n > 0) {
            x0 = fmin(x0, 1);
            x1 = fmax(x1, (double)s[i].n);
        }
        if (nl_finite_range(s[i].y, s[i].n, &a, &b)) {
            y0 = fmin(y0, a);
            y1 = fmax(y1, b);
        }
    }
    bool any = x0 <= x1 && y0 <= y1;
    if (!any) x0 = y0 = 0, x1 = y1 = 1;
    double px = (x1 - x0) * (scatter ? 0.05 : 0.02), py = (y1 - y0) * 0.05;
    nl_axes ax = nl_axes_layout(r, x0 - px, x1 + px, y0 - py, y1 + py);
    nl_axes_draw(c, &ax, title_text, xlabel, ylabel, 0);
    if (!any) nl_plot_note(c, ax.plot, "no data");
    nl_legend_entry legend[16];
    int nl = 0;
    for (int i = 0; i < n; i++) {
        nl_series ser = {.x = s[i].x, .y = s[i].y, .n = s[i].n, .color = nl_palette(i),
                         .width = scatter ? 0 : 2, .marker = scatter ? 3 : 0};
        nl_plot_series(c, &ax, &ser);
        if (s[i].label && nl < 16) legend[nl++] = (nl_legend_entry){s[i].label, ser.color, ser.width, ser.marker};
    }
    if (nl > 0) nl_plot_legend(c, &ax, legend, nl, false);
    return end(c, saved);
}

nl_status nl_viz_decision(nl_canvas *c, nl_rect r, const int32_t *classes, int res, double x0,
                          double x1, double y0, double y1, const nl_viz_points *s, int n,
                          const char *title_text)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    nl_axes ax = nl_axes_layout(r, x0, x1, y0, y1);
    nl_axes_draw(c, &ax, title_text, "x", "y", 0);
    for (int py = 0; py < ax.plot.h; py++) {
        int j = (int)((int64_t)(ax.plot.h - 1 - py) * res / ax.plot.h);
        for (int px = 0; px < ax.plot.w; px++) {
            int32_t k = classes[(int64_t)j * res + (int64_t)px * res / ax.plot.w];
            if (k >= 0) nl_canvas_put(c, ax.plot.x + px, ax.plot.y + py, nl_color_mix(nl_palette(k), NL_WHITE, 0.3));
        }
    }
    nl_legend_entry legend[16];
    int nl = 0;
    for (int i = 0; i < n; i++) {
        nl_series ser = {.x = s[i].x, .y = s[i].y, .n = s[i].n, .color = nl_palette(i), .marker = 3};
        nl_plot_series(c, &ax, &ser);
        if (s[i].label && s[i].n > 0 && nl < 16) legend[nl++] = (nl_legend_entry){s[i].label, ser.color, 0, 3};
    }
    if (nl > 0) nl_plot_legend(c, &ax, legend, nl, false);
    return end(c, saved);
}

nl_status nl_viz_image(nl_canvas *c, nl_rect r, nl_image img, bool grey, const char *title_text)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    title(c, r, title_text);
    int top = title_text ? 28 : 4;
    int aw = r.w - 8, ah = r.h - top - 4;
    if (aw > 0 && ah > 0 && img.w > 0 && img.h > 0) {
        double scale = fmin((double)aw / img.w, (double)ah / img.h);
        int w = (int)fmax(1, img.w * scale), h = (int)fmax(1, img.h * scale);
        float lo, hi;
        nl_minmax(img.data, (int64_t)img.c * img.h * img.w, &lo, &hi);
        nl_canvas_blit(c, (nl_rect){r.x + (r.w - w) / 2, r.y + top + (ah - h) / 2, w, h}, img, lo, hi, grey);
    }
    return end(c, saved);
}


/* ---------------------------------------------------------------- feature maps ---------- */

nl_status nl_viz_features(nl_canvas *c, nl_rect r, const nl_image *input, nl_image maps,
                          const char *text)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    title(c, r, text);
    nl_rect area = below_title(r);
    if (input && input->h > 0 && input->w > 0) {
        int side = area.w / 4 < area.h - 20 ? area.w / 4 : area.h - 20;
        int iw = input->w >= input->h ? side : side * input->w / input->h;
        int ih = input->w >= input->h ? side * input->h / input->w : side;
        nl_canvas_text(c, area.x + side / 2, area.y, NL_TEXT_LABEL, NL_INK, NL_ALIGN_CENTER, "input");
        nl_rect t = {area.x + (side - iw) / 2, area.y + 20, iw, ih};
        blit_own_range(c, t, *input, false);
        nl_canvas_frame(c, (nl_rect){t.x - 1, t.y - 1, t.w + 2, t.h + 2}, NL_INK);
        area.x += side + 3 * GAP;
        area.w -= side + 3 * GAP;
    }
    if (maps.c < 1 || maps.h < 1 || maps.w < 1 || !maps.data) {
        nl_plot_note(c, area, "no feature maps");
        return end(c, saved);
    }
    int tw, th, cols = grid_fit(area, maps.c, (double)maps.w / maps.h, 0, &tw, &th);
    size_t plane = (size_t)maps.h * (size_t)maps.w;
    for (int i = 0; i < maps.c; i++) {
        nl_rect t = grid_tile(area, maps.c, cols, tw, th, 0, i);
        blit_own_range(c, t, (nl_image){1, maps.h, maps.w, maps.data + i * plane}, false);
        if (tw >= 36 && th >= 20) {
            char num[16];
            snprintf(num, sizeof num, "%d", i + 1);
            int w, h;
            nl_text_size(11, num, &w, &h);
            nl_canvas_fill_rect(c, (nl_rect){t.x, t.y, w + 4, h}, NL_INK);
            nl_canvas_text(c, t.x + 2, t.y, 11, NL_WHITE, NL_ALIGN_LEFT, num);
        }
    }
    return end(c, saved);
}

/* ---------------------------------------------------------------- filters --------------- */

nl_status nl_viz_filters(nl_canvas *c, nl_rect r, const float *w, int out, int in, int kh, int kw,
                         const char *text)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    bool rgb = in == 3;
    int rows = out < 32 ? out : 32, cols = rgb ? 1 : in < 32 ? in : 32;
    char full[256];
    snprintf(full, sizeof full, "%s%s", text ? text : "filters",
             rows < out || (!rgb && cols < in) ? " (first 32 shown)" : "");
    title(c, r, full);
    nl_rect area = below_title(r);
    size_t plane = (size_t)kh * (size_t)kw;
    int tw, th, n = rgb ? rows : rows * cols;
    if (rgb) {
        int gcols = grid_fit(area, n, (double)kw / kh, 0, &tw, &th);
        for (int o = 0; o < rows; o++)
            blit_own_range(c, grid_tile(area, n, gcols, tw, th, 0, o),
                           (nl_image){3, kh, kw, w + (size_t)o * 3 * plane}, false);
    } else {
        float m = 0;
        for (int64_t i = 0; i < (int64_t)out * in * kh * kw; i++)
            if (isfinite(w[i]) && fabsf(w[i]) > m) m = fabsf(w[i]);
        /* rows x cols tiles: the grid must keep one output filter per row. */
        double cw = (double)(area.w - (cols - 1)) / cols, ch = (double)(area.h - (rows - 1)) / rows;
        th = (int)fmin(ch, cw * kh / kw);
        th = th < 1 ? 1 : th;
        tw = th * kw / kh < 1 ? 1 : th * kw / kh;
        int x0 = area.x + (area.w - cols * (tw + 1)) / 2, y0 = area.y + (area.h - rows * (th + 1)) / 2;
        for (int o = 0; o < rows; o++)
            for (int i = 0; i < cols; i++)
                nl_canvas_blit(c, (nl_rect){x0 + i * (tw + 1), y0 + o * (th + 1), tw, th},
                               (nl_image){1, kh, kw, w + ((size_t)o * in + i) * plane}, -m, m, true);
    }
    return end(c, saved);
}

/* ---------------------------------------------------------------- histograms ------------ */

nl_status nl_plot_histogram(nl_canvas *c, nl_rect r, const nl_viz_values *v, nl_axes *axes)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    const bool levels = v->qmax > v->qmin && v->qmax - v->qmin < 256;
    float flo, fhi;
    nl_minmax(v->v, v->n, &flo, &fhi);
    double lo = fmin(flo, 0), hi = fmax(fhi, 0);
    if (levels) {
        lo = v->qmin - 0.5;
        hi = v->qmax + 0.5;
    } else if (lo == hi) {
        lo = -1;
        hi = 1;
    }
    nl_axes a = nl_axes_layout(r, lo, hi, 0, 1);
    int bins = levels ? v->qmax - v->qmin + 1 : a.plot.w / 2 < 8 ? 8 : a.plot.w / 2 > 256 ? 256 : a.plot.w / 2;
    int64_t counts[256] = {0}, zeros = 0, bad = 0, off = 0, top = 0;
    for (int64_t i = 0; i < v->n; i++) {
        float x = v->v[i];
        if (!isfinite(x)) bad++;
        else if (x == 0) zeros++;
        else if (levels) {
            const double q = nearbyint(x);
            if (q < v->qmin || q > v->qmax) off++;
            else counts[(int)q - v->qmin]++;
        } else {
            int b = (int)floor((x - lo) / (hi - lo) * bins);
            counts[b < 0 ? 0 : b >= bins ? bins - 1 : b]++;
        }
    }
    for (int b = 0; b < bins; b++) top = counts[b] > top ? counts[b] : top;
    top = top ? top : zeros;
    a.y1 = top > 0 ? (double)top * 1.08 : 1; /* headroom: the tallest bar stays clear of the frame */
    char text[160];
    int len = snprintf(text, sizeof text, "%s  (%lld values", v->name ? v->name : "values", (long long)v->n);
    if (bad) len += snprintf(text + len, sizeof text - (size_t)len, ", %lld not finite", (long long)bad);
    if (off) len += snprintf(text + len, sizeof text - (size_t)len, ", %lld off the levels", (long long)off);
    snprintf(text + len, sizeof text - (size_t)len, ")");
    int tw, th;
    nl_text_size(NL_TEXT_TITLE, text, &tw, &th);
    nl_axes_draw(c, &a, tw <= a.plot.w + 40 ? text : v->name, NULL, "count", NL_AXES_INT_Y);
    int bottom = a.plot.y + a.plot.h;
    nl_rect pc = c->clip;
    nl_canvas_clip(c, a.plot);
    for (int b = 0; b < bins; b++) {
        int x0 = a.plot.x + (int)((int64_t)b * a.plot.w / bins);
        int x1 = a.plot.x + (int)((int64_t)(b + 1) * a.plot.w / bins);
        int h = (int)lround((double)counts[b] / a.y1 * a.plot.h);
        const int gap = levels && x1 - x0 >= 3;
        nl_canvas_fill_rect(c, (nl_rect){x0, bottom - h, x1 - x0 - gap, h}, nl_palette(0));
    }
    int zx = (int)lround(nl_axes_px(&a, 0)), zw = 2;
    if (levels) { /* the slot of level 0 */
        const int b = -v->qmin, x0 = a.plot.x + (int)((int64_t)b * a.plot.w / bins),
                  x1 = a.plot.x + (int)((int64_t)(b + 1) * a.plot.w / bins);
        zx = x0;
        zw = x1 - x0 - (x1 - x0 >= 3) > 2 ? x1 - x0 - (x1 - x0 >= 3) : 2;
    }
    if (zeros) {
        int zh = (int)lround(fmin((double)zeros / a.y1, 1) * a.plot.h);
        nl_canvas_fill_rect(c, (nl_rect){zx, bottom - zh, zw, zh}, NL_WRONG);
        char z[48];
        snprintf(z, sizeof z, "zeros %.1f%%", 100.0 * (double)zeros / (double)v->n);
        int w, h;
        nl_text_size(NL_TEXT_TICK, z, &w, &h);
        nl_canvas_fill_rect(c, (nl_rect){a.plot.x + 2, a.plot.y + 2, w + 4, h}, NL_WHITE);
        nl_canvas_text(c, a.plot.x + 4, a.plot.y + 2, NL_TEXT_TICK, NL_WRONG, NL_ALIGN_LEFT, z);
    }
    c->clip = pc;
    nl_canvas_fill_rect(c, (nl_rect){zx, bottom + 1, zw, 5}, NL_WRONG);
    if (axes) *axes = a;
    return end(c, saved);
}

nl_status nl_viz_histogram(nl_canvas *c, nl_rect r, const nl_viz_values *layers, int n)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    title(c, r, "weights");
    nl_rect area = below_title(r);
    if (n <= 0) nl_plot_note(c, area, "no weights");
    /* Tiles fill the area: the column count whose tiles come closest to 1.6 wide per 1 high, and
     * the last row's tiles share its whole width (3 layers: two above, one as wide as both). */
    int cols = 1;
    double best = INFINITY;
    for (int k = 1; k <= n; k++) {
        int rows = (n + k - 1) / k;
        double w = (double)(area.w - (k - 1) * GAP) / k, h = (double)(area.h - (rows - 1) * GAP) / rows;
        double off = fabs(log(w / h / 1.6));
        if (h >= 1 && w >= 1 && off < best) {
            best = off;
            cols = k;
        }
    }
    int rows = n > 0 ? (n + cols - 1) / cols : 1, th = (area.h - (rows - 1) * GAP) / rows;
    for (int i = 0; i < n && st == NL_OK; i++) {
        int row = i / cols, in_row = row == rows - 1 ? n - row * cols : cols, k = i - row * cols;
        int tw = (area.w - (in_row - 1) * GAP) / in_row;
        nl_rect tile = {area.x + k * (tw + GAP), area.y + row * (th + GAP), tw, th};
        st = nl_plot_histogram(c, tile, &layers[i], NULL);
    }
    end(c, saved);
    return st;
}

/* ---------------------------------------------------------------- confusion ------------- */

/* The name of 0-based class i: names[i] when there is one, else the class number as the Lua side
 * knows it (1-based: i + 1) in buf. */
static const char *class_name(const char *const *names, int nnames, int i, char *buf, size_t n)
{
    if (names && i >= 0 && i < nnames && names[i]) return names[i];
    snprintf(buf, n, "%d", i + 1);
    return buf;
}

nl_status nl_viz_confusion(nl_canvas *c, nl_rect r, const int64_t *counts, int k,
                           const char *const *names, nl_rect *grid)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int64_t total = 0, hits = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            total += counts[(size_t)i * k + j];
            hits += i == j ? counts[(size_t)i * k + j] : 0;
        }
    char text[96];
    snprintf(text, sizeof text, "confusion: %lld samples, accuracy %.1f%%", (long long)total,
             total ? 100.0 * (double)hits / (double)total : 0.0);
    title(c, r, text);
    int name_w = 0;
    char buf[16];
    for (int i = 0; i < k; i++) {
        int w, h;
        nl_text_size(NL_TEXT_TICK, class_name(names, k, i, buf, sizeof buf), &w, &h);
        name_w = w > name_w ? w : name_w;
    }
    name_w = name_w > r.w / 4 ? r.w / 4 : name_w;
    int left = name_w + 30, bottom = name_w + 30;
    int avail_w = r.w - left - 2 * GAP, avail_h = r.h - TITLE_H - bottom;
    int cell = (avail_w < avail_h ? avail_w : avail_h) / (k > 0 ? k : 1);
    cell = cell < 1 ? 1 : cell;
    nl_rect g = {r.x + left + (avail_w - cell * k) / 2, r.y + TITLE_H, cell * k, cell * k};
    int size = cell / 3 < 9 ? 9 : cell / 3 > 14 ? 14 : cell / 3;
    for (int i = 0; i < k; i++) {
        int64_t row = 0;
        for (int j = 0; j < k; j++) row += counts[(size_t)i * k + j];
        for (int j = 0; j < k; j++) {
            int64_t n = counts[(size_t)i * k + j];
            double t = row ? (double)n / (double)row : 0;
            nl_rect cr = {g.x + j * cell, g.y + i * cell, cell, cell};
            nl_canvas_fill_rect(c, cr, nl_colormap(t));
            if (cell >= 22) {
                char num[24];
                snprintf(num, sizeof num, "%lld", (long long)n);
                nl_canvas_text(c, cr.x + cell / 2, cr.y + (cell - size) / 2 - 2, size,
                               t > 0.55 ? NL_INK : NL_WHITE, NL_ALIGN_CENTER, num);
            }
        }
    }
    for (int i = 0; cell >= 10 && i < k; i++) {
        const char *name = class_name(names, k, i, buf, sizeof buf);
        nl_canvas_text(c, g.x - 4, g.y + i * cell + cell / 2 - NL_TEXT_TICK / 2 - 2, NL_TEXT_TICK,
                       NL_INK, NL_ALIGN_RIGHT, name);
        int w, h;
        nl_text_size(NL_TEXT_TICK, name, &w, &h);
        nl_canvas_text_vertical(c, g.x + i * cell + cell / 2, g.y + g.h + 4 + w / 2, NL_TEXT_TICK,
                                NL_INK, name);
    }
    nl_canvas_text_vertical(c, r.x + 10, g.y + g.h / 2, NL_TEXT_LABEL, NL_INK, "true class");
    nl_canvas_text(c, g.x + g.w / 2, r.y + r.h - NL_TEXT_LABEL - 6, NL_TEXT_LABEL, NL_INK,
                   NL_ALIGN_CENTER, "predicted class");
    if (grid) *grid = g;
    return end(c, saved);
}

/* ---------------------------------------------------------------- profile --------------- */

/* c blended halfway to white. */
static uint32_t lighter(uint32_t c)
{
    const uint32_t r = (c >> 16) & 255, g = (c >> 8) & 255, b = c & 255;
    return (c & 0xff000000u) | ((r + 255) / 2) << 16 | ((g + 255) / 2) << 8 | (b + 255) / 2;
}

nl_status nl_viz_profile(nl_canvas *c, nl_rect r, const nl_viz_profile_row *rows, int n,
                         const char *title_text)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    title(c, r, title_text);
    const uint32_t grey = NL_RGB(170, 170, 170);
    int name_w = 0;
    for (int i = 0; i < n; i++) {
        int w, h;
        nl_text_size(NL_TEXT_TICK, rows[i].layer, &w, &h);
        name_w = w > name_w ? w : name_w;
    }
    name_w = name_w > r.w * 2 / 5 ? r.w * 2 / 5 : name_w;
    const int legend_h = 34, figures_w = 130;
    const int x0 = r.x + name_w + 2 * GAP, bar_w = r.w - name_w - figures_w - 4 * GAP;
    const int area_h = r.h - TITLE_H - legend_h;
    int row_h = n > 0 ? area_h / n : area_h;
    row_h = row_h > 28 ? 28 : row_h < 3 ? 3 : row_h;
    double most = 0;
    for (int i = 0; i < n; i++) most = fmax(most, rows[i].fwd_ms + rows[i].bwd_ms);
    for (int i = 0; i < n && bar_w > 0; i++) {
        const nl_viz_profile_row *p = &rows[i];
        const int y = r.y + TITLE_H + i * row_h, bh = row_h * 2 / 3 > 1 ? row_h * 2 / 3 : 1;
        const uint32_t col = p->pct_peak < 0 ? grey : nl_colormap(fmin(p->pct_peak, 100.0) / 100.0);
        const int wf = most > 0 ? (int)lround(bar_w * p->fwd_ms / most) : 0,
                  wb = most > 0 ? (int)lround(bar_w * (p->fwd_ms + p->bwd_ms) / most) - wf : 0;
        nl_canvas_fill_rect(c, (nl_rect){x0, y, wf, bh}, col);
        nl_canvas_fill_rect(c, (nl_rect){x0 + wf, y, wb, bh}, lighter(col));
        if (row_h >= NL_TEXT_TICK) {
            const int ty = y + bh / 2 - NL_TEXT_TICK / 2 - 2;
            nl_canvas_text(c, x0 - GAP, ty, NL_TEXT_TICK, NL_INK, NL_ALIGN_RIGHT, p->layer);
            char fig[48];
            if (p->pct_peak < 0) snprintf(fig, sizeof fig, "%.2f ms", p->fwd_ms + p->bwd_ms);
            else snprintf(fig, sizeof fig, "%.2f ms, %.0f%% peak", p->fwd_ms + p->bwd_ms, p->pct_peak);
            nl_canvas_text(c, x0 + wf + wb + GAP, ty, NL_TEXT_TICK, NL_INK, NL_ALIGN_LEFT, fig);
        }
    }
    /* legend: the colour ramp from 0 to 100% of peak, and what solid and light mean */
    const int ly = r.y + r.h - legend_h + 6, lw = bar_w > 200 ? 200 : bar_w;
    for (int j = 0; j < lw; j++)
        nl_canvas_fill_rect(c, (nl_rect){x0 + j, ly, 1, 10}, nl_colormap((double)j / (lw > 1 ? lw - 1 : 1)));
    nl_canvas_text(c, x0 - GAP, ly - 2, NL_TEXT_TICK, NL_INK, NL_ALIGN_RIGHT, "0% of peak");
    nl_canvas_text(c, x0 + lw + GAP, ly - 2, NL_TEXT_TICK, NL_INK, NL_ALIGN_LEFT,
                   "100%   solid: forward, light: backward");
    return end(c, saved);
}

/* ---------------------------------------------------------------- samples --------------- */

#define SAMPLE_TEXT_H 80
#define SAMPLE_MIN_W 120

nl_status nl_viz_samples(nl_canvas *c, nl_rect r, const nl_viz_sample *s, int n,
                         const char *const *names, int nnames)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int wrong = 0;
    for (int i = 0; i < n; i++) wrong += s[i].truth >= 0 && s[i].pred != s[i].truth;
    char text[96];
    snprintf(text, sizeof text, "samples: %d of %d wrong", wrong, n);
    title(c, r, text);
    nl_rect area = below_title(r);
    if (n <= 0) {
        nl_plot_note(c, area, "no samples");
        return end(c, saved);
    }
    int tw, th, cols = grid_fit(area, n, 1.0, SAMPLE_TEXT_H, &tw, &th);
    for (int i = 0; i < n; i++) {
        nl_rect t = grid_tile(area, n, cols, tw, th, SAMPLE_TEXT_H, i);
        bool bad = s[i].truth >= 0 && s[i].pred != s[i].truth;
        const nl_image *img = &s[i].image;
        int iw = img->w >= img->h ? tw : tw * img->w / img->h, ih = img->w >= img->h ? th * img->h / img->w : th;
        nl_rect ir = {t.x + (tw - iw) / 2, t.y + (th - ih) / 2, iw, ih};
        blit_own_range(c, ir, *img, false);
        if (bad) {
            for (int k = 1; k <= 3; k++)
                nl_canvas_frame(c, (nl_rect){ir.x - k, ir.y - k, ir.w + 2 * k, ir.h + 2 * k}, NL_WRONG);
        }
        char line[96], b1[16], b2[16];
        int y = t.y + th + 4, x = t.x + tw / 2 - (tw > SAMPLE_MIN_W ? tw : SAMPLE_MIN_W) / 2 + 2;
        nl_rect tc = c->clip;
        nl_canvas_clip(c, (nl_rect){t.x - GAP / 2, t.y, tw + GAP, th + SAMPLE_TEXT_H});
        if (s[i].truth >= 0) {
            snprintf(line, sizeof line, "true: %s", class_name(names, nnames, s[i].truth, b1, sizeof b1));
            nl_canvas_text(c, x, y, NL_TEXT_TICK, NL_INK, NL_ALIGN_LEFT, line);
        }
        snprintf(line, sizeof line, "pred: %s", class_name(names, nnames, s[i].pred, b1, sizeof b1));
        nl_canvas_text(c, x, y + 14, NL_TEXT_TICK, bad ? NL_WRONG : NL_RGB(44, 140, 44), NL_ALIGN_LEFT, line);
        for (int k = 0; k < s[i].ntop && k < 3; k++) {
            snprintf(line, sizeof line, "%.0f%%  %s", 100 * s[i].prob[k],
                     class_name(names, nnames, s[i].top[k], b2, sizeof b2));
            nl_canvas_text(c, x, y + 30 + 13 * k, 11, NL_RGB(90, 90, 90), NL_ALIGN_LEFT, line);
        }
        c->clip = tc;
    }
    return end(c, saved);
}

/* ---------------------------------------------------------------- dashboard ------------- */

nl_status nl_viz_dashboard(nl_canvas *c, nl_rect r, const nl_viz_board *d)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int top = d->status ? 22 : 0;
    if (d->status)
        nl_canvas_text(c, r.x + 8, r.y + 3, NL_TEXT_LABEL, NL_INK, NL_ALIGN_LEFT, d->status);
    int ch = (r.h - top) / 2;
    st = nl_viz_curves(c, (nl_rect){r.x, r.y + top, r.w, ch}, d->runs, d->nruns);
    nl_rect low = {r.x, r.y + top + ch, r.w, r.h - top - ch};
    nl_canvas_fill_rect(c, (nl_rect){low.x + 8, low.y, low.w - 16, 1}, NL_GRID);
    if (st == NL_OK && d->maps.data) {
        int fw = low.w / 2;
        st = nl_viz_features(c, (nl_rect){low.x, low.y + 1, fw, low.h - 1}, d->input, d->maps, d->maps_title);
        low.x += fw;
        low.w -= fw;
        nl_canvas_fill_rect(c, (nl_rect){low.x, low.y + 8, 1, low.h - 16}, NL_GRID);
        low.x += 1;
        low.w -= 1;
    }
    if (st == NL_OK && d->nextra > 0) {
        int ew = d->maps.data ? low.w / 2 : low.w / 3;
        st = nl_viz_xy(c, (nl_rect){low.x + low.w - ew, low.y + 1, ew, low.h - 1}, d->extra, d->nextra,
                       false, "your values (on_step)", "step", NULL);
        low.w -= ew + 1;
        nl_canvas_fill_rect(c, (nl_rect){low.x + low.w, low.y + 8, 1, low.h - 16}, NL_GRID);
    }
    if (st == NL_OK) st = nl_viz_histogram(c, (nl_rect){low.x, low.y + 1, low.w, low.h - 1}, d->layers, d->nlayers);
    end(c, saved);
    return st;
}

nl_status nl_viz_compare(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n,
                         const nl_viz_points *final, const char *title_text, const char *xlabel,
                         const char *ylabel)
{
    nl_rect saved;
    nl_status st = begin(c, r, &saved);
    if (st != NL_OK) return st;
    int top = r.h * 3 / 5;
    st = nl_viz_curves(c, (nl_rect){r.x, r.y, r.w, top}, runs, n);
    nl_canvas_fill_rect(c, (nl_rect){r.x + 8, r.y + top, r.w - 16, 1}, NL_GRID);
    if (st == NL_OK)
        st = nl_viz_xy(c, (nl_rect){r.x, r.y + top + 1, r.w, r.h - top - 1}, final, n, true, title_text,
                       xlabel, ylabel);
    end(c, saved);
    return st;
}
