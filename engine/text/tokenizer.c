// Hugging Face tokenizer.json, Unigram model: see tokenizer.h for what is covered.
// The pipeline of one encode mirrors the tokenizers library step by step:
//   raw text -> split on non-normalized added tokens -> normalize each remaining piece ->
//   split on normalized added tokens -> pre-tokenize -> Unigram Viterbi per word ->
//   template (</s>).
#include "tokenizer.h"

#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_norm.h"

// ---- a byte trie with hashed transitions ----------------------------------------------------
// Node 0 is the root; its children sit in a direct table, the others in one open-addressing
// hash keyed by (node << 8 | byte), which keeps a 32k-piece vocabulary compact and fast.

typedef struct {
    int32_t *val;  // [n_nodes] value stored at the node, -1 when none
    int n_nodes, cap_nodes;
    int32_t root[256];
    uint64_t *hkey;  // 0 = empty slot
    int32_t *hval;
    size_t hcap, hcount;
    int hbits;
} trie_t;

static size_t trie_slot(const trie_t *t, uint64_t key) {
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> (64 - t->hbits));
}

static void trie_init(trie_t *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 256; i++) t->root[i] = -1;
    t->cap_nodes = 64;
    t->val = xmalloc(sizeof *t->val * (size_t)t->cap_nodes);
    t->val[0] = -1;
    t->n_nodes = 1;
    t->hbits = 8;
    t->hcap = (size_t)1 << t->hbits;
    t->hkey = xcalloc(t->hcap, sizeof *t->hkey);
    t->hval = xmalloc(sizeof *t->hval * t->hcap);
}

static void trie_free(trie_t *t) {
    free(t->val);
    free(t->hkey);
    free(t->hval);
    memset(t, 0, sizeof *t);
}

static inline int32_t trie_child(const trie_t *t, int32_t node, unsigned char c) {
    if (node == 0) return t->root[c];
    uint64_t key = ((uint64_t)node << 8) | c;
    size_t mask = t->hcap - 1;
    for (size_t i = trie_slot(t, key);; i = (i + 1) & mask) {
        if (t->hkey[i] == key) return t->hval[i];
        if (t->hkey[i] == 0) return -1;
    }
}

static void trie_hash_put(trie_t *t, uint64_t key, int32_t v) {
    size_t mask = t->hcap - 1, i = trie_slot(t, key);
    while (t->hkey[i]) i = (i + 1) & mask;
    t->hkey[i] = key;
    t->hval[i] = v;
}

static int32_t trie_add_child(trie_t *t, int32_t node, unsigned char c) {
    if (t->n_nodes == t->cap_nodes) {
        t->cap_nodes *= 2;
        t->val = xrealloc(t->val, sizeof *t->val * (size_t)t->cap_nodes);
    }
    int32_t child = t->n_nodes++;
    t->val[child] = -1;
    if (node == 0) {
        t->root[c] = child;
        return child;
    }
    if ((t->hcount + 1) * 2 > t->hcap) {  // grow at load factor 1/2
        uint64_t *ok = t->hkey;
        int32_t *ov = t->hval;
        size_t ocap = t->hcap;
        t->hbits++;
        t->hcap = (size_t)1 << t->hbits;
        t->hkey = xcalloc(t->hcap, sizeof *t->hkey);
        t->hval = xmalloc(sizeof *t->hval * t->hcap);
        for (size_t i = 0; i < ocap; i++)
            if (ok[i]) trie_hash_put(t, ok[i], ov[i]);
        free(ok);
        free(ov);
    }
    trie_hash_put(t, ((uint64_t)node << 8) | c, child);
    t->hcount++;
    return child;
}

// Stores v for s[0..n); overwrite decides whether a later duplicate replaces the value.
static void trie_insert(trie_t *t, const char *s, size_t n, int32_t v, int overwrite) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = trie_child(t, node, (unsigned char)s[i]);
        node = c >= 0 ? c : trie_add_child(t, node, (unsigned char)s[i]);
    }
    if (node != 0 && (overwrite || t->val[node] < 0)) t->val[node] = v;
}

static int32_t trie_find(const trie_t *t, const char *s, size_t n) {
    int32_t node = 0;
    for (size_t i = 0; i < n && node >= 0; i++) node = trie_child(t, node, (unsigned char)s[i]);
    return node > 0 ? t->val[node] : -1;
}

// ---- small vectors -----------------------------------------------------------------------------

typedef struct {
    int *v;
    size_t n, cap;
} ivec_t;

static void ivec_push(ivec_t *a, int x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

typedef struct {
    size_t off, len;
    int at_start;  // begins at offset 0 of the original text (Metaspace "first")
} piece_t;

typedef struct {
    piece_t *p;
    size_t n, cap;
} pvec_t;

static void pvec_push(pvec_t *a, size_t off, size_t len, int at_start) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        a->p = xrealloc(a->p, a->cap * sizeof *a->p);
    }
    a->p[a->n++] = (piece_t){off, len, at_start};
}

// ---- the model and its pipeline ---------------------------------------------------------------

typedef struct {
    uint32_t *units;  // darts-clone double array
    size_t n_units;
    char *pool;  // replacement strings, each ended by NUL
    size_t n_pool;
    int32_t ascii_off[128];  // precomputed transform of each ASCII byte: pool offset or -1
    uint8_t ascii_len[128];
} charsmap_t;

enum { N_NFKC, N_NFKD, N_PRECOMPILED, N_REPLACE, N_STRIP, N_PREPEND };
enum { R_LITERAL, R_RUN, R_SPACE_RUN };

typedef struct {
    int kind;
    charsmap_t *cm;
    int repl;            // R_*
    char *pat;           // R_LITERAL: the text to find
    size_t pat_len;
    uint32_t run_cp;     // R_RUN: the repeated character
    int run_min;         // R_RUN / R_SPACE_RUN: shortest run replaced
    char *content;       // Replace: replacement; Prepend: the prefix
    size_t content_len;
    int strip_left, strip_right;
} norm_step_t;

enum { P_WSPLIT, P_METASPACE };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct {
    int kind;
    char rep[8];  // Metaspace replacement as UTF-8
    size_t rep_len;
    uint32_t rep_cp;
    int scheme;
    int split;
} pre_step_t;

enum { D_METASPACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_REPLACE };

typedef struct {
    int kind;
    uint32_t cp;  // Metaspace replacement / Strip content
    int scheme;
    int start, stop;
    char *pat, *content;
} dec_step_t;

typedef struct {
    int id;
    char *content;
    size_t len;
    int single_word, lstrip, rstrip, normalized, special;
} added_t;

struct tokenizer {
    char *name;
    // Unigram model
    int n_pieces;
    char **pieces;
    double *scores;
    double min_score;
    int unk_id;  // -1: none
    int empty_id;  // the piece "" (valid JSON, kept by the library's token map; the trie
                   // has no empty key), -1: none
    int byte_fallback;
    int byte_ids[256];  // ids of "<0xXX>" pieces, -1 when missing
    trie_t vocab;
    // added tokens
    int n_added;
    added_t *added;
    trie_t added_raw, added_norm;  // content -> index in added[]
    int n_raw, n_norm;
    unsigned char raw_first[256], norm_first[256];  // bytes that may start a match
    int *added_by_id;  // [added_id_span] -> index in added[] or -1
    int added_id_span;
    // pipeline
    int n_normalizers;
    norm_step_t *normalizers;
    int n_pre;
    pre_step_t *pre;
    int n_tmpl;
    int *tmpl;  // the single-sequence template: ids, -1 marking $A
    int has_tmpl;
    int n_dec;
    dec_step_t *dec;
    int has_decoder;
    int eos_id, pad_id;
};

