/* Composite nn ops: batch_norm (training with batch statistics and running
 * updates, eval with running statistics), layer_norm, cross_entropy (with
 * label smoothing), nll_loss, mse_loss, bce_with_logits, dropout and
 * embedding; values and gradients against PyTorch (tests/ref/ops.txt),
 * finite differences, bad input and zero-size batches. */
#include "ops_check.h"

/* ---- batch_norm ------------------------------------------------------------------- */

static const nb_init rm_init = {NB_INIT_CONSTANT, 0.2f, 0.0f, 0};
static const nb_init rv_init = {NB_INIT_CONSTANT, 1.5f, 0.0f, 0};

/* x, gamma, beta; x3/x4 hold the initial running stats the variables start from */
static nb_tensor *build_bn_train(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_tensor *rm = nb_variable(g, "rm", NB_F32, 1, (int64_t[]){3}, rm_init);
  nb_tensor *rv = nb_variable(g, "rv", NB_F32, 1, (int64_t[]){3}, rv_init);
  return nb_batch_norm(g, x[0], x[1], x[2], rm, rv, 1, 0.1f, 1e-5f);
}

static void check_state(const oc_case *c, nb_state *st, const char *var, const char *array) {
  float got[3];
  TU_OK(nb_state_read(st, var, got, sizeof got));
  int64_t n;
  const float *want = oc_get(c, array, NULL, NULL, &n);
  assert_int_equal(n, 3);
  char what[64];
  snprintf(what, sizeof what, "%s: %s", c->name, array);
  tu_assert_close(what, got, want, 3, 1e-6, 1e-5);
}

/* PyTorch's update: running = 0.9 running + 0.1 batch, with the unbiased
 * batch variance. Checked after one step and after a second. */
static void after_bn_train(const oc_case *c, nb_plan *p, nb_state *st) {
  check_state(c, st, "rm", "rm1");
  check_state(c, st, "rv", "rv1");
  TU_OK(nb_plan_run(p));
  check_state(c, st, "rm", "rm2");
  check_state(c, st, "rv", "rv2");
}

static nb_tensor *build_bn(nb_graph *g, nb_tensor **x, void *ctx) {
  const char *v = ctx;
  if (!strcmp(v, "train_2d")) return nb_batch_norm(g, x[0], NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f);
  /* eval only reads the running statistics, so plain inputs will do */
  if (!strcmp(v, "eval")) return nb_batch_norm(g, x[0], x[1], x[2], x[3], x[4], 0, 0.1f, 1e-5f);
  if (!strcmp(v, "eval_4d")) return nb_batch_norm(g, x[0], NULL, NULL, x[1], x[2], 0, 0.1f, 1e-3f);
  fail_msg("unknown batch_norm case %s", v);
  return NULL;
}

/* ---- the others ------------------------------------------------------------------- */

static nb_tensor *build_nn(nb_graph *g, nb_tensor **x, void *ctx) {
  const char *v = ctx;
  if (!strcmp(v, "ln_gb")) return nb_layer_norm(g, x[0], 1, x[1], x[2], 1e-5f);
  if (!strcmp(v, "ln_2")) return nb_layer_norm(g, x[0], 2, x[1], x[2], 1e-5f);
  if (!strcmp(v, "ln_nogb")) return nb_layer_norm(g, x[0], 1, NULL, NULL, 1e-5f);
  if (!strcmp(v, "ce")) return nb_cross_entropy(g, x[0], x[1], 0.0f);
  if (!strcmp(v, "ce_ls")) return nb_cross_entropy(g, x[0], x[1], 0.1f);
  if (!strcmp(v, "nll")) return nb_nll_loss(g, x[0], x[1]);
  if (!strcmp(v, "mse")) return nb_mse_loss(g, x[0], x[1]);
  if (!strcmp(v, "bce")) return nb_bce_with_logits(g, x[0], x[1]);
  if (!strcmp(v, "emb")) return nb_embedding(g, x[0], x[1]);
  /* the same on strided views */
  nb_tensor *xt = nb_tensor_ndim(x[0]) == 2 ? nb_transpose(g, x[0], 0, 1) : NULL;
  if (!strcmp(v, "ln_t")) return nb_layer_norm(g, xt, 1, x[1], NULL, 1e-5f);
  if (!strcmp(v, "bn_perm"))
    return nb_batch_norm(g, nb_permute(g, x[0], (int[]){1, 0, 2}), NULL, NULL, NULL, NULL, 1, 0.1f,
                         1e-5f);
  if (!strcmp(v, "ce_t")) return nb_cross_entropy(g, xt, x[1], 0.1f);
  if (!strcmp(v, "mse_s"))
    return nb_mse_loss(g, nb_slice(g, x[0], 1, 0, 8, 2),
                       nb_broadcast_to(g, x[1], 2, (int64_t[]){3, 4}));
  if (!strcmp(v, "bce_t"))
    return nb_bce_with_logits(g, xt, nb_broadcast_to(g, x[1], 2, (int64_t[]){3, 4}));
  if (!strcmp(v, "emb_t")) return nb_embedding(g, xt, x[1]);
  fail_msg("unknown nn case %s", v);
  return NULL;
}

