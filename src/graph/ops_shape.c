/* Shape ops: zero-copy views (reshape, permute, slice, broadcast) and data
 * movement (copy, concat, pad, index_select, index_add, one_hot). */
#include <string.h>

#include "graph_internal.h"

static void view_of(nb_tensor *t, const nb_tensor *x) {
  t->dtype = x->dtype;
  t->base = x->base ? x->base : (nb_tensor *)x;
  t->offset = x->offset;
}

static nb_status infer_reshape(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  int n = (int)t->ip[0];
  view_of(t, x);
  t->ndim = n;
  for (int i = 0; i < n; i++) t->shape[i] = t->ip[1 + i];
  if (nb_shape_numel(n, t->shape) != nb_tensor_numel(x)) {
    char s0[128], s1[128];
    return nb_error(NB_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s",
                    nb_shape_str(x->ndim, x->shape, s0, sizeof s0), (long long)nb_tensor_numel(x),
                    nb_shape_str(n, t->shape, s1, sizeof s1));
  }
  if (!nb_tensor_is_contiguous(x))
    return nb_error(NB_ERR_INTERNAL, "reshape view of a non-contiguous tensor");
  int64_t s = 1;
  for (int i = n - 1; i >= 0; i--) {
    t->stride[i] = s;
    s *= t->shape[i];
  }
  return NB_OK;
}

static nb_status infer_permute(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  view_of(t, x);
  t->ndim = x->ndim;
  int seen[NB_MAX_DIMS] = {0};
  for (int i = 0; i < x->ndim; i++) {
    int64_t p = t->ip[i];
    if (p < 0 || p >= x->ndim || seen[p])
      return nb_error(NB_ERR_INVALID_ARG, "perm is not a permutation of 0..%d", x->ndim - 1);
    seen[p] = 1;
    t->shape[i] = x->shape[p];
    t->stride[i] = x->stride[p];
  }
  return NB_OK;
}

static nb_status infer_slice(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  int axis = (int)t->ip[0];
  int64_t start = t->ip[1], stop = t->ip[2], step = t->ip[3];
  view_of(t, x);
  t->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) {
    t->shape[i] = x->shape[i];
    t->stride[i] = x->stride[i];
  }
  /* ceil((stop - start) / step) without the overflow of adding step - 1 */
  t->shape[axis] = stop > start ? (stop - start - 1) / step + 1 : 0;
  t->offset += start * x->stride[axis];
  t->stride[axis] = x->stride[axis] * step;
  return NB_OK;
}

static nb_status infer_broadcast(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  int n = (int)t->ip[0];
  view_of(t, x);
  t->ndim = n;
  char s0[128], s1[128];
  for (int i = 0; i < n; i++) t->shape[i] = t->ip[1 + i];
  if (n < x->ndim)
    return nb_error(NB_ERR_SHAPE, "cannot broadcast %s to lower rank %s",
                    nb_shape_str(x->ndim, x->shape, s0, sizeof s0),
                    nb_shape_str(n, t->shape, s1, sizeof s1));
  for (int i = 0; i < n; i++) {
    int j = i - (n - x->ndim);
    if (j < 0) {
      t->stride[i] = 0;
    } else if (x->shape[j] == t->shape[i]) {
      t->stride[i] = x->stride[j];
    } else if (x->shape[j] == 1) {
      t->stride[i] = 0;
    } else {
      return nb_error(NB_ERR_SHAPE, "cannot broadcast %s to %s",
                      nb_shape_str(x->ndim, x->shape, s0, sizeof s0),
                      nb_shape_str(n, t->shape, s1, sizeof s1));
    }
  }
  return NB_OK;
}

