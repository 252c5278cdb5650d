/* Trains the reference MNIST CNN with nabla's graph API on the CPU:
 *   Conv2d(1,32,3)+ReLU, MaxPool2, Conv2d(32,64,3)+ReLU, MaxPool2, Flatten,
 *   Linear(1600,128)+ReLU, Linear(128,10), cross-entropy, Adam with a
 *   one-cycle learning-rate schedule (peak 3e-3, torch's OneCycleLR).
 * One training step (forward, backward, Adam) is one compiled plan; the
 * evaluation plan shares the parameters through one nb_state. Progress is
 * a bar on a terminal (log lines otherwise), and the final evaluation ends
 * with scikit-learn's classification report and the confusion matrix.
 *
 * usage: mnist_cnn [--data DIR] [--epochs N] [--batch B] [--lr PEAK]
 *                  [--threads T] [--seed S] [--limit N] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nabla/nabla.h"

#define CHECK(expr)                                                                                \
  do {                                                                                             \
    nb_status st_ = (expr);                                                                        \
    if (st_) {                                                                                     \
      fprintf(stderr, "mnist_cnn: %s: %s\n", nb_status_name(st_), nb_last_error());                \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

typedef struct {
  int epochs, batch, threads, limit;
  float lr;
  uint64_t seed;
  const char *data;
} options;

/* PyTorch's default init for conv/linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static nb_tensor *param(nb_graph *g, const char *name, int ndim, const int64_t *shape,
                        int64_t fan_in, uint64_t seed) {
  float b = 1.0f / sqrtf((float)fan_in);
  nb_init init = {NB_INIT_UNIFORM, -b, b, seed};
  return nb_param(g, name, ndim, shape, init);
}

static nb_tensor *conv_relu(nb_graph *g, nb_tensor *x, const char *name, int64_t cin, int64_t cout,
                            uint64_t seed) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.weight", name);
  snprintf(bn, sizeof bn, "%s.bias", name);
  int64_t ws[4] = {cout, cin, 3, 3}, bs[4] = {1, cout, 1, 1};
  nb_tensor *w = param(g, wn, 4, ws, cin * 9, seed);
  nb_tensor *b = param(g, bn, 4, bs, cin * 9, seed + 1);
  nb_conv2d_params p = nb_conv2d_defaults();
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

static nb_tensor *model(nb_graph *g, nb_tensor *x, uint64_t seed) {
  nb_pool2d_params pool = nb_pool2d_defaults(2, 2);
  nb_tensor *h = conv_relu(g, x, "conv1", 1, 32, seed);
  h = nb_max_pool2d(g, h, &pool);
  h = conv_relu(g, h, "conv2", 32, 64, seed + 10);
  h = nb_max_pool2d(g, h, &pool);
  int64_t flat[2] = {nb_tensor_shape(h)[0], 1600};
  h = nb_relu(g, linear(g, nb_reshape(g, h, 2, flat), "fc1", 1600, 128, seed + 20));
  return linear(g, h, "fc2", 128, 10, seed + 30);
}

typedef struct {
  float *images; /* N x 784, normalised */
  int64_t *labels;
  int64_t n;
} dataset;

static int load_split(const char *dir, const char *prefix, int64_t limit, dataset *d) {
  char ip[1024], lp[1024];
  snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
  snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
  nb_idx im, lb;
  CHECK(nb_idx_load(ip, &im));
  if (nb_idx_load(lp, &lb)) {
    fprintf(stderr, "mnist_cnn: %s\n", nb_last_error());
    nb_idx_free(&im);
    return 1;
  }
  if (im.ndim != 3 || im.shape[1] != 28 || im.shape[2] != 28 || lb.ndim != 1 ||
      lb.shape[0] != im.shape[0] || im.dtype != NB_U8 || lb.dtype != NB_U8) {
    fprintf(stderr, "mnist_cnn: %s and %s are not matching MNIST image/label files\n", ip, lp);
    nb_idx_free(&im);
    nb_idx_free(&lb);
    return 1;
  }
  d->n = limit > 0 && limit < im.shape[0] ? limit : im.shape[0];
  d->images = malloc((size_t)d->n * 784 * sizeof(float));
  d->labels = malloc((size_t)d->n * sizeof(int64_t));
  const uint8_t *px = im.data, *lab = lb.data;
  for (int64_t i = 0; i < d->n * 784; i++)
    d->images[i] = ((float)px[i] / 255.0f - 0.1307f) / 0.3081f;
  for (int64_t i = 0; i < d->n; i++) d->labels[i] = lab[i];
  nb_idx_free(&im);
  nb_idx_free(&lb);
  return 0;
}

static int exists(const char *dir) {
  char p[1024];
  struct stat s;
  snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
  return stat(p, &s) == 0;
}

