/* Transformer layers built from graph ops: multi-head self-attention on the
 * fused attention op, and GPT-2's pre-norm block. Parameter names follow
 * the layer names given (NAME.qkv, NAME.proj, NAME.ln1, ...), so a state
 * saved from one graph binds in another. */
#include <stdio.h>

#include "nn_internal.h"

static int check_x(const nb_nn *nn, const char *name, nb_tensor *x, int heads, const char *layer) {
  if (!nn || !nn->g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: nn context or graph is NULL", layer);
    return 0;
  }
  if (!name || !*name) {
    nb_graph_set_error(nn->g, NB_ERR_INVALID_ARG, "%s: a layer needs a name", layer);
    return 0;
  }
  if (!x) return 0; /* an earlier error is already in the graph */
  char s[128];
  int nd = nb_tensor_ndim(x);
  const int64_t *shape = nb_tensor_shape(x);
  if (nd != 3 || heads <= 0 || shape[2] % heads != 0) {
    nb_graph_set_error(nn->g, NB_ERR_SHAPE,
                       "%s: %s needs x [B, T, C] with C divisible by heads, got %s and %d heads",
                       name, layer, nb_shape_str(nd, shape, s, sizeof s), heads);
    return 0;
  }
  return 1;
}

/* The permuted slice is copied once here; nb_attention then finds it
 * contiguous. */
nb_tensor *nb_nn_head_split(nb_graph *g, nb_tensor *qkv, int which, const int64_t *bhtd) {
  static const int perm[5] = {2, 0, 3, 1, 4};
  nb_tensor *t = nb_slice(g, qkv, 2, which, which + 1, 1);
  t = nb_contiguous(g, nb_permute(g, t, perm));
  return nb_reshape(g, t, 4, bhtd);
}

nb_tensor *nb_nn_multihead_attention(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                     int causal) {
  if (!check_x(nn, name, x, heads, "multihead_attention")) return NULL;
  nb_graph *g = nn->g;
  const int64_t *xs = nb_tensor_shape(x);
  int64_t b = xs[0], t = xs[1], c = xs[2], dh = c / heads;
  char sub[256];
  snprintf(sub, sizeof sub, "%s.qkv", name);
  nb_tensor *qkv = nb_nn_linear(nn, sub, x, 3 * c, 1);
  int64_t split[5] = {b, t, 3, heads, dh};
  qkv = nb_reshape(g, qkv, 5, split);
  int64_t bhtd[4] = {b, heads, t, dh};
  nb_tensor *q = nb_nn_head_split(g, qkv, 0, bhtd);
  nb_tensor *k = nb_nn_head_split(g, qkv, 1, bhtd);
  nb_tensor *v = nb_nn_head_split(g, qkv, 2, bhtd);
  nb_tensor *y = nb_attention(g, q, k, v, causal, 0.0f);
  /* [B, H, T, Dh] -> [B, T, H, Dh] -> [B, T, C]: heads side by side, as the
   * qkv split took them */
  static const int merge[4] = {0, 2, 1, 3};
  int64_t btc[3] = {b, t, c};
  y = nb_reshape(g, nb_permute(g, y, merge), 3, btc);
  snprintf(sub, sizeof sub, "%s.proj", name);
  return nb_nn_linear(nn, sub, y, c, 1);
}

nb_tensor *nb_nn_pre_norm_block(const nb_nn *nn, const char *name, nb_tensor *x, int mlp_ratio,
                                float p, nb_nn_attention_fn attn, void *ctx) {
  nb_graph *g = nn->g;
  int64_t c = nb_tensor_shape(x)[2];
  if (mlp_ratio <= 0) mlp_ratio = 4;
  if (c > INT64_MAX / mlp_ratio) { /* a model file may ask for any mlp */
    nb_graph_set_error(g, NB_ERR_SHAPE, "%s: MLP width %d x %lld overflows int64", name, mlp_ratio,
                       (long long)c);
    return NULL;
  }
  char sub[512];
  /* one statement per layer: the creation order is the parameter order */
  snprintf(sub, sizeof sub, "%s.ln1", name);
  nb_tensor *h = nb_nn_layer_norm(nn, sub, x, 1e-5f);
  snprintf(sub, sizeof sub, "%s.attn", name);
  h = attn(nn, sub, h, ctx);
  if (p > 0.0f) {
    snprintf(sub, sizeof sub, "%s.attn.dropout", name);
    h = nb_nn_dropout(nn, sub, h, p); /* nanoGPT's resid_dropout */
  }
  x = nb_add(g, x, h);
  snprintf(sub, sizeof sub, "%s.ln2", name);
  h = nb_nn_layer_norm(nn, sub, x, 1e-5f);
  snprintf(sub, sizeof sub, "%s.mlp.fc", name);
  h = nb_nn_linear(nn, sub, h, (int64_t)mlp_ratio * c, 1);
  h = nb_gelu(g, h, 1);
  snprintf(sub, sizeof sub, "%s.mlp.proj", name);
  h = nb_nn_linear(nn, sub, h, c, 1);
  if (p > 0.0f) {
    snprintf(sub, sizeof sub, "%s.mlp.dropout", name);
    h = nb_nn_dropout(nn, sub, h, p);
  }
  return nb_add(g, x, h);
}

typedef struct {
  int heads, causal;
} self_attention;

static nb_tensor *block_attention(const nb_nn *nn, const char *name, nb_tensor *h, void *ctx) {
  const self_attention *a = ctx;
  return nb_nn_multihead_attention(nn, name, h, a->heads, a->causal);
}

nb_tensor *nb_nn_transformer_block_p(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                     int causal, int mlp_ratio, float p) {
  if (!check_x(nn, name, x, heads, "transformer_block")) return NULL;
  self_attention a = {heads, causal};
  return nb_nn_pre_norm_block(nn, name, x, mlp_ratio, p, block_attention, &a);
}

nb_tensor *nb_nn_transformer_block(const nb_nn *nn, const char *name, nb_tensor *x, int heads,
                                   int causal, int mlp_ratio) {
  return nb_nn_transformer_block_p(nn, name, x, heads, causal, mlp_ratio, 0.0f);
}
