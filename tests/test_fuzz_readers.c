/* Deterministic mutation fuzzing of the untrusted-file readers (ONNX models,
 * TensorProto .pb files, .npy arrays), bounded in time so CI runs it on
 * every build. Real files are the seeds (tests/data fixtures, and a few ONNX
 * node tests when ../shared/data is present); tests/fuzz_mutate.h mutates
 * them (bit flips, interesting bytes, truncation, corrupted varints such as
 * protobuf length fields, inserted, deleted and copied runs, random tails,
 * .npy header text edits) and tests/fuzz_targets.h feeds the result through
 * the reader.
 *
 * Environment: NB_FUZZ_SEED (default 1), NB_FUZZ_SECONDS per reader
 * (default 2), NB_FUZZ_ITERS per reader (default 100000; the time bound
 * usually ends the run first), NB_FUZZ_ONE=K runs only iteration K of each
 * reader (to reproduce a failure, whose message names K and the seed). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"
/* after test_util.h: it uses cmocka */
#include "fuzz_mutate.h"
#include "fuzz_targets.h"

#define DATA  NB_TEST_REF_DIR "/../data/"
#define NODES NB_TEST_REF_DIR "/../../../shared/data/onnx-node-tests/"

static const char *const node_tests[] = {
    "test_conv_with_strides_and_asymmetric_padding",
    "test_gemm_all_attributes",
    "test_resize_upsample_scales_linear",
    "test_reshape_extended_dims",
    "test_slice",
    "test_layer_normalization_4d_axis0",
    "test_batchnorm_example",
    "test_gather_0",
    "test_maxpool_2d_pads",
    "test_cast_FLOAT_to_FLOAT16",
    "test_dequantizelinear_axis",
    "test_gelu_default_1_expanded",
};

static void test_fuzz_onnx(void **state) {
  (void)state;
  corpus c = {0};
  corpus_add_file(&c, DATA "onnx/mlp_external/model.onnx");
  corpus_add_file(&c, DATA "onnx/tiny_classifier/model.onnx");
  char path[512];
  for (size_t i = 0; i < sizeof node_tests / sizeof *node_tests; i++) {
    snprintf(path, sizeof path, NODES "%s/model.onnx", node_tests[i]);
    corpus_add_file(&c, path);
  }
  fuzz_corpus("onnx", &c, fz_onnx, FZ_MUT_BINARY, NULL, 2);
  corpus_free(&c);
}

static void test_fuzz_pb(void **state) {
  (void)state;
  corpus c = {0};
  char path[512];
  for (size_t i = 0; i < sizeof node_tests / sizeof *node_tests; i++)
    for (int k = 0; k < 3; k++) {
      snprintf(path, sizeof path, NODES "%s/test_data_set_0/input_%d.pb", node_tests[i], k);
      corpus_add_file(&c, path);
    }
  if (!c.n) { /* without the shared data: two tensors of our own */
    static const uint8_t f32[] = {0x08, 0x02, 0x08, 0x03, 0x10, 0x01, 0x42, 0x01, 'x',
                                  0x4a, 24,   0,    0,    0x80, 0x3f, 0,    0,    0,
                                  0x40, 0,    0,    0x40, 0x40, 0,    0,    0x80, 0x40,
                                  0,    0,    0xa0, 0x40, 0,    0,    0xc0, 0x40};
    static const uint8_t i64[] = {0x08, 0x03, 0x10, 0x07, 0x3a, 0x03, 0x01, 0x7f, 0x05};
    const uint8_t *own[2] = {f32, i64};
    size_t lens[2] = {sizeof f32, sizeof i64};
    for (int k = 0; k < 2; k++) corpus_add_bytes(&c, k ? "i64.pb" : "f32.pb", own[k], lens[k]);
  }
  fuzz_corpus("pb", &c, fz_pb, FZ_MUT_BINARY, NULL, 2);
  corpus_free(&c);
}

static void test_fuzz_npy(void **state) {
  (void)state;
  corpus c = {0};
  const char *files[] = {"f4", "f4_v2", "f4_v3", "f8",    "f2",     "i1",
                         "i8", "u2",    "b1",    "be_i8", "scalar", "empty"};
  char path[512];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, sizeof path, DATA "npy/%s.npy", files[i]);
    corpus_add_file(&c, path);
  }
  fuzz_corpus("npy", &c, fz_npy, FZ_MUT_NPY, NULL, 2);
  corpus_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fuzz_onnx),
      cmocka_unit_test(test_fuzz_pb),
      cmocka_unit_test(test_fuzz_npy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
