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

/* Longest LoRA target list, terminator included. */
#define NB_LORA_TARGETS_MAX 256

/* LoRA (Hu et al. 2021; Microsoft's loralib, Hugging Face peft): a Linear
 * layer NAME whose name matches `targets` computes
 *   y = x W^T + b + (alpha / rank) (dropout(x) A^T) B^T
 * with two new parameters NAME.lora_A [rank, in], drawn like loralib's
 * kaiming_uniform_(a = sqrt(5)), i.e. U(+-1/sqrt(in)), and NAME.lora_B
 * [out, rank], zeros, so a fresh adapter leaves the layer's output as it
 * was. Only nb_nn_linear takes adapters (convolutions and embeddings
 * never do). */
typedef struct nb_lora {
  int rank;      /* r, 1 <= r <= min(in, out) of every target layer */
  float alpha;   /* > 0; the update is scaled by alpha / rank */
  float dropout; /* probability in [0, 1) of the dropout on the adapter's input (peft's
                    lora_dropout); active in training mode only; 0 = none */
  /* Comma-separated patterns: a Linear layer gets adapters when its name
   * contains one of them ("attn" matches "h.0.attn.qkv" and
   * "h.0.attn.proj"; "fc" matches "fc1" and "fc2"); "*" matches every
   * Linear layer. Spaces around a pattern are ignored. */
  char targets[NB_LORA_TARGETS_MAX];
} nb_lora;

/* NB_ERR_INVALID_ARG with a message naming the field unless rank >= 1,
 * alpha > 0 and finite, 0 <= dropout < 1 and targets holds a pattern. */
nb_status nb_lora_check(const nb_lora *l);
/* 1 if layer `name` gets adapters under l's targets (0 for l == NULL). */
int nb_lora_matches(const nb_lora *l, const char *name);
/* 1 if `name` is an adapter parameter ("<layer>.lora_A" / "<layer>.lora_B"). */
int nb_lora_is_adapter(const char *name);

typedef struct nb_nn {
  nb_graph *g;
  int training;    /* batch norm uses batch statistics; dropout is active */
  uint64_t seed;   /* base seed of every initialiser and dropout mask */
  nb_nn_init init; /* how new weights are drawn */
  /* Fields added later: initialise an nb_nn with designated initialisers
   * ({.g = g, .seed = 1}) so that new fields start at zero = off. */
  const nb_lora *lora; /* LoRA adapters on the Linear layers it targets; NULL = none */
  /* 1: the parameters the layers create (weights, biases, norm gains,
   * embeddings) do not require grad, so backward and the optimizers leave
   * them alone; LoRA adapters still train. Running statistics are not
   * parameters: batch norm in training mode still updates them. */
  int freeze_base;
  /* 1 (training graphs): nb_model_build wraps each transformer block and
   * each residual block in a recompute segment (nb_graph_recompute_begin),
   * so the backward pass recomputes their inner activations. */
  int recompute;
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

/* Call once a network is built with nn (nb_model_build does), passing the
 * node count from before the build: with nn->freeze_base, clears
 * requires-grad on every variable created since `first_node` that is not a
 * LoRA adapter (parameters made with nb_param outside these layers
 * included); with nn->lora, fails with NB_ERR_INVALID_ARG when its targets
 * matched no Linear layer built since then, listing the Linear layers
 * there are. */
nb_status nb_nn_finish(const nb_nn *nn, int first_node);

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

/* Attention of Tq new queries over a KV cache, for decoding: q [B, H, Tq,
 * D] holds the queries of positions pos..pos + Tq - 1 (pos: one i32/i64
 * element read at run time, see nb_write_at), k_cache [B, H, T, D] and
 * v_cache [B, H, T, Dv] hold the keys and values of positions 0..T-1, of
 * which query i sees 0..pos + i (causal). Rows of the cache past pos + Tq
 * are never read. -> [B, H, Tq, Dv], a strided view like nb_attention's;
 * each row equals the causal nb_attention row of the same position given
 * the same keys. scale == 0 means 1/sqrt(D). A fused CPU kernel, forward
 * only; pos + Tq > T is a run-time error. */
nb_tensor *nb_attention_cached(nb_graph *g, nb_tensor *q, nb_tensor *k_cache, nb_tensor *v_cache,
                               nb_tensor *pos, float scale);

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

/* ---- decoding with a KV cache ---------------------------------------------- */

/* Decode-mode twins of the layers above, for generating text one token at
 * a time: same parameter names, so a decode graph built into another graph
 * binds the weights of the training graph in the same nb_state. x [B, T, C]
 * holds T new tokens at positions pos..pos + T - 1, where pos is one i32
 * element fed at run time (nb_input), so one plan serves every position.
 * Each attention layer NAME keeps NAME.k_cache and NAME.v_cache [B, heads,
 * capacity, C / heads] (f32 variables, zeros at first): the new keys and
 * values are written at pos (nb_write_at) and the queries attend over rows
 * 0..pos + i (nb_attention_cached). Run a prompt through once (pos = 0,
 * T = its length: the prefill), then one token per run at pos = n, n + 1,
 * ...; pos + T > capacity is a run-time error. The caches are scratch, not
 * weights: nb_nn_is_kv_cache() tells them apart. Training-mode layers
 * (dropout) do not apply: build with nn->training = 0. */

/* nb_nn_multihead_attention (causal) with a KV cache. */
nb_tensor *nb_nn_multihead_attention_decode(const nb_nn *nn, const char *name, nb_tensor *x,
                                            int heads, nb_tensor *pos, int64_t capacity);
/* nb_nn_transformer_block (causal) with a KV cache in NAME.attn. */
nb_tensor *nb_nn_transformer_block_decode(const nb_nn *nn, const char *name, nb_tensor *x,
                                          int heads, int mlp_ratio, nb_tensor *pos,
                                          int64_t capacity);
/* Learned positional embedding at run-time positions: x [B, T, C] + rows
 * pos..pos + T - 1 of NAME.weight [context, C] (GPT-2's wpe), broadcast
 * over the batch. Initialised like examples/gpt_char.c's and the model
 * files' [positional] table (N(0, 0.02) with NB_NN_INIT_NORMAL_002). */
nb_tensor *nb_nn_positional_at(const nb_nn *nn, const char *name, nb_tensor *x, nb_tensor *pos,
                               int64_t context);
/* 1 if `name` is a KV cache ("<layer>.k_cache" / "<layer>.v_cache"). */
int nb_nn_is_kv_cache(const char *name);

#ifdef __cplusplus
}
#endif

#endif
