// The cell grid: see grid.h.
#include "grid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

grid_t *grid_new(int w, int h, int ascii) {
    grid_t *g = xcalloc(1, sizeof *g);
    g->ascii = ascii;
    grid_resize(g, w, h);
    return g;
}

void grid_free(grid_t *g) {
    if (!g) return;
    free(g->cells);
    free(g);
}

void grid_resize(grid_t *g, int w, int h) {
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    free(g->cells);
    g->w = w;
    g->h = h;
    g->cells = xcalloc((size_t)w * (size_t)h, sizeof *g->cells);
    grid_clear(g);
}

void grid_clear(grid_t *g) {
    for (int i = 0; i < g->w * g->h; i++) {
        g->cells[i].ch = ' ';
        g->cells[i].style = ST_NORMAL;
    }
}

grid_cell_t *grid_at(grid_t *g, int x, int y) {
    if (x < 0 || y < 0 || x >= g->w || y >= g->h) return NULL;
    return &g->cells[(size_t)y * (size_t)g->w + (size_t)x];
}

// Characters outside ASCII are replaced in ASCII mode so that a test or a dumb terminal
// never sees them; screens normally pick ASCII alternatives themselves.
static uint32_t ascii_fold(const grid_t *g, uint32_t ch) {
    if (!g->ascii || ch < 0x80) return ch;
    switch (ch) {
    case 0x2500: case 0x2501: return '-';
    case 0x2502: case 0x2503: return '|';
    case 0x2026: return '~';
    case 0x2212: return '-';
    case 0x00D7: return 'x';
    case 0x00B7: return '.';
    case 0x0394: return 'D';
    default: return '?';
    }
}

void grid_put(grid_t *g, int x, int y, uint32_t ch, int style) {
    grid_cell_t *c = grid_at(g, x, y);
    if (!c) return;
    if (ch == GRID_WIDE_CONT) {
        c->ch = ch;
        c->style = (uint8_t)style;
        return;
    }
    if (ch < 0x20 || ch == 0x7f) ch = ' ';
    c->ch = ascii_fold(g, ch);
    c->style = (uint8_t)style;
}

int grid_cell_is_wide(const grid_t *g, int x, int y) {
    if (x < 0 || y < 0 || x >= g->w || y >= g->h) return 0;
    uint32_t ch = g->cells[(size_t)y * g->w + x].ch;
    return ch != GRID_WIDE_CONT && grid_cp_width(ch) == 2;
}

void grid_restyle(grid_t *g, int x, int y, int w, int style) {
    for (int i = 0; i < w; i++) {
        grid_cell_t *c = grid_at(g, x + i, y);
        if (c) c->style = (uint8_t)style;
    }
}

void grid_fill(grid_t *g, int x, int y, int w, int h, uint32_t ch, int style) {
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) grid_put(g, x + i, y + j, ch, style);
}

uint32_t grid_utf8_next(const char **sp) {
    const unsigned char *s = (const unsigned char *)*sp;
    uint32_t c = s[0];
    int n = 0;
    if (c < 0x80) n = 0;
    else if ((c & 0xE0) == 0xC0) { c &= 0x1F; n = 1; }
    else if ((c & 0xF0) == 0xE0) { c &= 0x0F; n = 2; }
    else if ((c & 0xF8) == 0xF0) { c &= 0x07; n = 3; }
    else { *sp += 1; return 0xFFFD; }
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) { *sp += i; return 0xFFFD; }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *sp += n + 1;
    return c;
}

int grid_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int grid_strwidth(const char *s) { return store_text_cols(s); }

int grid_cp_width(uint32_t cp) { return cp < 0x20 || cp == 0x7f ? 1 : store_cp_cols(cp); }

int grid_text(grid_t *g, int x, int y, int maxw, const char *s, int style) {
    if (!s) return 0;
    if (maxw < 0) maxw = g->w - x;
    int n = 0;
    while (*s && n < maxw) {
        uint32_t c = grid_utf8_next(&s);
        int w = grid_cp_width(c);
        if (w == 0) continue;  // a combining mark: the cell keeps its base character
        if (n + w > maxw) {  // half a wide character does not fit: a blank instead
            grid_put(g, x + n, y, ' ', style);
            n++;
            break;
        }
        grid_put(g, x + n, y, c, style);
        if (w == 2) grid_put(g, x + n + 1, y, GRID_WIDE_CONT, style);
        n += w;
    }
    return n;
}

