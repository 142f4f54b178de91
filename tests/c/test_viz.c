/* test_viz.c: pixel tests of the visualization canvas and panels (exact lines, histogram bar
 * heights, confusion colours, text boxes, class labels found pixel for pixel, PNG round trips,
 * degenerate inputs) and of the window logic on SDL's offscreen video driver. */
#include "panels.h"
#include "testhelp.h"
#include "window.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How many pixels of colour color lie in r. */
static int count_color(const nl_canvas *c, nl_rect r, uint32_t color)
{
    int n = 0;
    for (int y = r.y; y < r.y + r.h; y++)
        for (int x = r.x; x < r.x + r.w; x++) n += nl_canvas_get(c, x, y) == color;
    return n;
}

static int count_not(const nl_canvas *c, nl_rect r, uint32_t color)
{
    return r.w * r.h - count_color(c, r, color);
}

/* How many places in r show text exactly as nl_canvas_text (or, vertical, nl_canvas_text_vertical)
 * draws it in size and color on white: the rendered text's ink box, white pixels included, is
 * compared pixel for pixel at every position in r. */
static int text_at(const nl_canvas *c, nl_rect r, int size, uint32_t color, bool vertical, const char *text)
{
    int w, h, found = 0;
    if (nl_text_size(size, text, &w, &h) != NL_OK) return -1;
    int side = w + h + 8;
    nl_canvas *t = nl_canvas_new(side, side, NL_WHITE);
    if (!t) return -1;
    if (vertical) nl_canvas_text_vertical(t, side / 2, side / 2, size, color, text);
    else nl_canvas_text(t, 4, 4, size, color, NL_ALIGN_LEFT, text);
    int x0 = side, y0 = side, x1 = -1, y1 = -1; /* the ink box */
    for (int y = 0; y < side; y++)
        for (int x = 0; x < side; x++)
            if (nl_canvas_get(t, x, y) != NL_WHITE) {
                x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
            }
    int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    int rx0 = r.x < 0 ? 0 : r.x, ry0 = r.y < 0 ? 0 : r.y;
    int rx1 = r.x + r.w > c->w ? c->w : r.x + r.w, ry1 = r.y + r.h > c->h ? c->h : r.y + r.h;
    for (int y = ry0; x1 >= 0 && y + bh <= ry1; y++)
        for (int x = rx0; x + bw <= rx1; x++) {
            bool same = true;
            for (int j = 0; same && j < bh; j++)
                for (int i = 0; same && i < bw; i++)
                    same = nl_canvas_get(c, x + i, y + j) == nl_canvas_get(t, x0 + i, y0 + j);
            found += same;
        }
    nl_canvas_release(t);
    return found;
}

