// The Try screen on a temporary store whose runs point at the fixture model: i on the
// runs list opens it with the base and each run (a run of method none is the base itself);
// its layout before generating (golden, 80x24 and 120x40); typing, Enter, and the outputs
// that appear equal to what tryout gives for the same text (the base loaded once); Esc
// during generation stops it, Esc after leaves; runs of another base or without weights
// are refused with a message, a base that does not load says so. LB_UPDATE_GOLDEN=1
// rewrites the goldens.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "golden/tui_golden.h"
#include "harness.h"
#include "store.h"
#include "tryout.h"

#define MODEL "tests/fixtures/hf/t5-gated-a"

static char ws[256];
static store_t *st;
static int64_t id_zs, id_lora, id_other, id_queued, id_nobase;

static int64_t add_run(const char *name, const char *method, const char *base, const char *adapter) {
    lb_err_t err = {0};
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{\"name\":\"%s\",\"base_model\":\"%s\",\"dataset\":{\"path\":\"experiments/data/debsum\","
             "\"prefix\":\"summarize: \",\"max_source_tokens\":64},\"method\":\"%s\",\"lora\":{\"r\":8,"
             "\"alpha\":16,\"targets\":[\"q\",\"v\"]},\"eval\":{\"limit\":4,\"max_new_tokens\":10}}",
             name, base, method);
    store_run_new_t nr = {name, spec, method, base, "experiments/data/debsum", 8, 16, "q,v", 10, -1, NULL, NULL, NULL};
    int64_t id = 0;
    EXPECT(store_run_create(st, &nr, &id, &err) == 0);
    if (adapter) {
        EXPECT(store_run_set_status(st, id, "running", NULL, &err) == 0);
        EXPECT(store_run_set_status(st, id, "done", NULL, &err) == 0);
        if (*adapter) EXPECT(store_artifact_add(st, id, "adapter", adapter, 1, NULL, 10, &err) == 0);
    }
    return id;
}

static app_t *new_app(void) {
    app_t *a = calloc(1, sizeof *a);
    app_init(a, st, ws, 0);
    free(a->workspace);
    a->workspace = xstrdup("/tmp/lorabench-test");
    a->fixed_now = 1;
    return a;
}

static char *screen_text(app_t *a, int w, int h) {
    grid_t *g = grid_new(w, h, 0);
    app_draw(a, g);
    char *t = grid_dump_text(g);
    grid_free(g);
    return t;
}

static void snap(app_t *a, const char *name, int w, int h) {
    grid_t *g = grid_new(w, h, 0);
    app_draw(a, g);
    char full[128];
    snprintf(full, sizeof full, "%s_%dx%d", name, w, h);
    tui_expect_golden(full, g);
    grid_free(g);
}

static void select_runs(app_t *a, const int64_t *ids, int n) {
    a->nselected = 0;
    for (int i = 0; i < n; i++) app_toggle_selected(a, ids[i]);
}

static void type(app_t *a, const char *s) {
    for (; *s; s++) app_key(a, (unsigned char)*s);
}

static int wait_idle(app_t *a) {
    for (int i = 0; i < 600 && app_try_busy(a); i++) usleep(50000);
    return !app_try_busy(a);
}

// The line of the screen holding needle, or NULL (a static copy).
static const char *line_with(const char *screen, const char *needle) {
    static char line[1024];
    const char *p = strstr(screen, needle);
    if (!p) return NULL;
    const char *b = p, *e = p;
    while (b > screen && b[-1] != '\n') b--;
    while (*e && *e != '\n') e++;
    snprintf(line, sizeof line, "%.*s", (int)(e - b), b);
    return line;
}

