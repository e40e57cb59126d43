// engine/data: loaders for each format and each error, field mapping, prompts, splits,
// truncation, statistics, length bucketing and the batch tensors. Each test writes its own
// small files into a temporary directory.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "data.h"
#include "harness.h"
#include "tokenizer.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *name, const char *text) {
    FILE *f = fopen(tpath(name), "wb");
    if (!f) {
        perror(tpath(name));
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

// Loads one file expecting failure; returns the message (static).
static const char *load_error(const char *name, const data_options_t *opt) {
    static lb_err_t err;
    memset(&err, 0, sizeof err);
    data_split_t sp;
    int rc = data_load_file(tpath(name), "train", opt, &sp, &err);
    if (rc == 0) {
        data_split_free(&sp);
        return NULL;
    }
    return err.msg;
}

// A whitespace-splitting stand-in for the tokenizer: one id per word (a hash), then </s>=1.
static int ws_encode(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    (void)ctx;
    (void)err;
    int cap = 8, k = 0;
    int *v = xmalloc(sizeof(int) * (size_t)cap);
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\t') p++;
        if (!*p) break;
        uint32_t h = 2166136261u;
        while (*p && *p != ' ' && *p != '\n' && *p != '\t') h = (h ^ (unsigned char)*p++) * 16777619u;
        if (k + 2 > cap) v = xrealloc(v, sizeof(int) * (size_t)(cap *= 2));
        v[k++] = 3 + (int)(h % 1000);
    }
    if (k + 1 > cap) v = xrealloc(v, sizeof(int) * (size_t)(cap + 1));
    v[k++] = 1;
    *ids = v;
    *n = k;
    return 0;
}

static int fail_encode(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    (void)ctx;
    (void)text;
    *ids = NULL;
    *n = 0;
    return lb_err_set(err, LB_EFORMAT, "invalid UTF-8 at byte 3");
}

// ---- DialogSum in two formats --------------------------------------------------------

static const char *dlg_jsonl =
    "{\"fname\": \"train_0\", \"dialogue\": \"#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins.\\n#Person2#: "
    "I found it would be a good idea to get a check-up.\", \"summary\": \"Mr. Smith's getting a "
    "check-up, and Doctor Hawkins advises him.\", \"topic\": \"get a check-up\"}\n"
    "{\"fname\": \"train_1\", \"dialogue\": \"#Person1#: Say \\\"cheese\\\", please!\\n#Person2#: "
    "Cheese.\\n#Person1#: Thanks, that's it.\", \"summary\": \"#Person1# takes a photo.\", "
    "\"topic\": \"photo\"}\n"
    "\n"
    "{\"fname\": \"train_2\", \"dialogue\": \"#Person1#: Tab\\there, comma, here.\\n#Person2#: OK.\", "
    "\"summary\": \"They talk.\", \"topic\": \"talk\"}\n";

static const char *dlg_csv =
    "fname,dialogue,summary,topic\n"
    "train_0,\"#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins.\n#Person2#: I found it would be a "
    "good idea to get a check-up.\",\"Mr. Smith's getting a check-up, and Doctor Hawkins advises "
    "him.\",get a check-up\n"
    "train_1,\"#Person1#: Say \"\"cheese\"\", please!\n#Person2#: Cheese.\n#Person1#: Thanks, "
    "that's it.\",#Person1# takes a photo.,photo\n"
    "train_2,\"#Person1#: Tab\there, comma, here.\n#Person2#: OK.\",They talk.,talk\n";

static void expect_dialogsum(const data_split_t *sp) {
    EXPECTF(sp->n == 3, "n=%d", sp->n);
    if (sp->n != 3) return;
    EXPECT(!strcmp(sp->ex[0].source, "#Person1#: Hi, Mr. Smith. I'm Doctor Hawkins.\n#Person2#: "
                                     "I found it would be a good idea to get a check-up."));
    EXPECT(!strcmp(sp->ex[1].source,
                   "#Person1#: Say \"cheese\", please!\n#Person2#: Cheese.\n#Person1#: Thanks, "
                   "that's it."));
    EXPECT(!strcmp(sp->ex[2].source, "#Person1#: Tab\there, comma, here.\n#Person2#: OK."));
    EXPECT(sp->ex[0].n_refs == 1 && sp->ex[1].n_refs == 1 && sp->ex[2].n_refs == 1);
    EXPECT(!strcmp(sp->ex[0].refs[0], "Mr. Smith's getting a check-up, and Doctor Hawkins advises him."));
    EXPECT(!strcmp(sp->ex[1].refs[0], "#Person1# takes a photo."));
    EXPECT(!strcmp(sp->ex[2].refs[0], "They talk."));
    EXPECT(!strcmp(sp->source_field, "dialogue"));
    EXPECT(!strcmp(sp->target_fields, "summary"));
}

