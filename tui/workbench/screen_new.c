// The New-run screen: a form for a spec with the live arithmetic of what it trains
// (parameters, adapter size, memory and time estimates); presets load into it; Start writes
// the spec to a file and spawns `lorabench train FILE --detach` (with the loaded preset's grid
// while the Grid box is ticked: one run per grid point, as `lorabench sweep`).
// Keys: letters type only into text fields; Enter moves to the next field; only Enter on
// Start, or Ctrl-S from any field, starts; leaving a changed form asks first.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "data.h"
#include "app_params.h"
#include "spec.h"

enum { A_START = ACT_SCREEN, A_ENTER, A_NEXT, A_PREV, A_PRESET, A_LEAVE, A_QUIT, A_LEAVE_YES, A_QUIT_YES, A_OPEN,
       A_OPEN_PATH };

#define KEY_CTRL_S 0x13
#define KEY_CTRL_O 0x0f

static const key_binding_t keys[] = {
    {TK_DOWN, TK_TAB, A_NEXT, "Down/Tab", "next field", NULL},
    {TK_UP, TK_BTAB, A_PREV, "Up/S-Tab", "previous field", NULL},
    {TK_ENTER, 0, A_ENTER, "Enter", "next field; on Start: start; on Preset: load the preset", NULL},
    {KEY_CTRL_S, 0, A_START, "Ctrl-S", "start the run (or the preset's grid) from any field", "Start"},
    {TK_F1 + 4, 0, A_PRESET, "F5", "load the preset shown in the Preset field (every field)", "Preset"},
    {KEY_CTRL_O, 0, A_OPEN, "Ctrl-O", "open a spec file into the form, or a folder of presets into the Preset list", "Open"},
    {TK_ESC, 0, A_LEAVE, "Esc", "back to the runs (asks when a field was changed)", "Back"},
    {TK_F10, 0, A_QUIT, "F10", "quit (asks when a field was changed); q types into text fields", "Quit"},
    {TK_LEFT, TK_RIGHT, ACT_NONE, "Left/Right", "change a choice; move in a row of boxes", NULL},
    {' ', 0, ACT_NONE, "Space", "tick / untick a box", NULL},
    {0x15, 0, ACT_NONE, "Ctrl-U", "clear a text field", NULL},
};

enum { F_PRESET, F_NAME, F_MODEL, F_DATA, F_METHOD, F_R, F_ALPHA, F_DROPOUT, F_RSLORA, F_TARGETS,
       F_STACKS, F_ATTN, F_LAYERS, F_TOP, F_LR, F_BATCH, F_STEPS, F_EPOCHS, F_EVAL_LIMIT, F_BEAMS, F_GRID, F_START,
       F_N };

// The spec path each field sets: a grid that varies it overrides the field, so changing the
// field by hand unticks the grid.
static const char *const field_paths[F_N] = {
    [F_MODEL] = "base_model", [F_DATA] = "dataset.path", [F_METHOD] = "method", [F_R] = "lora.r",
    [F_ALPHA] = "lora.alpha", [F_DROPOUT] = "lora.dropout", [F_RSLORA] = "lora.rslora",
    [F_TARGETS] = "lora.targets", [F_STACKS] = "lora.stacks", [F_ATTN] = "lora.attention",
    [F_LAYERS] = "lora.layers", [F_TOP] = "partial.top_blocks", [F_LR] = "train.lr",
    [F_BATCH] = "train.batch_size", [F_STEPS] = "train.max_steps", [F_EPOCHS] = "train.epochs",
    [F_EVAL_LIMIT] = "eval.limit", [F_BEAMS] = "eval.beams"};

static const char *const methods[] = {"none", "lora", "full", "partial"};
static const char *const target_cols[] = {"q", "k", "v", "o", "wi", "wo", "head"};
static const char *const stack_cols[] = {"enc", "dec"};
static const char *const attn_cols[] = {"self", "cross"};
static const char *const one_row[] = {""};

static void set_text(form_field_t *f, field_kind_t kind, const char *label, const char *value, const char *hint) {
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->label = label;
    f->hint = hint;
    snprintf(f->value, sizeof f->value, "%s", value);
}

static void set_grid(form_field_t *f, const char *label, const char *const *cols, int ncols, uint64_t bits,
                     const char *hint) {
    memset(f, 0, sizeof *f);
    f->kind = FIELD_CHECKGRID;
    f->label = label;
    f->hint = hint;
    f->row_names = one_row;
    f->col_names = cols;
    f->rows = 1;
    f->cols = ncols;
    f->bits = bits;
}

static void form_from_spec(app_t *a, const spec_t *s) {
    form_field_t *f = a->form;
    char b[64];
    snprintf(f[F_NAME].value, sizeof f[F_NAME].value, "%s", s->name_auto || !s->name ? "" : s->name);
    if (s->base_model) snprintf(f[F_MODEL].value, sizeof f[F_MODEL].value, "%s", s->base_model);
    if (s->dataset.path) snprintf(f[F_DATA].value, sizeof f[F_DATA].value, "%s", s->dataset.path);
    f[F_METHOD].choice = (int)s->method;
    snprintf(f[F_R].value, sizeof f[F_R].value, "%d", s->lora.r);
    snprintf(f[F_ALPHA].value, sizeof f[F_ALPHA].value, "%g", s->lora.alpha);
    snprintf(f[F_DROPOUT].value, sizeof f[F_DROPOUT].value, "%g", s->lora.dropout);
    f[F_RSLORA].checked = s->lora.rslora;
    unsigned t = s->lora.targets;
    uint64_t bits = 0;
    if (t & SPEC_T_Q) bits |= 1;
    if (t & SPEC_T_K) bits |= 2;
    if (t & SPEC_T_V) bits |= 4;
    if (t & SPEC_T_O) bits |= 8;
    if (t & (SPEC_T_WI | SPEC_T_WI_0 | SPEC_T_WI_1)) bits |= 16;
    if (t & SPEC_T_WO) bits |= 32;
    if (t & SPEC_T_LM_HEAD) bits |= 64;
    f[F_TARGETS].bits = bits;
    f[F_STACKS].bits = s->lora.stacks ? s->lora.stacks : 3;
    f[F_ATTN].bits = s->lora.attention ? s->lora.attention : 3;
    if (s->lora.n_layers) {
        int n = 0;
        char *v = f[F_LAYERS].value;
        v[0] = 0;
        for (int i = 0; i < s->lora.n_layers && n < 200; i++)
            n += snprintf(v + n, sizeof f[F_LAYERS].value - (size_t)n, "%s%d", i ? "," : "", s->lora.layers[i]);
    } else {
        snprintf(f[F_LAYERS].value, sizeof f[F_LAYERS].value, "all");
    }
    snprintf(b, sizeof b, "%g", s->train.lr);
    snprintf(f[F_LR].value, sizeof f[F_LR].value, "%s", b);
    snprintf(f[F_BATCH].value, sizeof f[F_BATCH].value, "%d", s->train.batch_size);
    snprintf(f[F_STEPS].value, sizeof f[F_STEPS].value, "%d", s->train.max_steps);
    snprintf(f[F_EPOCHS].value, sizeof f[F_EPOCHS].value, "%d", s->train.epochs);
    snprintf(f[F_TOP].value, sizeof f[F_TOP].value, "%d", s->partial.top_blocks);
    snprintf(f[F_EVAL_LIMIT].value, sizeof f[F_EVAL_LIMIT].value, "%d", s->eval.limit);
    snprintf(f[F_BEAMS].value, sizeof f[F_BEAMS].value, "%d", s->eval.beams);
}

