/* CPU kernels that apply their epilogue themselves, and the loops they
 * replaced, against the plain plan (no fusion: every op its own kernel) bit
 * for bit and against double-precision or exact reference loops:
 *
 * - conv2d > add + relu with the bias and ReLU in registers (pixel lanes
 *   and channel lanes, bias as [1, K, 1, 1], [K] reshaped, [K, 1, 1]; tails,
 *   groups, stride, NaN input);
 * - max_pool2d_backward > gt + mul with ReLU's gradient in the pooling loop
 *   (AVX2 rows of 8 and 4 windows, scalar rows, ceil_mode edges, a 3x3 pool,
 *   ties, NaN);
 * - direct convolutions with wide or no column padding and tiny rows (the
 *   padded copy), skipped padding columns, few weight-gradient units (batch
 *   split), with the same bits on 1 and 3 threads;
 * - sqrt and rsqrt, vectorised, against sqrtf bit for bit.
 *
 * nb_cpu_fused_epilogues() tells that the in-kernel path ran: its results
 * equal the elementwise engine's bit for bit, so values alone cannot. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/cpu/cpu_internal.h"
#include "test_util.h"

static void assert_same_bits(const char *what, const float *a, const float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)))
      fail_msg("%s: element %lld: %.9g vs %.9g (bits differ)", what, (long long)i, a[i], b[i]);
}

static void assert_close_d(const char *what, const float *got, const double *want, int64_t n,
                           double atol, double rtol) {
  for (int64_t i = 0; i < n; i++) {
    if (isnan(want[i]) && isnan(got[i])) continue;
    if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i])))
      fail_msg("%s: element %lld: got %.8g, want %.8g", what, (long long)i, got[i], want[i]);
  }
}

static nb_compile_options plain_options(void) {
  nb_compile_options o = nb_compile_defaults();
  o.fuse = 0;
  o.inplace = 0;
  return o;
}

/* ---- conv2d > add + relu ----------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t x[4], w[4];
  int stride, pad, dil, groups;
  int bias_kind; /* 0: [1, K, 1, 1]; 1: [K] reshaped to [1, K, 1, 1]; 2: [K, 1, 1] */
  int relu;
  int nan; /* put a NaN into x */
} conv_case;

static void conv_yshape(const int64_t *x, const int64_t *w, int stride, int pad, int dil,
                        int64_t *y) {
  y[0] = x[0];
  y[1] = w[0];
  for (int i = 0; i < 2; i++)
    y[2 + i] = (x[2 + i] + 2 * pad - dil * (w[2 + i] - 1) - 1) / stride + 1;
}

/* y = conv(x, w) in double (the definition). */
static void naive_conv(const int64_t *xs, const int64_t *ws, int stride, int pad, int dil,
                       int groups, const float *x, const float *w, double *y) {
  int64_t ys[4];
  conv_yshape(xs, ws, stride, pad, dil, ys);
  int64_t cg = ws[1], kg = ws[0] / groups;
  for (int64_t n = 0; n < ys[0]; n++)
    for (int64_t k = 0; k < ys[1]; k++)
      for (int64_t p = 0; p < ys[2]; p++)
        for (int64_t q = 0; q < ys[3]; q++) {
          double acc = 0;
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t r = 0; r < ws[2]; r++)
              for (int64_t s = 0; s < ws[3]; s++) {
                int64_t ih = p * stride - pad + r * dil, iw = q * stride - pad + s * dil;
                if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                int64_t ch = (k / kg) * cg + ci;
                acc += (double)x[((n * xs[1] + ch) * xs[2] + ih) * xs[3] + iw] *
                       w[((k * cg + ci) * ws[2] + r) * ws[3] + s];
              }
          y[((n * ys[1] + k) * ys[2] + p) * ys[3] + q] = acc;
        }
}

