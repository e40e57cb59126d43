// ROUGE and the Porter stemmer against rouge-score / NLTK reference values
// (tests/fixtures/rouge/rouge_cases.json), plus hand-checked cases for the parts the
// fixture cannot pin down alone: the union-LCS tie rule, multi-reference choice and the
// seeded bootstrap.
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "porter.h"
#include "rouge.h"
#include "util.h"

#define FIXTURE "tests/fixtures/rouge/rouge_cases.json"

static cJSON *load_fixture(void) {
    lb_err_t err = {0};
    size_t len;
    char *text = lb_read_file(FIXTURE, &len, &err);
    if (!text) {
        fprintf(stderr, "    %s\n", err.msg);
        return NULL;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    return root;
}

static void test_stems_match_nltk(void) {
    cJSON *root = load_fixture();
    EXPECT(root != NULL);
    if (!root) return;
    cJSON *stems = cJSON_GetObjectItem(root, "stems");
    int n = cJSON_GetArraySize(stems), bad = 0;
    EXPECTF(n == 2500, "%d stem pairs", n);
    for (int i = 0; i < n; i++) {
        cJSON *pair = cJSON_GetArrayItem(stems, i);
        const char *word = cJSON_GetArrayItem(pair, 0)->valuestring;
        const char *want = cJSON_GetArrayItem(pair, 1)->valuestring;
        char got[256];
        int len = porter_stem(word, got, sizeof got);
        if (len < 0 || strcmp(got, want) != 0) {
            if (bad++ < 10) fprintf(stderr, "    stem(%s) = %s, NLTK gives %s\n", word, got, want);
        }
    }
    EXPECTF(bad == 0, "%d of %d stems differ", bad, n);
    cJSON_Delete(root);
}

// Classic Porter examples plus NLTK's departures and its irregular-forms pool.
static void test_stems_hand_checked(void) {
    static const char *const pairs[][2] = {
        {"caresses", "caress"}, {"ponies", "poni"},     {"ties", "tie"},      {"dies", "die"},
        {"flies", "fli"},       {"died", "die"},        {"spied", "spi"},     {"agreed", "agre"},
        {"feed", "feed"},       {"hopping", "hop"},     {"falling", "fall"},  {"filing", "file"},
        {"conflated", "conflat"}, {"happy", "happi"},   {"enjoy", "enjoy"},   {"sky", "sky"},
        {"skies", "sky"},       {"dying", "die"},       {"lying", "lie"},     {"news", "news"},
        {"innings", "inning"},  {"proceed", "proceed"}, {"exceed", "exceed"}, {"howe", "howe"},
        {"generalization", "gener"}, {"geology", "geolog"}, {"radically", "radic"},
        {"hopefulness", "hope"}, {"controlling", "control"}, {"roll", "roll"}, {"by", "by"},
        {"dds", "dd"},          {"2446", "2446"},       {"yyyy", "yyyi"},     {"Sky", "ski"},
        {"RUNNING", "run"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char got[64];
        porter_stem(pairs[i][0], got, sizeof got);
        EXPECTF(strcmp(got, pairs[i][1]) == 0, "stem(%s) = %s, want %s", pairs[i][0], got, pairs[i][1]);
    }
    char small[4];
    EXPECT(porter_stem("walking", small, sizeof small) == -1 && small[0] == '\0');
    char w[] = "meetingsXYZ";  // in-place form: only the first 8 bytes are the word
    size_t n = porter_stem_inplace(w, 8);
    EXPECT(n == 4 && memcmp(w, "meet", 4) == 0);
}

static void check_tokens(const char *text, int stem, const char *const *want, int nwant) {
    char **tok;
    int n = rouge_tokenize(text, stem, &tok);
    int same = n == nwant;
    // cppcheck-suppress nullPointer ; want is NULL only with nwant 0, and then the loop needs n == 0
    for (int i = 0; same && i < n; i++) same = strcmp(tok[i], want[i]) == 0;
    EXPECTF(same, "tokenize(\"%s\", stem=%d) gave %d tokens, first \"%s\"", text, stem, n,
            n ? tok[0] : "");
    rouge_tokens_free(tok, n);
}

static void test_tokenize(void) {
    const char *a[] = {"hello", "world", "it", "s", "3", "14", "x86", "64"};
    check_tokens("Hello, World! It's 3.14 -- x86_64", 0, a, 8);
    // Stemming only touches tokens longer than 3 characters: "bus" would stem to "bu".
    const char *b[] = {"run", "dog", "are", "cat", "die", "tie", "bus"};
    check_tokens("Running dogs are cats; dies ties bus", 1, b, 7);
    // U+212A KELVIN SIGN lower-cases to "k"; U+0130 to "i" + a combining dot (a separator);
    // other non-ASCII characters (é, em dash) separate tokens.
    const char *c[] = {"5k", "i", "stanbul", "caf", "x", "y"};
    check_tokens("5\xE2\x84\xAA \xC4\xB0stanbul caf\xC3\xA9 x\xE2\x80\x94y", 0, c, 6);
    check_tokens("  --- \n\t ", 1, NULL, 0);
}

static int close9(double a, double b) { return fabs(a - b) <= 1e-9; }

static void check_cases(int stem) {
    cJSON *root = load_fixture();
    EXPECT(root != NULL);
    if (!root) return;
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int n = cJSON_GetArraySize(cases), bad = 0;
    EXPECTF(n == 300, "%d cases", n);
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_GetArrayItem(cases, i);
        const char *target = cJSON_GetObjectItem(c, "target")->valuestring;
        const char *pred = cJSON_GetObjectItem(c, "prediction")->valuestring;
        cJSON *ref = cJSON_GetObjectItem(c, stem ? "stem" : "nostem");
        rouge_scores_t s;
        lb_err_t err = {0};
        EXPECT(rouge_score(target, pred, stem, &s, &err) == 0);
        for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
            cJSON *want = cJSON_GetObjectItem(ref, rouge_type_name(ty));
            rouge_prf_t *got = rouge_scores_at(&s, ty);
            double g[3] = {got->p, got->r, got->f};
            for (int k = 0; k < 3; k++) {
                double w = cJSON_GetArrayItem(want, k)->valuedouble;
                if (!close9(g[k], w) && bad++ < 10)
                    fprintf(stderr, "    case %d %s[%d]: ours %.17g, rouge-score %.17g\n", i,
                            rouge_type_name(ty), k, g[k], w);
            }
        }
    }
    EXPECTF(bad == 0, "%d values differ (stem=%d)", bad, stem);
    cJSON_Delete(root);
}

