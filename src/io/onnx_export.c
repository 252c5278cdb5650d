/* ONNX export: walks the nodes of a nabla graph that an output needs and
 * writes each as one or a few ONNX operators (opset 17) with the protobuf
 * writer of onnx_write.c. Variables and constants become initializers.
 *
 * Four passes over the nodes:
 *  1. which nodes the outputs need, and how many needed nodes read each;
 *  2. (dynamic batch) which axis of each node carries the batch "N", so
 *     reshapes can put their -1 there and shapes can name it;
 *  3. patterns that nabla's layers build from primitive ops and ONNX has as
 *     one operator (conv + bias, linear, eval-mode batch norm, layer norm,
 *     mean): the root node of a match is written as that operator and the
 *     nodes inside it are skipped. Only nodes that nothing else reads can be
 *     folded into a match, so every value the rest of the graph needs stays
 *     in the ONNX graph;
 *  4. the nodes in graph order (always a valid execution order). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "nabla/io.h"
#include "nabla/onnx.h"

#define OPSET      17
#define IR_VERSION 8

/* ONNX field numbers (onnx.proto) */
enum { MODEL_IR = 1, MODEL_PRODUCER = 2, MODEL_PRODUCER_VERSION = 3, MODEL_DOC = 6 };
enum { MODEL_GRAPH = 7, MODEL_OPSET = 8, OPSET_DOMAIN = 1, OPSET_VERSION = 2 };
enum { GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INIT = 5, GRAPH_INPUT = 11, GRAPH_OUTPUT = 12 };
enum { NODE_IN = 1, NODE_OUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTR = 5 };
enum { ATTR_NAME = 1, ATTR_F = 2, ATTR_I = 3, ATTR_INTS = 8, ATTR_TYPE = 20 };
enum { ATTR_T_FLOAT = 1, ATTR_T_INT = 2, ATTR_T_INTS = 7 };
enum { TENSOR_DIMS = 1, TENSOR_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW = 9 };
enum { VI_NAME = 1, VI_TYPE = 2, TYPE_TENSOR = 1, TT_ELEM = 1, TT_SHAPE = 2 };
enum { SHAPE_DIM = 1, DIM_VALUE = 1, DIM_PARAM = 2 };

/* What a matched pattern is written as. */
enum { FZ_NONE, FZ_CONV_BIAS, FZ_GEMM, FZ_BATCHNORM, FZ_LAYERNORM, FZ_MEAN };

typedef struct fused {
  int kind;
  nb_tensor *in[5]; /* the ONNX op's inputs; NULL for an absent optional one */
  int n_in;
  int trans_b; /* FZ_GEMM */
  float eps;   /* FZ_BATCHNORM, FZ_LAYERNORM */
  int axis;    /* FZ_LAYERNORM: first normalised axis */
} fused;

/* The batch axis of a value: `axis` (-1: none) has size outer * N * inner,
 * with N the batch; the static factors appear when a reshape merges the
 * batch with other axes (embedding lookups flatten [N, T] to [N * T]). */
typedef struct bax {
  int axis;
  int64_t outer, inner;
} bax;

typedef struct ex {
  const nb_graph *g;
  const nb_state *st;
  nb_onnx_export_options opt;
  int n;
  unsigned char *need, *absorbed, *y_only; /* y_only: attention read as y only */
  int *uses;                               /* readers among the needed nodes */
  bax *dyn;                                /* the batch axis of each node */
  const char **name;                       /* ONNX value of each node once written */
  const char **out_name;                   /* names chosen for graph outputs */
  const char **bool_name;                  /* comparisons: the bool before the cast */
  unsigned char *out_done;                 /* out_name already holds the output */
  const char **taken;                      /* names of inputs, variables and outputs, sorted */
  int ntaken;
  fused *fz;
  nb_pb_writer nodes, inits, io; /* GraphProto fields, joined at the end */
  char **pool;                   /* every string allocated below, freed at the end */
  int npool, cappool;
  nb_status status;
} ex;

/* ---- strings -------------------------------------------------------------------- */

static const char *fail_oom(ex *e) {
  if (!e->status) e->status = nb_error(NB_ERR_OOM, "onnx export: out of memory");
  return NULL;
}

