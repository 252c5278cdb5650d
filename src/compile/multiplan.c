/* Plans over several devices and micro-batches: compiling the segments of
 * a partitioned graph (partition.c), running them in order or with one
 * thread per device, and the plan functions (inputs, outputs, statistics).
 *
 * A run goes phase by phase (before the micro-batches, the micro-batches,
 * the update). At the start of a phase the variables that other devices
 * read are sent. Then the phase's tasks run: a task is one instance of a
 * segment (micro-batch i of a micro-batch segment), and right after it the
 * values other segments read from it are copied into their receive inputs.
 * In order (sequential), the tasks run by (level, micro-batch, device), or,
 * with micro-batches, in the 1F1B order of pipeline.c. With one thread per
 * device, each device runs its own tasks in that same order, waiting only
 * for the tasks whose values it reads: device 1 works on micro-batch i
 * while device 0 already computes micro-batch i + 1. Every device does the
 * same arithmetic in the same order either way, so the two agree exactly
 * when each device's kernels use the same thread counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mplan.h"

/* ---- when it is needed ------------------------------------------------------------ */

int nb_mp_wanted(const nb_graph *g, const nb_backend *be, const nb_state *st,
                 const nb_compile_options *opt) {
  if (opt->micro_batches > 1) return 1;
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (t->device && strcmp(g->devices[t->device - 1], be->name)) return 1;
    if (t->op == NB_OP_VARIABLE && st->n_dev > 1) {
      const nb_state_var *v = nb_state_find(st, t->name);
      if (v && v->be != be) return 1;
    }
  }
  return 0;
}

/* ---- compiling ---------------------------------------------------------------------- */

static nb_status find_kept(const nb_graph *g, char *keep) {
  int roots = 0;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    const nb_tensor *t = g->nodes[i];
    if ((t->flags & NB_FLAG_OUTPUT) || t->op == NB_OP_ASSIGN || t->op == NB_OP_WRITE_AT) {
      keep[i] = 1;
      roots++;
    }
    if (!keep[i]) continue;
    for (int k = 0; k < t->n_in; k++) keep[t->in[k]->id] = 1;
    if (t->base) keep[t->base->id] = 1;
  }
  if (!roots)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nothing to compute: mark results with nb_tensor_set_output() or add an "
                    "nb_assign() before nb_compile()");
  return NB_OK;
}

static nb_status add_task(nb_mplan *mp, int s, int i, int *cap) {
  if (mp->n_task == *cap) {
    *cap = *cap ? 2 * *cap : 32;
    mp_task *more = realloc(mp->task, (size_t)*cap * sizeof *more);
    if (!more) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
    mp->task = more;
  }
  mp_task *t = &mp->task[mp->n_task++];
  memset(t, 0, sizeof *t);
  t->seg = s;
  t->inst = i;
  t->dev = mp->seg[s].dev;
  t->phase = mp->seg[s].phase;
  return NB_OK;
}

static int task_of(const nb_mplan *mp, int s, int i) {
  for (int t = 0; t < mp->n_task; t++)
    if (mp->task[t].seg == s && mp->task[t].inst == i) return t;
  return -1;
}

/* Tasks in run order: phase, level, micro-batch, device. */
static nb_status make_tasks(nb_mplan *mp) {
  int cap = 0;
  for (int ph = 0; ph < MP_PHASES; ph++) {
    mp->phase_first[ph] = mp->n_task;
    int max_level = -1;
    for (int s = 0; s < mp->n_seg; s++)
      if (mp->seg[s].phase == ph && mp->seg[s].level > max_level) max_level = mp->seg[s].level;
    for (int l = 0; l <= max_level; l++)
      for (int i = 0; i < mp->M; i++)
        for (int s = 0; s < mp->n_seg; s++) {
          const mp_seg *S = &mp->seg[s];
          if (S->phase != ph || S->level != l || i >= S->n_inst) continue;
          nb_status st = add_task(mp, s, i, &cap);
          if (st) return st;
        }
  }
  mp->phase_first[MP_PHASES] = mp->n_task;
  for (int t = 0; t < mp->n_task; t++) {
    mp_task *T = &mp->task[t];
    T->dep = malloc((size_t)(mp->n_xfer ? mp->n_xfer : 1) * sizeof *T->dep);
    if (!T->dep) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
    for (int x = 0; x < mp->n_xfer; x++) {
      const mp_xfer *X = &mp->xfer[x];
      if (X->dst_seg != T->seg || X->src_seg < 0 || mp->seg[X->src_seg].phase != T->phase) continue;
      int d = task_of(mp, X->src_seg, mp->seg[X->src_seg].n_inst > 1 ? T->inst : 0);
      int dup = 0;
      for (int k = 0; k < T->n_dep; k++) dup |= T->dep[k] == d;
      if (d >= 0 && !dup) T->dep[T->n_dep++] = d;
    }
  }
  return NB_OK;
}

