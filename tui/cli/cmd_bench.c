// `lorabench bench`: speed and memory of one training (or forward-only) configuration on
// a FLAN-T5 shape with random weights, or on a real checkpoint, against the machine's own
// matrix-product rate measured in the same process. `--table` runs the standard four
// configurations, each in its own process so that peak RSS is per configuration.
#include <cJSON.h>
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cpu.h"
#include "gemm_bf16.h"
#include "linear.h"
#include "prof.h"
#include "lora.h"
#include "t5.h"
#include "t5_init.h"
#include "t5_save.h"
#include "train.h"

extern char **environ;

static void usage(FILE *f) {
    fprintf(f,
            "usage: lorabench bench [--shape flan-t5-small|flan-t5-base|DIR] [--method none|lora|full|partial]\n"
            "                       [--rank R] [--targets q,v|all|LIST] [--lora-dropout P] [--top-blocks K]\n"
            "                       [--stack both|encoder|decoder] [--batch B] [--src S] [--tgt T]\n"
            "                       [--steps N] [--warmup W] [--threads N] [--no-dropout]\n"
            "                       [--save DIR: write the random checkpoint of the shape and stop]\n"
            "                       [--cached-encoder] [--bf16-weights] [--precision auto|fp32|bf16] [--profile] [--json]\n"
            "       lorabench bench --table [--threads N] [--steps N] [--bf16-weights] [--precision P]\n"
            "       lorabench bench --generate ...: decoding speed (see bench --generate --help)\n\n"
            "Runs W warm-up steps (default 1) and N timed steps (default 3) of one configuration\n"
            "on random weights of the named shape (or the checkpoint in DIR) and prints:\n"
            "  s/step       median wall time of one step (forward, backward, AdamW)\n"
            "  tokens/s     B·(S+T) / (s/step)\n"
            "  GFLOP        matrix-product work of one step, counted by the engine as it runs:\n"
            "               2·M·N·K for every product of the forward (each linear and its LoRA\n"
            "               products, q·kᵀ and P·v over the full score matrices, the causal half\n"
            "               included because it is computed) and of the backward products that\n"
            "               actually run (no weight gradient for frozen weights, no input gradient\n"
            "               below the lowest trainable layer); norms, softmax, activations,\n"
            "               dropout and the optimizer are not counted\n"
            "  GFLOP/s      GFLOP / (s/step)\n"
            "  peak         the engine's product GFLOP/s on 2048×2048×2048 in this process, same threads,\n"
            "               on the run's path: fp32 (sgemm), or bf16 (a packed bf16 weight times bf16\n"
            "               input, fp32 out) (best of 3 before and 3 after the steps)\n"
            "  ratio        GFLOP/s / peak\n"
            "  RSS          peak resident memory of the process (before the peak measurement)\n"
            "  weights      what the parameter values take (fp32, or bf16 where held so)\n"
            "A bf16 run on an AMX CPU also prints the AMX ceiling: TDPBF16PS with the tiles resident\n"
            "on the same threads (no memory traffic), the most its products could approach.\n\n"
            "Defaults: flan-t5-small, lora r=8 on q,v, batch 8, source 256, target 64, 2 threads.\n"
            "--method none runs the forward only (no dropout); lora trains an adapter (alpha 2·R,\n"
            "lora_dropout P, default 0); full trains every parameter with AdamW; partial the top K blocks\n"
            "(--top-blocks, default 2) of --stack (default both) and the final norms.\n"
            "--cached-encoder (decoder-only training) computes the encoder output once and times\n"
            "steps on it, as the runner does from the second epoch. --bf16-weights holds every frozen\n"
            "linear weight (attention, feed forward, an untied frozen head) in bfloat16, half the\n"
            "memory, converted to fp32 block by block inside each product; the embedding, norms,\n"
            "relative biases, adapters and trainable weights stay fp32 (a DIR checkpoint in BF16 is\n"
            "used in place; random weights are drawn after the conversion, so they never exist in fp32).\n"
            "--precision: the matrix products of a run (train.precision): fp32, bf16 (frozen weights\n"
            "packed once in bf16, products with fp32 accumulation on AMX; a full fine-tune keeps fp32\n"
            "master weights and packs them after every step) or auto (bf16 where the CPU has AMX\n"
            "bf16, else fp32; the default, as for runs). --json names the precision and kernel used.\n"
            "--profile adds where a step's time went: the products of the linear layers (forward,\n"
            "backward), attention (scores, softmax, P·v and their backward), norms, activations,\n"
            "dropout and residual adds, cross-entropy, embedding, and the optimizer, then the share\n"
            "of the linear layers' time in LoRA's products and in the lm_head's (with --json, a\n"
            "second JSON line).\n"
            "--table prints forward / LoRA r=8 q,v / LoRA r=8 all linear / full\n"
            "for FLAN-T5-small, batch 8, source 256, target 64 (what `make bench` runs).\n");
}

