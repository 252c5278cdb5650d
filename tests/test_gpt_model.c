#define _DEFAULT_SOURCE /* mkdtemp */
/* GPT model files ([positional], [transformer], tied [linear], `vocab`,
 * [net] init) and nb_fit_text:
 * - parameter names, sizes and count equal a PyTorch twin
 *   (tests/ref/gpt_ref.py), for models/gpt_char.cfg and the tiny test model;
 * - with PyTorch's weights, the tiny model's logits equal PyTorch's;
 * - the model-file build and examples/gpt_char.c's graph-API build bind the
 *   same variables in one state and give identical logits;
 * - a few training steps on tests/data/tiny_text.txt lower the loss, and
 *   N steps equal N/2 + resume N/2 bit for bit;
 * - bad GPT sections fail with FILE:LINE messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define DATA_DIR NB_TEST_REF_DIR "/../data"

static nb_model *load(const char *path) {
  nb_model *m = NULL;
  nb_status st = nb_model_load(path, &m);
  if (st) fail_msg("%s", nb_last_error());
  return m;
}

/* The tiny text as ids of its own character vocabulary. */
static int32_t *tiny_tokens(int64_t *n, int *vocab) {
  return tu_text_tokens(DATA_DIR "/tiny_text.txt", n, vocab);
}

/* The variables nb_model_build creates, in creation order, against the
 * torch names and sizes of `model` in gpt_params_names.txt. */
static void check_names(const nb_model *m, const char *model) {
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .training = 0, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *y = NULL;
  TU_OK(nb_model_build(m, &nn, nb_model_new_input(m, g, "ids", 1), &y));
  FILE *f = fopen(NB_TEST_REF_DIR "/gpt_params_names.txt", "r");
  assert_non_null(f);
  char line[256], mname[64], pname[128];
  long long numel, total = -1;
  int next = 0, matched = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || sscanf(line, "%63s %127s %lld", mname, pname, &numel) != 3) continue;
    if (strcmp(mname, model)) continue;
    if (!strcmp(pname, "__total__")) {
      total = numel;
      continue;
    }
    nb_tensor *t = NULL;
    while (next < nb_graph_node_count(g) && !t) {
      nb_tensor *c = nb_graph_node(g, next++);
      if (nb_tensor_requires_grad(c) && !strcmp(nb_tensor_op_name(c), "variable")) t = c;
    }
    if (!t) fail_msg("%s: torch has %s, nabla has no more parameters", model, pname);
    if (strcmp(nb_tensor_name(t), pname) || nb_tensor_numel(t) != numel)
      fail_msg("%s: parameter %d: torch %s (%lld), nabla %s (%lld)", model, matched, pname, numel,
               nb_tensor_name(t), (long long)nb_tensor_numel(t));
    matched++;
  }
  fclose(f);
  for (; next < nb_graph_node_count(g); next++) {
    nb_tensor *c = nb_graph_node(g, next);
    if (nb_tensor_requires_grad(c) && !strcmp(nb_tensor_op_name(c), "variable"))
      fail_msg("%s: nabla has %s beyond torch's parameters", model, nb_tensor_name(c));
  }
  int64_t count = 0;
  TU_OK(nb_model_param_count(m, &count));
  assert_int_equal(count, total);
  assert_true(matched > 10);
  nb_graph_free(g);
}

static void test_gpt_char_matches_pytorch(void **s) {
  (void)s;
  nb_model *m = load(NB_TEST_REF_DIR "/../../models/gpt_char.cfg");
  assert_true(nb_model_is_text(m));
  assert_true(nb_model_takes_vocab(m));
  assert_int_equal(nb_model_vocab(m), NB_MODEL_DEFAULT_VOCAB);
  assert_int_equal(nb_model_classes(m), 65);
  const nb_recipe *r = nb_model_recipe(m);
  assert_int_equal(r->optimizer, NB_RECIPE_ADAMW);
  assert_int_equal(r->steps, 2000);
  assert_int_equal(r->decay_min_dims, 2);
  assert_int_equal(r->warmup, 100);
  assert_int_equal(r->batch, 16);
  assert_true(fabsf(r->beta2 - 0.95f) < 1e-7f && fabsf(r->min_lr - 1e-4f) < 1e-10f);
  check_names(m, "gpt_char");
  nb_model_free(m);
}

