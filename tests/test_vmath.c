/* The CPU's vectorised exp, tanh, sigmoid and tanh-form GELU (value and
 * gradient), src/backend/cpu/cpu_vmath.h, through the elementwise ops
 * against double precision over dense sweeps: every 1024th float up to a
 * bound (about a million inputs a sign) plus every float of a window around
 * each point where an approximation switches branch. Errors are in ulps of
 * the exact value (exp, tanh, sigmoid) or in ulps plus a floor where the
 * value crosses zero (GELU's gradient). Also the special values: +-0, +-inf
 * and NaN, and a fused group (the kernels run inside one). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef enum { F_EXP, F_TANH, F_SIGMOID, F_GELU, F_GELU_GRAD } fn_kind;

static nb_tensor *build(nb_graph *g, nb_tensor **x, void *ctx) {
  switch (*(const fn_kind *)ctx) {
  case F_EXP: return nb_exp(g, x[0]);
  case F_TANH: return nb_tanh(g, x[0]);
  case F_SIGMOID: return nb_sigmoid(g, x[0]);
  case F_GELU: return nb_gelu(g, x[0], 1);
  case F_GELU_GRAD: {
    /* d sum(gelu(x)) / dx = gelu'(x): the gelu_backward kernel */
    nb_tensor *loss = nb_sum(g, nb_gelu(g, x[0], 1), 0, NULL, 0);
    if (nb_graph_backward(g, loss)) return NULL;
    return nb_graph_grad(g, x[0]);
  }
  }
  return NULL;
}

/* The GELU's constants as the kernels hold them (rounded to f32), so that
 * the reference differs from them only by the kernels' arithmetic. */
static const double GK = (double)0.7978845608028654f, GC = (double)0.044715f;

static double gelu_u(double x) { return GK * (x + GC * x * x * x); }

static double exact(fn_kind f, double x) {
  switch (f) {
  case F_EXP: return exp(x);
  case F_TANH: return tanh(x);
  case F_SIGMOID: return 1.0 / (1.0 + exp(-x));
  case F_GELU: return x / (1.0 + exp(-2.0 * gelu_u(x)));
  case F_GELU_GRAD: {
    double s = 1.0 / (1.0 + exp(-2.0 * gelu_u(x)));
    return s + 2.0 * x * s * (1.0 - s) * GK * (1.0 + 3.0 * GC * x * x);
  }
  }
  return NAN;
}

/* The spacing of floats at |r| (the smallest subnormal below FLT_MIN). */
static double ulp_at(double r) {
  double a = fabs(r);
  if (a < 1.1754943508222875e-38) return ldexp(1.0, -149);
  int e;
  frexp(a, &e);
  return ldexp(1.0, e - 24);
}

static float from_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static uint32_t to_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

typedef struct {
  float *x;
  int64_t n, cap;
} sweep;

static void push(sweep *s, float v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 1 << 16;
    s->x = realloc(s->x, (size_t)s->cap * sizeof *s->x);
    assert_non_null(s->x);
  }
  s->x[s->n++] = v;
}

/* +-(every 1024th float in [0, hi]) and every float within 2^15 steps of
 * each of the +-switch points. */
static sweep make_sweep(float hi, const float *switches, int n_switch) {
  sweep s = {0};
  for (uint32_t b = 0; b <= to_bits(hi); b += 1024) {
    push(&s, from_bits(b));
    push(&s, -from_bits(b));
  }
  for (int i = 0; i < n_switch; i++)
    for (uint32_t b = to_bits(switches[i]) - 32768; b <= to_bits(switches[i]) + 32768; b++) {
      push(&s, from_bits(b));
      push(&s, -from_bits(b));
    }
  return s;
}

/* Runs f over the sweep and returns the largest error in ulps of the exact
 * value, where the error may also use `floor` absolute units for free;
 * *worst gets its input. */
static double max_error(fn_kind f, const sweep *s, double floor, float *worst) {
  tu_input in = {.ndim = 1, .shape = {s->n}, .data = s->x, .requires_grad = f == F_GELU_GRAD};
  float *y;
  int64_t n;
  tu_forward(build, &f, 1, &in, &y, &n, NULL, NULL);
  assert_int_equal(n, s->n);
  double max = 0;
  for (int64_t i = 0; i < n; i++) {
    double r = exact(f, s->x[i]);
    if (fabs(r) > 3.4028234663852886e38) { /* past FLT_MAX: must be inf */
      if (!isinf(y[i])) fail_msg("f(%.9g) = %g, want inf", (double)s->x[i], (double)y[i]);
      continue;
    }
    double err = fabs((double)y[i] - r), free_err = floor;
    /* GELU for x < 0 is about x e^2u: the rounding of u = k (x + c x^3)
     * in f32 (a few ulps) moves it by |2u| times as many, inherent to f32 */
    if (f == F_GELU && s->x[i] < 0) free_err += fabs(r) * fabs(2.0 * gelu_u(s->x[i])) * 0x1p-22;
    err = err > free_err ? err - free_err : 0.0;
    double u = err / ulp_at(r);
    if (!(u <= max)) {
      max = u;
      *worst = s->x[i];
    }
  }
  free(y);
  return max;
}

