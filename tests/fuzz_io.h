/* Fuzz targets for the readers of src/io beyond ONNX: safetensors files,
 * training checkpoints (safetensors plus kv metadata) and LoRA adapter
 * files. Same contract as tests/fuzz_targets.h: an input is accepted or
 * rejected with a status whose message names the file, never a crash, and
 * whatever is accepted must be self-consistent. Each input is written to a
 * temporary file (tests/fuzz_tmp.h), since these readers take paths.
 *
 * The targets load into small fixed states (fz_io_fixture), which the seeds
 * (tests/fuzz_seeds.h) are saved from, so unmutated seeds load fully. */
#ifndef NB_FUZZ_IO_H
#define NB_FUZZ_IO_H

#include "fuzz_common.h"
#include "fuzz_tmp.h"
#include "nabla/lora.h"

typedef struct fz_io_fixture {
  nb_backend *be;
  /* w f32 [2, 3], b f32 [3], n i64 [2], h f16 [2, 2], bf bf16 [2], u u8 [5], i i32 [1, 1, 1] */
  nb_state *plain;
  /* fc: Linear 3 -> 4 with LoRA (rank 2, targets "fc"); head: Linear 4 -> 2 */
  nb_state *lora;
  nb_lora cfg;
  char base[600]; /* the lora state's weights file, the base of nb_lora_merge_files */
} fz_io_fixture;

static nb_status fz_compile_outputs(nb_graph *g, nb_backend *be, nb_state **st) {
  nb_plan *p = NULL;
  nb_status s = nb_graph_status(g);
  if (!s) s = nb_state_new(be, st);
  if (!s) s = nb_compile(g, be, *st, NULL, &p);
  nb_plan_free(p);
  nb_graph_free(g);
  return s;
}

/* The fixture, built on first use; NULL (with the error set) if it cannot be. */
static fz_io_fixture *fz_io(void) {
  static fz_io_fixture fx;
  static int ready;
  if (ready) return &fx;
  fx.be = fz_cpu();
  if (!fx.be) return NULL;
  nb_graph *g = nb_graph_new();
  static const struct {
    const char *name;
    nb_dtype dt;
    int nd;
    int64_t shape[3];
  } vars[] = {{"w", NB_F32, 2, {2, 3}},   {"b", NB_F32, 1, {3}},   {"n", NB_I64, 1, {2}},
              {"h", NB_F16, 2, {2, 2}},   {"bf", NB_BF16, 1, {2}}, {"u", NB_U8, 1, {5}},
              {"i", NB_I32, 3, {1, 1, 1}}};
  for (size_t k = 0; k < sizeof vars / sizeof *vars; k++) {
    nb_init init = {vars[k].dt == NB_F32 ? NB_INIT_UNIFORM : NB_INIT_CONSTANT, 1.0f, 2.0f, k};
    nb_tensor *v = nb_variable(g, vars[k].name, vars[k].dt, vars[k].nd, vars[k].shape, init);
    if (v) nb_tensor_set_output(v);
  }
  if (fz_compile_outputs(g, fx.be, &fx.plain)) return NULL;

  memset(&fx.cfg, 0, sizeof fx.cfg);
  fx.cfg.rank = 2;
  fx.cfg.alpha = 4.0f;
  snprintf(fx.cfg.targets, sizeof fx.cfg.targets, "fc");
  g = nb_graph_new();
  nb_nn nn = {.g = g, .seed = 3, .lora = &fx.cfg};
  int64_t xs[2] = {1, 3};
  nb_tensor *y = nb_nn_linear(&nn, "fc", nb_input(g, "x", NB_F32, 2, xs), 4, 1);
  y = nb_nn_linear(&nn, "head", y, 2, 1);
  if (y) nb_tensor_set_output(y);
  if (fz_compile_outputs(g, fx.be, &fx.lora)) return NULL;
  /* B starts at zero: give it values so that a merge changes the weights */
  float bv[8] = {0.5f, -1, 0.25f, 2, -0.5f, 1, 0.75f, -2};
  if (nb_state_write(fx.lora, "fc.lora_B", bv, sizeof bv)) return NULL;
  const char *base = fz_tmp_path(7, "lora_base.safetensors");
  if (!base || nb_safetensors_save(base, fx.lora, NULL, NULL)) return NULL;
  snprintf(fx.base, sizeof fx.base, "%s", base);
  ready = 1;
  return &fx;
}

static int fz_host_le(void) {
  uint16_t x = 1;
  uint8_t c;
  memcpy(&c, &x, 1);
  return c == 1;
}

/* A safetensors file: opened, every tensor checked against the bytes of the
 * file and read, the metadata listed, then loaded into the fixture state
 * (extra and missing tensors allowed, so matching ones are written). */
