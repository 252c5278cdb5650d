/* The BPE vocabulary file: a versioned text format (see nb_bpe_save in
 * data.h and docs/data.md) written through a temporary file and a rename,
 * and a strict reader that names path:line and the reason for anything it
 * does not accept. */
#define _POSIX_C_SOURCE 200809L /* fdopen, fsync */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe_internal.h"

#define BPE_MAGIC   "nabla-bpe"
#define BPE_VERSION 1
/* Longest line the reader accepts: a special token is at most 128 bytes. */
#define BPE_LINE_MAX 255
/* Merges are read into a table sized for at most this many at first, then
 * doubled as the file delivers them: memory follows the lines that are
 * there, not the count a header claims (a pipe has no size to check the
 * count against). */
#define BPE_FIRST_MERGES 1024
/* Tokens can double in length with every merge, so a file of a few dozen
 * lines could otherwise expand to NB_BPE_MAX_TOKEN_BYTES. Up to a merge,
 * the tokens may total BPE_TOKENS_PER_BYTE bytes per byte read so far
 * (BPE_TOKENS_FLOOR at least). Real vocabularies are far below: the 1744
 * merges trained on Tiny Shakespeare make half a byte of tokens per byte. */
#define BPE_TOKENS_PER_BYTE 256
#define BPE_TOKENS_FLOOR    ((int64_t)1 << 20)

/* ---- writing -------------------------------------------------------------- */

static void write_body(const nb_bpe *t, FILE *f) {
  fprintf(f, "%s %d\nsplit %s\nmerges %d\n", BPE_MAGIC, BPE_VERSION, NB_BPE_SPLIT_NAME,
          t->n_merges);
  for (int r = 0; r < t->n_merges; r++)
    fprintf(f, "%d %d\n", (int)t->merges[2 * r], (int)t->merges[2 * r + 1]);
  fprintf(f, "special %d\n", t->n_special);
  for (int k = 0; k < t->n_special; k++) fprintf(f, "%s\n", t->special[k]);
}

/* A temporary file beside the target, renamed over it once complete and
 * fsynced: a reader sees the old file or the new one. (src/io's
 * nb_atomic_file does the same and also fsyncs the directory, but data is
 * below io and may not call it.) */
nb_status nb_bpe_save(const nb_bpe *t, const char *path) {
  if (!t || !path || !*path) return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_save: t and path needed");
  size_t n = strlen(path) + 48;
  char *tmp = malloc(n);
  if (!tmp) return nb_error(NB_ERR_OOM, "%s: out of memory", path);
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    snprintf(tmp, n, "%s.tmp.%ld.%d", path, (long)getpid(), attempt);
    /* 0666: the umask decides the final permissions, as with fopen */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    nb_status s =
        nb_error(NB_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    free(tmp);
    return s;
  }
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    unlink(tmp);
    free(tmp);
    return nb_error(NB_ERR_IO, "%s: fdopen failed: %s", path, strerror(errno));
  }
  write_body(t, f);
  const char *what = NULL;
  if (ferror(f))
    what = "write";
  else if (fflush(f))
    what = "flush";
  else if (fsync(fileno(f)))
    what = "fsync";
  if (fclose(f) && !what) what = "close";
  if (!what && rename(tmp, path)) what = "rename";
  if (what) {
    nb_status s = nb_error(NB_ERR_IO, "%s: %s of %s failed: %s (target unchanged)", path, what, tmp,
                           strerror(errno));
    unlink(tmp);
    free(tmp);
    return s;
  }
  free(tmp);
  return NB_OK;
}

/* ---- reading -------------------------------------------------------------- */

typedef struct reader {
  FILE *f;
  const char *path;
  int line;
  int64_t bytes; /* read so far */
  char buf[BPE_LINE_MAX + 2];
} reader;

/* Next line into r->buf without its \n (or \r\n): 1, or 0 at the end of
 * the file; a line too long or holding a NUL byte, or a read error, sets
 * the error and returns -1. */
static int next_line(reader *r, nb_status *st) {
  size_t n = 0;
  int c;
  r->line++;
  while ((c = getc(r->f)) != EOF) {
    r->bytes++;
    if (c == '\n') break;
    if (!c) {
      *st =
          nb_error(NB_ERR_FORMAT, "%s:%d: NUL byte: not a nabla BPE vocabulary", r->path, r->line);
      return -1;
    }
    if (n >= BPE_LINE_MAX) {
      *st = nb_error(NB_ERR_FORMAT, "%s:%d: line longer than %d bytes", r->path, r->line,
                     BPE_LINE_MAX);
      return -1;
    }
    r->buf[n++] = (char)c;
  }
  if (ferror(r->f)) {
    *st = nb_error(NB_ERR_IO, "%s:%d: read error: %s", r->path, r->line, strerror(errno));
    return -1;
  }
  if (c == EOF && !n) return 0;
  if (n && r->buf[n - 1] == '\r') n--;
  r->buf[n] = '\0';
  return 1;
}

/* Reads an unsigned decimal of at most `max` at *p, skipping spaces before
 * it; 0 on success, -1 if there is none, -2 if it exceeds max. */
