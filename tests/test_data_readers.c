/* Dataset readers: MNIST from the real files when they are at hand, and
 * IDX, CIFAR-10, CSV, PNG and JPEG files written here in their exact
 * formats, read back value for value (JPEG within its compression error).
 * Every corrupt, truncated or mismatched variant must fail with a message
 * that names the file and where it went wrong. Also nb_data_find. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

#include "data_test_helpers.h"

static char tmp[1024];

static int setup(void **s) {
  (void)s;
  dt_mkdtemp(tmp, sizeof tmp);
  return 0;
}

static int teardown(void **s) {
  (void)s;
  dt_rmtree(tmp);
  return 0;
}

/* A fresh subdirectory of tmp for one test. */
static const char *subdir(const char *name, char *buf, size_t cap) {
  dt_mkdir(tmp, name);
  return dt_path(buf, cap, tmp, name);
}

/* ---- MNIST (real files) --------------------------------------------------- */

/* ../shared/data/mnist next to the repository, or $NABLA_DATA/mnist. */
static int find_mnist(char *out, size_t cap) {
  char cand[2048];
  snprintf(cand, sizeof cand, "%s/../../../shared/data/mnist", NB_TEST_REF_DIR);
  if (nb_data_find("mnist", cand, out, cap) == NB_OK) return 1;
  return nb_data_find("mnist", NULL, out, cap) == NB_OK;
}

static int64_t pixel_sum(const float *x, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; i++) s += (int64_t)lrintf(x[i] * 255.0f);
  return s;
}

static void test_mnist_real(void **s) {
  (void)s;
  char dir[2048];
  if (!find_mnist(dir, sizeof dir)) {
    print_message("MNIST not found (../shared/data/mnist or $NABLA_DATA): skipped\n");
    skip();
  }
  nb_dataset d;
  /* the whole test split: counts per class are published numbers */
  TU_OK(nb_mnist_load(dir, NB_SPLIT_TEST, 0, &d));
  assert_int_equal(d.n, 10000);
  assert_int_equal(d.ndim, 3);
  assert_int_equal(d.shape[0], 1);
  assert_int_equal(d.shape[1], 28);
  assert_int_equal(d.shape[2], 28);
  assert_int_equal(d.example_numel, 784);
  assert_int_equal(d.num_classes, 10);
  assert_string_equal(d.class_names[7], "7");
  const int64_t first[10] = {7, 2, 1, 0, 4, 1, 4, 9, 5, 9};
  for (int i = 0; i < 10; i++) assert_int_equal(d.y[i], first[i]);
  const int64_t per_class[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  int64_t count[10] = {0};
  for (int64_t i = 0; i < d.n; i++) count[d.y[i]]++;
  for (int c = 0; c < 10; c++) assert_int_equal(count[c], per_class[c]);
  assert_int_equal(pixel_sum(d.x, 784), 18454);
  assert_int_equal(pixel_sum(d.x, 784 * 10000), 264923200);
  float lo = 1, hi = 0;
  for (int64_t i = 0; i < d.n * 784; i++) {
    lo = fminf(lo, d.x[i]);
    hi = fmaxf(hi, d.x[i]);
  }
  assert_true(lo == 0.0f && hi == 1.0f);
  nb_dataset_free(&d);

  /* a subset of the training split */
  TU_OK(nb_mnist_load(dir, NB_SPLIT_TRAIN, 10, &d));
  assert_int_equal(d.n, 10);
  const int64_t train_first[10] = {5, 0, 4, 1, 9, 2, 1, 3, 1, 4};
  for (int i = 0; i < 10; i++) assert_int_equal(d.y[i], train_first[i]);
  assert_int_equal(pixel_sum(d.x, 784), 27525);
  assert_true(d.x[14 * 28 + 14] == 240.0f / 255.0f);
  nb_dataset_free(&d);
}

/* ---- IDX / MNIST layout (synthetic) --------------------------------------- */

/* Writes an IDX file: magic, dims, data (already big-endian bytes). */
static void write_idx(const char *dir, const char *name, int type, int ndim, const uint32_t *dims,
                      const unsigned char *data, size_t n, int gz) {
  unsigned char head[4 + 4 * 8] = {0, 0, (unsigned char)type, (unsigned char)ndim};
  for (int i = 0; i < ndim; i++) {
    head[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
    head[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
    head[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
    head[7 + 4 * i] = (unsigned char)dims[i];
  }
  char p[4096];
  dt_path(p, sizeof p, dir, name);
  if (gz) {
    gzFile f = gzopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, head, 4 + 4 * (unsigned)ndim), 4 + 4 * ndim);
    if (n) assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
    gzclose(f);
  } else {
    unsigned char *all = malloc(4 + 4 * (size_t)ndim + n);
    memcpy(all, head, 4 + 4 * (size_t)ndim);
    if (n) memcpy(all + 4 + 4 * ndim, data, n);
    dt_write(dir, name, all, 4 + 4 * (size_t)ndim + n);
    free(all);
  }
}

/* 5 images of 28x28 with pixel (i, p) = (7 i + p) % 256, labels 3,1,4,1,5. */
static void write_fake_mnist(const char *dir, const char *prefix, int gz) {
  unsigned char px[5 * 784], lab[5] = {3, 1, 4, 1, 5};
  for (int i = 0; i < 5; i++)
    for (int p = 0; p < 784; p++) px[i * 784 + p] = (unsigned char)((7 * i + p) % 256);
  uint32_t di[3] = {5, 28, 28}, dl[1] = {5};
  char name[128];
  snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gz ? ".gz" : "");
  write_idx(dir, name, 0x08, 3, di, px, sizeof px, gz);
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gz ? ".gz" : "");
  write_idx(dir, name, 0x08, 1, dl, lab, sizeof lab, gz);
}

