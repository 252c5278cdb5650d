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
/* Sets the per-step inputs for update number `step` (1 for the first) with
 * learning rate `lr`. Call before every nb_plan_run(). */
nb_status nb_optimizer_feed(const nb_optimizer *o, nb_plan *p, int64_t step, float lr);
/* 1 if `name` is an optimizer's own state variable (".adam_m", ".adam_v",
 * ".momentum" suffixes), 0 for model variables. */
int nb_optimizer_owns(const char *name);
/* Number of parameters the optimizer updates. */
int nb_optimizer_param_count(const nb_optimizer *o);
void nb_optimizer_free(nb_optimizer *o);

#ifdef __cplusplus
}
#endif

#endif
