/* The gradient of a matmul operand shared by every batch (a Linear layer's
 * weight W applied to x of shape [..., T, C]): autodiff builds it as one
 * GEMM x2^T dy2 over the batches' rows laid end to end when x and dy are
 * contiguous (ops_linalg.c), and as batched products summed over the batch
 * otherwise. Both are checked against a naive double loop, against the
 * batched formulation built by hand, and against finite differences, for
 * 3-d and 4-d x, a transposed weight and a weight with leading 1 dims; and
 * the one-GEMM form is checked to be the one taken. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct mm_case {
  const char *name;
  int xnd;
  int64_t xshape[4]; /* x as stored */
  int wnd;
  int64_t wshape[4]; /* W as stored */
  int x_tbatch;      /* x stored [T, B, C] and read transposed: not contiguous */
  int w_t;           /* W stored [N, K] and read transposed */
  int merged;        /* 1 if the one-GEMM gradient must be taken */
} mm_case;

static const mm_case cases[] = {
    {"3d", 3, {4, 5, 6}, 2, {6, 3}, 0, 0, 1},
    {"4d", 4, {2, 3, 5, 6}, 2, {6, 7}, 0, 0, 1},
    {"3d_wt", 3, {4, 5, 6}, 2, {3, 6}, 0, 1, 1},
    {"4d_w1", 4, {2, 3, 5, 6}, 3, {1, 6, 4}, 0, 0, 1},
    /* x read through a batch transpose: its rows do not follow each other */
    {"3d_xt", 3, {5, 4, 6}, 2, {6, 3}, 1, 0, 0},
};

/* The matmul as the forward pass reads it, on stored x and W. */
static nb_tensor *forward(nb_graph *g, const mm_case *c, nb_tensor *x, nb_tensor *w) {
  if (c->x_tbatch) x = nb_transpose(g, x, 0, 1);
  if (c->w_t) w = nb_transpose(g, w, -1, -2);
  return nb_matmul(g, x, w);
}

typedef struct run_out {
  float *dw_auto, *dw_old, *dx_auto;
  int rank2_matmuls; /* matmul nodes with a 2-d output in the whole graph */
} run_out;

/* Runs loss = sum(y * dy) backward and evaluates dW and dx from autodiff,
 * and dW from the batched formulation sum_b x[b]^T dy[b] built by hand. */
static void run_case(const mm_case *c, const float *xv, const float *wv, const float *dyv,
                     run_out *o) {
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, c->xnd, c->xshape);
  nb_tensor *w = nb_input(g, "w", NB_F32, c->wnd, c->wshape);
  nb_tensor_set_requires_grad(x, 1);
  nb_tensor_set_requires_grad(w, 1);
  nb_tensor *y = forward(g, c, x, w);
  assert_non_null(y);
  nb_tensor *dy = nb_constant(g, NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y), dyv);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, y, dy), 0, NULL, 0)));
  nb_tensor *dw = nb_graph_grad(g, w), *dx = nb_graph_grad(g, x);
  assert_non_null(dw);
  assert_non_null(dx);
  o->rank2_matmuls = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    o->rank2_matmuls += !strcmp(nb_tensor_op_name(t), "matmul") && nb_tensor_ndim(t) == 2;
  }
  /* the batched formulation: [..., K, N] products, summed over the batch */
  nb_tensor *xr = c->x_tbatch ? nb_transpose(g, x, 0, 1) : x;
  nb_tensor *prod = nb_matmul(g, nb_transpose(g, xr, -1, -2), dy);
  int nb = nb_tensor_ndim(prod) - 2, axes[NB_MAX_DIMS];
  for (int i = 0; i < nb; i++) axes[i] = i;
  nb_tensor *old = nb_sum(g, prod, nb, axes, 0);
  if (c->w_t) old = nb_transpose(g, old, 0, 1);
  old = nb_contiguous(g, old);
  nb_tensor_set_output(dw);
  nb_tensor_set_output(dx);
  nb_tensor_set_output(old);
  if (nb_graph_status(g)) fail_msg("%s: graph build failed: %s", c->name, nb_graph_error(g));
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_plan *p = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_plan_set_input(p, x, xv, (size_t)nb_tensor_numel(x) * sizeof(float)));
  TU_OK(nb_plan_set_input(p, w, wv, (size_t)nb_tensor_numel(w) * sizeof(float)));
  TU_OK(nb_plan_run(p));
  size_t nw = (size_t)nb_tensor_numel(w), nx = (size_t)nb_tensor_numel(x);
  o->dw_auto = malloc(nw * sizeof(float));
  o->dw_old = malloc(nw * sizeof(float));
  o->dx_auto = malloc(nx * sizeof(float));
  TU_OK(nb_plan_get(p, dw, o->dw_auto, nw * sizeof(float)));
  TU_OK(nb_plan_get(p, old, o->dw_old, nw * sizeof(float)));
  TU_OK(nb_plan_get(p, dx, o->dx_auto, nx * sizeof(float)));
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* x as the forward pass reads it, element (b, m, k) of the batches laid end to end. */
static double x_at(const mm_case *c, const float *xv, int64_t b, int64_t m, int64_t k) {
  int64_t C = c->xshape[c->xnd - 1];
  if (c->x_tbatch) { /* stored [M, B, C] */
    int64_t B = c->xshape[1];
    return xv[(m * B + b) * C + k];
  }
  int64_t M = c->xshape[c->xnd - 2];
  return xv[(b * M + m) * C + k];
}

