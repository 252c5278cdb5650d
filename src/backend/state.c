/* Persistent named variables (parameters, optimizer moments, running
 * statistics) held on a backend and shared by the plans compiled for it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"

nb_status nb_state_new(nb_backend *be, nb_state **out) {
  if (!be || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_state_new: NULL argument");
  *out = calloc(1, sizeof **out);
  if (!*out) return nb_error(NB_ERR_OOM, "nb_state_new: out of memory");
  (*out)->be = be;
  (*out)->dev[0] = be;
  (*out)->n_dev = 1;
  return NB_OK;
}

void nb_state_free(nb_state *st) {
  if (!st) return;
  for (int i = 0; i < st->n; i++) {
    st->vars[i].be->vt->free(st->vars[i].be, st->vars[i].data);
    free(st->vars[i].name);
  }
  free(st->vars);
  free(st->slots);
  for (int i = 0; i < st->n_dev; i++)
    if (st->owned[i]) nb_backend_free(st->dev[i]);
  free(st);
}

int nb_state_has_device(const nb_state *st, const nb_backend *be) {
  for (int i = 0; st && i < st->n_dev; i++)
    if (st->dev[i] == be) return 1;
  return 0;
}

static nb_backend *device_named(const nb_state *st, const char *name) {
  for (int i = 0; i < st->n_dev; i++)
    if (!strcmp(st->dev[i]->name, name)) return st->dev[i];
  return NULL;
}

nb_status nb_state_add_device(nb_state *st, nb_backend *be) {
  if (!st || !be) return nb_error(NB_ERR_INVALID_ARG, "nb_state_add_device: NULL argument");
  nb_backend *have = device_named(st, be->name);
  if (have == be) return NB_OK;
  if (have)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_state_add_device: the state already has a backend for %s (one backend "
                    "per device)",
                    be->name);
  if (st->n_dev == NB_STATE_MAX_DEVICES)
    return nb_error(NB_ERR_UNSUPPORTED, "nb_state_add_device: at most %d devices per state",
                    NB_STATE_MAX_DEVICES);
  st->dev[st->n_dev++] = be;
  return NB_OK;
}

nb_status nb_state_device(nb_state *st, const char *device, nb_backend **out) {
  if (!st || !device || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_state_device: NULL argument");
  *out = NULL;
  char canon[NB_DEVICE_NAME_MAX];
  nb_status s = nb_device_canonical(device, canon, sizeof canon);
  if (s) return s;
  *out = device_named(st, canon);
  if (*out) return NB_OK;
  if (st->n_dev == NB_STATE_MAX_DEVICES)
    return nb_error(NB_ERR_UNSUPPORTED, "nb_state_device: at most %d devices per state",
                    NB_STATE_MAX_DEVICES);
  nb_backend *be = NULL;
  s = nb_backend_new(canon, &be);
  if (s) return s;
  st->owned[st->n_dev] = 1;
  st->dev[st->n_dev++] = be;
  *out = be;
  return NB_OK;
}

const char *nb_state_entry_device(const nb_state *st, int i) {
  if (!st || i < 0 || i >= st->n) return "";
  return st->vars[i].be->name;
}

int nb_state_count(const nb_state *st) { return st ? st->n : 0; }

nb_status nb_state_entry(const nb_state *st, int i, const char **name, nb_dtype *dt, int *ndim,
                         const int64_t **shape) {
  if (!st || i < 0 || i >= st->n)
    return nb_error(NB_ERR_INVALID_ARG, "nb_state_entry: index %d out of range", i);
  const nb_state_var *v = &st->vars[i];
  if (name) *name = v->name;
  if (dt) *dt = v->dtype;
  if (ndim) *ndim = v->ndim;
  if (shape) *shape = v->shape;
  return NB_OK;
}

/* ---- the name index -------------------------------------------------------------- */