static void load_preset(app_t *a, int quiet);
static void form_info(app_t *a);

// The fields a grid point sets, from the loaded preset's grid point of the form's method:
// loading lora-vs-full shows LoRA with the grid's LoRA learning rate, not the preset's base
// one (the full fine-tune's), and choosing Method full by hand shows the full fine-tune's.
static void form_apply_grid_point(app_t *a) {
    cJSON *g = a->form_grid ? cJSON_Parse(a->form_grid) : NULL;
    const char *method = methods[a->form[F_METHOD].choice];
    for (const cJSON *k = g ? g->child : NULL; k; k = k->next) {
        // the parts of a joined key ("method+train.lr") and where "method" is among them
        char parts[8][64];
        int np = 0, mi = -1;
        for (const char *p = k->string; p && *p && np < 8;) {
            const char *e = strchr(p, '+');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            snprintf(parts[np], sizeof parts[np], "%.*s", (int)n, p);
            if (!strcmp(parts[np], "method")) mi = np;
            np++;
            p = e ? e + 1 : p + n;
        }
        if (mi < 0 || np < 2) continue;
        for (const cJSON *pt = k->child; pt; pt = pt->next) {
            const cJSON *m = cJSON_GetArrayItem(pt, mi);
            if (!cJSON_IsString(m) || strcmp(m->valuestring, method)) continue;
            for (int i = 0; i < np; i++) {
                const cJSON *v = cJSON_GetArrayItem(pt, i);
                for (int fi = 0; i != mi && v && fi < F_N; fi++) {
                    form_field_t *f = &a->form[fi];
                    if (!field_paths[fi] || strcmp(field_paths[fi], parts[i]) || (f->kind != FIELD_NUMBER && f->kind != FIELD_TEXT))
                        continue;
                    if (cJSON_IsNumber(v)) snprintf(f->value, sizeof f->value, "%g", v->valuedouble);
                    else if (cJSON_IsString(v)) snprintf(f->value, sizeof f->value, "%s", v->valuestring);
                }
            }
            break;
        }
    }
    cJSON_Delete(g);
}

// Which fields apply to the chosen method (the others are dimmed and skipped by focus).
static void form_update_disabled(app_t *a) {
    int m = a->form[F_METHOD].choice;
    for (int i = 0; i < a->nform; i++) {
        form_field_t *f = &a->form[i];
        // the Stacks boxes also choose partial's stack
        f->disabled = (i >= F_R && i <= F_LAYERS && m != SPEC_METHOD_LORA && !(i == F_STACKS && m == SPEC_METHOD_PARTIAL)) ||
                      (i == F_TOP && m != SPEC_METHOD_PARTIAL) || (i == F_PRESET && !a->npresets) ||
                      (i == F_GRID && !a->form_grid);
    }
}