static void *worker_main(void *arg);
static int home_of(const nb_mplan *mp, const nb_tensor *t);

/* Where each part keeps what is read after its run, outside its arena
 * (which the plans of a device share): the results the caller reads
 * (nb_plan_get) of a micro-batch instance in a buffer of its own
 * (NB_FLAG_APART), everything else another part reads in the kept buffer,
 * which later micro-batch instances reuse (NB_FLAG_KEPT). */
static void mark_results(nb_mplan *mp, const nb_graph *g) {
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!mp->keep[i] || !(t->flags & NB_FLAG_OUTPUT)) continue;
    int s = home_of(mp, t);
    if (s >= 0 && mp->seg[s].n_inst > 1) mp->seg[s].map[i]->flags |= NB_FLAG_APART;
  }
  for (int s = 0; s < mp->n_seg; s++) {
    nb_graph *sg = mp->seg[s].g;
    for (int k = 0; k < nb_graph_node_count(sg); k++) {
      nb_tensor *t = nb_graph_node(sg, k);
      if ((t->flags & NB_FLAG_OUTPUT) && !(t->flags & NB_FLAG_APART)) t->flags |= NB_FLAG_KEPT;
    }
  }
}

static int device_used(const nb_mplan *mp, int d) {
  for (int s = 0; s < mp->n_seg; s++)
    if (mp->seg[s].dev == d) return 1;
  return 0;
}

static nb_status start_workers(nb_mplan *mp) {
  int used = 0, cpus = 0;
  for (int d = 0; d < mp->n_dev; d++)
    if (device_used(mp, d)) {
      used++;
      cpus += !strcmp(mp->dev[d]->vt->kind, "cpu");
    }
  mp->dev_threads = calloc((size_t)mp->n_dev, sizeof *mp->dev_threads);
  if (!mp->dev_threads) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  /* devices that run at once share the cores unless told otherwise */
  int share = cpus > 1 ? nb_get_num_threads() / cpus : 0;
  if (cpus > 1 && share < 1) share = 1;
  for (int d = 0; d < mp->n_dev; d++)
    mp->dev_threads[d] = mp->dev[d]->threads > 0 ? mp->dev[d]->threads : share;
  if (mp->sequential || used < 2) return NB_OK;
  if (pthread_mutex_init(&mp->mu, NULL)) return nb_error(NB_ERR_INTERNAL, "nb_compile: mutex");
  if (pthread_cond_init(&mp->cv, NULL)) {
    pthread_mutex_destroy(&mp->mu);
    return nb_error(NB_ERR_INTERNAL, "nb_compile: condition variable");
  }
  mp->sync_ready = 1;
  mp->worker = calloc((size_t)mp->n_dev, sizeof *mp->worker);
  if (!mp->worker) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  for (int d = 0; d < mp->n_dev; d++) {
    mp->worker[d].mp = mp;
    mp->worker[d].dev = d;
    if (!device_used(mp, d)) continue;
    if (pthread_create(&mp->worker[d].thread, NULL, worker_main, &mp->worker[d]))
      return nb_error(NB_ERR_INTERNAL, "nb_compile: cannot start the thread of device %s",
                      mp->dev[d]->name);
    mp->worker[d].started = 1;
  }
  return NB_OK;
}

/* A value handed between two segments of one device is read in place: the
 * receiving input points at the sender's output, which stays untouched
 * until the sender's next run (it is a plan output). Only transfers between
 * devices copy. */
