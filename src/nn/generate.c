/* The decoder (plans over a KV cache) and the generation loop.
 *
 * A plan is specialised to its shapes, and a decode graph's shapes depend
 * only on how many tokens one run takes, never on the position (a run-time
 * input) or on how full the caches are (fixed capacity). So one plan runs
 * every single-token step, and the prefill plan is rebuilt only when a
 * prompt of another length comes. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla/generate.h"

typedef struct {
  nb_graph *g;
  nb_plan *plan;
  nb_decode_graph io;
  int64_t len; /* 0 = not built */
} decode_plan;

struct nb_decoder {
  nb_backend *be;
  nb_state *st;
  int64_t capacity, vocab, pos;
  nb_decode_build_fn build;
  void *ctx;
  decode_plan one, many; /* one token; a prompt of many.len tokens */
  float *logits;         /* capacity rows of vocab: the last run's logits */
};

static void plan_free(decode_plan *p) {
  nb_plan_free(p->plan);
  nb_graph_free(p->g);
  memset(p, 0, sizeof *p);
}

static int is_input(const nb_tensor *t, nb_dtype dt, int64_t numel) {
  return t && !strcmp(nb_tensor_op_name(t), "input") && nb_tensor_dtype(t) == dt &&
         nb_tensor_numel(t) == numel;
}

/* Builds the decode graph for len tokens, checks what the build function
 * handed back, and compiles it. */
static nb_status plan_build(nb_decoder *d, int64_t len, decode_plan *p) {
  plan_free(p);
  p->g = nb_graph_new();
  if (!p->g) return nb_error(NB_ERR_OOM, "decoder: out of memory for a graph");
  nb_status st = d->build(d->ctx, p->g, len, d->capacity, &p->io);
  /* a build that reports success may still have left an error in the graph */
  if (!st && (st = nb_graph_status(p->g))) nb_error(st, "%s", nb_graph_error(p->g));
  if (st) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    plan_free(p);
    return nb_error(st, "decoder: building the graph for %lld tokens: %s", (long long)len, msg);
  }
  const nb_tensor *lg = p->io.logits;
  int64_t vocab = lg && nb_tensor_ndim(lg) >= 1 ? nb_tensor_shape(lg)[nb_tensor_ndim(lg) - 1] : 0;
  if (!is_input(p->io.ids, NB_I32, len) || !is_input(p->io.pos, NB_I32, 1) || !lg ||
      nb_tensor_dtype(lg) != NB_F32 || vocab < 1 || nb_tensor_numel(lg) != len * vocab ||
      (d->vocab && vocab != d->vocab)) {
    plan_free(p);
    return nb_error(NB_ERR_INVALID_ARG,
                    "decoder: the build function must return ids (an i32 input of %lld "
                    "elements), pos (an i32 input of 1) and f32 logits of %lld rows of the "
                    "vocabulary",
                    (long long)len, (long long)len);
  }
  nb_tensor_set_output(p->io.logits);
  st = nb_compile(p->g, d->be, d->st, NULL, &p->plan);
  if (st) {
    plan_free(p);
    return st;
  }
  d->vocab = vocab;
  p->len = len;
  return NB_OK;
}

nb_status nb_decoder_new(nb_backend *be, nb_state *st, int64_t capacity, nb_decode_build_fn build,
                         void *ctx, nb_decoder **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_decoder_new: out is NULL");
  *out = NULL;
  if (!be || !st || !build || capacity < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_decoder_new: backend, state, build function and a "
                                        "capacity >= 1 are required");
  nb_decoder *d = calloc(1, sizeof *d);
  if (!d) return nb_error(NB_ERR_OOM, "nb_decoder_new: out of memory");
  *d = (nb_decoder){.be = be, .st = st, .capacity = capacity, .build = build, .ctx = ctx};
  nb_status rc = plan_build(d, 1, &d->one);
  if (!rc) {
    d->logits = malloc((size_t)(capacity * d->vocab) * sizeof *d->logits);
    if (!d->logits) rc = nb_error(NB_ERR_OOM, "nb_decoder_new: out of memory for logits");
  }
  if (rc) {
    nb_decoder_free(d);
    return rc;
  }
  *out = d;
  return NB_OK;
}

void nb_decoder_free(nb_decoder *d) {
  if (!d) return;
  plan_free(&d->one);
  plan_free(&d->many);
  free(d->logits);
  free(d);
}

int64_t nb_decoder_vocab(const nb_decoder *d) { return d ? d->vocab : 0; }
int64_t nb_decoder_capacity(const nb_decoder *d) { return d ? d->capacity : 0; }
int64_t nb_decoder_pos(const nb_decoder *d) { return d ? d->pos : 0; }

void nb_decoder_reset(nb_decoder *d) {
  /* the rows past pos are never read, so nothing needs clearing */
  if (d) d->pos = 0;
}

