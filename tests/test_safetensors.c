/* safetensors: bit-exact round trips of every dtype, the exact byte layout
 * against a file built by hand, a fixture written by an independent Python
 * implementation (tests/ref/safetensors_ref.py), dtype/shape/name matching,
 * and one clear error (naming the file) for every corrupt or truncated
 * variant, including every truncation and random header damage.
 *
 * Set NB_SAFETENSORS_OUT=FILE to keep the round-trip file for
 * `/usr/bin/python3 tests/ref/safetensors_ref.py --check FILE`. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

typedef struct {
  const char *name;
  nb_dtype dt;
  int ndim;
  int64_t shape[NB_MAX_DIMS];
} spec;

static char tmpdir[64];

static int setup(void **s) {
  (void)s;
  strcpy(tmpdir, "/tmp/nb_safetensors_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  char p[512];
  while (d && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
  if (d) closedir(d);
  rmdir(tmpdir);
  return 0;
}

static const char *tmp(const char *name) {
  static char p[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

static size_t var_bytes(const spec *s) {
  return (size_t)nb_shape_numel(s->ndim, s->shape) * nb_dtype_size(s->dt);
}

/* A CPU state holding zero-initialised variables of the given specs. */
static nb_state *make_state(nb_backend *be, const spec *sp, int n) {
  nb_graph *g = nb_graph_new();
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  for (int i = 0; i < n; i++)
    nb_tensor_set_output(nb_variable(g, sp[i].name, sp[i].dt, sp[i].ndim, sp[i].shape, zero));
  TU_OK(nb_graph_status(g));
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  assert_int_equal(nb_state_count(st), n);
  return st;
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*n + 1);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

static void assert_contains(const char *msg, const char *want) {
  if (!strstr(msg, want)) fail_msg("message '%s' does not contain '%s'", msg, want);
}

/* ---- round trip ------------------------------------------------------------------ */

static const spec all_dtypes[] = {
    {"enc.w", NB_F32, 2, {3, 5}}, {"enc.h", NB_F16, 3, {2, 3, 4}}, {"enc.b", NB_BF16, 1, {7}},
    {"idx", NB_I32, 2, {4, 1}},   {"steps", NB_I64, 0, {0}},       {"mask", NB_U8, 1, {13}},
    {"empty", NB_F32, 2, {0, 4}}, {"big", NB_I64, 1, {3}},
};
#define N_ALL ((int)(sizeof all_dtypes / sizeof all_dtypes[0]))

