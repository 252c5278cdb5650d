/* Reductions (sum, max, min over an axis set) and argmax. The input may be
 * any strided view; the reduced axes are walked in an inner loop, except for
 * sums over leading axes of a dense tensor (run_lead_sum). */
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

/* Sum of a contiguous run in 16 interleaved float partial sums: the lanes
 * are independent chains, so the loop vectorises (a single chain is bound by
 * the 3-4 cycle latency of one add per element), and the rounding is that
 * of a pairwise-like split rather than one long chain. */
NB_CPU_CLONES static float sum_run(const float *s, int64_t n) {
  float lane[16] = {0};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int j = 0; j < 16; j++) lane[j] += s[k + j];
  for (int j = 0; k + j < n; j++) lane[j] += s[k + j];
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; j++) lane[j] += lane[j + w];
  return lane[0];
}

/* ---- leading-axis sums: [A, B, C] -> [B] ------------------------------------------- */

/* A sum over leading and trailing axes of a dense tensor, keeping a middle
 * block: bias gradients, [N, C, H, W] -> [C] (A = N, B = C, C = H * W) and
 * [N, F] -> [F] (C = 1). Walking each output's elements in turn jumps by
 * B * C floats between runs, which the prefetcher follows badly (3.7 GB/s
 * measured on the MNIST conv1 bias); here the input is read in memory order
 * into per-part partial sums. The A axis is cut into a fixed number of parts
 * (threads take whole parts) and the parts are added in order, so results do
 * not depend on the thread count. */
#define LEAD_PARTS 8

typedef struct {
  int64_t a, b, c;
} lead_shape;

static int lead_shape_of(const nb_tensor *node, lead_shape *ls) {
  const nb_tensor *x = node->in[0];
  int64_t mask = node->ip[0];
  if (node->op != NB_OP_SUM || x->dtype != NB_F32 || !nb_tensor_is_contiguous(x) || x->ndim < 2)
    return 0;
  int d = 0, nd = x->ndim;
  ls->a = ls->b = ls->c = 1;
  for (; d < nd && ((mask >> d) & 1); d++) ls->a *= x->shape[d];
  if (d == 0) return 0;
  for (; d < nd && !((mask >> d) & 1); d++) ls->b *= x->shape[d];
  for (; d < nd && ((mask >> d) & 1); d++) ls->c *= x->shape[d];
  return d == nd && ls->b > 1;
}

static int64_t lead_parts(const lead_shape *ls) { return ls->a < LEAD_PARTS ? ls->a : LEAD_PARTS; }

/* Below (few long rows): split the columns over the threads instead. */
#define COL_BLOCK 512
static int column_sum(const lead_shape *ls) {
  return ls->c == 1 && ls->b >= 8 * COL_BLOCK && ls->a <= 64;
}

static size_t reduce_workspace(const nb_tensor *node) {
  lead_shape ls;
  if (!lead_shape_of(node, &ls) || column_sum(&ls)) return 0;
  return (size_t)(lead_parts(&ls) * ls.b) * sizeof(double);
}

NB_CPU_CLONES static void add_row(double *acc, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) acc[i] += x[i];
}

/* [A, B] -> [B] with few long rows (A small, B large: the batch sum of a
 * batched weight gradient, [16, 512 * 128]): the threads split the columns
 * and each column sums its A rows in order, in double, a block of columns at
 * a time. Part sums over A would write and reread 8 bytes per column and
 * part and add the parts on one thread. The result does not depend on the
 * thread count either. */

NB_CPU_CLONES static void add_rows_block(const float *x, int64_t a, int64_t b, int64_t j0,
                                         int64_t n, float *out) {
  double acc[COL_BLOCK];
  for (int64_t j = 0; j < n; j++) acc[j] = 0.0;
  for (int64_t r = 0; r < a; r++) {
    const float *xr = x + r * b + j0;
    for (int64_t j = 0; j < n; j++) acc[j] += xr[j];
  }
  for (int64_t j = 0; j < n; j++) out[j0 + j] = (float)acc[j];
}

static nb_status run_column_sum(const nb_kernel_call *c, const lead_shape *ls) {
  const float *x = c->in[0];
  float *out = c->out;
  int64_t blocks = (ls->b + COL_BLOCK - 1) / COL_BLOCK;
  int nt = ls->a * ls->b > 65536 ? nb_cpu_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t k = 0; k < blocks; k++) {
    int64_t j0 = k * COL_BLOCK, n = ls->b - j0 < COL_BLOCK ? ls->b - j0 : COL_BLOCK;
    add_rows_block(x, ls->a, ls->b, j0, n, out);
  }
  return NB_OK;
}

static nb_status run_lead_sum(const nb_kernel_call *c, const lead_shape *ls) {
  if (column_sum(ls)) return run_column_sum(c, ls);
  int64_t parts = lead_parts(ls);
  if (c->workspace_bytes < (size_t)(parts * ls->b) * sizeof(double))
    return nb_error(NB_ERR_INTERNAL, "sum: workspace of %zu bytes is too small",
                    c->workspace_bytes);
  const float *x = c->in[0];
  float *out = c->out;
  double *part = c->workspace;
  int64_t n = ls->a * ls->b * ls->c;
  int nt = n > 65536 ? nb_cpu_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t pi = 0; pi < parts; pi++) {
    double *acc = part + pi * ls->b;
    for (int64_t j = 0; j < ls->b; j++) acc[j] = 0.0;
    for (int64_t a = ls->a * pi / parts; a < ls->a * (pi + 1) / parts; a++) {
      const float *xa = x + a * ls->b * ls->c;
      if (ls->c == 1)
        add_row(acc, xa, ls->b);
      else
        for (int64_t j = 0; j < ls->b; j++) acc[j] += sum_run(xa + j * ls->c, ls->c);
    }
  }
  for (int64_t j = 0; j < ls->b; j++) {
    double v = 0.0;
    for (int64_t pi = 0; pi < parts; pi++) v += part[pi * ls->b + j];
    out[j] = (float)v;
  }
  return NB_OK;
}

static nb_status run_reduce(const nb_kernel_call *c) {
  const nb_tensor *node = c->node, *x = node->in[0];
  const float *src = c->in[0];
  float *out = c->out;
  lead_shape ls;
  if (lead_shape_of(node, &ls)) return run_lead_sum(c, &ls);
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
        if (is == 1) {
          acc += sum_run(s, inner);
          continue;
        }
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
  t[NB_OP_SUM] = (nb_cpu_kernel_entry){run_reduce, reduce_workspace, 0};
  t[NB_OP_MAX].run = run_reduce;
  t[NB_OP_MIN].run = run_reduce;
  t[NB_OP_ARGMAX].run = run_argmax;
}
