/* Fused elementwise engine. Every elementwise node runs as a group of one or
 * more ops: the output index space is cut into tiles; for each tile the
 * external inputs are read (broadcast and strided views gathered), the ops
 * are evaluated tile-wise in cache-resident buffers, and only the last
 * result is written. A lone op is simply a group of one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define TILE 512

typedef struct {
  /* per external input: broadcast strides over the output shape */
  int64_t stride[NB_MAX_DIMS];
  int dense;  /* same shape as output and contiguous: read in place */
  int scalar; /* one element broadcast everywhere */
} ext_layout;

static void layout_of(const nb_tensor *x, const nb_tensor *out, ext_layout *l) {
  int lead = out->ndim - x->ndim;
  int dense = x->ndim == out->ndim, scalar = 1;
  for (int d = 0; d < out->ndim; d++) {
    int j = d - lead;
    int64_t s = (j < 0 || x->shape[j] == 1) ? 0 : x->stride[j];
    l->stride[d] = s;
    if (s != 0) scalar = 0;
    if (j >= 0 && x->shape[j] != out->shape[d]) dense = 0;
  }
  l->dense = dense && nb_tensor_is_contiguous(x);
  l->scalar = scalar;
}

static void gather_tile(const float *src, const ext_layout *l, const nb_tensor *out, int64_t start,
                        int64_t n, float *dst) {
  int nd = out->ndim;
  int64_t idx[NB_MAX_DIMS], off = 0, rem = start;
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = out->shape[d] ? rem % out->shape[d] : 0;
    rem = out->shape[d] ? rem / out->shape[d] : 0;
    off += idx[d] * l->stride[d];
  }
  int64_t inner = nd ? out->shape[nd - 1] : 1, is = nd ? l->stride[nd - 1] : 0;
  int64_t i = 0;
  while (i < n) {
    /* run along the innermost axis */
    int64_t run = nd ? inner - idx[nd - 1] : 1;
    if (run > n - i) run = n - i;
    if (is == 1)
      memcpy(dst + i, src + off, (size_t)run * sizeof(float));
    else if (is == 0)
      for (int64_t k = 0; k < run; k++) dst[i + k] = src[off];
    else
      for (int64_t k = 0; k < run; k++) dst[i + k] = src[off + k * is];
    i += run;
    if (nd == 0) break;
    off += run * is;
    idx[nd - 1] += run;
    for (int d = nd - 1; d > 0 && idx[d] >= out->shape[d]; d--) {
      off -= idx[d] * l->stride[d];
      idx[d] = 0;
      idx[d - 1]++;
      off += l->stride[d - 1];
    }
  }
}

static inline float gelu_exact(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

static inline float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static inline float gelu_grad(float x, int approximate) {
  if (!approximate) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
    return cdf + x * pdf;
  }
  const float k = 0.7978845608028654f;
  float inner = k * (x + 0.044715f * x * x * x);
  float t = tanhf(inner);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
}

static void eval_op(const nb_fused_op *op, const float *a, const float *b, const float *c, float *y,
                    int64_t n, int64_t start, uint64_t step) {
  int64_t i;
  switch (op->op) {
  case NB_OP_ADD:
    for (i = 0; i < n; i++) y[i] = a[i] + b[i];
    break;
  case NB_OP_SUB:
    for (i = 0; i < n; i++) y[i] = a[i] - b[i];
    break;
  case NB_OP_MUL:
    for (i = 0; i < n; i++) y[i] = a[i] * b[i];
    break;
  case NB_OP_DIV:
    for (i = 0; i < n; i++) y[i] = a[i] / b[i];
    break;
  case NB_OP_POW:
    for (i = 0; i < n; i++) y[i] = powf(a[i], b[i]);
    break;
  case NB_OP_MAXIMUM:
    for (i = 0; i < n; i++) y[i] = (a[i] != a[i] || a[i] > b[i]) ? a[i] : b[i];
    break;
  case NB_OP_MINIMUM:
    for (i = 0; i < n; i++) y[i] = (a[i] != a[i] || a[i] < b[i]) ? a[i] : b[i];
    break;
  case NB_OP_EQ:
    for (i = 0; i < n; i++) y[i] = a[i] == b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_NE:
    for (i = 0; i < n; i++) y[i] = a[i] != b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_LT:
    for (i = 0; i < n; i++) y[i] = a[i] < b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_LE:
    for (i = 0; i < n; i++) y[i] = a[i] <= b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GT:
    for (i = 0; i < n; i++) y[i] = a[i] > b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GE:
    for (i = 0; i < n; i++) y[i] = a[i] >= b[i] ? 1.0f : 0.0f;
    break;
  case NB_OP_GELU_BWD:
    for (i = 0; i < n; i++) y[i] = b[i] * gelu_grad(a[i], (int)op->ip0);
    break;
  case NB_OP_WHERE:
    for (i = 0; i < n; i++) y[i] = a[i] != 0.0f ? b[i] : c[i];
    break;
  case NB_OP_NEG:
    for (i = 0; i < n; i++) y[i] = -a[i];
    break;
  case NB_OP_ABS:
    for (i = 0; i < n; i++) y[i] = fabsf(a[i]);
    break;
  case NB_OP_SIGN:
    for (i = 0; i < n; i++) y[i] = (float)(a[i] > 0.0f) - (float)(a[i] < 0.0f);
    break;
  case NB_OP_EXP:
    for (i = 0; i < n; i++) y[i] = expf(a[i]);
    break;
  case NB_OP_LOG:
    for (i = 0; i < n; i++) y[i] = logf(a[i]);
    break;
  case NB_OP_SQRT:
    for (i = 0; i < n; i++) y[i] = sqrtf(a[i]);
    break;
  case NB_OP_RSQRT:
    for (i = 0; i < n; i++) y[i] = 1.0f / sqrtf(a[i]);
    break;
  case NB_OP_SQUARE:
    for (i = 0; i < n; i++) y[i] = a[i] * a[i];
    break;
  case NB_OP_RECIPROCAL:
    for (i = 0; i < n; i++) y[i] = 1.0f / a[i];
    break;
  case NB_OP_TANH:
    for (i = 0; i < n; i++) y[i] = tanhf(a[i]);
    break;
  case NB_OP_SIGMOID:
    for (i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-a[i]));
    break;
  case NB_OP_RELU:
    /* NaN passes through (like PyTorch) so a diverging run is not masked */
    for (i = 0; i < n; i++) y[i] = a[i] > 0.0f || a[i] != a[i] ? a[i] : 0.0f;
    break;
  case NB_OP_LEAKY_RELU:
    for (i = 0; i < n; i++) y[i] = a[i] > 0.0f ? a[i] : a[i] * op->fp[0];
    break;
  case NB_OP_GELU:
    if (op->ip0)
      for (i = 0; i < n; i++) y[i] = gelu_tanh(a[i]);
    else
      for (i = 0; i < n; i++) y[i] = gelu_exact(a[i]);
    break;
  case NB_OP_SILU:
    for (i = 0; i < n; i++) y[i] = a[i] / (1.0f + expf(-a[i]));
    break;
  case NB_OP_SOFTPLUS: {
    float beta = op->fp[0], thr = op->fp[1];
    for (i = 0; i < n; i++) {
      float bx = beta * a[i];
      y[i] = bx > thr ? a[i] : log1pf(expf(bx)) / beta;
    }
    break;
  }
  case NB_OP_CLAMP: {
    float lo = op->fp[0], hi = op->fp[1];
    for (i = 0; i < n; i++) y[i] = a[i] < lo ? lo : a[i] > hi ? hi : a[i];
    break;
  }
  case NB_OP_DROPOUT: {
    float p = op->fp[0], scale = 1.0f / (1.0f - p);
    uint64_t seed = (uint64_t)op->ip0 ^ (step * 0x9e3779b97f4a7c15ull);
    for (i = 0; i < n; i++)
      y[i] = nb_hash_uniform(seed, (uint64_t)(start + i)) < p ? 0.0f : a[i] * scale;
    break;
  }
  default: break;
  }
}

