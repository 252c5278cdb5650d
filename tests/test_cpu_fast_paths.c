/* The CPU backend's fast paths against plain loops and against the slow
 * paths they replace: direct convolution (channel lanes and pixel lanes,
 * padding, dilation, strides, groups, tails) against a double-precision loop
 * and against im2col + GEMM (NABLA_CONV=im2col); epilogue fusion and
 * optimizer updates written in place against the unfused, unshared plan;
 * 2x2 max pooling, transposed elementwise reads, leading-axis sums and
 * 1-row matmuls against loops; and sums that must not depend on the thread
 * count. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static int64_t numel(int nd, const int64_t *s) { return nb_shape_numel(nd, s); }

/* ---- running a graph ------------------------------------------------------------- */

/* ---- convolution ------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t x[4], w[4];
  int stride, pad, dil, groups;
} conv_case;

static void conv_yshape(const conv_case *c, int64_t *y) {
  y[0] = c->x[0];
  y[1] = c->w[0];
  for (int i = 0; i < 2; i++)
    y[2 + i] = (c->x[2 + i] + 2 * c->pad - c->dil * (c->w[2 + i] - 1) - 1) / c->stride + 1;
}

/* y, dx and dw of sum(y * dy) by the definition, in double. */
static void naive_conv(const conv_case *c, const float *x, const float *w, const float *dy,
                       double *y, double *dx, double *dw) {
  int64_t ys[4];
  conv_yshape(c, ys);
  int64_t cg = c->w[1], kg = c->w[0] / c->groups;
  for (int64_t n = 0; n < ys[0]; n++)
    for (int64_t k = 0; k < ys[1]; k++)
      for (int64_t p = 0; p < ys[2]; p++)
        for (int64_t q = 0; q < ys[3]; q++) {
          int64_t yi = ((n * ys[1] + k) * ys[2] + p) * ys[3] + q;
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t r = 0; r < c->w[2]; r++)
              for (int64_t s = 0; s < c->w[3]; s++) {
                int64_t ih = p * c->stride - c->pad + r * c->dil;
                int64_t iw = q * c->stride - c->pad + s * c->dil;
                if (ih < 0 || ih >= c->x[2] || iw < 0 || iw >= c->x[3]) continue;
                int64_t ch = (k / kg) * cg + ci;
                int64_t xi = ((n * c->x[1] + ch) * c->x[2] + ih) * c->x[3] + iw;
                int64_t wi = ((k * cg + ci) * c->w[2] + r) * c->w[3] + s;
                y[yi] += (double)x[xi] * w[wi];
                dx[xi] += (double)dy[yi] * w[wi];
                dw[wi] += (double)dy[yi] * x[xi];
              }
        }
}

static void assert_close_d(const char *what, const float *got, const double *want, int64_t n,
                           double atol, double rtol) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i])))
      fail_msg("%s: element %lld: got %.8g, want %.8g", what, (long long)i, got[i], want[i]);
}

/* conv2d and its two gradient ops in one plan. */
static void run_conv(const conv_case *c, const float *x, const float *w, const float *dy, float **y,
                     float **dx, float **dw) {
  nb_conv2d_params p = nb_conv2d_defaults();
  p.stride[0] = p.stride[1] = c->stride;
  p.padding[0] = p.padding[1] = c->pad;
  p.dilation[0] = p.dilation[1] = c->dil;
  p.groups = c->groups;
  tu_conv_all(c->x, c->w, &p, x, w, dy, y, dx, dw);
}

