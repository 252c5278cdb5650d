/* safetensors reader and writer. The header is untrusted input: every length,
 * offset and shape is checked against the file size before anything is
 * allocated or read, so a corrupt file costs one error message, never a
 * crash or a huge allocation. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nabla/io.h"
#include "nabla/nn.h"

/* Like the reference implementation: a bigger header is surely corrupt. */
#define MAX_HEADER_BYTES (100u << 20)
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_JSON_INT 9007199254740992.0

static const char *const st_dtype_names[NB_DTYPE_COUNT] = {
    [NB_F32] = "F32", [NB_F16] = "F16", [NB_BF16] = "BF16",
    [NB_I32] = "I32", [NB_I64] = "I64", [NB_U8] = "U8",
};

struct nb_safetensors {
  char *path;
  FILE *fp;
  uint64_t file_size, data_start;
  int n;
  nb_safetensors_info *t; /* ascending offset; names owned */
  int *by_name;           /* indices into t sorted by name, for lookups */
  nb_kv *meta;
};

static int host_is_le(void) {
  uint16_t x = 1;
  unsigned char c;
  memcpy(&c, &x, 1);
  return c == 1;
}

/* safetensors data is little-endian; swap in place on big-endian hosts. */
static void to_from_le(void *p, size_t bytes, size_t elem) {
  if (elem == 1 || host_is_le()) return;
  unsigned char *b = p;
  for (size_t i = 0; i + elem <= bytes; i += elem)
    for (size_t j = 0; j < elem / 2; j++) {
      unsigned char t = b[i + j];
      b[i + j] = b[i + elem - 1 - j];
      b[i + elem - 1 - j] = t;
    }
}

/* ---- reading ------------------------------------------------------------------ */

void nb_safetensors_close(nb_safetensors *f) {
  if (!f) return;
  if (f->fp) fclose(f->fp);
  for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
  free(f->t);
  free(f->by_name);
  nb_kv_free(f->meta);
  free(f->path);
  free(f);
}

/* Most header errors name the file and one field or tensor. */
static nb_status bad(const nb_safetensors *f, const char *fmt, const char *what) {
  return nb_error(NB_ERR_FORMAT, fmt, f->path, what);
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= MAX_JSON_INT) || d != floor(d)) return 0;
  *out = (uint64_t)d;
  return 1;
}

static nb_status parse_metadata(nb_safetensors *f, const cJSON *m) {
  if (!cJSON_IsObject(m))
    return bad(f, "%s: header field '%s' must be an object of strings", "__metadata__");
  for (const cJSON *e = m->child; e; e = e->next) {
    if (!cJSON_IsString(e))
      return bad(f, "%s: header field '__metadata__'.'%s' is not a string", e->string);
    if (nb_kv_get(f->meta, e->string))
      return bad(f, "%s: header field '__metadata__' has key '%s' twice", e->string);
    nb_status s = nb_kv_set(f->meta, e->string, e->valuestring);
    if (s) return s;
  }
  return NB_OK;
}