static const char *pool_printf(ex *e, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static const char *pool_printf(ex *e, const char *fmt, ...) {
  if (e->status) return NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return fail_oom(e);
  if (e->npool == e->cappool) {
    int cap = e->cappool ? 2 * e->cappool : 256;
    char **p = realloc(e->pool, (size_t)cap * sizeof *p);
    if (!p) return fail_oom(e);
    e->pool = p;
    e->cappool = cap;
  }
  char *s = malloc((size_t)n + 1);
  if (!s) return fail_oom(e);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  e->pool[e->npool++] = s;
  return s;
}

static const char *op_name(const nb_tensor *t) { return nb_op_def_get(t->op)->name; }

static int is_leaf(const nb_tensor *t) {
  return t->op == NB_OP_INPUT || t->op == NB_OP_VARIABLE || t->op == NB_OP_CONSTANT;
}

static int is_static(const nb_tensor *t) {
  return t->op == NB_OP_VARIABLE || t->op == NB_OP_CONSTANT;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 1 if `s` is the name of an input, a variable or an output, which a
 * generated name must not take (e->taken is sorted). */
static int name_taken(const ex *e, const char *s) {
  return e->ntaken && bsearch(&s, e->taken, (size_t)e->ntaken, sizeof *e->taken, cmp_str);
}

/* The name of the value node t produces: its output name, else op_id
 * (after the pattern for the root of one). */
static const char *value_name(ex *e, const nb_tensor *t) {
  static const char *const pattern[] = {NULL,         "conv2d",     "linear",
                                        "batch_norm", "layer_norm", "mean"};
  if (e->out_name[t->id]) return e->out_name[t->id];
  int k = e->fz[t->id].kind;
  const char *s = pool_printf(e, "%s_%d", k ? pattern[k] : op_name(t), t->id);
  while (s && name_taken(e, s)) s = pool_printf(e, "%s_", s);
  return s;
}

/* ---- protobuf pieces ------------------------------------------------------------- */

static int onnx_type(nb_dtype dt) {
  switch (dt) {
  case NB_F32: return NB_ONNX_FLOAT;
  case NB_F16: return NB_ONNX_FLOAT16;
  case NB_BF16: return NB_ONNX_BFLOAT16;
  case NB_I32: return NB_ONNX_INT32;
  case NB_I64: return NB_ONNX_INT64;
  case NB_U8: return NB_ONNX_UINT8;
  default: return 0;
  }
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  uint8_t b;
  memcpy(&b, &one, 1);
  return b == 1;
}

/* raw_data is little-endian whatever the host. */
static void write_raw(nb_pb_writer *w, const void *data, size_t bytes, size_t elem) {
  if (host_is_little_endian() || elem <= 1) {
    nb_pb_write_bytes(w, TENSOR_RAW, data, bytes);
    return;
  }
  size_t m = nb_pb_begin(w, TENSOR_RAW);
  const uint8_t *p = data;
  for (size_t i = 0; i + elem <= bytes && elem <= 8; i += elem) {
    uint8_t v[8];
    for (size_t k = 0; k < elem; k++) v[k] = p[i + elem - 1 - k];
    nb_pb_write_raw(w, v, elem);
  }
  nb_pb_end(w, m);
}

static void add_init(ex *e, const char *name, int elem_type, size_t elem, int ndim,
                     const int64_t *dims, const void *data, size_t bytes) {
  if (e->status || !name) return;
  nb_pb_writer *w = &e->inits;
  size_t m = nb_pb_begin(w, GRAPH_INIT);
  if (ndim > 0) nb_pb_write_packed_int(w, TENSOR_DIMS, dims, (size_t)ndim);
  nb_pb_write_int(w, TENSOR_TYPE, elem_type);
  nb_pb_write_string(w, TENSOR_NAME, name);
  write_raw(w, data, bytes, elem);
  nb_pb_end(w, m);
}

/* A 1-d int64 initializer named after `base`. */
static const char *init_ints(ex *e, const char *base, const char *what, int n, const int64_t *v) {
  const char *name = pool_printf(e, "%s/%s", base, what);
  int64_t dim = n;
  add_init(e, name, NB_ONNX_INT64, 8, 1, &dim, v, (size_t)n * sizeof *v);
  return name;
}

/* A rank-0 f32 initializer, one per distinct value. */
static const char *scalar(ex *e, float v) {
  uint32_t bits;
  memcpy(&bits, &v, 4);
  const char *name = pool_printf(e, "scalar_%08x", (unsigned)bits);
  if (!name) return NULL;
  for (int i = 0; i < e->npool - 1; i++)
    if (!strcmp(e->pool[i], name)) return name; /* already written */
  add_init(e, name, NB_ONNX_FLOAT, 4, 0, NULL, &v, 4);
  return name;
}

/* A rank-0 initializer of dtype dt holding v (f32 and integer types). */
static const char *scalar_of(ex *e, const char *base, nb_dtype dt, double v) {
  const char *name = pool_printf(e, "%s/value", base);
  if (dt == NB_F32) {
    float f = (float)v;
    add_init(e, name, NB_ONNX_FLOAT, 4, 0, NULL, &f, 4);
  } else if (dt == NB_I64) {
    int64_t i = (int64_t)v;
    add_init(e, name, NB_ONNX_INT64, 8, 0, NULL, &i, 8);
  } else if (dt == NB_I32) {
    int32_t i = (int32_t)v;
    add_init(e, name, NB_ONNX_INT32, 4, 0, NULL, &i, 4);
  } else if (!e->status) {
    e->status = nb_error(NB_ERR_UNSUPPORTED, "onnx export: a %s constant is not supported",
                         nb_dtype_name(dt));
  }
  return name;
}

/* Opens a NodeProto with its inputs and one output; attributes follow;
 * node_end closes it. A NULL name (a failure already recorded) writes
 * nothing. */
static size_t node_begin(ex *e, const char *op, int nin, const char *const *in, const char *out) {
  nb_pb_writer *w = &e->nodes;
  for (int i = 0; i < nin; i++)
    if (!in[i]) out = NULL;
  if (!out && !e->status)
    e->status = nb_error(NB_ERR_INTERNAL, "onnx export: %s node without a value name", op);
  if (e->status) return 0;
  size_t m = nb_pb_begin(w, GRAPH_NODE);
  for (int i = 0; i < nin; i++) nb_pb_write_string(w, NODE_IN, in[i]);
  nb_pb_write_string(w, NODE_OUT, out);
  nb_pb_write_string(w, NODE_NAME, out);
  nb_pb_write_string(w, NODE_OP, op);
  return m;
}

static void node_end(ex *e, size_t m) {
  if (!e->status) nb_pb_end(&e->nodes, m);
}

static void attr_int(ex *e, const char *name, int64_t v) {
  nb_pb_writer *w = &e->nodes;
  if (e->status) return;
  size_t m = nb_pb_begin(w, NODE_ATTR);
  nb_pb_write_string(w, ATTR_NAME, name);
  nb_pb_write_int(w, ATTR_TYPE, ATTR_T_INT);
  nb_pb_write_int(w, ATTR_I, v);
  nb_pb_end(w, m);
}

static void attr_ints(ex *e, const char *name, int n, const int64_t *v) {
  nb_pb_writer *w = &e->nodes;
  if (e->status) return;
  size_t m = nb_pb_begin(w, NODE_ATTR);
  nb_pb_write_string(w, ATTR_NAME, name);
  nb_pb_write_int(w, ATTR_TYPE, ATTR_T_INTS);
  nb_pb_write_packed_int(w, ATTR_INTS, v, (size_t)n);
  nb_pb_end(w, m);
}

static void attr_float(ex *e, const char *name, float v) {
  nb_pb_writer *w = &e->nodes;
  if (e->status) return;
  size_t m = nb_pb_begin(w, NODE_ATTR);
  nb_pb_write_string(w, ATTR_NAME, name);
  nb_pb_write_int(w, ATTR_TYPE, ATTR_T_FLOAT);
  nb_pb_write_float(w, ATTR_F, v);
  nb_pb_end(w, m);
}

/* A node with one or two inputs and no attributes. */
static const char *node2(ex *e, const char *op, const char *a, const char *b, const char *out) {
  const char *in[2] = {a, b};
  if (!a || !out) return fail_oom(e);
  node_end(e, node_begin(e, op, b ? 2 : 1, in, out));
  return out;
}

/* A tensor's ValueInfoProto. The batch axis is the symbol "N", or, when it
 * holds a multiple of the batch, a dimension with neither value nor symbol
 * (unknown). */
static void value_info(nb_pb_writer *w, uint32_t field, const char *name, int elem_type, int ndim,
                       const int64_t *shape, const bax *dyn) {
  size_t m = nb_pb_begin(w, field);
  nb_pb_write_string(w, VI_NAME, name);
  size_t ty = nb_pb_begin(w, VI_TYPE);
  size_t tt = nb_pb_begin(w, TYPE_TENSOR);
  nb_pb_write_int(w, TT_ELEM, elem_type);
  size_t sh = nb_pb_begin(w, TT_SHAPE);
  for (int d = 0; d < ndim; d++) {
    size_t dm = nb_pb_begin(w, SHAPE_DIM);
    if (d != dyn->axis)
      nb_pb_write_int(w, DIM_VALUE, shape[d]);
    else if (dyn->outer == 1 && dyn->inner == 1)
      nb_pb_write_string(w, DIM_PARAM, "N");
    nb_pb_end(w, dm);
  }
  nb_pb_end(w, sh);
  nb_pb_end(w, tt);
  nb_pb_end(w, ty);
  nb_pb_end(w, m);
}

/* ---- leaves ------------------------------------------------------------------------ */

/* The ONNX value of node t, writing the initializer of a variable or
 * constant the first time one is read. */
static const char *V(ex *e, const nb_tensor *t) {
  if (e->status) return NULL;
  if (e->name[t->id]) return e->name[t->id];
  if (t->op == NB_OP_VARIABLE) {
    /* several nodes may bind one variable (tied weights): one initializer */
    for (int i = 0; i < t->id; i++) {
      const nb_tensor *u = e->g->nodes[i];
      if (u->op == NB_OP_VARIABLE && e->name[i] && u->name && t->name && !strcmp(u->name, t->name))
        return e->name[t->id] = e->name[i];
    }
    size_t es = nb_dtype_size(t->dtype), bytes = (size_t)nb_tensor_numel(t) * es;
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) return fail_oom(e);
    nb_status st =
        e->st ? nb_state_read(e->st, t->name, buf, bytes)
              : nb_error(NB_ERR_INVALID_ARG, "no state was given (it holds the variables' values)");
    if (st) {
      e->status = nb_error(st, "onnx export: variable '%s': %s", t->name, nb_last_error());
      free(buf);
      return NULL;
    }
    add_init(e, t->name, onnx_type(t->dtype), es, t->ndim, t->shape, buf, bytes);
    free(buf);
    return e->name[t->id] = t->name;
  }
  if (t->op == NB_OP_CONSTANT) {
    if (t->dtype == NB_F32 && t->ndim == 0) return e->name[t->id] = scalar(e, *(float *)t->data);
    const char *name = value_name(e, t);
    add_init(e, name, onnx_type(t->dtype), nb_dtype_size(t->dtype), t->ndim, t->shape, t->data,
             (size_t)nb_tensor_numel(t) * nb_dtype_size(t->dtype));
    return e->name[t->id] = name;
  }
  e->status = nb_error(NB_ERR_INTERNAL, "onnx export: node %d (%s) used before it was written",
                       t->id, op_name(t));
  return NULL;
}

/* ---- pass 2: the batch axis ---------------------------------------------------------- */

static nb_status dyn_fail(const nb_tensor *t, const char *why) {
  char s[128];
  return nb_error(NB_ERR_UNSUPPORTED,
                  "onnx export: %s (node %d, output %s) %s; export with dynamic_batch = 0 "
                  "(nabla export --static-batch) to keep the graph's shapes",
                  op_name(t), t->id, nb_shape_str(t->ndim, t->shape, s, sizeof s), why);
}

static const bax no_batch = {-1, 1, 1};

static int same_bax(bax a, bax b) {
  return a.axis == b.axis && (a.axis < 0 || (a.outer == b.outer && a.inner == b.inner));
}

/* Broadcasting ops: the output axis that carries the batch, checking that no
 * input holds a fixed size other than 1 there (it would only fit the batch
 * the graph was built with). */
static nb_status dyn_broadcast(const ex *e, const nb_tensor *t, bax *out) {
  bax d = no_batch;
  for (int k = 0; k < t->n_in; k++) {
    const nb_tensor *x = t->in[k];
    bax xd = e->dyn[x->id];
    if (xd.axis < 0) continue;
    xd.axis += t->ndim - x->ndim;
    if (d.axis >= 0 && !same_bax(d, xd))
      return dyn_fail(t, "has inputs whose batch axes do not line up");
    d = xd;
  }
  for (int k = 0; d.axis >= 0 && k < t->n_in; k++) {
    const nb_tensor *x = t->in[k];
    int xa = d.axis - (t->ndim - x->ndim);
    if (xa >= 0 && e->dyn[x->id].axis != xa && x->shape[xa] != 1)
      return dyn_fail(t, "mixes the batch axis with an input of fixed size on that axis");
  }
  *out = d;
  return NB_OK;
}

/* Reshape: the output axis that holds the batch whole. In the row-major
 * order of the elements the batch spans from `lo` (the elements of the
 * axes before it, times its outer factor) to lo * B; an output axis holds
 * it whole when it starts at a multiple of its own prefix that divides lo
 * and ends at a multiple of lo * B. A -1 there gives the right shape for
 * any batch. */
static nb_status dyn_reshape(const ex *e, const nb_tensor *t, bax *out) {
  const nb_tensor *x = t->in[0];
  bax xd = e->dyn[x->id];
  *out = no_batch;
  if (xd.axis < 0) return NB_OK;
  int64_t lo = xd.outer;
  for (int i = 0; i < xd.axis; i++) lo *= x->shape[i];
  int64_t batch = x->shape[xd.axis] / (xd.outer * xd.inner), hi = lo * batch, a = 1;
  for (int k = 0; k < t->ndim && a <= lo; k++) {
    int64_t next = a * t->shape[k];
    if (lo % a == 0 && next % hi == 0 && next > 0) {
      *out = (bax){k, lo / a, next / hi};
      return NB_OK;
    }
    a = next;
  }
  return dyn_fail(t, "splits the batch axis");
}

static nb_status dyn_matmul(const ex *e, const nb_tensor *t, bax *out) {
  const nb_tensor *a = t->in[0], *b = t->in[1];
  bax ad = e->dyn[a->id], bd = e->dyn[b->id], d = no_batch, d2 = no_batch;
  int na = a->ndim, nbd = b->ndim;
  int r = (na >= 2) + (nbd >= 2), lead = t->ndim - r; /* output batch axes */
  if (ad.axis >= 0 && na >= 2 && ad.axis != na - 1) {
    d = ad;
    d.axis = ad.axis == na - 2 ? (nbd >= 2 ? t->ndim - 2 : t->ndim - 1) : ad.axis + lead - (na - 2);
  }
  if (bd.axis >= 0 && nbd >= 2 && bd.axis != nbd - 2) {
    d2 = bd;
    d2.axis = bd.axis == nbd - 1 ? t->ndim - 1 : bd.axis + lead - (nbd - 2);
  }
  if (d.axis >= 0 && d2.axis >= 0 && !same_bax(d, d2))
    return dyn_fail(t, "has the batch axis in both operands");
  *out = d.axis >= 0 ? d : d2;
  return NB_OK;
}

static nb_status dyn_node(const ex *e, const nb_tensor *t, bax *out) {
  const nb_tensor *x = t->n_in ? t->in[0] : NULL;
  bax xd = x ? e->dyn[x->id] : no_batch;
  int xa = xd.axis;
  *out = no_batch;
  switch (t->op) {
  case NB_OP_INPUT:
    if (t->ndim >= 1) *out = (bax){0, 1, 1};
    return NB_OK;
  case NB_OP_VARIABLE:
  case NB_OP_CONSTANT: return NB_OK;
  case NB_OP_RESHAPE: return dyn_reshape(e, t, out);
  case NB_OP_PERMUTE:
    for (int i = 0; i < t->ndim; i++)
      if (xa >= 0 && t->ip[i] == xa) *out = (bax){i, xd.outer, xd.inner};
    return NB_OK;
  case NB_OP_SLICE:
    if (xa >= 0 && t->ip[0] == xa) return dyn_fail(t, "slices the batch axis");
    *out = xd;
    return NB_OK;
  case NB_OP_PAD:
    if (xa >= 0 && (t->ip[2 * xa] || t->ip[2 * xa + 1])) return dyn_fail(t, "pads the batch axis");
    *out = xd;
    return NB_OK;
  case NB_OP_BROADCAST:
    if (xa >= 0) *out = (bax){xa + t->ndim - x->ndim, xd.outer, xd.inner};
    return NB_OK;
  case NB_OP_SUM:
  case NB_OP_MAX:
  case NB_OP_MIN:
  case NB_OP_ARGMAX: {
    int64_t mask = t->op == NB_OP_ARGMAX ? (int64_t)1 << t->ip[0] : t->ip[0];
    if (xa < 0 || (mask >> xa) & 1) return NB_OK; /* reduced away */
    *out = xd;
    if (!t->ip[1])
      for (int i = 0; i < xa; i++) out->axis -= (int)((mask >> i) & 1);
    return NB_OK;
  }
  case NB_OP_CONCAT:
    for (int k = 0; k < t->n_in; k++)
      if (!same_bax(e->dyn[t->in[k]->id], xd))
        return dyn_fail(t, "joins inputs with and without the batch");
    if (xa >= 0 && t->ip[0] == xa) return dyn_fail(t, "concatenates along the batch axis");
    *out = xd;
    return NB_OK;
  case NB_OP_INDEX_SELECT: {
    bax id = e->dyn[t->in[1]->id];
    if (xa >= 0 && id.axis >= 0) return dyn_fail(t, "has the batch axis in both operands");
    if (xa == t->ip[0]) return dyn_fail(t, "selects along the batch axis");
    *out = id.axis >= 0 ? (bax){(int)t->ip[0], id.outer, id.inner} : xd;
    return NB_OK;
  }
  case NB_OP_ONE_HOT: *out = xd; return NB_OK;
  case NB_OP_MATMUL: return dyn_matmul(e, t, out);
  case NB_OP_CONV2D:
  case NB_OP_MAXPOOL2D:
  case NB_OP_AVGPOOL2D:
    if (xa > 0 || (t->n_in > 1 && e->dyn[t->in[1]->id].axis >= 0))
      return dyn_fail(t, "has the batch axis outside axis 0 of its input");
    *out = xd;
    return NB_OK;
  case NB_OP_SOFTMAX:
  case NB_OP_LOG_SOFTMAX: *out = xd; return NB_OK;
  case NB_OP_ATTENTION:
    for (int k = 1; k < 3; k++)
      if (!same_bax(e->dyn[t->in[k]->id], xd))
        return dyn_fail(t, "has q, k and v with different batch axes");
    if (xa >= 2) return dyn_fail(t, "has the batch axis on a sequence axis");
    *out = xd;
    return NB_OK;
  default: break;
  }
  if (nb_op_def_get(t->op)->fusion == NB_FUSE_ELEMWISE || t->op == NB_OP_CAST ||
      t->op == NB_OP_COPY)
    return dyn_broadcast(e, t, out);
  *out = xd; /* ops without a mapping fail when they are written */
  return NB_OK;
}

/* ---- pass 3: patterns ----------------------------------------------------------------- */

/* t can be folded into a pattern: only one needed node reads it, and it is
 * not an output. */
static int single(const ex *e, const nb_tensor *t) {
  return e->uses[t->id] == 1 && !e->out_name[t->id] && !e->absorbed[t->id];
}

/* v if r is a reshape (read once) of a 1-d static [c] to [1, c, 1, ...] of
 * rank nd, else NULL. */
static nb_tensor *channel_view(const ex *e, nb_tensor *r, int64_t c, int nd) {
  if (r->op != NB_OP_RESHAPE || !single(e, r) || r->ndim != nd || nd < 2) return NULL;
  nb_tensor *v = r->in[0];
  if (!is_static(v) || v->ndim != 1 || v->shape[0] != c || v->dtype != NB_F32) return NULL;
  for (int i = 0; i < nd; i++)
    if (r->shape[i] != (i == 1 ? c : 1)) return NULL;
  return v;
}

/* 1 and *v if t is a rank-0 f32 constant read once. */
static int scalar_const(const ex *e, const nb_tensor *t, float *v) {
  if (t->op != NB_OP_CONSTANT || t->dtype != NB_F32 || t->ndim != 0 || !single(e, t)) return 0;
  *v = *(const float *)t->data;
  return 1;
}

static int same_shape(const nb_tensor *a, const nb_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static void absorb(ex *e, int n, nb_tensor *const *t) {
  for (int i = 0; i < n; i++) e->absorbed[t[i]->id] = 1;
}

/* mean(x) as nb_mean builds it: sum(x, axes, keepdim) * (1 / count). */
static nb_tensor *match_mean(const ex *e, nb_tensor *t, nb_tensor **sum, nb_tensor **c) {
  float v;
  if (t->op != NB_OP_MUL || t->in[0]->op != NB_OP_SUM || !single(e, t->in[0]) ||
      !scalar_const(e, t->in[1], &v))
    return NULL;
  nb_tensor *s = t->in[0], *x = s->in[0];
  int64_t count = 1;
  for (int i = 0; i < x->ndim; i++)
    if ((s->ip[0] >> i) & 1) count *= x->shape[i];
  if (s->ip[0] == 0 || count <= 0 || v != 1.0f / (float)count) return NULL;
  *sum = s;
  *c = t->in[1];
  return x;
}

static int match_mean_root(ex *e, nb_tensor *t) {
  nb_tensor *s, *c, *x = match_mean(e, t, &s, &c);
  if (!x) return 0;
  e->fz[t->id] = (fused){.kind = FZ_MEAN, .in = {x}, .n_in = 1};
  absorb(e, 2, (nb_tensor *[]){s, c});
  return 1;
}

/* add(conv2d(x, w), reshape(b, [1, K, 1, 1])) -> Conv(x, w, b) */
static int match_conv_bias(ex *e, nb_tensor *t) {
  for (int i = 0; i < 2; i++) {
    nb_tensor *c = t->in[i], *r = t->in[1 - i];
    if (c->op != NB_OP_CONV2D || !single(e, c) || !same_shape(c, t)) continue;
    nb_tensor *b = channel_view(e, r, c->shape[1], 4);
    if (!b) continue;
    e->fz[t->id] = (fused){.kind = FZ_CONV_BIAS, .in = {c->in[0], c->in[1], b}, .n_in = 3};
    e->fz[t->id].axis = c->id; /* the conv node holds the attributes */
    absorb(e, 2, (nb_tensor *[]){c, r});
    return 1;
  }
  return 0;
}

/* The weight of matmul m as Gemm takes it: W with transB for x @ W^T (a
 * permuted 2-d static, as nb_nn_linear builds it), or a 2-d static W. */
static nb_tensor *gemm_weight(const ex *e, const nb_tensor *m, int *trans_b, nb_tensor **perm) {
  nb_tensor *b = m->in[1];
  *perm = NULL;
  if (m->ndim != 2 || m->in[0]->ndim != 2 || b->ndim != 2 || e->dyn[m->in[0]->id].axis == 1 ||
      m->dtype != NB_F32)
    return NULL;
  if (b->op == NB_OP_PERMUTE && single(e, b) && is_static(b->in[0]) && b->in[0]->ndim == 2) {
    *trans_b = 1;
    *perm = b;
    return b->in[0];
  }
  if (is_static(b)) {
    *trans_b = 0;
    return b;
  }
  return NULL;
}

/* add(matmul(x, W^T), b) -> Gemm(x, W, b, transB = 1) */
static int match_gemm_bias(ex *e, nb_tensor *t) {
  for (int i = 0; i < 2; i++) {
    nb_tensor *m = t->in[i], *b = t->in[1 - i], *perm;
    int tb;
    if (m->op != NB_OP_MATMUL || !single(e, m) || !same_shape(m, t) || !is_static(b) ||
        b->ndim != 1 || b->shape[0] != m->shape[1])
      continue;
    nb_tensor *w = gemm_weight(e, m, &tb, &perm);
    if (!w) continue;
    e->fz[t->id] = (fused){.kind = FZ_GEMM, .in = {m->in[0], w, b}, .n_in = 3, .trans_b = tb};
    absorb(e, 1, &m);
    if (perm) absorb(e, 1, &perm);
    return 1;
  }
  return 0;
}

static int match_gemm(ex *e, nb_tensor *t) {
  nb_tensor *perm;
  int tb;
  nb_tensor *w = gemm_weight(e, t, &tb, &perm);
  if (!w || !perm) return 0; /* x @ W without a transpose stays a MatMul */
  e->fz[t->id] = (fused){.kind = FZ_GEMM, .in = {t->in[0], w}, .n_in = 2, .trans_b = tb};
  absorb(e, 1, &perm);
  return 1;
}

/* nb_batch_norm in eval mode:
 *   add(mul(mul(sub(x, view(mean)), rsqrt(add(view(var), eps))), view(gamma)), view(beta)) */
static int match_batchnorm(ex *e, nb_tensor *t) {
  nb_tensor *y1 = t->in[0], *rb = t->in[1];
  if (y1->op != NB_OP_MUL || !single(e, y1)) return 0;
  nb_tensor *y0 = y1->in[0], *rg = y1->in[1];
  if (y0->op != NB_OP_MUL || !single(e, y0)) return 0;
  nb_tensor *xc = y0->in[0], *inv = y0->in[1];
  if (xc->op != NB_OP_SUB || !single(e, xc) || inv->op != NB_OP_RSQRT || !single(e, inv)) return 0;
  nb_tensor *x = xc->in[0], *rmv = xc->in[1], *ve = inv->in[0];
  if (ve->op != NB_OP_ADD || !single(e, ve) || x->ndim < 2 || !same_shape(x, t) ||
      e->dyn[x->id].axis > 0)
    return 0;
  nb_tensor *rvv = ve->in[0], *epsn = ve->in[1];
  float eps;
  int64_t c = x->shape[1];
  int nd = x->ndim;
  nb_tensor *beta = channel_view(e, rb, c, nd), *gamma = channel_view(e, rg, c, nd);
  nb_tensor *mean = channel_view(e, rmv, c, nd), *var = channel_view(e, rvv, c, nd);
  if (!beta || !gamma || !mean || !var || !scalar_const(e, epsn, &eps)) return 0;
  e->fz[t->id] =
      (fused){.kind = FZ_BATCHNORM, .in = {x, gamma, beta, mean, var}, .n_in = 5, .eps = eps};
  absorb(e, 10, (nb_tensor *[]){y1, y0, xc, inv, ve, epsn, rb, rg, rmv, rvv});
  return 1;
}

/* nb_layer_norm: xc = x - mean(x); var = mean(square(xc));
 *   add(mul(mul(xc, rsqrt(add(var, eps))), gamma), beta)   (over the last axes) */
static int match_layernorm(ex *e, nb_tensor *t) {
  nb_tensor *y1 = t->in[0], *beta = t->in[1];
  if (y1->op != NB_OP_MUL || !single(e, y1) || !is_static(beta)) return 0;
  nb_tensor *y0 = y1->in[0], *gamma = y1->in[1];
  if (y0->op != NB_OP_MUL || !single(e, y0) || !is_static(gamma)) return 0;
  nb_tensor *xc = y0->in[0], *inv = y0->in[1];
  if (xc->op != NB_OP_SUB || e->uses[xc->id] != 2 || e->out_name[xc->id] ||
      inv->op != NB_OP_RSQRT || !single(e, inv))
    return 0;
  nb_tensor *ve = inv->in[0];
  if (ve->op != NB_OP_ADD || !single(e, ve)) return 0;
  nb_tensor *var = ve->in[0], *epsn = ve->in[1], *s2, *c2, *s1, *c1;
  float eps;
  if (!scalar_const(e, epsn, &eps) || !single(e, var)) return 0;
  nb_tensor *sq = match_mean(e, var, &s2, &c2);
  if (!sq || sq->op != NB_OP_SQUARE || !single(e, sq) || sq->in[0] != xc) return 0;
  nb_tensor *x = xc->in[0], *mean = xc->in[1];
  if (!single(e, mean) || match_mean(e, mean, &s1, &c1) != x || !same_shape(x, t)) return 0;
  /* both means over the same trailing axes, with gamma and beta their shape */
  int nlast = gamma->ndim, first = x->ndim - nlast;
  int64_t want = (((int64_t)1 << x->ndim) - 1) & ~(((int64_t)1 << first) - 1);
  if (nlast < 1 || first < 0 || s1->ip[0] != want || s2->ip[0] != want || !s1->ip[1] ||
      !s2->ip[1] || !same_shape(gamma, beta) || e->dyn[x->id].axis >= first)
    return 0;
  for (int i = 0; i < nlast; i++)
    if (gamma->shape[i] != x->shape[first + i]) return 0;
  e->fz[t->id] =
      (fused){.kind = FZ_LAYERNORM, .in = {x, gamma, beta}, .n_in = 3, .eps = eps, .axis = first};
  absorb(e, 13, (nb_tensor *[]){y1, y0, xc, inv, ve, epsn, var, s2, c2, sq, mean, s1, c1});
  return 1;
}

/* Attention whose every reader takes y (P[..., :Dv]) is written without its
 * logsumexp column. */
static void match_attention_y(ex *e, nb_tensor *t) {
  for (int i = t->id + 1; i < e->n; i++) {
    const nb_tensor *u = e->g->nodes[i];
    if (!e->need[i]) continue;
    for (int k = 0; k < u->n_in; k++)
      if (u->in[k] == t && !(u->op == NB_OP_SLICE && u->ip[0] == 3 && u->ip[1] == 0 &&
                             u->ip[2] == t->shape[3] - 1 && u->ip[3] == 1))
        return;
  }
  if (!e->out_name[t->id]) e->y_only[t->id] = 1;
}

static void match_patterns(ex *e) {
  for (int i = e->n - 1; i >= 0; i--) {
    nb_tensor *t = e->g->nodes[i];
    if (!e->need[i] || e->absorbed[i]) continue;
    switch (t->op) {
    case NB_OP_ADD:
      if (!match_batchnorm(e, t) && !match_layernorm(e, t) && !match_conv_bias(e, t))
        match_gemm_bias(e, t);
      break;
    case NB_OP_MATMUL: match_gemm(e, t); break;
    case NB_OP_MUL: match_mean_root(e, t); break;
    case NB_OP_ATTENTION: match_attention_y(e, t); break;
    default: break;
    }
  }
}

/* ---- pass 4: writing nodes --------------------------------------------------------------- */

static nb_status unsupported(const nb_tensor *t, const char *why) {
  char s[128];
  return nb_error(NB_ERR_UNSUPPORTED, "onnx export: op '%s' (node %d, shape %s) %s", op_name(t),
                  t->id, nb_shape_str(t->ndim, t->shape, s, sizeof s), why);
}

static void conv_attrs(ex *e, const nb_tensor *c) {
  /* ip: stride h,w | padding h,w | dilation h,w | groups | x (4) | w (4) */
  const int64_t *ip = c->ip;
  attr_ints(e, "kernel_shape", 2, (int64_t[]){ip[13], ip[14]});
  attr_ints(e, "strides", 2, ip);
  attr_ints(e, "pads", 4, (int64_t[]){ip[2], ip[3], ip[2], ip[3]});
  attr_ints(e, "dilations", 2, ip + 4);
  attr_int(e, "group", ip[6]);
}

/* Output size of a pooling window along one axis, floor or ceil mode, as
 * ONNX opset 17 computes it (no rule dropping a last window that starts in
 * the padding, unlike PyTorch). */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode) {
  int64_t span = in + 2 * p - k;
  return (ceil_mode ? (span + s - 1) / s : span / s) + 1;
}

static nb_status write_pool(ex *e, const nb_tensor *t, const char *out) {
  /* ip: kernel h,w | stride h,w | padding h,w | ceil_mode | count_include_pad | x (4) */
  const int64_t *ip = t->ip;
  const nb_tensor *x = t->in[0];
  int avg = t->op == NB_OP_AVGPOOL2D, ceil_mode = 0;
  for (int a = 0; a < 2; a++) {
    int64_t fl = pool_out(x->shape[2 + a], ip[a], ip[2 + a], ip[4 + a], 0);
    if (fl == t->shape[2 + a]) continue;
    /* ceil mode made a difference: the extra window overhangs the input */
    if (avg)
      return unsupported(t, "with ceil_mode and a last window past the input (ONNX opset 17 "
                            "averages such a window differently from nabla and PyTorch)");
    if (pool_out(x->shape[2 + a], ip[a], ip[2 + a], ip[4 + a], 1) != t->shape[2 + a])
      return unsupported(t, "with ceil_mode and a last window that starts in the padding");
    ceil_mode = 1;
  }
  const char *in[1] = {V(e, x)};
  size_t m = node_begin(e, avg ? "AveragePool" : "MaxPool", 1, in, out);
  attr_ints(e, "kernel_shape", 2, ip);
  attr_ints(e, "strides", 2, ip + 2);
  attr_ints(e, "pads", 4, (int64_t[]){ip[4], ip[5], ip[4], ip[5]});
  if (ceil_mode) attr_int(e, "ceil_mode", 1);
  if (avg) attr_int(e, "count_include_pad", ip[7] ? 1 : 0);
  node_end(e, m);
  return NB_OK;
}

static const char *cast(ex *e, const char *x, int to, const char *out) {
  const char *in[1] = {x};
  if (!x || !out) return fail_oom(e);
  size_t m = node_begin(e, "Cast", 1, in, out);
  attr_int(e, "to", to);
  node_end(e, m);
  return out;
}

/* softmax(q k^T * scale + causal mask) v, and, unless every reader takes y
 * only, the row logsumexp appended as the last column (nabla's P). */
static void write_attention(ex *e, const nb_tensor *t, const char *out) {
  const nb_tensor *q = t->in[0];
  int64_t tq = q->shape[2], tk = t->in[1]->shape[2];
  const char *kt = pool_printf(e, "%s/kT", out);
  size_t m = node_begin(e, "Transpose", 1, (const char *[]){V(e, t->in[1])}, kt);
  attr_ints(e, "perm", 4, (int64_t[]){0, 1, 3, 2});
  node_end(e, m);
  const char *s = node2(e, "MatMul", V(e, q), kt, pool_printf(e, "%s/qk", out));
  s = node2(e, "Mul", s, scalar(e, t->fp[0]), pool_printf(e, "%s/scores", out));
  if (t->ip[0]) {
    float *mask = malloc((size_t)(tq * tk) * sizeof *mask);
    if (!mask) {
      fail_oom(e);
      return;
    }
    for (int64_t i = 0; i < tq; i++)
      for (int64_t j = 0; j < tk; j++) mask[i * tk + j] = j > i ? -INFINITY : 0.0f;
    const char *mn = pool_printf(e, "%s/causal_mask", out);
    add_init(e, mn, NB_ONNX_FLOAT, 4, 2, (int64_t[]){tq, tk}, mask,
             (size_t)(tq * tk) * sizeof *mask);
    free(mask);
    s = node2(e, "Add", s, mn, pool_printf(e, "%s/masked", out));
  }
  const char *p = pool_printf(e, "%s/probs", out);
  m = node_begin(e, "Softmax", 1, &s, p);
  attr_int(e, "axis", -1);
  node_end(e, m);
  if (e->y_only[t->id]) {
    node2(e, "MatMul", p, V(e, t->in[2]), out);
    return;
  }
  const char *y = node2(e, "MatMul", p, V(e, t->in[2]), pool_printf(e, "%s/y", out));
  const char *lse = pool_printf(e, "%s/lse", out);
  m = node_begin(e, "ReduceLogSumExp", 1, &s, lse);
  attr_ints(e, "axes", 1, (int64_t[]){-1});
  attr_int(e, "keepdims", 1);
  node_end(e, m);
  m = node_begin(e, "Concat", 2, (const char *[]){y, lse}, out);
  attr_int(e, "axis", 3);
  node_end(e, m);
}

static nb_status write_fused(ex *e, const nb_tensor *t, const char *out) {
  const fused *f = &e->fz[t->id];
  const char *in[5];
  for (int i = 0; i < f->n_in; i++) in[i] = f->in[i] ? V(e, f->in[i]) : NULL;
  size_t m;
  switch (f->kind) {
  case FZ_CONV_BIAS:
    m = node_begin(e, "Conv", 3, in, out);
    conv_attrs(e, e->g->nodes[f->axis]);
    break;
  case FZ_GEMM:
    m = node_begin(e, "Gemm", f->n_in, in, out);
    if (f->trans_b) attr_int(e, "transB", 1);
    break;
  case FZ_BATCHNORM:
    m = node_begin(e, "BatchNormalization", 5, in, out);
    attr_float(e, "epsilon", f->eps);
    break;
  case FZ_LAYERNORM:
    m = node_begin(e, "LayerNormalization", 3, in, out);
    attr_int(e, "axis", f->axis);
    attr_float(e, "epsilon", f->eps);
    break;
  case FZ_MEAN: {
    const nb_tensor *s = t->in[0], *x = f->in[0];
    if (x->ndim == 4 && s->ip[0] == 0xc && s->ip[1]) {
      m = node_begin(e, "GlobalAveragePool", 1, in, out);
      break;
    }
    int64_t axes[NB_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < x->ndim; i++)
      if ((s->ip[0] >> i) & 1) axes[n++] = i;
    m = node_begin(e, "ReduceMean", 1, in, out);
    attr_ints(e, "axes", n, axes);
    attr_int(e, "keepdims", s->ip[1] ? 1 : 0);
    break;
  }
  default: return nb_error(NB_ERR_INTERNAL, "onnx export: unknown pattern %d", f->kind);
  }
  node_end(e, m);
  return e->status;
}

static const struct {
  nb_opcode op;
  const char *onnx;
} simple_ops[] = {
    {NB_OP_ADD, "Add"},         {NB_OP_SUB, "Sub"},
    {NB_OP_MUL, "Mul"},         {NB_OP_DIV, "Div"},
    {NB_OP_POW, "Pow"},         {NB_OP_MAXIMUM, "Max"},
    {NB_OP_MINIMUM, "Min"},     {NB_OP_NEG, "Neg"},
    {NB_OP_ABS, "Abs"},         {NB_OP_SIGN, "Sign"},
    {NB_OP_EXP, "Exp"},         {NB_OP_LOG, "Log"},
    {NB_OP_SQRT, "Sqrt"},       {NB_OP_RECIPROCAL, "Reciprocal"},
    {NB_OP_TANH, "Tanh"},       {NB_OP_ERF, "Erf"},
    {NB_OP_SIGMOID, "Sigmoid"}, {NB_OP_RELU, "Relu"},
    {NB_OP_MATMUL, "MatMul"},
};

static const struct {
  nb_opcode op;
  const char *onnx;
} compare_ops[] = {
    {NB_OP_EQ, "Equal"},       {NB_OP_NE, "Equal"},   {NB_OP_LT, "Less"},
    {NB_OP_LE, "LessOrEqual"}, {NB_OP_GT, "Greater"}, {NB_OP_GE, "GreaterOrEqual"},
};

/* Writes node t as ONNX nodes producing value `out`, or sets e->name[t->id]
 * to an existing value when t is only a view of one. */
static nb_status write_node(ex *e, nb_tensor *t) {
  const char *out = value_name(e, t);
  if (!out) return e->status;
  e->name[t->id] = out;
  if (e->fz[t->id].kind) return write_fused(e, t, out);
  const nb_tensor *x = t->n_in ? t->in[0] : NULL;
  const char *a = x ? V(e, x) : NULL;
  const char *b = t->n_in > 1 ? V(e, t->in[1]) : NULL;
  if (e->status) return e->status;
  size_t m;
  for (size_t i = 0; i < sizeof simple_ops / sizeof simple_ops[0]; i++)
    if (simple_ops[i].op == t->op) {
      node2(e, simple_ops[i].onnx, a, b, out);
      return e->status;
    }
  for (size_t i = 0; i < sizeof compare_ops / sizeof compare_ops[0]; i++)
    if (compare_ops[i].op == t->op) {
      const char *bn = node2(e, compare_ops[i].onnx, a, b, pool_printf(e, "%s/bool", out));
      if (t->op == NB_OP_NE) bn = node2(e, "Not", bn, NULL, pool_printf(e, "%s/not", out));
      e->bool_name[t->id] = bn;
      cast(e, bn, onnx_type(t->dtype), out);
      return e->status;
    }
  switch (t->op) {
  case NB_OP_WHERE: {
    const char *cond = e->bool_name[x->id];
    if (!cond) cond = cast(e, a, NB_ONNX_BOOL, pool_printf(e, "%s/cond", out));
    m = node_begin(e, "Where", 3, (const char *[]){cond, b, V(e, t->in[2])}, out);
    node_end(e, m);
    break;
  }
  case NB_OP_RSQRT:
    node2(e, "Reciprocal", node2(e, "Sqrt", a, NULL, pool_printf(e, "%s/sqrt", out)), NULL, out);
    break;
  case NB_OP_SQUARE: node2(e, "Mul", a, a, out); break;
  case NB_OP_LEAKY_RELU:
    m = node_begin(e, "LeakyRelu", 1, &a, out);
    attr_float(e, "alpha", t->fp[0]);
    node_end(e, m);
    break;
  case NB_OP_GELU: {
    /* opset 17 has no Gelu: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form
     * 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) */
    const char *u;
    if (t->ip[0]) {
      const char *x3 = node2(e, "Mul", node2(e, "Mul", a, a, pool_printf(e, "%s/x2", out)), a,
                             pool_printf(e, "%s/x3", out));
      u = node2(e, "Add", a,
                node2(e, "Mul", x3, scalar(e, 0.044715f), pool_printf(e, "%s/cx3", out)),
                pool_printf(e, "%s/inner", out));
      u = node2(e, "Mul", u, scalar(e, 0.7978845608028654f), pool_printf(e, "%s/arg", out));
      u = node2(e, "Tanh", u, NULL, pool_printf(e, "%s/tanh", out));
    } else {
      u = node2(e, "Mul", a, scalar(e, 0.70710678118654752f), pool_printf(e, "%s/arg", out));
      u = node2(e, "Erf", u, NULL, pool_printf(e, "%s/erf", out));
    }
    u = node2(e, "Add", u, scalar(e, 1.0f), pool_printf(e, "%s/1p", out));
    u = node2(e, "Mul", a, u, pool_printf(e, "%s/xp", out));
    node2(e, "Mul", u, scalar(e, 0.5f), out);
    break;
  }
  case NB_OP_SILU:
    node2(e, "Mul", a, node2(e, "Sigmoid", a, NULL, pool_printf(e, "%s/sigmoid", out)), out);
    break;
  case NB_OP_SOFTPLUS: {
    /* log(1 + exp(beta x)) / beta, and x itself where beta x > threshold */
    float beta = t->fp[0];
    const char *bx =
        beta == 1.0f ? a : node2(e, "Mul", a, scalar(e, beta), pool_printf(e, "%s/bx", out));
    const char *sp = node2(e, "Softplus", bx, NULL, pool_printf(e, "%s/softplus", out));
    if (beta != 1.0f) sp = node2(e, "Div", sp, scalar(e, beta), pool_printf(e, "%s/scaled", out));
    const char *big =
        node2(e, "Greater", bx, scalar(e, t->fp[1]), pool_printf(e, "%s/linear", out));
    m = node_begin(e, "Where", 3, (const char *[]){big, a, sp}, out);
    node_end(e, m);
    break;
  }
  case NB_OP_CLAMP:
    m = node_begin(e, "Clip", 3, (const char *[]){a, scalar(e, t->fp[0]), scalar(e, t->fp[1])},
                   out);
    node_end(e, m);
    break;
  case NB_OP_CAST: cast(e, a, onnx_type(t->dtype), out); break;
  case NB_OP_COPY: e->name[t->id] = a; break;
  case NB_OP_RESHAPE: {
    int64_t shape[NB_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) shape[i] = i == e->dyn[t->id].axis ? -1 : t->shape[i];
    node2(e, "Reshape", a, init_ints(e, out, "shape", t->ndim, shape), out);
    break;
  }
  case NB_OP_PERMUTE:
    m = node_begin(e, "Transpose", 1, &a, out);
    attr_ints(e, "perm", t->ndim, t->ip);
    node_end(e, m);
    break;
  case NB_OP_SLICE:
    if (x->op == NB_OP_ATTENTION && e->y_only[x->id]) {
      e->name[t->id] = a; /* the attention node wrote y alone */
      break;
    }
    m = node_begin(e, "Slice", 5,
                   (const char *[]){a, init_ints(e, out, "starts", 1, t->ip + 1),
                                    init_ints(e, out, "ends", 1, t->ip + 2),
                                    init_ints(e, out, "axes", 1, t->ip),
                                    init_ints(e, out, "steps", 1, t->ip + 3)},
                   out);
    node_end(e, m);
    break;
  case NB_OP_BROADCAST: {
    int64_t shape[NB_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) shape[i] = i == e->dyn[t->id].axis ? 1 : t->shape[i];
    node2(e, "Expand", a, init_ints(e, out, "shape", t->ndim, shape), out);
    break;
  }
  case NB_OP_SUM:
  case NB_OP_MAX:
  case NB_OP_MIN: {
    int64_t axes[NB_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < x->ndim; i++)
      if ((t->ip[0] >> i) & 1) axes[n++] = i;
    if (n == 0) { /* a rank-0 input: nothing to reduce */
      e->name[t->id] = a;
      break;
    }
    if (t->op == NB_OP_SUM) {
      /* ReduceSum takes its axes as an input from opset 13, the others from 18 */
      m = node_begin(e, "ReduceSum", 2, (const char *[]){a, init_ints(e, out, "axes", n, axes)},
                     out);
    } else {
      m = node_begin(e, t->op == NB_OP_MAX ? "ReduceMax" : "ReduceMin", 1, &a, out);
      attr_ints(e, "axes", n, axes);
    }
    attr_int(e, "keepdims", t->ip[1] ? 1 : 0);
    node_end(e, m);
    break;
  }
  case NB_OP_ARGMAX:
    m = node_begin(e, "ArgMax", 1, &a, out);
    attr_int(e, "axis", t->ip[0]);
    attr_int(e, "keepdims", t->ip[1] ? 1 : 0);
    node_end(e, m);
    break;
  case NB_OP_CONCAT: {
    const char **in = calloc((size_t)t->n_in, sizeof *in);
    if (!in) return fail_oom(e), e->status;
    for (int k = 0; k < t->n_in; k++) in[k] = V(e, t->in[k]);
    m = node_begin(e, "Concat", t->n_in, in, out);
    attr_int(e, "axis", t->ip[0]);
    node_end(e, m);
    free(in);
    break;
  }
  case NB_OP_PAD: {
    int64_t pads[2 * NB_MAX_DIMS]; /* ONNX: every begin, then every end */
    for (int i = 0; i < t->ndim; i++) {
      pads[i] = t->ip[2 * i];
      pads[t->ndim + i] = t->ip[2 * i + 1];
    }
    m = node_begin(e, "Pad", 3,
                   (const char *[]){a, init_ints(e, out, "pads", 2 * t->ndim, pads),
                                    scalar_of(e, out, t->dtype, t->fp[0])},
                   out);
    node_end(e, m);
    break;
  }
  case NB_OP_INDEX_SELECT:
    m = node_begin(e, "Gather", 2, (const char *[]){a, b}, out);
    attr_int(e, "axis", t->ip[0]);
    node_end(e, m);
    break;
  case NB_OP_ONE_HOT: {
    float values[2] = {0.0f, 1.0f};
    const char *vn = pool_printf(e, "%s/values", out);
    add_init(e, vn, NB_ONNX_FLOAT, 4, 1, (int64_t[]){2}, values, sizeof values);
    m = node_begin(e, "OneHot", 3,
                   (const char *[]){a, scalar_of(e, out, NB_I64, (double)t->ip[0]), vn}, out);
    attr_int(e, "axis", -1);
    node_end(e, m);
    break;
  }
  case NB_OP_CONV2D:
    m = node_begin(e, "Conv", 2, (const char *[]){a, b}, out);
    conv_attrs(e, t);
    node_end(e, m);
    break;
  case NB_OP_MAXPOOL2D:
  case NB_OP_AVGPOOL2D: return write_pool(e, t, out);
  case NB_OP_SOFTMAX:
  case NB_OP_LOG_SOFTMAX:
    m = node_begin(e, t->op == NB_OP_SOFTMAX ? "Softmax" : "LogSoftmax", 1, &a, out);
    attr_int(e, "axis", t->ip[0]);
    node_end(e, m);
    break;
  case NB_OP_ATTENTION: write_attention(e, t, out); break;
  case NB_OP_DROPOUT:
    return unsupported(t, "is active dropout (a training graph): export a graph built with "
                          "training = 0, where dropout is the identity");
  case NB_OP_ASSIGN:
    return unsupported(t, "writes a variable: export the values a plan computes, not its "
                          "updates");
  default:
    return unsupported(t, "has no ONNX mapping (gradient ops are not exported: build the "
                          "graph for inference)");
  }
  return e->status;
}

/* ---- the model ------------------------------------------------------------------------------ */

nb_onnx_export_options nb_onnx_export_defaults(void) {
  nb_onnx_export_options o;
  memset(&o, 0, sizeof o);
  o.dynamic_batch = 1;
  o.graph_name = "nabla";
  o.producer_version = "";
  return o;
}

static void ex_free(ex *e) {
  free(e->need);
  free(e->absorbed);
  free(e->y_only);
  free(e->uses);
  free(e->dyn);
  free(e->name);
  free(e->out_name);
  free(e->bool_name);
  free(e->out_done);
  free(e->taken);
  free(e->fz);
  nb_pb_writer_free(&e->nodes);
  nb_pb_writer_free(&e->inits);
  nb_pb_writer_free(&e->io);
  for (int i = 0; i < e->npool; i++) free(e->pool[i]);
  free(e->pool);
}

/* Pass 1 and the output names. */
static nb_status prepare(ex *e, int n_outputs, nb_tensor *const *outputs) {
  int n = e->n;
  e->need = calloc((size_t)n, 1);
  e->absorbed = calloc((size_t)n, 1);
  e->y_only = calloc((size_t)n, 1);
  e->uses = calloc((size_t)n, sizeof *e->uses);
  e->dyn = malloc((size_t)n * sizeof *e->dyn);
  e->name = calloc((size_t)n, sizeof *e->name);
  e->out_name = calloc((size_t)n, sizeof *e->out_name);
  e->bool_name = calloc((size_t)n, sizeof *e->bool_name);
  e->out_done = calloc((size_t)n, 1);
  e->taken = calloc((size_t)n + (size_t)n_outputs, sizeof *e->taken);
  e->fz = calloc((size_t)n, sizeof *e->fz);
  if (!e->need || !e->absorbed || !e->y_only || !e->uses || !e->dyn || !e->name || !e->out_name ||
      !e->bool_name || !e->fz || !e->out_done || !e->taken)
    return nb_error(NB_ERR_OOM, "onnx export: out of memory");
  for (int j = 0; j < n_outputs; j++) {
    const nb_tensor *t = outputs[j];
    if (!t || t->graph != e->g)
      return nb_error(NB_ERR_INVALID_ARG, "onnx export: output %d is %s", j,
                      t ? "a node of another graph" : "NULL");
    e->need[t->id] = 1;
    /* the first output of a computed node takes its name directly; leaves,
     * views and repeated outputs get an Identity at the end */
    if (is_leaf(t) || e->out_name[t->id]) continue;
    const char *s = t->name && t->name[0] ? t->name
                    : n_outputs == 1      ? "output"
                                          : pool_printf(e, "output_%d", j);
    if (!s) return e->status;
    for (int i = 0; i < n; i++) {
      const nb_tensor *u = e->g->nodes[i];
      if ((u->op == NB_OP_INPUT || u->op == NB_OP_VARIABLE) && u->name && !strcmp(u->name, s))
        return nb_error(NB_ERR_INVALID_ARG,
                        "onnx export: output %d is named '%s', which is already an input or a "
                        "variable",
                        j, s);
      if (e->out_name[i] && !strcmp(e->out_name[i], s))
        return nb_error(NB_ERR_INVALID_ARG, "onnx export: two outputs are named '%s'", s);
    }
    e->out_name[t->id] = s;
    e->taken[e->ntaken++] = s;
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *u = e->g->nodes[i];
    if ((u->op == NB_OP_INPUT || u->op == NB_OP_VARIABLE) && u->name)
      e->taken[e->ntaken++] = u->name;
  }
  qsort(e->taken, (size_t)e->ntaken, sizeof *e->taken, cmp_str);
  for (int i = n - 1; i >= 0; i--) {
    const nb_tensor *t = e->g->nodes[i];
    if (!e->need[i]) continue;
    for (int k = 0; k < t->n_in; k++) {
      e->need[t->in[k]->id] = 1;
      e->uses[t->in[k]->id]++;
    }
  }
  for (int i = 0; i < n; i++) {
    const nb_tensor *t = e->g->nodes[i];
    e->dyn[i] = no_batch;
    if (!e->need[i] || !e->opt.dynamic_batch) continue;
    nb_status st = dyn_node(e, t, &e->dyn[i]);
    if (st) return st;
  }
  return NB_OK;
}

/* Writes the graph inputs, every needed node and the outputs into e->nodes,
 * e->inits and e->io. */
static nb_status write_graph(ex *e, int n_outputs, nb_tensor *const *outputs) {
  for (int i = 0; i < e->n; i++) {
    nb_tensor *t = e->g->nodes[i];
    if (!e->need[i] || t->op != NB_OP_INPUT) continue;
    if (!t->name || !t->name[0])
      return nb_error(NB_ERR_INVALID_ARG, "onnx export: input node %d has no name", t->id);
    for (int k = 0; k < i; k++)
      if (e->need[k] && e->g->nodes[k]->op == NB_OP_INPUT && !strcmp(e->g->nodes[k]->name, t->name))
        return nb_error(NB_ERR_INVALID_ARG, "onnx export: two inputs are named '%s'", t->name);
    int et = onnx_type(t->dtype);
    if (!et) return unsupported(t, "has a dtype ONNX export does not know");
    value_info(&e->io, GRAPH_INPUT, t->name, et, t->ndim, t->shape, &e->dyn[i]);
    e->name[i] = t->name;
  }
  match_patterns(e);
  for (int i = 0; i < e->n; i++) {
    nb_tensor *t = e->g->nodes[i];
    if (!e->need[i] || e->absorbed[i] || is_leaf(t)) continue;
    nb_status st = write_node(e, t);
    if (st) return st;
  }
  for (int j = 0; j < n_outputs; j++) {
    const nb_tensor *t = outputs[j];
    const char *v = V(e, t), *want = e->out_name[t->id];
    if (e->status) return e->status;
    if (want && !e->out_done[t->id]) {
      /* a view of another value (a copy, y of an attention) gets its own */
      if (strcmp(want, v)) node2(e, "Identity", v, NULL, want);
      e->out_done[t->id] = 1;
    } else {
      /* a leaf, or the same node given as an output again */
      want = t->name && t->name[0] ? pool_printf(e, "%s_%d", t->name, j)
             : n_outputs == 1      ? "output"
                                   : pool_printf(e, "output_%d", j);
      while (want && name_taken(e, want)) want = pool_printf(e, "%s_", want);
      node2(e, "Identity", v, NULL, want);
    }
    if (e->status) return e->status;
    int et = onnx_type(t->dtype);
    if (!et) return unsupported(t, "has a dtype ONNX export does not know");
    value_info(&e->io, GRAPH_OUTPUT, want, et, t->ndim, t->shape, &e->dyn[t->id]);
  }
  if (e->status) return e->status;
  if (e->nodes.status) return e->nodes.status;
  if (e->inits.status) return e->inits.status;
  return e->io.status;
}

nb_status nb_onnx_export(const nb_graph *g, const nb_state *st, int n_outputs,
                         nb_tensor *const *outputs, const nb_onnx_export_options *opt,
                         uint8_t **data, size_t *len) {
  if (data) *data = NULL;
  if (len) *len = 0;
  if (!g || !data || !len || n_outputs < 1 || !outputs)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_onnx_export: graph, outputs (at least one), data and len are needed");
  if (nb_graph_status(g))
    return nb_error(nb_graph_status(g), "onnx export: the graph has an error: %s",
                    nb_graph_error(g));
  ex e;
  memset(&e, 0, sizeof e);
  e.g = g;
  e.st = st;
  e.n = g->n_nodes;
  e.opt = opt ? *opt : nb_onnx_export_defaults();
  nb_pb_writer_init(&e.nodes);
  nb_pb_writer_init(&e.inits);
  nb_pb_writer_init(&e.io);
  nb_pb_writer w;
  nb_pb_writer_init(&w);
  nb_pb_write_int(&w, MODEL_IR, IR_VERSION);
  nb_pb_write_string(&w, MODEL_PRODUCER, "nabla");
  nb_pb_write_string(&w, MODEL_PRODUCER_VERSION,
                     e.opt.producer_version ? e.opt.producer_version : "");
  if (e.opt.doc_string) nb_pb_write_string(&w, MODEL_DOC, e.opt.doc_string);
  size_t om = nb_pb_begin(&w, MODEL_OPSET);
  nb_pb_write_string(&w, OPSET_DOMAIN, "");
  nb_pb_write_int(&w, OPSET_VERSION, OPSET);
  nb_pb_end(&w, om);
  nb_status rc = prepare(&e, n_outputs, outputs);
  if (!rc) rc = write_graph(&e, n_outputs, outputs);
  if (!rc) {
    /* nodes, initializers and the input/output types were collected apart */
    size_t gm = nb_pb_begin(&w, MODEL_GRAPH);
    nb_pb_write_string(&w, GRAPH_NAME, e.opt.graph_name ? e.opt.graph_name : "nabla");
    nb_pb_write_raw(&w, e.nodes.buf, e.nodes.len);
    nb_pb_write_raw(&w, e.inits.buf, e.inits.len);
    nb_pb_write_raw(&w, e.io.buf, e.io.len);
    nb_pb_end(&w, gm);
    rc = w.status;
  }
  ex_free(&e);
  if (rc) {
    nb_pb_writer_free(&w);
    return rc;
  }
  *data = w.buf;
  *len = w.len;
  return NB_OK;
}

nb_status nb_onnx_export_file(const nb_graph *g, const nb_state *st, int n_outputs,
                              nb_tensor *const *outputs, const nb_onnx_export_options *opt,
                              const char *path) {
  if (!path) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_export_file: path is NULL");
  uint8_t *data;
  size_t len;
  nb_status rc = nb_onnx_export(g, st, n_outputs, outputs, opt, &data, &len);
  if (rc) return rc;
  nb_atomic_file *f;
  rc = nb_atomic_open(path, &f);
  if (!rc) rc = nb_atomic_write(f, data, len);
  if (!rc)
    rc = nb_atomic_commit(f);
  else
    nb_atomic_abort(f);
  free(data);
  return rc;
}