static void test_roundtrip_bit_exact(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *a = make_state(be, all_dtypes, N_ALL), *b = make_state(be, all_dtypes, N_ALL);
  /* random bit patterns: NaN payloads, subnormals and all must survive */
  nb_rng r;
  nb_rng_seed(&r, 7);
  unsigned char *want[N_ALL];
  for (int i = 0; i < N_ALL; i++) {
    size_t n = var_bytes(&all_dtypes[i]);
    want[i] = malloc(n + 1);
    for (size_t k = 0; k < n; k++) want[i][k] = (unsigned char)nb_rng_next(&r);
    TU_OK(nb_state_write(a, all_dtypes[i].name, want[i], n));
  }
  nb_kv *meta;
  TU_OK(nb_kv_new(&meta));
  TU_OK(nb_kv_set(meta, "a key", "a \"value\"\n with\tescapes \xc3\xa9"));
  const char *path = tmp("all.safetensors");
  TU_OK(nb_safetensors_save(path, a, NULL, meta));
  const char *keep = getenv("NB_SAFETENSORS_OUT");
  if (keep) TU_OK(nb_safetensors_save(keep, a, NULL, meta));
  TU_OK(nb_safetensors_load(path, b, NULL, 0));
  for (int i = 0; i < N_ALL; i++) {
    size_t n = var_bytes(&all_dtypes[i]);
    unsigned char *got = malloc(n + 1);
    TU_OK(nb_state_read(b, all_dtypes[i].name, got, n));
    assert_memory_equal(got, want[i], n);
    free(got);
  }
  /* the same state gives the same bytes */
  const char *again = tmp("again.safetensors");
  TU_OK(nb_safetensors_save(again, b, NULL, meta));
  size_t n1, n2;
  unsigned char *f1 = read_bytes(path, &n1), *f2 = read_bytes(again, &n2);
  assert_int_equal(n1, n2);
  assert_memory_equal(f1, f2, n1);
  free(f1);
  free(f2);

  /* read API: metadata and tensor list without a state */
  nb_safetensors *f;
  TU_OK(nb_safetensors_open(path, &f));
  assert_int_equal(nb_safetensors_count(f), N_ALL);
  assert_string_equal(nb_kv_get(nb_safetensors_metadata(f), "a key"),
                      "a \"value\"\n with\tescapes \xc3\xa9");
  uint64_t prev_end = 0;
  for (int i = 0; i < N_ALL; i++) {
    const nb_safetensors_info *t = nb_safetensors_tensor(f, i);
    /* data order: ascending offsets, tiling the data section, aligned */
    if (i) assert_int_equal(t->offset, prev_end);
    prev_end = t->offset + t->bytes;
    assert_int_equal(t->offset % nb_dtype_size(t->dtype), 0);
    int j = nb_safetensors_find(f, t->name);
    assert_int_equal(j, i);
  }
  for (int i = 0; i < N_ALL; i++) {
    int j = nb_safetensors_find(f, all_dtypes[i].name);
    assert_true(j >= 0);
    const nb_safetensors_info *t = nb_safetensors_tensor(f, j);
    assert_int_equal(t->dtype, all_dtypes[i].dt);
    assert_int_equal(t->ndim, all_dtypes[i].ndim);
    for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], all_dtypes[i].shape[d]);
    assert_int_equal(t->bytes, var_bytes(&all_dtypes[i]));
  }
  assert_int_equal(nb_safetensors_find(f, "nope"), -1);
  nb_safetensors_close(f);

  /* a prefix saves only the matching variables */
  const char *enc = tmp("enc.safetensors");
  TU_OK(nb_safetensors_save(enc, a, "enc.", NULL));
  TU_OK(nb_safetensors_open(enc, &f));
  assert_int_equal(nb_safetensors_count(f), 3);
  assert_int_equal(nb_kv_count(nb_safetensors_metadata(f)), 0);
  assert_true(nb_safetensors_find(f, "enc.h") >= 0);
  assert_int_equal(nb_safetensors_find(f, "idx"), -1);
  nb_safetensors_close(f);
  /* and loads into just those variables of a full state */
  nb_state *c = make_state(be, all_dtypes, N_ALL);
  assert_int_not_equal(nb_safetensors_load(enc, c, NULL, 0), NB_OK);
  assert_contains(nb_last_error(), "'idx'"); /* first state variable not in the file */
  TU_OK(nb_safetensors_load(enc, c, "enc.", 0));
  float w[15];
  TU_OK(nb_state_read(c, "enc.w", w, sizeof w));
  assert_memory_equal(w, want[0], sizeof w);
  int32_t idx[4];
  TU_OK(nb_state_read(c, "idx", idx, sizeof idx));
  for (int i = 0; i < 4; i++) assert_int_equal(idx[i], 0); /* untouched */

  for (int i = 0; i < N_ALL; i++) free(want[i]);
  nb_kv_free(meta);
  nb_state_free(a);
  nb_state_free(b);
  nb_state_free(c);
  nb_backend_free(be);
}

/* ---- exact bytes --------------------------------------------------------------------- */

