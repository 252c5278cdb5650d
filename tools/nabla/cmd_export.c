/* `nabla export MODEL WEIGHTS -o OUT.onnx`: writes a model file's network
 * with trained weights as an ONNX model, and with --verify reads it back
 * through nabla's ONNX importer and checks that it predicts what the model
 * predicts, example for example, on the test split. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/fit.h"
#include "nabla/nabla.h"
#include "nabla/onnx.h"

/* Batch of the verification plans: the exported batch when it is fixed. */
#define VERIFY_BATCH(c) ((c)->o.dynamic_batch ? 100 : 1)

typedef struct {
  const char *model, *weights, *out, *data, *dataset;
  int verify, threads;
  int64_t limit;
  nb_onnx_export_options o;
} cli;

static void usage(FILE *f) {
  fprintf(f, "usage: nabla export MODEL WEIGHTS -o OUT.onnx [--normalize] [--softmax]\n"
             "                    [--static-batch] [--verify] [--data DIR] [--dataset NAME]\n"
             "                    [--limit N] [--threads T]\n"
             "Writes MODEL with the weights in WEIGHTS (weights.safetensors or a checkpoint)\n"
             "as an ONNX model (opset 17) for inference: input \"input\" [N, ...], output\n"
             "\"logits\" [N, classes]. Check it with onnx.checker.check_model (docs/onnx.md).\n"
             "  --normalize     include the recipe's (x - mean) / std: the model takes raw inputs\n"
             "  --softmax       output \"probabilities\" instead of logits\n"
             "  --static-batch  a fixed batch of 1 instead of the symbolic batch N\n"
             "  --verify        read OUT back with nabla's ONNX importer and compare its\n"
             "                  predictions with MODEL's on the test split (--limit N examples)\n");
}

static int parse(int argc, char **argv, cli *c) {
  memset(c, 0, sizeof *c);
  c->o = nb_onnx_export_defaults();
  c->o.producer_version = NABLA_VERSION;
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return -1;
    }
    if (!strcmp(a, "--normalize") || !strcmp(a, "--softmax") || !strcmp(a, "--static-batch") ||
        !strcmp(a, "--verify")) {
      if (!strcmp(a, "--normalize")) c->o.normalize = 1;
      if (!strcmp(a, "--softmax")) c->o.softmax = 1;
      if (!strcmp(a, "--static-batch")) c->o.dynamic_batch = 0;
      if (!strcmp(a, "--verify")) c->verify = 1;
      continue;
    }
    if (a[0] != '-') {
      if (pos == 0)
        c->model = a;
      else if (pos == 1)
        c->weights = a;
      else {
        fprintf(stderr, "nabla export: unexpected argument '%s' (see --help)\n", a);
        return 2;
      }
      pos++;
      continue;
    }
    static const char *const valued[] = {"-o",        "--out",   "--data",
                                         "--dataset", "--limit", "--threads"};
    int known = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) known |= !strcmp(a, valued[k]);
    if (!known) {
      fprintf(stderr, "nabla export: unknown option %s (see --help)\n", a);
      return 2;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL;
    if (!v) {
      fprintf(stderr, "nabla export: %s needs a value (see --help)\n", a);
      return 2;
    }
    char *end = NULL;
    if (!strcmp(a, "-o") || !strcmp(a, "--out"))
      c->out = v;
    else if (!strcmp(a, "--data"))
      c->data = v;
    else if (!strcmp(a, "--dataset"))
      c->dataset = v;
    else if (!strcmp(a, "--limit"))
      c->limit = strtoll(v, &end, 10);
    else
      c->threads = (int)strtol(v, &end, 10);
    if ((end && *end) || c->limit < 0) {
      fprintf(stderr, "nabla export: %s expects a number >= 0, got '%s'\n", a, v);
      return 2;
    }
  }
  if (pos < 2 || !c->out) {
    fprintf(stderr, "nabla export: expected MODEL WEIGHTS -o OUT.onnx (see --help)\n");
    return 2;
  }
  nb_set_num_threads(c->threads);
  return 0;
}

/* The nabla side: the model's inference graph on a batch of `batch`, the
 * way the exported model computes it (softmax when asked), compiled, with
 * the weights loaded. */
typedef struct {
  nb_graph *g;
  nb_tensor *x, *y;
  nb_plan *plan;
} net;

static void net_free(net *n) {
  nb_plan_free(n->plan);
  nb_graph_free(n->g);
  memset(n, 0, sizeof *n);
}

