/* Model parallelism on logical CPU devices: a small MLP and a small CNN
 * split over cpu:0 and cpu:1, run in order and with one thread per device,
 * with and without GPipe micro-batches, must compute what the same model
 * computes on one device (the reference run, same seed): the loss, the
 * logits and the gradients of the first step, and every variable (weights,
 * optimizer moments) after a few SGD and Adam steps, within 1e-5 of each
 * tensor's largest magnitude. Also: transfers appear exactly where an edge
 * crosses devices, the placement rules, bad placements, batch norm's
 * running mean under micro-batches, and per-device thread counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { MLP, CNN };
enum { SGD, ADAM };

#define BATCH     8
#define CLASSES   5
#define STEPS     3
#define MAX_VARS  48
#define MAX_GRADS 16

typedef struct {
  int model;
  int bn;             /* CNN: batch norm after conv1 */
  const char *dev[3]; /* device of layer block 0, 1, 2 (NULL: unplaced) */
  int M;              /* micro-batches (1: none) */
  int sequential;     /* run devices in order on one thread */
  int optim;          /* SGD (momentum 0.9) or ADAM */
  int threads;        /* > 0: every device's own thread count */
  int steps;          /* training steps (0: STEPS) */
} config;

typedef struct {
  float loss;
  float logits[BATCH * CLASSES];
  int n_grads;
  char grad_name[MAX_GRADS][64];
  float *grad[MAX_GRADS];
  int64_t grad_n[MAX_GRADS];
  int n_vars;
  char var_name[MAX_VARS][64];
  char var_dev[MAX_VARS][16];
  float *var[MAX_VARS];
  int64_t var_n[MAX_VARS];
  nb_plan_stats stats;
} result;

static void result_free(result *r) {
  for (int i = 0; i < r->n_grads; i++) free(r->grad[i]);
  for (int i = 0; i < r->n_vars; i++) free(r->var[i]);
  memset(r, 0, sizeof *r);
}

/* The data of one batch: the same in every run. */
static float *batch_x(int model) {
  return tu_rand(model == MLP ? BATCH * 12 : BATCH * 64, -1.0f, 1.0f, 42);
}
static const int64_t labels[BATCH] = {0, 3, 1, 4, 2, 2, 0, 1};

static void scope(nb_graph *g, const char *dev) { TU_OK(nb_graph_set_device(g, dev)); }

/* The network on x [b, ...]: three blocks, each under its device's scope. */
static nb_tensor *network(const config *c, nb_nn *nn, nb_tensor *x) {
  nb_graph *g = nn->g;
  nb_tensor *h;
  if (c->model == MLP) {
    scope(g, c->dev[0]);
    h = nb_relu(g, nb_nn_linear(nn, "fc1", x, 16, 1));
    scope(g, c->dev[1]);
    h = nb_relu(g, nb_nn_linear(nn, "fc2", h, 16, 1));
    scope(g, c->dev[2]);
    h = nb_nn_linear(nn, "fc3", h, CLASSES, 1);
  } else {
    nb_conv2d_params p = nb_conv2d_defaults();
    p.padding[0] = p.padding[1] = 1;
    nb_pool2d_params pool = nb_pool2d_defaults(2, 2);
    scope(g, c->dev[0]);
    h = nb_nn_conv2d(nn, "conv1", x, 4, 3, 3, &p, 1);
    if (c->bn) h = nb_nn_batch_norm(nn, "bn1", h, 0.1f, 1e-5f);
    h = nb_max_pool2d(g, nb_relu(g, h), &pool);
    scope(g, c->dev[1]);
    p = nb_conv2d_defaults();
    h = nb_relu(g, nb_nn_conv2d(nn, "conv2", h, 6, 3, 3, &p, 1));
    scope(g, c->dev[2]);
    h = nb_nn_linear(nn, "fc", nb_nn_flatten(nn, h), CLASSES, 1);
  }
  scope(g, NULL);
  return h;
}

typedef struct {
  nb_graph *g;
  nb_tensor *x, *y, *loss, *logits;
  nb_tensor *grads[MAX_GRADS];
  const char *grad_names[MAX_GRADS];
  int n_grads;
  nb_optimizer *opt;
} step_graph;

