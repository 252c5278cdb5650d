/* max_pool2d, avg_pool2d and their gradients on the CPU: values against
 * PyTorch (tests/ref/conv.txt) and against direct loops written here,
 * PyTorch's tie, NaN and -inf rules, finite differences, empty batches, and
 * shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ---- helpers -------------------------------------------------------------------- */

typedef struct {
  int64_t x[4];
  nb_pool2d_params p;
  int max; /* 1 = max pool, 0 = avg pool */
} pool_case;

/* PyTorch's pooling_output_shape, written with floating-point floor/ceil
 * rather than the integer arithmetic of the library. */
static int64_t pool_dim(int64_t in, int k, int s, int pad, int ceil_mode) {
  double v = (double)(in + 2 * pad - k) / s;
  int64_t o = (int64_t)(ceil_mode ? ceil(v) : floor(v)) + 1;
  if (ceil_mode && (o - 1) * s >= in + pad) o--;
  return o;
}

static void pool_yshape(const pool_case *pc, int64_t *y) {
  const nb_pool2d_params *p = &pc->p;
  y[0] = pc->x[0];
  y[1] = pc->x[1];
  y[2] = pool_dim(pc->x[2], p->kernel[0], p->stride[0], p->padding[0], p->ceil_mode);
  y[3] = pool_dim(pc->x[3], p->kernel[1], p->stride[1], p->padding[1], p->ceil_mode);
}

static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

/* y = pool(x) and dx = d<y, dy>/dx by visiting every kernel offset of every
 * window. Max: the first maximum in row-major order wins, a NaN always wins,
 * padding never does. Avg: the divisor counts the window positions inside
 * the padded input (count_include_pad) or inside the input. */
static void naive_pool(const pool_case *pc, const float *x, const float *dy, float *y, float *dx) {
  int64_t ys[4];
  pool_yshape(pc, ys);
  const nb_pool2d_params *pp = &pc->p;
  int64_t H = pc->x[2], W = pc->x[3];
  double *gx = calloc((size_t)numel4(pc->x) + 1, sizeof *gx);
  for (int64_t pl = 0; pl < ys[0] * ys[1]; pl++)
    for (int64_t p = 0; p < ys[2]; p++)
      for (int64_t q = 0; q < ys[3]; q++) {
        int64_t yi = (pl * ys[2] + p) * ys[3] + q, best = -1, inside = 0, padded = 0;
        double sum = 0;
        float m = -INFINITY;
        for (int i = 0; i < pp->kernel[0]; i++)
          for (int j = 0; j < pp->kernel[1]; j++) {
            int64_t ih = p * pp->stride[0] - pp->padding[0] + i;
            int64_t iw = q * pp->stride[1] - pp->padding[1] + j;
            if (ih < H + pp->padding[0] && iw < W + pp->padding[1]) padded++;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            int64_t xi = (pl * H + ih) * W + iw;
            inside++;
            sum += x[xi];
            if (best < 0 || x[xi] > m || isnan(x[xi])) m = x[xi], best = xi;
          }
        if (pc->max) {
          y[yi] = m;
          if (dy) gx[best] += dy[yi];
        } else {
          double div = (double)(pp->count_include_pad ? padded : inside);
          y[yi] = (float)(sum / div);
          if (dy)
            for (int i = 0; i < pp->kernel[0]; i++)
              for (int j = 0; j < pp->kernel[1]; j++) {
                int64_t ih = p * pp->stride[0] - pp->padding[0] + i;
                int64_t iw = q * pp->stride[1] - pp->padding[1] + j;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  gx[(pl * H + ih) * W + iw] += dy[yi] / div;
              }
        }
      }
  if (dx)
    for (int64_t i = 0; i < numel4(pc->x); i++) dx[i] = (float)gx[i];
  free(gx);
}

