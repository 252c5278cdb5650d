/* Fused attention (nb_attention): values and gradients against PyTorch
 * (float64, including scores in the hundreds), against the same attention
 * composed from nabla ops (matmul, scale, causal mask via where, softmax,
 * matmul) and against a double-precision C loop, for many shapes (T = 1,
 * odd sizes, Tq != Tk, a threaded size); finite-difference gradients of q, k
 * and v, causal and not; build-time errors for bad shapes and dtypes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

typedef struct {
  int causal;
  float scale;
  int naive;   /* build from matmul/where/softmax instead of nb_attention */
  int grad_of; /* >= 0: return d(sum(y * r))/d input grad_of */
  const float *r;
} att_ctx;

/* softmax(q k^T * scale + mask) v from existing ops, the reference the
 * fused op must agree with (values and autodiff gradients). */
static nb_tensor *naive_attention(nb_graph *g, nb_tensor *q, nb_tensor *k, nb_tensor *v, int causal,
                                  float scale) {
  nb_tensor *s = nb_mul(g, nb_matmul(g, q, nb_transpose(g, k, 2, 3)), nb_scalar(g, scale));
  if (causal) {
    int64_t tq = nb_tensor_shape(q)[2], tk = nb_tensor_shape(k)[2];
    float *m = malloc((size_t)(tq * tk) * sizeof *m);
    for (int64_t i = 0; i < tq; i++)
      for (int64_t j = 0; j < tk; j++) m[i * tk + j] = j <= i ? 1.0f : 0.0f;
    int64_t ms[2] = {tq, tk};
    nb_tensor *mask = nb_constant(g, NB_F32, 2, ms, m);
    free(m);
    s = nb_where(g, mask, s, nb_scalar(g, -INFINITY));
  }
  return nb_matmul(g, nb_softmax(g, s, -1), v);
}

static nb_tensor *build_att(nb_graph *g, nb_tensor **x, void *vctx) {
  const att_ctx *c = vctx;
  nb_tensor *y = c->naive ? naive_attention(g, x[0], x[1], x[2], c->causal, c->scale)
                          : nb_attention(g, x[0], x[1], x[2], c->causal, c->scale);
  if (!y || c->grad_of < 0) return y;
  nb_tensor *r = nb_constant(g, NB_F32, nb_tensor_ndim(y), nb_tensor_shape(y), c->r);
  nb_tensor *loss = nb_sum(g, nb_mul(g, y, r), 0, NULL, 0);
  if (nb_graph_backward(g, loss)) fail_msg("backward failed: %s", nb_graph_error(g));
  return nb_graph_grad(g, x[c->grad_of]);
}

static void set_in(tu_input *in, int64_t b, int64_t h, int64_t t, int64_t d, const float *data,
                   uint64_t seed) {
  *in = (tu_input){.ndim = 4,
                   .shape = {b, h, t, d},
                   .data = data,
                   .lo = -1.5f,
                   .hi = 1.5f,
                   .seed = seed,
                   .requires_grad = 1};
}

/* Runs y (grad_of < 0) or one gradient; returns a malloc'ed buffer. */
static float *run(att_ctx c, const tu_input *in, int grad_of, int64_t *n) {
  c.grad_of = grad_of;
  float *out;
  tu_forward(build_att, &c, 3, in, &out, n, NULL, NULL);
  return out;
}

/* ---- against PyTorch ------------------------------------------------------------ */

