/* Core: dtypes and conversions, half precision round trips, RNG, shapes,
 * zero-copy views, and the compiler's fusion and memory planning. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static void test_dtype_table(void **state) {
  (void)state;
  assert_int_equal(nb_dtype_size(NB_F32), 4);
  assert_int_equal(nb_dtype_size(NB_F16), 2);
  assert_int_equal(nb_dtype_size(NB_BF16), 2);
  assert_int_equal(nb_dtype_size(NB_I32), 4);
  assert_int_equal(nb_dtype_size(NB_I64), 8);
  assert_int_equal(nb_dtype_size(NB_U8), 1);
  assert_int_equal(nb_dtype_size((nb_dtype)42), 0);
  assert_string_equal(nb_dtype_name(NB_BF16), "bf16");
  nb_dtype dt;
  assert_int_equal(nb_dtype_parse("float16", &dt), NB_OK);
  assert_int_equal(dt, NB_F16);
  assert_int_not_equal(nb_dtype_parse("f64", &dt), NB_OK);
  assert_non_null(strstr(nb_last_error(), "f64"));
}

/* Every finite half is exactly representable in f32: all 65536 bit patterns
 * must survive f16 -> f32 -> f16 (NaNs stay NaN). */
static void test_f16_roundtrip_all(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = nb_f16_to_f32((uint16_t)h);
    uint16_t back = nb_f32_to_f16(f);
    if (isnan(f))
      assert_true(isnan(nb_f16_to_f32(back)));
    else
      assert_int_equal(back, h);
  }
}

static void test_bf16_roundtrip_all(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = nb_bf16_to_f32((uint16_t)h);
    uint16_t back = nb_f32_to_bf16(f);
    if (isnan(f))
      assert_true(isnan(nb_bf16_to_f32(back)));
    else
      assert_int_equal(back, h);
  }
}