static void test_dialogsum_jsonl_and_csv_agree(void) {
    write_file("dlg.jsonl", dlg_jsonl);
    write_file("dlg.csv", dlg_csv);
    lb_err_t err = {0};
    data_split_t a, b;
    EXPECTF(data_load_file(tpath("dlg.jsonl"), "train", NULL, &a, &err) == 0, "%s", err.msg);
    EXPECTF(data_load_file(tpath("dlg.csv"), "train", NULL, &b, &err) == 0, "%s", err.msg);
    expect_dialogsum(&a);
    expect_dialogsum(&b);
    // Examples start on the lines where their records start (a blank JSONL line is counted).
    EXPECT(a.ex[0].line == 1 && a.ex[1].line == 2 && a.ex[2].line == 4);
    EXPECTF(b.ex[0].line == 2 && b.ex[1].line == 4 && b.ex[2].line == 7, "%d %d %d",
            b.ex[0].line, b.ex[1].line, b.ex[2].line);
    data_split_free(&a);
    data_split_free(&b);

    // The same CSV with CRLF line ends (Excel) gives the same text, and a BOM is ignored.
    char crlf[4096] = "\xEF\xBB\xBF";
    size_t k = 3;
    for (const char *p = dlg_csv; *p; p++) {
        if (*p == '\n') crlf[k++] = '\r';
        crlf[k++] = *p;
    }
    crlf[k] = 0;
    write_file("dlg_crlf.csv", crlf);
    EXPECTF(data_load_file(tpath("dlg_crlf.csv"), "train", NULL, &b, &err) == 0, "%s", err.msg);
    expect_dialogsum(&b);
    data_split_free(&b);
    k = 3;
    for (const char *p = dlg_jsonl; *p; p++) {
        if (*p == '\n') crlf[k++] = '\r';
        crlf[k++] = *p;
    }
    crlf[k] = 0;
    write_file("dlg_crlf.jsonl", crlf);
    EXPECTF(data_load_file(tpath("dlg_crlf.jsonl"), "train", NULL, &a, &err) == 0, "%s", err.msg);
    expect_dialogsum(&a);
    EXPECT(a.n == 3 && a.ex[2].line == 4);
    data_split_free(&a);
}