/* Forward, backward and the optimizer for micro-batches of BATCH / M. */
static void build_step(const config *c, step_graph *s) {
  memset(s, 0, sizeof *s);
  int64_t b = BATCH / (c->M > 1 ? c->M : 1);
  s->g = nb_graph_new();
  nb_graph *g = s->g;
  int64_t xs[4] = {b, 1, 8, 8};
  if (c->model == MLP) xs[1] = 12;
  s->x = nb_input(g, "x", NB_F32, c->model == MLP ? 2 : 4, xs);
  s->y = nb_input(g, "labels", NB_I64, 1, &b);
  nb_tensor_set_micro(s->x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(s->y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = g, .training = 1, .seed = 7};
  s->logits = network(c, &nn, s->x);
  s->loss = nb_cross_entropy(g, s->logits, s->y, 0.0f);
  nb_tensor_set_output(s->loss);
  nb_tensor_set_output(s->logits);
  nb_tensor_set_micro(s->logits, NB_MICRO_SPLIT);
  TU_OK(nb_graph_status(g));
  TU_OK(nb_graph_backward(g, s->loss));
  for (int i = 0; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (!nb_tensor_requires_grad(t) || strcmp(nb_tensor_op_name(t), "variable")) continue;
    nb_tensor *gr = nb_graph_grad(g, t);
    assert_non_null(gr);
    assert_true(s->n_grads < MAX_GRADS);
    nb_tensor_set_output(gr);
    s->grad_names[s->n_grads] = nb_tensor_name(t);
    s->grads[s->n_grads++] = gr;
  }
  if (c->optim == SGD)
    TU_OK(nb_optimizer_sgd(g, 0.9f, 0.01f, 0, &s->opt));
  else
    TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &s->opt));
}

static void step_free(step_graph *s) {
  nb_optimizer_free(s->opt);
  nb_graph_free(s->g);
}

/* Trains STEPS steps from the seed's initial weights; keeps the first
 * step's outputs and the final state. */
static void run(const config *c, result *r) {
  memset(r, 0, sizeof *r);
  nb_backend *be = NULL;
  nb_state *st = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  if (c->threads > 0) {
    for (int d = 0; d < 3; d++) {
      nb_backend *dev = NULL;
      TU_OK(nb_state_device(st, c->dev[d] ? c->dev[d] : "cpu:0", &dev));
      TU_OK(nb_backend_set_threads(dev, c->threads));
    }
  }
  step_graph s;
  build_step(c, &s);
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = c->M;
  o.sequential = c->sequential;
  nb_plan *plan = NULL;
  TU_OK(nb_compile(s.g, be, st, &o, &plan));
  r->stats = nb_plan_get_stats(plan);
  if (getenv("NB_TEST_VERBOSE")) TU_OK(nb_plan_print_placement(plan, stderr));
  float *x = batch_x(c->model);
  size_t xbytes = (size_t)(c->model == MLP ? BATCH * 12 : BATCH * 64) * sizeof(float);
  for (int step = 1; step <= (c->steps ? c->steps : STEPS); step++) {
    TU_OK(nb_plan_set_input(plan, s.x, x, xbytes));
    TU_OK(nb_plan_set_input(plan, s.y, labels, sizeof labels));
    TU_OK(nb_optimizer_feed(s.opt, plan, step, 0.05f));
    TU_OK(nb_plan_run(plan));
    if (step > 1) continue;
    TU_OK(nb_plan_get(plan, s.loss, &r->loss, sizeof r->loss));
    TU_OK(nb_plan_get(plan, s.logits, r->logits, sizeof r->logits));
    for (int i = 0; i < s.n_grads; i++) {
      int64_t n = nb_tensor_numel(s.grads[i]);
      r->grad[i] = malloc((size_t)n * sizeof(float));
      r->grad_n[i] = n;
      snprintf(r->grad_name[i], sizeof r->grad_name[i], "%s", s.grad_names[i]);
      TU_OK(nb_plan_get(plan, s.grads[i], r->grad[i], (size_t)n * sizeof(float)));
    }
    r->n_grads = s.n_grads;
  }
  r->n_vars = nb_state_count(st);
  assert_true(r->n_vars <= MAX_VARS);
  for (int i = 0; i < r->n_vars; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    int64_t n = nb_shape_numel(nd, shape);
    snprintf(r->var_name[i], sizeof r->var_name[i], "%s", name);
    snprintf(r->var_dev[i], sizeof r->var_dev[i], "%s", nb_state_entry_device(st, i));
    r->var[i] = malloc((size_t)n * sizeof(float));
    r->var_n[i] = n;
    TU_OK(nb_state_read(st, name, r->var[i], (size_t)n * sizeof(float)));
  }
  free(x);
  nb_plan_free(plan);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);
}

/* |got - want| <= 1e-5 * max |want| for every element. */
static void assert_near(const char *what, const float *got, const float *want, int64_t n) {
  double scale = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
  tu_assert_close(what, got, want, (size_t)n, 1e-5 * scale + 1e-30, 0.0);
}

