/* Graph objects: node storage, sticky errors, leaves and accessors. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"

struct nb_arena_block {
  struct nb_arena_block *next;
  size_t used, cap;
  _Alignas(64) unsigned char data[];
};

#define NB_BLOCK_MIN (64u * 1024u)

void *nb_graph_alloc(nb_graph *g, size_t bytes) {
  /* rounding up or adding the block header must not wrap around */
  if (bytes > SIZE_MAX - sizeof(struct nb_arena_block) - 64u) return NULL;
  bytes = (bytes + 63u) & ~(size_t)63u;
  struct nb_arena_block *b = g->blocks;
  if (!b || b->cap - b->used < bytes) {
    size_t cap = bytes > NB_BLOCK_MIN ? bytes : NB_BLOCK_MIN;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = g->blocks;
    b->used = 0;
    b->cap = cap;
    g->blocks = b;
  }
  void *p = b->data + b->used;
  b->used += bytes;
  memset(p, 0, bytes);
  return p;
}

static char *graph_strdup(nb_graph *g, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = nb_graph_alloc(g, n);
  if (p) memcpy(p, s, n);
  return p;
}

nb_graph *nb_graph_new(void) {
  nb_graph *g = calloc(1, sizeof *g);
  if (!g) nb_error(NB_ERR_OOM, "nb_graph_new: out of memory");
  return g;
}

void nb_graph_free(nb_graph *g) {
  if (!g) return;
  struct nb_arena_block *b = g->blocks;
  while (b) {
    struct nb_arena_block *next = b->next;
    free(b);
    b = next;
  }
  free(g->nodes);
  free(g);
}

nb_status nb_graph_status(const nb_graph *g) {
  if (!g) return NB_ERR_INVALID_ARG;
  return g->status;
}

const char *nb_graph_error(const nb_graph *g) {
  if (!g) return "graph is NULL";
  return g->error;
}

void nb_graph_fail(nb_graph *g, nb_status st) {
  /* NB_OK is not a failure: recording it would leave a message on a healthy
   * graph and let the next error overwrite the "first" one */
  if (!g || st == NB_OK || g->status != NB_OK) return;
  g->status = st;
  snprintf(g->error, sizeof g->error, "%s", nb_last_error());
}

int nb_graph_node_count(const nb_graph *g) { return g ? g->n_nodes : 0; }

nb_tensor *nb_graph_node(const nb_graph *g, int i) {
  if (!g || i < 0 || i >= g->n_nodes) return NULL;
  return g->nodes[i];
}

nb_tensor *nb_graph_find(const nb_graph *g, const char *name) {
  if (!g || !name) return NULL;
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i]->name && !strcmp(g->nodes[i]->name, name)) return g->nodes[i];
  return NULL;
}

void nb_set_contiguous_strides(nb_tensor *t) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    t->stride[i] = s;
    s *= t->shape[i];
  }
  t->offset = 0;
  t->base = NULL;
}

int nb_is_view_op(nb_opcode op) { return nb_op_def_get(op)->fusion == NB_FUSE_VIEW; }

int nb_norm_axis(int axis, int ndim) {
  if (axis < -ndim || axis >= ndim) return -1;
  return axis < 0 ? axis + ndim : axis;
}

/* Largest element count of any tensor: its bytes (at most 8 per element)
 * must fit in int64 and size_t, so later size arithmetic cannot overflow. */
#define NB_MAX_NUMEL (INT64_MAX / 8)

/* Checks that every dimension is >= 0 and the element count is at most
 * NB_MAX_NUMEL, without overflowing while multiplying. */
static nb_status check_dims(const char *what, int ndim, const int64_t *shape) {
  char s[256];
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return nb_error(NB_ERR_SHAPE, "%s: dimension %d is negative (%lld) in %s", what, i,
                      (long long)shape[i], nb_shape_str(ndim, shape, s, sizeof s));
    if (n && shape[i] > NB_MAX_NUMEL / n) n = -1; /* keep scanning for negatives */
    if (n > 0) n *= shape[i];
  }
  if (n < 0)
    return nb_error(NB_ERR_SHAPE, "%s: shape %s has too many elements (more than %lld)", what,
                    nb_shape_str(ndim, shape, s, sizeof s), (long long)NB_MAX_NUMEL);
  return NB_OK;
}

