// Widgets: see widgets.h.
#include "widgets.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

// ---- number formatting ----

char *fmt_int(char *buf, int64_t v) {
    char tmp[32];
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    int n = 0, digits = 0;
    do {
        if (digits && digits % 3 == 0) tmp[n++] = ',';
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
        digits++;
    } while (u);
    int k = 0;
    if (neg) buf[k++] = '-';
    while (n) buf[k++] = tmp[--n];
    buf[k] = 0;
    return buf;
}

char *fmt_count(char *buf, double v) {
    double a = fabs(v);
    if (isnan(v)) snprintf(buf, 32, "-");
    else if (a < 1000) snprintf(buf, 32, "%.0f", v);
    else if (a < 1e5) snprintf(buf, 32, "%.1fk", v / 1e3);
    else if (a < 1e6) snprintf(buf, 32, "%.0fk", v / 1e3);
    else if (a < 1e8) snprintf(buf, 32, "%.1fM", v / 1e6);
    else if (a < 1e9) snprintf(buf, 32, "%.0fM", v / 1e6);
    else snprintf(buf, 32, "%.1fG", v / 1e9);
    return buf;
}

char *fmt_bytes(char *buf, double b) {
    static const char *units[] = {"B", "KB", "MB", "GB", "TB"};
    if (isnan(b) || b < 0) {
        snprintf(buf, 32, "-");
        return buf;
    }
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0) snprintf(buf, 32, "%.0f B", b);
    else snprintf(buf, 32, b < 10 ? "%.1f %s" : "%.0f %s", b, units[u]);
    return buf;
}

