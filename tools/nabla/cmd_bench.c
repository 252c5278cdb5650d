/* `nabla bench MODEL`: times the compiled training step (forward, backward,
 * optimizer of the model's recipe) and inference of a model file on
 * synthetic data, and reports images/s, ms/step and planned memory. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/nabla.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  nb_graph *g;
  nb_plan *plan;
  nb_optimizer *opt;
  nb_tensor *x, *y;
} bench_plan;

static void bench_free(bench_plan *b) {
  nb_optimizer_free(b->opt);
  nb_plan_free(b->plan);
  nb_graph_free(b->g);
}

/* Training step (train = 1: loss, backward, optimizer) or inference (logits). */
static nb_status build(const nb_model *m, int train, int64_t batch, nb_backend *be, nb_state *st,
                       bench_plan *b) {
  memset(b, 0, sizeof *b);
  const nb_recipe *r = nb_model_recipe(m);
  b->g = nb_graph_new();
  b->x = nb_model_new_input(m, b->g, "x", batch);
  b->y = nb_input(b->g, "labels", NB_I64, 1, &batch);
  nb_nn nn = {b->g, train, r->seed, NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  nb_status rc = nb_model_build(m, &nn, b->x, &logits);
  if (rc) return rc;
  if (!train) {
    nb_tensor_set_output(logits);
  } else {
    nb_tensor *loss = nb_cross_entropy(b->g, logits, b->y, r->label_smoothing);
    nb_tensor_set_output(loss);
    rc = nb_recipe_update(r, b->g, loss, NULL, &b->opt);
    if (rc) return rc;
  }
  return nb_compile(b->g, be, st, NULL, &b->plan);
}

/* Median seconds per step over `windows` windows of `steps` steps, after
 * `warmup` untimed steps. */
static nb_status time_steps(bench_plan *b, int warmup, int windows, int steps, double *median) {
  double t[64];
  if (windows > 64) windows = 64;
  int64_t step = 0;
  for (int w = -1; w < windows; w++) {
    int n = w < 0 ? warmup : steps;
    double t0 = now();
    for (int i = 0; i < n; i++) {
      nb_status rc = b->opt ? nb_optimizer_feed(b->opt, b->plan, ++step, 1e-4f) : NB_OK;
      if (!rc) rc = nb_plan_run(b->plan);
      if (rc) return rc;
    }
    if (w >= 0) t[w] = (now() - t0) / n;
  }
  qsort(t, (size_t)windows, sizeof *t, cmp_double);
  *median = t[windows / 2];
  return NB_OK;
}

static nb_status fill_inputs(const nb_model *m, bench_plan *b, int64_t batch) {
  int64_t n = nb_tensor_numel(b->x), classes = nb_model_classes(m);
  float *x = malloc((size_t)n * sizeof *x);
  int64_t *y = malloc((size_t)batch * sizeof *y);
  nb_status rc = x && y ? NB_OK : nb_error(NB_ERR_OOM, "bench: out of memory");
  nb_rng r;
  nb_rng_seed(&r, 7);
  if (!rc) {
    nb_rng_fill_normal(&r, x, (size_t)n, 0.0f, 1.0f);
    for (int64_t i = 0; i < batch; i++) y[i] = classes > 0 ? (int64_t)(i % classes) : 0;
    rc = nb_plan_set_input(b->plan, b->x, x, (size_t)n * sizeof *x);
  }
  if (!rc && b->opt) rc = nb_plan_set_input(b->plan, b->y, y, (size_t)batch * sizeof *y);
  free(x);
  free(y);
  return rc;
}

int nabla_cmd_bench(int argc, char **argv) {
  const char *model = NULL;
  int64_t batch = 0;
  int threads = 0, windows = 7, steps = 10;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: nabla bench MODEL [--batch B] [--threads T] [--windows W] [--steps S]\n"
             "Times the compiled training step (the model's recipe: forward, backward,\n"
             "optimizer) and inference of MODEL on synthetic data: the median over W\n"
             "windows of S steps after warm-up. Prints images/s, ms/step and planned\n"
             "memory. bench/run.sh compares nabla with PyTorch side by side.\n");
      return 0;
    }
    if (a[0] != '-') {
      model = a;
      continue;
    }
    if (!v) {
      fprintf(stderr, "nabla bench: %s needs a value (see --help)\n", a);
      return 2;
    }
    long long n = strtoll(v, NULL, 10);
    if (!strcmp(a, "--batch"))
      batch = n;
    else if (!strcmp(a, "--threads"))
      threads = (int)n;
    else if (!strcmp(a, "--windows"))
      windows = (int)n;
    else if (!strcmp(a, "--steps"))
      steps = (int)n;
    else {
      fprintf(stderr, "nabla bench: unknown option %s (see --help)\n", a);
      return 2;
    }
    i++;
  }
  if (!model || batch < 0 || windows < 1 || steps < 1) {
    fprintf(stderr, "usage: nabla bench MODEL [--batch B] [--threads T] (see --help)\n");
    return 2;
  }
  nb_set_num_threads(threads);
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_status rc = nb_model_load(model, &m);
  if (!rc && !batch) batch = nb_model_recipe(m)->batch;
  if (!rc) rc = nb_backend_new("cpu", &be);
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc)
    printf("%s: batch %lld, %d threads, median of %d windows x %d steps\n", model, (long long)batch,
           nb_get_num_threads(), windows, steps);
  for (int train = 1; !rc && train >= 0; train--) {
    bench_plan b;
    double sec = 0;
    rc = build(m, train, batch, be, st, &b);
    if (!rc) rc = fill_inputs(m, &b, batch);
    if (!rc) rc = time_steps(&b, 3, windows, steps, &sec);
    if (!rc) {
      nb_plan_stats s = nb_plan_get_stats(b.plan);
      printf("%-9s %10.1f images/s  %8.3f ms/step  arena %.1f MiB (naive %.1f MiB), %d kernels\n",
             train ? "training" : "inference", (double)batch / sec, 1e3 * sec,
             (double)s.arena_bytes / 1048576.0, (double)s.naive_bytes / 1048576.0, s.kernels);
    }
    bench_free(&b);
  }
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  if (rc) {
    fprintf(stderr, "nabla bench: %s\n", nb_last_error());
    return 1;
  }
  return 0;
}