/* Writes every parameter of the "weights" reference case into the state. */
static void write_ref_weights(nb_state *st, const tu_ref *ref) {
  for (int i = 0; i < nb_state_count(st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    int64_t numel = 0;
    const float *w = tu_ref_get(ref, "weights", name, NULL, NULL, &numel);
    assert_int_equal(numel, nb_shape_numel(nd, shape));
    TU_OK(nb_state_write(st, name, w, (size_t)numel * sizeof *w));
  }
}

typedef struct {
  nb_graph *g;
  nb_tensor *x, *logits;
  nb_plan *plan;
} fwd;

static void fwd_run(fwd *f, const int32_t *ids, float *out, size_t bytes) {
  TU_OK(nb_plan_set_input(f->plan, f->x, ids, 2 * 16 * sizeof *ids));
  TU_OK(nb_plan_run(f->plan));
  TU_OK(nb_plan_get(f->plan, f->logits, out, bytes));
}

static void fwd_free(fwd *f) {
  nb_plan_free(f->plan);
  nb_graph_free(f->g);
}

/* The tiny model from its file, batch 2, eval mode. */
static fwd file_build(const nb_model *m, nb_backend *be, nb_state *st) {
  fwd f;
  f.g = nb_graph_new();
  nb_nn nn = {.g = f.g, .training = 0, .seed = 1, .init = NB_NN_INIT_TORCH};
  f.x = nb_model_new_input(m, f.g, "ids", 2);
  TU_OK(nb_model_build(m, &nn, f.x, &f.logits));
  nb_tensor_set_output(f.logits);
  TU_OK(nb_compile(f.g, be, st, NULL, &f.plan));
  return f;
}

/* The same network op by op, as examples/gpt_char.c builds it. */
static fwd api_build(int64_t vocab, nb_backend *be, nb_state *st) {
  fwd f;
  f.g = nb_graph_new();
  nb_graph *g = f.g;
  nb_nn nn = {.g = g, .training = 0, .seed = 1, .init = NB_NN_INIT_NORMAL_002};
  int64_t bt[2] = {2, 16}, ps[2] = {16, 16}, flat[2] = {32, 16};
  f.x = nb_input(g, "ids", NB_I32, 2, bt);
  nb_tensor *h = nb_nn_embedding(&nn, "wte", f.x, vocab, 16);
  nb_tensor *wte = nb_graph_find(g, "wte.weight");
  nb_init pinit = {NB_INIT_NORMAL, 0.0f, 0.02f, 1 ^ 0x9e3779b97f4a7c15ull};
  h = nb_add(g, h, nb_param(g, "wpe.weight", 2, ps, pinit));
  h = nb_nn_transformer_block(&nn, "h.0", h, 2, 1, 4);
  h = nb_nn_transformer_block(&nn, "h.1", h, 2, 1, 4);
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  f.logits = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, wte, 0, 1));
  nb_tensor_set_output(f.logits);
  TU_OK(nb_graph_status(g));
  TU_OK(nb_compile(g, be, st, NULL, &f.plan));
  return f;
}

