/* Winograd F(2x2, 3x3) convolution for AVX2+FMA CPUs: stride 1, 3x3,
 * undilated, where it needs fewer operations than the direct kernels
 * (cpu_conv_direct.c), which call it.
 *
 * Why: the direct kernels run near the FMA peak, so what is left is doing
 * fewer multiplications. Each 2x2 block of outputs ("tile") takes 16
 * products per (input, output) channel pair instead of 36: the 4x4 input
 * patch d and the 3x3 filter g are transformed (V = B^T d B, U = G g G^T),
 * M = sum over input channels of U * V elementwise, and Y = A^T M A. The
 * sums over input channels are the direct kernels' register tiles (16
 * output channels x 6 tiles, one for each of the 16 positions of M), so
 * they run at the same speed on 2.25x fewer products; the transforms are
 * additions. On the reference CNNs that cut the conv2 forward and input
 * gradient by 15-30%. A cost model keeps the direct kernel where the
 * tiles would waste too much; NABLA_CONV=direct turns Winograd off and
 * NABLA_CONV=winograd takes it wherever it can run (tests).
 *
 * Rounding differs from the direct sum (the transforms add and halve), by
 * a few float32 ulps of the inputs' scale. Every output is computed by one
 * thread in a fixed order, so results do not depend on the thread count;
 * the choice of kernel depends on the shapes only. */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_internal.h"

#if NB_CPU_DIRECT_CONV

#include "cpu_conv_tile.h"
#include "cpu_transpose.h"

#define AVX2        NB_TILE_AVX2
#define INLINE_AVX2 NB_TILE_INLINE_AVX2
#define LANES       NB_TILE_LANES
#define KP          NB_TILE_KP
#define QB          NB_TILE_QB
#define XI          16 /* positions of a transformed tile */

static int64_t round8(int64_t n) { return (n + LANES - 1) / LANES * LANES; }
static size_t align64(size_t n) { return (n + 63u) & ~(size_t)63u; }

/* Shared: U [groups][kgp / 8][16][cg][8] and the tile's tap list (one tap
 * per input channel). Per thread: the image's group of channels, zero
 * padded, channels last in blocks of 8: X [cgp / 8][prows][pcols][8]; V
 * [16][tiles][cgp] (the transformed image); M [tiles][16][16] (the sums for
 * 16 output channels); the stage [pixels][16]. */
typedef struct {
  int64_t tp, tq, t;    /* tiles: rows, columns, all */
  int64_t prows, pcols; /* the padded image read: 2 tp + 2 rows, 2 tq + 2 columns */
  int64_t cgp;          /* input channels rounded up to 8 */
  int64_t kgp, kpairs, pq;
  size_t off_ref, off_thread, x_bytes, v_bytes, m_bytes, st_bytes, per_thread;
} wino_plan;

static wino_plan plan_of(const nb_dconv *d) {
  wino_plan w;
  w.tp = (d->p + 1) / 2, w.tq = (d->q + 1) / 2, w.t = w.tp * w.tq;
  w.prows = 2 * w.tp + 2, w.pcols = 2 * w.tq + 2;
  w.cgp = round8(d->cg);
  w.kgp = round8(d->kg);
  w.kpairs = (w.kgp / LANES + 1) / 2;
  w.pq = d->p * d->q;
  w.off_ref = align64((size_t)(d->groups * w.kgp * XI * d->cg) * sizeof(float));
  w.off_thread = w.off_ref + align64((size_t)d->cg * sizeof(nb_tap_ref));
  w.x_bytes = align64((size_t)(w.cgp * w.prows * w.pcols) * sizeof(float));
  w.v_bytes = align64((size_t)(XI * w.t * w.cgp) * sizeof(float));
  w.m_bytes = align64((size_t)(w.t * XI * KP) * sizeof(float));
  w.st_bytes = align64((size_t)(w.pq * KP) * sizeof(float));
  w.per_thread = w.x_bytes + w.v_bytes + w.m_bytes + w.st_bytes;
  return w;
}

