// The grid, the widgets and the new-run arithmetic, without a terminal or a store.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app_params.h"
#include "grid.h"
#include "harness.h"
#include "golden/tui_golden.h"
#include "widgets.h"

static void test_grid_utf8_and_dump(void) {
    grid_t *g = grid_new(10, 2, 0);
    EXPECT(grid_strwidth("héllo…") == 6);
    int n = grid_text(g, 1, 0, -1, "héllo wörld", ST_BOLD);
    EXPECT(n == 9);  // clipped at the right edge
    grid_put(g, 0, 1, 0x2800 + 0xFF, ST_SERIES1);
    char *t = grid_dump_text(g), *s = grid_dump_styles(g);
    EXPECTF(!strcmp(t, " héllo wör\n⣿\n"), "%s", t);
    EXPECTF(!strcmp(s, ".bbbbbbbbb\n1.........\n"), "%s", s);
    free(t);
    free(s);
    // truncation keeps the width and ends in an ellipsis; ASCII mode uses '~'
    grid_clear(g);
    EXPECT(grid_text_trunc(g, 0, 0, 5, "abcdefgh", ST_NORMAL) == 5);
    t = grid_dump_text(g);
    EXPECTF(!strncmp(t, "abcd…\n", 7), "%s", t);
    free(t);
    g->ascii = 1;
    grid_clear(g);
    grid_text_trunc(g, 0, 0, 5, "abcdefgh", ST_NORMAL);
    grid_hline(g, 0, 1, 3, ST_DIM);
    t = grid_dump_text(g);
    EXPECTF(!strcmp(t, "abcd~\n---\n"), "%s", t);
    free(t);
    // invalid UTF-8 becomes U+FFFD, folded to '?' in ASCII mode
    grid_clear(g);
    grid_text(g, 0, 0, -1, "a\xff" "b", ST_NORMAL);
    t = grid_dump_text(g);
    EXPECTF(!strncmp(t, "a?b\n", 4), "%s", t);
    free(t);
    // the tail form keeps the end: for paths
    grid_clear(g);
    EXPECT(grid_text_tail(g, 0, 0, 5, "abcdefgh", ST_NORMAL) == 5);
    EXPECT(grid_text_tail(g, 0, 1, 9, "abcdefgh", ST_NORMAL) == 8);
    t = grid_dump_text(g);
    EXPECTF(!strncmp(t, "~efgh\nabcdefgh\n", 15), "%s", t);
    free(t);
    grid_free(g);
    // Wide characters (CJK, emoji) take two cells, so that what follows a name stays in its
    // column; half of one that does not fit is a blank.
    g = grid_new(12, 2, 0);
    EXPECT(grid_strwidth("日本語") == 6 && grid_strwidth("a🚀") == 3);
    EXPECT(grid_text(g, 0, 0, -1, "日本語ab", ST_NORMAL) == 8);
    EXPECT(g->cells[6].ch == 'a' && g->cells[1].ch == GRID_WIDE_CONT && grid_cell_is_wide(g, 0, 0));
    EXPECT(grid_text(g, 0, 1, 5, "日本語", ST_NORMAL) == 5);
    t = grid_dump_text(g);
    EXPECTF(!strcmp(t, "日本語ab\n日本\n"), "%s", t);
    free(t);
    grid_clear(g);
    EXPECT(grid_text_trunc(g, 0, 0, 6, "模型名字-r16", ST_NORMAL) == 6);
    EXPECT(grid_text_tail(g, 0, 1, 6, "模型名字-r16", ST_NORMAL) == 5);  // 字 would need 2 of the 6
    t = grid_dump_text(g);
    EXPECTF(!strcmp(t, "模型 …\n…-r16\n"), "%s", t);
    free(t);
    grid_free(g);
}

static void test_formatting(void) {
    char b[32];
    EXPECT(!strcmp(fmt_int(b, 344064), "344,064"));
    EXPECT(!strcmp(fmt_int(b, -1234567), "-1,234,567"));
    EXPECT(!strcmp(fmt_int(b, 0), "0"));
    EXPECT(!strcmp(fmt_count(b, 344064), "344k"));
    EXPECT(!strcmp(fmt_count(b, 76961152), "77.0M"));
    EXPECT(!strcmp(fmt_count(b, 1234), "1.2k"));
    EXPECT(!strcmp(fmt_bytes(b, 1376256), "1.3 MB"));
    EXPECT(!strcmp(fmt_bytes(b, 512), "512 B"));
    EXPECT(!strcmp(fmt_duration(b, 185), "3m05s"));
    EXPECT(!strcmp(fmt_duration(b, 3720), "1h02m"));
    EXPECT(!strcmp(fmt_duration(b, NAN), "-"));
    EXPECT(!strcmp(fmt_num(b, NAN, 3), "-"));
    EXPECT(!strcmp(fmt_num(b, 0.31249, 3), "0.312"));
}

