/* nabla side of the PyTorch comparison (bench/run.sh drives it).
 *
 * Builds one benchmark case with the public API only (graph ops,
 * nb_graph_backward, nb_optimizer_adam/sgd, nb_compile, nb_plan_run), runs
 * warm-up steps, then times `windows` windows of `steps` steps each and
 * prints one JSON line: the ms per step of every window and the peak RSS of
 * the process (getrusage). bench/torch_models.py does the same for PyTorch
 * with the same model, batch, thread count and synthetic data.
 *
 * usage: bench_models CASE [--threads T] [--warmup W] [--windows K] [--steps S]
 *                     [--model FILE] [--device DEV] [--batch B] [--precision P]
 * CASE: mnist_train, cifar_train, mnist_infer_b1, mnist_infer_b256, sgemm1024,
 *       gpt_train (the model file models/gpt_char.cfg, given with --model)
 * DEV: cpu (default), cuda:0, ...: every plan runs there (nb_backend_new).
 *      Every timed step reads its loss or logits back (nb_plan_get), which
 *      waits for an asynchronous device, so the windows time finished work.
 * B: the batch of the CNN cases (default: the case's own, 64, 1 or 256).
 * P: fp32 (default); tf32 on cuda (NABLA_TF32=1: TF32 tensor cores in cuBLAS
 *    and cuDNN); bf16: the CNN cases under nb_graph_set_autocast(NB_BF16)
 *    (matmul/conv operands in bf16, f32 accumulation and master weights, as
 *    torch.autocast); other cases exit with 3 and a message, which
 *    bench/gpu.py reports as n/a. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nabla/nabla.h"

#define CHECK(expr)                                                                                \
  do {                                                                                             \
    nb_status st_ = (expr);                                                                        \
    if (st_) {                                                                                     \
      fprintf(stderr, "bench_models: %s:%d: %s: %s\n", __FILE__, __LINE__, nb_status_name(st_),    \
              nb_last_error());                                                                    \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

/* Synthetic data shared with torch_models.py: element i of a stream with
 * seed s is a Knuth multiplicative hash mapped to [-1, 1); labels cycle. The
 * formula is trivially reproducible in numpy, so both sides see identical
 * batches. */
static void fill_data(float *x, int64_t n, uint32_t seed) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t h = (uint32_t)((uint64_t)(i + seed * 7919u) * 2654435761u);
    x[i] = (float)h * (2.0f / 4294967296.0f) - 1.0f;
  }
}

static void fill_labels(int64_t *y, int64_t n, int64_t classes, int64_t seed) {
  for (int64_t i = 0; i < n; i++) y[i] = (i * 7 + seed * 3) % classes;
}

/* Number of distinct batches cycled through, so the input is not the same
 * cache-hot buffer every step. */
#define N_BATCHES 8

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by the whole process (all threads) so far. */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

