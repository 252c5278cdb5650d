/* Branch-free exp, tanh, sigmoid and GELU for the CPU kernels' hot loops.
 *
 * libm's expf and tanhf are scalar calls, so a loop over them never
 * vectorises: the char GPT spent more time in GELU's tanhf than in its MLP
 * matmuls. These are written with selects instead of branches, so a loop
 * calling them inside an NB_CPU_CLONES function compiles to 8-wide AVX2 (and
 * 4-wide SSE2 in the baseline clone), and contain no FMA, so both clones give
 * the same bits.
 *
 * Accuracy (tests/test_vmath.c sweeps every float of a range against double
 * precision): nb_vexpf within 2 ulp over its whole range, with gradual
 * underflow to subnormals and 0 below -104; nb_vtanhf within 2 ulp; NaN in,
 * NaN out, and +-inf give exp's inf/0 and tanh's +-1. */
#ifndef NB_CPU_VMATH_H
#define NB_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

/* c ? a : b with both computed. GCC sinks an FP operation that only one arm
 * of a ?: uses into a branch, and with -ftrapping-math (the default) it may
 * not execute it speculatively again, so the loop stops vectorising; a
 * select of bits keeps both arms live (and compiles to a blend). */
static inline float nb_vsel(int c, float a, float b) {
  uint32_t ua, ub, m = 0u - (uint32_t)(c != 0);
  memcpy(&ua, &a, sizeof ua);
  memcpy(&ub, &b, sizeof ub);
  uint32_t r = (ua & m) | (ub & ~m);
  float f;
  memcpy(&f, &r, sizeof f);
  return f;
}

/* 2^n for an integer n in [-126, 127]: the exponent field built directly. */
static inline float nb_vpow2i(int32_t n) {
  uint32_t bits = (uint32_t)(n + 127) << 23;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-6 polynomial,
 * then scaled by 2^n in two halves so that n down to -150 (subnormal
 * results) and up to 128 (overflow to inf) need no special case. */
static inline float nb_vexpf(float x) {
  /* clamped to where the result is 0 or inf anyway. Written as a > b ? a : b
   * these are single max/min instructions, which send NaN to the bound; NaN
   * is put back at the end. */
  int nan = x != x;
  float xc = x > -104.0f ? x : -104.0f;
  xc = xc < 89.0f ? xc : 89.0f;
  /* round to nearest by the 1.5 * 2^23 trick (exact for |t| < 2^22) */
  const float shifter = 12582912.0f;
  float fn = (xc * 1.44269504088896341f + shifter) - shifter;
  /* ln2 in two parts: fn * 0.693359375 is exact for |fn| < 2^15 */
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  /* Cephes' polynomial, evaluated in Estrin's order: a shorter chain of
   * dependent operations than Horner's, so more elements are in flight */
  float r2 = r * r;
  float a01 = 5.0000001201e-1f + 1.6666665459e-1f * r;
  float a23 = 4.1665795894e-2f + 8.3334519073e-3f * r;
  float a45 = 1.3981999507e-3f + 1.9875691500e-4f * r;
  float p = a01 + r2 * (a23 + r2 * a45);
  float y = p * r2 + r + 1.0f;
  int32_t n = (int32_t)fn, n1 = n / 2, n2 = n - n1;
  y = y * nb_vpow2i(n1) * nb_vpow2i(n2);
  return nb_vsel(nan, x, y);
}

/* tanh: an odd polynomial (minimax for the relative error) below 0.625,
 * where 1 - 2 / (e^2x + 1) would lose bits to cancellation, that formula
 * above, and +-1 past 9 (where tanh rounds to 1 in float). */
static inline float nb_vtanhf(float x) {
  float ax = nb_vsel(x < 0.0f, -x, x);
  float s = x * x;
  float p = 2.2928244434297085e-3f;
  p = p * s + -8.344023488461971e-3f;
  p = p * s + 2.1768944337964058e-2f;
  p = p * s + -5.395926162600517e-2f;
  p = p * s + 1.3333304226398468e-1f;
  p = p * s + -3.333333432674408e-1f;
  float small = x + x * s * p;
  float a = nb_vsel(ax > 9.0f, 9.0f, ax); /* keeps NaN */
  float big = 1.0f - 2.0f / (nb_vexpf(2.0f * a) + 1.0f);
  big = nb_vsel(x < 0.0f, -big, big);
  return nb_vsel(ax < 0.625f, small, big);
}

/* 1 / (1 + e^-x); e^-x overflowing to inf gives 0. */
static inline float nb_vsigmoidf(float x) { return 1.0f / (1.0f + nb_vexpf(-x)); }

/* GELU's tanh form. 0.5 (1 + tanh(u)) = sigmoid(2u), which needs one exp and
 * does not cancel for negative x as 1 + tanh(u) does. */
#define NB_GELU_K 0.7978845608028654f
#define NB_GELU_C 0.044715f

static inline float nb_vgelu_tanhf(float x) {
  float u = NB_GELU_K * (x + NB_GELU_C * x * x * x);
  return x * nb_vsigmoidf(2.0f * u);
}

/* d/dx of the tanh form: with s = sigmoid(2u), 0.5 (1 + tanh u) = s and
 * 1 - tanh(u)^2 = 4 s (1 - s), so the derivative is s + 2 x s (1 - s) u'(x).
 * For u >= 0, 1 - s is taken as e s (e = e^-2u <= 1) rather than by a
 * subtraction that cancels as s nears 1. */
static inline float nb_vgelu_tanh_gradf(float x) {
  float u = NB_GELU_K * (x + NB_GELU_C * x * x * x);
  float e = nb_vexpf(-2.0f * u);
  float s = 1.0f / (1.0f + e);
  float one_minus_s = nb_vsel(u >= 0.0f, e * s, 1.0f - s);
  float du = NB_GELU_K * (1.0f + 3.0f * NB_GELU_C * x * x);
  return s + 2.0f * x * s * one_minus_s * du;
}

#endif