static void test_json_array_and_tsv(void) {
    write_file("arr.json",
               "[\n"
               "  {\"description\": \"A tool that does X.\\nIt is fast.\",\n"
               "   \"synopsis\": \"fast X tool\", \"package\": \"x\"},\n"
               "  {\"description\": \"Library for Y, with [brackets] and {braces}.\",\n"
               "   \"synopsis\": \"Y library\", \"package\": \"liby\"}\n"
               "]\n");
    lb_err_t err = {0};
    data_split_t sp;
    EXPECTF(data_load_file(tpath("arr.json"), "train", NULL, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 2);
    if (sp.n == 2) {
        EXPECT(!strcmp(sp.ex[0].source, "A tool that does X.\nIt is fast."));
        EXPECT(!strcmp(sp.ex[1].refs[0], "Y library"));
        EXPECTF(sp.ex[0].line == 2 && sp.ex[1].line == 4, "%d %d", sp.ex[0].line, sp.ex[1].line);
        EXPECT(!strcmp(sp.source_field, "description") && !strcmp(sp.target_fields, "synopsis"));
    }
    data_split_free(&sp);

    // What datasets' to_json writes: JSON Lines in a .json file.
    write_file("lines.json", "{\"text\": \"a b\", \"target\": \"c\"}\n{\"text\": \"d\", \"target\": \"e\"}\n");
    EXPECTF(data_load_file(tpath("lines.json"), "train", NULL, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 2 && !strcmp(sp.ex[1].source, "d") && !strcmp(sp.ex[1].refs[0], "e"));
    data_split_free(&sp);

    write_file("d.tsv", "id\tdescription\tsynopsis\n"
                        "1\tplain, with a comma\tshort\n"
                        "2\t\"quoted\ttab and\nnewline\"\t\"a \"\"q\"\"\"\n");
    EXPECTF(data_load_file(tpath("d.tsv"), "train", NULL, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 2);
    if (sp.n == 2) {
        EXPECT(!strcmp(sp.ex[0].source, "plain, with a comma"));
        EXPECT(!strcmp(sp.ex[1].source, "quoted\ttab and\nnewline"));
        EXPECT(!strcmp(sp.ex[1].refs[0], "a \"q\""));
        EXPECT(sp.ex[1].line == 3);
    }
    data_split_free(&sp);
}

static void test_multiple_references(void) {
    write_file("test.jsonl",
               "{\"fname\": \"test_0\", \"dialogue\": \"#Person1#: Hello.\", \"summary1\": \"One.\", "
               "\"summary2\": \"Two.\", \"summary3\": \"Three.\", \"topic1\": \"t\"}\n"
               "{\"fname\": \"test_1\", \"dialogue\": \"#Person1#: Bye.\", \"summary1\": \"Uno.\", "
               "\"summary2\": \"Dos.\", \"summary3\": \"Tres.\", \"topic1\": \"t\"}\n");
    lb_err_t err = {0};
    data_split_t sp;
    EXPECTF(data_load_file(tpath("test.jsonl"), "test", NULL, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 2 && sp.ex[0].n_refs == 3 && sp.ex[1].n_refs == 3);
    if (sp.n == 2 && sp.ex[1].n_refs == 3) {
        EXPECT(!strcmp(sp.ex[0].refs[0], "One.") && !strcmp(sp.ex[0].refs[2], "Three."));
        EXPECT(!strcmp(sp.ex[1].refs[1], "Dos."));
        EXPECTF(!strcmp(sp.target_fields, "summary1,summary2,summary3"), "%s", sp.target_fields);
        EXPECT(!strcmp(sp.name, "test"));
    }
    data_split_free(&sp);
    // An explicit list picks exactly those fields.
    data_options_t o = {0};
    o.target_field = "summary3, summary1";
    EXPECTF(data_load_file(tpath("test.jsonl"), "test", &o, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 2 && sp.ex[0].n_refs == 2 && !strcmp(sp.ex[0].refs[0], "Three.") &&
           !strcmp(sp.ex[0].refs[1], "One."));
    data_split_free(&sp);
}

static void test_fields_prefix_template(void) {
    write_file("f.jsonl", "{\"a\": \"x y\", \"b\": \"z\", \"dialogue\": \"ignored\"}\n");
    data_options_t o = {0};
    o.source_field = "a";
    o.target_field = "b";
    o.prefix = "summarize: ";
    lb_err_t err = {0};
    data_split_t sp;
    EXPECTF(data_load_file(tpath("f.jsonl"), "train", &o, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 1 && !strcmp(sp.ex[0].source, "summarize: x y") && !strcmp(sp.ex[0].refs[0], "z"));
    data_split_free(&sp);
    o.prefix = NULL;
    o.template_text = "Summarize the following conversation.\n\n{source}\n\nSummary: ";
    EXPECTF(data_load_file(tpath("f.jsonl"), "train", &o, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == 1 &&
           !strcmp(sp.ex[0].source, "Summarize the following conversation.\n\nx y\n\nSummary: "));
    data_split_free(&sp);
    o.template_text = "no hole";
    EXPECT(data_load_file(tpath("f.jsonl"), "train", &o, &sp, &err) != 0 && contains(err.msg, "{source}"));
    o.template_text = "{source}";
    o.prefix = "p: ";
    EXPECT(data_load_file(tpath("f.jsonl"), "train", &o, &sp, &err) != 0 && contains(err.msg, "prefix"));
}

// ---- errors --------------------------------------------------------------------------

static void test_errors_json(void) {
    const char *m;
    write_file("bad.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"}\n"
                            "{\"dialogue\": \"c\", \"summary\": \"d\"}\n"
                            "{\"dialogue\": \"e\", \"summary\": \"f\",}\n");
    m = load_error("bad.jsonl", NULL);
    EXPECTF(contains(m, "bad.jsonl line 3: bad JSON at column"), "%s", m);

    write_file("trail.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"} x\n");
    m = load_error("trail.jsonl", NULL);
    EXPECTF(contains(m, "trail.jsonl line 1: bad JSON at column 35 near 'x'"), "%s", m);

    write_file("miss.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"}\n"
                             "{\"fname\": \"x\", \"dialogue\": \"c\", \"topic\": \"t\"}\n");
    m = load_error("miss.jsonl", NULL);
    EXPECTF(contains(m, "miss.jsonl line 2: missing field 'summary'") &&
                contains(m, "fields present: fname, dialogue, topic"),
            "%s", m);

    write_file("nosrc.jsonl", "{\"foo\": \"a\", \"summary\": \"b\"}\n");
    m = load_error("nosrc.jsonl", NULL);
    EXPECTF(contains(m, "nosrc.jsonl line 1: no source field") && contains(m, "foo, summary") &&
                contains(m, "--source"),
            "%s", m);

    data_options_t o = {0};
    o.source_field = "text";
    m = load_error("miss.jsonl", &o);
    EXPECTF(contains(m, "line 1: missing field 'text'; fields present: dialogue, summary"), "%s", m);

    write_file("empty_text.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"}\n"
                                   "{\"dialogue\": \"c\", \"summary\": \"  \\n \"}\n");
    m = load_error("empty_text.jsonl", NULL);
    EXPECTF(contains(m, "empty_text.jsonl line 2: empty text in field 'summary'"), "%s", m);

    write_file("num.jsonl", "{\"dialogue\": 5, \"summary\": \"b\"}\n");
    m = load_error("num.jsonl", NULL);
    EXPECTF(contains(m, "num.jsonl line 1: field 'dialogue' is a number"), "%s", m);

    write_file("notobj.jsonl", "[\"dialogue\", \"summary\"]\n");
    m = load_error("notobj.jsonl", NULL);
    EXPECTF(contains(m, "notobj.jsonl line 1: expected a JSON object") && contains(m, "an array"), "%s", m);

    // A JSON array: the error line is where the problem is, for bad JSON and missing fields.
    write_file("bad.json", "[\n {\"dialogue\": \"a\", \"summary\": \"b\"},\n\n {\"dialogue\": \"c\" \"summary\": \"d\"}\n]\n");
    m = load_error("bad.json", NULL);
    EXPECTF(contains(m, "bad.json line 4: bad JSON at column 19"), "%s", m);
    write_file("miss.json", "[\n {\"dialogue\": \"a\", \"summary\": \"b\"},\n {\"dialogue\": \"[x]\",\n"
                            "  \"summary\": \"{y}\"},\n\n {\"dialogue\": \"c\",\n  \"topic\": \"d\"}\n]\n");
    m = load_error("miss.json", NULL);
    EXPECTF(contains(m, "miss.json line 6: missing field 'summary'; fields present: dialogue, topic"), "%s", m);
    write_file("obj.json", "\n\n  42\n");
    m = load_error("obj.json", NULL);
    EXPECTF(contains(m, "obj.json line 3: expected a JSON array") && contains(m, "a number"), "%s", m);
    write_file("unclosed.json", "[\n {\"dialogue\": \"a\", \"summary\": \"b\"}\n");
    m = load_error("unclosed.json", NULL);
    EXPECTF(contains(m, "unclosed.json line ") && contains(m, "bad JSON"), "%s", m);
}

static void test_errors_csv(void) {
    const char *m;
    write_file("unterm.csv", "dialogue,summary\n"
                             "a,b\n"
                             "\"c\nstill c,d\n"
                             "e,f\n");
    m = load_error("unterm.csv", NULL);
    EXPECTF(contains(m, "unterm.csv line 3: unterminated quote in field 1"), "%s", m);

    write_file("ragged.csv", "dialogue,summary,topic\n"
                             "\"multi\nline\",b,t\n"
                             "a, b, c, d\n");
    m = load_error("ragged.csv", NULL);
    EXPECTF(contains(m, "ragged.csv line 4: 4 fields where the header (line 1) has 3"), "%s", m);

    write_file("tabs.csv", "dialogue,summary\nx\ty\n");
    m = load_error("tabs.csv", NULL);
    EXPECTF(contains(m, "tabs.csv line 2") && contains(m, ".tsv"), "%s", m);

    write_file("afterq.csv", "dialogue,summary\n\"a\"b,c\n");
    m = load_error("afterq.csv", NULL);
    EXPECTF(contains(m, "afterq.csv line 2: unexpected 'b' after the closing quote of field 1"), "%s", m);

    write_file("miss.csv", "dialogue,topic\nhello,t\n");
    m = load_error("miss.csv", NULL);
    EXPECTF(contains(m, "miss.csv line 2: no target field") && contains(m, "dialogue, topic"), "%s", m);

    write_file("emptyf.csv", "dialogue,summary\nhello,world\n\"\",x\n");
    m = load_error("emptyf.csv", NULL);
    EXPECTF(contains(m, "emptyf.csv line 3: empty text in field 'dialogue'"), "%s", m);

    write_file("unterm.tsv", "dialogue\tsummary\na\t\"b\n");
    m = load_error("unterm.tsv", NULL);
    EXPECTF(contains(m, "unterm.tsv line 2: unterminated quote in field 2"), "%s", m);
}

static void test_errors_empty_and_ext(void) {
    const char *m;
    write_file("empty.jsonl", "\n\n");
    m = load_error("empty.jsonl", NULL);
    EXPECTF(contains(m, "empty.jsonl holds no examples"), "%s", m);
    write_file("empty.csv", "");
    m = load_error("empty.csv", NULL);
    EXPECTF(contains(m, "empty.csv is empty") && contains(m, "header"), "%s", m);
    write_file("header.csv", "dialogue,summary\n");
    m = load_error("header.csv", NULL);
    EXPECTF(contains(m, "header.csv holds no examples"), "%s", m);
    write_file("empty.json", "[]");
    m = load_error("empty.json", NULL);
    EXPECTF(contains(m, "empty.json holds no examples"), "%s", m);
    write_file("d.parquet", "PAR1");
    m = load_error("d.parquet", NULL);
    EXPECTF(contains(m, "unknown extension '.parquet'") && contains(m, ".jsonl"), "%s", m);
    m = load_error("noext", NULL);
    EXPECTF(contains(m, "noext has no extension"), "%s", m);
    m = load_error("missing.jsonl", NULL);
    EXPECTF(contains(m, "cannot open") && contains(m, "missing.jsonl"), "%s", m);
}

// ---- data sets and splits ------------------------------------------------------------

static void test_directory_data_set(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ds", tmpdir);
    mkdir(dir, 0755);
    write_file("ds/train.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"}\n{\"dialogue\": \"c\", \"summary\": \"d\"}\n");
    write_file("ds/validation.csv", "dialogue,summary\ne,f\n");
    write_file("ds/README.md", "not a split\n");
    data_set_t ds;
    lb_err_t err = {0};
    EXPECTF(data_set_load(dir, NULL, &ds, &err) == 0, "%s", err.msg);
    EXPECT(ds.n_splits == 2 && ds.is_dir);
    const data_split_t *v = data_set_split(&ds, "validation", &err);
    EXPECT(v && v->n == 1 && !strcmp(v->ex[0].source, "e"));
    const data_split_t *t = data_set_split(&ds, "train", &err);
    EXPECT(t && t->n == 2);
    EXPECT(data_set_split(&ds, "test", &err) == NULL && contains(err.msg, "no test split") &&
           contains(err.msg, "train, validation"));
    data_set_free(&ds);

    // An empty split file is an error naming it.
    write_file("ds/test.tsv", "dialogue\tsummary\n");
    EXPECT(data_set_load(dir, NULL, &ds, &err) != 0 && contains(err.msg, "test.tsv holds no examples"));
    unlink(tpath("ds/test.tsv"));
    write_file("ds/test.txt", "x");
    EXPECT(data_set_load(dir, NULL, &ds, &err) != 0 && contains(err.msg, "unknown extension '.txt'"));
    unlink(tpath("ds/test.txt"));
    write_file("ds/val.jsonl", "{\"dialogue\": \"a\", \"summary\": \"b\"}\n");
    EXPECT(data_set_load(dir, NULL, &ds, &err) != 0 && contains(err.msg, "two validation files"));
    unlink(tpath("ds/val.jsonl"));

    data_options_t o = {0};
    o.split_ratio[0] = 0.5;
    o.split_ratio[1] = 0.5;
    EXPECT(data_set_load(dir, &o, &ds, &err) != 0 && contains(err.msg, "directory"));

    char empty[600];
    snprintf(empty, sizeof empty, "%s/emptyds", tmpdir);
    mkdir(empty, 0755);
    EXPECT(data_set_load(empty, NULL, &ds, &err) != 0 && contains(err.msg, "holds no train"));
    EXPECT(data_set_load(tpath("nope"), NULL, &ds, &err) != 0 && contains(err.msg, "nope"));
}

static void write_numbered(const char *name, int n) {
    char *buf = malloc((size_t)n * 64 + 1);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(buf + k, "{\"text\": \"ex %d\", \"summary\": \"s %d\"}\n", i, i);
    buf[k] = 0;
    write_file(name, buf);
    free(buf);
}

static void test_split_ratio_deterministic(void) {
    write_numbered("hundred.jsonl", 100);
    data_options_t o = {0};
    lb_err_t err = {0};
    EXPECT(data_parse_split_ratio("0.8,0.1,0.1", o.split_ratio, &err) == 0);
    o.seed = 7;
    data_set_t a, b, c;
    EXPECTF(data_set_load(tpath("hundred.jsonl"), &o, &a, &err) == 0, "%s", err.msg);
    EXPECTF(data_set_load(tpath("hundred.jsonl"), &o, &b, &err) == 0, "%s", err.msg);
    o.seed = 8;
    EXPECTF(data_set_load(tpath("hundred.jsonl"), &o, &c, &err) == 0, "%s", err.msg);
    EXPECT(a.n_splits == 3 && b.n_splits == 3 && c.n_splits == 3);
    if (a.n_splits == 3 && b.n_splits == 3 && c.n_splits == 3) {
        EXPECT(a.split[0].n == 80 && a.split[1].n == 10 && a.split[2].n == 10);
        EXPECT(!strcmp(a.split[1].name, "validation") && !strcmp(a.split[2].name, "test"));
        int seen[100] = {0}, same = 1, differ = 0;
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < a.split[s].n; i++) {
                int id = atoi(a.split[s].ex[i].source + 3);
                if (id >= 0 && id < 100) seen[id]++;
                if (a.split[s].ex[i].line != id + 1) same = 0;  // lines follow the file
                if (strcmp(a.split[s].ex[i].source, b.split[s].ex[i].source)) same = 0;
                if (i > 0 && a.split[s].ex[i].line <= a.split[s].ex[i - 1].line) same = 0;
            }
        for (int i = 0; i < c.split[1].n; i++)
            if (strcmp(a.split[1].ex[i].source, c.split[1].ex[i].source)) differ = 1;
        int all_once = 1;
        for (int i = 0; i < 100; i++) all_once &= seen[i] == 1;
        EXPECT(all_once);
        EXPECT(same);
        EXPECT(differ);
    }
    data_set_free(&a);
    data_set_free(&b);
    data_set_free(&c);

    // Too few examples for a non-empty validation and test split.
    write_numbered("two.jsonl", 2);
    o.split_ratio[0] = 0.9;
    o.split_ratio[1] = 0.05;
    o.split_ratio[2] = 0.05;
    EXPECT(data_set_load(tpath("two.jsonl"), &o, &a, &err) != 0 && contains(err.msg, "only 2 examples"));
    // No ratio: one split called train.
    memset(&o, 0, sizeof o);
    EXPECTF(data_set_load(tpath("two.jsonl"), &o, &a, &err) == 0, "%s", err.msg);
    EXPECT(a.n_splits == 1 && !strcmp(a.split[0].name, "train") && a.split[0].n == 2);
    data_set_free(&a);

    double r[3];
    EXPECT(data_parse_split_ratio("0.9,0.1", r, &err) == 0 && r[0] == 0.9 && r[1] == 0.1 && r[2] == 0);
    EXPECT(data_parse_split_ratio("0.9,0.2,0.1", r, &err) != 0 && contains(err.msg, "sum"));
    EXPECT(data_parse_split_ratio("a,b", r, &err) != 0);
    EXPECT(data_parse_split_ratio("0.5,0.5,0,0", r, &err) != 0);
}

static void test_rng(void) {
    // splitmix64 from state 0: the published first outputs.
    uint64_t s = 0;
    EXPECT(data_rng_next(&s) == 0xe220a8397b1dcdafULL);
    EXPECT(data_rng_next(&s) == 0x6e789e6aa1b965f4ULL);
    int a[50], b[50], moved = 0, sum = 0;
    for (int i = 0; i < 50; i++) a[i] = b[i] = i;
    data_shuffle_ints(a, 50, 123);
    data_shuffle_ints(b, 50, 123);
    for (int i = 0; i < 50; i++) {
        moved += a[i] != i;
        sum += a[i];
        EXPECT(a[i] == b[i]);
    }
    EXPECT(moved > 30 && sum == 49 * 50 / 2);
    EXPECT(data_seed_mix(1, 0) != data_seed_mix(1, 1) && data_seed_mix(1, 1) != data_seed_mix(2, 0));
}

// ---- tokens, statistics, batches -----------------------------------------------------

static void test_truncation_keeps_eos(void) {
    int ids[] = {5, 6, 7, 8, 9, 1};
    int n = data_truncate_ids(ids, 6, 4, 1);
    EXPECT(n == 4 && ids[0] == 5 && ids[2] == 7 && ids[3] == 1);
    int ids2[] = {5, 6, 7, 8, 9, 1};
    EXPECT(data_truncate_ids(ids2, 6, 4, -1) == 4 && ids2[3] == 8);
    EXPECT(data_truncate_ids(ids2, 6, 0, 1) == 6 && data_truncate_ids(ids2, 3, 4, 1) == 3);

    write_file("tr.jsonl", "{\"text\": \"one two three four five six\", \"summary\": \"a b c\"}\n"
                           "{\"text\": \"one two\", \"summary\": \"a b c d e f g h\"}\n");
    data_options_t o = {0};
    o.prefix = "summarize: ";
    lb_err_t err = {0};
    data_split_t sp;
    data_tokenized_t tok;
    EXPECTF(data_load_file(tpath("tr.jsonl"), "train", &o, &sp, &err) == 0, "%s", err.msg);
    EXPECTF(data_tokenize_split(&sp, ws_encode, NULL, 5, 4, 1, &tok, &err) == 0, "%s", err.msg);
    EXPECT(tok.n == 2);
    // "summarize: one two three four five six" = 7 words + </s>: cut to 5 ending in </s>.
    EXPECT(tok.ex[0].src_len == 8 && tok.ex[0].n_src == 5 && tok.ex[0].src[4] == 1 &&
           tok.ex[0].src[3] != 1);
    EXPECT(tok.ex[0].tgt_len == 4 && tok.ex[0].n_tgt == 4 && tok.ex[0].tgt[3] == 1);
    EXPECT(tok.ex[1].src_len == 4 && tok.ex[1].n_src == 4);
    EXPECT(tok.ex[1].tgt_len == 9 && tok.ex[1].n_tgt == 4 && tok.ex[1].tgt[3] == 1);
    data_stats_t st;
    data_stats_compute(&tok, &st);
    EXPECT(st.n == 2 && st.src_max == 8 && st.tgt_max == 9 && st.src_p50 == 4 && st.tgt_p50 == 4);
    EXPECT(st.src_trunc_frac == 0.5 && st.tgt_trunc_frac == 0.5 && st.trunc_frac == 1.0);
    data_tokenized_free(&tok);
    // A tokenizer error names the file and the line of the example.
    EXPECT(data_tokenize_split(&sp, fail_encode, NULL, 5, 4, 1, &tok, &err) != 0 &&
           contains(err.msg, "tr.jsonl line 1: cannot tokenize: invalid UTF-8"));
    data_split_free(&sp);
}

static void make_tokens(data_tokenized_t *tok, int n, const int *src_len, const int *tgt_len) {
    tok->n = n;
    tok->ex = calloc((size_t)n, sizeof(data_tokens_t));
    for (int i = 0; i < n; i++) {
        data_tokens_t *t = &tok->ex[i];
        t->n_src = t->src_len = src_len[i];
        t->n_tgt = t->tgt_len = tgt_len[i];
        t->src = malloc(sizeof(int) * (size_t)src_len[i]);
        t->tgt = malloc(sizeof(int) * (size_t)tgt_len[i]);
        for (int k = 0; k < src_len[i]; k++) t->src[k] = 100 + i * 10 + k;
        for (int k = 0; k < tgt_len[i]; k++) t->tgt[k] = 200 + i * 10 + k;
        t->src[src_len[i] - 1] = 1;
        t->tgt[tgt_len[i] - 1] = 1;
    }
}

static void test_stats_percentiles(void) {
    int sl[100], tl[100];
    for (int i = 0; i < 100; i++) sl[i] = 100 - i, tl[i] = 1 + (i % 10);
    data_tokenized_t tok;
    make_tokens(&tok, 100, sl, tl);
    data_stats_t st;
    data_stats_compute(&tok, &st);
    EXPECT(st.src_p50 == 50 && st.src_p90 == 90 && st.src_p99 == 99 && st.src_max == 100);
    EXPECT(st.tgt_p50 == 5 && st.tgt_p90 == 9 && st.tgt_p99 == 10 && st.tgt_max == 10);
    EXPECT(st.trunc_frac == 0 && fabs(st.src_mean - 50.5) < 1e-9);
    data_tokenized_free(&tok);
}

static void test_batch_tensors(void) {
    int sl[] = {3, 5, 2}, tl[] = {4, 2, 3};
    data_tokenized_t tok;
    make_tokens(&tok, 3, sl, tl);
    int idx[] = {2, 0, 1};
    data_batch_t b;
    lb_err_t err = {0};
    EXPECT(data_batch_make(&tok, idx, 3, 0, 0, &b, &err) == 0);
    EXPECT(b.B == 3 && b.S == 5 && b.T == 4);
    // Row 0 is example 2: source [120, 1], target [220, 221, 1].
    int ii0[] = {120, 1, 0, 0, 0}, am0[] = {1, 1, 0, 0, 0}, lb0[] = {220, 221, 1, -100};
    int di0[] = {0, 220, 221, 1};
    int ok = 1;
    for (int s = 0; s < 5; s++) ok &= b.input_ids[s] == ii0[s] && b.attention_mask[s] == am0[s];
    for (int s = 0; s < 4; s++) ok &= b.labels[s] == lb0[s] && b.decoder_input_ids[s] == di0[s];
    EXPECT(ok);
    // Row 2 is example 1: a full source row, a target of 2 then -100 padding.
    int lb2[] = {210, 1, -100, -100}, di2[] = {0, 210, 1, 0};
    for (int s = 0; s < 5; s++) ok &= b.attention_mask[10 + s] == 1;
    for (int s = 0; s < 4; s++) ok &= b.labels[8 + s] == lb2[s] && b.decoder_input_ids[8 + s] == di2[s];
    EXPECT(ok && b.input_ids[10] == 110 && b.input_ids[14] == 1);
    EXPECT(b.index[0] == 2 && b.index[1] == 0 && b.index[2] == 1);
    data_batch_free(&b);
    int bad[] = {3};
    EXPECT(data_batch_make(&tok, bad, 1, 0, 0, &b, &err) != 0 && contains(err.msg, "outside"));
    data_tokenized_free(&tok);
}

static void test_bucketing_lowers_padding(void) {
    enum { N = 403 };
    int sl[N], tl[N];
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        sl[i] = 2 + (int)data_rng_below(&s, 300);
        tl[i] = 2 + (int)data_rng_below(&s, 40);
    }
    data_tokenized_t tok;
    make_tokens(&tok, N, sl, tl);
    data_plan_t rnd, bkt, bkt2, bkt3;
    lb_err_t err = {0};
    EXPECT(data_plan_batches(&tok, 8, 1, 5, &rnd, &err) == 0);
    EXPECT(data_plan_batches(&tok, 8, 50, 5, &bkt, &err) == 0);
    EXPECT(data_plan_batches(&tok, 8, 50, 5, &bkt2, &err) == 0);
    EXPECT(data_plan_batches(&tok, 8, 50, 6, &bkt3, &err) == 0);
    EXPECT(rnd.n_batches == 51 && bkt.n_batches == 51 && bkt.start[51] == N);
    // Every example exactly once, batches of 8 except one of 3.
    int seen[N] = {0}, small = 0;
    for (int i = 0; i < N; i++) seen[bkt.order[i]]++;
    int once = 1;
    for (int i = 0; i < N; i++) once &= seen[i] == 1;
    for (int b = 0; b < bkt.n_batches; b++) {
        int c = bkt.start[b + 1] - bkt.start[b];
        if (c != 8) small += c == 3 ? 1 : 100;
    }
    EXPECT(once && small == 1);
    // Recompute the padding of the plan independently.
    long real = 0, padded = 0;
    for (int b = 0; b < bkt.n_batches; b++) {
        int S = 0, T = 0, c = bkt.start[b + 1] - bkt.start[b];
        for (int i = bkt.start[b]; i < bkt.start[b + 1]; i++) {
            int e = bkt.order[i];
            S = sl[e] > S ? sl[e] : S;
            T = tl[e] > T ? tl[e] : T;
            real += sl[e] + tl[e];
        }
        padded += (long)c * (S + T);
    }
    EXPECT(real == bkt.real_tokens && padded == bkt.padded_tokens);
    EXPECTF(bkt.pad_fraction < 0.5 * rnd.pad_fraction && rnd.pad_fraction > 0.2,
            "bucketed %.3f random %.3f", bkt.pad_fraction, rnd.pad_fraction);
    int same = 1, differ = 0;
    for (int i = 0; i < N; i++) {
        same &= bkt.order[i] == bkt2.order[i];
        differ |= bkt.order[i] != bkt3.order[i];
    }
    EXPECT(same && differ);
    // Batch order is shuffled: the first batches are not sorted by length.
    int asc = 0;
    for (int b = 0; b + 1 < 10; b++) asc += sl[bkt.order[bkt.start[b]]] <= sl[bkt.order[bkt.start[b + 1]]];
    EXPECT(asc < 9);
    data_plan_free(&rnd);
    data_plan_free(&bkt);
    data_plan_free(&bkt2);
    data_plan_free(&bkt3);
    EXPECT(data_plan_batches(&tok, 0, 50, 5, &rnd, &err) != 0);
    data_tokenized_free(&tok);
}

static int tok_encode(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    return tokenizer_encode((const tokenizer_t *)ctx, text, 1, ids, n, err);
}

static int json_int_rows(const cJSON *a, int row, int *out, int cap) {
    const cJSON *r = cJSON_GetArrayItem(a, row);
    int n = cJSON_GetArraySize(r);
    for (int i = 0; i < n && i < cap; i++) out[i] = cJSON_GetArrayItem(r, i)->valueint;
    return n;
}

// fixtures/hf/t5-gated-a/batch.json through the whole pipeline: the examples written as a
// CSV (prefix applied by the loader), the real tokenizer, truncation to 40 / 14 and the batch
// tensors. The fixture cut its sequences plainly (no </s> at the end), which eos_id -1
// reproduces; with the eos id the same ids end in </s> instead.
static void test_fixture_batch(void) {
    lb_err_t err = {0};
    size_t len;
    char *txt = lb_read_file("tests/fixtures/hf/t5-gated-a/batch.json", &len, &err);
    tokenizer_t *tk = tokenizer_load("tests/fixtures/hf/t5-gated-a/tokenizer.json", &err);
    EXPECTF(txt && tk, "%s", err.msg);
    if (!txt || !tk) {
        free(txt);
        if (tk) tokenizer_free(tk);
        return;
    }
    cJSON *j = cJSON_Parse(txt);
    const cJSON *src = cJSON_GetObjectItem(j, "source"), *tgt = cJSON_GetObjectItem(j, "target");
    int B = cJSON_GetArraySize(src);
    // Write the examples as CSV: the source without the fixture's prefix, quotes doubled.
    FILE *f = fopen(tpath("batch.csv"), "wb");
    fputs("description,synopsis\n", f);
    for (int i = 0; i < B; i++) {
        const char *fields[2] = {cJSON_GetArrayItem(src, i)->valuestring + strlen("summarize: "),
                                 cJSON_GetArrayItem(tgt, i)->valuestring};
        for (int k = 0; k < 2; k++) {
            fputc('"', f);
            for (const char *p = fields[k]; *p; p++) {
                if (*p == '"') fputc('"', f);
                fputc(*p, f);
            }
            fputs(k ? "\"\n" : "\",", f);
        }
    }
    fclose(f);
    data_options_t o = {0};
    o.prefix = "summarize: ";
    data_split_t sp;
    EXPECTF(data_load_file(tpath("batch.csv"), "train", &o, &sp, &err) == 0, "%s", err.msg);
    EXPECT(sp.n == B && B == 3);
    if (sp.n == B && B == 3) {
        EXPECT(!strcmp(sp.ex[0].source, cJSON_GetArrayItem(src, 0)->valuestring));
        data_tokenized_t tok;
        int ms = cJSON_GetObjectItem(j, "max_source_tokens")->valueint;
        int mt = cJSON_GetObjectItem(j, "max_target_tokens")->valueint;
        EXPECTF(data_tokenize_split(&sp, tok_encode, tk, ms, mt, -1, &tok, &err) == 0, "%s", err.msg);
        int idx[3] = {0, 1, 2};
        data_batch_t b;
        EXPECT(data_batch_make(&tok, idx, 3, tokenizer_pad_id(tk), 0, &b, &err) == 0);
        const cJSON *ii = cJSON_GetObjectItem(j, "input_ids"), *am = cJSON_GetObjectItem(j, "attention_mask"),
                    *lb = cJSON_GetObjectItem(j, "labels");
        int S = cJSON_GetArraySize(cJSON_GetArrayItem(ii, 0)), T = cJSON_GetArraySize(cJSON_GetArrayItem(lb, 0));
        EXPECTF(b.B == 3 && b.S == S && b.T == T, "B %d S %d/%d T %d/%d", b.B, b.S, S, b.T, T);
        int bad = 0, row[512];
        for (int i = 0; i < 3 && b.S == S && b.T == T; i++) {
            json_int_rows(ii, i, row, 512);
            for (int s = 0; s < S; s++) bad += row[s] != b.input_ids[i * S + s];
            json_int_rows(am, i, row, 512);
            for (int s = 0; s < S; s++) bad += row[s] != b.attention_mask[i * S + s];
            json_int_rows(lb, i, row, 512);
            for (int s = 0; s < T; s++) bad += row[s] != b.labels[i * T + s];
        }
        EXPECTF(bad == 0, "%d ids differ from batch.json", bad);
        data_batch_free(&b);
        data_tokenized_t tok2;
        int eos = tokenizer_eos_id(tk);
        EXPECT(eos == 1);
        EXPECTF(data_tokenize_split(&sp, tok_encode, tk, ms, mt, eos, &tok2, &err) == 0, "%s", err.msg);
        int same = 1;
        for (int i = 0; i < 3; i++) {
            same &= tok2.ex[i].n_src == ms && tok2.ex[i].src[ms - 1] == eos;
            same &= tok2.ex[i].n_tgt == mt && tok2.ex[i].tgt[mt - 1] == eos;
            same &= !memcmp(tok2.ex[i].src, tok.ex[i].src, sizeof(int) * (size_t)(ms - 1));
            same &= tok2.ex[i].src[ms - 1] != tok.ex[i].src[ms - 1];
            // Untruncated lengths end with the template's </s>.
            same &= tok2.ex[i].src_len > ms && tok2.ex[i].tgt_len > mt;
        }
        EXPECT(same);
        data_tokenized_free(&tok);
        data_tokenized_free(&tok2);
    }
    data_split_free(&sp);
    cJSON_Delete(j);
    free(txt);
    tokenizer_free(tk);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_dialogsum_jsonl_and_csv_agree);
    RUN(test_json_array_and_tsv);
    RUN(test_multiple_references);
    RUN(test_fields_prefix_template);
    RUN(test_errors_json);
    RUN(test_errors_csv);
    RUN(test_errors_empty_and_ext);
    RUN(test_directory_data_set);
    RUN(test_split_ratio_deterministic);
    RUN(test_rng);
    RUN(test_truncation_keeps_eos);
    RUN(test_stats_percentiles);
    RUN(test_batch_tensors);
    RUN(test_bucketing_lowers_padding);
    RUN(test_fixture_batch);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TH_DONE();
}