/* PyTorch's default init for conv/linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static nb_tensor *param(nb_graph *g, const char *name, int ndim, const int64_t *shape,
                        int64_t fan_in, uint64_t seed) {
  float b = 1.0f / sqrtf((float)fan_in);
  nb_init init = {NB_INIT_UNIFORM, -b, b, seed};
  return nb_param(g, name, ndim, shape, init);
}

static nb_tensor *conv_relu(nb_graph *g, nb_tensor *x, const char *name, int64_t cin, int64_t cout,
                            int pad, uint64_t seed) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t ws[4] = {cout, cin, 3, 3}, bs[4] = {1, cout, 1, 1};
  nb_tensor *w = param(g, wn, 4, ws, cin * 9, seed);
  nb_tensor *b = param(g, bn, 4, bs, cin * 9, seed + 1);
  nb_conv2d_params p = nb_conv2d_defaults();
  p.padding[0] = p.padding[1] = pad;
  return nb_relu(g, nb_add(g, nb_conv2d(g, x, w, &p), b));
}

static nb_tensor *linear(nb_graph *g, nb_tensor *x, const char *name, int64_t in, int64_t out,
                         uint64_t seed) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t ws[2] = {out, in}, bs[1] = {out};
  nb_tensor *w = param(g, wn, 2, ws, in, seed);
  nb_tensor *b = param(g, bn, 1, bs, in, seed + 1);
  return nb_add(g, nb_matmul(g, x, nb_transpose(g, w, 0, 1)), b);
}

/* The reference CNN of examples/mnist_cnn.c. */
static nb_tensor *mnist_model(nb_graph *g, nb_tensor *x) {
  nb_pool2d_params pool = nb_pool2d_defaults(2, 2);
  nb_tensor *h = conv_relu(g, x, "conv1", 1, 32, 0, 1);
  h = nb_max_pool2d(g, h, &pool);
  h = conv_relu(g, h, "conv2", 32, 64, 0, 11);
  h = nb_max_pool2d(g, h, &pool);
  int64_t flat[2] = {nb_tensor_shape(h)[0], 1600};
  h = nb_relu(g, linear(g, nb_reshape(g, h, 2, flat), "fc1", 1600, 128, 21));
  return linear(g, h, "fc2", 128, 10, 31);
}

/* Small CIFAR CNN: 3x32x32 -> 16 -> 32 channels with padding 1. */
static nb_tensor *cifar_model(nb_graph *g, nb_tensor *x) {
  nb_pool2d_params pool = nb_pool2d_defaults(2, 2);
  nb_tensor *h = conv_relu(g, x, "conv1", 3, 16, 1, 1);
  h = nb_max_pool2d(g, h, &pool);
  h = conv_relu(g, h, "conv2", 16, 32, 1, 11);
  h = nb_max_pool2d(g, h, &pool);
  int64_t flat[2] = {nb_tensor_shape(h)[0], 2048};
  h = nb_relu(g, linear(g, nb_reshape(g, h, 2, flat), "fc1", 2048, 64, 21));
  return linear(g, h, "fc2", 64, 10, 31);
}

typedef struct {
  const char *name;
  int64_t batch, c, hw; /* input [batch, c, hw, hw] */
  int train;            /* 0: forward only */
  int adam;             /* 1: Adam, 0: SGD momentum 0.9 */
  nb_tensor *(*model)(nb_graph *, nb_tensor *);
} model_case;

static const model_case cases[] = {
    {"mnist_train", 64, 1, 28, 1, 1, mnist_model},
    {"cifar_train", 64, 3, 32, 1, 0, cifar_model},
    {"mnist_infer_b1", 1, 1, 28, 0, 0, mnist_model},
    {"mnist_infer_b256", 256, 1, 28, 0, 0, mnist_model},
};

typedef struct {
  int threads, warmup, windows, steps;
  int batch;             /* > 0: overrides a CNN case's batch */
  const char *device;    /* nb_backend_new's name: "cpu", "cuda:0", ... */
  const char *precision; /* "fp32", "tf32" or "bf16" */
} options;

/* The device every plan of the run uses. NABLA_TF32 is read when a CUDA
 * backend opens, so --precision sets it (or clears it for fp32) first. */
static nb_status open_device(const options *o, nb_backend **be) {
  if (!strcmp(o->precision, "tf32"))
    setenv("NABLA_TF32", "1", 1);
  else
    unsetenv("NABLA_TF32");
  return nb_backend_new(o->device, be);
}

/* cpu_ms: CPU time of all threads per step over the timed windows; with 1
 * thread it is what the step costs even when other processes share the
 * cores, which wall time is not. */
