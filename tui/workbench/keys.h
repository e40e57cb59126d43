// Key codes of the workbench, independent of curses so that screens and tests never include
// it: printable keys are their Unicode code point, the rest are TK_* values above Unicode.
// tui/term.c translates curses' codes into these. Key tables (one per screen) map a key to
// an action and a help line; the dispatcher and the help overlay both read them.
#ifndef LB_KEYS_H
#define LB_KEYS_H

enum {
    TK_NONE = 0,
    TK_TAB = 9,
    TK_ENTER = 10,
    TK_ESC = 27,
    TK_BACKSPACE = 127,
    TK_UP = 0x110000,
    TK_DOWN,
    TK_LEFT,
    TK_RIGHT,
    TK_PGUP,
    TK_PGDN,
    TK_HOME,
    TK_END,
    TK_DEL,
    TK_BTAB,
    TK_RESIZE,
    TK_CLICK,      // mouse button 1; the position is in app_t.mouse_x / mouse_y
    TK_WHEELUP,
    TK_WHEELDOWN,
    TK_F1,         // TK_F1 + n - 1 is Fn
    TK_F10 = TK_F1 + 9,
    TK_F12 = TK_F1 + 11,
};

// One binding: the key, a second key doing the same (0 = none), the action number the
// screen understands, the key's name as shown in help and in the bar, a help line, and
// whether it appears in the function-key bar.
typedef struct {
    int key, alt;
    int action;
    const char *name;
    const char *help;
    const char *bar;   // label in the function-key bar, NULL = not shown there
} key_binding_t;

// Finds the binding of key in a table of n; NULL if none.
static inline const key_binding_t *keys_find(const key_binding_t *t, int n, int key) {
    for (int i = 0; i < n; i++)
        if (t[i].key == key || (t[i].alt && t[i].alt == key)) return &t[i];
    return 0;
}

#endif