static void assert_same_run(const result *got, const result *ref) {
  assert_near("loss", &got->loss, &ref->loss, 1);
  assert_near("logits", got->logits, ref->logits, BATCH * CLASSES);
  assert_int_equal(got->n_grads, ref->n_grads);
  for (int i = 0; i < ref->n_grads; i++) {
    assert_string_equal(got->grad_name[i], ref->grad_name[i]);
    assert_near(ref->grad_name[i], got->grad[i], ref->grad[i], ref->grad_n[i]);
  }
  /* the state holds the same variables, in the same order */
  assert_int_equal(got->n_vars, ref->n_vars);
  for (int i = 0; i < ref->n_vars; i++) {
    assert_string_equal(got->var_name[i], ref->var_name[i]);
    assert_int_equal(got->var_n[i], ref->var_n[i]);
    assert_near(ref->var_name[i], got->var[i], ref->var[i], ref->var_n[i]);
  }
}

static void check_against_reference(config c) {
  config ref_c = c;
  ref_c.dev[0] = ref_c.dev[1] = ref_c.dev[2] = NULL;
  ref_c.M = 1;
  ref_c.sequential = 1;
  result ref, got;
  run(&ref_c, &ref);
  run(&c, &got);
  assert_int_equal(ref.stats.devices, 1);
  assert_true(got.stats.devices >= 1);
  assert_same_run(&got, &ref);
  result_free(&ref);
  result_free(&got);
}

/* ---- equivalence -------------------------------------------------------------- */

static void test_mlp_split(void **state) {
  (void)state;
  for (int optim = SGD; optim <= ADAM; optim++)
    for (int seq = 1; seq >= 0; seq--) {
      config c = {MLP, 0, {"cpu:0", "cpu:1", "cpu:1"}, 1, seq, optim, 0, 0};
      check_against_reference(c);
    }
}

static void test_mlp_pipelined(void **state) {
  (void)state;
  for (int M = 2; M <= 4; M *= 2)
    for (int seq = 1; seq >= 0; seq--)
      for (int optim = SGD; optim <= ADAM; optim++) {
        config c = {MLP, 0, {"cpu:0", "cpu:1", "cpu:1"}, M, seq, optim, 0, 0};
        check_against_reference(c);
      }
}

static void test_cnn_split(void **state) {
  (void)state;
  /* there and back: conv1 on cpu:1, conv2 on cpu:0, the head on cpu:1 */
  for (int seq = 1; seq >= 0; seq--) {
    config c = {CNN, 0, {"cpu:1", "cpu:0", "cpu:1"}, 1, seq, ADAM, 0, 0};
    check_against_reference(c);
  }
}

static void test_cnn_pipelined(void **state) {
  (void)state;
  for (int M = 2; M <= 4; M *= 2)
    for (int seq = 1; seq >= 0; seq--) {
      config c = {CNN, 0, {"cpu:0", "cpu:1", "cpu:1"}, M, seq, seq ? SGD : ADAM, 0, 0};
      check_against_reference(c);
    }
}

/* Gradient accumulation: micro-batches on one device. */
static void test_micro_batches_one_device(void **state) {
  (void)state;
  config c = {CNN, 0, {NULL, NULL, NULL}, 4, 1, ADAM, 0, 0};
  check_against_reference(c);
}

/* With the same thread count on every device, running devices on their
 * own threads does exactly the same arithmetic as running them in order. */
static void test_concurrent_equals_sequential(void **state) {
  (void)state;
  config seq = {CNN, 0, {"cpu:0", "cpu:1", "cpu:1"}, 4, 1, ADAM, 1, 0};
  config con = seq;
  con.sequential = 0;
  result a, b;
  run(&seq, &a);
  run(&con, &b);
  assert_true(a.loss == b.loss);
  assert_memory_equal(a.logits, b.logits, sizeof a.logits);
  for (int i = 0; i < a.n_vars; i++)
    assert_memory_equal(a.var[i], b.var[i], (size_t)a.var_n[i] * sizeof(float));
  result_free(&a);
  result_free(&b);
}

/* ---- placement and transfers ---------------------------------------------------- */

static void compile_step(const config *c, step_graph *s, nb_backend **be, nb_state **st,
                         nb_plan **plan) {
  TU_OK(nb_backend_new("cpu", be));
  TU_OK(nb_state_new(*be, st));
  build_step(c, s);
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = c->M;
  o.sequential = c->sequential;
  TU_OK(nb_compile(s->g, *be, *st, &o, plan));
}

