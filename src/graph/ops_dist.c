/* Data-parallel gradient averaging as graph ops, so the reduction is part of
 * the compiled training step (nb_allreduce_mean in dist.h builds on this):
 *
 * - NB_OP_ALLREDUCE_START (x_1 ... x_n) -> flat [sum of numels]: copies the
 *   tensors into one buffer (a bucket) and starts a non-blocking sum of it
 *   over the ranks. The buffer is the node's own arena region, which the
 *   memory plan keeps alive until the wait reads it, so nothing else writes
 *   it while the reduction runs.
 * - NB_OP_ALLREDUCE_WAIT (start) -> flat: waits for that sum and scales it
 *   by fp[0] = 1 / ranks. The caller's results are slice views of it.
 *
 * Both nodes' `data` is the communicator's table (src/core/collective.h),
 * which the kernels call and which gives the number of ranks: the graph
 * layer never calls src/dist (arrows point down).
 *
 * Two nodes rather than one so that the scheduler can launch the start as
 * soon as its inputs exist and the wait only when its result is needed
 * (memplan.c); whatever runs between them overlaps the communication.
 * Neither has a backward rule: gradients are not differentiated again. */
#include "../core/collective.h"
#include "graph_internal.h"

static nb_status infer_start(nb_tensor *t) {
  if (t->n_in < 1) return nb_error(NB_ERR_INVALID_ARG, "needs at least one tensor");
  int64_t total = 0;
  for (int i = 0; i < t->n_in; i++) {
    const nb_tensor *x = t->in[i];
    if (x->dtype != NB_F32)
      return nb_error(NB_ERR_DTYPE, "tensor %d has dtype %s, expected f32", i,
                      nb_dtype_name(x->dtype));
    total += nb_shape_numel(x->ndim, x->shape);
  }
  t->dtype = NB_F32;
  t->ndim = 1;
  t->shape[0] = total;
  return NB_OK;
}

static nb_status infer_wait(nb_tensor *t) {
  const nb_tensor *s = t->in[0];
  if (s->op != NB_OP_ALLREDUCE_START)
    return nb_error(NB_ERR_INVALID_ARG, "input is a %s, not an allreduce_start",
                    nb_op_def_get(s->op)->name);
  t->dtype = NB_F32;
  t->ndim = 1;
  t->shape[0] = s->shape[0];
  return NB_OK;
}

void nb_register_ops_dist(nb_op_def *t) {
  t[NB_OP_ALLREDUCE_START] = (nb_op_def){"allreduce_start", NB_FUSE_OPAQUE, infer_start, NULL};
  t[NB_OP_ALLREDUCE_WAIT] = (nb_op_def){"allreduce_wait", NB_FUSE_OPAQUE, infer_wait, NULL};
}

nb_status nb_graph_allreduce_mean(nb_graph *g, const nb_collective *c, int n, nb_tensor *const *xs,
                                  nb_tensor **outs) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "allreduce_mean: graph is NULL");
  if (!c || n < 1 || !xs || !outs)
    return nb_graph_set_error(g, NB_ERR_INVALID_ARG,
                              "allreduce_mean: needs a communicator, n >= 1 tensors and outs");
  for (int i = 0; i < n; i++) outs[i] = NULL;
  if (!nb_check_inputs(g, NB_OP_ALLREDUCE_START, n, xs)) return nb_graph_status(g);
  nb_tensor **in = nb_graph_alloc(g, (size_t)n * sizeof *in);
  if (!in) return nb_graph_set_error(g, NB_ERR_OOM, "allreduce_mean: out of memory");
  /* the kernel packs with plain copies */
  for (int i = 0; i < n; i++) in[i] = nb_contiguous(g, xs[i]);
  nb_tensor *start = nb_node_new(g, NB_OP_ALLREDUCE_START, n, in, NULL, 0, NULL, 0);
  if (!start) return nb_graph_status(g);
  /* the kernels call the table and never write it */
  start->data = (void *)c;
  float scale = 1.0f / (float)c->size;
  nb_tensor *wait = nb_node_new(g, NB_OP_ALLREDUCE_WAIT, 1, &start, NULL, 0, &scale, 1);
  if (!wait) return nb_graph_status(g);
  wait->data = (void *)c;
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    const nb_tensor *x = xs[i];
    int64_t k = nb_shape_numel(x->ndim, x->shape);
    outs[i] = nb_reshape(g, nb_slice(g, wait, 0, at, at + k, 1), x->ndim, x->shape);
    at += k;
  }
  return nb_graph_status(g);
}
