/* Running a compiled plan, feeding inputs and reading results. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compile_internal.h"

void *nb_plan_data(const nb_plan *p, const nb_tensor *t) {
  const nb_tensor *owner = nb_storage_of(t);
  /* an assign, a write_at and views of them live in their variable */
  if (owner->op == NB_OP_ASSIGN || owner->op == NB_OP_WRITE_AT) owner = owner->in[0];
  const nb_node_info *in = &p->info[owner->id];
  unsigned char *base;
  switch (in->kind) {
  case NB_STORE_ARENA:
    base = (unsigned char *)(in->region == NB_REGION_APART  ? p->apart
                             : in->region == NB_REGION_KEPT ? p->kept
                                                            : p->arena) +
           in->offset;
    break;
  case NB_STORE_INPUT:
  case NB_STORE_CONSTANT:
  case NB_STORE_STATE: base = in->own; break;
  default: return NULL;
  }
  if (!base) return NULL;
  return base + (size_t)t->offset * nb_dtype_size(t->dtype);
}

static nb_status check_node(const nb_plan *p, const nb_tensor *t, const char *fn) {
  if (!p || !t) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL argument", fn);
  if (t->graph != p->g || t->id >= p->n_nodes)
    return nb_error(NB_ERR_INVALID_ARG, "%s: node is not part of the compiled graph", fn);
  return NB_OK;
}

nb_status nb_plan_set_input(nb_plan *p, const nb_tensor *input, const void *data, size_t bytes) {
  nb_status st = check_node(p, input, "nb_plan_set_input");
  if (st) return st;
  if (p->mp) return nb_mp_set_input(p, input, data, bytes);
  if (input->op != NB_OP_INPUT)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: node %d ('%s') is a %s, not an input",
                    input->id, nb_tensor_name(input), nb_op_def_get(input->op)->name);
  const nb_node_info *in = &p->info[input->id];
  size_t want = (size_t)nb_tensor_numel(input) * nb_dtype_size(input->dtype);
  if (bytes != want)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: input '%s' takes %zu bytes, got %zu",
                    nb_tensor_name(input), want, bytes);
  if (!in->keep) return NB_OK; /* not needed by any output */
  if (bytes && !data) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_set_input: data is NULL");
  return bytes ? p->be->vt->upload(p->be, in->own, data, bytes) : NB_OK;
}

/* Wall time, or with NABLA_PROFILE=cpu the calling thread's CPU time, which
 * other processes on a shared machine do not inflate (exact with 1 thread). */
