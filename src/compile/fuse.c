/* Pass 3: fuse chains of elementwise ops into groups that run as one kernel
 * and write only their last result. A producer joins its consumer's group
 * when the consumer is its only reader, the shapes are equal, and the
 * producer is not needed outside (output, assign value). Then groups that
 * finish an opaque kernel's output become that kernel's epilogue. */
#include <stdlib.h>

#include "compile_internal.h"

#define MAX_GROUP_OPS 48

static int find(int *parent, int i) {
  while (parent[i] != i) i = parent[i] = parent[parent[i]];
  return i;
}

static int same_shape(const nb_tensor *a, const nb_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static int is_elementwise(const nb_plan *p, const nb_tensor *t) {
  return p->info[t->id].keep && nb_op_def_get(t->op)->fusion == NB_FUSE_ELEMWISE;
}

static nb_status build_group(nb_plan *p, const int *members, int n, nb_fused_group *grp) {
  grp->ops = calloc((size_t)n, sizeof *grp->ops);
  grp->ext = calloc((size_t)(3 * n), sizeof *grp->ext);
  if (!grp->ops || !grp->ext) return nb_error(NB_ERR_OOM, "fuse: out of memory");
  grp->n_ops = n;
  for (int k = 0; k < n; k++) {
    const nb_tensor *t = p->g->nodes[members[k]];
    nb_fused_op *op = &grp->ops[k];
    op->op = t->op;
    op->n_src = t->n_in;
    op->ip0 = t->ip[0];
    for (int f = 0; f < NB_OP_FPARAMS; f++) op->fp[f] = t->fp[f];
    for (int s = 0; s < t->n_in; s++) {
      const nb_tensor *x = t->in[s];
      int member = -1;
      for (int j = 0; j < k; j++)
        if (members[j] == x->id) member = j;
      if (member >= 0) {
        op->src[s] = -(member + 1);
        continue;
      }
      int e = 0;
      while (e < grp->n_ext && grp->ext[e] != x) e++;
      if (e == grp->n_ext) grp->ext[grp->n_ext++] = x;
      op->src[s] = e;
    }
  }
  return NB_OK;
}

/* Kernels that launch between nodes a and b (exclusive) besides the members
 * of b's group: opaque and reduce nodes and other groups' roots. Views,
 * leaves and group members launch nothing of their own. */
static int launches_between(const nb_plan *p, int a, int b) {
  int n = 0;
  for (int j = a + 1; j < b; j++) {
    const nb_node_info *in = &p->info[j];
    if (!in->keep) continue;
    nb_fusion f = nb_op_def_get(p->g->nodes[j]->op)->fusion;
    n += f == NB_FUSE_OPAQUE || f == NB_FUSE_REDUCE || in->fused != NULL;
  }
  return n;
}

/* 1 if the arena storage `s` is read by a kept node at or after node
 * `from` (directly or through a view), or is an output. */
static int read_from(const nb_plan *p, const nb_tensor *s, int from) {
  if (s->flags & NB_FLAG_OUTPUT) return 1;
  for (int j = from; j < p->g->n_nodes; j++) {
    const nb_tensor *t = p->g->nodes[j];
    if (!p->info[j].keep) continue;
    for (int k = 0; k < t->n_in; k++)
      if (nb_storage_of(t->in[k]) == s) return 1;
  }
  return 0;
}

/* Most launches an epilogue may move its kernel past (a gradient's sibling
 * matmul, a mask): far below the length of a backward pass. */
#define EPILOGUE_MAX_GAP 8

/* 1 if running kernel x at group root's place would keep one of x's
 * inputs alive across many launches it would otherwise be dead for. */
static int epilogue_extends_lives(const nb_plan *p, const nb_tensor *x, int root) {
  if (launches_between(p, x->id, root) <= EPILOGUE_MAX_GAP) return 0;
  for (int k = 0; k < x->n_in; k++) {
    const nb_tensor *s = nb_storage_of(x->in[k]);
    if (p->info[s->id].kind == NB_STORE_ARENA && !read_from(p, s, root)) return 1;
  }
  return 0;
}

/* Epilogues: a group whose input X is the whole output of an opaque kernel
 * (a convolution, a pooling gradient, a matmul) that nothing else reads runs
 * inside that kernel, on each chunk of X while it is still in cache, and
 * writes straight to the group's result: conv + bias + ReLU is one pass over
 * memory instead of three, and X needs no arena region. The backend says
 * which kernels take epilogues.
 * Not where that would keep X's inputs alive for long: the kernel moves to
 * the group's place, and with it the last read of its inputs. A weight
 * gradient whose SGD update comes after the whole backward pass would keep
 * its activation and output gradient (and recomputed activations,
 * recompute.c) alive to the end; computed in its place it frees them and
 * keeps only the weight-sized gradient. */
static void pick_epilogues(nb_plan *p) {
  nb_backend *be = p->be;
  if (!be->vt->fuses_epilogue) return;
  nb_graph *g = p->g;
  for (int i = 0; i < g->n_nodes; i++) {
    nb_fused_group *grp = p->info[i].fused;
    if (!grp) continue;
    const nb_tensor *root = g->nodes[i];
    for (int e = 0; e < grp->n_ext; e++) {
      nb_tensor *x = (nb_tensor *)grp->ext[e];
      nb_node_info *xi = &p->info[x->id];
      if (x->base || xi->kind != NB_STORE_ARENA || (x->flags & NB_FLAG_OUTPUT)) continue;
      if (xi->n_consumers != 1 || xi->epilogue_of >= 0 || x->dtype != NB_F32) continue;
      if (nb_op_def_get(x->op)->fusion != NB_FUSE_OPAQUE || !same_shape(x, root)) continue;
      if (!nb_tensor_is_contiguous(x) || !be->vt->fuses_epilogue(be, x)) continue;
      if (epilogue_extends_lives(p, x, i)) continue;
      xi->epilogue_of = i;
      xi->kind = NB_STORE_NONE;
      p->info[i].producer = x;
      p->n_epilogues++;
      break;
    }
  }
}

nb_status nb_pass_fuse(nb_plan *p) {
  nb_graph *g = p->g;
  int n = g->n_nodes;
  int *parent = malloc((size_t)n * sizeof *parent);
  int *size = malloc((size_t)n * sizeof *size);
  int *members = malloc((size_t)n * sizeof *members);
  nb_status st = NB_OK;
  if (!parent || !size || !members) {
    st = nb_error(NB_ERR_OOM, "fuse: out of memory");
    goto done;
  }
  for (int i = 0; i < n; i++) {
    parent[i] = i;
    size[i] = 1;
    p->info[i].group = -1;
    p->info[i].epilogue_of = -1;
    p->info[i].producer = NULL;
  }
  if (p->opt.fuse) {
    for (int i = 0; i < n; i++) {
      nb_tensor *t = g->nodes[i];
      if (!is_elementwise(p, t)) continue;
      for (int k = 0; k < t->n_in; k++) {
        nb_tensor *x = t->in[k];
        if (x->base || !is_elementwise(p, x) || (x->flags & NB_FLAG_OUTPUT)) continue;
        if (p->info[x->id].n_consumers != 1 || !same_shape(x, t)) continue;
        int a = find(parent, x->id), b = find(parent, i);
        if (a == b || size[a] + size[b] > MAX_GROUP_OPS) continue;
        parent[a] = b;
        size[b] += size[a];
      }
    }
  }
  /* Number the groups by their root (the last member) and build them. */
  int n_groups = 0;
  for (int i = 0; i < n; i++)
    if (is_elementwise(p, g->nodes[i]) && find(parent, i) == i) p->info[i].group = n_groups++;
  p->n_groups = n_groups;
  for (int i = 0; i < n && st == NB_OK; i++) {
    if (p->info[i].group < 0) continue;
    int m = 0;
    for (int j = 0; j <= i; j++)
      if (is_elementwise(p, g->nodes[j]) && find(parent, j) == i) members[m++] = j;
    nb_fused_group *grp = calloc(1, sizeof *grp);
    if (!grp) {
      st = nb_error(NB_ERR_OOM, "fuse: out of memory");
      break;
    }
    st = build_group(p, members, m, grp);
    p->info[i].fused = grp;
    if (m > 1) p->n_fused++;
    for (int k = 0; k < m - 1; k++) {
      p->info[members[k]].group = p->info[i].group;
      p->info[members[k]].kind = NB_STORE_NONE;
    }
  }
  if (st == NB_OK && p->opt.fuse) pick_epilogues(p);
done:
  free(parent);
  free(size);
  free(members);
  return st;
}
