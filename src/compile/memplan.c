/* Passes 4 and 5: schedule launches, compute liveness, and plan the arena.
 *
 * Every intermediate gets a region of one arena. Walking the launches in
 * order, a node's region is taken best-fit from the free list when it is
 * produced and returned after its last reader has run (the ggml-alloc idea).
 * An elementwise launch may write over an input that dies at that launch. */
#include <stdlib.h>
#include <string.h>

#include "compile_internal.h"

#define ALIGN 64u

static size_t align_up(size_t n) { return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static int launched(const nb_plan *p, const nb_tensor *t) {
  const nb_node_info *in = &p->info[t->id];
  if (!in->keep || t->n_in == 0 || t->base || nb_is_view_op(t->op)) return 0;
  if (in->epilogue_of >= 0) return 0; /* runs inside its consumer's launch */
  return in->group < 0 || in->fused != NULL;
}

/* The nodes a launch reads: the node's inputs, a group's external inputs,
 * or a producer's inputs followed by its epilogue group's. */
static nb_status list_inputs(nb_launch *l) {
  const nb_tensor *prod = l->producer;
  int a = prod ? prod->n_in : l->group ? 0 : l->node->n_in;
  int b = l->group ? l->group->n_ext : 0;
  l->n_ins = a + b;
  l->ins = calloc((size_t)(a + b ? a + b : 1), sizeof *l->ins);
  if (!l->ins) return nb_error(NB_ERR_OOM, "schedule: out of memory");
  for (int k = 0; k < a; k++) l->ins[k] = prod ? prod->in[k] : l->node->in[k];
  for (int k = 0; k < b; k++) l->ins[a + k] = l->group->ext[k];
  return NB_OK;
}

/* ---- launch order ------------------------------------------------------------
 *
 * Creation order, which is always valid, with two exceptions that let a
 * gradient reduction (dist.h) overlap computation: an allreduce_start is
 * launched as soon as the launches producing its inputs have run (backward
 * creates the gradients of the last layers first, so their bucket starts
 * while the earlier layers' gradients are still being computed), and an
 * allreduce_wait is launched only right before the first launch that reads
 * its result (so the optimizer updates of earlier buckets also overlap). A
 * start reading a leaf (a variable, an input) stays in place, so it never
 * moves across a write of that leaf. */

static int is_start(const nb_tensor *t) { return t->op == NB_OP_ALLREDUCE_START; }
static int is_wait(const nb_tensor *t) { return t->op == NB_OP_ALLREDUCE_WAIT; }

/* Appends t's launch, after the waits whose results it reads. */
static nb_status emit(nb_plan *p, nb_tensor *t, char *done) {
  if (done[t->id]) return NB_OK;
  nb_launch l = {.node = t, .group = p->info[t->id].fused, .producer = p->info[t->id].producer};
  nb_status st = list_inputs(&l);
  for (int k = 0; !st && k < l.n_ins; k++) {
    nb_tensor *x = (nb_tensor *)nb_storage_of(l.ins[k]);
    if ((is_wait(x) || is_start(x)) && launched(p, x) && !done[x->id]) st = emit(p, x, done);
    if (!st && x != t && launched(p, x) && !done[x->id])
      st = nb_error(NB_ERR_INTERNAL, "schedule: node %d (%s) would run before its input %d (%s)",
                    t->id, nb_op_def_get(t->op)->name, x->id, nb_op_def_get(x->op)->name);
  }
  if (st) {
    free(l.ins);
    return st;
  }
  if (is_start(t)) p->dist = t->data;
  p->launch[p->n_launch] = l;
  p->info[t->id].step = p->n_launch++;
  done[t->id] = 1;
  return NB_OK;
}

/* Launches every start whose inputs have all been produced. */
static nb_status hoist_starts(nb_plan *p, char *done, const int *starts, int n_starts) {
  for (int j = 0; j < n_starts; j++) {
    nb_tensor *s = p->g->nodes[starts[j]];
    if (done[s->id]) continue;
    int ready = 1;
    for (int k = 0; ready && k < s->n_in; k++) {
      const nb_tensor *x = nb_storage_of(s->in[k]);
      ready = launched(p, x) && done[x->id];
    }
    if (!ready) continue;
    nb_status st = emit(p, s, done);
    if (st) return st;
  }
  return NB_OK;
}

nb_status nb_pass_schedule(nb_plan *p) {
  nb_graph *g = p->g;
  int n = 0, n_starts = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    n += launched(p, g->nodes[i]);
    n_starts += launched(p, g->nodes[i]) && is_start(g->nodes[i]);
  }
  p->launch = calloc((size_t)(n ? n : 1), sizeof *p->launch);
  char *done = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
  int *starts = malloc((size_t)(n_starts ? n_starts : 1) * sizeof *starts);
  nb_status st = NB_OK;
  if (!p->launch || !done || !starts) st = nb_error(NB_ERR_OOM, "schedule: out of memory");
  n_starts = 0;
  for (int i = 0; !st && i < g->n_nodes; i++)
    if (launched(p, g->nodes[i]) && is_start(g->nodes[i])) starts[n_starts++] = i;
  /* assigns run last so every read of a variable sees its old value */
  for (int pass = 0; !st && pass < 2; pass++) {
    if (pass == 0 && n_starts) st = hoist_starts(p, done, starts, n_starts);
    for (int i = 0; !st && i < g->n_nodes; i++) {
      nb_tensor *t = g->nodes[i];
      if (!launched(p, t) || (t->op == NB_OP_ASSIGN) != pass || is_wait(t)) continue;
      st = emit(p, t, done);
      if (!st && pass == 0 && n_starts) st = hoist_starts(p, done, starts, n_starts);
    }
    /* waits nothing read before the assigns */
    for (int i = 0; !st && pass == 0 && i < g->n_nodes; i++)
      if (launched(p, g->nodes[i]) && is_wait(g->nodes[i])) st = emit(p, g->nodes[i], done);
  }
  free(done);
  free(starts);
  if (st) return st;
  if (p->n_launch != n)
    return nb_error(NB_ERR_INTERNAL, "schedule: %d of %d launches ordered", p->n_launch, n);
  for (int i = 0; i < g->n_nodes; i++) p->info[i].last_use = -1;
  for (int s = 0; s < p->n_launch; s++) {
    const nb_launch *l = &p->launch[s];
    for (int k = 0; k < l->n_ins; k++) {
      const nb_tensor *x = l->ins[k];
      nb_node_info *xi = &p->info[nb_storage_of(x)->id];
      if (s > xi->last_use) xi->last_use = s;
    }
  }
  /* outputs and assigned values must survive the whole run */
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *t = g->nodes[i];
    if (!p->info[i].keep) continue;
    if (t->flags & NB_FLAG_OUTPUT) p->info[nb_storage_of(t)->id].last_use = p->n_launch;
    if (t->op == NB_OP_ASSIGN) p->info[nb_storage_of(t->in[1])->id].last_use = p->n_launch;
  }
  return NB_OK;
}

