/* BPE training with incremental pair counts (the approach of Hugging Face
 * tokenizers and SentencePiece): the text becomes its distinct chunks
 * ("words") with their frequencies; each pair keeps its count and a list of
 * the words it occurs in; a merge rewrites only those words and adjusts the
 * counts of the pairs around each occurrence; a max-heap with lazy deletion
 * picks the next pair. A merge costs the occurrences it touches, not a pass
 * over the text. */
#include <stdlib.h>
#include <string.h>

#include "bpe_internal.h"

typedef struct word {
  size_t off;    /* first occurrence in the text */
  uint32_t nb;   /* bytes */
  uint32_t len;  /* current tokens (shrinks as merges apply) */
  int64_t freq;  /* occurrences in the text */
  int32_t *toks; /* into the pool */
  int32_t stamp; /* last merge that rewrote it, so a word listed twice is done once */
} word;

typedef struct wlist {
  int32_t *w; /* words the pair occurs (or once occurred) in; may repeat */
  int32_t n, cap;
} wlist;

typedef struct heap_ent {
  int64_t count; /* the pair's count when pushed; stale once it differs */
  int32_t pair;
} heap_ent;

typedef struct trainer {
  const char *text;
  word *words;
  size_t n_words, words_cap;
  uint32_t *wmap; /* chunk hash table: word index + 1, 0 = empty */
  size_t wmap_mask;
  int32_t *pool;
  /* pairs */
  int32_t *pa, *pb;
  int64_t *cnt;
  wlist *where;
  unsigned char *dirty;
  size_t n_pairs, pairs_cap;
  uint64_t *pmap_key; /* (a << 32 | b) + 1, 0 = empty */
  int32_t *pmap_val;
  size_t pmap_mask;
  int32_t *dirty_list;
  size_t n_dirty;
  heap_ent *heap;
  size_t heap_n, heap_cap;
  int oom;
} trainer;

static void *grow(void *p, size_t *cap, size_t need, size_t elem, int *oom) {
  if (need <= *cap) return p;
  size_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *q = realloc(p, c * elem);
  if (!q) {
    *oom = 1;
    return NULL;
  }
  *cap = c;
  return q;
}

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
  return h ^ (h >> 31);
}

static int wmap_rehash(trainer *tr, size_t cap) {
  uint32_t *m = calloc(cap, sizeof *m);
  if (!m) return -1;
  for (size_t i = 0; i < tr->n_words; i++) {
    const word *w = &tr->words[i];
    size_t s = hash_bytes((const unsigned char *)tr->text + w->off, w->nb) & (cap - 1);
    while (m[s]) s = (s + 1) & (cap - 1);
    m[s] = (uint32_t)i + 1;
  }
  free(tr->wmap);
  tr->wmap = m;
  tr->wmap_mask = cap - 1;
  return 0;
}

/* Counts the chunk text[off..off+nb) as one more occurrence of its word. */
static int add_chunk(trainer *tr, size_t off, size_t nb) {
  if ((tr->n_words + 1) * 2 > tr->wmap_mask + 1 && wmap_rehash(tr, (tr->wmap_mask + 1) * 2))
    return -1;
  const char *s = tr->text + off;
  size_t slot = hash_bytes((const unsigned char *)s, nb) & tr->wmap_mask;
  for (; tr->wmap[slot]; slot = (slot + 1) & tr->wmap_mask) {
    word *w = &tr->words[tr->wmap[slot] - 1];
    if (w->nb == nb && !memcmp(tr->text + w->off, s, nb)) {
      w->freq++;
      return 0;
    }
  }
  word *ws = grow(tr->words, &tr->words_cap, tr->n_words + 1, sizeof *ws, &tr->oom);
  if (!ws) return -1;
  tr->words = ws;
  word *w = &ws[tr->n_words];
  memset(w, 0, sizeof *w);
  w->off = off;
  w->nb = w->len = (uint32_t)nb;
  w->freq = 1;
  w->stamp = -1;
  tr->wmap[slot] = (uint32_t)++tr->n_words;
  return 0;
}

