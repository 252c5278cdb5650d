/* Model files (include/nabla/model.h): the shipped models parse, build to
 * [B, classes] and have PyTorch's parameter names, sizes and counts
 * (tests/ref/model_params_ref.py); the MNIST CNN from its file computes the
 * same logits as the same network built by hand; train and eval graphs
 * share one state; batch-norm statistics move in train mode only; residual
 * blocks compute x + f(x) with each kind of shortcut; every kind of bad
 * file gives a FILE:LINE message and never a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MODELS NB_TEST_REF_DIR "/../../models/"

static const char *const shipped[] = {"mnist_cnn", "lenet5", "cifar_cnn", "cifar_resnet"};

static nb_model *load(const char *name) {
  char path[512];
  snprintf(path, sizeof path, MODELS "%s.cfg", name);
  nb_model *m = NULL;
  TU_OK(nb_model_load(path, &m));
  return m;
}

static nb_model *parse(const char *text) {
  nb_model *m = NULL;
  TU_OK(nb_model_parse(text, "test.cfg", &m));
  return m;
}

/* A graph holding the model built for `batch` examples. */
typedef struct built {
  nb_graph *g;
  nb_tensor *x, *y;
} built;

static built build(const nb_model *m, int64_t batch, int training, uint64_t seed) {
  built b;
  b.g = nb_graph_new();
  nb_nn nn = {.g = b.g, .training = training, .seed = seed, .init = NB_NN_INIT_TORCH};
  b.x = nb_model_new_input(m, b.g, "x", batch);
  assert_non_null(b.x);
  TU_OK(nb_model_build(m, &nn, b.x, &b.y));
  nb_tensor_set_output(b.y);
  return b;
}

typedef struct runner {
  nb_backend *be;
  nb_state *st;
} runner;

static runner runner_new(void) {
  runner r;
  TU_OK(nb_backend_new("cpu", &r.be));
  TU_OK(nb_state_new(r.be, &r.st));
  return r;
}

static void runner_free(runner *r) {
  nb_state_free(r->st);
  nb_backend_free(r->be);
}

/* Compiles b into r's state, runs it once on x and copies the output. */
static void run_once(runner *r, built *b, const float *x, float *y) {
  nb_plan *p;
  TU_OK(nb_compile(b->g, r->be, r->st, NULL, &p));
  TU_OK(nb_plan_set_input(p, b->x, x, (size_t)nb_tensor_numel(b->x) * sizeof(float)));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, b->y, y, (size_t)nb_tensor_numel(b->y) * sizeof(float)));
  nb_plan_free(p);
}

static void write_param(runner *r, const char *name, const float *v, size_t n) {
  TU_OK(nb_state_write(r->st, name, v, n * sizeof(float)));
}

/* ---- the shipped models ------------------------------------------------------- */

static void test_shipped_models_match_pytorch(void **s) {
  (void)s;
  tu_ref *ref = tu_ref_load("model_params.txt");
  FILE *names = fopen(NB_TEST_REF_DIR "/model_params_names.txt", "r");
  assert_non_null(names);
  for (size_t k = 0; k < sizeof shipped / sizeof shipped[0]; k++) {
    nb_model *m = load(shipped[k]);
    assert_string_equal(nb_model_source(m) + strlen(nb_model_source(m)) - 4, ".cfg");
    int64_t count;
    TU_OK(nb_model_param_count(m, &count));
    const float *want = tu_ref_get(ref, shipped[k], "params", NULL, NULL, NULL);
    print_message("%s: %lld parameters\n", shipped[k], (long long)count);
    assert_int_equal(count, (int64_t)want[0]);

    /* output [B, classes] for a batch of 2 */
    built b = build(m, 2, 0, 1);
    const float *shape = tu_ref_get(ref, shipped[k], "output_shape", NULL, NULL, NULL);
    assert_int_equal(nb_tensor_ndim(b.y), 2);
    assert_int_equal(nb_tensor_shape(b.y)[0], 2);
    assert_int_equal(nb_tensor_shape(b.y)[1], nb_model_classes(m));
    assert_int_equal(nb_tensor_shape(b.y)[1], (int64_t)shape[1]);

    /* torch's state-dict names and sizes, in its parameters() order */
    rewind(names);
    char line[256], model[64], pname[128];
    long long numel;
    int next = 0, matched = 0;
    while (fgets(line, sizeof line, names)) {
      if (line[0] == '#' || sscanf(line, "%63s %127s %lld", model, pname, &numel) != 3) continue;
      if (strcmp(model, shipped[k])) continue;
      nb_tensor *t = NULL;
      while (next < nb_graph_node_count(b.g) && !t) {
        nb_tensor *c = nb_graph_node(b.g, next++);
        if (nb_tensor_requires_grad(c) && !strcmp(nb_tensor_op_name(c), "variable")) t = c;
      }
      if (!t) fail_msg("%s: torch has %s, nabla has no more parameters", shipped[k], pname);
      if (strcmp(nb_tensor_name(t), pname) || nb_tensor_numel(t) != numel)
        fail_msg("%s: parameter %d: torch %s (%lld), nabla %s (%lld)", shipped[k], matched, pname,
                 numel, nb_tensor_name(t), (long long)nb_tensor_numel(t));
      matched++;
    }
    assert_true(matched > 0);
    nb_graph_free(b.g);
    nb_model_free(m);
  }
  fclose(names);
  tu_ref_free(ref);
}

