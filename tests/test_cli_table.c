// The command line's tables (runs, compare, sweep results) line their columns up by display
// width: a name in CJK or with an emoji takes two columns a character, and the columns after
// it start where they start on every other row.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "harness.h"
#include "store.h"

// Display column where `word` starts in line (-1 when absent), counted here independently
// of the code under test: the CJK ideographs and emoji used below take two columns.
static int col_of(const char *line, const char *word) {
    const char *p = strstr(line, word);
    if (!p) return -1;
    int c = 0;
    for (const unsigned char *q = (const unsigned char *)line; q < (const unsigned char *)p;) {
        uint32_t cp;
        int len = *q < 0x80 ? 1 : (*q & 0xE0) == 0xC0 ? 2 : (*q & 0xF0) == 0xE0 ? 3 : 4;
        cp = len == 1 ? *q : *q & (0x7F >> len);
        for (int k = 1; k < len; k++) cp = (cp << 6) | (q[k] & 0x3F);
        q += len;
        c += (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x1F300 && cp <= 0x1F6FF) ? 2 : 1;
    }
    return c;
}

static void test_wide_names_keep_columns(void) {
    static const char *const head[] = {"id", "name", "status"};
    static const int right[] = {1, 0, 0};
    cli_table_t *t = cli_table_new(3, head, right);
    char fitted[128];
    store_text_fit("模型名字🚀-lora-r16-很长的名字-final", 24, fitted, sizeof fitted);
    const char *rows[][3] = {{"1", "plain-name", "done"}, {"2", "模型-r8", "running"}, {"3", "🚀 rocket", "failed"},
                             {"4", fitted, "queued"}};
    for (int i = 0; i < 4; i++) cli_table_row(t, rows[i]);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    cli_table_print(f, t, 0);
    fclose(f);
    cli_table_free(t);
    const char *status[] = {"status", "done", "running", "failed", "queued"};
    char *save = NULL, *line = strtok_r(buf, "\n", &save);
    int want = -1;
    for (int i = 0; i < 5 && line; i++, line = strtok_r(NULL, "\n", &save)) {
        int c = col_of(line, status[i]);
        if (want < 0) want = c;
        EXPECTF(c == want && c > 0, "row %d: '%s' at column %d, the header's at %d", i, status[i], c, want);
    }
    free(buf);
}

int main(void) {
    RUN(test_wide_names_keep_columns);
    TH_DONE();
}
