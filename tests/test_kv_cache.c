/* Generation with a KV cache: the run-time position ops (write_at,
 * slice_at, attention_cached) against naive loops; a small random GPT
 * (2 layers, width 32, context 32) whose decode logits, prefill and
 * step by step, equal the full forward's logits at every position, and
 * whose greedy generation equals full recomputation the way
 * examples/gpt_char.c sampled before the cache; positions past the
 * capacity; sliding; and the sampler's greedy, top-k, temperature and seed
 * behaviour against exact and statistical expectations. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct {
  nb_backend *be;
  nb_state *st;
} env;

static void env_open(env *e) {
  TU_OK(nb_backend_new("cpu", &e->be));
  TU_OK(nb_state_new(e->be, &e->st));
}

static void env_close(env *e) {
  nb_state_free(e->st);
  nb_backend_free(e->be);
}

static nb_plan *compile(nb_graph *g, env *e) {
  if (nb_graph_status(g)) fail_msg("graph: %s", nb_graph_error(g));
  nb_plan *p;
  TU_OK(nb_compile(g, e->be, e->st, NULL, &p));
  return p;
}

static void set_pos(nb_plan *p, nb_tensor *pos, int32_t v) {
  TU_OK(nb_plan_set_input(p, pos, &v, sizeof v));
}

/* ---- write_at and slice_at ------------------------------------------------------------ */

/* var [2, 3, 5, 4] written on axis 2 with value [2, 3, 2, 4] at pos = 1,
 * then at 3, by one plan: each run changes exactly its window. */
static void test_write_at_values(void **state) {
  (void)state;
  env e;
  env_open(&e);
  nb_graph *g = nb_graph_new();
  int64_t vs[4] = {2, 3, 5, 4}, ws[4] = {2, 3, 2, 4}, one = 1;
  nb_tensor *var = nb_variable(g, "cache", NB_F32, 4, vs, (nb_init){NB_INIT_ZEROS, 0, 0, 0});
  nb_tensor *val = nb_input(g, "value", NB_F32, 4, ws);
  nb_tensor *pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *out = nb_write_at(g, var, val, 2, pos);
  /* the result, read through a view, is the variable after the write */
  nb_tensor *sum = nb_sum(g, nb_reshape(g, out, 1, (int64_t[]){120}), 0, NULL, 0);
  nb_tensor_set_output(out);
  nb_tensor_set_output(sum);
  nb_plan *p = compile(g, &e);
  float want[120] = {0}, got[120];
  for (int run = 0; run < 2; run++) {
    int32_t at = run ? 3 : 1;
    float *v = tu_rand(48, -1, 1, 10 + (uint64_t)run);
    TU_OK(nb_plan_set_input(p, val, v, 48 * sizeof *v));
    set_pos(p, pos, at);
    TU_OK(nb_plan_run(p));
    for (int b = 0; b < 2; b++)
      for (int h = 0; h < 3; h++)
        for (int t = 0; t < 2; t++)
          for (int d = 0; d < 4; d++)
            want[((b * 3 + h) * 5 + at + t) * 4 + d] = v[((b * 3 + h) * 2 + t) * 4 + d];
    TU_OK(nb_plan_get(p, out, got, sizeof got));
    tu_assert_close("write_at result", got, want, 120, 0, 0);
    TU_OK(nb_state_read(e.st, "cache", got, sizeof got));
    tu_assert_close("write_at variable", got, want, 120, 0, 0);
    float s, ws_ = 0;
    for (int i = 0; i < 120; i++) ws_ += want[i];
    TU_OK(nb_plan_get(p, sum, &s, sizeof s));
    assert_float_equal(s, ws_, 1e-5);
    free(v);
  }
  /* rows [4, 6) do not fit in 5: a run-time error naming the variable */
  set_pos(p, pos, 4);
  assert_int_equal(nb_plan_run(p), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "'cache'"));
  assert_non_null(strstr(nb_last_error(), "[4, 6)"));
  set_pos(p, pos, -1);
  assert_int_equal(nb_plan_run(p), NB_ERR_INVALID_ARG);
  TU_OK(nb_state_read(e.st, "cache", got, sizeof got));
  tu_assert_close("variable unchanged by failed writes", got, want, 120, 0, 0);
  nb_plan_free(p);
  nb_graph_free(g);
  env_close(&e);
}

/* The write is a side effect: kept even when nothing reads its result. */
static void test_write_at_unread(void **state) {
  (void)state;
  env e;
  env_open(&e);
  nb_graph *g = nb_graph_new();
  int64_t vs[2] = {4, 3}, ws[2] = {1, 3}, one = 1;
  nb_tensor *var = nb_variable(g, "buf", NB_F32, 2, vs, (nb_init){NB_INIT_CONSTANT, 7, 0, 0});
  nb_tensor *val = nb_input(g, "value", NB_F32, 2, ws);
  nb_tensor *pos = nb_input(g, "pos", NB_I64, 1, &one);
  assert_non_null(nb_write_at(g, var, val, 0, pos));
  nb_plan *p = compile(g, &e);
  float v[3] = {1, 2, 3}, got[12];
  int64_t at = 2;
  TU_OK(nb_plan_set_input(p, val, v, sizeof v));
  TU_OK(nb_plan_set_input(p, pos, &at, sizeof at));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_state_read(e.st, "buf", got, sizeof got));
  float want[12] = {7, 7, 7, 7, 7, 7, 1, 2, 3, 7, 7, 7};
  tu_assert_close("write_at i64 pos, axis 0", got, want, 12, 0, 0);
  nb_plan_free(p);
  nb_graph_free(g);
  env_close(&e);
}

