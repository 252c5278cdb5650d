/* `nabla train`, `nabla eval` and `nabla predict`: the classic workflow on
 * a model file. The dataset follows from the model's input shape (1x28x28:
 * MNIST, 3x32x32: CIFAR-10) unless --dataset names one. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_dist.h"
#include "cmd_lora.h"
#include "cmd_text.h"
#include "json_str.h"
#include "nabla/fit.h"
#include "nabla/nabla.h"

typedef struct {
  const char *model, *weights, *data, *dataset, *out, *resume, *device;
  int epochs, threads, json, optimizer, top_k, report;
  int distributed;                         /* train: --distributed (MPI required) */
  int64_t batch, limit, steps, eval_every; /* steps, eval_every: text models */
  float lr;
  uint64_t seed;
  const char **files;
  int n_files;
  const char *init_from;   /* train: weights to start from */
  nabla_lora_flags lora;   /* train: adapters */
  const char *place;       /* train: LAYER=DEVICE,... (model parallelism) */
  int micro_batches;       /* train: micro-batches per batch (1F1B) */
  int device_threads;      /* train: threads of each CPU device */
  const char *precision;   /* train: fp32, bf16 or fp16 (mixed precision) */
  int recompute;           /* train: --recompute (activation checkpointing) */
  int64_t tokenizer_vocab; /* train: --tokenizer-vocab N (BPE models) */
  int tokenizer_vocab_set; /* ... given */
} cli;

static int fail(const char *cmd) {
  fprintf(stderr, "nabla %s: %s\n", cmd, nb_last_error());
  return 1;
}

static void usage(const char *cmd, FILE *f) {
  if (!strcmp(cmd, "train"))
    fprintf(f, "usage: nabla train MODEL [--data DIR] [--dataset mnist|fashion-mnist|cifar10]\n"
               "                   [--epochs N] [--batch B] [--lr X] [--optimizer adam|adamw|sgd]\n"
               "                   [--device cpu|cuda:N] [--threads T] [--seed S] [--out DIR]\n"
               "                   [--resume CKPT] [--limit N] [--json] [--distributed]\n"
               "                   [--place LAYER=DEVICE,...] [--micro-batches M]\n"
               "                   [--device-threads T] [--precision fp32|bf16|fp16]\n"
               "                   [--recompute] [--tokenizer-vocab N]\n"
               "Trains MODEL with the recipe in its [train] section (flags override it),\n"
               "evaluates on the test split after every epoch, and writes checkpoints,\n"
               "weights.safetensors, TensorBoard events and log.csv to --out (default runs/NAME).\n"
               "--precision (default: the recipe's, fp32): bf16 or fp16 run matmuls and\n"
               "convolutions in half precision with f32 master weights; fp16 adds dynamic\n"
               "loss scaling (docs/cuda.md, \"Mixed precision\").\n"
               "--recompute (also [train] recompute = yes): recompute each transformer\n"
               "block's and residual block's activations in the backward pass instead of\n"
               "keeping them (activation checkpointing): less memory, one more forward.\n"
               "Data: --data DIR, else $NABLA_DATA, ../shared/data/<name>, data/<name>.\n"
               "Model parallelism: --place LAYER=DEVICE,... puts layers on devices (a\n"
               "layer without one runs where its input comes from; logical CPU devices\n"
               "cpu:0, cpu:1, ... need no GPU), --micro-batches M pipelines each batch\n"
               "over them (1F1B), --device-threads T sets each CPU device's threads\n"
               "(default: the cores split between devices; docs/distributed.md).\n"
               "Data-parallel over processes: mpirun -np N nabla train MODEL ... (detected;\n"
               "--distributed insists on it); --batch is the global batch, split over the\n"
               "ranks; rank 0 prints and writes the files (docs/distributed.md). On GPUs,\n"
               "--device cuda gives each rank cuda:<local rank> and gradients go through\n"
               "NCCL; NABLA_DIST=self --distributed runs one process through that path.\n"
               "Text models (token-sequence input, docs/training.md): --data FILE or DIR\n"
               "(default dataset tinyshakespeare), --steps N, --eval-every N; vocab.txt\n"
               "(vocab.bpe with [net] tokenizer = bpe) is written beside the weights;\n"
               "--tokenizer-vocab N learns a BPE vocabulary of N tokens instead of the\n"
               "file's tokenizer_vocab or tokenizer_file.\n");
  else if (!strcmp(cmd, "eval"))
    fprintf(f, "usage: nabla eval MODEL WEIGHTS [--data DIR] [--dataset NAME] [--batch B]\n"
               "                  [--limit N] [--device cpu|cuda:N] [--threads T] [--json]\n"
               "Accuracy, loss, per-class precision/recall/F1 and the confusion matrix\n"
               "on the test split. Text models: the loss (nats per token) over the\n"
               "validation part of --data (the last 10%%), with WEIGHTS' vocab.txt\n"
               "(or vocab.bpe).\n");
  else
    fprintf(f, "usage: nabla predict MODEL WEIGHTS IMAGE... [--top-k K] [--device cpu|cuda:N]\n"
               "                     [--threads T]\n"
               "Classifies PNG/JPEG images (converted to the model's input size) and\n"
               "prints the top-k classes with their probabilities.\n"
               "An ONNX model takes no weights: nabla predict MODEL.onnx IMAGE... (see\n"
               "nabla predict MODEL.onnx --help).\n");
  if (!strcmp(cmd, "train")) fprintf(f, "%s", nabla_lora_train_usage);
}