static nb_status net_build(const nb_model *m, const cli *c, nb_backend *be, nb_state *st,
                           int64_t batch, net *n) {
  memset(n, 0, sizeof *n);
  n->g = nb_graph_new();
  if (!n->g) return nb_error(NB_ERR_OOM, "out of memory");
  nb_nn nn = {.g = n->g, .training = 0, .seed = 1, .init = NB_NN_INIT_TORCH};
  n->x = nb_model_new_input(m, n->g, "x", batch);
  nb_status rc = nb_model_build(m, &nn, n->x, &n->y);
  if (!rc && c->o.softmax) n->y = nb_softmax(n->g, n->y, -1);
  if (!rc) rc = nb_graph_status(n->g);
  if (!rc) {
    nb_tensor_set_output(n->y);
    rc = nb_compile(n->g, be, st, NULL, &n->plan);
  }
  return rc;
}

/* The ONNX side: the exported file through the importer, for `batch`. */
static nb_status onnx_build(const char *path, const nb_model *m, nb_backend *be, int64_t batch,
                            nb_state **st, net *n) {
  memset(n, 0, sizeof *n);
  nb_onnx_model *om = NULL;
  int64_t shape[NB_MAX_DIMS + 1];
  shape[0] = batch;
  int nd = nb_model_input_shape(m, shape + 1, NULL);
  nb_onnx_input in = {"input", nd + 1, shape, NULL};
  nb_status rc = nb_onnx_load(path, &om);
  if (!rc && !(n->g = nb_graph_new())) rc = nb_error(NB_ERR_OOM, "out of memory");
  if (!rc) rc = nb_onnx_build(om, n->g, 1, &in, &n->x, &n->y);
  if (!rc) rc = nb_state_new(be, st);
  if (!rc) rc = nb_compile(n->g, be, *st, NULL, &n->plan);
  nb_onnx_free(om);
  return rc;
}

/* The dataset a model is evaluated on: --dataset, else from its input shape
 * (as nabla eval picks it). */
static nb_status load_test(const cli *c, const nb_model *m, nb_dataset *raw) {
  const char *name = c->dataset;
  int64_t s[NB_MAX_DIMS];
  int nd = nb_model_input_shape(m, s, NULL);
  if (!name && nd == 3 && s[0] == 1 && s[1] == 28 && s[2] == 28) name = "mnist";
  if (!name && nd == 3 && s[0] == 3 && s[1] == 32 && s[2] == 32) name = "cifar10";
  if (!name)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: cannot tell which dataset fits its input; pass --dataset NAME", c->model);
  char dir[1024];
  nb_status rc = nb_data_find(name, c->data, dir, sizeof dir);
  if (rc) return rc;
  if (!strcmp(name, "mnist")) return nb_mnist_load(dir, NB_SPLIT_TEST, c->limit, raw);
  if (!strcmp(name, "fashion-mnist"))
    return nb_fashion_mnist_load(dir, NB_SPLIT_TEST, c->limit, raw);
  if (!strcmp(name, "cifar10")) return nb_cifar10_load(dir, NB_SPLIT_TEST, c->limit, raw);
  return nb_error(NB_ERR_INVALID_ARG,
                  "unknown dataset '%s' (expected mnist, fashion-mnist or cifar10)", name);
}

static int64_t argmax(const float *v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (v[j] > v[best]) best = j;
  return best;
}

/* Runs one batch (rows [i, i + b) of data, zero-padded to `batch`). */
static nb_status run_batch(net *n, const nb_dataset *d, int64_t i, int64_t b, int64_t batch,
                           float *x, float *y, int64_t classes) {
  size_t ex = (size_t)d->example_numel;
  memset(x, 0, (size_t)batch * ex * sizeof *x);
  memcpy(x, d->x + (size_t)i * ex, (size_t)b * ex * sizeof *x);
  nb_status rc = nb_plan_set_input(n->plan, n->x, x, (size_t)batch * ex * sizeof *x);
  if (!rc) rc = nb_plan_run(n->plan);
  if (!rc) rc = nb_plan_get(n->plan, n->y, y, (size_t)(batch * classes) * sizeof *y);
  return rc;
}

