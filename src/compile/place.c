/* Placement: the device of every kept node of a model-parallel graph.
 *
 * Nodes placed by the caller (nb_tensor_set_device, a placement scope, a
 * model file's `device` key) keep their device; autodiff already put each
 * gradient with its forward node. The rest follow rules chosen so that an
 * unplaced node never causes a transfer it could avoid:
 *
 *   1. a variable the state already holds stays on that device;
 *   2. a view goes with the data it views, an assign (and its variable's
 *      writes) with its variable: data never moves to be viewed or written;
 *   3. an op goes with its first placed variable input (a layer runs where
 *      its weights are), else with its first placed input (forward, in
 *      creation order), so a chain of unplaced ops follows the layer that
 *      feeds it;
 *   4. what is still unplaced goes with its first reader (backward), so a
 *      variable created by an optimizer sits beside its gradient;
 *   5. the rest runs on the compiling backend (device 0).
 *
 * Inputs and constants have no device: every device that reads one gets
 * its own copy, so fed data never needs a transfer. */
#include <stdlib.h>
#include <string.h>

#include "mplan.h"

/* Device index of a canonical name, adding it. */
static int dev_index(nb_plan *p, nb_mplan *mp, const char *name, const nb_tensor *who, int *out) {
  for (int i = 0; i < mp->n_dev; i++)
    if (!strcmp(mp->dev[i]->name, name)) {
      *out = i;
      return NB_OK;
    }
  nb_backend *be = NULL;
  nb_status st = nb_state_device(p->st, name, &be);
  if (st) {
    char msg[768];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    if (who)
      return nb_error(st, "node %d (%s%s%s) is placed on %s: %s", who->id,
                      nb_op_def_get(who->op)->name, who->name ? " " : "",
                      who->name ? who->name : "", name, msg);
    return nb_error(st, "%s", msg);
  }
  for (int i = 0; i < mp->n_dev; i++)
    if (mp->dev[i] == be) { /* two spellings of one device */
      *out = i;
      return NB_OK;
    }
  nb_backend **d = realloc(mp->dev, (size_t)(mp->n_dev + 1) * sizeof *d);
  if (!d) return nb_error(NB_ERR_OOM, "placement: out of memory");
  mp->dev = d;
  mp->dev[mp->n_dev] = be;
  *out = mp->n_dev++;
  return NB_OK;
}

static int is_view(const nb_tensor *t) { return t->base != NULL; }
static int with_variable(const nb_tensor *t) {
  return t->op == NB_OP_ASSIGN || t->op == NB_OP_WRITE_AT;
}

nb_status nb_mp_place(nb_plan *p, nb_mplan *mp) {
  nb_graph *g = p->g;
  int n = g->n_nodes;
  int *d = mp->node_dev;
  mp->dev = malloc(sizeof *mp->dev);
  if (!mp->dev) return nb_error(NB_ERR_OOM, "placement: out of memory");
  mp->dev[0] = p->be;
  mp->n_dev = 1;
  nb_status st = NB_OK;
  /* explicit placements, and variables the state already holds (rule 1) */
  for (int i = 0; i < n && !st; i++) {
    const nb_tensor *t = g->nodes[i];
    d[i] = -1;
    if (!mp->keep[i]) continue;
    if (t->device) {
      st = dev_index(p, mp, g->devices[t->device - 1], t, &d[i]);
    } else if (t->op == NB_OP_VARIABLE) {
      const nb_state_var *v = nb_state_find(p->st, t->name);
      if (v) st = dev_index(p, mp, v->be->name, t, &d[i]);
    }
  }
  if (st) return st;
  /* consumers of each node, for rule 4 */
  int *count = calloc((size_t)n + 1, sizeof *count);
  int *first = calloc((size_t)n + 1, sizeof *first);
  int total = 0;
  for (int i = 0; i < n; i++)
    if (mp->keep[i]) total += g->nodes[i]->n_in;
  int *readers = calloc((size_t)(total ? total : 1), sizeof *readers);
  if (!count || !first || !readers) {
    free(count);
    free(first);
    free(readers);
    return nb_error(NB_ERR_OOM, "placement: out of memory");
  }
  for (int i = 0; i < n; i++)
    if (mp->keep[i])
      for (int k = 0; k < g->nodes[i]->n_in; k++) count[g->nodes[i]->in[k]->id + 1]++;
  for (int i = 0; i < n; i++) first[i + 1] = first[i] + count[i + 1];
  memset(count, 0, ((size_t)n + 1) * sizeof *count);
  for (int i = 0; i < n; i++)
    if (mp->keep[i])
      for (int k = 0; k < g->nodes[i]->n_in; k++) {
        int x = g->nodes[i]->in[k]->id;
        readers[first[x] + count[x]++] = i;
      }
  /* rules 2 and 3, forward */
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || mp_is_leaf(t)) continue;
    if (is_view(t) || with_variable(t)) {
      if (d[t->in[0]->id] >= 0) d[i] = d[t->in[0]->id];
      continue;
    }
    for (int k = 0; d[i] < 0 && k < t->n_in; k++)
      if (mp_owner(t->in[k])->op == NB_OP_VARIABLE) d[i] = d[t->in[k]->id];
    for (int k = 0; d[i] < 0 && k < t->n_in; k++) d[i] = d[t->in[k]->id];
  }
  /* rule 4, backward: an assign's variable follows the value written */
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || d[i] >= 0 || t->op == NB_OP_INPUT || t->op == NB_OP_CONSTANT) continue;
    for (int r = first[i]; d[i] < 0 && r < first[i + 1]; r++) {
      const nb_tensor *c = g->nodes[readers[r]];
      if (with_variable(c) && c->in[0] == t && d[c->in[1]->id] >= 0)
        d[i] = d[c->in[1]->id];
      else
        d[i] = d[c->id];
    }
  }
  free(count);
  free(first);
  free(readers);
  /* rule 5, then rule 2 again: a view, an assign and a write with their data */
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || t->op == NB_OP_INPUT || t->op == NB_OP_CONSTANT) continue;
    if (d[i] < 0) d[i] = 0;
    if (is_view(t) || with_variable(t)) d[i] = d[t->in[0]->id] >= 0 ? d[t->in[0]->id] : d[i];
  }
  return NB_OK;
}