static const char *fz_safetensors(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  fz_io_fixture *fx = fz_io();
  const char *path = fz_tmp_path(0, "fuzz.safetensors");
  if (!fx || !fz_tmp_write(path, data, n)) return "cannot set up the fixture or the temporary file";
  nb_safetensors *f = NULL;
  nb_status st = nb_safetensors_open(path, &f);
  if (st) return fz_check_error(st, path);
  s->parsed++;
  const char *bad = NULL;
  uint64_t next = 0;
  for (int i = 0; !bad && i < nb_safetensors_count(f); i++) {
    const nb_safetensors_info *t = nb_safetensors_tensor(f, i);
    uint64_t bytes = nb_dtype_size(t->dtype);
    int over = t->ndim < 0 || t->ndim > NB_MAX_DIMS;
    for (int d = 0; !over && d < t->ndim; d++)
      over = t->shape[d] < 0 || __builtin_mul_overflow(bytes, (uint64_t)t->shape[d], &bytes);
    if (over || bytes != t->bytes)
      bad = "a tensor's size disagrees with its dtype and shape";
    else if (t->offset < next || t->offset > n || t->bytes > n - t->offset)
      bad = "a tensor's data overlaps another or lies outside the file";
    else if (nb_safetensors_find(f, t->name) != i)
      bad = "nb_safetensors_find does not find a tensor by its name";
    if (bad) break;
    next = t->offset + t->bytes;
    void *buf = malloc(t->bytes ? (size_t)t->bytes : 1);
    if (!buf) {
      bad = "out of memory in the harness";
      break;
    }
    st = nb_safetensors_read(f, i, buf, (size_t)t->bytes);
    if (st)
      bad = fz_check_error(st, path);
    else if (fz_host_le() && t->bytes && memcmp(buf, data + t->offset, (size_t)t->bytes))
      bad = "nb_safetensors_read returned other bytes than the file holds";
    free(buf);
  }
  const nb_kv *meta = nb_safetensors_metadata(f);
  for (int i = 0; !bad && i < nb_kv_count(meta); i++) {
    const char *k, *v;
    if (nb_kv_entry(meta, i, &k, &v) || nb_kv_get(meta, k) != v)
      bad = "a metadata entry cannot be read back by its key";
  }
  nb_safetensors_close(f);
  if (bad) return bad;
  st = nb_safetensors_load(path, fx->plain, NULL,
                           NB_SAFETENSORS_ALLOW_MISSING | NB_SAFETENSORS_ALLOW_EXTRA);
  if (!st) s->built++;
  return st ? fz_check_error(st, path) : NULL;
}

/* A checkpoint: loaded into the fixture state (exact match), then its
 * trainer fields read back as the trainer reads them. */
static const char *fz_checkpoint(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  fz_io_fixture *fx = fz_io();
  const char *path = fz_tmp_path(0, "fuzz.ckpt");
  if (!fx || !fz_tmp_write(path, data, n)) return "cannot set up the fixture or the temporary file";
  nb_kv *meta = NULL;
  nb_status st = nb_checkpoint_load(path, fx->plain, 0, &meta);
  if (st) return meta ? "a failed load returned metadata" : fz_check_error(st, path);
  s->parsed++;
  const char *bad = NULL;
  int64_t step;
  nb_rng rng;
  st = nb_kv_get_i64(meta, NB_CKPT_STEP, &step);
  if (st) bad = fz_check_error(st, NB_CKPT_STEP);
  st = bad ? NB_OK : nb_kv_get_rng(meta, NB_CKPT_RNG, &rng);
  if (st) bad = fz_check_error(st, NB_CKPT_RNG);
  if (!bad) s->built++;
  nb_kv_free(meta);
  return bad;
}

/* A LoRA adapter file: its configuration read (and valid when read), loaded
 * into the fixture's adapted state, and merged with the fixture's base
 * weights into a new file that must open. */
static const char *fz_lora(const uint8_t *data, size_t n, const char *name, fz_stats *s) {
  (void)name;
  s->inputs++;
  fz_io_fixture *fx = fz_io();
  const char *path = fz_tmp_path(0, "fuzz.lora.safetensors");
  const char *out = fz_tmp_path(1, "fuzz.merged.safetensors");
  if (!fx || !fz_tmp_write(path, data, n)) return "cannot set up the fixture or the temporary file";
  nb_lora cfg;
  nb_status st = nb_lora_read_config(path, &cfg);
  if (st) return fz_check_error(st, path);
  s->parsed++;
  if (nb_lora_check(&cfg)) return "nb_lora_read_config accepted an invalid configuration";
  st = nb_lora_load(path, fx->lora);
  if (st) return fz_check_error(st, path);
  s->built++;
  st = nb_lora_merge_files(fx->base, path, out);
  if (st) return fz_check_error(st, NULL);
  nb_safetensors *f = NULL;
  st = nb_safetensors_open(out, &f);
  nb_safetensors_close(f);
  if (st) return "the merged file does not open";
  s->compiled++;
  return NULL;
}

#endif