static void form_setup(app_t *a) {
    form_field_t *f = a->form;
    app_list_presets(a);
    set_text(&f[F_PRESET], FIELD_CHOICE, "Preset", "", "Left/Right choose a preset; Enter or F5 loads it (every field, model and data included)");
    f[F_PRESET].choices = a->preset_names;
    f[F_PRESET].nchoices = a->npresets;
    if (!a->npresets) f[F_PRESET].disabled = 1;
    set_text(&f[F_NAME], FIELD_TEXT, "Name", "", "empty: made from the settings, e.g. lora-r8-qv");
    set_text(&f[F_MODEL], FIELD_TEXT, "Base model", a->default_model, "a Hugging Face T5 folder (config.json, model.safetensors, tokenizer.json)");
    set_text(&f[F_DATA], FIELD_TEXT, "Data set", a->default_dataset, "a folder with train/validation/test .jsonl/.json/.csv/.tsv files, or one file");
    set_text(&f[F_METHOD], FIELD_CHOICE, "Method", "", "none: zero-shot; lora: adapters; full: every weight; partial: the top blocks");
    f[F_METHOD].choices = methods;
    f[F_METHOD].nchoices = 4;
    f[F_METHOD].choice = 1;
    set_text(&f[F_R], FIELD_NUMBER, "Rank r", "8", "the rank of A [r, in] and B [out, r]");
    set_text(&f[F_ALPHA], FIELD_NUMBER, "Alpha", "16", "the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)");
    set_text(&f[F_DROPOUT], FIELD_NUMBER, "Dropout", "0.05", "dropout on the LoRA input only");
    set_text(&f[F_RSLORA], FIELD_CHECK, "rsLoRA", "", "scale by alpha / sqrt(r): steadier at high ranks");
    set_grid(&f[F_TARGETS], "Targets", target_cols, 7, 1 | 4, "modules that get adapters; wi means wi_0 and wi_1 on gated models");
    set_grid(&f[F_STACKS], "Stacks", stack_cols, 2, 3, "encoder and/or decoder blocks");
    set_grid(&f[F_ATTN], "Attention", attn_cols, 2, 3, "self- and/or cross-attention (q k v o only)");
    set_text(&f[F_LAYERS], FIELD_TEXT, "Layers", "all", "all, or block numbers like 0,1,2");
    set_text(&f[F_TOP], FIELD_NUMBER, "Top blocks", "2", "partial: train the top N blocks of each stack (0: every block)");
    set_text(&f[F_LR], FIELD_NUMBER, "Learning rate", "0.001", "AdamW peak learning rate");
    set_text(&f[F_BATCH], FIELD_NUMBER, "Batch size", "8", "examples per step");
    set_text(&f[F_STEPS], FIELD_NUMBER, "Max steps", "0", "0: train for the epochs below");
    set_text(&f[F_EPOCHS], FIELD_NUMBER, "Epochs", "1", "passes over the training split");
    set_text(&f[F_EVAL_LIMIT], FIELD_NUMBER, "Eval examples", "200", "validation examples scored with ROUGE (0: all)");
    set_text(&f[F_BEAMS], FIELD_NUMBER, "Eval beams", "1", "1: greedy decoding");
    set_text(&f[F_GRID], FIELD_CHECK, "Grid", "", "Space: run the loaded preset's grid (one run per point) or only the form's run");
    set_text(&f[F_START], FIELD_BUTTON, "Start", "", "Enter starts in the background (Ctrl-S does from any field)");
    a->nform = F_N;
    a->form_focus = F_NAME;
    a->form_ready = 1;
    spec_t d;
    spec_init_defaults(&d);
    a->form_src_tokens = d.dataset.max_source_tokens;
    a->form_tgt_tokens = d.dataset.max_target_tokens;
    spec_free(&d);
    free(a->form_base);
    a->form_base = NULL;
    free(a->form_grid);
    a->form_grid = NULL;
    if (a->npresets) {
        // the first preset (quick-demo) gives sensible sizes for a first run; the model and
        // data chosen for this session (--model, --dataset, bundled) stay
        load_preset(a, 1);
        snprintf(f[F_MODEL].value, sizeof f[F_MODEL].value, "%s", a->default_model);
        snprintf(f[F_DATA].value, sizeof f[F_DATA].value, "%s", a->default_dataset);
    }
    form_update_disabled(a);
    form_info(a);
}

static unsigned spec_targets_from_form(const form_field_t *f, int gated) {
    unsigned t = 0, b = (unsigned)f[F_TARGETS].bits;
    if (b & 1) t |= SPEC_T_Q;
    if (b & 2) t |= SPEC_T_K;
    if (b & 4) t |= SPEC_T_V;
    if (b & 8) t |= SPEC_T_O;
    if (b & 16) t |= gated ? SPEC_T_WI_0 | SPEC_T_WI_1 : SPEC_T_WI;
    if (b & 32) t |= SPEC_T_WO;
    if (b & 64) t |= SPEC_T_LM_HEAD;
    return t;
}

static int form_to_spec(app_t *a, spec_t *s, int estimate, lb_err_t *err);

// The compute of a whole run of `steps` optimizer steps in GFLOP: its training steps
// (forward + backward of every micro batch) and its evaluation (a forward per batch of
// examples, times EVAL_DECODE_COST for generating token by token). NaN when the step count
// is not known (steps < 0: epochs over a data set that could not be read).
#define EVAL_DECODE_COST 3.0
static double run_gflop(const spec_t *s, const app_spec_facts_t *fx, long steps) {
    double nsteps = s->method == SPEC_METHOD_NONE ? 0 : steps >= 0 ? (double)steps : NAN;
    double eval_n = s->eval.limit > 0 ? s->eval.limit : NAN;
    double fwd = fx->flops.forward / 1e9, bwd = fx->flops.backward / 1e9;
    double batches = ceil(eval_n / (fx->B > 0 ? fx->B : 1));
    return nsteps * (fwd + bwd) * (fx->grad_accum > 0 ? fx->grad_accum : 1) + batches * fwd * EVAL_DECODE_COST;
}

// The training examples of a spec's data set, read once per path and fields (data_set_load,
// as the runner's session_setup: one file is split by dataset.split_ratio, 0.9 by default);
// -1 with err when the path is not a data set. The last answer is kept: the form asks on
// every key.
static long form_train_examples(const spec_t *s, lb_err_t *err) {
    static char key[3000], msg[512];
    static long n = -1;
    static double mtime = -1;
    const char *path = s->dataset.path ? s->dataset.path : "";
    struct stat sb;
    double mt = stat(path, &sb) ? -2 : (double)sb.st_mtime;
    char k[3000];
    snprintf(k, sizeof k, "%s\n%s\n%s\n%g\n%lld", path, s->dataset.source ? s->dataset.source : "",
             s->dataset.target ? s->dataset.target : "", s->dataset.split_ratio, (long long)s->train.seed);
    if (strcmp(k, key) || mt != mtime) {
        snprintf(key, sizeof key, "%s", k);
        mtime = mt;
        data_options_t o = {.source_field = s->dataset.source, .target_field = s->dataset.target, .seed = (uint64_t)s->train.seed};
        if (mt >= 0 && S_ISREG(sb.st_mode)) {
            double r = s->dataset.split_ratio > 0 && s->dataset.split_ratio < 1 ? s->dataset.split_ratio : 0.9;
            o.split_ratio[0] = r;
            o.split_ratio[1] = (1 - r) / 2;
            o.split_ratio[2] = 1 - r - o.split_ratio[1];
        }
        data_set_t ds = {0};
        lb_err_t e = {0};
        const data_split_t *tr = NULL;
        n = -1;
        msg[0] = 0;
        if (!data_set_load(path, &o, &ds, &e) && (tr = data_set_split(&ds, "train", &e))) n = tr->n;
        else snprintf(msg, sizeof msg, "%.500s", e.msg);
        if (!e.msg[0] && n < 0) snprintf(msg, sizeof msg, "%.400s is not a data set", path);
        data_set_free(&ds);
    }
    if (n < 0) lb_err_set(err, LB_EARG, "dataset.path: %s", msg);
    return n;
}