static void test_layout_and_outputs(void) {
    app_t *a = new_app();
    int64_t ids[2] = {id_zs, id_lora};
    select_runs(a, ids, 2);
    app_key(a, 'i');
    EXPECT(app_screen(a) == SCR_TRY);
    snap(a, "try", 80, 24);
    snap(a, "try", 120, 40);
    const char *in = "summarize: a terminal tool for managing packages";
    app_key(a, 0x15);  // Ctrl-U: the prefix goes
    type(a, in);
    app_key(a, TK_ENTER);
    char *busy = screen_text(a, 120, 40);
    EXPECT(app_try_busy(a) == 0 || strstr(busy, "generating") || strstr(busy, "loading"));
    free(busy);
    EXPECT(wait_idle(a));
    // what tryout gives for the same text and settings, from a load of its own
    tryout_t t;
    lb_err_t err = {0};
    EXPECT(tryout_open(&t, MODEL, T5_PRECISION_FP32, TRYOUT_ATTACH, &err) == 0);
    EXPECT(tryout_add(&t, MODEL "/adapter", &err) == 0);
    generate_opts_t o;
    generate_opts_default(&o);
    o.max_new_tokens = 10;
    char *base = NULL, *ad = NULL;
    EXPECT(tryout_generate_texts(&t, TRYOUT_VARIANT_BASE, &in, 1, 64, &o, &base, NULL, &err) == 0);
    EXPECT(tryout_generate_texts(&t, 0, &in, 1, 64, &o, &ad, NULL, &err) == 0);
    EXPECTF(t.model_loads == 1, "model loads %d", t.model_loads);
    tryout_free(&t);
    EXPECTF(strcmp(base, ad) != 0, "the adapter changes the output (%s)", base);
    char *s = screen_text(a, 120, 40);
    const char *l = line_with(s, "base (zero-shot)");
    EXPECTF(l && strstr(l, base) && strstr(l, " ms "), "base line: %s (want %s)", l ? l : "(none)", base);
    l = line_with(s, "#2 lora-fixture");
    EXPECTF(l && strstr(l, ad) && strstr(l, " ms "), "adapter line: %s (want %s)", l ? l : "(none)", ad);
    EXPECTF(strstr(s, "done; 1 model load in"), "%s", s);
    EXPECT(strstr(s, "summarize: a terminal tool for managing packages_"));
    free(s);
    // again: nothing is loaded a second time
    app_key(a, TK_ENTER);
    EXPECT(wait_idle(a));
    s = screen_text(a, 80, 24);
    EXPECTF(strstr(s, "done; 1 model load in"), "%s", s);
    EXPECT(strstr(s, "Try"));
    free(s);
    // Esc right after Enter stops after the current output and stays; once idle, Esc
    // leaves (on a machine slow enough to finish both outputs in between, it just leaves)
    app_key(a, TK_BACKSPACE);
    app_key(a, TK_ENTER);
    app_key(a, TK_ESC);
    if (app_screen(a) == SCR_TRY) {
        EXPECTF(strstr(a->msg, "stopping after the current output"), "%s", a->msg);
        EXPECT(wait_idle(a));
        s = screen_text(a, 120, 40);
        EXPECTF(strstr(s, "stopped;") || strstr(s, "done;"), "%s", s);
        free(s);
        app_key(a, TK_ESC);
    }
    EXPECT(app_screen(a) == SCR_RUNS);
    EXPECT(a->try_state == NULL);
    free(base);
    free(ad);
    app_free(a);
    free(a);
}

static void test_refusals(void) {
    app_t *a = new_app();
    int64_t mixed[2] = {id_lora, id_other};
    select_runs(a, mixed, 2);
    app_key(a, 'i');
    EXPECT(app_screen(a) == SCR_RUNS);
    EXPECTF(strstr(a->msg, "select runs of one base model"), "%s", a->msg);
    int64_t q[1] = {id_queued};
    select_runs(a, q, 1);
    app_key(a, 'i');
    EXPECT(app_screen(a) == SCR_RUNS);
    EXPECTF(strstr(a->msg, "has no stored adapter or model yet"), "%s", a->msg);
    // a base model that cannot be loaded: its message on the status line, nothing waits
    select_runs(a, &id_nobase, 1);
    app_key(a, 'i');
    EXPECT(app_screen(a) == SCR_TRY);
    app_key(a, TK_ENTER);
    EXPECT(wait_idle(a));
    char *t = screen_text(a, 120, 40);
    EXPECTF(strstr(t, "/tmp/lb-no-such-model") && !strstr(t, "waiting") && !strstr(t, "generating"), "%s", t);
    free(t);
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS);
    // F10 quits from the input; q types
    select_runs(a, &id_lora, 1);
    app_key(a, 'i');
    EXPECT(app_screen(a) == SCR_TRY);
    app_key(a, 'q');
    EXPECT(!a->quit);
    char *s = screen_text(a, 80, 24);
    EXPECT(strstr(s, "summarize: q_"));
    free(s);
    app_key(a, TK_F10);
    EXPECT(a->quit);
    app_free(a);
    free(a);
}

int main(void) {
    snprintf(ws, sizeof ws, "/tmp/lb-tui-try-%d", (int)getpid());
    lb_err_t err = {0};
    char *w = NULL;
    if (store_workspace_resolve(ws, &w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char *db = store_workspace_db_path(w);
    if (store_open(db, &st, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    free(db);
    free(w);
    id_zs = add_run("zero-shot", "none", MODEL, "");
    id_lora = add_run("lora-fixture", "lora", MODEL, MODEL "/adapter/adapter_model.safetensors");
    id_other = add_run("other-base", "lora", "experiments/models/t5-tiny", MODEL "/adapter/adapter_model.safetensors");
    id_queued = add_run("queued", "lora", MODEL, NULL);
    id_nobase = add_run("no-base", "lora", "/tmp/lb-no-such-model", MODEL "/adapter/adapter_model.safetensors");
    RUN(test_layout_and_outputs);
    RUN(test_refusals);
    store_close(st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", ws);
    TH_DONE();
}
