/* Reductions on the GPU: sum, max, min over any set of axes and argmax over
 * one, of any strided view. The kept axes index the (dense) output and the
 * reduced axes are walked per output element; both are merged layouts
 * (cuda_internal.h), so a contiguous reduction is one long run.
 *
 * Three shapes of work:
 * - block per output: long reductions (>= 4096 elements), e.g. a loss sum;
 * - blocks per output: long reductions with too few outputs to fill the GPU,
 *   e.g. a conv bias gradient over N*H*W ([512,16,32,32] -> 16 sums: one
 *   block each would use 16 of 132 SMs; it took 26% of a CIFAR CNN step at
 *   batch 512 on an H100): each output's range is cut into S chunks, one
 *   block per chunk writes a double partial to the workspace, and a second
 *   kernel combines each output's S partials in order (deterministic);
 * - thread per output: many outputs next to each other in memory with the
 *   reduced axes outside them (a mean over the batch of [B, T, D]), where
 *   neighbouring threads read neighbouring floats;
 * - warp per output: everything else (softmax-like rows, short axes).
 * Sums accumulate in double (the CPU's accumulator too), then round once.
 * max/min: a NaN wins, as on the CPU. argmax: the first maximum, or the
 * first NaN. */
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

namespace {

enum { R_SUM = 0, R_MAX = 1, R_MIN = 2 };

struct red_params {
  nb_cuda_layout keep, red;
  int64_t n_out, n_red;
  int op;
};

__device__ inline double combine(double a, double b, int op) {
  if (op == R_SUM) return a + b;
  if (op == R_MAX) return (b > a || b != b) ? b : a;
  return (b < a || b != b) ? b : a;
}

__device__ inline double identity(int op) {
  return op == R_SUM ? 0.0 : op == R_MAX ? -INFINITY : INFINITY;
}

__device__ inline double warp_combine(double v, int op) {
  for (int o = 16; o > 0; o >>= 1) v = combine(v, __shfl_xor_sync(0xffffffffu, v, o), op);
  return v;
}

__global__ void reduce_warp(const float *x, red_params p, float *out) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t o = warp; o < p.n_out; o += nwarps) {
    const float *base = x + nb_cuda_offset(p.keep, o);
    double acc = identity(p.op);
    for (int64_t r = lane; r < p.n_red; r += 32)
      acc = combine(acc, base[nb_cuda_offset(p.red, r)], p.op);
    acc = warp_combine(acc, p.op);
    if (lane == 0) out[o] = (float)acc;
  }
}

__global__ void reduce_block(const float *x, red_params p, float *out) {
  __shared__ double part[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t o = blockIdx.x; o < p.n_out; o += gridDim.x) {
    const float *base = x + nb_cuda_offset(p.keep, o);
    double acc = identity(p.op);
    for (int64_t r = threadIdx.x; r < p.n_red; r += blockDim.x)
      acc = combine(acc, base[nb_cuda_offset(p.red, r)], p.op);
    acc = warp_combine(acc, p.op);
    __syncthreads();
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = lane < nw ? part[lane] : identity(p.op);
      acc = warp_combine(acc, p.op);
      if (lane == 0) out[o] = (float)acc;
    }
  }
}

__global__ void reduce_thread(const float *x, red_params p, float *out) {
  NB_CUDA_GRID_STRIDE(o, p.n_out) {
    const float *base = x + nb_cuda_offset(p.keep, o);
    double acc = identity(p.op);
    for (int64_t r = 0; r < p.n_red; r++) acc = combine(acc, base[nb_cuda_offset(p.red, r)], p.op);
    out[o] = (float)acc;
  }
}