// The effective speed (GFLOP/s, setup and evaluation included) of the newest finished run
// of this workspace; *run gets its id. Until one has finished, ASSUMED_GFLOPS: the
// quick-demo preset (8,750 GFLOP by run_gflop on t5-tiny) takes about 71 s on the 2-core
// development machine when it has the machine to itself.
#define ASSUMED_GFLOPS 120.0
static double form_rate(app_t *a, int64_t *run) {
    *run = 0;
    const store_run_t *best = NULL;
    for (size_t i = 0; i < a->nruns; i++) {
        const store_run_t *r = &a->runs[i];
        if (store_status_parse(r->status) != STORE_RUN_DONE || !r->spec || !(r->duration > 1)) continue;
        if (!best || r->id > best->id) best = r;
    }
    if (best) {
        spec_t s;
        lb_err_t err = {0};
        if (!spec_parse(best->spec, NULL, &s, &err)) {
            app_spec_facts_t *fx = xcalloc(1, sizeof *fx);
            long steps = best->total_steps > 0 ? (long)best->total_steps : s.train.max_steps > 0 ? s.train.max_steps : -1;
            double g = app_spec_facts(&s, fx, &err) ? NAN : run_gflop(&s, fx, steps);
            free(fx);
            spec_free(&s);
            if (isfinite(g) && g > 0) {
                *run = best->id;
                return g / best->duration;
            }
        }
    }
    return ASSUMED_GFLOPS;
}

// The line that says how long Start takes: the form's run, or every run of the grid while
// the Grid box is ticked ("Start runs the preset's grid: 3 runs, about 1m10s: ...").
static void form_time_line(app_t *a, const spec_t *s, char *out, size_t cap) {
    int64_t from = 0;
    double rate = form_rate(a, &from);
    spec_t *specs = NULL;
    size_t n = 1;
    lb_err_t err = {0};
    int grid = a->form_grid && a->form[F_GRID].checked;
    spec_t one;
    spec_copy(&one, s);
    if (grid) {
        free(one.grid_json);
        one.grid_json = xstrdup(a->form_grid);
    }
    if (spec_expand_grid(&one, &specs, &n, &err)) {
        snprintf(out, cap, "grid: %.140s", err.msg);
        spec_free(&one);
        return;
    }
    spec_free(&one);
    double total = 0;
    lb_err_t derr = {0};
    long examples = s->train.max_steps > 0 ? 0 : form_train_examples(s, &derr);  // epochs: count the data
    for (size_t i = 0; i < n; i++) {
        app_spec_facts_t *fx = xcalloc(1, sizeof *fx);
        long steps = examples >= 0 ? spec_total_steps(&specs[i], examples) : -1;
        total += app_spec_facts(&specs[i], fx, &err) ? NAN : run_gflop(&specs[i], fx, steps);
        free(fx);
    }
    spec_list_free(specs, n);
    // how the steps add up when they come from epochs: "4 epochs of 625 steps"
    char how[96] = "";
    if (s->train.max_steps <= 0 && examples >= 0 && s->method != SPEC_METHOD_NONE) {
        spec_t e1;
        spec_copy(&e1, s);
        e1.train.epochs = 1;
        long per = spec_total_steps(&e1, examples);
        spec_free(&e1);
        snprintf(how, sizeof how, ": %d epoch%s of %ld steps", s->train.epochs, s->train.epochs == 1 ? "" : "s", per);
    }
    char t[48], d[32], basis[64];
    if (from) snprintf(basis, sizeof basis, "at run #%lld's speed", (long long)from);
    else snprintf(basis, sizeof basis, "time: a guess until a run finishes here");
    if (isfinite(total)) snprintf(t, sizeof t, "about %s", fmt_duration(d, total / rate));
    else snprintf(t, sizeof t, "time depends on the data set's size");
    if (!grid) {
        snprintf(out, cap, "Start runs 1 run, %.36s%.40s (%.60s)", t, how, basis);
        return;
    }
    // the grid's values: "method+train.lr = none,0.003 | lora,0.003 | full,0.001"
    char vals[120] = "";
    cJSON *g = cJSON_Parse(a->form_grid);
    for (const cJSON *k = g ? g->child : NULL; k; k = k->next) {
        size_t len = strlen(vals);
        snprintf(vals + len, sizeof vals - len, "%s%s =", len ? "; " : "", k->string);
        int first = 1;
        for (const cJSON *v = k->child; v; v = v->next) {
            // ["none",0.003] reads as none,0.003
            char *txt = cJSON_PrintUnformatted(v), plain[64];
            size_t k = 0;
            for (const char *p = txt ? txt : "?"; *p && k < sizeof plain - 1; p++)
                if (!strchr("\"[]", *p)) plain[k++] = *p;
            plain[k] = 0;
            cJSON_free(txt);
            len = strlen(vals);
            snprintf(vals + len, sizeof vals - len, "%s%s", first ? " " : " | ", plain);
            first = 0;
        }
    }
    cJSON_Delete(g);
    if (snprintf(out, cap, "Start runs the preset's grid: %zu runs, %s: %s (%.40s)", n, t, vals, basis) >= (int)cap)
        return;  // a grid of many values: the line is shown as far as it fits
}

// Recomputes the arithmetic lines from the form: the spec it makes (every field, and what a
// loaded preset sets that the form does not show: rank patterns, norms_only, ...) and the
// engine's facts for it (app_spec_facts), so that the numbers are the run's.
// The first field whose value the run would refuse, into a->form_error(_field): a Layers
// block past the model's depth (on the stacks chosen), a data set path that is not one.
static void form_field_errors(app_t *a, const spec_t *s, const t5_config_t *cfg) {
    a->form_error_field = -1;
    a->form_error[0] = 0;
    if (s->method == SPEC_METHOD_LORA && cfg) {
        unsigned st = s->lora.stacks ? s->lora.stacks : 3;
        int depth = 0;
        if ((st & 1) && cfg->num_layers > depth) depth = cfg->num_layers;
        if ((st & 2) && cfg->num_decoder_layers > depth) depth = cfg->num_decoder_layers;
        for (int i = 0; i < s->lora.n_layers; i++)
            if (s->lora.layers[i] >= depth) {
                a->form_error_field = F_LAYERS;
                snprintf(a->form_error, sizeof a->form_error, "block %d is past the model's %d blocks; use 0..%d or all",
                         s->lora.layers[i], depth, depth - 1);
                return;
            }
    }
    lb_err_t err = {0};
    if (s->dataset.path && strcmp(s->dataset.path, "-") && form_train_examples(s, &err) < 0) {
        a->form_error_field = F_DATA;
        snprintf(a->form_error, sizeof a->form_error, "%.190s", err.msg);
    }
}

