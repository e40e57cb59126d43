// The workbench: frame layout, key dispatch, prompts, the help overlay and the main loop.
#include "app.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app_params.h"
#include "cli_common.h"
#include "term.h"

static const screen_t *const screens[SCR_COUNT] = {
    [SCR_RUNS] = &screen_runs,
    [SCR_NEW] = &screen_new,
    [SCR_MONITOR] = &screen_monitor,
    [SCR_COMPARE] = &screen_compare,
    [SCR_SWEEP] = &screen_sweep,
    [SCR_ANALYSIS] = &screen_analysis,
    [SCR_TRY] = &screen_try,
};

// Keys every screen shares; listed after the screen's own keys in help and in the bar.
static const key_binding_t global_keys[] = {
    {TK_F1, '?', ACT_HELP, "F1/?", "help: the keys of this screen", "Help"},
    {'e', 0, ACT_EXPORT, "e", "export what is shown (CSV or Markdown; the path is shown)", NULL},
    {TK_ESC, 0, ACT_BACK, "Esc", "back to the previous screen", NULL},
    {'q', TK_F10, ACT_QUIT, "q/F10", "quit", "Quit"},
};
enum { N_GLOBAL = sizeof global_keys / sizeof global_keys[0] };

void app_init(app_t *a, store_t *st, const char *workspace, int ascii) {
    memset(a, 0, sizeof *a);
    a->st = st;
    a->workspace = xstrdup(workspace ? workspace : ".");
    a->ascii = ascii;
    a->now = store_now();
    a->sort_key = "id";
    a->sort_desc = 1;
    a->smooth = 0.6;
    a->cmp_logy = 0;
    a->data_version = -1;
    a->follow_after = -1;
    app_sort_load(a);
    snprintf(a->presets_dir, sizeof a->presets_dir, "experiments/presets");
    const char *cfg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");  // the user's presets
    if (cfg && *cfg) snprintf(a->user_presets_dir, sizeof a->user_presets_dir, "%.900s/lorabench/presets", cfg);
    else if (home && *home) snprintf(a->user_presets_dir, sizeof a->user_presets_dir, "%.900s/.config/lorabench/presets", home);
    snprintf(a->default_model, sizeof a->default_model, "experiments/models/t5-tiny");
    snprintf(a->default_dataset, sizeof a->default_dataset, "experiments/data/debsum");
    a->stack[0] = SCR_RUNS;
    a->depth = 1;
    ssize_t n = readlink("/proc/self/exe", a->exe, sizeof a->exe - 1);
    if (n > 0) a->exe[n] = 0;
    else snprintf(a->exe, sizeof a->exe, "lorabench");
    app_data_refresh(a, 1);
}

void app_free(app_t *a) {
    app_try_close(a);
    store_runs_free(a->runs, a->nruns);
    if (a->pinned_id) store_run_clear(&a->pinned_run);
    for (size_t i = 0; i < a->nseries; i++) {
        free(a->series[i].m);
        free(a->series[i].evals);
        store_samples_free(a->series[i].samples, a->series[i].nsamples);
    }
    free(a->series);
    free(a->workspace);
    free(a->form_base);
    free(a->form_grid);
    app_analysis_clear(a);
    free(a->tasks);
    memset(a, 0, sizeof *a);
}

screen_id_t app_screen(const app_t *a) {
    return a->stack[a->depth - 1];
}

void app_push(app_t *a, screen_id_t s) {
    if (a->depth < (int)(sizeof a->stack / sizeof a->stack[0])) a->stack[a->depth++] = s;
    else a->stack[a->depth - 1] = s;
    a->help = 0;
}

void app_pop(app_t *a) {
    if (a->depth > 1) a->depth--;
}

void app_msg(app_t *a, int style, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
    a->msg_style = style;
}

void app_confirm(app_t *a, int action, int64_t run, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->prompt_text, sizeof a->prompt_text, fmt, ap);
    va_end(ap);
    a->prompt = PROMPT_CONFIRM;
    a->prompt_action = action;
    a->prompt_run = run;
}

