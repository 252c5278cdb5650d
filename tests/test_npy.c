/* .npy files: arrays written by numpy (tests/data/make_fixtures.py) in every
 * dtype nabla reads, format versions 1.0-3.0 and both byte orders, checked
 * element by element against the generator's formula; the writer checked
 * byte for byte against numpy's output; and hostile files (bad magic,
 * truncation at every length, lying shapes, overflowing products, garbage
 * headers) that must give NB_ERR_FORMAT naming the file, never a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DATA NB_TEST_REF_DIR "/../data/npy/"

/* make_fixtures.py's value(k): (k * 7) % 23 - 11 */
static int64_t value(int64_t k) { return (k * 7) % 23 - 11; }

static void load(const char *name, nb_npy *a) {
  char path[512];
  snprintf(path, sizeof path, DATA "%s", name);
  TU_OK(nb_npy_load(path, a));
}

static void expect_shape(const nb_npy *a, int ndim, const int64_t *shape) {
  assert_int_equal(a->ndim, ndim);
  for (int i = 0; i < ndim; i++) assert_int_equal(a->shape[i], shape[i]);
}

static void test_float_files(void **state) {
  (void)state;
  const char *f4s[] = {"f4.npy", "f4_v2.npy", "f4_v3.npy"};
  for (int v = 0; v < 3; v++) {
    nb_npy a;
    load(f4s[v], &a);
    assert_int_equal(a.dtype, NB_F32);
    expect_shape(&a, 3, (int64_t[]){2, 3, 4});
    assert_string_equal(a.descr, "<f4");
    for (int64_t k = 0; k < 24; k++) assert_true(((float *)a.data)[k] == (float)value(k) * 0.25f);
    nb_npy_free(&a);
  }
  nb_npy a;
  load("f8.npy", &a); /* doubles k/3 arrive rounded to f32 */
  assert_int_equal(a.dtype, NB_F32);
  expect_shape(&a, 2, (int64_t[]){4, 6});
  for (int64_t k = 0; k < 24; k++) assert_true(((float *)a.data)[k] == (float)(value(k) / 3.0));
  nb_npy_free(&a);
  load("f2.npy", &a);
  assert_int_equal(a.dtype, NB_F16);
  expect_shape(&a, 1, (int64_t[]){24});
  for (int64_t k = 0; k < 24; k++)
    assert_true(nb_f16_to_f32(((uint16_t *)a.data)[k]) == (float)value(k) * 0.5f);
  nb_npy_free(&a);
  load("be_f4.npy", &a);
  assert_int_equal(a.dtype, NB_F32);
  assert_string_equal(a.descr, ">f4");
  for (int64_t k = 0; k < 24; k++) assert_true(((float *)a.data)[k] == (float)value(k) * 0.25f);
  nb_npy_free(&a);
  load("scalar.npy", &a);
  assert_int_equal(a.ndim, 0);
  assert_int_equal(a.numel, 1);
  assert_true(((float *)a.data)[0] == 2.5f);
  nb_npy_free(&a);
  load("empty.npy", &a);
  expect_shape(&a, 2, (int64_t[]){0, 3});
  assert_int_equal(a.numel, 0);
  nb_npy_free(&a);
}

static void test_integer_files(void **state) {
  (void)state;
  static const struct {
    const char *file;
    nb_dtype dt;
    int kind; /* how the fixture derives element k */
  } cases[] = {
      {"i1.npy", NB_I32, 0}, {"i2.npy", NB_I32, 1}, {"i4.npy", NB_I32, 2},
      {"i8.npy", NB_I64, 3}, {"u1.npy", NB_U8, 4},  {"u2.npy", NB_I32, 5},
      {"u4.npy", NB_I64, 6}, {"b1.npy", NB_U8, 7},  {"be_i8.npy", NB_I64, 3},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    nb_npy a;
    load(cases[c].file, &a);
    assert_int_equal(a.dtype, cases[c].dt);
    assert_int_equal(a.numel, 24);
    for (int64_t k = 0; k < 24; k++) {
      int64_t want = 0, got = 0;
      switch (cases[c].kind) {
      case 0: want = value(k); break;
      case 1: want = value(k) * 1000; break;
      case 2: want = value(k) * 100000; break;
      case 3: want = value(k) * ((int64_t)1 << 40) + k; break;
      case 4: want = value(k) + 11; break;
      case 5: want = 60000 - k; break;
      case 6: want = 4000000000LL - k; break;
      default: want = k % 3 == 0; break;
      }
      if (a.dtype == NB_I32) got = ((int32_t *)a.data)[k];
      if (a.dtype == NB_I64) got = ((int64_t *)a.data)[k];
      if (a.dtype == NB_U8) got = ((uint8_t *)a.data)[k];
      if (got != want)
        fail_msg("%s[%lld]: %lld, want %lld", cases[c].file, (long long)k, (long long)got,
                 (long long)want);
    }
    nb_npy_free(&a);
  }
}

static void test_refused_files(void **state) {
  (void)state;
  nb_npy a;
  assert_int_equal(nb_npy_load(DATA "fortran.npy", &a), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "fortran.npy"));
  assert_non_null(strstr(nb_last_error(), "Fortran order"));
  assert_null(a.data);
  assert_int_equal(nb_npy_load(DATA "c8.npy", &a), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "'<c8' is not supported"));
  assert_int_equal(nb_npy_load(DATA "nonexistent.npy", &a), NB_ERR_IO);
}

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  rewind(f);
  uint8_t *b = malloc((size_t)sz + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
  fclose(f);
  *n = (size_t)sz;
  return b;
}

