/* Batched matmul: 2-d, batched, broadcast batch dims, 1-d promotion,
 * transposed (no copy), sliced and broadcast operands; values and gradients
 * against PyTorch (tests/ref/ops.txt), finite differences, bigger products
 * against a naive loop, zero-size and bad shapes. */
#include "ops_check.h"

static nb_tensor *build_mm(nb_graph *g, nb_tensor **x, void *ctx) {
  const char *v = ctx;
  nb_tensor *a = x[0], *b = x[1];
  if (!strcmp(v, "tA") || !strcmp(v, "tAB") || !strcmp(v, "vec_t")) a = nb_transpose(g, a, 0, 1);
  if (!strcmp(v, "tB") || !strcmp(v, "tAB")) b = nb_transpose(g, b, 0, 1);
  if (!strcmp(v, "t3")) {
    a = nb_transpose(g, a, -1, -2);
    b = nb_transpose(g, b, -1, -2);
  }
  if (!strcmp(v, "tbatch")) a = nb_transpose(g, a, 0, 1);
  if (!strcmp(v, "slice")) a = nb_slice(g, a, 1, 0, 8, 2);
  if (!strcmp(v, "slice_rows")) a = nb_slice(g, a, 0, 0, 6, 2);
  if (!strcmp(v, "bview_a")) a = nb_broadcast_to(g, a, 2, (int64_t[]){3, 4});
  if (!strcmp(v, "bview_b")) b = nb_broadcast_to(g, b, 2, (int64_t[]){4, 5});
  if (!strcmp(v, "bview_batch")) a = nb_broadcast_to(g, a, 3, (int64_t[]){2, 3, 4});
  return nb_matmul(g, a, b);
}

#define VAL 1e-5, 1e-4
#define FD  1e-3, 2e-3, 1e-2
#define MM(name, view)                                                                             \
  { "mm_" name, "gg", build_mm, view, VAL, 1, FD, NULL }

static const oc_case cases[] = {
    MM("2d", ""),
    MM("3d", ""),
    MM("bcast", ""),
    MM("bcast_l", ""),
    MM("vec_l", ""),
    MM("vec_r", ""),
    MM("vec_vv", ""),
    MM("vec_batch_r", ""),
    MM("vec_batch_l", ""),
    MM("tA", "tA"),
    MM("tB", "tB"),
    MM("tAB", "tAB"),
    MM("t3", "t3"),
    MM("tbatch", "tbatch"),
    MM("slice", "slice"),
    MM("slice_rows", "slice_rows"),
    MM("bview_a", "bview_a"),
    MM("bview_b", "bview_b"),
    MM("bview_batch", "bview_batch"),
    MM("vec_t", "vec_t"),
};

/* ---- transposed operands are read in place --------------------------------------- */

static int count_op(nb_graph *g, const char *op) {
  int n = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++)
    n += !strcmp(nb_tensor_op_name(nb_graph_node(g, i)), op);
  return n;
}

static void test_no_copy(void **state) {
  (void)state;
  static const struct {
    const char *view;
    int64_t a[3], b[3];
    int nd, copies;
  } cases_[] = {
      {"tA", {4, 3}, {4, 5}, 2, 0},
      {"tB", {3, 4}, {5, 4}, 2, 0},
      {"tAB", {4, 3}, {5, 4}, 2, 0},
      {"t3", {2, 4, 3}, {2, 5, 4}, 3, 0},
      {"tbatch", {3, 2, 4}, {2, 4, 5}, 3, 0},
      {"slice_rows", {6, 4}, {4, 5}, 2, 0},
      /* a column slice with step 2 has no unit stride, and a broadcast no
       * leading stride: BLAS needs a copy */
      {"slice", {3, 8}, {4, 5}, 2, 1},
      {"bview_a", {1, 4}, {4, 5}, 2, 1},
      {"bview_b", {3, 4}, {4, 1}, 2, 1},
  };
  for (size_t i = 0; i < sizeof cases_ / sizeof cases_[0]; i++) {
    nb_graph *g = nb_graph_new();
    int bnd = cases_[i].nd;
    nb_tensor *x[2] = {nb_input(g, "a", NB_F32, cases_[i].nd, cases_[i].a),
                       nb_input(g, "b", NB_F32, bnd, cases_[i].b)};
    nb_tensor_set_requires_grad(x[0], 1);
    nb_tensor_set_requires_grad(x[1], 1);
    nb_tensor *y = build_mm(g, x, (void *)cases_[i].view);
    assert_non_null(y);
    int copies = count_op(g, "copy");
    if (copies != cases_[i].copies)
      fail_msg("%s: %d copies in the forward graph, want %d", cases_[i].view, copies,
               cases_[i].copies);
    /* the gradient products read transposed views of the same operands (a
     * weighted loss: the plain sum's gradient is a stride-0 broadcast, which
     * BLAS cannot read and rightly gets copied) */
    nb_tensor *r = nb_input(g, "r", NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y));
    TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, y, r), 0, NULL, 0)));
    copies = count_op(g, "copy");
    if (copies != cases_[i].copies)
      fail_msg("%s: %d copies with the backward pass, want %d", cases_[i].view, copies,
               cases_[i].copies);
    nb_graph_free(g);
  }
}

