/* dtype metadata and conversions between every pair of dtypes (the
 * per-element arithmetic is convert_elem.h's, shared with the CUDA casts). */
#include <string.h>

#include "convert_elem.h"
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

uint16_t nb_f32_to_f16(float x) { return nb_elem_f32_to_f16(x); }
float nb_f16_to_f32(uint16_t h) { return nb_elem_f16_to_f32(h); }
uint16_t nb_f32_to_bf16(float x) { return nb_elem_f32_to_bf16(x); }
float nb_bf16_to_f32(uint16_t h) { return nb_elem_bf16_to_f32(h); }

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
    for (size_t i = 0; i < n; i++)
      ((int32_t *)dst)[i] = nb_elem_i64_to_i32(((const int64_t *)src)[i]);
    return NB_OK;
  }
  /* f32 <-> f16/bf16 (mixed precision casts, every step): direct loops,
   * the same roundings as the generic path below */
  if (src_dt == NB_F32 && (dst_dt == NB_BF16 || dst_dt == NB_F16)) {
    const float *x = src;
    uint16_t *y = dst;
    if (dst_dt == NB_BF16)
      for (size_t i = 0; i < n; i++) y[i] = nb_elem_f32_to_bf16(x[i]);
    else
      for (size_t i = 0; i < n; i++) y[i] = nb_elem_f32_to_f16(x[i]);
    return NB_OK;
  }
  if ((src_dt == NB_BF16 || src_dt == NB_F16) && dst_dt == NB_F32) {
    const uint16_t *x = src;
    float *y = dst;
    if (src_dt == NB_BF16)
      for (size_t i = 0; i < n; i++) y[i] = nb_elem_bf16_to_f32(x[i]);
    else
      for (size_t i = 0; i < n; i++) y[i] = nb_elem_f16_to_f32(x[i]);
    return NB_OK;
  }
  if (src_dt == NB_I64 && nb_dtype_is_float(dst_dt)) {
    /* i64 -> f32 directly: going through double would round twice */
    for (size_t i = 0; i < n; i++)
      nb_elem_store(dst, dst_dt, (int64_t)i, (float)((const int64_t *)src)[i]);
    return NB_OK;
  }
  for (size_t i = 0; i < n; i++)
    nb_elem_store(dst, dst_dt, (int64_t)i, nb_elem_load(src, src_dt, (int64_t)i));
  return NB_OK;
}