static nb_tensor *pool_op(nb_graph *g, nb_tensor *x, const pool_case *pc) {
  return pc->max ? nb_max_pool2d(g, x, &pc->p) : nb_avg_pool2d(g, x, &pc->p);
}

/* y = pool(x) and dx = gradient of sum(y * R) through autodiff, in one plan. */
static void run_pool(const pool_case *pc, const float *x, const float *r, float **y, float **dx) {
  int64_t ys[4];
  pool_yshape(pc, ys);
  nb_graph *g = nb_graph_new();
  nb_tensor *xt = nb_input(g, NULL, NB_F32, 4, pc->x);
  nb_tensor_set_requires_grad(xt, 1);
  nb_tensor *yt = pool_op(g, xt, pc);
  if (!yt) fail_msg("pool build failed: %s", nb_graph_error(g));
  for (int d = 0; d < 4; d++) assert_int_equal(nb_tensor_shape(yt)[d], ys[d]);
  nb_tensor *rt = nb_constant(g, NB_F32, 4, ys, r);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, yt, rt), 0, NULL, 0)));
  nb_tensor *gx = nb_graph_grad(g, xt);
  assert_non_null(gx);
  nb_tensor_set_output(yt);
  nb_tensor_set_output(gx);
  if (nb_graph_status(g)) fail_msg("graph build failed: %s", nb_graph_error(g));
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  TU_OK(nb_plan_set_input(plan, xt, x, (size_t)numel4(pc->x) * sizeof(float)));
  TU_OK(nb_plan_run(plan));
  *y = malloc((size_t)numel4(ys) * sizeof(float) + 4);
  *dx = malloc((size_t)numel4(pc->x) * sizeof(float) + 4);
  TU_OK(nb_plan_get(plan, yt, *y, (size_t)numel4(ys) * sizeof(float)));
  TU_OK(nb_plan_get(plan, gx, *dx, (size_t)numel4(pc->x) * sizeof(float)));
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

static pool_case make_case(int max, int64_t n, int64_t c, int64_t h, int64_t w, int kh, int kw,
                           int sh, int sw, int ph, int pw, int ceil_mode, int count_pad) {
  pool_case pc = {{n, c, h, w}, nb_pool2d_defaults(kh, kw), max};
  pc.p.stride[0] = sh, pc.p.stride[1] = sw;
  pc.p.padding[0] = ph, pc.p.padding[1] = pw;
  pc.p.ceil_mode = ceil_mode;
  pc.p.count_include_pad = count_pad;
  return pc;
}

/* ---- against PyTorch ---------------------------------------------------------------- */

static const char *const ref_cases[] = {
    "max_basic",          "max_pad_stride2",       "max_overlap",
    "max_ceil",           "max_ceil_pad",          "max_nonsquare",
    "max_ties",           "max_ties_ceil",         "avg_basic",
    "avg_pad_include",    "avg_pad_exclude",       "avg_ceil_include",
    "avg_ceil_exclude",   "avg_ceil_nopad",        "avg_overlap",
    "avg_nonsquare_ceil", "avg_nonsquare_ceil_ex",
};

