/* Progress display rendered into memory with a fake clock, so the exact text
 * (bar, counts, smoothed rate, ETA, metrics, in-place redraws, log lines and
 * final lines) is checked without depending on timing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static double fake_clock(void *ctx) { return *(const double *)ctx; }

typedef struct {
  FILE *f;
  char *text;
  size_t len;
  double t;
  nb_progress *p;
} harness;

static void open_progress(harness *h, const char *label, int64_t total, nb_progress_mode mode) {
  h->text = NULL;
  h->len = 0;
  h->f = open_memstream(&h->text, &h->len);
  assert_non_null(h->f);
  h->t = 0;
  TU_OK(nb_progress_new(h->f, label, total, mode, &h->p));
  TU_OK(nb_progress_set_clock(h->p, fake_clock, &h->t));
}

/* Ends the stream and returns everything written (caller frees). */
static char *close_progress(harness *h) {
  nb_progress_free(h->p);
  fclose(h->f);
  return h->text;
}

static void update(harness *h, double t, int64_t done, int n, double loss, double acc) {
  const char *names[2] = {"loss", "acc"};
  double values[2] = {loss, acc};
  h->t = t;
  TU_OK(nb_progress_update(h->p, done, n, names, values));
}

static void test_bar(void **state) {
  (void)state;
  harness h;
  open_progress(&h, "epoch 1/2", 10, NB_PROGRESS_BAR);
  assert_int_equal(nb_progress_get_mode(h.p), NB_PROGRESS_BAR);
  TU_OK(nb_progress_set_width(h.p, 10));
  TU_OK(nb_progress_set_unit(h.p, "img", 64));
  update(&h, 1.0, 1, 2, 0.5, 0.25); /* rate 64 img/s, ETA 9 s */
  update(&h, 1.05, 2, 2, 0.4, 0.5); /* < 0.1 s later: neither sampled nor drawn */
  update(&h, 2.0, 3, 2, 0.3, 0.75); /* sample 128: 0.3 * 128 + 0.7 * 64 = 83.2 */
  update(&h, 3.0, 5, 1, 0.25, 0);   /* 96.64; shorter line: old text blanked */
  update(&h, 4.0, 10, 2, 0.125, 1); /* 163.648; complete: full bar */
  h.t = 6.0;
  TU_OK(nb_progress_end(h.p)); /* 10 * 64 images in 6 s */
  char *text = close_progress(&h);
  assert_string_equal(
      text, "\repoch 1/2 [=>        ]  1/10  64.0 img/s  ETA 0:09  loss 0.5000  acc 0.2500"
            "\repoch 1/2 [===>      ]  3/10  83.2 img/s  ETA 0:05  loss 0.3000  acc 0.7500"
            "\repoch 1/2 [=====>    ]  5/10  96.6 img/s  ETA 0:03  loss 0.2500            "
            "\repoch 1/2 [==========] 10/10  164 img/s  ETA 0:00  loss 0.1250  acc 1.0000"
            "\repoch 1/2 [==========] 10/10  107 img/s  time 0:06  loss 0.1250  acc 1.0000\n");
  free(text);
}

/* No rate before 0.1 s has passed; ETAs of an hour or more get hours. */
static void test_bar_unknown_rate_and_hours(void **state) {
  (void)state;
  harness h;
  open_progress(&h, "", 100000, NB_PROGRESS_BAR);
  TU_OK(nb_progress_set_width(h.p, 5));
  update(&h, 0.0, 0, 0, 0, 0);
  update(&h, 1.0, 1, 0, 0, 0);
  char *text = close_progress(&h);
  assert_string_equal(text, "\r[>    ]      0/100000  -- it/s  ETA -:--"
                            "\r[>    ]      1/100000  1.00 it/s  ETA 27:46:39");
  free(text);
}

static void test_log_every_pct(void **state) {
  (void)state;
  harness h;
  open_progress(&h, "epoch 2/2", 100, NB_PROGRESS_LOG);
  TU_OK(nb_progress_set_log_interval(h.p, 25, 0));
  for (int done = 1; done <= 100; done++) update(&h, 0.5 * done, done, 1, done / 100.0, 0);
  h.t = 50.0;
  TU_OK(nb_progress_end(h.p));
  char *text = close_progress(&h);
  assert_string_equal(text, "epoch 2/2   25/100 (25%)  2.00 it/s  ETA 0:38  loss 0.2500\n"
                            "epoch 2/2   50/100 (50%)  2.00 it/s  ETA 0:25  loss 0.5000\n"
                            "epoch 2/2   75/100 (75%)  2.00 it/s  ETA 0:13  loss 0.7500\n"
                            "epoch 2/2  100/100 (100%)  2.00 it/s  time 0:50  loss 1.0000\n");
  free(text);
}

