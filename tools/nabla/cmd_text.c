/* `nabla train` / `nabla eval` on a token-sequence model file: read the
 * text, build (or reload) its vocabulary (characters or BPE: text_vocab.h),
 * size the model's `vocab` from it, then nb_fit_text / nb_evaluate_text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd_dist.h"
#include "cmd_lora.h"
#include "cmd_text.h"
#include "json_str.h"
#include "text_vocab.h"
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
  struct stat s;
  if (a->data && stat(a->data, &s) != 0)
    return nb_error(NB_ERR_IO,
                    "%s: no such file or folder (--data takes a text file or a folder holding "
                    "input.txt)",
                    a->data);
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
 * else built for the text (text_vocab.h). Then the text as ids (*n of
 * them), and the model's `vocab` sized to match. *bytes: the text's length. */
static nb_status load_tokens(nb_model *m, const nabla_text_args *a, const char *vocab_file,
                             char *path, size_t cap, nabla_text_vocab *v, int32_t **ids, size_t *n,
                             size_t *bytes) {
  char *text = NULL;
  *ids = NULL;
  memset(v, 0, sizeof *v);
  nb_status rc = find_text(a, path, cap);
  if (!rc) rc = nb_text_read_file(path, &text, n);
  if (!rc && !*n) rc = nb_error(NB_ERR_INVALID_ARG, "%s: the text is empty", path);
  *bytes = *n;
  if (!rc)
    rc = is_file(vocab_file) ? nabla_vocab_load(m, vocab_file, v)
                             : nabla_vocab_build(m, text, *n, v);
  if (!rc && !(*ids = malloc((*n ? *n : 1) * sizeof **ids)))
    rc = nb_error(NB_ERR_OOM, "%s: out of memory for %zu tokens", path, *n);
  if (!rc && (rc = nabla_vocab_encode(v, text, *n, *ids, n)))
    rc = nb_error(rc, "%s: %s", path, nb_last_error());
  if (rc && *ids) {
    free(*ids);
    *ids = NULL;
  }
  free(text);
  int size = rc ? 0 : nabla_vocab_size(v);
  if (!rc && nb_model_takes_vocab(m)) rc = nb_model_set_vocab(m, size);
  if (!rc && !nb_model_takes_vocab(m) && nb_model_classes(m) && size > nb_model_classes(m))
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "%s: the vocabulary has %d tokens, more than the model's %lld classes (say "
                  "'classes = vocab' to take the vocabulary from the data)",
                  nb_model_source(m), size, (long long)nb_model_classes(m));
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
  snprintf(vocab_file, sizeof vocab_file, "%s/%s", out, nabla_vocab_name(m));
  FILE *log = a->json ? stderr : stdout; /* with --json stdout carries only the result */
  nabla_text_vocab v;
  int32_t *ids = NULL;
  size_t n = 0, bytes = 0;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_text_fit_result res;
  /* a resumed run keeps the vocabulary it started with */
  nb_status rc =
      load_tokens(m, a, a->resume ? vocab_file : NULL, path, sizeof path, &v, &ids, &n, &bytes);
  if (!rc) rc = nb_mkdirs(out);
  if (!rc) rc = nabla_vocab_save(&v, vocab_file);
  if (!rc) rc = nb_backend_new(a->device, &be);
  if (!rc) rc = a->init_from ? nabla_init_state(m, be, a->init_from, &st) : nb_state_new(be, &st);
  if (!rc) rc = nabla_open_devices(m, be, st, a->device_threads);
  if (!rc) {
    if (v.bpe)
      fprintf(log, "%s: %zu bytes, %zu BPE tokens (%.2f bytes per token), vocabulary %d, ", path,
              bytes, n, n ? (double)bytes / (double)n : 0.0, nabla_vocab_size(&v));
    else
      fprintf(log, "%s: %zu characters, vocabulary %d, ", path, n, nabla_vocab_size(&v));
    fprintf(log, "%d threads, %s, precision %s\n", nb_get_num_threads(), nb_backend_name(be),
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
    o.micro_batches = a->micro_batches;
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
             nabla_vocab_size(&v), nb_precision_name(nb_model_recipe(m)->precision));
      if (nb_model_recipe(m)->precision == NB_PRECISION_FP16)
        printf("\"loss_scale\": %g, \"skipped_steps\": %lld, ", res.loss_scale,
               (long long)res.skipped_steps);
      if (v.bpe) printf("\"bytes_per_token\": %.4f, ", n ? (double)bytes / (double)n : 0.0);
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
  nabla_vocab_free(&v);
  nb_state_free(st);
  nb_backend_free(be);
  return code;
}

int nabla_text_eval(nb_model *m, const nabla_text_args *a) {
  char path[1024], vocab_file[1100];
  /* the vocabulary saved beside the weights, when there is one */
  nabla_vocab_beside(m, a->weights, vocab_file, sizeof vocab_file);
  nabla_text_vocab v;
  int32_t *ids = NULL;
  size_t n = 0, bytes = 0;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_graph *g = NULL;
  nb_plan *plan = NULL;
  double loss = 0;
  int64_t batch = a->batch > 0 ? a->batch : nb_model_recipe(m)->batch;
  nb_status rc = load_tokens(m, a, vocab_file, path, sizeof path, &v, &ids, &n, &bytes);
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
            a->weights, path, nabla_vocab_size(&v), loss);
    if (a->json) {
      printf("{\"val_loss\": %.6f, \"vocab_size\": %d, \"weights\": ", loss, nabla_vocab_size(&v));
      nabla_json_string(stdout, a->weights);
      printf("}\n");
    }
  }
  free(ids);
  nabla_vocab_free(&v);
  nb_plan_free(plan);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
  return code;
}
