/* The deterministic, time-bounded mutation fuzzer that ctest runs on the
 * untrusted-input readers (tests/test_fuzz_readers.c: ONNX, .pb, .npy;
 * tests/test_fuzz_more.c: model files, safetensors, checkpoints, LoRA
 * adapters, datasets, tokenizers). A corpus of seeds (real files, or files
 * the library writes), a seeded generator, the mutations, and the loop that
 * feeds each mutated input to an fz_* target (tests/fuzz_targets.h and its
 * siblings) and fails the test with NB_FUZZ_ONE=K to replay the input that
 * broke it.
 *
 * Mutations: bit flips, interesting bytes, truncation, a corrupted varint
 * (protobuf lengths), inserted or deleted runs, copied chunks, random tails;
 * for .npy, header text edits (FZ_MUT_NPY); for text and mixed formats
 * (FZ_MUT_RICH), dictionary tokens, numbers replaced by edge values and
 * little- or big-endian integers written over length fields.
 *
 * Environment: NB_FUZZ_SEED (default 1), NB_FUZZ_SECONDS per reader (each
 * test file has its default), NB_FUZZ_ITERS per reader (default 100000; the
 * time bound usually ends the run first), NB_FUZZ_ONE=K runs only iteration
 * K of each reader, and NB_FUZZ_DUMP=FILE then writes each reader's input to
 * FILE.<reader> (FILE.model, FILE.csv, ...).
 * Include after test_util.h (it uses cmocka). */
#ifndef NB_FUZZ_MUTATE_H
#define NB_FUZZ_MUTATE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz_common.h"

typedef struct {
  char *name;
  uint8_t *data;
  size_t n;
} seed_file;

typedef struct {
  seed_file *f;
  int n, cap;
} corpus;

/* Adds a copy of n bytes labelled `name`. */
static void corpus_add_bytes(corpus *c, const char *name, const void *data, size_t n) {
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->f = realloc(c->f, (size_t)c->cap * sizeof *c->f);
    assert_non_null(c->f);
  }
  uint8_t *d = malloc(n ? n : 1);
  assert_non_null(d);
  if (n) memcpy(d, data, n);
  c->f[c->n++] = (seed_file){strdup(name), d, n};
}

/* Adds the file at path; a missing file is skipped (optional seeds, such
 * as the shared ONNX node tests, may be absent). */
static void corpus_add_file(corpus *c, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  rewind(f);
  uint8_t *b = malloc((size_t)sz + 1);
  assert_non_null(b);
  size_t got = fread(b, 1, (size_t)sz, f);
  fclose(f);
  if (got == (size_t)sz) corpus_add_bytes(c, path, b, got);
  free(b);
}

static void corpus_free(corpus *c) {
  for (int i = 0; i < c->n; i++) {
    free(c->f[i].name);
    free(c->f[i].data);
  }
  free(c->f);
}

/* ---- the generator and the mutations ------------------------------------------------ */

