/* Softmax and log_softmax over one axis. The tensor is seen as
 * [outer, len, inner] with the reduced axis in the middle. When inner > 1
 * the axis is strided in memory, so instead of walking one column at a time
 * (a cache miss per element) a block of up to CHUNK neighbouring columns is
 * processed together: every pass reads runs of CHUNK contiguous floats, and
 * the per-column max and sum live in small stack arrays.
 *
 * Stability: the row max is subtracted before exp, so logits of 1000 do not
 * overflow; log_softmax is computed as (x - max) - log(sum) rather than
 * log(softmax), so tiny probabilities keep their exact logarithm. A row whose
 * max is -inf or +inf gives NaN, as in PyTorch. */
#include <math.h>

#include "cpu_internal.h"

#define CHUNK 64
/* Below this many elements, thread start-up costs more than it saves. */
#define PAR_MIN 32768

typedef struct {
  int64_t outer, len, inner;
  int64_t astride; /* input stride of the softmax axis */
  int contiguous;
  /* non-contiguous input: the other axes, for nb_strided_offset */
  int n_other;
  int64_t oshape[NB_MAX_DIMS], ostride[NB_MAX_DIMS];
} sm_layout;

/* Input offset of element (o, 0, j). The graph makes softmax's input
 * contiguous, but a strided view costs only this lookup, so accept it. */
static inline int64_t sm_base(const sm_layout *l, int64_t o, int64_t j) {
  if (l->contiguous) return o * l->len * l->inner + j;
  return nb_strided_offset(l->n_other, l->oshape, l->ostride, o * l->inner + j);
}

static void sm_block(const sm_layout *l, const float *x, float *y, int64_t o, int64_t j0, int64_t w,
                     int log_form) {
  int64_t xo[CHUNK];
  float m[CHUNK], s[CHUNK];
  int64_t len = l->len, inner = l->inner, as = l->astride;
  float *yo = y + o * len * inner + j0;
  for (int64_t j = 0; j < w; j++) {
    xo[j] = sm_base(l, o, j0 + j);
    m[j] = -INFINITY;
    s[j] = 0.0f;
  }
  for (int64_t k = 0; k < len; k++)
    for (int64_t j = 0; j < w; j++) {
      float v = x[xo[j] + k * as];
      /* NaN wins so that a NaN logit poisons its row instead of vanishing */
      if (v > m[j] || v != v) m[j] = v;
    }
  for (int64_t k = 0; k < len; k++)
    for (int64_t j = 0; j < w; j++) {
      float e = expf(x[xo[j] + k * as] - m[j]);
      s[j] += e;
      if (!log_form) yo[k * inner + j] = e;
    }
  if (log_form) {
    for (int64_t j = 0; j < w; j++) s[j] = logf(s[j]);
    for (int64_t k = 0; k < len; k++)
      for (int64_t j = 0; j < w; j++) yo[k * inner + j] = (x[xo[j] + k * as] - m[j]) - s[j];
  } else {
    for (int64_t j = 0; j < w; j++) s[j] = 1.0f / s[j];
    for (int64_t k = 0; k < len; k++)
      for (int64_t j = 0; j < w; j++) yo[k * inner + j] *= s[j];
  }
}

/* inner == 1: the common last-axis case, one row at a time. */
static void sm_row(const float *x, int64_t as, float *y, int64_t len, int log_form) {
  float m = -INFINITY;
  for (int64_t k = 0; k < len; k++)
    if (x[k * as] > m || x[k * as] != x[k * as]) m = x[k * as];
  float s = 0.0f;
  if (log_form) {
    /* len >= 1 here, so s starts with a term and logf never sees 0 */
    s = expf(x[0] - m);
    for (int64_t k = 1; k < len; k++) s += expf(x[k * as] - m);
    float ls = logf(s);
    for (int64_t k = 0; k < len; k++) y[k] = (x[k * as] - m) - ls;
  } else {
    for (int64_t k = 0; k < len; k++) {
      y[k] = expf(x[k * as] - m);
      s += y[k];
    }
    float r = 1.0f / s;
    for (int64_t k = 0; k < len; k++) y[k] *= r;
  }
}

static nb_status run_softmax(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *xt = node->in[0];
  int axis = (int)node->ip[0];
  if (xt->dtype != NB_F32 || axis < 0 || axis >= xt->ndim)
    return nb_error(NB_ERR_INTERNAL, "%s: bad input dtype or axis %d",
                    nb_op_def_get(node->op)->name, axis);
  sm_layout l = {.outer = 1, .inner = 1};
  l.len = xt->shape[axis];
  l.astride = xt->stride[axis];
  for (int d = 0; d < axis; d++) l.outer *= xt->shape[d];
  for (int d = axis + 1; d < xt->ndim; d++) l.inner *= xt->shape[d];
  l.contiguous = nb_tensor_is_contiguous(xt);
  for (int d = 0; d < xt->ndim; d++)
    if (d != axis) {
      l.oshape[l.n_other] = xt->shape[d];
      l.ostride[l.n_other++] = xt->stride[d];
    }
  int64_t n = l.outer * l.len * l.inner;
  if (n == 0) return NB_OK;
  int log_form = node->op == NB_OP_LOG_SOFTMAX;
  const float *x = c->in[0];
  float *y = c->out;
  int64_t chunks = (l.inner + CHUNK - 1) / CHUNK;
  int64_t tasks = l.outer * chunks;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (n > PAR_MIN && tasks > 1)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t o = t / chunks, j0 = (t % chunks) * CHUNK;
    if (l.inner == 1) {
      sm_row(x + sm_base(&l, o, 0), l.astride, y + o * l.len, l.len, log_form);
      continue;
    }
    int64_t w = l.inner - j0 < CHUNK ? l.inner - j0 : CHUNK;
    sm_block(&l, x, y, o, j0, w, log_form);
  }
  return NB_OK;
}

void nb_cpu_register_softmax(nb_cpu_kernel_entry *t) {
  t[NB_OP_SOFTMAX].run = run_softmax;
  t[NB_OP_LOG_SOFTMAX].run = run_softmax;
}
