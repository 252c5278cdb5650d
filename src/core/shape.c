/* Shape helpers shared by every layer. */
#include <stdio.h>

#include "nabla/tensor.h"

int64_t nb_shape_numel(int ndim, const int64_t *shape) {
  if (ndim > 0 && !shape) return -1;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    /* a negative dimension or a count beyond int64 is not a valid shape:
     * return -1 rather than a product that overflows (undefined behaviour) */
    if (shape[i] < 0 || (shape[i] && n > INT64_MAX / shape[i])) return -1;
    n *= shape[i];
  }
  return n;
}

char *nb_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
  if (!buf || cap == 0) return buf;
  size_t used = 0;
  int w = snprintf(buf, cap, "[");
  used = w > 0 ? (size_t)w : 0;
  for (int i = 0; i < ndim && used < cap; i++) {
    w = snprintf(buf + used, cap - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (w < 0) break;
    used += (size_t)w;
  }
  if (used < cap) snprintf(buf + used, cap - used, "]");
  buf[cap - 1] = '\0';
  return buf;
}