static double seconds(const nb_plan *p) {
  struct timespec ts;
  clock_gettime(p->prof_cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static nb_status run_launch(nb_plan *p, int s) {
  double t0 = p->prof ? seconds(p) : 0.0;
  const nb_launch *l = &p->launch[s];
  nb_kernel_call call = {
      .node = l->producer ? l->producer : l->node,
      .out = nb_plan_data(p, l->node),
      .in = l->in,
      .n_in = l->n_ins,
      .workspace = p->workspace,
      .workspace_bytes = p->workspace_bytes,
      .step = p->step,
      .step_at = p->counter,
      .group = l->group,
  };
  nb_status st = p->be->vt->run(p->be, &call);
  /* Open MPI advances a non-blocking reduction only inside MPI calls:
   * give it a turn between kernels while one is under way */
  if (p->dist && p->dist->pending(p->dist->ctx)) p->dist->progress(p->dist->ctx);
  if (p->prof) p->prof[s] += seconds(p) - t0;
  if (st) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    return nb_error(st, "node %d (%s%s%s): %s", l->node->id, nb_op_def_get(l->node->op)->name,
                    l->node->name ? " " : "", l->node->name ? l->node->name : "", msg);
  }
  return NB_OK;
}

/* ---- CUDA graphs ------------------------------------------------------------------
 * On a backend with the graph hooks, a plan's 2nd run records its launches
 * (the 1st does the kernels' lazy set-up: cuBLAS handle, workspaces) and
 * every later run replays the recording with one launch. A recording
 * freezes every pointer and by-value argument of its launches. The
 * pointers are the plan's for its lifetime (arena, workspace, input and
 * constant buffers, the state's variables; nb_plan_alias_input drops the
 * recording), and inputs such as the learning rate are read from device
 * memory, so a replay computes what the launches would; what would differ
 * from run to run makes the plan ineligible (graph_obstacle). */

/* Sets p->graph_state to -1 with the reason; NABLA_CUDA_VERBOSE=1 prints it
 * where the backend could have recorded. */
static void graph_never(nb_plan *p, const char *why) {
  p->graph_state = -1;
  snprintf(p->graph_why, sizeof p->graph_why, "%s", why);
  const char *v = getenv("NABLA_CUDA_VERBOSE");
  if (p->be->vt->graph_begin && v && *v && strcmp(v, "0") != 0)
    fprintf(stderr, "nabla: %s: plan of %d launches runs without a CUDA graph: %s\n", p->be->name,
            p->n_launch, why);
}

int nb_plan_dropout_launch(const nb_plan *p) {
  for (int s = 0; s < p->n_launch; s++) {
    const nb_fused_group *g = p->launch[s].group;
    for (int k = 0; g && k < g->n_ops; k++)
      if (g->ops[k].op == NB_OP_DROPOUT && g->ops[k].fp[0] != 0.0f) return s;
  }
  return -1;
}

/* Why the plan's runs cannot be replayed from one recording, or NULL. */
static const char *graph_obstacle(const nb_plan *p, char *buf, size_t cap) {
  if (p->n_launch < 2) return "fewer than two launches: nothing to save";
  if (p->prof) return "NABLA_PROFILE times each launch";
  if (p->dist) return "it reduces gradients across processes (allreduce_start)";
  int s = nb_plan_dropout_launch(p);
  if (s >= 0 && !p->counter) {
    /* the mask hashes the run counter, which kernels then get by value */
    snprintf(buf, cap, "dropout (in the launch of node %d) draws a new mask every run",
             p->launch[s].node->id);
    return buf;
  }
  return NULL;
}

/* Makes the device's run counter equal p->step before a run reads it. */
static nb_status counter_sync(nb_plan *p) {
  if (!p->counter || p->counter_at == p->step) return NB_OK;
  uint64_t v = p->step;
  p->counter_at = NB_COUNTER_UNKNOWN;
  nb_status st = p->be->vt->upload(p->be, p->counter, &v, sizeof v);
  if (st) return st;
  p->counter_at = v;
  return NB_OK;
}

/* The run's last launch: counter + 1, on the device after the kernels. */
static nb_status counter_bump(nb_plan *p) {
  if (!p->counter) return NB_OK;
  nb_status st = p->be->vt->count(p->be, p->counter);
  if (st) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    return nb_error(st, "advancing the run counter: %s", msg);
  }
  return NB_OK;
}

/* Records the run's launches and replays the recording: 1 when the run
 * happened so, 0 when it did not (nothing ran; the plan then never records
 * again and the caller launches one by one). */
static int run_recording(nb_plan *p) {
  nb_backend *be = p->be;
  char why[sizeof p->graph_why] = "";
  nb_status st = be->vt->graph_begin(be);
  if (st) {
    graph_never(p, nb_last_error());
    return 0;
  }
  for (int s = 0; s < p->n_launch && !st; s++) {
    st = run_launch(p, s);
    if (st) snprintf(why, sizeof why, "recording failed: %s", nb_last_error());
  }
  if (!st) {
    st = counter_bump(p);
    if (st) snprintf(why, sizeof why, "recording failed: %s", nb_last_error());
  }
  void *graph = NULL;
  nb_status end = be->vt->graph_end(be, &graph); /* ends the recording even after a failure */
  if (!st && end) snprintf(why, sizeof why, "%s", nb_last_error());
  if (!st && !end) {
    st = be->vt->graph_launch(be, graph);
    if (st) snprintf(why, sizeof why, "replay failed: %s", nb_last_error());
  }
  if (st || end) {
    if (graph) be->vt->graph_drop(be, graph);
    graph_never(p, why);
    p->counter_at = NB_COUNTER_UNKNOWN; /* a failed replay may have counted */
    return 0;
  }
  p->graph = graph;
  p->graph_state = 1;
  return 1;
}

void nb_plan_graph_drop(nb_plan *p) {
  if (!p || !p->graph) return;
  p->be->vt->graph_drop(p->be, p->graph);
  p->graph = NULL;
  if (p->graph_state == 1) p->graph_state = 0;
}

