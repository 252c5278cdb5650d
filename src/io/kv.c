/* An ordered string map: arrays of keys and values in insertion order, and
 * a hash index over them. Most maps are small (tens of entries), but a
 * safetensors header may hold a million metadata keys: a linear scan per
 * lookup made reading such a file quadratic (seconds for 40,000 keys). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/io.h"

struct nb_kv {
  int n, cap;
  char **keys, **values;
  int *slots;    /* open addressing: 1 + the index of a key, 0 = empty */
  size_t nslots; /* a power of two above 2 n; 0 before the first key */
};

nb_status nb_kv_new(nb_kv **out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_kv_new: NULL argument");
  *out = calloc(1, sizeof **out);
  return *out ? NB_OK : nb_error(NB_ERR_OOM, "nb_kv_new: out of memory");
}

void nb_kv_free(nb_kv *kv) {
  if (!kv) return;
  for (int i = 0; i < kv->n; i++) {
    free(kv->keys[i]);
    free(kv->values[i]);
  }
  free(kv->keys);
  free(kv->values);
  free(kv->slots);
  free(kv);
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* The slot of key: where it is, or the empty slot where it would go. */
static size_t slot_of(const nb_kv *kv, const char *key) {
  size_t mask = kv->nslots - 1, i = (size_t)hash_str(key) & mask;
  while (kv->slots[i] && strcmp(kv->keys[kv->slots[i] - 1], key)) i = (i + 1) & mask;
  return i;
}

static int find(const nb_kv *kv, const char *key) {
  if (!kv->nslots) return -1;
  return kv->slots[slot_of(kv, key)] - 1;
}

/* Room in the index for one more key (rebuilt at twice the size when it
 * would be half full); 0 when out of memory. */
static int reserve_slot(nb_kv *kv) {
  if (2 * ((size_t)kv->n + 1) <= kv->nslots) return 1;
  size_t ns = kv->nslots ? 2 * kv->nslots : 16;
  int *slots = calloc(ns, sizeof *slots);
  if (!slots) return 0;
  free(kv->slots);
  kv->slots = slots;
  kv->nslots = ns;
  for (int i = 0; i < kv->n; i++) kv->slots[slot_of(kv, kv->keys[i])] = i + 1;
  return 1;
}

nb_status nb_kv_set(nb_kv *kv, const char *key, const char *value) {
  if (!kv || !key || !value) return nb_error(NB_ERR_INVALID_ARG, "nb_kv_set: NULL argument");
  char *v = dup_str(value);
  if (!v) return nb_error(NB_ERR_OOM, "nb_kv_set '%s': out of memory", key);
  int i = find(kv, key);
  if (i >= 0) {
    free(kv->values[i]);
    kv->values[i] = v;
    return NB_OK;
  }
  if (!reserve_slot(kv)) {
    free(v);
    return nb_error(NB_ERR_OOM, "nb_kv_set '%s': out of memory", key);
  }
  if (kv->n == kv->cap) {
    int cap = kv->cap ? kv->cap * 2 : 8;
    char **k = realloc(kv->keys, (size_t)cap * sizeof *k);
    if (k) kv->keys = k;
    char **vs = k ? realloc(kv->values, (size_t)cap * sizeof *vs) : NULL;
    if (vs) kv->values = vs;
    if (!k || !vs) {
      free(v);
      return nb_error(NB_ERR_OOM, "nb_kv_set '%s': out of memory", key);
    }
    kv->cap = cap;
  }
  char *k = dup_str(key);
  if (!k) {
    free(v);
    return nb_error(NB_ERR_OOM, "nb_kv_set '%s': out of memory", key);
  }
  kv->slots[slot_of(kv, k)] = kv->n + 1;
  kv->keys[kv->n] = k;
  kv->values[kv->n] = v;
  kv->n++;
  return NB_OK;
}

const char *nb_kv_get(const nb_kv *kv, const char *key) {
  if (!kv || !key) return NULL;
  int i = find(kv, key);
  return i >= 0 ? kv->values[i] : NULL;
}

int nb_kv_count(const nb_kv *kv) { return kv ? kv->n : 0; }

nb_status nb_kv_entry(const nb_kv *kv, int i, const char **key, const char **value) {
  if (!kv || i < 0 || i >= kv->n)
    return nb_error(NB_ERR_INVALID_ARG, "nb_kv_entry: index %d out of range", i);
  if (key) *key = kv->keys[i];
  if (value) *value = kv->values[i];
  return NB_OK;
}

nb_status nb_kv_set_i64(nb_kv *kv, const char *key, int64_t value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRId64, value);
  return nb_kv_set(kv, key, buf);
}

/* The value of a key that must be present. */
static const char *required(const nb_kv *kv, const char *key) {
  const char *v = nb_kv_get(kv, key);
  if (!v) nb_error(NB_ERR_FORMAT, "metadata key '%s' is missing", key ? key : "(null)");
  return v;
}

nb_status nb_kv_get_i64(const nb_kv *kv, const char *key, int64_t *out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_kv_get_i64: NULL argument");
  const char *v = required(kv, key);
  if (!v) return NB_ERR_FORMAT;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  /* strtoll skips leading spaces; the stored form never has them */
  if (!*v || *v == ' ' || *end || errno)
    return nb_error(NB_ERR_FORMAT, "metadata key '%s': '%s' is not a decimal int64", key, v);
  *out = (int64_t)x;
  return NB_OK;
}

nb_status nb_kv_set_rng(nb_kv *kv, const char *key, const nb_rng *rng) {
  if (!rng) return nb_error(NB_ERR_INVALID_ARG, "nb_kv_set_rng: NULL argument");
  char buf[80];
  snprintf(buf, sizeof buf, "%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64, rng->s[0],
           rng->s[1], rng->s[2], rng->s[3]);
  return nb_kv_set(kv, key, buf);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

nb_status nb_kv_get_rng(const nb_kv *kv, const char *key, nb_rng *out) {
  if (!out) return nb_error(NB_ERR_INVALID_ARG, "nb_kv_get_rng: NULL argument");
  const char *v = required(kv, key);
  if (!v) return NB_ERR_FORMAT;
  /* exactly 4 x 16 hex digits with commas between: 67 characters */
  nb_rng r;
  int ok = strlen(v) == 67;
  for (int w = 0; ok && w < 4; w++) {
    uint64_t x = 0;
    for (int d = 0; ok && d < 16; d++) {
      int h = hexval(v[w * 17 + d]);
      ok = h >= 0;
      x = x << 4 | (uint64_t)(h & 15);
    }
    if (ok && w < 3) ok = v[w * 17 + 16] == ',';
    r.s[w] = x;
  }
  if (!ok)
    return nb_error(NB_ERR_FORMAT,
                    "metadata key '%s': '%s' is not an RNG state (4 comma-separated 16-digit hex "
                    "words)",
                    key, v);
  *out = r;
  return NB_OK;
}