static nb_status parse_tensor(nb_safetensors *f, const cJSON *j, nb_safetensors_info *t,
                              uint64_t *begin, uint64_t *end) {
  const char *name = j->string;
  if (!cJSON_IsObject(j)) return bad(f, "%s: header entry '%s' is not an object", name);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
  if (!cJSON_IsString(dt))
    return bad(f, "%s: tensor '%s': field 'dtype' is missing or not a string", name);
  int found = 0;
  for (int d = 0; d < NB_DTYPE_COUNT && !found; d++)
    if (!strcmp(dt->valuestring, st_dtype_names[d])) {
      t->dtype = (nb_dtype)d;
      found = 1;
    }
  if (!found)
    return nb_error(NB_ERR_FORMAT,
                    "%s: tensor '%s': unknown dtype '%s' in field 'dtype' (nabla reads F32, F16, "
                    "BF16, I32, I64, U8)",
                    f->path, name, dt->valuestring);
  if (!cJSON_IsArray(shape))
    return bad(f, "%s: tensor '%s': field 'shape' is missing or not an array", name);
  int nd = cJSON_GetArraySize(shape);
  if (nd > NB_MAX_DIMS)
    return nb_error(NB_ERR_FORMAT, "%s: tensor '%s': field 'shape' has %d dimensions (max %d)",
                    f->path, name, nd, NB_MAX_DIMS);
  t->ndim = nd;
  /* numel * elem size must fit, or the size check below could wrap */
  uint64_t bytes = nb_dtype_size(t->dtype);
  int overflow = 0;
  int k = 0;
  for (const cJSON *e = shape->child; e; e = e->next, k++) {
    uint64_t d;
    if (!json_uint(e, &d))
      return nb_error(NB_ERR_FORMAT,
                      "%s: tensor '%s': field 'shape'[%d] is not a non-negative integer", f->path,
                      name, k);
    t->shape[k] = (int64_t)d;
    if (d && bytes > UINT64_MAX / d) overflow = 1;
    bytes *= d;
  }
  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, begin) ||
      !json_uint(offs->child->next, end))
    return bad(f, "%s: tensor '%s': field 'data_offsets' must be [begin, end] with integers", name);
  if (*end < *begin)
    return nb_error(NB_ERR_FORMAT,
                    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                    "] end before they begin",
                    f->path, name, *begin, *end);
  if (overflow || bytes != *end - *begin) {
    char sb[160];
    return nb_error(NB_ERR_FORMAT,
                    "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                    " bytes but %s %s needs %s%" PRIu64,
                    f->path, name, *begin, *end, *end - *begin, dt->valuestring,
                    nb_shape_str(t->ndim, t->shape, sb, sizeof sb), overflow ? "more than " : "",
                    overflow ? UINT64_MAX : bytes);
  }
  t->bytes = bytes;
  return NB_OK;
}

static int by_offset(const void *a, const void *b) {
  const nb_safetensors_info *x = a, *y = b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1; /* empty tensors first */
  return strcmp(x->name, y->name);
}

/* qsort has no context argument: sort indices through a pointer table. */
static int by_name_ptr(const void *a, const void *b) {
  return strcmp((*(nb_safetensors_info *const *)a)->name, (*(nb_safetensors_info *const *)b)->name);
}

static nb_status index_names(nb_safetensors *f) {
  nb_safetensors_info **p = malloc((size_t)(f->n ? f->n : 1) * sizeof(nb_safetensors_info *));
  f->by_name = malloc((size_t)(f->n ? f->n : 1) * sizeof *f->by_name);
  if (!p || !f->by_name) {
    free(p);
    return nb_error(NB_ERR_OOM, "%s: out of memory", f->path);
  }
  for (int i = 0; i < f->n; i++) p[i] = &f->t[i];
  qsort(p, (size_t)f->n, sizeof(nb_safetensors_info *), by_name_ptr);
  nb_status s = NB_OK;
  for (int i = 0; i < f->n; i++) {
    f->by_name[i] = (int)(p[i] - f->t);
    if (i && !strcmp(p[i]->name, p[i - 1]->name) && !s)
      s = bad(f, "%s: tensor '%s' appears twice in the header", p[i]->name);
  }
  free(p);
  return s;
}

/* Offsets must tile the data section exactly: sorted, no gap, no overlap,
 * ending at the end of the file. */
static nb_status check_layout(nb_safetensors *f) {
  uint64_t data_size = f->file_size - f->data_start, pos = 0;
  for (int i = 0; i < f->n; i++) {
    const nb_safetensors_info *t = &f->t[i];
    uint64_t b = t->offset - f->data_start;
    if (b != pos) {
      const char *prev = i ? f->t[i - 1].name : NULL;
      return nb_error(NB_ERR_FORMAT,
                      "%s: tensor '%s': data_offsets begin at %" PRIu64
                      " but %s%s%s ends at %" PRIu64 " (%s; data must be contiguous)",
                      f->path, t->name, b, prev ? "tensor '" : "the data section start",
                      prev ? prev : "", prev ? "'" : "", pos, b < pos ? "overlap" : "gap");
    }
    pos = b + t->bytes;
    if (pos > data_size)
      return nb_error(NB_ERR_FORMAT,
                      "%s: truncated: tensor '%s' ends at byte offset %" PRIu64
                      " but the file has %" PRIu64 " bytes",
                      f->path, t->name, f->data_start + pos, f->file_size);
  }
  if (pos != data_size)
    return nb_error(NB_ERR_FORMAT,
                    "%s: %" PRIu64
                    " unexpected bytes after the last tensor at byte offset %" PRIu64,
                    f->path, data_size - pos, f->data_start + pos);
  return NB_OK;
}

