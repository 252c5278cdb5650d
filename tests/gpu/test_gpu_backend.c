/* GPU checks of the CUDA backend. Without a GPU (or a CUDA build) the test
 * exits with 77, which ctest reports as skipped, so CI shows the count. */
#include <stdio.h>
#include <string.h>

#include "gpu_check.h"
#include "nabla/nabla.h"

/* Variables round-trip through device memory bit for bit. */
static void check_state_roundtrip(nb_backend *gpu) {
  nb_state *st;
  EXPECT(nb_state_new(gpu, &st) == NB_OK, "nb_state_new: %s", nb_last_error());
  nb_graph *g = nb_graph_new();
  int64_t shape[1] = {1000};
  nb_init init = {NB_INIT_NORMAL, 0.0f, 1.0f, 3};
  nb_tensor *v = nb_variable(g, "v", NB_F32, 1, shape, init);
  nb_tensor_set_output(v);
  nb_plan *p = NULL;
  nb_status s = nb_compile(g, gpu, st, NULL, &p);
  EXPECT(s == NB_OK, "compile of a variable-only graph: %s", nb_last_error());
  float in[1000], out[1000];
  for (int i = 0; i < 1000; i++) in[i] = (float)i * 0.5f - 7.0f;
  EXPECT(nb_state_write(st, "v", in, sizeof in) == NB_OK, "write: %s", nb_last_error());
  EXPECT(nb_state_read(st, "v", out, sizeof out) == NB_OK, "read: %s", nb_last_error());
  EXPECT(!memcmp(in, out, sizeof in), "device round trip changed the data");
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
}

/* A bad index found by a kernel comes back, with the op, value and
 * position, from the next download; the next run without one is clean. */
static void check_index_fault(nb_backend *gpu) {
  nb_state *st;
  EXPECT(nb_state_new(gpu, &st) == NB_OK, "nb_state_new: %s", nb_last_error());
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {5, 3}, is = 4;
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *idx = nb_input(g, "idx", NB_I64, 1, &is);
  nb_tensor *y = nb_index_select(g, x, 0, idx);
  nb_tensor_set_output(y);
  nb_plan *p = NULL;
  EXPECT(nb_compile(g, gpu, st, NULL, &p) == NB_OK, "compile: %s", nb_last_error());
  float xv[15], yv[12];
  for (int i = 0; i < 15; i++) xv[i] = (float)i;
  int64_t bad[4] = {0, 4, 7, 1}, good[4] = {4, 0, 2, 2};
  nb_status s = p ? nb_plan_set_input(p, x, xv, sizeof xv) : NB_ERR_STATE;
  if (!s) s = nb_plan_set_input(p, idx, bad, sizeof bad);
  if (!s) s = nb_plan_run(p);
  if (!s) s = nb_plan_get(p, y, yv, sizeof yv);
  EXPECT(s == NB_ERR_INVALID_ARG && strstr(nb_last_error(), "index 7 at position 2"),
         "bad index: status %d, message '%s'", (int)s, nb_last_error());
  s = p ? nb_plan_set_input(p, idx, good, sizeof good) : NB_ERR_STATE;
  if (!s) s = nb_plan_run(p);
  if (!s) s = nb_plan_get(p, y, yv, sizeof yv);
  EXPECT(s == NB_OK, "good indices after a bad run: %s", nb_last_error());
  EXPECT(!s && yv[0] == 12.0f && yv[3] == 0.0f && yv[11] == 8.0f, "index_select values");
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
}

/* An impossible allocation is NB_ERR_OOM naming the bytes asked and free,
 * and the backend stays usable. */
static void check_oom(nb_backend *gpu) {
  nb_state *st;
  EXPECT(nb_state_new(gpu, &st) == NB_OK, "nb_state_new: %s", nb_last_error());
  nb_graph *g = nb_graph_new();
  int64_t shape[2] = {(int64_t)1 << 20, (int64_t)1 << 20}; /* 4 TiB of f32 */
  nb_init zeros = {NB_INIT_ZEROS, 0, 0, 0};
  nb_tensor *v = nb_variable(g, "huge", NB_F32, 2, shape, zeros);
  nb_tensor_set_output(v);
  nb_plan *p = NULL;
  nb_status s = nb_compile(g, gpu, st, NULL, &p);
  EXPECT(s == NB_ERR_OOM && strstr(nb_last_error(), "bytes free"),
         "4 TiB variable: status %d, message '%s'", (int)s, nb_last_error());
  printf("OOM message: %s\n", nb_last_error());
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
}