// ---- Precompiled (SentencePiece charsmap) -------------------------------------------------------

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

// Decodes base64 (standard or URL alphabet, padding optional); NULL when malformed.
static unsigned char *b64_decode(const char *s, size_t *out_len) {
    size_t n = strlen(s);
    unsigned char *out = xmalloc(n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        if (s[i] == '\n' || s[i] == '\r') continue;
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

// First (shortest) key of the charsmap that is a prefix of key[0..n), as spm_precompiled's
// transform does; returns 1 with the replacement, 0 when nothing matches.
static int cm_transform(const charsmap_t *cm, const unsigned char *key, size_t n,
                        const char **rep, size_t *rep_len) {
    if (cm->n_units == 0) return 0;
    uint32_t unit = cm->units[0];
    size_t node = (unit >> 10) << ((unit & (1u << 9)) >> 6);
    for (size_t i = 0; i < n; i++) {
        unsigned c = key[i];
        if (c == 0) return 0;
        node ^= c;
        if (node >= cm->n_units) return 0;
        unit = cm->units[node];
        if ((unit & ((1u << 31) | 0xFFu)) != c) return 0;
        node ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
        if ((unit >> 8) & 1) {
            if (node >= cm->n_units) return 0;
            size_t v = cm->units[node] & ((1u << 31) - 1);
            // A replacement starting inside a character (or past the pool) is no match.
            if (v >= cm->n_pool || ((unsigned char)cm->pool[v] & 0xC0) == 0x80) return 0;
            *rep = cm->pool + v;
            *rep_len = strnlen(cm->pool + v, cm->n_pool - v);
            return 1;
        }
    }
    return 0;
}

static charsmap_t *cm_load(const char *b64, const char *name, lb_err_t *err) {
    size_t len;
    unsigned char *raw = b64_decode(b64, &len);
    if (!raw) {
        lb_err_set(err, LB_EFORMAT,
                   "%s: normalizer Precompiled has a precompiled_charsmap that is not base64; "
                   "re-export the tokenizer",
                   name);
        return NULL;
    }
    charsmap_t *cm = xcalloc(1, sizeof *cm);
    if (len > 0) {
        uint32_t trie_size = len >= 4 ? (uint32_t)raw[0] | (uint32_t)raw[1] << 8 |
                                            (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24
                                      : 0;
        if (len < 4 || trie_size > len - 4 || trie_size % 4) {
            free(raw);
            free(cm);
            lb_err_set(err, LB_EFORMAT,
                       "%s: normalizer Precompiled has a truncated precompiled_charsmap (%zu "
                       "bytes); re-export the tokenizer",
                       name, len);
            return NULL;
        }
        cm->n_units = trie_size / 4;
        cm->units = xmalloc(cm->n_units * sizeof *cm->units + 1);
        for (size_t i = 0; i < cm->n_units; i++) {
            const unsigned char *q = raw + 4 + 4 * i;
            cm->units[i] = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                           (uint32_t)q[3] << 24;
        }
        cm->n_pool = len - 4 - trie_size;
        // tokenizers reads the replacement pool as a Rust String: it must be UTF-8.
        size_t bad = lb_utf8_invalid_at((const char *)raw + 4 + trie_size, cm->n_pool);
        if (bad != (size_t)-1) {
            free(raw);
            free(cm->units);
            free(cm);
            lb_err_set(err, LB_EFORMAT,
                       "%s: normalizer Precompiled has a precompiled_charsmap whose replacement "
                       "text is not UTF-8 (pool byte %zu); re-export the tokenizer",
                       name, bad);
            return NULL;
        }
        cm->pool = xmalloc(cm->n_pool + 1);
        memcpy(cm->pool, raw + 4 + trie_size, cm->n_pool);
        cm->pool[cm->n_pool] = 0;
    }
    free(raw);
    for (int c = 0; c < 128; c++) {
        unsigned char k = (unsigned char)c;
        const char *rep;
        size_t rl;
        cm->ascii_off[c] = -1;
        if (cm_transform(cm, &k, 1, &rep, &rl) && rl < 256) {
            cm->ascii_off[c] = (int32_t)(rep - cm->pool);
            cm->ascii_len[c] = (uint8_t)rl;
        }
    }
    return cm;
}

static void cm_free(charsmap_t *cm) {
    if (!cm) return;
    free(cm->units);
    free(cm->pool);
    free(cm);
}

// tokenizers' Precompiled::normalize: each extended grapheme cluster shorter than 6 bytes
// is replaced as a whole by the first charsmap key that prefixes it; otherwise (or when none
// matches) each of its characters is transformed on its own.
static void norm_precompiled(const charsmap_t *cm, const char *s, size_t n, lb_ubuf_t *out) {
    lb_ubuf_reserve(out, n + 1);
    size_t pos = 0;
    while (pos < n) {
        unsigned char c = (unsigned char)s[pos];
        if (c < 0x80 && c != '\r' && (pos + 1 == n || (unsigned char)s[pos + 1] < 0x80)) {
            // An ASCII character followed by ASCII (or the end) is a cluster by itself.
            if (cm->ascii_off[c] >= 0)
                lb_ubuf_append(out, cm->pool + cm->ascii_off[c], cm->ascii_len[c]);
            else
                lb_ubuf_append(out, s + pos, 1);
            pos++;
            continue;
        }
        size_t end = lb_uc_grapheme_end(s, n, pos);
        const char *rep;
        size_t rl;
        if (end - pos < 6 &&
            cm_transform(cm, (const unsigned char *)s + pos, end - pos, &rep, &rl)) {
            lb_ubuf_append(out, rep, rl);
            pos = end;
            continue;
        }
        while (pos < end) {
            size_t len;
            lb_utf8_decode(s + pos, end - pos, &len);
            if (cm_transform(cm, (const unsigned char *)s + pos, len, &rep, &rl))
                lb_ubuf_append(out, rep, rl);
            else
                lb_ubuf_append(out, s + pos, len);
            pos += len;
        }
    }
}

// ---- normalizers ---------------------------------------------------------------------------------

static size_t space_run(const char *s, size_t n, size_t i) {
    size_t j = i;
    while (j < n) {
        size_t len;
        uint32_t cp = lb_utf8_decode(s + j, n - j, &len);
        if (!lb_uc_is_space(cp)) break;
        j += len;
    }
    return j - i;
}

static void norm_apply(const norm_step_t *st, const char *s, size_t n, lb_ubuf_t *out) {
    out->n = 0;
    lb_ubuf_reserve(out, n + 1);
    out->p[0] = 0;
    switch (st->kind) {
    case N_NFKC:
    case N_NFKD:
        lb_uc_nfkc(s, n, st->kind == N_NFKC, out);
        return;
    case N_PRECOMPILED:
        norm_precompiled(st->cm, s, n, out);
        return;
    case N_PREPEND:
        if (n) lb_ubuf_append(out, st->content, st->content_len);
        lb_ubuf_append(out, s, n);
        return;
    case N_STRIP: {
        size_t a = 0, b = n;
        if (st->strip_left) a += space_run(s, n, 0);
        if (st->strip_right) {
            // walk back over trailing whitespace characters
            while (b > a) {
                size_t k = b - 1;
                while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                size_t len;
                if (!lb_uc_is_space(lb_utf8_decode(s + k, b - k, &len))) break;
                b = k;
            }
        }
        lb_ubuf_append(out, s + a, b - a);
        return;
    }
    case N_REPLACE:
        break;
    }
    // Replace: leftmost, non-overlapping matches, as str::replace and the regex crate do.
    size_t i = 0, copied = 0;
    while (i < n) {
        size_t mlen = 0;
        if (st->repl == R_LITERAL) {
            if (st->pat_len && n - i >= st->pat_len && !memcmp(s + i, st->pat, st->pat_len))
                mlen = st->pat_len;
        } else if (st->repl == R_SPACE_RUN) {
            size_t j = i;
            int count = 0;
            while (j < n) {
                size_t len;
                if (!lb_uc_is_space(lb_utf8_decode(s + j, n - j, &len))) break;
                j += len;
                count++;
            }
            if (count >= st->run_min && count > 0) mlen = j - i;
        } else {
            size_t j = i;
            int count = 0;
            while (j < n) {
                size_t len;
                if (lb_utf8_decode(s + j, n - j, &len) != st->run_cp) break;
                j += len;
                count++;
            }
            if (count >= st->run_min && count > 0) mlen = j - i;
        }
        if (mlen) {
            lb_ubuf_append(out, s + copied, i - copied);
            lb_ubuf_append(out, st->content, st->content_len);
            i += mlen;
            copied = i;
        } else {
            i++;
            while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        }
    }
    lb_ubuf_append(out, s + copied, n - copied);
}

// ---- pre-tokenizers ------------------------------------------------------------------------------

static void pre_apply(const pre_step_t *st, const char *in, const pvec_t *pin, lb_ubuf_t *out,
                      pvec_t *pout) {
    out->n = 0;
    pout->n = 0;
    for (size_t k = 0; k < pin->n; k++) {
        const char *s = in + pin->p[k].off;
        size_t n = pin->p[k].len;
        size_t base = out->n;
        if (st->kind == P_WSPLIT) {
            lb_ubuf_append(out, s, n);
            size_t i = 0;
            while (i < n) {
                size_t ws = space_run(s, n, i);
                i += ws;
                if (i >= n) break;
                size_t j = i;
                while (j < n) {
                    size_t len;
                    if (lb_uc_is_space(lb_utf8_decode(s + j, n - j, &len))) break;
                    j += len;
                }
                pvec_push(pout, base + i, j - i, pin->p[k].at_start && i == 0);
                i = j;
            }
            continue;
        }
        // Metaspace: spaces become the replacement, a replacement is prepended when the
        // scheme asks, then the text is cut before every replacement (MergedWithNext).
        int starts = n >= st->rep_len && !memcmp(s, st->rep, st->rep_len);
        if (!starts && n > 0 && s[0] == ' ') starts = 1;  // the leading space is replaced
        if (!starts && (st->scheme == PREPEND_ALWAYS ||
                        (st->scheme == PREPEND_FIRST && pin->p[k].at_start)))
            lb_ubuf_append(out, st->rep, st->rep_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') lb_ubuf_append(out, st->rep, st->rep_len);
            else lb_ubuf_append(out, s + i, 1);
        }
        size_t end = out->n;
        if (end == base) continue;
        if (!st->split) {
            pvec_push(pout, base, end - base, pin->p[k].at_start);
            continue;
        }
        size_t start = base;
        for (size_t i = base + 1; i + st->rep_len <= end; i++) {
            if (!memcmp(out->p + i, st->rep, st->rep_len)) {
                pvec_push(pout, start, i - start, pin->p[k].at_start && start == base);
                start = i;
                i += st->rep_len - 1;
            }
        }
        pvec_push(pout, start, end - start, pin->p[k].at_start && start == base);
    }
}

// ---- Unigram -------------------------------------------------------------------------------------

typedef struct {
    double *score;  // [n+1] best path score ending at each byte offset
    int *start;     // [n+1] start of the last token of that path, -1 = unreached
    int *id;        // [n+1] its id
    int *path;      // [n+1] token ends, backtracked
    size_t cap;
} viterbi_t;

static size_t utf8_len_of(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// Emits the ids of a fused unknown run (or a lone matched piece): the piece's own id when
// the text is a vocabulary piece, bytes when byte_fallback allows, else unk.
static void emit_unknown(const tokenizer_t *t, const char *s, size_t n, ivec_t *out) {
    int32_t id = trie_find(&t->vocab, s, n);
    if (id >= 0) {
        ivec_push(out, id);
        return;
    }
    if (t->byte_fallback) {
        size_t i = 0;
        while (i < n && t->byte_ids[(unsigned char)s[i]] >= 0) i++;
        if (i == n) {
            for (i = 0; i < n; i++) ivec_push(out, t->byte_ids[(unsigned char)s[i]]);
            return;
        }
    }
    ivec_push(out, t->unk_id);
}

// tokenizers' Unigram::encode_optimized + tokenize for one pre-token.
static int unigram_word(const tokenizer_t *t, const char *s, size_t n, viterbi_t *vt,
                        ivec_t *out, lb_err_t *err) {
    if (n == 0) return 0;
    if (n + 1 > vt->cap) {
        vt->cap = (n + 1) * 2;
        vt->score = xrealloc(vt->score, vt->cap * sizeof *vt->score);
        vt->start = xrealloc(vt->start, vt->cap * sizeof *vt->start);
        vt->id = xrealloc(vt->id, vt->cap * sizeof *vt->id);
        vt->path = xrealloc(vt->path, vt->cap * sizeof *vt->path);
    }
    double *score = vt->score;
    int *start = vt->start, *id = vt->id;
    for (size_t i = 0; i <= n; i++) {
        score[i] = 0.0;
        start[i] = -1;
    }
    const double unk_score = t->min_score - 10.0;
    size_t pos = 0;
    while (pos < n) {
        size_t mblen = utf8_len_of((unsigned char)s[pos]);
        // A lead byte of damaged text (a charsmap or Replace content that is not UTF-8) must
        // not claim bytes past the word: lattice nodes exist only up to n.
        if (mblen > n - pos) mblen = n - pos;
        double base = score[pos];
        int has_single = 0;
        int32_t node = 0;
        for (size_t k = pos; k < n; k++) {
            node = trie_child(&t->vocab, node, (unsigned char)s[k]);
            if (node < 0) break;
            int32_t v = t->vocab.val[node];
            if (v < 0) continue;
            size_t key = k + 1;
            double cand = t->scores[v] + base;
            // Strictly greater: on a tie the first path found stays.
            if (start[key] < 0 || cand > score[key]) {
                score[key] = cand;
                start[key] = (int)pos;
                id[key] = v;
            }
            if (key - pos == mblen) has_single = 1;
        }
        if (!has_single) {
            if (t->unk_id < 0)
                return lb_err_set(err, LB_EARG,
                                  "%s: the text contains '%.*s', which the vocabulary lacks, and "
                                  "the model has no unk_id; use a tokenizer with an unk token",
                                  t->name, (int)mblen, s + pos);
            size_t key = pos + mblen;
            double cand = unk_score + base;
            if (start[key] < 0 || cand > score[key]) {
                score[key] = cand;
                start[key] = (int)pos;
                id[key] = t->unk_id;
            }
        }
        pos += mblen;
    }
    // Backtrack, then emit forward; consecutive unk tokens are fused into one.
    size_t np = 0;
    for (int e = (int)n; e > 0; e = start[e]) vt->path[np++] = e;
    size_t i = np;
    int prev_end = 0;
    while (i > 0) {
        int e = vt->path[--i];
        if (t->unk_id >= 0 && id[e] == t->unk_id) {
            int a = prev_end;
            while (i > 0 && id[vt->path[i - 1]] == t->unk_id) e = vt->path[--i];
            emit_unknown(t, s + a, (size_t)(e - a), out);
        } else {
            ivec_push(out, id[e]);
        }
        prev_end = e;
    }
    return 0;
}

// ---- added tokens ---------------------------------------------------------------------------------

typedef struct {
    size_t a, b;
    int id;  // -1: plain text
} span_t;

typedef struct {
    span_t *s;
    size_t n, cap;
} svec_t;

static void svec_push(svec_t *v, size_t a, size_t b, int id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->s = xrealloc(v->s, v->cap * sizeof *v->s);
    }
    v->s[v->n++] = (span_t){a, b, id};
}

static uint32_t char_before(const char *s, size_t i) {
    size_t k = i - 1, len;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return lb_utf8_decode(s + k, i - k, &len);
}

// AddedVocabulary::find_matches: leftmost-longest matches, then single_word, lstrip, rstrip.
static void find_added(const tokenizer_t *t, const trie_t *tr, const unsigned char *first,
                       const char *s, size_t n, svec_t *out) {
    out->n = 0;
    size_t start_offset = 0, i = 0;
    while (i < n) {
        if (!first[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t k = i; k < n; k++) {
            node = trie_child(tr, node, (unsigned char)s[k]);
            if (node < 0) break;
            if (tr->val[node] >= 0) {
                best = tr->val[node];
                best_end = k + 1;
            }
        }
        if (best < 0) {
            i++;
            continue;
        }
        const added_t *a = &t->added[best];
        size_t start = i, stop = best_end;
        i = best_end;  // the search resumes after the match even when it is discarded
        if (a->single_word) {
            size_t len;
            int start_space = start == 0 || !lb_uc_is_word(char_before(s, start));
            int stop_space = stop == n || !lb_uc_is_word(lb_utf8_decode(s + stop, n - stop, &len));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t k = ns - 1;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                size_t len;
                if (!lb_uc_is_space(lb_utf8_decode(s + k, ns - k, &len))) break;
                ns = k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop += space_run(s, n, stop);
        if (start < start_offset) start = start_offset;
        if (start_offset < start) svec_push(out, start_offset, start, -1);
        svec_push(out, start, stop, a->id);
        start_offset = stop;
        if (i < stop) i = stop;
    }
    if (start_offset < n) svec_push(out, start_offset, n, -1);
}

// ---- encode ---------------------------------------------------------------------------------------

typedef struct {
    lb_ubuf_t nb[2];  // normalizer ping-pong buffers
    lb_ubuf_t pb[2];  // pre-tokenizer arenas
    pvec_t pv[2];
    svec_t raw, norm;
    viterbi_t vt;
} scratch_t;

static void scratch_free(scratch_t *sc) {
    for (int i = 0; i < 2; i++) {
        lb_ubuf_free(&sc->nb[i]);
        lb_ubuf_free(&sc->pb[i]);
        free(sc->pv[i].p);
    }
    free(sc->raw.s);
    free(sc->norm.s);
    free(sc->vt.score);
    free(sc->vt.start);
    free(sc->vt.id);
    free(sc->vt.path);
}

// Normalizes s[0..n); the result points into sc->nb or at s itself.
static const char *normalize(const tokenizer_t *t, const char *s, size_t n, scratch_t *sc,
                             size_t *out_len) {
    const char *cur = s;
    size_t len = n;
    for (int k = 0; k < t->n_normalizers; k++) {
        lb_ubuf_t *o = &sc->nb[k & 1];
        norm_apply(&t->normalizers[k], cur, len, o);
        cur = o->p;
        len = o->n;
    }
    *out_len = len;
    return cur;
}

// Pre-tokenizes one normalized piece and runs the model on every word.
static int encode_piece(const tokenizer_t *t, const char *s, size_t n, int at_start,
                        scratch_t *sc, ivec_t *out, lb_err_t *err) {
    if (n == 0) return 0;
    if (t->n_pre == 0) return unigram_word(t, s, n, &sc->vt, out, err);
    pvec_t *pin = &sc->pv[0];
    pin->n = 0;
    pvec_push(pin, 0, n, at_start);
    const char *text = s;
    int cur = 0;
    for (int k = 0; k < t->n_pre; k++) {
        int nx = cur ^ 1;
        pre_apply(&t->pre[k], text, &sc->pv[cur], &sc->pb[nx], &sc->pv[nx]);
        text = sc->pb[nx].p;
        cur = nx;
    }
    for (size_t i = 0; i < sc->pv[cur].n; i++) {
        const piece_t *p = &sc->pv[cur].p[i];
        if (unigram_word(t, text + p->off, p->len, &sc->vt, out, err)) return -1;
    }
    return 0;
}

int tokenizer_encode_n(const tokenizer_t *t, const char *text, size_t len, int add_special,
                       int **ids, int *n, lb_err_t *err) {
    *ids = NULL;
    *n = 0;
    size_t bad = lb_utf8_invalid_at(text, len);
    if (bad != (size_t)-1)
        return lb_err_set(err, LB_EARG,
                          "the text to tokenize is not valid UTF-8 (byte %zu is 0x%02X); "
                          "convert it to UTF-8 first",
                          bad, (unsigned char)text[bad]);
    scratch_t sc;
    memset(&sc, 0, sizeof sc);
    ivec_t out = {0};
    int rc = 0;
    find_added(t, &t->added_raw, t->raw_first, text, len, &sc.raw);
    for (size_t k = 0; k < sc.raw.n && rc == 0; k++) {
        const span_t *sp = &sc.raw.s[k];
        if (sp->id >= 0) {
            ivec_push(&out, sp->id);
            continue;
        }
        size_t nl;
        const char *ns = normalize(t, text + sp->a, sp->b - sp->a, &sc, &nl);
        // The pre-tokenizer arenas are separate from the normalizer buffers, so ns stays
        // valid while its pieces are encoded.
        if (t->n_norm == 0) {
            rc = encode_piece(t, ns, nl, sp->a == 0, &sc, &out, err);
            continue;
        }
        find_added(t, &t->added_norm, t->norm_first, ns, nl, &sc.norm);
        for (size_t j = 0; j < sc.norm.n && rc == 0; j++) {
            const span_t *q = &sc.norm.s[j];
            if (q->id >= 0) ivec_push(&out, q->id);
            else
                rc = encode_piece(t, ns + q->a, q->b - q->a, sp->a == 0 && q->a == 0, &sc, &out,
                                  err);
        }
    }
    scratch_free(&sc);
    if (rc) {
        free(out.v);
        return -1;
    }
    if (add_special && t->has_tmpl) {
        ivec_t fin = {0};
        for (int k = 0; k < t->n_tmpl; k++) {
            if (t->tmpl[k] >= 0) ivec_push(&fin, t->tmpl[k]);
            else
                for (size_t i = 0; i < out.n; i++) ivec_push(&fin, out.v[i]);
        }
        free(out.v);
        out = fin;
    }
    if (!out.v) out.v = xmalloc(sizeof(int));
    *ids = out.v;
    *n = (int)out.n;
    return 0;
}

int tokenizer_encode(const tokenizer_t *t, const char *text, int add_special, int **ids, int *n,
                     lb_err_t *err) {
    return tokenizer_encode_n(t, text, strlen(text), add_special, ids, n, err);
}

// ---- decode ---------------------------------------------------------------------------------------

typedef struct {
    char **s;
    size_t n, cap;
} strvec_t;

static void strvec_push(strvec_t *v, char *s) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 32;
        v->s = xrealloc(v->s, v->cap * sizeof *v->s);
    }
    v->s[v->n++] = s;
}

static void strvec_free(strvec_t *v) {
    for (size_t i = 0; i < v->n; i++) free(v->s[i]);
    free(v->s);
    memset(v, 0, sizeof *v);
}

static char *ubuf_take(lb_ubuf_t *b) {
    if (!b->p) return xstrdup("");
    char *p = b->p;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

static int byte_token(const char *s, unsigned *byte) {
    if (strlen(s) != 6 || strncmp(s, "<0x", 3) || s[5] != '>') return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        int c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v * 16 + (unsigned)d;
    }
    *byte = v;
    return 1;
}

static void flush_bytes(lb_ubuf_t *bytes, strvec_t *out) {
    if (!bytes->n) return;
    if (lb_utf8_invalid_at(bytes->p, bytes->n) == (size_t)-1) {
        strvec_push(out, ubuf_take(bytes));
        return;
    }
    lb_ubuf_t r = {0};
    for (size_t i = 0; i < bytes->n; i++) lb_ubuf_append(&r, "\xEF\xBF\xBD", 3);
    strvec_push(out, ubuf_take(&r));
    bytes->n = 0;
}

// One decoder of the chain: tokens in, tokens out (tokenizers' decode_chain).
static void dec_apply(const dec_step_t *d, strvec_t *in, strvec_t *out) {
    char u[4];
    if (d->kind == D_FUSE) {
        lb_ubuf_t b = {0};
        for (size_t i = 0; i < in->n; i++) lb_ubuf_append(&b, in->s[i], strlen(in->s[i]));
        strvec_push(out, ubuf_take(&b));
        return;
    }
    if (d->kind == D_BYTEFALLBACK) {
        lb_ubuf_t bytes = {0};
        for (size_t i = 0; i < in->n; i++) {
            unsigned v;
            if (byte_token(in->s[i], &v)) {
                char c = (char)v;
                lb_ubuf_append(&bytes, &c, 1);
                continue;
            }
            flush_bytes(&bytes, out);
            strvec_push(out, xstrdup(in->s[i]));
        }
        flush_bytes(&bytes, out);
        lb_ubuf_free(&bytes);
        return;
    }
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->s[i];
        size_t n = strlen(s);
        lb_ubuf_t b = {0};
        lb_ubuf_append(&b, "", 0);
        if (d->kind == D_METASPACE) {
            for (size_t k = 0; k < n;) {
                size_t len;
                uint32_t cp = lb_utf8_decode(s + k, n - k, &len);
                if (cp == d->cp) {
                    if (!(i == 0 && d->scheme != PREPEND_NEVER)) lb_ubuf_append(&b, " ", 1);
                } else {
                    lb_ubuf_append(&b, s + k, len);
                }
                k += len;
            }
        } else if (d->kind == D_STRIP) {
            size_t cl = lb_utf8_encode(d->cp, u), a = 0, e = n;
            for (int k = 0; k < d->start && e - a >= cl && !memcmp(s + a, u, cl); k++) a += cl;
            for (int k = 0; k < d->stop && e - a >= cl && !memcmp(s + e - cl, u, cl); k++) e -= cl;
            lb_ubuf_append(&b, s + a, e - a);
        } else {  // D_REPLACE
            size_t pl = strlen(d->pat), k = 0, copied = 0;
            while (pl && k + pl <= n) {
                if (!memcmp(s + k, d->pat, pl)) {
                    lb_ubuf_append(&b, s + copied, k - copied);
                    lb_ubuf_append(&b, d->content, strlen(d->content));
                    k += pl;
                    copied = k;
                } else {
                    k++;
                }
            }
            lb_ubuf_append(&b, s + copied, n - copied);
        }
        strvec_push(out, ubuf_take(&b));
    }
}

const char *tokenizer_id_to_piece(const tokenizer_t *t, int id) {
    if (id < 0) return NULL;
    if (id < t->added_id_span && t->added_by_id[id] >= 0)
        return t->added[t->added_by_id[id]].content;
    if (id < t->n_pieces) return t->pieces[id];
    return NULL;
}

static int is_special_content(const tokenizer_t *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].special && !strcmp(t->added[i].content, s)) return 1;
    return 0;
}

