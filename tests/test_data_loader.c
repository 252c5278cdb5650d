/* The batch loader: every epoch is a permutation (the documented
 * Fisher-Yates on nb_rng), batches and drop_last have the right sizes, the
 * same seed gives the same batches, the prefetch thread gives exactly the
 * batches of the synchronous path whatever the timing, a saved position
 * resumes with the very batches an uninterrupted run sees, and augmented
 * examples are crops/flips of their source image. */
#define _XOPEN_SOURCE 700
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data_test_helpers.h"

/* n examples of shape [c, h, w]: x = 1000 i + k, label i % classes. */
static void make_ds(nb_dataset *d, int64_t n, int64_t c, int64_t h, int64_t w, int classes) {
  int64_t shape[3] = {c, h, w};
  TU_OK(nb_dataset_alloc(d, n, 3, shape));
  for (int64_t i = 0; i < n; i++) {
    for (int64_t k = 0; k < d->example_numel; k++)
      d->x[i * d->example_numel + k] = (float)(1000 * i + k);
    d->y[i] = i % classes;
  }
  TU_OK(nb_dataset_set_classes(d, classes, NULL));
}

/* A copy of one batch, to compare batches from different loaders. */
typedef struct {
  nb_batch b;
  float *x, *oh;
  int64_t *y, *idx;
} saved;

static void save(saved *s, const nb_batch *b, int64_t numel, int classes) {
  s->b = *b;
  s->x = malloc((size_t)(b->size * numel) * sizeof(float));
  s->y = malloc((size_t)b->size * sizeof(int64_t));
  s->idx = malloc((size_t)b->size * sizeof(int64_t));
  memcpy(s->x, b->x, (size_t)(b->size * numel) * sizeof(float));
  memcpy(s->y, b->y, (size_t)b->size * sizeof(int64_t));
  memcpy(s->idx, b->indices, (size_t)b->size * sizeof(int64_t));
  s->oh = NULL;
  if (b->y_onehot) {
    s->oh = malloc((size_t)(b->size * classes) * sizeof(float));
    memcpy(s->oh, b->y_onehot, (size_t)(b->size * classes) * sizeof(float));
  }
}

static void unsave(saved *s) {
  free(s->x);
  free(s->y);
  free(s->idx);
  free(s->oh);
}

static void assert_same(const char *what, int64_t t, const saved *a, const nb_batch *b,
                        int64_t numel, int classes) {
  if (a->b.size != b->size || a->b.epoch != b->epoch || a->b.index != b->index ||
      a->b.last != b->last)
    fail_msg("%s: batch %lld: (size %lld, epoch %lld, index %lld, last %d) vs (%lld, %lld, %lld, "
             "%d)",
             what, (long long)t, (long long)a->b.size, (long long)a->b.epoch, (long long)a->b.index,
             a->b.last, (long long)b->size, (long long)b->epoch, (long long)b->index, b->last);
  if (memcmp(a->idx, b->indices, (size_t)b->size * sizeof(int64_t)) ||
      memcmp(a->y, b->y, (size_t)b->size * sizeof(int64_t)) ||
      memcmp(a->x, b->x, (size_t)(b->size * numel) * sizeof(float)))
    fail_msg("%s: batch %lld differs", what, (long long)t);
  if ((a->oh == NULL) != (b->y_onehot == NULL) ||
      (a->oh && memcmp(a->oh, b->y_onehot, (size_t)(b->size * classes) * sizeof(float))))
    fail_msg("%s: batch %lld: one-hot labels differ", what, (long long)t);
}

/* The documented order: identity, Fisher-Yates from the top with
 * nb_rng_next % (i + 1), then one draw for the epoch's augmentation. */
static void reference_epoch(nb_rng *r, int64_t n, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(nb_rng_next(r) % (uint64_t)(i + 1)), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  (void)nb_rng_next(r);
}

