#define _DEFAULT_SOURCE /* mkdtemp */
/* The training loop: it learns, it writes its logs and files, and a run of
 * 2 epochs equals 1 epoch + --resume for 1 more, bit for bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

static const char *tiny_cfg = "[net]\n"
                              "input = 1, 8, 8\n"
                              "classes = 3\n"
                              "[train]\n"
                              "optimizer = adam\n"
                              "lr = 0.01\n"
                              "epochs = 2\n"
                              "batch = 16\n"
                              "[conv2d c1]\n"
                              "out = 4\n"
                              "kernel = 3\n"
                              "activation = relu\n"
                              "[dropout]\n"
                              "p = 0.1\n"
                              "[flatten]\n"
                              "[linear fc]\n"
                              "out = 3\n";

/* label = which third of the image holds the brightest row band */
static void make_data(nb_dataset *d, int64_t n, uint64_t seed) {
  int64_t shape[3] = {1, 8, 8};
  TU_OK(nb_dataset_alloc(d, n, 3, shape));
  TU_OK(nb_dataset_set_classes(d, 3, NULL));
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) {
    int64_t label = (int64_t)(nb_rng_next(&r) % 3);
    d->y[i] = label;
    for (int p = 0; p < 64; p++) {
      int row = p / 8;
      float v = (float)nb_rng_uniform(&r) * 0.5f;
      if (row / 3 == label) v += 1.0f;
      d->x[i * 64 + p] = v;
    }
  }
}

static void run(const nb_model *m, const nb_dataset *train, const nb_dataset *test, int epochs,
                const char *out, const char *resume, tu_snapshot *snap, nb_fit_result *res) {
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_options o = nb_fit_defaults();
  o.epochs = epochs;
  o.out_dir = out;
  o.resume = resume;
  o.progress = NB_PROGRESS_OFF;
  FILE *quiet = tmpfile();
  o.log = quiet;
  TU_OK(nb_fit(m, be, st, train, test, &o, res));
  fclose(quiet);
  tu_snapshot_take(st, snap);
  nb_state_free(st);
  nb_backend_free(be);
}

static void test_fit_learns_and_resumes_exactly(void **state) {
  (void)state;
  nb_set_num_threads(1); /* deterministic summation order */
  nb_model *m;
  TU_OK(nb_model_parse(tiny_cfg, "tiny.cfg", &m));
  nb_dataset train, test;
  make_data(&train, 320, 1);
  make_data(&test, 90, 2);
  char dir[] = "/tmp/nb_fit_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char a[300], b[300], ckpt[400];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  tu_snapshot full, half, resumed;
  nb_fit_result r1, r2, r3;
  run(m, &train, &test, 2, a, NULL, &full, &r1);
  assert_int_equal(r1.epochs, 2);
  assert_int_equal(r1.steps, 2 * (320 / 16));
  assert_true(r1.test_accuracy > 0.9); /* an easy task */
  run(m, &train, &test, 1, b, NULL, &half, &r2);
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", b);
  run(m, &train, &test, 2, b, ckpt, &resumed, &r3);
  assert_int_equal(r3.epochs, 2);
  assert_int_equal(r3.steps, r1.steps);
  tu_snapshot_assert_equal(&full, &resumed, "2 epochs vs 1 + resume 1");
  assert_true(memcmp(full.v[0], half.v[0], full.bytes[0]) != 0);
  /* files: weights without optimizer state, logs with one row per epoch */
  nb_safetensors *w;
  char path[400];
  snprintf(path, sizeof path, "%s/weights.safetensors", a);
  TU_OK(nb_safetensors_open(path, &w));
  assert_true(nb_safetensors_find(w, "c1.weight") >= 0);
  assert_true(nb_safetensors_find(w, "c1.weight.adam_m") < 0);
  nb_safetensors_close(w);
  snprintf(path, sizeof path, "%s/log.csv", b);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  int lines = 0, ch;
  while ((ch = fgetc(f)) != EOF) lines += ch == '\n';
  fclose(f);
  assert_int_equal(lines, 3); /* header + epoch 1 + resumed epoch 2 */
  tu_snapshot_free(&full);
  tu_snapshot_free(&half);
  tu_snapshot_free(&resumed);
  nb_dataset_free(&train);
  nb_dataset_free(&test);
  nb_model_free(m);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
  nb_set_num_threads(0);
}

static void test_fit_errors(void **state) {
  (void)state;
  nb_model *m;
  TU_OK(nb_model_parse(tiny_cfg, "tiny.cfg", &m));
  nb_dataset few;
  make_data(&few, 8, 3); /* fewer than one batch */
  nb_backend *be;
  nb_state *st;
  TU_OK(nb_backend_new("cpu", &be));
  TU_OK(nb_state_new(be, &st));
  nb_fit_result r;
  nb_fit_options o = nb_fit_defaults();
  o.progress = NB_PROGRESS_OFF;
  assert_int_not_equal(nb_fit(m, be, st, &few, NULL, &o, &r), NB_OK);
  assert_non_null(strstr(nb_last_error(), "fewer than one batch"));
  nb_dataset train;
  make_data(&train, 64, 4);
  o.resume = "/nonexistent/checkpoint.safetensors";
  FILE *quiet = tmpfile();
  o.log = quiet;
  assert_int_not_equal(nb_fit(m, be, st, &train, NULL, &o, &r), NB_OK);
  assert_non_null(strstr(nb_last_error(), "/nonexistent/checkpoint.safetensors"));
  fclose(quiet);
  nb_dataset_free(&few);
  nb_dataset_free(&train);
  nb_state_free(st);
  nb_backend_free(be);
  nb_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fit_learns_and_resumes_exactly),
      cmocka_unit_test(test_fit_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
