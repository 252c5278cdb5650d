/* Layout and dtype changes: copy (dense copy of a strided view), cast, and
 * assign (writing a value into a variable's storage). */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* Copies strided `x` (data at src) densely into dst, converting dtype. */
nb_status nb_cpu_strided_copy(const nb_tensor *x, const void *src, void *dst, nb_dtype dst_dt) {
  int64_t n = nb_tensor_numel(x);
  size_t es = nb_dtype_size(x->dtype);
  if (n == 0) return NB_OK;
  if (nb_tensor_is_contiguous(x)) return nb_convert(src, x->dtype, dst, dst_dt, (size_t)n);
  int nd = x->ndim;
  int64_t inner = x->shape[nd - 1], is = x->stride[nd - 1];
  int64_t rows = n / inner;
  size_t ds = nb_dtype_size(dst_dt);
  int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (n > 32768)
  for (int64_t r = 0; r < rows; r++) {
    int64_t off = nb_strided_offset(nd - 1, x->shape, x->stride, r);
    const unsigned char *s = (const unsigned char *)src + (size_t)off * es;
    unsigned char *d = (unsigned char *)dst + (size_t)(r * inner) * ds;
    if (x->dtype == dst_dt && es == 4) {
      const float *sf = (const float *)s;
      float *df = (float *)d;
      for (int64_t k = 0; k < inner; k++) df[k] = sf[k * is];
    } else if (is == 1) {
      if (nb_convert(s, x->dtype, d, dst_dt, (size_t)inner)) failed = 1;
    } else {
      /* strided and converted (a cast of a transposed view): gather a
       * chunk of raw elements, then convert it in one call */
      unsigned char raw[256 * 8];
      const int64_t chunk = (int64_t)(sizeof raw / es);
      for (int64_t k0 = 0; k0 < inner; k0 += chunk) {
        int64_t m = inner - k0 < chunk ? inner - k0 : chunk;
        for (int64_t k = 0; k < m; k++)
          memcpy(raw + (size_t)k * es, s + (size_t)((k0 + k) * is) * es, es);
        if (nb_convert(raw, x->dtype, d + (size_t)k0 * ds, dst_dt, (size_t)m)) failed = 1;
      }
    }
  }
  return failed ? nb_error(NB_ERR_INTERNAL, "copy: conversion failed") : NB_OK;
}

static nb_status run_copy(const nb_kernel_call *c) {
  return nb_cpu_strided_copy(c->node->in[0], c->in[0], c->out, c->node->dtype);
}

static nb_status run_assign(const nb_kernel_call *c) {
  const nb_tensor *value = c->node->in[1];
  if (c->out == c->in[1]) return NB_OK;
  return nb_cpu_strided_copy(value, c->in[1], c->out, c->node->dtype);
}

void nb_cpu_register_copy(nb_cpu_kernel_entry *t) {
  t[NB_OP_COPY].run = run_copy;
  t[NB_OP_CAST].run = run_copy;
  t[NB_OP_ASSIGN].run = run_assign;
}