static void test_conv_paths(void **state) {
  (void)state;
  const conv_case cases[] = {
      /* pixel lanes: stride 1, at most 32 taps, rows of >= 8 outputs */
      {"C=1 (MNIST conv1)", {3, 1, 28, 28}, {32, 1, 3, 3}, 1, 0, 1, 1},
      {"C=3 pad 1 (CIFAR conv1)", {2, 3, 32, 32}, {16, 3, 3, 3}, 1, 1, 1, 1},
      {"pixel lanes, 13 outputs per row", {2, 2, 15, 15}, {5, 2, 3, 3}, 1, 0, 1, 1},
      {"pixel lanes, dilation 2, pad 2", {2, 1, 20, 21}, {7, 1, 3, 3}, 1, 2, 2, 1},
      {"pixel lanes, groups", {2, 4, 12, 12}, {6, 2, 3, 3}, 1, 1, 1, 2},
      {"pixel lanes, long rows (row blocks)", {1, 1, 9, 300}, {3, 1, 3, 3}, 1, 1, 1, 1},
      /* channel lanes */
      {"channel lanes, K=64 (MNIST conv2)", {2, 32, 13, 13}, {64, 32, 3, 3}, 1, 0, 1, 1},
      {"channel lanes, K=20 (one 8-lane register)", {2, 8, 9, 9}, {20, 8, 3, 3}, 1, 1, 1, 1},
      {"channel lanes, stride 2", {2, 8, 11, 10}, {16, 8, 3, 3}, 2, 1, 1, 1},
      {"channel lanes, dilation 2, 5x5", {1, 4, 14, 14}, {9, 4, 5, 5}, 1, 3, 2, 1},
      {"channel lanes, groups", {2, 16, 7, 7}, {24, 8, 3, 3}, 1, 1, 1, 2},
      {"depthwise", {2, 6, 10, 10}, {6, 1, 3, 3}, 1, 1, 1, 6},
      {"4-pixel rows", {3, 12, 6, 6}, {8, 12, 3, 3}, 1, 0, 1, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *c = &cases[i];
    int64_t ys[4];
    conv_yshape(c, ys);
    int64_t nx = numel(4, c->x), nw = numel(4, c->w), ny = numel(4, ys);
    float *x = tu_rand((size_t)nx, -1, 1, 10 + i), *w = tu_rand((size_t)nw, -1, 1, 20 + i);
    float *dy = tu_rand((size_t)ny, -1, 1, 30 + i);
    double *y0 = calloc((size_t)ny, sizeof(double)), *dx0 = calloc((size_t)nx, sizeof(double));
    double *dw0 = calloc((size_t)nw, sizeof(double));
    naive_conv(c, x, w, dy, y0, dx0, dw0);
    float *y, *dx, *dw, *y2, *dx2, *dw2;
    run_conv(c, x, w, dy, &y, &dx, &dw);
    setenv("NABLA_CONV", "im2col", 1);
    run_conv(c, x, w, dy, &y2, &dx2, &dw2);
    unsetenv("NABLA_CONV");
    char what[160];
    const char *paths[2] = {"default", "im2col"};
    float *got[2][3] = {{y, dx, dw}, {y2, dx2, dw2}};
    for (int k = 0; k < 2; k++) {
      snprintf(what, sizeof what, "%s (%s): y", c->name, paths[k]);
      assert_close_d(what, got[k][0], y0, ny, 1e-4, 1e-4);
      snprintf(what, sizeof what, "%s (%s): dx", c->name, paths[k]);
      assert_close_d(what, got[k][1], dx0, nx, 1e-4, 1e-4);
      snprintf(what, sizeof what, "%s (%s): dw", c->name, paths[k]);
      assert_close_d(what, got[k][2], dw0, nw, 1e-4, 1e-4);
    }
    free(x), free(w), free(dy), free(y0), free(dx0), free(dw0);
    free(y), free(dx), free(dw), free(y2), free(dx2), free(dw2);
  }
}

/* ---- a training step: epilogues and in-place updates change nothing ------------------ */

/* A small CNN step (conv + bias + ReLU, 2x2 max pool, Linear + bias + ReLU,
 * cross-entropy, SGD with momentum or Adam) run three times; returns the
 * final parameters, all concatenated. */
typedef struct {
  float *params;
  int64_t n;
  nb_plan_stats stats;
} step_result;

static step_result train(const nb_compile_options *opt, int adam) {
  nb_graph *g = nb_graph_new();
  int64_t xs[4] = {4, 2, 10, 9}, ls[1] = {4};
  int64_t ws[4] = {8, 2, 3, 3}, bs[4] = {1, 8, 1, 1}, fw[2] = {6, 8 * 4 * 3}, fb[1] = {6};
  nb_init init = {NB_INIT_UNIFORM, -0.3f, 0.3f, 7};
  nb_tensor *x = nb_input(g, "x", NB_F32, 4, xs), *y = nb_input(g, "y", NB_I64, 1, ls);
  nb_tensor *w = nb_param(g, "w", 4, ws, init), *b = nb_param(g, "b", 4, bs, init);
  nb_tensor *w2 = nb_param(g, "w2", 2, fw, init), *b2 = nb_param(g, "b2", 1, fb, init);
  nb_conv2d_params cp = nb_conv2d_defaults();
  cp.padding[0] = cp.padding[1] = 1;
  nb_pool2d_params pp = nb_pool2d_defaults(2, 2);
  nb_tensor *h = nb_relu(g, nb_add(g, nb_conv2d(g, x, w, &cp), b));
  h = nb_max_pool2d(g, h, &pp);
  int64_t flat[2] = {4, 8 * 5 * 4};
  h = nb_reshape(g, h, 2, flat);
  /* keep the Linear input at 96 features: slice the flattened map */
  h = nb_slice(g, h, 1, 0, 96, 1);
  h = nb_relu(g, nb_add(g, nb_matmul(g, h, nb_transpose(g, w2, 0, 1)), b2));
  nb_tensor *loss = nb_cross_entropy(g, h, y, 0.0f);
  nb_tensor_set_output(loss);
  TU_OK(nb_graph_backward(g, loss));
  nb_optimizer *o;
  if (adam)
    TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &o));
  else
    TU_OK(nb_optimizer_sgd(g, 0.9f, 0.0f, 0, &o));
  tu_runner r;
  tu_runner_compile(g, opt, &r);
  float *xd = tu_rand((size_t)numel(4, xs), -1, 1, 5);
  int64_t yd[4] = {0, 3, 5, 1};
  for (int t = 1; t <= 3; t++) {
    tu_runner_feed(&r, x, xd);
    TU_OK(nb_plan_set_input(r.plan, y, yd, sizeof yd));
    TU_OK(nb_optimizer_feed(o, r.plan, t, 0.05f));
    TU_OK(nb_plan_run(r.plan));
  }
  step_result res;
  res.stats = nb_plan_get_stats(r.plan);
  nb_tensor *ps[4] = {w, b, w2, b2};
  res.n = 0;
  for (int i = 0; i < 4; i++) res.n += nb_tensor_numel(ps[i]);
  res.params = malloc((size_t)res.n * sizeof(float));
  int64_t at = 0;
  for (int i = 0; i < 4; i++) {
    float *v = tu_runner_fetch(&r, ps[i]);
    memcpy(res.params + at, v, (size_t)nb_tensor_numel(ps[i]) * sizeof(float));
    at += nb_tensor_numel(ps[i]);
    free(v);
  }
  free(xd);
  tu_runner_free(&r);
  nb_optimizer_free(o);
  nb_graph_free(g);
  return res;
}

