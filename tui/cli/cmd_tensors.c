// `lorabench tensors`: runs one batch through a checkpoint and writes the tensors the
// Hugging Face fixtures hold (loss, logits, encoder output, gradients, one AdamW step),
// so a checkpoint and the engine can be checked against transformers.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linear.h"
#include "lora.h"
#include "lora_t5.h"
#include "optim.h"
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
    lora_adapter_t ad;
    float *ad_grads = NULL;
    int has_ad = 0;
    if (adapter_dir) {
        if (lora_load_t5(&ad, adapter_dir, &m, &err)) {
            train_batch_free(&tb);
            t5_free(&m);
            return fail(err.msg);
        }
        has_ad = 1;
        ad_grads = calloc(ad.n_params + 1, sizeof(float));
        t5_set_trainable(&m, NULL, NULL);
        if (lora_attach(&ad, &m, grads ? ad_grads : NULL, &err)) {
            fail(err.msg);
            lora_free(&ad);
            free(ad_grads);
            train_batch_free(&tb);
            t5_free(&m);
            return 1;
        }
    } else if (grads) {
        t5_set_trainable(&m, t5_pred_all, NULL);
    }
    const t5_batch_t *b = &tb.b;
    const t5_config_t *c = &m.cfg;
    t5_acts_t *a = t5_acts_new(&m, b->B, b->S, b->T);
    size_t nl = (size_t)b->B * b->T * c->vocab_size;
    float *logits = malloc(nl * sizeof(float));
    int n_grad = has_ad ? 2 * ad.n : m.n_params;
    int n_out = 3 + (grads ? n_grad : 0) + (step ? n_grad : 0);
    st_out_t *o = calloc((size_t)n_out, sizeof *o);
    char **names = calloc((size_t)n_out, sizeof *names);
    float *after = NULL;
    float loss;
    if (!logits || !o || !names) {
        fprintf(stderr, "lorabench tensors: out of memory; use a smaller batch\n");
        goto done;
    }
    if (t5_forward(&m, a, b, NULL, &loss, &err)) {
        fail(err.msg);
        goto done;
    }
    memcpy(logits, t5_acts_logits(a), nl * sizeof(float));
    int k = 0;
    o[k++] = (st_out_t){"loss", &loss, 1, {1}};
    o[k++] = (st_out_t){"logits", logits, 3, {b->B, b->T, c->vocab_size}};
    o[k++] = (st_out_t){"encoder_out", t5_acts_encoder_out(a), 3, {b->B, b->S, c->d_model}};
    if (grads && has_ad) {
        t5_backward(&m, a, NULL, 1.0f);
        for (int i = 0; i < ad.n; i++) {
            const lora_module_t *md = &ad.m[i];
            for (int ab = 0; ab < 2; ab++) {
                names[k] = malloc(strlen(md->name) + 64);
                sprintf(names[k], "grad.base_model.model.%s.lora_%c.weight", md->name, ab ? 'B' : 'A');
                float *g = ad_grads + ((ab ? md->B : md->A) - ad.params);
                o[k] = ab ? (st_out_t){names[k], g, 2, {md->out, md->r}} : (st_out_t){names[k], g, 2, {md->r, md->in}};
                k++;
            }
        }
    } else if (grads) {
        t5_zero_grad(&m);
        t5_backward(&m, a, NULL, 1.0f);
        for (int i = 0; i < m.n_params; i++) {
            lb_param_t *p = &m.params[i];
            names[k] = malloc(strlen(p->name) + 8);
            sprintf(names[k], "grad.%s", p->name);
            o[k++] = (st_out_t){names[k - 1], p->g, p->ndim, {p->shape[0], p->shape[1]}};
        }
    }
    if (step && has_ad) {
        after = malloc(ad.n_params * sizeof(float) + 1);
        memcpy(after, ad.params, ad.n_params * sizeof(float));
        adamw_t opt;
        adamw_init(&opt, ad.n_params, 0.9f, 0.999f, 1e-8f, (float)wd);
        adamw_step(&opt, after, ad_grads, (float)lr, NULL, 0);
        adamw_free(&opt);
        for (int i = 0; i < ad.n; i++) {
            const lora_module_t *md = &ad.m[i];
            for (int ab = 0; ab < 2; ab++) {
                names[k] = malloc(strlen(md->name) + 64);
                sprintf(names[k], "step1.base_model.model.%s.lora_%c.weight", md->name, ab ? 'B' : 'A');
                float *p = after + ((ab ? md->B : md->A) - ad.params);
                o[k] = ab ? (st_out_t){names[k], p, 2, {md->out, md->r}} : (st_out_t){names[k], p, 2, {md->r, md->in}};
                k++;
            }
        }
    } else if (step) {
        after = malloc(m.n_train * 2 * sizeof(float));
        memcpy(after, m.block, m.n_train * 2 * sizeof(float));
        adamw_t opt;
        adamw_init(&opt, m.n_train, 0.9f, 0.999f, 1e-8f, (float)wd);
        adamw_step(&opt, after, after + m.n_train, (float)lr, NULL, 0);
        adamw_free(&opt);
        for (int i = 0; i < m.n_params; i++) {
            lb_param_t *p = &m.params[i];
            names[k] = malloc(strlen(p->name) + 8);
            sprintf(names[k], "step1.%s", p->name);
            o[k++] = (st_out_t){names[k - 1], after + p->off, p->ndim, {p->shape[0], p->shape[1]}};
        }
    }
    if (st_write(out, o, k, NULL, &err)) {
        fail(err.msg);
        goto done;
    }
    printf("loss %.6f over %d labels; wrote %d tensors to %s\n", (double)loss, t5_acts_n_tokens(a), k, out);
    rc = 0;
done:
    if (has_ad) {
        lora_free(&ad);
        free(ad_grads);
    }
    for (int i = 0; names && i < n_out; i++) free(names[i]);
    free(names);
    free(o);
    free(after);
    free(logits);
    t5_acts_free(a);
    train_batch_free(&tb);
    t5_free(&m);
    return rc;
}
