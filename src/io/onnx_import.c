/* ONNX graph import: maps ONNX nodes onto nabla graph ops.
 *
 * Every runtime value is an f32 nabla tensor; an ONNX value also records
 * whether it holds floats, integers or bools (integers and bools as exact
 * f32 values), so outputs can be compared with their ONNX type and integer
 * arithmetic, which f32 would get wrong, is refused instead of miscomputed.
 * Values known at build time (initializers, Constant nodes, Shape outputs,
 * inputs given with a value) stay host tensors until an op needs them as
 * graph nodes, so shapes, axes, pads and indices can be read from them. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/backend.h"
#include "onnx_internal.h"

enum { K_FLOAT = 'F', K_INT = 'I', K_BOOL = 'B' };

typedef struct ox_val {
  const char *name;
  nb_tensor *t;            /* graph node, made on first use for constants */
  const nb_onnx_tensor *c; /* value known at build time, or NULL */
  int kind;                /* K_* */
  int et;                  /* ONNX element type */
} ox_val;

typedef struct bld {
  const nb_onnx_model *m;
  nb_graph *g;
  ox_arena *a; /* host tensors made while building */
  ox_val *v;
  int nv, cap;
  int64_t opset;
  const ox_node *nd;
  int node_index;
  nb_backend *cpu; /* evaluates constant nodes at build time; made on first use */
  int exact_ok;    /* integer inputs allowed: the op only selects values */
} bld;

/* ---- helpers ------------------------------------------------------------------ */

static nb_status bfail(bld *b, nb_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static nb_status bfail(bld *b, nb_status st, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const ox_node *nd = b->nd;
  if (!nd) return nb_error(st, "%s: %s", b->m->path, msg);
  return nb_error(st, "%s: node %d '%s' (%s, opset %lld): %s", b->m->path, b->node_index,
                  nd->name[0] ? nd->name : (nd->nout ? nd->out[0] : ""), nd->op_type,
                  (long long)b->opset, msg);
}

static nb_status oom(void) { return nb_error(NB_ERR_OOM, "onnx: out of memory"); }

static ox_val *find(bld *b, const char *name) {
  for (int i = b->nv - 1; i >= 0; i--)
    if (!strcmp(b->v[i].name, name)) return &b->v[i];
  return NULL;
}

static int default_type(int kind) {
  return kind == K_BOOL ? NB_ONNX_BOOL : kind == K_INT ? NB_ONNX_INT64 : NB_ONNX_FLOAT;
}

static nb_status add_val(bld *b, const char *name, nb_tensor *t, const nb_onnx_tensor *c, int kind,
                         int et) {
  if (b->nv >= b->cap) return bfail(b, NB_ERR_INTERNAL, "value table full");
  b->v[b->nv++] = (ox_val){name, t, c, kind, et ? et : default_type(kind)};
  return NB_OK;
}

static const ox_attr *attr(const ox_node *nd, const char *name) {
  for (int i = 0; i < nd->nattr; i++)
    if (!strcmp(nd->attr[i].name, name)) return &nd->attr[i];
  return NULL;
}

static int64_t attr_i(const ox_node *nd, const char *name, int64_t def) {
  const ox_attr *a = attr(nd, name);
  return a ? a->i : def;
}

static float attr_f(const ox_node *nd, const char *name, float def) {
  const ox_attr *a = attr(nd, name);
  return a ? a->f : def;
}

static const char *attr_s(const ox_node *nd, const char *name, const char *def) {
  const ox_attr *a = attr(nd, name);
  return a ? a->s : def;
}

static int kind_of_type(int t) {
  if (t == NB_ONNX_BOOL) return K_BOOL;
  if (t == NB_ONNX_FLOAT || t == NB_ONNX_DOUBLE || t == NB_ONNX_FLOAT16 || t == NB_ONNX_BFLOAT16)
    return K_FLOAT;
  return K_INT;
}

/* Input k of the current node, or NULL when absent or empty (optional). */
static ox_val *in(bld *b, int k) {
  if (k >= b->nd->nin || !b->nd->in[k][0]) return NULL;
  return find(b, b->nd->in[k]);
}

/* The graph node of a value; constants become f32 constant nodes. */
static nb_tensor *T(bld *b, ox_val *v) {
  if (!v) return NULL;
  if (v->t) return v->t;
  const nb_onnx_tensor *c = v->c;
  if (!c) return NULL;
  size_t n = (size_t)c->numel;
  float *tmp = malloc((n ? n : 1) * sizeof(float));
  if (!tmp) {
    nb_graph_set_error(b->g, NB_ERR_OOM, "onnx: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) tmp[i] = c->f32 ? c->f32[i] : (float)c->i64[i];
  v->t = nb_constant(b->g, NB_F32, c->ndim, c->dims, tmp);
  free(tmp);
  return v->t;
}

static int vndim(ox_val *v) { return v->t ? nb_tensor_ndim(v->t) : v->c->ndim; }

static void vshape(ox_val *v, int64_t *shape) {
  int n = vndim(v);
  const int64_t *s = v->t ? nb_tensor_shape(v->t) : v->c->dims;
  for (int i = 0; i < n; i++) shape[i] = s[i];
}

/* A build-time integer (or float) vector: a constant input's values. */
static nb_status const_ints(bld *b, ox_val *v, const char *what, int64_t *out, int cap, int *n) {
  *n = 0;
  if (!v->c)
    return bfail(b, NB_ERR_INVALID_ARG,
                 "%s '%s' must be known at build time (an initializer, a Constant or an input "
                 "given with a value)",
                 what, v->name);
  if (v->c->numel > cap) return bfail(b, NB_ERR_UNSUPPORTED, "%s has too many values", what);
  for (int64_t i = 0; i < v->c->numel; i++)
    out[i] = v->c->i64 ? v->c->i64[i] : (int64_t)v->c->f32[i];
  *n = (int)v->c->numel;
  return NB_OK;
}

static nb_status const_float(bld *b, ox_val *v, const char *what, float *out) {
  *out = 0.0f;
  if (!v->c || v->c->numel != 1)
    return bfail(b, NB_ERR_INVALID_ARG, "%s '%s' must be a single value known at build time", what,
                 v->name);
  *out = v->c->f32 ? v->c->f32[0] : (float)v->c->i64[0];
  return NB_OK;
}

/* A new host tensor (ints) in the builder's arena. */
static nb_onnx_tensor *new_const(bld *b, int elem_type, int ndim, const int64_t *dims) {
  nb_onnx_tensor *t = ox_alloc(b->a, sizeof *t);
  if (!t) return NULL;
  t->name = "";
  t->elem_type = elem_type;
  t->ndim = ndim;
  t->numel = 1;
  for (int i = 0; i < ndim; i++) {
    t->dims[i] = dims[i];
    t->numel *= dims[i];
  }
  size_t n = (size_t)(t->numel ? t->numel : 1);
  if (kind_of_type(elem_type) == K_FLOAT)
    t->f32 = ox_alloc(b->a, n * sizeof(float));
  else
    t->i64 = ox_alloc(b->a, n * sizeof(int64_t));
  if (!t->f32 && !t->i64) return NULL;
  return t;
}

/* The ONNX type of an output of `kind`: the first input's type when that
 * has the same kind (Add of doubles gives doubles), else the default. */
static int out_type(bld *b, int kind) {
  ox_val *x = in(b, 0);
  return x && x->kind == kind ? x->et : default_type(kind);
}

static nb_status out_t(bld *b, int k, nb_tensor *t, int kind) {
  if (k >= b->nd->nout || !b->nd->out[k][0]) return NB_OK;
  if (!t) return NB_OK; /* the graph's error is reported after the node */
  return add_val(b, b->nd->out[k], t, NULL, kind, out_type(b, kind));
}

/* out_t with an explicit ONNX element type. */
static nb_status out_typed(bld *b, int k, nb_tensor *t, int kind, int et) {
  if (k >= b->nd->nout || !b->nd->out[k][0] || !t) return NB_OK;
  return add_val(b, b->nd->out[k], t, NULL, kind, et);
}

static nb_status out_c(bld *b, int k, const nb_onnx_tensor *c, int kind) {
  if (k >= b->nd->nout || !b->nd->out[k][0]) return NB_OK;
  return add_val(b, b->nd->out[k], NULL, c, kind, c->elem_type ? c->elem_type : out_type(b, kind));
}

static int norm_axis(int axis, int ndim) { return axis < 0 ? axis + ndim : axis; }

static nb_status check_axis(bld *b, int64_t axis, int ndim, int *out) {
  *out = 0; /* defined on failure too: compilers cannot see that bfail never returns NB_OK */
  if (axis < -ndim || axis >= (ndim ? ndim : 1))
    return bfail(b, NB_ERR_SHAPE, "axis %lld out of range for rank %d", (long long)axis, ndim);
  *out = norm_axis((int)axis, ndim);
  return NB_OK;
}

/* Math in f32 would silently get integer overflow, wrap-around and
 * truncating division wrong, so integer arithmetic is refused. */
static nb_status need_float(bld *b, ox_val *v) {
  if (!v) return bfail(b, NB_ERR_INVALID_ARG, "missing input");
  if (v->kind != K_FLOAT && !b->exact_ok)
    return bfail(b, NB_ERR_UNSUPPORTED,
                 "%s input '%s': nabla computes math in f32, integer/bool arithmetic is not "
                 "supported",
                 v->kind == K_BOOL ? "bool" : "integer", v->name);
  return NB_OK;
}

static nb_status need_in(bld *b, int k, ox_val **out) {
  *out = in(b, k);
  if (!*out) return bfail(b, NB_ERR_FORMAT, "input %d is missing or not defined earlier", k);
  return NB_OK;
}

/* ---- elementwise ---------------------------------------------------------------- */

typedef nb_tensor *(*unary_fn)(nb_graph *, nb_tensor *);
typedef nb_tensor *(*binary_fn)(nb_graph *, nb_tensor *, nb_tensor *);

static const struct {
  const char *op;
  unary_fn fn;
} unary_ops[] = {
    {"Neg", nb_neg},   {"Abs", nb_abs},         {"Exp", nb_exp},
    {"Log", nb_log},   {"Sqrt", nb_sqrt},       {"Reciprocal", nb_reciprocal},
    {"Relu", nb_relu}, {"Sigmoid", nb_sigmoid}, {"Tanh", nb_tanh},
    {"Sign", nb_sign}, {"Erf", nb_erf},
};

static const struct {
  const char *op;
  binary_fn fn;
  int out_kind; /* 0: same as input */
  int any_kind; /* 1: inputs may be integers or bools (exact in f32) */
} binary_ops[] = {
    {"Add", nb_add, 0, 0},
    {"Sub", nb_sub, 0, 0},
    {"Mul", nb_mul, 0, 0},
    {"Div", nb_div, 0, 0},
    {"Pow", nb_pow, 0, 0},
    {"Equal", nb_eq, K_BOOL, 1},
    {"Less", nb_lt, K_BOOL, 1},
    {"Greater", nb_gt, K_BOOL, 1},
    {"LessOrEqual", nb_le, K_BOOL, 1},
    {"GreaterOrEqual", nb_ge, K_BOOL, 1},
    {"And", nb_mul, K_BOOL, 1},
    {"Or", nb_maximum, K_BOOL, 1},
    {"Xor", nb_ne, K_BOOL, 1},
    {"PRelu", NULL, 0, 0},
};

static nb_status op_unary(bld *b, unary_fn fn) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  return out_t(b, 0, fn(b->g, T(b, x)), K_FLOAT);
}

static nb_status op_binary(bld *b, int i) {
  ox_val *x, *y;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &y))) return st;
  if (!binary_ops[i].any_kind && (st = need_float(b, x))) return st;
  nb_graph *g = b->g;
  nb_tensor *tx = T(b, x), *ty = T(b, y), *r;
  if (!strcmp(binary_ops[i].op, "PRelu"))
    r = nb_where(g, nb_lt(g, tx, nb_scalar(g, 0.0f)), nb_mul(g, tx, ty), tx);
  else
    r = binary_ops[i].fn(g, tx, ty);
  return out_t(b, 0, r, binary_ops[i].out_kind ? binary_ops[i].out_kind : K_FLOAT);
}

static nb_status op_not(bld *b) {
  ox_val *x;
  nb_status st = need_in(b, 0, &x);
  if (st) return st;
  return out_t(b, 0, nb_eq(b->g, T(b, x), nb_scalar(b->g, 0.0f)), K_BOOL);
}

/* Max, Min, Sum, Mean: n-ary with broadcasting. */
static nb_status op_nary(bld *b) {
  const char *op = b->nd->op_type;
  nb_tensor *acc = NULL;
  int n = 0;
  for (int k = 0; k < b->nd->nin; k++) {
    ox_val *x = in(b, k);
    if (!x) continue;
    nb_status st = need_float(b, x);
    if (st) return st;
    nb_tensor *t = T(b, x);
    if (!acc)
      acc = t;
    else if (!strcmp(op, "Max"))
      acc = nb_maximum(b->g, acc, t);
    else if (!strcmp(op, "Min"))
      acc = nb_minimum(b->g, acc, t);
    else
      acc = nb_add(b->g, acc, t);
    n++;
  }
  if (!n) return bfail(b, NB_ERR_FORMAT, "no inputs");
  if (!strcmp(op, "Mean") && n > 1) acc = nb_div(b->g, acc, nb_scalar(b->g, (float)n));
  /* a single input passes through; copy so the output is its own node */
  if (n == 1) acc = nb_mul(b->g, acc, nb_scalar(b->g, 1.0f));
  return out_t(b, 0, acc, K_FLOAT);
}

/* Activations with parameters, composed from elementwise ops. */
static nb_status op_activation(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  const ox_node *nd = b->nd;
  const char *op = nd->op_type;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *r = NULL;
  nb_tensor *zero = nb_scalar(g, 0.0f), *one = nb_scalar(g, 1.0f);
  if (!strcmp(op, "LeakyRelu")) {
    r = nb_leaky_relu(g, t, attr_f(nd, "alpha", 0.01f));
  } else if (!strcmp(op, "Elu") || !strcmp(op, "Selu")) {
    int selu = !strcmp(op, "Selu");
    float alpha = attr_f(nd, "alpha", selu ? 1.67326319217681884765625f : 1.0f);
    nb_tensor *neg = nb_mul(g, nb_scalar(g, alpha), nb_sub(g, nb_exp(g, t), one));
    r = nb_where(g, nb_gt(g, t, zero), t, neg);
    if (selu) r = nb_mul(g, r, nb_scalar(g, attr_f(nd, "gamma", 1.05070102214813232421875f)));
  } else if (!strcmp(op, "Celu")) {
    float alpha = attr_f(nd, "alpha", 1.0f);
    nb_tensor *e = nb_sub(g, nb_exp(g, nb_div(g, t, nb_scalar(g, alpha))), one);
    r = nb_add(g, nb_maximum(g, t, zero), nb_minimum(g, zero, nb_mul(g, nb_scalar(g, alpha), e)));
  } else if (!strcmp(op, "HardSigmoid")) {
    float alpha = attr_f(nd, "alpha", 0.2f), beta = attr_f(nd, "beta", 0.5f);
    r = nb_clamp(g, nb_add(g, nb_mul(g, t, nb_scalar(g, alpha)), nb_scalar(g, beta)), 0.0f, 1.0f);
  } else if (!strcmp(op, "HardSwish")) {
    nb_tensor *hs = nb_clamp(
        g, nb_add(g, nb_mul(g, t, nb_scalar(g, 1.0f / 6.0f)), nb_scalar(g, 0.5f)), 0.0f, 1.0f);
    r = nb_mul(g, t, hs);
  } else if (!strcmp(op, "Softsign")) {
    r = nb_div(g, t, nb_add(g, one, nb_abs(g, t)));
  } else if (!strcmp(op, "ThresholdedRelu")) {
    r = nb_where(g, nb_gt(g, t, nb_scalar(g, attr_f(nd, "alpha", 1.0f))), t, zero);
  } else if (!strcmp(op, "Softplus")) {
    r = nb_softplus(g, t, 1.0f, 20.0f);
  } else if (!strcmp(op, "Mish")) {
    r = nb_mul(g, t, nb_tanh(g, nb_softplus(g, t, 1.0f, 20.0f)));
  } else if (!strcmp(op, "Gelu")) {
    const char *ap = attr_s(nd, "approximate", "none");
    if (strcmp(ap, "none") && strcmp(ap, "tanh"))
      return bfail(b, NB_ERR_UNSUPPORTED, "approximate='%s'", ap);
    r = nb_gelu(g, t, !strcmp(ap, "tanh"));
  } else {
    return bfail(b, NB_ERR_INTERNAL, "no activation importer");
  }
  return out_t(b, 0, r, K_FLOAT);
}

