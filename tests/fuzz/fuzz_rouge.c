// libFuzzer target: the ROUGE tokenizer with and without stemming, the Porter stemmer on
// every token, and ROUGE scoring of the input's first half (target) against its second
// half (prediction). Scores must lie in [0, 1]; a text scored against itself has F = 1
// whenever it has tokens.
#include <math.h>
#include <string.h>

#include "fuzz_check.h"
#include "porter.h"
#include "rouge.h"

static void check_scores(rouge_scores_t *s) {
    for (int t = 0; t < ROUGE_NTYPES; t++) {
        const rouge_prf_t *x = rouge_scores_at(s, t);
        FUZZ_CHECK(x->p >= 0 && x->p <= 1 && x->r >= 0 && x->r <= 1 && x->f >= 0 && x->f <= 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    for (int stem = 0; stem < 2; stem++) {
        char **tok = NULL;
        int n = rouge_tokenize(text, stem, &tok);
        FUZZ_CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            size_t len = strlen(tok[i]);
            FUZZ_CHECK(len > 0);  // tokens are never empty and hold only [a-z0-9]
            FUZZ_CHECK(strspn(tok[i], "abcdefghijklmnopqrstuvwxyz0123456789") == len);
            char *out = malloc(len + 1);
            int sl = porter_stem(tok[i], out, len + 1);
            FUZZ_CHECK(sl >= 0 && (size_t)sl <= len && strlen(out) == (size_t)sl);
            FUZZ_CHECK(porter_stem(tok[i], out, len) == -1);  // one byte short: refused
            free(out);
        }
        rouge_tokens_free(tok, n);
    }
    // The stemmer on the raw input as one word (any bytes, upper case included).
    char *word = malloc(size + 1);
    FUZZ_CHECK(porter_stem(text, word, size + 1) <= (int)strlen(text));
    free(word);
    // Scoring is quadratic in the token counts (LCS tables), as in rouge-score: beyond
    // 16 KiB a unit would take seconds, so long inputs only exercise the tokenizer.
    if (size > 16384) {
        free(text);
        return 0;
    }
    size_t half = size / 2;  // target | prediction
    char *target = malloc(half + 1), *pred = malloc(size - half + 1);
    memcpy(target, data, half);
    target[half] = '\0';
    memcpy(pred, data + half, size - half);
    pred[size - half] = '\0';
    lb_err_t err = {0};
    rouge_scores_t s[3];
    for (int stem = 0; stem < 2; stem++) {
        FUZZ_CHECK(rouge_score(target, pred, stem, &s[0], &err) == 0);
        check_scores(&s[0]);
        FUZZ_CHECK(rouge_score(target, target, stem, &s[1], &err) == 0);
        check_scores(&s[1]);
        char **tok = NULL;
        int n = rouge_tokenize(target, stem, &tok);
        rouge_tokens_free(tok, n);
        FUZZ_CHECK(n == 0 || (s[1].r1.f == 1 && s[1].rl.f == 1 && s[1].rlsum.f == 1));
        const char *refs[2] = {target, pred};
        FUZZ_CHECK(rouge_score_multi(refs, 2, pred, stem, &s[2], &err) == 0);
        check_scores(&s[2]);
    }
    rouge_agg_t agg;
    FUZZ_CHECK(rouge_aggregate(s, 3, 20, size, &agg, &err) == 0);
    FUZZ_CHECK(agg.r1.f.low <= agg.r1.f.high && isfinite(agg.rlsum.f.mean));
    free(target);
    free(pred);
    free(text);
    return 0;
}
