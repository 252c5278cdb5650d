/* Decode-mode transformer layers: the same parameters as transformer.c
 * (NAME.qkv, NAME.proj, NAME.ln1, ...), so a decode graph binds the weights
 * a training graph created in the same nb_state, plus a KV cache per
 * attention layer. A decode graph takes `len` new tokens at a run-time
 * position pos: their keys and values are written into the caches at
 * pos (nb_write_at) and their queries attend over cache rows 0..pos + i
 * (nb_attention_cached). The caches have a fixed capacity, so the graph,
 * and the plan compiled from it, serve every position. */
#include <stdio.h>
#include <string.h>

#include "nn_internal.h"

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

int nb_nn_is_kv_cache(const char *name) {
  return name && (ends_with(name, ".k_cache") || ends_with(name, ".v_cache"));
}

static int check_decode(const nb_nn *nn, const char *name, nb_tensor *x, int heads, nb_tensor *pos,
                        int64_t capacity, const char *layer) {
  if (!nn || !nn->g) {
    nb_error(NB_ERR_INVALID_ARG, "%s: nn context or graph is NULL", layer);
    return 0;
  }
  if (!name || !*name) {
    nb_graph_set_error(nn->g, NB_ERR_INVALID_ARG, "%s: a layer needs a name", layer);
    return 0;
  }
  if (!x || !pos) return 0; /* an earlier error is already in the graph */
  char s[128];
  int nd = nb_tensor_ndim(x);
  const int64_t *shape = nb_tensor_shape(x);
  if (nd != 3 || heads <= 0 || shape[2] % heads != 0 || capacity < 1 || shape[1] > capacity) {
    nb_graph_set_error(nn->g, NB_ERR_SHAPE,
                       "%s: %s needs x [B, T, C] with C divisible by heads and 1 <= T <= "
                       "capacity, got %s, %d heads, capacity %lld",
                       name, layer, nb_shape_str(nd, shape, s, sizeof s), heads,
                       (long long)capacity);
    return 0;
  }
  return 1;
}

/* NAME.k_cache or NAME.v_cache [B, H, capacity, Dh], zeros: scratch that
 * the decode plans share through the state. */
static nb_tensor *cache(nb_graph *g, const char *name, const char *which, int64_t b, int heads,
                        int64_t capacity, int64_t dh) {
  char vn[256];
  snprintf(vn, sizeof vn, "%s.%s", name, which);
  int64_t shape[4] = {b, heads, capacity, dh};
  nb_init zeros = {NB_INIT_ZEROS, 0.0f, 0.0f, 0};
  return nb_variable(g, vn, NB_F32, 4, shape, zeros);
}

nb_tensor *nb_nn_multihead_attention_decode(const nb_nn *nn, const char *name, nb_tensor *x,
                                            int heads, nb_tensor *pos, int64_t capacity) {
  if (!check_decode(nn, name, x, heads, pos, capacity, "multihead_attention_decode")) return NULL;
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
  nb_tensor *kc = nb_write_at(g, cache(g, name, "k_cache", b, heads, capacity, dh), k, 2, pos);
  nb_tensor *vc = nb_write_at(g, cache(g, name, "v_cache", b, heads, capacity, dh), v, 2, pos);
  nb_tensor *y = nb_attention_cached(g, q, kc, vc, pos, 0.0f);
  static const int merge[4] = {0, 2, 1, 3};
  int64_t btc[3] = {b, t, c};
  y = nb_reshape(g, nb_permute(g, y, merge), 3, btc);
  snprintf(sub, sizeof sub, "%s.proj", name);
  return nb_nn_linear(nn, sub, y, c, 1);
}

typedef struct {
  int heads;
  nb_tensor *pos;
  int64_t capacity;
} cached_attention;

static nb_tensor *block_attention(const nb_nn *nn, const char *name, nb_tensor *h, void *ctx) {
  const cached_attention *a = ctx;
  return nb_nn_multihead_attention_decode(nn, name, h, a->heads, a->pos, a->capacity);
}

/* nb_nn_transformer_block's layout (nb_nn_pre_norm_block) with the cached
 * attention: tests/test_kv_cache.c checks that their logits agree. */
nb_tensor *nb_nn_transformer_block_decode(const nb_nn *nn, const char *name, nb_tensor *x,
                                          int heads, int mlp_ratio, nb_tensor *pos,
                                          int64_t capacity) {
  if (!check_decode(nn, name, x, heads, pos, capacity, "transformer_block_decode")) return NULL;
  cached_attention a = {heads, pos, capacity};
  return nb_nn_pre_norm_block(nn, name, x, mlp_ratio, 0.0f, block_attention, &a);
}

nb_tensor *nb_nn_positional_at(const nb_nn *nn, const char *name, nb_tensor *x, nb_tensor *pos,
                               int64_t context) {
  if (!nn || !nn->g) {
    nb_error(NB_ERR_INVALID_ARG, "positional_at: nn context or graph is NULL");
    return NULL;
  }
  nb_graph *g = nn->g;
  if (!name || !*name) {
    nb_graph_set_error(g, NB_ERR_INVALID_ARG, "positional_at: a layer needs a name");
    return NULL;
  }
  if (!x || !pos) return NULL;
  int nd = nb_tensor_ndim(x);
  const int64_t *s = nb_tensor_shape(x);
  if (nd != 3 || context < 1 || s[1] > context) {
    char b[128];
    nb_graph_set_error(g, NB_ERR_SHAPE,
                       "%s: positional_at needs x [B, T, C] with T <= context (%lld), got %s", name,
                       (long long)context, nb_shape_str(nd, s, b, sizeof b));
    return NULL;
  }
  char wn[256];
  snprintf(wn, sizeof wn, "%s.weight", name);
  int64_t ts[2] = {context, s[2]};
  /* the initialiser of examples/gpt_char.c's and the model files' table, so a
   * decode graph compiled first still starts from the same values */
  nb_init init = {NB_INIT_NORMAL, 0.0f, nn->init == NB_NN_INIT_NORMAL_002 ? 0.02f : 1.0f,
                  nn->seed ^ 0x9e3779b97f4a7c15ull};
  nb_tensor *table = nb_param(g, wn, 2, ts, init);
  return nb_add(g, x, nb_slice_at(g, table, 0, pos, s[1]));
}
