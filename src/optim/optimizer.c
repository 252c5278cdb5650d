/* Adam(W) and SGD as graph ops: the update is part of the compiled step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "nabla/optim.h"

typedef enum { OPT_ADAM, OPT_SGD } opt_kind;

struct nb_optimizer {
  opt_kind kind;
  float beta1, beta2;
  nb_tensor *lr;     /* input: learning rate (Adam: lr / (1 - beta1^t)) */
  nb_tensor *corr2;  /* input: 1 / sqrt(1 - beta2^t) (Adam only) */
  nb_tensor *lr_raw; /* input: the plain learning rate (AdamW decay only) */
  int n_params;
  /* Adam under a grad scaler's guard: the step count t is the state
   * variable "optim.step", counted in the graph (a skipped step leaves it,
   * as torch's Adam never sees that step), and the bias corrections are
   * graph ops; lr is then the plain learning rate */
  int step_in_graph;
};

static nb_tensor *state_like(nb_graph *g, const nb_tensor *p, const char *suffix) {
  char name[512];
  snprintf(name, sizeof name, "%s.%s", p->name, suffix);
  nb_init zeros = {NB_INIT_ZEROS, 0, 0, 0};
  return nb_variable(g, name, NB_F32, p->ndim, p->shape, zeros);
}

/* decay_min_dims: parameters with fewer axes get no weight decay. */
static nb_status build(nb_graph *g, opt_kind kind, float b1, float b2, float eps, float wd_all,
                       int flag, int decay_min_dims, nb_optimizer **out) {
  if (!g || !out) return nb_error(NB_ERR_INVALID_ARG, "optimizer: NULL argument");
  *out = NULL;
  if (g->status) return nb_error(g->status, "optimizer: the graph has an error: %s", g->error);
  nb_optimizer *o = calloc(1, sizeof *o);
  if (!o) return nb_error(NB_ERR_OOM, "optimizer: out of memory");
  o->kind = kind;
  o->beta1 = b1;
  o->beta2 = b2;
  o->lr = nb_input(g, "optim.lr", NB_F32, 0, NULL);
  nb_tensor *lr = o->lr, *corr2 = NULL, *lr_raw = NULL;
  o->step_in_graph = kind == OPT_ADAM && g->assign_guard;
  if (o->step_in_graph) {
    nb_init zeros = {NB_INIT_ZEROS, 0, 0, 0};
    nb_tensor *t = nb_variable(g, "optim.step", NB_F32, 0, NULL, zeros);
    nb_tensor *t1 = nb_add(g, t, nb_scalar(g, 1.0f)), *one = nb_scalar(g, 1.0f);
    nb_assign(g, t, t1); /* guarded: unchanged by a skipped step */
    lr_raw = o->lr;
    lr = nb_div(g, o->lr, nb_sub(g, one, nb_pow(g, nb_scalar(g, b1), t1)));
    corr2 = nb_rsqrt(g, nb_sub(g, one, nb_pow(g, nb_scalar(g, b2), t1)));
  } else if (kind == OPT_ADAM) {
    corr2 = o->corr2 = nb_input(g, "optim.corr2", NB_F32, 0, NULL);
    if (flag && wd_all != 0.0f) lr_raw = o->lr_raw = nb_input(g, "optim.lr_raw", NB_F32, 0, NULL);
  }
  int n = g->n_nodes; /* params only among the nodes that exist now */
  for (int i = 0; i < n; i++) {
    nb_tensor *p = g->nodes[i];
    if (p->op != NB_OP_VARIABLE || !(p->flags & NB_FLAG_REQUIRES_GRAD) || !p->grad) continue;
    nb_tensor *grad = p->grad, *upd;
    float wd = p->ndim >= decay_min_dims ? wd_all : 0.0f;
    if (kind == OPT_ADAM) {
      if (wd != 0.0f && !flag) grad = nb_add(g, grad, nb_mul(g, p, nb_scalar(g, wd)));
      nb_tensor *m = state_like(g, p, "adam_m"), *v = state_like(g, p, "adam_v");
      nb_tensor *m2 =
          nb_add(g, nb_mul(g, m, nb_scalar(g, b1)), nb_mul(g, grad, nb_scalar(g, 1 - b1)));
      nb_tensor *v2 = nb_add(g, nb_mul(g, v, nb_scalar(g, b2)),
                             nb_mul(g, nb_square(g, grad), nb_scalar(g, 1 - b2)));
      nb_assign(g, m, m2);
      nb_assign(g, v, v2);
      /* torch: p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
      nb_tensor *denom = nb_add(g, nb_mul(g, nb_sqrt(g, v2), corr2), nb_scalar(g, eps));
      upd = nb_mul(g, nb_div(g, m2, denom), lr);
      nb_tensor *base = p;
      if (wd != 0.0f && flag) /* AdamW: p *= 1 - lr * wd, with the raw lr */
        base = nb_mul(g, p, nb_sub(g, nb_scalar(g, 1.0f), nb_mul(g, lr_raw, nb_scalar(g, wd))));
      nb_assign(g, p, nb_sub(g, base, upd));
    } else {
      if (wd != 0.0f) grad = nb_add(g, grad, nb_mul(g, p, nb_scalar(g, wd)));
      nb_tensor *step = grad;
      if (b1 != 0.0f) {
        nb_tensor *buf = state_like(g, p, "momentum");
        nb_tensor *buf2 = nb_add(g, nb_mul(g, buf, nb_scalar(g, b1)), grad);
        nb_assign(g, buf, buf2);
        step = flag ? nb_add(g, grad, nb_mul(g, buf2, nb_scalar(g, b1))) : buf2;
      }
      nb_assign(g, p, nb_sub(g, p, nb_mul(g, step, lr)));
    }
    o->n_params++;
  }
  if (g->status) {
    nb_status st = nb_error(g->status, "optimizer: %s", g->error);
    free(o);
    return st;
  }
  *out = o;
  return NB_OK;
}

