/* Data movement on the GPU: concat, pad, index_select, index_add and
 * one_hot, with the CPU kernels' rules (cpu_movement.c): inputs may be any
 * strided view and, except for index_add, of any dtype (moved as opaque
 * elements of the dtype's size); every index must lie in [0, n), negative
 * ones are errors, not Python-style wraps.
 *
 * A kernel cannot return a status, so a bad index is recorded in the
 * backend's fault word (cuda_internal.h), its element is skipped (no
 * out-of-bounds access), and the error comes back from the next download.
 *
 * index_add accumulates with atomicAdd: duplicate indices sum in an
 * unspecified order, so results may differ from the CPU's (which sums in
 * index order) by rounding, and from run to run. */
#include <string.h>

#include "cuda_internal.h"

namespace {

/* An element walk over `shape` with a source and a destination stride per
 * axis: copies x into a box of a larger dense output (concat, pad). */
struct box_walk {
  int ndim;
  int64_t shape[NB_MAX_DIMS], sstride[NB_MAX_DIMS], dstride[NB_MAX_DIMS];
  int64_t dbase;
};

template <typename T> __global__ void box_kernel(const T *src, box_walk b, T *dst, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t r = i, soff = 0, doff = b.dbase;
    for (int d = b.ndim - 1; d >= 0; d--) {
      int64_t c = r % b.shape[d];
      r /= b.shape[d];
      soff += c * b.sstride[d];
      doff += c * b.dstride[d];
    }
    dst[doff] = src[soff];
  }
}

template <typename T> __global__ void fill_kernel(T *dst, T v, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) dst[i] = v;
}

void dense_strides(int ndim, const int64_t *shape, int64_t *stride) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    stride[d] = s;
    s *= shape[d];
  }
}

/* out[i + lo] = x[i] for dense `out` of shape out_shape (same rank as x). */
nb_status copy_into_box(nb_cuda *cu, const nb_tensor *x, const void *src, void *out,
                        const int64_t *out_shape, const int64_t *lo, const char *what) {
  int64_t n = nb_tensor_numel(x);
  if (n == 0) return NB_OK;
  box_walk b;
  memset(&b, 0, sizeof b);
  int64_t ostride[NB_MAX_DIMS];
  dense_strides(x->ndim, out_shape, ostride);
  b.ndim = x->ndim;
  for (int d = 0; d < x->ndim; d++) {
    b.shape[d] = x->shape[d];
    b.sstride[d] = x->stride[d];
    b.dstride[d] = ostride[d];
    b.dbase += lo[d] * ostride[d];
  }
  unsigned blocks = nb_cuda_blocks(cu, n, NB_CUDA_THREADS);
  switch (nb_dtype_size(x->dtype)) {
  case 1:
    box_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint8_t *>(src), b,
                                                           static_cast<uint8_t *>(out), n);
    break;
  case 2:
    box_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint16_t *>(src), b,
                                                           static_cast<uint16_t *>(out), n);
    break;
  case 4:
    box_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint32_t *>(src), b,
                                                           static_cast<uint32_t *>(out), n);
    break;
  default:
    box_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<const uint64_t *>(src), b,
                                                           static_cast<uint64_t *>(out), n);
    break;
  }
  return nb_cuda_launched(cu, what);
}

nb_status run_concat(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  int axis = (int)node->ip[0];
  int64_t lo[NB_MAX_DIMS] = {0};
  for (int k = 0; k < node->n_in; k++) {
    nb_status st = copy_into_box(cu, node->in[k], c->in[k], c->out, node->shape, lo, "concat");
    if (st) return st;
    lo[axis] += node->in[k]->shape[axis];
  }
  return NB_OK;
}

/* The f32 fill value is converted like nb_convert (truncation and
 * saturation for integers), on the host, once. */
nb_status run_pad(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  unsigned char fill[8] = {0};
  float value = node->fp[0];
  nb_status st = nb_convert(&value, NB_F32, fill, node->dtype, 1);
  if (st) return st;
  int64_t n = nb_tensor_numel(node);
  if (n == 0) return NB_OK;
  unsigned blocks = nb_cuda_blocks(cu, n, NB_CUDA_THREADS);
  switch (nb_dtype_size(node->dtype)) {
  case 1: {
    uint8_t v;
    memcpy(&v, fill, 1);
    fill_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<uint8_t *>(c->out), v, n);
    break;
  }
  case 2: {
    uint16_t v;
    memcpy(&v, fill, 2);
    fill_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<uint16_t *>(c->out), v, n);
    break;
  }
  case 4: {
    uint32_t v;
    memcpy(&v, fill, 4);
    fill_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<uint32_t *>(c->out), v, n);
    break;
  }
  default: {
    uint64_t v;
    memcpy(&v, fill, 8);
    fill_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(static_cast<uint64_t *>(c->out), v, n);
    break;
  }
  }
  st = nb_cuda_launched(cu, "pad");
  if (st) return st;
  int64_t lo[NB_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) lo[d] = node->ip[2 * d];
  return copy_into_box(cu, x, c->in[0], c->out, node->shape, lo, "pad");
}