static void test_slice_at_values(void **state) {
  (void)state;
  env e;
  env_open(&e);
  nb_graph *g = nb_graph_new();
  int64_t xs[3] = {3, 6, 2}, one = 1;
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, xs);
  nb_tensor *pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *y = nb_slice_at(g, x, 1, pos, 2);
  assert_int_equal(nb_tensor_shape(y)[1], 2);
  nb_tensor_set_output(y);
  nb_plan *p = compile(g, &e);
  float *xv = tu_rand(36, -1, 1, 3), got[12], want[12];
  TU_OK(nb_plan_set_input(p, x, xv, 36 * sizeof *xv));
  for (int32_t at = 0; at <= 4; at++) {
    set_pos(p, pos, at);
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, y, got, sizeof got));
    for (int a = 0; a < 3; a++)
      for (int r = 0; r < 2; r++)
        for (int c = 0; c < 2; c++) want[(a * 2 + r) * 2 + c] = xv[(a * 6 + at + r) * 2 + c];
    tu_assert_close("slice_at", got, want, 12, 0, 0);
  }
  set_pos(p, pos, 5);
  assert_int_equal(nb_plan_run(p), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "slice_at"));
  free(xv);
  nb_plan_free(p);
  nb_graph_free(g);
  env_close(&e);
}

static void test_build_errors(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  int64_t vs[2] = {4, 3}, bad[2] = {2, 4}, one = 1, two = 2;
  nb_tensor *var = nb_variable(g, "v", NB_F32, 2, vs, (nb_init){NB_INIT_ZEROS, 0, 0, 0});
  nb_tensor *pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *pos2 = nb_input(g, "pos2", NB_I32, 1, &two);
  nb_tensor *fpos = nb_input(g, "fpos", NB_F32, 1, &one);
  nb_tensor *val = nb_input(g, "bad", NB_F32, 2, bad);
  assert_null(nb_write_at(g, var, val, 0, pos));
  assert_non_null(strstr(nb_graph_error(g), "write_at"));
  nb_graph_free(g);
  g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, vs);
  pos2 = nb_input(g, "pos2", NB_I32, 1, &two);
  assert_null(nb_write_at(g, x, x, 0, pos2)); /* not a variable, and pos has 2 elements */
  assert_non_null(strstr(nb_graph_error(g), "write_at"));
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, vs);
  fpos = nb_input(g, "fpos", NB_F32, 1, &one);
  assert_null(nb_slice_at(g, x, 0, fpos, 1));
  assert_non_null(strstr(nb_graph_error(g), "pos must hold one i32 or i64"));
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 2, vs);
  pos = nb_input(g, "pos", NB_I32, 1, &one);
  assert_null(nb_slice_at(g, x, 0, pos, 5)); /* longer than the axis */
  nb_graph_free(g);
}

/* ---- attention_cached --------------------------------------------------------------- */

/* Queries at positions pos..pos + Tq - 1 over a cache of T rows, against a
 * double-precision loop, and against nb_attention's causal rows on the
 * first pos + Tq keys (the same row kernel, so the same bits). */
