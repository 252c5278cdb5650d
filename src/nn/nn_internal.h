/* Shared by the layer files of src/nn. Not installed. */
#ifndef NB_NN_INTERNAL_H
#define NB_NN_INTERNAL_H

#include "nabla/nn.h"

/* The seed of a parameter or dropout mask: the model seed mixed with its
 * name, so a model built twice (train and eval graphs) draws identical
 * initial values. */
uint64_t nb_nn_name_seed(uint64_t seed, const char *name);

/* Adds the LoRA branch of Linear layer `name` (input x [..., in], output y
 * [..., out] of the base layer) under nn->lora and returns the sum; NULL
 * with a graph error for a bad configuration (src/nn/lora.c). */
nb_tensor *nb_nn_lora_linear(const nb_nn *nn, const char *name, nb_tensor *x, nb_tensor *y,
                             int64_t in, int64_t out);

/* Part `which` (0 = q, 1 = k, 2 = v) of qkv [B, T, 3, H, Dh] as a dense
 * [B, H, T, Dh] (transformer.c; the decode layers split heads the same
 * way). */
nb_tensor *nb_nn_head_split(nb_graph *g, nb_tensor *qkv, int which, const int64_t *bhtd);

/* The attention sublayer of a block: h [B, T, C] -> [B, T, C], its
 * parameters under `name`. */
typedef nb_tensor *(*nb_nn_attention_fn)(const nb_nn *nn, const char *name, nb_tensor *h,
                                         void *ctx);

/* GPT-2's pre-norm block around `attn` (transformer.c), one layout for the
 * training, decode and model-file blocks so they cannot drift apart:
 *   x = x + drop(attn(ln1(x))),  x = x + drop(mlp(ln2(x)))
 * with a tanh-GELU MLP of width mlp_ratio * C (mlp_ratio <= 0: 4) and
 * dropout p on both residual branches (NAME.attn.dropout,
 * NAME.mlp.dropout; none at all when p is 0). x must be [B, T, C]. */
nb_tensor *nb_nn_pre_norm_block(const nb_nn *nn, const char *name, nb_tensor *x, int mlp_ratio,
                                float p, nb_nn_attention_fn attn, void *ctx);

/* nb_nn_transformer_block with dropout p on its residual branches: the
 * [transformer] block of model files (model_gpt.c). */
nb_tensor *nb_nn_transformer_block_p(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                     int causal, int mlp_ratio, float p);

#endif
