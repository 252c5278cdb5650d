/* The register tile of the direct convolution (cpu_conv_direct.c), shared
 * with the Winograd convolution (cpu_conv_winograd.c), whose products over
 * input channels are the same 16-channel x 6-column tiles. AVX2 + FMA only:
 * include where NB_CPU_DIRECT_CONV is set. */
#ifndef NB_CPU_CONV_TILE_H
#define NB_CPU_CONV_TILE_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define NB_TILE_AVX2        __attribute__((target("avx2,fma")))
#define NB_TILE_INLINE_AVX2 static inline __attribute__((always_inline, target("avx2,fma")))

#define NB_TILE_QB    6  /* columns (output pixels) per tile */
#define NB_TILE_LANES 8  /* floats per AVX register */
#define NB_TILE_KP    16 /* channels per tile (two registers) */

/* A tap of the tile: the offset of its input element from a column's first
 * one, and of its 8 weights in the packed block (floats). */
typedef struct {
  int64_t x, w;
} nb_tap_ref;

/* The conv > add + relu epilogue (cpu_epilogue_match.c) applied to the
 * registers before they are stored. bias: 16 floats, one per channel of
 * the tile. */
typedef struct {
  const float *bias;
  int relu;
} nb_tile_epi;

/* sp[j][lane] = sum over taps t < taps of w[tl[t].w + lane] * px[j][tl[t].x]
 * (then the epilogue e, if not NULL) for nk (1 or 2) registers of 8
 * channels, the second wstride floats after the first, and nq <= 6
 * columns. */
void nb_conv_tile(int nk, int nq, const float *w, int64_t wstride, const float *const *px,
                  const nb_tap_ref *tl, int64_t taps, float *const *sp, const nb_tile_epi *e);

/* dst[j * dld + i] = src[i * sld + j] for i < rows, j < cols. */
void nb_conv_transpose(const float *src, int64_t sld, float *dst, int64_t dld, int64_t rows,
                       int64_t cols);

/* The bias add, then ReLU as the elementwise engine computes it (x > 0 or
 * NaN keeps x, else +0), so the bits are the engine's. */
NB_TILE_INLINE_AVX2 __m256 nb_tile_bias_relu(__m256 v, __m256 b, int relu) {
  v = _mm256_add_ps(v, b);
  if (!relu) return v;
  __m256 keep = _mm256_or_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ),
                             _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_and_ps(v, keep);
}

#endif
