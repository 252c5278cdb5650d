/* Kernels of the gradient allreduce ops (src/graph/ops_dist.c): pack a
 * bucket and start its non-blocking reduction; wait for it and average.
 * They call MPI (through the node's communicator table, collective.h, which
 * src/dist fills: the backend does not call src/dist) from the thread that
 * runs the plan, which is what MPI_THREAD_FUNNELED allows. */
#include <string.h>

#include "../../core/collective.h"
#include "cpu_internal.h"

static nb_status run_start(const nb_kernel_call *c) {
  const nb_tensor *t = c->node;
  float *out = c->out;
  int64_t at = 0;
  /* the constructor made every input dense */
  for (int i = 0; i < c->n_in; i++) {
    int64_t n = nb_tensor_numel(t->in[i]);
    if (n) memcpy(out + at, c->in[i], (size_t)n * sizeof *out);
    at += n;
  }
  const nb_collective *coll = t->data;
  return coll->iallreduce_start(coll->ctx, out, at);
}

static nb_status run_wait(const nb_kernel_call *c) {
  const nb_tensor *t = c->node;
  float *sum = c->in[0], *out = c->out;
  const nb_collective *coll = t->data;
  nb_status st = coll->iallreduce_wait(coll->ctx, sum);
  if (st) return st;
  const float scale = t->fp[0];
  const int64_t n = nb_tensor_numel(t);
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = sum[i] * scale;
  return NB_OK;
}

void nb_cpu_register_dist(nb_cpu_kernel_entry *t) {
  t[NB_OP_ALLREDUCE_START].run = run_start;
  t[NB_OP_ALLREDUCE_WAIT].run = run_wait;
}