static void test_pool_vs_torch(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("conv.txt");
  for (size_t ci = 0; ci < sizeof ref_cases / sizeof ref_cases[0]; ci++) {
    const char *cs = ref_cases[ci];
    int64_t np, rs[4], tmp[4];
    int nd;
    const float *pv = tu_ref_get(ref, cs, "params", NULL, NULL, &np);
    assert_int_equal(np, 8);
    pool_case pc;
    pc.max = cs[0] == 'm';
    for (int i = 0; i < 2; i++) {
      pc.p.kernel[i] = (int)pv[i];
      pc.p.stride[i] = (int)pv[2 + i];
      pc.p.padding[i] = (int)pv[4 + i];
    }
    pc.p.ceil_mode = (int)pv[6];
    pc.p.count_include_pad = (int)pv[7];
    const float *x = tu_ref_get(ref, cs, "x", &nd, pc.x, NULL);
    const float *r = tu_ref_get(ref, cs, "R", &nd, rs, NULL);
    const float *y_ref = tu_ref_get(ref, cs, "y", &nd, tmp, NULL);
    const float *dx_ref = tu_ref_get(ref, cs, "dx", &nd, tmp, NULL);
    int64_t ys[4];
    pool_yshape(&pc, ys);
    for (int d = 0; d < 4; d++) assert_int_equal(ys[d], rs[d]);
    float *y, *dx;
    run_pool(&pc, x, r, &y, &dx);
    char what[160];
    snprintf(what, sizeof what, "%s: y", cs);
    tu_assert_close(what, y, y_ref, (size_t)numel4(ys), 1e-6, 1e-5);
    snprintf(what, sizeof what, "%s: dx", cs);
    tu_assert_close(what, dx, dx_ref, (size_t)numel4(pc.x), 1e-6, 1e-5);
    float *yn = malloc((size_t)numel4(ys) * 4), *dxn = malloc((size_t)numel4(pc.x) * 4);
    naive_pool(&pc, x, r, yn, dxn);
    snprintf(what, sizeof what, "%s: naive y vs torch", cs);
    tu_assert_close(what, yn, y_ref, (size_t)numel4(ys), 1e-6, 1e-5);
    snprintf(what, sizeof what, "%s: naive dx vs torch", cs);
    tu_assert_close(what, dxn, dx_ref, (size_t)numel4(pc.x), 1e-6, 1e-5);
    free(y), free(dx), free(yn), free(dxn);
  }
  tu_ref_free(ref);
}

/* PyTorch 1.13 on this input (checked by hand in Python): a NaN wins its
 * window, a window of -inf sends its gradient to its first element. */
static void test_maxpool_nan_inf(void **state) {
  (void)state;
  const float nan = NAN, inf = INFINITY;
  const float x[16] = {1, nan, nan, 2, 3, 2, 5, -inf, -inf, -inf, 0, 0, -inf, -inf, 0, 0};
  const float want_y[4] = {nan, nan, -inf, 0};
  const float want_dx[16] = {0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0};
  const float ones[4] = {1, 1, 1, 1};
  pool_case pc = make_case(1, 1, 1, 4, 4, 2, 2, 2, 2, 0, 0, 0, 1);
  float *y, *dx;
  run_pool(&pc, x, ones, &y, &dx);
  tu_assert_close("nan/inf y", y, want_y, 4, 0, 0);
  tu_assert_close("nan/inf dx", dx, want_dx, 16, 0, 0);
  free(y), free(dx);
  /* all -inf with padding: each window's first real element gets the gradient */
  float xi[9], want_dx2[9] = {1, 1, 0, 1, 1, 0, 0, 0, 0};
  for (int i = 0; i < 9; i++) xi[i] = -inf;
  pc = make_case(1, 1, 1, 3, 3, 2, 2, 2, 2, 1, 1, 0, 1);
  run_pool(&pc, xi, ones, &y, &dx);
  const float minf4[4] = {-inf, -inf, -inf, -inf};
  tu_assert_close("-inf y", y, minf4, 4, 0, 0);
  tu_assert_close("-inf dx", dx, want_dx2, 9, 0, 0);
  free(y), free(dx);
}

/* ---- against the direct loops, random geometries ------------------------------------- */

