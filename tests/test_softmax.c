/* softmax and log_softmax: values and gradients against PyTorch (logits near
 * 1000, every axis), a double-precision naive loop (shapes that hit the
 * row, column-block and threaded paths), -inf/NaN rows, finite-difference
 * gradients on contiguous and strided inputs, and build-time errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct {
  int axis, log_form;
  int transpose; /* apply the op to nb_transpose(x, 0, 2) */
  int step2;     /* apply the op to x[:, ::2] */
} sm_ctx;

static nb_tensor *build_sm(nb_graph *g, nb_tensor **x, void *vctx) {
  const sm_ctx *c = vctx;
  nb_tensor *v = x[0];
  if (c->transpose) v = nb_transpose(g, v, 0, 2);
  if (c->step2) v = nb_slice(g, v, 1, 0, INT64_MAX, 2);
  return c->log_form ? nb_log_softmax(g, v, c->axis) : nb_softmax(g, v, c->axis);
}

/* Wraps an op so tu_forward returns d(sum(op(x) * r))/dx[grad_of] instead of
 * op(x) when grad_of >= 0. */
typedef struct {
  tu_build_fn op;
  void *ctx;
  const float *r;
  int grad_of;
} grad_ctx;

static nb_tensor *build_grad(nb_graph *g, nb_tensor **x, void *vctx) {
  const grad_ctx *c = vctx;
  nb_tensor *y = c->op(g, x, c->ctx);
  if (!y || c->grad_of < 0) return y;
  nb_tensor *r = nb_constant(g, NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y), c->r);
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, r), 0, NULL, 0);
  if (nb_graph_backward(g, loss)) fail_msg("backward failed: %s", nb_last_error());
  return nb_graph_grad(g, x[c->grad_of]);
}

/* ---- against PyTorch ----------------------------------------------------------- */

static void check_ref_case(const tu_ref *ref, const char *name, int axis, int log_form) {
  int nd;
  int64_t shape[NB_MAX_DIMS], n, ny;
  const float *x = tu_ref_get(ref, name, "x", &nd, shape, &n);
  const float *r = tu_ref_get(ref, name, "r", NULL, NULL, NULL);
  const float *y_want = tu_ref_get(ref, name, "y", NULL, NULL, NULL);
  const float *dx_want = tu_ref_get(ref, name, "dx", NULL, NULL, NULL);
  tu_input in = {.ndim = nd, .data = x, .requires_grad = 1};
  memcpy(in.shape, shape, sizeof shape);
  sm_ctx sc = {.axis = axis, .log_form = log_form};
  grad_ctx gc = {.op = build_sm, .ctx = &sc, .r = r, .grad_of = -1};
  float *y, *dx;
  tu_forward(build_grad, &gc, 1, &in, &y, &ny, NULL, NULL);
  assert_int_equal(ny, n);
  char what[160];
  snprintf(what, sizeof what, "%s y", name);
  /* log_softmax reaches about -2000 here, where one f32 ulp is 1.2e-4 */
  tu_assert_close(what, y, y_want, (size_t)n, 1e-6, 2e-6);
  gc.grad_of = 0;
  tu_forward(build_grad, &gc, 1, &in, &dx, &ny, NULL, NULL);
  snprintf(what, sizeof what, "%s dx", name);
  tu_assert_close(what, dx, dx_want, (size_t)n, 2e-6, 1e-5);
  free(y);
  free(dx);
}

static void test_softmax_torch_ref(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("movement.txt");
  static const struct {
    const char *tag;
    int axis;
  } axes[] = {{"ax0", 0}, {"ax1", 1}, {"axm1", -1}};
  for (int lf = 0; lf < 2; lf++)
    for (int a = 0; a < 3; a++) {
      char name[64];
      snprintf(name, sizeof name, "%s_%s", lf ? "log_softmax" : "softmax", axes[a].tag);
      check_ref_case(ref, name, axes[a].axis, lf);
    }
  tu_ref_free(ref);
}

/* ---- against a naive loop ------------------------------------------------------- */

