/* ONNX external data: a model saved by python onnx with
 * save_as_external_data=True (tests/data/onnx/mlp_external, written by
 * tests/data/make_fixtures.py) runs and matches numpy's outputs; models
 * built here whose external_data entries are hostile (absolute paths, ".."
 * escapes, symlinks out of the folder, offsets and lengths past the end,
 * sizes that disagree with the shape) fail with an error naming the model,
 * never read outside the model's folder, and never crash. */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

#define MLP NB_TEST_REF_DIR "/../data/onnx/mlp_external/"

/* ---- test models, written with the library's protobuf writer ------------------------- */

static void put_entry(nb_pb_writer *w, const char *key, const char *value) {
  size_t e = nb_pb_begin(w, 13); /* TensorProto.external_data */
  nb_pb_write_string(w, 1, key);
  nb_pb_write_string(w, 2, value);
  nb_pb_end(w, e);
}

/* A model whose output "y" is Identity of initializer "w" (float [2, 3]),
 * stored externally at `location` (offset, length: NULL to leave out).
 * Free it with nb_pb_writer_free. */
static void external_model(nb_pb_writer *w, const char *location, const char *offset,
                           const char *length) {
  nb_pb_writer_init(w);
  nb_pb_write_int(w, 1, 8); /* ir_version */
  size_t op = nb_pb_begin(w, 8);
  nb_pb_write_string(w, 1, "");
  nb_pb_write_int(w, 2, 13);
  nb_pb_end(w, op);
  size_t g = nb_pb_begin(w, 7);
  size_t n = nb_pb_begin(w, 1);
  nb_pb_write_string(w, 1, "w");
  nb_pb_write_string(w, 2, "y");
  nb_pb_write_string(w, 4, "Identity");
  nb_pb_end(w, n);
  size_t t = nb_pb_begin(w, 5);
  nb_pb_write_int(w, 1, 2);
  nb_pb_write_int(w, 1, 3);
  nb_pb_write_int(w, 2, NB_ONNX_FLOAT);
  nb_pb_write_string(w, 8, "w");
  if (location) put_entry(w, "location", location);
  if (offset) put_entry(w, "offset", offset);
  if (length) put_entry(w, "length", length);
  nb_pb_write_int(w, 14, 1); /* data_location = EXTERNAL */
  nb_pb_end(w, t);
  size_t vi = nb_pb_begin(w, 12);
  nb_pb_write_string(w, 1, "y");
  size_t type = nb_pb_begin(w, 2);
  size_t tensor = nb_pb_begin(w, 1);
  nb_pb_write_int(w, 1, NB_ONNX_FLOAT);
  nb_pb_end(w, tensor);
  nb_pb_end(w, type);
  nb_pb_end(w, vi);
  nb_pb_end(w, g);
  TU_OK(w->status);
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  fclose(f);
}

/* Builds and runs a model without inputs and copies its first output. */
static void run_no_inputs(nb_onnx_model *m, float *out, size_t n) {
  nb_graph *g = nb_graph_new();
  nb_tensor *y[1];
  TU_OK(nb_onnx_build(m, g, 0, NULL, NULL, y));
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_plan_run(p));
  TU_OK(nb_plan_get(p, y[0], out, n * sizeof(float)));
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_python_external_model(void **state) {
  (void)state;
  nb_onnx_model *m;
  TU_OK(nb_onnx_load(MLP "model.onnx", &m));
  TU_OK(nb_onnx_check(m));
  nb_npy x, probs, logits;
  TU_OK(nb_npy_load(MLP "x.npy", &x));
  TU_OK(nb_npy_load(MLP "probs.npy", &probs));
  TU_OK(nb_npy_load(MLP "logits.npy", &logits));
  assert_int_equal(x.dtype, NB_F32);
  nb_onnx_input in = {"x", x.ndim, x.shape, NULL};
  nb_tensor *xi, *y[2];
  nb_graph *g = nb_graph_new();
  TU_OK(nb_onnx_build(m, g, 1, &in, &xi, y));
  nb_backend *be;
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  TU_OK(nb_plan_set_input(p, xi, x.data, (size_t)x.numel * sizeof(float)));
  TU_OK(nb_plan_run(p));
  float got[8];
  assert_int_equal(probs.numel, 8);
  TU_OK(nb_plan_get(p, y[0], got, sizeof got));
  tu_assert_close("probs", got, probs.data, 8, 1e-6, 1e-5);
  TU_OK(nb_plan_get(p, y[1], got, sizeof got));
  tu_assert_close("logits", got, logits.data, 8, 1e-6, 1e-5);
  nb_plan_free(p);
  nb_state_free(st);
  nb_backend_free(be);
  nb_graph_free(g);
  nb_npy_free(&x);
  nb_npy_free(&probs);
  nb_npy_free(&logits);
  nb_onnx_free(m);
}

typedef struct {
  char dir[64], model[128], data[128];
} tmpdir;

static void tmp_setup(tmpdir *t) {
  snprintf(t->dir, sizeof t->dir, "/tmp/nb_onnx_ext_XXXXXX");
  assert_non_null(mkdtemp(t->dir));
  snprintf(t->model, sizeof t->model, "%s/model.onnx", t->dir);
  snprintf(t->data, sizeof t->data, "%s/w.bin", t->dir);
  /* 16 bytes of padding, then the 6 floats */
  float v[10] = {0, 0, 0, 0, 1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e3f};
  write_file(t->data, v, sizeof v);
}