static void test_fusion_changes_nothing(void **state) {
  (void)state;
  nb_compile_options plain = nb_compile_defaults();
  plain.fuse = 0;
  plain.inplace = 0;
  for (int adam = 0; adam < 2; adam++) {
    step_result a = train(NULL, adam), b = train(&plain, adam);
    assert_int_equal(a.n, b.n);
    /* the same float operations in the same order: identical results */
    tu_assert_close(adam ? "Adam: fused vs plain" : "SGD: fused vs plain", a.params, b.params,
                    (size_t)a.n, 0, 0);
    /* epilogues remove launches; in-place updates remove the assign copies */
    assert_true(a.stats.kernels < b.stats.kernels);
    assert_true(a.stats.inplace > 0);
    assert_true(a.stats.arena_bytes <= b.stats.arena_bytes);
    free(a.params), free(b.params);
  }
}

/* ---- pooling, elementwise, reductions, matmul ---------------------------------------- */

static void test_maxpool_2x2_edges(void **state) {
  (void)state;
  /* odd sizes leave a row and a column outside every window; ceil_mode adds
   * clipped windows there; ties and NaN follow PyTorch's first-max rule */
  const int64_t sizes[][2] = {{7, 9}, {6, 6}, {5, 8}, {3, 5}, {2, 3}};
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
    for (int ceil_mode = 0; ceil_mode < 2; ceil_mode++) {
      int64_t H = sizes[si][0], W = sizes[si][1], xs[4] = {2, 3, H, W};
      int64_t n = numel(4, xs);
      float *x = tu_rand((size_t)n, -2, 2, 40 + si);
      for (int64_t i = 0; i < n; i += 7) x[i] = x[i + 1 < n ? i + 1 : i]; /* ties */
      if (n > 10) x[10] = NAN;
      nb_graph *g = nb_graph_new();
      nb_tensor *xi = nb_input(g, "x", NB_F32, 4, xs);
      nb_pool2d_params pp = nb_pool2d_defaults(2, 2);
      pp.ceil_mode = ceil_mode;
      nb_tensor *y = nb_max_pool2d(g, xi, &pp);
      const int64_t *ys = nb_tensor_shape(y);
      int64_t ny = nb_tensor_numel(y);
      float *dyd = tu_rand((size_t)(ny ? ny : 1), -1, 1, 50 + si);
      nb_tensor *dy = nb_constant(g, NB_F32, 4, ys, dyd);
      nb_tensor_set_requires_grad(xi, 1);
      TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, y, dy), 0, NULL, 0)));
      nb_tensor *dx = nb_graph_grad(g, xi);
      nb_tensor_set_output(y);
      nb_tensor_set_output(dx);
      tu_runner r;
      tu_runner_compile(g, NULL, &r);
      tu_runner_feed(&r, xi, x);
      TU_OK(nb_plan_run(r.plan));
      float *yg = tu_runner_fetch(&r, y), *dxg = tu_runner_fetch(&r, dx);
      float *yw = malloc((size_t)(ny ? ny : 1) * sizeof(float));
      double *dxw = calloc((size_t)n, sizeof(double));
      for (int64_t pl = 0; pl < 6; pl++)
        for (int64_t p = 0; p < ys[2]; p++)
          for (int64_t q = 0; q < ys[3]; q++) {
            int64_t best = -1;
            float m = -INFINITY;
            for (int64_t i = 2 * p; i < 2 * p + 2 && i < H; i++)
              for (int64_t j = 2 * q; j < 2 * q + 2 && j < W; j++) {
                float v = x[(pl * H + i) * W + j];
                if (best < 0 || v > m || isnan(v)) m = v, best = (pl * H + i) * W + j;
              }
            int64_t yi = (pl * ys[2] + p) * ys[3] + q;
            yw[yi] = m;
            dxw[best] += dyd[yi];
          }
      char what[96];
      snprintf(what, sizeof what, "maxpool %lldx%lld ceil %d: y", (long long)H, (long long)W,
               ceil_mode);
      tu_assert_close(what, yg, yw, (size_t)ny, 0, 0);
      snprintf(what, sizeof what, "maxpool %lldx%lld ceil %d: dx", (long long)H, (long long)W,
               ceil_mode);
      assert_close_d(what, dxg, dxw, n, 0, 0);
      free(x), free(dyd), free(yg), free(dxg), free(yw), free(dxw);
      tu_runner_free(&r);
      nb_graph_free(g);
    }
}