static nb_status alias_handovers(nb_mplan *mp) {
  for (int x = 0; x < mp->n_xfer; x++) {
    mp_xfer *X = &mp->xfer[x];
    if (X->cross || X->src_seg < 0) continue;
    const mp_seg *S = &mp->seg[X->src_seg], *D = &mp->seg[X->dst_seg];
    for (int j = 0; j < D->n_inst; j++) {
      nb_plan *src = S->inst[S->n_inst > 1 ? j : 0], *dst = D->inst[j];
      if (!dst->info[X->dst->id].keep) continue;
      nb_status st = nb_plan_alias_input(dst, X->dst, nb_plan_data(src, X->src));
      if (st) return st;
    }
    X->alias = 1;
  }
  return NB_OK;
}

nb_status nb_mp_compile(nb_plan *p) {
  nb_graph *g = p->g;
  nb_mplan *mp = calloc(1, sizeof *mp);
  if (!mp) return nb_error(NB_ERR_OOM, "out of memory");
  p->mp = mp;
  mp->M = p->opt.micro_batches > 1 ? p->opt.micro_batches : 1;
  mp->sequential = p->opt.sequential;
  int n = mp->n_nodes = g->n_nodes;
  size_t nn = (size_t)(n ? n : 1);
  mp->keep = calloc(nn, 1);
  mp->acc = calloc(nn, 1);
  mp->node_dev = calloc(nn, sizeof *mp->node_dev);
  mp->node_phase = calloc(nn, sizeof *mp->node_phase);
  mp->node_level = calloc(nn, sizeof *mp->node_level);
  mp->node_seg = calloc(nn, sizeof *mp->node_seg);
  if (!mp->keep || !mp->acc || !mp->node_dev || !mp->node_phase || !mp->node_level || !mp->node_seg)
    return nb_error(NB_ERR_OOM, "out of memory");
  nb_status st = nb_pass_verify(p);
  if (!st) st = find_kept(g, mp->keep);
  if (!st) st = nb_mp_place(p, mp);
  if (!st) st = nb_mp_partition(p, mp);
  /* the variables, in graph order on their devices, so the state lists
   * them as a single-device compile would */
  for (int i = 0; !st && i < n; i++) {
    const nb_tensor *t = g->nodes[i];
    nb_state_var *v;
    if (mp->keep[i] && t->op == NB_OP_VARIABLE)
      st = nb_state_bind(p->st, mp->dev[mp->node_dev[i]], t, &v);
  }
  if (!st) st = nb_state_new(p->be, &mp->scratch);
  if (!st) mark_results(mp, g);
  /* the order first, and from it which instances share arenas: one that
   * runs in an earlier one's arena gives its own back once compiled */
  if (!st) st = make_tasks(mp);
  if (!st && p->opt.schedule == NB_SCHEDULE_1F1B) st = nb_mp_schedule_1f1b(mp);
  if (!st && p->opt.reuse_memory) st = nb_mp_plan_sharing(mp);
  int n_devices = 0;
  for (int d = 0; d < mp->n_dev; d++) n_devices += device_used(mp, d);
  nb_compile_options o = p->opt;
  o.micro_batches = 1;
  for (int s = 0; !st && s < mp->n_seg; s++) {
    mp_seg *S = &mp->seg[s];
    nb_backend *be = mp->dev[S->dev];
    for (int i = 0; !st && i < S->n_inst; i++) {
      st = nb_compile_single(S->g, be, p->st, mp->scratch, &o, &S->inst[i]);
      if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nb_last_error());
        /* nb_compile_single says "nb_compile: ..." already */
        st = nb_error(st, "%s: %s", be->name, strncmp(msg, "nb_compile: ", 12) ? msg : msg + 12);
      }
      if (!st && n_devices > 1) {
        /* parts run on worker threads with transfers between them: no CUDA
         * graphs (docs/cuda.md). On one device (gradient accumulation) each
         * part records and replays like a plain plan: the parts run one at
         * a time on the calling thread, and a part's run counter is synced
         * before each run, so each micro-batch draws its own masks. */
        S->inst[i]->graph_state = -1;
        snprintf(S->inst[i]->graph_why, sizeof S->inst[i]->graph_why,
                 "part of a multi-device or micro-batched plan");
      }
      if (!st && S->first) {
        float first = i == 0 ? 1.0f : 0.0f;
        st = nb_plan_set_input(S->inst[i], S->first, &first, sizeof first);
      }
      if (!st && p->opt.reuse_memory) st = nb_mp_take_memory(mp, s, i);
    }
  }
  if (!st && p->opt.reuse_memory) st = nb_mp_share_scratch(mp);
  if (!st) st = alias_handovers(mp);
  if (!st) st = start_workers(mp);
  return st;
}