static float *conv_bias_relu(const conv_case *c, const float *x, const float *w, const float *b,
                             const nb_compile_options *opt) {
  nb_conv2d_params p = nb_conv2d_defaults();
  p.stride[0] = p.stride[1] = c->stride;
  p.padding[0] = p.padding[1] = c->pad;
  p.dilation[0] = p.dilation[1] = c->dil;
  p.groups = c->groups;
  int64_t K = c->w[0], b4[4] = {1, K, 1, 1}, b1[1] = {K}, b3[3] = {K, 1, 1};
  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, 4, c->x), *wi = nb_input(g, "w", NB_F32, 4, c->w);
  nb_tensor *bi = c->bias_kind == 0   ? nb_input(g, "b", NB_F32, 4, b4)
                  : c->bias_kind == 1 ? nb_input(g, "b", NB_F32, 1, b1)
                                      : nb_input(g, "b", NB_F32, 3, b3);
  nb_tensor *bv = c->bias_kind == 1 ? nb_reshape(g, bi, 4, b4) : bi;
  nb_tensor *y = nb_add(g, nb_conv2d(g, xi, wi, &p), bv);
  if (c->relu) y = nb_relu(g, y);
  nb_tensor_set_output(y);
  tu_runner r;
  tu_runner_compile(g, opt, &r);
  tu_runner_feed(&r, xi, x);
  tu_runner_feed(&r, wi, w);
  tu_runner_feed(&r, bi, b);
  TU_OK(nb_plan_run(r.plan));
  float *out = tu_runner_fetch(&r, y);
  tu_runner_free(&r);
  nb_graph_free(g);
  return out;
}

static void test_conv_bias_relu_in_registers(void **state) {
  (void)state;
  const conv_case cases[] = {
      /* pixel lanes: 26 outputs a row (the last tile moves back), 9 taps */
      {"pixel lanes, MNIST conv1", {3, 1, 28, 28}, {32, 1, 3, 3}, 1, 0, 1, 1, 0, 1, 0},
      /* 10 outputs a row: the short-tile store; 5 channels: a partial block */
      {"pixel lanes, short rows", {2, 2, 12, 12}, {5, 2, 3, 3}, 1, 0, 1, 1, 1, 1, 1},
      {"pixel lanes, CIFAR conv1", {2, 3, 32, 32}, {16, 3, 3, 3}, 1, 1, 1, 1, 2, 1, 0},
      {"pixel lanes, groups, no ReLU", {2, 4, 19, 19}, {6, 2, 3, 3}, 1, 1, 1, 2, 0, 0, 0},
      {"channel lanes, MNIST conv2", {2, 32, 13, 13}, {64, 32, 3, 3}, 1, 0, 1, 1, 0, 1, 1},
      {"channel lanes, K=20, no ReLU", {2, 8, 9, 9}, {20, 8, 3, 3}, 1, 1, 1, 1, 1, 0, 0},
      {"channel lanes, stride 2, groups", {2, 16, 9, 9}, {24, 8, 3, 3}, 2, 1, 1, 2, 2, 1, 0},
      {"channel lanes, K=5", {1, 12, 7, 6}, {5, 12, 3, 3}, 1, 1, 1, 1, 0, 1, 1},
  };
  nb_compile_options plain = plain_options();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *c = &cases[i];
    int64_t ys[4];
    conv_yshape(c->x, c->w, c->stride, c->pad, c->dil, ys);
    int64_t nx = nb_shape_numel(4, c->x), nw = nb_shape_numel(4, c->w), ny = nb_shape_numel(4, ys);
    float *x = tu_rand((size_t)nx, -1, 1, 100 + i), *w = tu_rand((size_t)nw, -1, 1, 110 + i);
    float *b = tu_rand((size_t)c->w[0], -1, 1, 120 + i);
    if (c->nan) x[nx / 2] = NAN;
    int64_t before = nb_cpu_fused_epilogues();
    float *fused = conv_bias_relu(c, x, w, b, NULL);
    int64_t after = nb_cpu_fused_epilogues();
    float *ref = conv_bias_relu(c, x, w, b, &plain);
    char what[160];
    snprintf(what, sizeof what, "%s: the bias (and ReLU) ran in the kernel", c->name);
    if (nb_conv_direct_available() && !(after > before)) fail_msg("%s: no", what);
    assert_true(nb_cpu_fused_epilogues() == after); /* the plain plan has no epilogue */
    snprintf(what, sizeof what, "%s: fused vs plain plan", c->name);
    assert_same_bits(what, fused, ref, ny);
    double *yd = calloc((size_t)ny, sizeof(double));
    naive_conv(c->x, c->w, c->stride, c->pad, c->dil, c->groups, x, w, yd);
    int64_t plane = ys[2] * ys[3];
    for (int64_t j = 0; j < ny; j++) {
      yd[j] += b[(j / plane) % ys[1]];
      if (c->relu && yd[j] <= 0) yd[j] = 0;
    }
    if (c->nan) {
      /* NaN reaches the outputs whose window holds it; ReLU keeps it */
      int nans = 0;
      for (int64_t j = 0; j < ny; j++) nans += isnan(fused[j]);
      assert_true(nans > 0);
      for (int64_t j = 0; j < ny; j++)
        if (isnan(fused[j])) yd[j] = NAN;
    }
    snprintf(what, sizeof what, "%s: against double loops", c->name);
    assert_close_d(what, fused, yd, ny, 1e-4, 1e-4);
    free(x), free(w), free(b), free(fused), free(ref), free(yd);
  }
}