/* a * b^T + c with b read transposed (the blocked tile walk) and c
 * broadcast, at sizes with partial blocks. */
static void test_transposed_elementwise(void **state) {
  (void)state;
  const int64_t dims[][3] = {{3, 37, 70}, {1, 16, 32}, {2, 5, 200}};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
    int64_t B = dims[di][0], R = dims[di][1], C = dims[di][2];
    int64_t as[3] = {B, R, C}, bs[3] = {B, C, R}, cs[2] = {1, C};
    float *a = tu_rand((size_t)(B * R * C), -1, 1, 60),
          *b = tu_rand((size_t)(B * R * C), -1, 1, 61);
    float *cc = tu_rand((size_t)C, -1, 1, 62);
    nb_graph *g = nb_graph_new();
    nb_tensor *ai = nb_input(g, "a", NB_F32, 3, as), *bi = nb_input(g, "b", NB_F32, 3, bs);
    nb_tensor *ci = nb_input(g, "c", NB_F32, 2, cs);
    nb_tensor *y = nb_add(g, nb_mul(g, ai, nb_transpose(g, bi, 1, 2)), ci);
    nb_tensor_set_output(y);
    tu_runner r;
    tu_runner_compile(g, NULL, &r);
    tu_runner_feed(&r, ai, a);
    tu_runner_feed(&r, bi, b);
    tu_runner_feed(&r, ci, cc);
    TU_OK(nb_plan_run(r.plan));
    float *yg = tu_runner_fetch(&r, y), *yw = malloc((size_t)(B * R * C) * sizeof(float));
    for (int64_t n = 0; n < B; n++)
      for (int64_t i = 0; i < R; i++)
        for (int64_t j = 0; j < C; j++)
          yw[(n * R + i) * C + j] = a[(n * R + i) * C + j] * b[(n * C + j) * R + i] + cc[j];
    tu_assert_close("a * b^T + c", yg, yw, (size_t)(B * R * C), 0, 0);
    free(a), free(b), free(cc), free(yg), free(yw);
    tu_runner_free(&r);
    nb_graph_free(g);
  }
}

/* Sums over leading (and trailing) axes against double loops, and the same
 * bits with 1 and 2 threads. */