static void test_primitives(void)
{
    nl_canvas *c = nl_canvas_new(40, 30, NL_WHITE);
    CHECK(c && c->w == 40 && c->h == 30 && count_color(c, (nl_rect){0, 0, 40, 30}, NL_WHITE) == 1200,
          "a new canvas is filled");
    CHECK(!nl_canvas_new(0, 5, 0) && nl_errcode() == NL_EINVAL, "size 0 is refused");
    uint32_t red = NL_RGB(255, 0, 0), blue = NL_RGB(0, 0, 255);
    nl_canvas_fill_rect(c, (nl_rect){-5, -5, 10, 8}, red);
    CHECK(count_color(c, (nl_rect){0, 0, 40, 30}, red) == 15, "fill is clipped to the canvas: %d",
          count_color(c, (nl_rect){0, 0, 40, 30}, red));
    nl_canvas_clip(c, (nl_rect){10, 10, 5, 5});
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, blue);
    nl_canvas_unclip(c);
    CHECK(count_color(c, (nl_rect){0, 0, 40, 30}, blue) == 25 && nl_canvas_get(c, 10, 10) == blue &&
          nl_canvas_get(c, 15, 15) == NL_WHITE, "fill respects the clip rectangle");

    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, NL_WHITE);
    nl_canvas_line(c, 2, 5, 11, 5, red, 1);
    CHECK(count_color(c, (nl_rect){0, 0, 40, 30}, red) == 10 && nl_canvas_get(c, 2, 5) == red &&
          nl_canvas_get(c, 11, 5) == red, "a horizontal line: both ends, 10 pixels");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, NL_WHITE);
    nl_canvas_line(c, 3, 3, 8, 8, red, 1);
    bool diag = count_color(c, (nl_rect){0, 0, 40, 30}, red) == 6;
    for (int i = 3; i <= 8; i++) diag &= nl_canvas_get(c, i, i) == red;
    CHECK(diag, "a diagonal lands on (i, i)");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, NL_WHITE);
    nl_canvas_line(c, 10, 10, 10, 10, red, 3);
    CHECK(count_color(c, (nl_rect){9, 9, 3, 3}, red) == 9 && count_color(c, (nl_rect){0, 0, 40, 30}, red) == 9,
          "width 3 stamps a 3 x 3 square centred on the pixel");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, NL_WHITE);
    nl_canvas_line(c, -1e9, 12, 1e9, 12, red, 1);
    nl_canvas_line(c, NAN, 1, 5, 5, red, 1);
    CHECK(count_color(c, (nl_rect){0, 0, 40, 30}, red) == 40, "a huge line is clipped, a NaN one skipped");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 40, 30}, NL_WHITE);
    nl_canvas_disc(c, 20, 15, 2, blue);
    CHECK(count_color(c, (nl_rect){0, 0, 40, 30}, blue) == 21 && nl_canvas_get(c, 22, 15) == blue &&
          nl_canvas_get(c, 22, 17) == NL_WHITE, "a disc of radius 2 has 21 pixels");

    CHECK(nl_colormap(0) == NL_RGB(0x44, 0x01, 0x54) && nl_colormap(1) == NL_RGB(0xfd, 0xe7, 0x25) &&
          nl_colormap(-3) == nl_colormap(0) && nl_colormap(7) == nl_colormap(1), "viridis ends, clamped");
    CHECK(nl_colormap(0.5) == NL_RGB(0x21, 0x91, 0x8c) && nl_colormap(NAN) == NL_RGB(128, 128, 128),
          "viridis middle; NaN is grey");
    CHECK(nl_colormap(0.05) == nl_color_mix(nl_colormap(0.1), nl_colormap(0), 0.5), "interpolated stops");

    float img[4] = {0, 1, 2, 3};
    nl_canvas_blit(c, (nl_rect){0, 0, 4, 4}, (nl_image){1, 2, 2, img}, 0, 3, true);
    CHECK(nl_canvas_get(c, 0, 0) == NL_RGB(0, 0, 0) && nl_canvas_get(c, 1, 1) == NL_RGB(0, 0, 0) &&
          nl_canvas_get(c, 2, 0) == NL_RGB(85, 85, 85) && nl_canvas_get(c, 3, 3) == NL_WHITE &&
          nl_canvas_get(c, 0, 2) == NL_RGB(170, 170, 170), "nearest scaling of a 2 x 2 image");
    float flat[3] = {5, 5, 5}, rgb[3] = {0, 0.5f, 1};
    nl_canvas_blit(c, (nl_rect){0, 0, 3, 1}, (nl_image){1, 1, 3, flat}, 5, 5, false);
    CHECK(nl_canvas_get(c, 1, 0) == nl_colormap(0), "a constant map shows the lowest colour");
    nl_canvas_blit(c, (nl_rect){0, 0, 1, 1}, (nl_image){3, 1, 1, rgb}, 0, 1, false);
    CHECK(nl_canvas_get(c, 0, 0) == NL_RGB(0, 128, 255), "three planes are RGB");
    nl_canvas_release(c);
}

static void test_text(void)
{
    nl_canvas *c = nl_canvas_new(200, 60, NL_WHITE);
    int w, h;
    CHECK(nl_text_size(14, "Hello 123", &w, &h) == NL_OK && w > 40 && w < 120 && h >= 14 && h < 24,
          "text size %d x %d", w, h);
    int drawn = nl_canvas_text(c, 20, 10, 14, NL_INK, NL_ALIGN_LEFT, "Hello 123");
    CHECK(drawn == w, "drawn width %d = measured %d", drawn, w);
    int inside = count_not(c, (nl_rect){20, 10, w, h}, NL_WHITE);
    int total = count_not(c, (nl_rect){0, 0, 200, 60}, NL_WHITE);
    CHECK(inside > 50 && inside == total, "text inks %d pixels, all inside its box (%d in all)", inside, total);
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 200, 60}, NL_WHITE);
    nl_canvas_text(c, 100, 10, 14, NL_INK, NL_ALIGN_RIGHT, "Hello 123");
    CHECK(count_not(c, (nl_rect){100 - w, 10, w, h}, NL_WHITE) == inside, "right alignment ends at x");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 200, 60}, NL_WHITE);
    nl_canvas_text_vertical(c, 100, 30, 12, NL_INK, "abc");
    int vw, vh;
    nl_text_size(12, "abc", &vw, &vh);
    int vin = count_not(c, (nl_rect){100 - vh / 2, 30 + vw / 2 - vw + 1, vh, vw}, NL_WHITE);
    CHECK(vin > 10 && vin == count_not(c, (nl_rect){0, 0, 200, 60}, NL_WHITE), "vertical text stays in its box");
    CHECK(nl_canvas_text(c, 0, 0, 12, NL_INK, NL_ALIGN_LEFT, "") == 0, "empty text draws nothing");
    nl_canvas_release(c);
}

