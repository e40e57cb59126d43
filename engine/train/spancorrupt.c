#include "spancorrupt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Splits n_items into n_segments non-empty segments at random (lengths into len[]), as
// T5's _random_segmentation: a shuffled indicator of segment starts.
static void random_segmentation(int n_items, int n_segments, uint64_t *rng, int *len) {
    int *mark = xcalloc((size_t)n_items, sizeof(int));
    for (int i = 0; i < n_segments - 1; i++) mark[i] = 1;
    for (int i = n_items - 2; i > 0; i--) {  // shuffle the first n_items-1 slots
        int j = (int)(lb_rng_next(rng) % (uint64_t)(i + 1));
        int t = mark[i];
        mark[i] = mark[j];
        mark[j] = t;
    }
    // A start before item k+1 wherever mark[k] is set (k < n_items - 1).
    int seg = 0;
    memset(len, 0, sizeof(int) * (size_t)n_segments);
    for (int k = 0; k < n_items; k++) {
        len[seg]++;
        if (k < n_items - 1 && mark[k]) seg++;
    }
    free(mark);
}

int span_corrupt(const span_corrupt_t *sc, const int *ids, int n, uint64_t *rng, int **inp,
                 int *n_inp, int **tgt, int *n_tgt, lb_err_t *err) {
    if (n < 2) return lb_err_set(err, LB_EARG, "span corruption needs at least 2 tokens, got %d", n);
    if (sc->n_sentinels < 1)
        return lb_err_set(err, LB_EARG, "span corruption needs sentinel tokens (<extra_id_N>); the tokenizer has none");
    int n_noise = (int)lround(n * sc->noise_density);
    if (n_noise < 1) n_noise = 1;
    if (n_noise > n - 1) n_noise = n - 1;
    int n_spans = (int)lround(n_noise / sc->mean_span_length);
    if (n_spans < 1) n_spans = 1;
    if (n_spans > sc->n_sentinels) n_spans = sc->n_sentinels;
    if (n_spans > n - n_noise) n_spans = n - n_noise;
    int *noise_len = xmalloc(sizeof(int) * (size_t)n_spans), *keep_len = xmalloc(sizeof(int) * (size_t)n_spans);
    random_segmentation(n_noise, n_spans, rng, noise_len);
    random_segmentation(n - n_noise, n_spans, rng, keep_len);
    int *in = xmalloc(sizeof(int) * (size_t)(n + 2)), *tg = xmalloc(sizeof(int) * (size_t)(n + n_spans + 2));
    int ni = 0, nt = 0, pos = 0;
    for (int s = 0; s < n_spans; s++) {  // kept span, then noise span, as T5 interleaves them
        for (int k = 0; k < keep_len[s]; k++) in[ni++] = ids[pos++];
        in[ni++] = sc->sentinels[s];
        tg[nt++] = sc->sentinels[s];
        for (int k = 0; k < noise_len[s]; k++) tg[nt++] = ids[pos++];
    }
    in[ni++] = sc->eos_id;
    if (sc->whole_target) {
        memcpy(tg, ids, sizeof(int) * (size_t)n);
        nt = n;
    }
    tg[nt++] = sc->eos_id;
    free(noise_len);
    free(keep_len);
    *inp = in;
    *n_inp = ni;
    *tgt = tg;
    *n_tgt = nt;
    return 0;
}
