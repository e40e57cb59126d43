// Porter stemmer, NLTK_EXTENSIONS mode. The structure follows NLTK's porter.py: each
// step is an ordered list of (suffix, replacement, condition) rules, and the FIRST rule
// whose suffix matches decides — when its condition fails, the word is returned as it is
// and later rules are not tried. That "first match stops" behaviour is what makes e.g.
// "ement" shadow "ment" and "ational" shadow "tional", so it is kept literally.
#include "porter.h"

#include <string.h>

// --- letter classes -----------------------------------------------------------------

static int is_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

// A consonant is a letter other than a e i o u, and other than a 'y' preceded by a
// consonant (so a run of y's alternates). Walks back over the run instead of recursing,
// so a token like "yyyy…" of any length cannot overflow the stack.
static int is_cons(const char *w, size_t i) {
    int flips = 0;
    while (w[i] == 'y' && i > 0) {
        i--;
        flips ^= 1;
    }
    int c = w[i] == 'y' ? 1 : !is_vowel(w[i]);
    return flips ? !c : c;
}

// m of the paper: the number of vowel→consonant transitions in w[0..n).
static int measure(const char *w, size_t n) {
    int m = 0, prev = 1;
    for (size_t i = 0; i < n; i++) {
        int c = is_vowel(w[i]) ? 0 : w[i] == 'y' ? (i == 0 ? 1 : !prev) : 1;
        if (i > 0 && !prev && c) m++;
        prev = c;
    }
    return m;
}

static int contains_vowel(const char *w, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_cons(w, i)) return 1;
    return 0;
}

// *d: ends with a double consonant.
static int ends_double_cons(const char *w, size_t n) {
    return n >= 2 && w[n - 1] == w[n - 2] && is_cons(w, n - 1);
}