/* ---- indices ------------------------------------------------------------- */

__device__ inline int64_t load_index(const void *p, int dt, int64_t off) {
  switch (dt) {
  case NB_I32: return ((const int32_t *)p)[off];
  case NB_I64: return ((const int64_t *)p)[off];
  default: return ((const uint8_t *)p)[off];
  }
}

struct index_walk {
  int ndim, axis, idt;
  int64_t shape[NB_MAX_DIMS];   /* the walked tensor (out of index_select, src of index_add) */
  int64_t sstride[NB_MAX_DIMS]; /* strides of the source read */
  int64_t dstride[NB_MAX_DIMS]; /* strides of the destination written */
  int64_t limit;                /* size of the indexed axis */
  int64_t istride;              /* index tensor stride (1-d) */
};

/* out (dense, walk.shape) = x gathered along axis: sstride are x's strides */
template <typename T>
__global__ void index_select_kernel(const T *x, const void *idx, index_walk w, T *out, int64_t n,
                                    nb_cuda_fault *fault, int op) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t r = i, soff = 0;
    bool bad = false;
    for (int d = w.ndim - 1; d >= 0; d--) {
      int64_t c = r % w.shape[d];
      r /= w.shape[d];
      if (d == w.axis) {
        int64_t v = load_index(idx, w.idt, c * w.istride);
        if (v < 0 || v >= w.limit) {
          nb_cuda_report_fault(fault, op, v, c, w.limit, w.axis);
          bad = true;
        }
        c = v;
      }
      soff += c * w.sstride[d];
    }
    out[i] = bad ? T(0) : x[soff];
  }
}

/* out (dense) += src scattered along axis: walk over src (sstride), dstride
 * are out's dense strides */
__global__ void index_add_kernel(const float *src, const void *idx, index_walk w, float *out,
                                 int64_t n, nb_cuda_fault *fault, int op) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t r = i, soff = 0, doff = 0;
    bool bad = false;
    for (int d = w.ndim - 1; d >= 0; d--) {
      int64_t c = r % w.shape[d];
      r /= w.shape[d];
      soff += c * w.sstride[d];
      if (d == w.axis) {
        int64_t v = load_index(idx, w.idt, c * w.istride);
        if (v < 0 || v >= w.limit) {
          nb_cuda_report_fault(fault, op, v, c, w.limit, w.axis);
          bad = true;
        }
        c = v;
      }
      doff += c * w.dstride[d];
    }
    if (!bad) atomicAdd(out + doff, src[soff]);
  }
}

__global__ void one_hot_kernel(const void *lab, int dt, nb_cuda_layout l, int64_t classes,
                               float *out, int64_t n, nb_cuda_fault *fault, int op) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t p = i / classes, k = i % classes;
    int64_t v = load_index(lab, dt, nb_cuda_offset(l, p));
    if (k == 0 && (v < 0 || v >= classes)) nb_cuda_report_fault(fault, op, v, p, classes, -1);
    out[i] = v == k ? 1.0f : 0.0f;
  }
}

nb_status check_index_dtype(nb_cuda *cu, const nb_tensor *node, const nb_tensor *it, int labels) {
  if (it->dtype == NB_I32 || it->dtype == NB_I64 || (labels && it->dtype == NB_U8)) return NB_OK;
  return nb_error(NB_ERR_DTYPE, "%s: %s: index dtype %s is not supported", cu->name,
                  nb_cuda_op_name(node), nb_dtype_name(it->dtype));
}