static void form_info(app_t *a) {
    a->nform_info = 0;
    a->form_error_field = -1;
    size_t cap = sizeof a->form_info[0];
    spec_t s;
    lb_err_t err = {0};
    if (form_to_spec(a, &s, 1, &err)) {
        snprintf(a->form_info[a->nform_info++], cap, "%.150s", err.msg);
        return;
    }
    app_spec_facts_t *fx = xcalloc(1, sizeof *fx);
    int facts = app_spec_facts(&s, fx, &err);
    form_field_errors(a, &s, facts ? NULL : &fx->cfg);
    if (facts) {
        snprintf(a->form_info[a->nform_info++], cap, "%.150s", err.msg);
        goto done;
    }
    const t5_facts_params_t *p = &fx->params;
    const t5_facts_memory_t *mem = &fx->mem;
    int method = s.method;
    char n1[32], n2[32], n3[32], n4[32], n5[32];
    double pct = p->total ? 100.0 * (double)p->trainable / (double)p->total : 0;  // as the runs list
    if (method == SPEC_METHOD_NONE) {
        snprintf(a->form_info[a->nform_info++], cap, "zero-shot: nothing is trained, the base model is evaluated");
    } else if (method == SPEC_METHOD_PARTIAL) {
        char top[32] = "every block";
        if (s.partial.top_blocks > 0) snprintf(top, sizeof top, "%d block%s", s.partial.top_blocks, s.partial.top_blocks == 1 ? "" : "s");
        snprintf(a->form_info[a->nform_info++], cap, "trainable %s of %s (%.3f%%): %sthe top %s of the %s",
                 fmt_int(n1, (int64_t)p->trainable), fmt_int(n2, (int64_t)p->total), pct,
                 s.partial.norms_only ? "the layer norms of " : "", top,
                 s.partial.stack == SPEC_PART_BOTH ? "encoder and decoder" : s.partial.stack == SPEC_PART_ENCODER ? "encoder" : "decoder");
    } else if (method == SPEC_METHOD_FULL) {
        snprintf(a->form_info[a->nform_info++], cap, "trainable %s of %s (%.3f%%): every weight, %d tensors",
                 fmt_int(n1, (int64_t)p->trainable), fmt_int(n2, (int64_t)p->total), pct, p->tensors);
    } else {
        snprintf(a->form_info[a->nform_info++], cap, "trainable %s of %s (%.3f%%) in %d module%s",
                 fmt_int(n1, (int64_t)p->trainable), fmt_int(n2, (int64_t)p->total), pct, p->modules,
                 p->modules == 1 ? "" : "s");
        app_lora_explain(p, a->ascii, a->form_info[a->nform_info++], cap);
    }
    char adapter[48] = "", packs[48] = "", n6[32];
    if (mem->adapter) snprintf(adapter, sizeof adapter, ", adapter %s", fmt_bytes(n5, (double)mem->adapter));
    if (mem->packings) snprintf(packs, sizeof packs, ", bf16 packings %s", fmt_bytes(n6, (double)mem->packings));
    snprintf(a->form_info[a->nform_info++], cap, "memory %s: weights %s%s%s, grads+AdamW %s, activations %s%s",
             fmt_bytes(n1, (double)mem->total), fmt_bytes(n2, (double)mem->weights), mem->weights_bf16 ? " (part bf16)" : "",
             adapter, fmt_bytes(n3, (double)(mem->grads + mem->optimizer)), fmt_bytes(n4, (double)mem->acts), packs);
    // FLOPs only: a time needs this machine's rate, which `lorabench bench` measures
    double fwd = fx->flops.forward / 1e9, bwd = fx->flops.backward / 1e9;
    char accum[32] = "";
    if (fx->grad_accum > 1) snprintf(accum, sizeof accum, " x %d micro batches", fx->grad_accum);
    if (method == SPEC_METHOD_NONE)
        snprintf(a->form_info[a->nform_info++], cap, "no training steps; a forward pass of batch %d, %d+%d tokens: %.2f GFLOP",
                 fx->B, fx->S, fx->T, fwd);
    else
        snprintf(a->form_info[a->nform_info++], cap,
                 "a step: %.2f GFLOP (forward %.2f, backward %.2f%s) at batch %d, %d+%d tokens; speed: lorabench bench",
                 (fwd + bwd) * fx->grad_accum, fwd, bwd, accum, fx->B, fx->S, fx->T);
    form_time_line(a, &s, a->form_info[a->nform_info++], cap);
done:
    free(fx);
    // a model folder without weights (t5-tiny while its pretraining runs) cannot be trained
    char w[1200];
    snprintf(w, sizeof w, "%s/model.safetensors", s.base_model ? s.base_model : "");
    if (access(w, R_OK))
        snprintf(a->form_info[a->nform_info++], cap,
                 "warning: %.60s has no model.safetensors yet; choose a model folder with weights", s.base_model ? s.base_model : "");
    spec_free(&s);
}

// The spec the form starts from: the loaded preset without its name and grid (so that the
// name is made from the settings unless one is typed), else the defaults.
static int form_base_spec(app_t *a, spec_t *s, lb_err_t *err) {
    if (!a->form_base) {
        spec_init_defaults(s);
        return 0;
    }
    return spec_parse(a->form_base, "the loaded preset", s, err);
}

