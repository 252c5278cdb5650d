/* What the GPU test programs share: the skip exit code, the failure count
 * and EXPECT (a failed check prints where and why and the program goes
 * on, so one GPU run shows every problem), a wall clock, and the synthetic
 * MNIST-like batches the training checks feed cpu and cuda alike. One
 * header per program (everything is static). */
#ifndef NB_GPU_CHECK_H
#define NB_GPU_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla/nabla.h"

#define SKIP_CODE 77

#ifndef NB_MODELS_DIR
#define NB_MODELS_DIR "models"
#endif

/* models/NAME, from $NABLA_MODELS_DIR when set (run.sh sets it: the
 * binaries may have been built in another checkout, whose path is compiled
 * in as NB_MODELS_DIR), else the build's source tree. */
static inline const char *gpu_model_path(const char *name) {
  static char path[4096];
  const char *dir = getenv("NABLA_MODELS_DIR");
  snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : NB_MODELS_DIR, name);
  return path;
}

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

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Batch `step` of `batch` 28x28 images: noise plus a bright 6x6 square
 * whose place is the label, so a CNN's loss moves within a few steps. */
static inline void gpu_make_batch(int step, int batch, float *x, int64_t *y) {
  nb_rng r;
  nb_rng_seed(&r, 1000u + (uint64_t)step);
  nb_rng_fill_normal(&r, x, (size_t)batch * 28 * 28, 0.0f, 0.5f);
  for (int i = 0; i < batch; i++) {
    int label = (int)(nb_rng_next(&r) % 10);
    y[i] = label;
    int top = 2 + (label / 5) * 12, left = 2 + (label % 5) * 5;
    for (int a = 0; a < 6; a++)
      for (int b = 0; b < 6 && left + b < 28; b++) x[i * 784 + (top + a) * 28 + left + b] += 2.0f;
  }
}

#endif
