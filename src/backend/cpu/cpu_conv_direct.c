/* Direct convolution kernels for AVX2+FMA CPUs: conv2d, its input gradient
 * (stride 1) and its weight gradient, without im2col.
 *
 * Why: at the channel counts of small CNNs (MNIST, CIFAR: 1-64 channels)
 * im2col + GEMM spent half its time outside the GEMM (building and
 * scattering a column matrix 9x the input) and the GEMMs themselves ran at
 * 20-50 GFLOP/s on one core because one dimension is 16-64. Here the output
 * channels are the vector lanes: a tile of 16 output channels x 6 output
 * pixels lives in 12 AVX registers, and each tap (r, c, s) costs two weight
 * loads, six broadcasts of input pixels and twelve FMAs, so the loop runs
 * near the FMA throughput (75-80 GFLOP/s per core measured, about OpenBLAS's
 * SGEMM on the same machine) whatever the image size, and nothing but the
 * output is written.
 *
 * Layout: packed weights [group][k / 8][tap][8] with taps in (r, c, s) order
 * (so that border pixels can skip the kernel rows and columns that read only
 * padding) and zero lanes past the group's channel count; results are staged as
 * [pixel][16 channels] and transposed into NCHW in 8x8 blocks. The input is
 * copied into a zero-padded buffer when the convolution pads, so the inner
 * loop has no bounds checks. The input gradient of a stride-1 convolution
 * is the same forward kernel run on dy with the weights rotated. The weight
 * gradient keeps dy transposed ([pixel][channels]) and accumulates
 * [tap][16 channels] sums. First layers (few taps) use pixels as lanes
 * instead; see "first layers" below. 3x3 stride-1 convolutions go to the
 * Winograd kernel (cpu_conv_winograd.c) where its cost model says so; it
 * uses the same register tile. The conv > add + relu epilogue runs in the
 * tiles' registers (cpu_epilogue_match.c).
 *
 * Every output element is a sum in a fixed order (taps; or blocks of rows,
 * images, then fixed batch parts for the weight gradient), computed by one
 * thread, so results do not depend on the thread count. */
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

#define QB    NB_TILE_QB    /* output columns per register tile */
#define TB    6             /* taps per register tile of the weight gradient */
#define LANES NB_TILE_LANES /* floats per AVX register */
#define KP    NB_TILE_KP    /* channels per stage row (two registers) */
/* Pixels summed in registers before the sum is added to the running total of
 * the weight gradient: keeps the float32 rounding of a sum over a whole batch
 * close to that of a blocked GEMM. */
#define SUM_PIXELS 256

int nb_conv_direct_available(void) {
  /* libgcc initialises the CPU model before main; no cache needed */
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int64_t round8(int64_t n) { return (n + LANES - 1) / LANES * LANES; }
static size_t align64(size_t n) { return (n + 63u) & ~(size_t)63u; }

/* ---- input views ---------------------------------------------------------------- */

/* Rows and columns of the padded input that the convolution reads. */
static int64_t span(int64_t out, int64_t stride, int64_t k, int64_t dil) {
  return out > 0 ? (out - 1) * stride + (k - 1) * dil + 1 : 0;
}

static int needs_pad(const nb_dconv *d) {
  return d->ph || d->pw || span(d->p, d->sh, d->r, d->dh) > d->h ||
         span(d->q, d->sw, d->s, d->dw) > d->w;
}

typedef struct {
  int64_t hp, wp;   /* padded plane */
  int64_t plane;    /* floats per channel plane */
  int64_t ld;       /* floats per row */
  size_t pad_bytes; /* 0: read the input in place */
} in_view;

static in_view view_of(const nb_dconv *d) {
  in_view v;
  if (!needs_pad(d)) {
    v.hp = d->h, v.wp = d->w, v.plane = d->h * d->w, v.ld = d->w, v.pad_bytes = 0;
    return v;
  }
  v.hp = span(d->p, d->sh, d->r, d->dh);
  v.wp = span(d->q, d->sw, d->s, d->dw);
  v.plane = v.hp * v.wp;
  v.ld = v.wp;
  v.pad_bytes = align64((size_t)(d->n * d->cin * v.plane) * sizeof(float));
  return v;
}

/* dst[0, n) = src[0, n), or zeros, in whole registers and without loops
 * below 8 floats: the rows are short (11-34 floats in the reference CNNs),
 * and libc calls per row cost more than the copy itself (pad_input was 7%
 * of the CIFAR training step with memset, memcpy, memset per row; GCC turns
 * short loops into those calls). Longer runs end in a register that
 * overlaps the previous one instead of a scalar tail. */
INLINE_AVX2 void copy_floats(float *dst, const float *src, int64_t n) {
  if (n >= LANES) {
    for (int64_t j = 0; j + LANES < n; j += LANES)
      _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
    _mm256_storeu_ps(dst + n - LANES, _mm256_loadu_ps(src + n - LANES));
  } else if (n >= 4) {
    __m128 a = _mm_loadu_ps(src), b = _mm_loadu_ps(src + n - 4);
    _mm_storeu_ps(dst, a);
    _mm_storeu_ps(dst + n - 4, b);
  } else if (n > 0) {
    /* 0, n / 2 and n - 1 cover 1 to 3 elements */
    float a = src[0], b = src[n / 2], c = src[n - 1];
    dst[0] = a, dst[n / 2] = b, dst[n - 1] = c;
  }
}

INLINE_AVX2 void zero_floats(float *dst, int64_t n) {
  if (n >= LANES) {
    for (int64_t j = 0; j + LANES < n; j += LANES) _mm256_storeu_ps(dst + j, _mm256_setzero_ps());
    _mm256_storeu_ps(dst + n - LANES, _mm256_setzero_ps());
  } else if (n >= 4) {
    _mm_storeu_ps(dst, _mm_setzero_ps());
    _mm_storeu_ps(dst + n - 4, _mm_setzero_ps());
  } else if (n > 0) {
    dst[0] = dst[n / 2] = dst[n - 1] = 0.0f;
  }
}

/* Copies every channel plane into the padded buffer (zeros outside), each
 * element written once. (GCC would turn the loops of zero_floats into
 * memset calls of 50-100 bytes.) */
AVX2 __attribute__((optimize("no-tree-loop-distribute-patterns"))) static void
pad_input(const nb_dconv *d, const in_view *v, const float *x, float *xp, int nt) {
  /* rows [i0, i1) of the padded plane hold input rows; columns [j0, j1) */
  int64_t i0 = d->ph < v->hp ? d->ph : v->hp, i1 = d->ph + d->h < v->hp ? d->ph + d->h : v->hp;
  int64_t j0 = d->pw < v->wp ? d->pw : v->wp, j1 = d->pw + d->w < v->wp ? d->pw + d->w : v->wp;
  int64_t wp = v->wp;
  if (i1 < i0) i1 = i0;
  if (j1 < j0) j1 = j0;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t pl = 0; pl < d->n * d->cin; pl++) {
    const float *src = x + pl * d->h * d->w;
    float *dst = xp + pl * v->plane;
    if (j0 == 0 && j1 == wp && wp == d->w) {
      /* no column padding: the rows are one block */
      zero_floats(dst, i0 * wp);
      if (i1 > i0) copy_floats(dst + i0 * wp, src + (i0 - d->ph) * d->w, (i1 - i0) * wp);
      zero_floats(dst + i1 * wp, (v->hp - i1) * wp);
      continue;
    }
    /* the top rows and the first row's left border, then each row's data
     * and the zeros up to the next row's data (a right border and a left
     * one), then the rest */
    zero_floats(dst, i0 * wp + j0);
    for (int64_t i = i0; i < i1; i++) {
      float *row = dst + i * wp;
      copy_floats(row + j0, src + (i - d->ph) * d->w, j1 - j0);
      int64_t gap = wp - j1 + j0;
      if (i + 1 < i1 && gap <= LANES && wp >= LANES)
        /* one register of zeros; what lands on the next row's data is
         * overwritten by that row's copy right after */
        _mm256_storeu_ps(row + j1, _mm256_setzero_ps());
      else if (i + 1 < i1)
        zero_floats(row + j1, gap);
    }
    int64_t rest = i1 > i0 ? (i1 - 1) * wp + j1 : i0 * wp + j0;
    zero_floats(dst + rest, v->plane - rest);
  }
}