// Builds a spec from the form; 0 or -1 with the first problem in err. estimate: for the
// arithmetic lines only, where an empty data set (which changes no number) is no error.
static int form_to_spec(app_t *a, spec_t *s, int estimate, lb_err_t *err) {
    form_field_t *f = a->form;
    if (form_base_spec(a, s, err)) return -1;
    // the paths first, as plain members: spec_set checks the whole spec, which needs both
    if (f[F_MODEL].value[0]) {
        free(s->base_model);
        s->base_model = xstrdup(f[F_MODEL].value);
    }
    if (f[F_DATA].value[0] || (estimate && !s->dataset.path)) {
        free(s->dataset.path);
        s->dataset.path = xstrdup(f[F_DATA].value[0] ? f[F_DATA].value : "-");
    }
    t5_config_t cfg = {0};
    lb_err_t ignore = {0};
    t5_config_load(&cfg, f[F_MODEL].value, &ignore);  // wi means wi_0 and wi_1 on a gated model
    char v[600];
    char targets[160] = "[";
    unsigned t = spec_targets_from_form(f, cfg.gated);
    for (int i = 0; i < SPEC_N_TARGETS; i++)
        if (t & (1u << i))
            snprintf(targets + strlen(targets), sizeof targets - strlen(targets), "%s\"%s\"", targets[1] ? "," : "",
                     spec_target_name(i));
    strcat(targets, "]");
    char stacks[64], attn[64];
    unsigned sb = (unsigned)f[F_STACKS].bits;
    snprintf(stacks, sizeof stacks, "[%s%s%s]", (sb & 1) ? "\"encoder\"" : "", (sb & 3) == 3 ? "," : "",
             (sb & 2) ? "\"decoder\"" : "");
    snprintf(attn, sizeof attn, "[%s%s%s]", (f[F_ATTN].bits & 1) ? "\"self\"" : "", (f[F_ATTN].bits & 3) == 3 ? "," : "",
             (f[F_ATTN].bits & 2) ? "\"cross\"" : "");
    const char *part_stack = (sb & 3) == 3 ? "\"both\"" : (sb & 1) ? "\"encoder\"" : (sb & 2) ? "\"decoder\"" : "\"none\"";
    int m = f[F_METHOD].choice;
    struct { const char *path; const char *val; int quote; int method; } sets[] = {
        {"base_model", f[F_MODEL].value, 1, -1},
        {"dataset.path", f[F_DATA].value, 1, -1},
        {"method", methods[m], 1, -1},
        {"lora.r", f[F_R].value, 0, SPEC_METHOD_LORA},
        {"lora.alpha", f[F_ALPHA].value, 0, SPEC_METHOD_LORA},
        {"lora.dropout", f[F_DROPOUT].value, 0, SPEC_METHOD_LORA},
        {"lora.rslora", f[F_RSLORA].checked ? "true" : "false", 0, SPEC_METHOD_LORA},
        {"lora.targets", targets, 0, SPEC_METHOD_LORA},
        {"lora.stacks", stacks, 0, SPEC_METHOD_LORA},
        {"lora.attention", attn, 0, SPEC_METHOD_LORA},
        {"lora.layers", f[F_LAYERS].value, 2, SPEC_METHOD_LORA},
        {"partial.top_blocks", f[F_TOP].value, 0, SPEC_METHOD_PARTIAL},
        {"partial.stack", part_stack, 0, SPEC_METHOD_PARTIAL},
        {"train.lr", f[F_LR].value, 0, -1},
        {"train.batch_size", f[F_BATCH].value, 0, -1},
        {"train.max_steps", f[F_STEPS].value, 0, -1},
        {"train.epochs", f[F_EPOCHS].value, 0, -1},
        {"eval.limit", f[F_EVAL_LIMIT].value, 0, -1},
        {"eval.beams", f[F_BEAMS].value, 0, -1},
        {"name", f[F_NAME].value, 1, -1},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        if (!strcmp(sets[i].path, "name") && !sets[i].val[0]) continue;
        if (sets[i].method >= 0 && sets[i].method != m) continue;
        if (sets[i].quote == 2) {
            if (!strcmp(sets[i].val, "all") || !sets[i].val[0]) snprintf(v, sizeof v, "\"all\"");
            else snprintf(v, sizeof v, "[%s]", sets[i].val);
        } else if (sets[i].quote) {
            // a JSON string: escape quotes and backslashes
            size_t k = 0;
            v[k++] = '"';
            for (const char *p = sets[i].val; *p && k < sizeof v - 3; p++) {
                if (*p == '"' || *p == '\\') v[k++] = '\\';
                v[k++] = *p;
            }
            v[k++] = '"';
            v[k] = 0;
        } else {
            snprintf(v, sizeof v, "%s", sets[i].val[0] ? sets[i].val : "null");
        }
        if (spec_set(s, sets[i].path, v, err)) {
            spec_free(s);
            return -1;
        }
    }
    return spec_check(s, err) ? (spec_free(s), -1) : 0;
}

// The checks `train` would make before it records a run, done here so that a mistake shows
// at once in the form: paths exist (made absolute, so the spec file works from anywhere),
// the model folder holds weights and a tokenizer.
static int form_check_paths(spec_t *s, lb_err_t *err) {
    if (spec_resolve_paths(s, NULL, err)) return -1;
    static const char *const need[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", s->base_model, need[i]);
        if (access(p, R_OK))
            return lb_err_set(err, LB_EARG, "base_model: %s has no %s; choose a T5 folder that has one", s->base_model,
                              need[i]);
    }
    return 0;
}