static void test_cases_nostem(void) { check_cases(0); }
static void test_cases_stem(void) { check_cases(1); }

// Reference "a b\na", candidate "b a". Against "a b" the LCS has length 1 and two
// choices; rouge-score's backtrack moves up on the tie at the corner and takes "a". The
// second reference sentence "a" then finds the only candidate "a" used up: 1 hit, so
// P = 1/2, R = 1/3. A backtrack that moved left would take "b" and score 2 hits.
static void test_lsum_tie_rule(void) {
    rouge_scores_t s;
    EXPECT(rouge_score("a b\na", "b a", 0, &s, NULL) == 0);
    EXPECTF(close9(s.rlsum.p, 0.5) && close9(s.rlsum.r, 1.0 / 3) && close9(s.rlsum.f, 0.4),
            "rougeLsum %g %g %g", s.rlsum.p, s.rlsum.r, s.rlsum.f);
    // ROUGE-L sees one sentence: LCS("a b a", "b a") = 2.
    EXPECT(close9(s.rl.p, 1.0) && close9(s.rl.r, 2.0 / 3) && close9(s.rl.f, 0.8));
    // ROUGE-2: target bigrams {ab, ba}, prediction {ba}.
    EXPECT(close9(s.r2.p, 1.0) && close9(s.r2.r, 0.5));
    // Multiset unigrams: "a" counts once in the prediction, so overlap 2 of 3.
    EXPECT(close9(s.r1.p, 1.0) && close9(s.r1.r, 2.0 / 3));
}

