// The debsum builder on a small synthetic Translation-en written here: parsing, cleaning,
// duplicates, family caps, family-disjoint splits and byte-identical reruns; plus sanity
// checks of the committed snapshot in experiments/data/debsum.
#include <cJSON.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "debsum.h"
#include "harness.h"

static char tmpdir[256];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

// Appends printf-formatted text to a growing string.
static void app(char **s, size_t *n, const char *fmt, ...) {
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    *s = xrealloc(*s, *n + (size_t)k + 1);
    memcpy(*s + *n, tmp, (size_t)k + 1);
    *n += (size_t)k;
}

static const char *words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
                              "hotel", "india", "juliet", "kilo", "lima", "mike", "november",
                              "oscar", "papa", "quebec", "romeo", "sierra", "tango"};

// A synthetic Translation-en: 60 independent packages, one template family (libzed*),
// one family linked only by a shared opening sentence, an exact copy under another name,
// and records that the filters must drop.
static char *synthetic_translation(void) {
    char *s = NULL;
    size_t n = 0;
    app(&s, &n, "%s", "");
    for (int i = 0; i < 60; i++) {
        const char *a = words[i % 20], *b = words[i / 20], *c = words[(i * 7 + 3) % 20];
        app(&s, &n,
            "Package: tool%c%c\nDescription-md5: %032d\nDescription-en: %s %s utility "
            "number %d\n Tool%d reads %s files and writes %s reports.\n It reads"
            " files and\n   writes   reports number %d.\n .\n Second paragraph about %s %d.\n\n",
            'a' + i % 26, 'a' + i / 26, i, a, b, i, i, a, b, i, c, i);
    }
    // Template family: five packages of one library; the family cap keeps two.
    const char *zed[] = {"libzed3", "libzed-dev", "libzed-doc", "python3-zed", "zed-tools"};
    for (int i = 0; i < 5; i++)
        app(&s, &n,
            "Package: %s\nDescription-md5: 0\nDescription-en: zed library part %d\n Zed is a "
            "library for zipping every delta of data streams.\n .\n This package holds part "
            "%d of zed.\n\n",
            zed[i], i, i);
    // Linked only by the opening sentence (different name keys).
    app(&s, &n, "Package: moonshot\nDescription-md5: 0\nDescription-en: lunar orbit planner\n"
                " Moonshot plans lunar orbits for hobby rockets and space probes today. It "
                "has a GUI.\n\n");
    app(&s, &n, "Package: rocketdata\nDescription-md5: 0\nDescription-en: data files for the "
                "planner\n Moonshot plans lunar orbits for hobby rockets and space probes "
                "today. These are its maps.\n\n");
    // Exact copy of toolaa-alpha's text under another name: a duplicate of the same family.
    app(&s, &n,
        "Package: copycat\nDescription-md5: 0\nDescription-en: alpha alpha utility number 0\n"
        " Tool0 reads alpha files and writes alpha reports.\n It reads files and\n"
        "   writes   reports number 0.\n .\n Second paragraph about delta 0.\n\n");
    // Dropped: too short, synopsis too long, bullet list, repeated package name.
    app(&s, &n, "Package: shorty\nDescription-md5: 0\nDescription-en: a short one\n Too short "
                "to keep.\n\n");
    app(&s, &n, "Package: wordy\nDescription-md5: 0\nDescription-en: one two three four five "
                "six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
                "seventeen eighteen nineteen twenty twentyone\n This description is long enough"
                " to pass the description bounds easily, yes.\n\n");
    app(&s, &n, "Package: listy\nDescription-md5: 0\nDescription-en: a list of things\n "
                "Features:\n  * first feature of the list here\n  * second feature of the "
                "list here\n  * third feature of the list here\n\n");
    app(&s, &n, "Package: toolaa\nDescription-md5: 0\nDescription-en: a second record of"
                " the same name\n This one must be skipped because the name was already "
                "seen before.\n\n");
    // Escaping: quotes and backslashes survive the JSON round trip.
    app(&s, &n, "Package: quoter\nDescription-md5: 0\nDescription-en: prints \"quoted\" "
                "text\n Quoter prints \"quoted\" text with a back\\slash and\ttabs for "
                "testing escapes.\n\n");
    return s;
}