void app_input(app_t *a, int action, int64_t run, const char *label, const char *initial) {
    snprintf(a->prompt_text, sizeof a->prompt_text, "%s", label);
    snprintf(a->prompt_input, sizeof a->prompt_input, "%s", initial ? initial : "");
    a->prompt_pos = (int)strlen(a->prompt_input);
    a->prompt = PROMPT_INPUT;
    a->prompt_action = action;
    a->prompt_live = a->prompt_cancel = 0;
    a->prompt_run = run;
}

double app_smooth_step(double smooth, int dir) {
    static const double ladder[] = {0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999};
    const int n = (int)(sizeof ladder / sizeof ladder[0]);
    // the rung at or just below the current value (which may be off the ladder)
    int k = 0;
    while (k + 1 < n && ladder[k + 1] <= smooth + 1e-9) k++;
    if (dir > 0) return ladder[k + 1 < n ? k + 1 : n - 1];
    if (ladder[k] < smooth - 1e-9) return ladder[k];
    return ladder[k > 0 ? k - 1 : 0];
}

int app_smooth_digits(double smooth) {
    double hundredths = smooth * 100;
    return fabs(hundredths - round(hundredths)) < 1e-6 ? 2 : 3;
}

// ---- drawing ----

// The help box: as wide as its longest line needs (up to the screen less a margin); a help
// line that still does not fit wraps under itself.
static void draw_help(app_t *a, grid_t *g, const screen_t *s) {
    int items = s->nkeys + N_GLOBAL + 3;
    const char *footer = "Esc or ? closes this help; arrows scroll it.";
    int need = grid_strwidth(footer) + 4;
    for (int i = 0; i < s->nkeys + N_GLOBAL; i++) {
        const key_binding_t *b = i < s->nkeys ? &s->keys[i] : &global_keys[i - s->nkeys];
        if (grid_strwidth(b->help) + 17 + 2 > need) need = grid_strwidth(b->help) + 17 + 2;
    }
    int w = need > g->w - 4 ? g->w - 4 : need;
    // rows of each item: a binding's help may wrap
    int lines = 0;
    for (int i = 0; i < items; i++) {
        if (i < s->nkeys) lines += widget_wrap_rows(s->keys[i].help, w - 17) > 0 ? widget_wrap_rows(s->keys[i].help, w - 17) : 1;
        else if (i >= s->nkeys + 2 && i - s->nkeys - 2 < N_GLOBAL)
            lines += widget_wrap_rows(global_keys[i - s->nkeys - 2].help, w - 17);
        else lines++;
    }
    int h = lines + 2 > g->h - 4 ? g->h - 4 : lines + 2;
    int x = (g->w - w) / 2, y = 2;
    grid_fill(g, x, y, w, h, ' ', ST_NORMAL);
    char title[96];
    snprintf(title, sizeof title, "Keys: %s", s->title);
    grid_box(g, x, y, w, h, title, ST_BOLD);
    int max = h - 2;
    if (a->help_scroll > lines - max) a->help_scroll = lines - max > 0 ? lines - max : 0;
    // one list: the screen's keys, a gap, then the shared ones
    int row = 0;
    for (int i = 0; i < items; i++) {
        const key_binding_t *b = NULL;
        const char *heading = NULL;
        if (i < s->nkeys) b = &s->keys[i];
        else if (i == s->nkeys) {
            row++;
            continue;
        } else if (i == s->nkeys + 1) heading = "On every screen";
        else if (i - s->nkeys - 2 < N_GLOBAL) b = &global_keys[i - s->nkeys - 2];
        else heading = footer;
        int rows = b ? widget_wrap_rows(b->help, w - 17) : 1;
        if (rows < 1) rows = 1;
        for (int k = 0; k < rows; k++) {
            int r = row + k - a->help_scroll;
            if (r < 0 || r >= max) continue;
            if (heading) grid_text_trunc(g, x + 2, y + 1 + r, w - 4, heading, ST_DIM);
            else {
                if (k == 0) grid_text_trunc(g, x + 2, y + 1 + r, 12, b->name, ST_KEY);
                widget_wrap(g, x + 15, y + 1 + r, w - 17, 1, b->help, k, ST_NORMAL);
            }
        }
        row += rows;
    }
}