static void test_shipped_models_run(void **s) {
  (void)s;
  /* a forward pass in each mode gives finite logits: the graphs compile and
   * every layer has a kernel */
  for (size_t k = 0; k < sizeof shipped / sizeof shipped[0]; k++) {
    nb_model *m = load(shipped[k]);
    for (int training = 0; training <= 1; training++) {
      built b = build(m, 2, training, 3);
      runner r = runner_new();
      float *x = tu_rand((size_t)nb_tensor_numel(b.x), -1, 1, 5);
      float y[20];
      run_once(&r, &b, x, y);
      for (int i = 0; i < 20; i++) assert_true(isfinite(y[i]));
      free(x);
      runner_free(&r);
      nb_graph_free(b.g);
    }
    nb_model_free(m);
  }
}

static void test_recipes(void **s) {
  (void)s;
  nb_model *m = load("mnist_cnn");
  const nb_recipe *r = nb_model_recipe(m);
  assert_string_equal(nb_model_name(m), "mnist_cnn");
  assert_int_equal(r->optimizer, NB_RECIPE_ADAM);
  assert_int_equal(r->schedule, NB_SCHEDULE_ONE_CYCLE);
  assert_float_equal(r->lr, 3e-3, 1e-9);
  assert_int_equal(r->epochs, 2);
  assert_int_equal(r->batch, 64);
  assert_int_equal(r->norm_channels, 1);
  assert_float_equal(r->mean[0], 0.1307, 1e-7);
  assert_float_equal(r->std[0], 0.3081, 1e-7);
  assert_float_equal(r->beta2, 0.999, 1e-9); /* a default */
  int64_t shape[NB_MAX_DIMS];
  nb_dtype dt;
  assert_int_equal(nb_model_input_shape(m, shape, &dt), 3);
  assert_int_equal(shape[0], 1);
  assert_int_equal(shape[2], 28);
  assert_int_equal(dt, NB_F32);
  /* one-cycle over 2 epochs of 100 updates: starts at peak / 25, peaks near
   * 30%, ends far below */
  nb_schedule sc;
  TU_OK(nb_recipe_schedule(r, 100, &sc));
  assert_int_equal(sc.total_steps, 200);
  assert_float_equal(nb_schedule_lr(&sc, 1), 3e-3 / 25, 1e-9);
  assert_float_equal(nb_schedule_lr(&sc, 60), 3e-3, 1e-6);
  assert_true(nb_schedule_lr(&sc, 200) < 1e-6);
  nb_model_free(m);

  m = load("cifar_cnn");
  r = nb_model_recipe(m);
  assert_int_equal(r->optimizer, NB_RECIPE_SGD);
  assert_float_equal(r->momentum, 0.9, 1e-7);
  assert_int_equal(r->norm_channels, 3);
  assert_float_equal(r->mean[2], 0.4465, 1e-7);
  assert_float_equal(r->std[1], 0.2435, 1e-7);
  assert_int_equal(r->crop_padding, 4);
  assert_int_equal(r->hflip, 1);
  nb_model_free(m);

  m = load("cifar_resnet");
  r = nb_model_recipe(m);
  assert_int_equal(r->schedule, NB_SCHEDULE_COSINE);
  assert_float_equal(r->weight_decay, 5e-4, 1e-10);
  assert_int_equal(r->nesterov, 1);
  TU_OK(nb_recipe_schedule(r, 10, &sc));
  assert_float_equal(nb_schedule_lr(&sc, 1), 0.1, 1e-7);
  assert_float_equal(nb_schedule_lr(&sc, 10 * r->epochs / 2 + 1), 0.05, 1e-6);
  nb_model_free(m);

  /* no [train]: the defaults */
  m = parse("[net]\ninput = 4\n[linear fc]\nout = 2\n");
  nb_recipe d = nb_recipe_defaults();
  r = nb_model_recipe(m);
  /* field by field: the struct has padding */
  assert_int_equal(r->optimizer, NB_RECIPE_ADAM);
  assert_int_equal(d.optimizer, NB_RECIPE_ADAM);
  assert_float_equal(r->lr, 1e-3, 1e-10);
  assert_float_equal(r->eps, 1e-8, 1e-12);
  assert_int_equal(r->schedule, NB_SCHEDULE_CONSTANT);
  assert_int_equal(r->epochs, 1);
  assert_int_equal(r->batch, 64);
  assert_int_equal(r->seed, 1);
  assert_int_equal(r->norm_channels, 0);
  assert_int_equal(r->crop_padding + r->hflip + r->nesterov, 0);
  assert_float_equal(r->weight_decay + r->momentum + r->label_smoothing + r->clip_grad_norm, 0, 0);
  assert_float_equal(r->final_div_factor, d.final_div_factor, 0);
  assert_string_equal(nb_model_name(m), "test"); /* from the source name */
  nb_model_free(m);

  /* a step schedule counts epochs */
  m = parse("[net]\ninput = 4\n[train]\nschedule = step\nstep_size = 2\ngamma = 0.5\nlr = 1\n"
            "epochs = 6\n[linear fc]\nout = 2\n");
  TU_OK(nb_recipe_schedule(nb_model_recipe(m), 10, &sc));
  assert_float_equal(nb_schedule_lr(&sc, 20), 1.0, 1e-9);
  assert_float_equal(nb_schedule_lr(&sc, 21), 0.5, 1e-9);
  nb_model_free(m);
}

