// The one module that owns the terminal: curses set-up and teardown (also on a fatal
// signal), colours or (NO_COLOR, TERM=dumb, monochrome terminals) attributes for the
// grid's styles, key reading with a timeout, mouse, and copying a grid to the screen.
#ifndef LB_TERM_H
#define LB_TERM_H

#include "grid.h"

typedef struct {
    int utf8;      // the locale is UTF-8: braille and box drawing are usable
    int color;     // colours in use (else attributes only)
    int mouse;     // mouse reporting enabled
} term_info_t;

// Starts curses on the controlling terminal; returns -1 (with a message on stderr) when
// there is no usable terminal.
int term_start(term_info_t *info);
// Restores the terminal (safe to call twice).
void term_stop(void);
// The terminal's size now.
void term_size(int *w, int *h);
// Copies the grid to the screen and refreshes.
void term_present(const grid_t *g);
// Waits up to timeout_ms for a key; returns a TK_* / code point, or TK_NONE on timeout.
// Mouse events give TK_CLICK (position in *mx, *my) or TK_WHEELUP / TK_WHEELDOWN.
int term_read_key(int timeout_ms, int *mx, int *my);

#endif
