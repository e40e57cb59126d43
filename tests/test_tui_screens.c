// Screen snapshots of the workbench at 80x24 and 160x48 against tests/golden/, from a
// temporary store filled with synthetic runs through the store API, plus the behaviour of
// keys (sort, filter, selection, pin, prompts, export). LB_UPDATE_GOLDEN=1 rewrites goldens.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "golden/tui_golden.h"
#include "harness.h"
#include "linear.h"
#include "store.h"
#include "store_import.h"
#include "store_internal.h"

#define T0 1700000000.0

static char ws[256];
static store_t *st;

static const char *spec_json(const char *name, const char *method, int r, const char *targets, double lr) {
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"name\":\"%s\",\"base_model\":\"experiments/models/t5-tiny\",\"dataset\":{\"path\":"
             "\"experiments/data/debsum\",\"prefix\":\"summarize: \"},\"method\":\"%s\",\"lora\":{\"r\":%d,"
             "\"alpha\":%d,\"targets\":%s},\"train\":{\"lr\":%g,\"batch_size\":8,\"max_steps\":400},"
             "\"eval\":{\"limit\":50}}",
             name, method, r, 2 * r, targets, lr);
    return buf;
}

static void sql(const char *q) {
    char *e = NULL;
    if (sqlite3_exec(st->db, q, NULL, NULL, &e) != SQLITE_OK) {
        fprintf(stderr, "sql failed: %s: %s\n", q, e);
        sqlite3_free(e);
        exit(1);
    }
}