/* ---- bigger products against a naive loop (threaded BLAS, leading strides) -------- */

static void test_large(void **state) {
  (void)state;
  enum { B = 3, M = 40, K = 33, N = 27 };
  /* a stored [B, K, M] and read transposed; b stored [N, 2K] and read as a
   * transposed column slice [:, 0:K] -> [K, N] with a leading stride of 2K */
  float *A = tu_rand(B * K * M, -1, 1, 21), *Bm = tu_rand(N * 2 * K, -1, 1, 22);
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 3, (int64_t[]){B, K, M});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){N, 2 * K});
  nb_tensor *at = nb_transpose(g, a, 1, 2);
  nb_tensor *bt = nb_transpose(g, nb_slice(g, b, 1, 0, K, 1), 0, 1);
  nb_tensor *y = nb_matmul(g, at, bt);
  assert_int_equal(count_op(g, "copy"), 0);
  nb_tensor_set_output(y);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, a, A, sizeof(float) * B * K * M));
  TU_OK(nb_plan_set_input(op.p, b, Bm, sizeof(float) * N * 2 * K));
  TU_OK(nb_plan_run(op.p));
  float *out = malloc(sizeof(float) * B * M * N);
  TU_OK(nb_plan_get(op.p, y, out, sizeof(float) * B * M * N));
  for (int i = 0; i < B; i++)
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double want = 0;
        for (int k = 0; k < K; k++) want += (double)A[(i * K + k) * M + m] * Bm[n * 2 * K + k];
        double got = out[(i * M + m) * N + n];
        if (fabs(got - want) > 1e-4) fail_msg("y[%d, %d, %d]: got %g, want %g", i, m, n, got, want);
      }
  free(out);
  oc_plan_free(&op);
  nb_graph_free(g);
  free(A);
  free(Bm);
}

/* ---- zero-size ---------------------------------------------------------------------- */

