/* cuBLASLt bias/activation epilogues for the matmul kernel.
 *
 * A Linear layer's y = x W^T + b (then ReLU or GELU) reaches the matmul
 * kernel as matmul + an epilogue group (fuse.c): {add(matmul, b)}, maybe
 * followed by relu or gelu. cuda_matmul.cu hands such a call here first,
 * and it runs as ONE cublasLtMatmul with CUBLASLT_EPILOGUE_BIAS, RELU_BIAS
 * or GELU_BIAS: bias and activation are applied to each output tile in
 * registers, so Y is written once (the plain path writes it, then nabla's
 * epilogue kernel reads it and writes it again).
 *
 * Which groups: exactly add(matmul, b) or add(b, matmul), alone or followed
 * by relu or gelu(approximate = tanh), where b is an f32 input of shape
 * [n] or [1, ..., 1, n] with unit stride along n (one bias per output
 * column) whose address is a multiple of 16 bytes (cuBLASLt has no
 * alignment preference for the bias, and its kernels may assume 16: a
 * less aligned bias faults). cuBLASLt's GELU epilogue is the tanh
 * approximation (the one torch's _addmm_activation(use_gelu=True) fuses
 * through it), so an exact (erf) gelu stays on the plain path. Any other
 * group, batches whose offsets are not a fixed stride apart, and sizes
 * past int32 are "not handled": the caller runs cuBLAS and the group as
 * before.
 *
 * Layout mapping. cuBLASLt is column-major like cuBLAS, so (as in
 * cuda_matmul.cu) row-major Y [m, n] = A [m, k] B [k, n] is computed as the
 * column-major D (n x m, ld n) = Y^T = B^T A^T: cuBLASLt's operand "A" is
 * our B and its "B" is our A. A layout names the matrix as stored (before
 * the TRANS flag applies):
 *   - our B row-major, row stride ldb: read column-major it is B^T, n x k,
 *     ld ldb: layout (n, k, ldb), TRANSA = N. Column-major (column stride
 *     ldb): it is B itself, k x n: layout (k, n, ldb), TRANSA = T.
 *   - our A row-major, row stride lda: A^T, layout (k, m, lda), TRANSB = N.
 *     Column-major: layout (m, k, lda), TRANSB = T.
 *   - C = D (beta = 0): layout (n, m, n), our dense Y.
 * The bias is per column of Y, i.e. per ROW of D, length n: exactly what
 * the BIAS epilogues add ("bias vector length must match matrix D rows",
 * broadcast over D's columns): D(j, i) = sum_k + b[j] = Y[i, j].
 *
 * Batches: a weight shared by every batch (stride 0) times a row-major A
 * whose batches follow each other (the GPT's [B, T, C] @ [C, N]) is one
 * GEMM over B*T rows. Other uniform batches run strided-batched
 * (CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT and STRIDED_BATCH_OFFSET on the three
 * layouts; bias batch stride 0: one bias for every batch).
 *
 * Each distinct problem (sizes, transposes, leading dimensions, batch
 * strides, dtype, compute type, epilogue, and the alignment of the four
 * pointers, on which cuBLASLt's kernels depend) gets its descriptors and
 * its heuristic algorithm (cublasLtMatmulAlgoGetHeuristic) once, kept in
 * the backend until it closes. "No algorithm" is cached too and sends that
 * problem to the plain path for good. The bias pointer is set on the cached
 * descriptor before each call (a CUDA-graph recording freezes it).
 *
 * Workspace: one buffer of LT_WORKSPACE bytes per backend, allocated with
 * the handle at the first cuBLASLt matmul. That is in a plan's 1st run,
 * which is never recorded (plan.c records the 2nd); a recording cannot
 * allocate, so should one come first anyway the plain path runs.
 *
 * Numerics: f32 operands with CUBLAS_COMPUTE_32F (CUBLAS_COMPUTE_32F_
 * FAST_TF32 under NABLA_TF32=1), bf16/f16 operands with CUBLAS_COMPUTE_32F,
 * f32 bias and output, as the plain path. The ReLU epilogue is max(x, 0)
 * (a NaN may come out as 0, where nabla's relu keeps it); the GELU
 * epilogue is cuBLASLt's own evaluation of the tanh formula, not bit for
 * bit nabla's tanhf. NABLA_CUBLASLT=0 (read when the backend opens) turns
 * this path off, to compare or bisect. */
#include <cublasLt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <new>
#include <vector>

#include "cuda_matmul.h"