// A run with metrics: loss decays from start to end with a deterministic wiggle.
static int64_t add_run(const char *name, const char *method, int r, const char *targets, const char *targets_json,
                       int steps, int total, double l0, double l1, double tps, double rss, int64_t trainable) {
    lb_err_t err = {0};
    store_run_new_t nr = {name, spec_json(name, method, r, targets_json, strcmp(method, "full") ? 1e-3 : 1e-4),
                          method, "experiments/models/t5-tiny", "experiments/data/debsum", r > 0 ? r : -1,
                          r > 0 ? 2.0 * r : NAN, targets, total, -1, NULL, NULL, NULL};
    int64_t id = 0;
    if (store_run_create(st, &nr, &id, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    if (steps) {
        store_metric_t *m = calloc((size_t)steps, sizeof *m);
        for (int i = 0; i < steps; i++) {
            double f = (double)i / (total - 1);
            m[i].step = i + 1;
            m[i].epoch = f;
            m[i].loss = l1 + (l0 - l1) * exp(-5 * f) + 0.15 * sin(i * 1.7) * (1 - f);
            m[i].lr = 1e-3 * (i < 20 ? (i + 1) / 20.0 : 1.0 - f);
            m[i].grad_norm = 1.0 + 0.5 * cos(i * 0.3);
            m[i].tokens_per_s = tps * (1 + 0.05 * sin(i));
            m[i].step_ms = 8 * 304 / tps * 1000;
            m[i].rss_mb = rss * (0.9 + 0.1 * f);
            m[i].tokens = (int64_t)(i + 1) * 8 * 304;
            m[i].wall_s = (i + 1) * m[i].step_ms / 1000;
        }
        if (store_metrics_insert_batch(st, id, m, (size_t)steps, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            exit(1);
        }
        free(m);
    }
    store_run_summary_t s = store_run_summary_unset();
    s.trainable_params = trainable;
    s.total_params = 9700000;
    s.tokens_per_s = tps;
    s.peak_rss_mb = rss;
    if (steps == total && steps) s.final_loss = l1 + (l0 - l1) * exp(-5.0);
    store_run_update_summary(st, id, &s, &err);
    return id;
}

static const char *sources[3] = {
    "summarize: GNU Emacs is the extensible self-documenting text editor. This package contains the "
    "architecture independent infrastructure that is shared by all flavors of Emacs.",
    "summarize: The curl command line tool transfers data with URL syntax, supporting DICT, FILE, FTP, "
    "FTPS, GOPHER, HTTP, HTTPS, IMAP and more.",
    "summarize: This library provides fast JSON parsing and generation for C programs.",
};
static const char *refs[3] = {"GNU Emacs editor (shared, architecture independent infrastructure)",
                              "command line tool for transferring data with URL syntax", "fast JSON library for C"};

static void add_eval(int64_t run, int64_t step, double r1, double r2, double rl, const char *const preds[3]) {
    store_eval_t ev = {0};
    ev.run_id = run;
    ev.step = step;
    snprintf(ev.split, sizeof ev.split, "validation");
    ev.n = 50;
    ev.seconds = 12;
    ev.rouge1 = r1;
    ev.rouge1_low = r1 - 0.03;
    ev.rouge1_high = r1 + 0.028;
    ev.rouge2 = r2;
    ev.rouge2_low = r2 - 0.02;
    ev.rouge2_high = r2 + 0.02;
    ev.rougeL = rl;
    ev.rougeL_low = rl - 0.025;
    ev.rougeL_high = rl + 0.024;
    ev.rougeLsum = rl;
    ev.rougeLsum_low = rl - 0.025;
    ev.rougeLsum_high = rl + 0.024;
    ev.beams = 1;
    ev.max_new_tokens = 48;
    ev.length_penalty = 1;
    store_sample_t sm[3];
    for (int i = 0; i < 3; i++)
        sm[i] = (store_sample_t){i, sources[i], refs[i], preds[i], r1 + 0.1 * (i - 1), r2, rl};
    lb_err_t err = {0};
    if (store_eval_insert(st, &ev, sm, 3, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

static int64_t id_zs, id_r8, id_full, id_r64, id_fail, id_queued;

static void fill_store(void) {
    lb_err_t err = {0};
    id_zs = add_run("zero-shot", "none", 0, NULL, "[]", 0, 0, 0, 0, NAN, 310, 0);
    static const char *const p_zs[3] = {"emacs", "the curl command line tool transfers data", "this library provides fast"};
    add_eval(id_zs, 0, 0.184, 0.052, 0.171, p_zs);
    id_r8 = add_run("lora-r8-qv", "lora", 8, "q,v", "[\"q\",\"v\"]", 400, 400, 6.2, 1.9, 1850, 402, 65536);
    static const char *const p_r8a[3] = {"GNU Emacs text editor", "tool for transferring data", "JSON library"};
    static const char *const p_r8[3] = {"GNU Emacs editor (architecture independent files)",
                                        "command line tool for transferring data with URLs", "fast JSON library for C"};
    add_eval(id_r8, 200, 0.301, 0.122, 0.280, p_r8a);
    add_eval(id_r8, 400, 0.352, 0.161, 0.331, p_r8);
    id_full = add_run("full-finetune", "full", 0, NULL, "[]", 400, 400, 6.2, 1.6, 610, 880, 9700000);
    static const char *const p_full[3] = {"GNU Emacs editor - shared infrastructure",
                                          "command line tool for transferring data with URL syntax", "fast JSON parser for C"};
    add_eval(id_full, 400, 0.384, 0.190, 0.362, p_full);
    id_r64 = add_run("lora-r64-all-linear-with-a-long-name", "lora", 64, "q,k,v,o,wi_0,wi_1,wo",
                     "[\"q\",\"k\",\"v\",\"o\",\"wi_0\",\"wi_1\",\"wo\"]", 120, 400, 6.2, 1.8, 1200, 505, 2621440);
    id_fail = add_run("lora-r4-q", "lora", 4, "q", "[\"q\"]", 12, 400, 6.2, 2.0, 1900, 399, 16384);
    id_queued = add_run("lora-r16-qv", "lora", 16, "q,v", "[\"q\",\"v\"]", 0, 400, 0, 0, NAN, NAN, 131072);
    store_run_set_status(st, id_zs, "running", NULL, &err);
    store_run_set_status(st, id_zs, "done", NULL, &err);
    for (int64_t id = id_r8; id <= id_fail; id++) store_run_set_status(st, id, "running", NULL, &err);
    store_run_set_status(st, id_r8, "done", NULL, &err);
    store_run_set_status(st, id_full, "done", NULL, &err);
    store_run_set_status(st, id_fail, "failed", "loss became NaN at step 12; lower the learning rate (train.lr)", &err);
    store_run_set_pinned(st, id_zs, 1, &err);
    store_run_set_tags(st, id_r8, "demo,qv", &err);
    store_run_set_notes(st, id_r8, "the classic LoRA setting", &err);
    store_run_set_tags(st, id_r64, "sweep", &err);
    // fixed times so that durations and ETAs are the same on every machine
    char q[512];
    snprintf(q, sizeof q,
             "UPDATE runs SET created_at = %.0f + id, started_at = %.0f + 10 * id,"
             " finished_at = CASE WHEN status IN ('done','failed') THEN %.0f + 10 * id + 60 * id END,"
             " heartbeat = %.0f + 900", T0, T0, T0, T0);
    sql(q);
    sql("UPDATE runs SET started_at = NULL, finished_at = NULL, heartbeat = NULL WHERE status = 'queued'");
}

static app_t *new_app(void) {
    app_t *a = calloc(1, sizeof *a);
    char sortfile[300];
    snprintf(sortfile, sizeof sortfile, "%s/ui-sort", ws);
    unlink(sortfile);  // each test starts from the default sort (id, newest first)
    app_init(a, st, ws, 0);
    // what the title shows and where presets are looked for must not depend on the machine
    free(a->workspace);
    a->workspace = xstrdup("/tmp/lorabench-test");
    snprintf(a->presets_dir, sizeof a->presets_dir, "tests/fixtures/tui/no-presets");
    a->user_presets_dir[0] = 0;  // not the tester's ~/.config
    a->now = T0 + 1000;
    a->fixed_now = 1;
    return a;
}

static void free_app(app_t *a) {
    app_free(a);
    free(a);
}

static void snap(app_t *a, const char *name, int w, int h, int ascii) {
    grid_t *g = grid_new(w, h, ascii);
    a->ascii = ascii;
    app_draw(a, g);
    char full[128];
    snprintf(full, sizeof full, "%s_%dx%d%s", name, w, h, ascii ? "_ascii" : "");
    tui_expect_golden(full, g);
    grid_free(g);
}

static char *screen_text(app_t *a, int w, int h) {
    grid_t *g = grid_new(w, h, 0);
    app_draw(a, g);
    char *t = grid_dump_text(g);
    grid_free(g);
    return t;
}

static int row_of(app_t *a, int64_t id) {
    for (size_t i = 0; i < a->nruns; i++)
        if (a->runs[i].id == id) return (int)i;
    return -1;
}

static void goto_run(app_t *a, int64_t id) {
    a->runs_view.cursor = row_of(a, id);
}

static void test_runs_screen(void) {
    app_t *a = new_app();
    EXPECT(a->nruns == 6);
    EXPECT(a->pinned_id == id_zs);
    // newest first: the queued run on top
    EXPECT(a->runs[0].id == id_queued);
    snap(a, "runs", 80, 24, 0);
    snap(a, "runs", 160, 48, 0);
    snap(a, "runs", 80, 24, 1);
    char *t = screen_text(a, 160, 48);
    // the running run shows its progress: 120 of 400 steps
    EXPECTF(strstr(t, " 30%") != NULL, "%s", t);
    EXPECT(strstr(t, "0.352"));  // lora-r8's latest ROUGE-1
    EXPECT(strstr(t, "lora-r64-all-linear-w… "));  // truncated at the column's widest
    free(t);
    goto_run(a, id_fail);
    t = screen_text(a, 80, 24);
    EXPECT(strstr(t, "error: loss became NaN"));
    free(t);
    // issue 20, finding 1: the footer lists every key of the runs screen, even at 80 columns
    t = screen_text(a, 80, 24);
    const char *bar = t;
    for (const char *c = t; *c; c++)
        if (*c == '\n' && c[1]) bar = c + 1;
    static const char *const all[] = {"Enter ", " c ", " p ", " n ", " w ", " / ", " s ", " S ", " t ", " m ", " K ",
                                      " r ", " D ", " u ", "F1/?", "q/F10"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) EXPECTF(strstr(bar, all[i]) != NULL, "%s in %s", all[i], bar);
    free(t);
    // help overlay from the key table
    app_key(a, '?');
    EXPECT(a->help);
    snap(a, "runs_help", 80, 24, 0);
    app_key(a, TK_ESC);
    EXPECT(!a->help && !a->quit);
    // too small
    snap(a, "too_small", 60, 20, 0);
    free_app(a);
}

static void test_sort_filter_select(void) {
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);  // D removes runs/<id> under it
    // s moves the sort to the next column (name, ascending)
    app_key(a, 's');
    EXPECT(!strcmp(a->sort_key, "name") && !a->sort_desc);
    EXPECT(!strcmp(a->runs[0].name, "full-finetune") && !strcmp(a->runs[5].name, "zero-shot"));
    app_key(a, 'S');
    EXPECT(a->sort_desc && !strcmp(a->runs[0].name, "zero-shot"));
    // issue 20, finding 11: the sort is remembered per workspace
    {
        app_t *b = calloc(1, sizeof *b);
        app_init(b, st, ws, 0);
        EXPECTF(!strcmp(b->sort_key, "name") && b->sort_desc && !strcmp(b->runs[0].name, "zero-shot"), "%s", b->sort_key);
        app_free(b);
        free(b);
    }
    // a filter typed so far may end in a space: the expression is still one string
    {
        char expr[32];
        memset(expr, 'x', sizeof expr);
        app_filter_expr("r>=8 ", expr, sizeof expr);
        EXPECTF(!strcmp(expr, "r>=8 "), "%.32s", expr);
        memset(expr, 'x', sizeof expr);
        app_filter_expr("qv  ", expr, sizeof expr);
        EXPECTF(!strcmp(expr, "name~qv  "), "%.32s", expr);
    }
    // filter with the store's expressions
    app_key(a, '/');
    EXPECT(a->prompt == PROMPT_INPUT);
    for (const char *p = "method=lora rouge1>0.3"; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECTF(a->nruns == 1 && a->runs[0].id == id_r8, "%zu", a->nruns);
    char *t = screen_text(a, 80, 24);
    EXPECT(strstr(t, "filter: method=lora rouge1>0.3"));
    free(t);
    // issue 20, finding 3: the pinned baseline survives a filter that hides it, and c on a
    // run compares with it
    EXPECTF(a->pinned_id == id_zs, "%lld", (long long)a->pinned_id);
    t = screen_text(a, 160, 48);
    EXPECTF(strstr(t, "baseline #1 zero-shot (filtered out)") != NULL, "%s", t);
    free(t);
    app_key(a, 'c');
    EXPECT(app_screen(a) == SCR_COMPARE && a->ncompare == 2 && a->compare_ids[0] == id_zs);
    t = screen_text(a, 160, 48);
    EXPECTF(strstr(t, "zero-shot (pinned baseline)") != NULL, "%s", t);
    free(t);
    app_key(a, TK_ESC);
    // a bad filter leaves the old one and says why
    app_key(a, '/');
    for (int i = 0; i < 40; i++) app_key(a, TK_BACKSPACE);
    for (const char *p = "method=lora bogus=1"; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECT(a->nruns == 1 && !strcmp(a->filter, "method=lora rouge1>0.3"));
    EXPECTF(a->msg_style == ST_ERROR && strstr(a->msg, "bogus"), "%s", a->msg);
    // issue 20, finding 11: the list follows the typing; a bare word matches names; the
    // input edits with Left/Home/Ctrl-U; Esc puts the filter from before back
    app_key(a, '/');
    app_key(a, 0x15);
    EXPECTF(a->nruns == 6 && !a->filter[0], "%zu", a->nruns);  // cleared: every run, live
    for (const char *p = "r8"; *p; p++) app_key(a, *p);
    EXPECTF(a->nruns == 1 && a->runs[0].id == id_r8, "%zu", a->nruns);
    app_key(a, TK_HOME);
    for (const char *p = "lora-"; *p; p++) app_key(a, *p);
    app_key(a, TK_END);
    app_key(a, TK_LEFT);
    app_key(a, TK_BACKSPACE);  // lora-r8 -> lora-8
    EXPECTF(!strcmp(a->prompt_input, "lora-8") && a->nruns == 0, "%s %zu", a->prompt_input, a->nruns);
    app_key(a, TK_ESC);
    EXPECTF(!strcmp(a->filter, "method=lora rouge1>0.3") && a->nruns == 1, "%s", a->filter);
    // Esc on the input cancels it; an empty filter shows everything
    app_key(a, '/');
    for (int i = 0; i < 40; i++) app_key(a, TK_BACKSPACE);
    app_key(a, TK_ENTER);
    EXPECT(a->nruns == 6);
    // select two runs and compare them
    app_key(a, 's');  // sort by status
    a->sort_key = "id";
    a->sort_desc = 0;
    app_data_refresh(a, 1);
    goto_run(a, id_r8);
    app_key(a, ' ');
    EXPECT(a->runs_view.cursor == row_of(a, id_full));  // Space moves down
    app_key(a, ' ');
    EXPECT(a->nselected == 2 && app_is_selected(a, id_r8) && app_is_selected(a, id_full));
    app_key(a, 'c');
    EXPECT(app_screen(a) == SCR_COMPARE && a->ncompare == 2);
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS);
    // pin moves the baseline
    goto_run(a, id_r8);
    app_key(a, 'p');
    EXPECT(a->pinned_id == id_r8);
    app_key(a, 'p');
    EXPECT(a->pinned_id == 0);
    // delete asks first; n keeps the run, y deletes it
    goto_run(a, id_fail);
    app_key(a, 'D');
    EXPECT(a->prompt == PROMPT_CONFIRM && strstr(a->prompt_text, "lora-r4-q"));
    app_key(a, 'n');
    EXPECT(a->nruns == 6);
    goto_run(a, id_fail);
    app_key(a, 'D');
    app_key(a, 'y');
    EXPECTF(a->nruns == 5 && row_of(a, id_fail) < 0, "%s", a->msg);
    // a running run cannot be deleted
    goto_run(a, id_r64);
    app_key(a, 'D');
    EXPECT(a->prompt == PROMPT_NONE && strstr(a->msg, "cancel it first"));
    // tags through the input line
    goto_run(a, id_full);
    app_key(a, 't');
    for (const char *p = "baseline"; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECT(!strcmp(app_run_by_id(a, id_full)->tags, "baseline"));
    free_app(a);
}

static void test_export(void) {
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    app_key(a, 'e');
    EXPECTF(a->msg_style == ST_GOOD && strstr(a->msg, "/exports/runs-"), "%s", a->msg);
    const char *p = strstr(a->msg, ws);
    lb_err_t err = {0};
    char *csv = p ? lb_read_file(p, NULL, &err) : NULL;
    EXPECT(csv != NULL);
    if (csv) {
        EXPECT(!strncmp(csv, "id,name,status,method,r,alpha,targets,trainable,", 48));
        EXPECTF(strstr(csv, ",lora-r8-qv,done,lora,8,16,\"q,v\",65536,") != NULL, "%s", csv);
        int lines = 0;
        for (char *c = csv; *c; c++) lines += *c == '\n';
        EXPECT(lines == 7);
    }
    free(csv);
    free_app(a);
}

static void test_monitor_screen(void) {
    app_t *a = new_app();
    goto_run(a, id_r64);
    app_key(a, TK_ENTER);
    EXPECT(app_screen(a) == SCR_MONITOR && a->monitor_id == id_r64);
    snap(a, "monitor_running", 80, 24, 0);
    snap(a, "monitor_running", 160, 48, 0);
    char *t = screen_text(a, 80, 24);
    // started at T0+40, now T0+1000: 960 s for 120 of 400 steps -> 2240 s left
    EXPECTF(strstr(t, "step 120/400  elapsed 16m00s  ETA 37m20s") != NULL, "%s", t);
    free(t);
    // cancel asks first, and n leaves it running
    app_key(a, 'K');
    EXPECT(a->prompt == PROMPT_CONFIRM && strstr(a->prompt_text, "[y/N]"));
    snap(a, "monitor_cancel_prompt", 80, 24, 0);
    app_key(a, 'N');
    EXPECT(a->prompt == PROMPT_NONE && strstr(a->msg, "nothing changed"));
    // and y runs `lorabench cancel ID`, here and on the runs screen alike
    a->spawn_record = 1;
    char want[64];
    snprintf(want, sizeof want, "cancel %lld", (long long)id_r64);
    app_key(a, 'K');
    app_key(a, 'y');
    EXPECTF(!strcmp(a->spawned, want) && strstr(a->msg, "cancelling run #") && strstr(a->msg, "requested"), "%s | %s",
            a->spawned, a->msg);
    app_key(a, TK_ESC);
    a->spawned[0] = 0;
    goto_run(a, id_r64);
    app_key(a, 'K');
    app_key(a, 'y');
    EXPECTF(app_screen(a) == SCR_RUNS && !strcmp(a->spawned, want), "%s", a->spawned);
    a->spawn_record = 0;
    goto_run(a, id_r8);
    app_key(a, TK_ENTER);
    snap(a, "monitor_done", 80, 24, 0);
    snap(a, "monitor_done", 160, 48, 0);
    app_key(a, 'l');  // log y, ASCII plot
    snap(a, "monitor_done_logy", 80, 24, 1);
    // issue 20, finding 13: the side panel is there at 100 columns
    t = screen_text(a, 100, 30);
    EXPECTF(strstr(t, "learning rate, speed, memory") != NULL, "%s", t);
    free(t);
    t = screen_text(a, 160, 48);
    EXPECT(strstr(t, "R-1 0.352 [0.322, 0.380]"));
    EXPECT(strstr(t, "fast JSON library for C"));
    free(t);
    free_app(a);
}

static void test_compare_screen(void) {
    app_t *a = new_app();
    a->sort_key = "id";
    a->sort_desc = 0;
    app_data_refresh(a, 1);
    goto_run(a, id_r8);
    app_key(a, ' ');
    app_key(a, ' ');
    goto_run(a, id_r64);
    app_key(a, ' ');
    app_key(a, 'c');
    EXPECT(app_screen(a) == SCR_COMPARE && a->ncompare == 3);
    snap(a, "compare_metrics", 80, 24, 0);
    snap(a, "compare_metrics", 160, 48, 0);
    char *t = screen_text(a, 160, 48);
    // Δ against the pinned zero-shot run (ROUGE-1 0.184): +0.168 and +0.200, with signs
    EXPECTF(strstr(t, "+0.168") && strstr(t, "+0.200"), "%s", t);
    EXPECT(strstr(t, "pinned baseline"));
    // the trainable parameters have their column (issue 20): 65.5k for r=8, 9.7M for full
    EXPECTF(strstr(t, " trainable ") && strstr(t, "+0.160     65.5k") && strstr(t, "+0.191      9.7M"), "%s", t);
    free(t);
    app_key(a, '2');
    snap(a, "compare_config", 80, 24, 0);
    app_key(a, 'd');
    EXPECT(a->cmp_diff_only);
    snap(a, "compare_config_diff", 160, 48, 0);
    t = screen_text(a, 160, 48);
    EXPECT(strstr(t, "lora.r") && strstr(t, "method") && !strstr(t, "dataset.path"));
    free(t);
    app_key(a, '3');
    snap(a, "compare_curves", 80, 24, 0);
    app_key(a, '+');
    app_key(a, 'x');
    EXPECT(a->cmp_xaxis == XAXIS_TOKENS && fabs(a->smooth - 0.7) < 1e-9);
    snap(a, "compare_curves_tokens", 160, 48, 0);
    app_key(a, '4');
    snap(a, "compare_samples", 80, 24, 0);
    app_key(a, TK_RIGHT);
    snap(a, "compare_samples_2", 160, 48, 0);
    free_app(a);
}

static int focus_label(app_t *a, const char *label) {
    for (int i = 0; i < 40 && strcmp(a->form[a->form_focus].label, label); i++) app_key(a, TK_DOWN);
    return !strcmp(a->form[a->form_focus].label, label);
}

static void test_new_run_screen(void) {
    app_t *a = new_app();
    app_key(a, 'n');
    EXPECT(app_screen(a) == SCR_NEW);
    // type a name containing q (a form takes keys before the shortcuts)
    for (const char *p = "qv-test"; *p; p++) app_key(a, *p);
    EXPECT(!a->quit);
    // point the model field at the fixture's config.json
    app_key(a, TK_DOWN);
    for (int i = 0; i < 40; i++) app_key(a, TK_BACKSPACE);
    for (const char *p = "tests/fixtures/hf/t5-gated-a"; *p; p++) app_key(a, *p);
    // of base + adapter, as PEFT and the runs list count (tests/test_facts.c: = a real setup)
    EXPECTF(strstr(a->form_info[0], "trainable 12,288 of 287,744 (4.270%) in 12 modules") != NULL, "%s", a->form_info[0]);
    EXPECTF(!strcmp(a->form_info[1], "q: 64×64 W → 8·(64+64) = 1,024 trainable, 75% fewer"), "%s", a->form_info[1]);
    snap(a, "new_run", 80, 24, 0);
    snap(a, "new_run", 160, 48, 0);
    // the estimate follows the Layers field: block 1 only halves the modules
    for (int i = 0; i < 20 && strcmp(a->form[a->form_focus].label, "Layers"); i++) app_key(a, TK_DOWN);
    EXPECT(!strcmp(a->form[a->form_focus].label, "Layers"));
    app_key(a, 0x15);
    app_key(a, '1');
    EXPECTF(strstr(a->form_info[0], "trainable 6,144 of 281,600 (2.182%) in 6 modules") != NULL, "%s", a->form_info[0]);
    free_app(a);
}

// Issue 20, finding 8: what the run would refuse shows under its field and Start refuses it
// (a block past the model's depth, a path that is not a data set); a run of epochs says
// how long in total, from the data set's size.
static void test_form_field_checks(void) {
    app_t *a = new_app();
    snprintf(a->default_model, sizeof a->default_model, "tests/fixtures/hf/t5-gated-a");
    a->spawn_record = 1;
    app_key(a, 'n');
    int found = 0;
    for (int i = 0; i < a->nform_info; i++) found |= strstr(a->form_info[i], "Start runs 1 run, about ") && strstr(a->form_info[i], ": 1 epoch of 2500 steps");
    EXPECT(found);
    EXPECT(focus_label(a, "Epochs"));
    app_key(a, 0x15);
    app_key(a, '4');
    found = 0;
    for (int i = 0; i < a->nform_info; i++) found |= strstr(a->form_info[i], ": 4 epochs of 2500 steps") != NULL;
    EXPECT(found);
    EXPECT(a->form_error_field < 0);
    // t5-gated-a has 2 blocks per stack
    EXPECT(focus_label(a, "Layers"));
    app_key(a, 0x15);
    for (const char *p = "0,2"; *p; p++) app_key(a, *p);
    EXPECTF(a->form_error_field >= 0 && !strcmp(a->form[a->form_error_field].label, "Layers"), "%d", a->form_error_field);
    char *t = screen_text(a, 80, 24);
    const char *lay = strstr(t, " Layers "), *msg = strstr(t, "block 2 is past the model's 2 blocks; use 0..1 or all");
    // the message is on the line right under the field
    EXPECTF(lay && msg && strchr(lay, '\n') < msg && strchr(strchr(lay, '\n') + 1, '\n') > msg, "%s", t);
    free(t);
    app_key(a, 0x13);  // Ctrl-S refuses and stays
    EXPECTF(app_screen(a) == SCR_NEW && strstr(a->msg, "Layers: block 2 is past") && !a->spawned[0], "%s", a->msg);
    app_key(a, 0x15);
    app_key(a, '1');
    EXPECT(a->form_error_field < 0);
    // a model folder given as the data set
    EXPECT(focus_label(a, "Data set"));
    app_key(a, 0x15);
    for (const char *p = "tests/fixtures/hf/t5-gated-a"; *p; p++) app_key(a, *p);
    EXPECTF(a->form_error_field >= 0 && !strcmp(a->form[a->form_error_field].label, "Data set"), "%d", a->form_error_field);
    EXPECTF(strstr(a->form_error, "dataset.path") != NULL, "%s", a->form_error);
    t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "dataset.path") != NULL, "%s", t);
    free(t);
    app_key(a, 0x13);
    EXPECTF(app_screen(a) == SCR_NEW && strstr(a->msg, "Data set: dataset.path") && !a->spawned[0], "%s", a->msg);
    free_app(a);
}

static void test_sweep_screen(void) {
    lb_err_t err = {0};
    int64_t sw = 0;
    EXPECT(store_sweep_create(st, "rank-sweep", "{\"grid\":{\"lora.r\":[4,8]}}", &sw, &err) == 0);
    char q[256];
    snprintf(q, sizeof q, "UPDATE runs SET sweep_id = %lld WHERE id IN (%lld, %lld, %lld)", (long long)sw,
             (long long)id_r8, (long long)id_r64, (long long)id_queued);
    sql(q);
    store_run_set_pinned(st, id_zs, 1, &err);
    app_t *a = new_app();
    app_key(a, 'w');
    EXPECT(app_screen(a) == SCR_SWEEP);
    snap(a, "sweep", 80, 24, 0);
    snap(a, "sweep", 160, 48, 0);
    char *t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "3 runs, 1 queued, 1 running, 1 done") != NULL, "%s", t);
    // the teaching picture (issue 20): ROUGE-L with its interval by rank, in rank order, with
    // the trainable parameters, and the pinned zero-shot and the full fine-tune as references
    EXPECTF(strstr(t, "ROUGE-L with 95% interval by rank") != NULL, "%s", t);
    EXPECTF(strstr(t, "0.331 [0.306,0.355]") != NULL, "%s", t);
    const char *r8 = strstr(t, "r=8 "), *r16 = strstr(t, "r=16 "), *r64 = strstr(t, "r=64 ");
    EXPECTF(r8 && r16 && r64 && r8 < r16 && r16 < r64, "%s", t);
    EXPECTF(strstr(t, "zero-shot #1 0.171") && strstr(t, "full fine-tune #3 0.362") && strstr(t, "2.6M"), "%s", t);
    free(t);
    // v shows the loss curves, then ROUGE during training (r=8 was evaluated at 200 and 400)
    app_key(a, 'v');
    t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "loss, EMA") && strstr(t, "A r=8") && strstr(t, "B r=64"), "%s", t);
    free(t);
    app_key(a, 'v');
    snap(a, "sweep_rouge_steps", 80, 24, 0);
    t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "ROUGE-L during training") && strstr(t, "0.331") && strstr(t, "0.28"), "%s", t);
    free(t);
    // a sweep whose LoRA runs share r and differ in targets is drawn by target set
    int64_t sw2 = 0;
    EXPECT(store_sweep_create(st, "targets", "{\"grid\":{\"lora.targets\":[[\"q\"],[\"q\",\"v\"]]}}", &sw2, &err) == 0);
    int64_t tq = add_run("t-q", "lora", 8, "q", "[\"q\"]", 0, 10, 0, 0, NAN, NAN, 32768);
    snprintf(q, sizeof q, "UPDATE runs SET sweep_id = %lld WHERE id IN (%lld, %lld)", (long long)sw2, (long long)tq,
             (long long)id_r8);
    sql(q);
    app_data_refresh(a, 1);
    a->sweep_id = sw2;
    a->sweep_panel = 0;
    t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "ROUGE-L with 95% interval by target modules") && strstr(t, " q,v ") && strstr(t, "32.8k"), "%s", t);
    free(t);
    snprintf(q, sizeof q, "UPDATE runs SET sweep_id = %lld WHERE id = %lld", (long long)sw, (long long)id_r8);
    sql(q);
    snprintf(q, sizeof q, "DELETE FROM runs WHERE id = %lld", (long long)tq);
    sql(q);
    free_app(a);
}


