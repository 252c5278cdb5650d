/* Weight decay limited to parameters with >= 2 axes (nb_adam_options
 * .decay_min_dims, nanoGPT's rule) against torch.optim.AdamW and Adam with
 * two param groups: a matrix decays, a bias and a gain (1-d) do not. With
 * decay_min_dims 0 every parameter decays, as before. */
#include <string.h>

#include "test_util.h"

static void run(const char *name, int decoupled, float b2, int min_dims) {
  tu_ref *ref = tu_ref_load("optim_decay.txt");
  const float *x = tu_ref_get(ref, "data", "x", NULL, NULL, NULL);
  const float *t = tu_ref_get(ref, "data", "t", NULL, NULL, NULL);
  const float *w0 = tu_ref_get(ref, "data", "w0", NULL, NULL, NULL);
  const float *b0 = tu_ref_get(ref, "data", "b0", NULL, NULL, NULL);
  const float *s0 = tu_ref_get(ref, "data", "s0", NULL, NULL, NULL);
  const float *want_w = tu_ref_get(ref, name, "w", NULL, NULL, NULL);
  const float *want_b = tu_ref_get(ref, name, "b", NULL, NULL, NULL);
  const float *want_s = tu_ref_get(ref, name, "s", NULL, NULL, NULL);

  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {8, 3}, ts[2] = {8, 2}, ws[2] = {3, 2}, n2 = 2;
  nb_tensor *xi = nb_input(g, "x", NB_F32, 2, xs);
  nb_tensor *ti = nb_input(g, "t", NB_F32, 2, ts);
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  nb_tensor *w = nb_param(g, "w", 2, ws, zero);
  nb_tensor *b = nb_param(g, "b", 1, &n2, zero);
  nb_tensor *s = nb_param(g, "s", 1, &n2, zero);
  nb_tensor *y = nb_mul(g, nb_add(g, nb_matmul(g, xi, w), b), s);
  nb_tensor *loss = nb_mse_loss(g, y, ti);
  TU_OK(nb_graph_backward(g, loss));
  nb_adam_options o = nb_adam_defaults();
  o.beta2 = b2;
  o.weight_decay = 0.5f;
  o.decoupled = decoupled;
  o.decay_min_dims = min_dims;
  nb_optimizer *opt;
  TU_OK(nb_optimizer_adam_ex(g, &o, &opt));
  assert_int_equal(nb_optimizer_param_count(opt), 3);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_state_write(st, "w", w0, 6 * sizeof(float)));
  TU_OK(nb_state_write(st, "b", b0, 2 * sizeof(float)));
  TU_OK(nb_state_write(st, "s", s0, 2 * sizeof(float)));
  TU_OK(nb_plan_set_input(p, xi, x, 24 * sizeof(float)));
  TU_OK(nb_plan_set_input(p, ti, t, 16 * sizeof(float)));
  for (int step = 1; step <= 5; step++) {
    TU_OK(nb_optimizer_feed(opt, p, step, 0.05f));
    TU_OK(nb_plan_run(p));
    float gw[6], gb[2], gs[2];
    TU_OK(nb_state_read(st, "w", gw, sizeof gw));
    TU_OK(nb_state_read(st, "b", gb, sizeof gb));
    TU_OK(nb_state_read(st, "s", gs, sizeof gs));
    char what[64];
    snprintf(what, sizeof what, "%s w step %d", name, step);
    tu_assert_close(what, gw, want_w + (step - 1) * 6, 6, 1e-6, 1e-5);
    snprintf(what, sizeof what, "%s b step %d", name, step);
    tu_assert_close(what, gb, want_b + (step - 1) * 2, 2, 1e-6, 1e-5);
    snprintf(what, sizeof what, "%s s step %d", name, step);
    tu_assert_close(what, gs, want_s + (step - 1) * 2, 2, 1e-6, 1e-5);
  }
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  tu_ref_free(ref);
}

static void test_adamw_decays_only_matrices(void **s) {
  (void)s;
  run("adamw_2d", 1, 0.95f, 2);
}

static void test_adam_l2_decays_only_matrices(void **s) {
  (void)s;
  run("adam_l2_2d", 0, 0.999f, 2);
}

static void test_adamw_decays_everything_by_default(void **s) {
  (void)s;
  run("adamw_all", 1, 0.95f, 0);
}

static void test_bad_options(void **s) {
  (void)s;
  nb_graph *g = nb_graph_new();
  nb_optimizer *opt = NULL;
  nb_adam_options o = nb_adam_defaults();
  o.decay_min_dims = -1;
  assert_int_equal(nb_optimizer_adam_ex(g, &o, &opt), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "decay_min_dims"));
  assert_int_equal(nb_optimizer_adam_ex(g, NULL, &opt), NB_ERR_INVALID_ARG);
  assert_null(opt);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_adamw_decays_only_matrices),
      cmocka_unit_test(test_adam_l2_decays_only_matrices),
      cmocka_unit_test(test_adamw_decays_everything_by_default),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