/* Unknown total: no bar, percentage or ETA; a line every 5 s. */
static void test_log_every_seconds(void **state) {
  (void)state;
  harness h;
  open_progress(&h, "eval", 0, NB_PROGRESS_LOG);
  TU_OK(nb_progress_set_log_interval(h.p, 10, 5));
  TU_OK(nb_progress_set_unit(h.p, "img", 32));
  for (int done = 1; done <= 20; done++) update(&h, done, done, 0, 0, 0);
  h.t = 21.0;
  TU_OK(nb_progress_end(h.p));
  char *text = close_progress(&h);
  assert_string_equal(text, "eval  5  32.0 img/s\n"
                            "eval  10  32.0 img/s\n"
                            "eval  15  32.0 img/s\n"
                            "eval  20  32.0 img/s\n"
                            "eval  20  30.5 img/s  time 0:21\n");
  free(text);
}

static void test_off_and_auto(void **state) {
  (void)state;
  harness h;
  open_progress(&h, "x", 10, NB_PROGRESS_OFF);
  update(&h, 1.0, 5, 1, 0.5, 0);
  TU_OK(nb_progress_end(h.p));
  char *text = close_progress(&h);
  assert_string_equal(text, "");
  free(text);
  /* a memory stream has no terminal behind it */
  open_progress(&h, "x", 10, NB_PROGRESS_AUTO);
  assert_int_equal(nb_progress_get_mode(h.p), NB_PROGRESS_LOG);
  free(close_progress(&h));
  nb_progress *p;
  TU_OK(nb_progress_new(NULL, "quiet", 10, NB_PROGRESS_OFF, &p));
  TU_OK(nb_progress_update(p, 3, 0, NULL, NULL));
  TU_OK(nb_progress_end(p));
  nb_progress_free(p);
}

static void test_errors(void **state) {
  (void)state;
  nb_progress *p = (nb_progress *)&p;
  assert_int_equal(nb_progress_new(NULL, "x", 10, NB_PROGRESS_BAR, &p), NB_ERR_INVALID_ARG);
  assert_null(p);
  assert_int_equal(nb_progress_new(stderr, "x", 10, (nb_progress_mode)9, &p), NB_ERR_INVALID_ARG);
  harness h;
  open_progress(&h, "x", 10, NB_PROGRESS_LOG);
  assert_int_equal(nb_progress_set_width(h.p, 0), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_progress_set_unit(h.p, "img", 0), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_progress_set_log_interval(h.p, 150, 1), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_progress_set_clock(h.p, NULL, NULL), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_progress_update(h.p, 11, 0, NULL, NULL), NB_ERR_INVALID_ARG);
  TU_OK(nb_progress_update(h.p, 5, 0, NULL, NULL));
  assert_int_equal(nb_progress_update(h.p, 4, 0, NULL, NULL), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "done = 4"));
  assert_int_equal(nb_progress_update(h.p, 6, 1, NULL, NULL), NB_ERR_INVALID_ARG);
  const char *names[17] = {0};
  double values[17] = {0};
  for (int i = 0; i < 17; i++) names[i] = "m";
  assert_int_equal(nb_progress_update(h.p, 6, 17, names, values), NB_ERR_INVALID_ARG);
  names[0] = NULL;
  assert_int_equal(nb_progress_update(h.p, 6, 1, names, values), NB_ERR_INVALID_ARG);
  TU_OK(nb_progress_end(h.p));
  assert_int_equal(nb_progress_end(h.p), NB_ERR_STATE);
  assert_int_equal(nb_progress_update(h.p, 7, 0, NULL, NULL), NB_ERR_STATE);
  free(close_progress(&h));
  nb_progress_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bar),           cmocka_unit_test(test_bar_unknown_rate_and_hours),
      cmocka_unit_test(test_log_every_pct), cmocka_unit_test(test_log_every_seconds),
      cmocka_unit_test(test_off_and_auto),  cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
