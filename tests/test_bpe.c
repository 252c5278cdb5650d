/* Byte-level BPE tokenizer: the pre-split rule on hand-split strings, merges
 * and encodings worked out by hand, agreement with the minbpe-style Python
 * reference (tests/ref/bpe_ref.py -> tests/ref/bpe.txt: merges, chunks and
 * ids), the incremental trainer and heap encoder against naive ones written
 * here on random texts, exact round trips of random bytes, special tokens,
 * vocabulary files (round trip, every kind of bad file, every truncation),
 * and Tiny Shakespeare (skipped when the file is absent). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, fork, setrlimit */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

/* ---- pre-split ------------------------------------------------------------ */

/* Splits s (n bytes) with nb_bpe_chunk_len and checks the chunks are `want`
 * (a NULL-terminated list; chunk lengths from strlen, so no NULs there). */
static void check_split(const char *s, size_t n, const char *const *want) {
  size_t pos = 0;
  int i = 0;
  while (pos < n) {
    size_t len = nb_bpe_chunk_len(s + pos, n - pos);
    assert_true(len >= 1 && len <= n - pos);
    if (!want[i]) fail_msg("extra chunk at offset %zu of \"%s\"", pos, s);
    if (len != strlen(want[i]) || memcmp(s + pos, want[i], len))
      fail_msg("chunk %d of \"%s\": got \"%.*s\", want \"%s\"", i, s, (int)len, s + pos, want[i]);
    pos += len;
    i++;
  }
  if (want[i]) fail_msg("missing chunk \"%s\" of \"%s\"", want[i], s);
}

#define SPLIT(s, ...)                                                                              \
  do {                                                                                             \
    const char *const w_[] = {__VA_ARGS__, NULL};                                                  \
    check_split(s, sizeof(s) - 1, w_);                                                             \
  } while (0)

static void test_split(void **state) {
  (void)state;
  SPLIT("Hello world's 12345!!\n\n  ok  ", "Hello", " world", "'s", " ", "123", "45", "!!\n\n", " ",
        " ok", "  ");
  SPLIT("a  b", "a", " ", " b");               /* the last space joins the word */
  SPLIT(" \tx", " ", "\tx");                   /* any non-newline space prefixes */
  SPLIT("don'T'LL", "don", "'T", "'LL");       /* contractions, any case */
  SPLIT("'re'x 'Ve", "'re", "'x", " '", "Ve"); /* "'x", " '": punctuation (+ letters) */
  SPLIT("...\r\n\r\nx", "...\r\n\r\n", "x");   /* newlines stick to punctuation */
  SPLIT("  \n  y", "  \n", " ", " y");         /* whitespace up to the last newline */
  SPLIT("x\r\n\ty", "x", "\r\n", "\ty");
  SPLIT("  !!", " ", " !!");
  SPLIT("12\n", "12", "\n");
  SPLIT("\xff\xfe caf\xc3\xa9!", "\xff\xfe", " caf\xc3\xa9", "!"); /* bytes >= 0x80: letters */
  /* a NUL is "other", so it prefixes the letters after it */
  const char nul[] = "\0\xff"
                     "ab";
  assert_int_equal(nb_bpe_chunk_len(nul, 4), 4);
  assert_int_equal(nb_bpe_chunk_len(nul, 0), 0);
  assert_int_equal(nb_bpe_chunk_len(NULL, 3), 0);
}

/* ---- hand-computed training and encoding ----------------------------------- */

static void check_merges(const nb_bpe *t, const int32_t *want, int n) {
  assert_int_equal(nb_bpe_num_merges(t), n);
  const int32_t *m = nb_bpe_merges(t);
  for (int i = 0; i < 2 * n; i++)
    if (m[i] != want[i])
      fail_msg("merge %d: got (%d, %d), want (%d, %d)", i / 2, m[i & ~1], m[i | 1], want[i & ~1],
               want[i | 1]);
}

static void check_encode(const nb_bpe *t, const char *s, size_t n, int flags, const int32_t *want,
                         size_t n_want) {
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  size_t n_ids = 99;
  TU_OK(nb_bpe_encode(t, s, n, flags, ids, &n_ids));
  assert_int_equal(n_ids, n_want);
  for (size_t i = 0; i < n_ids; i++)
    if (ids[i] != want[i]) fail_msg("id %zu: got %d, want %d", i, ids[i], want[i]);
  char *back;
  size_t len;
  TU_OK(nb_bpe_decode(t, ids, n_ids, &back, &len));
  assert_int_equal(len, n);
  assert_memory_equal(back, s, n);
  free(back);
  free(ids);
}

