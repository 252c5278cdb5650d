/* CSV logs: exact file contents (header, numbers, RFC 4180 quoting), every
 * row on disk as soon as it is written, wrong cell counts rejected without
 * a torn row, and resuming a log (NB_CSVLOG_APPEND) with a torn last line
 * or a different header. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

static char tmpdir[64], path[128];

static int setup(void **s) {
  (void)s;
  strcpy(tmpdir, "/tmp/nb_csvlog_XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(path, sizeof path, "%s/log.csv", tmpdir);
  return 0;
}

static int teardown(void **s) {
  (void)s;
  unlink(path);
  rmdir(tmpdir);
  return 0;
}

/* The whole file as a string (caller frees). */
static char *slurp(void) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *b = calloc(1, 1 << 16);
  size_t n = fread(b, 1, (1 << 16) - 1, f);
  b[n] = '\0';
  fclose(f);
  return b;
}

static void assert_file(const char *want) {
  char *got = slurp();
  assert_string_equal(got, want);
  free(got);
}

static void test_write(void **s) {
  (void)s;
  const char *cols[4] = {"step", "loss", "note, with comma", "say \"hi\""};
  nb_csvlog *log;
  TU_OK(nb_csvlog_open(path, 4, cols, 0, &log));
  /* the header is on disk before any row */
  assert_file("step,loss,\"note, with comma\",\"say \"\"hi\"\"\"\n");
  const double r1[4] = {1, 0.1, 2.5e-8, -100};
  TU_OK(nb_csvlog_row(log, r1, 4));
  /* flushed per row: readable while the log is still open */
  assert_file("step,loss,\"note, with comma\",\"say \"\"hi\"\"\"\n"
              "1,0.1,2.5e-08,-100\n");
  TU_OK(nb_csvlog_num(log, 2));
  TU_OK(nb_csvlog_num(log, NAN));
  TU_OK(nb_csvlog_str(log, "plain"));
  TU_OK(nb_csvlog_str(log, "line\nbreak, \"q\"\r"));
  TU_OK(nb_csvlog_end_row(log));
  TU_OK(nb_csvlog_num(log, INFINITY));
  TU_OK(nb_csvlog_num(log, -INFINITY));
  TU_OK(nb_csvlog_str(log, ""));
  TU_OK(nb_csvlog_num(log, 1e300));
  TU_OK(nb_csvlog_end_row(log));

  /* wrong cell counts: error, and no partial row reaches the file */
  TU_OK(nb_csvlog_num(log, 9));
  assert_int_equal(nb_csvlog_end_row(log), NB_ERR_INVALID_ARG);
  assert_true(strstr(nb_last_error(), "1 cells") != NULL);
  for (int i = 0; i < 4; i++) TU_OK(nb_csvlog_num(log, 9));
  assert_int_equal(nb_csvlog_num(log, 9), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_csvlog_row(log, r1, 3), NB_ERR_INVALID_ARG);
  assert_true(strstr(nb_last_error(), path) != NULL);
  const double r2[4] = {3, 1.0 / 3.0, 0, 0.1 + 0.2};
  TU_OK(nb_csvlog_row(log, r2, 4));
  TU_OK(nb_csvlog_close(log));
  assert_file("step,loss,\"note, with comma\",\"say \"\"hi\"\"\"\n"
              "1,0.1,2.5e-08,-100\n"
              "2,nan,plain,\"line\nbreak, \"\"q\"\"\r\"\n"
              "inf,-inf,,1e+300\n"
              "3,0.3333333333333333,0,0.30000000000000004\n");
  /* shortest digits, still exact */
  assert_true(strtod("0.3333333333333333", NULL) == 1.0 / 3.0);
  assert_true(strtod("0.30000000000000004", NULL) == 0.1 + 0.2);
  assert_int_equal(nb_csvlog_close(NULL), NB_OK);
}

static void test_append(void **s) {
  (void)s;
  const char *cols[2] = {"step", "loss"};
  nb_csvlog *log;
  /* APPEND on a missing file creates it */
  unlink(path);
  TU_OK(nb_csvlog_open(path, 2, cols, NB_CSVLOG_APPEND, &log));
  const double r[2] = {1, 0.5};
  TU_OK(nb_csvlog_row(log, r, 2));
  TU_OK(nb_csvlog_close(log));
  /* a crash mid-row left a torn line: resuming drops it */
  FILE *f = fopen(path, "ab");
  fputs("2,0.2", f);
  fclose(f);
  TU_OK(nb_csvlog_open(path, 2, cols, NB_CSVLOG_APPEND, &log));
  const double r2[2] = {2, 0.25};
  TU_OK(nb_csvlog_row(log, r2, 2));
  TU_OK(nb_csvlog_close(log));
  assert_file("step,loss\n1,0.5\n2,0.25\n");
  /* a torn line longer than the scan block is dropped too */
  f = fopen(path, "ab");
  for (int i = 0; i < 10000; i++) fputc('7', f);
  fclose(f);
  TU_OK(nb_csvlog_open(path, 2, cols, NB_CSVLOG_APPEND, &log));
  TU_OK(nb_csvlog_close(log));
  assert_file("step,loss\n1,0.5\n2,0.25\n");
  /* a different header is refused and the file left alone */
  const char *other[2] = {"step", "acc"};
  assert_int_equal(nb_csvlog_open(path, 2, other, NB_CSVLOG_APPEND, &log), NB_ERR_FORMAT);
  assert_true(strstr(nb_last_error(), path) != NULL);
  assert_true(strstr(nb_last_error(), "step,acc") != NULL);
  assert_file("step,loss\n1,0.5\n2,0.25\n");
  /* without APPEND the log starts over */
  TU_OK(nb_csvlog_open(path, 2, other, 0, &log));
  TU_OK(nb_csvlog_close(log));
  assert_file("step,acc\n");
  /* bad arguments */
  assert_int_equal(nb_csvlog_open(path, 0, cols, 0, &log), NB_ERR_INVALID_ARG);
  const char *nul[2] = {"a", NULL};
  assert_int_equal(nb_csvlog_open(path, 2, nul, 0, &log), NB_ERR_INVALID_ARG);
  char nodir[160];
  snprintf(nodir, sizeof nodir, "%s/missing/log.csv", tmpdir);
  assert_int_equal(nb_csvlog_open(nodir, 2, cols, 0, &log), NB_ERR_IO);
  assert_true(strstr(nb_last_error(), nodir) != NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write),
      cmocka_unit_test(test_append),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
