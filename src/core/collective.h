/* A communicator as the layers below src/dist see it: the gradient allreduce
 * ops (src/graph/ops_dist.c), the plan executor (src/compile/plan.c) and the
 * backends' allreduce kernels (src/backend/cpu/cpu_dist.c,
 * src/backend/cuda/cuda_nccl.cu) reach the communicator only through this
 * table, so that none of them includes or calls src/dist: arrows point down
 * (docs/architecture.md). src/dist fills one per nb_dist
 * (nb_dist_collective) and owns it; an allreduce node's `data` points at
 * it, so it lives as long as the communicator. Internal to nabla. */
#ifndef NB_COLLECTIVE_H
#define NB_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "nabla/tensor.h"

typedef struct nb_collective {
  void *ctx;      /* the communicator; the first argument of every call below */
  int rank, size; /* this process's rank and the number of ranks */
  /* Starts summing count f32 at buf over all ranks in place; buf stays
   * untouched until iallreduce_wait with the same buf returns. */
  nb_status (*iallreduce_start)(void *ctx, float *buf, int64_t count);
  nb_status (*iallreduce_wait)(void *ctx, float *buf);
  /* Reductions started and not yet waited for, and a turn for them to
   * advance (MPI moves a non-blocking collective only inside MPI calls). */
  int (*pending)(const void *ctx);
  void (*progress)(void *ctx);
  /* Completes every reduction started and not waited for: after a run
   * that failed between a start and its wait, so that no reduction still
   * writes into a buffer the next run reuses or nb_plan_free frees. */
  nb_status (*drain)(void *ctx);
  /* A failure of some ranks made a failure of all (a collective), and a
   * broadcast of bytes from root: what the CUDA backend needs to hand the
   * NCCL unique id from rank 0 to the others. */
  nb_status (*agree)(void *ctx, nb_status st);
  nb_status (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
} nb_collective;

#endif