// Issue 20, finding 5: letters never fire shortcuts from a non-text field, Enter moves to the
// next field, only Start or Ctrl-S starts, leaving a changed form asks.
static void test_form_keys(void) {
    app_t *a = new_app();
    app_key(a, 'n');
    // issue 20, finding 13: the help box is as wide as its lines need (not fixed at 72
    // columns), and a line too long for the screen wraps instead of being cut
    app_key(a, TK_F1);
    char *t = screen_text(a, 160, 48);
    EXPECTF(strstr(t, "quit (asks when a field was changed); q types into text fields") != NULL, "%s", t);
    free(t);
    t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "q types into text ") && strstr(t, "              fields "), "%s", t);
    free(t);
    app_key(a, TK_ESC);
    EXPECT(focus_label(a, "Method"));
    int method = a->form[a->form_focus].choice;
    app_key(a, 'q');
    EXPECT(!a->quit && app_screen(a) == SCR_NEW && a->form[a->form_focus].choice == method);
    EXPECTF(strstr(a->msg, "letters type only into text fields") != NULL, "%s", a->msg);
    // Enter on a field moves to the next one and starts nothing
    app_key(a, TK_ENTER);
    EXPECTF(!strcmp(a->form[a->form_focus].label, "Rank r") && app_screen(a) == SCR_NEW, "%s",
            a->form[a->form_focus].label);
    // e with Start focused exports nothing
    EXPECT(focus_label(a, "Start"));
    a->msg[0] = 0;
    app_key(a, 'e');
    EXPECTF(!strstr(a->msg, "exported"), "%s", a->msg);
    // a changed form asks before Esc leaves it; n stays, y leaves
    EXPECT(focus_label(a, "Method"));
    app_key(a, TK_RIGHT);
    app_key(a, TK_ESC);
    EXPECT(a->prompt == PROMPT_CONFIRM && app_screen(a) == SCR_NEW);
    app_key(a, 'n');
    EXPECT(app_screen(a) == SCR_NEW);
    app_key(a, TK_F10);
    EXPECT(a->prompt == PROMPT_CONFIRM && !a->quit);
    app_key(a, 'n');
    EXPECT(!a->quit);
    app_key(a, TK_ESC);
    app_key(a, 'y');
    EXPECT(app_screen(a) == SCR_RUNS && !a->quit);
    // an unchanged form leaves at once
    app_key(a, 'n');
    app_key(a, TK_ESC);
    EXPECT(app_screen(a) == SCR_RUNS && a->prompt == PROMPT_NONE);
    free_app(a);
}

