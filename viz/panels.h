/* panels.h: the pictures of nnlab's visualization, each drawn into a rectangle of a canvas from
 * plain host data (arrays the Lua layer copies out of tensors and tables). Every panel fills its
 * rectangle (white background) and returns NL_OK, or NL_EIO when the font is missing. */
#ifndef NL_PANELS_H
#define NL_PANELS_H

#include "plot.h"

/* One training run's history. Accuracies are fractions in [0, 1]; NaN entries are gaps. */
typedef struct {
    const char *label;                        /* legend text; NULL: "run N" */
    const double *loss; int64_t nloss;        /* training loss per step */
    const double *train_acc; int64_t ntrain;  /* training accuracy per epoch */
    const double *test_acc; int64_t ntest;    /* test accuracy per epoch */
} nl_viz_run;

/* Loss per step (the raw values in a light tint, a smoothed line over them: a debiased
 * exponential moving average over about n/20 steps, at least 1 and at most 100) on the left,
 * accuracy per epoch (train: thin line with discs, test: thick line with squares) on the right.
 * Several runs are overlaid in palette colours with a legend. */
nl_status nl_viz_curves(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n);
/* Pruning sensitivity (prune.sensitivity): test accuracy against the fraction of a layer's
 * weights pruned, amounts[0..namounts) (fractions, drawn as percentages), one line with discs per
 * layer (layers[i].label, accuracies in layers[i].test_acc, one per amount) in palette colours,
 * the unpruned baseline (NaN: none) as a grey horizontal line, and a legend. */
nl_status nl_viz_sensitivity(nl_canvas *c, nl_rect r, const double *amounts, int namounts,
                             const nl_viz_run *layers, int n, double baseline);

/* One series of viz.plot / viz.scatter: the points (x[i], y[i]) (x NULL: 1, 2, ..., n) and a
 * legend label (NULL: none). */
typedef struct {
    const double *x, *y;
    int64_t n;
    const char *label;
} nl_viz_points;
/* Your own plot: the n series on shared axes (ranges from their finite values), coloured from the
 * palette in order, as lines, or as dots when scatter is set; a legend when any has a label. */
nl_status nl_viz_xy(nl_canvas *c, nl_rect r, const nl_viz_points *s, int n, bool scatter,
                    const char *title, const char *xlabel, const char *ylabel);
/* A 2-D classifier's decision regions: classes[j * res + i] (0-based, -1: none) is the class at
 * x = x0 + (i + 0.5) (x1 - x0) / res, y = y0 + (j + 0.5) (y1 - y0) / res, painted in the
 * palette's colours, lightened; the n series (points of class k as series k, may be empty) drawn
 * over them as dots. */
nl_status nl_viz_decision(nl_canvas *c, nl_rect r, const int32_t *classes, int res, double x0,
                          double x1, double y0, double y1, const nl_viz_points *s, int n,
                          const char *title);
/* A tensor as a picture, aspect kept: one plane through the colour map (grey when grey is set),
 * three as RGB, scaled from its smallest to its largest finite value; a title above. */
nl_status nl_viz_image(nl_canvas *c, nl_rect r, nl_image img, bool grey, const char *title);
/* The smoothed loss of nl_viz_curves: out[i] from v[0..i] (NaN and Inf entries are skipped and
 * repeat the previous smoothed value; NaN before the first finite one). */
void nl_smooth(const double *v, int64_t n, double *out);

/* The feature maps of one layer for one image: maps.c channels of maps.h x maps.w, tiled, each
 * scaled to its own range through the colormap, channel numbers (1-based) on tiles large
 * enough, and input (when not NULL: 1 or 3 planes, scaled to its own range) on the left. */
nl_status nl_viz_features(nl_canvas *c, nl_rect r, const nl_image *input, nl_image maps,
                          const char *title);

/* Convolution filters w [out, in, kh, kw]: with in == 3, one RGB tile per filter, each scaled to
 * its own range (so its colours and pattern show); otherwise one row per output filter with a grey
 * tile per input channel, all in one symmetric range (-max|w|, max|w|) so signs and sizes compare
 * (at most 32 x 32 tiles, the title says when there are more). */
nl_status nl_viz_filters(nl_canvas *c, nl_rect r, const float *w, int out, int in, int kh, int kw,
                         const char *title);

/* A layer's values for the weight histograms. With qmax > qmin the values are the integer levels
 * qmin..qmax of a quantized layer (nl_quant_levels), drawn one bar per level. */
typedef struct {
    const char *name;
    const float *v;
    int64_t n;
    int qmin, qmax;
} nl_viz_values;