static nb_status verify(const cli *c, const nb_model *m, nb_backend *be, net *mine, int *differ) {
  nb_dataset raw, norm;
  memset(&raw, 0, sizeof raw);
  memset(&norm, 0, sizeof norm);
  nb_state *ost = NULL;
  net theirs;
  memset(&theirs, 0, sizeof theirs);
  int64_t classes = nb_model_classes(m), batch = VERIFY_BATCH(c);
  float *x = NULL, *ya = NULL, *yb = NULL;
  nb_status rc = load_test(c, m, &raw);
  if (!rc) rc = nb_dataset_alloc(&norm, raw.n, raw.ndim, raw.shape);
  if (!rc) {
    memcpy(norm.x, raw.x, (size_t)(raw.n * raw.example_numel) * sizeof *raw.x);
    rc = nb_recipe_normalize(nb_model_recipe(m), &norm);
  }
  if (!rc && classes <= 0) rc = nb_error(NB_ERR_UNSUPPORTED, "%s has no classes", c->model);
  if (!rc) rc = onnx_build(c->out, m, be, batch, &ost, &theirs);
  if (!rc) {
    x = malloc((size_t)(batch * raw.example_numel) * sizeof *x);
    ya = malloc((size_t)(batch * classes) * sizeof *ya);
    yb = malloc((size_t)(batch * classes) * sizeof *yb);
    if (!x || !ya || !yb) rc = nb_error(NB_ERR_OOM, "out of memory");
  }
  int64_t right_a = 0, right_b = 0, same = 0;
  double maxdiff = 0;
  for (int64_t i = 0; !rc && i < raw.n; i += batch) {
    int64_t b = raw.n - i < batch ? raw.n - i : batch;
    rc = run_batch(mine, &norm, i, b, batch, x, ya, classes);
    /* with --normalize the exported model normalises the raw pixels itself */
    if (!rc) rc = run_batch(&theirs, c->o.normalize ? &raw : &norm, i, b, batch, x, yb, classes);
    for (int64_t k = 0; !rc && k < b; k++) {
      int64_t pa = argmax(ya + k * classes, classes), pb = argmax(yb + k * classes, classes);
      right_a += pa == raw.y[i + k];
      right_b += pb == raw.y[i + k];
      same += pa == pb;
      for (int64_t j = 0; j < classes; j++) {
        double dd = fabs((double)ya[k * classes + j] - (double)yb[k * classes + j]);
        if (dd > maxdiff || isnan(dd)) maxdiff = dd;
      }
    }
  }
  if (!rc) {
    printf("verify: %lld test examples: accuracy %.2f%% (nabla), %.2f%% (ONNX through nabla's "
           "importer); identical predictions %lld/%lld; max |%s difference| %.3g\n",
           (long long)raw.n, raw.n ? 100.0 * (double)right_a / (double)raw.n : 0.0,
           raw.n ? 100.0 * (double)right_b / (double)raw.n : 0.0, (long long)same, (long long)raw.n,
           c->o.softmax ? "probability" : "logit", maxdiff);
    *differ = same != raw.n;
  }
  free(x);
  free(ya);
  free(yb);
  net_free(&theirs);
  nb_state_free(ost);
  nb_dataset_free(&raw);
  nb_dataset_free(&norm);
  return rc;
}

int nabla_cmd_export(int argc, char **argv) {
  cli c;
  int p = parse(argc, argv, &c);
  if (p) return p < 0 ? 0 : p;
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  net mine;
  memset(&mine, 0, sizeof mine);
  int differ = 0;
  nb_status rc = nb_model_load(c.model, &m);
  if (!rc) rc = nb_backend_new("cpu", &be);
  if (!rc) rc = nb_state_new(be, &st);
  /* compiling creates the model's variables, so the weights file is
   * checked against them by name, dtype and shape; checkpoints also hold
   * optimizer moments, which are not part of the model */
  if (!rc) rc = net_build(m, &c, be, st, VERIFY_BATCH(&c), &mine);
  if (!rc) rc = nb_safetensors_load(c.weights, st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
  if (!rc) rc = nb_onnx_export_model(m, st, &c.o, c.out);
  if (!rc) {
    int64_t s[NB_MAX_DIMS];
    int nd = nb_model_input_shape(m, s, NULL);
    char shape[128] = "";
    for (int i = 0; i < nd; i++)
      snprintf(shape + strlen(shape), sizeof shape - strlen(shape), ", %lld", (long long)s[i]);
    printf("%s: input \"input\" [%s%s], output \"%s\" [%s, %lld], opset 17\n", c.out,
           c.o.dynamic_batch ? "N" : "1", shape, c.o.softmax ? "probabilities" : "logits",
           c.o.dynamic_batch ? "N" : "1", (long long)nb_model_classes(m));
  }
  if (!rc && c.verify) rc = verify(&c, m, be, &mine, &differ);
  int code = 0;
  if (rc) {
    fprintf(stderr, "nabla export: %s\n", nb_last_error());
    code = 1;
  } else if (differ) {
    fprintf(stderr, "nabla export: verify: the ONNX model's predictions differ from the model's\n");
    code = 1;
  }
  net_free(&mine);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  return code;
}
