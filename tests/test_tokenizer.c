/* Character tokenizer and token windows: vocabulary of small strings and of
 * tinyshakespeare (65 characters; skipped when the file is absent), encode
 * and decode round trips, vocabulary files (round trip and corrupt files),
 * and windows: x/y offset by one, inside their split, seeded, splits
 * independent. */
#define _POSIX_C_SOURCE 200809L /* mkstemp, fdopen */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define SHAKESPEARE "/work/shared/data/tinyshakespeare/input.txt"

static void test_vocab_small(void **state) {
  (void)state;
  nb_char_vocab v;
  const char *s = "hello, world\n";
  TU_OK(nb_char_vocab_build(s, strlen(s), &v));
  assert_int_equal(v.size, 10); /* \n space , d e h l o r w */
  assert_memory_equal(v.bytes, "\n ,dehlorw", 10);
  assert_int_equal(v.id['h'], 5);
  assert_int_equal(v.id['z'], -1);
  int32_t ids[13];
  TU_OK(nb_char_encode(&v, s, 13, ids));
  assert_int_equal(ids[0], 5);  /* h */
  assert_int_equal(ids[12], 0); /* \n */
  char back[14] = {0};
  TU_OK(nb_char_decode(&v, ids, 13, back));
  assert_string_equal(back, s);
  /* bytes and ids outside the vocabulary */
  assert_int_equal(nb_char_encode(&v, "hz", 2, ids), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "offset 1"));
  ids[1] = 10;
  assert_int_equal(nb_char_decode(&v, ids, 2, back), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "position 1"));
  /* every byte value, NUL and 255 included */
  char all[256];
  for (int i = 0; i < 256; i++) all[i] = (char)(255 - i);
  TU_OK(nb_char_vocab_build(all, 256, &v));
  assert_int_equal(v.size, 256);
  for (int i = 0; i < 256; i++) assert_int_equal(v.bytes[i], i);
  TU_OK(nb_char_vocab_build(NULL, 0, &v));
  assert_int_equal(v.size, 0);
}

static void test_vocab_file(void **state) {
  (void)state;
  char path[] = "/tmp/nb_vocab_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  fclose(fdopen(fd, "w"));
  nb_char_vocab v, w;
  const char s[] = "ab\n\0\xff z";
  TU_OK(nb_char_vocab_build(s, sizeof s - 1, &v));
  TU_OK(nb_char_vocab_save(&v, path));
  TU_OK(nb_char_vocab_load(path, &w));
  assert_int_equal(w.size, v.size);
  assert_memory_equal(w.bytes, v.bytes, (size_t)v.size);
  assert_memory_equal(w.id, v.id, sizeof v.id);
  /* corrupt files: an error naming the file and line, never a crash */
  static const char *const bad[] = {
      "nabla-char-vocab 1 2\n5\n3\n", /* not ascending */
      "nabla-char-vocab 1 3\n1\n2\n", /* too few */
      "nabla-char-vocab 1 1\n1\n2\n", /* too many */
      "nabla-char-vocab 2 1\n1\n",    /* version */
      "something else\n",
      "nabla-char-vocab 1 1\n256\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    FILE *f = fopen(path, "w");
    fputs(bad[i], f);
    fclose(f);
    assert_int_equal(nb_char_vocab_load(path, &w), NB_ERR_FORMAT);
    assert_non_null(strstr(nb_last_error(), path));
  }
  remove(path);
  assert_int_equal(nb_char_vocab_load(path, &w), NB_ERR_IO);
}

static void test_shakespeare(void **state) {
  (void)state;
  FILE *probe = fopen(SHAKESPEARE, "rb");
  if (!probe) skip();
  fclose(probe);
  char *text;
  size_t n;
  TU_OK(nb_text_read_file(SHAKESPEARE, &text, &n));
  assert_true(n > 1000000);
  nb_char_vocab v;
  TU_OK(nb_char_vocab_build(text, n, &v));
  assert_int_equal(v.size, 65);
  assert_int_equal(v.bytes[0], '\n');
  assert_int_equal(v.bytes[1], ' ');
  assert_int_equal(v.bytes[64], 'z');
  int32_t *ids = malloc(n * sizeof *ids);
  char *back = malloc(n);
  TU_OK(nb_char_encode(&v, text, n, ids));
  TU_OK(nb_char_decode(&v, ids, n, back));
  assert_memory_equal(back, text, n);
  /* windows over the real corpus: every y is x shifted by one */
  nb_token_windows w;
  TU_OK(nb_token_windows_init(&w, ids, (int64_t)n, 64, 1337));
  int32_t x[4 * 64], y[4 * 64];
  TU_OK(nb_token_windows_next(&w, NB_TOKENS_TRAIN, 4, x, y));
  for (int b = 0; b < 4; b++)
    for (int t = 0; t + 1 < 64; t++) assert_int_equal(y[b * 64 + t], x[b * 64 + t + 1]);
  free(ids);
  free(back);
  free(text);
}