static void test_attention_cached_values(void **state) {
  (void)state;
  enum { B = 2, H = 2, TQ = 3, T = 9, D = 4, DV = 5 };
  env e;
  env_open(&e);
  nb_graph *g = nb_graph_new();
  int64_t qs[4] = {B, H, TQ, D}, ks[4] = {B, H, T, D}, vs[4] = {B, H, T, DV}, one = 1;
  nb_tensor *q = nb_input(g, "q", NB_F32, 4, qs);
  nb_tensor *k = nb_input(g, "k", NB_F32, 4, ks);
  nb_tensor *v = nb_input(g, "v", NB_F32, 4, vs);
  nb_tensor *pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *y = nb_attention_cached(g, q, k, v, pos, 0.0f);
  nb_tensor_set_output(y);
  nb_plan *p = compile(g, &e);
  float *qv = tu_rand(B * H * TQ * D, -2, 2, 1), *kv = tu_rand(B * H * T * D, -2, 2, 2);
  float *vv = tu_rand(B * H * T * DV, -2, 2, 3);
  TU_OK(nb_plan_set_input(p, q, qv, sizeof(float) * B * H * TQ * D));
  TU_OK(nb_plan_set_input(p, k, kv, sizeof(float) * B * H * T * D));
  TU_OK(nb_plan_set_input(p, v, vv, sizeof(float) * B * H * T * DV));
  float got[B * H * TQ * DV], want[B * H * TQ * DV];
  for (int32_t at = 0; at <= T - TQ; at += 3) {
    set_pos(p, pos, at);
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, y, got, sizeof got));
    for (int bh = 0; bh < B * H; bh++)
      for (int i = 0; i < TQ; i++) {
        const float *qi = qv + (bh * TQ + i) * D;
        double s[T], m = -INFINITY, l = 0;
        int n = at + i + 1;
        for (int j = 0; j < n; j++) {
          s[j] = 0;
          for (int c = 0; c < D; c++) s[j] += (double)qi[c] * kv[(bh * T + j) * D + c];
          s[j] /= sqrt((double)D);
          if (s[j] > m) m = s[j];
        }
        for (int j = 0; j < n; j++) l += exp(s[j] - m);
        for (int c = 0; c < DV; c++) {
          double acc = 0;
          for (int j = 0; j < n; j++) acc += exp(s[j] - m) / l * vv[(bh * T + j) * DV + c];
          want[(bh * TQ + i) * DV + c] = (float)acc;
        }
      }
    tu_assert_close("attention_cached vs loop", got, want, B * H * TQ * DV, 1e-5, 1e-5);
  }
  /* pos + Tq past the cache: run-time error naming the capacity */
  set_pos(p, pos, T - TQ + 1);
  assert_int_equal(nb_plan_run(p), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "cache of 9 positions"));
  nb_plan_free(p);
  nb_graph_free(g);

  /* against nb_attention (causal) on the keys 0..pos + Tq - 1: queries
   * padded in front so query row pos + i is row i of the cached op */
  const int32_t at = 4;
  g = nb_graph_new();
  int64_t q2s[4] = {B, H, at + TQ, D}, k2s[4] = {B, H, at + TQ, D}, v2s[4] = {B, H, at + TQ, DV};
  nb_tensor *q2 = nb_input(g, "q", NB_F32, 4, q2s);
  nb_tensor *k2 = nb_input(g, "k", NB_F32, 4, k2s);
  nb_tensor *v2 = nb_input(g, "v", NB_F32, 4, v2s);
  nb_tensor *y2 = nb_contiguous(g, nb_attention(g, q2, k2, v2, 1, 0.0f));
  nb_tensor_set_output(y2);
  p = compile(g, &e);
  float q2v[B * H * (at + TQ) * D], k2v[B * H * (at + TQ) * D], v2v[B * H * (at + TQ) * DV];
  float full[B * H * (at + TQ) * DV];
  for (int bh = 0; bh < B * H; bh++) {
    for (int t = 0; t < at + TQ; t++) {
      for (int c = 0; c < D; c++) {
        q2v[(bh * (at + TQ) + t) * D + c] = t < at ? 0.0f : qv[(bh * TQ + t - at) * D + c];
        k2v[(bh * (at + TQ) + t) * D + c] = kv[(bh * T + t) * D + c];
      }
      for (int c = 0; c < DV; c++) v2v[(bh * (at + TQ) + t) * DV + c] = vv[(bh * T + t) * DV + c];
    }
  }
  TU_OK(nb_plan_set_input(p, q2, q2v, sizeof q2v));
  TU_OK(nb_plan_set_input(p, k2, k2v, sizeof k2v));
  TU_OK(nb_plan_set_input(p, v2, v2v, sizeof v2v));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, y2, full, sizeof full));
  nb_plan_free(p);
  nb_graph_free(g);
  g = nb_graph_new();
  q = nb_input(g, "q", NB_F32, 4, qs);
  k = nb_input(g, "k", NB_F32, 4, ks);
  v = nb_input(g, "v", NB_F32, 4, vs);
  pos = nb_input(g, "pos", NB_I32, 1, &one);
  y = nb_attention_cached(g, q, k, v, pos, 0.0f);
  nb_tensor_set_output(y);
  p = compile(g, &e);
  TU_OK(nb_plan_set_input(p, q, qv, sizeof(float) * B * H * TQ * D));
  TU_OK(nb_plan_set_input(p, k, kv, sizeof(float) * B * H * T * D));
  TU_OK(nb_plan_set_input(p, v, vv, sizeof(float) * B * H * T * DV));
  set_pos(p, pos, at);
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, y, got, sizeof got));
  for (int bh = 0; bh < B * H; bh++)
    for (int i = 0; i < TQ; i++)
      for (int c = 0; c < DV; c++)
        want[(bh * TQ + i) * DV + c] = full[(bh * (at + TQ) + at + i) * DV + c];
  tu_assert_close("attention_cached vs attention", got, want, B * H * TQ * DV, 0, 0);
  nb_plan_free(p);
  nb_graph_free(g);
  free(qv);
  free(kv);
  free(vv);
  env_close(&e);
}

/* ---- a small random GPT --------------------------------------------------------------- */

enum { V = 11, C = 32, LAYERS = 2, HEADS = 4, CTX = 32 };

static nb_nn make_nn(nb_graph *g) {
  return (nb_nn){.g = g, .training = 0, .seed = 5, .init = NB_NN_INIT_NORMAL_002};
}

/* examples/gpt_char.c's model for a batch of 1 and T = CTX tokens:
 * positional table added whole, causal blocks, tied head -> [CTX, V]. */
