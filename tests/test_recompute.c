#define _DEFAULT_SOURCE /* mkdtemp */
/* Recomputation (activation checkpointing, src/graph/recompute.c):
 * - an MLP whose blocks (matmul, bias, gelu, dropout 0.3, a layer norm)
 *   are recompute segments gives the loss and every gradient of the same
 *   graph without segments, bit for bit, over several runs (dropout draws
 *   the same masks when recomputed), and its plan needs a smaller arena;
 *   likewise under bf16 autocast;
 *   the gradients also match central finite differences;
 * - batch norm inside a segment updates its running statistics once per
 *   step (assigns are not recomputed): equal to the plain graph's;
 * - tests/data/tiny_gpt.cfg trained 6 steps by nb_fit_text with [train]
 *   recompute on (nb_model_set_recompute) ends with the same weights and
 *   losses as without; models/gpt_char.cfg's planned training memory
 *   falls by more than 40% (at batch 2; at batch 16, 84.0 -> 24.7 MiB);
 * - runs of layers of a model file marked `recompute = yes` are segments:
 *   the same losses and weights, a smaller arena; a marked [residual]
 *   recomputes its whole block;
 * - in a model-parallel plan (two CPU devices) each device's arena
 *   shrinks, with the same losses;
 * - misuse (nested segments, an end without a begin, backward with a
 *   segment open) is NB_ERR_STATE with a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define BATCH  8
#define WIDTH  48
#define BLOCKS 3
#define RUNS   3

typedef struct mlp {
  nb_backend *be;
  nb_state *st;
  nb_graph *g;
  nb_plan *p;
  nb_tensor *x, *y, *loss;
  nb_tensor *params[4 * BLOCKS + 2], *grads[4 * BLOCKS + 2];
  int n_params;
} mlp;

static nb_tensor *param(mlp *m, const char *name, int ndim, const int64_t *shape, uint64_t seed,
                        float lo, float hi) {
  nb_init u = {NB_INIT_UNIFORM, lo, hi, seed};
  nb_tensor *t = nb_param(m->g, name, ndim, shape, u);
  m->params[m->n_params++] = t;
  return t;
}

/* x [BATCH, WIDTH] through BLOCKS blocks of h = layer_norm(dropout(gelu(h W
 * + b))) * gain + h, each one segment when `segments`, then a classifier. */
static void mlp_build_as(mlp *m, int segments, nb_dtype autocast) {
  memset(m, 0, sizeof *m);
  TU_OK(nb_backend_new("cpu", &m->be));
  TU_OK(nb_state_new(m->be, &m->st));
  m->g = nb_graph_new();
  nb_graph *g = m->g;
  TU_OK(nb_graph_set_autocast(g, autocast));
  int64_t xs[2] = {BATCH, WIDTH}, ys[1] = {BATCH}, ws[2] = {WIDTH, WIDTH}, bs[1] = {WIDTH};
  int64_t cs[2] = {WIDTH, 5};
  m->x = nb_input(g, "x", NB_F32, 2, xs);
  m->y = nb_input(g, "y", NB_I64, 1, ys);
  nb_tensor *h = m->x;
  for (int i = 0; i < BLOCKS; i++) {
    char name[32];
    if (segments) TU_OK(nb_graph_recompute_begin(g));
    snprintf(name, sizeof name, "w%d", i);
    nb_tensor *w = param(m, name, 2, ws, 10 + (uint64_t)i, -0.3f, 0.3f);
    snprintf(name, sizeof name, "b%d", i);
    nb_tensor *b = param(m, name, 1, bs, 20 + (uint64_t)i, -0.1f, 0.1f);
    snprintf(name, sizeof name, "gain%d", i);
    nb_tensor *gain = param(m, name, 1, bs, 30 + (uint64_t)i, 0.5f, 1.5f);
    nb_tensor *z = nb_gelu(g, nb_add(g, nb_matmul(g, h, w), b), 0);
    z = nb_dropout(g, z, 0.3f, 77 + (uint64_t)i, 1);
    int axis = -1;
    nb_tensor *mu = nb_mean(g, z, 1, &axis, 1);
    nb_tensor *c = nb_sub(g, z, mu);
    nb_tensor *var = nb_mean(g, nb_square(g, c), 1, &axis, 1);
    z = nb_mul(g, nb_mul(g, c, nb_rsqrt(g, nb_add(g, var, nb_scalar(g, 1e-5f)))), gain);
    h = nb_add(g, z, h);
    if (segments) TU_OK(nb_graph_recompute_end(g));
  }
  nb_tensor *wc = param(m, "wc", 2, cs, 40, -0.3f, 0.3f);
  m->loss = nb_cross_entropy(g, nb_matmul(g, h, wc), m->y, 0.0f);
  nb_tensor_set_output(m->loss);
  TU_OK(nb_graph_set_autocast(g, NB_F32));
  TU_OK(nb_graph_backward(g, m->loss));
  for (int i = 0; i < m->n_params; i++) {
    m->grads[i] = nb_graph_grad(g, m->params[i]);
    assert_non_null(m->grads[i]);
    nb_tensor_set_output(m->grads[i]);
  }
  TU_OK(nb_compile(g, m->be, m->st, NULL, &m->p));
}

