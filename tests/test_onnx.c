/* ONNX import: the protobuf wire reader on hand-built bytes, TensorProto
 * decoding, a small model built here and run against a naive reference, the
 * all-at-once report of unsupported ops, and corrupt files (every truncation,
 * every byte overwritten) that must give errors, never crashes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ---- a tiny protobuf writer for building test inputs ------------------------------ */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void put_varint(buf *b, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    tmp[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) tmp[n] |= 0x80;
    n++;
  } while (v);
  put(b, tmp, n);
}

static void put_tag(buf *b, uint32_t field, int wire) {
  put_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}

static void put_int(buf *b, uint32_t field, int64_t v) {
  put_tag(b, field, NB_PB_VARINT);
  put_varint(b, (uint64_t)v);
}

static void put_bytes(buf *b, uint32_t field, const void *data, size_t n) {
  put_tag(b, field, NB_PB_LEN);
  put_varint(b, n);
  put(b, data, n);
}

static void put_str(buf *b, uint32_t field, const char *s) { put_bytes(b, field, s, strlen(s)); }

static void put_msg(buf *b, uint32_t field, buf *sub) {
  put_bytes(b, field, sub->p, sub->n);
  free(sub->p);
  *sub = (buf){0};
}

static void put_f32(buf *b, uint32_t field, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
  put_tag(b, field, NB_PB_FIXED32);
  put(b, le, 4);
}

/* A float TensorProto with raw_data. */
static void tensor_f32(buf *t, const char *name, int ndim, const int64_t *dims, const float *v) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    put_int(t, 1, dims[i]);
    n *= dims[i];
  }
  put_int(t, 2, NB_ONNX_FLOAT);
  put_str(t, 8, name);
  put_bytes(t, 9, v, (size_t)n * sizeof(float)); /* little-endian host */
}

/* ValueInfoProto of a float tensor; dims < 0 are written as dim_param. */
static void value_info(buf *vi, const char *name, int ndim, const int64_t *dims) {
  buf shape = {0}, tensor = {0}, type = {0};
  for (int i = 0; i < ndim; i++) {
    buf dim = {0};
    if (dims[i] >= 0)
      put_int(&dim, 1, dims[i]);
    else
      put_str(&dim, 2, "batch");
    put_msg(&shape, 1, &dim);
  }
  put_int(&tensor, 1, NB_ONNX_FLOAT);
  put_msg(&tensor, 2, &shape);
  put_msg(&type, 1, &tensor);
  put_str(vi, 1, name);
  put_msg(vi, 2, &type);
}

static void node(buf *g, const char *op, int nin, const char *const *ins, const char *out,
                 buf *attrs) {
  buf n = {0};
  for (int i = 0; i < nin; i++) put_str(&n, 1, ins[i]);
  put_str(&n, 2, out);
  put_str(&n, 4, op);
  if (attrs && attrs->n) put(&n, attrs->p, attrs->n); /* already tagged AttributeProtos */
  if (attrs) {
    free(attrs->p);
    *attrs = (buf){0};
  }
  put_msg(g, 1, &n);
}

/* ---- wire format ----------------------------------------------------------------- */

