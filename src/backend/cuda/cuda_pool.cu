/* 2-D max and average pooling (NCHW) and their gradients on the GPU, with
 * the CPU kernels' rules window for window (cpu_pool.c, itself PyTorch's):
 * the same clipping, the first maximum wins and a NaN takes over, the same
 * average divisors (count_include_pad, ceil_mode).
 *
 * Forward: a thread per output element. Gradients: a thread per input
 * element that walks the windows covering it in row-major order and sums
 * their contributions, so no atomics are needed, results are deterministic,
 * and the additions happen in the CPU's order. */
#include <math.h>

#include "cuda_internal.h"

namespace {

/* ip[] layout, as written by src/graph/ops_conv.c */
enum { PL_K = 0, PL_STRIDE = 2, PL_PAD = 4, PL_CEIL = 6, PL_COUNT_PAD = 7, PL_X = 8 };

struct pool_geom {
  int64_t planes, h, w; /* input: planes of h x w */
  int64_t p, q;         /* output plane */
  int64_t kh, kw, sh, sw, ph, pw;
  int count_pad;
};

/* The output size comes from the dy-shaped tensor, like the CPU kernels. */
pool_geom geom_of(const nb_tensor *node, const nb_tensor *yt) {
  const int64_t *ip = node->ip, *x = ip + PL_X;
  pool_geom g;
  g.planes = x[0] * x[1], g.h = x[2], g.w = x[3];
  g.p = yt->shape[2], g.q = yt->shape[3];
  g.kh = ip[PL_K], g.kw = ip[PL_K + 1];
  g.sh = ip[PL_STRIDE], g.sw = ip[PL_STRIDE + 1];
  g.ph = ip[PL_PAD], g.pw = ip[PL_PAD + 1];
  g.count_pad = ip[PL_COUNT_PAD] != 0;
  return g;
}

struct window {
  int64_t h0, h1, w0, w1;
};

__device__ inline window max_window(const pool_geom &g, int64_t p, int64_t q) {
  window k;
  k.h0 = p * g.sh - g.ph;
  k.w0 = q * g.sw - g.pw;
  k.h1 = k.h0 + g.kh < g.h ? k.h0 + g.kh : g.h;
  k.w1 = k.w0 + g.kw < g.w ? k.w0 + g.kw : g.w;
  if (k.h0 < 0) k.h0 = 0;
  if (k.w0 < 0) k.w0 = 0;
  return k;
}

/* Index of the window's maximum, row-major, first of equals, a NaN takes
 * over; a window of -inf reports its first element. */
__device__ inline int64_t argmax_in(const pool_geom &g, const float *x, window k, float *max) {
  int64_t best = k.h0 * g.w + k.w0;
  float m = -INFINITY;
  for (int64_t i = k.h0; i < k.h1; i++)
    for (int64_t j = k.w0; j < k.w1; j++) {
      float v = x[i * g.w + j];
      if (v > m || v != v) {
        m = v;
        best = i * g.w + j;
      }
    }
  *max = m;
  return best;
}

__device__ inline window avg_window(const pool_geom &g, int64_t p, int64_t q, float *divisor) {
  window k;
  k.h0 = p * g.sh - g.ph;
  k.w0 = q * g.sw - g.pw;
  k.h1 = k.h0 + g.kh < g.h + g.ph ? k.h0 + g.kh : g.h + g.ph;
  k.w1 = k.w0 + g.kw < g.w + g.pw ? k.w0 + g.kw : g.w + g.pw;
  int64_t padded = (k.h1 - k.h0) * (k.w1 - k.w0);
  if (k.h0 < 0) k.h0 = 0;
  if (k.w0 < 0) k.w0 = 0;
  if (k.h1 > g.h) k.h1 = g.h;
  if (k.w1 > g.w) k.w1 = g.w;
  *divisor = (float)(g.count_pad ? padded : (k.h1 - k.h0) * (k.w1 - k.w0));
  return k;
}

/* Outputs along one axis whose window [o * s - pad, o * s - pad + k) covers
 * input position i: [lo, hi). */
__device__ inline void covering(int64_t i, int64_t k, int64_t s, int64_t pad, int64_t n_out,
                                int64_t *lo, int64_t *hi) {
  int64_t a = i + pad - k + 1; /* first o with o * s + k - 1 >= i + pad */
  *lo = a <= 0 ? 0 : (a + s - 1) / s;
  int64_t b = (i + pad) / s + 1; /* last o with o * s <= i + pad, plus one */
  *hi = b < n_out ? b : n_out;
}

__global__ void maxpool_fwd(const float *x, pool_geom g, float *y, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t q = i % g.q, p = (i / g.q) % g.p, pl = i / (g.q * g.p);
    float m;
    argmax_in(g, x + pl * g.h * g.w, max_window(g, p, q), &m);
    y[i] = m;
  }
}

