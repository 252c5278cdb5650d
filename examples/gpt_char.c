/* Trains a character-level GPT on Tiny Shakespeare with nabla's graph API on
 * the CPU, then samples from it.
 *
 * Model (nanoGPT's "baby GPT" shrunk for a CPU): vocabulary = the distinct
 * bytes of the text, context T = 128, 4 pre-norm transformer blocks
 * (nb_nn_transformer_block, causal, 4 heads, width 128, GELU-tanh MLP x4),
 * learned positional embedding, final layer norm, and an output head tied to
 * the token embedding (logits = h @ wte^T), every weight N(0, 0.02).
 * Recipe: batch 16, AdamW (0.9, 0.95, weight decay 0.1), lr 1e-3 with 100
 * warm-up steps and a cosine decay to 1e-4 at the last step, gradient norm
 * clipped to 1.0, random windows from the first 90% of the text; validation
 * windows come from the last 10%.
 *
 * Weight decay applies to every parameter (biases, layer norms and the
 * embeddings included), where nanoGPT exempts the 1-d ones
 * (nb_adam_options.decay_min_dims = 2, as models/gpt_char.cfg does).
 * bench/torch_gpt.py decays everything too so the two stay comparable.
 *
 * One training step (forward, backward, clipping, AdamW) is one compiled
 * plan; an evaluation plan (batch 16) and the sampling plans (a decode
 * graph over per-layer KV caches: one plan for the prompt, one reused for
 * every new character) are built from the same layer names and so share
 * the parameters through one nb_state.
 *
 * usage: gpt_char [FILE] [--steps N] [--eval-every N] [--threads T] [--seed S]
 *                 [--temperature X] [--prompt TEXT] [--sample N] [--no-kv-cache] */
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
      fprintf(stderr, "gpt_char: %s: %s\n", nb_status_name(st_), nb_last_error());                 \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

enum { CTX = 128, LAYERS = 4, HEADS = 4, WIDTH = 128, BATCH = 16, EVAL_BATCHES = 20 };

typedef struct {
  int64_t steps, eval_every, sample;
  int threads, no_cache;
  uint64_t seed;
  float temperature;
  const char *data, *prompt;
} options;

typedef struct {
  nb_graph *g;
  nb_tensor *x, *y;  /* inputs: ids [B, T] i32, targets [B, T] i32 (NULL when sampling) */
  nb_tensor *logits; /* [B * T, V] */
  nb_tensor *loss;   /* mean cross-entropy (NULL when sampling) */
} gpt_graph;

/* Builds the model into a fresh graph. Parameter names (wte.weight,
 * wpe.weight, h.N.*, ln_f.*) are the same in every graph, which is what
 * makes the train, eval and sampling plans share one set of weights. */
static int build_gpt(gpt_graph *m, int64_t b, int64_t vocab, int training, int with_loss,
                     uint64_t seed) {
  nb_graph *g = nb_graph_new();
  m->g = g;
  nb_nn nn = {.g = g, .training = training, .seed = seed, .init = NB_NN_INIT_NORMAL_002};
  int64_t bt[2] = {b, CTX};
  m->x = nb_input(g, "ids", NB_I32, 2, bt);
  m->y = with_loss ? nb_input(g, "targets", NB_I32, 2, bt) : NULL;
  nb_tensor *h = nb_nn_embedding(&nn, "wte", m->x, vocab, WIDTH);
  /* The tied head needs the embedding's weight variable itself: the layer
   * created it under its name, so look it up rather than duplicate it. */
  nb_tensor *wte = nb_graph_find(g, "wte.weight");
  /* Positions are always 0..T-1, so the positional table is added whole,
   * broadcast over the batch, instead of being looked up by index. */
  int64_t ps[2] = {CTX, WIDTH};
  nb_init pinit = {NB_INIT_NORMAL, 0.0f, 0.02f, seed ^ 0x9e3779b97f4a7c15ull};
  h = nb_add(g, h, nb_param(g, "wpe.weight", 2, ps, pinit));
  for (int l = 0; l < LAYERS; l++) {
    char name[32];
    snprintf(name, sizeof name, "h.%d", l);
    h = nb_nn_transformer_block(&nn, name, h, HEADS, 1, 4);
  }
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  int64_t flat[2] = {b * CTX, WIDTH};
  m->logits = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, wte, 0, 1));
  m->loss = NULL;
  if (with_loss) {
    int64_t n = b * CTX;
    m->loss = nb_cross_entropy(g, m->logits, nb_reshape(g, m->y, 1, &n), 0.0f);
    nb_tensor_set_output(m->loss);
  } else {
    nb_tensor_set_output(m->logits);
  }
  if (!wte && nb_graph_status(g) == NB_OK)
    return nb_graph_set_error(g, NB_ERR_INTERNAL, "gpt_char: wte.weight not found in the graph");
  return nb_graph_status(g);
}

