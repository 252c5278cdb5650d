/* Mixed precision on the CPU: the autocast scope (graph.h), half-precision
 * matmul and convolutions with their gradients against PyTorch on rounded
 * operands (tests/ref/amp_ref.py), a small MLP's loss and gradients in bf16
 * and f16 against an exact emulation and against f32, the grad scaler
 * (optim.h: a skipped step leaves every variable bit for bit, the scale
 * backs off and grows), the recipe's `precision` key, and training a small
 * CNN from a model file in bf16 and fp16 next to fp32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static int count_op(nb_graph *g, const char *op) {
  int n = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++)
    if (!strcmp(nb_tensor_op_name(nb_graph_node(g, i)), op)) n++;
  return n;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double d = 0, s = 0;
  for (int64_t i = 0; i < n; i++) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)b[i] * b[i];
  }
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* A graph's inputs fed from the reference case `data_case`. */
static void feed(nb_plan *p, const tu_ref *ref, const char *data_case, nb_tensor *const *inputs,
                 const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    int64_t numel;
    const float *v = tu_ref_get(ref, data_case, names[i], NULL, NULL, &numel);
    TU_OK(nb_plan_set_input(p, inputs[i], v, (size_t)numel * sizeof(float)));
  }
}

/* Runs the plan of g (outputs already marked) once on the CPU. */
static void run_once(nb_graph *g, const tu_ref *ref, const char *data_case,
                     nb_tensor *const *inputs, const char *const *names, int n, nb_backend **be,
                     nb_state **st, nb_plan **p) {
  TU_OK(nb_graph_status(g));
  TU_OK(nb_backend_new("cpu", be));
  TU_OK(nb_state_new(*be, st));
  TU_OK(nb_compile(g, *be, *st, NULL, p));
  feed(*p, ref, data_case, inputs, names, n);
  TU_OK(nb_plan_run(*p));
}

static void check_output(nb_plan *p, nb_tensor *t, const tu_ref *ref, const char *case_name,
                         const char *name, double atol, double rtol) {
  int64_t n;
  const float *want = tu_ref_get(ref, case_name, name, NULL, NULL, &n);
  assert_int_equal(nb_tensor_numel(t), n);
  assert_int_equal(nb_tensor_dtype(t), NB_F32);
  float *got = malloc((size_t)n * sizeof *got);
  TU_OK(nb_plan_get(p, t, got, (size_t)n * sizeof *got));
  char what[96];
  snprintf(what, sizeof what, "%s %s", case_name, name);
  tu_assert_close(what, got, want, (size_t)n, atol, rtol);
  free(got);
}

