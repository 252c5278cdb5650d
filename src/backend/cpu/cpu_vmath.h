/* Branch-free exp, tanh, sigmoid and GELU for the CPU kernels' hot loops.
 *
 * libm's expf and tanhf are scalar calls, so a loop over them never
 * vectorises: the char GPT spent more time in GELU's tanhf than in its MLP
 * matmuls. These are written with selects instead of branches, so a loop
 * calling them inside an NB_CPU_CLONES function compiles to 8-wide AVX2 (and
 * 4-wide SSE2 in the baseline clone), and contain no FMA, so both clones give
 * the same bits.
 *
 * Accuracy (tests/test_vmath.c, against double precision over dense
 * sweeps; measured maximum in brackets): nb_vexpf within 2 ulp (0.95) with
 * gradual underflow to subnormals and 0 below -104; nb_vtanhf within 2 ulp
 * (1.31); nb_vsigmoidf within 3 ulp (2.42), its subnormal results flushed
 * to 0; the tanh-form GELU within 4 ulp (2.35) beyond what the f32 rounding
 * of its argument u costs, its gradient within 4 ulp (1.04) plus 1e-7
 * (it crosses 0). NaN in, NaN out; +-inf give exp's inf / 0, tanh's +-1. */
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

/* 2^n for an integer n in [-126, 127]: the exponent field built directly
 * (unsigned, so that any n is defined behaviour). */
static inline float nb_vpow2i(int32_t n) {
  uint32_t bits = ((uint32_t)n + 127u) << 23;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-6 polynomial,
 * then scaled by 2^n in two halves so that n down to -150 (subnormal
 * results) and up to 128 (overflow to inf) need no special case. */
static inline float nb_vexpf(float x) {
  /* clamped to where the result is 0 or inf anyway; NaN fails both tests
   * and flows through the arithmetic as NaN. (With ?: GCC sees that a
   * clamped input makes the result a constant and branches to it.) */
  float xc = nb_vsel(x < -104.0f, -104.0f, x);
  xc = nb_vsel(xc > 89.0f, 89.0f, xc);
  /* n = round(x / ln2) by the 1.5 * 2^23 trick: t + 1.5 * 2^23 holds n in
   * its low mantissa bits (exact for |n| < 2^22), read as an integer, so no
   * float -> int conversion is undefined for NaN */
  const float shifter = 12582912.0f;
  float t = xc * 1.44269504088896341f + shifter;
  float fn = t - shifter;
  uint32_t tb;
  memcpy(&tb, &t, sizeof tb);
  int32_t n = (int32_t)(tb - 0x4B400000u), n1 = n / 2, n2 = n - n1;
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
  return y * nb_vpow2i(n1) * nb_vpow2i(n2);
}

/* tanh: an odd polynomial (minimax for the relative error) below 0.625,
 * where 1 - 2 / (e^2x + 1) would lose bits to cancellation, that formula
 * above, with |x| clamped to 10 (past 9.01 tanh rounds to 1 in float), and
 * x itself below 2^-12 (where tanh rounds to x), which keeps -0. */
static inline float nb_vtanhf(float x) {
  float ax = nb_vsel(x < 0.0f, -x, x);
  float s = x * x;
  float p = 2.2928244434297085e-3f;
  p = p * s + -8.344023488461971e-3f;
  p = p * s + 2.1768944337964058e-2f;
  p = p * s + -5.395926162600517e-2f;
  p = p * s + 1.3333304226398468e-1f;
  p = p * s + -3.333333432674408e-1f;
  float small = nb_vsel(ax < 0x1p-12f, x, x + x * s * p);
  float a = nb_vsel(ax > 10.0f, 10.0f, ax); /* keeps NaN */
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