namespace {

const size_t LT_WORKSPACE = (size_t)4 << 20;

/* One cuBLASLt problem in cuBLASLt's terms (its A is our B, its B our A),
 * and the cache key: int64 fields only, compared with memcmp. */
struct lt_problem {
  int64_t rows_a, cols_a, ld_a, trans_a, stride_a;
  int64_t rows_b, cols_b, ld_b, trans_b, stride_b;
  int64_t rows_d, cols_d, batches;
  int64_t dtype;    /* cudaDataType_t of A and B */
  int64_t compute;  /* cublasComputeType_t */
  int64_t epilogue; /* cublasLtEpilogue_t */
  int64_t align_a, align_b, align_d, align_bias;
};

struct lt_entry {
  lt_problem p;
  bool ok; /* an algorithm was found; else this problem takes the plain path */
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, ld; /* ld is both C and D */
  cublasLtMatmulAlgo_t algo;
  size_t ws; /* workspace the algorithm needs */
};

bool verbose() {
  const char *e = getenv("NABLA_CUDA_VERBOSE");
  return e && *e && strcmp(e, "0") != 0;
}

} // namespace

struct nb_cuda_lt {
  cublasLtHandle_t h = nullptr;
  void *ws = nullptr;
  size_t ws_bytes = 0;
  std::vector<lt_entry *> cache;
};

namespace {

nb_status lt_fail(nb_cuda *cu, cublasStatus_t s, const char *what) {
  return nb_error(s == CUBLAS_STATUS_ALLOC_FAILED ? NB_ERR_OOM : NB_ERR_INTERNAL,
                  "%s: matmul (cuBLASLt epilogue): %s failed: %s (%s); NABLA_CUBLASLT=0 runs "
                  "the plain cuBLAS path",
                  cu->name, what, cublasLtGetStatusName(s), cublasLtGetStatusString(s));
}

/* Largest power of two up to 256 that divides the address: the alignment
 * cuBLASLt's preference attributes ask for (their default assumes 256). */
int64_t align_of(const void *p) {
  uintptr_t v = (uintptr_t)p;
  int64_t a = 256;
  while (a > 1 && v % (uintptr_t)a) a >>= 1;
  return a;
}

/* The alignment of every matrix of a strided batch: the first one's
 * (`a`), lowered to what a batch stride of `bytes` keeps. */
int64_t align_batches(int64_t a, int64_t batches, int64_t bytes) {
  if (batches <= 1 || bytes == 0) return a;
  while (a > 1 && bytes % a) a >>= 1;
  return a;
}

const char *epilogue_name(int64_t e) {
  switch (e) {
  case CUBLASLT_EPILOGUE_BIAS: return "bias";
  case CUBLASLT_EPILOGUE_RELU_BIAS: return "bias+relu";
  case CUBLASLT_EPILOGUE_GELU_BIAS: return "bias+gelu(tanh)";
  default: return "?";
  }
}

/* The epilogue cuBLASLt can run for group g over matmul y's output, or 0;
 * *bias = the group's external input that is the bias. */
int64_t match_group(const nb_tensor *y, const nb_fused_group *g, int *bias) {
  if (g->n_ext != 2 || g->n_ops < 1 || g->n_ops > 2) return 0;
  int self = g->ext[0] == y ? 0 : g->ext[1] == y ? 1 : -1;
  if (self < 0 || g->ext[1 - self] == y) return 0;
  int b = 1 - self;
  const nb_fused_op *add = &g->ops[0];
  if (add->op != NB_OP_ADD || add->n_src != 2) return 0;
  if (!((add->src[0] == self && add->src[1] == b) || (add->src[0] == b && add->src[1] == self)))
    return 0;
  int64_t epi = CUBLASLT_EPILOGUE_BIAS;
  if (g->n_ops == 2) {
    const nb_fused_op *act = &g->ops[1];
    if (act->n_src != 1 || act->src[0] != -1) return 0; /* must read the add's result */
    if (act->op == NB_OP_RELU)
      epi = CUBLASLT_EPILOGUE_RELU_BIAS;
    else if (act->op == NB_OP_GELU && act->ip0 != 0) /* tanh approximation only */
      epi = CUBLASLT_EPILOGUE_GELU_BIAS;
    else
      return 0;
  }
  /* a bias per output column: [n] or [1, ..., 1, n], unit stride along n */
  const nb_tensor *t = g->ext[b];
  int64_t n = y->shape[y->ndim - 1];
  if (t->dtype != NB_F32 || t->ndim < 1 || t->ndim > y->ndim) return 0;
  if (t->shape[t->ndim - 1] != n || (n > 1 && t->stride[t->ndim - 1] != 1)) return 0;
  for (int d = 0; d < t->ndim - 1; d++)
    if (t->shape[d] != 1) return 0;
  *bias = b;
  return epi;
}

/* The cuBLASLt problem of geometry gm (batches folded where they can be),
 * or false when it does not fit cuBLASLt's int32 sizes or layouts. */
bool problem_of(nb_cuda *cu, const nb_tensor *y, const nb_cuda_gemm *gm, int64_t epi, const void *A,
                const void *B, const void *D, const void *bias, lt_problem *p) {
  memset(p, 0, sizeof *p);
  int64_t m = gm->m, batches = gm->batches, sa = gm->sa, sb = gm->sb;
  /* a shared weight and consecutive row-major batches of A: one GEMM over
   * batches * m rows of A (and of Y, which is dense) */
  if (batches > 1 && sb == 0 && gm->a_row && sa == m * gm->lda) {
    m *= batches;
    batches = 1;
    sa = 0;
  }
  int64_t n = gm->n, k = gm->k;
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX || batches > INT_MAX) return false;
  /* cuBLASLt's A: our B */
  p->rows_a = gm->b_row ? n : k;
  p->cols_a = gm->b_row ? k : n;
  p->ld_a = gm->ldb;
  p->trans_a = gm->b_row ? CUBLAS_OP_N : CUBLAS_OP_T;
  p->stride_a = batches > 1 ? sb : 0;
  /* cuBLASLt's B: our A */
  p->rows_b = gm->a_row ? k : m;
  p->cols_b = gm->a_row ? m : k;
  p->ld_b = gm->lda;
  p->trans_b = gm->a_row ? CUBLAS_OP_N : CUBLAS_OP_T;
  p->stride_b = batches > 1 ? sa : 0;
  /* D = Y^T: n rows, m columns, dense */
  p->rows_d = n;
  p->cols_d = m;
  p->batches = batches;
  /* column-major layouts need ld >= rows (the plain path's views always
   * have it; refuse rather than hand cuBLASLt an overlapping layout) */
  if (p->ld_a < p->rows_a || p->ld_b < p->rows_b || p->ld_a > INT_MAX || p->ld_b > INT_MAX)
    return false;
  nb_dtype dt = y->in[0]->dtype;
  p->dtype = dt == NB_F32 ? CUDA_R_32F : dt == NB_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  p->compute = dt == NB_F32 && cu->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  p->epilogue = epi;
  /* the preferences speak of the pointers: make them true of every batch */
  int64_t es = dt == NB_F32 ? 4 : 2;
  p->align_a = align_batches(align_of(A), batches, p->stride_a * es);
  p->align_b = align_batches(align_of(B), batches, p->stride_b * es);
  p->align_d = align_batches(align_of(D), batches, n * m * 4);
  p->align_bias = align_of(bias);
  return true;
}

