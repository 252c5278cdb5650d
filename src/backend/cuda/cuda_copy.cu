/* Layout and dtype changes on the GPU: copy (dense copy of a strided view),
 * cast (between any two dtypes) and assign (writing a value into a
 * variable). Conversions are nb_convert's own per-element code
 * (src/core/convert_elem.h, compiled for the device): float -> int
 * truncates toward zero and saturates (NaN -> 0), f16/bf16 round to
 * nearest even, i64 -> float rounds once. */
#include <string.h>

#include "../../core/convert_elem.h"
#include "cuda_internal.h"

namespace {

__global__ void convert_kernel(const unsigned char *src, int sdt, nb_cuda_layout l,
                               unsigned char *dst, int ddt, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t off = nb_cuda_offset(l, i);
    if (sdt == NB_I64 && ddt == NB_I32) {
      ((int32_t *)dst)[i] = nb_elem_i64_to_i32(((const int64_t *)src)[off]);
    } else if (sdt == NB_I64 && (ddt == NB_F32 || ddt == NB_F16 || ddt == NB_BF16)) {
      /* i64 -> f32 directly: going through double would round twice */
      nb_elem_store(dst, ddt, i, (double)(float)((const int64_t *)src)[off]);
    } else {
      nb_elem_store(dst, ddt, i, nb_elem_load(src, sdt, off));
    }
  }
}

template <typename T>
__global__ void gather_kernel(const T *src, nb_cuda_layout l, T *dst, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) dst[i] = src[nb_cuda_offset(l, i)];
}

} // namespace

/* Strided x (data at src) densely into dst, converting to dst_dt. Shared
 * with cuda_movement.cu through the declaration there. */
nb_status nb_cuda_strided_copy(nb_cuda *cu, const nb_tensor *x, const void *src, void *dst,
                               nb_dtype dst_dt, const char *what) {
  int64_t n = nb_tensor_numel(x);
  if (n == 0) return NB_OK;
  size_t es = nb_dtype_size(x->dtype);
  nb_cuda_layout l = nb_cuda_layout_of(x);
  unsigned blocks = nb_cuda_blocks(cu, n, NB_CUDA_THREADS);
  if (x->dtype == dst_dt) {
    if (l.ndim <= 1 && (l.ndim == 0 || l.stride[0] == 1))
      return nb_cuda_check(
          cu, cudaMemcpyAsync(dst, src, (size_t)n * es, cudaMemcpyDeviceToDevice, cu->stream), what,
          "cudaMemcpyAsync");
    switch (es) {
    case 1:
      gather_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint8_t *>(src),
                                                                l, static_cast<uint8_t *>(dst), n);
      break;
    case 2:
      gather_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint16_t *>(src),
                                                                l, static_cast<uint16_t *>(dst), n);
      break;
    case 4:
      gather_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint32_t *>(src),
                                                                l, static_cast<uint32_t *>(dst), n);
      break;
    default:
      gather_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint64_t *>(src),
                                                                l, static_cast<uint64_t *>(dst), n);
      break;
    }
    return nb_cuda_launched(cu, what);
  }
  convert_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
      static_cast<const unsigned char *>(src), (int)x->dtype, l, static_cast<unsigned char *>(dst),
      (int)dst_dt, n);
  return nb_cuda_launched(cu, what);
}

namespace {

nb_status run_copy(nb_cuda *cu, const nb_kernel_call *c) {
  return nb_cuda_strided_copy(cu, c->node->in[0], c->in[0], c->out, c->node->dtype,
                              nb_cuda_op_name(c->node));
}

nb_status run_assign(nb_cuda *cu, const nb_kernel_call *c) {
  if (c->out == c->in[1]) return NB_OK; /* the value was written in place */
  return nb_cuda_strided_copy(cu, c->node->in[1], c->in[1], c->out, c->node->dtype, "assign");
}

nb_status check_dtypes(nb_cuda *cu, const nb_tensor *node) {
  for (int i = 0; i < node->n_in; i++)
    if (!nb_dtype_valid((int)node->in[i]->dtype))
      return nb_error(NB_ERR_DTYPE, "%s: %s: invalid input dtype", cu->name, nb_cuda_op_name(node));
  return nb_dtype_valid((int)node->dtype)
             ? NB_OK
             : nb_error(NB_ERR_DTYPE, "%s: %s: invalid dtype", cu->name, nb_cuda_op_name(node));
}

} // namespace

void nb_cuda_register_copy(nb_cuda_kernel_entry *t) {
  t[NB_OP_COPY].run = run_copy;
  t[NB_OP_COPY].check = check_dtypes;
  t[NB_OP_CAST].run = run_copy;
  t[NB_OP_CAST].check = check_dtypes;
  t[NB_OP_ASSIGN].run = run_assign;
}
