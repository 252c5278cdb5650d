/* `nabla generate MODEL WEIGHTS`: text from a trained token-sequence model.
 * The model file's decode graph runs over a KV cache (generate.h): the
 * prompt in one prefill run, then one run of the same plan per token.
 * The tokens' bytes (a character, or a BPE token's bytes, which may end
 * inside a UTF-8 character: a terminal joins them) stream to stdout as they
 * are drawn; the timing goes to
 * stderr, so stdout carries only the text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/nabla.h"
#include "text_vocab.h"

typedef struct {
  const char *model, *weights, *prompt, *vocab, *device;
  int64_t tokens;
  int threads, slide;
  nb_sample_options sample;
} gen_cli;

static void usage(FILE *f) {
  fprintf(f, "usage: nabla generate MODEL WEIGHTS [--prompt TEXT] [--tokens N] [--temperature T]\n"
             "                      [--top-k K] [--seed S] [--vocab FILE] [--no-slide]\n"
             "                      [--threads T] [--device cpu]\n"
             "Writes the prompt and N new tokens (default 200) drawn from a text model\n"
             "trained with `nabla train` to stdout, one at a time, and the speed to stderr.\n"
             "Sampling: temperature T (default 0.8; 0 = greedy), among the K most likely\n"
             "tokens (default 0 = all), seeded by S (default 1). The vocabulary is\n"
             "vocab.txt (characters) or vocab.bpe ([net] tokenizer = bpe) beside WEIGHTS\n"
             "unless --vocab says otherwise; with characters the prompt (default a newline)\n"
             "may use only its characters. When the context is full, the last half of it\n"
             "is run again and generation goes on (--no-slide stops instead).\n");
}

/* Whole-string numbers only: "12x" is an error, not 12. */
static int parse_num(const char *opt, const char *v, double lo, double hi, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (end == v || *end || !(x >= lo && x <= hi)) {
    fprintf(stderr, "nabla generate: %s takes a number in [%g, %g], got '%s'\n", opt, lo, hi, v);
    return 0;
  }
  *out = x;
  return 1;
}

static int parse(int argc, char **argv, gen_cli *c) {
  *c = (gen_cli){.prompt = "\n",
                 .device = "cpu",
                 .tokens = 200,
                 .slide = 1,
                 .sample = {.temperature = 0.8f, .top_k = 0, .seed = 1}};
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return -1;
    }
    if (!strcmp(a, "--no-slide")) {
      c->slide = 0;
      continue;
    }
    if (a[0] != '-' || a[1] != '-') {
      if (pos == 0)
        c->model = a;
      else if (pos == 1)
        c->weights = a;
      else {
        fprintf(stderr, "nabla generate: unexpected argument '%s' (see --help)\n", a);
        return 2;
      }
      pos++;
      continue;
    }
    double x = 0;
    int num = !strcmp(a, "--tokens") || !strcmp(a, "--temperature") || !strcmp(a, "--top-k") ||
              !strcmp(a, "--seed") || !strcmp(a, "--threads");
    if (!num && strcmp(a, "--prompt") && strcmp(a, "--vocab") && strcmp(a, "--device")) {
      fprintf(stderr, "nabla generate: unknown option %s (see --help)\n", a);
      return 2;
    }
    if (!v) {
      fprintf(stderr, "nabla generate: %s needs a value (see --help)\n", a);
      return 2;
    }
    if (num && !parse_num(a, v, 0, !strcmp(a, "--temperature") ? 1e6 : 1e9, &x)) return 2;
    if (!strcmp(a, "--prompt"))
      c->prompt = v;
    else if (!strcmp(a, "--vocab"))
      c->vocab = v;
    else if (!strcmp(a, "--device"))
      c->device = v;
    else if (!strcmp(a, "--tokens"))
      c->tokens = (int64_t)x;
    else if (!strcmp(a, "--temperature"))
      c->sample.temperature = (float)x;
    else if (!strcmp(a, "--top-k"))
      c->sample.top_k = (int)x;
    else if (!strcmp(a, "--seed"))
      c->sample.seed = (uint64_t)x;
    else /* --threads */
      c->threads = (int)x;
    i++;
  }
  if (!c->model || !c->weights) {
    fprintf(stderr, "nabla generate: MODEL and WEIGHTS are required (see --help)\n");
    return 2;
  }
  return 0;
}

/* The model file is the decode graph's recipe (generate.h's build hook). */
static nb_status build(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                       nb_decode_graph *out) {
  const nb_model *m = ctx;
  nb_nn nn = {.g = g, .seed = nb_model_recipe(m)->seed, .init = NB_NN_INIT_TORCH};
  int64_t bt[2] = {1, len}, one = 1;
  out->ids = nb_input(g, "ids", NB_I32, 2, bt);
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  return nb_model_build_decode(m, &nn, out->ids, out->pos, capacity, &out->logits);
}

/* Binds every weight by compiling the ordinary forward graph once, then
 * fills them from the file, so a missing or misshapen weight is an error
 * naming it (the decoder's caches are not in the file and need not be).
 * Optimizer moments in a checkpoint are skipped. */
