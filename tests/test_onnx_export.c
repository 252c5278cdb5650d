/* ONNX export: the protobuf writer's bytes, then round trips. A graph (each
 * shipped model, and one graph with every op the exporter maps) is exported
 * at one batch size, read back with nabla's own ONNX importer at another,
 * and run beside the same nabla graph built at that other batch on the same
 * inputs; the outputs must agree to 1e-5. That checks the mapping of every
 * op, the symbolic batch dimension and the initializers at once. Errors:
 * ops with no mapping, missing weights, batch-dependent ops. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MODELS_DIR NB_TEST_REF_DIR "/../../models/"
#define MAX_OUT    96
#define MAX_IN     4

/* ---- protobuf writer ----------------------------------------------------------------- */

static void expect_bytes(const nb_pb_writer *w, const uint8_t *want, size_t n) {
  TU_OK(w->status);
  assert_int_equal(w->len, n);
  assert_memory_equal(w->buf, want, n);
}

static void test_writer_bytes(void **state) {
  (void)state;
  nb_pb_writer w;
  nb_pb_writer_init(&w);
  nb_pb_write_varint(&w, 0);
  nb_pb_write_varint(&w, 127);
  nb_pb_write_varint(&w, 128);
  nb_pb_write_varint(&w, 300);
  expect_bytes(&w, (const uint8_t[]){0x00, 0x7f, 0x80, 0x01, 0xac, 0x02}, 6);
  nb_pb_writer_free(&w);

  /* int fields: a negative value is ten bytes of two's complement */
  nb_pb_writer_init(&w);
  nb_pb_write_int(&w, 1, -1);
  nb_pb_write_int(&w, 2, 150);
  expect_bytes(&w,
               (const uint8_t[]){0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                                 0x10, 0x96, 0x01},
               14);
  nb_pb_writer_free(&w);

  /* float (fixed32, little-endian), string, packed ints (the spec's example) */
  nb_pb_writer_init(&w);
  nb_pb_write_float(&w, 2, 1.0f);
  nb_pb_write_string(&w, 4, "ab");
  nb_pb_write_packed_int(&w, 8, (const int64_t[]){3, 270, 86942}, 3);
  expect_bytes(&w,
               (const uint8_t[]){0x15, 0x00, 0x00, 0x80, 0x3f, 0x22, 0x02, 'a', 'b', 0x42, 0x06,
                                 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05},
               17);
  nb_pb_writer_free(&w);
}

/* Nested messages of every length class, read back with nabla's reader. */
static void test_writer_nesting(void **state) {
  (void)state;
  const size_t sizes[] = {0, 1, 127, 128, 300, 16383, 16384, 70000};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    nb_pb_writer w;
    nb_pb_writer_init(&w);
    size_t outer = nb_pb_begin(&w, 7);
    nb_pb_write_int(&w, 1, 42);
    size_t inner = nb_pb_begin(&w, 2);
    for (size_t i = 0; i < sizes[k]; i++) nb_pb_write_raw(&w, &(uint8_t){(uint8_t)i}, 1);
    nb_pb_end(&w, inner);
    nb_pb_write_string(&w, 3, "end");
    nb_pb_end(&w, outer);
    TU_OK(w.status);

    nb_pb_reader r, m;
    uint32_t field;
    int wire;
    uint64_t v;
    const uint8_t *p;
    size_t n;
    nb_pb_init(&r, w.buf, w.len, "nest");
    TU_OK(nb_pb_read_tag(&r, &field, &wire));
    assert_int_equal(field, 7);
    TU_OK(nb_pb_read_sub(&r, &m));
    assert_true(nb_pb_done(&r));
    TU_OK(nb_pb_read_tag(&m, &field, &wire));
    TU_OK(nb_pb_read_varint(&m, &v));
    assert_true(field == 1 && v == 42);
    TU_OK(nb_pb_read_tag(&m, &field, &wire));
    TU_OK(nb_pb_read_bytes(&m, &p, &n));
    assert_true(field == 2 && wire == NB_PB_LEN);
    assert_int_equal(n, sizes[k]);
    for (size_t i = 0; i < n; i++) assert_int_equal(p[i], (uint8_t)i);
    TU_OK(nb_pb_read_tag(&m, &field, &wire));
    TU_OK(nb_pb_read_bytes(&m, &p, &n));
    assert_true(field == 3 && n == 3 && !memcmp(p, "end", 3));
    assert_true(nb_pb_done(&m));
    nb_pb_writer_free(&w);
  }
}

/* ---- round trips ------------------------------------------------------------------------- */

typedef struct built {
  nb_tensor *in[MAX_IN];
  int nin;
  nb_tensor *out[MAX_OUT];
  const char *what[MAX_OUT];
  int nout;
} built;

typedef void (*build_fn)(nb_graph *g, int64_t batch, built *b, void *ctx);