static void check_ref(const tu_ref *ref, const char *name) {
  int nd;
  int64_t qs[NB_MAX_DIMS], ks[NB_MAX_DIMS], vs[NB_MAX_DIMS], n;
  const float *q = tu_ref_get(ref, name, "q", &nd, qs, NULL);
  const float *k = tu_ref_get(ref, name, "k", &nd, ks, NULL);
  const float *v = tu_ref_get(ref, name, "v", &nd, vs, NULL);
  att_ctx c = {.causal = tu_ref_get(ref, name, "causal", NULL, NULL, NULL)[0] != 0.0f,
               .scale = tu_ref_get(ref, name, "scale", NULL, NULL, NULL)[0],
               .r = tu_ref_get(ref, name, "r", NULL, NULL, NULL)};
  tu_input in[3];
  set_in(&in[0], qs[0], qs[1], qs[2], qs[3], q, 0);
  set_in(&in[1], ks[0], ks[1], ks[2], ks[3], k, 0);
  set_in(&in[2], vs[0], vs[1], vs[2], vs[3], v, 0);
  static const char *const arr[4] = {"y", "dq", "dk", "dv"};
  for (int a = 0; a < 4; a++) {
    int64_t want_n;
    const float *want = tu_ref_get(ref, name, arr[a], NULL, NULL, &want_n);
    float *got = run(c, in, a - 1, &n);
    assert_int_equal(n, want_n);
    char what[96];
    snprintf(what, sizeof what, "%s %s", name, arr[a]);
    /* large_logits: scores near 150 carry f32 rounding of about 1e-5 */
    tu_assert_close(what, got, want, (size_t)n, 2e-5, 2e-4);
    free(got);
  }
}

static void test_attention_torch_ref(void **state) {
  (void)state;
  tu_ref *ref = tu_ref_load("attention.txt");
  static const char *const cases[] = {"causal_2x3x5x4", "full_1x2x3x7", "causal_rect_1x2x4x6",
                                      "t1_causal", "large_logits"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_ref(ref, cases[i]);
  tu_ref_free(ref);
}

/* ---- against a C loop and the composed graph ---------------------------------------- */

/* y = softmax(q k^T * scale + mask) v in double. */
static void loop_attention(const float *q, const float *k, const float *v, float *y, int64_t bh,
                           int64_t tq, int64_t tk, int64_t d, int64_t dv, int causal,
                           double scale) {
  double *s = malloc((size_t)(tk ? tk : 1) * sizeof *s);
  for (int64_t b = 0; b < bh; b++)
    for (int64_t i = 0; i < tq; i++) {
      int64_t n = causal ? (i + 1 < tk ? i + 1 : tk) : tk;
      double m = -INFINITY, l = 0;
      for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t e = 0; e < d; e++)
          acc += (double)q[(b * tq + i) * d + e] * k[(b * tk + j) * d + e];
        s[j] = acc * scale;
        m = fmax(m, s[j]);
      }
      for (int64_t j = 0; j < n; j++) l += exp(s[j] - m);
      for (int64_t e = 0; e < dv; e++) {
        double acc = 0;
        for (int64_t j = 0; j < n; j++) acc += exp(s[j] - m) / l * v[(b * tk + j) * dv + e];
        y[(b * tq + i) * dv + e] = (float)acc;
      }
    }
  free(s);
}

typedef struct {
  int64_t b, h, tq, tk, d, dv;
} att_shape;

static void check_shape(att_shape s, int causal) {
  uint64_t seed = (uint64_t)(s.b * 1000 + s.h * 100 + s.tq * 10 + s.tk + s.d * 7 + causal);
  tu_input in[3];
  float *q = tu_rand((size_t)(s.b * s.h * s.tq * s.d), -1.5f, 1.5f, seed);
  float *k = tu_rand((size_t)(s.b * s.h * s.tk * s.d), -1.5f, 1.5f, seed + 1);
  float *v = tu_rand((size_t)(s.b * s.h * s.tk * s.dv), -1.5f, 1.5f, seed + 2);
  set_in(&in[0], s.b, s.h, s.tq, s.d, q, 0);
  set_in(&in[1], s.b, s.h, s.tk, s.d, k, 0);
  set_in(&in[2], s.b, s.h, s.tk, s.dv, v, 0);
  int64_t ny = s.b * s.h * s.tq * s.dv, n;
  float *r = tu_rand((size_t)ny, -1.0f, 1.0f, seed + 3);
  att_ctx c = {.causal = causal, .scale = 1.0f / sqrtf((float)s.d), .r = r};
  char what[160];
  float *want = malloc((size_t)(ny ? ny : 1) * sizeof *want);
  loop_attention(q, k, v, want, s.b * s.h, s.tq, s.tk, s.d, s.dv, causal, c.scale);
  float *got = run(c, in, -1, &n);
  assert_int_equal(n, ny);
  snprintf(what, sizeof what, "y [%lld,%lld,%lld,%lld] tk %lld dv %lld causal %d vs loop",
           (long long)s.b, (long long)s.h, (long long)s.tq, (long long)s.d, (long long)s.tk,
           (long long)s.dv, causal);
  tu_assert_close(what, got, want, (size_t)n, 1e-5, 1e-4);
  free(got);
  for (int a = -1; a < 3; a++) {
    att_ctx nc = c;
    nc.naive = 1;
    float *ref = run(nc, in, a, &n);
    float *fused = run(c, in, a, &n);
    snprintf(what, sizeof what, "%s [%lld,%lld,%lld,%lld] tk %lld dv %lld causal %d vs composed",
             a < 0    ? "y"
             : a == 0 ? "dq"
             : a == 1 ? "dk"
                      : "dv",
             (long long)s.b, (long long)s.h, (long long)s.tq, (long long)s.d, (long long)s.tk,
             (long long)s.dv, causal);
    tu_assert_close(what, fused, ref, (size_t)n, 1e-5, 1e-4);
    free(ref);
    free(fused);
  }
  free(q);
  free(k);
  free(v);
  free(r);
  free(want);
}