/* ---- max_pool2d_backward > gt + mul -------------------------------------------------------- */

typedef struct {
  int64_t x[4];
  int k, stride, ceil_mode;
} pool_case;

/* relu(x) -> max pool -> sum(pool * dy): the pooled values and dx, which
 * is ReLU's gradient times the pooling gradient. */
static void relu_pool_grad(const pool_case *pc, const float *x, const float *dy,
                           const nb_compile_options *opt, float **y, float **dx, int64_t *ys) {
  nb_graph *g = nb_graph_new();
  nb_tensor *xi = nb_input(g, "x", NB_F32, 4, pc->x);
  nb_tensor_set_requires_grad(xi, 1);
  nb_pool2d_params pp = nb_pool2d_defaults(pc->k, pc->k);
  pp.stride[0] = pp.stride[1] = pc->stride;
  pp.ceil_mode = pc->ceil_mode;
  nb_tensor *p = nb_max_pool2d(g, nb_relu(g, xi), &pp);
  memcpy(ys, nb_tensor_shape(p), 4 * sizeof(int64_t));
  nb_tensor *dyc = nb_constant(g, NB_F32, 4, nb_tensor_shape(p), dy);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, p, dyc), 0, NULL, 0)));
  nb_tensor *dxt = nb_graph_grad(g, xi);
  nb_tensor_set_output(p);
  nb_tensor_set_output(dxt);
  tu_runner r;
  tu_runner_compile(g, opt, &r);
  tu_runner_feed(&r, xi, x);
  TU_OK(nb_plan_run(r.plan));
  *y = tu_runner_fetch(&r, p);
  *dx = tu_runner_fetch(&r, dxt);
  tu_runner_free(&r);
  nb_graph_free(g);
}