static void start_run(app_t *a) {
    spec_t s;
    lb_err_t err = {0};
    form_info(a);
    if (a->form_error_field >= 0) {
        app_msg(a, ST_ERROR, "%s: %s", a->form[a->form_error_field].label, a->form_error);
        a->form_focus = a->form_error_field;
        return;
    }
    if (form_to_spec(a, &s, 0, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    if (form_check_paths(&s, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        spec_free(&s);
        return;
    }
    int grid = a->form_grid && a->form[F_GRID].checked;
    if (grid) {
        // one run per grid point, named after the preset unless a name was typed
        s.grid_json = xstrdup(a->form_grid);
        if (!a->form[F_NAME].value[0] && a->form_preset_name[0]) {
            free(s.name);
            s.name = xstrdup(a->form_preset_name);
            s.name_auto = false;
        }
    }
    size_t nruns = 1;
    spec_t *points = NULL;
    if (grid && !spec_expand_grid(&s, &points, &nruns, &err)) spec_list_free(points, nruns);
    char *json = spec_to_json(&s, 1);
    char name[128];
    snprintf(name, sizeof name, "%s", s.name ? s.name : "");
    spec_free(&s);
    char path[4200];
    snprintf(path, sizeof path, "%s/runs/ui-spec-XXXXXX.json", a->workspace);
    int fd = mkstemps(path, 5);
    if (fd < 0) {
        app_msg(a, ST_ERROR, "cannot write a spec file under %s/runs; check that the folder is writable", a->workspace);
        free(json);
        return;
    }
    close(fd);
    if (lb_write_file_atomic(path, json, strlen(json), &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        free(json);
        return;
    }
    free(json);
    const char *args[] = {"train", path, "--detach", "--delete-spec", NULL};  // the spec file goes once read
    int64_t last = app_last_run_id(a);
    if (app_spawn(a, args, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    a->follow_after = last;  // the cursor goes to the new run when it is listed
    a->form_dirty = 0;
    app_pop(a);
    if (grid)
        app_msg(a, ST_GOOD, "starting the grid of %s: %zu runs, one after another (spec %s); they appear in a moment", name,
                nruns, path);
    else app_msg(a, ST_GOOD, "starting %s (spec %s); it appears in the list in a moment", name, path);
}

// Fills every field from a spec, keeping what the form does not show (prefix, token limits,
// warmup...) as the spec the form starts from; its grid becomes the form's (Grid ticked).
static void form_load_spec(app_t *a, spec_t *s, const char *name) {
    int grid = s->grid_json != NULL;
    if (grid) s->name_auto = true;  // a sweep's name would be every run's name
    free(a->form_grid);
    a->form_grid = grid ? xstrdup(s->grid_json) : NULL;
    a->form[F_GRID].checked = grid;
    snprintf(a->form_preset_name, sizeof a->form_preset_name, "%s", s->name ? s->name : name);
    form_from_spec(a, s);
    form_apply_grid_point(a);
    a->form_src_tokens = s->dataset.max_source_tokens;
    a->form_tgt_tokens = s->dataset.max_target_tokens;
    // keep what the form does not show; the name and the grid are the form's business
    char *json = spec_to_json(s, 0);
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (root) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "name");
        cJSON_DeleteItemFromObjectCaseSensitive(root, "grid");
        char *t = cJSON_PrintUnformatted(root);
        free(a->form_base);
        a->form_base = t ? xstrdup(t) : NULL;
        cJSON_free(t);
        cJSON_Delete(root);
    }
    form_update_disabled(a);
    form_info(a);
}

// Loads the preset under the Preset field into every field; quiet: no message (the form's
// first fill).
static void load_preset(app_t *a, int quiet) {
    form_field_t *f = &a->form[F_PRESET];
    if (!a->npresets) return;
    if (f->choice < 0 || f->choice >= a->npresets) f->choice = 0;
    spec_t s;
    lb_err_t err = {0};
    if (spec_load_file(a->preset_paths[f->choice], &s, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    int grid = s.grid_json != NULL;
    form_load_spec(a, &s, a->presets[f->choice]);
    spec_free(&s);
    if (!quiet) {
        a->form_dirty = 1;
        app_msg(a, ST_GOOD, "loaded preset %s%s", a->presets[f->choice],
                grid ? ": Start runs its grid (untick Grid for the form's one run)" : "");
    }
}

// Ctrl-O's answer: a spec file loads into the form; a folder of presets joins the Preset
// list (beside the bundled ones, ~/.config/lorabench/presets and <workspace>/presets).
static void open_path(app_t *a, const char *path) {
    struct stat sb;
    if (!path[0]) return;
    if (stat(path, &sb)) {
        app_msg(a, ST_ERROR, "%s: no such file or folder; give a spec file (.json) or a folder of presets", path);
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        int before = a->npresets;
        snprintf(a->opened_presets_dir, sizeof a->opened_presets_dir, "%s", path);
        app_list_presets(a);
        a->form[F_PRESET].nchoices = a->npresets;
        form_update_disabled(a);
        if (a->npresets > before) {
            a->form[F_PRESET].choice = before;
            a->form_focus = F_PRESET;
            int k = a->npresets - before;
            app_msg(a, ST_GOOD, "%d preset%s of %s %s in the Preset list now; Enter loads the one shown", k, k == 1 ? "" : "s",
                    path, k == 1 ? "is" : "are");
        } else {
            app_msg(a, ST_WARN, "%s has no new presets (*.json files); they may be listed already", path);
        }
        return;
    }
    spec_t s;
    lb_err_t err = {0};
    if (spec_load_file(path, &s, &err)) {
        app_msg(a, ST_ERROR, "%s", err.msg);
        return;
    }
    const char *base = strrchr(path, '/');
    form_load_spec(a, &s, base ? base + 1 : path);
    spec_free(&s);
    a->form_dirty = 1;
    app_msg(a, ST_GOOD, "loaded the spec %s into the form%s", path, a->form_grid ? ": Start runs its grid" : "");
}

static void draw(app_t *a, grid_t *g, int y, int h) {
    if (!a->form_ready) form_setup(a);
    form_update_disabled(a);
    int fw = g->w >= 120 ? g->w / 2 : g->w - 2;
    int labelw = 16;
    // fields scroll so that the focused one stays visible
    int infoh = a->nform_info + 2;
    int avail = h - infoh - 1;
    int top = 0, need = 0;
    for (int i = 0; i <= a->form_focus; i++) need += field_height(&a->form[i]) + (i == a->form_error_field);
    while (need > avail && top < a->form_focus) {
        need -= field_height(&a->form[top]) + (top == a->form_error_field);
        top++;
    }
    int yy = y;
    for (int i = top; i < a->nform && yy < y + avail; i++) {
        form_field_t *f = &a->form[i];
        if (yy + field_height(f) > y + avail) break;
        // text fields (paths, names) take the whole width; the rest stay in the left half
        int w = f->kind == FIELD_TEXT ? g->w - 2 : fw;
        field_draw(g, 1, yy, labelw, w, f, i == a->form_focus);
        yy += field_height(f);
        if (i == a->form_error_field && yy < y + avail) {  // what the run would refuse, under its field
            grid_text_trunc(g, 1 + labelw, yy, g->w - 2 - labelw, a->form_error, ST_ERROR);
            yy++;
        }
    }
    const form_field_t *cur = &a->form[a->form_focus];
    if (cur->hint) grid_text_trunc(g, 1, y + avail, g->w - 2, cur->hint, ST_DIM);
    int iy = y + h - infoh + 1;
    grid_hline(g, 0, iy - 1, g->w, ST_DIM);
    for (int i = 0; i < a->nform_info; i++)
        grid_text_trunc(g, 1, iy + i, g->w - 2, a->form_info[i], i == 0 ? ST_BOLD : ST_NORMAL);
}

// Whether the grid (JSON) varies a spec path: one of its keys, or a part of a joined key
// ("method+train.lr").
static int grid_varies(const char *grid_json, const char *path) {
    cJSON *g = cJSON_Parse(grid_json);
    int found = 0;
    size_t n = strlen(path);
    for (const cJSON *k = g ? g->child : NULL; k && !found; k = k->next)
        for (const char *p = k->string; p && *p && !found; p = strchr(p, '+') ? strchr(p, '+') + 1 : "")
            found = !strncmp(p, path, n) && (p[n] == 0 || p[n] == '+');
    cJSON_Delete(g);
    return found;
}

static int key(app_t *a, int k) {
    if (!a->form_ready) form_setup(a);
    form_field_t *f = &a->form[a->form_focus];
    if (f->kind == FIELD_CHECKGRID && (k == TK_UP || k == TK_DOWN)) return 0;
    if ((f->kind == FIELD_TEXT || f->kind == FIELD_NUMBER) && (k == TK_LEFT || k == TK_RIGHT)) return 1;
    int r = field_key(f, k);
    if (r == 2) {
        a->form_dirty = 1;
        const char *path = field_paths[a->form_focus];
        if (path && a->form_grid && a->form[F_GRID].checked && grid_varies(a->form_grid, path)) {
            // the grid would override what was just chosen
            a->form[F_GRID].checked = 0;
            app_msg(a, ST_WARN, "Grid unticked: the preset's grid sets %s; Start runs the form's one run", path);
        }
        if (a->form_focus == F_METHOD) form_apply_grid_point(a);  // the grid's lr for this method
        form_update_disabled(a);
        form_info(a);
    }
    if (r) return 1;
    // a letter never reaches a shortcut from a field: q on Method must not quit, e on Start
    // must not export
    if (k >= 0x20 && k < TK_UP && k != 0x7f && k != '?') {
        app_msg(a, ST_DIM, "letters type only into text fields; Ctrl-S starts, Esc leaves the form");
        return 1;
    }
    return 0;
}

static int action(app_t *a, int act, int k) {
    switch (act) {
    case A_NEXT:
    case A_PREV: {
        int d = act == A_NEXT ? 1 : -1, i = a->form_focus;
        for (int tries = 0; tries < a->nform; tries++) {
            i = (i + d + a->nform) % a->nform;
            if (!a->form[i].disabled) break;
        }
        a->form_focus = i;
        return 1;
    }
    case A_ENTER:
        if (a->form_focus == F_START) {
            start_run(a);
            return 1;
        }
        if (a->form_focus == F_PRESET) load_preset(a, 0);
        return action(a, A_NEXT, k);
    case A_START:
        start_run(a);
        return 1;
    case A_LEAVE:
        if (a->form_dirty)
            app_confirm(a, A_LEAVE_YES, 0, "Leave the form without starting? Its values stay for the next n. [y/N]");
        else app_pop(a);
        return 1;
    case A_QUIT:
        if (a->form_dirty) app_confirm(a, A_QUIT_YES, 0, "Quit without starting the run? The form's values are lost. [y/N]");
        else a->quit = 1;
        return 1;
    case A_LEAVE_YES:
        a->msg[0] = 0;
        app_pop(a);
        return 1;
    case A_QUIT_YES:
        a->quit = 1;
        return 1;
    case A_PRESET:
        load_preset(a, 0);
        return 1;
    case A_OPEN:
        app_input(a, A_OPEN_PATH, 0, "Spec file or presets folder: ", "");
        return 1;
    case A_OPEN_PATH:
        open_path(a, a->prompt_input);
        return 1;
    case ACT_EXPORT: {
        spec_t s;
        lb_err_t err = {0};
        if (form_to_spec(a, &s, 0, &err)) {
            app_msg(a, ST_ERROR, "%s", err.msg);
            return 1;
        }
        char *json = spec_to_json(&s, 1), path[4400];
        spec_free(&s);
        if (app_export(a, "spec", "json", json, path, sizeof path, &err)) app_msg(a, ST_ERROR, "%s", err.msg);
        else app_msg(a, ST_GOOD, "exported the spec to %s", path);
        free(json);
        return 1;
    }
    }
    return 0;
}

void app_form_open(app_t *a) {
    if (!a->form_ready) form_setup(a);
    a->form_focus = F_NAME;
    a->form_dirty = 0;
    app_push(a, SCR_NEW);
}

void app_form_clone(app_t *a, const store_run_t *r) {
    if (!a->form_ready) form_setup(a);
    spec_t s;
    lb_err_t err = {0};
    if (!r->spec || spec_parse(r->spec, "the run's spec", &s, &err)) {
        app_msg(a, ST_ERROR, "run %lld: %s", (long long)r->id, r->spec ? err.msg : "it has no stored spec to clone");
        return;
    }
    free(s.grid_json);  // a run is one grid point: its clone is that one run
    s.grid_json = NULL;
    s.name_auto = true;
    form_load_spec(a, &s, r->name);
    spec_free(&s);
    a->form_preset_name[0] = 0;
    a->form_focus = F_NAME;
    a->form_dirty = 0;
    app_push(a, SCR_NEW);
    app_msg(a, ST_GOOD, "a new run from run #%lld's spec (%s): change what should differ, then Start", (long long)r->id, r->name);
}

const screen_t screen_new = {"New run", keys, sizeof keys / sizeof keys[0], draw, action, key, NULL};