static void test_transfers_where_edges_cross(void **state) {
  (void)state;
  step_graph s;
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  /* fc1 on cpu:0, fc2 and fc3 on cpu:1: one edge crosses, both ways */
  config c = {MLP, 0, {"cpu:0", "cpu:1", "cpu:1"}, 1, 1, ADAM, 0, 0};
  compile_step(&c, &s, &be, &st, &plan);
  assert_int_equal(nb_plan_device_count(plan), 2);
  assert_int_equal(nb_plan_transfer_count(plan), 2);
  nb_plan_stats ps = nb_plan_get_stats(plan);
  assert_int_equal(ps.devices, 2);
  assert_int_equal(ps.transfers, 2);
  assert_int_equal(ps.transfer_bytes, 2 * BATCH * 16 * sizeof(float));
  nb_plan_transfer fwd, bwd;
  TU_OK(nb_plan_transfer_info(plan, 0, &fwd));
  TU_OK(nb_plan_transfer_info(plan, 1, &bwd));
  /* forward: fc1's activation goes to cpu:1 */
  assert_string_equal(fwd.src, "cpu:0");
  assert_string_equal(fwd.dst, "cpu:1");
  assert_string_equal(nb_tensor_op_name(fwd.node), "relu");
  assert_int_equal(fwd.bytes, BATCH * 16 * sizeof(float));
  assert_int_equal(fwd.per_run, 1);
  /* backward: its gradient comes back */
  assert_string_equal(bwd.src, "cpu:1");
  assert_string_equal(bwd.dst, "cpu:0");
  assert_int_equal(bwd.bytes, BATCH * 16 * sizeof(float));
  assert_true(nb_tensor_id(bwd.node) > nb_tensor_id(s.loss));
  assert_int_equal(nb_plan_transfer_info(plan, 2, &fwd), NB_ERR_INVALID_ARG);
  /* backward nodes sit with their forward node, gradients with their
   * parameter, an unplaced optimizer's moments with the gradient */
  nb_tensor *w2 = nb_graph_find(s.g, "fc2.weight");
  assert_string_equal(nb_tensor_device(w2), "cpu:1");
  assert_string_equal(nb_tensor_device(nb_graph_grad(s.g, w2)), "cpu:1");
  assert_string_equal(nb_tensor_device(nb_graph_grad(s.g, nb_graph_find(s.g, "fc1.weight"))),
                      "cpu:0");
  for (int i = 0; i < nb_state_count(st); i++) {
    const char *name;
    TU_OK(nb_state_entry(st, i, &name, NULL, NULL, NULL));
    const char *want = !strncmp(name, "fc1.", 4) ? "cpu:0" : "cpu:1";
    if (strcmp(nb_state_entry_device(st, i), want))
      fail_msg("%s lives on %s, expected %s", name, nb_state_entry_device(st, i), want);
  }
  nb_plan_device d0, d1;
  TU_OK(nb_plan_device_info(plan, 0, &d0));
  TU_OK(nb_plan_device_info(plan, 1, &d1));
  assert_string_equal(d0.name, "cpu:0");
  assert_string_equal(d1.name, "cpu:1");
  assert_true(d0.arena_bytes > 0 && d1.arena_bytes > 0 && d0.kernels > 0 && d1.kernels > 0);
  assert_int_equal(ps.kernels, d0.kernels + d1.kernels);
  nb_plan_free(plan);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);

  /* pipelined over 4 micro-batches: the same two edges, once per micro-batch */
  c.M = 4;
  compile_step(&c, &s, &be, &st, &plan);
  assert_int_equal(nb_plan_transfer_count(plan), 2);
  TU_OK(nb_plan_transfer_info(plan, 0, &fwd));
  assert_int_equal(fwd.per_run, 4);
  assert_int_equal(fwd.bytes, BATCH / 4 * 16 * sizeof(float));
  ps = nb_plan_get_stats(plan);
  assert_int_equal(ps.transfers, 8);
  nb_plan_free(plan);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);

  /* everything on one device, even placed there explicitly: no transfers,
   * an ordinary plan */
  config one = {MLP, 0, {"cpu:0", "cpu", "cpu:0"}, 1, 1, ADAM, 0, 0};
  compile_step(&one, &s, &be, &st, &plan);
  assert_int_equal(nb_plan_device_count(plan), 1);
  assert_int_equal(nb_plan_transfer_count(plan), 0);
  assert_int_equal(nb_plan_get_stats(plan).transfers, 0);
  nb_plan_free(plan);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);

  /* everything on cpu:1: one device, no transfers either */
  config other = {MLP, 0, {"cpu:1", "cpu:1", "cpu:1"}, 1, 1, ADAM, 0, 0};
  compile_step(&other, &s, &be, &st, &plan);
  assert_int_equal(nb_plan_device_count(plan), 1);
  assert_int_equal(nb_plan_transfer_count(plan), 0);
  nb_plan_device d;
  TU_OK(nb_plan_device_info(plan, 0, &d));
  assert_string_equal(d.name, "cpu:1");
  nb_plan_free(plan);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);
}

/* An evaluation graph built without placement follows the state: its
 * variables stay where training put them, and it computes the same. */