static float *bias_grad(const int64_t *xs, int naxes, const int *axes, const float *x,
                        int threads) {
  nb_set_num_threads(threads);
  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, 4, xs);
  nb_tensor *s = nb_sum(g, xi, naxes, axes, 0);
  nb_tensor_set_output(s);
  tu_runner r;
  tu_runner_compile(g, NULL, &r);
  tu_runner_feed(&r, xi, x);
  TU_OK(nb_plan_run(r.plan));
  float *out = tu_runner_fetch(&r, s);
  tu_runner_free(&r);
  nb_graph_free(g);
  nb_set_num_threads(0);
  return out;
}

static void test_leading_axis_sums(void **state) {
  (void)state;
  int64_t xs[4] = {37, 12, 9, 11};
  int64_t n = numel(4, xs);
  float *x = tu_rand((size_t)n, -1, 1, 70);
  const int ax1[3] = {0, 2, 3}, ax2[1] = {0}, ax3[2] = {0, 1};
  struct {
    int naxes;
    const int *axes;
  } cases[] = {{3, ax1}, {1, ax2}, {2, ax3}};
  for (size_t ci = 0; ci < 3; ci++) {
    float *one = bias_grad(xs, cases[ci].naxes, cases[ci].axes, x, 1);
    float *two = bias_grad(xs, cases[ci].naxes, cases[ci].axes, x, 2);
    int64_t keep[4], nk = 1;
    for (int d = 0; d < 4; d++) {
      int red = 0;
      for (int k = 0; k < cases[ci].naxes; k++) red |= cases[ci].axes[k] == d;
      keep[d] = red ? 1 : xs[d];
      nk *= keep[d];
    }
    double *want = calloc((size_t)nk, sizeof(double));
    for (int64_t i = 0; i < n; i++) {
      int64_t rem = i, o = 0, mul = 1;
      for (int d = 3; d >= 0; d--) {
        int64_t idx = rem % xs[d];
        rem /= xs[d];
        if (keep[d] > 1) o += idx * mul, mul *= keep[d];
      }
      want[o] += x[i];
    }
    assert_close_d("leading-axis sum", one, want, nk, 1e-5, 1e-5);
    tu_assert_close("leading-axis sum, 1 vs 2 threads", one, two, (size_t)nk, 0, 0);
    free(one), free(two), free(want);
  }
  free(x);
}

/* [1, k] x [k, n] runs as a GEMV, with either operand stored transposed. */
static void test_one_row_matmul(void **state) {
  (void)state;
  const int64_t k = 37, n = 23;
  float *a = tu_rand((size_t)k, -1, 1, 80), *b = tu_rand((size_t)(k * n), -1, 1, 81);
  for (int tb = 0; tb < 2; tb++)
    for (int ta = 0; ta < 2; ta++) {
      nb_graph *g = nb_graph_new();
      int64_t as[2] = {ta ? k : 1, ta ? 1 : k}, bs[2] = {tb ? n : k, tb ? k : n};
      nb_tensor *ai = nb_input(g, "a", NB_F32, 2, as), *bi = nb_input(g, "b", NB_F32, 2, bs);
      nb_tensor *av = ta ? nb_transpose(g, ai, 0, 1) : ai;
      nb_tensor *bv = tb ? nb_transpose(g, bi, 0, 1) : bi;
      nb_tensor *y = nb_matmul(g, av, bv);
      nb_tensor_set_output(y);
      tu_runner r;
      tu_runner_compile(g, NULL, &r);
      tu_runner_feed(&r, ai, a);
      /* b holds B [k, n] or, transposed, B^T [n, k] */
      float *bd = malloc((size_t)(k * n) * sizeof(float));
      for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < n; j++) bd[tb ? j * k + i : i * n + j] = b[i * n + j];
      tu_runner_feed(&r, bi, bd);
      TU_OK(nb_plan_run(r.plan));
      float *yg = tu_runner_fetch(&r, y);
      double *want = calloc((size_t)n, sizeof(double));
      for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < k; i++) want[j] += (double)a[i] * b[i * n + j];
      assert_close_d("1-row matmul", yg, want, n, 1e-5, 1e-5);
      free(bd), free(yg), free(want);
      tu_runner_free(&r);
      nb_graph_free(g);
    }
  free(a), free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_paths),        cmocka_unit_test(test_fusion_changes_nothing),
      cmocka_unit_test(test_maxpool_2x2_edges), cmocka_unit_test(test_transposed_elementwise),
      cmocka_unit_test(test_leading_axis_sums), cmocka_unit_test(test_one_row_matmul),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