static void test_varints(void **state) {
  (void)state;
  const uint64_t vals[] = {0,
                           1,
                           127,
                           128,
                           300,
                           16383,
                           16384,
                           UINT32_MAX,
                           (uint64_t)INT64_MAX,
                           (uint64_t)-1,
                           (uint64_t)INT64_MIN,
                           (uint64_t)-300};
  for (size_t k = 0; k < sizeof vals / sizeof *vals; k++) {
    buf b = {0};
    put_varint(&b, vals[k]);
    if ((int64_t)vals[k] < 0) assert_int_equal(b.n, 10); /* negatives take 10 bytes */
    nb_pb_reader r;
    nb_pb_init(&r, b.p, b.n, "v.pb");
    uint64_t got = 0;
    TU_OK(nb_pb_read_varint(&r, &got));
    assert_true(got == vals[k]);
    assert_true(nb_pb_done(&r));
    /* every truncation is an error that names the file and offset */
    for (size_t cut = 0; cut < b.n; cut++) {
      nb_pb_init(&r, b.p, cut, "v.pb");
      assert_int_equal(nb_pb_read_varint(&r, &got), NB_ERR_FORMAT);
      assert_non_null(strstr(nb_last_error(), "v.pb: byte 0"));
    }
    free(b.p);
  }
  /* 11 bytes, and a 10th byte with more than bit 63 */
  uint8_t longv[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  uint8_t over[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  nb_pb_reader r;
  uint64_t v;
  nb_pb_init(&r, longv, sizeof longv, "x");
  assert_int_equal(nb_pb_read_varint(&r, &v), NB_ERR_FORMAT);
  nb_pb_init(&r, over, sizeof over, "x");
  assert_int_equal(nb_pb_read_varint(&r, &v), NB_ERR_FORMAT);
}

static void test_fixed_tags_and_lengths(void **state) {
  (void)state;
  uint8_t f[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  nb_pb_reader r;
  uint32_t v32;
  uint64_t v64;
  nb_pb_init(&r, f, 8, "f");
  TU_OK(nb_pb_read_fixed32(&r, &v32));
  assert_true(v32 == 0x04030201u);
  assert_int_equal(nb_pb_read_fixed64(&r, &v64), NB_ERR_FORMAT); /* 4 bytes left */
  nb_pb_init(&r, f, 8, "f");
  TU_OK(nb_pb_read_fixed64(&r, &v64));
  assert_true(v64 == 0x0807060504030201ull);

  /* wire types 3/4 (groups) and 6/7 are rejected, field 0 too */
  const uint8_t bad_tags[][1] = {{0x0b}, {0x0c}, {0x0e}, {0x07}};
  for (size_t i = 0; i < 4; i++) {
    uint32_t field;
    int wire;
    nb_pb_init(&r, bad_tags[i], 1, "t");
    assert_int_equal(nb_pb_read_tag(&r, &field, &wire), NB_ERR_FORMAT);
  }

  /* a length past the end names the offset of the length */
  uint8_t lenbad[] = {0x0a, 0x05, 'a', 'b'};
  uint32_t field;
  int wire;
  nb_pb_init(&r, lenbad, sizeof lenbad, "len.pb");
  TU_OK(nb_pb_read_tag(&r, &field, &wire));
  assert_int_equal(field, 1);
  assert_int_equal(wire, NB_PB_LEN);
  const uint8_t *p;
  size_t n;
  assert_int_equal(nb_pb_read_bytes(&r, &p, &n), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "len.pb: byte 1"));

  /* nested readers keep file offsets */
  uint8_t nested[] = {0x12, 0x02, 0x08, 0x80};
  nb_pb_reader sub;
  nb_pb_init(&r, nested, sizeof nested, "nest.pb");
  TU_OK(nb_pb_read_tag(&r, &field, &wire));
  TU_OK(nb_pb_read_sub(&r, &sub));
  TU_OK(nb_pb_read_tag(&sub, &field, &wire));
  assert_int_equal(nb_pb_read_varint(&sub, &v64), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "nest.pb: byte 3"));

  /* skipping every wire type */
  buf b = {0};
  put_int(&b, 1, 5);
  put_f32(&b, 2, 1.5f);
  put_tag(&b, 3, NB_PB_FIXED64);
  put(&b, f, 8);
  put_str(&b, 4, "skip me");
  put_int(&b, 5, 42);
  nb_pb_init(&r, b.p, b.n, "skip");
  int64_t last = -1;
  while (!nb_pb_done(&r)) {
    TU_OK(nb_pb_read_tag(&r, &field, &wire));
    if (field == 5)
      TU_OK(nb_pb_read_varint(&r, &v64)), last = (int64_t)v64;
    else
      TU_OK(nb_pb_skip(&r, wire));
  }
  assert_int_equal(last, 42);
  free(b.p);
}

/* ---- TensorProto ---------------------------------------------------------------- */

static void test_tensor_packed_and_unpacked(void **state) {
  (void)state;
  /* int64 dims unpacked, int64_data packed with negatives */
  buf t = {0}, packed = {0};
  put_str(&t, 8, "ints"); /* first, so only the full buffer is a complete tensor */
  put_int(&t, 1, 2);
  put_int(&t, 1, 3);
  put_int(&t, 2, NB_ONNX_INT64);
  const int64_t want[6] = {0, -1, 5, INT64_MIN, INT64_MAX, -300};
  for (int i = 0; i < 6; i++) put_varint(&packed, (uint64_t)want[i]);
  put_msg(&t, 7, &packed);
  nb_onnx_tensor *x;
  TU_OK(nb_onnx_tensor_decode(t.p, t.n, "ints.pb", &x));
  assert_string_equal(x->name, "ints");
  assert_int_equal(x->ndim, 2);
  assert_int_equal(x->dims[1], 3);
  assert_null(x->f32);
  for (int i = 0; i < 6; i++) assert_true(x->i64[i] == want[i]);
  nb_onnx_tensor_free(x);
  /* every truncation fails cleanly: mid-field, or at a field boundary with
   * fewer values than the shape needs */
  for (size_t cut = 0; cut < t.n; cut++) {
    assert_int_not_equal(nb_onnx_tensor_decode(t.p, cut, "ints.pb", &x), NB_OK);
    assert_null(x);
  }
  free(t.p);

  /* packed dims, packed float_data; int32 data with a negative value */
  buf f = {0};
  put_varint(&packed, 2);
  put_varint(&packed, 2);
  put_msg(&f, 1, &packed);
  put_int(&f, 2, NB_ONNX_FLOAT);
  const float fv[4] = {1.5f, -2.0f, 0.0f, 3.25f};
  put_bytes(&f, 4, fv, sizeof fv);
  TU_OK(nb_onnx_tensor_decode(f.p, f.n, "f.pb", &x));
  assert_int_equal(x->numel, 4);
  for (int i = 0; i < 4; i++) assert_true(x->f32[i] == fv[i]);
  nb_onnx_tensor_free(x);
  free(f.p);

  buf i32 = {0};
  put_int(&i32, 1, 3);
  put_int(&i32, 2, NB_ONNX_INT32);
  put_varint(&packed, (uint64_t)(int64_t)-7); /* int32 negatives are sign-extended to 10 bytes */
  put_varint(&packed, 7);
  put_varint(&packed, 0);
  put_msg(&i32, 5, &packed);
  TU_OK(nb_onnx_tensor_decode(i32.p, i32.n, "i32.pb", &x));
  assert_true(x->i64[0] == -7 && x->i64[1] == 7 && x->i64[2] == 0);
  nb_onnx_tensor_free(x);
  free(i32.p);

  /* raw float16 and bool */
  buf h = {0};
  put_int(&h, 1, 2);
  put_int(&h, 2, NB_ONNX_FLOAT16);
  uint16_t hv[2] = {nb_f32_to_f16(0.5f), nb_f32_to_f16(-3.0f)};
  put_bytes(&h, 9, hv, sizeof hv);
  TU_OK(nb_onnx_tensor_decode(h.p, h.n, "h.pb", &x));
  assert_true(x->f32[0] == 0.5f && x->f32[1] == -3.0f);
  nb_onnx_tensor_free(x);
  free(h.p);
}

static void test_tensor_errors(void **state) {
  (void)state;
  nb_onnx_tensor *x;
  /* shape says 4 floats, data holds 3 */
  buf t = {0};
  put_int(&t, 1, 4);
  put_int(&t, 2, NB_ONNX_FLOAT);
  const float v[3] = {1, 2, 3};
  put_bytes(&t, 9, v, sizeof v);
  assert_int_equal(nb_onnx_tensor_decode(t.p, t.n, "short.pb", &x), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "short.pb"));
  free(t.p);
  /* a huge shape with no data must not allocate it */
  buf big = {0};
  put_int(&big, 1, (int64_t)1 << 40);
  put_int(&big, 1, (int64_t)1 << 40);
  put_int(&big, 2, NB_ONNX_FLOAT);
  assert_int_equal(nb_onnx_tensor_decode(big.p, big.n, "big.pb", &x), NB_ERR_FORMAT);
  free(big.p);
  /* nine dims */
  buf nine = {0};
  for (int i = 0; i < 9; i++) put_int(&nine, 1, 1);
  put_int(&nine, 2, NB_ONNX_FLOAT);
  assert_int_equal(nb_onnx_tensor_decode(nine.p, nine.n, "nine.pb", &x), NB_ERR_FORMAT);
  free(nine.p);
  /* strings are reported as unsupported (external data: test_onnx_external.c) */
  buf s = {0};
  put_int(&s, 1, 1);
  put_int(&s, 2, NB_ONNX_STRING);
  put_str(&s, 6, "hello");
  assert_int_equal(nb_onnx_tensor_decode(s.p, s.n, "s.pb", &x), NB_ERR_UNSUPPORTED);
  free(s.p);
  assert_int_equal(nb_onnx_tensor_load("/nonexistent/x.pb", &x), NB_ERR_IO);
}

