// cli_json_string: the one writer of JSON strings in the CLI's outputs (runs --json, export,
// compare) writes valid JSON for any bytes, including names from an old database that are
// not UTF-8.
#include <stdlib.h>

#include "cli_common.h"
#include "harness.h"

static char *json_of(const char *s) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    cli_json_string(f, s);
    fclose(f);
    return buf;
}

static void expect_json(const char *in, const char *want) {
    char *got = json_of(in);
    EXPECTF(!strcmp(got, want), "want %s, got %s", want, got);
    free(got);
}

static void test_escapes(void) {
    expect_json(NULL, "null");
    expect_json("", "\"\"");
    expect_json("a\"b\\c\nd\te\x01", "\"a\\\"b\\\\c\\nd\\te\\u0001\"");
}

static void test_utf8_kept(void) {
    expect_json("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\"");
}

static void test_invalid_bytes_replaced(void) {
    expect_json("caf\xe9", "\"caf\\ufffd\"");                  // Latin-1
    expect_json("a\xff\xfe" "b", "\"a\\ufffd\\ufffdb\"");      // never in UTF-8
    expect_json("x\xe6\x97", "\"x\\ufffd\\ufffd\"");           // cut at the end
    expect_json("\xc0\xaf", "\"\\ufffd\\ufffd\"");             // overlong '/'
    expect_json("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
    expect_json("\xe6\x97\"", "\"\\ufffd\\ufffd\\\"\"");       // cut before a quote
}

int main(void) {
    RUN(test_escapes);
    RUN(test_utf8_kept);
    RUN(test_invalid_bytes_replaced);
    TH_DONE();
}
