/* Reductions over any axes with keepdim: sum, mean, max, min, var,
 * logsumexp, argmax; values and gradients against PyTorch
 * (tests/ref/ops.txt), finite differences, strided views, size-0 axes and
 * bad axes. */
#include "ops_check.h"

typedef struct {
  const char *op; /* sum mean max min var lse argmax */
  int naxes;
  int axes[3];
  int keepdim;
  int correction;   /* var */
  const char *view; /* NULL, "t", "s", "b", "perm", "s_b" */
} red_ctx;

static nb_tensor *apply_view(nb_graph *g, const char *view, nb_tensor *x) {
  if (!view) return x;
  if (!strcmp(view, "t")) return nb_transpose(g, x, 0, 1);
  if (!strcmp(view, "s")) return nb_slice(g, x, 1, 0, 8, 2);
  if (!strcmp(view, "b")) return nb_broadcast_to(g, x, 2, (int64_t[]){4, 3});
  if (!strcmp(view, "perm")) return nb_permute(g, x, (int[]){2, 0, 1});
  if (!strcmp(view, "s_b"))
    return nb_broadcast_to(g, nb_slice(g, x, 0, 1, 4, 2), 3, (int64_t[]){2, 2, 5});
  fail_msg("unknown view %s", view);
  return NULL;
}

static nb_tensor *apply_reduce(nb_graph *g, const red_ctx *c, nb_tensor *x) {
  const int *axes = c->naxes ? c->axes : NULL;
  if (!strcmp(c->op, "sum")) return nb_sum(g, x, c->naxes, axes, c->keepdim);
  if (!strcmp(c->op, "mean")) return nb_mean(g, x, c->naxes, axes, c->keepdim);
  if (!strcmp(c->op, "max")) return nb_max(g, x, c->naxes, axes, c->keepdim);
  if (!strcmp(c->op, "min")) return nb_min(g, x, c->naxes, axes, c->keepdim);
  if (!strcmp(c->op, "var")) return nb_var(g, x, c->naxes, axes, c->correction, c->keepdim);
  if (!strcmp(c->op, "lse")) return nb_logsumexp(g, x, c->naxes, axes, c->keepdim);
  if (!strcmp(c->op, "argmax")) return nb_argmax(g, x, c->axes[0], c->keepdim);
  fail_msg("unknown reduction %s", c->op);
  return NULL;
}

static nb_tensor *build_reduce(nb_graph *g, nb_tensor **x, void *ctx) {
  const red_ctx *c = ctx;
  return apply_reduce(g, c, apply_view(g, c->view, x[0]));
}

#define VAL 1e-5, 1e-4
#define FD  1e-3, 2e-3, 1e-2
#define R(name, ...)                                                                               \
  { name, "g", build_reduce, &(red_ctx){__VA_ARGS__}, VAL, 1, FD, NULL }
/* no finite differences: ties (a one-sided step sees 1/2, not 1/k) or big offsets */
#define R_NOFD(name, ...)                                                                          \
  { name, "g", build_reduce, &(red_ctx){__VA_ARGS__}, VAL, 1, 0, 0, 0, NULL }
#define R_VAL(name, ...)                                                                           \
  { name, "f", build_reduce, &(red_ctx){__VA_ARGS__}, VAL, 0, 0, 0, 0, NULL }

