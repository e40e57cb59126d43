// Data sets: loaders, field mapping, splits, tokenization, statistics and batches.
// See data.h for the formats and the rules.
#include "data.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cJSON.h>

// ---- randomness --------------------------------------------------------------------------

uint64_t data_rng_next(uint64_t *state) { return lb_rng_next(state); }

uint32_t data_rng_below(uint64_t *state, uint32_t n) {
    if (n <= 1) return 0;
    // Reject the low values that would make the modulo biased.
    uint64_t threshold = (0 - (uint64_t)n) % n;
    for (;;) {
        uint64_t x = data_rng_next(state);
        if (x >= threshold) return (uint32_t)(x % n);
    }
}

uint64_t data_seed_mix(uint64_t seed, uint64_t stream) {
    uint64_t s = seed;
    uint64_t a = data_rng_next(&s);
    s = a ^ (stream * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL);
    return data_rng_next(&s);
}

void data_shuffle_ints(int *a, int n, uint64_t seed) {
    uint64_t st = seed;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)data_rng_below(&st, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

// ---- small helpers -----------------------------------------------------------------------

typedef struct {
    char *s;
    size_t n, cap;
} sbuf_t;

static void sb_putc(sbuf_t *b, char c) {
    if (b->n + 2 > b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->s = xrealloc(b->s, b->cap);
    }
    b->s[b->n++] = c;
    b->s[b->n] = 0;
}

static void sb_puts(sbuf_t *b, const char *s) {
    while (*s) sb_putc(b, *s++);
}

static char *sb_take(sbuf_t *b) {
    char *s = b->s ? b->s : xstrdup("");
    b->s = NULL;
    b->n = b->cap = 0;
    return s;
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

// A short printable excerpt of text at p, for error messages.
static void excerpt(const char *p, const char *end, char *out, size_t cap) {
    size_t k = 0;
    while (p < end && k + 1 < cap && k < 24 && *p != '\n' && *p != '\r') {
        out[k++] = (*p >= 32 && *p < 127) ? *p : '?';
        p++;
    }
    out[k] = 0;
}

static const char *file_ext(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    return dot && dot != base ? dot : NULL;
}

// ---- records and field mapping -----------------------------------------------------------

// One row of any format: field names and their text (NULL text with kind naming the JSON
// type when the value is not a string).
typedef struct {
    int n;
    const char **names;
    const char **vals;
    const char **kinds;
} rec_t;

static const char *const source_candidates[] = {"dialogue", "description", "source", "text",
                                                "document", "article", "input", NULL};
static const char *const target_candidates[] = {"summary", "synopsis", "target", "headline",
                                                "highlights", "output", "label", NULL};

typedef struct {
    const char *path;
    const data_options_t *opt;
    char *src_field;   // resolved source field
    char **tgt;        // reference base names
    int n_tgt;
    int explicit_list; // a comma list was given: no NAME1.. expansion
    char *seen_refs;   // reference fields met so far, comma-separated
    data_example_t *ex;
    int n, cap;
} mapper_t;

static int rec_find(const rec_t *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->names[i], name)) return i;
    return -1;
}