static void test_tiny_gpt_matches_pytorch_and_graph_api(void **s) {
  (void)s;
  nb_model *m = load(DATA_DIR "/tiny_gpt.cfg");
  int64_t n;
  int vocab;
  int32_t *tokens = tiny_tokens(&n, &vocab);
  tu_ref *ref = tu_ref_load("gpt_logits.txt");
  assert_int_equal(vocab, (int)tu_ref_get(ref, "tiny", "vocab", NULL, NULL, NULL)[0]);
  TU_OK(nb_model_set_vocab(m, vocab));
  assert_int_equal(nb_model_classes(m), vocab);
  check_names(m, "tiny_gpt");

  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  fwd a = file_build(m, be, st);
  int n_vars = nb_state_count(st);
  /* same names, shapes and initial values: the second build adds nothing */
  float *init_file = malloc((size_t)vocab * 16 * sizeof(float));
  TU_OK(nb_state_read(st, "wpe.weight", init_file, 256 * sizeof(float)));
  fwd b = api_build(vocab, be, st);
  assert_int_equal(nb_state_count(st), n_vars);

  const float *idf = tu_ref_get(ref, "tiny", "ids", NULL, NULL, NULL);
  int64_t numel = 0;
  const float *want = tu_ref_get(ref, "tiny", "logits", NULL, NULL, &numel);
  assert_int_equal(numel, 2 * 16 * vocab);
  int32_t ids[32];
  for (int i = 0; i < 32; i++) ids[i] = (int32_t)idf[i];
  /* the reference windows are those of the tiny text */
  assert_memory_equal(ids, tokens, 16 * sizeof *ids);
  assert_memory_equal(ids + 16, tokens + 1000, 16 * sizeof *ids);

  /* the [net] init = normal_002 start equals the example's */
  float *ya = malloc((size_t)numel * sizeof *ya), *yb = malloc((size_t)numel * sizeof *yb);
  fwd_run(&a, ids, ya, (size_t)numel * sizeof *ya);
  fwd_run(&b, ids, yb, (size_t)numel * sizeof *yb);
  assert_memory_equal(ya, yb, (size_t)numel * sizeof *ya);
  float sd = 0;
  for (int i = 0; i < 256; i++) sd += init_file[i] * init_file[i];
  sd = sqrtf(sd / 256);
  assert_true(sd > 0.01f && sd < 0.03f); /* N(0, 0.02) */

  /* PyTorch's weights: both builds give PyTorch's logits, bit-equal to each other */
  write_ref_weights(st, ref);
  fwd_run(&a, ids, ya, (size_t)numel * sizeof *ya);
  fwd_run(&b, ids, yb, (size_t)numel * sizeof *yb);
  assert_memory_equal(ya, yb, (size_t)numel * sizeof *ya);
  tu_assert_close("tiny gpt logits vs torch", ya, want, (size_t)numel, 1e-4, 1e-4);

  free(ya);
  free(yb);
  free(init_file);
  fwd_free(&a);
  fwd_free(&b);
  nb_state_free(st);
  nb_backend_free(be);
  tu_ref_free(ref);
  free(tokens);
  nb_model_free(m);
}

/* ---- training ------------------------------------------------------------------ */

static void train(const nb_model *m, const int32_t *tokens, int64_t n, int64_t stop_at,
                  const char *out, const char *resume, tu_snapshot *snap, nb_text_fit_result *res) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.out_dir = out;
  o.resume = resume;
  o.stop_at = stop_at;
  o.progress = NB_PROGRESS_OFF;
  o.log = fopen("/dev/null", "w");
  TU_OK(nb_fit_text(m, be, st, tokens, n, &o, res));
  fclose(o.log);
  if (snap) tu_snapshot_take(st, snap);
  nb_state_free(st);
  nb_backend_free(be);
}

