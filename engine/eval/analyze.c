#include "analyze.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// LAPACK in double precision, from OpenBLAS (Fortran calling convention, column-major).
extern void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
                    const int *lwork, int *info);
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork,
                    int *info, size_t);

// Singular values (largest first) of the column-major m×n matrix a (overwritten) into
// s [min(m, n)]; with u (not NULL), the left singular vectors too, u [m, min(m, n)]
// column-major. Returns the LAPACK info (0: converged).
static int svd_cols(int m, int n, double *a, double *s, double *u) {
    int k = m < n ? m : n, info = 0, lwork = -1;
    if (k == 0) return 0;
    const char *job = u ? "S" : "N";
    int *iwork = xmalloc(sizeof(int) * 8 * (size_t)k);
    double wq, vt1 = 0;
    // jobz "S" also writes vt [k, n]: ask for it, then drop it.
    double *vt = u ? xmalloc(sizeof(double) * (size_t)k * (size_t)n) : &vt1;
    int ldu = u ? m : 1, ldvt = u ? k : 1;
    double u1 = 0;
    dgesdd_(job, &m, &n, a, &m, s, u ? u : &u1, &ldu, vt, &ldvt, &wq, &lwork, iwork, &info, 1);
    lwork = (int)wq > 1 ? (int)wq : 1;
    double *work = xmalloc(sizeof(double) * (size_t)lwork);
    if (info == 0) dgesdd_(job, &m, &n, a, &m, s, u ? u : &u1, &ldu, vt, &ldvt, work, &lwork, iwork, &info, 1);
    free(work);
    free(iwork);
    if (u) free(vt);
    return info;
}

// ‖W‖_F of the base weight of module lm (its "<name>.weight" in the file) into *norm.
static int weight_norm(const st_file_t *f, const lora_module_t *lm, double *norm, lb_err_t *err) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", lm->name);
    const st_tensor_t *t = st_find(f, name);
    if (!t && !strcmp(lm->name, "lm_head")) t = st_find(f, "shared.weight");  // a tied head
    if (!t)
        return lb_err_set(err, LB_ESHAPE, "the adapter adapts %s, which %s does not have; give the model the "
                          "adapter was trained on", lm->name, f->path);
    if (t->ndim != 2 || t->shape[0] != lm->out || t->shape[1] != lm->in)
        return lb_err_set(err, LB_ESHAPE, "%s is not %d×%d in %s as in the adapter; give the model the adapter was "
                          "trained on", name, lm->out, lm->in, f->path);
    float *w = xmalloc(sizeof(float) * t->numel);
    if (st_to_f32(t, w, err)) {
        free(w);
        return -1;
    }
    double s = 0;
    for (size_t i = 0; i < t->numel; i++) s += (double)w[i] * w[i];
    free(w);
    *norm = sqrt(s);
    return 0;
}

// Fills norm, rel_norm, effective_rank and energy from sv (largest first).
static void module_summary(analyze_module_t *mo, double w_norm) {
    double total = 0;
    for (int i = 0; i < mo->n_sv; i++) total += mo->sv[i] * mo->sv[i];
    mo->norm = sqrt(total);
    mo->rel_norm = w_norm > 0 ? mo->norm / w_norm : NAN;
    mo->effective_rank = 0;
    for (int i = 0; i < mo->n_sv; i++)
        if (mo->sv[0] > 0 && mo->sv[i] > ANALYZE_RANK_TOL * mo->sv[0]) mo->effective_rank++;
    for (int k = 0; k < ANALYZE_N_ENERGY; k++) {
        int r = analyze_energy_rank(k);
        double kept = 0;
        for (int i = 0; i < mo->n_sv && i < r; i++) kept += mo->sv[i] * mo->sv[i];
        mo->energy[k] = total > 0 ? kept / total : 1.0;
        if (mo->energy[k] > 1.0) mo->energy[k] = 1.0;  // rounding of the partial sums
    }
}