static void rec_list_fields(const rec_t *r, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < r->n && k + 1 < cap; i++) {
        int w = snprintf(out + k, cap - k, "%s%s", i ? ", " : "", r->names[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
    if (r->n == 0) snprintf(out, cap, "(none)");
}

static void candidates_list(const char *const *c, char *out, size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; c[i] && k + 1 < cap; i++) {
        int w = snprintf(out + k, cap - k, "%s%s", i ? ", " : "", c[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
}

static int rec_has_numbered(const rec_t *r, const char *base) {
    char name[256];
    snprintf(name, sizeof name, "%s1", base);
    return rec_find(r, name) >= 0;
}

static void mapper_init(mapper_t *m, const char *path, const data_options_t *opt) {
    memset(m, 0, sizeof *m);
    m->path = path;
    m->opt = opt;
    if (opt && opt->source_field && *opt->source_field) m->src_field = xstrdup(opt->source_field);
    if (opt && opt->target_field && *opt->target_field) {
        const char *s = opt->target_field;
        m->explicit_list = strchr(s, ',') != NULL;
        while (*s) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            while (len && isspace((unsigned char)*s)) s++, len--;
            while (len && isspace((unsigned char)s[len - 1])) len--;
            if (len) {
                m->tgt = xrealloc(m->tgt, sizeof(char *) * (size_t)(m->n_tgt + 1));
                char *f = xmalloc(len + 1);
                memcpy(f, s, len);
                f[len] = 0;
                m->tgt[m->n_tgt++] = f;
            }
            if (!e) break;
            s = e + 1;
        }
    }
}

static void example_free(data_example_t *e) {
    free(e->source);
    for (int i = 0; i < e->n_refs; i++) free(e->refs[i]);
    free(e->refs);
}

static void mapper_free(mapper_t *m) {
    free(m->src_field);
    for (int i = 0; i < m->n_tgt; i++) free(m->tgt[i]);
    free(m->tgt);
    free(m->seen_refs);
    for (int i = 0; i < m->n; i++) example_free(&m->ex[i]);
    free(m->ex);
}

static void note_ref(mapper_t *m, const char *name) {
    if (m->seen_refs) {
        const char *p = m->seen_refs;
        size_t len = strlen(name);
        while (p) {
            if (!strncmp(p, name, len) && (p[len] == ',' || p[len] == 0)) return;
            p = strchr(p, ',');
            if (p) p++;
        }
    }
    size_t old = m->seen_refs ? strlen(m->seen_refs) : 0;
    m->seen_refs = xrealloc(m->seen_refs, old + strlen(name) + 2);
    if (old) m->seen_refs[old++] = ',';
    strcpy(m->seen_refs + old, name);
}

// Reads the text of one named field, with the errors a user can act on.
static int field_text(const mapper_t *m, const rec_t *r, int line, int i, const char *flag,
                      const char **out, lb_err_t *err) {
    if (!r->vals[i])
        return lb_err_set(err, LB_EFORMAT,
                          "%s line %d: field '%s' is %s, expected text; fix the data or choose "
                          "another field with %s",
                          m->path, line, r->names[i], r->kinds[i] ? r->kinds[i] : "not text",
                          flag);
    if (is_blank(r->vals[i]))
        return lb_err_set(err, LB_EFORMAT,
                          "%s line %d: empty text in field '%s'; remove the example or fill it in",
                          m->path, line, r->names[i]);
    *out = r->vals[i];
    return 0;
}

static int mapper_add(mapper_t *m, const rec_t *r, int line, lb_err_t *err) {
    char present[512], cands[256];
    if (!m->src_field) {
        for (int c = 0; source_candidates[c]; c++)
            if (rec_find(r, source_candidates[c]) >= 0) {
                m->src_field = xstrdup(source_candidates[c]);
                break;
            }
        if (!m->src_field) {
            rec_list_fields(r, present, sizeof present);
            candidates_list(source_candidates, cands, sizeof cands);
            return lb_err_set(err, LB_EFORMAT,
                              "%s line %d: no source field (looked for %s); fields present: %s; "
                              "name it with --source (dataset.source)",
                              m->path, line, cands, present);
        }
    }
    if (m->n_tgt == 0) {
        for (int c = 0; target_candidates[c]; c++)
            if (rec_find(r, target_candidates[c]) >= 0 || rec_has_numbered(r, target_candidates[c])) {
                m->tgt = xmalloc(sizeof(char *));
                m->tgt[0] = xstrdup(target_candidates[c]);
                m->n_tgt = 1;
                break;
            }
        if (m->n_tgt == 0) {
            rec_list_fields(r, present, sizeof present);
            candidates_list(target_candidates, cands, sizeof cands);
            return lb_err_set(err, LB_EFORMAT,
                              "%s line %d: no target field (looked for %s); fields present: %s; "
                              "name it with --target (dataset.target)",
                              m->path, line, cands, present);
        }
    }
    int si = rec_find(r, m->src_field);
    if (si < 0) {
        rec_list_fields(r, present, sizeof present);
        return lb_err_set(err, LB_EFORMAT,
                          "%s line %d: missing field '%s'; fields present: %s; choose the source "
                          "with --source (dataset.source)",
                          m->path, line, m->src_field, present);
    }
    const char *src;
    if (field_text(m, r, line, si, "--source", &src, err)) return -1;

    data_example_t e = {0};
    e.line = line;
    int cap_refs = 0;
    for (int t = 0; t < m->n_tgt; t++) {
        // NAME itself, then NAME1, NAME2, ... (unless an explicit list was given).
        for (int k = 0;; k++) {
            char name[256];
            if (k == 0) snprintf(name, sizeof name, "%s", m->tgt[t]);
            else if (m->explicit_list) break;
            else snprintf(name, sizeof name, "%s%d", m->tgt[t], k);
            int i = rec_find(r, name);
            if (i < 0) {
                if (k == 0) continue;
                break;
            }
            const char *txt;
            if (field_text(m, r, line, i, "--target", &txt, err)) {
                example_free(&e);
                return -1;
            }
            if (e.n_refs == cap_refs) {
                cap_refs = cap_refs ? cap_refs * 2 : 2;
                e.refs = xrealloc(e.refs, sizeof(char *) * (size_t)cap_refs);
            }
            e.refs[e.n_refs++] = xstrdup(txt);
            note_ref(m, name);
        }
    }
    if (e.n_refs == 0) {
        example_free(&e);
        rec_list_fields(r, present, sizeof present);
        if (m->explicit_list)
            return lb_err_set(err, LB_EFORMAT,
                              "%s line %d: missing fields '%s'; fields present: %s; choose the "
                              "target with --target (dataset.target)",
                              m->path, line, m->opt->target_field, present);
        return lb_err_set(err, LB_EFORMAT,
                          "%s line %d: missing field '%s'; fields present: %s; choose the "
                          "target with --target (dataset.target)",
                          m->path, line, m->tgt[0], present);
    }
    e.source = data_format_source(src, m->opt ? m->opt->prefix : NULL,
                                  m->opt ? m->opt->template_text : NULL, err);
    if (!e.source) {
        example_free(&e);
        return -1;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->ex = xrealloc(m->ex, sizeof(data_example_t) * (size_t)m->cap);
    }
    m->ex[m->n++] = e;
    return 0;
}

char *data_format_source(const char *text, const char *prefix, const char *template_text,
                         lb_err_t *err) {
    if (prefix && *prefix && template_text && *template_text) {
        lb_err_set(err, LB_EARG,
                   "both a prompt prefix and a template were given; keep one (a prefix P is "
                   "the template \"P{source}\")");
        return NULL;
    }
    sbuf_t b = {0};
    if (template_text && *template_text) {
        const char *hole = strstr(template_text, "{source}");
        if (!hole) {
            lb_err_set(err, LB_EARG,
                       "the prompt template has no {source}; put {source} where the text goes");
            return NULL;
        }
        // Every {source} is replaced, so a template may quote the text twice.
        const char *p = template_text;
        while ((hole = strstr(p, "{source}"))) {
            while (p < hole) sb_putc(&b, *p++);
            sb_puts(&b, text);
            p = hole + 8;
        }
        sb_puts(&b, p);
        return sb_take(&b);
    }
    if (prefix) sb_puts(&b, prefix);
    sb_puts(&b, text);
    return sb_take(&b);
}

// ---- JSON --------------------------------------------------------------------------------

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "not text";
}

// Maps one JSON object through the mapper.
static int json_object_add(mapper_t *m, const cJSON *obj, int line, lb_err_t *err) {
    if (!cJSON_IsObject(obj))
        return lb_err_set(err, LB_EFORMAT,
                          "%s line %d: expected a JSON object with the example's fields, found %s",
                          m->path, line, json_kind(obj));
    int n = cJSON_GetArraySize(obj);
    rec_t r = {0, xmalloc(sizeof(char *) * (size_t)(n + 1)), xmalloc(sizeof(char *) * (size_t)(n + 1)),
               xmalloc(sizeof(char *) * (size_t)(n + 1))};
    for (const cJSON *c = obj->child; c; c = c->next) {
        r.names[r.n] = c->string ? c->string : "";
        r.vals[r.n] = cJSON_IsString(c) ? c->valuestring : NULL;
        r.kinds[r.n] = cJSON_IsString(c) ? NULL : json_kind(c);
        r.n++;
    }
    int rc = mapper_add(m, &r, line, err);
    free(r.names);
    free(r.vals);
    free(r.kinds);
    return rc;
}

static int bad_json(const mapper_t *m, int line, int col, const char *at, const char *end,
                    const char *hint, lb_err_t *err) {
    char ex[32];
    excerpt(at, end, ex, sizeof ex);
    if (*ex)
        return lb_err_set(err, LB_EFORMAT, "%s line %d: bad JSON at column %d near '%s'; %s",
                          m->path, line, col, ex, hint);
    return lb_err_set(err, LB_EFORMAT, "%s line %d: bad JSON at column %d (unexpected end); %s",
                      m->path, line, col, hint);
}

static int load_jsonl(mapper_t *m, const char *text, size_t len, lb_err_t *err) {
    const char *p = text, *end = text + len;
    int line = 0;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        while (s < le && isspace((unsigned char)*s)) s++;
        if (s < le) {
            const char *stop = NULL;
            cJSON *v = cJSON_ParseWithLengthOpts(s, (size_t)(le - s), &stop, 0);
            const char *hint = "each line must hold one complete JSON object (a pretty-printed "
                               "array belongs in a .json file)";
            if (!v) return bad_json(m, line, (int)(stop - p) + 1, stop, le, hint, err);
            const char *t = stop;
            while (t < le && isspace((unsigned char)*t)) t++;
            if (t < le) {
                cJSON_Delete(v);
                return bad_json(m, line, (int)(t - p) + 1, t, le, hint, err);
            }
            int rc = json_object_add(m, v, line, err);
            cJSON_Delete(v);
            if (rc) return -1;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static int line_of(const char *text, const char *at, int *col) {
    int line = 1;
    const char *ls = text;
    for (const char *q = text; q < at; q++)
        if (*q == '\n') line++, ls = q + 1;
    if (col) *col = (int)(at - ls) + 1;
    return line;
}

static int load_json_array(mapper_t *m, const char *text, size_t len, lb_err_t *err) {
    const char *s = text, *end = text + len;
    while (s < end && isspace((unsigned char)*s)) s++;
    // Dataset.to_json writes JSON Lines even into a .json file.
    if (s < end && *s == '{') return load_jsonl(m, text, len, err);
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
    const char *hint = "a .json file must hold one JSON array of objects, or one object per line";
    if (!root) {
        int col, line = line_of(text, stop, &col);
        return bad_json(m, line, col, stop, end, hint, err);
    }
    const char *t = stop;
    while (t < end && isspace((unsigned char)*t)) t++;
    if (t < end) {
        cJSON_Delete(root);
        int col, line = line_of(text, t, &col);
        return bad_json(m, line, col, t, end, hint, err);
    }
    if (!cJSON_IsArray(root)) {
        const char *kind = json_kind(root);  // before the delete: it reads root
        cJSON_Delete(root);
        return lb_err_set(err, LB_EFORMAT, "%s line %d: expected a JSON array of objects, found %s",
                          m->path, line_of(text, s, NULL), kind);
    }
    // cJSON keeps no positions: find the line where each top-level element starts by a scan
    // that follows strings and nesting (the text is known to be valid JSON here).
    int n = cJSON_GetArraySize(root);
    int *lines = xmalloc(sizeof(int) * (size_t)(n + 1));
    int k = 0, depth = 0, in_str = 0, expect = 0, line = line_of(text, s, NULL);
    for (const char *q = s; q < end && k < n; q++) {
        char c = *q;
        if (c == '\n') line++;
        if (in_str) {
            if (c == '\\') q++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (depth == 1 && expect && !isspace((unsigned char)c) && c != ']') {
            lines[k++] = line;
            expect = 0;
        }
        if (c == '"') in_str = 1;
        else if (c == '[' || c == '{') {
            depth++;
            if (depth == 1) expect = 1;
        } else if (c == ']' || c == '}') depth--;
        else if (c == ',' && depth == 1) expect = 1;
    }
    while (k < n) lines[k++] = 0;
    int i = 0, rc = 0;
    for (const cJSON *c = root->child; c; c = c->next, i++)
        if ((rc = json_object_add(m, c, lines[i], err))) break;
    free(lines);
    cJSON_Delete(root);
    return rc;
}

// ---- CSV / TSV ---------------------------------------------------------------------------

typedef struct {
    const char *p, *end;
    int line;
    char delim;
    const char *path;
    char **f;  // fields of the current record
    int nf, cap;
} csv_t;

static void csv_clear(csv_t *c) {
    for (int i = 0; i < c->nf; i++) free(c->f[i]);
    c->nf = 0;
}

// Reads the next record; returns 1, 0 at the end, -1 on error. *rec_line gets its first line.
static int csv_next(csv_t *c, int *rec_line, lb_err_t *err) {
    csv_clear(c);
    // Blank lines between records are skipped, as Python's csv.DictReader does.
    while (c->p < c->end && (*c->p == '\n' || (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n'))) {
        c->p += *c->p == '\r' ? 2 : 1;
        c->line++;
    }
    if (c->p >= c->end) return 0;
    *rec_line = c->line;
    for (;;) {
        sbuf_t b = {0};
        if (c->p < c->end && *c->p == '"') {
            int qline = c->line;
            c->p++;
            for (;;) {
                if (c->p >= c->end) {
                    free(b.s);
                    return lb_err_set(err, LB_EFORMAT,
                                      "%s line %d: unterminated quote in field %d (opened on line "
                                      "%d and never closed); close it with \" and write quotes "
                                      "inside a field as \"\"",
                                      c->path, qline, c->nf + 1, qline);
                }
                char ch = *c->p;
                if (ch == '"') {
                    if (c->p + 1 < c->end && c->p[1] == '"') {
                        sb_putc(&b, '"');
                        c->p += 2;
                        continue;
                    }
                    c->p++;
                    break;
                }
                if (ch == '\r' && c->p + 1 < c->end && c->p[1] == '\n') {
                    // A CRLF file gives the same text as an LF one.
                    sb_putc(&b, '\n');
                    c->p += 2;
                    c->line++;
                    continue;
                }
                if (ch == '\n') c->line++;
                sb_putc(&b, ch);
                c->p++;
            }
            if (c->p < c->end && *c->p != c->delim && *c->p != '\n' &&
                !(*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n') &&
                !(*c->p == '\r' && c->p + 1 == c->end)) {
                char ch = *c->p;
                free(b.s);
                return lb_err_set(err, LB_EFORMAT,
                                  "%s line %d: unexpected '%c' after the closing quote of field "
                                  "%d; inside a quoted field write a quote as \"\"",
                                  c->path, c->line, isprint((unsigned char)ch) ? ch : '?',
                                  c->nf + 1);
            }
        } else {
            while (c->p < c->end && *c->p != c->delim && *c->p != '\n' &&
                   !(*c->p == '\r' && (c->p + 1 == c->end || c->p[1] == '\n'))) {
                sb_putc(&b, *c->p);
                c->p++;
            }
        }
        if (c->nf == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 8;
            c->f = xrealloc(c->f, sizeof(char *) * (size_t)c->cap);
        }
        c->f[c->nf++] = sb_take(&b);
        if (c->p >= c->end) return 1;
        if (*c->p == c->delim) {
            c->p++;
            continue;
        }
        // End of record: \n, \r\n or a final \r.
        c->p += (*c->p == '\r' && c->p + 1 < c->end) ? 2 : 1;
        c->line++;
        return 1;
    }
}

static int load_csv(mapper_t *m, const char *text, size_t len, char delim, lb_err_t *err) {
    csv_t c = {text, text + len, 1, delim, m->path, NULL, 0, 0};
    char **header = NULL;
    int nh = 0, hline = 0, rc = 0, line = 0;
    int r = csv_next(&c, &hline, err);
    if (r < 0) goto fail;
    if (r == 0) {
        rc = lb_err_set(err, LB_EFORMAT,
                        "%s is empty; a %s file needs a header row naming the fields, then one "
                        "row per example",
                        m->path, delim == '\t' ? "TSV" : "CSV");
        goto done;
    }
    header = c.f;
    nh = c.nf;
    c.f = NULL;
    c.nf = c.cap = 0;
    rec_t rec = {nh, (const char **)header, NULL, xcalloc((size_t)nh, sizeof(char *))};
    while ((r = csv_next(&c, &line, err)) == 1) {
        if (c.nf != nh) {
            if (c.nf == 1 && nh > 1 && delim == ',' && strchr(c.f[0], '\t')) {
                rc = lb_err_set(err, LB_EFORMAT,
                                "%s line %d: 1 field where the header (line %d) has %d; the row "
                                "holds tabs: name the file .tsv",
                                m->path, line, hline, nh);
            } else {
                rc = lb_err_set(err, LB_EFORMAT,
                                "%s line %d: %d fields where the header (line %d) has %d; quote "
                                "fields that contain %s (\"...\")",
                                m->path, line, c.nf, hline, nh,
                                delim == '\t' ? "tabs" : "commas");
            }
            free(rec.kinds);
            goto done;
        }
        rec.vals = (const char **)c.f;
        if ((rc = mapper_add(m, &rec, line, err))) {
            free(rec.kinds);
            goto done;
        }
    }
    free(rec.kinds);
    if (r < 0) goto fail;
    goto done;
fail:
    rc = -1;
done:
    for (int i = 0; i < nh; i++) free(header[i]);
    free(header);
    csv_clear(&c);
    free(c.f);
    return rc;
}

// ---- files, splits and data sets ---------------------------------------------------------

enum { FMT_NONE, FMT_JSONL, FMT_JSON, FMT_CSV, FMT_TSV };

static int format_of(const char *path) {
    const char *e = file_ext(path);
    if (!e) return FMT_NONE;
    if (!strcasecmp(e, ".jsonl") || !strcasecmp(e, ".ndjson")) return FMT_JSONL;
    if (!strcasecmp(e, ".json")) return FMT_JSON;
    if (!strcasecmp(e, ".csv")) return FMT_CSV;
    if (!strcasecmp(e, ".tsv")) return FMT_TSV;
    return FMT_NONE;
}

static int unknown_ext(const char *path, lb_err_t *err) {
    const char *e = file_ext(path);
    if (e)
        return lb_err_set(err, LB_EFORMAT,
                          "%s: unknown extension '%s'; data files must be .jsonl, .json, .csv "
                          "or .tsv",
                          path, e);
    return lb_err_set(err, LB_EFORMAT,
                      "%s has no extension; name data files .jsonl, .json, .csv or .tsv", path);
}

void data_split_free(data_split_t *sp) {
    if (!sp) return;
    for (int i = 0; i < sp->n; i++) example_free(&sp->ex[i]);
    free(sp->ex);
    free(sp->path);
    free(sp->source_field);
    free(sp->target_fields);
    memset(sp, 0, sizeof *sp);
}

void data_set_free(data_set_t *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_splits; i++) data_split_free(&ds->split[i]);
    memset(ds, 0, sizeof *ds);
}

int data_load_file(const char *path, const char *name, const data_options_t *opt,
                   data_split_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    int fmt = format_of(path);
    if (fmt == FMT_NONE) return unknown_ext(path, err);
    size_t len = 0;
    char *text = lb_read_file(path, &len, err);
    if (!text) return -1;
    // A UTF-8 byte order mark (Excel writes one) is not part of the first field name.
    const char *t = text;
    if (len >= 3 && (unsigned char)t[0] == 0xEF && (unsigned char)t[1] == 0xBB &&
        (unsigned char)t[2] == 0xBF)
        t += 3, len -= 3;
    mapper_t m;
    mapper_init(&m, path, opt);
    int rc;
    switch (fmt) {
    case FMT_JSONL: rc = load_jsonl(&m, t, len, err); break;
    case FMT_JSON: rc = load_json_array(&m, t, len, err); break;
    case FMT_CSV: rc = load_csv(&m, t, len, ',', err); break;
    default: rc = load_csv(&m, t, len, '\t', err); break;
    }
    free(text);
    if (rc == 0 && m.n == 0)
        rc = lb_err_set(err, LB_EFORMAT, "%s holds no examples; add at least one", path);
    if (rc) {
        mapper_free(&m);
        return -1;
    }
    snprintf(out->name, sizeof out->name, "%s", name ? name : "train");
    out->path = xstrdup(path);
    out->source_field = m.src_field;
    out->target_fields = m.seen_refs;
    out->ex = m.ex;
    out->n = m.n;
    m.src_field = NULL;
    m.seen_refs = NULL;
    m.ex = NULL;
    m.n = 0;
    mapper_free(&m);
    return 0;
}

int data_parse_split_ratio(const char *s, double ratio[3], lb_err_t *err) {
    double v[3] = {0, 0, 0};
    int k = 0;
    const char *p = s;
    while (*p) {
        if (k == 3)
            return lb_err_set(err, LB_EARG,
                              "split ratio '%s' has more than 3 values; give train,validation,test",
                              s);
        char *e;
        errno = 0;
        double x = strtod(p, &e);
        if (e == p || errno || !(x >= 0 && x <= 1))
            return lb_err_set(err, LB_EARG,
                              "split ratio '%s' is not a list of numbers in [0,1] such as "
                              "0.9,0.05,0.05",
                              s);
        v[k++] = x;
        while (isspace((unsigned char)*e)) e++;
        if (*e == ',') e++;
        else if (*e)
            return lb_err_set(err, LB_EARG,
                              "split ratio '%s' is not a list of numbers in [0,1] such as "
                              "0.9,0.05,0.05",
                              s);
        p = e;
    }
    if (k < 2)
        return lb_err_set(err, LB_EARG,
                          "split ratio '%s' needs at least train,validation (e.g. 0.9,0.05,0.05)",
                          s);
    if (fabs(v[0] + v[1] + v[2] - 1.0) > 1e-6)
        return lb_err_set(err, LB_EARG, "split ratio '%s' sums to %g; the values must sum to 1", s,
                          v[0] + v[1] + v[2]);
    memcpy(ratio, v, sizeof v);
    return 0;
}

static const char *const split_names[DATA_MAX_SPLITS] = {"train", "validation", "test"};

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

// Splits all examples of one file by ratio: a seeded shuffle decides membership, and each
// split keeps the file order (so validation examples print in a stable, readable order).
static int split_by_ratio(data_split_t *all, const double ratio[3], uint64_t seed,
                          data_set_t *ds, lb_err_t *err) {
    double sum = ratio[0] + ratio[1] + ratio[2];
    if (fabs(sum - 1.0) > 1e-6 || ratio[0] < 0 || ratio[1] < 0 || ratio[2] < 0)
        return lb_err_set(err, LB_EARG,
                          "split ratio %g,%g,%g must be three non-negative numbers summing to 1",
                          ratio[0], ratio[1], ratio[2]);
    int n = all->n, cnt[3];
    for (int s = 1; s < 3; s++) {
        cnt[s] = (int)floor(ratio[s] * n + 0.5);
        if (ratio[s] > 0 && cnt[s] == 0) cnt[s] = 1;
    }
    cnt[0] = n - cnt[1] - cnt[2];
    if (ratio[0] == 0 && cnt[0] > 0) {
        // Rounding leftovers go to validation when there is no train share.
        if (ratio[1] > 0) cnt[1] += cnt[0];
        else cnt[2] += cnt[0];
        cnt[0] = 0;
    }
    for (int s = 0; s < 3; s++)
        if (ratio[s] > 0 && cnt[s] <= 0)
            return lb_err_set(err, LB_EFORMAT,
                              "%s has only %d examples: too few for split ratio %g,%g,%g (the %s "
                              "split would be empty); add examples or change the ratio",
                              all->path, n, ratio[0], ratio[1], ratio[2], split_names[s]);
    int *perm = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) perm[i] = i;
    data_shuffle_ints(perm, n, seed);
    int off = 0;
    for (int s = 0; s < 3; s++) {
        if (cnt[s] == 0) continue;
        qsort(perm + off, (size_t)cnt[s], sizeof(int), cmp_int);
        data_split_t *sp = &ds->split[ds->n_splits++];
        memset(sp, 0, sizeof *sp);
        snprintf(sp->name, sizeof sp->name, "%s", split_names[s]);
        sp->path = xstrdup(all->path);
        sp->source_field = xstrdup(all->source_field);
        sp->target_fields = xstrdup(all->target_fields);
        sp->n = cnt[s];
        sp->ex = xmalloc(sizeof(data_example_t) * (size_t)cnt[s]);
        for (int i = 0; i < cnt[s]; i++) {
            sp->ex[i] = all->ex[perm[off + i]];
            memset(&all->ex[perm[off + i]], 0, sizeof(data_example_t));
        }
        off += cnt[s];
    }
    free(perm);
    return 0;
}

// Which split a file in a data set directory holds, from its name without extension.
static int split_of_stem(const char *name) {
    const char *dot = strrchr(name, '.');
    size_t len = dot ? (size_t)(dot - name) : strlen(name);
    static const char *const stems[] = {"train", "validation", "valid", "val", "dev", "test"};
    static const int which[] = {0, 1, 1, 1, 1, 2};
    for (int i = 0; i < 6; i++)
        if (strlen(stems[i]) == len && !strncasecmp(name, stems[i], len)) return which[i];
    return -1;
}

static int load_dir(const char *path, const data_options_t *opt, data_set_t *ds, lb_err_t *err) {
    DIR *d = opendir(path);
    if (!d)
        return lb_err_set(err, LB_EIO, "cannot open data set directory %s: %s", path,
                          strerror(errno));
    char *files[DATA_MAX_SPLITS] = {NULL, NULL, NULL};
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        int s = split_of_stem(de->d_name);
        if (s < 0) continue;  // README, recipes and other files are not splits
        size_t pl = strlen(path) + strlen(de->d_name) + 2;
        char *full = xmalloc(pl);
        snprintf(full, pl, "%s/%s", path, de->d_name);
        struct stat st;
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(full);
            continue;
        }
        if (format_of(full) == FMT_NONE) {
            rc = unknown_ext(full, err);
            free(full);
            break;
        }
        if (files[s]) {
            rc = lb_err_set(err, LB_EFORMAT,
                            "data set directory %s has two %s files (%s and %s); keep one", path,
                            split_names[s], files[s], full);
            free(full);
            break;
        }
        files[s] = full;
    }
    closedir(d);
    if (rc == 0 && !files[0] && !files[1] && !files[2])
        rc = lb_err_set(err, LB_EFORMAT,
                        "data set directory %s holds no train, validation or test file (.jsonl, "
                        ".json, .csv or .tsv); add train.jsonl or give a single file",
                        path);
    for (int s = 0; s < DATA_MAX_SPLITS && rc == 0; s++) {
        if (!files[s]) continue;
        if (data_load_file(files[s], split_names[s], opt, &ds->split[ds->n_splits], err)) rc = -1;
        else ds->n_splits++;
    }
    for (int s = 0; s < DATA_MAX_SPLITS; s++) free(files[s]);
    return rc;
}

int data_set_load(const char *path, const data_options_t *opt, data_set_t *ds, lb_err_t *err) {
    memset(ds, 0, sizeof *ds);
    struct stat st;
    if (stat(path, &st) != 0)
        return lb_err_set(err, LB_EIO, "cannot open data set %s: %s; check the path", path,
                          strerror(errno));
    int has_ratio = opt && (opt->split_ratio[0] > 0 || opt->split_ratio[1] > 0 ||
                            opt->split_ratio[2] > 0);
    if (S_ISDIR(st.st_mode)) {
        if (has_ratio)
            return lb_err_set(err, LB_EARG,
                              "%s is a directory with its own splits; a split ratio applies only "
                              "to a one-file data set, so drop it",
                              path);
        ds->is_dir = 1;
        if (load_dir(path, opt, ds, err)) {
            data_set_free(ds);
            return -1;
        }
        return 0;
    }
    data_split_t all;
    if (data_load_file(path, "train", opt, &all, err)) return -1;
    if (!has_ratio) {
        ds->split[0] = all;
        ds->n_splits = 1;
        return 0;
    }
    int rc = split_by_ratio(&all, opt->split_ratio, opt->seed, ds, err);
    data_split_free(&all);
    if (rc) data_set_free(ds);
    return rc;
}

const data_split_t *data_set_split(const data_set_t *ds, const char *name, lb_err_t *err) {
    char have[64] = "";
    size_t k = 0;
    for (int i = 0; i < ds->n_splits; i++) {
        if (!strcmp(ds->split[i].name, name)) return &ds->split[i];
        int w = snprintf(have + k, sizeof have - k, "%s%s", i ? ", " : "", ds->split[i].name);
        if (w > 0 && (size_t)w < sizeof have - k) k += (size_t)w;
    }
    lb_err_set(err, LB_EARG,
               "the data set has no %s split (it has: %s); add a %s file to its directory or "
               "give a split ratio",
               name, ds->n_splits ? have : "none", name);
    return NULL;
}

// ---- tokenization ------------------------------------------------------------------------

int data_truncate_ids(int *ids, int n, int max, int eos_id) {
    if (max <= 0 || n <= max) return n;
    if (eos_id >= 0) ids[max - 1] = eos_id;
    return max;
}

void data_tokenized_free(data_tokenized_t *tok) {
    if (!tok) return;
    for (int i = 0; i < tok->n; i++) {
        free(tok->ex[i].src);
        free(tok->ex[i].tgt);
    }
    free(tok->ex);
    memset(tok, 0, sizeof *tok);
}

int data_tokenize_split(const data_split_t *sp, data_encode_fn encode, void *ctx,
                        int max_source, int max_target, int eos_id, data_tokenized_t *out,
                        lb_err_t *err) {
    memset(out, 0, sizeof *out);
    if (!sp || sp->n <= 0)
        return lb_err_set(err, LB_EFORMAT, "the %s split is empty; it needs at least one example",
                          sp ? sp->name : "requested");
    out->ex = xcalloc((size_t)sp->n, sizeof(data_tokens_t));
    out->n = sp->n;
    out->max_source = max_source > 0 ? max_source : 0;
    out->max_target = max_target > 0 ? max_target : 0;
    for (int i = 0; i < sp->n; i++) {
        data_tokens_t *t = &out->ex[i];
        lb_err_t e2 = {0};
        // Locals: a failing callback owns whatever it left in its outputs.
        int *ids = NULL, n = 0, rc = encode(ctx, sp->ex[i].source, &ids, &n, &e2);
        if (rc == 0) {
            t->src = ids;
            t->src_len = n;
            ids = NULL;
            rc = encode(ctx, sp->ex[i].refs[0], &ids, &n, &e2);
            if (rc == 0) t->tgt = ids, t->tgt_len = n;
        }
        if (rc) {
            lb_err_set(err, e2.code ? e2.code : LB_EFORMAT, "%s line %d: cannot tokenize: %s",
                       sp->path, sp->ex[i].line, e2.msg);
            data_tokenized_free(out);
            return -1;
        }
        t->n_src = data_truncate_ids(t->src, t->src_len, max_source, eos_id);
        t->n_tgt = data_truncate_ids(t->tgt, t->tgt_len, max_target, eos_id);
        if (t->n_src == 0 || t->n_tgt == 0) {
            lb_err_set(err, LB_EFORMAT,
                       "%s line %d: the %s encodes to no tokens; check the tokenizer",
                       sp->path, sp->ex[i].line, t->n_src == 0 ? "source" : "target");
            data_tokenized_free(out);
            return -1;
        }
    }
    return 0;
}

// ---- statistics --------------------------------------------------------------------------

static int percentile(const int *sorted, int n, int p) {
    // Nearest rank: the smallest value with at least p% of the values at or below it.
    long rank = ((long)p * n + 99) / 100;
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

void data_stats_compute(const data_tokenized_t *tok, data_stats_t *st) {
    memset(st, 0, sizeof *st);
    int n = tok->n;
    st->n = n;
    if (n == 0) return;
    int *a = xmalloc(sizeof(int) * (size_t)n), *b = xmalloc(sizeof(int) * (size_t)n);
    int ts = 0, tt = 0, tany = 0;
    double ss = 0, stt = 0;
    for (int i = 0; i < n; i++) {
        const data_tokens_t *t = &tok->ex[i];
        a[i] = t->src_len;
        b[i] = t->tgt_len;
        ss += t->src_len;
        stt += t->tgt_len;
        int cs = t->n_src < t->src_len, ct = t->n_tgt < t->tgt_len;
        ts += cs;
        tt += ct;
        tany += cs || ct;
    }
    qsort(a, (size_t)n, sizeof(int), cmp_int);
    qsort(b, (size_t)n, sizeof(int), cmp_int);
    st->src_p50 = percentile(a, n, 50);
    st->src_p90 = percentile(a, n, 90);
    st->src_p99 = percentile(a, n, 99);
    st->src_max = a[n - 1];
    st->tgt_p50 = percentile(b, n, 50);
    st->tgt_p90 = percentile(b, n, 90);
    st->tgt_p99 = percentile(b, n, 99);
    st->tgt_max = b[n - 1];
    st->src_trunc_frac = (double)ts / n;
    st->tgt_trunc_frac = (double)tt / n;
    st->trunc_frac = (double)tany / n;
    st->src_mean = ss / n;
    st->tgt_mean = stt / n;
    free(a);
    free(b);
}

// ---- batches -----------------------------------------------------------------------------

typedef struct {
    int src, tgt, idx;
} len_key_t;

static int cmp_len(const void *pa, const void *pb) {
    const len_key_t *a = pa, *b = pb;
    if (a->src != b->src) return a->src < b->src ? -1 : 1;
    if (a->tgt != b->tgt) return a->tgt < b->tgt ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);  // total order: same plan on every libc
}

void data_plan_free(data_plan_t *plan) {
    if (!plan) return;
    free(plan->order);
    free(plan->start);
    memset(plan, 0, sizeof *plan);
}

int data_plan_batches(const data_tokenized_t *tok, int batch_size, int window, uint64_t seed,
                      data_plan_t *plan, lb_err_t *err) {
    memset(plan, 0, sizeof *plan);
    if (batch_size < 1)
        return lb_err_set(err, LB_EARG, "batch size %d is not positive; use 1 or more", batch_size);
    int n = tok->n;
    if (n <= 0)
        return lb_err_set(err, LB_EFORMAT, "the split has no examples to batch; add examples");
    uint64_t s_examples = data_seed_mix(seed, 1), s_batches = data_seed_mix(seed, 2);
    int *order = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) order[i] = i;
    data_shuffle_ints(order, n, s_examples);
    if (window > 1) {
        long chunk = (long)window * batch_size;
        len_key_t *k = xmalloc(sizeof(len_key_t) * (size_t)(chunk < n ? chunk : n));
        for (long off = 0; off < n; off += chunk) {
            int m = (int)(n - off < chunk ? n - off : chunk);
            for (int i = 0; i < m; i++) {
                const data_tokens_t *t = &tok->ex[order[off + i]];
                k[i] = (len_key_t){t->n_src, t->n_tgt, order[off + i]};
            }
            qsort(k, (size_t)m, sizeof *k, cmp_len);
            for (int i = 0; i < m; i++) order[off + i] = k[i].idx;
        }
        free(k);
    }
    int nb = (n + batch_size - 1) / batch_size;
    // Shuffle whole batches so that the model does not see lengths in a sorted sweep.
    int *perm = xmalloc(sizeof(int) * (size_t)nb);
    for (int i = 0; i < nb; i++) perm[i] = i;
    data_shuffle_ints(perm, nb, s_batches);
    plan->order = xmalloc(sizeof(int) * (size_t)n);
    plan->start = xmalloc(sizeof(int) * (size_t)(nb + 1));
    plan->n_batches = nb;
    int pos = 0;
    for (int b = 0; b < nb; b++) {
        int from = perm[b] * batch_size;
        int cnt = n - from < batch_size ? n - from : batch_size;
        plan->start[b] = pos;
        int S = 0, T = 0;
        for (int i = 0; i < cnt; i++) {
            const data_tokens_t *t = &tok->ex[order[from + i]];
            plan->order[pos++] = order[from + i];
            if (t->n_src > S) S = t->n_src;
            if (t->n_tgt > T) T = t->n_tgt;
            plan->real_tokens += t->n_src + t->n_tgt;
        }
        plan->padded_tokens += (long)cnt * (S + T);
    }
    plan->start[nb] = pos;
    plan->pad_fraction =
        plan->padded_tokens ? 1.0 - (double)plan->real_tokens / (double)plan->padded_tokens : 0;
    free(perm);
    free(order);
    return 0;
}

void data_batch_free(data_batch_t *b) {
    if (!b) return;
    free(b->input_ids);
    free(b->attention_mask);
    free(b->labels);
    free(b->decoder_input_ids);
    free(b->index);
    memset(b, 0, sizeof *b);
}

int data_batch_make(const data_tokenized_t *tok, const int *idx, int n, int pad_id,
                    int decoder_start_id, data_batch_t *b, lb_err_t *err) {
    memset(b, 0, sizeof *b);
    if (n < 1) return lb_err_set(err, LB_EARG, "a batch needs at least one example");
    int S = 0, T = 0;
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= tok->n)
            return lb_err_set(err, LB_EARG, "batch example index %d is outside the split (0..%d)",
                              idx[i], tok->n - 1);
        const data_tokens_t *t = &tok->ex[idx[i]];
        if (t->n_src > S) S = t->n_src;
        if (t->n_tgt > T) T = t->n_tgt;
    }
    b->B = n;
    b->S = S;
    b->T = T;
    b->input_ids = xmalloc(sizeof(int) * (size_t)n * (size_t)S);
    b->attention_mask = xmalloc(sizeof(int) * (size_t)n * (size_t)S);
    b->labels = xmalloc(sizeof(int) * (size_t)n * (size_t)T);
    b->decoder_input_ids = xmalloc(sizeof(int) * (size_t)n * (size_t)T);
    b->index = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        const data_tokens_t *t = &tok->ex[idx[i]];
        b->index[i] = idx[i];
        int *ii = b->input_ids + (size_t)i * S, *am = b->attention_mask + (size_t)i * S;
        for (int s = 0; s < S; s++) {
            ii[s] = s < t->n_src ? t->src[s] : pad_id;
            am[s] = s < t->n_src;
        }
        int *lb = b->labels + (size_t)i * T, *di = b->decoder_input_ids + (size_t)i * T;
        for (int s = 0; s < T; s++) lb[s] = s < t->n_tgt ? t->tgt[s] : -100;
        di[0] = decoder_start_id;
        for (int s = 1; s < T; s++) di[s] = lb[s - 1] == -100 ? pad_id : lb[s - 1];
    }
    return 0;
}
