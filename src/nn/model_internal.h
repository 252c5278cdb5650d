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
  NB_LAYER_RESIDUAL, /* opens a block: out = act(body(x) + shortcut(x)) */
  NB_LAYER_END,      /* closes the innermost block */
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
} nb_model_layer;

struct nb_model {
  char *source;
  char name[NB_MODEL_NAME_MAX];
  int in_ndim;
  int64_t in_shape[NB_MAX_DIMS];
  nb_dtype in_dtype;
  int64_t classes;
  nb_recipe recipe;
  nb_model_layer *layers;
  int n_layers;
};

/* "conv2d", "residual", ... */
const char *nb_layer_kind_name(nb_layer_kind k);

#endif
