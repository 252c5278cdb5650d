/* LoRA adapter files (safetensors with only the adapters and their
 * configuration as metadata) and merging adapters into base weights. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/lora.h"

static int keep_adapter(const char *name, void *ctx) {
  (void)ctx;
  return nb_lora_is_adapter(name);
}

/* The state's variables sorted by name: an adapter file may hold thousands
 * of tensors, and a linear scan of the state for each made loading and
 * merging quadratic in the file (seconds for a 500 KB file). */
typedef struct {
  const char *name;
  int i;
} var_ref;

typedef struct {
  var_ref *v;
  int n;
} var_index;

static int by_ref_name(const void *a, const void *b) {
  return strcmp(((const var_ref *)a)->name, ((const var_ref *)b)->name);
}

static nb_status index_vars(const nb_state *st, var_index *ix) {
  ix->n = nb_state_count(st);
  ix->v = malloc((size_t)(ix->n ? ix->n : 1) * sizeof *ix->v);
  if (!ix->v) return nb_error(NB_ERR_OOM, "lora: out of memory");
  for (int i = 0; i < ix->n; i++) {
    ix->v[i].i = i;
    nb_state_entry(st, i, &ix->v[i].name, NULL, NULL, NULL);
  }
  qsort(ix->v, (size_t)ix->n, sizeof *ix->v, by_ref_name);
  return NB_OK;
}

/* Index of state variable `name`, or -1. */
static int find_var(const var_index *ix, const char *name) {
  var_ref key = {name, 0};
  const var_ref *r = bsearch(&key, ix->v, (size_t)ix->n, sizeof *ix->v, by_ref_name);
  return r ? r->i : -1;
}

nb_status nb_lora_save(const char *path, const nb_state *st, const nb_lora *cfg) {
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_lora_save: path and state needed");
  nb_status rc = nb_lora_check(cfg);
  if (rc) return rc;
  int n = 0;
  for (int i = 0; i < nb_state_count(st); i++) {
    const char *name;
    int nd;
    const int64_t *shape;
    nb_state_entry(st, i, &name, NULL, &nd, &shape);
    if (!nb_lora_is_adapter(name)) continue;
    n++;
    /* A [rank, in], B [out, rank]; r is read only once nd is known to be 2 */
    int64_t r = nd != 2 ? -1 : strstr(name, ".lora_A") ? shape[0] : shape[1];
    if (r != cfg->rank) {
      char s[128];
      return nb_error(NB_ERR_INVALID_ARG,
                      "%s: adapter '%s' has shape %s, not rank %d of the configuration", path, name,
                      nb_shape_str(nd, shape, s, sizeof s), cfg->rank);
    }
  }
  if (!n)
    return nb_error(NB_ERR_INVALID_ARG,
                    "%s: the state holds no LoRA adapters (build and compile the model with LoRA "
                    "first)",
                    path);
  nb_kv *kv = NULL;
  char num[64];
  rc = nb_kv_new(&kv);
  if (!rc) rc = nb_kv_set(kv, "format", NB_LORA_FORMAT_NAME);
  if (!rc) rc = nb_kv_set(kv, "format_version", "1");
  if (!rc) rc = nb_kv_set_i64(kv, "rank", cfg->rank);
  snprintf(num, sizeof num, "%.9g", (double)cfg->alpha);
  if (!rc) rc = nb_kv_set(kv, "alpha", num);
  snprintf(num, sizeof num, "%.9g", (double)cfg->dropout);
  if (!rc) rc = nb_kv_set(kv, "dropout", num);
  if (!rc) rc = nb_kv_set(kv, "targets", cfg->targets);
  if (!rc) rc = nb_safetensors_save_if(path, st, keep_adapter, NULL, kv);
  nb_kv_free(kv);
  return rc;
}

static nb_status meta_float(const char *path, const nb_kv *kv, const char *key, float *out) {
  const char *v = nb_kv_get(kv, key);
  char *end = NULL;
  errno = 0;
  double d = v ? strtod(v, &end) : 0.0;
  if (!v || end == v || *end || errno || !isfinite(d))
    return nb_error(NB_ERR_FORMAT, "%s: LoRA metadata '%s' is %s%s%s, expected a number", path, key,
                    v ? "'" : "missing", v ? v : "", v ? "'" : "");
  *out = (float)d;
  return NB_OK;
}

