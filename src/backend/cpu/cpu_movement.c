/* Data movement: concat, pad, index_select, index_add and one_hot. Inputs
 * may be any strided view (transposes, step slices, broadcasts) and, except
 * for index_add and one_hot's output, of any dtype: elements are moved as
 * opaque bytes of the dtype's size.
 *
 * Index rule (index_select, index_add, one_hot): every index must lie in
 * [0, n) for the indexed axis of size n (the class count for one_hot).
 * Negative indices are NOT wrapped Python-style, they are errors, like
 * torch.index_select: a negative id is almost always a bug upstream (an
 * unset label, a padding id), and silently reading from the end would hide
 * it. All indices are checked before anything is read through them, so a
 * bad one yields NB_ERR_INVALID_ARG naming the op, value and position, and
 * never an out-of-bounds access. */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* Below this many moved elements, thread start-up costs more than it saves. */
#define PAR_MIN 32768
/* Columns one index_add work item owns. */
#define COLS 256

typedef unsigned char u8;

/* Copies n elements of es bytes read at element stride `stride` into dense dst.
 * Fixed-size memcpy compiles to a plain load/store and, unlike a cast to
 * uint32_t *, does not break strict aliasing on float data. */
static void copy_run(u8 *dst, const u8 *src, int64_t n, int64_t stride, size_t es) {
  if (stride == 1) {
    memcpy(dst, src, (size_t)n * es);
    return;
  }
  switch (es) {
  case 1:
    for (int64_t k = 0; k < n; k++) dst[k] = src[k * stride];
    break;
  case 2:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 2 * k, src + 2 * k * stride, 2);
    break;
  case 4:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 4 * k, src + 4 * k * stride, 4);
    break;
  default:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 8 * k, src + 8 * k * stride, 8);
    break;
  }
}

static void fill_elems(u8 *dst, int64_t n, const u8 *v, size_t es) {
  int zero = 1;
  for (size_t b = 0; b < es; b++) zero &= v[b] == 0;
  if (zero) {
    memset(dst, 0, (size_t)n * es);
    return;
  }
  switch (es) {
  case 1: memset(dst, v[0], (size_t)n); break;
  case 2:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 2 * k, v, 2);
    break;
  case 4:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 4 * k, v, 4);
    break;
  default:
    for (int64_t k = 0; k < n; k++) memcpy(dst + 8 * k, v, 8);
    break;
  }
}

/* Writes strided x into the box of dense `out` (shape out_shape, same rank)
 * that starts at corner `lo`: out[i + lo] = x[i]. Serves concat (lo on the
 * axis), pad (lo = padding before) and plain densifying copies (lo = 0).
 *
 * Axes are first merged wherever both sides stay linear across them (x's
 * strides nest and the box spans the whole output axis), so a contiguous
 * concat on axis 0 is one memcpy per input and a broadcast scalar is one
 * stride-0 run. The remaining runs along the last merged axis are cut into
 * pieces of at most RUN elements, the unit of parallel work. */
#define RUN 16384

