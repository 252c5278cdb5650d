/* Elementwise ops: shape inference with numpy broadcasting, backward rules,
 * and constructors. Kernels live in the backends. */
#include <math.h>

#include "graph_internal.h"

int nb_broadcast_shapes(int na, const int64_t *a, int nb, const int64_t *b, int *nout,
                        int64_t *out) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int ia = na - n + i, ib = nb - n + i;
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) return 0;
    out[i] = da == 1 ? db : da;
  }
  *nout = n;
  return 1;
}

static nb_status need_f32(const nb_tensor *t, int i) {
  if (t->in[i]->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "input %d has dtype %s, this op computes in f32 (use nb_cast)", i,
                    nb_dtype_name(t->in[i]->dtype));
  return NB_OK;
}

static nb_status infer_broadcast_n(nb_tensor *t) {
  for (int i = 0; i < t->n_in; i++) {
    nb_status st = need_f32(t, i);
    if (st) return st;
  }
  int n = t->in[0]->ndim;
  int64_t shape[NB_MAX_DIMS];
  for (int i = 0; i < n; i++) shape[i] = t->in[0]->shape[i];
  for (int k = 1; k < t->n_in; k++) {
    const nb_tensor *x = t->in[k];
    int64_t out[NB_MAX_DIMS];
    int nout;
    if (!nb_broadcast_shapes(n, shape, x->ndim, x->shape, &nout, out)) {
      char s0[128], s1[128];
      return nb_error(NB_ERR_SHAPE, "shapes %s and %s cannot be broadcast together",
                      nb_shape_str(n, shape, s0, sizeof s0),
                      nb_shape_str(x->ndim, x->shape, s1, sizeof s1));
    }
    n = nout;
    for (int i = 0; i < n; i++) shape[i] = out[i];
  }
  t->dtype = NB_F32;
  t->ndim = n;
  for (int i = 0; i < n; i++) t->shape[i] = shape[i];
  return NB_OK;
}

static nb_status infer_unary(nb_tensor *t) {
  nb_status st = need_f32(t, 0);
  if (st) return st;
  t->dtype = NB_F32;
  t->ndim = t->in[0]->ndim;
  for (int i = 0; i < t->ndim; i++) t->shape[i] = t->in[0]->shape[i];
  return NB_OK;
}

static nb_status infer_clamp(nb_tensor *t) {
  if (t->fp[0] > t->fp[1])
    return nb_error(NB_ERR_INVALID_ARG, "lo %g is greater than hi %g", (double)t->fp[0],
                    (double)t->fp[1]);
  return infer_unary(t);
}

static nb_status infer_dropout(nb_tensor *t) {
  if (!(t->fp[0] >= 0.0f && t->fp[0] < 1.0f))
    return nb_error(NB_ERR_INVALID_ARG, "p = %g is outside [0, 1)", (double)t->fp[0]);
  return infer_unary(t);
}

static nb_status infer_same_any_dtype(nb_tensor *t) {
  t->dtype = t->op == NB_OP_CAST ? (nb_dtype)t->ip[0] : t->in[0]->dtype;
  if (!nb_dtype_valid((int)t->dtype))
    return nb_error(NB_ERR_DTYPE, "invalid target dtype %d", (int)t->ip[0]);
  t->ndim = t->in[0]->ndim;
  for (int i = 0; i < t->ndim; i++) t->shape[i] = t->in[0]->shape[i];
  return NB_OK;
}

/* ---- backward rules --------------------------------------------------------- */

#define A (node->in[0])
#define B (node->in[1])

static nb_tensor *sum_to_in(nb_graph *g, nb_tensor *x, const nb_tensor *like) {
  return nb_sum_to(g, x, like->ndim, like->shape);
}

static nb_status bwd_none(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  (void)g, (void)gout;
  for (int i = 0; i < node->n_in; i++) gin[i] = NULL;
  return NB_OK;
}

static nb_status bwd_add(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  if (nb_needs_grad(A)) gin[0] = sum_to_in(g, gout, A);
  if (nb_needs_grad(B)) gin[1] = sum_to_in(g, gout, B);
  return NB_OK;
}