/* Opens an adapter file and checks its format field and that it holds
 * adapters only: any other tensor would replace a base weight of the same
 * name when the file is loaded or merged. */
static nb_status open_adapters(const char *path, nb_safetensors **f) {
  nb_status rc = nb_safetensors_open(path, f);
  if (rc) return rc;
  const char *fmt = nb_kv_get(nb_safetensors_metadata(*f), "format");
  if (!fmt || strcmp(fmt, NB_LORA_FORMAT_NAME))
    rc = nb_error(NB_ERR_FORMAT,
                  "%s: not a LoRA adapter file (metadata format is %s%s%s, expected '%s')", path,
                  fmt ? "'" : "missing", fmt ? fmt : "", fmt ? "'" : "", NB_LORA_FORMAT_NAME);
  for (int i = 0; !rc && i < nb_safetensors_count(*f); i++) {
    const char *name = nb_safetensors_tensor(*f, i)->name;
    if (!nb_lora_is_adapter(name))
      rc = nb_error(NB_ERR_FORMAT, "%s: tensor '%s' is not a LoRA adapter (.lora_A / .lora_B)",
                    path, name);
  }
  if (rc) {
    nb_safetensors_close(*f);
    *f = NULL;
  }
  return rc;
}

nb_status nb_lora_read_config(const char *path, nb_lora *out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_lora_read_config: NULL argument");
  memset(out, 0, sizeof *out);
  nb_safetensors *f = NULL;
  nb_status rc = open_adapters(path, &f);
  if (rc) return rc;
  const nb_kv *kv = nb_safetensors_metadata(f);
  int64_t rank = 0;
  rc = nb_kv_get_i64(kv, "rank", &rank);
  if (rc) rc = nb_error(rc, "%s: %s", path, nb_last_error());
  if (!rc && (rank < 1 || rank > 1 << 30))
    rc = nb_error(NB_ERR_FORMAT, "%s: LoRA metadata 'rank' is %lld", path, (long long)rank);
  if (!rc) rc = meta_float(path, kv, "alpha", &out->alpha);
  if (!rc) rc = meta_float(path, kv, "dropout", &out->dropout);
  const char *t = nb_kv_get(kv, "targets");
  if (!rc && (!t || strlen(t) >= sizeof out->targets))
    rc = nb_error(NB_ERR_FORMAT, "%s: LoRA metadata 'targets' is %s", path,
                  t ? "too long" : "missing");
  if (!rc) {
    out->rank = (int)rank;
    snprintf(out->targets, sizeof out->targets, "%s", t);
    rc = nb_lora_check(out);
    if (rc) rc = nb_error(NB_ERR_FORMAT, "%s: %s", path, nb_last_error());
  }
  nb_safetensors_close(f);
  return rc;
}

nb_status nb_lora_load(const char *path, nb_state *st) {
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_lora_load: path and state needed");
  nb_safetensors *f = NULL;
  nb_status rc = open_adapters(path, &f);
  if (rc) return rc;
  var_index ix = {NULL, 0};
  rc = index_vars(st, &ix);
  for (int i = 0; !rc && i < nb_safetensors_count(f); i++) {
    const char *name = nb_safetensors_tensor(f, i)->name;
    if (find_var(&ix, name) < 0)
      rc = nb_error(NB_ERR_INVALID_ARG,
                    "%s: adapter '%s' has no variable in the state (was the model built with the "
                    "file's targets?)",
                    path, name);
  }
  int n = 0;
  for (int i = 0; !rc && i < nb_state_count(st); i++) {
    const char *name;
    nb_state_entry(st, i, &name, NULL, NULL, NULL);
    if (!nb_lora_is_adapter(name)) continue;
    n++;
    if (nb_safetensors_find(f, name) < 0)
      rc = nb_error(NB_ERR_INVALID_ARG, "%s: adapter '%s' of the state is missing from the file",
                    path, name);
  }
  if (!rc && !n)
    rc = nb_error(NB_ERR_INVALID_ARG,
                  "%s: the state holds no LoRA adapters (build and compile the model with the "
                  "file's configuration first)",
                  path);
  /* the checks above leave only base variables missing from the file */
  if (!rc) rc = nb_safetensors_load_into(f, st, NULL, NB_SAFETENSORS_ALLOW_MISSING);
  free(ix.v);
  nb_safetensors_close(f);
  return rc;
}