static void add_out(built *b, const char *what, nb_tensor *t) {
  assert_true(b->nout < MAX_OUT);
  if (!t) fail_msg("%s: build failed: %s", what, nb_last_error());
  b->what[b->nout] = what;
  b->out[b->nout++] = t;
  nb_tensor_set_output(t);
}

/* Integer inputs hold class ids / token ids below this. */
#define ID_RANGE 5

/* Deterministic input data for input k at this batch: f32 in [lo, hi) or
 * integer ids. */
static void *input_data(const nb_tensor *x, int k, float lo, float hi) {
  int64_t n = nb_tensor_numel(x);
  if (nb_tensor_dtype(x) == NB_F32) return tu_rand((size_t)n, lo, hi, 100 + (uint64_t)k);
  int64_t *ids = malloc((size_t)n * sizeof *ids);
  for (int64_t i = 0; i < n; i++) ids[i] = (i * 7 + 3 * k) % ID_RANGE;
  return ids;
}

/* Random running statistics, so batch norm is not the identity. */
static void randomize_running_stats(nb_state *st) {
  for (int i = 0; i < nb_state_count(st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    TU_OK(nb_state_entry(st, i, &name, NULL, &nd, &shape));
    int is_var = strstr(name, "running_var") != NULL;
    if (!is_var && !strstr(name, "running_mean")) continue;
    float *v =
        tu_rand((size_t)shape[0], is_var ? 0.5f : -0.5f, is_var ? 2.0f : 0.5f, 9 + (uint64_t)i);
    TU_OK(nb_state_write(st, name, v, (size_t)shape[0] * sizeof *v));
    free(v);
  }
}

static void write_file(const char *dir, const char *name, const void *data, size_t len) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* DIR/test_data_set_0/KIND_K.pb: a TensorProto with t's shape and data
 * (little-endian host), the ONNX backend-test layout. */
static void dump_tensor(const char *dir, const char *kind, int k, const char *name,
                        const nb_tensor *t, const void *data) {
  nb_pb_writer w;
  nb_pb_writer_init(&w);
  nb_dtype dt = nb_tensor_dtype(t);
  nb_pb_write_packed_int(&w, 1, nb_tensor_shape(t), (size_t)nb_tensor_ndim(t));
  nb_pb_write_int(&w, 2, dt == NB_F32 ? NB_ONNX_FLOAT : NB_ONNX_INT64);
  nb_pb_write_string(&w, 8, name);
  nb_pb_write_bytes(&w, 9, data, (size_t)nb_tensor_numel(t) * nb_dtype_size(dt));
  TU_OK(w.status);
  char file[64];
  snprintf(file, sizeof file, "test_data_set_0/%s_%d.pb", kind, k);
  write_file(dir, file, w.buf, w.len);
  nb_pb_writer_free(&w);
}

typedef struct rt_opts {
  float lo, hi;            /* f32 input range */
  int dynamic_batch;       /* export option */
  const char *want_ops[8]; /* ONNX ops the export must contain */
  const char *dump_as;     /* case folder under $NB_ONNX_EXPORT_DUMP, if set */
} rt_opts;

/* Exports build(export_batch), imports it at run_batch, and compares with
 * build(run_batch) on the same inputs and variables. */
static void round_trip(const char *name, build_fn build, void *ctx, int64_t export_batch,
                       int64_t run_batch, const rt_opts *o) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));

  /* export */
  built be1 = {0};
  nb_graph *g1 = nb_graph_new();
  build(g1, export_batch, &be1, ctx);
  TU_OK(nb_graph_status(g1));
  nb_plan *p1;
  TU_OK(nb_compile(g1, be, st, NULL, &p1)); /* creates and initialises the variables */
  randomize_running_stats(st);
  nb_onnx_export_options eo = nb_onnx_export_defaults();
  eo.dynamic_batch = o->dynamic_batch;
  uint8_t *bytes;
  size_t len;
  nb_status rc = nb_onnx_export(g1, st, be1.nout, be1.out, &eo, &bytes, &len);
  if (rc) fail_msg("%s: export: %s", name, nb_last_error());
  /* tests/onnx_export_check.py checks these with onnx.checker and runs
   * them with a PyTorch interpreter of the ONNX ops */
  const char *dump = getenv("NB_ONNX_EXPORT_DUMP");
  char dump_dir[1024] = "";
  if (dump && o->dump_as) {
    snprintf(dump_dir, sizeof dump_dir, "%s/%s/test_data_set_0", dump, o->dump_as);
    TU_OK(nb_mkdirs(dump_dir));
    snprintf(dump_dir, sizeof dump_dir, "%s/%s", dump, o->dump_as);
    write_file(dump_dir, "model.onnx", bytes, len);
  }

  /* nabla at run_batch */
  built b2 = {0};
  nb_graph *g2 = nb_graph_new();
  build(g2, run_batch, &b2, ctx);
  TU_OK(nb_graph_status(g2));
  nb_plan *p2;
  TU_OK(nb_compile(g2, be, st, NULL, &p2));
  void *data[MAX_IN];
  for (int k = 0; k < b2.nin; k++) {
    const nb_tensor *x = b2.in[k];
    data[k] = input_data(x, k, o->lo, o->hi);
    TU_OK(nb_plan_set_input(p2, x, data[k],
                            (size_t)nb_tensor_numel(x) * nb_dtype_size(nb_tensor_dtype(x))));
  }
  TU_OK(nb_plan_run(p2));

  /* the file through the importer at run_batch; integer inputs given as
   * values (the importer reads indices at build time) */
  nb_onnx_model *m;
  TU_OK(nb_onnx_load_buffer(bytes, len, name, &m));
  assert_int_equal(nb_onnx_ir_version(m), 8);
  assert_int_equal(nb_onnx_opset(m, ""), 17);
  assert_int_equal(nb_onnx_input_count(m), b2.nin);
  assert_int_equal(nb_onnx_output_count(m), b2.nout);
  for (int k = 0; k < 8 && o->want_ops[k]; k++) {
    int found = 0;
    for (int i = 0; i < nb_onnx_node_count(m); i++)
      found |= !strcmp(nb_onnx_node_op(m, i), o->want_ops[k]);
    if (!found) fail_msg("%s: no %s node in the export", name, o->want_ops[k]);
  }
  nb_onnx_input spec[MAX_IN];
  nb_onnx_tensor vals[MAX_IN];
  for (int k = 0; k < b2.nin; k++) {
    const nb_tensor *x = b2.in[k];
    int nd;
    const int64_t *dims;
    TU_OK(nb_onnx_input_info(m, k, NULL, NULL, &nd, &dims));
    assert_int_equal(nd, nb_tensor_ndim(x));
    /* the batch axis is symbolic ("N"), or the export batch when static */
    assert_true(dims[0] == (o->dynamic_batch ? -1 : export_batch));
    const nb_onnx_tensor *value = NULL;
    if (nb_tensor_dtype(x) != NB_F32) {
      memset(&vals[k], 0, sizeof vals[k]);
      vals[k].name = nb_tensor_name(x);
      vals[k].elem_type = NB_ONNX_INT64;
      vals[k].ndim = nb_tensor_ndim(x);
      for (int d = 0; d < vals[k].ndim; d++) vals[k].dims[d] = nb_tensor_shape(x)[d];
      vals[k].numel = nb_tensor_numel(x);
      vals[k].i64 = data[k];
      value = &vals[k];
    }
    spec[k] = (nb_onnx_input){nb_tensor_name(x), nb_tensor_ndim(x), nb_tensor_shape(x), value};
  }
  nb_graph *g3 = nb_graph_new();
  nb_tensor *in3[MAX_IN], *out3[MAX_OUT];
  rc = nb_onnx_build(m, g3, b2.nin, spec, in3, out3);
  if (rc) fail_msg("%s: import: %s", name, nb_last_error());
  nb_state *st3;
  nb_plan *p3;
  TU_OK(nb_state_new(be, &st3));
  TU_OK(nb_compile(g3, be, st3, NULL, &p3));
  for (int k = 0; k < b2.nin; k++)
    if (in3[k])
      TU_OK(
          nb_plan_set_input(p3, in3[k], data[k], (size_t)nb_tensor_numel(in3[k]) * sizeof(float)));
  TU_OK(nb_plan_run(p3));

  for (int k = 0; dump_dir[0] && k < b2.nin; k++) {
    const char *iname;
    TU_OK(nb_onnx_input_info(m, k, &iname, NULL, NULL, NULL));
    dump_tensor(dump_dir, "input", k, iname, b2.in[k], data[k]);
  }
  for (int j = 0; j < b2.nout; j++) {
    const nb_tensor *t = b2.out[j];
    int64_t n = nb_tensor_numel(t);
    assert_int_equal(nb_tensor_ndim(out3[j]), nb_tensor_ndim(t));
    for (int d = 0; d < nb_tensor_ndim(t); d++)
      assert_int_equal(nb_tensor_shape(out3[j])[d], nb_tensor_shape(t)[d]);
    float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
    if (nb_tensor_dtype(t) == NB_F32) {
      TU_OK(nb_plan_get(p2, t, want, (size_t)n * sizeof *want));
    } else { /* argmax: i64 in nabla, exact integers in f32 from the importer */
      int64_t *iv = malloc((size_t)n * sizeof *iv);
      TU_OK(nb_plan_get(p2, t, iv, (size_t)n * sizeof *iv));
      for (int64_t i = 0; i < n; i++) want[i] = (float)iv[i];
      free(iv);
    }
    if (dump_dir[0]) {
      const char *oname;
      TU_OK(nb_onnx_output_info(m, j, &oname, NULL));
      void *raw = malloc((size_t)n * nb_dtype_size(nb_tensor_dtype(t)));
      TU_OK(nb_plan_get(p2, t, raw, (size_t)n * nb_dtype_size(nb_tensor_dtype(t))));
      dump_tensor(dump_dir, "output", j, oname, t, raw);
      free(raw);
    }
    TU_OK(nb_plan_get(p3, out3[j], got, (size_t)n * sizeof *got));
    char what[160];
    snprintf(what, sizeof what, "%s: %s", name, b2.what[j]);
    tu_assert_close(what, got, want, (size_t)n, 1e-5, 1e-5);
    free(want);
    free(got);
  }

  for (int k = 0; k < b2.nin; k++) free(data[k]);
  nb_plan_free(p3);
  nb_state_free(st3);
  nb_graph_free(g3);
  nb_onnx_free(m);
  free(bytes);
  nb_plan_free(p2);
  nb_graph_free(g2);
  nb_plan_free(p1);
  nb_graph_free(g1);
  nb_state_free(st);
  nb_backend_free(be);
}