static void test_attention_shapes(void **state) {
  (void)state;
  static const att_shape shapes[] = {
      {1, 1, 1, 1, 1, 1},
      {2, 3, 5, 5, 4, 4},
      {1, 2, 7, 7, 3, 3},
      {3, 2, 13, 13, 5, 5},
      {1, 1, 33, 33, 16, 16},
      {2, 1, 4, 9, 6, 2},
      {1, 3, 9, 4, 5, 7},
      /* 2M multiply-adds: the threaded forward and backward */
      {2, 4, 64, 64, 32, 32},
      /* the CPU kernels' tiles and their edges: blocks of 32 query rows
       * (70 = 32 + 32 + 6), 4-row groups and row pairs, 16- and 8-key tiles
       * and single keys, 32- and 8-column tiles and single columns (45) */
      {1, 2, 70, 70, 45, 45},
      {1, 1, 37, 75, 20, 41},
      {1, 1, 75, 37, 41, 20},
  };
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    for (int causal = 0; causal < 2; causal++) check_shape(shapes[i], causal);
}

/* ---- finite differences ---------------------------------------------------------- */

static nb_tensor *build_plain(nb_graph *g, nb_tensor **x, void *vctx) {
  const att_ctx *c = vctx;
  return nb_attention(g, x[0], x[1], x[2], c->causal, c->scale);
}

static void test_attention_gradcheck(void **state) {
  (void)state;
  for (int causal = 0; causal < 2; causal++) {
    tu_input in[3];
    set_in(&in[0], 2, 2, 5, 3, NULL, 101);
    set_in(&in[1], 2, 2, 5, 3, NULL, 102);
    set_in(&in[2], 2, 2, 5, 4, NULL, 103);
    att_ctx c = {.causal = causal, .scale = 0.8f};
    tu_gradcheck(causal ? "attention causal" : "attention full", build_plain, &c, 3, in, 1e-2, 2e-3,
                 1e-2);
    /* Tq != Tk and T = 1 */
    set_in(&in[0], 1, 2, 3, 2, NULL, 104);
    set_in(&in[1], 1, 2, 6, 2, NULL, 105);
    set_in(&in[2], 1, 2, 6, 3, NULL, 106);
    tu_gradcheck("attention rect", build_plain, &c, 3, in, 1e-2, 2e-3, 1e-2);
    set_in(&in[0], 2, 1, 1, 3, NULL, 107);
    set_in(&in[1], 2, 1, 1, 3, NULL, 108);
    set_in(&in[2], 2, 1, 1, 3, NULL, 109);
    tu_gradcheck("attention t1", build_plain, &c, 3, in, 1e-2, 2e-3, 1e-2);
  }
}