/* Fills f->t and f->meta from the parsed header object. */
static nb_status parse_entries(nb_safetensors *f, const cJSON *root) {
  int count = 0;
  for (const cJSON *e = root->child; e; e = e->next)
    if (strcmp(e->string, "__metadata__") != 0) count++;
  nb_status s = nb_kv_new(&f->meta);
  if (s) return s;
  f->t = calloc((size_t)(count ? count : 1), sizeof *f->t);
  if (!f->t) return nb_error(NB_ERR_OOM, "%s: out of memory", f->path);
  int seen_meta = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (!strcmp(e->string, "__metadata__")) {
      if (seen_meta++) return bad(f, "%s: header has '%s' twice", "__metadata__");
      s = parse_metadata(f, e);
      if (s) return s;
      continue;
    }
    nb_safetensors_info *t = &f->t[f->n];
    size_t len = strlen(e->string) + 1;
    char *name = malloc(len);
    if (!name) return nb_error(NB_ERR_OOM, "%s: out of memory", f->path);
    memcpy(name, e->string, len);
    t->name = name;
    f->n++;
    uint64_t begin = 0, end = 0;
    s = parse_tensor(f, e, t, &begin, &end);
    if (s) return s;
    t->offset = f->data_start + begin;
  }
  return NB_OK;
}

static nb_status parse_header(nb_safetensors *f, const char *hdr, uint64_t n) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
  if (!root) {
    uint64_t at = end && end >= hdr && end <= hdr + n ? (uint64_t)(end - hdr) : 0;
    return nb_error(NB_ERR_FORMAT, "%s: invalid JSON in header near byte offset %" PRIu64, f->path,
                    8 + at);
  }
  nb_status s = NB_OK;
  for (const char *p = end; p < hdr + n && !s; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
      s = nb_error(NB_ERR_FORMAT,
                   "%s: unexpected character after the JSON header at byte offset %" PRIu64,
                   f->path, 8 + (uint64_t)(p - hdr));
  if (!s && !cJSON_IsObject(root))
    s = nb_error(NB_ERR_FORMAT, "%s: header at byte offset 8 is not a JSON object", f->path);
  if (!s) s = parse_entries(f, root);
  cJSON_Delete(root);
  if (s) return s;
  qsort(f->t, (size_t)f->n, sizeof *f->t, by_offset);
  s = index_names(f);
  return s ? s : check_layout(f);
}

/* Reads and checks the 8-byte header length; sets f->file_size. */
static nb_status read_length(nb_safetensors *f, uint64_t *n) {
  struct stat sb;
  if (fstat(fileno(f->fp), &sb) || !S_ISREG(sb.st_mode))
    return nb_error(NB_ERR_IO, "%s: not a regular file", f->path);
  f->file_size = (uint64_t)sb.st_size;
  unsigned char len8[8];
  if (f->file_size < 8 || fread(len8, 1, 8, f->fp) != 8)
    return nb_error(NB_ERR_FORMAT,
                    "%s: truncated: %" PRIu64 " bytes, too short for the 8-byte header length at "
                    "byte offset 0",
                    f->path, f->file_size);
  *n = 0;
  for (int i = 7; i >= 0; i--) *n = *n << 8 | len8[i];
  if (*n > f->file_size - 8)
    return nb_error(NB_ERR_FORMAT,
                    "%s: header length %" PRIu64 " (byte offset 0) is larger than the %" PRIu64
                    " bytes after it",
                    f->path, *n, f->file_size - 8);
  if (*n > MAX_HEADER_BYTES)
    return nb_error(NB_ERR_FORMAT, "%s: header length %" PRIu64 " (byte offset 0) exceeds %u bytes",
                    f->path, *n, MAX_HEADER_BYTES);
  if (*n < 2)
    return nb_error(NB_ERR_FORMAT,
                    "%s: header length %" PRIu64 " (byte offset 0) is too small for JSON", f->path,
                    *n);
  return NB_OK;
}