static const char *SMALL_JSON =
    "{\"vocab_size\":32128,\"d_model\":512,\"d_kv\":64,\"d_ff\":1024,\"num_layers\":8,"
    "\"num_decoder_layers\":8,\"num_heads\":6,\"relative_attention_num_buckets\":32,"
    "\"relative_attention_max_distance\":128,\"feed_forward_proj\":\"gated-gelu\","
    "\"layer_norm_epsilon\":1e-6,\"tie_word_embeddings\":false,\"dropout_rate\":0.1,"
    "\"pad_token_id\":0,\"eos_token_id\":1,\"decoder_start_token_id\":0}";
static const char *BASE_JSON =
    "{\"vocab_size\":32128,\"d_model\":768,\"d_kv\":64,\"d_ff\":2048,\"num_layers\":12,"
    "\"num_decoder_layers\":12,\"num_heads\":12,\"relative_attention_num_buckets\":32,"
    "\"relative_attention_max_distance\":128,\"feed_forward_proj\":\"gated-gelu\","
    "\"layer_norm_epsilon\":1e-6,\"tie_word_embeddings\":false,\"dropout_rate\":0.1,"
    "\"pad_token_id\":0,\"eos_token_id\":1,\"decoder_start_token_id\":0}";

typedef struct {
    const char *shape, *method, *targets, *stack, *save;
    int rank, top_blocks, B, S, T, steps, warmup, threads, dropout, cached, json, bf16, profile;
    t5_precision_t precision;
    double lora_dropout;
} bench_opts_t;

typedef struct {
    double s_step, tok_s, gflop, gflops, peak, ratio;
    double amx_ceiling;  // a bf16 run on AMX: lb_cpu_amx_ceiling at its threads, else 0
    double rss_mb;
    double weight_mb, bf16_mb;  // parameter values, and the part held in bf16
    double fwd_gflop, bwd_gflop;
    size_t trainable;
    float loss;
    t5_precision_t precision;  // what the run used
    const char *kernel;        // the kernel path of its products
    double prof[PROF_N];       // --profile: seconds per timed step in each kind of work
    double s_mean;             // --profile: mean seconds per timed step (the profile's total)
} bench_res_t;

static int fail(const char *msg) {
    fprintf(stderr, "lorabench bench: %s\n", msg);
    return 1;
}

