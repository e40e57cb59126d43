// lorabench generate: greedy or beam-search generation with a T5 model directory (and LoRA
// adapters: several are applied in turn to one load of the model, tryout.h), from a batch of
// token ids (the fixtures' batch.json, for checking against Hugging Face), from texts given
// on the command line, or over a data set split.
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_common.h"
#include "data.h"
#include "generate.h"
#include "t5.h"
#include "tokenizer.h"
#include "tryout.h"
#include "util.h"

int cmd_generate(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench generate --model DIR [--adapter DIR]... [--include-base]\n"
            "                          (--batch FILE.json | --input TEXT... [--json] | --dataset PATH)\n"
            "                          [--beams N] [--max-new-tokens M] [--length-penalty X]\n"
            "                          [--early-stopping true|false|never] [--no-repeat-ngram N]\n"
            "                          [--threads N] [--precision fp32|bf16|auto] [--no-cache] [--stats]\n"
            "                          [--switch attach|merge]\n"
            "\n"
            "Generates with transformers' semantics (greedy when --beams is 1, else beam search),\n"
            "the encoder run once per input and the decoder's keys and values cached.\n"
            "\n"
            "  --model DIR           a Hugging Face T5 directory: config.json, model.safetensors,\n"
            "                        tokenizer.json (the tokenizer is needed for text in or out)\n"
            "  --adapter DIR         a LoRA adapter (PEFT adapter_config.json and\n"
            "                        adapter_model.safetensors) applied on top of the model; repeat\n"
            "                        it to try several: the model is loaded once and each adapter\n"
            "                        applied to it in turn. A folder with config.json and\n"
            "                        model.safetensors instead (a full fine-tune) is loaded as a\n"
            "                        model of its own. With several, each output names its folder\n"
            "  --include-base        also generate with the model alone (first, named null / base)\n"
            "  --switch MODE         attach (default): adapters stay unmerged, switching is a few\n"
            "                        pointer writes; merge: merged into the weights and unmerged\n"
            "                        again for the next one\n"
            "  --batch FILE.json     {\"input_ids\": [[...], ...], \"attention_mask\": [[...], ...]}\n"
            "                        (the mask is optional); prints one JSON object\n"
            "                        {\"ids\": [[...], ...], \"text\": [...]}, each id list starting\n"
            "                        with the decoder start token (text when the model directory\n"
            "                        has a tokenizer.json)\n"
            "  --input TEXT          a text to complete (repeat for several); prints one output\n"
            "                        text per line (several adapters: under \"# base\" / \"# DIR\")\n"
            "    --json              one JSON line per input and adapter, each input generated\n"
            "                        alone: {\"input\": i, \"adapter\": \"DIR\" or null for the base,\n"
            "                        \"text\": \"...\", \"ms\": its generation time}\n"
            "  --dataset PATH        a data set file or directory (see README); prints one JSON\n"
            "                        line per example {\"index\", \"prediction\", \"reference\"}\n"
            "    --split NAME        split of the data set (default validation, else the only one)\n"
            "    --limit N           first N examples only (default all)\n"
            "    --prefix TEXT       prepended to each source, e.g. \"summarize: \"\n"
            "    --batch-size N      inputs generated together (default 8)\n"
            "  --max-source-tokens N cut longer inputs to N tokens, keeping the final </s>\n"
            "                        (default 512; 0 = no limit)\n"
            "  --beams N             beam width (default 1 = greedy)\n"
            "  --max-new-tokens M    tokens generated at most, </s> included (default 48)\n"
            "  --length-penalty X    beam score = sum of log-probabilities / length^X (default 1.0)\n"
            "  --early-stopping V    true (default): stop at num_beams finished hypotheses;\n"
            "                        false / never: transformers' other two rules\n"
            "  --no-repeat-ngram N   forbid any N-gram from occurring twice (default 0 = off)\n"
            "  --threads N           OpenBLAS threads (default: OpenBLAS's own)\n"
            "  --precision P         fp32 (default, the reference), bf16 (the weights' products in\n"
            "                        bf16 with fp32 accumulation), auto (bf16 where the CPU has AMX)\n"
            "  --no-cache            recompute the whole prefix every step (slow; for checking)\n"
            "  --stats               print timing and generated tokens per second on stderr (with\n"
            "                        adapters also how many models were loaded and the switch time)\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lorabench generate: %s must be an integer in %ld..%ld, not '%s'.\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

// Reads a [B, S] matrix of integers from key of root into *m (malloc'ed); 1 when absent.
static int read_int_matrix(cJSON *root, const char *key, const char *path, int *B, int *S,
                           int32_t **m) {
    cJSON *a = cJSON_GetObjectItem(root, key);
    if (!a) return 1;
    int rows = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    if (rows <= 0) {
        fprintf(stderr, "lorabench generate: %s: \"%s\" must be a non-empty array of arrays of token ids.\n", path, key);
        return -1;
    }
    int cols = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    if (cols <= 0) {
        fprintf(stderr, "lorabench generate: %s: \"%s\"[0] is empty; every row needs at least one token.\n", path, key);
        return -1;
    }
    *m = xmalloc(sizeof(int32_t) * (size_t)rows * cols);
    for (int b = 0; b < rows; b++) {
        cJSON *row = cJSON_GetArrayItem(a, b);
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != cols) {
            fprintf(stderr, "lorabench generate: %s: \"%s\"[%d] must be an array of %d integers like row 0 (pad rows to the longest).\n",
                    path, key, b, cols);
            free(*m);
            return -1;
        }
        for (int i = 0; i < cols; i++) {
            cJSON *v = cJSON_GetArrayItem(row, i);
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2147483647.0) {
                fprintf(stderr, "lorabench generate: %s: \"%s\"[%d][%d] is not an integer.\n", path, key, b, i);
                free(*m);
                return -1;
            }
            (*m)[(size_t)b * cols + i] = (int32_t)v->valuedouble;
        }
    }
    *B = rows;
    *S = cols;
    return 0;
}