static void test_empty_texts(void) {
    rouge_scores_t s;
    EXPECT(rouge_score("", "some words", 1, &s, NULL) == 0);
    EXPECT(s.r1.p == 0 && s.r1.r == 0 && s.r1.f == 0 && s.rl.f == 0 && s.rlsum.f == 0);
    EXPECT(rouge_score("some words", "!!", 1, &s, NULL) == 0);
    EXPECT(s.r1.f == 0 && s.r2.f == 0 && s.rl.f == 0 && s.rlsum.f == 0);
    // One word: no bigrams on either side gives 0, not a division by zero.
    EXPECT(rouge_score("word", "word", 0, &s, NULL) == 0);
    EXPECT(s.r1.f == 1 && s.r2.p == 0 && s.r2.f == 0 && s.rl.f == 1 && s.rlsum.f == 1);
    lb_err_t err = {0};
    EXPECT(rouge_score(NULL, "x", 0, &s, &err) == -1 && err.code == LB_EARG);
}

static void test_multi_reference(void) {
    // ROUGE-1: both references give F = 2/3 (P,R = 1/2,1 and 1,1/2): the first wins.
    // ROUGE-2: the second is better (F 0.6 against 0.5), so the types choose separately.
    const char *refs[] = {"a b", "a b c d x x x x"};
    rouge_scores_t m, s0, s1;
    EXPECT(rouge_score_multi(refs, 2, "a b c d", 0, &m, NULL) == 0);
    rouge_score(refs[0], "a b c d", 0, &s0, NULL);
    rouge_score(refs[1], "a b c d", 0, &s1, NULL);
    EXPECT(s0.r1.f == s1.r1.f && s0.r1.p != s1.r1.p);
    EXPECT(m.r1.p == s0.r1.p && m.r1.r == s0.r1.r);
    EXPECT(close9(m.r2.f, 0.6) && m.r2.p == s1.r2.p && m.r2.r == s1.r2.r);
    EXPECT(m.rl.f == fmax(s0.rl.f, s1.rl.f) && m.rlsum.f == fmax(s0.rlsum.f, s1.rlsum.f));
    // An exact reference among worse ones gives 1 everywhere.
    const char *refs2[] = {"the cat sat", "a dog ran on the mat", "The dog ran."};
    EXPECT(rouge_score_multi(refs2, 3, "the dog ran", 1, &m, NULL) == 0);
    EXPECT(m.r1.f == 1 && m.r2.f == 1 && m.rl.f == 1 && m.rlsum.f == 1);
    lb_err_t err = {0};
    EXPECT(rouge_score_multi(refs2, 0, "x", 0, &m, &err) == -1 && err.code == LB_EARG);
}

