/* Inputs that fuzzing (tests/test_fuzz_more.c, the libFuzzer targets of
 * docs/fuzzing.md) found to break a reader, minimized, each with the error
 * it must now give: status, and the message naming the file and the cause.
 * One test per bug; the comment says what went wrong before the fix. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "test_util.h"

static char dir[256];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "%s/nabla-fuzz-found.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* dir/name holding n bytes; the path in a static buffer per slot. */
static const char *put(int slot, const char *name, const void *data, size_t n) {
  static char paths[4][512];
  char *p = paths[slot & 3];
  snprintf(p, sizeof paths[0], "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
  return p;
}

/* Fails unless st is `want` and the message holds every one of the
 * NULL-terminated strings that follow. */
static void expect_error(nb_status st, nb_status want, ...) {
  const char *msg = nb_last_error();
  if (st != want) fail_msg("status %d, expected %d (%s)", (int)st, (int)want, msg);
  va_list ap;
  va_start(ap, want);
  for (const char *s; (s = va_arg(ap, const char *));)
    if (!strstr(msg, s)) fail_msg("message '%s' does not contain '%s'", msg, s);
  va_end(ap);
}

/* ---- model files ----------------------------------------------------------------- */

/* `repeat = 2147483647` parsed, and building the model (nb_model_build,
 * param counts, summaries) then tried to add two billion transformer blocks:
 * minutes of work and gigabytes before failing. */
static void test_model_transformer_repeat(void **state) {
  (void)state;
  static const char head[] = "[net]\ninput = 8\ninput_dtype = i32\nclasses = vocab\n"
                             "[embedding wte]\nvocab = vocab\ndim = 8\n";
  char text[512];
  nb_model *m = NULL;
  snprintf(text, sizeof text, "%s[transformer h]\nheads = 2\nrepeat = 2147483647\n", head);
  expect_error(nb_model_parse(text, "big.cfg", &m), NB_ERR_FORMAT,
               "big.cfg:10:", "at most 1024 transformer blocks", "repeat = 2147483647",
               "[transformer h]", NULL);
  assert_null(m);
  /* the limit is on the model's blocks, whichever section passes it */
  snprintf(text, sizeof text,
           "%s[transformer a]\nheads = 2\nrepeat = 1000\n[transformer b]\nrepeat = 25\nheads = 2\n",
           head);
  expect_error(nb_model_parse(text, "two.cfg", &m), NB_ERR_FORMAT, "two.cfg:12:", "found 1025",
               "[transformer b]", NULL);
  snprintf(text, sizeof text,
           "%s[transformer a]\nheads = 2\nrepeat = 1000\n[transformer b]\nrepeat = 24\nheads = 2\n",
           head);
  TU_OK(nb_model_parse(text, "ok.cfg", &m));
  nb_model_free(m);
}

/* Builds m for a batch of 2 into a fresh graph; returns the status and
 * leaves *g (freed by the caller), *x and *y. */
static nb_status build_model(const nb_model *m, nb_graph **g, nb_tensor **x, nb_tensor **y) {
  *g = nb_graph_new();
  nb_nn nn = {.g = *g, .seed = 1};
  *x = nb_model_new_input(m, *g, "x", 2);
  return nb_model_build(m, &nn, *x, y);
}

/* `out = 32000000000` with `kernel = 1000000000, 1`: the conv2d layer
 * formed its fan-out out * kh * kw in int64 (signed overflow, UB) before
 * the weight's size was checked. The fans are doubles now, and the weight
 * is refused for its size. */
static void test_model_conv_fan_overflow(void **state) {
  (void)state;
  nb_model *m = NULL;
  TU_OK(nb_model_parse("[net]\ninput = 1, 4, 4\n[conv2d c]\nout = 32000000000\n"
                       "kernel = 1000000000, 1\n",
                       "conv.cfg", &m));
  nb_graph *g;
  nb_tensor *x, *y = NULL;
  expect_error(build_model(m, &g, &x, &y), NB_ERR_SHAPE, "conv.cfg:3:", "[conv2d c]",
               "too many elements", NULL);
  assert_null(y);
  nb_graph_free(g);
  nb_model_free(m);
}

/* `mlp = 2147483647` on a width of 2^40: the transformer block formed the
 * MLP width mlp * C in int64 (signed overflow, UB). */
static void test_model_mlp_overflow(void **state) {
  (void)state;
  nb_model *m = NULL;
  TU_OK(nb_model_parse("[net]\ninput = 1\ninput_dtype = i32\n[embedding e]\nvocab = 1\n"
                       "dim = 1099511627776\n[transformer h]\nheads = 1\nmlp = 2147483647\n",
                       "mlp.cfg", &m));
  nb_graph *g;
  nb_tensor *x, *y = NULL;
  expect_error(build_model(m, &g, &x, &y), NB_ERR_SHAPE, "mlp.cfg:7:", "[transformer h]",
               "MLP width 2147483647 x 1099511627776 overflows", NULL);
  nb_graph_free(g);
  nb_model_free(m);
}

/* A max pool whose window (2^31 - 1 square, padded by half) covers the
 * whole 4 x 4 input: the CPU kernel's work estimate planes * P * Q * kh *
 * kw overflowed int64 (UB) when the model ran. Every output is the plane's
 * maximum. */
static void test_model_pool_window_overflow(void **state) {
  (void)state;
  nb_model *m = NULL;
  TU_OK(nb_model_parse("[net]\ninput = 1, 4, 4\n[maxpool2d]\nkernel = 2147483647\n"
                       "padding = 1073741823\nstride = 1\n",
                       "pool.cfg", &m));
  nb_graph *g;
  nb_tensor *x, *y;
  TU_OK(build_model(m, &g, &x, &y));
  assert_int_equal(nb_tensor_numel(y), 2 * 4 * 4);
  nb_tensor_set_output(y);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  float in[32], out[32];
  for (int i = 0; i < 32; i++) in[i] = (float)((i * 7) % 32) - 3.0f; /* plane maxima 26, 28 */
  TU_OK(nb_plan_set_input(plan, x, in, sizeof in));
  TU_OK(nb_plan_run(plan));
  TU_OK(nb_plan_get(plan, y, out, sizeof out));
  for (int i = 0; i < 32; i++) {
    float want = -1e30f;
    for (int k = 0; k < 16; k++)
      if (in[i / 16 * 16 + k] > want) want = in[i / 16 * 16 + k];
    assert_true(out[i] == want);
  }
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  nb_model_free(m);
}

/* ---- safetensors ------------------------------------------------------------------ */

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A header of 50,000 "__metadata__" keys (under 1 MB; headers may have
 * 100 MB): every key was looked up by a linear scan of the map (nb_kv), so
 * opening took 10 s in a Release build (and a 100 MB header days). The map
 * has a hash index now: well under a second, under ASan too. */
static void test_safetensors_many_metadata_keys(void **state) {
  (void)state;
  enum { KEYS = 50000 };
  size_t cap = 32 + (size_t)KEYS * 24, n = 8;
  char *b = malloc(cap);
  assert_non_null(b);
  n += (size_t)snprintf(b + n, cap - n, "{\"__metadata__\":{");
  for (int i = 0; i < KEYS; i++)
    n += (size_t)snprintf(b + n, cap - n, "%s\"key%d\":\"%d\"", i ? "," : "", i, 3 * i);
  n += (size_t)snprintf(b + n, cap - n, "}}");
  for (int i = 0; i < 8; i++) b[i] = (char)((uint64_t)(n - 8) >> (8 * i));
  const char *p = put(0, "meta.safetensors", b, n);
  free(b);
  double t0 = seconds();
  nb_safetensors *f = NULL;
  TU_OK(nb_safetensors_open(p, &f));
  double took = seconds() - t0;
  const nb_kv *meta = nb_safetensors_metadata(f);
  assert_int_equal(nb_kv_count(meta), KEYS);
  assert_string_equal(nb_kv_get(meta, "key49999"), "149997");
  const char *k, *v;
  TU_OK(nb_kv_entry(meta, 1234, &k, &v));
  assert_string_equal(k, "key1234");
  assert_string_equal(v, "3702");
  nb_safetensors_close(f);
  if (took > 5.0) fail_msg("opening took %.2f s: lookups are not constant time", took);
}

/* ---- IDX / MNIST ------------------------------------------------------------------ */

/* Images [1, 4, 0]: an IDX dimension may be 0, but nb_dataset_alloc
 * refused the image shape with a message that named no file. */
static void test_idx_zero_image_dim(void **state) {
  (void)state;
  static const uint8_t images[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0};
  static const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 1, 7};
  const char *ip = put(0, "zero-images.idx", images, sizeof images);
  const char *lp = put(1, "labels.idx", labels, sizeof labels);
  nb_dataset d;
  expect_error(nb_idx_dataset_load(ip, lp, 0, &d), NB_ERR_SHAPE, ip, "[1, 4, 0]", NULL);
  assert_null(d.x);
}

