// SVG line plots (see svg.h).
#include "svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum { W = 800, H = 480, ML = 72, MR = 190, MT = 44, MB = 56 };

// Colours of the series in order (colour-blind safe, after Okabe and Ito).
static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#F0E442"};
enum { NPAL = sizeof palette / sizeof palette[0] };

// Text as XML character data (names may hold & < > ").
static void put_text(FILE *f, const char *s) {
    for (; s && *s; s++) switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
}

// A tick step of 1, 2 or 5 times a power of ten giving about n intervals over span.
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static int drawable(double x, double y, int logy) { return isfinite(x) && isfinite(y) && (!logy || y > 0); }

char *svg_plot(const char *title, const char *xlabel, const char *ylabel, const svg_series_t *s, int ns,
               int logy) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            if (!drawable(s[i].x[k], s[i].y[k], logy)) continue;
            double y = logy ? log10(s[i].y[k]) : s[i].y[k];
            x0 = fmin(x0, s[i].x[k]);
            x1 = fmax(x1, s[i].x[k]);
            y0 = fmin(y0, y);
            y1 = fmax(y1, y);
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;  // nothing to draw: an empty frame
    if (x1 == x0) x0 -= 0.5, x1 += 0.5;
    if (y1 == y0) y0 -= 0.5, y1 += 0.5;
    double pw = W - ML - MR, ph = H - MT - MB;
#define PX(v) (ML + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (MT + ph - ((v) - y0) / (y1 - y0) * ph)
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) return xstrdup("");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" font-weight=\"bold\">", ML);
    put_text(f, title);
    fputs("</text>\n", f);
    // grid lines and tick labels (a log axis labels the powers of ten it spans, 1-2-5 between)
    double xs = nice_step(x1 - x0, 6);
    for (double t = ceil(x0 / xs) * xs; t <= x1 + xs * 1e-9; t += xs)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                PX(t), MT, PX(t), MT + ph, PX(t), MT + ph + 16, fabs(t) < xs * 1e-9 ? 0.0 : t);
    double ys = nice_step(y1 - y0, 5);
    if (logy && ys < 1 && y1 - y0 > 1) ys = 1;
    for (double t = ceil(y0 / ys) * ys; t <= y1 + ys * 1e-9; t += ys)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                ML, PY(t), ML + pw, PY(t), ML - 6, PY(t) + 4, logy ? pow(10, t) : fabs(t) < ys * 1e-9 ? 0.0 : t);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", ML, MT, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", ML + pw / 2, H - 14);
    put_text(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">", MT + ph / 2);
    put_text(f, ylabel);
    fputs(logy ? " (log scale)</text>\n" : "</text>\n", f);
    // the curves: a polyline per unbroken stretch
    for (int i = 0; i < ns; i++) {
        const char *col = palette[i % NPAL];
        int open = 0;
        for (int k = 0; k < s[i].n; k++) {
            if (!drawable(s[i].x[k], s[i].y[k], logy)) {
                if (open) fputs("\"/>\n", f);
                open = 0;
                continue;
            }
            if (!open) fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", col);
            double y = logy ? log10(s[i].y[k]) : s[i].y[k];
            fprintf(f, "%s%.1f,%.1f", open ? " " : "", PX(s[i].x[k]), PY(y));
            open = 1;
        }
        if (open) fputs("\"/>\n", f);
    }
    // the legend, right of the plot
    for (int i = 0; i < ns; i++) {
        int ly = MT + 10 + 18 * i, points = 0;
        for (int k = 0; k < s[i].n; k++) points += drawable(s[i].x[k], s[i].y[k], logy);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%d\" x2=\"%.0f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>"
                   "<text x=\"%.0f\" y=\"%d\">", ML + pw + 12, ly, ML + pw + 32, ly, palette[i % NPAL], ML + pw + 38, ly + 4);
        put_text(f, s[i].name);
        fputs(points ? "</text>\n" : " (no data)</text>\n", f);
    }
    fputs("</svg>\n", f);
    fclose(f);
#undef PX
#undef PY
    return out;
}