static nb_status load_weights(const nb_model *m, nb_backend *be, nb_state *st, const char *path) {
  nb_graph *g = nb_graph_new();
  if (!g) return nb_error(NB_ERR_OOM, "out of memory");
  nb_nn nn = {.g = g, .seed = nb_model_recipe(m)->seed, .init = NB_NN_INIT_TORCH};
  nb_tensor *logits = NULL;
  nb_plan *p = NULL;
  nb_status rc = nb_model_build(m, &nn, nb_model_new_input(m, g, "ids", 1), &logits);
  if (!rc) nb_tensor_set_output(logits);
  if (!rc) rc = nb_compile(g, be, st, NULL, &p);
  if (!rc) rc = nb_safetensors_load(path, st, NULL, NB_SAFETENSORS_ALLOW_EXTRA);
  nb_plan_free(p);
  nb_graph_free(g);
  return rc;
}

typedef struct {
  const nabla_text_vocab *v;
} printer;

/* A BPE token may hold part of a UTF-8 character: its bytes go out as they
 * come, and the terminal joins them with the next token's. */
static int print_token(int32_t tok, void *user) {
  const printer *p = user;
  const char *b = NULL;
  size_t len = 0;
  if (nabla_vocab_token(p->v, tok, &b, &len)) return 1;
  fwrite(b, 1, len, stdout);
  fflush(stdout);
  return 0;
}

int nabla_cmd_generate(int argc, char **argv) {
  gen_cli c;
  int code = parse(argc, argv, &c);
  if (code) return code < 0 ? 0 : code;
  nb_set_num_threads(c.threads);
  char vocab_file[1100];
  size_t np = strlen(c.prompt), n_ids = 0;
  nb_model *m = NULL;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_decoder *dec = NULL;
  nabla_text_vocab v = {0};
  int32_t *ids = malloc((np ? np : 1) * sizeof *ids);
  nb_status rc = ids ? NB_OK : nb_error(NB_ERR_OOM, "out of memory");
  if (!rc) rc = nb_model_load(c.model, &m);
  if (!rc && !nb_model_context(m))
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "%s is not a text model ([net] input = T with input_dtype = i32)", c.model);
  if (!rc && c.vocab) snprintf(vocab_file, sizeof vocab_file, "%s", c.vocab);
  if (!rc && !c.vocab) nabla_vocab_beside(m, c.weights, vocab_file, sizeof vocab_file);
  if (!rc && (rc = nabla_vocab_load(m, vocab_file, &v)))
    rc = nb_error(rc, "%s (nabla train writes %s beside the weights; --vocab FILE names another)",
                  nb_last_error(), nabla_vocab_name(m));
  if (!rc && nabla_vocab_size(&v) < 1)
    rc = nb_error(NB_ERR_FORMAT, "%s: the vocabulary is empty", vocab_file);
  if (!rc && nb_model_takes_vocab(m)) rc = nb_model_set_vocab(m, nabla_vocab_size(&v));
  if (!rc && !np) rc = nb_error(NB_ERR_INVALID_ARG, "the prompt is empty");
  if (!rc && (rc = nabla_vocab_encode(&v, c.prompt, np, ids, &n_ids)))
    rc = nb_error(rc, "the prompt: %s (%s)", nb_last_error(), vocab_file);
  if (!rc) rc = nb_backend_new(c.device, &be);
  if (!rc) rc = nb_state_new(be, &st);
  if (!rc) rc = load_weights(m, be, st, c.weights);
  if (!rc) rc = nb_decoder_new(be, st, nb_model_context(m), build, m, &dec);
  if (!rc && nb_decoder_vocab(dec) != nabla_vocab_size(&v))
    rc = nb_error(NB_ERR_INVALID_ARG, "the model outputs %lld logits, the vocabulary has %d",
                  (long long)nb_decoder_vocab(dec), nabla_vocab_size(&v));
  nb_generate_stats s = {0};
  if (!rc) {
    fwrite(c.prompt, 1, np, stdout);
    fflush(stdout);
    nb_generate_options o = {.max_tokens = c.tokens, .sample = c.sample, .slide = c.slide};
    printer p = {&v};
    rc = nb_generate(dec, ids, (int64_t)n_ids, &o, print_token, &p, &s);
    printf("\n");
  }
  if (rc) {
    fprintf(stderr, "nabla generate: %s\n", nb_last_error());
    code = 1;
  } else {
    fprintf(stderr,
            "%lld tokens in %.3f s: %.1f tokens/s (prompt %lld tokens in %.1f ms, then %.1f "
            "tokens/s; context %lld, %d restart%s; %d thread%s)\n",
            (long long)s.new_tokens, s.prefill_seconds + s.decode_seconds, s.tokens_per_sec,
            (long long)s.prompt_tokens, 1e3 * s.prefill_seconds,
            s.decode_seconds > 0
                ? (double)(s.new_tokens > 0 ? s.new_tokens - 1 : 0) / s.decode_seconds
                : 0.0,
            (long long)nb_decoder_capacity(dec), s.slides, s.slides == 1 ? "" : "s",
            nb_get_num_threads(), nb_get_num_threads() == 1 ? "" : "s");
  }
  nb_decoder_free(dec);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
  nabla_vocab_free(&v);
  free(ids);
  return code;
}