static void test_epochs_are_permutations(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 10, 1, 2, 3, 3);
  for (int prefetch = 0; prefetch < 2; prefetch++) {
    nb_loader_options o = nb_loader_defaults(3);
    o.seed = 42;
    o.prefetch = prefetch;
    nb_loader *l;
    TU_OK(nb_loader_new(&d, &o, &l));
    assert_int_equal(nb_loader_batches_per_epoch(l), 4);
    nb_rng ref;
    nb_rng_seed(&ref, 42);
    int64_t perm[10], prev[10];
    for (int64_t e = 0; e < 4; e++) {
      reference_epoch(&ref, 10, perm);
      int seen[10] = {0};
      int64_t pos = 0;
      for (int64_t b = 0; b < 4; b++) {
        nb_batch bt;
        TU_OK(nb_loader_next(l, &bt));
        assert_int_equal(bt.epoch, e);
        assert_int_equal(bt.index, b);
        assert_int_equal(bt.size, b < 3 ? 3 : 1); /* the last partial batch is kept */
        assert_int_equal(bt.last, b == 3);
        assert_null(bt.y_onehot);
        for (int64_t k = 0; k < bt.size; k++, pos++) {
          const int64_t row = bt.indices[k];
          assert_int_equal(row, perm[pos]);
          assert_false(seen[row]);
          seen[row] = 1;
          assert_int_equal(bt.y[k], row % 3);
          for (int64_t f = 0; f < 6; f++) assert_true(bt.x[k * 6 + f] == (float)(1000 * row + f));
        }
      }
      for (int i = 0; i < 10; i++) assert_true(seen[i]);
      if (e > 0) assert_memory_not_equal(perm, prev, sizeof perm); /* reshuffled */
      memcpy(prev, perm, sizeof perm);
    }
    nb_loader_free(l);
  }
  nb_dataset_free(&d);
}

static void test_no_shuffle_and_drop_last(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 10, 1, 1, 2, 2);
  nb_loader_options o = nb_loader_defaults(3);
  o.shuffle = 0;
  o.drop_last = 1;
  nb_loader *l;
  TU_OK(nb_loader_new(&d, &o, &l));
  assert_int_equal(nb_loader_batches_per_epoch(l), 3);
  for (int64_t t = 0; t < 9; t++) {
    nb_batch b;
    TU_OK(nb_loader_next(l, &b));
    assert_int_equal(b.size, 3);
    assert_int_equal(b.epoch, t / 3);
    assert_int_equal(b.index, t % 3);
    assert_int_equal(b.last, t % 3 == 2);
    for (int k = 0; k < 3; k++) assert_int_equal(b.indices[k], (t % 3) * 3 + k); /* in order */
  }
  nb_loader_free(l);

  /* shuffled with drop_last: 9 distinct examples an epoch, one left out */
  o.shuffle = 1;
  TU_OK(nb_loader_new(&d, &o, &l));
  for (int e = 0; e < 5; e++) {
    int seen[10] = {0}, distinct = 0;
    for (int b = 0; b < 3; b++) {
      nb_batch bt;
      TU_OK(nb_loader_next(l, &bt));
      assert_int_equal(bt.epoch, e);
      for (int k = 0; k < 3; k++) distinct += !seen[bt.indices[k]]++;
    }
    assert_int_equal(distinct, 9);
  }
  nb_loader_free(l);

  /* batch_size = n: one full batch an epoch either way */
  o = nb_loader_defaults(10);
  o.drop_last = 1;
  TU_OK(nb_loader_new(&d, &o, &l));
  assert_int_equal(nb_loader_batches_per_epoch(l), 1);
  nb_batch b;
  TU_OK(nb_loader_next(l, &b));
  assert_int_equal(b.size, 10);
  assert_true(b.last);
  nb_loader_free(l);
  o.batch_size = 11;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&d, &o, &l), "drop_last", "no batch");
  assert_null(l);
  o.drop_last = 0;
  TU_OK(nb_loader_new(&d, &o, &l));
  assert_int_equal(nb_loader_batches_per_epoch(l), 1);
  TU_OK(nb_loader_next(l, &b));
  assert_int_equal(b.size, 10);
  nb_loader_free(l);
  nb_dataset_free(&d);
}

