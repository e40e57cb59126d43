#include "debsum.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

void debsum_options_default(debsum_options_t *o) {
    o->seed = 42;
    o->n_train = 20000;
    o->n_validation = 500;
    o->n_test = 500;
    o->family_cap = 2;
    o->min_desc_words = 10;
    o->max_desc_words = 400;
    o->min_syn_words = 2;
    o->max_syn_words = 20;
    o->max_bullet_share = 0.6;
}

// ---- hashing: FNV-1a, then the splitmix64 finalizer so that the seed changes every bit ----

static uint64_t splitmix64_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}

// The seeded 64-bit hash used for every ordering: FNV-1a over the bytes, xor the seed,
// then the splitmix64 finalizer.
static uint64_t debsum_hash(uint64_t seed, const char *s) { return splitmix64_mix(fnv1a(s) ^ seed); }

// ---- a string → index map (open addressing); keys are borrowed, not copied ----

typedef struct {
    const char **keys;
    size_t *vals;
    size_t cap, n;
} strmap_t;

static void strmap_init(strmap_t *m, size_t hint) {
    m->cap = 64;
    while (m->cap < hint * 2) m->cap *= 2;
    m->keys = xcalloc(m->cap, sizeof *m->keys);
    m->vals = xcalloc(m->cap, sizeof *m->vals);
    m->n = 0;
}

static void strmap_free(strmap_t *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

// Returns the slot of key (existing or empty).
static size_t strmap_slot(const strmap_t *m, const char *key) {
    size_t i = (size_t)fnv1a(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
    return i;
}

// Inserts key → val unless key is present; returns the value stored under key.
static size_t strmap_put(strmap_t *m, const char *key, size_t val) {
    if ((m->n + 1) * 2 > m->cap) {
        strmap_t g;
        strmap_init(&g, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t s = strmap_slot(&g, m->keys[i]);
                g.keys[s] = m->keys[i];
                g.vals[s] = m->vals[i];
                g.n++;
            }
        strmap_free(m);
        *m = g;
    }
    size_t s = strmap_slot(m, key);
    if (m->keys[s]) return m->vals[s];
    m->keys[s] = key;
    m->vals[s] = val;
    m->n++;
    return val;
}

// ---- records ----

void debsum_records_free(debsum_records_t *r) {
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].package);
        free(r->v[i].synopsis);
        free(r->v[i].description);
        free(r->v[i].family);
    }
    free(r->v);
    memset(r, 0, sizeof *r);
}

static debsum_record_t *records_push(debsum_records_t *r) {
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->v = xrealloc(r->v, r->cap * sizeof *r->v);
    }
    debsum_record_t *e = &r->v[r->n++];
    memset(e, 0, sizeof *e);
    return e;
}

// ---- growing text buffer ----

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Appends the words of s[0..n) to b, separated by single spaces; returns the word count.
static int buf_put_words(buf_t *b, const char *s, size_t n) {
    int words = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space((unsigned char)s[i])) i++;
        size_t j = i;
        while (j < n && !is_space((unsigned char)s[j])) j++;
        if (j > i) {
            if (b->n) buf_put(b, " ", 1);
            buf_put(b, s + i, j - i);
            words++;
        }
        i = j;
    }
    return words;
}

static int count_words(const char *s) {
    int w = 0, in = 0;
    for (; *s; s++) {
        if (is_space((unsigned char)*s)) in = 0;
        else if (!in) in = 1, w++;
    }
    return w;
}

// A bullet line starts (after indentation) with *, -, +, o or • and a space.
static int is_bullet_line(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    if (i >= n) return 0;
    size_t m = 0;
    if (s[i] == '*' || s[i] == '-' || s[i] == '+' || s[i] == 'o') m = 1;
    else if (n - i >= 3 && (unsigned char)s[i] == 0xe2 && (unsigned char)s[i + 1] == 0x80 &&
             (unsigned char)s[i + 2] == 0xa2)
        m = 3;
    if (!m) return 0;
    return i + m < n && (s[i + m] == ' ' || s[i + m] == '\t');
}

static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int k;
        uint32_t cp;
        if (c < 0x80) { p++; continue; }
        else if ((c & 0xe0) == 0xc0) k = 1, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0) k = 2, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0) k = 3, cp = c & 0x07;
        else return 0;
        for (int i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += k + 1;
    }
    return 1;
}