static void test_maxpool_relu_grad_in_loop(void **state) {
  (void)state;
  const pool_case cases[] = {
      {{2, 3, 26, 26}, 2, 2, 0}, /* 13 windows a row: 8 + 8 moved back */
      {{2, 3, 11, 11}, 2, 2, 0}, /* 5 windows: 4 + 4 moved back, an odd edge */
      {{1, 2, 6, 7}, 2, 2, 0},   /* 3 windows: scalar */
      {{2, 2, 9, 34}, 2, 2, 0},  /* 17 windows */
      {{2, 2, 8, 16}, 2, 2, 0},  /* exactly 8 */
      {{2, 2, 7, 19}, 2, 2, 1},  /* ceil_mode: clipped edge windows */
      {{2, 2, 9, 9}, 3, 2, 0},   /* not 2x2: the generic loop, then the mask */
  };
  nb_compile_options plain = plain_options();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const pool_case *pc = &cases[i];
    int64_t n = nb_shape_numel(4, pc->x), H = pc->x[2], W = pc->x[3];
    float *x = tu_rand((size_t)n, -1, 1, 200 + i);
    /* ties (also of zeros after ReLU), exact zeros and a NaN */
    for (int64_t j = 0; j + 1 < n; j += 5) x[j + 1] = x[j];
    for (int64_t j = 3; j < n; j += 11) x[j] = 0.0f;
    x[n / 3] = NAN;
    int64_t ys[4], ys2[4];
    /* dy: as many values as x has, of which the pooled shape uses some */
    float *dy = tu_rand((size_t)n, -1, 1, 210 + i);
    float *y, *dx, *y2, *dx2;
    int64_t before = nb_cpu_fused_epilogues();
    relu_pool_grad(pc, x, dy, NULL, &y, &dx, ys);
    int64_t after = nb_cpu_fused_epilogues();
    relu_pool_grad(pc, x, dy, &plain, &y2, &dx2, ys2);
    int64_t P = ys[2], Q = ys[3], ny = nb_shape_numel(4, ys);
    char what[128];
    snprintf(what, sizeof what, "pool %lldx%lld k%d ceil %d", (long long)H, (long long)W, pc->k,
             pc->ceil_mode);
    if (!(after > before)) fail_msg("%s: ReLU's gradient did not run in the pooling loop", what);
    assert_same_bits(what, y, y2, ny);
    assert_same_bits(what, dx, dx2, n);
    /* exact reference: the first maximum of each window (NaN wins) gets dy,
     * times ReLU's gradient (relu(x) > 0) */
    double *want = calloc((size_t)n, sizeof(double));
    float *yw = malloc((size_t)ny * sizeof(float));
    for (int64_t pl = 0; pl < pc->x[0] * pc->x[1]; pl++)
      for (int64_t p = 0; p < P; p++)
        for (int64_t q = 0; q < Q; q++) {
          int64_t best = -1;
          float m = -INFINITY;
          for (int64_t a = p * pc->stride; a < p * pc->stride + pc->k && a < H; a++)
            for (int64_t b = q * pc->stride; b < q * pc->stride + pc->k && b < W; b++) {
              float v = x[(pl * H + a) * W + b];
              v = v > 0.0f || isnan(v) ? v : 0.0f;
              if (best < 0 || v > m || isnan(v)) m = v, best = (pl * H + a) * W + b;
            }
          int64_t yi = (pl * P + p) * Q + q;
          yw[yi] = m;
          want[best] += dy[yi];
        }
    for (int64_t j = 0; j < n; j++)
      if (!(x[j] > 0.0f)) want[j] = 0.0;
    tu_assert_close(what, y, yw, (size_t)ny, 0, 0);
    assert_close_d(what, dx, want, n, 0, 0);
    free(x), free(dy), free(y), free(dx), free(y2), free(dx2), free(want), free(yw);
  }
}

/* ---- direct convolutions: padding copies, skipped columns, threads ------------------------- */

static void conv3(const conv_case *c, const float *x, const float *w, const float *dy, int threads,
                  float **y, float **dx, float **dw) {
  nb_set_num_threads(threads);
  nb_conv2d_params p = nb_conv2d_defaults();
  p.stride[0] = p.stride[1] = c->stride;
  p.padding[0] = p.padding[1] = c->pad;
  p.dilation[0] = p.dilation[1] = c->dil;
  p.groups = c->groups;
  tu_conv_all(c->x, c->w, &p, x, w, dy, y, dx, dw);
  nb_set_num_threads(0);
}

/* dx and dw of sum(conv(x, w) * dy) in double. */
static void naive_grads(const conv_case *c, const float *x, const float *w, const float *dy,
                        double *dx, double *dw) {
  int64_t ys[4];
  conv_yshape(c->x, c->w, c->stride, c->pad, c->dil, ys);
  int64_t cg = c->w[1], kg = c->w[0] / c->groups;
  for (int64_t n = 0; n < ys[0]; n++)
    for (int64_t k = 0; k < ys[1]; k++)
      for (int64_t p = 0; p < ys[2]; p++)
        for (int64_t q = 0; q < ys[3]; q++) {
          double d = dy[((n * ys[1] + k) * ys[2] + p) * ys[3] + q];
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t r = 0; r < c->w[2]; r++)
              for (int64_t s = 0; s < c->w[3]; s++) {
                int64_t ih = p * c->stride - c->pad + r * c->dil;
                int64_t iw = q * c->stride - c->pad + s * c->dil;
                if (ih < 0 || ih >= c->x[2] || iw < 0 || iw >= c->x[3]) continue;
                int64_t xi = ((n * c->x[1] + (k / kg) * cg + ci) * c->x[2] + ih) * c->x[3] + iw;
                int64_t wi = ((k * cg + ci) * c->w[2] + r) * c->w[3] + s;
                dx[xi] += d * w[wi];
                dw[wi] += d * x[xi];
              }
        }
}

