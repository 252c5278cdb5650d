/* Collectives between real processes: run under `mpirun -np N` (N >= 2) by
 * tests/dist/dist_mpi.sh. Every rank runs every test with rank-dependent
 * data and checks the exact result; exit 77 (skipped) without a launcher.
 * The communicator is opened once (MPI can be initialised once). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include "nabla/nabla.h"

static nb_dist *d;

#define OK(x) assert_int_equal((x), NB_OK)

static void test_world(void **state) {
  (void)state;
  assert_true(nb_dist_size(d) >= 2);
  assert_true(nb_dist_rank(d) >= 0 && nb_dist_rank(d) < nb_dist_size(d));
  assert_string_equal(nb_dist_kind(d), "mpi");
  OK(nb_dist_barrier(d));
}

static void test_allreduce(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), n = nb_dist_size(d);
  /* large enough to take MPI's large-message path */
  const int64_t count = 1 << 20;
  float *f = malloc((size_t)count * sizeof *f);
  assert_non_null(f);
  for (int64_t i = 0; i < count; i++) f[i] = (float)(r * 10) + (float)(i % 1000);
  OK(nb_dist_allreduce(d, f, count, NB_F32, NB_DIST_SUM));
  const float ranks10 = (float)(10 * n * (n - 1) / 2); /* sum of r * 10 */
  for (int64_t i = 0; i < count; i++)
    if (f[i] != ranks10 + (float)n * (float)(i % 1000)) fail_msg("element %lld", (long long)i);
  free(f);
  int64_t lo[2] = {r, -r}, hi[2] = {r, -r};
  OK(nb_dist_allreduce(d, lo, 2, NB_I64, NB_DIST_MIN));
  OK(nb_dist_allreduce(d, hi, 2, NB_I64, NB_DIST_MAX));
  assert_true(lo[0] == 0 && lo[1] == -(n - 1) && hi[0] == n - 1 && hi[1] == 0);
  double s[1] = {0.5 + r};
  OK(nb_dist_allreduce_f64(d, s, 1, NB_DIST_SUM));
  assert_true(s[0] == 0.5 * n + (double)n * (n - 1) / 2);
}

static void test_broadcast(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), root = nb_dist_size(d) - 1;
  char buf[64];
  snprintf(buf, sizeof buf, "from rank %d", r);
  OK(nb_dist_broadcast(d, buf, sizeof buf, root));
  char want[64];
  snprintf(want, sizeof want, "from rank %d", root);
  assert_string_equal(buf, want);
}

/* every rank gets the same error when one value differs */
static void test_check_same(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), n = nb_dist_size(d);
  const char *names[2] = {"the batch", "the seed"};
  int64_t same[2] = {32, 7};
  OK(nb_dist_check_same(d, 2, names, same));
  assert_int_equal(nb_dist_failed_together(d), 0);
  int64_t differ[2] = {32, r == n - 1 ? 8 : 7};
  assert_int_equal(nb_dist_check_same(d, 2, names, differ), NB_ERR_STATE);
  assert_non_null(strstr(nb_last_error(), "disagree on the seed (7 on some, 8 on others"));
  assert_int_equal(nb_dist_failed_together(d), 1);
}

/* a failure of one rank reaches all */
static void test_agree(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), n = nb_dist_size(d);
  OK(nb_dist_agree(d, NB_OK));
  nb_status mine = r == n - 1 ? nb_error(NB_ERR_IO, "disk full") : NB_OK;
  nb_status st = nb_dist_agree(d, mine);
  assert_int_not_equal(st, NB_OK);
  char want[64];
  snprintf(want, sizeof want, "rank %d failed", n - 1);
  if (r == n - 1)
    assert_string_equal(nb_last_error(), "disk full");
  else
    assert_non_null(strstr(nb_last_error(), want));
}