static int push_node(nb_graph *g, nb_tensor *t) {
  if (g->n_nodes == g->cap_nodes) {
    int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
    nb_tensor **nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
    if (!nodes) return 0;
    g->nodes = nodes;
    g->cap_nodes = cap;
  }
  t->id = g->n_nodes;
  g->nodes[g->n_nodes++] = t;
  return 1;
}

int nb_check_inputs(nb_graph *g, nb_opcode op, int n_in, nb_tensor *const *in) {
  const char *opname = nb_op_def_get(op)->name;
  if (!g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: graph is NULL", opname);
    return 0;
  }
  if (n_in > 0 && !in) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: input list is NULL", opname));
    return 0;
  }
  for (int i = 0; i < n_in; i++) {
    if (!in[i]) {
      /* An earlier failure already explains this; otherwise say which input. */
      if (g->status == NB_OK) {
        nb_error(NB_ERR_INVALID_ARG, "%s: input %d is NULL", opname, i);
        nb_graph_fail(g, NB_ERR_INVALID_ARG);
      }
      return 0;
    }
    if (in[i]->graph != g) {
      nb_graph_fail(
          g, nb_error(NB_ERR_INVALID_ARG, "%s: input %d belongs to a different graph", opname, i));
      return 0;
    }
  }
  return 1;
}

nb_tensor *nb_node_new(nb_graph *g, nb_opcode op, int n_in, nb_tensor *const *in, const int64_t *ip,
                       int n_ip, const float *fp, int n_fp) {
  if (!nb_check_inputs(g, op, n_in, in)) return NULL;
  const char *opname = nb_op_def_get(op)->name;
  if (n_ip > NB_OP_IPARAMS || n_fp > NB_OP_FPARAMS) {
    nb_graph_fail(g, nb_error(NB_ERR_INTERNAL, "%s: too many op params", opname));
    return NULL;
  }
  nb_tensor *t = nb_graph_alloc(g, sizeof *t);
  nb_tensor **ins = n_in ? nb_graph_alloc(g, (size_t)n_in * sizeof *ins) : NULL;
  if (!t || (n_in && !ins)) {
    nb_graph_fail(g, nb_error(NB_ERR_OOM, "%s: out of memory", opname));
    return NULL;
  }
  t->graph = g;
  t->op = op;
  t->device = g->scope_device;
  t->segment = g->segment_open;
  t->n_in = n_in;
  t->in = ins;
  for (int i = 0; i < n_in; i++) ins[i] = in[i];
  for (int i = 0; i < n_ip; i++) t->ip[i] = ip[i];
  for (int i = 0; i < n_fp; i++) t->fp[i] = fp[i];
  const nb_op_def *def = nb_op_def_get(op);
  if (def->infer) {
    nb_status st = def->infer(t);
    if (st != NB_OK) {
      /* Prefix the op name unless the message already starts with it. */
      const char *msg = nb_last_error();
      size_t n = strlen(opname);
      if (strncmp(msg, opname, n) != 0 || msg[n] != ':') {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", msg);
        nb_error(st, "%s: %s", opname, buf);
      }
      nb_graph_fail(g, st);
      return NULL;
    }
  }
  /* Shape inference trusts its params; a negative or astronomically large
   * result (e.g. broadcast_to [-5, 1], one_hot with 2^62 classes) would make
   * every later size computation overflow, so it is rejected here for all
   * ops at once. */
  nb_status st = check_dims(opname, t->ndim, t->shape);
  if (st != NB_OK) {
    nb_graph_fail(g, st);
    return NULL;
  }
  if (!t->base && !nb_is_view_op(op)) nb_set_contiguous_strides(t);
  if (!push_node(g, t)) {
    nb_graph_fail(g, nb_error(NB_ERR_OOM, "%s: out of memory", opname));
    return NULL;
  }
  return t;
}

