/* Elementwise ops: binary with numpy broadcasting, comparisons, where,
 * unary activations, casts; values and gradients against PyTorch
 * (tests/ref/ops.txt), finite differences, strided views, bad input and
 * zero-size tensors. */
#include "ops_check.h"

typedef nb_tensor *(*binary_fn)(nb_graph *, nb_tensor *, nb_tensor *);

static binary_fn binary_op(const char *name) {
  static const struct {
    const char *name;
    binary_fn fn;
  } ops[] = {
      {"add", nb_add}, {"sub", nb_sub},         {"mul", nb_mul},         {"div", nb_div},
      {"pow", nb_pow}, {"maximum", nb_maximum}, {"minimum", nb_minimum}, {"eq", nb_eq},
      {"ne", nb_ne},   {"lt", nb_lt},           {"le", nb_le},           {"gt", nb_gt},
      {"ge", nb_ge},
  };
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (!strcmp(ops[i].name, name)) return ops[i].fn;
  fail_msg("unknown binary op %s", name);
  return NULL;
}

static nb_tensor *apply_unary(nb_graph *g, const char *op, nb_tensor *x) {
  if (!strcmp(op, "neg")) return nb_neg(g, x);
  if (!strcmp(op, "abs")) return nb_abs(g, x);
  if (!strcmp(op, "sign")) return nb_sign(g, x);
  if (!strcmp(op, "exp")) return nb_exp(g, x);
  if (!strcmp(op, "log")) return nb_log(g, x);
  if (!strcmp(op, "sqrt")) return nb_sqrt(g, x);
  if (!strcmp(op, "rsqrt")) return nb_rsqrt(g, x);
  if (!strcmp(op, "square")) return nb_square(g, x);
  if (!strcmp(op, "reciprocal")) return nb_reciprocal(g, x);
  if (!strcmp(op, "tanh")) return nb_tanh(g, x);
  if (!strcmp(op, "sigmoid")) return nb_sigmoid(g, x);
  if (!strcmp(op, "relu")) return nb_relu(g, x);
  if (!strcmp(op, "leaky_relu")) return nb_leaky_relu(g, x, 0.1f);
  if (!strcmp(op, "gelu")) return nb_gelu(g, x, 0);
  if (!strcmp(op, "gelu_tanh")) return nb_gelu(g, x, 1);
  if (!strcmp(op, "silu")) return nb_silu(g, x);
  if (!strcmp(op, "softplus")) return nb_softplus(g, x, 1.0f, 20.0f);
  if (!strcmp(op, "softplus_b2")) return nb_softplus(g, x, 2.0f, 1.0f);
  if (!strcmp(op, "clamp")) return nb_clamp(g, x, -0.5f, 0.7f);
  fail_msg("unknown unary op %s", op);
  return NULL;
}

static nb_tensor *build_binary(nb_graph *g, nb_tensor **x, void *ctx) {
  return binary_op(ctx)(g, x[0], x[1]);
}

static nb_tensor *build_unary(nb_graph *g, nb_tensor **x, void *ctx) {
  return apply_unary(g, ctx, x[0]);
}

static nb_tensor *build_where(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  return nb_where(g, x[0], x[1], x[2]);
}

/* ctx: the chain of dtypes, e.g. "h" = f32 -> f16 -> f32, "t" = transpose first */
static nb_tensor *build_cast(nb_graph *g, nb_tensor **x, void *ctx) {
  nb_tensor *y = x[0];
  for (const char *c = ctx; *c; c++) {
    if (*c == 't') y = nb_transpose(g, y, 0, 1);
    if (*c == 'h') y = nb_cast(g, y, NB_F16);
    if (*c == 'b') y = nb_cast(g, y, NB_BF16);
  }
  return nb_cast(g, y, NB_F32);
}

