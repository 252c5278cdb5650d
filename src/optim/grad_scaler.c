/* Dynamic loss scaling (torch.cuda.amp.GradScaler) as graph ops: scaling,
 * unscaling, the overflow check, the skipped update and the scale's own
 * update all run inside the compiled step, so a training loop never waits
 * for the GPU to learn whether a step overflowed. */
#include <math.h>
#include <stdlib.h>

#include "../graph/graph_internal.h"
#include "nabla/optim.h"

struct nb_grad_scaler {
  nb_graph *g;
  nb_grad_scaler_options o;
  nb_tensor *scale, *growth, *skipped; /* state variables */
  nb_tensor *scaled_loss;
  nb_tensor *found_inf; /* set by unscale */
  int updated;
};

nb_grad_scaler_options nb_grad_scaler_defaults(void) {
  nb_grad_scaler_options o = {65536.0f, 2.0f, 0.5f, 2000};
  return o;
}

static int has_grad(const nb_tensor *p) {
  return p->op == NB_OP_VARIABLE && (p->flags & NB_FLAG_REQUIRES_GRAD) && p->grad;
}

nb_status nb_grad_scaler_new(nb_graph *g, nb_tensor *loss, const nb_grad_scaler_options *opt,
                             nb_grad_scaler **out) {
  if (out) *out = NULL;
  if (!g || !loss || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_grad_scaler_new: NULL argument");
  nb_grad_scaler_options o = opt ? *opt : nb_grad_scaler_defaults();
  if (!(o.init_scale > 0) || !isfinite(o.init_scale) || !(o.growth_factor > 1) ||
      !isfinite(o.growth_factor) || !(o.backoff_factor > 0 && o.backoff_factor < 1) ||
      o.growth_interval < 1 || o.growth_interval > (1 << 24))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_grad_scaler_new: need init_scale > 0, growth_factor > 1, 0 < "
                    "backoff_factor < 1 and 1 <= growth_interval <= 2^24 (got %g, %g, %g, %lld)",
                    (double)o.init_scale, (double)o.growth_factor, (double)o.backoff_factor,
                    (long long)o.growth_interval);
  if (g->status)
    return nb_error(g->status, "nb_grad_scaler_new: the graph has an error: %s", g->error);
  if (loss->graph != g || loss->dtype != NB_F32 || nb_tensor_numel(loss) != 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_grad_scaler_new: the loss must be a single f32 value of this graph");
  nb_grad_scaler *s = calloc(1, sizeof *s);
  if (!s) return nb_error(NB_ERR_OOM, "nb_grad_scaler_new: out of memory");
  s->g = g;
  s->o = o;
  nb_init scale0 = {NB_INIT_CONSTANT, o.init_scale, 0, 0}, zeros = {NB_INIT_ZEROS, 0, 0, 0};
  s->scale = nb_variable(g, NB_GRAD_SCALER_SCALE, NB_F32, 0, NULL, scale0);
  s->growth = nb_variable(g, NB_GRAD_SCALER_GROWTH, NB_F32, 0, NULL, zeros);
  s->skipped = nb_variable(g, NB_GRAD_SCALER_SKIPPED, NB_F32, 0, NULL, zeros);
  s->scaled_loss = nb_mul(g, loss, s->scale);
  if (g->status) {
    nb_status st = nb_error(g->status, "nb_grad_scaler_new: %s", g->error);
    free(s);
    return st;
  }
  *out = s;
  return NB_OK;
}

nb_tensor *nb_grad_scaler_loss(const nb_grad_scaler *s) { return s ? s->scaled_loss : NULL; }

nb_tensor *nb_grad_scaler_found_inf(const nb_grad_scaler *s) { return s ? s->found_inf : NULL; }

nb_status nb_grad_scaler_unscale(nb_grad_scaler *s) {
  if (!s) return nb_error(NB_ERR_INVALID_ARG, "nb_grad_scaler_unscale: NULL scaler");
  nb_graph *g = s->g;
  if (s->found_inf) return nb_error(NB_ERR_STATE, "nb_grad_scaler_unscale: called twice");
  if (g->status)
    return nb_error(g->status, "nb_grad_scaler_unscale: the graph has an error: %s", g->error);
  int n = g->n_nodes, count = 0; /* only the variables that exist now */
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (!has_grad(p)) continue;
    if (p->grad->dtype != NB_F32)
      return nb_error(NB_ERR_DTYPE, "nb_grad_scaler_unscale: gradient of '%s' is %s, not f32",
                      p->name ? p->name : "", nb_dtype_name(p->grad->dtype));
    count++;
  }
  if (!count)
    return nb_error(NB_ERR_STATE, "nb_grad_scaler_unscale: no variable has a gradient; call "
                                  "nb_graph_backward(g, nb_grad_scaler_loss(s)) first");
  /* torch: inv_scale = 1 / scale, in f32 (exact for the powers of two that
   * the default settings keep) */
  nb_tensor *inv = nb_reciprocal(g, s->scale), *zero = nb_scalar(g, 0.0f);
  /* sum(grad * 0) is 0 for finite gradients and NaN as soon as one element
   * is inf or NaN, whatever the magnitudes: one pass per gradient, no
   * isfinite op needed */
  nb_tensor *poison = NULL;
  nb_tensor **unscaled = malloc((size_t)count * sizeof *unscaled);
  if (!unscaled) return nb_error(NB_ERR_OOM, "nb_grad_scaler_unscale: out of memory");
  int k = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (!has_grad(p)) continue;
    nb_tensor *bad = nb_sum(g, nb_mul(g, p->grad, zero), 0, NULL, 0);
    poison = poison ? nb_add(g, poison, bad) : bad;
    unscaled[k++] = nb_mul(g, p->grad, inv);
  }
  nb_tensor *found = nb_ne(g, poison, poison); /* 1 only for NaN */
  if (g->status) {
    free(unscaled);
    return nb_error(g->status, "nb_grad_scaler_unscale: %s", g->error);
  }
  /* every node built: now replace the gradients, so a failure above left
   * them all as they were */
  k = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (has_grad(p)) p->grad = unscaled[k++];
  }
  free(unscaled);
  s->found_inf = found;
  nb_graph_set_assign_guard(g, found);
  return NB_OK;
}