/* 1 when the run happened through a recording (replayed or made now). */
static int run_graph(nb_plan *p) {
  if (p->graph_state < 0) return 0;
  if (!p->be->vt->graph_begin) {
    p->graph_state = -1;
    snprintf(p->graph_why, sizeof p->graph_why, "%s records no graphs", p->be->name);
    return 0;
  }
  if (p->graph_state == 1) {
    if (!p->be->vt->graph_launch(p->be, p->graph)) return 1;
    char why[sizeof p->graph_why];
    snprintf(why, sizeof why, "replay failed: %s", nb_last_error());
    nb_plan_graph_drop(p);
    graph_never(p, why);
    p->counter_at = NB_COUNTER_UNKNOWN;
    return 0;
  }
  if (p->graph_plain_runs < 1) return 0; /* the 1st run sets the kernels up */
  char buf[sizeof p->graph_why];
  const char *why = graph_obstacle(p, buf, sizeof buf);
  if (why) {
    graph_never(p, why);
    return 0;
  }
  return run_recording(p);
}

/* The run's launches one by one, then the counter. On a failure, a
 * reduction the run started must not outlive it: the next run restarts it
 * on the same buffer, and nb_plan_free frees it. */
static nb_status run_plain(nb_plan *p) {
  nb_status st = counter_sync(p); /* after a failed replay */
  for (int s = 0; !st && s < p->n_launch; s++) st = run_launch(p, s);
  if (!st) st = counter_bump(p);
  if (st) {
    p->counter_at = NB_COUNTER_UNKNOWN;
    if (p->dist && p->dist->pending(p->dist->ctx)) {
      char msg[1024];
      snprintf(msg, sizeof msg, "%s", nb_last_error());
      p->dist->drain(p->dist->ctx);
      nb_error(st, "%s", msg);
    }
    return st;
  }
  p->graph_plain_runs++;
  return NB_OK;
}

nb_status nb_plan_run(nb_plan *p) {
  if (!p) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_run: plan is NULL");
  if (p->mp) return nb_mp_run(p);
  nb_status st = counter_sync(p);
  if (st) return st;
  if (!run_graph(p)) {
    st = run_plain(p);
    if (st) return st;
  }
  if (p->counter) p->counter_at = p->step + 1;
  p->step++;
  p->prof_runs++;
  return NB_OK;
}

/* "conv2d", or for a fused group its ops in order: "add+relu". */
static void launch_name(const nb_launch *l, char *buf, size_t cap) {
  if (!l->group) {
    snprintf(buf, cap, "%s", nb_op_def_get(l->node->op)->name);
    return;
  }
  size_t n = 0;
  buf[0] = 0;
  if (l->producer) {
    int w = snprintf(buf, cap, "%s>", nb_op_def_get(l->producer->op)->name);
    n = w > 0 && (size_t)w < cap ? (size_t)w : 0;
  }
  for (int k = 0; k < l->group->n_ops && n + 1 < cap; k++) {
    int w =
        snprintf(buf + n, cap - n, "%s%s", k ? "+" : "", nb_op_def_get(l->group->ops[k].op)->name);
    if (w < 0) break;
    n += (size_t)w;
  }
  if (n >= cap) snprintf(buf + cap - 4, 4, "...");
}

/* Prints the NABLA_PROFILE table: every launch with its mean time and share,
 * slowest first. A profile is a debugging aid, so output goes to stderr. */