static int starts_with(const char *s, size_t n, const char *pre) {
    size_t m = strlen(pre);
    return n >= m && memcmp(s, pre, m) == 0;
}

// ---- parsing ----

static const char *compressed_kind(const unsigned char *t, size_t len) {
    if (len >= 2 && t[0] == 0x1f && t[1] == 0x8b) return "gzip (use gunzip -k)";
    if (len >= 6 && memcmp(t, "\xfd" "7zXZ", 5) == 0) return "xz (use unxz -k)";
    if (len >= 4 && t[0] == 0x04 && t[1] == 0x22 && t[2] == 0x4d && t[3] == 0x18)
        return "lz4 (use lz4 -d)";
    if (len >= 3 && memcmp(t, "BZh", 3) == 0) return "bzip2 (use bunzip2 -k)";
    if (len >= 4 && t[0] == 0x28 && t[1] == 0xb5 && t[2] == 0x2f && t[3] == 0xfd)
        return "zstd (use zstd -d)";
    return NULL;
}

// Finishes the record being parsed: stores it unless the package was seen before.
static void finish_record(debsum_records_t *out, strmap_t *seen, char **pkg, buf_t *syn,
                          buf_t *desc, int bullet_words, int have_desc, debsum_stats_t *st) {
    if (*pkg && have_desc) {
        st->parsed++;
        size_t idx = out->n;
        // The map borrows the key: check first with the temporary name, then store the copy.
        size_t slot = strmap_slot(seen, *pkg);
        if (seen->keys[slot]) {
            st->repeated++;
        } else {
            debsum_record_t *r = records_push(out);
            r->package = *pkg;
            *pkg = NULL;
            r->synopsis = xstrdup(syn->p ? syn->p : "");
            r->description = xstrdup(desc->p ? desc->p : "");
            r->bullet_words = bullet_words;
            strmap_put(seen, r->package, idx);
        }
    }
    free(*pkg);
    *pkg = NULL;
    syn->n = desc->n = 0;
    if (syn->p) syn->p[0] = 0;
    if (desc->p) desc->p[0] = 0;
}

int debsum_parse_translation(const char *text, size_t len, const char *path,
                             debsum_records_t *out, debsum_stats_t *stats, lb_err_t *err) {
    debsum_stats_t dummy;
    if (!stats) stats = &dummy, memset(&dummy, 0, sizeof dummy);
    const char *kind = compressed_kind((const unsigned char *)text, len);
    if (kind) {
        return lb_err_set(err, LB_EFORMAT,
                          "%s is compressed with %s; pass the decompressed Translation-en file",
                          path, kind);
    }
    strmap_t seen;
    strmap_init(&seen, out->n + 1024);
    // Names already parsed from earlier files: the map borrows the package strings, which
    // stay put when out's array of structs grows.
    for (size_t i = 0; i < out->n; i++) strmap_put(&seen, out->v[i].package, i);

    char *pkg = NULL;
    buf_t syn = {0}, desc = {0};
    int bullet_words = 0, have_desc = 0, in_desc = 0, packages = 0;
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r') n--;
        lineno++;
        if (n == 0) {
            finish_record(out, &seen, &pkg, &syn, &desc, bullet_words, have_desc, stats);
            bullet_words = have_desc = in_desc = 0;
        } else if (p[0] == ' ' || p[0] == '\t') {
            if (in_desc) {
                const char *c = p + 1;
                size_t m = n - 1;
                size_t i = 0;
                while (i < m && is_space((unsigned char)c[i])) i++;
                int is_sep = (m - i == 1 && c[i] == '.');
                if (!is_sep) {
                    int w = buf_put_words(&desc, c, m);
                    if (is_bullet_line(c, m)) bullet_words += w;
                }
            }
        } else if (starts_with(p, n, "Package:")) {
            finish_record(out, &seen, &pkg, &syn, &desc, bullet_words, have_desc, stats);
            bullet_words = have_desc = in_desc = 0;
            size_t i = 8;
            while (i < n && is_space((unsigned char)p[i])) i++;
            size_t j = n;
            while (j > i && is_space((unsigned char)p[j - 1])) j--;
            pkg = xmalloc(j - i + 1);
            memcpy(pkg, p + i, j - i);
            pkg[j - i] = 0;
            packages++;
        } else if (starts_with(p, n, "Description-en:")) {
            if (!pkg) {
                free(syn.p);
                free(desc.p);
                strmap_free(&seen);
                return lb_err_set(err, LB_EFORMAT,
                                  "%s line %zu: Description-en before any Package: field; pass "
                                  "an apt Translation-en file",
                                  path, lineno);
            }
            syn.n = 0;
            if (syn.p) syn.p[0] = 0;
            buf_put_words(&syn, p + 15, n - 15);
            have_desc = in_desc = 1;
        } else {
            in_desc = 0;  // another field (Description-md5, ...): its continuations are not ours
        }
        p = nl ? nl + 1 : end;
    }
    finish_record(out, &seen, &pkg, &syn, &desc, bullet_words, have_desc, stats);
    free(syn.p);
    free(desc.p);
    strmap_free(&seen);
    if (len > 0 && packages == 0) {
        return lb_err_set(err, LB_EFORMAT,
                          "%s has no Package: field; pass an apt Translation-en file (from "
                          "/var/lib/apt/lists after apt-get update -o Acquire::Languages=en)",
                          path);
    }
    return 0;
}