static nb_status infer_concat(nb_tensor *t) {
  const nb_tensor *x0 = t->in[0];
  int axis = (int)t->ip[0];
  t->dtype = x0->dtype;
  t->ndim = x0->ndim;
  for (int i = 0; i < x0->ndim; i++) t->shape[i] = x0->shape[i];
  t->shape[axis] = 0;
  for (int k = 0; k < t->n_in; k++) {
    const nb_tensor *x = t->in[k];
    char s0[128], s1[128];
    if (x->dtype != x0->dtype)
      return nb_error(NB_ERR_DTYPE, "input %d has dtype %s, input 0 has %s", k,
                      nb_dtype_name(x->dtype), nb_dtype_name(x0->dtype));
    int ok = x->ndim == x0->ndim;
    for (int i = 0; ok && i < x0->ndim; i++)
      if (i != axis && x->shape[i] != x0->shape[i]) ok = 0;
    if (!ok)
      return nb_error(NB_ERR_SHAPE,
                      "input %d has shape %s, which does not match %s except on axis %d", k,
                      nb_shape_str(x->ndim, x->shape, s0, sizeof s0),
                      nb_shape_str(x0->ndim, x0->shape, s1, sizeof s1), axis);
    t->shape[axis] += x->shape[axis];
  }
  return NB_OK;
}

static nb_status infer_pad(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  t->dtype = x->dtype;
  t->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) {
    if (t->ip[2 * i] < 0 || t->ip[2 * i + 1] < 0) {
      char s[128];
      return nb_error(NB_ERR_INVALID_ARG, "negative padding (%lld, %lld) on axis %d of input %s",
                      (long long)t->ip[2 * i], (long long)t->ip[2 * i + 1], i,
                      nb_shape_str(x->ndim, x->shape, s, sizeof s));
    }
    int64_t room = INT64_MAX - x->shape[i];
    if (t->ip[2 * i] > room || t->ip[2 * i + 1] > room - t->ip[2 * i]) {
      char s[128];
      return nb_error(NB_ERR_SHAPE, "padding (%lld, %lld) on axis %d of input %s overflows int64",
                      (long long)t->ip[2 * i], (long long)t->ip[2 * i + 1], i,
                      nb_shape_str(x->ndim, x->shape, s, sizeof s));
    }
    t->shape[i] = x->shape[i] + t->ip[2 * i] + t->ip[2 * i + 1];
  }
  return NB_OK;
}

static nb_status check_index(const nb_tensor *idx) {
  if (idx->dtype != NB_I32 && idx->dtype != NB_I64)
    return nb_error(NB_ERR_DTYPE, "index has dtype %s, expected i32 or i64",
                    nb_dtype_name(idx->dtype));
  if (idx->ndim != 1) {
    char s[128];
    return nb_error(NB_ERR_SHAPE, "index must be 1-d, got %s",
                    nb_shape_str(idx->ndim, idx->shape, s, sizeof s));
  }
  return NB_OK;
}

static nb_status infer_index_select(nb_tensor *t) {
  const nb_tensor *x = t->in[0], *idx = t->in[1];
  nb_status st = check_index(idx);
  if (st) return st;
  t->dtype = x->dtype;
  t->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) t->shape[i] = x->shape[i];
  t->shape[t->ip[0]] = idx->shape[0];
  return NB_OK;
}

static nb_status infer_index_add(nb_tensor *t) {
  const nb_tensor *x = t->in[0], *idx = t->in[1], *src = t->in[2];
  int axis = (int)t->ip[0];
  nb_status st = check_index(idx);
  if (st) return st;
  if (x->dtype != NB_F32 || src->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "x and src must be f32");
  int ok = src->ndim == x->ndim && src->shape[axis] == idx->shape[0];
  for (int i = 0; ok && i < x->ndim; i++)
    if (i != axis && src->shape[i] != x->shape[i]) ok = 0;
  if (!ok) {
    char s0[128], s1[128];
    return nb_error(NB_ERR_SHAPE, "src %s does not fit x %s with %lld indices on axis %d",
                    nb_shape_str(src->ndim, src->shape, s0, sizeof s0),
                    nb_shape_str(x->ndim, x->shape, s1, sizeof s1), (long long)idx->shape[0], axis);
  }
  t->dtype = NB_F32;
  t->ndim = x->ndim;
  for (int i = 0; i < x->ndim; i++) t->shape[i] = x->shape[i];
  return NB_OK;
}