static void test_byte_layout(void **s) {
  (void)s;
  static const spec sp[] = {
      {"b", NB_F32, 1, {2}}, {"a", NB_U8, 1, {3}}, {"c", NB_I64, 0, {0}}, {"d", NB_F16, 1, {1}}};
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *st = make_state(be, sp, 4);
  float b[2] = {1.0f, -2.0f};
  uint8_t a[3] = {1, 2, 3};
  int64_t c = 5;
  uint16_t d = 0x3c00;
  TU_OK(nb_state_write(st, "b", b, sizeof b));
  TU_OK(nb_state_write(st, "a", a, sizeof a));
  TU_OK(nb_state_write(st, "c", &c, sizeof c));
  TU_OK(nb_state_write(st, "d", &d, sizeof d));
  nb_kv *meta;
  TU_OK(nb_kv_new(&meta));
  TU_OK(nb_kv_set(meta, "k", "v"));
  const char *path = tmp("layout.safetensors");
  TU_OK(nb_safetensors_save(path, st, NULL, meta));

  /* built by hand: 8-byte elements first, then 4, 2, 1; names break ties */
  const char *json = "{\"__metadata__\":{\"k\":\"v\"},"
                     "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                     "\"d\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[16,18]},"
                     "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[18,21]}}";
  size_t jn = strlen(json), hn = (jn + 7) / 8 * 8;
  unsigned char want[512];
  size_t n = 0;
  for (int i = 0; i < 8; i++) want[n++] = (unsigned char)(hn >> (8 * i));
  memcpy(want + n, json, jn);
  memset(want + n + jn, ' ', hn - jn);
  n += hn;
  static const unsigned char data[21] = {5,    0,    0,    0,    0, 0, 0, 0, /* c = 5 */
                                         0,    0,    0x80, 0x3f,             /* 1.0f */
                                         0,    0,    0,    0xc0,             /* -2.0f */
                                         0x00, 0x3c,                         /* f16 1.0 */
                                         1,    2,    3};
  memcpy(want + n, data, sizeof data);
  n += sizeof data;
  size_t got_n;
  unsigned char *got = read_bytes(path, &got_n);
  assert_int_equal(got_n, n);
  assert_memory_equal(got, want, n);
  assert_int_equal((8 + hn) % 8, 0);
  free(got);
  nb_kv_free(meta);
  nb_state_free(st);
  nb_backend_free(be);
}

/* ---- the Python-written fixture --------------------------------------------------------- */

static const spec fixture_spec[] = {
    {"a.f32", NB_F32, 2, {2, 3}}, {"b.f16", NB_F16, 1, {5}},      {"c.bf16", NB_BF16, 1, {3}},
    {"d.i32", NB_I32, 2, {2, 2}}, {"e.i64", NB_I64, 1, {3}},      {"f.u8", NB_U8, 1, {5}},
    {"g.scalar", NB_F32, 0, {0}}, {"h.empty", NB_F32, 2, {0, 3}},
};
#define FIXTURE NB_TEST_REF_DIR "/fixture.safetensors"

static void test_python_fixture(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *st = make_state(be, fixture_spec, 8);
  TU_OK(nb_safetensors_load(FIXTURE, st, NULL, 0));
  float a[6], g;
  uint16_t b[5], c[3];
  int32_t d[4];
  int64_t e[3];
  uint8_t f[5];
  TU_OK(nb_state_read(st, "a.f32", a, sizeof a));
  TU_OK(nb_state_read(st, "b.f16", b, sizeof b));
  TU_OK(nb_state_read(st, "c.bf16", c, sizeof c));
  TU_OK(nb_state_read(st, "d.i32", d, sizeof d));
  TU_OK(nb_state_read(st, "e.i64", e, sizeof e));
  TU_OK(nb_state_read(st, "f.u8", f, sizeof f));
  TU_OK(nb_state_read(st, "g.scalar", &g, sizeof g));
  const float a_want[6] = {-1.5f, 0.0f, 0.25f, 3.14159274f, 1e-8f, -65504.0f};
  assert_memory_equal(a, a_want, sizeof a);
  /* 1, -2.5, 65504 (max), 2^-14 (min normal), 2^-24 (min subnormal) */
  const uint16_t b_want[5] = {0x3c00, 0xc100, 0x7bff, 0x0400, 0x0001};
  assert_memory_equal(b, b_want, sizeof b);
  const uint16_t c_want[3] = {0x3f80, 0xbe20, 0x4380}; /* 1, -0.15625, 256 */
  assert_memory_equal(c, c_want, sizeof c);
  const int32_t d_want[4] = {0, -1, INT32_MAX, INT32_MIN};
  assert_memory_equal(d, d_want, sizeof d);
  /* 2^53 + 1 would not survive a trip through a double */
  const int64_t e_want[3] = {1, INT64_MIN, 9007199254740993LL};
  assert_memory_equal(e, e_want, sizeof e);
  const uint8_t f_want[5] = {0, 1, 127, 128, 255};
  assert_memory_equal(f, f_want, sizeof f);
  assert_true(g == 42.0f);

  nb_safetensors *file;
  TU_OK(nb_safetensors_open(FIXTURE, &file));
  const nb_kv *meta = nb_safetensors_metadata(file);
  assert_int_equal(nb_kv_count(meta), 2);
  assert_string_equal(nb_kv_get(meta, "format"), "pt");
  assert_string_equal(nb_kv_get(meta, "note"), "fixture \"quoted\", caf\xc3\xa9");
  /* listed in data order, which the script made different from name order */
  static const char *order[8] = {"e.i64", "a.f32", "h.empty",  "c.bf16",
                                 "b.f16", "f.u8",  "g.scalar", "d.i32"};
  assert_int_equal(nb_safetensors_count(file), 8);
  for (int i = 0; i < 8; i++) assert_string_equal(nb_safetensors_tensor(file, i)->name, order[i]);
  const nb_safetensors_info *t = nb_safetensors_tensor(file, nb_safetensors_find(file, "a.f32"));
  assert_int_equal(t->dtype, NB_F32);
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->shape[1], 3);
  assert_int_equal(t->bytes, 24);
  assert_int_equal(t->offset, 8 + 624 + 24); /* after e.i64 */
  float a2[6];
  TU_OK(nb_safetensors_read(file, nb_safetensors_find(file, "a.f32"), a2, sizeof a2));
  assert_memory_equal(a2, a_want, sizeof a2);
  assert_int_equal(nb_safetensors_read(file, 0, a2, 4), NB_ERR_INVALID_ARG); /* wrong size */
  nb_safetensors_close(file);
  nb_state_free(st);
  nb_backend_free(be);
}