#define VAL 1e-5, 1e-4
#define FD  1e-3, 2e-3, 1e-2
#define NN(name, kinds, op)                                                                        \
  { name, kinds, build_nn, op, VAL, 1, FD, NULL }

static const oc_case cases[] = {
    {"bn_train", "gggff", build_bn_train, NULL, VAL, 1, FD, after_bn_train},
    {"bn_train_2d", "g", build_bn, "train_2d", VAL, 1, FD, NULL},
    {"bn_eval", "gggff", build_bn, "eval", VAL, 1, FD, NULL},
    {"bn_eval_4d", "gff", build_bn, "eval_4d", VAL, 1, FD, NULL},
    NN("ln_gb", "ggg", "ln_gb"),
    NN("ln_2", "ggg", "ln_2"),
    NN("ln_nogb", "g", "ln_nogb"),
    NN("ce", "gl", "ce"),
    NN("ce_ls", "gl", "ce_ls"),
    NN("ce_i32", "gi", "ce_ls"),
    /* logits of +-100: finite differences would only see f32 rounding */
    {"ce_big", "gl", build_nn, "ce_ls", VAL, 1, 0, 0, 0, NULL},
    NN("nll", "gl", "nll"),
    NN("mse", "gg", "mse"),
    /* logits of +-50 and exactly 0 (where the gradient is sigmoid(0) - t) */
    NN("bce", "gg", "bce"),
    NN("bce_small", "gg", "bce"),
    NN("emb", "gl", "emb"),
    NN("emb_1d", "gl", "emb"),
    NN("ln_t", "gg", "ln_t"),
    NN("bn_perm", "g", "bn_perm"),
    NN("ce_t", "gl", "ce_t"),
    NN("mse_s", "gg", "mse_s"),
    NN("bce_t", "gg", "bce_t"),
    NN("emb_t", "gl", "emb_t"),
};

/* ---- dropout ---------------------------------------------------------------------- */

enum { DN = 4000 };

typedef struct {
  nb_graph *g;
  nb_tensor *x, *r, *y, *gx;
  oc_plan op;
} drop_graph;

/* y = dropout(x) (optionally fused between two other ops) and d(sum(y * r))/dx */
static void drop_build(drop_graph *d, float p, uint64_t seed, int fused) {
  memset(d, 0, sizeof *d);
  d->g = nb_graph_new();
  d->x = nb_input(d->g, "x", NB_F32, 1, (int64_t[]){DN});
  d->r = nb_input(d->g, "r", NB_F32, 1, (int64_t[]){DN});
  nb_tensor_set_requires_grad(d->x, 1);
  nb_tensor *in = fused ? nb_mul(d->g, d->x, nb_scalar(d->g, 1.0f)) : d->x;
  d->y = nb_dropout(d->g, in, p, seed, 1);
  if (fused) d->y = nb_add(d->g, d->y, nb_scalar(d->g, 0.0f));
  TU_OK(nb_graph_backward(d->g, nb_sum(d->g, nb_mul(d->g, d->y, d->r), 0, NULL, 0)));
  d->gx = nb_graph_grad(d->g, d->x);
  assert_non_null(d->gx);
  nb_tensor_set_output(d->y);
  nb_tensor_set_output(d->gx);
  oc_compile(d->g, &d->op);
}