static nb_status infer_one_hot(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  if (x->dtype != NB_I32 && x->dtype != NB_I64 && x->dtype != NB_U8)
    return nb_error(NB_ERR_DTYPE, "labels have dtype %s, expected an integer dtype",
                    nb_dtype_name(x->dtype));
  if (x->ndim >= NB_MAX_DIMS) return nb_error(NB_ERR_SHAPE, "labels have too many dimensions");
  if (t->ip[0] <= 0) return nb_error(NB_ERR_INVALID_ARG, "num_classes must be > 0");
  t->dtype = NB_F32;
  t->ndim = x->ndim + 1;
  for (int i = 0; i < x->ndim; i++) t->shape[i] = x->shape[i];
  t->shape[x->ndim] = t->ip[0];
  return NB_OK;
}

/* ---- backward rules ------------------------------------------------------------ */

static nb_status bwd_reshape(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  gin[0] = nb_reshape(g, gout, node->in[0]->ndim, node->in[0]->shape);
  return NB_OK;
}

static nb_status bwd_permute(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  int inv[NB_MAX_DIMS];
  for (int i = 0; i < node->ndim; i++) inv[node->ip[i]] = i;
  gin[0] = nb_permute(g, gout, inv);
  return NB_OK;
}

static nb_tensor *zeros_like(nb_graph *g, const nb_tensor *x) {
  return nb_broadcast_to(g, nb_scalar(g, 0.0f), x->ndim, x->shape);
}

static nb_tensor *arange_const(nb_graph *g, int64_t start, int64_t n, int64_t step) {
  int64_t *v = nb_graph_alloc(g, (size_t)(n ? n : 1) * sizeof *v);
  if (!v) return NULL;
  for (int64_t i = 0; i < n; i++) v[i] = start + i * step;
  return nb_constant(g, NB_I64, 1, &n, v);
}

static nb_status bwd_slice(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  const nb_tensor *x = node->in[0];
  int axis = (int)node->ip[0];
  int64_t start = node->ip[1], step = node->ip[3];
  if (step == 1) {
    int64_t pads[2 * NB_MAX_DIMS] = {0};
    pads[2 * axis] = start;
    pads[2 * axis + 1] = x->shape[axis] - start - node->shape[axis];
    gin[0] = nb_pad(g, gout, pads, 0.0f);
  } else {
    nb_tensor *idx = arange_const(g, start, node->shape[axis], step);
    gin[0] = nb_index_add(g, zeros_like(g, x), axis, idx, gout);
  }
  return NB_OK;
}

static nb_status bwd_broadcast(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  gin[0] = nb_sum_to(g, gout, node->in[0]->ndim, node->in[0]->shape);
  return NB_OK;
}

static nb_status bwd_concat(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  int axis = (int)node->ip[0];
  int64_t at = 0;
  for (int k = 0; k < node->n_in; k++) {
    int64_t len = node->in[k]->shape[axis];
    if (nb_needs_grad(node->in[k])) gin[k] = nb_slice(g, gout, axis, at, at + len, 1);
    at += len;
  }
  return NB_OK;
}

static nb_status bwd_pad(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *y = gout;
  for (int i = 0; i < node->ndim; i++)
    if (node->ip[2 * i] || node->ip[2 * i + 1])
      y = nb_slice(g, y, i, node->ip[2 * i], node->ip[2 * i] + node->in[0]->shape[i], 1);
  gin[0] = y;
  return NB_OK;
}

static nb_status bwd_index_select(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  gin[0] = nb_index_add(g, zeros_like(g, node->in[0]), (int)node->ip[0], node->in[1], gout);
  gin[1] = NULL;
  return NB_OK;
}

