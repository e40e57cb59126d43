// Spec tests: defaults, the example of ARCHITECTURE.md, one field-named message per bad
// field, canonical JSON round trip, spec_set, path resolution and grid expansion.
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "spec.h"

#define MIN_SPEC "\"base_model\": \"m\", \"dataset\": {\"path\": \"d\"}"

static const char arch_example[] =
    "{ \"name\": \"lora-r8-qv\",\n"
    "  \"base_model\": \"experiments/models/t5-tiny\",\n"
    "  \"dataset\": { \"path\": \"experiments/data/debsum\", \"source\": \"description\",\n"
    "               \"target\": \"synopsis\", \"prefix\": \"summarize: \",\n"
    "               \"max_source_tokens\": 256, \"max_target_tokens\": 48 },\n"
    "  \"method\": \"lora\",            \"_methods\": \"none | lora | full | partial\",\n"
    "  \"lora\": { \"r\": 8, \"alpha\": 16, \"dropout\": 0.05, \"targets\": [\"q\", \"v\"],\n"
    "            \"layers\": \"all\", \"rslora\": false, \"init\": \"kaiming\" },\n"
    "  \"train\": { \"epochs\": 1, \"max_steps\": 0, \"batch_size\": 8, \"grad_accum\": 1,\n"
    "             \"lr\": 1e-3, \"weight_decay\": 0.0, \"warmup\": 0.06, \"schedule\": \"linear\",\n"
    "             \"max_grad_norm\": 1.0, \"seed\": 42, \"eval_every\": 0 },\n"
    "  \"eval\": { \"split\": \"validation\", \"limit\": 200, \"beams\": 1, \"max_new_tokens\": 48,\n"
    "            \"stemmer\": true },\n"
    "  \"threads\": 2 }\n";