static void free_run(nb_graph *g, nb_backend *be, nb_state *st, nb_plan *p) {
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* ---- kernels ------------------------------------------------------------------ */

static void matmul_case(nb_dtype dt, const char *case_name) {
  tu_ref *ref = tu_ref_load("amp.txt");
  nb_graph *g = nb_graph_new();
  int64_t as[2] = {5, 7}, bs[2] = {7, 3}, a3s[3] = {2, 4, 6}, bts[2] = {3, 6};
  nb_tensor *in[4] = {nb_input(g, "a", NB_F32, 2, as), nb_input(g, "b", NB_F32, 2, bs),
                      nb_input(g, "a3", NB_F32, 3, a3s), nb_input(g, "bt", NB_F32, 2, bts)};
  TU_OK(nb_graph_set_autocast(g, dt));
  assert_int_equal(nb_graph_autocast(g), dt);
  nb_tensor *y = nb_matmul(g, in[0], in[1]);
  TU_OK(nb_graph_set_autocast(g, NB_F32));
  assert_int_equal(count_op(g, "cast"), 2);
  assert_int_equal(nb_tensor_dtype(y), NB_F32);
  /* a half-precision operand that is a strided view (transposed), as the
   * gradient matmuls read them */
  nb_tensor *y3 = nb_matmul(g, nb_cast(g, in[2], dt), nb_transpose(g, nb_cast(g, in[3], dt), 0, 1));
  nb_tensor *exact = nb_matmul(g, in[0], in[1]); /* scope closed: f32 */
  assert_int_equal(count_op(g, "cast"), 4);
  nb_tensor_set_output(y);
  nb_tensor_set_output(y3);
  nb_tensor_set_output(exact);
  const char *names[4] = {"a", "b", "a3", "bt"};
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  run_once(g, ref, "mm_data", in, names, 4, &be, &st, &p);
  check_output(p, y, ref, case_name, "y", 1e-5, 1e-5);
  check_output(p, y3, ref, case_name, "y3", 1e-5, 1e-5);
  /* the rounding happened: the f32 product is measurably different */
  float got[15], f32[15];
  TU_OK(nb_plan_get(p, y, got, sizeof got));
  TU_OK(nb_plan_get(p, exact, f32, sizeof f32));
  double diff = rel_l2(got, f32, 15);
  print_message("%s matmul vs f32: relative L2 difference %.2e\n", case_name, diff);
  assert_true(diff > (dt == NB_BF16 ? 5e-4 : 5e-5));
  free_run(g, be, st, p);
  tu_ref_free(ref);
}

static void test_matmul_bf16(void **s) {
  (void)s;
  matmul_case(NB_BF16, "mm_bf16");
}

static void test_matmul_f16(void **s) {
  (void)s;
  matmul_case(NB_F16, "mm_f16");
}

static void conv_case(nb_dtype dt, const char *case_name) {
  tu_ref *ref = tu_ref_load("amp.txt");
  nb_graph *g = nb_graph_new();
  int64_t xs[4] = {2, 3, 7, 7}, ws[4] = {4, 3, 3, 3}, dys[4] = {2, 4, 4, 4};
  nb_tensor *in[3] = {nb_input(g, "x", NB_F32, 4, xs), nb_input(g, "w", NB_F32, 4, ws),
                      nb_input(g, "dy", NB_F32, 4, dys)};
  nb_conv2d_params cp = nb_conv2d_defaults();
  cp.stride[0] = cp.stride[1] = 2;
  cp.padding[0] = cp.padding[1] = 1;
  TU_OK(nb_graph_set_autocast(g, dt));
  nb_tensor *y = nb_conv2d(g, in[0], in[1], &cp);
  nb_tensor *dx = nb_conv2d_backward_input(g, in[2], in[1], xs, &cp);
  nb_tensor *dw = nb_conv2d_backward_weight(g, in[0], in[2], ws, &cp);
  TU_OK(nb_graph_set_autocast(g, NB_F32));
  assert_int_equal(count_op(g, "cast"), 6);
  nb_tensor_set_output(y);
  nb_tensor_set_output(dx);
  nb_tensor_set_output(dw);
  const char *names[3] = {"x", "w", "dy"};
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  run_once(g, ref, "conv_data", in, names, 3, &be, &st, &p);
  check_output(p, y, ref, case_name, "y", 1e-5, 1e-5);
  check_output(p, dx, ref, case_name, "dx", 1e-5, 1e-5);
  check_output(p, dw, ref, case_name, "dw", 1e-5, 1e-5);
  free_run(g, be, st, p);
  tu_ref_free(ref);
}

static void test_conv_bf16(void **s) {
  (void)s;
  conv_case(NB_BF16, "conv_bf16");
}

static void test_conv_f16(void **s) {
  (void)s;
  conv_case(NB_F16, "conv_f16");
}

/* ---- an MLP: loss and gradients -------------------------------------------------- */

/* relu(x W1^T + b1) W2^T + b2 with cross-entropy, the matmuls under an
 * autocast scope of dt (NB_F32: none): the model of amp_ref.py. Returns the
 * loss and the four gradients in out[0..4] (malloc'ed). */
static void mlp_run(nb_dtype dt, const tu_ref *ref, float **out) {
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {8, 5}, n = 8, w1s[2] = {6, 5}, b1s[1] = {6}, w2s[2] = {3, 6}, b2s[1] = {3};
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "labels", NB_I64, 1, &n);
  nb_tensor *p[4] = {nb_param(g, "w1", 2, w1s, zero), nb_param(g, "b1", 1, b1s, zero),
                     nb_param(g, "w2", 2, w2s, zero), nb_param(g, "b2", 1, b2s, zero)};
  TU_OK(nb_graph_set_autocast(g, dt));
  nb_tensor *h = nb_relu(g, nb_add(g, nb_matmul(g, x, nb_transpose(g, p[0], 0, 1)), p[1]));
  nb_tensor *logits = nb_add(g, nb_matmul(g, h, nb_transpose(g, p[2], 0, 1)), p[3]);
  nb_tensor *loss = nb_cross_entropy(g, logits, y, 0.0f);
  /* left open on purpose: backward follows the forward ops' dtypes */
  TU_OK(nb_graph_status(g));
  int casts = count_op(g, "cast");
  TU_OK(nb_graph_backward(g, loss));
  /* bf16/f16: 4 forward casts, and one cast of the incoming gradient per
   * matmul; no cast back (the gradient ops return f32) */
  assert_int_equal(count_op(g, "cast") - casts, dt == NB_F32 ? 0 : 2);
  assert_int_equal(casts, dt == NB_F32 ? 0 : 4);
  nb_tensor *outs[5] = {loss};
  for (int i = 0; i < 4; i++) {
    outs[i + 1] = nb_graph_grad(g, p[i]);
    assert_non_null(outs[i + 1]);
    assert_int_equal(nb_tensor_dtype(outs[i + 1]), NB_F32);
  }
  for (int i = 0; i < 5; i++) nb_tensor_set_output(outs[i]);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  const char *vars[4] = {"w1", "b1", "w2", "b2"};
  for (int i = 0; i < 4; i++) {
    int64_t k;
    const float *v = tu_ref_get(ref, "mlp_data", vars[i], NULL, NULL, &k);
    TU_OK(nb_state_write(st, vars[i], v, (size_t)k * sizeof(float)));
  }
  int64_t labels[8];
  const float *lf = tu_ref_get(ref, "mlp_data", "labels", NULL, NULL, NULL);
  for (int i = 0; i < 8; i++) labels[i] = (int64_t)lf[i];
  TU_OK(nb_plan_set_input(plan, x, tu_ref_get(ref, "mlp_data", "x", NULL, NULL, NULL),
                          40 * sizeof(float)));
  TU_OK(nb_plan_set_input(plan, y, labels, sizeof labels));
  TU_OK(nb_plan_run(plan));
  for (int i = 0; i < 5; i++) {
    int64_t k = nb_tensor_numel(outs[i]);
    out[i] = malloc((size_t)k * sizeof(float));
    TU_OK(nb_plan_get(plan, outs[i], out[i], (size_t)k * sizeof(float)));
  }
  free_run(g, be, st, plan);
}

