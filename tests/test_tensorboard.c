/* TensorBoard event files, read back by an independent reader written here:
 * TFRecord framing with both masked CRC-32Cs checked by a bitwise CRC-32C
 * (no table, unlike src/io/crc32c.c), and a protobuf decoder that walks
 * tags and wire types generically, then checks file_version, wall times,
 * tags, steps and float values. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static char tmpdir[64];

static void remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb)) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        remove_tree(p);
      }
    if (d) closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int setup(void **s) {
  (void)s;
  strcpy(tmpdir, "/tmp/nb_tensorboard_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  remove_tree(tmpdir);
  return 0;
}

/* ---- the independent reader ---------------------------------------------------- */

/* Bit by bit, straight from the definition: reflected polynomial 0x82F63B78. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return crc ^ 0xffffffffu;
}

static uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

typedef struct {
  double wall_time;
  int has_wall_time;
  int64_t step;
  char file_version[64];
  char tag[256];
  float value;
  int has_value;
  int n_values; /* Summary.value entries */
} event;

static uint64_t varint(const unsigned char *p, size_t n, size_t *pos) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    assert_true(*pos < n);
    unsigned char b = p[(*pos)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  fail_msg("varint longer than 10 bytes");
  return 0;
}

/* Calls field(ctx, number, wire, value, data, len) for every field. */
typedef void (*field_fn)(void *ctx, int field, int wire, uint64_t v, const unsigned char *d,
                         size_t len);

static void walk(const unsigned char *p, size_t n, field_fn fn, void *ctx) {
  size_t pos = 0;
  while (pos < n) {
    uint64_t key = varint(p, n, &pos);
    int field = (int)(key >> 3), wire = (int)(key & 7);
    if (wire == 0) {
      fn(ctx, field, wire, varint(p, n, &pos), NULL, 0);
    } else if (wire == 1 || wire == 5) {
      size_t w = wire == 1 ? 8 : 4;
      assert_true(pos + w <= n);
      fn(ctx, field, wire, le(p + pos, (int)w), p + pos, w);
      pos += w;
    } else if (wire == 2) {
      uint64_t len = varint(p, n, &pos);
      assert_true(len <= n - pos);
      fn(ctx, field, wire, len, p + pos, (size_t)len);
      pos += (size_t)len;
    } else {
      fail_msg("unexpected wire type %d", wire);
    }
  }
  assert_int_equal(pos, n);
}

static void on_value(void *ctx, int field, int wire, uint64_t v, const unsigned char *d,
                     size_t len) {
  event *e = ctx;
  if (field == 1) { /* tag */
    assert_int_equal(wire, 2);
    assert_true(len < sizeof e->tag);
    memcpy(e->tag, d, len);
    e->tag[len] = '\0';
  } else if (field == 2) { /* simple_value */
    assert_int_equal(wire, 5);
    uint32_t bits = (uint32_t)v;
    memcpy(&e->value, &bits, 4);
    e->has_value = 1;
  } else {
    fail_msg("unexpected Summary.Value field %d", field);
  }
}

static void on_summary(void *ctx, int field, int wire, uint64_t v, const unsigned char *d,
                       size_t len) {
  (void)v;
  assert_int_equal(field, 1);
  assert_int_equal(wire, 2);
  ((event *)ctx)->n_values++;
  walk(d, len, on_value, ctx);
}

static void on_event(void *ctx, int field, int wire, uint64_t v, const unsigned char *d,
                     size_t len) {
  event *e = ctx;
  switch (field) {
  case 1:
    assert_int_equal(wire, 1);
    memcpy(&e->wall_time, &v, 8);
    e->has_wall_time = 1;
    break;
  case 2:
    assert_int_equal(wire, 0);
    e->step = (int64_t)v;
    break;
  case 3:
    assert_int_equal(wire, 2);
    assert_true(len < sizeof e->file_version);
    memcpy(e->file_version, d, len);
    e->file_version[len] = '\0';
    break;
  case 5:
    assert_int_equal(wire, 2);
    walk(d, len, on_summary, ctx);
    break;
  default: fail_msg("unexpected Event field %d", field);
  }
}