static void test_shared_weight_grad(void **state) {
  (void)state;
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const mm_case *c = &cases[ci];
    int64_t K = c->xshape[c->xnd - 1];
    int64_t N = c->w_t ? c->wshape[c->wnd - 2] : c->wshape[c->wnd - 1];
    int64_t M = c->x_tbatch ? c->xshape[0] : c->xshape[c->xnd - 2];
    int64_t nx = 1;
    for (int i = 0; i < c->xnd; i++) nx *= c->xshape[i];
    int64_t B = nx / (M * K), nw = K * N;
    float *xv = tu_rand((size_t)nx, -1.0f, 1.0f, 11 + ci);
    float *wv = tu_rand((size_t)nw, -1.0f, 1.0f, 23 + ci);
    float *dyv = tu_rand((size_t)(B * M * N), -1.0f, 1.0f, 37 + ci);
    run_out o;
    run_case(c, xv, wv, dyv, &o);
    int want = c->merged ? 1 : 0;
    if (o.rank2_matmuls != want)
      fail_msg("%s: %d rank-2 matmuls in the graph, want %d", c->name, o.rank2_matmuls, want);
    /* naive dW in double, indexed as W is stored */
    float *ref = malloc((size_t)nw * sizeof(float));
    for (int64_t k = 0; k < K; k++)
      for (int64_t n = 0; n < N; n++) {
        double s = 0;
        for (int64_t b = 0; b < B; b++)
          for (int64_t m = 0; m < M; m++)
            s += x_at(c, xv, b, m, k) * (double)dyv[(b * M + m) * N + n];
        ref[c->w_t ? n * K + k : k * N + n] = (float)s;
      }
    tu_assert_close(c->name, o.dw_auto, ref, (size_t)nw, 1e-5, 1e-5);
    tu_assert_close(c->name, o.dw_auto, o.dw_old, (size_t)nw, 1e-5, 1e-5);
    /* dx = dy W^T, unchanged by the shared-weight path: naive too */
    for (int64_t b = 0; b < B; b++)
      for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
          double s = 0;
          for (int64_t n = 0; n < N; n++)
            s += (double)dyv[(b * M + m) * N + n] * wv[c->w_t ? n * K + k : k * N + n];
          int64_t at = c->x_tbatch ? (m * B + b) * K + k : (b * M + m) * K + k;
          if (fabs(o.dx_auto[at] - s) > 1e-5 + 1e-5 * fabs(s))
            fail_msg("%s: dx[%lld] = %g, want %g", c->name, (long long)at, o.dx_auto[at], s);
        }
    free(ref);
    free(o.dw_auto);
    free(o.dw_old);
    free(o.dx_auto);
    free(xv);
    free(wv);
    free(dyv);
  }
}

static nb_tensor *build_fd(nb_graph *g, nb_tensor **x, void *ctx) {
  return forward(g, ctx, x[0], x[1]);
}

static void test_shared_weight_gradcheck(void **state) {
  (void)state;
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const mm_case *c = &cases[ci];
    tu_input in[2] = {0};
    in[0].ndim = c->xnd;
    memcpy(in[0].shape, c->xshape, sizeof c->xshape);
    in[1].ndim = c->wnd;
    memcpy(in[1].shape, c->wshape, sizeof c->wshape);
    for (int i = 0; i < 2; i++) {
      in[i].lo = -1.0f;
      in[i].hi = 1.0f;
      in[i].seed = 5 + ci * 2 + (uint64_t)i;
      in[i].requires_grad = 1;
      in[i].dtype = NB_F32;
    }
    tu_gradcheck(c->name, build_fd, (void *)c, 2, in, 1e-3, 2e-3, 1e-2);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shared_weight_grad),
      cmocka_unit_test(test_shared_weight_gradcheck),
  };
  return cmocka_run_group_tests_name("matmul_shared_grad", tests, NULL, NULL);
}