static void test_seed_determinism(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 50, 1, 4, 4, 5);
  nb_loader_options o = nb_loader_defaults(8);
  o.seed = 7;
  o.augment = (nb_augment){1, 1};
  nb_loader *a, *b, *c;
  TU_OK(nb_loader_new(&d, &o, &a));
  TU_OK(nb_loader_new(&d, &o, &b));
  o.seed = 8;
  TU_OK(nb_loader_new(&d, &o, &c));
  int differs = 0;
  for (int64_t t = 0; t < 21; t++) {
    nb_batch ba, bb, bc;
    TU_OK(nb_loader_next(a, &ba));
    saved sa;
    save(&sa, &ba, 16, 5);
    TU_OK(nb_loader_next(b, &bb));
    assert_same("same seed", t, &sa, &bb, 16, 5);
    TU_OK(nb_loader_next(c, &bc));
    differs |= memcmp(sa.idx, bc.indices, (size_t)bc.size * sizeof(int64_t)) != 0;
    unsave(&sa);
  }
  assert_true(differs);
  nb_loader_free(a);
  nb_loader_free(b);
  nb_loader_free(c);
  nb_dataset_free(&d);
}

/* Sleeps a pseudo-random 0..200 microseconds, to vary who waits on whom. */
static void jitter(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  struct timespec ts = {0, (long)((*state >> 16) % 200) * 1000};
  nanosleep(&ts, NULL);
}

static void test_prefetch_matches_sync(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 257, 3, 8, 8, 10);
  const int64_t F = d.example_numel;
  const int configs = 3;
  for (int cfg = 0; cfg < configs; cfg++) {
    nb_loader_options o = nb_loader_defaults(cfg == 2 ? 1 : 32);
    o.seed = 1234 + (uint64_t)cfg;
    o.one_hot = cfg != 1;
    o.drop_last = cfg == 1;
    o.augment = cfg == 0 ? (nb_augment){4, 1} : (nb_augment){0, cfg == 1};
    nb_loader *sync, *pre;
    o.prefetch = 0;
    TU_OK(nb_loader_new(&d, &o, &sync));
    o.prefetch = 1;
    TU_OK(nb_loader_new(&d, &o, &pre));
    const int64_t steps = cfg == 2 ? 600 : 40;
    unsigned js = 99;
    for (int64_t t = 0; t < steps; t++) {
      nb_batch bs, bp;
      TU_OK(nb_loader_next(sync, &bs));
      saved ss;
      save(&ss, &bs, F, 10);
      if (t % 3 == 0) jitter(&js); /* the thread is sometimes ahead, sometimes behind */
      TU_OK(nb_loader_next(pre, &bp));
      assert_same("prefetch vs sync", t, &ss, &bp, F, 10);
      if (bp.y_onehot)
        for (int64_t k = 0; k < bp.size; k++)
          for (int c = 0; c < 10; c++)
            assert_true(bp.y_onehot[k * 10 + c] == (c == bp.y[k] ? 1.0f : 0.0f));
      unsave(&ss);
    }
    nb_loader_free(sync);
    nb_loader_free(pre);
  }
  nb_dataset_free(&d);
}