/* A 16-byte header claiming 2^20 x 2^20 bytes and no data: the reader
 * allocated the claimed terabyte before reading (NB_ERR_OOM in a plain
 * build, an abort under ASan). Now the buffer grows with the data read. */
static void test_idx_huge_claim(void **state) {
  (void)state;
  static const uint8_t claim[] = {0, 0, 8, 2, 0, 0x10, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4};
  const char *p = put(0, "claim.idx", claim, sizeof claim);
  nb_idx a;
  expect_error(nb_idx_load(p, &a), NB_ERR_FORMAT, p, "truncated or corrupt at byte 16",
               "reading the data", NULL);
  assert_null(a.data);
}

/* Writes the gzip of n bytes of data to dir/name; returns the compressed
 * bytes (malloc'ed) and their count. */
static uint8_t *gzip_bytes(const char *name, const void *data, size_t n, size_t *len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  gzFile gz = gzopen(path, "wb");
  assert_non_null(gz);
  assert_int_equal(gzwrite(gz, data, (unsigned)n), (int)n);
  assert_int_equal(gzclose(gz), Z_OK);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint8_t *b = malloc(n + 4096);
  assert_non_null(b);
  *len = fread(b, 1, n + 4096, f);
  fclose(f);
  assert_true(*len > 8);
  return b;
}

