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

/* Planes per parallel chunk: an epilogue runs once per chunk, which should
 * hold a few thousand elements (L1/L2-sized, and worth the call). */
static int64_t planes_per_chunk(int64_t plane) {
  int64_t per = plane > 0 ? 4096 / plane : 1;
  return per < 1 ? 1 : per;
}

/* In double: a window can be as large as an int allows, and the product
 * only estimates the work. */
static int big(const pool_geom *g) {
  return (double)g->planes * (double)g->p * (double)g->q * (double)g->kh * (double)g->kw > PAR_MIN;
}

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

/* The 2x2, stride 2, unpadded pool of nearly every CNN has its own loops:
 * windows never overlap and (but for a ceil_mode edge) never clip, so each
 * output is four loads and three selects that vectorise, instead of the
 * generic window walk (measured 10x slower on the MNIST CNN). The select
 * order is argmax_in's: first maximum wins, a NaN takes over. */
static int is_2x2(const pool_geom *g) {
  return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

NB_CPU_CLONES static void maxpool2x2_rows(const float *restrict r0, const float *restrict r1,
                                          float *restrict y, int64_t n) {
  for (int64_t q = 0; q < n; q++) {
    float a = r0[2 * q], b = r0[2 * q + 1], cc = r1[2 * q], d = r1[2 * q + 1];
    float m = a;
    m = (b > m || b != b) ? b : m;
    m = (cc > m || cc != cc) ? cc : m;
    m = (d > m || d != d) ? d : m;
    y[q] = m;
  }
}

/* The forward's selects, tracking which of the four won (in float, so that
 * the loop vectorises); the winner gets dy, the other three 0. */
NB_CPU_CLONES static void maxpool2x2_bwd_rows(const float *restrict r0, const float *restrict r1,
                                              const float *restrict dy, float *restrict d0,
                                              float *restrict d1, int64_t n) {
  for (int64_t q = 0; q < n; q++) {
    float a = r0[2 * q], b = r0[2 * q + 1], cc = r1[2 * q], d = r1[2 * q + 1], g = dy[q];
    float m = a, k = 0.0f;
    int t = b > m || b != b;
    m = t ? b : m;
    k = t ? 1.0f : k;
    t = cc > m || cc != cc;
    m = t ? cc : m;
    k = t ? 2.0f : k;
    t = d > m || d != d;
    k = t ? 3.0f : k;
    d0[2 * q] = k == 0.0f ? g : 0.0f;
    d0[2 * q + 1] = k == 1.0f ? g : 0.0f;
    d1[2 * q] = k == 2.0f ? g : 0.0f;
    d1[2 * q + 1] = k == 3.0f ? g : 0.0f;
  }
}

/* ReLU's gradient applied to n elements: d * (t > s ? 1 : 0), the float
 * operations of the gt + mul epilogue it replaces. */
NB_CPU_CLONES static void relu_grad_mask(float *restrict d, const float *restrict t, float s,
                                         int64_t n) {
  for (int64_t i = 0; i < n; i++) d[i] = d[i] * (t[i] > s ? 1.0f : 0.0f);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* The 2x2 rows with AVX2 intrinsics. GCC vectorises the loops above, but
 * ends every row in a branchy scalar loop, which on the MNIST planes (13
 * and 5 outputs per row) took half the time. Here 8 (or 4) windows at a
 * time: the even and odd columns of both rows are split with shuffles, the
 * selects run in that shuffled lane order (windows 0 1 4 5 | 2 3 6 7) and
 * a row's last block moves back to end at the row's end, redoing some
 * windows rather than running a scalar tail. The selects are those of the
 * scalar loops (first maximum wins, NaN takes over), so results are the
 * same bits. */
#include <immintrin.h>
#define POOL_AVX2   1
#define AVX2        __attribute__((target("avx2")))
#define INLINE_AVX2 static inline __attribute__((always_inline, target("avx2")))

static int pool_avx2(void) { return __builtin_cpu_supports("avx2"); }

/* v replaces m where v > m or v is NaN */
INLINE_AVX2 __m256 takes8(__m256 v, __m256 m) {
  return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
INLINE_AVX2 __m128 takes4(__m128 v, __m128 m) {
  return _mm_or_ps(_mm_cmp_ps(v, m, _CMP_GT_OQ), _mm_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* The gradient of 8 windows from their four columns A B C D (the shuffled
 * order) and dy g: the winner gets g and the other three +0 (g and-ed with
 * a mask, the bits of the scalar loop's `k == 0 ? g : 0.0f`); with ReLU's
 * gradient (relu), each then times (T > s ? 1 : 0) for the same columns T
 * of ReLU's output. o receives the four columns of dx. */
INLINE_AVX2 void bwd8(const __m256 *col, __m256 g, const __m256 *t, int relu, __m256 s, __m256 *o) {
  __m256 t1 = takes8(col[1], col[0]), m = _mm256_blendv_ps(col[0], col[1], t1);
  __m256 t2 = takes8(col[2], m);
  m = _mm256_blendv_ps(m, col[2], t2);
  __m256 t3 = takes8(col[3], m);
  /* the last select that fired names the winner */
  __m256 late = _mm256_or_ps(t3, t2);
  o[0] = _mm256_andnot_ps(_mm256_or_ps(late, t1), g);
  o[1] = _mm256_and_ps(_mm256_andnot_ps(late, t1), g);
  o[2] = _mm256_and_ps(_mm256_andnot_ps(t3, t2), g);
  o[3] = _mm256_and_ps(t3, g);
  if (relu)
    for (int k = 0; k < 4; k++)
      o[k] = _mm256_mul_ps(o[k],
                           _mm256_and_ps(_mm256_set1_ps(1.0f), _mm256_cmp_ps(t[k], s, _CMP_GT_OQ)));
}

INLINE_AVX2 void bwd4(const __m128 *col, __m128 g, const __m128 *t, int relu, __m128 s, __m128 *o) {
  __m128 t1 = takes4(col[1], col[0]), m = _mm_blendv_ps(col[0], col[1], t1);
  __m128 t2 = takes4(col[2], m);
  m = _mm_blendv_ps(m, col[2], t2);
  __m128 t3 = takes4(col[3], m);
  __m128 late = _mm_or_ps(t3, t2);
  o[0] = _mm_andnot_ps(_mm_or_ps(late, t1), g);
  o[1] = _mm_and_ps(_mm_andnot_ps(late, t1), g);
  o[2] = _mm_and_ps(_mm_andnot_ps(t3, t2), g);
  o[3] = _mm_and_ps(t3, g);
  if (relu)
    for (int k = 0; k < 4; k++)
      o[k] = _mm_mul_ps(o[k], _mm_and_ps(_mm_set1_ps(1.0f), _mm_cmp_ps(t[k], s, _CMP_GT_OQ)));
}

/* Columns 2q, 2q+1 of rows r0 and r1 for 8 windows: A B from r0, C D from r1. */
INLINE_AVX2 void cols8(const float *r0, const float *r1, __m256 *col) {
  __m256 a0 = _mm256_loadu_ps(r0), a1 = _mm256_loadu_ps(r0 + 8);
  __m256 c0 = _mm256_loadu_ps(r1), c1 = _mm256_loadu_ps(r1 + 8);
  col[0] = _mm256_shuffle_ps(a0, a1, 0x88), col[1] = _mm256_shuffle_ps(a0, a1, 0xDD);
  col[2] = _mm256_shuffle_ps(c0, c1, 0x88), col[3] = _mm256_shuffle_ps(c0, c1, 0xDD);
}

INLINE_AVX2 void cols4(const float *r0, const float *r1, __m128 *col) {
  __m128 a0 = _mm_loadu_ps(r0), a1 = _mm_loadu_ps(r0 + 4);
  __m128 c0 = _mm_loadu_ps(r1), c1 = _mm_loadu_ps(r1 + 4);
  col[0] = _mm_shuffle_ps(a0, a1, 0x88), col[1] = _mm_shuffle_ps(a0, a1, 0xDD);
  col[2] = _mm_shuffle_ps(c0, c1, 0x88), col[3] = _mm_shuffle_ps(c0, c1, 0xDD);
}

AVX2 static void maxpool2x2_rows_avx2(const float *r0, const float *r1, float *y, int64_t n) {
  if (n >= 8) {
    for (int64_t q = 0;; q += 8) {
      if (q + 8 > n) q = n - 8;
      __m256 col[4];
      cols8(r0 + 2 * q, r1 + 2 * q, col);
      __m256 m = col[0];
      for (int k = 1; k < 4; k++) m = _mm256_blendv_ps(m, col[k], takes8(col[k], m));
      /* back from the shuffled window order 0 1 4 5 | 2 3 6 7 */
      _mm256_storeu_ps(y + q, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8)));
      if (q + 8 == n) break;
    }
  } else if (n >= 4) {
    for (int64_t q = 0;; q += 4) {
      if (q + 4 > n) q = n - 4;
      __m128 col[4];
      cols4(r0 + 2 * q, r1 + 2 * q, col);
      __m128 m = col[0];
      for (int k = 1; k < 4; k++) m = _mm_blendv_ps(m, col[k], takes4(col[k], m));
      _mm_storeu_ps(y + q, m);
      if (q + 4 == n) break;
    }
  } else {
    maxpool2x2_rows(r0, r1, y, n);
  }
}

/* With t0 (rows t0, t1 of ReLU's output t), ReLU's gradient is applied
 * too; t0 == r0 means t is x itself (the usual case), already loaded. */
AVX2 static void maxpool2x2_bwd_rows_avx2(const float *r0, const float *r1, const float *dy,
                                          float *d0, float *d1, const float *t0, const float *t1,
                                          float s, int64_t n) {
  int relu = t0 != NULL, own = t0 == r0;
  if (n >= 8) {
    for (int64_t q = 0;; q += 8) {
      if (q + 8 > n) q = n - 8;
      __m256 col[4], tc[4], o[4];
      cols8(r0 + 2 * q, r1 + 2 * q, col);
      if (relu && !own) cols8(t0 + 2 * q, t1 + 2 * q, tc);
      /* dy in the shuffled window order 0 1 4 5 | 2 3 6 7 */
      __m256 g =
          _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_loadu_ps(dy + q)), 0xD8));
      bwd8(col, g, own ? col : tc, relu, _mm256_set1_ps(s), o);
      /* unpacking undoes the shuffles */
      _mm256_storeu_ps(d0 + 2 * q, _mm256_unpacklo_ps(o[0], o[1]));
      _mm256_storeu_ps(d0 + 2 * q + 8, _mm256_unpackhi_ps(o[0], o[1]));
      _mm256_storeu_ps(d1 + 2 * q, _mm256_unpacklo_ps(o[2], o[3]));
      _mm256_storeu_ps(d1 + 2 * q + 8, _mm256_unpackhi_ps(o[2], o[3]));
      if (q + 8 == n) break;
    }
  } else if (n >= 4) {
    for (int64_t q = 0;; q += 4) {
      if (q + 4 > n) q = n - 4;
      __m128 col[4], tc[4], o[4];
      cols4(r0 + 2 * q, r1 + 2 * q, col);
      if (relu && !own) cols4(t0 + 2 * q, t1 + 2 * q, tc);
      bwd4(col, _mm_loadu_ps(dy + q), own ? col : tc, relu, _mm_set1_ps(s), o);
      _mm_storeu_ps(d0 + 2 * q, _mm_unpacklo_ps(o[0], o[1]));
      _mm_storeu_ps(d0 + 2 * q + 4, _mm_unpackhi_ps(o[0], o[1]));
      _mm_storeu_ps(d1 + 2 * q, _mm_unpacklo_ps(o[2], o[3]));
      _mm_storeu_ps(d1 + 2 * q + 4, _mm_unpackhi_ps(o[2], o[3]));
      if (q + 4 == n) break;
    }
  } else {
    maxpool2x2_bwd_rows(r0, r1, dy, d0, d1, n);
    if (relu) relu_grad_mask(d0, t0, s, 2 * n), relu_grad_mask(d1, t1, s, 2 * n);
  }
}
#endif

static void maxpool_plane(const pool_geom *g, const float *xp, float *yp) {
  int64_t p0 = 0, q0 = 0;
  if (is_2x2(g)) {
    /* full windows; a ceil_mode edge row/column is left to the generic loop */
    p0 = g->p < g->h / 2 ? g->p : g->h / 2;
    q0 = g->q < g->w / 2 ? g->q : g->w / 2;
    for (int64_t p = 0; p < p0; p++) {
      const float *r0 = xp + 2 * p * g->w, *r1 = r0 + g->w;
#ifdef POOL_AVX2
      if (pool_avx2()) {
        maxpool2x2_rows_avx2(r0, r1, yp + p * g->q, q0);
        continue;
      }
#endif
      maxpool2x2_rows(r0, r1, yp + p * g->q, q0);
    }
  }
  for (int64_t p = 0; p < g->p; p++)
    for (int64_t q = p < p0 ? q0 : 0; q < g->q; q++) {
      float m;
      argmax_in(g, xp, max_window(g, p, q), &m);
      yp[p * g->q + q] = m;
    }
}

static nb_status run_maxpool(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node, &g);
  const float *x = c->in[0];
  float *y = c->out;
  int failed = 0;
  int64_t per = planes_per_chunk(g.p * g.q), chunks = (g.planes + per - 1) / per;
  int nt = big(&g) ? nb_cpu_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(max : failed)
  for (int64_t ch = 0; ch < chunks; ch++) {
    int64_t p0 = ch * per, p1 = p0 + per < g.planes ? p0 + per : g.planes;
    for (int64_t pl = p0; pl < p1; pl++) maxpool_plane(&g, x + pl * g.h * g.w, y + pl * g.p * g.q);
    if (c->group && nb_cpu_epilogue(c, p0 * g.p * g.q, (p1 - p0) * g.p * g.q)) failed = 1;
  }
  return failed ? nb_error(NB_ERR_OOM, "max_pool2d: epilogue: out of memory") : NB_OK;
}