static int file_exists(const char *p) {
  struct stat s;
  return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

/* FILE argument, then $NABLA_DATA/tinyshakespeare, then the shared folder. */
static const char *find_data(const char *given, char *buf, size_t cap) {
  if (given) return given;
  const char *env = getenv("NABLA_DATA");
  if (env) {
    snprintf(buf, cap, "%s/tinyshakespeare/input.txt", env);
    if (file_exists(buf)) return buf;
  }
  static const char *const places[] = {"../shared/data/tinyshakespeare/input.txt",
                                       "/work/shared/data/tinyshakespeare/input.txt"};
  for (size_t i = 0; i < sizeof places / sizeof *places; i++)
    if (file_exists(places[i])) return places[i];
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f, "usage: gpt_char [FILE] [--steps N] [--eval-every N] [--threads T] [--seed S]\n"
             "                [--temperature X] [--prompt TEXT] [--sample N] [--no-kv-cache]\n"
             "FILE defaults to $NABLA_DATA/tinyshakespeare/input.txt or\n"
             "../shared/data/tinyshakespeare/input.txt; --temperature 0 samples greedily.\n");
}

static int parse(int argc, char **argv, options *o) {
  *o = (options){.steps = 2000,
                 .eval_every = 500,
                 .sample = 200,
                 .threads = 0,
                 .seed = 1,
                 .temperature = 0.8f,
                 .prompt = "ROMEO:\n"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      exit(0);
    }
    if (a[0] != '-') {
      o->data = a;
      continue;
    }
    if (!strcmp(a, "--no-kv-cache")) {
      o->no_cache = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "gpt_char: %s needs a value (see --help)\n", a);
      return 1;
    }
    if (!strcmp(a, "--steps"))
      o->steps = atoll(v);
    else if (!strcmp(a, "--eval-every"))
      o->eval_every = atoll(v);
    else if (!strcmp(a, "--threads"))
      o->threads = atoi(v);
    else if (!strcmp(a, "--seed"))
      o->seed = (uint64_t)atoll(v);
    else if (!strcmp(a, "--temperature"))
      o->temperature = (float)atof(v);
    else if (!strcmp(a, "--prompt"))
      o->prompt = v;
    else if (!strcmp(a, "--sample"))
      o->sample = atoll(v);
    else {
      fprintf(stderr, "gpt_char: unknown option %s (see --help)\n", a);
      return 1;
    }
    i++;
  }
  if (o->steps < 1 || o->eval_every < 0 || o->sample < 0 || !(o->temperature >= 0)) {
    fprintf(stderr, "gpt_char: steps must be >= 1, eval-every, sample, temperature >= 0\n");
    return 1;
  }
  return 0;
}

/* Mean validation loss over EVAL_BATCHES batches. The windows have their own
 * generator in nb_token_windows, so evaluating does not shift the training
 * windows. */
static int evaluate(gpt_graph *e, nb_plan *plan, nb_token_windows *win, int32_t *bx, int32_t *by,
                    double *out) {
  size_t bytes = (size_t)BATCH * CTX * sizeof(int32_t);
  double sum = 0;
  for (int i = 0; i < EVAL_BATCHES; i++) {
    CHECK(nb_token_windows_next(win, NB_TOKENS_VAL, BATCH, bx, by));
    CHECK(nb_plan_set_input(plan, e->x, bx, bytes));
    CHECK(nb_plan_set_input(plan, e->y, by, bytes));
    CHECK(nb_plan_run(plan));
    float l;
    CHECK(nb_plan_get(plan, e->loss, &l, sizeof l));
    sum += l;
  }
  *out = sum / EVAL_BATCHES;
  return 0;
}