static nb_tensor *build_view(nb_graph *g, nb_tensor **x, void *ctx) {
  const char *v = ctx;
  if (!strcmp(v, "bin")) {
    nb_tensor *prod = nb_mul(g, nb_transpose(g, x[0], 0, 1), nb_slice(g, x[1], 1, 0, 8, 2));
    return nb_add(g, prod, nb_broadcast_to(g, x[2], 2, (int64_t[]){3, 4}));
  }
  if (!strcmp(v, "exp_t")) return nb_exp(g, nb_transpose(g, x[0], 0, 1));
  if (!strcmp(v, "tanh_s")) return nb_tanh(g, nb_slice(g, x[0], 0, 1, 6, 2));
  if (!strcmp(v, "sqrt_b")) return nb_sqrt(g, nb_broadcast_to(g, x[0], 2, (int64_t[]){3, 4}));
  if (!strcmp(v, "perm")) return nb_mul(g, nb_permute(g, x[0], (int[]){2, 0, 1}), x[1]);
  if (!strcmp(v, "slice_t"))
    return nb_square(g, nb_slice(g, nb_transpose(g, x[0], 0, 1), 1, 0, 6, 2));
  if (!strcmp(v, "where")) {
    nb_tensor *c = nb_slice(g, x[0], 0, 0, 8, 2);
    nb_tensor *b =
        nb_broadcast_to(g, nb_reshape(g, x[2], 2, (int64_t[]){3, 1}), 2, (int64_t[]){3, 4});
    return nb_where(g, c, nb_transpose(g, x[1], 0, 1), b);
  }
  if (!strcmp(v, "max_t"))
    return nb_maximum(g, nb_transpose(g, x[0], 0, 1), nb_slice(g, x[1], 1, 1, 8, 2));
  fail_msg("unknown view case %s", v);
  return NULL;
}

#define VAL 1e-5, 1e-4
#define FD  1e-3, 2e-3, 1e-2
#define BIN(op)                                                                                    \
  { "bin_" op, "gg", build_binary, op, VAL, 1, FD, NULL }
#define BIN_S(op)                                                                                  \
  { "bin_" op "_s", "gg", build_binary, op, VAL, 1, FD, NULL }
#define CMP(op)                                                                                    \
  { "cmp_" op, "ff", build_binary, op, 0, 0, 0, 0, 0, 0, NULL }
#define UN(op)                                                                                     \
  { "un_" op, "g", build_unary, op, VAL, 1, FD, NULL }
#define EXT(op)                                                                                    \
  { "ext_" op, "g", build_unary, op, 1e-6, 1e-5, 1, 0, 0, 0, NULL }
#define NAN_UN(op)                                                                                 \
  { "nan_" op, "f", build_unary, op, 1e-6, 1e-5, 0, 0, 0, 0, NULL }
#define NAN_BIN(op)                                                                                \
  { "nan_" op, "ff", build_binary, op, 1e-6, 1e-5, 0, 0, 0, 0, NULL }
#define CAST(name, chain)                                                                          \
  { name, "g", build_cast, chain, 0, 0, 1, 0, 0, 0, NULL }
#define VIEW(name, kinds)                                                                          \
  { "view_" name, kinds, build_view, name, VAL, 1, FD, NULL }