// Issue 20, findings 1 and 10: the quick-demo preset's grid runs from the form (the form says
// how many runs and about how long), and after Start the cursor goes to the new run.
static void test_form_grid(void) {
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    snprintf(a->presets_dir, sizeof a->presets_dir, "experiments/presets");
    snprintf(a->default_model, sizeof a->default_model, "tests/fixtures/hf/t5-gated-a");
    a->spawn_record = 1;
    app_key(a, 'n');
    EXPECT(a->form_grid != NULL && a->form[a->nform - 2].checked);
    int found = 0;
    for (int i = 0; i < a->nform_info; i++)
        found |= strstr(a->form_info[i], "Start runs the preset's grid: 3 runs, about ") &&
                 strstr(a->form_info[i], "method+train.lr = none,0.003 | lora,0.003 | full,0.001");
    EXPECT(found);
    if (!found)
        for (int i = 0; i < a->nform_info; i++) fprintf(stderr, "  info: %s\n", a->form_info[i]);
    // changing Method by hand unticks the grid (it would override the choice)
    EXPECT(focus_label(a, "Method"));
    app_key(a, TK_RIGHT);
    EXPECT(!a->form[a->nform - 2].checked && strstr(a->msg, "Grid unticked"));
    found = 0;
    for (int i = 0; i < a->nform_info; i++) found |= strstr(a->form_info[i], "Start runs 1 run, about ") != NULL;
    EXPECT(found);
    app_key(a, TK_LEFT);
    EXPECT(focus_label(a, "Grid"));
    app_key(a, ' ');
    EXPECT(a->form[a->form_focus].checked);
    // Ctrl-S writes the spec with the grid and spawns train --detach
    int64_t last = app_last_run_id(a);
    app_key(a, 0x13);
    EXPECTF(app_screen(a) == SCR_RUNS && strstr(a->msg, "starting the grid of quick-demo: 3 runs"), "%s", a->msg);
    EXPECT(a->follow_after == last);
    EXPECTF(!strncmp(a->spawned, "train ", 6) && strstr(a->spawned, " --detach"), "%s", a->spawned);
    const char *p = strstr(a->msg, "(spec ");
    char path[512] = "";
    if (p) sscanf(p + 6, "%511[^)]", path);
    lb_err_t err = {0};
    char *json = path[0] ? lb_read_file(path, NULL, &err) : NULL;
    EXPECTF(json && strstr(json, "\"grid\"") && strstr(json, "\"quick-demo\""), "%s", json ? json : path);
    free(json);
    // the worker is not awaited here: the runs it records are simulated, as another
    // process would add them; the cursor goes to the first new one
    int64_t nid = add_run("quick-demo-none", "none", 0, NULL, "[]", 0, 0, 0, 0, NAN, NAN, 0);
    add_run("quick-demo-lora", "lora", 8, "q,v", "[\"q\",\"v\"]", 0, 60, 0, 0, NAN, NAN, 1);
    app_data_refresh(a, 1);
    EXPECTF(a->runs[a->runs_view.cursor].id == nid, "%lld", (long long)a->runs[a->runs_view.cursor].id);
    EXPECT(a->follow_after == -1);
    free_app(a);
}