__global__ void maxpool_bwd(const float *x, const float *dy, pool_geom g, float *dx, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t c = i % g.w, r = (i / g.w) % g.h, pl = i / (g.w * g.h);
    const float *xp = x + pl * g.h * g.w, *dyp = dy + pl * g.p * g.q;
    int64_t p0, p1, q0, q1;
    covering(r, g.kh, g.sh, g.ph, g.p, &p0, &p1);
    covering(c, g.kw, g.sw, g.pw, g.q, &q0, &q1);
    float acc = 0.0f;
    int64_t self = r * g.w + c;
    for (int64_t p = p0; p < p1; p++)
      for (int64_t q = q0; q < q1; q++) {
        window k = max_window(g, p, q);
        if (k.h0 >= k.h1 || k.w0 >= k.w1) continue;
        float m;
        if (argmax_in(g, xp, k, &m) == self) acc += dyp[p * g.q + q];
      }
    dx[i] = acc;
  }
}

__global__ void avgpool_fwd(const float *x, pool_geom g, float *y, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t q = i % g.q, p = (i / g.q) % g.p, pl = i / (g.q * g.p);
    const float *xp = x + pl * g.h * g.w;
    float div;
    window k = avg_window(g, p, q, &div);
    float sum = 0.0f;
    for (int64_t a = k.h0; a < k.h1; a++)
      for (int64_t b = k.w0; b < k.w1; b++) sum += xp[a * g.w + b];
    y[i] = k.h0 < k.h1 && k.w0 < k.w1 ? sum / div : 0.0f;
  }
}

__global__ void avgpool_bwd(const float *dy, pool_geom g, float *dx, int64_t n) {
  NB_CUDA_GRID_STRIDE(i, n) {
    int64_t c = i % g.w, r = (i / g.w) % g.h, pl = i / (g.w * g.h);
    const float *dyp = dy + pl * g.p * g.q;
    int64_t p0, p1, q0, q1;
    covering(r, g.kh, g.sh, g.ph, g.p, &p0, &p1);
    covering(c, g.kw, g.sw, g.pw, g.q, &q0, &q1);
    float acc = 0.0f;
    for (int64_t p = p0; p < p1; p++)
      for (int64_t q = q0; q < q1; q++) {
        float div;
        window k = avg_window(g, p, q, &div);
        if (k.h0 >= k.h1 || k.w0 >= k.w1) continue;
        if (r < k.h0 || r >= k.h1 || c < k.w0 || c >= k.w1) continue;
        acc += dyp[p * g.q + q] / div;
      }
    dx[i] = acc;
  }
}

nb_status check_pool(nb_cuda *cu, const nb_tensor *node) {
  for (int i = 0; i < node->n_in; i++)
    if (node->in[i]->dtype != NB_F32 || !nb_tensor_is_contiguous(node->in[i]))
      return nb_error(NB_ERR_UNSUPPORTED, "%s: %s: input %d is not contiguous f32", cu->name,
                      nb_cuda_op_name(node), i);
  return NB_OK;
}

nb_status run_pool(nb_cuda *cu, const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_pool(cu, node);
  if (st) return st;
  int64_t n = nb_tensor_numel(node);
  if (n == 0) return NB_OK;
  unsigned blocks = nb_cuda_blocks(cu, n, NB_CUDA_THREADS);
  float *out = static_cast<float *>(c->out);
  const float *in0 = static_cast<const float *>(c->in[0]);
  switch (node->op) {
  case NB_OP_MAXPOOL2D:
    maxpool_fwd<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(in0, geom_of(node, node), out, n);
    break;
  case NB_OP_MAXPOOL2D_BWD: /* in[0] = x, in[1] = dy */
    maxpool_bwd<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(
        in0, static_cast<const float *>(c->in[1]), geom_of(node, node->in[1]), out, n);
    break;
  case NB_OP_AVGPOOL2D:
    avgpool_fwd<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(in0, geom_of(node, node), out, n);
    break;
  default: /* AVGPOOL2D_BWD: in[0] = dy */
    avgpool_bwd<<<blocks, NB_CUDA_THREADS, 0, cu->stream>>>(in0, geom_of(node, node->in[0]), out,
                                                            n);
    break;
  }
  return nb_cuda_launched(cu, nb_cuda_op_name(node));
}

} // namespace

void nb_cuda_register_pool(nb_cuda_kernel_entry *t) {
  const nb_opcode ops[] = {NB_OP_MAXPOOL2D, NB_OP_MAXPOOL2D_BWD, NB_OP_AVGPOOL2D,
                           NB_OP_AVGPOOL2D_BWD};
  for (nb_opcode op : ops) {
    t[op].run = run_pool;
    t[op].check = check_pool;
  }
  /* ReLU after pooling, ReLU's gradient after the pooling gradient */
  t[NB_OP_MAXPOOL2D].epilogue = 1;
  t[NB_OP_MAXPOOL2D_BWD].epilogue = 1;
}