void nb_mp_free(nb_mplan *mp) {
  if (!mp) return;
  if (mp->worker) {
    pthread_mutex_lock(&mp->mu);
    mp->quit = 1;
    pthread_cond_broadcast(&mp->cv);
    pthread_mutex_unlock(&mp->mu);
    for (int d = 0; d < mp->n_dev; d++)
      if (mp->worker[d].started) pthread_join(mp->worker[d].thread, NULL);
    free(mp->worker);
  }
  if (mp->sync_ready) {
    pthread_cond_destroy(&mp->cv);
    pthread_mutex_destroy(&mp->mu);
  }
  for (int s = 0; s < mp->n_seg; s++) {
    mp_seg *S = &mp->seg[s];
    for (int i = 0; S->inst && i < S->n_inst; i++) nb_plan_free(S->inst[i]);
    free(S->inst);
    free(S->lend);
    free(S->map);
    nb_graph_free(S->g);
  }
  for (int t = 0; t < mp->n_task; t++) free(mp->task[t].dep);
  free(mp->task);
  free(mp->seg);
  free(mp->xfer);
  nb_state_free(mp->scratch);
  free(mp->dev);
  free(mp->dev_threads);
  free(mp->keep);
  free(mp->acc);
  free(mp->node_dev);
  free(mp->node_phase);
  free(mp->node_level);
  free(mp->node_seg);
  free(mp);
}

/* ---- running -------------------------------------------------------------------------- */

static nb_status copy_xfer(nb_mplan *mp, const mp_xfer *x, int src_inst, int dst_inst) {
  mp_seg *D = &mp->seg[x->dst_seg];
  nb_plan *dp = D->inst[dst_inst];
  void *dst = nb_plan_data(dp, x->dst);
  if (!dst) return NB_OK; /* nothing there reads it */
  const void *src;
  nb_backend *sb;
  if (x->src_seg >= 0) {
    nb_plan *sp = mp->seg[x->src_seg].inst[src_inst];
    src = nb_plan_data(sp, x->src);
    sb = sp->be;
  } else {
    const nb_state_var *v = nb_state_find(x->scratch ? mp->scratch : dp->st, x->var);
    if (!v)
      return nb_error(NB_ERR_INTERNAL, "transfer of node %d: variable '%s' is missing", x->node->id,
                      x->var);
    src = v->data;
    sb = v->be;
  }
  if (!src) return nb_error(NB_ERR_INTERNAL, "transfer of node %d: no source data", x->node->id);
  nb_status st = nb_backend_copy(dp->be, dst, sb, src, x->bytes);
  if (st)
    return nb_error(st, "transfer of node %d %s -> %s: %s", x->node->id, sb->name, dp->be->name,
                    nb_last_error());
  return NB_OK;
}

/* Runs task t, then hands its results to the segments that read them. */
static nb_status run_task(nb_mplan *mp, int t) {
  const mp_task *T = &mp->task[t];
  mp_seg *S = &mp->seg[T->seg];
  nb_status st = nb_plan_run(S->inst[T->inst]);
  if (st) return st;
  for (int x = 0; x < mp->n_xfer && !st; x++) {
    const mp_xfer *X = &mp->xfer[x];
    if (X->src_seg != T->seg || X->alias) continue;
    const mp_seg *D = &mp->seg[X->dst_seg];
    if (S->n_inst > 1)
      st = copy_xfer(mp, X, T->inst, T->inst);
    else
      for (int j = 0; j < D->n_inst && !st; j++) st = copy_xfer(mp, X, 0, j);
  }
  return st;
}

