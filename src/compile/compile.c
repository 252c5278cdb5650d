/* nb_compile: runs the passes and binds storage on the backend. */
#include <stdlib.h>
#include <string.h>

#include "compile_internal.h"

nb_compile_options nb_compile_defaults(void) {
  nb_compile_options o = {1, 1, 1, 1, 0, NB_SCHEDULE_1F1B};
  return o;
}

static nb_status assign_storage(nb_plan *p) {
  nb_graph *g = p->g;
  nb_backend *be = p->be;
  for (int i = 0; i < g->n_nodes; i++) {
    nb_tensor *t = g->nodes[i];
    nb_node_info *in = &p->info[i];
    in->step = -1;
    if (!in->keep) continue;
    size_t bytes = (size_t)nb_tensor_numel(t) * nb_dtype_size(t->dtype);
    nb_status st = NB_OK;
    switch (t->op) {
    case NB_OP_INPUT:
      in->kind = NB_STORE_INPUT;
      in->bytes = bytes;
      st = be->vt->alloc(be, bytes, &in->own);
      break;
    case NB_OP_CONSTANT:
      in->kind = NB_STORE_CONSTANT;
      in->bytes = bytes;
      st = be->vt->alloc(be, bytes, &in->own);
      if (!st && bytes) st = be->vt->upload(be, in->own, t->data, bytes);
      break;
    case NB_OP_VARIABLE: {
      nb_state_var *v;
      in->kind = NB_STORE_STATE;
      st =
          nb_state_bind((t->flags & NB_FLAG_SCRATCH) && p->scratch ? p->scratch : p->st, be, t, &v);
      if (!st) in->own = v->data;
      break;
    }
    case NB_OP_ASSIGN:
      /* writes into the variable's storage */
      in->kind = NB_STORE_VIEW;
      break;
    case NB_OP_WRITE_AT:
      /* an ordinary launch whose result is its variable's storage (nb_plan_data) */
      in->kind = NB_STORE_VIEW;
      st = be->vt->supports(be, t);
      if (st) return nb_error(st, "node %d (write_at) on %s: %s", i, be->name, nb_last_error());
      break;
    default:
      if (t->base || nb_is_view_op(t->op)) {
        in->kind = NB_STORE_VIEW;
      } else {
        st = be->vt->supports(be, t);
        if (st)
          return nb_error(st, "node %d (%s) on %s: %s", i, nb_op_def_get(t->op)->name, be->name,
                          nb_last_error());
        in->kind = NB_STORE_ARENA;
      }
    }
    if (st) return st;
  }
  return NB_OK;
}

static nb_status bind_launches(nb_plan *p) {
  size_t ws = 0;
  for (int s = 0; s < p->n_launch; s++) {
    nb_launch *l = &p->launch[s];
    l->in = calloc((size_t)(l->n_ins ? l->n_ins : 1), sizeof *l->in);
    if (!l->in) return nb_error(NB_ERR_OOM, "compile: out of memory");
    /* an epilogue's producer has no storage: its pointer stays NULL */
    for (int k = 0; k < l->n_ins; k++) l->in[k] = nb_plan_data(p, l->ins[k]);
    size_t w = p->be->vt->workspace(p->be, l->producer ? l->producer : l->node);
    if (w > ws) ws = w;
  }
  p->workspace_bytes = ws;
  nb_status st = ws ? p->be->vt->alloc(p->be, ws, &p->workspace) : NB_OK;
  if (!st && p->be->vt->count && nb_plan_dropout_launch(p) >= 0) {
    void *c = NULL;
    st = p->be->vt->alloc(p->be, sizeof *p->counter, &c);
    p->counter = c;
    p->counter_at = NB_COUNTER_UNKNOWN;
  }
  return st;
}

nb_status nb_compile(nb_graph *g, nb_backend *be, nb_state *st, const nb_compile_options *opt,
                     nb_plan **out) {
  if (!g || !be || !st || !out)
    return nb_error(NB_ERR_INVALID_ARG, "nb_compile: graph, backend, state and out are required");
  *out = NULL;
  if (!nb_state_has_device(st, be))
    return nb_error(NB_ERR_INVALID_ARG, "nb_compile: the state belongs to backend %s, not %s",
                    st->be->name, be->name);
  nb_compile_options o = opt ? *opt : nb_compile_defaults();
  if (o.micro_batches < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_compile: micro_batches must be >= 0, got %d",
                    o.micro_batches);
  if (o.schedule != NB_SCHEDULE_1F1B && o.schedule != NB_SCHEDULE_GPIPE)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_compile: schedule must be NB_SCHEDULE_1F1B (0) or NB_SCHEDULE_GPIPE (1), "
                    "got %d",
                    o.schedule);
  if (!nb_mp_wanted(g, be, st, &o)) return nb_compile_single(g, be, st, NULL, &o, out);
  nb_plan *p = calloc(1, sizeof *p);
  if (!p) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  p->g = g;
  p->be = be;
  p->st = st;
  p->opt = o;
  p->n_nodes = g->n_nodes;
  nb_status s = nb_mp_compile(p);
  if (s) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    nb_plan_free(p);
    return nb_error(s, "nb_compile: %s", msg);
  }
  *out = p;
  return NB_OK;
}