static void test_pool_vs_naive(void **state) {
  (void)state;
  struct {
    const char *name;
    int ties;
    pool_case pc;
  } cases[] = {
      {"max 2x2", 0, make_case(1, 2, 3, 6, 7, 2, 2, 2, 2, 0, 0, 0, 1)},
      {"max 3x3 s2 p1", 0, make_case(1, 2, 2, 9, 8, 3, 3, 2, 2, 1, 1, 0, 1)},
      {"max ceil", 0, make_case(1, 1, 3, 8, 9, 3, 2, 2, 2, 1, 0, 1, 1)},
      {"max stride > kernel", 0, make_case(1, 2, 2, 9, 9, 2, 2, 3, 3, 0, 1, 1, 1)},
      {"max window past input (ceil)", 0, make_case(1, 1, 2, 2, 2, 3, 3, 2, 2, 0, 0, 1, 1)},
      {"max window = input", 0, make_case(1, 2, 2, 4, 3, 4, 3, 1, 1, 0, 0, 0, 1)},
      {"max ties overlap", 1, make_case(1, 2, 2, 7, 6, 3, 3, 1, 2, 1, 1, 1, 1)},
      {"avg include pad", 0, make_case(0, 2, 3, 7, 6, 3, 3, 2, 2, 1, 1, 0, 1)},
      {"avg exclude pad", 0, make_case(0, 2, 3, 7, 6, 3, 3, 2, 2, 1, 1, 0, 0)},
      {"avg ceil include", 0, make_case(0, 1, 2, 8, 6, 3, 4, 2, 3, 1, 2, 1, 1)},
      {"avg ceil exclude", 0, make_case(0, 1, 2, 8, 6, 3, 4, 2, 3, 1, 2, 1, 0)},
      {"avg stride > kernel", 0, make_case(0, 1, 2, 9, 9, 2, 2, 3, 3, 1, 1, 1, 1)},
      {"avg window past input", 0, make_case(0, 1, 2, 2, 2, 3, 3, 2, 2, 0, 0, 1, 1)},
      {"avg window past input ex", 0, make_case(0, 1, 2, 2, 2, 3, 3, 2, 2, 0, 0, 1, 0)},
      /* big enough for the OpenMP paths */
      {"max parallel", 0, make_case(1, 2, 8, 32, 32, 3, 3, 2, 2, 1, 1, 0, 1)},
      {"avg parallel", 0, make_case(0, 2, 8, 32, 32, 3, 3, 2, 2, 1, 1, 1, 0)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const pool_case *pc = &cases[i].pc;
    int64_t ys[4], nx = numel4(pc->x);
    pool_yshape(pc, ys);
    float *x = tu_rand((size_t)nx, -1, 1, 200 + i);
    if (cases[i].ties)
      for (int64_t k = 0; k < nx; k++) x[k] = floorf(x[k] * 1.5f);
    float *r = tu_rand((size_t)numel4(ys), -1, 1, 300 + i);
    float *y, *dx;
    run_pool(pc, x, r, &y, &dx);
    float *yn = malloc((size_t)numel4(ys) * 4), *dxn = malloc((size_t)nx * 4);
    naive_pool(pc, x, r, yn, dxn);
    char what[160];
    snprintf(what, sizeof what, "%s: y", cases[i].name);
    tu_assert_close(what, y, yn, (size_t)numel4(ys), 1e-6, 1e-5);
    snprintf(what, sizeof what, "%s: dx", cases[i].name);
    tu_assert_close(what, dx, dxn, (size_t)nx, 1e-6, 1e-5);
    free(x), free(r), free(y), free(dx), free(yn), free(dxn);
  }
}

/* ---- finite differences ---------------------------------------------------------------- */

static nb_tensor *build_pool(nb_graph *g, nb_tensor **x, void *ctx) {
  return pool_op(g, x[0], ctx);
}

/* Distinct values 0.05 apart in a shuffled order: no ties, and a step of
 * 0.01 cannot change which element is a window's maximum. */
static float *distinct_values(int64_t n, uint64_t seed) {
  float *v = malloc((size_t)n * sizeof *v);
  int64_t *perm = malloc((size_t)n * sizeof *perm);
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  uint64_t s = seed;
  for (int64_t i = n - 1; i > 0; i--) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    int64_t j = (int64_t)((s >> 33) % (uint64_t)(i + 1));
    int64_t t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  for (int64_t i = 0; i < n; i++) v[i] = 0.05f * (float)(perm[i] - n / 2);
  free(perm);
  return v;
}

static void gradcheck_pool(const char *name, pool_case pc) {
  tu_input in = {.ndim = 4, .lo = -1, .hi = 1, .seed = 51, .requires_grad = 1};
  memcpy(in.shape, pc.x, sizeof pc.x);
  float *v = NULL;
  if (pc.max) in.data = v = distinct_values(numel4(pc.x), 52);
  /* both ops are linear wherever the argmax is fixed */
  tu_gradcheck(name, build_pool, &pc, 1, &in, pc.max ? 1e-2 : 5e-2, 1e-4, 1e-3);
  free(v);
}

static void test_pool_gradcheck(void **state) {
  (void)state;
  gradcheck_pool("max 2x2", make_case(1, 2, 2, 4, 4, 2, 2, 2, 2, 0, 0, 0, 1));
  gradcheck_pool("max 3x3 s1 p1 overlap", make_case(1, 1, 2, 5, 5, 3, 3, 1, 1, 1, 1, 0, 1));
  gradcheck_pool("max ceil non-square", make_case(1, 1, 2, 6, 5, 3, 2, 2, 1, 1, 1, 1, 1));
  gradcheck_pool("avg include pad ceil", make_case(0, 1, 2, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1));
  gradcheck_pool("avg exclude pad ceil", make_case(0, 1, 2, 6, 6, 3, 3, 2, 2, 1, 1, 1, 0));
  gradcheck_pool("avg overlap non-square", make_case(0, 2, 1, 5, 4, 2, 3, 1, 1, 1, 1, 0, 1));
}

/* avg_pool2d_backward is itself differentiable (its gradient is avg_pool2d,
 * see src/graph/ops_conv.c): x[0] is the pool input, x[1] the pool's dy. */
static nb_tensor *build_avg_bwd(nb_graph *g, nb_tensor **x, void *ctx) {
  nb_tensor *y = pool_op(g, x[0], ctx);
  if (nb_graph_backward(g, nb_sum(g, nb_mul(g, y, x[1]), 0, NULL, 0))) return NULL;
  return nb_graph_grad(g, x[0]);
}

static void test_avgpool_backward_gradcheck(void **state) {
  (void)state;
  pool_case cases[] = {
      make_case(0, 1, 2, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1),
      make_case(0, 2, 1, 7, 5, 3, 2, 2, 1, 1, 0, 1, 0),
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t ys[4];
    pool_yshape(&cases[i], ys);
    tu_input in[2] = {
        {.ndim = 4, .lo = -1, .hi = 1, .seed = 61, .requires_grad = 1},
        {.ndim = 4, .lo = -1, .hi = 1, .seed = 62, .requires_grad = 1},
    };
    memcpy(in[0].shape, cases[i].x, sizeof ys);
    memcpy(in[1].shape, ys, sizeof ys);
    tu_gradcheck("avg_pool2d_backward", build_avg_bwd, &cases[i], 2, in, 5e-2, 1e-4, 1e-3);
  }
}

/* ---- empty batches ------------------------------------------------------------------- */

static void test_pool_empty(void **state) {
  (void)state;
  pool_case cases[] = {
      make_case(1, 0, 2, 4, 4, 2, 2, 2, 2, 0, 0, 0, 1),
      make_case(0, 0, 2, 5, 5, 3, 3, 2, 2, 1, 1, 1, 1),
      make_case(1, 2, 0, 4, 4, 2, 2, 2, 2, 0, 0, 0, 1),
      make_case(0, 2, 0, 4, 4, 3, 3, 1, 1, 1, 1, 0, 0),
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t ys[4];
    pool_yshape(&cases[i], ys);
    assert_int_equal(numel4(ys), 0);
    float dummy = 0, *y, *dx;
    run_pool(&cases[i], &dummy, &dummy, &y, &dx);
    free(y), free(dx);
  }
}

/* ---- shape errors ---------------------------------------------------------------------- */

static void expect_error(const pool_case *pc, int ndim, nb_status want, const char *const *needles,
                         int n) {
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, NULL, NB_F32, ndim, pc->x);
  nb_tensor *y = pool_op(g, x, pc);
  if (y) fail_msg("expected %s to fail", needles[0]);
  assert_int_equal(nb_graph_status(g), want);
  const char *msg = nb_graph_error(g);
  for (int i = 0; i < n; i++)
    if (!strstr(msg, needles[i])) fail_msg("error \"%s\" does not mention \"%s\"", msg, needles[i]);
  assert_null(nb_relu(g, y));
  nb_graph_free(g);
}

