/* Layers built from graph ops, with named parameters and seeded init. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn_internal.h"

uint64_t nb_nn_name_seed(uint64_t seed, const char *name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
  return h;
}

static int valid(const nb_nn *nn, const char *name, nb_tensor *x, const char *layer) {
  if (!nn || !nn->g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: nn context or graph is NULL", layer);
    return 0;
  }
  if (!name || !*name) {
    nb_graph_set_error(nn->g, NB_ERR_INVALID_ARG, "%s: a layer needs a name", layer);
    return 0;
  }
  return x != NULL;
}

/* nb_param, frozen (no requires-grad) under nn->freeze_base. */
static nb_tensor *param(const nb_nn *nn, const char *name, int ndim, const int64_t *shape,
                        nb_init init) {
  nb_tensor *t = nb_param(nn->g, name, ndim, shape, init);
  if (t && nn->freeze_base) nb_tensor_set_requires_grad(t, 0);
  return t;
}

/* Fans are doubles: they only scale the initialiser, and a shape too large
 * for the graph (which nb_param then rejects) must not overflow int64 on the
 * way there. */
static nb_tensor *weight(const nb_nn *nn, const char *layer, int ndim, const int64_t *shape,
                         double fan_in, double fan_out) {
  char name[256];
  snprintf(name, sizeof name, "%s.weight", layer);
  nb_init init = {NB_INIT_UNIFORM, 0, 0, nb_nn_name_seed(nn->seed, name)};
  switch (nn->init) {
  case NB_NN_INIT_TORCH:
    init.b = fan_in ? 1.0f / sqrtf((float)fan_in) : 0.0f;
    init.a = -init.b;
    break;
  case NB_NN_INIT_KAIMING:
    init = (nb_init){NB_INIT_NORMAL, 0.0f, fan_in ? sqrtf(2.0f / (float)fan_in) : 0.0f, init.seed};
    break;
  case NB_NN_INIT_XAVIER:
    init.b = fan_in + fan_out ? sqrtf(6.0f / (float)(fan_in + fan_out)) : 0.0f;
    init.a = -init.b;
    break;
  case NB_NN_INIT_NORMAL_002: init = (nb_init){NB_INIT_NORMAL, 0.0f, 0.02f, init.seed}; break;
  }
  return param(nn, name, ndim, shape, init);
}

static nb_tensor *bias(const nb_nn *nn, const char *layer, int64_t n, double fan_in) {
  char name[256];
  snprintf(name, sizeof name, "%s.bias", layer);
  nb_init init = {NB_INIT_ZEROS, 0, 0, nb_nn_name_seed(nn->seed, name)};
  if (nn->init == NB_NN_INIT_TORCH && fan_in) {
    init.kind = NB_INIT_UNIFORM;
    init.b = 1.0f / sqrtf((float)fan_in);
    init.a = -init.b;
  }
  return param(nn, name, 1, &n, init);
}

nb_tensor *nb_nn_linear(const nb_nn *nn, const char *name, nb_tensor *x, int64_t out,
                        int use_bias) {
  if (!valid(nn, name, x, "linear")) return NULL;
  nb_graph *g = nn->g;
  int nd = nb_tensor_ndim(x);
  if (nd < 1 || out <= 0) {
    nb_graph_set_error(g, NB_ERR_SHAPE, "%s: linear needs an input with a feature axis and out > 0",
                       name);
    return NULL;
  }
  int64_t in = nb_tensor_shape(x)[nd - 1];
  int64_t ws[2] = {out, in};
  nb_tensor *w = weight(nn, name, 2, ws, in, out);
  nb_tensor *y = nb_matmul(g, x, nb_transpose(g, w, 0, 1));
  if (use_bias) y = nb_add(g, y, bias(nn, name, out, in));
  return nb_lora_matches(nn->lora, name) ? nb_nn_lora_linear(nn, name, x, y, in, out) : y;
}

nb_tensor *nb_nn_conv2d(const nb_nn *nn, const char *name, nb_tensor *x, int64_t out_ch, int kh,
                        int kw, const nb_conv2d_params *p, int use_bias) {
  if (!valid(nn, name, x, "conv2d")) return NULL;
  nb_graph *g = nn->g;
  nb_conv2d_params d = p ? *p : nb_conv2d_defaults();
  if (nb_tensor_ndim(x) != 4 || out_ch <= 0 || kh <= 0 || kw <= 0 || d.groups <= 0) {
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "%s: conv2d needs an [N, C, H, W] input, out_ch > 0, kernel > 0, groups > 0",
                       name);
    return NULL;
  }
  int64_t cin = nb_tensor_shape(x)[1];
  int64_t ws[4] = {out_ch, d.groups ? cin / d.groups : 0, kh, kw};
  double fan_in = (double)ws[1] * kh * kw;
  nb_tensor *y = nb_conv2d(g, x, weight(nn, name, 4, ws, fan_in, (double)out_ch * kh * kw), &d);
  if (!use_bias) return y;
  int64_t bs[4] = {1, out_ch, 1, 1};
  return nb_add(g, y, nb_reshape(g, bias(nn, name, out_ch, fan_in), 4, bs));
}

static nb_tensor *stat(const nb_nn *nn, const char *layer, const char *what, int64_t n, float v) {
  char name[256];
  snprintf(name, sizeof name, "%s.%s", layer, what);
  nb_init init = {NB_INIT_CONSTANT, v, 0, 0};
  return nb_variable(nn->g, name, NB_F32, 1, &n, init);
}

