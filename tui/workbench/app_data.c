// The workbench's data access: the one file of tui/ that reads and writes the store, starts
// helper processes and writes exports.
#include "analysis.h"
#include "app.h"
#include "cli_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define APP_SAMPLES 40

static app_series_t *series_find(app_t *a, int64_t id) {
    for (size_t i = 0; i < a->nseries; i++)
        if (a->series[i].run_id == id) return &a->series[i];
    return NULL;
}

// Appends the metric rows after the last one read.
static void series_read_metrics(app_t *a, app_series_t *s) {
    int64_t after = s->n ? s->m[s->n - 1].step : -1;
    store_metric_t *rows = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    if (store_metrics_since(a->st, s->run_id, after, &rows, &n, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2 + 16;
        s->m = xrealloc(s->m, s->cap * sizeof *s->m);
    }
    if (n) memcpy(s->m + s->n, rows, n * sizeof *rows);
    s->n += n;
    free(rows);
}

static void series_read_evals(app_t *a, app_series_t *s) {
    lb_err_t err = {0};
    store_eval_t *ev = NULL;
    size_t n = 0;
    if (store_evals_list(a->st, s->run_id, &ev, &n, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    free(s->evals);
    s->evals = ev;
    s->nevals = n;
    s->evals_version = a->data_version;
    const store_eval_t *last = app_series_last_eval(s);
    if (last && last->id != s->samples_eval_id) {
        store_samples_free(s->samples, s->nsamples);
        s->samples = NULL;
        s->nsamples = 0;
        if (store_samples_list(a->st, last->id, 0, APP_SAMPLES, &s->samples, &s->nsamples, &err))
            app_msg(a, ST_ERROR, "%s", err.msg);
        s->samples_eval_id = last->id;
    }
}

app_series_t *app_series(app_t *a, int64_t run_id) {
    app_series_t *s = series_find(a, run_id);
    if (!s) {
        a->series = xrealloc(a->series, (a->nseries + 1) * sizeof *a->series);
        s = &a->series[a->nseries++];
        memset(s, 0, sizeof *s);
        s->run_id = run_id;
        s->evals_version = -1;
        series_read_metrics(a, s);
    }
    if (s->evals_version != a->data_version) series_read_evals(a, s);
    s->used = 1;
    return s;
}

const store_eval_t *app_series_last_eval(const app_series_t *s) {
    return s->nevals ? &s->evals[s->nevals - 1] : NULL;
}

static int in_compare(const app_t *a, int64_t id) {
    for (int i = 0; i < a->ncompare; i++)
        if (a->compare_ids[i] == id) return 1;
    return 0;
}

void app_cluster_sync(app_t *a) {
    slurm_task_t *tasks;
    size_t n;
    int imported;
    lb_err_t err = {0};
    int rc = slurm_sync(a->st, a->workspace, &tasks, &n, &imported, &err);
    if (rc == 1) {  // squeue unavailable: said once (syncs come every 2 s), again when it changes
        if (strcmp(a->cluster_said, err.msg)) app_msg(a, ST_ERROR, "cluster sweeps: %s", err.msg);
        snprintf(a->cluster_said, sizeof a->cluster_said, "%s", err.msg);
    } else {
        a->cluster_said[0] = 0;
    }
    if (rc == -1) app_msg(a, ST_ERROR, "cluster sweeps: %s", err.msg);
    else if (!rc && imported) app_msg(a, ST_NORMAL, "imported %d finished cluster run%s", imported, imported == 1 ? "" : "s");
    free(a->tasks);
    a->tasks = tasks;
    a->ntasks = n;
    // data_version moves only for other connections' commits, not for this one's imports
    if (imported) app_data_refresh(a, 1);
}

int app_data_refresh(app_t *a, int force) {
    lb_err_t err = {0};
    int64_t v = 0;
    if (store_data_version(a->st, &v, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return 0;
    }
    if (v == a->data_version && !force) return 0;
    a->data_version = v;
    store_run_t *runs = NULL;
    size_t n = 0;
    char expr[600];
    app_filter_expr(a->filter, expr, sizeof expr);
    if (store_runs_list(a->st, a->sort_key, a->sort_desc, expr[0] ? expr : NULL, &runs, &n, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return 0;
    }
    // the cursor stays on its run when rows come and go above it (a new run is listed first)
    int64_t cur_id = a->runs_view.cursor >= 0 && (size_t)a->runs_view.cursor < a->nruns ? a->runs[a->runs_view.cursor].id : 0;
    store_runs_free(a->runs, a->nruns);
    a->runs = runs;
    a->nruns = n;
    for (size_t i = 0; cur_id && i < n; i++)
        if (runs[i].id == cur_id) {
            a->runs_view.top += (int)i - a->runs_view.cursor;
            if (a->runs_view.top < 0) a->runs_view.top = 0;
            a->runs_view.cursor = (int)i;
            break;
        }
    // after Start: the cursor goes to the first new run once it is listed
    int64_t first_new = 0;
    for (size_t i = 0; a->follow_after >= 0 && i < n; i++)
        if (runs[i].id > a->follow_after && (!first_new || runs[i].id < first_new)) first_new = runs[i].id;
    for (size_t i = 0; first_new && i < n; i++)
        if (runs[i].id == first_new) {
            a->runs_view.cursor = (int)i;
            a->follow_after = -1;
        }
    // the baseline holds whatever the filter hides: it is looked up in the whole workspace
    int64_t pinned = 0;
    a->pinned_listed = 0;
    for (size_t i = 0; i < n; i++)
        if (runs[i].pinned) {
            pinned = runs[i].id;
            a->pinned_listed = 1;
        }
    if (!pinned && a->filter[0]) {
        store_run_t *all = NULL;
        size_t nall = 0;
        if (!store_runs_list(a->st, "id", 1, NULL, &all, &nall, &err))
            for (size_t i = 0; i < nall; i++)
                if (all[i].pinned) pinned = all[i].id;
        store_runs_free(all, nall);
    }
    if (a->pinned_id) store_run_clear(&a->pinned_run);
    a->pinned_id = 0;
    if (pinned && !store_run_get(a->st, pinned, &a->pinned_run, &err)) a->pinned_id = pinned;
    // keep the series of the runs listed or open in a screen; read what is new
    for (size_t i = 0; i < a->nseries; i++) a->series[i].used = 0;
    for (size_t i = 0; i < n; i++) {
        app_series_t *s = series_find(a, runs[i].id);
        if (!s) s = app_series(a, runs[i].id);
        else series_read_metrics(a, s);
        s->used = 1;
    }
    for (int i = 0; i < a->ncompare; i++) app_series(a, a->compare_ids[i]);
    if (a->monitor_id) app_series(a, a->monitor_id);
    if (a->pinned_id) app_series(a, a->pinned_id);
    size_t k = 0;
    for (size_t i = 0; i < a->nseries; i++) {
        app_series_t *s = &a->series[i];
        if (s->used || in_compare(a, s->run_id) || s->run_id == a->monitor_id) {
            a->series[k++] = *s;
        } else {
            free(s->m);
            free(s->evals);
            store_samples_free(s->samples, s->nsamples);
        }
    }
    a->nseries = k;
    return 1;
}

int app_pin_run(app_t *a, int64_t id, int pin, lb_err_t *err) {
    if (store_run_set_pinned(a->st, id, pin, err)) return -1;
    app_data_refresh(a, 1);
    return 0;
}

void app_sort_load(app_t *a) {
    char path[4200], key[32] = "", dir[8] = "";
    snprintf(path, sizeof path, "%s/ui-sort", a->workspace);
    FILE *f = fopen(path, "r");
    if (!f) return;
    int n = fscanf(f, "%31s %7s", key, dir);
    fclose(f);
    if (n < 1) return;
    // only a key the store knows (the file may be from another version)
    const char *keys = store_run_keys(), *p = keys;
    size_t len = strlen(key);
    int known = 0;
    while ((p = strstr(p, key))) {
        known |= (p == keys || p[-1] == ' ' || p[-1] == ',') && (p[len] == 0 || p[len] == ',' || p[len] == ' ');
        p += len;
    }
    if (!known) return;
    snprintf(a->sort_key_buf, sizeof a->sort_key_buf, "%s", key);
    a->sort_key = a->sort_key_buf;
    a->sort_desc = strcmp(dir, "asc") != 0;
}

void app_sort_save(app_t *a) {
    char path[4200], text[64];
    snprintf(path, sizeof path, "%s/ui-sort", a->workspace);
    snprintf(text, sizeof text, "%s %s\n", a->sort_key, a->sort_desc ? "desc" : "asc");
    lb_err_t err = {0};
    if (lb_write_file_atomic(path, text, strlen(text), &err)) app_msg(a, ST_WARN, "the sort is not remembered: %s", err.msg);
}

void app_filter_expr(const char *text, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (const char *p = text; *p && n + 1 < cap;) {
        if (*p == ' ') {
            out[n++] = *p++;
            continue;
        }
        // one term: up to a space outside quotes
        const char *e = p;
        char q = 0;
        while (*e && (q || *e != ' ')) {
            if (*e == '"' || *e == '\'') q = q == *e ? 0 : q ? q : *e;
            e++;
        }
        int bare = strcspn(p, "=<>~!") >= (size_t)(e - p) && *p != '"' && *p != '\'';
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", bare ? "name~" : "", (int)(e - p), p);
        if (n >= cap) n = cap - 1;
        p = e;
    }
    out[n] = 0;  // a trailing space (text typed so far) is copied without a terminator
}

int app_filter_check(const char *text, lb_err_t *err) {
    store_filter_t *f = NULL;
    char expr[600];
    app_filter_expr(text, expr, sizeof expr);
    if (store_filter_parse(expr, &f, err)) return -1;
    store_filter_free(f);
    return 0;
}

int app_run_log_tail(app_t *a, int64_t id, char (*lines)[200], int max, char *path, size_t cap) {
    char *dir = NULL;
    lb_err_t err = {0};
    if (store_run_dir(a->workspace, id, 0, &dir, &err)) return 0;
    snprintf(path, cap, "%s/worker.log", dir);
    free(dir);
    FILE *f = fopen(path, "r");
    if (!f || max < 1) {
        if (f) fclose(f);
        return 0;
    }
    // the tail only: a long run's log can be large
    if (fseek(f, -16384, SEEK_END)) rewind(f);
    int n = 0;
    char line[200];
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        if (line[len] == 0 && !feof(f)) {  // the rest of a line longer than a row
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        }
        line[len] = 0;
        if (!line[0]) continue;
        if (n == max) {
            memmove(lines[0], lines[1], (size_t)(max - 1) * sizeof lines[0]);
            n--;
        }
        snprintf(lines[n++], sizeof lines[0], "%s", line);
    }
    fclose(f);
    return n;
}

int64_t app_last_run_id(app_t *a) {
    store_run_t *runs = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    int64_t last = 0;
    if (store_runs_list(a->st, "id", 1, NULL, &runs, &n, &err)) return 0;
    for (size_t i = 0; i < n; i++)
        if (runs[i].id > last) last = runs[i].id;
    store_runs_free(runs, n);
    return last;
}

store_run_t *app_run_by_id(app_t *a, int64_t id) {
    for (size_t i = 0; i < a->nruns; i++)
        if (a->runs[i].id == id) return &a->runs[i];
    if (id && id == a->pinned_id) return &a->pinned_run;
    return NULL;
}

int app_is_selected(const app_t *a, int64_t id) {
    for (int i = 0; i < a->nselected; i++)
        if (a->selected[i] == id) return 1;
    return 0;
}

int app_toggle_selected(app_t *a, int64_t id) {
    for (int i = 0; i < a->nselected; i++)
        if (a->selected[i] == id) {
            memmove(&a->selected[i], &a->selected[i + 1], (size_t)(a->nselected - i - 1) * sizeof *a->selected);
            a->nselected--;
            return 0;
        }
    if (a->nselected == APP_MAX_SELECT) return -1;
    a->selected[a->nselected++] = id;
    return 1;
}

int app_spawn(app_t *a, const char *const *args, lb_err_t *err) {
    if (a->spawn_record) {
        a->spawned[0] = 0;
        for (int i = 0; args[i]; i++)
            snprintf(a->spawned + strlen(a->spawned), sizeof a->spawned - strlen(a->spawned), "%s%s", i ? " " : "", args[i]);
        return 0;
    }
    const char *argv[32];
    int n = 0;
    argv[n++] = a->exe;
    for (int i = 0; args[i] && n < 28; i++) argv[n++] = args[i];
    argv[n++] = "--workspace";
    argv[n++] = a->workspace;
    argv[n] = NULL;
    char log[4200];
    snprintf(log, sizeof log, "%s/runs/ui-spawn.log", a->workspace);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    // its own process group: a Ctrl-C in the workbench must not reach a training worker
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    // where this helper's output starts in the shared log, to quote it if it fails
    struct stat sb;
    long off = stat(log, &sb) ? 0 : (long)sb.st_size;
    pid_t pid;
    int rc = posix_spawn(&pid, cli_self_exe(), &fa, &at, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc)
        return lb_err_set(err, LB_EIO, "cannot start %s %s: %s; check that the binary exists", a->exe,
                          args[0] ? args[0] : "", strerror(rc));
    int n_h = (int)(sizeof a->helpers / sizeof a->helpers[0]);
    if (a->nhelpers == n_h) {  // forget the oldest
        memmove(&a->helpers[0], &a->helpers[1], (size_t)(n_h - 1) * sizeof a->helpers[0]);
        a->nhelpers--;
    }
    a->helpers[a->nhelpers].pid = (int)pid;
    a->helpers[a->nhelpers].log_off = off;
    snprintf(a->helpers[a->nhelpers].what, sizeof a->helpers[0].what, "%s", args[0] ? args[0] : "");
    a->nhelpers++;
    return 0;
}

int app_helper_exited(app_t *a, int pid, int failed) {
    int k = 0;
    while (k < a->nhelpers && a->helpers[k].pid != pid) k++;
    if (k == a->nhelpers) return 0;
    long off = a->helpers[k].log_off;
    char what[32];
    snprintf(what, sizeof what, "%s", a->helpers[k].what);
    memmove(&a->helpers[k], &a->helpers[k + 1], (size_t)(a->nhelpers - k - 1) * sizeof a->helpers[0]);
    a->nhelpers--;
    if (!failed) return 1;
    a->follow_after = -1;  // a start that failed has no new run for the cursor to go to
    // the helper's last line of output is its one-sentence error; helpers share the log, so
    // a line of the command line's own errors ("lorabench: ...") is preferred to another
    // helper's progress written after it
    char log[4200], last[400] = "", last_err[400] = "";
    snprintf(log, sizeof log, "%s/runs/ui-spawn.log", a->workspace);
    FILE *f = fopen(log, "r");
    if (f) {
        char line[400];
        if (fseek(f, off, SEEK_SET)) rewind(f);
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (line[0]) snprintf(last, sizeof last, "%s", line);
            if (!strncmp(line, "lorabench: ", 11)) snprintf(last_err, sizeof last_err, "%s", line + 11);
        }
        fclose(f);
    }
    if (last_err[0]) app_msg(a, ST_ERROR, "%s failed: %s", what, last_err);
    else if (last[0]) app_msg(a, ST_ERROR, "%s failed: %s", what, last);
    else app_msg(a, ST_ERROR, "%s failed; see %s", what, log);
    a->data_version = -1;  // the run list may have changed
    return 1;
}

// quick-demo first: it is what a newcomer should start from
static int preset_cmp(const void *x, const void *y) {
    const char *p = x, *q = y;
    int px = !strcmp(p, "quick-demo"), qy = !strcmp(q, "quick-demo");
    if (px != qy) return qy - px;
    return strcmp(p, q);
}

// Appends the *.json of dir, named "NAME" (from = NULL) or "NAME (from)", sorted.
static void presets_add_dir(app_t *a, const char *dir, const char *from) {
    if (!dir || !dir[0]) return;
    DIR *d = opendir(dir);
    if (!d) return;
    char names[APP_MAX_PRESETS][128];
    int n = 0, room = APP_MAX_PRESETS - a->npresets;
    struct dirent *e;
    while ((e = readdir(d)) && n < room) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json") && len - 5 < 100)
            snprintf(names[n++], sizeof names[0], "%.*s", (int)(len - 5), e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], preset_cmp);
    for (int i = 0; i < n; i++) {
        int k = a->npresets++;
        if (from) snprintf(a->presets[k], sizeof a->presets[k], "%.100s (%.20s)", names[i], from);
        else snprintf(a->presets[k], sizeof a->presets[k], "%.100s", names[i]);
        snprintf(a->preset_paths[k], sizeof a->preset_paths[k], "%.1000s/%.100s.json", dir, names[i]);
    }
}

void app_list_presets(app_t *a) {
    a->npresets = 0;
    presets_add_dir(a, a->presets_dir, NULL);
    presets_add_dir(a, a->user_presets_dir, "yours");
    char ws[1100];
    snprintf(ws, sizeof ws, "%.1000s/presets", a->workspace);
    presets_add_dir(a, ws, "workspace");
    if (a->opened_presets_dir[0] && strcmp(a->opened_presets_dir, ws) && strcmp(a->opened_presets_dir, a->user_presets_dir) &&
        strcmp(a->opened_presets_dir, a->presets_dir)) {
        const char *base = strrchr(a->opened_presets_dir, '/');
        presets_add_dir(a, a->opened_presets_dir, base && base[1] ? base + 1 : a->opened_presets_dir);
    }
    for (int i = 0; i < a->npresets; i++) a->preset_names[i] = a->presets[i];
}

int app_export(app_t *a, const char *stem, const char *ext, const char *text, char *path,
               size_t cap, lb_err_t *err) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/exports", a->workspace);
    if (mkdir(dir, 0755) && errno != EEXIST)
        return lb_err_set(err, LB_EIO, "cannot create %s: %s", dir, strerror(errno));
    time_t t = (time_t)a->now;
    struct tm tm;
    localtime_r(&t, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(path, cap, "%s/%s-%s.%s", dir, stem, stamp, ext);
    return lb_write_file_atomic(path, text, strlen(text), err);
}

void app_analysis_clear(app_t *a) {
    app_analysis_stop(a);
    analyze_result_free(&a->analysis);
    analyze_sim_free(a->analysis_sim, a->analysis_nsim);
    a->analysis_sim = NULL;
    a->analysis_nsim = 0;
    a->analysis_id = a->analysis_other = 0;
    a->analysis_module = 0;
}

int app_analysis_open(app_t *a, int64_t id, int64_t other, lb_err_t *err) {
    // Only finding the runs reads the store; the worker reads files alone.
    analysis_run_t run, ra, rb;
    if (analysis_run_find(a->st, a->workspace, id, &run, err)) return -1;
    int pair = other > 0 && analysis_runs_find_pair(a->st, a->workspace, id, other, &ra, &rb, err) == 0;
    app_analysis_start(a, id, &run, pair ? other : 0, pair ? &rb : NULL, other > 0 && !pair ? err->msg : NULL);
    return other > 0 && !pair ? 1 : 0;
}

char *app_results_markdown(app_t *a, const store_run_t *const *runs, int n) {
    store_run_t *rows = xcalloc(n > 0 ? (size_t)n : 1, sizeof *rows);
    for (int i = 0; i < n; i++) rows[i] = *runs[i];  // shallow: cli_results_table only reads
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        cli_results_table(f, a->st, rows, (size_t)n, 1);
        fclose(f);
    }
    free(rows);
    return text ? text : xstrdup("");
}

double app_metric_x(const store_metric_t *m, int xaxis) {
    switch (xaxis) {
    case XAXIS_TOKENS: return m->tokens >= 0 ? (double)m->tokens : NAN;
    case XAXIS_TIME: return m->wall_s;
    default: return (double)m->step;
    }
}

const char *app_xaxis_name(int xaxis) {
    switch (xaxis) {
    case XAXIS_TOKENS: return "tokens";
    case XAXIS_TIME: return "seconds";
    default: return "step";
    }
}

void app_buf_printf(app_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void app_buf_csv(app_buf_t *b, const char *field, char sep) {
    const char *f = field ? field : "";
    if (strpbrk(f, ",\"\n\r")) {
        app_buf_printf(b, "\"");
        for (const char *p = f; *p; p++) app_buf_printf(b, *p == '"' ? "\"\"" : "%c", *p);
        app_buf_printf(b, "\"%c", sep);
    } else {
        app_buf_printf(b, "%s%c", f, sep);
    }
}

int app_run_weights(app_t *a, int64_t id, char *dir, size_t cap, int *is_model, lb_err_t *err) {
    store_artifact_t *rows = NULL;
    size_t n = 0;
    dir[0] = 0;
    *is_model = 0;
    if (store_artifacts_list(a->st, id, NULL, &rows, &n, err)) return -1;
    // the newest adapter or model file; its folder is what generation loads
    for (size_t i = n; i-- > 0 && !dir[0];) {
        int model = !strcmp(rows[i].kind, "model");
        if (!model && strcmp(rows[i].kind, "adapter")) continue;
        const char *slash = strrchr(rows[i].path, '/');
        int len = slash ? (int)(slash - rows[i].path) : 1;
        snprintf(dir, cap, "%.*s", len, slash ? rows[i].path : ".");
        *is_model = model;
    }
    store_artifacts_free(rows, n);
    return 0;
}