// ---- family keys ----

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t m = strlen(suf);
    return n > m && memcmp(s + n - m, suf, m) == 0;
}

char *debsum_family_key(const char *package) {
    // Ecosystem prefixes, longest first where one contains another.
    static const char *const prefixes[] = {
        "golang-github-", "golang-gitlab-", "golang-golang-x-", "golang-gopkg-", "golang-",
        "python3-", "python-", "libghc-", "librust-", "node-", "ruby-", "r-cran-", "r-bioc-",
        "r-other-", "php-", "elpa-", "libjs-", "lua-", "cl-", "fonts-", "gir1.2-",
        "tryton-modules-", "libreoffice-", "texlive-", "xfonts-", "hunspell-", "myspell-",
        "aspell-", "hyphen-", "mythes-", "tesseract-ocr-", "ocaml-", "libocaml-", "gnome-",
        "kde-", "qml-module-", "libqt5", "libkf5", "dict-", "task-", "linux-",
    };
    static const char *const suffixes[] = {
        "-dev", "-doc", "-dbg", "-dbgsym", "-common", "-data", "-bin", "-tools", "-utils",
        "-perl", "-java", "-cil", "-ocaml", "-prof", "-examples", "-plugin", "-plugins",
        "-runtime", "-shared", "-static", "-headers", "-source", "-src", "-cross", "-tests",
        "-test", "-clojure", "-el", "-multilib", "-base", "-core", "-html", "-pdf", "-locales",
        "-l10n", "-i18n", "-lib", "-libs", "-extra", "-all", "-x86", "-client", "-server",
    };
    size_t len = strlen(package);
    char *k = xmalloc(len + 1);
    // lower-case copy
    for (size_t i = 0; i <= len; i++) {
        char c = package[i];
        k[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    // librust-foo+feature-dev: every feature package is one crate.
    if (strncmp(k, "librust-", 8) == 0) {
        char *plus = strchr(k, '+');
        if (plus) {
            char *dash = strrchr(plus, '-');
            if (dash) memmove(plus, dash, strlen(dash) + 1);
            else *plus = 0;
        }
    }
    // Multilib variants: lib32foo, lib64foo, libn32foo, libx32foo → libfoo.
    static const char *const multilib[] = {"libn32", "libx32", "lib32", "lib64", "libhf", "libsf"};
    for (size_t i = 0; i < sizeof multilib / sizeof *multilib; i++) {
        size_t m = strlen(multilib[i]);
        if (strncmp(k, multilib[i], m) == 0 && k[m]) {
            memmove(k + 3, k + m, strlen(k + m) + 1);
            break;
        }
    }
    size_t n = strlen(k);
    for (int changed = 1; changed;) {
        changed = 0;
        // Cross-toolchain triplets: gcc-12-aarch64-linux-gnu → gcc-12.
        char *tri = strstr(k, "-linux-");
        if (!tri) tri = strstr(k, "-kfreebsd-");
        if (!tri) tri = strstr(k, "-gnu-");
        if (tri && tri > k) {
            char *c = tri - 1;
            while (c > k && *c != '-') c--;
            if (c > k) {
                *c = 0;
                n = strlen(k);
                changed = 1;
            }
        }
        for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
            if (ends_with(k, n, suffixes[i])) {
                n -= strlen(suffixes[i]);
                k[n] = 0;
                changed = 1;
            }
        }
        // Trailing version numbers: libfoo2, libfoo-1.0-0, gcc-12.
        size_t m = n;
        while (m > 1 && (k[m - 1] == '-' || k[m - 1] == '.' || (k[m - 1] >= '0' && k[m - 1] <= '9')))
            m--;
        if (m < n) {
            n = m;
            k[n] = 0;
            changed = 1;
        }
    }
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t m = strlen(prefixes[i]);
        if (n > m && strncmp(k, prefixes[i], m) == 0) {
            memmove(k, k + m, n - m + 1);
            n -= m;
            break;
        }
    }
    if (n > 3 && strncmp(k, "lib", 3) == 0) {
        memmove(k, k + 3, n - 3 + 1);
        n -= 3;
    }
    while (n > 1 && (k[n - 1] == '-' || k[n - 1] == '.' || (k[n - 1] >= '0' && k[n - 1] <= '9')))
        k[--n] = 0;
    return k;
}