static void test_bootstrap(void) {
    cJSON *root = load_fixture();
    EXPECT(root != NULL);
    if (!root) return;
    cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int n = cJSON_GetArraySize(cases);
    rouge_scores_t *per = xcalloc((size_t)n, sizeof *per);
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_GetArrayItem(cases, i);
        rouge_score(cJSON_GetObjectItem(c, "target")->valuestring,
                    cJSON_GetObjectItem(c, "prediction")->valuestring, 1, &per[i], NULL);
    }
    rouge_agg_t a, b, c;
    EXPECT(rouge_aggregate(per, n, 1000, 42, &a, NULL) == 0);
    EXPECT(rouge_aggregate(per, n, 1000, 42, &b, NULL) == 0);
    EXPECT(rouge_aggregate(per, n, 1000, 7, &c, NULL) == 0);
    EXPECT(memcmp(&a, &b, sizeof a) == 0);                       // same seed, same interval
    EXPECT(a.r1.f.low != c.r1.f.low || a.r1.f.high != c.r1.f.high);  // the seed is used
    EXPECT(a.n == n && a.resamples == 1000);
    for (int ty = 0; ty < ROUGE_NTYPES; ty++) {
        rouge_prf_interval_t *x = rouge_agg_at(&a, ty);
        rouge_interval_t *iv[3] = {&x->p, &x->r, &x->f};
        for (int k = 0; k < 3; k++) {
            double sum = 0, sq = 0;
            for (int i = 0; i < n; i++) {
                rouge_prf_t *s = rouge_scores_at(&per[i], ty);
                double v = k == 0 ? s->p : k == 1 ? s->r : s->f;
                sum += v;
                sq += v * v;
            }
            double mean = sum / n, sd = sqrt((sq / n - mean * mean));
            EXPECTF(close9(iv[k]->mean, mean), "%s[%d] mean %g, want %g", rouge_type_name(ty), k,
                    iv[k]->mean, mean);
            EXPECTF(iv[k]->low < iv[k]->mean && iv[k]->mean < iv[k]->high, "%s[%d]: %g < %g < %g",
                    rouge_type_name(ty), k, iv[k]->low, iv[k]->mean, iv[k]->high);
            // The percentile interval of a mean over 300 examples is close to the normal
            // one, mean +- 1.96 sd / sqrt(n); 1000 resamples pin its width to ~10%.
            double want = 2 * 1.96 * sd / sqrt((double)n), got = iv[k]->high - iv[k]->low;
            EXPECTF(fabs(got - want) < 0.25 * want, "%s[%d] width %g, normal theory %g",
                    rouge_type_name(ty), k, got, want);
        }
    }
    // A single example: every resample is that example.
    EXPECT(rouge_aggregate(per, 1, 100, 1, &a, NULL) == 0);
    EXPECT(a.r1.f.low == per[0].r1.f && a.r1.f.high == per[0].r1.f && a.r1.f.mean == per[0].r1.f);
    lb_err_t err = {0};
    EXPECT(rouge_aggregate(per, 0, 1000, 1, &a, &err) == -1 && err.code == LB_EARG);
    EXPECT(rouge_aggregate(per, n, 0, 1, &a, &err) == -1 && err.code == LB_EARG);
    free(per);
    cJSON_Delete(root);
}

// Long texts stay quick: ROUGE-L is one O(n*m) table kept two rows at a time, ROUGE-Lsum
// one table per sentence pair.
static void test_long_text_speed(void) {
    enum { W = 4000 };
    char *a = xmalloc(6 * W + 1), *b = xmalloc(6 * W + 1);
    for (size_t i = 0; i < W; i++) {
        memcpy(a + 6 * i, i % 7 ? "words " : "terms\n", 6);
        memcpy(b + 6 * i, i % 5 ? "terms " : "words\n", 6);
    }
    a[6 * W] = b[6 * W] = '\0';
    double t0 = lb_now();
    rouge_scores_t s;
    EXPECT(rouge_score(a, b, 1, &s, NULL) == 0);
    double dt = lb_now() - t0;
    EXPECTF(dt < 5.0, "took %.2f s", dt);
    // Unigram overlap is min(count) per stem: a has 3428 "word", 572 "term"; b 800, 3200.
    EXPECT(close9(s.r1.p, (800.0 + 572.0) / W) && close9(s.r1.r, s.r1.p));
    EXPECT(s.rl.f > 0 && s.rl.f <= s.r1.f && s.rlsum.f > 0 && s.rlsum.f <= s.r1.f);
    free(a);
    free(b);
}

int main(void) {
    RUN(test_stems_match_nltk);
    RUN(test_stems_hand_checked);
    RUN(test_tokenize);
    RUN(test_cases_nostem);
    RUN(test_cases_stem);
    RUN(test_lsum_tie_rule);
    RUN(test_empty_texts);
    RUN(test_multi_reference);
    RUN(test_bootstrap);
    RUN(test_long_text_speed);
    TH_DONE();
}