static uint64_t pkey(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}

static size_t pslot(uint64_t key, size_t mask) {
  uint64_t h = key * 0x9e3779b97f4a7c15ull;
  return (size_t)(h ^ (h >> 29)) & mask;
}

static int pmap_rehash(trainer *tr, size_t cap) {
  uint64_t *k = calloc(cap, sizeof *k);
  int32_t *v = malloc(cap * sizeof *v);
  if (!k || !v) {
    free(k);
    free(v);
    return -1;
  }
  for (size_t p = 0; p < tr->n_pairs; p++) {
    uint64_t key = pkey(tr->pa[p], tr->pb[p]);
    size_t s = pslot(key, cap - 1);
    while (k[s]) s = (s + 1) & (cap - 1);
    k[s] = key;
    v[s] = (int32_t)p;
  }
  free(tr->pmap_key);
  free(tr->pmap_val);
  tr->pmap_key = k;
  tr->pmap_val = v;
  tr->pmap_mask = cap - 1;
  return 0;
}

/* The index of pair (a, b), created with count 0 when new; -1 on OOM. */
static int32_t pair_get(trainer *tr, int32_t a, int32_t b) {
  uint64_t key = pkey(a, b);
  size_t s = pslot(key, tr->pmap_mask);
  for (; tr->pmap_key[s]; s = (s + 1) & tr->pmap_mask)
    if (tr->pmap_key[s] == key) return tr->pmap_val[s];
  size_t p = tr->n_pairs;
  if (p + 1 > tr->pairs_cap) {
    size_t cap = tr->pairs_cap ? 2 * tr->pairs_cap : 1024;
    void *q;
    /* each array keeps its old block if a later one fails: trainer_free
     * then frees what is there */
#define GROW(arr) ((q = realloc((arr), cap * sizeof *(arr))) ? ((arr) = q, 0) : -1)
    if (GROW(tr->pa) || GROW(tr->pb) || GROW(tr->cnt) || GROW(tr->where) || GROW(tr->dirty) ||
        GROW(tr->dirty_list)) {
      tr->oom = 1;
      return -1;
    }
#undef GROW
    tr->pairs_cap = cap;
  }
  tr->pa[p] = a;
  tr->pb[p] = b;
  tr->cnt[p] = 0;
  memset(&tr->where[p], 0, sizeof tr->where[p]);
  tr->dirty[p] = 0;
  tr->pmap_key[s] = key;
  tr->pmap_val[s] = (int32_t)p;
  tr->n_pairs++;
  if (tr->n_pairs * 2 > tr->pmap_mask + 1 && pmap_rehash(tr, (tr->pmap_mask + 1) * 2)) return -1;
  return (int32_t)p;
}

/* count(a, b) += delta; a word gaining the pair is listed for it. */
static int pair_add(trainer *tr, int32_t a, int32_t b, int64_t delta, int32_t w) {
  int32_t p = pair_get(tr, a, b);
  if (p < 0) return -1;
  tr->cnt[p] += delta;
  if (!tr->dirty[p]) {
    tr->dirty[p] = 1;
    tr->dirty_list[tr->n_dirty++] = p; /* as long as the pair table */
  }
  wlist *l = &tr->where[p];
  if (delta > 0 && (!l->n || l->w[l->n - 1] != w)) {
    size_t cap = (size_t)l->cap;
    int32_t *nw = grow(l->w, &cap, (size_t)l->n + 1, sizeof *nw, &tr->oom);
    if (!nw) return -1;
    l->w = nw;
    l->cap = (int32_t)cap;
    l->w[l->n++] = w;
  }
  return 0;
}

/* Max-heap order: larger count first; equal counts, smaller (a, b) first. */
static int heap_before(const trainer *tr, heap_ent x, heap_ent y) {
  if (x.count != y.count) return x.count > y.count;
  if (tr->pa[x.pair] != tr->pa[y.pair]) return tr->pa[x.pair] < tr->pa[y.pair];
  return tr->pb[x.pair] < tr->pb[y.pair];
}

