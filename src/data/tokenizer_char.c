/* Character (byte) tokenizer and random token windows for language-model
 * training, as in nanoGPT's shakespeare_char: ids are the ranks of the bytes
 * in the sorted set of bytes of the training text. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla/data.h"

nb_status nb_char_vocab_build(const char *text, size_t n, nb_char_vocab *out) {
  if (!out || (n && !text))
    return nb_error(NB_ERR_INVALID_ARG, "nb_char_vocab_build: text and out are needed");
  int seen[256] = {0};
  for (size_t i = 0; i < n; i++) seen[(unsigned char)text[i]] = 1;
  memset(out, 0, sizeof *out);
  for (int b = 0; b < 256; b++) {
    out->id[b] = -1;
    if (seen[b]) {
      out->id[b] = (int16_t)out->size;
      out->bytes[out->size++] = (unsigned char)b;
    }
  }
  return NB_OK;
}

nb_status nb_text_read_file(const char *path, char **data, size_t *n) {
  if (!path || !data || !n)
    return nb_error(NB_ERR_INVALID_ARG, "nb_text_read_file: path, data and n are needed");
  *data = NULL;
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  /* read in growing chunks rather than trusting ftell: pipes and /proc
   * files have no size */
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    len += fread(buf + len, 1, cap - len - 1, f);
    if (len < cap - 1) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf) return nb_error(NB_ERR_OOM, "%s: out of memory reading the file", path);
  if (err) {
    free(buf);
    return nb_error(NB_ERR_IO, "%s: read error after %zu bytes", path, len);
  }
  buf[len] = '\0';
  *data = buf;
  *n = len;
  return NB_OK;
}

nb_status nb_char_encode(const nb_char_vocab *v, const char *text, size_t n, int32_t *ids) {
  if (!v || (n && (!text || !ids)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_char_encode: vocabulary, text and ids are needed");
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)text[i];
    if (v->id[b] < 0)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_char_encode: byte %u at offset %zu is not in the vocabulary of %d",
                      (unsigned)b, i, v->size);
    ids[i] = v->id[b];
  }
  return NB_OK;
}

nb_status nb_char_decode(const nb_char_vocab *v, const int32_t *ids, size_t n, char *text) {
  if (!v || (n && (!text || !ids)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_char_decode: vocabulary, ids and text are needed");
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= v->size)
      return nb_error(NB_ERR_INVALID_ARG,
                      "nb_char_decode: id %" PRId32 " at position %zu is outside [0, %d)", ids[i],
                      i, v->size);
    text[i] = (char)v->bytes[ids[i]];
  }
  return NB_OK;
}

#define VOCAB_MAGIC "nabla-char-vocab"

nb_status nb_char_vocab_save(const nb_char_vocab *v, const char *path) {
  if (!v || !path || v->size < 0 || v->size > 256)
    return nb_error(NB_ERR_INVALID_ARG, "nb_char_vocab_save: bad vocabulary or path");
  FILE *f = fopen(path, "w");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  fprintf(f, "%s 1 %d\n", VOCAB_MAGIC, v->size);
  for (int i = 0; i < v->size; i++) fprintf(f, "%u\n", (unsigned)v->bytes[i]);
  int err = ferror(f);
  if (fclose(f) || err) return nb_error(NB_ERR_IO, "%s: write failed", path);
  return NB_OK;
}

/* The next blank-separated word as a whole decimal integer; 0 at the end of
 * the file or for anything else. (fscanf's %d is undefined behaviour for a
 * value out of int's range.) */
static int read_int(FILE *f, long *v) {
  char word[24];
  if (fscanf(f, "%23s", word) != 1) return 0;
  char *end;
  errno = 0;
  long x = strtol(word, &end, 10);
  if (end == word || *end || errno) return 0;
  *v = x;
  return 1;
}

