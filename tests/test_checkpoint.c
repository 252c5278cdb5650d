/* Training checkpoints: every state variable and the resume metadata come
 * back bit for bit in a fresh state; the RNG resumes its exact stream; a
 * failed save (rename onto a directory, a file-size limit hit mid-write, a
 * missing or read-only directory) leaves the previous checkpoint intact and
 * no temporary file behind. Also the nb_kv map the metadata lives in. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

typedef struct {
  const char *name;
  nb_dtype dt;
  int ndim;
  int64_t shape[NB_MAX_DIMS];
} spec;

/* what a small trained model's state holds */
static const spec model[] = {
    {"fc.w", NB_F32, 2, {4, 3}},         {"fc.b", NB_F32, 1, {3}},
    {"fc.w.adam_m", NB_F32, 2, {4, 3}},  {"fc.w.adam_v", NB_F32, 2, {4, 3}},
    {"fc.b.adam_m", NB_F32, 1, {3}},     {"fc.b.adam_v", NB_F32, 1, {3}},
    {"bn.running_mean", NB_F32, 1, {3}}, {"bn.running_var", NB_F32, 1, {3}},
    {"bn.num_batches", NB_I64, 0, {0}},  {"emb.w", NB_BF16, 2, {5, 2}},
};
#define N_MODEL ((int)(sizeof model / sizeof model[0]))

static char tmpdir[64];

static void remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb)) return;
  if (S_ISDIR(sb.st_mode)) {
    chmod(path, 0700);
    DIR *d = opendir(path);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        remove_tree(p);
      }
    if (d) closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int setup(void **s) {
  (void)s;
  strcpy(tmpdir, "/tmp/nb_checkpoint_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s) {
  (void)s;
  remove_tree(tmpdir);
  return 0;
}

static const char *tmp(const char *name) {
  static char p[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
  return p[k];
}

static size_t var_bytes(const spec *s) {
  return (size_t)nb_shape_numel(s->ndim, s->shape) * nb_dtype_size(s->dt);
}

static nb_state *make_state(nb_backend *be, const spec *sp, int n) {
  nb_graph *g = nb_graph_new();
  nb_init zero = {NB_INIT_ZEROS, 0, 0, 0};
  for (int i = 0; i < n; i++)
    nb_tensor_set_output(nb_variable(g, sp[i].name, sp[i].dt, sp[i].ndim, sp[i].shape, zero));
  TU_OK(nb_graph_status(g));
  nb_state *st;
  nb_plan *p;
  TU_OK(nb_state_new(be, &st));
  TU_OK(nb_compile(g, be, st, NULL, &p));
  nb_plan_free(p);
  nb_graph_free(g);
  return st;
}

/* Fills every variable with random bits from `seed`. */
static void fill(nb_state *st, uint64_t seed) {
  nb_rng r;
  nb_rng_seed(&r, seed);
  for (int i = 0; i < N_MODEL; i++) {
    size_t n = var_bytes(&model[i]);
    unsigned char *b = malloc(n);
    for (size_t k = 0; k < n; k++) b[k] = (unsigned char)nb_rng_next(&r);
    TU_OK(nb_state_write(st, model[i].name, b, n));
    free(b);
  }
}

/* Fails unless both states hold the same bytes in every variable. */
static void assert_same_state(const nb_state *a, const nb_state *b) {
  for (int i = 0; i < N_MODEL; i++) {
    size_t n = var_bytes(&model[i]);
    unsigned char *x = malloc(n), *y = malloc(n);
    TU_OK(nb_state_read(a, model[i].name, x, n));
    TU_OK(nb_state_read(b, model[i].name, y, n));
    assert_memory_equal(x, y, n);
    free(x);
    free(y);
  }
}

/* Names in tmpdir (or a subdirectory) other than `keep`: temp files left
 * behind would show up here. */
static int count_others(const char *dir, const char *keep) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!keep || strcmp(e->d_name, keep))) {
      print_message("unexpected file %s/%s\n", dir, e->d_name);
      n++;
    }
  closedir(d);
  return n;
}

static nb_kv *trainer_meta(nb_rng *rng) {
  nb_kv *m;
  TU_OK(nb_kv_new(&m));
  TU_OK(nb_kv_set_i64(m, NB_CKPT_STEP, 1875));
  TU_OK(nb_kv_set_i64(m, NB_CKPT_EPOCH, 2));
  TU_OK(nb_kv_set_i64(m, NB_CKPT_PLAN_STEP, 1876));
  TU_OK(nb_kv_set_rng(m, NB_CKPT_RNG, rng));
  TU_OK(nb_kv_set_i64(m, NB_CKPT_DATA_POS, 12032));
  TU_OK(nb_kv_set(m, NB_CKPT_MODEL, "models/mnist_cnn.nb"));
  TU_OK(nb_kv_set(m, "note", "lr=3e-3, \"one-cycle\"\n"));
  return m;
}

