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
  nb_tensor *out; /* loss or logits: read after each window */
  void *host;     /* room for out */
} bench_plan;

static void bench_free(bench_plan *b) {
  nb_optimizer_free(b->opt);
  nb_plan_free(b->plan);
  nb_graph_free(b->g);
  free(b->host);
}

static size_t out_bytes(const nb_tensor *t) {
  return (size_t)nb_tensor_numel(t) * nb_dtype_size(nb_tensor_dtype(t));
}

/* Training step (train = 1: loss, backward, optimizer) or inference
 * (logits). `co` carries the micro-batches of a training step: the graph is
 * then built for one micro-batch of batch / micro_batches. */
static nb_status build(const nb_model *m, int train, int64_t batch, nb_compile_options co,
                       nb_backend *be, nb_state *st, bench_plan *b) {
  memset(b, 0, sizeof *b);
  const nb_recipe *r = nb_model_recipe(m);
  if (!train) co.micro_batches = 1;
  if (co.micro_batches > 1) batch /= co.micro_batches;
  b->g = nb_graph_new();
  b->x = nb_model_new_input(m, b->g, "x", batch);
  /* a text model predicts a token at every position: batch * T labels */
  int64_t in[NB_MAX_DIMS], rows = batch;
  if (nb_model_input_shape(m, in, NULL) == 1 && nb_model_is_text(m)) rows = batch * in[0];
  b->y = nb_input(b->g, "labels", NB_I64, 1, &rows);
  nb_tensor_set_micro(b->y, NB_MICRO_SPLIT);
  nb_nn nn = {.g = b->g,
              .training = train,
              .seed = r->seed,
              .init = NB_NN_INIT_TORCH,
              .recompute = train && r->recompute};
  nb_tensor *logits = NULL;
  /* the recipe's precision (--precision): autocast, and for fp16 the loss
   * scaling nb_recipe_update adds, as `nabla train` runs it */
  nb_status rc = nb_graph_set_autocast(b->g, nb_precision_dtype(r->precision));
  /* placed layers: the ones before the first placed layer run on be, as in nb_fit */
  if (!rc && nb_model_device_count(m)) rc = nb_graph_set_device(b->g, nb_backend_name(be));
  if (!rc) rc = nb_model_build(m, &nn, b->x, &logits);
  if (!rc) rc = nb_graph_set_device(b->g, NULL);
  if (!rc) rc = nb_graph_set_autocast(b->g, NB_F32);
  if (rc) return rc;
  if (!train) {
    b->out = logits;
  } else {
    int64_t flat[2] = {rows, nb_tensor_numel(logits) / rows};
    b->out = nb_cross_entropy(b->g, nb_reshape(b->g, logits, 2, flat), b->y, r->label_smoothing);
    rc = nb_recipe_update(r, b->g, b->out, NULL, &b->opt);
    if (rc) return rc;
  }
  nb_tensor_set_output(b->out);
  b->host = malloc(out_bytes(b->out) + 1);
  if (!b->host) return nb_error(NB_ERR_OOM, "bench: out of memory");
  return nb_compile(b->g, be, st, &co, &b->plan);
}

/* Median seconds per step over `windows` windows of `steps` steps, after
 * `warmup` untimed steps. Each window ends by reading the output: a GPU runs
 * a plan asynchronously, and the read waits until the window's work is done. */
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
    nb_status rc = nb_plan_get(b->plan, b->out, b->host, out_bytes(b->out));
    if (rc) return rc;
    if (w >= 0) t[w] = (now() - t0) / n;
  }
  qsort(t, (size_t)windows, sizeof *t, cmp_double);
  *median = t[windows / 2];
  return NB_OK;
}

