/* nabla layers: functions that add a layer's ops to a graph and create its
 * parameters as named variables ("conv1.weight", "conv1.bias", ...).
 *
 * Layers are functional: building the same model into another graph (eval
 * mode, another batch size) with the same names binds the same parameters
 * in the nb_state, so train and eval plans share weights without copies.
 * Initial values depend only on nb_nn.seed and the parameter's name. */
#ifndef NABLA_NN_H
#define NABLA_NN_H

#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nb_nn_init {
  NB_NN_INIT_TORCH = 0,  /* PyTorch defaults: U(+-1/sqrt(fan_in)) for weights and biases */
  NB_NN_INIT_KAIMING,    /* weights N(0, sqrt(2 / fan_in)), biases 0 (ReLU nets) */
  NB_NN_INIT_XAVIER,     /* weights U(+-sqrt(6 / (fan_in + fan_out))), biases 0 */
  NB_NN_INIT_NORMAL_002, /* weights N(0, 0.02), biases 0 (GPT-2) */
} nb_nn_init;

typedef struct nb_nn {
  nb_graph *g;
  int training;    /* batch norm uses batch statistics; dropout is active */
  uint64_t seed;   /* base seed of every initialiser and dropout mask */
  nb_nn_init init; /* how new weights are drawn */
} nb_nn;

/* x [..., in] -> [..., out]; weight [out, in] like torch.nn.Linear. */
nb_tensor *nb_nn_linear(const nb_nn *nn, const char *name, nb_tensor *x, int64_t out, int bias);
/* x [N, C, H, W] -> [N, out_ch, P, Q]; weight [out_ch, C/groups, kh, kw]. */
nb_tensor *nb_nn_conv2d(const nb_nn *nn, const char *name, nb_tensor *x, int64_t out_ch, int kh,
                        int kw, const nb_conv2d_params *p, int bias);
/* BatchNorm over axis 1 of [N, C, ...] (1d and 2d alike) with weight, bias,
 * running_mean and running_var. */
nb_tensor *nb_nn_batch_norm(const nb_nn *nn, const char *name, nb_tensor *x, float momentum,
                            float eps);
/* LayerNorm over the last axis with weight and bias. */
nb_tensor *nb_nn_layer_norm(const nb_nn *nn, const char *name, nb_tensor *x, float eps);
/* ids (i32/i64, any shape) -> [..., dim]; weight [vocab, dim]. */
nb_tensor *nb_nn_embedding(const nb_nn *nn, const char *name, nb_tensor *ids, int64_t vocab,
                           int64_t dim);
/* Inverted dropout with a mask seeded from nn->seed and the layer name. */
nb_tensor *nb_nn_dropout(const nb_nn *nn, const char *name, nb_tensor *x, float p);
/* [N, ...] -> [N, prod(...)]. */
nb_tensor *nb_nn_flatten(const nb_nn *nn, nb_tensor *x);

#ifdef __cplusplus
}
#endif

#endif
