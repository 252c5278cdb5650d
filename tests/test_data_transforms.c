/* Preprocessing and augmentation, value for value: dataset allocation,
 * scaling to [0, 1], per-channel statistics and normalisation, per-feature
 * standardisation fitted on one split and applied to another, one-hot
 * labels, the zero-padded crop at every offset, the flip, and
 * nb_augment_apply's documented random draws. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_test_helpers.h"

static void test_dataset_alloc(void **s) {
  (void)s;
  nb_dataset d;
  int64_t shape[3] = {2, 3, 4};
  TU_OK(nb_dataset_alloc(&d, 5, 3, shape));
  assert_int_equal(d.n, 5);
  assert_int_equal(d.example_numel, 24);
  for (int i = 0; i < 5 * 24; i++) assert_true(d.x[i] == 0.0f);
  for (int i = 0; i < 5; i++) assert_int_equal(d.y[i], 0);
  assert_int_equal(d.num_classes, 0);
  const char *names[2] = {"neg", "pos"};
  TU_OK(nb_dataset_set_classes(&d, 2, names));
  assert_string_equal(d.class_names[1], "pos");
  assert_ptr_not_equal(d.class_names[1], names[1]); /* copied */
  TU_OK(nb_dataset_set_classes(&d, 3, NULL));       /* replaces (and frees) the names */
  assert_null(d.class_names);
  assert_int_equal(d.num_classes, 3);
  const char *bad_names[2] = {"a", NULL};
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_set_classes(&d, 2, bad_names), "class name 1 is NULL");
  assert_int_equal(d.num_classes, 3); /* unchanged */
  nb_dataset_free(&d);
  assert_null(d.x);
  nb_dataset_free(&d); /* twice is harmless */
  nb_dataset_free(NULL);

  TU_OK(nb_dataset_alloc(&d, 0, 3, shape)); /* empty is fine */
  nb_dataset_free(&d);
  int64_t big[8] = {1, 1, 1, 1, 1, 1, 1, 1}, zero[2] = {3, 0};
  DT_ERR(NB_ERR_SHAPE, nb_dataset_alloc(&d, 1, 8, big), "rank 8", "[1, 7]");
  DT_ERR(NB_ERR_SHAPE, nb_dataset_alloc(&d, 1, 0, big), "rank 0");
  DT_ERR(NB_ERR_SHAPE, nb_dataset_alloc(&d, 1, 2, zero), "[3, 0]");
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_alloc(&d, -1, 2, shape), "n = -1");
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_alloc(NULL, 1, 2, shape), "NULL");
}

/* A [2, 1, 2] dataset of 2 examples with chosen values. */
static void small(nb_dataset *d, const float v[8]) {
  int64_t shape[3] = {2, 1, 2};
  TU_OK(nb_dataset_alloc(d, 2, 3, shape));
  memcpy(d->x, v, 8 * sizeof(float));
}

static void test_scale_and_normalize(void **s) {
  (void)s;
  nb_dataset d;
  /* example 0: channel 0 = {0, 51}, channel 1 = {102, 255}; example 1: ... */
  const float v[8] = {0, 51, 102, 255, 153, 204, 255, 0};
  small(&d, v);
  TU_OK(nb_dataset_scale(&d, 0, 255));
  for (int i = 0; i < 8; i++) assert_float_equal(d.x[i], v[i] / 255.0f, 1e-7);
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_scale(&d, 3, 3), "[3, 3]");

  /* channel 0 over both examples: {0, .2, .6, .8}; channel 1: {.4, 1, 1, 0} */
  float mean[2], std[2];
  TU_OK(nb_dataset_channel_stats(&d, mean, std));
  assert_float_equal(mean[0], 0.4, 1e-6);
  assert_float_equal(std[0], sqrt((0.16 + 0.04 + 0.04 + 0.16) / 4), 1e-6);
  assert_float_equal(mean[1], 0.6, 1e-6);
  assert_float_equal(std[1], sqrt((0.04 + 0.16 + 0.16 + 0.36) / 4), 1e-6);
  TU_OK(nb_dataset_normalize(&d, mean, std));
  const int chan[8] = {0, 0, 1, 1, 0, 0, 1, 1};
  for (int i = 0; i < 8; i++)
    assert_float_equal(d.x[i], (v[i] / 255.0 - mean[chan[i]]) / std[chan[i]], 1e-5);
  /* after normalising with its own statistics: mean 0, std 1 */
  TU_OK(nb_dataset_channel_stats(&d, mean, std));
  for (int c = 0; c < 2; c++) {
    assert_float_equal(mean[c], 0, 1e-6);
    assert_float_equal(std[c], 1, 1e-5);
  }
  const float m[2] = {0, 0}, zero_std[2] = {1, 0};
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_normalize(&d, m, zero_std), "channel 1", "std 0");
  nb_dataset_free(&d);

  /* the MNIST constants on a [1, 28, 28]-like dataset: one channel */
  int64_t ms[3] = {1, 2, 2};
  TU_OK(nb_dataset_alloc(&d, 1, 3, ms));
  d.x[0] = 0.1307f;
  d.x[1] = 0.4388f;
  const float mm[1] = {0.1307f}, ss[1] = {0.3081f};
  TU_OK(nb_dataset_normalize(&d, mm, ss));
  assert_float_equal(d.x[0], 0, 1e-7);
  assert_float_equal(d.x[1], 1, 1e-5);
  assert_float_equal(d.x[2], -0.1307 / 0.3081, 1e-6);
  nb_dataset_free(&d);

  /* rank 1: one channel over all features */
  int64_t fs[1] = {3};
  TU_OK(nb_dataset_alloc(&d, 2, 1, fs));
  for (int i = 0; i < 6; i++) d.x[i] = (float)i;
  TU_OK(nb_dataset_channel_stats(&d, mean, std));
  assert_float_equal(mean[0], 2.5, 1e-6);
  assert_float_equal(std[0], sqrt(17.5 / 6), 1e-6);
  nb_dataset_free(&d);
  nb_dataset empty;
  memset(&empty, 0, sizeof empty);
  DT_ERR(NB_ERR_INVALID_ARG, nb_dataset_channel_stats(&empty, mean, std), "empty");
}

