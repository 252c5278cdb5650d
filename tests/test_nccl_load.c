/* What of the NCCL path runs without a GPU: loading NCCL at run time
 * (src/dist/nccl_load.c) from a stand-in library (tests/dist/fake_nccl.c)
 * and from a missing one, the symbol table it fills, its error messages;
 * the one-process distributed mode NB_DIST_SELF that puts the gradient
 * reduction into a step without MPI; and the CUDA column of the op table.
 * The reductions on a GPU are tests/gpu/test_gpu_nccl.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "../src/dist/nccl_api.h"
#include "test_util.h"

#ifndef NB_FAKE_NCCL
#error "NB_FAKE_NCCL: path of the stand-in library (tests/CMakeLists.txt)"
#endif

static void test_version_strings(void **state) {
  (void)state;
  char v[32];
  nb_nccl_version_string(22809, v, sizeof v);
  assert_string_equal(v, "2.28.9");
  nb_nccl_version_string(21903, v, sizeof v);
  assert_string_equal(v, "2.19.3");
  nb_nccl_version_string(2708, v, sizeof v); /* the encoding up to 2.8 */
  assert_string_equal(v, "2.7.8");
}

static void test_missing_library(void **state) {
  (void)state;
  nb_nccl_api api;
  nb_status st = nb_nccl_open("/nonexistent/libnccl.so.2", &api);
  assert_int_equal(st, NB_ERR_UNSUPPORTED);
  const char *msg = nb_last_error();
  assert_non_null(strstr(msg, "NCCL not found"));
  assert_non_null(strstr(msg, "NABLA_NCCL_LIBRARY=/nonexistent/libnccl.so.2"));
  assert_null(api.handle);
  assert_null(api.all_reduce);
  /* the process-wide library fails the same way, and is not stuck on it */
  setenv("NABLA_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  const nb_nccl_api *lib = (const nb_nccl_api *)&api;
  assert_int_equal(nb_nccl_get(&lib), NB_ERR_UNSUPPORTED);
  assert_null(lib);
  assert_non_null(strstr(nb_last_error(), "NCCL not found"));
  char v[600];
  assert_int_equal(nb_dist_nccl_version(v, sizeof v), NB_ERR_UNSUPPORTED);
  assert_string_equal(v, "");
  setenv("NABLA_NCCL_LIBRARY", NB_FAKE_NCCL, 1);
  TU_OK(nb_nccl_get(&lib));
  assert_int_equal(lib->version, 22809);
  assert_string_equal(lib->path, NB_FAKE_NCCL);
  /* what `nabla --version` prints */
  TU_OK(nb_dist_nccl_version(v, sizeof v));
  assert_string_equal(v, "2.28.9 (" NB_FAKE_NCCL ")");
  unsetenv("NABLA_NCCL_LIBRARY");
}

static void test_symbol_table(void **state) {
  (void)state;
  nb_nccl_api api;
  TU_OK(nb_nccl_open(NB_FAKE_NCCL, &api));
  assert_non_null(api.handle);
  assert_int_equal(api.version, 22809);
  /* every function resolved, the optional one too */
  assert_non_null(api.get_unique_id);
  assert_non_null(api.comm_init_rank);
  assert_non_null(api.comm_destroy);
  assert_non_null(api.comm_abort);
  assert_non_null(api.comm_get_async_error);
  assert_non_null(api.all_reduce);
  assert_non_null(api.get_error_string);
  assert_non_null(api.get_last_error);
  /* the calls go through with NCCL's calling convention: a 128-byte id by
   * value, int enums (the stand-in refuses anything but in-place f32 sum) */
  nb_nccl_unique_id id;
  memset(&id, 0, sizeof id);
  assert_int_equal(api.get_unique_id(&id), NB_NCCL_SUCCESS);
  assert_int_equal((unsigned char)id.internal[127], 0x5a);
  nb_nccl_comm comm = NULL;
  assert_int_equal(api.comm_init_rank(&comm, 1, id, 0), NB_NCCL_SUCCESS);
  assert_non_null(comm);
  float buf[4] = {1, 2, 3, 4};
  assert_int_equal(api.all_reduce(buf, buf, 4, NB_NCCL_FLOAT32, NB_NCCL_SUM, comm, NULL),
                   NB_NCCL_SUCCESS);
  nb_nccl_result rc = api.all_reduce(buf, buf + 1, 3, NB_NCCL_FLOAT32, NB_NCCL_SUM, comm, NULL);
  assert_int_equal(rc, 4);
  nb_nccl_result async = -1;
  assert_int_equal(api.comm_get_async_error(comm, &async), NB_NCCL_SUCCESS);
  assert_int_equal(async, NB_NCCL_SUCCESS);
  /* an NCCL failure as a status: what, NCCL's string, its last error */
  assert_int_equal(nb_nccl_error(&api, rc, comm, "cuda:0: ncclAllReduce of bucket %d", 3),
                   NB_ERR_INVALID_ARG);
  assert_string_equal(nb_last_error(), "cuda:0: ncclAllReduce of bucket 3 failed: NCCL error 4: "
                                       "invalid argument (fake); fake detail");
  assert_int_equal(api.comm_destroy(comm), NB_NCCL_SUCCESS);
  nb_nccl_close(&api);
  assert_null(api.handle);
}

static void test_incomplete_library(void **state) {
  (void)state;
  nb_nccl_api api;
  nb_status st = nb_nccl_open(NB_FAKE_NCCL_PARTIAL, &api);
  assert_int_equal(st, NB_ERR_UNSUPPORTED);
  assert_non_null(strstr(nb_last_error(), "has no ncclAllReduce"));
  assert_non_null(strstr(nb_last_error(), NB_FAKE_NCCL_PARTIAL));
  assert_null(api.handle);
}

/* The one-process world: the step averages its gradients (so the
 * reduction ops run, NCCL's on CUDA), unlike a plain single process. */
static int count_op(const nb_graph *g, const char *op) {
  int n = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++)
    n += !strcmp(nb_tensor_op_name(nb_graph_node(g, i)), op);
  return n;
}