static void test_series(void)
{
    nl_canvas *c = nl_canvas_new(130, 80, NL_WHITE);
    nl_axes a = {{10, 10, 101, 51}, 0, 10, 0, 5};
    CHECK(nl_axes_px(&a, 0) == 10 && nl_axes_px(&a, 10) == 110 && nl_axes_py(&a, 0) == 60 &&
          nl_axes_py(&a, 5) == 10, "axes map the range onto the plot's first and last pixels");
    double x[] = {0, 5, 10}, y[] = {0, 5, 0};
    uint32_t col = NL_RGB(10, 20, 30);
    nl_plot_series(c, &a, &(nl_series){.x = x, .y = y, .n = 3, .color = col, .width = 1});
    bool on = true;
    for (int px = 10; px <= 60; px++) on &= nl_canvas_get(c, px, 60 - (px - 10)) == col;
    for (int px = 60; px <= 110; px++) on &= nl_canvas_get(c, px, 10 + (px - 60)) == col;
    CHECK(on && count_color(c, (nl_rect){0, 0, 130, 80}, col) == 101,
          "the curve through (0,0), (5,5), (10,0) lands on its 101 pixels exactly");
    nl_canvas_fill_rect(c, (nl_rect){0, 0, 130, 80}, NL_WHITE);
    double gap[] = {1, NAN, 1, 2};
    nl_plot_series(c, &a, &(nl_series){.y = gap, .n = 4, .color = col, .width = 1, .marker = 1});
    /* points at x = 1..4: a NaN breaks the line: only the segment from 3 to 4 and the markers */
    CHECK(nl_canvas_get(c, 20, 50) == col && nl_canvas_get(c, 30, 50) == NL_WHITE &&
          nl_canvas_get(c, 45, 45) == col && nl_canvas_get(c, 21, 50) == col,
          "NaN breaks the line; markers at finite points");
    double out[40], v[40];
    for (int i = 0; i < 40; i++) v[i] = i == 0 ? 1 : 3;
    nl_smooth(v, 40, out);
    CHECK_CLOSE(out[0], 1, 1e-12, 0);
    CHECK_CLOSE(out[1], 1.75 / 0.75, 1e-12, 0);
    v[2] = NAN;
    nl_smooth(v, 40, out);
    CHECK(out[2] == out[1], "NaN repeats the smoothed value");
    double nan1[1] = {NAN};
    nl_smooth(nan1, 1, out);
    CHECK(isnan(out[0]), "nothing finite yet: NaN");
    nl_canvas_release(c);
}