/* The caching allocator hands a freed block out again and counts it. */
static void check_allocator(nb_backend *gpu) {
  nb_memory_stats a, b;
  EXPECT(nb_backend_memory_stats(gpu, &a) == NB_OK, "stats: %s", nb_last_error());
  for (int round = 0; round < 2; round++) {
    nb_state *st;
    nb_state_new(gpu, &st);
    nb_graph *g = nb_graph_new();
    int64_t shape[1] = {300000};
    nb_init init = {NB_INIT_CONSTANT, 2.0f, 0, 0};
    nb_tensor *v = nb_variable(g, "v", NB_F32, 1, shape, init);
    nb_tensor_set_output(nb_mul(g, v, v));
    nb_plan *p = NULL;
    EXPECT(nb_compile(g, gpu, st, NULL, &p) == NB_OK, "compile: %s", nb_last_error());
    nb_plan_free(p);
    nb_graph_free(g);
    nb_state_free(st);
  }
  EXPECT(nb_backend_memory_stats(gpu, &b) == NB_OK, "stats: %s", nb_last_error());
  EXPECT(b.reused > a.reused, "second identical plan reused no block (%llu -> %llu)",
         (unsigned long long)a.reused, (unsigned long long)b.reused);
  EXPECT(b.in_use == a.in_use, "freed plans left %zu bytes in use (was %zu)", b.in_use, a.in_use);
  EXPECT(b.peak >= 2 * 300000 * sizeof(float), "peak %zu below what the plans held", b.peak);
  EXPECT(b.reserved >= b.in_use && b.dev_total > 0, "reserved %zu, in use %zu, total %zu",
         b.reserved, b.in_use, b.dev_total);
  printf("allocator: %zu in use, %zu reserved, peak %zu, %llu allocations, %llu reused\n", b.in_use,
         b.reserved, b.peak, (unsigned long long)b.allocs, (unsigned long long)b.reused);
}

/* Gradient accumulation (8 micro-batches on one device): the micro-batch
 * instances share memory, and they give their own back as they are
 * compiled (src/compile/pipeline.c), so compiling never holds much more
 * than the plan keeps: the allocator's peak stays within what is in use
 * after compiling plus the plan's planned intermediates (before that fix,
 * about 7 extra micro-batch arenas). A fresh backend, so the peak is this
 * plan's. */
static void check_micro_batch_compile_peak(void) {
  nb_backend *gpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    EXPECT(0, "second cuda:0 backend: %s", nb_last_error());
    return;
  }
  nb_state *st = NULL;
  nb_state_new(gpu, &st);
  nb_graph *g = nb_graph_new();
  int64_t xs[2] = {4096 / 8, 1024}, ys[1] = {4096 / 8};
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, xs), *y = nb_input(g, "y", NB_I64, 1, ys);
  nb_tensor_set_micro(x, NB_MICRO_SPLIT);
  nb_tensor_set_micro(y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = g, .training = 1, .seed = 1};
  nb_tensor *h = nb_relu(g, nb_nn_linear(&nn, "fc1", x, 2048, 1));
  h = nb_relu(g, nb_nn_linear(&nn, "fc2", h, 2048, 1));
  nb_tensor *loss = nb_cross_entropy(g, nb_nn_linear(&nn, "fc3", h, 10, 1), y, 0.0f);
  nb_tensor_set_output(loss);
  nb_optimizer *opt = NULL;
  nb_status rc = nb_graph_backward(g, loss);
  if (!rc) rc = nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt);
  nb_compile_options o = nb_compile_defaults();
  o.micro_batches = 8;
  nb_plan *p = NULL;
  if (!rc) rc = nb_compile(g, gpu, st, &o, &p);
  EXPECT(rc == NB_OK, "compiling 8 micro-batches: %s", nb_last_error());
  nb_memory_stats m;
  if (!rc && nb_backend_memory_stats(gpu, &m) == NB_OK) {
    size_t planned = nb_plan_get_stats(p).arena_bytes;
    printf("8 micro-batches: %zu bytes planned, %zu in use after compiling, peak %zu\n", planned,
           m.in_use, m.peak);
    EXPECT(m.peak <= m.in_use + planned + (1u << 20),
           "compiling peaked at %zu bytes, %zu above what stays in use (%zu); the plan's "
           "intermediates are %zu",
           m.peak, m.peak - m.in_use, m.in_use, planned);
  }
  nb_plan_free(p);
  nb_optimizer_free(opt);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(gpu);
}

int main(void) {
  nb_backend *gpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  printf("running on %s\n", nb_backend_name(gpu));
  check_state_roundtrip(gpu);
  check_index_fault(gpu);
  check_oom(gpu);
  check_allocator(gpu);
  nb_backend_free(gpu);
  check_micro_batch_compile_peak();
  printf("%s (%d failures)\n", failures ? "FAILED" : "all backend checks passed", failures);
  return failures ? 1 : 0;
}