static void drop_run(drop_graph *d, const float *x, const float *r, float *y, float *gx) {
  TU_OK(nb_plan_set_input(d->op.p, d->x, x, DN * sizeof(float)));
  TU_OK(nb_plan_set_input(d->op.p, d->r, r, DN * sizeof(float)));
  TU_OK(nb_plan_run(d->op.p));
  TU_OK(nb_plan_get(d->op.p, d->y, y, DN * sizeof(float)));
  if (gx) TU_OK(nb_plan_get(d->op.p, d->gx, gx, DN * sizeof(float)));
}

static void drop_free(drop_graph *d) {
  oc_plan_free(&d->op);
  nb_graph_free(d->g);
}

static int mask_diff(const float *a, const float *b) {
  int n = 0;
  for (int i = 0; i < DN; i++) n += (a[i] == 0.0f) != (b[i] == 0.0f);
  return n;
}

static void test_dropout(void **state) {
  (void)state;
  const float p = 0.3f, scale = 1.0f / (1.0f - p);
  float *x = tu_rand(DN, 0.5f, 1.5f, 31), *r = tu_rand(DN, -1, 1, 32);
  float *y0 = malloc(DN * sizeof *y0), *g0 = malloc(DN * sizeof *g0);
  float *y1 = malloc(DN * sizeof *y1), *y2 = malloc(DN * sizeof *y2);
  for (int fused = 0; fused < 2; fused++) {
    drop_graph d;
    drop_build(&d, p, 42, fused);
    drop_run(&d, x, r, y0, g0);
    int dropped = 0;
    for (int i = 0; i < DN; i++) {
      if (y0[i] == 0.0f) {
        dropped++;
        /* the gradient uses the very same mask */
        if (g0[i] != 0.0f) fail_msg("element %d dropped but its gradient is %g", i, (double)g0[i]);
      } else {
        if (y0[i] != x[i] * scale)
          fail_msg("element %d kept as %g, want %g", i, (double)y0[i], (double)(x[i] * scale));
        if (fabsf(g0[i] - r[i] * scale) > 1e-6f)
          fail_msg("element %d: gradient %g, want %g", i, (double)g0[i], (double)(r[i] * scale));
      }
    }
    /* 4000 draws: the standard deviation of the fraction is 0.007 */
    double frac = (double)dropped / DN;
    if (fabs(frac - p) > 0.03) fail_msg("dropped fraction %g, want about %g", frac, (double)p);
    /* the next step draws a new mask; rewinding the step repeats the old one */
    drop_run(&d, x, r, y1, NULL);
    assert_true(mask_diff(y0, y1) > DN / 10);
    nb_plan_set_step(d.op.p, 0);
    drop_run(&d, x, r, y2, NULL);
    assert_int_equal(mask_diff(y0, y2), 0);
    drop_free(&d);
    /* another plan with the same seed agrees at the same step */
    drop_build(&d, p, 42, !fused);
    drop_run(&d, x, r, y2, NULL);
    assert_int_equal(mask_diff(y0, y2), 0);
    drop_free(&d);
    /* another seed does not */
    drop_build(&d, p, 43, fused);
    drop_run(&d, x, r, y2, NULL);
    assert_true(mask_diff(y0, y2) > DN / 10);
    drop_free(&d);
  }
  free(x);
  free(r);
  free(y0);
  free(g0);
  free(y1);
  free(y2);
}

static void test_dropout_eval(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  /* eval mode and p = 0 are the identity: no node at all */
  assert_ptr_equal(nb_dropout(g, x, 0.5f, 1, 0), x);
  assert_ptr_equal(nb_dropout(g, x, 0.0f, 1, 1), x);
  assert_int_equal(nb_graph_status(g), NB_OK);
  oc_expect_error("dropout p = 1", g, nb_dropout(g, x, 1.0f, 1, 1), NB_ERR_INVALID_ARG,
                  OC_PARTS("dropout", "p = 1"));
  nb_graph_free(g);
  g = nb_graph_new();
  oc_expect_error("dropout NULL (eval)", g, nb_dropout(g, NULL, 0.5f, 1, 0), NB_ERR_INVALID_ARG,
                  OC_PARTS("dropout", "NULL"));
  nb_graph_free(g);
  nb_clear_error();
  assert_null(nb_dropout(NULL, NULL, 0.5f, 1, 0));
  assert_non_null(strstr(nb_last_error(), "dropout"));
}

/* The mask follows the output's element order; the gradient flows back
 * through the transpose with the same mask. */