static nb_tensor *build_full(nb_graph *g, nb_tensor **ids) {
  nb_nn nn = make_nn(g);
  int64_t bt[2] = {1, CTX};
  *ids = nb_input(g, "ids", NB_I32, 2, bt);
  nb_tensor *h = nb_nn_embedding(&nn, "wte", *ids, V, C);
  nb_tensor *wte = nb_graph_find(g, "wte.weight");
  int64_t ps[2] = {CTX, C};
  nb_init pinit = {NB_INIT_NORMAL, 0.0f, 0.02f, 5 ^ 0x9e3779b97f4a7c15ull};
  h = nb_add(g, h, nb_param(g, "wpe.weight", 2, ps, pinit));
  for (int l = 0; l < LAYERS; l++) {
    char name[16];
    snprintf(name, sizeof name, "h.%d", l);
    h = nb_nn_transformer_block(&nn, name, h, HEADS, 1, 4);
  }
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  int64_t flat[2] = {CTX, C};
  nb_tensor *logits = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, wte, 0, 1));
  nb_tensor_set_output(logits);
  return logits;
}

/* The same model as a decode graph (the nb_decode_build_fn). */
static nb_status build_decode(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                              nb_decode_graph *out) {
  (void)ctx;
  nb_nn nn = make_nn(g);
  int64_t bt[2] = {1, len}, one = 1;
  out->ids = nb_input(g, "ids", NB_I32, 2, bt);
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  nb_tensor *h = nb_nn_embedding(&nn, "wte", out->ids, V, C);
  nb_tensor *wte = nb_graph_find(g, "wte.weight");
  h = nb_nn_positional_at(&nn, "wpe", h, out->pos, CTX);
  for (int l = 0; l < LAYERS; l++) {
    char name[16];
    snprintf(name, sizeof name, "h.%d", l);
    h = nb_nn_transformer_block_decode(&nn, name, h, HEADS, 4, out->pos, capacity);
  }
  h = nb_nn_layer_norm(&nn, "ln_f", h, 1e-5f);
  int64_t flat[2] = {len, C};
  out->logits = nb_matmul(g, nb_reshape(g, h, 2, flat), nb_transpose(g, wte, 0, 1));
  return nb_graph_status(g);
}

typedef struct {
  env e;
  nb_graph *g;
  nb_plan *full;
  nb_tensor *ids, *logits;
  nb_decoder *dec;
} gpt;

/* Compiles the full model, then gives every weight U(-0.5, 0.5) values
 * (layer-norm gains 1 + U(-0.5, 0.5)), far from GPT-2's tiny init, so that
 * logits are well apart and greedy choices are not decided by rounding. */
static void gpt_open(gpt *m) {
  env_open(&m->e);
  m->g = nb_graph_new();
  m->logits = build_full(m->g, &m->ids);
  m->full = compile(m->g, &m->e);
  for (int i = 0; i < nb_state_count(m->e.st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(m->e.st, i, &name, NULL, &nd, &shape));
    int64_t n = nb_shape_numel(nd, shape);
    float *w = tu_rand((size_t)n, -0.5f, 0.5f, 100 + (uint64_t)i);
    size_t len = strlen(name);
    if (len > 7 && !strcmp(name + len - 7, ".weight") && strstr(name, "ln"))
      for (int64_t j = 0; j < n; j++) w[j] += 1.0f;
    TU_OK(nb_state_write(m->e.st, name, w, (size_t)n * sizeof *w));
    free(w);
  }
  TU_OK(nb_decoder_new(m->e.be, m->e.st, CTX, build_decode, NULL, &m->dec));
  assert_int_equal(nb_decoder_vocab(m->dec), V);
  assert_int_equal(nb_decoder_capacity(m->dec), CTX);
}

static void gpt_close(gpt *m) {
  nb_decoder_free(m->dec);
  nb_plan_free(m->full);
  nb_graph_free(m->g);
  env_close(&m->e);
}

/* Full forward over ids[0..n) padded to CTX with zeros: [CTX, V] logits. */
static void full_logits(gpt *m, const int32_t *ids, int n, float *out) {
  int32_t win[CTX] = {0};
  memcpy(win, ids, (size_t)n * sizeof *ids);
  TU_OK(nb_plan_set_input(m->full, m->ids, win, sizeof win));
  TU_OK(nb_plan_run(m->full));
  TU_OK(nb_plan_get(m->full, m->logits, out, sizeof(float) * CTX * V));
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

static void random_tokens(int32_t *ids, int n, uint64_t seed) {
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) ids[i] = (int32_t)(nb_rng_next(&r) % V);
}

/* Decode logits at every position equal the full forward's: a prefill of
 * 5 tokens, then 27 single-token steps; and a prefill of all 32 at once. */
