/* Deterministic mutation fuzzing of the untrusted-file readers (ONNX models,
 * TensorProto .pb files, .npy arrays), bounded in time so CI runs it on
 * every build. Real files are the seeds (tests/data fixtures, and a few ONNX
 * node tests when ../shared/data is present); each iteration applies one to
 * four mutations drawn from a seeded generator: bit flips, interesting
 * bytes, truncation, a corrupted varint (protobuf length fields), inserted
 * or deleted runs, copied chunks, random tails, and for .npy header text
 * edits (mostly one mutation, sometimes two to four). tests/fuzz_targets.h feeds the result through
 * the reader.
 *
 * Environment: NB_FUZZ_SEED (default 1), NB_FUZZ_SECONDS per reader
 * (default 2), NB_FUZZ_ITERS per reader (default 100000; the time bound
 * usually ends the run first), NB_FUZZ_ONE=K runs only iteration K of each
 * reader (to reproduce a failure, whose message names K and the seed). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz_targets.h"
#include "test_util.h"

#define DATA  NB_TEST_REF_DIR "/../data/"
#define NODES NB_TEST_REF_DIR "/../../../shared/data/onnx-node-tests/"

typedef struct {
  char *name;
  uint8_t *data;
  size_t n;
} seed_file;

typedef struct {
  seed_file *f;
  int n, cap;
} corpus;

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  rewind(f);
  uint8_t *b = malloc((size_t)sz + 1);
  if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
    free(b);
    b = NULL;
  }
  fclose(f);
  *n = (size_t)sz;
  return b;
}

static void add(corpus *c, const char *path) {
  size_t n;
  uint8_t *d = slurp(path, &n);
  if (!d) return; /* optional seeds (the shared node tests) may be absent */
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->f = realloc(c->f, (size_t)c->cap * sizeof *c->f);
    assert_non_null(c->f);
  }
  c->f[c->n++] = (seed_file){strdup(path), d, n};
}

static void corpus_free(corpus *c) {
  for (int i = 0; i < c->n; i++) {
    free(c->f[i].name);
    free(c->f[i].data);
  }
  free(c->f);
}

static const char *const node_tests[] = {
    "test_conv_with_strides_and_asymmetric_padding",
    "test_gemm_all_attributes",
    "test_resize_upsample_scales_linear",
    "test_reshape_extended_dims",
    "test_slice",
    "test_layer_normalization_4d_axis0",
    "test_batchnorm_example",
    "test_gather_0",
    "test_maxpool_2d_pads",
    "test_cast_FLOAT_to_FLOAT16",
    "test_dequantizelinear_axis",
    "test_gelu_default_1_expanded",
};

/* ---- the generator and the mutations ------------------------------------------------ */

