/* Training-mode batch norm as nb_batch_norm composes it (the centred input
 * shared by the variance and the output, the scale folded per channel:
 * y = xc * (rsqrt(var + eps) * gamma) + beta) and the subtraction's gradient
 * for a broadcast operand (summed, then negated): outputs, the gradients of
 * x, gamma and beta and the running statistics against double-precision
 * loops on odd shapes, and -sum(dy) against the add rule's sum(dy) bit for
 * bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct {
  int ndim;
  int64_t shape[4];
  int affine; /* gamma and beta */
} bn_case;

/* n images, c channels, s elements per channel and image */
static void dims(const bn_case *k, int64_t *n, int64_t *c, int64_t *s) {
  *n = k->shape[0];
  *c = k->shape[1];
  *s = 1;
  for (int d = 2; d < k->ndim; d++) *s *= k->shape[d];
}

#define AT(i, ch, j) (((i)*c + (ch)) * s + (j))

/* y, dx, dgamma, dbeta of sum(y * R) and the running statistics after one
 * step from rm0 = 0.2, rv0 = 1.5, momentum 0.1, in double. */
static void reference(const bn_case *k, const float *x, const float *gm, const float *bt,
                      const float *R, float eps, double *y, double *dx, double *dg, double *db,
                      double *rm, double *rv) {
  int64_t n, c, s;
  dims(k, &n, &c, &s);
  double cnt = (double)(n * s);
  for (int64_t ch = 0; ch < c; ch++) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < s; j++) m += x[AT(i, ch, j)];
    m /= cnt;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < s; j++) v += (x[AT(i, ch, j)] - m) * (x[AT(i, ch, j)] - m);
    v /= cnt;
    double r = 1.0 / sqrt(v + eps), g = gm ? gm[ch] : 1.0, b = bt ? bt[ch] : 0.0;
    double sd = 0, sdh = 0;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < s; j++) {
        int64_t o = AT(i, ch, j);
        double xh = (x[o] - m) * r;
        y[o] = xh * g + b;
        sd += R[o] * g;
        sdh += R[o] * g * xh;
      }
    db[ch] = dg[ch] = 0;
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < s; j++) {
        int64_t o = AT(i, ch, j);
        double xh = (x[o] - m) * r;
        dx[o] = r * (R[o] * g - sd / cnt - xh * sdh / cnt);
        db[ch] += R[o];
        dg[ch] += R[o] * xh;
      }
    rm[ch] = 0.9 * 0.2 + 0.1 * m;
    rv[ch] = 0.9 * 1.5 + 0.1 * v * (cnt > 1 ? cnt / (cnt - 1) : 1.0);
  }
}

static void assert_close_d(const char *what, const float *got, const double *want, int64_t n,
                           double atol, double rtol) {
  float *w = malloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++) w[i] = (float)want[i];
  tu_assert_close(what, got, w, (size_t)n, atol, rtol);
  free(w);
}

static void check_case(const bn_case *k, uint64_t seed) {
  int64_t n, c, s;
  dims(k, &n, &c, &s);
  int64_t numel = n * c * s;
  float eps = 1e-5f;
  /* an offset and a spread per channel, as after a convolution */
  float *x = tu_rand((size_t)numel, -1.0f, 1.0f, seed);
  for (int64_t i = 0; i < n; i++)
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t j = 0; j < s; j++) x[AT(i, ch, j)] = 3.0f * x[AT(i, ch, j)] + (float)ch - 1.5f;
  float *gm = tu_rand((size_t)c, 0.5f, 1.5f, seed + 1), *bt = tu_rand((size_t)c, -1, 1, seed + 2);
  float *R = tu_rand((size_t)numel, -1.0f, 1.0f, seed + 3);

  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, k->ndim, k->shape);
  nb_tensor *gi = NULL, *bi = NULL, *dgt = NULL, *dbt = NULL;
  nb_tensor_set_requires_grad(xi, 1);
  if (k->affine) {
    gi = nb_input(g, "gamma", NB_F32, 1, &c);
    bi = nb_input(g, "beta", NB_F32, 1, &c);
    nb_tensor_set_requires_grad(gi, 1);
    nb_tensor_set_requires_grad(bi, 1);
  }
  nb_tensor *rm = nb_variable(g, "rm", NB_F32, 1, &c, (nb_init){NB_INIT_CONSTANT, 0.2f, 0, 0});
  nb_tensor *rv = nb_variable(g, "rv", NB_F32, 1, &c, (nb_init){NB_INIT_CONSTANT, 1.5f, 0, 0});
  nb_tensor *y = nb_batch_norm(g, xi, gi, bi, rm, rv, 1, 0.1f, eps);
  nb_tensor *Rc = nb_constant(g, NB_F32, k->ndim, k->shape, R);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, y, Rc), 0, NULL, 0)));
  nb_tensor *dxt = nb_graph_grad(g, xi);
  nb_tensor_set_output(y);
  nb_tensor_set_output(dxt);
  if (k->affine) {
    dgt = nb_graph_grad(g, gi);
    dbt = nb_graph_grad(g, bi);
    nb_tensor_set_output(dgt);
    nb_tensor_set_output(dbt);
  }
  tu_runner r;
  tu_runner_compile(g, NULL, &r);
  tu_runner_feed(&r, xi, x);
  if (k->affine) {
    tu_runner_feed(&r, gi, gm);
    tu_runner_feed(&r, bi, bt);
  }
  TU_OK(nb_plan_run(r.plan));
  float *yv = tu_runner_fetch(&r, y), *dxv = tu_runner_fetch(&r, dxt);
  float *rmv = malloc((size_t)c * sizeof *rmv), *rvv = malloc((size_t)c * sizeof *rvv);
  TU_OK(nb_state_read(r.st, "rm", rmv, (size_t)c * sizeof *rmv));
  TU_OK(nb_state_read(r.st, "rv", rvv, (size_t)c * sizeof *rvv));

  double *yd = malloc((size_t)numel * sizeof *yd), *dxd = malloc((size_t)numel * sizeof *dxd);
  double *dgd = malloc((size_t)c * sizeof *dgd), *dbd = malloc((size_t)c * sizeof *dbd);
  double *rmd = malloc((size_t)c * sizeof *rmd), *rvd = malloc((size_t)c * sizeof *rvd);
  reference(k, x, k->affine ? gm : NULL, k->affine ? bt : NULL, R, eps, yd, dxd, dgd, dbd, rmd,
            rvd);
  assert_close_d("y", yv, yd, numel, 2e-5, 2e-5);
  /* dx is a difference of sums: its error scales with the sums' size */
  assert_close_d("dx", dxv, dxd, numel, 2e-5 * sqrt((double)(n * s)), 1e-4);
  assert_close_d("running_mean", rmv, rmd, c, 1e-6, 1e-5);
  assert_close_d("running_var", rvv, rvd, c, 1e-6, 1e-5);
  if (k->affine) {
    float *dgv = tu_runner_fetch(&r, dgt), *dbv = tu_runner_fetch(&r, dbt);
    assert_close_d("dgamma", dgv, dgd, c, 1e-5 * sqrt((double)(n * s)), 1e-5);
    assert_close_d("dbeta", dbv, dbd, c, 1e-5 * sqrt((double)(n * s)), 1e-5);
    free(dgv);
    free(dbv);
  }
  free(yv), free(dxv), free(rmv), free(rvv);
  free(yd), free(dxd), free(dgd), free(dbd), free(rmd), free(rvd);
  tu_runner_free(&r);
  nb_graph_free(g);
  free(x), free(gm), free(bt), free(R);
}