/* ---- a small model ---------------------------------------------------------------- */

/* Y = Relu(MatMul(X, W) + B) * 2, then Softmax over the last axis, with the
 * batch dimension symbolic; B comes from a Constant node. */
static void make_model(buf *model) {
  buf g = {0}, sub = {0}, attrs = {0};
  static const float W[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.0f};
  static const float B[2] = {0.1f, -0.2f};
  const int64_t wd[2] = {3, 2}, bd[1] = {2};
  /* Constant B: attribute 'value' (tensor, type 4) */
  buf at = {0};
  put_str(&at, 1, "value");
  tensor_f32(&sub, "", 1, bd, B);
  put_msg(&at, 5, &sub);
  put_int(&at, 20, 4);
  put_msg(&attrs, 5, &at);
  node(&g, "Constant", 0, NULL, "B", &attrs);
  node(&g, "MatMul", 2, (const char *[]){"X", "W"}, "XW", NULL);
  node(&g, "Add", 2, (const char *[]){"XW", "B"}, "Z", NULL);
  node(&g, "Relu", 1, (const char *[]){"Z"}, "R", NULL);
  node(&g, "Mul", 2, (const char *[]){"R", "two"}, "R2", NULL);
  put_str(&at, 1, "axis");
  put_int(&at, 3, -1);
  put_int(&at, 20, 2);
  put_msg(&attrs, 5, &at);
  node(&g, "Softmax", 1, (const char *[]){"R2"}, "Y", &attrs);
  put_str(&g, 2, "tiny");
  tensor_f32(&sub, "W", 2, wd, W);
  put_msg(&g, 5, &sub);
  const float two = 2.0f;
  tensor_f32(&sub, "two", 0, NULL, &two);
  put_msg(&g, 5, &sub);
  const int64_t xd[2] = {-1, 3}, yd[2] = {-1, 2};
  value_info(&sub, "X", 2, xd);
  put_msg(&g, 11, &sub);
  value_info(&sub, "W", 2, wd); /* initializers may be listed as inputs too */
  put_msg(&g, 11, &sub);
  value_info(&sub, "Y", 2, yd);
  put_msg(&g, 12, &sub);
  put_int(model, 1, 8);
  buf ops = {0};
  put_str(&ops, 1, "");
  put_int(&ops, 2, 17);
  put_msg(model, 8, &ops);
  put_str(model, 2, "nabla-test");
  put_msg(model, 7, &g);
}

