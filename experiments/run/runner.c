#include "runner.h"

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
#include <sys/wait.h>
#include <unistd.h>

#include "data.h"
#include "evaluate.h"
#include "lora.h"
#include "lora_t5.h"
#include "optim.h"
#include "safetensors.h"
#include "sha256.h"
#include "spancorrupt.h"
#include "t5.h"
#include "t5_facts.h"
#include "t5_init.h"
#include "t5_save.h"
#include "tokenizer.h"
#include "train.h"

extern char **environ;

// Encoder outputs of the training examples (train.cache_encoder). When nothing in the
// encoder trains, each example's output rows [n_src, D] are computed once, without
// dropout, and reused by every later epoch; examples past the budget are recomputed.
typedef struct {
    int on, D;
    float **rows;         // [n_rows] (one per training example), NULL until computed
    int n_rows;
    size_t bytes, budget;
    long computed, reused;  // example encodings computed / taken from the cache
    int over_budget;      // some example did not fit
    float *batch;         // [B, S, D]: the current batch's encoder output
} enc_cache_t;

// Everything one run holds while it executes.
typedef struct {
    spec_t spec;
    char *run_dir;
    const char *uuid, *spec_hash;  // the run's identity (NULL: a run from before schema 4)
    t5_model_t model;
    int model_loaded;
    tokenizer_t *tok;
    data_set_t ds;
    int ds_loaded;
    data_tokenized_t train;
    int train_loaded;
    train_params_t tp;           // what the method trains (adapter or the model's block)
    train_t tr;                  // optimizer state; tr.step: optimizer steps done
    int tr_ready;
    train_data_feed_t feed;      // micro batches; feed.epoch, feed.batch: where the next starts
    int feed_ready;
    t5_precision_t precision;    // what the products use (train.precision resolved)
    t5_acts_t *acts;
    int max_s, max_t;
    long total_steps, steps_per_epoch, batches_per_epoch;
    long tokens_seen;
    double last_loss;
    int span;                    // objective span_corruption (pretraining)
    int sentinels[100];
    int n_sentinels;
    enc_cache_t enc;
    int lead;                    // writes the store, checkpoints and results (not a data-parallel rank > 0)
    double step_s, comm_s;       // data parallel: time in steps and in their sums, this process
} session_t;

static int encode_cb(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    return tokenizer_encode(ctx, text, 1, ids, n, err);
}

// Without the template's </s>: span corruption appends it after corrupting.
static int encode_plain_cb(void *ctx, const char *text, int **ids, int *n, lb_err_t *err) {
    return tokenizer_encode(ctx, text, 0, ids, n, err);
}

// Bytes the encoder cache may hold: LORABENCH_ENCODER_CACHE_MB (a whole number of MiB,
// 0 = cache nothing) or 2 GiB.
static size_t encoder_cache_budget(void) {
    const char *v = getenv("LORABENCH_ENCODER_CACHE_MB");
    char *end;
    long mb = v ? strtol(v, &end, 10) : -1;
    if (!v || end == v || *end || mb < 0 || mb > (1L << 30)) mb = 2048;
    return (size_t)mb << 20;
}

static void enc_cache_free(enc_cache_t *c) {
    if (c->rows)
        for (int i = 0; i < c->n_rows; i++) free(c->rows[i]);
    free(c->rows);
    free(c->batch);
    memset(c, 0, sizeof *c);
}

static void session_free(session_t *s) {
    enc_cache_free(&s->enc);
    if (s->acts) t5_acts_free(s->acts);
    if (s->feed_ready) train_data_feed_free(&s->feed);
    if (s->tr_ready) train_free(&s->tr);
    train_params_free(&s->tp);
    if (s->train_loaded) data_tokenized_free(&s->train);
    if (s->ds_loaded) data_set_free(&s->ds);
    if (s->tok) tokenizer_free(s->tok);
    if (s->model_loaded) t5_free(&s->model);
    spec_free(&s->spec);
    free(s->run_dir);
    memset(s, 0, sizeof *s);
}

int runner_create_run(store_t *st, const spec_t *spec, int64_t sweep_id, int64_t *id, lb_err_t *err) {
    if (spec_check(spec, err)) return -1;
    char *json = spec_to_json(spec, 0);
    char targets[128] = "";
    if (spec->method == SPEC_METHOD_LORA) spec_targets_string(spec->lora.targets, targets, sizeof targets);
    // A name already in the workspace gets a number ("lora-r8-qv (2)"): two runs that
    // read the same in a list or a legend cannot be told apart.
    char name[300];
    snprintf(name, sizeof name, "%s", spec->name);
    for (int k = 2; store_run_name_taken(st, name) && k < 100000; k++)
        store_name_numbered(spec->name, k, name, sizeof name);
    sha256_t h;
    char spec_hash[65];
    sha256_init(&h);
    sha256_update(&h, json, strlen(json));
    sha256_final_hex(&h, spec_hash);
    store_owner_t me = store_owner_self();
    store_run_new_t r = {
        .spec_hash = spec_hash,
        .owner = &me,
        .name = name,
        .spec = json,
        .method = spec_method_name(spec->method),
        .base_model = spec->base_model,
        .dataset = spec->dataset.path,
        .r = spec->method == SPEC_METHOD_LORA ? spec->lora.r : -1,
        .alpha = spec->method == SPEC_METHOD_LORA ? spec->lora.alpha : NAN,
        .targets = spec->method == SPEC_METHOD_LORA ? targets : NULL,
        .total_steps = spec->train.max_steps > 0 ? spec->train.max_steps : -1,
        .sweep_id = sweep_id,
    };
    int rc = store_run_create(st, &r, id, err);
    free(json);
    return rc;
}

// ---- setting a run up ------------------------------------------------------------------

static int span_batch_make(void *ctx, const int *idx, int n, uint64_t micro, data_batch_t *b, lb_err_t *err);