static void draw_message_line(app_t *a, grid_t *g, int y) {
    grid_fill(g, 0, y, g->w, 1, ' ', ST_NORMAL);
    if (a->prompt == PROMPT_CONFIRM) {
        grid_text_trunc(g, 0, y, g->w, a->prompt_text, ST_WARN);
    } else if (a->prompt == PROMPT_INPUT) {
        int n = grid_text(g, 0, y, g->w / 2, a->prompt_text, ST_BOLD);
        int room = g->w - n - 1;
        // the text from where the cursor stays in view; the cursor on its character (or _
        // at the end)
        const char *v = a->prompt_input, *cur = a->prompt_input + a->prompt_pos;
        char before[256];
        snprintf(before, sizeof before, "%.*s", a->prompt_pos, a->prompt_input);
        int cx = grid_strwidth(before);
        while (cx > room - 1 && v < cur) cx -= grid_cp_width(grid_utf8_next(&v));
        grid_text(g, n, y, room, v, ST_ACCENT);
        if (*cur) {
            const char *nx = cur;
            uint32_t c = grid_utf8_next(&nx);
            grid_put(g, n + cx, y, c, ST_CURSOR);
        } else {
            grid_put(g, n + cx, y, '_', ST_CURSOR);
        }
    } else if (a->msg[0]) {
        grid_text_trunc(g, 0, y, g->w, a->msg, a->msg_style);
    }
}

void app_draw(app_t *a, grid_t *g) {
    grid_clear(g);
    if (g->w < APP_MIN_W || g->h < APP_MIN_H) {
        widget_too_small(g, APP_MIN_W, APP_MIN_H);
        return;
    }
    const screen_t *s = screens[app_screen(a)];
    grid_fill(g, 0, 0, g->w, 1, ' ', ST_TITLE);
    char title[256];
    snprintf(title, sizeof title, " lorabench %s %s", a->ascii ? "|" : "│", s->title);
    int tw = grid_text(g, 0, 0, g->w, title, ST_TITLE);
    char right[600];
    snprintf(right, sizeof right, "%s ", a->workspace);
    int room = g->w - tw - 2;
    if (room > 10) grid_text_right(g, g->w, 0, room < 40 ? room : 40, right, ST_TITLE);
    a->body_y = 1;
    a->body_h = g->h - 3;
    s->draw(a, g, a->body_y, a->body_h);
    draw_message_line(a, g, g->h - 2);
    // a shared key the screen binds itself (the form's F10 asks first; q types there) is
    // left out of the bar: the screen's own entry is what the key does
    key_binding_t shared[N_GLOBAL];
    int nshared = 0;
    for (int i = 0; i < N_GLOBAL; i++)
        if (!keys_find(s->keys, s->nkeys, global_keys[i].key) &&
            !(global_keys[i].alt && keys_find(s->keys, s->nkeys, global_keys[i].alt)))
            shared[nshared++] = global_keys[i];
    const key_binding_t *tables[2] = {s->keys, shared};
    int ns[2] = {s->nkeys, nshared};
    widget_keybar(g, g->h - 1, tables, ns, 2);
    if (a->help) draw_help(a, g, s);
}

// ---- keys ----

static void prompt_key(app_t *a, int key) {
    const screen_t *s = screens[app_screen(a)];
    if (a->prompt == PROMPT_CONFIRM) {
        a->prompt = PROMPT_NONE;
        if (key == 'y' || key == 'Y') s->action(a, a->prompt_action, key);
        else app_msg(a, ST_DIM, "cancelled: nothing changed");
        return;
    }
    if (key == TK_ESC) {
        a->prompt = PROMPT_NONE;
        if (a->prompt_cancel) s->action(a, a->prompt_cancel, key);
        app_msg(a, ST_DIM, "cancelled: nothing changed");
        return;
    } else if (key == TK_ENTER) {
        a->prompt = PROMPT_NONE;
        s->action(a, a->prompt_action, key);
        return;
    }
    // a line editor (widget_line_edit): Left/Right, Home/End, Backspace/Del, Ctrl-U clears
    int edited = widget_line_edit(a->prompt_input, sizeof a->prompt_input, &a->prompt_pos, key) == 2;
    if (edited && a->prompt_live) s->action(a, a->prompt_live, key);
}