/* ---- the shipped models -------------------------------------------------------------------- */

static void build_model(nb_graph *g, int64_t batch, built *b, void *ctx) {
  const nb_model *m = ctx;
  nb_nn nn = {.g = g, .training = 0, .seed = 3, .init = NB_NN_INIT_TORCH};
  nb_tensor *x = nb_model_new_input(m, g, "input", batch), *y = NULL;
  TU_OK(nb_model_build(m, &nn, x, &y));
  b->in[b->nin++] = x;
  add_out(b, "logits", y);
}

static void model_round_trip(const char *file, const char *op1, const char *op2) {
  nb_model *m;
  char path[1024];
  snprintf(path, sizeof path, MODELS_DIR "%s", file);
  TU_OK(nb_model_load(path, &m));
  char dump[64];
  snprintf(dump, sizeof dump, "%.*s", (int)(strlen(file) - 4), file);
  rt_opts o = {-1.0f, 1.0f, 1, {op1, op2}, dump};
  round_trip(file, build_model, m, 2, 3, &o);
  nb_model_free(m);
}

static void test_mnist_cnn(void **state) {
  (void)state;
  model_round_trip("mnist_cnn.cfg", "Conv", "Gemm");
}

static void test_lenet5(void **state) {
  (void)state;
  model_round_trip("lenet5.cfg", "AveragePool", "Tanh");
}

