/* GPU checks of the CUDA backend. Without a GPU (or a CUDA build) the test
 * exits with 77, which ctest reports as skipped, so CI shows the count. */
#include <stdio.h>
#include <string.h>

#include "nabla/nabla.h"

#define SKIP_CODE 77

static int failures;

#define EXPECT(cond, ...)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
      printf(__VA_ARGS__);                                                                         \
      printf("\n");                                                                                \
    }                                                                                              \
  } while (0)

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

int main(void) {
  nb_backend *gpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  printf("running on %s\n", nb_backend_name(gpu));
  check_state_roundtrip(gpu);
  nb_backend_free(gpu);
  printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
  return failures ? 1 : 0;
}