static void test_histogram(void)
{
    nl_canvas *c = nl_canvas_new(400, 300, NL_WHITE);
    float v[37];
    int k = 0;
    for (int i = 0; i < 10; i++) v[k++] = -1;
    for (int i = 0; i < 5; i++) v[k++] = 0.5f;
    for (int i = 0; i < 2; i++) v[k++] = 1;
    for (int i = 0; i < 20; i++) v[k++] = 0;
    nl_axes a;
    CHECK(nl_plot_histogram(c, (nl_rect){0, 0, 400, 300}, &(nl_viz_values){"w", v, 37, 0, 0}, &a) == NL_OK,
          "histogram draws");
    nl_rect p = a.plot;
    uint32_t bar = nl_palette(0);
    int bottom = p.y + p.h - 1, zx = (int)lround(nl_axes_px(&a, 0));
    CHECK(a.x0 == -1 && a.x1 == 1 && fabs(a.y1 - 10 * 1.08) < 1e-9,
          "range [-1, 1], largest bin 10 (zeros apart) with 8%% headroom under the frame");
    /* bar heights: count / y1 of the plot's height; the tallest stays below the top */
    const int full = (int)lround(10 / a.y1 * p.h), half = (int)lround(5 / a.y1 * p.h),
              fifth = (int)lround(2 / a.y1 * p.h);
    CHECK(full < p.h - 10, "the tallest bar (%d) stays clear of the frame (%d)", full, p.h);
    /* the height of the bar in each column, measured from the bottom */
    int heights[400] = {0}, seen[3] = {0}, others = 0;
    for (int x = p.x; x < p.x + p.w; x++) {
        int h = 0;
        while (h < p.h && nl_canvas_get(c, x, bottom - h) == bar) h++;
        heights[x] = h;
        if (h == full) seen[0]++;
        else if (h == half) seen[1]++;
        else if (h == fifth) seen[2]++;
        else if (h != 0 && (x < zx || x > zx + 1)) others++;
    }
    CHECK(heights[p.x] == full && heights[p.x + p.w - 1] == fifth,
          "-1 fills the first bin to the tallest height (%d of %d), 1 the last to a fifth of it (%d)",
          heights[p.x], full, heights[p.x + p.w - 1]);
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0 && others == 0,
          "three bars of heights 100%%, 50%%, 20%% and nothing else (%d %d %d %d)", seen[0], seen[1],
          seen[2], others);
    int zeros = 0;
    while (zeros < p.h && nl_canvas_get(c, zx, bottom - zeros) == NL_WRONG) zeros++;
    CHECK(zeros == p.h && nl_canvas_get(c, zx + 1, bottom) == NL_WRONG,
          "the zeros are a red bar at 0, capped at the top (%d)", zeros);

    float all_zero[5] = {0}, bad[3] = {NAN, INFINITY, -INFINITY};
    CHECK(nl_plot_histogram(c, (nl_rect){0, 0, 400, 300}, &(nl_viz_values){"z", all_zero, 5, 0, 0}, &a) == NL_OK &&
          a.x0 == -1 && a.x1 == 1, "all zeros: range [-1, 1]");
    CHECK(nl_plot_histogram(c, (nl_rect){0, 0, 400, 300}, &(nl_viz_values){"bad", bad, 3, 0, 0}, NULL) == NL_OK &&
          nl_plot_histogram(c, (nl_rect){0, 0, 400, 300}, &(nl_viz_values){"none", NULL, 0, 0, 0}, NULL) == NL_OK,
          "non-finite and empty values draw");
    nl_canvas_release(c);
}

/* Integer levels (a quantized layer's weights): one bar per level -8..7 in its own slot, a gap
 * column between neighbouring slots, the zeros as the red bar filling the slot of level 0, and
 * values off the levels left out. */
