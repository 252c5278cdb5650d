/* Transformer layers: parameter names and shapes of a block, output shapes,
 * and one block's output and input gradient against the same block written
 * out from basic ops (layer_norm, matmul, softmax attention with a where
 * mask, gelu) on the very same parameters; bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { B = 2, T = 5, C = 12, H = 3 };

static nb_tensor *param(nb_graph *g, const char *name) {
  nb_tensor *t = nb_graph_find(g, name);
  if (!t) fail_msg("no parameter %s", name);
  return t;
}

static nb_tensor *linear(nb_graph *g, nb_tensor *x, const char *name) {
  char w[128], b[128];
  snprintf(w, sizeof w, "%s.weight", name);
  snprintf(b, sizeof b, "%s.bias", name);
  return nb_add(g, nb_matmul(g, x, nb_transpose(g, param(g, w), 0, 1)), param(g, b));
}

static nb_tensor *lnorm(nb_graph *g, nb_tensor *x, const char *name) {
  char w[128], b[128];
  snprintf(w, sizeof w, "%s.weight", name);
  snprintf(b, sizeof b, "%s.bias", name);
  return nb_layer_norm(g, x, 1, param(g, w), param(g, b), 1e-5f);
}

/* q, k or v of qkv [B, T, 3C] as [B, H, T, C/H]. */
static nb_tensor *heads_of(nb_graph *g, nb_tensor *qkv, int which) {
  int64_t s[4] = {B, T, H, C / H};
  static const int perm[4] = {0, 2, 1, 3};
  nb_tensor *t = nb_slice(g, qkv, 2, which * C, (which + 1) * C, 1);
  return nb_permute(g, nb_reshape(g, nb_contiguous(g, t), 4, s), perm);
}

static nb_tensor *composed_block(nb_graph *g, nb_tensor *x, int causal) {
  nb_tensor *h = lnorm(g, x, "blk.ln1");
  nb_tensor *qkv = linear(g, h, "blk.attn.qkv");
  nb_tensor *q = heads_of(g, qkv, 0), *k = heads_of(g, qkv, 1), *v = heads_of(g, qkv, 2);
  nb_tensor *s = nb_mul(g, nb_matmul(g, q, nb_transpose(g, k, 2, 3)),
                        nb_scalar(g, 1.0f / sqrtf((float)(C / H))));
  if (causal) {
    float m[T * T];
    for (int i = 0; i < T; i++)
      for (int j = 0; j < T; j++) m[i * T + j] = j <= i;
    int64_t ms[2] = {T, T};
    s = nb_where(g, nb_constant(g, NB_F32, 2, ms, m), s, nb_scalar(g, -INFINITY));
  }
  nb_tensor *a = nb_matmul(g, nb_softmax(g, s, -1), v);
  static const int merge[4] = {0, 2, 1, 3};
  int64_t btc[3] = {B, T, C};
  a = nb_reshape(g, nb_contiguous(g, nb_permute(g, a, merge)), 3, btc);
  x = nb_add(g, x, linear(g, a, "blk.attn.proj"));
  h = nb_gelu(g, linear(g, lnorm(g, x, "blk.ln2"), "blk.mlp.fc"), 1);
  return nb_add(g, x, linear(g, h, "blk.mlp.proj"));
}