/* The sampling model as a decode graph (generate.h): `len` new tokens at a
 * run-time position over per-layer KV caches, with the training graph's
 * parameter names (nn.h's *_decode layers), so it binds the trained weights. */
typedef struct {
  int64_t vocab;
  uint64_t seed;
} decode_ctx;

static nb_status build_decode(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                              nb_decode_graph *out) {
  const decode_ctx *d = ctx;
  nb_nn nn = {.g = g, .seed = d->seed, .init = NB_NN_INIT_NORMAL_002};
  int64_t bt[2] = {1, len}, one = 1;
  out->ids = nb_input(g, "ids", NB_I32, 2, bt);
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *h = nb_nn_embedding(&nn, "wte", out->ids, d->vocab, WIDTH);
  nb_tensor *wte = nb_graph_find(g, "wte.weight");
  h = nb_nn_positional_at(&nn, "wpe", h, out->pos, CTX);
  for (int l = 0; l < LAYERS; l++) {
    char name[32];
    snprintf(name, sizeof name, "h.%d", l);
    h = nb_nn_transformer_block_decode(&nn, name, h, HEADS, 4, out->pos, capacity);
  }
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  int64_t flat[2] = {len, WIDTH};
  out->logits = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, wte, 0, 1));
  return nb_graph_status(g);
}

static int print_char(int32_t tok, void *vocab) {
  putchar(((const nb_char_vocab *)vocab)->bytes[tok]);
  fflush(stdout);
  return 0;
}

/* Streams o->sample characters after the prompt: the prompt runs through
 * the model once, filling the KV caches, then one compiled plan runs per
 * character, for the new position only. When the context is full the last
 * half of it is run again (nb_generate_options.slide). */
static int sample(nb_backend *cpu, nb_state *state, const nb_char_vocab *vocab, const options *o) {
  decode_ctx ctx = {vocab->size, o->seed};
  nb_decoder *dec;
  CHECK(nb_decoder_new(cpu, state, CTX, build_decode, &ctx, &dec));
  size_t np = strlen(o->prompt);
  int32_t *ids = malloc((np ? np : 1) * sizeof *ids);
  if (!ids) return 1;
  CHECK(nb_char_encode(vocab, o->prompt, np, ids));
  nb_generate_options g = {.max_tokens = o->sample, .slide = 1};
  g.sample = (nb_sample_options){.temperature = o->temperature, .seed = o->seed + 7};
  nb_generate_stats s;
  printf("--- sample (temperature %.2f, KV cache) ---\n%s", (double)o->temperature, o->prompt);
  CHECK(nb_generate(dec, ids, (int64_t)np, &g, print_char, (void *)vocab, &s));
  printf("\n---\nsampling: %lld characters in %.3f s, %.1f tokens/s with the KV cache\n",
         (long long)s.new_tokens, s.prefill_seconds + s.decode_seconds, s.tokens_per_sec);
  free(ids);
  nb_decoder_free(dec);
  return 0;
}

/* The same without a cache (--no-kv-cache, for comparison): every new
 * character reruns the whole batch-1 graph over the last T tokens, O(T)
 * work per token. While the text is shorter than T it sits at positions
 * 0..n-1 and the rest is padding, which causal attention keeps from
 * influencing position n-1. */