// input_ids and attention_mask of a batch file; the mask defaults to all ones.
static int read_batch(const char *path, int *B, int *S, int32_t **ids, int32_t **mask) {
    lb_err_t err = {0};
    char *txt = lb_read_file(path, NULL, &err);
    if (!txt) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        return -1;
    }
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "lorabench generate: %s is not a JSON object with \"input_ids\" (and \"attention_mask\").\n", path);
        cJSON_Delete(root);
        return -1;
    }
    int rc = read_int_matrix(root, "input_ids", path, B, S, ids);
    if (rc == 1) fprintf(stderr, "lorabench generate: %s has no \"input_ids\"; write the token ids as {\"input_ids\": [[...], ...]}.\n", path);
    if (rc) {
        cJSON_Delete(root);
        return -1;
    }
    int mB, mS;
    rc = read_int_matrix(root, "attention_mask", path, &mB, &mS, mask);
    cJSON_Delete(root);
    if (rc == 1) {
        *mask = NULL;
        return 0;
    }
    if (rc == 0 && (mB != *B || mS != *S)) {
        fprintf(stderr, "lorabench generate: %s: attention_mask is [%d, %d] but input_ids is [%d, %d]; they must have the same shape.\n",
                path, mB, mS, *B, *S);
        free(*mask);
        rc = -1;
    }
    if (rc) free(*ids);
    return rc;
}

typedef struct {
    tryout_t t;
    const t5_model_t *m;  // the variant generating now
    tokenizer_t *tok;     // the base's (NULL: none)
    const generate_opts_t *o;
    const char *label;    // the variant's adapter or model folder, NULL for the base
    int labelled;         // 1: several variants, each output names its own
    int json;             // --json (--input only)
    long tokens;          // generated, up to and including </s>
    double seconds;       // generate_batch wall time
    double encode_s;
} gen_ctx_t;

// Generates for B rows of S ids; prints nothing. Accumulates the statistics.
static int run_batch(gen_ctx_t *g, const int32_t *ids, const int32_t *mask, int B, int S,
                     generate_result_t *r) {
    lb_err_t err = {0};
    double t0 = lb_now();
    if (generate_batch(g->m, ids, mask, B, S, g->o, r, &err)) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        return -1;
    }
    g->seconds += lb_now() - t0;
    g->encode_s += r->encode_s;
    for (int b = 0; b < B; b++) g->tokens += r->n_new[b];
    return 0;
}