static void test_mlp_gradients(void **s) {
  (void)s;
  tu_ref *ref = tu_ref_load("amp.txt");
  static const char *const names[5] = {"loss", "g_w1", "g_b1", "g_w2", "g_b2"};
  static const int64_t sizes[5] = {1, 30, 6, 18, 3};
  const struct {
    nb_dtype dt;
    const char *case_name;
    double vs_f32; /* largest relative L2 difference from the f32 gradients */
  } modes[] = {{NB_F32, "mlp_f32", 1e-6}, {NB_BF16, "mlp_bf16", 3e-2}, {NB_F16, "mlp_f16", 4e-3}};
  const float *f32[5];
  for (int i = 0; i < 5; i++) f32[i] = tu_ref_get(ref, "mlp_f32", names[i], NULL, NULL, NULL);
  for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
    float *got[5];
    mlp_run(modes[m].dt, ref, got);
    for (int i = 0; i < 5; i++) {
      char what[64];
      snprintf(what, sizeof what, "%s %s", modes[m].case_name, names[i]);
      /* the exact emulation: only summation order differs */
      tu_assert_close(what, got[i], tu_ref_get(ref, modes[m].case_name, names[i], NULL, NULL, NULL),
                      (size_t)sizes[i], 1e-6, 1e-4);
      double d = rel_l2(got[i], f32[i], sizes[i]);
      print_message("%-8s %-5s vs f32: relative L2 %.2e\n", modes[m].case_name, names[i], d);
      assert_true(d <= modes[m].vs_f32);
      free(got[i]);
    }
  }
  tu_ref_free(ref);
}

