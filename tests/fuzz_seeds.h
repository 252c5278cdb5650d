/* Seed inputs for the fuzz targets of tests/fuzz_io.h, fuzz_data.h and
 * fuzz_model.h: small valid files, most of them written by the library
 * itself (safetensors, checkpoints, LoRA adapters, BPE and character
 * vocabularies, gzipped IDX), the rest spelled out here. Used by the ctest
 * fuzzer (tests/test_fuzz_more.c) and, through NB_FUZZ_SEEDS, by the
 * libFuzzer targets (tests/fuzz/libfuzzer_files.c) to fill a corpus. */
#ifndef NB_FUZZ_SEEDS_H
#define NB_FUZZ_SEEDS_H

#include <zlib.h>

#include "fuzz_data.h"
#include "fuzz_io.h"
#include "fuzz_model.h"

typedef void (*fz_seed_sink)(void *ctx, const char *name, const void *data, size_t n);

/* Hands the file at path to sink; 0 if it cannot be read. */
static int fz_seed_file(fz_seed_sink sink, void *ctx, const char *name, const char *path) {
  size_t n;
  uint8_t *d = fz_tmp_read(path, &n);
  if (!d) return 0;
  sink(ctx, name, d, n);
  free(d);
  return 1;
}

static int fz_seed_text(fz_seed_sink sink, void *ctx, const char *name, const char *text) {
  sink(ctx, name, text, strlen(text));
  return 1;
}

/* ---- model files ------------------------------------------------------------------ */

static int fz_seeds_model(fz_seed_sink sink, void *ctx) {
  /* small enough to compile and run (FZ_MODEL_MAX_NUMEL); the shipped
   * model files in models/ add real ones */
  fz_seed_text(sink, ctx, "resnet.cfg",
               "[net]\ninput = 3, 8, 8\nclasses = 4\ninit = kaiming\n"
               "[train]\noptimizer = sgd\nmomentum = 0.9\nnesterov = yes\nschedule = step\n"
               "step_size = 2\ngamma = 0.5\nepochs = 3\nbatch = 8\nmean = 0.5, 0.4, 0.3\n"
               "std = 0.2, 0.2, 0.2\naugment = crop2, flip\n"
               "[conv2d stem]\nout = 4\nkernel = 3\npadding = 1\nbias = no\n"
               "[batchnorm bn]\nactivation = relu\n"
               "[residual block1]\nprojection = conv_bn\nactivation = relu\n"
               "[conv2d c1]\nout = 8\nkernel = 3\nstride = 2\npadding = 1\n"
               "[batchnorm]\n[end]\n"
               "[residual block2]\nprojection = pad\n[conv2d c2]\nout = 8\nkernel = 3, 1\n"
               "padding = 1, 0\ngroups = 2\n[end]\n"
               "[maxpool2d]\nkernel = 2\nceil_mode = yes\n[avgpool2d]\nkernel = 1\n"
               "[global_avgpool]\n[flatten]\n[dropout]\np = 0.2\n"
               "[linear head]\nout = 4\nactivation = leaky_relu\nslope = 0.2\n");
  fz_seed_text(sink, ctx, "mlp.cfg",
               "[net]\nname = mlp\ninput = 6\nclasses = 3\n"
               "[train]\noptimizer = adamw\nlr = 3e-3\nweight_decay = 0.01\nschedule = onecycle\n"
               "pct_start = 0.25\nlabel_smoothing = 0.1\nclip_grad_norm = 1\nprecision = bf16\n"
               "[linear fc1]\nout = 8\nactivation = gelu\n[layernorm ln]\neps = 1e-6\n"
               "[activation]\ntype = silu\n[linear fc2]\nout = 3\nbias = no\n");
  fz_seed_text(sink, ctx, "gpt.cfg",
               "[net]\ninput = 8\ninput_dtype = i32\nclasses = vocab\ninit = normal_002\n"
               "[train]\noptimizer = adamw\nbetas = 0.9, 0.95\nweight_decay = 0.1\n"
               "decay_min_dims = 2\nschedule = warmup_cosine\nwarmup = 2\nmin_lr = 1e-4\n"
               "steps = 4\neval_every = 2\neval_batches = 1\n"
               "[embedding wte]\nvocab = vocab\ndim = 8\n[positional wpe]\n"
               "[dropout drop]\np = 0.1\n[transformer h]\nrepeat = 2\nheads = 2\nmlp = 2\n"
               "dropout = 0.1\n[layernorm ln_f]\n[linear lm_head]\ntie = wte\n");
  return 3;
}

