// The Analysis screen's layout against tests/golden/analysis_*.txt (80x24, 120x40, ASCII)
// and its keys, on a temporary workspace whose runs hold adapters and a fine-tuned model
// written here (deterministic: seeded adapters and a fixed perturbation of the fixture):
// 1 LoRA r=4 on q,v; 2 rsLoRA r=8 on every module; 3 a full fine-tune; 4 method none.
// LB_UPDATE_GOLDEN=1 rewrites the goldens.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "golden/tui_golden.h"
#include "harness.h"
#include "lora.h"
#include "lora_t5.h"
#include "store.h"
#include "t5.h"
#include "t5_save.h"

#define FIXTURE "tests/fixtures/hf/t5-gated-a"

static char ws[256];
static store_t *st;

static void die(const lb_err_t *err) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
}

static int64_t add_run(const char *name, const char *method, int r) {
    lb_err_t err = {0};
    store_run_new_t nr = {name, "{}", method, FIXTURE, "experiments/data/debsum", r > 0 ? r : -1,
                          r > 0 ? 8.0 : NAN, r > 0 ? "q,v" : NULL, 10, -1, NULL, NULL, NULL};
    int64_t id = 0;
    if (store_run_create(st, &nr, &id, &err) || store_run_set_status(st, id, "done", NULL, &err)) die(&err);
    return id;
}

// like (0: none): a run whose adapter's A rows this one's first rows repeat, mixed in
// proportion 1 : 0.5 with its own, so that φ shows shared directions.
static void write_adapter(int64_t id, int r, int rslora, int all, uint64_t seed, int64_t like) {
    lb_err_t err = {0};
    t5_config_t cfg;
    if (t5_config_load(&cfg, FIXTURE, &err)) die(&err);
    lora_shape_t shape;
    lora_shape_from_t5(&cfg, &shape);
    lora_config_t c;
    lora_config_default(&c);
    c.r = r, c.alpha = 8, c.rslora = rslora, c.init = LORA_INIT_RANDOM_BOTH;
    if (all) {
        static const char *kinds[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo"};
        c.n_targets = 7;
        for (int i = 0; i < 7; i++) snprintf(c.targets[i], sizeof c.targets[i], "%s", kinds[i]);
    }
    lora_adapter_t a;
    char *dir = NULL, sub[4200];
    if (store_run_dir(ws, id, 1, &dir, &err)) die(&err);
    snprintf(sub, sizeof sub, "%s/adapter", dir);
    free(dir);
    if (lora_create(&a, &c, &shape, &err) || lora_init(&a, seed, NULL, NULL, &err)) die(&err);
    if (like) {
        lora_adapter_t b;
        char bdir[300];
        snprintf(bdir, sizeof bdir, "%s/runs/%lld/adapter", ws, (long long)like);
        if (lora_load(&b, bdir, &shape, &err)) die(&err);
        for (int i = 0; i < a.n; i++) {
            const lora_module_t *mb = lora_find(&b, a.m[i].name);
            for (int row = 0; mb && row < mb->r && row < a.m[i].r; row++)
                for (int x = 0; x < a.m[i].in; x++)
                    a.m[i].A[(size_t)row * a.m[i].in + x] = mb->A[(size_t)row * mb->in + x] + 0.5f * a.m[i].A[(size_t)row * a.m[i].in + x];
        }
        lora_free(&b);
    }
    if (lora_save(&a, sub, &err)) die(&err);
    lora_free(&a);
}

// The fixture with seeded noise of 1e-3 on every linear weight and a rank-1 change of 0.05 on the
// first q (its spectrum: one large value, then the noise's).
static void write_finetuned(int64_t id) {
    lb_err_t err = {0};
    t5_model_t m;
    if (t5_load(&m, FIXTURE, &err)) die(&err);
    t5_set_trainable(&m, t5_pred_all, NULL);
    uint64_t rng = 3;
    for (int l = 0; l < m.n_lin; l++)
        for (size_t i = 0; i < m.lin[l].W->numel; i++) m.lin[l].W->w[i] += (float)(1e-3 * lb_rng_normal(&rng));
    linear_t *q = t5_find_linear(&m, "encoder.block.0.layer.0.SelfAttention.q");
    for (int o = 0; o < q->out; o++)
        for (int i = 0; i < q->in; i++) q->W->w[(size_t)o * q->in + i] += (float)(0.05 * cos(o) * sin(3.0 * i));
    char *dir = NULL, sub[4200];
    if (store_run_dir(ws, id, 1, &dir, &err)) die(&err);
    snprintf(sub, sizeof sub, "%s/model", dir);
    free(dir);
    if (t5_save(&m, FIXTURE, sub, &err)) die(&err);
    t5_free(&m);
}

static app_t *new_app(void) {
    app_t *a = calloc(1, sizeof *a);
    app_init(a, st, ws, 0);
    a->now = 1700000000.0;
    a->fixed_now = 1;
    return a;
}

// Draws with the machine's paths replaced by fixed ones (the workspace is a temporary folder).
static void snap(app_t *a, const char *name, int w, int h, int ascii) {
    static char fixed_ws[] = "/tmp/lorabench-test";
    char *real = a->workspace, cache[sizeof a->analysis_cache];
    snprintf(cache, sizeof cache, "%s", a->analysis_cache);
    a->workspace = fixed_ws;
    snprintf(a->analysis_cache, sizeof a->analysis_cache, "/tmp/lorabench-test/runs/%lld/analysis.json",
             (long long)a->analysis_id);
    char msg[sizeof a->msg];
    snprintf(msg, sizeof msg, "%s", a->msg);
    a->msg[0] = 0;  // it names the temporary folder
    grid_t *g = grid_new(w, h, ascii);
    a->ascii = ascii;
    app_draw(a, g);
    char full[128];
    snprintf(full, sizeof full, "%s_%dx%d%s", name, w, h, ascii ? "_ascii" : "");
    tui_expect_golden(full, g);
    grid_free(g);
    a->workspace = real;
    snprintf(a->msg, sizeof a->msg, "%s", msg);
    snprintf(a->analysis_cache, sizeof a->analysis_cache, "%s", cache);
}

static void test_lora_screen(void) {
    app_t *a = new_app();
    EXPECT(a->nruns == 4);
    app_key(a, TK_END);  // newest first: the last row is run 1
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECTF(app_screen(a) == SCR_ANALYSIS, "screen %d, message: %s", app_screen(a), a->msg);
    EXPECT(a->analysis_id == 1 && a->analysis.n == 12 && !a->analysis.full && a->analysis_other == 0);
    EXPECT(!a->analysis_cached);
    EXPECTF(strstr(a->msg, "computed and cached in ") && strstr(a->msg, "/runs/1/analysis.json"), "%s", a->msg);
    snap(a, "analysis_lora", 80, 24, 0);
    snap(a, "analysis_lora", 120, 40, 0);
    // modules with the arrow keys, clamped at both ends
    app_key(a, TK_UP);
    EXPECT(a->analysis_module == 0);
    app_key(a, TK_DOWN);
    app_key(a, TK_RIGHT);
    EXPECT(a->analysis_module == 2);
    app_key(a, TK_LEFT);
    EXPECT(a->analysis_module == 1);
    app_key(a, TK_END);
    EXPECT(a->analysis_module == 11);
    app_key(a, TK_DOWN);
    EXPECT(a->analysis_module == 11);
    app_key(a, TK_HOME);
    EXPECT(a->analysis_module == 0);
    // e: every number as CSV under the workspace, the path in the message
    app_key(a, 'e');
    EXPECTF(strstr(a->msg, "exported the analysis of 12 modules to ") && strstr(a->msg, ws), "%s", a->msg);
    const char *p = strstr(a->msg, " to ");
    FILE *f = p ? fopen(p + 4, "r") : NULL;
    int lines = 0, c;
    while (f && (c = fgetc(f)) != EOF) lines += c == '\n';
    if (f) fclose(f);
    EXPECTF(lines == 1 + 12 * 14, "%d CSV lines, want 169", lines);
    // the second time the analysis comes from runs/1/analysis.json
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS);
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECT(app_screen(a) == SCR_ANALYSIS && a->analysis_cached);
    EXPECTF(strstr(a->msg, "read from ") && strstr(a->msg, "/runs/1/analysis.json"), "%s", a->msg);
    app_free(a);
    free(a);
}