static void test_train_small(void **state) {
  (void)state;
  nb_bpe *t;
  /* One chunk. Counts: aa 4, ab 2 -> (a,a)=256: [256 a b d 256 a b a c];
   * then (256,a) and (a,b) tie at 2: the lower pair (a,b)=257 wins (minbpe
   * would take (256,a), seen first); (256,257) 2 = 258: [258 d 258 a c];
   * all pairs 1 from here: (a,c)=259, (d,258)=260, (258,260)=261,
   * (261,259)=262; then a single token is left and training stops. */
  TU_OK(nb_bpe_train("aaabdaaabac", 11, 270, &t));
  const int32_t want[] = {97, 97, 97, 98, 256, 257, 97, 99, 100, 258, 258, 260, 261, 259};
  check_merges(t, want, 7);
  assert_int_equal(nb_bpe_vocab_size(t), 263);
  check_encode(t, "aaabdaaabac", 11, 0, (const int32_t[]){262}, 1);
  /* "aaaa": (a,a) left to right twice; (256,256) is no merge */
  check_encode(t, "aaaa", 4, 0, (const int32_t[]){256, 256}, 2);
  /* "abac": (a,b) rank 1 first, then (a,c) rank 3 */
  check_encode(t, "abac", 4, 0, (const int32_t[]){257, 259}, 2);
  check_encode(t, "", 0, 0, NULL, 0);
  const char *bytes;
  size_t len;
  TU_OK(nb_bpe_token(t, 262, &bytes, &len));
  assert_int_equal(len, 11);
  assert_memory_equal(bytes, "aaabdaaabac", 11);
  nb_bpe_free(t);

  /* chunks "ab", " ab", " ab": merges never cross them, so no (b, ' ') */
  TU_OK(nb_bpe_train("ab ab ab", 8, 300, &t));
  check_merges(t, (const int32_t[]){97, 98, 32, 256}, 2);
  check_encode(t, "ab ab ab", 8, 0, (const int32_t[]){256, 257, 257}, 3);
  check_encode(t, "abab", 4, 0, (const int32_t[]){256, 256}, 2);
  nb_bpe_free(t);

  /* 256: bytes only; text without pairs: no merges */
  TU_OK(nb_bpe_train("hello", 5, 256, &t));
  assert_int_equal(nb_bpe_num_merges(t), 0);
  check_encode(t, "hi", 2, 0, (const int32_t[]){'h', 'i'}, 2);
  nb_bpe_free(t);
  TU_OK(nb_bpe_train("a b c", 5, 1000, &t));
  assert_int_equal(nb_bpe_num_merges(t), 2); /* (' ', b) and (' ', c) */
  nb_bpe_free(t);
  TU_OK(nb_bpe_train(NULL, 0, 300, &t));
  assert_int_equal(nb_bpe_vocab_size(t), 256);
  nb_bpe_free(t);

  assert_int_equal(nb_bpe_train("ab", 2, 255, &t), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "255"));
  assert_int_equal(nb_bpe_train("ab", 2, NB_BPE_MAX_VOCAB + 1, &t), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_bpe_train(NULL, 2, 300, &t), NB_ERR_INVALID_ARG);
}

/* ---- the Python reference --------------------------------------------------- */

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

/* Parses "KEY HEX" into a malloc'ed buffer. */
static char *unhex(const char *line, const char *key, size_t *n) {
  size_t kl = strlen(key);
  assert_memory_equal(line, key, kl);
  const char *h = line + kl + 1;
  size_t len = strcspn(h, "\n") / 2;
  char *out = malloc(len + 1);
  for (size_t i = 0; i < len; i++) out[i] = (char)(hexval(h[2 * i]) << 4 | hexval(h[2 * i + 1]));
  *n = len;
  return out;
}

/* Parses "KEY COUNT v1 v2 ..." into a malloc'ed array. */
static int32_t *parse_ints(const char *line, const char *key, size_t *n) {
  size_t kl = strlen(key);
  assert_memory_equal(line, key, kl);
  char *end;
  long count = strtol(line + kl, &end, 10);
  int32_t *v = malloc(((size_t)count + 1) * sizeof *v);
  for (long i = 0; i < count; i++) v[i] = (int32_t)strtol(end, &end, 10);
  *n = (size_t)count;
  return v;
}

static const char *next_line(const char *s) {
  const char *nl = strchr(s, '\n');
  assert_non_null(nl);
  return nl + 1;
}