/* ---- safetensors, checkpoints, LoRA ---------------------------------------------------- */

static int fz_seeds_safetensors(fz_seed_sink sink, void *ctx) {
  fz_io_fixture *fx = fz_io();
  const char *p = fz_tmp_path(6, "seed.safetensors");
  nb_kv *meta = NULL;
  int n = 0;
  if (!fx || nb_kv_new(&meta) || nb_kv_set(meta, "note", "a seed") ||
      nb_kv_set(meta, "format", "pt"))
    goto done;
  if (!nb_safetensors_save(p, fx->plain, NULL, meta)) n += fz_seed_file(sink, ctx, "all.st", p);
  if (!nb_safetensors_save(p, fx->plain, "w", NULL)) n += fz_seed_file(sink, ctx, "w.st", p);
  if (!nb_safetensors_save(p, fx->lora, NULL, NULL)) n += fz_seed_file(sink, ctx, "lora.st", p);
done:
  nb_kv_free(meta);
  return n;
}

static int fz_seeds_checkpoint(fz_seed_sink sink, void *ctx) {
  fz_io_fixture *fx = fz_io();
  const char *p = fz_tmp_path(6, "seed.ckpt");
  nb_kv *meta = NULL;
  nb_rng rng;
  nb_rng_seed(&rng, 42);
  int n = 0;
  if (fx && !nb_kv_new(&meta) && !nb_kv_set_i64(meta, NB_CKPT_STEP, 120) &&
      !nb_kv_set_i64(meta, NB_CKPT_EPOCH, 2) && !nb_kv_set_rng(meta, NB_CKPT_RNG, &rng) &&
      !nb_kv_set(meta, NB_CKPT_MODEL, "models/mlp.cfg") && !nb_checkpoint_save(p, fx->plain, meta))
    n = fz_seed_file(sink, ctx, "step120.ckpt", p);
  nb_kv_free(meta);
  return n;
}

static int fz_seeds_lora(fz_seed_sink sink, void *ctx) {
  fz_io_fixture *fx = fz_io();
  const char *p = fz_tmp_path(6, "seed.lora.safetensors");
  return fx && !nb_lora_save(p, fx->lora, &fx->cfg) ? fz_seed_file(sink, ctx, "adapters.st", p) : 0;
}

/* ---- datasets ------------------------------------------------------------------------- */

static int fz_seeds_idx(fz_seed_sink sink, void *ctx) {
  /* type code, rank, dims (big-endian u32) and data, one of each element type */
  static const uint8_t i16[] = {0, 0, 0x0B, 1, 0, 0, 0, 2, 0x80, 0x01, 0x7f, 0xff};
  static const uint8_t i8[] = {0, 0, 0x09, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x7f};
  static const uint8_t i32[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0x80, 0, 0, 0, 0, 0, 0, 7};
  static const uint8_t f32[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0x80, 0, 0};
  static const uint8_t f64[] = {0, 0, 0x0E, 1, 0, 0, 0, 1, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0};
  sink(ctx, "images.idx3", fz_idx_images, sizeof fz_idx_images);
  sink(ctx, "labels.idx1", fz_idx_labels, sizeof fz_idx_labels);
  sink(ctx, "i16.idx", i16, sizeof i16);
  sink(ctx, "i8.idx", i8, sizeof i8);
  sink(ctx, "i32.idx", i32, sizeof i32);
  sink(ctx, "f32.idx", f32, sizeof f32);
  sink(ctx, "f64.idx", f64, sizeof f64);
  int n = 7;
  const char *p = fz_tmp_path(6, "seed.idx.gz");
  gzFile gz = p ? gzopen(p, "wb") : NULL;
  if (gz) {
    int ok = gzwrite(gz, fz_idx_images, sizeof fz_idx_images) == (int)sizeof fz_idx_images;
    if (gzclose(gz) == Z_OK && ok) n += fz_seed_file(sink, ctx, "images.idx3.gz", p);
  }
  return n;
}

