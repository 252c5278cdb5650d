/* Pipeline schedules (src/compile/pipeline.c): a 4-layer MLP over three
 * logical CPU devices in 8 micro-batches, and the same model on one device
 * (gradient accumulation). 1F1B and GPipe must give the same loss, logits,
 * gradients and weights bit for bit, in order and with one thread per
 * device, and 1F1B must keep fewer micro-batches' activations: device d of
 * the 3-device chain holds 3 - d forward arenas instead of 8, one device
 * holds one instead of 8. Also: results read after the run (kept apart from
 * the shared arenas) are each micro-batch's own. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define BATCH 16
#define M     8
#define IN    12
#define WIDTH 32
#define OUT   5
#define STEPS 3

typedef struct {
  const char *dev[4]; /* device of each layer (NULL: unplaced) */
  int micro;          /* micro-batches */
  int schedule;       /* NB_SCHEDULE_* */
  int sequential;
} config;

typedef struct {
  float loss[STEPS];
  float logits[BATCH * OUT];
  float grad[IN * WIDTH]; /* fc0's weight gradient, first step */
  int n_vars;
  float *var[48];
  int64_t var_n[48];
  size_t arena[3]; /* per device */
  int devices;
} result;

static nb_tensor *linear(nb_nn *nn, const char *dev, const char *name, nb_tensor *x, int64_t out,
                         int relu) {
  TU_OK(nb_graph_set_device(nn->g, dev));
  nb_tensor *h = nb_nn_linear(nn, name, x, out, 1);
  return relu ? nb_relu(nn->g, h) : h;
}

/* Trains STEPS steps on micro-batches of `b` (the batch is BATCH examples
 * when b * c->micro == BATCH; a plain run of b < BATCH sees the first b). */
static void run_batch(const config *c, int64_t b, result *r) {
  memset(r, 0, sizeof *r);
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  for (int d = 0; d < 3; d++) {
    char name[8];
    snprintf(name, sizeof name, "cpu:%d", d);
    nb_backend *dev;
    TU_OK(nb_state_device(st, name, &dev));
    TU_OK(nb_backend_set_threads(dev, 1)); /* the same arithmetic either way */
  }
  int64_t xs[2] = {b, IN};
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs);
  nb_tensor *y = nb_input(g, "y", NB_I64, 1, &b);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = g, .training = 1, .seed = 3};
  nb_tensor *h = linear(&nn, c->dev[0], "fc0", x, WIDTH, 1);
  h = linear(&nn, c->dev[1], "fc1", h, WIDTH, 1);
  h = linear(&nn, c->dev[2], "fc2", h, WIDTH, 1);
  nb_tensor *logits = linear(&nn, c->dev[3], "fc3", h, OUT, 0);
  TU_OK(nb_graph_set_device(g, NULL));
  nb_tensor *loss = nb_cross_entropy(g, logits, y, 0.0f);
  nb_tensor_set_output(loss);
  nb_tensor_set_output(logits);
  nb_tensor_set_micro(logits, NB_MICRO_SPLIT);
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *w0 = NULL;
  for (int i = 0; i < nb_graph_node_count(g) && !w0; i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (nb_tensor_name(t) && !strcmp(nb_tensor_name(t), "fc0.weight")) w0 = t;
  }
  assert_non_null(w0);
  nb_tensor *gw0 = nb_graph_grad(g, w0);
  nb_tensor_set_output(gw0);
  nb_optimizer *opt;
  TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt));
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = c->micro;
  o.schedule = c->schedule;
  o.sequential = c->sequential;
  nb_plan *plan;
  TU_OK(nb_compile(g, be, st, &o, &plan));
  if (getenv("NB_TEST_VERBOSE")) TU_OK(nb_plan_print_placement(plan, stderr));
  r->devices = nb_plan_device_count(plan);
  for (int d = 0; d < r->devices; d++) {
    nb_plan_device info;
    TU_OK(nb_plan_device_info(plan, d, &info));
    r->arena[d] = info.arena_bytes;
  }
  float *xd = tu_rand(BATCH * IN, -1.0f, 1.0f, 11);
  int64_t yd[BATCH];
  for (int i = 0; i < BATCH; i++) yd[i] = (i * 7 + 3) % OUT;
  size_t n = (size_t)(b * c->micro);
  for (int s = 0; s < STEPS; s++) {
    TU_OK(nb_plan_set_input(plan, x, xd, n * IN * sizeof(float)));
    TU_OK(nb_plan_set_input(plan, y, yd, n * sizeof *yd));
    TU_OK(nb_optimizer_feed(opt, plan, s + 1, 0.01f));
    TU_OK(nb_plan_run(plan));
    TU_OK(nb_plan_get(plan, loss, &r->loss[s], sizeof(float)));
    if (s) continue;
    TU_OK(nb_plan_get(plan, logits, r->logits, n * OUT * sizeof(float)));
    TU_OK(nb_plan_get(plan, gw0, r->grad, sizeof r->grad));
  }
  r->n_vars = nb_state_count(st);
  assert_true(r->n_vars <= 48);
  for (int i = 0; i < r->n_vars; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    r->var_n[i] = nb_shape_numel(nd, shape);
    r->var[i] = malloc((size_t)r->var_n[i] * sizeof(float));
    TU_OK(nb_state_read(st, name, r->var[i], (size_t)r->var_n[i] * sizeof(float)));
  }
  free(xd);
  nb_plan_free(plan);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