static void test_roundtrip(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *a = make_state(be, model, N_MODEL), *b = make_state(be, model, N_MODEL);
  fill(a, 1);
  nb_rng rng;
  nb_rng_seed(&rng, 1234);
  for (int i = 0; i < 5; i++) nb_rng_next(&rng);
  nb_kv *meta = trainer_meta(&rng);
  const char *path = tmp("ckpt.safetensors");
  TU_OK(nb_checkpoint_save(path, a, meta));
  assert_int_equal(count_others(tmpdir, "ckpt.safetensors"), 0);

  nb_kv *got;
  TU_OK(nb_checkpoint_load(path, b, 0, &got));
  assert_same_state(a, b);
  /* every key comes back, after the two format keys */
  assert_int_equal(nb_kv_count(got), nb_kv_count(meta) + 2);
  const char *k, *v;
  TU_OK(nb_kv_entry(got, 0, &k, &v));
  assert_string_equal(k, NB_CKPT_FORMAT);
  assert_string_equal(v, "nabla.checkpoint");
  TU_OK(nb_kv_entry(got, 1, &k, &v));
  assert_string_equal(k, NB_CKPT_VERSION);
  assert_string_equal(v, "1");
  for (int i = 0; i < nb_kv_count(meta); i++) {
    TU_OK(nb_kv_entry(meta, i, &k, &v));
    assert_non_null(nb_kv_get(got, k));
    assert_string_equal(nb_kv_get(got, k), v);
  }
  int64_t step, epoch, plan_step, pos;
  TU_OK(nb_kv_get_i64(got, NB_CKPT_STEP, &step));
  TU_OK(nb_kv_get_i64(got, NB_CKPT_EPOCH, &epoch));
  TU_OK(nb_kv_get_i64(got, NB_CKPT_PLAN_STEP, &plan_step));
  TU_OK(nb_kv_get_i64(got, NB_CKPT_DATA_POS, &pos));
  assert_int_equal(step, 1875);
  assert_int_equal(epoch, 2);
  assert_int_equal(plan_step, 1876);
  assert_int_equal(pos, 12032);
  assert_string_equal(nb_kv_get(got, NB_CKPT_MODEL), "models/mnist_cnn.nb");
  /* the restored generator continues the same stream */
  nb_rng back;
  TU_OK(nb_kv_get_rng(got, NB_CKPT_RNG, &back));
  assert_memory_equal(back.s, rng.s, sizeof rng.s);
  for (int i = 0; i < 10; i++) assert_true(nb_rng_next(&back) == nb_rng_next(&rng));
  nb_kv_free(got);

  /* readable as plain safetensors too */
  nb_safetensors *f;
  TU_OK(nb_safetensors_open(path, &f));
  assert_int_equal(nb_safetensors_count(f), N_MODEL);
  assert_string_equal(nb_kv_get(nb_safetensors_metadata(f), "step"), "1875");
  nb_safetensors_close(f);

  /* meta_out is optional */
  fill(b, 99);
  TU_OK(nb_checkpoint_load(path, b, 0, NULL));
  assert_same_state(a, b);

  /* a state missing a variable: error, state untouched, no map */
  nb_state *c = make_state(be, model, N_MODEL - 1);
  float m0[12], m1[12];
  TU_OK(nb_state_read(c, "fc.w", m0, sizeof m0));
  got = (nb_kv *)1;
  assert_int_not_equal(nb_checkpoint_load(path, c, 0, &got), NB_OK);
  assert_null(got);
  assert_true(strstr(nb_last_error(), "'emb.w'") != NULL);
  TU_OK(nb_state_read(c, "fc.w", m1, sizeof m1));
  assert_memory_equal(m0, m1, sizeof m0);
  TU_OK(nb_checkpoint_load(path, c, NB_SAFETENSORS_ALLOW_EXTRA, NULL));
  TU_OK(nb_state_read(c, "fc.w", m1, sizeof m1));
  TU_OK(nb_state_read(a, "fc.w", m0, sizeof m0));
  assert_memory_equal(m0, m1, sizeof m0);

  nb_state_free(c);
  nb_kv_free(meta);
  nb_state_free(a);
  nb_state_free(b);
  nb_backend_free(be);
}

