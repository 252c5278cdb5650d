/* Recomputation (activation checkpointing): segments of the forward graph
 * whose inner values are rebuilt for the backward pass instead of kept.
 *
 * Why in autodiff and not in the memory planner: a value is kept when a
 * gradient node reads it, and the backward rules read the forward nodes
 * they differentiate. So autodiff, on reaching a segment, appends a copy of
 * the segment's nodes (reading the segment's inputs, which stay alive) and
 * runs the segment's backward rules on the copies. The first copies then
 * have no reader after the forward pass and the liveness planner reuses
 * their memory; the copies live from the recomputation to the segment's
 * last gradient. Node order is execution order, so appending the copies
 * when the backward pass reaches the segment is exactly "recompute right
 * before use". The copies are ordinary nodes: fused, planned and placed
 * like any other, and the compiler's dead-code pass drops those no
 * gradient reads. */
#include <string.h>

#include "graph_internal.h"

static nb_status segment_state_error(nb_graph *g, const char *fn, const char *why) {
  nb_status st = nb_error(NB_ERR_STATE, "%s: %s", fn, why);
  nb_graph_fail(g, st);
  return st;
}

nb_status nb_graph_recompute_begin(nb_graph *g) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_recompute_begin: graph is NULL");
  if (g->status)
    return nb_error(g->status, "nb_graph_recompute_begin: the graph has an earlier error: %s",
                    g->error);
  if (g->segment_open)
    return segment_state_error(g, "nb_graph_recompute_begin",
                               "a recompute segment is already open (segments do not nest)");
  g->segment_open = ++g->n_segments;
  return NB_OK;
}

nb_status nb_graph_recompute_end(nb_graph *g) {
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "nb_graph_recompute_end: graph is NULL");
  if (!g->segment_open && g->status)
    return nb_error(g->status, "nb_graph_recompute_end: the graph has an earlier error: %s",
                    g->error);
  if (!g->segment_open)
    return segment_state_error(g, "nb_graph_recompute_end", "no recompute segment is open");
  g->segment_open = 0;
  return NB_OK;
}

int nb_graph_recompute_open(const nb_graph *g) { return g && g->segment_open != 0; }

/* Nodes that are not recomputed: leaves are the segment's inputs by
 * definition, and a side effect (an assign, a cache write, a reduction
 * across processes) must happen once; a copy reads the original. */
static int kept_as_is(const nb_tensor *t) {
  switch (t->op) {
  case NB_OP_ASSIGN:
  case NB_OP_WRITE_AT:
  case NB_OP_ALLREDUCE_START:
  case NB_OP_ALLREDUCE_WAIT: return 1;
  default: return t->n_in == 0;
  }
}

nb_status nb_recompute_segment(nb_graph *g, int segment, int n, nb_tensor **map) {
  int first = -1, last = -1;
  for (int i = 0; i < n; i++)
    if (g->nodes[i]->segment == segment) {
      if (first < 0) first = i;
      last = i;
    }
  nb_tensor *ins[8]; /* most ops read fewer; nb_node_clone copies them */
  for (int i = first; first >= 0 && i <= last; i++) {
    nb_tensor *t = g->nodes[i];
    map[i] = t;
    if (t->segment != segment || kept_as_is(t)) continue;
    nb_tensor **in = t->n_in <= (int)(sizeof ins / sizeof ins[0])
                         ? ins
                         : nb_graph_alloc(g, (size_t)t->n_in * sizeof *in);
    if (!in) return nb_error(NB_ERR_OOM, "nb_graph_backward: out of memory");
    for (int k = 0; k < t->n_in; k++) {
      nb_tensor *x = t->in[k];
      in[k] = x->id >= first && x->id <= last ? map[x->id] : x;
    }
    nb_tensor *base = t->base;
    if (base && base->id >= first && base->id <= last) base = map[base->id];
    nb_tensor *c = nb_node_clone(g, t, in, base);
    if (!c) return nb_error(g->status, "%s", g->error);
    /* the copy runs where the original did, answers to no name (lookups
     * by name find the original) and belongs to no segment */
    c->device = t->device;
    c->name = NULL;
    c->segment = 0;
    c->flags |= NB_FLAG_RECOMPUTED;
    map[i] = c;
  }
  return NB_OK;
}