static void copy_into_box(const nb_tensor *x, const void *src, void *out, const int64_t *out_shape,
                          const int64_t *lo) {
  int64_t n = nb_tensor_numel(x);
  if (n == 0) return;
  size_t es = nb_dtype_size(x->dtype);
  /* merged axes, innermost first */
  int64_t sh[NB_MAX_DIMS + 1], st[NB_MAX_DIMS + 1], osh[NB_MAX_DIMS + 1], c0[NB_MAX_DIMS + 1];
  int m = 0;
  for (int d = x->ndim - 1; d >= 0; d--) {
    if (x->shape[d] == 1 && out_shape[d] == 1) continue; /* lo[d] is 0 then */
    if (m > 0 && osh[m - 1] == sh[m - 1] && c0[m - 1] == 0 &&
        (x->shape[d] == 1 || x->stride[d] == st[m - 1] * sh[m - 1])) {
      c0[m - 1] = lo[d] * osh[m - 1];
      sh[m - 1] *= x->shape[d];
      osh[m - 1] *= out_shape[d];
      continue;
    }
    sh[m] = x->shape[d];
    st[m] = x->stride[d];
    osh[m] = out_shape[d];
    c0[m++] = lo[d];
  }
  if (m == 0) { /* a single element */
    sh[0] = st[0] = osh[0] = 1;
    c0[0] = 0;
    m = 1;
  }
  int64_t ostr[NB_MAX_DIMS + 1], os = 1;
  for (int k = 0; k < m; k++) {
    ostr[k] = os;
    os *= osh[k];
  }
  int64_t inner = sh[0], is = inner > 1 ? st[0] : 1;
  int64_t pieces = (inner + RUN - 1) / RUN, tasks = n / inner * pieces;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (n > PAR_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t r = t / pieces, k0 = (t % pieces) * RUN;
    int64_t len = inner - k0 < RUN ? inner - k0 : RUN;
    int64_t soff = k0 * is, doff = c0[0] + k0, rem = r;
    for (int k = 1; k < m; k++) {
      int64_t i = rem % sh[k];
      rem /= sh[k];
      soff += i * st[k];
      doff += (i + c0[k]) * ostr[k];
    }
    copy_run((u8 *)out + (size_t)doff * es, (const u8 *)src + (size_t)soff * es, len, is, es);
  }
}

/* ---- indices ------------------------------------------------------------- */

/* Reads every element of index tensor `it` (any strides) into a new int64
 * array, checking each against [0, limit). The kernels then loop over plain
 * int64 values, and nothing is read through an index until all are known to
 * be good. `axis` < 0 means one_hot (labels, no axis in the message). The
 * caller frees *out (also on error, when it is NULL). */
static nb_status read_indices(const nb_tensor *node, const nb_tensor *it, const void *p,
                              int64_t limit, int axis, int64_t **out) {
  const char *op = nb_op_def_get(node->op)->name;
  *out = NULL;
  if (it->dtype != NB_I32 && it->dtype != NB_I64 && !(axis < 0 && it->dtype == NB_U8))
    return nb_error(NB_ERR_DTYPE, "%s: index dtype %s is not supported", op,
                    nb_dtype_name(it->dtype));
  int64_t n = nb_tensor_numel(it);
  int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  if (!v) return nb_error(NB_ERR_OOM, "%s: cannot allocate %lld indices", op, (long long)n);
  *out = v;
  int contiguous = nb_tensor_is_contiguous(it);
  for (int64_t k = 0; k < n; k++) {
    int64_t off = contiguous ? k : nb_strided_offset(it->ndim, it->shape, it->stride, k);
    switch (it->dtype) {
    case NB_I32: v[k] = ((const int32_t *)p)[off]; break;
    case NB_I64: v[k] = ((const int64_t *)p)[off]; break;
    default: v[k] = ((const uint8_t *)p)[off]; break;
    }
    if (v[k] >= 0 && v[k] < limit) continue;
    if (axis < 0)
      return nb_error(NB_ERR_INVALID_ARG,
                      "%s: label %lld at position %lld is out of range [0, %lld)", op,
                      (long long)v[k], (long long)k, (long long)limit);
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: index %lld at position %lld is out of range [0, %lld) on axis %d", op,
                    (long long)v[k], (long long)k, (long long)limit, axis);
  }
  return NB_OK;
}

/* The axes after `axis` of a strided tensor: one block of `numel` elements
 * per (outer, axis) position. */
typedef struct {
  int n;
  int64_t shape[NB_MAX_DIMS], stride[NB_MAX_DIMS];
  int64_t numel;
  int dense; /* laid out row-major with unit inner stride: one memcpy */
} inner_dims;

static void inner_of(const nb_tensor *x, int axis, inner_dims *b) {
  b->n = 0;
  b->numel = 1;
  b->dense = 1;
  for (int d = x->ndim - 1; d > axis; d--) {
    if (x->shape[d] != 1 && x->stride[d] != b->numel) b->dense = 0;
    b->numel *= x->shape[d];
  }
  for (int d = axis + 1; d < x->ndim; d++) {
    b->shape[b->n] = x->shape[d];
    b->stride[b->n++] = x->stride[d];
  }
}