static void test_python_reference(void **state) {
  (void)state;
  char path[4096], *file;
  size_t file_n;
  snprintf(path, sizeof path, "%s/bpe.txt", NB_TEST_REF_DIR);
  TU_OK(nb_text_read_file(path, &file, &file_n));
  const char *line = next_line(file); /* comment */
  size_t text_n, n_chunks, n;
  char *text = unhex(line, "text", &text_n);
  line = next_line(line);
  int32_t *chunks = parse_ints(line, "chunks", &n_chunks);
  line = next_line(line);
  int vocab = atoi(line + strlen("vocab "));
  line = next_line(line);
  int n_merges = atoi(line + strlen("merges "));
  int32_t *merges = malloc(2 * (size_t)n_merges * sizeof *merges);
  for (int i = 0; i < n_merges; i++) {
    line = next_line(line);
    char *end;
    merges[2 * i] = (int32_t)strtol(line, &end, 10);
    merges[2 * i + 1] = (int32_t)strtol(end, NULL, 10);
  }
  line = next_line(line);
  assert_true(text_n > 2000 && n_merges == vocab - 256);

  /* the same chunks as Python's re pattern */
  size_t pos = 0;
  for (size_t i = 0; i < n_chunks; i++) {
    size_t len = nb_bpe_chunk_len(text + pos, text_n - pos);
    if (len != (size_t)chunks[i])
      fail_msg("chunk %zu at %zu: %zu bytes, want %d", i, pos, len, chunks[i]);
    pos += len;
  }
  assert_int_equal(pos, text_n);

  nb_bpe *t;
  TU_OK(nb_bpe_train(text, text_n, vocab, &t));
  check_merges(t, merges, n_merges);
  int probes = 0;
  while (*line) {
    char *probe = unhex(line, "encode", &n);
    line = next_line(line);
    size_t n_want;
    int32_t *want = parse_ints(line, "ids", &n_want);
    line = next_line(line);
    check_encode(t, probe, n, 0, want, n_want);
    free(probe);
    free(want);
    probes++;
  }
  assert_int_equal(probes, 5);
  nb_bpe_free(t);
  free(merges);
  free(chunks);
  free(text);
  free(file);
}

/* ---- naive trainer and encoder ---------------------------------------------- */

/* A text's chunks as arrays of ids, split with nb_bpe_chunk_len. */
typedef struct naive {
  int32_t *ids;  /* all chunks back to back */
  size_t *start; /* chunk c is ids[start[c] .. start[c] + len[c]) */
  size_t *len;
  size_t n;
} naive;

static naive naive_split(const char *s, size_t n) {
  naive v = {malloc((n + 1) * sizeof(int32_t)), malloc((n + 1) * sizeof(size_t)),
             malloc((n + 1) * sizeof(size_t)), 0};
  for (size_t pos = 0; pos < n;) {
    size_t len = nb_bpe_chunk_len(s + pos, n - pos);
    v.start[v.n] = pos;
    v.len[v.n++] = len;
    for (size_t i = 0; i < len; i++) v.ids[pos + i] = (unsigned char)s[pos + i];
    pos += len;
  }
  return v;
}

static void naive_free(naive *v) {
  free(v->ids);
  free(v->start);
  free(v->len);
}

static void naive_merge(naive *v, size_t c, int32_t a, int32_t b, int32_t id) {
  int32_t *t = v->ids + v->start[c];
  size_t j = 0;
  for (size_t i = 0; i < v->len[c]; i++) {
    if (i + 1 < v->len[c] && t[i] == a && t[i + 1] == b) {
      t[j++] = id;
      i++;
    } else {
      t[j++] = t[i];
    }
  }
  v->len[c] = j;
}

/* minbpe's loop: recount every pair, take the best, rewrite every chunk.
 * Ids stay below 512 here, so a dense count table does. */
static int naive_train(const char *s, size_t n, int vocab, int32_t *merges) {
  naive v = naive_split(s, n);
  int64_t *count = malloc(512 * 512 * sizeof *count);
  int r = 0;
  for (; r < vocab - 256; r++) {
    memset(count, 0, 512 * 512 * sizeof *count);
    for (size_t c = 0; c < v.n; c++)
      for (size_t i = 0; i + 1 < v.len[c]; i++)
        count[v.ids[v.start[c] + i] * 512 + v.ids[v.start[c] + i + 1]]++;
    int best = -1;
    for (int p = 0; p < 512 * 512; p++)
      if (count[p] && (best < 0 || count[p] > count[best])) best = p; /* ties: lowest pair */
    if (best < 0) break;
    merges[2 * r] = best / 512;
    merges[2 * r + 1] = best % 512;
    for (size_t c = 0; c < v.n; c++) naive_merge(&v, c, best / 512, best % 512, 256 + r);
  }
  free(count);
  naive_free(&v);
  return r;
}

/* minbpe's encoder: merge the chunk's lowest-rank pair everywhere, repeat. */
static size_t naive_encode(const nb_bpe *t, const char *s, size_t n, int32_t *out) {
  naive v = naive_split(s, n);
  const int32_t *m = nb_bpe_merges(t);
  int nm = nb_bpe_num_merges(t);
  size_t k = 0;
  for (size_t c = 0; c < v.n; c++) {
    for (;;) {
      int best = -1;
      const int32_t *ids = v.ids + v.start[c];
      for (size_t i = 0; i + 1 < v.len[c]; i++)
        for (int r = 0; r < nm && (best < 0 || r < best); r++)
          if (m[2 * r] == ids[i] && m[2 * r + 1] == ids[i + 1]) best = r;
      if (best < 0) break;
      naive_merge(&v, c, m[2 * best], m[2 * best + 1], 256 + best);
    }
    for (size_t i = 0; i < v.len[c]; i++) out[k++] = v.ids[v.start[c] + i];
  }
  naive_free(&v);
  return k;
}

/* Random text over a small alphabet: many repeats, overlapping runs
 * ("aaaa"), ties and chunk boundaries. */
