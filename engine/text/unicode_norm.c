// Unicode algorithms over the generated tables: NFKC/NFKD (UAX #15), extended grapheme
// clusters (UAX #29) and character classes. Hangul syllables are computed, not tabled.
#include "unicode_norm.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

// ---- buffers ------------------------------------------------------------------------------

void lb_ubuf_reserve(lb_ubuf_t *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void lb_ubuf_append(lb_ubuf_t *b, const char *s, size_t n) {
    lb_ubuf_reserve(b, n + 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;  // keep it a C string for callers that want one
}

void lb_ubuf_free(lb_ubuf_t *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

// ---- UTF-8 ----------------------------------------------------------------------------------

uint32_t lb_utf8_decode(const char *str, size_t n, size_t *len) {
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    size_t need;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) need = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, cp = c & 0x07, min = 0x10000;
    else goto bad;
    if (need > n) goto bad;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
    *len = need;
    return cp;
bad:
    *len = 1;
    return 0xFFFD;
}

size_t lb_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t lb_utf8_invalid_at(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp = lb_utf8_decode(s + i, n - i, &len);
        // A genuine U+FFFD is 3 bytes long; the error value always has length 1.
        if (cp == 0xFFFD && len == 1) return i;
        i += len;
    }
    return (size_t)-1;
}

// ---- normalization --------------------------------------------------------------------------

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19,
       VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int find_u32(const uint32_t *a, int n, uint32_t key) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (a[mid] == key) return mid;
        if (a[mid] < key) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static unsigned ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    int lo = 0, hi = lb_uc_nccc - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        uint32_t c = lb_uc_ccc[mid] >> 8;
        if (c == cp) return lb_uc_ccc[mid] & 0xFF;
        if (c < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

// Returns the composite of a + b, or 0 when they do not compose.
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
        b < TBASE + TCOUNT)
        return a + (b - TBASE);
    if (b < 0x300) return 0;
    uint64_t key = ((uint64_t)a << 21) | b;
    int lo = 0, hi = lb_uc_ncomp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (lb_uc_comp_key[mid] == key) return lb_uc_comp_val[mid];
        if (lb_uc_comp_key[mid] < key) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

typedef struct {
    uint32_t *cp;
    size_t n, cap;
} cpvec_t;

static void cp_push(cpvec_t *v, uint32_t c) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->cp = xrealloc(v->cp, v->cap * sizeof *v->cp);
    }
    v->cp[v->n++] = c;
}

static void decompose_into(cpvec_t *v, uint32_t c) {
    if (c < 0xA0) {
        cp_push(v, c);
        return;
    }
    if (c >= SBASE && c < SBASE + SCOUNT) {
        uint32_t s = c - SBASE;
        cp_push(v, LBASE + s / NCOUNT);
        cp_push(v, VBASE + (s % NCOUNT) / TCOUNT);
        if (s % TCOUNT) cp_push(v, TBASE + s % TCOUNT);
        return;
    }
    int i = find_u32(lb_uc_decomp_cp, lb_uc_ndecomp, c);
    if (i < 0) {
        cp_push(v, c);
        return;
    }
    uint32_t at = lb_uc_decomp_at[i];
    for (uint32_t k = 0; k < (at & 31); k++) cp_push(v, lb_uc_decomp_pool[(at >> 5) + k]);
}

void lb_uc_nfkc(const char *s, size_t n, int compose, lb_ubuf_t *out) {
    size_t i = 0;
    while (i < n && (unsigned char)s[i] < 0x80) i++;
    if (i == n) {  // ASCII is its own normal form
        lb_ubuf_append(out, s, n);
        return;
    }
    cpvec_t v = {0};
    for (i = 0; i < n;) {
        size_t len;
        uint32_t c = lb_utf8_decode(s + i, n - i, &len);
        decompose_into(&v, c);
        i += len;
    }
    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    for (size_t a = 0; a < v.n;) {
        if (ccc_of(v.cp[a]) == 0) {
            a++;
            continue;
        }
        size_t b = a;
        while (b < v.n && ccc_of(v.cp[b]) != 0) b++;
        for (size_t x = a + 1; x < b; x++) {  // insertion sort: runs are short
            uint32_t c = v.cp[x];
            unsigned cc = ccc_of(c);
            size_t y = x;
            while (y > a && ccc_of(v.cp[y - 1]) > cc) {
                v.cp[y] = v.cp[y - 1];
                y--;
            }
            v.cp[y] = c;
        }
        a = b;
    }
    size_t m = v.n;
    if (compose && m > 0) {
        size_t starter = 0, w = 1;
        uint32_t sc = v.cp[0];
        unsigned last = ccc_of(sc);
        if (last != 0) last = 256;  // no starter yet: nothing may compose
        for (size_t r = 1; r < m; r++) {
            uint32_t c = v.cp[r];
            unsigned cc = ccc_of(c);
            uint32_t comp = last == 256 ? 0 : compose_pair(sc, c);
            if (comp && (last < cc || last == 0)) {
                v.cp[starter] = comp;
                sc = comp;
                continue;
            }
            if (cc == 0) {
                starter = w;
                sc = c;
            }
            last = cc;
            v.cp[w++] = c;
        }
        m = w;
    }
    lb_ubuf_reserve(out, 4 * m + 1);
    for (size_t k = 0; k < m; k++) out->n += lb_utf8_encode(v.cp[k], out->p + out->n);
    out->p[out->n] = 0;
    free(v.cp);
}