static void test_not_a_checkpoint(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *a = make_state(be, model, N_MODEL);
  const char *plain = tmp("weights.safetensors");
  TU_OK(nb_safetensors_save(plain, a, NULL, NULL));
  assert_int_equal(nb_checkpoint_load(plain, a, 0, NULL), NB_ERR_FORMAT);
  assert_true(strstr(nb_last_error(), "not a nabla checkpoint") != NULL);
  assert_true(strstr(nb_last_error(), plain) != NULL);

  nb_kv *m;
  TU_OK(nb_kv_new(&m));
  TU_OK(nb_kv_set(m, "format", "mine"));
  assert_int_equal(nb_checkpoint_save(tmp("x"), a, m), NB_ERR_INVALID_ARG);
  assert_int_equal(access(tmp("x"), F_OK), -1);
  /* a newer format version is refused, not misread */
  nb_kv_free(m);
  TU_OK(nb_kv_new(&m));
  TU_OK(nb_kv_set(m, NB_CKPT_FORMAT, NB_CKPT_FORMAT_NAME));
  TU_OK(nb_kv_set(m, NB_CKPT_VERSION, "2"));
  TU_OK(nb_safetensors_save(plain, a, NULL, m));
  assert_int_equal(nb_checkpoint_load(plain, a, 0, NULL), NB_ERR_UNSUPPORTED);
  assert_true(strstr(nb_last_error(), "format_version '2'") != NULL);
  nb_kv_free(m);
  nb_state_free(a);
  nb_backend_free(be);
}

/* Saves `a` over an existing checkpoint holding `old`'s values under a
 * failure; afterwards the file must still load as `old`. */
static void assert_old_intact(nb_backend *be, const char *path, const nb_state *old) {
  nb_state *chk = make_state(be, model, N_MODEL);
  TU_OK(nb_checkpoint_load(path, chk, 0, NULL));
  assert_same_state(old, chk);
  nb_state_free(chk);
}