/* A gzip stream cut short reads as the end of the file (gzread returns 0,
 * gzerror says Z_BUF_ERROR), and the reader stopped once the IDX data was
 * complete: a gzipped IDX without its trailer (here a [1, 4, 0] header,
 * found by the fuzzer) loaded as if intact, its CRC never checked. A
 * corrupted CRC after more data must fail too. */
static void test_idx_gzip_trailer(void **state) {
  (void)state;
  static const uint8_t header[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0};
  size_t n;
  uint8_t *gz = gzip_bytes("empty.idx.gz", header, sizeof header, &n);
  const char *cut = put(0, "cut.idx.gz", gz, n - 8); /* no trailer */
  nb_idx a;
  expect_error(nb_idx_load(cut, &a), NB_ERR_FORMAT, cut,
               "corrupt or truncated gzip data after byte 16", "unexpected end of file", NULL);
  assert_null(a.data);
  free(gz);

  /* 64 KiB of data: the CRC is checked after the data was read */
  size_t big = 65536;
  uint8_t *idx = malloc(8 + big);
  assert_non_null(idx);
  memcpy(idx, (const uint8_t[]){0, 0, 8, 1, 0, 1, 0, 0}, 8);
  for (size_t i = 0; i < big; i++) idx[8 + i] = (uint8_t)(i * 31 % 251);
  gz = gzip_bytes("big.idx.gz", idx, 8 + big, &n);
  TU_OK(nb_idx_load(put(1, "good.idx.gz", gz, n), &a));
  assert_int_equal(a.shape[0], big);
  assert_int_equal(((uint8_t *)a.data)[1000], 1000 * 31 % 251);
  nb_idx_free(&a);
  gz[n - 8] ^= 1; /* the CRC-32 of the data */
  const char *bad = put(2, "crc.idx.gz", gz, n);
  expect_error(nb_idx_load(bad, &a), NB_ERR_FORMAT, bad, "incorrect data check", NULL);
  assert_null(a.data);
  free(gz);
  free(idx);
}

/* ---- tokenizers -------------------------------------------------------------------- */

/* fscanf's %d on a value beyond int is undefined behaviour; glibc wraps it,
 * so a byte value of 4294967393 (2^32 + 97) loaded as 'a', and a version of
 * 4294967297 as version 1. Numbers are read with strtol now. */
static void test_char_vocab_int_overflow(void **state) {
  (void)state;
  static const char big_byte[] = "nabla-char-vocab 1 1\n4294967393\n";
  static const char big_version[] = "nabla-char-vocab 4294967297 1\n97\n";
  static const char trailing[] = "nabla-char-vocab 1 1\n97\nx\n";
  nb_char_vocab v;
  const char *p = put(0, "byte.vocab", big_byte, sizeof big_byte - 1);
  expect_error(nb_char_vocab_load(p, &v), NB_ERR_FORMAT, p, ":2: expected a byte value", NULL);
  p = put(1, "version.vocab", big_version, sizeof big_version - 1);
  expect_error(nb_char_vocab_load(p, &v), NB_ERR_FORMAT, p, ":1: expected", NULL);
  p = put(2, "trailing.vocab", trailing, sizeof trailing - 1);
  expect_error(nb_char_vocab_load(p, &v), NB_ERR_FORMAT, p, ":3: more than the 1 values", NULL);
  static const char good[] = "nabla-char-vocab 1 2\n97\n+98\n\n";
  TU_OK(nb_char_vocab_load(put(3, "good.vocab", good, sizeof good - 1), &v));
  assert_int_equal(v.size, 2);
  assert_int_equal(v.id['b'], 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_transformer_repeat),
      cmocka_unit_test(test_model_conv_fan_overflow),
      cmocka_unit_test(test_model_mlp_overflow),
      cmocka_unit_test(test_model_pool_window_overflow),
      cmocka_unit_test(test_safetensors_many_metadata_keys),
      cmocka_unit_test(test_idx_zero_image_dim),
      cmocka_unit_test(test_idx_huge_claim),
      cmocka_unit_test(test_idx_gzip_trailer),
      cmocka_unit_test(test_char_vocab_int_overflow),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