// Singular values of ΔW = s·B·A without forming ΔW [out, in]: with B = Q·R (Q [out, r]
// orthonormal columns, R [r, r]), ΔW = Q·(s·R·A), whose singular values are those of the
// r×in matrix s·R·A. When out < r the QR has no square R, and ΔW is formed instead.
static int lora_module_sv(const lora_module_t *lm, double *sv) {
    int r = lm->r, in = lm->in, out = lm->out, info = 0;
    if (out < r) {
        double *d = xcalloc((size_t)in * (size_t)out, sizeof(double));  // ΔW column-major [out, in]
        for (int o = 0; o < out; o++)
            for (int c = 0; c < in; c++) {
                double acc = 0;
                for (int j = 0; j < r; j++) acc += (double)lm->B[(size_t)o * r + j] * lm->A[(size_t)j * in + c];
                d[(size_t)c * out + o] = lm->scale * acc;
            }
        info = svd_cols(out, in, d, sv, NULL);
        free(d);
        return info;
    }
    double *b = xmalloc(sizeof(double) * (size_t)out * (size_t)r);  // B column-major [out, r]
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++) b[(size_t)j * out + o] = lm->B[(size_t)o * r + j];
    double *tau = xmalloc(sizeof(double) * (size_t)r), wq;
    int lwork = -1;
    dgeqrf_(&out, &r, b, &out, tau, &wq, &lwork, &info);
    lwork = (int)wq > 1 ? (int)wq : 1;
    double *work = xmalloc(sizeof(double) * (size_t)lwork);
    if (info == 0) dgeqrf_(&out, &r, b, &out, tau, work, &lwork, &info);
    free(work);
    free(tau);
    if (info != 0) {
        free(b);
        return info;
    }
    // M = s·R·A, [r, in] column-major; R[i][j] = b[j·out + i] for i <= j.
    double *mm = xcalloc((size_t)r * (size_t)in, sizeof(double));
    for (int i = 0; i < r; i++)
        for (int j = i; j < r; j++) {
            double rij = lm->scale * b[(size_t)j * out + i];
            const float *arow = lm->A + (size_t)j * in;
            for (int c = 0; c < in; c++) mm[(size_t)c * r + i] += rij * arow[c];
        }
    free(b);
    info = svd_cols(r, in, mm, sv, NULL);
    free(mm);
    return info;
}

// Reports done of total; 1 when the caller asks to stop before the last module.
static int progress_stop(const analyze_progress_t *p, int done, int total) {
    int stop = p && p->fn && p->fn(p->ctx, done, total);
    return stop && done < total;
}

int analyze_lora(const lora_adapter_t *a, const st_file_t *base, const analyze_progress_t *progress,
                 analyze_result_t *out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    out->m = xcalloc((size_t)(a->n > 0 ? a->n : 1), sizeof(analyze_module_t));
    for (int i = 0; i < a->n; i++) {
        const lora_module_t *lm = &a->m[i];
        if (progress_stop(progress, i, a->n)) {
            analyze_result_free(out);
            return lb_err_set(err, LB_ESTOPPED, "the analysis was stopped at module %d of %d", i, a->n);
        }
        analyze_module_t *mo = &out->m[i];
        out->n = i + 1;
        snprintf(mo->name, sizeof mo->name, "%s", lm->name);
        mo->in = lm->in, mo->out = lm->out;
        int k = lm->r < lm->in ? lm->r : lm->in;
        if (lm->out < k) k = lm->out;
        mo->n_sv = k;
        mo->sv = xcalloc((size_t)(k > 0 ? k : 1), sizeof(double));
        double w_norm = 0;
        if (base && weight_norm(base, lm, &w_norm, err)) {
            analyze_result_free(out);
            return -1;
        }
        int info = lora_module_sv(lm, mo->sv);
        if (info != 0) {
            analyze_result_free(out);
            return lb_err_set(err, LB_EFORMAT, "the SVD of ΔW of %s did not converge (LAPACK info %d)", lm->name, info);
        }
        module_summary(mo, w_norm);
    }
    progress_stop(progress, a->n, a->n);
    return 0;
}

// Whether linear i of base is one of ΔW's modules (a tied lm_head is the embedding, not a linear).
static int full_module(const t5_model_t *base, int i) {
    return !(base->cfg.tie_word_embeddings && !strcmp(base->lin[i].name, "lm_head"));
}

