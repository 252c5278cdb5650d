/* Ops for decoding with a KV cache: positions known only at run time.
 *
 * A decode plan is compiled once and run for every new token, so the token's
 * position cannot be a build-time parameter: it is a tensor `pos` (one i32
 * or i64 element, usually an nb_input) read by the kernels when they run.
 * Three ops take it:
 *
 * - NB_OP_WRITE_AT (var, value, pos): writes `value` into variable `var` at
 *   rows [pos, pos + n) of one axis, in place, when the launch runs (not at
 *   the end of the step like nb_assign). Its result is `var` after the
 *   write, stored in the variable itself (the plan resolves its storage to
 *   the variable's, as for an assign), so a consumer that reads the result
 *   is ordered after the write by the ordinary data dependency.
 * - NB_OP_SLICE_AT (x, pos): a copy of rows [pos, pos + len) of one axis,
 *   e.g. the learned positional embeddings of the new tokens.
 * - NB_OP_ATTENTION_CACHED (q, k_cache, v_cache, pos): attention of Tq new
 *   queries at positions pos.. over the cached keys 0..pos + i, with the
 *   same packed [..., Dv + 1] result (y and the row logsumexp) as
 *   NB_OP_ATTENTION so both share one row kernel.
 *
 * None has a backward rule: they exist for inference, and a write into a
 * variable in the middle of a step has no gradient that training needs.
 * Positions out of range are run-time errors naming the position and the
 * capacity, since nothing is known about `pos` while building. */
#include <math.h>

#include "graph_internal.h"

static nb_status check_pos(const nb_tensor *pos) {
  if ((pos->dtype != NB_I32 && pos->dtype != NB_I64) ||
      nb_shape_numel(pos->ndim, pos->shape) != 1) {
    char s[128];
    return nb_error(NB_ERR_SHAPE, "pos must hold one i32 or i64 element, got %s %s",
                    nb_dtype_name(pos->dtype), nb_shape_str(pos->ndim, pos->shape, s, sizeof s));
  }
  return NB_OK;
}

static void copy_shape(nb_tensor *t, const nb_tensor *from) {
  t->dtype = from->dtype;
  t->ndim = from->ndim;
  for (int i = 0; i < from->ndim; i++) t->shape[i] = from->shape[i];
}

static nb_status infer_write_at(nb_tensor *t) {
  const nb_tensor *var = t->in[0], *val = t->in[1];
  nb_status st = check_pos(t->in[2]);
  if (st) return st;
  if (var->op != NB_OP_VARIABLE)
    return nb_error(NB_ERR_INVALID_ARG, "target must be a variable, got a %s node",
                    nb_op_def_get(var->op)->name);
  int axis = (int)t->ip[0];
  int ok = axis >= 0 && axis < var->ndim && var->dtype == val->dtype && var->ndim == val->ndim;
  for (int i = 0; ok && i < var->ndim; i++)
    ok = i == axis ? val->shape[i] <= var->shape[i] : val->shape[i] == var->shape[i];
  if (!ok) {
    char s0[128], s1[128];
    return nb_error(NB_ERR_SHAPE,
                    "value %s %s does not fit variable '%s' %s %s along axis %d (the other axes "
                    "must match)",
                    nb_dtype_name(val->dtype), nb_shape_str(val->ndim, val->shape, s0, sizeof s0),
                    var->name, nb_dtype_name(var->dtype),
                    nb_shape_str(var->ndim, var->shape, s1, sizeof s1), axis);
  }
  copy_shape(t, var);
  return NB_OK;
}

static nb_status infer_slice_at(nb_tensor *t) {
  const nb_tensor *x = t->in[0];
  nb_status st = check_pos(t->in[1]);
  if (st) return st;
  int axis = (int)t->ip[0];
  int64_t len = t->ip[1];
  if (axis < 0 || axis >= x->ndim || len < 0 || len > x->shape[axis]) {
    char s[128];
    return nb_error(NB_ERR_SHAPE, "cannot take %lld rows of axis %d of %s", (long long)len, axis,
                    nb_shape_str(x->ndim, x->shape, s, sizeof s));
  }
  copy_shape(t, x);
  t->shape[axis] = len;
  return NB_OK;
}