static const oc_case cases[] = {
    BIN("add"),
    BIN("sub"),
    BIN("mul"),
    BIN("div"),
    BIN("pow"),
    BIN("maximum"),
    BIN("minimum"),
    BIN_S("add"),
    BIN_S("sub"),
    BIN_S("mul"),
    BIN_S("div"),
    BIN_S("pow"),
    BIN_S("maximum"),
    BIN_S("minimum"),
    {"bin_div_ls", "gg", build_binary, "div", VAL, 1, FD, NULL},
    {"bin_pow_ls", "gg", build_binary, "pow", VAL, 1, FD, NULL},
    {"bin_sub_ls", "gg", build_binary, "sub", VAL, 1, FD, NULL},
    /* central differences at a tie also give 0.5 per side */
    {"bin_maximum_tie", "gg", build_binary, "maximum", VAL, 1, FD, NULL},
    {"bin_minimum_tie", "gg", build_binary, "minimum", VAL, 1, FD, NULL},
    {"bin_maximum_tie_b", "gg", build_binary, "maximum", VAL, 1, FD, NULL},
    CMP("eq"),
    CMP("ne"),
    CMP("lt"),
    CMP("le"),
    CMP("gt"),
    CMP("ge"),
    {"where", "fgg", build_where, NULL, VAL, 1, FD, NULL},
    {"where_s", "fgg", build_where, NULL, VAL, 1, FD, NULL},
    UN("neg"),
    UN("abs"),
    UN("sign"),
    UN("exp"),
    UN("log"),
    UN("sqrt"),
    UN("rsqrt"),
    UN("square"),
    UN("reciprocal"),
    UN("tanh"),
    UN("sigmoid"),
    UN("relu"),
    UN("leaky_relu"),
    UN("gelu"),
    UN("gelu_tanh"),
    UN("silu"),
    UN("softplus"),
    UN("softplus_b2"),
    UN("clamp"),
    EXT("sigmoid"),
    EXT("tanh"),
    EXT("silu"),
    EXT("softplus"),
    EXT("gelu"),
    EXT("gelu_tanh"),
    EXT("exp"),
    EXT("leaky_relu"),
    NAN_UN("relu"),
    NAN_UN("abs"),
    NAN_UN("sign"),
    NAN_UN("sigmoid"),
    NAN_UN("tanh"),
    NAN_UN("gelu"),
    NAN_UN("gelu_tanh"),
    NAN_UN("silu"),
    NAN_UN("softplus"),
    NAN_UN("leaky_relu"),
    NAN_UN("clamp"),
    NAN_UN("exp"),
    NAN_UN("log"),
    NAN_UN("sqrt"),
    NAN_UN("square"),
    NAN_UN("neg"),
    NAN_UN("reciprocal"),
    NAN_BIN("maximum"),
    NAN_BIN("minimum"),
    NAN_BIN("add"),
    NAN_BIN("pow"),
    /* casts round exactly like PyTorch: compare bit for bit */
    CAST("cast_f16", "h"),
    CAST("cast_bf16", "b"),
    CAST("cast_f16_t", "th"),
    CAST("cast_f16_bf16", "hb"),
    VIEW("bin", "ggg"),
    VIEW("exp_t", "g"),
    VIEW("tanh_s", "g"),
    VIEW("sqrt_b", "g"),
    VIEW("perm", "gg"),
    VIEW("slice_t", "g"),
    VIEW("where", "fgg"),
    VIEW("max_t", "gg"),
};

/* ---- gradients that must be absent ------------------------------------------------ */

static nb_tensor *build_cmp_sum(nb_graph *g, nb_tensor **x, void *ctx) {
  /* comparisons have zero gradient; the mul keeps x[1] on a real path too */
  return nb_add(g, binary_op(ctx)(g, x[0], x[1]), nb_mul(g, x[1], x[1]));
}

static void test_compare_zero_grad(void **state) {
  (void)state;
  static const char *const ops[] = {"eq", "ne", "lt", "le", "gt", "ge"};
  /* interleaved grids: never within 0.125 of a tie */
  float a[6] = {-0.875f, 0.125f, 1.125f, -0.375f, 0.625f, 1.625f};
  float b[6] = {-1.0f, 0.5f, 1.0f, -0.25f, 0.75f, 2.0f};
  for (size_t i = 0; i < 6; i++) {
    tu_input in[2] = {
        {.ndim = 2, .shape = {2, 3}, .data = a, .requires_grad = 1},
        {.ndim = 2, .shape = {2, 3}, .data = b, .requires_grad = 1},
    };
    tu_gradcheck(ops[i], build_cmp_sum, (void *)ops[i], 2, in, 1e-3, 1e-4, 1e-3);
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, "x", NB_F32, 1, (int64_t[]){3});
    nb_tensor_set_requires_grad(x, 1);
    nb_tensor *y = binary_op(ops[i])(g, x, nb_scalar(g, 0.0f));
    TU_OK(nb_graph_backward(g, nb_sum(g, y, 0, NULL, 0)));
    assert_null(nb_graph_grad(g, x));
    nb_graph_free(g);
  }
}

static void test_where_cond_no_grad(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *c = nb_input(g, "c", NB_F32, 1, (int64_t[]){3});
  nb_tensor *a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  nb_tensor_set_requires_grad(c, 1);
  nb_tensor_set_requires_grad(a, 1);
  nb_tensor *y = nb_where(g, c, a, nb_scalar(g, 2.0f));
  TU_OK(nb_graph_backward(g, nb_sum(g, y, 0, NULL, 0)));
  assert_null(nb_graph_grad(g, c));
  assert_non_null(nb_graph_grad(g, a));
  nb_graph_free(g);
}