/* Known values, round-to-nearest-even, overflow, subnormals. */
static void test_half_rounding(void **state) {
  (void)state;
  assert_int_equal(nb_f32_to_f16(1.0f), 0x3c00);
  assert_int_equal(nb_f32_to_f16(-2.0f), 0xc000);
  assert_int_equal(nb_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(nb_f32_to_f16(65536.0f), 0x7c00);      /* overflow -> inf */
  assert_int_equal(nb_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
  assert_int_equal(nb_f32_to_f16(1e-9f), 0x0000);
  /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0) */
  assert_int_equal(nb_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  assert_int_equal(nb_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  assert_int_equal(nb_f32_to_bf16(1.0f), 0x3f80);
  assert_int_equal(nb_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie to even */
  assert_int_equal(nb_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-16f), 0x3f81);
  assert_true(isinf(nb_f16_to_f32(0x7c00)));
}

static void test_convert(void **state) {
  (void)state;
  float src[6] = {1.5f, -2.7f, 300.0f, -1e10f, 0.49f, NAN};
  int32_t i32[6];
  uint8_t u8[6];
  assert_int_equal(nb_convert(src, NB_F32, i32, NB_I32, 6), NB_OK);
  assert_int_equal(i32[0], 1);
  assert_int_equal(i32[1], -2);
  assert_int_equal(i32[3], INT32_MIN); /* saturates */
  assert_int_equal(i32[5], 0);         /* NaN -> 0 */
  assert_int_equal(nb_convert(src, NB_F32, u8, NB_U8, 6), NB_OK);
  assert_int_equal(u8[2], 255);
  assert_int_equal(u8[1], 0);
  uint16_t h[6];
  float back[6];
  assert_int_equal(nb_convert(src, NB_F32, h, NB_F16, 6), NB_OK);
  assert_int_equal(nb_convert(h, NB_F16, back, NB_F32, 6), NB_OK);
  assert_float_equal(back[0], 1.5f, 0);
  assert_true(isinf(back[3]));
  assert_int_not_equal(nb_convert(src, (nb_dtype)77, h, NB_F16, 1), NB_OK);
}

static void test_rng(void **state) {
  (void)state;
  nb_rng a, b;
  nb_rng_seed(&a, 42);
  nb_rng_seed(&b, 42);
  for (int i = 0; i < 100; i++) assert_true(nb_rng_next(&a) == nb_rng_next(&b));
  /* normal draws: mean ~0, variance ~1 */
  double s = 0, s2 = 0;
  for (int i = 0; i < 20000; i++) {
    double v = nb_rng_normal(&a);
    s += v;
    s2 += v * v;
  }
  assert_true(fabs(s / 20000) < 0.03);
  assert_true(fabs(s2 / 20000 - 1.0) < 0.05);
  assert_true(nb_hash_uniform(7, 3) == nb_hash_uniform(7, 3));
  assert_true(nb_hash_uniform(7, 3) != nb_hash_uniform(7, 4));
}

static void test_shape_str(void **state) {
  (void)state;
  char buf[64];
  int64_t s[3] = {2, 3, 4};
  assert_string_equal(nb_shape_str(3, s, buf, sizeof buf), "[2, 3, 4]");
  assert_string_equal(nb_shape_str(0, s, buf, sizeof buf), "[]");
  assert_int_equal(nb_shape_numel(3, s), 24);
}

/* nb_tensor_input_count / nb_tensor_input: from a node to the nodes it
 * reads, in argument order; nothing for leaves, NULL, or an index outside. */
static void test_node_inputs(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  int64_t s[2] = {2, 3};
  nb_tensor *a = nb_input(g, "a", NB_F32, 2, s), *b = nb_input(g, "b", NB_F32, 2, s);
  nb_tensor *c = nb_sub(g, b, a), *t = nb_transpose(g, c, 0, 1);
  TU_OK(nb_graph_status(g));
  assert_int_equal(nb_tensor_input_count(a), 0);
  assert_null(nb_tensor_input(a, 0));
  assert_int_equal(nb_tensor_input_count(c), 2);
  assert_ptr_equal(nb_tensor_input(c, 0), b);
  assert_ptr_equal(nb_tensor_input(c, 1), a);
  assert_null(nb_tensor_input(c, 2));
  assert_null(nb_tensor_input(c, -1));
  assert_string_equal(nb_tensor_op_name(t), "permute");
  assert_int_equal(nb_tensor_input_count(t), 1);
  assert_ptr_equal(nb_tensor_input(t, 0), c);
  assert_int_equal(nb_tensor_input_count(NULL), 0);
  assert_null(nb_tensor_input(NULL, 0));
  nb_graph_free(g);
}

/* Views share storage: slicing, transposing and broadcasting add no kernel,
 * and the values read through them are the right elements. */
static void test_views_no_copy(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  int64_t shape[3] = {2, 3, 4};
  float data[24];
  for (int i = 0; i < 24; i++) data[i] = (float)i;
  nb_tensor *x = nb_input(g, "x", NB_F32, 3, shape);
  nb_tensor *t = nb_permute(g, x, (int[]){2, 0, 1}); /* [4, 2, 3] */
  nb_tensor *s = nb_slice(g, t, 0, 1, 4, 2);         /* rows 1 and 3: [2, 2, 3] */
  assert_false(nb_tensor_is_contiguous(s));
  int64_t r_shape[2] = {6, 4};
  nb_tensor *r = nb_reshape(g, x, 2, r_shape); /* contiguous: a view */
  assert_true(nb_tensor_is_contiguous(r));
  nb_tensor *y = nb_add(g, s, nb_scalar(g, 0.5f));
  nb_tensor_set_output(y);
  nb_tensor_set_output(r);
  nb_tensor_set_output(s);
  assert_int_equal(nb_graph_status(g), NB_OK);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_stats stats = nb_plan_get_stats(p);
  assert_int_equal(stats.kernels, 1); /* only the add */
  TU_OK(nb_plan_set_input(p, x, data, sizeof data));
  TU_OK(nb_plan_run(p));
  float out[12], view[12], flat[24];
  TU_OK(nb_plan_get(p, y, out, sizeof out));
  TU_OK(nb_plan_get(p, s, view, sizeof view));
  TU_OK(nb_plan_get(p, r, flat, sizeof flat));
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < 3; j++) {
        int col = 1 + 2 * k; /* x[i, j, col] */
        float want = data[i * 12 + j * 4 + col];
        assert_float_equal(view[k * 6 + i * 3 + j], want, 0);
        assert_float_equal(out[k * 6 + i * 3 + j], want + 0.5f, 0);
      }
  for (int i = 0; i < 24; i++) assert_float_equal(flat[i], data[i], 0);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* A chain of elementwise ops compiles to one fused kernel, with and without
 * fusion giving identical values; the unfused plan reuses memory in place. */
static nb_tensor *chain(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_tensor *h = nb_mul(g, nb_add(g, x[0], x[1]), nb_scalar(g, 2.0f));
  h = nb_tanh(g, nb_sub(g, h, nb_exp(g, x[0])));
  return nb_sigmoid(g, nb_add(g, h, x[1]));
}

static void run_chain(const nb_compile_options *opt, float *out, nb_plan_stats *stats) {
  nb_graph *g = nb_graph_new();
  int64_t shape[2] = {37, 29};
  nb_tensor *x[2] = {nb_input(g, "a", NB_F32, 2, shape), nb_input(g, "b", NB_F32, 1, shape + 1)};
  nb_tensor *y = chain(g, x, NULL);
  nb_tensor_set_output(y);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, opt, &p));
  float *a = tu_rand(37 * 29, -1, 1, 5), *b = tu_rand(29, -1, 1, 6);
  TU_OK(nb_plan_set_input(p, x[0], a, 37 * 29 * sizeof(float)));
  TU_OK(nb_plan_set_input(p, x[1], b, 29 * sizeof(float)));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, y, out, 37 * 29 * sizeof(float)));
  *stats = nb_plan_get_stats(p);
  for (int i = 0; i < 37 * 29; i++) {
    float h = tanhf((a[i] + b[i % 29]) * 2.0f - expf(a[i]));
    assert_float_equal(out[i], 1.0f / (1.0f + expf(-(h + b[i % 29]))), 1e-6);
  }
  free(a);
  free(b);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

