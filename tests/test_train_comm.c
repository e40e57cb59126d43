// Data-parallel training without MPI (issue 23): two forked processes, each training its
// rows of every global batch (the data feed's rank/ranks) and summing through shared memory
// (a train_comm_t like experiments/run/lb_mpi.c's), give the loss and gradient norm of one
// process at every step and the same trained values, for LoRA and full fine-tuning, with
// uneven shares (batch 5: 2 and 3 rows), sequences of different lengths (each share padded
// on its own) and grad_accum 2. A batch of 1 row leaves rank 0's share empty.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "t5.h"
#include "train.h"

#define FIX "tests/fixtures/hf/t5-gated-a"
enum { N_EX = 40, STEPS = 6, MAX_LEN = 12 };

// What the two ranks share: the sums' slots and what each rank trained.
typedef struct {
    pthread_barrier_t bar;
    double f64[2][8];
    float loss[2][STEPS];
    double norm[2][STEPS];
    int failed[2];
    size_t n;         // values in each slot of buf and in params
    lb_real *buf[2];  // [n] each
    lb_real *params;  // [n]: rank 0's trained values
} world_t;

typedef struct {
    world_t *w;
    int rank;
} rank_ctx_t;

// Each rank puts its values in its slot; both add the slots in rank order, so both get
// the same bits (as MPI_Allreduce does).
static int shm_sum(void *ctx, lb_real *buf, size_t n, lb_err_t *err) {
    rank_ctx_t *r = ctx;
    if (n > r->w->n) return lb_err_set(err, LB_EARG, "shm_sum: %zu values, room for %zu", n, r->w->n);
    memcpy(r->w->buf[r->rank], buf, n * sizeof(lb_real));
    pthread_barrier_wait(&r->w->bar);
    for (size_t i = 0; i < n; i++) buf[i] = r->w->buf[0][i] + r->w->buf[1][i];
    pthread_barrier_wait(&r->w->bar);
    return 0;
}

static int shm_sum_f64(void *ctx, double *buf, size_t n, lb_err_t *err) {
    rank_ctx_t *r = ctx;
    if (n > 8) return lb_err_set(err, LB_EARG, "shm_sum_f64: %zu values, room for 8", n);
    memcpy(r->w->f64[r->rank], buf, n * sizeof(double));
    pthread_barrier_wait(&r->w->bar);
    for (size_t i = 0; i < n; i++) buf[i] = r->w->f64[0][i] + r->w->f64[1][i];
    pthread_barrier_wait(&r->w->bar);
    return 0;
}

// N_EX pairs of 3..MAX_LEN tokens (ids 2..601, then </s>): the target reverses the source.
static void make_pairs(int32_t *mem, data_tokens_t *ex) {
    uint64_t s = 11;
    for (int i = 0; i < N_EX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int len = 3 + (int)((s >> 33) % (MAX_LEN - 2));
        int32_t *src = mem + i * 2 * MAX_LEN, *tgt = src + MAX_LEN;
        for (int j = 0; j < len - 1; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            src[j] = 2 + (int32_t)((s >> 33) % 600);
        }
        src[len - 1] = 1;
        for (int j = 0; j < len - 1; j++) tgt[j] = src[len - 2 - j];
        tgt[len - 1] = 1;
        ex[i] = (data_tokens_t){src, tgt, len, len, len, len};
    }
}

// Trains STEPS steps as `rank` of `ranks` (comm NULL: one process); losses, norms and the
// trained values (when params is not NULL) come back. 0, or -1 with the message printed.
static int train_share(train_method_t method, int batch, int rank, int ranks, const train_comm_t *comm,
                       float *losses, double *norms, lb_real *params, size_t *n_params) {
    lb_err_t err = {0};
    t5_model_t m;
    if (t5_load(&m, FIX, &err)) {
        fprintf(stderr, "    %s\n", err.msg);
        return -1;
    }
    int32_t mem[N_EX * 2 * MAX_LEN];
    data_tokens_t ex[N_EX];
    make_pairs(mem, ex);
    data_tokenized_t data = {ex, N_EX, 0, 0};
    train_method_opts_t mo;
    train_method_opts_default(&mo, method);
    mo.lora.r = 4;
    train_params_t tp;
    int rc = train_params_setup(&tp, &m, &mo, &err);
    t5_acts_t *a = t5_acts_new(&m, batch, MAX_LEN, MAX_LEN);
    train_opts_t o;
    train_opts_default(&o);
    o.lr = 3e-3f;
    o.grad_accum = 2;
    o.total_steps = STEPS;
    o.dropout = 0;
    train_t t;
    train_init(&t, &m, a, &tp, &o);
    t.comm = comm;
    train_data_feed_t df;
    train_data_feed_init(&df, &data, batch, 3, m.cfg.pad_token_id, m.cfg.decoder_start_token_id);
    df.rank = rank;
    df.ranks = ranks;
    train_feed_t feed = {train_data_feed_next, NULL, &df};
    for (int k = 0; !rc && k < STEPS; k++) {
        train_result_t r;
        rc = train_step(&t, &feed, &r, &err);
        losses[k] = r.loss;
        norms[k] = r.grad_norm;
    }
    if (rc) fprintf(stderr, "    rank %d: %s\n", rank, err.msg);
    if (!rc && n_params) *n_params = tp.n;
    if (!rc && params) memcpy(params, tp.params, tp.n * sizeof(lb_real));
    train_data_feed_free(&df);
    train_free(&t);
    train_params_free(&tp);
    t5_acts_free(a);
    t5_free(&m);
    return rc;
}

