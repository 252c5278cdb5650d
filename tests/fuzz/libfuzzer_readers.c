/* libFuzzer entry points for the untrusted-file readers; ctest runs the
 * deterministic tests/test_fuzz_readers.c instead. Built only with
 * -DNABLA_FUZZ=ON and clang (the whole library is then compiled with
 * -fsanitize=fuzzer-no-link so libFuzzer sees its coverage), once per
 * reader: NB_FUZZ_READER is 1 (ONNX model), 2 (TensorProto .pb) or 3 (.npy).
 *
 *   CC=clang cmake -S . -B build-fuzz -DNABLA_FUZZ=ON -DNABLA_SANITIZE=ON -DNABLA_CUDA=OFF
 *   cmake --build build-fuzz --target fuzz_onnx
 *   build-fuzz/tests/fuzz_onnx -max_total_time=60 corpus/   (seed corpus/ with model files) */
#include "../fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fz_stats stats;
  const char *bad;
#if NB_FUZZ_READER == 1
  bad = fz_onnx(data, size, "fuzz.onnx", &stats);
#elif NB_FUZZ_READER == 2
  bad = fz_pb(data, size, "fuzz.pb", &stats);
#else
  bad = fz_npy(data, size, "fuzz.npy", &stats);
#endif
  if (bad) {
    fprintf(stderr, "fuzz: %s (%s)\n", bad, nb_last_error());
    abort(); /* libFuzzer saves the input that got here */
  }
  return 0;
}