/* Output tiles of 6 cost 6 cycles a channel, a last group of k < 6 tiles
 * max(4, k) (FMA latency): the sums over input channels of one output tile
 * position, in units of one channel times one tile or pixel. */
static int64_t tile_cost(int64_t n) {
  return n / QB * QB + (n % QB ? (n % QB < 4 ? 4 : n % QB) : 0);
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Sum over outputs o of the kernel taps that read real input (not padding)
 * along one axis, as the direct kernel counts them. */
static int64_t real_taps(int64_t outs, int64_t n, int64_t k, int64_t pad) {
  int64_t sum = 0;
  for (int64_t o = 0; o < outs; o++) {
    int64_t lo = pad - o > 0 ? pad - o : 0, hi = floor_div(n - 1 + pad - o, 1) + 1;
    if (hi > k) hi = k;
    if (hi > lo) sum += hi - lo;
  }
  return sum;
}

int nb_conv_winograd_applies(const nb_dconv *d) {
  if (d->r != 3 || d->s != 3 || d->sh != 1 || d->sw != 1 || d->dh != 1 || d->dw != 1) return 0;
  if (d->p < 1 || d->q < 1 || d->cg < 1 || d->kg < 1) return 0;
  /* NABLA_CONV=direct: never; NABLA_CONV=winograd: wherever it can (tests) */
  const char *e = getenv("NABLA_CONV");
  if (e && !strcmp(e, "direct")) return 0;
  if (e && !strcmp(e, "winograd")) return 1;
  /* threads split the images (and groups): too few and the direct kernel,
   * which also splits the output channels, keeps both cores busy. A rule of
   * the shapes only, so that results never depend on the thread count. */
  if (d->n * d->groups < 8) return 0;
  wino_plan w = plan_of(d);
  /* per image and group, in cycles: 6 columns x 16 channels per 6 cycles
   * in either tile, and the transforms. A rough model: on the reference
   * CNNs Winograd measured 0.84x the direct kernel's time both where it
   * predicts 0.65x (MNIST conv2 forward) and 0.96x (its input gradient,
   * where the direct kernel skips the padding but its operands outgrow L1). */
  double direct = (double)w.kpairs * (double)d->cg * (double)real_taps(d->p, d->h, 3, d->ph) *
                  (double)real_taps(d->q, d->w, 3, d->pw);
  double wino = (double)w.kpairs * ((double)XI * (double)d->cg * (double)tile_cost(w.t) +
                                    60.0 * (double)w.t) /* output transform */
                +
                (double)w.cgp * (4.0 * (double)w.t + 0.5 * (double)(w.prows * w.pcols)); /* input */
  return wino < direct;
}

size_t nb_conv_winograd_workspace(const nb_dconv *d, int threads) {
  wino_plan w = plan_of(d);
  return w.off_thread + (size_t)(threads > 0 ? threads : 1) * w.per_thread;
}

/* ---- transforms ------------------------------------------------------------------ */

/* U = G g G^T for every (group, output channel, input channel), packed as
 * [g][k / 8][position][c][k % 8] with zeros past kg. flip: the weights of
 * the convolution whose input gradient this is, rotated (as the direct
 * kernel's pack_weights). G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]. */
static void filter_transform(const nb_dconv *d, const float *w, int flip, const wino_plan *p,
                             float *u) {
  memset(u, 0, (size_t)(d->groups * p->kgp * XI * d->cg) * sizeof(float));
  for (int64_t g = 0; g < d->groups; g++)
    for (int64_t k = 0; k < d->kg; k++)
      for (int64_t c = 0; c < d->cg; c++) {
        float f[3][3], t[4][3];
        for (int r = 0; r < 3; r++)
          for (int s = 0; s < 3; s++)
            f[r][s] = flip ? w[((g * d->cg + c) * d->kg + k) * 9 + (2 - r) * 3 + (2 - s)]
                           : w[((g * d->kg + k) * d->cg + c) * 9 + r * 3 + s];
        for (int s = 0; s < 3; s++) {
          t[0][s] = f[0][s];
          t[1][s] = (f[0][s] + f[1][s] + f[2][s]) * 0.5f;
          t[2][s] = (f[0][s] - f[1][s] + f[2][s]) * 0.5f;
          t[3][s] = f[2][s];
        }
        float *dst = u + ((g * (p->kgp / LANES) + k / LANES) * XI * d->cg + c) * LANES + k % LANES;
        for (int i = 0; i < 4; i++) {
          float v[4] = {t[i][0], (t[i][0] + t[i][1] + t[i][2]) * 0.5f,
                        (t[i][0] - t[i][1] + t[i][2]) * 0.5f, t[i][2]};
          for (int j = 0; j < 4; j++) dst[(i * 4 + j) * d->cg * LANES] = v[j];
        }
      }
}

/* X = the image's channels of group g, zero padded, channels last in
 * blocks of 8: X[cb][i][j][lane] = x[g cg + 8 cb + lane][i - ph][j - pw]
 * (0 outside the input and past cg), for the rows and columns the tiles
 * read. */
AVX2 static void to_channels_last(const nb_dconv *d, const wino_plan *p, const float *xg,
                                  float *X) {
  int64_t hw = d->h * d->w, row = p->pcols * LANES;
  /* input columns [0, nw) land in padded columns [pw, pw + nw) */
  int64_t nw = d->w < p->pcols - d->pw ? d->w : p->pcols - d->pw;
  if (nw < 0) nw = 0;
  for (int64_t cb = 0; cb < p->cgp / LANES; cb++) {
    int64_t nc = d->cg - cb * LANES < LANES ? d->cg - cb * LANES : LANES;
    const float *src = xg + cb * LANES * hw;
    for (int64_t i = 0; i < p->prows; i++) {
      float *dst = X + (cb * p->prows + i) * row;
      int64_t si = i - d->ph;
      if (si < 0 || si >= d->h || nw == 0) {
        for (int64_t j = 0; j < row; j += LANES) _mm256_storeu_ps(dst + j, _mm256_setzero_ps());
        continue;
      }
      for (int64_t j = 0; j < d->pw && j < p->pcols; j++)
        _mm256_storeu_ps(dst + j * LANES, _mm256_setzero_ps());
      for (int64_t j = d->pw + nw; j < p->pcols; j++)
        _mm256_storeu_ps(dst + j * LANES, _mm256_setzero_ps());
      float *out = dst + d->pw * LANES;
      const float *in = src + si * d->w;
      if (nc == LANES && nw >= LANES) {
        /* 8 x 8 blocks; the last one overlaps the one before */
        for (int64_t j = 0; j + LANES < nw; j += LANES)
          nb_cpu_t8x8(in + j, hw, out + j * LANES, LANES);
        nb_cpu_t8x8(in + nw - LANES, hw, out + (nw - LANES) * LANES, LANES);
      } else {
        for (int64_t j = 0; j < nw; j++)
          for (int64_t m = 0; m < LANES; m++) out[j * LANES + m] = m < nc ? in[m * hw + j] : 0.0f;
      }
    }
  }
}

/* V[position][tile][c] = (B^T d B) of the 4x4 patch d of every tile, 8
 * input channels a register, with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0;
 * 0 1 0 -1]: 16 loads, 32 additions and 16 stores per tile and 8
 * channels. (Plane by plane, with tiles as lanes, it took 6 times the
 * stores: splitting even and odd columns, short rows, partial registers.) */
AVX2 static void input_transform(const wino_plan *p, const float *X, float *v) {
  int64_t row = p->pcols * LANES, pos = p->t * p->cgp; /* floats per position in V */
  for (int64_t cb = 0; cb < p->cgp / LANES; cb++)
    for (int64_t t = 0; t < p->t; t++) {
      const float *x0 = X + (cb * p->prows + 2 * (t / p->tq)) * row + 2 * (t % p->tq) * LANES;
      __m256 s[4][4];
      /* rows: B^T d */
      for (int j = 0; j < 4; j++) {
        __m256 d0 = _mm256_loadu_ps(x0 + j * LANES), d1 = _mm256_loadu_ps(x0 + row + j * LANES);
        __m256 d2 = _mm256_loadu_ps(x0 + 2 * row + j * LANES);
        __m256 d3 = _mm256_loadu_ps(x0 + 3 * row + j * LANES);
        s[0][j] = _mm256_sub_ps(d0, d2);
        s[1][j] = _mm256_add_ps(d1, d2);
        s[2][j] = _mm256_sub_ps(d2, d1);
        s[3][j] = _mm256_sub_ps(d1, d3);
      }
      /* columns: (B^T d) B */
      float *dst = v + t * p->cgp + cb * LANES;
      for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + (4 * i + 0) * pos, _mm256_sub_ps(s[i][0], s[i][2]));
        _mm256_storeu_ps(dst + (4 * i + 1) * pos, _mm256_add_ps(s[i][1], s[i][2]));
        _mm256_storeu_ps(dst + (4 * i + 2) * pos, _mm256_sub_ps(s[i][2], s[i][1]));
        _mm256_storeu_ps(dst + (4 * i + 3) * pos, _mm256_sub_ps(s[i][1], s[i][3]));
      }
    }
}