/* Softmax of dense x [outer, len, inner] along the middle axis, in double. */
static void naive_softmax(const float *x, float *y, int64_t outer, int64_t len, int64_t inner,
                          int log_form) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < inner; j++) {
      const float *xr = x + o * len * inner + j;
      float *yr = y + o * len * inner + j;
      double m = -INFINITY, s = 0;
      for (int64_t k = 0; k < len; k++) m = fmax(m, xr[k * inner]);
      for (int64_t k = 0; k < len; k++) s += exp(xr[k * inner] - m);
      for (int64_t k = 0; k < len; k++)
        yr[k * inner] =
            (float)(log_form ? (xr[k * inner] - m) - log(s) : exp(xr[k * inner] - m) / s);
    }
}

static void check_naive(int nd, const int64_t *shape, int axis, int log_form, float scale) {
  int64_t n = nb_shape_numel(nd, shape), outer = 1, inner = 1;
  int ax = axis < 0 ? axis + nd : axis;
  for (int d = 0; d < ax; d++) outer *= shape[d];
  for (int d = ax + 1; d < nd; d++) inner *= shape[d];
  float *x = tu_rand((size_t)n, -scale, scale, 11u + (uint64_t)n);
  float *want = malloc((size_t)n * sizeof *want), *got;
  naive_softmax(x, want, outer, shape[ax], inner, log_form);
  tu_input in = {.ndim = nd, .data = x};
  memcpy(in.shape, shape, (size_t)nd * sizeof *shape);
  sm_ctx sc = {.axis = axis, .log_form = log_form};
  int64_t ny;
  tu_forward(build_sm, &sc, 1, &in, &got, &ny, NULL, NULL);
  assert_int_equal(ny, n);
  char what[96];
  snprintf(what, sizeof what, "%s axis %d of %lld elements", log_form ? "log_softmax" : "softmax",
           axis, (long long)n);
  tu_assert_close(what, got, want, (size_t)n, 1e-6, 1e-5);
  free(x);
  free(want);
  free(got);
}

static void test_softmax_naive(void **state) {
  (void)state;
  /* inner 130 = two full column blocks of 64 and a remainder of 2 */
  static const int64_t small[3] = {3, 5, 130};
  /* 40000 elements: above the threading threshold on every axis */
  static const int64_t large[3] = {8, 100, 50};
  for (int lf = 0; lf < 2; lf++)
    for (int axis = -1; axis < 3; axis++) {
      check_naive(3, small, axis, lf, 30.0f);
      check_naive(3, large, axis, lf, 5.0f);
    }
  static const int64_t vec[1] = {1000};
  check_naive(1, vec, 0, 0, 1000.0f);
  check_naive(1, vec, 0, 1, 1000.0f);
}

/* ---- non-finite rows ------------------------------------------------------------- */

static void test_softmax_nonfinite(void **state) {
  (void)state;
  const float inf = INFINITY, nan = NAN;
  /* row 0: an attention-style mask; row 1: fully masked (NaN like PyTorch);
   * row 2: a NaN poisons its row */
  const float x[9] = {0.0f, -inf, 1.0f, -inf, -inf, -inf, 2.0f, nan, 0.0f};
  const float e = expf(1.0f);
  const float want_sm[9] = {1.0f / (1.0f + e), 0.0f, e / (1.0f + e), nan, nan, nan, nan, nan, nan};
  const float want_lsm[9] = {-log1pf(e), -inf, 1.0f - log1pf(e), nan, nan, nan, nan, nan, nan};
  tu_input in = {.ndim = 2, .shape = {3, 3}, .data = x};
  for (int lf = 0; lf < 2; lf++) {
    sm_ctx sc = {.axis = 1, .log_form = lf};
    float *y;
    tu_forward(build_sm, &sc, 1, &in, &y, NULL, NULL, NULL);
    tu_assert_close(lf ? "log_softmax" : "softmax", y, lf ? want_lsm : want_sm, 9, 1e-6, 1e-6);
    free(y);
  }
}

/* ---- finite differences ----------------------------------------------------------- */