int tokenizer_is_special(const tokenizer_t *t, int id) {
    const char *p = tokenizer_id_to_piece(t, id);
    return p && is_special_content(t, p);
}

char *tokenizer_decode(const tokenizer_t *t, const int *ids, int n, int skip_special) {
    strvec_t cur = {0}, nxt = {0};
    for (int i = 0; i < n; i++) {
        const char *p = tokenizer_id_to_piece(t, ids[i]);
        if (!p) continue;
        // tokenizers tests the token's text against the special set, so a model piece that
        // spells a special token is skipped too.
        if (skip_special && is_special_content(t, p)) continue;
        strvec_push(&cur, xstrdup(p));
    }
    lb_ubuf_t res = {0};
    lb_ubuf_append(&res, "", 0);
    if (!t->has_decoder) {
        for (size_t i = 0; i < cur.n; i++) {
            if (i) lb_ubuf_append(&res, " ", 1);
            lb_ubuf_append(&res, cur.s[i], strlen(cur.s[i]));
        }
    } else {
        for (int k = 0; k < t->n_dec; k++) {
            dec_apply(&t->dec[k], &cur, &nxt);
            strvec_free(&cur);
            cur = nxt;
            memset(&nxt, 0, sizeof nxt);
        }
        for (size_t i = 0; i < cur.n; i++) lb_ubuf_append(&res, cur.s[i], strlen(cur.s[i]));
    }
    strvec_free(&cur);
    return ubuf_take(&res);
}

