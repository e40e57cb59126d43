// The Try screen (i on runs): one input text, and the output of the base model (zero-shot)
// beside that of every chosen run's adapter or fine-tuned model, each with its generation
// time. The base is loaded once, at the first Enter, and the adapters are applied to it in
// turn unmerged (engine/eval/tryout.h: attaching is a few pointer writes, no reload); a
// full fine-tune's model is loaded once as its own. Generation runs on a background thread
// (one for the screen's life, woken per request) so that the screen keeps drawing
// ("generating…") and Esc stops it after the current output.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "spec.h"
#include "tryout.h"

enum { A_GENERATE = ACT_SCREEN, A_EXAMPLE, A_QUIT, A_CLEAR };

static const key_binding_t keys[] = {
    {TK_ENTER, 0, A_GENERATE, "Enter", "generate the input with the base and every run (the base loads once, at the first)", "Generate"},
    {TK_TAB, TK_F1 + 1, A_EXAMPLE, "Tab/F2", "the next validation example of the runs' last evaluation as input", "Example"},
    {0x15, 0, A_CLEAR, "Ctrl-U", "clear the input", NULL},
    {TK_ESC, 0, ACT_BACK, "Esc", "stop generating (after the current output); else back to the runs", "Stop/Back"},
    {TK_F10, 0, A_QUIT, "F10", "quit (letters type into the input)", "Quit"},
};

// One column of outputs: the base (run_id 0) or a run.
typedef struct {
    int64_t run_id;
    char label[96];        // "base (zero-shot)" or "#3 lora-r4-qv"
    char kind[48];         // "adapter r=4 q,v", "full fine-tune", "zero-shot"
    char dir[4096];        // its adapter or model folder ("" for the base)
    int is_model;
    int variant;           // tryout variant index (TRYOUT_VARIANT_BASE for the base)
    char *text;            // the last output, NULL before the first
    double ms;             // its generation time
    int state;             // 0 idle, 1 waiting, 2 generating, 3 done, 4 failed
    char error[256];
} try_col_t;

struct app_try {
    pthread_mutex_t mu;    // guards everything the thread writes: cols, status, busy
    pthread_cond_t wake;   // a request (pending) or the end (quit)
    pthread_t thread;      // one for the screen's life: the engine's threads and scratch
    int started;           //   stay warm between requests
    int pending, quit;
    int busy;              // a request runs
    volatile int stop;     // Esc: stop after the current output
    char base_dir[4096];
    int opened;            // tryout_open done (the base is loaded)
    tryout_t t;            // used by the thread only while busy
    generate_opts_t go;
    int max_src;
    char input[1024];      // what is typed
    int pos;               // cursor, a byte offset
    char request[1024];    // the input being generated
    char status[256];
    int example;           // the next validation example Tab takes
    int ncols;
    try_col_t cols[APP_MAX_SELECT + 1];
};

static void run_request(struct app_try *s) {
    lb_err_t err = {0};
    if (!s->opened) {
        pthread_mutex_lock(&s->mu);
        snprintf(s->status, sizeof s->status, "loading the base model %.200s…", s->base_dir);
        pthread_mutex_unlock(&s->mu);
        int rc = tryout_open(&s->t, s->base_dir, T5_PRECISION_FP32, TRYOUT_ATTACH, &err);
        for (int i = 0; i < s->ncols && !rc; i++) {
            if (!s->cols[i].dir[0]) continue;
            s->cols[i].variant = tryout_add(&s->t, s->cols[i].dir, &err);
            if (s->cols[i].variant < 0) {
                tryout_free(&s->t);
                rc = -1;
            }
        }
        pthread_mutex_lock(&s->mu);
        if (rc) {
            snprintf(s->status, sizeof s->status, "%.250s", err.msg);
            for (int i = 0; i < s->ncols; i++) s->cols[i].state = 0;
            s->busy = 0;
            pthread_mutex_unlock(&s->mu);
            return;
        }
        s->opened = 1;
        pthread_mutex_unlock(&s->mu);
    }
    const char *in = s->request;
    for (int i = 0; i < s->ncols && !s->stop; i++) {
        try_col_t *c = &s->cols[i];
        pthread_mutex_lock(&s->mu);
        c->state = 2;
        pthread_mutex_unlock(&s->mu);
        char *out = NULL;
        double sec = 0;
        int rc = tryout_generate_texts(&s->t, c->variant, &in, 1, s->max_src, &s->go, &out, &sec, &err);
        pthread_mutex_lock(&s->mu);
        free(c->text);
        c->text = rc ? NULL : out;
        c->ms = sec * 1e3;
        c->state = rc ? 4 : 3;
        snprintf(c->error, sizeof c->error, "%.250s", rc ? err.msg : "");
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->ncols; i++)
        if (s->cols[i].state == 1) s->cols[i].state = 0;  // stopped before its turn
    int models = s->t.model_loads - 1;
    snprintf(s->status, sizeof s->status, "%s; %d model load%s in %.0f ms (the base once%s), adapters applied to it unmerged",
             s->stop ? "stopped" : "done", s->t.model_loads, s->t.model_loads == 1 ? "" : "s", s->t.load_s * 1e3,
             models == 1 ? ", 1 full fine-tune" : models > 1 ? ", each full fine-tune once" : "");
    s->busy = 0;
    pthread_mutex_unlock(&s->mu);
}

