/* An 8x8 float transpose in AVX2 registers, shared by the direct and the
 * Winograd convolutions (packing) and the elementwise engine (transposed
 * gathers). x86-64 GCC only: include it where the caller's AVX2 code is. */
#ifndef NB_CPU_TRANSPOSE_H
#define NB_CPU_TRANSPOSE_H

#include <immintrin.h>
#include <stdint.h>

/* dst[i * dld + j] = src[j * sld + i] for i, j < 8. */
static inline __attribute__((always_inline, target("avx2"))) void
nb_cpu_t8x8(const float *src, int64_t sld, float *dst, int64_t dld) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * sld), r1 = _mm256_loadu_ps(src + 1 * sld);
  __m256 r2 = _mm256_loadu_ps(src + 2 * sld), r3 = _mm256_loadu_ps(src + 3 * sld);
  __m256 r4 = _mm256_loadu_ps(src + 4 * sld), r5 = _mm256_loadu_ps(src + 5 * sld);
  __m256 r6 = _mm256_loadu_ps(src + 6 * sld), r7 = _mm256_loadu_ps(src + 7 * sld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * dld, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * dld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * dld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * dld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * dld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * dld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * dld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * dld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

#endif
