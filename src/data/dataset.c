/* The in-memory dataset table, path helpers and the dataset directory
 * lookup shared by the readers. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_internal.h"

nb_status nb_data_join(char *out, size_t cap, const char *a, const char *b) {
  int k = snprintf(out, cap, "%s/%s", a, b);
  if (k < 0 || (size_t)k >= cap)
    return nb_error(NB_ERR_INVALID_ARG, "path %s/%s is longer than %zu bytes", a, b, cap - 1);
  return NB_OK;
}

int nb_data_is_file(const char *path) {
  struct stat s;
  return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

int nb_data_is_dir(const char *path) {
  struct stat s;
  return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

nb_status nb_dataset_alloc(nb_dataset *out, int64_t n, int ndim, const int64_t *shape) {
  if (!out || (!shape && ndim > 0))
    return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_alloc: NULL argument");
  memset(out, 0, sizeof *out);
  /* a batch adds one leading dimension, which must still fit NB_MAX_DIMS */
  if (ndim < 1 || ndim > NB_MAX_DIMS - 1)
    return nb_error(NB_ERR_SHAPE, "nb_dataset_alloc: example rank %d is outside [1, %d]", ndim,
                    NB_MAX_DIMS - 1);
  if (n < 0) return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_alloc: n = %lld < 0", (long long)n);
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 1 || shape[i] > ((int64_t)1 << 40) / numel) {
      char buf[128];
      return nb_error(NB_ERR_SHAPE,
                      "nb_dataset_alloc: example shape %s has a dimension < 1 or is "
                      "too large",
                      nb_shape_str(ndim, shape, buf, sizeof buf));
    }
    numel *= shape[i];
  }
  if (n > 0 && numel > ((int64_t)1 << 40) / n)
    return nb_error(NB_ERR_SHAPE, "nb_dataset_alloc: %lld examples of %lld features is too large",
                    (long long)n, (long long)numel);
  out->x = calloc((size_t)(n * numel) + 1, sizeof(float));
  out->y = calloc((size_t)n + 1, sizeof(int64_t));
  if (!out->x || !out->y) {
    nb_dataset_free(out);
    return nb_error(NB_ERR_OOM, "nb_dataset_alloc: out of memory for %lld x %lld floats",
                    (long long)n, (long long)numel);
  }
  out->n = n;
  out->ndim = ndim;
  memcpy(out->shape, shape, (size_t)ndim * sizeof *shape);
  out->example_numel = numel;
  return NB_OK;
}

