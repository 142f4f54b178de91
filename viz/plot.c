/* plot.c: axes with nice ticks, series, legends: the chart layer under the panels. */
#include "plot.h"

#include <math.h>
#include <stdio.h>

#define MARGIN_LEFT 58
#define MARGIN_BOTTOM 38
#define MARGIN_TOP 26
#define MARGIN_RIGHT 12
#define MAX_TICKS 40

uint32_t nl_palette(int i)
{
    static const uint32_t tab10[] = {
        NL_RGB(31, 119, 180), NL_RGB(255, 127, 14), NL_RGB(44, 160, 44),  NL_RGB(214, 39, 40),
        NL_RGB(148, 103, 189), NL_RGB(140, 86, 75), NL_RGB(227, 119, 194), NL_RGB(127, 127, 127),
        NL_RGB(188, 189, 34), NL_RGB(23, 190, 207)};
    int n = (int)(sizeof tab10 / sizeof tab10[0]);
    return tab10[((i % n) + n) % n];
}

bool nl_finite_range(const double *v, int64_t n, double *lo, double *hi)
{
    double a = INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            a = fmin(a, v[i]);
            b = fmax(b, v[i]);
        }
    if (a > b) return false;
    *lo = a;
    *hi = b;
    return true;
}

/* Widens [*lo, *hi] when it is empty, reversed or not finite. */
static void widen(double *lo, double *hi)
{
    if (!isfinite(*lo) || !isfinite(*hi) || *lo > *hi) {
        *lo = 0;
        *hi = 1;
    } else if (*lo == *hi) {
        double d = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 0.5;
        *lo -= d;
        *hi += d;
    }
}

nl_axes nl_axes_layout(nl_rect area, double x0, double x1, double y0, double y1)
{
    widen(&x0, &x1);
    widen(&y0, &y1);
    nl_rect p = {area.x + MARGIN_LEFT, area.y + MARGIN_TOP, area.w - MARGIN_LEFT - MARGIN_RIGHT,
                 area.h - MARGIN_TOP - MARGIN_BOTTOM};
    if (p.w < 2) p.w = 2;
    if (p.h < 2) p.h = 2;
    return (nl_axes){p, x0, x1, y0, y1};
}

/* A 1-2-5 step giving about target ticks over span (at least 1 when integer). */
static double nice_step(double span, int target, bool integer)
{
    double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    return integer && step < 1 ? 1 : step;
}

/* Formats a tick value with as many decimals as the step needs. */
static void format_tick(char *buf, size_t n, double v, double step, bool percent)
{
    if (percent) {
        v *= 100;
        step *= 100;
    }
    if (fabs(v) < step * 1e-6) v = 0;
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e6 || decimals > 6) snprintf(buf, n, "%.3g%s", v, percent ? "%" : "");
    else snprintf(buf, n, "%.*f%s", decimals, v, percent ? "%" : "");
}

/* The ticks of [lo, hi]: the multiples of step in it, at most MAX_TICKS. Returns the count and
 * the first in *first. */
static int ticks(double lo, double hi, double step, double *first)
{
    double k = ceil(lo / step - 1e-9);
    *first = k * step;
    int n = (int)floor((hi - *first) / step + 1e-9) + 1;
    return n < 0 ? 0 : n > MAX_TICKS ? MAX_TICKS : n;
}