static void test_standardizer(void **s) {
  (void)s;
  nb_dataset train, test;
  int64_t fs[1] = {3};
  /* features: a = {1, 2, 3, 6}, b = {10, 10, 10, 10} (constant), c = {-1, 1, -1, 1} */
  TU_OK(nb_dataset_alloc(&train, 4, 1, fs));
  const float tv[12] = {1, 10, -1, 2, 10, 1, 3, 10, -1, 6, 10, 1};
  memcpy(train.x, tv, sizeof tv);
  TU_OK(nb_dataset_alloc(&test, 2, 1, fs));
  const float ev[6] = {3, 11, 0, 0, 10, 2};
  memcpy(test.x, ev, sizeof ev);

  nb_standardizer st;
  TU_OK(nb_standardizer_fit(&train, &st));
  assert_int_equal(st.numel, 3);
  assert_float_equal(st.mean[0], 3, 1e-6);
  assert_float_equal(st.std[0], sqrt((4 + 1 + 0 + 9) / 4.0), 1e-6);
  assert_float_equal(st.mean[1], 10, 1e-6);
  assert_float_equal(st.std[1], 1, 0); /* constant: 1, not 0 */
  assert_float_equal(st.mean[2], 0, 1e-6);
  assert_float_equal(st.std[2], 1, 1e-6);
  TU_OK(nb_standardizer_apply(&st, &train));
  TU_OK(nb_standardizer_apply(&st, &test));
  const double sa = sqrt(3.5);
  const double want_train[12] = {-2 / sa, 0, -1, -1 / sa, 0, 1, 0, 0, -1, 3 / sa, 0, 1};
  const double want_test[6] = {0, 1, 0, -3 / sa, 0, 2}; /* the train split's statistics */
  for (int i = 0; i < 12; i++) assert_float_equal(train.x[i], want_train[i], 1e-6);
  for (int i = 0; i < 6; i++) assert_float_equal(test.x[i], want_test[i], 1e-6);

  nb_dataset other;
  int64_t os[1] = {4};
  TU_OK(nb_dataset_alloc(&other, 1, 1, os));
  DT_ERR(NB_ERR_SHAPE, nb_standardizer_apply(&st, &other), "3 features", "4 per example");
  nb_dataset_free(&other);
  nb_standardizer_free(&st);
  nb_standardizer_free(&st);
  DT_ERR(NB_ERR_INVALID_ARG, nb_standardizer_apply(&st, &test), "not fitted");
  nb_dataset_free(&train);
  nb_dataset_free(&test);
}

static void test_one_hot(void **s) {
  (void)s;
  const int64_t labels[4] = {2, 0, 1, 2};
  float out[12];
  memset(out, 0xff, sizeof out);
  TU_OK(nb_labels_one_hot(labels, 4, 3, out));
  const float want[12] = {0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1};
  assert_memory_equal(out, want, sizeof want);
  const int64_t bad[2] = {0, 3};
  DT_ERR(NB_ERR_INVALID_ARG, nb_labels_one_hot(bad, 2, 3, out), "label 3 at index 1", "[0, 3)");
  DT_ERR(NB_ERR_INVALID_ARG, nb_labels_one_hot(labels, 4, 0, out), "num_classes = 0");
  TU_OK(nb_labels_one_hot(NULL, 0, 3, NULL));
}

/* src[c][i][j] = 100 c + 10 i + j + 1 (never 0, so padding is visible). */
static void tiny(float *x, int c, int h, int w) {
  for (int k = 0; k < c; k++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++) x[(k * h + i) * w + j] = (float)(100 * k + 10 * i + j + 1);
}