static void test_fit_text_learns_and_resumes_exactly(void **s) {
  (void)s;
  nb_model *m = load(DATA_DIR "/tiny_gpt.cfg");
  int64_t n;
  int vocab;
  int32_t *tokens = tiny_tokens(&n, &vocab);
  TU_OK(nb_model_set_vocab(m, vocab));
  char tmpl[] = "/tmp/nb_gpt_XXXXXX";
  char *dir = mkdtemp(tmpl);
  assert_non_null(dir);
  char a[512], b[512], ckpt[600], path[600];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);

  /* 8 steps in one go (dropout 0.1 on, so the plan step matters) */
  tu_snapshot full, resumed;
  nb_text_fit_result r1, r2, r3;
  train(m, tokens, n, 0, a, NULL, &full, &r1);
  assert_int_equal(r1.steps, 8);
  /* the loss starts at about ln(vocab) with N(0, 0.02) weights, and falls */
  print_message("tiny gpt: train loss %.4f, val loss %.4f after 8 steps (ln V = %.4f)\n",
                r1.train_loss, r1.val_loss, log((double)vocab));
  assert_true(r1.train_loss < log((double)vocab) - 0.3);
  assert_true(r1.val_loss < log((double)vocab) - 0.3);
  assert_true(r1.tokens_per_sec > 0);
  snprintf(path, sizeof path, "%s/weights.safetensors", a);
  assert_int_equal(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/log.csv", a);
  FILE *csv = fopen(path, "r");
  assert_non_null(csv);
  char line[256];
  int rows = 0;
  assert_non_null(fgets(line, sizeof line, csv));
  assert_string_equal(line, "step,lr,train_loss,val_loss,tokens_per_sec\n");
  while (fgets(line, sizeof line, csv)) rows++;
  fclose(csv);
  assert_int_equal(rows, 2); /* eval_every = 4 */

  /* 4 steps, pause, resume for the other 4 */
  train(m, tokens, n, 4, b, NULL, NULL, &r2);
  assert_int_equal(r2.steps, 4);
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", b);
  train(m, tokens, n, 0, b, ckpt, &resumed, &r3);
  assert_int_equal(r3.steps, 8);
  tu_snapshot_assert_equal(&full, &resumed, "8 steps vs 4 + resume 4");
  assert_true(r3.val_loss == r1.val_loss);

  /* the whole validation part, in order, through nb_evaluate_text */
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  double l0 = 0, l1 = 0;
  TU_OK(nb_evaluate_text(m, be, st, tokens, n, 4, 0, 1, &l0)); /* fresh N(0, 0.02) weights */
  snprintf(path, sizeof path, "%s/weights.safetensors", a);
  TU_OK(nb_safetensors_load(path, st, NULL, 0));
  TU_OK(nb_evaluate_text(m, be, st, tokens, n, 4, 0, 1, &l1));
  assert_true(fabs(l0 - log((double)vocab)) < 0.05);
  assert_true(l1 < l0 - 0.3);
  nb_state_free(st);
  nb_backend_free(be);

  tu_snapshot_free(&full);
  tu_snapshot_free(&resumed);
  const char *files[] = {"checkpoint.safetensors", "weights.safetensors", "log.csv"};
  for (int d = 0; d < 2; d++) {
    for (int f = 0; f < 3; f++) {
      snprintf(path, sizeof path, "%s/%s", d ? b : a, files[f]);
      remove(path);
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -f %s/events.out.tfevents.*", d ? b : a);
    assert_int_equal(system(cmd), 0);
    rmdir(d ? b : a);
  }
  rmdir(dir);
  free(tokens);
  nb_model_free(m);
}

/* Gradient accumulation and a pipeline over two devices for a text model:
 * the tiny GPT without dropout (masks are drawn per micro-batch) trained 8
 * steps in 2 micro-batches of 2 windows, on one device and with its
 * transformer blocks on cpu:1, ends where whole batches of 4 end, up to
 * float summation order: the losses within 1e-5, every variable within
 * 1e-3 of its largest magnitude (AdamW turns the rounding noise of the
 * key biases' zero gradients into steps of up to 1.5e-4 of it). */
static nb_status train_parts(nb_model *m, const int32_t *tokens, int64_t n, int micro,
                             tu_snapshot *snap, nb_text_fit_result *res) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.micro_batches = micro;
  o.progress = NB_PROGRESS_OFF;
  o.log = fopen("/dev/null", "w");
  nb_status rc = nb_fit_text(m, be, st, tokens, n, &o, res);
  fclose(o.log);
  if (!rc && snap) tu_snapshot_take(st, snap);
  nb_state_free(st);
  nb_backend_free(be);
  return rc;
}

static void assert_snapshots_close(const tu_snapshot *a, const tu_snapshot *b, const char *what) {
  assert_int_equal(a->n, b->n);
  for (int i = 0; i < a->n; i++) {
    assert_string_equal(a->name[i], b->name[i]);
    size_t k = a->bytes[i] / sizeof(float);
    const float *x = a->v[i], *y = b->v[i];
    float scale = 0;
    for (size_t j = 0; j < k; j++) scale = fabsf(y[j]) > scale ? fabsf(y[j]) : scale;
    char name[160];
    snprintf(name, sizeof name, "%s: %s", what, a->name[i]);
    tu_assert_close(name, x, y, k, 1e-3 * scale + 1e-30, 0.0);
  }
}

