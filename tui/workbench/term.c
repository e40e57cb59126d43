// The terminal: see term.h. The only file that includes curses.
#include "term.h"

#include <curses.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "keys.h"

static int term_on;        // curses is active (restored by term_stop / the signal handler)
static int term_color;
static attr_t style_attr[ST_COUNT];

static void on_fatal(int sig) {
    if (term_on) endwin();
    term_on = 0;
    signal(sig, SIG_DFL);
    raise(sig);
}

// Styles as colour pairs, or as attributes alone when colours are off: the same
// information (cursor, selection, good/bad) must survive a monochrome terminal.
static void setup_styles(void) {
    static const struct { int fg, bg; attr_t attr, mono; } map[ST_COUNT] = {
        [ST_NORMAL] = {-1, -1, A_NORMAL, A_NORMAL},
        [ST_DIM] = {-1, -1, A_DIM, A_DIM},
        [ST_BOLD] = {-1, -1, A_BOLD, A_BOLD},
        [ST_TITLE] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL, A_REVERSE},
        [ST_HEADER] = {COLOR_BLACK, COLOR_GREEN, A_NORMAL, A_BOLD | A_UNDERLINE},
        [ST_CURSOR] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL, A_REVERSE},
        [ST_SELECTED] = {COLOR_YELLOW, -1, A_BOLD, A_BOLD},
        [ST_GOOD] = {COLOR_GREEN, -1, A_NORMAL, A_NORMAL},
        [ST_BAD] = {COLOR_RED, -1, A_NORMAL, A_NORMAL},
        [ST_WARN] = {COLOR_YELLOW, -1, A_NORMAL, A_BOLD},
        [ST_ACCENT] = {COLOR_CYAN, -1, A_NORMAL, A_UNDERLINE},
        [ST_KEY] = {-1, -1, A_BOLD, A_BOLD},
        [ST_KEYBAR] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL, A_REVERSE},
        [ST_BAR] = {COLOR_BLUE, -1, A_NORMAL, A_NORMAL},
        [ST_ERROR] = {COLOR_WHITE, COLOR_RED, A_BOLD, A_REVERSE | A_BOLD},
        [ST_SERIES0] = {COLOR_CYAN, -1, A_NORMAL, A_NORMAL},
        [ST_SERIES1] = {COLOR_MAGENTA, -1, A_NORMAL, A_NORMAL},
        [ST_SERIES2] = {COLOR_YELLOW, -1, A_NORMAL, A_NORMAL},
        [ST_SERIES3] = {COLOR_GREEN, -1, A_NORMAL, A_NORMAL},
        [ST_SERIES4] = {COLOR_RED, -1, A_NORMAL, A_NORMAL},
        [ST_SERIES5] = {COLOR_BLUE, -1, A_NORMAL, A_NORMAL},
    };
    for (int s = 0; s < ST_COUNT; s++) {
        if (term_color) {
            init_pair((short)(s + 1), (short)map[s].fg, (short)map[s].bg);
            style_attr[s] = COLOR_PAIR(s + 1) | map[s].attr;
        } else {
            style_attr[s] = map[s].mono;
        }
    }
}

int term_start(term_info_t *info) {
    memset(info, 0, sizeof *info);
    setlocale(LC_ALL, "");
    info->utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
    const char *term = getenv("TERM");
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "lorabench: the workbench needs a terminal; run it interactively or use a subcommand (lorabench --help)\n");
        return -1;
    }
    if (!newterm(NULL, stdout, stdin)) {
        fprintf(stderr, "lorabench: cannot start the terminal (TERM=%s); set TERM to your terminal's type\n",
                term ? term : "");
        return -1;
    }
    term_on = 1;
    signal(SIGSEGV, on_fatal);
    signal(SIGABRT, on_fatal);
    signal(SIGBUS, on_fatal);
    signal(SIGFPE, on_fatal);
    cbreak();
    // Ctrl-S starts a run from the form: the terminal must not take it as XOFF
    struct termios tio;
    if (!tcgetattr(STDIN_FILENO, &tio)) {
        tio.c_iflag &= ~(tcflag_t)IXON;
        tcsetattr(STDIN_FILENO, TCSANOW, &tio);
        def_prog_mode();
    }
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    curs_set(0);
    set_escdelay(25);
    int dumb = !term || !strcmp(term, "dumb");
    const char *nc = getenv("NO_COLOR");
    term_color = has_colors() && !dumb && !(nc && *nc);
    if (term_color) {
        start_color();
        use_default_colors();
    }
    setup_styles();
    info->color = term_color;
    if (!dumb && mousemask(BUTTON1_CLICKED | BUTTON1_PRESSED | BUTTON4_PRESSED
#ifdef BUTTON5_PRESSED
                               | BUTTON5_PRESSED
#endif
                           , NULL))
        info->mouse = 1;
    mouseinterval(0);
    return 0;
}