void app_key(app_t *a, int key) {
    if (key == TK_NONE || key == TK_RESIZE) return;
    if (a->prompt != PROMPT_NONE) {
        prompt_key(a, key);
        return;
    }
    const screen_t *s = screens[app_screen(a)];
    if (a->help) {
        if (key == TK_UP || key == 'k') { if (a->help_scroll > 0) a->help_scroll--; }
        else if (key == TK_DOWN || key == 'j') a->help_scroll++;
        else if (key == 'q' || key == TK_F10) a->quit = 1;
        else a->help = 0;
        return;
    }
    // a form takes printable keys before the tables (typing 'q' into a name)
    if (s->key && s->key(a, key)) return;
    const key_binding_t *b = keys_find(s->keys, s->nkeys, key);
    if (b) {
        a->msg[0] = 0;
        s->action(a, b->action, key);
        return;
    }
    b = keys_find(global_keys, N_GLOBAL, key);
    if (!b) return;
    switch (b->action) {
    case ACT_QUIT: a->quit = 1; break;
    case ACT_HELP: a->help = 1; a->help_scroll = 0; break;
    case ACT_BACK: a->msg[0] = 0; app_pop(a); break;
    case ACT_EXPORT: s->action(a, ACT_EXPORT, key); break;
    }
}

void app_click(app_t *a, int x, int y) {
    if (a->prompt != PROMPT_NONE || a->help) return;
    const screen_t *s = screens[app_screen(a)];
    if (s->click && y >= a->body_y && y < a->body_y + a->body_h) s->click(a, x, y);
}

// ---- the loop ----

static void usage(FILE *f) {
    fprintf(f, "usage: lorabench [--workspace DIR] [--model DIR] [--dataset PATH] [--ascii]\n"
               "Opens the workbench: runs, new run, monitor, compare, sweep. ? shows the keys.\n"
               "  --workspace DIR  runs and database folder (default $LORABENCH_HOME,\n"
               "                   else ~/.local/share/lorabench)\n"
               "  --model DIR      the new-run form's base model (default $LORABENCH_DEFAULT_MODEL,\n"
               "                   else the bundled experiments/models/t5-tiny)\n"
               "  --dataset PATH   the new-run form's data set (default $LORABENCH_DEFAULT_DATASET,\n"
               "                   else the bundled experiments/data/debsum)\n"
               "  --ascii          no braille or box drawing (also when the locale is not UTF-8)\n"
               "NO_COLOR=1 or TERM=dumb: attributes instead of colours.\n");
}

// A bundled path (experiments/...) as given when it exists from the current folder, else
// next to the binary (build/lorabench -> ../experiments/...), so that the workbench finds
// its model, data and presets from any folder.
static void bundled_path(const char *exe, const char *rel, char *out, size_t cap) {
    snprintf(out, cap, "%s", rel);
    if (!access(rel, F_OK)) return;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", exe);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    char cand[8300];
    snprintf(cand, sizeof cand, "%s/../%s", dir, rel);
    char *r = realpath(cand, NULL);
    if (r && strlen(r) < cap) snprintf(out, cap, "%s", r);
    free(r);
}

