/* Batched matmul through cuBLAS. The graph hands over each operand matrix
 * row- or column-major with a valid leading stride (ops_linalg.c
 * blas_ready), exactly as the CPU's CBLAS path takes them, so transposed
 * views cost no copy here either.
 *
 * cuBLAS is column-major: a row-major C = A B is computed as the
 * column-major C^T = B^T A^T, where a row-major operand read column-major
 * is already its transpose (no flag) and a column-major one needs the
 * transpose flag. Batches whose offsets are a fixed stride apart (or 0, a
 * broadcast operand) run as one strided-batched GEMM; other batch
 * broadcasts run one GEMM per batch.
 *
 * FP32 math by default (results within rounding of the CPU); NABLA_TF32=1
 * allows TF32 tensor cores (about 10 bits of mantissa in the products).
 *
 * Mixed precision (graph.h, nb_graph_set_autocast): bf16 or f16 operands
 * run through cublasGemmEx / cublasGemmStridedBatchedEx with an f32 output
 * and CUBLAS_COMPUTE_32F, i.e. tensor cores with f32 accumulation, the
 * same arithmetic as torch.autocast's matmuls (whose output is then
 * rounded to bf16/f16; ours stays f32).
 *
 * Epilogues: a call with an epilogue group (a Linear layer's bias, then
 * maybe ReLU or GELU) first tries cuda_matmul_lt.cu, which runs bias-type
 * groups as one cuBLASLt matmul; any other group runs after the GEMM, in
 * place over Y, through nb_cuda_epilogue. The kernel table marks matmul as
 * running its own epilogue (runs_epilogue), so cuda_run does not. */
#include <cublas_v2.h>
#include <limits.h>
#include <string.h>

#include "cuda_matmul.h"

namespace {

nb_status blas_fail(nb_cuda *cu, cublasStatus_t s, const char *what) {
  return nb_error(s == CUBLAS_STATUS_ALLOC_FAILED ? NB_ERR_OOM : NB_ERR_INTERNAL,
                  "%s: matmul: %s failed: %s (%s)", cu->name, what, cublasGetStatusName(s),
                  cublasGetStatusString(s));
}

nb_status handle(nb_cuda *cu, cublasHandle_t *out) {
  if (!cu->blas) {
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(cu, s, "cublasCreate");
    s = cublasSetStream(h, cu->stream);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublasSetMathMode(h, cu->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(h);
      return blas_fail(cu, s, "cublasSetStream");
    }
    cu->blas = h;
  }
  *out = static_cast<cublasHandle_t>(cu->blas);
  return NB_OK;
}

struct blas_view {
  bool row_major; /* else column-major */
  int64_t ld;
};

/* cpu_matmul.c's view_of(): row-major when its leading stride is valid
 * (a column vector [k, 1] may be either). */
blas_view view_of(const nb_tensor *x) {
  int n = x->ndim;
  int64_t rs = x->stride[n - 2], cs = x->stride[n - 1];
  int64_t rows = x->shape[n - 2], cols = x->shape[n - 1];
  blas_view v;
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= (cols > 1 ? cols : 1))) {
    v.row_major = true;
    v.ld = rows == 1 ? (cols > 1 ? cols : 1) : rs;
  } else {
    v.row_major = false;
    v.ld = cols == 1 ? (rows > 1 ? rows : 1) : cs;
  }
  return v;
}