static void test_phi_screen(void) {
    app_t *a = new_app();
    a->selected[0] = 2, a->selected[1] = 1, a->nselected = 2;
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECTF(app_screen(a) == SCR_ANALYSIS, "message: %s", a->msg);
    EXPECT(a->analysis_id == 2 && a->analysis_other == 1 && a->analysis_nsim == 12);
    for (int k = 0; k < a->analysis_nsim; k++) EXPECT(a->analysis_sim[k].n == 4);
    snap(a, "analysis_phi", 120, 40, 0);
    snap(a, "analysis_phi", 80, 24, 1);
    // a LoRA run against the full fine-tune: the spectra, and why there is no φ
    app_key(a, TK_ESC);
    a->selected[0] = 1, a->selected[1] = 3;
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECT(app_screen(a) == SCR_ANALYSIS && a->analysis_id == 1 && a->analysis_other == 0);
    EXPECTF(strstr(a->msg, "run 3 is a full fine-tune; pick two LoRA runs") != NULL, "%s", a->msg);
    app_free(a);
    free(a);
}

static void test_full_screen(void) {
    app_t *a = new_app();
    app_key(a, TK_HOME);  // run 4: method none
    app_key(a, 'A');
    EXPECT(app_screen(a) == SCR_RUNS);
    EXPECTF(strstr(a->msg, "trains nothing") != NULL, "%s", a->msg);
    app_key(a, TK_DOWN);  // run 3
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECTF(app_screen(a) == SCR_ANALYSIS, "message: %s", a->msg);
    EXPECT(a->analysis.full && a->analysis.n == 37);
    snap(a, "analysis_full", 120, 40, 0);
    snap(a, "analysis_full", 80, 24, 0);
    app_free(a);
    free(a);
}

int main(void) {
    snprintf(ws, sizeof ws, "/tmp/lb-tui-analysis-%d", (int)getpid());
    lb_err_t err = {0};
    char *w = NULL;
    if (store_workspace_resolve(ws, &w, &err)) die(&err);
    char *db = store_workspace_db_path(w);
    if (store_open(db, &st, &err)) die(&err);
    free(db);
    free(w);
    int64_t first = add_run("lora-r4-qv", "lora", 4);
    write_adapter(first, 4, 0, 0, 21, 0);
    write_adapter(add_run("lora-r8-all", "lora", 8), 8, 1, 1, 22, first);
    write_finetuned(add_run("full-ft", "full", 0));
    add_run("zero-shot", "none", 0);
    RUN(test_lora_screen);
    RUN(test_phi_screen);
    RUN(test_full_screen);
    store_close(st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", ws);
    TH_DONE();
}