void destroy_descs(lt_entry *e) {
  if (e->desc) cublasLtMatmulDescDestroy(e->desc);
  if (e->la) cublasLtMatrixLayoutDestroy(e->la);
  if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
  if (e->ld) cublasLtMatrixLayoutDestroy(e->ld);
  e->desc = nullptr;
  e->la = e->lb = e->ld = nullptr;
}

/* A layout (rows x cols, column-major, leading dimension ld) of `batches`
 * matrices `stride` elements apart. */
cublasStatus_t make_layout(cublasLtMatrixLayout_t *out, int64_t type, int64_t rows, int64_t cols,
                           int64_t ld, int64_t batches, int64_t stride) {
  cublasStatus_t s =
      cublasLtMatrixLayoutCreate(out, (cudaDataType)type, (uint64_t)rows, (uint64_t)cols, ld);
  if (s != CUBLAS_STATUS_SUCCESS || batches <= 1) return s;
  int32_t count = (int32_t)batches;
  s = cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                       sizeof count);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                         sizeof stride);
  return s;
}

/* Descriptors and the heuristic's algorithm for e->p; e->ok = false (and no
 * error) when cuBLASLt has no algorithm for it. `bias` is the pointer the
 * heuristic judges the bias alignment by. */
nb_status setup(nb_cuda *cu, nb_cuda_lt *lt, lt_entry *e, const void *bias) {
  const lt_problem &p = e->p;
  cublasStatus_t s = cublasLtMatmulDescCreate(&e->desc, (cublasComputeType_t)p.compute, CUDA_R_32F);
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "cublasLtMatmulDescCreate");
  int32_t ta = (int32_t)p.trans_a, tb = (int32_t)p.trans_b;
  uint32_t epi = (uint32_t)p.epilogue;
  int32_t bias_type = CUDA_R_32F;
  int64_t bias_stride = 0; /* one bias for every batch */
  s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                       sizeof bias_type);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                       sizeof bias);
  if (s == CUBLAS_STATUS_SUCCESS && p.batches > 1)
    s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE,
                                       &bias_stride, sizeof bias_stride);
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "cublasLtMatmulDescSetAttribute");
  s = make_layout(&e->la, p.dtype, p.rows_a, p.cols_a, p.ld_a, p.batches, p.stride_a);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = make_layout(&e->lb, p.dtype, p.rows_b, p.cols_b, p.ld_b, p.batches, p.stride_b);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = make_layout(&e->ld, CUDA_R_32F, p.rows_d, p.cols_d, p.rows_d, p.batches,
                    p.rows_d * p.cols_d);
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "cublasLtMatrixLayoutCreate");

  cublasLtMatmulPreference_t pref = nullptr;
  s = cublasLtMatmulPreferenceCreate(&pref);
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "cublasLtMatmulPreferenceCreate");
  uint64_t ws = lt->ws_bytes;
  uint32_t al[4] = {(uint32_t)p.align_a, (uint32_t)p.align_b, (uint32_t)p.align_d,
                    (uint32_t)p.align_d}; /* A, B, C (= D), D */
  cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                           sizeof ws);
  for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
    s = cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulPreferenceDestroy(pref);
    return lt_fail(cu, s, "cublasLtMatmulPreferenceSetAttribute");
  }
  cublasLtMatmulHeuristicResult_t r;
  memset(&r, 0, sizeof r);
  int found = 0;
  s = cublasLtMatmulAlgoGetHeuristic(lt->h, e->desc, e->la, e->lb, e->ld, e->ld, pref, 1, &r,
                                     &found);
  cublasLtMatmulPreferenceDestroy(pref);
  /* no algorithm for this problem (NOT_SUPPORTED: no heuristic for the
   * configuration) is not an error: the plain path runs it */
  if (s == CUBLAS_STATUS_NOT_SUPPORTED)
    found = 0;
  else if (s != CUBLAS_STATUS_SUCCESS)
    return lt_fail(cu, s, "cublasLtMatmulAlgoGetHeuristic");
  e->ok = found > 0 && r.state == CUBLAS_STATUS_SUCCESS && r.workspaceSize <= lt->ws_bytes;
  if (e->ok) {
    e->algo = r.algo;
    e->ws = r.workspaceSize;
  } else {
    destroy_descs(e);
  }
  if (verbose()) {
    /* back in our terms: Y [m, n] = A [m, k] B [k, n] */
    int64_t m = p.cols_d, n = p.rows_d, k = p.trans_b == CUBLAS_OP_N ? p.rows_b : p.cols_b;
    const char *dt = p.dtype == CUDA_R_32F ? "f32" : p.dtype == CUDA_R_16BF ? "bf16" : "f16";
    fprintf(stderr,
            "nabla: %s: matmul %s [%lld, %lld] x [%lld, %lld] (%lld batch%s) + %s: %s (workspace "
            "%zu bytes)\n",
            cu->name, dt, (long long)m, (long long)k, (long long)k, (long long)n,
            (long long)p.batches, p.batches == 1 ? "" : "es", epilogue_name(p.epilogue),
            e->ok ? "one cuBLASLt matmul"
                  : "no cuBLASLt algorithm: cuBLAS, then the epilogue kernel",
            e->ws);
  }
  return NB_OK;
}

