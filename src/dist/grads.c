/* Gradient averaging for data-parallel training: the gradients, grouped into
 * buckets, each averaged by one nb_allreduce_mean. Like clipping, it runs
 * inside the compiled step and replaces nb_graph_grad() of each parameter,
 * so clipping and the optimizer that follow see the averaged gradient. */
#include <stdlib.h>

#include "../graph/graph_internal.h"
#include "dist_internal.h"
#include "nabla/dist.h"

/* The graph builds the ops; they reach d only through its table
 * (src/core/collective.h), so the graph layer does not call src/dist. A
 * NULL d gives a NULL table, which the graph side reports. */
nb_status nb_allreduce_mean(nb_graph *g, nb_dist *d, int n, nb_tensor *const *xs,
                            nb_tensor **outs) {
  return nb_graph_allreduce_mean(g, nb_dist_collective(d), n, xs, outs);
}

size_t nb_dist_default_bucket_bytes(void) {
  const char *v = getenv("NABLA_DIST_BUCKET_KB");
  if (v && *v) {
    char *end = NULL;
    long long kb = strtoll(v, &end, 10);
    if (end && !*end && kb > 0) return (size_t)kb * 1024u;
  }
  return (size_t)1 << 20;
}

static int has_grad(const nb_tensor *p) {
  return p->op == NB_OP_VARIABLE && (p->flags & NB_FLAG_REQUIRES_GRAD) && p->grad;
}

/* by gradient node id: the order backward finishes them in */
static int by_grad_id(const void *a, const void *b) {
  const nb_tensor *x = *(nb_tensor *const *)a, *y = *(nb_tensor *const *)b;
  return (x->grad->id > y->grad->id) - (x->grad->id < y->grad->id);
}

nb_status nb_dist_average_grads(nb_graph *g, nb_dist *d, size_t bucket_bytes, int *n_buckets) {
  if (n_buckets) *n_buckets = 0;
  if (!g || !d) return nb_error(NB_ERR_INVALID_ARG, "average_grads: NULL graph or communicator");
  if (g->status) return nb_error(g->status, "average_grads: the graph has an error: %s", g->error);
  if (!bucket_bytes) bucket_bytes = nb_dist_default_bucket_bytes();
  int n = g->n_nodes, count = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (!has_grad(p)) continue;
    if (p->grad->dtype != NB_F32)
      return nb_error(NB_ERR_DTYPE, "average_grads: gradient of '%s' is %s; only f32 is reduced",
                      p->name ? p->name : "", nb_dtype_name(p->grad->dtype));
    count++;
  }
  if (!count)
    return nb_error(NB_ERR_STATE, "average_grads: no variable has a gradient; call "
                                  "nb_graph_backward() first");
  nb_tensor **params = malloc(3 * (size_t)count * sizeof *params);
  if (!params) return nb_error(NB_ERR_OOM, "average_grads: out of memory");
  nb_tensor **grads = params + count, **outs = params + 2 * count;
  count = 0;
  for (int i = 0; i < n; i++)
    if (has_grad(g->nodes[i])) params[count++] = g->nodes[i];
  /* Every rank builds the same graph, so every rank gets the same buckets
   * in the same order: the reductions match up without any negotiation. */
  qsort(params, (size_t)count, sizeof *params, by_grad_id);
  for (int i = 0; i < count; i++) grads[i] = params[i]->grad;
  nb_status st = NB_OK;
  int buckets = 0;
  for (int first = 0; !st && first < count;) {
    size_t bytes = 0;
    int last = first;
    while (last < count) {
      size_t b = (size_t)nb_tensor_numel(grads[last]) * sizeof(float);
      if (last > first && bytes + b > bucket_bytes) break;
      bytes += b;
      last++;
    }
    st = nb_allreduce_mean(g, d, last - first, grads + first, outs + first);
    buckets++;
    first = last;
  }
  /* replace only once all buckets are built, so a failure changes nothing */
  if (!st)
    for (int i = 0; i < count; i++) params[i]->grad = outs[i];
  free(params);
  if (st) return nb_error(st, "average_grads: %s", g->error);
  if (n_buckets) *n_buckets = buckets;
  return NB_OK;
}
