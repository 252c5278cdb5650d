/* Byte-level BPE tokenizer: the pre-split rule, the merge table, special
 * tokens, encoding and decoding. Training is in tokenizer_bpe_train.c, the
 * vocabulary file in tokenizer_bpe_file.c. */
#define _POSIX_C_SOURCE 200809L /* strnlen */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"

/* ---- pre-split ------------------------------------------------------------ */

enum { CL_OTHER = 0, CL_LETTER = 1, CL_DIGIT = 2, CL_SPACE = 3 };

static int byte_class(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return CL_LETTER;
  if (c >= '0' && c <= '9') return CL_DIGIT;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return CL_SPACE; /* \t \n \v \f \r */
  return CL_OTHER;
}

static int ascii_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int is_newline(unsigned char c) { return c == '\r' || c == '\n'; }

/* The seven alternatives of the rule in data.h, tried in order; each
 * branch returns the length that alternative (with the regex's greedy
 * matching and backtracking) would match. */
size_t nb_bpe_chunk_len(const char *text, size_t n) {
  if (!text || !n) return 0;
  const unsigned char *s = (const unsigned char *)text;
  unsigned char c = s[0];
  int cl = byte_class(c);
  /* 1. contractions */
  if (c == '\'' && n >= 2) {
    int c1 = ascii_lower(s[1]);
    if (c1 == 's' || c1 == 'd' || c1 == 'm' || c1 == 't') return 2;
    if (n >= 3) {
      int c2 = ascii_lower(s[2]);
      if ((c1 == 'l' && c2 == 'l') || (c1 == 'v' && c2 == 'e') || (c1 == 'r' && c2 == 'e'))
        return 3;
    }
  }
  /* 2. [^\r\n L N]? L+ */
  size_t i = 0;
  if (cl != CL_LETTER && cl != CL_DIGIT && !is_newline(c) && n >= 2 &&
      byte_class(s[1]) == CL_LETTER)
    i = 1;
  if (byte_class(s[i]) == CL_LETTER) {
    while (i < n && byte_class(s[i]) == CL_LETTER) i++;
    return i;
  }
  /* 3. N{1,3} */
  if (cl == CL_DIGIT) {
    i = 1;
    while (i < n && i < 3 && byte_class(s[i]) == CL_DIGIT) i++;
    return i;
  }
  /* 4. " ?[^\s L N]+[\r\n]*" */
  i = c == ' ' && n >= 2 && byte_class(s[1]) == CL_OTHER ? 1 : 0;
  if (byte_class(s[i]) == CL_OTHER) {
    while (i < n && byte_class(s[i]) == CL_OTHER) i++;
    while (i < n && is_newline(s[i])) i++;
    return i;
  }
  /* c is whitespace from here on */
  size_t end = 1;
  while (end < n && byte_class(s[end]) == CL_SPACE) end++;
  /* 5. \s*[\r\n]: greedy, so up to the run's last newline */
  for (size_t k = end; k-- > 0;)
    if (is_newline(s[k])) return k + 1;
  /* 6. \s+(?!\S): the whole run at the end of the text, else all but its
   * last byte, which then prefixes the next word or punctuation */
  if (end == n) return n;
  if (end >= 2) return end - 1;
  /* 7. \s+ (a single whitespace byte before a non-space) */
  return 1;
}

/* ---- the merge table ------------------------------------------------------ */

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}

static size_t key_slot(uint64_t key, size_t mask) {
  uint64_t h = key * 0x9e3779b97f4a7c15ull;
  return (size_t)(h ^ (h >> 29)) & mask;
}

/* Rank map slots for max_merges merges: a power of two, at most half full. */
static size_t map_cap(int max_merges) {
  size_t cap = 16;
  while (cap < 2 * (size_t)max_merges) cap *= 2;
  return cap;
}