static void test_decode_logits_match_full(void **state) {
  (void)state;
  gpt m;
  gpt_open(&m);
  int32_t ids[CTX];
  random_tokens(ids, CTX, 42);
  float full[CTX * V], got[CTX * V];
  full_logits(&m, ids, CTX, full);
  TU_OK(nb_decoder_feed(m.dec, ids, 5, got));
  assert_int_equal(nb_decoder_pos(m.dec), 5);
  for (int t = 5; t < CTX; t++) TU_OK(nb_decoder_feed(m.dec, ids + t, 1, got + t * V));
  double spread = 0;
  for (int i = 0; i < CTX * V; i++) spread = fmax(spread, fabs(full[i]));
  assert_true(spread > 1.0); /* logits far from zero: the comparison means something */
  tu_assert_close("prefill 5 + steps vs full", got, full, CTX * V, 1e-5, 1e-5);
  /* full now: one more token does not fit, and the cache is left as it was */
  assert_int_equal(nb_decoder_feed(m.dec, ids, 1, NULL), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "context of 32 positions"));
  assert_int_equal(nb_decoder_pos(m.dec), CTX);
  nb_decoder_reset(m.dec);
  TU_OK(nb_decoder_feed(m.dec, ids, CTX, got));
  tu_assert_close("prefill 32 vs full", got, full, CTX * V, 1e-5, 1e-5);
  /* a prefix: a cache refilled from position 0 forgets what came after */
  nb_decoder_reset(m.dec);
  int32_t other[CTX];
  random_tokens(other, CTX, 7);
  TU_OK(nb_decoder_feed(m.dec, other, 20, NULL));
  nb_decoder_reset(m.dec);
  TU_OK(nb_decoder_feed(m.dec, ids, 3, got));
  TU_OK(nb_decoder_feed(m.dec, ids + 3, 1, got + 3 * V));
  tu_assert_close("after reset", got, full, 4 * V, 1e-5, 1e-5);
  int32_t bad = V;
  assert_int_equal(nb_decoder_feed(m.dec, &bad, 1, NULL), NB_ERR_INVALID_ARG);
  gpt_close(&m);
}

static int collect(int32_t tok, void *user) {
  int32_t **at = user;
  *(*at)++ = tok;
  return 0;
}

/* Greedy generation with the cache gives exactly the tokens of full
 * recomputation (the whole window rerun for every token, argmax of the
 * last row), from a 4-token prompt to a full context: 29 new tokens, of
 * which the last is sampled from position 31 and never fed back. */
static void test_greedy_matches_recompute(void **state) {
  (void)state;
  gpt m;
  gpt_open(&m);
  enum { P = 4, N = CTX - P + 1 };
  int32_t ref[CTX + 1], got[N], *w = got;
  random_tokens(ref, P, 3);
  float full[CTX * V];
  for (int n = P; n <= CTX; n++) {
    full_logits(&m, ref, n, full);
    ref[n] = argmax(full + (n - 1) * V, V);
  }
  nb_generate_options o = {.max_tokens = N, .sample = {.temperature = 0.0f}};
  nb_generate_stats s;
  TU_OK(nb_generate(m.dec, ref, P, &o, collect, &w, &s));
  assert_int_equal(s.new_tokens, N);
  assert_int_equal(s.prompt_tokens, P);
  assert_int_equal(s.slides, 0);
  assert_true(s.tokens_per_sec > 0);
  int distinct = 0;
  for (int i = 0; i < N; i++) {
    if (got[i] != ref[P + i])
      fail_msg("token %d: cache %d, recompute %d", P + i, (int)got[i], (int)ref[P + i]);
    distinct |= 1 << got[i];
  }
  assert_true(__builtin_popcount((unsigned)distinct) > 2); /* not a constant sequence */
  /* top_k = 1 at any temperature is greedy too */
  w = got;
  o.sample = (nb_sample_options){.temperature = 1.5f, .top_k = 1, .seed = 9};
  TU_OK(nb_generate(m.dec, ref, P, &o, collect, &w, NULL));
  for (int i = 0; i < N; i++) assert_int_equal(got[i], ref[P + i]);
  /* one token more than fits: an error without slide */
  o.max_tokens = N + 1;
  o.sample.top_k = 0;
  assert_int_equal(nb_generate(m.dec, ref, P, &o, NULL, NULL, NULL), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "context of 32 positions is full"));
  gpt_close(&m);
}

/* With slide on, a full cache restarts from the last CTX / 2 tokens: the
 * first token after that is the greedy choice of a full forward over
 * exactly that window. Sampling with a seed is reproducible, and a
 * callback can stop early. */