// Refuses, with the numbers, a run whose memory (t5_facts_memory: weights, gradients,
// optimizer, the activation arena for its largest batch) exceeds what this process may
// still take (lb_mem_available: MemAvailable or the cgroup's limit) plus what it holds
// already; the kernel would otherwise kill the worker without a word part way through. The
// message names the largest batch size that fits.
static int memory_check(const session_t *s, const train_method_opts_t *mo, lb_err_t *err) {
    const spec_t *sp = &s->spec;
    char what[800];
    size_t avail = lb_mem_available(what, sizeof what);
    if (!avail && !what[0]) return 0;  // nothing to go by (no /proc)
    size_t have = avail + lb_current_rss();
    t5_facts_memory_t m;
    int B = sp->train.batch_size;
    if (t5_facts_memory(&s->model.cfg, mo, B, s->max_s, s->max_t, sp->train.frozen_weights_bf16, sp->train.precision, &m, err)) return -1;
    if (m.total <= have) return 0;
    int fit = B;
    t5_facts_memory_t mf = m;
    while (fit > 1 && mf.total > have) {
        fit /= 2;
        if (t5_facts_memory(&s->model.cfg, mo, fit, s->max_s, s->max_t, sp->train.frozen_weights_bf16, sp->train.precision, &mf, err)) return -1;
    }
    const double MB = 1048576.0;
    char hint[160];
    if (mf.total <= have)
        snprintf(hint, sizeof hint, "lower train.batch_size to %d (train.grad_accum %d keeps the effective batch)", fit,
                 sp->train.grad_accum * (B / fit));
    else
        snprintf(hint, sizeof hint, "even batch size 1 does not fit: lower dataset.max_source_tokens, or use a smaller model");
    return lb_err_set(err, LB_ENOMEM,
                      "the run needs about %.0f MiB (weights %.0f, activations %.0f for train.batch_size %d at %d+%d tokens, "
                      "gradients and optimizer %.0f) but %.0f MiB is available (%s); %s",
                      (double)m.total / MB, (double)m.weights / MB, (double)m.acts / MB, B, s->max_s, s->max_t,
                      (double)(m.grads + m.optimizer + m.adapter) / MB, (double)have / MB, what, hint);
}