static void test_bn_train_vs_double(void **state) {
  (void)state;
  static const bn_case cases[] = {
      {4, {3, 5, 7, 3}, 1},   /* odd everything */
      {4, {4, 16, 8, 8}, 1},  /* a CIFAR ResNet stage-3 shape, smaller batch */
      {2, {6, 4}, 1},         /* [N, C]: BatchNorm1d */
      {3, {1, 2, 5}, 0},      /* one image, no gamma/beta */
      {4, {2, 3, 1, 1}, 1},   /* one element per channel and image */
      {4, {5, 1, 33, 17}, 0}, /* one channel, rows longer than a vector */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 100 + i);
}

/* The subtraction's gradient for a broadcast b: -sum(dy) over b's
 * broadcast axes; exactly the negation of what addition gives b, and the
 * double sum to float rounding. */
static float *broadcast_grad(int sub, const int64_t *as, const int64_t *bs, const float *a,
                             const float *b, const float *R) {
  nb_graph *g = nb_graph_new();
  nb_tensor *ai = nb_input(g, "a", NB_F32, 3, as), *bi = nb_input(g, "b", NB_F32, 3, bs);
  nb_tensor_set_requires_grad(bi, 1);
  nb_tensor *z = sub ? nb_sub(g, ai, bi) : nb_add(g, ai, bi);
  nb_tensor *Rc = nb_constant(g, NB_F32, 3, as, R);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, z, Rc), 0, NULL, 0)));
  nb_tensor *db = nb_graph_grad(g, bi);
  nb_tensor_set_output(db);
  tu_runner r;
  tu_runner_compile(g, NULL, &r);
  tu_runner_feed(&r, ai, a);
  tu_runner_feed(&r, bi, b);
  TU_OK(nb_plan_run(r.plan));
  float *out = tu_runner_fetch(&r, db);
  tu_runner_free(&r);
  nb_graph_free(g);
  return out;
}

static void test_sub_broadcast_grad(void **state) {
  (void)state;
  static const int64_t as[3] = {7, 5, 37}, bs[3] = {1, 5, 1};
  float *a = tu_rand(7 * 5 * 37, -1, 1, 7), *b = tu_rand(5, -1, 1, 8);
  float *R = tu_rand(7 * 5 * 37, -1, 1, 9);
  float *ds = broadcast_grad(1, as, bs, a, b, R), *da = broadcast_grad(0, as, bs, a, b, R);
  double want[5] = {0};
  for (int i = 0; i < 7; i++)
    for (int ch = 0; ch < 5; ch++)
      for (int j = 0; j < 37; j++) want[ch] -= R[(i * 5 + ch) * 37 + j];
  assert_close_d("d(a - b)/db", ds, want, 5, 1e-5, 1e-5);
  for (int ch = 0; ch < 5; ch++) {
    float neg = -da[ch];
    assert_memory_equal(&ds[ch], &neg, sizeof neg);
  }
  free(a), free(b), free(R), free(ds), free(da);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bn_train_vs_double),
      cmocka_unit_test(test_sub_broadcast_grad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
