/* conv2d and its two gradient ops on the CPU: values against PyTorch
 * (tests/ref/conv.txt) and against a direct loop written here, finite
 * differences for every gradient (including the gradients of the gradient
 * ops), empty tensors, and shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ---- helpers -------------------------------------------------------------------- */

typedef struct {
  int64_t x[4], w[4];
  nb_conv2d_params p;
} conv_case;

static int64_t conv_dim(int64_t in, int64_t k, int s, int p, int d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static void conv_yshape(const conv_case *cc, int64_t *y) {
  y[0] = cc->x[0];
  y[1] = cc->w[0];
  y[2] = conv_dim(cc->x[2], cc->w[2], cc->p.stride[0], cc->p.padding[0], cc->p.dilation[0]);
  y[3] = conv_dim(cc->x[3], cc->w[3], cc->p.stride[1], cc->p.padding[1], cc->p.dilation[1]);
}

static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

/* Runs BODY for every multiply of the convolution whose input pixel is not
 * padding, with xi, wi, yi the flat indices of the x, w and y elements. */
#define CONV_LOOP(cc, ys, BODY)                                                                    \
  do {                                                                                             \
    const int64_t *X_ = (cc)->x, *W_ = (cc)->w;                                                    \
    const nb_conv2d_params *P_ = &(cc)->p;                                                         \
    int64_t Cg_ = W_[1], Kg_ = W_[0] / P_->groups;                                                 \
    for (int64_t n = 0; n < (ys)[0]; n++)                                                          \
      for (int64_t k = 0; k < (ys)[1]; k++)                                                        \
        for (int64_t p = 0; p < (ys)[2]; p++)                                                      \
          for (int64_t q = 0; q < (ys)[3]; q++)                                                    \
            for (int64_t c = 0; c < Cg_; c++)                                                      \
              for (int64_t r = 0; r < W_[2]; r++)                                                  \
                for (int64_t s = 0; s < W_[3]; s++) {                                              \
                  int64_t ih = p * P_->stride[0] - P_->padding[0] + r * P_->dilation[0];           \
                  int64_t iw = q * P_->stride[1] - P_->padding[1] + s * P_->dilation[1];           \
                  if (ih < 0 || ih >= X_[2] || iw < 0 || iw >= X_[3]) continue;                    \
                  int64_t ci = (k / Kg_) * Cg_ + c;                                                \
                  int64_t xi = ((n * X_[1] + ci) * X_[2] + ih) * X_[3] + iw;                       \
                  int64_t wi = ((k * Cg_ + c) * W_[2] + r) * W_[3] + s;                            \
                  int64_t yi = ((n * (ys)[1] + k) * (ys)[2] + p) * (ys)[3] + q;                    \
                  BODY;                                                                            \
                }                                                                                  \
  } while (0)

/* Direct loops in double: y = conv(x, w), dx = d<y, dy>/dx, dw = d<y, dy>/dw. */
static void naive_conv(const conv_case *cc, const float *x, const float *w, float *y) {
  int64_t ys[4];
  conv_yshape(cc, ys);
  double *acc = calloc((size_t)numel4(ys) + 1, sizeof *acc);
  CONV_LOOP(cc, ys, acc[yi] += (double)x[xi] * w[wi]);
  for (int64_t i = 0; i < numel4(ys); i++) y[i] = (float)acc[i];
  free(acc);
}

static void naive_bwd_input(const conv_case *cc, const float *dy, const float *w, float *dx) {
  int64_t ys[4];
  conv_yshape(cc, ys);
  double *acc = calloc((size_t)numel4(cc->x) + 1, sizeof *acc);
  CONV_LOOP(cc, ys, acc[xi] += (double)dy[yi] * w[wi]);
  for (int64_t i = 0; i < numel4(cc->x); i++) dx[i] = (float)acc[i];
  free(acc);
}

static void naive_bwd_weight(const conv_case *cc, const float *x, const float *dy, float *dw) {
  int64_t ys[4];
  conv_yshape(cc, ys);
  double *acc = calloc((size_t)numel4(cc->w) + 1, sizeof *acc);
  CONV_LOOP(cc, ys, acc[wi] += (double)dy[yi] * x[xi]);
  for (int64_t i = 0; i < numel4(cc->w); i++) dw[i] = (float)acc[i];
  free(acc);
}

/* Compiles g with the given outputs, feeds inputs, runs once, and returns
 * each output in a malloc'ed buffer. Frees the graph. */
static void run_graph(nb_graph *g, int n_in, nb_tensor **ins, const float **data, int n_out,
                      nb_tensor **outs, float **res) {
  if (nb_graph_status(g)) fail_msg("graph build failed: %s", nb_graph_error(g));
  for (int i = 0; i < n_out; i++) nb_tensor_set_output(outs[i]);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  for (int i = 0; i < n_in; i++)
    TU_OK(nb_plan_set_input(plan, ins[i], data[i], (size_t)nb_tensor_numel(ins[i]) * 4));
  TU_OK(nb_plan_run(plan));
  for (int i = 0; i < n_out; i++) {
    int64_t n = nb_tensor_numel(outs[i]);
    res[i] = malloc((size_t)(n ? n : 1) * sizeof(float));
    TU_OK(nb_plan_get(plan, outs[i], res[i], (size_t)n * sizeof(float)));
  }
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

static nb_tensor *in4(nb_graph *g, const int64_t *shape) {
  return nb_input(g, NULL, NB_F32, 4, shape);
}

/* Runs conv2d, conv2d_backward_input and conv2d_backward_weight as three
 * direct ops in one plan: y = conv(x, w), dx = bwd_input(dy, w),
 * dw = bwd_weight(x, dy). */
static void run_conv_ops(const conv_case *cc, const float *x, const float *w, const float *dy,
                         float **y, float **dx, float **dw) {
  int64_t ys[4];
  conv_yshape(cc, ys);
  nb_graph *g = nb_graph_new();
  nb_tensor *ins[3] = {in4(g, cc->x), in4(g, cc->w), in4(g, ys)};
  nb_tensor *outs[3] = {
      nb_conv2d(g, ins[0], ins[1], &cc->p),
      nb_conv2d_backward_input(g, ins[2], ins[1], cc->x, &cc->p),
      nb_conv2d_backward_weight(g, ins[0], ins[2], cc->w, &cc->p),
  };
  const float *data[3] = {x, w, dy};
  float *res[3];
  run_graph(g, 3, ins, data, 3, outs, res);
  *y = res[0], *dx = res[1], *dw = res[2];
}

static conv_case make_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                           int64_t s, int sh, int sw, int ph, int pw, int dh, int dw, int groups) {
  conv_case cc = {{n, c, h, w}, {k, c / groups, r, s}, nb_conv2d_defaults()};
  cc.p.stride[0] = sh, cc.p.stride[1] = sw;
  cc.p.padding[0] = ph, cc.p.padding[1] = pw;
  cc.p.dilation[0] = dh, cc.p.dilation[1] = dw;
  cc.p.groups = groups;
  return cc;
}

/* ---- against PyTorch ---------------------------------------------------------------- */

static const char *const ref_cases[] = {
    "conv_basic",     "conv_stride2_pad1",     "conv_dilation2",
    "conv_groups2",   "conv_depthwise",        "conv_depthwise_mult2",
    "conv_1x1",       "conv_1x1_stride2",      "conv_1x1_pad1_groups",
    "conv_nonsquare", "conv_stride_gt_kernel",
};

static void get4(const tu_ref *ref, const char *cs, const char *name, const float **v,
                 int64_t *shape) {
  int nd;
  *v = tu_ref_get(ref, cs, name, &nd, shape, NULL);
  assert_int_equal(nd, 4);
}

static void test_conv_vs_torch(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("conv.txt");
  for (size_t ci = 0; ci < sizeof ref_cases / sizeof ref_cases[0]; ci++) {
    const char *cs = ref_cases[ci];
    int64_t np;
    const float *pv = tu_ref_get(ref, cs, "params", NULL, NULL, &np);
    assert_int_equal(np, 7);
    conv_case cc;
    cc.p = nb_conv2d_defaults();
    for (int i = 0; i < 2; i++) {
      cc.p.stride[i] = (int)pv[i];
      cc.p.padding[i] = (int)pv[2 + i];
      cc.p.dilation[i] = (int)pv[4 + i];
    }
    cc.p.groups = (int)pv[6];
    const float *x, *w, *r, *y_ref, *dx_ref, *dw_ref;
    int64_t rs[4], tmp[4];
    get4(ref, cs, "x", &x, cc.x);
    get4(ref, cs, "w", &w, cc.w);
    get4(ref, cs, "R", &r, rs);
    get4(ref, cs, "y", &y_ref, tmp);
    get4(ref, cs, "dx", &dx_ref, tmp);
    get4(ref, cs, "dw", &dw_ref, tmp);
    int64_t ys[4];
    conv_yshape(&cc, ys);
    for (int d = 0; d < 4; d++) assert_int_equal(ys[d], rs[d]);
    char what[160];

    /* the direct ops */
    float *y, *dx, *dw;
    run_conv_ops(&cc, x, w, r, &y, &dx, &dw);
    snprintf(what, sizeof what, "%s: y", cs);
    tu_assert_close(what, y, y_ref, (size_t)numel4(ys), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: conv2d_backward_input", cs);
    tu_assert_close(what, dx, dx_ref, (size_t)numel4(cc.x), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: conv2d_backward_weight", cs);
    tu_assert_close(what, dw, dw_ref, (size_t)numel4(cc.w), 1e-5, 1e-4);

    /* the same data through the direct loops */
    float *yn = malloc((size_t)numel4(ys) * 4), *dxn = malloc((size_t)numel4(cc.x) * 4);
    float *dwn = malloc((size_t)numel4(cc.w) * 4);
    naive_conv(&cc, x, w, yn);
    naive_bwd_input(&cc, r, w, dxn);
    naive_bwd_weight(&cc, x, r, dwn);
    snprintf(what, sizeof what, "%s: naive y vs torch", cs);
    tu_assert_close(what, yn, y_ref, (size_t)numel4(ys), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: naive dx vs torch", cs);
    tu_assert_close(what, dxn, dx_ref, (size_t)numel4(cc.x), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: naive dw vs torch", cs);
    tu_assert_close(what, dwn, dw_ref, (size_t)numel4(cc.w), 1e-5, 1e-4);
    free(yn), free(dxn), free(dwn);
    free(y), free(dx), free(dw);

    /* autodiff of sum(conv(x, w) * R) */
    nb_graph *g = nb_graph_new();
    nb_tensor *ins[2] = {in4(g, cc.x), in4(g, cc.w)};
    nb_tensor_set_requires_grad(ins[0], 1);
    nb_tensor_set_requires_grad(ins[1], 1);
    nb_tensor *yt = nb_conv2d(g, ins[0], ins[1], &cc.p);
    nb_tensor *rt = nb_constant(g, NB_F32, 4, ys, r);
    TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, yt, rt), 0, NULL, 0)));
    nb_tensor *outs[3] = {yt, nb_graph_grad(g, ins[0]), nb_graph_grad(g, ins[1])};
    assert_non_null(outs[1]);
    assert_non_null(outs[2]);
    const float *data[2] = {x, w};
    float *res[3];
    run_graph(g, 2, ins, data, 3, outs, res);
    snprintf(what, sizeof what, "%s: autodiff y", cs);
    tu_assert_close(what, res[0], y_ref, (size_t)numel4(ys), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: autodiff dx", cs);
    tu_assert_close(what, res[1], dx_ref, (size_t)numel4(cc.x), 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: autodiff dw", cs);
    tu_assert_close(what, res[2], dw_ref, (size_t)numel4(cc.w), 1e-5, 1e-4);
    for (int i = 0; i < 3; i++) free(res[i]);
  }
  tu_ref_free(ref);
}

/* ---- against the direct loop, random geometries ---------------------------------------- */

static void check_vs_naive(const char *name, const conv_case *cc, uint64_t seed) {
  int64_t ys[4];
  conv_yshape(cc, ys);
  float *x = tu_rand((size_t)numel4(cc->x), -1, 1, seed);
  float *w = tu_rand((size_t)numel4(cc->w), -1, 1, seed + 1);
  float *dy = tu_rand((size_t)numel4(ys), -1, 1, seed + 2);
  float *y, *dx, *dw;
  run_conv_ops(cc, x, w, dy, &y, &dx, &dw);
  float *yn = malloc((size_t)numel4(ys) * 4 + 4), *dxn = malloc((size_t)numel4(cc->x) * 4 + 4);
  float *dwn = malloc((size_t)numel4(cc->w) * 4 + 4);
  naive_conv(cc, x, w, yn);
  naive_bwd_input(cc, dy, w, dxn);
  naive_bwd_weight(cc, x, dy, dwn);
  char what[160];
  snprintf(what, sizeof what, "%s: conv2d", name);
  tu_assert_close(what, y, yn, (size_t)numel4(ys), 1e-4, 1e-4);
  snprintf(what, sizeof what, "%s: conv2d_backward_input", name);
  tu_assert_close(what, dx, dxn, (size_t)numel4(cc->x), 1e-4, 1e-4);
  snprintf(what, sizeof what, "%s: conv2d_backward_weight", name);
  tu_assert_close(what, dw, dwn, (size_t)numel4(cc->w), 1e-4, 1e-4);
  free(x), free(w), free(dy), free(y), free(dx), free(dw), free(yn), free(dxn), free(dwn);
}

static void test_conv_vs_naive(void **state) {
  (void)state;
  struct {
    const char *name;
    conv_case cc;
  } cases[] = {
      {"plain 3x3", make_case(2, 3, 6, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1)},
      {"stride 2 pad 1", make_case(2, 3, 8, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1)},
      {"dilation 2 stride 2", make_case(1, 2, 9, 9, 3, 3, 3, 2, 2, 1, 2, 2, 2, 1)},
      {"groups 3", make_case(2, 6, 5, 5, 9, 3, 3, 1, 1, 1, 1, 1, 1, 3)},
      {"depthwise stride 2", make_case(2, 4, 7, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4)},
      {"1x1", make_case(3, 5, 4, 3, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1)},
      {"1x1 groups", make_case(2, 6, 3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2)},
      {"1x1 dilated (still direct)", make_case(1, 3, 4, 4, 2, 1, 1, 1, 1, 0, 0, 3, 2, 1)},
      {"1x1 stride 2", make_case(1, 3, 5, 6, 2, 1, 1, 2, 2, 0, 0, 1, 1, 1)},
      {"1x1 stride 2, 1", make_case(1, 3, 5, 6, 2, 1, 1, 2, 1, 0, 0, 1, 1, 1)},
      {"1x1 pad 0, 1", make_case(1, 3, 3, 4, 2, 1, 1, 1, 1, 0, 1, 1, 1, 1)},
      {"non-square", make_case(2, 2, 6, 9, 3, 2, 5, 1, 2, 0, 2, 2, 1, 1)},
      {"stride > kernel", make_case(1, 2, 10, 9, 2, 2, 2, 4, 3, 0, 1, 1, 1, 1)},
      {"padding > kernel", make_case(1, 2, 3, 3, 2, 2, 2, 1, 1, 3, 2, 1, 1, 1)},
      {"kernel = input", make_case(2, 2, 4, 5, 3, 4, 5, 1, 1, 0, 0, 1, 1, 1)},
      {"1-pixel input", make_case(2, 3, 1, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1)},
      /* 60 images of 307 KB of columns each overflow the 16 MB chunk of
       * src/backend/cpu/cpu_conv.c: a chunk of 54 images, then one of 6 */
      {"several chunks", make_case(60, 2, 64, 64, 2, 3, 3, 1, 1, 0, 0, 1, 1, 2)},
      /* one image above 4M column elements: the OpenMP layout loops */
      {"parallel", make_case(1, 3, 400, 400, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_vs_naive(cases[i].name, &cases[i].cc, 100 + 10 * i);
}

/* Two convs of different sizes in one plan share the workspace; so do the
 * gradients of a two-layer stack. */
static nb_tensor *build_two_layers(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_conv2d_params p1 = nb_conv2d_defaults(), p2 = nb_conv2d_defaults();
  p1.padding[0] = p1.padding[1] = 1;
  p2.stride[0] = p2.stride[1] = 2;
  nb_tensor *h = nb_conv2d(g, x[0], x[1], &p1);
  return nb_conv2d(g, nb_tanh(g, h), x[2], &p2);
}

static void test_conv_two_layers(void **state) {
  (void)state;
  tu_input in[3] = {
      {.ndim = 4, .shape = {2, 2, 7, 7}, .lo = -1, .hi = 1, .seed = 11, .requires_grad = 1},
      {.ndim = 4, .shape = {3, 2, 3, 3}, .lo = -1, .hi = 1, .seed = 12, .requires_grad = 1},
      {.ndim = 4, .shape = {2, 3, 2, 2}, .lo = -1, .hi = 1, .seed = 13, .requires_grad = 1},
  };
  float *y;
  int64_t n;
  tu_forward(build_two_layers, NULL, 3, in, &y, &n, NULL, NULL);
  /* the same with the direct loop */
  conv_case c1 = make_case(2, 2, 7, 7, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  conv_case c2 = make_case(2, 3, 7, 7, 2, 2, 2, 2, 2, 0, 0, 1, 1, 1);
  float *x = tu_rand(2 * 2 * 7 * 7, -1, 1, 11), *w1 = tu_rand(3 * 2 * 9, -1, 1, 12);
  float *w2 = tu_rand(2 * 3 * 4, -1, 1, 13);
  float h[2 * 3 * 7 * 7], want[2 * 2 * 3 * 3];
  naive_conv(&c1, x, w1, h);
  for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) h[i] = tanhf(h[i]);
  naive_conv(&c2, h, w2, want);
  assert_int_equal(n, 2 * 2 * 3 * 3);
  tu_assert_close("two layers", y, want, (size_t)n, 1e-5, 1e-4);
  free(y), free(x), free(w1), free(w2);
  tu_gradcheck("two layers", build_two_layers, NULL, 3, in, 1e-2, 2e-3, 1e-2);
}

/* ---- finite differences ---------------------------------------------------------------- */

static nb_tensor *build_conv(nb_graph *g, nb_tensor **x, void *ctx) {
  return nb_conv2d(g, x[0], x[1], &((const conv_case *)ctx)->p);
}

static void gradcheck_conv(const char *name, conv_case cc) {
  tu_input in[2] = {
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 21, .requires_grad = 1},
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 22, .requires_grad = 1},
  };
  memcpy(in[0].shape, cc.x, sizeof cc.x);
  memcpy(in[1].shape, cc.w, sizeof cc.w);
  /* conv is linear in each input, so a large step costs no truncation error
   * and keeps f32 rounding of the outputs small against it */
  tu_gradcheck(name, build_conv, &cc, 2, in, 5e-2, 1e-3, 1e-3);
}

static void test_conv_gradcheck(void **state) {
  (void)state;
  gradcheck_conv("conv stride 2 pad 1", make_case(2, 2, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1));
  gradcheck_conv("conv dilation 2 groups 2", make_case(1, 4, 6, 6, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2));
  gradcheck_conv("conv 1x1", make_case(2, 3, 3, 3, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1));
  gradcheck_conv("conv non-square", make_case(1, 2, 5, 6, 2, 2, 3, 1, 2, 1, 0, 1, 2, 1));
  gradcheck_conv("conv depthwise", make_case(1, 3, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3));
}

/* Gradients of the gradient ops themselves (their backward rules live in
 * src/graph/ops_conv.c): x[0] = dy, x[1] = w, or x[0] = x, x[1] = dy. */
static nb_tensor *build_bwd_input(nb_graph *g, nb_tensor **x, void *ctx) {
  const conv_case *cc = ctx;
  return nb_conv2d_backward_input(g, x[0], x[1], cc->x, &cc->p);
}

static nb_tensor *build_bwd_weight(nb_graph *g, nb_tensor **x, void *ctx) {
  const conv_case *cc = ctx;
  return nb_conv2d_backward_weight(g, x[0], x[1], cc->w, &cc->p);
}

static void gradcheck_bwd_ops(const char *name, conv_case cc) {
  int64_t ys[4];
  conv_yshape(&cc, ys);
  char what[128];
  tu_input a[2] = {
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 31, .requires_grad = 1},
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 32, .requires_grad = 1},
  };
  memcpy(a[0].shape, ys, sizeof ys);
  memcpy(a[1].shape, cc.w, sizeof cc.w);
  snprintf(what, sizeof what, "%s: conv2d_backward_input", name);
  tu_gradcheck(what, build_bwd_input, &cc, 2, a, 5e-2, 1e-3, 1e-3);
  tu_input b[2] = {
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 33, .requires_grad = 1},
      {.ndim = 4, .lo = -1, .hi = 1, .seed = 34, .requires_grad = 1},
  };
  memcpy(b[0].shape, cc.x, sizeof cc.x);
  memcpy(b[1].shape, ys, sizeof ys);
  snprintf(what, sizeof what, "%s: conv2d_backward_weight", name);
  tu_gradcheck(what, build_bwd_weight, &cc, 2, b, 5e-2, 1e-3, 1e-3);
}

static void test_conv_bwd_ops_gradcheck(void **state) {
  (void)state;
  gradcheck_bwd_ops("stride 2 pad 1", make_case(2, 2, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1));
  gradcheck_bwd_ops("groups 2 dilation 2", make_case(1, 4, 6, 5, 2, 2, 2, 1, 1, 1, 0, 2, 1, 2));
  /* x height 6 with stride 2 leaves the last input row out of every window */
  gradcheck_bwd_ops("uncovered rows", make_case(1, 2, 6, 4, 2, 3, 1, 2, 1, 0, 0, 1, 1, 1));
  gradcheck_bwd_ops("1x1", make_case(2, 2, 3, 2, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1));
}

/* ---- empty tensors --------------------------------------------------------------------- */

static void check_empty(const char *name, conv_case cc) {
  int64_t ys[4];
  conv_yshape(&cc, ys);
  float *x = tu_rand((size_t)numel4(cc.x), -1, 1, 41),
        *w = tu_rand((size_t)numel4(cc.w), -1, 1, 42);
  float *dy = tu_rand((size_t)numel4(ys), -1, 1, 43);
  float *y, *dx, *dw;
  run_conv_ops(&cc, x, w, dy, &y, &dx, &dw);
  /* an empty batch or empty channel set sums nothing: zeros */
  float *zero = calloc((size_t)(numel4(cc.x) + numel4(cc.w) + numel4(ys)) + 1, sizeof *zero);
  char what[128];
  snprintf(what, sizeof what, "%s: y", name);
  tu_assert_close(what, y, zero, (size_t)numel4(ys), 0, 0);
  snprintf(what, sizeof what, "%s: dx", name);
  tu_assert_close(what, dx, zero, (size_t)numel4(cc.x), 0, 0);
  snprintf(what, sizeof what, "%s: dw", name);
  tu_assert_close(what, dw, zero, (size_t)numel4(cc.w), 0, 0);
  free(x), free(w), free(dy), free(y), free(dx), free(dw), free(zero);
}

static void test_conv_empty(void **state) {
  (void)state;
  check_empty("batch 0", make_case(0, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1));
  check_empty("batch 0 1x1", make_case(0, 2, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1));
  check_empty("0 input channels", make_case(2, 0, 4, 4, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1));
  check_empty("0 output channels", make_case(2, 2, 4, 4, 0, 3, 3, 1, 1, 0, 0, 1, 1, 1));
  check_empty("0 channels 1x1", make_case(1, 0, 3, 3, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1));
}

/* ---- shape errors ---------------------------------------------------------------------- */

/* Builds one op on inputs of the given shapes and expects NULL with a graph
 * error that names the op and contains each of the `needles`. */
typedef nb_tensor *(*bad_fn)(nb_graph *g, nb_tensor *a, nb_tensor *b, const conv_case *cc);

static void expect_error(bad_fn fn, const int64_t *a, const int64_t *b, const conv_case *cc,
                         nb_status want, const char *const *needles, int n) {
  nb_graph *g = nb_graph_new();
  nb_tensor *ta = in4(g, a), *tb = in4(g, b);
  nb_tensor *y = fn(g, ta, tb, cc);
  if (y) fail_msg("expected %s to fail", needles[0]);
  assert_int_equal(nb_graph_status(g), want);
  const char *msg = nb_graph_error(g);
  for (int i = 0; i < n; i++)
    if (!strstr(msg, needles[i])) fail_msg("error \"%s\" does not mention \"%s\"", msg, needles[i]);
  /* errors are sticky: later ops on the NULL result fail quietly */
  assert_null(nb_relu(g, y));
  assert_int_equal(nb_graph_status(g), want);
  nb_graph_free(g);
}

static nb_tensor *bad_conv(nb_graph *g, nb_tensor *a, nb_tensor *b, const conv_case *cc) {
  return nb_conv2d(g, a, b, &cc->p);
}

static nb_tensor *bad_bwd_input(nb_graph *g, nb_tensor *a, nb_tensor *b, const conv_case *cc) {
  return nb_conv2d_backward_input(g, a, b, cc->x, &cc->p);
}

static nb_tensor *bad_bwd_weight(nb_graph *g, nb_tensor *a, nb_tensor *b, const conv_case *cc) {
  return nb_conv2d_backward_weight(g, a, b, cc->w, &cc->p);
}

static void test_conv_bad_shapes(void **state) {
  (void)state;
  conv_case cc = make_case(1, 3, 5, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1);
  /* channel mismatch */
  expect_error(bad_conv, (int64_t[]){1, 3, 5, 5}, (int64_t[]){4, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 3, 5, 5]", "[4, 2, 3, 3]"}, 3);
  /* groups do not divide the input channels, or the output channels */
  cc.p.groups = 2;
  expect_error(bad_conv, (int64_t[]){1, 3, 5, 5}, (int64_t[]){4, 1, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 3, 5, 5]", "[4, 1, 3, 3]", "groups=2"}, 4);
  expect_error(bad_conv, (int64_t[]){1, 4, 5, 5}, (int64_t[]){3, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 4, 5, 5]", "[3, 2, 3, 3]", "groups=2"}, 4);
  cc.p.groups = 0;
  expect_error(bad_conv, (int64_t[]){1, 4, 5, 5}, (int64_t[]){4, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 4, 5, 5]", "groups=0"}, 3);
  /* kernel bigger than the input; with stride 2 the overhang is less than a
   * stride, which truncating division would have let through */
  cc = make_case(1, 1, 3, 3, 1, 4, 4, 1, 1, 0, 0, 1, 1, 1);
  expect_error(bad_conv, (int64_t[]){1, 1, 3, 3}, (int64_t[]){1, 1, 4, 4}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 1, 3, 3]", "[1, 1, 4, 4]"}, 3);
  cc.p.stride[0] = cc.p.stride[1] = 2;
  expect_error(bad_conv, (int64_t[]){1, 1, 3, 3}, (int64_t[]){1, 1, 4, 4}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 1, 3, 3]", "[1, 1, 4, 4]"}, 3);
  /* dilation makes a 3x3 kernel span 5 */
  cc = make_case(1, 1, 4, 4, 1, 3, 3, 1, 1, 0, 0, 2, 2, 1);
  expect_error(bad_conv, (int64_t[]){1, 1, 4, 4}, (int64_t[]){1, 1, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d", "[1, 1, 4, 4]"}, 2);
  /* bad stride */
  cc = make_case(1, 1, 4, 4, 1, 3, 3, 0, 1, 0, 0, 1, 1, 1);
  expect_error(bad_conv, (int64_t[]){1, 1, 4, 4}, (int64_t[]){1, 1, 3, 3}, &cc, NB_ERR_INVALID_ARG,
               (const char *[]){"conv2d", "stride"}, 2);
  /* wrong rank */
  {
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, NULL, NB_F32, 3, (int64_t[]){3, 5, 5});
    nb_tensor *w = in4(g, (int64_t[]){4, 3, 3, 3});
    assert_null(nb_conv2d(g, x, w, NULL));
    assert_non_null(strstr(nb_graph_error(g), "conv2d"));
    assert_non_null(strstr(nb_graph_error(g), "[3, 5, 5]"));
    nb_graph_free(g);
  }
  /* gradient ops: dy of the wrong shape, x shape missing or negative */
  cc = make_case(1, 2, 5, 5, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1);
  expect_error(bad_bwd_input, (int64_t[]){1, 3, 4, 3}, (int64_t[]){3, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d_backward_input", "[1, 3, 4, 3]", "[1, 3, 3, 3]"}, 3);
  expect_error(bad_bwd_weight, (int64_t[]){1, 2, 5, 5}, (int64_t[]){1, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d_backward_weight", "[1, 2, 3, 3]", "[1, 3, 3, 3]"}, 3);
  expect_error(bad_bwd_weight, (int64_t[]){1, 2, 5, 4}, (int64_t[]){1, 3, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d_backward_weight", "[1, 3, 3, 2]", "[1, 2, 5, 4]"}, 3);
  cc.x[2] = -5;
  expect_error(bad_bwd_input, (int64_t[]){1, 3, 3, 3}, (int64_t[]){3, 2, 3, 3}, &cc, NB_ERR_SHAPE,
               (const char *[]){"conv2d_backward_input", "[1, 2, -5, 5]"}, 2);
  {
    nb_graph *g = nb_graph_new();
    nb_tensor *dy = in4(g, (int64_t[]){1, 3, 3, 3}), *w = in4(g, (int64_t[]){3, 2, 3, 3});
    assert_null(nb_conv2d_backward_input(g, dy, w, NULL, NULL));
    assert_int_equal(nb_graph_status(g), NB_ERR_INVALID_ARG);
    assert_non_null(strstr(nb_graph_error(g), "conv2d_backward_input"));
    nb_graph_free(g);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_vs_torch),          cmocka_unit_test(test_conv_vs_naive),
      cmocka_unit_test(test_conv_two_layers),        cmocka_unit_test(test_conv_gradcheck),
      cmocka_unit_test(test_conv_bwd_ops_gradcheck), cmocka_unit_test(test_conv_empty),
      cmocka_unit_test(test_conv_bad_shapes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