static void test_unplaced_graph_follows_state(void **state) {
  (void)state;
  step_graph s;
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  config c = {MLP, 0, {"cpu:0", "cpu:1", "cpu:1"}, 1, 1, SGD, 0, 0};
  compile_step(&c, &s, &be, &st, &plan);
  float *x = batch_x(MLP);
  TU_OK(nb_plan_set_input(plan, s.x, x, BATCH * 12 * sizeof(float)));
  TU_OK(nb_plan_set_input(plan, s.y, labels, sizeof labels));
  TU_OK(nb_optimizer_feed(s.opt, plan, 1, 0.05f));
  TU_OK(nb_plan_run(plan));
  nb_plan_free(plan);
  /* eval: the same network, unplaced, after one update */
  config e = {MLP, 0, {NULL, NULL, NULL}, 1, 1, SGD, 0, 0};
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {BATCH, 12};
  nb_tensor *xin = nb_input(g, "x", NB_F32, 2, xs);
  nb_nn nn = {.g = g, .seed = 7};
  nb_tensor *logits = network(&e, &nn, xin);
  nb_tensor_set_output(logits);
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  assert_int_equal(nb_plan_device_count(plan), 2);
  TU_OK(nb_plan_set_input(plan, xin, x, BATCH * 12 * sizeof(float)));
  TU_OK(nb_plan_run(plan));
  float got[BATCH * CLASSES], want[BATCH * CLASSES];
  TU_OK(nb_plan_get(plan, logits, got, sizeof got));
  nb_plan_free(plan);
  /* the reference: the trained weights copied into a one-device state */
  nb_state *one;
  TU_OK(nb_state_new(be, &one));
  nb_plan *ref;
  nb_graph *g2 = nb_graph_new();
  nb_tensor *x2 = nb_input(g2, "x", NB_F32, 2, xs);
  nn.g = g2;
  nb_tensor *l2 = network(&e, &nn, x2);
  nb_tensor_set_output(l2);
  TU_OK(nb_compile(g2, be, one, NULL, &ref));
  assert_int_equal(nb_plan_device_count(ref), 1);
  for (int i = 0; i < nb_state_count(one); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(one, i, &name, NULL, &nd, &shape));
    size_t bytes = (size_t)nb_shape_numel(nd, shape) * sizeof(float);
    float *buf = malloc(bytes);
    TU_OK(nb_state_read(st, name, buf, bytes));
    TU_OK(nb_state_write(one, name, buf, bytes));
    free(buf);
  }
  TU_OK(nb_plan_set_input(ref, x2, x, BATCH * 12 * sizeof(float)));
  TU_OK(nb_plan_run(ref));
  TU_OK(nb_plan_get(ref, l2, want, sizeof want));
  assert_memory_equal(got, want, sizeof got);
  nb_plan_free(ref);
  nb_graph_free(g2);
  nb_graph_free(g);
  nb_state_free(one);
  free(x);
  step_free(&s);
  nb_state_free(st);
  nb_backend_free(be);
}

/* GPipe's batch norm: statistics per micro-batch; the running mean moves
 * once per step by the mean of the micro-batch means, which is the whole
 * batch's mean, so it matches one device. */
static void test_batch_norm_micro_batches(void **state) {
  (void)state;
  config ref_c = {CNN, 1, {NULL, NULL, NULL}, 1, 1, SGD, 0, 1};
  config c = {CNN, 1, {"cpu:1", "cpu:0", "cpu:0"}, 2, 0, SGD, 0, 1};
  result ref, got;
  run(&ref_c, &ref);
  run(&c, &got);
  int found = 0;
  for (int i = 0; i < ref.n_vars; i++) {
    if (strcmp(ref.var_name[i], "bn1.running_mean")) continue;
    assert_string_equal(got.var_name[i], "bn1.running_mean");
    assert_string_equal(got.var_dev[i], "cpu:1");
    assert_near("bn1.running_mean", got.var[i], ref.var[i], ref.var_n[i]);
    found = 1;
  }
  assert_true(found);
  /* per-micro-batch statistics: the loss differs from the whole batch's */
  assert_true(fabsf(got.loss - ref.loss) > 1e-6f);
  result_free(&ref);
  result_free(&got);
}

/* ---- devices and errors ---------------------------------------------------------- */