// ---- splitting ----

static size_t uf_find(size_t *parent, size_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

static void uf_union(size_t *parent, size_t a, size_t b) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    // The smaller index becomes the root, so roots do not depend on the order of unions.
    if (a < b) parent[b] = a;
    else if (b < a) parent[a] = b;
}

typedef struct {
    const debsum_record_t *rec;
    size_t comp;  // root of the record's family
} member_t;

typedef struct {
    size_t first, count;  // members[first .. first+count) after sorting
    uint64_t hash;
    const char *key;      // family key of the preferred member
    size_t *chosen;       // indexes (into members) of the examples kept, preferred first
    int n_chosen;
} family_t;

// Members of one family sort together, preferred member first: the shortest package name
// (the main package rather than its -doc or -dev), then by name.
static int member_cmp(const void *a, const void *b) {
    const member_t *x = a, *y = b;
    if (x->comp != y->comp) return x->comp < y->comp ? -1 : 1;
    size_t lx = strlen(x->rec->package), ly = strlen(y->rec->package);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->rec->package, y->rec->package);
}

static int family_cmp(const void *a, const void *b) {
    const family_t *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return strcmp(x->key, y->key);
}

typedef struct {
    uint64_t hash;
    const debsum_record_t *rec;
} ordered_t;

static int ordered_cmp(const void *a, const void *b) {
    const ordered_t *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return strcmp(x->rec->package, y->rec->package);
}

static void record_copy(debsum_records_t *dst, const debsum_record_t *src) {
    debsum_record_t *r = records_push(dst);
    r->package = xstrdup(src->package);
    r->synopsis = xstrdup(src->synopsis);
    r->description = xstrdup(src->description);
    r->family = xstrdup(src->family ? src->family : "");
    r->bullet_words = src->bullet_words;
}

// Writes the picked records into dst in the seeded order of their package names, so that
// a split's order does not depend on how families were visited.
static void emit_split(debsum_records_t *dst, const debsum_record_t **picked, size_t n,
                       uint64_t seed) {
    ordered_t *o = xmalloc((n ? n : 1) * sizeof *o);
    for (size_t i = 0; i < n; i++) {
        o[i].rec = picked[i];
        o[i].hash = debsum_hash(seed ^ 0x5eed5eed5eed5eedULL, picked[i]->package);
    }
    qsort(o, n, sizeof *o, ordered_cmp);
    for (size_t i = 0; i < n; i++) record_copy(dst, o[i].rec);
    free(o);
}

// The first sentence: up to the first '.', '!' or '?' followed by a space, or all of it.
// Packages built from one source usually open with the same sentence ("Dovecot is a mail
// server ..."), which the package names alone do not reveal.
static char *first_sentence_dup(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i + 1 < n; i++)
        if ((s[i] == '.' || s[i] == '!' || s[i] == '?') && s[i + 1] == ' ') {
            n = i + 1;
            break;
        }
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