static void test_small_model(void **state) {
  (void)state;
  buf mb = {0};
  make_model(&mb);
  nb_onnx_model *m;
  TU_OK(nb_onnx_load_buffer(mb.p, mb.n, "tiny.onnx", &m));
  assert_int_equal(nb_onnx_ir_version(m), 8);
  assert_int_equal(nb_onnx_opset(m, ""), 17);
  assert_int_equal(nb_onnx_opset(m, "ai.onnx"), 17);
  assert_int_equal(nb_onnx_node_count(m), 6);
  assert_string_equal(nb_onnx_node_op(m, 5), "Softmax");
  assert_int_equal(nb_onnx_input_count(m), 1); /* W is an initializer */
  const char *name;
  int et, nd;
  const int64_t *dims;
  TU_OK(nb_onnx_input_info(m, 0, &name, &et, &nd, &dims));
  assert_string_equal(name, "X");
  assert_int_equal(et, NB_ONNX_FLOAT);
  assert_int_equal(nd, 2);
  assert_true(dims[0] == -1 && dims[1] == 3);
  assert_int_equal(nb_onnx_output_count(m), 1);
  TU_OK(nb_onnx_check(m));

  /* the batch is fixed at build time */
  const int64_t xs[2] = {4, 3};
  float *x = tu_rand(12, -2, 2, 7);
  nb_onnx_input in = {"X", 2, xs, NULL};
  nb_graph *g = nb_graph_new();
  nb_tensor *xin, *y;
  TU_OK(nb_onnx_build(m, g, 1, &in, &xin, &y));
  assert_non_null(xin);
  assert_int_equal(nb_tensor_ndim(y), 2);
  assert_true(nb_tensor_shape(y)[0] == 4 && nb_tensor_shape(y)[1] == 2);
  nb_backend *be;
  nb_state *st;
  nb_plan *plan;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &plan));
  TU_OK(nb_plan_set_input(plan, xin, x, sizeof(float) * 12));
  TU_OK(nb_plan_run(plan));
  float got[8], want[8];
  TU_OK(nb_plan_get(plan, y, got, sizeof got));
  static const float W[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.0f}, B[2] = {0.1f, -0.2f};
  for (int i = 0; i < 4; i++) {
    double r[2];
    for (int j = 0; j < 2; j++) {
      double z = B[j];
      for (int k = 0; k < 3; k++) z += (double)x[i * 3 + k] * W[k * 2 + j];
      r[j] = 2 * (z > 0 ? z : 0);
    }
    double mx = r[0] > r[1] ? r[0] : r[1], s = exp(r[0] - mx) + exp(r[1] - mx);
    for (int j = 0; j < 2; j++) want[i * 2 + j] = (float)(exp(r[j] - mx) / s);
  }
  tu_assert_close("tiny model", got, want, 8, 1e-6, 1e-5);
  nb_plan_free(plan);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);

  /* a wrong rank and a missing input are errors, not crashes */
  g = nb_graph_new();
  const int64_t bad[3] = {4, 3, 1};
  nb_onnx_input in3 = {"X", 3, bad, NULL};
  assert_int_equal(nb_onnx_build(m, g, 1, &in3, NULL, &y), NB_ERR_SHAPE);
  nb_graph_free(g);
  g = nb_graph_new();
  nb_onnx_input other = {"nope", 2, xs, NULL};
  assert_int_equal(nb_onnx_build(m, g, 1, &other, NULL, &y), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "'X'"));
  nb_graph_free(g);
  /* a batch whose element count nb_input refuses: an error naming the input */
  g = nb_graph_new();
  const int64_t huge[2] = {INT64_MAX / 2, 3};
  nb_onnx_input inh = {"X", 2, huge, NULL};
  assert_int_equal(nb_onnx_build(m, g, 1, &inh, NULL, &y), NB_ERR_SHAPE);
  assert_non_null(strstr(nb_last_error(), "input 'X': nb_input: shape"));
  assert_non_null(strstr(nb_last_error(), "has too many elements"));
  nb_graph_free(g);
  nb_onnx_free(m);

  /* every truncation of the model: an error or a smaller valid model */
  int errors = 0;
  for (size_t cut = 0; cut < mb.n; cut++) {
    nb_status s = nb_onnx_load_buffer(mb.p, cut, "tiny.onnx", &m);
    if (s) {
      assert_null(m);
      errors++;
    } else {
      nb_onnx_free(m);
    }
  }
  assert_true(errors > (int)mb.n / 2);
  free(mb.p);
  free(x);
}

