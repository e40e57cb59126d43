// `lorabench tensors`: runs one batch through a checkpoint and writes the tensors the
// Hugging Face fixtures hold (loss, logits, encoder output, gradients, one AdamW step),
// so a checkpoint and the engine can be checked against transformers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "linear.h"
#include "lora.h"
#include "lora_t5.h"
#include "safetensors.h"
#include "t5.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench tensors --model DIR [--adapter DIR] --batch FILE.json --out FILE.safetensors\n"
            "                         [--grads] [--step [--lr X] [--weight-decay Y]] [--threads N]\n\n"
            "Runs the batch (input_ids, attention_mask, labels as in batch.json) through the\n"
            "Hugging Face T5 checkpoint in DIR with teacher forcing, dropout off, and writes:\n"
            "  loss [1], logits [B, T, V], encoder_out [B, S, D] (after the final norm);\n"
            "  --grads  grad.<name> for every parameter (all trainable);\n"
            "  --step   step1.<name>: every parameter after one AdamW step from those gradients\n"
            "           (betas 0.9/0.999, eps 1e-8; --lr default 1e-3, --weight-decay default 0).\n"
            "With --adapter (a PEFT adapter folder) the adapter is active, only its A and B are\n"
            "trainable, and --grads writes grad.base_model.model.<module>.lora_A.weight / lora_B.weight.\n");
}

static int fail(const char *msg) {
    fprintf(stderr, "lorabench tensors: %s\n", msg);
    return 1;
}

// The training step's feed: the batch file, every micro batch.
static int batch_next(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err) {
    (void)micro;
    (void)err;
    *b = ((const train_batch_t *)ctx)->b;
    return 0;
}

// Appends one tensor per trainable parameter, named prefix + its name (the adapter's
// PEFT names, or the model's), holding values at the same offsets of vals (a copy laid
// out like tp's values or gradients). Returns the new count.
static int add_tensors(const train_params_t *tp, const t5_model_t *m, const char *prefix, const lb_real *vals,
                       st_out_t *o, char **names, int k) {
    if (tp->has_lora) {
        for (int i = 0; i < tp->lora.n; i++) {
            const lora_module_t *md = &tp->lora.m[i];
            for (int ab = 0; ab < 2; ab++) {
                size_t len = strlen(prefix) + strlen(md->name) + 64;
                names[k] = xmalloc(len);
                snprintf(names[k], len, "%sbase_model.model.%s.lora_%c.weight", prefix, md->name, ab ? 'B' : 'A');
                const lb_real *v = vals + ((ab ? md->B : md->A) - tp->lora.params);
                o[k] = ab ? (st_out_t){.name = names[k], .data = v, .ndim = 2, .shape = {md->out, md->r}} : (st_out_t){.name = names[k], .data = v, .ndim = 2, .shape = {md->r, md->in}};
                k++;
            }
        }
        return k;
    }
    for (int i = 0; i < m->n_params; i++) {
        const lb_param_t *p = &m->params[i];
        size_t len = strlen(prefix) + strlen(p->name) + 1;
        names[k] = xmalloc(len);
        snprintf(names[k], len, "%s%s", prefix, p->name);
        o[k] = (st_out_t){.name = names[k], .data = vals + p->off, .ndim = p->ndim, .shape = {p->shape[0], p->shape[1]}};
        k++;
    }
    return k;
}

