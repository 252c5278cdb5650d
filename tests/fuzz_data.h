/* Fuzz targets for the dataset and tokenizer readers of src/data: IDX
 * arrays (MNIST, plain or gzipped) and IDX image/label pairs, CIFAR-10
 * binary batches (with a batches.meta.txt), CSV tables, BPE vocabulary
 * files and character vocabularies. Same contract as tests/fuzz_targets.h:
 * accept or reject with a status whose message names the file, never crash,
 * and whatever is accepted is self-consistent (labels below num_classes,
 * pixels in [0, 1], tokenizers that round-trip text). Inputs go through
 * temporary files (tests/fuzz_tmp.h). */
#ifndef NB_FUZZ_DATA_H
#define NB_FUZZ_DATA_H

#include "fuzz_common.h"
#include "fuzz_tmp.h"

/* The fixed other half of an IDX pair: 3 labels, and 3 images of 4 x 5. */
static const uint8_t fz_idx_labels[] = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1};
static const uint8_t fz_idx_images[16 + 60] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 255};

/* A dataset a reader returned: shapes, labels and (when `unit`) features
 * in [0, 1]; NULL if consistent. */
static const char *fz_dataset_bad(const nb_dataset *d, int unit) {
  if (d->n < 0 || d->ndim < 1 || d->ndim >= NB_MAX_DIMS) return "dataset with a bad size or rank";
  int64_t numel = 1;
  for (int i = 0; i < d->ndim; i++) numel *= d->shape[i];
  if (numel != d->example_numel || numel < 1) return "dataset's example_numel disagrees with shape";
  if (d->num_classes < 0) return "dataset with a negative class count";
  for (int64_t i = 0; i < d->n; i++)
    if (d->y[i] < 0 || (d->num_classes && d->y[i] >= d->num_classes))
      return "dataset label outside [0, num_classes)";
  for (int c = 0; d->class_names && c < d->num_classes; c++)
    if (!d->class_names[c]) return "dataset with a NULL class name";
  for (int64_t i = 0; unit && i < d->n * numel; i++)
    if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f)) return "dataset pixel outside [0, 1]";
  return NULL;
}

/* An IDX file: read (every element touched), then as the images and as the
 * labels of an MNIST-style pair with the fixed other half. */
static const char *fz_idx(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  const char *path = fz_tmp_path(0, "fuzz.idx");
  const char *lp = fz_tmp_path(1, "labels.idx"), *ip = fz_tmp_path(2, "images.idx");
  if (!fz_tmp_write(path, data, n) || !fz_tmp_write(lp, fz_idx_labels, sizeof fz_idx_labels) ||
      !fz_tmp_write(ip, fz_idx_images, sizeof fz_idx_images))
    return "cannot write the temporary files";
  nb_idx a;
  nb_status st = nb_idx_load(path, &a);
  if (st) return a.data ? "a failed load left data allocated" : fz_check_error(st, path);
  s->parsed++;
  const char *bad = NULL;
  int64_t numel = 1;
  if (a.ndim < 1 || a.ndim > NB_MAX_DIMS) bad = "IDX array with a bad rank";
  for (int d = 0; !bad && d < a.ndim; d++) numel *= a.shape[d];
  if (!bad && (a.dtype != NB_U8 && a.dtype != NB_I32 && a.dtype != NB_F32))
    bad = "IDX array with an unexpected dtype";
  unsigned acc = 0;
  for (size_t i = 0; !bad && i < (size_t)numel * nb_dtype_size(a.dtype); i++)
    acc += ((const uint8_t *)a.data)[i];
  (void)acc;
  nb_idx_free(&a);
  if (bad) return bad;
  for (int as_labels = 0; as_labels < 2 && !bad; as_labels++) {
    nb_dataset d;
    st = nb_idx_dataset_load(as_labels ? ip : path, as_labels ? path : lp, 0, &d);
    if (st) {
      bad = d.x ? "a failed load left a dataset allocated" : fz_check_error(st, path);
      continue;
    }
    s->built++;
    bad = fz_dataset_bad(&d, 1);
    nb_dataset_free(&d);
  }
  return bad;
}

/* CIFAR-10: the input is a 2-byte little-endian length L, L bytes of
 * batches.meta.txt (none when L is 0) and the rest as test_batch.bin. */
static const char *fz_cifar(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  size_t meta = n >= 2 ? (size_t)(data[0] | data[1] << 8) : 0, at = n >= 2 ? 2 : n;
  if (meta > n - at) meta = n - at;
  const char *dir = fz_tmp_path(0, "cifar"), *mp = fz_tmp_path(1, "cifar/batches.meta.txt");
  const char *bp = fz_tmp_path(2, "cifar/test_batch.bin");
  if (!dir) return "cannot create the temporary directory";
  mkdir(dir, 0700);
  unlink(mp);
  if ((meta && !fz_tmp_write(mp, data + at, meta)) ||
      !fz_tmp_write(bp, data + at + meta, n - at - meta))
    return "cannot write the temporary files";
  nb_dataset d;
  nb_status st = nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d);
  if (st) return d.x ? "a failed load left a dataset allocated" : fz_check_error(st, dir);
  s->parsed++;
  const char *bad = fz_dataset_bad(&d, 1);
  if (!bad && (d.n != (int64_t)((n - at - meta) / 3073) || d.num_classes != 10 || !d.class_names))
    bad = "CIFAR dataset with the wrong count or classes";
  nb_dataset_free(&d);
  return bad;
}