static void check_two_ranks(train_method_t method, int batch) {
    float loss1[STEPS];
    double norm1[STEPS];
    size_t n = 0;
    // the reference first learns how many values train (then the forks share a slot that size)
    lb_real *ref = NULL;
    {
        float l[STEPS];
        double g[STEPS];
        EXPECT(train_share(method, batch, 0, 1, NULL, l, g, NULL, &n) == 0);
    }
    size_t bytes = sizeof(world_t) + 3 * n * sizeof(lb_real);
    world_t *w = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT(w != MAP_FAILED);
    if (w == MAP_FAILED || n == 0) return;
    memset(w, 0, sizeof *w);
    w->n = n;
    w->buf[0] = (lb_real *)(w + 1);
    w->buf[1] = w->buf[0] + n;
    w->params = w->buf[1] + n;
    pthread_barrierattr_t ba;
    pthread_barrierattr_init(&ba);
    pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&w->bar, &ba, 2);
    fflush(NULL);
    pid_t pid[2];
    for (int rank = 0; rank < 2; rank++) {
        pid[rank] = fork();
        if (pid[rank] == 0) {
            rank_ctx_t rc = {w, rank};
            train_comm_t comm = {rank, 2, shm_sum, shm_sum_f64, &rc};
            w->failed[rank] = train_share(method, batch, rank, 2, &comm, w->loss[rank], w->norm[rank],
                                          rank == 0 ? w->params : NULL, NULL) != 0;
            _exit(0);
        }
    }
    int ok = 1;
    for (int rank = 0; rank < 2; rank++) {
        int st = 0;
        ok &= pid[rank] > 0 && waitpid(pid[rank], &st, 0) == pid[rank] && WIFEXITED(st) && !w->failed[rank];
    }
    EXPECT(ok);
    ref = malloc(n * sizeof(lb_real));
    EXPECT(train_share(method, batch, 0, 1, NULL, loss1, norm1, ref, NULL) == 0);
    double worst_loss = 0, worst_norm = 0, worst_param = 0;
    for (int k = 0; ok && k < STEPS; k++) {
        for (int rank = 0; rank < 2; rank++) {
            double dl = fabs((double)w->loss[rank][k] - loss1[k]) / fabs((double)loss1[k]);
            double dg = fabs(w->norm[rank][k] - norm1[k]) / norm1[k];
            if (dl > worst_loss) worst_loss = dl;
            if (dg > worst_norm) worst_norm = dg;
        }
        EXPECTF(w->loss[0][k] == w->loss[1][k], "step %d: rank 0 loss %.9g, rank 1 %.9g", k + 1,
                (double)w->loss[0][k], (double)w->loss[1][k]);
    }
    // AdamW divides by the gradient's running size, so rounding in a gradient near 0 can
    // move a value by up to lr per step: few values may differ by more than 1e-6
    size_t n_off = 0;
    for (size_t i = 0; ok && i < n; i++) {
        double d = fabs((double)w->params[i] - ref[i]);
        worst_param = fmax(worst_param, d);
        n_off += d > 1e-6;
    }
    EXPECTF(worst_loss <= 1e-5, "losses differ by %.3g relative (step 1: one process %.9g, rank 0 %.9g)", worst_loss,
            (double)loss1[0], (double)w->loss[0][0]);
    EXPECTF(worst_norm <= 1e-4, "gradient norms differ by %.3g relative", worst_norm);
    EXPECTF(n_off <= n / 1000 && worst_param <= 2 * 3e-3 * STEPS, "%zu of %zu trained values differ by more than 1e-6, by up to %.3g",
            n_off, n, worst_param);
    if (getenv("LB_VERBOSE"))
        printf("    batch %d: loss %.3g, norm %.3g (relative), values up to %.3g (%zu of %zu over 1e-6)\n", batch,
               worst_loss, worst_norm, worst_param, n_off, n);
    free(ref);
    pthread_barrier_destroy(&w->bar);
    munmap(w, bytes);
}

static void test_lora_two_ranks(void) { check_two_ranks(TRAIN_METHOD_LORA, 5); }
static void test_full_two_ranks(void) { check_two_ranks(TRAIN_METHOD_FULL, 5); }
static void test_empty_share(void) { check_two_ranks(TRAIN_METHOD_LORA, 1); }

int main(void) {
    lb_set_threads(1);
    RUN(test_lora_two_ranks);
    RUN(test_full_two_ranks);
    RUN(test_empty_share);
    TH_DONE();
}