void destroy_entry(lt_entry *e) {
  destroy_descs(e);
  delete e;
}

/* The backend's cuBLASLt handle and workspace, made on first use; NULL (and
 * NB_OK) while the stream is being recorded and they do not exist yet. */
nb_status lt_state(nb_cuda *cu, nb_cuda_lt **out) {
  *out = nullptr;
  if (cu->lt && cu->lt->h) {
    *out = cu->lt;
    return NB_OK;
  }
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  nb_status st =
      nb_cuda_check(cu, cudaStreamIsCapturing(cu->stream, &cs), "matmul", "cudaStreamIsCapturing");
  if (st || cs != cudaStreamCaptureStatusNone) return st; /* cannot cudaMalloc now */
  if (!cu->lt) {
    cu->lt = new (std::nothrow) nb_cuda_lt();
    if (!cu->lt) return nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
  }
  nb_cuda_lt *lt = cu->lt;
  if (!lt->ws) {
    st = nb_cuda_malloc(cu, LT_WORKSPACE, &lt->ws);
    if (st) return st;
    lt->ws_bytes = LT_WORKSPACE;
  }
  cublasStatus_t s = cublasLtCreate(&lt->h);
  if (s != CUBLAS_STATUS_SUCCESS) {
    lt->h = nullptr;
    return lt_fail(cu, s, "cublasLtCreate");
  }
  *out = lt;
  return NB_OK;
}