int grid_text_trunc(grid_t *g, int x, int y, int maxw, const char *s, int style) {
    if (!s || maxw <= 0) return 0;
    int w = grid_strwidth(s);
    if (w <= maxw) return grid_text(g, x, y, maxw, s, style);
    int n = grid_text(g, x, y, maxw - 1, s, style);
    grid_put(g, x + n, y, g->ascii ? '~' : 0x2026, style);
    return n + 1;
}

int grid_text_tail(grid_t *g, int x, int y, int maxw, const char *s, int style) {
    if (!s || maxw <= 0) return 0;
    int w = grid_strwidth(s);
    if (w <= maxw) return grid_text(g, x, y, maxw, s, style);
    while (*s && w > maxw - 1) w -= grid_cp_width(grid_utf8_next(&s));
    grid_put(g, x, y, g->ascii ? '~' : 0x2026, style);
    return 1 + grid_text(g, x + 1, y, maxw - 1, s, style);
}

int grid_textf(grid_t *g, int x, int y, int maxw, int style, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (maxw < 0) maxw = g->w - x;
    return grid_text_trunc(g, x, y, maxw, buf, style);
}

int grid_text_right(grid_t *g, int xend, int y, int maxw, const char *s, int style) {
    int w = grid_strwidth(s);
    if (w > maxw) return grid_text_trunc(g, xend - maxw, y, maxw, s, style);
    return grid_text(g, xend - w, y, w, s, style);
}

void grid_hline(grid_t *g, int x, int y, int w, int style) {
    for (int i = 0; i < w; i++) grid_put(g, x + i, y, g->ascii ? '-' : 0x2500, style);
}

void grid_vline(grid_t *g, int x, int y, int h, int style) {
    for (int j = 0; j < h; j++) grid_put(g, x, y + j, g->ascii ? '|' : 0x2502, style);
}

void grid_box(grid_t *g, int x, int y, int w, int h, const char *title, int style) {
    if (w < 2 || h < 2) return;
    grid_hline(g, x + 1, y, w - 2, style);
    grid_hline(g, x + 1, y + h - 1, w - 2, style);
    grid_vline(g, x, y + 1, h - 2, style);
    grid_vline(g, x + w - 1, y + 1, h - 2, style);
    grid_put(g, x, y, g->ascii ? '+' : 0x250C, style);
    grid_put(g, x + w - 1, y, g->ascii ? '+' : 0x2510, style);
    grid_put(g, x, y + h - 1, g->ascii ? '+' : 0x2514, style);
    grid_put(g, x + w - 1, y + h - 1, g->ascii ? '+' : 0x2518, style);
    if (title && *title && w > 6) {
        grid_put(g, x + 1, y, ' ', style);
        int n = grid_text_trunc(g, x + 2, y, w - 5, title, ST_BOLD);
        grid_put(g, x + 2 + n, y, ' ', style);
    }
}

// The golden letter of a style.
static char grid_style_letter(int style) {
    static const char letters[ST_COUNT + 1] = ".dbTHCSgryaKkBE012345";
    if (style < 0 || style >= ST_COUNT) return '?';
    return letters[style];
}

char *grid_dump_text(const grid_t *g) {
    size_t cap = (size_t)g->w * (size_t)g->h * 4 + (size_t)g->h + 1, len = 0;
    char *out = xmalloc(cap);
    for (int y = 0; y < g->h; y++) {
        int last = g->w - 1;
        while (last >= 0 && g->cells[(size_t)y * g->w + last].ch == ' ') last--;
        for (int x = 0; x <= last; x++) {
            uint32_t ch = g->cells[(size_t)y * g->w + x].ch;
            if (ch == GRID_WIDE_CONT) {
                if (grid_cell_is_wide(g, x - 1, y)) continue;  // the right half of a wide character
                ch = ' ';
            }
            len += grid_utf8_put(ch, out + len);
        }
        out[len++] = '\n';
    }
    out[len] = 0;
    return out;
}

char *grid_dump_styles(const grid_t *g) {
    size_t len = 0;
    char *out = xmalloc((size_t)(g->w + 1) * (size_t)g->h + 1);
    for (int y = 0; y < g->h; y++) {
        for (int x = 0; x < g->w; x++) out[len++] = grid_style_letter(g->cells[(size_t)y * g->w + x].style);
        out[len++] = '\n';
    }
    out[len] = 0;
    return out;
}
