/* What the GPU test programs share: the skip exit code, the failure count
 * and EXPECT (a failed check prints where and why and the program goes
 * on, so one GPU run shows every problem), a wall clock, and the synthetic
 * MNIST-like batches the training checks feed cpu and cuda alike. One
 * header per program (everything is static). */
#ifndef NB_GPU_CHECK_H
#define NB_GPU_CHECK_H

#include <stdio.h>
#include <time.h>

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