static nb_status send_variables(nb_mplan *mp, int phase) {
  for (int x = 0; x < mp->n_xfer; x++) {
    const mp_xfer *X = &mp->xfer[x];
    if (X->src_seg >= 0 || mp->seg[X->dst_seg].phase != phase) continue;
    for (int j = 0; j < mp->seg[X->dst_seg].n_inst; j++) {
      nb_status st = copy_xfer(mp, X, 0, j);
      if (st) return st;
    }
  }
  return NB_OK;
}

static void *worker_main(void *arg) {
  mp_worker *w = arg;
  nb_mplan *mp = w->mp;
  nb_backend *be = mp->dev[w->dev];
  if (be->vt->bind_thread) be->vt->bind_thread(be, mp->dev_threads[w->dev]);
  uint64_t seen = 0;
  pthread_mutex_lock(&mp->mu);
  for (;;) {
    while (mp->go_gen == seen && !mp->quit) pthread_cond_wait(&mp->cv, &mp->mu);
    if (mp->quit) break;
    seen = mp->go_gen;
    int ph = mp->go_phase;
    for (int t = mp->phase_first[ph]; t < mp->phase_first[ph + 1]; t++) {
      mp_task *T = &mp->task[t];
      if (T->dev != w->dev) continue;
      for (;;) {
        int ready = 1;
        for (int k = 0; ready && k < T->n_dep; k++) ready = mp->task[T->dep[k]].done;
        if (ready || mp->failed) break;
        pthread_cond_wait(&mp->cv, &mp->mu);
      }
      if (mp->failed) break;
      pthread_mutex_unlock(&mp->mu);
      nb_status st = run_task(mp, t);
      pthread_mutex_lock(&mp->mu);
      if (st && !mp->failed) {
        mp->failed = st;
        snprintf(mp->error, sizeof mp->error, "%s", nb_last_error());
      }
      T->done = 1;
      pthread_cond_broadcast(&mp->cv);
      if (st) break;
    }
    if (--mp->running == 0) pthread_cond_broadcast(&mp->cv);
  }
  pthread_mutex_unlock(&mp->mu);
  return NULL;
}

static nb_status run_phase_threads(nb_mplan *mp, int ph) {
  pthread_mutex_lock(&mp->mu);
  for (int t = mp->phase_first[ph]; t < mp->phase_first[ph + 1]; t++) mp->task[t].done = 0;
  mp->failed = NB_OK;
  mp->running = 0;
  for (int d = 0; d < mp->n_dev; d++) mp->running += mp->worker[d].started;
  mp->go_phase = ph;
  mp->go_gen++;
  pthread_cond_broadcast(&mp->cv);
  while (mp->running > 0) pthread_cond_wait(&mp->cv, &mp->mu);
  nb_status st = mp->failed;
  pthread_mutex_unlock(&mp->mu);
  if (st) return nb_error(st, "%s", mp->error);
  return NB_OK;
}

nb_status nb_mp_run(nb_plan *p) {
  nb_mplan *mp = p->mp;
  /* per-step randomness (dropout): micro-batch i of step s counts as step
   * s * M + i, so each micro-batch draws its own masks */
  for (int s = 0; s < mp->n_seg; s++)
    for (int i = 0; i < mp->seg[s].n_inst; i++)
      mp->seg[s].inst[i]->step =
          mp->seg[s].n_inst > 1 ? p->step * (uint64_t)mp->M + (uint64_t)i : p->step;
  for (int ph = 0; ph < MP_PHASES; ph++) {
    if (mp->phase_first[ph] == mp->phase_first[ph + 1]) continue;
    nb_status st = send_variables(mp, ph);
    if (!st && mp->worker) {
      st = run_phase_threads(mp, ph);
    } else {
      for (int t = mp->phase_first[ph]; !st && t < mp->phase_first[ph + 1]; t++)
        st = run_task(mp, t);
    }
    if (st) return st;
  }
  p->step++;
  return NB_OK;
}

/* ---- inputs and outputs ----------------------------------------------------------------- */