static void test_resume(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 23, 1, 3, 3, 4);
  nb_loader_options o = nb_loader_defaults(5); /* 5 batches an epoch, the last of 3 */
  o.seed = 2024;
  o.augment = (nb_augment){1, 1};
  o.one_hot = 1;
  /* the uninterrupted run */
  enum { T = 30 };
  saved ref[T];
  nb_loader_pos pos_at[T + 1];
  nb_loader *l;
  TU_OK(nb_loader_new(&d, &o, &l));
  for (int t = 0; t < T; t++) {
    TU_OK(nb_loader_get_pos(l, &pos_at[t]));
    assert_int_equal(pos_at[t].epoch, t / 5);
    assert_int_equal(pos_at[t].batch, t % 5);
    nb_batch b;
    TU_OK(nb_loader_next(l, &b));
    save(&ref[t], &b, 9, 4);
  }
  TU_OK(nb_loader_get_pos(l, &pos_at[T]));
  assert_int_equal(pos_at[T].epoch, 6);
  assert_int_equal(pos_at[T].batch, 0);

  /* rewinding the same loader replays exactly */
  TU_OK(nb_loader_set_pos(l, &pos_at[7]));
  for (int t = 7; t < T; t++) {
    nb_batch b;
    TU_OK(nb_loader_next(l, &b));
    assert_same("rewind", t, &ref[t], &b, 9, 4);
  }
  nb_loader_free(l);

  /* a fresh loader (as after a restart), from mid-epoch and from an epoch
   * boundary, with and without prefetch; its own seed does not matter */
  const int starts[4] = {3, 5, 14, 29};
  for (int k = 0; k < 4; k++)
    for (int prefetch = 0; prefetch < 2; prefetch++) {
      nb_loader_options o2 = o;
      o2.prefetch = prefetch;
      o2.seed = 999;
      TU_OK(nb_loader_new(&d, &o2, &l));
      nb_batch b;
      TU_OK(nb_loader_next(l, &b));        /* consumed before restoring: must not matter */
      nb_loader_pos p = pos_at[starts[k]]; /* a copy, as read back from a checkpoint */
      TU_OK(nb_loader_set_pos(l, &p));
      nb_loader_pos q;
      TU_OK(nb_loader_get_pos(l, &q));
      assert_memory_equal(&p, &q, sizeof p);
      for (int t = starts[k]; t < T; t++) {
        TU_OK(nb_loader_next(l, &b));
        assert_same("resume", t, &ref[t], &b, 9, 4);
      }
      nb_loader_free(l);
    }
  TU_OK(nb_loader_new(&d, &o, &l));
  nb_loader_pos bad = pos_at[0];
  bad.batch = 5;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_set_pos(l, &bad), "batch 5", "[0, 5)");
  bad.batch = 0;
  bad.epoch = -1;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_set_pos(l, &bad), "epoch -1");
  nb_batch b;
  TU_OK(nb_loader_next(l, &b)); /* still usable after a refused position */
  assert_same("after a refused position", 0, &ref[0], &b, 9, 4);
  nb_loader_free(l);
  for (int t = 0; t < T; t++) unsave(&ref[t]);
  nb_dataset_free(&d);
}

/* Every augmented example must be one of the (2 pad + 1)^2 x 2 crops/flips
 * of its source image; over many epochs all of them must turn up. */