static void test_logical_devices(void **state) {
  (void)state;
  nb_backend *a, *b;
  TU_OK(nb_backend_new("cpu", &a));
  TU_OK(nb_backend_new("cpu:1", &b));
  assert_string_equal(nb_backend_name(a), "cpu:0");
  assert_string_equal(nb_backend_name(b), "cpu:1");
  assert_int_equal(nb_backend_threads(b), 0);
  TU_OK(nb_backend_set_threads(b, 3));
  assert_int_equal(nb_backend_threads(b), 3);
  TU_OK(nb_backend_set_threads(b, 0));
  assert_int_equal(nb_backend_threads(b), 0);
  TU_OK(nb_backend_set_cpus(b, 0, 1));
  TU_OK(nb_backend_set_cpus(b, 0, 0));
  assert_int_equal(nb_backend_set_cpus(b, 0, 100000), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "cores"));
  assert_int_equal(nb_backend_set_cpus(b, -1, 1), NB_ERR_INVALID_ARG);
  /* a state opens the devices it is asked for, and frees them */
  nb_state *st;
  TU_OK(nb_state_new(a, &st));
  nb_backend *got = NULL, *again = NULL;
  TU_OK(nb_state_device(st, "cpu", &got));
  assert_ptr_equal(got, a);
  TU_OK(nb_state_device(st, "cpu:2", &got));
  TU_OK(nb_state_device(st, "cpu:2", &again));
  assert_ptr_equal(got, again);
  assert_string_equal(nb_backend_name(got), "cpu:2");
  /* a lent one is used as it is; a second backend for one device is not */
  TU_OK(nb_state_add_device(st, b));
  TU_OK(nb_state_device(st, "cpu:1", &got));
  assert_ptr_equal(got, b);
  nb_backend *b2;
  TU_OK(nb_backend_new("cpu:1", &b2));
  assert_int_equal(nb_state_add_device(st, b2), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "cpu:1"));
  nb_backend_free(b2);
  nb_state_free(st);
  nb_backend_free(a);
  nb_backend_free(b);
}

static void expect_msg(nb_status got, nb_status want, const char *a, const char *b) {
  if (got != want)
    fail_msg("status %s, expected %s (%s)", nb_status_name(got), nb_status_name(want),
             nb_last_error());
  if (a && !strstr(nb_last_error(), a)) fail_msg("'%s' not in: %s", a, nb_last_error());
  if (b && !strstr(nb_last_error(), b)) fail_msg("'%s' not in: %s", b, nb_last_error());
}

static void test_bad_placement(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  int64_t shp[2] = {2, 3};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, shp);
  /* names: unknown kinds and indices are errors at once */
  expect_msg(nb_tensor_set_device(x, "tpu:0"), NB_ERR_INVALID_ARG, "unknown device 'tpu:0'",
             "cpu:N");
  expect_msg(nb_tensor_set_device(x, "cpu:x"), NB_ERR_INVALID_ARG, "'cpu:x'", NULL);
  expect_msg(nb_tensor_set_device(x, "cpu:-1"), NB_ERR_INVALID_ARG, "'cpu:-1'", NULL);
  expect_msg(nb_graph_set_device(g, "gpu"), NB_ERR_INVALID_ARG, "unknown device 'gpu'", NULL);
  assert_int_equal(nb_graph_status(g), NB_ERR_INVALID_ARG); /* recorded in the graph */
  assert_string_equal(nb_graph_device(g), "");
  nb_graph_free(g);
  char canon[16];
  TU_OK(nb_device_canonical("cuda", canon, sizeof canon));
  assert_string_equal(canon, "cuda:0");

  /* a device this build or machine lacks: an error at compile time naming
   * the node, the device and why */
  nb_backend *be;
  nb_state *st;
  nb_plan *plan = NULL;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, shp);
  TU_OK(nb_graph_set_device(g, "cuda:1"));
  assert_string_equal(nb_graph_device(g), "cuda:1");
  nb_nn nn = {.g = g, .seed = 1};
  nb_tensor *y = nb_nn_linear(&nn, "fc", x, 4, 1);
  TU_OK(nb_graph_set_device(g, NULL));
  nb_tensor_set_output(y);
  nb_backend *cuda = NULL;
  nb_status why = nb_backend_new("cuda:1", &cuda);
  if (why == NB_OK) {
    nb_backend_free(cuda); /* a machine with two GPUs: nothing to check */
  } else {
    expect_msg(nb_compile(g, be, st, NULL, &plan), why, "placed on cuda:1", "node");
    assert_null(plan);
  }
  nb_graph_free(g);

  /* a variable lives on one device: a graph that moves it is an error */
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, shp);
  nn.g = g;
  TU_OK(nb_graph_set_device(g, "cpu:1"));
  y = nb_nn_linear(&nn, "fc", x, 4, 1);
  nb_tensor_set_output(y);
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  nb_plan_free(plan);
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, shp);
  nn.g = g;
  TU_OK(nb_graph_set_device(g, "cpu:2"));
  y = nb_nn_linear(&nn, "fc", x, 4, 1);
  nb_tensor_set_output(y);
  expect_msg(nb_compile(g, be, st, NULL, &plan), NB_ERR_INVALID_ARG, "lives on cpu:1",
             "placed on cpu:2");
  nb_graph_free(g);

  /* micro-batches need a split input, and the batch they split */
  step_graph s;
  config c = {MLP, 0, {"cpu:0", "cpu:1", "cpu:1"}, 2, 1, SGD, 0, 0};
  build_step(&c, &s);
  nb_tensor_set_micro(s.x, NB_MICRO_MEAN);
  nb_tensor_set_micro(s.y, NB_MICRO_MEAN);
  nb_state *st2;
  TU_OK(nb_state_new(be, &st2));
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = 2;
  expect_msg(nb_compile(s.g, be, st2, &o, &plan), NB_ERR_INVALID_ARG, "NB_MICRO_SPLIT", NULL);
  nb_tensor_set_micro(s.x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(s.y, NB_MICRO_SPLIT);
  TU_OK(nb_compile(s.g, be, st2, &o, &plan));
  float xb[BATCH * 12] = {0};
  expect_msg(nb_plan_set_input(plan, s.x, xb, sizeof xb / 2), NB_ERR_INVALID_ARG, "2 micro-batches",
             NULL);
  TU_OK(nb_plan_set_input(plan, s.x, xb, sizeof xb));
  float loss2[2];
  expect_msg(nb_plan_get(plan, s.loss, loss2, sizeof loss2), NB_ERR_INVALID_ARG, "holds 4 bytes",
             NULL);
  nb_plan_free(plan);
  o.micro_batches = -1;
  expect_msg(nb_compile(s.g, be, st2, &o, &plan), NB_ERR_INVALID_ARG, "micro_batches", NULL);
  step_free(&s);
  nb_state_free(st2);
  nb_state_free(st);
  nb_backend_free(be);
}