static void test_histogram_levels(void)
{
    nl_canvas *c = nl_canvas_new(400, 300, NL_WHITE);
    float v[24];
    int k = 0;
    for (int i = 0; i < 3; i++) v[k++] = -7;
    for (int i = 0; i < 6; i++) v[k++] = -3;
    for (int i = 0; i < 6; i++) v[k++] = 2;
    for (int i = 0; i < 2; i++) v[k++] = 7;
    for (int i = 0; i < 4; i++) v[k++] = 0;
    v[k++] = 9;                                   /* off the levels */
    v[k++] = 3;
    v[k++] = 3;                                   /* level 3 next to level 2 */
    nl_axes a;
    CHECK(nl_plot_histogram(c, (nl_rect){0, 0, 400, 300},
                            &(nl_viz_values){"int4 levels", v, 24, -8, 7}, &a) == NL_OK, "levels draw");
    CHECK(a.x0 == -8.5 && a.x1 == 7.5 && fabs(a.y1 - 6 * 1.08) < 1e-9,
          "range [-8.5, 7.5], largest level 6 (zeros apart) with headroom");
    const nl_rect p = a.plot;
    const uint32_t bar = nl_palette(0);
    const int bottom = p.y + p.h - 1, bins = 16;
    int want[16] = {0};
    want[-7 + 8] = 3, want[-3 + 8] = 6, want[2 + 8] = 6, want[3 + 8] = 2, want[7 + 8] = 2;
    int bars = 0, wrong = 0, gaps = 0;
    for (int b = 0; b < bins; b++) {
        const int x0 = p.x + b * p.w / bins, x1 = p.x + (b + 1) * p.w / bins;
        for (int x = x0; x < x1 - 1; x++) { /* every column of the slot but its last: the bar */
            int h = 0;
            while (h < p.h && nl_canvas_get(c, x, bottom - h) == bar) h++;
            wrong += h != (int)lround(want[b] / a.y1 * p.h);
        }
        bars += want[b] > 0 && nl_canvas_get(c, x0, bottom) == bar;
        gaps += want[b] > 0 && nl_canvas_get(c, x1 - 1, bottom) != bar;
    }
    CHECK(bars == 5 && wrong == 0, "five bars (levels -7, -3, 2, 3, 7) of the expected heights, nothing "
          "else (%d bars, %d wrong columns)", bars, wrong);
    CHECK(gaps == 5 && p.w / bins >= 3, "each bar leaves its slot's last column free (%d)", gaps);
    const int z0 = p.x + 8 * p.w / bins, z1 = p.x + 9 * p.w / bins;
    int zh = 0;
    while (zh < p.h && nl_canvas_get(c, z0, bottom - zh) == NL_WRONG) zh++;
    CHECK(zh == (int)lround(4 / a.y1 * p.h) && nl_canvas_get(c, z1 - 2, bottom) == NL_WRONG &&
          nl_canvas_get(c, z0 - 1, bottom) != NL_WRONG && nl_canvas_get(c, z1 - 1, bottom) != NL_WRONG,
          "the zeros fill level 0's slot in red to 4/6 of the height (%d of %d)", zh, p.h);
    nl_canvas_release(c);
}

