// Line plots as SVG files, for slides: what the Curves tab shows (or `lorabench export --what
// curves --format svg`), drawn with axes, ticks, one polyline per series and a legend. The
// one place that writes SVG; it knows nothing of runs or the store.
#ifndef LB_SVG_H
#define LB_SVG_H

typedef struct {
    const char *name;   // legend text
    const double *x, *y;
    int n;              // non-finite points (and y <= 0 on a log axis) break the line
} svg_series_t;

// The SVG document of the series (malloc'd, the caller frees it): 800×480 pixels, the
// title on top, xlabel under the x axis, ylabel beside the y axis, logy: a log10 y axis.
// Series with no drawable point are listed in the legend as "(no data)".
char *svg_plot(const char *title, const char *xlabel, const char *ylabel, const svg_series_t *s, int ns,
               int logy);

#endif
