/* Training checkpoints: a safetensors file with every state variable and the
 * trainer's resume metadata. Kept as plain safetensors so Python tools (and
 * `nabla` itself) can read a checkpoint without nabla-specific code. */
#include <string.h>

#include "nabla/io.h"
#include "nabla/nn.h"

#define FORMAT_VERSION "1"

/* KV caches (nn.h) hold the last generation's keys, not training state:
 * they are rebuilt by the next prefill, so a checkpoint leaves them out. */
static int not_cache(const char *name, void *ctx) {
  (void)ctx;
  return !nb_nn_is_kv_cache(name);
}

nb_status nb_checkpoint_save(const char *path, const nb_state *st, const nb_kv *meta) {
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_checkpoint_save: NULL argument");
  if (nb_kv_get(meta, NB_CKPT_FORMAT) || nb_kv_get(meta, NB_CKPT_VERSION))
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_checkpoint_save %s: metadata keys '%s' and '%s' are reserved", path,
                    NB_CKPT_FORMAT, NB_CKPT_VERSION);
  nb_kv *all;
  nb_status s = nb_kv_new(&all);
  if (s) return s;
  /* the format keys first, so `head -c` of a checkpoint shows what it is */
  s = nb_kv_set(all, NB_CKPT_FORMAT, NB_CKPT_FORMAT_NAME);
  if (!s) s = nb_kv_set(all, NB_CKPT_VERSION, FORMAT_VERSION);
  for (int i = 0; i < nb_kv_count(meta) && !s; i++) {
    const char *k, *v;
    s = nb_kv_entry(meta, i, &k, &v);
    if (!s) s = nb_kv_set(all, k, v);
  }
  if (!s) s = nb_safetensors_save_if(path, st, not_cache, NULL, all);
  nb_kv_free(all);
  return s;
}

static nb_status copy_meta(const nb_kv *src, nb_kv **out) {
  nb_status s = nb_kv_new(out);
  for (int i = 0; i < nb_kv_count(src) && !s; i++) {
    const char *k, *v;
    s = nb_kv_entry(src, i, &k, &v);
    if (!s) s = nb_kv_set(*out, k, v);
  }
  if (s) {
    nb_kv_free(*out);
    *out = NULL;
  }
  return s;
}

nb_status nb_checkpoint_load(const char *path, nb_state *st, unsigned flags, nb_kv **meta_out) {
  if (meta_out) *meta_out = NULL;
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_checkpoint_load: NULL argument");
  nb_safetensors *f;
  nb_status s = nb_safetensors_open(path, &f);
  if (s) return s;
  const nb_kv *meta = nb_safetensors_metadata(f);
  const char *format = nb_kv_get(meta, NB_CKPT_FORMAT);
  const char *version = nb_kv_get(meta, NB_CKPT_VERSION);
  if (!format || strcmp(format, NB_CKPT_FORMAT_NAME) != 0)
    s = nb_error(NB_ERR_FORMAT,
                 "%s: not a nabla checkpoint (__metadata__ '%s' is %s%s%s, expected '%s'); "
                 "load plain weights with nb_safetensors_load",
                 path, NB_CKPT_FORMAT, format ? "'" : "missing", format ? format : "",
                 format ? "'" : "", NB_CKPT_FORMAT_NAME);
  else if (!version || strcmp(version, FORMAT_VERSION) != 0)
    s = nb_error(NB_ERR_UNSUPPORTED, "%s: checkpoint format_version '%s' (this nabla reads '%s')",
                 path, version ? version : "(missing)", FORMAT_VERSION);
  /* copy the metadata first: once the state is written, nothing may fail */
  nb_kv *copy = NULL;
  if (!s && meta_out) s = copy_meta(meta, &copy);
  if (!s) s = nb_safetensors_load_into(f, st, NULL, flags);
  nb_safetensors_close(f);
  if (s) {
    nb_kv_free(copy);
    return s;
  }
  if (meta_out) *meta_out = copy;
  return NB_OK;
}