/* Copies one inner block from strided src into dense dst. */
static void copy_block(u8 *dst, const u8 *src, const inner_dims *b, size_t es) {
  if (b->dense || b->n == 0) {
    memcpy(dst, src, (size_t)b->numel * es);
    return;
  }
  int64_t last = b->shape[b->n - 1], ls = b->stride[b->n - 1];
  if (last == 0) return;
  int64_t rows = b->numel / last;
  for (int64_t q = 0; q < rows; q++) {
    int64_t off = nb_strided_offset(b->n - 1, b->shape, b->stride, q);
    copy_run(dst + (size_t)(q * last) * es, src + (size_t)off * es, last, last > 1 ? ls : 1, es);
  }
}

/* ---- kernels --------------------------------------------------------------- */

static nb_status run_concat(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  int axis = (int)node->ip[0];
  int64_t lo[NB_MAX_DIMS] = {0};
  for (int k = 0; k < node->n_in; k++) {
    copy_into_box(node->in[k], c->in[k], c->out, node->shape, lo);
    lo[axis] += node->in[k]->shape[axis];
  }
  return NB_OK;
}

/* The f32 fill value is converted like nb_convert: integer dtypes truncate
 * toward zero and saturate (-1.5 pads u8 with 0), f16/bf16 round. */
static nb_status run_pad(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  size_t es = nb_dtype_size(node->dtype);
  u8 fill[8] = {0};
  float value = node->fp[0];
  nb_status st = nb_convert(&value, NB_F32, fill, node->dtype, 1);
  if (st) return st;
  int64_t n = nb_tensor_numel(node);
  int nt = nb_cpu_threads();
  int64_t per = (n + nt - 1) / (nt ? nt : 1);
  /* only the border needs the fill, but one streaming pass over the whole
   * output is simpler and about as fast as walking the border faces */
#pragma omp parallel for schedule(static) num_threads(nt) if (n > PAR_MIN)
  for (int t = 0; t < nt; t++) {
    int64_t a = t * per, b = a + per < n ? a + per : n;
    if (a < b) fill_elems((u8 *)c->out + (size_t)a * es, b - a, fill, es);
  }
  int64_t lo[NB_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++) lo[d] = node->ip[2 * d];
  copy_into_box(x, c->in[0], c->out, node->shape, lo);
  return NB_OK;
}

/* Gathers n single elements base[idx[i] * stride] into dense dst. */
static void gather_elems(u8 *dst, const u8 *base, const int64_t *idx, int64_t n, int64_t stride,
                         size_t es) {
  switch (es) {
  case 1:
    for (int64_t i = 0; i < n; i++) dst[i] = base[idx[i] * stride];
    break;
  case 2:
    for (int64_t i = 0; i < n; i++) memcpy(dst + 2 * i, base + 2 * idx[i] * stride, 2);
    break;
  case 4:
    for (int64_t i = 0; i < n; i++) memcpy(dst + 4 * i, base + 4 * idx[i] * stride, 4);
    break;
  default:
    for (int64_t i = 0; i < n; i++) memcpy(dst + 8 * i, base + 8 * idx[i] * stride, 8);
    break;
  }
}

static nb_status run_index_select(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  int axis = (int)node->ip[0];
  int64_t *idx;
  nb_status st = read_indices(node, node->in[1], c->in[1], x->shape[axis], axis, &idx);
  if (st || nb_tensor_numel(node) == 0) { /* empty: out may be NULL */
    free(idx);
    return st;
  }
  int64_t n_idx = node->in[1]->shape[0], outer = 1;
  for (int d = 0; d < axis; d++) outer *= x->shape[d];
  inner_dims b;
  inner_of(x, axis, &b);
  size_t es = nb_dtype_size(x->dtype);
  /* a work item is a run of indices at one outer position, long enough to
   * amortise locating that position when the gathered blocks are small */
  int64_t per = b.numel >= 4096 ? 1 : 4096 / b.numel;
  if (per > n_idx) per = n_idx;
  int64_t runs = (n_idx + per - 1) / per, items = outer * runs, xs = x->stride[axis];
  const u8 *src = c->in[0];
  u8 *out = c->out;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (outer * n_idx * b.numel > PAR_MIN && items > 1)
  for (int64_t t = 0; t < items; t++) {
    int64_t o = t / runs, i0 = (t % runs) * per;
    int64_t i1 = i0 + per < n_idx ? i0 + per : n_idx;
    const u8 *base = src + (size_t)nb_strided_offset(axis, x->shape, x->stride, o) * es;
    u8 *dst = out + (size_t)((o * n_idx + i0) * b.numel) * es;
    if (b.numel == 1) {
      gather_elems(dst, base, idx + i0, i1 - i0, xs, es);
      continue;
    }
    for (int64_t i = i0; i < i1; i++, dst += (size_t)b.numel * es)
      copy_block(dst, base + (size_t)(idx[i] * xs) * es, &b, es);
  }
  free(idx);
  return NB_OK;
}