static nb_status op_clip(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  if (b->opset < 11) {
    t = nb_clamp(g, t, attr_f(b->nd, "min", -INFINITY), attr_f(b->nd, "max", INFINITY));
  } else {
    /* min then max, like numpy.clip: min > max gives max */
    ox_val *lo = in(b, 1), *hi = in(b, 2);
    if (lo) t = nb_maximum(g, t, T(b, lo));
    if (hi) t = nb_minimum(g, t, T(b, hi));
    if (!lo && !hi) t = nb_mul(g, t, nb_scalar(g, 1.0f));
  }
  return out_t(b, 0, t, K_FLOAT);
}

static nb_status op_where(bld *b) {
  ox_val *c, *x, *y;
  nb_status st;
  if ((st = need_in(b, 0, &c)) || (st = need_in(b, 1, &x)) || (st = need_in(b, 2, &y))) return st;
  return out_t(b, 0, nb_where(b->g, T(b, c), T(b, x), T(b, y)), x->kind);
}

/* ---- linear algebra, convolution, pooling ------------------------------------------ */

static nb_status op_matmul(bld *b) {
  ox_val *x, *y;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &y)) || (st = need_float(b, x))) return st;
  return out_t(b, 0, nb_matmul(b->g, T(b, x), T(b, y)), K_FLOAT);
}

static nb_status op_gemm(bld *b) {
  ox_val *x, *y;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &y)) || (st = need_float(b, x))) return st;
  nb_graph *g = b->g;
  nb_tensor *A = T(b, x), *B = T(b, y);
  if (attr_i(b->nd, "transA", 0)) A = nb_transpose(g, A, 0, 1);
  if (attr_i(b->nd, "transB", 0)) B = nb_transpose(g, B, 0, 1);
  float alpha = attr_f(b->nd, "alpha", 1.0f), beta = attr_f(b->nd, "beta", 1.0f);
  nb_tensor *r = nb_matmul(g, A, B);
  if (alpha != 1.0f) r = nb_mul(g, r, nb_scalar(g, alpha));
  ox_val *c = in(b, 2);
  if (c) {
    nb_tensor *tc = T(b, c);
    if (beta != 1.0f) tc = nb_mul(g, tc, nb_scalar(g, beta));
    r = nb_add(g, r, tc);
  }
  return out_t(b, 0, r, K_FLOAT);
}

/* Padding of the spatial axes: explicit pads or auto_pad, as begin/end. */
static nb_status spatial_pads(bld *b, int nsp, const int64_t *in, const int64_t *k,
                              const int64_t *s, const int64_t *d, int64_t *beg, int64_t *end) {
  const char *ap = attr_s(b->nd, "auto_pad", "NOTSET");
  const ox_attr *pa = attr(b->nd, "pads");
  for (int i = 0; i < nsp; i++) beg[i] = end[i] = 0;
  if (!strcmp(ap, "NOTSET") || !ap[0]) {
    if (pa) {
      if (pa->nints != 2 * nsp) return bfail(b, NB_ERR_FORMAT, "pads has %d values", pa->nints);
      for (int i = 0; i < nsp; i++) {
        beg[i] = pa->ints[i];
        end[i] = pa->ints[nsp + i];
      }
    }
  } else if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
    for (int i = 0; i < nsp; i++) {
      int64_t out = (in[i] + s[i] - 1) / s[i];
      int64_t total = (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in[i];
      if (total < 0) total = 0;
      int64_t small = total / 2;
      beg[i] = !strcmp(ap, "SAME_UPPER") ? small : total - small;
      end[i] = total - beg[i];
    }
  } else if (strcmp(ap, "VALID")) {
    return bfail(b, NB_ERR_UNSUPPORTED, "auto_pad='%s'", ap);
  }
  for (int i = 0; i < nsp; i++)
    if (beg[i] < 0 || end[i] < 0) return bfail(b, NB_ERR_UNSUPPORTED, "negative pads");
  return NB_OK;
}

/* Reads kernel/stride/dilation attributes for nsp spatial axes. */
static nb_status spatial_attr(bld *b, const char *name, int nsp, int64_t def, int64_t *out) {
  const ox_attr *a = attr(b->nd, name);
  for (int i = 0; i < nsp; i++) out[i] = def;
  if (!a) return NB_OK;
  if (a->nints != nsp)
    return bfail(b, NB_ERR_UNSUPPORTED, "%s has %d values for %d spatial axes", name, a->nints,
                 nsp);
  for (int i = 0; i < nsp; i++) {
    if (a->ints[i] < 1) return bfail(b, NB_ERR_FORMAT, "%s must be >= 1", name);
    out[i] = a->ints[i];
  }
  return NB_OK;
}

/* 1-d convolutions and pools run as 2-d ones over a height of 1. */
static nb_tensor *lift_1d(bld *b, nb_tensor *x) {
  const int64_t *s = nb_tensor_shape(x);
  int64_t sh[4] = {s[0], s[1], 1, s[2]};
  return nb_reshape(b->g, x, 4, sh);
}

static nb_tensor *drop_1d(bld *b, nb_tensor *y) {
  if (!y) return NULL;
  const int64_t *s = nb_tensor_shape(y);
  int64_t sh[3] = {s[0], s[1], s[3]};
  return nb_reshape(b->g, y, 3, sh);
}

static nb_status op_conv(bld *b) {
  ox_val *x, *w;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &w)) || (st = need_float(b, x))) return st;
  int nd = vndim(x);
  if ((nd != 3 && nd != 4) || vndim(w) != nd)
    return bfail(b, NB_ERR_UNSUPPORTED, "only 1-d and 2-d convolutions (input rank %d)", nd);
  int nsp = nd - 2;
  int64_t xs[NB_MAX_DIMS], ws[NB_MAX_DIMS], k[2], s[2], d[2], beg[2], end[2];
  vshape(x, xs);
  vshape(w, ws);
  if ((st = spatial_attr(b, "strides", nsp, 1, s)) ||
      (st = spatial_attr(b, "dilations", nsp, 1, d)))
    return st;
  for (int i = 0; i < nsp; i++) k[i] = ws[2 + i];
  if ((st = spatial_pads(b, nsp, xs + 2, k, s, d, beg, end))) return st;
  nb_graph *g = b->g;
  nb_tensor *tx = T(b, x), *tw = T(b, w);
  if (nsp == 1) {
    tx = lift_1d(b, tx);
    tw = lift_1d(b, tw);
  }
  nb_conv2d_params p = nb_conv2d_defaults();
  p.groups = (int)attr_i(b->nd, "group", 1);
  int asym = 0;
  for (int i = 0; i < nsp; i++) asym |= beg[i] != end[i];
  if (asym) { /* nabla pads symmetrically: pad the input first */
    int64_t pads[8] = {0};
    for (int i = 0; i < nsp; i++) {
      pads[2 * (4 - nsp + i)] = beg[i];
      pads[2 * (4 - nsp + i) + 1] = end[i];
    }
    tx = nb_pad(g, tx, pads, 0.0f);
  }
  for (int i = 0; i < nsp; i++) {
    int j = 2 - nsp + i;
    p.stride[j] = (int)s[i];
    p.dilation[j] = (int)d[i];
    p.padding[j] = asym ? 0 : (int)beg[i];
  }
  nb_tensor *y = nb_conv2d(g, tx, tw, &p);
  ox_val *bias = in(b, 2);
  if (bias && y) {
    int64_t bs[4] = {1, nb_tensor_shape(y)[1], 1, 1};
    y = nb_add(g, y, nb_reshape(g, T(b, bias), 4, bs));
  }
  if (nsp == 1) y = drop_1d(b, y);
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_pool(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int is_max = !strcmp(b->nd->op_type, "MaxPool");
  if (b->nd->nout > 1 && b->nd->out[1][0])
    return bfail(b, NB_ERR_UNSUPPORTED, "the Indices output is not supported");
  int nd = vndim(x);
  if (nd != 3 && nd != 4) return bfail(b, NB_ERR_UNSUPPORTED, "only 1-d and 2-d pooling");
  int nsp = nd - 2;
  int64_t xs[NB_MAX_DIMS], k[2], s[2], d[2], beg[2], end[2];
  vshape(x, xs);
  const ox_attr *ka = attr(b->nd, "kernel_shape");
  if (!ka || ka->nints != nsp) return bfail(b, NB_ERR_FORMAT, "kernel_shape missing or wrong size");
  for (int i = 0; i < nsp; i++) k[i] = ka->ints[i];
  if ((st = spatial_attr(b, "strides", nsp, 1, s)) ||
      (st = spatial_attr(b, "dilations", nsp, 1, d)))
    return st;
  for (int i = 0; i < nsp; i++)
    if (d[i] != 1) return bfail(b, NB_ERR_UNSUPPORTED, "dilated pooling");
  if ((st = spatial_pads(b, nsp, xs + 2, k, s, d, beg, end))) return st;
  int ceil_mode = (int)attr_i(b->nd, "ceil_mode", 0);
  int cip = (int)attr_i(b->nd, "count_include_pad", 0);
  /* LpPool: (sum |x|^p)^(1/p), the sum being an average over the whole
   * window (padding counted as zeros) times the window size */
  int lp = !strcmp(b->nd->op_type, "LpPool");
  int64_t pw = attr_i(b->nd, "p", 2);
  if (lp) {
    if (pw < 1 || pw > 8) return bfail(b, NB_ERR_UNSUPPORTED, "p=%lld", (long long)pw);
    cip = 1;
  }
  nb_graph *g = b->g;
  nb_tensor *tx = T(b, x);
  if (nsp == 1) tx = lift_1d(b, tx);
  if (lp) tx = nb_pow(g, nb_abs(g, tx), nb_scalar(g, (float)pw));
  int prepad = 0;
  for (int i = 0; i < nsp; i++)
    if (beg[i] != end[i] || 2 * beg[i] > k[i]) prepad = 1;
  /* zeros counted in the average, or -inf never chosen by the max, make
   * padding ahead of the pool exact for any pads */
  if (is_max || cip)
    for (int i = 0; i < nsp; i++) prepad |= beg[i] || end[i];
  if (prepad && !is_max && !cip)
    return bfail(b, NB_ERR_UNSUPPORTED, "asymmetric pads with count_include_pad=0");
  if (prepad && ceil_mode)
    return bfail(b, NB_ERR_UNSUPPORTED, "ceil_mode with padding that nabla pads ahead of the pool");
  nb_pool2d_params p = nb_pool2d_defaults(1, 1);
  if (prepad) {
    int64_t pads[8] = {0};
    for (int i = 0; i < nsp; i++) {
      pads[2 * (4 - nsp + i)] = beg[i];
      pads[2 * (4 - nsp + i) + 1] = end[i];
    }
    tx = nb_pad(g, tx, pads, is_max ? -INFINITY : 0.0f);
  }
  for (int i = 0; i < nsp; i++) {
    int j = 2 - nsp + i;
    p.kernel[j] = (int)k[i];
    p.stride[j] = (int)s[i];
    p.padding[j] = prepad ? 0 : (int)beg[i];
  }
  p.ceil_mode = ceil_mode;
  p.count_include_pad = cip;
  nb_tensor *y = is_max ? nb_max_pool2d(g, tx, &p) : nb_avg_pool2d(g, tx, &p);
  if (lp)
    y = nb_pow(g, nb_mul(g, y, nb_scalar(g, (float)(k[0] * (nsp == 2 ? k[1] : 1)))),
               nb_scalar(g, 1.0f / (float)pw));
  if (nsp == 1) y = drop_1d(b, y);
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_global_pool(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int nd = vndim(x), axes[NB_MAX_DIMS];
  if (nd < 3) return bfail(b, NB_ERR_SHAPE, "input must have spatial axes");
  for (int i = 2; i < nd; i++) axes[i - 2] = i;
  nb_tensor *t = T(b, x);
  nb_tensor *y = !strcmp(b->nd->op_type, "GlobalMaxPool") ? nb_max(b->g, t, nd - 2, axes, 1)
                                                          : nb_mean(b->g, t, nd - 2, axes, 1);
  return out_t(b, 0, y, K_FLOAT);
}

/* ---- normalisation and softmax ------------------------------------------------------ */

/* [C] -> [C, 1, ...] so it broadcasts over axis 1 of a rank-nd tensor. */
static nb_tensor *per_channel(bld *b, ox_val *v, int nd) {
  nb_tensor *t = T(b, v);
  if (!t) return NULL;
  int64_t sh[NB_MAX_DIMS];
  sh[0] = nb_tensor_numel(t);
  for (int i = 1; i < nd - 1; i++) sh[i] = 1;
  return nb_reshape(b->g, t, nd - 1 > 0 ? nd - 1 : 1, sh);
}

static nb_status op_batchnorm(bld *b) {
  ox_val *x, *sc, *bi, *mu, *var;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_in(b, 2, &bi)) ||
      (st = need_in(b, 3, &mu)) || (st = need_in(b, 4, &var)) || (st = need_float(b, x)))
    return st;
  if (attr_i(b->nd, "training_mode", 0) || b->nd->nout > 1)
    return bfail(b, NB_ERR_UNSUPPORTED, "training mode (batch statistics outputs)");
  int nd = vndim(x);
  if (nd < 2) return bfail(b, NB_ERR_SHAPE, "input must be [N, C, ...]");
  nb_graph *g = b->g;
  float eps = attr_f(b->nd, "epsilon", 1e-5f);
  nb_tensor *inv = nb_rsqrt(g, nb_add(g, per_channel(b, var, nd), nb_scalar(g, eps)));
  nb_tensor *y =
      nb_mul(g, nb_sub(g, T(b, x), per_channel(b, mu, nd)), nb_mul(g, inv, per_channel(b, sc, nd)));
  return out_t(b, 0, nb_add(g, y, per_channel(b, bi, nd)), K_FLOAT);
}

/* (x - mean) / sqrt(var + eps) over `naxes` axes, returning mean and
 * 1/sqrt(var + eps) too (LayerNormalization's optional outputs). */
static nb_tensor *normalize(bld *b, nb_tensor *x, int naxes, const int *axes, float eps,
                            nb_tensor **mean_out, nb_tensor **inv_out) {
  nb_graph *g = b->g;
  nb_tensor *mean = nb_mean(g, x, naxes, axes, 1);
  nb_tensor *d = nb_sub(g, x, mean);
  nb_tensor *var = nb_mean(g, nb_mul(g, d, d), naxes, axes, 1);
  nb_tensor *inv = nb_rsqrt(g, nb_add(g, var, nb_scalar(g, eps)));
  if (mean_out) *mean_out = mean;
  if (inv_out) *inv_out = inv;
  return nb_mul(g, d, inv);
}

static nb_status op_layernorm(bld *b) {
  ox_val *x, *sc;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_float(b, x))) return st;
  int nd = vndim(x), axis, axes[NB_MAX_DIMS];
  if ((st = check_axis(b, attr_i(b->nd, "axis", -1), nd, &axis))) return st;
  for (int i = axis; i < nd; i++) axes[i - axis] = i;
  nb_tensor *mean, *inv;
  nb_tensor *y =
      normalize(b, T(b, x), nd - axis, axes, attr_f(b->nd, "epsilon", 1e-5f), &mean, &inv);
  y = nb_mul(b->g, y, T(b, sc));
  ox_val *bi = in(b, 2);
  if (bi) y = nb_add(b->g, y, T(b, bi));
  if ((st = out_t(b, 0, y, K_FLOAT)) || (st = out_t(b, 1, mean, K_FLOAT))) return st;
  return out_t(b, 2, inv, K_FLOAT);
}

static nb_status op_instancenorm(bld *b) {
  ox_val *x, *sc, *bi;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_in(b, 2, &bi)) ||
      (st = need_float(b, x)))
    return st;
  int nd = vndim(x), axes[NB_MAX_DIMS];
  if (nd < 3) return bfail(b, NB_ERR_SHAPE, "input must be [N, C, spatial...]");
  for (int i = 2; i < nd; i++) axes[i - 2] = i;
  nb_tensor *y = normalize(b, T(b, x), nd - 2, axes, attr_f(b->nd, "epsilon", 1e-5f), NULL, NULL);
  y = nb_add(b->g, nb_mul(b->g, y, per_channel(b, sc, nd)), per_channel(b, bi, nd));
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_softmax(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int logsm = !strcmp(b->nd->op_type, "LogSoftmax");
  int nd = vndim(x), axis;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *y;
  if (b->opset < 13) {
    /* before opset 13 the input is coerced to 2-d [prod(:axis), prod(axis:)] */
    if ((st = check_axis(b, attr_i(b->nd, "axis", 1), nd, &axis))) return st;
    int64_t xs[NB_MAX_DIMS], sh[2] = {1, 1};
    vshape(x, xs);
    for (int i = 0; i < nd; i++) sh[i < axis ? 0 : 1] *= xs[i];
    nb_tensor *t2 = nb_reshape(g, t, 2, sh);
    y = logsm ? nb_log_softmax(g, t2, 1) : nb_softmax(g, t2, 1);
    y = nb_reshape(g, y, nd, xs);
  } else {
    if ((st = check_axis(b, attr_i(b->nd, "axis", -1), nd, &axis))) return st;
    y = logsm ? nb_log_softmax(g, t, axis) : nb_softmax(g, t, axis);
  }
  return out_t(b, 0, y, K_FLOAT);
}