/* ---- the API --------------------------------------------------------------------- */

static void test_autocast_api(void **s) {
  (void)s;
  nb_graph *g = nb_graph_new();
  int64_t as[2] = {2, 3}, bs[2] = {3, 4};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, as), *b = nb_input(g, "b", NB_F32, 2, bs);
  assert_int_equal(nb_graph_autocast(g), NB_F32);
  assert_int_equal(nb_graph_set_autocast(NULL, NB_BF16), NB_ERR_INVALID_ARG);
  /* mixed dtypes are an error naming both */
  assert_null(nb_matmul(g, a, nb_cast(g, b, NB_BF16)));
  assert_int_equal(nb_graph_status(g), NB_ERR_DTYPE);
  assert_non_null(strstr(nb_graph_error(g), "f32 and bf16"));
  nb_graph_free(g);

  g = nb_graph_new();
  assert_int_equal(nb_graph_set_autocast(g, NB_I32), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "i32"));
  nb_graph_free(g);

  /* backward does not autocast f32 matmuls built outside the scope */
  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 2, as);
  nb_tensor_set_requires_grad(a, 1);
  b = nb_input(g, "b", NB_F32, 2, bs);
  nb_tensor *loss = nb_sum(g, nb_matmul(g, a, b), 0, NULL, 0);
  TU_OK(nb_graph_set_autocast(g, NB_F16));
  TU_OK(nb_graph_backward(g, loss));
  assert_int_equal(count_op(g, "cast"), 0);
  assert_int_equal(nb_graph_autocast(g), NB_F16); /* restored after backward */
  nb_graph_free(g);

  /* precision names, the model-file key and the override */
  nb_precision p;
  TU_OK(nb_precision_parse("bf16", &p));
  assert_int_equal(p, NB_PRECISION_BF16);
  TU_OK(nb_precision_parse("float16", &p));
  assert_int_equal(p, NB_PRECISION_FP16);
  assert_int_equal(nb_precision_parse("fp8", &p), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "fp32, bf16 or fp16"));
  assert_string_equal(nb_precision_name(NB_PRECISION_FP32), "fp32");
  assert_int_equal(nb_precision_dtype(NB_PRECISION_BF16), NB_BF16);
  assert_int_equal(nb_precision_dtype(NB_PRECISION_FP16), NB_F16);
  nb_model *m = NULL;
  TU_OK(nb_model_parse("[net]\ninput = 4\n[train]\nprecision = bf16\n[linear fc]\nout = 2\n",
                       "amp.cfg", &m));
  assert_int_equal(nb_model_recipe(m)->precision, NB_PRECISION_BF16);
  TU_OK(nb_model_set_precision(m, NB_PRECISION_FP16));
  assert_int_equal(nb_model_recipe(m)->precision, NB_PRECISION_FP16);
  assert_int_equal(nb_model_set_precision(m, (nb_precision)7), NB_ERR_INVALID_ARG);
  nb_model_free(m);
  m = NULL;
  assert_int_equal(nb_model_parse("[net]\ninput = 4\n[train]\nprecision = tf32\n[linear fc]\nout "
                                  "= 2\n",
                                  "amp.cfg", &m),
                   NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "amp.cfg:4"));
  assert_non_null(strstr(nb_last_error(), "fp32, bf16 or fp16"));
  assert_null(m);
  nb_model_parse("[net]\ninput = 4\n[linear fc]\nout = 2\n", "amp.cfg", &m);
  assert_int_equal(nb_model_recipe(m)->precision, NB_PRECISION_FP32); /* the default */
  nb_model_free(m);

  /* the scaler's and Adam's bookkeeping is optimizer state, not weights */
  assert_true(nb_optimizer_owns(NB_GRAD_SCALER_SCALE));
  assert_true(nb_optimizer_owns(NB_GRAD_SCALER_SKIPPED));
  assert_true(nb_optimizer_owns("optim.step"));
  assert_false(nb_optimizer_owns("fc.weight"));
}