static void test_mnist_synthetic(void **s) {
  (void)s;
  char dir[2048], p1[4096], p2[4096];
  subdir("mnist", dir, sizeof dir);
  write_fake_mnist(dir, "train", 1); /* gzipped */
  write_fake_mnist(dir, "t10k", 0);  /* plain */
  for (int split = 0; split < 2; split++) {
    nb_dataset d;
    TU_OK(nb_mnist_load(dir, (nb_split)split, 0, &d));
    assert_int_equal(d.n, 5);
    assert_int_equal(d.example_numel, 784);
    const int64_t lab[5] = {3, 1, 4, 1, 5};
    for (int i = 0; i < 5; i++) {
      assert_int_equal(d.y[i], lab[i]);
      for (int p = 0; p < 784; p++)
        assert_true(d.x[i * 784 + p] == (float)((7 * i + p) % 256) / 255.0f);
    }
    nb_dataset_free(&d);
  }
  nb_dataset d;
  TU_OK(nb_mnist_load(dir, NB_SPLIT_TRAIN, 2, &d));
  assert_int_equal(d.n, 2);
  assert_int_equal(d.y[1], 1);
  nb_dataset_free(&d);
  TU_OK(nb_fashion_mnist_load(dir, NB_SPLIT_TEST, 0, &d));
  assert_int_equal(d.num_classes, 10);
  assert_string_equal(d.class_names[9], "Ankle boot");
  assert_string_equal(d.class_names[0], "T-shirt/top");
  nb_dataset_free(&d);

  /* the generic pair reader: classes = 1 + largest label */
  TU_OK(nb_idx_dataset_load(dt_path(p1, sizeof p1, dir, "t10k-images-idx3-ubyte"),
                            dt_path(p2, sizeof p2, dir, "t10k-labels-idx1-ubyte"), 0, &d));
  assert_int_equal(d.num_classes, 6);
  assert_null(d.class_names);
  nb_dataset_free(&d);
}

static void test_mnist_errors(void **s) {
  (void)s;
  char dir[2048], ip[4096], lp[4096];
  nb_dataset d;
  subdir("mnist_bad", dir, sizeof dir);
  DT_ERR(NB_ERR_IO, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), "train-images-idx3-ubyte.gz",
         "train-images-idx3-ubyte found");
  assert_null(d.x);
  write_fake_mnist(dir, "train", 0);
  dt_path(ip, sizeof ip, dir, "train-images-idx3-ubyte");
  dt_path(lp, sizeof lp, dir, "train-labels-idx1-ubyte");

  /* labels that are not digits: the byte offset of the bad label */
  unsigned char lab[5] = {3, 1, 4, 12, 5};
  uint32_t dl[1] = {5}, dl4[1] = {4}, di[3] = {5, 28, 28};
  write_idx(dir, "train-labels-idx1-ubyte", 0x08, 1, dl, lab, 5, 0);
  DT_ERR(NB_ERR_FORMAT, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), lp, "label 12 at byte 11");

  /* counts that disagree name both files */
  write_idx(dir, "train-labels-idx1-ubyte", 0x08, 1, dl4, lab, 4, 0);
  DT_ERR(NB_ERR_FORMAT, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), ip, lp, "5 images", "4 labels");

  /* i32 images are not MNIST images */
  unsigned char big[5 * 784 * 4] = {0};
  write_idx(dir, "train-labels-idx1-ubyte", 0x08, 1, dl, (unsigned char[5]){0}, 5, 0);
  write_idx(dir, "train-images-idx3-ubyte", 0x0C, 3, di, big, sizeof big, 0);
  DT_ERR(NB_ERR_FORMAT, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), ip, "u8 images", "i32");

  /* not 28x28 */
  uint32_t d2[3] = {5, 14, 56};
  write_idx(dir, "train-images-idx3-ubyte", 0x08, 3, d2, big, 5 * 784, 0);
  DT_ERR(NB_ERR_FORMAT, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), ip, "28x28", "14x56");

  /* truncated data: nb_idx_load names the file and the byte */
  write_fake_mnist(dir, "train", 0);
  dt_truncate(dir, "train-images-idx3-ubyte", 16 + 784 * 3 + 100);
  DT_ERR(NB_ERR_FORMAT, nb_mnist_load(dir, NB_SPLIT_TRAIN, 0, &d), ip, "truncated", "byte");
  assert_null(d.x);
  assert_int_equal(d.n, 0);
  DT_ERR(NB_ERR_INVALID_ARG, nb_mnist_load(NULL, NB_SPLIT_TRAIN, 0, &d), "NULL");
  DT_ERR(NB_ERR_INVALID_ARG, nb_mnist_load(dir, (nb_split)7, 0, &d), "split");
}

/* ---- CIFAR-10 ---------------------------------------------------------------- */

static unsigned char cifar_px(int file, int rec, int k) {
  return (unsigned char)((file * 31 + rec * 7 + k * 3 + k / 1024) % 256);
}

/* file 0..4 = data_batch_1..5, 5 = test_batch; `records` records each,
 * label (file + rec) % 10. */
static void write_cifar_file(const char *dir, int file, int records) {
  size_t n = (size_t)records * 3073;
  unsigned char *b = malloc(n);
  for (int r = 0; r < records; r++) {
    b[r * 3073] = (unsigned char)((file + r) % 10);
    for (int k = 0; k < 3072; k++) b[r * 3073 + 1 + k] = cifar_px(file, r, k);
  }
  char name[64];
  if (file < 5)
    snprintf(name, sizeof name, "data_batch_%d.bin", file + 1);
  else
    snprintf(name, sizeof name, "test_batch.bin");
  dt_write(dir, name, b, n);
  free(b);
}

static void check_cifar(const nb_dataset *d, int first_file, int records_per_file, int64_t n) {
  assert_int_equal(d->n, n);
  assert_int_equal(d->ndim, 3);
  assert_int_equal(d->shape[0], 3);
  assert_int_equal(d->shape[1], 32);
  assert_int_equal(d->shape[2], 32);
  assert_int_equal(d->num_classes, 10);
  for (int64_t i = 0; i < n; i++) {
    int file = first_file + (int)(i / records_per_file), r = (int)(i % records_per_file);
    assert_int_equal(d->y[i], (file + r) % 10);
    for (int k = 0; k < 3072; k++)
      if (d->x[i * 3072 + k] != (float)cifar_px(file, r, k) / 255.0f)
        fail_msg("example %lld value %d: got %g want %d/255", (long long)i, k,
                 (double)d->x[i * 3072 + k], cifar_px(file, r, k));
  }
}

