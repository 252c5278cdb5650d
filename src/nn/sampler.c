/* Picking the next token from a row of logits: greedy, temperature, top-k.
 *
 * Probabilities are computed in double relative to the largest logit, so
 * any logit range works, and the draw walks the kept tokens in a fixed
 * order (best first), so a seed reproduces its tokens exactly. */
#include <math.h>
#include <stdlib.h>

#include "nabla/generate.h"

typedef struct {
  float v;
  int32_t id;
} scored;

struct nb_sampler {
  int64_t vocab;
  nb_sample_options o;
  nb_rng rng;
  scored *top; /* vocab entries: the candidates, best first when top-k applies */
};

nb_status nb_sampler_new(int64_t vocab, const nb_sample_options *o, nb_sampler **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_sampler_new: out is NULL");
  *out = NULL;
  if (!o || vocab < 1 || vocab > INT32_MAX)
    return nb_error(NB_ERR_INVALID_ARG, "nb_sampler_new: options and a vocabulary of 1..2^31-1 "
                                        "tokens are required");
  if (!(o->temperature >= 0.0f) || isinf(o->temperature))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_sampler_new: temperature %g is not a finite number >= 0 (0 = greedy)",
                    (double)o->temperature);
  if (o->top_k < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_sampler_new: top_k %d is negative (0 = all tokens)",
                    o->top_k);
  nb_sampler *s = calloc(1, sizeof *s);
  if (s) s->top = malloc((size_t)vocab * sizeof *s->top);
  if (!s || !s->top) {
    free(s);
    return nb_error(NB_ERR_OOM, "nb_sampler_new: out of memory for %lld tokens", (long long)vocab);
  }
  s->vocab = vocab;
  s->o = *o;
  nb_rng_seed(&s->rng, o->seed);
  *out = s;
  return NB_OK;
}

void nb_sampler_free(nb_sampler *s) {
  if (!s) return;
  free(s->top);
  free(s);
}

/* Larger logit first, then the lower id: a total order, so top-k is the
 * same set and order on every platform. */
static int by_score(const void *pa, const void *pb) {
  const scored *a = pa, *b = pb;
  if (a->v != b->v) return a->v > b->v ? -1 : 1;
  return (a->id > b->id) - (a->id < b->id);
}

nb_status nb_sampler_pick(nb_sampler *s, const float *logits, int32_t *token) {
  if (!s || !logits || !token)
    return nb_error(NB_ERR_INVALID_ARG, "nb_sampler_pick: NULL argument");
  int64_t v = s->vocab, best = 0;
  for (int64_t i = 0; i < v; i++) {
    if (isnan(logits[i]))
      return nb_error(NB_ERR_INVALID_ARG, "nb_sampler_pick: logit of token %lld is NaN",
                      (long long)i);
    if (logits[i] > logits[best]) best = i;
  }
  /* an infinite top logit takes all the probability (or none is finite) */
  if (s->o.temperature == 0.0f || s->o.top_k == 1 || isinf(logits[best])) {
    *token = (int32_t)best;
    return NB_OK;
  }
  int64_t k = s->o.top_k > 0 && s->o.top_k < v ? s->o.top_k : v;
  for (int64_t i = 0; i < v; i++) s->top[i] = (scored){logits[i], (int32_t)i};
  if (k < v) qsort(s->top, (size_t)v, sizeof *s->top, by_score);
  double t = (double)s->o.temperature, m = (double)logits[best], sum = 0.0;
  for (int64_t i = 0; i < k; i++) sum += exp(((double)s->top[i].v - m) / t);
  double r = nb_rng_uniform(&s->rng) * sum;
  int64_t last = 0;
  for (int64_t i = 0; i < k; i++) {
    double p = exp(((double)s->top[i].v - m) / t);
    if (p > 0.0) last = i;
    r -= p;
    if (r < 0.0) {
      *token = s->top[i].id;
      return NB_OK;
    }
  }
  /* rounding left r a hair above zero: the last token that can be drawn */
  *token = s->top[last].id;
  return NB_OK;
}
