/* Partitioning a placed graph into segments.
 *
 * Phases (micro_batches M > 1 only). A pipelined step runs forward and backward
 * once per micro-batch and the update once. The compiler finds the split by
 * itself: a node is per-micro-batch (MP_MICRO) when it depends on an input
 * marked NB_MICRO_SPLIT and either feeds a parameter gradient (the raw
 * gradients autodiff flagged, NB_FLAG_PARAM_GRAD) or does not depend on one
 * (a loss, a count). What depends on the gradients without feeding them is
 * the update (MP_POST): clipping, the optimizer, and every assign. What the
 * micro-batches need and does not depend on them runs once before them
 * (MP_PRE). The update reads a per-micro-batch value only through an
 * accumulator: a gradient, or an assigned value such as a running
 * statistic, summed with weight 1/M over the micro-batches (the mean of the
 * micro-batch means is the mean over the whole batch).
 *
 * Levels. Within a phase, a node's level counts the device changes on the
 * longest path that reaches it: level = max over inputs of (input's level,
 * plus 1 if the input is on another device). Forward on cpu:0 is level 0,
 * forward and backward on cpu:1 level 1, backward on cpu:0 level 2. A
 * segment is the nodes of one (phase, level, device): it only reads
 * segments that run before it, so the segments in (phase, level, device)
 * order are a valid schedule, and the segments of one level on different
 * devices can run at once.
 *
 * Each segment becomes a graph of its own: clones of its nodes, a clone of
 * every input and constant it reads (each device gets its own copy), the
 * variables of its device, and a receive input for every value computed in
 * another segment (a transfer) or held by another device. Views are
 * recreated over the received data, so what moves is always whole, dense
 * storage. The sending node is marked as an output so its data survives
 * until it is sent. */
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "mplan.h"

static nb_status fail_node(nb_status st, const nb_tensor *t, const char *why) {
  return nb_error(st, "node %d (%s%s%s): %s", t->id, nb_op_def_get(t->op)->name, t->name ? " " : "",
                  t->name ? t->name : "", why);
}

/* ---- checks -------------------------------------------------------------------- */

static nb_status check_ops(const nb_plan *p, const nb_mplan *mp) {
  const nb_graph *g = p->g;
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i]) continue;
    if (t->op == NB_OP_ALLREDUCE_START || t->op == NB_OP_ALLREDUCE_WAIT)
      return fail_node(NB_ERR_UNSUPPORTED, t,
                       "data-parallel gradient averaging does not combine with device placement "
                       "or micro-batches yet");
    if (t->op == NB_OP_WRITE_AT)
      return fail_node(NB_ERR_UNSUPPORTED, t,
                       "write_at (KV caches) runs in single-device plans only: build the decode "
                       "graph without placement");
    for (int k = 0; k < t->n_in; k++) {
      const nb_tensor *o = mp_owner(t->in[k]);
      if (o->op == NB_OP_ASSIGN || o->op == NB_OP_WRITE_AT)
        return fail_node(NB_ERR_UNSUPPORTED, t,
                         "reads the result of an assign, which a multi-device plan does not "
                         "support: read the variable instead");
    }
  }
  return NB_OK;
}

/* ---- phases -------------------------------------------------------------------- */