// ---- accessors ------------------------------------------------------------------------------------

int tokenizer_vocab_size(const tokenizer_t *t) {
    return t->n_pieces > t->added_id_span ? t->n_pieces : t->added_id_span;
}

int tokenizer_piece_to_id(const tokenizer_t *t, const char *piece) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, piece)) return t->added[i].id;
    return *piece ? trie_find(&t->vocab, piece, strlen(piece)) : t->empty_id;
}

int tokenizer_eos_id(const tokenizer_t *t) { return t->eos_id; }
int tokenizer_pad_id(const tokenizer_t *t) { return t->pad_id; }
int tokenizer_unk_id(const tokenizer_t *t) { return t->unk_id; }

// ---- loading --------------------------------------------------------------------------------------

void tokenizer_free(tokenizer_t *t) {
    if (!t) return;
    for (int i = 0; i < t->n_pieces; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->scores);
    trie_free(&t->vocab);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    trie_free(&t->added_raw);
    trie_free(&t->added_norm);
    free(t->added_by_id);
    for (int i = 0; i < t->n_normalizers; i++) {
        norm_step_t *st = &t->normalizers[i];
        cm_free(st->cm);
        free(st->pat);
        free(st->content);
    }
    free(t->normalizers);
    free(t->pre);
    free(t->tmpl);
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pat);
        free(t->dec[i].content);
    }
    free(t->dec);
    free(t->name);
    free(t);
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

