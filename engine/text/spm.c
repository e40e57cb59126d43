#include "spm.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- protobuf wire format ----

typedef struct {
    const unsigned char *p, *end;
} pb_t;

static int pb_varint(pb_t *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

// Reads the value of a field whose tag was read: varints into *v, fixed32/64 into *v,
// length-delimited into (*bytes, *n). Returns -1 on truncation or an unsupported wire type.
static int pb_value(pb_t *r, int wire, uint64_t *v, const unsigned char **bytes, size_t *n) {
    *v = 0;
    *bytes = NULL;
    *n = 0;
    switch (wire) {
    case 0:
        return pb_varint(r, v);
    case 1:
        if (r->end - r->p < 8) return -1;
        for (int i = 0; i < 8; i++) *v |= (uint64_t)r->p[i] << (8 * i);
        r->p += 8;
        return 0;
    case 2: {
        uint64_t len;
        if (pb_varint(r, &len) || len > (uint64_t)(r->end - r->p)) return -1;
        *bytes = r->p;
        *n = (size_t)len;
        r->p += len;
        return 0;
    }
    case 5:
        if (r->end - r->p < 4) return -1;
        for (int i = 0; i < 4; i++) *v |= (uint64_t)r->p[i] << (8 * i);
        r->p += 4;
        return 0;
    default:
        return -1;  // groups (3, 4) are not used by sentencepiece_model.proto
    }
}

static char *dup_bytes(const unsigned char *b, size_t n) {
    char *s = xmalloc(n + 1);
    if (n) memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static int parse_piece(const unsigned char *b, size_t n, spm_piece_t *pc) {
    pb_t r = {b, b + n};
    pc->type = SPM_NORMAL;
    pc->score = 0;
    while (r.p < r.end) {
        uint64_t tag, v;
        const unsigned char *bytes;
        size_t len;
        if (pb_varint(&r, &tag) || pb_value(&r, (int)(tag & 7), &v, &bytes, &len)) return -1;
        int field = (int)(tag >> 3), wire = (int)(tag & 7);
        if (field == 1 && wire == 2) {
            free(pc->piece);
            pc->piece = dup_bytes(bytes, len);
        } else if (field == 2 && wire == 5) {
            uint32_t u = (uint32_t)v;
            memcpy(&pc->score, &u, 4);
        } else if (field == 3 && wire == 0) {
            pc->type = (int)v;
        }
    }
    return pc->piece ? 0 : -1;
}

static int parse_trainer(const unsigned char *b, size_t n, spm_model_t *m) {
    pb_t r = {b, b + n};
    while (r.p < r.end) {
        uint64_t tag, v;
        const unsigned char *bytes;
        size_t len;
        if (pb_varint(&r, &tag) || pb_value(&r, (int)(tag & 7), &v, &bytes, &len)) return -1;
        if ((tag & 7) != 0) continue;
        switch ((int)(tag >> 3)) {
        case 3: m->model_type = (int)v; break;
        case 35: m->byte_fallback = v != 0; break;
        case 40: m->unk_id = (int)(int32_t)v; break;
        case 41: m->bos_id = (int)(int32_t)v; break;
        case 42: m->eos_id = (int)(int32_t)v; break;
        case 43: m->pad_id = (int)(int32_t)v; break;
        default: break;
        }
    }
    return 0;
}

static int parse_normalizer(const unsigned char *b, size_t n, spm_model_t *m) {
    pb_t r = {b, b + n};
    while (r.p < r.end) {
        uint64_t tag, v;
        const unsigned char *bytes;
        size_t len;
        if (pb_varint(&r, &tag) || pb_value(&r, (int)(tag & 7), &v, &bytes, &len)) return -1;
        int field = (int)(tag >> 3), wire = (int)(tag & 7);
        if (field == 1 && wire == 2) {
            free(m->normalizer_name);
            m->normalizer_name = dup_bytes(bytes, len);
        } else if (field == 2 && wire == 2) {
            free(m->charsmap);
            m->charsmap = xmalloc(len ? len : 1);
            if (len) memcpy(m->charsmap, bytes, len);
            m->charsmap_len = len;
        } else if (wire == 0 && field == 3) {
            m->add_dummy_prefix = v != 0;
        } else if (wire == 0 && field == 4) {
            m->remove_extra_whitespaces = v != 0;
        } else if (wire == 0 && field == 5) {
            m->escape_whitespaces = v != 0;
        }
    }
    return 0;
}

void spm_model_free(spm_model_t *m) {
    for (int i = 0; i < m->n_pieces; i++) free(m->pieces[i].piece);
    free(m->pieces);
    free(m->normalizer_name);
    free(m->charsmap);
    memset(m, 0, sizeof *m);
}

int spm_parse_model(const void *data, size_t len, const char *name, spm_model_t *m,
                    lb_err_t *err) {
    memset(m, 0, sizeof *m);
    // proto2 defaults of the fields we read
    m->model_type = 1;
    m->unk_id = 0;
    m->bos_id = 1;
    m->eos_id = 2;
    m->pad_id = -1;
    m->add_dummy_prefix = 1;
    m->remove_extra_whitespaces = 1;
    m->escape_whitespaces = 1;
    pb_t r = {data, (const unsigned char *)data + len};
    int cap = 0;
    while (r.p < r.end) {
        uint64_t tag, v;
        const unsigned char *bytes;
        size_t n;
        size_t at = (size_t)(r.p - (const unsigned char *)data);
        if (pb_varint(&r, &tag) || pb_value(&r, (int)(tag & 7), &v, &bytes, &n)) {
            spm_model_free(m);
            return lb_err_set(err, LB_EFORMAT,
                              "%s is not a SentencePiece model (bad protobuf field at byte %zu); "
                              "pass the .model file that spm_train wrote",
                              name, at);
        }
        int field = (int)(tag >> 3), wire = (int)(tag & 7);
        if (wire != 2) continue;
        const char *what = NULL;
        if (field == 1) {
            if (m->n_pieces == cap) {
                cap = cap ? cap * 2 : 1024;
                m->pieces = xrealloc(m->pieces, (size_t)cap * sizeof *m->pieces);
            }
            spm_piece_t *pc = &m->pieces[m->n_pieces];
            memset(pc, 0, sizeof *pc);
            if (parse_piece(bytes, n, pc)) {
                free(pc->piece);
                what = "pieces";
            } else {
                m->n_pieces++;
            }
        } else if (field == 2) {
            if (parse_trainer(bytes, n, m)) what = "trainer_spec";
        } else if (field == 3) {
            if (parse_normalizer(bytes, n, m)) what = "normalizer_spec";
        }
        if (what) {
            int idx = m->n_pieces;
            spm_model_free(m);
            return lb_err_set(err, LB_EFORMAT,
                              "%s: malformed %s entry (piece %d, byte %zu); the model file is "
                              "damaged or not a SentencePiece model",
                              name, what, idx, at);
        }
    }
    if (m->n_pieces == 0) {
        spm_model_free(m);
        return lb_err_set(err, LB_EFORMAT,
                          "%s holds no pieces; pass the .model file that spm_train wrote", name);
    }
    if (!m->normalizer_name) m->normalizer_name = xstrdup("");
    return 0;
}

int spm_load_model(const char *path, spm_model_t *m, lb_err_t *err) {
    size_t len;
    char *data = lb_read_file(path, &len, err);
    if (!data) return -1;
    int rc = spm_parse_model(data, len, path, m, err);
    free(data);
    return rc;
}

// ---- JSON writing, in the layout serde_json's pretty printer gives ----

typedef struct {
    char *p;
    size_t n, cap;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sb_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_indent(sb_t *b, int level) {
    sb_put(b, "\n", 1);
    for (int i = 0; i < level; i++) sb_put(b, "  ", 2);
}

static void sb_json_string(sb_t *b, const char *s) {
    sb_put(b, "\"", 1);
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char tmp[8];
        const char *esc = NULL;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        }
        if (esc) {
            sb_put(b, run, (size_t)(p - run));
            sb_str(b, esc);
            run = p + 1;
        }
    }
    sb_str(b, run);
    sb_put(b, "\"", 1);
}

// The shortest decimal that reads back as the same double (what ryu prints for an f64):
// "0.0", "-2.9948713779449463"; exponent form ("1e-7") only far from 1, as ryu does.
static void sb_json_double(sb_t *b, double v) {
    char tmp[64];
    if (v == 0) {
        sb_str(b, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    if (!isfinite(v)) {  // JSON has no NaN/inf; serde writes null
        sb_str(b, "null");
        return;
    }
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    // tmp = [-]d.ddde[+-]XX: collect the digits and the decimal exponent
    char digits[32];
    int nd = 0, neg = tmp[0] == '-';
    const char *q = tmp + neg;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    int e10 = atoi(q + 1);  // value = 0.d1d2... * 10^(e10+1)
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    if (neg) sb_put(b, "-", 1);
    int k = e10 + 1;  // digits before the decimal point
    if (e10 >= -5 && e10 < 16) {
        if (k <= 0) {
            sb_str(b, "0.");
            for (int i = 0; i < -k; i++) sb_put(b, "0", 1);
            sb_put(b, digits, (size_t)nd);
        } else if (k >= nd) {
            sb_put(b, digits, (size_t)nd);
            for (int i = nd; i < k; i++) sb_put(b, "0", 1);
            sb_str(b, ".0");
        } else {
            sb_put(b, digits, (size_t)k);
            sb_put(b, ".", 1);
            sb_put(b, digits + k, (size_t)(nd - k));
        }
    } else {
        sb_put(b, digits, 1);
        if (nd > 1) {
            sb_put(b, ".", 1);
            sb_put(b, digits + 1, (size_t)(nd - 1));
        }
        snprintf(tmp, sizeof tmp, "e%d", e10);
        sb_str(b, tmp);
    }
}

static void sb_base64(sb_t *b, const unsigned char *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        out[0] = tab[(v >> 18) & 63];
        out[1] = tab[(v >> 12) & 63];
        out[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[3] = i + 2 < n ? tab[v & 63] : '=';
        sb_put(b, out, 4);
    }
}

static void put_added_token(sb_t *b, int id, const char *content, int special, int first) {
    char tmp[32];
    if (!first) sb_put(b, ",", 1);
    sb_indent(b, 2);
    sb_str(b, "{");
    sb_indent(b, 3);
    snprintf(tmp, sizeof tmp, "\"id\": %d,", id);
    sb_str(b, tmp);
    sb_indent(b, 3);
    sb_str(b, "\"content\": ");
    sb_json_string(b, content);
    sb_str(b, ",");
    sb_indent(b, 3);
    sb_str(b, "\"single_word\": false,");
    sb_indent(b, 3);
    sb_str(b, "\"lstrip\": false,");
    sb_indent(b, 3);
    sb_str(b, "\"rstrip\": false,");
    sb_indent(b, 3);
    sb_str(b, "\"normalized\": false,");
    sb_indent(b, 3);
    sb_str(b, special ? "\"special\": true" : "\"special\": false");
    sb_indent(b, 2);
    sb_str(b, "}");
}

// Writes a Metaspace pre-tokenizer / decoder object body at the given indent.
static void put_metaspace(sb_t *b, int level, int prepend) {
    sb_str(b, "{");
    sb_indent(b, level + 1);
    sb_str(b, "\"type\": \"Metaspace\",");
    sb_indent(b, level + 1);
    sb_str(b, "\"replacement\": \"\xe2\x96\x81\",");
    sb_indent(b, level + 1);
    sb_str(b, prepend ? "\"prepend_scheme\": \"always\"," : "\"prepend_scheme\": \"never\",");
    sb_indent(b, level + 1);
    sb_str(b, "\"split\": true");
    sb_indent(b, level);
    sb_str(b, "}");
}

// One template element: {"Sequence": {"id": "A", "type_id": 0}} or a SpecialToken.
static void put_template_piece(sb_t *b, const char *kind, const char *id, int first) {
    if (!first) sb_put(b, ",", 1);
    sb_indent(b, 3);
    sb_str(b, "{");
    sb_indent(b, 4);
    sb_put(b, "\"", 1);
    sb_str(b, kind);
    sb_str(b, "\": {");
    sb_indent(b, 5);
    sb_str(b, "\"id\": ");
    sb_json_string(b, id);
    sb_str(b, ",");
    sb_indent(b, 5);
    sb_str(b, "\"type_id\": 0");
    sb_indent(b, 4);
    sb_str(b, "}");
    sb_indent(b, 3);
    sb_str(b, "}");
}

char *spm_to_tokenizer_json(const spm_model_t *m, int n_extra_ids, size_t *len,
                            lb_err_t *err) {
    if (m->model_type != 1) {
        lb_err_set(err, LB_EFORMAT,
                   "the SentencePiece model is of type %d, not Unigram (1); train it with "
                   "--model_type=unigram",
                   m->model_type);
        return NULL;
    }
    if (n_extra_ids < 0 || n_extra_ids > 100000) {
        lb_err_set(err, LB_EARG, "extra ids must be 0..100000, not %d", n_extra_ids);
        return NULL;
    }
    if (m->unk_id < 0 || m->unk_id >= m->n_pieces) {
        lb_err_set(err, LB_EFORMAT,
                   "the SentencePiece model's unk_id %d is outside its %d pieces; retrain with "
                   "a valid --unk_id",
                   m->unk_id, m->n_pieces);
        return NULL;
    }
    int eos = -1;
    for (int i = 0; i < m->n_pieces && eos < 0; i++)
        if (!strcmp(m->pieces[i].piece, "</s>")) eos = i;
    if (eos < 0) {
        lb_err_set(err, LB_EFORMAT,
                   "the SentencePiece model has no </s> piece, which the T5 template appends; "
                   "train it with --eos_id set (and --eos_piece=</s>)");
        return NULL;
    }
    sb_t b = {0};
    char tmp[64];
    sb_str(&b, "{");
    sb_indent(&b, 1);
    sb_str(&b, "\"version\": \"1.0\",");
    sb_indent(&b, 1);
    sb_str(&b, "\"truncation\": null,");
    sb_indent(&b, 1);
    sb_str(&b, "\"padding\": null,");
    sb_indent(&b, 1);

    // added_tokens: control/unknown pieces (special), user-defined (not), then sentinels.
    sb_str(&b, "\"added_tokens\": [");
    int first = 1;
    for (int i = 0; i < m->n_pieces; i++) {
        int t = m->pieces[i].type;
        if (t == SPM_CONTROL || t == SPM_UNKNOWN || t == SPM_USER_DEFINED) {
            put_added_token(&b, i, m->pieces[i].piece, t != SPM_USER_DEFINED, first);
            first = 0;
        }
    }
    for (int k = 0; k < n_extra_ids; k++) {
        snprintf(tmp, sizeof tmp, "<extra_id_%d>", n_extra_ids - 1 - k);
        put_added_token(&b, m->n_pieces + k, tmp, 1, first);
        first = 0;
    }
    if (first) sb_str(&b, "]");
    else {
        sb_indent(&b, 1);
        sb_str(&b, "]");
    }
    sb_str(&b, ",");
    sb_indent(&b, 1);

    // normalizer
    sb_str(&b, "\"normalizer\": {");
    sb_indent(&b, 2);
    sb_str(&b, "\"type\": \"Sequence\",");
    sb_indent(&b, 2);
    sb_str(&b, "\"normalizers\": [");
    if (m->charsmap_len) {
        sb_indent(&b, 3);
        sb_str(&b, "{");
        sb_indent(&b, 4);
        sb_str(&b, "\"type\": \"Precompiled\",");
        sb_indent(&b, 4);
        sb_str(&b, "\"precompiled_charsmap\": \"");
        sb_base64(&b, m->charsmap, m->charsmap_len);
        sb_str(&b, "\"");
        sb_indent(&b, 3);
        sb_str(&b, "},");
    }
    sb_indent(&b, 3);
    sb_str(&b, "{");
    sb_indent(&b, 4);
    sb_str(&b, "\"type\": \"Replace\",");
    sb_indent(&b, 4);
    sb_str(&b, "\"pattern\": {");
    sb_indent(&b, 5);
    sb_str(&b, "\"Regex\": \" {2,}\"");
    sb_indent(&b, 4);
    sb_str(&b, "},");
    sb_indent(&b, 4);
    sb_str(&b, "\"content\": \" \"");
    sb_indent(&b, 3);
    sb_str(&b, "}");
    sb_indent(&b, 2);
    sb_str(&b, "]");
    sb_indent(&b, 1);
    sb_str(&b, "},");
    sb_indent(&b, 1);

    sb_str(&b, "\"pre_tokenizer\": ");
    put_metaspace(&b, 1, m->add_dummy_prefix);
    sb_str(&b, ",");
    sb_indent(&b, 1);

    // post_processor: $A </s>, pair $A </s> $B </s>
    sb_str(&b, "\"post_processor\": {");
    sb_indent(&b, 2);
    sb_str(&b, "\"type\": \"TemplateProcessing\",");
    sb_indent(&b, 2);
    sb_str(&b, "\"single\": [");
    put_template_piece(&b, "Sequence", "A", 1);
    put_template_piece(&b, "SpecialToken", "</s>", 0);
    sb_indent(&b, 2);
    sb_str(&b, "],");
    sb_indent(&b, 2);
    sb_str(&b, "\"pair\": [");
    put_template_piece(&b, "Sequence", "A", 1);
    put_template_piece(&b, "SpecialToken", "</s>", 0);
    put_template_piece(&b, "Sequence", "B", 0);
    put_template_piece(&b, "SpecialToken", "</s>", 0);
    sb_indent(&b, 2);
    sb_str(&b, "],");
    sb_indent(&b, 2);
    sb_str(&b, "\"special_tokens\": {");
    sb_indent(&b, 3);
    sb_str(&b, "\"</s>\": {");
    sb_indent(&b, 4);
    sb_str(&b, "\"id\": \"</s>\",");
    sb_indent(&b, 4);
    sb_str(&b, "\"ids\": [");
    sb_indent(&b, 5);
    snprintf(tmp, sizeof tmp, "%d", eos);
    sb_str(&b, tmp);
    sb_indent(&b, 4);
    sb_str(&b, "],");
    sb_indent(&b, 4);
    sb_str(&b, "\"tokens\": [");
    sb_indent(&b, 5);
    sb_str(&b, "\"</s>\"");
    sb_indent(&b, 4);
    sb_str(&b, "]");
    sb_indent(&b, 3);
    sb_str(&b, "}");
    sb_indent(&b, 2);
    sb_str(&b, "}");
    sb_indent(&b, 1);
    sb_str(&b, "},");
    sb_indent(&b, 1);

    sb_str(&b, "\"decoder\": ");
    put_metaspace(&b, 1, m->add_dummy_prefix);
    sb_str(&b, ",");
    sb_indent(&b, 1);

    // model
    sb_str(&b, "\"model\": {");
    sb_indent(&b, 2);
    sb_str(&b, "\"type\": \"Unigram\",");
    sb_indent(&b, 2);
    snprintf(tmp, sizeof tmp, "\"unk_id\": %d,", m->unk_id);
    sb_str(&b, tmp);
    sb_indent(&b, 2);
    sb_str(&b, "\"vocab\": [");
    int total = m->n_pieces + n_extra_ids;
    for (int i = 0; i < total; i++) {
        if (i) sb_put(&b, ",", 1);
        sb_indent(&b, 3);
        sb_str(&b, "[");
        sb_indent(&b, 4);
        if (i < m->n_pieces) {
            sb_json_string(&b, m->pieces[i].piece);
            sb_str(&b, ",");
            sb_indent(&b, 4);
            sb_json_double(&b, (double)m->pieces[i].score);
        } else {
            snprintf(tmp, sizeof tmp, "<extra_id_%d>", total - 1 - i);
            sb_json_string(&b, tmp);
            sb_str(&b, ",");
            sb_indent(&b, 4);
            sb_str(&b, "0.0");
        }
        sb_indent(&b, 3);
        sb_str(&b, "]");
    }
    sb_indent(&b, 2);
    sb_str(&b, "],");
    sb_indent(&b, 2);
    sb_str(&b, "\"byte_fallback\": false");
    sb_indent(&b, 1);
    sb_str(&b, "}");
    sb_indent(&b, 0);
    sb_str(&b, "}");
    if (len) *len = b.n;
    return b.p;
}

int spm_convert_file(const char *spm_path, const char *json_path, int n_extra_ids,
                     lb_err_t *err) {
    spm_model_t m;
    if (spm_load_model(spm_path, &m, err)) return -1;
    size_t len;
    char *json = spm_to_tokenizer_json(&m, n_extra_ids, &len, err);
    spm_model_free(&m);
    if (!json) return -1;
    int rc = lb_write_file_atomic(json_path, json, len, err);
    free(json);
    return rc;
}