static void test_confusion(void)
{
    nl_canvas *c = nl_canvas_new(500, 400, NL_WHITE);
    int64_t m[4] = {3, 1, 0, 4};
    const char *names[2] = {"cat", "dog"};
    nl_rect g;
    CHECK(nl_viz_confusion(c, (nl_rect){0, 0, 500, 400}, m, 2, names, &g) == NL_OK && g.w == g.h &&
          g.w >= 100, "confusion draws a square grid (%d x %d)", g.w, g.h);
    int cell = g.w / 2;
    CHECK(nl_canvas_get(c, g.x + 2, g.y + 2) == nl_colormap(0.75) &&
          nl_canvas_get(c, g.x + cell + 2, g.y + 2) == nl_colormap(0.25) &&
          nl_canvas_get(c, g.x + 2, g.y + cell + 2) == nl_colormap(0) &&
          nl_canvas_get(c, g.x + g.w - 3, g.y + g.h - 3) == nl_colormap(1),
          "cells are coloured by their share of the row");
    CHECK(count_not(c, (nl_rect){g.x + 1, g.y + 1, cell - 2, cell - 2}, nl_colormap(0.75)) > 5,
          "the count is printed in the cell");
    CHECK(count_not(c, (nl_rect){0, g.y, g.x - 1, cell}, NL_WHITE) > 20, "class names on the left");

    /* Without names the classes are numbered as Lua numbers them: 1..k, not 0..k-1. */
    CHECK(nl_viz_confusion(c, (nl_rect){0, 0, 500, 400}, m, 2, NULL, &g) == NL_OK, "confusion without names");
    cell = g.w / 2;
    nl_rect left = {0, g.y, g.x, g.h}, under = {g.x, g.y + g.h, g.w, 400 - g.y - g.h};
    int row1 = text_at(c, (nl_rect){0, g.y, g.x, cell}, NL_TEXT_TICK, NL_INK, false, "1"),
        row2 = text_at(c, (nl_rect){0, g.y + cell, g.x, cell}, NL_TEXT_TICK, NL_INK, false, "2"),
        row0 = text_at(c, left, NL_TEXT_TICK, NL_INK, false, "0");
    CHECK(row1 == 1 && row2 == 1 && row0 == 0, "rows are labelled 1 and 2, no 0 (%d %d %d)", row1, row2, row0);
    CHECK(text_at(c, (nl_rect){g.x, under.y, cell, under.h}, NL_TEXT_TICK, NL_INK, true, "1") == 1 &&
          text_at(c, (nl_rect){g.x + cell, under.y, cell, under.h}, NL_TEXT_TICK, NL_INK, true, "2") == 1 &&
          text_at(c, under, NL_TEXT_TICK, NL_INK, true, "0") == 0, "columns are labelled 1 and 2, no 0");
    int64_t three[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    const char *partial[3] = {"cat", NULL, "bird"};
    CHECK(nl_viz_confusion(c, (nl_rect){0, 0, 500, 400}, three, 3, partial, &g) == NL_OK &&
          text_at(c, (nl_rect){0, g.y, g.x, g.h}, NL_TEXT_TICK, NL_INK, false, "cat") == 1 &&
          text_at(c, (nl_rect){0, g.y, g.x, g.h}, NL_TEXT_TICK, NL_INK, false, "2") == 1 &&
          text_at(c, (nl_rect){0, g.y, g.x, g.h}, NL_TEXT_TICK, NL_INK, false, "1") == 0,
          "a class without a name shows its 1-based number");
    int64_t one = 0;
    CHECK(nl_viz_confusion(c, (nl_rect){0, 0, 500, 400}, &one, 1, NULL, NULL) == NL_OK &&
          nl_viz_confusion(c, (nl_rect){0, 0, 500, 400}, NULL, 0, NULL, NULL) == NL_OK &&
          nl_viz_confusion(c, (nl_rect){0, 0, 30, 20}, m, 2, names, NULL) == NL_OK,
          "empty, 0 x 0 and tiny confusion matrices draw");
    nl_canvas_release(c);
}

/* The samples panel's labels: 1-based class numbers without names (0-based class 1 is "2"),
 * names where given, numbers past the names; wrong predictions in red, right ones in green. */
static void test_samples_labels(void)
{
    nl_canvas *c = nl_canvas_new(400, 300, NL_WHITE);
    nl_rect all = {0, 0, 400, 300};
    float img[3 * 4 * 4];
    for (int i = 0; i < 48; i++) img[i] = (float)i;
    const uint32_t grey = NL_RGB(90, 90, 90), green = NL_RGB(44, 140, 44);
    nl_viz_sample s = {{3, 4, 4, img}, 1, 0, 3, {0, 1, 2}, {0.6, 0.3, 0.1}};
    CHECK(nl_viz_samples(c, all, &s, 1, NULL, 0) == NL_OK, "one sample draws");
    int truth = text_at(c, all, NL_TEXT_TICK, NL_INK, false, "true: 2"),
        pred = text_at(c, all, NL_TEXT_TICK, NL_WRONG, false, "pred: 1");
    CHECK(truth == 1 && pred == 1, "true class 1 and predicted 0 (0-based) read \"true: 2\" and \"pred: 1\" "
          "(%d %d)", truth, pred);
    CHECK(text_at(c, all, NL_TEXT_TICK, NL_INK, false, "true: 1") == 0 &&
          text_at(c, all, NL_TEXT_TICK, NL_WRONG, false, "pred: 0") == 0, "no 0-based labels");
    CHECK(text_at(c, all, 11, grey, false, "60%  1") == 1 && text_at(c, all, 11, grey, false, "30%  2") == 1 &&
          text_at(c, all, 11, grey, false, "10%  3") == 1, "the top 3 are numbered 1..3");

    const char *names[2] = {"cat", "dog"};
    s.pred = s.top[0] = 1, s.top[1] = 0;
    s.prob[0] = 0.6, s.prob[1] = 0.3;
    CHECK(nl_viz_samples(c, all, &s, 1, names, 2) == NL_OK &&
          text_at(c, all, NL_TEXT_TICK, NL_INK, false, "true: dog") == 1 &&
          text_at(c, all, NL_TEXT_TICK, green, false, "pred: dog") == 1 &&
          text_at(c, all, 11, grey, false, "60%  dog") == 1 && text_at(c, all, 11, grey, false, "30%  cat") == 1 &&
          text_at(c, all, 11, grey, false, "10%  3") == 1,
          "names where given (a right prediction in green), the 1-based number past them");
    s.truth = -1;
    CHECK(nl_viz_samples(c, all, &s, 1, NULL, 0) == NL_OK &&
          text_at(c, all, NL_TEXT_TICK, green, false, "pred: 2") == 1 &&
          text_at(c, all, NL_TEXT_TICK, NL_INK, false, "true:") == 0, "an unknown truth: only the prediction");
    nl_canvas_release(c);
}

/* Every panel on degenerate data and sizes: must not crash (ASan watches the memory). */
static void test_degenerate(void)
{
    double nan3[3] = {NAN, NAN, NAN}, one[1] = {0.5};
    float maps1[1] = {2}, w1[1] = {0.3f}, img[3 * 4 * 4] = {0};
    nl_viz_run runs[3] = {{"empty", NULL, 0, NULL, 0, NULL, 0},
                          {NULL, nan3, 3, nan3, 3, nan3, 3},
                          {"one", one, 1, one, 1, one, 1}};
    nl_viz_values layers[2] = {{"one", w1, 1, 0, 0}, {"none", NULL, 0, 0, 0}};
    nl_image in = {3, 4, 4, img};
    nl_viz_sample s = {in, 0, 1, 1, {1, 0, 0}, {0.9, 0, 0}};
    const int sizes[][2] = {{1, 1}, {64, 48}, {300, 200}, {1200, 720}, {2500, 1600}};
    bool ok = true;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        nl_canvas *c = nl_canvas_new(sizes[i][0], sizes[i][1], NL_WHITE);
        nl_rect r = {0, 0, c->w, c->h};
        for (int n = 0; n <= 3; n++) ok &= nl_viz_curves(c, r, runs, n) == NL_OK;
        ok &= nl_viz_features(c, r, &in, (nl_image){1, 1, 1, maps1}, "one channel") == NL_OK;
        ok &= nl_viz_features(c, r, NULL, (nl_image){0, 0, 0, NULL}, NULL) == NL_OK;
        ok &= nl_viz_filters(c, r, w1, 1, 1, 1, 1, NULL) == NL_OK;
        ok &= nl_viz_filters(c, r, img, 1, 3, 4, 4, "rgb") == NL_OK;
        ok &= nl_viz_histogram(c, r, layers, 2) == NL_OK && nl_viz_histogram(c, r, NULL, 0) == NL_OK;
        ok &= nl_viz_samples(c, r, &s, 1, NULL, 0) == NL_OK && nl_viz_samples(c, r, NULL, 0, NULL, 0) == NL_OK;
        nl_viz_board b = {runs, 3, &in, {1, 1, 1, maps1}, "maps", layers, 2, "status", NULL, 0};
        ok &= nl_viz_dashboard(c, r, &b) == NL_OK;
        b.maps.data = NULL;
        ok &= nl_viz_dashboard(c, r, &b) == NL_OK;
        nl_canvas_release(c);
    }
    CHECK(ok, "every panel draws empty series, NaN, one channel and any size");
}