static nb_status bwd_sub(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  if (nb_needs_grad(A)) gin[0] = sum_to_in(g, gout, A);
  /* sum, then negate: a broadcast B (x - mean) then negates its few sums
   * instead of the whole gradient, and -sum(d) == sum(-d) under
   * round-to-nearest (but for the sign of an exact zero) */
  if (nb_needs_grad(B)) gin[1] = nb_neg(g, sum_to_in(g, gout, B));
  return NB_OK;
}

static nb_status bwd_mul(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  if (nb_needs_grad(A)) gin[0] = sum_to_in(g, nb_mul(g, gout, B), A);
  if (nb_needs_grad(B)) gin[1] = sum_to_in(g, nb_mul(g, gout, A), B);
  return NB_OK;
}

static nb_status bwd_div(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  if (nb_needs_grad(A)) gin[0] = sum_to_in(g, nb_div(g, gout, B), A);
  if (nb_needs_grad(B)) gin[1] = sum_to_in(g, nb_neg(g, nb_mul(g, gout, nb_div(g, node, B))), B);
  return NB_OK;
}

static nb_status bwd_pow(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  if (nb_needs_grad(A)) {
    nb_tensor *d = nb_mul(g, B, nb_pow(g, A, nb_sub(g, B, nb_scalar(g, 1.0f))));
    gin[0] = sum_to_in(g, nb_mul(g, gout, d), A);
  }
  if (nb_needs_grad(B)) {
    /* d/db a^b = a^b log a; defined as 0 where a <= 0 (log undefined), as
     * PyTorch does for a == 0. */
    nb_tensor *pos = nb_gt(g, A, nb_scalar(g, 0.0f));
    nb_tensor *safe_a = nb_where(g, pos, A, nb_scalar(g, 1.0f));
    nb_tensor *d = nb_mul(g, node, nb_log(g, safe_a));
    gin[1] = sum_to_in(g, nb_mul(g, gout, d), B);
  }
  return NB_OK;
}

/* Ties split the gradient evenly, as in PyTorch. */
static nb_status bwd_minmax(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *half_tie = nb_mul(g, nb_eq(g, A, B), nb_scalar(g, 0.5f));
  int is_max = node->op == NB_OP_MAXIMUM;
  if (nb_needs_grad(A)) {
    nb_tensor *win = is_max ? nb_gt(g, A, B) : nb_lt(g, A, B);
    gin[0] = sum_to_in(g, nb_mul(g, gout, nb_add(g, win, half_tie)), A);
  }
  if (nb_needs_grad(B)) {
    nb_tensor *win = is_max ? nb_lt(g, A, B) : nb_gt(g, A, B);
    gin[1] = sum_to_in(g, nb_mul(g, gout, nb_add(g, win, half_tie)), B);
  }
  return NB_OK;
}

static nb_status bwd_where(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *c = node->in[0], *zero = nb_scalar(g, 0.0f);
  gin[0] = NULL;
  if (nb_needs_grad(node->in[1])) gin[1] = sum_to_in(g, nb_where(g, c, gout, zero), node->in[1]);
  if (nb_needs_grad(node->in[2])) gin[2] = sum_to_in(g, nb_where(g, c, zero, gout), node->in[2]);
  return NB_OK;
}

