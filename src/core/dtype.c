/* dtype metadata and conversions between every pair of dtypes. */
#include <math.h>
#include <string.h>

#include "nabla/tensor.h"

static const struct {
  const char *name;
  const char *alias;
  size_t size;
} dtype_info[NB_DTYPE_COUNT] = {
    [NB_F32] = {"f32", "float32", 4},    [NB_F16] = {"f16", "float16", 2},
    [NB_BF16] = {"bf16", "bfloat16", 2}, [NB_I32] = {"i32", "int32", 4},
    [NB_I64] = {"i64", "int64", 8},      [NB_U8] = {"u8", "uint8", 1},
};

int nb_dtype_valid(int dt) { return dt >= 0 && dt < NB_DTYPE_COUNT; }

size_t nb_dtype_size(nb_dtype dt) { return nb_dtype_valid((int)dt) ? dtype_info[dt].size : 0; }

const char *nb_dtype_name(nb_dtype dt) {
  return nb_dtype_valid((int)dt) ? dtype_info[dt].name : "invalid";
}

int nb_dtype_is_float(nb_dtype dt) { return dt == NB_F32 || dt == NB_F16 || dt == NB_BF16; }

nb_status nb_dtype_parse(const char *name, nb_dtype *out) {
  if (!name || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_dtype_parse: NULL argument");
  for (int i = 0; i < NB_DTYPE_COUNT; i++) {
    if (!strcmp(name, dtype_info[i].name) || !strcmp(name, dtype_info[i].alias)) {
      *out = (nb_dtype)i;
      return NB_OK;
    }
  }
  return nb_error(NB_ERR_INVALID_ARG,
                  "unknown dtype '%s' (expected f32, f16, bf16, i32, i64 or u8)", name);
}

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

uint16_t nb_f32_to_f16(float x) {
  uint32_t u = f32_bits(x);
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

float nb_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    float v = ldexpf((float)man, -24);
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

uint16_t nb_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float nb_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static double load_elem(const void *p, nb_dtype dt, size_t i) {
  switch (dt) {
  case NB_F32: return ((const float *)p)[i];
  case NB_F16: return nb_f16_to_f32(((const uint16_t *)p)[i]);
  case NB_BF16: return nb_bf16_to_f32(((const uint16_t *)p)[i]);
  case NB_I32: return ((const int32_t *)p)[i];
  case NB_I64: return (double)((const int64_t *)p)[i];
  case NB_U8: return ((const uint8_t *)p)[i];
  default: return 0;
  }
}

static double saturate(double v, double lo, double hi) {
  if (isnan(v)) return 0;
  return v < lo ? lo : v > hi ? hi : v;
}

static void store_elem(void *p, nb_dtype dt, size_t i, double v) {
  switch (dt) {
  case NB_F32: ((float *)p)[i] = (float)v; break;
  case NB_F16: ((uint16_t *)p)[i] = nb_f32_to_f16((float)v); break;
  case NB_BF16: ((uint16_t *)p)[i] = nb_f32_to_bf16((float)v); break;
  case NB_I32: ((int32_t *)p)[i] = (int32_t)saturate(trunc(v), -2147483648.0, 2147483647.0); break;
  case NB_I64:
    /* 2^63 is the first double past INT64_MAX: saturate exactly there */
    ((int64_t *)p)[i] = isnan(v)                     ? 0
                        : v >= 9223372036854775808.0 ? INT64_MAX
                        : v < -9223372036854775808.0 ? INT64_MIN
                                                     : (int64_t)trunc(v);
    break;
  case NB_U8: ((uint8_t *)p)[i] = (uint8_t)saturate(trunc(v), 0, 255); break;
  default: break;
  }
}

nb_status nb_convert(const void *src, nb_dtype src_dt, void *dst, nb_dtype dst_dt, size_t n) {
  if ((!src || !dst) && n) return nb_error(NB_ERR_INVALID_ARG, "nb_convert: NULL buffer");
  if (!nb_dtype_valid((int)src_dt) || !nb_dtype_valid((int)dst_dt))
    return nb_error(NB_ERR_DTYPE, "nb_convert: invalid dtype %d -> %d", (int)src_dt, (int)dst_dt);
  /* nothing to do; also keeps NULL buffers away from memmove (UB even for 0) */
  if (n == 0) return NB_OK;
  if (src_dt == dst_dt) {
    memmove(dst, src, n * nb_dtype_size(src_dt));
    return NB_OK;
  }
  if (src_dt == NB_I64 && dst_dt == NB_I32) {
    for (size_t i = 0; i < n; i++) {
      int64_t v = ((const int64_t *)src)[i];
      ((int32_t *)dst)[i] = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
    }
    return NB_OK;
  }
  /* f32 <-> f16/bf16 (mixed precision casts, every step): direct loops,
   * the same roundings as the generic path below */
  if (src_dt == NB_F32 && (dst_dt == NB_BF16 || dst_dt == NB_F16)) {
    const float *x = src;
    uint16_t *y = dst;
    if (dst_dt == NB_BF16)
      for (size_t i = 0; i < n; i++) y[i] = nb_f32_to_bf16(x[i]);
    else
      for (size_t i = 0; i < n; i++) y[i] = nb_f32_to_f16(x[i]);
    return NB_OK;
  }
  if ((src_dt == NB_BF16 || src_dt == NB_F16) && dst_dt == NB_F32) {
    const uint16_t *x = src;
    float *y = dst;
    if (src_dt == NB_BF16)
      for (size_t i = 0; i < n; i++) y[i] = nb_bf16_to_f32(x[i]);
    else
      for (size_t i = 0; i < n; i++) y[i] = nb_f16_to_f32(x[i]);
    return NB_OK;
  }
  if (src_dt == NB_I64 && nb_dtype_is_float(dst_dt)) {
    /* i64 -> f32 directly: going through double would round twice */
    for (size_t i = 0; i < n; i++) store_elem(dst, dst_dt, i, (float)((const int64_t *)src)[i]);
    return NB_OK;
  }
  for (size_t i = 0; i < n; i++) store_elem(dst, dst_dt, i, load_elem(src, src_dt, i));
  return NB_OK;
}