static nb_status find_phases(const nb_plan *p, nb_mplan *mp) {
  const nb_graph *g = p->g;
  int n = g->n_nodes;
  int *ph = mp->node_phase;
  for (int i = 0; i < n; i++) ph[i] = mp->keep[i] && mp_is_computed(g->nodes[i]) ? MP_MICRO : -1;
  if (mp->M <= 1) return NB_OK;
  /* split: depends on a split input; taint: a raw gradient or depends on
   * one; anc: feeds a raw gradient; need: read by a micro-batch node */
  char *split = calloc((size_t)n, 1), *taint = calloc((size_t)n, 1);
  char *anc = calloc((size_t)n, 1), *need = calloc((size_t)n, 1), *grad = calloc((size_t)n, 1);
  nb_status st = NB_OK;
  if (!split || !taint || !anc || !need || !grad) {
    st = nb_error(NB_ERR_OOM, "partition: out of memory");
    goto done;
  }
  int any_split = 0;
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i]) continue;
    if (t->op == NB_OP_INPUT && t->micro == NB_MICRO_SPLIT) split[i] = any_split = 1;
    for (int k = 0; k < t->n_in; k++) split[i] |= split[t->in[k]->id];
  }
  if (!any_split) {
    st = nb_error(NB_ERR_INVALID_ARG,
                  "micro_batches = %d, but no input the plan reads is marked NB_MICRO_SPLIT "
                  "(nb_tensor_set_micro): nothing says how to split a batch",
                  mp->M);
    goto done;
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || !(t->flags & NB_FLAG_PARAM_GRAD)) continue;
    const nb_tensor *o = mp_owner(t);
    if (mp_is_computed(o) && split[o->id]) grad[o->id] = 1;
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i]) continue;
    taint[i] = grad[i];
    for (int k = 0; k < t->n_in; k++) taint[i] |= taint[t->in[k]->id];
  }
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i]) continue;
    anc[i] |= grad[i];
    if (anc[i])
      for (int k = 0; k < t->n_in; k++) anc[t->in[k]->id] = 1;
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (ph[i] < 0) continue;
    int dep_grad = 0;
    for (int k = 0; k < t->n_in; k++) dep_grad |= taint[t->in[k]->id];
    int micro = split[i] && (anc[i] || !dep_grad) && t->op != NB_OP_ASSIGN;
    ph[i] = micro ? MP_MICRO : MP_POST;
  }
  /* what micro-batches read and does not depend on them runs before them */
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || !(ph[i] == MP_MICRO || need[i])) continue;
    for (int k = 0; k < t->n_in; k++) need[t->in[k]->id] = 1;
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (ph[i] != MP_POST || !need[i] || t->op == NB_OP_ASSIGN) continue;
    int dep_grad = 0;
    for (int k = 0; k < t->n_in; k++) dep_grad |= taint[t->in[k]->id];
    if (!dep_grad) ph[i] = MP_PRE;
  }
done:
  free(split);
  free(taint);
  free(anc);
  free(need);
  free(grad);
  return st;
}

/* Which per-micro-batch values the update reads (accumulated), and that no
 * node reads a value of a later phase. */
static nb_status check_phases(const nb_plan *p, nb_mplan *mp) {
  const nb_graph *g = p->g;
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    int pj = mp->node_phase[i];
    if (pj < 0) continue;
    for (int k = 0; k < t->n_in; k++) {
      const nb_tensor *o = mp_owner(t->in[k]);
      if (o->op == NB_OP_INPUT && o->micro == NB_MICRO_SPLIT && pj != MP_MICRO)
        return fail_node(NB_ERR_INVALID_ARG, t,
                         "reads a micro-batch slice of a split input outside the micro-batches "
                         "(in the update): only the forward and backward passes run per "
                         "micro-batch");
      if (!mp_is_computed(o)) continue;
      int po = mp->node_phase[o->id];
      if (po == MP_MICRO && pj == MP_POST) {
        int ok = (o->flags & NB_FLAG_PARAM_GRAD) != 0;
        /* a raw gradient read through a view */
        for (int j = 0; !ok && j < g->n_nodes; j++)
          ok = mp->keep[j] && (g->nodes[j]->flags & NB_FLAG_PARAM_GRAD) &&
               mp_owner(g->nodes[j]) == o;
        ok = ok || (t->op == NB_OP_ASSIGN && k == 1);
        if (!ok) {
          char why[512];
          snprintf(why, sizeof why,
                   "reads node %d (%s), a per-micro-batch value, in the update that runs once "
                   "per step: only parameter gradients and assigned values are combined over "
                   "micro-batches",
                   o->id, nb_op_def_get(o->op)->name);
          return fail_node(NB_ERR_UNSUPPORTED, t, why);
        }
        if (o->dtype != NB_F32)
          return fail_node(NB_ERR_DTYPE, o,
                           "is summed over micro-batches for the update but is not f32");
        mp->acc[o->id] = 1;
      } else if (po > pj) {
        return fail_node(NB_ERR_INTERNAL, t, "reads a value of a later phase");
      }
    }
  }
  return NB_OK;
}