// *o: ends consonant-vowel-consonant, the last not w, x or y; NLTK also accepts a
// two-letter vowel-consonant word.
static int ends_cvc(const char *w, size_t n) {
    if (n >= 3 && is_cons(w, n - 3) && !is_cons(w, n - 2) && is_cons(w, n - 1) &&
        w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y')
        return 1;
    return n == 2 && !is_cons(w, 0) && is_cons(w, 1);
}

static int ends_with(const char *w, size_t n, const char *s, size_t sl) {
    return sl <= n && memcmp(w + n - sl, s, sl) == 0;
}

// --- rule lists -----------------------------------------------------------------------

enum {
    C_NONE,     // unconditional
    C_M0,       // measure(stem) > 0
    C_M1,       // measure(stem) > 1
    C_ION,      // measure(stem) > 1 and stem ends in s or t
    C_CVC1,     // measure(stem) == 1 and *o (step 1b, restoring an e)
    C_Y,        // NLTK step 1c: stem longer than 1 and ending in a consonant
    C_LOGI,     // measure(word[:-3]) > 0: the 'l' of "logi" stays with the stem
    C_LL,       // measure(word[:-1]) > 1 (step 5b)
    C_DOUBLE,   // suffix "*d": ends in a double consonant other than l, s, z
};

typedef struct {
    const char *suffix, *repl;
    int cond;
} rule_t;

static int cond_holds(int cond, const char *w, size_t n, size_t stem) {
    switch (cond) {
    case C_NONE: return 1;
    case C_M0: return measure(w, stem) > 0;
    case C_M1: return measure(w, stem) > 1;
    case C_ION: return measure(w, stem) > 1 && (w[stem - 1] == 's' || w[stem - 1] == 't');
    case C_CVC1: return measure(w, stem) == 1 && ends_cvc(w, stem);
    case C_Y: return stem > 1 && is_cons(w, stem - 1);
    case C_LOGI: return measure(w, n - 3) > 0;
    case C_LL: return measure(w, n - 1) > 1;
    case C_DOUBLE: return w[n - 1] != 'l' && w[n - 1] != 's' && w[n - 1] != 'z';
    }
    return 0;
}

// Applies the first rule whose suffix matches; returns the new length. A replacement may
// be longer than its suffix only where the caller has room (step 1b works on a word that
// already lost "ed" or "ing").
static size_t apply_rules(char *w, size_t n, const rule_t *rules, size_t nrules) {
    for (size_t k = 0; k < nrules; k++) {
        const rule_t *r = &rules[k];
        if (r->cond == C_DOUBLE) {
            if (!ends_double_cons(w, n)) continue;
            // The replacement is the doubled letter itself: drop one of the pair.
            return cond_holds(C_DOUBLE, w, n, n - 2) ? n - 1 : n;
        }
        size_t sl = strlen(r->suffix);
        if (!ends_with(w, n, r->suffix, sl)) continue;
        size_t stem = n - sl;
        if (!cond_holds(r->cond, w, n, stem)) return n;
        size_t rl = strlen(r->repl);
        memcpy(w + stem, r->repl, rl);
        return stem + rl;
    }
    return n;
}

#define NRULES(a) (sizeof(a) / sizeof((a)[0]))

static size_t step1a(char *w, size_t n) {
    // NLTK: "dies" -> "die" but "flies" -> "fli".
    if (n == 4 && ends_with(w, n, "ies", 3)) return 3;  // "ies" -> "ie"
    static const rule_t rules[] = {
        {"sses", "ss", C_NONE}, {"ies", "i", C_NONE}, {"ss", "ss", C_NONE}, {"s", "", C_NONE}};
    return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step1b(char *w, size_t n) {
    // NLTK: "died" -> "die" but "spied" -> "spi".
    if (ends_with(w, n, "ied", 3)) {
        if (n == 4) return n - 1;
        w[n - 3] = 'i';
        return n - 2;
    }
    if (ends_with(w, n, "eed", 3)) return measure(w, n - 3) > 0 ? n - 1 : n;

    size_t stem = 0;
    int ok = 0;
    if (ends_with(w, n, "ed", 2) && contains_vowel(w, n - 2)) {
        stem = n - 2;
        ok = 1;
    } else if (ends_with(w, n, "ing", 3) && contains_vowel(w, n - 3)) {
        stem = n - 3;
        ok = 1;
    }
    if (!ok) return n;
    static const rule_t rules[] = {{"at", "ate", C_NONE},
                                   {"bl", "ble", C_NONE},
                                   {"iz", "ize", C_NONE},
                                   {"*d", "", C_DOUBLE},
                                   {"", "e", C_CVC1}};
    return apply_rules(w, stem, rules, NRULES(rules));
}

static size_t step1c(char *w, size_t n) {
    static const rule_t rules[] = {{"y", "i", C_Y}};
    return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step2(char *w, size_t n) {
    // NLTK applies ALLI -> AL first and, when it fires, runs step 2 again on the result.
    while (ends_with(w, n, "alli", 4) && measure(w, n - 4) > 0) n -= 2;
    static const rule_t rules[] = {
        {"ational", "ate", C_M0}, {"tional", "tion", C_M0}, {"enci", "ence", C_M0},
        {"anci", "ance", C_M0},   {"izer", "ize", C_M0},    {"bli", "ble", C_M0},
        {"alli", "al", C_M0},     {"entli", "ent", C_M0},   {"eli", "e", C_M0},
        {"ousli", "ous", C_M0},   {"ization", "ize", C_M0}, {"ation", "ate", C_M0},
        {"ator", "ate", C_M0},    {"alism", "al", C_M0},    {"iveness", "ive", C_M0},
        {"fulness", "ful", C_M0}, {"ousness", "ous", C_M0}, {"aliti", "al", C_M0},
        {"iviti", "ive", C_M0},   {"biliti", "ble", C_M0},  {"fulli", "ful", C_M0},
        {"logi", "log", C_LOGI}};
    return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step3(char *w, size_t n) {
    static const rule_t rules[] = {{"icate", "ic", C_M0}, {"ative", "", C_M0},
                                   {"alize", "al", C_M0}, {"iciti", "ic", C_M0},
                                   {"ical", "ic", C_M0},  {"ful", "", C_M0},
                                   {"ness", "", C_M0}};
    return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step4(char *w, size_t n) {
    static const rule_t rules[] = {
        {"al", "", C_M1},   {"ance", "", C_M1}, {"ence", "", C_M1}, {"er", "", C_M1},
        {"ic", "", C_M1},   {"able", "", C_M1}, {"ible", "", C_M1}, {"ant", "", C_M1},
        {"ement", "", C_M1}, {"ment", "", C_M1}, {"ent", "", C_M1}, {"ion", "", C_ION},
        {"ou", "", C_M1},   {"ism", "", C_M1},  {"ate", "", C_M1},  {"iti", "", C_M1},
        {"ous", "", C_M1},  {"ive", "", C_M1},  {"ize", "", C_M1}};
    return apply_rules(w, n, rules, NRULES(rules));
}

// Step 5a tries both of its rules on the same suffix (unlike every other step).
static size_t step5a(char *w, size_t n) {
    if (!ends_with(w, n, "e", 1)) return n;
    int m = measure(w, n - 1);
    if (m > 1 || (m == 1 && !ends_cvc(w, n - 1))) return n - 1;
    return n;
}

static size_t step5b(char *w, size_t n) {
    static const rule_t rules[] = {{"ll", "l", C_LL}};
    return apply_rules(w, n, rules, NRULES(rules));
}

// --- irregular forms ------------------------------------------------------------------

static const char *const pool[][2] = {
    {"sky", "sky"},         {"skies", "sky"},       {"dying", "die"},
    {"lying", "lie"},       {"tying", "tie"},       {"news", "news"},
    {"innings", "inning"},  {"inning", "inning"},   {"outings", "outing"},
    {"outing", "outing"},   {"cannings", "canning"}, {"canning", "canning"},
    {"howe", "howe"},       {"proceed", "proceed"}, {"exceed", "exceed"},
    {"succeed", "succeed"}};

static size_t stem_core(char *w, size_t n, int use_pool) {
    if (use_pool) {
        for (size_t k = 0; k < NRULES(pool); k++) {
            size_t pl = strlen(pool[k][0]);
            if (pl == n && memcmp(w, pool[k][0], n) == 0) {
                size_t sl = strlen(pool[k][1]);  // every paradigm is no longer than its form
                memcpy(w, pool[k][1], sl);
                return sl;
            }
        }
    }
    if (n <= 2) return n;
    n = step1a(w, n);
    n = step1b(w, n);
    n = step1c(w, n);
    n = step2(w, n);
    n = step3(w, n);
    n = step4(w, n);
    n = step5a(w, n);
    n = step5b(w, n);
    return n;
}

size_t porter_stem_inplace(char *w, size_t len) { return stem_core(w, len, 1); }

int porter_stem(const char *word, char *out, size_t outsz) {
    size_t n = strlen(word);
    if (outsz < n + 1) {
        if (outsz) out[0] = '\0';
        return -1;
    }
    int had_upper = 0;
    for (size_t i = 0; i < n; i++) {
        char c = word[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
            had_upper = 1;
        }
        out[i] = c;
    }
    n = stem_core(out, n, !had_upper);
    out[n] = '\0';
    return (int)n;
}