nb_status nb_decoder_feed(nb_decoder *d, const int32_t *ids, int64_t n, float *logits) {
  if (!d || !ids || n < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_decoder_feed: decoder, ids and n >= 1 are required");
  if (n > d->capacity - d->pos)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_decoder_feed: %lld more tokens at position %lld do not fit in the "
                    "context of %lld positions (nb_decoder_reset starts over)",
                    (long long)n, (long long)d->pos, (long long)d->capacity);
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= d->vocab)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_decoder_feed: token %lld is %d, outside the vocabulary [0, %lld)",
                      (long long)i, (int)ids[i], (long long)d->vocab);
  decode_plan *p = n == 1 ? &d->one : &d->many;
  nb_status st = p->len == n ? NB_OK : plan_build(d, n, p);
  int32_t pos = (int32_t)d->pos;
  if (!st) st = nb_plan_set_input(p->plan, p->io.ids, ids, (size_t)n * sizeof *ids);
  if (!st) st = nb_plan_set_input(p->plan, p->io.pos, &pos, sizeof pos);
  if (!st) st = nb_plan_run(p->plan);
  size_t bytes = (size_t)(n * d->vocab) * sizeof *d->logits;
  if (!st) st = nb_plan_get(p->plan, p->io.logits, d->logits, bytes);
  if (st) return st;
  d->pos += n;
  if (logits) memcpy(logits, d->logits, bytes);
  return NB_OK;
}

/* ---- generation ------------------------------------------------------------------- */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Restarts the cache from the last `keep` tokens of the window. */
static nb_status refill(nb_decoder *d, const int32_t *win, int64_t len, int64_t keep) {
  nb_decoder_reset(d);
  return nb_decoder_feed(d, win + len - keep, keep, NULL);
}

nb_status nb_generate(nb_decoder *d, const int32_t *prompt, int64_t n, const nb_generate_options *o,
                      nb_token_fn on_token, void *user, nb_generate_stats *stats) {
  if (stats) memset(stats, 0, sizeof *stats);
  if (!d || !prompt || n < 1 || !o || o->max_tokens < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_generate: a decoder, a prompt of at least one token "
                                        "and options with max_tokens >= 0 are required");
  int64_t cap = d->capacity, keep = cap / 2 > 0 ? cap / 2 : 1;
  if (n > cap && !o->slide)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_generate: the prompt has %lld tokens, more than the context of %lld "
                    "(shorten it, or let it slide: nb_generate_options.slide = 1, `nabla "
                    "generate` without --no-slide, keeps its last %lld)",
                    (long long)n, (long long)cap, (long long)keep);
  nb_sampler *s;
  nb_status st = nb_sampler_new(d->vocab, &o->sample, &s);
  if (st) return st;
  /* the last tokens (at most a context of them): what sliding runs again */
  int32_t *win = malloc((size_t)cap * sizeof *win);
  if (!win) {
    nb_sampler_free(s);
    return nb_error(NB_ERR_OOM, "nb_generate: out of memory for %lld tokens", (long long)cap);
  }
  int64_t len = n < cap ? n : cap, fed = n > cap ? keep : n;
  memcpy(win, prompt + n - len, (size_t)len * sizeof *win);
  double t0 = now();
  st = refill(d, win, len, fed);
  double t1 = now();
  int slides = 0;
  int64_t made = 0;
  while (!st && made < o->max_tokens) {
    /* the final row of the last run: the distribution of the next token */
    int32_t tok;
    st = nb_sampler_pick(s, d->logits + (fed - 1) * d->vocab, &tok);
    if (st) break;
    if (len == cap) memmove(win, win + 1, (size_t)--len * sizeof *win);
    win[len++] = tok;
    made++;
    if ((on_token && on_token(tok, user)) || made == o->max_tokens) break;
    if (d->pos < cap) {
      fed = 1;
      st = nb_decoder_feed(d, &tok, 1, NULL);
    } else if (o->slide) {
      fed = keep;
      slides++;
      st = refill(d, win, len, keep);
    } else {
      st = nb_error(NB_ERR_INVALID_ARG,
                    "nb_generate: the context of %lld positions is full after %lld new tokens "
                    "(sliding goes on with the last %lld: nb_generate_options.slide = 1, "
                    "`nabla generate` without --no-slide)",
                    (long long)cap, (long long)made, (long long)keep);
    }
  }
  double t2 = now();
  if (stats) {
    stats->prompt_tokens = n > cap ? keep : n;
    stats->new_tokens = made;
    stats->slides = slides;
    stats->prefill_seconds = t1 - t0;
    stats->decode_seconds = t2 - t1;
    stats->tokens_per_sec = t2 > t0 ? (double)made / (t2 - t0) : 0.0;
  }
  free(win);
  nb_sampler_free(s);
  return st;
}