// The one character of a string field (Metaspace replacement, Strip content).
static int jchar(const cJSON *o, const char *key, uint32_t dflt, uint32_t *cp, const char *what,
                 const char *name, lb_err_t *err) {
    const char *s = jstr(o, key);
    if (!s) {
        *cp = dflt;
        return 0;
    }
    size_t len, n = strlen(s);
    if (n == 0 || lb_utf8_invalid_at(s, n) != (size_t)-1 ||
        (*cp = lb_utf8_decode(s, n, &len), len != n))
        return lb_err_set(err, LB_EFORMAT, "%s: %s \"%s\" must be exactly one character", name,
                          what, key);
    return 0;
}

static int add_normalizer(tokenizer_t *t, const cJSON *o, const char *name, lb_err_t *err);

static norm_step_t *new_norm(tokenizer_t *t, int kind) {
    t->normalizers = xrealloc(t->normalizers, sizeof *t->normalizers * (size_t)(t->n_normalizers + 1));
    norm_step_t *st = &t->normalizers[t->n_normalizers++];
    memset(st, 0, sizeof *st);
    st->kind = kind;
    return st;
}

// Parses the Replace regexes lorabench understands: literal text, "C+", "C{n,}", "\s+",
// "\s{n,}" (C one character, possibly escaped with a backslash).
static int parse_replace_regex(norm_step_t *st, const char *re) {
    const char *meta = "\\.^$|?*+()[]{}";
    if (!strpbrk(re, meta)) {
        st->repl = R_LITERAL;
        st->pat = xstrdup(re);
        st->pat_len = strlen(re);
        return 0;
    }
    const char *p = re;
    int space = 0;
    uint32_t cp = 0;
    if (p[0] == '\\' && p[1] == 's') {
        space = 1;
        p += 2;
    } else if (p[0] == '\\' && p[1] && strchr(meta, p[1])) {
        cp = (unsigned char)p[1];
        p += 2;
    } else if (p[0] && !strchr(meta, p[0])) {
        size_t len;
        size_t n = strlen(p);
        cp = lb_utf8_decode(p, n, &len);
        p += len;
    } else {
        return -1;
    }
    int min;
    if (!strcmp(p, "+")) {
        min = 1;
    } else {
        char *end;
        if (p[0] != '{') return -1;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || strcmp(end, ",}") || v < 1 || v > 1000000) return -1;
        min = (int)v;
    }
    st->repl = space ? R_SPACE_RUN : R_RUN;
    st->run_cp = cp;
    st->run_min = min;
    return 0;
}