static void mlp_build(mlp *m, int segments) { mlp_build_as(m, segments, NB_F32); }

static void mlp_free(mlp *m) {
  nb_plan_free(m->p);
  nb_graph_free(m->g);
  nb_state_free(m->st);
  nb_backend_free(m->be);
}

static void mlp_feed(mlp *m, int run) {
  float *x = tu_rand(BATCH * WIDTH, -1.0f, 1.0f, 100 + (uint64_t)run);
  int64_t y[BATCH];
  for (int i = 0; i < BATCH; i++) y[i] = (i * 3 + run) % 5;
  TU_OK(nb_plan_set_input(m->p, m->x, x, sizeof(float) * BATCH * WIDTH));
  TU_OK(nb_plan_set_input(m->p, m->y, y, sizeof y));
  free(x);
}

/* Every parameter's gradient after one run, in one buffer. */
static float *mlp_grads(mlp *m, size_t *n) {
  size_t total = 0;
  for (int i = 0; i < m->n_params; i++) total += (size_t)nb_tensor_numel(m->grads[i]);
  float *all = malloc(total * sizeof *all);
  assert_non_null(all);
  size_t at = 0;
  for (int i = 0; i < m->n_params; i++) {
    size_t k = (size_t)nb_tensor_numel(m->grads[i]);
    TU_OK(nb_plan_get(m->p, m->grads[i], all + at, k * sizeof *all));
    at += k;
  }
  *n = total;
  return all;
}

static int count_recomputed(const nb_graph *g) {
  int copies = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    copies += !strcmp(nb_tensor_op_name(t), "gelu");
  }
  return copies;
}

static void segments_equal_plain(nb_dtype autocast) {
  mlp a, b;
  mlp_build_as(&a, 0, autocast);
  mlp_build_as(&b, 1, autocast);
  /* the segments' forward ops appear twice: once per block, once recomputed */
  assert_int_equal(count_recomputed(a.g), BLOCKS);
  assert_int_equal(count_recomputed(b.g), 2 * BLOCKS);
  for (int r = 0; r < RUNS; r++) {
    mlp_feed(&a, r);
    mlp_feed(&b, r);
    TU_OK(nb_plan_run(a.p));
    TU_OK(nb_plan_run(b.p));
    float la, lb;
    TU_OK(nb_plan_get(a.p, a.loss, &la, sizeof la));
    TU_OK(nb_plan_get(b.p, b.loss, &lb, sizeof lb));
    assert_true(la == lb);
    size_t na, nb;
    float *ga = mlp_grads(&a, &na), *gb = mlp_grads(&b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ga, gb, na * sizeof *ga);
    free(ga);
    free(gb);
  }
  nb_plan_stats sa = nb_plan_get_stats(a.p), sb = nb_plan_get_stats(b.p);
  print_message("mlp (%s matmuls) arena: %zu bytes plain, %zu with %d recompute segments\n",
                nb_dtype_name(autocast), sa.arena_bytes, sb.arena_bytes, BLOCKS);
  assert_true(sb.arena_bytes < sa.arena_bytes);
  mlp_free(&a);
  mlp_free(&b);
}

