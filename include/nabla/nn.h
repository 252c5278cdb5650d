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

/* Activation functions by name, for layers that take one as a setting
 * (model files: `activation = relu`). */
typedef enum nb_nn_act {
  NB_NN_ACT_NONE = 0, /* identity */
  NB_NN_ACT_RELU,
  NB_NN_ACT_LEAKY_RELU, /* negative slope given separately (PyTorch default 0.01) */
  NB_NN_ACT_GELU,       /* exact erf form, PyTorch's default */
  NB_NN_ACT_GELU_TANH,  /* tanh approximation (GPT-2) */
  NB_NN_ACT_TANH,
  NB_NN_ACT_SIGMOID,
  NB_NN_ACT_SILU,
  NB_NN_ACT_COUNT
} nb_nn_act;

/* Applies `act` to x; `slope` is used by leaky_relu only. NB_NN_ACT_NONE
 * returns x itself. */
nb_tensor *nb_nn_activation(const nb_nn *nn, nb_tensor *x, nb_nn_act act, float slope);
/* "relu", "gelu_tanh", ... ("none" for NB_NN_ACT_NONE, "?" if out of range). */
const char *nb_nn_act_name(nb_nn_act act);
/* Parses an activation name as nb_nn_act_name writes it; NB_ERR_INVALID_ARG
 * with the list of names if unknown. */
nb_status nb_nn_act_parse(const char *name, nb_nn_act *out);

/* ---- attention and transformers ------------------------------------------- */

/* Fused scaled-dot-product attention, a graph op with its own CPU kernels:
 * softmax(q k^T * scale + mask) v for q [B, H, Tq, D], k [B, H, Tk, D],
 * v [B, H, Tk, Dv] (f32) -> [B, H, Tq, Dv]. causal != 0 masks keys j > i
 * for query i (top-left aligned, like PyTorch's is_causal). scale == 0
 * means 1/sqrt(D). No Tq x Tk matrix is stored: the forward keeps each row's
 * logsumexp and the backward recomputes the probabilities from it. The
 * result is a strided view (the logsumexp sits beside each row). Bad shapes
 * or dtypes are a graph error naming "attention" and the three shapes. */
nb_tensor *nb_attention(nb_graph *g, nb_tensor *q, nb_tensor *k, nb_tensor *v, int causal,
                        float scale);

/* Multi-head self-attention of x [B, T, C] with `heads` heads (C % heads ==
 * 0): NAME.qkv = Linear(C, 3C) (like GPT-2's c_attn: q, k, v in that order
 * along the output axis, each split into heads of C / heads), attention with
 * scale 1/sqrt(C / heads), then NAME.proj = Linear(C, C). -> [B, T, C]. */
nb_tensor *nb_nn_multihead_attention(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                     int causal);

/* A pre-norm transformer block (GPT-2) on x [B, T, C]:
 *   x = x + attn(ln1(x));  x = x + mlp(ln2(x)),
 * mlp = NAME.mlp.fc Linear(C, mlp_ratio C), GELU (tanh form),
 * NAME.mlp.proj Linear(mlp_ratio C, C). Layer norms NAME.ln1, NAME.ln2 (eps
 * 1e-5); attention NAME.attn (nb_nn_multihead_attention). mlp_ratio <= 0
 * means 4. */
nb_tensor *nb_nn_transformer_block(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                   int causal, int mlp_ratio);

#ifdef __cplusplus
}
#endif

#endif