static uint64_t rnd(uint64_t *s) { /* splitmix64: one seed, one stream */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t below(uint64_t *s, size_t n) { return n ? (size_t)(rnd(s) % n) : 0; }

typedef struct {
  uint8_t *p;
  size_t n, cap;
} bytes;

static void reserve(bytes *b, size_t n) {
  if (n <= b->cap) return;
  b->cap = n * 2 + 64;
  b->p = realloc(b->p, b->cap);
  assert_non_null(b->p);
}

/* Replaces [at, at + del) by `ins` bytes. */
static void splice(bytes *b, size_t at, size_t del, const uint8_t *ins, size_t nins) {
  if (at > b->n) at = b->n;
  if (del > b->n - at) del = b->n - at;
  reserve(b, b->n - del + nins);
  memmove(b->p + at + nins, b->p + at + del, b->n - at - del);
  if (nins) memcpy(b->p + at, ins, nins);
  b->n = b->n - del + nins;
}

static size_t varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v) out[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

/* How a corpus is mutated: FZ_MUT_BINARY (protobuf and other binary
 * formats), FZ_MUT_NPY (also edits the .npy header text), FZ_MUT_RICH (also
 * dictionary tokens, edge-value numbers and integers over length fields). */
enum { FZ_MUT_BINARY = 0, FZ_MUT_NPY = 1, FZ_MUT_RICH = 2 };

/* Numbers that find size and range checks: zero, negatives, the int32 and
 * int64 edges, a float overflow, a NaN. */
static const char *const fz_numbers[] = {
    "0",
    "-1",
    "1",
    "2147483647",
    "2147483648",
    "4294967296",
    "-2147483649",
    "1099511627776",
    "9223372036854775807",
    "1e308",
    "nan",
    "65536",
    "1000000000",
    "3.5",
    "-0",
    "1e-45",
    "18446744073709551615",
    "256",
};

/* Replaces the decimal number nearest at or after `at` (or inserts one). */
static void mutate_number(bytes *b, uint64_t *s, size_t at) {
  const char *num = fz_numbers[below(s, sizeof fz_numbers / sizeof *fz_numbers)];
  size_t i = at;
  while (i < b->n && !(b->p[i] >= '0' && b->p[i] <= '9')) i++;
  size_t e = i;
  while (e < b->n && ((b->p[e] >= '0' && b->p[e] <= '9') || b->p[e] == '.')) e++;
  if (i == b->n) i = e = at;
  splice(b, i, e - i, (const uint8_t *)num, strlen(num));
}

/* Writes an edge-value integer of 1, 2, 4 or 8 bytes, little- or big-endian. */
static void mutate_int(bytes *b, uint64_t *s, size_t at) {
  static const uint64_t vals[] = {0,          1,          0x7f,       0x80,       0xff,
                                  0x7fff,     0xffff,     0x7fffffff, 0x80000000, 0xffffffffu,
                                  UINT64_MAX, 1ull << 32, 1ull << 40, 1ull << 62, 3073};
  static const size_t widths[] = {1, 2, 4, 8};
  size_t w = widths[below(s, 4)], big = below(s, 2);
  uint64_t v = below(s, 4) ? vals[below(s, sizeof vals / sizeof *vals)] : rnd(s);
  if (at + w > b->n) at = b->n >= w ? b->n - w : 0;
  for (size_t k = 0; k < w && at + k < b->n; k++)
    b->p[at + k] = (uint8_t)(v >> (8 * (big ? w - 1 - k : k)));
}

static void mutate(bytes *b, uint64_t *s, int mode, const char *const *dict) {
  static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x08, 0x0a, 0x12};
  static const uint64_t lengths[] = {0, 1, 127, 128, 0x7fffffff, 0xffffffffu, UINT64_MAX, 1u << 20};
  static const char header_chars[] = "0123456789(),:'{} LTrueFalse<>|fiub-9";
  uint8_t tmp[16];
  size_t at = below(s, b->n + 1);
  switch (below(s, mode == FZ_MUT_NPY ? 9 : mode == FZ_MUT_RICH ? 11 : 8)) {
  case 0: /* flip a few bits */
    for (size_t k = 1 + below(s, 8); k > 0 && b->n; k--)
      b->p[below(s, b->n)] ^= (uint8_t)(1u << below(s, 8));
    break;
  case 1: /* an interesting byte */
    if (b->n) b->p[below(s, b->n)] = interesting[below(s, sizeof interesting)];
    break;
  case 2: /* truncate */ b->n = below(s, b->n + 1); break;
  case 3: { /* a varint over whatever was there: protobuf lengths and counts */
    size_t k =
        varint(tmp, below(s, 2) ? lengths[below(s, sizeof lengths / sizeof *lengths)] : rnd(s));
    splice(b, at, below(s, 3) ? k : below(s, 4), tmp, k);
    break;
  }
  case 4: /* delete a run */ splice(b, at, 1 + below(s, 16), NULL, 0); break;
  case 5: /* insert random bytes */
    for (size_t k = 0; k < sizeof tmp; k++) tmp[k] = (uint8_t)rnd(s);
    splice(b, at, 0, tmp, 1 + below(s, sizeof tmp));
    break;
  case 6: { /* copy a chunk of the input elsewhere (duplicated fields, nested messages) */
    if (!b->n) break;
    size_t from = below(s, b->n), len = 1 + below(s, b->n - from < 64 ? b->n - from : 64);
    uint8_t *chunk = malloc(len);
    assert_non_null(chunk);
    memcpy(chunk, b->p + from, len);
    splice(b, at, below(s, 2) ? len : 0, chunk, len);
    free(chunk);
    break;
  }
  case 7: /* a random tail */
    b->n = at;
    for (size_t k = below(s, 32); k > 0; k--) {
      uint8_t r = (uint8_t)rnd(s);
      splice(b, b->n, 0, &r, 1);
    }
    break;
  case 8:
    if (mode == FZ_MUT_NPY) { /* edit the header text (it starts after the 10-byte preamble) */
      if (b->n <= 10) break;
      size_t end = b->n < 128 ? b->n : 128;
      size_t pos = 10 + below(s, end - 10);
      char c = header_chars[below(s, sizeof header_chars - 1)];
      if (below(s, 2))
        b->p[pos] = (uint8_t)c;
      else
        splice(b, pos, 0, (const uint8_t *)&c, 1);
    } else if (dict && dict[0]) { /* a token of the format, inserted or over a run */
      size_t nd = 0;
      while (dict[nd]) nd++;
      const char *t = dict[below(s, nd)];
      splice(b, at, below(s, 2) ? 0 : below(s, 8), (const uint8_t *)t, strlen(t));
    }
    break;
  case 9: mutate_number(b, s, at); break;
  default: mutate_int(b, s, at); break;
  }
}