nb_tensor *nb_node_clone(nb_graph *g, const nb_tensor *src, nb_tensor *const *in, nb_tensor *base) {
  nb_tensor *t = nb_graph_alloc(g, sizeof *t);
  nb_tensor **ins = src->n_in ? nb_graph_alloc(g, (size_t)src->n_in * sizeof *ins) : NULL;
  if (!t || (src->n_in && !ins)) {
    nb_graph_fail(g, nb_error(NB_ERR_OOM, "%s: out of memory", nb_op_def_get(src->op)->name));
    return NULL;
  }
  *t = *src;
  t->graph = g;
  t->in = ins;
  for (int i = 0; i < src->n_in; i++) ins[i] = in[i];
  t->base = base;
  t->grad = NULL;
  t->device = 0;
  t->flags &= ~(unsigned)NB_FLAG_OUTPUT;
  if (!push_node(g, t)) {
    nb_graph_fail(g, nb_error(NB_ERR_OOM, "%s: out of memory", nb_op_def_get(src->op)->name));
    return NULL;
  }
  return t;
}

/* ---- leaves ---------------------------------------------------------------- */

static nb_status check_shape(const char *what, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > NB_MAX_DIMS)
    return nb_error(NB_ERR_SHAPE, "%s: rank %d is outside [0, %d]", what, ndim, NB_MAX_DIMS);
  if (ndim > 0 && !shape) return nb_error(NB_ERR_INVALID_ARG, "%s: shape is NULL", what);
  return check_dims(what, ndim, shape);
}

static nb_tensor *leaf(nb_graph *g, nb_opcode op, const char *what, const char *name, nb_dtype dt,
                       int ndim, const int64_t *shape) {
  if (!g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: graph is NULL", what);
    return NULL;
  }
  nb_status st = check_shape(what, ndim, shape);
  if (st == NB_OK && !nb_dtype_valid((int)dt))
    st = nb_error(NB_ERR_DTYPE, "%s: invalid dtype %d", what, (int)dt);
  if (st != NB_OK) {
    nb_graph_fail(g, st);
    return NULL;
  }
  nb_tensor *t = nb_node_new(g, op, 0, NULL, NULL, 0, NULL, 0);
  if (!t) return NULL;
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  nb_set_contiguous_strides(t);
  if (name) nb_tensor_set_name(t, name);
  return t;
}

nb_tensor *nb_input(nb_graph *g, const char *name, nb_dtype dt, int ndim, const int64_t *shape) {
  return leaf(g, NB_OP_INPUT, "nb_input", name, dt, ndim, shape);
}

nb_tensor *nb_variable(nb_graph *g, const char *name, nb_dtype dt, int ndim, const int64_t *shape,
                       nb_init init) {
  if (g && (!name || !*name)) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "nb_variable: a variable needs a name"));
    return NULL;
  }
  /* an unknown init kind would silently fill zeros in nb_state_bind */
  if (g && (init.kind < NB_INIT_ZEROS || init.kind > NB_INIT_NORMAL)) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "nb_variable: '%s' has unknown init kind %d",
                              name, (int)init.kind));
    return NULL;
  }
  nb_tensor *t = leaf(g, NB_OP_VARIABLE, "nb_variable", name, dt, ndim, shape);
  if (t) t->init = init;
  return t;
}

nb_tensor *nb_param(nb_graph *g, const char *name, int ndim, const int64_t *shape, nb_init init) {
  nb_tensor *t = nb_variable(g, name, NB_F32, ndim, shape, init);
  if (t) t->flags |= NB_FLAG_REQUIRES_GRAD;
  return t;
}

nb_tensor *nb_constant(nb_graph *g, nb_dtype dt, int ndim, const int64_t *shape, const void *data) {
  nb_tensor *t = leaf(g, NB_OP_CONSTANT, "nb_constant", NULL, dt, ndim, shape);
  if (!t) return NULL;
  size_t bytes = (size_t)nb_shape_numel(ndim, shape) * nb_dtype_size(dt);
  if (!data && bytes) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "nb_constant: data is NULL"));
    return NULL;
  }
  t->data = nb_graph_alloc(g, bytes ? bytes : 1);
  if (!t->data) {
    nb_graph_fail(g, nb_error(NB_ERR_OOM, "nb_constant: out of memory (%zu bytes)", bytes));
    return NULL;
  }
  if (bytes) memcpy(t->data, data, bytes);
  return t;
}

nb_tensor *nb_scalar(nb_graph *g, float value) { return nb_constant(g, NB_F32, 0, NULL, &value); }