/* ---- best-fit free list ------------------------------------------------------ */

typedef struct {
  size_t off, size;
} block;

typedef struct {
  block *b;
  int n, cap;
  size_t end; /* high-water mark = arena size */
} freelist;

static size_t fl_alloc(freelist *f, size_t size) {
  int best = -1;
  for (int i = 0; i < f->n; i++)
    if (f->b[i].size >= size && (best < 0 || f->b[i].size < f->b[best].size)) best = i;
  if (best < 0) {
    /* grow the arena, extending a free block that touches its end */
    if (f->n && f->b[f->n - 1].off + f->b[f->n - 1].size == f->end) {
      block *last = &f->b[f->n - 1];
      size_t off = last->off;
      f->end = off + size;
      f->n--;
      return off;
    }
    size_t off = f->end;
    f->end += size;
    return off;
  }
  size_t off = f->b[best].off;
  f->b[best].off += size;
  f->b[best].size -= size;
  if (f->b[best].size == 0) {
    memmove(&f->b[best], &f->b[best + 1], (size_t)(f->n - best - 1) * sizeof *f->b);
    f->n--;
  }
  return off;
}

static int fl_free(freelist *f, size_t off, size_t size) {
  if (f->n + 1 > f->cap) {
    int cap = f->cap ? f->cap * 2 : 64;
    block *b = realloc(f->b, (size_t)cap * sizeof *b);
    if (!b) return 0;
    f->b = b;
    f->cap = cap;
  }
  int i = 0;
  while (i < f->n && f->b[i].off < off) i++;
  memmove(&f->b[i + 1], &f->b[i], (size_t)(f->n - i) * sizeof *f->b);
  f->b[i] = (block){off, size};
  f->n++;
  /* merge with neighbours so large requests can reuse freed space */
  if (i + 1 < f->n && f->b[i].off + f->b[i].size == f->b[i + 1].off) {
    f->b[i].size += f->b[i + 1].size;
    memmove(&f->b[i + 1], &f->b[i + 2], (size_t)(f->n - i - 2) * sizeof *f->b);
    f->n--;
  }
  if (i > 0 && f->b[i - 1].off + f->b[i - 1].size == f->b[i].off) {
    f->b[i - 1].size += f->b[i].size;
    memmove(&f->b[i], &f->b[i + 1], (size_t)(f->n - i - 1) * sizeof *f->b);
    f->n--;
  }
  return 1;
}