/* Offsets of every tap (c, r, s) of one group in the (padded) input. */
static void tap_offsets(const nb_dconv *d, const in_view *v, int64_t *off) {
  int64_t t = 0;
  for (int64_t c = 0; c < d->cg; c++)
    for (int64_t r = 0; r < d->r; r++)
      for (int64_t s = 0; s < d->s; s++) off[t++] = c * v->plane + r * d->dh * v->ld + s * d->dw;
}

/* ---- transposes ------------------------------------------------------------------ */

/* dst[j * dld + i] = src[i * sld + j] for i < rows, j < cols. */
AVX2 static void transpose(const float *src, int64_t sld, float *dst, int64_t dld, int64_t rows,
                           int64_t cols) {
  int64_t i = 0;
  for (; i + 8 <= rows; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) nb_cpu_t8x8(src + i * sld + j, sld, dst + j * dld + i, dld);
    for (; j < cols; j++)
      for (int64_t k = 0; k < 8; k++) dst[j * dld + i + k] = src[(i + k) * sld + j];
  }
  for (; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) dst[j * dld + i] = src[i * sld + j];
}

/* ---- forward register tile ------------------------------------------------------ */

typedef nb_tap_ref tap_ref;
typedef nb_tile_epi tile_epi;
#define bias_relu nb_tile_bias_relu

/* sp[j][lane] = sum over taps t of w[tl[t].w + lane] * px[j][tl[t].x], for
 * nk (1 or 2) registers of 8 channels (the second wstride floats after the
 * first) and nq <= QB output pixels, each given by the address of its first
 * input tap and of its stage row: a tile may span output rows, so rows of
 * any width fill whole tiles (a 1-pixel tail tile runs 4x slower, bound by
 * FMA latency). Written out for every (nk, nq) so that the accumulators
 * stay in registers. */
#define FWD_TILE(NK, NQ)                                                                           \
  AVX2 static void fwd_tile_##NK##_##NQ(const float *w, int64_t wstride, const float *const *px,   \
                                        const tap_ref *tl, int64_t taps, float *const *sp,         \
                                        const tile_epi *e) {                                       \
    __m256 a[NQ], b[NQ];                                                                           \
    const float *xs[NQ];                                                                           \
    _Pragma("GCC unroll 6") for (int j = 0; j < NQ; j++) {                                         \
      a[j] = b[j] = _mm256_setzero_ps();                                                           \
      xs[j] = px[j];                                                                               \
    }                                                                                              \
    for (int64_t t = 0; t < taps; t++) {                                                           \
      int64_t o = tl[t].x;                                                                         \
      const float *wt = w + tl[t].w;                                                               \
      __m256 w0 = _mm256_loadu_ps(wt);                                                             \
      __m256 w1 = NK == 2 ? _mm256_loadu_ps(wt + wstride) : w0;                                    \
      _Pragma("GCC unroll 6") for (int j = 0; j < NQ; j++) {                                       \
        __m256 xv = _mm256_broadcast_ss(xs[j] + o);                                                \
        a[j] = _mm256_fmadd_ps(w0, xv, a[j]);                                                      \
        if (NK == 2) b[j] = _mm256_fmadd_ps(w1, xv, b[j]);                                         \
      }                                                                                            \
    }                                                                                              \
    if (e) {                                                                                       \
      __m256 b0 = _mm256_loadu_ps(e->bias), b1 = _mm256_loadu_ps(e->bias + LANES);                 \
      _Pragma("GCC unroll 6") for (int j = 0; j < NQ; j++) {                                       \
        a[j] = bias_relu(a[j], b0, e->relu);                                                       \
        if (NK == 2) b[j] = bias_relu(b[j], b1, e->relu);                                          \
      }                                                                                            \
    }                                                                                              \
    _Pragma("GCC unroll 6") for (int j = 0; j < NQ; j++) {                                         \
      _mm256_storeu_ps(sp[j], a[j]);                                                               \
      if (NK == 2) _mm256_storeu_ps(sp[j] + LANES, b[j]);                                          \
    }                                                                                              \
  }

FWD_TILE(1, 1)
FWD_TILE(1, 2)
FWD_TILE(1, 3)
FWD_TILE(1, 4)
FWD_TILE(1, 5)
FWD_TILE(1, 6)
FWD_TILE(2, 1)
FWD_TILE(2, 2)
FWD_TILE(2, 3)
FWD_TILE(2, 4)
FWD_TILE(2, 5)
FWD_TILE(2, 6)

typedef void (*fwd_tile_fn)(const float *, int64_t, const float *const *, const tap_ref *, int64_t,
                            float *const *, const tile_epi *);
static const fwd_tile_fn fwd_tiles[2][QB] = {
    {fwd_tile_1_1, fwd_tile_1_2, fwd_tile_1_3, fwd_tile_1_4, fwd_tile_1_5, fwd_tile_1_6},
    {fwd_tile_2_1, fwd_tile_2_2, fwd_tile_2_3, fwd_tile_2_4, fwd_tile_2_5, fwd_tile_2_6},
};

void nb_conv_tile(int nk, int nq, const float *w, int64_t wstride, const float *const *px,
                  const nb_tap_ref *tl, int64_t taps, float *const *sp, const nb_tile_epi *e) {
  fwd_tiles[nk - 1][nq - 1](w, wstride, px, tl, taps, sp, e);
}

void nb_conv_transpose(const float *src, int64_t sld, float *dst, int64_t dld, int64_t rows,
                       int64_t cols) {
  transpose(src, sld, dst, dld, rows, cols);
}

/* ---- first layers: pixels as lanes ---------------------------------------------------- */

/* With few taps (a first layer: 1 or 3 input channels, 9-27 taps) the
 * channel-lane tiles above spend as much time entering, leaving and
 * transposing as computing. Here the lanes are 8 neighbouring output
 * pixels of one row (stride 1), so every x load serves a whole vector of
 * outputs, results are stored straight into NCHW rows, and the weight
 * gradient needs no transposed dy. */