// The engine's fp32 product (lb_gemm: oneDNN or OpenBLAS, gemm_f32.h) in GFLOP/s on 2048³
// at the current thread count: best of three after one warm-up, as the machine's practical
// peak for the same kind of work.
static double sgemm_peak(void) {
    const int n = 2048;
    size_t nn = (size_t)n * n;
    float *A = xmalloc(nn * sizeof(float)), *Bm = xmalloc(nn * sizeof(float)), *C = xmalloc(nn * sizeof(float));
    for (size_t i = 0; i < nn; i++) {
        A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        Bm[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = lb_now();
        lb_gemm(0, 0, n, n, n, 1, A, n, Bm, n, 0, C, n);
        double dt = lb_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    free(A); free(Bm); free(C);
    return 2.0 * n * n * (double)n / best / 1e9;
}

// The engine's bf16 product of a packed weight (gemm_bf16.h; input already bf16, split over
// a pool as a bf16 run's layers run it) in GFLOP/s on 2048³ at the current thread count,
// best of three after one warm-up: the practical peak of a bf16 run's products. 0 when
// bf16 products cannot run here.
static double bf16_peak(void) {
    const int n = 2048;
    size_t nn = (size_t)n * n;
    float *W = xmalloc(nn * sizeof(float)), *y = xmalloc(nn * sizeof(float));
    uint16_t *x16 = xmalloc(nn * sizeof(uint16_t));
    for (size_t i = 0; i < nn; i++) {
        W[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        x16[i] = lb_f32_to_bf16((float)((i * 104729) % 1000) * 1e-3f - 0.5f);
    }
    lb_err_t err = {0};
    lb_bf16w_t *w = lb_bf16w_pack_f32(W, n, n, LB_BF16W_FWD, &err);
    lb_pool_t *pool = lb_pool_new();
    double best = 1e30;
    for (int r = 0; w && r < 4; r++) {
        double t0 = lb_now();
        if (lb_bf16w_forward_bf16(pool, w, n, x16, y, 0)) break;
        double dt = lb_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    lb_pool_free(pool);
    lb_bf16w_free(w);
    free(W); free(y); free(x16);
    return best < 1e30 ? 2.0 * n * n * (double)n / best / 1e9 : 0;
}

static int targets_parse(lora_config_t *lc, const char *spec, const t5_config_t *c) {
    lc->n_targets = 0;
    if (!strcmp(spec, "all")) {
        const char *g[] = {"q", "k", "v", "o", "wi_0", "wi_1", "wo"};
        const char *p[] = {"q", "k", "v", "o", "wi", "wo"};
        int n = c->gated ? 7 : 6;
        for (int i = 0; i < n; i++) snprintf(lc->targets[lc->n_targets++], sizeof lc->targets[0], "%s", c->gated ? g[i] : p[i]);
        return 0;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (lc->n_targets >= LORA_MAX_TARGETS) return -1;
        snprintf(lc->targets[lc->n_targets++], sizeof lc->targets[0], "%s", t);
    }
    return lc->n_targets ? 0 : -1;
}

// The checkpoint of a named shape with random weights, written by our writer (--save), for
// --shape DIR.
static int save_random(const char *shape, const char *dir) {
    lb_err_t err = {0};
    t5_config_t cfg;
    t5_model_t m;
    const char *js = !strcmp(shape, "flan-t5-small") ? SMALL_JSON : BASE_JSON;
    if (t5_config_parse(&cfg, js, shape, &err) || t5_init_empty(&m, &cfg, &err)) return fail(err.msg);
    t5_init_random(&m, 1);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    mkdir(dir, 0755);
    int bad = lb_write_file_atomic(p, js, strlen(js), &err) || t5_save(&m, dir, dir, &err);
    t5_free(&m);
    if (bad) return fail(err.msg);
    printf("wrote a random %s checkpoint to %s\n", shape, dir);
    return 0;
}

// The training step's feed: the same batch every step; with --cached-encoder the decoder
// runs on the encoder output computed once, as the runner's cache serves it after the
// first epoch.
typedef struct {
    t5_batch_t b;
    lb_real *enc;  // [B, S, D] or NULL
} bench_feed_t;

static int bench_next(void *ctx, uint64_t micro, t5_batch_t *b, lb_err_t *err) {
    (void)micro;
    (void)err;
    *b = ((const bench_feed_t *)ctx)->b;
    return 0;
}

static int bench_forward_cached(void *ctx, t5_model_t *m, t5_acts_t *a, const t5_batch_t *b, const lb_drop_t *drop,
                                float *loss, lb_err_t *err) {
    return t5_forward_with_encoder(m, a, b, ((const bench_feed_t *)ctx)->enc, drop, loss, err);
}

// The bench's options as the engine's method (train_params_setup, as a run does).
static int method_opts(const bench_opts_t *o, const t5_config_t *c, train_method_opts_t *mo) {
    train_method_t method = !strcmp(o->method, "lora")   ? TRAIN_METHOD_LORA
                            : !strcmp(o->method, "full") ? TRAIN_METHOD_FULL
                            : !strcmp(o->method, "partial") ? TRAIN_METHOD_PARTIAL
                                                            : TRAIN_METHOD_NONE;
    train_method_opts_default(mo, method);
    unsigned stacks = !strcmp(o->stack, "encoder")   ? T5_STACK_ENCODER
                      : !strcmp(o->stack, "decoder") ? T5_STACK_DECODER
                                                     : T5_STACK_ENCODER | T5_STACK_DECODER;
    mo->seed = 7;
    mo->lora.r = o->rank;
    mo->lora.alpha = 2.0 * o->rank;
    mo->lora.dropout = o->lora_dropout;
    mo->lora.stacks = stacks == (T5_STACK_ENCODER | T5_STACK_DECODER) ? 0 : (int)stacks;
    mo->partial.top_blocks = o->top_blocks;
    mo->partial.stacks = stacks;
    return method == TRAIN_METHOD_LORA ? targets_parse(&mo->lora, o->targets, c) : 0;
}

static int run_one(const bench_opts_t *o, bench_res_t *r) {
    lb_err_t err = {0};
    t5_model_t m;
    t5_config_t cfg;
    int rc = 1;
    train_params_t tp = {0};
    t5_acts_t *a = NULL;
    int32_t *ids = NULL;
    double *times = NULL;
    train_t tr;
    int have_tr = 0;
    bench_feed_t bf = {0};
    memset(r, 0, sizeof *r);
    lb_set_threads(o->threads);
    int draw_random = 0;  // weights drawn once trainable/bf16 storage is settled (below)
    if (!strcmp(o->shape, "flan-t5-small") || !strcmp(o->shape, "flan-t5-base")) {
        if (t5_config_parse(&cfg, !strcmp(o->shape, "flan-t5-small") ? SMALL_JSON : BASE_JSON, o->shape, &err) ||
            t5_init_empty(&m, &cfg, &err))
            return fail(err.msg);
        draw_random = 1;
    } else if (o->bf16 ? t5_load_bf16(&m, o->shape, &err) : t5_load(&m, o->shape, &err)) {
        return fail(err.msg);
    }
    const t5_config_t *c = &m.cfg;
    int method_none = !strcmp(o->method, "none");
    train_method_opts_t mo;
    if (method_opts(o, c, &mo)) {
        fail("--targets must be q,v, all, or a comma-separated list of module kinds");
        goto out;
    }
    if (train_params_setup(&tp, &m, &mo, &err)) {
        fail(err.msg);
        goto out;
    }
    r->trainable = tp.n;
    if (o->bf16 && t5_frozen_weights_bf16(&m, &err)) { fail(err.msg); goto out; }
    // Drawn now (the same values as drawn before t5_set_trainable: one stream per tensor),
    // into the block, fp32 copies or bf16 storage as each tensor is held: with
    // --bf16-weights the frozen weights never exist in fp32, as with a mapped checkpoint.
    if (draw_random) t5_init_random(&m, 1);
    if (t5_set_precision(&m, o->precision, &r->precision, &err)) { fail(err.msg); goto out; }
    r->kernel = t5_kernel_path(&m);
    size_t bf16_bytes, wbytes = t5_weight_bytes(&m, &bf16_bytes);
    r->weight_mb = (double)wbytes / (1024.0 * 1024.0);
    r->bf16_mb = (double)bf16_bytes / (1024.0 * 1024.0);
    a = t5_acts_new(&m, o->B, o->S, o->T);
    // a deterministic batch: ids spread over the vocabulary, no padding
    int B = o->B, S = o->S, T = o->T;
    ids = xmalloc(sizeof(int32_t) * (size_t)B * (2 * S + T));
    int32_t *mask = ids + (size_t)B * S, *lab = mask + (size_t)B * S;
    uint64_t st = 12345;
    for (int i = 0; i < B * S; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 3 + (int32_t)((st >> 33) % (uint64_t)(c->vocab_size - 3));
        mask[i] = 1;
    }
    for (int i = 0; i < B * T; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        lab[i] = 3 + (int32_t)((st >> 33) % (uint64_t)(c->vocab_size - 3));
    }
    bf.b = (t5_batch_t){B, S, T, ids, mask, lab};
    train_feed_t feed = {bench_next, NULL, &bf};
    train_opts_t to;
    train_opts_default(&to);
    to.dropout = o->dropout;
    to.max_grad_norm = 1.0f;
    if (!method_none) {
        train_init(&tr, &m, a, &tp, &to);
        have_tr = 1;
    }
    if (o->cached && (method_none || !t5_encoder_frozen(&m))) {
        fail("--cached-encoder needs training that leaves the encoder frozen (--stack decoder)");
        goto out;
    }
    if (o->cached) {  // what the runner keeps per example after the first epoch
        bf.enc = xmalloc(sizeof(lb_real) * (size_t)B * S * c->d_model);
        if (t5_forward_encoder(&m, a, &bf.b, bf.enc, &err)) { fail(err.msg); goto out; }
        feed.forward = bench_forward_cached;
    }
    // the peak of the run's own product path: fp32 sgemm, or the bf16 product of a packed weight
    double (*peak_of)(void) = t5_precision_is_bf16(r->precision) ? bf16_peak : sgemm_peak;
    double peak_pre = peak_of();
    int total = o->warmup + o->steps;
    times = xcalloc((size_t)total, sizeof(double));
    for (int s = 0; s < total; s++) {
        if (o->profile && s == o->warmup) {
            lb_prof_enable(1);
            lb_prof_reset();
        }
        double t0 = lb_now();
        train_result_t res;
        int e = method_none ? t5_forward(&m, a, &bf.b, NULL, &r->loss, &err) : train_step(&tr, &feed, &res, &err);
        if (e) { fail(err.msg); goto out; }
        if (!method_none) r->loss = res.loss;
        times[s] = lb_now() - t0;
    }
    lb_prof_enable(0);
    r->s_mean = 0;
    for (int s = o->warmup; s < total; s++) r->s_mean += times[s] / o->steps;
    for (int k = 0; k < PROF_N; k++) r->prof[k] = lb_prof_get((lb_prof_kind_t)k) / o->steps;
    r->fwd_gflop = t5_acts_flops(a, 0) / 1e9;
    r->bwd_gflop = method_none ? 0 : t5_acts_flops(a, 1) / 1e9;
    r->s_step = lb_median(times + o->warmup, (size_t)o->steps);
    r->rss_mb = (double)lb_peak_rss() / (1024.0 * 1024.0);
    r->tok_s = (double)B * (S + T) / r->s_step;
    r->gflop = r->fwd_gflop + r->bwd_gflop;
    r->gflops = r->gflop / r->s_step;
    // other load on a shared machine only lowers the rate: the better of the two
    // measurements (before and after the steps) is the machine's practical peak
    double peak_post = peak_of();
    r->peak = peak_pre > peak_post ? peak_pre : peak_post;
    r->ratio = r->peak > 0 ? r->gflops / r->peak : 0;  // 0: the peak could not be measured
    r->amx_ceiling = t5_precision_is_bf16(r->precision) ? lb_cpu_amx_ceiling(o->threads) : 0;
    rc = 0;
out:
    free(times);
    free(bf.enc);
    free(ids);
    if (have_tr) train_free(&tr);
    if (a) t5_acts_free(a);
    train_params_free(&tp);
    t5_free(&m);
    return rc;
}

static const char *label_of(const bench_opts_t *o, char *buf, size_t n) {
    if (!strcmp(o->method, "lora")) {
        snprintf(buf, n, "lora r=%d %s%s%s", o->rank, o->targets, strcmp(o->stack, "both") ? " " : "",
                 strcmp(o->stack, "both") ? o->stack : "");
        if (o->lora_dropout > 0) snprintf(buf + strlen(buf), n - strlen(buf), " dropout %g", o->lora_dropout);
    }
    else if (!strcmp(o->method, "partial")) snprintf(buf, n, "partial top %d %s", o->top_blocks, o->stack);
    else if (!strcmp(o->method, "none")) snprintf(buf, n, "forward");
    else snprintf(buf, n, "%s", o->method);
    if (o->cached) snprintf(buf + strlen(buf), n - strlen(buf), " (cached encoder)");
    return buf;
}

static void print_json(const bench_opts_t *o, const bench_res_t *r) {
    char lab[128];
    printf("{\"impl\":\"lorabench\",\"config\":\"%s\",\"shape\":\"%s\",\"method\":\"%s\",\"rank\":%d,"
           "\"lora_dropout\":%g,\"targets\":\"%s\",\"batch\":%d,\"src\":%d,\"tgt\":%d,\"threads\":%d,\"steps\":%d,"
           "\"s_per_step\":%.4f,\"tokens_per_s\":%.1f,\"gflop\":%.2f,\"fwd_gflop\":%.2f,"
           "\"bwd_gflop\":%.2f,\"gflops\":%.2f,\"peak_gflops\":%.2f,\"ratio\":%.3f,"
           "\"peak_rss_mb\":%.0f,\"frozen_weights\":\"%s\",\"weights_mb\":%.1f,\"bf16_weights_mb\":%.1f,"
           "\"trainable\":%zu,\"loss\":%.4f,\"precision\":\"%s\",\"kernel\":\"%s\"",
           label_of(o, lab, sizeof lab), o->shape, o->method, o->rank, o->lora_dropout, o->targets, o->B, o->S, o->T,
           o->threads, o->steps, r->s_step, r->tok_s, r->gflop, r->fwd_gflop, r->bwd_gflop, r->gflops,
           r->peak, r->ratio, r->rss_mb, o->bf16 ? "bf16" : "fp32", r->weight_mb, r->bf16_mb, r->trainable,
           (double)r->loss, t5_precision_name(r->precision), r->kernel);
    if (r->amx_ceiling > 0) printf(",\"amx_ceiling_gflops\":%.0f", r->amx_ceiling);
    else printf(",\"amx_ceiling_gflops\":null");
    printf("}\n");
    if (o->profile) {  // one more line: where the time of a step went
        printf("{\"profile_s_per_step\":%.6f", r->s_mean);
        double sum = 0;
        for (int k = 0; k < PROF_N; k++) {
            printf(",\"%s\":%.6f", lb_prof_name((lb_prof_kind_t)k), r->prof[k]);
            if (k < PROF_N_STEP) sum += r->prof[k];
        }
        printf(",\"other\":%.6f}\n", r->s_mean - sum);
    }
}

// --profile: where the time of a step went, by kind of work (lb_prof kinds).
static void print_profile(const bench_res_t *r) {
    printf("where a step's %.3f s went (mean of the timed steps):\n", r->s_mean);
    double sum = 0;
    for (int k = 0; k < PROF_N_STEP; k++) {
        sum += r->prof[k];
        if (r->prof[k] > 0)
            printf("  %-18s %8.4f s %5.1f%%\n", lb_prof_name((lb_prof_kind_t)k), r->prof[k], 100 * r->prof[k] / r->s_mean);
    }
    printf("  %-18s %8.4f s %5.1f%%\n", "other", r->s_mean - sum, 100 * (r->s_mean - sum) / r->s_mean);
    // parts of the kinds above (LoRA's products and the head's, within linear fwd + bwd)
    for (int k = PROF_N_STEP; k < PROF_N; k++)
        if (r->prof[k] > 0)
            printf("  %-18s %8.4f s %5.1f%% (within linear fwd and bwd)\n", lb_prof_name((lb_prof_kind_t)k), r->prof[k],
                   100 * r->prof[k] / r->s_mean);
}

static void print_header(void) {
    printf("%-28s %8s %9s %8s %8s %8s %6s %8s\n", "configuration", "s/step", "tokens/s", "GFLOP",
           "GFLOP/s", "peak", "ratio", "RSS MB");
}

static void print_row(const char *label, const bench_res_t *r) {
    printf("%-28s %8.3f %9.0f %8.1f %8.1f %8.1f %6.2f %8.0f\n", label, r->s_step, r->tok_s, r->gflop,
           r->gflops, r->peak, r->ratio, r->rss_mb);
}

// Runs this program again with args + --json and reads its one JSON line into r.
static int run_child(char *const *args, bench_res_t *r) {
    int fd[2];
    if (pipe(fd)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    int e = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (e) {
        close(fd[0]);
        return -1;
    }
    char buf[4096];
    size_t len = 0;
    ssize_t k;
    while ((k = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)k;
    close(fd[0]);
    buf[len] = 0;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status)) return -1;
    cJSON *j = cJSON_Parse(buf);
    if (!j) return -1;
    memset(r, 0, sizeof *r);
#define GET(f, k) do { const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, k); if (cJSON_IsNumber(x)) r->f = x->valuedouble; } while (0)
    GET(s_step, "s_per_step"); GET(tok_s, "tokens_per_s"); GET(gflop, "gflop"); GET(gflops, "gflops");
    GET(peak, "peak_gflops"); GET(ratio, "ratio"); GET(rss_mb, "peak_rss_mb");
    GET(weight_mb, "weights_mb"); GET(bf16_mb, "bf16_weights_mb");
#undef GET
    cJSON_Delete(j);
    return 0;
}

static int run_table(const bench_opts_t *o) {
    static const struct { const char *label, *method, *targets; } rows[] = {
        {"forward", "none", "q,v"},
        {"lora r=8 q,v", "lora", "q,v"},
        {"lora r=8 all linear", "lora", "all"},
        {"full fine-tune (AdamW)", "full", "q,v"},
    };
    printf("FLAN-T5-small shape (random weights), batch 8, source 256, target 64, %s, precision %s, %d thread%s, median of %d steps\n",
           o->bf16 ? "frozen linear weights held in bf16" : "weights held in fp32", t5_precision_name(o->precision),
           o->threads, o->threads == 1 ? "" : "s", o->steps);
    print_header();
    int rc = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char th[16], steps[16];
        snprintf(th, sizeof th, "%d", o->threads);
        snprintf(steps, sizeof steps, "%d", o->steps);
        char *args[] = {"lorabench", "bench", "--shape", "flan-t5-small", "--method", (char *)rows[i].method,
                        "--rank", "8", "--targets", (char *)rows[i].targets, "--batch", "8", "--src", "256",
                        "--tgt", "64", "--steps", steps, "--threads", th, "--json", "--precision",
                        (char *)t5_precision_name(o->precision), o->bf16 ? "--bf16-weights" : NULL, NULL};
        bench_res_t r;
        fflush(stdout);
        if (run_child(args, &r)) {
            fprintf(stderr, "lorabench bench: the %s configuration failed; run it alone with --method %s to see why\n",
                    rows[i].label, rows[i].method);
            rc = 1;
            continue;
        }
        print_row(rows[i].label, &r);
        fflush(stdout);
    }
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts_t o = {"flan-t5-small", "lora", "q,v", "both", NULL, 8, 2, 8, 256, 64, 3, 1, 2, 1, 0, 0, 0, 0,
                      T5_PRECISION_AUTO, 0};
    int table = 0;
    for (int i = 1; i < argc; i++)  // decoding speed: its own options (cmd_bench_gen.c)
        if (!strcmp(argv[i], "--generate")) return bench_generate(argc, argv, SMALL_JSON, BASE_JSON);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--table")) {
            table = 1;
        } else if (!strcmp(a, "--no-dropout")) {
            o.dropout = 0;
        } else if (!strcmp(a, "--cached-encoder")) {
            o.cached = 1;
        } else if (!strcmp(a, "--bf16-weights")) {
            o.bf16 = 1;
        } else if (!strcmp(a, "--profile")) {
            o.profile = 1;
        } else if (!strcmp(a, "--lora-dropout")) {
            char *end = NULL;
            double x = v ? strtod(v, &end) : -1;
            if (!v || *end || end == v || !(x >= 0 && x < 1)) {
                fprintf(stderr, "lorabench bench: --lora-dropout expects a probability in [0, 1), not '%s'\n", v ? v : "");
                return 2;
            }
            o.lora_dropout = x;
            i++;
        } else if (!strcmp(a, "--shape") || !strcmp(a, "--method") || !strcmp(a, "--targets") ||
                   !strcmp(a, "--stack") || !strcmp(a, "--save") || !strcmp(a, "--precision")) {
            if (!v) {
                fprintf(stderr, "lorabench bench: %s needs a value; see --help\n", a);
                return 2;
            }
            if (!strcmp(a, "--shape")) o.shape = v;
            else if (!strcmp(a, "--method")) o.method = v;
            else if (!strcmp(a, "--targets")) o.targets = v;
            else if (!strcmp(a, "--save")) o.save = v;
            else if (!strcmp(a, "--precision")) {
                int p = t5_precision_parse(v);
                if (p < 0) {
                    fprintf(stderr, "lorabench bench: --precision must be auto, fp32 or bf16, not '%s'\n", v);
                    return 2;
                }
                o.precision = (t5_precision_t)p;
            }
            else o.stack = v;
            i++;
        } else if (!strcmp(a, "--rank") || !strcmp(a, "--top-blocks") || !strcmp(a, "--batch") ||
                   !strcmp(a, "--src") || !strcmp(a, "--tgt") || !strcmp(a, "--steps") ||
                   !strcmp(a, "--warmup") || !strcmp(a, "--threads")) {
            char *end = NULL;
            long x = v ? strtol(v, &end, 10) : 0;
            int min = !strcmp(a, "--warmup") ? 0 : 1;
            if (!v || *end || end == v || x < min || x > 1000000) {
                fprintf(stderr, "lorabench bench: %s expects an integer >= %d, not '%s'\n", a, min, v ? v : "");
                return 2;
            }
            int *dst = !strcmp(a, "--rank") ? &o.rank : !strcmp(a, "--top-blocks") ? &o.top_blocks
                     : !strcmp(a, "--batch") ? &o.B : !strcmp(a, "--src") ? &o.S : !strcmp(a, "--tgt") ? &o.T
                     : !strcmp(a, "--steps") ? &o.steps : !strcmp(a, "--warmup") ? &o.warmup : &o.threads;
            *dst = (int)x;
            i++;
        } else {
            fprintf(stderr, "lorabench bench: unknown option '%s'; see --help\n", a);
            return 2;
        }
    }
    if (strcmp(o.stack, "both") && strcmp(o.stack, "encoder") && strcmp(o.stack, "decoder")) {
        fprintf(stderr, "lorabench bench: --stack must be both, encoder or decoder\n");
        return 2;
    }
    if (strcmp(o.method, "none") && strcmp(o.method, "lora") && strcmp(o.method, "full") && strcmp(o.method, "partial")) {
        fprintf(stderr, "lorabench bench: --method must be none, lora, full or partial\n");
        return 2;
    }
    if (o.save) {
        if (strcmp(o.shape, "flan-t5-small") && strcmp(o.shape, "flan-t5-base")) {
            fprintf(stderr, "lorabench bench: --save writes a random flan-t5-small or flan-t5-base checkpoint; --shape names one\n");
            return 2;
        }
        return save_random(o.shape, o.save);
    }
    if (table) return run_table(&o);
    bench_res_t r;
    if (run_one(&o, &r)) return 1;
    if (o.json) {
        print_json(&o, &r);
    } else {
        char lab[128];
        print_header();
        print_row(label_of(&o, lab, sizeof lab), &r);
        printf("forward %.1f GFLOP, backward %.1f GFLOP; %zu trainable parameters; loss %.4f\n", r.fwd_gflop,
               r.bwd_gflop, r.trainable, (double)r.loss);
        printf("precision %s: %s\n", t5_precision_name(r.precision), r.kernel);
        if (r.amx_ceiling > 0)
            printf("AMX ceiling %.0f GFLOP/s on %d threads (TDPBF16PS with the tiles resident); the step's "
                   "GFLOP/s are %.0f%% of it\n", r.amx_ceiling, o.threads, 100 * r.gflops / r.amx_ceiling);
        if (o.bf16)
            printf("weights %.0f MB: frozen linear weights held in bf16 (%.0f MB, %.0f MB in fp32), the rest fp32\n",
                   r.weight_mb, r.bf16_mb, 2 * r.bf16_mb);
        else
            printf("weights %.0f MB, all fp32\n", r.weight_mb);
        if (o.profile) print_profile(&r);
    }
    return 0;
}