/* ---- matching a state ------------------------------------------------------------------- */

static void test_mismatch(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  /* a.f32 transposed: the error names the tensor and both shapes, and
   * nothing is written (d.i32 keeps its sentinel) */
  spec sp[8];
  memcpy(sp, fixture_spec, sizeof sp);
  sp[0].shape[0] = 3;
  sp[0].shape[1] = 2;
  nb_state *st = make_state(be, sp, 8);
  int32_t sentinel[4] = {9, 9, 9, 9}, d[4];
  TU_OK(nb_state_write(st, "d.i32", sentinel, sizeof sentinel));
  assert_int_equal(nb_safetensors_load(FIXTURE, st, NULL, 0), NB_ERR_SHAPE);
  const char *msg = nb_last_error();
  assert_contains(msg, FIXTURE);
  assert_contains(msg, "'a.f32'");
  assert_contains(msg, "[2, 3]");
  assert_contains(msg, "[3, 2]");
  TU_OK(nb_state_read(st, "d.i32", d, sizeof d));
  assert_memory_equal(d, sentinel, sizeof d);
  /* flags never excuse a shape mismatch */
  assert_int_equal(nb_safetensors_load(FIXTURE, st, NULL,
                                       NB_SAFETENSORS_ALLOW_MISSING | NB_SAFETENSORS_ALLOW_EXTRA),
                   NB_ERR_SHAPE);
  nb_state_free(st);

  /* dtype mismatch */
  memcpy(sp, fixture_spec, sizeof sp);
  sp[1].dt = NB_BF16;
  st = make_state(be, sp, 8);
  assert_int_equal(nb_safetensors_load(FIXTURE, st, NULL, 0), NB_ERR_SHAPE);
  assert_contains(nb_last_error(), "'b.f16' is f16 [5] in the file but bf16 [5] in the state");
  nb_state_free(st);

  /* a variable missing from the file */
  spec more[9];
  memcpy(more, fixture_spec, sizeof fixture_spec);
  more[8] = (spec){"z.extra", NB_F32, 1, {2}};
  st = make_state(be, more, 9);
  float z[2] = {7, 8}, zz[2];
  TU_OK(nb_state_write(st, "z.extra", z, sizeof z));
  assert_int_not_equal(nb_safetensors_load(FIXTURE, st, NULL, 0), NB_OK);
  assert_contains(nb_last_error(), "'z.extra'");
  assert_contains(nb_last_error(), FIXTURE);
  TU_OK(nb_safetensors_load(FIXTURE, st, NULL, NB_SAFETENSORS_ALLOW_MISSING));
  TU_OK(nb_state_read(st, "z.extra", zz, sizeof zz));
  assert_memory_equal(zz, z, sizeof z);
  int64_t e[3];
  TU_OK(nb_state_read(st, "e.i64", e, sizeof e));
  assert_true(e[2] == 9007199254740993LL);
  nb_state_free(st);

  /* a tensor in the file with no variable */
  st = make_state(be, fixture_spec + 1, 7);
  assert_int_not_equal(nb_safetensors_load(FIXTURE, st, NULL, 0), NB_OK);
  assert_contains(nb_last_error(), "'a.f32'");
  TU_OK(nb_safetensors_load(FIXTURE, st, NULL, NB_SAFETENSORS_ALLOW_EXTRA));
  uint8_t f[5];
  TU_OK(nb_state_read(st, "f.u8", f, sizeof f));
  assert_int_equal(f[4], 255);
  nb_state_free(st);
  nb_backend_free(be);
}