static const oc_case cases[] = {
    R("sum_all", .op = "sum"),
    R("sum_all_k", .op = "sum", .keepdim = 1),
    R("sum_1", .op = "sum", .naxes = 1, .axes = {1}),
    R("sum_02_k", .op = "sum", .naxes = 2, .axes = {0, 2}, .keepdim = 1),
    R("sum_m1", .op = "sum", .naxes = 1, .axes = {-1}),
    R("mean_all", .op = "mean"),
    R("mean_1_k", .op = "mean", .naxes = 1, .axes = {1}, .keepdim = 1),
    R("mean_02", .op = "mean", .naxes = 2, .axes = {0, 2}),
    R("max_all", .op = "max"),
    R("max_1", .op = "max", .naxes = 1, .axes = {1}),
    R("max_02_k", .op = "max", .naxes = 2, .axes = {0, 2}, .keepdim = 1),
    R("min_m1", .op = "min", .naxes = 1, .axes = {-1}),
    R("min_01", .op = "min", .naxes = 2, .axes = {0, 1}),
    R_NOFD("max_tie_1", .op = "max", .naxes = 1, .axes = {1}),
    R_NOFD("min_tie_all", .op = "min"),
    R_NOFD("max_tie_02_k", .op = "max", .naxes = 2, .axes = {0, 2}, .keepdim = 1),
    R("var_1_c1", .op = "var", .naxes = 1, .axes = {1}, .correction = 1),
    R("var_02_c0_k", .op = "var", .naxes = 2, .axes = {0, 2}, .keepdim = 1),
    R("var_all_c1", .op = "var", .correction = 1),
    R("var_m1_c0", .op = "var", .naxes = 1, .axes = {-1}),
    R("lse_1", .op = "lse", .naxes = 1, .axes = {1}),
    R("lse_02_k", .op = "lse", .naxes = 2, .axes = {0, 2}, .keepdim = 1),
    R("lse_all", .op = "lse"),
    R_NOFD("lse_big", .op = "lse", .naxes = 1, .axes = {-1}),
    R_NOFD("lse_small", .op = "lse", .naxes = 1, .axes = {-1}),
    R_VAL("lse_neginf", .op = "lse", .naxes = 1, .axes = {1}),
    R_VAL("argmax_0", .op = "argmax", .naxes = 1, .axes = {0}),
    R_VAL("argmax_m1_k", .op = "argmax", .naxes = 1, .axes = {-1}, .keepdim = 1),
    R_VAL("argmax_tie_1", .op = "argmax", .naxes = 1, .axes = {1}),
    R("sum_t", .op = "sum", .naxes = 1, .axes = {0}, .view = "t"),
    R("max_s", .op = "max", .naxes = 1, .axes = {1}, .view = "s"),
    /* every element of the broadcast is a tie; the shares add back up to 1 */
    R("max_b", .op = "max", .naxes = 1, .axes = {0}, .view = "b"),
    R("var_t", .op = "var", .naxes = 2, .axes = {1, 2}, .correction = 1, .view = "perm"),
    R("mean_s_b", .op = "mean", .naxes = 2, .axes = {0, 2}, .view = "s_b"),
    R_VAL("argmax_t", .op = "argmax", .naxes = 1, .axes = {1}, .view = "t"),
    R("lse_t", .op = "lse", .naxes = 1, .axes = {0}, .view = "t"),
};

/* ---- large strided reductions (parallel path) against naive loops ------------------ */