/* One adapter pair and the weight it adapts; merge_compute fills the
 * buffers: the weight and B as they are now (to restore them if a later
 * write fails) and the merged weight. */
typedef struct {
  char layer[256];
  int64_t out, in;
  float *w, *b, *merged;
} merge_pair;

static nb_status var_shape(const nb_state *st, const var_index *ix, const char *name, int64_t *rows,
                           int64_t *cols) {
  int i = find_var(ix, name);
  nb_dtype dt;
  int nd = 0;
  const int64_t *shape = NULL;
  if (i < 0) return nb_error(NB_ERR_INVALID_ARG, "lora merge: no variable '%s' in the state", name);
  nb_state_entry(st, i, NULL, &dt, &nd, &shape);
  if (dt != NB_F32 || nd != 2)
    return nb_error(NB_ERR_INVALID_ARG, "lora merge: '%s' must be a 2-D f32 tensor, found %s %d-D",
                    name, nb_dtype_name(dt), nd);
  *rows = shape[0];
  *cols = shape[1];
  return NB_OK;
}

/* Finds every pair and checks its shapes. */
static nb_status collect_pairs(const nb_state *st, int rank, merge_pair **out, int *n) {
  *out = NULL;
  *n = 0;
  int cap = nb_state_count(st);
  merge_pair *p = calloc((size_t)(cap ? cap : 1), sizeof *p);
  if (!p) return nb_error(NB_ERR_OOM, "lora merge: out of memory");
  var_index ix = {NULL, 0};
  nb_status rc = index_vars(st, &ix);
  for (int i = 0; !rc && i < cap; i++) {
    const char *name;
    nb_state_entry(st, i, &name, NULL, NULL, NULL);
    if (!nb_lora_is_adapter(name)) continue;
    size_t len = strlen(name) - strlen(".lora_A");
    if (len >= sizeof p->layer) {
      rc = nb_error(NB_ERR_INVALID_ARG, "lora merge: name '%s' too long", name);
      break;
    }
    merge_pair *m = &p[*n];
    memcpy(m->layer, name, len);
    m->layer[len] = '\0';
    char an[300], bn[300], wn[300];
    snprintf(an, sizeof an, "%s.lora_A", m->layer);
    snprintf(bn, sizeof bn, "%s.lora_B", m->layer);
    snprintf(wn, sizeof wn, "%s.weight", m->layer);
    if (strcmp(name, an)) continue; /* each pair once, from its A */
    int64_t ar = 0, ac = 0, br = 0, bc = 0, wr = 0, wc = 0;
    rc = var_shape(st, &ix, an, &ar, &ac);
    if (!rc) rc = var_shape(st, &ix, bn, &br, &bc);
    if (!rc) rc = var_shape(st, &ix, wn, &wr, &wc);
    if (!rc && (ar != rank || bc != rank || br != wr || ac != wc))
      rc = nb_error(NB_ERR_SHAPE,
                    "lora merge: %s: lora_A [%lld, %lld], lora_B [%lld, %lld] and weight [%lld, "
                    "%lld] do not fit rank %d",
                    m->layer, (long long)ar, (long long)ac, (long long)br, (long long)bc,
                    (long long)wr, (long long)wc, rank);
    m->out = wr;
    m->in = wc;
    if (!rc) (*n)++;
  }
  /* a B without its A would be left out silently */
  for (int i = 0; !rc && i < cap; i++) {
    const char *name;
    nb_state_entry(st, i, &name, NULL, NULL, NULL);
    if (!nb_lora_is_adapter(name) || !strstr(name, ".lora_B")) continue;
    char an[300];
    snprintf(an, sizeof an, "%.*s.lora_A", (int)(strlen(name) - strlen(".lora_B")), name);
    if (find_var(&ix, an) < 0)
      rc = nb_error(NB_ERR_INVALID_ARG, "lora merge: '%s' has no '%s'", name, an);
  }
  free(ix.v);
  if (!rc && !*n) rc = nb_error(NB_ERR_INVALID_ARG, "lora merge: the state holds no LoRA adapters");
  if (rc) {
    free(p);
    *n = 0;
    return rc;
  }
  *out = p;
  return NB_OK;
}