/* Offset of batch b of x given the broadcast batch shape of the output. */
int64_t batch_offset(const nb_tensor *x, const nb_tensor *out, int64_t b) {
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

/* 1 if batch b of x starts at b * stride for every batch (stride 0: every
 * batch reads the same matrix). */
bool uniform_batches(const nb_tensor *x, const nb_tensor *out, int64_t batches, int64_t *stride) {
  *stride = batches > 1 ? batch_offset(x, out, 1) : 0;
  for (int64_t b = 2; b < batches; b++)
    if (batch_offset(x, out, b) != b * *stride) return false;
  return true;
}

/* cuBLAS's name of a half-precision operand dtype. */
cudaDataType_t half_type(nb_dtype dt) { return dt == NB_BF16 ? CUDA_R_16BF : CUDA_R_16F; }

/* Y (f32) = A B with bf16 or f16 A and B: the f32 path below with the Ex
 * entry points, batch offsets counted in 2-byte elements. */
nb_status run_matmul_half(nb_cuda *cu, const nb_kernel_call *c, cublasHandle_t h, int64_t m,
                          int64_t n, int64_t k, int64_t batches) {
  const nb_tensor *y = c->node, *a = y->in[0], *b = y->in[1];
  const uint16_t *A = static_cast<const uint16_t *>(c->in[0]);
  const uint16_t *B = static_cast<const uint16_t *>(c->in[1]);
  float *Y = static_cast<float *>(c->out);
  cudaDataType_t t = half_type(a->dtype);
  blas_view va = view_of(a), vb = view_of(b);
  cublasOperation_t opb = vb.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasOperation_t opa = va.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  const float one = 1.0f, zero = 0.0f;
  int64_t sa, sb;
  if (uniform_batches(a, y, batches, &sa) && uniform_batches(b, y, batches, &sb)) {
    cublasStatus_t s = cublasGemmStridedBatchedEx(
        h, opb, opa, (int)n, (int)m, (int)k, &one, B, t, (int)vb.ld, sb, A, t, (int)va.ld, sa,
        &zero, Y, CUDA_R_32F, (int)n, m * n, (int)batches, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? NB_OK : blas_fail(cu, s, "cublasGemmStridedBatchedEx");
  }
  for (int64_t i = 0; i < batches; i++) {
    cublasStatus_t s =
        cublasGemmEx(h, opb, opa, (int)n, (int)m, (int)k, &one, B + batch_offset(b, y, i), t,
                     (int)vb.ld, A + batch_offset(a, y, i), t, (int)va.ld, &zero, Y + i * m * n,
                     CUDA_R_32F, (int)n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(cu, s, "cublasGemmEx");
  }
  return NB_OK;
}

/* Y = A B through cuBLAS into c->out (no epilogue). */
nb_status run_gemm(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *y = c->node, *a = y->in[0], *b = y->in[1];
  int64_t m = y->shape[y->ndim - 2], n = y->shape[y->ndim - 1], k = a->shape[a->ndim - 1];
  int64_t batches = nb_shape_numel(y->ndim - 2, y->shape);
  const float *A = static_cast<const float *>(c->in[0]), *B = static_cast<const float *>(c->in[1]);
  float *Y = static_cast<float *>(c->out);
  if (m == 0 || n == 0 || batches == 0) return NB_OK;
  if (k == 0) /* an empty sum: zeros */
    return nb_cuda_check(
        cu, cudaMemsetAsync(Y, 0, (size_t)(batches * m * n) * sizeof(float), cu->stream), "matmul",
        "cudaMemsetAsync");
  cublasHandle_t h;
  nb_status st = handle(cu, &h);
  if (st) return st;
  if (a->dtype != NB_F32) return run_matmul_half(cu, c, h, m, n, k, batches);
  blas_view va = view_of(a), vb = view_of(b);
  cublasOperation_t opb = vb.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasOperation_t opa = va.row_major ? CUBLAS_OP_N : CUBLAS_OP_T;
  const float one = 1.0f, zero = 0.0f;
  int64_t sa, sb;
  if (uniform_batches(a, y, batches, &sa) && uniform_batches(b, y, batches, &sb)) {
    cublasStatus_t s =
        cublasSgemmStridedBatched(h, opb, opa, (int)n, (int)m, (int)k, &one, B, (int)vb.ld, sb, A,
                                  (int)va.ld, sa, &zero, Y, (int)n, m * n, (int)batches);
    return s == CUBLAS_STATUS_SUCCESS ? NB_OK : blas_fail(cu, s, "cublasSgemmStridedBatched");
  }
  for (int64_t i = 0; i < batches; i++) {
    cublasStatus_t s = cublasSgemm(h, opb, opa, (int)n, (int)m, (int)k, &one,
                                   B + batch_offset(b, y, i), (int)vb.ld, A + batch_offset(a, y, i),
                                   (int)va.ld, &zero, Y + i * m * n, (int)n);
    if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(cu, s, "cublasSgemm");
  }
  return NB_OK;
}

/* The GEMM as cuBLAS sees it, for the cuBLASLt path. */
nb_cuda_gemm gemm_of(const nb_tensor *y) {
  const nb_tensor *a = y->in[0], *b = y->in[1];
  nb_cuda_gemm gm;
  gm.m = y->shape[y->ndim - 2];
  gm.n = y->shape[y->ndim - 1];
  gm.k = a->shape[a->ndim - 1];
  gm.batches = nb_shape_numel(y->ndim - 2, y->shape);
  blas_view va = view_of(a), vb = view_of(b);
  gm.a_row = va.row_major;
  gm.b_row = vb.row_major;
  gm.lda = va.ld;
  gm.ldb = vb.ld;
  gm.sa = gm.sb = 0;
  gm.uniform = gm.batches > 0 && uniform_batches(a, y, gm.batches, &gm.sa) &&
               uniform_batches(b, y, gm.batches, &gm.sb);
  return gm;
}

/* The kernel: with an epilogue group, one cuBLASLt matmul when it can take
 * the group, else the GEMM and then the group over its result. */
nb_status run_matmul(nb_cuda *cu, const nb_kernel_call *c) {
  if (c->group) {
    nb_cuda_gemm gm = gemm_of(c->node);
    int done = 0;
    nb_status st = nb_cuda_matmul_lt(cu, c, &gm, &done);
    if (st || done) return st;
  }
  nb_status st = run_gemm(cu, c);
  if (!st && c->group) st = nb_cuda_epilogue(cu, c);
  return st;
}

/* cuBLAS takes int sizes and leading dimensions: refuse rather than truncate. */
nb_status check_matmul(nb_cuda *cu, const nb_tensor *y) {
  const nb_tensor *a = y->in[0], *b = y->in[1];
  bool half = (a->dtype == NB_BF16 || a->dtype == NB_F16) && b->dtype == a->dtype;
  if (!(a->dtype == NB_F32 && b->dtype == NB_F32) && !half)
    return nb_error(NB_ERR_DTYPE,
                    "%s: matmul of %s and %s: the CUDA matmul takes two f32, bf16 or f16 operands",
                    cu->name, nb_dtype_name(a->dtype), nb_dtype_name(b->dtype));
  if (y->dtype != NB_F32)
    return nb_error(NB_ERR_DTYPE, "%s: matmul: result is %s, the CUDA matmul writes f32", cu->name,
                    nb_dtype_name(y->dtype));
  int64_t dims[] = {y->shape[y->ndim - 2], y->shape[y->ndim - 1],
                    a->shape[a->ndim - 1], nb_shape_numel(y->ndim - 2, y->shape),
                    view_of(a).ld,         view_of(b).ld};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i] > INT_MAX) {
      char s0[128], s1[128];
      return nb_error(NB_ERR_UNSUPPORTED,
                      "%s: matmul of %s and %s needs a cuBLAS dimension above 2^31 - 1", cu->name,
                      nb_shape_str(a->ndim, a->shape, s0, sizeof s0),
                      nb_shape_str(b->ndim, b->shape, s1, sizeof s1));
    }
  /* cuBLAS starts here, at compile time, so a failure to initialise it
   * stops nb_compile instead of the first training step */
  cublasHandle_t h;
  return handle(cu, &h);
}

} // namespace

void nb_cuda_blas_free(nb_cuda *cu) {
  if (cu->blas) cublasDestroy(static_cast<cublasHandle_t>(cu->blas));
  cu->blas = nullptr;
}

void nb_cuda_register_matmul(nb_cuda_kernel_entry *t) {
  t[NB_OP_MATMUL].run = run_matmul;
  t[NB_OP_MATMUL].check = check_matmul;
  /* a Linear layer's bias and activation: one cuBLASLt matmul, or over the
   * GEMM's result; run_matmul runs them itself */
  t[NB_OP_MATMUL].epilogue = 1;
  t[NB_OP_MATMUL].runs_epilogue = 1;
}
