/* Layout and dtype changes on the GPU: copy (dense copy of a strided view),
 * cast (between any two dtypes) and assign (writing a value into a
 * variable). Conversions follow nb_convert (src/core/dtype.c) exactly:
 * float -> int truncates toward zero and saturates (NaN -> 0), f16/bf16
 * round to nearest even, i64 -> float rounds once. */
#include <string.h>

#include "cuda_internal.h"

namespace {

/* ---- nb_convert on the device ----------------------------------------------------- */

__device__ inline uint16_t f32_to_f16(float x) {
  uint32_t u = __float_as_uint(x);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t exp = (u >> 23) & 0xffu;
  uint32_t man = u & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
  uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)h;
}

__device__ inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return __uint_as_float(sign);
    float v = ldexpf((float)man, -24);
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

__device__ inline uint16_t f32_to_bf16(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

__device__ inline float bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ inline double load_elem(const unsigned char *p, int dt, int64_t i) {
  switch (dt) {
  case NB_F32: return ((const float *)p)[i];
  case NB_F16: return f16_to_f32(((const uint16_t *)p)[i]);
  case NB_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
  case NB_I32: return ((const int32_t *)p)[i];
  case NB_I64: return (double)((const int64_t *)p)[i];
  case NB_U8: return ((const uint8_t *)p)[i];
  default: return 0;
  }
}

__device__ inline double saturate(double v, double lo, double hi) {
  if (v != v) return 0;
  return v < lo ? lo : v > hi ? hi : v;
}

__device__ inline void store_elem(unsigned char *p, int dt, int64_t i, double v) {
  switch (dt) {
  case NB_F32: ((float *)p)[i] = (float)v; break;
  case NB_F16: ((uint16_t *)p)[i] = f32_to_f16((float)v); break;
  case NB_BF16: ((uint16_t *)p)[i] = f32_to_bf16((float)v); break;
  case NB_I32: ((int32_t *)p)[i] = (int32_t)saturate(trunc(v), -2147483648.0, 2147483647.0); break;
  case NB_I64:
    ((int64_t *)p)[i] = v != v                       ? 0
                        : v >= 9223372036854775808.0 ? INT64_MAX
                        : v < -9223372036854775808.0 ? INT64_MIN
                                                     : (int64_t)trunc(v);
    break;
  case NB_U8: ((uint8_t *)p)[i] = (uint8_t)saturate(trunc(v), 0, 255); break;
  default: break;
  }
}

__global__ void convert_kernel(const unsigned char *src, int sdt, nb_cuda_layout l,
                               unsigned char *dst, int ddt, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t off = nb_cuda_offset(l, i);
    if (sdt == NB_I64 && ddt == NB_I32) {
      int64_t v = ((const int64_t *)src)[off];
      ((int32_t *)dst)[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
    } else if (sdt == NB_I64 && (ddt == NB_F32 || ddt == NB_F16 || ddt == NB_BF16)) {
      /* i64 -> f32 directly: going through double would round twice */
      store_elem(dst, ddt, i, (double)(float)((const int64_t *)src)[off]);
    } else {
      store_elem(dst, ddt, i, load_elem(src, sdt, off));
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
