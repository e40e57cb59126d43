#include "lb_mpi.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// Names of the world size in the environment of OpenMPI's, PMIx's and MPICH's launchers.
int lb_mpi_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int mpi_error(int rc, const char *what, lb_err_t *err) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return lb_err_set(err, LB_EIO, "MPI %s failed: %s; check that every rank of the job is alive", what, msg);
}

static int sum_real(void *ctx, lb_real *buf, size_t n, lb_err_t *err) {
    (void)ctx;
    MPI_Datatype type = sizeof(lb_real) == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT;
    // In slices of 4M values (16 MB): OpenMPI 4.1's shared-memory Allreduce of one 77M-float
    // buffer (a FLAN-T5-small full fine-tune) took 0.75 s on the 2-core dev VM, the same in
    // 1M or 4M slices 0.07 s (2 ranks, 3 repetitions each); MPI counts are int anyway.
    const size_t slice = (size_t)1 << 22;
    for (size_t off = 0; off < n;) {
        int k = n - off > slice ? (int)slice : (int)(n - off);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, k, type, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "Allreduce of the gradients", err);
        off += (size_t)k;
    }
    return 0;
}

// Waits for req without holding a core: after a millisecond of polling it sleeps between
// tests, as the other ranks may be busy for long (rank 0 evaluating or writing a
// checkpoint while the others wait for the next step), and a blocking MPI call would spin.
static int wait_idle(MPI_Request *req) {
    double t0 = MPI_Wtime();
    struct timespec pause = {0, 200000};
    for (int done = 0;;) {
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done) return rc;
        if (MPI_Wtime() - t0 > 1e-3) nanosleep(&pause, NULL);
    }
}

// The loss sums and the ranks' agreements (a few numbers each).
static int sum_f64(void *ctx, double *buf, size_t n, lb_err_t *err) {
    (void)ctx;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
    if (rc == MPI_SUCCESS) rc = wait_idle(&req);
    return rc == MPI_SUCCESS ? 0 : mpi_error(rc, "Allreduce of the loss", err);
}

int lb_mpi_join(train_comm_t *c, int *joined, lb_err_t *err) {
    memset(c, 0, sizeof *c);
    c->size = 1;
    *joined = 0;
    if (!lb_mpi_launched()) return 0;
    int provided, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);  // only this thread calls MPI
    if (rc != MPI_SUCCESS) return mpi_error(rc, "Init", err);
    *joined = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->sum = sum_real;
    c->sum_f64 = sum_f64;
    return 0;
}

int lb_mpi_share(const train_comm_t *c, int64_t *v, lb_err_t *err) {
    if (c->size <= 1) return 0;
    int rc = MPI_Bcast(v, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_error(rc, "Bcast of the run id", err);
}

void lb_mpi_leave(train_comm_t *c) {
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) == MPI_SUCCESS) wait_idle(&req);  // rank 0 may still evaluate
    MPI_Finalize();
    memset(c, 0, sizeof *c);
    c->size = 1;
}