static void *generate_thread(void *arg) {
    struct app_try *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->pending && !s->quit) pthread_cond_wait(&s->wake, &s->mu);
        if (s->quit) break;
        s->pending = 0;
        pthread_mutex_unlock(&s->mu);
        run_request(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void join_thread(struct app_try *s) {
    if (!s->started) return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->started = 0;
}

int app_try_busy(app_t *a) {
    struct app_try *s = a->try_state;
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    int b = s->busy;
    pthread_mutex_unlock(&s->mu);
    return b;
}

void app_try_close(app_t *a) {
    struct app_try *s = a->try_state;
    if (!s) return;
    s->stop = 1;
    join_thread(s);
    if (s->opened) tryout_free(&s->t);
    for (int i = 0; i < s->ncols; i++) free(s->cols[i].text);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
    a->try_state = NULL;
}

// Fills a column for run r: its weights' folder and a short description.
static int col_for_run(app_t *a, const store_run_t *r, try_col_t *c) {
    lb_err_t err = {0};
    memset(c, 0, sizeof *c);
    c->run_id = r->id;
    snprintf(c->label, sizeof c->label, "#%lld %s", (long long)r->id, r->name);
    if (app_run_weights(a, r->id, c->dir, sizeof c->dir, &c->is_model, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return -1;
    }
    if (!c->dir[0] && strcmp(r->method, "none")) {
        app_msg(a, ST_WARN, "run #%lld %s has no stored adapter or model yet (it is %s); try it when it is done",
                (long long)r->id, r->name, r->status);
        return -1;
    }
    if (c->is_model) snprintf(c->kind, sizeof c->kind, "%s fine-tune", r->method);
    else if (c->dir[0]) snprintf(c->kind, sizeof c->kind, "adapter r=%lld %s", (long long)r->r, r->targets ? r->targets : "");
    return 0;
}

void app_try_open(app_t *a, const int64_t *ids, int n) {
    app_try_close(a);
    struct app_try *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    generate_opts_default(&s->go);
    s->max_src = 512;
    try_col_t *base = &s->cols[s->ncols++];
    snprintf(base->label, sizeof base->label, "base (zero-shot)");
    snprintf(base->kind, sizeof base->kind, "the model alone");
    base->variant = TRYOUT_VARIANT_BASE;
    const char *prefix = "";
    spec_t sp;
    int have_spec = 0;
    for (int i = 0; i < n; i++) {
        const store_run_t *r = app_run_by_id(a, ids[i]);
        if (!r) continue;
        if (!s->base_dir[0]) {
            snprintf(s->base_dir, sizeof s->base_dir, "%s", r->base_model ? r->base_model : "");
            lb_err_t err = {0};
            // the first run's generation settings and prefix (its evaluation's)
            if (r->spec && !spec_parse(r->spec, "the run's spec", &sp, &err)) {
                have_spec = 1;
                s->go.num_beams = sp.eval.beams > 0 ? sp.eval.beams : 1;
                if (sp.eval.max_new_tokens > 0) s->go.max_new_tokens = sp.eval.max_new_tokens;
                s->go.length_penalty = (float)sp.eval.length_penalty;
                s->go.no_repeat_ngram_size = sp.eval.no_repeat_ngram_size;
                s->max_src = sp.dataset.max_source_tokens;
                if (sp.dataset.prefix) prefix = sp.dataset.prefix;
            }
        } else if (strcmp(s->base_dir, r->base_model ? r->base_model : "")) {
            app_msg(a, ST_WARN, "run #%lld has the base model %s, not %s: select runs of one base model, then i",
                    (long long)r->id, r->base_model, s->base_dir);
            goto fail;
        }
        if (!strcmp(r->method, "none")) continue;  // the base column is its output
        if (col_for_run(a, r, &s->cols[s->ncols])) goto fail;
        s->ncols++;
    }
    if (!s->base_dir[0]) {
        app_msg(a, ST_WARN, "no run to try: put the cursor on a run (or select some with Space), then i");
        goto fail;
    }
    snprintf(s->input, sizeof s->input, "%s", prefix);
    s->pos = (int)strlen(s->input);
    snprintf(s->status, sizeof s->status, "type or paste a text, then Enter; the base model loads once, at the first");
    if (have_spec) spec_free(&sp);
    a->try_state = s;
    app_push(a, SCR_TRY);
    return;
fail:
    if (have_spec) spec_free(&sp);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
}

static void start(app_t *a) {
    struct app_try *s = a->try_state;
    if (app_try_busy(a)) {
        app_msg(a, ST_WARN, "still generating: wait, or Esc to stop after the current output");
        return;
    }
    if (!s->started) {
        if (pthread_create(&s->thread, NULL, generate_thread, s)) {
            app_msg(a, ST_ERROR, "could not start the generation thread; close other programs and press Enter again");
            return;
        }
        s->started = 1;
    }
    pthread_mutex_lock(&s->mu);
    snprintf(s->request, sizeof s->request, "%s", s->input);
    s->stop = 0;
    s->busy = 1;
    s->pending = 1;
    for (int i = 0; i < s->ncols; i++) s->cols[i].state = 1;
    snprintf(s->status, sizeof s->status, "generating…");
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

static void next_example(app_t *a) {
    struct app_try *s = a->try_state;
    for (int i = 1; i < s->ncols; i++) {
        app_series_t *se = app_series(a, s->cols[i].run_id);
        if (!se->nsamples) continue;
        int k = s->example++ % (int)se->nsamples;
        snprintf(s->input, sizeof s->input, "%s", se->samples[k].source);
        s->pos = (int)strlen(s->input);
        app_msg(a, ST_DIM, "validation example %d of %zu (run #%lld's last evaluation); Enter generates", k + 1,
                se->nsamples, (long long)s->cols[i].run_id);
        return;
    }
    app_msg(a, ST_WARN, "none of these runs has an evaluation with samples yet: type a text instead");
}

static int try_action(app_t *a, int action, int key) {
    (void)key;
    struct app_try *s = a->try_state;
    switch (action) {
    case A_GENERATE: start(a); return 1;
    case A_EXAMPLE: next_example(a); return 1;
    case A_CLEAR: s->input[0] = 0; s->pos = 0; return 1;
    case A_QUIT: a->quit = 1; return 1;
    case ACT_BACK:
        if (app_try_busy(a)) {
            s->stop = 1;
            app_msg(a, ST_DIM, "stopping after the current output…");
            return 1;
        }
        app_try_close(a);
        app_pop(a);
        return 1;
    case ACT_EXPORT:
        app_msg(a, ST_DIM, "nothing to export here: lorabench generate --json writes these outputs");
        return 1;
    }
    return 0;
}

// The input line editor (widget_line_edit): printable keys type, Backspace/Del,
// Left/Right, Home/End, Ctrl-U clears.
static int try_key(app_t *a, int key) {
    struct app_try *s = a->try_state;
    return widget_line_edit(s->input, sizeof s->input, &s->pos, key) != 0;
}

static const char *state_name(int state) {
    static const char *const names[] = {"", "waiting", "generating…", "", "failed"};
    return state >= 0 && state <= 4 ? names[state] : "";
}

static void try_draw(app_t *a, grid_t *g, int y, int h) {
    struct app_try *s = a->try_state;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    int w = g->w;
    // the input box: the text wrapped over up to 3 rows, the cursor at its end
    int box_rows = widget_wrap_rows(s->input, w - 4);
    if (box_rows < 1) box_rows = 1;
    if (box_rows > 3) box_rows = 3;
    grid_box(g, 0, y, w, box_rows + 2, "input (type or paste; Enter generates; Tab a validation example)", ST_BOLD);
    int skip = widget_wrap_rows(s->input, w - 4) - box_rows;
    widget_wrap(g, 2, y + 1, w - 4, box_rows, s->input, skip > 0 ? skip : 0, ST_ACCENT);
    if (s->pos == (int)strlen(s->input)) {
        // the cursor after the last character drawn
        int cx = 2, cy = y + 1;
        for (int r = 0; r < box_rows; r++)
            for (int x = 2; x < w - 2; x++) {
                grid_cell_t *c = grid_at(g, x, y + 1 + r);
                if (c && c->ch != ' ') { cx = x + 1; cy = y + 1 + r; }
            }
        if (cx >= w - 2) { cx = 2; cy = cy + 1 < y + 1 + box_rows ? cy + 1 : cy; }
        grid_put(g, cx, cy, '_', ST_CURSOR);
    }
    int row = y + box_rows + 2;
    grid_text_trunc(g, 1, row++, w - 2, s->status, s->busy ? ST_WARN : ST_DIM);
    char how[32];
    if (s->go.num_beams > 1) snprintf(how, sizeof how, "beam search (%d)", s->go.num_beams);
    else snprintf(how, sizeof how, "greedy");
    grid_textf(g, 1, row++, w - 2, ST_DIM, "%s, at most %d new tokens (the runs' evaluation settings); base %s", how,
               s->go.max_new_tokens, s->base_dir);
    // the outputs, a row block per model: name and time on the left, the text beside them
    int name_w = 26, time_w = 11, text_x = name_w + time_w + 2, text_w = w - text_x - 1;
    grid_fill(g, 0, row, w, 1, ' ', ST_HEADER);
    grid_text(g, 1, row, name_w, "model", ST_HEADER);
    grid_text_right(g, name_w + time_w, row, time_w, "time", ST_HEADER);
    grid_text(g, text_x, row, text_w, "output", ST_HEADER);
    row++;
    int left = y + h - row;
    int per = s->ncols ? left / s->ncols : 0;
    if (per > 4) per = 4;
    if (per < 2) per = 2;  // a name row and a kind row; the text wraps beside them
    for (int i = 0; i < s->ncols && row + 1 < y + h; i++) {
        const try_col_t *c = &s->cols[i];
        grid_text_trunc(g, 1, row, name_w, c->label, i == 0 ? ST_ACCENT : ST_BOLD);
        grid_text_trunc(g, 3, row + 1, name_w - 2, c->kind, ST_DIM);
        if (c->state == 3) {
            char t[32];
            snprintf(t, sizeof t, "%.1f ms", c->ms);
            grid_text_right(g, name_w + time_w, row, time_w, t, ST_NORMAL);
        }
        int rows = per < y + h - row ? per : y + h - row;
        if (c->state == 4) widget_wrap(g, text_x, row, text_w, rows, c->error, 0, ST_ERROR);
        else if (c->state == 1 || c->state == 2) grid_text_trunc(g, text_x, row, text_w, state_name(c->state), ST_WARN);
        else if (c->text) widget_wrap(g, text_x, row, text_w, rows, c->text[0] ? c->text : "(empty)", 0, ST_NORMAL);
        row += rows;
    }
    pthread_mutex_unlock(&s->mu);
}

const screen_t screen_try = {
    .title = "Try",
    .keys = keys,
    .nkeys = sizeof keys / sizeof keys[0],
    .draw = try_draw,
    .action = try_action,
    .key = try_key,
};
