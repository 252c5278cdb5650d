/* CPU kernels of the run-time position ops (layout in ops_decode.c):
 * write_at (rows of a variable overwritten in place) and slice_at (rows
 * copied out). Both move whole rows of the axes after `axis` with memcpy;
 * decode-time tensors are small, so they run on one thread. The cached
 * attention kernel lives beside the other attention kernels
 * (cpu_attention.c). */
#include <string.h>

#include "cpu_internal.h"

nb_status nb_cpu_read_pos(const nb_tensor *node, const nb_tensor *pos, const void *p,
                          int64_t *out) {
  if (!p || nb_tensor_numel(pos) != 1 || (pos->dtype != NB_I32 && pos->dtype != NB_I64))
    return nb_error(NB_ERR_INTERNAL, "%s: pos is not one i32/i64 element",
                    nb_op_def_get(node->op)->name);
  *out = pos->dtype == NB_I32 ? (int64_t) * (const int32_t *)p : *(const int64_t *)p;
  return NB_OK;
}

/* Bytes in one row of `axis` (the product of the later axes) and the number
 * of rows before it (the product of the earlier axes). */
static void row_geometry(const nb_tensor *t, int axis, int64_t *outer, size_t *row_bytes) {
  int64_t o = 1, in = 1;
  for (int d = 0; d < axis; d++) o *= t->shape[d];
  for (int d = axis + 1; d < t->ndim; d++) in *= t->shape[d];
  *outer = o;
  *row_bytes = (size_t)in * nb_dtype_size(t->dtype);
}

static nb_status run_write_at(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *var = node->in[0], *val = node->in[1];
  int axis = (int)node->ip[0];
  int64_t pos;
  nb_status st = nb_cpu_read_pos(node, node->in[2], c->in[2], &pos);
  if (st) return st;
  int64_t n = val->shape[axis], cap = var->shape[axis];
  if (pos < 0 || pos > cap - n)
    return nb_error(NB_ERR_INVALID_ARG,
                    "write_at: rows [%lld, %lld) do not fit in '%s', which holds %lld rows on "
                    "axis %d (pos must be in [0, %lld])",
                    (long long)pos, (long long)(pos + n), var->name ? var->name : "?",
                    (long long)cap, axis, (long long)(cap - n));
  if (!nb_tensor_is_contiguous(val) || !nb_tensor_is_contiguous(var))
    return nb_error(NB_ERR_INTERNAL, "write_at: value or variable is not contiguous");
  int64_t outer;
  size_t row;
  row_geometry(var, axis, &outer, &row);
  unsigned char *dst = c->out;
  const unsigned char *src = c->in[1];
  if (!n || !row) return NB_OK;
  for (int64_t o = 0; o < outer; o++)
    memcpy(dst + (size_t)(o * cap + pos) * row, src + (size_t)(o * n) * row, (size_t)n * row);
  return NB_OK;
}

static nb_status run_slice_at(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  int axis = (int)node->ip[0];
  int64_t pos, n = node->ip[1], len = x->shape[axis];
  nb_status st = nb_cpu_read_pos(node, node->in[1], c->in[1], &pos);
  if (st) return st;
  if (pos < 0 || pos > len - n)
    return nb_error(NB_ERR_INVALID_ARG,
                    "slice_at: rows [%lld, %lld) are outside the %lld rows of axis %d%s%s (pos "
                    "must be in [0, %lld])",
                    (long long)pos, (long long)(pos + n), (long long)len, axis,
                    x->name ? " of " : "", x->name ? x->name : "", (long long)(len - n));
  if (!nb_tensor_is_contiguous(x))
    return nb_error(NB_ERR_INTERNAL, "slice_at: input is not contiguous");
  int64_t outer;
  size_t row;
  row_geometry(x, axis, &outer, &row);
  unsigned char *dst = c->out;
  const unsigned char *src = c->in[0];
  if (!n || !row) return NB_OK;
  for (int64_t o = 0; o < outer; o++)
    memcpy(dst + (size_t)(o * n) * row, src + (size_t)(o * len + pos) * row, (size_t)n * row);
  return NB_OK;
}

void nb_cpu_register_decode(nb_cpu_kernel_entry *t) {
  t[NB_OP_WRITE_AT].run = run_write_at;
  t[NB_OP_SLICE_AT].run = run_slice_at;
}
