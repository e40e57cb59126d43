#include "train.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lora_t5.h"
#include "prof.h"

void train_opts_default(train_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->lr = 1e-3f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->max_grad_norm = 1.0f;
    o->schedule = SCHED_LINEAR;
    o->total_steps = 1000;
    o->grad_accum = 1;
    o->seed = 42;
    o->dropout = 1;
}

// ---- what a run trains ------------------------------------------------------------------

void train_method_opts_default(train_method_opts_t *o, train_method_t method) {
    memset(o, 0, sizeof *o);
    o->method = method;
    lora_config_default(&o->lora);
    o->partial = (t5_partial_t){2, T5_STACK_ENCODER | T5_STACK_DECODER, 0, 0, 0};
    o->seed = 42;
    o->loraplus_ratio = 1.0;
    o->position_bias_lr_ratio = 1.0;
}

int train_method_trains(const train_method_opts_t *o, const t5_config_t *cfg, const char *name) {
    if (o->method == TRAIN_METHOD_FULL) return 1;
    if (o->method != TRAIN_METHOD_PARTIAL) return 0;
    t5_partial_t p = o->partial;
    p.n_enc = cfg->num_layers;
    p.n_dec = cfg->num_decoder_layers;
    return t5_pred_partial(name, &p);
}

typedef struct {
    const train_method_opts_t *o;
    const t5_config_t *cfg;
} method_pred_t;

static int method_pred(const char *name, void *ctx) {
    const method_pred_t *p = ctx;
    return train_method_trains(p->o, p->cfg, name);
}

// LoRA+: every B matrix at lr·ratio.
static void loraplus_ranges(train_params_t *tp, double ratio) {
    if (ratio == 1.0) return;
    tp->ranges = xcalloc((size_t)tp->lora.n, sizeof(optim_range_t));
    for (int i = 0; i < tp->lora.n; i++) {
        const lora_module_t *md = &tp->lora.m[i];
        tp->ranges[i] = (optim_range_t){(size_t)(md->B - tp->lora.params), (size_t)md->out * (size_t)md->r,
                                        (float)ratio, 1.0f};
    }
    tp->n_ranges = tp->lora.n;
}

int train_params_adopt_lora(train_params_t *tp, t5_model_t *m, lora_adapter_t *ad, lb_err_t *err) {
    memset(tp, 0, sizeof *tp);
    tp->method = TRAIN_METHOD_LORA;
    tp->lora = *ad;
    memset(ad, 0, sizeof *ad);
    tp->has_lora = 1;
    t5_set_trainable(m, NULL, NULL);
    tp->lora_grads = xcalloc(tp->lora.n_params + 1, sizeof(lb_real));
    if (lora_attach(&tp->lora, m, tp->lora_grads, err)) return -1;
    tp->params = tp->lora.params;
    tp->grads = tp->lora_grads;
    tp->n = tp->lora.n_params;
    return 0;
}

int train_params_setup(train_params_t *tp, t5_model_t *m, const train_method_opts_t *o, lb_err_t *err) {
    memset(tp, 0, sizeof *tp);
    tp->method = o->method;
    if (o->method == TRAIN_METHOD_LORA) {
        lora_shape_t shape;
        lora_shape_from_t5(&m->cfg, &shape);
        lora_adapter_t ad;
        t5_set_trainable(m, NULL, NULL);
        if (lora_create(&ad, &o->lora, &shape, err)) return -1;
        if (lora_init(&ad, o->seed, lora_t5_weight, m, err)) {
            lora_free(&ad);
            return -1;
        }
        if (train_params_adopt_lora(tp, m, &ad, err)) return -1;
        loraplus_ranges(tp, o->loraplus_ratio);
        return 0;
    }
    method_pred_t mp = {o, &m->cfg};
    t5_set_trainable(m, o->method == TRAIN_METHOD_NONE ? NULL : method_pred, o->method == TRAIN_METHOD_NONE ? NULL : &mp);
    if (o->method == TRAIN_METHOD_NONE) return 0;
    if (m->n_train == 0)
        return lb_err_set(err, LB_EARG, "partial: the chosen blocks hold no parameter; raise partial.top_blocks or change partial.stack");
    tp->params = m->block;
    tp->grads = m->block + m->n_train;
    tp->n = m->n_train;
    if (o->position_bias_lr_ratio != 1.0) {  // see t5_position_bias_ranges
        tp->ranges = xcalloc(2, sizeof(optim_range_t));
        tp->n_ranges = t5_position_bias_ranges(m, (float)o->position_bias_lr_ratio, tp->ranges);
    }
    return 0;
}