static void random_text(nb_rng *rng, char *s, size_t n, const char *alphabet) {
  size_t na = strlen(alphabet);
  for (size_t i = 0; i < n; i++) s[i] = alphabet[nb_rng_next(rng) % na];
}

static void test_against_naive(void **state) {
  (void)state;
  nb_rng rng;
  nb_rng_seed(&rng, 7);
  static const char *const alphabets[] = {"ab", "aab ", "abc  \n'", "aaaab1.", "xyz xy\tz"};
  char s[1500];
  int32_t want[2 * 256], ids[1500], ids_naive[1500];
  for (int trial = 0; trial < 15; trial++) {
    size_t n = 200 + nb_rng_next(&rng) % 1300;
    random_text(&rng, s, n, alphabets[trial % 5]);
    int vocab = 256 + 20 + (int)(nb_rng_next(&rng) % 200);
    int nm = naive_train(s, n, vocab, want);
    nb_bpe *t;
    TU_OK(nb_bpe_train(s, n, vocab, &t));
    check_merges(t, want, nm);
    /* encode other random texts of the same kind */
    for (int e = 0; e < 3; e++) {
      size_t m = 1 + nb_rng_next(&rng) % 1000;
      random_text(&rng, s, m, alphabets[trial % 5]);
      size_t n_ids, n_naive = naive_encode(t, s, m, ids_naive);
      TU_OK(nb_bpe_encode(t, s, m, 0, ids, &n_ids));
      assert_int_equal(n_ids, n_naive);
      assert_memory_equal(ids, ids_naive, n_ids * sizeof *ids);
    }
    nb_bpe_free(t);
  }
}

/* ---- round trips -------------------------------------------------------------- */

static void test_roundtrip_random_bytes(void **state) {
  (void)state;
  nb_rng rng;
  nb_rng_seed(&rng, 11);
  /* a vocabulary trained on bytes of every value, so merges involve NUL,
   * 0xff and invalid UTF-8 too */
  size_t n = 4000;
  char *s = malloc(n);
  for (size_t i = 0; i < n; i++)
    s[i] = (char)(nb_rng_next(&rng) % 7 ? nb_rng_next(&rng) % 16 * 17 : nb_rng_next(&rng));
  nb_bpe *t;
  TU_OK(nb_bpe_train(s, n, 400, &t));
  assert_int_equal(nb_bpe_num_merges(t), 144);
  int32_t eot;
  TU_OK(nb_bpe_add_special(t, "<|endoftext|>", &eot));
  int32_t *ids = malloc(n * sizeof *ids);
  for (int trial = 0; trial < 50; trial++) {
    size_t m = nb_rng_next(&rng) % n;
    for (size_t i = 0; i < m; i++)
      s[i] = (char)(trial % 2 ? nb_rng_next(&rng) : nb_rng_next(&rng) % 16 * 17);
    if (m > 20 && trial % 3 == 0) memcpy(s + m / 2, "<|endoftext|>", 13);
    for (int flags = 0; flags <= NB_BPE_ALLOW_SPECIAL; flags++) {
      size_t n_ids;
      TU_OK(nb_bpe_encode(t, s, m, flags, ids, &n_ids));
      assert_true(n_ids <= m);
      int specials = 0;
      for (size_t i = 0; i < n_ids; i++) {
        assert_true(ids[i] >= 0 && ids[i] < nb_bpe_vocab_size(t));
        specials += ids[i] == eot;
      }
      assert_int_equal(specials, flags && m > 20 && trial % 3 == 0);
      char *back;
      size_t len;
      TU_OK(nb_bpe_decode(t, ids, n_ids, &back, &len));
      assert_int_equal(len, m);
      assert_memory_equal(back, s, m);
      assert_int_equal(back[len], '\0');
      free(back);
    }
  }
  free(ids);
  free(s);
  nb_bpe_free(t);
}

/* ---- special tokens ------------------------------------------------------------ */