/* ---- reductions ------------------------------------------------------------------ */

static nb_status op_reduce(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  const char *op = b->nd->op_type;
  int nd = vndim(x), naxes = 0, axes[NB_MAX_DIMS];
  int64_t ax[NB_MAX_DIMS];
  int n = 0;
  /* axes moved from an attribute to an input: ReduceSum at 13, the rest at 18 */
  int axes_input = !strcmp(op, "ReduceSum") ? b->opset >= 13 : b->opset >= 18;
  if (axes_input) {
    ox_val *a = in(b, 1);
    if (a && (st = const_ints(b, a, "axes", ax, NB_MAX_DIMS, &n))) return st;
  } else {
    const ox_attr *a = attr(b->nd, "axes");
    if (a) {
      if (a->nints > NB_MAX_DIMS) return bfail(b, NB_ERR_FORMAT, "too many axes");
      n = a->nints;
      for (int i = 0; i < n; i++) ax[i] = a->ints[i];
    }
  }
  for (int i = 0; i < n; i++)
    if ((st = check_axis(b, ax[i], nd, &axes[naxes++]))) return st;
  int keep = (int)attr_i(b->nd, "keepdims", 1);
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *y;
  if (!naxes && attr_i(b->nd, "noop_with_empty_axes", 0))
    return out_t(b, 0, nb_mul(g, t, nb_scalar(g, 1.0f)), K_FLOAT);
  if (!strcmp(op, "ReduceMean"))
    y = nb_mean(g, t, naxes, axes, keep);
  else if (!strcmp(op, "ReduceSum"))
    y = nb_sum(g, t, naxes, axes, keep);
  else if (!strcmp(op, "ReduceMax"))
    y = nb_max(g, t, naxes, axes, keep);
  else if (!strcmp(op, "ReduceMin"))
    y = nb_min(g, t, naxes, axes, keep);
  else if (!strcmp(op, "ReduceSumSquare"))
    y = nb_sum(g, nb_mul(g, t, t), naxes, axes, keep);
  else if (!strcmp(op, "ReduceL1"))
    y = nb_sum(g, nb_abs(g, t), naxes, axes, keep);
  else if (!strcmp(op, "ReduceL2"))
    y = nb_sqrt(g, nb_sum(g, nb_mul(g, t, t), naxes, axes, keep));
  else if (!strcmp(op, "ReduceLogSum"))
    y = nb_log(g, nb_sum(g, t, naxes, axes, keep));
  else
    y = nb_logsumexp(g, t, naxes, axes, keep);
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_argmax(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  if (attr_i(b->nd, "select_last_index", 0))
    return bfail(b, NB_ERR_UNSUPPORTED, "select_last_index=1");
  int axis;
  if ((st = check_axis(b, attr_i(b->nd, "axis", 0), vndim(x), &axis))) return st;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  /* the first minimum is the first maximum of -x */
  if (!strcmp(b->nd->op_type, "ArgMin")) t = nb_neg(g, t);
  nb_tensor *y = nb_argmax(g, t, axis, (int)attr_i(b->nd, "keepdims", 1));
  return out_t(b, 0, nb_cast(g, y, NB_F32), K_INT);
}

/* ---- shapes and data movement -------------------------------------------------------- */

static nb_status op_identity(bld *b) {
  ox_val *x;
  nb_status st = need_in(b, 0, &x);
  if (st) return st;
  ox_val copy = *x;
  if (b->nd->nout < 1) return NB_OK;
  copy.name = b->nd->out[0];
  if (b->nv >= b->cap) return bfail(b, NB_ERR_INTERNAL, "value table full");
  b->v[b->nv++] = copy;
  return NB_OK;
}

static nb_status op_dropout(bld *b) {
  ox_val *x;
  nb_status st = need_in(b, 0, &x);
  if (st) return st;
  ox_val *tm = b->opset >= 12 ? in(b, 2) : NULL;
  int64_t train = 0; /* before opset 12 there is no training_mode: inference */
  if (tm) {
    int64_t v[1];
    int n;
    if ((st = const_ints(b, tm, "training_mode", v, 1, &n))) return st;
    train = n && v[0];
  }
  ox_val *ratio = b->opset >= 12 ? in(b, 1) : NULL;
  float r;
  if (train && ratio && ratio->c && !const_float(b, ratio, "ratio", &r) && r == 0.0f)
    train = 0; /* nothing is dropped: training mode changes nothing */
  if (train) return bfail(b, NB_ERR_UNSUPPORTED, "training_mode=1 (random masks)");
  if ((st = op_identity(b))) return st;
  if (b->nd->nout > 1 && b->nd->out[1][0]) {
    int64_t xs[NB_MAX_DIMS];
    vshape(x, xs);
    nb_tensor *ones = nb_broadcast_to(b->g, nb_scalar(b->g, 1.0f), vndim(x), xs);
    return out_t(b, 1, nb_contiguous(b->g, ones), K_BOOL);
  }
  return NB_OK;
}

static nb_status op_constant(bld *b) {
  const ox_node *nd = b->nd;
  if (nd->nattr < 1) return bfail(b, NB_ERR_FORMAT, "Constant without a value");
  const ox_attr *a = &nd->attr[0];
  nb_onnx_tensor *t = NULL;
  if (!strcmp(a->name, "value")) {
    if (!a->t) return bfail(b, NB_ERR_FORMAT, "value is not a tensor");
    return out_c(b, 0, a->t, kind_of_type(a->t->elem_type));
  }
  int64_t one = 1;
  if (!strcmp(a->name, "value_float") || !strcmp(a->name, "value_int")) {
    int fl = a->name[6] == 'f';
    t = new_const(b, fl ? NB_ONNX_FLOAT : NB_ONNX_INT64, 0, NULL);
    if (!t) return oom();
    if (fl)
      t->f32[0] = a->f;
    else
      t->i64[0] = a->i;
  } else if (!strcmp(a->name, "value_floats") || !strcmp(a->name, "value_ints")) {
    int fl = a->name[6] == 'f';
    one = fl ? a->nfloats : a->nints;
    t = new_const(b, fl ? NB_ONNX_FLOAT : NB_ONNX_INT64, 1, &one);
    if (!t) return oom();
    for (int64_t i = 0; i < one; i++)
      if (fl)
        t->f32[i] = a->floats[i];
      else
        t->i64[i] = a->ints[i];
  } else {
    return bfail(b, NB_ERR_UNSUPPORTED, "Constant with attribute '%s'", a->name);
  }
  return out_c(b, 0, t, kind_of_type(t->elem_type));
}

static nb_status op_shape(bld *b) {
  ox_val *x;
  nb_status st = need_in(b, 0, &x);
  if (st) return st;
  int nd = vndim(x);
  int64_t xs[NB_MAX_DIMS];
  vshape(x, xs);
  if (!strcmp(b->nd->op_type, "Size")) {
    nb_onnx_tensor *t = new_const(b, NB_ONNX_INT64, 0, NULL);
    if (!t) return oom();
    t->i64[0] = nb_shape_numel(nd, xs);
    return out_c(b, 0, t, K_INT);
  }
  int64_t start = attr_i(b->nd, "start", 0), end = attr_i(b->nd, "end", nd);
  if (start < 0) start += nd;
  if (end < 0) end += nd;
  start = start < 0 ? 0 : start > nd ? nd : start;
  end = end < 0 ? 0 : end > nd ? nd : end;
  int64_t n = end > start ? end - start : 0;
  nb_onnx_tensor *t = new_const(b, NB_ONNX_INT64, 1, &n);
  if (!t) return oom();
  for (int64_t i = 0; i < n; i++) t->i64[i] = xs[start + i];
  return out_c(b, 0, t, K_INT);
}

static nb_status op_cast(bld *b) {
  ox_val *x, *like;
  nb_status st = need_in(b, 0, &x);
  if (st) return st;
  int to = (int)attr_i(b->nd, "to", 0);
  if (!strcmp(b->nd->op_type, "CastLike")) {
    if ((st = need_in(b, 1, &like))) return st;
    to = like->et;
  }
  int k = kind_of_type(to);
  if (to == NB_ONNX_STRING || !strcmp(nb_onnx_type_name(to), "unknown"))
    return bfail(b, NB_ERR_UNSUPPORTED, "cast to %s", nb_onnx_type_name(to));
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  if (k == K_BOOL && x->kind != K_BOOL)
    t = nb_ne(g, t, nb_scalar(g, 0.0f));
  else if (k == K_INT && x->kind == K_FLOAT)
    t = nb_cast(g, nb_cast(g, t, NB_I64), NB_F32); /* truncates toward zero */
  else if (k == K_INT && to != NB_ONNX_INT64 && to != NB_ONNX_INT32 && x->kind == K_INT)
    return bfail(b, NB_ERR_UNSUPPORTED, "narrowing integer cast to %s", nb_onnx_type_name(to));
  else if (to == NB_ONNX_FLOAT16 || to == NB_ONNX_BFLOAT16) /* round like the target type */
    t = nb_cast(g, nb_cast(g, t, to == NB_ONNX_FLOAT16 ? NB_F16 : NB_BF16), NB_F32);
  else
    t = nb_mul(g, t, nb_scalar(g, 1.0f)); /* same values: a node of its own */
  if (b->nd->nout < 1 || !b->nd->out[0][0] || !t) return NB_OK;
  return add_val(b, b->nd->out[0], t, NULL, k, to);
}

static nb_status op_reshape(bld *b) {
  ox_val *x, *s;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int64_t sh[NB_MAX_DIMS], xs[NB_MAX_DIMS];
  int n;
  if (b->opset < 5) {
    const ox_attr *a = attr(b->nd, "shape");
    if (!a || a->nints > NB_MAX_DIMS) return bfail(b, NB_ERR_FORMAT, "bad shape attribute");
    n = a->nints;
    for (int i = 0; i < n; i++) sh[i] = a->ints[i];
  } else if ((st = need_in(b, 1, &s)) || (st = const_ints(b, s, "shape", sh, NB_MAX_DIMS, &n))) {
    return st;
  }
  vshape(x, xs);
  int allowzero = (int)attr_i(b->nd, "allowzero", 0);
  for (int i = 0; i < n; i++)
    if (sh[i] == 0 && !allowzero) {
      if (i >= vndim(x)) return bfail(b, NB_ERR_SHAPE, "shape[%d] = 0 copies a missing axis", i);
      sh[i] = xs[i];
    }
  return out_t(b, 0, nb_reshape(b->g, T(b, x), n, sh), x->kind);
}

static nb_status op_flatten(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x);
  int64_t axis = attr_i(b->nd, "axis", 1), xs[NB_MAX_DIMS], sh[2] = {1, 1};
  if (axis < 0) axis += nd;
  if (axis < 0 || axis > nd) return bfail(b, NB_ERR_SHAPE, "axis out of range");
  vshape(x, xs);
  for (int i = 0; i < nd; i++) sh[i < axis ? 0 : 1] *= xs[i];
  return out_t(b, 0, nb_reshape(b->g, T(b, x), 2, sh), x->kind);
}

static nb_status op_transpose(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), perm[NB_MAX_DIMS];
  const ox_attr *a = attr(b->nd, "perm");
  if (a && a->nints != nd) return bfail(b, NB_ERR_SHAPE, "perm has %d entries", a->nints);
  for (int i = 0; i < nd; i++) perm[i] = a ? (int)a->ints[i] : nd - 1 - i;
  return out_t(b, 0, nb_permute(b->g, T(b, x), perm), x->kind);
}

/* axes of Squeeze/Unsqueeze: attribute before opset 13, input from 13 */
static nb_status axes_arg(bld *b, int64_t *ax, int *n) {
  *n = 0;
  if (b->opset >= 13) {
    ox_val *a = in(b, 1);
    return a ? const_ints(b, a, "axes", ax, NB_MAX_DIMS, n) : NB_OK;
  }
  const ox_attr *a = attr(b->nd, "axes");
  if (!a) return NB_OK;
  if (a->nints > NB_MAX_DIMS) return bfail(b, NB_ERR_FORMAT, "too many axes");
  for (int i = 0; i < a->nints; i++) ax[i] = a->ints[i];
  *n = a->nints;
  return NB_OK;
}

static nb_status op_squeeze(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), n, drop[NB_MAX_DIMS] = {0};
  int64_t ax[NB_MAX_DIMS], xs[NB_MAX_DIMS], sh[NB_MAX_DIMS];
  vshape(x, xs);
  if ((st = axes_arg(b, ax, &n))) return st;
  for (int i = 0; i < n; i++) {
    int a;
    if ((st = check_axis(b, ax[i], nd, &a))) return st;
    if (xs[a] != 1) return bfail(b, NB_ERR_SHAPE, "axis %d has size %lld", a, (long long)xs[a]);
    drop[a] = 1;
  }
  if (!n)
    for (int i = 0; i < nd; i++) drop[i] = xs[i] == 1;
  int m = 0;
  for (int i = 0; i < nd; i++)
    if (!drop[i]) sh[m++] = xs[i];
  return out_t(b, 0, nb_reshape(b->g, T(b, x), m, sh), x->kind);
}

static nb_status op_unsqueeze(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), n, ins[NB_MAX_DIMS] = {0};
  int64_t ax[NB_MAX_DIMS], xs[NB_MAX_DIMS], sh[NB_MAX_DIMS];
  vshape(x, xs);
  if ((st = axes_arg(b, ax, &n))) return st;
  int od = nd + n;
  if (od > NB_MAX_DIMS) return bfail(b, NB_ERR_UNSUPPORTED, "result has more than 8 dimensions");
  for (int i = 0; i < n; i++) {
    int a;
    if ((st = check_axis(b, ax[i], od, &a))) return st;
    if (ins[a]) return bfail(b, NB_ERR_FORMAT, "axis %d repeated", a);
    ins[a] = 1;
  }
  for (int i = 0, j = 0; i < od; i++) sh[i] = ins[i] ? 1 : xs[j++];
  return out_t(b, 0, nb_reshape(b->g, T(b, x), od, sh), x->kind);
}

static nb_status op_concat(bld *b) {
  nb_tensor *xs[64];
  int n = 0, nd = -1, kind = K_FLOAT, axis;
  nb_status st;
  for (int k = 0; k < b->nd->nin; k++) {
    ox_val *x = in(b, k);
    if (!x) continue;
    if (n >= 64) return bfail(b, NB_ERR_UNSUPPORTED, "more than 64 inputs");
    int64_t s[NB_MAX_DIMS];
    vshape(x, s);
    /* ONNX allows empty inputs; nabla has no zero-size tensors, and they add nothing */
    if (nb_shape_numel(vndim(x), s) == 0) continue;
    xs[n++] = T(b, x);
    nd = vndim(x);
    kind = x->kind;
  }
  if (!n) return bfail(b, NB_ERR_UNSUPPORTED, "all inputs are empty");
  if ((st = check_axis(b, attr_i(b->nd, "axis", 0), nd, &axis))) return st;
  nb_tensor *y = n == 1 ? nb_mul(b->g, xs[0], nb_scalar(b->g, 1.0f)) : nb_concat(b->g, n, xs, axis);
  return out_t(b, 0, y, kind);
}

/* Selects idx[0..n) along `axis` (any order, any step). */
static nb_tensor *take(bld *b, nb_tensor *t, int axis, const int64_t *idx, int64_t n) {
  nb_tensor *it = nb_constant(b->g, NB_I64, 1, &n, idx);
  return nb_index_select(b->g, t, axis, it);
}