// Loads the model, tokenizer and data and makes the chosen parameters trainable.
static int session_setup(session_t *s, const runner_opts_t *o, store_t *st, int64_t id, lb_err_t *err) {
    spec_t *sp = &s->spec;
    lb_set_threads(sp->threads);
    char path[4096];
    int fresh = 0;
    s->span = sp->train.objective == SPEC_OBJ_SPAN_CORRUPTION;
    if (s->span ? t5_load_or_init(&s->model, sp->base_model, (uint64_t)sp->train.seed, &fresh, err)
                : sp->train.frozen_weights_bf16 ? t5_load_bf16(&s->model, sp->base_model, err)
                                                : t5_load(&s->model, sp->base_model, err))
        return -1;
    s->model_loaded = 1;
    snprintf(path, sizeof path, "%s/tokenizer.json", sp->base_model);
    s->tok = tokenizer_load(path, err);
    if (!s->tok) return -1;
    data_options_t dopt = {
        .source_field = sp->dataset.source,
        .target_field = sp->dataset.target,
        .prefix = sp->dataset.prefix && sp->dataset.prefix[0] ? sp->dataset.prefix : NULL,
        .template_text = sp->dataset.template_text && sp->dataset.template_text[0] ? sp->dataset.template_text : NULL,
        .seed = (uint64_t)sp->train.seed,
    };
    struct stat sb;
    if (stat(sp->dataset.path, &sb) == 0 && S_ISREG(sb.st_mode)) {
        double r = sp->dataset.split_ratio > 0 && sp->dataset.split_ratio < 1 ? sp->dataset.split_ratio : 0.9;
        dopt.split_ratio[0] = r;
        dopt.split_ratio[1] = (1 - r) / 2;
        dopt.split_ratio[2] = 1 - r - dopt.split_ratio[1];
    }
    if (data_set_load(sp->dataset.path, &dopt, &s->ds, err)) return -1;
    s->ds_loaded = 1;
    int eos = tokenizer_eos_id(s->tok);
    if (sp->method != SPEC_METHOD_NONE) {
        const data_split_t *tr = data_set_split(&s->ds, "train", err);
        if (!tr) return -1;
        data_split_t limited = *tr;
        if (sp->dataset.limit > 0 && sp->dataset.limit < limited.n) limited.n = sp->dataset.limit;
        if (s->span) {
            for (int k = 0; k < 100; k++) {
                char piece[32];
                snprintf(piece, sizeof piece, "<extra_id_%d>", k);
                int id_k = tokenizer_piece_to_id(s->tok, piece);
                if (id_k < 0) break;
                s->sentinels[s->n_sentinels++] = id_k;
            }
            if (s->n_sentinels == 0)
                return lb_err_set(err, LB_EARG, "train.objective span_corruption needs <extra_id_N> sentinel tokens, which %s/tokenizer.json lacks",
                                  sp->base_model);
        }
        int max_src = sp->dataset.max_source_tokens - (s->span ? 1 : 0);
        if (data_tokenize_split(&limited, s->span ? encode_plain_cb : encode_cb, s->tok, max_src,
                                sp->dataset.max_target_tokens, s->span ? -1 : eos, &s->train, err))
            return -1;
        s->train_loaded = 1;
        for (int i = 0; i < s->train.n; i++) {
            if (s->train.ex[i].n_src > s->max_s) s->max_s = s->train.ex[i].n_src;
            if (s->train.ex[i].n_tgt > s->max_t) s->max_t = s->train.ex[i].n_tgt;
        }
        if (s->span) {  // corrupted input: at most the text + </s>; target: 2 tokens per noise token + </s>
            s->max_s += 1;
            s->max_t = 2 * (int)(0.15 * s->max_s + 1) + 2;
            if (sp->train.denoise_fraction > 0 && s->max_s > s->max_t) s->max_t = s->max_s;  // the whole text
        }
        int B = sp->train.batch_size;
        s->batches_per_epoch = (s->train.n + B - 1) / B;
        s->steps_per_epoch = (s->batches_per_epoch + sp->train.grad_accum - 1) / sp->train.grad_accum;
        s->total_steps = spec_total_steps(sp, s->train.n);
    }
    // Trainable parameters.
    train_method_opts_t mo;
    spec_method_opts(sp, &mo);
    if (train_params_setup(&s->tp, &s->model, &mo, err)) return -1;
    t5_facts_params_t facts;  // the counts every screen shows (PEFT's "all params": base + adapter)
    if (t5_facts_params(&s->model.cfg, &mo, &facts, err)) return -1;
    if (sp->train.frozen_weights_bf16 && t5_frozen_weights_bf16(&s->model, err)) return -1;
    if (t5_set_precision(&s->model, sp->train.precision, &s->precision, err)) return -1;
    if (s->tp.n) {
        train_opts_t to;
        train_opts_default(&to);
        to.lr = (float)sp->train.lr;
        to.weight_decay = (float)sp->train.weight_decay;
        to.max_grad_norm = (float)sp->train.max_grad_norm;
        to.schedule = sp->train.schedule == SPEC_SCHEDULE_COSINE   ? SCHED_COSINE
                      : sp->train.schedule == SPEC_SCHEDULE_LINEAR ? SCHED_LINEAR
                                                                   : SCHED_CONSTANT;
        to.warmup_steps = spec_warmup_steps(sp, (int)s->total_steps);
        to.total_steps = s->total_steps;
        to.grad_accum = sp->train.grad_accum;
        to.seed = (uint64_t)sp->train.seed;
        to.dropout = 1;
        if (memory_check(s, &mo, err)) return -1;
        s->acts = t5_acts_new(&s->model, sp->train.batch_size, s->max_s, s->max_t);
        train_init(&s->tr, &s->model, s->acts, &s->tp, &to);
        s->tr.comm = o->comm;
        s->tr_ready = 1;
        train_data_feed_init(&s->feed, &s->train, sp->train.batch_size, (uint64_t)sp->train.seed,
                             s->model.cfg.pad_token_id, s->model.cfg.decoder_start_token_id);
        if (s->span) {
            s->feed.make = span_batch_make;
            s->feed.make_ctx = s;
        }
        if (o->comm) {  // this rank's rows of every batch
            s->feed.rank = o->comm->rank;
            s->feed.ranks = o->comm->size;
        }
        s->feed_ready = 1;
        if (sp->train.cache_encoder && !s->span && t5_encoder_frozen(&s->model)) {
            enc_cache_t *c = &s->enc;
            c->on = 1;
            c->D = s->model.cfg.d_model;
            c->n_rows = s->train.n;
            c->rows = xcalloc((size_t)c->n_rows, sizeof(float *));
            c->budget = encoder_cache_budget();
            c->batch = xmalloc(sizeof(float) * (size_t)sp->train.batch_size * (size_t)s->max_s * (size_t)c->D);
        }
    }
    store_run_summary_t sum = store_run_summary_unset();
    sum.trainable_params = (int64_t)s->tp.n;
    sum.precision = t5_precision_name(s->precision);
    sum.total_params = (int64_t)facts.total;
    sum.total_steps = sp->method == SPEC_METHOD_NONE ? 0 : s->total_steps;
    if (s->lead && store_run_update_summary(st, id, &sum, err)) return -1;
    return 0;
}

// ---- checkpoints -----------------------------------------------------------------------

static int checkpoint_write(session_t *s, lb_err_t *err) {
    char path[4096], meta[768];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", s->run_dir);
    snprintf(meta, sizeof meta,
             "{\"step\":\"%ld\",\"epoch\":\"%d\",\"batch\":\"%d\",\"adam_t\":\"%ld\",\"tokens\":\"%ld\",\"loss\":\"%.9g\","
             "\"run_uuid\":\"%s\",\"spec_hash\":\"%s\"}",
             s->tr.step, s->feed.epoch, s->feed.batch, s->tr.opt.t, s->tokens_seen, s->last_loss,
             s->uuid ? s->uuid : "", s->spec_hash ? s->spec_hash : "");
    st_out_t ts[3] = {{.name = "params", .data = s->tp.params, .ndim = 1, .shape = {(int64_t)s->tp.n}},
                      {.name = "adam_m", .data = s->tr.opt.m, .data16 = s->tr.opt.m16, .ndim = 1, .shape = {(int64_t)s->tp.n}},
                      {.name = "adam_v", .data = s->tr.opt.v, .ndim = 1, .shape = {(int64_t)s->tp.n}}};
    return st_write(path, ts, 3, meta, err);
}

// A done run cannot be resumed, so its checkpoint (the trainable values and two optimizer
// moments: three times a full fine-tune's model) has nothing left to do. Until the status
// says done it stays: a worker killed while saving or evaluating resumes from it.
static void checkpoint_remove(const session_t *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", s->run_dir);
    unlink(path);
}

static long meta_long(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    return p ? strtol(p + strlen(pat), NULL, 10) : 0;
}

// The checkpoint's value of a string key of its metadata ("" when absent).
static void meta_str(const char *json, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    size_t n = 0;
    if (p)
        for (p += strlen(pat); p[n] && p[n] != '"' && n + 1 < cap; n++) out[n] = p[n];
    out[n] = 0;
}