static void test_conv_padding_and_threads(void **state) {
  (void)state;
  const conv_case cases[] = {
      /* padding 5 with dilation 3: 10 zero columns between rows (> 8) */
      {"channel lanes, padding 5, dilation 3", {2, 4, 6, 5}, {3, 4, 3, 3}, 1, 5, 3, 1, 0, 0, 0},
      /* padding 4: 8 zero columns between rows, one register */
      {"channel lanes, padding 4, dilation 2", {1, 4, 7, 9}, {6, 4, 3, 3}, 1, 4, 2, 1, 0, 0, 0},
      {"pixel lanes, padding 5, dilation 3", {2, 1, 6, 5}, {3, 1, 3, 3}, 1, 5, 3, 1, 0, 0, 0},
      /* rows of 3 and 6 floats: copies below one register */
      {"3-wide rows", {2, 8, 5, 3}, {8, 8, 3, 3}, 1, 1, 1, 1, 0, 0, 0},
      {"6-wide rows", {2, 8, 6, 6}, {9, 8, 3, 3}, 1, 1, 1, 1, 0, 0, 0},
      /* the MNIST conv2 input gradient: padding 2, its 13 columns in 5 runs */
      {"MNIST conv2", {3, 32, 13, 13}, {64, 32, 3, 3}, 1, 0, 1, 1, 0, 0, 0},
      {"CIFAR conv2", {2, 16, 16, 16}, {32, 16, 3, 3}, 1, 1, 1, 1, 0, 0, 0},
      {"5x5, padding 2, stride 2", {2, 8, 11, 12}, {12, 8, 5, 5}, 2, 2, 1, 1, 0, 0, 0},
      /* pixel lanes with 2 weight-gradient units: the batch is split in parts */
      {"pixel lanes, batch parts", {5, 1, 10, 12}, {2, 1, 3, 3}, 1, 1, 1, 1, 0, 0, 0},
      {"pixel lanes, 27 taps", {3, 3, 12, 20}, {7, 3, 3, 3}, 1, 1, 1, 1, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *c = &cases[i];
    int64_t ys[4];
    conv_yshape(c->x, c->w, c->stride, c->pad, c->dil, ys);
    int64_t nx = nb_shape_numel(4, c->x), nw = nb_shape_numel(4, c->w), ny = nb_shape_numel(4, ys);
    float *x = tu_rand((size_t)nx, -1, 1, 300 + i), *w = tu_rand((size_t)nw, -1, 1, 310 + i);
    float *dy = tu_rand((size_t)ny, -1, 1, 320 + i);
    float *y1, *dx1, *dw1, *y3, *dx3, *dw3;
    conv3(c, x, w, dy, 1, &y1, &dx1, &dw1);
    conv3(c, x, w, dy, 3, &y3, &dx3, &dw3);
    char what[160];
    snprintf(what, sizeof what, "%s: y, 1 vs 3 threads", c->name);
    assert_same_bits(what, y1, y3, ny);
    snprintf(what, sizeof what, "%s: dx, 1 vs 3 threads", c->name);
    assert_same_bits(what, dx1, dx3, nx);
    snprintf(what, sizeof what, "%s: dw, 1 vs 3 threads", c->name);
    assert_same_bits(what, dw1, dw3, nw);
    double *yd = calloc((size_t)ny, sizeof(double)), *dxd = calloc((size_t)nx, sizeof(double));
    double *dwd = calloc((size_t)nw, sizeof(double));
    naive_conv(c->x, c->w, c->stride, c->pad, c->dil, c->groups, x, w, yd);
    naive_grads(c, x, w, dy, dxd, dwd);
    snprintf(what, sizeof what, "%s: y", c->name);
    assert_close_d(what, y1, yd, ny, 1e-4, 1e-4);
    snprintf(what, sizeof what, "%s: dx", c->name);
    assert_close_d(what, dx1, dxd, nx, 1e-4, 1e-4);
    snprintf(what, sizeof what, "%s: dw", c->name);
    assert_close_d(what, dw1, dwd, nw, 1e-4, 1e-4);
    free(x), free(w), free(dy), free(y1), free(dx1), free(dw1), free(y3), free(dx3), free(dw3);
    free(yd), free(dxd), free(dwd);
  }
}

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------------------ */

static nb_dconv dconv_fwd(const conv_case *c) {
  int64_t ys[4];
  conv_yshape(c->x, c->w, c->stride, c->pad, c->dil, ys);
  nb_dconv d = {c->x[0], c->x[1], c->x[2],   c->x[3],   c->w[0],
                ys[2],   ys[3],   c->groups, c->w[1],   c->w[0] / c->groups,
                c->w[2], c->w[3], c->stride, c->stride, c->pad,
                c->pad,  c->dil,  c->dil};
  return d;
}

/* The input gradient as the convolution of dy that cpu_conv.c runs. */
static nb_dconv dconv_bwd_input(const conv_case *c) {
  nb_dconv f = dconv_fwd(c);
  nb_dconv d = {f.n,
                f.cout,
                f.p,
                f.q,
                f.cin,
                f.h,
                f.w,
                f.groups,
                f.kg,
                f.cg,
                f.r,
                f.s,
                1,
                1,
                f.dh * (f.r - 1) - f.ph,
                f.dw * (f.s - 1) - f.pw,
                f.dh,
                f.dw};
  return d;
}

/* The convolution and both gradients with the Winograd forward and input
 * gradient (NABLA_CONV=winograd takes it wherever it can run; the shapes of
 * the reference CNNs take it anyway): against double loops, the same bits
 * on 1 and 3 threads, and with the bias and ReLU in registers. */
static void test_winograd(void **state) {
  (void)state;
  const conv_case cases[] = {
      /* chosen by the cost model: the reference CNNs' conv2 forward and
       * input gradient */
      {"MNIST conv2", {8, 32, 13, 13}, {64, 32, 3, 3}, 1, 0, 1, 1, 0, 1, 0},
      {"CIFAR conv2", {8, 16, 16, 16}, {32, 16, 3, 3}, 1, 1, 1, 1, 2, 1, 0},
      /* forced: odd outputs (the last tile row and column half outside),
       * channels not a multiple of 8, one 8-channel register, groups,
       * padding 2, outputs of one row or column, a NaN */
      {"odd channels", {3, 13, 11, 9}, {21, 13, 3, 3}, 1, 1, 1, 1, 1, 1, 0},
      {"8 output channels", {2, 16, 9, 8}, {8, 16, 3, 3}, 1, 2, 1, 1, 0, 0, 0},
      {"groups", {2, 24, 10, 12}, {20, 12, 3, 3}, 1, 1, 1, 2, 0, 1, 0},
      {"one output row", {2, 9, 3, 17}, {10, 9, 3, 3}, 1, 0, 1, 1, 0, 1, 0},
      {"one input channel, 5 x 5", {2, 1, 5, 5}, {3, 1, 3, 3}, 1, 1, 1, 1, 0, 1, 1},
  };
  nb_compile_options plain = plain_options();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *c = &cases[i];
    int forced = i >= 2;
    if (forced) setenv("NABLA_CONV", "winograd", 1);
    nb_dconv df = dconv_fwd(c), db = dconv_bwd_input(c);
    char what[160];
    snprintf(what, sizeof what, "%s: Winograd runs the forward", c->name);
    if (nb_conv_direct_available() && !nb_conv_winograd_applies(&df)) fail_msg("%s: no", what);
    if (nb_conv_direct_available() && !nb_conv_winograd_applies(&db))
      fail_msg("%s: Winograd does not run the input gradient", c->name);
    int64_t ys[4];
    conv_yshape(c->x, c->w, c->stride, c->pad, c->dil, ys);
    int64_t nx = nb_shape_numel(4, c->x), nw = nb_shape_numel(4, c->w), ny = nb_shape_numel(4, ys);
    float *x = tu_rand((size_t)nx, -1, 1, 400 + i), *w = tu_rand((size_t)nw, -1, 1, 410 + i);
    float *dy = tu_rand((size_t)ny, -1, 1, 420 + i), *b = tu_rand((size_t)c->w[0], -1, 1, 430 + i);
    if (c->nan) x[nx / 2] = NAN;
    float *y1, *dx1, *dw1, *y3, *dx3, *dw3;
    conv3(c, x, w, dy, 1, &y1, &dx1, &dw1);
    conv3(c, x, w, dy, 3, &y3, &dx3, &dw3);
    snprintf(what, sizeof what, "%s: y, 1 vs 3 threads", c->name);
    assert_same_bits(what, y1, y3, ny);
    snprintf(what, sizeof what, "%s: dx, 1 vs 3 threads", c->name);
    assert_same_bits(what, dx1, dx3, nx);
    double *yd = calloc((size_t)ny, sizeof(double)), *dxd = calloc((size_t)nx, sizeof(double));
    double *dwd = calloc((size_t)nw, sizeof(double));
    naive_conv(c->x, c->w, c->stride, c->pad, c->dil, c->groups, x, w, yd);
    naive_grads(c, x, w, dy, dxd, dwd);
    if (c->nan) {
      /* NaN reaches the outputs whose tiles read it (a Winograd tile mixes
       * its 4x4 patch into all four outputs): compare the others */
      for (int64_t j = 0; j < ny; j++)
        if (isnan(y1[j])) yd[j] = NAN;
    }
    snprintf(what, sizeof what, "%s: y", c->name);
    assert_close_d(what, y1, yd, ny, 1e-4, 1e-4);
    if (!c->nan) {
      snprintf(what, sizeof what, "%s: dx", c->name);
      assert_close_d(what, dx1, dxd, nx, 1e-4, 1e-4);
    }
    /* with the bias and ReLU: in registers, and the plain plan's ops */
    int64_t before = nb_cpu_fused_epilogues();
    float *fused = conv_bias_relu(c, x, w, b, NULL);
    int64_t after = nb_cpu_fused_epilogues();
    float *ref = conv_bias_relu(c, x, w, b, &plain);
    if (nb_conv_direct_available() && !(after > before))
      fail_msg("%s: the bias did not run in the Winograd kernel", c->name);
    snprintf(what, sizeof what, "%s: conv + bias (+ ReLU), fused vs plain", c->name);
    assert_same_bits(what, fused, ref, ny);
    if (forced) unsetenv("NABLA_CONV");
    free(x), free(w), free(dy), free(b), free(y1), free(dx1), free(dw1), free(y3), free(dx3);
    free(dw3), free(yd), free(dxd), free(dwd), free(fused), free(ref);
  }
}