/* ---- same network by hand ------------------------------------------------------ */

static nb_tensor *mnist_by_hand(const nb_nn *nn, nb_tensor *x) {
  nb_graph *g = nn->g;
  nb_pool2d_params pool = nb_pool2d_defaults(2, 2);
  nb_tensor *h = nb_relu(g, nb_nn_conv2d(nn, "conv1", x, 32, 3, 3, NULL, 1));
  h = nb_max_pool2d(g, h, &pool);
  h = nb_relu(g, nb_nn_conv2d(nn, "conv2", h, 64, 3, 3, NULL, 1));
  h = nb_max_pool2d(g, h, &pool);
  h = nb_relu(g, nb_nn_linear(nn, "fc1", nb_nn_flatten(nn, h), 128, 1));
  return nb_nn_linear(nn, "fc2", h, 10, 1);
}

static void test_mnist_file_equals_hand_built(void **s) {
  (void)s;
  nb_model *m = load("mnist_cnn");
  const int64_t B = 3;
  built f = build(m, B, 1, 42);
  built h;
  h.g = nb_graph_new();
  int64_t xs[4] = {B, 1, 28, 28};
  h.x = nb_input(h.g, "x", NB_F32, 4, xs);
  nb_nn nn = {.g = h.g, .training = 1, .seed = 42, .init = NB_NN_INIT_TORCH};
  h.y = mnist_by_hand(&nn, h.x);
  nb_tensor_set_output(h.y);
  TU_OK(nb_graph_status(h.g));

  /* separate states: equal logits mean equal initial weights (same seed and
   * names) and the same computation */
  runner rf = runner_new(), rh = runner_new();
  float *x = tu_rand((size_t)(B * 784), -1, 1, 9);
  float yf[30], yh[30];
  run_once(&rf, &f, x, yf);
  run_once(&rh, &h, x, yh);
  tu_assert_close("mnist logits", yf, yh, 30, 0, 0);
  float spread = 0;
  for (int i = 1; i < 30; i++) spread += fabsf(yf[i] - yf[0]);
  assert_true(spread > 1e-3); /* not a constant output */

  const char *want[8] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                         "fc1.weight",   "fc1.bias",   "fc2.weight",   "fc2.bias"};
  assert_int_equal(nb_state_count(rf.st), 8);
  int found = 0;
  for (int i = 0; i < nb_state_count(rf.st); i++) {
    const char *name;
    TU_OK(nb_state_entry(rf.st, i, &name, NULL, NULL, NULL));
    for (int j = 0; j < 8; j++) found += !strcmp(name, want[j]);
  }
  assert_int_equal(found, 8);
  free(x);
  runner_free(&rf);
  runner_free(&rh);
  nb_graph_free(f.g);
  nb_graph_free(h.g);
  nb_model_free(m);
}

/* ---- state sharing and batch norm ------------------------------------------------ */

static const char *small_bn_net = "[net]\n"
                                  "input = 2, 5, 5\n"
                                  "classes = 3\n"
                                  "[train]\n"
                                  "optimizer = sgd\n"
                                  "lr = 0.1\n"
                                  "momentum = 0.9\n"
                                  "[conv2d conv]\n"
                                  "out = 4\n"
                                  "kernel = 3\n"
                                  "bias = no\n"
                                  "[batchnorm bn]\n"
                                  "activation = relu\n"
                                  "[dropout]\n"
                                  "p = 0.25\n"
                                  "[global_avgpool]\n"
                                  "[flatten]\n"
                                  "[linear fc]\n"
                                  "out = 3\n";