// Restores a checkpoint when the run has one; *resumed = 1 then. A checkpoint of another
// run (its run_uuid or spec_hash differ from the run's) is refused, never loaded.
static int checkpoint_read(session_t *s, int64_t id, int *resumed, lb_err_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", s->run_dir);
    *resumed = 0;
    if (access(path, F_OK) != 0) return 0;
    st_file_t f;
    if (st_open(&f, path, err)) return -1;
    if (s->uuid) {
        char uuid[64], hash[80];
        meta_str(f.metadata_json, "run_uuid", uuid, sizeof uuid);
        meta_str(f.metadata_json, "spec_hash", hash, sizeof hash);
        if (strcmp(uuid, s->uuid) || (s->spec_hash && strcmp(hash, s->spec_hash))) {
            st_close(&f);
            return lb_err_set(err, LB_EARG,
                              "%s belongs to another run (its run_uuid '%s' is not run %lld's %s, or its spec "
                              "differs); move it away and resume again to start run %lld afresh",
                              path, uuid, (long long)id, s->uuid, (long long)id);
        }
    }
    int64_t n = (int64_t)s->tp.n;
    int rc = st_load_f32(&f, "params", 1, &n, s->tp.params, err);
    // adam_m is BF16 where the run keeps it so (train_keeps_m_bf16); either converts
    if (!rc) rc = s->tr.opt.m16 ? st_load_bf16(&f, "adam_m", 1, &n, s->tr.opt.m16, err)
                                : st_load_f32(&f, "adam_m", 1, &n, s->tr.opt.m, err);
    if (!rc) rc = st_load_f32(&f, "adam_v", 1, &n, s->tr.opt.v, err);
    // the bf16 packings of trained weights follow the restored values
    if (!rc && !s->tp.has_lora) t5_bf16_refresh(&s->model);
    if (!rc) {
        s->tr.step = meta_long(f.metadata_json, "step");
        s->feed.epoch = (int)meta_long(f.metadata_json, "epoch");
        s->feed.batch = (int)meta_long(f.metadata_json, "batch");
        s->tr.opt.t = meta_long(f.metadata_json, "adam_t");
        s->tokens_seen = meta_long(f.metadata_json, "tokens");
        const char *lp = f.metadata_json ? strstr(f.metadata_json, "\"loss\":\"") : NULL;
        s->last_loss = lp ? strtod(lp + 8, NULL) : NAN;
        *resumed = 1;
    }
    st_close(&f);
    return rc;
}

// ---- saving results --------------------------------------------------------------------

static int record_artifact(store_t *st, int64_t id, const char *kind, const char *path, long step, lb_err_t *err) {
    char hex[65];
    size_t bytes;
    if (sha256_file(path, hex, &bytes, err)) return -1;
    return store_artifact_add(st, id, kind, path, (int64_t)bytes, hex, step, err);
}

static int save_result(session_t *s, store_t *st, int64_t id, lb_err_t *err) {
    char dir[4096], path[4200];
    if (s->tp.has_lora) {
        snprintf(dir, sizeof dir, "%s/adapter", s->run_dir);
        if (lora_save(&s->tp.lora, dir, err)) return -1;
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        if (record_artifact(st, id, "adapter", path, s->tr.step, err)) return -1;
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        return record_artifact(st, id, "adapter_config", path, s->tr.step, err);
    }
    if (s->tp.n) {
        snprintf(dir, sizeof dir, "%s/model", s->run_dir);
        if (t5_save(&s->model, s->spec.base_model, dir, err)) return -1;
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return record_artifact(st, id, "model", path, s->tr.step, err);
    }
    return 0;
}

// ---- evaluation ------------------------------------------------------------------------

// Evaluates the model as it is now. The last evaluation of a LoRA run (last = 1) first
// merges the adapter into the weights, so that generation runs at the base model's speed;
// the model is not trained afterwards. Evaluations during training keep it attached.
// eval_opts_t.progress under the eval_delay_ms test hook: a pause after each batch.
static void eval_delay(void *ctx, int done, int total) {
    (void)done, (void)total;
    usleep((useconds_t)(*(const int *)ctx) * 1000);
}

static int run_eval(session_t *s, store_t *st, int64_t id, const runner_opts_t *o, int last, lb_err_t *err) {
    const spec_t *sp = &s->spec;
    if (last && s->tp.has_lora && lora_merge_into_model(&s->tp.lora, &s->model, +1, err)) return -1;
    const data_split_t *split = data_set_split(&s->ds, spec_split_name(sp->eval.split), err);
    if (!split) return -1;
    eval_opts_t eo = {
        .limit = sp->eval.limit,
        .beams = sp->eval.beams,
        .max_new_tokens = sp->eval.max_new_tokens,
        .length_penalty = sp->eval.length_penalty,
        .no_repeat_ngram_size = sp->eval.no_repeat_ngram_size,
        .stem = sp->eval.stemmer,
        .max_source_tokens = sp->dataset.max_source_tokens,
        .batch_size = sp->train.batch_size > 0 ? sp->train.batch_size : 8,
        .seed = (uint64_t)sp->train.seed,
        .stop = o->stop,
        .progress = o->eval_delay_ms > 0 ? eval_delay : NULL,
        .ctx = (void *)&o->eval_delay_ms,
    };
    eval_result_t res;
    double t0 = lb_now();
    if (evaluate_split(&s->model, s->tok, split, &eo, &res, err)) return -1;
    store_eval_t ev = {0};
    ev.run_id = id;
    ev.step = s->tr.step;
    snprintf(ev.split, sizeof ev.split, "%s", split->name);
    ev.n = res.n;
    ev.seconds = lb_now() - t0;
    ev.rouge1 = res.agg.r1.f.mean, ev.rouge1_low = res.agg.r1.f.low, ev.rouge1_high = res.agg.r1.f.high;
    ev.rouge2 = res.agg.r2.f.mean, ev.rouge2_low = res.agg.r2.f.low, ev.rouge2_high = res.agg.r2.f.high;
    ev.rougeL = res.agg.rl.f.mean, ev.rougeL_low = res.agg.rl.f.low, ev.rougeL_high = res.agg.rl.f.high;
    ev.rougeLsum = res.agg.rlsum.f.mean, ev.rougeLsum_low = res.agg.rlsum.f.low, ev.rougeLsum_high = res.agg.rlsum.f.high;
    ev.beams = sp->eval.beams;
    ev.max_new_tokens = sp->eval.max_new_tokens;
    ev.length_penalty = sp->eval.length_penalty;
    store_sample_t *samples = xcalloc((size_t)res.n + 1, sizeof(store_sample_t));
    for (int i = 0; i < res.n; i++) {
        samples[i] = (store_sample_t){i, split->ex[i].source, split->ex[i].refs[0], res.predictions[i],
                                      res.per[i].r1.f, res.per[i].r2.f, res.per[i].rl.f};
    }
    int rc = store_eval_insert(st, &ev, samples, (size_t)res.n, NULL, err);
    free(samples);
    evaluate_result_free(&res);
    if (o->progress) {
        runner_progress_t p = {.run_id = id, .step = s->tr.step, .total_steps = s->total_steps, .phase = "eval",
                               .eval_done = ev.n, .eval_total = ev.n};
        o->progress(o->ctx, &p);
    }
    return rc;
}