nb_status nb_compile_single(nb_graph *g, nb_backend *be, nb_state *st, nb_state *scratch,
                            const nb_compile_options *opt, nb_plan **out) {
  *out = NULL;
  nb_plan *p = calloc(1, sizeof *p);
  if (!p) return nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  p->g = g;
  p->be = be;
  p->st = st;
  p->scratch = scratch;
  p->opt = opt ? *opt : nb_compile_defaults();
  p->n_nodes = g->n_nodes;
  p->info = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *p->info);
  nb_status s = p->info ? NB_OK : nb_error(NB_ERR_OOM, "nb_compile: out of memory");
  if (!s) s = nb_pass_verify(p);
  if (!s) s = nb_pass_dce(p);
  if (!s) s = assign_storage(p);
  if (!s) s = nb_pass_fuse(p);
  if (!s) s = nb_pass_schedule(p);
  if (!s) s = nb_pass_memplan(p);
  if (!s && p->arena_bytes) s = be->vt->alloc(be, p->arena_bytes, &p->arena);
  if (!s && p->kept_bytes) s = be->vt->alloc(be, p->kept_bytes, &p->kept);
  if (!s && p->apart_bytes) s = be->vt->alloc(be, p->apart_bytes, &p->apart);
  if (!s) s = bind_launches(p);
  /* A debugging aid, read once per plan: per-launch timings (plan.c). */
  const char *prof = getenv("NABLA_PROFILE");
  if (!s && prof && *prof && strcmp(prof, "0") != 0) {
    p->prof = calloc((size_t)(p->n_launch ? p->n_launch : 1), sizeof *p->prof);
    if (!p->prof) s = nb_error(NB_ERR_OOM, "nb_compile: out of memory");
    p->prof_cpu = strcmp(prof, "cpu") == 0;
  }
  if (s) {
    /* keep the pass's message, say where it came from */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    nb_plan_free(p);
    return nb_error(s, "nb_compile: %s", msg);
  }
  *out = p;
  return NB_OK;
}

nb_status nb_plan_alias_input(nb_plan *p, const nb_tensor *input, void *data) {
  nb_node_info *in = &p->info[input->id];
  if (input->op != NB_OP_INPUT || in->kind != NB_STORE_INPUT)
    return nb_error(NB_ERR_INTERNAL, "alias: node %d is not a kept input", input->id);
  nb_plan_graph_drop(p); /* a recording holds the old pointer */
  if (!in->aliased) p->be->vt->free(p->be, in->own);
  in->aliased = 1;
  in->own = data;
  for (int s = 0; s < p->n_launch; s++) {
    nb_launch *l = &p->launch[s];
    for (int k = 0; k < l->n_ins; k++)
      if (nb_storage_of(l->ins[k]) == input) l->in[k] = nb_plan_data(p, l->ins[k]);
  }
  return NB_OK;
}

/* Replaces the buffer *own (borrowed or not) by `lent`. */
static void take(nb_plan *p, void **own, int *borrowed, void *lent) {
  if (!lent || lent == *own) return;
  if (*own && !*borrowed) p->be->vt->free(p->be, *own);
  *own = lent;
  *borrowed = 1;
}

nb_status nb_plan_borrow_memory(nb_plan *p, nb_plan_loan loan) {
  if (loan.workspace && loan.ws_bytes < p->workspace_bytes)
    return nb_error(NB_ERR_INTERNAL, "borrow: workspace of %zu bytes, the plan needs %zu",
                    loan.ws_bytes, p->workspace_bytes);
  nb_plan_graph_drop(p); /* a recording holds the old pointers */
  take(p, &p->arena, &p->arena_borrowed, loan.arena);
  take(p, &p->kept, &p->kept_borrowed, loan.kept);
  take(p, &p->workspace, &p->workspace_borrowed, loan.workspace);
  if (loan.workspace) p->workspace_bytes = loan.ws_bytes;
  for (int s = 0; s < p->n_launch; s++) {
    nb_launch *l = &p->launch[s];
    for (int k = 0; k < l->n_ins; k++) l->in[k] = nb_plan_data(p, l->ins[k]);
  }
  return NB_OK;
}

void nb_plan_free(nb_plan *p) {
  if (!p) return;
  nb_mp_free(p->mp);
  nb_backend *be = p->be;
  nb_plan_graph_drop(p); /* before the memory it launches on */
  if (p->dist && p->dist->pending(p->dist->ctx)) p->dist->drain(p->dist->ctx);
  nb_plan_print_profile(p);
  free(p->prof);
  if (p->info) {
    for (int i = 0; i < p->n_nodes; i++) {
      nb_node_info *in = &p->info[i];
      if ((in->kind == NB_STORE_INPUT && !in->aliased) || in->kind == NB_STORE_CONSTANT)
        be->vt->free(be, in->own);
      if (in->fused) {
        free(in->fused->ops);
        free(in->fused->ext);
        free(in->fused);
      }
    }
  }
  for (int s = 0; s < p->n_launch; s++) {
    free(p->launch[s].in);
    free(p->launch[s].ins);
  }
  free(p->launch);
  free(p->info);
  if (p->arena && !p->arena_borrowed) be->vt->free(be, p->arena);
  if (p->kept && !p->kept_borrowed) be->vt->free(be, p->kept);
  if (p->apart) be->vt->free(be, p->apart);
  if (p->workspace && !p->workspace_borrowed) be->vt->free(be, p->workspace);
  if (p->counter) be->vt->free(be, p->counter);
  free(p);
}
