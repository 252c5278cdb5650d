#define _DEFAULT_SOURCE /* mkdtemp */
/* A GPT model file on byte-level BPE tokens ([net] tokenizer = bpe):
 * - the tokenizer keys parse, size `vocab`, and bad combinations fail with
 *   FILE:LINE messages;
 * - a tiny BPE GPT trains from the model file on BPE ids of
 *   tests/data/tiny_text.txt (vocabulary learned on its first 90%) and its
 *   loss falls well below ln(V);
 * - the saved vocabulary reads back with the same merges and ids, and
 *   decodes the ids to the text;
 * - greedy generation through the model file's decode graph (the KV cache
 *   `nabla generate` uses) gives exactly the tokens of full recomputation,
 *   with the trained weights and with random ones (a varied sequence). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define DATA_DIR NB_TEST_REF_DIR "/../data"

enum { T = 16, VOCAB = 300 };

static const char *tiny_bpe = "[net]\n"
                              "input = 16\n"
                              "input_dtype = i32\n"
                              "classes = vocab\n"
                              "init = normal_002\n"
                              "tokenizer = bpe\n"
                              "tokenizer_vocab = 300\n"
                              "[train]\n"
                              "optimizer = adamw\n"
                              "lr = 1e-2\n"
                              "batch = 8\n"
                              "steps = 30\n"
                              "eval_every = 30\n"
                              "eval_batches = 4\n"
                              "[embedding wte]\n"
                              "vocab = vocab\n"
                              "dim = 16\n"
                              "[positional wpe]\n"
                              "[transformer h]\n"
                              "repeat = 1\n"
                              "heads = 2\n"
                              "[layernorm ln_f]\n"
                              "[linear lm_head]\n"
                              "tie = wte\n";

static nb_model *parse(const char *text) {
  nb_model *m = NULL;
  nb_status st = nb_model_parse(text, "tiny_bpe.cfg", &m);
  if (st) fail_msg("%s", nb_last_error());
  return m;
}

/* tiny_bpe with the line `line` (1-based, "" to drop it) replaced. */
static void expect_parse_error(int line, const char *with, const char *want) {
  char buf[2048] = "";
  const char *p = tiny_bpe;
  for (int i = 1; *p; i++) {
    size_t n = strcspn(p, "\n") + 1;
    if (i == line)
      strncat(buf, with, sizeof buf - strlen(buf) - 1);
    else
      strncat(buf, p, n < sizeof buf - strlen(buf) ? n : sizeof buf - strlen(buf) - 1);
    p += n;
  }
  nb_model *m = NULL;
  assert_int_not_equal(nb_model_parse(buf, "bad.cfg", &m), NB_OK);
  assert_null(m);
  if (!strstr(nb_last_error(), want)) fail_msg("error '%s' lacks '%s'", nb_last_error(), want);
}

static void test_tokenizer_keys(void **s) {
  (void)s;
  nb_model *m = parse(tiny_bpe);
  assert_int_equal(nb_model_tokenizer_bpe(m), 1);
  assert_int_equal(nb_model_tokenizer_vocab(m), VOCAB);
  assert_null(nb_model_tokenizer_file(m));
  /* before the data says, `vocab` is the size the file asks for */
  assert_int_equal(nb_model_vocab(m), VOCAB);
  nb_model_free(m);
  expect_parse_error(6, "tokenizer = wordpiece\n", "bad.cfg:6: expected char or bpe");
  expect_parse_error(6, "tokenizer = char\n", "expected [net] tokenizer = bpe");
  expect_parse_error(7, "tokenizer_vocab = 100\n", "tokenizer_vocab >= 256");
  expect_parse_error(7, "\n", "exactly one of [net] tokenizer_vocab");
  expect_parse_error(7, "tokenizer_vocab = 300\ntokenizer_file = a/b.bpe\n", "exactly one of");
  nb_model *bad = NULL;
  assert_int_not_equal(nb_model_parse("[net]\ninput = 8\ntokenizer = bpe\ntokenizer_vocab = 300\n"
                                      "[linear fc]\nout = 2\n",
                                      "img.cfg", &bad),
                       NB_OK);
  assert_non_null(strstr(nb_last_error(), "img.cfg:6: expected a text model"));
  m = parse("[net]\ninput = 8\ninput_dtype = i32\ntokenizer = bpe\ntokenizer_file = v/x.bpe\n"
            "[embedding e]\nvocab = 400\ndim = 4\n");
  assert_string_equal(nb_model_tokenizer_file(m), "v/x.bpe");
  assert_int_equal(nb_model_tokenizer_vocab(m), 0);
  nb_model_free(m);
}

