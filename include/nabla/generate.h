/* nabla text generation: a token sampler, a decoder that runs a model's
 * decode graph over a KV cache (nn.h, "decoding with a KV cache"), and a
 * generation loop that streams tokens to a callback.
 *
 * The decoder compiles two plans from one build function and runs them on
 * the same nb_state, so they share the weights and the caches: a prefill
 * plan for a whole prompt (recompiled only when the prompt length changes)
 * and a one-token plan compiled once and reused for every new token. */
#ifndef NABLA_GENERATE_H
#define NABLA_GENERATE_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sampling ---------------------------------------------------------------- */

typedef struct nb_sample_options {
  float temperature; /* >= 0; 0 = greedy: the most likely token (the lowest id among ties) */
  int top_k;         /* >= 0; draw among the k most likely tokens only; 0 = all */
  uint64_t seed;     /* the sampler's generator: the same seed draws the same tokens */
} nb_sample_options;

typedef struct nb_sampler nb_sampler;

/* A sampler over `vocab` logits. A negative or NaN temperature or a
 * negative top_k is NB_ERR_INVALID_ARG. */
nb_status nb_sampler_new(int64_t vocab, const nb_sample_options *o, nb_sampler **out);
void nb_sampler_free(nb_sampler *s);
/* Picks a token from logits[vocab]: argmax when the temperature is 0 or
 * top_k is 1, otherwise a draw from softmax(logits / temperature) over
 * the top_k largest logits (ties broken by the lower id). A NaN logit is
 * NB_ERR_INVALID_ARG naming its id. */
nb_status nb_sampler_pick(nb_sampler *s, const float *logits, int32_t *token);

/* ---- decoder ----------------------------------------------------------------- */

/* What a build function returns: the nodes of a decode graph for `len` new
 * tokens of one sequence. */
typedef struct nb_decode_graph {
  nb_tensor *ids;    /* nb_input i32 with len elements ([1, len]) */
  nb_tensor *pos;    /* nb_input i32 [1]: the position of the first new token */
  nb_tensor *logits; /* f32, len * vocab elements, last axis vocab; the decoder marks it
                        as an output */
} nb_decode_graph;

/* Builds the model's decode graph (nn.h's *_decode layers, caches of
 * `capacity` positions) for `len` new tokens into g. Called once per plan
 * the decoder compiles. */
typedef nb_status (*nb_decode_build_fn)(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                                        nb_decode_graph *out);

typedef struct nb_decoder nb_decoder;

/* Builds and compiles the one-token plan on (be, st). The weights are
 * whatever st holds (load them before generating; loading may come after
 * this call). ctx is passed to build and must outlive the decoder. */
nb_status nb_decoder_new(nb_backend *be, nb_state *st, int64_t capacity, nb_decode_build_fn build,
                         void *ctx, nb_decoder **out);
void nb_decoder_free(nb_decoder *d);
int64_t nb_decoder_vocab(const nb_decoder *d);
int64_t nb_decoder_capacity(const nb_decoder *d);
/* Tokens in the cache: the position of the next token fed. */
int64_t nb_decoder_pos(const nb_decoder *d);
/* Empties the cache (the next token goes to position 0). */
void nb_decoder_reset(nb_decoder *d);
/* Runs n >= 1 tokens at positions pos..pos + n - 1 (one run of the
 * one-token plan for n = 1, of the prefill plan otherwise) and writes their
 * logits, n rows of vocab, to `logits` (may be NULL). pos + n > capacity is
 * NB_ERR_INVALID_ARG and leaves the cache as it was. */
nb_status nb_decoder_feed(nb_decoder *d, const int32_t *ids, int64_t n, float *logits);

/* ---- generation -------------------------------------------------------------- */

/* Called with each new token as soon as it is sampled; return non-zero to
 * stop generating. */
typedef int (*nb_token_fn)(int32_t token, void *user);

typedef struct nb_generate_options {
  int64_t max_tokens; /* new tokens to generate (>= 0) */
  nb_sample_options sample;
  /* What happens when prompt + generated tokens fill the cache. 0: stop
   * with NB_ERR_INVALID_ARG naming the capacity. 1: slide: keep the most
   * recent capacity / 2 tokens, run them through again at positions 0..
   * (one prefill), and go on; every later token then sees at least half a
   * context. (Recomputing the whole window at every step, as a model
   * without a cache does, gives other tokens past that point.) A prompt
   * longer than the capacity is cut the same way when sliding, an error
   * otherwise. */
  int slide;
} nb_generate_options;

typedef struct nb_generate_stats {
  int64_t prompt_tokens; /* prompt tokens run through the model */
  int64_t new_tokens;    /* tokens generated */
  int slides;            /* times the cache was full and restarted */
  double prefill_seconds, decode_seconds;
  double tokens_per_sec; /* new_tokens / (prefill_seconds + decode_seconds) */
} nb_generate_stats;

/* Generates up to o->max_tokens tokens after prompt[0..n) (n >= 1): the
 * prompt in one prefill run, then one decode run per token, each new token
 * sampled from the logits of the last position, passed to on_token (may be
 * NULL) and fed back. Resets the decoder first. stats may be NULL. */
nb_status nb_generate(nb_decoder *d, const int32_t *prompt, int64_t n, const nb_generate_options *o,
                      nb_token_fn on_token, void *user, nb_generate_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