static int parse(const char *cmd, int argc, char **argv, int positional, cli *c) {
  memset(c, 0, sizeof *c);
  c->device = "cpu";
  c->optimizer = -1;
  c->top_k = 3;
  c->files = calloc((size_t)argc + 1, sizeof *c->files);
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(cmd, stdout);
      return -1;
    }
    if (!strcmp(a, "--json")) {
      c->json = 1;
      continue;
    }
    if (!strcmp(cmd, "train") && !strcmp(a, "--distributed")) {
      c->distributed = 1;
      continue;
    }
    if (!strcmp(cmd, "train") && !strcmp(a, "--recompute")) {
      c->recompute = 1;
      continue;
    }
    if (a[0] != '-' || a[1] != '-') {
      if (pos == 0)
        c->model = a;
      else if (pos == 1 && positional >= 2)
        c->weights = a;
      else if (positional >= 3)
        c->files[c->n_files++] = a;
      else {
        fprintf(stderr, "nabla %s: unexpected argument '%s' (see --help)\n", cmd, a);
        return 2;
      }
      pos++;
      continue;
    }
    const char *v = i + 1 < argc ? argv[++i] : NULL;
    if (!v) {
      fprintf(stderr, "nabla %s: %s needs a value (see --help)\n", cmd, a);
      return 2;
    }
    char *end = NULL;
    int bad = 0;
    /* the int-valued flags: parsed wide, so an out-of-range value is an
     * error instead of a silently truncated count */
    static const char *const ints[] = {"--micro-batches", "--device-threads", "--epochs",
                                       "--threads", "--top-k"};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
      long long n = strcmp(a, ints[k]) ? 0 : strtoll(v, NULL, 10);
      if (n > INT_MAX || n < INT_MIN) {
        fprintf(stderr, "nabla %s: %s is out of range, got '%s'\n", cmd, a, v);
        return 2;
      }
    }
    if (!strcmp(cmd, "train") && !strcmp(a, "--init-from"))
      c->init_from = v;
    else if (!strcmp(cmd, "train") && !strcmp(a, "--place"))
      c->place = v;
    else if (!strcmp(cmd, "train") && !strcmp(a, "--micro-batches"))
      c->micro_batches = (int)strtol(v, &end, 10);
    else if (!strcmp(cmd, "train") && !strcmp(a, "--device-threads"))
      c->device_threads = (int)strtol(v, &end, 10);
    else if (!strcmp(cmd, "train") && !strcmp(a, "--precision"))
      c->precision = v;
    else if (!strcmp(cmd, "train") && !strcmp(a, "--tokenizer-vocab")) {
      c->tokenizer_vocab = strtoll(v, &end, 10);
      c->tokenizer_vocab_set = 1;
    } else if (!strcmp(cmd, "train") && nabla_lora_parse_flag(a, v, &c->lora, &bad)) {
      if (bad) {
        fprintf(stderr, "nabla %s: bad value '%s' for %s (see --help)\n", cmd, v, a);
        return 2;
      }
    } else if (!strcmp(a, "--data"))
      c->data = v;
    else if (!strcmp(a, "--dataset"))
      c->dataset = v;
    else if (!strcmp(a, "--out"))
      c->out = v;
    else if (!strcmp(a, "--resume"))
      c->resume = v;
    else if (!strcmp(a, "--device"))
      c->device = v;
    else if (!strcmp(a, "--epochs"))
      c->epochs = (int)strtol(v, &end, 10);
    else if (!strcmp(a, "--threads"))
      c->threads = (int)strtol(v, &end, 10);
    else if (!strcmp(cmd, "predict") && !strcmp(a, "--top-k"))
      c->top_k = (int)strtol(v, &end, 10);
    else if (!strcmp(a, "--batch"))
      c->batch = strtoll(v, &end, 10);
    else if (!strcmp(a, "--limit"))
      c->limit = strtoll(v, &end, 10);
    else if (!strcmp(a, "--steps"))
      c->steps = strtoll(v, &end, 10);
    else if (!strcmp(a, "--eval-every"))
      c->eval_every = strtoll(v, &end, 10);
    else if (!strcmp(a, "--seed"))
      c->seed = strtoull(v, &end, 10);
    else if (!strcmp(a, "--lr"))
      c->lr = strtof(v, &end);
    else if (!strcmp(a, "--optimizer")) {
      c->optimizer = !strcmp(v, "adam")    ? NB_RECIPE_ADAM
                     : !strcmp(v, "adamw") ? NB_RECIPE_ADAMW
                     : !strcmp(v, "sgd")   ? NB_RECIPE_SGD
                                           : -2;
      if (c->optimizer == -2) {
        fprintf(stderr, "nabla %s: --optimizer must be adam, adamw or sgd, not '%s'\n", cmd, v);
        return 2;
      }
    } else {
      fprintf(stderr, "nabla %s: unknown option %s (see --help)\n", cmd, a);
      return 2;
    }
    /* an empty value would read as 0, which means "the recipe's" */
    if (end && (*end || end == v || (!strcmp(a, "--lr") && !isfinite(c->lr)))) {
      fprintf(stderr, "nabla %s: %s expects a number, got '%s'\n", cmd, a, v);
      return 2;
    }
  }
  if (pos < (positional >= 3 ? 3 : positional)) {
    usage(cmd, stderr);
    return 2;
  }
  /* name the flag that is out of range */
  const char *neg = c->epochs < 0           ? "--epochs"
                    : c->batch < 0          ? "--batch"
                    : c->limit < 0          ? "--limit"
                    : c->lr < 0             ? "--lr"
                    : c->steps < 0          ? "--steps"
                    : c->eval_every < 0     ? "--eval-every"
                    : c->micro_batches < 0  ? "--micro-batches"
                    : c->device_threads < 0 ? "--device-threads"
                                            : NULL;
  if (neg || c->top_k < 1) {
    fprintf(stderr, "nabla %s: %s must be %s\n", cmd, neg ? neg : "--top-k", neg ? ">= 0" : ">= 1");
    return 2;
  }
  nb_set_num_threads(c->threads);
  return 0;
}