void train_params_free(train_params_t *tp) {
    if (tp->has_lora) lora_free(&tp->lora);
    free(tp->lora_grads);
    free(tp->ranges);
    memset(tp, 0, sizeof *tp);
}

// ---- the training step -----------------------------------------------------------------

void train_init(train_t *t, t5_model_t *m, t5_acts_t *a, train_params_t *tp, const train_opts_t *o) {
    memset(t, 0, sizeof *t);
    t->o = *o;
    if (t->o.grad_accum < 1) t->o.grad_accum = 1;
    t->m = m;
    t->a = a;
    t->tp = tp;
    adamw_init(&t->opt, tp->n, t->o.beta1, t->o.beta2, t->o.eps, t->o.weight_decay);
    if (train_keeps_m_bf16(tp->method, m->bf16)) adamw_keep_m_bf16(&t->opt);
}

int train_keeps_m_bf16(train_method_t method, int bf16) {
    return bf16 && (method == TRAIN_METHOD_FULL || method == TRAIN_METHOD_PARTIAL);
}

void train_free(train_t *t) {
    adamw_free(&t->opt);
    memset(t, 0, sizeof *t);
}

// Sums the micro batch's loss sum, target tokens, tokens and failure flag over the ranks.
// Every rank calls it for every micro batch, also one that failed: the others would wait
// for it otherwise.
static int comm_sum_micro(const train_comm_t *c, double v[4], long step, lb_err_t *err) {
    int failed = v[3] != 0;
    lb_err_t e2;
    if (c->sum_f64(c->ctx, v, 4, failed ? &e2 : err)) return -1;
    if (failed) return -1;
    if (v[3] != 0)
        return lb_err_set(err, LB_EIO,
                          "another rank of the data-parallel run failed at step %ld; mpirun's output shows that rank's message",
                          step + 1);
    return 0;
}

int train_gradients(train_t *t, const train_feed_t *feed, train_result_t *r, lb_err_t *err) {
    double t0 = lb_now();
    int n_micro = t->o.grad_accum;
    const train_comm_t *comm = t->comm;
    memset(r, 0, sizeof *r);
    memset(t->tp->grads, 0, t->tp->n * sizeof(lb_real));
    double sum = 0;
    for (int k = 0; k < n_micro; k++) {
        // every micro batch gets its own dropout masks
        uint64_t micro = (uint64_t)t->step * (uint64_t)n_micro + (uint64_t)k;
        lb_drop_t drop = {t->o.seed, micro, t->o.dropout};
        t5_batch_t b = {0};
        float l = 0;
        int rc = feed->next(feed->ctx, micro, &b, err);
        if (!rc && b.B > 0)
            rc = feed->forward ? feed->forward(feed->ctx, t->m, t->a, &b, &drop, &l, err)
                               : t5_forward(t->m, t->a, &b, &drop, &l, err);
        long n_src = 0, n_tgt = 0;
        for (int i = 0; !rc && i < b.B * b.S; i++) n_src += b.attention_mask[i] != 0;
        for (int i = 0; !rc && i < b.B * b.T; i++) n_tgt += b.labels[i] != -100;
        double scale = 1.0 / n_micro;
        if (comm) {  // the global batch's loss: sums over the ranks (t5_forward's loss is per target token)
            double v[4] = {(double)l * (double)n_tgt, (double)n_tgt, (double)(n_src + n_tgt), rc != 0};
            double tc = lb_now();
            if (comm_sum_micro(comm, v, t->step, err)) return -1;
            r->comm_seconds += lb_now() - tc;
            l = v[1] > 0 ? (float)(v[0] / v[1]) : 0.0f;
            scale = v[1] > 0 ? (double)n_tgt / v[1] / n_micro : 0;
            r->tokens += (long)v[2];
        } else {
            if (rc) return -1;
            r->tokens += n_src + n_tgt;
        }
        if (!isfinite(l))
            return lb_err_set(err, LB_ENAN, "the loss became %s at step %ld", isnan(l) ? "NaN" : "infinite",
                              t->step + 1);
        if (b.B > 0) t5_backward(t->m, t->a, &drop, (float)scale);
        sum += l;
    }
    // LoRA's gradients are small; a full fine-tune's are reduced after the backward, not
    // overlapped with it (see README: On a cluster)
    if (comm) {
        double tc = lb_now();
        if (comm->sum(comm->ctx, t->tp->grads, t->tp->n, err)) return -1;
        r->comm_seconds += lb_now() - tc;
    }
    LB_PROF(PROF_OPTIM, r->grad_norm = sqrt(optim_sum_sq(t->tp->grads, t->tp->n)));
    if (!isfinite(r->grad_norm))
        return lb_err_set(err, LB_ENAN, "the gradient became NaN or infinite at step %ld", t->step + 1);
    r->loss = (float)(sum / n_micro);
    r->step = t->step;
    r->seconds = lb_now() - t0;
    return 0;
}

