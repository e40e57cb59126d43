// Data-parallel training over MPI: `mpirun -n N lorabench train SPEC` runs one run on N
// processes (ranks). Each takes its share of every global batch; the training step sums
// the loss sums, token counts and gradients through the train_comm_t made here (the engine
// knows no MPI); rank 0 alone writes the store, checkpoints and results (runner.c).
// Without mpirun nothing here initialises MPI: the binary needs only the shared library.
#ifndef LB_MPI_H
#define LB_MPI_H

#include <stdint.h>

#include "train.h"
#include "util.h"

// Whether mpirun (or another PMI launcher) started this process, from its environment.
int lb_mpi_launched(void);

// Joins the job when mpirun (or another PMI launcher) started this process: its
// environment names a world size. *c gets rank and size and the sums; *joined = 1 then, and
// lb_mpi_leave must be called before the process exits. Otherwise c->size = 1, nothing is
// initialised and *joined = 0. A job of one rank is joined but has size 1.
int lb_mpi_join(train_comm_t *c, int *joined, lb_err_t *err);

// Rank 0's *v on every rank (a run id; <= 0 says rank 0 failed). Also a barrier.
int lb_mpi_share(const train_comm_t *c, int64_t *v, lb_err_t *err);

// Waits for every rank without spinning (rank 0 may still be evaluating or saving while
// the others are done), then MPI_Finalize.
void lb_mpi_leave(train_comm_t *c);

#endif