// The template of a first sentence: lower-cased, with every word that holds a digit or a
// part of the package name (3+ letters, split at - _ . +) replaced by '#'. Ecosystem
// templates ("This package contains the source for the Rust bit-vec crate, ...",
// "... kernel header files for Linux kernel 6.1.0-47-marvell") then become one key.
static char *template_key(const char *first, const char *package) {
    char toks[16][64];
    int nt = 0;
    for (const char *p = package; *p && nt < 16;) {
        while (*p == '-' || *p == '_' || *p == '.' || *p == '+') p++;
        size_t m = 0;
        while (p[m] && p[m] != '-' && p[m] != '_' && p[m] != '.' && p[m] != '+') m++;
        if (m >= 3 && m < 64 && !(m == 3 && !strncasecmp(p, "lib", 3))) {
            for (size_t i = 0; i < m; i++)
                toks[nt][i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] - 'A' + 'a') : p[i];
            toks[nt++][m] = 0;
        }
        p += m;
    }
    buf_t b = {0};
    buf_put(&b, "", 0);
    char word[256];
    for (const char *p = first; *p;) {
        while (*p == ' ') p++;
        size_t m = 0;
        while (p[m] && p[m] != ' ') m++;
        if (!m) break;
        int mask = 0;
        size_t wm = m < sizeof word - 1 ? m : sizeof word - 1;
        for (size_t i = 0; i < wm; i++) {
            char c = p[i];
            if (c >= '0' && c <= '9') mask = 1;
            word[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        word[wm] = 0;
        for (int t = 0; t < nt && !mask; t++) mask = strstr(word, toks[t]) != NULL;
        if (b.n) buf_put(&b, " ", 1);
        if (mask) buf_put(&b, "#", 1);
        else buf_put(&b, word, wm);
        p += m;
    }
    return b.p;
}

// The first eight words, lower-cased: packages of one source that reword their opening
// sentence still open alike ("Yorick is an interpreted programming language for: ...").
static char *lead_key(const char *s) {
    const char *p = s;
    for (int w = 0; *p && w < 8; w++) {
        while (*p == ' ') p++;
        while (*p && *p != ' ') p++;
    }
    size_t n = (size_t)(p - s);
    char *d = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    d[n] = 0;
    return d;
}

static char *lowercase_dup(const char *s) {
    char *d = xstrdup(s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    return d;
}

int debsum_split(const debsum_records_t *in, const debsum_options_t *opt,
                 debsum_records_t *train, debsum_records_t *validation, debsum_records_t *test,
                 debsum_stats_t *stats, lb_err_t *err) {
    debsum_stats_t dummy;
    if (!stats) stats = &dummy, memset(&dummy, 0, sizeof dummy);
    if (opt->family_cap < 1 || opt->family_cap > 64 || opt->n_train < 0 ||
        opt->n_validation < 0 || opt->n_test < 0)
        return lb_err_set(err, LB_EARG,
                          "debsum options out of range: family cap must be 1..64 and split "
                          "sizes non-negative");

    // 1. Filter into a working copy (with family keys).
    debsum_records_t kept = {0};
    for (size_t i = 0; i < in->n; i++) {
        const debsum_record_t *r = &in->v[i];
        if (!valid_utf8(r->package) || !valid_utf8(r->synopsis) || !valid_utf8(r->description)) {
            stats->bad_utf8++;
            continue;
        }
        int dw = count_words(r->description), sw = count_words(r->synopsis);
        if (dw < opt->min_desc_words || dw > opt->max_desc_words || sw < opt->min_syn_words ||
            sw > opt->max_syn_words) {
            stats->filtered_len++;
            continue;
        }
        if (r->bullet_words > opt->max_bullet_share * dw) {
            stats->filtered_bullet++;
            continue;
        }
        record_copy(&kept, r);
        free(kept.v[kept.n - 1].family);
        kept.v[kept.n - 1].family = debsum_family_key(r->package);
    }
    stats->kept = kept.n;

    // 2. Families: records sharing a name key, a synopsis, a description's first sentence,
    //    its template (name parts and numbers masked) or its first eight words are one
    //    family (union-find), so templates and copies stay together and never straddle two
    //    splits.
    size_t n = kept.n;
    size_t *parent = xmalloc((n ? n : 1) * sizeof *parent);
    char **lower_syn = xmalloc((n ? n : 1) * sizeof *lower_syn);
    char **first = xmalloc((n ? n : 1) * sizeof *first);
    char **templ = xmalloc((n ? n : 1) * sizeof *templ);
    char **lead = xmalloc((n ? n : 1) * sizeof *lead);
    for (size_t i = 0; i < n; i++) {
        parent[i] = i;
        lower_syn[i] = lowercase_dup(kept.v[i].synopsis);
        first[i] = first_sentence_dup(kept.v[i].description);
        templ[i] = template_key(first[i], kept.v[i].package);
        lead[i] = lead_key(kept.v[i].description);
    }
    strmap_t by_key, by_syn, by_first, by_templ, by_lead;
    strmap_init(&by_key, n);
    strmap_init(&by_syn, n);
    strmap_init(&by_first, n);
    strmap_init(&by_templ, n);
    strmap_init(&by_lead, n);
    for (size_t i = 0; i < n; i++) {
        uf_union(parent, i, strmap_put(&by_key, kept.v[i].family, i));
        uf_union(parent, i, strmap_put(&by_syn, lower_syn[i], i));
        // A whole description shares its first sentence, so this covers exact copies too.
        uf_union(parent, i, strmap_put(&by_first, first[i], i));
        uf_union(parent, i, strmap_put(&by_templ, templ[i], i));
        uf_union(parent, i, strmap_put(&by_lead, lead[i], i));
    }
    strmap_free(&by_key);
    strmap_free(&by_syn);
    strmap_free(&by_first);
    strmap_free(&by_templ);
    strmap_free(&by_lead);

    member_t *mem = xmalloc((n ? n : 1) * sizeof *mem);
    for (size_t i = 0; i < n; i++) mem[i].rec = &kept.v[i], mem[i].comp = uf_find(parent, i);
    qsort(mem, n, sizeof *mem, member_cmp);

    size_t nf = 0;
    family_t *fam = xmalloc((n ? n : 1) * sizeof *fam);
    size_t *chosen_all = xmalloc((n ? n : 1) * sizeof *chosen_all);
    size_t n_chosen_all = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && mem[j].comp == mem[i].comp) j++;
        family_t *f = &fam[nf++];
        f->first = i;
        f->count = j - i;
        f->key = mem[i].rec->family;
        f->hash = debsum_hash(opt->seed, f->key);
        f->n_chosen = 0;
        f->chosen = chosen_all + n_chosen_all;
        // 3. Inside a family keep the preferred members whose description and synopsis
        //    both differ from those already kept, up to the cap.
        for (size_t a = i; a < j; a++) {
            int dup = 0;
            for (int c = 0; c < f->n_chosen && !dup; c++) {
                const debsum_record_t *o = mem[f->chosen[c]].rec;
                dup = strcmp(o->description, mem[a].rec->description) == 0 ||
                      strcasecmp(o->synopsis, mem[a].rec->synopsis) == 0;
            }
            if (dup) stats->duplicates++;
            else if (f->n_chosen < opt->family_cap) f->chosen[f->n_chosen++] = a;
            else stats->capped++;
        }
        stats->usable += (size_t)f->n_chosen;
        n_chosen_all += (size_t)f->n_chosen;
        i = j;
    }
    stats->families = nf;

    // 4. Families in seeded order: test, then validation (one example per family), then
    //    train (up to the cap). A family goes to exactly one split.
    qsort(fam, nf, sizeof *fam, family_cmp);
    size_t want[3] = {(size_t)opt->n_test, (size_t)opt->n_validation, (size_t)opt->n_train};
    const debsum_record_t **picked[3];
    size_t got[3] = {0, 0, 0};
    for (int s = 0; s < 3; s++) picked[s] = xmalloc((want[s] ? want[s] : 1) * sizeof **picked);
    size_t fi = 0;
    for (int s = 0; s < 3; s++) {
        while (got[s] < want[s] && fi < nf) {
            family_t *f = &fam[fi++];
            int take = s < 2 ? 1 : f->n_chosen;
            for (int c = 0; c < take && got[s] < want[s]; c++)
                picked[s][got[s]++] = mem[f->chosen[c]].rec;
        }
    }
    stats->families_unused = nf - fi;

    int rc = 0;
    if (got[0] < want[0] || got[1] < want[1]) {
        rc = lb_err_set(err, LB_EARG,
                        "only %zu families pass the filters, too few for %d test and %d "
                        "validation examples; give more Translation-en files or smaller "
                        "--test/--validation",
                        nf, opt->n_test, opt->n_validation);
    } else {
        emit_split(test, picked[0], got[0], opt->seed);
        emit_split(validation, picked[1], got[1], opt->seed);
        emit_split(train, picked[2], got[2], opt->seed);
        stats->test = got[0];
        stats->validation = got[1];
        stats->train = got[2];
    }
    for (int s = 0; s < 3; s++) free(picked[s]);
    for (size_t i = 0; i < n; i++) free(lower_syn[i]), free(first[i]), free(templ[i]), free(lead[i]);
    free(lead);
    free(lower_syn);
    free(first);
    free(templ);
    free(fam);
    free(chosen_all);
    free(mem);
    free(parent);
    debsum_records_free(&kept);
    return rc;
}