static void test_unsupported_listed_at_once(void **state) {
  (void)state;
  buf mb = {0}, g = {0}, sub = {0}, ops = {0};
  node(&g, "Relu", 1, (const char *[]){"X"}, "A", NULL);
  node(&g, "FancyOp", 1, (const char *[]){"A"}, "B", NULL);
  node(&g, "FancyOp", 1, (const char *[]){"B"}, "C", NULL);
  node(&g, "Cos", 1, (const char *[]){"C"}, "Y", NULL);
  const int64_t d[1] = {3};
  value_info(&sub, "X", 1, d);
  put_msg(&g, 11, &sub);
  value_info(&sub, "Y", 1, d);
  put_msg(&g, 12, &sub);
  put_str(&ops, 1, "");
  put_int(&ops, 2, 13);
  put_msg(&mb, 8, &ops);
  put_msg(&mb, 7, &g);
  nb_onnx_model *m;
  TU_OK(nb_onnx_load_buffer(mb.p, mb.n, "u.onnx", &m));
  assert_int_equal(nb_onnx_check(m), NB_ERR_UNSUPPORTED);
  const char *e = nb_last_error();
  assert_non_null(strstr(e, "2 unsupported ops"));
  assert_non_null(strstr(e, "FancyOp (ai.onnx, opset 13)"));
  assert_non_null(strstr(e, "Cos (ai.onnx, opset 13)"));
  /* build refuses before adding any node */
  nb_graph *gr = nb_graph_new();
  nb_onnx_input in = {"X", 1, d, NULL};
  nb_tensor *y;
  assert_int_equal(nb_onnx_build(m, gr, 1, &in, NULL, &y), NB_ERR_UNSUPPORTED);
  assert_int_equal(nb_graph_node_count(gr), 0);
  nb_graph_free(gr);
  nb_onnx_free(m);
  free(mb.p);
  assert_true(nb_onnx_op_supported("Conv"));
  assert_false(nb_onnx_op_supported("FancyOp"));
}