/* ---- levels and segments ------------------------------------------------------------ */

static void find_levels(const nb_plan *p, nb_mplan *mp) {
  const nb_graph *g = p->g;
  int n = g->n_nodes;
  int *lv = mp->node_level, *d = mp->node_dev, *ph = mp->node_phase;
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    lv[i] = 0;
    if (ph[i] < 0) continue;
    for (int k = 0; k < t->n_in; k++) {
      const nb_tensor *o = mp_owner(t->in[k]);
      if (!mp_is_computed(o) || ph[o->id] != ph[i]) continue;
      int l = lv[o->id] + (d[o->id] != d[i]);
      if (l > lv[i]) lv[i] = l;
    }
  }
  /* a recomputed node (recompute.c) reads values of the forward pass, so
   * the rule above puts it with them; it belongs just before its readers
   * (the backward pass on its device), or the recomputation would happen
   * in the forward segment and keep its results alive from there. Raised
   * to the lowest level its readers allow, last node first, so chains of
   * copies move together; its inputs' levels stay at or below it. */
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if (ph[i] < 0 || !(t->flags & NB_FLAG_RECOMPUTED)) continue;
    int best = -1;
    for (int j = i + 1; j < n; j++) {
      const nb_tensor *r = g->nodes[j];
      if (ph[j] != ph[i]) continue;
      for (int k = 0; k < r->n_in; k++)
        if (mp_owner(r->in[k]) == t) {
          int l = lv[j] - (d[j] != d[i]);
          if (best < 0 || l < best) best = l;
          break;
        }
    }
    if (best > lv[i]) lv[i] = best;
  }
  /* A cheap elementwise value that the rule above puts in an earlier
   * segment than all its readers (ReLU's gradient mask gt(y, 0) next to
   * y in the forward pass, an optimizer's b1 * m next to the parameters)
   * would be materialized there and handed over; computed just before its
   * readers instead, it fuses into their kernels. Only when that keeps
   * nothing else alive longer: each input is a leaf or is read at that
   * level anyway. Last node first, so chains move together. */
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if (ph[i] < 0 || (t->flags & NB_FLAG_OUTPUT) || t->base ||
        nb_op_def_get(t->op)->fusion != NB_FUSE_ELEMWISE)
      continue;
    int best = -1;
    for (int j = i + 1; j < n; j++) {
      const nb_tensor *r = g->nodes[j];
      if (ph[j] != ph[i] && ph[j] >= 0) {
        for (int k = 0; k < r->n_in && best != INT_MIN; k++)
          if (mp_owner(r->in[k]) == t) best = INT_MIN; /* read in another phase: stays */
        continue;
      }
      for (int k = 0; k < r->n_in && ph[j] >= 0; k++)
        if (mp_owner(r->in[k]) == t) {
          int l = lv[j] - (d[j] != d[i]);
          if (best < 0 || l < best) best = l;
          break;
        }
    }
    if (best <= lv[i]) continue;
    int ok = 1;
    for (int k = 0; ok && k < t->n_in; k++) {
      const nb_tensor *o = mp_owner(t->in[k]);
      if (!mp_is_computed(o)) continue;
      ok = 0; /* a computed input: only if another reader on t's device needs it that late */
      for (int j = o->id + 1; !ok && j < n; j++) {
        const nb_tensor *r = g->nodes[j];
        if (r == t || ph[j] != ph[i] || d[j] != d[i] || lv[j] < best) continue;
        for (int q = 0; !ok && q < r->n_in; q++) ok = mp_owner(r->in[q]) == o;
      }
    }
    if (ok) lv[i] = best;
  }
  /* a recomputed view (readers name its base as the owner) goes with its base */
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (ph[i] >= 0 && t->base && (t->flags & NB_FLAG_RECOMPUTED) && lv[t->base->id] > lv[i])
      lv[i] = lv[t->base->id];
  }
  /* an assign runs after every read of its variable on its device in its
   * phase (readers on other devices got the variable at the phase start) */
  for (int i = 0; i < n; i++) {
    const nb_tensor *a = g->nodes[i];
    if (ph[i] < 0 || a->op != NB_OP_ASSIGN) continue;
    for (int j = 0; j < n; j++) {
      const nb_tensor *r = g->nodes[j];
      if (ph[j] != ph[i] || d[j] != d[i] || r->op == NB_OP_ASSIGN) continue;
      for (int k = 0; k < r->n_in; k++)
        if (mp_owner(r->in[k]) == a->in[0] && lv[j] > lv[i]) lv[i] = lv[j];
    }
  }
}