static int starts_in_step(nb_dist *d) {
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {4, 5}, ys[1] = {4};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "y", NB_I64, 1, ys);
  nb_nn nn = {.g = g, .training = 1, .seed = 1};
  nb_tensor *loss = nb_cross_entropy(g, nb_nn_linear(&nn, "fc", x, 3, 1), y, 0.0f);
  nb_recipe r = nb_recipe_defaults();
  nb_optimizer *opt = NULL;
  TU_OK(nb_recipe_update_dist(&r, g, loss, d, NULL, &opt));
  int n = count_op(g, "allreduce_start");
  assert_int_equal(count_op(g, "allreduce_wait"), n);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  return n;
}

static void test_self_mode(void **state) {
  (void)state;
  if (nb_dist_launched()) skip(); /* run by hand under mpirun */
  nb_dist *d = NULL;
  TU_OK(nb_dist_init(NB_DIST_SELF, &d));
  assert_int_equal(nb_dist_rank(d), 0);
  assert_int_equal(nb_dist_size(d), 1);
  assert_string_equal(nb_dist_kind(d), "self");
  assert_int_equal(nb_dist_averages_grads(d), 1);
  assert_int_equal(starts_in_step(d), 1); /* fc.weight and fc.bias: one bucket */
  nb_dist_free(d);
  TU_OK(nb_dist_init(NB_DIST_SINGLE, &d));
  assert_int_equal(nb_dist_averages_grads(d), 0);
  assert_int_equal(starts_in_step(d), 0);
  nb_dist_free(d);
  assert_int_equal(nb_dist_averages_grads(NULL), 0);
  assert_int_equal(starts_in_step(NULL), 0);
  /* started as one of several processes, a one-process world is refused */
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  assert_int_equal(nb_dist_init(NB_DIST_SELF, &d), NB_ERR_STATE);
  assert_null(d);
  assert_non_null(strstr(nb_last_error(), "OMPI_COMM_WORLD_SIZE"));
  unsetenv("OMPI_COMM_WORLD_SIZE");
  assert_int_equal(nb_dist_init((nb_dist_mode)(NB_DIST_SELF + 1), &d), NB_ERR_INVALID_ARG);
}

/* Every build lists the CUDA kernels of the reduction ops (docs/ops.md). */
static void test_cuda_column(void **state) {
  (void)state;
  assert_true(nb_backend_kind_supports_op("cuda", "allreduce_start"));
  assert_true(nb_backend_kind_supports_op("cuda", "allreduce_wait"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version_strings), cmocka_unit_test(test_missing_library),
      cmocka_unit_test(test_symbol_table),    cmocka_unit_test(test_incomplete_library),
      cmocka_unit_test(test_self_mode),       cmocka_unit_test(test_cuda_column),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
