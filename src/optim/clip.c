/* Gradient clipping by global norm, as graph ops: the norm and the scaling
 * run inside the compiled step, between backward and the optimizer update,
 * with no extra pass over the gradients on the host. */
#include <math.h>
#include <stdlib.h>

#include "../graph/graph_internal.h"
#include "nabla/optim.h"

static int is_clippable(const nb_tensor *p) {
  return p->op == NB_OP_VARIABLE && (p->flags & NB_FLAG_REQUIRES_GRAD) && p->grad;
}

nb_status nb_clip_grad_norm(nb_graph *g, float max_norm, nb_tensor **norm_out) {
  if (norm_out) *norm_out = NULL;
  if (!g) return nb_error(NB_ERR_INVALID_ARG, "clip_grad_norm: NULL graph");
  if (!(max_norm > 0) || !isfinite(max_norm))
    return nb_error(NB_ERR_INVALID_ARG, "clip_grad_norm: max_norm must be finite and > 0 (got %g)",
                    (double)max_norm);
  if (g->status) return nb_error(g->status, "clip_grad_norm: the graph has an error: %s", g->error);
  int n = g->n_nodes; /* only the variables that exist now; we append nodes below */
  nb_tensor *sumsq = NULL;
  int count = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (!is_clippable(p)) continue;
    if (!nb_dtype_is_float(p->grad->dtype))
      return nb_error(NB_ERR_DTYPE, "clip_grad_norm: gradient of '%s' is %s, not a float type",
                      p->name ? p->name : "", nb_dtype_name(p->grad->dtype));
    /* squares summed in f32 whatever the gradient's type, like torch's
     * per-tensor norms stacked into one f32 norm */
    nb_tensor *gr = p->grad->dtype == NB_F32 ? p->grad : nb_cast(g, p->grad, NB_F32);
    nb_tensor *sq = nb_sum(g, nb_square(g, gr), 0, NULL, 0);
    sumsq = sumsq ? nb_add(g, sumsq, sq) : sq;
    count++;
  }
  if (!count)
    return nb_error(NB_ERR_STATE, "clip_grad_norm: no variable has a gradient; call "
                                  "nb_graph_backward() first");
  nb_tensor *norm = nb_sqrt(g, sumsq);
  /* torch: clamp(max_norm / (norm + 1e-6), max=1), applied even when it is 1 */
  nb_tensor *coef =
      nb_minimum(g, nb_div(g, nb_scalar(g, max_norm), nb_add(g, norm, nb_scalar(g, 1e-6f))),
                 nb_scalar(g, 1.0f));
  if (g->status) return nb_error(g->status, "clip_grad_norm: %s", g->error);
  /* build every clipped gradient before replacing any, so a failure leaves
   * all p->grad as they were */
  nb_tensor **clipped = malloc((size_t)count * sizeof *clipped);
  if (!clipped) return nb_error(NB_ERR_OOM, "clip_grad_norm: out of memory");
  int k = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (!is_clippable(p)) continue;
    nb_tensor *c = p->grad->dtype == NB_F32 ? coef : nb_cast(g, coef, p->grad->dtype);
    clipped[k++] = nb_mul(g, p->grad, c);
  }
  if (g->status) {
    free(clipped);
    return nb_error(g->status, "clip_grad_norm: %s", g->error);
  }
  k = 0;
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (is_clippable(p)) p->grad = clipped[k++];
  }
  free(clipped);
  if (norm_out) *norm_out = norm;
  return NB_OK;
}
