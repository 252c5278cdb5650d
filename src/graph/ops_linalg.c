/* Batched matrix multiplication with numpy promotion and batch broadcasting. */
#include "graph_internal.h"

static nb_status infer_matmul(nb_tensor *t) {
  const nb_tensor *a = t->in[0], *b = t->in[1];
  char s0[128], s1[128];
  /* half-precision operands (autocast.c) accumulate and return f32 */
  if (a->dtype != b->dtype || (a->dtype != NB_F32 && !nb_dtype_is_half(a->dtype)))
    return nb_error(NB_ERR_DTYPE,
                    "operands have dtypes %s and %s, expected both f32, both bf16 or both f16",
                    nb_dtype_name(a->dtype), nb_dtype_name(b->dtype));
  if (a->ndim < 2 || b->ndim < 2 || a->shape[a->ndim - 1] != b->shape[b->ndim - 2])
    return nb_error(NB_ERR_SHAPE, "shapes %s and %s do not fit [..., m, k] x [..., k, n]",
                    nb_shape_str(a->ndim, a->shape, s0, sizeof s0),
                    nb_shape_str(b->ndim, b->shape, s1, sizeof s1));
  int nbatch;
  int64_t batch[NB_MAX_DIMS];
  if (!nb_broadcast_shapes(a->ndim - 2, a->shape, b->ndim - 2, b->shape, &nbatch, batch))
    return nb_error(NB_ERR_SHAPE, "batch dimensions of %s and %s cannot be broadcast",
                    nb_shape_str(a->ndim, a->shape, s0, sizeof s0),
                    nb_shape_str(b->ndim, b->shape, s1, sizeof s1));
  t->dtype = NB_F32;
  t->ndim = nbatch + 2;
  for (int i = 0; i < nbatch; i++) t->shape[i] = batch[i];
  t->shape[nbatch] = a->shape[a->ndim - 2];
  t->shape[nbatch + 1] = b->shape[b->ndim - 1];
  return NB_OK;
}

/* Gradient of b when b is one matrix shared by every batch of a (a Linear
 * layer's weight applied to [B, T, C]): sum_i a[i]^T gout[i] is one GEMM
 * a2^T gout2 over the batches' rows laid end to end, with a2 = a as
 * [B*T, C] and gout2 = gout as [B*T, D]. The batched form instead writes a
 * [B, C, D] product and sums it, B small GEMMs plus a reduction. Needs a
 * and gout contiguous, so both reshapes are views; NULL (use the batched
 * form) otherwise. */
static nb_tensor *shared_b_grad(nb_graph *g, nb_tensor *node, nb_tensor *a, nb_tensor *b,
                                nb_tensor *gout) {
  int64_t batches = nb_shape_numel(node->ndim - 2, node->shape);
  if (batches < 2 || nb_shape_numel(b->ndim - 2, b->shape) != 1 ||
      nb_shape_numel(a->ndim - 2, a->shape) != batches || !nb_tensor_is_contiguous(a) ||
      !nb_tensor_is_contiguous(gout))
    return NULL;
  int64_t k = a->shape[a->ndim - 1], n = gout->shape[gout->ndim - 1];
  int64_t sa[2] = {batches * a->shape[a->ndim - 2], k}, sg[2] = {sa[0], n};
  nb_tensor *a2 = nb_reshape(g, a, 2, sa), *g2 = nb_reshape(g, gout, 2, sg);
  return nb_reshape(g, nb_matmul(g, nb_transpose(g, a2, -1, -2), g2), b->ndim, b->shape);
}

/* Gradient of b when b = W^T is the transposed view of a contiguous matrix
 * W (a Linear layer's weight: x W^T): a^T gout computed as (gout^T a)^T,
 * the same products, so that W's gradient (this transposed back) is a
 * contiguous [n, k] tensor rather than a transposed view. The optimizer's
 * update then reads it in memory order: the CPU engine walked the view in
 * 16 x 32 blocks, gathering every element, and Adam on the MNIST CNN's fc1
 * weight took twice as long. NULL (the plain form) otherwise. */
static nb_tensor *transposed_b_grad(nb_graph *g, nb_tensor *node, nb_tensor *a, nb_tensor *b,
                                    nb_tensor *gout) {
  if (node->ndim != 2 || a->ndim != 2 || b->ndim != 2 || !b->base || b->shape[1] < 2 ||
      b->stride[0] != 1 || b->stride[1] != b->shape[0])
    return NULL;
  return nb_transpose(g, nb_matmul(g, nb_transpose(g, gout, -1, -2), a), -1, -2);
}

