/* Fused scaled-dot-product attention: y = softmax(q k^T * scale + mask) v.
 *
 * Two opcodes, each with one output (the graph has one output per node):
 *
 * - NB_OP_ATTENTION (q, k, v) -> P [B, H, Tq, Dv + 1]. P[..., :Dv] is y and
 *   P[..., Dv] is the logsumexp of each score row. The backward needs that
 *   logsumexp to recompute the probabilities without storing the Tq x Tk
 *   matrix; packing it next to y lets one kernel write both in the same
 *   pass, and nb_attention hands out y as a slice view of P, so no extra op
 *   runs. The alternative, a second op computing the logsumexp, would redo
 *   every q k^T product. The price is a row stride of Dv + 1 in y, which the
 *   usual consumer (the head merge: permute + reshape) copies anyway.
 * - NB_OP_ATTENTION_BWD (q, k, v, P, dP) -> flat [dq | dk | dv], one kernel
 *   for all three gradients since they share every recomputed probability;
 *   the backward rule hands out slices of it reshaped to the input shapes.
 *   dP[..., Dv] (a gradient reaching the logsumexp column) is honoured, so
 *   the op is differentiable as a whole, not only through y.
 *
 * Causal masking is top-left aligned, like PyTorch's is_causal: query i sees
 * keys j <= i. */
#include <math.h>

#include "graph_internal.h"

static nb_status shape_error(const nb_tensor *q, const nb_tensor *k, const nb_tensor *v,
                             const char *why) {
  char s0[128], s1[128], s2[128];
  return nb_error(NB_ERR_SHAPE,
                  "%s: expected q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv], got q %s, "
                  "k %s, v %s",
                  why, nb_shape_str(q->ndim, q->shape, s0, sizeof s0),
                  nb_shape_str(k->ndim, k->shape, s1, sizeof s1),
                  nb_shape_str(v->ndim, v->shape, s2, sizeof s2));
}

static nb_status check_qkv(const nb_tensor *q, const nb_tensor *k, const nb_tensor *v) {
  const nb_tensor *t[3] = {q, k, v};
  for (int i = 0; i < 3; i++)
    if (t[i]->dtype != NB_F32)
      return nb_error(NB_ERR_DTYPE, "%c has dtype %s, expected f32", "qkv"[i],
                      nb_dtype_name(t[i]->dtype));
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) return shape_error(q, k, v, "rank is not 4");
  if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] ||
      v->shape[1] != q->shape[1])
    return shape_error(q, k, v, "batch or head counts differ");
  if (k->shape[3] != q->shape[3]) return shape_error(q, k, v, "q and k head sizes differ");
  if (v->shape[2] != k->shape[2]) return shape_error(q, k, v, "k and v lengths differ");
  return NB_OK;
}

static nb_status infer_attention(nb_tensor *t) {
  const nb_tensor *q = t->in[0], *k = t->in[1], *v = t->in[2];
  nb_status st = check_qkv(q, k, v);
  if (st) return st;
  if (!isfinite(t->fp[0]))
    return nb_error(NB_ERR_INVALID_ARG, "scale %g is not finite", (double)t->fp[0]);
  t->dtype = NB_F32;
  t->ndim = 4;
  for (int i = 0; i < 3; i++) t->shape[i] = q->shape[i];
  t->shape[3] = v->shape[3] + 1;
  return NB_OK;
}

static nb_status infer_attention_bwd(nb_tensor *t) {
  const nb_tensor *q = t->in[0], *k = t->in[1], *v = t->in[2], *p = t->in[3], *dp = t->in[4];
  nb_status st = check_qkv(q, k, v);
  if (st) return st;
  int same = p->ndim == 4 && dp->ndim == 4 && p->dtype == NB_F32 && dp->dtype == NB_F32;
  for (int i = 0; same && i < 4; i++) {
    int64_t want = i < 3 ? q->shape[i] : v->shape[3] + 1;
    same = p->shape[i] == want && dp->shape[i] == want;
  }
  if (!same) {
    char s0[128], s1[128];
    return nb_error(NB_ERR_SHAPE, "forward result %s or its gradient %s does not match q, k, v",
                    nb_shape_str(p->ndim, p->shape, s0, sizeof s0),
                    nb_shape_str(dp->ndim, dp->shape, s1, sizeof s1));
  }
  t->dtype = NB_F32;
  t->ndim = 1;
  t->shape[0] =
      nb_shape_numel(4, q->shape) + nb_shape_numel(4, k->shape) + nb_shape_numel(4, v->shape);
  return NB_OK;
}

/* Part [start, start + numel(like)) of the flat gradient, shaped like `like`. */
static nb_tensor *grad_part(nb_graph *g, nb_tensor *flat, int64_t start, const nb_tensor *like) {
  int64_t n = nb_shape_numel(like->ndim, like->shape);
  return nb_reshape(g, nb_slice(g, flat, 0, start, start + n, 1), like->ndim, like->shape);
}

static nb_status bwd_attention(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
  nb_tensor *in[5] = {q, k, v, node, nb_contiguous(g, gout)};
  nb_tensor *flat = nb_node_new(g, NB_OP_ATTENTION_BWD, 5, in, node->ip, 1, node->fp, 1);
  if (!flat) return nb_graph_status(g) ? nb_graph_status(g) : NB_ERR_INTERNAL;
  int64_t nq = nb_shape_numel(4, q->shape), nk = nb_shape_numel(4, k->shape);
  gin[0] = grad_part(g, flat, 0, q);
  gin[1] = grad_part(g, flat, nq, k);
  gin[2] = grad_part(g, flat, nq + nk, v);
  return NB_OK;
}

void nb_register_ops_attention(nb_op_def *t) {
  t[NB_OP_ATTENTION] = (nb_op_def){"attention", NB_FUSE_OPAQUE, infer_attention, bwd_attention};
  /* second-order gradients are not needed by any optimiser we ship */
  t[NB_OP_ATTENTION_BWD] =
      (nb_op_def){"attention_backward", NB_FUSE_OPAQUE, infer_attention_bwd, NULL};
}

nb_tensor *nb_attention(nb_graph *g, nb_tensor *q, nb_tensor *k, nb_tensor *v, int causal,
                        float scale) {
  nb_tensor *in[3] = {q, k, v};
  if (!nb_check_inputs(g, NB_OP_ATTENTION, 3, in)) return NULL;
  if (scale == 0.0f && q->ndim >= 1 && q->shape[q->ndim - 1] > 0)
    scale = 1.0f / sqrtf((float)q->shape[q->ndim - 1]);
  /* the kernels walk rows with unit stride; a copy here is what a strided
   * kernel would pay in cache misses anyway */
  for (int i = 0; i < 3; i++) in[i] = nb_contiguous(g, in[i]);
  int64_t ip = causal != 0;
  nb_tensor *p = nb_node_new(g, NB_OP_ATTENTION, 3, in, &ip, 1, &scale, 1);
  if (!p) return NULL;
  return nb_slice(g, p, 3, 0, p->shape[3] - 1, 1);
}