static void test_atomic_failures(void **s) {
  (void)s;
  nb_backend *be;
  TU_OK(nb_backend_new("cpu", &be));
  nb_state *v1 = make_state(be, model, N_MODEL), *v2 = make_state(be, model, N_MODEL);
  fill(v1, 1);
  fill(v2, 2);
  const char *dir = tmp("run");
  char path[256];
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  TU_OK(nb_mkdirs(dir));
  TU_OK(nb_checkpoint_save(path, v1, NULL));

  /* 1. the write fails mid-file (file-size limit, like a full disk) */
  struct rlimit old_lim, lim;
  getrlimit(RLIMIT_FSIZE, &old_lim);
  lim = old_lim;
  lim.rlim_cur = 100; /* smaller than the header alone */
  void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  nb_status st = nb_checkpoint_save(path, v2, NULL);
  setrlimit(RLIMIT_FSIZE, &old_lim);
  signal(SIGXFSZ, old_sig);
  assert_int_equal(st, NB_ERR_IO);
  assert_true(strstr(nb_last_error(), path) != NULL);
  assert_true(strstr(nb_last_error(), "target unchanged") != NULL);
  assert_int_equal(count_others(dir, "last.safetensors"), 0);
  assert_old_intact(be, path, v1);

  /* 2. the rename fails: the target name is a directory */
  char blocked[256];
  snprintf(blocked, sizeof blocked, "%s/blocked", dir);
  assert_int_equal(mkdir(blocked, 0755), 0);
  assert_int_equal(nb_checkpoint_save(blocked, v2, NULL), NB_ERR_IO);
  assert_true(strstr(nb_last_error(), "cannot rename") != NULL);
  struct stat sb;
  assert_int_equal(stat(blocked, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  assert_int_equal(rmdir(blocked), 0); /* still an empty directory */
  assert_int_equal(count_others(dir, "last.safetensors"), 0);

  /* 3. the directory does not exist */
  char missing[256];
  snprintf(missing, sizeof missing, "%s/nope/ckpt.safetensors", dir);
  assert_int_equal(nb_checkpoint_save(missing, v2, NULL), NB_ERR_IO);
  assert_true(strstr(nb_last_error(), missing) != NULL);

  /* 4. a read-only directory (root ignores permissions: skipped there) */
  if (geteuid() != 0) {
    assert_int_equal(chmod(dir, 0555), 0);
    assert_int_equal(nb_checkpoint_save(path, v2, NULL), NB_ERR_IO);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(count_others(dir, "last.safetensors"), 0);
    assert_old_intact(be, path, v1);
  } else {
    print_message("running as root: read-only directory case skipped\n");
  }

  /* and a save that works replaces the file */
  TU_OK(nb_checkpoint_save(path, v2, NULL));
  assert_int_equal(count_others(dir, "last.safetensors"), 0);
  assert_old_intact(be, path, v2);
  nb_state_free(v1);
  nb_state_free(v2);
  nb_backend_free(be);
}

static void test_atomic_file_api(void **s) {
  (void)s;
  const char *path = tmp("plain.txt");
  nb_atomic_file *f;
  TU_OK(nb_atomic_open(path, &f));
  TU_OK(nb_atomic_write(f, "hello ", 6));
  fprintf(nb_atomic_stream(f), "world %d\n", 42);
  assert_int_equal(access(path, F_OK), -1); /* nothing visible before commit */
  TU_OK(nb_atomic_commit(f));
  char buf[64] = {0};
  FILE *fp = fopen(path, "rb");
  assert_int_equal(fread(buf, 1, sizeof buf - 1, fp), 15);
  fclose(fp);
  assert_string_equal(buf, "hello world 42\n");
  /* abort leaves the committed file alone and removes the temp file */
  TU_OK(nb_atomic_open(path, &f));
  TU_OK(nb_atomic_write(f, "junk", 4));
  nb_atomic_abort(f);
  fp = fopen(path, "rb");
  memset(buf, 0, sizeof buf);
  assert_int_equal(fread(buf, 1, sizeof buf - 1, fp), 15);
  fclose(fp);
  assert_string_equal(buf, "hello world 42\n");
  unlink(path);
  /* nb_mkdirs: nested, existing, and a file in the way */
  char deep[256];
  snprintf(deep, sizeof deep, "%s/a/b//c/", tmpdir);
  TU_OK(nb_mkdirs(deep));
  TU_OK(nb_mkdirs(deep));
  struct stat sb;
  assert_int_equal(stat(deep, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  fp = fopen(tmp("file"), "wb");
  fclose(fp);
  snprintf(deep, sizeof deep, "%s/file/sub", tmpdir);
  assert_int_equal(nb_mkdirs(deep), NB_ERR_IO);
  assert_true(strstr(nb_last_error(), "not a directory") != NULL);
}

static void test_kv(void **s) {
  (void)s;
  nb_kv *kv;
  TU_OK(nb_kv_new(&kv));
  assert_int_equal(nb_kv_count(kv), 0);
  assert_null(nb_kv_get(kv, "a"));
  for (int i = 0; i < 20; i++) { /* past the initial capacity */
    char k[8], v[8];
    snprintf(k, sizeof k, "k%d", i);
    snprintf(v, sizeof v, "v%d", i);
    TU_OK(nb_kv_set(kv, k, v));
  }
  TU_OK(nb_kv_set(kv, "k3", "replaced"));
  assert_int_equal(nb_kv_count(kv), 20);
  const char *k, *v;
  TU_OK(nb_kv_entry(kv, 3, &k, &v));
  assert_string_equal(k, "k3");
  assert_string_equal(v, "replaced");
  assert_string_equal(nb_kv_get(kv, "k19"), "v19");
  assert_int_equal(nb_kv_entry(kv, 20, &k, &v), NB_ERR_INVALID_ARG);

  int64_t x;
  TU_OK(nb_kv_set_i64(kv, "min", INT64_MIN));
  TU_OK(nb_kv_get_i64(kv, "min", &x));
  assert_true(x == INT64_MIN);
  assert_int_equal(nb_kv_get_i64(kv, "k0", &x), NB_ERR_FORMAT);
  assert_true(strstr(nb_last_error(), "'k0'") != NULL);
  assert_int_equal(nb_kv_get_i64(kv, "absent", &x), NB_ERR_FORMAT);
  assert_true(strstr(nb_last_error(), "'absent' is missing") != NULL);
  TU_OK(nb_kv_set(kv, "big", "9223372036854775808"));
  assert_int_equal(nb_kv_get_i64(kv, "big", &x), NB_ERR_FORMAT);
  TU_OK(nb_kv_set(kv, "trail", "12 "));
  assert_int_equal(nb_kv_get_i64(kv, "trail", &x), NB_ERR_FORMAT);

  nb_rng r = {{0x0123456789abcdefull, 0, UINT64_MAX, 42}}, back;
  TU_OK(nb_kv_set_rng(kv, "rng", &r));
  assert_string_equal(nb_kv_get(kv, "rng"),
                      "0123456789abcdef,0000000000000000,ffffffffffffffff,000000000000002a");
  TU_OK(nb_kv_get_rng(kv, "rng", &back));
  assert_memory_equal(back.s, r.s, sizeof r.s);
  TU_OK(nb_kv_set(kv, "bad", "0123456789abcdef,0000000000000000,ffffffffffffffff"));
  assert_int_equal(nb_kv_get_rng(kv, "bad", &back), NB_ERR_FORMAT);
  TU_OK(
      nb_kv_set(kv, "bad", "0123456789abcdeg,0000000000000000,ffffffffffffffff,000000000000002a"));
  assert_int_equal(nb_kv_get_rng(kv, "bad", &back), NB_ERR_FORMAT);
  assert_memory_equal(back.s, r.s, sizeof r.s); /* untouched on error */
  nb_kv_free(kv);
  nb_kv_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_not_a_checkpoint),
      cmocka_unit_test(test_atomic_failures),
      cmocka_unit_test(test_atomic_file_api),
      cmocka_unit_test(test_kv),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