/* Y = A^T M A for one register of 8 channels of one tile, with A^T =
 * [1 1 1 0; 0 1 -1 -1]; m[position] are 16 registers. */
INLINE_AVX2 void output_transform(const __m256 *m, __m256 *y) {
  __m256 t0[4], t1[4];
  for (int j = 0; j < 4; j++) {
    t0[j] = _mm256_add_ps(_mm256_add_ps(m[j], m[4 + j]), m[8 + j]);
    t1[j] = _mm256_sub_ps(_mm256_sub_ps(m[4 + j], m[8 + j]), m[12 + j]);
  }
  y[0] = _mm256_add_ps(_mm256_add_ps(t0[0], t0[1]), t0[2]);
  y[1] = _mm256_sub_ps(_mm256_sub_ps(t0[1], t0[2]), t0[3]);
  y[2] = _mm256_add_ps(_mm256_add_ps(t1[0], t1[1]), t1[2]);
  y[3] = _mm256_sub_ps(_mm256_sub_ps(t1[1], t1[2]), t1[3]);
}

/* The outputs of every tile into the stage [pixel][16 channels]: nk
 * registers, the epilogue's bias and ReLU applied (bias NULL: none). */
AVX2 static void tiles_out(const nb_dconv *d, const wino_plan *p, const float *mst, int nk,
                           const float *bias, int relu, float *st) {
  for (int64_t ti = 0; ti < p->t; ti++) {
    int64_t pr = 2 * (ti / p->tq), qc = 2 * (ti % p->tq);
    for (int k = 0; k < nk; k++) {
      __m256 m[XI], y[4];
      for (int x = 0; x < XI; x++) m[x] = _mm256_loadu_ps(mst + (ti * XI + x) * KP + k * LANES);
      output_transform(m, y);
      if (bias) {
        __m256 b = _mm256_loadu_ps(bias + k * LANES);
        for (int j = 0; j < 4; j++) y[j] = nb_tile_bias_relu(y[j], b, relu);
      }
      for (int j = 0; j < 4; j++) {
        int64_t pp = pr + j / 2, qq = qc + j % 2;
        if (pp < d->p && qq < d->q) _mm256_storeu_ps(st + (pp * d->q + qq) * KP + k * LANES, y[j]);
      }
    }
  }
}