/* The dataset a model trains on: --dataset, else from its input shape. */
static const char *dataset_for(const nb_model *m, const char *given) {
  if (given) return given;
  int64_t shape[NB_MAX_DIMS];
  int nd = nb_model_input_shape(m, shape, NULL);
  if (nd == 3 && shape[0] == 1 && shape[1] == 28 && shape[2] == 28) return "mnist";
  if (nd == 3 && shape[0] == 3 && shape[1] == 32 && shape[2] == 32) return "cifar10";
  return NULL;
}

static nb_status load_split(const char *name, const char *dir, nb_split split, int64_t limit,
                            nb_dataset *d) {
  if (!strcmp(name, "mnist")) return nb_mnist_load(dir, split, limit, d);
  if (!strcmp(name, "fashion-mnist")) return nb_fashion_mnist_load(dir, split, limit, d);
  if (!strcmp(name, "cifar10")) return nb_cifar10_load(dir, split, limit, d);
  return nb_error(NB_ERR_INVALID_ARG,
                  "unknown dataset '%s' (expected mnist, fashion-mnist or cifar10)", name);
}

/* Loads the splits the command needs, normalised with the model's recipe. */
static nb_status load_data(const cli *c, const nb_model *m, int want_train, nb_dataset *train,
                           nb_dataset *test) {
  const char *name = dataset_for(m, c->dataset);
  if (!name)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: cannot tell which dataset fits its input; pass --dataset NAME", c->model);
  if (strcmp(name, "mnist") && strcmp(name, "fashion-mnist") && strcmp(name, "cifar10"))
    return load_split(name, NULL, NB_SPLIT_TEST, 0, test); /* the unknown-name error */
  char dir[1024];
  nb_status rc = nb_data_find(name, c->data, dir, sizeof dir);
  if (!rc && want_train) rc = load_split(name, dir, NB_SPLIT_TRAIN, c->limit, train);
  if (!rc) rc = load_split(name, dir, NB_SPLIT_TEST, c->limit, test);
  /* the examples must be the model's input, not merely as many bytes; a
   * features model ([net] input = F) takes them flattened */
  int64_t in[NB_MAX_DIMS];
  int nd = nb_model_input_shape(m, in, NULL);
  int64_t numel = 1;
  for (int i = 0; i < nd; i++) numel *= in[i];
  int same = !rc && numel == test->example_numel && (nd == 1 || nd == test->ndim);
  for (int i = 0; same && nd > 1 && i < nd; i++) same = in[i] == test->shape[i];
  if (!rc && !same) {
    char want[128], got[128];
    rc = nb_error(NB_ERR_SHAPE,
                  "%s: the model's input is %s but %s examples are %s; change [net] input or "
                  "pass --dataset NAME",
                  c->model, nb_shape_str(nd, in, want, sizeof want), name,
                  nb_shape_str(test->ndim, test->shape, got, sizeof got));
  }
  const nb_recipe *r = nb_model_recipe(m);
  if (!rc && want_train) rc = nb_recipe_normalize(r, train);
  if (!rc) rc = nb_recipe_normalize(r, test);
  return rc;
}