static void test_mlp_segments_equal_plain(void **state) {
  (void)state;
  segments_equal_plain(NB_F32);
}

/* Under bf16 autocast the recomputed matmuls take the same bf16 casts. */
static void test_mlp_segments_equal_plain_bf16(void **state) {
  (void)state;
  segments_equal_plain(NB_BF16);
}

/* d loss / d w0[k] by central differences on the segmented graph (same
 * run counter, so the same dropout masks) against its gradient. */
static void test_mlp_segments_finite_differences(void **state) {
  (void)state;
  mlp m;
  mlp_build(&m, 1);
  mlp_feed(&m, 0);
  int64_t numel = WIDTH * WIDTH;
  float *w = malloc((size_t)numel * sizeof *w), *gw = malloc((size_t)numel * sizeof *gw);
  assert_true(w && gw);
  TU_OK(nb_state_read(m.st, "w0", w, (size_t)numel * sizeof *w));
  TU_OK(nb_plan_run(m.p));
  TU_OK(nb_plan_get(m.p, m.grads[0], gw, (size_t)numel * sizeof *gw));
  const int picks[5] = {0, 7, 333, 1200, (int)numel - 1};
  for (int q = 0; q < 5; q++) {
    int k = picks[q];
    double loss[2];
    const float eps = 1e-2f, w0 = w[k];
    for (int side = 0; side < 2; side++) {
      w[k] = w0 + (side ? -eps : eps);
      TU_OK(nb_state_write(m.st, "w0", w, (size_t)numel * sizeof *w));
      nb_plan_set_step(m.p, 0);
      TU_OK(nb_plan_run(m.p));
      float l;
      TU_OK(nb_plan_get(m.p, m.loss, &l, sizeof l));
      loss[side] = l;
    }
    w[k] = w0;
    double fd = (loss[0] - loss[1]) / (2.0 * eps);
    assert_true(fabs(fd - gw[k]) <= 2e-3 + 2e-2 * fabs(fd));
  }
  free(w);
  free(gw);
  mlp_free(&m);
}

/* Batch norm (training mode) inside a segment: its running statistics are
 * updated once per run, as without the segment. */