static int read_uint(const char **p, long long max, long long *v) {
  const char *s = *p;
  while (*s == ' ' || *s == '\t') s++;
  if (*s < '0' || *s > '9') return -1;
  long long x = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    x = x * 10 + (*s - '0');
    if (x > max) return -2;
  }
  *p = s;
  *v = x;
  return 0;
}

static int at_end(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  return !*s;
}

/* "KEYWORD N" with N in [0, max]. */
static nb_status read_count(reader *r, const char *keyword, long long max, long long *v) {
  nb_status st = NB_OK;
  int got = next_line(r, &st);
  if (got < 0) return st;
  if (!got)
    return nb_error(NB_ERR_FORMAT, "%s:%d: file ends where '%s COUNT' was expected", r->path,
                    r->line, keyword);
  size_t kl = strlen(keyword);
  const char *s = r->buf + kl;
  if (strncmp(r->buf, keyword, kl) || (*s != ' ' && *s != '\t'))
    return nb_error(NB_ERR_FORMAT, "%s:%d: expected '%s COUNT', found '%.40s'", r->path, r->line,
                    keyword, r->buf);
  int e = read_uint(&s, max, v);
  if (e == -2)
    return nb_error(NB_ERR_FORMAT, "%s:%d: %s count is above the limit %lld", r->path, r->line,
                    keyword, max);
  if (e || !at_end(s))
    return nb_error(NB_ERR_FORMAT, "%s:%d: expected '%s COUNT' with a decimal count, found '%.40s'",
                    r->path, r->line, keyword, r->buf);
  return NB_OK;
}

static nb_status read_header(reader *r) {
  nb_status st = NB_OK;
  int got = next_line(r, &st);
  if (got < 0) return st;
  const char *s = r->buf + strlen(BPE_MAGIC);
  long long version;
  if (!got || strncmp(r->buf, BPE_MAGIC, strlen(BPE_MAGIC)) || *s != ' ')
    return nb_error(NB_ERR_FORMAT, "%s:1: not a nabla BPE vocabulary (expected '%s %d')", r->path,
                    BPE_MAGIC, BPE_VERSION);
  if (read_uint(&s, 1000000, &version) || !at_end(s))
    return nb_error(NB_ERR_FORMAT, "%s:1: expected '%s VERSION', found '%.40s'", r->path, BPE_MAGIC,
                    r->buf);
  if (version != BPE_VERSION)
    return nb_error(NB_ERR_FORMAT, "%s:1: version %lld is not supported (this build reads %d)",
                    r->path, version, BPE_VERSION);
  got = next_line(r, &st);
  if (got < 0) return st;
  if (!got || strncmp(r->buf, "split ", 6))
    return nb_error(NB_ERR_FORMAT, "%s:2: expected 'split %s'", r->path, NB_BPE_SPLIT_NAME);
  if (strcmp(r->buf + 6, NB_BPE_SPLIT_NAME))
    return nb_error(NB_ERR_FORMAT, "%s:2: unknown split rule '%.40s' (this build knows %s)",
                    r->path, r->buf + 6, NB_BPE_SPLIT_NAME);
  return NB_OK;
}

/* What the tokens may total after `bytes` of the file (BPE_TOKENS_PER_BYTE). */
static int64_t token_budget(int64_t bytes) {
  int64_t n = bytes > NB_BPE_MAX_TOKEN_BYTES / BPE_TOKENS_PER_BYTE ? NB_BPE_MAX_TOKEN_BYTES
                                                                   : bytes * BPE_TOKENS_PER_BYTE;
  return n < BPE_TOKENS_FLOOR ? BPE_TOKENS_FLOOR : n;
}

/* Room for merge i (of m) in t and in merge_line (*cap entries). */
static nb_status merge_room(reader *r, nb_bpe *t, int i, int m, int **merge_line, int *cap) {
  if (i < *cap) return NB_OK;
  int want = *cap > m / 2 ? m : 2 * *cap;
  if (want < BPE_FIRST_MERGES) want = m < BPE_FIRST_MERGES ? m : BPE_FIRST_MERGES;
  int *ml = realloc(*merge_line, (size_t)want * sizeof *ml);
  if (ml) *merge_line = ml;
  if (!ml || !nb_bpe_reserve(t, want))
    return nb_error(NB_ERR_OOM, "%s: out of memory for %d merges", r->path, want);
  *cap = want;
  return NB_OK;
}

