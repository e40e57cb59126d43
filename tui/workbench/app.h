// The workbench application: its state, the screens and the loop that ties them to the
// terminal. Everything here works on a grid_t, so tests build an app_t on a temporary store,
// feed it keys with app_key and compare app_draw's grid with golden files. Only
// tui/workbench/term.c touches the terminal; app.c opens and closes the store, and only
// tui/workbench/app_data.c reads or writes it.
#ifndef LB_APP_H
#define LB_APP_H

#include <stddef.h>
#include <stdint.h>

#include "analysis.h"
#include "analyze.h"
#include "grid.h"
#include "keys.h"
#include "slurm.h"
#include "store.h"
#include "widgets.h"

#define APP_MIN_W 80
#define APP_MIN_H 24
#define APP_POLL_MS 250

typedef enum { SCR_RUNS, SCR_NEW, SCR_MONITOR, SCR_COMPARE, SCR_SWEEP, SCR_ANALYSIS, SCR_TRY, SCR_COUNT } screen_id_t;

// The metrics, evaluations and first samples of one run, read incrementally.
typedef struct {
    int64_t run_id;
    store_metric_t *m;
    size_t n, cap;
    store_eval_t *evals;
    size_t nevals;
    store_sample_row_t *samples;  // of the latest evaluation
    size_t nsamples;
    int64_t samples_eval_id;
    int64_t evals_version;        // data version at which evals were read (-1: never)
    int used;                     // seen in the last refresh (else dropped)
} app_series_t;

// A line of text the user is typing (filter, tags, note) or a y/N question.
typedef enum { PROMPT_NONE, PROMPT_CONFIRM, PROMPT_INPUT } prompt_kind_t;

typedef struct app app_t;

// Compare screen tabs.
enum { CMP_METRICS, CMP_CONFIG, CMP_CURVES, CMP_SAMPLES, CMP_NTABS };
// X axis of loss plots.
enum { XAXIS_STEP, XAXIS_TOKENS, XAXIS_TIME, XAXIS_N };

#define APP_MAX_COMPARE 16
#define APP_MAX_SELECT 64
#define APP_FORM_MAX 32
#define APP_MAX_PRESETS 48

struct app {
    // environment
    store_t *st;
    char *workspace;
    char exe[4096];            // the lorabench binary used to start workers
    int ascii;                 // no braille / box drawing
    double now;                // wall clock of the current frame (tests fix it)
    int fixed_now;             // 1: tests set now, the loop leaves it alone

    // data from the store
    store_run_t *runs;         // the run list as filtered and sorted
    size_t nruns;
    app_series_t *series;
    size_t nseries;
    int64_t data_version;
    int64_t pinned_id;         // the baseline run (0 = none), filtered out or not
    store_run_t pinned_run;    // its row, read apart from the list (valid when pinned_id)
    int pinned_listed;         // 1: it is in runs (the filter keeps it)
    char filter[256];
    char filter_error[256];
    char filter_before[256];   // the filter when / was pressed (Esc restores it)
    const char *sort_key;      // a store_run_keys key
    char sort_key_buf[32];     // the key read from <workspace>/ui-sort
    int sort_desc;

    // selection (by run id)
    int64_t selected[APP_MAX_SELECT];
    int nselected;

    // screens
    screen_id_t stack[8];
    int depth;
    table_view_t runs_view;
    int64_t monitor_id;
    int monitor_scroll;
    int64_t compare_ids[APP_MAX_COMPARE];
    int ncompare;
    int cmp_tab, cmp_diff_only, cmp_xaxis, cmp_logy, cmp_scroll, cmp_sample;
    int cmp_tab_x[CMP_NTABS + 1];  // where the tab titles were drawn (clicks)
    double smooth;             // EMA factor 0..0.999 for loss curves