static nb_status bwd_index_add(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  gin[0] = nb_needs_grad(node->in[0]) ? gout : NULL;
  gin[1] = NULL;
  if (nb_needs_grad(node->in[2])) gin[2] = nb_index_select(g, gout, (int)node->ip[0], node->in[1]);
  return NB_OK;
}

static nb_status bwd_none(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  (void)g, (void)gout;
  for (int i = 0; i < node->n_in; i++) gin[i] = NULL;
  return NB_OK;
}

void nb_register_ops_shape(nb_op_def *t) {
  t[NB_OP_RESHAPE] = (nb_op_def){"reshape", NB_FUSE_VIEW, infer_reshape, bwd_reshape};
  t[NB_OP_PERMUTE] = (nb_op_def){"permute", NB_FUSE_VIEW, infer_permute, bwd_permute};
  t[NB_OP_SLICE] = (nb_op_def){"slice", NB_FUSE_VIEW, infer_slice, bwd_slice};
  t[NB_OP_BROADCAST] = (nb_op_def){"broadcast_to", NB_FUSE_VIEW, infer_broadcast, bwd_broadcast};
  t[NB_OP_CONCAT] = (nb_op_def){"concat", NB_FUSE_OPAQUE, infer_concat, bwd_concat};
  t[NB_OP_PAD] = (nb_op_def){"pad", NB_FUSE_OPAQUE, infer_pad, bwd_pad};
  t[NB_OP_INDEX_SELECT] =
      (nb_op_def){"index_select", NB_FUSE_OPAQUE, infer_index_select, bwd_index_select};
  t[NB_OP_INDEX_ADD] = (nb_op_def){"index_add", NB_FUSE_OPAQUE, infer_index_add, bwd_index_add};
  t[NB_OP_ONE_HOT] = (nb_op_def){"one_hot", NB_FUSE_OPAQUE, infer_one_hot, bwd_none};
}

/* ---- constructors -------------------------------------------------------------- */

static int fail_arg(nb_graph *g, nb_status st) {
  nb_graph_fail(g, st);
  return 0;
}

nb_tensor *nb_contiguous(nb_graph *g, nb_tensor *x) {
  if (!nb_check_inputs(g, NB_OP_COPY, 1, &x)) return NULL;
  if (nb_tensor_is_contiguous(x)) return x;
  return nb_node_new(g, NB_OP_COPY, 1, &x, NULL, 0, NULL, 0);
}

nb_tensor *nb_reshape(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape) {
  if (!nb_check_inputs(g, NB_OP_RESHAPE, 1, &x)) return NULL;
  if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim && !shape)) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "reshape: bad target rank %d or NULL shape", ndim));
    return NULL;
  }
  int64_t ip[1 + NB_MAX_DIMS];
  ip[0] = ndim;
  int infer_at = -1;
  int64_t known = 1;
  for (int i = 0; i < ndim; i++) {
    ip[1 + i] = shape[i];
    if (shape[i] == -1 && infer_at < 0) {
      infer_at = i;
    } else if (shape[i] < 0) {
      fail_arg(g, nb_error(NB_ERR_SHAPE, "reshape: invalid dimension %lld at %d",
                           (long long)shape[i], i));
      return NULL;
    } else if (__builtin_mul_overflow(known, shape[i], &known)) {
      char sx[128];
      fail_arg(g, nb_error(NB_ERR_SHAPE, "reshape: target shape overflows (reshaping %s)",
                           nb_shape_str(x->ndim, x->shape, sx, sizeof sx)));
      return NULL;
    }
  }
  if (infer_at >= 0) ip[1 + infer_at] = known ? nb_tensor_numel(x) / known : 0;
  int same = ndim == x->ndim;
  for (int i = 0; same && i < ndim; i++) same = ip[1 + i] == x->shape[i];
  if (same) return x;
  x = nb_contiguous(g, x);
  return nb_node_new(g, NB_OP_RESHAPE, 1, &x, ip, 1 + ndim, NULL, 0);
}