#define PV_MAX_TAPS 32
#define PV_KB       6 /* output channels per forward tile (6 x 2 registers) */
#define PV_TB       6 /* taps per weight-gradient tile (2 channels x 6 taps) */

static int pixel_lanes(const nb_dconv *d) {
  return d->sw == 1 && d->cg * d->r * d->s <= PV_MAX_TAPS && d->q >= LANES;
}

INLINE_AVX2 __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < LANES ? n : LANES)), idx);
}

/* y[k][q0 + i] (k < NK, i < 16) = sum over taps t of w[k * wst + t] * x[off[t] + q0 + i].
 * The input is a padded copy with slack at its end, so all 16 lanes load
 * real memory; TAIL: only n < 16 pixels exist and only those are stored
 * (through a buffer: AMD's masked stores are microcoded and slow). */
#define PV_FWD(NK, TAIL)                                                                           \
  AVX2 static void pv_fwd_##NK##_##TAIL(const float *x, const int64_t *off, int64_t taps,          \
                                        const float *w, int64_t wst, float *y, int64_t yst,        \
                                        int64_t n, const tile_epi *e) {                            \
    __m256 a[NK], b[NK];                                                                           \
    _Pragma("GCC unroll 6") for (int k = 0; k < NK; k++) a[k] = b[k] = _mm256_setzero_ps();        \
    for (int64_t t = 0; t < taps; t++) {                                                           \
      const float *xp = x + off[t];                                                                \
      __m256 x0 = _mm256_loadu_ps(xp), x1 = _mm256_loadu_ps(xp + LANES);                           \
      _Pragma("GCC unroll 6") for (int k = 0; k < NK; k++) {                                       \
        __m256 wv = _mm256_broadcast_ss(w + k * wst + t);                                          \
        a[k] = _mm256_fmadd_ps(wv, x0, a[k]);                                                      \
        b[k] = _mm256_fmadd_ps(wv, x1, b[k]);                                                      \
      }                                                                                            \
    }                                                                                              \
    if (e) {                                                                                       \
      _Pragma("GCC unroll 6") for (int k = 0; k < NK; k++) {                                       \
        __m256 bv = _mm256_broadcast_ss(e->bias + k);                                              \
        a[k] = bias_relu(a[k], bv, e->relu);                                                       \
        b[k] = bias_relu(b[k], bv, e->relu);                                                       \
      }                                                                                            \
    }                                                                                              \
    _Pragma("GCC unroll 6") for (int k = 0; k < NK; k++) {                                         \
      if (TAIL) {                                                                                  \
        float tmp[2 * LANES];                                                                      \
        _mm256_storeu_ps(tmp, a[k]);                                                               \
        _mm256_storeu_ps(tmp + LANES, b[k]);                                                       \
        memcpy(y + k * yst, tmp, (size_t)n * sizeof(float));                                       \
      } else {                                                                                     \
        _mm256_storeu_ps(y + k * yst, a[k]);                                                       \
        _mm256_storeu_ps(y + k * yst + LANES, b[k]);                                               \
      }                                                                                            \
    }                                                                                              \
  }

PV_FWD(1, 0)
PV_FWD(2, 0)
PV_FWD(3, 0)
PV_FWD(4, 0)
PV_FWD(5, 0)
PV_FWD(6, 0)
PV_FWD(1, 1)
PV_FWD(2, 1)
PV_FWD(3, 1)
PV_FWD(4, 1)
PV_FWD(5, 1)
PV_FWD(6, 1)

typedef void (*pv_fwd_fn)(const float *, const int64_t *, int64_t, const float *, int64_t, float *,
                          int64_t, int64_t, const tile_epi *);
static const pv_fwd_fn pv_fwds[2][PV_KB] = {
    {pv_fwd_1_0, pv_fwd_2_0, pv_fwd_3_0, pv_fwd_4_0, pv_fwd_5_0, pv_fwd_6_0},
    {pv_fwd_1_1, pv_fwd_2_1, pv_fwd_3_1, pv_fwd_4_1, pv_fwd_5_1, pv_fwd_6_1},
};

/* acc[k][j] += sum over pixels of dy[k * dst_ + q] * x[off[j] + q] for the n
 * pixels of one row (masked past n), NK <= 2 channels and NT <= PV_TB taps. */
#define PV_BWD(NK, NT)                                                                             \
  AVX2 static void pv_bwd_##NK##_##NT(const float *dy, int64_t dst_, const float *x,               \
                                      const int64_t *off, int64_t rows, int64_t dyld, int64_t xld, \
                                      int64_t n, float *acc) {                                     \
    __m256 a[NT], b[NT];                                                                           \
    _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) a[j] = b[j] = _mm256_setzero_ps();        \
    for (int64_t p = 0; p < rows; p++) {                                                           \
      const float *dr = dy + p * dyld, *xr = x + p * xld;                                          \
      for (int64_t q = 0; q < n; q += LANES) {                                                     \
        __m256i m = tail_mask(n - q);                                                              \
        int full = n - q >= LANES;                                                                 \
        __m256 d0 = full ? _mm256_loadu_ps(dr + q) : _mm256_maskload_ps(dr + q, m);                \
        __m256 d1 = NK == 2 ? (full ? _mm256_loadu_ps(dr + dst_ + q)                               \
                                    : _mm256_maskload_ps(dr + dst_ + q, m))                        \
                            : d0;                                                                  \
        _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) {                                     \
          const float *xp = xr + off[j] + q;                                                       \
          __m256 xv = full ? _mm256_loadu_ps(xp) : _mm256_maskload_ps(xp, m);                      \
          a[j] = _mm256_fmadd_ps(d0, xv, a[j]);                                                    \
          if (NK == 2) b[j] = _mm256_fmadd_ps(d1, xv, b[j]);                                       \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) {                                         \
      float *o = acc + j * LANES;                                                                  \
      _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), a[j]));                                \
      if (NK == 2) {                                                                               \
        o += PV_TB * LANES;                                                                        \
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), b[j]));                              \
      }                                                                                            \
    }                                                                                              \
  }

PV_BWD(1, 1)
PV_BWD(1, 2)
PV_BWD(1, 3)
PV_BWD(1, 4)
PV_BWD(1, 5)
PV_BWD(1, 6)
PV_BWD(2, 1)
PV_BWD(2, 2)
PV_BWD(2, 3)
PV_BWD(2, 4)
PV_BWD(2, 5)
PV_BWD(2, 6)

typedef void (*pv_bwd_fn)(const float *, int64_t, const float *, const int64_t *, int64_t, int64_t,
                          int64_t, int64_t, float *);
static const pv_bwd_fn pv_bwds[2][PV_TB] = {
    {pv_bwd_1_1, pv_bwd_1_2, pv_bwd_1_3, pv_bwd_1_4, pv_bwd_1_5, pv_bwd_1_6},
    {pv_bwd_2_1, pv_bwd_2_2, pv_bwd_2_3, pv_bwd_2_4, pv_bwd_2_5, pv_bwd_2_6},
};

/* ---- forward ---------------------------------------------------------------------- */

typedef struct {
  in_view v;
  int64_t taps, kgp, pq;
  int64_t runs, refs; /* column runs and their tap lists (col_runs()) */
  size_t off_wpk, off_run, off_ref, off_tmp, off_stage, stage_bytes, fixed;
} fwd_plan;