/* ---- the grad scaler -------------------------------------------------------------- */

typedef struct {
  nb_graph *g;
  nb_tensor *x, *k, *loss, *found;
  nb_optimizer *opt;
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
} scaled_step;

/* loss = k * mean((x W)^2) over a [4, 3] x [3, 2] product, k an input that
 * makes the gradients overflow when huge; Adam (or SGD with momentum)
 * under a grad scaler with init_scale 1024 and growth every 3 steps. */
static void scaled_build(scaled_step *s, int adam) {
  memset(s, 0, sizeof *s);
  s->g = nb_graph_new();
  nb_graph *g = s->g;
  int64_t xs[2] = {4, 3}, ws[2] = {3, 2};
  nb_init init = {NB_INIT_UNIFORM, -1.0f, 1.0f, 5};
  s->x = nb_input(g, "x", NB_F32, 2, xs);
  s->k = nb_input(g, "k", NB_F32, 0, NULL);
  nb_tensor *w = nb_param(g, "w", 2, ws, init);
  nb_tensor *y = nb_matmul(g, s->x, w);
  s->loss = nb_mul(g, nb_mean(g, nb_square(g, y), 0, NULL, 0), s->k);
  nb_grad_scaler_options o = nb_grad_scaler_defaults();
  assert_float_equal(o.init_scale, 65536.0f, 0);
  assert_int_equal(o.growth_interval, 2000);
  o.init_scale = 1024.0f;
  o.growth_interval = 3;
  nb_grad_scaler *gs = NULL;
  TU_OK(nb_grad_scaler_new(g, s->loss, &o, &gs));
  assert_null(nb_grad_scaler_found_inf(gs));
  /* out of order: nothing to unscale yet, nothing to update */
  assert_int_equal(nb_grad_scaler_unscale(gs), NB_ERR_STATE);
  assert_int_equal(nb_grad_scaler_update(gs), NB_ERR_STATE);
  TU_OK(nb_graph_backward(g, nb_grad_scaler_loss(gs)));
  TU_OK(nb_grad_scaler_unscale(gs));
  assert_int_equal(nb_grad_scaler_unscale(gs), NB_ERR_STATE);
  if (adam)
    TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &s->opt));
  else
    TU_OK(nb_optimizer_sgd(g, 0.9f, 0.0f, 0, &s->opt));
  TU_OK(nb_grad_scaler_update(gs));
  s->found = nb_grad_scaler_found_inf(gs);
  assert_non_null(s->found);
  nb_grad_scaler_free(gs);
  nb_tensor_set_output(s->loss);
  nb_tensor_set_output(s->found);
  TU_OK(nb_graph_status(g));
  TU_OK(nb_backend_new("cpu", &s->be));
  TU_OK(nb_state_new(s->be, &s->st));
  TU_OK(nb_compile(g, s->be, s->st, NULL, &s->p));
  float x[12];
  for (int i = 0; i < 12; i++) x[i] = 0.25f * (float)(i % 5) - 0.4f;
  TU_OK(nb_plan_set_input(s->p, s->x, x, sizeof x));
}

/* One step with loss factor k (update number `step` for the feed); returns
 * found_inf. */
static float scaled_run(scaled_step *s, float k, int64_t step) {
  TU_OK(nb_plan_set_input(s->p, s->k, &k, sizeof k));
  TU_OK(nb_optimizer_feed(s->opt, s->p, step, 0.05f));
  TU_OK(nb_plan_run(s->p));
  float found = -1;
  TU_OK(nb_plan_get(s->p, s->found, &found, sizeof found));
  return found;
}

static float read_scalar(const nb_state *st, const char *name) {
  float v = NAN;
  TU_OK(nb_state_read(st, name, &v, sizeof v));
  return v;
}

static void scaled_free(scaled_step *s) {
  nb_optimizer_free(s->opt);
  nb_plan_free(s->p);
  nb_state_free(s->st);
  nb_backend_free(s->be);
  nb_graph_free(s->g);
}