/* The model file's decode graph, as `nabla generate` builds it. */
static nb_status build_decode(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                              nb_decode_graph *out) {
  const nb_model *m = ctx;
  nb_nn nn = {.g = g, .seed = nb_model_recipe(m)->seed, .init = NB_NN_INIT_TORCH};
  int64_t bt[2] = {1, len}, one = 1;
  out->ids = nb_input(g, "ids", NB_I32, 2, bt);
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  return nb_model_build_decode(m, &nn, out->ids, out->pos, capacity, &out->logits);
}

static int collect(int32_t tok, void *user) {
  int32_t **at = user;
  *(*at)++ = tok;
  return 0;
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

/* Greedy generation through the decoder from the prompt ref[0..p) to a
 * full context equals full recomputation (the whole window rerun for every
 * token, argmax of the last row); returns the number of distinct tokens. */
static int greedy_vs_recompute(nb_plan *full, nb_tensor *in, nb_tensor *logits, nb_decoder *d,
                               const nb_bpe *tok, int32_t *ref, int p) {
  int new_tokens = T - p + 1;
  int32_t got[T], *w = got;
  float *lg = malloc(sizeof(float) * T * VOCAB);
  assert_non_null(lg);
  for (int k = p; k <= T; k++) {
    int32_t win[T] = {0};
    memcpy(win, ref, (size_t)k * sizeof *ref);
    TU_OK(nb_plan_set_input(full, in, win, sizeof win));
    TU_OK(nb_plan_run(full));
    TU_OK(nb_plan_get(full, logits, lg, sizeof(float) * T * VOCAB));
    ref[k] = argmax(lg + (size_t)(k - 1) * VOCAB, VOCAB);
  }
  free(lg);
  nb_generate_options go = {.max_tokens = new_tokens, .sample = {.temperature = 0.0f}};
  nb_generate_stats gs;
  TU_OK(nb_generate(d, ref, p, &go, collect, &w, &gs));
  assert_int_equal(gs.new_tokens, new_tokens);
  int distinct = 0;
  for (int i = 0; i < new_tokens; i++) {
    if (got[i] != ref[p + i])
      fail_msg("token %d: cache %d, recompute %d", p + i, (int)got[i], (int)ref[p + i]);
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= got[j] == got[i];
    distinct += !seen;
  }
  /* the generated ids decode (bytes may end inside a UTF-8 character) */
  char *dec = NULL;
  size_t dlen = 0;
  TU_OK(nb_bpe_decode(tok, got, (size_t)new_tokens, &dec, &dlen));
  assert_true(dlen >= (size_t)new_tokens);
  free(dec);
  return distinct;
}

static void test_train_save_generate(void **s) {
  (void)s;
  char *text;
  size_t len;
  TU_OK(nb_text_read_file(DATA_DIR "/tiny_text.txt", &text, &len));
  nb_model *m = parse(tiny_bpe);
  /* the vocabulary of `nabla train`: learned on the training 90% */
  nb_bpe *tok = NULL;
  TU_OK(nb_bpe_train(text, len / 10 * 9, (int)nb_model_tokenizer_vocab(m), &tok));
  assert_int_equal(nb_bpe_vocab_size(tok), VOCAB);
  int32_t *ids = malloc(len * sizeof *ids);
  assert_non_null(ids);
  size_t n = 0;
  TU_OK(nb_bpe_encode(tok, text, len, 0, ids, &n));
  print_message("tiny bpe: %zu bytes -> %zu tokens (%.3f bytes per token)\n", len, n,
                (double)len / (double)n);
  assert_true(n < len * 3 / 4); /* the merges do merge */
  TU_OK(nb_model_set_vocab(m, nb_bpe_vocab_size(tok)));

  char tmpl[] = "/tmp/nb_gpt_bpe_XXXXXX";
  char *dir = mkdtemp(tmpl);
  assert_non_null(dir);
  char vpath[600], wpath[600];
  snprintf(vpath, sizeof vpath, "%s/vocab.bpe", dir);
  snprintf(wpath, sizeof wpath, "%s/weights.safetensors", dir);

  /* the saved vocabulary: same merges, same ids, decodes to the text */
  TU_OK(nb_bpe_save(tok, vpath));
  nb_bpe *back = NULL;
  TU_OK(nb_bpe_load(vpath, &back));
  assert_int_equal(nb_bpe_num_merges(back), nb_bpe_num_merges(tok));
  assert_memory_equal(nb_bpe_merges(back), nb_bpe_merges(tok),
                      2 * (size_t)nb_bpe_num_merges(tok) * sizeof(int32_t));
  int32_t *ids2 = malloc(len * sizeof *ids2);
  assert_non_null(ids2);
  size_t n2 = 0;
  TU_OK(nb_bpe_encode(back, text, len, 0, ids2, &n2));
  assert_int_equal(n2, n);
  assert_memory_equal(ids2, ids, n * sizeof *ids);
  char *dec = NULL;
  size_t dlen = 0;
  TU_OK(nb_bpe_decode(back, ids, n, &dec, &dlen));
  assert_int_equal(dlen, len);
  assert_memory_equal(dec, text, len);
  free(dec);
  free(ids2);

  /* training from the model file lowers the loss well below ln(V) */
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.out_dir = dir;
  o.progress = NB_PROGRESS_OFF;
  o.log = fopen("/dev/null", "w");
  nb_text_fit_result r;
  TU_OK(nb_fit_text(m, be, st, ids, (int64_t)n, &o, &r));
  fclose(o.log);
  print_message("tiny bpe gpt: train loss %.4f, val loss %.4f after %lld steps (ln V = %.4f)\n",
                r.train_loss, r.val_loss, (long long)r.steps, log((double)VOCAB));
  assert_int_equal(r.steps, 30);
  assert_true(r.train_loss < log((double)VOCAB) - 0.5);
  assert_true(r.val_loss < log((double)VOCAB) - 0.5);
  nb_state_free(st);

  /* the saved weights in a fresh state: full forward plan + decoder */
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  assert_non_null(g);
  nb_nn nn = {.g = g, .seed = nb_model_recipe(m)->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *in = nb_model_new_input(m, g, "ids", 1), *logits = NULL;
  TU_OK(nb_model_build(m, &nn, in, &logits));
  nb_tensor_set_output(logits);
  nb_plan *full = NULL;
  TU_OK(nb_compile(g, be, st, NULL, &full));
  TU_OK(nb_safetensors_load(wpath, st, NULL, NB_SAFETENSORS_ALLOW_EXTRA));
  nb_decoder *d = NULL;
  TU_OK(nb_decoder_new(be, st, nb_model_context(m), build_decode, m, &d));
  assert_int_equal(nb_decoder_vocab(d), VOCAB);

  /* a prompt of BPE ids, then greedy to a full context */
  const char *prompt = "First Citizen:\nWe";
  int32_t ref[T + 1];
  size_t p = 0;
  TU_OK(nb_bpe_encode(back, prompt, strlen(prompt), 0, ref, &p));
  assert_true(p >= 2 && p < 8);
  int distinct = greedy_vs_recompute(full, in, logits, d, back, ref, (int)p);
  print_message("trained weights: %d distinct greedy tokens\n", distinct);
  /* 30 steps of training give a near-constant greedy text, which would
   * check little: again with U(-0.5, 0.5) weights (norm gains 1 + U), whose
   * logits lie well apart (tests/test_kv_cache.c) */
  for (int i = 0; i < nb_state_count(st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    if (strstr(name, "_cache")) continue;
    int64_t numel = nb_shape_numel(nd, shape);
    float *wv = tu_rand((size_t)numel, -0.5f, 0.5f, 100 + (uint64_t)i);
    size_t nl = strlen(name);
    if (nl > 7 && !strcmp(name + nl - 7, ".weight") && strstr(name, "ln"))
      for (int64_t j = 0; j < numel; j++) wv[j] += 1.0f;
    TU_OK(nb_state_write(st, name, wv, (size_t)numel * sizeof *wv));
    free(wv);
  }
  distinct = greedy_vs_recompute(full, in, logits, d, back, ref, (int)p);
  print_message("random weights: %d distinct greedy tokens\n", distinct);
  assert_true(distinct > 2);

  nb_decoder_free(d);
  nb_plan_free(full);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  nb_bpe_free(back);
  nb_bpe_free(tok);
  free(ids);
  free(text);
  nb_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tokenizer_keys),
      cmocka_unit_test(test_train_save_generate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
