/* Deterministic mutation fuzzing of the readers of model files,
 * safetensors files, checkpoints, LoRA adapters, IDX/MNIST, CIFAR-10
 * batches, CSV tables, BPE vocabularies and character vocabularies, bounded
 * in time (1 s per reader by default) so CI runs it on every build. The
 * seeds are small valid files the library writes (tests/fuzz_seeds.h) and
 * the shipped model files; tests/fuzz_mutate.h mutates them (with a
 * dictionary of each format's tokens) and tests/fuzz_io.h, fuzz_data.h and
 * fuzz_model.h feed the result through the reader and check what it
 * accepts. Inputs that once broke a reader are in test_fuzz_found.c.
 *
 * Environment as in test_fuzz_readers.c: NB_FUZZ_SEED, NB_FUZZ_SECONDS
 * (per reader, default 1 here), NB_FUZZ_ITERS, NB_FUZZ_ONE=K. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
/* after test_util.h: they use cmocka */
#include "fuzz_mutate.h"
#include "fuzz_seeds.h"

#define SECONDS 1

static void sink(void *c, const char *name, const void *data, size_t n) {
  corpus_add_bytes(c, name, data, n);
}

typedef int (*seeds_fn)(fz_seed_sink, void *);

static void run(const char *what, seeds_fn seeds, fz_fn fn, const char *const *dict) {
  corpus c = {0};
  int n = seeds(sink, &c);
  assert_int_equal(n, c.n);
  if (fn == fz_model) {
    static const char *const files[] = {"models/lenet5.cfg",      "models/mnist_cnn.cfg",
                                        "models/cifar_cnn.cfg",   "models/cifar_resnet.cfg",
                                        "models/gpt_char.cfg",    "models/gpt_bpe.cfg",
                                        "tests/data/tiny_gpt.cfg"};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
      snprintf(path, sizeof path, NB_TEST_REF_DIR "/../../%s", files[i]);
      corpus_add_file(&c, path);
    }
  }
  fuzz_corpus(what, &c, fn, FZ_MUT_RICH, dict, SECONDS);
  corpus_free(&c);
}

static const char *const model_dict[] = {"[net]\n",
                                         "[train]\n",
                                         "[conv2d c]\n",
                                         "[linear l]\n",
                                         "[residual r]\n",
                                         "[end]\n",
                                         "[transformer]\n",
                                         "[embedding e]\n",
                                         "[positional]\n",
                                         "[maxpool2d]\n",
                                         "[avgpool2d]\n",
                                         "[batchnorm]\n",
                                         "[layernorm]\n",
                                         "[flatten]\n",
                                         "[global_avgpool]\n",
                                         "[dropout]\n",
                                         "[activation]\n",
                                         " = ",
                                         "\n",
                                         "out = ",
                                         "kernel = ",
                                         "stride = ",
                                         "padding = ",
                                         "dilation = ",
                                         "groups = ",
                                         "repeat = ",
                                         "heads = ",
                                         "mlp = ",
                                         "context = ",
                                         "dim = ",
                                         "vocab",
                                         "input = ",
                                         "input_dtype = i64\n",
                                         "classes = ",
                                         "tie = e\n",
                                         "projection = none\n",
                                         "device = cpu:1\n",
                                         "tokenizer = bpe\n",
                                         "tokenizer_vocab = 300\n",
                                         "ceil_mode = yes\n",
                                         "causal = no\n",
                                         "#",
                                         ",",
                                         "relu",
                                         "leaky_relu",
                                         "precision = fp16\n",
                                         "schedule = ",
                                         "onecycle",
                                         "warmup_cosine",
                                         "augment = crop4\n",
                                         "count_include_pad = no\n",
                                         "type = gelu\n",
                                         "recompute = yes\n",
                                         NULL};

static const char *const json_dict[] = {"{",
                                        "}",
                                        "[",
                                        "]",
                                        "\"",
                                        ":",
                                        ",",
                                        "\"dtype\"",
                                        "\"shape\"",
                                        "\"data_offsets\"",
                                        "\"__metadata__\"",
                                        "\"F16\"",
                                        "\"BF16\"",
                                        "\"I64\"",
                                        "\"U8\"",
                                        "\"F64\"",
                                        "\\u0000",
                                        "null",
                                        "[0,0]",
                                        "\"format\":\"nabla.lora\"",
                                        "\"rank\"",
                                        "\"alpha\"",
                                        "\"targets\"",
                                        "\"step\"",
                                        "\"rng\"",
                                        ".lora_A",
                                        ".lora_B",
                                        "1e400",
                                        "-0",
                                        "\"fc.weight\"",
                                        "\"*\"",
                                        NULL};

/* tokens are C strings: no NUL bytes (the integer mutation writes zeros) */
static const char *const idx_dict[] = {"\x1f\x8b", "\x08\x03",         "\x0d\x01",
                                       "\x0e\x02", "\xff\xff\xff\xff", NULL};

static const char *const cifar_dict[] = {"\n", "airplane\n", "\r\n", " ", "\n\n\n", NULL};

static const char *const csv_dict[] = {
    ",",     "\"", "\"\"", "\n",  "\r\n", "\r",   "label",      "nan",          "inf", "-",
    "1e999", " ",  "\t",   "cat", "dog",  "bird", "2147483647", "\xEF\xBB\xBF", NULL};

static const char *const bpe_dict[] = {"nabla-bpe 1\n",
                                       "split gpt4-bytes\n",
                                       "merges ",
                                       "special ",
                                       "\n",
                                       " ",
                                       "<|endoftext|>",
                                       "\r\n",
                                       "1048576",
                                       "255 255\n",
                                       "256 256\n",
                                       "0 0\n",
                                       NULL};

static const char *const vocab_dict[] = {
    "nabla-char-vocab 1 ", "\n", " ", "255", "256", "-1", "0", NULL};

static void test_fuzz_model(void **state) {
  (void)state;
  run("model", fz_seeds_model, fz_model, model_dict);
}

static void test_fuzz_safetensors(void **state) {
  (void)state;
  run("safetensors", fz_seeds_safetensors, fz_safetensors, json_dict);
}

static void test_fuzz_checkpoint(void **state) {
  (void)state;
  run("checkpoint", fz_seeds_checkpoint, fz_checkpoint, json_dict);
}

static void test_fuzz_lora(void **state) {
  (void)state;
  run("lora", fz_seeds_lora, fz_lora, json_dict);
}

static void test_fuzz_idx(void **state) {
  (void)state;
  run("idx", fz_seeds_idx, fz_idx, idx_dict);
}

static void test_fuzz_cifar(void **state) {
  (void)state;
  run("cifar", fz_seeds_cifar, fz_cifar, cifar_dict);
}

static void test_fuzz_csv(void **state) {
  (void)state;
  run("csv", fz_seeds_csv, fz_csv, csv_dict);
}

static void test_fuzz_bpe(void **state) {
  (void)state;
  run("bpe", fz_seeds_bpe, fz_bpe, bpe_dict);
}

static void test_fuzz_char_vocab(void **state) {
  (void)state;
  run("char_vocab", fz_seeds_char_vocab, fz_char_vocab, vocab_dict);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fuzz_model),      cmocka_unit_test(test_fuzz_safetensors),
      cmocka_unit_test(test_fuzz_checkpoint), cmocka_unit_test(test_fuzz_lora),
      cmocka_unit_test(test_fuzz_idx),        cmocka_unit_test(test_fuzz_cifar),
      cmocka_unit_test(test_fuzz_csv),        cmocka_unit_test(test_fuzz_bpe),
      cmocka_unit_test(test_fuzz_char_vocab),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