static void test_pool_bad_shapes(void **state) {
  (void)state;
  /* padding more than half the kernel */
  pool_case pc = make_case(1, 1, 2, 5, 5, 3, 3, 1, 1, 2, 1, 0, 1);
  expect_error(&pc, 4, NB_ERR_INVALID_ARG,
               (const char *[]){"max_pool2d", "[1, 2, 5, 5]", "padding 2", "kernel 3"}, 4);
  pc.max = 0;
  pc.p.padding[0] = 1, pc.p.padding[1] = 2;
  expect_error(&pc, 4, NB_ERR_INVALID_ARG,
               (const char *[]){"avg_pool2d", "[1, 2, 5, 5]", "padding 2", "kernel 3"}, 4);
  /* kernel bigger than the input; with stride 2 the overhang is less than a
   * stride, which truncating division would have let through */
  pc = make_case(1, 1, 1, 2, 2, 3, 3, 2, 2, 0, 0, 0, 1);
  expect_error(&pc, 4, NB_ERR_SHAPE, (const char *[]){"max_pool2d", "[1, 1, 2, 2]", "3x3"}, 3);
  pc = make_case(0, 1, 1, 2, 2, 3, 3, 1, 1, 0, 0, 1, 1);
  expect_error(&pc, 4, NB_ERR_SHAPE, (const char *[]){"avg_pool2d", "[1, 1, 2, 2]", "3x3"}, 3);
  pc = make_case(0, 1, 1, 4, 0, 1, 1, 1, 1, 0, 0, 0, 1);
  expect_error(&pc, 4, NB_ERR_SHAPE, (const char *[]){"avg_pool2d", "[1, 1, 4, 0]"}, 2);
  /* bad kernel and stride */
  pc = make_case(1, 1, 1, 4, 4, 0, 2, 1, 1, 0, 0, 0, 1);
  expect_error(&pc, 4, NB_ERR_INVALID_ARG, (const char *[]){"max_pool2d", "kernel (0, 2)"}, 2);
  pc = make_case(1, 1, 1, 4, 4, 2, 2, -1, 1, 0, 0, 0, 1);
  expect_error(&pc, 4, NB_ERR_INVALID_ARG, (const char *[]){"max_pool2d", "stride (-1, 1)"}, 2);
  /* wrong rank */
  pc = make_case(1, 2, 5, 5, 0, 2, 2, 2, 2, 0, 0, 0, 1);
  expect_error(&pc, 3, NB_ERR_SHAPE, (const char *[]){"max_pool2d", "[2, 5, 5]"}, 2);
  /* NULL params */
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, NULL, NB_F32, 4, (int64_t[]){1, 1, 4, 4});
  assert_null(nb_avg_pool2d(g, x, NULL));
  assert_int_equal(nb_graph_status(g), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_graph_error(g), "avg_pool2d"));
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_vs_torch),
      cmocka_unit_test(test_maxpool_nan_inf),
      cmocka_unit_test(test_pool_vs_naive),
      cmocka_unit_test(test_pool_gradcheck),
      cmocka_unit_test(test_avgpool_backward_gradcheck),
      cmocka_unit_test(test_pool_empty),
      cmocka_unit_test(test_pool_bad_shapes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