static void pair_names(const merge_pair *m, char *an, char *bn, char *wn, size_t cap) {
  snprintf(an, cap, "%s.lora_A", m->layer);
  snprintf(bn, cap, "%s.lora_B", m->layer);
  snprintf(wn, cap, "%s.weight", m->layer);
}

/* Reads one pair and computes its merged weight into m->merged, writing
 * nothing. An update that turns a finite weight into inf or NaN (adapters
 * that overflow f32) is an error rather than a silently broken layer. */
static nb_status merge_compute(const nb_state *st, merge_pair *m, int rank, double scale) {
  int64_t out = m->out, in = m->in, r = rank;
  size_t wb = (size_t)(out * in) * sizeof(float);
  char an[300], bn[300], wn[300];
  pair_names(m, an, bn, wn, sizeof an);
  m->w = malloc(wb);
  m->merged = malloc(wb);
  m->b = malloc((size_t)(out * r) * sizeof *m->b);
  float *a = malloc((size_t)(r * in) * sizeof *a);
  double *row = malloc((size_t)in * sizeof *row);
  nb_status rc = m->w && m->merged && m->b && a && row
                     ? NB_OK
                     : nb_error(NB_ERR_OOM, "lora merge: %s: out of memory", m->layer);
  if (!rc) rc = nb_state_read(st, wn, m->w, wb);
  if (!rc) rc = nb_state_read(st, an, a, (size_t)(r * in) * sizeof *a);
  if (!rc) rc = nb_state_read(st, bn, m->b, (size_t)(out * r) * sizeof *m->b);
  for (int64_t o = 0; !rc && o < out; o++) {
    for (int64_t i = 0; i < in; i++) row[i] = 0.0;
    for (int64_t k = 0; k < r; k++) {
      double bk = m->b[o * r + k];
      for (int64_t i = 0; i < in; i++) row[i] += bk * a[k * in + i];
    }
    for (int64_t i = 0; i < in && !rc; i++) {
      float w = m->w[o * in + i], v = (float)(w + scale * row[i]);
      if (!isfinite(v) && isfinite(w))
        rc = nb_error(NB_ERR_INVALID_ARG,
                      "lora merge: %s: weight [%lld, %lld] becomes %g (%g + %g x B A): the "
                      "adapters overflow f32; nothing was merged",
                      m->layer, (long long)o, (long long)i, (double)v, (double)w, scale);
      m->merged[o * in + i] = v;
    }
  }
  free(a);
  free(row);
  return rc;
}

/* Writes one pair's weight and B: the merged weight and zeros when
 * `merged`, else the copies merge_compute saved (to restore them). */
static nb_status merge_write(nb_state *st, const merge_pair *m, int rank, int merged,
                             const float *zeros) {
  char an[300], bn[300], wn[300];
  pair_names(m, an, bn, wn, sizeof an);
  size_t wb = (size_t)(m->out * m->in) * sizeof(float),
         bb = (size_t)(m->out * rank) * sizeof(float);
  nb_status rc = nb_state_write(st, wn, merged ? m->merged : m->w, wb);
  if (!rc) rc = nb_state_write(st, bn, merged ? zeros : m->b, bb);
  return rc;
}

/* All or nothing: every merged weight is computed from the state as it is
 * before the first write, so a failure while computing (out of memory, an
 * update that overflows) leaves the state untouched; a write that fails
 * (a device error) is followed by writing back the saved weights and Bs of
 * every pair written so far. */
nb_status nb_lora_merge(nb_state *st, const nb_lora *cfg) {
  if (!st) return nb_error(NB_ERR_INVALID_ARG, "nb_lora_merge: state needed");
  nb_status rc = nb_lora_check(cfg);
  if (rc) return rc;
  merge_pair *p = NULL;
  int n = 0;
  rc = collect_pairs(st, cfg->rank, &p, &n);
  double scale = (double)cfg->alpha / (double)cfg->rank;
  int64_t most = 1;
  for (int i = 0; !rc && i < n; i++) {
    rc = merge_compute(st, &p[i], cfg->rank, scale);
    if (p[i].out * cfg->rank > most) most = p[i].out * cfg->rank;
  }
  float *zeros = rc ? NULL : calloc((size_t)most, sizeof *zeros);
  if (!rc && !zeros) rc = nb_error(NB_ERR_OOM, "lora merge: out of memory");
  int written = 0;
  for (; !rc && written < n; written++) rc = merge_write(st, &p[written], cfg->rank, 1, zeros);
  if (rc && written) {
    /* p[written - 1] failed part way or whole: restore it too */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nb_last_error());
    nb_status back = NB_OK;
    for (int i = 0; i < written && !back; i++) back = merge_write(st, &p[i], cfg->rank, 0, NULL);
    rc = nb_error(rc, "%s (%s)", msg,
                  back ? "restoring the layers written before it failed too: the state is "
                         "partly merged"
                       : "the layers written before it were restored");
  }
  for (int i = 0; i < n; i++) {
    free(p[i].w);
    free(p[i].b);
    free(p[i].merged);
  }
  free(zeros);
  free(p);
  return rc;
}

