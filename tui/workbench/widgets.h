// Widgets that draw into a grid_t: a table with sortable, fitted and truncated columns and
// selection; a braille line plot (ASCII fallback); sparklines; horizontal bars with interval
// whiskers; progress bars; form fields; the function-key bar; the "too small" notice; and
// the number formatting every screen shares. None touches the terminal.
#ifndef LB_WIDGETS_H
#define LB_WIDGETS_H

#include <stddef.h>
#include <stdint.h>

#include "grid.h"
#include "keys.h"

// ---- number formatting (buf of at least 32 bytes; each returns buf) ----

// 344064 -> "344,064"
char *fmt_int(char *buf, int64_t v);
// 344064 -> "344k", 76961152 -> "77.0M"
char *fmt_count(char *buf, double v);
// bytes -> "1.3 MB" (powers of 1024, "B", "KB", "MB", "GB")
char *fmt_bytes(char *buf, double bytes);
// seconds -> "42s", "3m05s", "1h02m", "2d03h"; negative or NaN -> "-"
char *fmt_duration(char *buf, double s);
// v with prec decimals, or "-" for NaN
char *fmt_num(char *buf, double v, int prec);

// ---- table ----

typedef struct {
    const char *title;
    int min_w;    // narrowest it may be squeezed to (truncating with an ellipsis)
    int max_w;    // widest it grows to (0 = as wide as its content)
    int right;    // 1: right-aligned (numbers)
    int drop;     // when even minimum widths do not fit, the highest drop is hidden first
                  // (0 = never hidden while another can be)
} table_col_t;

typedef struct table table_t;
struct table {
    int nrows, ncols;
    const table_col_t *cols;
    // The text of a cell (written into buf or returned as a constant) and its style
    // (*style starts as ST_NORMAL).
    const char *(*cell)(void *ctx, int row, int col, char *buf, size_t cap, int *style);
    // Optional: draws a cell itself (progress bars, sparklines); returns 1 when it did.
    int (*draw)(void *ctx, grid_t *g, int row, int col, int x, int y, int w, int cursor);
    void *ctx;
    int sort_col;                 // -1: none
    int sort_desc;
    const unsigned char *marked;  // per row, 1 = multi-selected; NULL = none
    int pinned_row;               // -1: none
};

// Scroll state of a table kept by its screen, and where table_draw last put it (for clicks).
#define TABLE_MAX_COLS 32
typedef struct {
    int cursor, top;
    int y, h, nrows;                                 // header row, rows drawn below it
    int col_x[TABLE_MAX_COLS], col_w[TABLE_MAX_COLS]; // 0 wide: hidden
} table_view_t;

// Fits the columns into avail cells (after the two-cell gutter for marks): natural widths
// from titles and contents, the widest squeezed first down to min_w, then columns hidden in
// order of their drop value (rightmost first among equals). Fills widths[ncols]
// (0 = hidden); returns the number shown.
int table_fit(const table_t *t, int avail, int *widths);
// Draws the header and as many rows as fit into w×h, keeping the cursor visible.
void table_draw(grid_t *g, int x, int y, int w, int h, const table_t *t, table_view_t *v);
// What a click at (x, y) hit in the table as last drawn: 1 and *col for a header title,
// 2 and *row for a row, 0 for nothing.
int table_hit(const table_view_t *v, int x, int y, int *row, int *col);
// Moves the cursor for a navigation key (arrows, j/k, PgUp/PgDn, Home/End, g/G); page is
// the number of visible rows. Returns 1 when the key was a navigation key.
int table_nav(table_view_t *v, int nrows, int page, int key);

// ---- plot ----

typedef struct {
    const char *name;
    const double *x, *y;
    int n;
    int style;    // ST_SERIES0.., or ST_DIM for a raw curve under its smoothed one
    char letter;  // drawn at the curve's right end and in the legend (0 = none)
} plot_series_t;

typedef struct {
    int logy;
    int ascii;           // 1: letters on a character grid instead of braille dots
    int legend;          // 1: a legend line on top
    const char *xlabel;  // under the x axis, e.g. "step"
} plot_opts_t;

// Debiased exponential moving average (as TensorBoard): alpha in [0, 0.999];
// out[i] = ema_i / (1 - alpha^(i+1)); alpha 0 copies y. Non-finite values are skipped
// (their output repeats the previous value).
void plot_ema(const double *y, int n, double alpha, double *out);
// Draws the series into w×h cells with axes and labels; series with n = 0 are skipped.
void widget_plot(grid_t *g, int x, int y, int w, int h, const plot_series_t *s, int ns,
                 const plot_opts_t *o);

// ---- small widgets ----

// A sparkline of n values in w cells (▁..█, or ASCII levels); buckets are averaged when
// n > w. Non-finite values are ignored.
void widget_sparkline(grid_t *g, int x, int y, int w, const double *v, int n, int style);
// A progress bar of w cells with the percentage at its right end.
void widget_progress(grid_t *g, int x, int y, int w, double frac, int style);
// A horizontal bar for value on the scale [vmin, vmax] in w cells, with whiskers from lo to
// hi (pass NaN to omit them).
void widget_hbar(grid_t *g, int x, int y, int w, double value, double lo, double hi,
                 double vmin, double vmax, int style);
// The function-key bar on row y: "F1Help  F10Quit ..." from the bindings that have a bar
// label.
void widget_keybar(grid_t *g, int y, const key_binding_t *const *tables, const int *ns, int ntables);
// The notice shown below the minimum size.
void widget_too_small(grid_t *g, int min_w, int min_h);
// Word-wraps text into w×h cells; returns the rows used. skip rows are skipped first
// (for scrolling).
int widget_wrap(grid_t *g, int x, int y, int w, int h, const char *text, int skip, int style);
// Rows that widget_wrap would need for text at width w.
int widget_wrap_rows(const char *text, int w);

// ---- form fields ----

typedef enum { FIELD_TEXT, FIELD_NUMBER, FIELD_CHOICE, FIELD_CHECK, FIELD_CHECKGRID, FIELD_BUTTON } field_kind_t;

#define FIELD_MAX_ROWS 6
#define FIELD_MAX_COLS 8

typedef struct {
    field_kind_t kind;
    const char *label;
    const char *hint;           // one line shown when focused
    char value[1024];           // TEXT and NUMBER: the text being edited (paths)
    const char *const *choices; // CHOICE
    int nchoices, choice;
    int checked;                // CHECK
    // CHECKGRID: rows × cols boxes, bit (r*cols + c) of bits; cursor at (cr, cc)
    const char *const *row_names;
    const char *const *col_names;
    int rows, cols, cr, cc;
    uint64_t bits;
    int disabled;               // shown dim and skipped by focus
} form_field_t;

// Rows a field takes (CHECKGRID: a header and one per row).
int field_height(const form_field_t *f);
// Draws a field: label in labelw cells, value after it, in w cells in total.
void field_draw(grid_t *g, int x, int y, int labelw, int w, const form_field_t *f, int focused);
// Edits a field with a key: 0 = not used, 1 = used, 2 = used and the value changed.
int field_key(form_field_t *f, int key);

// A one-line UTF-8 editor over buf (cap bytes) with the cursor at byte *pos: printable keys
// type, Backspace/Del delete a character, Left/Right move by one, Home/End (Ctrl-A/Ctrl-E),
// Ctrl-U clears. Returns 0 for a key it does not handle, 1 when the cursor moved, 2 when
// the text changed.
int widget_line_edit(char *buf, size_t cap, int *pos, int key);

#endif