static nb_status infer_attention_cached(nb_tensor *t) {
  const nb_tensor *q = t->in[0], *k = t->in[1], *v = t->in[2];
  nb_status st = check_pos(t->in[3]);
  if (st) return st;
  char s0[128], s1[128], s2[128];
  int ok = q->dtype == NB_F32 && k->dtype == NB_F32 && v->dtype == NB_F32 && q->ndim == 4 &&
           k->ndim == 4 && v->ndim == 4;
  for (int i = 0; ok && i < 2; i++) ok = k->shape[i] == q->shape[i] && v->shape[i] == q->shape[i];
  ok = ok && k->shape[3] == q->shape[3] && v->shape[2] == k->shape[2] && q->shape[2] <= k->shape[2];
  if (!ok)
    return nb_error(NB_ERR_SHAPE,
                    "expected f32 q [B, H, Tq, D], k_cache [B, H, T, D], v_cache [B, H, T, Dv] "
                    "with Tq <= T, got q %s, k_cache %s, v_cache %s",
                    nb_shape_str(q->ndim, q->shape, s0, sizeof s0),
                    nb_shape_str(k->ndim, k->shape, s1, sizeof s1),
                    nb_shape_str(v->ndim, v->shape, s2, sizeof s2));
  if (!isfinite(t->fp[0]))
    return nb_error(NB_ERR_INVALID_ARG, "scale %g is not finite", (double)t->fp[0]);
  t->dtype = NB_F32;
  t->ndim = 4;
  for (int i = 0; i < 3; i++) t->shape[i] = q->shape[i];
  t->shape[3] = v->shape[3] + 1;
  return NB_OK;
}

void nb_register_ops_decode(nb_op_def *t) {
  t[NB_OP_WRITE_AT] = (nb_op_def){"write_at", NB_FUSE_OPAQUE, infer_write_at, NULL};
  t[NB_OP_SLICE_AT] = (nb_op_def){"slice_at", NB_FUSE_OPAQUE, infer_slice_at, NULL};
  t[NB_OP_ATTENTION_CACHED] =
      (nb_op_def){"attention_cached", NB_FUSE_OPAQUE, infer_attention_cached, NULL};
}

nb_tensor *nb_write_at(nb_graph *g, nb_tensor *var, nb_tensor *value, int axis, nb_tensor *pos) {
  nb_tensor *in[3] = {var, value, pos};
  if (!nb_check_inputs(g, NB_OP_WRITE_AT, 3, in)) return NULL;
  int64_t ip = nb_norm_axis(axis, var->ndim);
  /* the kernel copies whole rows; a strided value is made dense once here */
  in[1] = nb_contiguous(g, value);
  return nb_node_new(g, NB_OP_WRITE_AT, 3, in, &ip, 1, NULL, 0);
}

nb_tensor *nb_slice_at(nb_graph *g, nb_tensor *x, int axis, nb_tensor *pos, int64_t len) {
  nb_tensor *in[2] = {x, pos};
  if (!nb_check_inputs(g, NB_OP_SLICE_AT, 2, in)) return NULL;
  int64_t ip[2] = {nb_norm_axis(axis, x->ndim), len};
  in[0] = nb_contiguous(g, x);
  return nb_node_new(g, NB_OP_SLICE_AT, 2, in, ip, 2, NULL, 0);
}

nb_tensor *nb_attention_cached(nb_graph *g, nb_tensor *q, nb_tensor *k_cache, nb_tensor *v_cache,
                               nb_tensor *pos, float scale) {
  nb_tensor *in[4] = {q, k_cache, v_cache, pos};
  if (!nb_check_inputs(g, NB_OP_ATTENTION_CACHED, 4, in)) return NULL;
  if (scale == 0.0f && q->ndim >= 1 && q->shape[q->ndim - 1] > 0)
    scale = 1.0f / sqrtf((float)q->shape[q->ndim - 1]);
  /* the row kernel walks keys and values with unit stride */
  for (int i = 0; i < 3; i++) in[i] = nb_contiguous(g, in[i]);
  nb_tensor *p = nb_node_new(g, NB_OP_ATTENTION_CACHED, 4, in, NULL, 0, &scale, 1);
  if (!p) return NULL;
  return nb_slice(g, p, 3, 0, p->shape[3] - 1, 1);
}