static void test_dropout_view(void **state) {
  (void)state;
  enum { A = 40, B = 50 };
  const float p = 0.5f, scale = 1.0f / (1.0f - p);
  float *X = tu_rand(A * B, 0.5f, 1.5f, 33), *R = tu_rand(A * B, -1, 1, 34);
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){A, B});
  nb_tensor *r = nb_input(g, "r", NB_F32, 2, (int64_t[]){B, A});
  nb_tensor_set_requires_grad(x, 1);
  nb_tensor *y = nb_dropout(g, nb_transpose(g, x, 0, 1), p, 7, 1);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_mul(g, y, r), 0, NULL, 0)));
  nb_tensor *gx = nb_graph_grad(g, x);
  nb_tensor_set_output(y);
  nb_tensor_set_output(gx);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_set_input(op.p, x, X, sizeof(float) * A * B));
  TU_OK(nb_plan_set_input(op.p, r, R, sizeof(float) * A * B));
  TU_OK(nb_plan_run(op.p));
  float *yv = malloc(sizeof(float) * A * B), *gv = malloc(sizeof(float) * A * B);
  TU_OK(nb_plan_get(op.p, y, yv, sizeof(float) * A * B));
  TU_OK(nb_plan_get(op.p, gx, gv, sizeof(float) * A * B));
  int dropped = 0;
  for (int i = 0; i < B; i++)
    for (int j = 0; j < A; j++) {
      float yij = yv[i * A + j], gji = gv[j * B + i];
      if (yij == 0.0f) {
        dropped++;
        assert_true(gji == 0.0f);
      } else {
        assert_true(yij == X[j * B + i] * scale);
        assert_true(fabsf(gji - R[i * A + j] * scale) <= 1e-6f);
      }
    }
  assert_true(fabs((double)dropped / (A * B) - p) < 0.05);
  free(yv);
  free(gv);
  oc_plan_free(&op);
  nb_graph_free(g);
  free(X);
  free(R);
}

/* Eval mode reads the running statistics and leaves them alone; training
 * mode appends one assign per statistic. */
static void test_bn_eval_variables(void **state) {
  (void)state;
  for (int training = 0; training < 2; training++) {
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){4, 3});
    nb_tensor *rm = nb_variable(g, "rm", NB_F32, 1, (int64_t[]){3}, rm_init);
    nb_tensor *rv = nb_variable(g, "rv", NB_F32, 1, (int64_t[]){3}, rv_init);
    nb_tensor *y = nb_batch_norm(g, x, NULL, NULL, rm, rv, training, 0.1f, 1e-5f);
    int assigns = 0;
    for (int i = 0; i < nb_graph_node_count(g); i++)
      assigns += !strcmp(nb_tensor_op_name(nb_graph_node(g, i)), "assign");
    assert_int_equal(assigns, training ? 2 : 0);
    nb_tensor_set_output(y);
    oc_plan op;
    oc_compile(g, &op);
    float xv[12];
    for (int i = 0; i < 12; i++) xv[i] = (float)i * 0.25f;
    TU_OK(nb_plan_set_input(op.p, x, xv, sizeof xv));
    TU_OK(nb_plan_run(op.p));
    float out[12], m[3], v[3];
    TU_OK(nb_plan_get(op.p, y, out, sizeof out));
    TU_OK(nb_state_read(op.st, "rm", m, sizeof m));
    TU_OK(nb_state_read(op.st, "rv", v, sizeof v));
    if (!training) {
      for (int i = 0; i < 12; i++) {
        float want = (xv[i] - 0.2f) / sqrtf(1.5f + 1e-5f);
        assert_true(fabsf(out[i] - want) < 1e-5f);
      }
      tu_assert_close("eval keeps rm", m, (float[]){0.2f, 0.2f, 0.2f}, 3, 0, 0);
      tu_assert_close("eval keeps rv", v, (float[]){1.5f, 1.5f, 1.5f}, 3, 0, 0);
    } else {
      /* column c holds 0.75 k + 0.25 c: mean 1.125 + 0.25 c, unbiased var 0.9375 */
      for (int c = 0; c < 3; c++) {
        assert_true(fabsf(m[c] - (0.9f * 0.2f + 0.1f * (1.125f + 0.25f * (float)c))) < 1e-6f);
        assert_true(fabsf(v[c] - (0.9f * 1.5f + 0.1f * 0.9375f)) < 1e-6f);
      }
    }
    oc_plan_free(&op);
    nb_graph_free(g);
  }
}