/* several reductions in flight, waited in another order */
static void test_nonblocking(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), n = nb_dist_size(d);
  float a[1000], b[300000], c[7];
  for (int i = 0; i < 1000; i++) a[i] = (float)(r + i);
  for (int i = 0; i < 300000; i++) b[i] = (float)(r * 2);
  for (int i = 0; i < 7; i++) c[i] = 1.0f;
  OK(nb_dist_iallreduce_start(d, a, 1000));
  OK(nb_dist_iallreduce_start(d, b, 300000));
  OK(nb_dist_iallreduce_start(d, c, 7));
  assert_int_equal(nb_dist_pending(d), 3);
  nb_dist_progress(d);
  OK(nb_dist_iallreduce_wait(d, c));
  OK(nb_dist_iallreduce_wait(d, a));
  OK(nb_dist_iallreduce_wait(d, b));
  assert_int_equal(nb_dist_pending(d), 0);
  const float rsum = (float)(n * (n - 1) / 2);
  for (int i = 0; i < 1000; i++) assert_true(a[i] == rsum + (float)(n * i));
  for (int i = 0; i < 300000; i++) assert_true(b[i] == 2.0f * rsum);
  for (int i = 0; i < 7; i++) assert_true(c[i] == (float)n);
}

/* the graph op in a compiled plan: the mean over ranks, every run */
static void test_allreduce_mean_op(void **state) {
  (void)state;
  const int r = nb_dist_rank(d), n = nb_dist_size(d);
  nb_backend *be = NULL;
  nb_state *st = NULL;
  OK(nb_backend_new("cpu", &be));
  OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t sa[2] = {4, 4}, sb[1] = {3};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, sa), *b = nb_input(g, "b", NB_F32, 1, sb);
  nb_tensor *xs[2] = {a, b}, *outs[2];
  OK(nb_allreduce_mean(g, d, 2, xs, outs));
  nb_tensor *y0 = nb_mul(g, outs[0], nb_scalar(g, 1.0f)),
            *y1 = nb_mul(g, outs[1], nb_scalar(g, 1.0f));
  nb_tensor_set_output(y0);
  nb_tensor_set_output(y1);
  nb_plan *p = NULL;
  OK(nb_compile(g, be, st, NULL, &p));
  for (int run = 0; run < 3; run++) {
    float av[16], bv[3], g0[16], g1[3];
    for (int i = 0; i < 16; i++) av[i] = (float)(i + run) * (float)(r + 1);
    for (int i = 0; i < 3; i++) bv[i] = (float)(r * 4 + i);
    OK(nb_plan_set_input(p, a, av, sizeof av));
    OK(nb_plan_set_input(p, b, bv, sizeof bv));
    OK(nb_plan_run(p));
    OK(nb_plan_get(p, y0, g0, sizeof g0));
    OK(nb_plan_get(p, y1, g1, sizeof g1));
    /* mean of (r + 1) over ranks = (n + 1) / 2; of 4 r = 2 (n - 1) */
    for (int i = 0; i < 16; i++)
      assert_float_equal(g0[i], (float)(i + run) * (float)(n + 1) / 2.0f, 1e-6 * (i + run + 1));
    for (int i = 0; i < 3; i++) assert_float_equal(g1[i], 2.0f * (float)(n - 1) + (float)i, 1e-6);
  }
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

int main(void) {
  if (!nb_dist_launched()) {
    fprintf(stderr, "test_dist_mpi: not started by mpirun: skipped\n");
    return 77;
  }
  if (nb_dist_init(NB_DIST_MPI, &d)) {
    fprintf(stderr, "test_dist_mpi: %s\n", nb_last_error());
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_world),
      cmocka_unit_test(test_allreduce),
      cmocka_unit_test(test_broadcast),
      cmocka_unit_test(test_check_same),
      cmocka_unit_test(test_agree),
      cmocka_unit_test(test_nonblocking),
      cmocka_unit_test(test_allreduce_mean_op),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  /* a failed rank must not leave the others in a collective */
  if (failed) nb_dist_abort(d, 1, "a test failed");
  nb_dist_free(d);
  return failed;
}