static void test_large(void **state) {
  (void)state;
  enum { A = 64, B = 33, C = 40 };
  float *X = tu_rand(A * B * C, -1, 1, 11);
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, (int64_t[]){A, B, C});
  nb_tensor *p = nb_permute(g, x, (int[]){2, 0, 1}); /* [C, A, B] */
  nb_tensor *s = nb_sum(g, p, 2, (int[]){0, 1}, 0);  /* over C and A -> [B] */
  nb_tensor *m = nb_max(g, p, 1, (int[]){2}, 1);     /* over B -> [C, A, 1] */
  nb_tensor *am = nb_argmax(g, p, 1, 0);             /* over A -> [C, B] */
  nb_tensor_set_output(s);
  nb_tensor_set_output(m);
  nb_tensor_set_output(am);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, x, X, sizeof(float) * A * B * C));
  TU_OK(nb_plan_run(op.p));
  float *sv = malloc(B * sizeof *sv), *mv = malloc(C * A * sizeof *mv);
  int64_t *av = malloc(C * B * sizeof *av);
  TU_OK(nb_plan_get(op.p, s, sv, B * sizeof *sv));
  TU_OK(nb_plan_get(op.p, m, mv, C * A * sizeof *mv));
  TU_OK(nb_plan_get(op.p, am, av, C * B * sizeof *av));
  for (int b = 0; b < B; b++) {
    double want = 0;
    for (int a = 0; a < A; a++)
      for (int c = 0; c < C; c++) want += X[(a * B + b) * C + c];
    if (fabs(sv[b] - want) > 1e-3) fail_msg("sum[%d]: got %g, want %g", b, (double)sv[b], want);
  }
  for (int c = 0; c < C; c++)
    for (int a = 0; a < A; a++) {
      float want = -INFINITY;
      for (int b = 0; b < B; b++) want = fmaxf(want, X[(a * B + b) * C + c]);
      assert_true(mv[c * A + a] == want);
    }
  for (int c = 0; c < C; c++)
    for (int b = 0; b < B; b++) {
      int64_t best = 0;
      for (int a = 1; a < A; a++)
        if (X[(a * B + b) * C + c] > X[(best * B + b) * C + c]) best = a;
      assert_int_equal(av[c * B + b], best);
    }
  free(sv);
  free(mv);
  free(av);
  oc_plan_free(&op);
  nb_graph_free(g);
  free(X);
}

/* A sum over the leading axis of few long rows ([A, B] -> [B] with B past
 * 4096: a batched weight gradient's batch sum), which the CPU splits by
 * columns, and the same shape with many rows (split into row parts),
 * against double loops; B is not a multiple of the column block. */
static void test_leading_sum_shapes(void **state) {
  (void)state;
  static const int64_t shapes[][2] = {{16, 65536 + 100}, {3, 4096}, {200, 130}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    int64_t A = shapes[k][0], B = shapes[k][1];
    float *X = tu_rand((size_t)(A * B), -1, 1, 12 + k);
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){A, B});
    nb_tensor *s = nb_sum(g, x, 1, (int[]){0}, 0);
    nb_tensor_set_output(s);
    oc_plan op;
    oc_compile(g, &op);
    TU_OK(nb_plan_set_input(op.p, x, X, sizeof(float) * (size_t)(A * B)));
    TU_OK(nb_plan_run(op.p));
    float *sv = malloc((size_t)B * sizeof *sv), *want = malloc((size_t)B * sizeof *want);
    TU_OK(nb_plan_get(op.p, s, sv, (size_t)B * sizeof *sv));
    for (int64_t b = 0; b < B; b++) {
      double w = 0;
      for (int64_t a = 0; a < A; a++) w += X[a * B + b];
      want[b] = (float)w;
    }
    tu_assert_close("leading-axis sum", sv, want, (size_t)B, 1e-6, 1e-6);
    free(sv);
    free(want);
    oc_plan_free(&op);
    nb_graph_free(g);
    free(X);
  }
}

/* NaN wins max, min and argmax, like PyTorch. */
static void test_nan(void **state) {
  (void)state;
  float X[6] = {1.0f, NAN, 5.0f, 2.0f, 3.0f, 1.0f};
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *mx = nb_max(g, x, 1, (int[]){1}, 0);
  nb_tensor *mn = nb_min(g, x, 1, (int[]){1}, 0);
  nb_tensor *am = nb_argmax(g, x, 1, 0);
  nb_tensor_set_output(mx);
  nb_tensor_set_output(mn);
  nb_tensor_set_output(am);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, x, X, sizeof X));
  TU_OK(nb_plan_run(op.p));
  float v[2];
  int64_t a[2];
  TU_OK(nb_plan_get(op.p, mx, v, sizeof v));
  tu_assert_close("max", v, (float[]){NAN, 3.0f}, 2, 0, 0);
  TU_OK(nb_plan_get(op.p, mn, v, sizeof v));
  tu_assert_close("min", v, (float[]){NAN, 1.0f}, 2, 0, 0);
  TU_OK(nb_plan_get(op.p, am, a, sizeof a));
  assert_int_equal(a[0], 1);
  assert_int_equal(a[1], 1);
  oc_plan_free(&op);
  nb_graph_free(g);
}