/* ---- real model files, corrupted ------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n) {
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  rewind(f);
  uint8_t *p = malloc((size_t)sz + 1);
  *n = fread(p, 1, (size_t)sz, f);
  fclose(f);
  return p;
}

static void test_real_model_corrupted(void **state) {
  (void)state;
  const char *path = NB_TEST_REF_DIR "/../../../shared/data/onnx-node-tests/"
                                     "test_conv_with_strides_and_asymmetric_padding/model.onnx";
  size_t n = 0;
  uint8_t *data = slurp(path, &n);
  if (!data) {
    printf("  (skipped: %s not found)\n", path);
    skip();
  }
  nb_onnx_model *m;
  TU_OK(nb_onnx_load_buffer(data, n, "conv.onnx", &m));
  TU_OK(nb_onnx_check(m));
  nb_onnx_free(m);
  int errors = 0;
  for (size_t cut = 0; cut < n; cut++) {
    if (nb_onnx_load_buffer(data, cut, "conv.onnx", &m)) {
      errors++;
      assert_non_null(strstr(nb_last_error(), "conv.onnx"));
    } else {
      nb_onnx_free(m);
    }
  }
  assert_true(errors > 0);
  /* every byte overwritten with 0xff, then 0x00: load and (when it loads)
   * build must fail cleanly or succeed, never crash */
  const uint8_t fills[2] = {0xff, 0x00};
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; i < n; i++) {
      uint8_t keep = data[i];
      data[i] = fills[k];
      if (!nb_onnx_load_buffer(data, n, "conv.onnx", &m)) {
        nb_graph *g = nb_graph_new();
        nb_tensor *outs[4] = {0}, *ins[4] = {0};
        nb_onnx_input in[4];
        int nin = nb_onnx_input_count(m);
        int64_t shape[4] = {1, 1, 7, 5};
        for (int j = 0; j < nin && j < 4; j++) {
          const char *nm;
          int nd;
          nb_onnx_input_info(m, j, &nm, NULL, &nd, NULL);
          in[j] = (nb_onnx_input){nm, 4, shape, NULL};
        }
        if (nin <= 4 && nb_onnx_output_count(m) <= 4) (void)nb_onnx_build(m, g, nin, in, ins, outs);
        nb_graph_free(g);
        nb_onnx_free(m);
      }
      data[i] = keep;
    }
  free(data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_varints),
      cmocka_unit_test(test_fixed_tags_and_lengths),
      cmocka_unit_test(test_tensor_packed_and_unpacked),
      cmocka_unit_test(test_tensor_errors),
      cmocka_unit_test(test_small_model),
      cmocka_unit_test(test_unsupported_listed_at_once),
      cmocka_unit_test(test_real_model_corrupted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
