#include "train.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int train_add_block(train_t *t, const train_block_t *b, lb_err_t *err) {
    if (t->n_blocks >= TRAIN_MAX_BLOCKS)
        return lb_err_set(err, LB_EARG, "too many trainable blocks (at most %d)", TRAIN_MAX_BLOCKS);
    t->blocks[t->n_blocks] = *b;
    adamw_init(&t->opt[t->n_blocks], b->n, t->o.beta1, t->o.beta2, t->o.eps, t->o.weight_decay);
    t->n_blocks++;
    return 0;
}

int train_init(train_t *t, t5_model_t *m, t5_acts_t *a, const train_opts_t *o, lb_err_t *err) {
    memset(t, 0, sizeof *t);
    t->o = *o;
    if (t->o.grad_accum < 1) t->o.grad_accum = 1;
    t->m = m;
    t->a = a;
    if (m->n_train) {
        train_block_t b = {m->block, m->block + m->n_train, m->n_train, NULL, 0};
        return train_add_block(t, &b, err);
    }
    return 0;
}

void train_free(train_t *t) {
    for (int i = 0; i < t->n_blocks; i++) adamw_free(&t->opt[i]);
    memset(t, 0, sizeof *t);
}

int train_step(train_t *t, const t5_batch_t *micro, int n_micro, float *loss, lb_err_t *err) {
    double t0 = lb_now();
    for (int i = 0; i < t->n_blocks; i++) memset(t->blocks[i].g, 0, t->blocks[i].n * sizeof(lb_real));
    lb_drop_t drop = {t->o.seed, 0, t->o.dropout};
    double sum = 0, tokens = 0;
    for (int k = 0; k < n_micro; k++) {
        // every micro batch gets its own masks: step counts micro batches
        drop.step = (uint64_t)(t->step * n_micro + k);
        float l;
        if (t5_forward(t->m, t->a, &micro[k], &drop, &l, err)) return -1;
        if (!isfinite(l))
            return lb_err_set(err, LB_ENAN, "the loss became %g at step %ld; lower the learning rate or enable gradient clipping",
                              (double)l, t->step + 1);
        t5_backward(t->m, t->a, &drop, 1.0f / (float)n_micro);
        sum += l;
        tokens += (double)micro[k].B * (micro[k].S + micro[k].T);
    }
    double ss = 0;
    for (int i = 0; i < t->n_blocks; i++) ss += optim_sum_sq(t->blocks[i].g, t->blocks[i].n);
    double norm = sqrt(ss);
    if (t->o.max_grad_norm > 0)
        for (int i = 0; i < t->n_blocks; i++)
            optim_clip(t->blocks[i].g, t->blocks[i].n, norm, t->o.max_grad_norm);
    float lr = optim_lr_at(t->o.schedule, t->o.lr, t->step, t->o.warmup_steps, t->o.total_steps);
    for (int i = 0; i < t->n_blocks; i++)
        adamw_step(&t->opt[i], t->blocks[i].p, t->blocks[i].g, lr, t->blocks[i].ranges,
                   t->blocks[i].n_ranges);
    t->step++;
    float mean = n_micro ? (float)(sum / n_micro) : 0;
    if (loss) *loss = mean;
    if (t->cb) {
        double dt = lb_now() - t0;
        train_progress_t p = {t->step, t->epoch, mean, lr, (float)norm, dt > 0 ? tokens / dt : 0, dt};
        t->cb(&p, t->user);
    }
    return 0;
}

int train_epoch(train_t *t, const train_pair_t *pairs, int n, int batch_size, long max_steps,
                lb_err_t *err) {
    if (n <= 0 || batch_size <= 0) return lb_err_set(err, LB_EARG, "an epoch needs at least one pair and a batch size >= 1");
    int *order = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t s = t->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)t->epoch;
    for (int i = n - 1; i > 0; i--) {  // Fisher–Yates
        int j = (int)(lb_rng_next(&s) % (uint64_t)(i + 1));
        int x = order[i]; order[i] = order[j]; order[j] = x;
    }
    int acc = t->o.grad_accum, per_step = batch_size * acc, rc = 0;
    t5_batch_t *mb = xcalloc((size_t)acc, sizeof *mb);
    int32_t **mem = xcalloc((size_t)acc, sizeof *mem);
    for (int start = 0; start < n && rc == 0; start += per_step) {
        if (max_steps > 0 && t->step >= max_steps) break;
        int nm = 0;
        for (int k = 0; k < acc && start + k * batch_size < n; k++, nm++) {
            int b0 = start + k * batch_size, B = n - b0 < batch_size ? n - b0 : batch_size;
            int S = 1, T = 1, Bc, Sc, Tc;
            t5_acts_capacity(t->a, &Bc, &Sc, &Tc);
            if (B > Bc) B = Bc;
            for (int i = 0; i < B; i++) {
                const train_pair_t *p = &pairs[order[b0 + i]];
                if (p->n_src > S) S = p->n_src;
                if (p->n_tgt > T) T = p->n_tgt;
            }
            S = S < Sc ? S : Sc;
            T = T < Tc ? T : Tc;
            free(mem[k]);
            mem[k] = xcalloc((size_t)B * (2 * S + T), sizeof(int32_t));
            int32_t *ids = mem[k], *mask = ids + B * S, *lab = mask + B * S;
            for (int i = 0; i < B; i++) {
                const train_pair_t *p = &pairs[order[b0 + i]];
                for (int j = 0; j < S; j++) {
                    ids[i * S + j] = j < p->n_src && j < S ? p->src[j] : t->m->cfg.pad_token_id;
                    mask[i * S + j] = j < p->n_src;
                }
                for (int j = 0; j < T; j++) lab[i * T + j] = j < p->n_tgt ? p->tgt[j] : -100;
            }
            mb[k] = (t5_batch_t){B, S, T, ids, mask, lab};
        }
        rc = train_step(t, mb, nm, NULL, err);
    }
    for (int k = 0; k < acc; k++) free(mem[k]);
    free(mem);
    free(mb);
    free(order);
    t->epoch++;
    return rc;
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
