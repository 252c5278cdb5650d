/* Batched matmul through CBLAS. Each operand matrix is row- or column-major
 * (the graph guarantees it), so transposed views cost no copy. */
#include <cblas.h>

#include "cpu_internal.h"

typedef struct {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
} blas_view;

/* The graph (ops_linalg.c blas_ready) copies any matrix that is neither
 * row-major nor column-major with a leading stride of a full row (column),
 * so one of the two forms below always holds. Take row-major only when its
 * leading stride is valid: a column vector [k, 1] may be either. */
static blas_view view_of(const nb_tensor *x) {
  int n = x->ndim;
  int64_t rs = x->stride[n - 2], cs = x->stride[n - 1];
  int64_t rows = x->shape[n - 2], cols = x->shape[n - 1];
  blas_view v;
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= (cols > 1 ? cols : 1))) {
    v.trans = CblasNoTrans;
    v.ld = rows == 1 ? (cols > 1 ? cols : 1) : rs;
  } else {
    v.trans = CblasTrans;
    v.ld = cols == 1 ? (rows > 1 ? rows : 1) : cs;
  }
  return v;
}

/* Offset of batch b of x given the broadcast batch shape of the output. */
static int64_t batch_offset(const nb_tensor *x, const nb_tensor *out, int64_t b) {
  int nb = out->ndim - 2, xb = x->ndim - 2;
  int64_t off = 0;
  for (int d = nb - 1; d >= 0; d--) {
    int64_t n = out->shape[d], i = n ? b % n : 0;
    b = n ? b / n : 0;
    int j = d - (nb - xb);
    if (j >= 0 && x->shape[j] != 1) off += i * x->stride[j];
  }
  return off;
}

static nb_status matmul(const nb_kernel_call *c) {
  const nb_tensor *y = c->node, *a = y->in[0], *b = y->in[1];
  int64_t m = y->shape[y->ndim - 2], n = y->shape[y->ndim - 1], k = a->shape[a->ndim - 1];
  int64_t batches = nb_shape_numel(y->ndim - 2, y->shape);
  const float *A = c->in[0], *B = c->in[1];
  float *Y = c->out;
  if (m == 0 || n == 0 || batches == 0) return NB_OK;
  blas_view va = view_of(a), vb = view_of(b);
  for (int64_t i = 0; i < batches; i++) {
    float *yi = Y + i * m * n;
    if (k == 0) {
      for (int64_t j = 0; j < m * n; j++) yi[j] = 0.0f;
      continue;
    }
    if (m == 1) {
      /* one row (batch-1 inference through a Linear layer): a GEMV, which
       * OpenBLAS runs several times faster than a 1-row GEMM */
      const float *ai = A + batch_offset(a, y, i), *bi = B + batch_offset(b, y, i);
      int inca = va.trans == CblasNoTrans ? 1 : (int)va.ld;
      if (vb.trans == CblasNoTrans)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)k, (int)n, 1.0f, bi, (int)vb.ld, ai, inca, 0.0f,
                    yi, 1);
      else
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)k, 1.0f, bi, (int)vb.ld, ai, inca,
                    0.0f, yi, 1);
      continue;
    }
    cblas_sgemm(CblasRowMajor, va.trans, vb.trans, (int)m, (int)n, (int)k, 1.0f,
                A + batch_offset(a, y, i), (int)va.ld, B + batch_offset(b, y, i), (int)vb.ld, 0.0f,
                yi, (int)n);
  }
  return NB_OK;
}

/* A Linear layer's bias and activation run as an epilogue over the result,
 * still in cache at Linear sizes. */
static nb_status run_matmul(const nb_kernel_call *c) {
  nb_status st = matmul(c);
  return st || !c->group ? st : nb_cpu_epilogue_all(c);
}

void nb_cpu_register_matmul(nb_cpu_kernel_entry *t) {
  t[NB_OP_MATMUL] = (nb_cpu_kernel_entry){run_matmul, NULL, 1};
}