static nb_status op_slice(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), n = 0, na = 0, nst = 0, ne = 0;
  int64_t xs[NB_MAX_DIMS], starts[NB_MAX_DIMS], ends[NB_MAX_DIMS], axes[NB_MAX_DIMS],
      steps[NB_MAX_DIMS];
  vshape(x, xs);
  if (b->opset < 10) {
    const ox_attr *s = attr(b->nd, "starts"), *e = attr(b->nd, "ends"), *a = attr(b->nd, "axes");
    if (!s || !e || s->nints != e->nints || s->nints > NB_MAX_DIMS || (a && a->nints != s->nints))
      return bfail(b, NB_ERR_FORMAT, "bad starts/ends/axes attributes");
    n = s->nints;
    for (int i = 0; i < n; i++) {
      starts[i] = s->ints[i];
      ends[i] = e->ints[i];
      axes[i] = a ? a->ints[i] : i;
      steps[i] = 1;
    }
  } else {
    ox_val *s, *e, *a = in(b, 3), *p = in(b, 4);
    if ((st = need_in(b, 1, &s)) || (st = need_in(b, 2, &e)) ||
        (st = const_ints(b, s, "starts", starts, NB_MAX_DIMS, &nst)) ||
        (st = const_ints(b, e, "ends", ends, NB_MAX_DIMS, &ne)))
      return st;
    if (nst != ne) return bfail(b, NB_ERR_FORMAT, "starts and ends differ in length");
    n = nst;
    for (int i = 0; i < n; i++) {
      axes[i] = i;
      steps[i] = 1;
    }
    if (a && ((st = const_ints(b, a, "axes", axes, NB_MAX_DIMS, &na)) || na != n))
      return st ? st : bfail(b, NB_ERR_FORMAT, "axes length differs");
    if (p && ((st = const_ints(b, p, "steps", steps, NB_MAX_DIMS, &na)) || na != n))
      return st ? st : bfail(b, NB_ERR_FORMAT, "steps length differs");
  }
  nb_tensor *t = T(b, x);
  for (int i = 0; i < n; i++) {
    int ax;
    if ((st = check_axis(b, axes[i], nd, &ax))) return st;
    int64_t dim = xs[ax], s = starts[i], e = ends[i], step = steps[i];
    if (step == 0) return bfail(b, NB_ERR_FORMAT, "step 0");
    if (s < 0) s += dim;
    if (e < 0) e += dim;
    if (step > 0) {
      s = s < 0 ? 0 : s > dim ? dim : s;
      e = e < 0 ? 0 : e > dim ? dim : e;
    } else {
      s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
      e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
    }
    int64_t cnt = step > 0 ? (e > s ? (e - s + step - 1) / step : 0)
                           : (s > e ? (s - e + (-step) - 1) / (-step) : 0);
    if (cnt == 0)
      return bfail(b, NB_ERR_UNSUPPORTED, "empty result (nabla has no zero-size tensors)");
    if (step > 0) {
      t = nb_slice(b->g, t, ax, s, e, step);
    } else {
      int64_t *idx = malloc((size_t)cnt * sizeof(int64_t));
      if (!idx) return oom();
      for (int64_t j = 0; j < cnt; j++) idx[j] = s + j * step;
      t = take(b, t, ax, idx, cnt);
      free(idx);
    }
    xs[ax] = cnt;
  }
  return out_t(b, 0, nb_contiguous(b->g, t), x->kind);
}

static nb_status op_gather(bld *b) {
  ox_val *x, *iv;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &iv))) return st;
  int nd = vndim(x), axis;
  if ((st = check_axis(b, attr_i(b->nd, "axis", 0), nd, &axis))) return st;
  if (!iv->c)
    return bfail(b, NB_ERR_INVALID_ARG, "indices '%s' must be known at build time", iv->name);
  const nb_onnx_tensor *ic = iv->c;
  int64_t xs[NB_MAX_DIMS], sh[NB_MAX_DIMS];
  vshape(x, xs);
  if (nd - 1 + ic->ndim > NB_MAX_DIMS) return bfail(b, NB_ERR_UNSUPPORTED, "result rank > 8");
  if (ic->numel == 0) return bfail(b, NB_ERR_UNSUPPORTED, "empty indices");
  int64_t *idx = malloc((size_t)ic->numel * sizeof(int64_t));
  if (!idx) return oom();
  for (int64_t i = 0; i < ic->numel; i++) {
    int64_t v = ic->i64 ? ic->i64[i] : (int64_t)ic->f32[i];
    if (v < 0) v += xs[axis];
    if (v < 0 || v >= xs[axis]) {
      free(idx);
      return bfail(b, NB_ERR_SHAPE, "index %lld out of range for axis size %lld",
                   (long long)(ic->i64 ? ic->i64[i] : 0), (long long)xs[axis]);
    }
    idx[i] = v;
  }
  nb_tensor *y = take(b, T(b, x), axis, idx, ic->numel);
  free(idx);
  int m = 0;
  for (int i = 0; i < axis; i++) sh[m++] = xs[i];
  for (int i = 0; i < ic->ndim; i++) sh[m++] = ic->dims[i];
  for (int i = axis + 1; i < nd; i++) sh[m++] = xs[i];
  return out_t(b, 0, nb_reshape(b->g, y, m, sh), x->kind);
}

static nb_status op_expand(bld *b) {
  ox_val *x, *s;
  nb_status st;
  int64_t sh[NB_MAX_DIMS], xs[NB_MAX_DIMS], out[NB_MAX_DIMS];
  int n;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &s)) ||
      (st = const_ints(b, s, "shape", sh, NB_MAX_DIMS, &n)))
    return st;
  int nd = vndim(x), od = n > nd ? n : nd;
  vshape(x, xs);
  /* bidirectional broadcasting: a 1 in the requested shape keeps the input's size */
  for (int i = 0; i < od; i++) {
    int64_t a = i - (od - nd) >= 0 ? xs[i - (od - nd)] : 1;
    int64_t c = i - (od - n) >= 0 ? sh[i - (od - n)] : 1;
    if (a != c && a != 1 && c != 1)
      return bfail(b, NB_ERR_SHAPE, "cannot expand size %lld to %lld", (long long)a, (long long)c);
    out[i] = a == 1 ? c : a;
  }
  nb_tensor *y = nb_contiguous(b->g, nb_broadcast_to(b->g, T(b, x), od, out));
  return out_t(b, 0, y, x->kind);
}

static nb_status op_tile(bld *b) {
  ox_val *x, *r;
  nb_status st;
  int64_t rep[NB_MAX_DIMS];
  int n;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &r)) ||
      (st = const_ints(b, r, "repeats", rep, NB_MAX_DIMS, &n)))
    return st;
  if (n != vndim(x)) return bfail(b, NB_ERR_SHAPE, "repeats has %d entries", n);
  nb_tensor *t = T(b, x);
  for (int i = 0; i < n; i++) {
    if (rep[i] < 1 || rep[i] > 64)
      return bfail(b, NB_ERR_UNSUPPORTED, "repeat %lld", (long long)rep[i]);
    if (rep[i] == 1) continue;
    nb_tensor *xs[64];
    for (int j = 0; j < rep[i]; j++) xs[j] = t;
    t = nb_concat(b->g, (int)rep[i], xs, i);
  }
  return out_t(b, 0, nb_mul(b->g, t, nb_scalar(b->g, 1.0f)), x->kind);
}

static nb_status op_split(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), axis, nout = b->nd->nout, n = 0;
  if ((st = check_axis(b, attr_i(b->nd, "axis", 0), nd, &axis))) return st;
  int64_t xs[NB_MAX_DIMS], sizes[64];
  vshape(x, xs);
  if (nout > 64) return bfail(b, NB_ERR_UNSUPPORTED, "more than 64 outputs");
  ox_val *sv = b->opset >= 13 ? in(b, 1) : NULL;
  const ox_attr *sa = b->opset < 13 ? attr(b->nd, "split") : NULL;
  if (sv) {
    if ((st = const_ints(b, sv, "split", sizes, 64, &n))) return st;
  } else if (sa) {
    if (sa->nints > 64) return bfail(b, NB_ERR_UNSUPPORTED, "more than 64 splits");
    n = sa->nints;
    for (int i = 0; i < n; i++) sizes[i] = sa->ints[i];
  } else {
    /* equal parts; the last one smaller when the size does not divide */
    int64_t chunk = (xs[axis] + nout - 1) / nout;
    n = nout;
    for (int i = 0; i < n; i++) {
      int64_t left = xs[axis] - chunk * i;
      sizes[i] = left < chunk ? left : chunk;
    }
  }
  if (n != nout) return bfail(b, NB_ERR_FORMAT, "%d split sizes for %d outputs", n, nout);
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    if (sizes[i] <= 0) return bfail(b, NB_ERR_UNSUPPORTED, "empty split");
    nb_tensor *y = nb_contiguous(b->g, nb_slice(b->g, T(b, x), axis, at, at + sizes[i], 1));
    if ((st = out_t(b, i, y, x->kind))) return st;
    at += sizes[i];
  }
  if (at != xs[axis]) return bfail(b, NB_ERR_SHAPE, "split sizes do not add up to the axis");
  return NB_OK;
}

static nb_status op_pad(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  const char *mode = attr_s(b->nd, "mode", "constant");
  if (strcmp(mode, "constant")) return bfail(b, NB_ERR_UNSUPPORTED, "mode='%s'", mode);
  int nd = vndim(x), n = 0, na = 0;
  int64_t raw[2 * NB_MAX_DIMS], axes[NB_MAX_DIMS], pads[2 * NB_MAX_DIMS] = {0};
  float value = 0.0f;
  if (b->opset < 11) {
    const ox_attr *pa = attr(b->nd, "pads");
    if (!pa || pa->nints > 2 * NB_MAX_DIMS) return bfail(b, NB_ERR_FORMAT, "bad pads");
    n = pa->nints;
    for (int i = 0; i < n; i++) raw[i] = pa->ints[i];
    value = attr_f(b->nd, "value", 0.0f);
  } else {
    ox_val *p, *cv = in(b, 2), *av = b->opset >= 18 ? in(b, 3) : NULL;
    if ((st = need_in(b, 1, &p)) || (st = const_ints(b, p, "pads", raw, 2 * NB_MAX_DIMS, &n)))
      return st;
    if (cv && (st = const_float(b, cv, "constant_value", &value))) return st;
    if (av && (st = const_ints(b, av, "axes", axes, NB_MAX_DIMS, &na))) return st;
  }
  if (!na) {
    na = nd;
    for (int i = 0; i < nd; i++) axes[i] = i;
  }
  if (n != 2 * na) return bfail(b, NB_ERR_FORMAT, "%d pads for %d axes", n, na);
  int neg = 0;
  for (int i = 0; i < na; i++) {
    int a;
    if ((st = check_axis(b, axes[i], nd, &a))) return st;
    pads[2 * a] = raw[i];
    pads[2 * a + 1] = raw[na + i];
    neg |= raw[i] < 0 || raw[na + i] < 0;
  }
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  int64_t pos[2 * NB_MAX_DIMS];
  for (int i = 0; i < 2 * nd; i++) pos[i] = pads[i] > 0 ? pads[i] : 0;
  t = nb_pad(g, t, pos, value);
  if (neg) { /* negative pads crop */
    int64_t xs[NB_MAX_DIMS];
    vshape(x, xs);
    for (int i = 0; i < nd; i++) {
      int64_t len = xs[i] + pos[2 * i] + pos[2 * i + 1];
      int64_t s = pads[2 * i] < 0 ? -pads[2 * i] : 0,
              e = len + (pads[2 * i + 1] < 0 ? pads[2 * i + 1] : 0);
      if (e <= s) return bfail(b, NB_ERR_UNSUPPORTED, "empty result");
      if (s || e != len) t = nb_slice(g, t, i, s, e, 1);
    }
    t = nb_contiguous(g, t);
  }
  return out_t(b, 0, t, x->kind);
}

static nb_status op_constant_of_shape(bld *b) {
  ox_val *s;
  nb_status st;
  int64_t sh[NB_MAX_DIMS];
  int n;
  if ((st = need_in(b, 0, &s)) || (st = const_ints(b, s, "shape", sh, NB_MAX_DIMS, &n))) return st;
  const ox_attr *va = attr(b->nd, "value");
  float v = 0.0f;
  int kind = K_FLOAT;
  if (va && va->t && va->t->numel == 1) {
    v = va->t->f32 ? va->t->f32[0] : (float)va->t->i64[0];
    kind = kind_of_type(va->t->elem_type);
  }
  if (nb_shape_numel(n, sh) == 0) return bfail(b, NB_ERR_UNSUPPORTED, "empty result");
  nb_tensor *y = nb_contiguous(b->g, nb_broadcast_to(b->g, nb_scalar(b->g, v), n, sh));
  return out_t(b, 0, y, kind);
}

static nb_status op_range(bld *b) {
  ox_val *s, *l, *d;
  nb_status st;
  if ((st = need_in(b, 0, &s)) || (st = need_in(b, 1, &l)) || (st = need_in(b, 2, &d))) return st;
  float fs, fl, fd;
  if ((st = const_float(b, s, "start", &fs)) || (st = const_float(b, l, "limit", &fl)) ||
      (st = const_float(b, d, "delta", &fd)))
    return st;
  if (fd == 0.0f) return bfail(b, NB_ERR_FORMAT, "delta 0");
  double cnt = ceil(((double)fl - fs) / fd);
  if (!(cnt >= 1) || cnt > (double)(1 << 24))
    return bfail(b, NB_ERR_UNSUPPORTED, "range of %g elements", cnt);
  int64_t n = (int64_t)cnt;
  int fl_kind = s->kind;
  nb_onnx_tensor *t = new_const(b, fl_kind == K_FLOAT ? NB_ONNX_FLOAT : NB_ONNX_INT64, 1, &n);
  if (!t) return oom();
  for (int64_t i = 0; i < n; i++) {
    if (t->f32)
      t->f32[i] = fs + (float)i * fd;
    else
      t->i64[i] = (int64_t)fs + i * (int64_t)fd;
  }
  return out_c(b, 0, t, fl_kind);
}

static nb_status op_mod(bld *b) {
  ox_val *x, *y;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &y)) || (st = need_float(b, x))) return st;
  nb_graph *g = b->g;
  nb_tensor *tx = T(b, x), *ty = T(b, y);
  nb_tensor *q = nb_div(g, tx, ty);
  /* trunc through an integer cast; floor = trunc - (q < trunc) */
  nb_tensor *r = nb_cast(g, nb_cast(g, q, NB_I64), NB_F32);
  if (!attr_i(b->nd, "fmod", 0)) r = nb_sub(g, r, nb_lt(g, q, r));
  return out_t(b, 0, nb_sub(g, tx, nb_mul(g, ty, r)), K_FLOAT);
}

static nb_status op_rmsnorm(bld *b) {
  ox_val *x, *sc;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_float(b, x))) return st;
  int nd = vndim(x), axis, axes[NB_MAX_DIMS];
  if ((st = check_axis(b, attr_i(b->nd, "axis", -1), nd, &axis))) return st;
  for (int i = axis; i < nd; i++) axes[i - axis] = i;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  nb_tensor *ms = nb_mean(g, nb_mul(g, t, t), nd - axis, axes, 1);
  nb_tensor *inv = nb_rsqrt(g, nb_add(g, ms, nb_scalar(g, attr_f(b->nd, "epsilon", 1e-5f))));
  return out_t(b, 0, nb_mul(g, nb_mul(g, t, inv), T(b, sc)), K_FLOAT);
}

/* GatherElements with build-time indices: one flat index per output
 * element, then a single index_select over the flattened data. */
static nb_status op_gather_elements(bld *b) {
  ox_val *x, *iv;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &iv))) return st;
  if (!iv->c)
    return bfail(b, NB_ERR_INVALID_ARG, "indices '%s' must be known at build time", iv->name);
  int nd = vndim(x), axis;
  const nb_onnx_tensor *ic = iv->c;
  if (ic->ndim != nd) return bfail(b, NB_ERR_SHAPE, "indices rank %d, data rank %d", ic->ndim, nd);
  if ((st = check_axis(b, attr_i(b->nd, "axis", 0), nd, &axis))) return st;
  if (ic->numel == 0) return bfail(b, NB_ERR_UNSUPPORTED, "empty indices");
  int64_t xs[NB_MAX_DIMS], stride[NB_MAX_DIMS], n = ic->numel;
  vshape(x, xs);
  for (int d = nd - 1, s = 1; d >= 0; d--) {
    stride[d] = s;
    s *= (int)xs[d];
  }
  int64_t *flat = malloc((size_t)n * sizeof(int64_t));
  if (!flat) return oom();
  for (int64_t p = 0; p < n; p++) {
    int64_t rem = p, off = 0;
    for (int d = nd - 1; d >= 0; d--) {
      int64_t id = rem % ic->dims[d];
      rem /= ic->dims[d];
      if (d == axis) {
        id = ic->i64 ? ic->i64[p] : (int64_t)ic->f32[p];
        if (id < 0) id += xs[d];
        if (id < 0 || id >= xs[d]) {
          free(flat);
          return bfail(b, NB_ERR_SHAPE, "index out of range for axis size %lld", (long long)xs[d]);
        }
      } else if (id >= xs[d]) {
        free(flat);
        return bfail(b, NB_ERR_SHAPE, "indices larger than data on axis %d", d);
      }
      off += id * stride[d];
    }
    flat[p] = off;
  }
  int64_t total = nb_shape_numel(nd, xs);
  nb_tensor *y = take(b, nb_reshape(b->g, T(b, x), 1, &total), 0, flat, n);
  free(flat);
  return out_t(b, 0, nb_reshape(b->g, y, ic->ndim, ic->dims), x->kind);
}

