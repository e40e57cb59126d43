// The analysis of what a run learned (engine/eval/analyze.h) for folders on disk and for the
// runs of a workspace: the one place where `lorabench analyze` and the workbench's Analysis
// screen load the weights, so that both show the same numbers.
//
// A run's analysis is cached in runs/<id>/analysis.json, keyed by the sha256 of the weight
// file it was computed from (adapter/adapter_model.safetensors or model/model.safetensors):
// a file that changed is analysed again.
#ifndef LB_ANALYSIS_H
#define LB_ANALYSIS_H

#include <stdint.h>

#include "analyze.h"
#include "store.h"
#include "util.h"

// Where a run's result lives.
typedef struct {
    int full;                // 1: model/ (a full or partial fine-tune), 0: adapter/ (LoRA)
    char base[4096];         // the base model folder the run was trained from
    char run_dir[4096];      // runs/<id>
    char dir[4120];          // runs/<id>/adapter or runs/<id>/model
    char weights[4160];      // the safetensors file inside dir
} analysis_run_t;

// Finds run id's base model and result folder; a run without one (not finished, method
// none) is an error saying so.
int analysis_run_find(store_t *st, const char *workspace, int64_t id, analysis_run_t *out, lb_err_t *err);

// Analyses an adapter folder (PEFT files) against its base model folder.
int analysis_adapter(const char *base, const char *adapter_dir, analyze_result_t *out, lb_err_t *err);

// Analyses a fine-tuned model folder against its base model folder.
int analysis_finetuned(const char *base, const char *tuned_dir, analyze_result_t *out, lb_err_t *err);

// φ of two adapter folders of the same base model.
int analysis_adapters_similarity(const char *base, const char *dir_a, const char *dir_b, analyze_sim_t **out,
                                 int *n, lb_err_t *err);

// The analysis of run id: read from runs/<id>/analysis.json when its key is the weight
// file's sha256, else computed and written there. *cached (may be NULL) gets 1 when read.
// cache_path (may be NULL) gets the cache file's name.
int analysis_of_run(store_t *st, const char *workspace, int64_t id, analyze_result_t *out, int *cached,
                    char *cache_path, size_t cap, lb_err_t *err);

// The same for a run analysis_run_find found, without the store (a worker thread calls it):
// progress (may be NULL) sees each module and may stop the computation, which then fails
// with LB_ESTOPPED and writes no cache. The cache is written whole or not at all
// (lb_write_file_atomic).
int analysis_of_found_run(const analysis_run_t *r, const analyze_progress_t *progress, analyze_result_t *out,
                          int *cached, char *cache_path, size_t cap, lb_err_t *err);

// Finds the two LoRA runs whose adapters analysis_runs_similarity compares; a full
// fine-tune among them is an error saying so.
int analysis_runs_find_pair(store_t *st, const char *workspace, int64_t id_a, int64_t id_b, analysis_run_t *ra,
                            analysis_run_t *rb, lb_err_t *err);

// φ between the adapters of two LoRA runs (the same base model's shape).
int analysis_runs_similarity(store_t *st, const char *workspace, int64_t id_a, int64_t id_b, analyze_sim_t **out,
                             int *n, lb_err_t *err);

#endif