static void run(const config *c, result *r) { run_batch(c, BATCH / c->micro, r); }

static void result_free(result *r) {
  for (int i = 0; i < r->n_vars; i++) free(r->var[i]);
}

static void assert_identical(const result *a, const result *b) {
  assert_memory_equal(a->loss, b->loss, sizeof a->loss);
  assert_memory_equal(a->logits, b->logits, sizeof a->logits);
  assert_memory_equal(a->grad, b->grad, sizeof a->grad);
  assert_int_equal(a->n_vars, b->n_vars);
  for (int i = 0; i < a->n_vars; i++) {
    assert_int_equal(a->var_n[i], b->var_n[i]);
    assert_memory_equal(a->var[i], b->var[i], (size_t)a->var_n[i] * sizeof(float));
  }
}

/* Within 1e-5 of the largest magnitude: what one batch of 16 computes. */
static void assert_near(const char *what, const float *got, const float *want, int n) {
  float scale = 0.0f;
  for (int i = 0; i < n; i++) scale = fabsf(want[i]) > scale ? fabsf(want[i]) : scale;
  tu_assert_close(what, got, want, (size_t)n, 1e-5 * scale + 1e-30, 0.0);
}

static void assert_like_one_batch(const result *r) {
  config c = {{NULL, NULL, NULL, NULL}, 1, NB_SCHEDULE_1F1B, 1};
  result ref;
  run(&c, &ref);
  assert_near("loss", r->loss, ref.loss, STEPS);
  assert_near("logits", r->logits, ref.logits, BATCH * OUT);
  assert_near("fc0 weight gradient", r->grad, ref.grad, IN * WIDTH);
  for (int i = 0; i < ref.n_vars; i++)
    assert_near("variable", r->var[i], ref.var[i], (int)ref.var_n[i]);
  result_free(&ref);
}

static void print_arenas(const char *what, const result *r) {
  if (!getenv("NB_TEST_VERBOSE")) return;
  fprintf(stderr, "%s:", what);
  for (int d = 0; d < r->devices; d++) fprintf(stderr, " %zu", r->arena[d]);
  fprintf(stderr, "\n");
}

static void test_chain_1f1b_equals_gpipe(void **state) {
  (void)state;
  for (int seq = 1; seq >= 0; seq--) {
    config c = {{"cpu:0", "cpu:1", "cpu:2", "cpu:2"}, M, NB_SCHEDULE_GPIPE, seq};
    result gpipe, one;
    run(&c, &gpipe);
    c.schedule = NB_SCHEDULE_1F1B;
    run(&c, &one);
    print_arenas("gpipe", &gpipe);
    print_arenas("1f1b", &one);
    assert_identical(&one, &gpipe);
    assert_like_one_batch(&one);
    /* fewer micro-batches open on the first two devices; the last runs
     * each micro-batch's forward and backward in one go either way */
    assert_int_equal(one.devices, 3);
    assert_true(one.arena[0] < gpipe.arena[0]);
    assert_true(one.arena[1] < gpipe.arena[1]);
    assert_true(one.arena[2] <= gpipe.arena[2]);
    result_free(&gpipe);
    result_free(&one);
  }
}