/* ---- accessors ------------------------------------------------------------- */

int nb_tensor_ndim(const nb_tensor *t) { return t ? t->ndim : 0; }
const int64_t *nb_tensor_shape(const nb_tensor *t) { return t ? t->shape : NULL; }
int64_t nb_tensor_numel(const nb_tensor *t) { return t ? nb_shape_numel(t->ndim, t->shape) : 0; }
nb_dtype nb_tensor_dtype(const nb_tensor *t) { return t ? t->dtype : NB_F32; }
const char *nb_tensor_name(const nb_tensor *t) { return t && t->name ? t->name : ""; }
const char *nb_tensor_op_name(const nb_tensor *t) { return t ? nb_op_def_get(t->op)->name : ""; }
int nb_tensor_id(const nb_tensor *t) { return t ? t->id : -1; }
int nb_tensor_input_count(const nb_tensor *t) { return t ? t->n_in : 0; }
nb_tensor *nb_tensor_input(const nb_tensor *t, int i) {
  return t && i >= 0 && i < t->n_in ? t->in[i] : NULL;
}

void nb_tensor_set_name(nb_tensor *t, const char *name) {
  if (!t || !name) return;
  char *s = graph_strdup(t->graph, name);
  if (s) t->name = s;
}

int nb_tensor_is_contiguous(const nb_tensor *t) {
  if (!t) return 0;
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->stride[i] != s) return 0;
    s *= t->shape[i];
  }
  return 1;
}

void nb_tensor_set_output(nb_tensor *t) {
  if (t) t->flags |= NB_FLAG_OUTPUT;
}

void nb_tensor_set_requires_grad(nb_tensor *t, int on) {
  if (!t) return;
  if (on)
    t->flags |= NB_FLAG_REQUIRES_GRAD;
  else
    t->flags &= ~(unsigned)NB_FLAG_REQUIRES_GRAD;
}

int nb_tensor_requires_grad(const nb_tensor *t) {
  return t && (t->flags & NB_FLAG_REQUIRES_GRAD) ? 1 : 0;
}

/* ---- assign ------------------------------------------------------------------ */

nb_status nb_infer_assign(nb_tensor *t) {
  const nb_tensor *var = t->in[0], *val = t->in[1];
  if (var->op != NB_OP_VARIABLE)
    return nb_error(NB_ERR_INVALID_ARG, "target must be a variable, got a %s node",
                    nb_op_def_get(var->op)->name);
  int ok = var->dtype == val->dtype && var->ndim == val->ndim;
  for (int i = 0; ok && i < var->ndim; i++) ok = var->shape[i] == val->shape[i];
  if (!ok) {
    char s0[128], s1[128];
    return nb_error(NB_ERR_SHAPE, "value %s %s does not match variable '%s' %s %s",
                    nb_dtype_name(val->dtype), nb_shape_str(val->ndim, val->shape, s0, sizeof s0),
                    var->name, nb_dtype_name(var->dtype),
                    nb_shape_str(var->ndim, var->shape, s1, sizeof s1));
  }
  t->dtype = var->dtype;
  t->ndim = var->ndim;
  for (int i = 0; i < var->ndim; i++) t->shape[i] = var->shape[i];
  return NB_OK;
}

nb_tensor *nb_assign(nb_graph *g, nb_tensor *var, nb_tensor *value) {
  nb_tensor *in[2] = {var, value};
  /* under a loss scaler's guard (autocast.c) a skipped step keeps the old
   * value, selected inside the step: no host round trip decides it */
  if (g && g->assign_guard && var && value) {
    if (var->dtype != NB_F32) {
      nb_graph_fail(g, nb_error(NB_ERR_DTYPE,
                                "assign: variable '%s' is %s; a loss scaler can skip updates of "
                                "f32 variables only",
                                var->name ? var->name : "", nb_dtype_name(var->dtype)));
      return NULL;
    }
    in[1] = nb_where(g, g->assign_guard, var, value);
  }
  return nb_node_new(g, NB_OP_ASSIGN, 2, in, NULL, 0, NULL, 0);
}

nb_status nb_graph_set_error(nb_graph *g, nb_status st, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  nb_error(st, "%s", buf);
  nb_graph_fail(g, st);
  return st;
}
