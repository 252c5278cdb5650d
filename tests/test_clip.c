/* nb_clip_grad_norm against torch.nn.utils.clip_grad_norm_: the global norm
 * and the clipped gradients when clipping (max_norm 0.5) and not (100), three
 * SGD-with-momentum steps on clipped gradients (tests/ref/clip_ref.py), and
 * the argument / order checks. */
#include <string.h>

#include "test_util.h"

typedef struct {
  nb_graph *g;
  nb_tensor *x, *t, *w1, *b1, *w2, *loss;
} mlp;

/* relu(x @ w1 + b1) @ w2, MSE against t: the model of clip_ref.py. */
static void build(mlp *m) {
  m->g = nb_graph_new();
  int64_t xs[2] = {6, 3}, ts[2] = {6, 2}, w1s[2] = {3, 4}, b1s[1] = {4}, w2s[2] = {4, 2};
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  m->x = nb_input(m->g, "x", NB_F32, 2, xs);
  m->t = nb_input(m->g, "t", NB_F32, 2, ts);
  m->w1 = nb_param(m->g, "w1", 2, w1s, zero);
  m->b1 = nb_param(m->g, "b1", 1, b1s, zero);
  m->w2 = nb_param(m->g, "w2", 2, w2s, zero);
  nb_tensor *h = nb_relu(m->g, nb_add(m->g, nb_matmul(m->g, m->x, m->w1), m->b1));
  m->loss = nb_mse_loss(m->g, nb_matmul(m->g, h, m->w2), m->t);
  TU_OK(nb_graph_status(m->g));
  TU_OK(nb_graph_backward(m->g, m->loss));
}

/* Compiles, loads the reference data into the state and the inputs. */
static void compile(mlp *m, const tu_ref *ref, nb_backend **be, nb_state **st, nb_plan **p) {
  TU_OK(nb_backend_new("cpu", be));
  TU_OK(nb_state_new(*be, st));
  TU_OK(nb_compile(m->g, *be, *st, NULL, p));
  const char *vars[3] = {"w1", "b1", "w2"};
  for (int i = 0; i < 3; i++) {
    int64_t n;
    const float *v = tu_ref_get(ref, "data", vars[i], NULL, NULL, &n);
    TU_OK(nb_state_write(*st, vars[i], v, (size_t)n * sizeof(float)));
  }
  TU_OK(nb_plan_set_input(*p, m->x, tu_ref_get(ref, "data", "x", NULL, NULL, NULL),
                          18 * sizeof(float)));
  TU_OK(nb_plan_set_input(*p, m->t, tu_ref_get(ref, "data", "t", NULL, NULL, NULL),
                          12 * sizeof(float)));
}

static void check_clipped(const char *case_name, float max_norm) {
  tu_ref *ref = tu_ref_load("clip.txt");
  mlp m;
  build(&m);
  nb_tensor *raw = nb_graph_grad(m.g, m.w1), *norm;
  TU_OK(nb_clip_grad_norm(m.g, max_norm, &norm));
  assert_non_null(norm);
  assert_int_equal(nb_tensor_ndim(norm), 0);
  nb_tensor *grads[3] = {nb_graph_grad(m.g, m.w1), nb_graph_grad(m.g, m.b1),
                         nb_graph_grad(m.g, m.w2)};
  assert_ptr_not_equal(grads[0], raw); /* the gradient node was replaced */
  nb_tensor_set_output(norm);
  for (int i = 0; i < 3; i++) nb_tensor_set_output(grads[i]);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  compile(&m, ref, &be, &st, &p);
  TU_OK(nb_plan_run(p));
  float got_norm;
  TU_OK(nb_plan_get(p, norm, &got_norm, sizeof got_norm));
  char what[64];
  snprintf(what, sizeof what, "%s norm", case_name);
  tu_assert_close(what, &got_norm, tu_ref_get(ref, case_name, "norm", NULL, NULL, NULL), 1, 0,
                  1e-5);
  const char *names[3] = {"g_w1", "g_b1", "g_w2"};
  for (int i = 0; i < 3; i++) {
    int64_t n;
    const float *want = tu_ref_get(ref, case_name, names[i], NULL, NULL, &n);
    float got[16];
    TU_OK(nb_plan_get(p, grads[i], got, (size_t)n * sizeof(float)));
    snprintf(what, sizeof what, "%s %s", case_name, names[i]);
    tu_assert_close(what, got, want, (size_t)n, 1e-6, 1e-5);
  }
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(m.g);
  tu_ref_free(ref);
}