static void test_cifar(void **s) {
  (void)s;
  char dir[2048];
  subdir("cifar", dir, sizeof dir);
  for (int f = 0; f < 5; f++) write_cifar_file(dir, f, 2);
  write_cifar_file(dir, 5, 3);
  nb_dataset d;
  TU_OK(nb_cifar10_load(dir, NB_SPLIT_TRAIN, 0, &d));
  check_cifar(&d, 0, 2, 10);
  /* layout: channel planes R, G, B of 32x32, row-major */
  assert_true(d.x[1 * 1024 + 2 * 32 + 5] == (float)cifar_px(0, 0, 1024 + 69) / 255.0f);
  assert_string_equal(d.class_names[0], "airplane"); /* no meta file: standard names */
  assert_string_equal(d.class_names[9], "truck");
  nb_dataset_free(&d);
  TU_OK(nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d));
  check_cifar(&d, 5, 3, 3);
  nb_dataset_free(&d);
  TU_OK(nb_cifar10_load(dir, NB_SPLIT_TRAIN, 3, &d)); /* the limit spans two files */
  check_cifar(&d, 0, 2, 3);
  nb_dataset_free(&d);

  /* names from batches.meta.txt, CRLF and a trailing blank line tolerated */
  dt_write_str(dir, "batches.meta.txt", "a0\r\na1\na2\na3\na4\na5\na6\na7\na8\n  a9  \n\n");
  TU_OK(nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d));
  assert_string_equal(d.class_names[0], "a0");
  assert_string_equal(d.class_names[9], "a9");
  nb_dataset_free(&d);

  /* the tarball's layout: dir/cifar-10-batches-bin/ */
  char outer[2048], inner[4096];
  subdir("cifar_outer", outer, sizeof outer);
  dt_mkdir(outer, "cifar-10-batches-bin");
  dt_path(inner, sizeof inner, outer, "cifar-10-batches-bin");
  write_cifar_file(inner, 5, 4);
  TU_OK(nb_cifar10_load(outer, NB_SPLIT_TEST, 0, &d));
  check_cifar(&d, 5, 4, 4);
  nb_dataset_free(&d);
}

static void test_cifar_errors(void **s) {
  (void)s;
  char dir[2048], p[4096];
  nb_dataset d;
  subdir("cifar_bad", dir, sizeof dir);
  DT_ERR(NB_ERR_IO, nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d), "test_batch.bin", "cannot open");
  for (int f = 0; f < 5; f++) write_cifar_file(dir, f, 2);
  write_cifar_file(dir, 5, 2);

  /* truncated in the second record: the offset where that record starts */
  dt_truncate(dir, "data_batch_3.bin", 3073 + 1000);
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TRAIN, 0, &d),
         dt_path(p, sizeof p, dir, "data_batch_3.bin"), "4073 bytes", "record at byte 3073",
         "3073 bytes (1 label byte + 3072 pixel bytes)");
  assert_null(d.x);
  /* one byte too many is the wrong size too */
  write_cifar_file(dir, 2, 2);
  size_t len;
  unsigned char *b = dt_read(dir, "data_batch_3.bin", &len);
  b = realloc(b, len + 1);
  b[len] = 0;
  dt_write(dir, "data_batch_3.bin", b, len + 1);
  free(b);
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TRAIN, 0, &d), "data_batch_3.bin",
         "record at byte 6146");
  /* empty */
  dt_write(dir, "data_batch_3.bin", "", 0);
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TRAIN, 0, &d), "data_batch_3.bin", "0 bytes");
  write_cifar_file(dir, 2, 2);
  /* a missing file */
  remove(dt_path(p, sizeof p, dir, "data_batch_5.bin"));
  DT_ERR(NB_ERR_IO, nb_cifar10_load(dir, NB_SPLIT_TRAIN, 0, &d), "data_batch_5.bin");
  write_cifar_file(dir, 4, 2);
  /* a label that is not a class: the record's offset */
  b = dt_read(dir, "test_batch.bin", &len);
  b[3073] = 10;
  dt_write(dir, "test_batch.bin", b, len);
  free(b);
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d), "test_batch.bin",
         "label 10 at byte 3073");
  write_cifar_file(dir, 5, 2);
  /* a meta file with nine names */
  dt_write_str(dir, "batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\n");
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d), "batches.meta.txt",
         "expected 10 class names", "found 9");
  dt_write_str(dir, "batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n");
  DT_ERR(NB_ERR_FORMAT, nb_cifar10_load(dir, NB_SPLIT_TEST, 0, &d), "batches.meta.txt:11",
         "more than 10");
  DT_ERR(NB_ERR_INVALID_ARG, nb_cifar10_load(dir, NB_SPLIT_TEST, -1, &d), "limit");
}

/* ---- CSV ---------------------------------------------------------------------- */