static void test_slide_and_seed(void **state) {
  (void)state;
  gpt m;
  gpt_open(&m);
  enum { P = 4, N = 40 };
  int32_t prompt[P], got[N], again[N], *w = got;
  random_tokens(prompt, P, 11);
  nb_generate_options o = {.max_tokens = N, .slide = 1};
  nb_generate_stats s;
  TU_OK(nb_generate(m.dec, prompt, P, &o, collect, &w, &s));
  assert_int_equal(s.new_tokens, N);
  assert_int_equal(s.slides, 1); /* 4 + 40 tokens: full at 32, then 16 + 11 */
  int32_t hist[P + N];
  memcpy(hist, prompt, sizeof prompt);
  memcpy(hist + P, got, sizeof got);
  /* the cache filled with hist[0..32) and token 32 was sampled from it;
   * token 33 comes from the window hist[17..33) */
  float full[CTX * V];
  full_logits(&m, hist + CTX + 1 - CTX / 2, CTX / 2, full);
  assert_int_equal(hist[CTX + 1], argmax(full + (CTX / 2 - 1) * V, V));
  /* a prompt longer than the context is cut to its last CTX / 2 tokens */
  int32_t longp[CTX + 5];
  random_tokens(longp, CTX + 5, 12);
  o.max_tokens = 1;
  w = got;
  TU_OK(nb_generate(m.dec, longp, CTX + 5, &o, collect, &w, &s));
  assert_int_equal(s.prompt_tokens, CTX / 2);
  full_logits(&m, longp + CTX + 5 - CTX / 2, CTX / 2, full);
  assert_int_equal(got[0], argmax(full + (CTX / 2 - 1) * V, V));
  o.slide = 0;
  assert_int_equal(nb_generate(m.dec, longp, CTX + 5, &o, NULL, NULL, NULL), NB_ERR_INVALID_ARG);
  /* temperature sampling: the same seed, the same tokens; another seed differs */
  o = (nb_generate_options){.max_tokens = 25, .sample = {.temperature = 1.0f, .seed = 77}};
  w = got;
  TU_OK(nb_generate(m.dec, prompt, P, &o, collect, &w, NULL));
  w = again;
  TU_OK(nb_generate(m.dec, prompt, P, &o, collect, &w, NULL));
  assert_memory_equal(got, again, 25 * sizeof *got);
  o.sample.seed = 78;
  w = again;
  TU_OK(nb_generate(m.dec, prompt, P, &o, collect, &w, NULL));
  assert_memory_not_equal(got, again, 25 * sizeof *got);
  gpt_close(&m);
}

static int stop_after_3(int32_t tok, void *user) {
  (void)tok;
  return ++*(int *)user >= 3;
}

static void test_callback_stops(void **state) {
  (void)state;
  gpt m;
  gpt_open(&m);
  int32_t prompt[2] = {1, 2};
  int calls = 0;
  nb_generate_options o = {.max_tokens = 10};
  nb_generate_stats s;
  TU_OK(nb_generate(m.dec, prompt, 2, &o, stop_after_3, &calls, &s));
  assert_int_equal(calls, 3);
  assert_int_equal(s.new_tokens, 3);
  assert_int_equal(nb_decoder_pos(m.dec), 4); /* prompt + 2 fed back; the third never was */
  assert_int_equal(nb_generate(m.dec, prompt, 0, &o, NULL, NULL, NULL), NB_ERR_INVALID_ARG);
  gpt_close(&m);
}

/* A build function that hands back the wrong nodes, or fails, is an error
 * saying so, not a crash. */
static nb_status build_wrong(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                             nb_decode_graph *out) {
  (void)capacity;
  int64_t bt[2] = {1, len}, one = 1, lv[2] = {len, 4};
  out->ids = nb_input(g, "ids", NB_I64, 2, bt); /* i64: the decoder feeds i32 */
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  out->logits = nb_input(g, "logits", NB_F32, 2, lv);
  if (ctx) nb_reshape(g, out->logits, 1, &one); /* a shape error recorded in the graph */
  return NB_OK;
}

static void test_decoder_bad_build(void **state) {
  (void)state;
  env e;
  env_open(&e);
  nb_decoder *d;
  assert_int_equal(nb_decoder_new(e.be, e.st, 8, build_wrong, NULL, &d), NB_ERR_INVALID_ARG);
  assert_null(d);
  assert_non_null(strstr(nb_last_error(), "must return ids (an i32 input of 1"));
  int fail_graph = 1;
  assert_int_equal(nb_decoder_new(e.be, e.st, 8, build_wrong, &fail_graph, &d), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_last_error(), "building the graph for 1 tokens"));
  assert_int_equal(nb_decoder_new(e.be, e.st, 0, build_wrong, NULL, &d), NB_ERR_INVALID_ARG);
  env_close(&e);
}

/* ---- model files ----------------------------------------------------------------------- */

static const char *tiny_gpt_cfg = "[net]\n"
                                  "input = 16\n"
                                  "input_dtype = i32\n"
                                  "classes = 13\n"
                                  "[embedding wte]\n"
                                  "vocab = 13\n"
                                  "dim = 16\n"
                                  "[positional wpe]\n"
                                  "[transformer h]\n"
                                  "repeat = 2\n"
                                  "heads = 2\n"
                                  "causal = 1\n"
                                  "[layernorm ln_f]\n"
                                  "[linear lm_head]\n"
                                  "tie = wte\n";

static nb_status build_model_decode(void *ctx, nb_graph *g, int64_t len, int64_t capacity,
                                    nb_decode_graph *out) {
  nb_nn nn = {.g = g, .seed = 3};
  int64_t bt[2] = {1, len}, one = 1;
  out->ids = nb_input(g, "ids", NB_I32, 2, bt);
  out->pos = nb_input(g, "pos", NB_I32, 1, &one);
  return nb_model_build_decode(ctx, &nn, out->ids, out->pos, capacity, &out->logits);
}