nb_bpe *nb_bpe_alloc(int max_merges) {
  if (max_merges < 0 || max_merges > NB_BPE_MAX_VOCAB - 256) return NULL;
  nb_bpe *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  size_t cap = map_cap(max_merges);
  t->max_merges = max_merges;
  t->tok_limit = NB_BPE_MAX_TOKEN_BYTES;
  t->merges = malloc(2 * ((size_t)max_merges + 1) * sizeof *t->merges);
  t->tok_off = malloc((256 + (size_t)max_merges + 1) * sizeof *t->tok_off);
  t->tok_cap = 1024;
  t->tok_bytes = malloc((size_t)t->tok_cap);
  t->map_key = calloc(cap, sizeof *t->map_key);
  t->map_rank = malloc(cap * sizeof *t->map_rank);
  t->map_mask = cap - 1;
  if (!t->merges || !t->tok_off || !t->tok_bytes || !t->map_key || !t->map_rank) {
    nb_bpe_free(t);
    return NULL;
  }
  for (int i = 0; i < 256; i++) {
    t->tok_bytes[i] = (char)i;
    t->tok_off[i] = i;
  }
  t->tok_off[256] = 256;
  return t;
}

int nb_bpe_reserve(nb_bpe *t, int max_merges) {
  if (max_merges <= t->max_merges) return 1;
  if (max_merges > NB_BPE_MAX_VOCAB - 256) return 0;
  int32_t *m = realloc(t->merges, 2 * ((size_t)max_merges + 1) * sizeof *m);
  if (!m) return 0;
  t->merges = m;
  int64_t *off = realloc(t->tok_off, (256 + (size_t)max_merges + 1) * sizeof *off);
  if (!off) return 0;
  t->tok_off = off;
  size_t cap = map_cap(max_merges);
  if (cap > t->map_mask + 1) {
    uint64_t *key = calloc(cap, sizeof *key);
    int32_t *rank = malloc(cap * sizeof *rank);
    if (!key || !rank) {
      free(key);
      free(rank);
      return 0;
    }
    free(t->map_key);
    free(t->map_rank);
    t->map_key = key;
    t->map_rank = rank;
    t->map_mask = cap - 1;
    for (int r = 0; r < t->n_merges; r++) {
      uint64_t k = pair_key(t->merges[2 * r], t->merges[2 * r + 1]);
      size_t s = key_slot(k, t->map_mask);
      while (t->map_key[s]) s = (s + 1) & t->map_mask;
      t->map_key[s] = k;
      t->map_rank[s] = r;
    }
  }
  t->max_merges = max_merges;
  return 1;
}

void nb_bpe_free(nb_bpe *t) {
  if (!t) return;
  for (int k = 0; k < t->n_special; k++) free(t->special[k]);
  free(t->special);
  free(t->special_len);
  free(t->merges);
  free(t->tok_off);
  free(t->tok_bytes);
  free(t->map_key);
  free(t->map_rank);
  free(t);
}

int32_t nb_bpe_rank(const nb_bpe *t, int32_t a, int32_t b) {
  uint64_t key = pair_key(a, b);
  for (size_t s = key_slot(key, t->map_mask);; s = (s + 1) & t->map_mask) {
    if (t->map_key[s] == key) return t->map_rank[s];
    if (!t->map_key[s]) return -1;
  }
}

nb_bpe_push nb_bpe_push_merge(nb_bpe *t, int32_t a, int32_t b, int *dup_rank) {
  if (t->n_special || t->n_merges >= t->max_merges) return NB_BPE_PUSH_FULL;
  int32_t id = 256 + t->n_merges;
  if (a < 0 || b < 0 || a >= id || b >= id) return NB_BPE_PUSH_RANGE;
  uint64_t key = pair_key(a, b);
  size_t s = key_slot(key, t->map_mask);
  for (; t->map_key[s]; s = (s + 1) & t->map_mask) {
    if (t->map_key[s] == key) {
      if (dup_rank) *dup_rank = t->map_rank[s];
      return NB_BPE_PUSH_DUP;
    }
  }
  int64_t la = t->tok_off[a + 1] - t->tok_off[a], lb = t->tok_off[b + 1] - t->tok_off[b];
  int64_t end = t->tok_off[id] + la + lb;
  if (end > t->tok_limit) return NB_BPE_PUSH_TOO_LONG;
  if (end > t->tok_cap) {
    int64_t cap = t->tok_cap;
    while (cap < end) cap *= 2;
    if (cap > t->tok_limit) cap = t->tok_limit;
    char *nb = realloc(t->tok_bytes, (size_t)cap);
    if (!nb) return NB_BPE_PUSH_OOM;
    t->tok_bytes = nb;
    t->tok_cap = cap;
  }
  /* the new token lies past every existing one: no overlap */
  memcpy(t->tok_bytes + t->tok_off[id], t->tok_bytes + t->tok_off[a], (size_t)la);
  memcpy(t->tok_bytes + t->tok_off[id] + la, t->tok_bytes + t->tok_off[b], (size_t)lb);
  t->tok_off[id + 1] = end;
  t->map_key[s] = key;
  t->map_rank[s] = t->n_merges;
  t->merges[2 * t->n_merges] = a;
  t->merges[2 * t->n_merges + 1] = b;
  t->n_merges++;
  return NB_BPE_PUSHED;
}