static void test_defaults(void) {
    spec_t s;
    lb_err_t err = {0};
    EXPECTF(spec_parse("{" MIN_SPEC "}", NULL, &s, &err) == 0, "%s", err.msg);
    EXPECT(!strcmp(s.base_model, "m") && !strcmp(s.dataset.path, "d"));
    EXPECT(s.name_auto && !strcmp(s.name, "lora-r8-qv"));
    EXPECT(!strcmp(s.dataset.source, "") && !strcmp(s.dataset.target, "") &&
           !strcmp(s.dataset.prefix, "") && !strcmp(s.dataset.template_text, ""));
    EXPECT(s.dataset.split_ratio == 0.9 && s.dataset.max_source_tokens == 256 &&
           s.dataset.max_target_tokens == 64 && s.dataset.limit == 0);
    EXPECT(s.method == SPEC_METHOD_LORA && s.lora.r == 8 && s.lora.alpha == 16 &&
           s.lora.dropout == 0.05);
    EXPECT(s.lora.targets == (SPEC_T_Q | SPEC_T_V));
    EXPECT(s.lora.stacks == (SPEC_STACK_ENCODER | SPEC_STACK_DECODER) &&
           s.lora.attention == (SPEC_ATTN_SELF | SPEC_ATTN_CROSS));
    EXPECT(s.lora.n_layers == 0 && s.lora.layers == NULL && !s.lora.rslora &&
           s.lora.init == SPEC_INIT_KAIMING && s.lora.n_rank_pattern == 0);
    EXPECT(s.partial.top_blocks == 2 && s.partial.stack == SPEC_PART_BOTH && !s.partial.norms_only);
    EXPECT(s.train.epochs == 1 && s.train.max_steps == 0 && s.train.batch_size == 8 &&
           s.train.grad_accum == 1 && s.train.lr == 1e-3 && s.train.weight_decay == 0 &&
           s.train.warmup == 0.06 && s.train.schedule == SPEC_SCHEDULE_LINEAR &&
           s.train.max_grad_norm == 1.0 && s.train.seed == 42 && s.train.eval_every == 0 &&
           s.train.checkpoint_every == 100 && s.train.loraplus_ratio == 1.0);
    EXPECT(s.eval.split == SPEC_SPLIT_VALIDATION && s.eval.limit == 200 && s.eval.beams == 1 &&
           s.eval.max_new_tokens == 48 && s.eval.length_penalty == 1.0 &&
           s.eval.no_repeat_ngram_size == 0 && s.eval.stemmer);
    EXPECT(s.threads == 0 && s.grid_json == NULL);
    spec_free(&s);

    // Names made from the settings when none is given.
    struct { const char *json, *name; } names[] = {
        {"{" MIN_SPEC ", \"method\": \"none\"}", "zero-shot"},
        {"{" MIN_SPEC ", \"method\": \"full\"}", "full"},
        {"{" MIN_SPEC ", \"method\": \"partial\", \"partial\": {\"top_blocks\": 3}}", "partial-top3"},
        {"{" MIN_SPEC ", \"lora\": {\"r\": 4, \"targets\": [\"v\", \"q\", \"k\", \"o\"]}}", "lora-r4-qkvo"},
        {"{" MIN_SPEC ", \"lora\": {\"r\": 2, \"targets\": [\"q\", \"wi_0\", \"wo\"]}}", "lora-r2-q+wi_0+wo"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        EXPECTF(spec_parse(names[i].json, NULL, &s, &err) == 0, "%s", err.msg);
        EXPECTF(s.name && !strcmp(s.name, names[i].name), "%s", s.name ? s.name : "(null)");
        spec_free(&s);
    }
}

static void test_architecture_example(void) {
    spec_t s;
    lb_err_t err = {0};
    EXPECTF(spec_parse(arch_example, "example.json", &s, &err) == 0, "%s", err.msg);
    EXPECT(!strcmp(s.name, "lora-r8-qv") && !s.name_auto);
    EXPECT(!strcmp(s.base_model, "experiments/models/t5-tiny"));
    EXPECT(!strcmp(s.dataset.source, "description") && !strcmp(s.dataset.target, "synopsis") &&
           !strcmp(s.dataset.prefix, "summarize: ") && s.dataset.max_target_tokens == 48);
    EXPECT(s.threads == 2 && s.lora.r == 8 && s.train.lr == 1e-3);
    char buf[64];
    spec_targets_string(s.lora.targets, buf, sizeof buf);
    EXPECT(!strcmp(buf, "q,v"));
    spec_free(&s);
}

typedef struct {
    const char *json;   // inside the braces, after MIN_SPEC unless it starts with '!'
    const char *path;   // the message must start with this JSON path
    const char *want;   // and contain this (the allowed values / the problem)
} bad_case_t;

static void test_bad_fields(void) {
    const bad_case_t cases[] = {
        {"\"method\": \"lorax\"", "method: ", "unknown method 'lorax'; allowed: none, lora, full, partial"},
        {"\"lora\": {\"r\": 0}", "lora.r: ", "must be a positive integer (e.g. 4, 8, 16); got 0"},
        {"\"lora\": {\"r\": -4}", "lora.r: ", "got -4"},
        {"\"lora\": {\"r\": 8.5}", "lora.r: ", "expected a whole number, got the number 8.5"},
        {"\"lora\": {\"r\": \"8\"}", "lora.r: ", "expected a whole number, got the string \"8\""},
        {"\"train\": {\"lr\": -0.001}", "train.lr: ", "must be a positive number (e.g. 0.001); got -0.001"},
        {"\"train\": {\"lr\": 0}", "train.lr: ", "positive"},
        {"\"train\": {\"lr\": \"fast\"}", "train.lr: ", "expected a number, got the string \"fast\""},
        {"\"rank\": 8", "rank: ", "unknown key; valid top-level keys: name, base_model, dataset, method, lora, partial, train, eval, threads, grid"},
        {"\"lora\": {\"rank\": 8}", "lora.rank: ", "unknown key; valid keys of lora: r, alpha, dropout, targets, stacks, attention, layers, rslora, init, rank_pattern, alpha_pattern"},
        {"\"train\": {\"learning_rate\": 1}", "train.learning_rate: ", "valid keys of train: epochs, max_steps, batch_size"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\", \"fields\": 1}", "dataset.fields: ", "valid keys of dataset: path, source, target, prefix, template"},
        {"\"eval\": {\"beam\": 4}", "eval.beam: ", "valid keys of eval: split, limit, beams"},
        {"\"partial\": {\"k\": 4}", "partial.k: ", "valid keys of partial: top_blocks, stack, norms_only"},
        {"\"lora\": {\"targets\": [\"q\", \"query\"]}", "lora.targets[1]: ", "unknown target module 'query'; valid: q, k, v, o, wi, wi_0, wi_1, wo, lm_head"},
        {"\"lora\": {\"targets\": \"q\"}", "lora.targets: ", "expected a list of target modules from q, k, v"},
        {"\"lora\": {\"targets\": [7]}", "lora.targets[0]: ", "expected a target module name (q, k, v, o, wi, wi_0, wi_1, wo, lm_head), got the number 7"},
        {"\"lora\": {\"targets\": []}", "lora.targets: ", "at least one module of q, k, v"},
        {"\"lora\": {\"stacks\": [\"middle\"]}", "lora.stacks[0]: ", "unknown stack 'middle'; valid: encoder, decoder"},
        {"\"lora\": {\"attention\": [\"self\", \"global\"]}", "lora.attention[1]: ", "valid: self, cross"},
        {"\"lora\": {\"attention\": []}", "lora.attention: ", "self, cross"},
        {"\"lora\": {\"layers\": \"some\"}", "lora.layers: ", "expected \"all\" or a list of block indices"},
        {"\"lora\": {\"layers\": [0, -1]}", "lora.layers[1]: ", "out of range (0 to 127)"},
        {"\"lora\": {\"layers\": [2, 2]}", "lora.layers[1]: ", "listed twice"},
        {"\"lora\": {\"layers\": []}", "lora.layers: ", "empty"},
        {"\"lora\": {\"init\": \"xavier\"}", "lora.init: ", "unknown init 'xavier'; allowed: kaiming, gaussian, pissa"},
        {"\"lora\": {\"rslora\": 1}", "lora.rslora: ", "expected true or false, got the number 1"},
        {"\"lora\": {\"alpha\": 0}", "lora.alpha: ", "positive"},
        {"\"lora\": {\"dropout\": 1}", "lora.dropout: ", "below 1"},
        {"\"lora\": {\"rank_pattern\": {\"q\": 2.5}}", "lora.rank_pattern.q: ", "whole number"},
        {"\"lora\": {\"rank_pattern\": {\"q\": 0}}", "lora.rank_pattern.q: ", "positive integer rank"},
        {"\"lora\": {\"alpha_pattern\": {\"v\": -1}}", "lora.alpha_pattern.v: ", "positive"},
        {"\"lora\": 5", "lora: ", "expected an object with keys r, alpha"},
        {"\"lora\": {\"r\": 8, \"r\": 16}", "lora.r: ", "given twice"},
        {"\"partial\": {\"stack\": \"top\"}", "partial.stack: ", "allowed: encoder, decoder, both"},
        {"\"train\": {\"schedule\": \"step\"}", "train.schedule: ", "allowed: linear, cosine, constant"},
        {"\"train\": {\"warmup\": 2.5}", "train.warmup: ", "whole number of steps"},
        {"\"train\": {\"warmup\": -0.1}", "train.warmup: ", "fraction"},
        {"\"train\": {\"epochs\": 0}", "train.max_steps: ", "train.epochs"},
        {"\"train\": {\"batch_size\": 0}", "train.batch_size: ", "positive integer"},
        {"\"train\": {\"loraplus_ratio\": 0}", "train.loraplus_ratio: ", "positive"},
        {"\"train\": {\"seed\": -1}", "train.seed: ", "0 or more"},
        {"\"train\": {\"position_bias_lr_ratio\": 0}", "train.position_bias_lr_ratio: ", "positive"},
        {"\"train\": {\"position_bias_lr_ratio\": 100}", "train.position_bias_lr_ratio: ", "method \"full\""},
        {"\"train\": {\"denoise_fraction\": 1.5}", "train.denoise_fraction: ", "between 0 and 1"},
        {"\"train\": {\"denoise_fraction\": 0.5}", "train.denoise_fraction: ", "span_corruption"},
        {"\"eval\": {\"split\": \"dev\"}", "eval.split: ", "allowed: validation, test, train"},
        {"\"eval\": {\"beams\": 0}", "eval.beams: ", "between 1"},
        {"\"eval\": {\"stemmer\": \"yes\"}", "eval.stemmer: ", "true or false"},
        {"\"threads\": -1", "threads: ", "0 (all cores)"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\", \"split_ratio\": 1.5}", "dataset.split_ratio: ", "between 0 and 1"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\", \"template\": \"Summarize:\"}", "dataset.template: ", "{source}"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\", \"template\": \"S: {source}\", \"prefix\": \"x\"}", "dataset.template: ", "not both"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\", \"max_source_tokens\": 0}", "dataset.max_source_tokens: ", "positive"},
        {"\"name\": \"\"", "name: ", "1 to 200 printable characters"},
        {"\"name\": 3", "name: ", "expected a string, got the number 3"},
        {"!\"dataset\": {\"path\": \"d\"}", "base_model: ", "missing; give the folder of a Hugging Face T5 model"},
        {"!\"base_model\": \"m\"", "dataset.path: ", "missing"},
        {"!\"base_model\": \"m\", \"dataset\": {}", "dataset.path: ", "missing"},
        {"\"grid\": {\"lora.rank\": [1]}", "grid.lora.rank: ", "unknown field 'lora.rank'"},
        {"\"grid\": {\"lora\": [1]}", "grid.lora: ", "unknown field"},
        {"\"grid\": {\"lora.r\": 8}", "grid.lora.r: ", "non-empty list"},
        {"\"grid\": {\"lora.r\": []}", "grid.lora.r: ", "non-empty list"},
        {"\"grid\": {\"name\": [\"a\"]}", "grid.name: ", "cannot be varied"},
        {"\"grid\": {\"lora.r\": [4, 0, 8]}", "grid.lora.r[1]: ", "must be a positive integer (e.g. 4, 8, 16); got 0"},
        {"\"grid\": {\"lora.targets\": [[\"q\"], [\"q\", \"x\"]]}", "grid.lora.targets[1][1]: ", "unknown target module 'x'"},
        {"\"grid\": {\"train.lr\": [0.001, -1]}", "grid.train.lr[1]: ", "positive number"},
        {"\"grid\": [1]", "grid: ", "expected an object of dotted field paths"},
        // Numbers beyond a double (JSON's 1e999 reads as infinity) and out of the field's range.
        {"\"lora\": {\"alpha\": 1e999}", "lora.alpha: ", "does not fit a double (it reads as inf)"},
        {"\"lora\": {\"alpha\": -1e999}", "lora.alpha: ", "it reads as -inf"},
        {"\"lora\": {\"alpha\": 2e6}", "lora.alpha: ", "up to 1e+06"},
        {"\"lora\": {\"alpha_pattern\": {\"v\": 1e999}}", "lora.alpha_pattern.v: ", "does not fit a double"},
        {"\"lora\": {\"rank_pattern\": {\"q\": 1e999}}", "lora.rank_pattern.q: ", "does not fit a double"},
        {"\"lora\": {\"dropout\": -1e999}", "lora.dropout: ", "does not fit a double"},
        {"\"train\": {\"weight_decay\": 1e999}", "train.weight_decay: ", "does not fit a double"},
        {"\"train\": {\"weight_decay\": -1}", "train.weight_decay: ", "must be 0 to 1e+06"},
        {"\"train\": {\"weight_decay\": 1e300}", "train.weight_decay: ", "must be 0 to 1e+06"},
        {"\"train\": {\"max_grad_norm\": 1e999}", "train.max_grad_norm: ", "does not fit a double"},
        {"\"train\": {\"max_grad_norm\": 1e300}", "train.max_grad_norm: ", "to 1e+06"},
        {"\"train\": {\"max_grad_norm\": -1}", "train.max_grad_norm: ", "to 1e+06"},
        {"\"train\": {\"lr\": 1e999}", "train.lr: ", "does not fit a double"},
        {"\"train\": {\"warmup\": 3e9}", "train.warmup: ", "whole number of steps up to 2147483647"},
        {"\"train\": {\"warmup\": 1e999}", "train.warmup: ", "does not fit a double"},
        {"\"train\": {\"epochs\": 3e9}", "train.epochs: ", "out of range"},
        {"\"train\": {\"batch_size\": -1e999}", "train.batch_size: ", "out of range"},
        {"\"train\": {\"seed\": 1e999}", "train.seed: ", "out of range"},
        {"\"train\": {\"loraplus_ratio\": 1e300}", "train.loraplus_ratio: ", "up to 1e+06"},
        {"\"train\": {\"position_bias_lr_ratio\": 1e300}", "train.position_bias_lr_ratio: ", "up to 1e+06"},
        {"\"eval\": {\"length_penalty\": 1e300}", "eval.length_penalty: ", "must be -100 to 100"},
        {"\"grid\": {\"lora.alpha\": [16, 1e999]}", "grid.lora.alpha[1]: ", "does not fit a double"},
        // Text that is not UTF-8 (a Latin-1 byte, a cut sequence) is refused, naming the field.
        {"\"name\": \"caf\xe9\"", "name: ", "byte 3 is not valid UTF-8"},
        {"!\"base_model\": \"m\xc3\", \"dataset\": {\"path\": \"d\"}", "base_model: ", "not valid UTF-8"},
        {"!\"base_model\": \"m\", \"dataset\": {\"path\": \"d\xff\"}", "dataset.path: ", "not valid UTF-8"},
        {"\"lora\": {\"rank_pattern\": {\"q\xff\": 4}}", "lora.rank_pattern: ", "not valid UTF-8"},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        char json[1024];
        if (cases[i].json[0] == '!') snprintf(json, sizeof json, "{%s}", cases[i].json + 1);
        else snprintf(json, sizeof json, "{" MIN_SPEC ", %s}", cases[i].json);
        spec_t s;
        lb_err_t err = {0};
        int rc = spec_parse(json, NULL, &s, &err);
        EXPECTF(rc == -1 && err.code == LB_EARG, "%s: accepted", json);
        EXPECTF(!strncmp(err.msg, cases[i].path, strlen(cases[i].path)),
                "%s: message should start with '%s': %s", json, cases[i].path, err.msg);
        EXPECTF(strstr(err.msg, cases[i].want), "%s: message should contain '%s': %s", json,
                cases[i].want, err.msg);
        // One sentence: no line breaks, no second "path:" glued on.
        EXPECTF(!strchr(err.msg, '\n'), "%s", err.msg);
        EXPECT(s.name == NULL && s.base_model == NULL);  // *out zeroed on failure
        if (rc == 0) spec_free(&s);
    }
    // The origin names the file in front of the field path; JSON syntax gets line and column.
    spec_t s;
    lb_err_t err = {0};
    EXPECT(spec_parse("{" MIN_SPEC ", \"lora\": {\"r\": 0}}", "specs/a.json", &s, &err) == -1);
    EXPECTF(!strncmp(err.msg, "specs/a.json: lora.r: ", 22), "%s", err.msg);
    EXPECT(spec_parse("{\n  \"base_model\": \"m\",\n  \"lora\": {\"r\": 8,}\n}", "b.json", &s,
                      &err) == -1);
    EXPECTF(err.code == LB_EFORMAT && strstr(err.msg, "b.json: invalid JSON at line 3"), "%s",
            err.msg);
    EXPECT(spec_parse("[1, 2]", NULL, &s, &err) == -1 && strstr(err.msg, "JSON object") &&
           strstr(err.msg, "a list"));
    EXPECT(spec_parse("{" MIN_SPEC "} trailing", NULL, &s, &err) == -1 &&
           strstr(err.msg, "invalid JSON"));
    // null means the default; keys starting with '_' are comments anywhere.
    EXPECTF(spec_parse("{" MIN_SPEC ", \"lora\": {\"r\": null, \"_why\": \"x\"}, \"_note\": 1}",
                       NULL, &s, &err) == 0, "%s", err.msg);
    EXPECT(s.lora.r == 8);
    spec_free(&s);
}

static void test_problems_list(void) {
    spec_t s;
    spec_init_defaults(&s);
    s.lora.r = 0;
    s.train.lr = -1;
    spec_problem_t p[8];
    int n = spec_problems(&s, p, 8);
    EXPECTF(n == 4, "%d problems", n);
    if (n == 4) {
        EXPECT(!strcmp(p[0].path, "base_model") && !strcmp(p[1].path, "dataset.path"));
        EXPECT(!strcmp(p[2].path, "lora.r") && !strcmp(p[3].path, "train.lr"));
        EXPECT(!strncmp(p[3].msg, "train.lr: must be a positive number", 35));
    }
    EXPECT(spec_problems(&s, NULL, 0) == 4);
    EXPECT(spec_problems(&s, p, 1) == 4);  // counts all, writes one
    lb_err_t err = {0};
    EXPECT(spec_check(&s, &err) == -1 && !strncmp(err.msg, "base_model: missing", 19));
    s.base_model = strdup("m");
    s.dataset.path = strdup("d");
    s.lora.r = 4;
    s.train.lr = 3e-4;
    EXPECT(spec_problems(&s, p, 8) == 0 && spec_check(&s, &err) == 0);
    // A method that does not train may have no steps; an unused section is still checked.
    s.method = SPEC_METHOD_NONE;
    s.train.epochs = 0;
    s.lora.targets = 0;
    EXPECT(spec_problems(&s, p, 8) == 0);
    s.method = SPEC_METHOD_LORA;
    EXPECT(spec_problems(&s, p, 8) == 2 && !strcmp(p[0].path, "lora.targets") &&
           !strcmp(p[1].path, "train.max_steps"));
    spec_free(&s);
}

static void test_canonical_round_trip(void) {
    const char *specs[] = {
        arch_example,
        "{" MIN_SPEC ", \"name\": \"x\", \"method\": \"partial\", \"partial\": {\"top_blocks\": 0, "
        "\"stack\": \"decoder\", \"norms_only\": true}, \"train\": {\"warmup\": 10, \"seed\": "
        "9007199254740991, \"lr\": 3e-05, \"schedule\": \"cosine\"}}",
        "{\"base_model\": \"m\", \"lora\": {\"r\": 16, \"alpha\": 8.5, \"targets\": [\"lm_head\", \"q\", "
        "\"wi_1\"], \"stacks\": [\"decoder\"], \"attention\": [\"cross\"], \"layers\": [5, 0, 3], "
        "\"rslora\": true, \"init\": \"pissa\", \"rank_pattern\": {\"decoder.block.0.layer.0."
        "SelfAttention.q\": 4}, \"alpha_pattern\": {\"q\": 2.5}}, \"dataset\": {\"path\": \"d\", "
        "\"template\": \"Summarize:\\n{source}\\n\\\"Summary\\\": \"}, \"eval\": {\"split\": "
        "\"test\", \"length_penalty\": -0.5, \"stemmer\": false}}",
        "{" MIN_SPEC ", \"name\": \"sw\", \"grid\": {\"lora.r\": [2, 4], \"train.lr\": [0.001]}}",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        spec_t a, b;
        lb_err_t err = {0};
        EXPECTF(spec_parse(specs[i], NULL, &a, &err) == 0, "%zu: %s", i, err.msg);
        char *j1 = spec_to_json(&a, 0);
        EXPECTF(spec_parse(j1, NULL, &b, &err) == 0, "%s", err.msg);
        char *j2 = spec_to_json(&b, 0);
        EXPECTF(!strcmp(j1, j2), "\n%s\n%s", j1, j2);
        char *pretty = spec_to_json(&b, 1);
        spec_t c;
        EXPECT(spec_parse(pretty, NULL, &c, &err) == 0);
        char *j3 = spec_to_json(&c, 0);
        EXPECT(!strcmp(j1, j3) && strchr(pretty, '\n') && !strchr(j1, '\n'));
        // Stable key order.
        const char *order[] = {"\"name\":", "\"base_model\":", "\"dataset\":", "\"method\":",
                               "\"lora\":", "\"partial\":", "\"train\":", "\"eval\":", "\"threads\":"};
        const char *prev = j1;
        for (int k = 0; k < 9; k++) {
            const char *at = strstr(j1, order[k]);
            EXPECTF(at && at >= prev, "%s out of order in %s", order[k], j1);
            if (at) prev = at;
        }
        EXPECT(a.lora.r == b.lora.r && a.lora.targets == b.lora.targets &&
               a.lora.n_layers == b.lora.n_layers && a.train.seed == b.train.seed &&
               a.train.lr == b.train.lr && a.eval.length_penalty == b.eval.length_penalty);
        if (i == 1) {
            EXPECT(b.train.seed == 9007199254740991LL && b.train.warmup == 10 &&
                   b.partial.norms_only && b.partial.stack == SPEC_PART_DECODER);
            EXPECTF(strstr(j1, "\"lr\":3e-05"), "%s", j1);
        }
        if (i == 2) {
            EXPECT(b.lora.n_layers == 3 && b.lora.layers[0] == 5 && b.lora.layers[2] == 3);
            EXPECT(b.lora.targets == (SPEC_T_Q | SPEC_T_WI_1 | SPEC_T_LM_HEAD));
            EXPECT(b.lora.n_rank_pattern == 1 && b.lora.rank_pattern[0].value == 4 &&
                   !strcmp(b.lora.rank_pattern[0].key, "decoder.block.0.layer.0.SelfAttention.q"));
            EXPECT(b.lora.n_alpha_pattern == 1 && b.lora.alpha_pattern[0].value == 2.5);
            EXPECT(!strcmp(b.dataset.template_text, "Summarize:\n{source}\n\"Summary\": "));
            // Sets are written in the fixed module order, whatever order they came in.
            EXPECTF(strstr(j1, "\"targets\":[\"q\",\"wi_1\",\"lm_head\"]"), "%s", j1);
            EXPECT(strstr(j1, "\"layers\":[5,0,3]") && strstr(j1, "\"init\":\"pissa\""));
        }
        if (i == 3) {
            EXPECT(a.grid_json && strstr(j1, "\"grid\":{\"lora.r\":[2,4],\"train.lr\":[0.001]}"));
            EXPECT(strstr(j1, "\"grid\"") > strstr(j1, "\"threads\""));
        }
        if (i == 0) {
            EXPECTF(!strcmp(j1,
                "{\"name\":\"lora-r8-qv\",\"base_model\":\"experiments/models/t5-tiny\","
                "\"dataset\":{\"path\":\"experiments/data/debsum\",\"source\":\"description\","
                "\"target\":\"synopsis\",\"prefix\":\"summarize: \",\"template\":\"\","
                "\"split_ratio\":0.9,\"max_source_tokens\":256,\"max_target_tokens\":48,"
                "\"limit\":0},\"method\":\"lora\",\"lora\":{\"r\":8,\"alpha\":16,"
                "\"dropout\":0.05,\"targets\":[\"q\",\"v\"],\"stacks\":[\"encoder\",\"decoder\"],"
                "\"attention\":[\"self\",\"cross\"],\"layers\":\"all\",\"rslora\":false,"
                "\"init\":\"kaiming\",\"rank_pattern\":{},\"alpha_pattern\":{}},"
                "\"partial\":{\"top_blocks\":2,\"stack\":\"both\",\"norms_only\":false},"
                "\"train\":{\"epochs\":1,\"max_steps\":0,\"batch_size\":8,\"grad_accum\":1,"
                "\"lr\":0.001,\"weight_decay\":0,\"warmup\":0.06,\"schedule\":\"linear\","
                "\"max_grad_norm\":1,\"seed\":42,\"eval_every\":0,\"checkpoint_every\":100,"
                "\"loraplus_ratio\":1,\"position_bias_lr_ratio\":1,\"objective\":\"summarize\",\"denoise_fraction\":0,\"cache_encoder\":true,\"frozen_weights_bf16\":false,\"precision\":\"auto\"},\"eval\":{\"split\":\"validation\",\"limit\":200,"
                "\"beams\":1,\"max_new_tokens\":48,\"length_penalty\":1,"
                "\"no_repeat_ngram_size\":0,\"stemmer\":true},\"threads\":2}"),
                "%s", j1);
        }
        free(j1);
        free(j2);
        free(j3);
        free(pretty);
        spec_free(&a);
        spec_free(&b);
        spec_free(&c);
    }
}

static void test_set_and_copy(void) {
    spec_t s;
    lb_err_t err = {0};
    EXPECT(spec_parse("{" MIN_SPEC "}", NULL, &s, &err) == 0);
    EXPECTF(spec_set(&s, "lora.r", "16", &err) == 0, "%s", err.msg);
    EXPECT(s.lora.r == 16 && s.name_auto && !strcmp(s.name, "lora-r16-qv"));
    EXPECT(spec_set(&s, "lora.targets", "[\"q\",\"k\",\"v\",\"o\"]", &err) == 0);
    EXPECT(s.lora.targets == (SPEC_T_Q | SPEC_T_K | SPEC_T_V | SPEC_T_O) &&
           !strcmp(s.name, "lora-r16-qkvo"));
    EXPECT(spec_set(&s, "train.schedule", "cosine", &err) == 0 &&
           s.train.schedule == SPEC_SCHEDULE_COSINE);
    EXPECT(spec_set(&s, "name", "\"mine\"", &err) == 0 && !strcmp(s.name, "mine") && !s.name_auto);
    EXPECT(spec_set(&s, "lora.r", "32", &err) == 0 && !strcmp(s.name, "mine"));
    // Bad values and unknown paths leave the spec as it was.
    EXPECT(spec_set(&s, "lora.r", "0", &err) == -1 && s.lora.r == 32);
    EXPECTF(!strncmp(err.msg, "lora.r: must be a positive integer", 34), "%s", err.msg);
    EXPECT(spec_set(&s, "train.lr", "-1e-4", &err) == -1 && s.train.lr == 1e-3 &&
           strstr(err.msg, "train.lr"));
    EXPECT(spec_set(&s, "lora.rank", "8", &err) == -1 && strstr(err.msg, "lora.rank: unknown field"));
    EXPECT(spec_set(&s, "lora", "{}", &err) == -1);
    EXPECT(spec_set(&s, "method", "qlora", &err) == -1 && strstr(err.msg, "unknown method 'qlora'"));
    // A deep copy outlives its original.
    spec_t c;
    EXPECT(spec_set(&s, "lora.layers", "[1, 2]", &err) == 0);
    spec_copy(&c, &s);
    spec_free(&s);
    EXPECT(!strcmp(c.name, "mine") && c.lora.n_layers == 2 && c.lora.layers[1] == 2 &&
           !strcmp(c.base_model, "m"));
    char *j = spec_to_json(&c, 0);
    EXPECT(strstr(j, "\"layers\":[1,2]") != NULL);
    free(j);
    spec_free(&c);
}

static void test_grid_expansion(void) {
    spec_t s;
    lb_err_t err = {0};
    EXPECTF(spec_parse("{" MIN_SPEC ", \"name\": \"rank\", \"train\": {\"lr\": 0.002}, "
                       "\"grid\": {\"lora.r\": [4, 8], "
                       "\"lora.targets\": [[\"q\", \"v\"], [\"q\", \"k\", \"v\", \"o\"]]}}",
                       NULL, &s, &err) == 0, "%s", err.msg);
    spec_t *pts = NULL;
    size_t n = 0;
    EXPECTF(spec_expand_grid(&s, &pts, &n, &err) == 0, "%s", err.msg);
    EXPECT(n == 4);
    const char *names[4] = {"rank-r4-qv", "rank-r4-qkvo", "rank-r8-qv", "rank-r8-qkvo"};
    int ranks[4] = {4, 4, 8, 8};
    unsigned tg[4] = {SPEC_T_Q | SPEC_T_V, SPEC_T_Q | SPEC_T_K | SPEC_T_V | SPEC_T_O,
                      SPEC_T_Q | SPEC_T_V, SPEC_T_Q | SPEC_T_K | SPEC_T_V | SPEC_T_O};
    for (size_t i = 0; i < n && n == 4; i++) {
        EXPECTF(!strcmp(pts[i].name, names[i]), "%s", pts[i].name);
        EXPECT(pts[i].lora.r == ranks[i] && pts[i].lora.targets == tg[i]);
        EXPECT(pts[i].train.lr == 0.002 && pts[i].grid_json == NULL && !pts[i].name_auto);
        char *j = spec_to_json(&pts[i], 0);
        EXPECT(!strstr(j, "grid"));
        free(j);
    }
    spec_list_free(pts, n);
    spec_free(&s);

    // No name: points are named after the method and their values; numbers, booleans,
    // strings and lists all label.
    EXPECT(spec_parse("{" MIN_SPEC ", \"grid\": {\"train.lr\": [0.001, 0.0001], "
                      "\"lora.rslora\": [true, false], \"train.schedule\": [\"cosine\"], "
                      "\"lora.layers\": [[0, 1]]}}",
                      NULL, &s, &err) == 0);
    EXPECT(spec_expand_grid(&s, &pts, &n, &err) == 0 && n == 4);
    if (n == 4) {
        EXPECTF(!strcmp(pts[0].name, "lora-lr0.001-rslora-cosine-layers0_1"), "%s", pts[0].name);
        EXPECTF(!strcmp(pts[3].name, "lora-lr0.0001-no-rslora-cosine-layers0_1"), "%s",
                pts[3].name);
        EXPECT(pts[3].train.lr == 0.0001 && !pts[3].lora.rslora && pts[0].lora.rslora &&
               pts[2].train.schedule == SPEC_SCHEDULE_COSINE && pts[1].lora.n_layers == 2);
    }
    spec_list_free(pts, n);
    spec_free(&s);

    // Methods in a grid: full and zero-shot runs beside LoRA.
    EXPECT(spec_parse("{" MIN_SPEC ", \"name\": \"cmp\", \"grid\": {\"method\": "
                      "[\"none\", \"lora\", \"full\"]}}", NULL, &s, &err) == 0);
    EXPECT(spec_expand_grid(&s, &pts, &n, &err) == 0 && n == 3);
    if (n == 3)
        EXPECTF(!strcmp(pts[0].name, "cmp-zero-shot") && pts[2].method == SPEC_METHOD_FULL, "%s", pts[0].name);
    spec_list_free(pts, n);
    spec_free(&s);

    // Without a grid: one copy.
    EXPECT(spec_parse("{" MIN_SPEC ", \"name\": \"solo\"}", NULL, &s, &err) == 0);
    EXPECT(spec_expand_grid(&s, &pts, &n, &err) == 0 && n == 1 && !strcmp(pts[0].name, "solo"));
    spec_list_free(pts, n);
    spec_free(&s);

    // A combination that only fails together is reported with the point's name.
    EXPECTF(spec_parse("{" MIN_SPEC ", \"name\": \"g\", \"method\": \"none\", \"grid\": "
                       "{\"method\": [\"none\", \"lora\"], \"train.epochs\": [0, 1]}}",
                       NULL, &s, &err) == 0, "%s", err.msg);
    EXPECT(spec_expand_grid(&s, &pts, &n, &err) == -1 && pts == NULL && n == 0);
    EXPECTF(strstr(err.msg, "grid point 'g-lora-epochs0'") && strstr(err.msg, "train.max_steps"),
            "%s", err.msg);
    spec_free(&s);
}

static int rm_entry(const char *p, const struct stat *sb, int t, struct FTW *f) {
    (void)sb, (void)t, (void)f;
    return remove(p);
}

static void test_paths(void) {
    char root[] = "/tmp/lb_test_spec_XXXXXX";
    if (!mkdtemp(root)) return;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "%s/specs", root);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/models", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/models/t5", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train.jsonl", dir);
    FILE *f = fopen(p, "w");
    fputs("{}\n", f);
    fclose(f);
    char cwd[PATH_MAX];
    EXPECT(getcwd(cwd, sizeof cwd) != NULL);

    // base_model beside the spec; dataset.path relative to the current folder (tests/).
    char spec_path[512];
    snprintf(spec_path, sizeof spec_path, "%s/a.json", dir);
    f = fopen(spec_path, "w");
    fputs("{\"base_model\": \"models/t5\", \"dataset\": {\"path\": \"tests\"}}", f);
    fclose(f);
    spec_t s;
    lb_err_t err = {0};
    EXPECTF(spec_load_file(spec_path, &s, &err) == 0, "%s", err.msg);
    char want[PATH_MAX + 1024];
    snprintf(want, sizeof want, "%s/models/t5", dir);
    EXPECTF(s.base_model && !strcmp(s.base_model, want), "%s", s.base_model);
    snprintf(want, sizeof want, "%s/tests", cwd);
    EXPECTF(s.dataset.path && !strcmp(s.dataset.path, want), "%s", s.dataset.path);
    spec_free(&s);

    // The spec's folder wins over the current folder when both have the path.
    snprintf(p, sizeof p, "%s/tests", dir);
    mkdir(p, 0755);
    EXPECT(spec_load_file(spec_path, &s, &err) == 0);
    EXPECT(s.dataset.path && !strcmp(s.dataset.path, p));
    spec_free(&s);

    // Missing: the field, the path and both places looked in.
    f = fopen(spec_path, "w");
    fputs("{\"base_model\": \"models/t5-nope\", \"dataset\": {\"path\": \"train.jsonl\"}}", f);
    fclose(f);
    EXPECT(spec_load_file(spec_path, &s, &err) == -1 && s.base_model == NULL);
    snprintf(want, sizeof want, "%s: base_model: 'models/t5-nope' not found, neither as '%s/models/t5-nope'",
             spec_path, dir);
    EXPECTF(strstr(err.msg, want) && strstr(err.msg, "current folder"), "%s", err.msg);
    // Absolute paths are taken as they are.
    char *out = NULL;
    snprintf(p, sizeof p, "%s/train.jsonl", dir);
    EXPECT(spec_resolve_path("/nonexistent", p, &out, &err) == 0 && out && !strcmp(out, p));
    free(out);
    EXPECT(spec_resolve_path(NULL, "/nonexistent/x", &out, &err) == -1 &&
           strstr(err.msg, "'/nonexistent/x' does not exist"));
    EXPECT(spec_resolve_path(NULL, "Makefile", &out, &err) == 0 && out && out[0] == '/');
    free(out);
    // A spec file that is not there, or not valid.
    EXPECT(spec_load_file("/nonexistent/spec.json", &s, &err) == -1 &&
           strstr(err.msg, "/nonexistent/spec.json"));
    f = fopen(spec_path, "w");
    fputs("{\"base_model\": \"models/t5\", \"dataset\": {\"path\": \"train.jsonl\"}, \"lora\": {\"r\": 0}}", f);
    fclose(f);
    EXPECT(spec_load_file(spec_path, &s, &err) == -1);
    snprintf(want, sizeof want, "%s: lora.r: must be a positive integer", spec_path);
    EXPECTF(strstr(err.msg, want), "%s", err.msg);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_helpers(void) {
    char buf[128];
    spec_targets_string(SPEC_T_Q | SPEC_T_V, buf, sizeof buf);
    EXPECT(!strcmp(buf, "q,v"));
    spec_targets_string(SPEC_T_WI_0 | SPEC_T_WI_1 | SPEC_T_WO | SPEC_T_LM_HEAD | SPEC_T_K, buf,
                        sizeof buf);
    EXPECT(!strcmp(buf, "k,wi_0,wi_1,wo,lm_head"));
    spec_targets_string(0, buf, sizeof buf);
    EXPECT(!strcmp(buf, ""));
    spec_t s;
    spec_init_defaults(&s);
    EXPECT(spec_warmup_steps(&s, 100) == 6);
    EXPECT(spec_warmup_steps(&s, 30) == 2);  // 1.8 rounds up
    EXPECT(spec_warmup_steps(&s, 0) == 0);
    s.train.warmup = 10;
    EXPECT(spec_warmup_steps(&s, 100) == 10);
    spec_free(&s);
    EXPECT(!strcmp(spec_method_name(SPEC_METHOD_PARTIAL), "partial") &&
           !strcmp(spec_init_name(SPEC_INIT_PISSA), "pissa") &&
           !strcmp(spec_schedule_name(SPEC_SCHEDULE_CONSTANT), "constant") &&
           !strcmp(spec_split_name(SPEC_SPLIT_TEST), "test") &&
           !strcmp(spec_part_stack_name(SPEC_PART_ENCODER), "encoder") &&
           !strcmp(spec_target_name(8), "lm_head") && !strcmp(spec_target_name(9), "?"));
}

// "a+b" grid keys vary fields together: targets with the rank that keeps the budget.
static void test_grid_zipped(void) {
    spec_t s, *pts = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    const char *j = "{\"name\":\"tm\",\"base_model\":\"m\",\"dataset\":{\"path\":\"d\"},"
                    "\"grid\":{\"lora.targets+lora.r\":[[[\"q\"],8],[[\"q\",\"v\"],4]],\"train.lr\":[0.001,0.002]}}";
    EXPECTF(spec_parse(j, "zip", &s, &err) == 0, "%s", err.msg);
    EXPECTF(spec_expand_grid(&s, &pts, &n, &err) == 0, "%s", err.msg);
    EXPECT(n == 4);
    if (n == 4) {
        EXPECTF(!strcmp(pts[0].name, "tm-q-r8-lr0.001"), "%s", pts[0].name);
        EXPECT(pts[0].lora.r == 8 && pts[0].lora.targets == SPEC_T_Q);
        EXPECT(pts[3].lora.r == 4 && pts[3].lora.targets == (SPEC_T_Q | SPEC_T_V) && pts[3].train.lr == 0.002);
    }
    spec_list_free(pts, n);
    spec_free(&s);
    const char *bad = "{\"base_model\":\"m\",\"dataset\":{\"path\":\"d\"},"
                      "\"grid\":{\"lora.targets+lora.r\":[[[\"q\"]]]}}";
    EXPECT(spec_parse(bad, "zip", &s, &err) != 0 && strstr(err.msg, "grid.lora.targets+lora.r[0]") &&
           strstr(err.msg, "2 values"));
    const char *bad2 = "{\"base_model\":\"m\",\"dataset\":{\"path\":\"d\"},\"grid\":{\"lora.r+lora.rank\":[[1,2]]}}";
    EXPECT(spec_parse(bad2, "zip", &s, &err) != 0 && strstr(err.msg, "'lora.rank'"));
}

// Grid names say only what differs for the point's method: zero-shot trains nothing, so a
// learning rate or rank in its name would suggest a difference that is not there (issue:
// "quick-demo-none-lr0.003"); a full fine-tune has no rank.
static void test_grid_names_by_method(void) {
    spec_t s, *pts = NULL;
    size_t n = 0;
    lb_err_t err = {0};
    const char *j = "{\"name\":\"demo\",\"base_model\":\"m\",\"dataset\":{\"path\":\"d\"},"
                    "\"grid\":{\"method+train.lr\":[[\"none\",0.003],[\"lora\",0.003],[\"full\",0.001]],"
                    "\"lora.r\":[8]}}";
    EXPECTF(spec_parse(j, NULL, &s, &err) == 0, "%s", err.msg);
    EXPECTF(spec_expand_grid(&s, &pts, &n, &err) == 0 && n == 3, "%s", err.msg);
    const char *want[3] = {"demo-zero-shot", "demo-lora-lr0.003-r8", "demo-full-lr0.001"};
    for (size_t i = 0; i < n && n == 3; i++) EXPECTF(!strcmp(pts[i].name, want[i]), "%s, want %s", pts[i].name, want[i]);
    spec_list_free(pts, n);
    spec_free(&s);
    // no name: the method is the name, a zero-shot point is "zero-shot"
    j = "{\"base_model\":\"m\",\"dataset\":{\"path\":\"d\"},\"grid\":{\"method\":[\"none\",\"lora\"],\"lora.r\":[4]}}";
    EXPECTF(spec_parse(j, NULL, &s, &err) == 0, "%s", err.msg);
    EXPECTF(spec_expand_grid(&s, &pts, &n, &err) == 0 && n == 2, "%s", err.msg);
    if (n == 2) {
        EXPECTF(!strcmp(pts[0].name, "zero-shot"), "%s", pts[0].name);
        EXPECTF(!strcmp(pts[1].name, "lora-r4"), "%s", pts[1].name);
    }
    spec_list_free(pts, n);
    spec_free(&s);
}

// Every bundled preset loads, passes the checks, and its grid expands into valid runs.
static void test_bundled_presets_valid(void) {
    static const char *names[] = {"quick-demo", "lora-vs-full", "rank-sweep", "target-modules", "speed",
                                  "classroom-rank-sweep", "classroom-target-modules", "classroom-lora-vs-full"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "experiments/presets/%s.json", names[i]);
        spec_t s;
        lb_err_t err = {0};
        int rc = spec_load_file(path, &s, &err);
        EXPECTF(rc == 0, "%s: %s", path, err.msg);
        if (rc) continue;
        EXPECTF(spec_check(&s, &err) == 0, "%s: %s", path, err.msg);
        spec_t *pts = NULL;
        size_t n = 0;
        if (s.grid_json) {
            rc = spec_expand_grid(&s, &pts, &n, &err);
            EXPECTF(rc == 0 && n > 1, "%s: grid: %s", path, err.msg);
            for (size_t k = 0; !rc && k < n; k++) EXPECTF(spec_check(&pts[k], &err) == 0, "%s point %zu: %s", path, k + 1, err.msg);
            if (!rc) spec_list_free(pts, n);
        }
        spec_free(&s);
    }
}

int main(void) {
    RUN(test_defaults);
    RUN(test_bundled_presets_valid);
    RUN(test_architecture_example);
    RUN(test_bad_fields);
    RUN(test_problems_list);
    RUN(test_canonical_round_trip);
    RUN(test_set_and_copy);
    RUN(test_grid_expansion);
    RUN(test_grid_zipped);
    RUN(test_grid_names_by_method);
    RUN(test_paths);
    RUN(test_helpers);
    TH_DONE();
}