/* One histogram: the range is [min(v, 0), max(v, 0)] (so 0 is always inside), with plot.w / 2
 * bins (at least 8, at most 256) of equal width; value x goes to bin floor((x - lo) / (hi - lo)
 * * bins), clamped to the last. Exact zeros are not binned: they are counted apart and drawn as a
 * red bar at 0 (with their share in the corner), so pruned weights stay visible. Bar heights are
 * round(count / largest * plot.h), the largest count taken over the bins (over the zeros when
 * every value is zero), the zero bar capped at plot.h; bar b covers columns
 * plot.x + floor(b * plot.w / bins) up to the next bar. Non-finite values are
 * counted in the title and not drawn.
 * Levels (v->qmax > v->qmin, at most 256 of them): the range is [qmin - 1/2, qmax + 1/2] with one
 * bin per level (value x, rounded, in bin x - qmin; values outside are counted as "off the levels"
 * in the title), each bar one pixel narrower than its slot when the slot is 3 pixels or wider so
 * neighbouring levels stand apart; the zeros (level 0) are the red bar, as wide as its slot. */
nl_status nl_plot_histogram(nl_canvas *c, nl_rect r, const nl_viz_values *v, nl_axes *axes);
/* One histogram per layer, in a grid. */
nl_status nl_viz_histogram(nl_canvas *c, nl_rect r, const nl_viz_values *layers, int n);

/* A k x k confusion matrix (counts, row = true class, column = predicted) as a heat map: each
 * cell is nl_colormap(count / row total) (0 for an empty row), with the count printed when the
 * cell is large enough and class names (NULL: the class numbers 1..k, as Lua counts) along both
 * sides. The cells' square
 * goes to *grid when grid is not NULL: cell (i, j) covers grid->w / k pixels from
 * (grid->x + j * grid->w / k, grid->y + i * grid->w / k). */
nl_status nl_viz_confusion(nl_canvas *c, nl_rect r, const int64_t *counts, int k,
                           const char *const *names, nl_rect *grid);

/* One layer of a profile (nn.profile): milliseconds forward and backward, and the share of the
 * machine's peak its arithmetic ran at (negative: the layer does no counted arithmetic). */
typedef struct {
    const char *layer;
    double fwd_ms, bwd_ms, pct_peak;
} nl_viz_profile_row;
/* A bar per layer, its length the layer's time (forward solid, backward lighter after it), its
 * colour nl_colormap(% of peak / 100) (grey without arithmetic), the figures beside it; a legend
 * of the colours under the bars. */
nl_status nl_viz_profile(nl_canvas *c, nl_rect r, const nl_viz_profile_row *rows, int n,
                         const char *title_text);

/* One classified image for the samples panel. */
typedef struct {
    nl_image image;       /* 1 or 3 planes, scaled to its own range */
    int truth, pred;      /* 0-based classes (shown 1-based); truth < 0: unknown */
    int ntop;             /* up to 3 */
    int top[3];           /* 0-based classes, most probable first */
    double prob[3];
} nl_viz_sample;
/* Images in a grid with their true and predicted labels and top probabilities; a wrong
 * prediction gets a red frame and a red label. names[0..nnames) name the classes; a class without a name (or with a NULL one) shows its
 * number, 1-based as Lua counts: 0-based class i is "i + 1". */
nl_status nl_viz_samples(nl_canvas *c, nl_rect r, const nl_viz_sample *s, int n,
                         const char *const *names, int nnames);

/* Everything the dashboard shows. maps.data NULL: no feature maps; status: a line on top. */
typedef struct {
    const nl_viz_run *runs;
    int nruns;
    const nl_image *input;
    nl_image maps;
    const char *maps_title;
    const nl_viz_values *layers;
    int nlayers;
    const char *status;
    const nl_viz_points *extra; /* values of the trainer's own (t:on_step), per step; may be NULL */
    int nextra;
} nl_viz_board;
/* Curves on the top half, feature maps and weight histograms side by side below, and, when
 * nextra > 0, a third panel on the right of them: the extra series against the step (lines in
 * palette colours, with a legend). */
nl_status nl_viz_dashboard(nl_canvas *c, nl_rect r, const nl_viz_board *d);

/* Saved runs side by side: their curves (nl_viz_curves) on the top 60%, and below a figure of
 * each run (final[i]: one point, x and y, in run i's palette colour, as dots) with its title and
 * axis labels. */
nl_status nl_viz_compare(nl_canvas *c, nl_rect r, const nl_viz_run *runs, int n,
                         const nl_viz_points *final, const char *title, const char *xlabel,
                         const char *ylabel);

#endif
