/* libFuzzer entry points for the readers of model files, safetensors files,
 * checkpoints, LoRA adapters, IDX/MNIST, CIFAR-10 batches, CSV tables, BPE
 * vocabularies and character vocabularies (tests/fuzz_model.h, fuzz_io.h,
 * fuzz_data.h); ctest runs the deterministic tests/test_fuzz_more.c
 * instead. Built only with -DNABLA_FUZZ=ON and clang, once per reader:
 * NB_FUZZ_FN is the target (fz_model, fz_safetensors, ...) and
 * NB_FUZZ_SEEDS_FN its seeds (tests/fuzz_seeds.h). With NB_FUZZ_SEEDS=DIR
 * in the environment the seeds are written to DIR first, so
 *
 *   NB_FUZZ_SEEDS=corpus/csv build-fuzz/tests/fuzz_csv corpus/csv -max_total_time=180
 *
 * starts from them (docs/fuzzing.md lists every target). */
#define _POSIX_C_SOURCE 200809L
#include "../fuzz_seeds.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_seed(void *dir, const char *name, const void *data, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", (const char *)dir, name);
  if (!fz_tmp_write(path, data, n)) fprintf(stderr, "fuzz: cannot write seed %s\n", path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *dir = getenv("NB_FUZZ_SEEDS");
  if (dir && *dir) {
    if (nb_mkdirs(dir)) {
      fprintf(stderr, "fuzz: %s\n", nb_last_error());
      return 0;
    }
    int n = NB_FUZZ_SEEDS_FN(write_seed, (void *)dir);
    fprintf(stderr, "fuzz: wrote %d seeds to %s\n", n, dir);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fz_stats stats;
  const char *bad = NB_FUZZ_FN(data, size, "fuzz.cfg", &stats);
  if (bad) {
    fprintf(stderr, "fuzz: %s (%s)\n", bad, nb_last_error());
    abort(); /* libFuzzer saves the input that got here */
  }
  return 0;
}