static void test_family_key(void) {
    static const char *cases[][2] = {
        {"libfoo2", "foo"},
        {"libfoo-dev", "foo"},
        {"libfoo-doc", "foo"},
        {"python3-foo", "foo"},
        {"libghc-aeson-prof", "aeson"},
        {"librust-serde+derive-dev", "serde"},
        {"librust-serde-dev", "serde"},
        {"gcc-12-aarch64-linux-gnu", "gcc"},
        {"lib32stdc++6", "stdc++"},
        {"golang-github-spf13-cobra-dev", "spf13-cobra"},
        {"r-cran-dplyr", "dplyr"},
        {"node-lodash", "lodash"},
        {"libxml-libxml-perl", "xml-libxml"},
        {"0ad-data-common", "0ad"},
        {"zsh", "zsh"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *k = debsum_family_key(cases[i][0]);
        EXPECTF(!strcmp(k, cases[i][1]), "%s -> %s, want %s", cases[i][0], k, cases[i][1]);
        free(k);
    }
}

static void test_parse(void) {
    char *t = synthetic_translation();
    debsum_records_t r = {0};
    debsum_stats_t st = {0};
    lb_err_t err = {0};
    EXPECTF(debsum_parse_translation(t, strlen(t), "syn", &r, &st, &err) == 0, "%s", err.msg);
    EXPECTF(r.n == 72 && st.parsed == 73 && st.repeated == 1, "n %zu parsed %zu repeated %zu",
            r.n, st.parsed, st.repeated);
    if (r.n < 72) goto done;
    EXPECT(!strcmp(r.v[0].package, "toolaa"));
    EXPECT(!strcmp(r.v[0].synopsis, "alpha alpha utility number 0"));
    EXPECTF(!strcmp(r.v[0].description, "Tool0 reads alpha files and writes alpha reports. It "
                                        "reads files and writes reports number 0. Second "
                                        "paragraph about delta 0."),
            "%s", r.v[0].description);
    debsum_record_t *listy = NULL;
    for (size_t i = 0; i < r.n; i++)
        if (!strcmp(r.v[i].package, "listy")) listy = &r.v[i];
    EXPECT(listy && listy->bullet_words == 21);
    // Compressed input is named, with the tool to use.
    EXPECT(debsum_parse_translation("\x1f\x8b\x08\x00", 4, "T.gz", &r, &st, &err) == -1 &&
           strstr(err.msg, "gzip") && strstr(err.msg, "T.gz"));
    EXPECT(debsum_parse_translation("hello\nworld\n", 12, "notes.txt", &r, &st, &err) == -1 &&
           strstr(err.msg, "Package:"));
done:
    debsum_records_free(&r);
    free(t);
}

static int count_prefix(const debsum_records_t *r, const char *pre) {
    int n = 0;
    for (size_t i = 0; i < r->n; i++) n += strncmp(r->v[i].description, pre, strlen(pre)) == 0;
    return n;
}

static const debsum_record_t *find(const debsum_records_t *s, int ns, const char *pkg) {
    for (int k = 0; k < ns; k++)
        for (size_t i = 0; i < s[k].n; i++)
            if (!strcmp(s[k].v[i].package, pkg)) return &s[k].v[i];
    return NULL;
}

static void test_split(void) {
    char *t = synthetic_translation();
    debsum_records_t r = {0}, sp[3] = {{0}, {0}, {0}};
    debsum_stats_t st = {0};
    lb_err_t err = {0};
    debsum_options_t o;
    debsum_options_default(&o);
    o.n_train = 1000;
    o.n_validation = 5;
    o.n_test = 6;
    EXPECT(debsum_parse_translation(t, strlen(t), "syn", &r, &st, &err) == 0);
    EXPECTF(debsum_split(&r, &o, &sp[0], &sp[1], &sp[2], &st, &err) == 0, "%s", err.msg);
    EXPECTF(st.filtered_len == 2 && st.filtered_bullet == 1, "len %zu bullet %zu",
            st.filtered_len, st.filtered_bullet);
    // 60 tools + 1 quoter + zed family + moon family = 63 families
    EXPECTF(st.families == 63, "%zu families", st.families);
    EXPECTF(st.duplicates == 1 && st.capped == 3, "dup %zu capped %zu", st.duplicates, st.capped);
    EXPECT(sp[1].n == 5 && sp[2].n == 6);
    // 65 usable (60 tools, quoter, two of zed, moonshot + rocketdata); 11 go to the eval
    // splits, where a two-member family gives only its first member.
    int zed_eval = count_prefix(&sp[1], "Zed is") + count_prefix(&sp[2], "Zed is");
    int moon_eval = count_prefix(&sp[1], "Moonshot") + count_prefix(&sp[2], "Moonshot");
    EXPECT(st.usable == 65 && zed_eval <= 1 && moon_eval <= 1);
    EXPECTF(sp[0].n == (size_t)(65 - 11 - zed_eval - moon_eval), "train %zu", sp[0].n);
    // The exact copy is gone, the dropped records are absent.
    EXPECT(!find(sp, 3, "copycat") && find(sp, 3, "toolaa"));
    EXPECT(!find(sp, 3, "shorty") && !find(sp, 3, "wordy") && !find(sp, 3, "listy"));
    // The zed family gives at most two examples (one if it landed in an eval split), and
    // prefers the shortest names.
    int zed = count_prefix(&sp[0], "Zed is") + count_prefix(&sp[1], "Zed is") +
              count_prefix(&sp[2], "Zed is");
    EXPECT(zed == 1 || zed == 2);
    EXPECT(find(sp, 3, "libzed3") || find(sp, 3, "libzed-dev"));
    // Family-disjoint: no family key, synopsis or opening shared by two splits.
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            for (size_t i = 0; i < sp[a].n; i++)
                for (size_t j = 0; j < sp[b].n; j++) {
                    const debsum_record_t *x = &sp[a].v[i], *y = &sp[b].v[j];
                    EXPECTF(strcmp(x->family, y->family) != 0, "%s / %s", x->package, y->package);
                    EXPECT(strcasecmp(x->synopsis, y->synopsis) != 0);
                    EXPECTF(strncmp(x->description, y->description, 40) != 0, "%s / %s",
                            x->package, y->package);
                }
    // moonshot and rocketdata share only an opening sentence: one family, in one split.
    int moon_train = count_prefix(&sp[0], "Moonshot");
    EXPECTF((moon_eval == 1 && moon_train == 0) || (moon_eval == 0 && moon_train == 2),
            "eval %d train %d", moon_eval, moon_train);
    // Too few families for the eval splits is an error that says so.
    debsum_records_t a = {0}, b = {0}, c = {0};
    o.n_test = 100;
    EXPECT(debsum_split(&r, &o, &a, &b, &c, NULL, &err) == -1 && strstr(err.msg, "families"));
    debsum_records_free(&a);
    debsum_records_free(&b);
    debsum_records_free(&c);
    for (int k = 0; k < 3; k++) debsum_records_free(&sp[k]);
    debsum_records_free(&r);
    free(t);
}

static char *read_all(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return lb_read_file(path, len, NULL);
}

static void test_build_reproducible(void) {
    char *t = synthetic_translation();
    char in[300], in2[300], out1[300], out2[300], out3[300];
    snprintf(in, sizeof in, "%s/Translation-en", tmpdir);
    snprintf(in2, sizeof in2, "%s/Translation-en-updates", tmpdir);
    snprintf(out1, sizeof out1, "%s/out1", tmpdir);
    snprintf(out2, sizeof out2, "%s/out2", tmpdir);
    snprintf(out3, sizeof out3, "%s/out3", tmpdir);
    write_text(in, t);
    // A second file whose record for an existing name is ignored (first file wins).
    write_text(in2, "Package: toolba\nDescription-md5: 0\nDescription-en: replaced "
                    "synopsis here\n A replaced description that must not win over the "
                    "first file's one.\n\n");
    debsum_options_t o;
    debsum_options_default(&o);
    o.n_train = 1000;
    o.n_validation = 5;
    o.n_test = 6;
    lb_err_t err = {0};
    debsum_stats_t st;
    const char *paths[] = {in, in2};
    EXPECTF(debsum_build(paths, 2, out1, &o, &st, NULL, NULL, &err) == 0, "%s", err.msg);
    EXPECT(st.repeated == 2 && st.validation == 5 && st.test == 6);
    EXPECT(st.usable == 65 && st.train >= 65 - 13 && st.train <= 65 - 11);
    size_t want_lines[3] = {st.train, st.validation, st.test};
    EXPECT(debsum_build(paths, 2, out2, &o, &st, NULL, NULL, &err) == 0);
    o.seed = 7;
    EXPECT(debsum_build(paths, 2, out3, &o, &st, NULL, NULL, &err) == 0);
    static const char *names[] = {"train.jsonl", "validation.jsonl", "test.jsonl"};
    int differs = 0;
    for (int k = 0; k < 3; k++) {
        size_t l1 = 0, l2 = 0, l3 = 0;
        char *a = read_all(out1, names[k], &l1), *b = read_all(out2, names[k], &l2),
             *c = read_all(out3, names[k], &l3);
        EXPECT(a && b && c);
        if (a && b) EXPECTF(l1 == l2 && memcmp(a, b, l1) == 0, "%s differs between runs", names[k]);
        if (a && c) differs += l1 != l3 || memcmp(a, c, l1) != 0;
        // Every line is one JSON object with the three keys in order.
        if (a) {
            int lines = 0;
            for (char *line = a; *line;) {
                char *nl = strchr(line, '\n');
                EXPECT(nl != NULL);
                if (!nl) break;
                *nl = 0;
                EXPECT(!strncmp(line, "{\"description\":", 15));
                cJSON *j = cJSON_Parse(line);
                EXPECT(j && cJSON_GetArraySize(j) == 3);
                const cJSON *pkg = cJSON_GetObjectItem(j, "package");
                if (pkg && !strcmp(pkg->valuestring, "quoter"))
                    EXPECT(!strcmp(cJSON_GetObjectItem(j, "description")->valuestring,
                                   "Quoter prints \"quoted\" text with a back\\slash and tabs "
                                   "for testing escapes."));
                if (pkg && !strcmp(pkg->valuestring, "toolba"))
                    EXPECT(!strstr(cJSON_GetObjectItem(j, "description")->valuestring, "replaced"));
                cJSON_Delete(j);
                lines++;
                line = nl + 1;
            }
            EXPECTF((size_t)lines == want_lines[k], "%s: %d lines", names[k], lines);
        }
        free(a);
        free(b);
        free(c);
    }
    EXPECT(differs > 0);  // another seed, another split
    const char *missing[] = {"tests/fixtures/no-such-Translation-en"};
    EXPECT(debsum_build(missing, 1, out1, &o, &st, NULL, NULL, &err) == -1 &&
           strstr(err.msg, "no-such-Translation-en"));
    free(t);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// The first eight words, marked so that they never equal a family key.
static char *lead8(const char *d) {
    const char *p = d;
    for (int w = 0; *p && w < 8; w++) {
        while (*p == ' ') p++;
        while (*p && *p != ' ') p++;
    }
    size_t n = (size_t)(p - d);
    char *s = xmalloc(n + 2);
    s[0] = '\x01';
    for (size_t i = 0; i < n; i++) s[i + 1] = (d[i] >= 'A' && d[i] <= 'Z') ? (char)(d[i] + 32) : d[i];
    s[n + 1] = 0;
    return s;
}

// The committed snapshot: sizes, fields, and no family key or 8-word opening shared
// between train and test.
static void test_committed_snapshot(void) {
    static const char *files[] = {"experiments/data/debsum/train.jsonl",
                                  "experiments/data/debsum/validation.jsonl",
                                  "experiments/data/debsum/test.jsonl"};
    static const size_t want[] = {20000, 500, 500};
    debsum_records_t sp[3] = {{0}, {0}, {0}};
    for (int k = 0; k < 3; k++) {
        size_t len;
        char *text = lb_read_file(files[k], &len, NULL);
        EXPECTF(text != NULL, "%s missing", files[k]);
        if (!text) continue;
        for (char *line = text; *line;) {
            char *nl = strchr(line, '\n');
            if (!nl) break;
            *nl = 0;
            cJSON *j = cJSON_Parse(line);
            const cJSON *d = cJSON_GetObjectItem(j, "description"),
                        *s = cJSON_GetObjectItem(j, "synopsis"),
                        *p = cJSON_GetObjectItem(j, "package");
            EXPECT(cJSON_IsString(d) && cJSON_IsString(s) && cJSON_IsString(p));
            if (cJSON_IsString(d) && cJSON_IsString(s) && cJSON_IsString(p)) {
                debsum_record_t *r;
                if (sp[k].n == sp[k].cap) {
                    sp[k].cap = sp[k].cap ? sp[k].cap * 2 : 1024;
                    sp[k].v = xrealloc(sp[k].v, sp[k].cap * sizeof *sp[k].v);
                }
                r = &sp[k].v[sp[k].n++];
                memset(r, 0, sizeof *r);
                r->description = xstrdup(d->valuestring);
                r->synopsis = xstrdup(s->valuestring);
                r->package = xstrdup(p->valuestring);
                r->family = debsum_family_key(p->valuestring);
            }
            cJSON_Delete(j);
            line = nl + 1;
        }
        free(text);
        EXPECTF(sp[k].n == want[k], "%s: %zu lines", files[k], sp[k].n);
    }
    // Sorted train keys, then a binary search for each evaluation example's keys.
    size_t nt = sp[0].n;
    char **keys = xmalloc((2 * nt + 1) * sizeof *keys);
    for (size_t j = 0; j < nt; j++) {
        keys[2 * j] = xstrdup(sp[0].v[j].family);
        keys[2 * j + 1] = lead8(sp[0].v[j].description);
    }
    qsort(keys, 2 * nt, sizeof *keys, cmp_str);
    size_t shared_key = 0, shared_lead = 0;
    for (int e = 1; e < 3; e++)
        for (size_t i = 0; i < sp[e].n; i++) {
            char *lead = lead8(sp[e].v[i].description);
            const char *fk = sp[e].v[i].family;
            shared_key += bsearch(&fk, keys, 2 * nt, sizeof *keys, cmp_str) != NULL;
            shared_lead += bsearch(&lead, keys, 2 * nt, sizeof *keys, cmp_str) != NULL;
            free(lead);
        }
    for (size_t j = 0; j < 2 * nt; j++) free(keys[j]);
    free(keys);
    EXPECTF(shared_key == 0 && shared_lead == 0, "%zu shared family keys, %zu shared openings",
            shared_key, shared_lead);
    for (int k = 0; k < 3; k++) debsum_records_free(&sp[k]);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lb_debsum_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_family_key);
    RUN(test_parse);
    RUN(test_split);
    RUN(test_build_reproducible);
    RUN(test_committed_snapshot);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TH_DONE();
}
