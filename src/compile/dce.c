/* Pass 2: dead-node elimination. Keeps what the outputs and assigns need. */
#include "compile_internal.h"

nb_status nb_pass_dce(nb_plan *p) {
  nb_graph *g = p->g;
  int roots = 0;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    /* side effects are roots even when nothing reads them */
    if ((t->flags & NB_FLAG_OUTPUT) || t->op == NB_OP_ASSIGN || t->op == NB_OP_WRITE_AT) {
      p->info[i].keep = 1;
      p->info[i].output = (t->flags & NB_FLAG_OUTPUT) != 0;
      roots++;
    }
    if (!p->info[i].keep) continue;
    for (int k = 0; k < t->n_in; k++) p->info[t->in[k]->id].keep = 1;
    if (t->base) p->info[t->base->id].keep = 1;
  }
  if (!roots)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nothing to compute: mark results with nb_tensor_set_output() or add an "
                    "nb_assign() before nb_compile()");
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!p->info[i].keep) continue;
    for (int k = 0; k < t->n_in; k++) p->info[nb_storage_of(t->in[k])->id].n_consumers++;
  }
  return NB_OK;
}