nb_tensor *nb_permute(nb_graph *g, nb_tensor *x, const int *perm) {
  if (!nb_check_inputs(g, NB_OP_PERMUTE, 1, &x)) return NULL;
  if (!perm && x->ndim) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "permute: perm is NULL"));
    return NULL;
  }
  int64_t ip[NB_MAX_DIMS];
  int identity = 1;
  for (int i = 0; i < x->ndim; i++) {
    ip[i] = perm[i] < 0 ? perm[i] + x->ndim : perm[i];
    identity &= ip[i] == i;
  }
  if (identity) return x;
  return nb_node_new(g, NB_OP_PERMUTE, 1, &x, ip, x->ndim, NULL, 0);
}

nb_tensor *nb_transpose(nb_graph *g, nb_tensor *x, int axis0, int axis1) {
  if (!nb_check_inputs(g, NB_OP_PERMUTE, 1, &x)) return NULL;
  int a = nb_norm_axis(axis0, x->ndim), b = nb_norm_axis(axis1, x->ndim);
  if (a < 0 || b < 0) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "transpose: axes (%d, %d) out of range for rank %d",
                         axis0, axis1, x->ndim));
    return NULL;
  }
  int perm[NB_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) perm[i] = i;
  perm[a] = b;
  perm[b] = a;
  return nb_permute(g, x, perm);
}

nb_tensor *nb_slice(nb_graph *g, nb_tensor *x, int axis, int64_t start, int64_t stop,
                    int64_t step) {
  if (!nb_check_inputs(g, NB_OP_SLICE, 1, &x)) return NULL;
  int ax = nb_norm_axis(axis, x->ndim);
  if (ax < 0 || step <= 0) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG,
                         "slice: axis %d out of range for rank %d, or step %lld <= 0", axis,
                         x->ndim, (long long)step));
    return NULL;
  }
  int64_t n = x->shape[ax];
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  start = start < 0 ? 0 : start > n ? n : start;
  stop = stop < start ? start : stop > n ? n : stop;
  if (start == 0 && stop == n && step == 1) return x;
  int64_t ip[4] = {ax, start, stop, step};
  return nb_node_new(g, NB_OP_SLICE, 1, &x, ip, 4, NULL, 0);
}

nb_tensor *nb_broadcast_to(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape) {
  if (!nb_check_inputs(g, NB_OP_BROADCAST, 1, &x)) return NULL;
  if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim && !shape)) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "broadcast_to: bad rank %d or NULL shape", ndim));
    return NULL;
  }
  int same = ndim == x->ndim;
  for (int i = 0; same && i < ndim; i++) same = shape[i] == x->shape[i];
  if (same) return x;
  int64_t ip[1 + NB_MAX_DIMS];
  ip[0] = ndim;
  for (int i = 0; i < ndim; i++) ip[1 + i] = shape[i];
  return nb_node_new(g, NB_OP_BROADCAST, 1, &x, ip, 1 + ndim, NULL, 0);
}

nb_tensor *nb_sum_to(nb_graph *g, nb_tensor *x, int ndim, const int64_t *shape) {
  if (!x) return NULL;
  int same = ndim == x->ndim;
  for (int i = 0; same && i < ndim; i++) same = shape[i] == x->shape[i];
  if (same) return x;
  int axes[NB_MAX_DIMS], n = 0, lead = x->ndim - ndim;
  for (int i = 0; i < x->ndim; i++)
    if (i < lead || (shape[i - lead] == 1 && x->shape[i] != 1)) axes[n++] = i;
  nb_tensor *s = n ? nb_sum(g, x, n, axes, 1) : x;
  return nb_reshape(g, s, ndim, shape);
}