static nb_tensor *affine(const nb_nn *nn, const char *layer, const char *what, int64_t n, float v) {
  nb_tensor *t = stat(nn, layer, what, n, v);
  nb_tensor_set_requires_grad(t, !nn->freeze_base);
  return t;
}

nb_tensor *nb_nn_batch_norm(const nb_nn *nn, const char *name, nb_tensor *x, float momentum,
                            float eps) {
  if (!valid(nn, name, x, "batch_norm")) return NULL;
  if (nb_tensor_ndim(x) < 2) {
    nb_graph_set_error(nn->g, NB_ERR_SHAPE, "%s: batch_norm needs an [N, C, ...] input", name);
    return NULL;
  }
  int64_t c = nb_tensor_shape(x)[1];
  /* one statement each: argument evaluation order is unspecified, and the
   * creation order is the parameter order (torch's, for checkpoints) */
  nb_tensor *w = affine(nn, name, "weight", c, 1.0f);
  nb_tensor *b = affine(nn, name, "bias", c, 0.0f);
  nb_tensor *rm = stat(nn, name, "running_mean", c, 0.0f);
  nb_tensor *rv = stat(nn, name, "running_var", c, 1.0f);
  return nb_batch_norm(nn->g, x, w, b, rm, rv, nn->training, momentum, eps);
}

nb_tensor *nb_nn_layer_norm(const nb_nn *nn, const char *name, nb_tensor *x, float eps) {
  if (!valid(nn, name, x, "layer_norm")) return NULL;
  int nd = nb_tensor_ndim(x);
  if (nd < 1) {
    nb_graph_set_error(nn->g, NB_ERR_SHAPE, "%s: layer_norm needs at least one axis", name);
    return NULL;
  }
  int64_t d = nb_tensor_shape(x)[nd - 1];
  nb_tensor *w = affine(nn, name, "weight", d, 1.0f); /* weight first, as above */
  nb_tensor *b = affine(nn, name, "bias", d, 0.0f);
  return nb_layer_norm(nn->g, x, 1, w, b, eps);
}

nb_tensor *nb_nn_embedding(const nb_nn *nn, const char *name, nb_tensor *ids, int64_t vocab,
                           int64_t dim) {
  if (!valid(nn, name, ids, "embedding")) return NULL;
  char wn[256];
  snprintf(wn, sizeof wn, "%s.weight", name);
  int64_t ws[2] = {vocab, dim};
  /* torch.nn.Embedding draws N(0, 1) by default */
  nb_init init = {NB_INIT_NORMAL, 0.0f, nn->init == NB_NN_INIT_NORMAL_002 ? 0.02f : 1.0f,
                  nb_nn_name_seed(nn->seed, wn)};
  return nb_embedding(nn->g, param(nn, wn, 2, ws, init), ids);
}

nb_tensor *nb_nn_dropout(const nb_nn *nn, const char *name, nb_tensor *x, float p) {
  if (!valid(nn, name, x, "dropout")) return NULL;
  return nb_dropout(nn->g, x, p, nb_nn_name_seed(nn->seed, name), nn->training);
}

nb_tensor *nb_nn_flatten(const nb_nn *nn, nb_tensor *x) {
  if (!nn || !nn->g || !x) return NULL;
  int nd = nb_tensor_ndim(x);
  if (nd < 1) {
    nb_graph_set_error(nn->g, NB_ERR_SHAPE, "flatten: input must have a batch axis");
    return NULL;
  }
  int64_t shape[2] = {nb_tensor_shape(x)[0], nb_shape_numel(nd - 1, nb_tensor_shape(x) + 1)};
  return nb_reshape(nn->g, x, 2, shape);
}

static const char *const act_names[NB_NN_ACT_COUNT] = {
    "none", "relu", "leaky_relu", "gelu", "gelu_tanh", "tanh", "sigmoid", "silu",
};

const char *nb_nn_act_name(nb_nn_act act) {
  return act >= 0 && act < NB_NN_ACT_COUNT ? act_names[act] : "?";
}

nb_status nb_nn_act_parse(const char *name, nb_nn_act *out) {
  if (!name || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_nn_act_parse: name and out needed");
  for (int i = 0; i < NB_NN_ACT_COUNT; i++) {
    if (!strcmp(name, act_names[i])) {
      *out = (nb_nn_act)i;
      return NB_OK;
    }
  }
  return nb_error(NB_ERR_INVALID_ARG,
                  "unknown activation '%s' (none, relu, leaky_relu, gelu, gelu_tanh, tanh, "
                  "sigmoid, silu)",
                  name);
}

nb_tensor *nb_nn_activation(const nb_nn *nn, nb_tensor *x, nb_nn_act act, float slope) {
  if (!nn || !nn->g) {
    nb_error(NB_ERR_INVALID_ARG, "activation: nn context or graph is NULL");
    return NULL;
  }
  nb_graph *g = nn->g;
  switch (act) {
  case NB_NN_ACT_NONE: return x;
  case NB_NN_ACT_RELU: return nb_relu(g, x);
  case NB_NN_ACT_LEAKY_RELU: return nb_leaky_relu(g, x, slope);
  case NB_NN_ACT_GELU: return nb_gelu(g, x, 0);
  case NB_NN_ACT_GELU_TANH: return nb_gelu(g, x, 1);
  case NB_NN_ACT_TANH: return nb_tanh(g, x);
  case NB_NN_ACT_SIGMOID: return nb_sigmoid(g, x);
  case NB_NN_ACT_SILU: return nb_silu(g, x);
  case NB_NN_ACT_COUNT: break;
  }
  nb_graph_set_error(g, NB_ERR_INVALID_ARG, "activation: unknown kind %d", (int)act);
  return NULL;
}