/* ---- size-0 axes -------------------------------------------------------------------- */

static void test_zero_size(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){0, 3});
  nb_tensor_set_requires_grad(x, 1);
  nb_tensor *s0 = nb_sum(g, x, 1, (int[]){0}, 0);    /* [3] of zeros */
  nb_tensor *sa = nb_sum(g, x, 0, NULL, 0);          /* 0-d zero */
  nb_tensor *s1 = nb_sum(g, x, 1, (int[]){1}, 1);    /* [0, 1] */
  nb_tensor *m0 = nb_mean(g, x, 1, (int[]){0}, 0);   /* [3] of nan, like PyTorch */
  nb_tensor *v0 = nb_var(g, x, 1, (int[]){0}, 1, 0); /* [3] of nan, like PyTorch */
  nb_tensor *mx1 = nb_max(g, x, 1, (int[]){1}, 0);   /* [0]: nothing to reduce */
  assert_int_equal(nb_tensor_ndim(s0), 1);
  assert_int_equal(nb_tensor_shape(s0)[0], 3);
  assert_int_equal(nb_tensor_ndim(sa), 0);
  assert_int_equal(nb_tensor_shape(s1)[0], 0);
  assert_int_equal(nb_tensor_shape(s1)[1], 1);
  assert_int_equal(nb_tensor_numel(mx1), 0);
  TU_OK(nb_graph_backward(g, nb_sum(g, s0, 0, NULL, 0)));
  nb_tensor *gx = nb_graph_grad(g, x);
  assert_non_null(gx);
  nb_tensor *outs[] = {s0, sa, s1, m0, v0, mx1, gx};
  for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) nb_tensor_set_output(outs[i]);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, x, NULL, 0));
  TU_OK(nb_plan_run(op.p));
  float v[3] = {7, 7, 7};
  TU_OK(nb_plan_get(op.p, s0, v, sizeof v));
  tu_assert_close("sum over size-0 axis", v, (float[]){0, 0, 0}, 3, 0, 0);
  TU_OK(nb_plan_get(op.p, sa, v, sizeof(float)));
  tu_assert_close("sum of empty", v, (float[]){0}, 1, 0, 0);
  TU_OK(nb_plan_get(op.p, m0, v, sizeof v));
  tu_assert_close("mean over size-0 axis", v, (float[]){NAN, NAN, NAN}, 3, 0, 0);
  TU_OK(nb_plan_get(op.p, v0, v, sizeof v));
  tu_assert_close("var over size-0 axis", v, (float[]){NAN, NAN, NAN}, 3, 0, 0);
  TU_OK(nb_plan_get(op.p, s1, NULL, 0));
  TU_OK(nb_plan_get(op.p, gx, NULL, 0));
  oc_plan_free(&op);
  nb_graph_free(g);

  /* max/min/argmax over an empty axis have no answer: an error, not garbage */
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){0, 3});
  oc_expect_error("max over size-0 axis", g, nb_max(g, x, 1, (int[]){0}, 0), NB_ERR_SHAPE,
                  OC_PARTS("max", "size 0"));
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){3, 0});
  oc_expect_error("argmax over size-0 axis", g, nb_argmax(g, x, 1, 0), NB_ERR_SHAPE,
                  OC_PARTS("argmax", "size 0"));
  nb_graph_free(g);
}

/* var with one element and correction 1 divides 0 by 0: nan, like PyTorch */
static void test_var_single(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 1});
  nb_tensor *v = nb_var(g, x, 1, (int[]){1}, 1, 0);
  nb_tensor_set_output(v);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, x, (float[]){1.5f, -2.0f}, 2 * sizeof(float)));
  TU_OK(nb_plan_run(op.p));
  float out[2];
  TU_OK(nb_plan_get(op.p, v, out, sizeof out));
  tu_assert_close("var of one element", out, (float[]){NAN, NAN}, 2, 0, 0);
  oc_plan_free(&op);
  nb_graph_free(g);
}