static void test_reserved_name(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  static const spec sp[] = {{"__metadata__", NB_F32, 1, {1}}};
  nb_state *st = make_state(be, sp, 1);
  const char *path = tmp("reserved.safetensors");
  assert_int_equal(nb_safetensors_save(path, st, NULL, NULL), NB_ERR_INVALID_ARG);
  assert_int_equal(access(path, F_OK), -1); /* nothing written */
  nb_state_free(st);
  nb_backend_free(be);
  assert_int_equal(nb_safetensors_load(tmp("does-not-exist"), NULL, NULL, 0), NB_ERR_INVALID_ARG);
  nb_safetensors *f;
  assert_int_equal(nb_safetensors_open(tmp("does-not-exist"), &f), NB_ERR_IO);
  assert_contains(nb_last_error(), "does-not-exist");
}

/* ---- corrupt files -------------------------------------------------------------------------- */

/* Writes u64 len + header (+ padding) + data_len zero bytes. */
static const char *make_file(const char *name, const char *header, size_t data_len) {
  size_t hn = strlen(header);
  unsigned char *b = calloc(8 + hn + data_len + 1, 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hn >> (8 * i));
  memcpy(b + 8, header, hn);
  const char *path = tmp(name);
  write_bytes(path, b, 8 + hn + data_len);
  free(b);
  return path;
}

/* Opening must fail with NB_ERR_FORMAT and a message naming the file and
 * containing `want`. */
static void expect_corrupt(const char *path, const char *want) {
  nb_safetensors *f = (nb_safetensors *)1;
  nb_status st = nb_safetensors_open(path, &f);
  if (st != NB_ERR_FORMAT)
    fail_msg("%s: expected a format error containing '%s', got %s: %s", path, want,
             nb_status_name(st), nb_last_error());
  assert_null(f);
  assert_contains(nb_last_error(), path);
  assert_contains(nb_last_error(), want);
}