nb_status run_index_select(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0], *it = node->in[1];
  int axis = (int)node->ip[0];
  nb_status st = check_index_dtype(cu, node, it, 0);
  int64_t n = nb_tensor_numel(node);
  if (st || n == 0) return st;
  index_walk w;
  memset(&w, 0, sizeof w);
  w.ndim = node->ndim;
  w.axis = axis;
  w.idt = (int)it->dtype;
  w.limit = x->shape[axis];
  w.istride = it->stride[0];
  for (int d = 0; d < node->ndim; d++) {
    w.shape[d] = node->shape[d];
    w.sstride[d] = x->stride[d];
  }
  unsigned blocks = nb_cuda_blocks(cu, n, NB_CUDA_THREADS);
  int op = (int)node->op;
  switch (nb_dtype_size(x->dtype)) {
  case 1:
    index_select_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
        static_cast<const uint8_t *>(c->in[0]), c->in[1], w, static_cast<uint8_t *>(c->out), n,
        cu->fault_dev, op);
    break;
  case 2:
    index_select_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
        static_cast<const uint16_t *>(c->in[0]), c->in[1], w, static_cast<uint16_t *>(c->out), n,
        cu->fault_dev, op);
    break;
  case 4:
    index_select_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
        static_cast<const uint32_t *>(c->in[0]), c->in[1], w, static_cast<uint32_t *>(c->out), n,
        cu->fault_dev, op);
    break;
  default:
    index_select_kernel<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
        static_cast<const uint64_t *>(c->in[0]), c->in[1], w, static_cast<uint64_t *>(c->out), n,
        cu->fault_dev, op);
    break;
  }
  return nb_cuda_launched(cu, "index_select");
}

nb_status run_index_add(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0], *it = node->in[1], *src = node->in[2];
  int axis = (int)node->ip[0];
  if (x->dtype != NB_F32 || src->dtype != NB_F32)
    return nb_error(NB_ERR_INTERNAL, "index_add: x and src must be f32");
  nb_status st = check_index_dtype(cu, node, it, 0);
  if (!st) st = nb_cuda_strided_copy(cu, x, c->in[0], c->out, NB_F32, "index_add");
  int64_t n = nb_tensor_numel(src);
  if (st || n == 0) return st;
  index_walk w;
  memset(&w, 0, sizeof w);
  w.ndim = src->ndim;
  w.axis = axis;
  w.idt = (int)it->dtype;
  w.limit = node->shape[axis];
  w.istride = it->stride[0];
  dense_strides(node->ndim, node->shape, w.dstride);
  for (int d = 0; d < src->ndim; d++) {
    w.shape[d] = src->shape[d];
    w.sstride[d] = src->stride[d];
  }
  index_add_kernel<<<nb_cuda_blocks(cu, n, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
      static_cast<const float *>(c->in[2]), c->in[1], w, static_cast<float *>(c->out), n,
      cu->fault_dev, (int)node->op);
  return nb_cuda_launched(cu, "index_add");
}

nb_status run_one_hot(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *lab = node->in[0];
  nb_status st = check_index_dtype(cu, node, lab, 1);
  int64_t n = nb_tensor_numel(node), classes = node->ip[0];
  if (st || n == 0) return st;
  one_hot_kernel<<<nb_cuda_blocks(cu, n, NB_CUDA_THREADS), NB_CUDA_THREADS, 0, cu->stream>>>(
      c->in[0], (int)lab->dtype, nb_cuda_layout_of(lab), classes, static_cast<float *>(c->out), n,
      cu->fault_dev, (int)node->op);
  return nb_cuda_launched(cu, "one_hot");
}

nb_status check_elem_size(nb_cuda *cu, const nb_tensor *node) {
  size_t es = nb_dtype_size(node->dtype);
  if (es == 1 || es == 2 || es == 4 || es == 8) return NB_OK;
  return nb_error(NB_ERR_DTYPE, "%s: %s: dtype %s is not supported", cu->name,
                  nb_cuda_op_name(node), nb_dtype_name(node->dtype));
}

nb_status check_index_op(nb_cuda *cu, const nb_tensor *node) {
  nb_status st = check_elem_size(cu, node);
  if (st) return st;
  if (node->op == NB_OP_ONE_HOT) return check_index_dtype(cu, node, node->in[0], 1);
  return check_index_dtype(cu, node, node->in[1], 0);
}

} // namespace

void nb_cuda_register_movement(nb_cuda_kernel_entry *t) {
  t[NB_OP_CONCAT].run = run_concat;
  t[NB_OP_CONCAT].check = check_elem_size;
  t[NB_OP_PAD].run = run_pad;
  t[NB_OP_PAD].check = check_elem_size;
  t[NB_OP_INDEX_SELECT].run = run_index_select;
  t[NB_OP_INDEX_SELECT].check = check_index_op;
  t[NB_OP_INDEX_ADD].run = run_index_add;
  t[NB_OP_INDEX_ADD].check = check_index_op;
  t[NB_OP_ONE_HOT].run = run_one_hot;
  t[NB_OP_ONE_HOT].check = check_index_op;
}