static void report(const char *name, const options *o, const double *ms, double cpu_ms,
                   int64_t items_per_step, const char *extra) {
  printf("{\"framework\": \"nabla\", \"case\": \"%s\", \"device\": \"%s\", \"precision\": \"%s\", "
         "\"threads\": %d, \"items_per_step\": %lld, \"ms_per_step\": [",
         name, o->device, o->precision, o->threads, (long long)items_per_step);
  for (int i = 0; i < o->windows; i++) printf("%s%.4f", i ? ", " : "", ms[i]);
  printf("], \"cpu_ms_per_step\": %.4f, \"peak_rss_mb\": %.1f%s}\n", cpu_ms, peak_rss_mb(),
         extra ? extra : "");
  fflush(stdout);
}

/* Appends the device allocator's peak (a GPU; the CPU has none) to extra. */
static void device_memory(nb_backend *be, char *extra, size_t size) {
  nb_memory_stats m;
  size_t n = strlen(extra);
  if (n < size && nb_backend_memory_stats(be, &m) == NB_OK)
    snprintf(extra + n, size - n, ", \"device_peak_mb\": %.1f, \"device_reserved_mb\": %.1f",
             m.peak / 1048576.0, m.reserved / 1048576.0);
}

static int run_model(const model_case *mc, const options *o) {
  nb_backend *be;
  nb_state *state;
  CHECK(open_device(o, &be));
  CHECK(nb_state_new(be, &state));
  int64_t B = o->batch > 0 ? o->batch : mc->batch, per = mc->c * mc->hw * mc->hw;
  nb_graph *g = nb_graph_new();
  int64_t xs[4] = {B, mc->c, mc->hw, mc->hw}, ls[1] = {B};
  nb_tensor *x = nb_input(g, "images", NB_F32, 4, xs);
  nb_tensor *y = mc->train ? nb_input(g, "labels", NB_I64, 1, ls) : NULL;
  int bf16 = !strcmp(o->precision, "bf16");
  if (bf16) CHECK(nb_graph_set_autocast(g, NB_BF16));
  nb_tensor *logits = mc->model(g, x);
  if (bf16) CHECK(nb_graph_set_autocast(g, NB_F32));
  nb_tensor *loss = NULL;
  nb_optimizer *opt = NULL;
  if (mc->train) {
    loss = nb_cross_entropy(g, logits, y, 0.0f);
    nb_tensor_set_output(loss);
    CHECK(nb_graph_status(g));
    CHECK(nb_graph_backward(g, loss));
    if (mc->adam)
      CHECK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &opt));
    else
      CHECK(nb_optimizer_sgd(g, 0.9f, 0.0f, 0, &opt));
  } else {
    nb_tensor_set_output(logits);
  }
  CHECK(nb_graph_status(g));
  nb_plan *plan;
  CHECK(nb_compile(g, be, state, NULL, &plan));

  float *bx = malloc((size_t)(N_BATCHES * B * per) * sizeof(float));
  int64_t *by = malloc((size_t)(N_BATCHES * B) * sizeof(int64_t));
  float *out = malloc((size_t)(B * 10) * sizeof(float));
  double *ms = malloc((size_t)o->windows * sizeof(double));
  if (!bx || !by || !out || !ms) {
    fprintf(stderr, "bench_models: out of memory\n");
    return 1;
  }
  for (int b = 0; b < N_BATCHES; b++) {
    fill_data(bx + b * B * per, B * per, (uint32_t)b);
    fill_labels(by + b * B, B, 10, b);
  }
  int64_t t = 0;
  int total = o->warmup + o->windows * o->steps;
  double t0 = 0, c0 = 0;
  for (int i = 0; i < total; i++) {
    int w = i - o->warmup;
    if (w == 0) c0 = cpu_seconds();
    if (w >= 0 && w % o->steps == 0) t0 = now();
    int b = (int)(t % N_BATCHES);
    CHECK(nb_plan_set_input(plan, x, bx + b * B * per, (size_t)(B * per) * sizeof(float)));
    if (mc->train) {
      CHECK(nb_plan_set_input(plan, y, by + b * B, (size_t)B * sizeof(int64_t)));
      CHECK(nb_optimizer_feed(opt, plan, t + 1, 1e-3f));
    }
    CHECK(nb_plan_run(plan));
    /* read the result every step, like a training loop logging its loss */
    if (mc->train) {
      float l;
      CHECK(nb_plan_get(plan, loss, &l, sizeof l));
      if (!(l == l)) {
        fprintf(stderr, "bench_models: loss is NaN at step %lld\n", (long long)t);
        return 1;
      }
    } else {
      CHECK(nb_plan_get(plan, logits, out, (size_t)(B * 10) * sizeof(float)));
    }
    t++;
    if (w >= 0 && w % o->steps == o->steps - 1) ms[w / o->steps] = (now() - t0) * 1e3 / o->steps;
  }
  double cpu_ms = (cpu_seconds() - c0) * 1e3 / (o->windows * o->steps);
  nb_plan_stats s = nb_plan_get_stats(plan);
  char extra[256];
  snprintf(extra, sizeof extra, ", \"batch\": %lld, \"kernels\": %d, \"arena_mb\": %.2f",
           (long long)B, s.kernels, s.arena_bytes / 1e6);
  device_memory(be, extra, sizeof extra);
  report(mc->name, o, ms, cpu_ms, B, extra);
  free(bx);
  free(by);
  free(out);
  free(ms);
  nb_optimizer_free(opt);
  nb_plan_free(plan);
  nb_graph_free(g);
  nb_state_free(state);
  nb_backend_free(be);
  return 0;
}