/* A GPT model file's decode graph (nb_model_build_decode) against its
 * ordinary build (nb_model_build) on the same random weights. */
static void test_model_file_decode(void **state) {
  (void)state;
  nb_model *m;
  TU_OK(nb_model_parse(tiny_gpt_cfg, "<tiny_gpt>", &m));
  assert_int_equal(nb_model_context(m), 16);
  env e;
  env_open(&e);
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 3};
  nb_tensor *x = nb_model_new_input(m, g, "ids", 1), *logits;
  TU_OK(nb_model_build(m, &nn, x, &logits));
  nb_tensor_set_output(logits);
  nb_plan *p = compile(g, &e);
  for (int i = 0; i < nb_state_count(e.st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(e.st, i, &name, NULL, &nd, &shape));
    int64_t n = nb_shape_numel(nd, shape);
    float *w = tu_rand((size_t)n, -0.5f, 0.5f, 200 + (uint64_t)i);
    TU_OK(nb_state_write(e.st, name, w, (size_t)n * sizeof *w));
    free(w);
  }
  int32_t ids[16];
  for (int i = 0; i < 16; i++) ids[i] = (int32_t)((i * 7 + 3) % 13);
  float full[16 * 13], got[16 * 13];
  TU_OK(nb_plan_set_input(p, x, ids, sizeof ids));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, logits, full, sizeof full));
  nb_decoder *dec;
  TU_OK(nb_decoder_new(e.be, e.st, 16, build_model_decode, m, &dec));
  assert_int_equal(nb_decoder_vocab(dec), 13);
  TU_OK(nb_decoder_feed(dec, ids, 6, got));
  for (int t = 6; t < 16; t++) TU_OK(nb_decoder_feed(dec, ids + t, 1, got + t * 13));
  tu_assert_close("model file: decode vs build", got, full, 16 * 13, 1e-5, 1e-5);
  nb_decoder_free(dec);
  /* a cache longer than the model's context is refused */
  assert_int_equal(nb_decoder_new(e.be, e.st, 17, build_model_decode, m, &dec), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "context of 16"));
  nb_plan_free(p);
  nb_graph_free(g);
  env_close(&e);
  nb_model_free(m);
  /* a layer without a decode form is named */
  TU_OK(nb_model_parse("[net]\ninput = 1, 28, 28\nclasses = 10\n[flatten f]\n[linear fc]\nout = "
                       "10\n",
                       "<mlp>", &m));
  assert_int_equal(nb_model_context(m), 0);
  nb_model_free(m);
  TU_OK(nb_model_parse("[net]\ninput = 8\ninput_dtype = i32\n[embedding e]\nvocab = 5\ndim = "
                       "4\n[flatten f]\n",
                       "<flat>", &m));
  g = nb_graph_new();
  nn = (nb_nn){.g = g};
  int64_t bt[2] = {1, 1}, one = 1;
  nb_tensor *pos = nb_input(g, "pos", NB_I32, 1, &one);
  assert_int_equal(
      nb_model_build_decode(m, &nn, nb_input(g, "ids", NB_I32, 2, bt), pos, 8, &logits),
      NB_ERR_UNSUPPORTED);
  assert_non_null(strstr(nb_last_error(), "[flatten f]"));
  nb_graph_free(g);
  nb_model_free(m);
}

/* ---- sampler ----------------------------------------------------------------------------- */

static void test_sampler_greedy_and_errors(void **state) {
  (void)state;
  nb_sampler *s;
  nb_sample_options o = {.temperature = 0.0f};
  TU_OK(nb_sampler_new(5, &o, &s));
  float l[5] = {0.1f, 3.0f, -2.0f, 3.0f, 1.0f};
  int32_t t;
  TU_OK(nb_sampler_pick(s, l, &t));
  assert_int_equal(t, 1); /* the lower id of a tie */
  l[2] = NAN;
  assert_int_equal(nb_sampler_pick(s, l, &t), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "token 2 is NaN"));
  nb_sampler_free(s);
  o.temperature = -1.0f;
  assert_int_equal(nb_sampler_new(5, &o, &s), NB_ERR_INVALID_ARG);
  assert_null(s);
  o.temperature = NAN;
  assert_int_equal(nb_sampler_new(5, &o, &s), NB_ERR_INVALID_ARG);
  o = (nb_sample_options){.temperature = 1.0f, .top_k = -1};
  assert_int_equal(nb_sampler_new(5, &o, &s), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_sampler_new(0, &o, &s), NB_ERR_INVALID_ARG);
}

/* Frequencies over 40000 draws against softmax(l / T), within 5 standard
 * errors; top-k renormalises over the k best. */