/* The cache entry of problem p, made on first use. */
nb_status entry_of(nb_cuda *cu, nb_cuda_lt *lt, const lt_problem &p, const void *bias,
                   lt_entry **out) {
  *out = nullptr;
  for (lt_entry *e : lt->cache)
    if (!memcmp(&e->p, &p, sizeof p)) {
      *out = e;
      return NB_OK;
    }
  lt_entry *e = new (std::nothrow) lt_entry();
  if (!e) return nb_error(NB_ERR_OOM, "%s: out of host memory", cu->name);
  e->p = p;
  nb_status st = nb_cuda_cache_keep(cu, lt->cache, e, setup(cu, lt, e, bias), destroy_entry);
  if (!st) *out = e;
  return st;
}

} // namespace

nb_status nb_cuda_matmul_lt(nb_cuda *cu, const nb_kernel_call *c, const nb_cuda_gemm *gm,
                            int *done) {
  *done = 0;
  const nb_tensor *y = c->node;
  const nb_fused_group *g = c->group;
  if (!cu->lt_on || !g || !gm->uniform) return NB_OK;
  if (gm->m <= 0 || gm->n <= 0 || gm->k <= 0 || gm->batches <= 0) return NB_OK;
  if (c->n_in != y->n_in + g->n_ext) return NB_OK; /* nb_cuda_epilogue reports it */
  int b = -1;
  int64_t epi = match_group(y, g, &b);
  if (!epi) return NB_OK;
  const void *bias = c->in[y->n_in + b];
  /* cuBLASLt's A is our B, its B our A (see the top of this file) */
  const void *A = c->in[1], *B = c->in[0];
  void *D = c->out;
  if (!bias || !A || !B || !D) return NB_OK;
  /* no preference attribute tells the heuristic the bias alignment, and its
   * kernels may load the bias 16 bytes at a time: a less aligned bias (a
   * view into a larger buffer) would fault with a misaligned address */
  if (align_of(bias) < 16) return NB_OK;
  /* the bias must not be (part of) the output it is added to */
  uintptr_t b0 = (uintptr_t)bias, b1 = b0 + (uintptr_t)gm->n * sizeof(float);
  uintptr_t d0 = (uintptr_t)D, d1 = d0 + (uintptr_t)(gm->batches * gm->m * gm->n) * sizeof(float);
  if (b0 < d1 && d0 < b1) return NB_OK;
  lt_problem p;
  if (!problem_of(cu, y, gm, epi, A, B, D, bias, &p)) return NB_OK;
  nb_cuda_lt *lt;
  nb_status st = lt_state(cu, &lt);
  if (st || !lt) return st;
  lt_entry *e;
  st = entry_of(cu, lt, p, bias, &e);
  if (st || !e->ok) return st;
  cublasStatus_t s = cublasLtMatmulDescSetAttribute(e->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias);
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "setting the bias pointer");
  const float one = 1.0f, zero = 0.0f;
  s = cublasLtMatmul(lt->h, e->desc, &one, A, e->la, B, e->lb, &zero, D, e->ld, D, e->ld, &e->algo,
                     lt->ws, lt->ws_bytes, cu->stream);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED) {
    /* refused before launching anything (the heuristic's algorithm cannot
     * run this after all): this problem takes the plain path from now on */
    e->ok = false;
    destroy_descs(e);
    if (verbose())
      fprintf(stderr, "nabla: %s: matmul: cublasLtMatmul refused its algorithm (%s): plain path\n",
              cu->name, cublasLtGetStatusString(s));
    return NB_OK;
  }
  if (s != CUBLAS_STATUS_SUCCESS) return lt_fail(cu, s, "cublasLtMatmul");
  *done = 1;
  return NB_OK;
}

void nb_cuda_lt_free(nb_cuda *cu) {
  nb_cuda_lt *lt = cu->lt;
  if (!lt) return;
  for (lt_entry *e : lt->cache) destroy_entry(e);
  if (lt->h) cublasLtDestroy(lt->h);
  if (lt->ws) nb_cuda_mfree(cu, lt->ws);
  delete lt;
  cu->lt = nullptr;
}