/* ---- bad input ---------------------------------------------------------------------- */

typedef nb_tensor *(*reduce_fn)(nb_graph *, nb_tensor *, int, const int *, int);

static nb_tensor *var1(nb_graph *g, nb_tensor *x, int n, const int *axes, int keep) {
  return nb_var(g, x, n, axes, 1, keep);
}

static void test_bad_axes(void **state) {
  (void)state;
  static const struct {
    const char *name;
    reduce_fn fn;
  } ops[] = {{"sum", nb_sum}, {"mean", nb_mean}, {"max", nb_max},
             {"min", nb_min}, {"var", var1},     {"logsumexp", nb_logsumexp}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    char what[64];
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
    snprintf(what, sizeof what, "%s axis 3", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, 1, (int[]){3}, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name, "axis 3", "[2, 3, 4]"));
    nb_graph_free(g);

    g = nb_graph_new();
    x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
    snprintf(what, sizeof what, "%s axis -4", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, 1, (int[]){-4}, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name, "axis -4", "[2, 3, 4]"));
    nb_graph_free(g);

    g = nb_graph_new();
    x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
    snprintf(what, sizeof what, "%s repeated axis", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, 2, (int[]){1, -2}, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name, "repeated"));
    nb_graph_free(g);

    g = nb_graph_new();
    x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
    snprintf(what, sizeof what, "%s naxes < 0", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, -1, (int[]){0}, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name));
    nb_graph_free(g);

    g = nb_graph_new();
    x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
    snprintf(what, sizeof what, "%s NULL axes", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, 2, NULL, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name));
    nb_graph_free(g);

    g = nb_graph_new();
    x = nb_input(g, "x", NB_I32, 2, (int64_t[]){2, 3});
    snprintf(what, sizeof what, "%s of i32", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, x, 0, NULL, 0), NB_ERR_DTYPE,
                    OC_PARTS(ops[i].name, "i32"));
    nb_graph_free(g);

    g = nb_graph_new();
    snprintf(what, sizeof what, "%s of NULL", ops[i].name);
    oc_expect_error(what, g, ops[i].fn(g, NULL, 0, NULL, 0), NB_ERR_INVALID_ARG,
                    OC_PARTS(ops[i].name, "NULL"));
    nb_graph_free(g);
  }
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  oc_expect_error("argmax axis 2", g, nb_argmax(g, x, 2, 0), NB_ERR_INVALID_ARG,
                  OC_PARTS("argmax", "axis 2", "[2, 3]"));
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_I64, 2, (int64_t[]){2, 3});
  oc_expect_error("argmax of i64", g, nb_argmax(g, x, 0, 0), NB_ERR_DTYPE,
                  OC_PARTS("argmax", "i64"));
  nb_graph_free(g);
  g = nb_graph_new();
  oc_expect_error("argmax of NULL", g, nb_argmax(g, NULL, 0, 0), NB_ERR_INVALID_ARG,
                  OC_PARTS("argmax", "NULL"));
  nb_graph_free(g);
  assert_null(nb_sum(NULL, NULL, 0, NULL, 0));
  assert_null(nb_mean(NULL, NULL, 0, NULL, 0));
  assert_null(nb_logsumexp(NULL, NULL, 0, NULL, 0));
}

int main(void) {
  const struct CMUnitTest plain[] = {
      cmocka_unit_test(test_large),      cmocka_unit_test(test_leading_sum_shapes),
      cmocka_unit_test(test_nan),        cmocka_unit_test(test_zero_size),
      cmocka_unit_test(test_var_single), cmocka_unit_test(test_bad_axes),
  };
  return oc_main("reduce", plain, sizeof plain / sizeof plain[0], cases,
                 sizeof cases / sizeof cases[0]);
}