// ---- training --------------------------------------------------------------------------

typedef struct {
    store_metric_t rows[64];
    int n;
    double last_flush;
} metric_buf_t;

static int flush_metrics(metric_buf_t *mb, store_t *st, int64_t id, lb_err_t *err) {
    if (!st) mb->n = 0;  // a data-parallel rank > 0: rank 0 stores the same rows
    if (mb->n == 0) return 0;
    int rc = store_metrics_insert_batch(st, id, mb->rows, (size_t)mb->n, err);
    mb->n = 0;
    mb->last_flush = lb_now();
    return rc;
}

// A span-corrupted batch of the examples idx[0..n) (the data feed's `make`): inputs and
// labels drawn afresh for every micro batch from (seed, micro, example), so a resumed run
// sees the same batches; padded by data_batch_make like every other batch.
static int span_batch_make(void *ctx, const int *idx, int n, uint64_t micro, data_batch_t *b, lb_err_t *err) {
    const session_t *s = ctx;
    span_corrupt_t sc = {0.15, 3.0, s->sentinels, s->n_sentinels, s->model.cfg.eos_token_id, 0};
    data_tokenized_t cor = {xcalloc((size_t)n, sizeof(data_tokens_t)), n, 0, 0};
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const data_tokens_t *e = &s->train.ex[idx[i]];
        data_tokens_t *c = &cor.ex[i];
        uint64_t rng = data_seed_mix((uint64_t)s->spec.train.seed ^ (micro * 0x9e3779b97f4a7c15ull), (uint64_t)idx[i]);
        sc.whole_target = s->spec.train.denoise_fraction > 0 && lb_rng_uniform(&rng) < s->spec.train.denoise_fraction;
        if (e->n_src < 2) {  // too short to corrupt: learn to copy it
            c->src = xmalloc(sizeof(int) * 2);
            c->tgt = xmalloc(sizeof(int) * 2);
            c->src[0] = c->tgt[0] = e->n_src ? e->src[0] : sc.eos_id;
            c->src[1] = c->tgt[1] = sc.eos_id;
            c->n_src = c->n_tgt = 2;
        } else {
            rc = span_corrupt(&sc, e->src, e->n_src, &rng, &c->src, &c->n_src, &c->tgt, &c->n_tgt, err);
        }
    }
    if (!rc) {
        int *order = xmalloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) order[i] = i;
        rc = data_batch_make(&cor, order, n, s->model.cfg.pad_token_id, s->model.cfg.decoder_start_token_id, b, err);
        for (int i = 0; !rc && i < n; i++) b->index[i] = idx[i];
        free(order);
    }
    data_tokenized_free(&cor);
    return rc;
}

// Source tokens of row i of a batch (its attention mask is a prefix of ones).
static size_t batch_row_len(const t5_batch_t *tb, int i) {
    size_t n = 0, S = (size_t)tb->S;
    while (n < S && tb->attention_mask[(size_t)i * S + n]) n++;
    return n;
}

// The training step's forward hook (train_feed_t.forward) for the batch the data feed handed
// out last. With the encoder cache, the encoder runs (without dropout) only when some
// example of the batch has no cached output, and the decoder works from the cached rows;
// padded rows are masked out by the cross attention.
static int forward_batch(void *ctx, t5_model_t *m, t5_acts_t *a, const t5_batch_t *tb, const lb_drop_t *drop,
                         float *loss, lb_err_t *err) {
    session_t *s = ctx;
    enc_cache_t *c = &s->enc;
    const int *idx = s->feed.cur.index;
    if (!c->on) return t5_forward(m, a, tb, drop, loss, err);
    size_t S = (size_t)tb->S, D = (size_t)c->D;
    int cached = 1;
    for (int i = 0; i < tb->B && cached; i++) cached = c->rows[idx[i]] != NULL;
    if (cached) {
        memset(c->batch, 0, sizeof(float) * (size_t)tb->B * S * D);
        for (int i = 0; i < tb->B; i++)
            memcpy(c->batch + (size_t)i * S * D, c->rows[idx[i]], sizeof(float) * batch_row_len(tb, i) * D);
        c->reused += tb->B;
    } else {
        if (t5_forward_encoder(m, a, tb, c->batch, err)) return -1;
        c->computed += tb->B;
        for (int i = 0; i < tb->B; i++) {
            size_t sz = sizeof(float) * batch_row_len(tb, i) * D;
            if (c->rows[idx[i]] || sz == 0) continue;
            if (c->bytes + sz > c->budget) {
                c->over_budget = 1;
                continue;
            }
            c->rows[idx[i]] = xmalloc(sz);
            memcpy(c->rows[idx[i]], c->batch + (size_t)i * S * D, sz);
            c->bytes += sz;
        }
    }
    return t5_forward_with_encoder(m, a, tb, c->batch, drop, loss, err);
}