static void test_fit_text_micro_batches(void **s) {
  (void)s;
  FILE *f = fopen(DATA_DIR "/tiny_gpt.cfg", "r");
  assert_non_null(f);
  char text[4096];
  size_t len = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[len] = '\0';
  /* no dropout: "p = 0.1" and "dropout = 0.1" become 0.0 */
  const char *keys[] = {"\np = 0.1", "\ndropout = 0.1"};
  for (int k = 0; k < 2; k++) {
    char *p = strstr(text, keys[k]);
    assert_non_null(p);
    memcpy(p + strlen(keys[k]) - 3, "0.0", 3);
  }
  nb_model *m = NULL;
  TU_OK(nb_model_parse(text, "tiny_gpt.cfg", &m));
  int64_t n;
  int vocab;
  int32_t *tokens = tiny_tokens(&n, &vocab);
  TU_OK(nb_model_set_vocab(m, vocab));
  tu_snapshot whole, parts, piped;
  nb_text_fit_result r1, r2, r3;
  TU_OK(train_parts(m, tokens, n, 1, &whole, &r1));
  TU_OK(train_parts(m, tokens, n, 2, &parts, &r2));
  TU_OK(nb_model_set_placement(m, "h=cpu:1"));
  TU_OK(train_parts(m, tokens, n, 2, &piped, &r3));
  print_message("tiny gpt, val loss: whole batches %.6f, 2 micro-batches %.6f, pipelined %.6f\n",
                r1.val_loss, r2.val_loss, r3.val_loss);
  assert_true(fabs(r2.val_loss - r1.val_loss) <= 1e-5 * fabs(r1.val_loss));
  assert_true(fabs(r3.val_loss - r1.val_loss) <= 1e-5 * fabs(r1.val_loss));
  assert_true(fabs(r2.train_loss - r1.train_loss) <= 1e-5 * fabs(r1.train_loss));
  assert_snapshots_close(&parts, &whole, "2 micro-batches");
  assert_snapshots_close(&piped, &whole, "pipelined over cpu:0 and cpu:1");
  /* the batch must split evenly */
  nb_text_fit_result r4;
  assert_int_equal(train_parts(m, tokens, n, 3, NULL, &r4), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "does not split into 3 equal micro-batches"));
  tu_snapshot_free(&whole);
  tu_snapshot_free(&parts);
  tu_snapshot_free(&piped);
  free(tokens);
  nb_model_free(m);
}

/* ---- errors ---------------------------------------------------------------------- */

static const char *tiny_head = "[net]\n"      /* 1 */
                               "input = 16\n" /* 2 */
                               "input_dtype = i32\n"
                               "classes = vocab\n" /* 4 */
                               "[embedding wte]\n" /* 5 */
                               "vocab = vocab\n"
                               "dim = 16\n"; /* 7 */

static void expect_parse_error(const char *body, const char *want) {
  char text[1024];
  snprintf(text, sizeof text, "%s%s", tiny_head, body);
  nb_model *m = NULL;
  nb_status st = nb_model_parse(text, "gpt.cfg", &m);
  if (st == NB_OK) fail_msg("no error for:\n%s", body);
  assert_null(m);
  if (!strstr(nb_last_error(), want)) fail_msg("error '%s' lacks '%s'", nb_last_error(), want);
}

static void expect_build_error(const char *body, const char *want) {
  char text[1024];
  snprintf(text, sizeof text, "%s%s", tiny_head, body);
  nb_model *m = NULL;
  TU_OK(nb_model_parse(text, "gpt.cfg", &m));
  int64_t count;
  nb_status st = nb_model_param_count(m, &count);
  assert_int_not_equal(st, NB_OK);
  if (!strstr(nb_last_error(), want)) fail_msg("error '%s' lacks '%s'", nb_last_error(), want);
  nb_model_free(m);
}

