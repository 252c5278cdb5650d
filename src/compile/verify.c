/* Pass 1: verify that the graph is well formed before anything is planned:
 * topological order, known ops, and shapes that re-infer identically. */
#include <string.h>

#include "compile_internal.h"

nb_status nb_pass_verify(nb_plan *p) {
  nb_graph *g = p->g;
  if (g->status != NB_OK)
    return nb_error(g->status, "the graph has an error from building it: %s", g->error);
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if ((int)t->op < 0 || t->op >= NB_OP_COUNT)
      return nb_error(NB_ERR_INTERNAL, "node %d has unknown op %d", i, (int)t->op);
    const nb_op_def *def = nb_op_def_get(t->op);
    for (int k = 0; k < t->n_in; k++)
      if (!t->in[k] || t->in[k]->id >= t->id || t->in[k]->graph != g)
        return nb_error(NB_ERR_INTERNAL, "node %d (%s): input %d is not an earlier node", i,
                        def->name, k);
    if (t->n_in == 0 || !def->infer) continue;
    nb_tensor copy = *t;
    nb_status st = def->infer(&copy);
    if (st != NB_OK) return nb_error(st, "node %d (%s): %s", i, def->name, nb_last_error());
    int same = copy.dtype == t->dtype && copy.ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = copy.shape[d] == t->shape[d];
    if (!same)
      return nb_error(NB_ERR_INTERNAL, "node %d (%s): stored shape differs from re-inferred shape",
                      i, def->name);
  }
  return NB_OK;
}