    // new-run form
    form_field_t form[APP_FORM_MAX];
    int nform, form_focus, form_ready;
    char form_info[8][160];    // the live arithmetic lines
    int form_src_tokens, form_tgt_tokens;  // the spec's token limits, for the estimates
    int nform_info;
    char presets[APP_MAX_PRESETS][128];   // preset names: the bundled ones, then the user's
                               //   ("name (yours)", "name (workspace)", "name (DIR)")
    char preset_paths[APP_MAX_PRESETS][1200];  // their files
    int npresets;
    const char *preset_names[APP_MAX_PRESETS];  // pointers into presets, for the form's choice field
    char presets_dir[1024];    // experiments/presets (tests point it elsewhere)
    char user_presets_dir[1024];  // ~/.config/lorabench/presets ($XDG_CONFIG_HOME), or ""
    char opened_presets_dir[1024];// a folder opened from the form (Ctrl-O), or ""
    char default_model[1024];  // the form's base model and data set until a preset or the
    char default_dataset[1024];//   user changes them (--model/--dataset, environment, bundled)
    char *form_base;           // spec JSON the form starts from (the loaded preset's fields
                               //   it does not show: prefix, token limits, warmup...); NULL: defaults
    char *form_grid;           // the loaded preset's "grid" (JSON), run by Start while the
                               //   form's Grid box is ticked; NULL: none
    char form_preset_name[128];// the loaded preset's name (a grid's runs are named after it)
    int form_dirty;            // a field changed since the form was opened (leaving asks)
    int form_error_field;      // a field whose value the run would refuse (-1: none), and
    char form_error[200];      //   why, shown under it; Start refuses while there is one
    int64_t follow_after;      // after Start: the cursor moves to the first run with a larger
                               //   id when it appears (-1: nothing to follow)

    // cluster sweeps (sweep --slurm): their tasks not imported yet, read every few seconds
    slurm_task_t *tasks;
    size_t ntasks;
    char cluster_said[1024];  // the last "squeue could not be asked" message shown (once, not every sync)

    // sweep screen
    table_view_t sweep_view;
    int64_t sweep_id;          // 0: the most recent sweep
    int sweep_panel;           // below 140 columns, the picture shown: 0 ROUGE by setting,
                               //   1 loss curves, 2 ROUGE during training

    // analysis screen (screen_analysis.c; filled by app_analysis_open's worker thread)
    struct app_analysis_job *analysis_job;  // the computation behind the screen, NULL when none
    int analysis_pace_ms;      // tests: the worker waits this long before each matrix (a stop cuts it short)
    int64_t analysis_id;       // the run analysed (0: none)
    int64_t analysis_other;    // the LoRA run whose φ is shown against it (0: none)
    analyze_result_t analysis;
    analyze_sim_t *analysis_sim;  // φ per module both adapt, or NULL
    int analysis_nsim;
    int analysis_module;       // the module shown
    int analysis_cached;       // 1: read from analysis_cache, 0: computed and written there
    char analysis_cache[4200]; // runs/<id>/analysis.json

    // try screen (screen_try.c): the loaded models, the input, the outputs
    struct app_try *try_state; // NULL until opened

    // overlays and messages
    int help;
    int help_scroll;
    prompt_kind_t prompt;
    char prompt_text[256];
    char prompt_input[256];
    int prompt_pos;            // the input's cursor (a byte offset)
    int prompt_action;         // the action to run on yes / Enter
    int prompt_live;           // 0, or the action to run after every edit (a live filter)
    int prompt_cancel;         // 0, or the action to run on Esc
    int64_t prompt_run;
    char msg[512];
    int msg_style;
    // helper processes (train --detach, cancel, resume, sweep): a failure shows its message
    struct { int pid; long log_off; char what[32]; } helpers[8];
    int nhelpers;
    int quit;
    int spawn_record;          // tests: app_spawn records its arguments in spawned instead
    char spawned[1024];        //   of starting a process
    int mouse_x, mouse_y;
    int body_y, body_h;        // where the current screen's body was drawn
};

// A screen: its key table (the dispatcher and the help overlay both read it), its drawing
// function for the body rows [y, y+h), and its action handler (returns 1 when handled).
// key gets raw keys first (forms) and returns 1 when it used them.
typedef struct {
    const char *title;
    const key_binding_t *keys;
    int nkeys;
    void (*draw)(app_t *a, grid_t *g, int y, int h);
    int (*action)(app_t *a, int action, int key);
    int (*key)(app_t *a, int key);
    void (*click)(app_t *a, int x, int y);  // a mouse click in the body (NULL: none)
} screen_t;

extern const screen_t screen_runs, screen_new, screen_monitor, screen_compare, screen_sweep, screen_analysis, screen_try;

// Actions shared by every screen (app.c's global key table).
enum {
    ACT_NONE, ACT_QUIT, ACT_HELP, ACT_BACK, ACT_EXPORT,
    // screen-specific actions start here
    ACT_SCREEN = 100
};

// ---- app.c ----