static void test_block_params(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 3};
  int64_t xs[3] = {B, T, C};
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, xs);
  nb_tensor *y = nb_nn_transformer_block(&nn, "blk", x, H, 1, 4);
  TU_OK(nb_graph_status(g));
  assert_int_equal(nb_tensor_ndim(y), 3);
  assert_memory_equal(nb_tensor_shape(y), xs, sizeof xs);
  static const struct {
    const char *name;
    int ndim;
    int64_t shape[2];
  } want[] = {
      {"blk.ln1.weight", 1, {C}},
      {"blk.ln1.bias", 1, {C}},
      {"blk.attn.qkv.weight", 2, {3 * C, C}},
      {"blk.attn.qkv.bias", 1, {3 * C}},
      {"blk.attn.proj.weight", 2, {C, C}},
      {"blk.attn.proj.bias", 1, {C}},
      {"blk.ln2.weight", 1, {C}},
      {"blk.ln2.bias", 1, {C}},
      {"blk.mlp.fc.weight", 2, {4 * C, C}},
      {"blk.mlp.fc.bias", 1, {4 * C}},
      {"blk.mlp.proj.weight", 2, {C, 4 * C}},
      {"blk.mlp.proj.bias", 1, {C}},
  };
  int k = 0;
  for (int i = 0; i < nb_graph_node_count(g); i++) {
    nb_tensor *t = nb_graph_node(g, i);
    if (strcmp(nb_tensor_op_name(t), "variable")) continue;
    assert_true(k < (int)(sizeof want / sizeof want[0]));
    assert_string_equal(nb_tensor_name(t), want[k].name); /* creation order too */
    assert_int_equal(nb_tensor_ndim(t), want[k].ndim);
    assert_memory_equal(nb_tensor_shape(t), want[k].shape, (size_t)want[k].ndim * sizeof(int64_t));
    assert_true(nb_tensor_requires_grad(t));
    k++;
  }
  assert_int_equal(k, (int)(sizeof want / sizeof want[0]));
  /* the attention layer alone: [B, T, C] in and out, its own two linears */
  nb_tensor *a = nb_nn_multihead_attention(&nn, "mha", x, 4, 0);
  TU_OK(nb_graph_status(g));
  assert_memory_equal(nb_tensor_shape(a), xs, sizeof xs);
  assert_non_null(nb_graph_find(g, "mha.qkv.weight"));
  assert_non_null(nb_graph_find(g, "mha.proj.bias"));
  nb_graph_free(g);
}

static void check_block(int causal) {
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 11, .init = NB_NN_INIT_TORCH};
  int64_t xs[3] = {B, T, C};
  nb_tensor *x1 = nb_input(g, "x1", NB_F32, 3, xs), *x2 = nb_input(g, "x2", NB_F32, 3, xs);
  nb_tensor_set_requires_grad(x1, 1);
  nb_tensor_set_requires_grad(x2, 1);
  nb_tensor *y1 = nb_nn_transformer_block(&nn, "blk", x1, H, causal, 4);
  nb_tensor *y2 = composed_block(g, x2, causal);
  float *r = tu_rand(B * T * C, -1.0f, 1.0f, 5);
  nb_tensor *rt = nb_constant(g, NB_F32, 3, xs, r);
  nb_tensor *loss =
      nb_add(g, nb_sum(g, nb_mul(g, y1, rt), 0, NULL, 0), nb_sum(g, nb_mul(g, y2, rt), 0, NULL, 0));
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *d1 = nb_graph_grad(g, x1), *d2 = nb_graph_grad(g, x2);
  TU_OK(nb_graph_status(g));
  nb_tensor *outs[4] = {y1, y2, d1, d2};
  for (int i = 0; i < 4; i++) nb_tensor_set_output(outs[i]);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  float *x = tu_rand(B * T * C, -2.0f, 2.0f, 6);
  TU_OK(nb_plan_set_input(plan, x1, x, sizeof(float) * B * T * C));
  TU_OK(nb_plan_set_input(plan, x2, x, sizeof(float) * B * T * C));
  TU_OK(nb_plan_run(plan));
  float got[4][B * T * C];
  for (int i = 0; i < 4; i++) TU_OK(nb_plan_get(plan, outs[i], got[i], sizeof got[i]));
  tu_assert_close(causal ? "causal block y" : "block y", got[0], got[1], B * T * C, 1e-5, 1e-4);
  tu_assert_close(causal ? "causal block dx" : "block dx", got[2], got[3], B * T * C, 1e-5, 1e-4);
  /* the block is not the identity: attention and mlp both contribute */
  double diff = 0;
  for (int i = 0; i < B * T * C; i++) diff += fabs(got[0][i] - x[i]);
  assert_true(diff > 1e-2);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  free(x);
  free(r);
}

static void test_block_forward(void **state) {
  (void)state;
  check_block(1);
  check_block(0);
}

static void test_errors(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g};
  int64_t xs[3] = {B, T, C}, x2s[2] = {B, C};
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, xs);
  assert_null(nb_nn_multihead_attention(&nn, "a", x, 5, 1));
  assert_int_equal(nb_graph_status(g), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_graph_error(g), "[2, 5, 12] and 5 heads"));
  nb_graph_free(g);
  g = nb_graph_new();
  nn.g = g;
  x = nb_input(g, "x", NB_F32, 2, x2s);
  assert_null(nb_nn_transformer_block(&nn, "b", x, 2, 1, 4));
  assert_int_equal(nb_graph_status(g), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_graph_error(g), "transformer_block"));
  nb_graph_free(g);
  assert_null(nb_nn_transformer_block(NULL, "b", NULL, 2, 1, 4));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_block_params),
      cmocka_unit_test(test_block_forward),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