static void test_one_device(void **state) {
  (void)state;
  config c = {{NULL, NULL, NULL, NULL}, M, NB_SCHEDULE_GPIPE, 1};
  result gpipe, one;
  run(&c, &gpipe);
  c.schedule = NB_SCHEDULE_1F1B;
  run(&c, &one);
  print_arenas("one device gpipe", &gpipe);
  print_arenas("one device 1f1b", &one);
  assert_identical(&one, &gpipe);
  assert_like_one_batch(&one);
  /* gradient accumulation: the 8 micro-batches run one after another in
   * one arena, so the memory is about that of one plain micro-batch step
   * (plus each micro-batch's loss, logits and gradient kept apart), not 8 */
  config plain = {{NULL, NULL, NULL, NULL}, M, NB_SCHEDULE_1F1B, 1};
  plain.micro = 1;
  result ref;
  run_batch(&plain, BATCH / M, &ref);
  print_arenas("one micro-batch, plain", &ref);
  size_t apart = 64 + 64 + IN * WIDTH * sizeof(float); /* loss, logits, fc0's gradient */
  assert_true(one.arena[0] <= ref.arena[0] + M * apart);
  assert_true(one.arena[0] < 3 * ref.arena[0]); /* was 8 arenas before sharing */
  result_free(&ref);
  result_free(&gpipe);
  result_free(&one);
}

/* A small CNN split after its convolutions (conv + ReLU + pool on cpu:0,
 * the head on cpu:1), without micro-batches: the ReLU gradient masks
 * (gt(y, 0)) and the optimizer's terms of the parameters are computed next
 * to their readers in the backward segment and fuse there, as on one
 * device, instead of being materialized in the forward segment and handed
 * over (partition.c): the same kernel count as one device, and on cpu:0
 * only the forward activations kept for the backward pass. */
static void cnn_plan(const char *head, nb_plan_stats *stats, size_t *arena0) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  int64_t xs[4] = {8, 1, 12, 12}, ys = 8;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 4, xs), *y = nb_input(g, "y", NB_I64, 1, &ys);
  nb_nn nn = {.g = g, .training = 1, .seed = 5};
  nb_conv2d_params cp = nb_conv2d_defaults();
  nb_pool2d_params pp = nb_pool2d_defaults(2, 2);
  if (head) TU_OK(nb_graph_set_device(g, "cpu:0"));
  nb_tensor *h = nb_max_pool2d(g, nb_relu(g, nb_nn_conv2d(&nn, "c1", x, 8, 3, 3, &cp, 1)), &pp);
  TU_OK(nb_graph_set_device(g, head));
  h = nb_nn_linear(&nn, "fc", nb_nn_flatten(&nn, h), OUT, 1);
  TU_OK(nb_graph_set_device(g, NULL));
  nb_tensor *loss = nb_cross_entropy(g, h, y, 0.0f);
  nb_tensor_set_output(loss);
  TU_OK(nb_graph_backward(g, loss));
  nb_optimizer *opt;
  TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt));
  nb_plan *plan;
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  *stats = nb_plan_get_stats(plan);
  if (getenv("NB_TEST_VERBOSE")) TU_OK(nb_plan_print_placement(plan, stderr));
  nb_plan_device info;
  TU_OK(nb_plan_device_info(plan, 0, &info));
  *arena0 = info.arena_bytes;
  nb_plan_free(plan);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

static void test_split_fuses_like_one_device(void **state) {
  (void)state;
  nb_plan_stats one, split;
  size_t a1, a0;
  cnn_plan(NULL, &one, &a1);
  cnn_plan("cpu:1", &split, &a0);
  if (getenv("NB_TEST_VERBOSE"))
    fprintf(stderr, "one device: %d kernels, arena %zu; split: %d kernels, cpu:0 %zu\n",
            one.kernels, one.arena_bytes, split.kernels, a0);
  assert_int_equal(split.devices, 2);
  assert_int_equal(split.kernels, one.kernels);
  /* cpu:0 keeps conv1's ReLU output [8, 8, 10, 10] and the pooled
   * [8, 8, 5, 5] (each rounded up to 64 bytes) for its backward segment,
   * and runs both segments in one arena no larger than one device's */
  size_t kept = 8 * 8 * 10 * 10 * 4 + 8 * 8 * 5 * 5 * 4;
  assert_true(a0 <= kept + one.arena_bytes);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chain_1f1b_equals_gpipe),
      cmocka_unit_test(test_one_device),
      cmocka_unit_test(test_split_fuses_like_one_device),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