// ---- output ----

static void json_put_string(buf_t *b, const char *s) {
    buf_put(b, "\"", 1);
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        const char *esc = NULL;
        char tmp[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\t') esc = "\\t";
        else if (c == '\r') esc = "\\r";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        }
        if (esc) {
            buf_put(b, run, (size_t)(p - run));
            buf_put(b, esc, strlen(esc));
            run = p + 1;
        }
    }
    buf_put(b, run, strlen(run));
    buf_put(b, "\"", 1);
}

// Serializes records as JSONL: one {"description":…,"synopsis":…,"package":…} object per
// line, keys in that order, UTF-8 kept, only '"', '\\' and control characters escaped.
// Returns a new NUL-terminated buffer; *len gets its length.
static char *debsum_format_jsonl(const debsum_records_t *recs, size_t *len) {
    buf_t b = {0};
    buf_put(&b, "", 0);
    for (size_t i = 0; i < recs->n; i++) {
        buf_put(&b, "{\"description\":", 15);
        json_put_string(&b, recs->v[i].description);
        buf_put(&b, ",\"synopsis\":", 12);
        json_put_string(&b, recs->v[i].synopsis);
        buf_put(&b, ",\"package\":", 11);
        json_put_string(&b, recs->v[i].package);
        buf_put(&b, "}\n", 2);
    }
    if (len) *len = b.n;
    return b.p;
}

