/* Learning-rate schedules against torch.optim.lr_scheduler: every update's lr
 * for StepLR, CosineAnnealingLR, OneCycleLR (defaults, options, three
 * phases, the MNIST example's 1874 updates) and LinearLR + cosine warm-up,
 * dumped by tests/ref/schedule_ref.py; plus the behaviour past the end and
 * argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* Compares nb_schedule_lr(s, 1..n) with the reference case `name`. */
static void check_case(const tu_ref *ref, const char *name, const nb_schedule *s) {
  TU_OK(nb_schedule_check(s));
  int64_t n;
  const float *want = tu_ref_get(ref, name, "lr", NULL, NULL, &n);
  float *got = malloc((size_t)n * sizeof *got);
  for (int64_t t = 1; t <= n; t++) got[t - 1] = (float)nb_schedule_lr(s, t);
  /* the reference is float32: one rounding of the value (6e-8 relative) */
  tu_assert_close(name, got, want, (size_t)n, 1e-12, 2e-7);
  free(got);
}

static void test_against_torch(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("schedule.txt");
  nb_schedule s = nb_schedule_constant(0.01);
  check_case(ref, "constant", &s);
  s = nb_schedule_step(0.1, 7, 0.5);
  check_case(ref, "step", &s);
  s = nb_schedule_cosine(0.1, 0.001, 50);
  check_case(ref, "cosine", &s);
  s = nb_schedule_cosine(0.5, 0.0, 10);
  check_case(ref, "cosine_zero", &s);
  s = nb_schedule_one_cycle(3e-3, 100);
  check_case(ref, "one_cycle", &s);
  s = nb_schedule_one_cycle(3e-3, 1874);
  check_case(ref, "one_cycle_mnist", &s);
  s = nb_schedule_one_cycle(0.1, 57);
  s.pct_start = 0.25;
  s.div_factor = 10;
  s.final_div_factor = 100;
  s.anneal_linear = 1;
  check_case(ref, "one_cycle_options", &s);
  s = nb_schedule_one_cycle(0.1, 40);
  s.three_phase = 1;
  check_case(ref, "one_cycle_three_phase", &s);
  s = nb_schedule_warmup_cosine(1e-3, 1e-5, 10, 100);
  check_case(ref, "warmup_cosine", &s);
  s = nb_schedule_warmup_cosine(0.2, 0.0, 2, 7);
  check_case(ref, "warmup_cosine_short", &s);
  tu_ref_free(ref);
}

/* Past the end every decaying schedule holds its final value (torch's cosine
 * would rise again and OneCycleLR would raise); step numbers below 1 count as
 * the first update. */
static void test_past_the_end(void **state) {
  (void)state;
  nb_schedule s = nb_schedule_cosine(0.1, 0.001, 50);
  assert_true(nb_schedule_lr(&s, 51) == 0.001);
  assert_true(nb_schedule_lr(&s, 52) == 0.001);
  assert_true(nb_schedule_lr(&s, 1000) == 0.001);
  assert_true(nb_schedule_lr(&s, 0) == 0.1);
  assert_true(nb_schedule_lr(&s, -5) == 0.1);
  s = nb_schedule_one_cycle(3e-3, 100);
  double last = nb_schedule_lr(&s, 100);
  assert_true(fabs(last - 3e-3 / 25 / 1e4) < 1e-18);
  assert_true(nb_schedule_lr(&s, 101) == last);
  assert_true(nb_schedule_lr(&s, 100000) == last);
  s = nb_schedule_warmup_cosine(1e-3, 1e-5, 10, 100);
  assert_true(nb_schedule_lr(&s, 10) == 1e-3); /* the peak is reached at warmup_steps */
  assert_true(nb_schedule_lr(&s, 100) == 1e-5);
  assert_true(nb_schedule_lr(&s, 500) == 1e-5);
  s = nb_schedule_step(1.0, 2, 0.5);
  assert_true(nb_schedule_lr(&s, 2) == 1.0);
  assert_true(nb_schedule_lr(&s, 3) == 0.5);
  assert_true(nb_schedule_lr(&s, 41) == ldexp(1.0, -20));
  /* degenerate phases: pct_start * total == 1 makes torch divide by zero */
  s = nb_schedule_one_cycle(1.0, 10);
  s.pct_start = 0.1;
  assert_true(nb_schedule_lr(&s, 1) == 1.0);
  s = nb_schedule_one_cycle(1.0, 1);
  assert_true(isfinite(nb_schedule_lr(&s, 1)));
}

static void expect_invalid(const nb_schedule *s, const char *needle) {
  assert_int_equal(nb_schedule_check(s), NB_ERR_INVALID_ARG);
  if (!strstr(nb_last_error(), needle))
    fail_msg("message '%s' lacks '%s'", nb_last_error(), needle);
  nb_clear_error();
  assert_true(isnan(nb_schedule_lr(s, 1)));
  assert_string_equal(nb_last_error(), ""); /* nb_schedule_lr leaves the message alone */
}

static void test_invalid(void **state) {
  (void)state;
  assert_int_equal(nb_schedule_check(NULL), NB_ERR_INVALID_ARG);
  assert_true(isnan(nb_schedule_lr(NULL, 1)));
  nb_schedule s = nb_schedule_constant(0.0);
  expect_invalid(&s, "lr must be");
  s = nb_schedule_constant(NAN);
  expect_invalid(&s, "lr must be");
  s = nb_schedule_step(0.1, 0, 0.5);
  expect_invalid(&s, "step_size");
  s = nb_schedule_step(0.1, 3, 0.0);
  expect_invalid(&s, "gamma");
  s = nb_schedule_cosine(0.1, 0.2, 10);
  expect_invalid(&s, "min_lr");
  s = nb_schedule_cosine(0.1, 0.0, 0);
  expect_invalid(&s, "total_steps");
  s = nb_schedule_warmup_cosine(0.1, 0.0, 10, 10);
  expect_invalid(&s, "warmup_steps");
  s = nb_schedule_one_cycle(0.1, 0);
  expect_invalid(&s, "total_steps");
  s = nb_schedule_one_cycle(0.1, 100);
  s.pct_start = 1.5;
  expect_invalid(&s, "pct_start");
  s = nb_schedule_one_cycle(0.1, 100);
  s.div_factor = 0;
  expect_invalid(&s, "div_factor");
  s.kind = (nb_schedule_kind)42;
  expect_invalid(&s, "unknown kind");
}

static void test_describe(void **state) {
  (void)state;
  char buf[256];
  nb_schedule s = nb_schedule_one_cycle(3e-3, 1874);
  assert_string_equal(nb_schedule_describe(&s, buf, sizeof buf),
                      "one-cycle max_lr 0.003 over 1874 updates (pct_start 0.3, div_factor 25, "
                      "final_div_factor 10000)");
  s = nb_schedule_step(0.1, 7, 0.5);
  assert_string_equal(nb_schedule_describe(&s, buf, sizeof buf),
                      "step lr 0.1, x0.5 every 7 updates");
  s = nb_schedule_warmup_cosine(1e-3, 1e-5, 10, 100);
  assert_string_equal(nb_schedule_describe(&s, buf, sizeof buf),
                      "warm-up 10 updates to lr 0.001, cosine -> 1e-05 at update 100");
  assert_string_equal(nb_schedule_describe(&s, buf, 8), "warm-up");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_torch),
      cmocka_unit_test(test_past_the_end),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_describe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
