/* The batch loader. A batch is a pure function of (dataset, options, epoch
 * start generator state, batch index): the epoch's permutation is a
 * Fisher-Yates shuffle drawn from the generator, one more draw seeds the
 * epoch's augmentation, and each example's augmentation generator is
 * derived from that seed and the example's position in the epoch. So the
 * prefetch thread and the synchronous path compute the same bytes, and a
 * position (epoch, batch, generator state at the epoch's start) is all a
 * resumed run needs.
 *
 * Prefetching is double buffering: two slots; the caller holds one while
 * the thread fills the other. Slots are handed over under one mutex with
 * two condition variables; the filling itself runs unlocked. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/data.h"

enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY, SLOT_HELD };

typedef struct {
  int state;
  uint64_t seq; /* order of production; the caller takes them in order */
  float *x, *y_onehot;
  int64_t *y, *indices;
  int64_t size, epoch, index;
  int last;
  nb_loader_pos next; /* the position after this batch */
} slot;

/* What the producer (thread or caller) works on next. Only the producer
 * touches it while the thread runs. */
typedef struct {
  int64_t epoch, batch;
  nb_rng rng_start; /* generator at the start of `epoch` */
  nb_rng rng_next;  /* generator at the start of `epoch` + 1 */
  uint64_t aug_seed;
  int64_t *perm;
} producer;

struct nb_loader {
  const nb_dataset *ds;
  nb_loader_options opt;
  int64_t per_epoch;
  producer prod;
  slot slots[2];
  int held; /* slot the caller holds, -1 if none */
  uint64_t produced, consumed;
  nb_loader_pos pos; /* position of the next batch handed out */

  int thread_running, stop;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv_ready; /* a slot became READY */
  pthread_cond_t cv_free;  /* a slot became EMPTY, or stop was set */
};

static void begin_epoch(const nb_loader *l, producer *p, int64_t epoch, nb_rng start) {
  const int64_t n = l->ds->n;
  p->epoch = epoch;
  p->batch = 0;
  p->rng_start = start;
  nb_rng r = start;
  for (int64_t i = 0; i < n; i++) p->perm[i] = i;
  if (l->opt.shuffle)
    for (int64_t i = n - 1; i > 0; i--) {
      int64_t j = (int64_t)(nb_rng_next(&r) % (uint64_t)(i + 1)), t = p->perm[i];
      p->perm[i] = p->perm[j];
      p->perm[j] = t;
    }
  p->aug_seed = nb_rng_next(&r);
  p->rng_next = r;
}

/* Fills s with the producer's next batch and advances the producer. */
static void fill(const nb_loader *l, producer *p, slot *s) {
  const nb_dataset *ds = l->ds;
  const int64_t B = l->opt.batch_size, F = ds->example_numel;
  int64_t start = p->batch * B, size = ds->n - start < B ? ds->n - start : B;
  if (l->opt.shards > 1) { /* a full batch (drop_last): this shard's part */
    size = B / l->opt.shards;
    start += l->opt.shard * size;
  }
  const int augment = l->opt.augment.crop_pad > 0 || l->opt.augment.hflip;
  for (int64_t k = 0; k < size; k++) {
    const int64_t row = p->perm[start + k];
    const float *src = ds->x + row * F;
    float *dst = s->x + k * F;
    if (augment) {
      nb_rng r;
      nb_rng_seed(&r, p->aug_seed ^ ((uint64_t)(start + k) * 0x9e3779b97f4a7c15ull));
      /* cannot fail: the options and the shape were checked in nb_loader_new */
      (void)nb_augment_apply(&l->opt.augment, ds->ndim, ds->shape, src, dst, &r);
    } else {
      memcpy(dst, src, (size_t)F * sizeof *dst);
    }
    s->y[k] = ds->y[row];
    s->indices[k] = row;
  }
  if (s->y_onehot) {
    const int C = ds->num_classes;
    memset(s->y_onehot, 0, (size_t)(size * C) * sizeof *s->y_onehot);
    for (int64_t k = 0; k < size; k++) s->y_onehot[k * C + s->y[k]] = 1.0f;
  }
  s->size = size;
  s->epoch = p->epoch;
  s->index = p->batch;
  s->last = p->batch + 1 == l->per_epoch;
  if (s->last) {
    s->next = (nb_loader_pos){p->epoch + 1, 0, p->rng_next};
    begin_epoch(l, p, p->epoch + 1, p->rng_next);
  } else {
    s->next = (nb_loader_pos){p->epoch, p->batch + 1, p->rng_start};
    p->batch++;
  }
}