// A line for the person running the training (the foreground progress, or worker.log).
static void runner_note(const runner_opts_t *o, int64_t id, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->progress) {
        runner_progress_t p = {.run_id = id, .phase = "note", .note = msg};
        o->progress(o->ctx, &p);
    } else {
        printf("run %lld: %s\n", (long long)id, msg);
        fflush(stdout);
    }
}

// What to change after a NaN: clipping only helps where it is off.
static const char *nan_hint(const spec_t *sp) {
    return sp->train.max_grad_norm > 0 ? "lower train.lr" : "lower train.lr or set train.max_grad_norm (e.g. 1.0)";
}

// The training step's `next` (train_feed_t): the session's data feed.
static int session_next_batch(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err) {
    session_t *s = ctx;
    return train_data_feed_next(&s->feed, micro, b, err);
}

// Data parallel: every rank passes here with its flag (0 go on, RANKS_STOP asked to stop,
// RANKS_FAILED failed) and gets the largest meaning of the sum, so that all ranks go on,
// stop or fail together and none waits for a rank that left. One process: its own flag.
enum { RANKS_GO = 0, RANKS_STOP = 1, RANKS_FAILED = 1000 };
static int ranks_agree(const runner_opts_t *o, int flag, lb_err_t *err) {
    if (!o->comm) return flag;
    double v = flag;
    lb_err_t e2;
    if (o->comm->sum_f64(o->comm->ctx, &v, 1, flag == RANKS_FAILED ? &e2 : err)) return RANKS_FAILED;
    if (v >= RANKS_FAILED && flag != RANKS_FAILED)
        lb_err_set(err, LB_EIO,
                   "another rank of the data-parallel run failed; mpirun's output shows that rank's message");
    return v >= RANKS_FAILED ? RANKS_FAILED : v > 0 ? RANKS_STOP : RANKS_GO;
}

// Trains from the session's position to total_steps, or until asked to stop.
// Returns 0 (finished), 1 (stopped on request), 2 (killed by the test hook), -1 (error).
// st is NULL on a data-parallel rank > 0: it stores, checkpoints and evaluates nothing.
static int train_loop(session_t *s, store_t *st, int64_t id, const runner_opts_t *o, lb_err_t *err) {
    const spec_t *sp = &s->spec;
    metric_buf_t mb = {.last_flush = lb_now()};
    train_feed_t feed = {session_next_batch, forward_batch, s};
    long done_here = 0;
    double t_start = lb_now();
    long tokens_start = s->tokens_seen;
    int rc = 0;
    while (s->tr.step < s->total_steps) {
        int go = ranks_agree(o, o->stop && *o->stop ? RANKS_STOP : RANKS_GO, err);  // a cancel reaches rank 0 only
        if (go == RANKS_FAILED) {
            rc = -1;
            goto out;
        }
        if (go == RANKS_STOP) {
            rc = 1;
            break;
        }
        train_result_t r;
        if (train_step(&s->tr, &feed, &r, err)) {
            if (err->code == LB_ENAN)
                snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg), "; %s, then start a new run",
                         nan_hint(sp));
            rc = -1;
            goto out;
        }
        s->tokens_seen += r.tokens;
        s->last_loss = r.loss;
        s->step_s += r.seconds;
        s->comm_s += r.comm_seconds;
        int n_batches = train_data_feed_batches(&s->feed, err);
        if (n_batches < 0) {
            rc = -1;
            goto out;
        }
        double now = lb_now(), dt = r.seconds;
        store_metric_t *m = &mb.rows[mb.n++];
        *m = (store_metric_t){.step = s->tr.step,
                              .epoch = (double)s->feed.epoch + (double)s->feed.batch / (n_batches ? n_batches : 1),
                              .loss = s->last_loss,
                              .lr = r.lr,
                              .grad_norm = r.grad_norm,
                              .tokens_per_s = (double)r.tokens / (dt > 0 ? dt : 1e-9),
                              .step_ms = dt * 1000,
                              .rss_mb = (double)lb_peak_rss() / 1048576.0,
                              .tokens = s->tokens_seen,
                              .wall_s = now - t_start};
        if (mb.n == 64 || now - mb.last_flush >= 1.0 || s->tr.step == s->total_steps) {
            if (flush_metrics(&mb, st, id, err)) {
                rc = -1;
                ranks_agree(o, RANKS_FAILED, err);
                goto out;
            }
        }
        if (o->progress) {
            double el = now - t_start, per = el / (double)(++done_here);
            runner_progress_t p = {.run_id = id, .step = s->tr.step, .total_steps = s->total_steps, .loss = s->last_loss,
                                   .lr = r.lr, .grad_norm = r.grad_norm,
                                   .tokens_per_s = (s->tokens_seen - tokens_start) / (el > 0 ? el : 1e-9),
                                   .eta_s = per * (double)(s->total_steps - s->tr.step), .elapsed_s = el, .phase = "train"};
            o->progress(o->ctx, &p);
        } else {
            done_here++;
        }
        if (o->step_delay_ms > 0) usleep((useconds_t)o->step_delay_ms * 1000);
        if (o->die_after_steps > 0 && done_here >= o->die_after_steps) {
            flush_metrics(&mb, st, id, err);
            rc = 2;
            goto out;
        }
        if (s->lead && sp->train.checkpoint_every > 0 && s->tr.step % sp->train.checkpoint_every == 0 &&
            s->tr.step < s->total_steps) {
            if (flush_metrics(&mb, st, id, err) || checkpoint_write(s, err)) {
                rc = -1;
                ranks_agree(o, RANKS_FAILED, err);
                goto out;
            }
        }
        if (s->lead && sp->train.eval_every > 0 && s->tr.step % sp->train.eval_every == 0 && s->tr.step < s->total_steps) {
            if (flush_metrics(&mb, st, id, err) || run_eval(s, st, id, o, 0, err)) {
                rc = err->code == LB_ESTOPPED ? 1 : -1;  // a cancel during the evaluation: stopped
                ranks_agree(o, rc == 1 ? RANKS_STOP : RANKS_FAILED, err);
                goto out;
            }
        }
    }