static void test_batch_norm_stats_once(void **state) {
  (void)state;
  float mean[2][6], var[2][6], loss[2][RUNS];
  for (int seg = 0; seg < 2; seg++) {
    nb_backend *be;
    nb_state *st;
    TU_OK(nb_backend_new("cpu", &be));
    TU_OK(nb_state_new(be, &st));
    nb_graph *g = nb_graph_new();
    nb_nn nn = {.g = g, .training = 1, .seed = 5, .init = NB_NN_INIT_TORCH};
    int64_t xs[4] = {4, 3, 5, 5}, ys[1] = {4};
    nb_tensor *x = nb_input(g, "x", NB_F32, 4, xs), *y = nb_input(g, "y", NB_I64, 1, ys);
    nb_conv2d_params cp = nb_conv2d_defaults();
    cp.padding[0] = cp.padding[1] = 1;
    if (seg) TU_OK(nb_graph_recompute_begin(g));
    nb_tensor *h = nb_nn_conv2d(&nn, "conv", x, 6, 3, 3, &cp, 0);
    h = nb_relu(g, nb_nn_batch_norm(&nn, "bn", h, 0.1f, 1e-5f));
    if (seg) TU_OK(nb_graph_recompute_end(g));
    nb_tensor *logits = nb_nn_linear(&nn, "fc", nb_nn_flatten(&nn, h), 4, 1);
    nb_tensor *l = nb_cross_entropy(g, logits, y, 0.0f);
    nb_tensor_set_output(l);
    TU_OK(nb_graph_backward(g, l));
    nb_optimizer *opt;
    TU_OK(nb_optimizer_sgd(g, 0.9f, 0.0f, 0, &opt));
    nb_plan *p;
    TU_OK(nb_compile(g, be, st, NULL, &p));
    for (int r = 0; r < RUNS; r++) {
      float *xv = tu_rand(4 * 3 * 5 * 5, -1.0f, 2.0f, 50 + (uint64_t)r);
      int64_t yv[4] = {0, 1, 2, (r + 3) % 4};
      TU_OK(nb_plan_set_input(p, x, xv, sizeof(float) * 4 * 3 * 5 * 5));
      TU_OK(nb_plan_set_input(p, y, yv, sizeof yv));
      TU_OK(nb_optimizer_feed(opt, p, r + 1, 0.05f));
      TU_OK(nb_plan_run(p));
      TU_OK(nb_plan_get(p, l, &loss[seg][r], sizeof(float)));
      free(xv);
    }
    TU_OK(nb_state_read(st, "bn.running_mean", mean[seg], sizeof mean[seg]));
    TU_OK(nb_state_read(st, "bn.running_var", var[seg], sizeof var[seg]));
    nb_optimizer_free(opt);
    nb_plan_free(p);
    nb_graph_free(g);
    nb_state_free(st);
    nb_backend_free(be);
  }
  assert_memory_equal(loss[0], loss[1], sizeof loss[0]);
  assert_memory_equal(mean[0], mean[1], sizeof mean[0]);
  assert_memory_equal(var[0], var[1], sizeof var[0]);
  /* updated at all: momentum 0.1 from zeros over RUNS steps */
  assert_true(fabsf(mean[0][0]) > 1e-4f);
}

/* ---- the tiny GPT through nb_fit_text ----------------------------------------------- */

#define DATA_DIR NB_TEST_REF_DIR "/../data"