static void test_train_and_eval_share_state(void **s) {
  (void)s;
  nb_model *m = parse(small_bn_net);
  const int64_t B = 4;
  built t = build(m, B, 1, 7);
  int64_t ls = B;
  nb_tensor *labels = nb_input(t.g, "labels", NB_I64, 1, &ls);
  nb_tensor *loss = nb_cross_entropy(t.g, t.y, labels, 0.0f);
  nb_tensor_set_output(loss);
  TU_OK(nb_graph_backward(t.g, loss));
  nb_optimizer *opt;
  TU_OK(nb_optimizer_sgd(t.g, 0.9f, 0.0f, 0, &opt));
  runner r = runner_new();
  nb_plan *train;
  TU_OK(nb_compile(t.g, r.be, r.st, NULL, &train));
  /* 7 variables (conv.weight, bn x4, fc x2) and 5 momentum buffers */
  assert_int_equal(nb_state_count(r.st), 12);

  built e = build(m, 2, 0, 7);
  nb_plan *eval;
  TU_OK(nb_compile(e.g, r.be, r.st, NULL, &eval));
  assert_int_equal(nb_state_count(r.st), 12); /* nothing new: same names, same variables */

  float *x = tu_rand((size_t)(B * 50), -1, 1, 3);
  int64_t lab[4] = {0, 1, 2, 1};
  float before[6], after[6], again[6];
  TU_OK(nb_plan_set_input(eval, e.x, x, 2 * 50 * sizeof(float)));
  TU_OK(nb_plan_run(eval));
  TU_OK(nb_plan_get(eval, e.y, before, sizeof before));

  TU_OK(nb_plan_set_input(train, t.x, x, (size_t)(B * 50) * sizeof(float)));
  TU_OK(nb_plan_set_input(train, labels, lab, sizeof lab));
  TU_OK(nb_optimizer_feed(opt, train, 1, 0.5f));
  TU_OK(nb_plan_run(train));

  /* the eval plan sees the updated weights and statistics ... */
  TU_OK(nb_plan_run(eval));
  TU_OK(nb_plan_get(eval, e.y, after, sizeof after));
  float diff = 0;
  for (int i = 0; i < 6; i++) diff += fabsf(after[i] - before[i]);
  assert_true(diff > 1e-4);
  /* ... exactly as a plan compiled afresh on the same state */
  built e2 = build(m, 2, 0, 99); /* another seed: initial values are not drawn again */
  runner r2 = r;
  run_once(&r2, &e2, x, again);
  tu_assert_close("eval after step", after, again, 6, 0, 0);

  free(x);
  nb_optimizer_free(opt);
  nb_plan_free(train);
  nb_plan_free(eval);
  nb_graph_free(t.g);
  nb_graph_free(e.g);
  nb_graph_free(e2.g);
  runner_free(&r);
  nb_model_free(m);
}

static void test_batchnorm_statistics_train_only(void **s) {
  (void)s;
  nb_model *m = parse("[net]\ninput = 2, 1, 3\n[batchnorm bn]\nmomentum = 0.25\neps = 1e-5\n");
  /* 2 examples, 2 channels of 3 values */
  const float x[12] = {1, 2, 3, 0, 0, 6, /* example 0: channel 0, channel 1 */
                       5, 6, 7, 2, 2, 2};
  /* channel 0: {1,2,3,5,6,7}: mean 4, unbiased var 5.6; channel 1: {0,0,6,2,2,2}: mean 2, var 4.8
   */
  const float mean[2] = {4, 2}, var[2] = {5.6f, 4.8f};
  runner r = runner_new();
  built e = build(m, 2, 0, 1), t = build(m, 2, 1, 1);
  float y[12], rm[2], rv[2];

  run_once(&r, &e, x, y); /* eval: running stats 0 / 1, untouched */
  TU_OK(nb_state_read(r.st, "bn.running_mean", rm, sizeof rm));
  TU_OK(nb_state_read(r.st, "bn.running_var", rv, sizeof rv));
  const float zero[2] = {0, 0}, one[2] = {1, 1};
  tu_assert_close("eval running_mean", rm, zero, 2, 0, 0);
  tu_assert_close("eval running_var", rv, one, 2, 0, 0);
  for (int i = 0; i < 12; i++) assert_float_equal(y[i], x[i] / sqrtf(1 + 1e-5f), 1e-6);

  run_once(&r, &t, x, y); /* train: batch statistics, running stats move by momentum */
  TU_OK(nb_state_read(r.st, "bn.running_mean", rm, sizeof rm));
  TU_OK(nb_state_read(r.st, "bn.running_var", rv, sizeof rv));
  float want_m[2], want_v[2];
  for (int c = 0; c < 2; c++) {
    want_m[c] = 0.25f * mean[c];
    want_v[c] = 0.75f + 0.25f * var[c];
  }
  tu_assert_close("train running_mean", rm, want_m, 2, 1e-6, 1e-5);
  tu_assert_close("train running_var", rv, want_v, 2, 1e-6, 1e-5);
  /* normalised with the biased batch variance */
  for (int n = 0; n < 2; n++)
    for (int c = 0; c < 2; c++)
      for (int i = 0; i < 3; i++) {
        float v = x[n * 6 + c * 3 + i], bv = var[c] * 5.0f / 6.0f;
        assert_float_equal(y[n * 6 + c * 3 + i], (v - mean[c]) / sqrtf(bv + 1e-5f), 1e-5);
      }

  run_once(&r, &e, x, y); /* eval again: reads, does not move them */
  float rm2[2];
  TU_OK(nb_state_read(r.st, "bn.running_mean", rm2, sizeof rm2));
  tu_assert_close("eval keeps running_mean", rm2, want_m, 2, 0, 0);
  for (int c = 0; c < 2; c++)
    assert_float_equal(y[c * 3], (x[c * 3] - rm[c]) / sqrtf(rv[c] + 1e-5f), 1e-5);

  nb_graph_free(e.g);
  nb_graph_free(t.g);
  runner_free(&r);
  nb_model_free(m);
}

/* ---- residual blocks ---------------------------------------------------------------- */