static void test_ema_debiased(void) {
    // alpha 0 copies; a constant stays constant from the first value (the debiasing)
    double y[5] = {4, 4, 4, 4, 4}, out[5];
    plot_ema(y, 5, 0.9, out);
    for (int i = 0; i < 5; i++) EXPECTF(fabs(out[i] - 4) < 1e-12, "%g", out[i]);
    double z[3] = {1, NAN, 3};
    plot_ema(z, 3, 0.5, out);
    // by hand: ema 0.5, w 0.5 -> 1; skip NaN; ema 0.25+1.5=1.75, w 0.75 -> 2.3333
    EXPECT(fabs(out[0] - 1) < 1e-12);
    EXPECT(fabs(out[1] - 1) < 1e-12);
    EXPECTF(fabs(out[2] - 7.0 / 3.0) < 1e-12, "%g", out[2]);
    plot_ema(z, 3, 0, out);
    EXPECT(out[2] == 3);
}

typedef struct {
    const char *cells[3][3];
} tctx_t;

static const char *tcell(void *ctx, int row, int col, char *buf, size_t cap, int *style) {
    (void)buf;
    (void)cap;
    (void)style;
    return ((tctx_t *)ctx)->cells[row][col];
}

static void test_table_fit_and_truncation(void) {
    static const table_col_t cols[3] = {
        {"id", 2, 0, 1, 0}, {"name", 4, 0, 0, 0}, {"notes", 5, 0, 0, 1}};
    tctx_t c = {{{"1", "lora-r8-qv", "a short note"}, {"2", "full-finetune-long-name", "x"}, {"10", "zs", ""}}};
    table_t t = {3, 3, cols, tcell, NULL, &c, 1, 0, NULL, -1};
    int w[3];
    // everything fits at natural width: 2 + 24 ("name" + sort mark widened by content) + 12
    EXPECT(table_fit(&t, 80, w) == 3);
    EXPECTF(w[0] == 2 && w[1] == 23 && w[2] == 12, "%d %d %d", w[0], w[1], w[2]);
    // squeezed: the widest column gives way first
    EXPECT(table_fit(&t, 30, w) == 3);
    EXPECTF(w[0] + w[1] + w[2] + 2 + 2 == 30, "%d %d %d", w[0], w[1], w[2]);
    EXPECT(w[1] >= 4 && w[2] >= 5);
    // below the minimums, the column with the highest drop value goes
    EXPECT(table_fit(&t, 14, w) == 2);
    EXPECTF(w[2] == 0 && w[0] == 2 && w[1] == 9, "%d %d %d", w[0], w[1], w[2]);
    unsigned char marked[3] = {0, 1, 0};
    t.marked = marked;
    t.pinned_row = 2;
    grid_t *g = grid_new(30, 5, 0);
    table_view_t v = {.cursor = 1, .top = 0};
    table_draw(g, 0, 0, 30, 5, &t, &v);
    tui_expect_golden("table_30x5", g);
    grid_free(g);
}

