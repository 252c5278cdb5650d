/* `nabla train` / `nabla eval` on a token-sequence model file: read the
 * text, build (or reload) its character vocabulary, size the model's
 * `vocab` from it, then nb_fit_text / nb_evaluate_text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd_lora.h"
#include "cmd_text.h"
#include "json_str.h"
#include "nabla/fit.h"

static int is_file(const char *p) {
  struct stat s;
  return p && stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

/* --data FILE, or the dataset's folder (--data DIR, $NABLA_DATA,
 * ../shared/data, data/: nb_data_find) holding input.txt. */
static nb_status find_text(const nabla_text_args *a, char *path, size_t cap) {
  if (is_file(a->data)) {
    snprintf(path, cap, "%s", a->data);
    return NB_OK;
  }
  const char *name = a->dataset ? a->dataset : "tinyshakespeare";
  char dir[1024];
  nb_status rc = nb_data_find(name, a->data, dir, sizeof dir);
  if (rc) return rc;
  int k = snprintf(path, cap, "%s/input.txt", dir);
  if (k < 0 || (size_t)k >= cap) return nb_error(NB_ERR_INVALID_ARG, "%s: path too long", dir);
  if (!is_file(path))
    return nb_error(NB_ERR_IO, "%s: no input.txt in the dataset folder (pass --data FILE)", dir);
  return NB_OK;
}

/* The vocabulary: from `vocab_file` when it exists (a trained model's),
 * else the text's own bytes. Then the text as ids, and the model's `vocab`
 * sized to match. */
static nb_status load_tokens(nb_model *m, const nabla_text_args *a, const char *vocab_file,
                             char *path, size_t cap, nb_char_vocab *v, int32_t **ids, size_t *n) {
  char *text = NULL;
  *ids = NULL;
  nb_status rc = find_text(a, path, cap);
  if (!rc) rc = nb_text_read_file(path, &text, n);
  if (!rc && !*n) rc = nb_error(NB_ERR_INVALID_ARG, "%s: the text is empty", path);
  if (!rc)
    rc = is_file(vocab_file) ? nb_char_vocab_load(vocab_file, v) : nb_char_vocab_build(text, *n, v);
  if (!rc && !(*ids = malloc((*n ? *n : 1) * sizeof **ids)))
    rc = nb_error(NB_ERR_OOM, "%s: out of memory for %zu tokens", path, *n);
  if (!rc) rc = nb_char_encode(v, text, *n, *ids);
  if (rc && *ids) {
    free(*ids);
    *ids = NULL;
  }
  free(text);
  if (!rc && nb_model_takes_vocab(m)) rc = nb_model_set_vocab(m, v->size);
  if (!rc && !nb_model_takes_vocab(m) && nb_model_classes(m) && v->size > nb_model_classes(m))
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "%s: the text has %d distinct bytes, more than the model's %lld classes (say "
                  "'classes = vocab' to take the vocabulary from the data)",
                  nb_model_source(m), v->size, (long long)nb_model_classes(m));
  return rc;
}

static const char *model_name(const nb_model *m) {
  const char *n = nb_model_name(m);
  return n && *n ? n : "model";
}