/* ---- the loop ---------------------------------------------------------------------- */

typedef const char *(*fz_fn)(const uint8_t *, size_t, const char *, fz_stats *);

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : def;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Feeds every seed unmutated (each must parse), then mutated inputs until
 * NB_FUZZ_SECONDS (default `seconds`) or NB_FUZZ_ITERS run out. */
static void fuzz_corpus(const char *what, const corpus *c, fz_fn fn, int mode,
                        const char *const *dict, long seconds) {
  assert_true(c->n > 0);
  uint64_t seed = (uint64_t)env_long("NB_FUZZ_SEED", 1);
  long iters = env_long("NB_FUZZ_ITERS", 100000), one = env_long("NB_FUZZ_ONE", -1);
  const char *dump = one >= 0 ? getenv("NB_FUZZ_DUMP") : NULL;
  double budget = (double)env_long("NB_FUZZ_SECONDS", seconds), t0 = now_s();
  fz_stats st = {0};
  bytes b = {0};
  /* every seed unmutated first: they must all parse */
  for (int i = 0; i < c->n && one < 0; i++) {
    long before = st.parsed;
    const char *bad = fn(c->f[i].data, c->f[i].n, c->f[i].name, &st);
    if (bad || st.parsed == before)
      fail_msg("%s: seed %s does not parse: %s", what, c->f[i].name, bad ? bad : nb_last_error());
  }
  long it = one >= 0 ? one : 0, last = one >= 0 ? one + 1 : iters;
  for (; it < last; it++) {
    if (one < 0 && (it & 15) == 0 && now_s() - t0 > budget) break;
    /* each iteration's input depends only on (seed, iteration) */
    uint64_t s = seed * 0x100000001b3ull ^ (uint64_t)it * 0x9e3779b97f4a7c15ull;
    const seed_file *f = &c->f[below(&s, (size_t)c->n)];
    reserve(&b, f->n);
    memcpy(b.p, f->data, f->n);
    b.n = f->n;
    /* mostly one mutation: deeper parts of the format stay reachable */
    for (size_t k = 1 + (below(&s, 4) ? 0 : 1 + below(&s, 3)); k > 0; k--)
      mutate(&b, &s, mode, dict);
    if (dump && *dump) { /* the input of NB_FUZZ_ONE, to look at or minimize */
      char path[1024];
      snprintf(path, sizeof path, "%s.%s", dump, what);
      FILE *out = fopen(path, "wb");
      if (out) {
        fwrite(b.p, 1, b.n, out);
        fclose(out);
      }
    }
    const char *bad = fn(b.p, b.n, f->name, &st);
    if (bad)
      fail_msg("%s: iteration %ld (NB_FUZZ_SEED=%llu NB_FUZZ_ONE=%ld) from %s: %s (%s)", what, it,
               (unsigned long long)seed, it, f->name, bad, nb_last_error());
  }
  free(b.p);
  printf("  %s: %ld inputs in %.1f s from %d seeds (seed %llu): %ld parsed, %ld built, "
         "%ld compiled\n",
         what, st.inputs, now_s() - t0, c->n, (unsigned long long)seed, st.parsed, st.built,
         st.compiled);
}

#endif
