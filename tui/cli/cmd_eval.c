// eval and merge: scoring a model (with an optional adapter) on a data split, and writing
// an adapter merged into its base model as a full Hugging Face checkpoint.
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "data.h"
#include "evaluate.h"
#include "lora.h"
#include "lora_t5.h"
#include "t5.h"
#include "t5_save.h"
#include "tokenizer.h"

static void eval_progress(void *ctx, int done, int total) {
    (void)ctx;
    fprintf(stderr, "\rgenerating %d/%d", done, total);
    fflush(stderr);
}

// Loads a model and, when adapter_dir is given, its adapter attached (or merged).
static int load_model_adapter(const char *model_dir, const char *adapter_dir, int merge, t5_model_t *m,
                              lora_adapter_t *a, int *has_adapter) {
    lb_err_t err = {0};
    *has_adapter = 0;
    if (t5_load(m, model_dir, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        return -1;
    }
    t5_set_trainable(m, NULL, NULL);
    if (!adapter_dir) return 0;
    if (lora_load_t5(a, adapter_dir, m, &err) ||
        (merge ? lora_merge_into_model(a, m, +1, &err) : lora_attach(a, m, NULL, &err))) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        t5_free(m);
        return -1;
    }
    *has_adapter = 1;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *dataset = NULL, *split_name = "validation";
    const char *source = NULL, *target = NULL, *prefix = NULL, *template_text = NULL;
    eval_opts_t o = {.beams = 1, .max_new_tokens = 48, .length_penalty = 1.0, .stem = 1, .batch_size = 8, .seed = 42};
    int json = 0, unmerged = 0, threads = 0, precision = T5_PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            printf("usage: lorabench eval --model DIR [--adapter DIR] --dataset PATH [--split validation|test|train]\n"
                   "       [--limit N] [--beams N] [--max-new-tokens M] [--length-penalty X] [--no-repeat-ngram N]\n"
                   "       [--source F --target F --prefix STR --template STR] [--max-source N] [--no-stem]\n"
                   "       [--unmerged] [--threads N] [--precision fp32|bf16|auto] [--json]\n\n"
                   "Generates a summary for each example of the split, scores it with ROUGE (rouge-score's\n"
                   "algorithm, stemmed unless --no-stem) and prints the means with 95%% bootstrap intervals\n"
                   "and the generation speed. An adapter is merged into the weights first (no extra\n"
                   "latency) unless --unmerged. --precision bf16 runs the products of the weights in bf16\n"
                   "(train.precision; auto: bf16 where the CPU has AMX bf16); fp32, the default, is the\n"
                   "reference.\n");
            return 0;
        }
        if (!v && a[0] == '-' && strcmp(a, "--json") && strcmp(a, "--no-stem") && strcmp(a, "--unmerged")) {
            fprintf(stderr, "lorabench eval: %s needs a value; see --help\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--adapter")) adapter = argv[++i];
        else if (!strcmp(a, "--dataset")) dataset = argv[++i];
        else if (!strcmp(a, "--split")) split_name = argv[++i];
        else if (!strcmp(a, "--limit")) o.limit = atoi(argv[++i]);
        else if (!strcmp(a, "--beams")) o.beams = atoi(argv[++i]);
        else if (!strcmp(a, "--max-new-tokens")) o.max_new_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--length-penalty")) o.length_penalty = atof(argv[++i]);
        else if (!strcmp(a, "--no-repeat-ngram")) o.no_repeat_ngram_size = atoi(argv[++i]);
        else if (!strcmp(a, "--max-source")) o.max_source_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--batch-size")) o.batch_size = atoi(argv[++i]);
        else if (!strcmp(a, "--source")) source = argv[++i];
        else if (!strcmp(a, "--target")) target = argv[++i];
        else if (!strcmp(a, "--prefix")) prefix = argv[++i];
        else if (!strcmp(a, "--template")) template_text = argv[++i];
        else if (!strcmp(a, "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--precision")) {
            if ((precision = t5_precision_parse(argv[++i])) < 0) {
                fprintf(stderr, "lorabench eval: --precision must be fp32, bf16 or auto, not '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--no-stem")) o.stem = 0;
        else if (!strcmp(a, "--unmerged")) unmerged = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else {
            fprintf(stderr, "lorabench eval: unknown argument %s; see --help\n", a);
            return 2;
        }
    }
    if (!model || !dataset) {
        fprintf(stderr, "lorabench eval: --model DIR and --dataset PATH are required\n");
        return 2;
    }
    if (o.beams < 1 || o.max_new_tokens < 1 || o.batch_size < 1) {
        fprintf(stderr, "lorabench eval: --beams, --max-new-tokens and --batch-size must be at least 1\n");
        return 2;
    }
    lb_set_threads(threads);
    t5_model_t m;
    lora_adapter_t a;
    int has_adapter;
    if (load_model_adapter(model, adapter, !unmerged, &m, &a, &has_adapter)) return 1;
    lb_err_t err = {0};
    t5_precision_t used;  // after the merge: the packed weights are the merged ones
    if (t5_set_precision(&m, (t5_precision_t)precision, &used, &err)) {
        fprintf(stderr, "lorabench eval: %s\n", err.msg);
        if (has_adapter) lora_free(&a);
        t5_free(&m);
        return 1;
    }
    char tp[4096];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", model);
    tokenizer_t *tok = tokenizer_load(tp, &err);
    data_set_t ds;
    int rc = 1, ds_ok = 0;
    if (!tok) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        goto out;
    }
    data_options_t dopt = {.source_field = source, .target_field = target, .prefix = prefix, .template_text = template_text};
    if (data_set_load(dataset, &dopt, &ds, &err)) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        goto out;
    }
    ds_ok = 1;
    const data_split_t *sp = data_set_split(&ds, split_name, &err);
    if (!sp) {
        fprintf(stderr, "lorabench: %s\n", err.msg);
        goto out;
    }
    if (!json) o.progress = eval_progress;
    eval_result_t res;
    if (evaluate_split(&m, tok, sp, &o, &res, &err)) {
        fprintf(stderr, "\nlorabench: %s\n", err.msg);
        goto out;
    }
    double tps = res.generate_s > 0 ? res.generated_tokens / res.generate_s : 0;
    if (json) {
        printf("{\"n\":%d,\"split\":\"%s\",\"stem\":%s,\"precision\":\"%s\"", res.n, sp->name, o.stem ? "true" : "false",
               t5_precision_name(used));
        for (int t = 0; t < ROUGE_NTYPES; t++) {
            const rouge_prf_interval_t *ri = rouge_agg_at(&res.agg, t);
            printf(",\"%s\":{\"f\":%.6f,\"low\":%.6f,\"high\":%.6f,\"p\":%.6f,\"r\":%.6f}", rouge_type_name(t), ri->f.mean,
                   ri->f.low, ri->f.high, ri->p.mean, ri->r.mean);
        }
        printf(",\"generated_tokens\":%ld,\"seconds\":%.3f,\"tokens_per_s\":%.1f}\n", res.generated_tokens, res.generate_s, tps);
    } else {
        fprintf(stderr, "\n");
        printf("%s split, %d examples, %s beam%s, %s ROUGE\n", sp->name, res.n, o.beams == 1 ? "greedy" : "",
               o.beams == 1 ? "" : "s", o.stem ? "stemmed" : "unstemmed");
        if (o.beams > 1) printf("(beams: %d)\n", o.beams);
        printf("%-10s %9s %9s %9s   95%% interval of F\n", "", "precision", "recall", "F");
        for (int t = 0; t < ROUGE_NTYPES; t++) {
            const rouge_prf_interval_t *ri = rouge_agg_at(&res.agg, t);
            printf("%-10s %9.4f %9.4f %9.4f   [%.4f, %.4f]\n", rouge_type_name(t), ri->p.mean, ri->r.mean, ri->f.mean,
                   ri->f.low, ri->f.high);
        }
        printf("generated %ld tokens in %.2f s: %.1f tokens/s\n", res.generated_tokens, res.generate_s, tps);
        for (int i = 0; i < res.n && i < 3; i++)
            printf("\n[%d] reference:  %s\n    prediction: %s\n", i, sp->ex[i].refs[0], res.predictions[i]);
    }
    evaluate_result_free(&res);
    rc = 0;
