/* Batched matmul through CBLAS. Each operand matrix is row- or column-major
 * (the graph guarantees it), so transposed views cost no copy. */
#include <cblas.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_num_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

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

/* 1 if the batches of y = a b can run as one GEMM of batches * m rows: b is
 * the same matrix for every batch (a Linear layer's weight) and a's rows
 * follow each other at one stride across batches, as y's do. One large
 * GEMM packs b once instead of once per batch and gives BLAS longer panels. */
static int flattens(const nb_tensor *y, const nb_tensor *a, const nb_tensor *b, blas_view va,
                    int64_t m, int64_t batches) {
  if (batches < 2 || va.trans != CblasNoTrans || m < 1) return 0;
  for (int64_t i = 0; i < batches; i++)
    if (batch_offset(b, y, i) != 0 || batch_offset(a, y, i) != i * m * va.ld) return 0;
  return 1;
}

typedef struct {
  const nb_kernel_call *c;
  const float *A, *B;
  float *Y;
  blas_view va, vb;
  int64_t m, n, k, batches;
  int flat; /* batches folded into m: A and B are one matrix each */
} mm_job;

/* Rows [r0, r1) of batch i of the product. */
static void gemm_rows(const mm_job *J, int64_t i, int64_t r0, int64_t r1) {
  const nb_tensor *y = J->c->node;
  float *yi = J->Y + (i * J->m + r0) * J->n;
  if (J->k == 0) {
    memset(yi, 0, (size_t)((r1 - r0) * J->n) * sizeof *yi);
    return;
  }
  const float *ai = J->A + (J->flat ? 0 : batch_offset(y->in[0], y, i));
  const float *bi = J->B + (J->flat ? 0 : batch_offset(y->in[1], y, i));
  ai += J->va.trans == CblasNoTrans ? r0 * J->va.ld : r0;
  int lda = (int)J->va.ld, ldb = (int)J->vb.ld, n = (int)J->n, k = (int)J->k;
  if (J->m == 1) {
    /* one row (batch-1 inference through a Linear layer): a GEMV, which
     * OpenBLAS runs several times faster than a 1-row GEMM */
    int inca = J->va.trans == CblasNoTrans ? 1 : lda;
    if (J->vb.trans == CblasNoTrans)
      cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, bi, ldb, ai, inca, 0.0f, yi, 1);
    else
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, bi, ldb, ai, inca, 0.0f, yi, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, J->va.trans, J->vb.trans, (int)(r1 - r0), n, k, 1.0f, ai, lda, bi, ldb,
              0.0f, yi, n);
}

/* Output rows [R0, R1) of the batches laid end to end, batch by batch, each
 * piece followed by the epilogue while it is in cache. */
static int run_rows(const mm_job *J, int64_t R0, int64_t R1) {
  int failed = 0;
  for (int64_t R = R0; R < R1;) {
    int64_t i = R / J->m, r0 = R - i * J->m;
    int64_t r1 = R1 - i * J->m < J->m ? R1 - i * J->m : J->m;
    gemm_rows(J, i, r0, r1);
    if (J->c->group && nb_cpu_epilogue(J->c, (i * J->m + r0) * J->n, (r1 - r0) * J->n)) failed = 1;
    R = i * J->m + r1;
  }
  return failed;
}

/* Below this many multiply-adds one thread runs the whole product. */
#define PAR_MIN ((int64_t)1 << 18)

/* The threads split the output rows evenly, each running single-threaded
 * GEMMs on its share (OpenBLAS's OpenMP build stays on one thread inside a
 * parallel region). OpenBLAS's own threading splits small-K products badly:
 * 2048 x 512 x 128 ran at 73-131 GFLOP/s on 2 cores against 125-131 split
 * this way, and it runs a batched product one small GEMM at a time. */
static nb_status run_matmul(const nb_kernel_call *c) {
  const nb_tensor *y = c->node, *a = y->in[0], *b = y->in[1];
  mm_job J = {.c = c, .A = c->in[0], .B = c->in[1], .Y = c->out};
  J.m = y->shape[y->ndim - 2];
  J.n = y->shape[y->ndim - 1];
  J.k = a->shape[a->ndim - 1];
  J.batches = nb_shape_numel(y->ndim - 2, y->shape);
  if (J.m == 0 || J.n == 0 || J.batches == 0) return NB_OK;
  J.va = view_of(a);
  J.vb = view_of(b);
  if (J.k > 0 && flattens(y, a, b, J.va, J.m, J.batches)) {
    J.flat = 1;
    J.m *= J.batches;
    J.batches = 1;
  }
  int64_t rows = J.m * J.batches;
  int nt = nb_cpu_threads();
  if (J.m * J.n * (J.k > 0 ? J.k : 1) * J.batches < PAR_MIN || rows < 2) nt = 1;
  if (nt > rows) nt = (int)rows;
  int failed = 0;
  if (nt == 1) {
    /* one thread here leaves OpenBLAS free to use its own */
    failed = run_rows(&J, 0, rows);
  } else {
#pragma omp parallel num_threads(nt) reduction(max : failed)
    {
      int64_t id = omp_get_thread_num(), team = omp_get_num_threads();
      failed = run_rows(&J, rows * id / team, rows * (id + 1) / team);
    }
  }
  return failed ? nb_error(NB_ERR_OOM, "matmul: epilogue: out of memory") : NB_OK;
}

void nb_cpu_register_matmul(nb_cpu_kernel_entry *t) {
  t[NB_OP_MATMUL] = (nb_cpu_kernel_entry){run_matmul, NULL, 1};
}
