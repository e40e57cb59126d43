// ROUGE as rouge-score computes it; see rouge.h for the definition being matched.
// Tokens are interned to small integers per scoring call, so every comparison below
// (n-gram counts, LCS tables) is an integer comparison.
#include "rouge.h"

#include <stdlib.h>
#include <string.h>

#include "porter.h"
#include "util.h"

// --- tokens ------------------------------------------------------------------------------

typedef struct {
    char *buf;     // token characters, each token NUL-terminated
    size_t *off;   // [n] offset of each token in buf
    int *line;     // [n] '\n'-separated line the token came from (for ROUGE-Lsum)
    int *id;       // [n] interned id, filled by intern_tokens
    int n, cap;
} toks_t;

static void toks_push(toks_t *t, size_t off, int line) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->off = xrealloc(t->off, (size_t)t->cap * sizeof *t->off);
        t->line = xrealloc(t->line, (size_t)t->cap * sizeof *t->line);
    }
    t->off[t->n] = off;
    t->line[t->n] = line;
    t->n++;
}

static void toks_free(toks_t *t) {
    free(t->buf);
    free(t->off);
    free(t->line);
    free(t->id);
    memset(t, 0, sizeof *t);
}

// rouge-score's tokenize(): text.lower(), re.sub("[^a-z0-9]+", " "), split, stem tokens
// longer than 3 characters. Only two non-ASCII characters lower-case into ASCII letters
// (U+212A -> "k", U+0130 -> "i" followed by U+0307, which is a separator), so every other
// byte >= 0x80 can be treated as a separator without decoding UTF-8.
static void toks_build(const char *text, int stem, toks_t *t) {
    const unsigned char *s = (const unsigned char *)text;
    size_t len = strlen(text);
    memset(t, 0, sizeof *t);
    t->buf = xmalloc(2 * len + 2);  // a token of L chars takes L+1 bytes from >= L bytes
    size_t w = 0, start = 0;
    int in_tok = 0, line = 0;
#define END_TOKEN()                                                                  \
    do {                                                                             \
        if (in_tok) {                                                                \
            size_t tl = w - start;                                                   \
            if (stem && tl > 3) w = start + porter_stem_inplace(t->buf + start, tl); \
            t->buf[w++] = '\0';                                                      \
            toks_push(t, start, line);                                               \
            in_tok = 0;                                                              \
        }                                                                            \
    } while (0)
#define ADD_CHAR(ch)           \
    do {                       \
        if (!in_tok) {         \
            start = w;         \
            in_tok = 1;        \
        }                      \
        t->buf[w++] = (ch);    \
    } while (0)
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            ADD_CHAR((char)(c - 'A' + 'a'));
            i++;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            ADD_CHAR((char)c);
            i++;
        } else if (c == 0xE2 && s[i + 1] == 0x84 && s[i + 2] == 0xAA) {  // KELVIN SIGN
            ADD_CHAR('k');
            i += 3;
        } else if (c == 0xC4 && s[i + 1] == 0xB0) {  // I WITH DOT ABOVE
            ADD_CHAR('i');
            END_TOKEN();
            i += 2;
        } else {
            END_TOKEN();
            if (c == '\n') line++;
            i++;
        }
    }
    END_TOKEN();
#undef END_TOKEN
#undef ADD_CHAR
    t->id = xmalloc((size_t)(t->n ? t->n : 1) * sizeof *t->id);
}

int rouge_tokenize(const char *text, int stem, char ***tokens_out) {
    toks_t t;
    toks_build(text ? text : "", stem, &t);
    char **out = xmalloc((size_t)(t.n ? t.n : 1) * sizeof *out);
    for (int i = 0; i < t.n; i++) out[i] = xstrdup(t.buf + t.off[i]);
    int n = t.n;
    toks_free(&t);
    *tokens_out = out;
    return n;
}

void rouge_tokens_free(char **tokens, int n) {
    if (!tokens) return;
    for (int i = 0; i < n; i++) free(tokens[i]);
    free(tokens);
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

// Gives equal tokens of a and b equal ids in [0, V); returns V.
static int intern_tokens(toks_t *a, toks_t *b) {
    size_t total = (size_t)a->n + (size_t)b->n, cap = 16;
    while (cap < 2 * total) cap *= 2;
    const char **keys = xcalloc(cap, sizeof *keys);
    int *vals = xmalloc(cap * sizeof *vals);
    int next = 0;
    toks_t *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        toks_t *t = both[k];
        for (int i = 0; i < t->n; i++) {
            const char *s = t->buf + t->off[i];
            size_t h = (size_t)hash_str(s) & (cap - 1);
            while (keys[h] && strcmp(keys[h], s) != 0) h = (h + 1) & (cap - 1);
            if (!keys[h]) {
                keys[h] = s;
                vals[h] = next++;
            }
            t->id[i] = vals[h];
        }
    }
    free(keys);
    free(vals);
    return next;
}

