/* Reductions over any set of axes: sum, max, min, argmax, and the composites
 * mean, var and logsumexp built from them. */
#include <math.h>

#include "graph_internal.h"

static nb_status infer_reduce(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  int64_t mask = t->ip[0];
  int keep = (int)t->ip[1];
  if (x->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "input has dtype %s, reductions compute in f32 (use nb_cast)",
                    nb_dtype_name(x->dtype));
  int n = 0;
  for (int i = 0; i < x->ndim; i++) {
    int reduced = (int)((mask >> i) & 1);
    if (reduced && x->shape[i] == 0 && t->op != NB_OP_SUM)
      return nb_error(NB_ERR_SHAPE, "cannot reduce over axis %d of size 0 (no identity)", i);
    if (!reduced)
      t->shape[n++] = x->shape[i];
    else if (keep)
      t->shape[n++] = 1;
  }
  t->ndim = n;
  t->dtype = t->op == NB_OP_ARGMAX ? NB_I64 : NB_F32;
  return NB_OK;
}

/* Shape of the node as if keepdim were set, so it broadcasts against x. */
static nb_tensor *keepdim_view(nb_graph *g, const nb_tensor *node, nb_tensor *y) {
  const nb_tensor *x = node->in[0];
  int64_t shape[NB_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) shape[i] = (node->ip[0] >> i) & 1 ? 1 : x->shape[i];
  return nb_reshape(g, y, x->ndim, shape);
}

static nb_status bwd_sum(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  const nb_tensor *x = node->in[0];
  gin[0] = nb_broadcast_to(g, keepdim_view(g, node, gout), x->ndim, x->shape);
  return NB_OK;
}

/* The gradient goes to every element equal to the extremum, split evenly
 * among ties (like torch.amax). */
static nb_status bwd_extremum(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *x = node->in[0];
  int axes[NB_MAX_DIMS], n = 0;
  for (int i = 0; i < x->ndim; i++)
    if ((node->ip[0] >> i) & 1) axes[n++] = i;
  nb_tensor *mask = nb_eq(g, x, keepdim_view(g, node, node));
  nb_tensor *count = nb_sum(g, mask, n, axes, 1);
  nb_tensor *share = nb_div(g, keepdim_view(g, node, gout), count);
  gin[0] = nb_mul(g, mask, share);
  return NB_OK;
}

static nb_status bwd_none(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  (void)g, (void)node, (void)gout;
  gin[0] = NULL;
  return NB_OK;
}

static nb_status infer_argmax(nb_tensor *t) {
  int64_t axis = t->ip[0];
  t->ip[0] = (int64_t)1 << axis;
  nb_status st = infer_reduce(t);
  t->ip[0] = axis;
  return st;
}

void nb_register_ops_reduce(nb_op_def *t) {
  t[NB_OP_SUM] = (nb_op_def){"sum", NB_FUSE_REDUCE, infer_reduce, bwd_sum};
  t[NB_OP_MAX] = (nb_op_def){"max", NB_FUSE_REDUCE, infer_reduce, bwd_extremum};
  t[NB_OP_MIN] = (nb_op_def){"min", NB_FUSE_REDUCE, infer_reduce, bwd_extremum};
  t[NB_OP_ARGMAX] = (nb_op_def){"argmax", NB_FUSE_REDUCE, infer_argmax, bwd_none};
}

/* ---- constructors ------------------------------------------------------------ */

/* Checks the input and axis list of reduction `op` and turns the axes into a
 * bitmask; naxes == 0 means all axes. Returns -1 after recording an error in
 * g. The composites (mean, var, logsumexp) call it first with a label such
 * as "mean: sum", so an error names both the call and the failing part. */
static int64_t axes_mask(nb_graph *g, const char *op, const nb_tensor *x, int naxes,
                         const int *axes) {
  char s[128];
  if (!g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: graph is NULL", op);
    return -1;
  }
  if (!x) {
    if (nb_graph_status(g) == NB_OK)
      nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: input is NULL", op));
    return -1;
  }
  nb_shape_str(x->ndim, x->shape, s, sizeof s);
  if (x->dtype != NB_F32) {
    nb_graph_fail(g, nb_error(NB_ERR_DTYPE,
                              "%s: input %s has dtype %s, reductions compute in f32 (use nb_cast)",
                              op, s, nb_dtype_name(x->dtype)));
    return -1;
  }
  if (naxes == 0) return x->ndim ? ((int64_t)1 << x->ndim) - 1 : 0;
  if (naxes < 0 || !axes) {
    nb_graph_fail(g, nb_error(NB_ERR_INVALID_ARG, "%s: bad axis list (naxes = %d, axes %s)", op,
                              naxes, axes ? "given" : "NULL"));
    return -1;
  }
  int64_t mask = 0;
  for (int i = 0; i < naxes; i++) {
    int a = nb_norm_axis(axes[i], x->ndim);
    if (a < 0) {
      nb_graph_fail(g,
                    nb_error(NB_ERR_INVALID_ARG, "%s: axis %d is out of range for rank %d input %s",
                             op, axes[i], x->ndim, s));
      return -1;
    }
    if ((mask >> a) & 1) {
      nb_graph_fail(
          g, nb_error(NB_ERR_INVALID_ARG, "%s: axis %d is repeated (input %s)", op, axes[i], s));
      return -1;
    }
    mask |= (int64_t)1 << a;
  }
  return mask;
}