static int seg_cmp(const void *a, const void *b) {
  const mp_seg *x = a, *y = b;
  if (x->phase != y->phase) return x->phase - y->phase;
  if (x->level != y->level) return x->level - y->level;
  return x->dev - y->dev;
}

static nb_status make_segments(const nb_plan *p, nb_mplan *mp) {
  const nb_graph *g = p->g;
  int n = g->n_nodes, cap = 8;
  mp->seg = calloc((size_t)cap, sizeof *mp->seg);
  if (!mp->seg) return nb_error(NB_ERR_OOM, "partition: out of memory");
  for (int i = 0; i < n; i++) {
    if (mp->node_phase[i] < 0) continue;
    mp_seg key = {.phase = mp->node_phase[i], .dev = mp->node_dev[i], .level = mp->node_level[i]};
    int s = 0;
    while (s < mp->n_seg && seg_cmp(&mp->seg[s], &key)) s++;
    if (s < mp->n_seg) continue;
    if (mp->n_seg == cap) {
      mp_seg *more = realloc(mp->seg, (size_t)(2 * cap) * sizeof *more);
      if (!more) return nb_error(NB_ERR_OOM, "partition: out of memory");
      mp->seg = more;
      cap *= 2;
    }
    mp->seg[mp->n_seg++] = key;
  }
  qsort(mp->seg, (size_t)mp->n_seg, sizeof *mp->seg, seg_cmp);
  for (int i = 0; i < n; i++) {
    mp->node_seg[i] = -1;
    if (mp->node_phase[i] < 0) continue;
    mp_seg key = {.phase = mp->node_phase[i], .dev = mp->node_dev[i], .level = mp->node_level[i]};
    for (int s = 0; s < mp->n_seg; s++)
      if (!seg_cmp(&mp->seg[s], &key)) mp->node_seg[i] = s;
  }
  for (int s = 0; s < mp->n_seg; s++) {
    mp_seg *S = &mp->seg[s];
    S->n_inst = mp->M > 1 && S->phase == MP_MICRO ? mp->M : 1;
    S->g = nb_graph_new();
    S->map = calloc((size_t)(n ? n : 1), sizeof *S->map);
    S->inst = calloc((size_t)S->n_inst, sizeof *S->inst);
    if (!S->g || !S->map || !S->inst) return nb_error(NB_ERR_OOM, "partition: out of memory");
  }
  return NB_OK;
}

/* ---- segment graphs ------------------------------------------------------------------- */

static nb_status add_xfer(nb_mplan *mp, mp_xfer x) {
  if (mp->n_xfer == mp->cap_xfer) {
    int cap = mp->cap_xfer ? 2 * mp->cap_xfer : 16;
    mp_xfer *more = realloc(mp->xfer, (size_t)cap * sizeof *more);
    if (!more) return nb_error(NB_ERR_OOM, "partition: out of memory");
    mp->xfer = more;
    mp->cap_xfer = cap;
  }
  mp->xfer[mp->n_xfer++] = x;
  return NB_OK;
}

static size_t bytes_of(const nb_tensor *t) {
  return (size_t)nb_tensor_numel(t) * nb_dtype_size(t->dtype);
}

/* A dense input of S receiving the data of user node t. */
static nb_tensor *receive(mp_seg *S, const nb_tensor *t, const char *what) {
  char name[96];
  snprintf(name, sizeof name, "%s.%d", what, t->id);
  return nb_input(S->g, name, t->dtype, t->ndim, t->shape);
}