static int sample_recompute(nb_backend *cpu, nb_state *state, const nb_char_vocab *vocab,
                            const options *o) {
  gpt_graph s;
  if (build_gpt(&s, 1, vocab->size, 0, 0, o->seed)) {
    fprintf(stderr, "gpt_char: %s\n", nb_graph_error(s.g));
    return 1;
  }
  nb_plan *plan;
  CHECK(nb_compile(s.g, cpu, state, NULL, &plan));
  nb_sampler *sampler;
  nb_sample_options so = {.temperature = o->temperature, .seed = o->seed + 7};
  CHECK(nb_sampler_new(vocab->size, &so, &sampler));
  size_t np = strlen(o->prompt), total = np + (size_t)o->sample;
  int32_t *ids = malloc(total * sizeof *ids), window[CTX];
  float *logits = malloc((size_t)CTX * (size_t)vocab->size * sizeof *logits);
  if (!ids || !logits) return 1;
  CHECK(nb_char_encode(vocab, o->prompt, np, ids));
  printf("--- sample (temperature %.2f, no cache) ---\n%s", (double)o->temperature, o->prompt);
  double t0 = now();
  for (size_t n = np; n < total; n++) {
    size_t len = n < CTX ? n : CTX, start = n - len;
    memset(window, 0, sizeof window);
    memcpy(window, ids + start, len * sizeof *ids);
    CHECK(nb_plan_set_input(plan, s.x, window, sizeof window));
    CHECK(nb_plan_run(plan));
    CHECK(nb_plan_get(plan, s.logits, logits, (size_t)CTX * (size_t)vocab->size * sizeof *logits));
    CHECK(nb_sampler_pick(sampler, logits + (len - 1) * (size_t)vocab->size, &ids[n]));
    print_char(ids[n], (void *)vocab);
  }
  double dt = now() - t0;
  printf("\n---\nsampling: %lld characters in %.3f s, %.1f tokens/s without a cache\n",
         (long long)o->sample, dt, dt > 0 ? (double)o->sample / dt : 0.0);
  free(ids);
  free(logits);
  nb_sampler_free(sampler);
  nb_plan_free(plan);
  nb_graph_free(s.g);
  return 0;
}