/* A CSV table, read three ways: the defaults (last column the label), the
 * column named "label", and the column named "label" against the classes
 * "cat", "dog", "bird" of another split. */
static const char *fz_csv(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  const char *path = fz_tmp_path(0, "fuzz.csv");
  if (!fz_tmp_write(path, data, n)) return "cannot write the temporary file";
  static const char *const names[] = {"cat", "dog", "bird"};
  nb_dataset train = {0};
  if (nb_dataset_set_classes(&train, 3, names)) return "cannot set up the classes";
  const nb_csv_options opts[3] = {{NULL, 0, NULL}, {"label", ',', NULL}, {"label", 0, &train}};
  const char *bad = NULL;
  long before = s->parsed;
  for (int k = 0; k < 3 && !bad; k++) {
    nb_dataset d;
    nb_status st = nb_csv_load(path, &opts[k], &d);
    if (st) {
      bad = d.x ? "a failed load left a dataset allocated" : fz_check_error(st, path);
      continue;
    }
    if (s->parsed == before) s->parsed++;
    s->built++;
    bad = fz_dataset_bad(&d, 0);
    if (!bad && (d.ndim != 1 || d.n < 1)) bad = "CSV dataset that is not rows of features";
    if (!bad && k == 2 && (d.num_classes != 3 || !d.class_names))
      bad = "CSV dataset that lost the classes of classes_from";
    nb_dataset_free(&d);
  }
  nb_dataset_free(&train);
  return bad;
}

/* A BPE vocabulary file: loaded, every token read, and a text with special
 * tokens encoded and decoded back to itself. */
static const char *fz_bpe(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  const char *path = fz_tmp_path(0, "fuzz.bpe");
  if (!fz_tmp_write(path, data, n)) return "cannot write the temporary file";
  nb_bpe *t = NULL;
  nb_status st = nb_bpe_load(path, &t);
  if (st) return t ? "a failed load returned a tokenizer" : fz_check_error(st, path);
  s->parsed++;
  const char *bad = NULL;
  int v = nb_bpe_vocab_size(t), m = nb_bpe_num_merges(t);
  const int32_t *mg = nb_bpe_merges(t);
  if (v < 256 + m || v > NB_BPE_MAX_VOCAB) bad = "BPE vocabulary size out of range";
  for (int r = 0; !bad && r < m; r++)
    if (mg[2 * r] < 0 || mg[2 * r] >= 256 + r || mg[2 * r + 1] < 0 || mg[2 * r + 1] >= 256 + r)
      bad = "BPE merge that uses a later id";
  for (int32_t id = 0; !bad && id < v; id++) {
    const char *b;
    size_t len;
    if (nb_bpe_token(t, id, &b, &len) || (id < 256 + m && len < 1))
      bad = "BPE token that cannot be read";
  }
  static const char text[] =
      "The quick brown fox<|endoftext|> jumps  over\r\n 123 \xc3\xa9t\xc3\xa9!";
  size_t tn = sizeof text - 1, n_ids = 0;
  int32_t ids[sizeof text];
  if (!bad) {
    st = nb_bpe_encode(t, text, tn, NB_BPE_ALLOW_SPECIAL, ids, &n_ids);
    if (st || n_ids > tn) bad = st ? fz_check_error(st, NULL) : "BPE encode made too many ids";
  }
  char *back = NULL;
  size_t blen = 0;
  if (!bad) {
    st = nb_bpe_decode(t, ids, n_ids, &back, &blen);
    if (st)
      bad = fz_check_error(st, NULL);
    else if (blen != tn || memcmp(back, text, tn))
      bad = "BPE decode(encode(text)) differs from text";
    else
      s->built++;
  }
  free(back);
  nb_bpe_free(t);
  return bad;
}

/* A character vocabulary (nb_char_vocab_save's format): loaded, the two
 * maps agree, and its bytes encode and decode. */
static const char *fz_char_vocab(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  const char *path = fz_tmp_path(0, "fuzz.vocab");
  if (!fz_tmp_write(path, data, n)) return "cannot write the temporary file";
  nb_char_vocab v;
  nb_status st = nb_char_vocab_load(path, &v);
  if (st) return fz_check_error(st, path);
  s->parsed++;
  if (v.size < 0 || v.size > 256) return "char vocabulary size outside [0, 256]";
  int mapped = 0;
  for (int b = 0; b < 256; b++) {
    if (v.id[b] < -1 || v.id[b] >= v.size) return "char vocabulary id out of range";
    if (v.id[b] >= 0 && (mapped++, v.bytes[v.id[b]] != b)) return "char vocabulary maps disagree";
  }
  if (mapped != v.size) return "char vocabulary maps a different number of bytes";
  char text[256], back[256];
  int32_t ids[256];
  for (int i = 0; i < v.size; i++) text[i] = (char)v.bytes[i];
  if (nb_char_encode(&v, text, (size_t)v.size, ids) ||
      nb_char_decode(&v, ids, (size_t)v.size, back) || memcmp(text, back, (size_t)v.size))
    return "char vocabulary does not round-trip its own bytes";
  s->built++;
  return NULL;
}

#endif