void nl_axes_draw(nl_canvas *c, const nl_axes *a, const char *title, const char *xlabel,
                  const char *ylabel, int flags)
{
    nl_rect p = a->plot;
    nl_canvas_fill_rect(c, p, NL_WHITE);
    /* about one x label per 70 pixels and one y label per 35, so labels never touch */
    double xs = nice_step(a->x1 - a->x0, p.w / 70 < 2 ? 2 : p.w / 70 > 8 ? 8 : p.w / 70,
                          flags & NL_AXES_INT_X);
    double ys = nice_step(a->y1 - a->y0, p.h / 35 < 2 ? 2 : p.h / 35 > 6 ? 6 : p.h / 35,
                          flags & NL_AXES_INT_Y);
    char buf[32];
    double v0;
    for (int i = 0, n = ticks(a->x0, a->x1, xs, &v0); i < n; i++) {
        double v = v0 + i * xs;
        int x = (int)lround(nl_axes_px(a, v));
        nl_canvas_fill_rect(c, (nl_rect){x, p.y, 1, p.h}, NL_GRID);
        nl_canvas_fill_rect(c, (nl_rect){x, p.y + p.h, 1, 4}, NL_INK);
        format_tick(buf, sizeof buf, v, xs, false);
        nl_canvas_text(c, x, p.y + p.h + 5, NL_TEXT_TICK, NL_INK, NL_ALIGN_CENTER, buf);
    }
    int widest = 0; /* the widest y tick label, to keep the axis label clear of it */
    for (int i = 0, n = ticks(a->y0, a->y1, ys, &v0); i < n; i++) {
        double v = v0 + i * ys;
        int y = (int)lround(nl_axes_py(a, v));
        nl_canvas_fill_rect(c, (nl_rect){p.x, y, p.w, 1}, NL_GRID);
        nl_canvas_fill_rect(c, (nl_rect){p.x - 4, y, 4, 1}, NL_INK);
        format_tick(buf, sizeof buf, v, ys, flags & NL_AXES_PERCENT_Y);
        int w = nl_canvas_text(c, p.x - 6, y - NL_TEXT_TICK / 2 - 2, NL_TEXT_TICK, NL_INK, NL_ALIGN_RIGHT, buf);
        widest = w > widest ? w : widest;
    }
    nl_canvas_frame(c, (nl_rect){p.x - 1, p.y - 1, p.w + 2, p.h + 2}, NL_INK);
    if (title)
        nl_canvas_text(c, p.x + p.w / 2, p.y - MARGIN_TOP + 4, NL_TEXT_TITLE, NL_INK,
                       NL_ALIGN_CENTER, title);
    if (xlabel)
        nl_canvas_text(c, p.x + p.w / 2, p.y + p.h + 20, NL_TEXT_LABEL, NL_INK, NL_ALIGN_CENTER,
                       xlabel);
    /* The y label reads upwards left of the tick labels, with a gap; when long tick labels leave
     * no room in the margin it goes above the axis instead, left-aligned over the tick labels. */
    if (ylabel) {
        int x = p.x - 6 - widest - 3 - (NL_TEXT_LABEL + 3) / 2;
        if (x - (NL_TEXT_LABEL + 3) / 2 >= p.x - MARGIN_LEFT)
            nl_canvas_text_vertical(c, x, p.y + p.h / 2, NL_TEXT_LABEL, NL_INK, ylabel);
        else
            nl_canvas_text(c, p.x - MARGIN_LEFT + 2, p.y - MARGIN_TOP + 6, NL_TEXT_LABEL, NL_INK,
                           NL_ALIGN_LEFT, ylabel);
    }
}

/* A marker (disc or square, as for nl_series) at (x, y). */
static void marker(nl_canvas *c, int x, int y, int m, uint32_t color)
{
    if (m > 0) nl_canvas_disc(c, x, y, m, color);
    else if (m < 0) nl_canvas_fill_rect(c, (nl_rect){x + m, y + m, 1 - 2 * m, 1 - 2 * m}, color);
}

void nl_plot_series(nl_canvas *c, const nl_axes *a, const nl_series *s)
{
    nl_rect saved = c->clip;
    nl_canvas_clip(c, a->plot);
    double px = NAN, py = NAN;
    for (int64_t i = 0; i < s->n; i++) {
        double x = nl_axes_px(a, s->x ? s->x[i] : (double)(i + 1)), y = nl_axes_py(a, s->y[i]);
        if (s->width > 0 && isfinite(px) && isfinite(x) && isfinite(y))
            nl_canvas_line(c, px, py, x, y, s->color, s->width);
        if (s->width > 0 && s->n == 1 && isfinite(x) && isfinite(y))
            nl_canvas_line(c, x, y, x, y, s->color, s->width);
        px = x;
        py = y;
    }
    for (int64_t i = 0; s->marker && i < s->n; i++) {
        double x = nl_axes_px(a, s->x ? s->x[i] : (double)(i + 1)), y = nl_axes_py(a, s->y[i]);
        if (isfinite(x) && isfinite(y)) marker(c, (int)lround(x), (int)lround(y), s->marker, s->color);
    }
    c->clip = saved;
}

void nl_plot_legend(nl_canvas *c, const nl_axes *a, const nl_legend_entry *e, int n, bool bottom)
{
    if (n <= 0) return;
    int tw = 0, th = NL_TEXT_TICK + 4;
    for (int i = 0; i < n; i++) {
        int w, h;
        if (nl_text_size(NL_TEXT_TICK, e[i].text, &w, &h) == NL_OK && w > tw) tw = w;
    }
    int row = th + 2, bw = tw + 42, bh = n * row + 8;
    nl_rect box = {a->plot.x + a->plot.w - bw - 6, bottom ? a->plot.y + a->plot.h - bh - 6 : a->plot.y + 6, bw, bh};
    nl_canvas_fill_rect(c, box, NL_WHITE);
    nl_canvas_frame(c, box, NL_GRID);
    for (int i = 0; i < n; i++) {
        int y = box.y + 4 + i * row, mid = y + row / 2;
        if (e[i].width > 0) nl_canvas_line(c, box.x + 6, mid, box.x + 30, mid, e[i].color, e[i].width);
        marker(c, box.x + 18, mid, e[i].marker, e[i].color);
        nl_canvas_text(c, box.x + 36, y, NL_TEXT_TICK, NL_INK, NL_ALIGN_LEFT, e[i].text);
    }
}

void nl_plot_note(nl_canvas *c, nl_rect r, const char *text)
{
    nl_canvas_text(c, r.x + r.w / 2, r.y + r.h / 2 - NL_TEXT_LABEL / 2, NL_TEXT_LABEL,
                   NL_RGB(120, 120, 120), NL_ALIGN_CENTER, text);
}