/* Chunk `s` of output o (chunks of `chunk` elements): a block's partial. */
__global__ void reduce_split(const float *x, red_params p, int64_t chunk, int S, double *part) {
  __shared__ double wpart[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int64_t o = blockIdx.x / S, s = blockIdx.x % S;
  const float *base = x + nb_cuda_offset(p.keep, o);
  int64_t end = (s + 1) * chunk < p.n_red ? (s + 1) * chunk : p.n_red;
  double acc = identity(p.op);
  for (int64_t r = s * chunk + threadIdx.x; r < end; r += blockDim.x)
    acc = combine(acc, base[nb_cuda_offset(p.red, r)], p.op);
  acc = warp_combine(acc, p.op);
  if (lane == 0) wpart[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < nw ? wpart[lane] : identity(p.op);
    acc = warp_combine(acc, p.op);
    if (lane == 0) part[blockIdx.x] = acc;
  }
}

__global__ void reduce_split_finish(const double *part, int64_t n_out, int S, int op,
                                    float *out) {
  NB_CUDA_GRID_STRIDE(o, n_out) {
    double acc = identity(op);
    for (int s = 0; s < S; s++) acc = combine(acc, part[o * S + s], op);
    out[o] = (float)acc;
  }
}

/* Splits x's axes by the mask into kept and reduced layouts. */
void split_axes(const nb_tensor *x, int64_t mask, red_params *p) {
  int64_t ks[NB_MAX_DIMS], kt[NB_MAX_DIMS], rs[NB_MAX_DIMS], rt[NB_MAX_DIMS];
  int nk = 0, nr = 0;
  p->n_out = p->n_red = 1;
  for (int d = 0; d < x->ndim; d++) {
    if ((mask >> d) & 1) {
      rs[nr] = x->shape[d];
      rt[nr++] = x->stride[d];
      p->n_red *= x->shape[d];
    } else {
      ks[nk] = x->shape[d];
      kt[nk++] = x->stride[d];
      p->n_out *= x->shape[d];
    }
  }
  p->keep = nb_cuda_layout_make(nk, ks, kt);
  p->red = nb_cuda_layout_make(nr, rs, rt);
}

/* Chunks per output for the split kernels (0 = not split): enough blocks
 * for about four per SM, each chunk at least 4096 elements. */
int split_chunks(const nb_cuda *cu, int64_t n_out, int64_t n_red) {
  int64_t target = (int64_t)(cu->sm_count > 0 ? cu->sm_count : 32) * 4;
  if (n_red < 2 * 4096 || n_out * 2 > target) return 0;
  int64_t S = (target + n_out - 1) / n_out, most = n_red / 4096;
  if (S > most) S = most;
  if (S > 1024) S = 1024;
  return S >= 2 ? (int)S : 0;
}

size_t reduce_workspace(nb_cuda *cu, const nb_tensor *node) {
  if (!node->in || !node->in[0]) return 0;
  red_params p;
  memset(&p, 0, sizeof p);
  split_axes(node->in[0], node->ip[0], &p);
  return (size_t)p.n_out * (size_t)split_chunks(cu, p.n_out, p.n_red) * sizeof(double);
}

nb_status run_reduce(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  red_params p;
  memset(&p, 0, sizeof p);
  split_axes(x, node->ip[0], &p);
  p.op = node->op == NB_OP_SUM ? R_SUM : node->op == NB_OP_MAX ? R_MAX : R_MIN;
  if (p.n_out == 0) return NB_OK;
  const float *src = static_cast<const float *>(c->in[0]);
  float *out = static_cast<float *>(c->out);
  if (p.n_red == 0) { /* a sum over an empty axis: zeros (max/min refuse it in the graph) */
    return nb_cuda_check(cu, cudaMemsetAsync(out, 0, (size_t)p.n_out * sizeof(float), cu->stream),
                         nb_cuda_op_name(node), "cudaMemsetAsync");
  }
  bool outputs_adjacent = p.keep.ndim > 0 && p.keep.stride[p.keep.ndim - 1] == 1;
  bool red_inner = p.red.ndim > 0 && p.red.stride[p.red.ndim - 1] == 1;
  int S = split_chunks(cu, p.n_out, p.n_red);
  if (S && c->workspace && c->workspace_bytes >= (size_t)p.n_out * S * sizeof(double)) {
    int64_t chunk = (p.n_red + S - 1) / S;
    double *part = static_cast<double *>(c->workspace);
    reduce_split<<<(unsigned)(p.n_out * S), NB_CUDA_THREADS, 0, cu->stream>>>(src, p, chunk, S,
                                                                              part);
    reduce_split_finish<<<nb_cuda_blocks(cu, p.n_out, NB_CUDA_THREADS), NB_CUDA_THREADS, 0,
                          cu->stream>>>(part, p.n_out, S, p.op, out);
  } else if (p.n_red >= 4096) {
    unsigned blocks = (unsigned)(p.n_out < 65535 ? p.n_out : 65535);
    reduce_block<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(src, p, out);
  } else if (p.n_out >= 1024 && outputs_adjacent && !red_inner) {
    reduce_thread<<<nb_cuda_blocks(cu, p.n_out, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
        src, p, out);
  } else {
    int64_t threads = p.n_out * 32;
    reduce_warp<<<nb_cuda_blocks(cu, threads, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
        src, p, out);
  }
  return nb_cuda_launched(cu, nb_cuda_op_name(node));
}

/* ---- argmax ------------------------------------------------------------------------ */

/* (value, index) with the CPU's rule: the first NaN, else the first maximum. */
__device__ inline void arg_combine(float &v, int64_t &i, float w, int64_t j) {
  bool vn = v != v, wn = w != w;
  bool take;
  if (vn || wn)
    take = wn && (!vn || j < i);
  else
    take = w > v || (w == v && j < i);
  if (take) {
    v = w;
    i = j;
  }
}

__global__ void argmax_warp(const float *x, nb_cuda_layout keep, int64_t n_out, int64_t len,
                            int64_t stride, int64_t *out) {
  int lane = threadIdx.x & 31;
  int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t o = warp; o < n_out; o += nwarps) {
    const float *base = x + nb_cuda_offset(keep, o);
    float v = -INFINITY;
    int64_t best = len; /* "none yet": loses to any real element */
    for (int64_t k = lane; k < len; k += 32) arg_combine(v, best, base[k * stride], k);
    for (int off = 16; off > 0; off >>= 1) {
      float w = __shfl_xor_sync(0xffffffffu, v, off);
      int64_t j = __shfl_xor_sync(0xffffffffu, best, off);
      arg_combine(v, best, w, j);
    }
    if (lane == 0) out[o] = best < len ? best : 0;
  }
}