static void test_fusion(void **state) {
  (void)state;
  float fused[37 * 29], plain[37 * 29];
  nb_plan_stats sf, sp;
  nb_compile_options opt = nb_compile_defaults();
  run_chain(&opt, fused, &sf);
  opt.fuse = 0;
  run_chain(&opt, plain, &sp);
  assert_int_equal(sf.kernels, 1);
  assert_int_equal(sf.fused_groups, 1);
  assert_int_equal(sp.kernels, 7);
  assert_true(sp.inplace > 0);
  assert_memory_equal(fused, plain, sizeof fused);
}

/* The planner reuses memory: a long chain of unfusable ops needs only a few
 * live buffers, and disabling reuse gives the naive sum. */
static void test_memplan_reuse(void **state) {
  (void)state;
  for (int reuse = 0; reuse < 2; reuse++) {
    nb_graph *g = nb_graph_new();
    int64_t shape[2] = {64, 64};
    nb_tensor *x = nb_input(g, "x", NB_F32, 2, shape);
    nb_tensor *h = x;
    for (int i = 0; i < 10; i++) h = nb_matmul(g, h, x);
    nb_tensor_set_output(h);
    nb_backend *be;
    nb_state *st;
    nb_plan *p;
    TU_OK(nb_backend_new("cpu", &be));
    TU_OK(nb_state_new(be, &st));
    nb_compile_options opt = nb_compile_defaults();
    opt.reuse_memory = reuse;
    TU_OK(nb_compile(g, be, st, &opt, &p));
    nb_plan_stats s = nb_plan_get_stats(p);
    assert_int_equal(s.naive_bytes, 10 * 64 * 64 * 4);
    if (reuse)
      assert_true(s.arena_bytes <= 2 * 64 * 64 * 4);
    else
      assert_int_equal(s.arena_bytes, s.naive_bytes);
    float *xv = tu_rand(64 * 64, -0.1f, 0.1f, 3), *out = malloc(64 * 64 * sizeof(float));
    TU_OK(nb_plan_set_input(p, x, xv, 64 * 64 * sizeof(float)));
    TU_OK(nb_plan_run(p));
    TU_OK(nb_plan_get(p, h, out, 64 * 64 * sizeof(float)));
    assert_true(isfinite(out[0]));
    free(xv);
    free(out);
    nb_plan_free(p);
    nb_state_free(st);
    nb_backend_free(be);
    nb_graph_free(g);
  }
}