/* ---- model files and the training loop ------------------------------------------- */

static const char *placed_cfg = "[net]\n"
                                "input = 1, 8, 8\n"
                                "classes = 3\n"
                                "[train]\n"
                                "optimizer = adam\n"
                                "lr = 0.01\n"
                                "epochs = 2\n"
                                "batch = 16\n"
                                "[conv2d c1]\n"
                                "out = 4\n"
                                "kernel = 3\n"
                                "activation = relu\n"
                                "device = cpu:1\n"
                                "[maxpool2d]\n"
                                "kernel = 2\n"
                                "[flatten]\n"
                                "device = cpu\n"
                                "[linear fc1]\n"
                                "out = 8\n"
                                "activation = relu\n"
                                "[linear fc2]\n"
                                "out = 3\n";

static void test_model_file_devices(void **state) {
  (void)state;
  nb_model *m;
  TU_OK(nb_model_parse(placed_cfg, "placed.cfg", &m));
  assert_string_equal(nb_model_layer_device(m, "c1"), "cpu:1");
  assert_string_equal(nb_model_layer_device(m, "layer2"), ""); /* follows its input */
  assert_string_equal(nb_model_layer_device(m, "layer3"), "cpu:0");
  assert_null(nb_model_layer_device(m, "nope"));
  assert_int_equal(nb_model_device_count(m), 2);
  assert_string_equal(nb_model_device(m, 0), "cpu:1");
  assert_string_equal(nb_model_device(m, 1), "cpu:0");
  assert_null(nb_model_device(m, 2));
  /* --place overrides; spaces allowed; a bad list changes nothing */
  TU_OK(nb_model_set_placement(m, "fc2 = cpu:2, c1=cpu:0"));
  assert_string_equal(nb_model_layer_device(m, "fc2"), "cpu:2");
  assert_string_equal(nb_model_layer_device(m, "c1"), "cpu:0");
  expect_msg(nb_model_set_placement(m, "fc1=cpu:1,conv9=cpu:1"), NB_ERR_INVALID_ARG,
             "no layer 'conv9'", "c1, layer2, layer3, fc1, fc2");
  assert_string_equal(nb_model_layer_device(m, "fc1"), "");
  expect_msg(nb_model_set_placement(m, "fc1=tpu"), NB_ERR_INVALID_ARG, "layer 'fc1'",
             "unknown device 'tpu'");
  expect_msg(nb_model_set_placement(m, "fc1"), NB_ERR_INVALID_ARG, "LAYER=DEVICE", NULL);
  /* a layer given twice is ambiguous, not last-one-wins */
  expect_msg(nb_model_set_placement(m, "fc1=cpu:1, fc1=cpu:2"), NB_ERR_INVALID_ARG,
             "layer 'fc1' is placed twice", NULL);
  assert_string_equal(nb_model_layer_device(m, "fc1"), "");
  TU_OK(nb_model_set_placement(m, NULL));
  assert_int_equal(nb_model_device_count(m), 0);
  nb_model_free(m);
  /* the key is checked like every other */
  static const char *const bad[][2] = {
      {"[net]\ninput = 4\n[linear a]\nout = 2\ndevice = gpu:1\n",
       "test.cfg:5: expected a device (cpu, cpu:N, cuda:N) for 'device' in [linear a], found "
       "'gpu:1'"},
      {"[net]\ninput = 4\n[linear a]\nout = 2\ndevice = cpu:1\ndevice = cpu:0\n",
       "test.cfg:6: expected 'device' once in [linear a], found it again (first at line 5)"},
      {"[net]\ninput = 4\ndevice = cpu:1\n", "test.cfg:3: expected a key of [net]"},
      {"[net]\ninput = 4\n[flatten]\nout = 3\n",
       "test.cfg:4: expected a key of [flatten] (device, recompute), found 'out'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nb_model *b = NULL;
    assert_int_equal(nb_model_parse(bad[i][0], "test.cfg", &b), NB_ERR_FORMAT);
    if (!strstr(nb_last_error(), bad[i][1]))
      fail_msg("case %zu: '%s' not in: %s", i, bad[i][1], nb_last_error());
    assert_null(b);
  }
}

/* label = which third of the image holds the brightest row band */
static void make_data(nb_dataset *d, int64_t n, uint64_t seed) {
  int64_t shape[3] = {1, 8, 8};
  TU_OK(nb_dataset_alloc(d, n, 3, shape));
  TU_OK(nb_dataset_set_classes(d, 3, NULL));
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) {
    int64_t label = (int64_t)(nb_rng_next(&r) % 3);
    d->y[i] = label;
    for (int p = 0; p < 64; p++) {
      float v = (float)nb_rng_uniform(&r) * 0.5f;
      if (p / 8 / 3 == label) v += 1.0f;
      d->x[i * 64 + p] = v;
    }
  }
}