int cmd_tensors(int argc, char **argv) {
    const char *model_dir = NULL, *batch_path = NULL, *out = NULL, *adapter_dir = NULL;
    int grads = 0, step = 0, threads = 0;
    double lr = 1e-3, wd = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--grads")) {
            grads = 1;
        } else if (!strcmp(a, "--step")) {
            step = 1;
        } else if (!strcmp(a, "--adapter") && v) {
            adapter_dir = v;
            i++;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--batch") || !strcmp(a, "--out") ||
                   !strcmp(a, "--lr") || !strcmp(a, "--weight-decay") || !strcmp(a, "--threads")) {
            if (!v) {
                fprintf(stderr, "lorabench tensors: %s needs a value; see --help\n", a);
                return 2;
            }
            char *end = NULL;
            if (!strcmp(a, "--model")) model_dir = v;
            else if (!strcmp(a, "--batch")) batch_path = v;
            else if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--threads")) threads = (int)strtol(v, &end, 10);
            else if (!strcmp(a, "--lr")) lr = strtod(v, &end);
            else wd = strtod(v, &end);
            if (end && (*end || end == v)) {
                fprintf(stderr, "lorabench tensors: %s expects a number, not '%s'\n", a, v);
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "lorabench tensors: unknown option '%s'; see --help\n", a);
            return 2;
        }
    }
    if (!model_dir || !batch_path || !out) {
        fprintf(stderr, "lorabench tensors: --model, --batch and --out are required; see --help\n");
        return 2;
    }
    if (step) grads = 1;
    lb_set_threads(threads);
    lb_err_t err = {0};
    t5_model_t m;
    train_batch_t tb;
    if (t5_load(&m, model_dir, &err)) return fail(err.msg);
    if (train_batch_read_json(&tb, batch_path, &err)) {
        t5_free(&m);
        return fail(err.msg);
    }
    int rc = 1;
    train_params_t tp = {0};
    if (adapter_dir) {  // the adapter is active; with --grads only its A and B train
        lora_adapter_t ad;
        if (lora_load_t5(&ad, adapter_dir, &m, &err) || train_params_adopt_lora(&tp, &m, &ad, &err)) {
            train_batch_free(&tb);
            t5_free(&m);
            return fail(err.msg);
        }
    } else if (grads) {
        train_method_opts_t mo;
        train_method_opts_default(&mo, TRAIN_METHOD_FULL);
        if (train_params_setup(&tp, &m, &mo, &err)) {
            train_batch_free(&tb);
            t5_free(&m);
            return fail(err.msg);
        }
    }
    const t5_batch_t *b = &tb.b;
    const t5_config_t *c = &m.cfg;
    t5_acts_t *a = t5_acts_new(&m, b->B, b->S, b->T);
    size_t nl = (size_t)b->B * b->T * c->vocab_size;
    lb_real *logits = xmalloc(nl * sizeof(lb_real)), *enc_out = xmalloc((size_t)b->B * b->S * c->d_model * sizeof(lb_real));
    lb_real *grad_copy = NULL;
    int n_grad = tp.has_lora ? 2 * tp.lora.n : m.n_params;
    int n_out = 3 + (grads ? n_grad : 0) + (step ? n_grad : 0), k = 0;
    st_out_t *o = xcalloc((size_t)n_out, sizeof *o);
    char **names = xcalloc((size_t)n_out, sizeof *names);
    float loss;
    // the logits and encoder output first: the backward pass reuses their buffers
    if (t5_forward(&m, a, b, NULL, &loss, &err)) {
        fail(err.msg);
        goto done;
    }
    memcpy(logits, t5_acts_logits(a), nl * sizeof(lb_real));
    memcpy(enc_out, t5_acts_encoder_out(a), (size_t)b->B * b->S * c->d_model * sizeof(lb_real));
    o[k++] = (st_out_t){.name = "loss", .data = &loss, .ndim = 1, .shape = {1}};
    o[k++] = (st_out_t){.name = "logits", .data = logits, .ndim = 3, .shape = {b->B, b->T, c->vocab_size}};
    o[k++] = (st_out_t){.name = "encoder_out", .data = enc_out, .ndim = 3, .shape = {b->B, b->S, c->d_model}};
    if (grads) {
        // the training step a run takes, on this one batch: dropout off, no clipping, a
        // constant learning rate (the fixtures' single AdamW step)
        train_opts_t to;
        train_opts_default(&to);
        to.lr = (float)lr;
        to.weight_decay = (float)wd;
        to.max_grad_norm = 0;
        to.schedule = SCHED_CONSTANT;
        to.dropout = 0;
        train_t tr;
        train_init(&tr, &m, a, &tp, &to);
        train_feed_t feed = {batch_next, NULL, &tb};
        train_result_t res;
        int e = train_gradients(&tr, &feed, &res, &err);
        if (!e && step) {  // the gradients as they were before the update (clipping is off)
            grad_copy = xmalloc(tp.n * sizeof(lb_real) + 1);
            memcpy(grad_copy, tp.grads, tp.n * sizeof(lb_real));
            train_apply(&tr, &res);
        }
        train_free(&tr);
        if (e) {
            fail(err.msg);
            goto done;
        }
        const lb_real *g = grad_copy ? grad_copy : tp.grads;
        k = add_tensors(&tp, &m, "grad.", g, o, names, k);
        if (step) k = add_tensors(&tp, &m, "step1.", tp.params, o, names, k);
    }
    if (st_write(out, o, k, NULL, &err)) {
        fail(err.msg);
        goto done;
    }
    printf("loss %.6f over %d labels; wrote %d tensors to %s\n", (double)loss, t5_acts_n_tokens(a), k, out);
    rc = 0;
done:
    for (int i = 0; i < n_out; i++) free(names[i]);
    free(names);
    free(o);
    free(grad_copy);
    free(enc_out);
    free(logits);
    t5_acts_free(a);
    train_params_free(&tp);
    train_batch_free(&tb);
    t5_free(&m);
    return rc;
}