static void test_sign_no_grad(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, (int64_t[]){3});
  nb_tensor_set_requires_grad(x, 1);
  TU_OK(nb_graph_backward(g, nb_sum(g, nb_sign(g, x), 0, NULL, 0)));
  assert_null(nb_graph_grad(g, x));
  nb_graph_free(g);
}

/* ---- casts between every dtype ------------------------------------------------------ */

/* Runs cast(constant(src), dst) and returns the raw result (caller frees). */
static void *run_cast(nb_dtype src_dt, const void *src, int64_t n, nb_dtype dst_dt,
                      int transpose_2x) {
  nb_graph *g = nb_graph_new();
  int64_t shape[2] = {transpose_2x ? 2 : n, transpose_2x ? n / 2 : 1};
  nb_tensor *x = nb_constant(g, src_dt, transpose_2x ? 2 : 1, shape, src);
  if (transpose_2x) x = nb_transpose(g, x, 0, 1);
  nb_tensor *y = nb_cast(g, x, dst_dt);
  if (y == x) y = nb_contiguous(g, x);
  nb_tensor_set_output(y);
  oc_plan op;
  oc_compile(g, &op);
  TU_OK(nb_plan_run(op.p));
  size_t bytes = (size_t)n * nb_dtype_size(dst_dt);
  void *out = malloc(bytes);
  TU_OK(nb_plan_get(op.p, y, out, bytes));
  assert_int_equal(nb_tensor_dtype(y), dst_dt);
  oc_plan_free(&op);
  nb_graph_free(g);
  return out;
}

static void test_cast_float_to_int(void **state) {
  (void)state;
  /* truncation toward zero, then saturation at the target's range */
  const float x[] = {-2.7f,  -0.5f,   0.5f, 1.9999f, 2.5f,  254.9f, 255.5f,
                     300.0f, -300.0f, 3e9f, -3e9f,   1e20f, -1e20f};
  const int32_t w32[] = {-2,  0,    0,         1,         2,         254,      255,
                         300, -300, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN};
  const int64_t w64[] = {-2, 0, 0, 1, 2, 254, 255, 300, -300, 3000000000LL, -3000000000LL};
  const uint8_t w8[] = {0, 0, 0, 1, 2, 254, 255, 255, 0, 255, 0, 255, 0};
  int64_t n = 13;
  int32_t *y32 = run_cast(NB_F32, x, n, NB_I32, 0);
  for (int i = 0; i < n; i++)
    if (y32[i] != w32[i]) fail_msg("f32 %g -> i32: got %d, want %d", (double)x[i], y32[i], w32[i]);
  int64_t *y64 = run_cast(NB_F32, x, n, NB_I64, 0);
  for (int i = 0; i < 11; i++)
    if (y64[i] != w64[i])
      fail_msg("f32 %g -> i64: got %lld, want %lld", (double)x[i], (long long)y64[i],
               (long long)w64[i]);
  /* out of i64's range: pinned to the ends of the range, never wrapped */
  assert_true(y64[11] > 9000000000000000000LL);
  assert_true(y64[12] == INT64_MIN);
  uint8_t *y8 = run_cast(NB_F32, x, n, NB_U8, 0);
  for (int i = 0; i < n; i++)
    if (y8[i] != w8[i]) fail_msg("f32 %g -> u8: got %d, want %d", (double)x[i], y8[i], w8[i]);
  free(y32);
  free(y64);
  free(y8);
}