/* out = x; out[.., index[i], ..] += src[.., i, ..]. Work is split over
 * (outer position, block of COLS columns) and each item walks the index in
 * order, so every output element has exactly one writer and sums its
 * contributions in index order: no atomics, and the same bits for any
 * thread count. */
static nb_status run_index_add(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0], *sr = node->in[2];
  int axis = (int)node->ip[0];
  if (x->dtype != NB_F32 || sr->dtype != NB_F32)
    return nb_error(NB_ERR_INTERNAL, "index_add: x and src must be f32");
  int64_t *idx;
  nb_status st = read_indices(node, node->in[1], c->in[1], x->shape[axis], axis, &idx);
  if (st) {
    free(idx);
    return st;
  }
  int64_t lo[NB_MAX_DIMS] = {0};
  copy_into_box(x, c->in[0], c->out, node->shape, lo);
  int64_t n_idx = node->in[1]->shape[0], len = node->shape[axis], outer = 1;
  for (int d = 0; d < axis; d++) outer *= node->shape[d];
  inner_dims b;
  inner_of(sr, axis, &b);
  int64_t inner = b.numel, blocks = (inner + COLS - 1) / COLS, items = outer * blocks;
  int64_t ss = sr->stride[axis];
  const float *src = c->in[2];
  float *out = c->out;
  if (n_idx == 0 || inner == 0) items = 0;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (outer * inner * n_idx > PAR_MIN && items > 1)
  for (int64_t t = 0; t < items; t++) {
    int64_t o = t / blocks, j0 = (t % blocks) * COLS;
    int64_t w = inner - j0 < COLS ? inner - j0 : COLS;
    const float *so = src + nb_strided_offset(axis, sr->shape, sr->stride, o);
    float *oo = out + o * len * inner + j0;
    if (inner == 1) { /* indexing the last axis: one scalar per index */
      for (int64_t i = 0; i < n_idx; i++) oo[idx[i]] += so[i * ss];
      continue;
    }
    int64_t col[COLS];
    for (int64_t j = 0; j < w; j++)
      col[j] = b.dense ? j0 + j : nb_strided_offset(b.n, b.shape, b.stride, j0 + j);
    for (int64_t i = 0; i < n_idx; i++) {
      float *dst = oo + idx[i] * inner;
      const float *s = so + i * ss;
      for (int64_t j = 0; j < w; j++) dst[j] += s[col[j]];
    }
  }
  free(idx);
  return NB_OK;
}

static nb_status run_one_hot(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *lab = node->in[0];
  int64_t classes = node->ip[0];
  int64_t *v;
  nb_status st = read_indices(node, lab, c->in[0], classes, -1, &v);
  int64_t n = nb_tensor_numel(lab);
  if (st || n == 0) { /* empty: out may be NULL */
    free(v);
    return st;
  }
  float *out = c->out;
  memset(out, 0, (size_t)(n * classes) * sizeof *out);
  for (int64_t p = 0; p < n; p++) out[p * classes + v[p]] = 1.0f;
  free(v);
  return NB_OK;
}

void nb_cpu_register_movement(nb_cpu_kernel_entry *t) {
  t[NB_OP_CONCAT].run = run_concat;
  t[NB_OP_PAD].run = run_pad;
  t[NB_OP_INDEX_SELECT].run = run_index_select;
  t[NB_OP_INDEX_ADD].run = run_index_add;
  t[NB_OP_ONE_HOT].run = run_one_hot;
}