// --- scores ------------------------------------------------------------------------------

// rouge-score's scoring.fmeasure, with Python's evaluation order so results agree bit
// for bit.
static double fmeasure(double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; }

static rouge_prf_t prf(double overlap, double pred_total, double target_total) {
    rouge_prf_t s;
    s.p = overlap / pred_total;
    s.r = overlap / target_total;
    s.f = fmeasure(s.p, s.r);
    return s;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// Multiset n-gram overlap (n = 1 or 2): sum over n-grams of min(count in target, count
// in prediction); precision and recall divide by max(count, 1), so an empty side gives 0.
static rouge_prf_t score_ngrams(const int *t, int nt, const int *p, int np, int n, int V) {
    int ct = nt >= n ? nt - n + 1 : 0, cp = np >= n ? np - n + 1 : 0;
    uint64_t *kt = xmalloc((size_t)(ct ? ct : 1) * sizeof *kt);
    uint64_t *kp = xmalloc((size_t)(cp ? cp : 1) * sizeof *kp);
    for (int i = 0; i < ct; i++)
        kt[i] = n == 1 ? (uint64_t)t[i] : (uint64_t)t[i] * (uint64_t)V + (uint64_t)t[i + 1];
    for (int i = 0; i < cp; i++)
        kp[i] = n == 1 ? (uint64_t)p[i] : (uint64_t)p[i] * (uint64_t)V + (uint64_t)p[i + 1];
    qsort(kt, (size_t)ct, sizeof *kt, cmp_u64);
    qsort(kp, (size_t)cp, sizeof *kp, cmp_u64);
    int overlap = 0;
    for (int i = 0, j = 0; i < ct && j < cp;) {  // a sorted merge counts min() per key
        if (kt[i] < kp[j]) i++;
        else if (kt[i] > kp[j]) j++;
        else {
            overlap++;
            i++;
            j++;
        }
    }
    free(kt);
    free(kp);
    return prf(overlap, cp > 0 ? cp : 1, ct > 0 ? ct : 1);
}

// Length of the LCS of a and b, two table rows at a time.
static int lcs_length(const int *a, int na, const int *b, int nb) {
    int *prev = xcalloc((size_t)nb + 1, sizeof *prev), *cur = xcalloc((size_t)nb + 1, sizeof *cur);
    for (int i = 1; i <= na; i++) {
        for (int j = 1; j <= nb; j++)
            cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1
                                          : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        int *tmp = prev;
        prev = cur;
        cur = tmp;
    }
    int L = prev[nb];
    free(prev);
    free(cur);
    return L;
}

static rouge_prf_t score_lcs(const int *t, int nt, const int *p, int np) {
    rouge_prf_t zero = {0, 0, 0};
    if (nt == 0 || np == 0) return zero;
    return prf(lcs_length(t, nt, p, np), np, nt);
}

// Marks in mark[0..na) the positions of a that rouge-score's lcs_ind() returns: the DP
// table, then a backtrack from the corner that takes a match whenever the tokens are
// equal, moves left only when the left cell is strictly larger than the upper one, and
// otherwise moves up. Other tie rules pick other LCS's and change ROUGE-Lsum. Only that
// left-or-up decision is kept per cell, one bit each (left[]), with two rows of lengths,
// so even long unsplit texts need na*nb/8 bytes rather than a table of ints.
static void lcs_mark(const int *a, int na, const int *b, int nb, int *rows, uint8_t *left,
                     unsigned char *mark) {
    int *up = rows, *row = rows + nb + 1;
    memset(up, 0, ((size_t)nb + 1) * sizeof *up);
    memset(left, 0, ((size_t)na * (size_t)nb + 7) / 8);
    for (int i = 1; i <= na; i++) {
        row[0] = 0;
        for (int j = 1; j <= nb; j++) {
            if (a[i - 1] == b[j - 1]) {
                row[j] = up[j - 1] + 1;
            } else if (row[j - 1] > up[j]) {
                row[j] = row[j - 1];
                size_t bit = (size_t)(i - 1) * (size_t)nb + (size_t)(j - 1);
                left[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            } else {
                row[j] = up[j];
            }
        }
        int *tmp = up;
        up = row;
        row = tmp;
    }
    int i = na, j = nb;
    while (i > 0 && j > 0) {
        size_t bit = (size_t)(i - 1) * (size_t)nb + (size_t)(j - 1);
        if (a[i - 1] == b[j - 1]) {
            mark[i - 1] = 1;
            i--;
            j--;
        } else if (left[bit >> 3] & (1u << (bit & 7))) {
            j--;
        } else {
            i--;
        }
    }
}

// Sentences as [start, end) ranges of token indices; lines without tokens contribute
// nothing to the union LCS, so they are dropped.
static int split_sentences(const toks_t *t, int *start, int *end) {
    int ns = 0;
    for (int i = 0; i < t->n; i++) {
        if (i == 0 || t->line[i] != t->line[i - 1]) {
            start[ns] = i;
            ns++;
        }
        end[ns - 1] = i + 1;
    }
    return ns;
}

// Summary-level LCS (ROUGE paper 3.2) with ROUGE-1.5.5's guard, as rouge-score: for each
// reference sentence, the union of its LCS positions against every candidate sentence;
// each token found counts as a hit only while both texts still have an unused
// occurrence of it.
static rouge_prf_t score_lsum(const toks_t *t, const toks_t *p, int V) {
    rouge_prf_t zero = {0, 0, 0};
    if (t->n == 0 || p->n == 0) return zero;
    int *ts = xmalloc((size_t)t->n * sizeof *ts), *te = xmalloc((size_t)t->n * sizeof *te);
    int *ps = xmalloc((size_t)p->n * sizeof *ps), *pe = xmalloc((size_t)p->n * sizeof *pe);
    int nts = split_sentences(t, ts, te), nps = split_sentences(p, ps, pe);
    int maxt = 0, maxp = 0;
    for (int k = 0; k < nts; k++)
        if (te[k] - ts[k] > maxt) maxt = te[k] - ts[k];
    for (int k = 0; k < nps; k++)
        if (pe[k] - ps[k] > maxp) maxp = pe[k] - ps[k];
    int *rows = xmalloc(2 * ((size_t)maxp + 1) * sizeof *rows);
    uint8_t *left = xmalloc(((size_t)maxt * (size_t)maxp + 7) / 8 + 1);
    unsigned char *mark = xmalloc((size_t)maxt);
    int *cnt_t = xcalloc((size_t)V, sizeof *cnt_t), *cnt_p = xcalloc((size_t)V, sizeof *cnt_p);
    for (int i = 0; i < t->n; i++) cnt_t[t->id[i]]++;
    for (int i = 0; i < p->n; i++) cnt_p[p->id[i]]++;

    int hits = 0;
    for (int r = 0; r < nts; r++) {
        const int *ref = t->id + ts[r];
        int nr = te[r] - ts[r];
        memset(mark, 0, (size_t)nr);
        for (int c = 0; c < nps; c++) lcs_mark(ref, nr, p->id + ps[c], pe[c] - ps[c], rows, left, mark);
        for (int i = 0; i < nr; i++) {
            int tok = ref[i];
            if (mark[i] && cnt_p[tok] > 0 && cnt_t[tok] > 0) {
                hits++;
                cnt_p[tok]--;
                cnt_t[tok]--;
            }
        }
    }
    free(ts);
    free(te);
    free(ps);
    free(pe);
    free(rows);
    free(left);
    free(mark);
    free(cnt_t);
    free(cnt_p);
    return prf(hits, p->n, t->n);
}

int rouge_score(const char *target, const char *prediction, int stem, rouge_scores_t *out,
                lb_err_t *err) {
    if (!target || !prediction || !out)
        return lb_err_set(err, LB_EARG, "rouge_score needs a target, a prediction and an output; one was NULL");
    toks_t t, p;
    toks_build(target, stem, &t);
    toks_build(prediction, stem, &p);
    int V = intern_tokens(&t, &p);
    out->r1 = score_ngrams(t.id, t.n, p.id, p.n, 1, V);
    out->r2 = score_ngrams(t.id, t.n, p.id, p.n, 2, V);
    out->rl = score_lcs(t.id, t.n, p.id, p.n);
    out->rlsum = score_lsum(&t, &p, V);
    toks_free(&t);
    toks_free(&p);
    return 0;
}

int rouge_score_multi(const char *const *targets, int n, const char *prediction, int stem,
                      rouge_scores_t *out, lb_err_t *err) {
    if (!targets || n < 1)
        return lb_err_set(err, LB_EARG, "rouge_score_multi needs at least one reference; got %d", n);
    rouge_scores_t best, cur;
    if (rouge_score(targets[0], prediction, stem, &best, err) != 0) return -1;
    for (int k = 1; k < n; k++) {
        if (rouge_score(targets[k], prediction, stem, &cur, err) != 0) return -1;
        for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
            rouge_prf_t *b = rouge_scores_at(&best, ty), *c = rouge_scores_at(&cur, ty);
            if (c->f > b->f) *b = *c;  // strictly better: ties keep the first, as np.argmax
        }
    }
    *out = best;
    return 0;
}

const char *rouge_type_name(int type) {
    static const char *const names[ROUGE_NTYPES] = {"rouge1", "rouge2", "rougeL", "rougeLsum"};
    return type >= 0 && type < ROUGE_NTYPES ? names[type] : NULL;
}

rouge_prf_t *rouge_scores_at(rouge_scores_t *s, int type) {
    switch (type) {
    case ROUGE_1: return &s->r1;
    case ROUGE_2: return &s->r2;
    case ROUGE_L: return &s->rl;
    case ROUGE_LSUM: return &s->rlsum;
    }
    return NULL;
}

rouge_prf_interval_t *rouge_agg_at(rouge_agg_t *a, int type) {
    switch (type) {
    case ROUGE_1: return &a->r1;
    case ROUGE_2: return &a->r2;
    case ROUGE_L: return &a->rl;
    case ROUGE_LSUM: return &a->rlsum;
    }
    return NULL;
}

// --- aggregation ----------------------------------------------------------------------------

// xoshiro256** seeded through splitmix64: small, fast, and the state lives on the
// caller's stack, so there is no global generator.
typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

// Uniform in [0, n) without modulo bias (rejection of the incomplete last block).
static uint64_t rng_below(rng_t *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

// numpy.percentile's default ("linear"): position q * (N - 1) between sorted values.
static double percentile_sorted(const double *v, int n, double q) {
    double pos = q * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return v[n - 1];
    double frac = pos - lo;
    return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

int rouge_aggregate(const rouge_scores_t *per, int n, int resamples, uint64_t seed,
                    rouge_agg_t *out, lb_err_t *err) {
    if (!per || n < 1)
        return lb_err_set(err, LB_EARG, "cannot aggregate ROUGE over %d examples; score at least one example first", n);
    if (resamples < 1)
        return lb_err_set(err, LB_EARG, "bootstrap resamples must be at least 1 (got %d); 1000 is the usual choice", resamples);
    if (!out) return lb_err_set(err, LB_EARG, "rouge_aggregate needs an output; it was NULL");
    enum { NV = 3 * ROUGE_NTYPES };
    // vals[i * NV + k]: measure k (type-major, then P, R, F) of example i.
    double *vals = xmalloc((size_t)n * NV * sizeof *vals);
    for (int i = 0; i < n; i++) {
        rouge_scores_t s = per[i];
        for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
            rouge_prf_t *x = rouge_scores_at(&s, ty);
            vals[(size_t)i * NV + 3 * ty + 0] = x->p;
            vals[(size_t)i * NV + 3 * ty + 1] = x->r;
            vals[(size_t)i * NV + 3 * ty + 2] = x->f;
        }
    }
    double mean[NV] = {0};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < NV; k++) mean[k] += vals[(size_t)i * NV + k];
    for (int k = 0; k < NV; k++) mean[k] /= n;

    // boot[k * resamples + b]: mean of measure k in resample b.
    double *boot = xmalloc((size_t)resamples * NV * sizeof *boot);
    rng_t rng;
    uint64_t sm = seed;
    for (int j = 0; j < 4; j++) rng.s[j] = splitmix64(&sm);
    for (int b = 0; b < resamples; b++) {
        double sum[NV] = {0};
        for (int i = 0; i < n; i++) {
            const double *row = vals + (size_t)rng_below(&rng, (uint64_t)n) * NV;
            for (int k = 0; k < NV; k++) sum[k] += row[k];
        }
        for (int k = 0; k < NV; k++) boot[(size_t)k * resamples + b] = sum[k] / n;
    }
    memset(out, 0, sizeof *out);
    out->n = n;
    out->resamples = resamples;
    for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
        rouge_prf_interval_t *o = rouge_agg_at(out, ty);
        rouge_interval_t *dst[3] = {&o->p, &o->r, &o->f};
        for (int m = 0; m < 3; m++) {
            int k = 3 * ty + m;
            double *v = boot + (size_t)k * resamples;
            lb_sort_doubles(v, (size_t)resamples);
            dst[m]->mean = mean[k];
            dst[m]->low = percentile_sorted(v, resamples, 0.025);
            dst[m]->high = percentile_sorted(v, resamples, 0.975);
        }
    }
    free(vals);
    free(boot);
    return 0;
}