static void check_freqs(const float *l, int n, float temp, int top_k, uint64_t seed) {
  enum { DRAWS = 40000 };
  nb_sampler *s;
  nb_sample_options o = {.temperature = temp, .top_k = top_k, .seed = seed};
  TU_OK(nb_sampler_new(n, &o, &s));
  int count[8] = {0};
  for (int i = 0; i < DRAWS; i++) {
    int32_t t;
    TU_OK(nb_sampler_pick(s, l, &t));
    assert_in_range(t, 0, n - 1);
    count[t]++;
  }
  nb_sampler_free(s);
  /* expected probabilities, keeping the top_k largest (no ties here) */
  double p[8], sum = 0;
  for (int i = 0; i < n; i++) {
    int rank = 0;
    for (int j = 0; j < n; j++) rank += l[j] > l[i];
    p[i] = top_k && rank >= top_k ? 0.0 : exp((double)l[i] / temp);
    sum += p[i];
  }
  for (int i = 0; i < n; i++) {
    p[i] /= sum;
    double f = (double)count[i] / DRAWS, se = sqrt(p[i] * (1 - p[i]) / DRAWS);
    if (p[i] == 0.0) {
      assert_int_equal(count[i], 0);
      continue;
    }
    if (fabs(f - p[i]) > 5 * se + 1e-9)
      fail_msg("T %g top_k %d: token %d drawn %.4f, expected %.4f", (double)temp, top_k, i, f,
               p[i]);
  }
}

static void test_sampler_statistics(void **state) {
  (void)state;
  float l[5] = {log(0.5), log(0.3), log(0.1), log(0.06), log(0.04)};
  check_freqs(l, 5, 1.0f, 0, 1);
  check_freqs(l, 5, 0.5f, 0, 2); /* sharper */
  check_freqs(l, 5, 2.0f, 0, 3); /* flatter */
  check_freqs(l, 5, 1.0f, 2, 4); /* only 0 and 1: 0.625 / 0.375 */
  check_freqs(l, 5, 1.0f, 5, 5); /* k = vocab is no cut */
  /* the same seed draws the same sequence; another seed does not */
  nb_sample_options o = {.temperature = 1.0f, .top_k = 3, .seed = 123};
  nb_sampler *a, *b;
  TU_OK(nb_sampler_new(5, &o, &a));
  TU_OK(nb_sampler_new(5, &o, &b));
  int same = 1;
  for (int i = 0; i < 200; i++) {
    int32_t x, y;
    TU_OK(nb_sampler_pick(a, l, &x));
    TU_OK(nb_sampler_pick(b, l, &y));
    same &= x == y;
  }
  assert_true(same);
  nb_sampler_free(b);
  o.seed = 124;
  TU_OK(nb_sampler_new(5, &o, &b));
  same = 1;
  for (int i = 0; i < 200; i++) {
    int32_t x, y;
    TU_OK(nb_sampler_pick(a, l, &x));
    TU_OK(nb_sampler_pick(b, l, &y));
    same &= x == y;
  }
  assert_false(same);
  nb_sampler_free(a);
  nb_sampler_free(b);
}

/* Caches are scratch: named so that tools can tell them from weights, and
 * left out of checkpoints. */
static void test_cache_names_and_checkpoints(void **state) {
  (void)state;
  assert_true(nb_nn_is_kv_cache("h.0.attn.k_cache"));
  assert_true(nb_nn_is_kv_cache("h.1.attn.v_cache"));
  assert_false(nb_nn_is_kv_cache("h.0.attn.qkv.weight"));
  assert_false(nb_nn_is_kv_cache("k_cache.weight"));
  assert_false(nb_nn_is_kv_cache(NULL));
  gpt m;
  gpt_open(&m);
  int caches = 0;
  for (int i = 0; i < nb_state_count(m.e.st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(m.e.st, i, &name, NULL, &nd, &shape));
    if (!nb_nn_is_kv_cache(name)) continue;
    caches++;
    assert_int_equal(nd, 4);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], HEADS);
    assert_int_equal(shape[2], CTX);
    assert_int_equal(shape[3], C / HEADS);
  }
  assert_int_equal(caches, 2 * LAYERS);
  char path[] = "/tmp/nb_kv_ckptXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  TU_OK(nb_checkpoint_save(path, m.e.st, NULL));
  nb_safetensors *f;
  TU_OK(nb_safetensors_open(path, &f));
  assert_int_equal(nb_safetensors_count(f), nb_state_count(m.e.st) - 2 * LAYERS);
  assert_int_equal(nb_safetensors_find(f, "h.0.attn.k_cache"), -1);
  nb_safetensors_close(f);
  /* and the checkpoint loads back into a state that has caches */
  TU_OK(nb_checkpoint_load(path, m.e.st, 0, NULL));
  remove(path);
  gpt_close(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_at_values),
      cmocka_unit_test(test_write_at_unread),
      cmocka_unit_test(test_slice_at_values),
      cmocka_unit_test(test_build_errors),
      cmocka_unit_test(test_attention_cached_values),
      cmocka_unit_test(test_decode_logits_match_full),
      cmocka_unit_test(test_greedy_matches_recompute),
      cmocka_unit_test(test_slide_and_seed),
      cmocka_unit_test(test_callback_stops),
      cmocka_unit_test(test_model_file_decode),
      cmocka_unit_test(test_decoder_bad_build),
      cmocka_unit_test(test_sampler_greedy_and_errors),
      cmocka_unit_test(test_sampler_statistics),
      cmocka_unit_test(test_cache_names_and_checkpoints),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