static void test_special_tokens(void **state) {
  (void)state;
  nb_bpe *t;
  TU_OK(nb_bpe_train("ab ab ab", 8, 300, &t)); /* merges 256 = ab, 257 = " ab" */
  int32_t eot, pad, id;
  TU_OK(nb_bpe_add_special(t, "<|endoftext|>", &eot));
  TU_OK(nb_bpe_add_special(t, "<|endoftext|>>", &pad));
  assert_int_equal(eot, 258);
  assert_int_equal(pad, 259);
  assert_int_equal(nb_bpe_vocab_size(t), 260);
  TU_OK(nb_bpe_special_id(t, "<|endoftext|>", &id));
  assert_int_equal(id, 258);
  /* unknown names: an error naming the token and the registered ones */
  assert_int_equal(nb_bpe_special_id(t, "<|pad|>", &id), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "<|pad|>"));
  assert_non_null(strstr(nb_last_error(), "registered: <|endoftext|>, <|endoftext|>>"));
  /* bad names */
  char longname[NB_BPE_MAX_SPECIAL_LEN + 2];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  static const char *const bad[] = {"", "<|a b|>", "<|\n|>", "caf\xc3\xa9", "<|endoftext|>"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(nb_bpe_add_special(t, bad[i], NULL), NB_ERR_INVALID_ARG);
    assert_non_null(strstr(nb_last_error(), "special token"));
  }
  assert_int_equal(nb_bpe_add_special(t, longname, NULL), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "longer"));
  assert_int_equal(nb_bpe_vocab_size(t), 260);

  /* with NB_BPE_ALLOW_SPECIAL the longest registered string at the earliest
   * position becomes its id; unregistered look-alikes stay text */
  const char s[] = "ab<|endoftext|>ab<|endoftext|>>x<|pad|>";
  size_t n = sizeof s - 1;
  int32_t want_special[] = {256, 258, 256, 259, 'x', '<', '|', 'p', 'a', 'd', '|', '>'};
  check_encode(t, s, n, NB_BPE_ALLOW_SPECIAL, want_special, 12);
  /* without it everything is ordinary bytes */
  int32_t ids[64];
  size_t n_ids;
  TU_OK(nb_bpe_encode(t, s, n, 0, ids, &n_ids));
  for (size_t i = 0; i < n_ids; i++) assert_true(ids[i] < 258);
  assert_int_equal(ids[0], 256);
  assert_int_equal(ids[1], '<');
  assert_int_equal(nb_bpe_encode(t, s, n, 4, ids, &n_ids), NB_ERR_INVALID_ARG);

  /* ids outside the vocabulary */
  const char *bytes;
  size_t len;
  TU_OK(nb_bpe_token(t, 259, &bytes, &len));
  assert_int_equal(len, 14);
  assert_int_equal(nb_bpe_token(t, 260, &bytes, &len), NB_ERR_INVALID_ARG);
  assert_int_equal(nb_bpe_token(t, -1, &bytes, &len), NB_ERR_INVALID_ARG);
  int32_t bad_ids[] = {97, 260};
  char *text;
  assert_int_equal(nb_bpe_decode(t, bad_ids, 2, &text, &len), NB_ERR_INVALID_ARG);
  assert_non_null(strstr(nb_last_error(), "position 1"));
  nb_bpe_free(t);
}

/* ---- vocabulary files ------------------------------------------------------------ */

static void write_file(const char *path, const char *s, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(s, 1, n, f), n);
  fclose(f);
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void test_file_round_trip(void **state) {
  (void)state;
  char dir[] = "/tmp/nb_bpe_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256], *file;
  size_t file_n;
  snprintf(path, sizeof path, "%s/v.bpe", dir);
  const char *text = "the cat sat on the mat; the cat ate the rat.\n\n  the end\n";
  nb_bpe *t, *u;
  TU_OK(nb_bpe_train(text, strlen(text), 280, &t)); /* 21 merges: no pair is left */
  TU_OK(nb_bpe_add_special(t, "<|endoftext|>", NULL));
  TU_OK(nb_bpe_save(t, path));
  TU_OK(nb_bpe_save(t, path));             /* over an existing file */
  assert_int_equal(count_entries(dir), 1); /* no temporary file left */
  TU_OK(nb_text_read_file(path, &file, &file_n));
  assert_memory_equal(file, "nabla-bpe 1\nsplit gpt4-bytes\nmerges 21\n", 38);
  assert_non_null(strstr(file, "\nspecial 1\n<|endoftext|>\n"));
  free(file);
  TU_OK(nb_bpe_load(path, &u));
  assert_int_equal(nb_bpe_vocab_size(u), nb_bpe_vocab_size(t));
  check_merges(u, nb_bpe_merges(t), nb_bpe_num_merges(t));
  int32_t id;
  TU_OK(nb_bpe_special_id(u, "<|endoftext|>", &id));
  assert_int_equal(id, 277);
  int32_t a[128], b[128];
  size_t na, nb;
  const char *probe = "the rat sat<|endoftext|>\xff\x00";
  TU_OK(nb_bpe_encode(t, probe, 26, NB_BPE_ALLOW_SPECIAL, a, &na));
  TU_OK(nb_bpe_encode(u, probe, 26, NB_BPE_ALLOW_SPECIAL, b, &nb));
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na * sizeof *a);
  nb_bpe_free(u);

  /* CRLF line ends and trailing blank lines are accepted */
  const char crlf[] = "nabla-bpe 1\r\nsplit gpt4-bytes\r\nmerges 1\r\n97 98\r\nspecial 0\r\n\r\n";
  write_file(path, crlf, sizeof crlf - 1);
  TU_OK(nb_bpe_load(path, &u));
  check_merges(u, (const int32_t[]){97, 98}, 1);
  nb_bpe_free(u);

  /* an unwritable target: an error, and nothing left behind */
  char sub[300];
  snprintf(sub, sizeof sub, "%s/missing/v.bpe", dir);
  assert_int_equal(nb_bpe_save(t, sub), NB_ERR_IO);
  assert_non_null(strstr(nb_last_error(), "missing"));
  nb_bpe_free(t);
  remove(path);
  assert_int_equal(nb_bpe_load(path, &u), NB_ERR_IO);
  assert_null(u);
  rmdir(dir);
}