static nb_status bwd_unary(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *x = A, *y = node, *d = NULL;
  nb_tensor *one = NULL;
  switch (node->op) {
  case NB_OP_NEG: gin[0] = nb_neg(g, gout); return NB_OK;
  case NB_OP_ABS: d = nb_sign(g, x); break;
  case NB_OP_EXP: d = y; break;
  case NB_OP_LOG: gin[0] = nb_div(g, gout, x); return NB_OK;
  case NB_OP_SQRT: gin[0] = nb_div(g, gout, nb_mul(g, y, nb_scalar(g, 2.0f))); return NB_OK;
  case NB_OP_RSQRT: d = nb_mul(g, nb_mul(g, y, nb_square(g, y)), nb_scalar(g, -0.5f)); break;
  case NB_OP_SQUARE: d = nb_mul(g, x, nb_scalar(g, 2.0f)); break;
  case NB_OP_RECIPROCAL: d = nb_neg(g, nb_square(g, y)); break;
  case NB_OP_TANH:
    one = nb_scalar(g, 1.0f);
    d = nb_sub(g, one, nb_square(g, y));
    break;
  case NB_OP_ERF: /* 2/sqrt(pi) exp(-x^2), from graph ops so it differentiates again */
    d = nb_mul(g, nb_exp(g, nb_neg(g, nb_square(g, x))), nb_scalar(g, 1.12837916709551257f));
    break;
  case NB_OP_SIGMOID:
    one = nb_scalar(g, 1.0f);
    d = nb_mul(g, y, nb_sub(g, one, y));
    break;
  case NB_OP_RELU: d = nb_gt(g, y, nb_scalar(g, 0.0f)); break;
  case NB_OP_LEAKY_RELU:
    d = nb_where(g, nb_gt(g, x, nb_scalar(g, 0.0f)), nb_scalar(g, 1.0f), nb_scalar(g, node->fp[0]));
    break;
  case NB_OP_GELU: {
    nb_tensor *in[2] = {x, gout};
    int64_t ip = node->ip[0];
    gin[0] = nb_node_new(g, NB_OP_GELU_BWD, 2, in, &ip, 1, NULL, 0);
    return NB_OK;
  }
  case NB_OP_SILU: {
    one = nb_scalar(g, 1.0f);
    nb_tensor *s = nb_sigmoid(g, x);
    d = nb_mul(g, s, nb_add(g, one, nb_mul(g, x, nb_sub(g, one, s))));
    break;
  }
  case NB_OP_SOFTPLUS: {
    nb_tensor *bx = nb_mul(g, x, nb_scalar(g, node->fp[0]));
    d = nb_where(g, nb_gt(g, bx, nb_scalar(g, node->fp[1])), nb_scalar(g, 1.0f), nb_sigmoid(g, bx));
    break;
  }
  case NB_OP_CLAMP:
    d = nb_mul(g, nb_ge(g, x, nb_scalar(g, node->fp[0])), nb_le(g, x, nb_scalar(g, node->fp[1])));
    break;
  case NB_OP_DROPOUT: {
    /* Same seed, same step, same element index: the same mask. */
    gin[0] = nb_dropout(g, gout, node->fp[0], (uint64_t)node->ip[0], 1);
    return NB_OK;
  }
  case NB_OP_COPY: gin[0] = gout; return NB_OK;
  case NB_OP_CAST:
    gin[0] = nb_dtype_is_float(x->dtype) && nb_dtype_is_float(node->dtype)
                 ? nb_cast(g, gout, x->dtype)
                 : NULL;
    return NB_OK;
  default:
    return nb_error(NB_ERR_INTERNAL, "no backward rule for %s", nb_op_def_get(node->op)->name);
  }
  gin[0] = nb_mul(g, gout, d);
  return NB_OK;
}

#undef A
#undef B