/* Position of window x[0..T) in tokens = 0, 1, 2, ... is its first value. */
static void test_windows(void **state) {
  (void)state;
  enum { N = 1000, T = 8, B = 64 };
  int32_t tokens[N];
  for (int i = 0; i < N; i++) tokens[i] = i;
  nb_token_windows w, w2;
  TU_OK(nb_token_windows_init(&w, tokens, N, T, 7));
  assert_int_equal(w.n_train, 900);
  assert_int_equal(w.n_val, 100);
  w2 = w; /* plain data: a copy continues identically */
  int32_t x[B * T], y[B * T], x2[B * T], y2[B * T];
  int hit_last = 0;
  for (int rep = 0; rep < 50; rep++) {
    TU_OK(nb_token_windows_next(&w, NB_TOKENS_TRAIN, B, x, y));
    for (int b = 0; b < B; b++) {
      int32_t i = x[b * T];
      assert_true(i >= 0 && i + T + 1 <= 900);
      hit_last |= i + T + 1 == 900;
      for (int t = 0; t < T; t++) {
        assert_int_equal(x[b * T + t], i + t);
        assert_int_equal(y[b * T + t], i + t + 1);
      }
    }
  }
  assert_true(hit_last); /* the last valid start is reachable */
  TU_OK(nb_token_windows_next(&w, NB_TOKENS_VAL, B, x, y));
  for (int b = 0; b < B; b++) {
    assert_true(x[b * T] >= 900 && x[b * T] + T + 1 <= N);
    assert_int_equal(y[b * T + T - 1], x[b * T] + T);
  }
  /* seeded: the copy made at the start replays the same training windows,
   * and validation draws in between do not shift them */
  TU_OK(nb_token_windows_next(&w2, NB_TOKENS_VAL, 3, x2, y2));
  nb_token_windows w3;
  TU_OK(nb_token_windows_init(&w3, tokens, N, T, 7));
  TU_OK(nb_token_windows_next(&w2, NB_TOKENS_TRAIN, B, x2, y2));
  TU_OK(nb_token_windows_next(&w3, NB_TOKENS_TRAIN, B, x, y));
  assert_memory_equal(x, x2, sizeof x);
  TU_OK(nb_token_windows_init(&w3, tokens, N, T, 8));
  TU_OK(nb_token_windows_next(&w3, NB_TOKENS_TRAIN, B, x, y));
  assert_memory_not_equal(x, x2, sizeof x);
  /* too short for the block: an error that gives the counts */
  assert_int_equal(nb_token_windows_init(&w, tokens, 50, 8, 1), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "5 validation"));
  assert_int_equal(nb_token_windows_init(&w, tokens, N, 0, 1), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_token_windows_next(&w2, (nb_token_split)5, 1, x, y), NB_ERR_INVALID_ARG);
}

static void test_read_file_errors(void **state) {
  (void)state;
  char *data = (char *)1;
  size_t n = 1;
  assert_int_equal(nb_text_read_file("/nonexistent/nabla.txt", &data, &n), NB_ERR_IO);
  assert_non_null(strstr(nb_last_error(), "/nonexistent/nabla.txt"));
  assert_null(data);
  /* a file larger than the first read chunk */
  char path[] = "/tmp/nb_text_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  for (int i = 0; i < 200000; i++) fputc('a' + i % 26, f);
  fclose(f);
  TU_OK(nb_text_read_file(path, &data, &n));
  assert_int_equal(n, 200000);
  assert_int_equal(data[199999], 'a' + 199999 % 26);
  assert_int_equal(data[n], '\0');
  free(data);
  remove(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vocab_small),      cmocka_unit_test(test_vocab_file),
      cmocka_unit_test(test_shakespeare),      cmocka_unit_test(test_windows),
      cmocka_unit_test(test_read_file_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