static void fit_tiny(int recompute, const int32_t *tokens, int64_t n, int vocab, tu_snapshot *snap,
                     nb_text_fit_result *res) {
  nb_model *m = NULL;
  TU_OK(nb_model_load(DATA_DIR "/tiny_gpt.cfg", &m));
  TU_OK(nb_model_set_vocab(m, vocab));
  TU_OK(nb_model_set_recompute(m, recompute));
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.stop_at = 6;
  o.progress = NB_PROGRESS_OFF;
  o.log = fopen("/dev/null", "w");
  TU_OK(nb_fit_text(m, be, st, tokens, n, &o, res));
  fclose(o.log);
  tu_snapshot_take(st, snap);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

static void test_tiny_gpt_recompute_equal(void **state) {
  (void)state;
  int64_t n;
  int vocab;
  int32_t *ids = tu_text_tokens(DATA_DIR "/tiny_text.txt", &n, &vocab);
  tu_snapshot plain, re;
  nb_text_fit_result a, b;
  fit_tiny(0, ids, n, vocab, &plain, &a);
  fit_tiny(1, ids, n, vocab, &re, &b);
  assert_int_equal(a.steps, 6);
  assert_int_equal(b.steps, 6);
  assert_true(a.train_loss == b.train_loss);
  assert_true(a.val_loss == b.val_loss);
  tu_snapshot_assert_equal(&plain, &re, "tiny gpt: 6 steps with and without recompute");
  tu_snapshot_free(&plain);
  tu_snapshot_free(&re);
  free(ids);
}

/* The planned memory of models/gpt_char.cfg's training step (6 blocks,
 * batch 2), with and without: compiled, not run. */
static void test_gpt_char_recompute_memory(void **state) {
  (void)state;
  size_t arena[2];
  for (int re = 0; re < 2; re++) {
    nb_model *m = NULL;
    TU_OK(nb_model_load(NB_TEST_REF_DIR "/../../models/gpt_char.cfg", &m));
    TU_OK(nb_model_set_vocab(m, 40));
    nb_backend *be;
    nb_state *st;
    TU_OK(nb_backend_new("cpu", &be));
    TU_OK(nb_state_new(be, &st));
    nb_graph *g = nb_graph_new();
    nb_nn nn = {.g = g, .training = 1, .seed = 1, .init = NB_NN_INIT_TORCH, .recompute = re};
    nb_tensor *x = nb_model_new_input(m, g, "ids", 2), *logits = NULL;
    TU_OK(nb_model_build(m, &nn, x, &logits));
    int64_t n = nb_tensor_numel(logits) / 40, ls[2] = {n, 40};
    nb_tensor *y = nb_input(g, "y", NB_I64, 1, &n);
    nb_tensor *loss = nb_cross_entropy(g, nb_reshape(g, logits, 2, ls), y, 0.0f);
    nb_tensor_set_output(loss);
    TU_OK(nb_graph_backward(g, loss));
    nb_optimizer *opt; /* reads every gradient, so none is dead code */
    TU_OK(nb_optimizer_sgd(g, 0.0f, 0.0f, 0, &opt));
    nb_plan *p;
    TU_OK(nb_compile(g, be, st, NULL, &p));
    arena[re] = nb_plan_get_stats(p).arena_bytes;
    nb_optimizer_free(opt);
    nb_plan_free(p);
    nb_graph_free(g);
    nb_state_free(st);
    nb_backend_free(be);
    nb_model_free(m);
  }
  print_message("gpt_char training arena (batch 2): %.2f MiB plain, %.2f MiB recomputing blocks\n",
                (double)arena[0] / 1048576.0, (double)arena[1] / 1048576.0);
  assert_true(arena[1] < arena[0] * 6 / 10); /* 6 blocks: most of it is their insides */
}

/* ---- `recompute = yes` on layers of a model file ------------------------------------ */

/* Six Linear + GELU layers of one width (GELU's gradient reads its input,
 * so each layer keeps two activations); with `marked`, l1-l2 and l4-l5 are
 * two runs of marked layers, each one segment. */
static const char *mlp_cfg(int marked) {
  static char text[2][1024];
  const char *mark = marked ? "recompute = yes\n" : "";
  char *t = text[marked];
  size_t cap = sizeof text[marked], n = 0;
  n += (size_t)snprintf(t + n, cap - n, "[net]\ninput = 32\nclasses = 4\n");
  for (int i = 1; i <= 6; i++)
    n += (size_t)snprintf(t + n, cap - n, "[linear l%d]\nout = 64\nactivation = gelu\n%s", i,
                          i % 3 ? mark : "");
  snprintf(t + n, cap - n, "[linear fc]\nout = 4\n");
  return t;
}

/* A model file's training graph for `batch` examples of 32 features and
 * 4 classes: forward, cross-entropy, backward; on its own CPU state. */
typedef struct model_step {
  nb_model *m;
  nb_backend *be;
  nb_state *st;
  nb_graph *g;
  nb_tensor *x, *y, *loss;
  int64_t batch;
} model_step;

static void model_step_build(model_step *s, const char *text, int64_t batch) {
  memset(s, 0, sizeof *s);
  s->batch = batch;
  TU_OK(nb_model_parse(text, "test.cfg", &s->m));
  TU_OK(nb_backend_new("cpu", &s->be));
  TU_OK(nb_state_new(s->be, &s->st));
  s->g = nb_graph_new();
  nb_nn nn = {.g = s->g, .training = 1, .seed = 3, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  s->x = nb_model_new_input(s->m, s->g, "x", batch);
  TU_OK(nb_model_build(s->m, &nn, s->x, &logits));
  assert_false(nb_graph_recompute_open(s->g));
  s->y = nb_input(s->g, "y", NB_I64, 1, &batch);
  s->loss = nb_cross_entropy(s->g, logits, s->y, 0.0f);
  nb_tensor_set_output(s->loss);
  TU_OK(nb_graph_backward(s->g, s->loss));
}

/* Feeds batch `r` (seeded inputs, labels (i + r) % 4). */
static void model_step_feed(const model_step *s, nb_plan *p, int r) {
  float *xv = tu_rand((size_t)(s->batch * 32), -1.0f, 1.0f, 200 + (uint64_t)r);
  int64_t yv[64];
  assert_true(s->batch <= 64);
  for (int i = 0; i < s->batch; i++) yv[i] = (i + r) % 4;
  TU_OK(nb_plan_set_input(p, s->x, xv, sizeof(float) * (size_t)(s->batch * 32)));
  TU_OK(nb_plan_set_input(p, s->y, yv, sizeof(int64_t) * (size_t)s->batch));
  free(xv);
}

static void model_step_free(model_step *s) {
  nb_graph_free(s->g);
  nb_state_free(s->st);
  nb_backend_free(s->be);
  nb_model_free(s->m);
}

/* Marked layers recompute: 4 SGD steps give the unmarked model's losses
 * and weights, in a smaller arena; an eval build leaves no segment open. */
static void test_marked_layers(void **state) {
  (void)state;
  float loss[2][4];
  size_t arena[2];
  tu_snapshot snap[2];
  for (int marked = 0; marked < 2; marked++) {
    model_step s;
    model_step_build(&s, mlp_cfg(marked), 64);
    nb_optimizer *opt;
    TU_OK(nb_optimizer_sgd(s.g, 0.0f, 0.0f, 0, &opt));
    nb_plan *p;
    TU_OK(nb_compile(s.g, s.be, s.st, NULL, &p));
    arena[marked] = nb_plan_get_stats(p).arena_bytes;
    for (int r = 0; r < 4; r++) {
      model_step_feed(&s, p, r);
      TU_OK(nb_optimizer_feed(opt, p, r + 1, 0.1f));
      TU_OK(nb_plan_run(p));
      TU_OK(nb_plan_get(p, s.loss, &loss[marked][r], sizeof(float)));
    }
    tu_snapshot_take(s.st, &snap[marked]);
    nb_optimizer_free(opt);
    nb_plan_free(p);
    nb_graph *g = nb_graph_new();
    nb_nn ev = {.g = g, .training = 0, .seed = 3, .init = NB_NN_INIT_TORCH};
    nb_tensor *logits = NULL;
    TU_OK(nb_model_build(s.m, &ev, nb_model_new_input(s.m, g, "x", 2), &logits));
    assert_false(nb_graph_recompute_open(g));
    nb_graph_free(g);
    model_step_free(&s);
  }
  assert_memory_equal(loss[0], loss[1], sizeof loss[0]);
  tu_snapshot_assert_equal(&snap[0], &snap[1], "mlp.cfg: marked layers vs plain");
  print_message("mlp.cfg arena: %zu bytes plain, %zu with l1-l2 and l4-l5 recomputed\n", arena[0],
                arena[1]);
  assert_true(arena[1] < arena[0]);
  tu_snapshot_free(&snap[0]);
  tu_snapshot_free(&snap[1]);
}

/* Nodes of a model file's training graph after backward (more when
 * something is recomputed: the copies), and the loss of one run. */
static int training_nodes(const char *text, float *loss) {
  model_step s;
  model_step_build(&s, text, 16);
  nb_tensor *gw = nb_graph_grad(s.g, nb_graph_find(s.g, "r.a.weight"));
  assert_non_null(gw);
  nb_tensor_set_output(gw);
  nb_plan *p;
  TU_OK(nb_compile(s.g, s.be, s.st, NULL, &p));
  model_step_feed(&s, p, 0);
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, s.loss, loss, sizeof *loss));
  int count = nb_graph_node_count(s.g);
  nb_plan_free(p);
  model_step_free(&s);
  return count;
}