static void test_cast_int_to_float(void **state) {
  (void)state;
  const int32_t i32[] = {-5, 0, 7, INT32_MAX, INT32_MIN, 16777217};
  const float w32[] = {-5.0f, 0.0f, 7.0f, 2147483648.0f, -2147483648.0f, 16777216.0f};
  float *y = run_cast(NB_I32, i32, 6, NB_F32, 0);
  tu_assert_close("i32 -> f32", y, w32, 6, 0, 0);
  free(y);
  const uint8_t u8[] = {0, 1, 200, 255};
  const float w8[] = {0, 1, 200, 255};
  y = run_cast(NB_U8, u8, 4, NB_F32, 0);
  tu_assert_close("u8 -> f32", y, w8, 4, 0, 0);
  free(y);
  const int64_t i64[] = {-3, (int64_t)1 << 40, ((int64_t)1 << 53) + 1, -((int64_t)1 << 62)};
  const float w64[] = {-3.0f, 1099511627776.0f, 9007199254740992.0f, -4611686018427387904.0f};
  y = run_cast(NB_I64, i64, 4, NB_F32, 0);
  tu_assert_close("i64 -> f32", y, w64, 4, 0, 0);
  free(y);
  /* f16 / bf16 bit patterns: 1, 65504, smallest subnormal, -inf, -0 */
  const uint16_t h[] = {0x3c00, 0x7bff, 0x0001, 0xfc00, 0x8000, 0x3555};
  const float wh[] = {1.0f, 65504.0f, 5.9604644775390625e-8f, -INFINITY, -0.0f, 0.333251953125f};
  y = run_cast(NB_F16, h, 6, NB_F32, 0);
  tu_assert_close("f16 -> f32", y, wh, 6, 0, 0);
  assert_true(signbit(y[4]));
  free(y);
  const uint16_t bf[] = {0x3f80, 0x4049, 0xff80, 0x0001};
  const float wb[] = {1.0f, 3.140625f, -INFINITY, 9.18354961579912e-41f};
  y = run_cast(NB_BF16, bf, 4, NB_F32, 0);
  tu_assert_close("bf16 -> f32", y, wb, 4, 0, 0);
  free(y);
}

static void test_cast_int_to_int(void **state) {
  (void)state;
  const int64_t a[] = {3000000000LL, -3000000000LL, 5, 256, -1, 255};
  int32_t *b = run_cast(NB_I64, a, 6, NB_I32, 0);
  assert_int_equal(b[0], INT32_MAX);
  assert_int_equal(b[1], INT32_MIN);
  assert_int_equal(b[2], 5);
  free(b);
  uint8_t *c = run_cast(NB_I64, a, 6, NB_U8, 0);
  const uint8_t wc[] = {255, 0, 5, 255, 0, 255};
  assert_memory_equal(c, wc, 6);
  free(c);
  const int32_t d[] = {300, -5, 17, 0};
  uint8_t *e = run_cast(NB_I32, d, 4, NB_U8, 0);
  const uint8_t we[] = {255, 0, 17, 0};
  assert_memory_equal(e, we, 4);
  free(e);
  const uint8_t f[] = {255, 0, 7, 128};
  int64_t *h = run_cast(NB_U8, f, 4, NB_I64, 0);
  const int64_t wh[] = {255, 0, 7, 128};
  assert_memory_equal(h, wh, sizeof wh);
  free(h);
}

static void test_cast_strided(void **state) {
  (void)state;
  /* [2, 3] read through its transpose: [[0, 3], [1, 4], [2, 5]] */
  const int32_t a[] = {0, 1, 2, 3, 4, 5};
  const int64_t want[] = {0, 3, 1, 4, 2, 5};
  int64_t *b = run_cast(NB_I32, a, 6, NB_I64, 1);
  assert_memory_equal(b, want, sizeof want);
  free(b);
  /* same-dtype strided copies of 8-, 2- and 1-byte elements */
  const int64_t a64[] = {0, 1, 2, 3, 4, 5};
  int64_t *c = run_cast(NB_I64, a64, 6, NB_I64, 1);
  assert_memory_equal(c, want, sizeof want);
  free(c);
  const uint16_t a16[] = {0, 1, 2, 3, 4, 5};
  const uint16_t w16[] = {0, 3, 1, 4, 2, 5};
  uint16_t *d = run_cast(NB_F16, a16, 6, NB_F16, 1);
  assert_memory_equal(d, w16, sizeof w16);
  free(d);
  const uint8_t a8[] = {0, 1, 2, 3, 4, 5};
  const uint8_t w8[] = {0, 3, 1, 4, 2, 5};
  uint8_t *e = run_cast(NB_U8, a8, 6, NB_U8, 1);
  assert_memory_equal(e, w8, sizeof w8);
  free(e);
  const float af[] = {0.5f, 1.5f, -2.5f, 3.25f, 4.0f, 255.9f};
  const uint8_t wf[] = {0, 3, 1, 4, 0, 255};
  uint8_t *f = run_cast(NB_F32, af, 6, NB_U8, 1);
  assert_memory_equal(f, wf, sizeof wf);
  free(f);
}