static void test_cifar_cnn(void **state) {
  (void)state;
  model_round_trip("cifar_cnn.cfg", "MaxPool", "Gemm");
}

static void test_cifar_resnet(void **state) {
  (void)state;
  model_round_trip("cifar_resnet.cfg", "BatchNormalization", "GlobalAveragePool");
}

/* ---- every mapped op --------------------------------------------------------------------------
 */

static nb_tensor *cst(nb_graph *g, int nd, const int64_t *shape, float lo, float hi,
                      uint64_t seed) {
  float *v = tu_rand((size_t)nb_shape_numel(nd, shape), lo, hi, seed);
  nb_tensor *t = nb_constant(g, NB_F32, nd, shape, v);
  free(v);
  return t;
}

/* x [B, 3, 6, 6] in [-2, 2], ids [B, 4] and labels [B] (i64). */
static void build_ops(nb_graph *g, int64_t B, built *b, void *ctx) {
  (void)ctx;
  int64_t xs[4] = {B, 3, 6, 6}, is[2] = {B, 4};
  nb_tensor *x = nb_input(g, "x", NB_F32, 4, xs);
  nb_tensor *ids = nb_input(g, "ids", NB_I64, 2, is);
  nb_tensor *labels = nb_input(g, "labels", NB_I64, 1, &B);
  b->in[b->nin++] = x;
  b->in[b->nin++] = ids;
  b->in[b->nin++] = labels;
  nb_tensor *pos = nb_add(g, nb_abs(g, x), nb_scalar(g, 0.5f));   /* > 0 for log, sqrt, pow */
  nb_tensor *c = cst(g, 3, (int64_t[]){3, 1, 6}, -1.0f, 1.0f, 1); /* broadcasts */
  nb_nn nn = {.g = g, .training = 0, .seed = 5, .init = NB_NN_INIT_TORCH};

  /* elementwise */
  add_out(b, "add", nb_add(g, x, c));
  add_out(b, "sub", nb_sub(g, c, x));
  add_out(b, "mul", nb_mul(g, x, c));
  add_out(b, "div", nb_div(g, x, pos));
  add_out(b, "pow", nb_pow(g, pos, c));
  add_out(b, "maximum", nb_maximum(g, x, c));
  add_out(b, "minimum", nb_minimum(g, x, c));
  add_out(b, "eq", nb_eq(g, nb_relu(g, x), nb_scalar(g, 0.0f)));
  add_out(b, "ne", nb_ne(g, nb_relu(g, x), nb_scalar(g, 0.0f)));
  add_out(b, "lt", nb_lt(g, x, c));
  add_out(b, "le", nb_le(g, x, c));
  add_out(b, "gt", nb_gt(g, x, c));
  add_out(b, "ge", nb_ge(g, x, c));
  add_out(b, "where(compare)", nb_where(g, nb_gt(g, x, c), x, c));
  add_out(b, "where(mask)", nb_where(g, nb_relu(g, x), x, nb_scalar(g, -3.0f)));
  add_out(b, "neg", nb_neg(g, x));
  add_out(b, "sign", nb_sign(g, x));
  add_out(b, "exp", nb_exp(g, x));
  add_out(b, "log", nb_log(g, pos));
  add_out(b, "sqrt", nb_sqrt(g, pos));
  add_out(b, "rsqrt", nb_rsqrt(g, pos));
  add_out(b, "square", nb_square(g, x));
  add_out(b, "reciprocal", nb_reciprocal(g, pos));
  add_out(b, "tanh", nb_tanh(g, x));
  add_out(b, "erf", nb_erf(g, x));
  add_out(b, "sigmoid", nb_sigmoid(g, x));
  add_out(b, "leaky_relu", nb_leaky_relu(g, x, 0.1f));
  add_out(b, "gelu", nb_gelu(g, x, 0));
  add_out(b, "gelu_tanh", nb_gelu(g, x, 1));
  add_out(b, "silu", nb_silu(g, x));
  add_out(b, "softplus", nb_softplus(g, x, 1.0f, 20.0f));
  add_out(b, "softplus(beta 2, threshold 1)", nb_softplus(g, x, 2.0f, 1.0f));
  add_out(b, "clamp", nb_clamp(g, x, -0.5f, 0.7f));
  add_out(b, "cast", nb_cast(g, nb_cast(g, nb_mul(g, x, nb_scalar(g, 10.0f)), NB_I32), NB_F32));

  /* shapes and data movement */
  nb_tensor *r = nb_reshape(g, x, 3, (int64_t[]){B, 3, 36});
  add_out(b, "reshape", r);
  add_out(b, "reshape(flat)", nb_reshape(g, x, 1, (int64_t[]){-1}));
  add_out(b, "permute", nb_permute(g, x, (const int[]){0, 2, 3, 1}));
  add_out(b, "permute+copy", nb_contiguous(g, nb_transpose(g, r, 1, 2)));
  add_out(b, "slice", nb_slice(g, x, 2, 1, 6, 2));
  add_out(b, "broadcast_to", nb_broadcast_to(g, nb_slice(g, x, 3, 0, 1, 1), 4, xs));
  add_out(b, "broadcast_to(const)", nb_add(g, x, nb_broadcast_to(g, c, 3, (int64_t[]){3, 6, 6})));
  add_out(b, "sum", nb_sum(g, x, 2, (const int[]){1, 3}, 0));
  add_out(b, "sum(keepdim)", nb_sum(g, x, 1, (const int[]){2}, 1));
  add_out(b, "max", nb_max(g, x, 1, (const int[]){-1}, 0));
  add_out(b, "min", nb_min(g, x, 2, (const int[]){2, 3}, 1));
  add_out(b, "mean", nb_mean(g, x, 1, (const int[]){1}, 0));
  add_out(b, "var", nb_var(g, x, 2, (const int[]){2, 3}, 1, 0));
  add_out(b, "logsumexp", nb_logsumexp(g, x, 1, (const int[]){3}, 0));
  add_out(b, "argmax", nb_argmax(g, x, 1, 0));
  add_out(b, "concat", nb_concat(g, 2, (nb_tensor *[]){x, nb_exp(g, x)}, 1));
  add_out(b, "pad", nb_pad(g, x, (const int64_t[]){0, 0, 1, 0, 2, 1, 0, 3}, 0.5f));
  add_out(b, "embedding", nb_nn_embedding(&nn, "emb", ids, ID_RANGE, 3));
  add_out(
      b, "index_select",
      nb_index_select(g, x, 2, nb_constant(g, NB_I64, 1, (int64_t[]){3}, (int64_t[]){5, 0, 5})));
  add_out(b, "one_hot", nb_one_hot(g, labels, ID_RANGE));

  /* linear algebra, convolution, pooling */
  add_out(b, "matmul", nb_matmul(g, r, cst(g, 2, (int64_t[]){36, 5}, -1.0f, 1.0f, 2)));
  add_out(b, "matmul(batched)", nb_matmul(g, r, nb_transpose(g, r, 1, 2)));
  add_out(b, "matmul(vector)", nb_matmul(g, r, cst(g, 1, (int64_t[]){36}, -1.0f, 1.0f, 3)));
  nb_tensor *flat = nb_nn_flatten(&nn, x);
  add_out(b, "linear", nb_nn_linear(&nn, "fc", flat, 7, 1));
  add_out(b, "linear(no bias)", nb_nn_linear(&nn, "fc_nb", flat, 4, 0));
  add_out(b, "linear(3-d)", nb_nn_linear(&nn, "fc3", r, 4, 1));
  nb_conv2d_params cp = nb_conv2d_defaults();
  add_out(b, "conv2d", nb_conv2d(g, x, cst(g, 4, (int64_t[]){4, 3, 3, 3}, -0.5f, 0.5f, 4), &cp));
  cp = (nb_conv2d_params){{2, 1}, {1, 2}, {1, 2}, 3};
  add_out(b, "conv2d(strided, grouped)",
          nb_conv2d(g, x, cst(g, 4, (int64_t[]){6, 1, 3, 2}, -0.5f, 0.5f, 5), &cp));
  add_out(b, "conv2d+bias", nb_nn_conv2d(&nn, "conv", x, 5, 3, 3, NULL, 1));
  nb_pool2d_params pp = nb_pool2d_defaults(2, 2);
  add_out(b, "max_pool2d", nb_max_pool2d(g, x, &pp));
  pp = (nb_pool2d_params){{3, 3}, {2, 2}, {1, 1}, 0, 1};
  add_out(b, "avg_pool2d(pad)", nb_avg_pool2d(g, x, &pp));
  pp.count_include_pad = 0;
  add_out(b, "avg_pool2d(pad, exclude)", nb_avg_pool2d(g, x, &pp));
  pp = (nb_pool2d_params){{2, 2}, {2, 2}, {0, 0}, 1, 1};
  add_out(b, "max_pool2d(ceil)", nb_max_pool2d(g, nb_slice(g, x, 2, 0, 5, 1), &pp));
  add_out(b, "global_avg_pool2d", nb_global_avg_pool2d(g, x));

  /* normalisation, softmax, attention */
  add_out(b, "batch_norm", nb_nn_batch_norm(&nn, "bn", x, 0.1f, 1e-5f));
  add_out(b, "batch_norm(no affine)",
          nb_batch_norm(g, x, NULL, NULL, cst(g, 1, (int64_t[]){3}, -0.5f, 0.5f, 6),
                        cst(g, 1, (int64_t[]){3}, 0.5f, 2.0f, 7), 0, 0.1f, 1e-3f));
  add_out(b, "layer_norm", nb_nn_layer_norm(&nn, "ln", x, 1e-5f));
  add_out(b, "layer_norm(2 axes)",
          nb_layer_norm(g, x, 2, cst(g, 2, (int64_t[]){6, 6}, 0.5f, 1.5f, 8),
                        cst(g, 2, (int64_t[]){6, 6}, -0.5f, 0.5f, 9), 1e-5f));
  add_out(b, "softmax", nb_softmax(g, x, 1));
  add_out(b, "log_softmax", nb_log_softmax(g, x, -1));
  nb_tensor *q = nb_reshape(g, x, 4, (int64_t[]){B, 3, 9, 4});
  nb_tensor *k = nb_mul(g, q, nb_scalar(g, 0.5f)), *v = nb_add(g, q, nb_scalar(g, 1.0f));
  add_out(b, "attention", nb_attention(g, q, k, v, 0, 0.0f));
  nb_tensor *ac =
      nb_attention(g, q, nb_slice(g, k, 2, 0, 7, 1), nb_slice(g, v, 2, 0, 7, 1), 1, 0.3f);
  add_out(b, "attention(causal)", ac);
  /* the attention node itself (y and the row logsumexp), as a backward
   * pass would read it */
  for (int i = nb_graph_node_count(g) - 1; i >= 0; i--)
    if (!strcmp(nb_tensor_op_name(nb_graph_node(g, i)), "attention")) {
      add_out(b, "attention(with logsumexp)", nb_graph_node(g, i));
      break;
    }
  add_out(b, "multihead_attention", nb_nn_multihead_attention(&nn, "mha", r, 3, 1));
}