void nb_plan_print_profile(const nb_plan *p) {
  if (!p || !p->prof || !p->prof_runs) return;
  double total = 0;
  for (int s = 0; s < p->n_launch; s++) total += p->prof[s];
  size_t n = p->n_launch > 0 ? (size_t)p->n_launch : 1;
  int *order = malloc(n * sizeof *order);
  if (!order) return;
  for (int s = 0; s < p->n_launch; s++) order[s] = s;
  for (int i = 1; i < p->n_launch; i++) /* insertion sort, slowest first */
    for (int j = i; j > 0 && p->prof[order[j]] > p->prof[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  fprintf(stderr,
          "nabla profile (%s): %d launches (%d with an epilogue), %llu runs, %.3f ms per run\n",
          p->prof_cpu ? "thread CPU time" : "wall time", p->n_launch, p->n_epilogues,
          (unsigned long long)p->prof_runs, 1e3 * total / (double)p->prof_runs);
  fprintf(stderr, "%9s %6s  %-5s %-40s %s\n", "ms/run", "share", "node", "kernel", "shape");
  for (int i = 0; i < p->n_launch; i++) {
    const nb_launch *l = &p->launch[order[i]];
    char name[256], shape[128];
    launch_name(l, name, sizeof name);
    nb_shape_str(l->node->ndim, l->node->shape, shape, sizeof shape);
    fprintf(stderr, "%9.4f %5.1f%%  %-5d %-40s %s\n",
            1e3 * p->prof[order[i]] / (double)p->prof_runs,
            total > 0 ? 100.0 * p->prof[order[i]] / total : 0.0, l->node->id, name, shape);
  }
  free(order);
}

/* Copies a strided view out of a downloaded copy of its base storage. */
static void gather(const nb_tensor *t, const unsigned char *base, unsigned char *dst) {
  size_t es = nb_dtype_size(t->dtype);
  int64_t n = nb_tensor_numel(t), idx[NB_MAX_DIMS] = {0};
  for (int64_t i = 0; i < n; i++) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
    memcpy(dst + (size_t)i * es, base + (size_t)off * es, es);
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++idx[d] < t->shape[d]) break;
      idx[d] = 0;
    }
  }
}

nb_status nb_plan_get(nb_plan *p, const nb_tensor *t, void *dst, size_t bytes) {
  nb_status st = check_node(p, t, "nb_plan_get");
  if (st) return st;
  if (p->mp) return nb_mp_get(p, t, dst, bytes);
  size_t want = (size_t)nb_tensor_numel(t) * nb_dtype_size(t->dtype);
  if (bytes != want)
    return nb_error(NB_ERR_INVALID_ARG, "nb_plan_get: node %d (%s) holds %zu bytes, got %zu", t->id,
                    nb_op_def_get(t->op)->name, want, bytes);
  const nb_tensor *owner = nb_storage_of(t);
  int leaf = owner->op == NB_OP_INPUT || owner->op == NB_OP_VARIABLE || owner->op == NB_OP_CONSTANT;
  /* Ask the plan, not the node: a node marked as output after nb_compile()
   * may have been fused away (no storage: a NULL read) or share a reused
   * arena region (garbage). */
  if (!p->info[t->id].keep || (!p->info[t->id].output && !leaf))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_plan_get: node %d (%s) is not a plan output; call "
                    "nb_tensor_set_output() on it before nb_compile()",
                    t->id, nb_op_def_get(t->op)->name);
  if (!bytes) return NB_OK;
  if (!dst) return nb_error(NB_ERR_INVALID_ARG, "nb_plan_get: dst is NULL");
  if (nb_tensor_is_contiguous(t)) return p->be->vt->download(p->be, dst, nb_plan_data(p, t), bytes);
  /* strided view: fetch the span of its base that it touches, then gather */
  int64_t span = t->offset + 1;
  for (int d = 0; d < t->ndim; d++) span += (t->shape[d] - 1) * t->stride[d];
  size_t es = nb_dtype_size(t->dtype);
  unsigned char *tmp = malloc((size_t)span * es);
  if (!tmp) return nb_error(NB_ERR_OOM, "nb_plan_get: out of memory");
  const unsigned char *base = (const unsigned char *)nb_plan_data(p, t) - (size_t)t->offset * es;
  st = p->be->vt->download(p->be, tmp, base, (size_t)span * es);
  if (!st) gather(t, tmp, dst);
  free(tmp);
  return st;
}

uint64_t nb_plan_step(const nb_plan *p) { return p ? p->step : 0; }
void nb_plan_set_step(nb_plan *p, uint64_t step) {
  if (p) p->step = step;
}

nb_plan_stats nb_plan_get_stats(const nb_plan *p) {
  nb_plan_stats s = {0};
  if (!p) return s;
  if (p->mp) {
    nb_mp_stats(p, &s);
    return s;
  }
  s.devices = 1;
  s.graph = p->graph_state > 0 ? 1 : p->graph_state < 0 || !p->be->vt->graph_begin ? -1 : 0;
  s.arena_bytes = p->arena_bytes + p->kept_bytes + p->apart_bytes;
  s.naive_bytes = p->naive_bytes;
  for (int i = 0; i < p->n_nodes; i++) s.nodes += p->info[i].keep;
  s.kernels = p->n_launch;
  s.fused_groups = p->n_fused;
  s.inplace = p->n_inplace;
  return s;
}