static void test_csv(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("csv", dir, sizeof dir);
  nb_dataset d, t;

  /* integer labels in the last column (the default) */
  dt_write_str(dir, "int.csv", "a,b,label\n1.5,-2,3\n0,1e3,0\n\n4,5,3\n");
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "int.csv"), NULL, &d));
  assert_int_equal(d.n, 3);
  assert_int_equal(d.ndim, 1);
  assert_int_equal(d.shape[0], 2);
  const float want_x[6] = {1.5f, -2, 0, 1000, 4, 5};
  for (int i = 0; i < 6; i++) assert_true(d.x[i] == want_x[i]);
  assert_int_equal(d.y[0], 3);
  assert_int_equal(d.y[1], 0);
  assert_int_equal(d.y[2], 3);
  assert_int_equal(d.num_classes, 4);
  assert_null(d.class_names);
  nb_dataset_free(&d);

  /* string labels chosen by name in the middle, CRLF, quotes, a BOM, spaces */
  dt_write_str(dir, "str.csv",
               "\xEF\xBB\xBF"
               "x1,\"spe,cies\",x2\r\n"
               "1, setosa ,2\r\n"
               "3,\"virginica\",4\r\n"
               "5,setosa,6\r\n"
               "\"7\",\"ver\"\"si\"\"color\",8\r\n");
  nb_csv_options o = {"spe,cies", 0, NULL};
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "str.csv"), &o, &d));
  assert_int_equal(d.n, 4);
  assert_int_equal(d.shape[0], 2);
  const float want_s[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = 0; i < 8; i++) assert_true(d.x[i] == want_s[i]);
  const int64_t ids[4] = {0, 1, 0, 2};
  for (int i = 0; i < 4; i++) assert_int_equal(d.y[i], ids[i]);
  assert_int_equal(d.num_classes, 3);
  assert_string_equal(d.class_names[0], "setosa");
  assert_string_equal(d.class_names[1], "virginica");
  assert_string_equal(d.class_names[2], "ver\"si\"color");

  /* a test split reuses the train split's ids, whatever order it meets them in */
  dt_write_str(dir, "str_test.csv", "x1;species;x2\n9;setosa;9\n");
  o = (nb_csv_options){"species", 0, &d}; /* the wrong delimiter: one column "x1;species;x2" */
  DT_ERR(NB_ERR_FORMAT, nb_csv_load(dt_path(p, sizeof p, dir, "str_test.csv"), &o, &t),
         "str_test.csv:1", "no column named 'species'", "(columns: 'x1;species;x2')");
  dt_write_str(dir, "str_test.csv", "x1;species;x2\n9;\"ver\"\"si\"\"color\";9\n8;setosa;8\n");
  o = (nb_csv_options){"species", ';', &d};
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "str_test.csv"), &o, &t));
  assert_int_equal(t.y[0], 2);
  assert_int_equal(t.y[1], 0);
  assert_int_equal(t.num_classes, 3);
  assert_string_equal(t.class_names[1], "virginica");
  nb_dataset_free(&t);
  dt_write_str(dir, "str_test.csv", "x1;species;x2\n9;setosa;9\n8;dog;8\n");
  DT_ERR(NB_ERR_FORMAT, nb_csv_load(dt_path(p, sizeof p, dir, "str_test.csv"), &o, &t),
         "str_test.csv:3:3", "label 'dog'", "3 classes");
  nb_dataset_free(&d);

  /* integer classes of another split bound the labels */
  dt_write_str(dir, "i1.csv", "f,y\n0,0\n1,2\n");
  dt_write_str(dir, "i2.csv", "f,y\n0,1\n1,3\n");
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "i1.csv"), NULL, &d));
  o = (nb_csv_options){"y", 0, &d};
  DT_ERR(NB_ERR_FORMAT, nb_csv_load(dt_path(p, sizeof p, dir, "i2.csv"), &o, &t), "i2.csv:3:3",
         "integer label 3", "[0, 3)");
  dt_write_str(dir, "i2.csv", "f,y\n0,1\n1,0\n");
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "i2.csv"), &o, &t));
  assert_int_equal(t.num_classes, 3);
  nb_dataset_free(&t);
  nb_dataset_free(&d);

  /* mixed labels are all names: "1" is a class like "cat" */
  dt_write_str(dir, "mixed.csv", "f,y\n0,1\n1,cat\n2,1\n");
  TU_OK(nb_csv_load(dt_path(p, sizeof p, dir, "mixed.csv"), NULL, &d));
  assert_int_equal(d.num_classes, 2);
  assert_string_equal(d.class_names[0], "1");
  assert_int_equal(d.y[2], 0);
  nb_dataset_free(&d);

  /* many classes (exercises the growing class table) */
  FILE *f = fopen(dt_path(p, sizeof p, dir, "many.csv"), "w");
  fprintf(f, "v,name\n");
  for (int i = 0; i < 500; i++) fprintf(f, "%d,c%d\n", i, (i * 37) % 300);
  fclose(f);
  TU_OK(nb_csv_load(p, NULL, &d));
  assert_int_equal(d.num_classes, 300);
  for (int i = 0; i < 500; i++) {
    char name[16];
    snprintf(name, sizeof name, "c%d", (i * 37) % 300);
    assert_string_equal(d.class_names[d.y[i]], name);
    assert_true(d.x[i] == (float)i);
  }
  nb_dataset_free(&d);
}

static void test_csv_errors(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("csv_bad", dir, sizeof dir);
  nb_dataset d;
  struct {
    const char *text, *label, *msg1, *msg2;
  } cases[] = {
      {"a,b,y\n1,2,0\n3,x4,1\n", NULL, "bad.csv:3:3",
       "expected a number in column 'b', found 'x4'"},
      {"a,b,y\n1,,0\n", NULL, "bad.csv:2:3", "found ''"},
      {"a,b,y\n1,2,0\n3,4\n", NULL, "bad.csv:3:3", "expected 3 fields as in the header, found 2"},
      {"a,b,y\n1,2,0,7\n", NULL, "bad.csv:2:7", "expected 3 fields as in the header, found 4"},
      {"a,b,y\n1,2,\n", NULL, "bad.csv:2:5", "empty label in column 'y'"},
      {"a,b,y\n1,2,-1\n", NULL, "bad.csv:2:5", "integer label -1"},
      {"a,b,y\n1,\"2,0\n", NULL, "bad.csv:2:3", "quoted field is never closed"},
      {"a,b,y\n1,\"2\"x,0\n", NULL, "bad.csv:2:6", "after a closing quote, found 'x'"},
      {"a,b,y\n1,2,0\n", "z", "bad.csv:1",
       "no column named 'z' in the header (columns: 'a', 'b', 'y')"},
      {"", NULL, "bad.csv:1:1", "empty file"},
      {"\n\n", NULL, "bad.csv:1:1", "empty file"},
      {"a,b,y\n", NULL, "bad.csv", "no data rows"},
      {"y\n1\n", NULL, "bad.csv:1", "at least one feature column"},
      {"a,b,y\n1,2,0\n3,\n4,5,1\n", NULL, "bad.csv:3:3", "found 2"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dt_write_str(dir, "bad.csv", cases[i].text);
    nb_csv_options o = {cases[i].label, 0, NULL};
    DT_ERR(NB_ERR_FORMAT, nb_csv_load(dt_path(p, sizeof p, dir, "bad.csv"), &o, &d), cases[i].msg1,
           cases[i].msg2);
    assert_null(d.x);
  }
  DT_ERR(NB_ERR_IO, nb_csv_load(dt_path(p, sizeof p, dir, "missing.csv"), NULL, &d), "missing.csv",
         "cannot open");
  nb_csv_options quote = {NULL, '"', NULL};
  DT_ERR(NB_ERR_INVALID_ARG, nb_csv_load(p, &quote, &d), "delimiter");
}

/* ---- PNG / JPEG writers ----------------------------------------------------- */

/* Writes a PNG with the classic API so that any colour type and bit depth
 * can be produced. rows: h rows of packed samples (16-bit big-endian). */
static void write_png(const char *path, int w, int h, int color_type, int depth,
                      const unsigned char *data, const png_color *palette, int npal) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) fail_msg("libpng could not write %s", path);
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (palette) png_set_PLTE(png, info, palette, npal);
  png_write_info(png, info);
  int ch = color_type == PNG_COLOR_TYPE_RGB          ? 3
           : color_type == PNG_COLOR_TYPE_RGBA       ? 4
           : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                     : 1;
  size_t stride = (size_t)w * (size_t)ch * (size_t)(depth == 16 ? 2 : 1);
  for (int y = 0; y < h; y++) png_write_row(png, data + (size_t)y * stride);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