/* Merge i from the line in r->buf; merge_line[j] is the line of merge j. */
static nb_status read_merge(reader *r, nb_bpe *t, int i, int *merge_line) {
  const char *s = r->buf;
  long long a, b;
  int ea = read_uint(&s, NB_BPE_MAX_VOCAB, &a), eb = ea ? ea : read_uint(&s, NB_BPE_MAX_VOCAB, &b);
  if (ea || eb || !at_end(s))
    return nb_error(NB_ERR_FORMAT, "%s:%d: merge %d: expected two ids 'A B', found '%.40s'",
                    r->path, r->line, i, r->buf);
  int dup = -1;
  switch (nb_bpe_push_merge(t, (int32_t)a, (int32_t)b, &dup)) {
  case NB_BPE_PUSHED: break;
  case NB_BPE_PUSH_RANGE:
    return nb_error(NB_ERR_FORMAT,
                    "%s:%d: merge %d (%lld, %lld) uses an id not below %d: a merge may only "
                    "join bytes and earlier merges",
                    r->path, r->line, i, a, b, 256 + i);
  case NB_BPE_PUSH_DUP:
    return nb_error(NB_ERR_FORMAT, "%s:%d: merge %d (%lld, %lld) repeats merge %d (line %d)",
                    r->path, r->line, i, a, b, dup, merge_line[dup]);
  case NB_BPE_PUSH_TOO_LONG:
    return nb_error(NB_ERR_FORMAT,
                    "%s:%d: merge %d: the tokens would total more than %lld bytes (allowed: %d "
                    "per byte of the file up to here, at least %lld, at most %lld)",
                    r->path, r->line, i, (long long)t->tok_limit, BPE_TOKENS_PER_BYTE,
                    (long long)BPE_TOKENS_FLOOR, (long long)NB_BPE_MAX_TOKEN_BYTES);
  case NB_BPE_PUSH_FULL: return nb_error(NB_ERR_INTERNAL, "%s: merge table full", r->path);
  case NB_BPE_PUSH_OOM: return nb_error(NB_ERR_OOM, "%s: out of memory", r->path);
  }
  merge_line[i] = r->line;
  return NB_OK;
}

static nb_status read_merges(reader *r, nb_bpe *t, int m) {
  int *merge_line = NULL, cap = 0;
  nb_status st = NB_OK;
  for (int i = 0; !st && i < m; i++) {
    int got = next_line(r, &st);
    if (got < 0) break;
    if (!got) {
      st =
          nb_error(NB_ERR_FORMAT, "%s:%d: file ends after %d of %d merges", r->path, r->line, i, m);
      break;
    }
    st = merge_room(r, t, i, m, &merge_line, &cap);
    t->tok_limit = token_budget(r->bytes);
    if (!st) st = read_merge(r, t, i, merge_line);
  }
  free(merge_line);
  return st;
}

static nb_status read_specials(reader *r, nb_bpe *t, int k) {
  for (int i = 0; i < k; i++) {
    nb_status st = NB_OK;
    int got = next_line(r, &st);
    if (got < 0) return st;
    if (!got)
      return nb_error(NB_ERR_FORMAT, "%s:%d: file ends after %d of %d special tokens", r->path,
                      r->line, i, k);
    const char *why = nb_bpe_special_problem(t, r->buf, strlen(r->buf));
    if (why)
      return nb_error(NB_ERR_FORMAT, "%s:%d: special token %d '%.40s' %s", r->path, r->line, i,
                      r->buf, why);
    st = nb_bpe_add_special(t, r->buf, NULL);
    if (st) return st;
  }
  /* nothing but blank lines may follow */
  for (;;) {
    nb_status st = NB_OK;
    int got = next_line(r, &st);
    if (got < 0) return st;
    if (!got) return NB_OK;
    if (!at_end(r->buf))
      return nb_error(NB_ERR_FORMAT, "%s:%d: unexpected line after the %d special tokens: '%.40s'",
                      r->path, r->line, k, r->buf);
  }
}

nb_status nb_bpe_load(const char *path, nb_bpe **out) {
  if (!path || !out) return nb_error(NB_ERR_INVALID_ARG, "nb_bpe_load: path and out needed");
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return nb_error(NB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  reader r = {f, path, 0, 0, {0}};
  nb_bpe *t = NULL;
  long long m = 0, k = 0;
  nb_status st = read_header(&r);
  if (!st) st = read_count(&r, "merges", NB_BPE_MAX_VOCAB - 256, &m);
  /* a merge line takes at least 3 bytes ("A B"): a count the rest of a
   * file cannot hold is refused at once (a pipe's, when it runs dry) */
  struct stat sb;
  long at = ftell(f);
  if (!st && !fstat(fileno(f), &sb) && S_ISREG(sb.st_mode) && at >= 0 &&
      m > ((long long)sb.st_size - at) / 3)
    st = nb_error(NB_ERR_FORMAT, "%s:%d: %lld merges announced, but only %lld bytes follow", path,
                  r.line, m, (long long)sb.st_size - at);
  /* room for the merges grows as they are read (read_merges) */
  if (!st && !(t = nb_bpe_alloc(0))) st = nb_error(NB_ERR_OOM, "%s: out of memory", path);
  if (!st) st = read_merges(&r, t, (int)m);
  if (!st) st = read_count(&r, "special", NB_BPE_MAX_SPECIALS, &k);
  if (!st) st = read_specials(&r, t, (int)k);
  fclose(f);
  if (st) {
    nb_bpe_free(t);
    return st;
  }
  t->tok_limit = NB_BPE_MAX_TOKEN_BYTES; /* the file's budget was for reading it */
  *out = t;
  return NB_OK;
}