static size_t node_bytes(const nb_tensor *t) {
  return (size_t)nb_tensor_numel(t) * nb_dtype_size(t->dtype);
}

nb_status nb_mp_set_input(nb_plan *p, const nb_tensor *input, const void *data, size_t bytes) {
  nb_mplan *mp = p->mp;
  if (input->op != NB_OP_INPUT)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: node %d ('%s') is a %s, not an input",
                    input->id, nb_tensor_name(input), nb_op_def_get(input->op)->name);
  size_t one = node_bytes(input);
  int split = mp->M > 1 && input->micro == NB_MICRO_SPLIT;
  size_t want = split ? one * (size_t)mp->M : one;
  if (bytes != want) {
    if (split)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_plan_set_input: input '%s' takes %d micro-batches of %zu bytes (%zu "
                      "bytes), got %zu",
                      nb_tensor_name(input), mp->M, one, want, bytes);
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: input '%s' takes %zu bytes, got %zu",
                    nb_tensor_name(input), want, bytes);
  }
  if (bytes && !data) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: data is NULL");
  for (int s = 0; s < mp->n_seg; s++) {
    const mp_seg *S = &mp->seg[s];
    const nb_tensor *x = S->map[input->id];
    if (!x) continue;
    for (int i = 0; i < S->n_inst; i++) {
      const unsigned char *d = data;
      if (split) d += (size_t)i * one;
      nb_status st = nb_plan_set_input(S->inst[i], x, d, one);
      if (st) return st;
    }
  }
  return NB_OK;
}

/* The segment whose copy of user node t answers nb_plan_get. */
static int home_of(const nb_mplan *mp, const nb_tensor *t) {
  const nb_tensor *o = mp_owner(t);
  if (mp_is_computed(o)) {
    int s = mp->node_seg[o->id];
    if (s >= 0 && mp->seg[s].map[t->id]) return s;
  }
  for (int s = 0; s < mp->n_seg; s++)
    if (mp->seg[s].map[t->id] && (o->op != NB_OP_VARIABLE || mp->seg[s].dev == mp->node_dev[o->id]))
      return s;
  return -1;
}

nb_status nb_mp_get(nb_plan *p, const nb_tensor *t, void *dst, size_t bytes) {
  nb_mplan *mp = p->mp;
  const nb_tensor *o = mp_owner(t);
  int leaf = mp_is_leaf(o);
  if (!mp->keep[t->id] || (!(t->flags & NB_FLAG_OUTPUT) && !leaf))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_plan_get: node %d (%s) is not a plan output; call "
                    "nb_tensor_set_output() on it before nb_compile()",
                    t->id, nb_op_def_get(t->op)->name);
  size_t one = node_bytes(t);
  int s = home_of(mp, t);
  if (s < 0 && t->op == NB_OP_VARIABLE) return nb_state_read(p->st, t->name, dst, bytes);
  if (s < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_get: node %d (%s) is not computed by this plan",
                    t->id, nb_op_def_get(t->op)->name);
  const mp_seg *S = &mp->seg[s];
  const nb_tensor *x = S->map[t->id];
  int many = S->n_inst > 1 && !(o->op == NB_OP_VARIABLE);
  nb_micro how = many ? (nb_micro)t->micro : NB_MICRO_MEAN;
  size_t want = many && how == NB_MICRO_SPLIT ? one * (size_t)S->n_inst : one;
  if (bytes != want)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_get: node %d (%s) holds %zu bytes%s, got %zu",
                    t->id, nb_op_def_get(t->op)->name, want,
                    many && how == NB_MICRO_SPLIT ? " (all micro-batches)" : "", bytes);
  if (!bytes) return NB_OK;
  if (!dst) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_get: dst is NULL");
  if (!many) return nb_plan_get(S->inst[0], x, dst, bytes);
  if (how == NB_MICRO_SPLIT) {
    for (int i = 0; i < S->n_inst; i++) {
      nb_status st = nb_plan_get(S->inst[i], x, (unsigned char *)dst + (size_t)i * one, one);
      if (st) return st;
    }
    return NB_OK;
  }
  if (t->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE,
                    "nb_plan_get: node %d (%s) is %s: only f32 outputs are combined over "
                    "micro-batches (mark it NB_MICRO_SPLIT to read each one)",
                    t->id, nb_op_def_get(t->op)->name, nb_dtype_name(t->dtype));
  int64_t n = nb_tensor_numel(t);
  float *tmp = malloc(one ? one : 1);
  double *sum = calloc((size_t)(n ? n : 1), sizeof *sum);
  if (!tmp || !sum) {
    free(tmp);
    free(sum);
    return nb_error(NB_ERR_OOM, "nb_plan_get: out of memory");
  }
  nb_status st = NB_OK;
  for (int i = 0; !st && i < S->n_inst; i++) {
    st = nb_plan_get(S->inst[i], x, tmp, one);
    for (int64_t k = 0; !st && k < n; k++) sum[k] += tmp[k];
  }
  double scale = how == NB_MICRO_SUM ? 1.0 : 1.0 / (double)S->n_inst;
  for (int64_t k = 0; !st && k < n; k++) ((float *)dst)[k] = (float)(sum[k] * scale);
  free(tmp);
  free(sum);
  return st;
}