int nb_bpe_vocab_size(const nb_bpe *t) { return t ? 256 + t->n_merges + t->n_special : 0; }
int nb_bpe_num_merges(const nb_bpe *t) { return t ? t->n_merges : 0; }
const int32_t *nb_bpe_merges(const nb_bpe *t) { return t ? t->merges : NULL; }

/* ---- special tokens ------------------------------------------------------- */

const char *nb_bpe_special_problem(const nb_bpe *t, const char *name, size_t len) {
  if (!len) return "is empty";
  if (len > NB_BPE_MAX_SPECIAL_LEN) return "is longer than NB_BPE_MAX_SPECIAL_LEN (128) bytes";
  /* printable and space-free, so the vocabulary file can hold it as a line
   * and the command line can take it as one argument */
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
      return "has a byte outside printable ASCII 0x21..0x7e (no spaces or control bytes)";
  for (int k = 0; k < t->n_special; k++)
    if (t->special_len[k] == len && !memcmp(t->special[k], name, len))
      return "is already registered";
  if (t->n_special >= NB_BPE_MAX_SPECIALS)
    return "does not fit: NB_BPE_MAX_SPECIALS (1024) are registered";
  if (nb_bpe_vocab_size(t) >= NB_BPE_MAX_VOCAB) return "does not fit: the vocabulary is full";
  return NULL;
}

nb_status nb_bpe_add_special(nb_bpe *t, const char *name, int32_t *id) {
  if (!t || !name) return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_add_special: t and name needed");
  size_t len = strnlen(name, NB_BPE_MAX_SPECIAL_LEN + 1);
  const char *why = nb_bpe_special_problem(t, name, len);
  if (why)
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_add_special: special token '%.*s' %s",
                    (int)(len > 64 ? 64 : len), name, why);
  char **names = realloc(t->special, ((size_t)t->n_special + 1) * sizeof *names);
  if (names) t->special = names;
  size_t *lens = realloc(t->special_len, ((size_t)t->n_special + 1) * sizeof *lens);
  if (lens) t->special_len = lens;
  char *copy = malloc(len + 1);
  if (!names || !lens || !copy) {
    free(copy);
    return nb_error(NB_ERR_OOM, "nb_bpe_add_special: out of memory");
  }
  memcpy(copy, name, len + 1);
  t->special[t->n_special] = copy;
  t->special_len[t->n_special] = len;
  t->special_first[(unsigned char)name[0]] = 1;
  if (id) *id = nb_bpe_vocab_size(t);
  t->n_special++;
  return NB_OK;
}

nb_status nb_bpe_special_id(const nb_bpe *t, const char *name, int32_t *id) {
  if (!t || !name || !id)
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_special_id: t, name and id needed");
  for (int k = 0; k < t->n_special; k++) {
    if (!strcmp(t->special[k], name)) {
      *id = 256 + t->n_merges + k;
      return NB_OK;
    }
  }
  char list[256] = "none";
  size_t used = 0;
  for (int k = 0; k < t->n_special && used + 8 < sizeof list; k++) {
    int w = snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", t->special[k]);
    used += w > 0 ? (size_t)w : 0;
  }
  if (used >= sizeof list) memcpy(list + sizeof list - 4, "...", 4);
  return nb_error(NB_ERR_INVALID_ARG, "unknown special token '%.64s' (registered: %s)", name, list);
}