static void test_png(void)
{
    char dir[] = "/tmp/nnlab-viz-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temporary folder");
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/view.png", dir);
    nl_canvas *c = nl_canvas_new(300, 200, NL_WHITE);
    double loss[5] = {2, 1.5, 1.2, 1.1, 0.9};
    nl_viz_run run = {"run", loss, 5, NULL, 0, NULL, 0};
    nl_viz_curves(c, (nl_rect){0, 0, 300, 200}, &run, 1);
    nl_canvas_put(c, 0, 0, NL_RGB(1, 2, 3));
    CHECK(nl_canvas_save_png(c, path) == NL_OK, "save creates the folders: %s", nl_errmsg());
    nl_canvas *back = nl_canvas_load_png(path);
    CHECK(back && back->w == 300 && back->h == 200 &&
          memcmp(back->px, c->px, sizeof(uint32_t) * 300 * 200) == 0, "the PNG decodes to the same pixels");
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "no temporary file is left");
    CHECK(nl_canvas_save_png(c, "/proc/nnlab-no/x.png") != NL_OK && strstr(nl_errmsg(), "/proc/nnlab-no"),
          "an unwritable path fails with its name: %s", nl_errmsg());
    CHECK(!nl_canvas_load_png("/nonexistent.png") && nl_errcode() == NL_EIO, "a missing file: NL_EIO");
    CHECK(!nl_canvas_load_png("/proc/self/stat") && nl_errcode() == NL_EFORMAT, "not an image: NL_EFORMAT");
    nl_canvas_release(back);
    nl_canvas_release(c);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* The window's logic on SDL's offscreen driver: no display needed. */