static void check(const char *name, fn_kind f, float hi, const float *switches, int n_switch,
                  double floor, double max_ulp) {
  sweep s = make_sweep(hi, switches, n_switch);
  float worst = 0;
  double e = max_error(f, &s, floor, &worst);
  printf("%s: %lld inputs, max error %.3f ulp at %.9g\n", name, (long long)s.n, e, (double)worst);
  if (!(e <= max_ulp))
    fail_msg("%s: %.3f ulp at x = %.9g (bound %.1f)", name, e, (double)worst, max_ulp);
  free(s.x);
}

static void test_exp(void **state) {
  (void)state;
  /* the range reduction switches n at every multiple of ln2 / 2 */
  const float sw[] = {0.34657359f, -87.3365479f, -103.9f, 88.72f};
  check("exp", F_EXP, 104.0f, sw, 4, 0.0, 2.0);
}

static void test_tanh(void **state) {
  (void)state;
  const float sw[] = {0.625f, 9.0f};
  check("tanh", F_TANH, 12.0f, sw, 2, 0.0, 2.0);
}

/* sigmoid(x) for x below -87.3 is subnormal and comes out as 0 (e^-x is
 * inf): absolute errors below 1e-37 are free for it and for GELU (x s). */
static void test_sigmoid(void **state) {
  (void)state;
  check("sigmoid", F_SIGMOID, 110.0f, NULL, 0, 1e-37, 3.0);
}

static void test_gelu(void **state) {
  (void)state;
  check("gelu (tanh form)", F_GELU, 40.0f, NULL, 0, 1e-37, 4.0);
  /* the gradient crosses zero near x = -0.7518: ulps of its value mean
   * nothing there, so 1e-7 absolute is free */
  check("gelu gradient (tanh form)", F_GELU_GRAD, 40.0f, NULL, 0, 1e-7, 4.0);
}

static void test_special_values(void **state) {
  (void)state;
  const float x[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 100.0f, -200.0f};
  enum { N = sizeof x / sizeof x[0] };
  tu_input in = {.ndim = 1, .shape = {N}, .data = x};
  const struct {
    fn_kind f;
    float want[N];
  } cases[] = {
      {F_EXP, {1, 1, INFINITY, 0, NAN, 1, 1, INFINITY, 0}},
      {F_TANH, {0, -0.0f, 1, -1, NAN, 1e-30f, -1e-30f, 1, -1}},
      {F_SIGMOID, {0.5f, 0.5f, 1, 0, NAN, 0.5f, 0.5f, 1, 0}},
      {F_GELU, {0, -0.0f, INFINITY, NAN, NAN, 1e-30f * 0.5f, -1e-30f * 0.5f, 100, -0.0f}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    float *y;
    int64_t n;
    fn_kind f = cases[c].f;
    tu_input one = in;
    tu_forward(build, &f, 1, &one, &y, &n, NULL, NULL);
    for (int i = 0; i < N; i++) {
      float w = cases[c].want[i];
      int same = isnan(w) ? isnan(y[i]) : y[i] == w && signbit(y[i]) == signbit(w);
      if (!same)
        fail_msg("case %zu: f(%g) = %g, want %g", c, (double)x[i], (double)y[i], (double)w);
    }
    free(y);
  }
}

/* 2 tanh(x) * sigmoid(x) - exp(-x^2) as one fused group, against double. */
static nb_tensor *build_fused(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_tensor *a = nb_mul(g, nb_tanh(g, x[0]), nb_sigmoid(g, x[0]));
  nb_tensor *b = nb_exp(g, nb_neg(g, nb_square(g, x[0])));
  return nb_sub(g, nb_mul(g, a, nb_scalar(g, 2.0f)), b);
}

static void test_fused_group(void **state) {
  (void)state;
  tu_input in = {.ndim = 2, .shape = {37, 53}, .lo = -6.0f, .hi = 6.0f, .seed = 3};
  float *x = tu_rand(37 * 53, -6.0f, 6.0f, 3), *y;
  in.data = x;
  int64_t n;
  tu_forward(build_fused, NULL, 1, &in, &y, &n, NULL, NULL);
  float *want = malloc((size_t)n * sizeof *want);
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    want[i] = (float)(2.0 * tanh(v) / (1.0 + exp(-v)) - exp(-v * v));
  }
  tu_assert_close("fused tanh, sigmoid, exp", y, want, (size_t)n, 1e-6, 1e-6);
  free(want);
  free(y);
  free(x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exp),
      cmocka_unit_test(test_tanh),
      cmocka_unit_test(test_sigmoid),
      cmocka_unit_test(test_gelu),
      cmocka_unit_test(test_special_values),
      cmocka_unit_test(test_fused_group),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