void train_apply(train_t *t, train_result_t *r) {
    double t0 = lb_prof_enabled ? lb_prof_clock() : 0;
    if (t->o.max_grad_norm > 0) optim_clip(t->tp->grads, t->tp->n, r->grad_norm, t->o.max_grad_norm);
    r->lr = optim_lr_at(t->o.schedule, t->o.lr, t->step, t->o.warmup_steps, t->o.total_steps);
    adamw_step(&t->opt, t->tp->params, t->tp->grads, r->lr, t->tp->ranges, t->tp->n_ranges);
    if (!t->tp->has_lora) t5_bf16_refresh(t->m);  // full/partial: the bf16 copies follow the master values
    if (lb_prof_enabled) lb_prof_add(PROF_OPTIM, lb_prof_clock() - t0);
    r->step = ++t->step;
}

int train_step(train_t *t, const train_feed_t *feed, train_result_t *r, lb_err_t *err) {
    double t0 = lb_now();
    if (train_gradients(t, feed, r, err)) return -1;
    train_apply(t, r);
    r->seconds = lb_now() - t0;
    return 0;
}

// ---- the data feed ----------------------------------------------------------------------

void train_data_feed_init(train_data_feed_t *f, const data_tokenized_t *data, int batch_size, uint64_t seed,
                          int pad_id, int start_id) {
    memset(f, 0, sizeof *f);
    f->data = data;
    f->batch_size = batch_size;
    f->seed = seed;
    f->pad_id = pad_id;
    f->start_id = start_id;
    f->plan_epoch = -1;
}

void train_data_feed_free(train_data_feed_t *f) {
    data_plan_free(&f->plan);
    if (f->have_cur) data_batch_free(&f->cur);
    memset(f, 0, sizeof *f);
}

int train_data_feed_batches(train_data_feed_t *f, lb_err_t *err) {
    if (f->plan_epoch != f->epoch) {
        data_plan_free(&f->plan);
        if (data_plan_batches(f->data, f->batch_size, 50, data_seed_mix(f->seed, (uint64_t)f->epoch), &f->plan, err))
            return -1;
        f->plan_epoch = f->epoch;
    }
    return f->plan.n_batches;
}