int nabla_text_train(nb_model *m, const nabla_text_args *a) {
  char path[1024], out[1024], vocab_file[1100];
  snprintf(out, sizeof out, "%s", a->out ? a->out : "");
  if (!a->out) snprintf(out, sizeof out, "runs/%s", model_name(m));
  snprintf(vocab_file, sizeof vocab_file, "%s/vocab.txt", out);
  FILE *log = a->json ? stderr : stdout; /* with --json stdout carries only the result */
  nb_char_vocab v;
  int32_t *ids = NULL;
  size_t n = 0;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_text_fit_result res;
  /* a resumed run keeps the vocabulary it started with */
  nb_status rc = load_tokens(m, a, a->resume ? vocab_file : NULL, path, sizeof path, &v, &ids, &n);
  if (!rc) rc = nb_mkdirs(out);
  if (!rc) rc = nb_char_vocab_save(&v, vocab_file);
  if (!rc) rc = nb_backend_new(a->device, &be);
  if (!rc) rc = a->init_from ? nabla_init_state(m, be, a->init_from, &st) : nb_state_new(be, &st);
  if (!rc) {
    fprintf(log, "%s: %zu characters, vocabulary %d, %d threads, %s, precision %s\n", path, n,
            v.size, nb_get_num_threads(), nb_backend_name(be),
            nb_precision_name(nb_model_recipe(m)->precision));
    nb_fit_options o = nb_fit_defaults();
    o.device = a->device;
    o.steps = a->steps;
    o.eval_every = a->eval_every;
    o.batch = a->batch;
    o.lr = a->lr;
    o.optimizer = a->optimizer;
    o.seed = a->seed;
    o.out_dir = out;
    o.resume = a->resume;
    o.log = log;
    rc = nb_fit_text(m, be, st, ids, (int64_t)n, &o, &res);
  }
  char adapters[1100];
  if (!rc) rc = nabla_lora_write(m, st, out, adapters, sizeof adapters);
  if (!rc && adapters[0]) fprintf(log, "LoRA adapters: %s\n", adapters);
  int code = 0;
  if (rc) {
    fprintf(stderr, "nabla train: %s\n", nb_last_error());
    code = 1;
  } else {
    fprintf(log,
            "val loss %.4f, train loss %.4f (nats per token), %.0f tokens/s; weights: %s, "
            "vocabulary: %s\n",
            res.val_loss, res.train_loss, res.tokens_per_sec, res.weights, vocab_file);
    if (a->json) {
      printf("{\"val_loss\": %.6f, \"train_loss\": %.6f, \"steps\": %lld, \"tokens_per_sec\": "
             "%.1f, \"seconds\": %.2f, \"vocab_size\": %d, \"precision\": \"%s\", ",
             res.val_loss, res.train_loss, (long long)res.steps, res.tokens_per_sec, res.seconds,
             v.size, nb_precision_name(nb_model_recipe(m)->precision));
      if (nb_model_recipe(m)->precision == NB_PRECISION_FP16)
        printf("\"loss_scale\": %g, \"skipped_steps\": %lld, ", res.loss_scale,
               (long long)res.skipped_steps);
      printf("\"checkpoint\": ");
      nabla_json_string(stdout, res.checkpoint);
      printf(", \"weights\": ");
      nabla_json_string(stdout, res.weights);
      printf(", \"vocab\": ");
      nabla_json_string(stdout, vocab_file);
      printf("}\n");
    }
  }
  free(ids);
  nb_state_free(st);
  nb_backend_free(be);
  return code;
}

int nabla_text_eval(nb_model *m, const nabla_text_args *a) {
  char path[1024], vocab_file[1100];
  /* the vocabulary saved beside the weights, when there is one */
  const char *slash = strrchr(a->weights, '/');
  snprintf(vocab_file, sizeof vocab_file, "%.*s%svocab.txt", slash ? (int)(slash - a->weights) : 0,
           a->weights, slash ? "/" : "");
  nb_char_vocab v;
  int32_t *ids = NULL;
  size_t n = 0;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_graph *g = NULL;
  nb_plan *plan = NULL;
  double loss = 0;
  int64_t batch = a->batch > 0 ? a->batch : nb_model_recipe(m)->batch;
  nb_status rc = load_tokens(m, a, vocab_file, path, sizeof path, &v, &ids, &n);
  if (!rc) rc = nb_backend_new(a->device, &be);
  if (!rc) rc = nb_state_new(be, &st);
  /* compiling a plan creates the variables, which the file then fills */
  if (!rc && !(g = nb_graph_new())) rc = nb_error(NB_ERR_OOM, "nabla eval: out of memory");
  if (!rc) {
    nb_nn nn = {.g = g, .training = 0, .seed = 1, .init = NB_NN_INIT_TORCH};
    nb_tensor *logits = NULL;
    rc = nb_model_build(m, &nn, nb_model_new_input(m, g, "ids", 1), &logits);
    if (!rc) nb_tensor_set_output(logits);
    if (!rc) rc = nb_compile(g, be, st, NULL, &plan);
  }
  if (!rc) rc = nb_safetensors_load(a->weights, st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
  if (!rc) rc = nb_evaluate_text(m, be, st, ids, (int64_t)n, batch, 0, 1, &loss);
  int code = 0;
  if (rc) {
    fprintf(stderr, "nabla eval: %s\n", nb_last_error());
    code = 1;
  } else {
    FILE *f = a->json ? stderr : stdout;
    fprintf(f,
            "%s on the validation part of %s (last 10%%, vocabulary %d): loss %.4f nats per "
            "token\n",
            a->weights, path, v.size, loss);
    if (a->json) {
      printf("{\"val_loss\": %.6f, \"vocab_size\": %d, \"weights\": ", loss, v.size);
      nabla_json_string(stdout, a->weights);
      printf("}\n");
    }
  }
  free(ids);
  nb_plan_free(plan);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
  return code;
}