/* ---- statistics ------------------------------------------------------------------------- */

static int per_run(const nb_mplan *mp, const mp_xfer *x) {
  int a = x->src_seg >= 0 ? mp->seg[x->src_seg].n_inst : 1;
  int b = mp->seg[x->dst_seg].n_inst;
  return a > b ? a : b;
}

/* The memory a part holds itself: its arena and kept buffer unless it
 * borrows another's, and its results kept apart. */
static size_t own_bytes(const nb_plan *q) {
  return (q->arena_borrowed ? 0 : q->arena_bytes) + (q->kept_borrowed ? 0 : q->kept_bytes) +
         q->apart_bytes;
}

void nb_mp_stats(const nb_plan *p, nb_plan_stats *s) {
  const nb_mplan *mp = p->mp;
  /* CUDA graphs: 1 when every part that can record has, 0 before, -1 if none can */
  int can = 0, recorded = 0;
  for (int k = 0; k < mp->n_seg; k++)
    for (int i = 0; i < mp->seg[k].n_inst; i++) {
      can += mp->seg[k].inst[i]->graph_state >= 0;
      recorded += mp->seg[k].inst[i]->graph_state > 0;
    }
  s->graph = !can ? -1 : recorded == can;
  for (int i = 0; i < mp->n_nodes; i++) s->nodes += mp->keep[i];
  for (int k = 0; k < mp->n_seg; k++) {
    const mp_seg *S = &mp->seg[k];
    for (int i = 0; i < S->n_inst; i++) {
      const nb_plan *q = S->inst[i];
      s->arena_bytes += own_bytes(q);
      s->naive_bytes += q->naive_bytes;
      s->kernels += q->n_launch;
      s->fused_groups += q->n_fused;
      s->inplace += q->n_inplace;
    }
  }
  for (int d = 0; d < mp->n_dev; d++) s->devices += device_used(mp, d);
  for (int x = 0; x < mp->n_xfer; x++) {
    if (!mp->xfer[x].cross) continue;
    s->transfers += per_run(mp, &mp->xfer[x]);
    s->transfer_bytes += (size_t)per_run(mp, &mp->xfer[x]) * mp->xfer[x].bytes;
  }
}

int nb_plan_device_count(const nb_plan *p) {
  if (!p) return 0;
  if (!p->mp) return 1;
  int n = 0;
  for (int d = 0; d < p->mp->n_dev; d++) n += device_used(p->mp, d);
  return n;
}