nb_status run_argmax(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  red_params p;
  memset(&p, 0, sizeof p);
  int axis = (int)node->ip[0];
  split_axes(x, (int64_t)1 << axis, &p);
  if (p.n_out == 0) return NB_OK;
  int64_t threads = p.n_out * 32;
  argmax_warp<<<nb_cuda_blocks(cu, threads, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
      static_cast<const float *>(c->in[0]), p.keep, p.n_out, x->shape[axis], x->stride[axis],
      static_cast<int64_t *>(c->out));
  return nb_cuda_launched(cu, "argmax");
}

nb_status check_f32(nb_cuda *cu, const nb_tensor *node) {
  if (node->in[0]->dtype == NB_F32) return NB_OK;
  return nb_error(NB_ERR_DTYPE, "%s: %s of %s: the CUDA reductions read f32", cu->name,
                  nb_cuda_op_name(node), nb_dtype_name(node->in[0]->dtype));
}

} // namespace

void nb_cuda_register_reduce(nb_cuda_kernel_entry *t) {
  const nb_opcode ops[] = {NB_OP_SUM, NB_OP_MAX, NB_OP_MIN};
  for (nb_opcode op : ops) {
    t[op].run = run_reduce;
    t[op].workspace = reduce_workspace;
    t[op].check = check_f32;
  }
  t[NB_OP_ARGMAX].run = run_argmax;
  t[NB_OP_ARGMAX].check = check_f32;
}