void term_stop(void) {
    if (!term_on) return;
    endwin();
    term_on = 0;
}

void term_size(int *w, int *h) {
    int y, x;
    getmaxyx(stdscr, y, x);
    *w = x;
    *h = y;
}

void term_present(const grid_t *g) {
    int H, W;
    getmaxyx(stdscr, H, W);
    for (int y = 0; y < g->h && y < H; y++) {
        for (int x = 0; x < g->w && x < W; x++) {
            const grid_cell_t *c = &g->cells[(size_t)y * g->w + x];
            // the bottom-right cell would scroll some terminals: leave it alone
            if (y == H - 1 && x == W - 1) break;
            // the right half of a wide character: ncurses drew it with its left half
            if (c->ch == GRID_WIDE_CONT && grid_cell_is_wide(g, x - 1, y)) continue;
            if (grid_cell_is_wide(g, x, y) && x + 1 >= W) break;  // would wrap
            wchar_t wc[2] = {(wchar_t)(c->ch == GRID_WIDE_CONT ? ' ' : c->ch), 0};
            cchar_t cc;
            attr_t at = style_attr[c->style < ST_COUNT ? c->style : 0];
            setcchar(&cc, wc, at & ~A_COLOR, (short)PAIR_NUMBER(at), NULL);
            mvadd_wch(y, x, &cc);
        }
    }
    wnoutrefresh(stdscr);
    doupdate();
}

int term_read_key(int timeout_ms, int *mx, int *my) {
    timeout(timeout_ms);
    wint_t ch;
    int r = get_wch(&ch);
    if (r == ERR) return TK_NONE;
    if (r == OK) {
        if (ch == '\r' || ch == '\n') return TK_ENTER;
        if (ch == 8 || ch == 127) return TK_BACKSPACE;
        return (int)ch;
    }
    switch (ch) {
    case KEY_UP: return TK_UP;
    case KEY_DOWN: return TK_DOWN;
    case KEY_LEFT: return TK_LEFT;
    case KEY_RIGHT: return TK_RIGHT;
    case KEY_PPAGE: return TK_PGUP;
    case KEY_NPAGE: return TK_PGDN;
    case KEY_HOME: return TK_HOME;
    case KEY_END: return TK_END;
    case KEY_DC: return TK_DEL;
    case KEY_BTAB: return TK_BTAB;
    case KEY_ENTER: return TK_ENTER;
    case KEY_BACKSPACE: return TK_BACKSPACE;
    case KEY_RESIZE: return TK_RESIZE;
    case KEY_MOUSE: {
        MEVENT ev;
        if (getmouse(&ev) != OK) return TK_NONE;
        if (ev.bstate & BUTTON4_PRESSED) return TK_WHEELUP;
#ifdef BUTTON5_PRESSED
        if (ev.bstate & BUTTON5_PRESSED) return TK_WHEELDOWN;
#endif
        *mx = ev.x;
        *my = ev.y;
        return TK_CLICK;
    }
    default:
        if (ch >= KEY_F(1) && ch <= KEY_F(12)) return TK_F1 + (int)(ch - KEY_F(1));
        return TK_NONE;
    }
}