nb_status nb_plan_device_info(const nb_plan *p, int i, nb_plan_device *out) {
  if (!p || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_device_info: NULL argument");
  memset(out, 0, sizeof *out);
  if (i < 0 || i >= nb_plan_device_count(p))
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_device_info: device %d of %d", i,
                    nb_plan_device_count(p));
  if (!p->mp) {
    out->name = p->be->name;
    out->arena_bytes = p->arena_bytes;
    out->kernels = p->n_launch;
    out->threads = p->be->threads;
    return NB_OK;
  }
  const nb_mplan *mp = p->mp;
  int d = -1;
  for (int k = 0, seen = 0; k < mp->n_dev && d < 0; k++)
    if (device_used(mp, k) && seen++ == i) d = k;
  out->name = mp->dev[d]->name;
  out->threads = mp->worker ? mp->dev_threads[d] : mp->dev[d]->threads;
  for (int s = 0; s < mp->n_seg; s++) {
    if (mp->seg[s].dev != d) continue;
    for (int k = 0; k < mp->seg[s].n_inst; k++) {
      out->arena_bytes += own_bytes(mp->seg[s].inst[k]);
      out->kernels += mp->seg[s].inst[k]->n_launch;
    }
  }
  return NB_OK;
}

int nb_plan_transfer_count(const nb_plan *p) {
  if (!p || !p->mp) return 0;
  int n = 0;
  for (int x = 0; x < p->mp->n_xfer; x++) n += p->mp->xfer[x].cross;
  return n;
}

nb_status nb_plan_transfer_info(const nb_plan *p, int i, nb_plan_transfer *out) {
  if (!p || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_transfer_info: NULL argument");
  memset(out, 0, sizeof *out);
  int n = nb_plan_transfer_count(p);
  if (i < 0 || i >= n)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_transfer_info: transfer %d of %d", i, n);
  const nb_mplan *mp = p->mp;
  for (int x = 0, seen = 0; x < mp->n_xfer; x++) {
    const mp_xfer *X = &mp->xfer[x];
    if (!X->cross || seen++ != i) continue;
    out->node = X->node;
    out->src = mp->dev[X->src_seg >= 0 ? mp->seg[X->src_seg].dev : mp->node_dev[X->node->id]]->name;
    out->dst = mp->dev[mp->seg[X->dst_seg].dev]->name;
    out->bytes = X->bytes;
    out->per_run = per_run(mp, X);
  }
  return NB_OK;
}

static const char *phase_name(int ph) {
  static const char *const names[] = {"before micro-batches", "forward/backward", "update"};
  return ph >= 0 && ph < MP_PHASES ? names[ph] : "?";
}

nb_status nb_plan_print_placement(const nb_plan *p, FILE *f) {
  if (!p || !f) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_print_placement: NULL argument");
  if (!p->mp) {
    fprintf(f, "one device: %s, %d kernels\n", p->be->name, p->n_launch);
    return NB_OK;
  }
  const nb_mplan *mp = p->mp;
  fprintf(f, "%d devices, %d segments, %d micro-batch%s, %s\n", nb_plan_device_count(p), mp->n_seg,
          mp->M, mp->M > 1 ? "es" : "",
          mp->worker ? "one thread per device" : "in order on one thread");
  for (int s = 0; s < mp->n_seg; s++) {
    const mp_seg *S = &mp->seg[s];
    int nodes = 0;
    for (int i = 0; i < mp->n_nodes; i++) nodes += mp->node_seg[i] == s;
    fprintf(f, "  segment %d: %-7s level %d, %s: %d nodes, %d kernels", s, mp->dev[S->dev]->name,
            S->level, phase_name(mp->M > 1 ? S->phase : MP_MICRO), nodes, S->inst[0]->n_launch);
    if (S->n_inst > 1) fprintf(f, " x %d micro-batches", S->n_inst);
    if (S->n_acc) fprintf(f, ", %d accumulators", S->n_acc);
    fprintf(f, "\n");
  }
  for (int x = 0; x < mp->n_xfer; x++) {
    const mp_xfer *X = &mp->xfer[x];
    if (!X->cross) continue;
    const nb_tensor *t = X->node;
    const char *src =
        mp->dev[X->src_seg >= 0 ? mp->seg[X->src_seg].dev : mp->node_dev[t->id]]->name;
    fprintf(f, "  transfer %s -> %s: node %d (%s%s%s), %zu bytes%s\n", src,
            mp->dev[mp->seg[X->dst_seg].dev]->name, t->id, nb_op_def_get(t->op)->name,
            t->name ? " " : "", t->name ? t->name : "", X->bytes,
            per_run(mp, X) > 1 ? " per micro-batch" : "");
  }
  return NB_OK;
}