static nb_tensor *reduce(nb_graph *g, nb_opcode op, nb_tensor *x, int naxes, const int *axes,
                         int keepdim) {
  int64_t ip[2] = {axes_mask(g, nb_op_def_get(op)->name, x, naxes, axes), keepdim ? 1 : 0};
  if (ip[0] < 0) return NULL;
  return nb_node_new(g, op, 1, &x, ip, 2, NULL, 0);
}

nb_tensor *nb_sum(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim) {
  return reduce(g, NB_OP_SUM, x, naxes, axes, keepdim);
}
nb_tensor *nb_max(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim) {
  return reduce(g, NB_OP_MAX, x, naxes, axes, keepdim);
}
nb_tensor *nb_min(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim) {
  return reduce(g, NB_OP_MIN, x, naxes, axes, keepdim);
}

/* Number of elements folded into each output element. */
static int64_t reduced_count(const nb_tensor *x, int64_t mask) {
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++)
    if ((mask >> i) & 1) n *= x->shape[i];
  return n;
}

nb_tensor *nb_mean(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim) {
  if (axes_mask(g, "mean: sum", x, naxes, axes) < 0) return NULL;
  nb_tensor *s = nb_sum(g, x, naxes, axes, keepdim);
  if (!s) return NULL;
  int64_t n = reduced_count(x, s->ip[0]);
  return nb_mul(g, s, nb_scalar(g, n ? 1.0f / (float)n : NAN));
}

nb_tensor *nb_var(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int correction,
                  int keepdim) {
  if (axes_mask(g, "var: sum", x, naxes, axes) < 0) return NULL;
  nb_tensor *m = nb_mean(g, x, naxes, axes, 1);
  if (!m) return NULL;
  nb_tensor *s = nb_sum(g, nb_square(g, nb_sub(g, x, m)), naxes, axes, keepdim);
  if (!s) return NULL;
  int64_t n = reduced_count(x, s->ip[0]) - correction;
  /* Like PyTorch, the divisor is max(0, n): 0/0 = nan, s/0 = inf, rather
   * than an error. A negative divisor would turn 0 into -0 for an empty
   * axis instead of nan. */
  if (n < 0) n = 0;
  return nb_mul(g, s, nb_scalar(g, 1.0f / (float)n));
}

nb_tensor *nb_logsumexp(nb_graph *g, nb_tensor *x, int naxes, const int *axes, int keepdim) {
  if (axes_mask(g, "logsumexp: max", x, naxes, axes) < 0) return NULL;
  /* Shift by the max for stability; the shift's gradient cancels exactly. */
  nb_tensor *m = nb_max(g, x, naxes, axes, 1);
  if (!m) return NULL;
  int64_t mask = m->ip[0];
  /* An infinite max (a row of -inf, as in fully masked attention) would
   * give inf - inf = nan; shift by 0 there instead, so the result is -inf
   * (or +inf) like PyTorch. m - m is 0 exactly when m is finite. */
  nb_tensor *zero = nb_scalar(g, 0.0f);
  nb_tensor *finite = nb_eq(g, nb_sub(g, m, m), zero);
  nb_tensor *shift = nb_where(g, finite, m, zero);
  nb_tensor *s = nb_sum(g, nb_exp(g, nb_sub(g, x, shift)), naxes, axes, 1);
  nb_tensor *lse = nb_add(g, nb_log(g, s), shift);
  if (!lse || keepdim) return lse;
  int64_t shape[NB_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < x->ndim; i++)
    if (!((mask >> i) & 1)) shape[n++] = x->shape[i];
  return nb_reshape(g, lse, n, shape);
}

nb_tensor *nb_argmax(nb_graph *g, nb_tensor *x, int axis, int keepdim) {
  if (axes_mask(g, "argmax", x, 1, &axis) < 0) return NULL;
  int64_t ip[2] = {nb_norm_axis(axis, x->ndim), keepdim ? 1 : 0};
  return nb_node_new(g, NB_OP_ARGMAX, 1, &x, ip, 2, NULL, 0);
}
