/* CIFAR-10, binary version: fixed 3073-byte records (label byte + 32x32 R,
 * G and B planes), 10000 to a file. The file sizes are checked before
 * anything is read, so a truncated download fails at once with the offset
 * of its partial record instead of after reading four good files. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data_internal.h"

#define CIFAR_PIXELS 3072
#define CIFAR_RECORD (1 + CIFAR_PIXELS)

static const char *const CIFAR10_NAMES[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

/* Reads batches.meta.txt: one class name a line, blank lines ignored. */
static nb_status read_meta(const char *path, char names[10][64]) {
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char line[256];
  int count = 0, lineno = 0;
  nb_status st = NB_OK;
  while (!st && fgets(line, sizeof line, f)) {
    lineno++;
    size_t len = strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n')
      st = nb_error(NB_ERR_FORMAT, "%s:%d: line longer than %zu bytes", path, lineno,
                    sizeof line - 2);
    while (len > 0 && isspace((unsigned char)line[len - 1])) line[--len] = '\0';
    const char *s = line;
    while (isspace((unsigned char)*s)) s++;
    if (st || !*s) continue;
    if (count == 10) {
      st = nb_error(NB_ERR_FORMAT, "%s:%d: more than 10 class names (one a line expected)", path,
                    lineno);
      break;
    }
    if (strlen(s) >= 64)
      st = nb_error(NB_ERR_FORMAT, "%s:%d: class name longer than 63 bytes", path, lineno);
    else
      memcpy(names[count++], s, strlen(s) + 1);
  }
  if (!st && ferror(f)) st = nb_error(NB_ERR_IO, "%s: read error", path);
  if (!st && count != 10)
    st = nb_error(NB_ERR_FORMAT, "%s: expected 10 class names (one a line), found %d", path, count);
  fclose(f);
  return st;
}

nb_status nb_cifar10_load(const char *dir, nb_split split, int64_t limit, nb_dataset *out) {
  if (!dir || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_cifar10_load: NULL argument");
  memset(out, 0, sizeof *out);
  if (split != NB_SPLIT_TRAIN && split != NB_SPLIT_TEST)
    return nb_error(NB_ERR_INVALID_ARG, "nb_cifar10_load: unknown split %d", (int)split);
  if (limit < 0)
    return nb_error(NB_ERR_INVALID_ARG, "nb_cifar10_load: limit %lld < 0", (long long)limit);
  const int nfiles = split == NB_SPLIT_TRAIN ? 5 : 1;
  char files[5][64];
  for (int i = 0; i < nfiles; i++) {
    if (split == NB_SPLIT_TRAIN)
      snprintf(files[i], sizeof files[i], "data_batch_%d.bin", i + 1);
    else
      snprintf(files[i], sizeof files[i], "test_batch.bin");
  }

  /* the official tarball unpacks into cifar-10-batches-bin/ */
  char root[NB_DATA_PATH_MAX], path[NB_DATA_PATH_MAX];
  nb_status st = nb_data_join(path, sizeof path, dir, files[0]);
  if (st) return st;
  snprintf(root, sizeof root, "%s", dir); /* fits: the join above did */
  if (!nb_data_is_file(path)) {
    char sub[NB_DATA_PATH_MAX];
    if (!nb_data_join(sub, sizeof sub, dir, "cifar-10-batches-bin") && nb_data_is_dir(sub))
      memcpy(root, sub, sizeof root);
  }

  int64_t records[5], total = 0;
  for (int i = 0; i < nfiles; i++) {
    st = nb_data_join(path, sizeof path, root, files[i]);
    if (st) return st;
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
      return nb_error(NB_ERR_IO,
                      "%s: cannot open CIFAR-10 batch file (see "
                      "scripts/download_data.sh)",
                      path);
    const int64_t size = (int64_t)sb.st_size;
    if (size == 0 || size % CIFAR_RECORD != 0)
      return nb_error(NB_ERR_FORMAT,
                      "%s: truncated or wrong size: %lld bytes, the record at byte %lld is "
                      "incomplete; expected whole records of %d bytes (1 label byte + %d pixel "
                      "bytes)",
                      path, (long long)size, (long long)(size / CIFAR_RECORD * CIFAR_RECORD),
                      CIFAR_RECORD, CIFAR_PIXELS);
    records[i] = size / CIFAR_RECORD;
    total += records[i];
  }
  const int64_t n = limit > 0 && limit < total ? limit : total;

  char names[10][64];
  const char *name_ptrs[10];
  st = nb_data_join(path, sizeof path, root, "batches.meta.txt");
  if (st) return st;
  if (nb_data_is_file(path)) {
    st = read_meta(path, names);
    if (st) return st;
    for (int i = 0; i < 10; i++) name_ptrs[i] = names[i];
  } else {
    for (int i = 0; i < 10; i++) name_ptrs[i] = CIFAR10_NAMES[i];
  }

  int64_t shape[3] = {3, 32, 32};
  st = nb_dataset_alloc(out, n, 3, shape);
  if (!st) st = nb_dataset_set_classes(out, 10, name_ptrs);
  unsigned char rec[CIFAR_RECORD];
  int64_t row = 0;
  for (int i = 0; !st && i < nfiles && row < n; i++) {
    st = nb_data_join(path, sizeof path, root, files[i]);
    if (st) break;
    FILE *f = fopen(path, "rb");
    if (!f) {
      st = nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
      break;
    }
    for (int64_t r = 0; r < records[i] && row < n; r++, row++) {
      const long long at = (long long)(r * CIFAR_RECORD);
      if (fread(rec, 1, CIFAR_RECORD, f) != CIFAR_RECORD) {
        /* the size was checked: the file changed under us or the disk failed */
        st = nb_error(NB_ERR_IO, "%s: short read in the record at byte %lld (record size %d)", path,
                      at, CIFAR_RECORD);
        break;
      }
      if (rec[0] > 9) {
        st = nb_error(NB_ERR_FORMAT,
                      "%s: label %d at byte %lld is not a class 0..9 (records of %d "
                      "bytes: 1 label byte + %d pixel bytes)",
                      path, rec[0], at, CIFAR_RECORD, CIFAR_PIXELS);
        break;
      }
      out->y[row] = rec[0];
      float *x = out->x + row * CIFAR_PIXELS;
      for (int k = 0; k < CIFAR_PIXELS; k++) x[k] = (float)rec[1 + k] / 255.0f;
    }
    fclose(f);
  }
  if (st) nb_dataset_free(out);
  return st;
}