static void test_residual_identity(void **s) {
  (void)s;
  /* out = x + W x with a 1x1 conv W over 2 channels */
  nb_model *m = parse("[net]\ninput = 2, 2, 2\n"
                      "[residual block]\n"
                      "[conv2d mix]\nout = 2\nkernel = 1\nbias = no\n"
                      "[end]\n");
  runner r = runner_new();
  built b = build(m, 1, 1, 1);
  nb_plan *p;
  TU_OK(nb_compile(b.g, r.be, r.st, NULL, &p));
  const float w[4] = {2, -1, 0.5f, 3}; /* [out, in] */
  write_param(&r, "block.mix.weight", w, 4);
  const float x[8] = {1, 2, 3, 4, -1, 0, 1, 2}; /* channel 0, channel 1 */
  float y[8];
  TU_OK(nb_plan_set_input(p, b.x, x, sizeof x));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, b.y, y, sizeof y));
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 4; i++) {
      float f = w[c * 2] * x[i] + w[c * 2 + 1] * x[4 + i];
      assert_float_equal(y[c * 4 + i], x[c * 4 + i] + f, 1e-6);
    }
  nb_plan_free(p);
  nb_graph_free(b.g);
  runner_free(&r);
  nb_model_free(m);
}

static void test_residual_projections(void **s) {
  (void)s;
  /* body: a stride-2 conv to 2 channels whose weights are zero, so the
   * output is exactly the shortcut (then relu) */
  const char *fmt = "[net]\ninput = 1, 4, 4\n"
                    "[residual down]\nprojection = %s\nactivation = relu\n"
                    "[conv2d body]\nout = 2\nkernel = 3\nstride = 2\npadding = 1\nbias = no\n"
                    "[end]\n";
  float x[16];
  for (int i = 0; i < 16; i++) x[i] = (float)i - 5.0f;
  const float zeros[18] = {0};
  float y[8];

  char text[512];
  /* conv: 1x1 stride-2 conv with bias, named torchvision's way */
  snprintf(text, sizeof text, fmt, "conv");
  nb_model *m = parse(text);
  int64_t count;
  TU_OK(nb_model_param_count(m, &count));
  assert_int_equal(count, 18 + 2 + 2); /* body 2x1x3x3, downsample.0 weight [2,1,1,1] + bias */
  runner r = runner_new();
  built b = build(m, 1, 1, 1);
  nb_plan *p;
  TU_OK(nb_compile(b.g, r.be, r.st, NULL, &p));
  const float pw[2] = {1, -2}, pb[2] = {0.5f, 0};
  write_param(&r, "down.body.weight", zeros, 18);
  write_param(&r, "down.downsample.0.weight", pw, 2);
  write_param(&r, "down.downsample.0.bias", pb, 2);
  TU_OK(nb_plan_set_input(p, b.x, x, sizeof x));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, b.y, y, sizeof y));
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 2; j++) {
        float v = pw[c] * x[(2 * i) * 4 + 2 * j] + pb[c];
        assert_float_equal(y[c * 4 + i * 2 + j], v > 0 ? v : 0, 1e-6);
      }
  nb_plan_free(p);
  nb_graph_free(b.g);
  runner_free(&r);
  nb_model_free(m);

  /* pad: subsample, zero channels around (no parameters) */
  snprintf(text, sizeof text, fmt, "pad");
  m = parse(text);
  TU_OK(nb_model_param_count(m, &count));
  assert_int_equal(count, 18);
  r = runner_new();
  b = build(m, 1, 1, 1);
  TU_OK(nb_compile(b.g, r.be, r.st, NULL, &p));
  write_param(&r, "down.body.weight", zeros, 18);
  TU_OK(nb_plan_set_input(p, b.x, x, sizeof x));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, b.y, y, sizeof y));
  /* 1 -> 2 channels: extra 1 goes 0 before, 1 after: channel 0 is x, channel 1 zero */
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      float v = x[(2 * i) * 4 + 2 * j];
      assert_float_equal(y[i * 2 + j], v > 0 ? v : 0, 0);
      assert_float_equal(y[4 + i * 2 + j], 0, 0);
    }
  nb_plan_free(p);
  nb_graph_free(b.g);
  runner_free(&r);
  nb_model_free(m);

  /* conv_bn (default): conv without bias + batch norm, torchvision's names */
  snprintf(text, sizeof text, fmt, "conv_bn");
  m = parse(text);
  b = build(m, 1, 0, 1);
  assert_non_null(nb_graph_find(b.g, "down.downsample.0.weight"));
  assert_null(nb_graph_find(b.g, "down.downsample.0.bias"));
  assert_non_null(nb_graph_find(b.g, "down.downsample.1.running_var"));
  nb_graph_free(b.g);
  nb_model_free(m);

  /* none: shapes must match, and the error says where */
  snprintf(text, sizeof text, fmt, "none");
  m = parse(text);
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *y2;
  assert_int_equal(nb_model_build(m, &nn, nb_model_new_input(m, g, "x", 1), &y2), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_last_error(), "test.cfg:12: [end down]"));
  assert_non_null(strstr(nb_last_error(), "projection = none"));
  nb_graph_free(g);
  nb_model_free(m);
}