/* Creates a variable in `st` for every tensor of f (compiling a graph of
 * variables is what creates them), adapters left out when skip_adapters,
 * and fills it from the file. */
static nb_status state_from_file(nb_safetensors *f, nb_backend *be, nb_state *st,
                                 int skip_adapters) {
  nb_graph *g = nb_graph_new();
  if (!g) return nb_error(NB_ERR_OOM, "lora merge: out of memory");
  nb_init zeros = {NB_INIT_ZEROS, 0.0f, 0.0f, 0};
  for (int i = 0; i < nb_safetensors_count(f); i++) {
    const nb_safetensors_info *t = nb_safetensors_tensor(f, i);
    if (skip_adapters && nb_lora_is_adapter(t->name)) continue;
    nb_tensor *v = nb_variable(g, t->name, t->dtype, t->ndim, t->shape, zeros);
    if (v) nb_tensor_set_output(v);
  }
  nb_plan *p = NULL;
  nb_status rc = nb_graph_status(g);
  if (rc) rc = nb_error(rc, "%s", nb_graph_error(g));
  if (!rc) rc = nb_compile(g, be, st, NULL, &p);
  nb_plan_free(p);
  nb_graph_free(g);
  if (!rc)
    rc = nb_safetensors_load_into(f, st, NULL,
                                  NB_SAFETENSORS_ALLOW_MISSING |
                                      (skip_adapters ? NB_SAFETENSORS_ALLOW_EXTRA : 0u));
  return rc;
}

static int keep_base(const char *name, void *ctx) {
  (void)ctx;
  return !nb_lora_is_adapter(name);
}

nb_status nb_lora_merge_files(const char *weights, const char *adapters, const char *out) {
  if (!weights || !adapters || !out)
    return nb_error(NB_ERR_INVALID_ARG, "nb_lora_merge_files: three paths needed");
  nb_lora cfg;
  nb_backend *be = NULL;
  nb_state *st = NULL;
  nb_safetensors *wf = NULL, *af = NULL;
  nb_kv *meta = NULL;
  nb_status rc = nb_lora_read_config(adapters, &cfg);
  if (!rc) rc = nb_safetensors_open(weights, &wf);
  if (!rc) rc = open_adapters(adapters, &af);
  if (!rc) rc = nb_backend_new("cpu", &be);
  if (!rc) rc = nb_state_new(be, &st);
  /* adapters in the weights file (a LoRA run's weights.safetensors holds
   * them) give way to the adapter file's */
  if (!rc) rc = state_from_file(wf, be, st, 1);
  if (!rc) rc = state_from_file(af, be, st, 0);
  if (!rc) rc = nb_lora_merge(st, &cfg);
  /* the base file's metadata, and where its adapters came from */
  if (!rc) rc = nb_kv_new(&meta);
  const nb_kv *wm = wf ? nb_safetensors_metadata(wf) : NULL;
  for (int i = 0; !rc && i < nb_kv_count(wm); i++) {
    const char *k, *v;
    nb_kv_entry(wm, i, &k, &v);
    rc = nb_kv_set(meta, k, v);
  }
  if (!rc) rc = nb_kv_set(meta, "lora_merged", adapters);
  if (!rc) rc = nb_safetensors_save_if(out, st, keep_base, NULL, meta);
  nb_kv_free(meta);
  nb_safetensors_close(af);
  nb_safetensors_close(wf);
  nb_state_free(st);
  nb_backend_free(be);
  return rc;
}