/* An elementwise launch may take over the region of an input that is read
 * for the last time here, has the same byte size, is read densely, and is
 * not read through a second view in the same launch. */
static int pick_inplace(const nb_plan *p, const nb_launch *l, int s) {
  /* an epilogue's producer reads its inputs while it writes the output */
  if (!l->group || l->producer) return -1;
  const nb_tensor *out = l->node;
  for (int k = 0; k < l->group->n_ext; k++) {
    const nb_tensor *x = l->group->ext[k];
    const nb_node_info *xi = &p->info[x->id];
    if (x->base || xi->kind != NB_STORE_ARENA || xi->region || xi->last_use != s) continue;
    if (xi->bytes != p->info[out->id].bytes || x->dtype != out->dtype) continue;
    if (nb_tensor_numel(x) != nb_tensor_numel(out)) continue;
    int shared = 0;
    for (int j = 0; j < l->group->n_ext; j++)
      if (j != k && nb_storage_of(l->group->ext[j]) == x) shared = 1;
    if (!shared) return x->id;
  }
  return -1;
}

/* An optimizer's new value (m = b1 m + (1 - b1) g, p = p - lr u) is
 * computed by an elementwise group that reads the old value of the same
 * variable, and an assign then copies it over the variable at the end of
 * the run. When no later launch reads the variable, the group can write the
 * variable's storage directly: each element is read before it is written,
 * the assign becomes a no-op, and the value needs no arena region. */
static void assign_in_place(nb_plan *p) {
  nb_graph *g = p->g;
  for (int i = 0; i < g->n_nodes; i++) {
    const nb_tensor *a = g->nodes[i];
    if (!p->info[i].keep || a->op != NB_OP_ASSIGN) continue;
    const nb_tensor *var = a->in[0], *val = a->in[1];
    nb_node_info *vi = &p->info[val->id], *si = &p->info[var->id];
    if (val->base || vi->kind != NB_STORE_ARENA || !vi->fused || vi->producer || vi->region)
      continue;
    if (si->kind != NB_STORE_STATE || val->dtype != var->dtype) continue;
    if (!nb_tensor_is_contiguous(val) || !nb_tensor_is_contiguous(var)) continue;
    int L = vi->step, ok = L >= 0;
    /* the only assign of this variable and of this value */
    for (int j = 0; ok && j < g->n_nodes; j++) {
      const nb_tensor *b = g->nodes[j];
      if (j != i && p->info[j].keep && b->op == NB_OP_ASSIGN &&
          (b->in[0] == var || b->in[1] == val))
        ok = 0;
    }
    /* nothing reads the variable after L; at L only elementwise, same index */
    for (int s = L; ok && s < p->n_launch; s++) {
      const nb_launch *l = &p->launch[s];
      if (l->node->op == NB_OP_ASSIGN) continue; /* assigns read values, not variables */
      for (int k = 0; ok && k < l->n_ins; k++)
        if (nb_storage_of(l->ins[k]) == var && (s > L || l->ins[k] != var)) ok = 0;
    }
    if (!ok) continue;
    vi->kind = NB_STORE_STATE;
    vi->own = si->own;
    vi->assign_of = var->id;
    p->n_inplace++;
  }
}