static void test_auto_names_and_embedding(void **s) {
  (void)s;
  nb_model *m = parse("[net]\ninput = 5\ninput_dtype = i64\nclasses = 11\n"
                      "[embedding tok]\nvocab = 11\ndim = 4\n"
                      "[layernorm]\n"
                      "[linear]\nout = 8\nactivation = gelu\n"
                      "[residual]\n"
                      "[linear]\nout = 8\nactivation = leaky_relu\nslope = 0.2\n"
                      "[end]\n"
                      "[linear head]\nout = 11\n");
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *x = nb_model_new_input(m, g, "ids", 2), *y;
  assert_int_equal(nb_tensor_dtype(x), NB_I64);
  TU_OK(nb_model_build(m, &nn, x, &y));
  assert_int_equal(nb_tensor_ndim(y), 3);
  assert_int_equal(nb_tensor_shape(y)[1], 5);
  assert_int_equal(nb_tensor_shape(y)[2], 11);
  assert_non_null(nb_graph_find(g, "tok.weight"));
  assert_non_null(nb_graph_find(g, "layer2.weight")); /* the layernorm */
  assert_non_null(nb_graph_find(g, "layer3.bias"));
  assert_non_null(nb_graph_find(g, "layer4.layer5.weight")); /* inside the unnamed block */
  assert_non_null(nb_graph_find(g, "head.weight"));
  int64_t count;
  TU_OK(nb_model_param_count(m, &count));
  assert_int_equal(count, 44 + 8 + 40 + 72 + 99);
  nb_graph_free(g);
  nb_model_free(m);
}

/* ---- summary ------------------------------------------------------------------------ */

static void test_summary(void **s) {
  (void)s;
  nb_model *m = load("mnist_cnn");
  FILE *f = tmpfile();
  assert_non_null(f);
  TU_OK(nb_model_summary(m, 8, f));
  long n = ftell(f);
  rewind(f);
  char *text = calloc((size_t)n + 1, 1);
  assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  print_message("%s", text);
  assert_non_null(strstr(text, "model mnist_cnn"));
  assert_non_null(strstr(text, "conv2d 3x3 relu"));
  assert_non_null(strstr(text, "[8, 32, 26, 26]"));
  assert_non_null(strstr(text, "[8, 10]"));
  assert_non_null(strstr(text, "204,928")); /* fc1: 1600 * 128 + 128 */
  assert_non_null(strstr(text, "parameters: 225,034"));
  assert_non_null(strstr(text, "forward + backward + adam, batch 8"));
  /* the arena is reported beside the naive sum, and is smaller */
  const char *a = strstr(text, "arena ");
  assert_non_null(a);
  double arena, naive;
  char ua[8], un[8];
  assert_int_equal(sscanf(a, "arena %lf %7s naive %lf %7s", &arena, ua, &naive, un), 4);
  if (!strcmp(ua, "KiB,")) arena /= 1024;
  if (!strcmp(un, "KiB")) naive /= 1024;
  assert_true(arena > 0 && arena < naive);
  /* 8 parameters + 16 Adam moments */
  assert_non_null(strstr(text, "state: 24 variables"));
  free(text);
  nb_model_free(m);

  m = load("cifar_resnet");
  f = tmpfile();
  TU_OK(nb_model_summary(m, 2, f));
  n = ftell(f);
  rewind(f);
  text = calloc((size_t)n + 1, 1);
  assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  assert_non_null(strstr(text, "layer3.2.conv2"));
  assert_non_null(strstr(text, "add +conv_bn relu")); /* layer2.0, layer3.0 */
  assert_non_null(strstr(text, "add relu"));
  assert_non_null(strstr(text, "parameters: 272,474"));
  assert_non_null(strstr(text, "sgd"));
  free(text);
  nb_model_free(m);
}

/* ---- errors ------------------------------------------------------------------------- */

typedef struct bad_case {
  const char *text;
  const char *want[3]; /* substrings of the message, the first is "test.cfg:LINE:" */
} bad_case;