static nb_status open_file(nb_safetensors *f) {
  f->fp = fopen(f->path, "rb");
  if (!f->fp) return nb_error(NB_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
  uint64_t n = 0;
  nb_status s = read_length(f, &n);
  if (s) return s;
  f->data_start = 8 + n;
  /* NUL-terminated as well, so no JSON parser path can run off its end */
  char *hdr = malloc((size_t)n + 1);
  if (!hdr)
    return nb_error(NB_ERR_OOM, "%s: out of memory for a %" PRIu64 "-byte header", f->path, n);
  hdr[n] = '\0';
  if (fread(hdr, 1, (size_t)n, f->fp) != n)
    s = nb_error(NB_ERR_IO, "%s: read of the header at byte offset 8 failed", f->path);
  else
    s = parse_header(f, hdr, n);
  free(hdr);
  return s;
}

nb_status nb_safetensors_open(const char *path, nb_safetensors **out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_safetensors_open: NULL argument");
  *out = NULL;
  nb_safetensors *f = calloc(1, sizeof *f);
  size_t plen = strlen(path) + 1;
  if (!f || !(f->path = malloc(plen))) {
    free(f);
    return nb_error(NB_ERR_OOM, "%s: out of memory", path);
  }
  memcpy(f->path, path, plen);
  nb_status s = open_file(f);
  if (s) {
    nb_safetensors_close(f);
    return s;
  }
  *out = f;
  return NB_OK;
}

int nb_safetensors_count(const nb_safetensors *f) { return f ? f->n : 0; }

const nb_safetensors_info *nb_safetensors_tensor(const nb_safetensors *f, int i) {
  return f && i >= 0 && i < f->n ? &f->t[i] : NULL;
}

int nb_safetensors_find(const nb_safetensors *f, const char *name) {
  if (!f || !name) return -1;
  int lo = 0, hi = f->n - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(name, f->t[f->by_name[mid]].name);
    if (!c) return f->by_name[mid];
    if (c < 0)
      hi = mid - 1;
    else
      lo = mid + 1;
  }
  return -1;
}

const nb_kv *nb_safetensors_metadata(const nb_safetensors *f) { return f ? f->meta : NULL; }

nb_status nb_safetensors_read(nb_safetensors *f, int i, void *dst, size_t bytes) {
  if (!f || i < 0 || i >= f->n || (bytes && !dst))
    return nb_error(NB_ERR_INVALID_ARG, "nb_safetensors_read: bad argument (index %d)", i);
  const nb_safetensors_info *t = &f->t[i];
  if (bytes != t->bytes)
    return nb_error(NB_ERR_INVALID_ARG, "%s: tensor '%s' holds %" PRIu64 " bytes, buffer has %zu",
                    f->path, t->name, t->bytes, bytes);
  if (!bytes) return NB_OK;
  /* the file may have changed since it was opened: a short read is an error */
  if (fseeko(f->fp, (off_t)t->offset, SEEK_SET) || fread(dst, 1, bytes, f->fp) != bytes)
    return nb_error(NB_ERR_IO,
                    "%s: tensor '%s': read of %zu bytes at byte offset %" PRIu64 " failed", f->path,
                    t->name, bytes, t->offset);
  to_from_le(dst, bytes, nb_dtype_size(t->dtype));
  return NB_OK;
}

/* ---- loading into a state ------------------------------------------------------- */

static int has_prefix(const char *name, const char *prefix) {
  return !prefix || !strncmp(name, prefix, strlen(prefix));
}

static int same_shape(int na, const int64_t *a, int nb, const int64_t *b) {
  if (na != nb) return 0;
  for (int i = 0; i < na; i++)
    if (a[i] != b[i]) return 0;
  return 1;
}

/* Checks every pairing before writing anything, so a mismatch leaves the
 * state as it was. */