/* Synthetic inputs for a batch of `batch` (in `parts` micro-batches). */
static nb_status fill_inputs(const nb_model *m, bench_plan *b, int64_t batch, int parts) {
  int64_t n = nb_tensor_numel(b->x) * parts, classes = nb_model_classes(m);
  if (nb_model_is_text(m)) batch = n; /* a label per token */
  float *x = malloc((size_t)n * sizeof(int64_t));
  int64_t *y = malloc((size_t)batch * sizeof *y);
  nb_status rc = x && y ? NB_OK : nb_error(NB_ERR_OOM, "bench: out of memory");
  nb_rng r;
  nb_rng_seed(&r, 7);
  if (!rc) {
    nb_rng_fill_normal(&r, x, (size_t)n, 0.0f, 1.0f);
    for (int64_t i = 0; i < batch; i++) y[i] = classes > 0 ? (int64_t)(i % classes) : 0;
    /* token ids must index the vocabulary: the labels double as ids */
    if (nb_model_is_text(m)) memcpy(x, y, (size_t)n * sizeof *y);
    if (nb_model_is_text(m) && nb_tensor_dtype(b->x) == NB_I32)
      for (int64_t i = 0; i < n; i++) ((int32_t *)x)[i] = (int32_t)y[i];
    rc = nb_plan_set_input(b->plan, b->x, x, (size_t)n * nb_dtype_size(nb_tensor_dtype(b->x)));
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
  const char *device = "cpu", *precision = NULL, *place = NULL;
  int recompute = 0;
  nb_compile_options co = nb_compile_defaults();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--recompute")) {
      recompute = 1;
      continue;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: nabla bench MODEL [--batch B] [--device cpu|cuda:N] [--threads T]\n"
             "                         [--windows W] [--steps S] [--precision fp32|bf16|fp16]\n"
             "                         [--recompute] [--place LAYER=DEVICE,...]\n"
             "                         [--micro-batches M] [--schedule 1f1b|gpipe]\n"
             "Times the compiled training step (the model's recipe: forward, backward,\n"
             "optimizer) and inference of MODEL on synthetic data: the median over W\n"
             "windows of S steps after warm-up. Prints images/s, ms/step and planned\n"
             "memory. --precision (default: the recipe's) runs matmuls and convolutions\n"
             "in bf16 or fp16 (f32 master weights; fp16 with loss scaling). --recompute\n"
             "(default: the recipe's) recomputes transformer and residual blocks in the\n"
             "backward pass (activation checkpointing). --micro-batches M runs each\n"
             "training step as M micro-batches of B/M (gradient accumulation), in the\n"
             "order --schedule says (default 1f1b: one micro-batch's activations at a\n"
             "time on one device; gpipe: every forward pass first). --place puts layers\n"
             "on devices, as `nabla train --place` (docs/distributed.md); the arena is\n"
             "then the sum over the devices.\n"
             "bench/run.sh compares nabla with PyTorch side by side.\n");
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
    /* the numeric options: a whole number at least `least` */
    static const char *const counts[] = {"--batch", "--threads", "--windows", "--steps",
                                         "--micro-batches"};
    static const int least[] = {0, 0, 1, 1, 0};
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    for (int k = 0; k < 5; k++)
      if (!strcmp(a, counts[k]) && (end == v || *end || n < least[k] || n > 1 << 30)) {
        fprintf(stderr, "nabla bench: %s expects a whole number >= %d, got '%s'\n", a, least[k], v);
        return 2;
      }
    if (!strcmp(a, "--device"))
      device = v;
    else if (!strcmp(a, "--precision"))
      precision = v;
    else if (!strcmp(a, "--batch"))
      batch = n;
    else if (!strcmp(a, "--threads"))
      threads = (int)n;
    else if (!strcmp(a, "--windows"))
      windows = (int)n;
    else if (!strcmp(a, "--steps"))
      steps = (int)n;
    else if (!strcmp(a, "--place"))
      place = v;
    else if (!strcmp(a, "--micro-batches"))
      co.micro_batches = (int)n;
    else if (!strcmp(a, "--schedule") && (!strcmp(v, "1f1b") || !strcmp(v, "gpipe")))
      co.schedule = strcmp(v, "1f1b") ? NB_SCHEDULE_GPIPE : NB_SCHEDULE_1F1B;
    else if (!strcmp(a, "--schedule")) {
      fprintf(stderr, "nabla bench: --schedule takes 1f1b or gpipe, not '%s'\n", v);
      return 2;
    } else {
      fprintf(stderr, "nabla bench: unknown option %s (see --help)\n", a);
      return 2;
    }
    i++;
  }
  if (!model) {
    fprintf(stderr, "nabla bench: no MODEL given (usage: nabla bench MODEL [--batch B] ...; see "
                    "--help)\n");
    return 2;
  }
  nb_set_num_threads(threads);
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_status rc = nb_model_load(model, &m);
  if (!rc && recompute) rc = nb_model_set_recompute(m, 1);
  if (!rc && place) rc = nb_model_set_placement(m, place);
  if (!rc && precision) {
    nb_precision p;
    rc = nb_precision_parse(precision, &p);
    if (!rc) rc = nb_model_set_precision(m, p);
  }
  if (!rc && !batch) batch = nb_model_recipe(m)->batch;
  if (!rc && co.micro_batches > 1 && batch % co.micro_batches)
    rc = nb_error(NB_ERR_INVALID_ARG, "--micro-batches %d does not divide the batch of %lld",
                  co.micro_batches, (long long)batch);
  if (!rc) rc = nb_backend_new(device, &be);
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc)
    printf("%s: batch %lld%s on %s, precision %s, %d threads, median of %d windows x %d steps\n",
           model, (long long)batch,
           co.micro_batches > 1 ? (co.schedule ? " (gpipe micro-batches)" : " (1f1b micro-batches)")
                                : "",
           nb_backend_name(be), nb_precision_name(nb_model_recipe(m)->precision),
           nb_get_num_threads(), windows, steps);
  for (int train = 1; !rc && train >= 0; train--) {
    bench_plan b;
    double sec = 0;
    int parts = train && co.micro_batches > 1 ? co.micro_batches : 1;
    rc = build(m, train, batch, co, be, st, &b);
    if (!rc) rc = fill_inputs(m, &b, batch, parts);
    if (!rc) rc = time_steps(&b, 3, windows, steps, &sec);
    if (!rc) {
      nb_plan_stats s = nb_plan_get_stats(b.plan);
      printf("%-9s %10.1f images/s  %8.3f ms/step  arena %.1f MiB (naive %.1f MiB), %d kernels%s\n",
             train ? "training" : "inference", (double)batch / sec, 1e3 * sec,
             (double)s.arena_bytes / 1048576.0, (double)s.naive_bytes / 1048576.0, s.kernels,
             s.graph <= 0 ? ""
             : parts > 1  ? " in CUDA graphs"
                          : " in one CUDA graph");
    }
    bench_free(&b);
  }
  nb_memory_stats ms; /* device memory, where the backend has an allocator */
  if (!rc && nb_backend_memory_stats(be, &ms) == NB_OK)
    printf("%s memory: peak %.1f MiB in use, %.1f MiB reserved, %.1f MiB staging\n",
           nb_backend_name(be), (double)ms.peak / 1048576.0, (double)ms.reserved / 1048576.0,
           (double)ms.staging / 1048576.0);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  if (rc) {
    fprintf(stderr, "nabla bench: %s\n", nb_last_error());
    return 1;
  }
  return 0;
}