/* With tp (the plane of ReLU's output t), the ReLU-gradient epilogue
 * dx * (t > s ? 1 : 0) is applied too, while the plane is in cache. */
static void maxpool_bwd_plane(const pool_geom *g, const float *xp, const float *dyp, float *dxp,
                              const float *tp, float s) {
  int64_t p0 = 0, q0 = 0;
  if (is_2x2(g)) {
    p0 = g->p < g->h / 2 ? g->p : g->h / 2;
    q0 = g->q < g->w / 2 ? g->q : g->w / 2;
    /* full windows write every element they cover, so only the rest of
     * the plane needs clearing before the generic loop accumulates */
    for (int64_t p = 0; p < p0; p++) {
      int64_t i0 = 2 * p * g->w, i1 = i0 + g->w;
#ifdef POOL_AVX2
      if (pool_avx2())
        maxpool2x2_bwd_rows_avx2(xp + i0, xp + i1, dyp + p * g->q, dxp + i0, dxp + i1,
                                 tp ? tp + i0 : NULL, tp ? tp + i1 : NULL, s, q0);
      else
#endif
      {
        maxpool2x2_bwd_rows(xp + i0, xp + i1, dyp + p * g->q, dxp + i0, dxp + i1, q0);
        if (tp)
          relu_grad_mask(dxp + i0, tp + i0, s, 2 * q0),
              relu_grad_mask(dxp + i1, tp + i1, s, 2 * q0);
      }
      for (int64_t j = 2 * q0; j < g->w; j++) dxp[i0 + j] = dxp[i1 + j] = 0.0f;
    }
    memset(dxp + 2 * p0 * g->w, 0, (size_t)((g->h - 2 * p0) * g->w) * sizeof(float));
  } else {
    memset(dxp, 0, (size_t)(g->h * g->w) * sizeof(float));
  }
  for (int64_t p = 0; p < g->p; p++)
    for (int64_t q = p < p0 ? q0 : 0; q < g->q; q++) {
      window k = max_window(g, p, q);
      if (k.h0 >= k.h1 || k.w0 >= k.w1) continue;
      float m;
      dxp[argmax_in(g, xp, k, &m)] += dyp[p * g->q + q];
    }
  if (!tp) return;
  /* The full windows applied the mask themselves. Elements outside every
   * window hold +0, which the mask leaves +0; only the clipped windows of
   * ceil_mode (or any other pool) wrote values that still need it. */
  if (!is_2x2(g)) {
    relu_grad_mask(dxp, tp, s, g->h * g->w);
  } else if (g->p > p0 || g->q > q0) {
    for (int64_t i = 0; i < 2 * p0; i++)
      relu_grad_mask(dxp + i * g->w + 2 * q0, tp + i * g->w + 2 * q0, s, g->w - 2 * q0);
    relu_grad_mask(dxp + 2 * p0 * g->w, tp + 2 * p0 * g->w, s, (g->h - 2 * p0) * g->w);
  }
}