int analyze_full(t5_model_t *base, t5_model_t *tuned, const analyze_progress_t *progress, analyze_result_t *out,
                 lb_err_t *err) {
    memset(out, 0, sizeof *out);
    out->full = 1;
    out->m = xcalloc((size_t)(base->n_lin > 0 ? base->n_lin : 1), sizeof(analyze_module_t));
    int total = 0;
    for (int i = 0; i < base->n_lin; i++) total += full_module(base, i);
    for (int i = 0; i < base->n_lin; i++) {
        const linear_t *lb = &base->lin[i];
        if (!full_module(base, i)) continue;
        if (progress_stop(progress, out->n, total)) {
            analyze_result_free(out);
            return lb_err_set(err, LB_ESTOPPED, "the analysis was stopped at module %d of %d", out->n, total);
        }
        const linear_t *lt = t5_find_linear(tuned, lb->name);
        if (!lt || lt->in != lb->in || lt->out != lb->out) {
            analyze_result_free(out);
            return lb_err_set(err, LB_ESHAPE, "the fine-tuned model %s %s; give the base model it was trained from",
                              lt ? "has another shape for" : "lacks", lb->name);
        }
        if ((!lb->W->w && !lb->W->w16) || (!lt->W->w && !lt->W->w16)) {
            analyze_result_free(out);
            return lb_err_set(err, LB_EARG, "analyze_full needs loaded models (%s has no values)", lb->name);
        }
        analyze_module_t *mo = &out->m[out->n++];
        snprintf(mo->name, sizeof mo->name, "%s", lb->name);
        mo->in = lb->in, mo->out = lb->out;
        int in = lb->in, o = lb->out, k = in < o ? in : o;
        size_t n = (size_t)in * (size_t)o;
        // Row-major [out, in] is column-major [in, out] (ΔWᵀ): the same singular values.
        double *d = xmalloc(sizeof(double) * n);
        float *wb = xmalloc(sizeof(float) * n), *wt = xmalloc(sizeof(float) * n);
        if (lb->W->w) memcpy(wb, lb->W->w, sizeof(float) * n); else lb_bf16_to_real(lb->W->w16, n, wb);
        if (lt->W->w) memcpy(wt, lt->W->w, sizeof(float) * n); else lb_bf16_to_real(lt->W->w16, n, wt);
        double wn = 0;
        for (size_t j = 0; j < n; j++) {
            d[j] = (double)wt[j] - (double)wb[j];
            wn += (double)wb[j] * wb[j];
        }
        free(wb), free(wt);
        mo->n_sv = k;
        mo->sv = xcalloc((size_t)(k > 0 ? k : 1), sizeof(double));
        int info = svd_cols(in, o, d, mo->sv, NULL);
        free(d);
        if (info != 0) {
            analyze_result_free(out);
            return lb_err_set(err, LB_EFORMAT, "the SVD of ΔW of %s did not converge (LAPACK info %d)", lb->name, info);
        }
        module_summary(mo, sqrt(wn));
    }
    progress_stop(progress, total, total);
    return 0;
}

// The right singular vectors of A [r, in] (row-major) as the columns of v [in, k]
// (column-major, k = min(r, in)), most significant first.
static int right_vectors(const lora_module_t *lm, double *v, int k) {
    int in = lm->in, r = lm->r;
    // A row-major [r, in] is column-major Aᵀ [in, r]: its left singular vectors are A's right ones.
    double *at = xmalloc(sizeof(double) * (size_t)in * (size_t)r);
    for (size_t j = 0; j < (size_t)in * (size_t)r; j++) at[j] = lm->A[j];
    double *s = xmalloc(sizeof(double) * (size_t)k);
    int info = svd_cols(in, r, at, s, v);
    free(s);
    free(at);
    return info;
}

