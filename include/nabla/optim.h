/* nabla optimizers. An optimizer appends its update to the training graph as
 * ordinary ops ending in nb_assign(), so forward, backward and update compile
 * into one plan. Per-step scalars (learning rate, bias corrections) are graph
 * inputs that nb_optimizer_feed() sets before each run. */
#ifndef NABLA_OPTIM_H
#define NABLA_OPTIM_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_optimizer nb_optimizer;

/* Adam (decoupled = 0, L2 penalty added to the gradient like torch.optim.Adam)
 * or AdamW (decoupled = 1, like torch.optim.AdamW). Call after
 * nb_graph_backward(): every variable that requires grad and has a gradient
 * is updated. Moments are variables named "<param>.adam_m" / ".adam_v". */
nb_status nb_optimizer_adam(nb_graph *g, float beta1, float beta2, float eps, float weight_decay,
                            int decoupled, nb_optimizer **out);
/* Adam(W) settings for nb_optimizer_adam_ex. */
typedef struct nb_adam_options {
  float beta1, beta2, eps;
  float weight_decay;
  int decoupled; /* 1: AdamW (decoupled decay), 0: Adam (L2 penalty) */
  /* Weight decay only for parameters with at least this many axes; 0 or 1
   * decays every parameter. 2 is nanoGPT's rule (matrices and embeddings
   * decay, biases and layer-norm gains do not), the same as torch.optim
   * param groups {ndim >= 2: weight_decay} and {ndim < 2: 0}. */
  int decay_min_dims;
} nb_adam_options;

/* beta1 0.9, beta2 0.999, eps 1e-8, no weight decay, Adam, decay_min_dims 0. */
nb_adam_options nb_adam_defaults(void);
/* nb_optimizer_adam with every setting in one struct (decay_min_dims
 * included). */
nb_status nb_optimizer_adam_ex(nb_graph *g, const nb_adam_options *o, nb_optimizer **out);
/* SGD with momentum (0 = plain), Nesterov and L2 weight decay, like
 * torch.optim.SGD. Momentum buffers are "<param>.momentum". */
nb_status nb_optimizer_sgd(nb_graph *g, float momentum, float weight_decay, int nesterov,
                           nb_optimizer **out);
/* Clips gradients by their global L2 norm, like torch.nn.utils.clip_grad_norm_:
 * appends nodes computing norm = sqrt(sum of every squared gradient element)
 * over all variables that require grad and have a gradient, and replaces
 * each such gradient (nb_graph_grad()) with grad * min(1, max_norm / (norm +
 * 1e-6)). Call after nb_graph_backward() and before creating the optimizer,
 * which then reads the clipped gradients. *norm_out (may be NULL) receives
 * the norm before clipping, a rank-0 f32 node: mark it with
 * nb_tensor_set_output() to read it after each run. */
nb_status nb_clip_grad_norm(nb_graph *g, float max_norm, nb_tensor **norm_out);
/* ---- dynamic loss scaling (f16 training; torch.cuda.amp.GradScaler) ------ */

/* f16 gradients underflow to zero below 2^-24 and overflow above 65504. A
 * grad scaler multiplies the loss by a scale before backward, so small
 * gradients stay representable, divides the gradients by it again before
 * clipping and the optimizer, and skips a step whose gradients hold an inf
 * or NaN. It all runs inside the compiled step, with no host round trip:
 * the scale and its counters are state variables, the skip is a flag that
 * every guarded update selects on (where(found_inf, old, new)), and the
 * scale changes like torch's GradScaler: x backoff_factor after a skipped
 * step, x growth_factor after growth_interval finite steps in a row.
 * Use it in this order:
 *
 *   nb_grad_scaler_new(g, loss, NULL, &gs);
 *   nb_graph_backward(g, nb_grad_scaler_loss(gs));
 *   (nb_dist_average_grads ...)
 *   nb_grad_scaler_unscale(gs);      every later nb_assign is skipped on overflow
 *   (nb_clip_grad_norm ...)
 *   nb_optimizer_adam / _sgd (...);  Adam counts its bias-correction steps
 *                                    in the graph ("optim.step"), so a skipped
 *                                    step does not count, as in torch
 *   nb_grad_scaler_update(gs);       ends the guard, appends the scale update
 *
 * nb_recipe_update does this for a recipe with precision fp16. Assigns
 * made before unscale (batch-norm running statistics) are not skipped, as
 * in torch. */
typedef struct nb_grad_scaler nb_grad_scaler;

typedef struct nb_grad_scaler_options {
  float init_scale;        /* 65536 (2^16) */
  float growth_factor;     /* 2 (> 1) */
  float backoff_factor;    /* 0.5 (in (0, 1)) */
  int64_t growth_interval; /* 2000 finite steps in a row between growths (>= 1) */
} nb_grad_scaler_options;

/* torch.cuda.amp.GradScaler's defaults (above). */
nb_grad_scaler_options nb_grad_scaler_defaults(void);

/* The scaler's state variables (f32 scalars): the current scale, finite
 * steps since the last growth or backoff, and steps skipped so far. Read
 * them with nb_state_read() for logs; checkpoints keep them. */
#define NB_GRAD_SCALER_SCALE   "amp.scale"
#define NB_GRAD_SCALER_GROWTH  "amp.growth_tracker"
#define NB_GRAD_SCALER_SKIPPED "amp.skipped"

/* Creates the scaler's variables and loss * scale. o NULL: the defaults. */
nb_status nb_grad_scaler_new(nb_graph *g, nb_tensor *loss, const nb_grad_scaler_options *o,
                             nb_grad_scaler **out);
/* loss * scale: the node to differentiate instead of the loss. */
nb_tensor *nb_grad_scaler_loss(const nb_grad_scaler *s);
/* After backward: replaces every variable's gradient (nb_graph_grad) by
 * grad / scale, computes found_inf (1 when any gradient element is inf or
 * NaN, else 0) and guards every assign made from now until
 * nb_grad_scaler_update with it. */
nb_status nb_grad_scaler_unscale(nb_grad_scaler *s);
/* found_inf, a rank-0 f32 node (NULL before unscale); mark it as an output
 * to read it after each run. */
nb_tensor *nb_grad_scaler_found_inf(const nb_grad_scaler *s);
/* After the optimizer: ends the guard and appends the updates of the scale
 * and its counters. */
nb_status nb_grad_scaler_update(nb_grad_scaler *s);
/* Frees the handle; the graph keeps its nodes. */
void nb_grad_scaler_free(nb_grad_scaler *s);

/* Sets the per-step inputs for update number `step` (1 for the first) with
 * learning rate `lr`. Call before every nb_plan_run(). */
nb_status nb_optimizer_feed(const nb_optimizer *o, nb_plan *p, int64_t step, float lr);
/* 1 if `name` is an optimizer's own state variable (".adam_m", ".adam_v",
 * ".momentum" suffixes, Adam's step count "optim.step", a grad scaler's
 * "amp.*"), 0 for model variables. */
int nb_optimizer_owns(const char *name);
/* Number of parameters the optimizer updates. */
int nb_optimizer_param_count(const nb_optimizer *o);
void nb_optimizer_free(nb_optimizer *o);

#ifdef __cplusplus
}
#endif

#endif