static void test_cast_grad(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, (int64_t[]){3});
  nb_tensor_set_requires_grad(x, 1);
  /* through an integer: no gradient; through a float: a gradient */
  assert_ptr_equal(nb_cast(g, x, NB_F32), x);
  nb_tensor *y = nb_cast(g, nb_cast(g, x, NB_I32), NB_F32);
  TU_OK(nb_graph_backward(g, nb_sum(g, y, 0, NULL, 0)));
  assert_null(nb_graph_grad(g, x));
  nb_graph_free(g);
  g = nb_graph_new();
  x = nb_input(g, "x", NB_F32, 1, (int64_t[]){3});
  nb_tensor_set_requires_grad(x, 1);
  y = nb_cast(g, nb_cast(g, x, NB_BF16), NB_F32);
  TU_OK(nb_graph_backward(g, nb_sum(g, y, 0, NULL, 0)));
  assert_non_null(nb_graph_grad(g, x));
  assert_int_equal(nb_tensor_dtype(nb_graph_grad(g, x)), NB_F32);
  nb_graph_free(g);
}

/* ---- strided views bigger than one tile, against naive loops ----------------------- */

static float *run_graph_1(nb_graph *g, nb_tensor *y, nb_tensor *const *inputs,
                          const float *const *data, int n_in) {
  nb_tensor_set_output(y);
  oc_plan op;
  oc_compile(g, &op);
  for (int i = 0; i < n_in; i++)
    TU_OK(nb_plan_set_input(op.p, inputs[i], data[i],
                            (size_t)nb_tensor_numel(inputs[i]) * sizeof(float)));
  TU_OK(nb_plan_run(op.p));
  int64_t n = nb_tensor_numel(y);
  float *out = malloc((size_t)n * sizeof *out);
  TU_OK(nb_plan_get(op.p, y, out, (size_t)n * sizeof *out));
  oc_plan_free(&op);
  return out;
}

static void test_large_views(void **state) {
  (void)state;
  enum { M = 29, N = 37, K = 60 };
  float *A = tu_rand(M * N, -1, 1, 1), *B = tu_rand(N * K, -1, 1, 2), *C = tu_rand(N, -1, 1, 3);
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){M, N});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){N, K});
  nb_tensor *c = nb_input(g, "c", NB_F32, 2, (int64_t[]){N, 1});
  /* a fused chain (exp -> mul -> add) whose three inputs are all strided */
  nb_tensor *at = nb_transpose(g, a, 0, 1);
  nb_tensor *bs = nb_slice(g, b, 1, 1, 59, 2);
  nb_tensor *cb = nb_broadcast_to(g, c, 2, (int64_t[]){N, M});
  nb_tensor *y = nb_add(g, nb_mul(g, nb_exp(g, at), bs), cb);
  float *out = run_graph_1(g, y, (nb_tensor *[]){a, b, c}, (const float *[]){A, B, C}, 3);
  for (int i = 0; i < N; i++)
    for (int j = 0; j < M; j++) {
      float want = expf(A[j * N + i]) * B[i * K + 1 + 2 * j] + C[i];
      float got = out[i * M + j];
      if (fabsf(got - want) > 1e-5f + 1e-5f * fabsf(want))
        fail_msg("large view [%d, %d]: got %g, want %g", i, j, (double)got, (double)want);
    }
  free(out);
  nb_graph_free(g);

  /* 3-d permute against a broadcast row, and a slice of a transpose */
  enum { P = 6, Q = 9, R = 13 };
  float *D = tu_rand(P * Q * R, -1, 1, 4), *E = tu_rand(Q, -1, 1, 5);
  g = nb_graph_new();
  nb_tensor *d = nb_input(g, "d", NB_F32, 3, (int64_t[]){P, Q, R});
  nb_tensor *e = nb_input(g, "e", NB_F32, 1, (int64_t[]){Q});
  y = nb_sub(g, nb_sigmoid(g, nb_permute(g, d, (int[]){2, 0, 1})), e);
  out = run_graph_1(g, y, (nb_tensor *[]){d, e}, (const float *[]){D, E}, 2);
  for (int r = 0; r < R; r++)
    for (int p = 0; p < P; p++)
      for (int q = 0; q < Q; q++) {
        float want = 1.0f / (1.0f + expf(-D[(p * Q + q) * R + r])) - E[q];
        float got = out[(r * P + p) * Q + q];
        if (fabsf(got - want) > 1e-6f)
          fail_msg("permute [%d, %d, %d]: got %g, want %g", r, p, q, (double)got, (double)want);
      }
  free(out);
  nb_graph_free(g);
  free(A);
  free(B);
  free(C);
  free(D);
  free(E);
}