static void test_writer(void **state) {
  (void)state;
  /* the same array numpy wrote: the same bytes */
  float v[24];
  for (int k = 0; k < 24; k++) v[k] = (float)value(k) * 0.25f;
  const char *out = "test_npy_out.npy";
  TU_OK(nb_npy_save(out, NB_F32, 3, (int64_t[]){2, 3, 4}, v));
  size_t n0, n1;
  uint8_t *mine = slurp(out, &n0), *numpy = slurp(DATA "f4.npy", &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(mine, numpy, n0);
  free(mine);
  free(numpy);
  /* round trips of the other dtypes, a scalar and rank 1 */
  int64_t i64[5] = {-((int64_t)1 << 50), -1, 0, 7, INT64_MAX};
  TU_OK(nb_npy_save(out, NB_I64, 1, (int64_t[]){5}, i64));
  nb_npy a;
  TU_OK(nb_npy_load(out, &a));
  assert_int_equal(a.dtype, NB_I64);
  assert_string_equal(a.descr, "<i8");
  assert_memory_equal(a.data, i64, sizeof i64);
  nb_npy_free(&a);
  uint8_t u8[6] = {0, 1, 2, 128, 254, 255};
  TU_OK(nb_npy_save(out, NB_U8, 2, (int64_t[]){2, 3}, u8));
  TU_OK(nb_npy_load(out, &a));
  assert_int_equal(a.dtype, NB_U8);
  assert_memory_equal(a.data, u8, sizeof u8);
  nb_npy_free(&a);
  uint16_t bf[3] = {nb_f32_to_bf16(1.5f), nb_f32_to_bf16(-3.0f), nb_f32_to_bf16(1e-3f)};
  TU_OK(nb_npy_save(out, NB_BF16, 1, (int64_t[]){3}, bf)); /* widened to f4 */
  TU_OK(nb_npy_load(out, &a));
  assert_int_equal(a.dtype, NB_F32);
  for (int i = 0; i < 3; i++) assert_true(((float *)a.data)[i] == nb_bf16_to_f32(bf[i]));
  nb_npy_free(&a);
  float s = -4.25f;
  TU_OK(nb_npy_save(out, NB_F32, 0, NULL, &s));
  TU_OK(nb_npy_load(out, &a));
  assert_int_equal(a.ndim, 0);
  assert_true(((float *)a.data)[0] == s);
  nb_npy_free(&a);
  remove(out);
}

/* A .npy file with the given header text (padded like numpy) and data. */
static uint8_t *make_npy(const char *hdr, int major, size_t data_bytes, size_t *n) {
  size_t pre = major == 1 ? 10 : 12, hl = strlen(hdr);
  *n = pre + hl + data_bytes;
  uint8_t *b = calloc(*n + 1, 1);
  assert_non_null(b);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (uint8_t)major;
  b[7] = 0;
  b[8] = (uint8_t)(hl & 0xff);
  b[9] = (uint8_t)(hl >> 8);
  memcpy(b + pre, hdr, hl);
  return b;
}

static void expect_format(const char *what, const uint8_t *b, size_t n, const char *part) {
  nb_npy a;
  nb_status st = nb_npy_decode(b, n, "bad.npy", &a);
  if (st != NB_ERR_FORMAT)
    fail_msg("%s: status %d (%s), want a format error", what, st, nb_last_error());
  if (!strstr(nb_last_error(), "bad.npy") || (part && !strstr(nb_last_error(), part)))
    fail_msg("%s: message '%s' lacks '%s'", what, nb_last_error(), part ? part : "bad.npy");
  assert_null(a.data);
}

static void test_hostile(void **state) {
  (void)state;
  size_t n;
  uint8_t *good = slurp(DATA "f4.npy", &n);
  /* every truncation */
  for (size_t cut = 0; cut < n; cut++) expect_format("truncated", good, cut, NULL);
  /* bad magic, unknown version */
  uint8_t *b = malloc(n);
  memcpy(b, good, n);
  b[1] = 'X';
  expect_format("magic", b, n, "bad magic");
  memcpy(b, good, n);
  b[6] = 4;
  expect_format("version", b, n, "version 4.0");
  /* a header length past the end of the file */
  memcpy(b, good, n);
  b[8] = 0xff;
  b[9] = 0xff;
  expect_format("header length", b, n, "header declares 65535 bytes");
  free(b);
  free(good);
  /* version 2 with a 4 GB header length */
  b = make_npy("{}", 2, 0, &n);
  b[8] = b[9] = b[10] = b[11] = 0xff;
  expect_format("v2 header length", b, n, "header declares");
  free(b);

  static const struct {
    const char *hdr, *part;
    size_t data;
  } bad[] = {
      /* a huge shape over a tiny file: refused before any allocation */
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
       "needs more data", 16},
      /* a product that overflows 64 bits */
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
       "needs more data", 16},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "overflows",
       16},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "non-negative", 4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "more than 8",
       4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "takes 8 bytes", 12},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "needs more data", 4},
      {"{'descr': '<f4', 'fortran_order': False, }", "lacks", 4},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (), }", "duplicate", 4},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (), }", "True or False", 4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (), 'extra': 1}", "unknown key", 4},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (), }", "structured", 4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (), } x", "after the header", 4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (), ", "expected a quoted", 4},
      {"{'descr': '<f4", "unterminated", 4},
      {"['descr']", "not a dict", 4},
      {"{'descr': '<x9', 'fortran_order': False, 'shape': (), }", "not supported", 4},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': 3, }", "tuple", 4},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    b = make_npy(bad[i].hdr, 1, bad[i].data, &n);
    expect_format(bad[i].hdr, b, n, bad[i].part);
    free(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_float_files),   cmocka_unit_test(test_integer_files),
      cmocka_unit_test(test_refused_files), cmocka_unit_test(test_writer),
      cmocka_unit_test(test_hostile),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
