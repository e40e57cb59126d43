// Span corruption: every token ends up exactly once in the input or the target, in order,
// the noise fraction and span count follow T5's rounding, and a seed fixes the result.
#include "harness.h"
#include "spancorrupt.h"

static void test_partition(void) {
    int sent[100];
    for (int i = 0; i < 100; i++) sent[i] = 1000 - i;  // <extra_id_0> has the largest id
    span_corrupt_t sc = {0.15, 3.0, sent, 100, 1, 0};
    int ids[200];
    for (int i = 0; i < 200; i++) ids[i] = 10 + i;
    uint64_t rng = 42;
    for (int trial = 0; trial < 50; trial++) {
        int n = 20 + trial * 3, *in, *tg, ni, nt;
        lb_err_t err;
        EXPECT(span_corrupt(&sc, ids, n, &rng, &in, &ni, &tg, &nt, &err) == 0);
        int noise = (int)lround(n * 0.15), spans = (int)lround(noise / 3.0);
        if (spans < 1) spans = 1;
        EXPECTF(nt == noise + spans + 1 && ni == n - noise + spans + 1, "n %d: ni %d nt %d", n, ni, nt);
        EXPECT(in[ni - 1] == 1 && tg[nt - 1] == 1);
        // Rebuild the original: walk the input, expand each sentinel from the target.
        int out[300], no = 0, ti = 0, ok = 1;
        for (int i = 0; i < ni - 1; i++) {
            if (in[i] > 900) {
                ok &= tg[ti] == in[i];
                ti++;
                while (ti < nt - 1 && tg[ti] < 900) out[no++] = tg[ti++];
            } else {
                out[no++] = in[i];
            }
        }
        EXPECT(ok && no == n);
        for (int i = 0; i < n && i < no; i++) EXPECT(out[i] == ids[i]);
        // Sentinels are used in order from <extra_id_0>, and no two are adjacent in the input
        // (each noise span follows a non-empty kept span).
        for (int s = 0, i = 0; i < ni - 1; i++)
            if (in[i] > 900) {
                EXPECT(in[i] == sent[s++]);
                EXPECT(i > 0 && in[i - 1] < 900);
            }
        free(in);
        free(tg);
    }
}

// Denoising (whole_target): the same corrupted input as span corruption from the same seed,
// and the target is the whole text and </s>.
static void test_whole_target(void) {
    int sent[4] = {99, 98, 97, 96}, ids[40];
    for (int i = 0; i < 40; i++) ids[i] = i + 2;
    span_corrupt_t sc = {0.15, 3.0, sent, 4, 1, 0}, wc = sc;
    wc.whole_target = 1;
    uint64_t a = 11, b = 11;
    int *i1, *t1, *i2, *t2, n1, m1, n2, m2;
    lb_err_t err;
    EXPECT(span_corrupt(&sc, ids, 40, &a, &i1, &n1, &t1, &m1, &err) == 0);
    EXPECT(span_corrupt(&wc, ids, 40, &b, &i2, &n2, &t2, &m2, &err) == 0);
    EXPECT(n1 == n2 && memcmp(i1, i2, sizeof(int) * (size_t)n1) == 0);
    EXPECTF(m2 == 41 && memcmp(t2, ids, sizeof ids) == 0 && t2[40] == 1, "target of %d tokens", m2);
    EXPECT(m1 < m2);
    free(i1), free(t1), free(i2), free(t2);
}

static void test_seeded(void) {
    int sent[4] = {99, 98, 97, 96}, ids[40];
    for (int i = 0; i < 40; i++) ids[i] = i + 2;
    span_corrupt_t sc = {0.15, 3.0, sent, 4, 1, 0};
    uint64_t a = 7, b = 7, c = 8;
    int *i1, *t1, *i2, *t2, *i3, *t3, n1, m1, n2, m2, n3, m3;
    lb_err_t err;
    span_corrupt(&sc, ids, 40, &a, &i1, &n1, &t1, &m1, &err);
    span_corrupt(&sc, ids, 40, &b, &i2, &n2, &t2, &m2, &err);
    span_corrupt(&sc, ids, 40, &c, &i3, &n3, &t3, &m3, &err);
    EXPECT(n1 == n2 && memcmp(i1, i2, sizeof(int) * (size_t)n1) == 0 && memcmp(t1, t2, sizeof(int) * (size_t)m1) == 0);
    EXPECT(n1 != n3 || memcmp(i1, i3, sizeof(int) * (size_t)n1) != 0);
    free(i1), free(t1), free(i2), free(t2), free(i3), free(t3);
    EXPECT(span_corrupt(&sc, ids, 1, &a, &i1, &n1, &t1, &m1, &err) != 0);
}

int main(void) {
    RUN(test_partition);
    RUN(test_seeded);
    RUN(test_whole_target);
    TH_DONE();
}