nb_status nb_char_vocab_load(const char *path, nb_char_vocab *out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_char_vocab_load: path and out needed");
  FILE *f = fopen(path, "r");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char magic[32] = {0};
  long version = 0, size = -1;
  nb_status st = NB_OK;
  if (fscanf(f, "%31s", magic) != 1 || strcmp(magic, VOCAB_MAGIC) || !read_int(f, &version) ||
      !read_int(f, &size) || version != 1 || size < 0 || size > 256) {
    st = nb_error(NB_ERR_FORMAT, "%s:1: expected '%s 1 SIZE' with SIZE in 0..256", path,
                  VOCAB_MAGIC);
  }
  nb_char_vocab v;
  memset(&v, 0, sizeof v);
  for (int b = 0; b < 256; b++) v.id[b] = -1;
  for (int i = 0; !st && i < size; i++) {
    long b;
    if (!read_int(f, &b) || b < 0 || b > 255 || (i && b <= v.bytes[i - 1]))
      st = nb_error(NB_ERR_FORMAT, "%s:%d: expected a byte value above the previous one", path,
                    i + 2);
    else {
      v.bytes[i] = (unsigned char)b;
      v.id[b] = (int16_t)i;
      v.size = i + 1;
    }
  }
  char extra;
  if (!st && fscanf(f, " %c", &extra) == 1)
    st = nb_error(NB_ERR_FORMAT, "%s:%ld: more than the %ld values the header gives", path,
                  size + 2, size);
  fclose(f);
  if (!st) *out = v;
  return st;
}

nb_status nb_token_windows_init(nb_token_windows *w, const int32_t *tokens, int64_t n,
                                int64_t block, uint64_t seed) {
  if (!w || (n > 0 && !tokens) || n < 0 || block <= 0)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_token_windows_init: need windows, tokens and block > 0 (block %lld)",
                    (long long)block);
  /* integer split: 9n/10 in floating point could round across a boundary */
  int64_t n_train = n / 10 * 9 + n % 10 * 9 / 10;
  int64_t n_val = n - n_train;
  if (n_train < block + 1 || n_val < block + 1)
    return nb_error(NB_ERR_INVALID_ARG,
                    "nb_token_windows_init: %lld tokens split into %lld train and %lld validation "
                    "tokens; each needs at least block + 1 = %lld",
                    (long long)n, (long long)n_train, (long long)n_val, (long long)(block + 1));
  memset(w, 0, sizeof *w);
  w->tokens = tokens;
  w->n_train = n_train;
  w->n_val = n_val;
  w->block = block;
  nb_rng_seed(&w->rng[0], seed);
  /* a different stream for validation, still determined by the seed */
  nb_rng_seed(&w->rng[1], seed ^ 0x9e3779b97f4a7c15ull);
  return NB_OK;
}

nb_status nb_token_windows_next(nb_token_windows *w, nb_token_split split, int64_t batch,
                                int32_t *x, int32_t *y) {
  if (!w || !w->tokens || batch < 0 || (batch && (!x || !y)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_token_windows_next: windows, x and y are needed");
  if (split != NB_TOKENS_TRAIN && split != NB_TOKENS_VAL)
    return nb_error(NB_ERR_INVALID_ARG, "nb_token_windows_next: unknown split %d", (int)split);
  const int32_t *base = w->tokens + (split == NB_TOKENS_VAL ? w->n_train : 0);
  int64_t len = split == NB_TOKENS_VAL ? w->n_val : w->n_train;
  /* start positions 0 .. len - block - 1 keep y's last token in the split */
  uint64_t starts = (uint64_t)(len - w->block);
  nb_rng *r = &w->rng[split];
  for (int64_t b = 0; b < batch; b++) {
    /* the modulo bias is below starts / 2^64: immaterial */
    int64_t i = (int64_t)(nb_rng_next(r) % starts);
    memcpy(x + b * w->block, base + i, (size_t)w->block * sizeof *x);
    memcpy(y + b * w->block, base + i + 1, (size_t)w->block * sizeof *y);
  }
  return NB_OK;
}
