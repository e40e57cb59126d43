// The in-memory cell grid every screen draws into. One cell holds one Unicode code point
// and one semantic style; a wide character (CJK, emoji: store_cp_cols 2) takes its cell and
// the next, which holds GRID_WIDE_CONT; tui/term.c alone turns styles into colours
// or attributes and copies the grid to ncurses, so screens are testable without a terminal
// (grid_dump_text / grid_dump_styles give the golden-file form).
#ifndef LB_GRID_H
#define LB_GRID_H

#include <stdint.h>

// Semantic styles. The character after each name is its letter in golden files.
typedef enum {
    ST_NORMAL = 0,  // '.'
    ST_DIM,         // 'd'  secondary text, axes, raw curves
    ST_BOLD,        // 'b'  emphasis
    ST_TITLE,       // 'T'  screen title line
    ST_HEADER,      // 'H'  table header
    ST_CURSOR,      // 'C'  the row or field under the cursor
    ST_SELECTED,    // 'S'  multi-selected rows / checked marks
    ST_GOOD,        // 'g'  better than baseline, done
    ST_BAD,         // 'r'  worse than baseline, failed
    ST_WARN,        // 'y'  running, warnings
    ST_ACCENT,      // 'a'  pinned baseline, links, values being edited
    ST_KEY,         // 'K'  key name in the function-key bar
    ST_KEYBAR,      // 'k'  key label in the function-key bar
    ST_BAR,         // 'B'  progress and value bars
    ST_ERROR,       // 'E'  error messages
    ST_SERIES0,     // '0'..'5'  one per plotted series
    ST_SERIES1,
    ST_SERIES2,
    ST_SERIES3,
    ST_SERIES4,
    ST_SERIES5,
    ST_COUNT
} grid_style_t;

#define GRID_NSERIES 6

// The right half of a wide character (not a code point any text holds).
#define GRID_WIDE_CONT 0u

typedef struct {
    uint32_t ch;    // Unicode code point; ' ' when empty; GRID_WIDE_CONT: see above
    uint8_t style;  // grid_style_t
} grid_cell_t;

typedef struct {
    int w, h;
    grid_cell_t *cells;  // [h][w]
    int ascii;           // 1: draw only ASCII (no braille, box drawing or ellipsis)
} grid_t;

// Allocates a w×h grid filled with blanks.
grid_t *grid_new(int w, int h, int ascii);
void grid_free(grid_t *g);
// Changes the size (contents are cleared).
void grid_resize(grid_t *g, int w, int h);
// Fills every cell with a blank in ST_NORMAL.
void grid_clear(grid_t *g);

// The cell at (x, y), or NULL outside the grid.
grid_cell_t *grid_at(grid_t *g, int x, int y);
// Sets one cell (clipped silently outside the grid).
void grid_put(grid_t *g, int x, int y, uint32_t ch, int style);
// Changes the style of w cells from (x, y), keeping their characters.
void grid_restyle(grid_t *g, int x, int y, int w, int style);
// Fills a rectangle with ch in style.
void grid_fill(grid_t *g, int x, int y, int w, int h, uint32_t ch, int style);

// Writes UTF-8 text from (x, y), at most maxw cells (maxw < 0: to the grid's edge);
// newlines and control characters become spaces. Returns the cells written.
int grid_text(grid_t *g, int x, int y, int maxw, const char *s, int style);
// As grid_text, but text longer than maxw ends in an ellipsis ('~' in ASCII mode).
int grid_text_trunc(grid_t *g, int x, int y, int maxw, const char *s, int style);
// As grid_text_trunc, but keeps the end of the text after a leading ellipsis (for paths,
// whose last folder names matter most).
int grid_text_tail(grid_t *g, int x, int y, int maxw, const char *s, int style);
// printf-style text, truncated with an ellipsis at maxw.
int grid_textf(grid_t *g, int x, int y, int maxw, int style, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
// Draws text right-aligned so that it ends just before column xend.
int grid_text_right(grid_t *g, int xend, int y, int maxw, const char *s, int style);

// A horizontal line of w cells (─ or -).
void grid_hline(grid_t *g, int x, int y, int w, int style);
// A vertical line of h cells (│ or |).
void grid_vline(grid_t *g, int x, int y, int h, int style);
// A box outline with an optional title on its top edge.
void grid_box(grid_t *g, int x, int y, int w, int h, const char *title, int style);

// Cells a UTF-8 string takes (store_text_cols: wide characters two, combining marks none).
int grid_strwidth(const char *s);
// Cells one code point takes (store_cp_cols; a control character is one blank).
int grid_cp_width(uint32_t cp);
// 1 when cell (x, y) holds the left half of a wide character.
int grid_cell_is_wide(const grid_t *g, int x, int y);
// Decodes one UTF-8 code point at *s, advancing *s; invalid bytes give U+FFFD ('?' in ASCII).
uint32_t grid_utf8_next(const char **s);
// Encodes a code point as UTF-8 into out (4 bytes at most); returns the byte count.
int grid_utf8_put(uint32_t cp, char *out);

// The grid's text, one line per row with trailing blanks removed, each ending in '\n'.
// The caller frees it.
char *grid_dump_text(const grid_t *g);
// The styles, one letter per cell (see grid_style_t), one line per row, trailing '.' kept
// so that columns line up. The caller frees it.
char *grid_dump_styles(const grid_t *g);

#endif