static void write_jpeg(const char *path, int w, int h, int ch, const unsigned char *data) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = ch;
  c.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  /* no chroma subsampling, so that colour gradients survive within a few levels */
  for (int i = 0; i < c.num_components; i++)
    c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = (JSAMPROW)(data + (size_t)c.next_scanline * (size_t)w * (size_t)ch);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  fclose(f);
}

/* ---- PNG ---------------------------------------------------------------------- */

static void test_png_formats(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("png", dir, sizeof dir);
  const int W = 5, H = 3;
  unsigned char grey[15], rgb[45], rgba[60], grey16[30], pal[15];
  for (int i = 0; i < 15; i++) {
    grey[i] = (unsigned char)(i * 17);
    for (int c = 0; c < 3; c++) rgb[i * 3 + c] = (unsigned char)(i * 10 + c * 90);
    for (int c = 0; c < 3; c++) rgba[i * 4 + c] = rgb[i * 3 + c];
    rgba[i * 4 + 3] = (unsigned char)(i * 5); /* alpha, dropped */
    grey16[2 * i] = (unsigned char)(i * 13);
    grey16[2 * i + 1] = 0xFF; /* the low byte is dropped */
    pal[i] = (unsigned char)(i % 3);
  }
  const png_color palette[3] = {{255, 0, 0}, {0, 128, 0}, {1, 2, 3}};
  nb_image_options rgb_opt = {3, H, W, NB_RESIZE_REJECT}, grey_opt = {1, H, W, NB_RESIZE_REJECT};
  float out[45];

  write_png(dt_path(p, sizeof p, dir, "grey.png"), W, H, PNG_COLOR_TYPE_GRAY, 8, grey, NULL, 0);
  TU_OK(nb_image_load(p, &grey_opt, out));
  for (int i = 0; i < 15; i++) assert_true(out[i] == grey[i] / 255.0f);
  TU_OK(nb_image_load(p, &rgb_opt, out)); /* grey -> RGB copies the value */
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 15; i++) assert_true(out[c * 15 + i] == grey[i] / 255.0f);

  write_png(dt_path(p, sizeof p, dir, "rgb.png"), W, H, PNG_COLOR_TYPE_RGB, 8, rgb, NULL, 0);
  TU_OK(nb_image_load(p, &rgb_opt, out)); /* CHW planes */
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 15; i++) assert_true(out[c * 15 + i] == rgb[i * 3 + c] / 255.0f);
  TU_OK(nb_image_load(p, &grey_opt, out)); /* RGB -> grey: ITU-R 601 luma */
  for (int i = 0; i < 15; i++) {
    float want = (0.299f * rgb[3 * i] + 0.587f * rgb[3 * i + 1] + 0.114f * rgb[3 * i + 2]) / 255.0f;
    assert_float_equal(out[i], want, 1e-6);
  }

  write_png(dt_path(p, sizeof p, dir, "rgba.png"), W, H, PNG_COLOR_TYPE_RGBA, 8, rgba, NULL, 0);
  TU_OK(nb_image_load(p, &rgb_opt, out));
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 15; i++) assert_true(out[c * 15 + i] == rgb[i * 3 + c] / 255.0f);

  write_png(dt_path(p, sizeof p, dir, "g16.png"), W, H, PNG_COLOR_TYPE_GRAY, 16, grey16, NULL, 0);
  TU_OK(nb_image_load(p, &grey_opt, out));
  for (int i = 0; i < 15; i++) assert_true(out[i] == (float)(i * 13) / 255.0f);

  write_png(dt_path(p, sizeof p, dir, "pal.png"), W, H, PNG_COLOR_TYPE_PALETTE, 8, pal, palette, 3);
  TU_OK(nb_image_load(p, &rgb_opt, out));
  for (int i = 0; i < 15; i++) {
    const png_color *c = &palette[i % 3];
    assert_true(out[i] == c->red / 255.0f);
    assert_true(out[15 + i] == c->green / 255.0f);
    assert_true(out[30 + i] == c->blue / 255.0f);
  }

  /* bilinear resize, half-pixel centres: a 2x2 grey image to 4x4. Along
   * each axis the output samples the input at -0.25 (clamped to 0), 0.25,
   * 0.75 and 1.25 (clamped to the last pixel). */
  const unsigned char g2[4] = {0, 100, 200, 40};
  write_png(dt_path(p, sizeof p, dir, "g2.png"), 2, 2, PNG_COLOR_TYPE_GRAY, 8, g2, NULL, 0);
  nb_image_options up = {1, 4, 4, NB_RESIZE_BILINEAR};
  float big[16];
  TU_OK(nb_image_load(p, &up, big));
  const float wt[4][2] = {{1, 0}, {0.75f, 0.25f}, {0.25f, 0.75f}, {0, 1}};
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) {
      float want = 0;
      for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) want += wt[y][a] * wt[x][b] * g2[a * 2 + b] / 255.0f;
      assert_float_equal(big[y * 4 + x], want, 1e-6);
    }
  /* and down: 4x4 -> 2x2 samples at 0.5, 2.5, i.e. averages of 2x2 blocks */
  unsigned char g4[16];
  for (int i = 0; i < 16; i++) g4[i] = (unsigned char)(i * 15);
  write_png(dt_path(p, sizeof p, dir, "g4.png"), 4, 4, PNG_COLOR_TYPE_GRAY, 8, g4, NULL, 0);
  nb_image_options down = {1, 2, 2, NB_RESIZE_BILINEAR};
  TU_OK(nb_image_load(p, &down, big));
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 2; x++) {
      int r = 2 * y, c = 2 * x;
      float want = (g4[r * 4 + c] + g4[r * 4 + c + 1] + g4[r * 4 + 4 + c] + g4[r * 4 + 5 + c]) /
                   4.0f / 255.0f;
      assert_float_equal(big[y * 2 + x], want, 1e-6);
    }
  /* rejecting another size names the file and both sizes */
  nb_image_options strict = {1, 4, 4, NB_RESIZE_REJECT};
  TU_OK(nb_image_load(p, &strict, big));
  strict.height = 2;
  DT_ERR(NB_ERR_SHAPE, nb_image_load(p, &strict, big), "g4.png", "image is 4x4", "expected 2x4");
  strict.height = 4;
  DT_ERR(NB_ERR_SHAPE, nb_image_load(dt_path(p, sizeof p, dir, "g2.png"), &strict, big), "g2.png",
         "image is 2x2", "expected 4x4");
  nb_image_options bad = {2, 4, 4, NB_RESIZE_REJECT};
  DT_ERR(NB_ERR_INVALID_ARG, nb_image_load(p, &bad, big), "channels 2");
}