// ---- grapheme clusters ------------------------------------------------------------------------

enum { G_OTHER, G_CR, G_LF, G_CONTROL, G_EXTEND, G_ZWJ, G_RI, G_PREPEND, G_SPACINGMARK, G_L,
       G_V, G_T, G_LV, G_LVT, G_PICT = 16 };

static unsigned gcb_of(uint32_t cp) {
    if (cp < 0x80) {
        if (cp == '\r') return G_CR;
        if (cp == '\n') return G_LF;
        if (cp < 0x20 || cp == 0x7F) return G_CONTROL;
        return G_OTHER;
    }
    if (cp >= SBASE && cp < SBASE + SCOUNT) return (cp - SBASE) % TCOUNT == 0 ? G_LV : G_LVT;
    int lo = 0, hi = lb_uc_ngcb - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < lb_uc_gcb_lo[mid]) hi = mid - 1;
        else if (cp > lb_uc_gcb_hi[mid]) lo = mid + 1;
        else return lb_uc_gcb_val[mid];
    }
    return G_OTHER;
}

size_t lb_uc_grapheme_end(const char *s, size_t n, size_t pos) {
    size_t len;
    uint32_t cp = lb_utf8_decode(s + pos, n - pos, &len);
    size_t p = pos + len;
    unsigned v = gcb_of(cp), prev = v & 15;
    int ri = prev == G_RI;             // regional indicators seen in a row
    int pict = (v & G_PICT) ? 1 : 0;   // 1: ExtPict Extend*, 2: ExtPict Extend* ZWJ
    while (p < n) {
        cp = lb_utf8_decode(s + p, n - p, &len);
        v = gcb_of(cp);
        unsigned cur = v & 15;
        int join;
        if (prev == G_CR && cur == G_LF) join = 1;                                    // GB3
        else if (prev == G_CR || prev == G_LF || prev == G_CONTROL) join = 0;          // GB4
        else if (cur == G_CR || cur == G_LF || cur == G_CONTROL) join = 0;             // GB5
        else if (prev == G_L && (cur == G_L || cur == G_V || cur == G_LV || cur == G_LVT))
            join = 1;                                                                  // GB6
        else if ((prev == G_LV || prev == G_V) && (cur == G_V || cur == G_T)) join = 1;  // GB7
        else if ((prev == G_LVT || prev == G_T) && cur == G_T) join = 1;               // GB8
        else if (cur == G_EXTEND || cur == G_ZWJ || cur == G_SPACINGMARK) join = 1;    // GB9, 9a
        else if (prev == G_PREPEND) join = 1;                                          // GB9b
        else if (prev == G_ZWJ && pict == 2 && (v & G_PICT)) join = 1;                 // GB11
        else if (prev == G_RI && cur == G_RI && ri % 2 == 1) join = 1;                 // GB12, 13
        else join = 0;                                                                 // GB999
        if (!join) break;
        if (v & G_PICT) pict = 1;
        else if (pict == 1 && cur == G_EXTEND) pict = 1;
        else if (pict == 1 && cur == G_ZWJ) pict = 2;
        else pict = 0;
        ri = cur == G_RI ? ri + 1 : 0;
        prev = cur;
        p += len;
    }
    return p;
}

// ---- classes ----------------------------------------------------------------------------------

int lb_uc_is_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int lb_uc_is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    if (cp >= SBASE && cp < SBASE + SCOUNT) return 1;
    int lo = 0, hi = lb_uc_nword - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < lb_uc_word_lo[mid]) hi = mid - 1;
        else if (cp > lb_uc_word_hi[mid]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