// Issue 20, finding 8: loading lora-vs-full shows LoRA with the grid's LoRA learning rate
// (3e-3), not the preset's base one (2e-4, the full fine-tune's); Method full then shows the
// full fine-tune's, and zero-shot's grid point its own.
static void test_form_grid_lr(void) {
    app_t *a = new_app();
    snprintf(a->presets_dir, sizeof a->presets_dir, "experiments/presets");
    snprintf(a->default_model, sizeof a->default_model, "tests/fixtures/hf/t5-gated-a");
    app_key(a, 'n');
    int k = 0;
    while (k < a->npresets && strcmp(a->presets[k], "lora-vs-full")) k++;
    EXPECT(k < a->npresets);
    a->form[0].choice = k;
    app_key(a, TK_F1 + 4);  // F5 loads it
    EXPECTF(strstr(a->msg, "loaded preset lora-vs-full"), "%s", a->msg);
    EXPECT(focus_label(a, "Method"));
    EXPECTF(!strcmp(a->form[a->form_focus].choices[a->form[a->form_focus].choice], "lora"), "%d", a->form[a->form_focus].choice);
    EXPECT(focus_label(a, "Learning rate"));
    EXPECTF(!strcmp(a->form[a->form_focus].value, "0.003"), "lr %s", a->form[a->form_focus].value);
    EXPECT(focus_label(a, "Method"));
    app_key(a, TK_RIGHT);  // full
    EXPECT(focus_label(a, "Learning rate"));
    EXPECTF(!strcmp(a->form[a->form_focus].value, "0.0002"), "lr %s", a->form[a->form_focus].value);
    free_app(a);
}

