/* 2-D max and average pooling (NCHW) and their gradients, following
 * PyTorch's CPU kernels window for window: the same window clipping, the
 * same first-maximum rule (NaN wins), and the same avg divisor, so values
 * and gradients agree with torch.nn.functional exactly up to rounding.
 * Every (n, c) plane is independent, so planes are spread over threads. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

/* ip[] layout, as written by src/graph/ops_conv.c */
enum { PL_K = 0, PL_STRIDE = 2, PL_PAD = 4, PL_CEIL = 6, PL_COUNT_PAD = 7, PL_X = 8 };

/* Below this many window reads a parallel region costs more than it saves. */
#define PAR_MIN 32768

typedef struct {
  int64_t planes, h, w; /* input: n * c planes of h x w */
  int64_t p, q;         /* output plane */
  int64_t kh, kw, sh, sw, ph, pw;
  int count_pad;
} pool_geom;

/* The output size comes from the dy-shaped tensor, so the kernel agrees
 * with whatever shape the graph validated (ceil_mode included). */
static void geom_of(const nb_tensor *node, const nb_tensor *yt, pool_geom *g) {
  const int64_t *ip = node->ip, *x = ip + PL_X;
  g->planes = x[0] * x[1], g->h = x[2], g->w = x[3];
  g->p = yt->shape[2], g->q = yt->shape[3];
  g->kh = ip[PL_K], g->kw = ip[PL_K + 1];
  g->sh = ip[PL_STRIDE], g->sw = ip[PL_STRIDE + 1];
  g->ph = ip[PL_PAD], g->pw = ip[PL_PAD + 1];
  g->count_pad = ip[PL_COUNT_PAD] != 0;
}

static nb_status check_inputs(const nb_tensor *node) {
  for (int i = 0; i < node->n_in; i++)
    if (!nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_INTERNAL, "%s: input %d is not contiguous",
                      nb_op_def_get(node->op)->name, i);
  return NB_OK;
}

static int big(const pool_geom *g) { return g->planes * g->p * g->q * g->kh * g->kw > PAR_MIN; }

/* Window of output (p, q) clipped to the input: rows [h0, h1), cols [w0, w1). */
typedef struct {
  int64_t h0, h1, w0, w1;
} window;

static window max_window(const pool_geom *g, int64_t p, int64_t q) {
  window k;
  k.h0 = p * g->sh - g->ph;
  k.w0 = q * g->sw - g->pw;
  k.h1 = k.h0 + g->kh < g->h ? k.h0 + g->kh : g->h;
  k.w1 = k.w0 + g->kw < g->w ? k.w0 + g->kw : g->w;
  if (k.h0 < 0) k.h0 = 0;
  if (k.w0 < 0) k.w0 = 0;
  return k;
}

/* Index of the window's maximum, scanning row-major and keeping the first
 * of equal values; a NaN always takes over (PyTorch's rule). Padding counts
 * as -inf, so a window of -inf values reports its first real element. */
static int64_t argmax_in(const pool_geom *g, const float *x, window k, float *max) {
  int64_t best = k.h0 * g->w + k.w0;
  float m = -INFINITY;
  for (int64_t i = k.h0; i < k.h1; i++)
    for (int64_t j = k.w0; j < k.w1; j++) {
      float v = x[i * g->w + j];
      if (v > m || isnan(v)) {
        m = v;
        best = i * g->w + j;
      }
    }
  *max = m;
  return best;
}

static nb_status run_maxpool(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node, &g);
  const float *x = c->in[0];
  float *y = c->out;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (big(&g))
  for (int64_t pl = 0; pl < g.planes; pl++) {
    const float *xp = x + pl * g.h * g.w;
    float *yp = y + pl * g.p * g.q;
    for (int64_t p = 0; p < g.p; p++)
      for (int64_t q = 0; q < g.q; q++) {
        float m;
        argmax_in(&g, xp, max_window(&g, p, q), &m);
        yp[p * g.q + q] = m;
      }
  }
  return NB_OK;
}

/* in[0] = x, in[1] = dy. The argmax is recomputed from x rather than
 * stored by the forward pass, which keeps max_pool2d a single-output op. */