static int heap_push(trainer *tr, int32_t p) {
  heap_ent *h = grow(tr->heap, &tr->heap_cap, tr->heap_n + 1, sizeof *h, &tr->oom);
  if (!h) return -1;
  tr->heap = h;
  heap_ent e = {tr->cnt[p], p};
  size_t i = tr->heap_n++;
  while (i && heap_before(tr, e, h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = e;
  return 0;
}

static heap_ent heap_pop(trainer *tr) {
  heap_ent *h = tr->heap, top = h[0], e = h[--tr->heap_n];
  size_t i = 0, n = tr->heap_n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && heap_before(tr, h[c + 1], h[c])) c++;
    if (!heap_before(tr, h[c], e)) break;
    h[i] = h[c];
    i = c;
  }
  if (n) h[i] = e;
  return top;
}

/* Replaces every (a, b) in word wi, left to right, by c and adjusts the
 * counts of the pairs that appear and disappear around each occurrence. */
static int merge_word(trainer *tr, int32_t wi, int32_t a, int32_t b, int32_t c) {
  word *w = &tr->words[wi];
  int32_t *t = w->toks;
  int64_t f = w->freq;
  uint32_t i = 0, j = 0, n = w->len;
  while (i < n) {
    if (i + 1 < n && t[i] == a && t[i + 1] == b) {
      /* t[j - 1] is the already rewritten left neighbour, possibly a c */
      if (j > 0 && (pair_add(tr, t[j - 1], a, -f, wi) || pair_add(tr, t[j - 1], c, f, wi)))
        return -1;
      if (pair_add(tr, a, b, -f, wi)) return -1;
      if (i + 2 < n && (pair_add(tr, b, t[i + 2], -f, wi) || pair_add(tr, c, t[i + 2], f, wi)))
        return -1;
      t[j++] = c;
      i += 2;
    } else {
      t[j++] = t[i++];
    }
  }
  w->len = j;
  return 0;
}

static void trainer_free(trainer *tr) {
  free(tr->words);
  free(tr->wmap);
  free(tr->pool);
  for (size_t p = 0; p < tr->n_pairs; p++) free(tr->where[p].w);
  free(tr->pa);
  free(tr->pb);
  free(tr->cnt);
  free(tr->where);
  free(tr->dirty);
  free(tr->pmap_key);
  free(tr->pmap_val);
  free(tr->dirty_list);
  free(tr->heap);
}

static nb_status oom(trainer *tr, nb_bpe *t) {
  trainer_free(tr);
  nb_bpe_free(t);
  return nb_error(NB_ERR_OOM, "nb_bpe_train: out of memory");
}