/* in[0] = x, in[1] = dy. The argmax is recomputed from x rather than
 * stored by the forward pass, which keeps max_pool2d a single-output op.
 * The usual epilogue, ReLU's gradient on the same x, runs in the plane
 * loop (cpu_epilogue_match.c); any other through nb_cpu_epilogue. */
static nb_status run_maxpool_bwd(const nb_kernel_call *c) {
  const nb_tensor *node = c->node;
  nb_status st = check_inputs(node);
  if (st) return st;
  pool_geom g;
  geom_of(node, node->in[1], &g);
  const float *x = c->in[0], *dy = c->in[1];
  float *dx = c->out;
  nb_cpu_relu_grad rg = {NULL, 0.0f};
  /* t must be x itself: the kernel's own input is never dx's storage,
   * while another tensor might share it (the engine's epilogue allows it) */
  int fused = c->group && nb_cpu_match_relu_grad(c, &rg) && rg.t == x;
  if (fused) nb_cpu_note_fused_epilogue();
  int failed = 0;
  int64_t per = planes_per_chunk(g.h * g.w), chunks = (g.planes + per - 1) / per;
  int nt = big(&g) ? nb_cpu_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(max : failed)
  for (int64_t ch = 0; ch < chunks; ch++) {
    int64_t p0 = ch * per, p1 = p0 + per < g.planes ? p0 + per : g.planes;
    for (int64_t pl = p0; pl < p1; pl++)
      maxpool_bwd_plane(&g, x + pl * g.h * g.w, dy + pl * g.p * g.q, dx + pl * g.h * g.w,
                        fused ? x + pl * g.h * g.w : NULL, rg.s);
    /* these planes of dx are finished: the epilogue (ReLU's gradient) reads
     * them from cache */
    if (c->group && !fused && nb_cpu_epilogue(c, p0 * g.h * g.w, (p1 - p0) * g.h * g.w)) failed = 1;
  }
  return failed ? nb_error(NB_ERR_OOM, "max_pool2d_backward: epilogue: out of memory") : NB_OK;
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
  t[NB_OP_MAXPOOL2D] = (nb_cpu_kernel_entry){run_maxpool, NULL, 1};
  t[NB_OP_MAXPOOL2D_BWD] = (nb_cpu_kernel_entry){run_maxpool_bwd, NULL, 1};
  t[NB_OP_AVGPOOL2D].run = run_avgpool;
  t[NB_OP_AVGPOOL2D_BWD].run = run_avgpool_bwd;
}