static int add_normalizer(tokenizer_t *t, const cJSON *o, const char *name, lb_err_t *err) {
    if (!o || cJSON_IsNull(o)) return 0;
    const char *type = jstr(o, "type");
    if (!cJSON_IsObject(o) || !type)
        return lb_err_set(err, LB_EFORMAT, "%s: a normalizer has no \"type\"; re-export the tokenizer",
                          name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(list))
            return lb_err_set(err, LB_EFORMAT, "%s: normalizer Sequence has no \"normalizers\" list",
                              name);
        const cJSON *it;
        cJSON_ArrayForEach(it, list) if (add_normalizer(t, it, name, err)) return -1;
        return 0;
    }
    if (!strcmp(type, "NFKC")) {
        new_norm(t, N_NFKC);
        return 0;
    }
    if (!strcmp(type, "NFKD")) {
        new_norm(t, N_NFKD);
        return 0;
    }
    if (!strcmp(type, "Precompiled")) {
        const char *b64 = jstr(o, "precompiled_charsmap");
        if (!b64 && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "precompiled_charsmap")))
            return lb_err_set(err, LB_EFORMAT,
                              "%s: normalizer Precompiled has no \"precompiled_charsmap\" string", name);
        charsmap_t *cm = cm_load(b64 ? b64 : "", name, err);
        if (!cm) return -1;
        new_norm(t, N_PRECOMPILED)->cm = cm;
        return 0;
    }
    if (!strcmp(type, "Strip")) {
        norm_step_t *st = new_norm(t, N_STRIP);
        st->strip_left = jbool(o, "strip_left", 1);
        st->strip_right = jbool(o, "strip_right", 1);
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(o, "prepend");
        if (!p) return lb_err_set(err, LB_EFORMAT, "%s: normalizer Prepend has no \"prepend\" string", name);
        norm_step_t *st = new_norm(t, N_PREPEND);
        st->content = xstrdup(p);
        st->content_len = strlen(p);
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const char *content = jstr(o, "content");
        const char *lit = jstr(pat, "String"), *re = jstr(pat, "Regex");
        if (!content || (!lit && !re))
            return lb_err_set(err, LB_EFORMAT,
                              "%s: normalizer Replace needs \"pattern\" ({\"String\": ...} or "
                              "{\"Regex\": ...}) and \"content\"",
                              name);
        norm_step_t *st = new_norm(t, N_REPLACE);
        st->content = xstrdup(content);
        st->content_len = strlen(content);
        if (lit) {
            st->repl = R_LITERAL;
            st->pat = xstrdup(lit);
            st->pat_len = strlen(lit);
        } else if (parse_replace_regex(st, re)) {
            return lb_err_set(err, LB_EFORMAT,
                              "%s: normalizer Replace regex \"%s\" is not supported; lorabench "
                              "handles literal text, \"C+\", \"C{n,}\" and \"\\s+\"",
                              name, re);
        }
        return 0;
    }
    return lb_err_set(err, LB_EFORMAT,
                      "%s: normalizer type \"%s\" is not supported; lorabench handles Precompiled, "
                      "NFKC, NFKD, Replace, Strip, Prepend and Sequence",
                      name, type);
}

static int add_pre(tokenizer_t *t, const cJSON *o, const char *name, lb_err_t *err) {
    if (!o || cJSON_IsNull(o)) return 0;
    const char *type = jstr(o, "type");
    if (!cJSON_IsObject(o) || !type)
        return lb_err_set(err, LB_EFORMAT, "%s: a pre_tokenizer has no \"type\"; re-export the tokenizer",
                          name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(list))
            return lb_err_set(err, LB_EFORMAT,
                              "%s: pre_tokenizer Sequence has no \"pretokenizers\" list", name);
        const cJSON *it;
        cJSON_ArrayForEach(it, list) if (add_pre(t, it, name, err)) return -1;
        return 0;
    }
    pre_step_t st;
    memset(&st, 0, sizeof st);
    if (!strcmp(type, "WhitespaceSplit")) {
        st.kind = P_WSPLIT;
    } else if (!strcmp(type, "Metaspace")) {
        st.kind = P_METASPACE;
        if (jchar(o, "replacement", 0x2581, &st.rep_cp, "pre_tokenizer Metaspace", name, err))
            return -1;
        st.rep_len = lb_utf8_encode(st.rep_cp, st.rep);
        st.split = jbool(o, "split", 1);
        const char *scheme = jstr(o, "prepend_scheme");
        if (!scheme) st.scheme = jbool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
        else if (!strcmp(scheme, "always")) st.scheme = PREPEND_ALWAYS;
        else if (!strcmp(scheme, "first")) st.scheme = PREPEND_FIRST;
        else if (!strcmp(scheme, "never")) st.scheme = PREPEND_NEVER;
        else
            return lb_err_set(err, LB_EFORMAT,
                              "%s: pre_tokenizer Metaspace has prepend_scheme \"%s\"; expected "
                              "always, first or never",
                              name, scheme);
    } else {
        return lb_err_set(err, LB_EFORMAT,
                          "%s: pre_tokenizer type \"%s\" is not supported; lorabench handles "
                          "Metaspace, WhitespaceSplit and Sequence",
                          name, type);
    }
    t->pre = xrealloc(t->pre, sizeof *t->pre * (size_t)(t->n_pre + 1));
    t->pre[t->n_pre++] = st;
    return 0;
}