static const bad_case bad[] = {
    /* unknown section */
    {"[net]\ninput = 1, 4, 4\n[conv3d c]\nout = 2\n",
     {"test.cfg:3: expected a section type", "found [conv3d]"}},
    /* unknown key for that layer, with the keys it takes */
    {"[net]\ninput = 1, 4, 4\n[conv2d c]\nout = 2\nkernal = 3\n",
     {"test.cfg:5: expected a key of [conv2d c] (out, kernel,", "found 'kernal'"}},
    {"[net]\ninput = 4\n[flatten]\nout = 3\n",
     {"test.cfg:4: expected a key of [flatten] (device, recompute), found 'out'"}},
    /* bad numbers */
    {"[net]\ninput = 1, 4, 4\n[conv2d c]\nout = two\n",
     {"test.cfg:4: expected an integer >= 1 for 'out' in [conv2d c]", "found 'two'"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 0\n", {"test.cfg:4: expected an integer >= 1", "'0'"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 3.5\n", {"test.cfg:4:", "found '3.5'"}},
    {"[net]\ninput = 4\n[dropout]\np = 1.5\n",
     {"test.cfg:4: expected a number in [0, 1) for 'p'", "found '1.5'"}},
    {"[net]\ninput = 4\n[train]\nlr = 1e999\n[linear a]\nout=1\n", {"test.cfg:4:", "'1e999'"}},
    {"[net]\ninput = 1, 4, 4\n[conv2d c]\nout = 2\nkernel = 3, 3, 3\n",
     {"test.cfg:5: expected one or two integers (height, width)", "found '3, 3, 3'"}},
    {"[net]\ninput = 1, x\n", {"test.cfg:2: expected 1 to 7 integers", "found '1, x'"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 2\nbias = maybe\n",
     {"test.cfg:5: expected a boolean", "found 'maybe'"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 2\nactivation = swish\n",
     {"test.cfg:5: expected an activation (none, relu", "found 'swish'"}},
    {"[net]\ninput = 4\n[train]\noptimizer = adagrad\n[linear a]\nout=1\n",
     {"test.cfg:4: expected one of adam, adamw, sgd for 'optimizer'", "found 'adagrad'"}},
    /* missing required keys, reported at the section header */
    {"[net]\ninput = 1, 4, 4\n[conv2d c]\nout = 2\n[flatten]\n",
     {"test.cfg:3: expected key 'kernel' (kernel size) in [conv2d c], found none"}},
    {"[net]\nclasses = 3\n[linear a]\nout = 3\n", {"test.cfg:1: expected key 'input'"}},
    {"[net]\ninput = 4\n[activation]\n", {"test.cfg:3: expected key 'type'"}},
    /* duplicate names and keys */
    {"[net]\ninput = 4\n[linear fc]\nout = 4\n[linear fc]\nout = 2\n",
     {"test.cfg:5: expected a new layer name, found 'fc'", "line 3"}},
    {"[net]\ninput = 4\n[linear layer2]\nout = 4\n[linear]\nout = 2\n",
     {"test.cfg:5: expected a new layer name, found 'layer2', the automatic name"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 4\nout = 2\n",
     {"test.cfg:5: expected 'out' once in [linear fc], found it again (first at line 4)"}},
    {"[net]\ninput = 4\n[net]\n", {"test.cfg:3: expected one [net] section"}},
    /* structure */
    {"", {"test.cfg:1: expected a [net] section, found none"}},
    {"# only a comment\n\n", {"test.cfg:2: expected a [net] section, found none"}},
    {"input = 4\n", {"test.cfg:1: expected a [net] section before any key"}},
    {"[linear fc]\nout = 2\n", {"test.cfg:1: expected [net] as the first section, found [linear]"}},
    {"[net]\ninput = 4\n", {"test.cfg:2: expected at least one layer section"}},
    {"[net]\ninput = 4\n[linear fc\n", {"test.cfg:3: expected ']'"}},
    {"[net]\ninput = 4\nlinear fc\n", {"test.cfg:3: expected 'key = value' or a [section]"}},
    {"[net]\ninput = 4\n[linear fc]\nout =\n", {"test.cfg:4: expected a value (output features)"}},
    {"[net]\ninput = 4\n[linear f c]\n", {"test.cfg:3: expected [TYPE] or [TYPE NAME]"}},
    {"[net]\ninput = 4\n[linear f/c]\n", {"test.cfg:3: expected a layer name", "'f/c'"}},
    {"[net lenet]\n", {"test.cfg:1: expected [net] without a name"}},
    {"[net]\ninput = 4\n[residual b]\n[linear fc]\nout = 4\n",
     {"test.cfg:3: expected [end] to close [residual] 'b'"}},
    {"[net]\ninput = 4\n[linear fc]\nout = 4\n[end]\n",
     {"test.cfg:5: expected [end] only to close a [residual] block"}},
    /* settings that need other settings */
    {"[net]\ninput = 4\n[linear fc]\nout = 2\nslope = 0.1\n",
     {"test.cfg:5: expected 'slope' only with leaky_relu, found activation = none"}},
    {"[net]\ninput = 4\n[train]\nnesterov = yes\n[linear a]\nout = 1\n",
     {"test.cfg:4: expected 'nesterov' only with optimizer = sgd and momentum > 0"}},
    {"[net]\ninput = 4\n[train]\noptimizer = adam\nmomentum = 0.9\n[linear a]\nout = 1\n",
     {"test.cfg:5: expected 'momentum' only with optimizer = sgd, found optimizer = adam"}},
    {"[net]\ninput = 4\n[train]\nmin_lr = 0.1\n[linear a]\nout = 1\n",
     {"test.cfg:4: expected 'min_lr' only with schedule = cosine"}},
    {"[net]\ninput = 4\n[train]\nschedule = warmup_cosine\n[linear a]\nout = 1\n",
     {"test.cfg:3: expected key 'warmup' >= 1"}},
    {"[net]\ninput = 3, 8, 8\n[train]\nmean = 0.5, 0.5, 0.5\nstd = 0.2, 0.2\n[flatten]\n",
     {"test.cfg:4: expected 'std' with as many values as 'mean' (3), found 2"}},
    {"[net]\ninput = 3, 8, 8\n[train]\nmean = 0.5, 0.5\nstd = 0.2, 0.2\n[flatten]\n",
     {"test.cfg:4: expected 1 value or one per input channel (3)"}},
    {"[net]\ninput = 3, 8, 8\n[train]\naugment = crop4, rotate\n[flatten]\n",
     {"test.cfg:4: expected a list of crop<N>", "found 'crop4, rotate'"}},
    {"[net]\ninput = 1, 8, 8\n[maxpool2d]\nkernel = 2\npadding = 2\n",
     {"test.cfg:5: expected padding <= kernel / 2 (1)"}},
    {"[net]\ninput = 4\n[embedding e]\nvocab = 3\ndim = 2\n",
     {"test.cfg:3: expected integer token ids"}},
};

static void test_parse_errors(void **s) {
  (void)s;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    nb_model *m = (nb_model *)&m; /* must come back NULL */
    nb_status st = nb_model_parse(bad[i].text, "test.cfg", &m);
    if (st == NB_OK) fail_msg("case %zu parsed: %s", i, bad[i].text);
    assert_int_equal(st, NB_ERR_FORMAT);
    assert_null(m);
    for (int k = 0; k < 3 && bad[i].want[k]; k++)
      if (!strstr(nb_last_error(), bad[i].want[k]))
        fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, nb_last_error(), bad[i].want[k]);
    if (strncmp(nb_last_error(), "test.cfg:", 9))
      fail_msg("case %zu: \"%s\" does not start with FILE:LINE", i, nb_last_error());
  }
}

static void test_build_errors(void **s) {
  (void)s;
  /* shape errors name the layer and its line */
  nb_model *m = parse("[net]\ninput = 1, 4, 4\nclasses = 10\n"
                      "[conv2d big]\nout = 2\nkernel = 7\n"
                      "[flatten]\n[linear fc]\nout = 10\n");
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *y = (nb_tensor *)&y;
  assert_int_equal(nb_model_build(m, &nn, nb_model_new_input(m, g, "x", 2), &y), NB_ERR_SHAPE);
  assert_null(y);
  assert_non_null(strstr(nb_last_error(), "test.cfg:4: [conv2d big]:"));
  nb_graph_free(g);
  nb_model_free(m);

  /* the last layer must give `classes` */
  m = parse("[net]\ninput = 4\nclasses = 10\n[linear fc]\nout = 5\n");
  g = nb_graph_new();
  nn.g = g;
  assert_int_equal(nb_model_build(m, &nn, nb_model_new_input(m, g, "x", 2), &y), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_last_error(), "test.cfg:4: expected the last layer to output [..., "
                                          "10] for classes = 10, found [2, 5]"));
  /* an input of the wrong shape */
  int64_t xs[2] = {2, 5};
  assert_int_equal(nb_model_build(m, &nn, nb_input(g, "x5", NB_F32, 2, xs), &y), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_last_error(), "expects input [N, 4] f32, found [2, 5] f32"));
  assert_int_not_equal(nb_model_build(NULL, &nn, NULL, &y), NB_OK);
  assert_int_not_equal(nb_model_summary(m, 0, stdout), NB_OK);
  nb_graph_free(g);
  nb_model_free(m);

  /* files */
  assert_int_equal(nb_model_load(MODELS "no_such_model.cfg", &m), NB_ERR_IO);
  assert_null(m);
  assert_non_null(strstr(nb_last_error(), "no_such_model.cfg: cannot open"));
  assert_int_not_equal(nb_model_parse(NULL, "x", &m), NB_OK);
  assert_int_not_equal(nb_model_parse("[net]", "x", NULL), NB_OK);
}