static uint64_t rnd(uint64_t *s) { /* splitmix64: one seed, one stream */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t below(uint64_t *s, size_t n) { return n ? (size_t)(rnd(s) % n) : 0; }

typedef struct {
  uint8_t *p;
  size_t n, cap;
} bytes;

static void reserve(bytes *b, size_t n) {
  if (n <= b->cap) return;
  b->cap = n * 2 + 64;
  b->p = realloc(b->p, b->cap);
  assert_non_null(b->p);
}

/* Replaces [at, at + del) by `ins` bytes. */
static void splice(bytes *b, size_t at, size_t del, const uint8_t *ins, size_t nins) {
  if (at > b->n) at = b->n;
  if (del > b->n - at) del = b->n - at;
  reserve(b, b->n - del + nins);
  memmove(b->p + at + nins, b->p + at + del, b->n - at - del);
  if (nins) memcpy(b->p + at, ins, nins);
  b->n = b->n - del + nins;
}

static size_t varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) out[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

static void mutate(bytes *b, uint64_t *s, int npy) {
  static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x08, 0x0a, 0x12};
  static const uint64_t lengths[] = {0, 1, 127, 128, 0x7fffffff, 0xffffffffu, UINT64_MAX, 1u << 20};
  static const char header_chars[] = "0123456789(),:'{} LTrueFalse<>|fiub-9";
  uint8_t tmp[16];
  size_t at = below(s, b->n + 1);
  switch (below(s, npy ? 9 : 8)) {
  case 0: /* flip a few bits */
    for (size_t k = 1 + below(s, 8); k > 0 && b->n; k--)
      b->p[below(s, b->n)] ^= (uint8_t)(1u << below(s, 8));
    break;
  case 1: /* an interesting byte */
    if (b->n) b->p[below(s, b->n)] = interesting[below(s, sizeof interesting)];
    break;
  case 2: /* truncate */ b->n = below(s, b->n + 1); break;
  case 3: { /* a varint over whatever was there: protobuf lengths and counts */
    size_t k =
        varint(tmp, below(s, 2) ? lengths[below(s, sizeof lengths / sizeof *lengths)] : rnd(s));
    splice(b, at, below(s, 3) ? k : below(s, 4), tmp, k);
    break;
  }
  case 4: /* delete a run */ splice(b, at, 1 + below(s, 16), NULL, 0); break;
  case 5: /* insert random bytes */
    for (size_t k = 0; k < sizeof tmp; k++) tmp[k] = (uint8_t)rnd(s);
    splice(b, at, 0, tmp, 1 + below(s, sizeof tmp));
    break;
  case 6: { /* copy a chunk of the input elsewhere (duplicated fields, nested messages) */
    if (!b->n) break;
    size_t from = below(s, b->n), len = 1 + below(s, b->n - from < 64 ? b->n - from : 64);
    uint8_t *chunk = malloc(len);
    assert_non_null(chunk);
    memcpy(chunk, b->p + from, len);
    splice(b, at, below(s, 2) ? len : 0, chunk, len);
    free(chunk);
    break;
  }
  case 7: /* a random tail */
    b->n = at;
    for (size_t k = below(s, 32); k > 0; k--) {
      uint8_t r = (uint8_t)rnd(s);
      splice(b, b->n, 0, &r, 1);
    }
    break;
  default: { /* .npy: edit the header text (it starts after the 10-byte preamble) */
    if (b->n <= 10) break;
    size_t end = b->n < 128 ? b->n : 128;
    size_t pos = 10 + below(s, end - 10);
    char c = header_chars[below(s, sizeof header_chars - 1)];
    if (below(s, 2))
      b->p[pos] = (uint8_t)c;
    else
      splice(b, pos, 0, (const uint8_t *)&c, 1);
    break;
  }
  }
}

/* ---- the loop ---------------------------------------------------------------------- */

typedef const char *(*fz_fn)(const uint8_t *, size_t, const char *, fz_stats *);

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : def;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fuzz(const char *what, const corpus *c, fz_fn fn, int npy) {
  assert_true(c->n > 0);
  uint64_t seed = (uint64_t)env_long("NB_FUZZ_SEED", 1);
  long iters = env_long("NB_FUZZ_ITERS", 100000), one = env_long("NB_FUZZ_ONE", -1);
  double budget = (double)env_long("NB_FUZZ_SECONDS", 2), t0 = now_s();
  fz_stats st = {0};
  bytes b = {0};
  /* every seed unmutated first: they must all parse */
  for (int i = 0; i < c->n && one < 0; i++) {
    long before = st.parsed;
    const char *bad = fn(c->f[i].data, c->f[i].n, c->f[i].name, &st);
    if (bad || st.parsed == before)
      fail_msg("%s: seed %s does not parse: %s", what, c->f[i].name, bad ? bad : nb_last_error());
  }
  long it = one >= 0 ? one : 0, last = one >= 0 ? one + 1 : iters;
  for (; it < last; it++) {
    if (one < 0 && (it & 15) == 0 && now_s() - t0 > budget) break;
    /* each iteration's input depends only on (seed, iteration) */
    uint64_t s = seed * 0x100000001b3ull ^ (uint64_t)it * 0x9e3779b97f4a7c15ull;
    const seed_file *f = &c->f[below(&s, (size_t)c->n)];
    reserve(&b, f->n);
    memcpy(b.p, f->data, f->n);
    b.n = f->n;
    /* mostly one mutation: deeper parts of the format stay reachable */
    for (size_t k = 1 + (below(&s, 4) ? 0 : 1 + below(&s, 3)); k > 0; k--) mutate(&b, &s, npy);
    const char *bad = fn(b.p, b.n, f->name, &st);
    if (bad)
      fail_msg("%s: iteration %ld (NB_FUZZ_SEED=%llu NB_FUZZ_ONE=%ld) from %s: %s (%s)", what, it,
               (unsigned long long)seed, it, f->name, bad, nb_last_error());
  }
  free(b.p);
  printf("  %s: %ld inputs in %.1f s from %d seeds (seed %llu): %ld parsed, %ld built, "
         "%ld compiled\n",
         what, st.inputs, now_s() - t0, c->n, (unsigned long long)seed, st.parsed, st.built,
         st.compiled);
}