static void test_corrupt_headers(void **s) {
  (void)s;
  const char *ok = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
  nb_safetensors *f;
  TU_OK(nb_safetensors_open(make_file("ok", ok, 24), &f));
  nb_safetensors_close(f);

  write_bytes(tmp("empty"), "", 0);
  expect_corrupt(tmp("empty"), "too short");
  write_bytes(tmp("five"), "\x10\0\0\0\0", 5);
  expect_corrupt(tmp("five"), "byte offset 0");
  unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
  write_bytes(tmp("huge"), huge, 16);
  expect_corrupt(tmp("huge"), "header length 18446744073709551615 (byte offset 0) is larger");
  unsigned char over[12] = {5, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
  write_bytes(tmp("over"), over, 12);
  expect_corrupt(tmp("over"), "header length 5");
  unsigned char zero[8] = {0};
  write_bytes(tmp("zero"), zero, 8);
  expect_corrupt(tmp("zero"), "too small");

  expect_corrupt(make_file("json", "{\"x\":{\"dtype\":\"F32\",,}}", 0), "invalid JSON");
  expect_corrupt(make_file("json2", "{\"x\": tru}", 0), "byte offset");
  expect_corrupt(make_file("array", "[1, 2]  ", 0), "not a JSON object");
  expect_corrupt(make_file("garbage", "{}  xyz ", 0), "unexpected character after the JSON");
  expect_corrupt(
      make_file("dtype", "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8),
      "unknown dtype 'F64'");
  expect_corrupt(make_file("nodtype", "{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                 "'dtype'");
  expect_corrupt(make_file("noshape", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4),
                 "'shape'");
  expect_corrupt(make_file("nooffs", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
                 "'data_offsets'");
  expect_corrupt(make_file("notobj", "{\"x\":[1,2]}", 0), "'x' is not an object");
  expect_corrupt(
      make_file("negdim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4),
      "'shape'[0]");
  expect_corrupt(
      make_file("fracdim", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4),
      "'shape'[0]");
  expect_corrupt(make_file("rank9",
                           "{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                           "\"data_offsets\":[0,1]}}",
                           1),
                 "9 dimensions");
  expect_corrupt(make_file("overflow",
                           "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
                           "\"data_offsets\":[0,4]}}",
                           4),
                 "needs more than");
  expect_corrupt(
      make_file("size", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20),
      "span 20 bytes but F32 [2, 3] needs 24");
  expect_corrupt(
      make_file("backwards", "{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4),
      "end before");
  expect_corrupt(
      make_file("negoff", "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 4),
      "'data_offsets'");
  expect_corrupt(make_file("overlap",
                           "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                           "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                           6),
                 "overlap");
  expect_corrupt(make_file("gap",
                           "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                           "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                           10),
                 "gap");
  expect_corrupt(
      make_file("start", "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6),
      "data section start");
  expect_corrupt(make_file("dup",
                           "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                           "\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                           8),
                 "'x' appears twice");
  expect_corrupt(make_file("truncated", ok, 23), "truncated: tensor 'x' ends at byte offset");
  expect_corrupt(make_file("beyond",
                           "{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1e15,1e15]}}",
                           0),
                 "data section start");
  expect_corrupt(make_file("trailing", ok, 30), "6 unexpected bytes after the last tensor");
  expect_corrupt(make_file("meta", "{\"__metadata__\":{\"a\":1}}", 0), "'__metadata__'.'a'");
  expect_corrupt(make_file("meta2", "{\"__metadata__\":[\"a\"]}", 0), "'__metadata__'");
  expect_corrupt(make_file("meta3", "{\"__metadata__\":{},\"__metadata__\":{}}", 0), "twice");

  /* a corrupt file leaves the state alone through nb_safetensors_load too */
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  static const spec sp[] = {{"x", NB_F32, 2, {2, 3}}};
  nb_state *st = make_state(be, sp, 1);
  assert_int_equal(nb_safetensors_load(tmp("truncated"), st, NULL, 0), NB_ERR_FORMAT);
  assert_contains(nb_last_error(), tmp("truncated"));
  TU_OK(nb_safetensors_load(tmp("ok"), st, NULL, 0));
  nb_state_free(st);
  nb_backend_free(be);
}

/* Every proper prefix of a valid file is an error; random damage to the
 * header never crashes (ASan watches) and never yields a file whose tensors
 * fail to tile the data. */
static void test_truncations_and_damage(void **s) {
  (void)s;
  size_t n;
  unsigned char *full = read_bytes(FIXTURE, &n);
  const char *path = tmp("cut.safetensors");
  for (size_t len = 0; len < n; len++) {
    write_bytes(path, full, len);
    expect_corrupt(path, "");
  }
  nb_rng r;
  nb_rng_seed(&r, 11);
  static const char junk[] = "{}[],:\"0123456789-.e \\x";
  unsigned char *bad = malloc(n);
  int ok = 0;
  for (int trial = 0; trial < 400; trial++) {
    memcpy(bad, full, n);
    int hits = 1 + (int)(nb_rng_next(&r) % 3);
    for (int h = 0; h < hits; h++) {
      size_t at = 8 + nb_rng_next(&r) % 624; /* inside the JSON header */
      bad[at] = (unsigned char)junk[nb_rng_next(&r) % (sizeof junk - 1)];
    }
    write_bytes(path, bad, n);
    nb_safetensors *f;
    nb_status st = nb_safetensors_open(path, &f);
    if (st) {
      assert_contains(nb_last_error(), path);
      continue;
    }
    ok++;
    uint64_t end = 8 + 624;
    for (int i = 0; i < nb_safetensors_count(f); i++) {
      const nb_safetensors_info *t = nb_safetensors_tensor(f, i);
      assert_int_equal(t->offset, end);
      end += t->bytes;
    }
    assert_int_equal(end, n);
    nb_safetensors_close(f);
  }
  print_message("random header damage: %d of 400 variants still valid\n", ok);
  free(bad);
  free(full);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_bit_exact),    cmocka_unit_test(test_byte_layout),
      cmocka_unit_test(test_python_fixture),         cmocka_unit_test(test_mismatch),
      cmocka_unit_test(test_reserved_name),          cmocka_unit_test(test_corrupt_headers),
      cmocka_unit_test(test_truncations_and_damage),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