// Sets up an app on an open store (not owned) and workspace; reads the first data.
void app_init(app_t *a, store_t *st, const char *workspace, int ascii);
void app_free(app_t *a);
// Draws the whole frame (title, current screen, message line, key bar, overlays).
void app_draw(app_t *a, grid_t *g);
// Handles one key; sets a->quit when the user quits.
void app_key(app_t *a, int key);
// Handles a mouse click at (x, y) on the frame app_draw drew last: the screen's rows,
// table headers (sort) and tabs.
void app_click(app_t *a, int x, int y);
// The current screen.
screen_id_t app_screen(const app_t *a);
void app_push(app_t *a, screen_id_t s);
void app_pop(app_t *a);
// Sets the message line.
void app_msg(app_t *a, int style, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Asks a y/N question; on yes the screen's action handler gets action again with
// a->prompt_run set to run.
void app_confirm(app_t *a, int action, int64_t run, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// Asks "cancel run?" (confirm_action on yes) when r is queued or running, else says why
// not. Shared by every screen that offers K.
void app_ask_cancel(app_t *a, const store_run_t *r, int confirm_action);
// The same for resume (r): only interrupted, cancelled or failed runs.
void app_ask_resume(app_t *a, const store_run_t *r, int confirm_action);
// Runs `lorabench cancel|resume RUN` (cmd) in the background once the user said yes, and
// says so (or why it could not start) on the message line.
void app_spawn_on_run(app_t *a, const char *cmd, int64_t run);
// Opens a one-line input with an initial value; Enter runs action (the text is in
// a->prompt_input).
void app_input(app_t *a, int action, int64_t run, const char *label, const char *initial);
// The next EMA smoothing factor up (dir 1) or down (-1) on a fixed ladder
// 0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999: small steps where they
// matter.
double app_smooth_step(double smooth, int dir);
// Decimals that show a smoothing factor exactly (2, or 3 for 0.995 and 0.999).
int app_smooth_digits(double smooth);
// The opened workbench (see tui/main.c): --workspace DIR, --ascii.
int tui_main(int argc, char **argv);

// ---- screen_new.c ----

// Opens the new-run form: filled in on first use (the first preset, then the session's
// model and data set); later it keeps the last values, with the focus back on Name.
void app_form_open(app_t *a);
// Opens the form filled from run r's spec ("clone this run"): every field and what the form
// does not show; the name is left to be made from the settings.
void app_form_clone(app_t *a, const store_run_t *r);

// ---- screen_try.c ----

// Opens the Try screen on runs ids (at most APP_MAX_SELECT): the base model of the runs
// (loaded once, in the background, at the first Enter) beside each run's adapter or model.
// Runs of different base models, or without weights, get a message instead.
void app_try_open(app_t *a, const int64_t *ids, int n);
// Stops the background generation (after its current output), waits for it and frees
// the models; nothing when the screen was never opened.
void app_try_close(app_t *a);
// 1 while the background generation runs (tests wait on it).
int app_try_busy(app_t *a);

// ---- screen_analysis.c ----

// Starts the analysis of run id (run: where analysis_run_find found its weights) on a
// worker thread and clears what was shown: the screen draws its progress and fills in when
// it is done. With other_run, φ against run other's adapter follows; other_error (may be
// NULL) is why φ was refused, shown when the analysis is done.
void app_analysis_start(app_t *a, int64_t id, const analysis_run_t *run, int64_t other,
                        const analysis_run_t *other_run, const char *other_error);
// Moves a finished analysis into a->analysis* (or its error onto the message line); 1 when
// it did. The screen calls it every frame.
int app_analysis_collect(app_t *a);
// 1 while the worker runs.
int app_analysis_busy(app_t *a);
// Waits for the worker, then collects (tests).
void app_analysis_wait(app_t *a);
// Stops the worker before its next matrix (nothing is cached), waits for it and frees it;
// nothing when there is none.
void app_analysis_stop(app_t *a);

// ---- app_data.c: everything the screens read from or write to the store ----

// Re-reads the run list (filter, sort) and the series of the runs on screen when the
// store changed or force is set. Returns 1 when something changed.
int app_data_refresh(app_t *a, int force);

// Brings the workspace's cluster sweeps up to date (squeue, the task workspaces): imports
// finished tasks' runs (saying so) and keeps the others in a->tasks for the runs list.
void app_cluster_sync(app_t *a);

// Pins run id as the baseline (pin = 1) or unpins it, then refreshes; -1 with err.
int app_pin_run(app_t *a, int64_t id, int pin, lb_err_t *err);

// The runs list's sort, remembered per workspace in <workspace>/ui-sort ("rouge1 desc"):
// app_sort_load (app_init) takes it when it names a store_run_keys key; app_sort_save
// writes the current one.
void app_sort_load(app_t *a);
void app_sort_save(app_t *a);
// Checks a filter expression (the runs list's `/`); -1 with err naming what is wrong.
int app_filter_check(const char *text, lb_err_t *err);
// The store's filter for what was typed: a bare word (no operator) is name~WORD.
void app_filter_expr(const char *text, char *out, size_t cap);
// The last lines (at most max, each cut to cap bytes) of a run's worker log,
// <workspace>/runs/<id>/worker.log, oldest first; returns how many (0: no log). path gets
// the log's file name.
int app_run_log_tail(app_t *a, int64_t id, char (*lines)[200], int max, char *path, size_t cap);
// The folder a run's weights are in, for generation: its adapter's (artifact "adapter") or
// its model's ("model", *is_model = 1); dir empty when the run stored neither (a run of
// method none, or one not finished). -1 with err when the store cannot be read.
int app_run_weights(app_t *a, int64_t id, char *dir, size_t cap, int *is_model, lb_err_t *err);
// The largest run id of the workspace (0: none), filter or not.
int64_t app_last_run_id(app_t *a);
// The run with this id in the current list (or the pinned baseline, listed or not), or NULL.
store_run_t *app_run_by_id(app_t *a, int64_t id);
// The series of a run (metrics read up to now), reading what is new; never NULL.
app_series_t *app_series(app_t *a, int64_t run_id);
// The latest evaluation of a series, or NULL.
const store_eval_t *app_series_last_eval(const app_series_t *s);
// Whether a run is selected; toggles selection: 1 selected, 0 unselected, -1 not selected
// because APP_MAX_SELECT runs already are.
int app_is_selected(const app_t *a, int64_t id);
int app_toggle_selected(app_t *a, int64_t id);
// Starts `lorabench ARGS...` detached (posix_spawn, output to runs/ui-spawn.log);
// returns 0 or -1 with a message in err. The helper is watched: app_helper_exited shows
// its last line of output when it fails.
int app_spawn(app_t *a, const char *const *args, lb_err_t *err);
// Called by the loop for a reaped child: a helper that failed puts its error (the last
// line it wrote to runs/ui-spawn.log) on the message line. Returns 1 when pid was a helper.
int app_helper_exited(app_t *a, int pid, int failed);
// Fills a->presets and a->preset_paths with the *.json of <presets_dir> (bundled: quick-demo
// first, the newcomer's demo, the rest alphabetically), then those of user_presets_dir,
// <workspace>/presets and opened_presets_dir, each named with where it is from.
void app_list_presets(app_t *a);
// Writes text to "<workspace>/exports/<stem>-<time>.<ext>"; *path gets the file name.
int app_export(app_t *a, const char *stem, const char *ext, const char *text, char *path,
               size_t cap, lb_err_t *err);
// The results table of runs in Markdown, the one `lorabench export --what sweep --format md`
// and `sweep` write (cli_results_table: ROUGE-1 with its 95% interval, trainable share,
// time; "–" where a run has no value). The caller frees it.
char *app_results_markdown(app_t *a, const store_run_t *const *runs, int n);
// The x value of metric row k for an XAXIS_* choice (NAN when unknown).
double app_metric_x(const store_metric_t *m, int xaxis);
// The loss-plot x axis name.
const char *app_xaxis_name(int xaxis);

// Starts the analysis of run id (experiments/run/analysis.h: read from
// runs/<id>/analysis.json or computed and cached there) and, when other > 0, the subspace
// similarity φ of the two LoRA runs' adapters, on a worker thread (app_analysis_start).
// -1 with err when run id cannot be analysed (nothing changes); 1 with err when φ cannot
// be (the analysis alone starts, analysis_other stays 0).
int app_analysis_open(app_t *a, int64_t id, int64_t other, lb_err_t *err);
// Stops the worker (app_analysis_stop) and frees what app_analysis_open read.
void app_analysis_clear(app_t *a);

// A growing text buffer for exports.
typedef struct {
    char *s;
    size_t len, cap;
} app_buf_t;
void app_buf_printf(app_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends a CSV field (quoted when needed) followed by sep (',' or '\n').
void app_buf_csv(app_buf_t *b, const char *field, char sep);

#endif
