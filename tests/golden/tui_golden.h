// Golden files for the workbench's grid tests: tests/golden/<name>.txt holds the grid's
// text, a separator line, then one style letter per cell (grid.h lists the letters).
// LB_UPDATE_GOLDEN=1 rewrites them; otherwise a mismatch fails the test, prints the first
// differing line and leaves the actual grid in build/golden-actual/<name>.txt for a diff.
#ifndef LB_TUI_GOLDEN_H
#define LB_TUI_GOLDEN_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "grid.h"
#include "../harness.h"

static char *tui_golden_render(const grid_t *g) {
    char *t = grid_dump_text(g), *s = grid_dump_styles(g);
    size_t n = strlen(t) + strlen(s) + 64;
    char *out = malloc(n);
    snprintf(out, n, "%s-- styles %dx%d --\n%s", t, g->w, g->h, s);
    free(t);
    free(s);
    return out;
}

static char *tui_golden_slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = 0;
    fclose(f);
    return b;
}

static void tui_golden_write(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "    cannot write %s: %s\n", path, strerror(errno));
        th_expect_failed++;
        return;
    }
    fputs(text, f);
    fclose(f);
}

static void tui_expect_golden(const char *name, const grid_t *g) {
    char path[512];
    snprintf(path, sizeof path, "tests/golden/%s.txt", name);
    char *actual = tui_golden_render(g);
    const char *upd = getenv("LB_UPDATE_GOLDEN");
    if (upd && *upd && strcmp(upd, "0")) {
        tui_golden_write(path, actual);
        free(actual);
        return;
    }
    char *want = tui_golden_slurp(path);
    if (!want || strcmp(want, actual)) {
        th_expect_failed++;
        if (!want) {
            fprintf(stderr, "    golden %s is missing; run with LB_UPDATE_GOLDEN=1 to create it\n", path);
        } else {
            const char *a = actual, *w = want;
            int line = 1;
            while (*a && *a == *w) {
                if (*a == '\n') line++;
                a++;
                w++;
            }
            const char *ae = strchr(a, '\n'), *we = strchr(w, '\n');
            fprintf(stderr, "    golden %s differs at line %d:\n      want: %.*s\n      got:  %.*s\n", path, line,
                    we ? (int)(we - w) : (int)strlen(w), w, ae ? (int)(ae - a) : (int)strlen(a), a);
        }
        mkdir("build", 0755);
        mkdir("build/golden-actual", 0755);
        snprintf(path, sizeof path, "build/golden-actual/%s.txt", name);
        tui_golden_write(path, actual);
        fprintf(stderr, "      actual grid written to %s\n", path);
    }
    free(want);
    free(actual);
}

#endif