typedef struct bad_case {
  const char *text;
  const char *want; /* in the message, after "PATH:" */
} bad_case;

#define HDR "nabla-bpe 1\nsplit gpt4-bytes\n"

/* HDR, then 40 merges (97, 97), (256, 256), (257, 257), ... that double the
 * token length each time, each line padded with spaces to `pad` bytes. */
static void doubling_file(char *buf, size_t cap, int pad) {
  int at = snprintf(buf, cap, HDR "merges 40\n");
  for (int r = 0; r < 40; r++) {
    char pair[32];
    int id = r ? 255 + r : 97;
    snprintf(pair, sizeof pair, "%d %d", id, id);
    at += snprintf(buf + at, cap - (size_t)at, "%-*s\n", pad, pair);
  }
  snprintf(buf + at, cap - (size_t)at, "special 0\n");
}

static void test_bad_files(void **state) {
  (void)state;
  char dir[] = "/tmp/nb_bpe_bad_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/bad.bpe", dir);
  static const bad_case cases[] = {
      {"", "1: not a nabla BPE vocabulary"},
      {"nabla-char-vocab 1 3\n", "1: not a nabla BPE vocabulary"},
      {"nabla-bpe 2\n", "1: version 2 is not supported"},
      {"nabla-bpe one\n", "1: expected 'nabla-bpe VERSION'"},
      {"nabla-bpe 1\n", "2: expected 'split gpt4-bytes'"},
      {"nabla-bpe 1\nsplit gpt2\n", "2: unknown split rule 'gpt2'"},
      {HDR, "3: file ends where 'merges COUNT' was expected"},
      {HDR "merge 1\n", "3: expected 'merges COUNT'"},
      {HDR "merges -1\n", "3: expected 'merges COUNT' with a decimal count"},
      {HDR "merges 99999999999999999999999\n", "3: merges count is above the limit 1048320"},
      {HDR "merges 1048321\n", "3: merges count is above the limit"},
      {HDR "merges 2\n97 97\n", "5: file ends after 1 of 2 merges"},
      /* a count the file cannot hold is refused before anything is sized for it */
      {HDR "merges 3\n97 97\n", "3: 3 merges announced, but only 6 bytes follow"},
      {HDR "merges 1048320\n97 98\n", "3: 1048320 merges announced, but only 6 bytes follow"},
      {HDR "merges 1\n97\n", "4: merge 0: expected two ids 'A B', found '97'"},
      {HDR "merges 1\n97 97 97\n", "4: merge 0: expected two ids"},
      {HDR "merges 1\n97 x\n", "4: merge 0: expected two ids"},
      {HDR "merges 1\n-1 97\n", "4: merge 0: expected two ids"},
      {HDR "merges 1\n256 97\n", "4: merge 0 (256, 97) uses an id not below 256"},
      {HDR "merges 2\n97 97\n257 97\n", "5: merge 1 (257, 97) uses an id not below 257"},
      {HDR "merges 2\n97 97\n97 9999999\n", "5: merge 1: expected two ids"},
      {HDR "merges 3\n97 97\n98 98\n97 97\n", "6: merge 2 (97, 97) repeats merge 0 (line 4)"},
      {HDR "merges 1\n97 98\n", "5: file ends where 'special COUNT' was expected"},
      {HDR "merges 1\n97 98\nspecial 2000\n", "5: special count is above the limit 1024"},
      {HDR "merges 0\nspecial 2\n<|a|>\n", "6: file ends after 1 of 2 special tokens"},
      {HDR "merges 0\nspecial 1\n<|a b|>\n", "5: special token 0 '<|a b|>' has a byte outside"},
      {HDR "merges 0\nspecial 2\n<|a|>\n<|a|>\n", "6: special token 1 '<|a|>' is already"},
      {HDR "merges 0\nspecial 1\n\n", "5: special token 0 '' is empty"},
      {HDR "merges 0\nspecial 0\n97 98\n", "5: unexpected line after the 0 special tokens"},
      {HDR "merges 0\nspecial 1\n<|a|>\nmerges 0\n", "6: unexpected line"},
  };
  nb_bpe *keep, *t;
  TU_OK(nb_bpe_train("ab", 2, 300, &keep));
  char want[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_file(path, cases[i].text, strlen(cases[i].text));
    t = keep; /* a failed load must set NULL */
    nb_status st = nb_bpe_load(path, &t);
    snprintf(want, sizeof want, "%s:%s", path, cases[i].want);
    if (st != NB_ERR_FORMAT || !strstr(nb_last_error(), want))
      fail_msg("case %zu: got %s '%s', want NB_ERR_FORMAT '%s'", i, nb_status_name(st),
               nb_last_error(), want);
    assert_null(t);
  }

  /* a NUL byte, an overlong line */
  static const char nul_file[] = HDR "merges 1\n97\0 98\n";
  write_file(path, nul_file, sizeof nul_file - 1);
  assert_int_equal(nb_bpe_load(path, &t), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), ":4: NUL byte"));
  char line[400];
  memset(line, '7', sizeof line);
  memcpy(line, HDR "merges 1\n", sizeof HDR + 8);
  write_file(path, line, sizeof line);
  assert_int_equal(nb_bpe_load(path, &t), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), ":4: line longer than 255 bytes"));

  /* tokens that double with every merge: a file of ~300 bytes may expand
   * to 1 MiB (the floor), where merge 18 brings them to 2^20 + 254 */
  char big[2048];
  doubling_file(big, sizeof big, 0);
  write_file(path, big, strlen(big));
  assert_int_equal(nb_bpe_load(path, &t), NB_ERR_FORMAT);
  assert_non_null(strstr(nb_last_error(), "merge 18: the tokens would total more than 1048576 "
                                          "bytes (allowed: 256 per byte of the file up to here"));
  /* the same merges on lines padded to 250 bytes: 256 bytes of tokens per
   * byte read lets merge 18 through (2^20 + 254 <= 256 x 4,808 bytes read)
   * and stops merge 19 (2^21 + 254 > 256 x 5,059) */
  static char padded[12000];
  doubling_file(padded, sizeof padded, 250);
  write_file(path, padded, strlen(padded));
  assert_int_equal(nb_bpe_load(path, &t), NB_ERR_FORMAT);
  assert_non_null(
      strstr(nb_last_error(), "merge 19: the tokens would total more than 1295104 bytes"));

  /* every truncation and every single-byte corruption of a good file loads
   * or fails with NB_ERR_FORMAT, never anything worse */
  nb_bpe *good;
  const char *text = "to be or not to be, that is the question";
  TU_OK(nb_bpe_train(text, strlen(text), 290, &good));
  TU_OK(nb_bpe_add_special(good, "<|endoftext|>", NULL));
  TU_OK(nb_bpe_save(good, path));
  char *file;
  size_t n;
  TU_OK(nb_text_read_file(path, &file, &n));
  nb_rng rng;
  nb_rng_seed(&rng, 3);
  for (size_t cut = 0; cut <= n; cut++) {
    char *copy = malloc(n + 1);
    memcpy(copy, file, n);
    size_t len = cut;
    if (cut == n)
      len = n;          /* the intact file */
    else if (cut % 2) { /* odd: corrupt one byte instead of truncating */
      copy[nb_rng_next(&rng) % n] = (char)nb_rng_next(&rng);
      len = n;
    }
    write_file(path, copy, len);
    nb_status st = nb_bpe_load(path, &t);
    if (st != NB_OK && st != NB_ERR_FORMAT)
      fail_msg("variant %zu: %s %s", cut, nb_status_name(st), nb_last_error());
    if (cut == n) assert_int_equal(st, NB_OK);
    nb_bpe_free(t);
    free(copy);
  }
  free(file);
  nb_bpe_free(good);
  nb_bpe_free(keep);
  remove(path);
  rmdir(dir);
}