/* Output columns [q0, q1) whose taps read real input (not padding) for
 * kernel columns [lo, hi) only; the run's taps are refs [first, first +
 * R * cg * (hi - lo)), kernel row by kernel row. */
typedef struct {
  int64_t q0, q1, lo, hi, first;
} col_run;

static int64_t col_runs(const nb_dconv *d, col_run *runs, int64_t *refs);

static fwd_plan fwd_plan_of(const nb_dconv *d) {
  fwd_plan f;
  f.v = view_of(d);
  f.taps = d->cg * d->r * d->s;
  f.kgp = round8(d->kg);
  f.pq = d->p * d->q;
  f.runs = col_runs(d, NULL, &f.refs);
  f.off_wpk = f.v.pad_bytes;
  f.off_run = f.off_wpk + align64((size_t)(d->groups * f.kgp * f.taps) * sizeof(float));
  f.off_ref = f.off_run + align64((size_t)f.runs * sizeof(col_run));
  f.off_tmp = f.off_ref + align64((size_t)f.refs * sizeof(tap_ref));
  f.off_stage = f.off_tmp + align64((size_t)(f.taps * LANES) * sizeof(float));
  f.stage_bytes = align64((size_t)(f.pq * KP) * sizeof(float));
  f.fixed = f.off_stage;
  return f;
}

/* The pixel-lane forward always reads a padded copy: rows as view_of()
 * pads them, plus 2 * LANES floats of zeros at the end for the last tile's
 * full-width loads. First layers have few input channels, so the copy is
 * small next to the output. */
static in_view pv_view(const nb_dconv *d) {
  in_view v = view_of(d);
  if (!v.pad_bytes) {
    v.hp = d->h, v.wp = d->w, v.plane = d->h * d->w, v.ld = d->w;
  }
  v.pad_bytes = align64((size_t)(d->n * d->cin * v.plane + 2 * LANES) * sizeof(float));
  return v;
}

/* Pixel-lane forward: [padded input][weights [groups * kg][taps]][tap offsets]. */
static size_t pv_fwd_bytes(const nb_dconv *d, size_t *off_w, size_t *off_tap) {
  in_view v = pv_view(d);
  int64_t taps = d->cg * d->r * d->s;
  *off_w = v.pad_bytes;
  *off_tap = *off_w + align64((size_t)(d->cout * taps) * sizeof(float));
  return *off_tap + align64((size_t)taps * sizeof(int64_t));
}

size_t nb_conv_direct_fwd_workspace(const nb_dconv *d, int threads) {
  size_t a, b;
  if (pixel_lanes(d)) return pv_fwd_bytes(d, &a, &b);
  if (nb_conv_winograd_applies(d)) return nb_conv_winograd_workspace(d, threads);
  fwd_plan f = fwd_plan_of(d);
  return f.fixed + (size_t)threads * f.stage_bytes;
}

/* Weights as [groups * kg][taps], taps in (c, r, s) order; see pack_weights
 * for flip. */
static void plain_weights(const nb_dconv *d, const float *w, float *wp) {
  int64_t rs = d->r * d->s, taps = d->cg * rs;
  for (int64_t g = 0; g < d->groups; g++)
    for (int64_t k = 0; k < d->kg; k++) {
      float *dst = wp + (g * d->kg + k) * taps;
      for (int64_t c = 0; c < d->cg; c++)
        for (int64_t r = 0; r < d->r; r++)
          for (int64_t s = 0; s < d->s; s++)
            *dst++ = w[((g * d->cg + c) * d->kg + k) * rs + (d->r - 1 - r) * d->s + (d->s - 1 - s)];
    }
}

static nb_status fwd_pixel_lanes(const nb_dconv *d, const float *x, const float *w, int flip,
                                 float *y, void *ws, size_t ws_bytes, const nb_kernel_call *epi) {
  size_t off_w, off_tap;
  if (ws_bytes < pv_fwd_bytes(d, &off_w, &off_tap))
    return nb_error(NB_ERR_INTERNAL, "conv2d (direct): workspace of %zu bytes is too small",
                    ws_bytes);
  in_view v = pv_view(d);
  unsigned char *base = ws;
  float *xp = (float *)base;
  int64_t *off = (int64_t *)(base + off_tap);
  int64_t taps = d->cg * d->r * d->s, pq = d->p * d->q;
  int nt = nb_cpu_threads();
  pad_input(d, &v, x, xp, d->n * d->cin * v.plane > ((int64_t)1 << 16) ? nt : 1);
  memset(xp + d->n * d->cin * v.plane, 0, 2 * LANES * sizeof(float));
  if (flip) {
    plain_weights(d, w, (float *)(base + off_w));
    w = (const float *)(base + off_w);
  }
  tap_offsets(d, &v, off);
  int64_t kblocks = (d->kg + PV_KB - 1) / PV_KB, items = d->n * d->groups * kblocks;
  if (items * pq * taps < ((int64_t)1 << 15)) nt = 1;
  if (nt > items) nt = (int)items;
  nb_cpu_chan_bias cb;
  int in_regs = epi && nb_cpu_match_chan_bias(epi, &cb);
  int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(max : failed)
  for (int64_t it = 0; it < items; it++) {
    int64_t kb = it % kblocks, g = (it / kblocks) % d->groups, n = it / (kblocks * d->groups);
    int64_t k0 = kb * PV_KB, nk = d->kg - k0 < PV_KB ? d->kg - k0 : PV_KB;
    const float *wk = w + (g * d->kg + k0) * taps;
    const float *xin = xp + (n * d->cin + g * d->cg) * v.plane;
    int64_t first = (n * d->cout + g * d->kg + k0) * pq;
    float bias[PV_KB];
    tile_epi te = {bias, in_regs ? cb.relu : 0};
    if (in_regs)
      for (int64_t k = 0; k < nk; k++) bias[k] = cb.bias[(g * d->kg + k0 + k) * cb.stride];
    for (int64_t p = 0; p < d->p; p++) {
      const float *xrow = xin + p * d->sh * v.ld;
      float *yrow = y + first + p * d->q;
      for (int64_t q0 = 0; q0 < d->q; q0 += 2 * LANES) {
        int64_t m = d->q - q0;
        /* a short last tile of a row of >= 16 outputs moves back to end at
         * the row's end: it recomputes some outputs (the same sums, so the
         * same bits) but stores whole registers instead of going through a
         * buffer and a variable-length memcpy (a libc call per tile) */
        if (m < 2 * LANES && d->q >= 2 * LANES) q0 = d->q - 2 * LANES, m = 2 * LANES;
        pv_fwds[m < 2 * LANES][nk - 1](xrow + q0, off, taps, wk, taps, yrow + q0, pq,
                                       m < 2 * LANES ? m : 2 * LANES, in_regs ? &te : NULL);
      }
    }
    if (epi && !in_regs && nb_cpu_epilogue(epi, first, nk * pq)) failed = 1;
  }
  return failed ? nb_error(NB_ERR_OOM, "conv2d (direct): epilogue: out of memory") : NB_OK;
}