out:
    if (ds_ok) data_set_free(&ds);
    if (tok) tokenizer_free(tok);
    if (has_adapter) lora_free(&a);
    t5_free(&m);
    return rc;
}

// 1 (after saying why) when merge must not write into out: the folder of the model or the
// adapter being read (the weights are memory-mapped from there), or, without force, any
// folder that already holds a model.
static int merge_out_refused(const char *out, const char *model, const char *adapter, int force) {
    char ro[PATH_MAX], rm[PATH_MAX], ra[PATH_MAX];
    if (!realpath(out, ro)) return 0;  // a new folder
    const char *src[] = {model, adapter};
    char *res[] = {rm, ra};
    for (int i = 0; i < 2; i++)
        if (src[i] && realpath(src[i], res[i]) && !strcmp(ro, res[i])) {
            fprintf(stderr, "lorabench merge: --out %s is the folder of --%s, whose files are being read; "
                    "write the merged model to another folder\n", out, i ? "adapter" : "model");
            return 1;
        }
    static const char *marks[] = {"model.safetensors", "config.json", "adapter_model.safetensors"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0] && !force; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", ro, marks[i]);
        if (access(p, F_OK) == 0) {
            fprintf(stderr, "lorabench merge: --out %s already holds a model (%s); pick a new folder, or "
                    "add --force to replace it\n", out, marks[i]);
            return 1;
        }
    }
    return 0;
}