/* ---- sqrt and rsqrt -------------------------------------------------------------------- */

static void test_sqrt_bits(void **state) {
  (void)state;
  enum { N = 37 };
  float x[N];
  for (int i = 0; i < N; i++) x[i] = (float)(i * i) * 0.37f + 1e-3f * (float)i;
  x[0] = 0.0f, x[1] = -0.0f, x[2] = -1.0f, x[3] = INFINITY, x[4] = NAN, x[5] = 1e-40f;
  x[6] = 2.0f, x[36] = 3.0f;
  int64_t s[1] = {N};
  for (int recip = 0; recip < 2; recip++) {
    nb_graph *g = nb_graph_new();
    nb_tensor *xi = nb_input(g, "x", NB_F32, 1, s);
    nb_tensor *y = recip ? nb_rsqrt(g, xi) : nb_sqrt(g, xi);
    nb_tensor_set_output(y);
    tu_runner r;
    tu_runner_compile(g, NULL, &r);
    tu_runner_feed(&r, xi, x);
    TU_OK(nb_plan_run(r.plan));
    float *got = tu_runner_fetch(&r, y);
    for (int i = 0; i < N; i++) {
      float want = recip ? 1.0f / sqrtf(x[i]) : sqrtf(x[i]);
      if (isnan(want) ? !isnan(got[i]) : memcmp(&want, &got[i], sizeof want))
        fail_msg("%s(%g): got %.9g, want %.9g", recip ? "rsqrt" : "sqrt", x[i], got[i], want);
    }
    free(got);
    tu_runner_free(&r);
    nb_graph_free(g);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_bias_relu_in_registers),
      cmocka_unit_test(test_maxpool_relu_grad_in_loop),
      cmocka_unit_test(test_conv_padding_and_threads),
      cmocka_unit_test(test_winograd),
      cmocka_unit_test(test_sqrt_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
