// tryout (engine/eval/tryout.h) on the fixture model: one load for the base however many
// adapters are added, a model folder loaded as a model of its own; switching adapters
// gives each adapter's ids and coming back to the base gives the base's bit for bit
// (attach) or within fp32 rounding of W (merge, whose ids equal attach's); errors name the
// folder or the variant.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tryout.h"

#define MODEL "tests/fixtures/hf/t5-gated-a"

static const char *const texts[2] = {"summarize: a terminal tool for managing packages", "summarize: a library"};

// Ids of both texts with variant v (malloc'ed [2, *L]).
static int32_t *gen_ids(tryout_t *t, int v, int *L) {
    lb_err_t err = {0};
    const t5_model_t *m = tryout_use(t, v, &err);
    EXPECTF(m != NULL, "%s", err.msg);
    if (!m) return NULL;
    int32_t *ids, *mask;
    int S;
    EXPECTF(tryout_encode_texts(t->tok, &m->cfg, texts, 2, 64, &ids, &mask, &S, &err) == 0, "%s", err.msg);
    generate_opts_t o;
    generate_opts_default(&o);
    o.max_new_tokens = 12;
    generate_result_t r;
    EXPECTF(generate_batch(m, ids, mask, 2, S, &o, &r, &err) == 0, "%s", err.msg);
    free(ids);
    free(mask);
    int32_t *out = malloc(sizeof(int32_t) * 2 * (size_t)r.L);
    memcpy(out, r.ids, sizeof(int32_t) * 2 * (size_t)r.L);
    *L = r.L;
    generate_result_free(&r);
    return out;
}

static int same(const int32_t *a, int La, const int32_t *b, int Lb) {
    return a && b && La == Lb && !memcmp(a, b, sizeof(int32_t) * 2 * (size_t)La);
}

static void test_switching(void) {
    lb_err_t err = {0};
    tryout_t ta, tm;
    EXPECTF(tryout_open(&ta, MODEL, T5_PRECISION_FP32, TRYOUT_ATTACH, &err) == 0, "%s", err.msg);
    EXPECTF(tryout_open(&tm, MODEL, T5_PRECISION_FP32, TRYOUT_MERGE, &err) == 0, "%s", err.msg);
    EXPECT(ta.tok != NULL);
    int L0, L1, L2, L3, L4, L5;
    int32_t *base = gen_ids(&ta, TRYOUT_VARIANT_BASE, &L0);
    EXPECT(tryout_add(&ta, MODEL "/adapter", &err) == 0);
    EXPECT(tryout_add(&ta, MODEL, &err) == 1);  // a model folder: its own model
    EXPECTF(ta.model_loads == 2 && ta.v[1].is_model && !ta.v[0].is_model, "loads %d", ta.model_loads);
    EXPECT(tryout_add(&tm, MODEL "/adapter", &err) == 0);
    EXPECTF(tm.model_loads == 1, "an adapter loads no model: %d", tm.model_loads);
    int32_t *ad = gen_ids(&ta, 0, &L1);
    EXPECTF(!same(base, L0, ad, L1), "the adapter changes the ids");
    int32_t *own = gen_ids(&ta, 1, &L2);
    EXPECTF(same(base, L0, own, L2), "the fixture loaded as a model of its own generates as the base");
    int32_t *back = gen_ids(&ta, TRYOUT_VARIANT_BASE, &L3);
    EXPECTF(same(base, L0, back, L3), "attach: back to the base, the same ids");
    for (int i = 0; i < ta.base.n_lin; i++) EXPECT(ta.base.lin[i].r == 0);
    // merge: the adapter's ids as attached; the base after merge/unmerge cycles too
    int32_t *mad = gen_ids(&tm, 0, &L4);
    EXPECTF(same(ad, L1, mad, L4), "merge gives the attach ids");
    for (int k = 0; k < 5; k++) {
        EXPECT(tryout_use(&tm, TRYOUT_VARIANT_BASE, &err) != NULL);
        EXPECT(tryout_use(&tm, 0, &err) != NULL);
    }
    int32_t *mback = gen_ids(&tm, TRYOUT_VARIANT_BASE, &L5);
    EXPECTF(same(base, L0, mback, L5), "merge: back to the base, the same ids");
    double maxd = 0;
    for (int i = 0; i < ta.base.n_params; i++) {
        const lb_param_t *p = &ta.base.params[i], *q = &tm.base.params[i];
        for (size_t j = 0; p->w && q->w && j < p->numel; j++)
            if (fabs((double)p->w[j] - q->w[j]) > maxd) maxd = fabs((double)p->w[j] - q->w[j]);
    }
    EXPECTF(maxd < 1e-5, "W after 6 merge/unmerge cycles within fp32 rounding: max |ΔW| %g", maxd);
    // errors
    EXPECT(tryout_use(&ta, 2, &err) == NULL && strstr(err.msg, "variant 2 does not exist"));
    EXPECT(tryout_add(&ta, "tests/fixtures", &err) < 0 && strstr(err.msg, "tests/fixtures has neither adapter_config.json"));
    free(base), free(ad), free(own), free(back), free(mad), free(mback);
    tryout_free(&ta);
    tryout_free(&tm);
}

static void test_texts(void) {
    lb_err_t err = {0};
    tryout_t t;
    EXPECTF(tryout_open(&t, MODEL, T5_PRECISION_FP32, TRYOUT_ATTACH, &err) == 0, "%s", err.msg);
    EXPECT(tryout_add(&t, MODEL "/adapter", &err) == 0);
    generate_opts_t o;
    generate_opts_default(&o);
    o.max_new_tokens = 12;
    char *out[2] = {0}, *again[2] = {0};
    double sec = -1;
    EXPECTF(tryout_generate_texts(&t, 0, texts, 2, 64, &o, out, &sec, &err) == 0, "%s", err.msg);
    EXPECT(sec >= 0 && out[0] && out[1]);
    EXPECT(tryout_generate_texts(&t, TRYOUT_VARIANT_BASE, texts, 2, 64, &o, again, NULL, &err) == 0);
    EXPECTF(out[0] && again[0] && strcmp(out[0], again[0]), "adapter '%s' vs base '%s'", out[0], again[0]);
    for (int i = 0; i < 2; i++) free(out[i]), free(again[i]);
    // an empty text is </s> alone, not an error
    const char *empty = "";
    char *e = NULL;
    EXPECT(tryout_generate_texts(&t, 0, &empty, 1, 64, &o, &e, NULL, &err) == 0 && e);
    free(e);
    tryout_free(&t);
}

int main(void) {
    RUN(test_switching);
    RUN(test_texts);
    TH_DONE();
}