out:
    if (rc == -1) {  // keep the finished steps' rows: they show how a NaN or failure came about
        lb_err_t e3;
        flush_metrics(&mb, st, id, &e3);
    } else if (flush_metrics(&mb, st, id, err)) {
        rc = -1;
    }
    if ((rc == 0 || rc == 1) && o->comm && s->lead && s->step_s > 0)  // is overlapping the sums worth it?
        runner_note(o, id, "data parallel over %d ranks: %.1f%% of the step time in the sums of losses and gradients (MPI_Allreduce, waiting for the slowest rank included)",
                    o->comm->size, 100 * s->comm_s / s->step_s);
    if ((rc == 0 || rc == 1) && s->enc.on && s->lead)
        runner_note(o, id, "the encoder is frozen: %ld example encodings computed, %ld taken from the cache (%.1f MB%s; train.cache_encoder)",
                    s->enc.computed, s->enc.reused, (double)s->enc.bytes / 1048576.0,
                    s->enc.over_budget ? ", full: the rest are recomputed; LORABENCH_ENCODER_CACHE_MB raises it" : "");
    if ((rc == 0 || rc == 1) && st) {
        double el = lb_now() - t_start;
        store_run_summary_t sum = store_run_summary_unset();
        sum.step = s->tr.step;
        sum.final_loss = s->last_loss;
        if (el > 0 && done_here > 0) sum.tokens_per_s = (double)(s->tokens_seen - tokens_start) / el;
        sum.peak_rss_mb = (double)lb_peak_rss() / 1048576.0;
        lb_err_t e2;
        store_run_update_summary(st, id, &sum, &e2);
    }
    return rc;
}

// Whether name is a temporary of lb_write_file_atomic: NAME.tmp.DIGITS.
static int is_our_temp(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || t == name) return 0;
    const char *d = t + 5;
    if (!*d) return 0;
    for (; *d; d++)
        if (*d < '0' || *d > '9') return 0;
    return 1;
}