static void test_every_op(void **state) {
  (void)state;
  rt_opts o = {-2.0f,
               2.0f,
               1,
               {"Conv", "Gemm", "BatchNormalization", "LayerNormalization", "GlobalAveragePool",
                "ReduceMean", "Erf", "Gather"},
               "ops"};
  round_trip("ops", build_ops, NULL, 2, 3, &o);
  /* with the batch fixed, the graph's own shapes */
  o.dynamic_batch = 0;
  o.dump_as = "ops_static";
  round_trip("ops (static batch)", build_ops, NULL, 2, 2, &o);
}

/* ---- errors ------------------------------------------------------------------------------------
 */

static nb_status export_one(nb_graph *g, const nb_state *st, nb_tensor *y, int dynamic) {
  nb_onnx_export_options eo = nb_onnx_export_defaults();
  eo.dynamic_batch = dynamic;
  uint8_t *bytes = NULL;
  size_t len = 0;
  nb_status rc = nb_onnx_export(g, st, 1, &y, &eo, &bytes, &len);
  free(bytes);
  return rc;
}

/* want 0: any error */
static void expect_error(nb_status rc, nb_status want, const char *text) {
  assert_true(rc != NB_OK);
  if (want) assert_int_equal(rc, want);
  if (!strstr(nb_last_error(), text))
    fail_msg("error '%s' does not mention '%s'", nb_last_error(), text);
}