static void test_zero_size(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){3, 0});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){0, 4});
  nb_tensor *c = nb_input(g, "c", NB_F32, 2, (int64_t[]){0, 4});
  nb_tensor *d = nb_input(g, "d", NB_F32, 2, (int64_t[]){4, 5});
  nb_tensor *e = nb_input(g, "e", NB_F32, 3, (int64_t[]){0, 3, 4});
  nb_tensor_set_requires_grad(a, 1);
  nb_tensor_set_requires_grad(b, 1);
  nb_tensor *y0 = nb_matmul(g, a, b); /* k = 0: zeros [3, 4] */
  nb_tensor *y1 = nb_matmul(g, c, d); /* m = 0: [0, 5] */
  nb_tensor *y2 = nb_matmul(g, e, d); /* no batches: [0, 3, 5] */
  assert_int_equal(nb_tensor_shape(y0)[0], 3);
  assert_int_equal(nb_tensor_shape(y0)[1], 4);
  assert_int_equal(nb_tensor_numel(y1), 0);
  assert_int_equal(nb_tensor_ndim(y2), 3);
  TU_OK(nb_graph_backward(g, nb_sum(g, y0, 0, NULL, 0)));
  nb_tensor *ga = nb_graph_grad(g, a);
  assert_non_null(ga);
  nb_tensor *outs[] = {y0, y1, y2, ga};
  for (size_t i = 0; i < 4; i++) nb_tensor_set_output(outs[i]);
  oc_plan op;
  oc_compile(g, &op);
  float dv[20];
  for (int i = 0; i < 20; i++) dv[i] = (float)i;
  TU_OK(nb_plan_set_input(op.p, a, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, b, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, c, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, d, dv, sizeof dv));
  TU_OK(nb_plan_set_input(op.p, e, NULL, 0));
  /* run twice: the arena is reused, k = 0 must still write zeros */
  TU_OK(nb_plan_run(op.p));
  TU_OK(nb_plan_run(op.p));
  float out[12];
  for (int i = 0; i < 12; i++) out[i] = 99.0f;
  TU_OK(nb_plan_get(op.p, y0, out, sizeof out));
  float zeros[12] = {0};
  tu_assert_close("k = 0 product", out, zeros, 12, 0, 0);
  TU_OK(nb_plan_get(op.p, y1, NULL, 0));
  TU_OK(nb_plan_get(op.p, ga, NULL, 0));
  oc_plan_free(&op);
  nb_graph_free(g);
}

/* ---- bad input ---------------------------------------------------------------------- */

static void test_errors(void **state) {
  (void)state;
  static const struct {
    nb_dtype da, db;
    int na, nb;
    int64_t a[3], b[3];
    nb_status st;
    const char *p1, *p2;
  } bad[] = {
      {NB_F32, NB_F32, 2, 2, {3, 4}, {5, 6}, NB_ERR_SHAPE, "[3, 4]", "[5, 6]"},
      {NB_F32, NB_F32, 3, 3, {2, 3, 4}, {3, 4, 5}, NB_ERR_SHAPE, "[2, 3, 4]", "[3, 4, 5]"},
      {NB_F32, NB_F32, 1, 1, {4}, {5}, NB_ERR_SHAPE, "[4]", "[5]"},
      {NB_F32, NB_F32, 1, 2, {4}, {5, 6}, NB_ERR_SHAPE, "[4]", "[5, 6]"},
      {NB_F32, NB_F32, 2, 1, {3, 4}, {5}, NB_ERR_SHAPE, "[3, 4]", "[5]"},
      {NB_F32, NB_F32, 0, 2, {0}, {4, 5}, NB_ERR_SHAPE, "[]", "[4, 5]"},
      {NB_I64, NB_F32, 2, 2, {3, 4}, {4, 5}, NB_ERR_DTYPE, "i64", "f32"},
      {NB_F32, NB_F16, 2, 2, {3, 4}, {4, 5}, NB_ERR_DTYPE, "f16", "matmul"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nb_graph *g = nb_graph_new();
    nb_tensor *a = nb_input(g, "a", bad[i].da, bad[i].na, bad[i].a);
    nb_tensor *b = nb_input(g, "b", bad[i].db, bad[i].nb, bad[i].b);
    char what[64];
    snprintf(what, sizeof what, "matmul case %zu", i);
    oc_expect_error(what, g, nb_matmul(g, a, b), bad[i].st,
                    OC_PARTS("matmul", bad[i].p1, bad[i].p2));
    nb_graph_free(g);
  }
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){3, 4});
  oc_expect_error("matmul NULL", g, nb_matmul(g, a, NULL), NB_ERR_INVALID_ARG,
                  OC_PARTS("matmul", "NULL"));
  nb_graph_free(g);
  assert_null(nb_matmul(NULL, NULL, NULL));
}

int main(void) {
  const struct CMUnitTest plain[] = {
      cmocka_unit_test(test_no_copy),
      cmocka_unit_test(test_large),
      cmocka_unit_test(test_zero_size),
      cmocka_unit_test(test_errors),
  };
  return oc_main("matmul", plain, sizeof plain / sizeof plain[0], cases,
                 sizeof cases / sizeof cases[0]);
}
