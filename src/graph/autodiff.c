/* Reverse-mode automatic differentiation: appends gradient nodes to the
 * graph that holds the forward nodes. */
#include <stdlib.h>

#include "graph_internal.h"

nb_status nb_graph_backward(nb_graph *g, nb_tensor *loss) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_backward: graph is NULL");
  if (g->status != NB_OK)
    return nb_error(g->status, "nb_graph_backward: the graph has an earlier error: %s", g->error);
  if (!loss || loss->graph != g)
    return nb_error(NB_ERR_INVALID_ARG, "nb_graph_backward: loss is NULL or from another graph");
  if (nb_tensor_numel(loss) != 1 || loss->dtype != NB_F32) {
    char s[128];
    return nb_error(NB_ERR_SHAPE, "nb_graph_backward: loss must be a single f32 value, got %s %s",
                    nb_dtype_name(loss->dtype), nb_shape_str(loss->ndim, loss->shape, s, sizeof s));
  }
  if (g->segment_open)
    return nb_error(NB_ERR_STATE, "nb_graph_backward: a recompute segment is still open (call "
                                  "nb_graph_recompute_end first)");
  int n = loss->id + 1;
  /* Forward sweep: which nodes lie on a path from a leaf that wants a grad. */
  for (int i = 0; i < g->n_nodes; i++) {
    nb_tensor *t = g->nodes[i];
    t->flags &= ~(unsigned)NB_FLAG_NEEDS_GRAD;
    t->grad = NULL;
    if (t->flags & NB_FLAG_REQUIRES_GRAD) t->flags |= NB_FLAG_NEEDS_GRAD;
    if (t->op == NB_OP_ASSIGN) continue;
    for (int k = 0; k < t->n_in; k++)
      if (nb_needs_grad(t->in[k])) t->flags |= NB_FLAG_NEEDS_GRAD;
  }
  nb_tensor **grads = calloc((size_t)n, sizeof *grads);
  int *dev = malloc((size_t)n * sizeof *dev);
  /* recomputation (recompute.c): the copy each node's backward rule runs
   * on (the node itself outside segments), and which segments are copied */
  nb_tensor **self = malloc((size_t)n * sizeof *self);
  unsigned char *copied = calloc((size_t)g->n_segments + 1, 1);
  nb_tensor **gin = NULL;
  if (!grads || !dev || !self || !copied) {
    free(grads);
    free(dev);
    free(self);
    free(copied);
    return nb_error(NB_ERR_OOM, "nb_graph_backward: out of memory");
  }
  for (int i = 0; i < n; i++) self[i] = g->nodes[i];
  /* Placement: a backward rule builds its gradients on the device of the
   * forward node it differentiates, and the sum of a tensor's contributions
   * lives with the tensor, so the backward pass mirrors the forward split. */
  nb_place_forward(g, n, dev);
  const int scope = g->scope_device;
  g->scope_device = dev[loss->id];
  /* gradient ops take the dtypes of their forward ops (autocast.c), not
   * whatever autocast scope is open now */
  const nb_dtype autocast = g->autocast;
  g->autocast = NB_F32;
  grads[loss->id] = nb_broadcast_to(g, nb_scalar(g, 1.0f), loss->ndim, loss->shape);
  nb_status st = NB_OK;
  for (int i = n - 1; i >= 0 && st == NB_OK; i--) {
    nb_tensor *t = g->nodes[i];
    nb_tensor *gout = grads[i];
    if (!gout || !nb_needs_grad(t) || t->n_in == 0) continue;
    const nb_op_def *def = nb_op_def_get(t->op);
    if (!def->backward) {
      st = nb_error(NB_ERR_UNSUPPORTED, "nb_graph_backward: op %s (node %d) has no gradient yet",
                    def->name, t->id);
      break;
    }
    free(gin);
    gin = calloc((size_t)t->n_in, sizeof *gin);
    if (!gin) {
      st = nb_error(NB_ERR_OOM, "nb_graph_backward: out of memory");
      break;
    }
    g->scope_device = dev[t->id];
    if (t->segment && !copied[t->segment]) {
      /* the first gradient of a segment: its forward again, from here */
      copied[t->segment] = 1;
      st = nb_recompute_segment(g, t->segment, n, self);
      if (st) break;
    }
    /* the rule reads the recomputed copy; its gin[k] is for input k of
     * both the copy and t */
    st = def->backward(g, self[i], gout, gin);
    if (st == NB_OK && g->status != NB_OK) st = nb_error(g->status, "%s", g->error);
    for (int k = 0; st == NB_OK && k < t->n_in; k++) {
      nb_tensor *x = t->in[k];
      if (!gin[k] || !nb_needs_grad(x)) continue;
      /* a tensor used twice accumulates both contributions */
      g->scope_device = dev[x->id];
      grads[x->id] = grads[x->id] ? nb_add(g, grads[x->id], gin[k]) : gin[k];
      if (!grads[x->id]) st = nb_error(g->status, "%s", g->error);
    }
  }
  g->scope_device = scope;
  g->autocast = autocast;
  if (st == NB_OK)
    for (int i = 0; i < n; i++) {
      nb_tensor *t = g->nodes[i];
      t->grad = grads[i];
      if (t->op == NB_OP_VARIABLE && grads[i]) grads[i]->flags |= NB_FLAG_PARAM_GRAD;
    }
  free(gin);
  free(grads);
  free(dev);
  free(self);
  free(copied);
  if (st != NB_OK) nb_graph_fail(g, st);
  return st;
}

nb_tensor *nb_graph_grad(const nb_graph *g, const nb_tensor *t) {
  if (!g || !t || t->graph != g) return NULL;
  return t->grad;
}