static void test_errors(void **state) {
  (void)state;
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_graph *g = nb_graph_new();
  int64_t xs[4] = {2, 3, 6, 6};
  nb_tensor *x = nb_input(g, "x", NB_F32, 4, xs);
  nb_conv2d_params cp = nb_conv2d_defaults();
  nb_tensor *w = nb_param(g, "w", 4, (int64_t[]){4, 3, 3, 3}, (nb_init){NB_INIT_UNIFORM, -1, 1, 1});
  nb_tensor *y = nb_conv2d(g, x, w, &cp);

  /* the variable's value is needed: no state, or a state without it */
  expect_error(export_one(g, NULL, y, 1), NB_ERR_INVALID_ARG, "variable 'w'");
  expect_error(export_one(g, st, y, 1), 0, "variable 'w'");

  /* a gradient op names itself */
  nb_tensor *loss = nb_sum(g, y, 0, NULL, 0);
  TU_OK(nb_graph_backward(g, loss));
  nb_tensor *gw = nb_graph_grad(g, w);
  nb_tensor_set_output(gw);
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  expect_error(export_one(g, st, gw, 1), NB_ERR_UNSUPPORTED, "conv2d_backward_weight");

  /* active dropout: a training graph */
  nb_tensor *d = nb_dropout(g, x, 0.5f, 1, 1);
  expect_error(export_one(g, st, d, 1), NB_ERR_UNSUPPORTED, "dropout");

  /* ops that tie the batch axis to the built size: refused with a dynamic
   * batch, written as they are with a static one */
  nb_tensor *s = nb_slice(g, x, 0, 0, 1, 1);
  expect_error(export_one(g, st, s, 1), NB_ERR_UNSUPPORTED, "slices the batch axis");
  TU_OK(export_one(g, st, s, 0));
  float *cv = tu_rand(2 * 3 * 36, 0, 1, 1);
  nb_tensor *mix = nb_add(g, x, nb_constant(g, NB_F32, 4, xs, cv));
  free(cv);
  expect_error(export_one(g, st, mix, 1), NB_ERR_UNSUPPORTED, "fixed size");
  TU_OK(export_one(g, st, mix, 0));

  /* ceil-mode average pooling whose last window overhangs the input */
  nb_pool2d_params pp = {{2, 2}, {2, 2}, {0, 0}, 1, 1};
  nb_tensor *ap = nb_avg_pool2d(g, nb_slice(g, x, 2, 0, 5, 1), &pp);
  expect_error(export_one(g, st, ap, 1), NB_ERR_UNSUPPORTED, "ceil_mode");

  /* arguments */
  uint8_t *bytes;
  size_t len;
  assert_int_equal(nb_onnx_export(g, st, 0, &y, NULL, &bytes, &len), NB_ERR_INVALID_ARG);
  nb_tensor *none = NULL;
  assert_int_equal(nb_onnx_export(g, st, 1, &none, NULL, &bytes, &len), NB_ERR_INVALID_ARG);
  nb_graph *other = nb_graph_new();
  nb_tensor *ox = nb_input(other, "x", NB_F32, 1, (int64_t[]){2});
  expect_error(nb_onnx_export(g, st, 1, &ox, NULL, &bytes, &len), NB_ERR_INVALID_ARG,
               "another graph");
  nb_graph_free(other);

  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
}