static const char *acc_name(char *buf, size_t cap, const nb_tensor *t) {
  snprintf(buf, cap, "pipeline.acc.%d", t->id);
  return buf;
}

/* The accumulator of user node t (shaped like it) in graph g. */
static nb_tensor *accumulator(nb_graph *g, const nb_tensor *t) {
  char name[64];
  nb_init zeros = {NB_INIT_ZEROS, 0, 0, 0};
  nb_tensor *v = nb_variable(g, acc_name(name, sizeof name, t), NB_F32, t->ndim, t->shape, zeros);
  if (v) v->flags |= NB_FLAG_SCRATCH;
  return v;
}

static nb_tensor *materialize(nb_mplan *mp, int s, const nb_tensor *t);

/* A value of another segment (or device) that segment s reads. */
static nb_tensor *import(nb_mplan *mp, int s, const nb_tensor *t) {
  mp_seg *S = &mp->seg[s];
  nb_tensor *r = NULL;
  if (t->op == NB_OP_VARIABLE) {
    /* held by another device: sent at the start of the phase */
    r = receive(S, t, "recv");
    if (r && add_xfer(mp, (mp_xfer){.node = t,
                                    .src_seg = -1,
                                    .var = t->name,
                                    .dst_seg = s,
                                    .dst = r,
                                    .bytes = bytes_of(t),
                                    .cross = 1}))
      return NULL;
    return r;
  }
  int src = mp->node_seg[t->id];
  if (mp->seg[src].phase == MP_MICRO && S->phase == MP_POST && mp->M > 1) {
    /* the update reads the micro-batches' sum */
    if (mp->node_dev[t->id] == S->dev) return accumulator(S->g, t);
    r = receive(S, t, "recv");
    char name[64];
    acc_name(name, sizeof name, t);
    /* the name must outlive this call: the micro-batch segment's copy */
    const char *stored = NULL;
    for (int i = 0; i < mp->seg[src].g->n_nodes; i++) {
      const nb_tensor *v = mp->seg[src].g->nodes[i];
      if (v->op == NB_OP_VARIABLE && v->name && !strcmp(v->name, name)) stored = v->name;
    }
    if (!r || !stored) return NULL;
    if (add_xfer(mp, (mp_xfer){.node = t,
                               .src_seg = -1,
                               .var = stored,
                               .scratch = 1,
                               .dst_seg = s,
                               .dst = r,
                               .bytes = bytes_of(t),
                               .cross = 1}))
      return NULL;
    return r;
  }
  nb_tensor *x = mp->seg[src].map[t->id];
  if (!x) {
    nb_error(NB_ERR_INTERNAL, "partition: node %d is read before its segment is built", t->id);
    return NULL;
  }
  x->flags |= NB_FLAG_OUTPUT; /* kept until sent */
  r = receive(S, t, "recv");
  if (r && add_xfer(mp, (mp_xfer){.node = t,
                                  .src_seg = src,
                                  .src = x,
                                  .dst_seg = s,
                                  .dst = r,
                                  .bytes = bytes_of(t),
                                  .cross = mp->seg[src].dev != S->dev}))
    return NULL;
  return r;
}

