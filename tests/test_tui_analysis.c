// The Analysis screen's layout against tests/golden/analysis_*.txt (80x24, 120x40, ASCII)
// and its keys, on a temporary workspace whose runs hold adapters and a fine-tuned model
// written here (deterministic: seeded adapters and a fixed perturbation of the fixture):
// 1 LoRA r=4 on q,v; 2 rsLoRA r=8 on every module; 3 a full fine-tune; 4 method none.
// The analysis runs on a worker thread: its progress hook counts every module and stops it
// without a cache file, and the screen draws and takes keys while the worker is held
// before its first matrix (analysis_pace_ms). LB_UPDATE_GOLDEN=1 rewrites the goldens.
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "analysis.h"
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

// runs/<id>/analysis.json, and whether it or a temporary file of it (analysis.json.tmp.*)
// is there.
static void cache_path(int64_t id, char *path, size_t cap) {
    snprintf(path, cap, "%s/runs/%lld/analysis.json", ws, (long long)id);
}
static int cache_files(int64_t id) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/runs/%lld", ws, (long long)id);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "analysis.json", 13)) n++;
    if (d) closedir(d);
    return n;
}

// What the progress hook saw; stop_at >= 0 asks to stop there.
typedef struct {
    int calls, last_done, last_total, in_order, stop_at;
} seen_t;

static int record(void *ctx, int done, int total) {
    seen_t *s = ctx;
    if (done != s->calls) s->in_order = 0;
    s->calls++;
    s->last_done = done, s->last_total = total;
    return s->stop_at >= 0 && done >= s->stop_at;
}

// One analysis of run id through the worker's entry point with the hook.
static int analyse(int64_t id, seen_t *s, analyze_result_t *r, int *cached, lb_err_t *err) {
    analysis_run_t run;
    if (analysis_run_find(st, ws, id, &run, err)) die(err);
    s->calls = 0, s->in_order = 1;
    analyze_progress_t p = {record, s};
    memset(r, 0, sizeof *r);
    return analysis_of_found_run(&run, &p, r, cached, NULL, 0, err);
}

static void test_progress_and_stop(void) {
    char path[300];
    for (int64_t id = 2; id <= 3; id++) {
        cache_path(id, path, sizeof path);
        unlink(path);
        // stopped before matrix 3: no result, no cache file, nothing half-written
        seen_t s = {.stop_at = 3};
        analyze_result_t r;
        lb_err_t err = {0};
        int cached = -1;
        int rc = analyse(id, &s, &r, &cached, &err);
        EXPECTF(rc == -1 && err.code == LB_ESTOPPED, "run %lld: rc %d code %d: %s", (long long)id, rc, err.code, err.msg);
        EXPECTF(s.calls == 4 && s.in_order && s.last_done == 3, "run %lld: %d calls, last %d", (long long)id, s.calls,
                s.last_done);
        EXPECT(r.n == 0 && r.m == NULL && cached == 0);
        EXPECTF(cache_files(id) == 0, "run %lld: %d analysis.json files after a stop", (long long)id, cache_files(id));
        // to the end: 0 .. n-1 before each matrix, then n of n; the cache written once, whole
        s.stop_at = -1;
        memset(&err, 0, sizeof err);
        rc = analyse(id, &s, &r, &cached, &err);
        EXPECTF(rc == 0, "%s", err.msg);
        int n = id == 3 ? 37 : r.n;
        EXPECTF(r.n == n && n > 3 && s.calls == n + 1 && s.in_order && s.last_done == n && s.last_total == n,
                "run %lld: %d modules, %d calls, last %d of %d", (long long)id, r.n, s.calls, s.last_done, s.last_total);
        EXPECT(cached == 0 && cache_files(id) == 1);
        size_t len;
        char *text = lb_read_file(path, &len, &err), *key = NULL;
        analyze_result_t back;
        EXPECTF(text && analyze_from_json(text, path, &back, &key, &err) == 0, "%s", err.msg);
        if (text && key) {
            EXPECT(back.n == n && key[0]);
            for (int k = 0; k < n && k < back.n; k++)  // cJSON writes 15 digits when they read back within 1 ulp
                EXPECT(back.m[k].n_sv == r.m[k].n_sv && fabs(back.m[k].sv[0] - r.m[k].sv[0]) <= 1e-12 * r.m[k].sv[0]);
            analyze_result_free(&back);
        }
        free(key);
        free(text);
        analyze_result_free(&r);
        // the next time: read from the cache, no matrix computed
        rc = analyse(id, &s, &r, &cached, &err);
        EXPECT(rc == 0 && cached == 1 && s.calls == 0 && r.n == n);
        analyze_result_free(&r);
    }
}