nb_status nb_grad_scaler_update(nb_grad_scaler *s) {
  if (!s) return nb_error(NB_ERR_INVALID_ARG, "nb_grad_scaler_update: NULL scaler");
  if (!s->found_inf || s->updated)
    return nb_error(NB_ERR_STATE, "nb_grad_scaler_update: call it once, after "
                                  "nb_grad_scaler_unscale and the optimizer");
  nb_graph *g = s->g;
  nb_graph_set_assign_guard(g, NULL); /* the scale's own update always happens */
  if (g->status)
    return nb_error(g->status, "nb_grad_scaler_update: the graph has an error: %s", g->error);
  const nb_grad_scaler_options *o = &s->o;
  nb_tensor *found = s->found_inf, *zero = nb_scalar(g, 0.0f);
  /* torch's _amp_update_scale_: overflow -> scale * backoff, tracker 0;
   * else tracker + 1, and at growth_interval -> scale * growth (kept only
   * when finite), tracker 0 */
  nb_tensor *succ = nb_add(g, s->growth, nb_scalar(g, 1.0f));
  nb_tensor *grow = nb_ge(g, succ, nb_scalar(g, (float)o->growth_interval));
  nb_tensor *grown = nb_mul(g, s->scale, nb_scalar(g, o->growth_factor));
  nb_tensor *nan_if_inf = nb_mul(g, grown, zero);
  grown = nb_where(g, nb_ne(g, nan_if_inf, nan_if_inf), s->scale, grown);
  nb_tensor *kept = nb_where(g, grow, grown, s->scale);
  nb_tensor *scale = nb_where(g, found, nb_mul(g, s->scale, nb_scalar(g, o->backoff_factor)), kept);
  nb_tensor *tracker = nb_where(g, found, zero, nb_where(g, grow, zero, succ));
  nb_assign(g, s->scale, scale);
  nb_assign(g, s->growth, tracker);
  nb_assign(g, s->skipped, nb_add(g, s->skipped, found));
  if (g->status) return nb_error(g->status, "nb_grad_scaler_update: %s", g->error);
  s->updated = 1;
  return NB_OK;
}

/* The graph may be gone already: free touches only the handle. */
void nb_grad_scaler_free(nb_grad_scaler *s) { free(s); }