int cmd_merge(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *out = NULL;
    st_dtype_t dtype = ST_F32;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: lorabench merge --model DIR [--adapter DIR] --out DIR [--dtype f32|bf16] [--force]\n\n"
                   "Writes W + s·B·A for every adapted module as a full Hugging Face checkpoint\n"
                   "(config.json, model.safetensors, tokenizer files) that transformers loads.\n"
                   "Without --adapter it re-saves the model (e.g. --dtype bf16 halves the file).\n"
                   "--out must be a new or empty folder: one that holds a model is replaced only\n"
                   "with --force, and never the folder of --model or --adapter (the files being read).\n");
            return 0;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "bf16")) dtype = ST_BF16;
            else if (strcmp(d, "f32")) {
                fprintf(stderr, "lorabench merge: --dtype must be f32 or bf16\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--adapter") && i + 1 < argc) adapter = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--force")) force = 1;
        else {
            fprintf(stderr, "lorabench merge: unknown argument %s; see --help\n", argv[i]);
            return 2;
        }
    }
    if (!model || !out) {
        fprintf(stderr, "lorabench merge: --model and --out are required\n");
        return 2;
    }
    if (merge_out_refused(out, model, adapter, force)) return 1;
    signal(SIGXFSZ, SIG_IGN);  // past a file-size limit: "no space left" from the write, not a kill
    t5_model_t m;
    lora_adapter_t a;
    int has;
    if (load_model_adapter(model, adapter, 1, &m, &a, &has)) return 1;
    lb_err_t err = {0};
    int rc = t5_save_dtype(&m, model, out, dtype, &err);
    if (rc) fprintf(stderr, "lorabench: %s\n", err.msg);
    else if (!has) printf("saved %s to %s (%s)\n", model, out, dtype == ST_BF16 ? "bf16" : "f32");
    else {
        char line[200];
        lora_format_trainable(line, sizeof line, a.n_params, t5_count_params(&m) + a.n_params);
        printf("merged %d modules of %s into %s\n%s\n", a.n, adapter, out, line);
    }
    if (has) lora_free(&a);
    t5_free(&m);
    return rc ? 1 : 0;
}