static int add_decoder(tokenizer_t *t, const cJSON *o, const char *name, lb_err_t *err) {
    const char *type = jstr(o, "type");
    if (!cJSON_IsObject(o) || !type)
        return lb_err_set(err, LB_EFORMAT, "%s: a decoder has no \"type\"; re-export the tokenizer",
                          name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(list))
            return lb_err_set(err, LB_EFORMAT, "%s: decoder Sequence has no \"decoders\" list", name);
        const cJSON *it;
        cJSON_ArrayForEach(it, list) if (add_decoder(t, it, name, err)) return -1;
        return 0;
    }
    dec_step_t d;
    memset(&d, 0, sizeof d);
    if (!strcmp(type, "Metaspace")) {
        d.kind = D_METASPACE;
        if (jchar(o, "replacement", 0x2581, &d.cp, "decoder Metaspace", name, err)) return -1;
        const char *scheme = jstr(o, "prepend_scheme");
        if (!scheme) d.scheme = jbool(o, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
        else d.scheme = !strcmp(scheme, "never") ? PREPEND_NEVER
                        : !strcmp(scheme, "first") ? PREPEND_FIRST : PREPEND_ALWAYS;
    } else if (!strcmp(type, "ByteFallback")) {
        d.kind = D_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d.kind = D_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d.kind = D_STRIP;
        if (jchar(o, "content", ' ', &d.cp, "decoder Strip", name, err)) return -1;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
        d.start = cJSON_IsNumber(a) ? a->valueint : 0;
        d.stop = cJSON_IsNumber(b) ? b->valueint : 0;
    } else if (!strcmp(type, "Replace")) {
        const char *lit = jstr(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "String");
        const char *content = jstr(o, "content");
        if (!lit || !content)
            return lb_err_set(err, LB_EFORMAT,
                              "%s: decoder Replace is supported with a {\"String\": ...} pattern "
                              "and a \"content\" only",
                              name);
        d.kind = D_REPLACE;
        d.pat = xstrdup(lit);
        d.content = xstrdup(content);
    } else {
        return lb_err_set(err, LB_EFORMAT,
                          "%s: decoder type \"%s\" is not supported; lorabench handles Metaspace, "
                          "ByteFallback, Fuse, Strip, Replace and Sequence",
                          name, type);
    }
    t->dec = xrealloc(t->dec, sizeof *t->dec * (size_t)(t->n_dec + 1));
    t->dec[t->n_dec++] = d;
    return 0;
}

static int load_model(tokenizer_t *t, const cJSON *m, const char *name, lb_err_t *err) {
    if (!cJSON_IsObject(m))
        return lb_err_set(err, LB_EFORMAT, "%s: no \"model\" object; is this a tokenizer.json?", name);
    const char *type = jstr(m, "type");
    if (!type)
        type = cJSON_GetObjectItemCaseSensitive(m, "merges") ? "BPE"
               : cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(m, "vocab")) ? "WordPiece/WordLevel"
                                                                             : NULL;
    if (!type || strcmp(type, "Unigram"))
        return lb_err_set(err, LB_EFORMAT,
                          "%s: model type \"%s\" is not supported; lorabench reads Unigram "
                          "(SentencePiece, T5/FLAN-T5) tokenizers only",
                          name, type ? type : "(none)");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    int nv = cJSON_GetArraySize(vocab);
    if (!cJSON_IsArray(vocab) || nv == 0)
        return lb_err_set(err, LB_EFORMAT, "%s: model.vocab must be a non-empty list of [piece, score]",
                          name);
    t->pieces = xcalloc((size_t)nv, sizeof *t->pieces);
    t->scores = xmalloc(sizeof *t->scores * (size_t)nv);
    t->min_score = 1e300;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        const cJSON *p = cJSON_GetArrayItem(it, 0), *s = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || !cJSON_IsString(p) || !cJSON_IsNumber(s))
            return lb_err_set(err, LB_EFORMAT,
                              "%s: model.vocab entry %d is not [piece, score]; re-export the tokenizer",
                              name, i);
        t->pieces[i] = xstrdup(p->valuestring);
        t->scores[i] = s->valuedouble;
        if (s->valuedouble < t->min_score) t->min_score = s->valuedouble;
        t->n_pieces = ++i;
    }
    trie_init(&t->vocab);
    // A later duplicate wins, as in the library's token -> id map.
    for (i = 0; i < nv; i++) trie_insert(&t->vocab, t->pieces[i], strlen(t->pieces[i]), i, 1);
    t->empty_id = -1;
    for (i = 0; i < nv; i++)
        if (!t->pieces[i][0]) t->empty_id = i;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_id");
    t->unk_id = -1;
    if (cJSON_IsNumber(unk)) {
        if (unk->valueint < 0 || unk->valueint >= nv)
            return lb_err_set(err, LB_EFORMAT,
                              "%s: model.unk_id %d is outside the vocabulary of %d pieces", name,
                              unk->valueint, nv);
        t->unk_id = unk->valueint;
    } else if (unk && !cJSON_IsNull(unk)) {
        return lb_err_set(err, LB_EFORMAT, "%s: model.unk_id must be a number or null", name);
    }
    t->byte_fallback = jbool(m, "byte_fallback", 0);
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        t->byte_ids[b] = trie_find(&t->vocab, buf, 6);
    }
    return 0;
}

static int load_added(tokenizer_t *t, const cJSON *list, const char *name, lb_err_t *err) {
    trie_init(&t->added_raw);
    trie_init(&t->added_norm);
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list))
        return lb_err_set(err, LB_EFORMAT, "%s: \"added_tokens\" must be a list", name);
    int n = cJSON_GetArraySize(list);
    t->added = xcalloc((size_t)(n ? n : 1), sizeof *t->added);
    int max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = jstr(it, "content");
        // The id sizes the embedding (tokenizer_vocab_size) and the id -> token table: a
        // whole number below 2^24 (real vocabularies stay under 300k).
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) ||
            id->valuedouble != (double)id->valueint || !content)
            return lb_err_set(err, LB_EFORMAT,
                              "%s: added_tokens entry %d needs an \"id\" (a whole number from 0 "
                              "to 16777215) and a \"content\" string",
                              name, t->n_added);
        added_t *a = &t->added[t->n_added++];
        a->id = id->valueint;
        a->content = xstrdup(content);
        a->len = strlen(content);
        a->single_word = jbool(it, "single_word", 0);
        a->lstrip = jbool(it, "lstrip", 0);
        a->rstrip = jbool(it, "rstrip", 0);
        a->special = jbool(it, "special", 0);
        a->normalized = jbool(it, "normalized", !a->special);
        if (a->id > max_id) max_id = a->id;
    }
    t->added_id_span = max_id + 1;
    t->added_by_id = xmalloc(sizeof *t->added_by_id * (size_t)(max_id + 1 > 0 ? max_id + 1 : 1));
    for (int i = 0; i <= max_id; i++) t->added_by_id[i] = -1;
    for (int i = 0; i < t->n_added; i++) t->added_by_id[t->added[i].id] = i;
    return 0;
}