static void free_names(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

nb_status nb_dataset_set_classes(nb_dataset *d, int num_classes, const char *const *names) {
  if (!d) return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_set_classes: NULL dataset");
  if (num_classes < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_set_classes: num_classes %d < 0", num_classes);
  char **copy = NULL;
  if (names && num_classes > 0) {
    copy = calloc((size_t)num_classes, sizeof *copy);
    if (!copy) return nb_error(NB_ERR_OOM, "nb_dataset_set_classes: out of memory");
    for (int i = 0; i < num_classes; i++) {
      if (!names[i]) {
        free_names(copy, num_classes);
        return nb_error(NB_ERR_INVALID_ARG, "nb_dataset_set_classes: class name %d is NULL", i);
      }
      copy[i] = strdup(names[i]);
      if (!copy[i]) {
        free_names(copy, num_classes);
        return nb_error(NB_ERR_OOM, "nb_dataset_set_classes: out of memory");
      }
    }
  }
  free_names(d->class_names, d->num_classes);
  d->class_names = copy;
  d->num_classes = num_classes;
  return NB_OK;
}

void nb_dataset_free(nb_dataset *d) {
  if (!d) return;
  free(d->x);
  free(d->y);
  free_names(d->class_names, d->num_classes);
  memset(d, 0, sizeof *d);
}

/* ---- finding a dataset directory ------------------------------------------ */

typedef struct {
  const char *names[4];   /* the dataset's name and aliases (folder names) */
  const char *markers[6]; /* a directory is the dataset if it holds any of these */
} known_dataset;

static const known_dataset KNOWN[] = {
    {{"mnist", NULL},
     {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
      "t10k-images-idx3-ubyte", NULL}},
    {{"fashion-mnist", "fashion_mnist", "fashionmnist", NULL},
     {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
      "t10k-images-idx3-ubyte", NULL}},
    {{"cifar10", "cifar-10", "cifar-10-batches-bin", NULL},
     {"data_batch_1.bin", "test_batch.bin", "cifar-10-batches-bin/data_batch_1.bin",
      "cifar-10-batches-bin/test_batch.bin", NULL}},
};

static const known_dataset *lookup_known(const char *name) {
  for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++)
    for (int j = 0; KNOWN[i].names[j]; j++)
      if (!strcmp(KNOWN[i].names[j], name)) return &KNOWN[i];
  return NULL;
}

/* Does `dir` hold the dataset? Without markers any directory does, unless
 * `need_markers` (a bare data root is not itself an unknown dataset). */
static int holds(const char *dir, const known_dataset *k, int need_markers) {
  if (!nb_data_is_dir(dir)) return 0;
  if (!k) return !need_markers;
  char p[NB_DATA_PATH_MAX];
  for (int i = 0; k->markers[i]; i++)
    if (!nb_data_join(p, sizeof p, dir, k->markers[i]) && nb_data_is_file(p)) return 1;
  return 0;
}

typedef struct {
  char tried[2048];
  size_t len;
} tried_list;

static void note(tried_list *t, const char *path) {
  int k = snprintf(t->tried + t->len, sizeof t->tried - t->len, "%s%s", t->len ? ", " : "", path);
  if (k > 0)
    t->len = t->len + (size_t)k < sizeof t->tried ? t->len + (size_t)k : sizeof t->tried - 1;
}

/* Tries `cand`; on a hit copies it into out. Returns 1 when found. */
static int try_dir(const char *cand, const known_dataset *k, int need_markers, tried_list *t,
                   char *out, size_t cap, nb_status *st) {
  note(t, cand);
  if (!holds(cand, k, need_markers)) return 0;
  if (strlen(cand) >= cap) {
    *st = nb_error(NB_ERR_INVALID_ARG, "nb_data_find: %s does not fit the %zu-byte buffer", cand,
                   cap);
    return 1;
  }
  memcpy(out, cand, strlen(cand) + 1);
  *st = NB_OK;
  return 1;
}

nb_status nb_data_find(const char *name, const char *path, char *out, size_t cap) {
  if (!name || !*name || !out || !cap)
    return nb_error(NB_ERR_INVALID_ARG, "nb_data_find: NULL or empty argument");
  const known_dataset *k = lookup_known(name);
  tried_list t = {{0}, 0};
  char cand[NB_DATA_PATH_MAX];
  nb_status st = NB_OK;
  const char *what = k ? " (a directory holding its files)" : " (a directory)";
  if (path) {
    if (try_dir(path, k, 0, &t, out, cap, &st)) return st;
    if (!nb_data_join(cand, sizeof cand, path, name) && try_dir(cand, k, 0, &t, out, cap, &st))
      return st;
    return nb_error(NB_ERR_IO, "dataset '%s' not found%s; tried: %s", name, what, t.tried);
  }
  const char *env = getenv("NABLA_DATA");
  if (env && *env) {
    if (!nb_data_join(cand, sizeof cand, env, name) && try_dir(cand, k, 0, &t, out, cap, &st))
      return st;
    if (try_dir(env, k, 1, &t, out, cap, &st)) return st;
  }
  const char *roots[2] = {"../shared/data", "data"};
  for (int r = 0; r < 2; r++) {
    if (!nb_data_join(cand, sizeof cand, roots[r], name) && try_dir(cand, k, 0, &t, out, cap, &st))
      return st;
    /* aliases: the CIFAR tarball unpacks into data/cifar-10-batches-bin */
    for (int a = 0; k && k->names[a]; a++) {
      if (!strcmp(k->names[a], name)) continue;
      if (!nb_data_join(cand, sizeof cand, roots[r], k->names[a]) &&
          try_dir(cand, k, 0, &t, out, cap, &st))
        return st;
    }
  }
  return nb_error(NB_ERR_IO, "dataset '%s' not found%s; tried: %s%s", name, what, t.tried,
                  env && *env ? "" : " ($NABLA_DATA is not set)");
}