/* Output names: a node's own name, the same node twice, an input, a view,
 * and a generated name that an output name already takes. */
static void test_output_names(void **state) {
  (void)state;
  nb_graph *g = nb_graph_new();
  nb_tensor *x = nb_input(g, "x", NB_F32, 2, (int64_t[]){2, 3});
  nb_tensor *y = nb_relu(g, x); /* node 1: would be called relu_1 */
  nb_tensor_set_name(y, "y");
  nb_tensor *t = nb_contiguous(g, nb_transpose(g, nb_exp(g, x), 0, 1));
  nb_tensor *z = nb_neg(g, y);
  nb_tensor_set_name(z, "relu_1");
  nb_tensor *outs[5] = {y, y, x, t, z};
  uint8_t *bytes;
  size_t len;
  TU_OK(nb_onnx_export(g, NULL, 5, outs, NULL, &bytes, &len));
  nb_onnx_model *m;
  TU_OK(nb_onnx_load_buffer(bytes, len, "names", &m));
  const char *want[5] = {"y", "y_1", "x_2", "output_3", "relu_1"};
  for (int j = 0; j < 5; j++) {
    const char *name;
    TU_OK(nb_onnx_output_info(m, j, &name, NULL));
    assert_string_equal(name, want[j]);
  }
  nb_graph *g2 = nb_graph_new();
  nb_tensor *x2, *y2[5];
  nb_onnx_input in = {"x", 2, (int64_t[]){4, 3}, NULL}; /* another batch */
  TU_OK(nb_onnx_build(m, g2, 1, &in, &x2, y2));
  assert_int_equal(nb_tensor_shape(y2[3])[1], 4);
  nb_onnx_free(m);
  free(bytes);
  nb_graph_free(g2);

  /* an output may not take an input's name */
  nb_tensor_set_name(z, "x");
  assert_int_equal(nb_onnx_export(g, NULL, 1, &z, NULL, &bytes, &len), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "'x'"));
  nb_graph_free(g);
}