static void test_clipping(void **s) {
  (void)s;
  check_clipped("clip", 0.5f);
}

static void test_not_clipping(void **s) {
  (void)s;
  check_clipped("noclip", 100.0f);
}

/* Clip, then SGD with momentum: the optimizer must read the clipped
 * gradients, and the norm is recomputed every step. */
static void test_sgd_on_clipped(void **s) {
  (void)s;
  tu_ref *ref = tu_ref_load("clip.txt");
  mlp m;
  build(&m);
  nb_tensor *norm;
  TU_OK(nb_clip_grad_norm(m.g, 0.5f, &norm));
  nb_tensor_set_output(norm);
  nb_optimizer *opt;
  TU_OK(nb_optimizer_sgd(m.g, 0.9f, 0.0f, 0, &opt));
  assert_int_equal(nb_optimizer_param_count(opt), 3);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  compile(&m, ref, &be, &st, &p);
  const float *want_norm = tu_ref_get(ref, "sgd", "norm", NULL, NULL, NULL);
  const char *vars[3] = {"w1", "b1", "w2"};
  const int sizes[3] = {12, 4, 8};
  for (int step = 1; step <= 3; step++) {
    TU_OK(nb_optimizer_feed(opt, p, step, 0.1f));
    TU_OK(nb_plan_run(p));
    char what[64];
    float got_norm;
    TU_OK(nb_plan_get(p, norm, &got_norm, sizeof got_norm));
    snprintf(what, sizeof what, "sgd step %d norm", step);
    tu_assert_close(what, &got_norm, want_norm + step - 1, 1, 0, 1e-5);
    for (int i = 0; i < 3; i++) {
      float got[16];
      TU_OK(nb_state_read(st, vars[i], got, (size_t)sizes[i] * sizeof(float)));
      const float *want = tu_ref_get(ref, "sgd", vars[i], NULL, NULL, NULL);
      snprintf(what, sizeof what, "sgd step %d %s", step, vars[i]);
      tu_assert_close(what, got, want + (step - 1) * sizes[i], (size_t)sizes[i], 1e-6, 1e-5);
    }
  }
  nb_optimizer_free(opt);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(m.g);
  tu_ref_free(ref);
}

static void test_errors(void **s) {
  (void)s;
  nb_tensor *norm = (nb_tensor *)&norm; /* must be reset to NULL on error */
  assert_int_equal(nb_clip_grad_norm(NULL, 1.0f, &norm), NB_ERR_INVALID_ARG);
  assert_null(norm);
  mlp m;
  build(&m);
  nb_tensor *before = nb_graph_grad(m.g, m.w1);
  assert_int_equal(nb_clip_grad_norm(m.g, 0.0f, &norm), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "max_norm"));
  assert_int_equal(nb_clip_grad_norm(m.g, -1.0f, NULL), NB_ERR_INVALID_ARG);
  assert_ptr_equal(nb_graph_grad(m.g, m.w1), before); /* untouched */
  nb_graph_free(m.g);

  /* before backward: no gradients to clip */
  nb_graph *g = nb_graph_new();
  int64_t sh[1] = {3};
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  nb_param(g, "w", 1, sh, zero);
  assert_int_equal(nb_clip_grad_norm(g, 1.0f, &norm), NB_ERR_STATE);
  assert_non_null(strstr(nb_last_error(), "nb_graph_backward"));
  assert_null(norm);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_clipping),
      cmocka_unit_test(test_not_clipping),
      cmocka_unit_test(test_sgd_on_clipped),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