/* Only the model's and the optimizer's variables, not the scaler's. */
static void snapshot_model(const nb_state *st, tu_snapshot *out) {
  tu_snapshot all;
  tu_snapshot_take(st, &all);
  memset(out, 0, sizeof *out);
  out->name = calloc((size_t)all.n, sizeof *out->name);
  out->v = calloc((size_t)all.n, sizeof *out->v);
  out->bytes = calloc((size_t)all.n, sizeof *out->bytes);
  for (int i = 0; i < all.n; i++) {
    if (!strncmp(all.name[i], "amp.", 4)) continue;
    out->name[out->n] = all.name[i];
    out->v[out->n] = all.v[i];
    out->bytes[out->n] = all.bytes[i];
    all.name[i] = NULL;
    all.v[i] = NULL;
    out->n++;
  }
  tu_snapshot_free(&all);
}

static void test_scaler_skips_and_grows(void **s) {
  (void)s;
  scaled_step A, B;
  scaled_build(&A, 1);
  scaled_build(&B, 1);
  tu_snapshot before, after;
  snapshot_model(A.st, &before); /* compiling filled the variables */
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SCALE), 1024.0f, 0);
  /* k = 1e36: the scaled loss and every gradient are inf -> skipped */
  assert_float_equal(scaled_run(&A, 1e36f, 1), 1.0f, 0);
  snapshot_model(A.st, &after);
  tu_snapshot_assert_equal(&before, &after, "after a skipped step");
  tu_snapshot_free(&after);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SCALE), 512.0f, 0);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_GROWTH), 0.0f, 0);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SKIPPED), 1.0f, 0);
  assert_float_equal(read_scalar(A.st, "optim.step"), 0.0f, 0);
  /* then finite steps: A at scale 512, B (never skipped) at 1024. The
   * scales are powers of two, so the unscaled gradients agree bit for bit,
   * and Adam's in-graph step count makes A's first real update B's first:
   * the two runs stay identical, moments and step count included. */
  for (int i = 1; i <= 3; i++) {
    assert_float_equal(scaled_run(&A, 1.0f, 1 + i), 0.0f, 0);
    assert_float_equal(scaled_run(&B, 1.0f, i), 0.0f, 0);
    tu_snapshot sa, sb;
    snapshot_model(A.st, &sa);
    snapshot_model(B.st, &sb);
    tu_snapshot_assert_equal(&sa, &sb, "skipped run vs clean run");
    tu_snapshot_free(&sa);
    tu_snapshot_free(&sb);
    float loss_a, loss_b;
    TU_OK(nb_plan_get(A.p, A.loss, &loss_a, sizeof loss_a));
    TU_OK(nb_plan_get(B.p, B.loss, &loss_b, sizeof loss_b));
    assert_memory_equal(&loss_a, &loss_b, sizeof loss_a);
    /* growth after 3 finite steps in a row, the tracker back to 0 */
    assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_GROWTH), i < 3 ? (float)i : 0.0f, 0);
    assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SCALE), i < 3 ? 512.0f : 1024.0f, 0);
    assert_float_equal(read_scalar(B.st, NB_GRAD_SCALER_SCALE), i < 3 ? 1024.0f : 2048.0f, 0);
    assert_float_equal(read_scalar(A.st, "optim.step"), (float)i, 0);
  }
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SKIPPED), 1.0f, 0);
  assert_float_equal(read_scalar(B.st, NB_GRAD_SCALER_SKIPPED), 0.0f, 0);
  /* the weights did move */
  snapshot_model(A.st, &after);
  assert_memory_not_equal(before.v[0], after.v[0], before.bytes[0]);
  tu_snapshot_free(&after);
  tu_snapshot_free(&before);
  /* an overflow in the middle of a run backs off again and resets growth */
  assert_float_equal(scaled_run(&A, 1.0f, 5), 0.0f, 0);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_GROWTH), 1.0f, 0);
  snapshot_model(A.st, &before);
  assert_float_equal(scaled_run(&A, INFINITY, 6), 1.0f, 0);
  snapshot_model(A.st, &after);
  tu_snapshot_assert_equal(&before, &after, "after a second skipped step");
  tu_snapshot_free(&before);
  tu_snapshot_free(&after);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SCALE), 512.0f, 0);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_GROWTH), 0.0f, 0);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SKIPPED), 2.0f, 0);
  scaled_free(&A);
  scaled_free(&B);
}

