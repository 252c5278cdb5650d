/* One element's dtype conversion, the arithmetic of nb_convert: shared by
 * src/core/dtype.c (host) and the CUDA backend's cast kernels
 * (src/backend/cuda/cuda_copy.cu), so that a cast on the GPU rounds and
 * saturates exactly as on the CPU: float -> int truncates toward zero and
 * saturates (NaN -> 0), f16/bf16 round to nearest even, NaN stays NaN.
 * Header-only, compiled as C11 and as CUDA C++ (NB_HD marks the functions
 * __host__ __device__ there). */
#ifndef NB_CONVERT_ELEM_H
#define NB_CONVERT_ELEM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nabla/tensor.h"

#ifdef __CUDACC__
#define NB_HD __host__ __device__
#else
#define NB_HD
#endif

static inline NB_HD uint32_t nb_elem_f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static inline NB_HD float nb_elem_bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static inline NB_HD uint16_t nb_elem_f32_to_f16(float x) {
  uint32_t u = nb_elem_f32_bits(x);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t exp = (u >> 23) & 0xffu;
  uint32_t man = u & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
  if (e <= 0) {
    /* subnormal half (or zero): shift the implicit bit in, round to even */
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
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exponent: correct */
  return (uint16_t)h;
}

static inline NB_HD float nb_elem_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return nb_elem_bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return nb_elem_bits_f32(sign);
    float v = ldexpf((float)man, -24);
    return sign ? -v : v;
  }
  return nb_elem_bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

static inline NB_HD uint16_t nb_elem_f32_to_bf16(float x) {
  uint32_t u = nb_elem_f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline NB_HD float nb_elem_bf16_to_f32(uint16_t h) {
  return nb_elem_bits_f32((uint32_t)h << 16);
}

/* Element i of a buffer of dtype dt, as a double (exact for every dtype but
 * i64 beyond 2^53). */
static inline NB_HD double nb_elem_load(const void *p, int dt, int64_t i) {
  switch (dt) {
  case NB_F32: return ((const float *)p)[i];
  case NB_F16: return nb_elem_f16_to_f32(((const uint16_t *)p)[i]);
  case NB_BF16: return nb_elem_bf16_to_f32(((const uint16_t *)p)[i]);
  case NB_I32: return ((const int32_t *)p)[i];
  case NB_I64: return (double)((const int64_t *)p)[i];
  case NB_U8: return ((const uint8_t *)p)[i];
  default: return 0;
  }
}

static inline NB_HD double nb_elem_saturate(double v, double lo, double hi) {
  if (v != v) return 0; /* NaN */
  return v < lo ? lo : v > hi ? hi : v;
}

/* Stores v as element i of a buffer of dtype dt. */
static inline NB_HD void nb_elem_store(void *p, int dt, int64_t i, double v) {
  switch (dt) {
  case NB_F32: ((float *)p)[i] = (float)v; break;
  case NB_F16: ((uint16_t *)p)[i] = nb_elem_f32_to_f16((float)v); break;
  case NB_BF16: ((uint16_t *)p)[i] = nb_elem_f32_to_bf16((float)v); break;
  case NB_I32:
    ((int32_t *)p)[i] = (int32_t)nb_elem_saturate(trunc(v), -2147483648.0, 2147483647.0);
    break;
  case NB_I64:
    /* 2^63 is the first double past INT64_MAX: saturate exactly there */
    ((int64_t *)p)[i] = v != v                       ? 0
                        : v >= 9223372036854775808.0 ? INT64_MAX
                        : v < -9223372036854775808.0 ? INT64_MIN
                                                     : (int64_t)trunc(v);
    break;
  case NB_U8: ((uint8_t *)p)[i] = (uint8_t)nb_elem_saturate(trunc(v), 0, 255); break;
  default: break;
  }
}

/* i64 -> i32 saturating, without the double round trip. */
static inline NB_HD int32_t nb_elem_i64_to_i32(int64_t v) {
  return (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
}

#endif