/* ---- encoding ------------------------------------------------------------- */

/* Work space of one encode call, sized for its longest chunk. */
typedef struct enc_buf {
  size_t cap;     /* chunk bytes the arrays hold */
  int32_t *tok;   /* token at each node, -1 once merged into its left */
  uint32_t *next; /* next live node (cap = none) */
  int64_t *prev;  /* previous live node (-1 = none) */
  uint64_t *heap; /* min-heap of rank << 32 | node: lowest rank, then leftmost */
  size_t heap_n;
} enc_buf;

static void enc_buf_free(enc_buf *b) {
  free(b->tok);
  free(b->next);
  free(b->prev);
  free(b->heap);
}

static int enc_buf_reserve(enc_buf *b, size_t len) {
  if (len <= b->cap) return 0;
  enc_buf_free(b);
  memset(b, 0, sizeof *b);
  b->tok = malloc(len * sizeof *b->tok);
  b->next = malloc(len * sizeof *b->next);
  b->prev = malloc(len * sizeof *b->prev);
  /* len - 1 pairs at the start, then each merge adds at most two */
  b->heap = malloc(3 * len * sizeof *b->heap);
  if (!b->tok || !b->next || !b->prev || !b->heap) return -1;
  b->cap = len;
  return 0;
}

static void heap_push(enc_buf *b, uint64_t v) {
  size_t i = b->heap_n++;
  while (i) {
    size_t p = (i - 1) / 2;
    if (b->heap[p] <= v) break;
    b->heap[i] = b->heap[p];
    i = p;
  }
  b->heap[i] = v;
}

static uint64_t heap_pop(enc_buf *b) {
  uint64_t top = b->heap[0], v = b->heap[--b->heap_n];
  size_t i = 0, n = b->heap_n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && b->heap[c + 1] < b->heap[c]) c++;
    if (v <= b->heap[c]) break;
    b->heap[i] = b->heap[c];
    i = c;
  }
  if (n) b->heap[i] = v;
  return top;
}

static void push_pair(const nb_bpe *t, enc_buf *b, uint32_t node) {
  uint32_t nx = b->next[node];
  int32_t r = nb_bpe_rank(t, b->tok[node], b->tok[nx]);
  if (r >= 0) heap_push(b, (uint64_t)r << 32 | node);
}

/* Applies merges to one chunk in rank order with a heap of adjacent pairs
 * (O(len log len)); a popped entry whose pair has since changed is stale and
 * skipped. Merging only ever makes ids of a higher rank, so pairs are taken
 * in the order minbpe's "merge every occurrence of the lowest-rank pair,
 * repeat" takes them. */
static void encode_chunk(const nb_bpe *t, const unsigned char *s, uint32_t len, enc_buf *b,
                         int32_t *out, size_t *k) {
  if (len == 1 || !t->n_merges) {
    for (uint32_t i = 0; i < len; i++) out[(*k)++] = s[i];
    return;
  }
  for (uint32_t i = 0; i < len; i++) {
    b->tok[i] = s[i];
    b->next[i] = i + 1;
    b->prev[i] = (int64_t)i - 1;
  }
  b->heap_n = 0;
  for (uint32_t i = 0; i + 1 < len; i++) push_pair(t, b, i);
  while (b->heap_n) {
    uint64_t top = heap_pop(b);
    int32_t r = (int32_t)(top >> 32);
    uint32_t i = (uint32_t)top, j = b->next[i];
    if (b->tok[i] < 0 || j >= len || nb_bpe_rank(t, b->tok[i], b->tok[j]) != r) continue;
    b->tok[i] = 256 + r;
    b->tok[j] = -1;
    b->next[i] = b->next[j];
    if (b->next[j] < len) b->prev[b->next[j]] = i;
    if (b->prev[i] >= 0) push_pair(t, b, (uint32_t)b->prev[i]);
    if (b->next[i] < len) push_pair(t, b, i);
  }
  for (uint32_t i = 0; i < len; i = b->next[i]) out[(*k)++] = b->tok[i];
}