/* SGD with momentum: a skipped step leaves the weights and the momentum
 * buffer as they were; a NaN loss factor is caught like an inf. */
static void test_scaler_skips_sgd(void **s) {
  (void)s;
  scaled_step A;
  scaled_build(&A, 0);
  assert_float_equal(scaled_run(&A, 1.0f, 1), 0.0f, 0);
  tu_snapshot before, after;
  snapshot_model(A.st, &before);
  assert_int_equal(before.n, 2); /* w and w.momentum */
  assert_float_equal(scaled_run(&A, NAN, 2), 1.0f, 0);
  snapshot_model(A.st, &after);
  tu_snapshot_assert_equal(&before, &after, "sgd after a skipped step");
  tu_snapshot_free(&after);
  assert_float_equal(scaled_run(&A, 1.0f, 3), 0.0f, 0);
  snapshot_model(A.st, &after);
  assert_memory_not_equal(before.v[0], after.v[0], before.bytes[0]);
  tu_snapshot_free(&after);
  tu_snapshot_free(&before);
  assert_float_equal(read_scalar(A.st, NB_GRAD_SCALER_SKIPPED), 1.0f, 0);
  scaled_free(&A);
}

static void test_scaler_errors(void **s) {
  (void)s;
  nb_graph *g = nb_graph_new();
  nb_tensor *loss = nb_scalar(g, 1.0f);
  nb_grad_scaler *gs = NULL;
  nb_grad_scaler_options o = nb_grad_scaler_defaults();
  o.backoff_factor = 1.5f;
  assert_int_equal(nb_grad_scaler_new(g, loss, &o, &gs), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "backoff_factor"));
  assert_null(gs);
  o = nb_grad_scaler_defaults();
  o.growth_interval = 0;
  assert_int_equal(nb_grad_scaler_new(g, loss, &o, &gs), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_grad_scaler_new(NULL, loss, NULL, &gs), NB_ERR_INVALID_ARG);
  int64_t two = 2;
  nb_tensor *vec = nb_input(g, "v", NB_F32, 1, &two);
  assert_int_equal(nb_grad_scaler_new(g, vec, NULL, &gs), NB_ERR_INVALID_ARG);
  nb_grad_scaler_free(NULL);
  nb_graph_free(g);
}

/* ---- a model file trained in bf16 and fp16 ------------------------------------ */

static const char *small_cnn = "[net]\n"
                               "input = 1, 8, 8\n"
                               "classes = 3\n"
                               "[train]\n"
                               "optimizer = adam\n"
                               "lr = 0.01\n"
                               "seed = 3\n"
                               "[conv2d c1]\n"
                               "out = 4\n"
                               "kernel = 3\n"
                               "padding = 1\n"
                               "activation = relu\n"
                               "[maxpool2d]\n"
                               "kernel = 2\n"
                               "[flatten]\n"
                               "[linear fc1]\n"
                               "out = 16\n"
                               "activation = relu\n"
                               "[linear fc2]\n"
                               "out = 3\n";

#define CNN_STEPS 12
#define CNN_BATCH 16

/* CNN_STEPS steps of the model file's recipe in `prec`, as nb_fit builds
 * them: the losses, and the grad scaler's state (fp16). */