static nb_status op_trilu(bld *b) {
  ox_val *x, *kv = in(b, 1);
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  int nd = vndim(x), nk;
  if (nd < 2) return bfail(b, NB_ERR_SHAPE, "input rank must be >= 2");
  int64_t k = 0, xs[NB_MAX_DIMS];
  if (kv && (st = const_ints(b, kv, "k", &k, 1, &nk))) return st;
  vshape(x, xs);
  int64_t rows = xs[nd - 2], cols = xs[nd - 1], ms[2] = {rows, cols};
  int upper = (int)attr_i(b->nd, "upper", 1);
  float *mask = malloc((size_t)(rows * cols) * sizeof(float));
  if (!mask) return oom();
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) mask[i * cols + j] = upper ? j - i >= k : j - i <= k;
  nb_tensor *mt = nb_constant(b->g, NB_F32, 2, ms, mask);
  free(mask);
  /* where, not a product, so inf and nan outside the triangle become 0 */
  return out_t(b, 0, nb_where(b->g, mt, T(b, x), nb_scalar(b->g, 0.0f)), x->kind);
}

static nb_status op_swish_isx(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  const char *op = b->nd->op_type;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  if (!strcmp(op, "Swish"))
    return out_t(
        b, 0, nb_mul(g, t, nb_sigmoid(g, nb_mul(g, t, nb_scalar(g, attr_f(b->nd, "alpha", 1.0f))))),
        K_FLOAT);
  if (!strcmp(op, "IsNaN")) return out_t(b, 0, nb_ne(g, t, t), K_BOOL);
  int pos = (int)attr_i(b->nd, "detect_positive", 1),
      neg = (int)attr_i(b->nd, "detect_negative", 1);
  nb_tensor *r = nb_mul(g, t, nb_scalar(g, 0.0f)); /* all false (nan * 0 is nan, != inf) */
  r = nb_ne(g, r, r);
  r = nb_mul(g, r, nb_scalar(g, 0.0f));
  if (pos) r = nb_maximum(g, r, nb_eq(g, t, nb_scalar(g, INFINITY)));
  if (neg) r = nb_maximum(g, r, nb_eq(g, t, nb_scalar(g, -INFINITY)));
  return out_t(b, 0, r, K_BOOL);
}

static nb_status op_int_only(bld *b) {
  return bfail(b, NB_ERR_UNSUPPORTED,
               "integer op: nabla evaluates it only when its inputs are known at build time");
}

/* [1, .., n, .., 1] holding 0..n-1 along `axis`. */
static nb_tensor *iota(bld *b, int nd, int axis, int64_t n) {
  int64_t sh[NB_MAX_DIMS];
  for (int i = 0; i < nd; i++) sh[i] = i == axis ? n : 1;
  float *v = malloc((size_t)n * sizeof(float));
  if (!v) return NULL;
  for (int64_t i = 0; i < n; i++) v[i] = (float)i;
  nb_tensor *t = nb_constant(b->g, NB_F32, nd, sh, v);
  free(v);
  return t;
}

static nb_status op_hardmax(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int nd = vndim(x), axis;
  int64_t xs[NB_MAX_DIMS];
  vshape(x, xs);
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *y;
  if (b->opset < 13) { /* coerced to 2-d like Softmax */
    if ((st = check_axis(b, attr_i(b->nd, "axis", 1), nd, &axis))) return st;
    int64_t sh[2] = {1, 1};
    for (int i = 0; i < nd; i++) sh[i < axis ? 0 : 1] *= xs[i];
    nb_tensor *t2 = nb_reshape(g, t, 2, sh);
    y = nb_eq(g, iota(b, 2, 1, sh[1]), nb_cast(g, nb_argmax(g, t2, 1, 1), NB_F32));
    y = nb_reshape(g, y, nd, xs);
  } else {
    if ((st = check_axis(b, attr_i(b->nd, "axis", -1), nd, &axis))) return st;
    y = nb_eq(g, iota(b, nd, axis, xs[axis]), nb_cast(g, nb_argmax(g, t, axis, 1), NB_F32));
  }
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_lpnorm(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int axis;
  if ((st = check_axis(b, attr_i(b->nd, "axis", -1), vndim(x), &axis))) return st;
  int64_t p = attr_i(b->nd, "p", 2);
  if (p != 1 && p != 2) return bfail(b, NB_ERR_UNSUPPORTED, "p=%lld", (long long)p);
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  nb_tensor *n = p == 1 ? nb_sum(g, nb_abs(g, t), 1, &axis, 1)
                        : nb_sqrt(g, nb_sum(g, nb_mul(g, t, t), 1, &axis, 1));
  /* a zero norm gives zeros, as in the ONNX reference, not 0/0 */
  n = nb_where(g, nb_eq(g, n, nb_scalar(g, 0.0f)), nb_scalar(g, 1.0f), n);
  return out_t(b, 0, nb_div(g, t, n), K_FLOAT);
}

static nb_status op_onehot(bld *b) {
  ox_val *iv, *dv, *vv;
  nb_status st;
  int64_t depth;
  int n;
  if ((st = need_in(b, 0, &iv)) || (st = need_in(b, 1, &dv)) || (st = need_in(b, 2, &vv)) ||
      (st = const_ints(b, dv, "depth", &depth, 1, &n)))
    return st;
  if (!iv->c || !vv->c || vv->c->numel != 2)
    return bfail(b, NB_ERR_INVALID_ARG, "indices and values must be known at build time");
  const nb_onnx_tensor *ic = iv->c, *vc = vv->c;
  int nd = ic->ndim + 1, axis;
  if (nd > NB_MAX_DIMS || depth < 1 || depth > (1 << 20) || ic->numel * depth > (1 << 24))
    return bfail(b, NB_ERR_UNSUPPORTED, "depth %lld or rank %d", (long long)depth, nd);
  if ((st = check_axis(b, attr_i(b->nd, "axis", -1), nd, &axis))) return st;
  int64_t os[NB_MAX_DIMS];
  for (int i = 0, j = 0; i < nd; i++) os[i] = i == axis ? depth : ic->dims[j++];
  nb_onnx_tensor *r = new_const(b, vc->elem_type, nd, os);
  if (!r) return oom();
  int64_t inner = 1;
  for (int i = axis + 1; i < nd; i++) inner *= os[i];
  for (int64_t o = 0; o < r->numel; o++) {
    int64_t in_ = o % inner, cls = (o / inner) % depth, outer = o / inner / depth;
    int64_t idx = ic->i64 ? ic->i64[outer * inner + in_] : (int64_t)ic->f32[outer * inner + in_];
    if (idx < 0) idx += depth;
    int on = idx == cls;
    if (r->f32)
      r->f32[o] = vc->f32[on];
    else
      r->i64[o] = vc->i64[on];
  }
  return out_c(b, 0, r, kind_of_type(vc->elem_type));
}

static nb_status op_eyelike(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  if (vndim(x) != 2) return bfail(b, NB_ERR_SHAPE, "input must be 2-d");
  int64_t xs[2], k = attr_i(b->nd, "k", 0);
  vshape(x, xs);
  int et = (int)attr_i(b->nd, "dtype", x->et);
  nb_onnx_tensor *r = new_const(b, et, 2, xs);
  if (!r) return oom();
  for (int64_t i = 0; i < xs[0]; i++)
    for (int64_t j = 0; j < xs[1]; j++) {
      int on = j - i == k;
      if (r->f32)
        r->f32[i * xs[1] + j] = (float)on;
      else
        r->i64[i * xs[1] + j] = on;
    }
  return out_c(b, 0, r, kind_of_type(et));
}

/* NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss with build-time
 * targets: one constant tensor holds -weight[target] at each target's class
 * (0 elsewhere and where ignored), so the loss is a product and a sum. */
static nb_status op_nll(bld *b) {
  ox_val *x, *tv, *wv;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &tv)) || (st = need_float(b, x))) return st;
  wv = in(b, 2);
  int sce = !strcmp(b->nd->op_type, "SoftmaxCrossEntropyLoss");
  if (!tv->c)
    return bfail(b, NB_ERR_INVALID_ARG, "target '%s' must be known at build time", tv->name);
  if (wv && !wv->c)
    return bfail(b, NB_ERR_INVALID_ARG, "weight '%s' must be known at build time", wv->name);
  int nd = vndim(x);
  if (nd < 2) return bfail(b, NB_ERR_SHAPE, "input must be [N, C, ...]");
  int64_t xs[NB_MAX_DIMS], N = 0, C = 0, D = 1;
  vshape(x, xs);
  N = xs[0];
  C = xs[1];
  for (int i = 2; i < nd; i++) D *= xs[i];
  const nb_onnx_tensor *tc = tv->c;
  if (tc->numel != N * D)
    return bfail(b, NB_ERR_SHAPE, "target has %lld values", (long long)tc->numel);
  if (wv && wv->c->numel != C) return bfail(b, NB_ERR_SHAPE, "weight must have C values");
  const ox_attr *ia = attr(b->nd, "ignore_index");
  const char *red = attr_s(b->nd, "reduction", "mean");
  float *mask = calloc((size_t)(N * C * D), sizeof(float));
  if (!mask) return oom();
  double wsum = 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t d = 0; d < D; d++) {
      int64_t t = tc->i64 ? tc->i64[n * D + d] : (int64_t)tc->f32[n * D + d];
      if (ia && t == ia->i) continue;
      if (t < 0 || t >= C) {
        free(mask);
        return bfail(b, NB_ERR_SHAPE, "target %lld out of range [0, %lld)", (long long)t,
                     (long long)C);
      }
      float w = wv ? (wv->c->f32 ? wv->c->f32[t] : (float)wv->c->i64[t]) : 1.0f;
      mask[(n * C + t) * D + d] = -w;
      wsum += w;
    }
  nb_graph *g = b->g;
  nb_tensor *mt = nb_constant(g, NB_F32, nd, xs, mask);
  free(mask);
  nb_tensor *lp = T(b, x);
  if (sce) lp = nb_log_softmax(g, lp, 1);
  int one = 1;
  nb_tensor *loss = nb_sum(g, nb_mul(g, lp, mt), 1, &one, 0);
  if (!strcmp(red, "sum"))
    loss = nb_sum(g, loss, 0, NULL, 0);
  else if (!strcmp(red, "mean"))
    loss = nb_div(g, nb_sum(g, loss, 0, NULL, 0), nb_scalar(g, (float)wsum));
  else if (strcmp(red, "none"))
    return bfail(b, NB_ERR_UNSUPPORTED, "reduction='%s'", red);
  if ((st = out_t(b, 0, loss, K_FLOAT))) return st;
  return sce ? out_t(b, 1, lp, K_FLOAT) : NB_OK;
}

static nb_status op_conv_transpose(bld *b) {
  ox_val *x, *w;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &w)) || (st = need_float(b, x))) return st;
  int nd = vndim(x);
  if ((nd != 3 && nd != 4) || vndim(w) != nd)
    return bfail(b, NB_ERR_UNSUPPORTED, "only 1-d and 2-d transposed convolutions");
  int nsp = nd - 2;
  int64_t xs[NB_MAX_DIMS], ws[NB_MAX_DIMS], s[2], d[2], op[2] = {0, 0}, beg[2] = {0, 0},
                                                        end[2] = {0, 0}, full[2];
  vshape(x, xs);
  vshape(w, ws);
  if ((st = spatial_attr(b, "strides", nsp, 1, s)) ||
      (st = spatial_attr(b, "dilations", nsp, 1, d)))
    return st;
  const ox_attr *opa = attr(b->nd, "output_padding"), *osa = attr(b->nd, "output_shape"),
                *pa = attr(b->nd, "pads");
  const char *ap = attr_s(b->nd, "auto_pad", "NOTSET");
  if (opa && opa->nints == nsp)
    for (int i = 0; i < nsp; i++) op[i] = opa->ints[i];
  int64_t group = attr_i(b->nd, "group", 1);
  for (int i = 0; i < nsp; i++) {
    full[i] = s[i] * (xs[2 + i] - 1) + op[i] + (ws[2 + i] - 1) * d[i] + 1;
    if (op[i] >= s[i] && op[i] >= d[i])
      return bfail(b, NB_ERR_FORMAT, "output_padding must be smaller than stride or dilation");
  }
  if (osa || (strcmp(ap, "NOTSET") && strcmp(ap, "VALID"))) {
    for (int i = 0; i < nsp; i++) {
      int64_t want = osa ? osa->ints[osa->nints - nsp + i] : xs[2 + i] * s[i];
      int64_t total = full[i] - want;
      if (total < 0) return bfail(b, NB_ERR_UNSUPPORTED, "output_shape larger than the result");
      beg[i] = !strcmp(ap, "SAME_LOWER") ? total - total / 2 : total / 2;
      end[i] = total - beg[i];
    }
  } else if (pa && !strcmp(ap, "NOTSET")) {
    if (pa->nints != 2 * nsp) return bfail(b, NB_ERR_FORMAT, "pads has %d values", pa->nints);
    for (int i = 0; i < nsp; i++) {
      beg[i] = pa->ints[i];
      end[i] = pa->ints[nsp + i];
    }
  }
  nb_graph *g = b->g;
  nb_tensor *tx = T(b, x), *tw = T(b, w);
  if (nsp == 1) {
    tx = lift_1d(b, tx);
    tw = lift_1d(b, tw);
  }
  nb_conv2d_params p = nb_conv2d_defaults();
  p.groups = (int)group;
  int64_t osh[4] = {xs[0], ws[1] * group, 1, 1};
  for (int i = 0; i < nsp; i++) {
    int j = 2 - nsp + i;
    p.stride[j] = (int)s[i];
    p.dilation[j] = (int)d[i];
    osh[2 + j] = full[i];
  }
  /* the full (unpadded) result, then the pads cropped off */
  nb_tensor *y = nb_conv2d_backward_input(g, tx, tw, osh, &p);
  for (int i = 0; i < nsp && y; i++) {
    if (beg[i] < 0 || end[i] < 0 || beg[i] + end[i] >= full[i])
      return bfail(b, NB_ERR_UNSUPPORTED, "pads");
    if (beg[i] || end[i]) y = nb_slice(g, y, 2 + (2 - nsp + i), beg[i], full[i] - end[i], 1);
  }
  y = nb_contiguous(g, y);
  ox_val *bias = in(b, 2);
  if (bias && y) {
    int64_t bs[4] = {1, osh[1], 1, 1};
    y = nb_add(g, y, nb_reshape(g, T(b, bias), 4, bs));
  }
  if (nsp == 1) y = drop_1d(b, y);
  return out_t(b, 0, y, K_FLOAT);
}

/* Flat positions in the data of every update element, from build-time
 * indices (ScatterElements, Scatter, ScatterND). */