void nb_register_ops_elementwise(nb_op_def *t) {
  static const struct {
    nb_opcode op;
    const char *name;
  } binary[] = {
      {NB_OP_ADD, "add"},         {NB_OP_SUB, "sub"},
      {NB_OP_MUL, "mul"},         {NB_OP_DIV, "div"},
      {NB_OP_POW, "pow"},         {NB_OP_MAXIMUM, "maximum"},
      {NB_OP_MINIMUM, "minimum"}, {NB_OP_EQ, "eq"},
      {NB_OP_NE, "ne"},           {NB_OP_LT, "lt"},
      {NB_OP_LE, "le"},           {NB_OP_GT, "gt"},
      {NB_OP_GE, "ge"},           {NB_OP_GELU_BWD, "gelu_backward"},
  };
  for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++)
    t[binary[i].op] = (nb_op_def){binary[i].name, NB_FUSE_ELEMWISE, infer_broadcast_n, bwd_none};
  t[NB_OP_ADD].backward = bwd_add;
  t[NB_OP_SUB].backward = bwd_sub;
  t[NB_OP_MUL].backward = bwd_mul;
  t[NB_OP_DIV].backward = bwd_div;
  t[NB_OP_POW].backward = bwd_pow;
  t[NB_OP_MAXIMUM].backward = bwd_minmax;
  t[NB_OP_MINIMUM].backward = bwd_minmax;
  t[NB_OP_GELU_BWD].backward = NULL; /* second derivative of gelu: not yet */
  t[NB_OP_WHERE] = (nb_op_def){"where", NB_FUSE_ELEMWISE, infer_broadcast_n, bwd_where};

  static const struct {
    nb_opcode op;
    const char *name;
  } unary[] = {
      {NB_OP_NEG, "neg"},
      {NB_OP_ABS, "abs"},
      {NB_OP_SIGN, "sign"},
      {NB_OP_EXP, "exp"},
      {NB_OP_LOG, "log"},
      {NB_OP_SQRT, "sqrt"},
      {NB_OP_RSQRT, "rsqrt"},
      {NB_OP_SQUARE, "square"},
      {NB_OP_RECIPROCAL, "reciprocal"},
      {NB_OP_TANH, "tanh"},
      {NB_OP_ERF, "erf"},
      {NB_OP_SIGMOID, "sigmoid"},
      {NB_OP_RELU, "relu"},
      {NB_OP_LEAKY_RELU, "leaky_relu"},
      {NB_OP_GELU, "gelu"},
      {NB_OP_SILU, "silu"},
      {NB_OP_SOFTPLUS, "softplus"},
      {NB_OP_CLAMP, "clamp"},
      {NB_OP_DROPOUT, "dropout"},
  };
  for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++)
    t[unary[i].op] = (nb_op_def){unary[i].name, NB_FUSE_ELEMWISE, infer_unary, bwd_unary};
  t[NB_OP_SIGN].backward = bwd_none;
  t[NB_OP_CLAMP].infer = infer_clamp;
  t[NB_OP_DROPOUT].infer = infer_dropout;
  t[NB_OP_CAST] = (nb_op_def){"cast", NB_FUSE_OPAQUE, infer_same_any_dtype, bwd_unary};
  t[NB_OP_COPY] = (nb_op_def){"copy", NB_FUSE_OPAQUE, infer_same_any_dtype, bwd_unary};
}

/* ---- constructors ------------------------------------------------------------ */

static nb_tensor *binary(nb_graph *g, nb_opcode op, nb_tensor *a, nb_tensor *b) {
  nb_tensor *in[2] = {a, b};
  return nb_node_new(g, op, 2, in, NULL, 0, NULL, 0);
}

static nb_tensor *unary(nb_graph *g, nb_opcode op, nb_tensor *x, const float *fp, int nfp) {
  return nb_node_new(g, op, 1, &x, NULL, 0, fp, nfp);
}

nb_tensor *nb_add(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_ADD, a, b); }
nb_tensor *nb_sub(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_SUB, a, b); }
nb_tensor *nb_mul(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_MUL, a, b); }
nb_tensor *nb_div(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_DIV, a, b); }
nb_tensor *nb_pow(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_POW, a, b); }
nb_tensor *nb_maximum(nb_graph *g, nb_tensor *a, nb_tensor *b) {
  return binary(g, NB_OP_MAXIMUM, a, b);
}
nb_tensor *nb_minimum(nb_graph *g, nb_tensor *a, nb_tensor *b) {
  return binary(g, NB_OP_MINIMUM, a, b);
}
nb_tensor *nb_eq(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_EQ, a, b); }
nb_tensor *nb_ne(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_NE, a, b); }
nb_tensor *nb_lt(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_LT, a, b); }
nb_tensor *nb_le(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_LE, a, b); }
nb_tensor *nb_gt(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_GT, a, b); }
nb_tensor *nb_ge(nb_graph *g, nb_tensor *a, nb_tensor *b) { return binary(g, NB_OP_GE, a, b); }