/* Packs weights for group g, channel k (< kg), tap t = (c, r, s) into
 * wpk[g][k / 8][t][k % 8]. flip: the weights are those of the convolution
 * whose input gradient this is: w[g * cg' + c][k][R-1-r][S-1-s] with the
 * roles of k and c swapped (d->kg = cg', d->cg = kg'). */
static void pack_weights(const nb_dconv *d, const float *w, int flip, float *wpk, int64_t kgp,
                         int64_t taps, float *tmp) {
  int64_t rs = d->r * d->s;
  if (!flip) {
    /* 8 channels at a time: an 8 x taps transpose in 8x8 blocks into tmp
     * [tap (c, r, s)][8], then rows moved to the (r, c, s) order. Packing
     * runs on every call (the weights change every training step), and
     * element by element it cost as much as the convolution at batch 1. */
    for (int64_t g = 0; g < d->groups; g++)
      for (int64_t k8 = 0; k8 < kgp / LANES; k8++) {
        int64_t rows = d->kg - k8 * LANES < LANES ? d->kg - k8 * LANES : LANES;
        if (rows < LANES) memset(tmp, 0, (size_t)(taps * LANES) * sizeof(float));
        transpose(w + (g * d->kg + k8 * LANES) * taps, taps, tmp, LANES, rows, taps);
        float *dst = wpk + (g * (kgp / LANES) + k8) * taps * LANES;
        for (int64_t r = 0; r < d->r; r++)
          for (int64_t c = 0; c < d->cg; c++)
            memcpy(dst + ((r * d->cg + c) * d->s) * LANES, tmp + (c * rs + r * d->s) * LANES,
                   (size_t)(d->s * LANES) * sizeof(float));
      }
    return;
  }
  memset(wpk, 0, (size_t)(d->groups * kgp * taps) * sizeof(float));
  for (int64_t g = 0; g < d->groups; g++)
    for (int64_t k = 0; k < d->kg; k++) {
      float *dst = wpk + (g * (kgp / LANES) + k / LANES) * taps * LANES + k % LANES;
      int64_t t = 0;
      for (int64_t r = 0; r < d->r; r++)
        for (int64_t c = 0; c < d->cg; c++)
          for (int64_t s = 0; s < d->s; s++, t++)
            dst[t * LANES] = !flip ? w[((g * d->kg + k) * d->cg + c) * rs + r * d->s + s]
                                   : w[((g * d->cg + c) * d->kg + k) * rs + (d->r - 1 - r) * d->s +
                                       (d->s - 1 - s)];
    }
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Kernel indices [lo, hi) that read real input (not padding) at output
 * index o of one axis: input size n, kernel k, stride st, padding pad,
 * dilation dil. */
static void kernel_span(int64_t o, int64_t n, int64_t k, int64_t st, int64_t pad, int64_t dil,
                        int64_t *lo, int64_t *hi) {
  int64_t top = pad - o * st; /* r * dil must be >= top */
  int64_t l = top > 0 ? (top + dil - 1) / dil : 0;
  int64_t h = floor_div(n - 1 + pad - o * st, dil) + 1;
  if (h > k) h = k;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* Kernel rows [lo, hi) that read real input for output row p. */
static void kernel_rows(const nb_dconv *d, int64_t p, int64_t *lo, int64_t *hi) {
  kernel_span(p, d->h, d->r, d->sh, d->ph, d->dh, lo, hi);
}

/* The output columns cut into runs of equal kernel-column spans (both ends
 * only fall as q grows, so a span never comes back: at most 2 S + 1 runs,
 * one when nothing pads). With runs, the forward's taps skip the kernel
 * columns that read padding, as kernel_rows() lets it skip rows: an input
 * gradient pads by kernel - 1, and on the MNIST conv2 input gradient (11
 * columns padded to 15) 15% of the taps were zeros. Returns the number of
 * runs; fills runs (if not NULL) and *refs, the taps of all runs. */
static int64_t col_runs(const nb_dconv *d, col_run *runs, int64_t *refs) {
  int64_t n = 0, total = 0, plo = -1, phi = -1;
  for (int64_t q = 0; q < d->q; q++) {
    int64_t lo, hi;
    kernel_span(q, d->w, d->s, d->sw, d->pw, d->dw, &lo, &hi);
    if (lo == plo && hi == phi) {
      if (runs) runs[n - 1].q1 = q + 1;
      continue;
    }
    if (runs) runs[n] = (col_run){q, q + 1, lo, hi, total};
    n++;
    total += d->r * d->cg * (hi - lo);
    plo = lo, phi = hi;
  }
  *refs = total;
  return n;
}

/* The taps of every run in the forward order (r, c, s) less the columns
 * outside the run's span: kernel row r's taps are contiguous, so a tile
 * whose rows see only some kernel rows (the padded border) runs just
 * those. Weights are packed [tap (r, c, s)][8]. */
static void tap_refs(const nb_dconv *d, const in_view *v, const col_run *runs, int64_t nruns,
                     tap_ref *refs) {
  for (int64_t i = 0; i < nruns; i++) {
    tap_ref *t = refs + runs[i].first;
    for (int64_t r = 0; r < d->r; r++)
      for (int64_t c = 0; c < d->cg; c++)
        for (int64_t s = runs[i].lo; s < runs[i].hi; s++)
          *t++ = (tap_ref){c * v->plane + r * d->dh * v->ld + s * d->dw,
                           ((r * d->cg + c) * d->s + s) * LANES};
  }
}

static int threads_for(size_t ws_bytes, size_t fixed, size_t per_thread) {
  int nt = nb_cpu_threads();
  if (per_thread && ws_bytes > fixed) {
    size_t cap = (ws_bytes - fixed) / per_thread;
    if ((size_t)nt > cap) nt = cap > 0 ? (int)cap : 1;
  }
  return nt;
}

nb_status nb_conv_direct_fwd(const nb_dconv *d, const float *x, const float *w, int flip, float *y,
                             void *ws, size_t ws_bytes, const nb_kernel_call *epi) {
  if (pixel_lanes(d)) return fwd_pixel_lanes(d, x, w, flip, y, ws, ws_bytes, epi);
  if (nb_conv_winograd_applies(d)) return nb_conv_winograd_fwd(d, x, w, flip, y, ws, ws_bytes, epi);
  fwd_plan f = fwd_plan_of(d);
  if (ws_bytes < f.fixed + f.stage_bytes)
    return nb_error(NB_ERR_INTERNAL, "conv2d (direct): workspace of %zu bytes is too small",
                    ws_bytes);
  int nt = threads_for(ws_bytes, f.fixed, f.stage_bytes);
  unsigned char *base = ws;
  float *xp = (float *)base, *wpk = (float *)(base + f.off_wpk);
  col_run *runs = (col_run *)(base + f.off_run);
  tap_ref *refs = (tap_ref *)(base + f.off_ref);
  if (f.v.pad_bytes)
    pad_input(d, &f.v, x, xp, d->n * d->cin * f.v.plane > ((int64_t)1 << 16) ? nt : 1);
  else
    xp = (float *)x;
  pack_weights(d, w, flip, wpk, f.kgp, f.taps, (float *)(base + f.off_tmp));
  int64_t nref;
  col_runs(d, runs, &nref);
  tap_refs(d, &f.v, runs, f.runs, refs);
  int64_t kpairs = (f.kgp / LANES + 1) / 2;
  int64_t items = d->n * d->groups * kpairs;
  /* few items (batch 1) and little work: one thread avoids the fork */
  if (items * f.pq * f.taps * KP < ((int64_t)1 << 18)) nt = 1;
  if (nt > items) nt = (int)items;
  nb_cpu_chan_bias cb;
  int in_regs = epi && nb_cpu_match_chan_bias(epi, &cb);
  int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(max : failed)
  for (int64_t it = 0; it < items; it++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *st = (float *)(base + f.off_stage + (size_t)tid * f.stage_bytes);
    int64_t kp = it % kpairs, g = (it / kpairs) % d->groups, n = it / (kpairs * d->groups);
    int64_t k8 = 2 * kp, nk = f.kgp / LANES - k8 >= 2 ? 2 : 1;
    int64_t k0 = k8 * LANES, nvalid = d->kg - k0 < nk * LANES ? d->kg - k0 : nk * LANES;
    const float *wk = wpk + (g * (f.kgp / LANES) + k8) * f.taps * LANES;
    const float *xin = xp + (n * d->cin + g * d->cg) * f.v.plane;
    /* the epilogue's bias for the tile's 16 channels (0 past the last) */
    float bias[KP] = {0};
    tile_epi te = {bias, in_regs ? cb.relu : 0};
    if (in_regs)
      for (int64_t k = 0; k < nvalid; k++) bias[k] = cb.bias[(g * d->kg + k0 + k) * cb.stride];
    /* each column run in raster order, QB pixels a tile; a tile may span
     * rows (not runs) */
    for (int64_t ri = 0; ri < f.runs; ri++) {
      const col_run *run = &runs[ri];
      int64_t row_taps = d->cg * (run->hi - run->lo), width = run->q1 - run->q0;
      int64_t p = 0, q = run->q0;
      for (int64_t i0 = 0; i0 < d->p * width; i0 += QB) {
        int64_t nq = d->p * width - i0 < QB ? d->p * width - i0 : QB, pa = p, lo, hi, lo2, hi2;
        const float *px[QB];
        float *sp[QB];
        for (int64_t j = 0; j < nq; j++) {
          px[j] = xin + p * d->sh * f.v.ld + q * d->sw;
          sp[j] = st + (p * d->q + q) * KP;
          if (++q == run->q1) q = run->q0, p++;
        }
        /* the tile's rows pa..pb need the union of their kernel rows: lo of
         * the last row, hi of the first (both only fall as p grows) */
        int64_t pb = q == run->q0 ? p - 1 : p;
        kernel_rows(d, pa, &lo, &hi);
        kernel_rows(d, pb, &lo2, &hi2);
        int64_t t0 = lo2 * row_taps, t1 = hi * row_taps;
        if (t1 < t0) t1 = t0;
        fwd_tiles[nk - 1][nq - 1](wk, f.taps * LANES, px, refs + run->first + t0, t1 - t0, sp,
                                  in_regs ? &te : NULL);
      }
    }
    int64_t first = (n * d->cout + g * d->kg + k0) * f.pq;
    transpose(st, KP, y + first, f.pq, f.pq, nvalid);
    /* the item's channels are consecutive planes: run the epilogue on them
     * while they are in cache */
    if (epi && !in_regs && nb_cpu_epilogue(epi, first, nvalid * f.pq)) failed = 1;
  }
  /* the epilogue's own message is on the worker thread that failed */
  return failed ? nb_error(NB_ERR_OOM, "conv2d (direct): epilogue: out of memory") : NB_OK;
}

/* ---- weight gradient ------------------------------------------------------------- */

/* acc[j][lane] += sum over pixels (p, q), p < P, of dy[pixel][lane] * x[off_j + p * rs + q * sw]
 * for nt <= TB taps; dy rows are kgp floats apart. The registers start from
 * zero and are added to acc at the end, so a long sum is a sum of short
 * ones (one per block of rows) instead of one chain of N * P * Q terms. */
#define BWD_TILE(NK, NT)                                                                           \
  AVX2 static void bwdw_tile_##NK##_##NT(const float *dy, int64_t kgp, const float *x,             \
                                         const int64_t *off, int64_t P, int64_t Q, int64_t rstep,  \
                                         int64_t sw, float *acc) {                                 \
    __m256 a[NT], b[NT];                                                                           \
    const float *xs[NT];                                                                           \
    _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) {                                         \
      a[j] = b[j] = _mm256_setzero_ps();                                                           \
      xs[j] = x + off[j];                                                                          \
    }                                                                                              \
    for (int64_t p = 0; p < P; p++) {                                                              \
      const float *dr = dy + p * Q * kgp;                                                          \
      int64_t xo = p * rstep;                                                                      \
      for (int64_t q = 0; q < Q; q++, xo += sw) {                                                  \
        __m256 d0 = _mm256_loadu_ps(dr + q * kgp);                                                 \
        __m256 d1 = NK == 2 ? _mm256_loadu_ps(dr + q * kgp + LANES) : d0;                          \
        _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) {                                     \
          __m256 xv = _mm256_broadcast_ss(xs[j] + xo);                                             \
          a[j] = _mm256_fmadd_ps(d0, xv, a[j]);                                                    \
          if (NK == 2) b[j] = _mm256_fmadd_ps(d1, xv, b[j]);                                       \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
    _Pragma("GCC unroll 6") for (int j = 0; j < NT; j++) {                                         \
      _mm256_storeu_ps(acc + j * KP, _mm256_add_ps(_mm256_loadu_ps(acc + j * KP), a[j]));          \
      if (NK == 2)                                                                                 \
        _mm256_storeu_ps(acc + j * KP + LANES,                                                     \
                         _mm256_add_ps(_mm256_loadu_ps(acc + j * KP + LANES), b[j]));              \
    }                                                                                              \
  }

BWD_TILE(1, 1)
BWD_TILE(1, 2)
BWD_TILE(1, 3)
BWD_TILE(1, 4)
BWD_TILE(1, 5)
BWD_TILE(1, 6)
BWD_TILE(2, 1)
BWD_TILE(2, 2)
BWD_TILE(2, 3)
BWD_TILE(2, 4)
BWD_TILE(2, 5)
BWD_TILE(2, 6)

typedef void (*bwd_tile_fn)(const float *, int64_t, const float *, const int64_t *, int64_t,
                            int64_t, int64_t, int64_t, float *);
static const bwd_tile_fn bwd_tiles[2][TB] = {
    {bwdw_tile_1_1, bwdw_tile_1_2, bwdw_tile_1_3, bwdw_tile_1_4, bwdw_tile_1_5, bwdw_tile_1_6},
    {bwdw_tile_2_1, bwdw_tile_2_2, bwdw_tile_2_3, bwdw_tile_2_4, bwdw_tile_2_5, bwdw_tile_2_6},
};

typedef struct {
  in_view v;
  int64_t taps, kgp, pq, kpairs;
  int64_t parts; /* the batch is summed in this many parts, then the parts in order */
  size_t off_dyt, off_tap, off_acc, total;
} bwdw_plan;

/* Work units without splitting the batch: (group, channel pair, TB taps).
 * With fewer than this many, the batch is split too, so that both cores get
 * work on first layers (3 input channels: 5 units). The split depends on the
 * shapes only, never on the thread count, so the sums are always the same. */
#define MIN_UNITS 8

static bwdw_plan bwdw_plan_of(const nb_dconv *d) {
  bwdw_plan b;
  b.v = view_of(d);
  b.taps = d->cg * d->r * d->s;
  b.kgp = round8(d->kg);
  b.pq = d->p * d->q;
  b.kpairs = (b.kgp / LANES + 1) / 2;
  int64_t units = d->groups * b.kpairs * ((b.taps + TB - 1) / TB);
  b.parts = units >= MIN_UNITS || units == 0 ? 1 : (MIN_UNITS + units - 1) / units;
  if (b.parts > d->n) b.parts = d->n > 0 ? d->n : 1;
  b.off_dyt = b.v.pad_bytes;
  b.off_tap =
      b.off_dyt + align64((size_t)(d->n * d->groups * b.pq * b.kgp + LANES) * sizeof(float));
  b.off_acc = b.off_tap + align64((size_t)b.taps * sizeof(int64_t));
  b.total =
      b.off_acc + align64((size_t)(d->groups * b.kpairs * b.parts * b.taps * KP) * sizeof(float));
  return b;
}

/* Pixel-lane weight gradient: [padded input][tap offsets][sums], the sums
 * being [unit][part][2 channels][PV_TB taps][8 lanes]. */
typedef struct {
  in_view v;
  int64_t taps, kpairs, tblocks, units, parts;
  size_t off_tap, off_acc, total;
} pvw_plan;

static pvw_plan pvw_plan_of(const nb_dconv *d) {
  pvw_plan b;
  b.v = view_of(d);
  b.taps = d->cg * d->r * d->s;
  b.kpairs = (d->kg + 1) / 2;
  b.tblocks = (b.taps + PV_TB - 1) / PV_TB;
  b.units = d->groups * b.kpairs * b.tblocks;
  b.parts = b.units >= MIN_UNITS || b.units == 0 ? 1 : (MIN_UNITS + b.units - 1) / b.units;
  if (b.parts > d->n) b.parts = d->n > 0 ? d->n : 1;
  b.off_tap = b.v.pad_bytes;
  b.off_acc = b.off_tap + align64((size_t)b.taps * sizeof(int64_t));
  b.total = b.off_acc + align64((size_t)(b.units * b.parts * 2 * PV_TB * LANES) * sizeof(float));
  return b;
}

/* Taps [t0, t0 + n) of tap block tb: the blocks are as even as possible
 * (27 taps: 5, 5, 6, 5, 6 rather than 6, 6, 6, 6, 3; 9 taps: 4 and 5), as a
 * tile of 2 channels x 3 taps has too few independent sums to hide the FMA
 * latency. A tap's sum does not depend on its block. */
static void pv_tap_block(const pvw_plan *b, int64_t tb, int64_t *t0, int64_t *n) {
  *t0 = b->taps * tb / b->tblocks;
  *n = b->taps * (tb + 1) / b->tblocks - *t0;
}

size_t nb_conv_direct_bwdw_workspace(const nb_dconv *d, int threads) {
  (void)threads;
  if (pixel_lanes(d)) return pvw_plan_of(d).total;
  return bwdw_plan_of(d).total;
}

static nb_status bwdw_pixel_lanes(const nb_dconv *d, const float *x, const float *dy, float *dw,
                                  void *ws, size_t ws_bytes) {
  pvw_plan b = pvw_plan_of(d);
  if (ws_bytes < b.total)
    return nb_error(NB_ERR_INTERNAL,
                    "conv2d_backward_weight (direct): workspace of %zu bytes is too small",
                    ws_bytes);
  unsigned char *base = ws;
  float *xp = (float *)base, *accs = (float *)(base + b.off_acc);
  int64_t *off = (int64_t *)(base + b.off_tap);
  int64_t pq = d->p * d->q;
  int nt = nb_cpu_threads();
  if (b.v.pad_bytes)
    pad_input(d, &b.v, x, xp, d->n * d->cin * b.v.plane > ((int64_t)1 << 16) ? nt : 1);
  else
    xp = (float *)x;
  tap_offsets(d, &b.v, off);
  int64_t items = b.units * b.parts;
  if (items * d->n / b.parts * pq * 2 * PV_TB < ((int64_t)1 << 15)) nt = 1;
  int64_t rows = SUM_PIXELS * LANES / d->q;
  if (rows < 1) rows = 1;
  if (nt > items) nt = (int)items;
  memset(accs, 0, (size_t)(items * 2 * PV_TB * LANES) * sizeof(float));
  /* Each thread takes a contiguous range of items and walks the images in
   * the outer loop: one image's input and dy stay in cache while all of
   * the thread's channel pairs and tap blocks read them, instead of the
   * whole batch streaming through once per item (CIFAR conv1: 40 items,
   * 14 KB of input and 64 KB of dy per image). Every item still sums its
   * images and row blocks in the same order, so the bits do not change. */
#pragma omp parallel num_threads(nt)
  {
    int64_t id = 0, nth = 1;
#ifdef _OPENMP
    id = omp_get_thread_num(), nth = omp_get_num_threads();
#endif
    int64_t i0 = items * id / nth, i1 = items * (id + 1) / nth;
    for (int64_t n = 0; n < d->n; n++)
      for (int64_t it = i0; it < i1; it++) {
        int64_t part = it % b.parts, u = it / b.parts;
        if (n < d->n * part / b.parts || n >= d->n * (part + 1) / b.parts) continue;
        int64_t tb = u % b.tblocks, kp = (u / b.tblocks) % b.kpairs, g = u / (b.tblocks * b.kpairs);
        int64_t k0 = 2 * kp, nk = d->kg - k0 < 2 ? d->kg - k0 : 2, t0, ntap;
        pv_tap_block(&b, tb, &t0, &ntap);
        float *acc = accs + it * 2 * PV_TB * LANES;
        /* one block of rows per call: the registers hold that block's sums
         * (SUM_PIXELS / 8 terms per lane), which are then added to acc */
        for (int64_t p0 = 0; p0 < d->p; p0 += rows) {
          int64_t np = d->p - p0 < rows ? d->p - p0 : rows;
          pv_bwds[nk - 1][ntap - 1](dy + (n * d->cout + g * d->kg + k0) * pq + p0 * d->q, pq,
                                    xp + (n * d->cin + g * d->cg) * b.v.plane + p0 * d->sh * b.v.ld,
                                    off + t0, np, d->q, d->sh * b.v.ld, d->q, acc);
        }
      }
  }
  /* dw = sum over parts, then over lanes, in order */
  for (int64_t u = 0; u < b.units; u++) {
    int64_t tb = u % b.tblocks, kp = (u / b.tblocks) % b.kpairs, g = u / (b.tblocks * b.kpairs);
    int64_t k0 = 2 * kp, nk = d->kg - k0 < 2 ? d->kg - k0 : 2, t0, ntap;
    pv_tap_block(&b, tb, &t0, &ntap);
    for (int64_t k = 0; k < nk; k++)
      for (int64_t j = 0; j < ntap; j++) {
        float v = 0.0f;
        for (int64_t part = 0; part < b.parts; part++) {
          const float *a = accs + ((u * b.parts + part) * 2 * PV_TB + k * PV_TB + j) * LANES;
          float lanes = 0.0f;
          for (int l = 0; l < LANES; l++) lanes += a[l];
          v += lanes;
        }
        dw[(g * d->kg + k0 + k) * b.taps + t0 + j] = v;
      }
  }
  return NB_OK;
}

/* dw[g * kg + k][tap] = sum over n, p, q of dy[n][g * kg + k][p][q] * x at the tap. */
nb_status nb_conv_direct_bwd_weight(const nb_dconv *d, const float *x, const float *dy, float *dw,
                                    void *ws, size_t ws_bytes) {
  if (pixel_lanes(d)) return bwdw_pixel_lanes(d, x, dy, dw, ws, ws_bytes);
  bwdw_plan b = bwdw_plan_of(d);
  if (ws_bytes < b.total)
    return nb_error(NB_ERR_INTERNAL,
                    "conv2d_backward_weight (direct): workspace of %zu bytes is too small",
                    ws_bytes);
  int nt = nb_cpu_threads();
  unsigned char *base = ws;
  float *xp = (float *)base, *dyt = (float *)(base + b.off_dyt);
  float *accs = (float *)(base + b.off_acc);
  int64_t *off = (int64_t *)(base + b.off_tap);
  int big = d->n * (d->cin * b.v.plane + d->cout * b.pq) > ((int64_t)1 << 16);
  if (b.v.pad_bytes)
    pad_input(d, &b.v, x, xp, big ? nt : 1);
  else
    xp = (float *)x;
  tap_offsets(d, &b.v, off);
  /* dy [n][g * kg + k][pixel] -> dyt [n][g][pixel][kgp], zero past kg */
#pragma omp parallel for schedule(static) num_threads(big ? nt : 1)
  for (int64_t ng = 0; ng < d->n * d->groups; ng++) {
    float *dst = dyt + ng * b.pq * b.kgp;
    transpose(dy + ng * d->kg * b.pq, b.pq, dst, b.kgp, d->kg, b.pq);
    if (b.kgp > d->kg)
      for (int64_t i = 0; i < b.pq; i++)
        memset(dst + i * b.kgp + d->kg, 0, (size_t)(b.kgp - d->kg) * sizeof(float));
  }
  /* Split the taps into chunks so that every thread has work; a thread
   * keeps one image's dy in cache while it walks its chunk's taps. Chunks
   * only decide who computes a sum, not its order. */
  int64_t per = d->groups * b.kpairs * b.parts, chunks = 1;
  while (per * chunks < 2 * nt && chunks * TB < b.taps) chunks++;
  int64_t chunk_taps = (b.taps + chunks - 1) / chunks;
  chunk_taps = (chunk_taps + TB - 1) / TB * TB;
  chunks = (b.taps + chunk_taps - 1) / chunk_taps;
  int64_t items = per * chunks;
  if (items * b.pq * d->n * chunk_taps * KP < ((int64_t)1 << 18)) nt = 1;
  if (nt > items) nt = (int)items;
  /* rows per partial sum: about SUM_PIXELS pixels */
  int64_t rows = d->q > 0 ? SUM_PIXELS / d->q : 1;
  if (rows < 1) rows = 1;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t it = 0; it < items; it++) {
    int64_t ch = it % chunks, u = it / chunks; /* u = (g * kpairs + kp) * parts + part */
    int64_t part = u % b.parts, kp = (u / b.parts) % b.kpairs, g = u / (b.parts * b.kpairs);
    int64_t t0 = ch * chunk_taps, t1 = t0 + chunk_taps < b.taps ? t0 + chunk_taps : b.taps;
    int64_t n0 = d->n * part / b.parts, n1 = d->n * (part + 1) / b.parts;
    int64_t k8 = 2 * kp, nk = b.kgp / LANES - k8 >= 2 ? 2 : 1;
    float *acc = accs + u * b.taps * KP;
    memset(acc + t0 * KP, 0, (size_t)((t1 - t0) * KP) * sizeof(float));
    for (int64_t n = n0; n < n1; n++) {
      const float *dyn = dyt + ((n * d->groups + g) * b.pq) * b.kgp + k8 * LANES;
      const float *xin = xp + (n * d->cin + g * d->cg) * b.v.plane;
      for (int64_t p0 = 0; p0 < d->p; p0 += rows) {
        int64_t np = d->p - p0 < rows ? d->p - p0 : rows;
        for (int64_t t = t0; t < t1; t += TB) {
          int64_t ntap = t1 - t < TB ? t1 - t : TB;
          bwd_tiles[nk - 1][ntap - 1](dyn + p0 * d->q * b.kgp, b.kgp, xin + p0 * d->sh * b.v.ld,
                                      off + t, np, d->q, d->sh * b.v.ld, d->sw, acc + t * KP);
        }
      }
    }
  }
  /* dw [g * kg + k][tap] = sum of the parts, in part order */
  for (int64_t g = 0; g < d->groups; g++)
    for (int64_t kp = 0; kp < b.kpairs; kp++) {
      const float *acc = accs + (g * b.kpairs + kp) * b.parts * b.taps * KP;
      int64_t k0 = kp * KP, nvalid = d->kg - k0 < KP ? d->kg - k0 : KP;
      for (int64_t k = 0; k < nvalid; k++)
        for (int64_t t = 0; t < b.taps; t++) {
          float v = acc[t * KP + k];
          for (int64_t part = 1; part < b.parts; part++) v += acc[(part * b.taps + t) * KP + k];
          dw[(g * d->kg + k0 + k) * b.taps + t] = v;
        }
    }
  return NB_OK;
}

#else /* !NB_CPU_DIRECT_CONV: other compilers and CPUs use im2col + GEMM */

int nb_conv_direct_available(void) { return 0; }
size_t nb_conv_direct_fwd_workspace(const nb_dconv *d, int threads) {
  (void)d, (void)threads;
  return 0;
}
size_t nb_conv_direct_bwdw_workspace(const nb_dconv *d, int threads) {
  (void)d, (void)threads;
  return 0;
}
nb_status nb_conv_direct_fwd(const nb_dconv *d, const float *in, const float *w, int flip,
                             float *out, void *ws, size_t ws_bytes, const nb_kernel_call *epi) {
  (void)d, (void)in, (void)w, (void)flip, (void)out, (void)ws, (void)ws_bytes, (void)epi;
  return nb_error(NB_ERR_INTERNAL, "conv2d: direct kernels are not built for this target");
}
nb_status nb_conv_direct_bwd_weight(const nb_dconv *d, const float *in, const float *dy, float *dw,
                                    void *ws, size_t ws_bytes) {
  (void)d, (void)in, (void)dy, (void)dw, (void)ws, (void)ws_bytes;
  return nb_error(NB_ERR_INTERNAL, "conv2d: direct kernels are not built for this target");
}

#endif /* NB_CPU_DIRECT_CONV */