static void test_window(void)
{
    char *display = getenv("DISPLAY") ? strdup(getenv("DISPLAY")) : NULL;
    unsetenv("DISPLAY");
    unsetenv("WAYLAND_DISPLAY");
    setenv("SDL_VIDEODRIVER", "x11", 1);
    CHECK(nl_window_open() == NL_EDEVICE && strstr(nl_errmsg(), "no display") && !nl_window_is_open(),
          "no display: open fails with a reason (%s)", nl_errmsg());
    int w, h;
    nl_window_size(&w, &h);
    CHECK(w == NL_VIEW_W && h == NL_VIEW_H, "default size while closed");
    char cwd[4096], dir[] = "/tmp/nnlab-win-XXXXXX";
    CHECK(getcwd(cwd, sizeof cwd) && mkdtemp(dir) && chdir(dir) == 0, "work in a temporary folder");

    nl_canvas *a = nl_canvas_new(320, 200, NL_RGB(200, 10, 10)), *b = nl_canvas_new(320, 200, NL_RGB(10, 200, 10));
    nl_view_set("a", a, true);
    nl_view_set("b", b, true);
    const char *name;
    CHECK(nl_view_current(&name) == b && strcmp(name, "b") == 0 && nl_view_get("a") == a, "views by name");
    CHECK(nl_window_key("tab", NULL, 0) == NL_OK && nl_view_current(&name) == a, "tab goes to the next view");
    nl_window_key("space", NULL, 0);
    CHECK(!nl_window_paused(), "space does not pause without a window");
    char saved[128] = "";
    CHECK(nl_window_key("s", saved, sizeof saved) == NL_OK && strncmp(saved, "runs/screenshot-", 16) == 0,
          "s saves the view: %s", saved);
    nl_canvas *back = nl_canvas_load_png(saved);
    CHECK(back && memcmp(back->px, a->px, 320 * 200 * 4) == 0, "the screenshot file holds the view");
    nl_canvas_release(back);
    char again[128] = "";
    nl_window_key("s", again, sizeof again);
    CHECK(strcmp(again, saved) != 0, "a second screenshot in the same second gets its own name");
    CHECK(nl_window_key("x", NULL, 0) == NL_EINVAL, "unknown keys are refused");

    setenv("SDL_VIDEODRIVER", "offscreen", 1);
    nl_window_resize(320, 200);
    if (nl_window_open() != NL_OK) {
        SKIP("window checks: SDL offscreen driver: %s", nl_errmsg());
    } else {
        CHECK(nl_window_is_open(), "offscreen window opens");
        nl_canvas *shot = nl_window_screenshot();
        CHECK(shot && shot->w == 320 && shot->h == 200 && memcmp(shot->px, a->px, 320 * 200 * 4) == 0,
              "the window shows the current view pixel for pixel");
        nl_canvas_release(shot);
        nl_window_key("tab", NULL, 0);
        shot = nl_window_screenshot();
        CHECK(shot && nl_canvas_get(shot, 5, 5) == NL_RGB(10, 200, 10), "tab switches what the window shows");
        nl_canvas_release(shot);
        nl_window_resize(640, 200);
        nl_window_pump();
        nl_window_size(&w, &h);
        shot = nl_window_screenshot();
        /* (the offscreen driver does not resize its surface: the picture is checked under Xvfb) */
        CHECK(w == 640 && h == 200 && shot && shot->w == 640 && shot->h == 200 &&
              nl_canvas_get(shot, 2, 100) != NL_RGB(10, 200, 10),
              "resized: the size follows, the view is letterboxed (%d x %d)", w, h);
        nl_canvas_release(shot);
        nl_window_key("space", NULL, 0);
        CHECK(nl_window_paused(), "space pauses");
        nl_interrupt();
        nl_window_wait_paused();
        nl_interrupt_clear();
        CHECK(!nl_window_paused(), "Ctrl-C ends the wait and hands the pause to the trainer");
        nl_window_key("q", NULL, 0);
        CHECK(!nl_window_is_open() && !nl_window_paused() && !nl_window_screenshot(),
              "q closes the window and unpauses");
        CHECK(nl_window_open() == NL_OK && nl_window_is_open(), "the window reopens");
        nl_window_close();
    }
    nl_canvas_release(a);
    nl_canvas_release(b);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(chdir(cwd) == 0 && system(cmd) == 0, "cleanup");
    if (display) setenv("DISPLAY", display, 1);
    free(display);
}

int main(void)
{
    test_primitives();
    test_text();
    test_series();
    test_histogram();
    test_histogram_levels();
    test_confusion();
    test_samples_labels();
    test_degenerate();
    test_png();
    test_window();
    return TEST_REPORT();
}