int analyze_similarity(const lora_adapter_t *a, const lora_adapter_t *b, analyze_sim_t **out, int *n, lb_err_t *err) {
    *out = xcalloc((size_t)(a->n > 0 ? a->n : 1), sizeof(analyze_sim_t));
    *n = 0;
    for (int i = 0; i < a->n; i++) {
        const lora_module_t *ma = &a->m[i], *mb = lora_find(b, ma->name);
        if (!mb) continue;
        if (ma->in != mb->in) {
            analyze_sim_free(*out, *n);
            *out = NULL, *n = 0;
            return lb_err_set(err, LB_ESHAPE, "%s takes %d inputs in one adapter and %d in the other; "
                              "compare adapters of the same base model", ma->name, ma->in, mb->in);
        }
        int in = ma->in;
        int ka = ma->r < in ? ma->r : in, kb = mb->r < in ? mb->r : in, k = ka < kb ? ka : kb;
        double *u = xmalloc(sizeof(double) * (size_t)in * (size_t)ka);
        double *v = xmalloc(sizeof(double) * (size_t)in * (size_t)kb);
        int info = right_vectors(ma, u, ka);
        if (info == 0) info = right_vectors(mb, v, kb);
        if (info != 0) {
            free(u), free(v);
            analyze_sim_free(*out, *n);
            *out = NULL, *n = 0;
            return lb_err_set(err, LB_EFORMAT, "the SVD of A of %s did not converge (LAPACK info %d)", ma->name, info);
        }
        // G[p][q] = (u_p · v_q)²; ‖U_iᵀ V_j‖²_F is the sum of G over p < i, q < j.
        double *c = xcalloc((size_t)(k + 1) * (size_t)(k + 1), sizeof(double));  // prefix sums
        for (int p = 0; p < k; p++)
            for (int q = 0; q < k; q++) {
                double dot = 0;
                for (int x = 0; x < in; x++) dot += u[(size_t)p * in + x] * v[(size_t)q * in + x];
                c[(size_t)(p + 1) * (k + 1) + (q + 1)] = dot * dot + c[(size_t)p * (k + 1) + (q + 1)] +
                                                        c[(size_t)(p + 1) * (k + 1) + q] - c[(size_t)p * (k + 1) + q];
            }
        free(u), free(v);
        analyze_sim_t *s = &(*out)[(*n)++];
        snprintf(s->name, sizeof s->name, "%s", ma->name);
        s->n = k;
        s->phi = xmalloc(sizeof(double) * (size_t)(k > 0 ? k * k : 1));
        for (int p = 1; p <= k; p++)
            for (int q = 1; q <= k; q++) s->phi[(size_t)(p - 1) * k + (q - 1)] = c[(size_t)p * (k + 1) + q] / (p < q ? p : q);
        free(c);
    }
    return 0;
}

void analyze_result_free(analyze_result_t *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) free(r->m[i].sv);
    free(r->m);
    memset(r, 0, sizeof *r);
}

void analyze_sim_free(analyze_sim_t *s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i].phi);
    free(s);
}

// ---- JSON ------------------------------------------------------------------------------

static cJSON *json_number(double x) {
    return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull();
}