static void test_image_corrupt(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("corrupt", dir, sizeof dir);
  unsigned char px[64 * 64 * 3];
  for (size_t i = 0; i < sizeof px; i++) px[i] = (unsigned char)((i * 7919) % 251);
  nb_image_options o = {3, 64, 64, NB_RESIZE_REJECT};
  float *out = malloc(3 * 64 * 64 * sizeof *out);
  write_png(dt_path(p, sizeof p, dir, "cut.png"), 64, 64, PNG_COLOR_TYPE_RGB, 8, px, NULL, 0);
  size_t len;
  free(dt_read(dir, "cut.png", &len));
  TU_OK(nb_image_load(p, &o, out));
  /* cut in the pixel data, cut before IEND, a flipped byte in the pixel data */
  dt_truncate(dir, "cut.png", len / 2);
  DT_ERR(NB_ERR_FORMAT, nb_image_load(p, &o, out), "cut.png", "corrupt or truncated PNG");
  write_png(p, 64, 64, PNG_COLOR_TYPE_RGB, 8, px, NULL, 0);
  dt_truncate(dir, "cut.png", len - 12);
  DT_ERR(NB_ERR_FORMAT, nb_image_load(p, &o, out), "cut.png", "corrupt or truncated PNG");
  write_png(p, 64, 64, PNG_COLOR_TYPE_RGB, 8, px, NULL, 0);
  unsigned char *b = dt_read(dir, "cut.png", &len);
  b[len / 2] ^= 0x55;
  dt_write(dir, "cut.png", b, len);
  free(b);
  DT_ERR(NB_ERR_FORMAT, nb_image_load(p, &o, out), "cut.png", "PNG");

  write_jpeg(dt_path(p, sizeof p, dir, "cut.jpg"), 64, 64, 3, px);
  free(dt_read(dir, "cut.jpg", &len));
  TU_OK(nb_image_load(p, &o, out));
  dt_truncate(dir, "cut.jpg", len / 2);
  DT_ERR(NB_ERR_FORMAT, nb_image_load(p, &o, out), "cut.jpg", "corrupt or truncated JPEG");
  dt_truncate(dir, "cut.jpg", 200); /* inside the headers */
  DT_ERR(NB_ERR_FORMAT, nb_image_load(p, &o, out), "cut.jpg", "JPEG");

  dt_write_str(dir, "text.png", "this is not an image at all");
  DT_ERR(NB_ERR_FORMAT, nb_image_load(dt_path(p, sizeof p, dir, "text.png"), &o, out), "text.png",
         "not a PNG or JPEG");
  dt_write(dir, "empty.jpg", "", 0);
  DT_ERR(NB_ERR_FORMAT, nb_image_load(dt_path(p, sizeof p, dir, "empty.jpg"), &o, out), "empty.jpg",
         "empty file");
  DT_ERR(NB_ERR_IO, nb_image_load(dt_path(p, sizeof p, dir, "none.png"), &o, out), "none.png");
  free(out);
}

/* Every prefix of a valid PNG, JPEG and CIFAR file is an error naming the
 * file, and flipped bytes never crash the decoders (they may or may not be
 * noticed: a flip in JPEG entropy data decodes to other pixels). */