nb_tensor *nb_concat(nb_graph *g, int n, nb_tensor *const *xs, int axis) {
  if (!nb_check_inputs(g, NB_OP_CONCAT, 0, NULL)) return NULL;
  if (n <= 0 || !xs) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "concat: needs at least one input"));
    return NULL;
  }
  if (!nb_check_inputs(g, NB_OP_CONCAT, n, xs)) return NULL;
  int ax = nb_norm_axis(axis, xs[0]->ndim);
  if (ax < 0) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "concat: axis %d out of range for rank %d", axis,
                         xs[0]->ndim));
    return NULL;
  }
  if (n == 1) return xs[0];
  int64_t ip = ax;
  return nb_node_new(g, NB_OP_CONCAT, n, xs, &ip, 1, NULL, 0);
}

nb_tensor *nb_pad(nb_graph *g, nb_tensor *x, const int64_t *pads, float value) {
  if (!nb_check_inputs(g, NB_OP_PAD, 1, &x)) return NULL;
  if (!pads) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "pad: pads is NULL"));
    return NULL;
  }
  int any = 0;
  for (int i = 0; i < 2 * x->ndim; i++) any |= pads[i] != 0;
  if (!any) return x;
  return nb_node_new(g, NB_OP_PAD, 1, &x, pads, 2 * x->ndim, &value, 1);
}

nb_tensor *nb_index_select(nb_graph *g, nb_tensor *x, int axis, nb_tensor *index) {
  nb_tensor *in[2] = {x, index};
  if (!g || !x) return nb_node_new(g, NB_OP_INDEX_SELECT, 2, in, NULL, 0, NULL, 0);
  int ax = nb_norm_axis(axis, x->ndim);
  if (ax < 0) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "index_select: axis %d out of range for rank %d", axis,
                         x->ndim));
    return NULL;
  }
  int64_t ip = ax;
  return nb_node_new(g, NB_OP_INDEX_SELECT, 2, in, &ip, 1, NULL, 0);
}

nb_tensor *nb_index_add(nb_graph *g, nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src) {
  nb_tensor *in[3] = {x, index, src};
  if (!g || !x) return nb_node_new(g, NB_OP_INDEX_ADD, 3, in, NULL, 0, NULL, 0);
  int ax = nb_norm_axis(axis, x->ndim);
  if (ax < 0) {
    fail_arg(g, nb_error(NB_ERR_INVALID_ARG, "index_add: axis %d out of range for rank %d", axis,
                         x->ndim));
    return NULL;
  }
  int64_t ip = ax;
  return nb_node_new(g, NB_OP_INDEX_ADD, 3, in, &ip, 1, NULL, 0);
}

nb_tensor *nb_one_hot(nb_graph *g, nb_tensor *labels, int64_t num_classes) {
  return nb_node_new(g, NB_OP_ONE_HOT, 1, &labels, &num_classes, 1, NULL, 0);
}

nb_tensor *nb_embedding(nb_graph *g, nb_tensor *weight, nb_tensor *ids) {
  if (!g || !weight || !ids) return nb_index_select(g, weight, 0, ids);
  if (weight->ndim != 2) {
    char s[128];
    fail_arg(g, nb_error(NB_ERR_SHAPE, "embedding: weight must be [V, D], got %s",
                         nb_shape_str(weight->ndim, weight->shape, s, sizeof s)));
    return NULL;
  }
  if (ids->ndim >= NB_MAX_DIMS) {
    fail_arg(g, nb_error(NB_ERR_SHAPE, "embedding: ids have too many dimensions"));
    return NULL;
  }
  int64_t flat = -1;
  nb_tensor *rows = nb_index_select(g, weight, 0, nb_reshape(g, ids, 1, &flat));
  int64_t shape[NB_MAX_DIMS];
  for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
  shape[ids->ndim] = weight->shape[1];
  return nb_reshape(g, rows, ids->ndim + 1, shape);
}