nb_tensor *nb_where(nb_graph *g, nb_tensor *cond, nb_tensor *a, nb_tensor *b) {
  nb_tensor *in[3] = {cond, a, b};
  return nb_node_new(g, NB_OP_WHERE, 3, in, NULL, 0, NULL, 0);
}

nb_tensor *nb_neg(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_NEG, x, NULL, 0); }
nb_tensor *nb_abs(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_ABS, x, NULL, 0); }
nb_tensor *nb_sign(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_SIGN, x, NULL, 0); }
nb_tensor *nb_exp(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_EXP, x, NULL, 0); }
nb_tensor *nb_log(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_LOG, x, NULL, 0); }
nb_tensor *nb_sqrt(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_SQRT, x, NULL, 0); }
nb_tensor *nb_rsqrt(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_RSQRT, x, NULL, 0); }
nb_tensor *nb_square(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_SQUARE, x, NULL, 0); }
nb_tensor *nb_reciprocal(nb_graph *g, nb_tensor *x) {
  return unary(g, NB_OP_RECIPROCAL, x, NULL, 0);
}
nb_tensor *nb_tanh(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_TANH, x, NULL, 0); }
nb_tensor *nb_erf(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_ERF, x, NULL, 0); }
nb_tensor *nb_sigmoid(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_SIGMOID, x, NULL, 0); }
nb_tensor *nb_relu(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_RELU, x, NULL, 0); }
nb_tensor *nb_leaky_relu(nb_graph *g, nb_tensor *x, float slope) {
  return unary(g, NB_OP_LEAKY_RELU, x, &slope, 1);
}
nb_tensor *nb_gelu(nb_graph *g, nb_tensor *x, int approximate) {
  int64_t ip = approximate ? 1 : 0;
  return nb_node_new(g, NB_OP_GELU, 1, &x, &ip, 1, NULL, 0);
}
nb_tensor *nb_silu(nb_graph *g, nb_tensor *x) { return unary(g, NB_OP_SILU, x, NULL, 0); }
nb_tensor *nb_softplus(nb_graph *g, nb_tensor *x, float beta, float threshold) {
  float fp[2] = {beta, threshold};
  if (g && x && !(beta > 0.0f)) {
    nb_graph_fail(g,
                  nb_error(NB_ERR_INVALID_ARG, "softplus: beta must be > 0, got %g", (double)beta));
    return NULL;
  }
  return unary(g, NB_OP_SOFTPLUS, x, fp, 2);
}
nb_tensor *nb_clamp(nb_graph *g, nb_tensor *x, float lo, float hi) {
  float fp[2] = {lo, hi};
  return unary(g, NB_OP_CLAMP, x, fp, 2);
}
/* The identity shortcuts below (eval-mode dropout, a cast to the same dtype)
 * must not skip the checks nb_node_new makes: without them a NULL graph or
 * another graph's tensor came back as a valid result. */
static int identity_ok(nb_graph *g, const char *op, const nb_tensor *x) {
  if (!g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: graph is NULL", op);
    return 0;
  }
  if (!x) {
    if (nb_graph_status(g) == NB_OK)
      nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: input 0 is NULL", op));
    return 0;
  }
  if (x->graph != g) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: input 0 belongs to a different graph", op));
    return 0;
  }
  return 1;
}

nb_tensor *nb_dropout(nb_graph *g, nb_tensor *x, float p, uint64_t seed, int training) {
  if (!training || p == 0.0f) {
    if (!identity_ok(g, "dropout", x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
      nb_graph_fail(g,
                    nb_error(NB_ERR_INVALID_ARG, "dropout: p = %g is outside [0, 1)", (double)p));
      return NULL;
    }
    return x;
  }
  int64_t ip = (int64_t)seed;
  return nb_node_new(g, NB_OP_DROPOUT, 1, &x, &ip, 1, &p, 1);
}
nb_tensor *nb_cast(nb_graph *g, nb_tensor *x, nb_dtype dt) {
  if (x && x->dtype == dt) return identity_ok(g, "cast", x) ? x : NULL;
  int64_t ip = (int64_t)dt;
  return nb_node_new(g, NB_OP_CAST, 1, &x, &ip, 1, NULL, 0);
}