static nb_status match_state(nb_safetensors *f, const nb_state *st, const char *prefix,
                             unsigned flags, int *used) {
  int nv = nb_state_count(st);
  for (int v = 0; v < nv; v++) {
    const char *name;
    nb_dtype dt;
    int nd;
    const int64_t *shape;
    nb_status s = nb_state_entry(st, v, &name, &dt, &nd, &shape);
    if (s) return s;
    if (!has_prefix(name, prefix)) continue;
    int i = nb_safetensors_find(f, name);
    if (i < 0) {
      /* KV caches are scratch that checkpoints leave out (nn.h) */
      if ((flags & NB_SAFETENSORS_ALLOW_MISSING) || nb_nn_is_kv_cache(name)) continue;
      return nb_error(NB_ERR_FORMAT, "%s: variable '%s' of the state is not in the file", f->path,
                      name);
    }
    const nb_safetensors_info *t = &f->t[i];
    if (t->dtype != dt || !same_shape(nd, shape, t->ndim, t->shape)) {
      char a[160], b[160];
      return nb_error(NB_ERR_SHAPE, "%s: tensor '%s' is %s %s in the file but %s %s in the state",
                      f->path, name, nb_dtype_name(t->dtype),
                      nb_shape_str(t->ndim, t->shape, a, sizeof a), nb_dtype_name(dt),
                      nb_shape_str(nd, shape, b, sizeof b));
    }
    used[i] = 1;
  }
  if (!(flags & NB_SAFETENSORS_ALLOW_EXTRA))
    for (int i = 0; i < f->n; i++)
      if (!used[i])
        return nb_error(NB_ERR_FORMAT, "%s: tensor '%s' in the file has no variable in the state%s",
                        f->path, f->t[i].name, prefix && *prefix ? " with the given prefix" : "");
  return NB_OK;
}

