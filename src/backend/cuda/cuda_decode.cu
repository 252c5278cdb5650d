/* The run-time position ops of decoding with a KV cache (ops_decode.c) on
 * the GPU: write_at (rows of a variable overwritten in place) and slice_at
 * (rows copied out). The position is one i32/i64 element in device memory,
 * read by the kernel itself, so a decode step needs no host round trip. A
 * position out of range is recorded as a fault (reported by the next
 * download, cuda_internal.h) and nothing is written. attention_cached lives
 * with the other attention kernels (cuda_attention.cu). */
#include "cuda_internal.h"

namespace {

/* Rows of one axis of a contiguous tensor: `outer` blocks of `len` rows of
 * `row` elements. */
struct rows_walk {
  int64_t outer, n, len, row; /* n rows moved, of len on the big side */
  int64_t limit;              /* valid positions: [0, limit) */
  int axis, pos_i64, op;
};

rows_walk walk_of(const nb_tensor *big, const nb_tensor *node, int axis, int64_t n, int pos_i64) {
  rows_walk w;
  w.outer = w.row = 1;
  for (int d = 0; d < axis; d++) w.outer *= big->shape[d];
  for (int d = axis + 1; d < big->ndim; d++) w.row *= big->shape[d];
  w.n = n;
  w.len = big->shape[axis];
  w.limit = w.len - n + 1;
  w.axis = axis;
  w.pos_i64 = pos_i64;
  w.op = (int)node->op;
  return w;
}

__device__ inline int64_t read_pos(const void *p, int i64) {
  return i64 ? *(const int64_t *)p : *(const int32_t *)p;
}

/* write = 1: big[o, pos + r, j] = small[o, r, j]; else small = big[...] */
template <typename T>
__global__ void rows_kernel(T *big, T *small, const void *pos, rows_walk w, int write,
                            nb_cuda_fault *fault) {
  int64_t p = read_pos(pos, w.pos_i64);
  bool bad = p < 0 || p >= w.limit;
  int64_t total = w.outer * w.n * w.row;
  if (bad) {
    if (blockIdx.x == 0 && threadIdx.x == 0)
      nb_cuda_report_fault(fault, w.op, p, 0, w.limit, w.axis);
    if (write) return; /* leave the variable as it was */
  }
  NB_CUDA_GRID_STRIDE(i, total) {
    int64_t j = i % w.row, r = (i / w.row) % w.n, o = i / (w.row * w.n);
    int64_t b = (o * w.len + p + r) * w.row + j;
    if (write)
      big[b] = small[i];
    else
      small[i] = bad ? T(0) : big[b];
  }
}

template <typename T>
nb_status launch_rows(nb_cuda *cu, void *big, void *small, const void *pos, const rows_walk &w,
                      int write) {
  int64_t total = w.outer * w.n * w.row;
  rows_kernel<T><<<nb_cuda_blocks(cu, total, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
      static_cast<T *>(big), static_cast<T *>(small), pos, w, write, cu->fault_dev);
  return NB_OK;
}

nb_status run_rows(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  int write = node->op == NB_OP_WRITE_AT;
  const nb_tensor *big = node->in[0], *small = write ? node->in[1] : node;
  const nb_tensor *pos = write ? node->in[2] : node->in[1];
  int axis = (int)node->ip[0];
  rows_walk w = walk_of(big, node, axis, small->shape[axis], pos->dtype == NB_I64);
  if (w.outer * w.n * w.row == 0) return NB_OK;
  void *bigp = write ? c->out : c->in[0];
  void *smallp = write ? c->in[1] : c->out;
  const void *posp = write ? c->in[2] : c->in[1];
  switch (nb_dtype_size(big->dtype)) {
  case 1: launch_rows<uint8_t>(cu, bigp, smallp, posp, w, write); break;
  case 2: launch_rows<uint16_t>(cu, bigp, smallp, posp, w, write); break;
  case 4: launch_rows<uint32_t>(cu, bigp, smallp, posp, w, write); break;
  default: launch_rows<uint64_t>(cu, bigp, smallp, posp, w, write); break;
  }
  return nb_cuda_launched(cu, nb_cuda_op_name(node));
}

nb_status check_rows(nb_cuda *cu, const nb_tensor *node) {
  int write = node->op == NB_OP_WRITE_AT;
  const nb_tensor *pos = write ? node->in[2] : node->in[1];
  size_t es = nb_dtype_size(node->dtype);
  if (pos->dtype != NB_I32 && pos->dtype != NB_I64)
    return nb_error(NB_ERR_DTYPE, "%s: %s: pos must be i32 or i64", cu->name,
                    nb_cuda_op_name(node));
  if (es != 1 && es != 2 && es != 4 && es != 8)
    return nb_error(NB_ERR_DTYPE, "%s: %s: dtype %s is not supported", cu->name,
                    nb_cuda_op_name(node), nb_dtype_name(node->dtype));
  for (int i = 0; i < (write ? 2 : 1); i++)
    if (!nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_UNSUPPORTED, "%s: %s: input %d is not contiguous", cu->name,
                      nb_cuda_op_name(node), i);
  return NB_OK;
}

} // namespace

void nb_cuda_register_decode(nb_cuda_kernel_entry *t) {
  t[NB_OP_WRITE_AT].run = run_rows;
  t[NB_OP_WRITE_AT].check = check_rows;
  t[NB_OP_SLICE_AT].run = run_rows;
  t[NB_OP_SLICE_AT].check = check_rows;
}
