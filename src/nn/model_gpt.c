/* GPT layers of model files ([positional], [transformer], [linear] tie =)
 * and the vocabulary of token-sequence models. The blocks reproduce
 * examples/gpt_char.c's graph (nb_nn_transformer_block's layout and
 * parameter names), so a model file and that example exchange checkpoints. */
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "nn_internal.h"

/* ---- vocabulary ----------------------------------------------------------------- */

int nb_model_is_text(const nb_model *m) {
  return m && m->in_ndim == 1 && (m->in_dtype == NB_I32 || m->in_dtype == NB_I64);
}

int nb_model_takes_vocab(const nb_model *m) { return m && m->vocab > 0; }

int64_t nb_model_vocab(const nb_model *m) { return m ? m->vocab : 0; }

int nb_model_tokenizer_bpe(const nb_model *m) { return m && m->tokenizer; }

int64_t nb_model_tokenizer_vocab(const nb_model *m) { return m ? m->tokenizer_vocab : 0; }

const char *nb_model_tokenizer_file(const nb_model *m) {
  return m && m->tokenizer_file[0] ? m->tokenizer_file : NULL;
}

nb_status nb_model_set_tokenizer_vocab(nb_model *m, int64_t n) {
  if (!m) return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_tokenizer_vocab: model is NULL");
  if (!m->tokenizer)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: --tokenizer-vocab needs a text model with [net] tokenizer = bpe (%s)",
                    m->source,
                    nb_model_is_text(m) ? "this one reads characters" : "this is not a text model");
  if (n < 256)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: a BPE vocabulary holds the 256 bytes and more: --tokenizer-vocab %lld is "
                    "too small",
                    m->source, (long long)n);
  m->tokenizer_vocab = n;
  m->tokenizer_file[0] = '\0'; /* learned, not read */
  return NB_OK;
}

nb_status nb_model_set_vocab(nb_model *m, int64_t vocab) {
  if (!m || vocab < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_model_set_vocab: a model and vocab >= 1 are needed");
  if (!m->vocab)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: no key says 'vocab' ([net] classes = vocab, [embedding] vocab = vocab), "
                    "so the vocabulary is fixed by the file",
                    m->source);
  m->vocab = vocab;
  if (m->classes_vocab) m->classes = vocab;
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].vocab_from_data) m->layers[i].vocab = vocab;
  return NB_OK;
}

/* ---- layers ----------------------------------------------------------------------- */

/* h must be [B, T, C]; names the layer otherwise. */
static int check_btc(const nb_nn *nn, const nb_model_layer *l, nb_tensor *h, const char *what) {
  if (!h) return 0;
  if (nb_tensor_ndim(h) == 3) return 1;
  char s[128];
  nb_shape_str(nb_tensor_ndim(h), nb_tensor_shape(h), s, sizeof s);
  nb_graph_set_error(nn->g, NB_ERR_SHAPE,
                     "%s needs [batch, T, width] input (after an [embedding]), found %s", what, s);
  (void)l;
  return 0;
}

nb_tensor *nb_model_gpt_positional(const nb_nn *nn, const nb_model_layer *l, nb_tensor *h) {
  if (!check_btc(nn, l, h, "positional")) return NULL;
  nb_graph *g = nn->g;
  const int64_t *s = nb_tensor_shape(h);
  if (s[1] > l->context) {
    nb_graph_set_error(g, NB_ERR_SHAPE, "expected at most context = %lld positions, found %lld",
                       (long long)l->context, (long long)s[1]);
    return NULL;
  }
  char name[NB_MODEL_NAME_MAX + 16];
  snprintf(name, sizeof name, "%s.weight", l->name);
  int64_t ts[2] = {l->context, s[2]};
  /* N(0, 0.02) (GPT-2) or torch.nn.Embedding's N(0, 1), drawn from the seed
   * that examples/gpt_char.c uses, so both start from the same table */
  nb_init init = {NB_INIT_NORMAL, 0.0f, nn->init == NB_NN_INIT_NORMAL_002 ? 0.02f : 1.0f,
                  nn->seed ^ 0x9e3779b97f4a7c15ull};
  nb_tensor *table = nb_param(g, name, 2, ts, init);
  /* positions are 0..T-1: the first T rows, broadcast over the batch */
  if (s[1] < l->context) table = nb_slice(g, table, 0, 0, s[1], 1);
  return nb_add(g, h, table);
}

nb_tensor *nb_model_gpt_block(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                              int causal, int mlp_ratio, float p) {
  nb_graph *g = nn->g;
  int64_t c = nb_tensor_shape(x)[2];
  if (heads < 1 || c % heads) {
    nb_graph_set_error(g, NB_ERR_SHAPE, "expected heads (%d) to divide the width (%lld)", heads,
                       (long long)c);
    return NULL;
  }
  /* nanoGPT's resid_dropout p on both residual branches */
  return nb_nn_transformer_block_p(nn, name, x, heads, causal, mlp_ratio, p);
}

nb_tensor *nb_model_gpt_transformer(const nb_nn *nn, const nb_model_layer *l, nb_tensor *h) {
  if (!check_btc(nn, l, h, "transformer")) return NULL;
  char name[NB_MODEL_NAME_MAX + 16];
  nb_graph *g = nn->g;
  for (int i = 0; i < l->repeat && h; i++) {
    snprintf(name, sizeof name, "%s.%d", l->name, i);
    /* recomputation: a block's inner activations (the biggest part of a
     * GPT's memory) are rebuilt in the backward pass, its output kept */
    int segment = nn->recompute && !nb_graph_recompute_open(g) && !nb_graph_recompute_begin(g);
    h = nb_model_gpt_block(nn, name, h, l->heads, l->causal, l->mlp, l->p);
    if (segment) nb_graph_recompute_end(g);
  }
  return h;
}

nb_tensor *nb_model_gpt_tied_head(const nb_nn *nn, const nb_model *m, const nb_model_layer *l,
                                  nb_tensor *h) {
  nb_graph *g = nn->g;
  const nb_model_layer *e = &m->layers[l->tie_layer];
  char name[NB_MODEL_NAME_MAX + 16];
  snprintf(name, sizeof name, "%s.weight", e->name);
  nb_tensor *w = nb_graph_find(g, name);
  if (!w) {
    nb_graph_set_error(g, NB_ERR_INVALID_ARG,
                       "tie = %s: '%s' is not in the graph (its [embedding] at line %d must be "
                       "built first)",
                       l->tie, name, e->line);
    return NULL;
  }
  int nd = nb_tensor_ndim(h);
  const int64_t *s = nb_tensor_shape(h);
  int64_t c = nd ? s[nd - 1] : 0, vocab = nb_tensor_shape(w)[0];
  if (nd < 2 || c != nb_tensor_shape(w)[1]) {
    char hs[128];
    nb_shape_str(nd, s, hs, sizeof hs);
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "tie = %s: expected input [..., %lld] (the embedding's width), found %s",
                       l->tie, (long long)nb_tensor_shape(w)[1], hs);
    return NULL;
  }
  /* [N, C] x [C, V] as one matrix product, as examples/gpt_char.c does, then
   * back to the input's leading axes */
  int64_t flat[2] = {nb_tensor_numel(h) / c, c}, out[NB_MAX_DIMS];
  memcpy(out, s, (size_t)nd * sizeof *out);
  out[nd - 1] = vocab;
  nb_tensor *y = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, w, 0, 1));
  return nb_reshape(g, y, nd, out);
}
