/* The erf op: values and autograd gradients against PyTorch
 * (tests/ref/erf_ref.py -> erf.txt), finite differences, erf inside a fused
 * elementwise group against C's double erf, and its argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static nb_tensor *build_erf(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  return nb_erf(g, x[0]);
}

/* erf(2x) + 1: erf in the middle of a fused group */
static nb_tensor *build_fused(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  return nb_add(g, nb_erf(g, nb_mul(g, x[0], nb_scalar(g, 2.0f))), nb_scalar(g, 1.0f));
}

static void test_values_vs_torch(void **state) {
  (void)state;
  tu_ref *r = tu_ref_load("erf.txt");
  int nd;
  int64_t shape[NB_MAX_DIMS], n, ny;
  const float *x = tu_ref_get(r, "erf", "x0", &nd, shape, &n);
  const float *want = tu_ref_get(r, "erf", "y", NULL, NULL, NULL);
  tu_input in = {.ndim = nd, .data = x};
  memcpy(in.shape, shape, sizeof shape);
  float *y;
  tu_forward(build_erf, NULL, 1, &in, &y, &ny, NULL, NULL);
  assert_int_equal(ny, n);
  /* erff is within an ulp or two of the exactly rounded value */
  tu_assert_close("erf", y, want, (size_t)n, 1e-7, 2e-7);
  free(y);
  tu_ref_free(r);
}

static void test_grad_vs_torch(void **state) {
  (void)state;
  tu_ref *r = tu_ref_load("erf.txt");
  int nd;
  int64_t shape[NB_MAX_DIMS], n;
  const float *x = tu_ref_get(r, "erf", "x0", &nd, shape, &n);
  const float *R = tu_ref_get(r, "erf", "R", NULL, NULL, NULL);
  const float *want = tu_ref_get(r, "erf", "g0", NULL, NULL, NULL);
  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, nd, shape);
  nb_tensor_set_requires_grad(xi, 1);
  nb_tensor *loss =
      nb_sum(g, nb_mul(g, nb_erf(g, xi), nb_constant(g, NB_F32, nd, shape, R)), 0, NULL, 0);
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *gx = nb_graph_grad(g, xi);
  assert_non_null(gx);
  nb_tensor_set_output(gx);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_plan_set_input(p, xi, x, (size_t)n * sizeof(float)));
  TU_OK(nb_plan_run(p));
  float *got = malloc((size_t)n * sizeof *got);
  TU_OK(nb_plan_get(p, gx, got, (size_t)n * sizeof *got));
  /* 2/sqrt(pi) exp(-x^2) R through expf: a few ulps */
  tu_assert_close("d erf", got, want, (size_t)n, 1e-7, 1e-6);
  free(got);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  tu_ref_free(r);
}

static void test_finite_differences(void **state) {
  (void)state;
  tu_input in = {
      .ndim = 2, .shape = {3, 7}, .lo = -2.5f, .hi = 2.5f, .seed = 5, .requires_grad = 1};
  tu_gradcheck("erf", build_erf, NULL, 1, &in, 1e-3, 2e-3, 1e-2);
  tu_gradcheck("erf(2x)+1", build_fused, NULL, 1, &in, 1e-3, 2e-3, 1e-2);
}

static void test_fused_vs_c(void **state) {
  (void)state;
  tu_input in = {.ndim = 3, .shape = {2, 5, 33}, .lo = -2.0f, .hi = 2.0f, .seed = 9};
  float *y;
  int64_t n;
  tu_forward(build_fused, NULL, 1, &in, &y, &n, NULL, NULL);
  float *x = tu_rand((size_t)n, -2.0f, 2.0f, 9), *want = malloc((size_t)n * sizeof *want);
  for (int64_t i = 0; i < n; i++) want[i] = (float)(erf(2.0 * (double)x[i]) + 1.0);
  tu_assert_close("erf(2x)+1", y, want, (size_t)n, 1e-6, 1e-6);
  free(x);
  free(want);
  free(y);
}

static void test_errors(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  assert_null(nb_erf(g, NULL));
  assert_int_equal(nb_graph_status(g), NB_ERR_INVALID_ARG);
  nb_graph_free(g);
  g = nb_graph_new();
  int64_t s[1] = {4};
  assert_null(nb_erf(g, nb_input(g, "i", NB_I64, 1, s)));
  assert_int_equal(nb_graph_status(g), NB_ERR_DTYPE);
  assert_non_null(strstr(nb_graph_error(g), "erf"));
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_vs_torch),
      cmocka_unit_test(test_grad_vs_torch),
      cmocka_unit_test(test_finite_differences),
      cmocka_unit_test(test_fused_vs_c),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
