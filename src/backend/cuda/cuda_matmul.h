/* What the matmul kernel (cuda_matmul.cu) hands to its cuBLASLt epilogue
 * path (cuda_matmul_lt.cu): the GEMM's geometry as cuBLAS sees it. C++ for
 * nvcc only, like cuda_internal.h. */
#ifndef NB_CUDA_MATMUL_H
#define NB_CUDA_MATMUL_H

#include "cuda_internal.h"

/* Row-major Y [batches, m, n] = A [.., m, k] B [.., k, n]. Each operand is
 * row-major (a_row / b_row) or column-major with leading stride lda / ldb
 * (cuda_matmul.cu's view_of). When `uniform`, batch i of A starts at
 * i * sa and of B at i * sb elements (0: one matrix for every batch). */
struct nb_cuda_gemm {
  int64_t m, n, k, batches;
  bool a_row, b_row;
  int64_t lda, ldb;
  bool uniform;
  int64_t sa, sb;
};

/* Runs matmul c->node and its epilogue group c->group as ONE cublasLtMatmul
 * with a bias, bias + ReLU or bias + GELU (tanh) epilogue when the group is
 * exactly that (cuda_matmul_lt.cu says which groups qualify), writing the
 * group's result to c->out; sets *done to 1 then. *done = 0 (and NB_OK):
 * not handled (another group, NABLA_CUBLASLT=0, no cuBLASLt algorithm),
 * nothing was launched, and the caller runs the plain GEMM and the group.
 * An error: cuBLASLt failed (the message names the device, the call and
 * the cuBLAS status). */
nb_status nb_cuda_matmul_lt(nb_cuda *cu, const nb_kernel_call *c, const nb_cuda_gemm *gm,
                            int *done);

#endif