static void test_every_truncation(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("prefixes", dir, sizeof dir);
  unsigned char px[16 * 16 * 3];
  for (size_t i = 0; i < sizeof px; i++) px[i] = (unsigned char)((i * 7919) % 251);
  nb_image_options o = {3, 16, 16, NB_RESIZE_REJECT};
  float out[3 * 16 * 16];
  const char *names[2] = {"full.png", "full.jpg"};
  write_png(dt_path(p, sizeof p, dir, names[0]), 16, 16, PNG_COLOR_TYPE_RGB, 8, px, NULL, 0);
  write_jpeg(dt_path(p, sizeof p, dir, names[1]), 16, 16, 3, px);
  for (int k = 0; k < 2; k++) {
    size_t len;
    unsigned char *full = dt_read(dir, names[k], &len);
    TU_OK(nb_image_load(dt_path(p, sizeof p, dir, names[k]), &o, out));
    dt_path(p, sizeof p, dir, "cut");
    for (size_t n = 0; n < len; n++) {
      dt_write(dir, "cut", full, n);
      nb_status st = nb_image_load(p, &o, out);
      if (st == NB_OK) fail_msg("%s cut to %zu of %zu bytes was accepted", names[k], n, len);
      if (!strstr(nb_last_error(), p))
        fail_msg("%s cut to %zu bytes: message \"%s\" does not name the file", names[k], n,
                 nb_last_error());
    }
    uint64_t r = 12345;
    for (int t = 0; t < 300; t++) {
      unsigned char *b = malloc(len);
      memcpy(b, full, len);
      for (int f = 0; f < 1 + t % 4; f++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        b[(r >> 33) % len] ^= (unsigned char)(1 + (r >> 20) % 255);
      }
      dt_write(dir, "cut", b, len);
      (void)nb_image_load(p, &o, out); /* any answer, but no crash, leak or UB */
      free(b);
    }
    free(full);
  }
  /* CIFAR: any size that is not whole records */
  char cdir[2048];
  subdir("prefixes_cifar", cdir, sizeof cdir);
  write_cifar_file(cdir, 5, 2);
  size_t len;
  unsigned char *full = dt_read(cdir, "test_batch.bin", &len);
  nb_dataset d;
  for (size_t n = 0; n < len; n += 97) {
    dt_write(cdir, "test_batch.bin", full, n);
    if (nb_cifar10_load(cdir, NB_SPLIT_TEST, 0, &d) == NB_OK && n % 3073)
      fail_msg("CIFAR file of %zu bytes accepted", n);
    nb_dataset_free(&d);
  }
  free(full);
}

/* ---- JPEG --------------------------------------------------------------------- */

static void test_jpeg(void **s) {
  (void)s;
  char dir[2048], p[4096];
  subdir("jpeg", dir, sizeof dir);
  enum { W = 16, H = 16 };
  unsigned char rgb[W * H * 3], grey[W * H];
  /* smooth gradients: JPEG at quality 100 keeps them within a few levels */
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      rgb[(y * W + x) * 3 + 0] = (unsigned char)(x * 12 + 20);
      rgb[(y * W + x) * 3 + 1] = (unsigned char)(y * 10 + 40);
      rgb[(y * W + x) * 3 + 2] = (unsigned char)(200 - 4 * (x + y));
      grey[y * W + x] = (unsigned char)(8 * x + 4 * y);
    }
  float out[3 * W * H];
  nb_image_options rgb_opt = {3, H, W, NB_RESIZE_REJECT}, grey_opt = {1, H, W, NB_RESIZE_REJECT};
  write_jpeg(dt_path(p, sizeof p, dir, "c.JPG"), W, H, 3, rgb);
  TU_OK(nb_image_load(p, &rgb_opt, out));
  double worst = 0;
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < W * H; i++)
      worst = fmax(worst, fabs(out[c * W * H + i] - rgb[i * 3 + c] / 255.0));
  print_message("JPEG RGB: largest error %.4f\n", worst);
  assert_true(worst < 6.0 / 255);
  TU_OK(nb_image_load(p, &grey_opt, out)); /* libjpeg's Y channel: the same luma */
  worst = 0;
  for (int i = 0; i < W * H; i++) {
    double y = (0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2]) / 255.0;
    worst = fmax(worst, fabs(out[i] - y));
  }
  assert_true(worst < 6.0 / 255);

  write_jpeg(dt_path(p, sizeof p, dir, "g.jpeg"), W, H, 1, grey);
  TU_OK(nb_image_load(p, &grey_opt, out));
  worst = 0;
  for (int i = 0; i < W * H; i++) worst = fmax(worst, fabs(out[i] - grey[i] / 255.0));
  assert_true(worst < 4.0 / 255);
  TU_OK(nb_image_load(p, &rgb_opt, out));
  for (int i = 0; i < W * H; i++) {
    assert_true(out[i] == out[W * H + i]);
    assert_true(out[i] == out[2 * W * H + i]);
  }
}

/* ---- image folders ------------------------------------------------------------ */