static nb_status run_maxpool_bwd(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node->in[1], &g);
  const float *x = c->in[0], *dy = c->in[1];
  float *dx = c->out;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (big(&g))
  for (int64_t pl = 0; pl < g.planes; pl++) {
    const float *xp = x + pl * g.h * g.w, *dyp = dy + pl * g.p * g.q;
    float *dxp = dx + pl * g.h * g.w;
    memset(dxp, 0, (size_t)(g.h * g.w) * sizeof(float));
    for (int64_t p = 0; p < g.p; p++)
      for (int64_t q = 0; q < g.q; q++) {
        window k = max_window(&g, p, q);
        if (k.h0 >= k.h1 || k.w0 >= k.w1) continue;
        float m;
        dxp[argmax_in(&g, xp, k, &m)] += dyp[p * g.q + q];
      }
  }
  return NB_OK;
}

/* Average window: clipped to the input, with PyTorch's divisor. With
 * count_include_pad the divisor counts padding but not the part of a
 * ceil_mode window that runs past the padding. */
static window avg_window(const pool_geom *g, int64_t p, int64_t q, float *divisor) {
  window k;
  k.h0 = p * g->sh - g->ph;
  k.w0 = q * g->sw - g->pw;
  k.h1 = k.h0 + g->kh < g->h + g->ph ? k.h0 + g->kh : g->h + g->ph;
  k.w1 = k.w0 + g->kw < g->w + g->pw ? k.w0 + g->kw : g->w + g->pw;
  int64_t padded = (k.h1 - k.h0) * (k.w1 - k.w0);
  if (k.h0 < 0) k.h0 = 0;
  if (k.w0 < 0) k.w0 = 0;
  if (k.h1 > g->h) k.h1 = g->h;
  if (k.w1 > g->w) k.w1 = g->w;
  *divisor = (float)(g->count_pad ? padded : (k.h1 - k.h0) * (k.w1 - k.w0));
  return k;
}

static nb_status run_avgpool(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node, &g);
  const float *x = c->in[0];
  float *y = c->out;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (big(&g))
  for (int64_t pl = 0; pl < g.planes; pl++) {
    const float *xp = x + pl * g.h * g.w;
    float *yp = y + pl * g.p * g.q;
    for (int64_t p = 0; p < g.p; p++)
      for (int64_t q = 0; q < g.q; q++) {
        float div;
        window k = avg_window(&g, p, q, &div);
        float sum = 0.0f;
        for (int64_t i = k.h0; i < k.h1; i++)
          for (int64_t j = k.w0; j < k.w1; j++) sum += xp[i * g.w + j];
        /* an empty window (impossible with padding <= kernel / 2) gives 0 */
        yp[p * g.q + q] = k.h0 < k.h1 && k.w0 < k.w1 ? sum / div : 0.0f;
      }
  }
  return NB_OK;
}

/* in[0] = dy; output has the shape of x. */
static nb_status run_avgpool_bwd(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node->in[0], &g);
  const float *dy = c->in[0];
  float *dx = c->out;
#pragma omp parallel for schedule(static) num_threads(nb_cpu_threads()) if (big(&g))
  for (int64_t pl = 0; pl < g.planes; pl++) {
    const float *dyp = dy + pl * g.p * g.q;
    float *dxp = dx + pl * g.h * g.w;
    memset(dxp, 0, (size_t)(g.h * g.w) * sizeof(float));
    for (int64_t p = 0; p < g.p; p++)
      for (int64_t q = 0; q < g.q; q++) {
        float div;
        window k = avg_window(&g, p, q, &div);
        if (k.h0 >= k.h1 || k.w0 >= k.w1) continue;
        float d = dyp[p * g.q + q] / div;
        for (int64_t i = k.h0; i < k.h1; i++)
          for (int64_t j = k.w0; j < k.w1; j++) dxp[i * g.w + j] += d;
      }
  }
  return NB_OK;
}

void nb_cpu_register_pool(nb_cpu_kernel_entry *t) {
  t[NB_OP_MAXPOOL2D].run = run_maxpool;
  t[NB_OP_MAXPOOL2D_BWD].run = run_maxpool_bwd;
  t[NB_OP_AVGPOOL2D].run = run_avgpool;
  t[NB_OP_AVGPOOL2D_BWD].run = run_avgpool_bwd;
}
