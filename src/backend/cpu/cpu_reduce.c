/* Reductions (sum, max, min over an axis set) and argmax. The input may be
 * any strided view; the reduced axes are walked in an inner loop. */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

typedef struct {
  int n_keep, n_red;
  int64_t keep_shape[NB_MAX_DIMS], keep_stride[NB_MAX_DIMS];
  int64_t red_shape[NB_MAX_DIMS], red_stride[NB_MAX_DIMS];
  int64_t n_red_elems;
} reduce_plan;

static void make_plan(const nb_tensor *x, int64_t mask, reduce_plan *p) {
  p->n_keep = p->n_red = 0;
  p->n_red_elems = 1;
  for (int d = 0; d < x->ndim; d++) {
    if ((mask >> d) & 1) {
      p->red_shape[p->n_red] = x->shape[d];
      p->red_stride[p->n_red++] = x->stride[d];
      p->n_red_elems *= x->shape[d];
    } else {
      p->keep_shape[p->n_keep] = x->shape[d];
      p->keep_stride[p->n_keep++] = x->stride[d];
    }
  }
}

static nb_status run_reduce(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  const float *src = c->in[0];
  float *out = c->out;
  reduce_plan p;
  make_plan(x, node->ip[0], &p);
  int64_t n_out = nb_tensor_numel(node);
  nb_opcode op = node->op;
  /* the innermost reduced axis is read as a run */
  int64_t inner = p.n_red ? p.red_shape[p.n_red - 1] : 1;
  int64_t is = p.n_red ? p.red_stride[p.n_red - 1] : 0;
  int64_t outer = inner ? p.n_red_elems / inner : 0;
#pragma omp parallel for schedule(static)                                                          \
    num_threads(nb_cpu_threads()) if (n_out * p.n_red_elems > 65536)
  for (int64_t o = 0; o < n_out; o++) {
    int64_t base = nb_strided_offset(p.n_keep, p.keep_shape, p.keep_stride, o);
    double acc = op == NB_OP_SUM ? 0.0 : op == NB_OP_MAX ? -INFINITY : INFINITY;
    for (int64_t r = 0; r < outer; r++) {
      const float *s = src + base + nb_strided_offset(p.n_red - 1, p.red_shape, p.red_stride, r);
      if (op == NB_OP_SUM) {
        float part = 0.0f;
        for (int64_t k = 0; k < inner; k++) part += s[k * is];
        acc += part;
      } else if (op == NB_OP_MAX) {
        for (int64_t k = 0; k < inner; k++)
          if (s[k * is] > acc || s[k * is] != s[k * is]) acc = s[k * is];
      } else {
        for (int64_t k = 0; k < inner; k++)
          if (s[k * is] < acc || s[k * is] != s[k * is]) acc = s[k * is];
      }
    }
    out[o] = (float)acc;
  }
  return NB_OK;
}

static nb_status run_argmax(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  const float *src = c->in[0];
  int64_t *out = c->out;
  reduce_plan p;
  make_plan(x, (int64_t)1 << node->ip[0], &p);
  int64_t n_out = nb_tensor_numel(node);
  int64_t len = p.red_shape[0], st = p.red_stride[0];
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (n_out * len > 65536)
  for (int64_t o = 0; o < n_out; o++) {
    const float *s = src + nb_strided_offset(p.n_keep, p.keep_shape, p.keep_stride, o);
    int64_t best = 0;
    float bv = len ? s[0] : 0.0f;
    for (int64_t k = 1; k < len && bv == bv; k++)
      if (s[k * st] > bv || s[k * st] != s[k * st]) {
        bv = s[k * st];
        best = k;
      }
    out[o] = best;
  }
  return NB_OK;
}

void nb_cpu_register_reduce(nb_cpu_kernel_entry *t) {
  t[NB_OP_SUM].run = run_reduce;
  t[NB_OP_MAX].run = run_reduce;
  t[NB_OP_MIN].run = run_reduce;
  t[NB_OP_ARGMAX].run = run_argmax;
}