// A worker killed while writing a file leaves its temporary (NAME.tmp.PID, from
// lb_write_file_atomic) behind. Only one worker executes a run at a time, so the next one
// removes them from the run's folder: only names of that form, only plain files, and only
// in folders that are really inside the run's (a symbolic link to elsewhere is not
// entered), so that nothing outside the workspace is ever deleted.
static void remove_stale_temps(const char *run_dir) {
    static const char *const subdirs[] = {"", "/adapter", "/model"};
    struct stat sb;
    if (lstat(run_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return;
    for (size_t k = 0; k < sizeof subdirs / sizeof subdirs[0]; k++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s%s", run_dir, subdirs[k]);
        if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
            if (fd >= 0) close(fd);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!is_our_temp(e->d_name)) continue;
            if (fstatat(fd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
            unlinkat(fd, e->d_name, 0);
        }
        closedir(d);
    }
}

// A data-parallel rank other than 0: reads the run, sets it up and trains its share of each
// batch in step with rank 0 (ranks_agree after the set-up and before every step); rank 0
// writes the store, checkpoints and results. o->workspace NULL: fails as rank 0 is told.
static int execute_peer(const runner_opts_t *o, int64_t id, lb_err_t *err) {
    store_t *st = NULL;
    session_t s = {0};
    // no workspace (the caller could not find it): fail, but through ranks_agree
    int rc = o->workspace ? 0 : lb_err_set(err, LB_EARG, "this rank found no workspace");
    if (o->workspace) {
        char *dbp = store_workspace_db_path(o->workspace);
        rc = store_open(dbp, &st, err);
        free(dbp);
    }
    if (!rc) {
        store_run_t run = {0};
        rc = store_run_get(st, id, &run, err);
        if (!rc) rc = spec_parse(run.spec, "runs.spec", &s.spec, err);
        store_run_clear(&run);
        store_close(st);
    }
    int resumed = 0;
    if (!rc) rc = store_run_dir(o->workspace, id, 0, &s.run_dir, err);
    if (!rc) rc = session_setup(&s, o, NULL, id, err);
    if (!rc && s.tp.n) rc = checkpoint_read(&s, id, &resumed, err);
    if (ranks_agree(o, rc ? RANKS_FAILED : RANKS_GO, err) == RANKS_FAILED) rc = -1;
    else if (s.tp.n) rc = train_loop(&s, NULL, id, o, err) < 0 ? -1 : 0;
    session_free(&s);
    return rc;
}

int runner_execute(const runner_opts_t *o, int64_t id, lb_err_t *err) {
    if (o->comm && o->comm->rank > 0) return execute_peer(o, id, err);
    char *dbp = store_workspace_db_path(o->workspace);
    store_t *st = NULL;
    int rc = store_open(dbp, &st, err);
    free(dbp);
    if (rc) {
        lb_err_t e3;
        ranks_agree(o, RANKS_FAILED, &e3);  // the other ranks wait for the set-up's end
        return -1;
    }
    session_t s = {0};
    s.lead = 1;
    store_run_t run = {0};
    lb_err_t e2;
    int agreed = 0;  // data parallel: the ranks passed the set-up together (ranks_agree)
    // The claim comes first: a run that another process runs, or that was cancelled,
    // resumed elsewhere or deleted since it was queued, is left exactly as it is.
    store_owner_t me = store_owner_self();
    if (store_run_claim(st, id, o->queued_by.pid > 0 ? &o->queued_by : NULL, &me, err)) goto fail_nostatus;
    if (store_run_get(st, id, &run, err)) goto fail_nostatus;
    if (spec_parse(run.spec, "runs.spec", &s.spec, err)) goto fail;
    s.uuid = run.uuid;
    s.spec_hash = run.spec_hash;
    if (store_run_dir_check(o->workspace, id, run.uuid, run.spec_hash, err)) goto fail;
    if (store_run_dir(o->workspace, id, 1, &s.run_dir, err)) goto fail;
    remove_stale_temps(s.run_dir);
    if (o->progress) {
        runner_progress_t p = {.run_id = id, .phase = "load"};
        o->progress(o->ctx, &p);
    }
    if (session_setup(&s, o, st, id, err)) goto fail;
    int resumed = 0;
    if (s.tp.n && checkpoint_read(&s, id, &resumed, err)) goto fail;
    agreed = 1;
    if (ranks_agree(o, RANKS_GO, err) == RANKS_FAILED) goto fail;
    int trc = 0;
    if (s.tp.n) {
        trc = train_loop(&s, st, id, o, err);
        if (trc < 0) goto fail;
        if (trc == 2) {  // test hook: vanish like a killed worker
            store_run_clear(&run);
            session_free(&s);
            store_close(st);
            return 0;
        }
        if (trc == 1) {  // keep what was trained so far: checkpoint and the adapter/model
            if (checkpoint_write(&s, err) || save_result(&s, st, id, err)) goto fail;
            store_run_set_status(st, id, STORE_STATUS_CANCELLED, "cancelled at the user's request; `lorabench resume` continues it", &e2);
            goto done;
        }
        if (checkpoint_write(&s, err)) goto fail;
        if (save_result(&s, st, id, err)) goto fail;
    }
    if (o->stop && *o->stop) {
        store_run_set_status(st, id, STORE_STATUS_CANCELLED, "cancelled at the user's request", &e2);
        goto done;
    }
    if (!s.span && run_eval(&s, st, id, o, 1, err)) {  // pretraining has no summaries to score
        if (err->code != LB_ESTOPPED) goto fail;
        // trained and saved; only the scores are missing: resume evaluates again
        store_run_set_status(st, id, STORE_STATUS_CANCELLED,
                             "cancelled at the user's request during the final evaluation; `lorabench resume` evaluates again", &e2);
        goto done;
    }
    store_run_set_status(st, id, STORE_STATUS_DONE, NULL, &e2);
    checkpoint_remove(&s);
done:
    store_run_clear(&run);
    session_free(&s);
    store_close(st);
    return 0;
fail:
    store_run_set_status(st, id, STORE_STATUS_FAILED, err->msg, &e2);
fail_nostatus:
    if (!agreed) ranks_agree(o, RANKS_FAILED, &e2);  // the other ranks wait for the set-up's end
    store_run_clear(&run);
    session_free(&s);
    store_close(st);
    return -1;
}

int runner_spawn_worker(const char *exe, const char *workspace, int64_t id, int64_t *pid, lb_err_t *err) {
    char *dir = NULL;
    if (store_run_dir(workspace, id, 1, &dir, err)) return -1;
    char log[4200], idbuf[32];
    snprintf(log, sizeof log, "%s/worker.log", dir);
    free(dir);
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)id);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
    // The worker claims the run only while this process still owns it (store_run_claim).
    char owner[64];
    store_owner_t me = store_owner_self();
    snprintf(owner, sizeof owner, "%lld:%lld", (long long)me.pid, (long long)me.start);
    char *argv[] = {"lorabench", "worker", "--workspace", (char *)workspace, "--run", idbuf, "--queued-by", owner, NULL};
    pid_t p;
    int e = posix_spawn(&p, exe, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (e != 0) return lb_err_set(err, LB_EIO, "cannot start the worker %s: %s", exe, strerror(e));
    *pid = p;
    return 0;
}

// The last line of a worker's log (what it said before it exited), into out.
static void log_last_line(const char *workspace, int64_t id, char *out, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/runs/%lld/worker.log", workspace, (long long)id);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        if (line[0] && line[0] != '\n') {
            size_t n = strlen(line) < cap - 1 ? strlen(line) : cap - 1;
            memcpy(out, line, n);
            out[n] = 0;
        }
    fclose(f);
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = 0;
}

int runner_start_worker(const char *exe, store_t *st, int64_t id, int64_t *pid, lb_err_t *err) {
    char *ws = store_workspace_of(st);
    int rc = runner_spawn_worker(exe, ws, id, pid, err);
    store_owner_t me = store_owner_self();
    if (rc) {
        lb_err_t e2;
        store_run_release(st, id, &me, STORE_STATUS_FAILED, err->msg, &e2);
        free(ws);
        return -1;
    }
    // Wait until the worker has claimed the run (usually milliseconds): until then this
    // process owns it, and its exit would make readers take the run for abandoned.
    for (int waited = 0; waited < 120000 && store_run_owned(st, id, &me); waited += 20) {
        int status;
        pid_t done = waitpid((pid_t)*pid, &status, WNOHANG);
        if (done == (pid_t)*pid) {
            if (!store_run_owned(st, id, &me)) break;  // claimed, then ended at once
            char last[512], msg[800];
            log_last_line(ws, id, last, sizeof last);
            snprintf(msg, sizeof msg, "the worker (pid %lld) exited before starting the run%s%s%s",
                     (long long)*pid, last[0] ? ": \"" : "", last, last[0] ? "\"" : "");
            lb_err_t e2;
            store_run_release(st, id, &me, STORE_STATUS_FAILED, msg, &e2);
            lb_err_set(err, LB_EIO, "%s; see %s/runs/%lld/worker.log", msg, ws, (long long)id);
            free(ws);
            return -1;
        }
        usleep(20000);
    }
    free(ws);
    return 0;
}