static nb_status scatter_positions(bld *b, int nd, const int64_t *xs, const nb_onnx_tensor *ic,
                                   int64_t **out, int64_t *nout) {
  const char *op = b->nd->op_type;
  int64_t stride[NB_MAX_DIMS], acc = 1;
  for (int d = nd - 1; d >= 0; d--) {
    stride[d] = acc;
    acc *= xs[d];
  }
  int64_t *pos;
  if (!strcmp(op, "ScatterND")) {
    int k = ic->ndim ? (int)ic->dims[ic->ndim - 1] : 0;
    if (ic->ndim < 1 || k < 1 || k > nd) return bfail(b, NB_ERR_SHAPE, "bad indices shape");
    int64_t q = ic->numel / k, inner = 1;
    for (int d = k; d < nd; d++) inner *= xs[d];
    pos = malloc((size_t)(q * inner > 0 ? q * inner : 1) * sizeof(int64_t));
    if (!pos) return oom();
    for (int64_t i = 0; i < q; i++) {
      int64_t base = 0;
      for (int j = 0; j < k; j++) {
        int64_t v = ic->i64 ? ic->i64[i * k + j] : (int64_t)ic->f32[i * k + j];
        if (v < 0) v += xs[j];
        if (v < 0 || v >= xs[j]) {
          free(pos);
          return bfail(b, NB_ERR_SHAPE, "index out of range");
        }
        base += v * stride[j];
      }
      for (int64_t s = 0; s < inner; s++) pos[i * inner + s] = base + s;
    }
    *nout = q * inner;
  } else {
    int axis;
    nb_status st = check_axis(b, attr_i(b->nd, "axis", 0), nd, &axis);
    if (st) return st;
    if (ic->ndim != nd) return bfail(b, NB_ERR_SHAPE, "indices rank differs from data");
    pos = malloc((size_t)(ic->numel ? ic->numel : 1) * sizeof(int64_t));
    if (!pos) return oom();
    for (int64_t p = 0; p < ic->numel; p++) {
      int64_t rem = p, off = 0;
      for (int d = nd - 1; d >= 0; d--) {
        int64_t id = rem % ic->dims[d];
        rem /= ic->dims[d];
        if (d == axis) {
          id = ic->i64 ? ic->i64[p] : (int64_t)ic->f32[p];
          if (id < 0) id += xs[d];
        }
        if (id < 0 || id >= xs[d]) {
          free(pos);
          return bfail(b, NB_ERR_SHAPE, "index out of range on axis %d", d);
        }
        off += id * stride[d];
      }
      pos[p] = off;
    }
    *nout = ic->numel;
  }
  *out = pos;
  return NB_OK;
}

/* out = data with updates written at build-time positions: index_add puts
 * the updates into zeros, and a constant mask picks them over the data (or
 * they are added, for reduction='add'). */
static nb_status op_scatter(bld *b) {
  ox_val *x, *iv, *uv;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &iv)) || (st = need_in(b, 2, &uv))) return st;
  if (!iv->c)
    return bfail(b, NB_ERR_INVALID_ARG, "indices '%s' must be known at build time", iv->name);
  const char *red = attr_s(b->nd, "reduction", "none");
  if (strcmp(red, "none") && strcmp(red, "add"))
    return bfail(b, NB_ERR_UNSUPPORTED, "reduction='%s'", red);
  int nd = vndim(x);
  int64_t xs[NB_MAX_DIMS], *pos = NULL, npos = 0, us[NB_MAX_DIMS];
  vshape(x, xs);
  vshape(uv, us);
  if ((st = scatter_positions(b, nd, xs, iv->c, &pos, &npos))) return st;
  int64_t total = nb_shape_numel(nd, xs);
  if (npos != nb_shape_numel(vndim(uv), us) || npos == 0) {
    free(pos);
    return bfail(b, NB_ERR_SHAPE, "updates do not match the indices");
  }
  float *mask = calloc((size_t)total, sizeof(float));
  if (!mask) {
    free(pos);
    return oom();
  }
  int dup = 0;
  for (int64_t i = 0; i < npos; i++) {
    dup |= mask[pos[i]] != 0.0f;
    mask[pos[i]] = 1.0f;
  }
  if (dup && !strcmp(red, "none")) {
    free(pos);
    free(mask);
    return bfail(b, NB_ERR_UNSUPPORTED, "repeated indices with reduction='none'");
  }
  nb_graph *g = b->g;
  nb_tensor *flat = nb_reshape(g, T(b, x), 1, &total);
  nb_tensor *idx = nb_constant(g, NB_I64, 1, &npos, pos);
  /* index_add accumulates into its first argument: start from zeros */
  nb_tensor *zeros = nb_contiguous(g, nb_broadcast_to(g, nb_scalar(g, 0.0f), 1, &total));
  nb_tensor *add = nb_index_add(g, zeros, 0, idx, nb_reshape(g, T(b, uv), 1, &npos));
  nb_tensor *y = !strcmp(red, "add")
                     ? nb_add(g, flat, add)
                     : nb_where(g, nb_constant(g, NB_F32, 1, &total, mask), add, flat);
  free(pos);
  free(mask);
  return out_t(b, 0, nb_reshape(g, y, nd, xs), x->kind);
}

static nb_status op_cumsum(bld *b) {
  ox_val *x, *av;
  nb_status st;
  int64_t ax;
  int n, axis;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &av)) || (st = need_float(b, x)) ||
      (st = const_ints(b, av, "axis", &ax, 1, &n)))
    return st;
  int nd = vndim(x);
  if ((st = check_axis(b, ax, nd, &axis))) return st;
  int64_t xs[NB_MAX_DIMS];
  vshape(x, xs);
  int64_t len = xs[axis], ms[2] = {len, len};
  if (len > 4096) return bfail(b, NB_ERR_UNSUPPORTED, "axis longer than 4096");
  int excl = (int)attr_i(b->nd, "exclusive", 0), rev = (int)attr_i(b->nd, "reverse", 0);
  float *m = malloc((size_t)(len * len) * sizeof(float));
  if (!m) return oom();
  /* out[j] = sum_i x[i] * m[i][j]: a triangular matrix product */
  for (int64_t i = 0; i < len; i++)
    for (int64_t j = 0; j < len; j++)
      m[i * len + j] = rev ? (excl ? i > j : i >= j) : (excl ? i < j : i <= j);
  nb_graph *g = b->g;
  int perm[NB_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  perm[axis] = nd - 1;
  perm[nd - 1] = axis;
  nb_tensor *t = nb_permute(g, T(b, x), perm);
  t = nb_matmul(g, t, nb_constant(g, NB_F32, 2, ms, m));
  free(m);
  return out_t(b, 0, nb_contiguous(g, nb_permute(g, t, perm)), x->kind);
}

static nb_status op_depth_space(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x))) return st;
  if (vndim(x) != 4) return bfail(b, NB_ERR_SHAPE, "input must be [N, C, H, W]");
  int64_t xs[4], bs = attr_i(b->nd, "blocksize", 0);
  vshape(x, xs);
  if (bs < 1) return bfail(b, NB_ERR_FORMAT, "blocksize must be >= 1");
  int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  if (!strcmp(b->nd->op_type, "SpaceToDepth")) {
    if (H % bs || W % bs) return bfail(b, NB_ERR_SHAPE, "H and W must divide by blocksize");
    int64_t s6[6] = {N, C, H / bs, bs, W / bs, bs}, o[4] = {N, C * bs * bs, H / bs, W / bs};
    const int perm[6] = {0, 3, 5, 1, 2, 4};
    t = nb_reshape(g, nb_permute(g, nb_reshape(g, t, 6, s6), perm), 4, o);
  } else {
    if (C % (bs * bs)) return bfail(b, NB_ERR_SHAPE, "C must divide by blocksize^2");
    int crd = !strcmp(attr_s(b->nd, "mode", "DCR"), "CRD");
    int64_t c = C / (bs * bs), o[4] = {N, c, H * bs, W * bs};
    int64_t dcr[6] = {N, bs, bs, c, H, W}, crds[6] = {N, c, bs, bs, H, W};
    const int pd[6] = {0, 3, 4, 1, 5, 2}, pc[6] = {0, 1, 4, 2, 5, 3};
    t = nb_reshape(g, nb_permute(g, nb_reshape(g, t, 6, crd ? crds : dcr), crd ? pc : pd), 4, o);
  }
  return out_t(b, 0, t, x->kind);
}

/* Floor, Ceil or Round (ties to even) of t through an integer cast, exact
 * below 2^23 where every float is an integer anyway (and inf and nan pass
 * through). */
static nb_tensor *round_op(nb_graph *g, nb_tensor *t, const char *op) {
  nb_tensor *v = t;
  if (!strcmp(op, "Round")) v = nb_add(g, t, nb_scalar(g, 0.5f)); /* floor(x + 0.5), then ties */
  nb_tensor *tr = nb_cast(g, nb_cast(g, v, NB_I64), NB_F32), *r;
  if (!strcmp(op, "Ceil"))
    r = nb_add(g, tr, nb_gt(g, v, tr));
  else
    r = nb_sub(g, tr, nb_lt(g, v, tr));
  if (!strcmp(op, "Round")) { /* a tie rounded up to an odd number goes to the even one below */
    nb_tensor *half = nb_div(g, r, nb_scalar(g, 2.0f));
    nb_tensor *hf = nb_cast(g, nb_cast(g, half, NB_I64), NB_F32);
    nb_tensor *odd = nb_ne(g, half, hf);
    r = nb_sub(g, r, nb_mul(g, odd, nb_eq(g, v, r)));
  }
  nb_tensor *big = nb_ge(g, nb_abs(g, t), nb_scalar(g, 8388608.0f));
  r = nb_where(g, big, t, r);
  return nb_where(g, nb_ne(g, t, t), t, r); /* nan */
}

static nb_status op_rounding(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  return out_t(b, 0, round_op(b->g, T(b, x), b->nd->op_type), K_FLOAT);
}

static nb_status op_shrink(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  float l = attr_f(b->nd, "lambd", 0.5f), bias = attr_f(b->nd, "bias", 0.0f);
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *zero = nb_scalar(g, 0.0f);
  nb_tensor *y =
      nb_where(g, nb_lt(g, t, nb_scalar(g, -l)), nb_add(g, t, nb_scalar(g, bias)),
               nb_where(g, nb_gt(g, t, nb_scalar(g, l)), nb_sub(g, t, nb_scalar(g, bias)), zero));
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_groupnorm(bld *b) {
  ox_val *x, *sc, *bi;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_in(b, 2, &bi)) ||
      (st = need_float(b, x)))
    return st;
  int nd = vndim(x);
  int64_t xs[NB_MAX_DIMS], G = attr_i(b->nd, "num_groups", 0);
  vshape(x, xs);
  if (nd < 3 || G < 1 || xs[1] % G) return bfail(b, NB_ERR_SHAPE, "bad num_groups or input rank");
  int64_t s3[3] = {xs[0], G, nb_shape_numel(nd, xs) / xs[0] / G}, gs[3] = {1, G, 1};
  nb_graph *g = b->g;
  int two = 2;
  nb_tensor *y = normalize(b, nb_reshape(g, T(b, x), 3, s3), 1, &two,
                           attr_f(b->nd, "epsilon", 1e-5f), NULL, NULL);
  if (b->opset < 21) { /* scale and bias per group */
    y = nb_add(g, nb_mul(g, y, nb_reshape(g, T(b, sc), 3, gs)), nb_reshape(g, T(b, bi), 3, gs));
    y = nb_reshape(g, y, nd, xs);
  } else {
    y = nb_reshape(g, y, nd, xs);
    y = nb_add(g, nb_mul(g, y, per_channel(b, sc, nd)), per_channel(b, bi, nd));
  }
  return out_t(b, 0, y, K_FLOAT);
}

static nb_status op_mvn(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  int nd = vndim(x), axes[NB_MAX_DIMS], n = 0;
  const ox_attr *a = attr(b->nd, "axes");
  if (a) {
    if (a->nints > NB_MAX_DIMS) return bfail(b, NB_ERR_FORMAT, "too many axes");
    for (int i = 0; i < a->nints; i++)
      if ((st = check_axis(b, a->ints[i], nd, &axes[n++]))) return st;
  } else {
    const int def[3] = {0, 2, 3};
    for (int i = 0; i < 3 && def[i] < nd; i++) axes[n++] = def[i];
  }
  return out_t(b, 0, normalize(b, T(b, x), n, axes, 1e-9f, NULL, NULL), K_FLOAT);
}

/* The scale and zero point of QuantizeLinear/DequantizeLinear as tensors
 * that broadcast against x: per tensor (a scalar or one value), per axis (a
 * vector along `axis`), or blocked (x's shape with ceil(d / block_size)
 * along `axis`, each value repeated over its block). */
static nb_status quant_params(bld *b, ox_val *x, ox_val *sc, ox_val *zp, nb_tensor **s,
                              nb_tensor **z) {
  nb_graph *g = b->g;
  int nd = vndim(x), ns = vndim(sc), axis;
  int64_t xs[NB_MAX_DIMS], ss[NB_MAX_DIMS];
  vshape(x, xs);
  vshape(sc, ss);
  int64_t block = attr_i(b->nd, "block_size", 0);
  nb_status st;
  *s = T(b, sc);
  *z = zp ? T(b, zp) : NULL;
  if (zp) {
    int64_t zs[NB_MAX_DIMS];
    vshape(zp, zs);
    int same = vndim(zp) == ns;
    for (int i = 0; same && i < ns; i++) same = zs[i] == ss[i];
    if (!same) return bfail(b, NB_ERR_SHAPE, "zero point and scale have different shapes");
  }
  int64_t n = 1;
  for (int i = 0; i < ns; i++) n *= ss[i];
  if (block > 0) {
    if ((st = check_axis(b, attr_i(b->nd, "axis", 1), nd, &axis))) return st;
    int same = ns == nd;
    for (int i = 0; same && i < nd; i++)
      same = i == axis ? ss[i] == (xs[i] + block - 1) / block : ss[i] == xs[i];
    if (!same)
      return bfail(b, NB_ERR_SHAPE,
                   "blocked scale must have x's shape with ceil(d / %lld) on axis %d",
                   (long long)block, axis);
    int64_t *idx = ox_alloc(b->a, (size_t)xs[axis] * sizeof(int64_t));
    if (!idx) return oom();
    for (int64_t i = 0; i < xs[axis]; i++) idx[i] = i / block;
    *s = take(b, *s, axis, idx, xs[axis]);
    if (*z) *z = take(b, *z, axis, idx, xs[axis]);
  } else if (block < 0) {
    return bfail(b, NB_ERR_INVALID_ARG, "block_size %lld", (long long)block);
  } else if (ns == 1 && ss[0] > 1) { /* per axis: scale [C] along `axis` */
    if ((st = check_axis(b, attr_i(b->nd, "axis", 1), nd, &axis))) return st;
    if (ss[0] != xs[axis])
      return bfail(b, NB_ERR_SHAPE, "per-axis scale has %lld values, axis %d has %lld",
                   (long long)ss[0], axis, (long long)xs[axis]);
    int64_t sh[NB_MAX_DIMS];
    for (int i = 0; i < nd; i++) sh[i] = i == axis ? ss[0] : 1;
    *s = nb_reshape(g, *s, nd, sh);
    if (*z) *z = nb_reshape(g, *z, nd, sh);
  } else if (n != 1) {
    return bfail(b, NB_ERR_UNSUPPORTED, "scale of shape rank %d without block_size", ns);
  }
  return NB_OK;
}

static nb_status op_dequantize(bld *b) {
  ox_val *x, *sc, *zp = in(b, 2);
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc))) return st;
  nb_tensor *t = T(b, x), *s, *z;
  if ((st = quant_params(b, x, sc, zp, &s, &z))) return st;
  if (z) t = nb_sub(b->g, t, z);
  if (b->nd->nout < 1 || !b->nd->out[0][0]) return NB_OK;
  return add_val(b, b->nd->out[0], nb_mul(b->g, t, s), NULL, K_FLOAT, sc->et);
}

/* y = saturate(round_half_even(x / scale) + zero_point) in the zero point's
 * type (or output_dtype; uint8 when neither is given). Integer types up to
 * 16 bits only: their values are exact in f32. */
static nb_status op_quantize(bld *b) {
  ox_val *x, *sc, *zp = in(b, 2);
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_in(b, 1, &sc)) || (st = need_float(b, x))) return st;
  int et = zp ? zp->et : (int)attr_i(b->nd, "output_dtype", 0);
  if (!et) et = NB_ONNX_UINT8;
  float lo, hi;
  switch (et) {
  case NB_ONNX_UINT8: lo = 0.0f, hi = 255.0f; break;
  case NB_ONNX_INT8: lo = -128.0f, hi = 127.0f; break;
  case NB_ONNX_UINT16: lo = 0.0f, hi = 65535.0f; break;
  case NB_ONNX_INT16: lo = -32768.0f, hi = 32767.0f; break;
  default:
    return bfail(b, NB_ERR_UNSUPPORTED, "quantizing to %s (nabla does uint8/int8/uint16/int16)",
                 nb_onnx_type_name(et));
  }
  nb_graph *g = b->g;
  nb_tensor *s, *z;
  if ((st = quant_params(b, x, sc, zp, &s, &z))) return st;
  nb_tensor *q = round_op(g, nb_div(g, T(b, x), s), "Round");
  if (z) q = nb_add(g, q, z);
  return out_typed(b, 0, nb_clamp(g, q, lo, hi), K_INT, et);
}

/* DynamicQuantizeLinear: uint8 with a scale and zero point from x's range
 * (extended to hold 0), as the operator's function body computes them. */