char *analyze_to_json(const analyze_result_t *r, const analyze_sim_t *sim, int nsim, const char *key) {
    cJSON *root = cJSON_CreateObject();
    if (key) cJSON_AddStringToObject(root, "key", key);
    cJSON_AddStringToObject(root, "kind", r->full ? "full" : "lora");
    cJSON *mods = cJSON_AddArrayToObject(root, "modules");
    for (int i = 0; i < r->n; i++) {
        const analyze_module_t *mo = &r->m[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", mo->name);
        cJSON_AddNumberToObject(o, "in", mo->in);
        cJSON_AddNumberToObject(o, "out", mo->out);
        cJSON *sv = cJSON_AddArrayToObject(o, "singular_values");
        for (int j = 0; j < mo->n_sv; j++) cJSON_AddItemToArray(sv, json_number(mo->sv[j]));
        cJSON_AddItemToObject(o, "norm", json_number(mo->norm));
        cJSON_AddItemToObject(o, "rel_norm", json_number(mo->rel_norm));
        cJSON_AddNumberToObject(o, "effective_rank", mo->effective_rank);
        cJSON *e = cJSON_AddObjectToObject(o, "energy_at_rank");
        for (int k = 0; k < ANALYZE_N_ENERGY; k++) {
            char rk[16];
            snprintf(rk, sizeof rk, "%d", analyze_energy_rank(k));
            cJSON_AddItemToObject(e, rk, json_number(mo->energy[k]));
        }
        cJSON_AddItemToArray(mods, o);
    }
    if (sim) {
        cJSON *sa = cJSON_AddArrayToObject(root, "similarity");
        for (int i = 0; i < nsim; i++) {
            cJSON *o = cJSON_CreateObject(), *rows = NULL;
            cJSON_AddStringToObject(o, "name", sim[i].name);
            rows = cJSON_AddArrayToObject(o, "phi");
            for (int p = 0; p < sim[i].n; p++) {
                cJSON *row = cJSON_CreateArray();
                for (int q = 0; q < sim[i].n; q++) cJSON_AddItemToArray(row, json_number(sim[i].phi[(size_t)p * sim[i].n + q]));
                cJSON_AddItemToArray(rows, row);
            }
            cJSON_AddItemToArray(sa, o);
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) abort();  // cJSON fails only when out of memory
    char *copy = xstrdup(text);
    cJSON_free(text);
    return copy;
}

static double json_double(const cJSON *x) {
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

int analyze_from_json(const char *text, const char *name, analyze_result_t *out, char **key_out, lb_err_t *err) {
    memset(out, 0, sizeof *out);
    if (key_out) *key_out = NULL;
    cJSON *root = cJSON_Parse(text);
    const cJSON *mods = root ? cJSON_GetObjectItemCaseSensitive(root, "modules") : NULL;
    const cJSON *kind = root ? cJSON_GetObjectItemCaseSensitive(root, "kind") : NULL;
    if (!cJSON_IsArray(mods) || !cJSON_IsString(kind)) {
        cJSON_Delete(root);
        return lb_err_set(err, LB_EFORMAT, "%s is not an analysis (no \"kind\" and \"modules\"); delete it to recompute",
                          name);
    }
    out->full = !strcmp(kind->valuestring, "full");
    int n = cJSON_GetArraySize(mods);
    out->m = xcalloc((size_t)(n > 0 ? n : 1), sizeof(analyze_module_t));
    const cJSON *o;
    cJSON_ArrayForEach(o, mods) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(o, "singular_values");
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(o, "energy_at_rank");
        if (!cJSON_IsString(nm) || !cJSON_IsArray(sv)) {
            analyze_result_free(out);
            cJSON_Delete(root);
            return lb_err_set(err, LB_EFORMAT, "%s: module %d has no name or singular_values; delete it to recompute",
                              name, out->n + 1);
        }
        analyze_module_t *mo = &out->m[out->n++];
        snprintf(mo->name, sizeof mo->name, "%s", nm->valuestring);
        mo->in = (int)json_double(cJSON_GetObjectItemCaseSensitive(o, "in"));
        mo->out = (int)json_double(cJSON_GetObjectItemCaseSensitive(o, "out"));
        mo->n_sv = cJSON_GetArraySize(sv);
        mo->sv = xcalloc((size_t)(mo->n_sv > 0 ? mo->n_sv : 1), sizeof(double));
        for (int j = 0; j < mo->n_sv; j++) mo->sv[j] = json_double(cJSON_GetArrayItem(sv, j));
        mo->norm = json_double(cJSON_GetObjectItemCaseSensitive(o, "norm"));
        mo->rel_norm = json_double(cJSON_GetObjectItemCaseSensitive(o, "rel_norm"));
        mo->effective_rank = (int)json_double(cJSON_GetObjectItemCaseSensitive(o, "effective_rank"));
        for (int k = 0; k < ANALYZE_N_ENERGY; k++) {
            char rk[16];
            snprintf(rk, sizeof rk, "%d", analyze_energy_rank(k));
            mo->energy[k] = json_double(en ? cJSON_GetObjectItemCaseSensitive(en, rk) : NULL);
        }
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(root, "key");
    if (key_out && cJSON_IsString(key)) *key_out = xstrdup(key->valuestring);
    cJSON_Delete(root);
    return 0;
}