nb_status nb_pass_memplan(nb_plan *p) {
  nb_graph *g = p->g;
  freelist f = {0};
  for (int i = 0; i < g->n_nodes; i++) p->info[i].assign_of = -1;
  if (p->opt.inplace && p->opt.reuse_memory) assign_in_place(p);
  /* storage owners to release after each launch */
  int *release_head = malloc((size_t)(p->n_launch + 1) * sizeof *release_head);
  int *release_next = malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof *release_next);
  if (!release_head || !release_next) {
    free(release_head);
    free(release_next);
    return nb_error(NB_ERR_OOM, "memplan: out of memory");
  }
  for (int s = 0; s <= p->n_launch; s++) release_head[s] = -1;
  p->naive_bytes = 0;
  /* results read after the run: their storage goes to the kept or the
   * apart buffer (what the caller reads wins over a hand-over) */
  for (int i = 0; i < g->n_nodes; i++) {
    unsigned f = g->nodes[i]->flags;
    nb_node_info *o = &p->info[nb_storage_of(g->nodes[i])->id];
    if (!p->info[i].keep) continue;
    if (f & NB_FLAG_APART) o->region = NB_REGION_APART;
    if ((f & NB_FLAG_KEPT) && o->region == NB_REGION_ARENA) o->region = NB_REGION_KEPT;
  }
  size_t end[3] = {0, 0, 0}; /* bump ends of the kept and apart buffers */
  for (int i = 0; i < g->n_nodes; i++) {
    nb_node_info *in = &p->info[i];
    in->inplace_of = -1;
    size_t bytes =
        align_up((size_t)nb_tensor_numel(g->nodes[i]) * nb_dtype_size(g->nodes[i]->dtype));
    /* The naive baseline gives every kernel result a buffer of its own. An
     * epilogue's producer is still a kernel result (a convolution's output),
     * which the plan stores in its consumer's buffer instead, and a value
     * written straight into its variable is one too: count them, so that
     * naive_bytes means the same with and without these savings. */
    if (in->epilogue_of >= 0 || in->assign_of >= 0) p->naive_bytes += bytes;
    if (in->kind != NB_STORE_ARENA) continue;
    in->bytes = bytes;
    p->naive_bytes += in->bytes;
  }
  nb_status st = NB_OK;
  for (int s = 0; s < p->n_launch && st == NB_OK; s++) {
    const nb_launch *l = &p->launch[s];
    nb_node_info *oi = &p->info[l->node->id];
    if (oi->kind == NB_STORE_ARENA && oi->region) {
      /* alive until read after the run: never released */
      oi->offset = end[oi->region];
      end[oi->region] += oi->bytes;
    } else if (oi->kind == NB_STORE_ARENA) {
      int victim = p->opt.inplace && p->opt.reuse_memory ? pick_inplace(p, l, s) : -1;
      if (victim >= 0) {
        oi->offset = p->info[victim].offset;
        oi->inplace_of = victim;
        p->info[victim].last_use = -2; /* ownership moved: never released */
        p->n_inplace++;
      } else if (!p->opt.reuse_memory) {
        oi->offset = f.end;
        f.end += oi->bytes;
      } else {
        oi->offset = fl_alloc(&f, oi->bytes);
      }
      int last = oi->last_use < s ? s : oi->last_use; /* unread results die at once */
      release_next[l->node->id] = release_head[last];
      release_head[last] = l->node->id;
    }
    if (!p->opt.reuse_memory) continue;
    for (int i = release_head[s]; i >= 0; i = release_next[i])
      if (p->info[i].last_use != -2 && !fl_free(&f, p->info[i].offset, p->info[i].bytes))
        st = nb_error(NB_ERR_OOM, "memplan: out of memory");
  }
  p->arena_bytes = f.end;
  p->kept_bytes = end[NB_REGION_KEPT];
  p->apart_bytes = end[NB_REGION_APART];
  free(f.b);
  free(release_head);
  free(release_next);
  return st;
}
