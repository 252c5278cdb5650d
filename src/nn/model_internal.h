/* The parsed form of a model file, shared by the parser (model_parse.c) and
 * the builder (model.c). */
#ifndef NABLA_MODEL_INTERNAL_H
#define NABLA_MODEL_INTERNAL_H

#include "nabla/model.h"

#define NB_MODEL_NAME_MAX 128

typedef enum nb_layer_kind {
  NB_LAYER_CONV2D = 0,
  NB_LAYER_LINEAR,
  NB_LAYER_MAXPOOL2D,
  NB_LAYER_AVGPOOL2D,
  NB_LAYER_GLOBAL_AVGPOOL,
  NB_LAYER_FLATTEN,
  NB_LAYER_BATCHNORM,
  NB_LAYER_LAYERNORM,
  NB_LAYER_DROPOUT,
  NB_LAYER_ACTIVATION,
  NB_LAYER_EMBEDDING,
  NB_LAYER_RESIDUAL,    /* opens a block: out = act(body(x) + shortcut(x)) */
  NB_LAYER_END,         /* closes the innermost block */
  NB_LAYER_POSITIONAL,  /* learned positional table added to [B, T, C] (model_gpt.c) */
  NB_LAYER_TRANSFORMER, /* `repeat` pre-norm transformer blocks NAME.0, NAME.1, ... */
  NB_LAYER_KIND_COUNT
} nb_layer_kind;

/* How a residual block's shortcut fits x to the body's output shape. */
typedef enum nb_projection {
  NB_PROJ_CONV_BN = 0, /* 1x1 conv (strided) + batch norm: torchvision's downsample */
  NB_PROJ_CONV,        /* 1x1 conv with bias */
  NB_PROJ_PAD,         /* strided subsample + zero channels ("option A", no params) */
  NB_PROJ_NONE,        /* shapes must already match */
} nb_projection;

typedef struct nb_model_layer {
  nb_layer_kind kind;
  int line;                     /* of the section header */
  char name[NB_MODEL_NAME_MAX]; /* full name, block scopes included: "layer1.0.conv1" */
  int depth;                    /* residual blocks enclosing it */
  int block;                    /* END: index of its RESIDUAL; RESIDUAL: index of its END */

  int64_t out; /* conv2d, linear */
  int kernel[2], stride[2], padding[2], dilation[2];
  int groups, bias;
  int ceil_mode, count_include_pad; /* pools */
  nb_nn_act act;                    /* conv2d, linear, activation, residual */
  float slope;                      /* leaky_relu */
  float momentum, eps;              /* batchnorm, layernorm */
  float p;                          /* dropout */
  int64_t vocab, dim;               /* embedding */
  nb_projection projection;         /* residual */
  int vocab_from_data;              /* embedding: vocab = vocab */
  int64_t context;                  /* positional: table rows */
  int heads, repeat, mlp, causal;   /* transformer (dropout in p) */
  char tie[NB_MODEL_NAME_MAX];      /* linear: the [embedding] whose weight it reuses */
  char device[16];                  /* `device` key or nb_model_set_placement: "cpu:1"; "" = none */
  int tie_layer;                    /* its index; -1 when untied */
  int recompute; /* `recompute = yes`: training recomputes it in the backward pass; a run of
                    such consecutive layers is one segment (nb_graph_recompute_begin) */
} nb_model_layer;

struct nb_model {
  char *source;
  char name[NB_MODEL_NAME_MAX];
  int in_ndim;
  int64_t in_shape[NB_MAX_DIMS];
  nb_dtype in_dtype;
  int64_t classes;
  int classes_vocab; /* classes = vocab */
  int64_t vocab;     /* what `vocab` stands for (0: no key says vocab) */
  nb_nn_init init;   /* [net] init */
  int init_set;      /* ... when the file sets it: overrides nb_nn.init */

  int tokenizer;            /* [net] tokenizer: 0 char (bytes of the text), 1 bpe */
  int64_t tokenizer_vocab;  /* [net] tokenizer_vocab: BPE size to learn (0: none) */
  char tokenizer_file[256]; /* [net] tokenizer_file: a vocabulary to load ("" none) */

  nb_recipe recipe;
  nb_model_layer *layers;
  int n_layers;
  nb_lora lora; /* nb_model_set_lora: adapters on every build when has_lora */
  int has_lora;
};

/* "conv2d", "residual", ... */
const char *nb_layer_kind_name(nb_layer_kind k);

/* GPT layers (model_gpt.c), one function per section type so that other
 * builds (a decode-mode graph with a KV cache, adapters) can reuse or
 * replace one piece. Each takes the layer's input h and returns its output,
 * or NULL with the error in nn->g. */
/* [positional NAME]: h [B, T, C] + NAME.weight[0:T] (table [context, C]). */
nb_tensor *nb_model_gpt_positional(const nb_nn *nn, const nb_model_layer *l, nb_tensor *h);
/* One pre-norm block NAME (= "h.0"): the layout of nb_nn_transformer_block,
 * plus dropout p on both residual branches (training only). */
nb_tensor *nb_model_gpt_block(const nb_nn *nn, const char *name, nb_tensor *h, int heads,
                              int causal, int mlp_ratio, float p);
/* [transformer NAME]: l->repeat blocks NAME.0 ... NAME.(repeat-1). */
nb_tensor *nb_model_gpt_transformer(const nb_nn *nn, const nb_model_layer *l, nb_tensor *h);
/* [linear NAME] tie = E: h [..., C] @ E.weight^T -> [..., vocab], no bias. */
nb_tensor *nb_model_gpt_tied_head(const nb_nn *nn, const nb_model *m, const nb_model_layer *l,
                                  nb_tensor *h);

#endif