static void tmp_teardown(tmpdir *t) {
  char p[192];
  const char *names[] = {"model.onnx", "w.bin", "link.bin", "fifo.bin", "sub/model.onnx", "sub"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(p, sizeof p, "%s/%s", t->dir, names[i]);
    remove(p);
  }
  rmdir(t->dir);
}

static void test_offset_and_length(void **state) {
  (void)state;
  tmpdir t;
  tmp_setup(&t);
  nb_pb_writer b;
  external_model(&b, "w.bin", "16", "24");
  write_file(t.model, b.buf, b.len);
  nb_onnx_model *m;
  TU_OK(nb_onnx_load(t.model, &m));
  float got[6], want[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e3f};
  run_no_inputs(m, got, 6);
  tu_assert_close("external w", got, want, 6, 0, 0);
  nb_onnx_free(m);
  /* no length: to the end of the file; a buffer load resolves beside its name */
  nb_pb_writer_free(&b);
  external_model(&b, "w.bin", "16", NULL);
  TU_OK(nb_onnx_load_buffer(b.buf, b.len, t.model, &m));
  run_no_inputs(m, got, 6);
  tu_assert_close("external w, no length", got, want, 6, 0, 0);
  nb_onnx_free(m);
  nb_pb_writer_free(&b);
  /* a model in a subfolder reaching up is refused even though the file exists */
  char sub[160];
  snprintf(sub, sizeof sub, "%s/sub", t.dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  snprintf(sub, sizeof sub, "%s/sub/model.onnx", t.dir);
  external_model(&b, "../w.bin", "16", "24");
  write_file(sub, b.buf, b.len);
  assert_int_equal(nb_onnx_load(sub, &m), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "relative path inside the model's folder"));
  nb_pb_writer_free(&b);
  tmp_teardown(&t);
}

static void test_hostile_locations(void **state) {
  (void)state;
  tmpdir t;
  tmp_setup(&t);
  char link[160];
  snprintf(link, sizeof link, "%s/link.bin", t.dir);
  assert_int_equal(symlink(NB_TEST_REF_DIR "/erf.txt", link), 0); /* a real file outside */
  char fifo[160];
  snprintf(fifo, sizeof fifo, "%s/fifo.bin", t.dir);
  assert_int_equal(mkfifo(fifo, 0600), 0); /* opening it would wait for a writer */
  static const struct {
    const char *loc, *off, *len, *part;
    nb_status st;
  } bad[] = {
      {"/etc/passwd", NULL, NULL, "relative path", NB_ERR_FORMAT},
      {"../w.bin", NULL, NULL, "relative path", NB_ERR_FORMAT},
      {"a/../../w.bin", NULL, NULL, "relative path", NB_ERR_FORMAT},
      {"..\\w.bin", NULL, NULL, "relative path", NB_ERR_FORMAT},
      {"C:\\w.bin", NULL, NULL, "relative path", NB_ERR_FORMAT},
      {"", NULL, NULL, "no location", NB_ERR_FORMAT},
      {NULL, "0", "24", "no location", NB_ERR_FORMAT},
      {"link.bin", NULL, NULL, "outside the model's folder", NB_ERR_FORMAT},
      {"missing.bin", NULL, NULL, "missing.bin", NB_ERR_IO},
      {".", NULL, NULL, "not a regular file", NB_ERR_FORMAT},
      {"fifo.bin", NULL, NULL, "not a regular file", NB_ERR_FORMAT},
      {"w.bin", "41", NULL, "past the end", NB_ERR_FORMAT},
      {"w.bin", "16", "40", "runs past the end", NB_ERR_FORMAT},
      {"w.bin", "0", "24", NULL, NB_OK}, /* fits: reads the padding as values */
      {"w.bin", "0", "20", "its shape and type need 24", NB_ERR_FORMAT},
      {"w.bin", NULL, NULL, "holds 40 bytes", NB_ERR_FORMAT},
      {"w.bin", "-4", "24", "offset is not", NB_ERR_FORMAT},
      {"w.bin", "0x10", "24", "offset is not", NB_ERR_FORMAT},
      {"w.bin", "16", "99999999999999999999999", "length is not", NB_ERR_FORMAT},
      {"w.bin", "9223372036854775807", "24", "past the end", NB_ERR_FORMAT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nb_pb_writer b;
    external_model(&b, bad[i].loc, bad[i].off, bad[i].len);
    write_file(t.model, b.buf, b.len);
    nb_pb_writer_free(&b);
    nb_onnx_model *m = NULL;
    nb_status st = nb_onnx_load(t.model, &m);
    if (st != bad[i].st)
      fail_msg("case %zu (%s): status %d, want %d: %s", i, bad[i].loc ? bad[i].loc : "NULL", st,
               bad[i].st, nb_last_error());
    if (st) {
      assert_null(m);
      assert_non_null(strstr(nb_last_error(), "model.onnx"));
      if (!strstr(nb_last_error(), bad[i].part))
        fail_msg("case %zu: '%s' lacks '%s'", i, nb_last_error(), bad[i].part);
    }
    nb_onnx_free(m);
  }
  tmp_teardown(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_python_external_model),
      cmocka_unit_test(test_offset_and_length),
      cmocka_unit_test(test_hostile_locations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