int train_data_feed_next(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err) {
    train_data_feed_t *f = ctx;
    if (f->have_cur) data_batch_free(&f->cur);
    f->have_cur = 0;
    if (train_data_feed_batches(f, err) < 0) return -1;
    const int *idx = f->plan.order + f->plan.start[f->batch];
    int n = f->plan.start[f->batch + 1] - f->plan.start[f->batch];
    if (f->ranks > 1) {  // this rank's rows of the global batch
        int lo = (int)((long)n * f->rank / f->ranks), hi = (int)((long)n * (f->rank + 1) / f->ranks);
        idx += lo;
        n = hi - lo;
    }
    if (n > 0 && (f->make ? f->make(f->make_ctx, idx, n, micro, &f->cur, err)
                          : data_batch_make(f->data, idx, n, f->pad_id, f->start_id, &f->cur, err)))
        return -1;
    f->have_cur = n > 0;
    if (++f->batch >= f->plan.n_batches) {
        f->batch = 0;
        f->epoch++;
    }
    if (n == 0) *b = (t5_batch_t){0};
    else *b = (t5_batch_t){f->cur.B, f->cur.S, f->cur.T, f->cur.input_ids, f->cur.attention_mask, f->cur.labels};
    return 0;
}

// A [rows][cols] integer matrix from field of root; *rows/*cols checked when > 0.
static int32_t *read_matrix(const cJSON *root, const char *field, int *rows, int *cols,
                            const char *path, lb_err_t *err) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!m) {
        lb_err_set(err, LB_EFORMAT, "%s: the field \"%s\" is missing; it must be a list of lists of token ids", path, field);
        return NULL;
    }
    int r = cJSON_GetArraySize(m), c = -1;
    if (!cJSON_IsArray(m) || r == 0 || (*rows > 0 && r != *rows)) {
        lb_err_set(err, LB_EFORMAT, "%s: \"%s\" must be a non-empty list of %d rows", path, field, *rows > 0 ? *rows : r);
        return NULL;
    }
    int32_t *out = NULL;
    int i = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, m) {
        int n = cJSON_GetArraySize(row);
        if (c < 0) {
            c = n;
            if (!cJSON_IsArray(row) || c == 0 || (*cols > 0 && c != *cols)) goto bad;
            out = xcalloc((size_t)r * c, sizeof(int32_t));
        }
        if (!cJSON_IsArray(row) || n != c) goto bad;
        int j = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, row) {
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9) goto bad;
            out[(size_t)i * c + j++] = (int32_t)v->valuedouble;
        }
        i++;
    }
    *rows = r;
    *cols = c;
    return out;
bad:
    free(out);
    lb_err_set(err, LB_EFORMAT, "%s: \"%s\" must be %d rows of %d integers each (row %d differs)", path, field, r,
               c > 0 ? c : *cols, i);
    return NULL;
}

int train_batch_read_json(train_batch_t *out, const char *path, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *text = lb_read_file(path, &len, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lb_err_set(err, LB_EFORMAT, "%s is not a JSON object with input_ids, attention_mask and labels", path);
    }
    int B = 0, S = 0, T = 0, rc = -1;
    int32_t *ids = NULL, *mask = NULL, *lab = NULL;
    if (!(ids = read_matrix(root, "input_ids", &B, &S, path, err))) goto out;
    if (cJSON_GetObjectItemCaseSensitive(root, "attention_mask")) {
        if (!(mask = read_matrix(root, "attention_mask", &B, &S, path, err))) goto out;
    }
    if (!(lab = read_matrix(root, "labels", &B, &T, path, err))) goto out;
    out->mem = xmalloc(sizeof(int32_t) * (size_t)B * (2 * S + T));
    memcpy(out->mem, ids, sizeof(int32_t) * (size_t)B * S);
    for (int i = 0; i < B * S; i++) out->mem[B * S + i] = mask ? mask[i] : 1;
    memcpy(out->mem + 2 * B * S, lab, sizeof(int32_t) * (size_t)B * T);
    out->b = (t5_batch_t){B, S, T, out->mem, out->mem + B * S, out->mem + 2 * B * S};
    rc = 0;
out:
    free(ids);
    free(mask);
    free(lab);
    cJSON_Delete(root);
    return rc;
}

void train_batch_free(train_batch_t *b) {
    free(b->mem);
    memset(b, 0, sizeof *b);
}