/* An intermediate read twice in one launch, once through a view: the
 * launch must not write its result over that intermediate. */
static void test_self_view_no_alias(void **state) {
  (void)state;
  enum { N = 24 };
  float *X = tu_rand(N * N, -1, 1, 6);
  for (int order = 0; order < 2; order++) {
    nb_graph *g = nb_graph_new();
    nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){N, N});
    nb_tensor *t = nb_exp(g, x);
    nb_tensor *tt = nb_transpose(g, t, 0, 1);
    nb_tensor *y = order ? nb_sub(g, tt, t) : nb_sub(g, t, tt);
    float *out = run_graph_1(g, y, &x, (const float *[]){X}, 1);
    for (int i = 0; i < N; i++)
      for (int j = 0; j < N; j++) {
        float d = expf(X[i * N + j]) - expf(X[j * N + i]);
        float want = order ? -d : d;
        if (fabsf(out[i * N + j] - want) > 1e-5f)
          fail_msg("order %d [%d, %d]: got %g, want %g", order, i, j, (double)out[i * N + j],
                   (double)want);
      }
    free(out);
    nb_graph_free(g);
  }
  free(X);
}

/* ---- bad input ------------------------------------------------------------------------ */

static void test_errors(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){3, 4});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){2, 4});
  oc_expect_error("add [3,4]+[2,4]", g, nb_add(g, a, b), NB_ERR_SHAPE,
                  OC_PARTS("add", "[3, 4]", "[2, 4]"));
  /* sticky: later failures keep the first message */
  const char *first = nb_graph_error(g);
  char saved[256];
  snprintf(saved, sizeof saved, "%s", first);
  assert_null(nb_relu(g, NULL));
  assert_null(nb_mul(g, NULL, a));
  assert_int_equal(nb_graph_status(g), NB_ERR_SHAPE);
  assert_string_equal(nb_graph_error(g), saved);
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  b = nb_input(g, "b", NB_F32, 2, (int64_t[]){3, 4});
  nb_tensor *c = nb_input(g, "c", NB_F32, 2, (int64_t[]){2, 4});
  oc_expect_error("where", g, nb_where(g, a, b, c), NB_ERR_SHAPE,
                  OC_PARTS("where", "[3]", "[3, 4]"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_I64, 2, (int64_t[]){2, 3});
  oc_expect_error("exp(i64)", g, nb_exp(g, a), NB_ERR_DTYPE, OC_PARTS("exp", "i64"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  b = nb_input(g, "b", NB_I32, 1, (int64_t[]){3});
  oc_expect_error("mul(f32, i32)", g, nb_mul(g, a, b), NB_ERR_DTYPE, OC_PARTS("mul", "i32"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_U8, 1, (int64_t[]){3});
  oc_expect_error("gelu(u8)", g, nb_gelu(g, a, 0), NB_ERR_DTYPE, OC_PARTS("gelu", "u8"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("add(NULL, a)", g, nb_add(g, NULL, a), NB_ERR_INVALID_ARG,
                  OC_PARTS("add", "NULL"));
  nb_graph_free(g);

  g = nb_graph_new();
  oc_expect_error("tanh(NULL)", g, nb_tanh(g, NULL), NB_ERR_INVALID_ARG, OC_PARTS("tanh", "NULL"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("clamp lo > hi", g, nb_clamp(g, a, 1.0f, 0.0f), NB_ERR_INVALID_ARG,
                  OC_PARTS("clamp"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("softplus beta 0", g, nb_softplus(g, a, 0.0f, 20.0f), NB_ERR_INVALID_ARG,
                  OC_PARTS("softplus", "beta"));
  nb_graph_free(g);

  g = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("cast to 99", g, nb_cast(g, a, (nb_dtype)99), NB_ERR_DTYPE, OC_PARTS("cast"));
  nb_graph_free(g);

  /* inputs from another graph */
  g = nb_graph_new();
  nb_graph *other = nb_graph_new();
  a = nb_input(g, "a", NB_F32, 1, (int64_t[]){3});
  b = nb_input(other, "b", NB_F32, 1, (int64_t[]){3});
  oc_expect_error("add across graphs", g, nb_add(g, a, b), NB_ERR_INVALID_ARG,
                  OC_PARTS("add", "different graph"));
  nb_graph_free(other);
  nb_graph_free(g);

  /* no graph at all: NULL, no crash */
  assert_null(nb_add(NULL, NULL, NULL));
  assert_null(nb_exp(NULL, NULL));
}

/* ---- zero-size tensors ------------------------------------------------------------------ */

static void test_zero_size(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, (int64_t[]){0, 3});
  nb_tensor *b = nb_input(g, "b", NB_F32, 2, (int64_t[]){0, 3});
  nb_tensor *r = nb_input(g, "r", NB_F32, 1, (int64_t[]){3});
  nb_tensor *e = nb_input(g, "e", NB_F32, 2, (int64_t[]){2, 0});
  nb_tensor *f = nb_input(g, "f", NB_F32, 2, (int64_t[]){2, 1});
  nb_tensor_set_requires_grad(r, 1);
  nb_tensor *y0 = nb_add(g, a, b);
  nb_tensor *y1 = nb_mul(g, nb_exp(g, a), r);            /* [0, 3] x [3] */
  nb_tensor *y3 = nb_where(g, e, f, nb_scalar(g, 1.0f)); /* [2, 0] */
  assert_int_equal(nb_tensor_ndim(y0), 2);
  assert_int_equal(nb_tensor_shape(y0)[0], 0);
  assert_int_equal(nb_tensor_shape(y1)[1], 3);
  assert_int_equal(nb_tensor_numel(y3), 0);
  /* the gradient of r sums over the empty axis: zeros */
  TU_OK(nb_graph_backward(g, nb_sum(g, y1, 0, NULL, 0)));
  nb_tensor *gr = nb_graph_grad(g, r);
  assert_non_null(gr);
  nb_tensor_set_output(y0);
  nb_tensor_set_output(y3);
  nb_tensor_set_output(gr);
  oc_plan op;
  oc_compile(g, &op);
  float rv[3] = {1, 2, 3}, fv[2] = {4, 5};
  TU_OK(nb_plan_set_input(op.p, a, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, b, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, e, NULL, 0));
  TU_OK(nb_plan_set_input(op.p, r, rv, sizeof rv));
  TU_OK(nb_plan_set_input(op.p, f, fv, sizeof fv));
  TU_OK(nb_plan_run(op.p));
  float gv[3] = {7, 7, 7};
  TU_OK(nb_plan_get(op.p, gr, gv, sizeof gv));
  tu_assert_close("grad over empty axis", gv, (float[]){0, 0, 0}, 3, 0, 0);
  TU_OK(nb_plan_get(op.p, y0, NULL, 0));
  oc_plan_free(&op);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest plain[] = {
      cmocka_unit_test(test_compare_zero_grad),
      cmocka_unit_test(test_where_cond_no_grad),
      cmocka_unit_test(test_sign_no_grad),
      cmocka_unit_test(test_cast_float_to_int),
      cmocka_unit_test(test_cast_int_to_float),
      cmocka_unit_test(test_cast_int_to_int),
      cmocka_unit_test(test_cast_strided),
      cmocka_unit_test(test_cast_grad),
      cmocka_unit_test(test_large_views),
      cmocka_unit_test(test_self_view_no_alias),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_zero_size),
  };
  return oc_main("elementwise", plain, sizeof plain / sizeof plain[0], cases,
                 sizeof cases / sizeof cases[0]);
}
