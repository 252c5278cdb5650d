/* Backend questions that need no GPU: which ops each kind of device runs
 * (the table behind `nabla ops`), the allocator statistics call, and what
 * opening cuda:0 says on a machine or build without one. The CUDA kernels
 * themselves are checked by tests/gpu/ on a GPU. */
#include <string.h>

#include "test_util.h"

static void test_kind_supports_op(void **state) {
  (void)state;
  /* kernels of both backends */
  assert_int_equal(nb_backend_kind_supports_op("cpu", "conv2d"), 1);
  assert_int_equal(nb_backend_kind_supports_op("cuda", "conv2d"), 1);
  assert_int_equal(nb_backend_kind_supports_op("cuda", "add"), 1);
  assert_int_equal(nb_backend_kind_supports_op("cuda", "attention_backward"), 1);
  assert_int_equal(nb_backend_kind_supports_op("cuda", "assign"), 1);
  /* leaves and views are storage, not kernels */
  assert_int_equal(nb_backend_kind_supports_op("cuda", "input"), 1);
  assert_int_equal(nb_backend_kind_supports_op("cuda", "permute"), 1);
  /* unknown ops and kinds, NULL */
  assert_int_equal(nb_backend_kind_supports_op("cuda", "no_such_op"), 0);
  assert_int_equal(nb_backend_kind_supports_op("tpu", "add"), 0);
  assert_int_equal(nb_backend_kind_supports_op(NULL, "add"), 0);
  assert_int_equal(nb_backend_kind_supports_op("cpu", NULL), 0);
  /* the kind answer agrees with an opened CPU backend for every kernel op */
  nb_backend *cpu;
  TU_OK(nb_backend_new("cpu", &cpu));
  for (int i = 0; i < nb_op_count(); i++) {
    nb_op_info info = nb_op_get_info(i);
    if (info.composite || !strcmp(info.fusion, "leaf") || !strcmp(info.fusion, "view")) continue;
    assert_int_equal(nb_backend_kind_supports_op("cpu", info.name),
                     nb_backend_supports_op(cpu, info.name));
  }
  nb_backend_free(cpu);
}

static void test_memory_stats(void **state) {
  (void)state;
  nb_backend *cpu;
  nb_memory_stats ms;
  TU_OK(nb_backend_new("cpu", &cpu));
  /* the CPU backend uses the C heap: no allocator of its own to report */
  assert_int_equal(nb_backend_memory_stats(cpu, &ms), NB_ERR_UNSUPPORTED);
  assert_non_null(strstr(nb_last_error(), "cpu:0"));
  assert_int_equal(nb_backend_memory_stats(cpu, NULL), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_backend_memory_stats(NULL, &ms), NB_ERR_INVALID_ARG);
  nb_backend_free(cpu);
}

/* With a GPU this opens it; without one (or without CUDA in the build) it
 * is NB_ERR_UNSUPPORTED with a message saying which. */
static void test_open_cuda(void **state) {
  (void)state;
  nb_backend *gpu = NULL;
  nb_status st = nb_backend_new("cuda:0", &gpu);
  if (st == NB_OK) {
    assert_string_equal(nb_backend_name(gpu), "cuda:0");
    nb_backend_free(gpu);
    return;
  }
  assert_int_equal(st, NB_ERR_UNSUPPORTED);
  assert_null(gpu);
  const char *m = nb_last_error();
  assert_true(strstr(m, "no CUDA backend") || strstr(m, "no CUDA GPU"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kind_supports_op),
      cmocka_unit_test(test_memory_stats),
      cmocka_unit_test(test_open_cuda),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
