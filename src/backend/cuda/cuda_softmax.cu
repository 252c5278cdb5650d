/* softmax and log_softmax over one axis on the GPU, with the CPU kernel's
 * numerics (cpu_softmax.c): the row max (a NaN wins) is subtracted before
 * exp; softmax is e * (1 / sum), log_softmax is (x - max) - log(sum), so a
 * tiny probability keeps its exact logarithm; a row whose max is +-inf
 * gives NaN, as in PyTorch.
 *
 * The tensor is [outer, len, inner] with the axis in the middle:
 * - inner == 1 (the last axis, the usual case): a warp per row, or a block
 *   per row when rows are long (a vocabulary);
 * - inner > 1: a thread per (outer, column), walking the axis; neighbouring
 *   threads read neighbouring columns, so loads coalesce.
 * The backward of both is built from elementwise and sum ops by the graph
 * (ops_nn.c); cross-entropy is log_softmax + one_hot + mul + sum, each a
 * kernel here (fused where the compiler groups them). */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

namespace {

struct sm_layout {
  int64_t outer, len, inner;
  int64_t astride;    /* input stride of the softmax axis */
  nb_cuda_layout oth; /* the other axes of the input: (outer, inner) -> offset */
};

/* Input offset of element (o, 0, j). */
__device__ inline int64_t sm_base(const sm_layout &l, int64_t o, int64_t j) {
  return nb_cuda_offset(l.oth, o * l.inner + j);
}

__global__ void softmax_rows_warp(const float *x, sm_layout l, float *y, int log_form) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t o = warp; o < l.outer; o += nwarps) {
    const float *xr = x + sm_base(l, o, 0);
    float *yr = y + o * l.len;
    float m = -INFINITY;
    for (int64_t k = lane; k < l.len; k += 32) m = nb_max_nan(m, xr[k * l.astride]);
    m = nb_warp_max_nan(m);
    float s = 0.0f;
    for (int64_t k = lane; k < l.len; k += 32) {
      float e = expf(xr[k * l.astride] - m);
      s += e;
      if (!log_form) yr[k] = e;
    }
    s = nb_warp_sum(s);
    if (log_form) {
      float ls = logf(s);
      for (int64_t k = lane; k < l.len; k += 32) yr[k] = (xr[k * l.astride] - m) - ls;
    } else {
      float r = 1.0f / s;
      /* each lane rescales the elements it wrote itself */
      for (int64_t k = lane; k < l.len; k += 32) yr[k] *= r;
    }
  }
}

__global__ void softmax_rows_block(const float *x, sm_layout l, float *y, int log_form) {
  for (int64_t o = blockIdx.x; o < l.outer; o += gridDim.x) {
    const float *xr = x + sm_base(l, o, 0);
    float *yr = y + o * l.len;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < l.len; k += blockDim.x) m = nb_max_nan(m, xr[k * l.astride]);
    m = nb_block_reduce(m, 1);
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < l.len; k += blockDim.x) {
      float e = expf(xr[k * l.astride] - m);
      s += e;
      if (!log_form) yr[k] = e;
    }
    s = nb_block_reduce(s, 0);
    if (log_form) {
      float ls = logf(s);
      for (int64_t k = threadIdx.x; k < l.len; k += blockDim.x)
        yr[k] = (xr[k * l.astride] - m) - ls;
    } else {
      float r = 1.0f / s;
      for (int64_t k = threadIdx.x; k < l.len; k += blockDim.x) yr[k] *= r;
    }
  }
}

__global__ void softmax_columns(const float *x, sm_layout l, float *y, int log_form) {
  NB_CUDA_GRID_STRIDE(t, l.outer * l.inner) {
    int64_t o = t / l.inner, j = t % l.inner;
    const float *xc = x + sm_base(l, o, j);
    float *yc = y + o * l.len * l.inner + j;
    float m = -INFINITY;
    for (int64_t k = 0; k < l.len; k++) m = nb_max_nan(m, xc[k * l.astride]);
    float s = 0.0f;
    for (int64_t k = 0; k < l.len; k++) {
      float e = expf(xc[k * l.astride] - m);
      s += e;
      if (!log_form) yc[k * l.inner] = e;
    }
    if (log_form) {
      float ls = logf(s);
      for (int64_t k = 0; k < l.len; k++) yc[k * l.inner] = (xc[k * l.astride] - m) - ls;
    } else {
      float r = 1.0f / s;
      for (int64_t k = 0; k < l.len; k++) yc[k * l.inner] *= r;
    }
  }
}

nb_status run_softmax(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *xt = node->in[0];
  int axis = (int)node->ip[0];
  if (xt->dtype != NB_F32 || axis < 0 || axis >= xt->ndim)
    return nb_error(NB_ERR_INTERNAL, "%s: bad input dtype or axis %d", nb_cuda_op_name(node), axis);
  sm_layout l;
  memset(&l, 0, sizeof l);
  l.outer = l.inner = 1;
  l.len = xt->shape[axis];
  l.astride = xt->stride[axis];
  for (int d = 0; d < axis; d++) l.outer *= xt->shape[d];
  for (int d = axis + 1; d < xt->ndim; d++) l.inner *= xt->shape[d];
  int64_t sh[NB_MAX_DIMS], st[NB_MAX_DIMS];
  int n = 0;
  for (int d = 0; d < xt->ndim; d++)
    if (d != axis) {
      sh[n] = xt->shape[d];
      st[n++] = xt->stride[d];
    }
  l.oth = nb_cuda_layout_make(n, sh, st);
  if (l.outer * l.len * l.inner == 0) return NB_OK;
  int log_form = node->op == NB_OP_LOG_SOFTMAX;
  const float *x = static_cast<const float *>(c->in[0]);
  float *y = static_cast<float *>(c->out);
  if (l.inner > 1) {
    softmax_columns<<<nb_cuda_blocks(cu, l.outer * l.inner, NB_CUDA_THREADS), NB_CUDA_THREADS, 0,
                      cu->stream>>>(x, l, y, log_form);
  } else if (l.len > 1024) {
    unsigned blocks = (unsigned)(l.outer < 65535 ? l.outer : 65535);
    softmax_rows_block<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(x, l, y, log_form);
  } else {
    softmax_rows_warp<<<nb_cuda_blocks(cu, l.outer * 32, NB_CUDA_THREADS), NB_CUDA_THREADS, 0,
                        cu->stream>>>(x, l, y, log_form);
  }
  return nb_cuda_launched(cu, nb_cuda_op_name(node));
}

nb_status check_softmax(nb_cuda *cu, const nb_tensor *node) {
  if (node->in[0]->dtype == NB_F32) return NB_OK;
  return nb_error(NB_ERR_DTYPE, "%s: %s of %s: the CUDA kernel reads f32", cu->name,
                  nb_cuda_op_name(node), nb_dtype_name(node->in[0]->dtype));
}

} // namespace

void nb_cuda_register_softmax(nb_cuda_kernel_entry *t) {
  t[NB_OP_SOFTMAX].run = run_softmax;
  t[NB_OP_SOFTMAX].check = check_softmax;
  t[NB_OP_LOG_SOFTMAX].run = run_softmax;
  t[NB_OP_LOG_SOFTMAX].check = check_softmax;
}