/* nb_onnx_export_model with the recipe's normalisation and a softmax: the
 * file takes raw pixels and gives probabilities. */
static void test_export_model_file(void **state) {
  (void)state;
  nb_model *m;
  TU_OK(nb_model_load(MODELS_DIR "lenet5.cfg", &m));
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  /* the network on normalised input, with a softmax */
  nb_graph *g = nb_graph_new();
  nb_nn nn = {.g = g, .training = 0, .seed = 2, .init = NB_NN_INIT_TORCH};
  nb_tensor *x = nb_model_new_input(m, g, "x", 4), *y;
  TU_OK(nb_model_build(m, &nn, x, &y));
  y = nb_softmax(g, y, -1);
  nb_tensor_set_output(y);
  nb_plan *p;
  TU_OK(nb_compile(g, be, st, NULL, &p));
  float *raw = tu_rand(4 * 28 * 28, 0.0f, 1.0f, 3), *norm = malloc(4 * 28 * 28 * sizeof(float));
  for (int i = 0; i < 4 * 28 * 28; i++) norm[i] = (raw[i] - 0.1307f) * (1.0f / 0.3081f);
  TU_OK(nb_plan_set_input(p, x, norm, 4 * 28 * 28 * sizeof(float)));
  TU_OK(nb_plan_run(p));
  float want[40], got[40];
  TU_OK(nb_plan_get(p, y, want, sizeof want));

  char path[] = "/tmp/nb_test_export_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  nb_onnx_export_options eo = nb_onnx_export_defaults();
  eo.normalize = 1;
  eo.softmax = 1;
  TU_OK(nb_onnx_export_model(m, st, &eo, path));
  nb_onnx_model *om;
  TU_OK(nb_onnx_load(path, &om));
  const char *name;
  TU_OK(nb_onnx_output_info(om, 0, &name, NULL));
  assert_string_equal(name, "probabilities");
  nb_graph *g2 = nb_graph_new();
  nb_onnx_input in = {"input", 4, (int64_t[]){4, 1, 28, 28}, NULL};
  nb_tensor *x2, *y2;
  TU_OK(nb_onnx_build(om, g2, 1, &in, &x2, &y2));
  nb_state *st2;
  nb_plan *p2;
  TU_OK(nb_state_new(be, &st2));
  TU_OK(nb_compile(g2, be, st2, NULL, &p2));
  TU_OK(nb_plan_set_input(p2, x2, raw, 4 * 28 * 28 * sizeof(float)));
  TU_OK(nb_plan_run(p2));
  TU_OK(nb_plan_get(p2, y2, got, sizeof got));
  tu_assert_close("lenet5 normalize + softmax", got, want, 40, 1e-6, 1e-5);

  remove(path);
  nb_plan_free(p2);
  nb_state_free(st2);
  nb_graph_free(g2);
  nb_onnx_free(om);
  free(raw);
  free(norm);
  nb_plan_free(p);
  nb_graph_free(g);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_writer_bytes), cmocka_unit_test(test_writer_nesting),
      cmocka_unit_test(test_mnist_cnn),    cmocka_unit_test(test_lenet5),
      cmocka_unit_test(test_cifar_cnn),    cmocka_unit_test(test_cifar_resnet),
      cmocka_unit_test(test_every_op),     cmocka_unit_test(test_errors),
      cmocka_unit_test(test_output_names), cmocka_unit_test(test_export_model_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