static nb_status bwd_matmul(nb_graph *g, nb_tensor *node, nb_tensor *gout, nb_tensor **gin) {
  nb_tensor *a = node->in[0], *b = node->in[1];
  /* half-precision operands: the gradient products run in their dtype too */
  gout = nb_autocast_grad(g, gout, a);
  if (nb_needs_grad(a))
    gin[0] = nb_sum_to(g, nb_matmul(g, gout, nb_transpose(g, b, -1, -2)), a->ndim, a->shape);
  if (nb_needs_grad(b)) {
    gin[1] = shared_b_grad(g, node, a, b, gout);
    if (!gin[1]) gin[1] = transposed_b_grad(g, node, a, b, gout);
    if (!gin[1])
      gin[1] = nb_sum_to(g, nb_matmul(g, nb_transpose(g, a, -1, -2), gout), b->ndim, b->shape);
  }
  return NB_OK;
}

void nb_register_ops_linalg(nb_op_def *t) {
  t[NB_OP_MATMUL] = (nb_op_def){"matmul", NB_FUSE_OPAQUE, infer_matmul, bwd_matmul};
}

/* BLAS takes each matrix row-major or column-major with a leading stride of
 * at least a full row (column); anything else is copied first. That covers
 * strided slices (no unit stride) and broadcast views, whose stride 0
 * between rows has no BLAS form: without the copy the kernel read past the
 * operand. cpu_matmul.c's view_of() relies on exactly this test. */
static nb_tensor *blas_ready(nb_graph *g, nb_tensor *x) {
  int n = x->ndim;
  int64_t rows = x->shape[n - 2], cols = x->shape[n - 1];
  int64_t rs = x->stride[n - 2], cs = x->stride[n - 1];
  int row_major = (cs == 1 || cols == 1) && (rows == 1 || rs >= (cols > 1 ? cols : 1));
  int col_major = (rs == 1 || rows == 1) && (cols == 1 || cs >= (rows > 1 ? rows : 1));
  if (row_major || col_major) return x;
  return nb_node_new(g, NB_OP_COPY, 1, &x, NULL, 0, NULL, 0);
}

nb_tensor *nb_matmul(nb_graph *g, nb_tensor *a, nb_tensor *b) {
  nb_tensor *in[2] = {a, b};
  if (!g || !a || !b) return nb_node_new(g, NB_OP_MATMUL, 2, in, NULL, 0, NULL, 0);
  if (!nb_check_inputs(g, NB_OP_MATMUL, 2, in)) return NULL;
  a = nb_autocast_operand(g, a); /* an autocast scope: half-precision operands */
  b = nb_autocast_operand(g, b);
  if (!a || !b) return NULL;
  char s0[128], s1[128];
  nb_shape_str(a->ndim, a->shape, s0, sizeof s0);
  nb_shape_str(b->ndim, b->shape, s1, sizeof s1);
  if (a->ndim == 0 || b->ndim == 0) {
    nb_graph_fail(g, nb_error(NB_ERR_SHAPE,
                              "matmul: operands must have at least 1 dimension, got %s and %s", s0,
                              s1));
    return NULL;
  }
  /* numpy promotion: a 1-d a is a row, a 1-d b a column; drop them after. */
  int a_vec = a->ndim == 1, b_vec = b->ndim == 1;
  /* Checked here so that the message shows the caller's shapes, not the
   * promoted [1, k] / [k, 1]. */
  if ((a_vec || b_vec) && a->shape[a->ndim - 1] != b->shape[b_vec ? 0 : b->ndim - 2]) {
    nb_graph_fail(g, nb_error(NB_ERR_SHAPE,
                              "matmul: shapes %s and %s do not fit (inner sizes "
                              "%lld and %lld differ)",
                              s0, s1, (long long)a->shape[a->ndim - 1],
                              (long long)b->shape[b_vec ? 0 : b->ndim - 2]));
    return NULL;
  }
  if (a_vec) {
    int64_t s[2] = {1, a->shape[0]};
    a = nb_reshape(g, a, 2, s);
  }
  if (b_vec) {
    int64_t s[2] = {b->shape[0], 1};
    b = nb_reshape(g, b, 2, s);
  }
  if (!a || !b) return NULL;
  in[0] = blas_ready(g, a);
  in[1] = blas_ready(g, b);
  nb_tensor *y = nb_node_new(g, NB_OP_MATMUL, 2, in, NULL, 0, NULL, 0);
  if (!y || (!a_vec && !b_vec)) return y;
  int64_t shape[NB_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < y->ndim - 2; i++) shape[n++] = y->shape[i];
  if (!a_vec) shape[n++] = y->shape[y->ndim - 2];
  if (!b_vec) shape[n++] = y->shape[y->ndim - 1];
  return nb_reshape(g, y, n, shape);
}