static void test_plot_and_small_widgets(void) {
    double x[50], y1[50], y2[50];
    for (int i = 0; i < 50; i++) {
        x[i] = i * 10;
        y1[i] = 3.0 * exp(-i / 12.0) + 0.5;
        y2[i] = 2.5 * exp(-i / 20.0) + 0.8;
    }
    plot_series_t s[2] = {{"lora-r8", x, y1, 50, ST_SERIES0, 'A'}, {"full", x, y2, 50, ST_SERIES1, 'B'}};
    for (int ascii = 0; ascii < 2; ascii++)
        for (int logy = 0; logy < 2; logy++) {
            grid_t *g = grid_new(60, 14, ascii);
            plot_opts_t o = {logy, ascii, 1, "step"};
            widget_plot(g, 0, 0, 60, 14, s, 2, &o);
            char name[64];
            snprintf(name, sizeof name, "plot_60x14%s%s", ascii ? "_ascii" : "", logy ? "_logy" : "");
            tui_expect_golden(name, g);
            // invariants: a legend, both end letters, the first curve starts at the top left
            char *t = grid_dump_text(g);
            EXPECT(strstr(t, "A lora-r8") && strstr(t, "B full"));
            EXPECT(strstr(t, "step"));
            free(t);
            // each curve ends in its letter, in its style, at the right edge of the canvas
            int found = 0;
            for (int yy = 0; yy < 14; yy++) {
                grid_cell_t *e = grid_at(g, 59, yy);
                if (e->ch == 'A') found += e->style == ST_SERIES0;
                if (e->ch == 'B') found += e->style == ST_SERIES1;
            }
            EXPECTF(found == 2 || ascii, "end letters %d", found);
            // the y axis spans series A's first value (3.5) down to its last (0.5506)
            t = grid_dump_text(g);
            EXPECT(strstr(t, "    3.5") && strstr(t, " 0.5506"));
            free(t);
            grid_free(g);
        }
    grid_t *g = grid_new(40, 4, 0);
    double sp[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    widget_sparkline(g, 0, 0, 8, sp, 8, ST_SERIES0);
    EXPECT(grid_at(g, 0, 0)->ch == 0x2588 && grid_at(g, 7, 0)->ch == 0x2581);
    widget_progress(g, 0, 1, 20, 0.5, ST_BAR);
    char *t = grid_dump_text(g);
    EXPECTF(strstr(t, "███████▌░░░░░░░  50%") != NULL, "%s", t);
    free(t);
    widget_hbar(g, 0, 2, 20, 0.5, 0.4, 0.7, 0, 1, ST_SERIES0);
    // bar to 10 cells, whiskers [8, 14]
    EXPECT(grid_at(g, 8, 2)->ch == 0x251C && grid_at(g, 14, 2)->ch == 0x2524);
    EXPECT(grid_at(g, 9, 2)->ch == 0x2588 && grid_at(g, 12, 2)->ch == 0x2500);
    grid_free(g);
    // the notice below the minimum size
    g = grid_new(60, 20, 0);
    widget_too_small(g, 80, 24);
    t = grid_dump_text(g);
    EXPECT(strstr(t, "terminal too small: 60x20") && strstr(t, "at least 80x24"));
    free(t);
    grid_free(g);
}

static void test_fields(void) {
    form_field_t f = {0};
    f.kind = FIELD_NUMBER;
    EXPECT(field_key(&f, '1') == 2 && field_key(&f, 'x') == 0 && field_key(&f, '6') == 2);
    EXPECT(!strcmp(f.value, "16"));
    EXPECT(field_key(&f, TK_BACKSPACE) == 2 && !strcmp(f.value, "1"));
    EXPECT(field_key(&f, 0x15) == 2 && f.value[0] == 0);  // Ctrl-U clears
    EXPECT(field_key(&f, 0x15) == 1);
    // a text field too long for its cells shows its end after an ellipsis when not
    // focused, and the end with the cursor when focused
    grid_t *g = grid_new(24, 2, 0);
    form_field_t p = {0};
    p.kind = FIELD_TEXT;
    p.label = "Model";
    snprintf(p.value, sizeof p.value, "/a/very/deep/checkout/models/t5-small");
    field_draw(g, 0, 0, 6, 24, &p, 0);
    field_draw(g, 0, 1, 6, 24, &p, 1);
    char *t = grid_dump_text(g);
    EXPECTF(!strcmp(t, "Model …/models/t5-small\nModel /models/t5-small_\n"), "%s", t);
    free(t);
    grid_free(g);
    form_field_t c = {0};
    static const char *const ch[] = {"none", "lora", "full"};
    c.kind = FIELD_CHOICE;
    c.choices = ch;
    c.nchoices = 3;
    EXPECT(field_key(&c, TK_LEFT) == 2 && c.choice == 2);
    EXPECT(field_key(&c, TK_RIGHT) == 2 && c.choice == 0);
    form_field_t gr = {0};
    static const char *const cols[] = {"q", "k", "v"};
    static const char *const rows[] = {""};
    gr.kind = FIELD_CHECKGRID;
    gr.row_names = rows;
    gr.col_names = cols;
    gr.rows = 1;
    gr.cols = 3;
    field_key(&gr, TK_RIGHT);
    field_key(&gr, TK_RIGHT);
    EXPECT(field_key(&gr, ' ') == 2 && gr.bits == 4);
    EXPECT(field_key(&gr, TK_DOWN) == 0);  // the form moves on
}

int main(void) {
    RUN(test_grid_utf8_and_dump);
    RUN(test_formatting);
    RUN(test_ema_debiased);
    RUN(test_table_fit_and_truncation);
    RUN(test_plot_and_small_widgets);
    RUN(test_fields);
    TH_DONE();
}