nb_adam_options nb_adam_defaults(void) {
  nb_adam_options o = {0.9f, 0.999f, 1e-8f, 0.0f, 0, 0};
  return o;
}

nb_status nb_optimizer_adam_ex(nb_graph *g, const nb_adam_options *o, nb_optimizer **out) {
  if (!o) return nb_error(NB_ERR_INVALID_ARG, "nb_optimizer_adam_ex: options are NULL");
  if (!(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->eps >= 0 &&
        o->weight_decay >= 0))
    return nb_error(
        NB_ERR_INVALID_ARG,
        "adam: need 0 <= beta1, beta2 < 1 and eps, weight_decay >= 0 (got %g, %g, %g, %g)",
        (double)o->beta1, (double)o->beta2, (double)o->eps, (double)o->weight_decay);
  if (o->decay_min_dims < 0 || o->decay_min_dims > NB_MAX_DIMS)
    return nb_error(NB_ERR_INVALID_ARG, "adam: decay_min_dims must be in [0, %d], got %d",
                    NB_MAX_DIMS, o->decay_min_dims);
  return build(g, OPT_ADAM, o->beta1, o->beta2, o->eps, o->weight_decay, o->decoupled,
               o->decay_min_dims, out);
}

nb_status nb_optimizer_adam(nb_graph *g, float beta1, float beta2, float eps, float weight_decay,
                            int decoupled, nb_optimizer **out) {
  nb_adam_options o = {beta1, beta2, eps, weight_decay, decoupled, 0};
  return nb_optimizer_adam_ex(g, &o, out);
}

nb_status nb_optimizer_sgd(nb_graph *g, float momentum, float weight_decay, int nesterov,
                           nb_optimizer **out) {
  if (!(momentum >= 0 && weight_decay >= 0) || (nesterov && momentum == 0))
    return nb_error(NB_ERR_INVALID_ARG,
                    "sgd: need momentum, weight_decay >= 0, and momentum > 0 for Nesterov");
  return build(g, OPT_SGD, momentum, 0, 0, weight_decay, nesterov, 0, out);
}

nb_status nb_optimizer_feed(const nb_optimizer *o, nb_plan *p, int64_t step, float lr) {
  if (!o || !p || step < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_optimizer_feed: need an optimizer, a plan, step >= 1");
  float v = lr;
  if (o->kind == OPT_ADAM && !o->step_in_graph) {
    double c1 = 1.0 - pow(o->beta1, (double)step), c2 = 1.0 - pow(o->beta2, (double)step);
    v = (float)(lr / c1);
    float corr2 = (float)(1.0 / sqrt(c2));
    nb_status st = nb_plan_set_input(p, o->corr2, &corr2, sizeof corr2);
    if (!st && o->lr_raw) st = nb_plan_set_input(p, o->lr_raw, &lr, sizeof lr);
    if (st) return st;
  }
  return nb_plan_set_input(p, o->lr, &v, sizeof v);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

int nb_optimizer_owns(const char *name) {
  return name &&
         (ends_with(name, ".adam_m") || ends_with(name, ".adam_v") ||
          ends_with(name, ".momentum") || !strcmp(name, "optim.step") || !strncmp(name, "amp.", 4));
}

int nb_optimizer_param_count(const nb_optimizer *o) { return o ? o->n_params : 0; }

void nb_optimizer_free(nb_optimizer *o) { free(o); }