static void test_crop_and_flip(void **s) {
  (void)s;
  enum { C = 2, H = 3, W = 4 };
  float src[C * H * W], dst[C * H * W];
  tiny(src, C, H, W);
  for (int pad = 0; pad <= 5; pad++)
    for (int dy = 0; dy <= 2 * pad; dy++)
      for (int dx = 0; dx <= 2 * pad; dx++) {
        TU_OK(nb_crop_padded(src, dst, C, H, W, pad, dy, dx));
        for (int k = 0; k < C; k++)
          for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
              int si = i + dy - pad, sj = j + dx - pad;
              float want = si >= 0 && si < H && sj >= 0 && sj < W ? src[(k * H + si) * W + sj] : 0;
              if (dst[(k * H + i) * W + j] != want)
                fail_msg("pad %d offset (%d, %d): [%d][%d][%d] = %g, want %g", pad, dy, dx, k, i, j,
                         (double)dst[(k * H + i) * W + j], (double)want);
            }
      }
  /* one spelled out: pad 1, offset (0, 2) shifts down one row and left one column */
  TU_OK(nb_crop_padded(src, dst, 1, H, W, 1, 0, 2));
  const float want[12] = {0, 0, 0, 0, 2, 3, 4, 0, 12, 13, 14, 0};
  assert_memory_equal(dst, want, sizeof want);
  DT_ERR(NB_ERR_INVALID_ARG, nb_crop_padded(src, dst, C, H, W, 1, 3, 0), "offset (3, 0)", "[0, 2]");
  DT_ERR(NB_ERR_INVALID_ARG, nb_crop_padded(src, dst, C, H, W, -1, 0, 0), "pad -1");

  memcpy(dst, src, sizeof src);
  nb_hflip(dst, C, H, W);
  for (int r = 0; r < C * H; r++)
    for (int j = 0; j < W; j++) assert_true(dst[r * W + j] == src[r * W + W - 1 - j]);
  float odd[3] = {1, 2, 3};
  nb_hflip(odd, 1, 1, 3);
  assert_true(odd[0] == 3 && odd[1] == 2 && odd[2] == 1);
}

static void test_augment_apply(void **s) {
  (void)s;
  enum { C = 3, H = 4, W = 5 };
  float src[C * H * W], got[C * H * W], want[C * H * W];
  tiny(src, C, H, W);
  int64_t shape[3] = {C, H, W};
  nb_augment a = {2, 1};
  int flips = 0;
  for (uint64_t seed = 0; seed < 64; seed++) {
    nb_rng r, mirror;
    nb_rng_seed(&r, seed);
    mirror = r;
    TU_OK(nb_augment_apply(&a, 3, shape, src, got, &r));
    /* the documented draws: dy, dx, then the flip bit */
    int dy = (int)(nb_rng_next(&mirror) % 5), dx = (int)(nb_rng_next(&mirror) % 5);
    int flip = (int)(nb_rng_next(&mirror) & 1);
    TU_OK(nb_crop_padded(src, want, C, H, W, 2, dy, dx));
    if (flip) nb_hflip(want, C, H, W);
    flips += flip;
    assert_memory_equal(got, want, sizeof want);
    assert_memory_equal(&r, &mirror, sizeof r); /* and no other draws */
  }
  assert_true(flips > 10 && flips < 54);

  /* flip only, on [H, W]: one draw */
  nb_augment f = {0, 1};
  int64_t hw[2] = {H, W};
  nb_rng r, mirror;
  nb_rng_seed(&r, 3);
  mirror = r;
  TU_OK(nb_augment_apply(&f, 2, hw, src, got, &r));
  memcpy(want, src, H * W * sizeof(float));
  if (nb_rng_next(&mirror) & 1) nb_hflip(want, 1, H, W);
  assert_memory_equal(got, want, H * W * sizeof(float));
  assert_memory_equal(&r, &mirror, sizeof r);

  /* nothing to do: a copy, no draws */
  nb_augment none = {0, 0};
  TU_OK(nb_augment_apply(&none, 3, shape, src, got, &r));
  assert_memory_equal(got, src, sizeof src);
  assert_memory_equal(&r, &mirror, sizeof r);

  int64_t flat[1] = {4};
  DT_ERR(NB_ERR_SHAPE, nb_augment_apply(&a, 1, flat, src, got, &r), "rank 1");
  nb_augment bad = {0, 2};
  DT_ERR(NB_ERR_INVALID_ARG, nb_augment_apply(&bad, 3, shape, src, got, &r), "hflip 2");
  DT_ERR(NB_ERR_INVALID_ARG, nb_augment_apply(&a, 3, shape, src, got, NULL), "NULL");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dataset_alloc), cmocka_unit_test(test_scale_and_normalize),
      cmocka_unit_test(test_standardizer),  cmocka_unit_test(test_one_hot),
      cmocka_unit_test(test_crop_and_flip), cmocka_unit_test(test_augment_apply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