static int fz_seeds_cifar(fz_seed_sink sink, void *ctx) {
  static const char names[] = "plane\ncar\nbird\ncat\ndeer\n\ndog\nfrog\nhorse\nship\ntruck\n";
  size_t nm = sizeof names - 1, rec = 3073;
  uint8_t *b = calloc(2 + nm + 2 * rec, 1);
  if (!b) return 0;
  for (size_t i = 0; i < 2 * rec; i++) b[2 + nm + i] = (uint8_t)(i * 7);
  b[2 + nm] = 3;
  b[2 + nm + rec] = 9;
  sink(ctx, "one_record.bin", b + nm, 2 + rec); /* a zero length, then the record */
  b[0] = (uint8_t)nm;
  b[1] = 0;
  memcpy(b + 2, names, nm);
  sink(ctx, "meta_two_records.bin", b, 2 + nm + 2 * rec);
  free(b);
  return 2;
}

static int fz_seeds_csv(fz_seed_sink sink, void *ctx) {
  fz_seed_text(sink, ctx, "ints.csv", "a,b,label\n1,2,0\n3.5,-1e3,1\n 0x10 , .5 ,2\n");
  fz_seed_text(sink, ctx, "names.csv",
               "\xEF\xBB\xBFx,\"label\",y\r\n1,cat,2\r\n\r\n\"2\",\"dog\",3\r\n4,\"bi\"\"rd\",5");
  fz_seed_text(sink, ctx, "classes.csv", "label,f1,f2\ncat,1,2\ndog,3,4\nbird,5,6\ncat,7,8\n");
  return 3;
}

/* ---- tokenizers ------------------------------------------------------------------------ */

static int fz_seeds_bpe(fz_seed_sink sink, void *ctx) {
  static const char text[] = "the theme of the thesis: then the other three thought thrice. "
                             "aaaa aaaa bbbb 1234 12345 \xc3\xa9t\xc3\xa9\n\n";
  const char *p = fz_tmp_path(6, "seed.bpe");
  int n = 0;
  for (int k = 0; k < 2; k++) {
    nb_bpe *t = NULL;
    if (!nb_bpe_train(text, sizeof text - 1, k ? 256 : 300, &t) &&
        (k || !nb_bpe_add_special(t, "<|endoftext|>", NULL)) &&
        (k || !nb_bpe_add_special(t, "<pad>", NULL)) && !nb_bpe_save(t, p))
      n += fz_seed_file(sink, ctx, k ? "bytes.bpe" : "merges.bpe", p);
    nb_bpe_free(t);
  }
  return n;
}

static int fz_seeds_char_vocab(fz_seed_sink sink, void *ctx) {
  const char *p = fz_tmp_path(6, "seed.vocab");
  char all[256];
  for (int i = 0; i < 256; i++) all[i] = (char)i;
  int n = 0;
  for (int k = 0; k < 2; k++) {
    nb_char_vocab v;
    if (!nb_char_vocab_build(k ? all : "hello, world\n", k ? 256 : 13, &v) &&
        !nb_char_vocab_save(&v, p))
      n += fz_seed_file(sink, ctx, k ? "all.vocab" : "hello.vocab", p);
  }
  return n;
}

#endif