// Tokenizes texts into a padded batch (tryout_encode_texts); prints the error.
static int encode_texts(const gen_ctx_t *g, char **texts, int n, int max_src, int32_t **ids,
                        int32_t **mask, int *S) {
    lb_err_t err = {0};
    if (tryout_encode_texts(g->tok, &g->m->cfg, (const char *const *)texts, n, max_src, ids, mask, S, &err)) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        return -1;
    }
    return 0;
}

// , "adapter": "DIR" (or null for the base) when the output names its variant.
static void print_label(const gen_ctx_t *g) {
    if (!g->labelled && !g->json) return;
    printf(", \"adapter\": ");
    if (g->label) cli_json_string(stdout, g->label);
    else printf("null");
}

static int do_batch_file(gen_ctx_t *g, const char *path) {
    int B, S;
    int32_t *ids, *mask;
    if (read_batch(path, &B, &S, &ids, &mask)) return 1;
    generate_result_t r;
    int rc = run_batch(g, ids, mask, B, S, &r);
    free(ids);
    free(mask);
    if (rc) return 1;
    printf("{\"ids\": [");
    for (int b = 0; b < B; b++) {
        printf(b ? ", [" : "[");
        for (int i = 0; i < r.L; i++) printf(i ? ", %d" : "%d", r.ids[(size_t)b * r.L + i]);
        printf("]");
    }
    printf("]");
    print_label(g);
    if (g->tok) {
        printf(", \"text\": [");
        for (int b = 0; b < B; b++) {
            char *s = tryout_row_text(g->tok, &r, b);
            if (b) printf(", ");
            cli_json_string(stdout, s);
            free(s);
        }
        printf("]");
    }
    printf("}\n");
    generate_result_free(&r);
    return 0;
}

// Without --json the inputs are generated together, one output line each (under a
// "# base" / "# DIR" line when there are several variants); with --json each input is
// generated alone, so that its "ms" is its own.
static int do_inputs(gen_ctx_t *g, char **texts, int n, int max_src) {
    if (g->labelled && !g->json) printf("# %s\n", g->label ? g->label : "base");
    int per = g->json ? 1 : n;
    for (int start = 0; start < n; start += per) {
        int32_t *ids, *mask;
        int S;
        if (encode_texts(g, texts + start, per, max_src, &ids, &mask, &S)) return 1;
        generate_result_t r;
        double t0 = lb_now();
        int rc = run_batch(g, ids, mask, per, S, &r);
        double ms = (lb_now() - t0) * 1e3;
        free(ids);
        free(mask);
        if (rc) return 1;
        for (int b = 0; b < per; b++) {
            char *s = tryout_row_text(g->tok, &r, b);
            if (g->json) {
                printf("{\"input\": %d", start + b);
                print_label(g);
                printf(", \"text\": ");
                cli_json_string(stdout, s);
                printf(", \"ms\": %.3f}\n", ms);
            } else {
                printf("%s\n", s);
            }
            free(s);
        }
        fflush(stdout);
        generate_result_free(&r);
    }
    return 0;
}

