/* MNIST and Fashion-MNIST: pairs of IDX files (read by nb_idx_load) turned
 * into a dataset of [1, H, W] images in [0, 1]. */
#include <stdio.h>
#include <string.h>

#include "data_internal.h"

nb_status nb_idx_dataset_load(const char *images_path, const char *labels_path, int64_t limit,
                              nb_dataset *out) {
  if (!images_path || !labels_path || !out)
    return nb_error(NB_ERR_INVALID_ARG, "nb_idx_dataset_load: NULL argument");
  memset(out, 0, sizeof *out);
  if (limit < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_idx_dataset_load: limit %lld < 0", (long long)limit);
  nb_idx im, lb;
  nb_status st = nb_idx_load(images_path, &im);
  if (st) return st;
  st = nb_idx_load(labels_path, &lb);
  if (st) {
    nb_idx_free(&im);
    return st;
  }
  if (im.dtype != NB_U8 || im.ndim != 3)
    st = nb_error(NB_ERR_FORMAT, "%s: expected u8 images of rank 3 [N, H, W], got %s of rank %d",
                  images_path, nb_dtype_name(im.dtype), im.ndim);
  else if (lb.dtype != NB_U8 || lb.ndim != 1)
    st = nb_error(NB_ERR_FORMAT, "%s: expected u8 labels of rank 1 [N], got %s of rank %d",
                  labels_path, nb_dtype_name(lb.dtype), lb.ndim);
  else if (lb.shape[0] != im.shape[0])
    st = nb_error(NB_ERR_FORMAT, "%s holds %lld images but %s holds %lld labels", images_path,
                  (long long)im.shape[0], labels_path, (long long)lb.shape[0]);
  int64_t n = im.shape[0];
  if (limit > 0 && limit < n) n = limit;
  if (!st) {
    int64_t shape[3] = {1, im.shape[1], im.shape[2]};
    st = nb_dataset_alloc(out, n, 3, shape);
    /* an IDX dimension may be 0, an image's may not: name the file */
    if (st) st = nb_error(st, "%s: %s", images_path, nb_last_error());
  }
  if (!st) {
    const uint8_t *px = im.data, *lab = lb.data;
    const int64_t total = n * out->example_numel;
    for (int64_t i = 0; i < total; i++) out->x[i] = (float)px[i] / 255.0f;
    int max = -1;
    for (int64_t i = 0; i < n; i++) {
      out->y[i] = lab[i];
      if (lab[i] > max) max = lab[i];
    }
    out->num_classes = max + 1;
  }
  nb_idx_free(&im);
  nb_idx_free(&lb);
  if (st) nb_dataset_free(out);
  return st;
}

/* dir/<base>.gz if it exists, else dir/<base> if that does; else an error
 * listing both. */
static nb_status pick(const char *dir, const char *base, char *out, size_t cap) {
  char gz[NB_DATA_PATH_MAX];
  snprintf(gz, sizeof gz, "%s.gz", base);
  nb_status st = nb_data_join(out, cap, dir, gz);
  if (st) return st;
  if (nb_data_is_file(out)) return NB_OK;
  st = nb_data_join(out, cap, dir, base);
  if (st) return st;
  if (nb_data_is_file(out)) return NB_OK;
  return nb_error(NB_ERR_IO, "%s: neither %s.gz nor %s found (see scripts/download_data.sh)", dir,
                  base, base);
}

static nb_status load_mnist_like(const char *dir, nb_split split, int64_t limit, nb_dataset *out,
                                 const char *const names[10], const char *what) {
  if (!dir || !out) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL argument", what);
  memset(out, 0, sizeof *out);
  if (split != NB_SPLIT_TRAIN && split != NB_SPLIT_TEST)
    return nb_error(NB_ERR_INVALID_ARG, "%s: unknown split %d", what, (int)split);
  const char *prefix = split == NB_SPLIT_TRAIN ? "train" : "t10k";
  char base[64], ip[NB_DATA_PATH_MAX], lp[NB_DATA_PATH_MAX];
  snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
  nb_status st = pick(dir, base, ip, sizeof ip);
  if (st) return st;
  snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
  st = pick(dir, base, lp, sizeof lp);
  if (st) return st;
  st = nb_idx_dataset_load(ip, lp, limit, out);
  if (st) return st;
  if (out->shape[1] != 28 || out->shape[2] != 28)
    st = nb_error(NB_ERR_FORMAT, "%s: expected 28x28 images, got %lldx%lld", ip,
                  (long long)out->shape[1], (long long)out->shape[2]);
  for (int64_t i = 0; !st && i < out->n; i++)
    if (out->y[i] > 9) /* an idx1 file has an 8-byte header, then one byte per label */
      st = nb_error(NB_ERR_FORMAT, "%s: label %lld at byte %lld is not a digit 0..9", lp,
                    (long long)out->y[i], (long long)(8 + i));
  if (!st) st = nb_dataset_set_classes(out, 10, names);
  if (st) nb_dataset_free(out);
  return st;
}

nb_status nb_mnist_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out) {
  static const char *const names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return load_mnist_like(dir, split, limit, out, names, "nb_mnist_load");
}

nb_status nb_fashion_mnist_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out) {
  static const char *const names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                        "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                        "Bag",         "Ankle boot"};
  return load_mnist_like(dir, split, limit, out, names, "nb_fashion_mnist_load");
}