static nb_status encode_ordinary(const nb_bpe *t, const char *text, size_t n, enc_buf *b,
                                 int32_t *ids, size_t *k) {
  size_t pos = 0;
  while (pos < n) {
    size_t len = nb_bpe_chunk_len(text + pos, n - pos);
    /* node indices are 32-bit; only one run of >4 GB of letters or spaces
     * gets here */
    if (len >= UINT32_MAX)
      return nb_error(NB_ERR_UNSUPPORTED,
                      "nb_bpe_encode: a chunk of %zu bytes at offset %zu (limit 4 GiB)", len, pos);
    if (enc_buf_reserve(b, len))
      return nb_error(NB_ERR_OOM, "nb_bpe_encode: out of memory for a chunk of %zu bytes", len);
    encode_chunk(t, (const unsigned char *)text + pos, (uint32_t)len, b, ids, k);
    pos += len;
  }
  return NB_OK;
}

/* Index of the longest special token at text[0..n), or -1. */
static int special_at(const nb_bpe *t, const char *text, size_t n) {
  int best = -1;
  if (!t->special_first[(unsigned char)text[0]]) return -1;
  for (int k = 0; k < t->n_special; k++) {
    size_t len = t->special_len[k];
    if (len <= n && !memcmp(t->special[k], text, len) && (best < 0 || len > t->special_len[best]))
      best = k;
  }
  return best;
}

nb_status nb_bpe_encode(const nb_bpe *t, const char *text, size_t n, int flags, int32_t *ids,
                        size_t *n_ids) {
  if (!t || !n_ids || (n && (!text || !ids)))
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_encode: tokenizer, text, ids and n_ids needed");
  if (flags & ~NB_BPE_ALLOW_SPECIAL)
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_encode: unknown flags 0x%x", (unsigned)flags);
  enc_buf b;
  memset(&b, 0, sizeof b);
  size_t k = 0, seg = 0;
  nb_status st = NB_OK;
  if ((flags & NB_BPE_ALLOW_SPECIAL) && t->n_special) {
    for (size_t pos = 0; pos < n && !st;) {
      int sp = special_at(t, text + pos, n - pos);
      if (sp < 0) {
        pos++;
        continue;
      }
      st = encode_ordinary(t, text + seg, pos - seg, &b, ids, &k);
      ids[k++] = 256 + t->n_merges + sp;
      pos += t->special_len[sp];
      seg = pos;
    }
  }
  if (!st) st = encode_ordinary(t, text + seg, n - seg, &b, ids, &k);
  enc_buf_free(&b);
  *n_ids = st ? 0 : k;
  return st;
}

/* ---- decoding ------------------------------------------------------------- */

nb_status nb_bpe_token(const nb_bpe *t, int32_t id, const char **bytes, size_t *len) {
  if (!t || !bytes || !len)
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_token: t, bytes and len needed");
  int32_t base = 256 + t->n_merges;
  if (id >= 0 && id < base) {
    *bytes = t->tok_bytes + t->tok_off[id];
    *len = (size_t)(t->tok_off[id + 1] - t->tok_off[id]);
  } else if (id >= base && id < base + t->n_special) {
    *bytes = t->special[id - base];
    *len = t->special_len[id - base];
  } else {
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_token: id %d is outside [0, %d)", (int)id,
                    nb_bpe_vocab_size(t));
  }
  return NB_OK;
}

nb_status nb_bpe_decode(const nb_bpe *t, const int32_t *ids, size_t n, char **text, size_t *len) {
  if (!t || !text || !len || (n && !ids))
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_decode: tokenizer, ids, text and len needed");
  *text = NULL;
  *len = 0;
  size_t total = 0;
  const char *p;
  size_t l;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= nb_bpe_vocab_size(t))
      return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_decode: id %d at position %zu is outside [0, %d)",
                      (int)ids[i], i, nb_bpe_vocab_size(t));
    nb_bpe_token(t, ids[i], &p, &l);
    total += l;
  }
  char *out = malloc(total + 1);
  if (!out) return nb_error(NB_ERR_OOM, "nb_bpe_decode: out of memory for %zu bytes", total);
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    nb_bpe_token(t, ids[i], &p, &l);
    memcpy(out + at, p, l);
    at += l;
  }
  out[at] = '\0';
  *text = out;
  *len = at;
  return NB_OK;
}
