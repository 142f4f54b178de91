/* plot.h: charts on a canvas: axes with nice ticks and labels, line series with markers, and
 * legends. The panels (panels.h) are built from these. */
#ifndef NL_PLOT_H
#define NL_PLOT_H

#include "canvas.h"

/* The colours every panel shares. */
#define NL_WHITE NL_RGB(255, 255, 255)
#define NL_INK NL_RGB(40, 40, 40)          /* text, axes */
#define NL_GRID NL_RGB(228, 228, 228)      /* grid lines */
#define NL_WRONG NL_RGB(214, 39, 40)       /* wrong predictions, the zero bin */
/* The i-th colour of the series palette (matplotlib's tab10), cycling. */
uint32_t nl_palette(int i);

/* Text sizes in pixels: readable at 100% zoom. */
enum { NL_TEXT_TICK = 12, NL_TEXT_LABEL = 13, NL_TEXT_TITLE = 15 };

/* A data range mapped onto a pixel rectangle: x0 lands on column plot.x and x1 on column
 * plot.x + plot.w - 1; y0 on row plot.y + plot.h - 1 (the bottom) and y1 on row plot.y. */
typedef struct {
    nl_rect plot;
    double x0, x1, y0, y1;
} nl_axes;

static inline double nl_axes_px(const nl_axes *a, double x)
{
    return a->plot.x + (x - a->x0) / (a->x1 - a->x0) * (a->plot.w - 1);
}
static inline double nl_axes_py(const nl_axes *a, double y)
{
    return a->plot.y + a->plot.h - 1 - (y - a->y0) / (a->y1 - a->y0) * (a->plot.h - 1);
}

/* Axes inside area: the plot rectangle leaves margins for the title (top), tick labels and axis
 * labels (left, bottom). An empty or degenerate range (x0 >= x1, NaN) is widened so the mapping
 * stays finite. */
nl_axes nl_axes_layout(nl_rect area, double x0, double x1, double y0, double y1);
/* How nl_axes_draw labels ticks: whole numbers only on x or y, y as percentages. */
enum { NL_AXES_INT_X = 1, NL_AXES_INT_Y = 2, NL_AXES_PERCENT_Y = 4 };
/* Draws the grid, the frame, ticks with labels (1-2-5 steps, as flags says), the title above and
 * the axis labels. Call before the series: they draw over the grid. Titles and labels may be
 * NULL. */
void nl_axes_draw(nl_canvas *c, const nl_axes *a, const char *title, const char *xlabel,
                  const char *ylabel, int flags);

/* A series of points: x NULL means 1, 2, ..., n. Non-finite points break the line. width is
 * the line's width (0: no line); marker > 0 draws a disc of that radius at each point, < 0 a
 * square of half-side -marker. */
typedef struct {
    const double *x, *y;
    int64_t n;
    uint32_t color;
    int width;
    int marker;
} nl_series;
/* Draws s clipped to the plot rectangle. */
void nl_plot_series(nl_canvas *c, const nl_axes *a, const nl_series *s);

/* A legend box in the top-right (or bottom-right) corner of the plot: one row per entry, a
 * swatch in the colour (a line of the entry's width and its marker, as for series) and the text. */
typedef struct {
    const char *text;
    uint32_t color;
    int width, marker;
} nl_legend_entry;
void nl_plot_legend(nl_canvas *c, const nl_axes *a, const nl_legend_entry *e, int n, bool bottom);

/* The range of the finite values among v[0..n): false (lo, hi untouched) when there is none. */
bool nl_finite_range(const double *v, int64_t n, double *lo, double *hi);

/* A message centred in r (for an empty plot, "no data yet"). */
void nl_plot_note(nl_canvas *c, nl_rect r, const char *text);

#endif