/* The text-model half of train and eval lives in cmd_text.c. */
static nabla_text_args text_args(const cli *c) {
  nabla_text_args a = {c->model,         c->weights,       c->data, c->dataset,   c->out,
                       c->resume,        c->device,        c->json, c->optimizer, c->steps,
                       c->eval_every,    c->batch,         c->lr,   c->seed,      c->init_from,
                       c->micro_batches, c->device_threads};
  return a;
}

static const char *model_name(const nb_model *m) {
  const char *n = nb_model_name(m);
  return n && *n ? n : "model";
}

int nabla_cmd_train(int argc, char **argv) {
  cli c;
  int p = parse("train", argc, argv, 1, &c);
  if (p) {
    free(c.files);
    return p < 0 ? 0 : p;
  }
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_dataset train, test;
  memset(&train, 0, sizeof train);
  memset(&test, 0, sizeof test);
  nb_fit_result res;
  char out[1024];
  nb_dist *dist = NULL;
  nb_status rc = nabla_dist_open(c.distributed, c.threads, &dist);
  const int lead = nb_dist_rank(dist) == 0; /* rank 0 alone prints and writes */
  char rank_device[32];
  c.device = nabla_dist_device(c.device, dist, rank_device, sizeof rank_device);
  if (!rc) rc = nb_model_load(c.model, &m);
  if (!rc) rc = nabla_lora_setup(m, &c.lora, c.json || !lead ? stderr : stdout);
  if (!rc && c.place) rc = nb_model_set_placement(m, c.place);
  if (!rc && c.recompute) rc = nb_model_set_recompute(m, 1);
  if (!rc && c.tokenizer_vocab_set) rc = nb_model_set_tokenizer_vocab(m, c.tokenizer_vocab);
  if (!rc && c.precision) {
    nb_precision prec;
    rc = nb_precision_parse(c.precision, &prec);
    if (!rc) rc = nb_model_set_precision(m, prec);
  }
  /* a flag the model's kind ignores would silently train something else */
  if (!rc && nb_model_is_text(m) && (c.epochs || c.limit))
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "--epochs and --limit apply to image models; %s is a text model: give "
                  "--steps N",
                  c.model);
  if (!rc && !nb_model_is_text(m) && (c.steps || c.eval_every))
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "--steps and --eval-every apply to text models; %s trains for --epochs N",
                  c.model);
  if (!rc && nb_model_is_text(m) && nb_dist_size(dist) > 1)
    rc = nb_error(NB_ERR_UNSUPPORTED, "text models do not train across processes yet");
  if (!rc && nb_model_is_text(m)) {
    nabla_text_args ta = text_args(&c);
    int code = nabla_text_train(m, &ta);
    nb_dist_free(dist);
    nb_model_free(m);
    free(c.files);
    return code;
  }
  if (!rc) rc = load_data(&c, m, 1, &train, &test);
  if (!rc) rc = nb_backend_new(c.device, &be);
  if (!rc) rc = c.init_from ? nabla_init_state(m, be, c.init_from, &st) : nb_state_new(be, &st);
  if (!rc) rc = nabla_open_devices(m, be, st, c.device_threads);
  rc = nb_dist_agree(dist, rc); /* a rank that failed to set up stops the others cleanly */
  if (!rc) {
    snprintf(out, sizeof out, "%s", c.out ? c.out : "runs/");
    if (!c.out) snprintf(out, sizeof out, "runs/%s", model_name(m));
    nb_fit_options o = nb_fit_defaults();
    o.device = c.device;
    o.epochs = c.epochs;
    o.batch = c.batch;
    o.lr = c.lr;
    o.optimizer = c.optimizer;
    o.seed = c.seed;
    o.out_dir = out;
    o.resume = c.resume;
    /* with --json stdout carries only the result line */
    o.log = c.json ? stderr : stdout;
    o.dist = dist;
    o.micro_batches = c.micro_batches;
    if (lead)
      fprintf(o.log, "%s: %lld train / %lld test examples, %d threads, %s, %d process%s\n", c.model,
              (long long)train.n, (long long)test.n, nb_get_num_threads(), nb_backend_name(be),
              nb_dist_size(dist),
              nb_dist_size(dist) > 1         ? "es (MPI)"
              : nb_dist_averages_grads(dist) ? " (NABLA_DIST=self: gradients averaged in the step)"
                                             : "");
    nb_precision prec = nb_model_recipe(m)->precision;
    if (lead && prec != NB_PRECISION_FP32)
      fprintf(o.log, "precision %s: %s matmuls and convolutions, f32 master weights%s\n",
              nb_precision_name(prec), nb_dtype_name(nb_precision_dtype(prec)),
              prec == NB_PRECISION_FP16 ? ", dynamic loss scaling" : "");
    if (lead && (nb_model_device_count(m) || c.micro_batches > 1)) {
      fprintf(o.log, "model parallel: default %s", nb_backend_name(be));
      for (int i = 0; i < nb_model_device_count(m); i++)
        fprintf(o.log, "%s%s", i ? ", " : "; layers also on ", nb_model_device(m, i));
      fprintf(o.log, "; %d micro-batch%s per batch\n", c.micro_batches > 1 ? c.micro_batches : 1,
              c.micro_batches > 1 ? "es" : "");
    }
    rc = nb_fit(m, be, st, &train, &test, &o, &res);
  }
  char adapters[1100];
  adapters[0] = '\0';
  if (!rc && lead) rc = nabla_lora_write(m, st, out, adapters, sizeof adapters);
  if (!rc && adapters[0]) fprintf(c.json ? stderr : stdout, "LoRA adapters: %s\n", adapters);
  int code = 0;
  if (rc) {
    code = nabla_dist_fail(dist, "train");
  } else if (lead) {
    fprintf(c.json ? stderr : stdout,
            "test accuracy %.2f%%, test loss %.4f, %.0f images/s; weights: %s\n",
            100 * res.test_accuracy, res.test_loss, res.images_per_sec, res.weights);
    if (c.json) {
      printf("{\"test_accuracy\": %.6f, \"test_loss\": %.6f, \"train_loss\": %.6f, "
             "\"epochs\": %d, \"steps\": %lld, \"images_per_sec\": %.1f, \"precision\": \"%s\", ",
             res.test_accuracy, res.test_loss, res.train_loss, res.epochs, (long long)res.steps,
             res.images_per_sec, nb_precision_name(nb_model_recipe(m)->precision));
      if (nb_model_recipe(m)->precision == NB_PRECISION_FP16)
        printf("\"loss_scale\": %g, \"skipped_steps\": %lld, ", res.loss_scale,
               (long long)res.skipped_steps);
      printf("\"checkpoint\": ");
      nabla_json_string(stdout, res.checkpoint);
      printf(", \"weights\": ");
      nabla_json_string(stdout, res.weights);
      printf("}\n");
    }
  }
  nb_dataset_free(&train);
  nb_dataset_free(&test);
  nb_state_free(st);
  nb_backend_free(be);
  nb_dist_free(dist);
  nb_model_free(m);
  free(c.files);
  return code;
}