char *fmt_duration(char *buf, double s) {
    if (isnan(s) || s < 0) {
        snprintf(buf, 32, "-");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(buf, 32, "%lds", t);
    else if (t < 3600) snprintf(buf, 32, "%ldm%02lds", t / 60, t % 60);
    else if (t < 86400) snprintf(buf, 32, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else snprintf(buf, 32, "%ldd%02ldh", t / 86400, (t % 86400) / 3600);
    return buf;
}

char *fmt_num(char *buf, double v, int prec) {
    if (isnan(v)) snprintf(buf, 32, "-");
    else snprintf(buf, 32, "%.*f", prec, v);
    return buf;
}

// an axis label: at most 6 characters ("0.0012", "1.2k", "3.4M")
static char *fmt_axis(char *buf, double v) {
    double a = fabs(v);
    if (a == 0) snprintf(buf, 32, "0");
    else if (a >= 1e6) snprintf(buf, 32, "%.3gM", v / 1e6);
    else if (a >= 1e4) snprintf(buf, 32, "%.3gk", v / 1e3);
    else if (a >= 0.01) snprintf(buf, 32, "%.4g", v);
    else snprintf(buf, 32, "%.1e", v);
    return buf;
}

// ---- table ----

#define TABLE_GUTTER 2

int table_fit(const table_t *t, int avail, int *widths) {
    char buf[256];
    if (t->ncols > 64) return 0;
    for (int c = 0; c < t->ncols; c++) {
        int w = grid_strwidth(t->cols[c].title) + (c == t->sort_col ? 1 : 0);
        for (int r = 0; r < t->nrows; r++) {
            int st = ST_NORMAL;
            buf[0] = 0;
            const char *s = t->cell(t->ctx, r, c, buf, sizeof buf, &st);
            int cw = grid_strwidth(s);
            if (cw > w) w = cw;
        }
        if (t->cols[c].max_w > 0 && w > t->cols[c].max_w) w = t->cols[c].max_w;
        if (w < t->cols[c].min_w) w = t->cols[c].min_w;
        widths[c] = w;
    }
    avail -= TABLE_GUTTER;
    int natural[64];
    memcpy(natural, widths, sizeof(int) * (size_t)t->ncols);
    int shown = t->ncols;
    unsigned char hidden[64] = {0};
    for (;;) {
        int total = 0, first = 1;
        for (int c = 0; c < t->ncols; c++) {
            if (hidden[c]) continue;
            total += widths[c] + (first ? 0 : 1);
            first = 0;
        }
        if (total <= avail) break;
        // squeeze the column with the most room above its minimum
        int best = -1, room = 0;
        for (int c = 0; c < t->ncols; c++)
            if (!hidden[c] && widths[c] - t->cols[c].min_w > room) {
                room = widths[c] - t->cols[c].min_w;
                best = c;
            }
        if (best >= 0) {
            widths[best]--;
            continue;
        }
        if (shown <= 1) {
            for (int c = 0; c < t->ncols; c++)
                if (!hidden[c]) widths[c] = avail > 1 ? avail : 1;
            break;
        }
        // even the minimums do not fit: hide one column and fit the rest afresh
        int victim = -1;
        for (int c = 0; c < t->ncols; c++)
            if (!hidden[c] && (victim < 0 || t->cols[c].drop >= t->cols[victim].drop)) victim = c;
        if (victim < 0) break;
        hidden[victim] = 1;
        shown--;
        memcpy(widths, natural, sizeof(int) * (size_t)t->ncols);
    }
    for (int c = 0; c < t->ncols; c++)
        if (hidden[c]) widths[c] = 0;
    return shown;
}

void table_draw(grid_t *g, int x, int y, int w, int h, const table_t *t, table_view_t *v) {
    int widths[64];
    if (t->ncols > 64 || h < 1) return;
    table_fit(t, w, widths);
    v->y = y;
    v->h = h - 1;
    v->nrows = t->nrows;
    for (int c = 0, px = x + TABLE_GUTTER; c < TABLE_MAX_COLS; c++) {
        v->col_x[c] = px;
        v->col_w[c] = c < t->ncols ? widths[c] : 0;
        if (c < t->ncols && widths[c]) px += widths[c] + 1;
    }
    // header
    grid_fill(g, x, y, w, 1, ' ', ST_HEADER);
    int cx = x + TABLE_GUTTER;
    for (int c = 0; c < t->ncols; c++) {
        if (!widths[c]) continue;
        char title[128];
        const char *ind = "";
        if (c == t->sort_col) ind = g->ascii ? (t->sort_desc ? "v" : "^") : (t->sort_desc ? "▼" : "▲");
        snprintf(title, sizeof title, "%s%s", t->cols[c].title, ind);
        if (t->cols[c].right) grid_text_right(g, cx + widths[c], y, widths[c], title, ST_HEADER);
        else grid_text_trunc(g, cx, y, widths[c], title, ST_HEADER);
        cx += widths[c] + 1;
    }
    int rows = h - 1;
    if (t->nrows == 0) {
        v->cursor = v->top = 0;
        return;
    }
    if (v->cursor >= t->nrows) v->cursor = t->nrows - 1;
    if (v->cursor < 0) v->cursor = 0;
    if (v->top > v->cursor) v->top = v->cursor;
    if (rows > 0 && v->cursor >= v->top + rows) v->top = v->cursor - rows + 1;
    if (v->top > t->nrows - rows) v->top = t->nrows - rows;
    if (v->top < 0) v->top = 0;
    for (int i = 0; i < rows && v->top + i < t->nrows; i++) {
        int r = v->top + i, yy = y + 1 + i;
        int cur = r == v->cursor;
        int base = cur ? ST_CURSOR : ST_NORMAL;
        grid_fill(g, x, yy, w, 1, ' ', base);
        if (t->marked && t->marked[r]) grid_put(g, x, yy, g->ascii ? '*' : 0x25CF, cur ? ST_CURSOR : ST_SELECTED);
        if (r == t->pinned_row) grid_put(g, x + 1, yy, g->ascii ? '#' : 0x25C6, cur ? ST_CURSOR : ST_ACCENT);
        cx = x + TABLE_GUTTER;
        for (int c = 0; c < t->ncols; c++) {
            if (!widths[c]) continue;
            if (!(t->draw && t->draw(t->ctx, g, r, c, cx, yy, widths[c], cur))) {
                char buf[256];
                int st = ST_NORMAL;
                buf[0] = 0;
                const char *s = t->cell(t->ctx, r, c, buf, sizeof buf, &st);
                if (cur) st = ST_CURSOR;
                if (t->cols[c].right) grid_text_right(g, cx + widths[c], yy, widths[c], s, st);
                else grid_text_trunc(g, cx, yy, widths[c], s, st);
            }
            cx += widths[c] + 1;
        }
    }
}

int table_hit(const table_view_t *v, int x, int y, int *row, int *col) {
    if (y == v->y) {
        for (int c = 0; c < TABLE_MAX_COLS; c++)
            if (v->col_w[c] && x >= v->col_x[c] && x < v->col_x[c] + v->col_w[c]) {
                *col = c;
                return 1;
            }
        return 0;
    }
    int r = v->top + (y - v->y - 1);
    if (y > v->y && y <= v->y + v->h && r < v->nrows) {
        *row = r;
        return 2;
    }
    return 0;
}

int table_nav(table_view_t *v, int nrows, int page, int key) {
    if (page < 1) page = 1;
    switch (key) {
    case TK_UP: case 'k': v->cursor--; break;
    case TK_DOWN: case 'j': v->cursor++; break;
    case TK_PGUP: v->cursor -= page; break;
    case TK_PGDN: v->cursor += page; break;
    case TK_HOME: case 'g': v->cursor = 0; break;
    case TK_END: case 'G': v->cursor = nrows - 1; break;
    case TK_WHEELUP: v->cursor -= 3; break;
    case TK_WHEELDOWN: v->cursor += 3; break;
    default: return 0;
    }
    if (v->cursor >= nrows) v->cursor = nrows - 1;
    if (v->cursor < 0) v->cursor = 0;
    return 1;
}

// ---- plot ----

void plot_ema(const double *y, int n, double alpha, double *out) {
    if (alpha < 0) alpha = 0;
    if (alpha > 0.999) alpha = 0.999;
    double ema = 0, w = 0, last = NAN;
    for (int i = 0; i < n; i++) {
        if (isfinite(y[i])) {
            ema = alpha * ema + (1 - alpha) * y[i];
            w = alpha * w + (1 - alpha);  // 1 - alpha^(k+1) over the k+1 finite values so far
            last = ema / w;
        }
        out[i] = last;
    }
}

typedef struct {
    grid_t *g;
    int x0, y0, cw, ch;  // canvas in cells
    int ascii;
    uint8_t *dots;       // [ch][cw] braille bits
} canvas_t;

static void canvas_set(canvas_t *c, int px, int py, int style, char letter) {
    // px in [0, cw*sx), py in [0, ch*sy) with py = 0 at the top
    if (c->ascii) {
        if (px < 0 || py < 0 || px >= c->cw || py >= c->ch) return;
        char ch = letter ? letter : (style == ST_DIM ? '.' : '*');
        if (style == ST_DIM) {
            grid_cell_t *cell = grid_at(c->g, c->x0 + px, c->y0 + py);
            if (cell && cell->ch != ' ') return;  // raw points never hide a smoothed curve
        }
        grid_put(c->g, c->x0 + px, c->y0 + py, (uint32_t)ch, style);
        return;
    }
    if (px < 0 || py < 0 || px >= c->cw * 2 || py >= c->ch * 4) return;
    static const uint8_t bits[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};
    int cx = px / 2, cy = py / 4;
    uint8_t *d = &c->dots[cy * c->cw + cx];
    *d |= bits[py % 4][px % 2];
    grid_cell_t *cell = grid_at(c->g, c->x0 + cx, c->y0 + cy);
    if (!cell) return;
    cell->ch = 0x2800 + *d;
    // a raw (dim) curve never takes the colour of a cell that a series already owns
    if (style != ST_DIM || cell->style == ST_NORMAL || cell->style == ST_DIM) cell->style = (uint8_t)style;
}

static void canvas_line(canvas_t *c, int x0, int y0, int x1, int y1, int style, char letter) {
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (int guard = 0; guard < 100000; guard++) {
        canvas_set(c, x0, y0, style, letter);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}

void widget_plot(grid_t *g, int x, int y, int w, int h, const plot_series_t *s, int ns,
                 const plot_opts_t *o) {
    int ascii = o->ascii || g->ascii;
    int top = y;
    if (o->legend) {
        int lx = x, shown = 0;
        for (int i = 0; i < ns; i++) shown += s[i].name && s[i].style != ST_DIM;
        // every series gets a share of the line; long names are truncated; when even the
        // shortest shares do not fit, the legend takes more lines (a 12-run compare)
        int share = shown ? w / shown - 2 : w;
        if (share < 8) share = 8;
        for (int i = 0; i < ns; i++) {
            if (!s[i].name || s[i].style == ST_DIM) continue;
            char item[160];
            snprintf(item, sizeof item, "%c %s", s[i].letter ? s[i].letter : '*', s[i].name);
            int iw = grid_strwidth(item);
            if (iw > share) iw = share;
            if (lx + iw + 1 > x + w) {
                if (lx == x || h < 6) break;
                top++;
                h--;
                lx = x;
            }
            grid_put(g, lx, top, ascii ? '-' : 0x2501, s[i].style);
            grid_text_trunc(g, lx + 1, top, iw, item, s[i].style);
            lx += iw + 3;
        }
        top++;
        h--;
    }
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            double xv = s[i].x[k], yv = s[i].y[k];
            if (!isfinite(xv) || !isfinite(yv) || (o->logy && yv <= 0)) continue;
            if (o->logy) yv = log10(yv);
            if (xv < xmin) xmin = xv;
            if (xv > xmax) xmax = xv;
            if (yv < ymin) ymin = yv;
            if (yv > ymax) ymax = yv;
        }
    int ylw = 7;
    int cw = w - ylw - 1, ch = h - 2;
    if (cw < 4 || ch < 2) return;
    int ax = x + ylw;  // the y axis column
    grid_vline(g, ax, top, ch, ST_DIM);
    grid_put(g, ax, top + ch, ascii ? '+' : 0x2514, ST_DIM);
    grid_hline(g, ax + 1, top + ch, cw, ST_DIM);
    if (!(xmin <= xmax)) {
        grid_text(g, ax + 2, top + ch / 2, cw - 2, "no data yet", ST_DIM);
        return;
    }
    if (xmax == xmin) { xmin -= 0.5; xmax += 0.5; }
    if (ymax == ymin) {
        double pad = o->logy ? 0.05 : (fabs(ymax) > 0 ? fabs(ymax) * 0.05 : 0.5);
        ymin -= pad;
        ymax += pad;
    }
    // y labels: top, middle, bottom
    for (int k = 0; k < 3; k++) {
        int row = k == 0 ? 0 : k == 1 ? (ch - 1) / 2 : ch - 1;
        double frac = 1.0 - (double)row / (ch - 1);
        double v = ymin + frac * (ymax - ymin);
        if (o->logy) v = pow(10, v);
        char lb[32];
        fmt_axis(lb, v);
        grid_text_right(g, ax, top + row, ylw - 1, lb, ST_DIM);
    }
    // x labels: left, right, and the axis name in the middle
    char lb[32];
    fmt_axis(lb, xmin);
    grid_text(g, ax + 1, top + ch + 1, cw, lb, ST_DIM);
    fmt_axis(lb, xmax);
    grid_text_right(g, ax + 1 + cw, top + ch + 1, cw / 3, lb, ST_DIM);
    if (o->xlabel) {
        int lw = grid_strwidth(o->xlabel) + (o->logy ? 8 : 0);
        char name[96];
        snprintf(name, sizeof name, "%s%s", o->xlabel, o->logy ? " (log y)" : "");
        grid_text(g, ax + 1 + (cw - lw) / 2, top + ch + 1, cw / 2, name, ST_DIM);
    }
    canvas_t c = {g, ax + 1, top, cw, ch, ascii, NULL};
    int sxr = ascii ? 1 : 2, syr = ascii ? 1 : 4;
    c.dots = xcalloc((size_t)cw * ch, 1);
    int rx = cw * sxr - 1, ry = ch * syr - 1;
    for (int i = 0; i < ns; i++) {
        int have = 0, px0 = 0, py0 = 0;
        for (int k = 0; k < s[i].n; k++) {
            double xv = s[i].x[k], yv = s[i].y[k];
            if (!isfinite(xv) || !isfinite(yv) || (o->logy && yv <= 0)) continue;
            if (o->logy) yv = log10(yv);
            int px = (int)lround((xv - xmin) / (xmax - xmin) * rx);
            int py = (int)lround((ymax - yv) / (ymax - ymin) * ry);
            char letter = ascii && s[i].style != ST_DIM ? s[i].letter : 0;
            // a raw curve is dots only: joined up, a noisy loss becomes a solid band that
            // hides the smoothed line drawn over it
            if (have && s[i].style != ST_DIM) canvas_line(&c, px0, py0, px, py, s[i].style, letter);
            else canvas_set(&c, px, py, s[i].style, letter);
            px0 = px;
            py0 = py;
            have = 1;
        }
        // the series letter at the curve's end tells curves apart without colour
        if (have && s[i].letter && s[i].style != ST_DIM && !ascii) {
            int cx = px0 / sxr, cy = py0 / syr;
            if (cx < cw - 1) cx++;
            grid_put(g, c.x0 + cx, c.y0 + cy, (uint32_t)s[i].letter, s[i].style);
            c.dots[cy * cw + cx] = 0;
        }
    }
    free(c.dots);
}

// ---- small widgets ----

void widget_sparkline(grid_t *g, int x, int y, int w, const double *v, int n, int style) {
    static const char *ascii_levels = "_.-=+*#";
    if (w <= 0 || n <= 0) return;
    int m = n < w ? n : w;
    double *b = xmalloc((size_t)m * sizeof *b);
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < m; i++) {
        int a = (int)((long)i * n / m), e = (int)((long)(i + 1) * n / m);
        double sum = 0;
        int cnt = 0;
        for (int k = a; k < e; k++)
            if (isfinite(v[k])) { sum += v[k]; cnt++; }
        b[i] = cnt ? sum / cnt : NAN;
        if (cnt) {
            if (b[i] < lo) lo = b[i];
            if (b[i] > hi) hi = b[i];
        }
    }
    for (int i = 0; i < m; i++) {
        if (!isfinite(b[i])) continue;
        double f = hi > lo ? (b[i] - lo) / (hi - lo) : 0.5;
        if (g->ascii) {
            int lvl = (int)lround(f * 6);
            grid_put(g, x + i, y, (uint32_t)ascii_levels[lvl], style);
        } else {
            int lvl = (int)lround(f * 7);
            grid_put(g, x + i, y, 0x2581 + (uint32_t)lvl, style);
        }
    }
    free(b);
}

void widget_progress(grid_t *g, int x, int y, int w, double frac, int style) {
    if (!(frac >= 0)) frac = 0;
    if (frac > 1) frac = 1;
    char pct[16];
    snprintf(pct, sizeof pct, "%3.0f%%", floor(frac * 100));
    int bw = w - 5;
    if (bw < 1) {
        grid_text(g, x, y, w, pct, style);
        return;
    }
    int eighths = (int)floor(frac * bw * 8);
    for (int i = 0; i < bw; i++) {
        int e = eighths - i * 8;
        uint32_t ch;
        if (g->ascii) ch = e >= 4 ? '#' : '.';
        else if (e >= 8) ch = 0x2588;
        else if (e > 0) ch = 0x2590 - (uint32_t)e;  // ▏(U+258F) .. ▉(U+2589)
        else ch = 0x2591;                           // ░ unfilled
        grid_put(g, x + i, y, ch, e > 0 ? style : ST_DIM);
    }
    grid_text(g, x + bw + 1, y, 4, pct, style == ST_CURSOR ? ST_CURSOR : ST_NORMAL);
}

void widget_hbar(grid_t *g, int x, int y, int w, double value, double lo, double hi,
                 double vmin, double vmax, int style) {
    if (w <= 0 || !(vmax > vmin)) return;
    double scale = w / (vmax - vmin);
    if (isfinite(value)) {
        double f = (value - vmin) * scale;
        if (f < 0) f = 0;
        if (f > w) f = w;
        int eighths = (int)floor(f * 8);
        for (int i = 0; i < w; i++) {
            int e = eighths - i * 8;
            if (e <= 0) break;
            uint32_t ch = g->ascii ? (e >= 4 ? '=' : ' ') : e >= 8 ? 0x2588 : 0x2590 - (uint32_t)e;
            grid_put(g, x + i, y, ch, style);
        }
    }
    if (isfinite(lo) && isfinite(hi)) {
        int a = (int)floor((lo - vmin) * scale), b = (int)floor((hi - vmin) * scale);
        if (a < 0) a = 0;
        if (b > w - 1) b = w - 1;
        int vend = isfinite(value) ? (int)floor((value - vmin) * scale) : a;
        for (int i = vend + 1; i < b; i++) grid_put(g, x + i, y, g->ascii ? '-' : 0x2500, ST_DIM);
        if (a <= b) {
            grid_put(g, x + a, y, g->ascii ? '[' : 0x251C, ST_BOLD);
            grid_put(g, x + b, y, g->ascii ? ']' : 0x2524, ST_BOLD);
        }
    }
}

void widget_keybar(grid_t *g, int y, const key_binding_t *const *tables, const int *ns, int ntables) {
    grid_fill(g, 0, y, g->w, 1, ' ', ST_KEYBAR);
    // every key with a bar label is listed: when the labels do not all fit, the screen's
    // keys after the first few show their key alone ("w t m u"); the last table (the keys
    // every screen shares: help, quit) keeps its labels
    int full = 0, bare = 0, shared = 0, nscreen = 0;
    for (int t = 0; t < ntables; t++)
        for (int i = 0; i < ns[t]; i++) {
            const key_binding_t *b = &tables[t][i];
            if (!b->bar) continue;
            int lw = grid_strwidth(b->name) + grid_strwidth(b->bar) + 2, nw = grid_strwidth(b->name) + 1;
            if (t == ntables - 1) shared += lw;
            else {
                full += lw;
                bare += nw;
                nscreen++;
            }
        }
    // the longest prefix of the screen's keys that keeps its labels
    int labelled = nscreen;
    if (full + shared > g->w) {
        int used = 0, k = 0, rest = bare;
        labelled = 0;
        for (int t = 0; t < ntables - 1; t++)
            for (int i = 0; i < ns[t]; i++) {
                const key_binding_t *b = &tables[t][i];
                if (!b->bar) continue;
                int lw = grid_strwidth(b->name) + grid_strwidth(b->bar) + 2, nw = grid_strwidth(b->name) + 1;
                if (k == labelled && used + lw + rest - nw + 1 + shared <= g->w) {
                    used += lw;
                    rest -= nw;
                    labelled++;
                }
                k++;
            }
    }
    int x = 0, k = 0, gap = labelled < nscreen;
    for (int t = 0; t < ntables; t++)
        for (int i = 0; i < ns[t]; i++) {
            const key_binding_t *b = &tables[t][i];
            if (!b->bar) continue;
            int label = t == ntables - 1 || k < labelled;
            int need = grid_strwidth(b->name) + (label ? grid_strwidth(b->bar) + 2 : 1);
            if (t == ntables - 1 && gap) {  // a gap after the bare keys
                x++;
                gap = 0;
            }
            if (x + need > g->w) return;
            x += grid_text(g, x, y, -1, b->name, ST_KEY);
            if (label) x += grid_text(g, x + 1, y, -1, b->bar, ST_KEYBAR) + 2;
            else x++;
            k += t < ntables - 1;
        }
}

void widget_too_small(grid_t *g, int min_w, int min_h) {
    grid_clear(g);
    char line[96];
    snprintf(line, sizeof line, "terminal too small: %dx%d", g->w, g->h);
    int y = g->h / 2 - 1;
    if (y < 0) y = 0;
    grid_text(g, 0, y, g->w, line, ST_BOLD);
    snprintf(line, sizeof line, "lorabench needs at least %dx%d", min_w, min_h);
    grid_text(g, 0, y + 1, g->w, line, ST_NORMAL);
    grid_text(g, 0, y + 2, g->w, "q quits", ST_DIM);
}

// Calls fn for each wrapped line of text at width w: [start, end) byte ranges.
static int wrap_lines(const char *text, int w, void (*fn)(void *, const char *, int), void *ctx) {
    int rows = 0;
    const char *p = text ? text : "";
    if (w < 1) return 0;
    while (*p) {
        // take up to w cells, break at the last space if the line overflows
        const char *q = p, *brk = NULL;
        int n = 0;
        while (*q && *q != '\n' && n < w) {
            if (*q == ' ') brk = q;
            const char *q2 = q;
            int cw = grid_cp_width(grid_utf8_next(&q2));
            if (n + cw > w && n > 0) break;
            q = q2;
            n += cw;
        }
        const char *end = q;
        if (*q && *q != '\n' && *q != ' ' && brk && brk > p) end = brk;
        if (fn) fn(ctx, p, (int)(end - p));
        rows++;
        p = end;
        if (*p == '\n' || *p == ' ') p++;
    }
    return rows;
}

int widget_wrap_rows(const char *text, int w) {
    return wrap_lines(text, w, NULL, NULL);
}

typedef struct {
    grid_t *g;
    int x, y, w, h, skip, style, row;
} wrap_ctx_t;

static void wrap_draw_line(void *p, const char *s, int len) {
    wrap_ctx_t *c = p;
    int r = c->row++ - c->skip;
    if (r < 0 || r >= c->h) return;
    char buf[1024];
    if (len > (int)sizeof buf - 1) len = sizeof buf - 1;
    memcpy(buf, s, (size_t)len);
    buf[len] = 0;
    grid_text(c->g, c->x, c->y + r, c->w, buf, c->style);
}

int widget_wrap(grid_t *g, int x, int y, int w, int h, const char *text, int skip, int style) {
    wrap_ctx_t c = {g, x, y, w, h, skip, style, 0};
    wrap_lines(text, w, wrap_draw_line, &c);
    int used = c.row - skip;
    return used < 0 ? 0 : used > h ? h : used;
}

// ---- form fields ----

int field_height(const form_field_t *f) {
    return f->kind == FIELD_CHECKGRID ? 1 + f->rows : 1;
}

void field_draw(grid_t *g, int x, int y, int labelw, int w, const form_field_t *f, int focused) {
    int lst = f->disabled ? ST_DIM : focused ? ST_BOLD : ST_NORMAL;
    if (f->kind != FIELD_BUTTON) grid_text_trunc(g, x, y, labelw - 1, f->label, lst);
    int vx = x + labelw, vw = w - labelw;
    int vst = f->disabled ? ST_DIM : focused ? ST_CURSOR : ST_ACCENT;
    char buf[300];
    switch (f->kind) {
    case FIELD_TEXT:
    case FIELD_NUMBER: {
        int fw = vw < 2 ? vw : vw - 1;
        grid_fill(g, vx, y, fw, 1, ' ', focused ? ST_CURSOR : ST_NORMAL);
        // show the end of a long value while editing it
        const char *v = f->value;
        int len = grid_strwidth(v);
        while (focused && len > fw - 1 && *v) len -= grid_cp_width(grid_utf8_next(&v));
        // a long value shows its end (a path's folder name), after an ellipsis
        if (focused) grid_text(g, vx, y, fw, v, vst);
        else grid_text_tail(g, vx, y, fw, v, vst);
        if (focused && len < fw) grid_put(g, vx + len, y, '_', ST_CURSOR);
        break;
    }
    case FIELD_CHOICE:
        snprintf(buf, sizeof buf, "%s %s %s", g->ascii ? "<" : "◀",
                 f->nchoices ? f->choices[f->choice] : "", g->ascii ? ">" : "▶");
        grid_text_trunc(g, vx, y, vw, buf, vst);
        break;
    case FIELD_CHECK:
        snprintf(buf, sizeof buf, "[%c]", f->checked ? 'x' : ' ');
        grid_text(g, vx, y, vw, buf, vst);
        break;
    case FIELD_BUTTON:
        snprintf(buf, sizeof buf, "[ %s ]", f->label);
        grid_text(g, vx, y, vw, buf, focused ? ST_CURSOR : ST_BOLD);
        break;
    case FIELD_CHECKGRID: {
        int rlw = 0;
        for (int r = 0; r < f->rows; r++)
            if (grid_strwidth(f->row_names[r]) > rlw) rlw = grid_strwidth(f->row_names[r]);
        rlw++;
        for (int c = 0; c < f->cols; c++) grid_text(g, vx + rlw + c * 6, y, 5, f->col_names[c], ST_DIM);
        for (int r = 0; r < f->rows; r++) {
            grid_text(g, vx, y + 1 + r, rlw, f->row_names[r], ST_DIM);
            for (int c = 0; c < f->cols; c++) {
                int on = (int)((f->bits >> (r * f->cols + c)) & 1);
                int here = focused && r == f->cr && c == f->cc;
                snprintf(buf, sizeof buf, "[%c]", on ? 'x' : ' ');
                grid_text(g, vx + rlw + c * 6, y + 1 + r, 3, buf,
                          f->disabled ? ST_DIM : here ? ST_CURSOR : on ? ST_SELECTED : ST_NORMAL);
            }
        }
        break;
    }
    }
}

int widget_line_edit(char *buf, size_t cap, int *pos_io, int key) {
    char *in = buf;
    size_t len = strlen(in), pos = (size_t)*pos_io <= len ? (size_t)*pos_io : len;
    int rc = 1;
    if (key == TK_LEFT) {
        while (pos > 0 && ((unsigned char)in[--pos] & 0xC0) == 0x80) {}
    } else if (key == TK_RIGHT) {
        if (pos < len) pos++;
        while (pos < len && ((unsigned char)in[pos] & 0xC0) == 0x80) pos++;
    } else if (key == TK_HOME || key == 0x01) {
        pos = 0;
    } else if (key == TK_END || key == 0x05) {
        pos = len;
    } else if (key == 0x15) {
        in[0] = 0;
        pos = 0;
        rc = 2;
    } else if (key == TK_BACKSPACE || key == 8) {
        if (pos > 0) {
            size_t p = pos;
            while (p > 0 && ((unsigned char)in[--p] & 0xC0) == 0x80) {}
            memmove(in + p, in + pos, len - pos + 1);
            pos = p;
            rc = 2;
        }
    } else if (key == TK_DEL) {
        if (pos < len) {
            size_t e = pos + 1;
            while (e < len && ((unsigned char)in[e] & 0xC0) == 0x80) e++;
            memmove(in + pos, in + e, len - e + 1);
            rc = 2;
        }
    } else if (key >= 0x20 && key < TK_UP && key != 0x7f) {
        char enc[4];
        int n = grid_utf8_put((uint32_t)key, enc);
        if (len + (size_t)n < cap) {
            memmove(in + pos + n, in + pos, len - pos + 1);
            memcpy(in + pos, enc, (size_t)n);
            pos += (size_t)n;
            rc = 2;
        }
    } else {
        return 0;
    }
    *pos_io = (int)pos;
    return rc;
}

int field_key(form_field_t *f, int key) {
    if (f->disabled) return 0;
    switch (f->kind) {
    case FIELD_TEXT:
    case FIELD_NUMBER: {
        size_t len = strlen(f->value);
        if (key == 0x15) {  // Ctrl-U clears the field, as in a shell
            if (!len) return 1;
            f->value[0] = 0;
            return 2;
        }
        if (key == TK_BACKSPACE || key == 8) {
            if (!len) return 1;
            // remove one UTF-8 code point
            while (len > 0 && ((unsigned char)f->value[len - 1] & 0xC0) == 0x80) len--;
            if (len > 0) len--;
            f->value[len] = 0;
            return 2;
        }
        if (key < 0x20 || key >= TK_UP || key == 0x7f) return 0;
        if (f->kind == FIELD_NUMBER && !strchr("0123456789.-+eE", key)) return 0;
        char enc[4];
        int n = grid_utf8_put((uint32_t)key, enc);
        if (len + (size_t)n >= sizeof f->value) return 1;
        memcpy(f->value + len, enc, (size_t)n);
        f->value[len + n] = 0;
        return 2;
    }
    case FIELD_CHOICE:
        if (!f->nchoices) return 0;
        if (key == TK_LEFT || key == 'h') f->choice = (f->choice + f->nchoices - 1) % f->nchoices;
        else if (key == TK_RIGHT || key == 'l' || key == ' ') f->choice = (f->choice + 1) % f->nchoices;
        else return 0;
        return 2;
    case FIELD_CHECK:
        if (key != ' ' && key != 'x') return 0;
        f->checked = !f->checked;
        return 2;
    case FIELD_CHECKGRID:
        if (key == TK_LEFT || key == 'h') { if (f->cc > 0) f->cc--; return 1; }
        if (key == TK_RIGHT || key == 'l') { if (f->cc < f->cols - 1) f->cc++; return 1; }
        if (key == TK_UP && f->cr > 0) { f->cr--; return 1; }
        if (key == TK_DOWN && f->cr < f->rows - 1) { f->cr++; return 1; }
        if (key == ' ' || key == 'x') {
            f->bits ^= (uint64_t)1 << (f->cr * f->cols + f->cc);
            return 2;
        }
        return 0;
    case FIELD_BUTTON:
        return 0;
    }
    return 0;
}
