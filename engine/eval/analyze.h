// What an adapter or a fine-tune learned, as spectra of the weight change ΔW of each
// linear module (issue 22):
//   - a LoRA adapter: ΔW = s·B·A (s = alpha/r, or alpha/√r with rsLoRA), at most r non-zero
//     singular values;
//   - a full fine-tune: ΔW = W_finetuned − W_base;
//   - two LoRA adapters: the normalised subspace similarity of the LoRA paper (§7.2),
//     φ(i, j) = ‖U_iᵀ V_j‖²_F / min(i, j), U_i and V_j the top-i and top-j right singular
//     vectors of the two A matrices of one module.
// Everything is computed in double precision with LAPACK (OpenBLAS's). The result has a
// JSON form (analyze_to_json / analyze_from_json) that `lorabench analyze --json` prints
// and runs/<id>/analysis.json caches.
#ifndef LB_ANALYZE_H
#define LB_ANALYZE_H

#include "lora.h"
#include "safetensors.h"
#include "t5.h"
#include "util.h"

// energy_at_rank is given at ranks 1, 2, 4, ... ANALYZE_MAX_RANK.
#define ANALYZE_MAX_RANK 64
#define ANALYZE_N_ENERGY 7
// A singular value counts towards the effective rank when above this share of the largest.
#define ANALYZE_RANK_TOL 0.01

typedef struct {
    char name[96];        // Hugging Face module name ("encoder.block.0.layer.0.SelfAttention.q")
    int in, out;
    int n_sv;
    double *sv;           // [n_sv] singular values of ΔW, largest first (r of them for LoRA)
    double norm;          // ‖ΔW‖_F
    double rel_norm;      // ‖ΔW‖_F / ‖W_base‖_F (NAN when W_base is zero)
    int effective_rank;   // singular values above ANALYZE_RANK_TOL · the largest
    double energy[ANALYZE_N_ENERGY];  // share of ‖ΔW‖²_F that the best rank-2^k approximation keeps
} analyze_module_t;

typedef struct {
    int full;             // 1: a full fine-tune, 0: a LoRA adapter
    int n;
    analyze_module_t *m;
} analyze_result_t;

// φ of one module present in both adapters.
typedef struct {
    char name[96];
    int n;                // min(r1, r2)
    double *phi;          // [n, n] row-major: phi[(i-1)·n + (j-1)] = φ(i, j)
} analyze_sim_t;

// The rank of energy index k (1, 2, 4, ...).
static inline int analyze_energy_rank(int k) { return 1 << k; }

// How far analyze_lora / analyze_full are, for a caller that shows it or may stop them
// (the workbench runs them on a worker thread): fn(ctx, done, total) is called before each
// module (done = 0 .. total-1) and once after the last (done = total); a non-zero return
// before the last stops the analysis with LB_ESTOPPED and nothing in *out.
typedef struct {
    int (*fn)(void *ctx, int done, int total);
    void *ctx;
} analyze_progress_t;

// Spectra of every module of a LoRA adapter; base (the base model's model.safetensors, or
// NULL) gives ‖W‖ for rel_norm (NAN without it), reading only the adapted modules' weights
// (lm_head falls back to shared.weight when tied). A module the file lacks, or of another
// shape, is an error naming it. progress may be NULL.
int analyze_lora(const lora_adapter_t *a, const st_file_t *base, const analyze_progress_t *progress,
                 analyze_result_t *out, lb_err_t *err);

// Spectra of W_finetuned − W_base for every linear module (the head only when untied);
// the two models must have the same configuration. progress may be NULL.
int analyze_full(t5_model_t *base, t5_model_t *tuned, const analyze_progress_t *progress, analyze_result_t *out,
                 lb_err_t *err);

// φ for every module that both adapters adapt (in a's order); *n gets how many (0 when none
// is shared). Free with analyze_sim_free.
int analyze_similarity(const lora_adapter_t *a, const lora_adapter_t *b, analyze_sim_t **out, int *n,
                       lb_err_t *err);

void analyze_result_free(analyze_result_t *r);
void analyze_sim_free(analyze_sim_t *s, int n);

// The JSON form: {"kind": "lora"|"full", "modules": [{"name", "in", "out", "singular_values",
// "norm", "rel_norm", "effective_rank", "energy_at_rank": {"1": .., "2": .., ...}}],
// "similarity": [{"name", "phi": [[...]]}]} (similarity only when sim is not NULL), plus
// "key": key when key is not NULL. Doubles print with 17 digits, so a parse gives back the
// same values. Returns malloc'd text.
char *analyze_to_json(const analyze_result_t *r, const analyze_sim_t *sim, int nsim, const char *key);

// Parses what analyze_to_json wrote (the modules; similarity is ignored). *key_out (may be
// NULL) gets a malloc'd copy of "key" or NULL. name names the text in messages.
int analyze_from_json(const char *text, const char *name, analyze_result_t *out, char **key_out, lb_err_t *err);

#endif