/* ---- batch_norm odds and ends -------------------------------------------------------- */

/* Training-mode statistics read as their own tensors do not need gamma/beta,
 * and an input without channels still builds and runs. */
static void test_bn_zero_size(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 0, 3});
  nb_tensor *rm = nb_variable(g, "rm", NB_F32, 1, (int64_t[]){0}, rm_init);
  nb_tensor *rv = nb_variable(g, "rv", NB_F32, 1, (int64_t[]){0}, rv_init);
  nb_tensor *y = nb_batch_norm(g, x, NULL, NULL, rm, rv, 1, 0.1f, 1e-5f);
  assert_non_null(y);
  assert_int_equal(nb_tensor_numel(y), 0);
  nb_tensor *e = nb_input(g, "e", NB_F32, 2, (int64_t[]){0, 4});
  nb_tensor *ln = nb_layer_norm(g, e, 1, NULL, NULL, 1e-5f);
  nb_tensor *ids = nb_input(g, "ids", NB_I64, 1, (int64_t[]){0});
  nb_tensor *w = nb_input(g, "w", NB_F32, 2, (int64_t[]){5, 3});
  nb_tensor *emb = nb_embedding(g, w, ids);
  assert_int_equal(nb_tensor_shape(emb)[0], 0);
  assert_int_equal(nb_tensor_shape(emb)[1], 3);
  nb_tensor_set_output(y);
  nb_tensor_set_output(ln);
  nb_tensor_set_output(emb);
  oc_plan op;
  oc_compile(g, &op);
  float wv[15] = {0};
  TU_OK(nb_plan_set_input(op.p, w, wv, sizeof wv));
  TU_OK(nb_plan_run(op.p));
  TU_OK(nb_plan_get(op.p, y, NULL, 0));
  oc_plan_free(&op);
  nb_graph_free(g);
}

/* ---- bad input ------------------------------------------------------------------------ */