/* Token ids of a synthetic text stream shared with torch_models.py: the
 * same hash as fill_data, its high bits taken modulo the vocabulary. */
static void fill_tokens(int32_t *t, int64_t n, int64_t vocab, uint32_t seed) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t h = (uint32_t)((uint64_t)(i + seed * 7919u) * 2654435761u);
    t[i] = (int32_t)((h >> 16) % (uint32_t)vocab);
  }
}

/* A text model file's training step, as `nabla train` builds it (fit_text.c):
 * ids [batch, T] -> logits -> mean next-token cross-entropy -> the recipe's
 * update (backward, clipping, optimizer). Targets are the ids shifted by
 * one position of the same stream. */
static int run_gpt(const options *o, const char *path) {
  if (!path) {
    fprintf(stderr, "bench_models: gpt_train needs --model FILE (models/gpt_char.cfg)\n");
    return 2;
  }
  nb_model *m;
  CHECK(nb_model_load(path, &m));
  const nb_recipe *r = nb_model_recipe(m);
  int64_t in[NB_MAX_DIMS], B = r->batch;
  if (!nb_model_is_text(m) || nb_model_input_shape(m, in, NULL) != 1) {
    fprintf(stderr, "bench_models: %s is not a token-sequence model\n", path);
    return 2;
  }
  int64_t T = in[0], bt[2] = {B, T}, rows = B * T, vocab = nb_model_classes(m);
  nb_backend *be;
  nb_state *state;
  CHECK(open_device(o, &be));
  CHECK(nb_state_new(be, &state));
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_model_new_input(m, g, "ids", B);
  nb_tensor *y = nb_input(g, "targets", NB_I32, 2, bt);
  nb_nn nn = {.g = g, .training = 1, .seed = r->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  CHECK(nb_graph_status(g));
  CHECK(nb_model_build(m, &nn, x, &logits));
  int64_t flat[2] = {rows, vocab};
  nb_tensor *loss = nb_cross_entropy(g, nb_reshape(g, logits, 2, flat), nb_reshape(g, y, 1, &rows),
                                     r->label_smoothing);
  nb_tensor_set_output(loss);
  CHECK(nb_graph_status(g));
  nb_optimizer *opt;
  CHECK(nb_recipe_update(r, g, loss, NULL, &opt));
  nb_plan *plan;
  CHECK(nb_compile(g, be, state, NULL, &plan));

  int32_t *ids = malloc((size_t)(N_BATCHES * rows + 1) * sizeof *ids);
  double *ms = malloc((size_t)o->windows * sizeof(double));
  if (!ids || !ms || nb_tensor_dtype(x) != NB_I32) {
    fprintf(stderr, "bench_models: out of memory or ids not i32\n");
    return 1;
  }
  fill_tokens(ids, N_BATCHES * rows + 1, vocab, 1);
  int total = o->warmup + o->windows * o->steps;
  double t0 = 0, c0 = 0;
  for (int i = 0; i < total; i++) {
    int w = i - o->warmup;
    if (w == 0) c0 = cpu_seconds();
    if (w >= 0 && w % o->steps == 0) t0 = now();
    const int32_t *bx = ids + (i % N_BATCHES) * rows;
    CHECK(nb_plan_set_input(plan, x, bx, (size_t)rows * sizeof *bx));
    CHECK(nb_plan_set_input(plan, y, bx + 1, (size_t)rows * sizeof *bx));
    CHECK(nb_optimizer_feed(opt, plan, i + 1, 1e-3f));
    CHECK(nb_plan_run(plan));
    float l;
    CHECK(nb_plan_get(plan, loss, &l, sizeof l));
    if (!(l == l)) {
      fprintf(stderr, "bench_models: loss is NaN at step %d\n", i);
      return 1;
    }
    if (w >= 0 && w % o->steps == o->steps - 1) ms[w / o->steps] = (now() - t0) * 1e3 / o->steps;
  }
  double cpu_ms = (cpu_seconds() - c0) * 1e3 / (o->windows * o->steps);
  nb_plan_stats s = nb_plan_get_stats(plan);
  char extra[256];
  snprintf(extra, sizeof extra,
           ", \"batch\": %lld, \"kernels\": %d, \"arena_mb\": %.2f, \"vocab\": %lld", (long long)B,
           s.kernels, s.arena_bytes / 1e6, (long long)vocab);
  device_memory(be, extra, sizeof extra);
  report("gpt_train", o, ms, cpu_ms, rows, extra);
  free(ids);
  free(ms);
  nb_optimizer_free(opt);
  nb_plan_free(plan);
  nb_graph_free(g);
  nb_state_free(state);
  nb_backend_free(be);
  nb_model_free(m);
  return 0;
}

/* C = A B for n x n matrices through a one-node matmul plan. */
static int run_sgemm(const options *o, int64_t n) {
  nb_backend *be;
  nb_state *state;
  CHECK(open_device(o, &be));
  CHECK(nb_state_new(be, &state));
  nb_graph *g = nb_graph_new();
  int64_t s[2] = {n, n};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, s), *b = nb_input(g, "b", NB_F32, 2, s);
  nb_tensor *c = nb_matmul(g, a, b);
  nb_tensor_set_output(c);
  CHECK(nb_graph_status(g));
  nb_plan *plan;
  CHECK(nb_compile(g, be, state, NULL, &plan));
  float *buf = malloc((size_t)(n * n) * sizeof(float));
  if (!buf) return 1;
  fill_data(buf, n * n, 1);
  CHECK(nb_plan_set_input(plan, a, buf, (size_t)(n * n) * sizeof(float)));
  fill_data(buf, n * n, 2);
  CHECK(nb_plan_set_input(plan, b, buf, (size_t)(n * n) * sizeof(float)));
  double *ms = malloc((size_t)o->windows * sizeof(double));
  /* on an asynchronous device (not the CPU) each window ends by reading C
   * back, which waits for its work; the CPU keeps its bare loop */
  int sync = strncmp(nb_backend_name(be), "cpu", 3) != 0;
  size_t cbytes = (size_t)(n * n) * sizeof(float);
  for (int i = 0; i < o->warmup; i++) CHECK(nb_plan_run(plan));
  if (sync) CHECK(nb_plan_get(plan, c, buf, cbytes));
  double c0 = cpu_seconds();
  for (int w = 0; w < o->windows; w++) {
    double t0 = now();
    for (int i = 0; i < o->steps; i++) CHECK(nb_plan_run(plan));
    if (sync) CHECK(nb_plan_get(plan, c, buf, cbytes));
    ms[w] = (now() - t0) * 1e3 / o->steps;
  }
  CHECK(nb_plan_get(plan, c, buf, cbytes));
  char extra[192];
  snprintf(extra, sizeof extra, ", \"flops_per_step\": %.0f", 2.0 * (double)n * n * n);
  device_memory(be, extra, sizeof extra);
  double cpu_ms = (cpu_seconds() - c0) * 1e3 / (o->windows * o->steps);
  report("sgemm1024", o, ms, cpu_ms, 1, extra);
  free(buf);
  free(ms);
  nb_plan_free(plan);
  nb_graph_free(g);
  nb_state_free(state);
  nb_backend_free(be);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_models CASE [--threads T] [--warmup W] [--windows K] "
                    "[--steps S] [--model FILE] [--device DEV] [--batch B] [--precision P]\n");
    return 2;
  }
  const char *name = argv[1], *model = NULL;
  options o = {
      .threads = 0, .warmup = 10, .windows = 5, .steps = 20, .device = "cpu", .precision = "fp32"};
  for (int i = 2; i + 1 < argc; i += 2) {
    int v = atoi(argv[i + 1]);
    if (!strcmp(argv[i], "--model"))
      model = argv[i + 1];
    else if (!strcmp(argv[i], "--device"))
      o.device = argv[i + 1];
    else if (!strcmp(argv[i], "--precision"))
      o.precision = argv[i + 1];
    else if (!strcmp(argv[i], "--batch"))
      o.batch = v > 0 ? v : -1;
    else if (!strcmp(argv[i], "--threads"))
      o.threads = v;
    else if (!strcmp(argv[i], "--warmup"))
      o.warmup = v;
    else if (!strcmp(argv[i], "--windows"))
      o.windows = v;
    else if (!strcmp(argv[i], "--steps"))
      o.steps = v;
    else {
      fprintf(stderr, "bench_models: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (o.windows < 1 || o.steps < 1 || o.warmup < 0) {
    fprintf(stderr, "bench_models: windows and steps must be >= 1\n");
    return 2;
  }
  if (!strcmp(o.precision, "bf16") && (!strcmp(name, "sgemm1024") || !strcmp(name, "gpt_train"))) {
    fprintf(stderr,
            "bench_models: --precision bf16: only the CNN cases run under autocast here; use "
            "fp32, or tf32 on cuda\n");
    return 3;
  }
  if (strcmp(o.precision, "fp32") && strcmp(o.precision, "tf32") && strcmp(o.precision, "bf16")) {
    fprintf(stderr, "bench_models: unknown --precision %s (fp32, tf32, bf16)\n", o.precision);
    return 2;
  }
  if (!strcmp(o.precision, "tf32") && strncmp(o.device, "cuda", 4)) {
    fprintf(stderr, "bench_models: --precision tf32 needs a cuda device\n");
    return 2;
  }
  if (o.batch < 0 || (o.batch > 0 && (!strcmp(name, "sgemm1024") || !strcmp(name, "gpt_train")))) {
    fprintf(stderr, "bench_models: --batch takes B >= 1 and applies to the CNN cases only\n");
    return 2;
  }
  nb_set_num_threads(o.threads);
  o.threads = nb_get_num_threads();
  if (!strcmp(name, "sgemm1024")) return run_sgemm(&o, 1024);
  if (!strcmp(name, "gpt_train")) return run_gpt(&o, model);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (!strcmp(name, cases[i].name)) return run_model(&cases[i], &o);
  fprintf(stderr, "bench_models: unknown case %s\n", name);
  return 2;
}