static void *worker(void *arg) {
  nb_loader *l = arg;
  pthread_mutex_lock(&l->mu);
  for (;;) {
    int s = -1;
    while (!l->stop) {
      for (int i = 0; i < 2 && s < 0; i++)
        if (l->slots[i].state == SLOT_EMPTY) s = i;
      if (s >= 0) break;
      pthread_cond_wait(&l->cv_free, &l->mu);
    }
    if (l->stop) break;
    l->slots[s].state = SLOT_FILLING;
    pthread_mutex_unlock(&l->mu);
    fill(l, &l->prod, &l->slots[s]);
    pthread_mutex_lock(&l->mu);
    l->slots[s].seq = l->produced++;
    l->slots[s].state = SLOT_READY;
    pthread_cond_broadcast(&l->cv_ready);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void stop_thread(nb_loader *l) {
  if (!l->thread_running) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_broadcast(&l->cv_free);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thread, NULL);
  l->thread_running = 0;
}

/* Restarts production at pos; the thread (if any) must be stopped. */
static nb_status restart(nb_loader *l, const nb_loader_pos *pos) {
  begin_epoch(l, &l->prod, pos->epoch, pos->rng);
  l->prod.batch = pos->batch;
  for (int i = 0; i < 2; i++) l->slots[i].state = SLOT_EMPTY;
  l->held = -1;
  l->produced = l->consumed = 0;
  l->pos = *pos;
  l->stop = 0;
  if (!l->opt.prefetch) return NB_OK;
  int err = pthread_create(&l->thread, NULL, worker, l);
  if (err)
    return nb_error(NB_ERR_INTERNAL, "nb_loader: cannot start the prefetch thread (error %d)", err);
  l->thread_running = 1;
  return NB_OK;
}

nb_loader_options nb_loader_defaults(int64_t batch_size) {
  nb_loader_options o;
  memset(&o, 0, sizeof o);
  o.batch_size = batch_size;
  o.shuffle = 1;
  o.prefetch = 1;
  return o;
}

nb_status nb_loader_new(const nb_dataset *ds, const nb_loader_options *opt, nb_loader **out) {
  if (!ds || !opt || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_loader_new: NULL argument");
  *out = NULL;
  const int64_t B = opt->batch_size;
  if (ds->n < 1 || !ds->x || !ds->y || ds->example_numel < 1)
    return nb_error(NB_ERR_INVALID_ARG, "nb_loader_new: the dataset is empty");
  if (B < 1 || B > ((int64_t)1 << 40) / ds->example_numel)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_loader_new: batch_size %lld must be >= 1 (and "
                    "batch_size x %lld features must fit in memory)",
                    (long long)B, (long long)ds->example_numel);
  if (opt->drop_last && ds->n < B)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_loader_new: drop_last with batch_size %lld > %lld "
                    "examples leaves no batch",
                    (long long)B, (long long)ds->n);
  if (opt->shards < 0 || (opt->shards > 1 && (opt->shard < 0 || opt->shard >= opt->shards)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_loader_new: shard %d of %d shards is out of range",
                    opt->shard, opt->shards);
  if (opt->shards > 1 && (!opt->drop_last || B % opt->shards))
    return nb_error(
        NB_ERR_INVALID_ARG, "nb_loader_new: batch_size %lld cannot be split into %d equal shards%s",
        (long long)B, opt->shards, opt->drop_last ? "" : " (sharding also needs drop_last)");
  const nb_augment *a = &opt->augment;
  if (a->crop_pad < 0 || a->hflip < 0 || a->hflip > 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_loader_new: augment.crop_pad %d must be >= 0 and "
                    "augment.hflip %d 0 or 1",
                    a->crop_pad, a->hflip);
  if ((a->crop_pad > 0 || a->hflip) && ds->ndim != 2 && ds->ndim != 3) {
    char buf[128];
    return nb_error(NB_ERR_SHAPE,
                    "nb_loader_new: augmentation needs [C, H, W] or [H, W] "
                    "examples, the dataset's are %s",
                    nb_shape_str(ds->ndim, ds->shape, buf, sizeof buf));
  }
  if (opt->one_hot) {
    if (ds->num_classes < 1)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_loader_new: one_hot needs the dataset's "
                      "num_classes (it is %d)",
                      ds->num_classes);
    for (int64_t i = 0; i < ds->n; i++)
      if (ds->y[i] < 0 || ds->y[i] >= ds->num_classes)
        return nb_error(NB_ERR_INVALID_ARG,
                        "nb_loader_new: label %lld of example %lld is outside "
                        "[0, %d)",
                        (long long)ds->y[i], (long long)i, ds->num_classes);
  }
  nb_loader *l = calloc(1, sizeof *l);
  if (!l) return nb_error(NB_ERR_OOM, "nb_loader_new: out of memory");
  l->ds = ds;
  l->opt = *opt;
  l->per_epoch = opt->drop_last ? ds->n / B : (ds->n + B - 1) / B;
  l->held = -1;
  int ok = (l->prod.perm = malloc((size_t)ds->n * sizeof(int64_t))) != NULL;
  for (int i = 0; i < 2 && ok; i++) {
    slot *s = &l->slots[i];
    s->x = malloc((size_t)(B * ds->example_numel) * sizeof(float));
    s->y = malloc((size_t)B * sizeof(int64_t));
    s->indices = malloc((size_t)B * sizeof(int64_t));
    if (opt->one_hot) s->y_onehot = malloc((size_t)(B * ds->num_classes) * sizeof(float));
    ok = s->x && s->y && s->indices && (!opt->one_hot || s->y_onehot);
  }
  int sync_ok = 0;
  if (ok && !pthread_mutex_init(&l->mu, NULL)) {
    sync_ok = 1;
    if (!pthread_cond_init(&l->cv_ready, NULL)) {
      sync_ok = 2;
      if (!pthread_cond_init(&l->cv_free, NULL)) sync_ok = 3;
    }
  }
  if (!ok || sync_ok < 3) {
    if (sync_ok >= 1) pthread_mutex_destroy(&l->mu);
    if (sync_ok >= 2) pthread_cond_destroy(&l->cv_ready);
    for (int i = 0; i < 2; i++) {
      free(l->slots[i].x);
      free(l->slots[i].y);
      free(l->slots[i].indices);
      free(l->slots[i].y_onehot);
    }
    free(l->prod.perm);
    free(l);
    return nb_error(NB_ERR_OOM, "nb_loader_new: out of memory for two batches of %lld",
                    (long long)B);
  }
  nb_loader_pos start = {0, 0, {{0}}};
  nb_rng_seed(&start.rng, opt->seed);
  nb_status st = restart(l, &start);
  if (st) {
    nb_loader_free(l);
    return st;
  }
  *out = l;
  return NB_OK;
}

nb_status nb_loader_next(nb_loader *l, nb_batch *out) {
  if (!l || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_loader_next: NULL argument");
  slot *s;
  if (!l->opt.prefetch) {
    s = &l->slots[0];
    fill(l, &l->prod, s);
  } else {
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) {
      l->slots[l->held].state = SLOT_EMPTY;
      l->held = -1;
      pthread_cond_signal(&l->cv_free);
    }
    int found = -1;
    for (;;) {
      for (int i = 0; i < 2 && found < 0; i++)
        if (l->slots[i].state == SLOT_READY && l->slots[i].seq == l->consumed) found = i;
      if (found >= 0) break;
      pthread_cond_wait(&l->cv_ready, &l->mu);
    }
    l->slots[found].state = SLOT_HELD;
    l->held = found;
    l->consumed++;
    pthread_mutex_unlock(&l->mu);
    s = &l->slots[found];
  }
  l->pos = s->next;
  *out = (nb_batch){s->size, s->epoch, s->index, s->last, s->x, s->y, s->y_onehot, s->indices};
  return NB_OK;
}

int64_t nb_loader_batches_per_epoch(const nb_loader *l) { return l ? l->per_epoch : 0; }

nb_status nb_loader_get_pos(const nb_loader *l, nb_loader_pos *pos) {
  if (!l || !pos) return nb_error(NB_ERR_INVALID_ARG, "nb_loader_get_pos: NULL argument");
  *pos = l->pos;
  return NB_OK;
}

nb_status nb_loader_set_pos(nb_loader *l, const nb_loader_pos *pos) {
  if (!l || !pos) return nb_error(NB_ERR_INVALID_ARG, "nb_loader_set_pos: NULL argument");
  if (pos->epoch < 0 || pos->batch < 0 || pos->batch >= l->per_epoch)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_loader_set_pos: epoch %lld, batch %lld: need epoch >= "
                    "0 and batch in [0, %lld)",
                    (long long)pos->epoch, (long long)pos->batch, (long long)l->per_epoch);
  const nb_loader_pos copy = *pos; /* pos may point into the loader */
  stop_thread(l);
  return restart(l, &copy);
}

void nb_loader_free(nb_loader *l) {
  if (!l) return;
  stop_thread(l);
  pthread_cond_destroy(&l->cv_free);
  pthread_cond_destroy(&l->cv_ready);
  pthread_mutex_destroy(&l->mu);
  for (int i = 0; i < 2; i++) {
    free(l->slots[i].x);
    free(l->slots[i].y);
    free(l->slots[i].indices);
    free(l->slots[i].y_onehot);
  }
  free(l->prod.perm);
  free(l);
}