/* ---- reading through pipes, memory that follows the file -------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

/* nb_bpe_load of `data` through a pipe, a file with no size to check the
 * counts against (a child process writes it, so any size fits). */
static nb_status load_piped(const char *data, size_t n, nb_bpe **t) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (!pid) {
    close(fd[0]);
    for (size_t done = 0; done < n;) {
      ssize_t w = write(fd[1], data + done, n - done);
      if (w <= 0) _exit(1);
      done += (size_t)w;
    }
    _exit(0);
  }
  close(fd[1]);
  char path[64];
  snprintf(path, sizeof path, "/dev/fd/%d", fd[0]);
  nb_status st = nb_bpe_load(path, t);
  close(fd[0]);
  int ws;
  waitpid(pid, &ws, 0);
  return st;
}

#ifndef TEST_ASAN
/* Virtual memory size of this process in bytes (/proc/self/status), 0 if
 * unknown. */
static size_t vm_size(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %lld kB", &kb) == 1) break;
  fclose(f);
  return (size_t)kb * 1024;
}
#endif

/* Loads `data` through a pipe in a child process whose address space may
 * grow by only 16 MiB (RLIMIT_AS): the load must end in NB_ERR_FORMAT with
 * `want` in its message, not in an allocation the limit refuses. Under
 * ASan (terabytes of shadow mappings) the limit is left out. */
static void expect_small_failure(const char *data, size_t n, const char *want) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (!pid) {
#ifndef TEST_ASAN
    size_t vm = vm_size();
    struct rlimit rl = {vm + (16u << 20), vm + (16u << 20)};
    if (vm && setrlimit(RLIMIT_AS, &rl)) _exit(3);
#endif
    nb_bpe *t = NULL;
    nb_status st = load_piped(data, n, &t);
    int ok = st == NB_ERR_FORMAT && strstr(nb_last_error(), want);
    if (!ok) fprintf(stderr, "got %s '%s', want '%s'\n", nb_status_name(st), nb_last_error(), want);
    _exit(ok ? 0 : 1);
  }
  int ws;
  assert_int_equal(waitpid(pid, &ws, 0), pid);
  assert_true(WIFEXITED(ws));
  assert_int_equal(WEXITSTATUS(ws), 0);
}