// Draws the frame and says whether it shows text.
static int frame_has(app_t *a, const char *text) {
    grid_t *g = grid_new(80, 24, 0);
    app_draw(a, g);
    char *t = grid_dump_text(g);
    int has = strstr(t, text) != NULL;
    free(t);
    grid_free(g);
    return has;
}

// Draws frames until one shows text (at most 20 s: the worker reads and loads first).
static int wait_frame(app_t *a, const char *text) {
    for (int i = 0; i < 2000; i++) {
        if (frame_has(a, text)) return 1;
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    }
    return 0;
}

static void test_screen_while_computing(void) {
    char path[300];
    for (int64_t id = 1; id <= 3; id += 2) {
        cache_path(id, path, sizeof path);
        unlink(path);
    }
    app_t *a = new_app();
    a->analysis_pace_ms = 60000;  // the worker waits before each matrix until stopped
    app_key(a, TK_END);           // run 1
    app_key(a, 'A');
    EXPECTF(app_screen(a) == SCR_ANALYSIS && app_analysis_busy(a), "screen %d: %s", app_screen(a), a->msg);
    EXPECT(wait_frame(a, "analysing 1 of 12 matrices…"));
    snap(a, "analysis_progress", 80, 24, 0);
    // keys work while it computes: nothing to step through or export yet, help opens
    app_key(a, TK_DOWN);
    EXPECT(a->analysis_module == 0 && app_analysis_busy(a));
    app_key(a, 'e');
    EXPECTF(strstr(a->msg, "still analysing") != NULL, "%s", a->msg);
    app_key(a, '?');
    EXPECT(a->help && frame_has(a, "an analysis still running stops"));
    app_key(a, '?');
    EXPECT(!a->help && app_screen(a) == SCR_ANALYSIS);
    // Esc leaves at once; the worker stops before its next matrix and caches nothing
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS);
    EXPECTF(strstr(a->msg, "stopped the analysis of #1") != NULL, "%s", a->msg);
    app_analysis_stop(a);
    EXPECT(a->analysis_job == NULL && cache_files(1) == 0);
    // the full fine-tune, left by quitting: app_free stops and joins the worker
    app_key(a, TK_HOME);
    app_key(a, TK_DOWN);  // run 3
    app_key(a, 'A');
    EXPECT(wait_frame(a, "analysing 1 of 37 matrices…"));
    app_free(a);
    EXPECT(cache_files(3) == 0);
    // without the pace it fills in: the same screen, then the numbers and the cache
    app_init(a, st, ws, 0);
    app_key(a, TK_END);
    app_key(a, 'A');
    app_analysis_wait(a);
    EXPECT(!app_analysis_busy(a) && a->analysis.n == 12 && !a->analysis_cached && cache_files(1) == 1);
    EXPECT(frame_has(a, "module 1 of 12"));
    app_free(a);
    free(a);
}

// A run whose adapter file is not a safetensors file: found (the file is there), then the
// worker fails; the screen says why instead of the numbers, and Esc goes back.
static void test_worker_error(void) {
    int64_t id = add_run("broken", "lora", 4);
    char path[300];
    snprintf(path, sizeof path, "%s/runs/%lld/adapter", ws, (long long)id);
    char *dir = NULL;
    lb_err_t err = {0};
    if (store_run_dir(ws, id, 1, &dir, &err)) die(&err);
    free(dir);
    if (mkdir(path, 0755)) perror(path);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/adapter_model.safetensors");
    FILE *f = fopen(path, "w");
    if (f) fputs("not a safetensors file", f), fclose(f);
    app_t *a = new_app();
    app_key(a, TK_HOME);  // the newest run
    app_key(a, 'A');
    EXPECTF(app_screen(a) == SCR_ANALYSIS, "%s", a->msg);
    app_analysis_wait(a);
    EXPECTF(a->msg_style == ST_ERROR && a->msg[0] && a->analysis.n == 0, "%s", a->msg);
    EXPECT(frame_has(a, "No analysis: ") && frame_has(a, "#5 broken"));
    EXPECT(cache_files(id) == 0);
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS);
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
    RUN(test_progress_and_stop);
    RUN(test_screen_while_computing);
    RUN(test_worker_error);  // last: it adds run 5
    store_close(st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", ws);
    TH_DONE();
}