// Builds the two matchers: raw contents, and contents passed through the normalizer (as the
// library's refresh_added_tokens does). Special tokens come first, then the others.
static void build_added_matchers(tokenizer_t *t) {
    scratch_t sc;
    memset(&sc, 0, sizeof sc);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t->n_added; i++) {
            const added_t *a = &t->added[i];
            if (a->special != (pass == 0) || a->len == 0) continue;
            if (!a->normalized) {
                trie_insert(&t->added_raw, a->content, a->len, i, 0);
                t->raw_first[(unsigned char)a->content[0]] = 1;
                t->n_raw++;
            } else {
                size_t nl;
                const char *ns = normalize(t, a->content, a->len, &sc, &nl);
                if (nl == 0) continue;
                trie_insert(&t->added_norm, ns, nl, i, 0);
                t->norm_first[(unsigned char)ns[0]] = 1;
                t->n_norm++;
            }
        }
    }
    scratch_free(&sc);
}

static int load_post(tokenizer_t *t, const cJSON *pp, const char *name, lb_err_t *err) {
    if (!pp || cJSON_IsNull(pp)) return 0;
    const char *type = jstr(pp, "type");
    if (!type || strcmp(type, "TemplateProcessing"))
        return lb_err_set(err, LB_EFORMAT,
                          "%s: post_processor type \"%s\" is not supported; lorabench handles "
                          "TemplateProcessing",
                          name, type ? type : "(none)");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    if (!cJSON_IsArray(single))
        return lb_err_set(err, LB_EFORMAT, "%s: post_processor TemplateProcessing has no \"single\" list",
                          name);
    ivec_t v = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, single) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (seq) {
            const char *id = jstr(seq, "id");
            if (!id || strcmp(id, "A")) {
                free(v.v);
                return lb_err_set(err, LB_EFORMAT,
                                  "%s: post_processor single template uses sequence \"%s\"; only "
                                  "$A is allowed there",
                                  name, id ? id : "?");
            }
            ivec_push(&v, -1);
        } else if (sp) {
            const char *id = jstr(sp, "id");
            const cJSON *entry = id ? cJSON_GetObjectItemCaseSensitive(specials, id) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(entry, "ids");
            if (!cJSON_IsArray(ids)) {
                free(v.v);
                return lb_err_set(err, LB_EFORMAT,
                                  "%s: post_processor template names special token \"%s\", which "
                                  "its special_tokens map lacks",
                                  name, id ? id : "?");
            }
            // The ids go into the model as they are: each must be a token of this vocabulary.
            const cJSON *x;
            int vs = tokenizer_vocab_size(t);
            cJSON_ArrayForEach(x, ids) {
                if (!cJSON_IsNumber(x) || x->valuedouble != (double)x->valueint || x->valueint < 0 ||
                    x->valueint >= vs) {
                    free(v.v);
                    return lb_err_set(err, LB_EFORMAT,
                                      "%s: post_processor special token \"%s\" has id %g, which is not an id "
                                      "of the vocabulary (0 to %d); re-export the tokenizer",
                                      name, id, cJSON_IsNumber(x) ? x->valuedouble : -1.0, vs - 1);
                }
                ivec_push(&v, x->valueint);
            }
        } else {
            free(v.v);
            return lb_err_set(err, LB_EFORMAT,
                              "%s: post_processor template item is neither Sequence nor SpecialToken",
                              name);
        }
    }
    t->tmpl = v.v;
    t->n_tmpl = (int)v.n;
    t->has_tmpl = 1;
    return 0;
}

// 1-based line of byte offset off in s, for JSON syntax errors.
static int line_of(const char *s, size_t off) {
    int line = 1;
    for (size_t i = 0; i < off; i++)
        if (s[i] == '\n') line++;
    return line;
}

// Offset of the first raw control character (below 0x20) inside a JSON string, or -1.
// JSON requires them escaped, and the tokenizers library (serde_json) refuses them; cJSON
// takes them, and a raw NUL would cut a piece short in the middle of its text.
static size_t json_raw_control_at(const char *s, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_str) {
            if (c == '"') in_str = 1;
        } else if (c == '\\') {
            i++;  // the escaped character, whatever it is
        } else if (c == '"') {
            in_str = 0;
        } else if (c < 0x20) {
            return i;
        }
    }
    return (size_t)-1;
}

tokenizer_t *tokenizer_load_json(const char *json, size_t len, const char *name, lb_err_t *err) {
    // JSON text is UTF-8 (RFC 8259), and the tokenizers library refuses anything else; cJSON
    // would pass raw invalid bytes through into pieces and normalizer strings.
    size_t bad = lb_utf8_invalid_at(json, len);
    if (bad != (size_t)-1) {
        lb_err_set(err, LB_EFORMAT,
                   "%s: the file is not valid UTF-8 (byte %zu); re-download or re-export the "
                   "tokenizer.json",
                   name, bad);
        return NULL;
    }
    bad = json_raw_control_at(json, len);
    if (bad != (size_t)-1) {
        lb_err_set(err, LB_EFORMAT,
                   "%s: invalid JSON near line %d (byte %zu): a control character (0x%02X) inside a "
                   "string must be escaped; re-download or re-export the tokenizer.json",
                   name, line_of(json, bad), bad, (unsigned char)json[bad]);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        lb_err_set(err, LB_EFORMAT,
                   "%s: invalid JSON near line %d (byte %zu); re-download or re-export the "
                   "tokenizer.json",
                   name, line_of(json, off), off);
        return NULL;
    }
    tokenizer_t *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->unk_id = -1;  // the tries stay zeroed (and freeable) until load_model/load_added
    if (!cJSON_IsObject(root)) {
        lb_err_set(err, LB_EFORMAT, "%s: the top level is not a JSON object; is this a tokenizer.json?",
                   name);
        goto fail;
    }
    if (load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), name, err)) goto fail;
    if (load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), name, err)) goto fail;
    if (add_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name, err)) goto fail;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && add_pre(t, pre, name, err)) goto fail;
    if (load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), name, err)) goto fail;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec)) {
        t->has_decoder = 1;
        if (add_decoder(t, dec, name, err)) goto fail;
    }
    build_added_matchers(t);
    t->eos_id = tokenizer_piece_to_id(t, "</s>");
    t->pad_id = tokenizer_piece_to_id(t, "<pad>");
    cJSON_Delete(root);
    return t;
fail:
    cJSON_Delete(root);
    tokenizer_free(t);
    return NULL;
}

tokenizer_t *tokenizer_load(const char *path, lb_err_t *err) {
    size_t len;
    char *text = lb_read_file(path, &len, err);
    if (!text) return NULL;
    tokenizer_t *t = tokenizer_load_json(text, len, path, err);
    free(text);
    return t;
}