static void test_pipes_and_growth(void **state) {
  (void)state;
  /* 3000 merges, more than the first table holds (1024): every letter
   * pair, then pairs of those; read from a regular file and from a pipe,
   * the same merges, and encodings that agree with the naive encoder */
  enum { NM = 3000 };
  static char file[40000];
  static int32_t want[2 * NM];
  int at = snprintf(file, sizeof file, HDR "merges %d\n", NM);
  for (int i = 0; i < NM; i++) {
    int j = i - 676;
    want[2 * i] = i < 676 ? 97 + i / 26 : 256 + j % 676;
    want[2 * i + 1] = i < 676 ? 97 + i % 26 : 256 + j / 676;
    at += snprintf(file + at, sizeof file - (size_t)at, "%d %d\n", (int)want[2 * i],
                   (int)want[2 * i + 1]);
  }
  at += snprintf(file + at, sizeof file - (size_t)at, "special 1\n<|end|>\n");
  char dir[] = "/tmp/nb_bpe_pipe_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/v.bpe", dir);
  write_file(path, file, (size_t)at);
  nb_bpe *t, *u;
  TU_OK(nb_bpe_load(path, &t));
  TU_OK(load_piped(file, (size_t)at, &u));
  check_merges(t, want, NM);
  check_merges(u, want, NM);
  assert_int_equal(nb_bpe_vocab_size(u), 256 + NM + 1);
  nb_rng rng;
  nb_rng_seed(&rng, 11);
  static char s[600];
  static int32_t ids[600], ids_naive[600];
  for (int e = 0; e < 4; e++) {
    random_text(&rng, s, sizeof s, "abcdefghijklmnopqrstuvwxyz  ");
    size_t n_ids, n_naive = naive_encode(u, s, sizeof s, ids_naive);
    TU_OK(nb_bpe_encode(u, s, sizeof s, 0, ids, &n_ids));
    assert_int_equal(n_ids, n_naive);
    assert_memory_equal(ids, ids_naive, n_ids * sizeof *ids);
  }
  nb_bpe_free(t);
  nb_bpe_free(u);
  remove(path);
  rmdir(dir);

  /* a small stream claiming the largest vocabulary: no size to refuse it
   * up front, so it runs dry after one merge, having sized nothing for
   * the other 1,048,319 */
  static const char claim[] = HDR "merges 1048320\n97 98\n";
  expect_small_failure(claim, sizeof claim - 1, "file ends after 1 of 1048320 merges");
  /* doubling tokens through a pipe: stopped at 1 MiB */
  char big[2048];
  doubling_file(big, sizeof big, 0);
  expect_small_failure(big, strlen(big), "merge 18: the tokens would total more than 1048576");
}

/* Tiny Shakespeare to 1024 ids, when the file is here: the merge list and
 * the 428,147 ids were checked once against tests/ref/bpe_ref.py's
 * functions (a 3-minute run); the first and last merges and the count
 * guard against regressions. */
static void test_shakespeare(void **state) {
  (void)state;
  char *text;
  size_t n;
  if (nb_text_read_file("/work/shared/data/tinyshakespeare/input.txt", &text, &n)) skip();
  nb_bpe *t;
  TU_OK(nb_bpe_train(text, n, 1024, &t));
  assert_int_equal(nb_bpe_num_merges(t), 768);
  const int32_t *m = nb_bpe_merges(t);
  assert_int_equal(m[0], 32); /* " t" */
  assert_int_equal(m[1], 116);
  assert_int_equal(m[2], 104); /* "he" */
  assert_int_equal(m[3], 101);
  assert_int_equal(m[2 * 767], 279);
  assert_int_equal(m[2 * 767 + 1], 886);
  int32_t *ids = malloc(n * sizeof *ids);
  size_t n_ids;
  TU_OK(nb_bpe_encode(t, text, n, 0, ids, &n_ids));
  assert_int_equal(n_ids, 428147); /* 2.605 bytes per token */
  char *back;
  size_t len;
  TU_OK(nb_bpe_decode(t, ids, n_ids, &back, &len));
  assert_int_equal(len, n);
  assert_memory_equal(back, text, n);
  free(back);
  free(ids);
  nb_bpe_free(t);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split),
      cmocka_unit_test(test_train_small),
      cmocka_unit_test(test_python_reference),
      cmocka_unit_test(test_against_naive),
      cmocka_unit_test(test_roundtrip_random_bytes),
      cmocka_unit_test(test_special_tokens),
      cmocka_unit_test(test_file_round_trip),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_pipes_and_growth),
      cmocka_unit_test(test_shakespeare),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