static void fit(const char *placement, int M, const nb_dataset *train, const nb_dataset *test,
                result *r, nb_fit_result *res) {
  nb_model *m;
  TU_OK(nb_model_parse(placed_cfg, "placed.cfg", &m));
  TU_OK(nb_model_set_placement(m, placement));
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.progress = NB_PROGRESS_OFF;
  o.micro_batches = M;
  FILE *quiet = tmpfile();
  o.log = quiet;
  TU_OK(nb_fit(m, be, st, train, test, &o, res));
  fclose(quiet);
  memset(r, 0, sizeof *r);
  r->n_vars = nb_state_count(st);
  for (int i = 0; i < r->n_vars; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    snprintf(r->var_name[i], sizeof r->var_name[i], "%s", name);
    snprintf(r->var_dev[i], sizeof r->var_dev[i], "%s", nb_state_entry_device(st, i));
    r->var_n[i] = nb_shape_numel(nd, shape);
    r->var[i] = malloc((size_t)r->var_n[i] * sizeof(float));
    TU_OK(nb_state_read(st, name, r->var[i], (size_t)r->var_n[i] * sizeof(float)));
  }
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

/* nb_fit over cpu:0 and cpu:1, with 1 and 4 micro-batches, ends where one
 * device ends: the same weights, test loss and accuracy. */
static void test_fit_placed(void **state) {
  (void)state;
  nb_dataset train, test;
  make_data(&train, 96, 1);
  make_data(&test, 40, 2);
  result ref, got;
  nb_fit_result rr, rg;
  fit(NULL, 1, &train, &test, &ref, &rr);
  for (int i = 0; i < ref.n_vars; i++) assert_string_equal(ref.var_dev[i], "cpu:0");
  for (int M = 1; M <= 4; M *= 4) {
    fit("fc1=cpu:1", M, &train, &test, &got, &rg); /* plus c1 = cpu:1 from the file */
    assert_int_equal(got.n_vars, ref.n_vars);
    for (int i = 0; i < ref.n_vars; i++) {
      assert_string_equal(got.var_name[i], ref.var_name[i]);
      const char *want = !strncmp(ref.var_name[i], "c1.", 3) || !strncmp(ref.var_name[i], "fc", 2)
                             ? "cpu:1"
                             : "cpu:0";
      if (strcmp(got.var_dev[i], want))
        fail_msg("%s on %s, expected %s", got.var_name[i], got.var_dev[i], want);
      assert_near(ref.var_name[i], got.var[i], ref.var[i], ref.var_n[i]);
    }
    assert_true(fabs(rg.test_loss - rr.test_loss) <= 1e-5 * fabs(rr.test_loss));
    assert_true(rg.test_accuracy == rr.test_accuracy);
    assert_true(fabs(rg.train_loss - rr.train_loss) <= 1e-5 * fabs(rr.train_loss));
    assert_int_equal(rg.steps, rr.steps);
    result_free(&got);
  }
  result_free(&ref);
  nb_dataset_free(&train);
  nb_dataset_free(&test);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logical_devices),
      cmocka_unit_test(test_mlp_split),
      cmocka_unit_test(test_mlp_pipelined),
      cmocka_unit_test(test_cnn_split),
      cmocka_unit_test(test_cnn_pipelined),
      cmocka_unit_test(test_micro_batches_one_device),
      cmocka_unit_test(test_concurrent_equals_sequential),
      cmocka_unit_test(test_transfers_where_edges_cross),
      cmocka_unit_test(test_unplaced_graph_follows_state),
      cmocka_unit_test(test_batch_norm_micro_batches),
      cmocka_unit_test(test_bad_placement),
      cmocka_unit_test(test_model_file_devices),
      cmocka_unit_test(test_fit_placed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