static int do_dataset(gen_ctx_t *g, const char *path, const char *split, const char *prefix,
                      long limit, int bs, int max_src) {
    data_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.prefix = prefix;
    data_set_t ds;
    lb_err_t err = {0};
    if (data_set_load(path, &opt, &ds, &err)) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        return 1;
    }
    const data_split_t *sp = NULL;
    if (split) {
        sp = data_set_split(&ds, split, &err);
    } else {
        sp = data_set_split(&ds, "validation", &err);
        if (!sp && ds.n_splits == 1) sp = &ds.split[0];
    }
    if (!sp) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        data_set_free(&ds);
        return 1;
    }
    int n = sp->n;
    if (limit > 0 && limit < n) n = (int)limit;
    int rc = 0;
    for (int start = 0; start < n && !rc; start += bs) {
        int cnt = n - start < bs ? n - start : bs;
        char **texts = xmalloc(sizeof(char *) * (size_t)cnt);
        for (int i = 0; i < cnt; i++) texts[i] = sp->ex[start + i].source;
        int32_t *ids, *mask;
        int S;
        generate_result_t r;
        rc = encode_texts(g, texts, cnt, max_src, &ids, &mask, &S);
        free(texts);
        if (rc) break;
        rc = run_batch(g, ids, mask, cnt, S, &r);
        free(ids);
        free(mask);
        if (rc) break;
        for (int b = 0; b < cnt; b++) {
            char *s = tryout_row_text(g->tok, &r, b);
            printf("{\"index\": %d", start + b);
            print_label(g);
            printf(", \"prediction\": ");
            cli_json_string(stdout, s);
            printf(", \"reference\": ");
            cli_json_string(stdout, sp->ex[start + b].refs[0]);
            printf("}\n");
            free(s);
        }
        fflush(stdout);
        generate_result_free(&r);
    }
    data_set_free(&ds);
    return rc ? 1 : 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *batch = NULL, *dataset = NULL, *split = NULL, *prefix = NULL;
    char **inputs = xcalloc((size_t)argc, sizeof(char *));
    char **adapters = xcalloc((size_t)argc, sizeof(char *));
    int n_inputs = 0, n_adapters = 0, stats = 0, include_base = 0, json = 0, rc = 1;
    long threads = 0, limit = 0, bs = 8, max_src = 512, v;
    int precision = T5_PRECISION_FP32;
    tryout_switch_t sw = TRYOUT_ATTACH;
    generate_opts_t o;
    generate_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (!strcmp(a, "--stats")) { stats = 1; continue; }
        if (!strcmp(a, "--no-cache")) { o.use_cache = 0; continue; }
        if (!strcmp(a, "--include-base")) { include_base = 1; continue; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "lorabench generate: %s needs a value (or is unknown); see 'lorabench generate --help'.\n", a);
            goto out;
        }
        const char *val = argv[++i];
        if (!strcmp(a, "--model")) model = val;
        else if (!strcmp(a, "--adapter")) adapters[n_adapters++] = (char *)val;
        else if (!strcmp(a, "--batch")) batch = val;
        else if (!strcmp(a, "--input")) inputs[n_inputs++] = (char *)val;
        else if (!strcmp(a, "--dataset")) dataset = val;
        else if (!strcmp(a, "--split")) split = val;
        else if (!strcmp(a, "--prefix")) prefix = val;
        else if (!strcmp(a, "--switch")) {
            if (!strcmp(val, "attach")) sw = TRYOUT_ATTACH;
            else if (!strcmp(val, "merge")) sw = TRYOUT_MERGE;
            else {
                fprintf(stderr, "lorabench generate: --switch must be attach or merge, not '%s'.\n", val);
                goto out;
            }
        }
        else if (!strcmp(a, "--limit")) { if (parse_long(a, val, 0, 1L << 30, &limit)) goto out; }
        else if (!strcmp(a, "--batch-size")) { if (parse_long(a, val, 1, 4096, &bs)) goto out; }
        else if (!strcmp(a, "--max-source-tokens")) { if (parse_long(a, val, 0, 1L << 20, &max_src)) goto out; }
        else if (!strcmp(a, "--threads")) { if (parse_long(a, val, 1, 1024, &threads)) goto out; }
        else if (!strcmp(a, "--precision")) {
            if ((precision = t5_precision_parse(val)) < 0) {
                fprintf(stderr, "lorabench generate: --precision must be fp32, bf16 or auto, not '%s'.\n", val);
                goto out;
            }
        }
        else if (!strcmp(a, "--beams")) { if (parse_long(a, val, 1, 4096, &v)) goto out; o.num_beams = (int)v; }
        else if (!strcmp(a, "--max-new-tokens")) { if (parse_long(a, val, 1, 1L << 16, &v)) goto out; o.max_new_tokens = (int)v; }
        else if (!strcmp(a, "--no-repeat-ngram")) { if (parse_long(a, val, 0, 1L << 16, &v)) goto out; o.no_repeat_ngram_size = (int)v; }
        else if (!strcmp(a, "--length-penalty")) {
            char *end;
            errno = 0;
            double x = strtod(val, &end);
            if (errno || end == val || *end || !isfinite(x)) {
                fprintf(stderr, "lorabench generate: --length-penalty must be a number such as 1.0, not '%s'.\n", val);
                goto out;
            }
            o.length_penalty = (float)x;
        } else if (!strcmp(a, "--early-stopping")) {
            if (!strcmp(val, "true")) o.early_stopping = GENERATE_EARLY_TRUE;
            else if (!strcmp(val, "false")) o.early_stopping = GENERATE_EARLY_HEURISTIC;
            else if (!strcmp(val, "never")) o.early_stopping = GENERATE_EARLY_NEVER;
            else {
                fprintf(stderr, "lorabench generate: --early-stopping must be true, false or never, not '%s'.\n", val);
                goto out;
            }
        } else {
            fprintf(stderr, "lorabench generate: unknown option '%s'; see 'lorabench generate --help'.\n", a);
            goto out;
        }
    }
    if (!model) {
        fprintf(stderr, "lorabench generate: --model DIR is required (a folder with config.json and model.safetensors).\n");
        goto out;
    }
    if ((batch != NULL) + (n_inputs > 0) + (dataset != NULL) != 1) {
        fprintf(stderr, "lorabench generate: give exactly one of --batch FILE.json, --input TEXT or --dataset PATH.\n");
        goto out;
    }
    if (include_base && !n_adapters) {
        fprintf(stderr, "lorabench generate: --include-base goes with --adapter DIR (the base alone is what generate does without adapters).\n");
        goto out;
    }
    if (json && !n_inputs) {
        fprintf(stderr, "lorabench generate: --json goes with --input TEXT (--batch and --dataset print JSON already).\n");
        goto out;
    }
    if (threads > 0) lb_set_threads((int)threads);
    gen_ctx_t g;
    memset(&g, 0, sizeof g);
    g.o = &o;
    g.json = json;
    lb_err_t err = {0};
    // the base is loaded once; each adapter is applied to it in turn (tryout.h)
    if (tryout_open(&g.t, model, (t5_precision_t)precision, sw, &err)) {
        fprintf(stderr, "lorabench generate: %s\n", err.msg);
        goto out;
    }
    g.tok = g.t.tok;
    if (!g.tok && !batch) {
        fprintf(stderr, "lorabench generate: %s/tokenizer.json is missing; --input and --dataset need the model's tokenizer (or use --batch with token ids).\n", model);
        goto free_tryout;
    }
    for (int i = 0; i < n_adapters; i++) {
        if (tryout_add(&g.t, adapters[i], &err) < 0) {
            fprintf(stderr, "lorabench generate: %s\n", err.msg);
            goto free_tryout;
        }
    }
    int first = n_adapters && !include_base ? 0 : TRYOUT_VARIANT_BASE;
    g.labelled = n_adapters + (first == TRYOUT_VARIANT_BASE) > 1;
    double switch_s = 0;
    rc = 0;
    for (int vi = first; vi < n_adapters && !rc; vi++) {
        if (!(g.m = tryout_use(&g.t, vi, &err))) {
            fprintf(stderr, "lorabench generate: %s\n", err.msg);
            rc = 1;
            break;
        }
        switch_s += g.t.switch_s;
        g.label = vi == TRYOUT_VARIANT_BASE ? NULL : adapters[vi];
        if (batch) rc = do_batch_file(&g, batch);
        else if (n_inputs) rc = do_inputs(&g, inputs, n_inputs, (int)max_src);
        else rc = do_dataset(&g, dataset, split, prefix, limit, (int)bs, (int)max_src);
    }
    if (!rc && stats) {
        fprintf(stderr, "generated %ld tokens in %.3f s (encoder %.3f s): %.1f tokens/s, beams %d, cache %s, precision %s\n",
                g.tokens, g.seconds, g.encode_s, g.seconds > 0 ? g.tokens / g.seconds : 0.0, o.num_beams,
                o.use_cache ? "on" : "off", t5_precision_name(g.t.used));
        int n_models = 0;
        for (int i = 0; i < g.t.n; i++) n_models += g.t.v[i].is_model;
        if (n_adapters)
            fprintf(stderr, "model loads %d in %.3f s (%d fine-tuned model%s besides the base); %d adapter%s applied to the loaded base (%s) in %.3f ms\n",
                    g.t.model_loads, g.t.load_s, n_models, n_models == 1 ? "" : "s", n_adapters - n_models,
                    n_adapters - n_models == 1 ? "" : "s", sw == TRYOUT_MERGE ? "merge" : "attach", switch_s * 1e3);
    }
free_tryout:
    tryout_free(&g.t);
out:
    free(inputs);
    free(adapters);
    return rc;
}