static void train_cnn(nb_precision prec, float *losses, float *scale, float *skipped) {
  nb_model *m = NULL;
  TU_OK(nb_model_parse(small_cnn, "small_cnn.cfg", &m));
  TU_OK(nb_model_set_precision(m, prec));
  const nb_recipe *r = nb_model_recipe(m);
  nb_graph *g = nb_graph_new();
  int64_t batch = CNN_BATCH;
  nb_tensor *x = nb_model_new_input(m, g, "x", batch), *y = nb_input(g, "y", NB_I64, 1, &batch);
  nb_nn nn = {.g = g, .training = 1, .seed = r->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  TU_OK(nb_graph_set_autocast(g, nb_precision_dtype(r->precision)));
  TU_OK(nb_model_build(m, &nn, x, &logits));
  TU_OK(nb_graph_set_autocast(g, NB_F32));
  assert_int_equal(count_op(g, "cast") > 0, prec != NB_PRECISION_FP32);
  nb_tensor *loss = nb_cross_entropy(g, logits, y, 0.0f);
  nb_tensor_set_output(loss);
  nb_optimizer *opt = NULL;
  TU_OK(nb_recipe_update(r, g, loss, NULL, &opt));
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float xb[CNN_BATCH * 64];
  int64_t yb[CNN_BATCH];
  for (int step = 1; step <= CNN_STEPS; step++) {
    nb_rng rng;
    nb_rng_seed(&rng, (uint64_t)step);
    nb_rng_fill_normal(&rng, xb, CNN_BATCH * 64, 0.0f, 0.5f);
    for (int i = 0; i < CNN_BATCH; i++) {
      int label = (int)(nb_rng_next(&rng) % 3);
      yb[i] = label;
      for (int k = 0; k < 8; k++) xb[i * 64 + label * 16 + k] += 2.0f; /* a bright row */
    }
    TU_OK(nb_plan_set_input(p, x, xb, sizeof xb));
    TU_OK(nb_plan_set_input(p, y, yb, sizeof yb));
    TU_OK(nb_optimizer_feed(opt, p, step, r->lr));
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, loss, &losses[step - 1], sizeof(float)));
  }
  *scale = *skipped = -1;
  if (prec == NB_PRECISION_FP16) {
    *scale = read_scalar(st, NB_GRAD_SCALER_SCALE);
    *skipped = read_scalar(st, NB_GRAD_SCALER_SKIPPED);
    assert_float_equal(read_scalar(st, "optim.step"), (float)(CNN_STEPS - *skipped), 0);
  } else {
    float v;
    assert_int_not_equal(nb_state_read(st, NB_GRAD_SCALER_SCALE, &v, sizeof v), NB_OK);
  }
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  nb_model_free(m);
}

static void test_model_file_trains(void **s) {
  (void)s;
  float ref[CNN_STEPS], got[CNN_STEPS], scale, skipped;
  train_cnn(NB_PRECISION_FP32, ref, &scale, &skipped);
  assert_true(ref[CNN_STEPS - 1] < 0.7f * ref[0]); /* it learns */
  const struct {
    nb_precision p;
    double tol;
  } modes[] = {{NB_PRECISION_BF16, 0.02}, {NB_PRECISION_FP16, 0.002}};
  for (int m = 0; m < 2; m++) {
    train_cnn(modes[m].p, got, &scale, &skipped);
    print_message("%s: step, fp32 loss, loss\n", nb_precision_name(modes[m].p));
    for (int i = 0; i < CNN_STEPS; i++) {
      print_message("  %2d %.6f %.6f\n", i + 1, ref[i], got[i]);
      assert_true(fabs(got[i] - ref[i]) <= modes[m].tol * (1 + fabs(ref[i])));
    }
    if (modes[m].p == NB_PRECISION_FP16) {
      print_message("fp16: loss scale %g, %g steps skipped\n", scale, skipped);
      assert_float_equal(skipped, 0.0f, 0); /* small gradients: no overflow */
      assert_float_equal(scale, 65536.0f, 0);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matmul_bf16),
      cmocka_unit_test(test_matmul_f16),
      cmocka_unit_test(test_conv_bf16),
      cmocka_unit_test(test_conv_f16),
      cmocka_unit_test(test_mlp_gradients),
      cmocka_unit_test(test_autocast_api),
      cmocka_unit_test(test_scaler_skips_and_grows),
      cmocka_unit_test(test_scaler_skips_sgd),
      cmocka_unit_test(test_scaler_errors),
      cmocka_unit_test(test_model_file_trains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