/* An inference plan: the network in eval mode on a batch of one, ending in
 * softmax probabilities. */
typedef struct {
  nb_graph *g;
  nb_tensor *x, *prob;
  nb_plan *plan;
} infer_plan;

static void infer_free(infer_plan *ip) {
  nb_plan_free(ip->plan);
  nb_graph_free(ip->g);
  memset(ip, 0, sizeof *ip);
}

/* A state filled from a weights file, and the inference plan that bound its
 * variables (compiling creates them, so the file can be checked against
 * them by name, dtype and shape). */
static nb_status load_weights(const nb_model *m, nb_backend *be, const char *path, nb_state **st,
                              infer_plan *ip) {
  memset(ip, 0, sizeof *ip);
  nb_status rc = nb_state_new(be, st);
  if (rc) return rc;
  ip->g = nb_graph_new();
  nb_nn nn = {.g = ip->g, .seed = 1, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  ip->x = nb_model_new_input(m, ip->g, "x", 1);
  rc = nb_model_build(m, &nn, ip->x, &logits);
  if (!rc) {
    ip->prob = nb_softmax(ip->g, logits, 1);
    nb_tensor_set_output(ip->prob);
    rc = nb_compile(ip->g, be, *st, NULL, &ip->plan);
  }
  if (!rc) rc = nb_safetensors_load(path, *st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
  return rc;
}

int nabla_cmd_eval(int argc, char **argv) {
  cli c;
  int p = parse("eval", argc, argv, 2, &c);
  if (p) {
    free(c.files);
    return p < 0 ? 0 : p;
  }
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_confusion *cm = NULL;
  infer_plan ip = {0};
  nb_dataset test;
  memset(&test, 0, sizeof test);
  double loss = 0;
  nb_status rc = nb_model_load(c.model, &m);
  /* a flag the model's kind ignores would silently evaluate something else */
  if (!rc && nb_model_is_text(m) && c.limit)
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "--limit applies to image models; %s is a text model, evaluated over the "
                  "whole validation part of the text",
                  c.model);
  if (!rc && nb_model_is_text(m)) {
    nabla_text_args ta = text_args(&c);
    int code = nabla_text_eval(m, &ta);
    nb_model_free(m);
    free(c.files);
    return code;
  }
  if (!rc) rc = load_data(&c, m, 0, NULL, &test);
  if (!rc) rc = nb_backend_new(c.device, &be);
  if (!rc) rc = load_weights(m, be, c.weights, &st, &ip);
  if (!rc) rc = nb_confusion_new((int)nb_model_classes(m), &cm);
  if (!rc) rc = nb_evaluate(m, be, st, &test, c.batch, cm, &loss);
  int code = 0;
  if (rc) {
    code = fail("eval");
  } else {
    FILE *f = c.json ? stderr : stdout;
    fprintf(f, "%s on %lld test examples: accuracy %.2f%%, loss %.4f\n\n", c.weights,
            (long long)test.n, 100 * nb_confusion_accuracy(cm), loss);
    nb_confusion_report(cm, f, (const char *const *)test.class_names, 4);
    fprintf(f, "\nconfusion matrix (rows: true class, columns: predicted)\n");
    nb_confusion_print(cm, f, (const char *const *)test.class_names);
    if (c.json) {
      printf("{\"test_accuracy\": %.6f, \"test_loss\": %.6f, \"examples\": %lld, "
             "\"weights\": ",
             nb_confusion_accuracy(cm), loss, (long long)test.n);
      nabla_json_string(stdout, c.weights);
      printf("}\n");
    }
  }
  nb_confusion_free(cm);
  infer_free(&ip);
  nb_dataset_free(&test);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  free(c.files);
  return code;
}

/* tools/nabla/cmd_predict_onnx.c: the same command for an ONNX model */
int nabla_cmd_predict_onnx(int argc, char **argv);

int nabla_cmd_predict(int argc, char **argv) {
  size_t mlen = argc > 1 ? strlen(argv[1]) : 0;
  if (mlen > 5 && !strcmp(argv[1] + mlen - 5, ".onnx")) return nabla_cmd_predict_onnx(argc, argv);
  cli c;
  int p = parse("predict", argc, argv, 3, &c);
  if (p) {
    free(c.files);
    return p < 0 ? 0 : p;
  }
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  infer_plan ip = {0};
  float *x = NULL, *probs = NULL;
  int64_t shape[NB_MAX_DIMS] = {0};
  nb_status rc = nb_model_load(c.model, &m);
  int nd = m ? nb_model_input_shape(m, shape, NULL) : 0;
  int64_t classes = m ? nb_model_classes(m) : 0;
  if (!rc && nd != 3)
    rc = nb_error(NB_ERR_UNSUPPORTED, "%s: predict takes image models ([C, H, W] input)", c.model);
  if (!rc) rc = nb_backend_new(c.device, &be);
  if (!rc) rc = load_weights(m, be, c.weights, &st, &ip);
  int64_t numel = shape[0] * shape[1] * shape[2];
  x = malloc((size_t)(numel > 0 ? numel : 1) * sizeof *x);
  probs = malloc((size_t)(classes > 0 ? classes : 1) * sizeof *probs);
  nb_image_options io = {(int)shape[0], (int)shape[1], (int)shape[2], NB_RESIZE_BILINEAR};
  const nb_recipe *r = m ? nb_model_recipe(m) : NULL;
  for (int i = 0; !rc && i < c.n_files; i++) {
    rc = nb_image_load(c.files[i], &io, x);
    nb_dataset one = {1, 3, {shape[0], shape[1], shape[2]}, numel, x, NULL, 0, NULL};
    if (!rc) rc = nb_recipe_normalize(r, &one);
    if (!rc) rc = nb_plan_set_input(ip.plan, ip.x, x, (size_t)numel * sizeof *x);
    if (!rc) rc = nb_plan_run(ip.plan);
    if (!rc) rc = nb_plan_get(ip.plan, ip.prob, probs, (size_t)classes * sizeof *probs);
    if (rc) break;
    printf("%s:", c.files[i]);
    for (int k = 0; k < c.top_k && k < classes; k++) {
      int64_t best = -1;
      for (int64_t j = 0; j < classes; j++)
        if (probs[j] >= 0 && (best < 0 || probs[j] > probs[best])) best = j;
      printf("  %lld (%.4f)", (long long)best, (double)probs[best]);
      probs[best] = -1.0f;
    }
    printf("\n");
  }
  int code = rc ? fail("predict") : 0;
  free(x);
  free(probs);
  infer_free(&ip);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  free(c.files);
  return code;
}