static void test_image_folder(void **s) {
  (void)s;
  char dir[2048], cls[4096], p[4096];
  subdir("folder", dir, sizeof dir);
  /* classes given out of order: ids follow the sorted names */
  const char *names[3] = {"dog", "ant", "cat"};
  for (int c = 0; c < 3; c++) dt_mkdir(dir, names[c]);
  dt_mkdir(dir, ".hidden_class");
  unsigned char px[4 * 4];
  /* ant: b.png (value 10), a.png (value 20); cat: x.jpg (8x8 grey, resized);
   * dog: z.PNG (value 30); plus files that are skipped */
  memset(px, 20, sizeof px);
  write_png(dt_path(p, sizeof p, dt_path(cls, sizeof cls, dir, "ant"), "a.png"), 4, 4,
            PNG_COLOR_TYPE_GRAY, 8, px, NULL, 0);
  memset(px, 10, sizeof px);
  write_png(dt_path(p, sizeof p, cls, "b.png"), 4, 4, PNG_COLOR_TYPE_GRAY, 8, px, NULL, 0);
  dt_write_str(cls, "README.txt", "not an image");
  dt_write_str(cls, ".DS_Store", "junk");
  unsigned char g8[64];
  memset(g8, 128, sizeof g8);
  write_jpeg(dt_path(p, sizeof p, dt_path(cls, sizeof cls, dir, "cat"), "x.jpg"), 8, 8, 1, g8);
  memset(px, 30, sizeof px);
  write_png(dt_path(p, sizeof p, dt_path(cls, sizeof cls, dir, "dog"), "z.PNG"), 4, 4,
            PNG_COLOR_TYPE_GRAY, 8, px, NULL, 0);
  dt_write_str(dir, "labels.txt", "a file beside the class folders");

  nb_image_options o = {1, 4, 4, NB_RESIZE_BILINEAR};
  nb_dataset d;
  TU_OK(nb_image_folder_load(dir, &o, &d));
  assert_int_equal(d.n, 4);
  assert_int_equal(d.ndim, 3);
  assert_int_equal(d.shape[0], 1);
  assert_int_equal(d.shape[1], 4);
  assert_int_equal(d.num_classes, 3);
  assert_string_equal(d.class_names[0], "ant");
  assert_string_equal(d.class_names[1], "cat");
  assert_string_equal(d.class_names[2], "dog");
  const int64_t labels[4] = {0, 0, 1, 2};
  const float first[4] = {20 / 255.0f, 10 / 255.0f, 128 / 255.0f, 30 / 255.0f};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(d.y[i], labels[i]);
    for (int k = 0; k < 16; k++)
      assert_float_equal(d.x[i * 16 + k], first[i], i == 2 ? 2.0 / 255 : 0);
  }
  nb_dataset_free(&d);

  /* RGB output from grey files */
  nb_image_options rgb = {3, 2, 2, NB_RESIZE_BILINEAR};
  TU_OK(nb_image_folder_load(dir, &rgb, &d));
  assert_int_equal(d.shape[0], 3);
  assert_true(d.x[3 * 4 * 3 + 11] == 30 / 255.0f);
  nb_dataset_free(&d);

  /* without resizing the JPEG's size is an error naming it */
  o.resize = NB_RESIZE_REJECT;
  DT_ERR(NB_ERR_SHAPE, nb_image_folder_load(dir, &o, &d), "cat/x.jpg", "8x8", "expected 4x4");
  assert_null(d.x);
  /* a corrupt file is named */
  o.resize = NB_RESIZE_BILINEAR;
  dt_write_str(dt_path(cls, sizeof cls, dir, "dog"), "broken.png", "\x89PNG\r\n\x1a\n garbage");
  DT_ERR(NB_ERR_FORMAT, nb_image_folder_load(dir, &o, &d), "dog/broken.png", "PNG");
  /* no classes, no images */
  char empty[2048];
  subdir("folder_empty", empty, sizeof empty);
  DT_ERR(NB_ERR_FORMAT, nb_image_folder_load(empty, &o, &d), "no class subfolders");
  dt_mkdir(empty, "a");
  DT_ERR(NB_ERR_FORMAT, nb_image_folder_load(empty, &o, &d), "no .png, .jpg or .jpeg files");
  DT_ERR(NB_ERR_IO, nb_image_folder_load(dt_path(p, sizeof p, tmp, "nowhere"), &o, &d), "nowhere");
}

/* ---- nb_data_find -------------------------------------------------------------- */

static void test_data_find(void **s) {
  (void)s;
  char root[2048], p[4096], out[4096];
  subdir("find", root, sizeof root);
  dt_mkdir(root, "mnist");
  dt_path(p, sizeof p, root, "mnist");
  write_fake_mnist(p, "t10k", 1);
  dt_mkdir(root, "other");
  dt_mkdir(root, "empty_mnist");

  /* an explicit path: itself or path/<name>, nothing else */
  TU_OK(nb_data_find("mnist", p, out, sizeof out));
  assert_string_equal(out, p);
  TU_OK(nb_data_find("mnist", root, out, sizeof out));
  assert_string_equal(out, p);
  dt_path(p, sizeof p, root, "empty_mnist");
  DT_ERR(NB_ERR_IO, nb_data_find("mnist", p, out, sizeof out), "dataset 'mnist' not found",
         "tried: ", "empty_mnist", "empty_mnist/mnist");
  char small[8];
  DT_ERR(NB_ERR_INVALID_ARG, nb_data_find("mnist", root, small, sizeof small), "8-byte");

  /* $NABLA_DATA/<name>, then $NABLA_DATA itself */
  char *saved = getenv("NABLA_DATA") ? strdup(getenv("NABLA_DATA")) : NULL;
  setenv("NABLA_DATA", root, 1);
  TU_OK(nb_data_find("mnist", NULL, out, sizeof out));
  assert_string_equal(out, dt_path(p, sizeof p, root, "mnist"));
  setenv("NABLA_DATA", p, 1);
  TU_OK(nb_data_find("mnist", NULL, out, sizeof out));
  assert_string_equal(out, p);
  /* unknown names: any directory <root>/<name>, never the bare root */
  setenv("NABLA_DATA", root, 1);
  TU_OK(nb_data_find("other", NULL, out, sizeof out));
  assert_string_equal(out, dt_path(p, sizeof p, root, "other"));
  DT_ERR(NB_ERR_IO, nb_data_find("nothing_here", NULL, out, sizeof out), "'nothing_here' not found",
         "nothing_here", "../shared/data/nothing_here", "data/nothing_here");

  /* ../shared/data/<name> from the working directory */
  unsetenv("NABLA_DATA");
  dt_mkdir(root, "work");
  dt_mkdir(root, "shared");
  dt_path(p, sizeof p, root, "shared");
  dt_mkdir(p, "data");
  dt_path(p, sizeof p, root, "shared/data");
  dt_mkdir(p, "cifar10");
  dt_path(p, sizeof p, root, "shared/data/cifar10");
  write_cifar_file(p, 5, 1);
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dt_path(p, sizeof p, root, "work")), 0);
  nb_status st = nb_data_find("cifar10", NULL, out, sizeof out);
  nb_status st2 = nb_data_find("mnist", NULL, out + 2048, sizeof out - 2048);
  assert_int_equal(chdir(cwd), 0);
  TU_OK(st);
  assert_string_equal(out, "../shared/data/cifar10");
  DT_ERR(NB_ERR_IO, st2, "dataset 'mnist' not found", "../shared/data/mnist", "data/mnist",
         "$NABLA_DATA is not set");
  if (saved) {
    setenv("NABLA_DATA", saved, 1);
    free(saved);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mnist_real),    cmocka_unit_test(test_mnist_synthetic),
      cmocka_unit_test(test_mnist_errors),  cmocka_unit_test(test_cifar),
      cmocka_unit_test(test_cifar_errors),  cmocka_unit_test(test_csv),
      cmocka_unit_test(test_csv_errors),    cmocka_unit_test(test_png_formats),
      cmocka_unit_test(test_image_corrupt), cmocka_unit_test(test_every_truncation),
      cmocka_unit_test(test_jpeg),          cmocka_unit_test(test_image_folder),
      cmocka_unit_test(test_data_find),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