static int supported(nb_opcode op) { return nb_op_def_get(op)->fusion == NB_FUSE_ELEMWISE; }

static nb_status run_group(const nb_kernel_call *c) {
  const nb_fused_group *g = c->group;
  const nb_tensor *out = c->node;
  if (!g) return nb_error(NB_ERR_INTERNAL, "elementwise kernel launched without a group");
  for (int k = 0; k < g->n_ops; k++)
    if (!supported(g->ops[k].op))
      return nb_error(NB_ERR_INTERNAL, "op %s in an elementwise group",
                      nb_op_def_get(g->ops[k].op)->name);
  int64_t n = nb_tensor_numel(out);
  if (n == 0) return NB_OK;
  ext_layout *lay = malloc((size_t)g->n_ext * sizeof *lay + 1);
  if (!lay) return nb_error(NB_ERR_OOM, "elementwise: out of memory");
  for (int e = 0; e < g->n_ext; e++) layout_of(g->ext[e], out, &lay[e]);
  int64_t tiles = (n + TILE - 1) / TILE;
  int nthreads = nb_cpu_threads();
  if (tiles < nthreads) nthreads = (int)tiles;
  size_t slots = (size_t)(g->n_ops + g->n_ext);
  int failed = 0;
#pragma omp parallel num_threads(nthreads)
  {
    float *buf = malloc(slots * TILE * sizeof(float));
    const float **src = malloc(slots * sizeof *src);
    if (!buf || !src) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
      if (!buf || !src) continue;
      int64_t start = t * TILE, len = n - start < TILE ? n - start : TILE;
      const float **ext = src;
      for (int e = 0; e < g->n_ext; e++) {
        const float *base = c->in[e];
        if (lay[e].dense) {
          ext[e] = base + start;
        } else {
          float *dst = buf + (size_t)(g->n_ops + e) * TILE;
          if (lay[e].scalar)
            for (int64_t i = 0; i < len; i++) dst[i] = base[0];
          else
            gather_tile(base, &lay[e], out, start, len, dst);
          ext[e] = dst;
        }
      }
      for (int k = 0; k < g->n_ops; k++) {
        const nb_fused_op *op = &g->ops[k];
        const float *args[3] = {NULL, NULL, NULL};
        for (int s = 0; s < op->n_src; s++)
          args[s] = op->src[s] >= 0 ? ext[op->src[s]] : buf + (size_t)(-op->src[s] - 1) * TILE;
        float *y = k == g->n_ops - 1 ? (float *)c->out + start : buf + (size_t)k * TILE;
        eval_op(op, args[0], args[1], args[2], y, len, start, c->step);
      }
    }
    free(buf);
    free(src);
  }
  free(lay);
  return failed ? nb_error(NB_ERR_OOM, "elementwise: out of memory") : NB_OK;
}

void nb_cpu_register_elementwise(nb_cpu_kernel_entry *t) {
  for (int op = 0; op < NB_OP_COUNT; op++)
    if (supported((nb_opcode)op)) t[op].run = run_group;
}
