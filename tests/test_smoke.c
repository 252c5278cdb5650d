/* End-to-end smoke test of the core: build, differentiate, compile, run. */
#include "test_util.h"

static nb_tensor *build_mlp(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_tensor *h = nb_relu(g, nb_add(g, nb_matmul(g, x[0], x[1]), x[2]));
  return nb_sum(g, nb_mul(g, h, h), 1, (int[]){1}, 0);
}

static void test_mlp_grad(void **state) {
  (void)state;
  tu_input in[3] = {
      {.ndim = 2, .shape = {4, 3}, .lo = -1, .hi = 1, .seed = 1, .requires_grad = 1},
      {.ndim = 2, .shape = {3, 5}, .lo = -1, .hi = 1, .seed = 2, .requires_grad = 1},
      {.ndim = 1, .shape = {5}, .lo = -1, .hi = 1, .seed = 3, .requires_grad = 1},
  };
  tu_gradcheck("mlp", build_mlp, NULL, 3, in, 1e-3, 1e-3, 1e-2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_grad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