static void test_fuzz_onnx(void **state) {
  (void)state;
  corpus c = {0};
  add(&c, DATA "onnx/mlp_external/model.onnx");
  add(&c, DATA "onnx/tiny_classifier/model.onnx");
  char path[512];
  for (size_t i = 0; i < sizeof node_tests / sizeof *node_tests; i++) {
    snprintf(path, sizeof path, NODES "%s/model.onnx", node_tests[i]);
    add(&c, path);
  }
  fuzz("onnx", &c, fz_onnx, 0);
  corpus_free(&c);
}

static void test_fuzz_pb(void **state) {
  (void)state;
  corpus c = {0};
  char path[512];
  for (size_t i = 0; i < sizeof node_tests / sizeof *node_tests; i++)
    for (int k = 0; k < 3; k++) {
      snprintf(path, sizeof path, NODES "%s/test_data_set_0/input_%d.pb", node_tests[i], k);
      add(&c, path);
    }
  if (!c.n) { /* without the shared data: two tensors of our own */
    static const uint8_t f32[] = {0x08, 0x02, 0x08, 0x03, 0x10, 0x01, 0x42, 0x01, 'x',
                                  0x4a, 24,   0,    0,    0x80, 0x3f, 0,    0,    0,
                                  0x40, 0,    0,    0x40, 0x40, 0,    0,    0x80, 0x40,
                                  0,    0,    0xa0, 0x40, 0,    0,    0xc0, 0x40};
    static const uint8_t i64[] = {0x08, 0x03, 0x10, 0x07, 0x3a, 0x03, 0x01, 0x7f, 0x05};
    const uint8_t *own[2] = {f32, i64};
    size_t lens[2] = {sizeof f32, sizeof i64};
    for (int k = 0; k < 2; k++) {
      if (c.n == c.cap) {
        c.cap = 4;
        c.f = realloc(c.f, (size_t)c.cap * sizeof *c.f);
      }
      uint8_t *d = malloc(lens[k]);
      memcpy(d, own[k], lens[k]);
      c.f[c.n++] = (seed_file){strdup(k ? "i64.pb" : "f32.pb"), d, lens[k]};
    }
  }
  fuzz("pb", &c, fz_pb, 0);
  corpus_free(&c);
}

static void test_fuzz_npy(void **state) {
  (void)state;
  corpus c = {0};
  const char *files[] = {"f4", "f4_v2", "f4_v3", "f8",    "f2",     "i1",
                         "i8", "u2",    "b1",    "be_i8", "scalar", "empty"};
  char path[512];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, sizeof path, DATA "npy/%s.npy", files[i]);
    add(&c, path);
  }
  fuzz("npy", &c, fz_npy, 1);
  corpus_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fuzz_onnx),
      cmocka_unit_test(test_fuzz_pb),
      cmocka_unit_test(test_fuzz_npy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