nb_status nb_bpe_train(const char *text, size_t n, int vocab_size, nb_bpe **out) {
  if (!out || (n && !text))
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_train: text and out are needed");
  *out = NULL;
  if (vocab_size < 256 || vocab_size > NB_BPE_MAX_VOCAB)
    return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_train: vocabulary size %d is outside [256, %d]",
                    vocab_size, NB_BPE_MAX_VOCAB);
  trainer tr;
  memset(&tr, 0, sizeof tr);
  tr.text = text;
  nb_bpe *t = nb_bpe_alloc(vocab_size - 256);
  if (!t || wmap_rehash(&tr, 1024) || pmap_rehash(&tr, 1024)) return oom(&tr, t);

  /* distinct chunks and their counts */
  size_t total = 0;
  for (size_t pos = 0; pos < n;) {
    size_t len = nb_bpe_chunk_len(text + pos, n - pos);
    if (len > INT32_MAX) {
      trainer_free(&tr);
      nb_bpe_free(t);
      return nb_error(NB_ERR_UNSUPPORTED,
                      "nb_bpe_train: a chunk of %zu bytes at offset %zu (limit 2 GiB)", len, pos);
    }
    if (add_chunk(&tr, pos, len)) return oom(&tr, t);
    pos += len;
  }
  for (size_t i = 0; i < tr.n_words; i++) total += tr.words[i].nb;
  tr.pool = malloc((total ? total : 1) * sizeof *tr.pool);
  if (!tr.pool) return oom(&tr, t);
  int32_t *at = tr.pool;
  for (size_t i = 0; i < tr.n_words; i++) {
    word *w = &tr.words[i];
    w->toks = at;
    for (uint32_t k = 0; k < w->nb; k++) at[k] = (unsigned char)text[w->off + k];
    at += w->nb;
  }

  /* initial counts, then every pair into the heap */
  for (size_t i = 0; i < tr.n_words; i++) {
    const word *w = &tr.words[i];
    for (uint32_t k = 0; k + 1 < w->len; k++)
      if (pair_add(&tr, w->toks[k], w->toks[k + 1], w->freq, (int32_t)i)) return oom(&tr, t);
  }
  for (size_t k = 0; k < tr.n_dirty; k++) tr.dirty[tr.dirty_list[k]] = 0;
  tr.n_dirty = 0;
  for (size_t p = 0; p < tr.n_pairs; p++)
    if (heap_push(&tr, (int32_t)p)) return oom(&tr, t);

  for (int r = 0; r < vocab_size - 256; r++) {
    int32_t p = -1;
    while (tr.heap_n) {
      heap_ent e = heap_pop(&tr);
      if (e.count == tr.cnt[e.pair] && e.count > 0) {
        p = e.pair;
        break;
      }
    }
    if (p < 0) break; /* no pair left: every chunk is one token */
    int32_t a = tr.pa[p], b = tr.pb[p], c = 256 + r;
    nb_bpe_push got = nb_bpe_push_merge(t, a, b, NULL);
    if (got == NB_BPE_PUSH_OOM) return oom(&tr, t);
    if (got == NB_BPE_PUSH_TOO_LONG) {
      trainer_free(&tr);
      nb_bpe_free(t);
      return nb_error(NB_ERR_UNSUPPORTED,
                      "nb_bpe_train: after %d merges the tokens would total more than %lld "
                      "bytes; ask for a smaller vocabulary",
                      r, (long long)NB_BPE_MAX_TOKEN_BYTES);
    }
    if (got != NB_BPE_PUSHED) {
      trainer_free(&tr);
      nb_bpe_free(t);
      return nb_error(NB_ERR_INTERNAL, "nb_bpe_train: merge %d (%d, %d) rejected (%d)", r, (int)a,
                      (int)b, (int)got);
    }
    /* p's list never grows during its own merge (new pairs all hold c),
     * so it can be walked while other lists and the pair table grow */
    int32_t *ws = tr.where[p].w, nws = tr.where[p].n;
    for (int32_t k = 0; k < nws; k++) {
      word *w = &tr.words[ws[k]];
      if (w->stamp == r) continue;
      w->stamp = r;
      if (merge_word(&tr, ws[k], a, b, c)) return oom(&tr, t);
    }
    if (tr.cnt[p] != 0) {
      long long left = (long long)tr.cnt[p];
      trainer_free(&tr);
      nb_bpe_free(t);
      return nb_error(NB_ERR_INTERNAL, "nb_bpe_train: merge %d left %lld pairs (%d, %d)", r, left,
                      (int)a, (int)b);
    }
    /* (a, b) cannot form again: a and b are never created anew */
    free(tr.where[p].w);
    memset(&tr.where[p], 0, sizeof tr.where[p]);
    for (size_t k = 0; k < tr.n_dirty; k++) {
      int32_t q = tr.dirty_list[k];
      tr.dirty[q] = 0;
      if (tr.cnt[q] > 0 && heap_push(&tr, q)) return oom(&tr, t);
    }
    tr.n_dirty = 0;
  }
  trainer_free(&tr);
  *out = t;
  return NB_OK;
}