/* Variables persist in the state across runs and plans; assigns see old
 * values during the step (x += 1 twice gives 2, and the read in the same
 * step saw the value before the update). */
static void test_variables_and_assign(void **state) {
  (void)state;
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t shape[1] = {3};
  nb_init init = {NB_INIT_CONSTANT, 5.0f, 0, 0};
  nb_tensor *v = nb_variable(g, "counter", NB_F32, 1, shape, init);
  nb_tensor *seen = nb_mul(g, v, nb_scalar(g, 1.0f));
  nb_tensor_set_output(seen);
  nb_assign(g, v, nb_add(g, v, nb_scalar(g, 1.0f)));
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float out[3], now[3];
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, seen, out, sizeof out));
  assert_float_equal(out[0], 5.0f, 0);
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, seen, out, sizeof out));
  assert_float_equal(out[0], 6.0f, 0);
  TU_OK(nb_state_read(st, "counter", now, sizeof now));
  assert_float_equal(now[2], 7.0f, 0);
  assert_int_equal(nb_plan_step(p), 2);
  /* a second graph binds the same variable by name */
  nb_graph *g2 = nb_graph_new();
  nb_tensor *v2 = nb_variable(g2, "counter", NB_F32, 1, shape, init);
  nb_tensor *dbl = nb_mul(g2, v2, nb_scalar(g2, 2.0f));
  nb_tensor_set_output(dbl);
  nb_plan *p2;
  TU_OK(nb_compile(g2, be, st, NULL, &p2));
  TU_OK(nb_plan_run(p2));
  TU_OK(nb_plan_get(p2, dbl, out, sizeof out));
  assert_float_equal(out[1], 14.0f, 0);
  nb_plan_free(p);
  nb_plan_free(p2);
  nb_graph_free(g);
  nb_graph_free(g2);
  nb_state_free(st);
  nb_backend_free(be);
}

/* A tensor used twice accumulates both gradient contributions. */
static nb_tensor *reuse(nb_graph *g, nb_tensor **x, void *ctx) {
  (void)ctx;
  nb_tensor *a = nb_mul(g, x[0], x[0]);
  return nb_add(g, nb_mul(g, a, x[0]), a); /* x^3 + x^2: grad 3x^2 + 2x */
}

static void test_grad_accumulates(void **state) {
  (void)state;
  float xv[4] = {0.5f, -1.5f, 2.0f, 0.25f};
  tu_input in = {.ndim = 1, .shape = {4}, .data = xv, .requires_grad = 1};
  tu_gradcheck("reuse", reuse, NULL, 1, &in, 1e-3, 1e-3, 1e-3);
  nb_graph *g = nb_graph_new();
  int64_t shape[1] = {4};
  nb_tensor *x = nb_input(g, "x", NB_F32, 1, shape);
  nb_tensor_set_requires_grad(x, 1);
  nb_tensor *y = reuse(g, &x, NULL);
  TU_OK(nb_graph_backward(g, nb_sum(g, y, 0, NULL, 0)));
  nb_tensor *dx = nb_graph_grad(g, x);
  assert_non_null(dx);
  nb_tensor_set_output(dx);
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_plan_set_input(p, x, xv, sizeof xv));
  TU_OK(nb_plan_run(p));
  float d[4];
  TU_OK(nb_plan_get(p, dx, d, sizeof d));
  for (int i = 0; i < 4; i++) assert_float_equal(d[i], 3 * xv[i] * xv[i] + 2 * xv[i], 1e-5);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtype_table),
      cmocka_unit_test(test_f16_roundtrip_all),
      cmocka_unit_test(test_bf16_roundtrip_all),
      cmocka_unit_test(test_half_rounding),
      cmocka_unit_test(test_convert),
      cmocka_unit_test(test_rng),
      cmocka_unit_test(test_shape_str),
      cmocka_unit_test(test_views_no_copy),
      cmocka_unit_test(test_fusion),
      cmocka_unit_test(test_memplan_reuse),
      cmocka_unit_test(test_variables_and_assign),
      cmocka_unit_test(test_grad_accumulates),
      cmocka_unit_test(test_node_inputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
