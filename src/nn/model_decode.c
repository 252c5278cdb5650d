/* A model file's decode graph: its layers built with the KV-cache layers of
 * nn.h (nb_nn_transformer_block_decode, nb_nn_positional_at) for `len` new
 * tokens at a run-time position. The parameter names are those of
 * nb_model_build, so weights trained from the file (or loaded for it) bind
 * as they are. Only the layers a decoder-only language model uses have a
 * decode form; any other layer is an error naming it. */
#include <stdio.h>

#include "model_internal.h"

int64_t nb_model_context(const nb_model *m) {
  if (!nb_model_is_text(m)) return 0;
  int64_t t = m->in_shape[0];
  /* a positional table can hold fewer positions than the input */
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].kind == NB_LAYER_POSITIONAL && m->layers[i].context < t)
      t = m->layers[i].context;
  return t;
}

static nb_tensor *decode_layer(const nb_model *m, const nb_nn *nn, const nb_model_layer *l,
                               nb_tensor *h, nb_tensor *pos, int64_t capacity) {
  nb_graph *g = nn->g;
  switch (l->kind) {
  case NB_LAYER_EMBEDDING: return nb_nn_embedding(nn, l->name, h, l->vocab, l->dim);
  case NB_LAYER_POSITIONAL: return nb_nn_positional_at(nn, l->name, h, pos, l->context);
  case NB_LAYER_TRANSFORMER: {
    if (!l->causal) {
      nb_graph_set_error(g, NB_ERR_UNSUPPORTED,
                         "decoding token by token needs causal attention (causal = 1)");
      return NULL;
    }
    char name[NB_MODEL_NAME_MAX + 16];
    for (int i = 0; i < l->repeat && h; i++) {
      snprintf(name, sizeof name, "%s.%d", l->name, i);
      /* nb_model_gpt_block's dropout is the identity outside training */
      h = nb_nn_transformer_block_decode(nn, name, h, l->heads, l->mlp, pos, capacity);
    }
    return h;
  }
  case NB_LAYER_LAYERNORM: return nb_nn_layer_norm(nn, l->name, h, l->eps);
  case NB_LAYER_LINEAR:
    h = l->tie_layer >= 0 ? nb_model_gpt_tied_head(nn, m, l, h)
                          : nb_nn_linear(nn, l->name, h, l->out, l->bias);
    return h ? nb_nn_activation(nn, h, l->act, l->slope) : NULL;
  case NB_LAYER_ACTIVATION: return nb_nn_activation(nn, h, l->act, l->slope);
  case NB_LAYER_DROPOUT: return h;
  default: break;
  }
  nb_graph_set_error(g, NB_ERR_UNSUPPORTED,
                     "a %s layer has no decode form (a decoder-only language model has "
                     "embedding, positional, transformer, layernorm, linear, activation and "
                     "dropout layers)",
                     nb_layer_kind_name(l->kind));
  return NULL;
}

nb_status nb_model_build_decode(const nb_model *m, const nb_nn *nn, nb_tensor *ids, nb_tensor *pos,
                                int64_t capacity, nb_tensor **logits) {
  if (logits) *logits = NULL;
  if (!m || !nn || !nn->g || !ids || !pos || !logits)
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_build_decode: model, nn (with a graph), ids, "
                                        "pos and logits are required");
  int64_t ctx = nb_model_context(m);
  if (!ctx)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: only token-sequence models ([net] input = T, input_dtype = i32) decode",
                    m->source);
  if (capacity < 1 || capacity > ctx)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: a KV cache of %lld positions does not fit the model's context of %lld",
                    m->source, (long long)capacity, (long long)ctx);
  /* the same settings as nb_model_build, so the same parameters appear */
  nb_nn local = *nn;
  local.training = 0;
  if (m->init_set) local.init = m->init;
  if (!local.lora && m->has_lora) local.lora = &m->lora;
  nn = &local;
  nb_graph *g = nn->g;
  nb_status st = nb_graph_status(g);
  if (st)
    return nb_error(st, "nb_model_build_decode: the graph already failed: %s", nb_graph_error(g));
  nb_tensor *h = ids;
  for (int i = 0; i < m->n_layers; i++) {
    const nb_model_layer *l = &m->layers[i];
    h = decode_layer(m, nn, l, h, pos, capacity);
    st = nb_graph_status(g);
    if (st || !h)
      return nb_error(st ? st : NB_ERR_INTERNAL, "%s:%d: [%s %s] (decode): %s", m->source, l->line,
                      nb_layer_kind_name(l->kind), l->name,
                      st ? nb_graph_error(g) : nb_last_error());
  }
  *logits = h;
  return NB_OK;
}