/* `recompute = yes` on a [residual] section recomputes its whole block
 * (the layers inside need no mark of their own). */
static void test_marked_residual_block(void **state) {
  (void)state;
  const char *fmt = "[net]\ninput = 32\nclasses = 4\n"
                    "[residual r]\n%s"
                    "[linear a]\nout = 32\nactivation = gelu\n"
                    "[linear b]\nout = 32\n"
                    "[end]\n[linear fc]\nout = 4\n";
  char plain[512], marked[512];
  snprintf(plain, sizeof plain, fmt, "");
  snprintf(marked, sizeof marked, fmt, "recompute = yes\n");
  float l0, l1;
  int n0 = training_nodes(plain, &l0), n1 = training_nodes(marked, &l1);
  assert_true(l0 == l1);
  assert_true(n1 > n0); /* the block's layers were copied for the backward pass */
}

/* ---- across devices (model parallelism) ------------------------------------------------ */

/* Four segments of three (matmul + gelu) on [256, 64], the first two on
 * cpu:0, the last two on cpu:1, trained 2 Adam steps: the losses and each
 * device's arena. */
static void placed_run(int segments, int micro, float loss[2], size_t arena[2]) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {256, 64}, ws[2] = {64, 64}, ys[1] = {256}, cs[2] = {64, 4};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "y", NB_I64, 1, ys);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(y, NB_MICRO_SPLIT);
  nb_tensor *h = x;
  for (int b = 0; b < 4; b++) {
    TU_OK(nb_graph_set_device(g, b < 2 ? "cpu:0" : "cpu:1"));
    if (segments) TU_OK(nb_graph_recompute_begin(g));
    for (int k = 0; k < 3; k++) {
      char name[16];
      snprintf(name, sizeof name, "w%d%d", b, k);
      nb_init u = {NB_INIT_UNIFORM, -0.2f, 0.2f, 10 + (uint64_t)(3 * b + k)};
      h = nb_gelu(g, nb_matmul(g, h, nb_param(g, name, 2, ws, u)), 0);
    }
    if (segments) TU_OK(nb_graph_recompute_end(g));
  }
  nb_init u = {NB_INIT_UNIFORM, -0.2f, 0.2f, 99};
  nb_tensor *l = nb_cross_entropy(g, nb_matmul(g, h, nb_param(g, "wc", 2, cs, u)), y, 0.0f);
  TU_OK(nb_graph_set_device(g, NULL));
  nb_tensor_set_output(l);
  TU_OK(nb_graph_backward(g, l));
  nb_optimizer *opt;
  TU_OK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt));
  nb_plan *p;
  nb_compile_options co = nb_compile_defaults();
  co.micro_batches = micro;
  TU_OK(nb_compile(g, be, st, &co, &p));
  assert_int_equal(nb_plan_device_count(p), 2);
  /* micro-batches: the plan's shapes are one micro-batch's, fed `micro` times */
  float *xv = tu_rand((size_t)(256 * 64 * micro), -1.0f, 1.0f, 4);
  int64_t yv[512];
  for (int i = 0; i < 256 * micro; i++) yv[i] = i % 4;
  TU_OK(nb_plan_set_input(p, x, xv, sizeof(float) * 256 * 64 * (size_t)micro));
  TU_OK(nb_plan_set_input(p, y, yv, sizeof(int64_t) * 256 * (size_t)micro));
  for (int step = 1; step <= 2; step++) {
    TU_OK(nb_optimizer_feed(opt, p, step, 1e-3f));
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, l, &loss[step - 1], sizeof(float)));
  }
  for (int d = 0; d < 2; d++) {
    nb_plan_device info;
    TU_OK(nb_plan_device_info(p, d, &info));
    arena[d] = info.arena_bytes;
  }
  free(xv);
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