static void test_augmentation(void **s) {
  (void)s;
  nb_dataset d;
  make_ds(&d, 2, 2, 3, 4, 2); /* [2, 3, 4] images */
  const int64_t F = 24;
  nb_loader_options o = nb_loader_defaults(2);
  o.seed = 5;
  o.augment = (nb_augment){1, 1};
  nb_loader *l;
  TU_OK(nb_loader_new(&d, &o, &l));
  int hits[2][3][3][2] = {{{{0}}}};
  float cand[24];
  int changed_between_epochs = 0;
  float first_epoch[2][24];
  for (int e = 0; e < 300; e++) {
    nb_batch b;
    TU_OK(nb_loader_next(l, &b));
    assert_int_equal(b.size, 2);
    for (int k = 0; k < 2; k++) {
      const int64_t row = b.indices[k];
      const float *got = b.x + k * F;
      int matched = 0;
      for (int dy = 0; dy < 3 && !matched; dy++)
        for (int dx = 0; dx < 3 && !matched; dx++)
          for (int fl = 0; fl < 2 && !matched; fl++) {
            TU_OK(nb_crop_padded(d.x + row * F, cand, 2, 3, 4, 1, dy, dx));
            if (fl) nb_hflip(cand, 2, 3, 4);
            if (!memcmp(cand, got, sizeof cand)) {
              matched = 1;
              hits[row][dy][dx][fl]++;
            }
          }
      if (!matched)
        fail_msg("epoch %d: example %lld is no crop/flip of its image", e, (long long)row);
      if (e == 0)
        memcpy(first_epoch[row], got, sizeof cand);
      else
        changed_between_epochs |= memcmp(first_epoch[row], got, sizeof cand) != 0;
    }
  }
  for (int r = 0; r < 2; r++)
    for (int dy = 0; dy < 3; dy++)
      for (int dx = 0; dx < 3; dx++)
        for (int fl = 0; fl < 2; fl++)
          if (!hits[r][dy][dx][fl])
            fail_msg("example %d never got offset (%d, %d) flip %d in 300 epochs", r, dy, dx, fl);
  assert_true(changed_between_epochs);
  nb_loader_free(l);

  /* the dataset itself is never modified */
  for (int64_t i = 0; i < 2; i++)
    for (int64_t k = 0; k < F; k++) assert_true(d.x[i * F + k] == (float)(1000 * i + k));
  nb_dataset_free(&d);
}

static void test_loader_errors_and_shutdown(void **s) {
  (void)s;
  nb_dataset d, empty;
  memset(&empty, 0, sizeof empty);
  make_ds(&d, 6, 1, 2, 2, 3);
  nb_loader_options o = nb_loader_defaults(2);
  nb_loader *l = (nb_loader *)&o; /* must be overwritten with NULL on error */
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(NULL, &o, &l), "NULL");
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&empty, &o, &l), "empty");
  assert_null(l);
  o.batch_size = 0;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&d, &o, &l), "batch_size 0");
  o.batch_size = 2;
  o.augment.crop_pad = -1;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&d, &o, &l), "crop_pad -1");
  o.augment.crop_pad = 0;
  o.one_hot = 1;
  d.num_classes = 0;
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&d, &o, &l), "one_hot", "num_classes");
  d.num_classes = 2; /* label 2 does not fit */
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_new(&d, &o, &l), "label 2 of example 2", "[0, 2)");
  d.num_classes = 3;
  nb_dataset flat;
  int64_t fs[1] = {4};
  TU_OK(nb_dataset_alloc(&flat, 3, 1, fs));
  nb_loader_options of = nb_loader_defaults(2);
  of.augment.hflip = 1;
  DT_ERR(NB_ERR_SHAPE, nb_loader_new(&flat, &of, &l), "augmentation", "[4]");
  nb_dataset_free(&flat);
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_next(NULL, NULL), "NULL");
  DT_ERR(NB_ERR_INVALID_ARG, nb_loader_get_pos(NULL, NULL), "NULL");
  assert_int_equal(nb_loader_batches_per_epoch(NULL), 0);
  nb_loader_free(NULL);

  /* freeing while the thread is busy or waiting must join cleanly */
  for (int i = 0; i < 50; i++) {
    TU_OK(nb_loader_new(&d, &o, &l));
    for (int k = 0; k < i % 4; k++) {
      nb_batch b;
      TU_OK(nb_loader_next(l, &b));
    }
    if (i % 5 == 0) {
      nb_loader_pos p;
      TU_OK(nb_loader_get_pos(l, &p));
      TU_OK(nb_loader_set_pos(l, &p));
    }
    nb_loader_free(l);
  }
  nb_dataset_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_epochs_are_permutations),
      cmocka_unit_test(test_no_shuffle_and_drop_last),
      cmocka_unit_test(test_seed_determinism),
      cmocka_unit_test(test_prefetch_matches_sync),
      cmocka_unit_test(test_resume),
      cmocka_unit_test(test_augmentation),
      cmocka_unit_test(test_loader_errors_and_shutdown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
