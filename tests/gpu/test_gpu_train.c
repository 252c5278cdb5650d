/* The reference MNIST CNN (models/mnist_cnn.cfg) trained for a few steps on
 * cpu and on cuda:0 from the same initial weights (variables are filled on
 * the host from their seeds, then uploaded) on the same synthetic batches:
 * the losses must agree step by step, and after training every parameter
 * and the eval-mode logits must agree in relative L2 norm. This is the
 * whole training step on the GPU: conv/pool/matmul forward and backward,
 * cross-entropy, the fused elementwise groups and epilogues, Adam's update
 * written into the variables.
 *
 * Exits 77 (skipped) without a GPU or a CUDA build. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_check.h"
#include "nabla/nabla.h"

#define STEPS 8
#define BATCH 32

typedef struct {
  nb_backend *be;
  nb_state *st;
  nb_graph *g;
  nb_plan *plan;
  nb_optimizer *opt;
  nb_tensor *x, *y, *out;
} runner;

static nb_status build(const nb_model *m, int train, runner *r) {
  const nb_recipe *rec = nb_model_recipe(m);
  int64_t batch = BATCH;
  r->g = nb_graph_new();
  r->x = nb_model_new_input(m, r->g, "x", batch);
  r->y = nb_input(r->g, "labels", NB_I64, 1, &batch);
  nb_nn nn = {.g = r->g, .training = train, .seed = rec->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  nb_status rc = nb_model_build(m, &nn, r->x, &logits);
  if (rc) return rc;
  if (train) {
    r->out = nb_cross_entropy(r->g, logits, r->y, 0.0f);
    nb_tensor_set_output(r->out);
    rc = nb_recipe_update(rec, r->g, r->out, NULL, &r->opt);
  } else {
    r->out = logits;
    nb_tensor_set_output(r->out);
  }
  if (!rc) rc = nb_compile(r->g, r->be, r->st, NULL, &r->plan);
  return rc;
}

static void runner_free_plan(runner *r) {
  nb_optimizer_free(r->opt);
  nb_plan_free(r->plan);
  nb_graph_free(r->g);
  r->opt = NULL;
  r->plan = NULL;
  r->g = NULL;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double d = 0, s = 0;
  for (int64_t i = 0; i < n; i++) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)a[i] * a[i];
  }
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

int main(void) {
  nb_backend *gpu = NULL;
  if (nb_backend_new("cuda:0", &gpu) != NB_OK) {
    printf("SKIPPED: %s\n", nb_last_error());
    return SKIP_CODE;
  }
  nb_model *m = NULL;
  nb_status rc = nb_model_load(gpu_model_path("mnist_cnn.cfg"), &m);
  if (rc) {
    printf("FAIL: %s\n", nb_last_error());
    return 1;
  }
  runner R[2];
  memset(R, 0, sizeof R);
  R[1].be = gpu;
  rc = nb_backend_new("cpu", &R[0].be);
  for (int k = 0; k < 2 && !rc; k++) {
    rc = nb_state_new(R[k].be, &R[k].st);
    if (!rc) rc = build(m, 1, &R[k]);
    if (rc)
      printf("FAIL: %s: building the training step: %s\n", nb_backend_name(R[k].be),
             nb_last_error());
  }
  if (rc) return 1;
  nb_plan_stats ps = nb_plan_get_stats(R[1].plan);
  printf("training step on %s: %d kernels, arena %.2f MiB\n", nb_backend_name(gpu), ps.kernels,
         (double)ps.arena_bytes / 1048576.0);
  float *x = malloc((size_t)BATCH * 784 * sizeof *x);
  int64_t y[BATCH];
  double secs[2] = {0, 0};
  printf("%5s %12s %12s %10s\n", "step", "cpu loss", "cuda loss", "|diff|");
  for (int step = 1; step <= STEPS && !failures; step++) {
    gpu_make_batch(step, BATCH, x, y);
    float loss[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
      double t0 = now();
      rc = nb_plan_set_input(R[k].plan, R[k].x, x, (size_t)BATCH * 784 * sizeof *x);
      if (!rc) rc = nb_plan_set_input(R[k].plan, R[k].y, y, sizeof y);
      if (!rc) rc = nb_optimizer_feed(R[k].opt, R[k].plan, step, 1e-3f);
      if (!rc) rc = nb_plan_run(R[k].plan);
      if (!rc) rc = nb_plan_get(R[k].plan, R[k].out, &loss[k], sizeof loss[k]);
      secs[k] += now() - t0;
      EXPECT(!rc, "%s, step %d: %s", nb_backend_name(R[k].be), step, nb_last_error());
    }
    double d = fabs((double)loss[0] - loss[1]);
    printf("%5d %12.6f %12.6f %10.2e\n", step, loss[0], loss[1], d);
    EXPECT(d <= 1e-4 + 1e-3 * step * fabs(loss[0]), "step %d: losses %.7g (cpu) and %.7g (cuda)",
           step, loss[0], loss[1]);
  }
  printf(
      "mean step time incl. transfers: cpu %.2f ms, cuda %.2f ms (first steps include warm-up)\n",
      1e3 * secs[0] / STEPS, 1e3 * secs[1] / STEPS);
  /* every variable (parameters and Adam moments) after training */
  int n = nb_state_count(R[0].st);
  EXPECT(n == nb_state_count(R[1].st), "%d variables on cpu, %d on cuda", n,
         nb_state_count(R[1].st));
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < n && !failures; i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    nb_state_entry(R[0].st, i, &name, NULL, &nd, &shape);
    int64_t numel = 1;
    for (int d = 0; d < nd; d++) numel *= shape[d];
    float *a = malloc((size_t)numel * sizeof *a), *b = malloc((size_t)numel * sizeof *b);
    rc = nb_state_read(R[0].st, name, a, (size_t)numel * sizeof *a);
    if (!rc) rc = nb_state_read(R[1].st, name, b, (size_t)numel * sizeof *b);
    EXPECT(!rc, "reading %s: %s", name, nb_last_error());
    double e = rc ? 0 : rel_l2(a, b, numel);
    if (e > worst) {
      worst = e;
      worst_name = name;
    }
    free(a);
    free(b);
  }
  printf("variables: largest relative L2 difference %.2e (%s)\n", worst, worst_name);
  EXPECT(worst < 1e-2, "variable %s differs by %.3g in relative L2 norm", worst_name, worst);
  /* eval-mode logits with the trained weights */
  float *logits[2] = {NULL, NULL};
  for (int k = 0; k < 2 && !failures; k++) {
    runner_free_plan(&R[k]);
    rc = build(m, 0, &R[k]);
    gpu_make_batch(STEPS + 1, BATCH, x, y);
    if (!rc) rc = nb_plan_set_input(R[k].plan, R[k].x, x, (size_t)BATCH * 784 * sizeof *x);
    if (!rc) rc = nb_plan_run(R[k].plan);
    logits[k] = malloc((size_t)BATCH * 10 * sizeof(float));
    if (!rc) rc = nb_plan_get(R[k].plan, R[k].out, logits[k], (size_t)BATCH * 10 * sizeof(float));
    EXPECT(!rc, "%s eval: %s", nb_backend_name(R[k].be), nb_last_error());
  }
  if (!failures) {
    double e = rel_l2(logits[0], logits[1], BATCH * 10);
    printf("eval logits: relative L2 difference %.2e\n", e);
    EXPECT(e < 1e-3, "eval logits differ by %.3g in relative L2 norm", e);
  }
  nb_memory_stats ms;
  if (nb_backend_memory_stats(gpu, &ms) == NB_OK)
    printf("%s memory: %.1f MiB in use, %.1f MiB reserved, peak %.1f MiB, %llu allocations "
           "(%llu reused)\n",
           nb_backend_name(gpu), (double)ms.in_use / 1048576.0, (double)ms.reserved / 1048576.0,
           (double)ms.peak / 1048576.0, (unsigned long long)ms.allocs,
           (unsigned long long)ms.reused);
  for (int k = 0; k < 2; k++) {
    free(logits[k]);
    runner_free_plan(&R[k]);
    nb_state_free(R[k].st);
    nb_backend_free(R[k].be);
  }
  free(x);
  nb_model_free(m);
  printf("%s\n", failures ? "FAILED" : "mnist_cnn trains alike on cpu and cuda");
  return failures ? 1 : 0;
}