static nb_status op_dynquant(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x), *zero = nb_scalar(g, 0.0f);
  nb_tensor *lo = nb_minimum(g, nb_min(g, t, 0, NULL, 0), zero);
  nb_tensor *hi = nb_maximum(g, nb_max(g, t, 0, NULL, 0), zero);
  nb_tensor *scale = nb_div(g, nb_sub(g, hi, lo), nb_scalar(g, 255.0f));
  nb_tensor *zp = round_op(g, nb_clamp(g, nb_neg(g, nb_div(g, lo, scale)), 0.0f, 255.0f), "Round");
  nb_tensor *y = round_op(g, nb_div(g, t, scale), "Round");
  y = nb_clamp(g, nb_add(g, y, zp), 0.0f, 255.0f);
  if ((st = out_typed(b, 0, y, K_INT, NB_ONNX_UINT8)) || (st = out_t(b, 1, scale, K_FLOAT)))
    return st;
  return out_typed(b, 2, zp, K_INT, NB_ONNX_UINT8);
}

/* Resize as one small matrix product per resized axis: row j of the [out,
 * in] matrix holds the interpolation weights of output j, computed here from
 * the coordinate transform, so nearest, linear and cubic share one path. */
static nb_status resize_matrix(bld *b, int64_t in, int64_t out, double scale, float *m) {
  const ox_node *nd = b->nd;
  const char *ct =
      attr_s(nd, "coordinate_transformation_mode", b->opset < 11 ? "asymmetric" : "half_pixel");
  const char *mode = attr_s(nd, "mode", "nearest");
  const char *nm = attr_s(nd, "nearest_mode", "round_prefer_floor");
  if (!strcmp(nd->op_type, "Upsample")) nm = "floor"; /* the deprecated op picks floor(x / s) */
  double A = attr_f(nd, "cubic_coeff_a", -0.75f);
  int excl = (int)attr_i(nd, "exclude_outside", 0);
  memset(m, 0, (size_t)(in * out) * sizeof(float));
  for (int64_t j = 0; j < out; j++) {
    double x;
    if (!strcmp(ct, "half_pixel"))
      x = (j + 0.5) / scale - 0.5;
    else if (!strcmp(ct, "pytorch_half_pixel"))
      x = out > 1 ? (j + 0.5) / scale - 0.5 : 0;
    else if (!strcmp(ct, "align_corners"))
      /* the reference divides by the unrounded output length */
      x = out == 1 ? 0 : (double)j * (double)(in - 1) / (scale * (double)in - 1);
    else if (!strcmp(ct, "asymmetric"))
      x = j / scale;
    else if (!strcmp(ct, "half_pixel_symmetric")) {
      double adj = (double)out / (scale * (double)in), center = (double)in / 2;
      x = center * (1 - adj) + (j + 0.5) / scale - 0.5;
    } else {
      return bfail(b, NB_ERR_UNSUPPORTED, "coordinate_transformation_mode='%s'", ct);
    }
    if (!strcmp(mode, "nearest")) {
      double f = floor(x), fr = x - f;
      int64_t i;
      if (!strcmp(nm, "floor"))
        i = (int64_t)f;
      else if (!strcmp(nm, "ceil"))
        i = (int64_t)ceil(x);
      else if (!strcmp(nm, "round_prefer_ceil"))
        i = fr == 0.5 ? (int64_t)f + 1 : (int64_t)floor(x + 0.5);
      else if (!strcmp(nm, "round_prefer_floor"))
        i = fr == 0.5 ? (int64_t)f : (int64_t)floor(x + 0.5);
      else
        return bfail(b, NB_ERR_UNSUPPORTED, "nearest_mode='%s'", nm);
      i = i < 0 ? 0 : i >= in ? in - 1 : i;
      m[j * in + i] = 1.0f;
      continue;
    }
    int lin = !strcmp(mode, "linear");
    if (!lin && strcmp(mode, "cubic")) return bfail(b, NB_ERR_UNSUPPORTED, "mode='%s'", mode);
    if (lin)
      x = x < 0 ? 0 : x > in - 1 ? (double)(in - 1) : x; /* edge-clamped like the reference */
    double f = floor(x), r = x - f, w[4];
    int n = lin ? 2 : 4;
    int64_t first = (int64_t)f - (lin ? 0 : 1);
    if (lin) {
      w[0] = 1 - r;
      w[1] = r;
    } else {
      double s = 1 - r;
      w[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
      w[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
      w[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
      w[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
    }
    double total = 0;
    for (int k = 0; k < n; k++) {
      int64_t i = first + k;
      if (excl && (i < 0 || i >= in)) w[k] = 0;
      total += w[k];
    }
    for (int k = 0; k < n; k++) {
      int64_t i = first + k;
      i = i < 0 ? 0 : i >= in ? in - 1 : i; /* edge padding */
      m[j * in + i] += (float)(excl && total != 0 ? w[k] / total : w[k]);
    }
  }
  return NB_OK;
}

static nb_status op_resize(bld *b) {
  ox_val *x;
  nb_status st;
  if ((st = need_in(b, 0, &x)) || (st = need_float(b, x))) return st;
  const ox_node *nd = b->nd;
  if (!strcmp(attr_s(nd, "coordinate_transformation_mode", ""), "tf_crop_and_resize"))
    return bfail(b, NB_ERR_UNSUPPORTED, "tf_crop_and_resize");
  int rank = vndim(x), naxes = rank, axes[NB_MAX_DIMS], n = 0;
  int64_t xs[NB_MAX_DIMS], out[NB_MAX_DIMS], sizes[NB_MAX_DIMS];
  double scale[NB_MAX_DIMS];
  vshape(x, xs);
  const ox_attr *aa = attr(nd, "axes");
  if (aa) {
    if (aa->nints > rank) return bfail(b, NB_ERR_FORMAT, "too many axes");
    naxes = aa->nints;
    for (int i = 0; i < naxes; i++)
      if ((st = check_axis(b, aa->ints[i], rank, &axes[i]))) return st;
  } else {
    for (int i = 0; i < rank; i++) axes[i] = i;
  }
  for (int i = 0; i < rank; i++) {
    out[i] = xs[i];
    scale[i] = 1;
  }
  ox_val *sv = b->opset < 11 ? in(b, 1) : in(b, 2), *zv = b->opset < 11 ? NULL : in(b, 3);
  if (sv && sv->c && sv->c->numel) {
    if (!sv->c->f32 || sv->c->numel != naxes) return bfail(b, NB_ERR_FORMAT, "bad scales");
    for (int i = 0; i < naxes; i++) {
      scale[axes[i]] = sv->c->f32[i];
      out[axes[i]] = (int64_t)floor((double)xs[axes[i]] * sv->c->f32[i]);
    }
  } else if (zv) {
    if ((st = const_ints(b, zv, "sizes", sizes, NB_MAX_DIMS, &n))) return st;
    if (n != naxes) return bfail(b, NB_ERR_FORMAT, "sizes has %d values for %d axes", n, naxes);
    const char *pol = attr_s(nd, "keep_aspect_ratio_policy", "stretch");
    double s = strcmp(pol, "not_larger") ? 0 : 1e300;
    for (int i = 0; i < naxes; i++) {
      double r = (double)sizes[i] / (double)xs[axes[i]];
      if (!strcmp(pol, "not_larger") && r < s) s = r;
      if (!strcmp(pol, "not_smaller") && r > s) s = r;
    }
    for (int i = 0; i < naxes; i++) {
      int a = axes[i];
      if (!strcmp(pol, "stretch")) {
        out[a] = sizes[i];
        scale[a] = (double)sizes[i] / (double)xs[a];
      } else {
        scale[a] = s;
        out[a] = (int64_t)floor(s * (double)xs[a] + 0.5);
      }
    }
  } else if (sv && !sv->c) {
    return bfail(b, NB_ERR_INVALID_ARG, "scales '%s' must be known at build time", sv->name);
  } else {
    return bfail(b, NB_ERR_FORMAT, "neither scales nor sizes given");
  }
  if (attr_i(nd, "antialias", 0) && strcmp(attr_s(nd, "mode", "nearest"), "nearest"))
    for (int i = 0; i < rank; i++)
      if (scale[i] < 1) return bfail(b, NB_ERR_UNSUPPORTED, "antialias when downsampling");
  nb_graph *g = b->g;
  nb_tensor *t = T(b, x);
  for (int a = 0; a < rank; a++) {
    /* bounds the interpolation matrix, whatever the file asks for */
    if (out[a] < 1 || out[a] > 65536 || out[a] * xs[a] > ((int64_t)1 << 24))
      return bfail(b, NB_ERR_UNSUPPORTED, "output size %lld", (long long)out[a]);
    if (out[a] == xs[a] && scale[a] == 1) continue;
    float *m = malloc((size_t)(out[a] * xs[a]) * sizeof(float));
    if (!m) return oom();
    if ((st = resize_matrix(b, xs[a], out[a], scale[a], m))) {
      free(m);
      return st;
    }
    /* y[..., j] = sum_i x[..., i] m[j][i], on the axis moved last */
    float *mt = malloc((size_t)(out[a] * xs[a]) * sizeof(float));
    if (!mt) {
      free(m);
      return oom();
    }
    for (int64_t j = 0; j < out[a]; j++)
      for (int64_t i = 0; i < xs[a]; i++) mt[i * out[a] + j] = m[j * xs[a] + i];
    int64_t ms[2] = {xs[a], out[a]};
    int perm[NB_MAX_DIMS];
    for (int i = 0; i < rank; i++) perm[i] = i;
    perm[a] = rank - 1;
    perm[rank - 1] = a;
    t = nb_matmul(g, nb_permute(g, t, perm), nb_constant(g, NB_F32, 2, ms, mt));
    t = nb_contiguous(g, nb_permute(g, t, perm));
    free(m);
    free(mt);
  }
  return out_t(b, 0, t, K_FLOAT);
}

/* ---- constant folding ------------------------------------------------------------ */

/* Integer math done exactly on the host when every input is known at build
 * time: shape arithmetic in real models, and integer ops that f32 would get
 * wrong (overflow wrap-around, truncating division). */
static const char *const host_int_ops[] = {
    "Add",        "Sub", "Mul",   "Div",      "Mod",        "Pow",         "Max",
    "Min",        "Sum", "Equal", "Less",     "Greater",    "LessOrEqual", "GreaterOrEqual",
    "Neg",        "Abs", "Sign",  "BitShift", "BitwiseAnd", "BitwiseOr",   "BitwiseXor",
    "BitwiseNot",
};

/* Ops that only select or compare values, so integers stay exact in f32
 * (below 2^24) when they are evaluated at build time. */
static const char *const select_ops[] = {
    "Clip",          "MaxPool", "ReduceMax", "ReduceMin", "Relu", "ArgMax", "ArgMin",
    "GlobalMaxPool", "Max",     "Min",       "Neg",       "Abs",  "CumSum",
};

static int64_t wrap_int(int et, int64_t v) {
  switch (et) {
  case NB_ONNX_UINT8: return v & 0xff;
  case NB_ONNX_INT8: return (int8_t)(uint8_t)v;
  case NB_ONNX_UINT16: return v & 0xffff;
  case NB_ONNX_INT16: return (int16_t)(uint16_t)v;
  case NB_ONNX_UINT32: return v & 0xffffffff;
  case NB_ONNX_INT32: return (int32_t)(uint32_t)v;
  case NB_ONNX_BOOL: return v != 0;
  }
  return v;
}

static int64_t int_pow(int64_t x, int64_t y) {
  uint64_t r = 1, bse = (uint64_t)x;
  if (y < 0) return x == 1 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : 0;
  for (; y; y >>= 1, bse *= bse)
    if (y & 1) r *= bse;
  return (int64_t)r;
}

/* x op y with unsigned arithmetic where C would overflow. *err set on
 * division by zero. */
static int64_t int_op(const char *op, int et, int64_t x, int64_t y, int fmod_, int left, int *err) {
  uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
  int is_unsigned =
      et == NB_ONNX_UINT8 || et == NB_ONNX_UINT16 || et == NB_ONNX_UINT32 || et == NB_ONNX_UINT64;
  if (!strcmp(op, "Add") || !strcmp(op, "Sum")) return (int64_t)(ux + uy);
  if (!strcmp(op, "Sub")) return (int64_t)(ux - uy);
  if (!strcmp(op, "Mul")) return (int64_t)(ux * uy);
  if (!strcmp(op, "Div") || !strcmp(op, "Mod")) {
    if (y == 0) {
      *err = 1;
      return 0;
    }
    if (is_unsigned) return !strcmp(op, "Div") ? (int64_t)(ux / uy) : (int64_t)(ux % uy);
    if (x == INT64_MIN && y == -1) return !strcmp(op, "Div") ? x : 0;
    if (!strcmp(op, "Div")) return x / y;
    int64_t r = x % y;
    if (!fmod_ && r && ((r < 0) != (y < 0))) r += y; /* Python-style: sign of the divisor */
    return r;
  }
  if (!strcmp(op, "Pow")) return int_pow(x, y);
  if (!strcmp(op, "Max")) return is_unsigned ? (ux > uy ? x : y) : (x > y ? x : y);
  if (!strcmp(op, "Min")) return is_unsigned ? (ux < uy ? x : y) : (x < y ? x : y);
  if (!strcmp(op, "Equal")) return x == y;
  if (!strcmp(op, "Less")) return is_unsigned ? ux < uy : x < y;
  if (!strcmp(op, "Greater")) return is_unsigned ? ux > uy : x > y;
  if (!strcmp(op, "LessOrEqual")) return is_unsigned ? ux <= uy : x <= y;
  if (!strcmp(op, "GreaterOrEqual")) return is_unsigned ? ux >= uy : x >= y;
  if (!strcmp(op, "BitwiseAnd")) return (int64_t)(ux & uy);
  if (!strcmp(op, "BitwiseOr")) return (int64_t)(ux | uy);
  if (!strcmp(op, "BitwiseXor")) return (int64_t)(ux ^ uy);
  if (!strcmp(op, "BitShift")) {
    if (uy >= 64) return 0;
    return left ? (int64_t)(ux << uy) : (int64_t)(ux >> uy);
  }
  return 0;
}

/* Offset into a tensor of shape s (rank n) broadcast to shape os (rank on)
 * for flat output index i. */
static int64_t bcast_off(int64_t i, int on, const int64_t *os, int n, const int64_t *s) {
  int64_t off = 0, stride = 1;
  for (int d = on - 1; d >= 0; d--) {
    int64_t id = i % os[d];
    i /= os[d];
    int k = d - (on - n);
    if (k >= 0) {
      if (s[k] != 1) off += id * stride;
      stride *= s[k];
    }
  }
  return off;
}

static int is_host_int_op(const char *op) {
  for (int i = 0; i < (int)(sizeof host_int_ops / sizeof *host_int_ops); i++)
    if (!strcmp(host_int_ops[i], op)) return 1;
  return 0;
}

static nb_status host_int(bld *b) {
  const char *op = b->nd->op_type;
  int cmp = !strcmp(op, "Equal") || !strcmp(op, "Less") || !strcmp(op, "Greater") ||
            !strcmp(op, "LessOrEqual") || !strcmp(op, "GreaterOrEqual");
  ox_val *x0 = in(b, 0);
  int et = x0->et, fmod_ = (int)attr_i(b->nd, "fmod", 0);
  int left = !strcmp(attr_s(b->nd, "direction", "LEFT"), "LEFT");
  const nb_onnx_tensor *acc = NULL;
  nb_onnx_tensor *r = NULL;
  if (!strcmp(op, "Neg") || !strcmp(op, "Abs") || !strcmp(op, "Sign") ||
      !strcmp(op, "BitwiseNot")) {
    acc = x0->c;
    r = new_const(b, et, acc->ndim, acc->dims);
    if (!r) return oom();
    for (int64_t i = 0; i < acc->numel; i++) {
      int64_t v = acc->i64[i];
      r->i64[i] = wrap_int(et, !strcmp(op, "BitwiseNot") ? (int64_t) ~(uint64_t)v
                               : !strcmp(op, "Neg")      ? (int64_t)(0 - (uint64_t)v)
                               : !strcmp(op, "Abs")      ? (v < 0 ? (int64_t)(0 - (uint64_t)v) : v)
                                                         : (v > 0) - (v < 0));
    }
    return out_c(b, 0, r, K_INT);
  }
  for (int k = 0; k < b->nd->nin; k++) {
    ox_val *y = in(b, k);
    if (!y) continue;
    if (!acc) {
      acc = y->c;
      continue;
    }
    const nb_onnx_tensor *c = y->c;
    int64_t os[NB_MAX_DIMS];
    int on = acc->ndim > c->ndim ? acc->ndim : c->ndim;
    for (int d = 0; d < on; d++) {
      int64_t a = d - (on - acc->ndim) >= 0 ? acc->dims[d - (on - acc->ndim)] : 1;
      int64_t e = d - (on - c->ndim) >= 0 ? c->dims[d - (on - c->ndim)] : 1;
      if (a != e && a != 1 && e != 1)
        return bfail(b, NB_ERR_SHAPE, "shapes do not broadcast (%lld vs %lld)", (long long)a,
                     (long long)e);
      os[d] = a == 1 ? e : a;
    }
    r = new_const(b, cmp ? NB_ONNX_BOOL : et, on, os);
    if (!r) return oom();
    int err = 0;
    for (int64_t i = 0; i < r->numel; i++) {
      int64_t xa = acc->i64[bcast_off(i, on, os, acc->ndim, acc->dims)];
      int64_t ya = c->i64[bcast_off(i, on, os, c->ndim, c->dims)];
      r->i64[i] = wrap_int(cmp ? NB_ONNX_BOOL : et, int_op(op, et, xa, ya, fmod_, left, &err));
    }
    if (err) return bfail(b, NB_ERR_INVALID_ARG, "integer division by zero");
    acc = r;
  }
  if (!acc) return bfail(b, NB_ERR_FORMAT, "no inputs");
  return out_c(b, 0, acc, cmp ? K_BOOL : K_INT);
}

static nb_status dispatch(bld *b);

/* Evaluates a node whose inputs are all known at build time: the node is
 * built into a scratch graph, run once on the CPU, and its outputs become
 * build-time values, so shape computations (Shape -> Gather -> Concat ->
 * Reshape) fold away. */
static nb_status fold(bld *b) {
  const ox_node *nd = b->nd;
  int allint = 1;
  for (int k = 0; k < nd->nin; k++) {
    ox_val *v = in(b, k);
    if (v && !v->c->i64) allint = 0;
  }
  if (allint && is_host_int_op(nd->op_type)) return host_int(b);
  if (!b->cpu && nb_backend_new("cpu", &b->cpu))
    return bfail(b, NB_ERR_INTERNAL, "%s", nb_last_error());
  nb_graph *main_g = b->g, *sg = nb_graph_new();
  if (!sg) return oom();
  enum { MAXIN = 64 };
  nb_tensor *saved[MAXIN];
  int nin = nd->nin < MAXIN ? nd->nin : MAXIN;
  for (int k = 0; k < nin; k++) saved[k] = in(b, k) ? in(b, k)->t : NULL;
  for (int k = 0; k < nin; k++)
    if (in(b, k)) in(b, k)->t = NULL; /* constants are re-made in the scratch graph */
  b->g = sg;
  int first = b->nv;
  for (int i = 0; i < (int)(sizeof select_ops / sizeof *select_ops); i++)
    if (!strcmp(select_ops[i], nd->op_type)) b->exact_ok = 1;
  nb_status st = dispatch(b);
  b->exact_ok = 0;
  if (!st && nb_graph_status(sg)) st = bfail(b, nb_graph_status(sg), "%s", nb_graph_error(sg));
  b->g = main_g;
  for (int k = nin - 1; k >= 0; k--)
    if (in(b, k)) in(b, k)->t = saved[k];
  nb_state *state = NULL;
  nb_plan *plan = NULL;
  int nt = 0;
  for (int i = first; !st && i < b->nv; i++)
    if (b->v[i].t) {
      nb_tensor_set_output(b->v[i].t);
      nt++;
    }
  if (!st && nt &&
      ((st = nb_state_new(b->cpu, &state)) || (st = nb_compile(sg, b->cpu, state, NULL, &plan)) ||
       (st = nb_plan_run(plan))))
    st = bfail(b, st, "evaluating at build time: %s", nb_last_error());
  for (int i = first; !st && i < b->nv; i++) {
    ox_val *v = &b->v[i];
    if (!v->t) continue;
    int et = v->kind == K_FLOAT ? NB_ONNX_FLOAT : v->et;
    nb_onnx_tensor *c = new_const(b, et, nb_tensor_ndim(v->t), nb_tensor_shape(v->t));
    float *buf = c ? malloc((size_t)(c->numel ? c->numel : 1) * sizeof(float)) : NULL;
    if (!buf) {
      st = oom();
      break;
    }
    st = nb_plan_get(plan, v->t, buf, (size_t)c->numel * sizeof(float));
    for (int64_t j = 0; !st && j < c->numel; j++)
      if (c->f32)
        c->f32[j] = buf[j];
      else
        c->i64[j] = (int64_t)llrintf(buf[j]);
    free(buf);
    v->c = c;
    v->t = NULL;
  }
  nb_plan_free(plan);
  nb_state_free(state);
  nb_graph_free(sg);
  return st;
}

/* 1 if the node can be evaluated now: it has inputs and all are known. */
static int foldable(bld *b) {
  int n = 0;
  int64_t total = 0;
  for (int k = 0; k < b->nd->nin; k++) {
    if (!b->nd->in[k][0]) continue;
    ox_val *v = in(b, k);
    if (!v || !v->c) return 0;
    total += v->c->numel;
    n++;
  }
  /* large constant work (a weight transform) is cheap enough to fold too,
   * but keep a bound so a hostile file cannot make the build run long */
  return n > 0 && total <= (1 << 22);
}

/* ---- dispatch -------------------------------------------------------------------- */

typedef nb_status (*op_fn)(bld *);

static const struct {
  const char *op;
  op_fn fn;
} ops[] = {
    {"Not", op_not},
    {"Max", op_nary},
    {"Min", op_nary},
    {"Sum", op_nary},
    {"Mean", op_nary},
    {"LeakyRelu", op_activation},
    {"Elu", op_activation},
    {"Selu", op_activation},
    {"Celu", op_activation},
    {"HardSigmoid", op_activation},
    {"HardSwish", op_activation},
    {"Softsign", op_activation},
    {"ThresholdedRelu", op_activation},
    {"Softplus", op_activation},
    {"Mish", op_activation},
    {"Gelu", op_activation},
    {"Clip", op_clip},
    {"Where", op_where},
    {"MatMul", op_matmul},
    {"Gemm", op_gemm},
    {"Conv", op_conv},
    {"MaxPool", op_pool},
    {"AveragePool", op_pool},
    {"GlobalAveragePool", op_global_pool},
    {"GlobalMaxPool", op_global_pool},
    {"BatchNormalization", op_batchnorm},
    {"LayerNormalization", op_layernorm},
    {"InstanceNormalization", op_instancenorm},
    {"Softmax", op_softmax},
    {"LogSoftmax", op_softmax},
    {"ReduceMean", op_reduce},
    {"ReduceSum", op_reduce},
    {"ReduceMax", op_reduce},
    {"ReduceMin", op_reduce},
    {"ReduceSumSquare", op_reduce},
    {"ReduceL1", op_reduce},
    {"ReduceL2", op_reduce},
    {"ReduceLogSum", op_reduce},
    {"ReduceLogSumExp", op_reduce},
    {"ArgMax", op_argmax},
    {"ArgMin", op_argmax},
    {"Identity", op_identity},
    {"Dropout", op_dropout},
    {"Constant", op_constant},
    {"Shape", op_shape},
    {"Size", op_shape},
    {"Cast", op_cast},
    {"CastLike", op_cast},
    {"Swish", op_swish_isx},
    {"IsNaN", op_swish_isx},
    {"IsInf", op_swish_isx},
    {"BitShift", op_int_only},
    {"BitwiseAnd", op_int_only},
    {"BitwiseOr", op_int_only},
    {"BitwiseXor", op_int_only},
    {"BitwiseNot", op_int_only},
    {"Hardmax", op_hardmax},
    {"LpNormalization", op_lpnorm},
    {"OneHot", op_onehot},
    {"EyeLike", op_eyelike},
    {"NegativeLogLikelihoodLoss", op_nll},
    {"SoftmaxCrossEntropyLoss", op_nll},
    {"ConvTranspose", op_conv_transpose},
    {"LpPool", op_pool},
    {"ScatterElements", op_scatter},
    {"Scatter", op_scatter},
    {"ScatterND", op_scatter},
    {"CumSum", op_cumsum},
    {"DepthToSpace", op_depth_space},
    {"SpaceToDepth", op_depth_space},
    {"Floor", op_rounding},
    {"Ceil", op_rounding},
    {"Round", op_rounding},
    {"Shrink", op_shrink},
    {"GroupNormalization", op_groupnorm},
    {"MeanVarianceNormalization", op_mvn},
    {"DequantizeLinear", op_dequantize},
    {"QuantizeLinear", op_quantize},
    {"DynamicQuantizeLinear", op_dynquant},
    {"Resize", op_resize},
    {"Upsample", op_resize},
    {"Mod", op_mod},
    {"RMSNormalization", op_rmsnorm},
    {"GatherElements", op_gather_elements},
    {"Trilu", op_trilu},
    {"Reshape", op_reshape},
    {"Flatten", op_flatten},
    {"Transpose", op_transpose},
    {"Squeeze", op_squeeze},
    {"Unsqueeze", op_unsqueeze},
    {"Concat", op_concat},
    {"Slice", op_slice},
    {"Gather", op_gather},
    {"Expand", op_expand},
    {"Tile", op_tile},
    {"Split", op_split},
    {"Pad", op_pad},
    {"ConstantOfShape", op_constant_of_shape},
    {"Range", op_range},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

int nb_onnx_op_supported(const char *op) {
  if (!op) return 0;
  for (int i = 0; i < COUNT(unary_ops); i++)
    if (!strcmp(unary_ops[i].op, op)) return 1;
  for (int i = 0; i < COUNT(binary_ops); i++)
    if (!strcmp(binary_ops[i].op, op)) return 1;
  for (int i = 0; i < COUNT(ops); i++)
    if (!strcmp(ops[i].op, op)) return 1;
  return 0;
}

static nb_status dispatch(bld *b) {
  const char *op = b->nd->op_type;
  for (int i = 0; i < COUNT(unary_ops); i++)
    if (!strcmp(unary_ops[i].op, op)) return op_unary(b, unary_ops[i].fn);
  for (int i = 0; i < COUNT(binary_ops); i++)
    if (!strcmp(binary_ops[i].op, op)) return op_binary(b, i);
  for (int i = 0; i < COUNT(ops); i++)
    if (!strcmp(ops[i].op, op)) return ops[i].fn(b);
  return bfail(b, NB_ERR_UNSUPPORTED, "unsupported op");
}

static int default_domain(const char *d) { return !d[0] || !strcmp(d, "ai.onnx"); }

nb_status nb_onnx_check(const nb_onnx_model *m) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_check: model is NULL");
  char msg[900];
  size_t len = 0;
  int nbad = 0;
  msg[0] = '\0';
  for (int i = 0; i < m->nnode; i++) {
    const ox_node *nd = &m->node[i];
    if (default_domain(nd->domain) && nb_onnx_op_supported(nd->op_type)) continue;
    /* list each op once */
    int seen = 0;
    for (int j = 0; j < i && !seen; j++)
      seen = !strcmp(m->node[j].op_type, nd->op_type) && !strcmp(m->node[j].domain, nd->domain) &&
             !(default_domain(nd->domain) && nb_onnx_op_supported(nd->op_type));
    if (seen) continue;
    nbad++;
    if (len < sizeof msg - 1) {
      const char *dom = default_domain(nd->domain) ? "ai.onnx" : nd->domain;
      int w = snprintf(msg + len, sizeof msg - len, "%s%s (%s, opset %lld)", nbad > 1 ? ", " : "",
                       nd->op_type, dom, (long long)nb_onnx_opset(m, nd->domain));
      if (w > 0) len += (size_t)w;
      if (len >= sizeof msg) len = sizeof msg - 1;
    }
  }
  if (!nbad) return NB_OK;
  return nb_error(NB_ERR_UNSUPPORTED, "%s: %d unsupported op%s: %s", m->path, nbad,
                  nbad > 1 ? "s" : "", msg);
}

nb_status nb_onnx_build(const nb_onnx_model *m, nb_graph *g, int n_inputs,
                        const nb_onnx_input *inputs, nb_tensor **in_nodes, nb_tensor **outputs) {
  if (!m || !g || (n_inputs && !inputs) || (m->noutput && !outputs))
    return nb_error(NB_ERR_INVALID_ARG, "nb_onnx_build: NULL argument");
  nb_status st = nb_onnx_check(m);
  if (st) return st;
  bld b = {.m = m, .g = g, .opset = nb_onnx_opset(m, "")};
  b.cap = m->ninit + n_inputs + 1;
  for (int i = 0; i < m->nnode; i++) b.cap += m->node[i].nout;
  b.v = calloc((size_t)b.cap, sizeof(ox_val));
  b.a = ox_arena_new();
  if (!b.v || !b.a) {
    free(b.v);
    ox_arena_free(b.a);
    return oom();
  }
  for (int i = 0; i < m->ninit && !st; i++)
    st = add_val(&b, m->init[i]->name, NULL, m->init[i], kind_of_type(m->init[i]->elem_type),
                 m->init[i]->elem_type);
  /* every fed input must be given, with a shape of its declared rank */
  for (int f = 0; f < m->nfeed && !st; f++) {
    const ox_value_info *vi = &m->input[m->feed[f]];
    int k = -1;
    for (int i = 0; i < n_inputs; i++)
      if (inputs[i].name && !strcmp(inputs[i].name, vi->name)) k = i;
    if (k < 0) {
      st = bfail(&b, NB_ERR_INVALID_ARG, "input '%s' was not given", vi->name);
      break;
    }
    const nb_onnx_input *ip = &inputs[k];
    if (ip->ndim < 0 || ip->ndim > NB_MAX_DIMS || (vi->ndim >= 0 && vi->ndim != ip->ndim)) {
      st = bfail(&b, NB_ERR_SHAPE, "input '%s' has rank %d, the model declares %d", vi->name,
                 ip->ndim, vi->ndim);
      break;
    }
    for (int d = 0; d < ip->ndim && vi->ndim >= 0; d++)
      if (vi->dims[d] >= 0 && vi->dims[d] != ip->shape[d]) {
        st = bfail(&b, NB_ERR_SHAPE, "input '%s' dim %d is %lld, the model declares %lld", vi->name,
                   d, (long long)ip->shape[d], (long long)vi->dims[d]);
        break;
      }
    if (st) break;
    if (!vi->elem_type) {
      st = bfail(&b, NB_ERR_UNSUPPORTED, "input '%s' is not a tensor (sequence, map or optional)",
                 vi->name);
      break;
    }
    for (int d = 0; d < ip->ndim && !ip->value; d++)
      if (ip->shape[d] <= 0) {
        st = bfail(&b, NB_ERR_UNSUPPORTED, "input '%s' is empty (nabla has no zero-size tensors)",
                   vi->name);
        break;
      }
    if (st) break;
    int kind = kind_of_type(vi->elem_type), et = vi->elem_type;
    if (ip->value) {
      st = add_val(&b, vi->name, NULL, ip->value, kind, et);
      if (in_nodes) in_nodes[k] = NULL;
    } else {
      nb_tensor *t = nb_input(g, vi->name, NB_F32, ip->ndim, ip->shape);
      /* a shape nb_input refuses (too many elements) would leave a value
       * with neither a node nor a constant behind */
      st = t ? add_val(&b, vi->name, t, NULL, kind, et)
             : bfail(&b, nb_graph_status(g), "input '%s': %s", vi->name, nb_graph_error(g));
      if (in_nodes) in_nodes[k] = t;
    }
  }
  for (int i = 0; i < m->nnode && !st; i++) {
    b.nd = &m->node[i];
    b.node_index = i;
    for (int k = 0; k < b.nd->nin && !st; k++)
      if (b.nd->in[k][0] && !find(&b, b.nd->in[k]))
        st = bfail(&b, NB_ERR_FORMAT, "input '%s' is not defined before this node", b.nd->in[k]);
    if (!st) st = foldable(&b) ? fold(&b) : dispatch(&b);
    if (!st && nb_graph_status(g)) st = bfail(&b, nb_graph_status(g), "%s", nb_graph_error(g));
  }
  b.nd = NULL;
  for (int j = 0; j < m->noutput && !st; j++) {
    ox_val *v = find(&b, m->output[j].name);
    if (!v) {
      st = bfail(&b, NB_ERR_FORMAT, "output '%s' is never computed", m->output[j].name);
      break;
    }
    nb_tensor *t = T(&b, v);
    if (t) nb_tensor_set_output(t);
    outputs[j] = t;
    if (nb_graph_status(g)) st = bfail(&b, nb_graph_status(g), "%s", nb_graph_error(g));
  }
  free(b.v);
  nb_backend_free(b.cpu);
  /* host constants were copied into the graph by nb_constant */
  ox_arena_free(b.a);
  return st;
}