static void test_softmax_gradcheck(void **state) {
  (void)state;
  tu_input in = {.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2, .seed = 5, .requires_grad = 1};
  for (int lf = 0; lf < 2; lf++)
    for (int axis = -1; axis < 3; axis++) {
      if (axis == 2) continue; /* same as -1 */
      sm_ctx sc = {.axis = axis, .log_form = lf};
      char name[64];
      snprintf(name, sizeof name, "%s axis %d", lf ? "log_softmax" : "softmax", axis);
      tu_gradcheck(name, build_sm, &sc, 1, &in, 1e-3, 1e-4, 1e-2);
    }
}

/* Strided inputs: transposed and step-sliced views, forward against the
 * naive loop on a densified copy and gradients by finite differences. */
static void test_softmax_strided(void **state) {
  (void)state;
  tu_input in = {.ndim = 3, .shape = {4, 6, 3}, .lo = -3, .hi = 3, .seed = 9, .requires_grad = 1};
  float *x = tu_rand(72, -3, 3, 9);
  for (int lf = 0; lf < 2; lf++) {
    /* transpose(0, 2): [3, 6, 4], element (i, j, k) = x[k, j, i] */
    sm_ctx sc = {.axis = 1, .log_form = lf, .transpose = 1};
    float *got, dense[72], want[72];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 6; j++)
        for (int k = 0; k < 4; k++) dense[(i * 6 + j) * 4 + k] = x[(k * 6 + j) * 3 + i];
    naive_softmax(dense, want, 3, 6, 4, lf);
    tu_forward(build_sm, &sc, 1, &in, &got, NULL, NULL, NULL);
    tu_assert_close("softmax of a transpose", got, want, 72, 1e-6, 1e-5);
    free(got);
    tu_gradcheck("softmax of a transpose", build_sm, &sc, 1, &in, 1e-3, 1e-4, 1e-2);

    /* x[:, ::2]: [4, 3, 3] */
    sm_ctx sl = {.axis = 0, .log_form = lf, .step2 = 1};
    float sdense[36];
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 3; j++)
        for (int k = 0; k < 3; k++) sdense[(i * 3 + j) * 3 + k] = x[(i * 6 + 2 * j) * 3 + k];
    naive_softmax(sdense, want, 1, 4, 9, lf);
    tu_forward(build_sm, &sl, 1, &in, &got, NULL, NULL, NULL);
    tu_assert_close("softmax of a step slice", got, want, 36, 1e-6, 1e-5);
    free(got);
    tu_gradcheck("softmax of a step slice", build_sm, &sl, 1, &in, 1e-3, 1e-4, 1e-2);
  }
  free(x);
}

/* ---- build-time errors -------------------------------------------------------------- */

static void expect_build_error(nb_graph *g, nb_tensor *t, nb_status st, const char *a,
                               const char *b) {
  assert_null(t);
  assert_int_equal(nb_graph_status(g), st);
  const char *msg = nb_graph_error(g);
  if (!strstr(msg, a) || (b && !strstr(msg, b)))
    fail_msg("error '%s' should mention '%s' and '%s'", msg, a, b ? b : "");
}

static void test_softmax_errors(void **state) {
  (void)state;
  int64_t shape[2] = {2, 3};
  nb_graph *g = nb_graph_new();
  nb_tensor *ids = nb_input(g, "ids", NB_I64, 2, shape);
  expect_build_error(g, nb_softmax(g, ids, 1), NB_ERR_DTYPE, "softmax", "i64");
  nb_graph_free(g);

  g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, shape);
  expect_build_error(g, nb_log_softmax(g, x, 2), NB_ERR_INVALID_ARG, "log_softmax", "axis 2");
  nb_graph_free(g);

  g = nb_graph_new();
  expect_build_error(g, nb_softmax(g, nb_scalar(g, 1.0f), 0), NB_ERR_INVALID_ARG, "softmax",
                     "rank 0");
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_softmax_torch_ref), cmocka_unit_test(test_softmax_naive),
      cmocka_unit_test(test_softmax_nonfinite), cmocka_unit_test(test_softmax_gradcheck),
      cmocka_unit_test(test_softmax_strided),   cmocka_unit_test(test_softmax_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