int tui_main(int argc, char **argv) {
    const char *wsarg = NULL, *model = getenv("LORABENCH_DEFAULT_MODEL"),
               *dataset = getenv("LORABENCH_DEFAULT_DATASET");
    int ascii = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--workspace") && i + 1 < argc) wsarg = argv[++i];
        else if (!strncmp(argv[i], "--workspace=", 12)) wsarg = argv[i] + 12;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strncmp(argv[i], "--model=", 8)) model = argv[i] + 8;
        else if (!strcmp(argv[i], "--dataset") && i + 1 < argc) dataset = argv[++i];
        else if (!strncmp(argv[i], "--dataset=", 10)) dataset = argv[i] + 10;
        else if (!strcmp(argv[i], "--ascii")) ascii = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "lorabench: unknown option '%s'; 'lorabench --help' lists the options\n", argv[i]);
            return 2;
        }
    }
    lb_err_t err = {0};
    char *ws = NULL;
    store_t *st = NULL;
    if (store_workspace_resolve(wsarg, &ws, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return 1;
    }
    char *db = store_workspace_db_path(ws);
    int rc = store_open(db, &st, &err);
    free(db);
    if (rc) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        free(ws);
        return 1;
    }
    term_info_t ti;
    if (term_start(&ti)) {
        store_close(st);
        free(ws);
        return 1;
    }
    app_t *a = xcalloc(1, sizeof *a);
    app_init(a, st, ws, ascii || !ti.utf8);
    if (model && *model) snprintf(a->default_model, sizeof a->default_model, "%s", model);
    else bundled_path(a->exe, "experiments/models/t5-tiny", a->default_model, sizeof a->default_model);
    if (dataset && *dataset) snprintf(a->default_dataset, sizeof a->default_dataset, "%s", dataset);
    else bundled_path(a->exe, "experiments/data/debsum", a->default_dataset, sizeof a->default_dataset);
    bundled_path(a->exe, "experiments/presets", a->presets_dir, sizeof a->presets_dir);
    int w, h;
    term_size(&w, &h);
    grid_t *g = grid_new(w, h, a->ascii);
    double last_stale = 0, last_cluster = 0;
    while (!a->quit) {
        a->now = store_now();
        // reap finished helper processes (train --detach, cancel, resume); a resume or sweep
        // that a cancel stopped exits 128 + the signal, and did what it was asked
        int wst;
        pid_t done;
        while ((done = waitpid(-1, &wst, WNOHANG)) > 0)
            app_helper_exited(a, (int)done, !WIFEXITED(wst) || (WEXITSTATUS(wst) != 0 && !cli_exit_was_stopped(WEXITSTATUS(wst))));
        if (a->now - last_stale > 5) {
            // a worker that died without a word shows as interrupted
            int marked = 0;
            store_mark_stale_interrupted(st, a->now, 30, NULL, NULL, &marked, &err);
            last_stale = a->now;
            if (marked) app_data_refresh(a, 1);
        }
        if (a->now - last_cluster > 2) {  // squeue and the task workspaces, not every frame
            app_cluster_sync(a);
            last_cluster = a->now;
        }
        app_data_refresh(a, 0);
        term_size(&w, &h);
        if (w != g->w || h != g->h) grid_resize(g, w, h);
        app_draw(a, g);
        term_present(g);
        int key = term_read_key(APP_POLL_MS, &a->mouse_x, &a->mouse_y);
        if (key == TK_CLICK) {
            // the screen decides what was clicked: a row, a header, a tab
            app_click(a, a->mouse_x, a->mouse_y);
            continue;
        }
        if (g->w < APP_MIN_W || g->h < APP_MIN_H) {
            if (key == 'q' || key == TK_F10) a->quit = 1;
            continue;
        }
        app_key(a, key);
    }
    term_stop();
    grid_free(g);
    app_free(a);
    free(a);
    store_close(st);
    free(ws);
    return 0;
}

void app_ask_cancel(app_t *a, const store_run_t *r, int confirm_action) {
    if (!r) return;
    store_status_t status = store_status_parse(r->status);
    if (status != STORE_RUN_RUNNING && status != STORE_RUN_QUEUED) {
        app_msg(a, ST_WARN, "run #%lld is %s: only a queued or running run can be cancelled", (long long)r->id, r->status);
        return;
    }
    app_confirm(a, confirm_action, r->id, "Cancel run #%lld %s? It stops after its current step. [y/N]", (long long)r->id,
                r->name);
}

void app_ask_resume(app_t *a, const store_run_t *r, int confirm_action) {
    if (!r) return;
    store_status_t status = store_status_parse(r->status);
    if (status != STORE_RUN_INTERRUPTED && status != STORE_RUN_CANCELLED && status != STORE_RUN_FAILED) {
        app_msg(a, ST_WARN, "run #%lld is %s: only an interrupted, cancelled or failed run can be resumed", (long long)r->id,
                r->status);
        return;
    }
    app_confirm(a, confirm_action, r->id, "Resume run #%lld %s from its last checkpoint? [y/N]", (long long)r->id, r->name);
}

void app_spawn_on_run(app_t *a, const char *cmd, int64_t run) {
    char id[32];
    lb_err_t err = {0};
    snprintf(id, sizeof id, "%lld", (long long)run);
    const char *args[] = {cmd, id, NULL};
    if (app_spawn(a, args, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
    else app_msg(a, ST_NORMAL, "%s run #%s requested", !strcmp(cmd, "cancel") ? "cancelling" : "resuming", id);
}