static void test_errors(void **state) {
  (void)state;
  nb_graph *g;
  nb_tensor *x, *v, *lab;
#define FRESH() (g = nb_graph_new())
  FRESH();
  x = nb_input(g, "x", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("bn rank 1", g, nb_batch_norm(g, x, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f),
                  NB_ERR_SHAPE, OC_PARTS("batch_norm", "rank 1"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
  v = nb_input(g, "v", NB_F32, 1, (int64_t[]){4});
  oc_expect_error("bn gamma [4]", g, nb_batch_norm(g, x, v, NULL, NULL, NULL, 1, 0.1f, 1e-5f),
                  NB_ERR_SHAPE, OC_PARTS("batch_norm", "gamma", "[4]", "[2, 3, 4]"));
  nb_graph_free(g);
  FRESH();
  oc_expect_error("bn NULL x", g, nb_batch_norm(g, NULL, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f),
                  NB_ERR_INVALID_ARG, OC_PARTS("batch_norm", "NULL"));
  nb_graph_free(g);
  /* running statistics updated in training mode must be variables */
  FRESH();
  x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
  v = nb_input(g, "v", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("bn stats not variables", g,
                  nb_batch_norm(g, x, NULL, NULL, v, v, 1, 0.1f, 1e-5f), NB_ERR_INVALID_ARG,
                  OC_PARTS("assign", "variable"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  oc_expect_error("ln nlast 3", g, nb_layer_norm(g, x, 3, NULL, NULL, 1e-5f), NB_ERR_INVALID_ARG,
                  OC_PARTS("layer_norm", "nlast"));
  nb_graph_free(g);
  FRESH();
  oc_expect_error("ln NULL", g, nb_layer_norm(g, NULL, 1, NULL, NULL, 1e-5f), NB_ERR_INVALID_ARG,
                  OC_PARTS("layer_norm", "NULL"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){4, 5});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){3});
  oc_expect_error("ce labels [3]", g, nb_cross_entropy(g, x, lab, 0.0f), NB_ERR_SHAPE,
                  OC_PARTS("cross_entropy", "[4, 5]", "[3]"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){4, 5});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){4});
  oc_expect_error("ce smoothing 1", g, nb_cross_entropy(g, x, lab, 1.0f), NB_ERR_INVALID_ARG,
                  OC_PARTS("cross_entropy", "label_smoothing"));
  nb_graph_free(g);
  /* a failing log_softmax inside cross_entropy: an error, not a crash */
  FRESH();
  x = nb_input(g, "x", NB_F16, 2, (int64_t[]){4, 5});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){4});
  oc_expect_error("ce f16 logits", g, nb_cross_entropy(g, x, lab, 0.0f), NB_ERR_DTYPE,
                  OC_PARTS("f16"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){4, 5});
  oc_expect_error("ce NULL labels", g, nb_cross_entropy(g, x, NULL, 0.0f), NB_ERR_INVALID_ARG,
                  OC_PARTS("cross_entropy", "NULL"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 3, (int64_t[]){4, 5, 2});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){4});
  oc_expect_error("nll rank 3", g, nb_nll_loss(g, x, lab), NB_ERR_SHAPE,
                  OC_PARTS("nll_loss", "[4, 5, 2]"));
  nb_graph_free(g);
  FRESH();
  oc_expect_error("nll NULL", g, nb_nll_loss(g, NULL, NULL), NB_ERR_INVALID_ARG,
                  OC_PARTS("nll_loss", "NULL"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  v = nb_input(g, "v", NB_F32, 1, (int64_t[]){4});
  oc_expect_error("mse [2,3] vs [4]", g, nb_mse_loss(g, x, v), NB_ERR_SHAPE,
                  OC_PARTS("[2, 3]", "[4]"));
  nb_graph_free(g);
  FRESH();
  oc_expect_error("mse NULL", g, nb_mse_loss(g, NULL, NULL), NB_ERR_INVALID_ARG,
                  OC_PARTS("mse_loss", "NULL"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  oc_expect_error("bce NULL target", g, nb_bce_with_logits(g, x, NULL), NB_ERR_INVALID_ARG,
                  OC_PARTS("bce_with_logits", "NULL"));
  nb_graph_free(g);
  FRESH();
  x = nb_input(g, "x", NB_F32, 3, (int64_t[]){2, 3, 4});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){4});
  oc_expect_error("embedding 3-d weight", g, nb_embedding(g, x, lab), NB_ERR_SHAPE,
                  OC_PARTS("embedding", "[2, 3, 4]"));
  nb_graph_free(g);
  /* NULL graph: NULL and a thread message naming the op */
  static const struct {
    const char *name;
    int which;
  } nullg[] = {{"batch_norm", 0}, {"layer_norm", 1}, {"cross_entropy", 2},
               {"nll_loss", 3},   {"mse_loss", 4},   {"bce_with_logits", 5}};
  FRESH();
  x = nb_input(g, "x", NB_F32, 2, (int64_t[]){4, 5});
  lab = nb_input(g, "lab", NB_I64, 1, (int64_t[]){4});
  for (size_t i = 0; i < sizeof nullg / sizeof nullg[0]; i++) {
    nb_clear_error();
    nb_tensor *y = NULL;
    switch (nullg[i].which) {
    case 0: y = nb_batch_norm(NULL, x, NULL, NULL, NULL, NULL, 1, 0.1f, 1e-5f); break;
    case 1: y = nb_layer_norm(NULL, x, 1, NULL, NULL, 1e-5f); break;
    case 2: y = nb_cross_entropy(NULL, x, lab, 0.0f); break;
    case 3: y = nb_nll_loss(NULL, x, lab); break;
    case 4: y = nb_mse_loss(NULL, x, x); break;
    default: y = nb_bce_with_logits(NULL, x, x); break;
    }
    assert_null(y);
    if (!strstr(nb_last_error(), nullg[i].name) || !strstr(nb_last_error(), "graph is NULL"))
      fail_msg("%s(NULL graph): message '%s'", nullg[i].name, nb_last_error());
  }
  assert_int_equal(nb_graph_status(g), NB_OK);
  nb_graph_free(g);
#undef FRESH
}

int main(void) {
  const struct CMUnitTest plain[] = {
      cmocka_unit_test(test_dropout),      cmocka_unit_test(test_dropout_eval),
      cmocka_unit_test(test_dropout_view), cmocka_unit_test(test_bn_eval_variables),
      cmocka_unit_test(test_bn_zero_size), cmocka_unit_test(test_errors),
  };
  return oc_main("nn_ops", plain, sizeof plain / sizeof plain[0], cases,
                 sizeof cases / sizeof cases[0]);
}