/* --data, then $NABLA_DATA (or its mnist/ subfolder), then ../shared/data/mnist. */
static const char *find_data(const char *given, char *buf, size_t cap) {
  if (given) return given;
  const char *env = getenv("NABLA_DATA");
  if (env) {
    snprintf(buf, cap, "%s/mnist", env);
    if (exists(buf)) return buf;
    if (exists(env)) return env;
  }
  if (exists("../shared/data/mnist")) return "../shared/data/mnist";
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse(int argc, char **argv, options *o) {
  *o = (options){.epochs = 2, .batch = 64, .threads = 0, .limit = 0, .lr = 3e-3f, .seed = 1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: mnist_cnn [--data DIR] [--epochs N] [--batch B] [--lr PEAK] [--threads T]\n"
             "                 [--seed S] [--limit N]\n");
      exit(0);
    }
    if (!v) {
      fprintf(stderr, "mnist_cnn: %s needs a value (see --help)\n", a);
      return 1;
    }
    if (!strcmp(a, "--data"))
      o->data = v;
    else if (!strcmp(a, "--epochs"))
      o->epochs = atoi(v);
    else if (!strcmp(a, "--batch"))
      o->batch = atoi(v);
    else if (!strcmp(a, "--lr"))
      o->lr = (float)atof(v);
    else if (!strcmp(a, "--threads"))
      o->threads = atoi(v);
    else if (!strcmp(a, "--seed"))
      o->seed = (uint64_t)atoll(v);
    else if (!strcmp(a, "--limit"))
      o->limit = atoi(v);
    else {
      fprintf(stderr, "mnist_cnn: unknown option %s (see --help)\n", a);
      return 1;
    }
    i++;
  }
  if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0)) {
    fprintf(stderr, "mnist_cnn: epochs and batch must be >= 1 and lr > 0\n");
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  options o;
  if (parse(argc, argv, &o)) return 2;
  nb_set_num_threads(o.threads);
  char buf[1024];
  const char *dir = find_data(o.data, buf, sizeof buf);
  if (!dir) {
    fprintf(stderr, "mnist_cnn: MNIST not found: pass --data DIR, set NABLA_DATA, or run "
                    "scripts/download_data.sh\n");
    return 1;
  }
  dataset train, test;
  if (load_split(dir, "train", o.limit, &train) || load_split(dir, "t10k", o.limit, &test))
    return 1;
  printf("MNIST from %s: %lld train, %lld test images; %d threads\n", dir, (long long)train.n,
         (long long)test.n, nb_get_num_threads());

  nb_backend *cpu;
  nb_state *state;
  CHECK(nb_backend_new("cpu", &cpu));
  CHECK(nb_state_new(cpu, &state));

  /* training step: forward + backward + Adam in one plan */
  int64_t B = o.batch;
  nb_graph *g = nb_graph_new();
  int64_t xs[4] = {B, 1, 28, 28}, ls[1] = {B};
  nb_tensor *x = nb_input(g, "images", NB_F32, 4, xs);
  nb_tensor *y = nb_input(g, "labels", NB_I64, 1, ls);
  nb_tensor *logits = model(g, x, o.seed);
  nb_tensor *loss = nb_cross_entropy(g, logits, y, 0.0f);
  nb_tensor *correct =
      nb_sum(g, nb_eq(g, nb_cast(g, nb_argmax(g, logits, 1, 0), NB_F32), nb_cast(g, y, NB_F32)), 0,
             NULL, 0);
  nb_tensor_set_output(loss);
  nb_tensor_set_output(correct);
  CHECK(nb_graph_status(g));
  CHECK(nb_graph_backward(g, loss));
  nb_optimizer *adam;
  CHECK(nb_optimizer_adam(g, 0.9f, 0.999f, 1e-8f, 0.0f, 0, &adam));
  nb_plan *step;
  CHECK(nb_compile(g, cpu, state, NULL, &step));
  nb_plan_stats s = nb_plan_get_stats(step);
  printf("train plan: %d nodes, %d kernels (%d fused groups, %d in place), arena %.1f MB "
         "(naive %.1f MB)\n",
         s.nodes, s.kernels, s.fused_groups, s.inplace, s.arena_bytes / 1e6, s.naive_bytes / 1e6);

  /* evaluation: same parameters (same names, same state), batch 500 */
  int64_t EB = test.n % 500 == 0 ? 500 : 1;
  nb_graph *ge = nb_graph_new();
  int64_t exs[4] = {EB, 1, 28, 28}, els[1] = {EB};
  nb_tensor *ex = nb_input(ge, "images", NB_F32, 4, exs);
  nb_tensor *ey = nb_input(ge, "labels", NB_I64, 1, els);
  nb_tensor *elogits = model(ge, ex, o.seed);
  nb_tensor *eloss = nb_cross_entropy(ge, elogits, ey, 0.0f);
  nb_tensor *epred = nb_argmax(ge, elogits, 1, 0);
  nb_tensor *ecorrect =
      nb_sum(ge, nb_eq(ge, nb_cast(ge, epred, NB_F32), nb_cast(ge, ey, NB_F32)), 0, NULL, 0);
  nb_tensor_set_output(eloss);
  nb_tensor_set_output(ecorrect);
  nb_tensor_set_output(epred); /* predictions for the confusion matrix */
  nb_plan *eval;
  CHECK(nb_compile(ge, cpu, state, NULL, &eval));

  int64_t steps_per_epoch = train.n / B, total = steps_per_epoch * o.epochs, t = 0;
  nb_schedule sched = nb_schedule_one_cycle(o.lr, total);
  CHECK(nb_schedule_check(&sched));
  char desc[256];
  printf("schedule: %s\n", nb_schedule_describe(&sched, desc, sizeof desc));
  nb_confusion *conf;
  CHECK(nb_confusion_new(10, &conf));
  int64_t *epreds = malloc((size_t)EB * sizeof *epreds);
  int64_t *perm = malloc((size_t)train.n * sizeof *perm);
  float *bx = malloc((size_t)B * 784 * sizeof(float));
  int64_t *by = malloc((size_t)B * sizeof(int64_t));
  nb_rng rng;
  nb_rng_seed(&rng, o.seed);
  double t_train = 0;
  float acc = 0;
  for (int epoch = 1; epoch <= o.epochs; epoch++) {
    for (int64_t i = 0; i < train.n; i++) perm[i] = i;
    for (int64_t i = train.n - 1; i > 0; i--) { /* Fisher-Yates */
      int64_t j = (int64_t)(nb_rng_next(&rng) % (uint64_t)(i + 1)), tmp = perm[i];
      perm[i] = perm[j];
      perm[j] = tmp;
    }
    double t0 = now(), loss_sum = 0, hits = 0;
    char label[32];
    snprintf(label, sizeof label, "epoch %d/%d", epoch, o.epochs);
    nb_progress *prog;
    CHECK(nb_progress_new(stdout, label, steps_per_epoch, NB_PROGRESS_AUTO, &prog));
    CHECK(nb_progress_set_unit(prog, "img", (double)B));
    for (int64_t b = 0; b < steps_per_epoch; b++) {
      for (int64_t k = 0; k < B; k++) {
        int64_t idx = perm[b * B + k];
        memcpy(bx + k * 784, train.images + idx * 784, 784 * sizeof(float));
        by[k] = train.labels[idx];
      }
      CHECK(nb_plan_set_input(step, x, bx, (size_t)B * 784 * sizeof(float)));
      CHECK(nb_plan_set_input(step, y, by, (size_t)B * sizeof(int64_t)));
      t++;
      CHECK(nb_optimizer_feed(adam, step, t, (float)nb_schedule_lr(&sched, t)));
      CHECK(nb_plan_run(step));
      float l, c;
      CHECK(nb_plan_get(step, loss, &l, sizeof l));
      CHECK(nb_plan_get(step, correct, &c, sizeof c));
      loss_sum += l;
      hits += c;
      const char *names[2] = {"loss", "acc"};
      double values[2] = {loss_sum / (double)(b + 1), hits / (double)((b + 1) * B)};
      CHECK(nb_progress_update(prog, b + 1, 2, names, values));
    }
    t_train += now() - t0;
    CHECK(nb_progress_end(prog));
    nb_progress_free(prog);
    double eloss_sum = 0, ehits = 0;
    nb_confusion_reset(conf);
    for (int64_t b = 0; b < test.n / EB; b++) {
      CHECK(nb_plan_set_input(eval, ex, test.images + b * EB * 784,
                              (size_t)EB * 784 * sizeof(float)));
      CHECK(nb_plan_set_input(eval, ey, test.labels + b * EB, (size_t)EB * sizeof(int64_t)));
      CHECK(nb_plan_run(eval));
      float l, c;
      CHECK(nb_plan_get(eval, eloss, &l, sizeof l));
      CHECK(nb_plan_get(eval, ecorrect, &c, sizeof c));
      CHECK(nb_plan_get(eval, epred, epreds, (size_t)EB * sizeof *epreds));
      CHECK(nb_confusion_add(conf, epreds, test.labels + b * EB, EB));
      eloss_sum += l;
      ehits += c;
    }
    acc = (float)(ehits / (double)test.n);
    printf("epoch %d  test loss %.4f  test accuracy %.2f%%\n", epoch,
           eloss_sum / (double)(test.n / EB), 100.0 * acc);
  }
  printf("\n");
  CHECK(nb_confusion_report(conf, stdout, NULL, 4));
  printf("\n");
  CHECK(nb_confusion_print(conf, stdout, NULL));
  printf("training: %.1f s, %.0f images/s\n", t_train, (double)(total * B) / t_train);
  printf("{\"test_accuracy\": %.4f, \"epochs\": %d, \"images_per_sec\": %.0f}\n", acc, o.epochs,
         (double)(total * B) / t_train);
  free(perm);
  free(epreds);
  nb_confusion_free(conf);
  free(bx);
  free(by);
  free(train.images);
  free(train.labels);
  free(test.images);
  free(test.labels);
  nb_optimizer_free(adam);
  nb_plan_free(step);
  nb_plan_free(eval);
  nb_graph_free(g);
  nb_graph_free(ge);
  nb_state_free(state);
  nb_backend_free(cpu);
  return 0;
}