static uint64_t name_hash(const char *s) { /* FNV-1a */
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* The slot holding `name`, or the empty slot where it would go. */
static int slot_of(const nb_state *st, const char *name) {
  size_t mask = (size_t)st->n_slots - 1, i = (size_t)name_hash(name) & mask;
  while (st->slots[i] >= 0 && strcmp(st->vars[st->slots[i]].name, name)) i = (i + 1) & mask;
  return (int)i;
}

/* Room in the index for one more variable (rebuilt twice as large). */
static nb_status index_reserve(nb_state *st) {
  if (2 * (st->n + 1) <= st->n_slots) return NB_OK;
  int n_slots = st->n_slots ? 2 * st->n_slots : 64;
  int *slots = malloc((size_t)n_slots * sizeof *slots);
  if (!slots) return nb_error(NB_ERR_OOM, "state: out of memory");
  for (int i = 0; i < n_slots; i++) slots[i] = -1;
  free(st->slots);
  st->slots = slots;
  st->n_slots = n_slots;
  for (int i = 0; i < st->n; i++) st->slots[slot_of(st, st->vars[i].name)] = i;
  return NB_OK;
}

nb_state_var *nb_state_find(const nb_state *st, const char *name) {
  if (!st || !name || !st->n_slots) return NULL;
  int k = st->slots[slot_of(st, name)];
  return k >= 0 ? &st->vars[k] : NULL;
}

static nb_status lookup(const nb_state *st, const char *name, size_t bytes, nb_state_var **v,
                        const char *fn) {
  if (!st || !name) return nb_error(NB_ERR_INVALID_ARG, "%s: NULL argument", fn);
  *v = nb_state_find(st, name);
  if (!*v) return nb_error(NB_ERR_INVALID_ARG, "%s: no variable named '%s'", fn, name);
  if ((*v)->bytes != bytes)
    return nb_error(NB_ERR_INVALID_ARG, "%s: variable '%s' holds %zu bytes, buffer has %zu", fn,
                    name, (*v)->bytes, bytes);
  return NB_OK;
}

nb_status nb_state_read(const nb_state *st, const char *name, void *dst, size_t bytes) {
  nb_state_var *v = NULL;
  nb_status s = lookup(st, name, bytes, &v, "nb_state_read");
  if (s) return s;
  if (bytes && !dst) return nb_error(NB_ERR_INVALID_ARG, "nb_state_read: dst is NULL");
  return bytes ? v->be->vt->download(v->be, dst, v->data, bytes) : NB_OK;
}

nb_status nb_state_write(nb_state *st, const char *name, const void *src, size_t bytes) {
  nb_state_var *v = NULL;
  nb_status s = lookup(st, name, bytes, &v, "nb_state_write");
  if (s) return s;
  if (bytes && !src) return nb_error(NB_ERR_INVALID_ARG, "nb_state_write: src is NULL");
  return bytes ? v->be->vt->upload(v->be, v->data, src, bytes) : NB_OK;
}

static nb_status fill_init(nb_state_var *v, const nb_init *init) {
  int64_t n = nb_shape_numel(v->ndim, v->shape);
  float *host = calloc((size_t)(n ? n : 1), sizeof *host);
  if (!host) return nb_error(NB_ERR_OOM, "variable '%s': out of memory", v->name);
  nb_rng r;
  nb_rng_seed(&r, init->seed);
  switch (init->kind) {
  case NB_INIT_ZEROS: break;
  case NB_INIT_CONSTANT:
    for (int64_t i = 0; i < n; i++) host[i] = init->a;
    break;
  case NB_INIT_UNIFORM: nb_rng_fill_uniform(&r, host, (size_t)n, init->a, init->b); break;
  case NB_INIT_NORMAL: nb_rng_fill_normal(&r, host, (size_t)n, init->a, init->b); break;
  }
  nb_status s = NB_OK;
  if (v->dtype == NB_F32) {
    s = v->be->vt->upload(v->be, v->data, host, v->bytes);
  } else {
    void *conv = malloc(v->bytes ? v->bytes : 1);
    s = conv ? nb_convert(host, NB_F32, conv, v->dtype, (size_t)n)
             : nb_error(NB_ERR_OOM, "variable '%s': out of memory", v->name);
    if (!s) s = v->be->vt->upload(v->be, v->data, conv, v->bytes);
    free(conv);
  }
  free(host);
  return s;
}

nb_status nb_state_bind(nb_state *st, nb_backend *be, const nb_tensor *var, nb_state_var **out) {
  nb_state_var *v = nb_state_find(st, var->name);
  if (v && v->be != be)
    return nb_error(NB_ERR_INVALID_ARG,
                    "variable '%s' lives on %s in the state but is placed on %s: a variable "
                    "stays on one device (place it the same way in every graph, or use a new "
                    "state)",
                    var->name, v->be->name, be->name);
  if (v) {
    int ok = v->dtype == var->dtype && v->ndim == var->ndim;
    for (int i = 0; ok && i < v->ndim; i++) ok = v->shape[i] == var->shape[i];
    if (!ok) {
      char s0[128], s1[128];
      return nb_error(NB_ERR_SHAPE, "variable '%s' is %s %s in the state but %s %s in the graph",
                      var->name, nb_dtype_name(v->dtype),
                      nb_shape_str(v->ndim, v->shape, s0, sizeof s0), nb_dtype_name(var->dtype),
                      nb_shape_str(var->ndim, var->shape, s1, sizeof s1));
    }
    *out = v;
    return NB_OK;
  }
  nb_status s0 = index_reserve(st);
  if (s0) return s0;
  if (st->n == st->cap) {
    int cap = st->cap ? st->cap * 2 : 16;
    nb_state_var *vars = realloc(st->vars, (size_t)cap * sizeof *vars);
    if (!vars) return nb_error(NB_ERR_OOM, "state: out of memory");
    st->vars = vars;
    st->cap = cap;
  }
  v = &st->vars[st->n];
  memset(v, 0, sizeof *v);
  v->name = malloc(strlen(var->name) + 1);
  if (!v->name) return nb_error(NB_ERR_OOM, "state: out of memory");
  strcpy(v->name, var->name);
  v->dtype = var->dtype;
  v->ndim = var->ndim;
  for (int i = 0; i < var->ndim; i++) v->shape[i] = var->shape[i];
  v->bytes = (size_t)nb_tensor_numel(var) * nb_dtype_size(var->dtype);
  v->be = be;
  nb_status s = be->vt->alloc(be, v->bytes, &v->data);
  if (!s) s = fill_init(v, &var->init);
  if (s) {
    be->vt->free(be, v->data);
    free(v->name);
    return s;
  }
  st->slots[slot_of(st, v->name)] = st->n;
  st->n++;
  *out = v;
  return NB_OK;
}