/* Every prefix and many one-byte corruptions of a real file parse or fail
 * with a message that starts with FILE:LINE; none crashes (ASan watches). */
static void test_mangled_files_never_crash(void **s) {
  (void)s;
  char path[512];
  snprintf(path, sizeof path, MODELS "cifar_cnn.cfg");
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char text[4096];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  char *buf = malloc(n + 1);
  const char junk[] = "[]=#;,.- \n0x9e";
  int failed = 0, ok = 0;
  for (size_t cut = 0; cut <= n; cut++) {
    for (size_t v = 0; v <= sizeof junk - 1; v++) {
      memcpy(buf, text, n + 1);
      if (v == sizeof junk - 1)
        buf[cut] = '\0'; /* a prefix */
      else if (cut < n)
        buf[cut] = junk[v]; /* one byte replaced */
      else
        continue;
      nb_model *m = NULL;
      nb_status st = nb_model_parse(buf, "m.cfg", &m);
      if (st) {
        failed++;
        assert_null(m);
        if (strncmp(nb_last_error(), "m.cfg:", 6)) fail_msg("bad message: %s", nb_last_error());
      } else {
        ok++;
        nb_model_free(m);
      }
    }
  }
  print_message("%d mangled files parsed, %d rejected\n", ok, failed);
  assert_true(failed > 0 && ok > 0);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_models_match_pytorch),
      cmocka_unit_test(test_shipped_models_run),
      cmocka_unit_test(test_recipes),
      cmocka_unit_test(test_mnist_file_equals_hand_built),
      cmocka_unit_test(test_train_and_eval_share_state),
      cmocka_unit_test(test_batchnorm_statistics_train_only),
      cmocka_unit_test(test_residual_identity),
      cmocka_unit_test(test_residual_projections),
      cmocka_unit_test(test_auto_names_and_embedding),
      cmocka_unit_test(test_summary),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_build_errors),
      cmocka_unit_test(test_mangled_files_never_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