nb_status nb_safetensors_load_into(nb_safetensors *f, nb_state *st, const char *prefix,
                                   unsigned flags) {
  if (!f || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_safetensors_load_into: NULL argument");
  int *used = calloc((size_t)(f->n ? f->n : 1), sizeof *used);
  if (!used) return nb_error(NB_ERR_OOM, "%s: out of memory", f->path);
  nb_status s = match_state(f, st, prefix, flags, used);
  uint64_t max = 0;
  for (int i = 0; i < f->n; i++)
    if (used[i] && f->t[i].bytes > max) max = f->t[i].bytes;
  /* bounded by the file size, checked when the header was parsed */
  void *buf = s ? NULL : malloc(max ? (size_t)max : 1);
  if (!s && !buf) s = nb_error(NB_ERR_OOM, "%s: out of memory for %" PRIu64 " bytes", f->path, max);
  for (int i = 0; i < f->n && !s; i++) {
    if (!used[i]) continue;
    s = nb_safetensors_read(f, i, buf, (size_t)f->t[i].bytes);
    if (!s) s = nb_state_write(st, f->t[i].name, buf, (size_t)f->t[i].bytes);
  }
  free(buf);
  free(used);
  return s;
}

nb_status nb_safetensors_load(const char *path, nb_state *st, const char *prefix, unsigned flags) {
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_safetensors_load: NULL argument");
  nb_safetensors *f;
  nb_status s = nb_safetensors_open(path, &f);
  if (s) return s;
  s = nb_safetensors_load_into(f, st, prefix, flags);
  nb_safetensors_close(f);
  return s;
}

/* ---- writing -------------------------------------------------------------------- */

typedef struct {
  const char *name;
  nb_dtype dtype;
  int ndim;
  const int64_t *shape;
  size_t bytes;
} save_entry;

/* Largest elements first, then by name: deterministic, and every tensor
 * starts at a multiple of its element size (the data section starts 8-byte
 * aligned), so memory-mapping readers get aligned arrays. The reference
 * writer orders tensors the same way. */
static int entry_order(const void *a, const void *b) {
  const save_entry *x = a, *y = b;
  size_t sx = nb_dtype_size(x->dtype), sy = nb_dtype_size(y->dtype);
  if (sx != sy) return sx > sy ? -1 : 1;
  return strcmp(x->name, y->name);
}

static cJSON *json_u64(uint64_t v) {
  /* raw text keeps 64-bit integers exact (cJSON numbers are doubles) */
  char buf[24];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  return cJSON_CreateRaw(buf);
}

/* Builds the padded header; returns NULL only when out of memory. */
static char *build_header(const save_entry *e, int n, const nb_kv *meta, size_t *len) {
  cJSON *root = cJSON_CreateObject();
  int ok = root != NULL;
  if (ok && nb_kv_count(meta) > 0) {
    cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
    ok = m != NULL;
    for (int i = 0; ok && i < nb_kv_count(meta); i++) {
      const char *k, *v;
      nb_kv_entry(meta, i, &k, &v);
      ok = cJSON_AddStringToObject(m, k, v) != NULL;
    }
  }
  uint64_t off = 0;
  for (int i = 0; ok && i < n; i++) {
    cJSON *t = cJSON_AddObjectToObject(root, e[i].name);
    cJSON *shape = t ? cJSON_CreateArray() : NULL, *offs = shape ? cJSON_CreateArray() : NULL;
    ok = t && cJSON_AddStringToObject(t, "dtype", st_dtype_names[e[i].dtype]) && shape && offs;
    if (shape && !ok) cJSON_Delete(shape);
    if (offs && !ok) cJSON_Delete(offs);
    if (!ok) break;
    cJSON_AddItemToObject(t, "shape", shape);
    cJSON_AddItemToObject(t, "data_offsets", offs);
    for (int d = 0; ok && d < e[i].ndim; d++) {
      cJSON *x = json_u64((uint64_t)e[i].shape[d]);
      ok = x && cJSON_AddItemToArray(shape, x);
    }
    cJSON *b = ok ? json_u64(off) : NULL, *en = b ? json_u64(off + e[i].bytes) : NULL;
    ok = b && en && cJSON_AddItemToArray(offs, b) && cJSON_AddItemToArray(offs, en);
    off += e[i].bytes;
  }
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  if (!text) return NULL;
  /* pad with spaces so the data starts 8-byte aligned (8 + len) */
  size_t n0 = strlen(text), padded = (n0 + 7) & ~(size_t)7;
  char *out = realloc(text, padded + 1);
  if (!out) {
    free(text);
    return NULL;
  }
  memset(out + n0, ' ', padded - n0);
  out[padded] = '\0';
  *len = padded;
  return out;
}

static nb_status collect(const nb_state *st, int (*keep)(const char *, void *), void *ctx,
                         save_entry **out, int *n, size_t *max_bytes) {
  int nv = nb_state_count(st);
  save_entry *e = malloc((size_t)(nv ? nv : 1) * sizeof *e);
  if (!e) return nb_error(NB_ERR_OOM, "nb_safetensors_save: out of memory");
  *n = 0;
  *max_bytes = 0;
  for (int v = 0; v < nv; v++) {
    save_entry x;
    nb_status s = nb_state_entry(st, v, &x.name, &x.dtype, &x.ndim, &x.shape);
    if (s) {
      free(e);
      return s;
    }
    if (keep && !keep(x.name, ctx)) continue;
    if (!strcmp(x.name, "__metadata__")) {
      free(e);
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_safetensors_save: a variable named '__metadata__' cannot be saved");
    }
    x.bytes = (size_t)nb_shape_numel(x.ndim, x.shape) * nb_dtype_size(x.dtype);
    if (x.bytes > *max_bytes) *max_bytes = x.bytes;
    e[(*n)++] = x;
  }
  qsort(e, (size_t)*n, sizeof *e, entry_order);
  *out = e;
  return NB_OK;
}

static int keep_prefix(const char *name, void *prefix) { return has_prefix(name, prefix); }

nb_status nb_safetensors_save(const char *path, const nb_state *st, const char *prefix,
                              const nb_kv *metadata) {
  return nb_safetensors_save_if(path, st, keep_prefix, (void *)prefix, metadata);
}

nb_status nb_safetensors_save_if(const char *path, const nb_state *st,
                                 int (*keep)(const char *name, void *ctx), void *ctx,
                                 const nb_kv *metadata) {
  if (!path || !st) return nb_error(NB_ERR_INVALID_ARG, "nb_safetensors_save: NULL argument");
  save_entry *e = NULL;
  int n = 0;
  size_t max = 0;
  nb_status s = collect(st, keep, ctx, &e, &n, &max);
  if (s) return s;
  size_t hlen = 0;
  char *hdr = build_header(e, n, metadata, &hlen);
  void *buf = hdr ? malloc(max ? max : 1) : NULL;
  nb_atomic_file *f = NULL;
  if (!buf) s = nb_error(NB_ERR_OOM, "%s: out of memory", path);
  if (!s) s = nb_atomic_open(path, &f);
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  if (!s) s = nb_atomic_write(f, len8, 8);
  if (!s) s = nb_atomic_write(f, hdr, hlen);
  for (int i = 0; i < n && !s; i++) {
    s = nb_state_read(st, e[i].name, buf, e[i].bytes);
    to_from_le(buf, e[i].bytes, nb_dtype_size(e[i].dtype));
    if (!s) s = nb_atomic_write(f, buf, e[i].bytes);
  }
  if (!s)
    s = nb_atomic_commit(f);
  else
    nb_atomic_abort(f);
  free(buf);
  free(hdr);
  free(e);
  return s;
}