int debsum_build(const char *const *paths, int n_paths, const char *out_dir,
                 const debsum_options_t *opt, debsum_stats_t *stats,
                 debsum_progress_fn progress, void *ctx, lb_err_t *err) {
    debsum_stats_t dummy;
    if (!stats) stats = &dummy;
    memset(stats, 0, sizeof *stats);
    if (n_paths < 1)
        return lb_err_set(err, LB_EARG, "no Translation-en file given; pass at least one");
    debsum_records_t all = {0}, sp[3] = {{0}, {0}, {0}};
    int rc = -1;
    for (int i = 0; i < n_paths; i++) {
        if (progress) progress(ctx, "parse", (size_t)i, (size_t)n_paths);
        size_t len;
        char *text = lb_read_file(paths[i], &len, err);
        if (!text) goto done;
        int r = debsum_parse_translation(text, len, paths[i], &all, stats, err);
        free(text);
        if (r) goto done;
    }
    if (progress) progress(ctx, "parse", (size_t)n_paths, (size_t)n_paths);
    if (progress) progress(ctx, "split", 0, all.n);
    if (debsum_split(&all, opt, &sp[0], &sp[1], &sp[2], stats, err)) goto done;
    if (progress) progress(ctx, "split", all.n, all.n);
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        lb_err_set(err, LB_EIO, "cannot create the output folder %s: %s; check the path",
                   out_dir, strerror(errno));
        goto done;
    }
    static const char *const names[3] = {"train.jsonl", "validation.jsonl", "test.jsonl"};
    for (int s = 0; s < 3; s++) {
        if (progress) progress(ctx, "write", (size_t)s, 3);
        size_t plen = strlen(out_dir) + strlen(names[s]) + 2;
        char *path = xmalloc(plen);
        snprintf(path, plen, "%s/%s", out_dir, names[s]);
        size_t len;
        char *json = debsum_format_jsonl(&sp[s], &len);
        int r = lb_write_file_atomic(path, json, len, err);
        free(json);
        free(path);
        if (r) goto done;
    }
    if (progress) progress(ctx, "write", 3, 3);
    rc = 0;
done:
    debsum_records_free(&all);
    for (int s = 0; s < 3; s++) debsum_records_free(&sp[s]);
    return rc;
}
