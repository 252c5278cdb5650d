/* Optimizers against PyTorch: 5 steps of SGD (plain, momentum + weight decay,
 * Nesterov), Adam (with and without L2) and AdamW on a least-squares problem
 * must follow torch.optim's parameter trajectory. */
#include <string.h>

#include "test_util.h"

typedef struct {
  const char *name;
  int adam;
  float lr, b1, b2, wd;
  int flag; /* Nesterov for SGD, decoupled for Adam */
} config;

static void run(const config *c) {
  tu_ref *ref = tu_ref_load("optim.txt");
  const float *x = tu_ref_get(ref, "data", "x", NULL, NULL, NULL);
  const float *t = tu_ref_get(ref, "data", "t", NULL, NULL, NULL);
  const float *w0 = tu_ref_get(ref, "data", "w0", NULL, NULL, NULL);
  const float *want = tu_ref_get(ref, c->name, "w", NULL, NULL, NULL);

  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {8, 3}, ts[2] = {8, 2}, ws[2] = {3, 2};
  nb_tensor *xi = nb_input(g, "x", NB_F32, 2, xs);
  nb_tensor *ti = nb_input(g, "t", NB_F32, 2, ts);
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  nb_tensor *w = nb_param(g, "w", 2, ws, zero);
  nb_tensor *loss = nb_mse_loss(g, nb_matmul(g, xi, w), ti);
  TU_OK(nb_graph_backward(g, loss));
  nb_optimizer *opt;
  if (c->adam)
    TU_OK(nb_optimizer_adam(g, c->b1, c->b2, 1e-8f, c->wd, c->flag, &opt));
  else
    TU_OK(nb_optimizer_sgd(g, c->b1, c->wd, c->flag, &opt));
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_state_write(st, "w", w0, 6 * sizeof(float)));
  TU_OK(nb_plan_set_input(p, xi, x, 24 * sizeof(float)));
  TU_OK(nb_plan_set_input(p, ti, t, 16 * sizeof(float)));
  for (int step = 1; step <= 5; step++) {
    TU_OK(nb_optimizer_feed(opt, p, step, c->lr));
    TU_OK(nb_plan_run(p));
    float got[6];
    TU_OK(nb_state_read(st, "w", got, sizeof got));
    char what[64];
    snprintf(what, sizeof what, "%s step %d", c->name, step);
    tu_assert_close(what, got, want + (step - 1) * 6, 6, 1e-6, 1e-5);
  }
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  tu_ref_free(ref);
}

static void test_sgd(void **s) {
  (void)s;
  config c = {"sgd", 0, 0.1f, 0, 0, 0, 0};
  run(&c);
}
static void test_sgd_momentum_wd(void **s) {
  (void)s;
  config c = {"sgd_momentum_wd", 0, 0.1f, 0.9f, 0, 0.01f, 0};
  run(&c);
}
static void test_sgd_nesterov(void **s) {
  (void)s;
  config c = {"sgd_nesterov", 0, 0.1f, 0.9f, 0, 0, 1};
  run(&c);
}
static void test_adam(void **s) {
  (void)s;
  config c = {"adam", 1, 0.01f, 0.9f, 0.999f, 0, 0};
  run(&c);
}
static void test_adam_l2(void **s) {
  (void)s;
  config c = {"adam_l2", 1, 0.01f, 0.9f, 0.999f, 0.1f, 0};
  run(&c);
}
static void test_adamw(void **s) {
  (void)s;
  config c = {"adamw", 1, 0.01f, 0.9f, 0.95f, 0.1f, 1};
  run(&c);
}

static void test_bad_hyperparameters(void **s) {
  (void)s;
  nb_graph *g = nb_graph_new();
  nb_optimizer *o = NULL;
  assert_int_not_equal(nb_optimizer_adam(g, 1.5f, 0.999f, 1e-8f, 0, 0, &o), NB_OK);
  assert_non_null(strstr(nb_last_error(), "beta1"));
  assert_int_not_equal(nb_optimizer_sgd(g, 0.0f, 0.0f, 1, &o), NB_OK);
  assert_int_not_equal(nb_optimizer_sgd(NULL, 0.9f, 0.0f, 0, &o), NB_OK);
  assert_null(o);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd),
      cmocka_unit_test(test_sgd_momentum_wd),
      cmocka_unit_test(test_sgd_nesterov),
      cmocka_unit_test(test_adam),
      cmocka_unit_test(test_adam_l2),
      cmocka_unit_test(test_adamw),
      cmocka_unit_test(test_bad_hyperparameters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