/* Recomputation on every device of a model-parallel plan: the copies run
 * with the backward pass of their device, so each device's arena shrinks
 * (the first device's did not while its copies ran with the forward pass),
 * and the losses are unchanged. */
static void test_placed_segments(void **state) {
  (void)state;
  float l0[2], l1[2];
  size_t a0[2], a1[2];
  placed_run(0, 1, l0, a0);
  placed_run(1, 1, l1, a1);
  assert_memory_equal(l0, l1, sizeof l0);
  print_message("placed: cpu:0 arena %zu -> %zu bytes, cpu:1 %zu -> %zu\n", a0[0], a1[0], a0[1],
                a1[1]);
  assert_true(a1[0] < a0[0]);
  assert_true(a1[1] < a0[1]);
  /* pipelined in 2 micro-batches (GPipe): the same losses both ways */
  placed_run(0, 2, l0, a0);
  placed_run(1, 2, l1, a1);
  assert_memory_equal(l0, l1, sizeof l0);
  print_message("placed, 2 micro-batches: cpu:0 arena %zu -> %zu bytes, cpu:1 %zu -> %zu\n", a0[0],
                a1[0], a0[1], a1[1]);
}

static void test_misuse(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  TU_OK(nb_graph_recompute_begin(g));
  assert_true(nb_graph_recompute_open(g));
  assert_int_equal(nb_graph_recompute_begin(g), NB_ERR_STATE);
  assert_non_null(strstr(nb_last_error(), "do not nest"));
  assert_int_equal(nb_graph_status(g), NB_ERR_STATE);          /* misuse fails the graph */
  assert_int_equal(nb_graph_recompute_end(g), NB_OK);          /* the open one still ends */
  assert_int_equal(nb_graph_recompute_begin(g), NB_ERR_STATE); /* a failed graph */
  assert_non_null(strstr(nb_last_error(), "earlier error"));
  nb_graph_free(g);

  g = nb_graph_new();
  assert_int_equal(nb_graph_recompute_end(g), NB_ERR_STATE);
  assert_non_null(strstr(nb_last_error(), "no recompute segment is open"));
  nb_graph_free(g);

  g = nb_graph_new();
  int64_t s = 3;
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, &s);
  nb_tensor_set_requires_grad(x, 1);
  TU_OK(nb_graph_recompute_begin(g));
  nb_tensor *l = nb_sum(g, nb_square(g, x), 0, NULL, 0);
  assert_int_equal(nb_graph_backward(g, l), NB_ERR_STATE);
  assert_non_null(strstr(nb_last_error(), "still open"));
  /* the graph is still usable: end the segment, differentiate */
  assert_int_equal(nb_graph_status(g), NB_OK);
  TU_OK(nb_graph_recompute_end(g));
  TU_OK(nb_graph_backward(g, l));
  assert_non_null(nb_graph_grad(g, x));
  nb_graph_free(g);
  assert_int_equal(nb_graph_recompute_begin(NULL), NB_ERR_INVALID_ARG);
  assert_false(nb_graph_recompute_open(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_segments_equal_plain),
      cmocka_unit_test(test_mlp_segments_equal_plain_bf16),
      cmocka_unit_test(test_mlp_segments_finite_differences),
      cmocka_unit_test(test_batch_norm_stats_once),
      cmocka_unit_test(test_tiny_gpt_recompute_equal),
      cmocka_unit_test(test_gpt_char_recompute_memory),
      cmocka_unit_test(test_marked_layers),
      cmocka_unit_test(test_marked_residual_block),
      cmocka_unit_test(test_placed_segments),
      cmocka_unit_test(test_misuse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