/* Reads every record of an event file, checking framing and CRCs. */
static int read_events(const char *path, event *out, int cap) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  int n = 0;
  unsigned char head[12];
  size_t got;
  while ((got = fread(head, 1, 12, f)) == 12) {
    uint64_t len = le(head, 8);
    assert_int_equal(le(head + 8, 4), masked(crc32c_bitwise(head, 8)));
    assert_true(len < 1 << 20);
    unsigned char *data = malloc(len + 4);
    assert_int_equal(fread(data, 1, len + 4, f), len + 4);
    assert_int_equal(le(data + len, 4), masked(crc32c_bitwise(data, len)));
    assert_true(n < cap);
    memset(&out[n], 0, sizeof out[n]);
    walk(data, len, on_event, &out[n]);
    n++;
    free(data);
  }
  assert_int_equal(got, 0); /* no torn record at the end */
  fclose(f);
  return n;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_crc32c(void **s) {
  (void)s;
  /* the standard check value, then the library against the bitwise one */
  assert_int_equal(nb_crc32c(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(crc32c_bitwise((const unsigned char *)"123456789", 9), 0xe3069283u);
  unsigned char buf[1000];
  nb_rng r;
  nb_rng_seed(&r, 3);
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)nb_rng_next(&r);
  for (size_t n = 0; n <= sizeof buf; n += 37)
    assert_int_equal(nb_crc32c(0, buf, n), crc32c_bitwise(buf, n));
  /* incremental use continues the same checksum */
  assert_int_equal(nb_crc32c(nb_crc32c(0, buf, 400), buf + 400, 600), crc32c_bitwise(buf, 1000));
}

static void test_scalars(void **s) {
  (void)s;
  char logdir[256];
  snprintf(logdir, sizeof logdir, "%s/runs/exp1", tmpdir); /* parents created */
  double t0 = (double)time(NULL);
  nb_tb_writer *w;
  TU_OK(nb_tb_open(logdir, &w));
  char host[256] = "localhost";
  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  char path[512];
  snprintf(path, sizeof path, "%s", nb_tb_path(w)); /* outlives the writer */
  const char *base = strrchr(path, '/') + 1;
  assert_memory_equal(path, logdir, strlen(logdir));
  assert_memory_equal(base, "events.out.tfevents.", 20);
  long long stamp = atoll(base + 20);
  assert_true(stamp >= (long long)t0 - 1 && stamp <= (long long)t0 + 60);
  assert_string_equal(strchr(base + 20, '.') + 1, host);

  /* the version event is on disk right after open */
  event ev[64];
  assert_int_equal(read_events(path, ev, 64), 1);

  char long_tag[200];
  memset(long_tag, 'x', sizeof long_tag - 1); /* length needs a 2-byte varint */
  long_tag[sizeof long_tag - 1] = '\0';
  static const char *tags[3] = {"train/loss", "train/lr", "val/acc"};
  for (int step = 0; step < 10; step++)
    for (int k = 0; k < 3; k++)
      TU_OK(nb_tb_scalar(w, tags[k], step * 100, 0.5f * (float)step - (float)k / 3.0f));
  TU_OK(nb_tb_scalar(w, long_tag, 5000000000LL, -1.0e-30f));
  TU_OK(nb_tb_scalar(w, "neg", -3, INFINITY));
  TU_OK(nb_tb_scalar(w, "nan", 1, NAN));
  TU_OK(nb_tb_flush(w));
  TU_OK(nb_tb_close(w));

  int n = read_events(path, ev, 64);
  assert_int_equal(n, 1 + 30 + 3);
  assert_string_equal(ev[0].file_version, "brain.Event:2");
  assert_int_equal(ev[0].step, 0);
  assert_int_equal(ev[0].n_values, 0);
  double t1 = (double)time(NULL);
  for (int i = 0; i < n; i++) {
    assert_true(ev[i].has_wall_time);
    assert_true(ev[i].wall_time >= t0 - 1 && ev[i].wall_time <= t1 + 1);
    if (i) assert_true(ev[i].wall_time >= ev[i - 1].wall_time);
  }
  for (int i = 0; i < 30; i++) {
    const event *e = &ev[1 + i];
    int step = i / 3, k = i % 3;
    assert_string_equal(e->file_version, "");
    assert_int_equal(e->n_values, 1);
    assert_string_equal(e->tag, tags[k]);
    assert_int_equal(e->step, step * 100);
    assert_true(e->has_value);
    assert_true(e->value == 0.5f * (float)step - (float)k / 3.0f); /* bit-exact float */
  }
  assert_string_equal(ev[31].tag, long_tag);
  assert_int_equal(ev[31].step, 5000000000LL);
  assert_true(ev[31].value == -1.0e-30f);
  assert_string_equal(ev[32].tag, "neg");
  assert_int_equal(ev[32].step, -3); /* int64 as a 10-byte varint */
  assert_true(isinf(ev[32].value) && ev[32].value > 0);
  assert_true(isnan(ev[33].value));
}

static void test_two_writers(void **s) {
  (void)s;
  /* two writers in one second get two files, never one shared file */
  nb_tb_writer *a, *b;
  TU_OK(nb_tb_open(tmpdir, &a));
  TU_OK(nb_tb_open(tmpdir, &b));
  assert_string_not_equal(nb_tb_path(a), nb_tb_path(b));
  TU_OK(nb_tb_scalar(a, "a", 1, 1.0f));
  TU_OK(nb_tb_scalar(b, "b", 2, 2.0f));
  char pa[256], pb[256];
  strcpy(pa, nb_tb_path(a));
  strcpy(pb, nb_tb_path(b));
  TU_OK(nb_tb_close(a));
  TU_OK(nb_tb_close(b));
  event ev[4];
  assert_int_equal(read_events(pa, ev, 4), 2);
  assert_string_equal(ev[1].tag, "a");
  assert_int_equal(read_events(pb, ev, 4), 2);
  assert_string_equal(ev[1].tag, "b");
  assert_int_equal(nb_tb_close(NULL), NB_OK);

  /* a logdir that cannot be created */
  char bad[256];
  snprintf(bad, sizeof bad, "%s/plainfile", tmpdir);
  FILE *f = fopen(bad, "wb");
  fclose(f);
  strcat(bad, "/logs");
  assert_int_equal(nb_tb_open(bad, &a), NB_ERR_IO);
  assert_true(strstr(nb_last_error(), "plainfile") != NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c),
      cmocka_unit_test(test_scalars),
      cmocka_unit_test(test_two_writers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