static void test_bad_gpt_sections(void **s) {
  (void)s;
  expect_parse_error("[layernorm ln_f]\n[linear lm_head]\ntie = wtx\n",
                     "gpt.cfg:10: expected 'tie' to name an earlier [embedding] layer, found "
                     "'wtx'");
  expect_parse_error("[layernorm ln_f]\n[linear lm_head]\ntie = ln_f\n",
                     "gpt.cfg:10: expected 'tie' to name an [embedding] layer, found 'ln_f', a "
                     "[layernorm] at line 8");
  expect_parse_error("[linear lm_head]\ntie = wte\nout = 65\n",
                     "gpt.cfg:10: expected no 'out' with tie = wte");
  expect_parse_error("[linear lm_head]\ntie = wte\nbias = yes\n",
                     "gpt.cfg:10: expected bias = no with tie = wte");
  expect_parse_error("[linear lm_head]\n", "gpt.cfg:8: expected key 'out' (output features)");
  expect_parse_error("[transformer h]\nrepeat = 2\n",
                     "gpt.cfg:8: expected key 'heads' (attention heads) in [transformer h]");
  expect_parse_error("[transformer h]\nheads = 2\ndropout = 1\n",
                     "gpt.cfg:10: expected a number in [0, 1) for 'dropout'");
  expect_parse_error("[transformer h]\nheads = 2\nlayers = 2\n",
                     "gpt.cfg:10: expected a key of [transformer h] (repeat, heads, mlp, causal, "
                     "dropout, device, recompute), found 'layers'");
  expect_parse_error("[train]\nepochs = 2\n",
                     "gpt.cfg:9: expected 'epochs' only with image and feature models");
  expect_parse_error("[train]\noptimizer = sgd\nweight_decay = 0.1\ndecay_min_dims = 2\n",
                     "gpt.cfg:11: expected 'decay_min_dims' only with optimizer = adam or adamw");
  expect_parse_error("[train]\nsteps = 0\n", "gpt.cfg:9: expected an integer >= 1 for 'steps'");
  expect_parse_error("[embedding e2]\nvocab = vocabs\ndim = 4\n",
                     "gpt.cfg:9: expected an integer >= 1 or vocab (the data's vocabulary) for "
                     "'vocab'");

  /* shape problems surface when the model is built, with the section's line */
  expect_build_error("[transformer h]\nheads = 3\n",
                     "gpt.cfg:8: [transformer h]: expected heads (3) to divide the width (16)");
  expect_build_error("[positional wpe]\ncontext = 8\n",
                     "gpt.cfg:8: [positional wpe]: expected at most context = 8 positions, found "
                     "16");
  expect_build_error("[flatten]\n[transformer h]\nheads = 2\n",
                     "gpt.cfg:9: [transformer h]: transformer needs [batch, T, width] input");

  /* steps and friends belong to token-sequence models */
  nb_model *m = NULL;
  assert_int_not_equal(
      nb_model_parse("[net]\ninput = 4\n[train]\nsteps = 10\n[linear fc]\nout = 2\n", "img.cfg",
                     &m),
      NB_OK);
  assert_non_null(strstr(nb_last_error(), "img.cfg:4: expected 'steps' only with a "
                                          "token-sequence model"));
  /* a fixed vocabulary has no `vocab` to set */
  TU_OK(nb_model_parse("[net]\ninput = 4\ninput_dtype = i32\n[embedding e]\nvocab = 9\ndim = 4\n",
                       "fixed.cfg", &m));
  assert_false(nb_model_takes_vocab(m));
  assert_int_equal(nb_model_set_vocab(m, 12), NB_ERR_INVALID_ARG);
  nb_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gpt_char_matches_pytorch),
      cmocka_unit_test(test_tiny_gpt_matches_pytorch_and_graph_api),
      cmocka_unit_test(test_fit_text_learns_and_resumes_exactly),
      cmocka_unit_test(test_fit_text_micro_batches),
      cmocka_unit_test(test_bad_gpt_sections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