int main(int argc, char **argv) {
  options o;
  if (parse(argc, argv, &o)) return 2;
  nb_set_num_threads(o.threads);
  char buf[1024];
  const char *path = find_data(o.data, buf, sizeof buf);
  if (!path) {
    fprintf(stderr, "gpt_char: Tiny Shakespeare not found: pass FILE, set NABLA_DATA, or put it in "
                    "../shared/data/tinyshakespeare/input.txt\n");
    return 1;
  }
  char *text;
  size_t n;
  CHECK(nb_text_read_file(path, &text, &n));
  nb_char_vocab vocab;
  CHECK(nb_char_vocab_build(text, n, &vocab));
  int32_t *tokens = malloc(n * sizeof *tokens);
  if (!tokens) {
    fprintf(stderr, "gpt_char: out of memory for %zu tokens\n", n);
    return 1;
  }
  CHECK(nb_char_encode(&vocab, text, n, tokens));
  free(text);
  nb_token_windows win;
  CHECK(nb_token_windows_init(&win, tokens, (int64_t)n, CTX, o.seed));
  printf("%s: %zu characters, vocabulary %d, %lld train / %lld val tokens; %d threads\n", path, n,
         vocab.size, (long long)win.n_train, (long long)win.n_val, nb_get_num_threads());

  nb_backend *cpu;
  nb_state *state;
  CHECK(nb_backend_new("cpu", &cpu));
  CHECK(nb_state_new(cpu, &state));

  /* training step: forward + backward + clipping + AdamW in one plan */
  gpt_graph tr;
  if (build_gpt(&tr, BATCH, vocab.size, 1, 1, o.seed)) {
    fprintf(stderr, "gpt_char: %s\n", nb_graph_error(tr.g));
    return 1;
  }
  CHECK(nb_graph_backward(tr.g, tr.loss));
  CHECK(nb_clip_grad_norm(tr.g, 1.0f, NULL));
  nb_optimizer *adamw;
  CHECK(nb_optimizer_adam(tr.g, 0.9f, 0.95f, 1e-8f, 0.1f, 1, &adamw));
  nb_plan *step;
  CHECK(nb_compile(tr.g, cpu, state, NULL, &step));
  nb_plan_stats s = nb_plan_get_stats(step);
  int64_t nparams = 0;
  for (int i = 0; i < nb_state_count(state); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    CHECK(nb_state_entry(state, i, &name, NULL, &nd, &shape));
    if (!nb_optimizer_owns(name)) nparams += nb_shape_numel(nd, shape);
  }
  printf("model: %d layers, %d heads, width %d, context %d, %lld parameters (%d tensors)\n", LAYERS,
         HEADS, WIDTH, CTX, (long long)nparams, nb_optimizer_param_count(adamw));
  printf("train plan: %d nodes, %d kernels (%d fused groups, %d in place), arena %.1f MB "
         "(naive %.1f MB)\n",
         s.nodes, s.kernels, s.fused_groups, s.inplace, s.arena_bytes / 1e6, s.naive_bytes / 1e6);

  gpt_graph ev;
  if (build_gpt(&ev, BATCH, vocab.size, 0, 1, o.seed)) {
    fprintf(stderr, "gpt_char: %s\n", nb_graph_error(ev.g));
    return 1;
  }
  nb_plan *eval;
  CHECK(nb_compile(ev.g, cpu, state, NULL, &eval));

  nb_schedule sched = nb_schedule_warmup_cosine(1e-3, 1e-4, o.steps < 100 ? 0 : 100, o.steps);
  CHECK(nb_schedule_check(&sched));
  char desc[256];
  printf("schedule: %s\n", nb_schedule_describe(&sched, desc, sizeof desc));

  size_t bytes = (size_t)BATCH * CTX * sizeof(int32_t);
  int32_t *bx = malloc(bytes), *by = malloc(bytes);
  if (!bx || !by) return 1;
  double t_train = 0, loss_sum = 0, val = NAN, last_train = NAN;
  int64_t loss_count = 0;
  for (int64_t t = 1; t <= o.steps; t++) {
    double t0 = now();
    CHECK(nb_token_windows_next(&win, NB_TOKENS_TRAIN, BATCH, bx, by));
    CHECK(nb_plan_set_input(step, tr.x, bx, bytes));
    CHECK(nb_plan_set_input(step, tr.y, by, bytes));
    CHECK(nb_optimizer_feed(adamw, step, t, (float)nb_schedule_lr(&sched, t)));
    CHECK(nb_plan_run(step));
    float l;
    CHECK(nb_plan_get(step, tr.loss, &l, sizeof l));
    t_train += now() - t0;
    if (!isfinite(l)) {
      fprintf(stderr, "gpt_char: loss is %g at step %lld\n", (double)l, (long long)t);
      return 1;
    }
    loss_sum += l;
    loss_count++;
    if (t % 100 == 0 || t == o.steps) {
      last_train = loss_sum / (double)loss_count;
      printf("step %5lld  train loss %.4f  lr %.2e  %.0f tokens/s\n", (long long)t, last_train,
             nb_schedule_lr(&sched, t), (double)(t * BATCH * CTX) / t_train);
      fflush(stdout);
      loss_sum = 0;
      loss_count = 0;
    }
    if ((o.eval_every > 0 && t % o.eval_every == 0) || t == o.steps) {
      if (evaluate(&ev, eval, &win, bx, by, &val)) return 1;
      printf("step %5lld  val loss %.4f\n", (long long)t, val);
      fflush(stdout);
    }
  }
  double tps = (double)(o.steps * BATCH * CTX) / t_train;
  printf("training: %.1f s, %.0f tokens/s\n", t_train, tps);
  if (o.sample > 0 &&
      (o.no_cache ? sample_recompute(cpu, state, &vocab, &o) : sample(cpu, state, &vocab, &o)))
    return 1;
  printf("{\"val_loss\": %.4f, \"train_loss\": %.4f, \"steps\": %lld, \"tokens_per_sec\": %.0f}\n",
         val, last_train, (long long)o.steps, tps);
  free(bx);
  free(by);
  free(tokens);
  nb_optimizer_free(adamw);
  nb_plan_free(step);
  nb_plan_free(eval);
  nb_graph_free(tr.g);
  nb_graph_free(ev.g);
  nb_state_free(state);
  nb_backend_free(cpu);
  return 0;
}