static nb_tensor *materialize(nb_mplan *mp, int s, const nb_tensor *t) {
  mp_seg *S = &mp->seg[s];
  if (S->map[t->id]) return S->map[t->id];
  nb_tensor *r = NULL;
  if (t->op == NB_OP_INPUT || t->op == NB_OP_CONSTANT) {
    r = nb_node_clone(S->g, t, NULL, NULL);
  } else if (t->op == NB_OP_VARIABLE) {
    r = mp->node_dev[t->id] == S->dev ? nb_node_clone(S->g, t, NULL, NULL) : import(mp, s, t);
  } else if (t->base) {
    nb_tensor *in[4];
    if (t->n_in > 4) {
      nb_error(NB_ERR_INTERNAL, "partition: a view with %d inputs", t->n_in);
      return NULL;
    }
    for (int k = 0; k < t->n_in; k++)
      if (!(in[k] = materialize(mp, s, t->in[k]))) return NULL;
    nb_tensor *base = materialize(mp, s, t->base);
    if (!base) return NULL;
    r = nb_node_clone(S->g, t, in, base);
  } else if (mp->node_seg[t->id] == s) {
    nb_tensor **in = t->n_in ? malloc((size_t)t->n_in * sizeof *in) : NULL;
    if (t->n_in && !in) {
      nb_error(NB_ERR_OOM, "partition: out of memory");
      return NULL;
    }
    int ok = 1;
    for (int k = 0; ok && k < t->n_in; k++) ok = (in[k] = materialize(mp, s, t->in[k])) != NULL;
    if (ok) r = nb_node_clone(S->g, t, in, NULL);
    free(in);
    if (r && (t->flags & NB_FLAG_OUTPUT)) r->flags |= NB_FLAG_OUTPUT;
  } else {
    r = import(mp, s, t);
  }
  if (!r && nb_graph_status(S->g) == NB_OK && !*nb_last_error())
    nb_error(NB_ERR_INTERNAL, "partition: node %d could not be placed", t->id);
  S->map[t->id] = r;
  return r;
}

/* The update of a micro-batch segment's accumulators: acc = (first ? 0 :
 * acc) + x / M, as graph ops of the segment. */
static nb_status add_accumulators(nb_mplan *mp, int s, const nb_graph *p_graph) {
  int n = p_graph->n_nodes;
  mp_seg *S = &mp->seg[s];
  nb_graph *g = S->g;
  for (int i = 0; i < n; i++) {
    if (!mp->acc[i] || mp->node_seg[i] != s) continue;
    nb_tensor *x = S->map[i];
    if (!S->first) S->first = nb_input(g, "pipeline.first", NB_F32, 0, NULL);
    nb_tensor *acc = accumulator(g, nb_graph_node(p_graph, i));
    nb_tensor *kept = nb_where(g, S->first, nb_scalar(g, 0.0f), acc);
    nb_tensor *upd = nb_add(g, kept, nb_mul(g, x, nb_scalar(g, 1.0f / (float)mp->M)));
    nb_assign(g, acc, upd);
    S->n_acc++;
  }
  nb_status st = nb_graph_status(g);
  if (st) return nb_error(st, "partition: accumulators: %s", nb_graph_error(g));
  return NB_OK;
}

nb_status nb_mp_partition(nb_plan *p, nb_mplan *mp) {
  const nb_graph *g = p->g;
  int n = g->n_nodes;
  nb_status st = check_ops(p, mp);
  if (!st) st = find_phases(p, mp);
  if (!st) st = check_phases(p, mp);
  if (st) return st;
  find_levels(p, mp);
  st = make_segments(p, mp);
  for (int s = 0; !st && s < mp->n_seg; s++) {
    for (int i = 0; !st && i < n; i++) {
      if (mp->node_seg[i] != s) continue;
      if (!materialize(mp, s, g->nodes[i])) {
        nb_status gs = nb_graph_status(mp->seg[s].g);
        st = gs ? nb_error(gs, "%s", nb_graph_error(mp->seg[s].g))
                : nb_error(NB_ERR_INTERNAL, "partition: %s", nb_last_error());
      }
    }
    if (!st && mp->M > 1 && mp->seg[s].phase == MP_MICRO) st = add_accumulators(mp, s, g);
  }
  /* outputs that are views: readable in the segment that owns their data */
  for (int i = 0; !st && i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || !(t->flags & NB_FLAG_OUTPUT) || !t->base) continue;
    const nb_tensor *o = mp_owner(t);
    int s = mp_is_computed(o) ? mp->node_seg[o->id] : -1;
    for (int j = 0; s < 0 && j < mp->n_seg; j++)
      if (mp->seg[j].map[o->id] ||
          (o->op == NB_OP_VARIABLE && mp->seg[j].dev == mp->node_dev[o->id]))
        s = j;
    if (s < 0) s = 0;
    nb_tensor *r = materialize(mp, s, t);
    if (!r)
      st = nb_error(NB_ERR_INTERNAL, "partition: output %d: %s", i, nb_last_error());
    else
      r->flags |= NB_FLAG_OUTPUT;
  }
  return st;
}