/* ---- the convolution ----------------------------------------------------------------- */

nb_status nb_conv_winograd_fwd(const nb_dconv *d, const float *x, const float *w, int flip,
                               float *y, void *ws, size_t ws_bytes, const nb_kernel_call *epi) {
  wino_plan p = plan_of(d);
  if (ws_bytes < p.off_thread + p.per_thread)
    return nb_error(NB_ERR_INTERNAL, "conv2d (Winograd): workspace of %zu bytes is too small",
                    ws_bytes);
  int nt = nb_cpu_threads();
  size_t cap = (ws_bytes - p.off_thread) / p.per_thread;
  if ((size_t)nt > cap) nt = (int)cap;
  int64_t items = d->n * d->groups;
  if (nt > items) nt = (int)items;
  if (nt < 1) nt = 1;
  unsigned char *base = ws;
  float *u = (float *)base;
  nb_tap_ref *refs = (nb_tap_ref *)(base + p.off_ref);
  filter_transform(d, w, flip, &p, u);
  for (int64_t c = 0; c < d->cg; c++) refs[c] = (nb_tap_ref){c, c * LANES};
  nb_cpu_chan_bias cb;
  int in_regs = epi && nb_cpu_match_chan_bias(epi, &cb);
  int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(max : failed)
  for (int64_t it = 0; it < items; it++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    unsigned char *mine = base + p.off_thread + (size_t)tid * p.per_thread;
    float *X = (float *)mine, *v = (float *)(mine + p.x_bytes);
    float *mst = (float *)(mine + p.x_bytes + p.v_bytes);
    float *st = (float *)(mine + p.x_bytes + p.v_bytes + p.m_bytes);
    int64_t g = it % d->groups, n = it / d->groups;
    to_channels_last(d, &p, x + (n * d->cin + g * d->cg) * d->h * d->w, X);
    input_transform(&p, X, v);
    for (int64_t kp = 0; kp < p.kpairs; kp++) {
      int64_t k8 = 2 * kp, nk = p.kgp / LANES - k8 >= 2 ? 2 : 1;
      int64_t k0 = k8 * LANES, nvalid = d->kg - k0 < nk * LANES ? d->kg - k0 : nk * LANES;
      const float *uk = u + (g * (p.kgp / LANES) + k8) * XI * d->cg * LANES;
      /* M for 16 output channels: per position, the sums over input channels */
      for (int x = 0; x < XI; x++)
        for (int64_t t0 = 0; t0 < p.t; t0 += QB) {
          int64_t nq = p.t - t0 < QB ? p.t - t0 : QB;
          const float *px[QB];
          float *sp[QB];
          for (int64_t j = 0; j < nq; j++) {
            px[j] = v + (x * p.t + t0 + j) * p.cgp;
            sp[j] = mst + ((t0 + j) * XI + x) * KP;
          }
          nb_conv_tile((int)nk, (int)nq, uk + x * d->cg * LANES, XI * d->cg * LANES, px, refs,
                       d->cg, sp, NULL);
        }
      float bias[KP] = {0};
      if (in_regs)
        for (int64_t k = 0; k < nvalid; k++) bias[k] = cb.bias[(g * d->kg + k0 + k) * cb.stride];
      tiles_out(d, &p, mst, (int)nk, in_regs ? bias : NULL, in_regs ? cb.relu : 0, st);
      int64_t first = (n * d->cout + g * d->kg + k0) * p.pq;
      nb_conv_transpose(st, KP, y + first, p.pq, p.pq, nvalid);
      if (epi && !in_regs && nb_cpu_epilogue(epi, first, nvalid * p.pq)) failed = 1;
    }
  }
  return failed ? nb_error(NB_ERR_OOM, "conv2d (Winograd): epilogue: out of memory") : NB_OK;
}

#else /* !NB_CPU_DIRECT_CONV: im2col + GEMM runs everything */

int nb_conv_winograd_applies(const nb_dconv *d) {
  (void)d;
  return 0;
}
size_t nb_conv_winograd_workspace(const nb_dconv *d, int threads) {
  (void)d, (void)threads;
  return 0;
}
nb_status nb_conv_winograd_fwd(const nb_dconv *d, const float *in, const float *w, int flip,
                               float *out, void *ws, size_t ws_bytes, const nb_kernel_call *epi) {
  (void)d, (void)in, (void)w, (void)flip, (void)out, (void)ws, (void)ws_bytes, (void)epi;
  return nb_error(NB_ERR_INTERNAL, "conv2d: Winograd kernels are not built for this target");
}

#endif /* NB_CPU_DIRECT_CONV */