static void write_preset(const char *dir, const char *name, const char *method, int r, double lr) {
    char cwd[512], path[1200], cmd[1400];
    if (!getcwd(cwd, sizeof cwd)) return;
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    EXPECT(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "{\"name\":\"%s\",\"base_model\":\"%s/tests/fixtures/hf/t5-gated-a\",\"dataset\":{\"path\":\"%s/experiments/data/debsum\"},"
               "\"method\":\"%s\",\"lora\":{\"r\":%d,\"alpha\":%d},\"train\":{\"lr\":%g,\"max_steps\":20}}\n",
            name, cwd, cwd, method, r, 2 * r, lr);
    fclose(f);
}

static const char *field_value(app_t *a, const char *label) {
    for (int i = 0; i < a->nform; i++)
        if (!strcmp(a->form[i].label, label))
            return a->form[i].kind == FIELD_CHOICE ? a->form[i].choices[a->form[i].choice] : a->form[i].value;
    return "?";
}

// Issue 20, the lecture: n with one run selected clones its spec into the form; the user's
// presets (~/.config/lorabench/presets, <workspace>/presets) are listed beside the bundled
// ones; Ctrl-O opens a spec file into the form or a folder of presets into the list.
static void test_clone_and_presets(void) {
    char upre[400], wpre[400], other[400], spec[500];
    snprintf(upre, sizeof upre, "%s/config/lorabench/presets", ws);
    snprintf(wpre, sizeof wpre, "%s/presets", ws);
    snprintf(other, sizeof other, "%s/lecture-2", ws);
    write_preset(upre, "lecture-1", "lora", 4, 0.002);
    write_preset(wpre, "shared-r16", "lora", 16, 0.0005);
    write_preset(other, "week-3", "full", 8, 0.0001);
    snprintf(spec, sizeof spec, "%s/week-3.json", other);
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    snprintf(a->presets_dir, sizeof a->presets_dir, "experiments/presets");
    snprintf(a->user_presets_dir, sizeof a->user_presets_dir, "%s", upre);
    snprintf(a->default_model, sizeof a->default_model, "tests/fixtures/hf/t5-gated-a");
    // clone: lora-r8-qv (r 8, alpha 16, lr 1e-3) selected
    a->nselected = 0;
    app_toggle_selected(a, id_r8);
    app_key(a, 'n');
    EXPECTF(app_screen(a) == SCR_NEW && strstr(a->msg, "from run #2's spec (lora-r8-qv)"), "%s", a->msg);
    EXPECTF(!strcmp(field_value(a, "Method"), "lora") && !strcmp(field_value(a, "Rank r"), "8") &&
                !strcmp(field_value(a, "Alpha"), "16") && !strcmp(field_value(a, "Learning rate"), "0.001") &&
                !strcmp(field_value(a, "Max steps"), "400") && !strcmp(field_value(a, "Name"), ""),
            "%s %s %s %s", field_value(a, "Method"), field_value(a, "Rank r"), field_value(a, "Learning rate"),
            field_value(a, "Max steps"));
    app_key(a, TK_ESC);  // unchanged: leaves without asking
    EXPECT(app_screen(a) == SCR_RUNS);
    // the user's and the workspace's presets beside the bundled ones
    a->nselected = 0;
    app_key(a, 'n');
    int u = -1, w = -1, q = -1;
    for (int i = 0; i < a->npresets; i++) {
        if (!strcmp(a->presets[i], "lecture-1 (yours)")) u = i;
        if (!strcmp(a->presets[i], "shared-r16 (workspace)")) w = i;
        if (!strcmp(a->presets[i], "quick-demo")) q = i;
    }
    EXPECTF(q == 0 && u > 0 && w > u, "quick-demo %d, lecture-1 %d, shared-r16 %d of %d", q, u, w, a->npresets);
    a->form[0].choice = w;
    app_key(a, TK_F1 + 4);
    EXPECTF(strstr(a->msg, "loaded preset shared-r16 (workspace)") && !strcmp(field_value(a, "Rank r"), "16") &&
                !strcmp(field_value(a, "Learning rate"), "0.0005"),
            "%s / r %s", a->msg, field_value(a, "Rank r"));
    // Ctrl-O: a spec file
    app_key(a, 0x0f);
    EXPECT(a->prompt == PROMPT_INPUT);
    for (const char *p = spec; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECTF(strstr(a->msg, "loaded the spec") && !strcmp(field_value(a, "Method"), "full") &&
                !strcmp(field_value(a, "Learning rate"), "0.0001"),
            "%s", a->msg);
    // Ctrl-O: a folder of presets joins the list, shown in the Preset field
    app_key(a, 0x0f);
    for (const char *p = other; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECTF(strstr(a->msg, "1 preset of") && !strcmp(a->presets[a->form[0].choice], "week-3 (lecture-2)"), "%s", a->msg);
    // a path that is neither
    app_key(a, 0x0f);
    for (const char *p = "/nonexistent/x.json"; *p; p++) app_key(a, *p);
    app_key(a, TK_ENTER);
    EXPECTF(a->msg_style == ST_ERROR && strstr(a->msg, "/nonexistent/x.json: no such file or folder"), "%s", a->msg);
    free_app(a);
}

// The screen line (0-based) and column where text first appears, found on the drawn text.
static int find_on_screen(app_t *a, int w, int h, const char *text, int *x) {
    char *t = screen_text(a, w, h);
    int y = -1;
    char *p = strstr(t, text);
    if (p) {
        y = 0;
        char *line = t;
        for (char *c = t; c < p; c++)
            if (*c == '\n') {
                y++;
                line = c + 1;
            }
        *x = 0;
        for (const char *c = line; c < p; c++) *x += ((unsigned char)*c & 0xC0) != 0x80;
    }
    free(t);
    return y;
}

// Issue 20, finding 4: a click selects the clicked row (not the one below), a click on a
// column title sorts by it, a click on a tab switches to it.
static void test_clicks(void) {
    app_t *a = new_app();
    int x = 0, y = find_on_screen(a, 160, 48, "lora-r8-qv", &x);
    EXPECT(y > 0);
    app_click(a, x, y);
    EXPECTF(a->runs[a->runs_view.cursor].id == id_r8, "%s", a->runs[a->runs_view.cursor].name);
    y = find_on_screen(a, 160, 48, "full-finetune", &x);
    app_click(a, x + 3, y);
    EXPECT(a->runs[a->runs_view.cursor].id == id_full);
    // the header: name sorts by name, a second click reverses
    y = find_on_screen(a, 160, 48, "name ", &x);
    app_click(a, x + 1, y);
    EXPECTF(!strcmp(a->sort_key, "name") && !a->sort_desc, "%s", a->sort_key);
    app_click(a, x + 1, y);
    EXPECT(!strcmp(a->sort_key, "name") && a->sort_desc);
    EXPECT(!strcmp(a->runs[0].name, "zero-shot"));
    // compare tabs
    a->nselected = 0;
    app_toggle_selected(a, id_r8);
    app_toggle_selected(a, id_full);
    app_key(a, 'c');
    EXPECT(app_screen(a) == SCR_COMPARE);
    y = find_on_screen(a, 160, 48, "3 Curves", &x);
    app_click(a, x + 2, y);
    EXPECT(a->cmp_tab == CMP_CURVES);
    y = find_on_screen(a, 160, 48, "2 Config", &x);
    app_click(a, x, y);
    EXPECT(a->cmp_tab == CMP_CONFIG);
    free_app(a);
}

// Issue 20, finding 2: twelve runs (the rank sweep and target-modules tables) compare whole:
// the metrics table, the bars and the curves' legend have all of them; a limit hit is said.
static void test_compare_many(void) {
    app_t *a = new_app();
    int64_t ids[20];
    for (int i = 0; i < 14; i++) {
        char name[32];
        snprintf(name, sizeof name, "sweep-r%d", i + 1);
        ids[i] = add_run(name, "lora", i + 1, "q,v", "[\"q\",\"v\"]", 40, 40, 6, 2 + 0.1 * i, 1000, 300, 1000 * (i + 1));
    }
    app_data_refresh(a, 1);
    a->nselected = 0;
    for (int i = 0; i < 12; i++) app_toggle_selected(a, ids[i]);
    app_key(a, 'c');
    EXPECTF(app_screen(a) == SCR_COMPARE && a->ncompare == 12, "%d", a->ncompare);
    char *t = screen_text(a, 160, 48);
    EXPECTF(strstr(t, "L #") && strstr(t, "sweep-r12"), "%s", t);  // the 12th run's row
    free(t);
    app_key(a, '3');
    t = screen_text(a, 160, 48);
    EXPECTF(strstr(t, "L sweep-r12") != NULL, "%s", t);  // in the curves' legend
    free(t);
    app_key(a, TK_ESC);
    // more than APP_MAX_COMPARE selected: the first ones are compared, and it says so
    for (int i = 12; i < 14; i++) app_toggle_selected(a, ids[i]);
    for (int i = 0; i < APP_MAX_COMPARE - 14; i++) app_toggle_selected(a, 100000 + i);
    app_toggle_selected(a, 100100);
    app_key(a, 'c');
    EXPECTF(a->ncompare == APP_MAX_COMPARE && strstr(a->msg, "comparing the first 16 of the 17 selected runs"), "%s", a->msg);
    app_key(a, TK_ESC);
    // the selection's limit is said, not silent
    while (a->nselected < APP_MAX_SELECT) app_toggle_selected(a, 200000 + a->nselected);
    goto_run(a, id_r8);
    app_key(a, ' ');
    EXPECTF(strstr(a->msg, "64 runs are selected, the most there can be") != NULL, "%s", a->msg);
    free_app(a);
}

static char *read_export(app_t *a) {
    const char *p = strstr(a->msg, ws);
    lb_err_t err = {0};
    char path[600] = "";
    if (p) sscanf(p, "%599s", path);
    return path[0] ? lb_read_file(path, NULL, &err) : NULL;
}

// Issue 20, finding 6 (screens): a run without a value (zero-shot's rank and training
// numbers, a queued run's everything) shows "-" on screens and "–" or nothing in exports,
// never nan or -1.
static void test_missing_values(void) {
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    int64_t show[3] = {id_zs, id_queued, id_r64};
    for (int i = 0; i < 3; i++) {
        a->monitor_id = show[i];
        app_push(a, SCR_MONITOR);
        char *t = screen_text(a, 160, 48);
        EXPECTF(!strstr(t, "nan") && !strstr(t, " -1 ") && !strstr(t, "=-1"), "%s", t);
        free(t);
        app_pop(a);
    }
    // the sweep's Markdown with zero-shot in it
    char q[256];
    snprintf(q, sizeof q, "UPDATE runs SET sweep_id = (SELECT max(id) FROM sweeps) WHERE id = %lld", (long long)id_zs);
    sql(q);
    app_data_refresh(a, 1);
    app_key(a, 'w');
    app_key(a, 'e');
    char *md = read_export(a);
    EXPECTF(md && strstr(md, "zero-shot") && !strstr(md, "| -1 |") && !strstr(md, "nan"), "%s", md ? md : a->msg);
    // with intervals and time, the table `export --what sweep --format md` writes
    EXPECTF(md && strstr(md, "| ROUGE-1 [95% interval] |") && strstr(md, "| time |") && strstr(md, "0.184 [0.154, 0.212]"),
            "%s", md ? md : a->msg);
    free(md);
    app_key(a, TK_ESC);
    // the compare Markdown with a queued run
    a->nselected = 0;
    app_toggle_selected(a, id_zs);
    app_toggle_selected(a, id_queued);
    app_key(a, 'c');
    app_key(a, 'e');
    md = read_export(a);
    EXPECTF(md && !strstr(md, "| -1 |") && !strstr(md, "nan"), "%s", md ? md : a->msg);
    free(md);
    free_app(a);
}

// With squeue unavailable the workbench says so once, not at every sync (every 2 s), so
// that it does not cover what else the status line says; it says it again once it changed.
static void test_cluster_squeue_said_once(void) {
    app_t *a = new_app();
    lb_err_t err = {0};
    int64_t sw = 0;
    char dir[400], path[4096];
    snprintf(dir, sizeof dir, "%s/sweeps/squeue-test", ws);
    EXPECTF(store_sweep_create(st, "cl", "{}", &sw, &err) == 0, "%s", err.msg);
    EXPECTF(store_cluster_job_add(st, sw, "999", dir, 2, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", "/nonexistent", 1);  // no squeue
    app_cluster_sync(a);
    EXPECTF(strstr(a->msg, "cluster sweeps: squeue was not found; the state of 2 cluster tasks is unknown"), "%s", a->msg);
    EXPECT(a->ntasks == 2);
    app_msg(a, ST_NORMAL, "run 3 started");
    app_cluster_sync(a);
    EXPECTF(!strcmp(a->msg, "run 3 started"), "the same squeue message again covered the status line: %s", a->msg);
    setenv("PATH", path, 1);
    EXPECTF(store_cluster_job_set_state(st, sw, STORE_JOB_MERGED, &err) == 0, "%s", err.msg);  // out of later tests' way
    free_app(a);
}

// A cluster sweep's tasks not imported yet (sweep --slurm) are listed under the runs table,
// one line each with state, step and live loss, a failed one with its output file; X asks
// before cancelling that sweep, and says so when there is none.
static void test_cluster_tasks(void) {
    app_t *a = new_app();
    app_key(a, 'X');
    EXPECTF(strstr(a->msg, "no cluster sweep has tasks left to cancel"), "%s", a->msg);
    a->ntasks = 3;
    a->tasks = xcalloc(3, sizeof(slurm_task_t));
    const slurm_task_state_t states[3] = {SLURM_TASK_RUNNING, SLURM_TASK_PENDING, SLURM_TASK_FAILED};
    for (int i = 0; i < 3; i++) {
        slurm_task_t *t = &a->tasks[i];
        t->sweep_id = 4;
        snprintf(t->job_id, sizeof t->job_id, "812");
        t->index = i;
        snprintf(t->name, sizeof t->name, "cl-r%d", 1 << i);
        t->state = states[i];
        t->step = i == 0 ? 3 : -1;
        t->total_steps = i == 0 ? 6 : -1;
        t->loss = i == 0 ? 4.41234 : NAN;
        snprintf(t->out, sizeof t->out, "/ws/sweeps/4/task-%d.out", i);
    }
    char *t = screen_text(a, 120, 30);
    EXPECTF(strstr(t, "cluster tasks not imported yet: 3  (X: cancel sweep 4, scancel)"), "%s", t);
    EXPECTF(strstr(t, "sweep 4 job 812 task 0  cl-r1                  running   step 3/6       loss 4.4123"), "%s", t);
    EXPECTF(strstr(t, "task 1  cl-r2                  pending   step -         loss -"), "%s", t);
    EXPECTF(strstr(t, "failed    step -         loss -       /ws/sweeps/4/task-2.out"), "%s", t);
    EXPECTF(strstr(t, "lora-r16-qv    queued"), "the runs table is still there: %s", t);
    free(t);
    app_key(a, 'X');
    EXPECTF(a->prompt == PROMPT_CONFIRM && strstr(a->prompt_text, "Cancel cluster sweep 4 (scancel job 812)? [y/N]"),
            "%s", a->prompt_text);
    app_key(a, 'n');
    EXPECT(a->prompt == PROMPT_NONE && a->ntasks == 3);
    free_app(a);
}

// Issue 20, finding 9: a failed run's monitor shows its error and the end of its worker's log.
static void test_failed_monitor(void) {
    char dir[512], cmd[1400];
    snprintf(dir, sizeof dir, "%s/runs/%lld", ws, (long long)id_fail);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && printf 'step 11 loss 2.1\nstep 12 loss nan\nlorabench: loss became NaN at step 12\n' > '%s/worker.log'", dir, dir);
    EXPECT(system(cmd) == 0);
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    goto_run(a, id_fail);
    app_key(a, TK_ENTER);
    EXPECT(app_screen(a) == SCR_MONITOR && a->monitor_id == id_fail);
    char *t = screen_text(a, 80, 24);
    EXPECTF(strstr(t, "loss became NaN at step 12; lower the learning rate") != NULL, "%s", t);
    EXPECTF(strstr(t, "worker log, last 3 lines") && strstr(t, "step 12 loss nan"), "%s", t);
    free(t);
    free_app(a);
}

static int count_of(const char *s, const char *what) {
    int n = 0;
    for (const char *p = s; s && (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

// Issue 20, the lecture: e on Compare exports what the tab shows — Curves as CSV and an SVG
// plot, Samples as Markdown and CSV, Metrics as Markdown with intervals and time.
static void test_compare_exports(void) {
    app_t *a = new_app();
    free(a->workspace);
    a->workspace = xstrdup(ws);
    a->nselected = 0;
    app_toggle_selected(a, id_zs);
    app_toggle_selected(a, id_r8);
    app_toggle_selected(a, id_full);
    app_key(a, 'c');
    EXPECT(app_screen(a) == SCR_COMPARE && a->ncompare == 3);
    app_key(a, 'e');  // metrics
    char *md = read_export(a);
    EXPECTF(md && strstr(md, "| ROUGE-1 [95% interval] | ROUGE-L [95% interval] | time |") &&
                strstr(md, "[0.322, 0.380] | [0.306, 0.355] | 2m00s |"),
            "%s", md ? md : a->msg);
    free(md);
    app_key(a, '3');
    app_key(a, 'e');
    EXPECTF(a->msg_style == ST_GOOD && strstr(a->msg, "/exports/curves-") && strstr(a->msg, ".csv and its .svg"), "%s", a->msg);
    char *csv = read_export(a);
    // one row per stored step of the two trained runs (zero-shot has none), no nan
    EXPECTF(csv && !strncmp(csv, "run_id,name,step,tokens,seconds,loss,loss_ema\n", 46) && count_of(csv, "\n") == 1 + 400 + 400 &&
                !strstr(csv, "nan") && strstr(csv, ",lora-r8-qv,400,972800,"),
            "%.300s", csv ? csv : a->msg);
    free(csv);
    char svgpath[700] = "";
    const char *p = strstr(a->msg, ws);
    if (p) sscanf(p, "%599[^ ]", svgpath);
    char *dot = strrchr(svgpath, '.');
    if (dot) strcpy(dot, ".svg");
    lb_err_t err = {0};
    char *svg = lb_read_file(svgpath, NULL, &err);
    EXPECTF(svg && !strncmp(svg, "<svg xmlns=", 11) && count_of(svg, "<polyline") == 2 && strstr(svg, ">lora-r8-qv</text>") &&
                strstr(svg, ">zero-shot (no data)</text>") && strstr(svg, "</svg>\n"),
            "%s: %.400s", svgpath, svg ? svg : err.msg);
    free(svg);
    app_key(a, '4');
    app_key(a, 'e');
    md = read_export(a);
    EXPECTF(md && count_of(md, "## Example ") == 3 && strstr(md, "**Reference:** fast JSON library for C") &&
                strstr(md, "| full-finetune | fast JSON parser for C |") && strstr(md, "| zero-shot | emacs |"),
            "%s", md ? md : a->msg);
    free(md);
    free_app(a);
}

int main(void) {
    // the new-run screen's activation estimate holds a scratch slice per thread: a fixed
    // count keeps the goldens the same on any machine
    lb_set_threads(2);
    snprintf(ws, sizeof ws, "/tmp/lb-tui-test-%d", (int)getpid());
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
    fill_store();
    RUN(test_runs_screen);
    RUN(test_monitor_screen);
    RUN(test_failed_monitor);
    RUN(test_compare_screen);
    RUN(test_new_run_screen);
    RUN(test_export);
    RUN(test_sort_filter_select);
    RUN(test_sweep_screen);
    RUN(test_compare_exports);
    RUN(test_form_grid_lr);
    RUN(test_form_field_checks);
    RUN(test_clone_and_presets);
    RUN(test_form_keys);
    RUN(test_clicks);
    RUN(test_form_grid);
    RUN(test_compare_many);
    RUN(test_missing_values);
    RUN(test_cluster_tasks);
    RUN(test_cluster_squeue_said_once);
    store_close(st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", ws);
    TH_DONE();
}