static void test_attention_large_logits(void **state) {
  (void)state;
  /* scores up to 5e4: a softmax without max subtraction gives inf/NaN; the
   * result must be v at each row's best key (causal, so among j <= i) */
  enum { T = 6, D = 2 };
  float q[T * D], k[T * D], v[T * D], r[T * D];
  for (int i = 0; i < T * D; i++) r[i] = (float)(i % 3) - 1.0f;
  for (int i = 0; i < T; i++) {
    q[i * D] = 100.0f;
    q[i * D + 1] = 0.0f;
    k[i * D] = (float)i; /* later keys score higher: row i picks key i */
    k[i * D + 1] = 1.0f;
    v[i * D] = (float)(10 * i);
    v[i * D + 1] = -(float)i;
  }
  tu_input in[3];
  set_in(&in[0], 1, 1, T, D, q, 0);
  set_in(&in[1], 1, 1, T, D, k, 0);
  set_in(&in[2], 1, 1, T, D, v, 0);
  att_ctx c = {.causal = 1, .scale = 100.0f, .r = r};
  int64_t n;
  float *y = run(c, in, -1, &n);
  tu_assert_close("large logits y", y, v, T * D, 1e-6, 1e-6);
  free(y);
  /* saturated rows: the composed graph (which subtracts the max too) gives
   * zero gradients up to exp(-1e4) terms, and nothing may be inf or NaN */
  att_ctx nc = c;
  nc.naive = 1;
  for (int a = 0; a < 3; a++) {
    float *got = run(c, in, a, &n), *want = run(nc, in, a, &n);
    tu_assert_close("large logits gradient", got, want, (size_t)n, 1e-5, 1e-5);
    for (int64_t i = 0; i < n; i++) assert_true(isfinite(got[i]));
    free(got);
    free(want);
  }
}

/* ---- errors --------------------------------------------------------------------- */

static void expect_error(int64_t *qs, int64_t *ks, int64_t *vs, nb_dtype vdt, nb_status want,
                         const char *needle) {
  nb_graph *g = nb_graph_new();
  nb_tensor *q = nb_input(g, "q", NB_F32, 4, qs);
  nb_tensor *k = nb_input(g, "k", NB_F32, 4, ks);
  nb_tensor *v = nb_input(g, "v", vdt, vs[0] < 0 ? 3 : 4, vs[0] < 0 ? vs + 1 : vs);
  assert_null(nb_attention(g, q, k, v, 1, 0.0f));
  assert_int_equal(nb_graph_status(g), want);
  const char *msg = nb_graph_error(g);
  if (!strstr(msg, "attention") || !strstr(msg, needle))
    fail_msg("error '%s' should name attention and '%s'", msg, needle);
  nb_graph_free(g);
}

static void test_attention_errors(void **state) {
  (void)state;
  int64_t q[4] = {2, 3, 5, 4}, kbad[4] = {2, 3, 5, 3}, k[4] = {2, 3, 5, 4};
  int64_t vshort[4] = {2, 3, 4, 4}, vheads[4] = {2, 2, 5, 4}, v3[4] = {-1, 2, 3, 5};
  expect_error(q, kbad, k, NB_F32, NB_ERR_SHAPE, "k [2, 3, 5, 3]");
  expect_error(q, k, vshort, NB_F32, NB_ERR_SHAPE, "v [2, 3, 4, 4]");
  expect_error(q, k, vheads, NB_F32, NB_ERR_SHAPE, "q [2, 3, 5, 4]");
  expect_error(q, k, v3, NB_F32, NB_ERR_SHAPE, "v [2, 3, 5]");
  expect_error(q, k, k, NB_I32, NB_ERR_DTYPE, "i32");
  /* a NULL input: an error, no crash */
  nb_graph *g = nb_graph_new();
  assert_null(nb_attention(g, NULL, NULL, NULL, 0, 1.0f));
  assert_int_not_equal(nb_graph_status(g), NB_OK);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_attention_torch_ref), cmocka_unit_test(test_attention_shapes),
      cmocka_unit_test(test_attention_gradcheck), cmocka_unit_test(test_attention_large_logits),
      cmocka_unit_test(test_attention_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
